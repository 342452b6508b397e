//! The key store (a small RocksDB apart from the data) and the in-memory DEK cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rocksdb::DB;

use super::records::{dek_key, index_key_slot, matching_key_slot};
use super::sync_write;
use crate::crypto::{Dek, IndexKey, Kek, KekError, Secret32, WrapPurpose};
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
    #[error("key cache lock poisoned")]
    Poisoned,
}

pub(crate) struct Keyring {
    store: DB,
    kek: Kek,
    cache: Mutex<HashMap<(PartitionId, u32), Arc<Dek>>>,
    index_keys: Mutex<HashMap<PartitionId, Arc<IndexKey>>>,
    matching_keys: Mutex<HashMap<String, Arc<IndexKey>>>,
}

impl Keyring {
    pub(crate) fn new(store: DB, kek: Kek) -> Self {
        Keyring {
            store,
            kek,
            cache: Mutex::new(HashMap::new()),
            index_keys: Mutex::new(HashMap::new()),
            matching_keys: Mutex::new(HashMap::new()),
        }
    }

    /// Creates DEK material for `(partition, key_id)`, caches it, and returns its key-store
    /// record (key, wrapped value). The caller makes the record durable with
    /// [`Keyring::commit`] before anything encrypted under the DEK is written.
    pub(crate) fn stage_dek(
        &self,
        partition: &PartitionId,
        key_id: u32,
    ) -> Result<(Vec<u8>, Vec<u8>), KeyError> {
        let secret = Secret32::generate().map_err(KekError::from)?;
        let wrapped = self
            .kek
            .wrap(WrapPurpose::Dek, partition.as_str(), key_id, &secret)?;
        let dek = Arc::new(Dek::new(&secret));
        if let Ok(mut c) = self.cache.lock() {
            c.insert((partition.clone(), key_id), dek);
        }
        Ok((dek_key(partition, key_id), wrapped))
    }

    /// Writes staged key-store records in one synced batch.
    pub(crate) fn commit(&self, records: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), KeyError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut batch = rocksdb::WriteBatch::default();
        for (k, v) in records {
            batch.put(k, v);
        }
        self.store.write_opt(batch, &sync_write())?;
        Ok(())
    }

    /// The partition's blind-index key: unwrapped from the key store, or created (durable
    /// before it is returned) on first use. The lock makes creation happen once.
    pub(crate) fn index_key(&self, partition: &PartitionId) -> Result<Arc<IndexKey>, KeyError> {
        let mut keys = self.index_keys.lock().map_err(|_| KeyError::Poisoned)?;
        if let Some(k) = keys.get(partition) {
            return Ok(Arc::clone(k));
        }
        let secret = self.load_or_create(
            &index_key_slot(partition),
            WrapPurpose::IndexKey,
            partition.as_str(),
        )?;
        let key = Arc::new(IndexKey::new(&secret));
        keys.insert(partition.clone(), Arc::clone(&key));
        Ok(key)
    }

    /// The matching key of a prefecture (`01`–`47`): HMAC tokens that the continuity job
    /// joins across that prefecture's partitions, and nowhere else.
    pub(crate) fn matching_key(&self, prefecture: &str) -> Result<Arc<IndexKey>, KeyError> {
        let mut keys = self.matching_keys.lock().map_err(|_| KeyError::Poisoned)?;
        if let Some(k) = keys.get(prefecture) {
            return Ok(Arc::clone(k));
        }
        let scope = format!("prefecture:{prefecture}");
        let secret = self.load_or_create(
            &matching_key_slot(prefecture),
            WrapPurpose::MatchingKey,
            &scope,
        )?;
        let key = Arc::new(IndexKey::new(&secret));
        keys.insert(prefecture.to_owned(), Arc::clone(&key));
        Ok(key)
    }

    /// An HMAC key from its key-store slot, created (durable before use) on first need.
    fn load_or_create(
        &self,
        slot: &[u8],
        purpose: WrapPurpose,
        scope: &str,
    ) -> Result<Secret32, KeyError> {
        match self.store.get(slot)? {
            Some(wrapped) => Ok(self.kek.unwrap_key(purpose, scope, 1, &wrapped)?),
            None => {
                let secret = Secret32::generate().map_err(KekError::from)?;
                let wrapped = self.kek.wrap(purpose, scope, 1, &secret)?;
                self.store.put_opt(slot, wrapped, &sync_write())?;
                Ok(secret)
            }
        }
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
