//! The replicated cell beside the embedded engine (issue 31): durable appends through the
//! store on each, side by side in one run (one writer at batch 1, 10 and 100; 32 writers at
//! batch 1, which the group commit gathers), and the pause of a failover: the leader's
//! Patroni and PostgreSQL SIGKILLed while appends go on, until the first append
//! acknowledged after it (the store reopened as `kukaku serve` does). Then the HTTP load of
//! `benches/http.rs` (64 clients) on each.
//!
//! Needs a cell: `KUKAKU_BENCH_PG_DSN` (scripts/bench.sh starts one with scripts/pg-cell.sh);
//! the failover is measured when `KUKAKU_BENCH_PG_CELL` names the cell's directory too.
//! `KUKAKU_BENCH_SMOKE=1`: every cell briefly, no failover (the test command, so the bench
//! cannot rot). `KUKAKU_BENCH_SECONDS`: time per cell (default 3). `KUKAKU_BENCH_SVG=FILE`:
//! also draw the append table as an SVG bar chart (docs/benchmarks/cell.svg).
//! Run: `cargo bench --features postgres --bench cell`.
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a bench fails by panicking: the panic is its report"
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kukaku::ledger::{Kind, PartitionId};
use kukaku::store::{NewEntry, Paths, PgTarget, Store, StoreOptions};

/// Which engine a run is on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Embedded,
    Cell,
}

/// A fresh instance on `side` with `ids` provisioned (kept alive by the returned directory).
fn instance(side: Side, ids: &[PartitionId]) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(&dir.path().join("home"));
    let store = match side {
        Side::Embedded => Store::init(&paths, "bench.example", StoreOptions::default()).unwrap(),
        Side::Cell => {
            Store::init_postgres(&paths, "bench.example", StoreOptions::default(), target())
                .unwrap()
        }
    };
    store.request_partitions(ids).unwrap();
    store.provision(&mut |_, _| {}).unwrap();
    (dir, store)
}

/// A new schema on the cell.
fn target() -> PgTarget {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    let dsn = std::env::var("KUKAKU_BENCH_PG_DSN").unwrap();
    let schema = format!(
        "bench_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    PgTarget { dsn, schema }
}

fn entries(n: usize) -> Vec<NewEntry> {
    (0..n)
        .map(|_| NewEntry::new(Kind::HOUSEHOLD_SNAPSHOT, 20_000, None, vec![0x5a; 256]).unwrap())
        .collect()
}

/// Entries per second of `writers` threads, each appending batches of `batch` to its own
/// partition for `budget`.
fn appends(side: Side, writers: usize, batch: usize, budget: Duration) -> f64 {
    let ids = common::ids(writers);
    let (_dir, store) = instance(side, &ids);
    let store = Arc::new(store);
    let start = Instant::now();
    let threads: Vec<_> = ids
        .into_iter()
        .map(|p| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let mut n = 0;
                while start.elapsed() < budget {
                    store.append(&p, entries(batch)).unwrap();
                    n += batch;
                }
                n
            })
        })
        .collect();
    let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    total as f64 / start.elapsed().as_secs_f64()
}

fn per_cell() -> Duration {
    if common::smoke() {
        return Duration::from_millis(200);
    }
    let secs: f64 = std::env::var("KUKAKU_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(secs)
}

/// Runs `scripts/pg-cell.sh CMD` on the cell `KUKAKU_BENCH_PG_CELL` names.
fn cell_script(cmd: &str, dir: &str) {
    let ok = std::process::Command::new("bash")
        .args(["scripts/pg-cell.sh", cmd, dir])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "pg-cell.sh {cmd}");
}

