//! Several cells of one instance identity, and a partition moved between them (issue 31,
//! docs/operations.md "Several cells"). A partition is the unit of placement: each cell is an
//! instance of its own (its engine, its writer) sharing the identity of the first one: the
//! origin, the instance record, the checkpoint signing keys, the witness, credential-MAC and
//! prefecture matching keys, and the KEK. A checkpoint of a partition therefore verifies
//! with the same key whichever cell signed it, and a partition moved from one cell to another
//! is the same log, byte for byte, going on.
//!
//! A move: the partition is marked moved on its cell through the writer (after every append
//! queued before it; nothing is written to it there again), its space, its records of the
//! system space and its keys are copied from one snapshot into the other cell, and the other
//! cell verifies it with its keys and must hold the same signed checkpoint.

use super::engine::{Dir, EngineError, Op, Pair, Space, View, commit_chunked};
use super::keyring::KeyError;
use super::records::{
    self, CREDENTIAL_MACS, CREDENTIAL_PREFIX, CredentialRecord, INSTANCE_KEY, PartitionRecord,
    PartitionStatus, ReachRecord, SIGNING_KEYS, decode, encode,
};
use super::{AppendError, Store, VerifyOptions};
use crate::crypto::WrapPurpose;
use crate::ledger::PartitionId;

/// Pairs per commit of a move.
const BATCH: usize = 2_000;

