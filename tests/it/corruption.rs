//! Corruption drills (issue 10): bytes flipped through the raw RocksDB API in stored
//! envelopes (hashed header and sealed body), tree nodes, checkpoints and the partition head.
//! `verify` (and a read, for bodies) names the partition, the seq and the step; nothing is
//! repaired behind the operator's back.

use crate::common;

use common::{pid, small};
use kukaku::crypto::{AdminScope, Kek};
use kukaku::ledger::Kind;
use kukaku::ledger::verify::Step;
use kukaku::store::{NewEntry, Paths, ReadError, Store, VerifyOptions};

/// A store with one partition of a few batches, closed again.
fn fixture(dir: &std::path::Path) -> Paths {
    let paths = Paths::under(dir);
    let store = Store::init(&paths, "hub.test", small()).unwrap();
    let p = pid("131011");
    store.request_partitions(std::slice::from_ref(&p)).unwrap();
    store.provision(&mut |_, _| {}).unwrap();
    for b in 0..4 {
        let entries = (0..3)
            .map(|i| {
                NewEntry::new(
                    Kind::HOUSEHOLD_SNAPSHOT,
                    1,
                    None,
                    format!("b{b} i{i}").into(),
                )
                .unwrap()
            })
            .collect();
        store.append(&p, entries).unwrap();
    }
    paths
}

/// The data DB opened through the raw RocksDB API, every family, with the store closed.
fn raw_db(paths: &Paths) -> rocksdb::DB {
    let opts = rocksdb::Options::default();
    let names = rocksdb::DB::list_cf(&opts, &paths.data).unwrap();
    rocksdb::DB::open_cf(&opts, &paths.data, &names).unwrap()
}

/// Applies `f` to the value of `key` in the partition's column family, with the store closed.
fn tamper(paths: &Paths, key: &[u8], f: impl FnOnce(&mut Vec<u8>)) {
    let db = raw_db(paths);
    let cf = db.cf_handle("p/131011").unwrap();
    let mut value = db.get_cf(&cf, key).unwrap().expect("key present");
    f(&mut value);
    db.put_cf(&cf, key, value).unwrap();
}

