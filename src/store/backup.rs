//! Online backup and verified restore (docs/operations.md, "Backup and restore").
//!
//! A backup is taken while the store serves: under the key-operation lock (no KEK rotation,
//! destroy or signing-key step in between), a RocksDB checkpoint of `data/` (hard links
//! after a flush: every acknowledged batch, no half batch) and then one of `keystore/`
//! (taken second, so it holds every key the data's entries were sealed under). Outside the
//! lock the checkpoints are copied into two RocksDB backup engines under the backup
//! directory (incremental: a table file already there is not copied again, and every file is
//! checksummed), a manifest records each partition's size and signed checkpoint at that
//! point and the fingerprint of the KEK the key store needs, and the checkpoints are
//! removed. The KEK itself is never in a backup.
//!
//! A restore refuses to write into an existing home, restores both engines' files, writes
//! the acknowledged-size anchor from the manifest's sizes, installs the KEK file the
//! operator gives, opens the instance and verifies every partition with its keys against
//! the manifest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rocksdb::backup::{BackupEngine, BackupEngineOptions, RestoreOptions};
use rocksdb::checkpoint::Checkpoint;
use rocksdb::{DB, Env, Options};
use serde::{Deserialize, Serialize};

use super::private::{self, PrivateError};
use super::records::{STATE_KEY, StateRecord, checkpoint_key, decode, partition_cf};
use super::{
    OpenError, Paths, ProvisionError, Store, StoreOptions, VerifyOptions, anchor, keyring,
    read_registry,
};
use crate::ledger::{PartitionId, VerifyError};

/// Version of the manifest format this build writes and reads.
pub const MANIFEST_FORMAT: u16 = 1;

/// What a backup holds, written beside it as `backup-<id>.json` (docs/operations.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupManifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u16,
    /// The backup's id in the data engine (`data/`), which names the backup.
    pub backup_id: u32,
    /// The matching backup's id in the key-store engine (`keystore/`).
    pub keystore_backup_id: u32,
    /// When the checkpoint was taken, Unix milliseconds UTC.
    pub created_ms: u64,
    /// The instance origin.
    pub origin: String,
    /// Fingerprint of the KEK the backed-up key store is wrapped under: a restore needs that
    /// KEK (a later `keys rotate-kek` or `keys destroy` makes it unavailable on purpose).
    pub kek_fingerprint: String,
    /// Every active partition at the backup point.
    pub partitions: Vec<ManifestPartition>,
}

/// One partition at the backup point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestPartition {
    /// The partition id.
    pub partition: String,
    /// Its tree size.
    pub size: u64,
    /// Its signed checkpoint at that size.
    pub checkpoint: String,
}

/// What `backup` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// The new backup's manifest.
    pub manifest: BackupManifest,
    /// Bytes and files of the new data backup (shared table files counted once per backup).
    pub data_bytes: u64,
    /// Files of the new data backup.
    pub data_files: u32,
    /// Backups left in the directory after retention.
    pub kept: Vec<u32>,
}

/// What `restore` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// The manifest of the backup restored.
    pub manifest: BackupManifest,
}

