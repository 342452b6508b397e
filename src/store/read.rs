//! Reads: entries (opened through a partition scope), envelopes, indexes, claims, job
//! cursors, checkpoints. Proofs are in `proofs`, verification and audit export in `audit`.

use zeroize::Zeroizing;

use super::engine::{Dir, EngineError, Op, Space, View};
use super::records::KeyStatus;
use super::records::{
    REPLICA_STATE_KEY, ReplicaState, STATE_KEY, StateRecord, TransmissionRecord, checkpoint_key,
    decode, entry_key, transmission_key,
};
use super::{Inner, Store};
use crate::crypto::PartitionScope;
use crate::ledger::Seq;
use crate::ledger::envelope::{Body, Envelope, SALT_LEN};
use crate::ledger::hash::{Hash, commitment};
use crate::ledger::header::{Header, PartitionId};

mod check;
mod index;
mod nodes;

pub(super) use nodes::DbNodes;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    #[error("partition {0} does not exist")]
    UnknownPartition(PartitionId),
    #[error("the system column family is missing")]
    NoSystemFamily,
    #[error("partition {partition} has no entry {seq} (size {size})")]
    NoSuchEntry {
        partition: PartitionId,
        seq: u64,
        size: u64,
    },
    #[error("partition {partition} has no checkpoint at size {size}")]
    NoCheckpoint { partition: PartitionId, size: u64 },
    #[error("bad proof request: {0}")]
    BadRequest(String),
    #[error("partition {partition} seq {seq}: {step}")]
    Corrupt {
        partition: PartitionId,
        seq: u64,
        step: String,
    },
    #[error("partition {partition} seq {seq}: key {key_id} unavailable: {reason}")]
    Key {
        partition: PartitionId,
        seq: u64,
        key_id: u32,
        reason: String,
    },
    #[error(
        "partition {partition} seq {seq}: key {key_id} was destroyed (crypto-shredded); the entry stays in the log, its body is unreadable by design"
    )]
    KeyDestroyed {
        partition: PartitionId,
        seq: u64,
        key_id: u32,
    },
    #[error("storage")]
    Storage(#[from] rocksdb::Error),
    #[error("the storage engine")]
    Engine(#[source] EngineError),
    #[error("I/O")]
    Io(#[from] std::io::Error),
}

/// A decrypted, commitment-checked entry. The payload zeroizes on drop.
pub struct Entry {
    pub header: Header,
    pub leaf_hash: Hash,
    pub key_id: u32,
    /// The commitment salt: `commitment = H(salt ‖ payload)` (docs/format.md §3). A replica
    /// needs it to store a copy with the same commitment.
    pub salt: [u8; SALT_LEN],
    pub payload: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("header", &self.header)
            .field("key_id", &self.key_id)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// Options of [`Store::verify_partition`].
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions {
    /// Also decrypt sealed bodies and recompute their commitments.
    pub with_keys: bool,
}

/// What a partition's verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub partition: PartitionId,
    pub entries: u64,
    pub checkpoints: u64,
    pub root: Hash,
    pub bodies_opened: u64,
    /// Sealed entries whose key was destroyed on purpose (their bodies are not checked).
    pub bodies_shredded: u64,
}

pub(super) fn corrupt(p: &PartitionId, seq: u64, step: impl std::fmt::Display) -> ReadError {
    ReadError::Corrupt {
        partition: p.clone(),
        seq,
        step: step.to_string(),
    }
}

impl From<EngineError> for ReadError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NoSpace(p) => ReadError::UnknownPartition(p),
            EngineError::NoSystemSpace => ReadError::NoSystemFamily,
            e => ReadError::Engine(e),
        }
    }
}

/// The space of partition `p`.
pub(super) fn space(p: &PartitionId) -> Space {
    Space::Partition(p.clone())
}

impl Inner {
    /// The space of partition `p`, which must exist.
    pub(super) fn known(&self, p: &PartitionId) -> Result<Space, ReadError> {
        if self.engine.has_space(p) {
            Ok(space(p))
        } else {
            Err(ReadError::UnknownPartition(p.clone()))
        }
    }

    pub(crate) fn state(&self, p: &PartitionId) -> Result<Option<StateRecord>, ReadError> {
        Self::state_in(&*self.engine, p)
    }

    /// [`Inner::state`] as `view` (a snapshot) holds it.
    pub(crate) fn state_in(
        view: &dyn View,
        p: &PartitionId,
    ) -> Result<Option<StateRecord>, ReadError> {
        match view.get(&space(p), STATE_KEY)? {
            None => Ok(None),
            Some(raw) => decode(&raw)
                .map(Some)
                .ok_or_else(|| corrupt(p, 0, "partition state record is unreadable")),
        }
    }

    pub(crate) fn size(&self, p: &PartitionId) -> Result<u64, ReadError> {
        Ok(self.state(p)?.map_or(0, |s| s.size))
    }

