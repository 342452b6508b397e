//! The store's health as an operator watches it (docs/operations.md, "Metrics"): RocksDB's
//! compaction debt, write stalls and memory, the nonce budget of the current keys, and how
//! far witnesses are behind. Read on demand; the binary samples it for its metrics.

use super::engine::Space;

use super::records::{KeyMeta, KeyStatus, SYS_CF, decode, partition_cf};
use super::{PartitionStatus, ProvisionError, ReadError, Store};
use crate::ledger::PartitionId;

/// Why the health could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HealthError {
    #[error("reading the store")]
    Read(#[from] ReadError),
    #[error("the partition registry")]
    Registry(#[from] ProvisionError),
}

/// One reading of [`Store::health`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Health {
    /// Bytes compaction is estimated to still have to rewrite, all column families.
    pub pending_compaction_bytes: u64,
    /// Whether RocksDB has stopped writes.
    pub write_stopped: bool,
    /// The rate writes are slowed to, bytes per second (0: not slowed).
    pub delayed_write_rate: u64,
    /// Bytes in memtables, all column families.
    pub memtable_bytes: u64,
    /// Bytes in the shared block cache.
    pub block_cache_bytes: u64,
    /// The largest share of its nonce budget (`dek_rotate_after`) a current DEK version has
    /// used, 0–1.
    pub nonce_budget_used: f64,
    /// Per active partition that a witness has cosigned: entries after its newest
    /// cosigned checkpoint.
    pub witness_lag: Vec<(PartitionId, u64)>,
}

impl Store {
    /// Reads the store's health (a RocksDB property per column family, one scan of the key
    /// metadata, one reverse seek per partition).
    pub fn health(&self) -> Result<Health, HealthError> {
        let mut h = Health::default();
        let mut active = Vec::new();
        for info in self.partitions()? {
            if info.status == PartitionStatus::Active {
                active.push(info.partition);
            }
        }
        // The storage gauges are RocksDB properties; another engine has its own monitoring.
        if let Some(rocks) = self.inner.engine.as_rocks() {
            rocks_gauges(rocks.db(), &active, &mut h);
        }
        h.nonce_budget_used = self.nonce_budget_used()?;
        for p in active {
            if let Some(cosigned) = self.latest_cosigned_size(&p)? {
                let size = self.inner.size(&p)?;
                h.witness_lag.push((p, size.saturating_sub(cosigned)));
            }
        }
        Ok(h)
    }

    /// The largest `encryptions / dek_rotate_after` of a current DEK version.
    fn nonce_budget_used(&self) -> Result<f64, ReadError> {
        let budget = self.inner.options.dek_rotate_after.max(1) as f64;
        let mut used = 0.0f64;
        for item in self.inner.engine.scan_prefix(&Space::System, b"K")? {
            let (_, v) = item?;
            if let Some(meta) = decode::<KeyMeta>(&v)
                && meta.status == KeyStatus::Current
            {
                used = used.max(meta.encryptions as f64 / budget);
            }
        }
        Ok(used)
    }
}

/// The RocksDB properties of the health gauges: the database's, and the sum over the
/// system family and the active partitions' families.
fn rocks_gauges(db: &rocksdb::DB, active: &[PartitionId], h: &mut Health) {
    let int = |name: &str| db.property_int_value(name).ok().flatten().unwrap_or(0);
    h.write_stopped = int("rocksdb.is-write-stopped") != 0;
    h.delayed_write_rate = int("rocksdb.actual-delayed-write-rate");
    h.block_cache_bytes = int("rocksdb.block-cache-usage");
    let families = std::iter::once(SYS_CF.to_owned()).chain(active.iter().map(partition_cf));
    for name in families {
        if let Some(cf) = db.cf_handle(&name) {
            let prop = |p: &str| db.property_int_value_cf(&cf, p).ok().flatten().unwrap_or(0);
            h.pending_compaction_bytes += prop("rocksdb.estimate-pending-compaction-bytes");
            h.memtable_bytes += prop("rocksdb.cur-size-all-mem-tables");
        }
    }
}
