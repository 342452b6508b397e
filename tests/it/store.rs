//! Store end to end: appends, reads, proofs, verification, isolation of ciphertexts, no
//! plaintext on disk, wrong KEK.

use crate::common;
use common::{pid, small, walk};

use kukaku::crypto::{AdminScope, Kek};
use kukaku::ledger::{Kind, PartitionId};
use kukaku::ledger::{Seq, TreeSize};
use kukaku::store::{NewEntry, OpenError, Paths, Store, VerifyOptions};

fn setup(dir: &std::path::Path) -> (Paths, Store, Vec<PartitionId>) {
    let paths = Paths::under(dir);
    let store = crate::common::init_store(&paths, "hub.test", small()).unwrap();
    let ids = vec![pid("131011"), pid("380014")];
    store.request_partitions(&ids).unwrap();
    assert_eq!(store.provision(&mut |_, _| {}).unwrap(), 2);
    (paths, store, ids)
}

const MARKER: &str = "PLAINTEXT-MARKER-7f3a9c";

#[test]
fn append_read_prove_verify_and_scan() {
    let dir = tempfile::tempdir().unwrap();
    let (paths, store, ids) = setup(dir.path());
    let kek = Kek::load_file(&paths.kek).unwrap();
    let admin = AdminScope::from_kek(&kek);
    std::thread::scope(|s| {
        for t in 0..4 {
            let store = &store;
            let ids = &ids;
            s.spawn(move || {
                for i in 0..25 {
                    let p = &ids[(t + i) % 2];
                    let body = format!("{MARKER} thread {t} item {i}").into_bytes();
                    let r = store
                        .append(
                            p,
                            vec![NewEntry::new(Kind::HOUSEHOLD_SNAPSHOT, 1, None, body).unwrap()],
                        )
                        .unwrap();
                    assert_eq!(r.entries.len(), 1);
                }
            });
        }
    });
    // A multi-entry append is atomic and contiguous.
    let r = store
        .append(
            &ids[0],
            vec![
                NewEntry::new(Kind::KOGAKU_RECORD, 2, None, b"a".to_vec()).unwrap(),
                NewEntry::new(Kind::ACCESS_RECORD, 2, Some(2), b"b".to_vec()).unwrap(),
            ],
        )
        .unwrap();
    assert_eq!(r.entries[1].0, r.entries[0].0 + 1);
    // A bad ref fails the whole request and changes nothing.
    let before = store.size(&ids[0]).unwrap();
    assert!(
        store
            .append(
                &ids[0],
                vec![
                    NewEntry::new(Kind::ACCESS_RECORD, 2, None, b"x".to_vec()).unwrap(),
                    NewEntry::new(Kind::ACCESS_RECORD, 2, Some(1 << 40), b"y".to_vec()).unwrap(),
                ]
            )
            .is_err()
    );
    assert_eq!(store.size(&ids[0]).unwrap(), before);

    for p in &ids {
        let scope = admin.partition(p);
        let size = store.size(p).unwrap();
        let mut sealed = 0;
        for seq in 0..size {
            let e = store.read_entry(&scope, seq).unwrap();
            if e.header.kind == Kind::HOUSEHOLD_SNAPSHOT {
                assert!(String::from_utf8_lossy(&e.payload).starts_with(MARKER));
                sealed += 1;
            }
            let proof = store.prove_inclusion(p, Seq(seq), None).unwrap();
            proof
                .verify_with_key(&store.verifier_key(p).unwrap())
                .unwrap();
        }
        assert_eq!(sealed, 50);
        let c = store.prove_consistency(p, TreeSize(2), None).unwrap();
        c.verify_roots(None, None).unwrap();
        let rep = store
            .verify_partition(p, VerifyOptions { with_keys: true })
            .unwrap();
        assert_eq!(rep.entries, size);
    }
    // Audit bundle verifies with the pinned keys.
    let bundle = store.export_audit(&ids, Vec::new(), &mut |_| {}).unwrap();
    let reports = kukaku::ledger::bundle::verify(&bundle[..], &|p| store.verifier_key(p)).unwrap();
    assert_eq!(reports.len(), 2);
    let mut flipped = bundle.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 1;
    assert!(kukaku::ledger::bundle::verify(&flipped[..], &|p| store.verifier_key(p)).is_err());
    drop(store);

    // No plaintext on disk (SST, WAL, MANIFEST).
    let store = Store::open(&paths, small()).unwrap();
    drop(store);
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
            "marker in {}",
            entry.display()
        );
    }
}

