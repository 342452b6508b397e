//! Key status for security reviewers (`kukaku keys status`): every DEK version of a partition
//! with its scope, status, how many encryptions it made and how many stored entries still
//! use it. Metadata only; no key material is read.

use super::Store;
use super::read::ReadError;
use super::records::{KeyMeta, KeyStatus, SYS_CF, decode, key_meta_prefix};
use crate::ledger::payload::KeyClass;
use crate::ledger::{EnvelopeRef, PartitionId};

/// One DEK version of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub key_id: u32,
    /// `resident` or `dated`.
    pub class: &'static str,
    /// 0 for `resident`, the fiscal year for `dated`.
    pub epoch: u16,
    pub version: u32,
    /// `current` (new writes of its scope) or `previous` (decrypts only).
    pub status: &'static str,
    pub created_ms: u64,
    /// Encryptions (random nonces) made with it; rotation happens well below 2^32.
    pub encryptions: u64,
    /// Stored entries whose body is sealed under it now.
    pub entries: u64,
}

impl Store {
    /// Operator rotation (`kukaku keys rotate-dek`): a new current DEK version for every key
    /// scope of `p`, in one group-committed batch with a key event per version naming `who`.
    /// New writes use the new versions; old ones still decrypt. Returns the new key ids.
    pub fn rotate_deks(
        &self,
        p: &PartitionId,
        who: super::KeyActor,
    ) -> Result<Vec<u32>, super::AppendError> {
        self.writer.rotate(p.clone(), who)
    }

    /// Every DEK version of `p`, by key id, with the entries that use it (one pass over the
    /// partition's envelopes).
    pub fn key_status(&self, p: &PartitionId) -> Result<Vec<KeyInfo>, ReadError> {
        let inner = &self.inner;
        let sys = inner
            .db
            .cf_handle(SYS_CF)
            .ok_or_else(|| ReadError::UnknownPartition("sys".into()))?;
        let prefix = key_meta_prefix(p);
        let mut out = Vec::new();
        for item in inner.db.prefix_iterator_cf(&sys, &prefix) {
            let (k, v) = item?;
            let Some(id) = k.strip_prefix(prefix.as_slice()) else {
                break;
            };
            let (Ok(id), Some(meta)) = (<[u8; 4]>::try_from(id), decode::<KeyMeta>(&v)) else {
                return Err(ReadError::Corrupt {
                    partition: p.to_string(),
                    seq: 0,
                    step: "key metadata unreadable".into(),
                });
            };
            out.push(KeyInfo {
                key_id: u32::from_be_bytes(id),
                class: KeyClass::from_code(meta.class).map_or("unknown", KeyClass::name),
                epoch: meta.epoch,
                version: meta.version,
                status: match meta.status {
                    KeyStatus::Current => "current",
                    KeyStatus::Previous => "previous",
                },
                created_ms: meta.created_ms,
                encryptions: meta.encryptions,
                entries: 0,
            });
        }
        self.for_each_envelope(p, |seq, raw| {
            let env = EnvelopeRef::decode(raw).map_err(|e| ReadError::Corrupt {
                partition: p.to_string(),
                seq,
                step: e.to_string(),
            })?;
            if let Some(k) = out.iter_mut().find(|k| k.key_id == env.key_id) {
                k.entries += 1;
            }
            Ok::<_, ReadError>(())
        })?;
        Ok(out)
    }
}
