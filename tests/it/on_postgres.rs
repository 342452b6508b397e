//! The store on the replicated engine (issue 31, `--features postgres`): the same appends,
//! reads, proofs, verification with keys and audit bundle as on RocksDB, a reopen that finds
//! the same log, no data in the home's `data/`, and a schema that already holds an instance
//! refused; the key store in the database (a second home with the KEK alone takes over, a
//! destroy removes the wrapped keys from the database and rotates the KEK). Run by the test command against its PostgreSQL cell (`KUKAKU_TEST_PG_DSN`).

use crate::common::{pid, small};

use kukaku::crypto::{AdminScope, Kek};
use kukaku::ledger::{Kind, Seq};
use kukaku::store::{NewEntry, OpenError, Paths, PgTarget, Store, VerifyOptions};

fn target(name: &str) -> PgTarget {
    let dsn = std::env::var("KUKAKU_TEST_PG_DSN")
        .expect("KUKAKU_TEST_PG_DSN: a PostgreSQL DSN (scripts/test.sh starts a cell and sets it)");
    let schema = format!("t_{name}_{}", std::process::id());
    let mut c = postgres::Client::connect(&dsn, postgres::NoTls).unwrap();
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .unwrap();
    PgTarget { dsn, schema }
}

#[test]
#[ignore = "needs PostgreSQL: run by the test command against its cell"]
fn a_store_on_postgres_appends_verifies_exports_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(&dir.path().join("home"));
    let t = target("store");
    let store = Store::init_postgres(&paths, "hub.test", small(), t.clone()).unwrap();
    let ids = vec![pid("131011"), pid("380014")];
    store.request_partitions(&ids).unwrap();
    assert_eq!(store.provision(&mut |_, _| {}).unwrap(), 2);
    for i in 0..20 {
        let p = &ids[i % 2];
        let body = format!("entry {i}").into_bytes();
        let e = NewEntry::new(Kind::HOUSEHOLD_SNAPSHOT, 1, None, body).unwrap();
        store.append(p, vec![e]).unwrap();
    }
    let kek = Kek::load_file(&paths.kek).unwrap();
    let admin = AdminScope::from_kek(&kek);
    let scope = admin.partition(&ids[0]);
    let size = store.size(&ids[0]).unwrap();
    let last = store.read_entry(&scope, size - 1).unwrap();
    assert_eq!(&last.payload[..], b"entry 18");
    let proof = store.prove_inclusion(&ids[0], Seq(size - 1), None).unwrap();
    proof
        .verify_with_key(&store.verifier_key(&ids[0]).unwrap())
        .unwrap();
    for p in &ids {
        let rep = store
            .verify_partition(p, VerifyOptions { with_keys: true })
            .unwrap();
        assert_eq!(rep.bodies_opened, 10);
    }
    let bundle = store.export_audit(&ids, Vec::new(), &mut |_| {}).unwrap();
    let reports = kukaku::ledger::bundle::verify(&bundle[..], &|p| store.verifier_key(p)).unwrap();
    assert_eq!(reports.len(), 2);
    let checkpoint = store.checkpoint(&ids[0]).unwrap();
    drop(store);

    // Reopened: the same log, from the database; the home holds no data of its own.
    let again = Store::open_postgres(&paths, small(), t.clone()).unwrap();
    assert_eq!(again.size(&ids[0]).unwrap(), size);
    assert_eq!(again.checkpoint(&ids[0]).unwrap(), checkpoint);
    again
        .verify_partition(&ids[1], VerifyOptions { with_keys: true })
        .unwrap();
    assert!(!paths.data.join("CURRENT").exists());
    drop(again);

    // A schema that holds an instance is not made a second one.
    let other = Paths::under(&dir.path().join("other"));
    let e = Store::init_postgres(&other, "hub.test", small(), t).err();
    assert!(matches!(e, Some(OpenError::SchemaInUse(_))), "{e:?}");
}

/// Appends `n` snapshots to `p`.
fn append(store: &Store, p: &kukaku::ledger::PartitionId, n: usize, tag: &str) {
    for i in 0..n {
        let body = format!("{tag} {i}").into_bytes();
        let e = NewEntry::new(Kind::HOUSEHOLD_SNAPSHOT, 1, None, body).unwrap();
        store.append(p, vec![e]).unwrap();
    }
}

/// Copies the KEK file of `from` into a new home `to` (mode 0600), as an operator gives a
/// second machine of the cell the instance's KEK.
fn home_with_kek(from: &Paths, to: &std::path::Path) -> Paths {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).unwrap();
    let paths = Paths::under(to);
    std::fs::copy(&from.kek, &paths.kek).unwrap();
    std::fs::set_permissions(&paths.kek, std::fs::Permissions::from_mode(0o600)).unwrap();
    paths
}