/// Why a backup or a restore failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("RocksDB ({what})")]
    Db {
        what: &'static str,
        #[source]
        error: rocksdb::Error,
    },
    #[error("another key operation is running; try again when it has finished")]
    Busy,
    #[error("the partition registry")]
    Registry(#[source] ProvisionError),
    #[error("the key store")]
    Key(#[source] keyring::KeyError),
    #[error("partition {0}: its stored state or checkpoint is unreadable in the checkpoint")]
    BadPartition(PartitionId),
    #[error("manifest {path}")]
    Manifest {
        path: PathBuf,
        #[source]
        error: serde_json::Error,
    },
    #[error("manifest {0}: format this build does not know")]
    ManifestFormat(PathBuf),
    #[error("no backup {0} in the backup directory")]
    NoBackup(u32),
    #[error("the backup directory holds no backup")]
    Empty,
    #[error("{0} exists and is not empty: restore only into a new home")]
    TargetExists(PathBuf),
    #[error("owner-only files")]
    Private(#[source] PrivateError),
    #[error("opening the restored instance")]
    Open(#[source] OpenError),
    #[error("the restored instance does not verify")]
    Verify(#[source] VerifyError),
    #[error(
        "partition {partition}: the backup holds {backup} entries, but {verified} were verified \
         or witnessed (the state file given); restoring it would let the log fork at size \
         {backup}. Restore a newer backup, or pass --accept-older to restore it on purpose \
         (a `restore` key event then records it in the partition)"
    )]
    OlderThanVerified {
        partition: String,
        backup: u64,
        verified: u64,
    },
    #[error(
        "partition {partition}: the restored log does not extend the checkpoint verified at size {size}"
    )]
    NotExtending {
        partition: String,
        size: u64,
        #[source]
        error: crate::ledger::proof_json::ProofJsonError,
    },
    #[error("the verified-state file {path}")]
    State {
        path: PathBuf,
        #[source]
        error: serde_json::Error,
    },
    #[error("recording the restore")]
    Record(#[source] super::KeyAdminError),
    #[error("partition {partition}: restored at size {restored}, the manifest says {manifest}")]
    Mismatch {
        partition: String,
        manifest: u64,
        restored: u64,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |error| BackupError::Io {
        path: path.to_owned(),
        error,
    }
}

fn db(what: &'static str) -> impl FnOnce(rocksdb::Error) -> BackupError {
    move |error| BackupError::Db { what, error }
}

/// The engines' directories and the manifests of a backup directory.
struct Layout {
    root: PathBuf,
}

impl Layout {
    fn data(&self) -> PathBuf {
        self.root.join("data")
    }
    fn keystore(&self) -> PathBuf {
        self.root.join("keystore")
    }
    fn manifest(&self, id: u32) -> PathBuf {
        self.root.join(format!("backup-{id}.json"))
    }
    fn engine(dir: &Path) -> Result<BackupEngine, BackupError> {
        let mut opts = BackupEngineOptions::new(dir).map_err(db("backup engine options"))?;
        opts.set_sync(true);
        let env = Env::new().map_err(db("environment"))?;
        BackupEngine::open(&opts, &env).map_err(db("opening a backup engine"))
    }
    /// The manifests present, by backup id.
    fn manifests(&self) -> Result<Vec<u32>, BackupError> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(io(&self.root))? {
            let name = entry.map_err(io(&self.root))?.file_name();
            let id = name
                .to_str()
                .and_then(|n| n.strip_prefix("backup-"))
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u32>().ok());
            ids.extend(id);
        }
        ids.sort_unstable();
        Ok(ids)
    }
    fn read_manifest(&self, id: u32) -> Result<BackupManifest, BackupError> {
        let path = self.manifest(id);
        let bytes = match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BackupError::NoBackup(id));
            }
            other => other.map_err(io(&path))?,
        };
        let m: BackupManifest =
            serde_json::from_slice(&bytes).map_err(|error| BackupError::Manifest {
                path: path.clone(),
                error,
            })?;
        if m.format != MANIFEST_FORMAT {
            return Err(BackupError::ManifestFormat(path));
        }
        Ok(m)
    }
}

impl Store {
    /// Backs up this running instance into `dir` (created if missing), keeping the newest
    /// `keep` backups if given. `progress(step, steps, what)` is called at each step.
    pub fn backup(
        &self,
        dir: &Path,
        keep: Option<usize>,
        progress: &mut dyn FnMut(u64, u64, &str),
    ) -> Result<BackupReport, BackupError> {
        let layout = Layout {
            root: dir.to_owned(),
        };
        private::restrict_umask();
        for d in [layout.root.clone(), layout.data(), layout.keystore()] {
            std::fs::create_dir_all(&d).map_err(io(&d))?;
        }
        let staging = self.staging_dir();
        progress(0, 4, "checkpoint");
        let created_ms = self.checkpoints(&staging)?;
        let result = self.back_up_staged(&layout, &staging, created_ms, keep, progress);
        let _ = std::fs::remove_dir_all(&staging);
        result
    }

