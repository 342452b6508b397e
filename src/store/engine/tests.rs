//! What every engine must do (the seam's contract, module comment), run against RocksDB
//! here; a replicated engine runs the same checks.

use super::{Dir, Engine, EngineError, Op, RocksEngine, Space, View};
use crate::ledger::PartitionId;

fn pid(s: &str) -> PartitionId {
    PartitionId::parse(s).unwrap()
}

fn rocks(dir: &std::path::Path) -> RocksEngine {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let db = rocksdb::DB::open_cf(&opts, dir, ["sys"]).unwrap();
    RocksEngine::new(db, rocksdb::Options::default())
}

fn put(space: &Space, key: &[u8], value: &[u8]) -> Op {
    Op::Put {
        space: space.clone(),
        key: key.to_vec(),
        value: value.to_vec(),
    }
}

fn keys(scan: super::Scan<'_>) -> Vec<Vec<u8>> {
    scan.map(|item| item.unwrap().0.to_vec()).collect()
}

/// Every check of the contract, on one engine.
fn contract(engine: &dyn Engine) {
    let (a, b) = (pid("131011"), pid("380014"));
    assert!(!engine.has_space(&a));
    engine.create_spaces(&[a.clone(), b.clone()]).unwrap();
    engine.create_spaces(std::slice::from_ref(&a)).unwrap();
    assert!(engine.has_space(&a) && engine.has_space(&b));
    let (sa, sb, sys) = (Space::Partition(a), Space::Partition(b), Space::System);

    // Spaces are apart: one key, three values.
    engine
        .commit(vec![
            put(&sa, b"k", b"a"),
            put(&sb, b"k", b"b"),
            put(&sys, b"k", b"s"),
        ])
        .unwrap();
    assert_eq!(engine.get(&sa, b"k").unwrap().as_deref(), Some(&b"a"[..]));
    assert_eq!(engine.get(&sb, b"k").unwrap().as_deref(), Some(&b"b"[..]));
    assert_eq!(engine.get(&sys, b"k").unwrap().as_deref(), Some(&b"s"[..]));
    assert_eq!(engine.get(&sa, b"missing").unwrap(), None);

    // Ordered scans within a space, both ways, from any key.
    let many: Vec<Op> = (0u8..10).map(|i| put(&sa, &[b'E', i], &[i])).collect();
    engine.commit(many).unwrap();
    let forward = keys(engine.scan(&sa, &[b'E', 3], Dir::Forward).unwrap());
    let mut want: Vec<Vec<u8>> = (3u8..10).map(|i| vec![b'E', i]).collect();
    want.push(b"k".to_vec());
    assert_eq!(forward, want);
    let reverse = keys(engine.scan(&sa, &[b'E', 3, 0], Dir::Reverse).unwrap());
    assert_eq!(
        reverse,
        (0u8..4).rev().map(|i| vec![b'E', i]).collect::<Vec<_>>()
    );
    let last = keys(engine.scan(&sa, &[0xff; 9], Dir::Reverse).unwrap());
    assert_eq!(last.first().map(Vec::as_slice), Some(&b"k"[..]));
    let prefixed = keys(engine.scan_prefix(&sa, b"E").unwrap());
    assert_eq!(prefixed.len(), 10);
    assert!(keys(engine.scan_prefix(&sb, b"E").unwrap()).is_empty());

    // A snapshot keeps its state across spaces while commits go on.
    let snapshot = engine.snapshot().unwrap();
    engine
        .commit(vec![
            put(&sa, b"k", b"a2"),
            Op::Delete {
                space: sb.clone(),
                key: b"k".to_vec(),
            },
            Op::DeleteRange {
                space: sa.clone(),
                from: vec![b'E', 2],
                to: vec![b'E', 8],
            },
        ])
        .unwrap();
    assert_eq!(snapshot.get(&sa, b"k").unwrap().as_deref(), Some(&b"a"[..]));
    assert_eq!(snapshot.get(&sb, b"k").unwrap().as_deref(), Some(&b"b"[..]));
    assert_eq!(keys(snapshot.scan_prefix(&sa, b"E").unwrap()).len(), 10);
    drop(snapshot);
    assert_eq!(engine.get(&sa, b"k").unwrap().as_deref(), Some(&b"a2"[..]));
    assert_eq!(engine.get(&sb, b"k").unwrap(), None);
    let left = keys(engine.scan_prefix(&sa, b"E").unwrap());
    assert_eq!(
        left,
        [0u8, 1, 8, 9]
            .iter()
            .map(|i| vec![b'E', *i])
            .collect::<Vec<_>>()
    );

    // In one batch a later write of a key wins.
    engine
        .commit(vec![put(&sys, b"x", b"1"), put(&sys, b"x", b"2")])
        .unwrap();
    assert_eq!(engine.get(&sys, b"x").unwrap().as_deref(), Some(&b"2"[..]));

    // A batch naming a space that does not exist fails whole: nothing of it is written.
    let nowhere = Space::Partition(pid("470007"));
    let e = engine.commit(vec![put(&sys, b"y", b"1"), put(&nowhere, b"y", b"1")]);
    assert!(matches!(e, Err(EngineError::NoSpace(_))), "{e:?}");
    assert_eq!(engine.get(&sys, b"y").unwrap(), None);
    assert!(matches!(
        engine.get(&nowhere, b"y"),
        Err(EngineError::NoSpace(_))
    ));
}

