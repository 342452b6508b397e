//! Verification of an audit bundle against the trust roots, in a two-stage pipeline: one
//! thread reads and frames the bundle and hashes it for the trailer; the calling thread
//! checks order, chain, tree, checkpoints and cosignatures. Decoding each envelope strictly
//! and computing its leaf hash (the work that needs no order) goes to whichever thread has
//! time: the reader does it for a batch only when the verifier is behind (the channel is
//! full, so the reader would otherwise wait), and the verifier does it for every batch
//! handed over undecoded. Memory stays constant per partition (a compact range, not the
//! tree) and bounded in flight.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::mpsc;

use serde::Serialize;

use kukaku::ledger::bundle::{BundleError, BundleReader, Record};
use kukaku::ledger::payload::KeyEventKind;
use kukaku::ledger::{BodyRef, EnvelopeRef, Kind, PartitionId, VerifyError};

use crate::section::Section;
use crate::state::State;
use crate::trust::Trust;

/// Records handed from the framer to the verifier at a time.
const BATCH: usize = 512;
/// Batches in flight between the two threads.
const IN_FLIGHT: usize = 8;

/// Why an audit did not verify, or could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// Verification failed: the bundle or proof was changed, removed from, reordered,
    /// rolled back or signed by no trusted key (exit 1).
    #[error("partition {partition} seq {seq}: {step}")]
    Failed {
        partition: String,
        seq: u64,
        step: String,
    },
    /// The bundle's framing is broken (exit 1).
    #[error("bundle")]
    Bundle(#[source] BundleError),
    /// The bundle's records are out of order (exit 1).
    #[error("bundle: {0}")]
    Malformed(&'static str),
    /// Nothing pinned for a log in the input (exit 2: fix the trust file).
    #[error("no key is pinned for log {0}; add a `log` line to the trust file")]
    NotTrusted(String),
    /// Input that is not what this command reads (exit 2).
    #[error("{0}")]
    Usage(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl AuditError {
    /// The process exit code: 1 verification failed, 2 usage or I/O error.
    pub fn exit_code(&self) -> u8 {
        match self {
            AuditError::Failed { .. } | AuditError::Bundle(_) | AuditError::Malformed(_) => 1,
            AuditError::NotTrusted(_) | AuditError::Usage(_) | AuditError::Io(_) => 2,
        }
    }
}

impl From<VerifyError> for AuditError {
    fn from(e: VerifyError) -> Self {
        AuditError::Failed {
            partition: e.partition,
            seq: e.seq,
            step: kukaku::error::report(&e.step),
        }
    }
}

impl From<BundleError> for AuditError {
    fn from(e: BundleError) -> Self {
        match e {
            BundleError::Io(io) => AuditError::Io(io),
            BundleError::Verify(v) => v.into(),
            other => AuditError::Bundle(other),
        }
    }
}

pub(crate) fn failed(partition: &PartitionId, seq: u64, step: impl Into<String>) -> AuditError {
    AuditError::Failed {
        partition: partition.to_string(),
        seq,
        step: step.into(),
    }
}

/// What to trust and require.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    pub trust: &'a Trust,
    /// The previous run's state (empty on a first run).
    pub previous: &'a State,
    /// Cosignatures by distinct trusted witnesses a checkpoint needs to count as witnessed;
    /// with `quorum > 0` a partition without such a checkpoint fails.
    pub quorum: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointInfo {
    pub size: u64,
    pub root: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WitnessInfo {
    pub witness: String,
    /// Largest checkpoint size it cosigned, and the cosignature's time (POSIX seconds).
    pub cosigned_size: u64,
    pub time: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyEventInfo {
    pub seq: u64,
    pub tx_time: String,
    pub event: &'static str,
    pub key_id: u32,
    pub class: &'static str,
    pub epoch: u16,
    pub version: u32,
    pub count: u64,
    pub actor: String,
    pub reason: String,
}

impl KeyEventInfo {
    /// One line for the human report.
    pub fn describe(&self) -> String {
        let what = match self.event {
            "create" => format!(
                "created key {} ({} v{})",
                self.key_id, self.class, self.version
            ),
            "rotate" => format!(
                "rotated to key {} ({} v{})",
                self.key_id, self.class, self.version
            ),
            "rewrap" => "rewrapped the partition's keys under a new KEK".to_owned(),
            "reencrypt_progress" => format!("re-encryption progress: {} entries", self.count),
            "reencrypt_done" => format!("re-encryption done: {} entries", self.count),
            "retire" => format!("retired key {} (no entry used it)", self.key_id),
            "destroy" => format!(
                "DESTROYED key {} ({} epoch {}): {} entries unreadable",
                self.key_id, self.class, self.epoch, self.count
            ),
            "signing_key" => "checkpoint signing key changed".to_owned(),
            "restore" => format!(
                "RESTORED from a backup older than a verified size: {} verified entries are not in this log",
                self.count
            ),
            other => other.to_owned(),
        };
        let why = if self.reason.is_empty() {
            String::new()
        } else {
            format!("; reason: {}", self.reason)
        };
        format!(
            "seq {} {} {what} by {}{why}",
            self.seq, self.tx_time, self.actor
        )
    }
}

/// What one partition section showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionReport {
    /// `<origin>/<partition>`: the checkpoint origin.
    pub log: String,
    pub partition: String,
    pub entries: u64,
    /// Entries per kind name.
    pub kinds: BTreeMap<&'static str, u64>,
    pub checkpoints: u64,
    pub last_checkpoint: Option<CheckpointInfo>,
    /// The pinned keys that signed checkpoints here, with their windows.
    pub signed_by: Vec<String>,
    pub witnesses: Vec<WitnessInfo>,
    /// Largest checkpoint cosigned by at least `max(quorum, 1)` trusted witnesses.
    pub witnessed_size: Option<u64>,
    /// Key events (open entries) in log order; `destroy` ones are purges.
    pub key_events: Vec<KeyEventInfo>,
    /// The size the previous run verified, found again with the same root.
    pub append_only_since: Option<u64>,
    /// How `append_only_since` was proven: `entries` (the bundle's entries rebuilt the tree
    /// at that size) or `consistency_proof` (the bundle starts later and carries a
    /// consistency proof from that size, docs/format.md §10).
    pub append_only_by: Option<&'static str>,
    /// First seq in the bundle: 0 from genesis, else the size of the anchoring checkpoint.
    pub first_seq: u64,
}

/// The whole audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub partitions: Vec<PartitionReport>,
    pub warnings: Vec<String>,
}

/// Verifies a whole bundle. On success returns the report and the state to save for the
/// next run (the previous state with every verified log advanced).
pub fn verify_bundle<R: Read + Send>(
    input: R,
    opts: &Options<'_>,
) -> Result<(Report, State), AuditError> {
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::sync_channel::<Result<Vec<Item>, BundleError>>(IN_FLIGHT);
        s.spawn(move || read(input, &tx));
        consume(rx, opts)
    })
}

/// Verifies records that did not come from a bundle file (the auditor routes, `pages`): the
/// same checks, without a trailer.
pub fn verify_records(
    records: Vec<Record>,
    opts: &Options<'_>,
) -> Result<(Report, State), AuditError> {
    let items: Vec<Item> = records.into_iter().map(Item::Record).collect();
    consume(std::iter::once(Ok(items)), opts)
}

/// Stage 1: reads and frames the records and hashes the bundle for its trailer. A batch is
/// handed over undecoded if the verifier has room for it; if not, the reader, which would
/// wait anyway, decodes and leaf-hashes it first ([`decode`]), so the two threads balance
/// whatever the machine. A matching trailer closes the channel; any error is sent after
/// the records before it.
fn read<R: Read>(input: R, out: &mpsc::SyncSender<Result<Vec<Item>, BundleError>>) {
    let mut reader = match BundleReader::new(input) {
        Ok(r) => r,
        Err(e) => {
            let _ = out.send(Err(e));
            return;
        }
    };
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        match reader.next_record() {
            Ok(Some(r)) => {
                batch.push(Item::Record(r));
                if batch.len() == BATCH
                    && hand_over(
                        out,
                        std::mem::replace(&mut batch, Vec::with_capacity(BATCH)),
                    )
                    .is_err()
                {
                    // The verifier stopped; its answer is what counts.
                    return;
                }
            }
            Ok(None) => {
                let _ = out.send(Ok(batch));
                return;
            }
            Err(e) => {
                let _ = out.send(Ok(batch));
                let _ = out.send(Err(e));
                return;
            }
        }
    }
}

