//! Concurrent appends over HTTP on loopback (issue 9, item 2): C clients, one municipality
//! (partition and credential) each, every client sending `POST /v1/transmissions` of one
//! household (one snapshot entry, its index entries, the transmission claim and the access
//! record: one group-committed append) back to back. Reports requests/s, p50 and p99.
//!
//! One-shot system run, bounded: a fixed number of requests per client, at most a time
//! budget; the server binds 127.0.0.1 only. Run: `cargo bench --bench http`.
//! `KUKAKU_BENCH_SMOKE=1`: a few requests per client (CI). `KUKAKU_BENCH_CLIENTS=64,256`.
//! `KUKAKU_BENCH_REQUEST_NICE=N`: the server runtime's request threads N nice levels below
//! the writer (default as `kukaku serve`, 5; 0: one level for all).
#![expect(
    clippy::unwrap_used,
    reason = "a test fails by panicking: the panic is its report"
)]

mod common;

use std::time::Duration;

use kukaku::store::{Paths, Store, StoreOptions};

/// A run of `clients` clients on a fresh embedded instance.
fn run(clients: usize, per_client: usize, budget: Duration) -> common::http::Run {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(dir.path());
    let ids = common::ids(clients);
    {
        let store = Store::init(&paths, "bench.example", StoreOptions::default()).unwrap();
        store.request_partitions(&ids).unwrap();
    }
    let store = Store::open(&paths, StoreOptions::default()).unwrap();
    store.provision(&mut |_, _| {}).unwrap();
    common::http::run(store, &ids, per_client, budget)
}

fn main() {
    let smoke = std::env::var_os("KUKAKU_BENCH_SMOKE").is_some();
    let clients: Vec<usize> = std::env::var("KUKAKU_BENCH_CLIENTS")
        .unwrap_or_else(|_| if smoke { "8".into() } else { "64,256".into() })
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let budget = Duration::from_secs(if smoke { 10 } else { 20 });
    println!("| clients | requests | requests/s | p50 | p99 | failed |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for c in clients {
        let per_client = if smoke { 3 } else { 20_000 / c };
        let r = run(c, per_client, budget);
        println!(
            "| {c} | {} | {:.0} | {:.1} ms | {:.1} ms | {} |",
            r.requests,
            r.requests as f64 / r.elapsed.as_secs_f64(),
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            r.failed
        );
    }
}
