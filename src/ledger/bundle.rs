//! Audit bundle (docs/format.md §8): what `kukaku export --audit` writes and auditors verify
//! without keys. Records are `tag:u8 ‖ len:u32 ‖ bytes`; a SHA-256 trailer covers everything
//! before it.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use ring::digest;

use super::hash::Hash;
use super::header::PartitionId;
use super::merkle::{CompactRange, verify_consistency};
use super::note::{NoteError, VerifierKey};
use super::verify::{ChainVerifier, Step, VerifyError};

/// First line of every bundle.
pub const MAGIC: &[u8] = b"kukaku-audit-bundle v1\n";
/// Largest record accepted (an envelope or a note).
pub const MAX_RECORD: u32 = 16 * 1024 * 1024;

const TAG_PARTITION: u8 = 0x01;
const TAG_ENVELOPE: u8 = 0x02;
const TAG_CHECKPOINT: u8 = 0x03;
const TAG_START: u8 = 0x04;
const TAG_CONSISTENCY: u8 = 0x05;
const TAG_TRAILER: u8 = 0xFF;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
/// Why a bundle does not verify or cannot be read.
pub enum BundleError {
    #[error("I/O")]
    /// Reading the bundle failed.
    Io(#[from] io::Error),
    #[error("not an audit bundle (bad first line)")]
    /// The first line is not the bundle magic.
    Magic,
    #[error("record at byte {at}: {reason}")]
    /// A record is malformed or out of place.
    Record {
        /// Byte offset of the record in the bundle.
        at: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    #[error("bundle trailer does not match its contents")]
    /// The SHA-256 trailer does not match the bytes before it.
    Trailer,
    #[error("bundle has no trailer (truncated)")]
    /// The bundle ends before its trailer.
    Truncated,
    #[error("no pinned key for partition {0}")]
    /// A partition section for which no key is pinned.
    UnknownPartition(String),
    #[error("verifier key in the bundle")]
    /// The verifier key a partition record names does not parse or is not the pinned one.
    Key(#[source] NoteError),
    #[error(transparent)]
    /// An entry or checkpoint of a section fails verification.
    Verify(#[from] VerifyError),
}

/// Writes a bundle, hashing as it goes.
pub struct BundleWriter<W: Write> {
    out: W,
    ctx: digest::Context,
}

impl<W: Write> BundleWriter<W> {
    /// Starts a bundle on `out` with the magic line.
    pub fn new(mut out: W) -> io::Result<Self> {
        let mut ctx = digest::Context::new(&digest::SHA256);
        out.write_all(MAGIC)?;
        ctx.update(MAGIC);
        Ok(BundleWriter { out, ctx })
    }

    fn record(&mut self, tag: u8, data: &[u8]) -> io::Result<()> {
        let len = u32::try_from(data.len())
            .ok()
            .filter(|l| *l <= MAX_RECORD)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "record too large"))?;
        let [l0, l1, l2, l3] = len.to_be_bytes();
        let head = [tag, l0, l1, l2, l3];
        for part in [&head[..], data] {
            self.out.write_all(part)?;
            self.ctx.update(part);
        }
        Ok(())
    }

    /// Starts a partition's section; `vkey` is the checkpoint verifier key the instance used.
    pub fn partition(&mut self, partition: &PartitionId, vkey: &VerifierKey) -> io::Result<()> {
        let id = partition.as_str().as_bytes();
        let mut data = vec![id.len() as u8];
        data.extend_from_slice(id);
        data.extend_from_slice(vkey.to_text().as_bytes());
        self.record(TAG_PARTITION, &data)
    }

    /// Starts the section at tree size `from` instead of genesis: the chain value there and
    /// the compact range (the tree's edge) at that size. The caller writes the checkpoint at
    /// `from` next, which anchors both, then the envelopes from seq `from`.
    pub fn start(&mut self, from: u64, chain: &Hash, frontier: &[Hash]) -> io::Result<()> {
        let count = u8::try_from(frontier.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frontier too long"))?;
        let mut data = from.to_be_bytes().to_vec();
        data.extend_from_slice(chain.as_bytes());
        data.push(count);
        for h in frontier {
            data.extend_from_slice(h.as_bytes());
        }
        self.record(TAG_START, &data)
    }

    /// Proves that the tree at the start of the section extends an earlier one: the RFC 9162
    /// consistency proof from size `from` (root `root`) to the section's first checkpoint.
    /// Written right after that checkpoint, so that an auditor whose state file holds
    /// `from` can continue from the start without the entries in between.
    pub fn consistency(&mut self, from: u64, root: &Hash, proof: &[Hash]) -> io::Result<()> {
        let count = u8::try_from(proof.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "proof too long"))?;
        let mut data = from.to_be_bytes().to_vec();
        data.extend_from_slice(root.as_bytes());
        data.push(count);
        for h in proof {
            data.extend_from_slice(h.as_bytes());
        }
        self.record(TAG_CONSISTENCY, &data)
    }

    /// The next envelope of the current section, as stored.
    pub fn envelope(&mut self, envelope: &[u8]) -> io::Result<()> {
        self.record(TAG_ENVELOPE, envelope)
    }

    /// A checkpoint note for the tree of the envelopes written so far.
    pub fn checkpoint(&mut self, note: &str) -> io::Result<()> {
        self.record(TAG_CHECKPOINT, note.as_bytes())
    }

    /// Writes the trailer and returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        let sum = self.ctx.clone().finish();
        let head = [TAG_TRAILER, 0, 0, 0, 32];
        self.out.write_all(&head)?;
        self.out.write_all(sum.as_ref())?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// What a verified partition section contained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionReport {
    /// The partition id.
    pub partition: String,
    /// Entries verified (from the section's first seq).
    pub entries: u64,
    /// Checkpoints verified.
    pub checkpoints: u64,
    /// Root of the tree after the last entry.
    pub root: Hash,
    /// Tree size of the last verified checkpoint.
    pub last_checkpoint: Option<u64>,
    /// Entries per kind name.
    pub kinds: BTreeMap<&'static str, u64>,
    /// First seq in the bundle (0 from genesis, else the start record's size).
    pub first_seq: u64,
}

struct Section {
    verifier: ChainVerifier,
    key: VerifierKey,
    report: PartitionReport,
    /// False between a start record and the checkpoint that anchors it.
    anchored: bool,
    /// The section carried a consistency record.
    proved: bool,
}

/// Checks a consistency record (docs/format.md §10) against the section it stands in: it must
/// follow the checkpoint that anchors a start record at `start` (`checkpoints` verified so
/// far, no entry yet), come at most once (`already`), start below `start`, and prove that the
/// tree of size `from` with root `root` is a prefix of the anchored tree.
pub fn check_consistency(
    verifier: &ChainVerifier,
    start: u64,
    checkpoints: u64,
    already: bool,
    record: (u64, &Hash, &[Hash]),
) -> Result<(), VerifyError> {
    let (from, root, proof) = record;
    let fail = |step| VerifyError {
        partition: verifier.partition().to_string(),
        seq: verifier.size(),
        step,
    };
    if start == 0 || checkpoints != 1 || verifier.size() != start || already {
        return Err(fail(Step::Other(
            "a consistency record must follow the checkpoint that anchors a start record, once"
                .into(),
        )));
    }
    if from >= start {
        return Err(fail(Step::Other(format!(
            "consistency proof from size {from} does not start below the bundle's start {start}"
        ))));
    }
    verify_consistency(from, start, proof, root, &verifier.root())
        .map_err(|error| fail(Step::Consistency { from, error }))
}

fn close(section: Option<Section>, out: &mut Vec<PartitionReport>) -> Result<(), BundleError> {
    if let Some(mut s) = section {
        let size = s.verifier.size();
        if s.report.last_checkpoint != Some(size) {
            return Err(VerifyError {
                partition: s.report.partition,
                seq: size,
                step: Step::Other(
                    "entries after the last checkpoint are not covered by a signature".into(),
                ),
            }
            .into());
        }
        s.report.entries = size;
        s.report.root = s.verifier.root();
        out.push(s.report);
    }
    Ok(())
}

/// One record of a bundle, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Start of a partition section and the verifier key the instance named for it.
    Partition {
        /// The partition of the section.
        partition: PartitionId,
        /// The checkpoint key the instance named for it.
        vkey: VerifierKey,
    },
    /// The next envelope of the current section (seq order from 0), undecoded.
    Envelope(Vec<u8>),
    /// A checkpoint note for the tree of the envelopes so far (may carry cosignatures).
    Checkpoint(String),
    /// The section starts at tree size `from` (not genesis): the chain value and the compact
    /// range there. The next record must be the checkpoint at `from`.
    Start {
        /// Tree size the section starts at.
        from: u64,
        /// Chain value after entry `from` − 1.
        chain: Hash,
        /// The compact range of the tree of size `from`.
        frontier: CompactRange,
    },
    /// A consistency proof from the tree of size `from` with root `root` to the checkpoint
    /// that anchors the section's start record (right after that checkpoint, at most once).
    Consistency {
        /// The older tree size.
        from: u64,
        /// The older tree's root.
        root: Hash,
        /// The RFC 9162 consistency proof.
        proof: Vec<Hash>,
    },
}

/// Reads `count:u8 ‖ count × hash[32]`, which must fill `data` exactly.
fn hash_list(data: &[u8]) -> Option<Vec<Hash>> {
    let (&count, rest) = data.split_first()?;
    if rest.len() != usize::from(count) * 32 {
        return None;
    }
    rest.chunks_exact(32).map(Hash::from_slice).collect()
}

/// Reads a bundle record by record and checks its framing: the magic line, record tags and
/// lengths, the SHA-256 trailer and that nothing follows it. `next` returns `Ok(None)` only
/// after a trailer that matches; a record is returned before the trailer is checked, so a
/// caller must read to the end before trusting anything.
pub struct BundleReader<R: Read> {
    input: R,
    ctx: digest::Context,
    at: u64,
    done: bool,
}

impl<R: Read> BundleReader<R> {
    /// Starts reading `input`, checking the magic line.
    pub fn new(mut input: R) -> Result<Self, BundleError> {
        let mut magic = vec![0u8; MAGIC.len()];
        input
            .read_exact(&mut magic)
            .map_err(|_| BundleError::Magic)?;
        if magic != MAGIC {
            return Err(BundleError::Magic);
        }
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&magic);
        Ok(BundleReader {
            input,
            ctx,
            at: MAGIC.len() as u64,
            done: false,
        })
    }

