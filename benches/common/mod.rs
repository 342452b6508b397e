//! Helpers the system benchmarks share: partition ids, a one-partition instance, filling a
//! partition.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use kukaku::domain::InsurerNumber;
use kukaku::ledger::{Kind, PartitionId};
use kukaku::store::{NewEntry, Paths, Store, StoreOptions};

/// The allocator of the `kukaku` binary (src/main.rs), so a bench measures what it runs.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// `n` distinct valid 保険者番号 (6-digit, prefectures 01–47).
pub fn ids(n: usize) -> Vec<PartitionId> {
    (1..=47u32)
        .flat_map(|pref| (1..=999u32).map(move |k| (pref, k)))
        .filter_map(|(pref, k)| {
            (0..10).find_map(|c| InsurerNumber::parse(&format!("{pref:02}{k:03}{c}")).ok())
        })
        .map(|i| i.partition_id())
        .take(n)
        .collect()
}

/// A new instance under `dir` with partition 131011 provisioned, default options.
pub fn one_partition(dir: &Path) -> (Paths, Store, PartitionId) {
    let paths = Paths::under(dir);
    let store = Store::init(&paths, "bench.example", StoreOptions::default()).unwrap();
    let p = InsurerNumber::parse("131011").unwrap().partition_id();
    store.request_partitions(std::slice::from_ref(&p)).unwrap();
    store.provision(&mut |_, _| {}).unwrap();
    (paths, store, p)
}

/// Appends `n` sealed snapshots of `size` bytes to `p`, 1,000 per batch.
pub fn fill(store: &Store, p: &PartitionId, n: u64, size: usize) {
    let mut done = 0;
    while done < n {
        let batch = (n - done).min(1000);
        let entries = (0..batch)
            .map(|i| NewEntry::new(Kind::HOUSEHOLD_SNAPSHOT, 20_000, None, vec![i as u8; size]))
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        store.append(p, entries).unwrap();
        done += batch;
    }
}