#[test]
fn rocksdb_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(&rocks(dir.path()));
}

#[test]
fn rocksdb_commits_are_durable_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let a = pid("131011");
    {
        let engine = rocks(dir.path());
        engine.create_spaces(std::slice::from_ref(&a)).unwrap();
        engine
            .commit(vec![put(&Space::Partition(a.clone()), b"E1", b"v")])
            .unwrap();
    }
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(false);
    let db = rocksdb::DB::open_cf(&opts, dir.path(), ["sys", "p/131011"]).unwrap();
    let engine = RocksEngine::new(db, rocksdb::Options::default());
    assert_eq!(
        engine.get(&Space::Partition(a), b"E1").unwrap().as_deref(),
        Some(&b"v"[..])
    );
}

/// The same contract on PostgreSQL (`--features postgres`), against the cell the test
/// command starts (`scripts/pg-cell.sh`, DSN in `KUKAKU_TEST_PG_DSN`); ignored by a plain
/// `cargo test`, run by the test command with `--ignored`.
#[cfg(feature = "postgres")]
mod pg {
    use super::*;
    use crate::store::engine::{Lease, PgTarget, PostgresEngine};

    /// A lease that lapses at once (each test's writers take over from each other at will).
    const NOW: Lease = Lease {
        term: std::time::Duration::ZERO,
        patience: std::time::Duration::ZERO,
    };

    /// A fresh schema of its own for each test.
    fn target(name: &str) -> PgTarget {
        let dsn = std::env::var("KUKAKU_TEST_PG_DSN").expect(
            "KUKAKU_TEST_PG_DSN: a PostgreSQL DSN (scripts/test.sh starts a cell and sets it)",
        );
        let schema = format!("t_{name}_{}", std::process::id());
        let mut c = postgres::Client::connect(&dsn, postgres::NoTls).unwrap();
        c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .unwrap();
        PgTarget { dsn, schema }
    }

    #[test]
    #[ignore = "needs PostgreSQL: run by the test command against its cell"]
    fn postgres_keeps_the_contract() {
        contract(&PostgresEngine::open(target("contract"), "test", NOW).unwrap());
    }

    #[test]
    #[ignore = "needs PostgreSQL: run by the test command against its cell"]
    fn a_fenced_writer_never_commits_again() {
        let t = target("fence");
        let first = PostgresEngine::open(t.clone(), "first", NOW).unwrap();
        first.commit(vec![put(&Space::System, b"a", b"1")]).unwrap();
        let second = PostgresEngine::open(t, "second", NOW).unwrap();
        assert!(second.epoch() > first.epoch());
        let e = first.commit(vec![put(&Space::System, b"a", b"stale")]);
        assert!(matches!(e, Err(EngineError::Fenced(_))), "{e:?}");
        assert_eq!(
            second.get(&Space::System, b"a").unwrap().as_deref(),
            Some(&b"1"[..])
        );
        second
            .commit(vec![put(&Space::System, b"a", b"2")])
            .unwrap();
        assert_eq!(
            first.get(&Space::System, b"a").unwrap().as_deref(),
            Some(&b"2"[..])
        );
    }

    #[test]
    #[ignore = "needs PostgreSQL: run by the test command against its cell"]
    fn a_reader_reads_beside_the_writer_and_never_fences_it() {
        let t = target("reader");
        let writer = PostgresEngine::open(t.clone(), "writer", NOW).unwrap();
        writer
            .commit(vec![put(&Space::System, b"a", b"1")])
            .unwrap();
        let reader = PostgresEngine::open_reader(t.clone()).unwrap();
        assert_eq!(reader.lease_term(), None, "a reader renews nothing");
        assert_eq!(
            reader.get(&Space::System, b"a").unwrap().as_deref(),
            Some(&b"1"[..])
        );
        let e = reader.commit(vec![put(&Space::System, b"a", b"2")]);
        assert!(matches!(e, Err(EngineError::ReadOnly)), "{e:?}");
        let a = pid("131011");
        let e = reader.create_spaces(std::slice::from_ref(&a));
        assert!(matches!(e, Err(EngineError::ReadOnly)), "{e:?}");
        drop(reader);
        // The writer kept its epoch (and its lease: the reader's drop gave nothing back).
        writer
            .commit(vec![put(&Space::System, b"a", b"3")])
            .unwrap();
        let again = PostgresEngine::open_reader(t).unwrap();
        assert_eq!(
            again.get(&Space::System, b"a").unwrap().as_deref(),
            Some(&b"3"[..])
        );
    }

