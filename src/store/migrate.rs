//! Moving an embedded instance onto a replicated cell (issue 31, feature `postgres`): every
//! pair of every space and every key-store record copied byte for byte into an empty
//! schema, the instance record last (a copy cut short is no instance), then every space read
//! back from the cell and compared with what was copied. The bytes being the same, so are the
//! roots, checkpoints, proofs and audit bundles (docs/operations.md, "Moving an instance onto
//! a cell").

use ring::digest::{Context, SHA256};

use super::engine::{
    Dir, Engine, EngineError, Lease, Op, PgTarget, PostgresEngine, Space, View, commit_chunked,
};
use super::keyring::KeyError;
use super::records::INSTANCE_KEY;
use super::{EngineRecord, OpenError, Paths, Store, StoreOptions};
use crate::ledger::PartitionId;
use std::path::PathBuf;

/// Pairs per commit of a copy.
const BATCH: usize = 2_000;

/// Why a copy onto a cell failed; the cell's schema then holds a partial copy, which is no
/// instance (its instance record is written last): drop the schema and copy again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    #[error("this instance's data is not in the embedded engine")]
    NotEmbedded,
    #[error("schema {0} is not empty (drop it, or name another with --pg-schema)")]
    SchemaNotEmpty(String),
    #[error("reading this instance")]
    Source(#[source] EngineError),
    #[error("reading this instance's key store")]
    Keys(#[source] KeyError),
    #[error("writing to the cell")]
    Cell(#[source] EngineError),
    #[error("space {0} on the cell differs from this instance's after the copy")]
    Differs(String),
    #[error("opening")]
    Open(#[from] OpenError),
    #[error("moving {path} aside")]
    MoveAside {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
}

/// What a copy moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateReport {
    /// The partitions, each with its pairs.
    pub partitions: Vec<(PartitionId, u64)>,
    /// Pairs of the system space.
    pub system: u64,
    /// Key-store records.
    pub keys: u64,
}

/// Pairs copied so far.
pub type Progress<'a> = &'a mut dyn FnMut(u64);

/// The suffix of `data/` and `keystore/` once the instance lives on a cell.
pub const MOVED_SUFFIX: &str = "before-cell";

impl Store {
    /// Moves the embedded instance of `paths` onto the cell `record` names: copies it
    /// ([`Store::copy_to_postgres`]), writes `engine.json` (from then on every open finds the
    /// cell), and renames the home's `data/` and key store to `….before-cell`, which the
    /// operator removes once the cell is verified. The instance must not be serving (its
    /// lock says so). Returns what was copied and where the embedded copy now is.
    pub fn move_to_cell(
        paths: &Paths,
        record: &EngineRecord,
        options: StoreOptions,
        progress: Progress<'_>,
    ) -> Result<(MigrateReport, Vec<PathBuf>), MigrateError> {
        if paths.engine_record().exists() {
            return Err(MigrateError::NotEmbedded);
        }
        let target = record.target()?;
        let store = Store::open(paths, options.clone())?;
        let report = store.copy_to_postgres(target, &options, progress)?;
        drop(store);
        record.write(paths)?;
        let mut aside = Vec::new();
        for dir in [&paths.data, &paths.key_store] {
            let mut name = dir.file_name().unwrap_or_default().to_owned();
            name.push(format!(".{MOVED_SUFFIX}"));
            let to = dir.with_file_name(name);
            std::fs::rename(dir, &to).map_err(|error| MigrateError::MoveAside {
                path: dir.clone(),
                error,
            })?;
            aside.push(to);
        }
        Ok((report, aside))
    }
}

impl Store {
    /// Copies this embedded instance into the empty schema of `target` (made if missing) and
    /// checks the copy by reading every space back. The store must not be serving: the copy
    /// reads one snapshot, and appends after it would not be copied.
    pub fn copy_to_postgres(
        &self,
        target: PgTarget,
        options: &StoreOptions,
        progress: Progress<'_>,
    ) -> Result<MigrateReport, MigrateError> {
        if self.inner.engine.as_rocks().is_none() {
            return Err(MigrateError::NotEmbedded);
        }
        let lease = Lease {
            term: options.writer_lease,
            patience: options.writer_patience,
        };
        let schema = target.schema.clone();
        let cell =
            PostgresEngine::open(target, "kukaku migrate", lease).map_err(MigrateError::Cell)?;
        let occupied = [Space::System, Space::Keys]
            .iter()
            .map(|s| {
                cell.scan(s, &[], Dir::Forward)
                    .map(|mut it| it.next().is_some())
            })
            .collect::<Result<Vec<bool>, _>>()
            .map_err(MigrateError::Cell)?;
        if occupied.contains(&true) {
            return Err(MigrateError::SchemaNotEmpty(schema));
        }
        let source = &self.inner.engine;
        let partitions = source.partition_spaces().map_err(MigrateError::Source)?;
        cell.create_spaces(&partitions)
            .map_err(MigrateError::Cell)?;
        let keys = self.inner.keyring.records().map_err(MigrateError::Keys)?;
        let mut copied = 0;
        let mut count = |n: u64| {
            copied += n;
            progress(copied);
        };
        let key_ops = keys.iter().map(|(k, v)| Op::put(&Space::Keys, k, v));
        commit_in_batches(&cell, key_ops, &mut count)?;
        let snapshot = source.snapshot().map_err(MigrateError::Source)?;
        let mut report = MigrateReport {
            partitions: Vec::new(),
            system: 0,
            keys: keys.len() as u64,
        };
        let mut digests = vec![(
            Space::Keys,
            digest(keys.iter().map(|(k, v)| (&k[..], &v[..]))),
        )];
        for p in &partitions {
            let space = Space::Partition(p.clone());
            let (n, d) = copy_space(&*snapshot, &cell, &space, &mut count)?;
            report.partitions.push((p.clone(), n));
            digests.push((space, d));
        }
        let (n, d) = copy_space(&*snapshot, &cell, &Space::System, &mut count)?;
        report.system = n;
        digests.push((Space::System, d));
        for (space, want) in &digests {
            if digest_of(&cell, space)? != *want {
                return Err(MigrateError::Differs(space.name()));
            }
        }
        Ok(report)
    }
}

fn commit_in_batches(
    cell: &PostgresEngine,
    ops: impl Iterator<Item = Op>,
    count: &mut dyn FnMut(u64),
) -> Result<(), MigrateError> {
    commit_chunked(cell, ops, BATCH, count).map_err(MigrateError::Cell)
}

/// Copies one space (the system space's instance record last, in a commit of its own): its
/// pair count and the digest of its pairs.
fn copy_space(
    from: &dyn View,
    cell: &PostgresEngine,
    space: &Space,
    count: &mut dyn FnMut(u64),
) -> Result<(u64, [u8; 32]), MigrateError> {
    let mut hash = Context::new(&SHA256);
    let mut n = 0;
    let mut instance = None;
    let mut failed = None;
    let ops = from
        .scan(space, &[], Dir::Forward)
        .map_err(MigrateError::Source)?
        .map_while(|item| match item {
            Ok(pair) => Some(pair),
            Err(e) => {
                failed = Some(e);
                None
            }
        })
        .inspect(|(k, v)| {
            feed(&mut hash, k, v);
            n += 1;
        })
        .filter_map(|(k, v)| {
            if *space == Space::System && &k[..] == INSTANCE_KEY {
                instance = Some(v);
                return None;
            }
            Some(Op::put(space, &k, &v))
        });
    commit_in_batches(cell, ops, count)?;
    if let Some(e) = failed {
        return Err(MigrateError::Source(e));
    }
    if let Some(v) = instance {
        cell.commit(vec![Op::put(space, INSTANCE_KEY, &v)])
            .map_err(MigrateError::Cell)?;
        count(1);
    }
    Ok((n, finish(hash)))
}

/// The digest of a space as the cell holds it.
fn digest_of(cell: &PostgresEngine, space: &Space) -> Result<[u8; 32], MigrateError> {
    let mut hash = Context::new(&SHA256);
    for item in cell
        .scan(space, &[], Dir::Forward)
        .map_err(MigrateError::Cell)?
    {
        let (k, v) = item.map_err(MigrateError::Cell)?;
        feed(&mut hash, &k, &v);
    }
    Ok(finish(hash))
}

fn digest<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> [u8; 32] {
    let mut hash = Context::new(&SHA256);
    for (k, v) in pairs {
        feed(&mut hash, k, v);
    }
    finish(hash)
}

/// Length-prefixed, so that no two different pair lists feed the same bytes.
fn feed(hash: &mut Context, k: &[u8], v: &[u8]) {
    for part in [k, v] {
        hash.update(&(part.len() as u64).to_be_bytes());
        hash.update(part);
    }
}

fn finish(hash: Context) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(hash.finish().as_ref());
    out
}