#[test]
fn moved_ciphertext_fails_and_wrong_kek_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (paths, store, ids) = setup(dir.path());
    for p in &ids {
        for i in 0..3 {
            store
                .append(
                    p,
                    vec![NewEntry::new(Kind::HOUSEHOLD_SNAPSHOT, 0, None, vec![i; 40]).unwrap()],
                )
                .unwrap();
        }
    }
    // Take the sealed body of 131011 seq 3 and graft it onto seq 4 and onto 380014 seq 3.
    let a = store.envelopes(&ids[0], Seq(3), Seq(5)).unwrap();
    let b = store.envelopes(&ids[1], Seq(3), Seq(4)).unwrap();
    let graft = |target: &[u8], source: &[u8]| {
        let (_, tl) = kukaku::ledger::Header::decode_prefix(target).unwrap();
        let (_, sl) = kukaku::ledger::Header::decode_prefix(source).unwrap();
        let mut out = target[..tl].to_vec();
        out.extend_from_slice(&source[sl..]);
        out
    };
    let kek = Kek::load_file(&paths.kek).unwrap();
    let admin = AdminScope::from_kek(&kek);
    // Unchanged envelopes open; grafted bodies fail: AAD = leaf hash of the new position.
    assert!(
        store
            .open_envelope_at(&admin.partition(&ids[0]), 3, &a[0])
            .is_ok()
    );
    let to_next_seq = graft(&a[1], &a[0]);
    assert!(
        store
            .open_envelope_at(&admin.partition(&ids[0]), 4, &to_next_seq)
            .is_err()
    );
    let to_other_partition = graft(&b[0], &a[0]);
    assert!(
        store
            .open_envelope_at(&admin.partition(&ids[1]), 3, &to_other_partition)
            .is_err()
    );
    drop(store);
    std::fs::rename(&paths.kek, dir.path().join("old.key")).unwrap();
    Kek::create_file(&paths.kek).unwrap();
    let err = Store::open(&paths, small()).unwrap_err();
    assert!(matches!(err, OpenError::WrongKek { .. }), "{err}");
    assert!(err.to_string().contains("KEK"));
}

/// 保険者番号 `pp` `nnn` with its check digit, for bulk tests.
fn numbered(prefecture: u32, n: u32) -> PartitionId {
    let body = format!("{prefecture:02}{n:03}");
    (0..10)
        .find_map(|c| kukaku::domain::InsurerNumber::parse(&format!("{body}{c}")).ok())
        .unwrap()
        .partition_id()
}

#[test]
fn provisioning_is_bulk_at_open_and_resumable() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(dir.path());
    let store = crate::common::init_store(&paths, "hub.test", small()).unwrap();
    let ids: Vec<PartitionId> = (1..=3)
        .flat_map(|pref| (1..=100).map(move |n| numbered(pref, n)))
        .collect();
    assert_eq!(store.request_partitions(&ids).unwrap(), 300);
    // Requesting again adds nothing.
    assert_eq!(store.request_partitions(&ids[..10]).unwrap(), 0);
    drop(store);
    // Reopening creates the 300 column families in one step; provisioning then activates.
    let store = Store::open(&paths, small()).unwrap();
    let mut calls = Vec::new();
    let done = store.provision(&mut |d, t| calls.push((d, t))).unwrap();
    assert_eq!(done, 300);
    assert_eq!(calls.first(), Some(&(0, 300)));
    assert_eq!(calls.last(), Some(&(300, 300)));
    let infos = store.partitions().unwrap();
    assert_eq!(infos.len(), 300);
    for info in &infos {
        assert_eq!(info.status, kukaku::store::PartitionStatus::Active);
        assert!(info.activated_ms >= info.requested_ms);
        assert_eq!(store.size(&info.partition).unwrap(), 2);
    }
    // Nothing left: a second run is a no-op.
    assert_eq!(store.provision(&mut |_, _| {}).unwrap(), 0);
    // Partitions requested on an open store get their column family on the slow path.
    let late = numbered(4, 1);
    store
        .request_partitions(std::slice::from_ref(&late))
        .unwrap();
    assert_eq!(store.provision(&mut |_, _| {}).unwrap(), 1);
    drop(store);
    let store = Store::open(&paths, small()).unwrap();
    assert!(store.quarantined().is_empty());
    store
        .verify_partition(&late, VerifyOptions::default())
        .unwrap();
}

