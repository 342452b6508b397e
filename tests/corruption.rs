//! Corruption drills (issue 10): bytes flipped through the raw RocksDB API in stored
//! envelopes (hashed header and sealed body), tree nodes, checkpoints and the partition head.
//! `verify` (and a read, for bodies) names the partition, the seq and the step; nothing is
//! repaired behind the operator's back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

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

/// Applies `f` to the value of `key` in the partition's column family, with the store closed.
fn tamper(paths: &Paths, key: &[u8], f: impl FnOnce(&mut Vec<u8>)) {
    let opts = rocksdb::Options::default();
    let names = rocksdb::DB::list_cf(&opts, &paths.data).unwrap();
    let db = rocksdb::DB::open_cf(&opts, &paths.data, &names).unwrap();
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

#[test]
fn a_flipped_tree_node_and_a_rewritten_checkpoint_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let paths = fixture(dir.path());
    // The level-0 node of leaf 3: `N ‖ level ‖ index`.
    let mut node = vec![b'N', 0];
    node.extend_from_slice(&3u64.to_be_bytes());
    tamper(&paths, &node, |v| v[0] ^= 0xff);
    let e = verify(&paths).unwrap_err();
    assert_eq!((e.seq, &e.step), (3, &Step::TreeNode { level: 0 }), "{e}");

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