/// Seconds from the leader's loss to the first append acknowledged after it: one writer
/// appending batches of 10, the store opened again after a failed commit (as `kukaku serve`
/// does once its store is poisoned), retrying until the cell answers.
fn failover_pause(cell: &str) -> f64 {
    let ids = common::ids(1);
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(&dir.path().join("home"));
    let at = target();
    let store =
        Store::init_postgres(&paths, "bench.example", StoreOptions::default(), at.clone()).unwrap();
    store.request_partitions(&ids).unwrap();
    store.provision(&mut |_, _| {}).unwrap();
    let p = ids[0].clone();
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let writer = {
        let (stop, acks) = (Arc::clone(&stop), Arc::clone(&acks));
        std::thread::spawn(move || {
            let mut store = Some(store);
            while !stop.load(Ordering::Relaxed) {
                let s = match store.take() {
                    Some(s) => s,
                    None => match Store::open_postgres(&paths, StoreOptions::default(), at.clone())
                    {
                        Ok(s) => s,
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(100));
                            continue;
                        }
                    },
                };
                if s.append(&p, entries(10)).is_ok() {
                    acks.lock().unwrap().push(Instant::now());
                    store = Some(s);
                }
            }
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    cell_script("kill-leader", cell);
    let killed = Instant::now();
    let first = loop {
        let after = acks.lock().unwrap().iter().copied().find(|t| *t > killed);
        if let Some(t) = after {
            break t;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(120),
            "no append within 120 s of the kill"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    cell_script("revive", cell);
    first.duration_since(killed).as_secs_f64()
}

/// The append table as a grouped bar chart: per row, the embedded engine and the cell.
fn svg(rows: &[(String, f64, f64)]) -> String {
    let (w, bar, gap, left) = (640.0, 14.0, 18.0, 190.0);
    let max = rows.iter().map(|r| r.1.max(r.2)).fold(1.0, f64::max);
    let h = 40.0 + rows.len() as f64 * (2.0 * bar + gap) + 30.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <text x=\"10\" y=\"20\" font-size=\"14\">Durable appends, entries/s (256 B): embedded RocksDB and the cell</text>\n"
    );
    for (i, (label, embedded, cell)) in rows.iter().enumerate() {
        let y = 40.0 + i as f64 * (2.0 * bar + gap);
        s += &format!("<text x=\"10\" y=\"{:.0}\">{label}</text>\n", y + bar + 4.0);
        for (j, (v, colour)) in [(embedded, "#4e79a7"), (cell, "#f28e2b")]
            .iter()
            .enumerate()
        {
            let len = (w - left - 90.0) * *v / max;
            let yy = y + j as f64 * bar;
            s += &format!(
                "<rect x=\"{left}\" y=\"{yy:.0}\" width=\"{len:.0}\" height=\"{:.0}\" fill=\"{colour}\"/>\
                 <text x=\"{:.0}\" y=\"{:.0}\">{v:.0}</text>\n",
                bar - 2.0,
                left + len + 4.0,
                yy + bar - 3.0
            );
        }
    }
    let y = h - 12.0;
    s += &format!(
        "<rect x=\"{left}\" y=\"{:.0}\" width=\"12\" height=\"10\" fill=\"#4e79a7\"/><text x=\"{:.0}\" y=\"{y:.0}\">embedded (synced WAL)</text>\
         <rect x=\"{:.0}\" y=\"{:.0}\" width=\"12\" height=\"10\" fill=\"#f28e2b\"/><text x=\"{:.0}\" y=\"{y:.0}\">cell (COMMIT on a synchronous standby)</text>\n</svg>\n",
        y - 9.0,
        left + 16.0,
        left + 170.0,
        y - 9.0,
        left + 186.0
    );
    s
}

fn main() {
    if std::env::var_os("KUKAKU_BENCH_PG_DSN").is_none() {
        println!("no cell: set KUKAKU_BENCH_PG_DSN (scripts/bench.sh starts one)");
        return;
    }
    let budget = per_cell();
    println!("| writers × batch | embedded, entries/s | cell, entries/s | cell / embedded |");
    println!("|---|---:|---:|---:|");
    let mut rows = Vec::new();
    for (writers, batch) in [(1, 1), (1, 10), (1, 100), (32, 1)] {
        let embedded = appends(Side::Embedded, writers, batch, budget);
        let cell = appends(Side::Cell, writers, batch, budget);
        let label = format!("{writers} × batch {batch}");
        println!(
            "| {label} | {embedded:.0} | {cell:.0} | {:.2}× |",
            cell / embedded
        );
        rows.push((label, embedded, cell));
    }
    println!();
    println!("| HTTP imports, clients | engine | requests | requests/s | p50 | p99 | failed |");
    println!("|---:|---|---:|---:|---:|---:|---:|");
    let clients = if common::smoke() { 8 } else { 64 };
    let per_client = if common::smoke() { 3 } else { 10_000 / clients };
    for side in [Side::Embedded, Side::Cell] {
        let ids = common::ids(clients);
        let (_dir, store) = instance(side, &ids);
        let r = common::http::run(store, &ids, per_client, Duration::from_secs(20));
        println!(
            "| {clients} | {} | {} | {:.0} | {:.1} ms | {:.1} ms | {} |",
            if side == Side::Cell {
                "cell"
            } else {
                "embedded"
            },
            r.requests,
            r.requests as f64 / r.elapsed.as_secs_f64(),
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            r.failed
        );
    }
    if let Ok(file) = std::env::var("KUKAKU_BENCH_SVG") {
        std::fs::write(&file, svg(&rows)).unwrap();
        println!("\n(drawn in {file})");
    }
    match std::env::var("KUKAKU_BENCH_PG_CELL") {
        Ok(cell) if !common::smoke() => {
            let pause = failover_pause(&cell);
            println!(
                "\nfailover (leader's Patroni and PostgreSQL SIGKILLed): appends resumed after {pause:.1} s"
            );
        }
        _ => println!("\nfailover: not measured (needs KUKAKU_BENCH_PG_CELL, not in smoke mode)"),
    }
}
