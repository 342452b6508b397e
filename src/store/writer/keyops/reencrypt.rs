//! Re-encryption: entries sealed under a previous DEK version moved, a chunk per batch, to
//! the current version of their own scope; the envelope is rewritten in place (header, leaf
//! hash, tree and checkpoints do not change) and the cursor is written in the same batch.

use std::collections::HashMap;

use super::{PROGRESS_EVERY, ReencryptStep, open_event};
use crate::ledger::envelope::{BodyRef, EnvelopeRef, SALT_LEN};
use crate::ledger::header::PartitionId;
use crate::ledger::payload::KeyEventKind;
use crate::store::engine::Space;
use crate::store::records::{KeyStatus, ReencryptCursor, decode, encode, entry_key, reencrypt_key};
use crate::store::writer::{AppendError, KeyActor, Ops, PState, Target, Writer};

fn corrupt(p: &PartitionId, seq: u64, why: &str) -> AppendError {
    AppendError::Corrupt {
        partition: p.clone(),
        seq,
        reason: why.to_owned(),
    }
}

impl Writer {
    /// Moves up to `max` entries of `p` from old DEK versions to the current version of
    /// their own scope.
    pub(in crate::store::writer) fn reencrypt(
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
        st.writable(p)?;
        let mut cur = self.reencrypt_cursor(p, &mut st, who, now, ops)?;
        let stop = cur.end.min(cur.next_seq.saturating_add(max.max(1)));
        // The writer's own handle: `reseal` below borrows the writer mutably.
        let inner = std::sync::Arc::clone(&self.inner);
        let space = Space::Partition(p.clone());
        let mut rewritten = Vec::new();
        for seq in cur.next_seq..stop {
            let raw = inner
                .engine
                .get(&space, &entry_key(seq))
                .map_err(AppendError::storage)?
                .ok_or_else(|| corrupt(p, seq, "entry missing"))?;
            if let Some(out) = self.reseal(p, &mut st, seq, &raw, now, ops)? {
                rewritten.push((seq, out));
            }
        }
        let target = Target::Partition(p.clone());
        cur.moved += rewritten.len() as u64;
        for (seq, bytes) in rewritten {
            ops.push((target.clone(), entry_key(seq).to_vec(), bytes));
        }
        cur.next_seq = stop;
        let done = stop >= cur.end;
        self.record_reencrypt_step(p, &mut st, &mut cur, who, now, ops)?;
        staged.insert(p.clone(), st);
        Ok(ReencryptStep {
            next_seq: cur.next_seq,
            end: cur.end,
            moved: cur.moved,
            done,
        })
    }

    /// The stored cursor, or a new one over the whole log (with its first progress event).
    fn reencrypt_cursor(
        &mut self,
        p: &PartitionId,
        st: &mut PState,
        who: &KeyActor,
        now: u64,
        ops: &mut Ops,
    ) -> Result<ReencryptCursor, AppendError> {
        if let Some(raw) = self.sys_get(&reencrypt_key(p))? {
            return decode::<ReencryptCursor>(&raw)
                .ok_or_else(|| AppendError::BadState(p.to_string()));
        }
        let cur = ReencryptCursor {
            next_seq: 0,
            end: st.size(),
            moved: 0,
            started_ms: now,
            reported: 0,
        };
        let reason = format!("{}; started over seqs 0..{}", who.reason, cur.end);
        let event = open_event(KeyEventKind::ReencryptProgress, 0, who, reason);
        self.key_event(p, st, &event, now, ops)?;
        Ok(cur)
    }

    /// The envelope at `seq` sealed under the current version of its scope, if it was sealed
    /// under a previous one (`None`: open, current already, or destroyed).
    fn reseal(
        &mut self,
        p: &PartitionId,
        st: &mut PState,
        seq: u64,
        raw: &[u8],
        now: u64,
        ops: &mut Ops,
    ) -> Result<Option<Vec<u8>>, AppendError> {
        let env =
            EnvelopeRef::decode(raw).map_err(|e| corrupt(p, seq, &crate::error::report(&e)))?;
        let BodyRef::Sealed {
            nonce,
            ciphertext_and_tag,
        } = env.body
        else {
            return Ok(None);
        };
        let Some(meta) = st.keys.get(&env.key_id) else {
            return Err(corrupt(
                p,
                seq,
                "sealed under a key the partition never had",
            ));
        };
        if meta.status != KeyStatus::Previous {
            // Current already, or destroyed (unreadable by design).
            return Ok(None);
        }
        let leaf = env.header.leaf_hash();
        let plain = self
            .inner
            .keyring
            .dek(p, env.key_id)?
            .open(&leaf, nonce, ciphertext_and_tag)
            .map_err(|_| corrupt(p, seq, "body does not decrypt"))?;
        let (salt, payload) = plain
            .split_at_checked(SALT_LEN)
            .ok_or_else(|| corrupt(p, seq, "sealed body shorter than its salt"))?;
        let salt: [u8; SALT_LEN] = salt
            .try_into()
            .map_err(|_| corrupt(p, seq, "sealed body shorter than its salt"))?;
        let (key_id, dek) =
            self.reserve_key(p, st, env.header.kind, env.header.tx_time, now, ops)?;
        let mut out = env.header_bytes.to_vec();
        out.extend_from_slice(&key_id.to_be_bytes());
        dek.seal_into(&leaf, &salt, payload, &mut out)
            .map_err(|_| AppendError::Seal)?;
        Ok(Some(out))
    }

    /// After a chunk: the `done` event and the cursor removed at the end, else the cursor
    /// (and a progress event every `PROGRESS_EVERY` entries moved).
    fn record_reencrypt_step(
        &mut self,
        p: &PartitionId,
        st: &mut PState,
        cur: &mut ReencryptCursor,
        who: &KeyActor,
        now: u64,
        ops: &mut Ops,
    ) -> Result<(), AppendError> {
        let cursor_key = reencrypt_key(p);
        if cur.next_seq >= cur.end {
            let reason = format!("{}; seqs 0..{} done", who.reason, cur.end);
            let event = open_event(KeyEventKind::ReencryptDone, cur.moved, who, reason);
            self.key_event(p, st, &event, now, ops)?;
            ops.push((Target::SysDelete, cursor_key, Vec::new()));
            return Ok(());
        }
        if cur.moved - cur.reported >= PROGRESS_EVERY {
            let reason = format!("{}; at seq {} of {}", who.reason, cur.next_seq, cur.end);
            let event = open_event(KeyEventKind::ReencryptProgress, cur.moved, who, reason);
            self.key_event(p, st, &event, now, ops)?;
            cur.reported = cur.moved;
        }
        let bytes = encode(&*cur).map_err(AppendError::storage)?;
        ops.push((Target::Sys, cursor_key, bytes));
        Ok(())
    }
}
