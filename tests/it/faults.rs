//! Fault injection below the store (issue 10): a failed data or key-store write poisons the
//! store — it refuses every write with a clear error until reopened, never acknowledges what
//! is not durable, and after a reopen the log verifies with every acknowledged entry.

use crate::common;

use common::{pid, small};
use kukaku::crypto::{AdminScope, Kek};
use kukaku::ledger::Kind;
use kukaku::store::hooks::{FaultPlan, TestHooks};
use kukaku::store::{AppendError, KeyActor, NewEntry, Paths, Store, StoreOptions, VerifyOptions};

fn entry(body: &str) -> Vec<NewEntry> {
    vec![NewEntry::new(Kind::HOUSEHOLD_SNAPSHOT, 1, None, body.as_bytes().to_vec()).unwrap()]
}

fn with_faults(faults: std::sync::Arc<FaultPlan>) -> StoreOptions {
    StoreOptions {
        hooks: TestHooks {
            faults: Some(faults),
            ..TestHooks::default()
        },
        ..small()
    }
}

#[test]
fn a_failed_data_write_poisons_until_reopen_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(dir.path());
    let p = pid("131011");
    {
        let store = crate::common::init_store(&paths, "hub.test", small()).unwrap();
        store.request_partitions(std::slice::from_ref(&p)).unwrap();
        store.provision(&mut |_, _| {}).unwrap();
    }
    let store = Store::open(&paths, with_faults(FaultPlan::new(3, u64::MAX))).unwrap();
    // Four threads append until the injected failure; every Ok is an acknowledged entry.
    let acked: Vec<(u64, String)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let (store, p) = (&store, &p);
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for i in 0..50 {
                        let body = format!("t{t} i{i}");
                        match store.append(p, entry(&body)) {
                            Ok(r) => mine.push((r.first_seq, body)),
                            Err(AppendError::Poisoned) => break,
                            Err(e) => panic!("unexpected error: {e}"),
                        }
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert!(
        !acked.is_empty(),
        "the writes before the fault were acknowledged"
    );
    assert!(store.is_poisoned());
    let err = store.append(&p, entry("after")).unwrap_err();
    assert!(matches!(err, AppendError::Poisoned), "{err}");
    assert!(err.to_string().contains("until it is reopened"), "{err}");
    let who = KeyActor {
        actor: "admin-cli".into(),
        reason: "test".into(),
    };
    assert!(
        store.rotate_deks(&p, who).is_err(),
        "key operations are refused too"
    );
    // Reads still work while poisoned.
    let kek = Kek::load_file(&paths.kek).unwrap();
    let scope = AdminScope::from_kek(&kek).partition(&p);
    for (seq, body) in &acked {
        assert_eq!(
            &store.read_entry(&scope, *seq).unwrap().payload[..],
            body.as_bytes()
        );
    }
    drop(store);
    let store = Store::open(&paths, small()).unwrap();
    store
        .verify_partition(&p, VerifyOptions { with_keys: true })
        .unwrap();
    for (seq, body) in &acked {
        assert_eq!(
            &store.read_entry(&scope, *seq).unwrap().payload[..],
            body.as_bytes()
        );
    }
    store.append(&p, entry("after reopen")).unwrap();
}

#[test]
fn a_failed_key_store_write_poisons_before_any_ciphertext_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(dir.path());
    let p = pid("131011");
    let size = {
        let store = crate::common::init_store(&paths, "hub.test", small()).unwrap();
        store.request_partitions(std::slice::from_ref(&p)).unwrap();
        store.provision(&mut |_, _| {}).unwrap();
        store.append(&p, entry("before")).unwrap().size
    };
    // The next key-store write fails: a rotation's new DEK never becomes durable, so no
    // entry under it may be written either.
    let store = Store::open(&paths, with_faults(FaultPlan::new(u64::MAX, 0))).unwrap();
    let who = KeyActor {
        actor: "admin-cli".into(),
        reason: "test".into(),
    };
    assert!(matches!(
        store.rotate_deks(&p, who),
        Err(AppendError::Poisoned)
    ));
    assert!(matches!(
        store.append(&p, entry("x")),
        Err(AppendError::Poisoned)
    ));
    drop(store);
    let store = Store::open(&paths, small()).unwrap();
    assert_eq!(
        store.size(&p).unwrap(),
        size,
        "nothing of the failed batch is visible"
    );
    store
        .verify_partition(&p, VerifyOptions { with_keys: true })
        .unwrap();
    assert_eq!(
        store.key_status(&p).unwrap().len(),
        1,
        "no half-made key version"
    );
}
