//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod flow4;

use kukaku::ledger::PartitionId;
use kukaku::store::StoreOptions;

/// A partition id from a 保険者番号 (check digit validated).
pub fn pid(s: &str) -> PartitionId {
    kukaku::domain::InsurerNumber::parse(s)
        .unwrap()
        .partition_id()
}

/// Store options with small caches, for tests that open many stores.
pub fn small() -> StoreOptions {
    StoreOptions {
        block_cache_bytes: 8 << 20,
        write_buffer_manager_bytes: 8 << 20,
        ..Default::default()
    }
}
