//! The tree nodes of a partition as its stored levels hold them, with the two lowest levels
//! recomputed from the envelopes' headers (docs/ARCHITECTURE.md, invariant 25).

use crate::ledger::hash::Hash;
use crate::ledger::header::Header;
use crate::ledger::merkle::NodeSource;
use crate::store::engine::{Space, View};
use crate::store::records::{LOWEST_STORED_LEVEL, entry_key, node_key};

/// A partition's tree nodes read from the engine.
pub(in crate::store) struct DbNodes<'a> {
    pub(in crate::store) view: &'a dyn View,
    pub(in crate::store) space: Space,
}

impl DbNodes<'_> {
    /// The leaf hash of entry `seq`, over its stored header.
    fn leaf(&self, seq: u64) -> Result<Hash, String> {
        let raw = self
            .view
            .get(&self.space, &entry_key(seq))
            .map_err(|e| crate::error::report(&e))?
            .ok_or_else(|| format!("entry {seq} missing"))?;
        let (_, len) = Header::decode_prefix(&raw)
            .map_err(|e| format!("entry {seq}: {}", crate::error::report(&e)))?;
        Ok(crate::ledger::hash::leaf_hash(
            raw.get(..len).unwrap_or_default(),
        ))
    }
}

impl NodeSource for DbNodes<'_> {
    type Error = String;
    fn node(&mut self, level: u8, index: u64) -> Result<Hash, String> {
        if level < LOWEST_STORED_LEVEL {
            // Not stored: at most two leaves, from their envelopes.
            let first = index
                .checked_mul(1 << level)
                .ok_or_else(|| format!("tree node ({level}, {index}) out of range"))?;
            let leaves = (first..first.saturating_add(1 << level))
                .map(|seq| self.leaf(seq))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(crate::ledger::merkle::root_of(&leaves));
        }
        let raw = self
            .view
            .get(&self.space, &node_key(level, index))
            .map_err(|e| crate::error::report(&e))?
            .ok_or_else(|| format!("tree node ({level}, {index}) missing"))?;
        Hash::from_slice(&raw).ok_or_else(|| format!("tree node ({level}, {index}) malformed"))
    }
}