/// Sends a batch, decoding it first only if the channel is full. Errs if the verifier
/// stopped.
fn hand_over(
    out: &mpsc::SyncSender<Result<Vec<Item>, BundleError>>,
    batch: Vec<Item>,
) -> Result<(), ()> {
    match out.try_send(Ok(batch)) {
        Ok(()) => Ok(()),
        Err(mpsc::TrySendError::Full(Ok(batch))) => out
            .send(Ok(batch.into_iter().map(decode).collect()))
            .map_err(|_| ()),
        Err(_) => Err(()),
    }
}

/// An envelope decoded strictly and leaf-hashed (the hashing that needs no order), by
/// whichever thread had time ([`decode`]). Sealed bodies are dropped once decoded: nothing
/// here can use them.
pub(crate) enum Entry {
    Decoded {
        header: kukaku::ledger::Header,
        leaf: kukaku::ledger::Hash,
        /// The payload of an open key-event entry, for the report.
        key_event: Option<Vec<u8>>,
    },
    Bad(kukaku::ledger::EnvelopeError),
}

enum Item {
    Record(Record),
    Entry(Entry),
}

/// Decodes an envelope record strictly and computes its leaf hash; other items pass
/// through.
fn decode(item: Item) -> Item {
    let Item::Record(Record::Envelope(bytes)) = item else {
        return item;
    };
    Item::Entry(match EnvelopeRef::decode(&bytes) {
        Ok(env) => {
            let leaf = env.leaf_hash();
            let key_event = match env.body {
                BodyRef::Open { payload, .. } if env.header.kind == Kind::KEY_EVENT => {
                    Some(payload.to_vec())
                }
                _ => None,
            };
            Entry::Decoded {
                header: env.header,
                leaf,
                key_event,
            }
        }
        Err(e) => Entry::Bad(e),
    })
}

