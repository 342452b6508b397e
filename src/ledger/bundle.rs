//! Audit bundle (docs/format.md §8): what `kukaku export --audit` writes and auditors verify
//! without keys. Records are `tag:u8 ‖ len:u32 ‖ bytes`; a SHA-256 trailer covers everything
//! before it.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use ring::digest;

use super::hash::Hash;
use super::header::PartitionId;
use super::note::{NoteError, VerifierKey};
use super::verify::{ChainVerifier, Step, VerifyError};

/// First line of every bundle.
pub const MAGIC: &[u8] = b"kukaku-audit-bundle v1\n";
/// Largest record accepted (an envelope or a note).
pub const MAX_RECORD: u32 = 16 * 1024 * 1024;

const TAG_PARTITION: u8 = 0x01;
const TAG_ENVELOPE: u8 = 0x02;
const TAG_CHECKPOINT: u8 = 0x03;
const TAG_TRAILER: u8 = 0xFF;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error("not an audit bundle (bad first line)")]
    Magic,
    #[error("record at byte {at}: {reason}")]
    Record { at: u64, reason: &'static str },
    #[error("bundle trailer does not match its contents")]
    Trailer,
    #[error("bundle has no trailer (truncated)")]
    Truncated,
    #[error("no pinned key for partition {0}")]
    UnknownPartition(String),
    #[error("verifier key in the bundle: {0}")]
    Key(NoteError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
}

/// Writes a bundle, hashing as it goes.
pub struct BundleWriter<W: Write> {
    out: W,
    ctx: digest::Context,
}

impl<W: Write> BundleWriter<W> {
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

    pub fn envelope(&mut self, envelope: &[u8]) -> io::Result<()> {
        self.record(TAG_ENVELOPE, envelope)
    }

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
    pub partition: String,
    pub entries: u64,
    pub checkpoints: u64,
    pub root: Hash,
    /// Tree size of the last verified checkpoint.
    pub last_checkpoint: Option<u64>,
    /// Entries per kind name.
    pub kinds: BTreeMap<&'static str, u64>,
}

struct Section {
    verifier: ChainVerifier,
    key: VerifierKey,
    report: PartitionReport,
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
        partition: PartitionId,
        vkey: VerifierKey,
    },
    /// The next envelope of the current section (seq order from 0), undecoded.
    Envelope(Vec<u8>),
    /// A checkpoint note for the tree of the envelopes so far (may carry cosignatures).
    Checkpoint(String),
}

/// Reads a bundle record by record and checks its framing: the magic line, record tags and
/// lengths, the SHA-256 trailer and that nothing follows it. `next` returns `Ok(None)` only
/// after a trailer that matches; a record is returned before the trailer is checked, so a
/// caller must read to the end before trusting anything.
pub struct BundleReader<R: Read> {
    input: R,
    ctx: Option<digest::Context>,
    at: u64,
}

impl<R: Read> BundleReader<R> {
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
            ctx: Some(ctx),
            at: MAGIC.len() as u64,
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

    /// The next record, or `None` after a valid trailer.
    pub fn next_record(&mut self) -> Result<Option<Record>, BundleError> {
        let Some(ctx) = self.ctx.as_mut() else {
            return Ok(None);
        };
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
            let sum = self.ctx.take().map(digest::Context::finish);
            if sum.as_ref().map(|d| d.as_ref()) != Some(data.as_slice()) {
                return Err(BundleError::Trailer);
            }
            let mut extra = [0u8; 1];
            if self.input.read(&mut extra)? != 0 {
                return Err(self.bad("bytes after the trailer"));
            }
            return Ok(None);
        }
        ctx.update(&head);
        ctx.update(&data);
        let record = match tag {
            TAG_PARTITION => {
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
                let vkey =
                    std::str::from_utf8(vkey).map_err(|_| self.bad("verifier key is not UTF-8"))?;
                let vkey = VerifierKey::parse(vkey).map_err(BundleError::Key)?;
                Record::Partition { partition, vkey }
            }
            TAG_ENVELOPE => Record::Envelope(data),
            TAG_CHECKPOINT => Record::Checkpoint(
                String::from_utf8(data).map_err(|_| self.bad("checkpoint is not UTF-8"))?,
            ),
            _ => return Err(self.bad("unknown record tag")),
        };
        self.at += 5 + u64::from(len);
        Ok(Some(record))
    }
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
                section = Some(Section {
                    report: PartitionReport {
                        partition: id.to_string(),
                        entries: 0,
                        checkpoints: 0,
                        root: Hash::ZERO,
                        last_checkpoint: None,
                        kinds: BTreeMap::new(),
                    },
                    verifier: ChainVerifier::new(id),
                    key,
                });
            }
            Record::Envelope(data) => {
                let s = section.as_mut().ok_or(BundleError::Record {
                    at,
                    reason: "envelope before a partition record",
                })?;
                let (env, _) = s.verifier.push(&data)?;
                *s.report.kinds.entry(env.header.kind.name()).or_default() += 1;
            }
            Record::Checkpoint(note) => {
                let s = section.as_mut().ok_or(BundleError::Record {
                    at,
                    reason: "checkpoint before a partition record",
                })?;
                let cp = s.verifier.check_checkpoint(&note, &s.key)?;
                s.report.checkpoints += 1;
                s.report.last_checkpoint = Some(cp.size);
            }
        }
    }
}
