//! Key-management steps the writer runs alone in their own batch: KEK rewrap, re-encryption,
//! retirement and destruction (docs/keys.md). Each leaves key-event entries in the
//! partitions it touches; none holds key material.

mod destroy;
mod reencrypt;
mod signing;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{AppendError, KeyActor, NewEntry, Ops, PState, Reply, Target, Writer};
use crate::crypto::KekProvider;
use crate::ledger::header::{Kind, PartitionId};
use crate::ledger::payload::{KeyClass, KeyEvent, KeyEventKind};
use crate::store::keyring::Rewrapped;
use crate::store::records::{INSTANCE_KEY, InstanceRecord, KeyStatus, decode, dek_key, encode};

/// A progress key event is appended each time this many more entries have moved.
const PROGRESS_EVERY: u64 = 10_000;

/// Which keys `destroy` shreds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestroyScope {
    /// Every DEK of the partition, its blind-index key and its derived index entries.
    Partition,
    /// The `dated` DEKs of one fiscal year (records kept for a retention period).
    FiscalYear(u16),
}

pub(crate) enum KeyOp {
    /// Rewrap every key under `next`; `None` finishes an interrupted rotation (the key
    /// store already is under the loaded KEK, the events and instance record are missing).
    RotateKek {
        next: Option<Arc<dyn KekProvider>>,
        who: KeyActor,
    },
    Reencrypt {
        partition: PartitionId,
        max_entries: u64,
        who: KeyActor,
    },
    Retire {
        partition: PartitionId,
        key_id: u32,
        who: KeyActor,
    },
    Destroy {
        partition: PartitionId,
        scope: DestroyScope,
        who: KeyActor,
    },
    /// Starts a signing-key transition (a second key signs too) or, with `finish`, ends it
    /// (the older key stops signing).
    SigningKey { finish: bool, who: KeyActor },
    /// Records an event about the instance itself (a restore) in a partition.
    Note {
        partition: PartitionId,
        event: KeyEvent,
    },
}

pub(crate) enum KeyOutcome {
    Rewrapped(Rewrapped),
    Reencrypt(ReencryptStep),
    Retired,
    /// `(key_id, entries it had sealed)` per destroyed DEK version.
    Destroyed(Vec<(u32, u64)>),
    /// The version added (start) or retired (finish).
    Signing(u32),
    /// The event was appended.
    Noted,
}

/// Where a re-encryption job of one partition stands after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReencryptStep {
    /// Next seq the job looks at.
    pub next_seq: u64,
    /// The job covers seqs below `end` (the size when it started).
    pub end: u64,
    /// Entries moved to the current version so far.
    pub moved: u64,
    /// The job finished with this step (its `reencrypt_done` event is written).
    pub done: bool,
}

fn refused(p: &PartitionId, key_id: u32, reason: String) -> AppendError {
    AppendError::KeyState {
        partition: p.to_string(),
        key_id,
        reason,
    }
}

fn open_event(event: KeyEventKind, count: u64, who: &KeyActor, reason: String) -> KeyEvent {
    KeyEvent {
        event,
        key_id: 0,
        class: KeyClass::Resident,
        epoch: 0,
        version: 0,
        count,
        actor: who.actor.clone(),
        reason,
    }
}

impl Writer {
    pub(super) fn process_key_op(&mut self, op: KeyOp, reply: Reply<KeyOutcome>) {
        if self.inner.poisoned.load(Ordering::SeqCst) {
            let _ = reply.send(Err(AppendError::Poisoned));
            return;
        }
        let now = self.now();
        let mut ops = Ops::new();
        let mut staged = HashMap::new();
        let result = match op {
            KeyOp::RotateKek { next, who } => self
                .rewrap(next, &who, now, &mut ops, &mut staged)
                .map(KeyOutcome::Rewrapped),
            KeyOp::Reencrypt {
                partition,
                max_entries,
                who,
            } => self
                .reencrypt(&partition, max_entries, &who, now, &mut ops, &mut staged)
                .map(KeyOutcome::Reencrypt),
            KeyOp::Retire {
                partition,
                key_id,
                who,
            } => self
                .retire(&partition, key_id, &who, now, &mut ops, &mut staged)
                .map(|()| KeyOutcome::Retired),
            KeyOp::Destroy {
                partition,
                scope,
                who,
            } => self
                .destroy(&partition, scope, &who, now, &mut ops, &mut staged)
                .map(KeyOutcome::Destroyed),
            KeyOp::SigningKey { finish, who } => self
                .signing_key(finish, &who, now, &mut ops, &mut staged)
                .map(KeyOutcome::Signing),
            KeyOp::Note { partition, event } => self
                .note(&partition, &event, now, &mut ops, &mut staged)
                .map(|()| KeyOutcome::Noted),
        };
        let answer = result.and_then(|outcome| self.finish(staged, ops).map(|_| outcome));
        let _ = reply.send(answer);
    }

