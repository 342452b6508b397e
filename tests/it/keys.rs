//! Key management (issue 8): KEK rotation, re-encryption, retirement and destruction, under
//! load and across crashes. Every step leaves key events; leaves and checkpoints never move.

use crate::common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{pid, small};
use kukaku::crypto::{AdminScope, Kek};
use kukaku::ledger::payload::KeyEvent;
use kukaku::ledger::{Body, Envelope, Hash, Kind, PartitionId};
use kukaku::ledger::{Seq, TreeSize};
use kukaku::store::{
    AppendError, DestroyScope, KeyActor, KeyAdminError, NewEntry, Paths, ReadError, Store,
    StoreOptions, VerifyOptions,
};

fn who(reason: &str) -> KeyActor {
    KeyActor {
        actor: "admin-cli".into(),
        reason: reason.into(),
    }
}

fn setup(dir: &Path, opts: StoreOptions) -> (Paths, Store, Vec<PartitionId>) {
    let paths = Paths::under(dir);
    let store = crate::common::init_store(&paths, "hub.test", opts).unwrap();
    let ids = vec![pid("131011"), pid("380014")];
    store.request_partitions(&ids).unwrap();
    store.provision(&mut |_, _| {}).unwrap();
    (paths, store, ids)
}

fn put(store: &Store, p: &PartitionId, kind: Kind, body: &str) -> (u64, Hash) {
    let r = store
        .append(
            p,
            vec![NewEntry::new(kind, 1, None, body.as_bytes().to_vec()).unwrap()],
        )
        .unwrap();
    r.entries[0]
}

fn events(store: &Store, p: &PartitionId) -> Vec<KeyEvent> {
    store
        .envelopes(p, Seq(0), Seq(store.size(p).unwrap()))
        .unwrap()
        .iter()
        .map(|r| Envelope::decode(r).unwrap())
        .filter(|e| e.header.kind == Kind::KEY_EVENT)
        .map(|e| match e.body {
            Body::Open { payload, .. } => KeyEvent::decode(&payload).unwrap(),
            Body::Sealed { .. } => panic!("a sealed key event"),
        })
        .collect()
}

fn named(store: &Store, p: &PartitionId, name: &str) -> Vec<KeyEvent> {
    events(store, p)
        .into_iter()
        .filter(|e| e.event.name() == name)
        .collect()
}

fn leaves(store: &Store, p: &PartitionId) -> Vec<Hash> {
    store
        .envelopes(p, Seq(0), Seq(store.size(p).unwrap()))
        .unwrap()
        .iter()
        .map(|r| Envelope::decode(r).unwrap().leaf_hash())
        .collect()
}

fn verify_all(store: &Store, ids: &[PartitionId]) {
    for p in ids {
        store
            .verify_partition(p, VerifyOptions { with_keys: true })
            .unwrap();
    }
}

fn kek_fingerprint(paths: &Paths) -> String {
    Kek::load_file(&paths.kek).unwrap().fingerprint()
}

