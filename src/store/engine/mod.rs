//! The storage seam (issue 31, docs/ARCHITECTURE.md "Storage engines"): what the store needs
//! of an ordered key-value engine, and nothing more.
//!
//! - **Spaces.** The system space and one space per partition; a key never leaves its
//!   space, and no read can omit the space it reads (per-partition isolation is structural,
//!   as with RocksDB's column families).
//! - **Reads** ([`View`]): a point read, and an ordered scan from a key forward or backward
//!   to the end of the space, either on the latest committed state or on a snapshot that
//!   holds one state across every space ([`Engine::snapshot`]).
//! - **Writes** ([`Engine::commit`]): one atomic, durable batch of puts, deletes and range
//!   deletes over any spaces. It returns only once the batch is durable (RocksDB: a synced
//!   WriteBatch); a failed commit may or may not have happened, and the writer treats it so
//!   (the store is poisoned and reopened, docs/ARCHITECTURE.md).
//! - **Writer fencing**: at most one process writes an instance. RocksDB's own `LOCK` file
//!   gives it; a replicated engine checks a writer epoch inside each commit.
//!
//! The bytes stored are the ones docs/format.md describes, whatever the engine.

use crate::ledger::PartitionId;

#[cfg(feature = "postgres")]
mod postgres;
mod rocks;

#[cfg(feature = "postgres")]
pub use postgres::{Lease, PgTarget, PostgresEngine};
pub(crate) use rocks::{DbView, RocksEngine, partitions_named};

/// Where a key lives: the system space or a partition's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Space {
    /// Instance records, the registry, credentials, the operator's log.
    System,
    /// A partition's entries, tree nodes, checkpoints, state and indexes.
    Partition(PartitionId),
    /// The key store's wrapped keys, on an engine that holds them ([`Engine::holds_keys`]:
    /// a replicated one, so that every writer of the cell has them). The embedded engine
    /// has no such space: its key store is a database of its own in the home.
    Keys,
}

impl Space {
    /// The space's name: RocksDB's column family (`sys`, `p/<partition>`), or `keys`.
    pub(crate) fn name(&self) -> String {
        match self {
            Space::System => crate::store::records::SYS_CF.to_owned(),
            Space::Partition(p) => crate::store::records::partition_cf(p),
            // No partition's: those are `p/<id>`.
            Space::Keys => "keys".to_owned(),
        }
    }
}

/// One write of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// Sets `key` to `value`.
    Put {
        space: Space,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Removes `key`.
    Delete { space: Space, key: Vec<u8> },
    /// Removes every key in `[from, to)`.
    DeleteRange {
        space: Space,
        from: Vec<u8>,
        to: Vec<u8>,
    },
}

impl Op {
    /// A put of copies of `key` and `value`.
    pub(crate) fn put(space: &Space, key: &[u8], value: &[u8]) -> Op {
        Op::Put {
            space: space.clone(),
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }
}

/// Commits `ops` in batches of at most `chunk` (a copy too large for one transaction),
/// calling `done` with each batch's size once it is durable.
pub(crate) fn commit_chunked(
    engine: &dyn Engine,
    ops: impl Iterator<Item = Op>,
    chunk: usize,
    done: &mut dyn FnMut(u64),
) -> Result<(), EngineError> {
    let mut ops = ops.peekable();
    while ops.peek().is_some() {
        let batch: Vec<Op> = ops.by_ref().take(chunk.max(1)).collect();
        let n = batch.len() as u64;
        engine.commit(batch)?;
        done(n);
    }
    Ok(())
}

/// The order of a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    /// Ascending, from the first key at or after the start.
    Forward,
    /// Descending, from the last key at or before the start.
    Reverse,
}

/// A key and its value.
pub(crate) type Pair = (Box<[u8]>, Box<[u8]>);

/// The pairs of a scan, in order.
pub(crate) type Scan<'a> = Box<dyn Iterator<Item = Result<Pair, EngineError>> + 'a>;