    pub(crate) fn latest_checkpoint(&self, p: &PartitionId) -> Result<Option<String>, ReadError> {
        let mut it = self
            .engine
            .scan(&space(p), &checkpoint_key(u64::MAX), Dir::Reverse)?;
        match it.next() {
            Some(item) => {
                let (k, v) = item?;
                if k.first() != Some(&b'C') {
                    return Ok(None);
                }
                String::from_utf8(v.to_vec())
                    .map(Some)
                    .map_err(|_| corrupt(p, 0, "checkpoint is not UTF-8"))
            }
            None => Ok(None),
        }
    }

    pub(super) fn checkpoint_at(&self, p: &PartitionId, size: u64) -> Result<String, ReadError> {
        let raw = self
            .engine
            .get(&space(p), &checkpoint_key(size))?
            .ok_or_else(|| ReadError::NoCheckpoint {
                partition: p.clone(),
                size,
            })?;
        String::from_utf8(raw).map_err(|_| corrupt(p, size, "checkpoint is not UTF-8"))
    }
}

impl Store {
    pub(super) fn envelope_bytes(&self, p: &PartitionId, seq: u64) -> Result<Vec<u8>, ReadError> {
        match self.inner.engine.get(&space(p), &entry_key(seq))? {
            Some(v) => Ok(v),
            None => Err(ReadError::NoSuchEntry {
                partition: p.clone(),
                seq,
                size: self.inner.size(p)?,
            }),
        }
    }

    /// Reads, decrypts and checks one entry of the scope's partition.
    pub fn read_entry(&self, scope: &PartitionScope, seq: u64) -> Result<Entry, ReadError> {
        let p = scope.partition();
        let raw = self.envelope_bytes(p, seq)?;
        self.open_envelope(p, seq, &raw)
    }

    /// Decrypts and checks an envelope given as bytes, as if stored at `seq` of the scope's
    /// partition. A ciphertext moved from another seq or partition fails here.
    pub fn open_envelope_at(
        &self,
        scope: &PartitionScope,
        seq: u64,
        raw: &[u8],
    ) -> Result<Entry, ReadError> {
        self.open_envelope(scope.partition(), seq, raw)
    }

    pub(super) fn open_envelope(
        &self,
        p: &PartitionId,
        seq: u64,
        raw: &[u8],
    ) -> Result<Entry, ReadError> {
        let env = Envelope::decode(raw)
            .map_err(|e| corrupt(p, seq, format!("envelope: {}", crate::error::report(&e))))?;
        if env.header.seq != seq || &env.header.partition != p {
            return Err(corrupt(p, seq, "envelope is stored under another position"));
        }
        let leaf_hash = env.leaf_hash();
        let (salt, payload) = match env.body {
            Body::Open { salt, payload } => (salt, Zeroizing::new(payload)),
            Body::Sealed {
                nonce,
                ciphertext_and_tag,
            } => {
                let dek = self.inner.keyring.dek(p, env.key_id).map_err(|e| {
                    if self.key_meta_status(p, env.key_id) == Some(KeyStatus::Destroyed) {
                        ReadError::KeyDestroyed {
                            partition: p.clone(),
                            seq,
                            key_id: env.key_id,
                        }
                    } else {
                        ReadError::Key {
                            partition: p.clone(),
                            seq,
                            key_id: env.key_id,
                            reason: crate::error::report(&e),
                        }
                    }
                })?;
                let plain = dek
                    .open(&leaf_hash, &nonce, &ciphertext_and_tag)
                    .map_err(|e| corrupt(p, seq, e))?;
                let (salt, payload) = plain
                    .split_at_checked(SALT_LEN)
                    .ok_or_else(|| corrupt(p, seq, "sealed body shorter than its salt"))?;
                let mut s = [0u8; SALT_LEN];
                s.copy_from_slice(salt);
                if commitment(&s, payload) != env.header.commitment {
                    return Err(corrupt(
                        p,
                        seq,
                        "payload does not match the header's commitment",
                    ));
                }
                (s, Zeroizing::new(payload.to_vec()))
            }
        };
        Ok(Entry {
            header: env.header,
            leaf_hash,
            key_id: env.key_id,
            salt,
            payload,
        })
    }

    /// Reads up to `limit` entries from `from`.
    pub fn read_range(
        &self,
        scope: &PartitionScope,
        Seq(from): Seq,
        limit: u64,
    ) -> Result<Vec<Entry>, ReadError> {
        let p = scope.partition();
        let size = self.inner.size(p)?;
        let end = from.saturating_add(limit).min(size);
        (from..end).map(|seq| self.read_entry(scope, seq)).collect()
    }

    /// Raw envelopes `[from, to)`: headers and ciphertext, no keys needed, no plaintext.
    pub fn envelopes(
        &self,
        p: &PartitionId,
        Seq(from): Seq,
        Seq(to): Seq,
    ) -> Result<Vec<Vec<u8>>, ReadError> {
        let size = self.inner.size(p)?;
        let to = to.min(size);
        (from..to).map(|seq| self.envelope_bytes(p, seq)).collect()
    }

