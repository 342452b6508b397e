//! Verified reads (issue 9, item 3): read one entry (decrypt, commitment check) and its RFC
//! 9162 inclusion proof from a partition of N entries, then verify the proof client-side
//! against the checkpoint's root. Reports the read+prove rate, the client verify time and
//! the proof size, at 10^6 and 10^7 entries.
//!
//! One-shot system run. `cargo bench --bench reads` (`KUKAKU_BENCH_SIZES=1000000,10000000`;
//! 64-byte payloads keep 10^7 entries at a few GB). `KUKAKU_BENCH_SMOKE=1`: 2,000 entries.
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: the panic is its report"
)]

mod common;

use std::time::{Duration, Instant};

use kukaku::crypto::{AdminScope, Kek};
use kukaku::ledger::Checkpoint;
use kukaku::ledger::hash::Hash;
use kukaku::ledger::merkle::verify_inclusion;
use kukaku::ledger::{Seq, TreeSize};

const READS: usize = 20_000;
/// Checkpoint signature verifications timed after the first.
const SIGNATURE_RUNS: u32 = 1_000;

fn main() {
    let smoke = std::env::var_os("KUKAKU_BENCH_SMOKE").is_some();
    let sizes: Vec<u64> = std::env::var("KUKAKU_BENCH_SIZES")
        .unwrap_or_else(|_| {
            if smoke {
                "2000".into()
            } else {
                "1000000,10000000".into()
            }
        })
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let sig_runs = if smoke { 10 } else { SIGNATURE_RUNS };
    println!(
        "| entries | fill | read + prove (ops/s) | read + prove p50 | client verify (mean) | checkpoint signature verify (first / mean of {sig_runs}) | proof hashes | proof JSON |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for n in sizes {
        let dir = tempfile::tempdir().unwrap();
        let (paths, store, p) = common::one_partition(dir.path());
        let t = Instant::now();
        // Genesis and the first key event are already there.
        common::fill(&store, &p, n.saturating_sub(store.size(&p).unwrap()), 64);
        let fill = t.elapsed();
        let kek = Kek::load_file(&paths.kek).unwrap();
        let scope = AdminScope::from_kek(&kek).partition(&p);
        let key = store.verifier_key(&p).unwrap();
        // The client checks the checkpoint signature once, then proofs against its root.
        let note = store.checkpoint(&p).unwrap().unwrap();
        let t = Instant::now();
        let cp = Checkpoint::verify_note(&note, &key).unwrap();
        let sig_first = t.elapsed();
        // The first verify pays for cold caches and ring's one-time set-up; the mean of
        // many is what a client checking many checkpoints pays.
        let t = Instant::now();
        for _ in 0..sig_runs {
            assert_eq!(Checkpoint::verify_note(&note, &key).unwrap(), cp);
        }
        let sig_mean = t.elapsed() / sig_runs;
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let (mut serve, mut verify) = (Vec::with_capacity(READS), Duration::ZERO);
        let (mut hashes, mut json_bytes) = (0usize, 0usize);
        let reads = if smoke { 200 } else { READS };
        let start = Instant::now();
        for _ in 0..reads {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let seq = x % n;
            let t = Instant::now();
            let e = store.read_entry(&scope, seq).unwrap();
            let proof = store
                .prove_inclusion(&p, Seq(seq), Some(TreeSize(cp.size)))
                .unwrap();
            serve.push(t.elapsed());
            let t = Instant::now();
            let path: Vec<Hash> = proof
                .proof
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|h| Hash::from_base64(h).unwrap())
                .collect();
            verify_inclusion(seq, cp.size, &e.leaf_hash, &path, &cp.root).unwrap();
            verify += t.elapsed();
            hashes += path.len();
            json_bytes += serde_json::to_vec(&proof).unwrap().len();
        }
        let total = start.elapsed();
        serve.sort_unstable();
        println!(
            "| {n} | {:.1} s | {:.0} | {:.1} µs | {:.1} µs | {:.1} / {:.1} µs | {:.1} | {} B |",
            fill.as_secs_f64(),
            reads as f64 / total.as_secs_f64(),
            serve[serve.len() / 2].as_secs_f64() * 1e6,
            verify.as_secs_f64() * 1e6 / reads as f64,
            sig_first.as_secs_f64() * 1e6,
            sig_mean.as_secs_f64() * 1e6,
            hashes as f64 / reads as f64,
            json_bytes / reads
        );
    }
}