    /// Byte offset of the next record (for error messages).
    pub fn offset(&self) -> u64 {
        self.at
    }

    fn bad(&self, reason: &'static str) -> BundleError {
        BundleError::Record {
            at: self.at,
            reason,
        }
    }

    /// A partition record: a length-prefixed partition id, then its verifier key.
    fn partition_record(&self, data: &[u8]) -> Result<Record, BundleError> {
        let Some((&plen, rest)) = data.split_first() else {
            return Err(self.bad("empty partition record"));
        };
        let (id, vkey) = rest
            .split_at_checked(usize::from(plen))
            .ok_or_else(|| self.bad("partition record truncated"))?;
        let partition = std::str::from_utf8(id)
            .ok()
            .and_then(|s| PartitionId::parse(s).ok())
            .ok_or_else(|| self.bad("bad partition id"))?;
        let vkey = std::str::from_utf8(vkey).map_err(|_| self.bad("verifier key is not UTF-8"))?;
        let vkey = VerifierKey::parse(vkey).map_err(BundleError::Key)?;
        Ok(Record::Partition { partition, vkey })
    }

    /// The next record, or `None` after a valid trailer.
    pub fn next_record(&mut self) -> Result<Option<Record>, BundleError> {
        if self.done {
            return Ok(None);
        }
        let mut head = [0u8; 5];
        match self.input.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(BundleError::Truncated);
            }
            Err(e) => return Err(e.into()),
        }
        let [tag, l0, l1, l2, l3] = head;
        let len = u32::from_be_bytes([l0, l1, l2, l3]);
        if len > MAX_RECORD {
            return Err(self.bad("record too large"));
        }
        let mut data = vec![0u8; len as usize];
        self.input
            .read_exact(&mut data)
            .map_err(|_| BundleError::Truncated)?;
        if tag == TAG_TRAILER {
            if self.ctx.clone().finish().as_ref() != data.as_slice() {
                return Err(BundleError::Trailer);
            }
            let mut extra = [0u8; 1];
            if self.input.read(&mut extra)? != 0 {
                return Err(self.bad("bytes after the trailer"));
            }
            self.done = true;
            return Ok(None);
        }
        self.ctx.update(&head);
        self.ctx.update(&data);
        let record = match tag {
            TAG_PARTITION => self.partition_record(&data)?,
            TAG_ENVELOPE => Record::Envelope(data),
            TAG_START => {
                let (from, chain, hashes) =
                    size_hash_list(&data).ok_or_else(|| self.bad("malformed start record"))?;
                let frontier = CompactRange::from_parts(from, hashes)
                    .map_err(|_| self.bad("start record's frontier does not fit its size"))?;
                Record::Start {
                    from,
                    chain,
                    frontier,
                }
            }
            TAG_CONSISTENCY => {
                let (from, root, proof) = size_hash_list(&data)
                    .ok_or_else(|| self.bad("malformed consistency record"))?;
                Record::Consistency { from, root, proof }
            }
            TAG_CHECKPOINT => Record::Checkpoint(
                String::from_utf8(data).map_err(|_| self.bad("checkpoint is not UTF-8"))?,
            ),
            _ => return Err(self.bad("unknown record tag")),
        };
        self.at += 5 + u64::from(len);
        Ok(Some(record))
    }
}

