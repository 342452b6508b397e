//! RocksDB storage: one column family per partition, a system CF, a separate key store, and
//! the single writer with group commit. The only module that names `rocksdb`.

pub mod anchor;
mod credentials;
mod keyring;
mod keys;
pub mod private;
mod read;
pub mod records;
mod registry;
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
pub use keyring::KeyError;
pub use keys::{DestroyReport, KekRotation, KeyAdminError, KeyInfo, SigningKeyInfo};
pub use read::{Entry, ReadError, VerifyOptions, VerifyReport};
pub use records::PartitionStatus;
pub use records::{ReplicaState, TransmissionRecord};
pub use witness::{CosignError, CosignatureAccepted};
pub use writer::{
    AppendError, AppendOptions, AppendReceipt, Claim, DestroyScope, IndexKind, KeyActor, NewEntry,
    ReencryptStep,
};

use crate::crypto::{
    CheckpointSigner, Cosigner, Kek, KekError, KekFile, KekProvider, KekSource, Secret32,
    WrapPurpose,
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
    /// Added to the wall clock the writer stamps entries with. Tests use it to make entries
    /// of an earlier fiscal year; always 0 in the binary.
    #[doc(hidden)]
    pub clock_offset_ms: i64,
    /// Injected storage faults (tests of poisoning); `None` in the binary.
    #[doc(hidden)]
    pub faults: Option<Arc<FaultPlan>>,
}

/// Storage faults to inject below the writer (tests): the n-th synced write of the key store
/// or of the data batch fails as a failed `fsync` or a full disk would.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct FaultPlan {
    /// Data batches that still succeed before one fails (`u64::MAX`: never).
    pub data_writes_left: std::sync::atomic::AtomicU64,
    /// Key-store batches that still succeed before one fails (`u64::MAX`: never).
    pub key_writes_left: std::sync::atomic::AtomicU64,
}

impl FaultPlan {
    /// Fails the data batch after `data` good ones and the key-store batch after `keys`.
    pub fn new(data: u64, keys: u64) -> Arc<Self> {
        Arc::new(FaultPlan {
            data_writes_left: data.into(),
            key_writes_left: keys.into(),
        })
    }

    /// Whether this write is the one to fail (counts it down otherwise).
    pub(crate) fn fails(counter: &std::sync::atomic::AtomicU64) -> bool {
        let before = counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
            0 | u64::MAX => None,
            n => Some(n - 1),
        });
        before == Err(0)
    }
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
            clock_offset_ms: 0,
            faults: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error(transparent)]
    Kek(#[from] KekError),
    #[error("storage: {0}")]
    Db(#[from] rocksdb::Error),
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
    #[error("partition registry: {0}")]
    Registry(String),
    #[error("could not start the writer thread: {0}")]
    Thread(std::io::Error),
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
        partition: String,
        anchored: u64,
        found: u64,
        anchor: PathBuf,
    },
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    #[error("storage: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("registry record of partition {0} is unreadable")]
    BadRecord(String),
    #[error("partition {partition}: {error}")]
    Append {
        partition: String,
        error: AppendError,
    },
    #[error("record encoding: {0}")]
    Encode(String),
    #[error("writer: {0}")]
    Writer(AppendError),
    #[error("partition {0} is not registered")]
    Unregistered(String),
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
    pub(crate) db: DB,
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
    pub(crate) cf_options: Options,
    pub(crate) poisoned: AtomicBool,
    /// Partitions whose stored state failed a check at open, with the reason.
    pub(crate) quarantined: Mutex<BTreeMap<PartitionId, String>>,
    /// Where the KEK comes from; `None` for a store opened with a fixed KEK.
    pub(crate) kek_source: Option<Box<dyn KekSource>>,
    /// One key-management operation at a time (they span several writer steps).
    pub(crate) key_admin: Mutex<()>,
}

impl Inner {
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

enum KekChoice {
    Fixed(Arc<dyn KekProvider>),
    Source(Box<dyn KekSource>),
}

/// An open kukaku instance.
pub struct Store {
    inner: Arc<Inner>,
    writer: writer::WriterHandle,
    /// Dropped after the writer has stopped: it writes the last durable sizes.
    _anchor: anchor::AnchorHandle,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("origin", &self.inner.origin)
            .finish_non_exhaustive()
    }
}