fn entry_key(seq: u64) -> Vec<u8> {
    let mut k = vec![b'E'];
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn verify(
    paths: &Paths,
) -> Result<kukaku::store::VerifyReport, kukaku::ledger::verify::VerifyError> {
    let store = Store::open(paths, small()).unwrap();
    store.verify_partition(&pid("131011"), VerifyOptions { with_keys: true })
}

#[test]
fn a_flipped_header_byte_is_named_by_partition_seq_and_step() {
    let dir = tempfile::tempdir().unwrap();
    let paths = fixture(dir.path());
    verify(&paths).unwrap();
    // Byte 40 of the envelope lies in the hashed header of seq 5 (chain, tree and checkpoint
    // over it all change).
    tamper(&paths, &entry_key(5), |v| v[40] ^= 0x01);
    let e = verify(&paths).unwrap_err();
    assert_eq!((e.partition.as_str(), e.seq), ("131011", 5), "{e}");
}

#[test]
fn a_flipped_sealed_body_byte_fails_the_read_and_verify_with_keys() {
    let dir = tempfile::tempdir().unwrap();
    let paths = fixture(dir.path());
    tamper(&paths, &entry_key(4), |v| {
        let last = v.len() - 1;
        v[last] ^= 0x80;
    });
    let e = verify(&paths).unwrap_err();
    assert_eq!((e.seq, &e.step), (4, &Step::Body), "{e}");
    let store = Store::open(&paths, small()).unwrap();
    let kek = Kek::load_file(&paths.kek).unwrap();
    let scope = AdminScope::from_kek(&kek).partition(&pid("131011"));
    let err = store.read_entry(&scope, 4).unwrap_err();
    assert!(matches!(err, ReadError::Corrupt { seq: 4, .. }), "{err}");
    assert!(err.to_string().contains("131011"), "{err}");
    // Without keys the body is not checked (auditors see no plaintext): headers still hold.
    store
        .verify_partition(&pid("131011"), VerifyOptions { with_keys: false })
        .unwrap();
}

/// The `N` keys of the partition, as (level, index), with the store closed.
fn stored_nodes(paths: &Paths) -> Vec<(u8, u64)> {
    let db = raw_db(paths);
    let cf = db.cf_handle("p/131011").unwrap();
    db.prefix_iterator_cf(&cf, b"N")
        .map(|kv| kv.unwrap().0)
        .take_while(|k| k[0] == b'N')
        .map(|k| (k[1], u64::from_be_bytes(k[2..].try_into().unwrap())))
        .collect()
}

#[test]
fn only_subtrees_of_four_leaves_and_up_are_stored_as_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let paths = fixture(dir.path());
    let store = Store::open(&paths, small()).unwrap();
    let size = store.size(&pid("131011")).unwrap();
    drop(store);
    // Every complete subtree of 2^level leaves inside the log, from level 2 up, and nothing
    // below it: a leaf or a two-leaf node is recomputed from the envelopes.
    let mut want: Vec<(u8, u64)> = (2..64u8)
        .flat_map(|level| (0..size >> level).map(move |i| (level, i)))
        .collect();
    assert!(size >= 8 && !want.is_empty(), "size {size}");
    let mut got = stored_nodes(&paths);
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn a_flipped_tree_node_and_a_rewritten_checkpoint_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let paths = fixture(dir.path());
    // The lowest stored node, over leaves 0..4 (made by leaf 3): `N ‖ level ‖ index`.
    let mut node = vec![b'N', kukaku::store::records::LOWEST_STORED_LEVEL];
    node.extend_from_slice(&0u64.to_be_bytes());
    tamper(&paths, &node, |v| v[0] ^= 0xff);
    let e = verify(&paths).unwrap_err();
    assert_eq!((e.seq, &e.step), (3, &Step::TreeNode { level: 2 }), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let paths = fixture(dir.path());
    let store = Store::open(&paths, small()).unwrap();
    let sizes = store.checkpoint_sizes(&pid("131011")).unwrap();
    drop(store);
    let size = sizes[sizes.len() - 2];
    let mut key = vec![b'C'];
    key.extend_from_slice(&size.to_be_bytes());
    // Change one byte of the note body: the signature no longer covers it.
    tamper(&paths, &key, |v| {
        let at = v.iter().position(|b| *b == b'\n').unwrap() + 3;
        v[at] = if v[at] == b'A' { b'B' } else { b'A' };
    });
    let e = verify(&paths).unwrap_err();
    assert_eq!(e.seq, size, "{e}");
    assert!(matches!(e.step, Step::Checkpoint(_)), "{e}");
}

#[test]
fn a_damaged_partition_head_quarantines_the_partition_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let paths = fixture(dir.path());
    tamper(&paths, b"M", |v| {
        let last = v.len() - 1;
        v[last] ^= 0x01;
    });
    let store = Store::open(&paths, small()).unwrap();
    let q = store.quarantined();
    assert!(q.contains_key(&pid("131011")), "{q:?}");
    // A quarantined partition takes no write until an operator has looked.
    let e = NewEntry::new(Kind::HOUSEHOLD_SNAPSHOT, 1, None, b"x".to_vec()).unwrap();
    assert!(store.append(&pid("131011"), vec![e]).is_err());
}

/// Copies a whole instance home as it is on disk: with the store open and idle, this is the
/// image a crash would leave (memtables unflushed, the batches only in the WAL).
fn crash_image(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            crash_image(&entry.path(), &target);
        } else if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The live WAL of an image (the newest `*.log` in data/).
fn live_wal(paths: &Paths) -> std::path::PathBuf {
    let mut logs: Vec<_> = std::fs::read_dir(&paths.data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs.pop().expect("a WAL")
}

/// The WAL and table files of data/, each with the SHA-256 of its bytes.
fn data_files(paths: &Paths) -> std::collections::BTreeMap<String, String> {
    std::fs::read_dir(&paths.data)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(name, _)| name.ends_with(".log") || name.ends_with(".sst"))
        .map(|(name, path)| {
            let digest = ring::digest::digest(&ring::digest::SHA256, &std::fs::read(path).unwrap());
            (name, hex::encode(digest.as_ref()))
        })
        .collect()
}

