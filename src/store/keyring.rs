//! The key store's keys (`key_store`: a small RocksDB apart from the data, or the engine's
//! key space) and the in-memory DEK cache.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use super::engine::{EngineError, Pair};
use super::key_store::KeyStore;
use super::records::{
    CREDENTIAL_MAC_KEY, WITNESS_KEY, dek_key, index_key_slot, matching_key_slot, slot_of,
};
use crate::crypto::kek::record_fingerprint;
use crate::crypto::{Dek, IndexKey, KekError, KekProvider, Secret32, WrapPurpose};
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
    #[error("key store")]
    Db(#[from] rocksdb::Error),
    #[error("key store (in the engine)")]
    Engine(#[from] EngineError),
    #[error("the key store is in the engine: it is backed up with the engine")]
    NotLocal,
    #[error("key cache lock poisoned")]
    Poisoned,
    #[error("partition {0}: its keys were destroyed (crypto-shredded)")]
    Shredded(String),
    #[error("key store record {0} is not a kukaku key slot; refusing to rewrap around it")]
    UnknownSlot(String),
}

/// What one rewrap moved to the new KEK: key-store records per partition, and instance keys
/// (signing, witness, prefecture matching keys).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Rewrapped {
    pub(crate) partitions: BTreeMap<PartitionId, u64>,
    pub(crate) instance: u64,
}

impl Rewrapped {
    /// Counts one key-store record: a partition's (DEK, index key) or the instance's.
    fn count(&mut self, purpose: WrapPurpose, scope: &str) {
        match PartitionId::parse(scope) {
            Ok(p) if matches!(purpose, WrapPurpose::Dek | WrapPurpose::IndexKey) => {
                *self.partitions.entry(p).or_default() += 1;
            }
            _ => self.instance += 1,
        }
    }
}

/// A key-store record's slot; a record kukaku does not know stops a rewrap or census.
fn known_slot(key: &[u8]) -> Result<(WrapPurpose, String, u32), KeyError> {
    slot_of(key).ok_or_else(|| KeyError::UnknownSlot(String::from_utf8_lossy(key).into_owned()))
}

pub(crate) struct Keyring {
    store: KeyStore,
    /// The KEK new wraps use first; during a rotation also the next one, so a record under
    /// either unwraps (chosen by the fingerprint the record names).
    keks: RwLock<Vec<Arc<dyn KekProvider>>>,
    /// Held while wrapping a new key and writing it, and for a whole rewrap: no key is
    /// written under a KEK that a rewrap has already passed.
    wrap_lock: Mutex<()>,
    cache: Mutex<HashMap<(PartitionId, u32), Arc<Dek>>>,
    index_keys: Mutex<HashMap<PartitionId, Arc<IndexKey>>>,
    matching_keys: Mutex<HashMap<String, Arc<IndexKey>>>,
    credential_key: Mutex<Option<Arc<IndexKey>>>,
}

