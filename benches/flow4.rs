//! Flow 4 at prefecture scale (issue 27 item 8): 40 municipalities of one prefecture,
//! 1,000,000 households, 5,000 moves between them and 200,000 高額該当 records, all made by
//! the sample generator (`kukaku::flows::sample`) and imported through the flow-5 and
//! kogaku importers. Then the continuity job's first run, a daily incremental run (a day's
//! 異動 in every municipality and a few new moves), a 確定指示 on every candidate and the
//! confirmation with its carry-over. Each step reports its time, what it read and the peak
//! RSS of the step (`/proc/self/clear_refs` resets the peak between steps).
//!
//! One-shot system run with the default `StoreOptions`. `cargo bench --bench flow4`
//! (`KUKAKU_BENCH_HOUSEHOLDS=1000000`, `KUKAKU_BENCH_MOVES=5000`).
//! `KUKAKU_BENCH_SMOKE=1`: 4 municipalities, 2,000 households, 40 moves.
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: the panic is its report"
)]

mod common;

use std::time::{Duration, Instant};

use common::{env, send, who};

use kukaku::crypto::{AdminScope, Kek};
use kukaku::domain::InsurerNumber;
use kukaku::domain::continuity::Rules;
use kukaku::flows::continuity::extract;
use kukaku::flows::decision::{candidates, confirm_with, decide};
use kukaku::flows::sample;
use kukaku::flows::transmission::Encoding;
use kukaku::ledger::PartitionId;
use kukaku::store::{Paths, Store, StoreOptions};

/// Peak RSS of this process since the last reset, MiB; then resets it.
fn peak_rss() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0);
    // "5" resets the peak to the current RSS (Linux 4.0+); without it the figure is the
    // process's peak so far, which the table says.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    hwm
}

/// `n` 市町村国保 保険者番号 of prefecture 13.
fn municipalities(n: usize) -> Vec<PartitionId> {
    (1..=999u32)
        .filter_map(|k| (0..10).find_map(|c| InsurerNumber::parse(&format!("13{k:03}{c}")).ok()))
        .filter(|i| i.is_municipal_in("13"))
        .map(|i| i.partition_id())
        .take(n)
        .collect()
}

fn kogaku(store: &Store, p: &PartitionId, tid: &str, text: &str) {
    kukaku::flows::kogaku::import(store, p, tid, Encoding::Utf8, text.as_bytes(), &who()).unwrap();
}

struct Step {
    name: String,
    time: Duration,
    detail: String,
    peak: f64,
}

