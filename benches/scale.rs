//! Scale and key rotation (issue 9, items 5 and 6): 3,500 partitions — open time, idle RSS,
//! RSS under load across every partition — then the cost of rewrapping every key under a
//! new KEK and the re-encryption rate.
//!
//! One-shot system run with the default `StoreOptions` (one 512 MiB block cache, a 256 MiB
//! write-buffer manager charged to it, 2 MiB write buffers). `cargo bench --bench scale`
//! (`KUKAKU_BENCH_PARTITIONS=3500`, `KUKAKU_BENCH_REENCRYPT=200000`).
//! `KUKAKU_BENCH_SMOKE=1`: 20 partitions, 2,000 entries.
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: the panic is its report"
)]

mod common;

use std::time::Instant;

use common::env;

use kukaku::ledger::Kind;
use kukaku::store::{KeyActor, NewEntry, Paths, Store, StoreOptions};

/// Resident and peak set size of this process, MiB (`/proc/self/status`).
fn rss() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn who(reason: &str) -> KeyActor {
    KeyActor {
        actor: "bench".into(),
        reason: reason.into(),
    }
}

fn main() {
    let n = env("KUKAKU_BENCH_PARTITIONS", 3500, 20);
    let reencrypt_n = env("KUKAKU_BENCH_REENCRYPT", 200_000, 2_000) as u64;
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(dir.path());
    let ids = common::ids(n);
    {
        let store = Store::init(&paths, "bench.example", StoreOptions::default()).unwrap();
        store.request_partitions(&ids).unwrap();
    }
    let t = Instant::now();
    let store = Store::open(&paths, StoreOptions::default()).unwrap();
    store.provision(&mut |_, _| {}).unwrap();
    let provision = t.elapsed();
    drop(store);
    let t = Instant::now();
    let store = Store::open(&paths, StoreOptions::default()).unwrap();
    let open = t.elapsed();
    let (idle, _) = rss();
    // Load: 8 threads append one 1 KiB snapshot to every partition in turn, 10 rounds.
    let rounds = if n <= 20 { 2 } else { 10 };
    let t = Instant::now();
    std::thread::scope(|s| {
        for th in 0..8 {
            let (store, ids) = (&store, &ids);
            s.spawn(move || {
                for r in 0..rounds {
                    for (i, p) in ids.iter().enumerate() {
                        if (i + r) % 8 != th {
                            continue;
                        }
                        let e =
                            NewEntry::new(Kind::HOUSEHOLD_SNAPSHOT, 20_000, None, vec![1; 1024])
                                .unwrap();
                        store.append(p, vec![e]).unwrap();
                    }
                }
            });
        }
    });
    let load = t.elapsed();
    let (busy, peak) = rss();
    let appended = n * rounds;
    // Key rotation: a KEK rewrap of every partition's keys (one key-store batch, an event
    // in each partition), then re-encryption of one large partition.
    let t = Instant::now();
    let r = store.rotate_kek(who("bench")).unwrap();
    let rewrap = t.elapsed();
    let big = &ids[0];
    common::fill(&store, big, reencrypt_n, 256);
    store.rotate_deks(big, who("bench")).unwrap();
    let t = Instant::now();
    let step = store
        .reencrypt(big, who("bench"), 1000, &mut |_| true)
        .unwrap();
    let reencrypt = t.elapsed();
    println!("| measure | value |");
    println!("|---|---:|");
    println!("| partitions | {n} |");
    println!(
        "| provision (request, reopen, activate) | {:.2} s |",
        provision.as_secs_f64()
    );
    println!("| open | {:.2} s |", open.as_secs_f64());
    println!("| RSS after open (idle) | {idle:.0} MiB |");
    println!(
        "| load: {appended} single-entry appends, 8 threads, every partition | {:.2} s ({:.0}/s) |",
        load.as_secs_f64(),
        appended as f64 / load.as_secs_f64()
    );
    println!("| RSS after the load (peak) | {busy:.0} MiB ({peak:.0} MiB) |");
    println!(
        "| rotate-kek: {} keys of {} partitions rewrapped, one event each | {:.2} s |",
        r.keys,
        r.partitions,
        rewrap.as_secs_f64()
    );
    println!(
        "| reencrypt: {} entries moved | {:.2} s ({:.0} entries/s) |",
        step.moved,
        reencrypt.as_secs_f64(),
        step.moved as f64 / reencrypt.as_secs_f64()
    );
}