/// The hub keeps a cosignature only after checking its own signature, the stored checkpoint
/// at that size and a pinned witness's `cosignature/v1`; every other note is refused and
/// nothing is stored.
#[test]
fn cosignatures_are_verified_before_they_are_kept() {
    use kukaku::ledger::SignedNote;
    use kukaku::store::CosignError;
    let (hub_dir, wit_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_, hub, ids) = setup(hub_dir.path());
    let (_, witness, _) = setup(wit_dir.path());
    let other_witness = {
        let d = tempfile::tempdir().unwrap();
        let s = crate::common::init_store(&Paths::under(d.path()), "other.test", small()).unwrap();
        s.cosigner_key()
    };
    let p = &ids[0];
    let r = hub
        .append(
            p,
            vec![NewEntry::new(Kind::HOUSEHOLD_SNAPSHOT, 1, None, b"x".to_vec()).unwrap()],
        )
        .unwrap();
    let trusted = [witness.cosigner_key()];
    assert!(trusted[0].is_cosigner());
    assert_eq!(hub.latest_cosigned_size(p).unwrap(), None);

    // Refused: no cosignature at all, an untrusted witness, a witness key of the wrong type,
    // a forged cosignature line, another partition's checkpoint, a note the hub never signed.
    let plain = r.checkpoint.clone();
    let cosigned = witness.cosign(&plain).unwrap();
    let untrusted = |e| matches!(e, CosignError::UntrustedWitness);
    assert!(untrusted(
        hub.add_cosignature(p, &plain, &trusted).unwrap_err()
    ));
    assert!(untrusted(
        hub.add_cosignature(p, &cosigned, &[other_witness])
            .unwrap_err()
    ));
    assert!(untrusted(
        hub.add_cosignature(p, &cosigned, &[hub.verifier_key(p).unwrap()])
            .unwrap_err()
    ));
    let mut forged = SignedNote::parse(&cosigned).unwrap();
    let last = forged.signatures.last_mut().unwrap();
    last.signature[20] ^= 1;
    assert!(matches!(
        hub.add_cosignature(p, &forged.to_text(), &trusted)
            .unwrap_err(),
        CosignError::BadCosignature(_)
    ));
    assert!(matches!(
        hub.add_cosignature(&ids[1], &cosigned, &trusted)
            .unwrap_err(),
        CosignError::NotOurs { .. }
    ));
    let foreign = witness
        .cosign(&witness.checkpoint(p).unwrap().unwrap())
        .unwrap();
    assert!(matches!(
        hub.add_cosignature(p, &foreign, &trusted).unwrap_err(),
        CosignError::NotOurs { .. }
    ));
    assert_eq!(
        hub.latest_cosigned_size(p).unwrap(),
        None,
        "something was kept"
    );

    // Accepted: stored under its size, verifiable with both keys, carried in the bundle.
    let ok = hub.add_cosignature(p, &cosigned, &trusted).unwrap();
    assert_eq!(ok.size, r.size);
    assert_eq!(ok.witnesses, vec![trusted[0].name().to_owned()]);
    assert_eq!(hub.latest_cosigned_size(p).unwrap(), Some(r.size));
    let kept = hub.cosigned_checkpoint_at(p, r.size).unwrap().unwrap();
    let note = SignedNote::parse(&kept).unwrap();
    assert_eq!(note.signatures.len(), 2);
    note.verify(&hub.verifier_key(p).unwrap()).unwrap();
    note.verify_cosignature(&trusted[0]).unwrap();
    // Cosigning again replaces the witness's line; the log's own checkpoint is unchanged.
    let again = hub
        .add_cosignature(p, &witness.cosign(&kept).unwrap(), &trusted)
        .unwrap();
    assert_eq!(SignedNote::parse(&again.note).unwrap().signatures.len(), 2);
    assert_eq!(hub.checkpoint_at(p, r.size).unwrap(), plain);
    let bundle = hub.export_audit(&ids, Vec::new(), &mut |_| {}).unwrap();
    let text = String::from_utf8_lossy(&bundle);
    assert!(
        text.contains(trusted[0].name()),
        "bundle lacks the cosignature"
    );
    kukaku::ledger::bundle::verify(&bundle[..], &|q| hub.verifier_key(q)).unwrap();
    hub.verify_partition(p, VerifyOptions::default()).unwrap();
}

