//! Online backup and verified restore (issue 30 item 1): a backup taken while HTTP imports
//! run restores every import acknowledged before it and no half of one after it; a later
//! backup is incremental and restores the later state; retention keeps the newest; a
//! destroyed partition's keys do not come back from an older backup; the KEK is in no
//! backup file.

use crate::common;
use common::{pid, small, walk};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use kukaku::api::{self, AppState, Limits, ServerRole};
use kukaku::crypto::credential::{Reach, Role};
use kukaku::ledger::{Kind, PartitionId};
use kukaku::store::backup::{self, BackupError};
use kukaku::store::{DestroyScope, KeyActor, NewEntry, OpenError, Paths, Store, StoreOptions};
use tower::ServiceExt;

fn instance(dir: &std::path::Path) -> (Paths, Arc<Store>, PartitionId, PartitionId) {
    let paths = Paths::under(&dir.join("home"));
    std::fs::create_dir_all(dir.join("home")).unwrap();
    let store = Store::init(&paths, "hub.test", small()).unwrap();
    let (a, b) = (pid("131011"), pid("380014"));
    store.request_partitions(&[a.clone(), b.clone()]).unwrap();
    store.provision(&mut |_, _| {}).unwrap();
    (paths, Arc::new(store), a, b)
}

fn put(store: &Store, p: &PartitionId, n: usize) {
    for i in 0..n {
        let e = NewEntry::new(
            Kind::HOUSEHOLD_SNAPSHOT,
            1,
            None,
            format!("entry {i}").into(),
        )
        .unwrap();
        store.append(p, vec![e]).unwrap();
    }
}

fn backup_now(store: &Store, to: &std::path::Path, keep: Option<usize>) -> backup::BackupReport {
    store.backup(to, keep, &mut |_, _, _| {}).unwrap()
}

/// Restores backup `id` into `<dir>/<name>` with the instance's KEK file.
fn restore(
    dir: &std::path::Path,
    from: &std::path::Path,
    id: Option<u32>,
    kek: &std::path::Path,
    name: &str,
) -> Result<(Paths, backup::RestoreReport), BackupError> {
    restore_checked(dir, from, id, kek, name, &backup::RestoreChecks::default())
}

fn restore_checked(
    dir: &std::path::Path,
    from: &std::path::Path,
    id: Option<u32>,
    kek: &std::path::Path,
    name: &str,
    checks: &backup::RestoreChecks,
) -> Result<(Paths, backup::RestoreReport), BackupError> {
    let home = dir.join(name);
    let paths = Paths::under(&home);
    let kek = backup::RestoredKek::File(kek.to_owned());
    backup::restore(from, id, (&home, &paths), &kek, checks).map(|r| (paths, r))
}

/// A kukaku-audit state of `p` at the store's current size.
fn verified_now(store: &Store, p: &PartitionId) -> backup::Verified {
    let report = store
        .verify_partition(p, kukaku::store::VerifyOptions { with_keys: false })
        .unwrap();
    let state = serde_json::json!({
        "format": "kukaku-audit-state v1",
        "logs": {
            format!("hub.test/{p}"): {
                "size": report.entries,
                "root": report.root.to_base64(),
                "checkpoint": store.checkpoint(p).unwrap().unwrap(),
            }
        }
    });
    serde_json::from_value(state).unwrap()
}

