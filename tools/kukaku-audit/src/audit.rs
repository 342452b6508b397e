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
use kukaku::ledger::note::NoteError;
use kukaku::ledger::payload::{KeyEvent, KeyEventKind};
use kukaku::ledger::{
    BodyRef, ChainVerifier, EnvelopeRef, Hash, Kind, PartitionId, SignedNote, Step, VerifyError,
};

use crate::state::{LogState, State};
use crate::trust::{LogKey, Trust};

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

fn failed(partition: &PartitionId, seq: u64, step: impl Into<String>) -> AuditError {
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

struct Section {
    /// False between a start record and the checkpoint that anchors it.
    anchored: bool,
    partition: PartitionId,
    keys: Vec<(LogKey, kukaku::ledger::VerifierKey)>,
    verifier: ChainVerifier,
    previous: Option<LogState>,
    last_note: Option<String>,
    report: PartitionReport,
    /// The size a consistency record proved the start from.
    proven_from: Option<u64>,
}

impl Section {
    /// At the previous run's size the root must be the one it verified.
    fn check_previous(&mut self) -> Result<(), AuditError> {
        if let Some(prev) = &self.previous
            && self.verifier.size() == prev.size
            && self.report.append_only_since.is_none()
        {
            if self.verifier.root().to_base64() != prev.root {
                return Err(failed(
                    &self.partition,
                    prev.size,
                    format!(
                        "root at size {} differs from the one verified before: the log was rewritten",
                        prev.size
                    ),
                ));
            }
            self.report.append_only_since = Some(prev.size);
            self.report.append_only_by = Some("entries");
        }
        Ok(())
    }

    /// A consistency record (right after the anchoring checkpoint): the tree there extends
    /// the tree of size `from` with root `root`. When `from` is the previous run's size, the
    /// root must be the one verified then, and append-only since then is proven.
    fn consistency(&mut self, from: u64, root: &Hash, proof: &[Hash]) -> Result<(), AuditError> {
        kukaku::ledger::bundle::check_consistency(
            &self.verifier,
            self.report.first_seq,
            self.report.checkpoints,
            self.proven_from.is_some(),
            (from, root, proof),
        )?;
        self.proven_from = Some(from);
        if let Some(prev) = &self.previous
            && prev.size == from
        {
            if root.to_base64() != prev.root {
                return Err(failed(
                    &self.partition,
                    from,
                    format!(
                        "the consistency proof starts from a root at size {from} other than the \
                         one verified before: the log was rewritten"
                    ),
                ));
            }
            self.report.append_only_since = Some(from);
            self.report.append_only_by = Some("consistency_proof");
        }
        Ok(())
    }

    /// The state may only advance along a proven path: a bundle that starts past the size
    /// the previous run verified must prove, with a consistency record from that size, that
    /// its start extends what was verified.
    fn check_gap(&self) -> Result<(), AuditError> {
        let Some(prev) = &self.previous else {
            return Ok(());
        };
        let start = self.report.first_seq;
        if prev.size == 0 || prev.size >= start || self.report.append_only_since.is_some() {
            return Ok(());
        }
        Err(failed(
            &self.partition,
            start,
            format!(
                "the bundle starts at size {start}, past size {} verified by the previous run, \
                 and carries no consistency proof from {}; the log between them is unproven \
                 (export with --from-size {start} --prove-from {}, or from --from-size {})",
                prev.size, prev.size, prev.size, prev.size
            ),
        ))
    }

    fn envelope(&mut self, entry: Entry) -> Result<(), AuditError> {
        if !self.anchored {
            return Err(AuditError::Malformed(
                "a start record must be followed by the checkpoint at its size",
            ));
        }
        let (h, leaf, key_event) = match entry {
            Entry::Decoded {
                header,
                leaf,
                key_event,
            } => (header, leaf, key_event),
            Entry::Bad(e) => return Err(self.verifier.decode_failure(e).into()),
        };
        self.verifier.push_decoded(&h, leaf)?;
        *self.report.kinds.entry(h.kind.name()).or_default() += 1;
        if let Some(payload) = key_event {
            match KeyEvent::decode(&payload) {
                Ok(e) => self.report.key_events.push(KeyEventInfo {
                    seq: h.seq,
                    tx_time: kukaku::ledger::format_utc_ms(h.tx_time),
                    event: e.event.name(),
                    key_id: e.key_id,
                    class: e.class.name(),
                    epoch: e.epoch,
                    version: e.version,
                    count: e.count,
                    actor: e.actor,
                    reason: e.reason,
                }),
                // A key event the report cannot show would hide a purge or a rotation: the
                // audit fails rather than vouch for a log whose key history it cannot read.
                Err(e) => {
                    return Err(failed(
                        &self.partition,
                        h.seq,
                        format!(
                            "key event payload does not decode ({}); it cannot be reported",
                            kukaku::error::report(&e)
                        ),
                    ));
                }
            }
        }
        self.check_previous()
    }

    fn checkpoint(&mut self, note: &str, opts: &Options<'_>) -> Result<(), AuditError> {
        let size = self.verifier.size();
        let at = self.verifier.last_tx();
        // The checkpoint anchoring a bundle that starts after genesis covers entries the
        // bundle does not hold, so their time is unknown: any pinned key of the log may have
        // signed it. Windows apply from the next checkpoint on.
        let anchoring = !self.anchored;
        self.anchored = true;
        let mut accepted = None;
        for (entry, key) in self.keys.iter().filter(|(l, _)| anchoring || l.covers(at)) {
            match self.verifier.check_checkpoint(note, key) {
                Ok(cp) => {
                    accepted = Some((cp, entry));
                    break;
                }
                Err(VerifyError {
                    step: Step::Checkpoint(NoteError::NoTrustedSignature),
                    ..
                }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let Some((cp, entry)) = accepted else {
            let outside = self
                .keys
                .iter()
                .any(|(_, k)| self.verifier.check_checkpoint(note, k).is_ok());
            return Err(failed(
                &self.partition,
                size,
                if outside {
                    "checkpoint signed by a pinned key outside its validity window"
                } else {
                    "checkpoint has no signature by a key pinned for this log and time"
                },
            ));
        };
        let signer = format!("{} {}", entry.origin, entry.window());
        if !self.report.signed_by.contains(&signer) {
            self.report.signed_by.push(signer);
        }
        let parsed = SignedNote::parse(note)
            .map_err(|e| failed(&self.partition, size, kukaku::error::report(&e)))?;
        // Distinct witnesses: a witness pinned twice (or under two keys) counts once.
        let mut cosigners: Vec<&str> = Vec::new();
        for w in &opts.trust.witnesses {
            match parsed.verify_cosignature(w) {
                Ok(time) => {
                    if !cosigners.contains(&w.name()) {
                        cosigners.push(w.name());
                    }
                    match self
                        .report
                        .witnesses
                        .iter_mut()
                        .find(|i| i.witness == w.name())
                    {
                        Some(i) => {
                            i.cosigned_size = size;
                            i.time = time;
                        }
                        None => self.report.witnesses.push(WitnessInfo {
                            witness: w.name().to_owned(),
                            cosigned_size: size,
                            time,
                        }),
                    }
                }
                Err(NoteError::NoTrustedSignature) => {}
                Err(e) => {
                    return Err(failed(
                        &self.partition,
                        size,
                        format!("cosignature of witness {}: {e}", w.name()),
                    ));
                }
            }
        }
        if cosigners.len() >= opts.quorum.max(1) {
            self.report.witnessed_size = Some(size);
        }
        self.report.checkpoints += 1;
        self.report.last_checkpoint = Some(CheckpointInfo {
            size: cp.size,
            root: cp.root.to_base64(),
        });
        self.last_note = Some(note.to_owned());
        Ok(())
    }

    fn close(
        mut self,
        opts: &Options<'_>,
        warnings: &mut Vec<String>,
    ) -> Result<(PartitionReport, LogState), AuditError> {
        let size = self.verifier.size();
        self.report.entries = size;
        self.check_gap()?;
        let (Some(last), Some(note)) = (&self.report.last_checkpoint, self.last_note.take()) else {
            return Err(failed(
                &self.partition,
                size,
                "no checkpoint covers the entries",
            ));
        };
        if last.size != size {
            return Err(failed(
                &self.partition,
                size,
                format!(
                    "entries {}..{size} after the last checkpoint are not covered by a signature",
                    last.size
                ),
            ));
        }
        if let Some(prev) = &self.previous
            && prev.size > size
        {
            return Err(failed(
                &self.partition,
                size,
                format!(
                    "log shrank: the previous run verified size {}, the bundle ends at {size}",
                    prev.size
                ),
            ));
        }
        if opts.quorum > 0 && self.report.witnessed_size.is_none() {
            return Err(failed(
                &self.partition,
                size,
                format!(
                    "no checkpoint is cosigned by {} trusted witness(es)",
                    opts.quorum
                ),
            ));
        }
        if !opts.trust.witnesses.is_empty() && self.report.witnesses.is_empty() {
            warnings.push(format!(
                "partition {}: no checkpoint cosigned by a pinned witness",
                self.partition
            ));
        }
        let state = LogState {
            size,
            root: last.root.clone(),
            checkpoint: note,
        };
        Ok((self.report, state))
    }
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
enum Entry {
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
    let mut warnings = Vec::new();
    let mut reports = Vec::new();
    let mut state = opts.previous.clone();
    let mut section: Option<Section> = None;
    let mut seen = std::collections::BTreeSet::new();
    for batch in batches {
        for item in batch? {
            let record = match decode(item) {
                Item::Entry(entry) => {
                    section
                        .as_mut()
                        .ok_or(AuditError::Malformed("envelope before a partition record"))?
                        .envelope(entry)?;
                    continue;
                }
                Item::Record(r) => r,
            };
            match record {
                Record::Partition { partition, vkey } => {
                    if let Some(done) = section.take() {
                        let (r, st) = done.close(opts, &mut warnings)?;
                        state.logs.insert(r.log.clone(), st);
                        reports.push(r);
                    }
                    let log = vkey.name().to_owned();
                    let origin = match log.rsplit_once('/') {
                        Some((o, p)) if p == partition.as_str() => o.to_owned(),
                        _ => {
                            return Err(failed(
                                &partition,
                                0,
                                "the bundle names a key of another partition",
                            ));
                        }
                    };
                    if !seen.insert(log.clone()) {
                        return Err(failed(
                            &partition,
                            0,
                            "partition appears twice in the bundle",
                        ));
                    }
                    let keys: Vec<_> = opts
                        .trust
                        .log_keys(&origin, &partition)
                        .map(|(l, k)| (l.clone(), k))
                        .collect();
                    if keys.is_empty() {
                        return Err(AuditError::NotTrusted(log));
                    }
                    if !keys.iter().any(|(_, k)| *k == vkey) {
                        return Err(failed(
                            &partition,
                            0,
                            "the bundle names a checkpoint key that is not pinned for this log",
                        ));
                    }
                    section = Some(Section {
                        previous: opts.previous.logs.get(&log).cloned(),
                        report: PartitionReport {
                            log,
                            partition: partition.to_string(),
                            entries: 0,
                            kinds: BTreeMap::new(),
                            checkpoints: 0,
                            last_checkpoint: None,
                            signed_by: Vec::new(),
                            witnesses: Vec::new(),
                            witnessed_size: None,
                            key_events: Vec::new(),
                            append_only_since: None,
                            append_only_by: None,
                            first_seq: 0,
                        },
                        verifier: ChainVerifier::new(partition.clone()),
                        keys,
                        last_note: None,
                        anchored: true,
                        proven_from: None,
                        partition,
                    });
                }
                // `decode` made every envelope an `Item::Entry`.
                Record::Envelope(_) => {
                    return Err(AuditError::Malformed("envelope left undecoded"));
                }
                Record::Checkpoint(note) => {
                    let s = section.as_mut().ok_or(AuditError::Malformed(
                        "checkpoint before a partition record",
                    ))?;
                    s.checkpoint(&note, opts)?;
                    s.check_previous()?;
                }
                Record::Start {
                    from,
                    chain,
                    frontier,
                } => {
                    let s = section.as_mut().ok_or(AuditError::Malformed(
                        "start record before a partition record",
                    ))?;
                    if s.verifier.size() != 0 || s.report.checkpoints != 0 {
                        return Err(AuditError::Malformed("start record after entries"));
                    }
                    s.verifier = ChainVerifier::resume(s.partition.clone(), frontier, chain);
                    s.anchored = false;
                    s.report.first_seq = from;
                }
                Record::Consistency { from, root, proof } => {
                    section
                        .as_mut()
                        .ok_or(AuditError::Malformed(
                            "consistency record before a partition record",
                        ))?
                        .consistency(from, &root, &proof)?;
                }
            }
        }
    }
    if let Some(done) = section.take() {
        let (r, st) = done.close(opts, &mut warnings)?;
        state.logs.insert(r.log.clone(), st);
        reports.push(r);
    }
    for log in opts.previous.logs.keys() {
        if !seen.contains(log) {
            warnings.push(format!(
                "log {log} was verified before but is not in this bundle"
            ));
        }
    }
    if reports.is_empty() {
        warnings.push("the bundle holds no partition".into());
    }
    Ok((
        Report {
            partitions: reports,
            warnings,
        },
        state,
    ))
}

/// Whether a key event is a purge (crypto-shredding).
pub fn is_purge(e: &KeyEventInfo) -> bool {
    e.event == KeyEventKind::Destroy.name()
}
