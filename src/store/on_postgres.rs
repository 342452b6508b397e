//! A store whose data lives in PostgreSQL (issue 31, feature `postgres`): the same store,
//! opened on `engine::PostgresEngine` instead of the embedded RocksDB. The KEK and the key
//! store stay in the home (the key store moving into the database is the next step, issue
//! 31), and so does the acknowledged-size anchor.

use std::time::Duration;

use super::engine::{Lease, PgTarget, PostgresEngine, Space, View as _};
use super::open::{KekChoice, init_keys, kek_source, new_instance_record, write_instance_record};
use super::records::INSTANCE_KEY;
use super::{OpenError, Paths, Store, StoreOptions};

/// How long this process's commits keep the cell's writer row, and how long opening waits
/// for another writer's lease to lapse.
const LEASE: Lease = Lease {
    term: Duration::from_secs(10),
    patience: Duration::from_secs(30),
};

/// This process as a writer of the cell.
fn holder() -> String {
    format!("kukaku pid {}", std::process::id())
}

impl Store {
    /// Creates a new instance whose data lives in `target` (a schema that holds no instance
    /// yet); the KEK and the key store are made in the home of `paths`.
    pub fn init_postgres(
        paths: &Paths,
        origin: &str,
        options: StoreOptions,
        target: PgTarget,
    ) -> Result<Store, OpenError> {
        let engine = PostgresEngine::open(target.clone(), &holder(), LEASE)?;
        if engine.get(&Space::System, INSTANCE_KEY)?.is_some() {
            return Err(OpenError::SchemaInUse(target.schema));
        }
        let (kek, signer) = init_keys(paths, origin)?;
        write_instance_record(&engine, &new_instance_record(origin, &signer, kek.as_ref()))?;
        drop(engine);
        Self::open_postgres(paths, options, target)
    }

    /// Opens the instance whose data lives in `target`, with the KEK and key store of
    /// `paths`; waits up to 30 s for another writer's lease to lapse.
    pub fn open_postgres(
        paths: &Paths,
        options: StoreOptions,
        target: PgTarget,
    ) -> Result<Store, OpenError> {
        if !paths.key_store.join("CURRENT").exists() {
            return Err(OpenError::NotInitialized(paths.key_store.clone()));
        }
        let engine = PostgresEngine::open(target, &holder(), LEASE)?;
        let partitions = engine.partition_spaces()?;
        let choice = KekChoice::Source(kek_source(paths)?);
        Self::open_on(paths, choice, options, Box::new(engine), partitions)
    }
}