/// Rotating the KEK, the DEKs and re-encrypting while four threads append and read: no
/// failed read or append, leaves and earlier checkpoints unchanged, every body opens.
#[test]
fn rotation_and_reencryption_under_load_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (paths, store, ids) = setup(dir.path(), small());
    let admin_kek = Kek::load_file(&paths.kek).unwrap();
    let admin = AdminScope::from_kek(&admin_kek);
    let mut written = Vec::new();
    for i in 0..300 {
        let p = &ids[i % 2];
        written.push((
            p.clone(),
            put(
                store_ref(&store),
                p,
                Kind::HOUSEHOLD_SNAPSHOT,
                &format!("pre {i}"),
            ),
            format!("pre {i}"),
        ));
    }
    let before: Vec<(PartitionId, Vec<Hash>, String)> = ids
        .iter()
        .map(|p| {
            (
                p.clone(),
                leaves(&store, p),
                store.checkpoint(p).unwrap().unwrap(),
            )
        })
        .collect();
    let old_kek = kek_fingerprint(&paths);
    verify_all(&store, &ids);
    let stop = AtomicBool::new(false);
    // Stops the workers however this thread leaves the scope (a failed assert included).
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let during = std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let mut workers = Vec::new();
        for t in 0..4 {
            let (store, ids, stop, admin) = (&store, &ids, &stop, &admin);
            workers.push(s.spawn(move || {
                let mut mine = Vec::new();
                let mut i = 0usize;
                while !stop.load(Ordering::SeqCst) || i < 20 {
                    let p = &ids[(t + i) % 2];
                    let body = format!("load {t} {i}");
                    let (seq, leaf) = put(store, p, Kind::HOUSEHOLD_SNAPSHOT, &body);
                    mine.push((p.clone(), (seq, leaf), body));
                    // Read back something old and something new.
                    let (op, (oseq, _), obody) = &mine[i / 2];
                    let e = store.read_entry(&admin.partition(op), *oseq).unwrap();
                    assert_eq!(&e.payload[..], obody.as_bytes());
                    i += 1;
                }
                mine
            }));
        }
        for p in &ids {
            store
                .rotate_deks(p, who("rotate before re-encryption"))
                .unwrap();
        }
        let r = store.rotate_kek(who("annual KEK rotation")).unwrap();
        assert_eq!(
            (r.old_fingerprint.as_str(), r.partitions),
            (old_kek.as_str(), 2)
        );
        for p in &ids {
            let mut steps = 0;
            let done = store
                .reencrypt(p, who("move to current keys"), 64, &mut |_| {
                    steps += 1;
                    if steps == 2 {
                        // During the job: an audit bundle verifies, and so does the log.
                        let bundle = store.export_audit(&ids, Vec::new(), &mut |_| {}).unwrap();
                        kukaku::ledger::bundle::verify(&bundle[..], &|q| store.verifier_key(q))
                            .unwrap();
                        store
                            .verify_partition(p, VerifyOptions { with_keys: true })
                            .unwrap();
                    }
                    true
                })
                .unwrap();
            assert!(done.done && done.moved >= 150, "{done:?}");
            assert!(
                steps > 1,
                "re-encryption ran in steps, appends between them"
            );
        }
        stop.store(true, Ordering::SeqCst);
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect::<Vec<_>>()
    });
    written.extend(during);
    // Nothing moved in the tree; every acknowledged entry reads back.
    for (p, old_leaves, checkpoint) in &before {
        let now = leaves(&store, p);
        assert_eq!(&now[..old_leaves.len()], &old_leaves[..]);
        let size = old_leaves.len() as u64;
        assert_eq!(&store.checkpoint_at(p, size).unwrap(), checkpoint);
    }
    for (p, (seq, leaf), body) in &written {
        let e = store.read_entry(&admin.partition(p), *seq).unwrap();
        assert_eq!((&e.leaf_hash, &e.payload[..]), (leaf, body.as_bytes()));
    }
    // Old versions seal nothing any more, and can be retired.
    for p in &ids {
        for k in store.key_status(p).unwrap() {
            if k.status == "previous" {
                assert_eq!(k.entries, 0, "{k:?}");
                store.retire(p, k.key_id, who("no entry left")).unwrap();
            }
        }
        assert_eq!(named(&store, p, "rewrap").len(), 1);
        assert_eq!(named(&store, p, "reencrypt_done").len(), 1);
        assert!(!named(&store, p, "retire").is_empty());
    }
    verify_all(&store, &ids);
    drop(store);
    // The new KEK file is the only one, and it opens everything.
    assert_ne!(kek_fingerprint(&paths), old_kek);
    assert!(!dir.path().join("kek.key.next").exists());
    let store = Store::open(&paths, small()).unwrap();
    verify_all(&store, &ids);
}

fn store_ref(s: &Store) -> &Store {
    s
}

/// A KEK rotation cut off after each of its durable steps ends, at the next open, with one
/// KEK that opens every key, and exactly one `rewrap` event per partition if it committed.
#[test]
fn interrupted_kek_rotation_is_finished_or_undone_at_open() {
    for steps in 1..=4u8 {
        let dir = tempfile::tempdir().unwrap();
        let (paths, store, ids) = setup(dir.path(), small());
        let seqs: Vec<_> = ids
            .iter()
            .map(|p| {
                (
                    p.clone(),
                    put(&store, p, Kind::HOUSEHOLD_SNAPSHOT, "kept").0,
                )
            })
            .collect();
        let old = kek_fingerprint(&paths);
        store.rotate_kek_interrupted(who("cut off"), steps).unwrap();
        drop(store);
        let store = Store::open(&paths, small()).unwrap();
        let now = kek_fingerprint(&paths);
        assert_eq!(now == old, steps == 1, "steps {steps}");
        assert!(!dir.path().join("kek.key.next").exists(), "steps {steps}");
        let kek = Kek::load_file(&paths.kek).unwrap();
        let admin = AdminScope::from_kek(&kek);
        for (p, seq) in &seqs {
            let e = store.read_entry(&admin.partition(p), *seq).unwrap();
            assert_eq!(&e.payload[..], b"kept");
            let rewraps = named(&store, p, "rewrap");
            assert_eq!(rewraps.len(), usize::from(steps >= 2), "steps {steps}");
            if steps == 2 {
                assert_eq!(rewraps[0].actor, "system", "written at open");
            }
        }
        // Rotating again works from the recovered state.
        store.rotate_kek(who("again")).unwrap();
        verify_all(&store, &ids);
    }
}