    /// Beside `data/` (the same file system, so the checkpoint is hard links).
    fn staging_dir(&self) -> PathBuf {
        let data = self.inner.db.path();
        let name = format!(
            ".{}.backup-staging",
            data.file_name().and_then(|n| n.to_str()).unwrap_or("data")
        );
        data.with_file_name(name)
    }

    /// The two checkpoints, under the key-operation lock: `data/`, then `keystore/`.
    fn checkpoints(&self, staging: &Path) -> Result<u64, BackupError> {
        if staging.exists() {
            // Left by a backup that was killed: ours, and never a backup itself.
            std::fs::remove_dir_all(staging).map_err(io(staging))?;
        }
        private::create_dir(staging).map_err(BackupError::Private)?;
        let _guard = self
            .inner
            .key_admin
            .try_lock()
            .map_err(|_| BackupError::Busy)?;
        let created_ms = self.inner.options.now_ms();
        Checkpoint::new(&self.inner.db)
            .and_then(|c| c.create_checkpoint(staging.join("data")))
            .map_err(db("checkpoint of data/"))?;
        self.inner
            .keyring
            .checkpoint(&staging.join("keystore"))
            .map_err(db("checkpoint of keystore/"))?;
        Ok(created_ms)
    }

    fn back_up_staged(
        &self,
        layout: &Layout,
        staging: &Path,
        created_ms: u64,
        keep: Option<usize>,
        progress: &mut dyn FnMut(u64, u64, &str),
    ) -> Result<BackupReport, BackupError> {
        progress(1, 4, "data");
        let (partitions, data_id) = {
            let data = open_staged(&staging.join("data"))?;
            let partitions = manifest_partitions(&data)?;
            let mut engine = Layout::engine(&layout.data())?;
            engine
                .create_new_backup(&data)
                .map_err(db("backing up data/"))?;
            (partitions, newest(&engine)?)
        };
        progress(2, 4, "key store");
        let (kek_fingerprint, keystore_id) = {
            let keys = open_staged(&staging.join("keystore"))?;
            let fp = keyring::stored_fingerprint(&keys)
                .map_err(BackupError::Key)?
                .unwrap_or_default();
            let mut engine = Layout::engine(&layout.keystore())?;
            engine
                .create_new_backup(&keys)
                .map_err(db("backing up keystore/"))?;
            (fp, newest(&engine)?)
        };
        let manifest = BackupManifest {
            format: MANIFEST_FORMAT,
            backup_id: data_id.backup_id,
            keystore_backup_id: keystore_id.backup_id,
            created_ms,
            origin: self.inner.origin.clone(),
            kek_fingerprint,
            partitions,
        };
        progress(3, 4, "manifest");
        write_manifest(layout, &manifest)?;
        let kept = retain(layout, keep)?;
        progress(4, 4, "done");
        Ok(BackupReport {
            manifest,
            data_bytes: data_id.size,
            data_files: data_id.num_files,
            kept,
        })
    }
}

/// The newest backup of an engine.
fn newest(engine: &BackupEngine) -> Result<rocksdb::backup::BackupEngineInfo, BackupError> {
    engine
        .get_backup_info()
        .into_iter()
        .max_by_key(|i| i.backup_id)
        .ok_or(BackupError::Empty)
}

/// A checkpoint opened to be backed up (its own copy: writing to it changes nothing live).
fn open_staged(path: &Path) -> Result<DB, BackupError> {
    let opts = Options::default();
    let names = DB::list_cf(&opts, path).map_err(db("listing column families"))?;
    DB::open_cf(&opts, path, names).map_err(db("opening a checkpoint"))
}

