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
        DbView(&self.db).family(space)
    }
}

/// The partitions whose column families are among `names`.
pub(crate) fn partitions_named(names: &[String]) -> Vec<PartitionId> {
    names
        .iter()
        .filter_map(|n| n.strip_prefix(crate::store::records::PARTITION_CF_PREFIX))
        .filter_map(|id| PartitionId::parse(id).ok())
        .collect()
}

/// Reads of a RocksDB database that is not (yet) an engine: the one being opened, a
/// backup's staged checkpoint.
pub(crate) struct DbView<'a>(pub(crate) &'a DB);

impl<'a> DbView<'a> {
    fn family(&self, space: &Space) -> Result<Arc<BoundColumnFamily<'a>>, EngineError> {
        match space {
            Space::System => self.0.cf_handle(SYS_CF).ok_or(EngineError::NoSystemSpace),
            Space::Partition(p) => self
                .0
                .cf_handle(&partition_cf(p))
                .ok_or_else(|| EngineError::NoSpace(p.clone())),
            Space::Keys => Err(EngineError::NoKeySpace),
        }
    }

    fn get_with(
        &self,
        space: &Space,
        key: &[u8],
        opts: &ReadOptions,
    ) -> Result<Option<Vec<u8>>, EngineError> {
        let cf = self.family(space)?;
        Ok(self.0.get_cf_opt(&cf, key, opts)?)
    }

    fn scan_with(
        &self,
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
            .0
            .iterator_cf_opt(&cf, opts, IteratorMode::From(from, direction));
        Ok(Box::new(it.map(|item| item.map_err(EngineError::from))))
    }
}

impl View for DbView<'_> {
    fn get(&self, space: &Space, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.get_with(space, key, &ReadOptions::default())
    }

    fn scan<'b>(&'b self, space: &Space, from: &[u8], dir: Dir) -> Result<Scan<'b>, EngineError> {
        self.scan_with(space, from, dir, ReadOptions::default())
    }
}

impl View for RocksEngine {
    fn get(&self, space: &Space, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        DbView(&self.db).get(space, key)
    }

    fn get_in_memory(
        &self,
        space: &Space,
        key: &[u8],
    ) -> Option<Result<Option<Vec<u8>>, EngineError>> {
        let mut opts = ReadOptions::default();
        opts.set_read_tier(rocksdb::ReadTier::BlockCache);
        match DbView(&self.db).get_with(space, key, &opts) {
            Err(EngineError::Rocks(e)) if e.kind() == rocksdb::ErrorKind::Incomplete => None,
            answer => Some(answer),
        }
    }

    fn scan<'a>(&'a self, space: &Space, from: &[u8], dir: Dir) -> Result<Scan<'a>, EngineError> {
        DbView(&self.db).scan_with(space, from, dir, ReadOptions::default())
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
        DbView(&self.engine.db).get_with(space, key, &self.options())
    }

    fn scan<'b>(&'b self, space: &Space, from: &[u8], dir: Dir) -> Result<Scan<'b>, EngineError> {
        DbView(&self.engine.db).scan_with(space, from, dir, self.options())
    }
}

impl Engine for RocksEngine {
    fn snapshot(&self) -> Result<Box<dyn View + '_>, EngineError> {
        Ok(Box::new(RocksSnapshot {
            engine: self,
            snapshot: self.db.snapshot(),
        }))
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

    fn as_rocks(&self) -> Option<&RocksEngine> {
        Some(self)
    }

    fn has_space(&self, p: &PartitionId) -> bool {
        self.db.cf_handle(&partition_cf(p)).is_some()
    }

    fn partition_spaces(&self) -> Result<Vec<PartitionId>, EngineError> {
        Ok(partitions_named(&DB::list_cf(
            &Options::default(),
            self.db.path(),
        )?))
    }

    fn purge_deleted(&self, spaces: &[Space]) -> Result<(), EngineError> {
        let db = &self.db;
        let names = DB::list_cf(&Options::default(), db.path())?;
        let handles: Vec<_> = names.iter().filter_map(|n| db.cf_handle(n)).collect();
        let mut flush = rocksdb::FlushOptions::default();
        flush.set_wait(true);
        db.flush_cfs_opt(&handles.iter().collect::<Vec<_>>(), &flush)?;
        let mut opts = rocksdb::CompactOptions::default();
        opts.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        opts.set_exclusive_manual_compaction(true);
        for space in spaces {
            if *space == Space::Keys {
                return Err(EngineError::NoKeySpace);
            }
            if let Some(cf) = db.cf_handle(&space.name()) {
                db.compact_range_cf_opt(&cf, None::<&[u8]>, None::<&[u8]>, &opts);
            }
        }
        Ok(db.flush_wal(true)?)
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
