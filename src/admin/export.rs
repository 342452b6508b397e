//! `export --audit`: an audit bundle written to a new file, never over an existing one.

use std::path::Path;

use super::{AdminError, Reply, partitions};
use crate::store::Store;

/// `export --audit`: every asked partition from genesis (or a checkpointed size, with a
/// consistency proof from an earlier one) into the file at `path`.
pub(super) fn export_audit(
    store: &Store,
    asked: &[String],
    (from, prove_from): (u64, Option<u64>),
    path: &Path,
    out: &mut dyn FnMut(Reply) -> bool,
) -> Result<(), AdminError> {
    let ids = partitions(store, asked)?;
    if let Some(m) = prove_from
        && (m == 0 || m >= from)
    {
        return Err(AdminError::ProveFrom {
            prove_from: m,
            from,
        });
    }
    let mut total = 0;
    for p in &ids {
        let size = store.size(p)?;
        if from > size {
            return Err(AdminError::FromSize {
                from,
                partition: p.to_string(),
                size,
            });
        }
        total += size - from;
    }
    let file_err = |error| AdminError::File {
        path: path.to_owned(),
        error,
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(file_err)?;
    let written = store
        // The store reports every 1,024 entries and at the end.
        .export_audit_from(
            &ids,
            from,
            prove_from,
            std::io::BufWriter::new(file),
            &mut |done| {
                out(Reply::Progress {
                    label: "exporting".into(),
                    pos: done,
                    len: total,
                });
            },
        )
        .map_err(AdminError::from)
        .and_then(|w| w.into_inner().map_err(|e| file_err(e.into_error())))
        .and_then(|f| f.sync_all().map_err(file_err));
    if let Err(e) = written {
        // Leave no partial bundle behind.
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    out(Reply::Line(format!(
        "wrote {} ({} partitions, {total} entries)",
        path.display(),
        ids.len()
    )));
    Ok(())
}