/// Every active partition's size and checkpoint, read from the data checkpoint.
fn manifest_partitions(data: &DB) -> Result<Vec<ManifestPartition>, BackupError> {
    let mut out = Vec::new();
    for info in read_registry(data).map_err(BackupError::Registry)? {
        if info.status != super::PartitionStatus::Active {
            continue;
        }
        let p = info.partition;
        let bad = || BackupError::BadPartition(p.clone());
        let cf = data.cf_handle(&partition_cf(&p)).ok_or_else(bad)?;
        let state: StateRecord = data
            .get_cf(&cf, STATE_KEY)
            .map_err(db("reading a partition's state"))?
            .and_then(|raw| decode(&raw))
            .ok_or_else(bad)?;
        let checkpoint = data
            .get_cf(&cf, checkpoint_key(state.size))
            .map_err(db("reading a checkpoint"))?
            .and_then(|raw| String::from_utf8(raw).ok())
            .ok_or_else(bad)?;
        out.push(ManifestPartition {
            partition: p.to_string(),
            size: state.size,
            checkpoint,
        });
    }
    Ok(out)
}

/// The manifest, written whole (a temporary file renamed into place, synced).
fn write_manifest(layout: &Layout, m: &BackupManifest) -> Result<(), BackupError> {
    let path = layout.manifest(m.backup_id);
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(m).map_err(|error| BackupError::Manifest {
        path: path.clone(),
        error,
    })?;
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    std::fs::File::open(&layout.root)
        .and_then(|d| d.sync_all())
        .map_err(io(&layout.root))
}

/// Keeps the newest `keep` backups (both engines and the manifests); without `keep`, all.
/// Returns the ids left.
fn retain(layout: &Layout, keep: Option<usize>) -> Result<Vec<u32>, BackupError> {
    if let Some(n) = keep {
        let n = n.max(1);
        Layout::engine(&layout.data())?
            .purge_old_backups(n)
            .map_err(db("removing old data backups"))?;
        Layout::engine(&layout.keystore())?
            .purge_old_backups(n)
            .map_err(db("removing old key-store backups"))?;
    }
    let live: Vec<u32> = Layout::engine(&layout.data())?
        .get_backup_info()
        .iter()
        .map(|i| i.backup_id)
        .collect();
    for id in layout.manifests()? {
        if !live.contains(&id) {
            let path = layout.manifest(id);
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
    }
    Ok(live)
}

/// The manifests of the backups in `dir`, oldest first.
pub fn list_backups(dir: &Path) -> Result<Vec<BackupManifest>, BackupError> {
    let layout = Layout {
        root: dir.to_owned(),
    };
    layout
        .manifests()?
        .into_iter()
        .map(|id| layout.read_manifest(id))
        .collect()
}

/// What others verified of the instance's logs: a kukaku-audit state file (its `logs`, by
/// `<origin>/<partition>`; other fields are ignored), or the same shape written from a
/// witness's cosigned checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Verified {
    /// Per log, the size and root verified.
    pub logs: BTreeMap<String, VerifiedLog>,
}

/// One log as verified.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VerifiedLog {
    /// The size verified.
    pub size: u64,
    /// Its root, base64.
    pub root: String,
}

impl Verified {
    /// Reads a kukaku-audit state file.
    pub fn load(path: &Path) -> Result<Verified, BackupError> {
        let bytes = std::fs::read(path).map_err(io(path))?;
        serde_json::from_slice(&bytes).map_err(|error| BackupError::State {
            path: path.to_owned(),
            error,
        })
    }

    /// The verified size and root of partition `p` of `origin`, if any.
    fn of(&self, origin: &str, p: &str) -> Option<&VerifiedLog> {
        self.logs.get(&format!("{origin}/{p}"))
    }
}