/// Database options the `rocksdb` crate has no setter for, in RocksDB's options-string
/// syntax. At open, the memtables rebuilt from the WAL stay memtables instead of being
/// flushed to one small table file per column family, and the WAL they came from stays
/// until a later flush: a refused open (`RolledBack`) leaves the WAL as it was. Only while
/// the replayed memtables fit the write-buffer budget: past it (3,500 partitions of one
/// arena block each) recovery still flushes (docs/benchmarks.md).
const DB_OPTIONS_TEXT: &str = "avoid_flush_during_recovery=true";

/// Column-family options without a setter, likewise. Keys of one kind in one partition are
/// written in ascending order (`E`, `C`, `N` per level, docs/format.md §7), so the memtable
/// keeps an insert hint per 2-byte key prefix and appends after the last key of that prefix
/// instead of searching the skip list from the top (the search was the writer thread's
/// largest cost, docs/benchmarks.md). RocksDB uses the hint for a write group of one batch,
/// which is nearly every group: the rare group that another thread's write (a credential,
/// a witness cosignature) joins is inserted concurrently, without the hint, as before.
const FAMILY_OPTIONS_TEXT: &str =
    "memtable_insert_with_hint_prefix_extractor=rocksdb.FixedPrefix.2";

fn db_options(
    o: &StoreOptions,
    cache: &Cache,
    wbm: &WriteBufferManager,
) -> Result<(Options, Options), rocksdb::Error> {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    table.set_bloom_filter(10.0, false);

    let family = |opts: &mut Options| {
        opts.set_block_based_table_factory(&table);
        opts.set_write_buffer_size(o.write_buffer_bytes);
        // Memtable memory grows in blocks of this size, so a large write buffer costs an
        // idle partition nothing; the write buffer manager caps the total
        // (docs/benchmarks.md).
        opts.set_arena_block_size(o.arena_block_bytes);
        opts.set_max_write_buffer_number(2);
        // Ciphertext does not compress.
        opts.set_compression_type(DBCompressionType::None);
    };
    let mut cf = Options::default().get_options_from_string(FAMILY_OPTIONS_TEXT)?;
    family(&mut cf);

    let mut db = Options::default()
        .get_options_from_string(format!("{DB_OPTIONS_TEXT};{FAMILY_OPTIONS_TEXT}"))?;
    family(&mut db);
    db.create_if_missing(true);
    db.create_missing_column_families(true);
    db.set_write_buffer_manager(wbm);
    db.set_max_total_wal_size(o.max_total_wal_bytes);
    db.set_skip_stats_update_on_db_open(true);
    db.set_max_open_files(4096);
    // At open RocksDB loads each family's table files with this many threads, the extra
    // ones started and joined per family: the default 16 meant up to 52,500 short-lived
    // threads for 3,500 partitions with a file or two each (docs/benchmarks.md).
    db.set_max_file_opening_threads(1);
    // A torn last WAL record is what a crash leaves of a batch that was never acknowledged:
    // dropped. Damage anywhere before it fails the open instead of silently ending the log
    // there (the default, point-in-time recovery, would drop every later batch).
    db.set_wal_recovery_mode(rocksdb::DBRecoveryMode::TolerateCorruptedTailRecords);
    // Closed WALs must be present and whole (their synced sizes are kept in the MANIFEST).
    db.set_track_and_verify_wals_in_manifest(true);
    Ok((db, cf))
}

fn key_store_options() -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.set_compression_type(DBCompressionType::None);
    o.set_write_buffer_size(1 << 20);
    o
}

pub(crate) fn sync_write() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
}

/// The instance's witness key from the key store; an instance made before witnessing gets
/// one now (durable before first use).
fn load_cosigner(keyring: &Keyring, origin: &str) -> Result<Cosigner, OpenError> {
    let seed = keyring
        .witness_seed()
        .map_err(|e| OpenError::Signing(e.to_string()))?;
    Cosigner::from_seed(origin, &seed).map_err(|e| OpenError::Signing(e.to_string()))
}

/// The signing keys the instance has had: the `J` record, or version 1 alone.
fn read_signing_keys(
    db: &DB,
    record: &InstanceRecord,
) -> Result<Vec<records::SigningKeyRecord>, OpenError> {
    let sys = db.cf_handle(SYS_CF).ok_or(OpenError::BadInstanceRecord)?;
    match db.get_cf(&sys, records::SIGNING_KEYS)? {
        Some(raw) => decode::<records::SigningKeys>(&raw)
            .map(|k| k.keys)
            .ok_or_else(|| OpenError::Signing("signing key list unreadable".into())),
        None => Ok(vec![records::SigningKeyRecord {
            version: 1,
            public: record.signing_public_key,
            added_ms: record.created_ms,
            retired_ms: 0,
        }]),
    }
}