/// A start or consistency record's body: a u64 size, a hash, then a list of hashes.
fn size_hash_list(data: &[u8]) -> Option<(u64, Hash, Vec<Hash>)> {
    let (size, rest) = data.split_at_checked(8)?;
    let size = u64::from_be_bytes(size.try_into().ok()?);
    let (hash, rest) = rest.split_at_checked(32)?;
    Some((size, Hash::from_slice(hash)?, hash_list(rest)?))
}

/// Verifies a bundle from `input`. `pinned` returns the trusted key for a partition; the key
/// named in the bundle must equal it. Returns one report per partition.
pub fn verify<R: Read>(
    input: R,
    pinned: &dyn Fn(&PartitionId) -> Option<VerifierKey>,
) -> Result<Vec<PartitionReport>, BundleError> {
    let mut reader = BundleReader::new(input)?;
    let mut reports = Vec::new();
    let mut section: Option<Section> = None;
    loop {
        let at = reader.offset();
        let Some(record) = reader.next_record()? else {
            close(section.take(), &mut reports)?;
            return Ok(reports);
        };
        match record {
            Record::Partition {
                partition: id,
                vkey: named,
            } => {
                close(section.take(), &mut reports)?;
                let key =
                    pinned(&id).ok_or_else(|| BundleError::UnknownPartition(id.to_string()))?;
                if key != named {
                    return Err(BundleError::Key(NoteError::NoTrustedSignature));
                }
                section = Some(Section::new(id, key));
            }
            Record::Envelope(data) => {
                in_section(section.as_mut(), at, "envelope before a partition record")?
                    .envelope(at, &data)?;
            }
            Record::Checkpoint(note) => {
                in_section(section.as_mut(), at, "checkpoint before a partition record")?
                    .checkpoint(&note)?;
            }
            Record::Start {
                from,
                chain,
                frontier,
            } => {
                in_section(
                    section.as_mut(),
                    at,
                    "start record before a partition record",
                )?
                .start(at, from, chain, frontier)?;
            }
            Record::Consistency { from, root, proof } => {
                let s = in_section(
                    section.as_mut(),
                    at,
                    "consistency record before a partition record",
                )?;
                check_consistency(
                    &s.verifier,
                    s.report.first_seq,
                    s.report.checkpoints,
                    s.proved,
                    (from, &root, &proof),
                )?;
                s.proved = true;
            }
        }
    }
}

