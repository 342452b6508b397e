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
//! A restore ([`restore()`], in `restore.rs`) refuses to write into an existing home,
//! restores both engines' files, writes the acknowledged-size anchor from the manifest's
//! sizes, installs the KEK file or HSM configuration the operator gives, opens the instance
//! and verifies every partition with its keys against the manifest.

use std::path::{Path, PathBuf};

use rocksdb::backup::{BackupEngine, BackupEngineOptions};
use rocksdb::checkpoint::Checkpoint;
use rocksdb::{DB, Env, Options};
use serde::{Deserialize, Serialize};

mod restore;

pub use restore::{
    ProvenPrefix, RestoreChecks, RestoreReport, RestoredKek, Verified, VerifiedLog, restore,
};

use super::private::{self, PrivateError};
use super::records::{STATE_KEY, StateRecord, checkpoint_key, decode, partition_cf};
use super::{OpenError, ProvisionError, Store, keyring, read_registry};
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
    #[error(
        "kukaku backup copies the embedded RocksDB engine; this instance keeps its data in \
         another engine: back that up with the engine's own tools"
    )]
    NotEmbedded,
    #[error("the partition registry")]
    Registry(#[source] ProvisionError),
    #[error("the key store")]
    Key(#[source] keyring::KeyError),
    #[error("the KEK")]
    Kek(#[source] crate::crypto::kek::KekError),
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
    #[error(
        "a live proof's checkpoint names no partition of this backup ({0:?}); give the proofs \
         of this instance's partitions"
    )]
    LiveProofLog(String),
    #[error(
        "partition {partition}: the live proof starts at size {from}, the backup holds {backup}; \
         ask the live instance for ?from={backup}"
    )]
    LiveProofFrom {
        partition: String,
        backup: u64,
        from: u64,
    },
    #[error("partition {partition}: the backup is not proven a prefix of the live log")]
    NotPrefix {
        partition: String,
        #[source]
        error: crate::ledger::proof_json::ProofJsonError,
    },
    #[error(
        "partition {partition}: the live log's checkpoint at size {size} is not the root verified \
         at that size (the state file given): the live log forked from what others saw"
    )]
    LiveNotVerified { partition: String, size: u64 },
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
        let rocks = self
            .inner
            .engine
            .as_rocks()
            .ok_or(BackupError::NotEmbedded)?;
        let staging = staging_dir(rocks.db());
        progress(0, 4, "checkpoint");
        let created_ms = self.checkpoints(rocks.db(), &staging)?;
        let result = self.back_up_staged(&layout, &staging, created_ms, keep, progress);
        let _ = std::fs::remove_dir_all(&staging);
        result
    }

    /// The two checkpoints, under the key-operation lock: `data/`, then `keystore/`.
    fn checkpoints(&self, data: &DB, staging: &Path) -> Result<u64, BackupError> {
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
        Checkpoint::new(data)
            .and_then(|c| c.create_checkpoint(staging.join("data")))
            .map_err(db("checkpoint of data/"))?;
        self.inner
            .keyring
            .checkpoint(&staging.join("keystore"))
            .map_err(BackupError::Key)?;
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
            copy_watched(
                &mut engine,
                &data,
                (&staging.join("data"), &layout.data()),
                progress,
            )?;
            (partitions, newest(&engine)?)
        };
        progress(2, 4, "key store");
        let (kek_fingerprint, keystore_id) = {
            let keys = open_staged(&staging.join("keystore"))?;
            let fp = super::key_store::local_fingerprint(&keys)
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

/// Beside `data/` (the same file system, so the checkpoint is hard links).
fn staging_dir(data: &DB) -> PathBuf {
    let data = data.path();
    let name = format!(
        ".{}.backup-staging",
        data.file_name().and_then(|n| n.to_str()).unwrap_or("data")
    );
    data.with_file_name(name)
}

/// The data engine's copy, the long step of a backup: it runs on a scoped thread while this
/// one reports the bytes written into the backup so far against the checkpoint's size (an
/// incremental backup skips table files it holds already, so it ends below that).
fn copy_watched(
    engine: &mut BackupEngine,
    data: &DB,
    (staged, into): (&Path, &Path),
    progress: &mut dyn FnMut(u64, u64, &str),
) -> Result<(), BackupError> {
    const LABEL: &str = "data/ bytes copied (files already backed up are skipped)";
    let total = dir_bytes(staged);
    let before = dir_bytes(into);
    progress(0, total, LABEL);
    std::thread::scope(|s| {
        let job = s.spawn(|| engine.create_new_backup(data));
        while !job.is_finished() {
            std::thread::sleep(std::time::Duration::from_millis(250));
            progress(
                dir_bytes(into).saturating_sub(before).min(total),
                total,
                LABEL,
            );
        }
        match job.join() {
            Ok(result) => result.map_err(db("backing up data/")),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })?;
    progress(total, total, LABEL);
    Ok(())
}

/// The bytes of the files under `dir` (0 for what cannot be read: files come and go while a
/// backup engine renames its temporary files).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
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
    for info in read_registry(&super::engine::DbView(data)).map_err(BackupError::Registry)? {
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
