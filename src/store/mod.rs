//! RocksDB storage: one column family per partition, a system CF, a separate key store, and
//! the single writer with group commit. The only module that names `rocksdb`.

pub mod anchor;
mod audit;
pub mod backup;
mod credentials;
pub(crate) mod engine;
mod health;
pub mod hooks;
mod key_store;
mod keyring;
mod keys;
mod lease;
#[cfg(feature = "postgres")]
mod migrate;
#[cfg(feature = "postgres")]
mod on_postgres;
mod open;
mod placement;
pub mod private;
mod proofs;
mod read;
pub mod records;
mod registry;
pub use open::load_kek;
pub(crate) use registry::read_registry;
mod witness;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, DBCompressionType, Options,
    WriteBufferManager, WriteOptions,
};

pub use credentials::{AuthError, CredentialStoreError};
pub use engine::EngineError;
#[cfg(feature = "postgres")]
pub use engine::PgTarget;
pub use health::{Health, HealthError};
pub use keyring::KeyError;
pub use keys::{DestroyReport, KekRotation, KeyAdminError, KeyInfo, SigningKeyInfo};
pub use lease::Standby;
#[cfg(feature = "postgres")]
pub use migrate::{MigrateError, MigrateReport};
#[cfg(feature = "postgres")]
pub use on_postgres::EngineRecord;
pub use placement::{DropReport, PartitionMoveReport, PlacementError};
pub use read::{Entry, ReadError, VerifyOptions, VerifyReport};
pub use records::PartitionStatus;
pub use records::{ReplicaState, TransmissionRecord};
pub use witness::{CosignError, CosignatureAccepted};
pub use writer::{
    AppendError, AppendOptions, AppendReceipt, Claim, DestroyScope, IndexKind, KeyActor, NewEntry,
    ReencryptStep, StorageError,
};

use crate::crypto::{
    CheckpointSigner, Cosigner, Kek, KekError, KekProvider, KekSource, Secret32, WrapPurpose,
};
use crate::ledger::note::VerifierKey;
use crate::ledger::{Checkpoint, PartitionId};
use keyring::Keyring;
use records::{
    INSTANCE_KEY, InstanceRecord, PartitionRecord, REGISTRY_PREFIX, SIGNING_KEY, SYS_CF, decode,
    encode, partition_cf, registry_key,
};

/// Version of the on-disk layout written by this code.
pub const FORMAT_VERSION: u16 = 1;

/// Where an instance keeps its parts. The key store and KEK may live elsewhere than the data.
/// A KEK in an HSM is named by `kek.pkcs11` beside where `kek.key` would be
/// ([`Paths::kek_pkcs11`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// RocksDB data directory (partition CFs and the system CF).
    pub data: PathBuf,
    /// RocksDB key store: wrapped key material only. Back it up separately.
    pub key_store: PathBuf,
    /// KEK file, mode 0600.
    pub kek: PathBuf,
    /// The admin socket of a running `kukaku serve` (mode 0600).
    pub admin_socket: PathBuf,
    /// Acknowledged sizes outside RocksDB (`store::anchor`): a log found shorter at open is
    /// refused. Back it up together with `data/`.
    pub anchor: PathBuf,
}

impl Paths {
    /// Which engine holds the data when it is not the embedded RocksDB (`engine.json`
    /// beside the key store).
    pub fn engine_record(&self) -> PathBuf {
        self.key_store.with_file_name("engine.json")
    }

    /// The HSM configuration that replaces the KEK file when present (`crypto::pkcs11`).
    pub fn kek_pkcs11(&self) -> PathBuf {
        self.kek.with_extension("pkcs11")
    }
}

impl Paths {
    /// The default layout under one home directory.
    pub fn under(home: &Path) -> Self {
        Paths {
            data: home.join("data"),
            key_store: home.join("keystore"),
            kek: home.join("kek.key"),
            admin_socket: home.join("admin.sock"),
            anchor: home.join("acked.anchor"),
        }
    }
}

