//! Helpers shared by the integration tests.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "shared by several test binaries: an `expect` would be unfulfilled in those that use less of it"
)]

pub mod flow4;

use kukaku::ledger::PartitionId;
use kukaku::ledger::Seq;
use kukaku::store::StoreOptions;

/// A partition id from a 保険者番号 (check digit validated).
pub fn pid(s: &str) -> PartitionId {
    kukaku::domain::InsurerNumber::parse(s)
        .unwrap()
        .partition_id()
}

/// Store options with small caches, for tests that open many stores.
pub fn small() -> StoreOptions {
    StoreOptions {
        block_cache_bytes: 8 << 20,
        write_buffer_manager_bytes: 8 << 20,
        ..Default::default()
    }
}

/// What a finished replication must show: every household snapshot of the hub's partition
/// `p` is on the intermediate exactly once (by commitment), and the forwarding receipts tile
/// the hub's log from 0 to the replica's hub size without a gap or an overlap. Returns the
/// number of snapshots.
pub fn assert_replicated_exactly_once(
    hub: &kukaku::store::Store,
    inter: &kukaku::store::Store,
    p: &PartitionId,
) -> usize {
    use kukaku::ledger::payload::ForwardingReceipt;
    use kukaku::ledger::{Body, Envelope, Kind};
    let state = inter.replica_state(p).unwrap().expect("nothing replicated");
    assert_eq!(
        state.hub_size,
        hub.size(p).unwrap(),
        "intermediate is behind"
    );
    let entries = |s: &kukaku::store::Store| -> Vec<(Kind, [u8; 32], Vec<u8>)> {
        s.envelopes(p, Seq(0), Seq(s.size(p).unwrap()))
            .unwrap()
            .iter()
            .map(|raw| {
                let e = Envelope::decode(raw).unwrap();
                let payload = match &e.body {
                    Body::Open { payload, .. } => payload.clone(),
                    Body::Sealed { .. } => Vec::new(),
                };
                (e.header.kind, *e.header.commitment.as_bytes(), payload)
            })
            .collect()
    };
    let hub_entries = entries(hub);
    let int_entries = entries(inter);
    let mut copies: std::collections::BTreeMap<[u8; 32], usize> = Default::default();
    for (k, c, _) in &int_entries {
        if *k == Kind::HOUSEHOLD_SNAPSHOT {
            *copies.entry(*c).or_default() += 1;
        }
    }
    let snapshots: Vec<_> = hub_entries
        .iter()
        .filter(|(k, ..)| *k == Kind::HOUSEHOLD_SNAPSHOT)
        .collect();
    assert_eq!(copies.len(), snapshots.len(), "missing copies");
    for (_, c, _) in &snapshots {
        assert_eq!(
            copies.get(c),
            Some(&1),
            "a snapshot is missing or duplicated"
        );
    }
    let mut next = 0;
    for (k, _, payload) in &int_entries {
        if *k == Kind::FORWARDING_RECEIPT {
            let r = ForwardingReceipt::decode(payload).unwrap();
            assert_eq!(r.hub_from, next, "gap or overlap");
            next = r.hub_to;
        }
    }
    assert_eq!(next, state.hub_size);
    snapshots.len()
}

/// Every file under `dir`, at any depth (for the checks that no file holds a secret or a
/// plaintext).
pub fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