/// How a restore checks the backup against what others verified.
#[derive(Debug, Clone, Default)]
pub struct RestoreChecks {
    /// What auditors or witnesses verified; each partition of the backup must extend it.
    pub verified: Option<Verified>,
    /// Restore even a backup older than a verified size (recorded as a `restore` key event
    /// in each such partition, by `actor`).
    pub accept_older: bool,
    /// Who restores, for the key event (ASCII).
    pub actor: String,
    /// Why, for the key event.
    pub reason: String,
}

/// A partition of the backup that holds less than was verified of it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Older {
    partition: PartitionId,
    backup: u64,
    verified: u64,
}

/// Restores backup `id` (the newest if `None`) of `dir` into the new home `home` (`paths`),
/// with the KEK file `kek` (copied to `paths.kek`, mode 0600), then opens the instance and
/// verifies every partition with its keys against the manifest and against what others
/// verified (`checks`). A failed restore removes the home it made.
pub fn restore(
    dir: &Path,
    id: Option<u32>,
    (home, paths): (&Path, &Paths),
    kek: &Path,
    checks: &RestoreChecks,
) -> Result<RestoreReport, BackupError> {
    let layout = Layout {
        root: dir.to_owned(),
    };
    let id = match id {
        Some(id) => id,
        None => *layout.manifests()?.last().ok_or(BackupError::Empty)?,
    };
    let manifest = layout.read_manifest(id)?;
    let older = older_than_verified(&manifest, checks.verified.as_ref())?;
    if let Some(o) = older.first().filter(|_| !checks.accept_older) {
        return Err(BackupError::OlderThanVerified {
            partition: o.partition.to_string(),
            backup: o.backup,
            verified: o.verified,
        });
    }
    private::restrict_umask();
    new_home(home)?;
    let restored = restore_files(&layout, &manifest, paths, kek)
        .and_then(|()| private::tighten_files(home).map_err(BackupError::Private))
        .and_then(|_| verify_restored(&manifest, paths, checks, &older));
    if let Err(e) = restored {
        let _ = std::fs::remove_dir_all(home);
        return Err(e);
    }
    Ok(RestoreReport { manifest })
}

/// The manifest's partitions, parsed.
fn manifest_ids(
    manifest: &BackupManifest,
) -> Result<Vec<(PartitionId, &ManifestPartition)>, BackupError> {
    manifest
        .partitions
        .iter()
        .map(|m| {
            PartitionId::parse(&m.partition)
                .map(|p| (p, m))
                .map_err(|_| BackupError::ManifestFormat(PathBuf::from(&m.partition)))
        })
        .collect()
}

/// The partitions whose verified size is beyond the backup's.
fn older_than_verified(
    manifest: &BackupManifest,
    verified: Option<&Verified>,
) -> Result<Vec<Older>, BackupError> {
    let Some(v) = verified else {
        return Ok(Vec::new());
    };
    Ok(manifest_ids(manifest)?
        .into_iter()
        .filter_map(|(p, m)| {
            let log = v.of(&manifest.origin, &m.partition)?;
            (log.size > m.size).then_some(Older {
                partition: p,
                backup: m.size,
                verified: log.size,
            })
        })
        .collect())
}

/// Both engines' files, the anchor of the manifest's sizes, and the KEK file.
fn restore_files(
    layout: &Layout,
    manifest: &BackupManifest,
    paths: &Paths,
    kek: &Path,
) -> Result<(), BackupError> {
    let opts = RestoreOptions::default();
    Layout::engine(&layout.data())?
        .restore_from_backup(&paths.data, &paths.data, &opts, manifest.backup_id)
        .map_err(db("restoring data/"))?;
    Layout::engine(&layout.keystore())?
        .restore_from_backup(
            &paths.key_store,
            &paths.key_store,
            &opts,
            manifest.keystore_backup_id,
        )
        .map_err(db("restoring keystore/"))?;
    write_anchor(manifest, &paths.anchor)?;
    std::fs::copy(kek, &paths.kek).map_err(io(kek))?;
    Ok(())
}