    /// Calls `f(seq, envelope)` for every stored entry of `p`, in seq order, over one
    /// iterator (for scans of a whole partition).
    pub fn for_each_envelope<E: From<ReadError>>(
        &self,
        p: &PartitionId,
        mut f: impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let scan = self
            .inner
            .engine
            .scan_prefix(&space(p), b"E")
            .map_err(ReadError::from)?;
        for item in scan {
            let (k, raw) = item.map_err(ReadError::from)?;
            let Some(seq) = k
                .strip_prefix(b"E")
                .and_then(|s| <[u8; 8]>::try_from(s).ok())
            else {
                break;
            };
            f(u64::from_be_bytes(seq), &raw)?;
        }
        Ok(())
    }

    /// Current tree size of a partition.
    pub fn size(&self, p: &PartitionId) -> Result<u64, ReadError> {
        self.inner.size(p)
    }

    /// How far job `job` has read partition `p`'s log (`None`: never).
    pub fn job_cursor(&self, job: &str, p: &PartitionId) -> Result<Option<u64>, ReadError> {
        let Some(raw) = self
            .inner
            .engine
            .get(&Space::System, &super::records::job_cursor_key(job, p))?
        else {
            return Ok(None);
        };
        <[u8; 8]>::try_from(raw.as_ref())
            .map(|b| Some(u64::from_be_bytes(b)))
            .map_err(|_| corrupt(p, 0, "job cursor is not 8 bytes"))
    }

    /// Records that job `job` has read partition `p` up to `size` (entries below it), in one
    /// synced batch for all the partitions of a run. A job cursor is bookkeeping beside the
    /// log: it holds no entry, node, checkpoint or state.
    pub fn set_job_cursors(
        &self,
        job: &str,
        cursors: &[(PartitionId, u64)],
    ) -> Result<(), ReadError> {
        let ops = cursors
            .iter()
            .map(|(p, size)| Op::Put {
                space: Space::System,
                key: super::records::job_cursor_key(job, p),
                value: size.to_be_bytes().to_vec(),
            })
            .collect();
        Ok(self.inner.engine.commit(ops)?)
    }

    /// The replica state of a partition (intermediate), if it has replicated anything.
    pub fn replica_state(&self, p: &PartitionId) -> Result<Option<ReplicaState>, ReadError> {
        match self.inner.engine.get(&space(p), REPLICA_STATE_KEY)? {
            None => Ok(None),
            Some(raw) => decode(&raw)
                .map(Some)
                .ok_or_else(|| corrupt(p, 0, "replica state is unreadable")),
        }
    }

    /// A stored transmission record by id.
    pub fn transmission(
        &self,
        p: &PartitionId,
        id: &str,
    ) -> Result<Option<TransmissionRecord>, ReadError> {
        match self.inner.engine.get(&space(p), &transmission_key(id))? {
            None => Ok(None),
            Some(raw) => decode(&raw)
                .map(Some)
                .ok_or_else(|| corrupt(p, 0, "transmission record is unreadable")),
        }
    }

    /// The flow-5 transmissions of a partition (ids without `:`; the other claims under `T`
    /// are flow 4's), in id order.
    pub fn transmissions(
        &self,
        p: &PartitionId,
    ) -> Result<Vec<(String, TransmissionRecord)>, ReadError> {
        let mut all = self.claims(p, "")?;
        all.retain(|(id, _)| !id.contains(':'));
        Ok(all)
    }

    /// The claims (transmission records, `T`) of a partition whose id starts with `prefix`,
    /// in id order: e.g. every version of one flow-4 move (`move:<id>`).
    pub fn claims(
        &self,
        p: &PartitionId,
        prefix: &str,
    ) -> Result<Vec<(String, TransmissionRecord)>, ReadError> {
        let start = transmission_key(prefix);
        let mut out = Vec::new();
        for item in self.inner.engine.scan_prefix(&space(p), &start)? {
            let (k, v) = item?;
            let Some(id) = k.get(1..).and_then(|id| std::str::from_utf8(id).ok()) else {
                return Err(corrupt(p, 0, "transmission id is not UTF-8"));
            };
            let record =
                decode(&v).ok_or_else(|| corrupt(p, 0, "transmission record is unreadable"))?;
            out.push((id.to_owned(), record));
        }
        Ok(out)
    }

    /// The signed checkpoint stored at `size`.
    pub fn checkpoint_at(&self, p: &PartitionId, size: u64) -> Result<String, ReadError> {
        self.inner.checkpoint_at(p, size)
    }

    /// Checkpoint sizes stored for a partition, ascending.
    pub fn checkpoint_sizes(&self, p: &PartitionId) -> Result<Vec<u64>, ReadError> {
        Self::checkpoint_sizes_in(&*self.inner.engine, p)
    }

    /// [`Store::checkpoint_sizes`] as `view` (a snapshot) holds them.
    pub(super) fn checkpoint_sizes_in(
        view: &dyn View,
        p: &PartitionId,
    ) -> Result<Vec<u64>, ReadError> {
        let mut out = Vec::new();
        for item in view.scan(&space(p), b"C", Dir::Forward)? {
            let (k, _) = item?;
            let Some(size) = k
                .strip_prefix(b"C")
                .and_then(|s| <[u8; 8]>::try_from(s).ok())
            else {
                break;
            };
            out.push(u64::from_be_bytes(size));
        }
        Ok(out)
    }
}