/// Memory and batching settings (docs/design.md §9). Defaults keep memory bounded with thousands of
/// partitions: one shared block cache with the write buffer manager charged to it.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub block_cache_bytes: usize,
    pub write_buffer_manager_bytes: usize,
    pub write_buffer_bytes: usize,
    /// Memtable arena block size (what a partition's memtable takes at least once written).
    pub arena_block_bytes: usize,
    pub max_total_wal_bytes: u64,
    /// Most commands one group commit takes.
    pub max_batch_commands: usize,
    /// Most payload bytes one group commit takes (a larger single command still goes alone).
    pub max_batch_bytes: usize,
    /// Encryptions per DEK version before the writer rotates it (random 96-bit nonces).
    pub dek_rotate_after: u64,
    /// Depth of the writer's queue.
    pub queue_depth: usize,
    /// On a replicated engine: how long the writer row stays this process's after a commit
    /// or a renewal (a background thread renews it every third of that), and how long an
    /// open waits for another writer's to lapse.
    pub writer_lease: std::time::Duration,
    pub writer_patience: std::time::Duration,
    /// Test hooks: a clock offset and injected storage faults. Only with the `test-hooks`
    /// feature, which the test suites enable and the shipped binary does not.
    #[cfg(feature = "test-hooks")]
    pub hooks: hooks::TestHooks,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            block_cache_bytes: 512 << 20,
            write_buffer_manager_bytes: 256 << 20,
            write_buffer_bytes: 32 << 20,
            arena_block_bytes: 256 << 10,
            max_total_wal_bytes: 256 << 20,
            max_batch_commands: 4096,
            max_batch_bytes: 16 << 20,
            dek_rotate_after: 1 << 30,
            queue_depth: 8192,
            writer_lease: std::time::Duration::from_secs(10),
            writer_patience: std::time::Duration::from_secs(30),
            #[cfg(feature = "test-hooks")]
            hooks: hooks::TestHooks::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error(transparent)]
    Kek(#[from] KekError),
    #[error("storage")]
    Db(#[from] rocksdb::Error),
    #[error("the storage engine")]
    Engine(#[from] EngineError),
    #[error("schema {0} already holds an instance")]
    SchemaInUse(String),
    #[error("{path}")]
    EngineRecordIo {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("{path}: not an engine record")]
    EngineRecordFormat {
        path: PathBuf,
        #[source]
        error: serde_json::Error,
    },
    #[error("{path}: unknown engine {engine:?} (known: postgres)")]
    UnknownEngine { path: PathBuf, engine: String },
    #[error("{0} is readable by others; it may hold a password: chmod 600 it")]
    DsnFileReadable(PathBuf),
    #[error("{0} names an engine this kukaku was built without (build with --features postgres)")]
    EngineNotBuilt(PathBuf),
    #[error("the instance at {0} is in use by another process (is `kukaku serve` running?)")]
    InUse(PathBuf),
    #[error("no kukaku instance at {0}; run `kukaku init` first")]
    NotInitialized(PathBuf),
    #[error("an instance already exists at {0}")]
    AlreadyInitialized(PathBuf),
    #[error("instance metadata is unreadable")]
    BadInstanceRecord,
    #[error("instance format {0} is not supported by this build")]
    Format(u16),
    #[error("the KEK does not belong to this instance (instance KEK {expected}, loaded {loaded})")]
    WrongKek { expected: String, loaded: String },
    #[error("signing key: {0}")]
    Signing(String),
    #[error("the origin line")]
    Origin(#[source] crate::ledger::note::NoteError),
    #[error("the instance's signing or witness key")]
    Signer(#[source] crate::crypto::signer::SignerError),
    #[error("the key store")]
    KeyStore(#[source] KeyError),
    #[error("reading the partition registry")]
    Registry(#[source] ProvisionError),
    #[error("finishing an interrupted KEK rotation")]
    KekRotation(#[source] KeyAdminError),
    #[error("could not start the writer thread")]
    Thread(#[source] std::io::Error),
    #[error(transparent)]
    Anchor(#[from] anchor::AnchorError),
    #[error(transparent)]
    Private(#[from] private::PrivateError),
    #[error("credential records")]
    Credentials(#[source] credentials::CredentialStoreError),
    #[error(
        "the data directory {path} is damaged ({detail}); nothing was repaired. Restore it \
         from a backup (with its acked.anchor)"
    )]
    Damaged { path: PathBuf, detail: String },
    #[error(
        "partition {partition}: the log ends at size {found}, but {anchored} entries were \
         acknowledged (anchor {anchor}): acknowledged batches are missing (a truncated or \
         replaced WAL, or an older copy of data/). Nothing was appended or repaired. Restore the matching \
         data/, or, to accept the older state on purpose, move the anchor file away"
    )]
    RolledBack {
        partition: PartitionId,
        anchored: u64,
        found: u64,
        anchor: PathBuf,
    },
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    #[error("storage")]
    Db(#[from] rocksdb::Error),
    #[error("the storage engine")]
    Engine(#[from] EngineError),
    #[error("registry record of partition {0} is unreadable")]
    BadRecord(String),
    #[error("partition {partition}")]
    Append {
        partition: PartitionId,
        #[source]
        error: AppendError,
    },
    #[error("encoding a registry record")]
    Encode(#[source] bincode::error::EncodeError),
    #[error("writer")]
    Writer(#[source] AppendError),
    #[error("partition {0} is not registered")]
    Unregistered(PartitionId),
    #[error("a partition's name is 1-40 characters of text, no control character")]
    BadName,
    #[error("encoding the operator's log entry")]
    Json(#[source] serde_json::Error),
}

/// One action of a continuity operator, as the console's log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OperatorAction {
    pub at_ms: u64,
    /// `extract` or `confirm`, and where it came from (`console` or `api`).
    pub action: String,
    pub via: String,
    /// What it did, in counts (e.g. `as_of 2025-03-31: 12 candidates, 0 outside`).
    pub summary: String,
}

/// One partition's registry entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: PartitionId,
    pub status: PartitionStatus,
    pub requested_ms: u64,
    pub activated_ms: u64,
}

/// Encodes a replica state for [`AppendOptions::replica_state`].
pub fn encode_replica_state(s: &ReplicaState) -> Result<Vec<u8>, bincode::error::EncodeError> {
    encode(s)
}

/// Wall-clock Unix milliseconds, as the store stamps records.
pub fn now_unix_ms() -> u64 {
    now_ms()
}

/// Today (UTC) as days since 1970-01-01: the `valid_from` of records stamped now.
pub fn today_days() -> i32 {
    i32::try_from(now_ms() / 86_400_000).unwrap_or(0)
}

/// Today's date in Japan (JST, UTC+9, no daylight saving) as days since 1970-01-01: the
/// date a municipality's clerk and the 連合会's jobs go by.
pub fn today_jst() -> i32 {
    i32::try_from((now_ms() + 9 * 3_600_000) / 86_400_000).unwrap_or(0)
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) struct Inner {
    /// The storage engine (the seam, `engine`).
    pub(crate) engine: Arc<dyn engine::Engine>,
    /// Durable sizes for the rollback check at the next open (`anchor`).
    pub(crate) anchor: Arc<anchor::Anchor>,
    pub(crate) keyring: Keyring,
    pub(crate) origin: String,
    /// Signs checkpoints: one key, or two during a signing-key rotation. Swapped by the
    /// writer only (keyops).
    pub(crate) signer: std::sync::RwLock<Arc<CheckpointSigner>>,
    /// Every signing key the instance has had (retired ones still verify old checkpoints).
    pub(crate) signing_keys: std::sync::RwLock<Vec<records::SigningKeyRecord>>,
    /// The witness key (cosigns another instance's checkpoints).
    pub(crate) cosigner: Cosigner,
    /// Serializes read-merge-write of cosigned checkpoints.
    pub(crate) cosign_lock: Mutex<()>,
    pub(crate) options: StoreOptions,
    pub(crate) poisoned: AtomicBool,
    /// Partitions whose stored state failed a check at open, with the reason.
    pub(crate) quarantined: Mutex<BTreeMap<PartitionId, String>>,
    /// Where the KEK comes from; `None` for a store opened with a fixed KEK.
    pub(crate) kek_source: Option<Box<dyn KekSource>>,
    /// One key-management operation at a time (they span several writer steps).
    pub(crate) key_admin: Mutex<()>,
}

impl Inner {
    /// Marks the store poisoned (it accepts no more appends until reopened) and says so in
    /// the poisoned gauge.
    pub(crate) fn poison(&self) {
        self.poisoned.store(true, Ordering::SeqCst);
        metrics::gauge!(crate::telemetry::POISONED).set(1.0);
    }

    /// The current checkpoint signer.
    pub(crate) fn signer(&self) -> Arc<CheckpointSigner> {
        match self.signer.read() {
            Ok(s) => Arc::clone(&s),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The verifier key of `p` that `note` claims a signature by: any signing key the
    /// instance has had (retired keys signed older checkpoints). The newest key if the note
    /// names none of them (its verification then fails, as it should).
    pub(crate) fn key_for_note(&self, p: &PartitionId, note: &str) -> Option<VerifierKey> {
        let name = format!("{}/{p}", self.origin);
        let known: Vec<VerifierKey> = self
            .signing_keys
            .read()
            .map(|k| {
                k.iter()
                    .rev()
                    .filter_map(|k| VerifierKey::new(&name, k.public).ok())
                    .collect()
            })
            .unwrap_or_default();
        crate::ledger::note::key_for(note, &known)
            .cloned()
            .or_else(|| self.signer().verifier_key(p).ok())
    }
}

/// An open kukaku instance.
pub struct Store {
    inner: Arc<Inner>,
    writer: writer::WriterHandle,
    /// Dropped after the writer has stopped: it writes the last durable sizes.
    _anchor: anchor::AnchorHandle,
    /// Renews the writer's lease on a replicated engine (none on RocksDB).
    _lease: Option<lease::LeaseHandle>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("origin", &self.inner.origin)
            .finish_non_exhaustive()
    }
}

pub(crate) fn sync_write() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
}

impl Store {
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    /// The instance's checkpoint key under the instance origin: auditors pin it once
    /// (`log` line of a kukaku-audit trust file) for every partition's `<origin>/<partition>`.
    pub fn log_key(&self) -> Option<VerifierKey> {
        VerifierKey::new(&self.inner.origin, self.inner.signer().public_key()).ok()
    }

    /// The C2SP verifier key auditors pin for a partition.
    pub fn verifier_key(&self, partition: &PartitionId) -> Option<VerifierKey> {
        self.inner.signer().verifier_key(partition).ok()
    }

    /// Writes failed since open: the store refuses writes until reopened.
    pub fn is_poisoned(&self) -> bool {
        self.inner.poisoned.load(Ordering::SeqCst)
    }

    /// The partition's blind-index key (created on first use). Only `flows` should need it.
    pub fn index_key(
        &self,
        partition: &PartitionId,
    ) -> Result<Arc<crate::crypto::IndexKey>, keyring::KeyError> {
        if self.is_shredded(partition) {
            return Err(keyring::KeyError::Shredded(partition.to_string()));
        }
        self.inner.keyring.index_key(partition)
    }

    /// Whether every key of the partition was destroyed (`kukaku keys destroy`): its log
    /// stays and verifies, its bodies are unreadable, and flows leave it out.
    pub fn is_shredded(&self, partition: &PartitionId) -> bool {
        self.inner
            .engine
            .get(&engine::Space::System, &records::shred_key(partition))
            .ok()
            .flatten()
            .is_some()
    }

    /// The matching key of a prefecture (flow 4): its tokens join partitions of that
    /// prefecture only. Created on first use, durable before use.
    pub fn matching_key(
        &self,
        prefecture: &str,
    ) -> Result<Arc<crate::crypto::IndexKey>, keyring::KeyError> {
        self.inner.keyring.matching_key(prefecture)
    }

    /// Whether the writer thread is still running.
    pub fn writer_alive(&self) -> bool {
        self.writer.alive()
    }

    /// Partitions that failed the open-time check, with the reason.
    pub fn quarantined(&self) -> BTreeMap<PartitionId, String> {
        self.inner
            .quarantined
            .lock()
            .map(|q| q.clone())
            .unwrap_or_default()
    }

    /// Appends entries to one partition atomically; returns after the batch is durable.
    pub fn append(
        &self,
        partition: &PartitionId,
        entries: Vec<NewEntry>,
    ) -> Result<AppendReceipt, AppendError> {
        self.writer
            .append(partition.clone(), entries, AppendOptions::default())
    }

    /// Async form of [`Store::append`] for callers on a tokio runtime.
    pub async fn append_async(
        &self,
        partition: &PartitionId,
        entries: Vec<NewEntry>,
    ) -> Result<AppendReceipt, AppendError> {
        self.writer
            .append_async(partition.clone(), entries, AppendOptions::default())
            .await
    }

    /// Appends with options: a claimed transmission id (atomic with the entries; a retry
    /// with the same content gets `AppendError::AlreadyStored`, different content
    /// `AppendError::Conflict`) and an access record completed by the writer.
    pub fn append_with(
        &self,
        partition: &PartitionId,
        entries: Vec<NewEntry>,
        opts: AppendOptions,
    ) -> Result<AppendReceipt, AppendError> {
        self.writer.append(partition.clone(), entries, opts)
    }

    /// Async form of [`Store::append_with`].
    pub async fn append_with_async(
        &self,
        partition: &PartitionId,
        entries: Vec<NewEntry>,
        opts: AppendOptions,
    ) -> Result<AppendReceipt, AppendError> {
        self.writer
            .append_async(partition.clone(), entries, opts)
            .await
    }

    /// The latest signed checkpoint of a partition.
    pub fn checkpoint(&self, partition: &PartitionId) -> Result<Option<String>, ReadError> {
        self.inner.latest_checkpoint(partition)
    }

    /// The latest checkpoint, parsed and verified with the instance key.
    pub fn checkpoint_parsed(
        &self,
        partition: &PartitionId,
    ) -> Result<Option<Checkpoint>, ReadError> {
        let Some(note) = self.checkpoint(partition)? else {
            return Ok(None);
        };
        let key = self
            .inner
            .key_for_note(partition, &note)
            .ok_or_else(|| ReadError::UnknownPartition(partition.clone()))?;
        Checkpoint::verify_note(&note, &key)
            .map(Some)
            .map_err(|e| ReadError::Corrupt {
                partition: partition.clone(),
                seq: 0,
                step: format!("latest checkpoint: {}", crate::error::report(&e)),
            })
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.writer.shutdown();
    }
}