/// Why the engine failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("RocksDB")]
    Rocks(#[from] rocksdb::Error),
    #[error("partition {0} has no space in the engine")]
    NoSpace(PartitionId),
    #[error("the system space is missing")]
    NoSystemSpace,
    #[error("this engine keeps no keys (the embedded engine's key store is in the home)")]
    NoKeySpace,
    #[cfg(feature = "postgres")]
    #[error("PostgreSQL")]
    Postgres(#[source] Box<::postgres::Error>),
    /// The connection was lost while the commit was in flight: it may or may not have
    /// happened. Never answered as either; the store is reopened and reads every head.
    #[cfg(feature = "postgres")]
    #[error("the commit's outcome is unknown (the connection was lost during COMMIT)")]
    Unknown(#[source] Box<::postgres::Error>),
    /// Another writer took the epoch: this one must not write again.
    #[error("fenced: another writer took over from epoch {0}")]
    Fenced(i64),
    #[error("the schema name must be [a-z_][a-z0-9_]*, at most 63 bytes")]
    BadSchema,
    #[error("an engine lock was poisoned by a panic")]
    Poisoned,
    #[error("the snapshot's connection was lost; take a new snapshot")]
    SnapshotLost,
    /// The engine was opened to read (it never takes the writer's place).
    #[error("this store was opened to read; it writes nothing")]
    ReadOnly,
    /// Another writer holds the cell and kept committing while this one waited.
    #[error("another writer ({0}) holds the cell; it is still committing")]
    WriterActive(String),
}

impl EngineError {
    /// Whether the engine may well answer again soon: a cell between leaders, a connection
    /// lost (the commit that met it, if any, is still `Unknown`).
    pub fn is_transient(&self) -> bool {
        match self {
            #[cfg(feature = "postgres")]
            EngineError::Postgres(e) | EngineError::Unknown(e) => postgres::transient(e),
            _ => false,
        }
    }
}

/// Reads of one state: the latest committed one, or a snapshot's.
pub(crate) trait View {
    /// The value of `key` in `space`.
    fn get(&self, space: &Space, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;

    /// The pairs of `space` from `from` in `dir` order, to the end of the space.
    fn scan<'a>(&'a self, space: &Space, from: &[u8], dir: Dir) -> Result<Scan<'a>, EngineError>;

    /// [`View::get`] answered from memory only (RocksDB: memtables and block cache), or
    /// `None` when the answer needs storage I/O; engines without such a tier say `None`.
    fn get_in_memory(
        &self,
        space: &Space,
        key: &[u8],
    ) -> Option<Result<Option<Vec<u8>>, EngineError>> {
        let _ = (space, key);
        None
    }

    /// The pairs of `space` whose key starts with `prefix`, ascending.
    fn scan_prefix<'a>(&'a self, space: &Space, prefix: &[u8]) -> Result<Scan<'a>, EngineError> {
        let prefix = prefix.to_vec();
        let scan = self.scan(space, &prefix, Dir::Forward)?;
        Ok(Box::new(scan.take_while(move |item| match item {
            Ok((key, _)) => key.starts_with(&prefix),
            Err(_) => true,
        })))
    }
}

/// An ordered key-value engine with atomic durable batches (see the module comment).
pub(crate) trait Engine: View + Send + Sync {
    /// A view of one state of every space, unchanged by later commits.
    fn snapshot(&self) -> Result<Box<dyn View + '_>, EngineError>;

    /// Writes `ops` atomically and durably, in order (a later op on a key wins).
    fn commit(&self, ops: Vec<Op>) -> Result<(), EngineError>;

    /// Whether partition `p` has its space.
    fn has_space(&self, p: &PartitionId) -> bool;

    /// The partitions that have their space.
    fn partition_spaces(&self) -> Result<Vec<PartitionId>, EngineError>;

    /// Makes the spaces of `partitions` that are missing.
    fn create_spaces(&self, partitions: &[PartitionId]) -> Result<(), EngineError>;

    /// How long this writer's hold on the engine lasts unless renewed (`None`: it never
    /// lapses, as with RocksDB's lock file).
    fn lease_term(&self) -> Option<std::time::Duration> {
        None
    }

    /// Extends this writer's hold (a commit does too); `Fenced` once another took it.
    fn renew(&self) -> Result<(), EngineError> {
        Ok(())
    }

    /// The embedded engine itself, for what only RocksDB has (its checkpoints and backup
    /// engines for `kukaku backup`, its properties for the health gauges); `None` for
    /// other engines.
    fn as_rocks(&self) -> Option<&RocksEngine> {
        None
    }

    /// Whether the engine holds the key store ([`Space::Keys`]).
    fn holds_keys(&self) -> bool {
        false
    }

    /// After keys were destroyed: removes from the engine's own files what deleted records
    /// of `spaces` left there (RocksDB: flush every memtable, compact those spaces to the
    /// bottom level, flush the WAL), as far as the engine can.
    fn purge_deleted(&self, spaces: &[Space]) -> Result<(), EngineError>;
}

#[cfg(test)]
mod tests;
