//! Where the key store's records live (docs/format.md §6): a small RocksDB of its own in the
//! home beside the embedded engine, or the engine's key space on an engine that holds keys
//! (PostgreSQL: every writer of a cell must unwrap the same DEKs, and a key's record commits
//! under the same writer fence as the data).

use std::sync::Arc;

use rocksdb::DB;

use super::engine::{Dir, Engine, Op, Pair, Space};
use super::keyring::KeyError;
use super::sync_write;
use crate::crypto::kek::record_fingerprint;

/// A key store: the records are small (a wrapped key each) and few (two per partition and
/// key version, a handful per instance).
pub(crate) enum KeyStore {
    /// `<home>/keystore`, a RocksDB written with synced batches.
    Local(DB),
    /// The engine's [`Space::Keys`].
    Engine(Arc<dyn Engine>),
}

impl KeyStore {
    /// The record in `slot`.
    pub(crate) fn get(&self, slot: &[u8]) -> Result<Option<Vec<u8>>, KeyError> {
        match self {
            KeyStore::Local(db) => Ok(db.get(slot)?),
            KeyStore::Engine(e) => Ok(e.get(&Space::Keys, slot)?),
        }
    }

    /// Writes `puts` and `deletes` in one durable batch.
    pub(crate) fn write(
        &self,
        puts: Vec<(Vec<u8>, Vec<u8>)>,
        deletes: &[Vec<u8>],
    ) -> Result<(), KeyError> {
        match self {
            KeyStore::Local(db) => {
                let mut batch = rocksdb::WriteBatch::default();
                for (k, v) in puts {
                    batch.put(k, v);
                }
                for k in deletes {
                    batch.delete(k);
                }
                Ok(db.write_opt(batch, &sync_write())?)
            }
            KeyStore::Engine(e) => {
                let puts = puts.into_iter().map(|(key, value)| Op::Put {
                    space: Space::Keys,
                    key,
                    value,
                });
                let deletes = deletes.iter().map(|k| Op::Delete {
                    space: Space::Keys,
                    key: k.clone(),
                });
                Ok(e.commit(puts.chain(deletes).collect())?)
            }
        }
    }

    /// Every record, in key order.
    pub(crate) fn records(&self) -> Result<Vec<Pair>, KeyError> {
        match self {
            KeyStore::Local(db) => local_records(db),
            KeyStore::Engine(e) => e
                .scan(&Space::Keys, &[], Dir::Forward)?
                .map(|item| item.map_err(KeyError::from))
                .collect(),
        }
    }

    /// The KEK fingerprint its records are under: the one the first wrapped record names
    /// (a rewrap moves every record in one batch, so the first one tells), read no further.
    pub(crate) fn fingerprint(&self) -> Result<Option<String>, KeyError> {
        match self {
            KeyStore::Local(db) => local_fingerprint(db),
            KeyStore::Engine(e) => first_fingerprint(
                e.scan(&Space::Keys, &[], Dir::Forward)?
                    .map(|item| item.map_err(KeyError::from)),
            ),
        }
    }

    /// Removes from the files what deleted and overwritten records left there, as far as the
    /// store can (docs/keys.md): RocksDB flushes, compacts and flushes its WAL; the engine
    /// purges its key space.
    pub(crate) fn compact(&self) -> Result<(), KeyError> {
        match self {
            KeyStore::Local(db) => {
                db.flush()?;
                let mut opts = rocksdb::CompactOptions::default();
                opts.set_bottommost_level_compaction(
                    rocksdb::BottommostLevelCompaction::ForceOptimized,
                );
                db.compact_range_opt(None::<&[u8]>, None::<&[u8]>, &opts);
                Ok(db.flush_wal(true)?)
            }
            KeyStore::Engine(e) => Ok(e.purge_deleted(&[Space::Keys])?),
        }
    }

    /// A RocksDB checkpoint of a local key store at `dir` (a backup's copy); an engine's key
    /// space is backed up with the engine.
    pub(crate) fn checkpoint(&self, dir: &std::path::Path) -> Result<(), KeyError> {
        match self {
            KeyStore::Local(db) => {
                Ok(rocksdb::checkpoint::Checkpoint::new(db)?.create_checkpoint(dir)?)
            }
            KeyStore::Engine(_) => Err(KeyError::NotLocal),
        }
    }
}

/// Every record of a key store's RocksDB.
fn local_records(db: &DB) -> Result<Vec<Pair>, KeyError> {
    db.iterator(rocksdb::IteratorMode::Start)
        .map(|item| item.map_err(KeyError::from))
        .collect()
}

/// [`KeyStore::fingerprint`] of a key store's RocksDB (the open one, or a backup's staged
/// copy).
pub(crate) fn local_fingerprint(db: &DB) -> Result<Option<String>, KeyError> {
    first_fingerprint(
        db.iterator(rocksdb::IteratorMode::Start)
            .map(|item| item.map_err(KeyError::from)),
    )
}

fn first_fingerprint(
    mut records: impl Iterator<Item = Result<Pair, KeyError>>,
) -> Result<Option<String>, KeyError> {
    records
        .find_map(|item| match item {
            Ok((_, v)) => record_fingerprint(&v).map(Ok),
            Err(e) => Some(Err(e)),
        })
        .transpose()
}
