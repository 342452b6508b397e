//! `kukaku backup`: an online backup of the instance (docs/operations.md), run by whoever
//! holds the store: the running server through its admin socket, or this process.

use std::path::Path;

use super::{AdminError, Out, Reply};
use crate::ledger::format_utc_ms;
use crate::store::Store;

/// Backs up into `to`, reporting each step and a summary.
pub(super) fn backup(
    store: &Store,
    to: &Path,
    keep: Option<usize>,
    out: Out<'_>,
) -> Result<(), AdminError> {
    let started = std::time::Instant::now();
    let report = store.backup(to, keep, &mut |pos, len, what| {
        out(Reply::Progress {
            label: format!("backup: {what}"),
            pos,
            len,
        });
    })?;
    let m = &report.manifest;
    let entries: u64 = m.partitions.iter().map(|p| p.size).sum();
    out(Reply::Line(format!(
        "backup {} of {} at {}: {} partitions, {entries} entries, {} files ({} bytes) in {:.1} s; KEK {} needed to restore",
        m.backup_id,
        m.origin,
        format_utc_ms(m.created_ms),
        m.partitions.len(),
        report.data_files,
        report.data_bytes,
        started.elapsed().as_secs_f64(),
        m.kek_fingerprint,
    )));
    let kept: Vec<String> = report.kept.iter().map(u32::to_string).collect();
    out(Reply::Line(format!(
        "{} holds backups {}",
        to.display(),
        kept.join(", ")
    )));
    Ok(())
}
