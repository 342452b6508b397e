//! Durable append (issue 9, item 1): kukaku's append path (seal, chain, Merkle nodes, signed
//! checkpoint, one synced batch) against a raw RocksDB synced `WriteBatch` of the same record
//! sizes and batch sizes, side by side in one run, reported as a ratio.
//!
//! A one-shot system measurement, not a criterion micro-benchmark: each cell runs for a fixed
//! time on a fresh database in a temporary directory on the same disk.
//! Run: `cargo bench --bench append` (prints the markdown table of docs/benchmarks.md).
//! `KUKAKU_BENCH_SMOKE=1` runs every cell briefly (CI: the benchmark cannot rot; no timing is
//! asserted). `KUKAKU_BENCH_SECONDS` sets the time per cell (default 3).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use kukaku::domain::InsurerNumber;
use kukaku::ledger::Kind;
use kukaku::store::{NewEntry, Paths, Store, StoreOptions};

const SIZES: [usize; 2] = [256, 1024];
const BATCHES: [usize; 4] = [1, 10, 100, 1000];

fn per_cell() -> Duration {
    if std::env::var_os("KUKAKU_BENCH_SMOKE").is_some() {
        return Duration::from_millis(50);
    }
    let secs: f64 = std::env::var("KUKAKU_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(secs)
}

/// Records per second of raw synced `WriteBatch`es of `batch` records of `size` bytes.
fn raw(size: usize, batch: usize, budget: Duration) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    opts.set_compression_type(rocksdb::DBCompressionType::None);
    let db = rocksdb::DB::open(&opts, dir.path()).unwrap();
    let mut w = rocksdb::WriteOptions::default();
    w.set_sync(true);
    let value = vec![0x5a_u8; size];
    let (start, mut seq) = (Instant::now(), 0u64);
    while start.elapsed() < budget {
        let mut b = rocksdb::WriteBatch::default();
        for _ in 0..batch {
            let mut key = [b'E'; 9];
            key[1..].copy_from_slice(&seq.to_be_bytes());
            b.put(key, &value);
            seq += 1;
        }
        db.write_opt(b, &w).unwrap();
    }
    seq as f64 / start.elapsed().as_secs_f64()
}

/// Entries per second through `Store::append`, `batch` sealed entries of `size` bytes per
/// call, one caller (so every call is its own group commit).
fn kukaku(size: usize, batch: usize, budget: Duration) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(dir.path());
    let store = Store::init(&paths, "bench.example", StoreOptions::default()).unwrap();
    let p = InsurerNumber::parse("131011").unwrap().partition_id();
    store.request_partitions(std::slice::from_ref(&p)).unwrap();
    store.provision(&mut |_, _| {}).unwrap();
    let payload = vec![0x5a_u8; size];
    let (start, mut n) = (Instant::now(), 0u64);
    while start.elapsed() < budget {
        let entries = (0..batch)
            .map(|_| NewEntry::new(Kind::HOUSEHOLD_SNAPSHOT, 20_000, None, payload.clone()))
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        store.append(&p, entries).unwrap();
        n += batch as u64;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let budget = per_cell();
    println!("| record | batch | raw RocksDB (records/s) | kukaku (entries/s) | ratio |");
    println!("|---:|---:|---:|---:|---:|");
    for size in SIZES {
        for batch in BATCHES {
            let r = raw(size, batch, budget);
            let k = kukaku(size, batch, budget);
            println!(
                "| {size} B | {batch} | {r:.0} | {k:.0} | {:.2}× |",
                k / r.max(f64::MIN_POSITIVE)
            );
        }
    }
}
