//! Helpers the system benchmarks share: the smoke switch and sizes from the environment,
//! partition ids, a one-partition instance, filling a partition, importing a sample
//! transmission.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "shared by several bench binaries: an `expect` would be unfulfilled in those that use less of it"
)]

use std::path::Path;

pub mod http;

use kukaku::domain::InsurerNumber;
use kukaku::flows::import::{Importer, import};
use kukaku::flows::sample::SampleFiles;
use kukaku::flows::transmission::Encoding;
use kukaku::ledger::{Kind, PartitionId};
use kukaku::store::{NewEntry, Paths, Store, StoreOptions};

/// The allocator of the `kukaku` binary (src/main.rs), so a bench measures what it runs.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Whether `KUKAKU_BENCH_SMOKE` is set: every cell runs briefly (CI keeps the benchmark
/// from rotting; no timing is read).
pub fn smoke() -> bool {
    std::env::var_os("KUKAKU_BENCH_SMOKE").is_some()
}

/// A size from the environment variable `name`: `small` under smoke, else its value, else
/// `default`.
pub fn env(name: &str, default: usize, small: usize) -> usize {
    if smoke() {
        return small;
    }
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The importer a benchmark's flow calls are recorded under.
pub fn who() -> Importer {
    Importer {
        actor: "bench".into(),
        role: "admin".into(),
        route: "bench".into(),
        request_id: "-".into(),
    }
}

/// Imports one sample transmission (世帯 and 個人 files, UTF-8) into `p`.
pub fn send(store: &Store, p: &PartitionId, f: &SampleFiles) {
    let (s, k) = (f.setai.as_bytes(), f.kojin.as_bytes());
    import(store, p, &f.transmission_id, Encoding::Utf8, s, k, &who()).unwrap();
}

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