/// The signer of the keys that sign now (each checked against its recorded public key);
/// seeds of retired keys a crash left in the key store are removed.
fn load_signer(
    keyring: &Keyring,
    origin: &str,
    keys: &[records::SigningKeyRecord],
) -> Result<CheckpointSigner, OpenError> {
    let signing_err = |e: String| OpenError::Signing(e);
    let mut seeds = Vec::new();
    for k in keys {
        let slot = records::signing_key_slot(k.version);
        if k.retired_ms != 0 {
            keyring
                .delete(&slot)
                .map_err(|e| signing_err(e.to_string()))?;
            continue;
        }
        let seed = keyring
            .instance_key(&slot, WrapPurpose::SigningKey)
            .map_err(|e| signing_err(e.to_string()))?
            .ok_or_else(|| signing_err(format!("key v{} missing from the key store", k.version)))?;
        if crate::crypto::signer::public_key_of(&seed).ok() != Some(k.public) {
            return Err(signing_err(format!(
                "key store signing key v{} does not match the instance record",
                k.version
            )));
        }
        seeds.push(seed);
    }
    let refs: Vec<&Secret32> = seeds.iter().collect();
    CheckpointSigner::from_seeds(origin, &refs).map_err(|e| signing_err(e.to_string()))
}

/// Which KEK opens the key store, finishing or undoing a rotation a crash interrupted: a
/// staged KEK the key store is already under wins (its rotation committed); a staged KEK the
/// key store is not under is destroyed (its rotation never reached the key store).
fn choose_kek(
    source: &dyn KekSource,
    stored: Option<&str>,
) -> Result<(Arc<dyn KekProvider>, bool), OpenError> {
    if let Some(next) = source.staged()? {
        if Some(next.fingerprint().as_str()) == stored {
            return Ok((Arc::from(next), true));
        }
        tracing::warn!("an interrupted KEK rotation never reached the key store; undoing it");
        source.discard()?;
    }
    Ok((Arc::from(source.load()?), false))
}

/// The home directory when the instance uses the default layout ([`Paths::under`]).
fn home_of(paths: &Paths) -> Option<&Path> {
    paths
        .data
        .parent()
        .filter(|h| paths.key_store.parent() == Some(*h) && paths.anchor.parent() == Some(*h))
}

/// Owner-only files (`private`): the process umask, the data directory, the key store and,
/// in the default layout, the home that holds them; older files are tightened to 0600.
fn check_private(paths: &Paths) -> Result<(), OpenError> {
    private::restrict_umask();
    for dir in home_of(paths)
        .into_iter()
        .chain([paths.data.as_path(), paths.key_store.as_path()])
    {
        private::check_dir(dir)?;
    }
    for dir in [&paths.data, &paths.key_store] {
        let n = private::tighten_files(dir)?;
        if n > 0 {
            tracing::warn!(dir = %dir.display(), files = n, "files readable by group or others were made owner-only (0600)");
        }
    }
    if paths.anchor.exists() {
        private::set_mode(&paths.anchor, 0o600)?;
    }
    Ok(())
}

impl Store {
    /// Creates a new instance: KEK file (0600), key store with the Ed25519 checkpoint key, and
    /// the data directory with its system CF. Returns the open store.
    pub fn init(paths: &Paths, origin: &str, options: StoreOptions) -> Result<Store, OpenError> {
        crate::crypto::signer::validate_origin(origin)
            .map_err(|e| OpenError::Signing(e.to_string()))?;
        if paths.data.join("CURRENT").exists() {
            return Err(OpenError::AlreadyInitialized(paths.data.clone()));
        }
        if paths.key_store.join("CURRENT").exists() {
            return Err(OpenError::AlreadyInitialized(paths.key_store.clone()));
        }
        private::restrict_umask();
        for dir in [&paths.data, &paths.key_store] {
            private::create_dir(dir)?;
        }
        // A new instance's home (default layout) is owner-only too, even if it existed.
        if let Some(home) = home_of(paths) {
            private::set_mode(home, 0o700)?;
        }
        let kek = match Kek::load_file(&paths.kek) {
            Ok(k) => k,
            Err(KekError::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
                Kek::create_file(&paths.kek)?
            }
            Err(e) => return Err(e.into()),
        };
        let seed = Secret32::generate().map_err(KekError::from)?;
        let signer = CheckpointSigner::from_seed(origin, &seed)
            .map_err(|e| OpenError::Signing(e.to_string()))?;
        let wrapped = kek.wrap(WrapPurpose::SigningKey, "instance", 1, &seed)?;
        let keys = DB::open(&key_store_options(), &paths.key_store)?;
        keys.put_opt(SIGNING_KEY, wrapped, &sync_write())?;
        drop(keys);

        let cache = Cache::new_lru_cache(options.block_cache_bytes);
        let wbm = WriteBufferManager::new_write_buffer_manager_with_cache(
            options.write_buffer_manager_bytes,
            false,
            cache.clone(),
        );
        let (dbo, cfo) = db_options(&options, &cache, &wbm)?;
        let db = DB::open_cf_descriptors(
            &dbo,
            &paths.data,
            [ColumnFamilyDescriptor::new(SYS_CF, cfo)],
        )?;
        let record = InstanceRecord {
            format: FORMAT_VERSION,
            origin: origin.to_owned(),
            signing_public_key: signer.public_key(),
            kek_fingerprint: kek.fingerprint(),
            created_ms: now_ms(),
        };
        let sys = db.cf_handle(SYS_CF).ok_or(OpenError::BadInstanceRecord)?;
        let bytes = encode(&record).map_err(|_| OpenError::BadInstanceRecord)?;
        db.put_cf_opt(&sys, INSTANCE_KEY, bytes, &sync_write())?;
        drop(sys);
        drop(db);
        drop(kek);
        Self::open(paths, options)
    }

