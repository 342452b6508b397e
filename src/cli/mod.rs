//! The `kukaku` binary's subcommands, one file each (`args` holds every argument
//! definition); `main.rs` dispatches. Here: what several subcommands share (opening a store,
//! parsing a partition id, how a command ended).

use anyhow::{Context, Result};
use kukaku::domain::InsurerNumber;
use kukaku::ledger::PartitionId;
use kukaku::store::{PartitionStatus, Paths, Store, StoreOptions};

pub(crate) mod args;
pub(crate) mod backup;
pub(crate) mod cell;
pub(crate) mod config;
pub(crate) mod continuity;
pub(crate) mod credentials;
pub(crate) mod demo;
pub(crate) mod export;
pub(crate) mod import;
pub(crate) mod init;
pub(crate) mod keys;
pub(crate) mod metrics;
pub(crate) mod partitions;
pub(crate) mod serve;
pub(crate) mod standby;
pub(crate) mod verify;

/// How a command ended when it did not fail with an error (exit 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Exit 0.
    Passed,
    /// A check failed or an input was refused, and was reported; nothing was changed by it
    /// (exit 1).
    Failed,
}

impl Outcome {
    /// Passed only if both passed.
    pub(crate) fn and(self, other: Outcome) -> Outcome {
        if self == Outcome::Passed {
            other
        } else {
            Outcome::Failed
        }
    }
}

/// The administrator's scope: proved by loading the instance's KEK (its file or its HSM).
pub(crate) fn admin_scope(paths: &Paths) -> Result<kukaku::crypto::AdminScope> {
    let kek = kukaku::store::load_kek(paths)?;
    Ok(kukaku::crypto::AdminScope::from_kek(kek.as_ref()))
}

/// A partition id from a 保険者番号 given on the command line (check digit validated).
pub(crate) fn partition(text: &str) -> Result<PartitionId> {
    Ok(InsurerNumber::parse(text)
        .with_context(|| format!("partition {text}"))?
        .partition_id())
}

/// Opens the instance, warning about each quarantined partition.
pub(crate) fn open(paths: &Paths) -> Result<Store> {
    open_with(paths, StoreOptions::default())
}

/// Opens the store to read (`Store::open_read_only`): on a cell, beside a serving writer
/// without displacing it; on the embedded engine as [`open`].
pub(crate) fn open_read_only(paths: &Paths) -> Result<Store> {
    let store = Store::open_read_only(paths, StoreOptions::default())?;
    for (p, why) in store.quarantined() {
        eprintln!("warning: partition {p} is quarantined: {why}");
    }
    Ok(store)
}

/// [`open`] with `options`.
pub(crate) fn open_with(paths: &Paths, options: StoreOptions) -> Result<Store> {
    let store = Store::open(paths, options)?;
    for (p, why) in store.quarantined() {
        eprintln!("warning: partition {p} is quarantined: {why}");
    }
    Ok(store)
}

/// The partitions asked for, or every active one when none was.
pub(crate) fn active_or(store: &Store, asked: &[String]) -> Result<Vec<PartitionId>> {
    if asked.is_empty() {
        Ok(store
            .partitions()?
            .into_iter()
            .filter(|p| p.status == PartitionStatus::Active)
            .map(|p| p.partition)
            .collect())
    } else {
        asked.iter().map(|s| partition(s)).collect()
    }
}
