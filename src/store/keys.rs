//! Key status for security reviewers (`kukaku keys status`): every DEK version of a partition
//! with its scope, status, how many encryptions it made and how many stored entries still
//! use it. Metadata only; no key material is read.

use std::sync::Arc;

use super::engine::Space;
use super::keyring::KeyError;
use super::read::ReadError;
use super::records::{
    KeyMeta, KeyStatus, ReencryptCursor, decode, key_meta_key, key_meta_prefix, reencrypt_key,
};
use super::writer::{DestroyScope, KeyOp, KeyOutcome, ReencryptStep};
use super::{AppendError, KeyActor, Store};
use crate::crypto::{KekError, KekProvider};
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

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyAdminError {
    #[error("this store was opened with a fixed KEK; open it from its KEK file to rotate the KEK")]
    NoKekSource,
    #[error("another key operation is running; try again when it has finished")]
    Busy,
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("KEK")]
    Kek(#[from] KekError),
    #[error("key store")]
    Key(#[from] KeyError),
    #[error(
        "partition {partition} key {key_id} still seals {entries} entries; run `kukaku keys reencrypt --partition {partition}` first"
    )]
    InUse {
        partition: PartitionId,
        key_id: u32,
        entries: u64,
    },
    #[error("partition {partition} has no key {key_id}")]
    UnknownKey { partition: PartitionId, key_id: u32 },
    #[error("confirmation does not match: type the partition id {0} to destroy its keys")]
    Unconfirmed(String),
    #[error("the writer answered a key operation with another one's result")]
    Mismatch,
    #[error(transparent)]
    Registry(#[from] super::ProvisionError),
    /// Flushing or compacting after a destroy failed: the keys are destroyed, but old
    /// index and transmission records may remain in files until the next compaction.
    #[error("keys destroyed, but purging their derived records from the files failed")]
    Purge(#[source] super::EngineError),
    /// The actor or reason cannot be carried by a key event; nothing was written.
    #[error("refused before anything was written")]
    Text(#[source] crate::ledger::payload::PayloadError),
}

/// What `rotate-kek` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekRotation {
    pub old_fingerprint: String,
    pub new_fingerprint: String,
    /// Partitions that got a `rewrap` event.
    pub partitions: usize,
    /// Key-store records rewrapped (partition keys and instance keys).
    pub keys: u64,
}

/// What `destroy` made unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestroyReport {
    /// `(key_id, entries it had sealed)` per destroyed DEK version.
    pub keys: Vec<(u32, u64)>,
    /// The KEK rotation that followed (older key-store copies no longer open), if the store
    /// has a KEK source.
    pub kek: Option<KekRotation>,
}

/// A checkpoint-signing key the instance has had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyInfo {
    pub version: u32,
    /// Under the instance origin, as auditors pin it (`log` line).
    pub key: crate::ledger::VerifierKey,
    pub added_ms: u64,
    /// When it stopped signing; `None` while it signs.
    pub retired_ms: Option<u64>,
}

impl SigningKeyInfo {
    /// The kukaku-audit trust-file line pinning this key (docs/audit.md §2), with its
    /// window by entry time: from when it was added (unless it is the first key) until it
    /// retired, in whole seconds, widened outward (both keys signed in between).
    pub fn trust_line(&self, first: bool) -> String {
        let second = |ms: u64| {
            let t = crate::ledger::format_utc_ms(ms - ms % 1000);
            format!("{}Z", t.split('.').next().unwrap_or(&t))
        };
        let mut line = format!("log {}", self.key.to_text());
        if !first {
            line.push_str(&format!(" from={}", second(self.added_ms)));
        }
        if let Some(r) = self.retired_ms {
            line.push_str(&format!(" until={}", second(r.div_ceil(1000) * 1000)));
        }
        line
    }
}

