//! Provisioning at scale: how long registering and activating N partitions takes, on the bulk
//! path (request, reopen: all column families created in one open) and on the one-at-a-time
//! path (`create_cf` on an open store, as a running server does for a late partition).
//!
//! A one-shot scale measurement, not a criterion micro-benchmark: each point builds a fresh
//! store. Run: `cargo bench --bench provision` (`KUKAKU_BENCH_PARTITIONS=3500,1000` to choose
//! sizes). Results go to docs/benchmarks.md.
#![expect(
    clippy::unwrap_used,
    reason = "a test fails by panicking: the panic is its report"
)]

mod common;

use std::time::{Duration, Instant};

use kukaku::store::{Paths, Store, StoreOptions};

struct Point {
    create: Duration,
    activate: Duration,
    reopen: Duration,
}

fn run(n: usize, bulk: bool) -> Point {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(dir.path());
    let ids = common::ids(n);
    let store = Store::init(&paths, "bench.example", StoreOptions::default()).unwrap();
    let t = Instant::now();
    store.request_partitions(&ids).unwrap();
    let store = if bulk {
        drop(store);
        Store::open(&paths, StoreOptions::default()).unwrap()
    } else {
        store
    };
    let create = t.elapsed();
    let t = Instant::now();
    assert_eq!(store.provision(&mut |_, _| {}).unwrap(), n as u64);
    let activate = t.elapsed();
    drop(store);
    let t = Instant::now();
    let store = Store::open(&paths, StoreOptions::default()).unwrap();
    let reopen = t.elapsed();
    assert!(store.quarantined().is_empty());
    Point {
        create,
        activate,
        reopen,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is a filter we do not use.
    let sizes: Vec<usize> = std::env::var("KUKAKU_BENCH_PARTITIONS")
        .unwrap_or_else(|_| "3500,1000,500".into())
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    println!("| path | partitions | request + create CFs | activate | total | reopen |");
    println!("|---|---:|---:|---:|---:|---:|");
    for &n in &sizes {
        for bulk in [true, false] {
            // The one-at-a-time path is quadratic; measure it only where it finishes.
            if !bulk && n > 1000 {
                continue;
            }
            let p = run(n, bulk);
            println!(
                "| {} | {n} | {:.2} s | {:.2} s | {:.2} s | {:.2} s |",
                if bulk {
                    "bulk (reopen)"
                } else {
                    "one at a time"
                },
                p.create.as_secs_f64(),
                p.activate.as_secs_f64(),
                (p.create + p.activate).as_secs_f64(),
                p.reopen.as_secs_f64(),
            );
        }
    }
}
