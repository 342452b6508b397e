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
use kukaku::store::{OpenError, Paths, Store, StoreOptions};

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

/// Whether this run puts the instances of `init_store` on the replicated engine
/// (`KUKAKU_TEST_ENGINE=postgres`; the test command sets it for a second run of the store
/// and flow suites against its cell).
pub fn on_postgres() -> bool {
    std::env::var("KUKAKU_TEST_ENGINE").is_ok_and(|e| e == "postgres")
}

/// A new instance under `paths` on the engine of this run: the embedded RocksDB, or (with
/// `KUKAKU_TEST_ENGINE=postgres` in a build with `--features postgres`) a schema of its own
/// in the cell `KUKAKU_TEST_PG_DSN` names. Either way `engine.json` makes every later
/// `Store::open(paths, …)` find it, so a suite runs unchanged on both engines.
pub fn init_store(paths: &Paths, origin: &str, options: StoreOptions) -> Result<Store, OpenError> {
    if !on_postgres() {
        return Store::init(paths, origin, options);
    }
    init_on_postgres(paths, origin, options)
}

#[cfg(feature = "postgres")]
fn init_on_postgres(
    paths: &Paths,
    origin: &str,
    options: StoreOptions,
) -> Result<Store, OpenError> {
    use std::os::unix::fs::PermissionsExt as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SCHEMAS: AtomicU64 = AtomicU64::new(0);
    let dsn = std::env::var("KUKAKU_TEST_PG_DSN")
        .expect("KUKAKU_TEST_PG_DSN with KUKAKU_TEST_ENGINE=postgres");
    let n = SCHEMAS.fetch_add(1, Ordering::Relaxed);
    let schema = format!("s_{}_{n}", std::process::id());
    // Beside the home (never in it: the DSN holds the cell's password).
    let outside = paths.key_store.parent().and_then(std::path::Path::parent);
    let dsn_file = outside
        .expect("a home inside a directory")
        .join(format!("{schema}.dsn"));
    std::fs::write(&dsn_file, &dsn).unwrap();
    std::fs::set_permissions(&dsn_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let record = kukaku::store::EngineRecord::postgres(&schema, &dsn_file);
    Store::init_recorded(paths, origin, options, &record)
}

#[cfg(not(feature = "postgres"))]
fn init_on_postgres(_: &Paths, _: &str, _: StoreOptions) -> Result<Store, OpenError> {
    panic!("KUKAKU_TEST_ENGINE=postgres needs a build with --features postgres")
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