    /// A key event about the instance in partition `p`, alone in its batch.
    fn note(
        &mut self,
        p: &PartitionId,
        event: &KeyEvent,
        now: u64,
        ops: &mut Ops,
        staged: &mut HashMap<PartitionId, PState>,
    ) -> Result<(), AppendError> {
        self.check_quarantine(p)?;
        let mut st = self.load(p)?;
        self.key_event(p, &mut st, event, now, ops)?;
        staged.insert(p.clone(), st);
        Ok(())
    }

    /// Appends a key event to `st` (open entry: auditors read it without keys).
    pub(super) fn key_event(
        &self,
        p: &PartitionId,
        st: &mut PState,
        event: &KeyEvent,
        now: u64,
        ops: &mut Ops,
    ) -> Result<(), AppendError> {
        let payload = event.encode().map_err(AppendError::Payload)?;
        let entry = NewEntry::internal(Kind::KEY_EVENT, payload)?;
        self.apply(p, st, &entry, now, ops)?;
        Ok(())
    }

    fn instance_record(&self) -> Result<InstanceRecord, AppendError> {
        self.sys_get(INSTANCE_KEY)?
            .and_then(|raw| decode(&raw))
            .ok_or_else(|| AppendError::BadState("instance".into()))
    }

    fn sys_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, AppendError> {
        use crate::store::engine::Space;
        self.inner
            .engine
            .get(&Space::System, key)
            .map_err(AppendError::storage)
    }

    /// Rewraps the key store (one synced batch, before the data batch), then records a
    /// `rewrap` event per partition and the new KEK fingerprint in the instance record.
    fn rewrap(
        &mut self,
        next: Option<Arc<dyn KekProvider>>,
        who: &KeyActor,
        now: u64,
        ops: &mut Ops,
        staged: &mut HashMap<PartitionId, PState>,
    ) -> Result<Rewrapped, AppendError> {
        let mut record = self.instance_record()?;
        let done = match next {
            Some(n) => self.inner.keyring.rewrap_all(n)?,
            None => self.inner.keyring.census()?,
        };
        let new = self.inner.keyring.kek_fingerprint()?;
        let reason = format!(
            "{}; KEK {} -> {new}; {} instance key(s)",
            who.reason, record.kek_fingerprint, done.instance
        );
        for (p, count) in &done.partitions {
            if self.check_quarantine(p).is_err() {
                tracing::warn!(partition = %p, "quarantined: rewrap event not written");
                continue;
            }
            let mut st = match self.load(p) {
                Ok(st) => st,
                Err(AppendError::UnknownPartition(_)) => continue,
                Err(e) => return Err(e),
            };
            let event = open_event(KeyEventKind::Rewrap, *count, who, reason.clone());
            self.key_event(p, &mut st, &event, now, ops)?;
            staged.insert(p.clone(), st);
        }
        record.kek_fingerprint = new;
        let bytes = encode(&record).map_err(AppendError::storage)?;
        ops.push((Target::Sys, INSTANCE_KEY.to_vec(), bytes));
        Ok(done)
    }

    /// Removes a previous version's wrapped key. The caller has counted no entry under it;
    /// a previous version never seals again, so the count cannot grow before this runs.
    fn retire(
        &mut self,
        p: &PartitionId,
        key_id: u32,
        who: &KeyActor,
        now: u64,
        ops: &mut Ops,
        staged: &mut HashMap<PartitionId, PState>,
    ) -> Result<(), AppendError> {
        self.check_quarantine(p)?;
        let mut st = self.load(p)?;
        let meta = st
            .keys
            .get_mut(&key_id)
            .ok_or_else(|| refused(p, key_id, "no such key".into()))?;
        if meta.status != KeyStatus::Previous {
            return Err(refused(
                p,
                key_id,
                format!(
                    "is {}; only a previous version can be retired",
                    super::super::keys::status_name(meta.status)
                ),
            ));
        }
        meta.status = KeyStatus::Retired;
        let event = KeyEvent {
            event: KeyEventKind::Retire,
            key_id,
            class: KeyClass::from_code(meta.class).unwrap_or(KeyClass::Resident),
            epoch: meta.epoch,
            version: meta.version,
            count: 0,
            actor: who.actor.clone(),
            reason: who.reason.clone(),
        };
        st.dirty_keys.insert(key_id);
        ops.push((Target::KeyStoreDelete, dek_key(p, key_id), Vec::new()));
        self.key_event(p, &mut st, &event, now, ops)?;
        staged.insert(p.clone(), st);
        Ok(())
    }
}