/// Re-encryption stopped after one step (as by a crash or Ctrl-C) resumes at its cursor.
#[test]
fn interrupted_reencryption_resumes_at_its_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let (paths, store, ids) = setup(dir.path(), small());
    let p = &ids[0];
    for i in 0..100 {
        put(&store, p, Kind::HOUSEHOLD_SNAPSHOT, &format!("e{i}"));
    }
    store.rotate_deks(p, who("before re-encryption")).unwrap();
    let first = store.reencrypt(p, who("move"), 30, &mut |_| false).unwrap();
    assert!(
        !first.done && first.next_seq == 30 && first.moved > 0,
        "{first:?}"
    );
    // Retiring the old version is refused while entries still use it.
    let old = store
        .key_status(p)
        .unwrap()
        .into_iter()
        .find(|k| k.status == "previous")
        .unwrap();
    let err = store.retire(p, old.key_id, who("too early")).unwrap_err();
    assert!(
        matches!(err, KeyAdminError::InUse { entries, .. } if entries > 0),
        "{err}"
    );
    drop(store);
    let store = Store::open(&paths, small()).unwrap();
    let at = store.reencrypt_status(p).unwrap().unwrap();
    assert_eq!((at.next_seq, at.moved), (first.next_seq, first.moved));
    let done = store.reencrypt(p, who("move"), 30, &mut |_| true).unwrap();
    assert!(done.done, "{done:?}");
    assert_eq!(done.moved, 100, "every snapshot moved once");
    assert!(store.reencrypt_status(p).unwrap().is_none());
    let progress = named(&store, p, "reencrypt_progress");
    assert_eq!(
        progress.len(),
        1,
        "one start event, none repeated on resume"
    );
    assert_eq!(named(&store, p, "reencrypt_done")[0].count, 100);
    store.retire(p, old.key_id, who("moved")).unwrap();
    // Retired: nothing left to retire, and the current version cannot be.
    assert!(store.retire(p, old.key_id, who("twice")).is_err());
    let current = store
        .key_status(p)
        .unwrap()
        .into_iter()
        .find(|k| k.status == "current")
        .unwrap();
    let err = store.retire(p, current.key_id, who("current")).unwrap_err();
    assert!(err.to_string().contains("only a previous version"), "{err}");
    // A second job finds nothing to move.
    let again = store.reencrypt(p, who("again"), 30, &mut |_| true).unwrap();
    assert_eq!((again.done, again.moved), (true, 0));
    verify_all(&store, &ids);
}