#[test]
#[ignore = "needs PostgreSQL: run by the test command against its cell"]
fn a_second_machine_with_the_kek_alone_takes_over_the_cell() {
    let dir = tempfile::tempdir().unwrap();
    let a = Paths::under(&dir.path().join("a"));
    let t = target("takeover");
    let store = Store::init_postgres(&a, "hub.test", small(), t.clone()).unwrap();
    let first = pid("131011");
    store
        .request_partitions(std::slice::from_ref(&first))
        .unwrap();
    store.provision(&mut |_, _| {}).unwrap();
    append(&store, &first, 5, "from a");
    let checkpoint = store.checkpoint(&first).unwrap();
    let size = store.size(&first).unwrap();
    drop(store);

    // The keys are in the database, wrapped: neither home has a key store.
    let b = home_with_kek(&a, &dir.path().join("b"));
    let store = Store::open_postgres(&b, small(), t.clone()).unwrap();
    assert_eq!(store.checkpoint(&first).unwrap(), checkpoint);
    let rep = store
        .verify_partition(&first, VerifyOptions { with_keys: true })
        .unwrap();
    assert_eq!(rep.bodies_opened, 5);
    // A partition made by the second machine: its keys made there, in the database.
    let second = pid("380014");
    store
        .request_partitions(std::slice::from_ref(&second))
        .unwrap();
    store.provision(&mut |_, _| {}).unwrap();
    append(&store, &second, 3, "from b");
    append(&store, &first, 2, "from b");
    drop(store);
    for home in [&a, &b] {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&home.anchor)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", home.anchor.display());
        assert!(!home.key_store.exists(), "{}", home.key_store.display());
        assert!(!home.data.exists(), "{}", home.data.display());
    }

    // The first machine reads what the second wrote, with the keys the second made.
    let store = Store::open_postgres(&a, small(), t.clone()).unwrap();
    let kek = Kek::load_file(&a.kek).unwrap();
    let admin = AdminScope::from_kek(&kek);
    let last = store.size(&second).unwrap() - 1;
    let e = store.read_entry(&admin.partition(&second), last).unwrap();
    assert_eq!(&e.payload[..], b"from b 2");
    assert_eq!(store.size(&first).unwrap(), size + 2);
    drop(store);

    // A machine with another KEK opens nothing.
    let c = Paths::under(&dir.path().join("c"));
    std::fs::create_dir_all(dir.path().join("c")).unwrap();
    Kek::create_file(&c.kek).unwrap();
    let e = Store::open_postgres(&c, small(), t.clone()).err();
    assert!(matches!(e, Some(OpenError::WrongKek { .. })), "{e:?}");

    // `join-cell` with that KEK is refused and leaves its home as it was; with the
    // instance's, the home reads the cell (beside no writer here) and may serve later.
    use std::os::unix::fs::PermissionsExt as _;
    let dsn_file = dir.path().join("pg.dsn");
    std::fs::write(&dsn_file, &t.dsn).unwrap();
    std::fs::set_permissions(&dsn_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let record = kukaku::store::EngineRecord::postgres(&t.schema, &dsn_file);
    let d = Paths::under(&dir.path().join("d"));
    let e = Store::join_cell(&d, &c.kek, &record, small()).err();
    assert!(matches!(e, Some(OpenError::WrongKek { .. })), "{e:?}");
    assert!(!d.kek.exists() && !d.engine_record().exists());
    let reader = Store::join_cell(&d, &a.kek, &record, small()).unwrap();
    assert_eq!(reader.size(&first).unwrap(), size + 2);
    drop(reader);
    let writer = Store::open(&d, small()).unwrap();
    append(&writer, &first, 1, "from d");
}

