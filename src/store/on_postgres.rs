//! A store whose data lives in PostgreSQL (issue 31, feature `postgres`): the same store,
//! opened on `engine::PostgresEngine` instead of the embedded RocksDB. The key store lives
//! in the database too (its `keys` space, wrapped under the KEK), so that every writer of
//! the cell unwraps the same keys; the KEK never does: it stays in each writer's home (or
//! HSM). The acknowledged-size anchor stays per machine: a lower bound of what this
//! machine acknowledged (docs/ARCHITECTURE.md, "Storage engines").

use std::sync::Arc;

use super::engine::{Dir, Engine, Lease, PgTarget, PostgresEngine, Space};
use super::open::{
    KekChoice, check_private, init_keys, kek_source, new_instance_record, write_instance_record,
};
use super::records::INSTANCE_KEY;
use super::{OpenError, Paths, Store, StoreOptions};

/// How this process holds the cell's writer row (`StoreOptions::writer_lease`, `…_patience`).
fn lease(options: &StoreOptions) -> Lease {
    Lease {
        term: options.writer_lease,
        patience: options.writer_patience,
    }
}

/// This store as a writer of the cell: the process and which of its opens.
fn holder() -> String {
    static OPENS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = OPENS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("kukaku pid {} open {n}", std::process::id())
}

impl Store {
    /// Creates a new instance whose data lives in `target` (a schema that holds no instance
    /// yet); the KEK and the key store are made in the home of `paths`.
    pub fn init_postgres(
        paths: &Paths,
        origin: &str,
        options: StoreOptions,
        target: PgTarget,
    ) -> Result<Store, OpenError> {
        let engine: Arc<dyn Engine> = Arc::new(PostgresEngine::open(
            target.clone(),
            &holder(),
            lease(&options),
        )?);
        if engine.get(&Space::System, INSTANCE_KEY)?.is_some()
            || engine
                .scan(&Space::Keys, &[], Dir::Forward)?
                .next()
                .is_some()
        {
            return Err(OpenError::SchemaInUse(target.schema));
        }
        let (kek, signer) = init_keys(paths, origin, Some(&engine))?;
        write_instance_record(
            &*engine,
            &new_instance_record(origin, &signer, kek.as_ref()),
        )?;
        drop(engine);
        Self::open_postgres(paths, options, target)
    }

    /// Opens the instance whose data and keys live in `target`, with the KEK of `paths`;
    /// waits up to `options.writer_patience` for another writer's lease to lapse.
    pub fn open_postgres(
        paths: &Paths,
        options: StoreOptions,
        target: PgTarget,
    ) -> Result<Store, OpenError> {
        let choice = KekChoice::Source(kek_source(paths)?);
        Self::open_on_target(paths, choice, options, target)
    }

    /// The data and keys of `target`, the KEK as `choice` says.
    fn open_on_target(
        paths: &Paths,
        choice: KekChoice,
        options: StoreOptions,
        target: PgTarget,
    ) -> Result<Store, OpenError> {
        check_private(paths)?;
        let engine = PostgresEngine::open(target, &holder(), lease(&options))?;
        Self::open_on_pg(paths, choice, options, engine)
    }

    /// The store of `paths` on `engine` (a writer or a reader of the cell).
    fn open_on_pg(
        paths: &Paths,
        choice: KekChoice,
        options: StoreOptions,
        engine: PostgresEngine,
    ) -> Result<Store, OpenError> {
        let partitions = Engine::partition_spaces(&engine)?;
        Self::open_on(paths, choice, options, Arc::new(engine), partitions)
    }
}

/// Which engine holds an instance's data when it is not the embedded one:
/// `<home>/engine.json` (docs/format.md §7b). The DSN is read from `dsn_file` (mode 0600:
/// it may hold a password), never written into the home.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineRecord {
    /// `postgres`.
    pub engine: String,
    /// The schema holding the instance's tables.
    pub schema: String,
    /// A file holding the libpq connection string.
    pub dsn_file: std::path::PathBuf,
}

impl EngineRecord {
    /// A PostgreSQL record.
    pub fn postgres(schema: &str, dsn_file: &std::path::Path) -> Self {
        EngineRecord {
            engine: "postgres".into(),
            schema: schema.to_owned(),
            dsn_file: dsn_file.to_owned(),
        }
    }