fn files_under(dir: &Path, out: &mut Vec<Vec<u8>>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(std::fs::read(&path).unwrap());
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Destroying a partition's keys: its bodies read as "key destroyed", its proofs and the
/// whole log still verify, sealed writes are refused, the other partition is untouched, and
/// no copy of the destroyed wrapped keys (nor the KEK that wrapped them) is left on disk.
#[test]
fn destroy_shreds_a_partition_and_keeps_proofs() {
    let dir = tempfile::tempdir().unwrap();
    let (paths, store, ids) = setup(dir.path(), small());
    let (gone, kept) = (&ids[0], &ids[1]);
    let seq = put(&store, gone, Kind::HOUSEHOLD_SNAPSHOT, "to be shredded").0;
    let kept_seq = put(&store, kept, Kind::HOUSEHOLD_SNAPSHOT, "stays").0;
    store.rotate_deks(gone, who("two versions")).unwrap();
    put(&store, gone, Kind::HOUSEHOLD_SNAPSHOT, "second version");
    store.index_key(gone).unwrap();
    let leaves_before = leaves(&store, gone);
    let old_kek_text = std::fs::read_to_string(&paths.kek).unwrap();
    let old_kek_b64 = old_kek_text.split(' ').nth(1).unwrap().trim().to_owned();
    drop(store);
    // The wrapped records that must vanish, read raw from the key store.
    let wrapped: Vec<Vec<u8>> = {
        let ks =
            rocksdb::DB::open_for_read_only(&rocksdb::Options::default(), &paths.key_store, false)
                .unwrap();
        ks.iterator(rocksdb::IteratorMode::Start)
            .map(|kv| kv.unwrap())
            .filter(|(k, _)| {
                (k.starts_with(b"D") || k.starts_with(b"X"))
                    && contains(k, gone.as_str().as_bytes())
            })
            .map(|(_, v)| v.to_vec())
            .collect()
    };
    assert_eq!(wrapped.len(), 3, "two DEK versions and the index key");
    let store = Store::open(&paths, small()).unwrap();
    let err = store
        .destroy(gone, DestroyScope::Partition, "380014", who("wrong"))
        .unwrap_err();
    assert!(matches!(err, KeyAdminError::Unconfirmed(_)), "{err}");
    let report = store
        .destroy(
            gone,
            DestroyScope::Partition,
            gone.as_str(),
            who("retention period ended (国保法施行規則)"),
        )
        .unwrap();
    assert_eq!(report.keys.iter().map(|k| k.1).sum::<u64>(), 2);
    assert!(report.kek.is_some(), "the KEK is rotated after a destroy");
    let kek = Kek::load_file(&paths.kek).unwrap();
    let admin = AdminScope::from_kek(&kek);
    let err = store.read_entry(&admin.partition(gone), seq).unwrap_err();
    assert!(matches!(err, ReadError::KeyDestroyed { .. }), "{err}");
    assert!(err.to_string().contains("destroyed"), "{err}");
    assert_eq!(
        &store
            .read_entry(&admin.partition(kept), kept_seq)
            .unwrap()
            .payload[..],
        b"stays"
    );
    // Proofs: leaves unchanged, inclusion proofs and the whole log verify.
    assert_eq!(
        &leaves(&store, gone)[..leaves_before.len()],
        &leaves_before[..]
    );
    let r = store
        .verify_partition(gone, VerifyOptions { with_keys: true })
        .unwrap();
    assert_eq!(r.bodies_shredded, 2);
    store.prove_inclusion(gone, Seq(seq), None).unwrap();
    let purges = named(&store, gone, "destroy");
    assert_eq!(purges.len(), 3, "two DEK versions and the index key");
    assert!(
        purges
            .iter()
            .all(|e| e.reason.contains("retention period ended"))
    );
    // No sealed write any more. The KEK rotation rewrapped the other partition's keys only.
    let e = NewEntry::new(Kind::HOUSEHOLD_SNAPSHOT, 1, None, b"x".to_vec()).unwrap();
    assert!(matches!(
        store.append(gone, vec![e]),
        Err(AppendError::Shredded(_))
    ));
    assert!(store.index_key(gone).is_err());
    assert_eq!(named(&store, gone, "rewrap").len(), 0);
    assert_eq!(named(&store, kept, "rewrap").len(), 1);
    drop(store);
    // Raw scan of every file of the instance.
    let mut files = Vec::new();
    files_under(dir.path(), &mut files);
    for f in &files {
        for w in &wrapped {
            assert!(!contains(f, w), "a destroyed wrapped key is still on disk");
        }
        assert!(
            !contains(f, old_kek_b64.as_bytes()),
            "the old KEK is still on disk"
        );
    }
    let store = Store::open(&paths, small()).unwrap();
    verify_all(&store, &ids);
}

/// A past fiscal year's `dated` keys can be destroyed; the running year's cannot.
#[test]
fn destroy_of_a_fiscal_year_shreds_only_that_year() {
    const YEAR_MS: i64 = 366 * 86_400_000;
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(dir.path());
    let p = pid("131011");
    let last_year = {
        let opts = StoreOptions {
            hooks: kukaku::store::hooks::TestHooks {
                clock: kukaku::store::hooks::TestClock::offset(-YEAR_MS),
                ..Default::default()
            },
            ..small()
        };
        let store = crate::common::init_store(&paths, "hub.test", opts).unwrap();
        store.request_partitions(std::slice::from_ref(&p)).unwrap();
        store.provision(&mut |_, _| {}).unwrap();
        let old = put(&store, &p, Kind::KOGAKU_RECORD, "last year's 高額").0;
        let resident = put(&store, &p, Kind::HOUSEHOLD_SNAPSHOT, "resident").0;
        (old, resident)
    };
    let store = Store::open(&paths, small()).unwrap();
    let this_year = put(&store, &p, Kind::KOGAKU_RECORD, "this year's 高額").0;
    let keys = store.key_status(&p).unwrap();
    let years: Vec<u16> = keys
        .iter()
        .filter(|k| k.class == "dated")
        .map(|k| k.epoch)
        .collect();
    assert_eq!(years.len(), 2, "{keys:?}");
    let (past, running) = (years[0].min(years[1]), years[0].max(years[1]));
    let err = store
        .destroy(
            &p,
            DestroyScope::FiscalYear(running),
            p.as_str(),
            who("too early"),
        )
        .unwrap_err();
    assert!(err.to_string().contains("has not ended"), "{err}");
    let report = store
        .destroy(
            &p,
            DestroyScope::FiscalYear(past),
            p.as_str(),
            who("保存期間満了"),
        )
        .unwrap();
    assert_eq!(report.keys.len(), 1);
    let kek = Kek::load_file(&paths.kek).unwrap();
    let scope = AdminScope::from_kek(&kek).partition(&p);
    assert!(matches!(
        store.read_entry(&scope, last_year.0),
        Err(ReadError::KeyDestroyed { .. })
    ));
    assert_eq!(
        &store.read_entry(&scope, last_year.1).unwrap().payload[..],
        b"resident"
    );
    assert_eq!(
        &store.read_entry(&scope, this_year).unwrap().payload[..],
        "this year's 高額".as_bytes()
    );
    // The partition keeps taking writes of every live scope.
    put(&store, &p, Kind::KOGAKU_RECORD, "more");
    assert!(
        store
            .destroy(&p, DestroyScope::FiscalYear(past), p.as_str(), who("twice"))
            .is_err()
    );
    verify_all(&store, std::slice::from_ref(&p));
}

fn signatures(note: &str) -> usize {
    kukaku::ledger::note::SignedNote::parse(note)
        .unwrap()
        .signatures
        .len()
}

/// A signing-key transition: checkpoints carry both signatures until `finish`, then the new
/// one only; every checkpoint still verifies (old ones with the retired key), across a
/// reopen and a later KEK rotation.
#[test]
fn signing_key_rotation_dual_signs_then_switches() {
    use kukaku::ledger::Checkpoint;
    let dir = tempfile::tempdir().unwrap();
    let (paths, store, ids) = setup(dir.path(), small());
    let p = &ids[0];
    put(&store, p, Kind::HOUSEHOLD_SNAPSHOT, "before");
    let size_before = store.size(p).unwrap();
    let old = store.verifier_key(p).unwrap();
    assert_eq!(store.rotate_signing_key(who("annual")).unwrap(), 2);
    let new = store.verifier_key(p).unwrap();
    assert_ne!(old.to_text(), new.to_text());
    for q in &ids {
        let note = store.checkpoint(q).unwrap().unwrap();
        assert_eq!(
            signatures(&note),
            2,
            "the event's checkpoint is dual-signed"
        );
    }
    put(&store, p, Kind::HOUSEHOLD_SNAPSHOT, "during");
    let during = store.checkpoint(p).unwrap().unwrap();
    Checkpoint::verify_note(&during, &old).unwrap();
    Checkpoint::verify_note(&during, &new).unwrap();
    let err = store.rotate_signing_key(who("twice")).unwrap_err();
    assert!(err.to_string().contains("finish it first"), "{err}");
    assert_eq!(store.finish_signing_rotation(who("pinned")).unwrap(), 1);
    put(&store, p, Kind::HOUSEHOLD_SNAPSHOT, "after");
    let after = store.checkpoint(p).unwrap().unwrap();
    assert_eq!(signatures(&after), 1);
    Checkpoint::verify_note(&after, &new).unwrap();
    assert!(Checkpoint::verify_note(&after, &old).is_err());
    assert!(store.finish_signing_rotation(who("again")).is_err());
    let events = named(&store, p, "signing_key");
    assert_eq!(events.len(), 2);
    assert!(
        events[0].reason.contains("transition started"),
        "{events:?}"
    );
    assert!(events[1].reason.contains("v1 retired"), "{events:?}");
    verify_all(&store, &ids);
    // Proofs across the transition (the replicator's feed asks for these).
    store
        .prove_consistency(p, TreeSize(size_before), None)
        .unwrap();
    let keys = store.signing_keys();
    assert_eq!(keys.len(), 2);
    assert!(keys[0].retired_ms.is_some() && keys[1].retired_ms.is_none());
    drop(store);
    let store = Store::open(&paths, small()).unwrap();
    verify_all(&store, &ids);
    assert_eq!(store.verifier_key(p).unwrap().to_text(), new.to_text());
    store.rotate_kek(who("after the signing rotation")).unwrap();
    drop(store);
    let store = Store::open(&paths, small()).unwrap();
    put(&store, p, Kind::HOUSEHOLD_SNAPSHOT, "later");
    Checkpoint::verify_note(&store.checkpoint(p).unwrap().unwrap(), &new).unwrap();
    verify_all(&store, &ids);
}
