//! Durable append (issue 9, item 1): kukaku's append path (seal, chain, Merkle nodes, signed
//! checkpoint, one synced batch) against a raw RocksDB synced `WriteBatch` of the same record
//! sizes and batch sizes, side by side in one run, reported as a ratio.
//!
//! A one-shot system measurement, not a criterion micro-benchmark: each cell runs for a fixed
//! time on a fresh database in a temporary directory on the same disk.
//! Run: `cargo bench --bench append` (prints the markdown tables of docs/benchmarks.md).
//! A second table is the floor of the format: raw RocksDB writing kukaku's bytes plus the
//! format's own per-batch work (salt and commitment, header, leaf and chain hashes, seal,
//! tree, checkpoint signature), timed primitive by primitive with nothing else, on one core
//! and with everything but the chain split perfectly over two: the best ratio any
//! implementation of this format could reach in this run.
//! `KUKAKU_BENCH_SMOKE=1` runs every cell briefly (CI: the benchmark cannot rot; no timing is
//! asserted). `KUKAKU_BENCH_SECONDS` sets the time per cell (default 3). For profiling,
//! `KUKAKU_BENCH_CELL=256x1000` runs one cell and `KUKAKU_BENCH_SIDE=kukaku` (or `raw`) one
//! side of it.
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: the panic is its report"
)]

mod common;

use std::time::{Duration, Instant};

use kukaku::crypto::aead::Dek;
use kukaku::crypto::secret::Secret32;
use kukaku::crypto::signer::CheckpointSigner;
use kukaku::ledger::Seq;
use kukaku::ledger::envelope::{NONCE_LEN, SALT_LEN, TAG_LEN};
use kukaku::ledger::hash::{chain_next, commitment, leaf_hash};
use kukaku::ledger::merkle::CompactRange;
use kukaku::ledger::{Hash, Header, Kind, PartitionId};
use kukaku::store::NewEntry;
use kukaku::store::records::LOWEST_STORED_LEVEL;

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
    raw_puts(size, 0, batch, budget)
}

/// As [`raw`], with one extra 32-byte put every `node_every` records (0: none): what kukaku
/// writes besides the envelope, the tree nodes the record completes. Only subtrees of
/// 2^LOWEST_STORED_LEVEL leaves and up are stored, 2^(1−LOWEST_STORED_LEVEL) per entry on
/// average.
fn raw_puts(size: usize, node_every: u64, batch: usize, budget: Duration) -> f64 {
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
            if node_every > 0 && seq % node_every == node_every - 1 {
                let mut node = [b'N'; 10];
                node[1] = LOWEST_STORED_LEVEL;
                node[2..].copy_from_slice(&seq.to_be_bytes());
                b.put(node, [0x33_u8; 32]);
            }
            seq += 1;
        }
        db.write_opt(b, &w).unwrap();
    }
    seq as f64 / start.elapsed().as_secs_f64()
}

/// Entries per second through `Store::append`, `batch` sealed entries of `size` bytes per
/// call, one caller (so every call is its own group commit), and the stored envelope size.
fn kukaku(size: usize, batch: usize, budget: Duration) -> (f64, usize) {
    let dir = tempfile::tempdir().unwrap();
    let (_, store, p) = common::one_partition(dir.path());
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
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let last = store.size(&p).unwrap() - 1;
    let envelope = store.envelopes(&p, Seq(last), Seq(last + 1)).unwrap()[0].len();
    (rate, envelope)
}