/// `key_status` lists every DEK version with its scope and status; rotations at the nonce
/// budget leave one current version per scope, and the stored entries under each key add up.
#[test]
fn key_status_counts_versions_and_entries() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(dir.path());
    let opts = kukaku::store::StoreOptions {
        dek_rotate_after: 3,
        ..small()
    };
    let store = crate::common::init_store(&paths, "hub.test", opts).unwrap();
    let p = pid("131011");
    store.request_partitions(std::slice::from_ref(&p)).unwrap();
    store.provision(&mut |_, _| {}).unwrap();
    for i in 0..8 {
        let e = NewEntry::new(Kind::HOUSEHOLD_SNAPSHOT, 1, None, vec![i; 10]).unwrap();
        store.append(&p, vec![e]).unwrap();
    }
    let keys = store.key_status(&p).unwrap();
    assert!(keys.len() >= 3, "{keys:?}");
    assert_eq!(
        keys.iter().filter(|k| k.status == "current").count(),
        1,
        "{keys:?}"
    );
    assert!(
        keys.iter()
            .all(|k| k.class == "resident" && k.encryptions <= 3)
    );
    assert_eq!(keys.iter().map(|k| k.entries).sum::<u64>(), 8);
    let versions: Vec<u32> = keys.iter().map(|k| k.version).collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    // A partition that does not exist is named as such.
    assert!(matches!(
        store.key_status(&pid("380014")),
        Err(kukaku::store::ReadError::UnknownPartition(_))
    ));
}

/// Operator rotation: every scope gets a new current version with a key event naming who and
/// why; new writes use it, old entries still open, and the log verifies with keys.
#[test]
fn rotate_deks_records_who_and_keeps_old_entries_readable() {
    use kukaku::ledger::payload::KeyEvent;
    let dir = tempfile::tempdir().unwrap();
    let (paths, store, ids) = setup(dir.path());
    let p = &ids[0];
    let first = store
        .append(
            p,
            vec![NewEntry::new(Kind::HOUSEHOLD_SNAPSHOT, 1, None, b"before".to_vec()).unwrap()],
        )
        .unwrap();
    let who = kukaku::store::KeyActor {
        actor: "admin-cli".into(),
        reason: "annual rotation".into(),
    };
    let new_ids = store.rotate_deks(p, who).unwrap();
    assert_eq!(new_ids.len(), 1);
    let keys = store.key_status(p).unwrap();
    let current: Vec<_> = keys.iter().filter(|k| k.status == "current").collect();
    assert_eq!(
        (current.len(), current[0].key_id, current[0].version),
        (1, new_ids[0], 2)
    );
    let after = store
        .append(
            p,
            vec![NewEntry::new(Kind::HOUSEHOLD_SNAPSHOT, 1, None, b"after".to_vec()).unwrap()],
        )
        .unwrap();
    let kek = Kek::load_file(&paths.kek).unwrap();
    let scope = AdminScope::from_kek(&kek).partition(p);
    let old = store.read_entry(&scope, first.first_seq).unwrap();
    assert_eq!(&old.payload[..], b"before");
    let raw = store
        .envelopes(p, Seq(after.first_seq), Seq(after.first_seq + 1))
        .unwrap();
    assert_eq!(
        kukaku::ledger::Envelope::decode(&raw[0]).unwrap().key_id,
        new_ids[0]
    );
    // The key event says who and why, and holds no key material.
    let events: Vec<KeyEvent> = store
        .envelopes(p, Seq(0), Seq(store.size(p).unwrap()))
        .unwrap()
        .iter()
        .map(|r| kukaku::ledger::Envelope::decode(r).unwrap())
        .filter(|e| e.header.kind == Kind::KEY_EVENT)
        .map(|e| match e.body {
            kukaku::ledger::Body::Open { payload, .. } => KeyEvent::decode(&payload).unwrap(),
            _ => panic!("a sealed key event"),
        })
        .collect();
    let rotate = events.iter().find(|e| e.event.name() == "rotate").unwrap();
    assert_eq!(
        (rotate.actor.as_str(), rotate.reason.as_str()),
        ("admin-cli", "annual rotation")
    );
    assert_eq!((rotate.key_id, rotate.version), (new_ids[0], 2));
    store
        .verify_partition(p, VerifyOptions { with_keys: true })
        .unwrap();
    // Nothing to rotate in a partition that does not exist.
    assert!(
        store
            .rotate_deks(
                &pid("470351"),
                kukaku::store::KeyActor {
                    actor: "x".into(),
                    reason: "y".into()
                }
            )
            .is_err()
    );
}
