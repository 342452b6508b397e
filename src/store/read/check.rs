//! The open-time check of each partition: stored head, last entry and last checkpoint agree,
//! or the partition is quarantined (logged, never repaired).

use crate::ledger::header::PartitionId;
use crate::ledger::note::Checkpoint;
use crate::store::Inner;
use crate::store::records::entry_key;

impl Inner {
    /// Open-time check of one partition: stored head, last entry and last checkpoint agree.
    fn check_partition(&self, p: &PartitionId) -> Result<(), String> {
        let Some(state) = self.state(p).map_err(|e| crate::error::report(&e))? else {
            return Ok(());
        };
        let range = state
            .range()
            .ok_or("stored tree edge does not match the stored size")?;
        let space = self.known(p).map_err(|e| crate::error::report(&e))?;
        if state.size > 0
            && self
                .engine
                .get(&space, &entry_key(state.size - 1))
                .map_err(|e| crate::error::report(&e))?
                .is_none()
        {
            return Err(format!(
                "entry {} missing below the stored size",
                state.size - 1
            ));
        }
        if self
            .engine
            .get(&space, &entry_key(state.size))
            .map_err(|e| crate::error::report(&e))?
            .is_some()
        {
            return Err(format!(
                "entry {} exists beyond the stored size",
                state.size
            ));
        }
        let note = self
            .latest_checkpoint(p)
            .map_err(|e| crate::error::report(&e))?
            .ok_or("no checkpoint")?;
        let key = self.key_for_note(p, &note).ok_or("no verifier key")?;
        let cp = Checkpoint::verify_note(&note, &key)
            .map_err(|e| format!("last checkpoint: {}", crate::error::report(&e)))?;
        if cp.size != state.size || cp.root != range.root() {
            return Err(format!(
                "last checkpoint (size {}) does not match the stored tree (size {})",
                cp.size, state.size
            ));
        }
        Ok(())
    }

    /// Checks the given partitions; failures are quarantined and logged, not repaired.
    pub(crate) fn check_partitions_at_open(&self, partitions: Vec<PartitionId>) {
        for p in partitions {
            if let Err(reason) = self.check_partition(&p) {
                tracing::error!(partition = %p, %reason, "partition quarantined at open");
                if let Ok(mut q) = self.quarantined.lock() {
                    q.insert(p, reason);
                }
            }
        }
    }
}