/// Microseconds per batch of the work the format itself asks of every batch before its
/// write, primitive by primitive, with nothing else (no staging, no threads, no RocksDB):
/// `[salt and commitment, header + leaf + chain, seal, tree, checkpoint signature]`.
/// Only "header + leaf + chain" is serial by construction (each header holds the previous
/// chain value); the rest could in principle be split over cores.
fn floor_work(size: usize, batch: usize, budget: Duration) -> [f64; 5] {
    let payload = vec![0x5a_u8; size];
    let dek = Dek::new(&Secret32::generate().unwrap());
    let signer =
        CheckpointSigner::from_seed("bench.example", &Secret32::generate().unwrap()).unwrap();
    let template = Header {
        partition: PartitionId::parse("131011").unwrap(),
        seq: 0,
        tx_time: 1_700_000_000_000,
        valid_from: 20_000,
        kind: Kind::HOUSEHOLD_SNAPSHOT,
        ref_seq: None,
        prev_chain: Hash::ZERO,
        commitment: Hash::ZERO,
    };
    let mut range = CompactRange::new();
    let mut chain = Hash::ZERO;
    let mut spent = [Duration::ZERO; 5];
    // Buffers are allocated outside the timed parts, sized as the writer sizes an envelope:
    // the floor counts no allocation.
    let capacity = template.encoded_len() + 4 + NONCE_LEN + SALT_LEN + size + TAG_LEN;
    let mut envs: Vec<(Vec<u8>, Hash)> = (0..batch)
        .map(|_| (Vec::with_capacity(capacity), Hash::ZERO))
        .collect();
    let mut entries: Vec<([u8; 32], Hash)> = Vec::with_capacity(batch);
    let (start, mut batches, mut seq) = (Instant::now(), 0u32, 0u64);
    while start.elapsed() < budget || batches == 0 {
        entries.clear();
        let t = Instant::now();
        for _ in 0..batch {
            let salt = kukaku::crypto::random_nonce::<32>().unwrap();
            entries.push((salt, commitment(&salt, &payload)));
        }
        spent[0] += t.elapsed();
        let t = Instant::now();
        for ((_, c), (env, leaf)) in entries.iter().zip(envs.iter_mut()) {
            let header = Header {
                seq,
                prev_chain: chain,
                commitment: *c,
                ..template.clone()
            };
            env.clear();
            header.encode_into(env);
            *leaf = leaf_hash(env);
            chain = chain_next(&chain, leaf);
            seq += 1;
        }
        spent[1] += t.elapsed();
        let t = Instant::now();
        for ((env, leaf), (salt, _)) in envs.iter_mut().zip(&entries) {
            env.extend_from_slice(&1u32.to_be_bytes());
            dek.seal_into(leaf, salt, &payload, env).unwrap();
        }
        spent[2] += t.elapsed();
        let t = Instant::now();
        for (_, leaf) in &envs {
            std::hint::black_box(range.append(*leaf).unwrap());
        }
        spent[3] += t.elapsed();
        let t = Instant::now();
        std::hint::black_box(signer.sign_checkpoint(
            &template.partition,
            range.size(),
            range.root(),
        ));
        spent[4] += t.elapsed();
        std::hint::black_box(&envs);
        batches += 1;
    }
    spent.map(|d| d.as_secs_f64() * 1e6 / f64::from(batches))
}

fn main() {
    let budget = per_cell();
    let cell = std::env::var("KUKAKU_BENCH_CELL").ok();
    let side = std::env::var("KUKAKU_BENCH_SIDE").ok();
    let runs = |name: &str| side.as_deref().is_none_or(|s| s == name);
    println!(
        "| record | batch | raw RocksDB (records/s) | kukaku (entries/s) | ratio | raw, kukaku's puts (/s) | ratio to that |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let mut floors = Vec::new();
    for size in SIZES {
        for batch in BATCHES {
            if cell
                .as_deref()
                .is_some_and(|c| c != format!("{size}x{batch}"))
            {
                continue;
            }
            let r = if runs("raw") {
                raw(size, batch, budget)
            } else {
                0.0
            };
            let (k, envelope) = if runs("kukaku") {
                kukaku(size, batch, budget)
            } else {
                (0.0, size)
            };
            // The same bytes raw: the envelope and the stored tree nodes.
            let node_every = 1u64 << (LOWEST_STORED_LEVEL - 1);
            let same = if runs("raw") {
                raw_puts(envelope, node_every, batch, budget)
            } else {
                0.0
            };
            let ratio = |a: f64, b: f64| a / b.max(f64::MIN_POSITIVE);
            println!(
                "| {size} B | {batch} | {r:.0} | {k:.0} | {:.2}× | {same:.0} ({envelope} B + 1 node / {node_every}) | {:.2}× |",
                ratio(k, r),
                ratio(k, same)
            );
            if runs("raw") {
                let work = floor_work(size, batch, budget / 4);
                floors.push((size, batch, r, same, work));
            }
        }
    }
    if floors.is_empty() {
        return;
    }
    // The best any implementation of this format could do: raw RocksDB writing kukaku's
    // bytes, plus the format's own work per batch, on one core, or with everything but
    // the chain split perfectly over two (and no staging, hand-off or background work).
    println!();
    println!(
        "| record | batch | salt + commitment (µs) | header + leaf + chain | seal | tree | signature | kukaku's bytes raw (µs) | floor, 1 core: ratio | floor, 2 cores: ratio |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (size, batch, r, same, w) in floors {
        let write = batch as f64 / same.max(f64::MIN_POSITIVE) * 1e6;
        let all: f64 = w.iter().sum();
        let one = write + all;
        let two = write + w[1] + (all - w[1]) / 2.0;
        let ratio = |us: f64| batch as f64 / us * 1e6 / r.max(f64::MIN_POSITIVE);
        println!(
            "| {size} B | {batch} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {write:.1} | {:.2}× | {:.2}× |",
            w[0],
            w[1],
            w[2],
            w[3],
            w[4],
            ratio(one),
            ratio(two)
        );
    }
}
