//! Audit throughput: `verify_bundle` on a bundle made by the store, against raw SHA-256 over
//! the same bytes, in the same run. A one-shot system measurement, not a criterion
//! micro-benchmark. Run: `cargo bench -p kukaku-audit --bench verify`
//! (`KUKAKU_BENCH_ENTRIES=1000000` to choose the size). Results go to docs/benchmarks.md.
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: the panic is its report"
)]

use std::time::Instant;

use kukaku::domain::InsurerNumber;
use kukaku::ledger::Kind;
use kukaku::ledger::hash::Hash;
use kukaku::store::{NewEntry, Paths, Store, StoreOptions};
use kukaku_audit::audit::Options;
use kukaku_audit::{State, Trust, verify_bundle};

/// The allocator of the `kukaku-audit` binary (src/main.rs), so the bench measures what it runs.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    // `KUKAKU_BENCH_SMOKE=1` (CI): a small bundle, so the benchmark cannot rot.
    let default = if std::env::var_os("KUKAKU_BENCH_SMOKE").is_some() {
        2_000
    } else {
        200_000
    };
    let n: u64 = std::env::var("KUKAKU_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::init(
        &Paths::under(dir.path()),
        "bench.example",
        StoreOptions::default(),
    )
    .unwrap();
    let p = InsurerNumber::parse("131011").unwrap().partition_id();
    store.request_partitions(std::slice::from_ref(&p)).unwrap();
    store.provision(&mut |_, _| {}).unwrap();
    let t = Instant::now();
    let mut done = 0;
    while done < n {
        let batch = (n - done).min(1000);
        let entries = (0..batch)
            .map(|i| {
                NewEntry::new(Kind::HOUSEHOLD_SNAPSHOT, 20_000, None, vec![i as u8; 256]).unwrap()
            })
            .collect();
        store.append(&p, entries).unwrap();
        done += batch;
    }
    let fill = t.elapsed();
    let bundle = store
        .export_audit(std::slice::from_ref(&p), Vec::new(), &mut |_| {})
        .unwrap();
    let trust = Trust::parse(&format!("log {}\n", store.log_key().unwrap().to_text())).unwrap();
    let entries = store.size(&p).unwrap();
    drop(store);

    let mut best_sha = f64::MAX;
    let mut best_audit = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let h = Hash::digest(&[&bundle]);
        std::hint::black_box(h);
        best_sha = best_sha.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let previous = State::default();
        let (report, _) = verify_bundle(
            &bundle[..],
            &Options {
                trust: &trust,
                previous: &previous,
                quorum: 0,
            },
        )
        .unwrap();
        assert_eq!(report.partitions[0].entries, entries);
        best_audit = best_audit.min(t.elapsed().as_secs_f64());
    }
    // The two pipeline stages alone, to see which one limits.
    let t = Instant::now();
    let mut reader = kukaku::ledger::bundle::BundleReader::new(&bundle[..]).unwrap();
    let mut envelopes = Vec::new();
    while let Some(r) = reader.next_record().unwrap() {
        if let kukaku::ledger::bundle::Record::Envelope(e) = r {
            envelopes.push(e);
        }
    }
    let read_stage = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut v = kukaku::ledger::ChainVerifier::new(p.clone());
    for e in &envelopes {
        std::hint::black_box(v.push(e).unwrap());
    }
    let verify_stage = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let decoded: Vec<_> = envelopes
        .iter()
        .map(|e| {
            let env = kukaku::ledger::EnvelopeRef::decode(e).unwrap();
            let leaf = env.leaf_hash();
            (env.header, leaf)
        })
        .collect();
    let decode_stage = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut v = kukaku::ledger::ChainVerifier::new(p.clone());
    for (h, leaf) in &decoded {
        std::hint::black_box(v.push_decoded(h, *leaf).unwrap());
    }
    let chain_stage = t.elapsed().as_secs_f64();
    println!("split: decode and leaf hash {decode_stage:.3} s; chain and tree {chain_stage:.3} s");
    let mib = bundle.len() as f64 / (1 << 20) as f64;
    println!(
        "stage: read, frame and hash the trailer {read_stage:.3} s; decode, chain and tree {verify_stage:.3} s"
    );
    println!(
        "entries {entries}, bundle {mib:.1} MiB (filled in {:.1} s)",
        fill.as_secs_f64()
    );
    println!(
        "raw SHA-256      {:.3} s  {:.0} MiB/s",
        best_sha,
        mib / best_sha
    );
    println!(
        "kukaku-audit     {:.3} s  {:.0} MiB/s  {:.0} entries/s  ratio {:.2}x of raw SHA-256",
        best_audit,
        mib / best_audit,
        entries as f64 / best_audit,
        best_sha / best_audit
    );
}