/// The verifying stage: batches of items in log order (from the reading thread, or one batch
/// of records that came from elsewhere).
fn consume(
    batches: impl IntoIterator<Item = Result<Vec<Item>, BundleError>>,
    opts: &Options<'_>,
) -> Result<(Report, State), AuditError> {
    let mut run = Run {
        opts,
        warnings: Vec::new(),
        reports: Vec::new(),
        state: opts.previous.clone(),
        section: None,
        seen: std::collections::BTreeSet::new(),
    };
    for batch in batches {
        for item in batch? {
            match decode(item) {
                Item::Entry(entry) => run
                    .section("envelope before a partition record")?
                    .envelope(entry)?,
                Item::Record(r) => run.record(r)?,
            }
        }
    }
    run.finish()
}

/// A bundle's verification under way: the open section and what the closed ones left.
struct Run<'o> {
    opts: &'o Options<'o>,
    warnings: Vec<String>,
    reports: Vec<PartitionReport>,
    state: State,
    section: Option<Section>,
    /// The logs met so far (each may appear once).
    seen: std::collections::BTreeSet<String>,
}

impl Run<'_> {
    /// The open section, or the malformation of a record that needs one.
    fn section(&mut self, before: &'static str) -> Result<&mut Section, AuditError> {
        self.section.as_mut().ok_or(AuditError::Malformed(before))
    }

    fn record(&mut self, record: Record) -> Result<(), AuditError> {
        match record {
            Record::Partition { partition, vkey } => {
                self.close()?;
                self.section = Some(Section::open(partition, &vkey, self.opts, &mut self.seen)?);
            }
            // `decode` made every envelope an `Item::Entry`.
            Record::Envelope(_) => return Err(AuditError::Malformed("envelope left undecoded")),
            Record::Checkpoint(note) => {
                let opts = self.opts;
                let s = self.section("checkpoint before a partition record")?;
                s.checkpoint(&note, opts)?;
                s.check_previous()?;
            }
            Record::Start {
                from,
                chain,
                frontier,
            } => self
                .section("start record before a partition record")?
                .start(from, chain, frontier)?,
            Record::Consistency { from, root, proof } => self
                .section("consistency record before a partition record")?
                .consistency(from, &root, &proof)?,
        }
        Ok(())
    }

    /// Closes the open section (if any): its report, and its log's state for the next run.
    fn close(&mut self) -> Result<(), AuditError> {
        if let Some(done) = self.section.take() {
            let (r, st) = done.close(self.opts, &mut self.warnings)?;
            self.state.logs.insert(r.log.clone(), st);
            self.reports.push(r);
        }
        Ok(())
    }

    /// The report, with a warning for each log verified before that this bundle lacks.
    fn finish(mut self) -> Result<(Report, State), AuditError> {
        self.close()?;
        for log in self.opts.previous.logs.keys() {
            if !self.seen.contains(log) {
                self.warnings.push(format!(
                    "log {log} was verified before but is not in this bundle"
                ));
            }
        }
        if self.reports.is_empty() {
            self.warnings.push("the bundle holds no partition".into());
        }
        let report = Report {
            partitions: self.reports,
            warnings: self.warnings,
        };
        Ok((report, self.state))
    }
}

/// Whether a key event is a purge (crypto-shredding).
pub fn is_purge(e: &KeyEventInfo) -> bool {
    e.event == KeyEventKind::Destroy.name()
}