/// The home must not exist, or be an empty directory; it becomes owner-only.
fn new_home(home: &Path) -> Result<(), BackupError> {
    match std::fs::read_dir(home) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::TargetExists(home.to_owned()));
            }
            private::set_mode(home, 0o700).map_err(BackupError::Private)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            private::create_dir(home).map_err(BackupError::Private)
        }
        Err(e) => Err(io(home)(e)),
    }
}

/// The acknowledged-size anchor of the restored instance: the sizes at the backup point.
fn write_anchor(manifest: &BackupManifest, path: &Path) -> Result<(), BackupError> {
    let mut sizes = BTreeMap::new();
    for p in &manifest.partitions {
        let id = PartitionId::parse(&p.partition)
            .map_err(|_| BackupError::ManifestFormat(path.to_owned()))?;
        sizes.insert(id, p.size);
    }
    std::fs::write(path, anchor::render(&sizes)).map_err(io(path))
}

/// Opens the restored instance, verifies every partition with keys, compares each
/// partition's size and checkpoint with the manifest, proves it extends what others verified
/// at or below its size, and records a `restore` event where it holds less than they did.
fn verify_restored(
    manifest: &BackupManifest,
    paths: &Paths,
    checks: &RestoreChecks,
    older: &[Older],
) -> Result<(), BackupError> {
    let store = Store::open(paths, StoreOptions::default()).map_err(BackupError::Open)?;
    for (p, m) in manifest_ids(manifest)? {
        let report = store
            .verify_partition(&p, VerifyOptions { with_keys: true })
            .map_err(BackupError::Verify)?;
        let checkpoint = store.checkpoint(&p).ok().flatten().unwrap_or_default();
        if report.entries != m.size || checkpoint != m.checkpoint {
            return Err(BackupError::Mismatch {
                partition: m.partition.clone(),
                manifest: m.size,
                restored: report.entries,
            });
        }
        if let Some(log) = checks
            .verified
            .as_ref()
            .and_then(|v| v.of(&manifest.origin, &m.partition))
        {
            extends(&store, &p, log, m.size)?;
        }
    }
    for o in older {
        let who = super::KeyActor {
            actor: checks.actor.clone(),
            reason: format!(
                "{}restored from backup {} (size {}) although size {} was verified or witnessed",
                if checks.reason.is_empty() {
                    String::new()
                } else {
                    format!("{}; ", checks.reason)
                },
                manifest.backup_id,
                o.backup,
                o.verified
            ),
        };
        store
            .record_restore(&o.partition, who, o.verified - o.backup)
            .map_err(BackupError::Record)?;
    }
    Ok(())
}

/// With a verified size at or below the restored one: a consistency proof from it to the
/// restored checkpoint verifies against the verified root.
fn extends(
    store: &Store,
    p: &PartitionId,
    log: &VerifiedLog,
    size: u64,
) -> Result<(), BackupError> {
    use crate::ledger::proof_json::ProofJsonError;
    if log.size == 0 || log.size > size {
        return Ok(());
    }
    let not_extending = |error| BackupError::NotExtending {
        partition: p.to_string(),
        size: log.size,
        error,
    };
    let old = crate::ledger::Hash::from_base64(&log.root)
        .ok_or(ProofJsonError::BadHash("root"))
        .map_err(not_extending)?;
    let key = store
        .verifier_key(p)
        .ok_or(ProofJsonError::NoRoot)
        .map_err(not_extending)?;
    store
        .prove_consistency(p, crate::ledger::TreeSize(log.size), None)
        .map_err(|_| not_extending(ProofJsonError::NoRoot))?
        .verify_with_key(&key, &old)
        .map_err(not_extending)
}