/// The open section, or the bundle error of a record that needs one.
fn in_section<'s>(
    section: Option<&'s mut Section>,
    at: u64,
    reason: &'static str,
) -> Result<&'s mut Section, BundleError> {
    section.ok_or(BundleError::Record { at, reason })
}

impl Section {
    /// A partition's section, verified against its pinned `key`.
    fn new(id: PartitionId, key: VerifierKey) -> Self {
        Section {
            report: PartitionReport {
                partition: id.to_string(),
                entries: 0,
                checkpoints: 0,
                root: Hash::ZERO,
                last_checkpoint: None,
                kinds: BTreeMap::new(),
                first_seq: 0,
            },
            verifier: ChainVerifier::new(id),
            key,
            anchored: true,
            proved: false,
        }
    }

    /// The next envelope: only once a start record is anchored by its checkpoint.
    fn envelope(&mut self, at: u64, data: &[u8]) -> Result<(), BundleError> {
        if !self.anchored {
            return Err(BundleError::Record {
                at,
                reason: "a start record must be followed by the checkpoint at its size",
            });
        }
        let (env, _) = self.verifier.push(data)?;
        *self.report.kinds.entry(env.header.kind.name()).or_default() += 1;
        Ok(())
    }

    fn checkpoint(&mut self, note: &str) -> Result<(), BundleError> {
        let cp = self.verifier.check_checkpoint(note, &self.key)?;
        self.report.checkpoints += 1;
        self.report.last_checkpoint = Some(cp.size);
        self.anchored = true;
        Ok(())
    }

    /// A section that starts at a checkpointed size: the chain resumes from the recorded
    /// tree edge and chain value, unanchored until the checkpoint at that size.
    fn start(
        &mut self,
        at: u64,
        from: u64,
        chain: Hash,
        frontier: CompactRange,
    ) -> Result<(), BundleError> {
        if self.verifier.size() != 0 || self.report.checkpoints != 0 {
            return Err(BundleError::Record {
                at,
                reason: "start record after entries",
            });
        }
        self.verifier = ChainVerifier::resume(self.verifier.partition().clone(), frontier, chain);
        self.anchored = false;
        self.report.first_seq = from;
        Ok(())
    }
}