#[test]
#[ignore = "needs PostgreSQL: run by the test command against its cell"]
fn a_destroy_on_the_cell_removes_the_wrapped_keys_from_the_database() {
    use kukaku::store::{DestroyScope, KeyActor, ReadError};
    let dir = tempfile::tempdir().unwrap();
    let a = Paths::under(&dir.path().join("a"));
    let t = target("destroy");
    let store = Store::init_postgres(&a, "hub.test", small(), t.clone()).unwrap();
    let (gone, kept) = (pid("131011"), pid("380014"));
    store
        .request_partitions(&[gone.clone(), kept.clone()])
        .unwrap();
    store.provision(&mut |_, _| {}).unwrap();
    append(&store, &gone, 3, "gone");
    append(&store, &kept, 3, "kept");
    let sealed = store.size(&gone).unwrap() - 1;
    let old_kek_copy = home_with_kek(&a, &dir.path().join("b"));
    let mut db = postgres::Client::connect(&t.dsn, postgres::NoTls).unwrap();
    let count_keys_of = |db: &mut postgres::Client, p: &kukaku::ledger::PartitionId| -> i64 {
        let sql = format!(
            "SELECT count(*) FROM {}.kv WHERE space = 'keys' AND position($1 in key) > 0",
            t.schema
        );
        db.query_one(&sql, &[&p.as_str().as_bytes()])
            .unwrap()
            .get(0)
    };
    assert_eq!(count_keys_of(&mut db, &gone), 1, "its DEK");

    let who = KeyActor {
        actor: "admin-cli".into(),
        reason: "retention period ended".into(),
    };
    let report = store
        .destroy(&gone, DestroyScope::Partition, gone.as_str(), who)
        .unwrap();
    assert!(report.kek.is_some(), "the KEK is rotated after a destroy");
    assert_eq!(count_keys_of(&mut db, &gone), 0);
    assert!(count_keys_of(&mut db, &kept) > 0);
    let kek = Kek::load_file(&a.kek).unwrap();
    let admin = AdminScope::from_kek(&kek);
    let err = store
        .read_entry(&admin.partition(&gone), sealed)
        .unwrap_err();
    assert!(matches!(err, ReadError::KeyDestroyed { .. }), "{err}");
    let r = store
        .verify_partition(&gone, VerifyOptions { with_keys: true })
        .unwrap();
    assert_eq!(r.bodies_shredded, 3);
    drop(store);

    // The machine still holding the KEK from before the destroy opens nothing: the keys in
    // the database are under the rotated KEK (docs/keys.md: copy the new one, destroy the
    // old copies).
    let e = Store::open_postgres(&old_kek_copy, small(), t).err();
    assert!(matches!(e, Some(OpenError::WrongKek { .. })), "{e:?}");
}

#[test]
#[ignore = "needs PostgreSQL: run by the test command against its cell"]
fn an_embedded_instance_moved_onto_the_cell_keeps_every_byte() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(&dir.path().join("home"));
    let store = Store::init(&paths, "hub.test", small()).unwrap();
    let ids = vec![pid("131011"), pid("380014")];
    store.request_partitions(&ids).unwrap();
    store.provision(&mut |_, _| {}).unwrap();
    for p in &ids {
        append(&store, p, 7, "before the move");
    }
    let checkpoints: Vec<_> = ids.iter().map(|p| store.checkpoint(p).unwrap()).collect();
    let bundle = store.export_audit(&ids, Vec::new(), &mut |_| {}).unwrap();
    let proof = store.prove_inclusion(&ids[0], Seq(3), None).unwrap();
    drop(store);

    let t = target("moved");
    let dsn_file = dir.path().join("pg.dsn");
    std::fs::write(&dsn_file, &t.dsn).unwrap();
    std::fs::set_permissions(&dsn_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let record = kukaku::store::EngineRecord::postgres(&t.schema, &dsn_file);
    let mut copied = 0;
    let (report, aside) =
        Store::move_to_cell(&paths, &record, small(), &mut |n| copied = n).unwrap();
    assert_eq!(report.partitions.len(), 2);
    assert_eq!(
        report.keys,
        1 + 1 + 2,
        "signing and witness keys, a DEK per partition"
    );
    assert!(copied >= report.system + report.keys);
    assert!(
        !paths.data.exists() && aside.iter().all(|d| d.exists()),
        "{aside:?}"
    );

    // The same bytes: the same checkpoints, proofs and audit bundle, from the cell.
    let store = Store::open(&paths, small()).unwrap();
    let again: Vec<_> = ids.iter().map(|p| store.checkpoint(p).unwrap()).collect();
    assert_eq!(again, checkpoints);
    assert_eq!(
        store.export_audit(&ids, Vec::new(), &mut |_| {}).unwrap(),
        bundle
    );
    assert_eq!(store.prove_inclusion(&ids[0], Seq(3), None).unwrap(), proof);
    let reports = kukaku::ledger::bundle::verify(&bundle[..], &|p| store.verifier_key(p)).unwrap();
    assert_eq!(reports.len(), 2);
    for p in &ids {
        let rep = store
            .verify_partition(p, VerifyOptions { with_keys: true })
            .unwrap();
        assert_eq!(rep.bodies_opened, 7);
        append(&store, p, 1, "after the move");
    }
    drop(store);

    // A schema that holds an instance takes no second copy.
    let other = Paths::under(&dir.path().join("other"));
    drop(Store::init(&other, "other.test", small()).unwrap());
    let e = Store::move_to_cell(&other, &record, small(), &mut |_| {}).unwrap_err();
    assert!(
        matches!(e, kukaku::store::MigrateError::SchemaNotEmpty(_)),
        "{e}"
    );
    assert!(
        other.data.join("CURRENT").exists(),
        "a refused move leaves the home as it was"
    );
}
