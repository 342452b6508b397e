//! The key store (a small RocksDB apart from the data) and the in-memory DEK cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rocksdb::DB;

use super::records::dek_key;
use super::sync_write;
use crate::crypto::{Dek, Kek, KekError, Secret32, WrapPurpose};
use crate::ledger::PartitionId;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error(
        "key {key_id} of partition {partition} is not in the key store (destroyed or key store older than the data)"
    )]
    Missing { partition: String, key_id: u32 },
    #[error(transparent)]
    Kek(#[from] KekError),
    #[error("key store: {0}")]
    Db(#[from] rocksdb::Error),
}

pub(crate) struct Keyring {
    store: DB,
    kek: Kek,
    cache: Mutex<HashMap<(PartitionId, u32), Arc<Dek>>>,
}

impl Keyring {
    pub(crate) fn new(store: DB, kek: Kek) -> Self {
        Keyring {
            store,
            kek,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Creates DEK material for `(partition, key_id)` and makes it durable before returning.
    pub(crate) fn create_dek(
        &self,
        partition: &PartitionId,
        key_id: u32,
    ) -> Result<Arc<Dek>, KeyError> {
        let secret = Secret32::generate().map_err(KekError::from)?;
        let wrapped = self
            .kek
            .wrap(WrapPurpose::Dek, partition.as_str(), key_id, &secret)?;
        self.store
            .put_opt(dek_key(partition, key_id), wrapped, &sync_write())?;
        let dek = Arc::new(Dek::new(&secret));
        if let Ok(mut c) = self.cache.lock() {
            c.insert((partition.clone(), key_id), Arc::clone(&dek));
        }
        Ok(dek)
    }

    /// The DEK for `(partition, key_id)`, unwrapped from the key store on first use.
    pub(crate) fn dek(&self, partition: &PartitionId, key_id: u32) -> Result<Arc<Dek>, KeyError> {
        let key = (partition.clone(), key_id);
        if let Some(d) = self.cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(d);
        }
        let wrapped =
            self.store
                .get(dek_key(partition, key_id))?
                .ok_or_else(|| KeyError::Missing {
                    partition: partition.to_string(),
                    key_id,
                })?;
        let secret = self
            .kek
            .unwrap_key(WrapPurpose::Dek, partition.as_str(), key_id, &wrapped)?;
        let dek = Arc::new(Dek::new(&secret));
        if let Ok(mut c) = self.cache.lock() {
            c.insert(key, Arc::clone(&dek));
        }
        Ok(dek)
    }
}
