//! Crypto-shredding: the wrapped keys of a partition (or of one ended fiscal year) deleted
//! in one key-store batch, before the data batch with a `destroy` event per version naming
//! the entries made unreadable; for a whole partition also its blind-index key and every
//! record derived with it.

use std::collections::{BTreeMap, HashMap};

use super::{DestroyScope, open_event, refused};
use crate::ledger::envelope::EnvelopeRef;
use crate::ledger::header::PartitionId;
use crate::ledger::payload::{KeyClass, KeyEvent, KeyEventKind};
use crate::store::engine::Space;
use crate::store::records::{KeyStatus, ShredRecord, dek_key, encode, index_key_slot, shred_key};
use crate::store::writer::{AppendError, KeyActor, Ops, PState, Target, Writer};

/// The derived records a partition's destroy removes: `I` person tokens, `K` 高額 and
/// matching tokens, `T` transmission and claim records (they list 世帯番号 in clear), `V`
/// households, `X` matching slots.
const DERIVED_RANGES: [(&[u8; 1], &[u8; 1]); 5] = [
    (b"I", b"J"),
    (b"K", b"L"),
    (b"T", b"U"),
    (b"V", b"W"),
    (b"X", b"Y"),
];

impl Writer {
    /// Deletes the wrapped keys in `scope`. Writes pause while the partition's envelopes are
    /// counted.
    pub(in crate::store::writer) fn destroy(
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
        st.writable(p)?;
        let targets = destroy_targets(p, &st, scope, now)?;
        let counts = self.count_sealed(p, &targets)?;
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
            self.shred_derived(p, &mut st, &counts, who, now, ops)?;
        }
        staged.insert(p.clone(), st);
        Ok(counts.into_iter().collect())
    }

    /// How many envelopes each of `targets` seals.
    fn count_sealed(
        &self,
        p: &PartitionId,
        targets: &[u32],
    ) -> Result<BTreeMap<u32, u64>, AppendError> {
        let mut counts: BTreeMap<u32, u64> = targets.iter().map(|id| (*id, 0)).collect();
        let scan = self
            .inner
            .engine
            .scan_prefix(&Space::Partition(p.clone()), b"E")
            .map_err(AppendError::storage)?;
        for item in scan {
            let (_, raw) = item.map_err(AppendError::storage)?;
            if let Ok(env) = EnvelopeRef::decode(&raw)
                && let Some(c) = counts.get_mut(&env.key_id)
            {
                *c += 1;
            }
        }
        Ok(counts)
    }

    /// A whole partition: the blind-index key and what it derived (person, household, 高額
    /// and matching tokens would still link people to this partition; transmission records
    /// name its households), an event saying so, and the shred record.
    fn shred_derived(
        &mut self,
        p: &PartitionId,
        st: &mut PState,
        counts: &BTreeMap<u32, u64>,
        who: &KeyActor,
        now: u64,
        ops: &mut Ops,
    ) -> Result<(), AppendError> {
        ops.push((Target::KeyStoreDelete, index_key_slot(p), Vec::new()));
        for (from, to) in DERIVED_RANGES {
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
        self.key_event(p, st, &event, now, ops)?;
        let rec = ShredRecord {
            destroyed_ms: now,
            keys: u32::try_from(counts.len()).unwrap_or(u32::MAX),
            entries: counts.values().sum(),
        };
        let bytes = encode(&rec).map_err(AppendError::storage)?;
        ops.push((Target::Sys, shred_key(p), bytes));
        st.shredded = true;
        Ok(())
    }
}

/// The key versions `scope` names that are not destroyed or retired yet; a fiscal year only
/// once it has ended.
fn destroy_targets(
    p: &PartitionId,
    st: &PState,
    scope: DestroyScope,
    now: u64,
) -> Result<Vec<u32>, AppendError> {
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
    Ok(targets)
}
