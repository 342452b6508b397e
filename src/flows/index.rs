//! `rebuild-index`: recomputes a partition's derived indexes (blind index of 個人番号,
//! household view, 高額該当 records per household) from the log. The log is the source of truth; the indexes are never more.

use crate::crypto::PartitionScope;
use crate::flows::transmission::Household;
use crate::ledger::{Kind, PartitionId};
use crate::store::{IndexKind, KeyError, ReadError, Store};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RebuildError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("partition {partition} seq {seq}: sealed payload does not decode")]
    Snapshot { partition: PartitionId, seq: u64 },
}

/// What a rebuild found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RebuildReport {
    pub snapshots: u64,
    pub index_entries: u64,
}

/// Rebuilds the indexes of one partition. Run with the store held exclusively (the CLI).
/// `progress(done, total)` counts entries read.
pub fn rebuild(
    store: &Store,
    scope: &PartitionScope,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RebuildReport, RebuildError> {
    let p = scope.partition();
    let size = store.size(p)?;
    let mut entries = Vec::new();
    let mut report = RebuildReport::default();
    for seq in 0..size {
        let e = store.read_entry(scope, seq)?;
        if e.header.kind == Kind::HOUSEHOLD_SNAPSHOT || e.header.kind == Kind::HOUSEHOLD_CORRECTION
        {
            let h: Household =
                serde_json::from_slice(&e.payload).map_err(|_| RebuildError::Snapshot {
                    partition: p.clone(),
                    seq,
                })?;
            entries.push((IndexKind::Household, h.setai_no.as_bytes().to_vec(), seq));
            for (kind, token) in crate::flows::import::person_tokens(store, p, &h)? {
                entries.push((kind, token, seq));
            }
            report.snapshots += 1;
        }
        if e.header.kind == Kind::KOGAKU_RECORD {
            let r: crate::flows::kogaku::KogakuRecord = serde_json::from_slice(&e.payload)
                .map_err(|_| RebuildError::Snapshot {
                    partition: p.clone(),
                    seq,
                })?;
            entries.push((IndexKind::Kogaku, r.setai_no.as_bytes().to_vec(), seq));
        }
        if seq % 256 == 0 {
            progress(seq, size);
        }
    }
    store.replace_derived_index(p, &entries)?;
    progress(size, size);
    report.index_entries = entries.len() as u64;
    Ok(report)
}
