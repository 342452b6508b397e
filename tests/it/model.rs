//! Property test: random appends across partitions through the store, against an in-memory
//! model. Every receipt, root, checkpoint, read, inclusion proof (i, n) and consistency proof
//! (m, n) is checked against the model, before and after reopening.

use crate::common;

use common::{pid, small};
use kukaku::crypto::{AdminScope, Kek};
use kukaku::ledger::merkle::root_of;
use kukaku::ledger::{Checkpoint, Envelope, Hash, Kind, PartitionId};
use kukaku::ledger::{Seq, TreeSize};
use kukaku::store::{NewEntry, Paths, Store, StoreOptions, VerifyOptions};
use proptest::prelude::*;

/// What the model knows of one entry: its leaf hash and, for entries the test appended, the
/// payload. Entries the store adds itself (genesis, key events) have no payload here.
struct ModelEntry {
    leaf: Hash,
    payload: Option<Vec<u8>>,
}

#[derive(Default)]
struct Model {
    entries: Vec<ModelEntry>,
}

impl Model {
    fn leaves(&self) -> Vec<Hash> {
        self.entries.iter().map(|e| e.leaf).collect()
    }
}

fn options() -> StoreOptions {
    StoreOptions {
        // Rotate often so key events interleave with appended entries.
        dek_rotate_after: 3,
        ..small()
    }
}

/// Takes the store's own entries in `[model.len(), upto)` into the model: they must be key
/// events (the only entries the writer adds after genesis).
fn take_internal(store: &Store, p: &PartitionId, model: &mut Model, upto: u64, first: bool) {
    let from = model.entries.len() as u64;
    for raw in store.envelopes(p, Seq(from), Seq(upto)).unwrap() {
        let env = Envelope::decode(&raw).unwrap();
        let allowed = if first && env.header.seq == 0 {
            Kind::GENESIS
        } else {
            Kind::KEY_EVENT
        };
        assert_eq!(env.header.kind, allowed, "seq {}", env.header.seq);
        model.entries.push(ModelEntry {
            leaf: env.header.leaf_hash(),
            payload: None,
        });
    }
}

fn check_everything(store: &Store, kek: &Kek, ids: &[PartitionId], models: &[Model]) {
    let admin = AdminScope::from_kek(kek);
    for (p, model) in ids.iter().zip(models) {
        let size = model.entries.len() as u64;
        assert_eq!(store.size(p).unwrap(), size);
        let key = store.verifier_key(p).unwrap();
        let cp = store.checkpoint_parsed(p).unwrap().unwrap();
        assert_eq!((cp.size, cp.root), (size, root_of(&model.leaves())));
        let scope = admin.partition(p);
        for (seq, m) in model.entries.iter().enumerate() {
            let e = store.read_entry(&scope, seq as u64).unwrap();
            assert_eq!(e.leaf_hash, m.leaf);
            if let Some(payload) = &m.payload {
                assert_eq!(&e.payload[..], &payload[..]);
            }
        }
        let sizes = store.checkpoint_sizes(p).unwrap();
        for &n in &sizes {
            let root = root_of(&model.leaves()[..n as usize]);
            for i in 0..n {
                let proof = store.prove_inclusion(p, Seq(i), Some(TreeSize(n))).unwrap();
                proof.verify_with_key(&key).unwrap();
                proof.verify_root(Some(&root)).unwrap();
            }
            for &m in sizes.iter().filter(|&&m| m <= n) {
                let old = root_of(&model.leaves()[..m as usize]);
                let proof = store
                    .prove_consistency(p, TreeSize(m), Some(TreeSize(n)))
                    .unwrap();
                proof.verify_with_key(&key, &old).unwrap();
            }
        }
        let report = store
            .verify_partition(p, VerifyOptions { with_keys: true })
            .unwrap();
        assert_eq!(report.entries, size);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn store_matches_model(
        ops in prop::collection::vec(
            (0usize..3, prop::collection::vec(prop::collection::vec(any::<u8>(), 0..48), 1..4)),
            1..14,
        )
    ) {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let store = crate::common::init_store(&paths, "hub.test", options()).unwrap();
        let ids = vec![pid("131011"), pid("380014"), pid("33120015")];
        store.request_partitions(&ids).unwrap();
        store.provision(&mut |_, _| {}).unwrap();
        let kek = Kek::load_file(&paths.kek).unwrap();
        let mut models: Vec<Model> = ids.iter().map(|_| Model::default()).collect();
        for (p, model) in ids.iter().zip(models.iter_mut()) {
            let size = store.size(p).unwrap();
            take_internal(&store, p, model, size, true);
        }
        for (which, payloads) in ops {
            let p = &ids[which];
            let entries = payloads
                .iter()
                .map(|b| NewEntry::new(Kind::HOUSEHOLD_SNAPSHOT, 20_000, None, b.clone()).unwrap())
                .collect();
            let r = store.append(p, entries).unwrap();
            let model = &mut models[which];
            prop_assert_eq!(r.entries.len(), payloads.len());
            for ((seq, leaf), payload) in r.entries.iter().zip(payloads) {
                prop_assert!(*seq >= model.entries.len() as u64);
                take_internal(&store, p, model, *seq, false);
                model.entries.push(ModelEntry { leaf: *leaf, payload: Some(payload) });
            }
            prop_assert_eq!(r.size, model.entries.len() as u64);
            prop_assert_eq!(r.root, root_of(&model.leaves()));
            let cp = Checkpoint::verify_note(&r.checkpoint, &store.verifier_key(p).unwrap()).unwrap();
            prop_assert_eq!((cp.size, cp.root), (r.size, r.root));
        }
        check_everything(&store, &kek, &ids, &models);
        drop(store);
        let store = Store::open(&paths, options()).unwrap();
        prop_assert!(store.quarantined().is_empty());
        check_everything(&store, &kek, &ids, &models);
    }
}