    /// Writes the record into the home of `paths` (`engine.json`, mode 0600, synced).
    pub(super) fn write(&self, paths: &Paths) -> Result<(), OpenError> {
        let path = paths.engine_record();
        let io = |error| OpenError::EngineRecordIo {
            path: path.clone(),
            error,
        };
        let json =
            serde_json::to_vec_pretty(self).map_err(|error| OpenError::EngineRecordFormat {
                path: path.clone(),
                error,
            })?;
        let mut file = std::fs::File::create(&path).map_err(io)?;
        std::io::Write::write_all(&mut file, &json).map_err(io)?;
        file.sync_all().map_err(io)?;
        super::private::set_mode(&path, 0o600)?;
        Ok(())
    }

    fn load(path: &std::path::Path) -> Result<Self, OpenError> {
        let bytes = std::fs::read(path).map_err(|error| OpenError::EngineRecordIo {
            path: path.to_owned(),
            error,
        })?;
        let record: EngineRecord =
            serde_json::from_slice(&bytes).map_err(|error| OpenError::EngineRecordFormat {
                path: path.to_owned(),
                error,
            })?;
        if record.engine != "postgres" {
            return Err(OpenError::UnknownEngine {
                path: path.to_owned(),
                engine: record.engine,
            });
        }
        Ok(record)
    }

    /// The target: the DSN from its file, which must be owner-only.
    pub fn target(&self) -> Result<PgTarget, OpenError> {
        use std::os::unix::fs::PermissionsExt as _;
        let io = |error| OpenError::EngineRecordIo {
            path: self.dsn_file.clone(),
            error,
        };
        let meta = std::fs::metadata(&self.dsn_file).map_err(io)?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(OpenError::DsnFileReadable(self.dsn_file.clone()));
        }
        let dsn = std::fs::read_to_string(&self.dsn_file).map_err(io)?;
        Ok(PgTarget {
            dsn: dsn.trim().to_owned(),
            schema: self.schema.clone(),
        })
    }
}

impl Store {
    /// Creates a new instance whose data lives where `record` says, and writes the record
    /// into the home (`engine.json`) so that every later open finds the engine.
    pub fn init_recorded(
        paths: &Paths,
        origin: &str,
        options: StoreOptions,
        record: &EngineRecord,
    ) -> Result<Store, OpenError> {
        let target = record.target()?;
        let store = Self::init_postgres(paths, origin, options, target)?;
        record.write(paths)?;
        Ok(store)
    }

    /// Makes the home of `paths` a further writer of the cell `record` names: a copy of the
    /// instance's KEK file (`kek`, mode 0600) and `engine.json`, nothing else (the data and
    /// the keys are in the cell). Checked by opening the cell to read: a KEK that is not the
    /// instance's leaves the home as it was. Returns that read-only store.
    pub fn join_cell(
        paths: &Paths,
        kek: &std::path::Path,
        record: &EngineRecord,
        options: StoreOptions,
    ) -> Result<Store, OpenError> {
        for taken in [&paths.kek, &paths.engine_record(), &paths.key_store] {
            if taken.exists() {
                return Err(OpenError::AlreadyInitialized(taken.clone()));
            }
        }
        let loaded = crate::crypto::Kek::load_file(kek)?;
        let target = record.target()?;
        if let Some(home) = paths.kek.parent() {
            super::private::restrict_umask();
            super::private::create_dir(home)
                .or_else(|e| if home.is_dir() { Ok(()) } else { Err(e) })?;
        }
        let copy = || -> Result<Store, OpenError> {
            std::fs::copy(kek, &paths.kek).map_err(|error| OpenError::EngineRecordIo {
                path: paths.kek.clone(),
                error,
            })?;
            super::private::set_mode(&paths.kek, 0o600)?;
            record.write(paths)?;
            let engine = PostgresEngine::open_reader(target)?;
            let kek: Arc<dyn crate::crypto::KekProvider> = Arc::new(loaded);
            Self::open_on_pg(paths, KekChoice::Fixed(kek), options, engine)
        };
        copy().inspect_err(|_| {
            let _ = std::fs::remove_file(&paths.kek);
            let _ = std::fs::remove_file(paths.engine_record());
        })
    }

    /// Opens the instance of `paths` to read on the cell its `engine.json` names.
    pub(super) fn open_recorded_reader(
        paths: &Paths,
        choice: KekChoice,
        options: StoreOptions,
    ) -> Result<Store, OpenError> {
        let target = EngineRecord::load(&paths.engine_record())?.target()?;
        check_private(paths)?;
        Self::open_on_pg(paths, choice, options, PostgresEngine::open_reader(target)?)
    }

    /// Opens the instance of `paths` on the engine its `engine.json` names.
    pub(super) fn open_recorded(
        paths: &Paths,
        choice: KekChoice,
        options: StoreOptions,
    ) -> Result<Store, OpenError> {
        let target = EngineRecord::load(&paths.engine_record())?.target()?;
        Self::open_on_target(paths, choice, options, target)
    }
}