    /// Opens an instance with the KEK file at `paths.kek` (which `keys rotate-kek` replaces).
    pub fn open(paths: &Paths, options: StoreOptions) -> Result<Store, OpenError> {
        if !paths.data.join("CURRENT").exists() {
            return Err(OpenError::NotInitialized(paths.data.clone()));
        }
        Self::open_with_source(paths, Box::new(KekFile::new(&paths.kek)), options)
    }

    /// Opens an instance with an already loaded KEK. Such a store cannot rotate its KEK.
    pub fn open_with(
        paths: &Paths,
        kek: impl KekProvider + 'static,
        options: StoreOptions,
    ) -> Result<Store, OpenError> {
        Self::open_inner(paths, KekChoice::Fixed(Arc::new(kek)), options)
    }

    /// Opens an instance whose KEK comes from `source`, finishing or undoing a KEK rotation
    /// a crash interrupted.
    pub fn open_with_source(
        paths: &Paths,
        source: Box<dyn KekSource>,
        options: StoreOptions,
    ) -> Result<Store, OpenError> {
        Self::open_inner(paths, KekChoice::Source(source), options)
    }

    fn open_inner(
        paths: &Paths,
        choice: KekChoice,
        options: StoreOptions,
    ) -> Result<Store, OpenError> {
        if !paths.data.join("CURRENT").exists() {
            return Err(OpenError::NotInitialized(paths.data.clone()));
        }
        if !paths.key_store.join("CURRENT").exists() {
            return Err(OpenError::NotInitialized(paths.key_store.clone()));
        }
        check_private(paths)?;
        let cache = Cache::new_lru_cache(options.block_cache_bytes);
        let wbm = WriteBufferManager::new_write_buffer_manager_with_cache(
            options.write_buffer_manager_bytes,
            false,
            cache.clone(),
        );
        let (dbo, cfo) = db_options(&options, &cache, &wbm)?;
        let mut names = DB::list_cf(&dbo, &paths.data)?;
        let open = |names: &[String]| {
            let descriptors = names
                .iter()
                .filter(|n| n.as_str() != "default")
                .map(|n| ColumnFamilyDescriptor::new(n, cfo.clone()));
            DB::open_cf_descriptors(&dbo, &paths.data, descriptors)
        };
        let in_use = |e: rocksdb::Error| {
            if e.kind() == rocksdb::ErrorKind::IOError && e.to_string().contains("lock file") {
                OpenError::InUse(paths.data.clone())
            } else if e.kind() == rocksdb::ErrorKind::Corruption {
                OpenError::Damaged {
                    path: paths.data.clone(),
                    detail: e.to_string(),
                }
            } else {
                OpenError::Db(e)
            }
        };
        let mut db = open(&names).map_err(in_use)?;
        // Partitions requested but without a column family yet get theirs now, in one open:
        // RocksDB then writes the OPTIONS file once instead of once per family.
        let missing: Vec<String> = read_registry(&db)
            .map_err(|e| OpenError::Registry(e.to_string()))?
            .into_iter()
            .filter(|p| p.status == PartitionStatus::Requested)
            .map(|p| partition_cf(&p.partition))
            .filter(|n| !names.contains(n))
            .collect();
        if !missing.is_empty() {
            tracing::info!(count = missing.len(), "creating partition column families");
            drop(db);
            names.extend(missing);
            db = open(&names)?;
        }
        let record: InstanceRecord = {
            let sys = db.cf_handle(SYS_CF).ok_or(OpenError::BadInstanceRecord)?;
            let raw = db
                .get_cf(&sys, INSTANCE_KEY)?
                .ok_or(OpenError::BadInstanceRecord)?;
            decode(&raw).ok_or(OpenError::BadInstanceRecord)?
        };
        if record.format != FORMAT_VERSION {
            return Err(OpenError::Format(record.format));
        }
        let keys = DB::open(&key_store_options(), &paths.key_store)?;
        let stored =
            keyring::stored_fingerprint(&keys).map_err(|e| OpenError::Signing(e.to_string()))?;
        let (kek, source, finish_rotation) = match choice {
            KekChoice::Fixed(k) => (k, None, false),
            KekChoice::Source(src) => {
                let (k, finish) = choose_kek(src.as_ref(), stored.as_deref())?;
                (k, Some(src), finish)
            }
        };
        if !finish_rotation && record.kek_fingerprint != kek.fingerprint() {
            return Err(OpenError::WrongKek {
                expected: record.kek_fingerprint,
                loaded: kek.fingerprint(),
            });
        }
        let events_needed = record.kek_fingerprint != kek.fingerprint();
        let keyring = Keyring::new(keys, kek);
        let signing_keys = read_signing_keys(&db, &record)?;
        let signer = load_signer(&keyring, &record.origin, &signing_keys)?;
        let cosigner = load_cosigner(&keyring, &record.origin)?;
        let anchored = anchor::load(&paths.anchor)?.unwrap_or_default();
        let inner = Arc::new(Inner {
            db,
            anchor: anchor::Anchor::new(paths.anchor.clone(), anchored.clone()),
            cosigner,
            cosign_lock: Mutex::new(()),
            keyring,
            kek_source: source,
            key_admin: Mutex::new(()),
            origin: record.origin.clone(),
            signer: std::sync::RwLock::new(Arc::new(signer)),
            signing_keys: std::sync::RwLock::new(signing_keys),
            options,
            cf_options: cfo,
            poisoned: AtomicBool::new(false),
            quarantined: Mutex::new(BTreeMap::new()),
        });
        let partitions = names
            .iter()
            .filter_map(|n| n.strip_prefix(records::PARTITION_CF_PREFIX))
            .filter_map(|id| PartitionId::parse(id).ok())
            .collect();
        inner.check_partitions_at_open(partitions);
        // Nothing acknowledged may be missing (store::anchor): a whole missing family
        // counts as size 0. A quarantined partition is refused on its own.
        for (p, want) in &anchored {
            let found = match inner.size(p) {
                Ok(n) => n,
                Err(ReadError::UnknownPartition(_)) => 0,
                Err(_) => continue,
            };
            if found < *want {
                return Err(OpenError::RolledBack {
                    partition: p.to_string(),
                    anchored: *want,
                    found,
                    anchor: paths.anchor.clone(),
                });
            }
        }
        let anchor_thread =
            anchor::AnchorHandle::start(Arc::clone(&inner.anchor)).map_err(OpenError::Thread)?;
        let writer = writer::WriterHandle::start(Arc::clone(&inner)).map_err(OpenError::Thread)?;
        let store = Store {
            inner,
            writer,
            _anchor: anchor_thread,
        };
        if finish_rotation {
            store
                .finish_kek_rotation(events_needed)
                .map_err(|e| OpenError::Registry(format!("finishing a KEK rotation: {e}")))?;
        }
        let sealed = store
            .seal_legacy_credentials()
            .map_err(OpenError::Credentials)?;
        if sealed > 0 {
            tracing::warn!(
                credentials = sealed,
                "credential records from before credential MACs were sealed with one"
            );
        }
        Ok(store)
    }

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
            .db
            .cf_handle(SYS_CF)
            .and_then(|sys| {
                self.inner
                    .db
                    .get_cf(&sys, records::shred_key(partition))
                    .ok()
            })
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
            .ok_or_else(|| ReadError::UnknownPartition(partition.to_string()))?;
        Checkpoint::verify_note(&note, &key)
            .map(Some)
            .map_err(|e| ReadError::Corrupt {
                partition: partition.to_string(),
                seq: 0,
                step: format!("latest checkpoint: {e}"),
            })
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.writer.shutdown();
    }
}
