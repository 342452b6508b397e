//! Key-management steps the writer runs alone in their own batch: KEK rewrap, re-encryption,
//! retirement and destruction (docs/keys.md). Each leaves key-event entries in the
//! partitions it touches; none holds key material.

mod signing;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{AppendError, KeyActor, NewEntry, Ops, PState, Reply, StorageError, Target, Writer};
use crate::crypto::KekProvider;
use crate::ledger::envelope::{BodyRef, EnvelopeRef, SALT_LEN};
use crate::ledger::header::{Kind, PartitionId};
use crate::ledger::payload::{KeyClass, KeyEvent, KeyEventKind};
use crate::store::keyring::Rewrapped;
use crate::store::records::{
    INSTANCE_KEY, InstanceRecord, KeyStatus, ReencryptCursor, SYS_CF, ShredRecord, decode, dek_key,
    encode, entry_key, index_key_slot, partition_cf, reencrypt_key, shred_key,
};

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
}

pub(crate) enum KeyOutcome {
    Rewrapped(Rewrapped),
    Reencrypt(ReencryptStep),
    Retired,
    /// `(key_id, entries it had sealed)` per destroyed DEK version.
    Destroyed(Vec<(u32, u64)>),
    /// The version added (start) or retired (finish).
    Signing(u32),
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
        };
        let answer = result.and_then(|outcome| self.finish(staged, ops).map(|_| outcome));
        let _ = reply.send(answer);
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
        let db = &self.inner.db;
        let sys = db
            .cf_handle(SYS_CF)
            .ok_or(AppendError::Storage(StorageError::NoSystemFamily))?;
        db.get_cf(&sys, key).map_err(AppendError::storage)
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

    /// Moves up to `max` entries of `p` from old DEK versions to the current version of
    /// their own scope. The envelope is rewritten in place: header, leaf hash, tree and
    /// checkpoints do not change. The cursor is written in the same batch.
    fn reencrypt(
        &mut self,
        p: &PartitionId,
        max: u64,
        who: &KeyActor,
        now: u64,
        ops: &mut Ops,
        staged: &mut HashMap<PartitionId, PState>,
    ) -> Result<ReencryptStep, AppendError> {
        self.check_quarantine(p)?;
        let mut st = self.load(p)?;
        if !st.active {
            return Err(AppendError::NotActive(p.to_string()));
        }
        let cursor_key = reencrypt_key(p);
        let mut cur = match self.sys_get(&cursor_key)? {
            Some(raw) => decode::<ReencryptCursor>(&raw)
                .ok_or_else(|| AppendError::BadState(p.to_string()))?,
            None => {
                let cur = ReencryptCursor {
                    next_seq: 0,
                    end: st.size(),
                    moved: 0,
                    started_ms: now,
                    reported: 0,
                };
                let reason = format!("{}; started over seqs 0..{}", who.reason, cur.end);
                let event = open_event(KeyEventKind::ReencryptProgress, 0, who, reason);
                self.key_event(p, &mut st, &event, now, ops)?;
                cur
            }
        };
        let stop = cur.end.min(cur.next_seq.saturating_add(max.max(1)));
        let db = &self.inner.db;
        let cf = db
            .cf_handle(&partition_cf(p))
            .ok_or_else(|| AppendError::UnknownPartition(p.to_string()))?;
        let mut rewritten = Vec::new();
        let corrupt = |seq: u64, why: &str| AppendError::Corrupt {
            partition: p.to_string(),
            seq,
            reason: why.to_owned(),
        };
        for seq in cur.next_seq..stop {
            let raw = db
                .get_cf(&cf, entry_key(seq))
                .map_err(AppendError::storage)?
                .ok_or_else(|| corrupt(seq, "entry missing"))?;
            let env =
                EnvelopeRef::decode(&raw).map_err(|e| corrupt(seq, &crate::error::report(&e)))?;
            let BodyRef::Sealed {
                nonce,
                ciphertext_and_tag,
            } = env.body
            else {
                continue;
            };
            let Some(meta) = st.keys.get(&env.key_id) else {
                return Err(corrupt(seq, "sealed under a key the partition never had"));
            };
            if meta.status != KeyStatus::Previous {
                // Current already, or destroyed (unreadable by design).
                continue;
            }
            let leaf = env.header.leaf_hash();
            let plain = self
                .inner
                .keyring
                .dek(p, env.key_id)?
                .open(&leaf, nonce, ciphertext_and_tag)
                .map_err(|_| corrupt(seq, "body does not decrypt"))?;
            let (salt, payload) = plain
                .split_at_checked(SALT_LEN)
                .ok_or_else(|| corrupt(seq, "sealed body shorter than its salt"))?;
            let salt: [u8; SALT_LEN] = salt
                .try_into()
                .map_err(|_| corrupt(seq, "sealed body shorter than its salt"))?;
            let (key_id, dek) =
                self.reserve_key(p, &mut st, env.header.kind, env.header.tx_time, now, ops)?;
            let mut out = env.header_bytes.to_vec();
            out.extend_from_slice(&key_id.to_be_bytes());
            dek.seal_into(&leaf, &salt, payload, &mut out)
                .map_err(|_| AppendError::Seal)?;
            rewritten.push((seq, out));
        }
        let target = Target::Partition(p.clone());
        cur.moved += rewritten.len() as u64;
        for (seq, bytes) in rewritten {
            ops.push((target.clone(), entry_key(seq).to_vec(), bytes));
        }
        cur.next_seq = stop;
        let done = stop >= cur.end;
        if done {
            let reason = format!("{}; seqs 0..{} done", who.reason, cur.end);
            let event = open_event(KeyEventKind::ReencryptDone, cur.moved, who, reason);
            self.key_event(p, &mut st, &event, now, ops)?;
            ops.push((Target::SysDelete, cursor_key, Vec::new()));
        } else {
            if cur.moved - cur.reported >= PROGRESS_EVERY {
                let reason = format!("{}; at seq {} of {}", who.reason, stop, cur.end);
                let event = open_event(KeyEventKind::ReencryptProgress, cur.moved, who, reason);
                self.key_event(p, &mut st, &event, now, ops)?;
                cur.reported = cur.moved;
            }
            let bytes = encode(&cur).map_err(AppendError::storage)?;
            ops.push((Target::Sys, cursor_key, bytes));
        }
        staged.insert(p.clone(), st);
        Ok(ReencryptStep {
            next_seq: cur.next_seq,
            end: cur.end,
            moved: cur.moved,
            done,
        })
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

    /// Deletes the wrapped keys in `scope` (one key-store batch, before the data batch with
    /// a `destroy` event per version naming the entries made unreadable and why). Writes
    /// pause while the partition's envelopes are counted.
    fn destroy(
        &mut self,
        p: &PartitionId,
        scope: DestroyScope,
        who: &KeyActor,
        now: u64,
        ops: &mut Ops,
        staged: &mut HashMap<PartitionId, PState>,
    ) -> Result<Vec<(u32, u64)>, AppendError> {
        self.check_quarantine(p)?;
        let mut st = self.load(p)?;
        if !st.active {
            return Err(AppendError::NotActive(p.to_string()));
        }
        if let DestroyScope::FiscalYear(y) = scope {
            let running = crate::ledger::fiscal_year_jst(now);
            if y >= running {
                return Err(refused(
                    p,
                    0,
                    format!("fiscal year {y} has not ended (now {running}); destroy it after"),
                ));
            }
        }
        let targets: Vec<u32> = st
            .keys
            .iter()
            .filter(|(_, m)| !matches!(m.status, KeyStatus::Destroyed | KeyStatus::Retired))
            .filter(|(_, m)| match scope {
                DestroyScope::Partition => true,
                DestroyScope::FiscalYear(y) => m.class == KeyClass::Dated.code() && m.epoch == y,
            })
            .map(|(id, _)| *id)
            .collect();
        let nothing_left = st.shredded || scope != DestroyScope::Partition;
        if targets.is_empty() && nothing_left {
            return Err(refused(p, 0, "no key left to destroy in that scope".into()));
        }
        let mut counts: BTreeMap<u32, u64> = targets.iter().map(|id| (*id, 0)).collect();
        let db = &self.inner.db;
        let cf = db
            .cf_handle(&partition_cf(p))
            .ok_or_else(|| AppendError::UnknownPartition(p.to_string()))?;
        for item in db.prefix_iterator_cf(&cf, b"E") {
            let (k, raw) = item.map_err(AppendError::storage)?;
            if k.first() != Some(&b'E') {
                break;
            }
            if let Ok(env) = EnvelopeRef::decode(&raw)
                && let Some(c) = counts.get_mut(&env.key_id)
            {
                *c += 1;
            }
        }
        for (id, entries) in &counts {
            let Some(meta) = st.keys.get_mut(id) else {
                continue;
            };
            meta.status = KeyStatus::Destroyed;
            let event = KeyEvent {
                event: KeyEventKind::Destroy,
                key_id: *id,
                class: KeyClass::from_code(meta.class).unwrap_or(KeyClass::Resident),
                epoch: meta.epoch,
                version: meta.version,
                count: *entries,
                actor: who.actor.clone(),
                reason: who.reason.clone(),
            };
            st.dirty_keys.insert(*id);
            ops.push((Target::KeyStoreDelete, dek_key(p, *id), Vec::new()));
            self.key_event(p, &mut st, &event, now, ops)?;
        }
        if scope == DestroyScope::Partition {
            // The blind-index key and what it derived: person, household, 高額 and
            // matching tokens would still link people to this partition, and the
            // transmission records name its households.
            ops.push((Target::KeyStoreDelete, index_key_slot(p), Vec::new()));
            // `T`: transmission and claim records, which list 世帯番号 in clear.
            for (from, to) in [
                (b"I", b"J"),
                (b"K", b"L"),
                (b"T", b"U"),
                (b"V", b"W"),
                (b"X", b"Y"),
            ] {
                ops.push((
                    Target::PartitionDeleteRange(p.clone()),
                    from.to_vec(),
                    to.to_vec(),
                ));
            }
            let event = open_event(
                KeyEventKind::Destroy,
                0,
                who,
                format!("{}; blind-index key and derived index entries", who.reason),
            );
            self.key_event(p, &mut st, &event, now, ops)?;
            let rec = ShredRecord {
                destroyed_ms: now,
                keys: u32::try_from(counts.len()).unwrap_or(u32::MAX),
                entries: counts.values().sum(),
            };
            let bytes = encode(&rec).map_err(AppendError::storage)?;
            ops.push((Target::Sys, shred_key(p), bytes));
            st.shredded = true;
        }
        staged.insert(p.clone(), st);
        Ok(counts.into_iter().collect())
    }
}