fn main() {
    let n = env("KUKAKU_BENCH_MUNICIPALITIES", 40, 4);
    let households = env("KUKAKU_BENCH_HOUSEHOLDS", 1_000_000, 2_000);
    let moves = env("KUKAKU_BENCH_MOVES", 5_000, 40);
    let kogaku_records = env("KUKAKU_BENCH_KOGAKU", 200_000, 400);
    let ids = municipalities(n);
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(dir.path());
    let store = Store::init(&paths, "bench.kokuho-13.example", StoreOptions::default()).unwrap();
    store.request_partitions(&ids).unwrap();
    store.provision(&mut |_, _| {}).unwrap();
    let kek = Kek::load_file(&paths.kek).unwrap();
    let tokyo = AdminScope::from_kek(&kek).prefecture("13").unwrap();
    let as_of = kukaku::domain::text::parse_date(sample::AS_OF).unwrap();
    let rules = Rules::default();
    let mut steps = Vec::new();
    let mut step = |name: String, time: Duration, detail: String| {
        // Progress on stderr as each step ends (the table follows at the end).
        eprintln!("{name}: {:.2} s, {detail}", time.as_secs_f64());
        steps.push(Step {
            name,
            time,
            detail,
            peak: peak_rss(),
        });
    };
    peak_rss();

    // The prefecture as it stands: every municipality's households (the movers among them,
    // settled in A) and its 高額該当 records.
    let per_pair = moves / n;
    let settled = households / n - per_pair;
    let general_kogaku = kogaku_records / n - per_pair;
    let t = Instant::now();
    let mut movers = Vec::new();
    for (k, p) in ids.iter().enumerate() {
        let seed = k as u64 + 1;
        send(
            &store,
            p,
            &sample::transmission(p.as_str(), &format!("{p}-BASE"), settled, seed),
        );
        let b = &ids[(k + 1) % n];
        let m = sample::movers(p.as_str(), b.as_str(), per_pair, seed);
        send(&store, p, &m.settled);
        kogaku(&store, p, &format!("{p}-KOGAKU-{seed}"), &m.kogaku);
        let rows: Vec<(String, Vec<&str>)> = (0..general_kogaku)
            .map(|i| {
                (
                    sample::setai_no(seed, i * settled / general_kogaku.max(1)),
                    vec!["2024-05", "2024-08"],
                )
            })
            .collect();
        let tid = format!("{p}-KOGAKU-GENERAL");
        kogaku(
            &store,
            p,
            &tid,
            &sample::kogaku_file(p.as_str(), &tid, &rows),
        );
        movers.push((p.clone(), b.clone(), m));
    }
    step(
        "import: the prefecture's households and 高額該当 records".into(),
        t.elapsed(),
        format!(
            "{} households, {} 高額該当 records",
            n * (settled + per_pair),
            n * (general_kogaku + per_pair)
        ),
    );
    // The moves: A's 転出 and B's 県内転入.
    let t = Instant::now();
    for (a, b, m) in &movers {
        send(&store, a, &m.leave);
        send(&store, b, &m.arrive);
    }
    step(
        "import: the moves (A's 転出, B's 転入)".into(),
        t.elapsed(),
        format!("{} moves", n * per_pair),
    );

    let t = Instant::now();
    let first = extract(&store, &tokyo, &rules, &who(), as_of).unwrap();
    step(
        "continuity job: first run".into(),
        t.elapsed(),
        format!(
            "{} households read, {} candidates",
            first.households_read,
            first.candidates.len()
        ),
    );
    assert_eq!(
        first.candidates.len(),
        n * per_pair,
        "one candidate per move"
    );

    // A day: every municipality re-sends 0.4 % of its households (a day's 異動) and a few
    // households move.
    let daily = (settled / 250).max(1);
    let new_moves = (per_pair / 50).max(1);
    let t = Instant::now();
    for (k, p) in ids.iter().enumerate() {
        let seed = k as u64 + 1;
        send(
            &store,
            p,
            &sample::transmission(p.as_str(), &format!("{p}-DAY2"), daily, seed),
        );
        let b = &ids[(k + 2) % n];
        let m = sample::movers(p.as_str(), b.as_str(), new_moves, 1_000 + seed);
        send(&store, p, &m.settled);
        send(&store, p, &m.leave);
        send(&store, b, &m.arrive);
    }
    step(
        "import: a day's changes".into(),
        t.elapsed(),
        format!(
            "{} households re-sent, {} new moves",
            n * daily,
            n * new_moves
        ),
    );
    let t = Instant::now();
    let second = extract(&store, &tokyo, &rules, &who(), as_of).unwrap();
    step(
        "continuity job: the daily incremental run".into(),
        t.elapsed(),
        format!(
            "{} households read, {} candidates",
            second.households_read,
            second.candidates.len()
        ),
    );
    assert_eq!(second.candidates.len(), n * new_moves, "{second:?}");

    // Every candidate decided (each a durable append), then the confirmation.
    let t = Instant::now();
    let mut decided = 0;
    for b in &ids {
        let scope = tokyo.partition(b).unwrap();
        for c in candidates(&store, &scope).unwrap() {
            decide(&store, &scope, c.seq, "continue", None, "bench", &who()).unwrap();
            decided += 1;
        }
    }
    step(
        "確定指示 on every candidate".into(),
        t.elapsed(),
        format!("{decided} decisions"),
    );
    let t = Instant::now();
    let r = confirm_with(&store, &tokyo, &rules, &who(), "2025-03-31T10:00:00+09:00").unwrap();
    step(
        "confirmation with carry-over".into(),
        t.elapsed(),
        format!("{} households confirmed", r.confirmed.len()),
    );
    assert_eq!(r.confirmed.len(), decided);

    println!("| step | time | what | peak RSS of the step |");
    println!("|---|---:|---|---:|");
    for s in &steps {
        println!(
            "| {} | {:.2} s | {} | {:.0} MiB |",
            s.name,
            s.time.as_secs_f64(),
            s.detail,
            s.peak
        );
    }
    println!(
        "\ndaily run / first run: {:.3} (time), {:.4} (households read)",
        steps[4].time.as_secs_f64() / steps[2].time.as_secs_f64(),
        second.households_read as f64 / first.households_read.max(1) as f64
    );
}
