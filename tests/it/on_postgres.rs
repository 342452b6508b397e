//! The store on the replicated engine (issue 31, `--features postgres`): the same appends,
//! reads, proofs, verification with keys and audit bundle as on RocksDB, a reopen that finds
//! the same log, no data in the home's `data/`, and a schema that already holds an instance
//! refused. Run by the test command against its PostgreSQL cell (`KUKAKU_TEST_PG_DSN`).

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