    /// A second writer waits while the first keeps committing, takes over once the first
    /// stops for longer than its lease, and the first is then fenced.
    #[test]
    #[ignore = "needs PostgreSQL: run by the test command against its cell"]
    fn a_second_writer_waits_for_the_lease_then_takes_over() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::Duration;
        let t = target("lease");
        let lease = Lease {
            term: Duration::from_millis(1500),
            patience: Duration::from_secs(60),
        };
        let first = PostgresEngine::open(t.clone(), "first", lease).unwrap();
        let taken = std::sync::Arc::new(AtomicBool::new(false));
        let second = {
            let (t, taken) = (t.clone(), std::sync::Arc::clone(&taken));
            std::thread::spawn(move || {
                let e = PostgresEngine::open(t, "second", lease).unwrap();
                taken.store(true, Ordering::SeqCst);
                e
            })
        };
        // Committing (each commit renews the lease) keeps the cell the first writer's.
        for i in 0u8..15 {
            first.commit(vec![put(&Space::System, b"n", &[i])]).unwrap();
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(
            !taken.load(Ordering::SeqCst),
            "the second writer took over from a writer that was committing"
        );
        // The first stops: the second takes over once the lease lapses.
        let second = second.join().unwrap();
        assert!(second.epoch() > first.epoch());
        let e = first.commit(vec![put(&Space::System, b"n", b"stale")]);
        assert!(matches!(e, Err(EngineError::Fenced(_))), "{e:?}");
        assert!(matches!(first.renew(), Err(EngineError::Fenced(_))));
        second
            .commit(vec![put(&Space::System, b"n", b"2")])
            .unwrap();
        second.renew().unwrap();
        // A third that will not wait is told who holds the cell.
        let impatient = Lease {
            patience: Duration::ZERO,
            ..lease
        };
        let third = PostgresEngine::open(t, "third", impatient);
        assert!(
            matches!(&third, Err(EngineError::WriterActive(h)) if h == "second"),
            "{:?}",
            third.err()
        );
    }

    /// An idle store keeps the cell (its lease thread renews it), and a store whose epoch
    /// another writer took is poisoned by its next renewal, before it tries to write.
    #[test]
    #[ignore = "needs PostgreSQL: run by the test command against its cell"]
    fn an_idle_store_keeps_the_cell_and_a_fenced_one_stops() {
        let dsn = std::env::var("KUKAKU_TEST_PG_DSN").expect("KUKAKU_TEST_PG_DSN");
        let schema = format!("t_idle_{}", std::process::id());
        let mut admin = postgres::Client::connect(&dsn, postgres::NoTls).expect("connect");
        admin
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .expect("drop");
        let t = PgTarget { dsn, schema };
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = crate::store::Paths::under(&dir.path().join("home"));
        let options = crate::store::StoreOptions {
            block_cache_bytes: 8 << 20,
            write_buffer_manager_bytes: 8 << 20,
            writer_lease: std::time::Duration::from_millis(600),
            writer_patience: std::time::Duration::ZERO,
            ..crate::store::StoreOptions::default()
        };
        let store = crate::store::Store::init_postgres(&paths, "hub.test", options, t.clone())
            .expect("init");
        std::thread::sleep(std::time::Duration::from_secs(2));
        let impatient = Lease {
            term: std::time::Duration::from_millis(600),
            patience: std::time::Duration::from_secs(1),
        };
        let other = PostgresEngine::open(t.clone(), "another writer", impatient);
        assert!(
            matches!(other, Err(EngineError::WriterActive(_))),
            "an idle store lost the cell"
        );
        assert!(!store.is_poisoned());

        // Another writer takes the epoch: the next renewal finds it and stops the store.
        admin
            .batch_execute(&format!("UPDATE {}.writer SET epoch = epoch + 1", t.schema))
            .expect("take the epoch");
        std::thread::sleep(std::time::Duration::from_secs(1));
        assert!(store.is_poisoned());
    }