fn import_body(tid: &str, seed: u64) -> String {
    let files = kukaku::flows::sample::transmission("131011", tid, 3, seed);
    serde_json::json!({
        "transmission_id": tid,
        "encoding": "utf-8",
        "setai_file": B64.encode(&files.setai),
        "kojin_file": B64.encode(&files.kojin),
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_http_imports_restores_every_import_acknowledged_before_it() {
    let dir = tempfile::tempdir().unwrap();
    // The store's writes block: set up off the async workers.
    let (paths, store, a, token) = tokio::task::block_in_place(|| {
        let (paths, store, a, _) = instance(dir.path());
        let (token, _) = store
            .issue_credential(
                Role::Municipality,
                Reach::Partition(a.clone()),
                "clerk",
                kukaku::store::now_unix_ms() + 3_600_000,
            )
            .unwrap();
        (paths, store, a, token.to_text().to_string())
    });
    let app = api::router(
        AppState::new(Arc::clone(&store), ServerRole::Hub),
        Limits::default(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let load = {
        let (app, stop, acked) = (app.clone(), Arc::clone(&stop), Arc::clone(&acked));
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let tid = format!("T-BK-{i}");
                let res = app
                    .clone()
                    .oneshot(
                        Request::post("/v1/transmissions")
                            .header("authorization", format!("Bearer {token}"))
                            .header("content-type", "application/json")
                            .body(Body::from(import_body(&tid, i)))
                            .unwrap(),
                    )
                    .await
                    .unwrap();
                assert_eq!(res.status(), StatusCode::CREATED, "{tid}");
                acked.lock().unwrap().push(tid);
                i += 1;
            }
        })
    };
    while acked.lock().unwrap().len() < 5 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Every import answered before the backup starts must be in it.
    let before: Vec<String> = acked.lock().unwrap().clone();
    let to = dir.path().join("backups");
    let report = {
        let (store, to) = (Arc::clone(&store), to.clone());
        tokio::task::spawn_blocking(move || backup_now(&store, &to, None))
            .await
            .unwrap()
    };
    while acked.lock().unwrap().len() < before.len() + 3 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    let live_size = store.size(&a).unwrap();
    let manifest_size = report.manifest.partitions[0].size;
    assert!(
        manifest_size < live_size,
        "imports went on after the backup"
    );

    let (restored_paths, restored) = tokio::task::spawn_blocking({
        let (dir, to, kek) = (dir.path().to_owned(), to.clone(), paths.kek.clone());
        move || restore(&dir, &to, None, &kek, "restored").unwrap()
    })
    .await
    .unwrap();
    assert_eq!(restored.manifest, report.manifest);
    drop(app);
    let r = tokio::task::block_in_place(|| Store::open(&restored_paths, small()).unwrap());
    assert_eq!(r.size(&a).unwrap(), manifest_size);
    for tid in &before {
        let t = r.transmission(&a, tid).unwrap();
        assert!(t.is_some(), "{tid} was acknowledged before the backup");
    }
    // Nothing is half there: every transmission the restored log holds is whole in it.
    for (tid, t) in r.transmissions(&a).unwrap() {
        assert!(t.first_seq + t.count <= manifest_size, "{tid} is cut");
    }
}

#[test]
fn backups_are_incremental_kept_by_retention_and_restore_the_state_they_name() {
    let dir = tempfile::tempdir().unwrap();
    let (paths, store, a, b) = instance(dir.path());
    put(&store, &a, 20);
    let to = dir.path().join("backups");
    // The copy of data/ reports bytes against the checkpoint's size and ends at it.
    let mut seen = Vec::new();
    let first = store
        .backup(&to, None, &mut |pos, len, what| {
            seen.push((pos, len, what.to_owned()))
        })
        .unwrap();
    let bytes: Vec<_> = seen
        .iter()
        .filter(|s| s.2.starts_with("data/ bytes"))
        .collect();
    let (_, total, _) = bytes.last().unwrap();
    assert!(*total > 0, "{seen:?}");
    assert!(
        bytes.iter().all(|(pos, len, _)| pos <= len && len == total),
        "{seen:?}"
    );
    assert_eq!(bytes.last().unwrap().0, *total, "{seen:?}");
    assert_eq!(seen.last().unwrap(), &(4, 4, "done".to_owned()));
    put(&store, &a, 30);
    put(&store, &b, 5);
    let second = backup_now(&store, &to, None);
    assert!(second.manifest.backup_id > first.manifest.backup_id);
    let size = |m: &backup::BackupManifest, p: &PartitionId| {
        m.partitions
            .iter()
            .find(|x| x.partition == p.as_str())
            .unwrap()
            .size
    };
    assert_eq!(size(&second.manifest, &a), size(&first.manifest, &a) + 30);
    assert_eq!(backup::list_backups(&to).unwrap().len(), 2);

    let (p1, _) = restore(
        dir.path(),
        &to,
        Some(first.manifest.backup_id),
        &paths.kek,
        "one",
    )
    .unwrap();
    let (p2, _) = restore(dir.path(), &to, None, &paths.kek, "two").unwrap();
    let one = Store::open(&p1, small()).unwrap();
    let two = Store::open(&p2, small()).unwrap();
    assert_eq!(one.size(&a).unwrap(), size(&first.manifest, &a));
    assert_eq!(two.size(&a).unwrap(), store.size(&a).unwrap());
    assert_eq!(two.size(&b).unwrap(), store.size(&b).unwrap());
    assert_eq!(two.checkpoint(&a).unwrap(), store.checkpoint(&a).unwrap());

    // A restore never writes into an existing home.
    let again = restore(dir.path(), &to, None, &paths.kek, "two");
    assert!(
        matches!(again, Err(BackupError::TargetExists(_))),
        "{again:?}"
    );

    // Retention: keep the newest one.
    let third = backup_now(&store, &to, Some(1));
    assert_eq!(third.kept, vec![third.manifest.backup_id]);
    let left = backup::list_backups(&to).unwrap();
    assert_eq!(left.len(), 1);
    let gone = restore(
        dir.path(),
        &to,
        Some(first.manifest.backup_id),
        &paths.kek,
        "gone",
    );
    assert!(matches!(gone, Err(BackupError::NoBackup(_))), "{gone:?}");
}

#[test]
fn a_destroyed_partition_does_not_come_back_and_no_backup_holds_the_kek() {
    let dir = tempfile::tempdir().unwrap();
    let (paths, store, a, b) = instance(dir.path());
    put(&store, &a, 5);
    put(&store, &b, 5);
    let to = dir.path().join("backups");
    let before = backup_now(&store, &to, None);
    let kek_before = std::fs::read(&paths.kek).unwrap();
    let who = KeyActor {
        actor: "test".into(),
        reason: "retention ended".into(),
    };
    store
        .destroy(&b, DestroyScope::Partition, "380014", who)
        .unwrap();
    // The destroy rotated the KEK: the backup from before it needs the old one, which is
    // gone; with the current KEK the backed-up key store does not open.
    let after = restore(
        dir.path(),
        &to,
        Some(before.manifest.backup_id),
        &paths.kek,
        "old",
    );
    assert!(
        matches!(after, Err(BackupError::Open(OpenError::WrongKek { .. }))),
        "{after:?}"
    );
    // No file of the backup directory holds either KEK file's bytes.
    let kek_now = std::fs::read(&paths.kek).unwrap();
    assert_ne!(kek_now, kek_before);
    for file in walk(&to) {
        let bytes = std::fs::read(&file).unwrap();
        for kek in [&kek_before, &kek_now] {
            assert!(
                !bytes.windows(kek.len()).any(|w| w == kek.as_slice()),
                "{} holds a KEK",
                file.display()
            );
        }
    }
    // A backup after the destroy restores, and the destroyed partition stays shredded.
    drop(store);
    let store = Store::open(&paths, StoreOptions::default()).unwrap();
    let later = backup_now(&store, &to, None);
    let (restored, _) = restore(
        dir.path(),
        &to,
        Some(later.manifest.backup_id),
        &paths.kek,
        "new",
    )
    .unwrap();
    drop(store);
    let r = Store::open(&restored, small()).unwrap();
    let status = r.key_status(&b).unwrap();
    assert!(status.iter().all(|k| k.status == "destroyed"), "{status:?}");
}

#[test]
fn a_restore_must_extend_what_auditors_verified_or_say_it_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let (paths, store, a, _) = instance(dir.path());
    put(&store, &a, 10);
    let verified_at_backup = verified_now(&store, &a);
    let to = dir.path().join("backups");
    let taken = backup_now(&store, &to, None);
    put(&store, &a, 10);
    let verified_later = verified_now(&store, &a);
    let checks = |verified: backup::Verified, accept_older: bool| backup::RestoreChecks {
        verified: Some(verified),
        accept_older,
        actor: "test".into(),
        reason: "drill".into(),
        live_proofs: Vec::new(),
    };

    // The backup extends what was verified at its size: restored.
    restore_checked(
        dir.path(),
        &to,
        None,
        &paths.kek,
        "same",
        &checks(verified_at_backup, false),
    )
    .unwrap();

    // Auditors saw more than the backup holds: refused, nothing written.
    let older = restore_checked(
        dir.path(),
        &to,
        None,
        &paths.kek,
        "older",
        &checks(verified_later.clone(), false),
    );
    assert!(
        matches!(
            older,
            Err(BackupError::OlderThanVerified {
                backup: 12,
                verified: 22,
                ..
            })
        ),
        "{older:?}"
    );
    assert!(!dir.path().join("older").exists());

    // On purpose: restored, and the partition records it in a `restore` key event.
    let (p, _) = restore_checked(
        dir.path(),
        &to,
        None,
        &paths.kek,
        "accepted",
        &checks(verified_later, true),
    )
    .unwrap();
    let r = Store::open(&p, small()).unwrap();
    assert_eq!(r.size(&a).unwrap(), taken.manifest.partitions[0].size + 1);
    let last = r
        .envelopes(&a, kukaku::ledger::Seq(12), kukaku::ledger::Seq(13))
        .unwrap();
    let env = kukaku::ledger::Envelope::decode(&last[0]).unwrap();
    assert_eq!(env.header.kind, Kind::KEY_EVENT);
    let kukaku::ledger::Body::Open { payload, .. } = env.body else {
        panic!("a key event is open");
    };
    let event = kukaku::ledger::payload::KeyEvent::decode(&payload).unwrap();
    assert_eq!(event.event.name(), "restore");
    assert_eq!(event.count, 10);
    assert!(
        event.reason.starts_with("drill; restored from backup"),
        "{}",
        event.reason
    );

    // A verified root the backup does not extend (another history): refused, home removed.
    let mut forged = verified_now(&store, &a);
    let log = forged.logs.values_mut().next().unwrap();
    log.size = 5;
    log.root = kukaku::ledger::Hash::ZERO.to_base64();
    let fork = restore_checked(
        dir.path(),
        &to,
        None,
        &paths.kek,
        "fork",
        &checks(forged, false),
    );
    assert!(
        matches!(fork, Err(BackupError::NotExtending { size: 5, .. })),
        "{fork:?}"
    );
    assert!(!dir.path().join("fork").exists());
}

/// `--live-proof`: a consistency proof from the live instance proves the backup's log a
/// prefix of the live one (the restore says so, and the `restore` event records it); a proof
/// from another size, a tampered proof, another instance's log and a log the backup does not
/// hold all fail the restore, and the new home is removed.
#[test]
fn a_restore_proves_the_backup_a_prefix_of_the_live_log() {
    use kukaku::ledger::TreeSize;
    let dir = tempfile::tempdir().unwrap();
    let (paths, store, a, _) = instance(dir.path());
    put(&store, &a, 10);
    let to = dir.path().join("backups");
    let taken = backup_now(&store, &to, None);
    let at_backup = taken.manifest.partitions[0].size;
    assert_eq!(taken.manifest.partitions[0].partition, a.to_string());
    put(&store, &a, 10);
    let live = verified_now(&store, &a);
    let proof = store
        .prove_consistency(&a, TreeSize(at_backup), None)
        .unwrap();
    let checks = |proof: kukaku::ledger::proof_json::ConsistencyProofJson| backup::RestoreChecks {
        verified: Some(live.clone()),
        accept_older: true,
        actor: "test".into(),
        reason: "drill".into(),
        live_proofs: vec![proof],
    };
    let attempt = |name: &str, proof| {
        restore_checked(dir.path(), &to, None, &paths.kek, name, &checks(proof))
    };

    let (restored, report) = attempt("proven", proof.clone()).unwrap();
    assert_eq!(
        report.prefixes,
        vec![backup::ProvenPrefix {
            partition: a.clone(),
            backup: at_backup,
            live: at_backup + 10,
        }]
    );
    let r = Store::open(&restored, small()).unwrap();
    let last = r
        .envelopes(
            &a,
            kukaku::ledger::Seq(at_backup),
            kukaku::ledger::Seq(at_backup + 1),
        )
        .unwrap();
    let kukaku::ledger::Body::Open { payload, .. } =
        kukaku::ledger::Envelope::decode(&last[0]).unwrap().body
    else {
        panic!("a key event is open");
    };
    let event = kukaku::ledger::payload::KeyEvent::decode(&payload).unwrap();
    assert!(
        event.reason.ends_with(&format!(
            "proven a prefix of the live log at size {}",
            at_backup + 10
        )),
        "{}",
        event.reason
    );

    let from_elsewhere = store
        .prove_consistency(&a, TreeSize(at_backup - 1), None)
        .unwrap();
    let e = attempt("from-elsewhere", from_elsewhere);
    assert!(
        matches!(e, Err(BackupError::LiveProofFrom { from, .. }) if from == at_backup - 1),
        "{e:?}"
    );

    let mut tampered = proof.clone();
    tampered.proof.as_mut().unwrap()[0] = kukaku::ledger::Hash::ZERO.to_base64();
    let e = attempt("tampered", tampered);
    assert!(matches!(e, Err(BackupError::NotPrefix { .. })), "{e:?}");

    let other_dir = tempfile::tempdir().unwrap();
    let (_, other, other_a, _) = instance(other_dir.path());
    put(&other, &other_a, 20);
    let forked = other
        .prove_consistency(&other_a, TreeSize(at_backup), None)
        .unwrap();
    let e = attempt("other-instance", forked);
    assert!(matches!(e, Err(BackupError::NotPrefix { .. })), "{e:?}");

    let mut elsewhere = proof;
    let note = elsewhere.checkpoint.take().unwrap();
    elsewhere.checkpoint = Some(note.replacen("hub.test/", "hub.other/", 1));
    let e = attempt("not-in-backup", elsewhere);
    assert!(matches!(e, Err(BackupError::LiveProofLog(_))), "{e:?}");

    for name in [
        "from-elsewhere",
        "tampered",
        "other-instance",
        "not-in-backup",
    ] {
        assert!(!dir.path().join(name).exists(), "{name}");
    }
}
