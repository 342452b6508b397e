//! Restoring a backup into a new home and proving the result (docs/operations.md,
//! "Restoring"): the files, the anchor, the KEK (a file or an HSM's configuration), then
//! every partition verified with its keys against the manifest and against what others
//! verified.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rocksdb::backup::RestoreOptions;
use serde::Deserialize;

use super::{BackupError, BackupManifest, Layout, ManifestPartition, db, io};
use crate::ledger::proof_json::{ConsistencyProofJson, ProofJsonError};
use crate::ledger::{Checkpoint, Hash, PartitionId};
use crate::store::{Paths, Store, StoreOptions, VerifyOptions, anchor, private};

/// What `restore` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// The manifest of the backup restored.
    pub manifest: BackupManifest,
    /// The partitions proven a prefix of the live log (by [`RestoreChecks::live_proofs`]).
    pub prefixes: Vec<ProvenPrefix>,
}

/// A partition of the backup proven a prefix of the live log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenPrefix {
    /// The partition.
    pub partition: PartitionId,
    /// Its size in the backup.
    pub backup: u64,
    /// The size of the live log's signed checkpoint the proof reaches.
    pub live: u64,
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
    /// Consistency proofs from the live instance (its auditor route
    /// `…/proofs/consistency?from=<the backup's size>`), each from a partition's size in the
    /// backup to a checkpoint of the live log signed with the partition's key: the restore
    /// fails unless each proves the backup's log a prefix of the live one.
    pub live_proofs: Vec<ConsistencyProofJson>,
}

/// A partition of the backup that holds less than was verified of it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Older {
    partition: PartitionId,
    backup: u64,
    verified: u64,
}

/// The KEK a restored instance opens with: a copy of a KEK file, or the configuration of the
/// HSM that holds it (docs/keys.md). The backup holds neither.
#[derive(Debug)]
pub enum RestoredKek {
    /// The KEK file the backup needs, copied to `kek.key` (mode 0600).
    File(PathBuf),
    /// The token the KEK is in, written to `kek.pkcs11`.
    Pkcs11(crate::crypto::pkcs11::Pkcs11Config),
}

/// Restores backup `id` (the newest if `None`) of `dir` into the new home `home` (`paths`),
/// with the KEK `kek` (a file copied to `paths.kek`, or the HSM configuration written to
/// `kek.pkcs11`), then opens the instance and
/// verifies every partition with its keys against the manifest and against what others
/// verified (`checks`). A failed restore removes the home it made.
pub fn restore(
    dir: &Path,
    id: Option<u32>,
    (home, paths): (&Path, &Paths),
    kek: &RestoredKek,
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
    match restored {
        Ok(prefixes) => Ok(RestoreReport { manifest, prefixes }),
        Err(e) => {
            let _ = std::fs::remove_dir_all(home);
            Err(e)
        }
    }
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

/// Both engines' files, the anchor of the manifest's sizes, and the KEK file or HSM
/// configuration.
fn restore_files(
    layout: &Layout,
    manifest: &BackupManifest,
    paths: &Paths,
    kek: &RestoredKek,
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
    match kek {
        RestoredKek::File(file) => {
            std::fs::copy(file, &paths.kek).map_err(io(file))?;
        }
        RestoredKek::Pkcs11(config) => {
            config.save(&paths.kek_pkcs11()).map_err(BackupError::Kek)?
        }
    }
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
/// at or below its size and that it is a prefix of the live log where a proof says so, and
/// records a `restore` event where it holds less than others verified.
fn verify_restored(
    manifest: &BackupManifest,
    paths: &Paths,
    checks: &RestoreChecks,
    older: &[Older],
) -> Result<Vec<ProvenPrefix>, BackupError> {
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
    let prefixes = checks
        .live_proofs
        .iter()
        .map(|proof| prefix_of_live(&store, manifest, checks.verified.as_ref(), proof))
        .collect::<Result<Vec<_>, _>>()?;
    for o in older {
        let proven = prefixes
            .iter()
            .filter(|x| x.partition == o.partition)
            .map(|x| format!("; proven a prefix of the live log at size {}", x.live))
            .next_back()
            .unwrap_or_default();
        let who = crate::store::KeyActor {
            actor: checks.actor.clone(),
            reason: format!(
                "{}restored from backup {} (size {}) although size {} was verified or witnessed{proven}",
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
    Ok(prefixes)
}

/// A consistency proof from the live instance: its checkpoint names a partition of the
/// backup, it starts at the partition's size in the backup, its checkpoint verifies with the
/// partition's key, the proof links the backup's signed root to it, and where others verified
/// that very size, their root is the checkpoint's.
fn prefix_of_live(
    store: &Store,
    manifest: &BackupManifest,
    verified: Option<&Verified>,
    proof: &ConsistencyProofJson,
) -> Result<ProvenPrefix, BackupError> {
    let note = proof.checkpoint.as_deref().unwrap_or_default();
    let log = note.lines().next().unwrap_or_default();
    let (p, m) = manifest_ids(manifest)?
        .into_iter()
        .find(|(_, m)| log == format!("{}/{}", manifest.origin, m.partition))
        .ok_or_else(|| BackupError::LiveProofLog(log.chars().take(200).collect()))?;
    if proof.size1 != m.size {
        return Err(BackupError::LiveProofFrom {
            partition: m.partition.clone(),
            backup: m.size,
            from: proof.size1,
        });
    }
    let not_prefix = |error| BackupError::NotPrefix {
        partition: m.partition.clone(),
        error,
    };
    let key = store
        .verifier_key(&p)
        .ok_or(ProofJsonError::NoRoot)
        .map_err(not_prefix)?;
    let backup_root = Checkpoint::verify_note(&m.checkpoint, &key)
        .map_err(ProofJsonError::from)
        .map_err(not_prefix)?
        .root;
    proof
        .verify_with_key(&key, &backup_root)
        .map_err(not_prefix)?;
    let live = Checkpoint::verify_note(note, &key)
        .map_err(ProofJsonError::from)
        .map_err(not_prefix)?;
    if let Some(v) = verified.and_then(|v| v.of(&manifest.origin, &m.partition))
        && v.size == live.size
        && Hash::from_base64(&v.root) != Some(live.root)
    {
        return Err(BackupError::LiveNotVerified {
            partition: m.partition.clone(),
            size: v.size,
        });
    }
    Ok(ProvenPrefix {
        partition: p,
        backup: m.size,
        live: live.size,
    })
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
