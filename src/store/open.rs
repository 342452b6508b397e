//! Creating and opening an instance: the key store, the KEK (and an interrupted rotation
//! finished or undone), the signing and witness keys, RocksDB's options and column
//! families, owner-only files, and the writer thread.

use super::*;
use engine::{Space, View};
use key_store::KeyStore;

pub(super) enum KekChoice {
    Fixed(Arc<dyn KekProvider>),
    Source(Box<dyn KekSource>),
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

/// The instance's witness key from the key store; an instance made before witnessing gets
/// one now (durable before first use).
fn load_cosigner(keyring: &Keyring, origin: &str) -> Result<Cosigner, OpenError> {
    let seed = keyring.witness_seed().map_err(OpenError::KeyStore)?;
    Cosigner::from_seed(origin, &seed).map_err(OpenError::Signer)
}

/// The signing keys the instance has had: the `J` record, or version 1 alone.
fn read_signing_keys(
    view: &dyn View,
    record: &InstanceRecord,
) -> Result<Vec<records::SigningKeyRecord>, OpenError> {
    match system_get(view, records::SIGNING_KEYS)? {
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
            keyring.delete(&slot).map_err(OpenError::KeyStore)?;
            continue;
        }
        let seed = keyring
            .instance_key(&slot, WrapPurpose::SigningKey)
            .map_err(OpenError::KeyStore)?
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
    CheckpointSigner::from_seeds(origin, &refs).map_err(OpenError::Signer)
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

/// The instance's current KEK, from the HSM its `kek.pkcs11` names or its KEK file: what an
/// administrator holds to make an `AdminScope`.
pub fn load_kek(paths: &Paths) -> Result<Box<dyn KekProvider>, OpenError> {
    Ok(kek_source(paths)?.load()?)
}

/// The instance's KEK source: the HSM its `kek.pkcs11` names, else the KEK file.
pub(super) fn kek_source(paths: &Paths) -> Result<Box<dyn KekSource>, OpenError> {
    Ok(Box::new(crate::crypto::instance_kek::InstanceKek::new(
        &paths.kek,
    )))
}

/// A new instance's KEK: made in the HSM `kek.pkcs11` names, else the KEK file (made if
/// missing).
fn new_kek(paths: &Paths) -> Result<Box<dyn KekProvider>, OpenError> {
    let hsm = paths.kek_pkcs11();
    if hsm.exists() {
        let config = crate::crypto::pkcs11::Pkcs11Config::load(&hsm)?;
        return Ok(crate::crypto::pkcs11::Pkcs11Source::open(config)?.create()?);
    }
    match Kek::load_file(&paths.kek) {
        Ok(k) => Ok(Box::new(k)),
        Err(KekError::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
            Ok(Box::new(Kek::create_file(&paths.kek)?))
        }
        Err(e) => Err(e.into()),
    }
}

/// The home directory when the instance uses the default layout ([`Paths::under`]).
fn home_of(paths: &Paths) -> Option<&Path> {
    paths
        .data
        .parent()
        .filter(|h| paths.key_store.parent() == Some(*h) && paths.anchor.parent() == Some(*h))
}

/// Owner-only files (`private`): the process umask, the data directory and the key store
/// where the home has them (not on an engine that holds both) and, in the default layout,
/// the home; older files are tightened to 0600.
pub(super) fn check_private(paths: &Paths) -> Result<(), OpenError> {
    private::restrict_umask();
    let local = [&paths.data, &paths.key_store].map(|d| Some(d.as_path()).filter(|d| d.exists()));
    for dir in home_of(paths)
        .into_iter()
        .chain(local.into_iter().flatten())
    {
        private::check_dir(dir)?;
    }
    for dir in local.into_iter().flatten() {
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

/// A new instance's KEK (file, 0600) and key store with the Ed25519 checkpoint key: in the
/// home, or in `engine` when it holds keys (then the home gets no key store, and no data
/// directory either); the data directory is made otherwise (empty; an engine fills it).
pub(super) fn init_keys(
    paths: &Paths,
    origin: &str,
    engine: Option<&Arc<dyn engine::Engine>>,
) -> Result<(Box<dyn KekProvider>, CheckpointSigner), OpenError> {
    crate::crypto::signer::validate_origin(origin).map_err(OpenError::Origin)?;
    if paths.key_store.join("CURRENT").exists() {
        return Err(OpenError::AlreadyInitialized(paths.key_store.clone()));
    }
    private::restrict_umask();
    let engine = engine.filter(|e| e.holds_keys());
    if engine.is_none() {
        for dir in [&paths.data, &paths.key_store] {
            private::create_dir(dir)?;
        }
    } else if let Some(home) = home_of(paths) {
        private::create_dir(home)?;
    }
    // A new instance's home (default layout) is owner-only too, even if it existed.
    if let Some(home) = home_of(paths) {
        private::set_mode(home, 0o700)?;
    }
    let kek = new_kek(paths)?;
    let seed = Secret32::generate().map_err(KekError::from)?;
    let signer = CheckpointSigner::from_seed(origin, &seed).map_err(OpenError::Signer)?;
    let wrapped = kek.wrap(WrapPurpose::SigningKey, "instance", 1, &seed)?;
    let keys = match engine {
        Some(e) => KeyStore::Engine(Arc::clone(e)),
        None => KeyStore::Local(DB::open(&key_store_options(), &paths.key_store)?),
    };
    keys.write(vec![(SIGNING_KEY.to_vec(), wrapped)], &[])
        .map_err(OpenError::KeyStore)?;
    Ok((kek, signer))
}

pub(super) fn new_instance_record(
    origin: &str,
    signer: &CheckpointSigner,
    kek: &dyn KekProvider,
) -> InstanceRecord {
    InstanceRecord {
        format: FORMAT_VERSION,
        origin: origin.to_owned(),
        signing_public_key: signer.public_key(),
        kek_fingerprint: kek.fingerprint(),
        created_ms: now_ms(),
    }
}

pub(super) fn write_instance_record(
    engine: &dyn engine::Engine,
    record: &InstanceRecord,
) -> Result<(), OpenError> {
    let bytes = encode(record).map_err(|_| OpenError::BadInstanceRecord)?;
    Ok(engine.commit(vec![engine::Op::Put {
        space: Space::System,
        key: INSTANCE_KEY.to_vec(),
        value: bytes,
    }])?)
}

impl Store {
    /// Creates a new instance: KEK file (0600), key store with the Ed25519 checkpoint key, and
    /// the data directory with its system CF. Returns the open store.
    pub fn init(paths: &Paths, origin: &str, options: StoreOptions) -> Result<Store, OpenError> {
        if paths.data.join("CURRENT").exists() {
            return Err(OpenError::AlreadyInitialized(paths.data.clone()));
        }
        let (kek, signer) = init_keys(paths, origin, None)?;
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
        let record = new_instance_record(origin, &signer, kek.as_ref());
        // An engine only to write the record (it makes no family, so default options).
        write_instance_record(&engine::RocksEngine::new(db, Options::default()), &record)?;
        drop(kek);
        Self::open(paths, options)
    }

    /// Opens an instance with the KEK file at `paths.kek` (which `keys rotate-kek` replaces).
    pub fn open(paths: &Paths, options: StoreOptions) -> Result<Store, OpenError> {
        if !paths.data.join("CURRENT").exists() && !paths.engine_record().exists() {
            return Err(OpenError::NotInitialized(paths.data.clone()));
        }
        Self::open_with_source(paths, kek_source(paths)?, options)
    }

    /// Opens the instance of `paths` to read. On a cell it takes no writer's place: a
    /// `kukaku serve` holding the cell goes on, and every write through this store is
    /// refused. The KEK is the current one, and a rotation staged in the home is left alone
    /// (it is the writer's to finish). On the embedded engine this is [`Store::open`]
    /// (RocksDB's lock: not while a server runs).
    pub fn open_read_only(paths: &Paths, options: StoreOptions) -> Result<Store, OpenError> {
        if !paths.engine_record().exists() {
            return Self::open(paths, options);
        }
        #[cfg(feature = "postgres")]
        {
            let kek: Arc<dyn KekProvider> = Arc::from(load_kek(paths)?);
            Self::open_recorded_reader(paths, KekChoice::Fixed(kek), options)
        }
        #[cfg(not(feature = "postgres"))]
        Err(OpenError::EngineNotBuilt(paths.engine_record()))
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
        if paths.engine_record().exists() {
            #[cfg(feature = "postgres")]
            return Self::open_recorded(paths, choice, options);
            #[cfg(not(feature = "postgres"))]
            return Err(OpenError::EngineNotBuilt(paths.engine_record()));
        }
        if !paths.data.join("CURRENT").exists() {
            return Err(OpenError::NotInitialized(paths.data.clone()));
        }
        if !paths.key_store.join("CURRENT").exists() {
            return Err(OpenError::NotInitialized(paths.key_store.clone()));
        }
        check_private(paths)?;
        // The families were listed to open them: no second read of the MANIFEST.
        let (db, names, cfo) = open_data(paths, &options)?;
        let partitions = engine::partitions_named(&names);
        let engine = Arc::new(engine::RocksEngine::new(db, cfo));
        Self::open_on(paths, choice, options, engine, partitions)
    }

    /// Opens the instance whose data `engine` holds (its partitions' spaces `partitions`),
    /// with its key store: the engine's when it holds keys, else the one in `paths`.
    pub(super) fn open_on(
        paths: &Paths,
        choice: KekChoice,
        options: StoreOptions,
        engine: Arc<dyn engine::Engine>,
        partitions: Vec<PartitionId>,
    ) -> Result<Store, OpenError> {
        let record = instance_record(&*engine)?;
        let keys = if engine.holds_keys() {
            KeyStore::Engine(Arc::clone(&engine))
        } else {
            KeyStore::Local(DB::open(&key_store_options(), &paths.key_store)?)
        };
        let stored = keys.fingerprint().map_err(OpenError::KeyStore)?;
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
        let signing_keys = read_signing_keys(&*engine, &record)?;
        let signer = load_signer(&keyring, &record.origin, &signing_keys)?;
        let cosigner = load_cosigner(&keyring, &record.origin)?;
        let anchored = anchor::load(&paths.anchor)?.unwrap_or_default();
        let inner = Arc::new(Inner {
            engine,
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
            poisoned: AtomicBool::new(false),
            quarantined: Mutex::new(BTreeMap::new()),
        });
        inner.check_partitions_at_open(partitions);
        check_anchored(&inner, &anchored, paths)?;
        let anchor_thread =
            anchor::AnchorHandle::start(Arc::clone(&inner.anchor)).map_err(OpenError::Thread)?;
        let writer = writer::WriterHandle::start(Arc::clone(&inner)).map_err(OpenError::Thread)?;
        let lease = lease::LeaseHandle::start(&inner).map_err(OpenError::Thread)?;
        let store = Store {
            inner,
            writer,
            _anchor: anchor_thread,
            _lease: lease,
        };
        finish_open(&store, finish_rotation, events_needed)?;
        Ok(store)
    }
}

/// Opens the data database with every column family, creating in the same open the families
/// of partitions requested since (RocksDB then writes its OPTIONS file once, not once per
/// family): the database, its family names and the families' options.
fn open_data(
    paths: &Paths,
    options: &StoreOptions,
) -> Result<(DB, Vec<String>, Options), OpenError> {
    let cache = Cache::new_lru_cache(options.block_cache_bytes);
    let wbm = WriteBufferManager::new_write_buffer_manager_with_cache(
        options.write_buffer_manager_bytes,
        false,
        cache.clone(),
    );
    let (dbo, cfo) = db_options(options, &cache, &wbm)?;
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
    let missing: Vec<String> = read_registry(&engine::DbView(&db))
        .map_err(OpenError::Registry)?
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
    Ok((db, names, cfo))
}

/// A record of the system space (an instance without one has no instance record).
fn system_get(view: &dyn View, key: &[u8]) -> Result<Option<Vec<u8>>, OpenError> {
    view.get(&Space::System, key).map_err(|e| match e {
        EngineError::NoSystemSpace => OpenError::BadInstanceRecord,
        e => OpenError::Engine(e),
    })
}

/// The instance record, of this format version.
fn instance_record(view: &dyn View) -> Result<InstanceRecord, OpenError> {
    let raw = system_get(view, INSTANCE_KEY)?.ok_or(OpenError::BadInstanceRecord)?;
    let record: InstanceRecord = decode(&raw).ok_or(OpenError::BadInstanceRecord)?;
    if record.format != FORMAT_VERSION {
        return Err(OpenError::Format(record.format));
    }
    Ok(record)
}

/// Nothing acknowledged may be missing (store::anchor): a whole missing family counts as
/// size 0. A quarantined partition is refused on its own.
fn check_anchored(
    inner: &Inner,
    anchored: &BTreeMap<PartitionId, u64>,
    paths: &Paths,
) -> Result<(), OpenError> {
    for (p, want) in anchored {
        // A partition moved to another cell is guarded there; its copy here may have been
        // dropped (`partitions drop-moved`), and another machine's anchor still names it.
        if moved(inner, p) {
            continue;
        }
        let found = match inner.size(p) {
            Ok(n) => n,
            Err(ReadError::UnknownPartition(_)) => 0,
            Err(_) => continue,
        };
        if found < *want {
            return Err(OpenError::RolledBack {
                partition: p.clone(),
                anchored: *want,
                found,
                anchor: paths.anchor.clone(),
            });
        }
    }
    Ok(())
}

/// Whether the registry says `p` moved to another cell.
fn moved(inner: &Inner, p: &PartitionId) -> bool {
    inner
        .engine
        .get(&Space::System, &records::registry_key(p))
        .ok()
        .flatten()
        .and_then(|raw| decode::<records::PartitionRecord>(&raw))
        .is_some_and(|r| r.status == PartitionStatus::Moved)
}

/// What an open finishes once the writer runs: an interrupted KEK rotation, and a MAC on
/// credential records written before credential MACs.
fn finish_open(store: &Store, finish_rotation: bool, events_needed: bool) -> Result<(), OpenError> {
    if finish_rotation {
        store
            .finish_kek_rotation(events_needed)
            .map_err(OpenError::KekRotation)?;
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
    Ok(())
}