impl Keyring {
    pub(crate) fn new(store: KeyStore, kek: Arc<dyn KekProvider>) -> Self {
        Keyring {
            store,
            keks: RwLock::new(vec![kek]),
            wrap_lock: Mutex::new(()),
            cache: Mutex::new(HashMap::new()),
            index_keys: Mutex::new(HashMap::new()),
            matching_keys: Mutex::new(HashMap::new()),
            credential_key: Mutex::new(None),
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
        let wrapped = self.wrap(WrapPurpose::Dek, partition.as_str(), key_id, &secret)?;
        let dek = Arc::new(Dek::new(&secret));
        if let Ok(mut c) = self.cache.lock() {
            c.insert((partition.clone(), key_id), dek);
        }
        Ok((dek_key(partition, key_id), wrapped))
    }

    /// Writes staged key-store records and removals in one synced batch. Removed DEKs leave
    /// the cache too.
    pub(crate) fn commit(
        &self,
        records: Vec<(Vec<u8>, Vec<u8>)>,
        deletes: Vec<Vec<u8>>,
    ) -> Result<(), KeyError> {
        if records.is_empty() && deletes.is_empty() {
            return Ok(());
        }
        self.store.write(records, &deletes)?;
        for k in deletes {
            match slot_of(&k) {
                Some((WrapPurpose::Dek, scope, key_id)) => {
                    if let (Ok(p), Ok(mut c)) = (PartitionId::parse(&scope), self.cache.lock()) {
                        c.remove(&(p, key_id));
                    }
                }
                Some((WrapPurpose::IndexKey, scope, _)) => {
                    if let (Ok(p), Ok(mut c)) = (PartitionId::parse(&scope), self.index_keys.lock())
                    {
                        c.remove(&p);
                    }
                }
                _ => {}
            }
        }
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

    /// The HMAC key of credential records, created on first use.
    pub(crate) fn credential_key(&self) -> Result<Arc<IndexKey>, KeyError> {
        let mut key = self.credential_key.lock().map_err(|_| KeyError::Poisoned)?;
        if let Some(k) = key.as_ref() {
            return Ok(Arc::clone(k));
        }
        let secret =
            self.load_or_create(CREDENTIAL_MAC_KEY, WrapPurpose::CredentialMac, "instance")?;
        let k = Arc::new(IndexKey::new(&secret));
        *key = Some(Arc::clone(&k));
        Ok(k)
    }

    /// An HMAC key from its key-store slot, created (durable before use) on first need.
    fn load_or_create(
        &self,
        slot: &[u8],
        purpose: WrapPurpose,
        scope: &str,
    ) -> Result<Secret32, KeyError> {
        if let Some(wrapped) = self.store.get(slot)? {
            return self.unwrap(purpose, scope, 1, &wrapped);
        }
        let _guard = self.wrap_lock.lock().map_err(|_| KeyError::Poisoned)?;
        if let Some(wrapped) = self.store.get(slot)? {
            return self.unwrap(purpose, scope, 1, &wrapped);
        }
        let secret = Secret32::generate().map_err(KekError::from)?;
        let wrapped = self.wrap(purpose, scope, 1, &secret)?;
        self.store.write(vec![(slot.to_vec(), wrapped)], &[])?;
        Ok(secret)
    }

    /// The DEK for `(partition, key_id)`, unwrapped from the key store on first use.
    pub(crate) fn dek(&self, partition: &PartitionId, key_id: u32) -> Result<Arc<Dek>, KeyError> {
        let key = (partition.clone(), key_id);
        if let Some(d) = self.cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(d);
        }
        let wrapped = self
            .store
            .get(&dek_key(partition, key_id))?
            .ok_or_else(|| KeyError::Missing {
                partition: partition.to_string(),
                key_id,
            })?;
        let secret = self.unwrap(WrapPurpose::Dek, partition.as_str(), key_id, &wrapped)?;
        let dek = Arc::new(Dek::new(&secret));
        if let Ok(mut c) = self.cache.lock() {
            c.insert(key, Arc::clone(&dek));
        }
        Ok(dek)
    }

    fn current_kek(&self) -> Result<Arc<dyn KekProvider>, KeyError> {
        self.keks
            .read()
            .map_err(|_| KeyError::Poisoned)?
            .first()
            .cloned()
            .ok_or(KeyError::Poisoned)
    }

    /// Fingerprint of the KEK new keys are wrapped under.
    pub(crate) fn kek_fingerprint(&self) -> Result<String, KeyError> {
        Ok(self.current_kek()?.fingerprint())
    }

    /// Wraps under the current KEK.
    pub(crate) fn wrap(
        &self,
        purpose: WrapPurpose,
        scope: &str,
        key_id: u32,
        key: &Secret32,
    ) -> Result<Vec<u8>, KeyError> {
        Ok(self.current_kek()?.wrap(purpose, scope, key_id, key)?)
    }

    /// Unwraps under whichever loaded KEK the record names.
    pub(crate) fn unwrap(
        &self,
        purpose: WrapPurpose,
        scope: &str,
        key_id: u32,
        record: &[u8],
    ) -> Result<Secret32, KeyError> {
        let fp = record_fingerprint(record).ok_or(KekError::BadRecord)?;
        let kek = {
            let keks = self.keks.read().map_err(|_| KeyError::Poisoned)?;
            match keks.iter().find(|k| k.fingerprint() == fp) {
                Some(k) => Arc::clone(k),
                None => {
                    return Err(KekError::WrongKek {
                        expected: fp,
                        loaded: keks.first().map(|k| k.fingerprint()).unwrap_or_default(),
                    }
                    .into());
                }
            }
        };
        Ok(kek.unwrap_key(purpose, scope, key_id, record)?)
    }

    /// A stored instance key (signing or witness seed), if present.
    pub(crate) fn instance_key(
        &self,
        slot: &[u8],
        purpose: WrapPurpose,
    ) -> Result<Option<Secret32>, KeyError> {
        let Some(wrapped) = self.store.get(slot)? else {
            return Ok(None);
        };
        let key_id = slot_of(slot).map_or(1, |s| s.2);
        self.unwrap(purpose, "instance", key_id, &wrapped).map(Some)
    }

    /// The instance's witness seed, created (durable before use) on first need.
    pub(crate) fn witness_seed(&self) -> Result<Secret32, KeyError> {
        self.load_or_create(WITNESS_KEY, WrapPurpose::WitnessKey, "instance")
    }

    /// Every record of the key store, in key order.
    pub(crate) fn records(&self) -> Result<Vec<Pair>, KeyError> {
        self.store.records()
    }

    /// A RocksDB checkpoint of a local key store at `dir` (a backup's copy).
    pub(crate) fn checkpoint(&self, dir: &std::path::Path) -> Result<(), KeyError> {
        self.store.checkpoint(dir)
    }

    /// The KEK fingerprint the key store's records are under.
    pub(crate) fn stored_fingerprint(&self) -> Result<Option<String>, KeyError> {
        self.store.fingerprint()
    }

    /// Removes one key-store record (synced), e.g. a retired signing seed.
    pub(crate) fn delete(&self, slot: &[u8]) -> Result<(), KeyError> {
        if self.store.get(slot)?.is_some() {
            self.store.write(Vec::new(), &[slot.to_vec()])?;
        }
        Ok(())
    }

    /// Rewraps every key-store record under `next` in one synced batch, then makes `next`
    /// the only KEK. Readers never miss: while the batch lands, both KEKs unwrap.
    pub(crate) fn rewrap_all(&self, next: Arc<dyn KekProvider>) -> Result<Rewrapped, KeyError> {
        let _guard = self.wrap_lock.lock().map_err(|_| KeyError::Poisoned)?;
        self.keks
            .write()
            .map_err(|_| KeyError::Poisoned)?
            .push(Arc::clone(&next));
        let result = self.rewrap_locked(&next);
        // Failed before the batch: `next` (pushed last) goes. After it, `next` is the only KEK.
        if result.is_err()
            && let Ok(mut keks) = self.keks.write()
            && keks.len() > 1
        {
            keks.pop();
        }
        result
    }

    fn rewrap_locked(&self, next: &Arc<dyn KekProvider>) -> Result<Rewrapped, KeyError> {
        let mut batch = Vec::new();
        let mut done = Rewrapped::default();
        for (k, v) in self.store.records()? {
            let (purpose, scope, key_id) = known_slot(&k)?;
            let secret = self.unwrap(purpose, &scope, key_id, &v)?;
            batch.push((k.into_vec(), next.wrap(purpose, &scope, key_id, &secret)?));
            done.count(purpose, &scope);
        }
        self.store.write(batch, &[])?;
        *self.keks.write().map_err(|_| KeyError::Poisoned)? = vec![Arc::clone(next)];
        self.compact()?;
        Ok(done)
    }

    /// Key-store records per partition (DEKs and the index key) and instance records now.
    pub(crate) fn census(&self) -> Result<Rewrapped, KeyError> {
        let mut out = Rewrapped::default();
        for (k, _) in self.store.records()? {
            let (purpose, scope, _) = known_slot(&k)?;
            out.count(purpose, &scope);
        }
        Ok(out)
    }

    /// Flushes and compacts the key store, so deleted and overwritten records leave its
    /// memtable, WAL and SST files (not the file system's free blocks: docs/keys.md).
    pub(crate) fn compact(&self) -> Result<(), KeyError> {
        self.store.compact()
    }
}
