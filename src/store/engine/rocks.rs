//! The embedded engine: RocksDB, a column family per space (`sys`, `p/<partition>`), a synced
//! `WriteBatch` per commit, RocksDB snapshots, and the `LOCK` file as the writer fence.

use std::sync::Arc;

use rocksdb::{BoundColumnFamily, DB, Direction, IteratorMode, Options, ReadOptions};

use super::{Dir, Engine, EngineError, Op, Scan, Space, View};
use crate::ledger::PartitionId;
use crate::store::records::{SYS_CF, partition_cf};
use crate::store::sync_write;

/// RocksDB behind the seam. [`RocksEngine::db`] is for what only RocksDB has (checkpoints
/// and backup engines, properties for the health gauges, the open-time setup).
pub(crate) struct RocksEngine {
    db: DB,
    /// The options of a partition's column family (for the ones made later).
    cf_options: Options,
}

impl RocksEngine {
    /// The engine over an open database whose partition families use `cf_options`.
    pub(crate) fn new(db: DB, cf_options: Options) -> Self {
        RocksEngine { db, cf_options }
    }

    /// The database itself.
    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    fn family(&self, space: &Space) -> Result<Arc<BoundColumnFamily<'_>>, EngineError> {
        match space {
            Space::System => self.db.cf_handle(SYS_CF).ok_or(EngineError::NoSystemSpace),
            Space::Partition(p) => self
                .db
                .cf_handle(&partition_cf(p))
                .ok_or_else(|| EngineError::NoSpace(p.clone())),
        }
    }

    fn get_with(
        &self,
        space: &Space,
        key: &[u8],
        opts: &ReadOptions,
    ) -> Result<Option<Vec<u8>>, EngineError> {
        let cf = self.family(space)?;
        Ok(self.db.get_cf_opt(&cf, key, opts)?)
    }

    fn scan_with<'a>(
        &'a self,
        space: &Space,
        from: &[u8],
        dir: Dir,
        opts: ReadOptions,
    ) -> Result<Scan<'a>, EngineError> {
        let cf = self.family(space)?;
        let direction = match dir {
            Dir::Forward => Direction::Forward,
            Dir::Reverse => Direction::Reverse,
        };
        let it = self
            .db
            .iterator_cf_opt(&cf, opts, IteratorMode::From(from, direction));
        Ok(Box::new(it.map(|item| item.map_err(EngineError::from))))
    }
}

impl View for RocksEngine {
    fn get(&self, space: &Space, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.get_with(space, key, &ReadOptions::default())
    }

    fn scan<'a>(&'a self, space: &Space, from: &[u8], dir: Dir) -> Result<Scan<'a>, EngineError> {
        self.scan_with(space, from, dir, ReadOptions::default())
    }
}

/// A RocksDB snapshot: every read sees the state at [`Engine::snapshot`].
struct RocksSnapshot<'a> {
    engine: &'a RocksEngine,
    snapshot: rocksdb::Snapshot<'a>,
}

impl RocksSnapshot<'_> {
    fn options(&self) -> ReadOptions {
        let mut opts = ReadOptions::default();
        opts.set_snapshot(&self.snapshot);
        opts
    }
}

impl View for RocksSnapshot<'_> {
    fn get(&self, space: &Space, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.engine.get_with(space, key, &self.options())
    }

    fn scan<'a>(&'a self, space: &Space, from: &[u8], dir: Dir) -> Result<Scan<'a>, EngineError> {
        self.engine.scan_with(space, from, dir, self.options())
    }
}

impl Engine for RocksEngine {
    fn snapshot(&self) -> Box<dyn View + '_> {
        Box::new(RocksSnapshot {
            engine: self,
            snapshot: self.db.snapshot(),
        })
    }

    fn commit(&self, ops: Vec<Op>) -> Result<(), EngineError> {
        let mut batch = rocksdb::WriteBatch::default();
        let mut families = std::collections::HashMap::new();
        for op in &ops {
            let space = match op {
                Op::Put { space, .. }
                | Op::Delete { space, .. }
                | Op::DeleteRange { space, .. } => space,
            };
            if !families.contains_key(space) {
                families.insert(space.clone(), self.family(space)?);
            }
            let Some(cf) = families.get(space) else {
                continue;
            };
            match op {
                Op::Put { key, value, .. } => batch.put_cf(cf, key, value),
                Op::Delete { key, .. } => batch.delete_cf(cf, key),
                Op::DeleteRange { from, to, .. } => batch.delete_range_cf(cf, from, to),
            }
        }
        Ok(self.db.write_opt(batch, &sync_write())?)
    }

    fn has_space(&self, p: &PartitionId) -> bool {
        self.db.cf_handle(&partition_cf(p)).is_some()
    }

    fn create_spaces(&self, partitions: &[PartitionId]) -> Result<(), EngineError> {
        for p in partitions {
            let name = partition_cf(p);
            if self.db.cf_handle(&name).is_none() {
                self.db.create_cf(&name, &self.cf_options)?;
            }
        }
        Ok(())
    }
}