/// An open store with 20 acknowledged batches, the anchor written (one interval passed).
fn anchored_instance(dir: &std::path::Path) -> (Store, Paths, u64) {
    let paths = Paths::under(dir);
    let store = Store::init(&paths, "hub.test", small()).unwrap();
    let p = pid("131011");
    store.request_partitions(std::slice::from_ref(&p)).unwrap();
    store.provision(&mut |_, _| {}).unwrap();
    for b in 0..20 {
        let e = NewEntry::new(Kind::HOUSEHOLD_SNAPSHOT, 1, None, vec![b; 200]).unwrap();
        store.append(&p, vec![e]).unwrap();
    }
    let size = store.size(&p).unwrap();
    let anchored = || {
        kukaku::store::anchor::load(&paths.anchor)
            .unwrap()
            .and_then(|m| m.get(&p).copied())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while anchored() != Some(size) {
        assert!(
            std::time::Instant::now() < deadline,
            "the anchor was not written"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (store, paths, size)
}

/// WAL truncation: the last acknowledged batches cut off the live WAL. RocksDB recovers the
/// shorter log without a word (a torn tail is what a crash leaves of an unacknowledged
/// batch); the anchor sees that acknowledged entries are gone, and the open is refused
/// naming the partition and both sizes. Nothing is appended or repaired: with the anchor moved away
/// (the documented way to accept an older state) the same image opens shorter.
#[test]
fn a_truncated_wal_is_refused_at_open_naming_partition_and_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _paths, size) = anchored_instance(&dir.path().join("live"));
    let image = dir.path().join("image");
    crash_image(&dir.path().join("live"), &image);
    drop(store);
    let img = Paths::under(&image);
    let wal = live_wal(&img);
    let len = std::fs::metadata(&wal).unwrap().len();
    // Cut the last ~5 batches (each ~700 bytes of WAL), mid-record.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(len - 3000)
        .unwrap();
    let before = data_files(&img);
    match Store::open(&img, small()) {
        Err(kukaku::store::OpenError::RolledBack {
            partition,
            anchored,
            found,
            ..
        }) => {
            assert_eq!(partition, "131011");
            assert_eq!(anchored, size);
            assert!(found < size, "{found} < {size}");
        }
        Err(e) => panic!("another error: {e}"),
        Ok(s) => panic!(
            "opened with {} of {size} entries",
            s.size(&pid("131011")).unwrap()
        ),
    }
    // The refusal left the data as it was: no table file written from the WAL, the WAL's
    // bytes untouched (the store opens with RocksDB's avoid_flush_during_recovery); the
    // open only added a new, empty WAL. So it is refused again.
    let after = data_files(&img);
    for (name, digest) in &before {
        assert_eq!(after.get(name), Some(digest), "{name} changed or is gone");
    }
    assert!(
        after
            .keys()
            .all(|n| before.contains_key(n) || n.ends_with(".log")),
        "a table file was written: {:?}",
        after.keys().collect::<Vec<_>>()
    );
    let message = Store::open(&img, small()).unwrap_err().to_string();
    assert!(
        message.contains("131011") && message.contains(&size.to_string()),
        "{message}"
    );
    std::fs::rename(&img.anchor, image.join("acked.anchor.moved")).unwrap();
    let store = Store::open(&img, small()).unwrap();
    assert!(store.size(&pid("131011")).unwrap() < size);
    store
        .verify_partition(&pid("131011"), VerifyOptions { with_keys: true })
        .unwrap();
}

/// A damaged record in the middle of the live WAL fails the open with a damaged-data error,
/// instead of ending the log silently at the damage as point-in-time recovery would.
#[test]
fn a_damaged_wal_record_fails_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _paths, _size) = anchored_instance(&dir.path().join("live"));
    let image = dir.path().join("image");
    crash_image(&dir.path().join("live"), &image);
    drop(store);
    let img = Paths::under(&image);
    let wal = live_wal(&img);
    let mut bytes = std::fs::read(&wal).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x40;
    std::fs::write(&wal, &bytes).unwrap();
    // Without the anchor too: the WAL check stands on its own.
    std::fs::remove_file(&img.anchor).unwrap();
    let message = match Store::open(&img, small()) {
        Err(e) => e.to_string(),
        Ok(s) => panic!(
            "opened with {} entries despite a damaged WAL",
            s.size(&pid("131011")).unwrap()
        ),
    };
    assert!(
        message.contains("is damaged") && message.contains("Corruption"),
        "{message}"
    );
    assert!(
        message.contains(&img.data.display().to_string()),
        "{message}"
    );
}