    #[test]
    #[ignore = "needs PostgreSQL: run by the test command against its cell"]
    fn a_long_scan_pages_through_every_key_in_order() {
        let engine = PostgresEngine::open(target("pages"), "test", NOW).unwrap();
        let a = pid("131011");
        engine.create_spaces(std::slice::from_ref(&a)).unwrap();
        let sa = Space::Partition(a);
        let ops = (0u16..1000)
            .map(|i| put(&sa, &[b"E".as_slice(), &i.to_be_bytes()].concat(), b"v"))
            .collect();
        engine.commit(ops).unwrap();
        let forward = keys(engine.scan_prefix(&sa, b"E").unwrap());
        assert_eq!(forward.len(), 1000);
        assert!(forward.windows(2).all(|w| w[0] < w[1]));
        let reverse = keys(engine.scan(&sa, &[0xff], Dir::Reverse).unwrap());
        assert_eq!(reverse.len(), 1000);
        assert!(reverse.windows(2).all(|w| w[0] > w[1]));
    }
}

/// The loss of the cell's leader (`--features postgres`, run alone by the test command: it
/// kills a member of the cell `KUKAKU_TEST_PG_CELL` names).
#[cfg(feature = "postgres")]
mod pg_failover {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::store::engine::{Lease, PgTarget, PostgresEngine};

    const KEYS: u32 = 10;

    fn key(batch: u32, i: u32) -> Vec<u8> {
        [batch.to_be_bytes(), i.to_be_bytes()].concat()
    }

    /// Kills the leader's Patroni and then its PostgreSQL (SIGKILL both, so no one restarts
    /// it in place: `scripts/pg-cell.sh kill-leader`): the cell must elect the synchronous
    /// standby. The member's name.
    fn kill_leader(cell: &std::path::Path) -> String {
        let out = std::process::Command::new("bash")
            .args(["scripts/pg-cell.sh", "kill-leader"])
            .arg(cell)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("pg{}", String::from_utf8_lossy(&out.stdout).trim())
    }

    #[test]
    #[ignore = "kills a member of the cell: run alone by the test command"]
    fn acknowledged_commits_survive_the_loss_of_the_leader() {
        let dsn = std::env::var("KUKAKU_TEST_PG_DSN").expect("KUKAKU_TEST_PG_DSN");
        let cell = std::env::var("KUKAKU_TEST_PG_CELL").expect("KUKAKU_TEST_PG_CELL");
        let schema = format!("t_failover_{}", std::process::id());
        let lease = Lease {
            term: Duration::from_secs(30),
            patience: Duration::ZERO,
        };
        let engine = PostgresEngine::open(PgTarget { dsn, schema }, "test", lease).unwrap();
        let a = pid("131011");
        engine.create_spaces(std::slice::from_ref(&a)).unwrap();
        let sa = Space::Partition(a);

        let (mut acked, mut failed, mut unknown) = (Vec::new(), Vec::new(), Vec::new());
        let started = Instant::now();
        let mut killed: Option<(Instant, String)> = None;
        // The pause: from the first commit after the kill that did not succeed to the next
        // that did (the old leader's backends may still answer for a moment).
        let mut paused: Option<Instant> = None;
        let mut resumed: Option<Duration> = None;
        let mut acked_since = 0;
        let mut batch = 0u32;
        while acked_since < 20 {
            assert!(
                started.elapsed() < Duration::from_secs(150),
                "writes did not resume within 150 s of the leader's loss"
            );
            if killed.is_none() && acked.len() >= 50 {
                killed = Some((Instant::now(), kill_leader(std::path::Path::new(&cell))));
            }
            let ops = (0..KEYS)
                .map(|i| put(&sa, &key(batch, i), &batch.to_be_bytes()))
                .collect();
            match engine.commit(ops) {
                Ok(()) => {
                    acked.push(batch);
                    if let Some(at) = paused {
                        acked_since += 1;
                        resumed.get_or_insert(at.elapsed());
                    }
                }
                Err(e) => {
                    if killed.is_some() {
                        paused.get_or_insert_with(Instant::now);
                    }
                    if matches!(e, EngineError::Unknown(_)) {
                        unknown.push(batch);
                    } else {
                        failed.push(batch);
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
            batch += 1;
        }
        let whole = |b: u32| {
            let n = (0..KEYS)
                .filter(|i| engine.get(&sa, &key(b, *i)).unwrap().is_some())
                .count();
            u32::try_from(n).unwrap()
        };
        for b in &acked {
            assert_eq!(whole(*b), KEYS, "acknowledged batch {b} is not whole");
        }
        for b in &failed {
            assert_eq!(whole(*b), 0, "failed batch {b} left keys behind");
        }
        for b in &unknown {
            assert!([0, KEYS].contains(&whole(*b)), "batch {b} is half there");
        }
        let (_, leader) = killed.unwrap();
        println!(
            "leader {leader} lost: {} batches acknowledged and whole, {} failed and absent, {} unknown and whole or absent; writes resumed after {:.1} s",
            acked.len(),
            failed.len(),
            unknown.len(),
            resumed.unwrap_or_default().as_secs_f64()
        );
    }
}