/// Why a sibling could not be made or a partition not moved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlacementError {
    #[error("the two cells are not one instance identity (origin, signing keys or KEK differ)")]
    NotSibling,
    #[error("the new cell already holds an instance")]
    NotEmpty,
    #[error("partition {0} is not active on this cell")]
    NotActive(PartitionId),
    #[error("the other cell already has partition {0}")]
    AlreadyThere(PartitionId),
    #[error("marking partition {0} moved")]
    Freeze(PartitionId, #[source] AppendError),
    #[error("reading this cell")]
    Source(#[source] EngineError),
    #[error("writing the other cell")]
    Target(#[source] EngineError),
    #[error("key store")]
    Keys(#[from] KeyError),
    #[error("a record of partition {0} could not be read")]
    BadRecord(PartitionId),
    #[error("partition {0} on the other cell fails verification")]
    Verify(PartitionId, #[source] crate::ledger::VerifyError),
    #[error("partition {0}: the other cell's checkpoint is not the one this cell signed")]
    CheckpointDiffers(PartitionId),
    #[error("partition {0} has not moved from this cell; nothing is dropped")]
    NotMoved(PartitionId),
    #[error("confirm with the partition id ({0})")]
    Unconfirmed(PartitionId),
    #[error("purging what the dropped records left in the engine's files")]
    Purge(#[source] EngineError),
}

/// What dropping a moved partition's copy removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropReport {
    /// Key-store records (its DEKs and index key).
    pub keys: u64,
    /// Records of the system space (key metadata, cursors, credentials reaching it alone).
    pub system_records: u64,
}

/// What a move copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMoveReport {
    pub partition: PartitionId,
    /// Entries of the log, as verified on the other cell.
    pub entries: u64,
    /// Pairs of its space, records of the system space, key-store records, credentials.
    pub pairs: u64,
    pub system_records: u64,
    pub keys: u64,
    pub credentials: u64,
}

impl Store {
    /// Whether `other` is a cell of this instance's identity: the same instance record
    /// (origin, first signing key, KEK fingerprint) and the same signing keys.
    fn is_sibling(&self, other: &Store) -> Result<bool, PlacementError> {
        let get = |s: &Store, key: &[u8]| {
            s.inner
                .engine
                .get(&Space::System, key)
                .map_err(PlacementError::Source)
        };
        Ok(get(self, INSTANCE_KEY)? == get(other, INSTANCE_KEY)?
            && get(self, SIGNING_KEYS)? == get(other, SIGNING_KEYS)?)
    }

    /// Makes the new, empty instance `empty` a cell of this instance's identity: its
    /// instance keys are replaced by this instance's (every key-store record but a
    /// partition's), and the instance record, the signing-key list and the credential-MAC
    /// marker are copied. `empty` must have been made with this instance's KEK. It is
    /// closed here: open it again (its signer and caches are read at open).
    pub fn adopt_as_sibling(&self, empty: Store) -> Result<(), PlacementError> {
        if empty.inner.keyring.kek_fingerprint()? != self.inner.keyring.kek_fingerprint()? {
            return Err(PlacementError::NotSibling);
        }
        let target = &empty.inner;
        if !target
            .engine
            .partition_spaces()
            .map_err(PlacementError::Target)?
            .is_empty()
        {
            return Err(PlacementError::NotEmpty);
        }
        let own: Vec<Vec<u8>> = target
            .keyring
            .records()?
            .into_iter()
            .map(|(k, _)| k.into_vec())
            .collect();
        let keys: Vec<(Vec<u8>, Vec<u8>)> = self
            .inner
            .keyring
            .records()?
            .into_iter()
            .filter(|(k, _)| slot_partition(k).is_none())
            .map(|(k, v)| (k.into_vec(), v.into_vec()))
            .collect();
        let stale: Vec<Vec<u8>> = own
            .into_iter()
            .filter(|k| !keys.iter().any(|(mine, _)| mine == k))
            .collect();
        target.keyring.commit(keys, stale)?;
        let mut ops = Vec::new();
        for key in [INSTANCE_KEY, SIGNING_KEYS, CREDENTIAL_MACS] {
            let value = self
                .inner
                .engine
                .get(&Space::System, key)
                .map_err(PlacementError::Source)?;
            match value {
                Some(v) => ops.push(Op::put(&Space::System, key, &v)),
                None => ops.push(Op::Delete {
                    space: Space::System,
                    key: key.to_vec(),
                }),
            }
        }
        target.engine.commit(ops).map_err(PlacementError::Target)
    }

    /// Moves partition `p` from this cell to `to`, a cell of the same identity that does not
    /// hold it (see the module comment). This cell keeps the log as it was, marked moved;
    /// `to` goes on from it.
    pub fn move_partition(
        &self,
        p: &PartitionId,
        to: &Store,
    ) -> Result<PartitionMoveReport, PlacementError> {
        if !self.is_sibling(to)? {
            return Err(PlacementError::NotSibling);
        }
        // The registry record is the last write of a move: without it, `to` holds at most
        // part of an interrupted one, which is copied again (every write is a put of the
        // same bytes).
        let there = to
            .inner
            .engine
            .get(&Space::System, &records::registry_key(p))
            .map_err(PlacementError::Target)?;
        if there.is_some() {
            return Err(PlacementError::AlreadyThere(p.clone()));
        }
        let record = self.registry_record(p)?;
        match record.status {
            PartitionStatus::Active => self
                .writer
                .move_out(p.clone())
                .map_err(|e| PlacementError::Freeze(p.clone(), e))?,
            PartitionStatus::Moved => {
                tracing::warn!(partition = %p, "resuming an interrupted move");
            }
            PartitionStatus::Requested => return Err(PlacementError::NotActive(p.clone())),
        }
        let signed = self
            .checkpoint(p)
            .map_err(|_| PlacementError::BadRecord(p.clone()))?;
        let report = self.copy_partition(p, record, to)?;
        let verified = to
            .verify_partition(p, VerifyOptions { with_keys: true })
            .map_err(|e| PlacementError::Verify(p.clone(), e))?;
        if to.checkpoint(p).ok().flatten() != signed {
            return Err(PlacementError::CheckpointDiffers(p.clone()));
        }
        Ok(PartitionMoveReport {
            entries: verified.entries,
            ..report
        })
    }

    /// Removes the copy a move left on this cell: every pair of `p`'s space, its wrapped
    /// keys, its system records (key metadata, re-encryption cursor, shred record, job
    /// cursors, credentials reaching it alone), then purges the engine's and the key
    /// store's files as a destroy does. The registry keeps `p` as moved, so its writes are
    /// still refused `Moved`. `confirm` must be the partition id.
    pub fn drop_moved(&self, p: &PartitionId, confirm: &str) -> Result<DropReport, PlacementError> {
        if confirm != p.as_str() {
            return Err(PlacementError::Unconfirmed(p.clone()));
        }
        if self.registry_record(p)?.status != PartitionStatus::Moved {
            return Err(PlacementError::NotMoved(p.clone()));
        }
        let slots: Vec<Vec<u8>> = self
            .partition_keys(p)?
            .into_iter()
            .map(|(k, _)| k.into_vec())
            .collect();
        let keys = slots.len() as u64;
        self.inner.keyring.commit(Vec::new(), slots)?;
        let snapshot = self
            .inner
            .engine
            .snapshot()
            .map_err(PlacementError::Source)?;
        let owned = system_records(&*snapshot, p)?;
        drop(snapshot);
        let mut gone: Vec<Op> = owned
            .records
            .into_iter()
            .chain(owned.credentials)
            .map(|(k, _)| Op::Delete {
                space: Space::System,
                key: k.into_vec(),
            })
            .collect();
        let system_records = gone.len() as u64;
        gone.push(Op::DeleteRange {
            space: Space::Partition(p.clone()),
            from: Vec::new(),
            to: vec![0xff],
        });
        self.inner
            .engine
            .commit(gone)
            .map_err(PlacementError::Target)?;
        self.inner
            .engine
            .purge_deleted(&[Space::Partition(p.clone()), Space::System])
            .map_err(PlacementError::Purge)?;
        self.inner.keyring.compact()?;
        self.inner.anchor.forget(p);
        Ok(DropReport {
            keys,
            system_records,
        })
    }

    fn registry_record(&self, p: &PartitionId) -> Result<PartitionRecord, PlacementError> {
        let raw = self
            .inner
            .engine
            .get(&Space::System, &records::registry_key(p))
            .map_err(PlacementError::Source)?
            .ok_or_else(|| PlacementError::NotActive(p.clone()))?;
        decode(&raw).ok_or_else(|| PlacementError::BadRecord(p.clone()))
    }

    /// `p`'s key-store records (its DEKs and index key).
    fn partition_keys(&self, p: &PartitionId) -> Result<Vec<Pair>, PlacementError> {
        let mut records = self.inner.keyring.records()?;
        records.retain(|(k, _)| slot_partition(k).as_ref() == Some(p));
        Ok(records)
    }

    /// Copies `p`'s keys, space, name and system records (its registry record last, as
    /// active) into `to`, from one snapshot of this cell; `entries` is left for the caller.
    fn copy_partition(
        &self,
        p: &PartitionId,
        record: PartitionRecord,
        to: &Store,
    ) -> Result<PartitionMoveReport, PlacementError> {
        let keys: Vec<(Vec<u8>, Vec<u8>)> = self
            .partition_keys(p)?
            .into_iter()
            .map(|(k, v)| (k.into_vec(), v.into_vec()))
            .collect();
        let n_keys = keys.len() as u64;
        to.inner.keyring.commit(keys, Vec::new())?;
        to.inner
            .engine
            .create_spaces(std::slice::from_ref(p))
            .map_err(PlacementError::Target)?;
        let snapshot = self
            .inner
            .engine
            .snapshot()
            .map_err(PlacementError::Source)?;
        let pairs = copy_all(&*snapshot, &Space::Partition(p.clone()), to)?;
        let owned = system_records(&*snapshot, p)?;
        let name_key = records::name_key(p);
        let name = snapshot
            .get(&Space::System, &name_key)
            .map_err(PlacementError::Source)?;
        let active = encode(&PartitionRecord {
            status: PartitionStatus::Active,
            ..record
        })
        .map_err(|_| PlacementError::BadRecord(p.clone()))?;
        let (system_records, credentials) = (
            owned.records.len() as u64 + 1 + u64::from(name.is_some()),
            owned.credentials.len() as u64,
        );
        let mut ops: Vec<Op> = owned
            .records
            .iter()
            .chain(&owned.credentials)
            .map(|(k, v)| Op::put(&Space::System, k, v))
            .chain(name.map(|v| Op::put(&Space::System, &name_key, &v)))
            .collect();
        // The registry record last: without it `to` holds no partition `p`.
        ops.push(Op::put(&Space::System, &records::registry_key(p), &active));
        commit_batches(to, ops)?;
        Ok(PartitionMoveReport {
            partition: p.clone(),
            entries: 0,
            pairs,
            system_records,
            keys: n_keys,
            credentials,
        })
    }
}

/// `p`'s records of the system space that a move carries and a drop removes: key metadata,
/// re-encryption cursor, shred record and job cursors, and (apart) the credentials that
/// reach it alone (they authenticate on any cell of the identity: the credential-MAC key is
/// the identity's). Not its registry record nor its name (a drop keeps both).
struct SystemRecords {
    records: Vec<Pair>,
    credentials: Vec<Pair>,
}

fn system_records(view: &dyn View, p: &PartitionId) -> Result<SystemRecords, PlacementError> {
    let under = |prefix: &[u8], keep: &dyn Fn(&[u8], &[u8]) -> bool| {
        let mut out = Vec::new();
        for item in view
            .scan_prefix(&Space::System, prefix)
            .map_err(PlacementError::Source)?
        {
            let (k, v) = item.map_err(PlacementError::Source)?;
            if keep(&k, &v) {
                out.push((k, v));
            }
        }
        Ok::<_, PlacementError>(out)
    };
    let mut records = Vec::new();
    for prefix in [
        records::key_meta_prefix(p),
        records::reencrypt_key(p),
        records::shred_key(p),
    ] {
        records.extend(under(&prefix, &|_, _| true)?);
    }
    let suffix = [&[0u8][..], p.as_str().as_bytes()].concat();
    records.extend(under(b"G", &|k, _| k.ends_with(&suffix))?);
    let reach = ReachRecord::Partition(p.to_string());
    let credentials = under(CREDENTIAL_PREFIX, &|_, v| reaches_alone(v, &reach))?;
    Ok(SystemRecords {
        records,
        credentials,
    })
}

/// Whether the credential record `v` (`CredentialRecord ‖ MAC[32]`) has reach `reach`.
fn reaches_alone(v: &[u8], reach: &ReachRecord) -> bool {
    let record = v.len().checked_sub(32).and_then(|end| v.get(..end));
    record
        .and_then(decode::<CredentialRecord>)
        .is_some_and(|r| r.reach == *reach)
}

/// Copies every pair of `space`.
fn copy_all(from: &dyn View, space: &Space, to: &Store) -> Result<u64, PlacementError> {
    let mut n = 0;
    let mut batch = Vec::with_capacity(BATCH);
    for item in from
        .scan(space, &[], Dir::Forward)
        .map_err(PlacementError::Source)?
    {
        let (k, v) = item.map_err(PlacementError::Source)?;
        batch.push(Op::put(space, &k, &v));
        n += 1;
        if batch.len() == BATCH {
            commit_batches(to, std::mem::take(&mut batch))?;
        }
    }
    commit_batches(to, batch)?;
    Ok(n)
}

fn commit_batches(to: &Store, ops: Vec<Op>) -> Result<(), PlacementError> {
    commit_chunked(&*to.inner.engine, ops.into_iter(), BATCH, &mut |_| {})
        .map_err(PlacementError::Target)
}

/// The partition a key-store slot belongs to (its DEKs and index key), if any.
fn slot_partition(slot: &[u8]) -> Option<PartitionId> {
    match records::slot_of(slot)? {
        (WrapPurpose::Dek | WrapPurpose::IndexKey, scope, _) => PartitionId::parse(&scope).ok(),
        _ => None,
    }
}