/// A partition's whole column family gone (dropped through the raw RocksDB API): its
/// anchored entries are missing, so the open is refused with size 0 found.
#[test]
fn a_dropped_partition_family_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (store, paths, size) = anchored_instance(dir.path());
    drop(store);
    {
        raw_db(&paths).drop_cf("p/131011").unwrap();
    }
    match Store::open(&paths, small()) {
        Err(kukaku::store::OpenError::RolledBack {
            partition,
            anchored,
            found,
            ..
        }) => assert_eq!((partition.as_str(), anchored, found), ("131011", size, 0)),
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("opened without the partition's family"),
    }
}

/// Issue 26 item 6: a credential record written into a copy of `data/` (here: another
/// instance's record, a changed label, and a record without a MAC) was accepted, so anyone
/// who could write `data/` could mint a credential. Records now carry a MAC under a key
/// wrapped by the KEK; a planted or changed one is refused at authentication and listing.
#[test]
fn planted_or_changed_credential_records_are_refused() {
    use kukaku::crypto::credential::{Reach, Role, Token};
    let make = |origin: &str| {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let store = Store::init(&paths, origin, small()).unwrap();
        store.request_partitions(&[pid("131011")]).unwrap();
        store.provision(&mut |_, _| {}).unwrap();
        (dir, paths, store)
    };
    let (_da, pa, a) = make("hub.a.example");
    let (_db, pb, b) = make("hub.b.example");
    let far = kukaku::store::now_unix_ms() + 86_400_000;
    let (token, stored) = a
        .issue_credential(Role::Auditor, Reach::All, "planted", far)
        .unwrap();
    let (own, _) = b
        .issue_credential(Role::Auditor, Reach::All, "own", far)
        .unwrap();
    assert!(a.authenticate(&token, None).is_ok());
    drop((a, b));
    let key = [&b"T"[..], stored.id.as_bytes()].concat();
    let record = {
        let db = raw_db(&pa);
        let sys = db.cf_handle("sys").unwrap();
        db.get_cf(&sys, &key).unwrap().unwrap()
    };
    let put_b = |value: &[u8]| {
        let db = raw_db(&pb);
        let sys = db.cf_handle("sys").unwrap();
        db.put_cf(&sys, &key, value).unwrap();
    };
    let refused = |token: &Token| {
        let b = Store::open(&pb, small()).unwrap();
        let answer = b.authenticate(token, None);
        let listed = b.credentials();
        (answer, listed)
    };
    // Another instance's record, copied whole (its MAC is under the other key).
    put_b(&record);
    let (answer, listed) = refused(&token);
    assert!(
        matches!(
            answer,
            Err(kukaku::store::AuthError::Refused(
                kukaku::crypto::credential::Refused::Unknown
            ))
        ),
        "{answer:?}"
    );
    assert!(listed.is_err());
    // The same record without its MAC (as written before MACs): refused too.
    put_b(&record[..record.len() - 32]);
    assert!(refused(&token).0.is_err());
    // B's own credential, one byte of its label changed.
    let own_key = [&b"T"[..], own.id().as_bytes()].concat();
    {
        let db = raw_db(&pb);
        let sys = db.cf_handle("sys").unwrap();
        db.delete_cf(&sys, &key).unwrap();
        let mut v = db.get_cf(&sys, &own_key).unwrap().unwrap();
        let at = v.windows(3).position(|w| w == b"own").unwrap();
        v[at] = b'0';
        db.put_cf(&sys, &own_key, v).unwrap();
    }
    assert!(refused(&own).0.is_err());
    // An instance from before credential MACs (no `U` marker, records without MACs): the
    // first open seals its records once, and they authenticate.
    let (_dc, pc, c) = make("hub.c.example");
    let (old, old_stored) = c
        .issue_credential(Role::Auditor, Reach::All, "old", far)
        .unwrap();
    drop(c);
    {
        let db = raw_db(&pc);
        let sys = db.cf_handle("sys").unwrap();
        let k = [&b"T"[..], old_stored.id.as_bytes()].concat();
        let v = db.get_cf(&sys, &k).unwrap().unwrap();
        db.put_cf(&sys, &k, &v[..v.len() - 32]).unwrap();
        db.delete_cf(&sys, b"U").unwrap();
    }
    let c = Store::open(&pc, small()).unwrap();
    assert!(c.authenticate(&old, None).is_ok());
    assert_eq!(c.credentials().unwrap().len(), 1);
}