/// How `keys status` and refusals name a key status.
pub(crate) fn status_name(s: KeyStatus) -> &'static str {
    match s {
        KeyStatus::Current => "current",
        KeyStatus::Previous => "previous",
        KeyStatus::Retired => "retired",
        KeyStatus::Destroyed => "destroyed",
    }
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
        who.validate().map_err(super::AppendError::KeyText)?;
        self.writer.rotate(p.clone(), who)
    }

    fn key_admin(&self) -> Result<std::sync::MutexGuard<'_, ()>, KeyAdminError> {
        // Held (or poisoned by a panic in another key operation): refuse, never wait.
        self.inner
            .key_admin
            .try_lock()
            .map_err(|_| KeyAdminError::Busy)
    }

    /// `kukaku keys rotate-kek`: stages a new KEK, rewraps every key of the key store under
    /// it in one synced batch, records a `rewrap` event in every partition with the instance
    /// record's new fingerprint, then promotes the new KEK and destroys the old one. A crash
    /// at any point is finished or undone at the next open. Appends and reads go on.
    pub fn rotate_kek(&self, who: KeyActor) -> Result<KekRotation, KeyAdminError> {
        who.validate().map_err(KeyAdminError::Text)?;
        let _guard = self.key_admin()?;
        self.rotate_kek_locked(who, None)
    }

    /// `kukaku keys rotate-kek --to-pkcs11 F | --to-file`: the same rotation, with the next
    /// KEK in `target` (the KEK moves between a file and an HSM; docs/keys.md).
    pub fn rotate_kek_to(
        &self,
        who: KeyActor,
        target: &crate::crypto::instance_kek::KekTarget,
    ) -> Result<KekRotation, KeyAdminError> {
        who.validate().map_err(KeyAdminError::Text)?;
        let _guard = self.key_admin()?;
        self.rotate_kek_locked(who, Some(target))
    }

    fn rotate_kek_locked(
        &self,
        who: KeyActor,
        target: Option<&crate::crypto::instance_kek::KekTarget>,
    ) -> Result<KekRotation, KeyAdminError> {
        let source = self
            .inner
            .kek_source
            .as_deref()
            .ok_or(KeyAdminError::NoKekSource)?;
        let old_fingerprint = self.inner.keyring.kek_fingerprint()?;
        let staged = match target {
            Some(t) => source.stage_next_to(t)?,
            None => source.stage_next()?,
        };
        let next: Arc<dyn KekProvider> = Arc::from(staged);
        let new_fingerprint = next.fingerprint();
        let outcome = self.writer.key_op(KeyOp::RotateKek {
            next: Some(next),
            who,
        });
        match outcome {
            Ok(KeyOutcome::Rewrapped(r)) => {
                source.promote()?;
                Ok(KekRotation {
                    old_fingerprint,
                    new_fingerprint,
                    partitions: r.partitions.len(),
                    keys: r.partitions.values().sum::<u64>() + r.instance,
                })
            }
            Ok(_) => Err(KeyAdminError::Mismatch),
            Err(e) => {
                // Undo only if the key store never moved; otherwise the next open finishes.
                if self.inner.keyring.stored_fingerprint()? != Some(new_fingerprint) {
                    source.discard()?;
                }
                Err(e.into())
            }
        }
    }

    /// At open, after a crash between the key-store rewrap and the promotion of the new KEK:
    /// writes the missing `rewrap` events (if the data batch was lost too) and promotes.
    pub(super) fn finish_kek_rotation(&self, events_needed: bool) -> Result<(), KeyAdminError> {
        let source = self
            .inner
            .kek_source
            .as_deref()
            .ok_or(KeyAdminError::NoKekSource)?;
        if events_needed {
            let who = KeyActor::system("KEK rotation finished at open after an interruption");
            self.writer.key_op(KeyOp::RotateKek { next: None, who })?;
        }
        source.promote()?;
        tracing::warn!("finished an interrupted KEK rotation");
        Ok(())
    }

    /// Test hook: a KEK rotation that stops, as a crash would, after `steps` of its four
    /// durable steps: 1 the next KEK is staged; 2 the key store is rewrapped (one batch);
    /// 3 the `rewrap` events and instance record are written (one batch); 4 promoted.
    /// `rotate_kek` runs 2 and 3 in one writer step, one write after the other.
    #[cfg(feature = "test-hooks")]
    pub fn rotate_kek_interrupted(&self, who: KeyActor, steps: u8) -> Result<(), KeyAdminError> {
        who.validate().map_err(KeyAdminError::Text)?;
        let _guard = self.key_admin()?;
        let source = self
            .inner
            .kek_source
            .as_deref()
            .ok_or(KeyAdminError::NoKekSource)?;
        let next: Arc<dyn KekProvider> = Arc::from(source.stage_next()?);
        if steps >= 2 {
            self.inner.keyring.rewrap_all(next)?;
        }
        if steps >= 3 {
            self.writer.key_op(KeyOp::RotateKek { next: None, who })?;
        }
        if steps >= 4 {
            source.promote()?;
        }
        Ok(())
    }

    /// Every checkpoint-signing key, oldest first; two sign during a transition.
    pub fn signing_keys(&self) -> Vec<SigningKeyInfo> {
        let keys = self
            .inner
            .signing_keys
            .read()
            .map(|k| k.clone())
            .unwrap_or_default();
        keys.into_iter()
            .filter_map(|k| {
                Some(SigningKeyInfo {
                    version: k.version,
                    key: crate::ledger::VerifierKey::new(&self.inner.origin, k.public).ok()?,
                    added_ms: k.added_ms,
                    retired_ms: (k.retired_ms != 0).then_some(k.retired_ms),
                })
            })
            .collect()
    }

    /// `kukaku keys rotate-signing-key`: a new checkpoint-signing key. From now on every
    /// checkpoint carries the old and the new key's signatures (a `signing_key` event in
    /// every partition says so), until [`Store::finish_signing_rotation`]. Returns the new
    /// version. Refused while a transition runs.
    pub fn rotate_signing_key(&self, who: KeyActor) -> Result<u32, KeyAdminError> {
        who.validate().map_err(KeyAdminError::Text)?;
        let _guard = self.key_admin()?;
        match self
            .writer
            .key_op(KeyOp::SigningKey { finish: false, who })?
        {
            KeyOutcome::Signing(v) => Ok(v),
            _ => Err(KeyAdminError::Mismatch),
        }
    }

    /// `kukaku keys rotate-signing-key --finish`: the older key stops signing; its seed is
    /// removed from the key store (its public key stays listed: it verifies the checkpoints
    /// it signed). Returns the retired version.
    pub fn finish_signing_rotation(&self, who: KeyActor) -> Result<u32, KeyAdminError> {
        who.validate().map_err(KeyAdminError::Text)?;
        let _guard = self.key_admin()?;
        let KeyOutcome::Signing(old) = self
            .writer
            .key_op(KeyOp::SigningKey { finish: true, who })?
        else {
            return Err(KeyAdminError::Mismatch);
        };
        self.inner
            .keyring
            .delete(&super::records::signing_key_slot(old))?;
        self.inner.keyring.compact()?;
        Ok(old)
    }

    /// Where an unfinished re-encryption job of `p` stands, if one was started.
    pub fn reencrypt_status(&self, p: &PartitionId) -> Result<Option<ReencryptStep>, ReadError> {
        let Some(raw) = self.inner.engine.get(&Space::System, &reencrypt_key(p))? else {
            return Ok(None);
        };
        let cur = decode::<ReencryptCursor>(&raw).ok_or_else(|| ReadError::Corrupt {
            partition: p.clone(),
            seq: 0,
            step: "re-encryption cursor unreadable".into(),
        })?;
        Ok(Some(ReencryptStep {
            next_seq: cur.next_seq,
            end: cur.end,
            moved: cur.moved,
            done: false,
        }))
    }

    /// `kukaku keys reencrypt`: moves `p`'s entries sealed under previous DEK versions to
    /// the current version of their scope, `chunk` entries per writer step (appends run
    /// between steps). Resumes a job a crash or a stop interrupted. `step(progress)` is
    /// called after each step; returning `false` stops (the job stays resumable).
    pub fn reencrypt(
        &self,
        p: &PartitionId,
        who: KeyActor,
        chunk: u64,
        step: &mut dyn FnMut(&ReencryptStep) -> bool,
    ) -> Result<ReencryptStep, KeyAdminError> {
        who.validate().map_err(KeyAdminError::Text)?;
        let _guard = self.key_admin()?;
        loop {
            let outcome = self.writer.key_op(KeyOp::Reencrypt {
                partition: p.clone(),
                max_entries: chunk,
                who: who.clone(),
            })?;
            let KeyOutcome::Reencrypt(s) = outcome else {
                return Err(KeyAdminError::Mismatch);
            };
            if !step(&s) || s.done {
                return Ok(s);
            }
        }
    }

    /// `kukaku keys retire`: removes a previous DEK version's wrapped key once no entry is
    /// sealed under it (refused, with the count, while any is).
    pub fn retire(&self, p: &PartitionId, key_id: u32, who: KeyActor) -> Result<(), KeyAdminError> {
        who.validate().map_err(KeyAdminError::Text)?;
        let _guard = self.key_admin()?;
        let info = self
            .key_status(p)?
            .into_iter()
            .find(|k| k.key_id == key_id)
            .ok_or_else(|| KeyAdminError::UnknownKey {
                partition: p.clone(),
                key_id,
            })?;
        if info.status != "previous" {
            return Err(AppendError::KeyState {
                partition: p.to_string(),
                key_id,
                reason: format!("is {}; only a previous version can be retired", info.status),
            }
            .into());
        }
        if info.entries > 0 {
            return Err(KeyAdminError::InUse {
                partition: p.clone(),
                key_id,
                entries: info.entries,
            });
        }
        match self.writer.key_op(KeyOp::Retire {
            partition: p.clone(),
            key_id,
            who,
        })? {
            KeyOutcome::Retired => Ok(()),
            _ => Err(KeyAdminError::Mismatch),
        }
    }

    /// Records in `p` that the instance was restored from a backup holding `missing` fewer
    /// entries of it than auditors or witnesses had verified (a `restore` key event).
    pub fn record_restore(
        &self,
        p: &PartitionId,
        who: KeyActor,
        missing: u64,
    ) -> Result<(), KeyAdminError> {
        who.validate().map_err(KeyAdminError::Text)?;
        let _guard = self.key_admin()?;
        let event = crate::ledger::payload::KeyEvent {
            event: crate::ledger::payload::KeyEventKind::Restore,
            key_id: 0,
            class: crate::ledger::payload::KeyClass::Resident,
            epoch: 0,
            version: 0,
            count: missing,
            actor: who.actor,
            reason: who.reason,
        };
        match self.writer.key_op(KeyOp::Note {
            partition: p.clone(),
            event,
        })? {
            KeyOutcome::Noted => Ok(()),
            _ => Err(KeyAdminError::Mismatch),
        }
    }

    /// `kukaku keys destroy`: crypto-shreds `scope`'s keys of `p` (every key, or one past
    /// fiscal year's `dated` keys). `confirm` must be the partition id. The key store is
    /// compacted and, with a KEK source, the KEK rotated, so neither the key store's files
    /// nor an older copy of them opens the destroyed keys again. Proofs stay valid.
    pub fn destroy(
        &self,
        p: &PartitionId,
        scope: DestroyScope,
        confirm: &str,
        who: KeyActor,
    ) -> Result<DestroyReport, KeyAdminError> {
        who.validate().map_err(KeyAdminError::Text)?;
        if confirm != p.as_str() {
            return Err(KeyAdminError::Unconfirmed(p.to_string()));
        }
        let _guard = self.key_admin()?;
        let KeyOutcome::Destroyed(keys) = self.writer.key_op(KeyOp::Destroy {
            partition: p.clone(),
            scope,
            who: who.clone(),
        })?
        else {
            return Err(KeyAdminError::Mismatch);
        };
        self.inner.keyring.compact()?;
        if scope == DestroyScope::Partition {
            self.purge_files(p)?;
        }
        let kek = match self.inner.kek_source {
            Some(_) => Some(self.rotate_kek_locked(
                KeyActor {
                    actor: who.actor,
                    reason: format!("after destroying keys of partition {p}: {}", who.reason),
                },
                None,
            )?),
            None => {
                tracing::warn!("fixed KEK: not rotated after destroy");
                None
            }
        };
        Ok(DestroyReport { keys, kek })
    }

    /// After a partition's destroy, removes what its deleted index and transmission records
    /// left in the files: every column family's memtable is flushed (so no live WAL holds
    /// the old keys and RocksDB deletes the old WAL files), then the partition's family and
    /// the system family are compacted to the bottom level (tombstones drop the keys they
    /// cover; the old table files are deleted). What remains is listed in docs/keys.md.
    fn purge_files(&self, p: &PartitionId) -> Result<(), KeyAdminError> {
        self.inner
            .engine
            .purge_deleted(&[Space::Partition(p.clone()), Space::System])
            .map_err(KeyAdminError::Purge)
    }

    /// Status of one DEK version, from its metadata.
    pub(crate) fn key_meta_status(&self, p: &PartitionId, key_id: u32) -> Option<KeyStatus> {
        let raw = self
            .inner
            .engine
            .get(&Space::System, &key_meta_key(p, key_id))
            .ok()??;
        decode::<KeyMeta>(&raw).map(|m| m.status)
    }

    /// Every DEK version of `p`, by key id, with the entries that use it (one pass over the
    /// partition's envelopes).
    pub fn key_status(&self, p: &PartitionId) -> Result<Vec<KeyInfo>, ReadError> {
        let inner = &self.inner;
        let prefix = key_meta_prefix(p);
        let mut out = Vec::new();
        for item in inner.engine.scan_prefix(&Space::System, &prefix)? {
            let (k, v) = item?;
            let Some(id) = k.strip_prefix(prefix.as_slice()) else {
                break;
            };
            let (Ok(id), Some(meta)) = (<[u8; 4]>::try_from(id), decode::<KeyMeta>(&v)) else {
                return Err(ReadError::Corrupt {
                    partition: p.clone(),
                    seq: 0,
                    step: "key metadata unreadable".into(),
                });
            };
            out.push(KeyInfo {
                key_id: u32::from_be_bytes(id),
                class: KeyClass::from_code(meta.class).map_or("unknown", KeyClass::name),
                epoch: meta.epoch,
                version: meta.version,
                status: status_name(meta.status),
                created_ms: meta.created_ms,
                encryptions: meta.encryptions,
                entries: 0,
            });
        }
        self.for_each_envelope(p, |seq, raw| {
            let env = EnvelopeRef::decode(raw).map_err(|e| ReadError::Corrupt {
                partition: p.clone(),
                seq,
                step: crate::error::report(&e),
            })?;
            if let Some(k) = out.iter_mut().find(|k| k.key_id == env.key_id) {
                k.entries += 1;
            }
            Ok::<_, ReadError>(())
        })?;
        Ok(out)
    }
}
