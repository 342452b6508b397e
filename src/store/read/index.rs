//! The derived indexes of a partition (`I`, `V`, `K`): lookups and the rebuild's replacement.

use super::{ReadError, corrupt};
use crate::ledger::header::PartitionId;
use crate::store::Store;
use crate::store::engine::Op;
use crate::store::records::index_prefix;
use crate::store::writer::IndexKind;

impl Store {
    /// Replaces a partition's derived indexes (`I`, `V`) with `entries` in one synced batch.
    /// For `rebuild-index`, which runs with the store held exclusively (no concurrent append
    /// can race the rebuild).
    pub fn replace_derived_index(
        &self,
        p: &PartitionId,
        entries: &[(IndexKind, Vec<u8>, u64)],
    ) -> Result<(), ReadError> {
        let space = self.inner.known(p)?;
        let mut ops: Vec<Op> = IndexKind::ALL
            .iter()
            .map(|kind| Op::DeleteRange {
                space: space.clone(),
                from: vec![kind.prefix()],
                to: vec![kind.prefix() + 1],
            })
            .collect();
        for (kind, key, seq) in entries {
            if key.is_empty() || key.len() > 255 {
                return Err(ReadError::BadRequest(
                    "index key must be 1–255 bytes".into(),
                ));
            }
            ops.push(Op::Put {
                space: space.clone(),
                key: crate::store::records::index_key(kind.prefix(), key, *seq),
                value: Vec::new(),
            });
        }
        Ok(self.inner.engine.commit(ops)?)
    }

    /// Seqs filed under a derived index key, ascending.
    pub fn index_seqs(
        &self,
        p: &PartitionId,
        kind: IndexKind,
        key: &[u8],
    ) -> Result<Vec<u64>, ReadError> {
        let prefix = index_prefix(kind.prefix(), key);
        let mut out = Vec::new();
        for item in self.inner.engine.scan_prefix(&super::space(p), &prefix)? {
            let (k, _) = item?;
            let Some(seq) = k
                .strip_prefix(prefix.as_slice())
                .and_then(|s| <[u8; 8]>::try_from(s).ok())
            else {
                break;
            };
            out.push(u64::from_be_bytes(seq));
        }
        Ok(out)
    }

    /// Every key of one derived index with the latest seq it points to, in key order (for
    /// the index keys that are not protected: 世帯番号 of `V` and `K`).
    pub fn index_latest(
        &self,
        p: &PartitionId,
        kind: IndexKind,
    ) -> Result<Vec<(Vec<u8>, u64)>, ReadError> {
        let tag = [kind.prefix()];
        let mut out: Vec<(Vec<u8>, u64)> = Vec::new();
        for item in self.inner.engine.scan_prefix(&super::space(p), &tag)? {
            let (k, _) = item?;
            let Some(rest) = k.strip_prefix(tag.as_slice()) else {
                break;
            };
            let Some((&len, rest)) = rest.split_first() else {
                break;
            };
            let (key, seq) = rest.split_at_checked(usize::from(len)).unwrap_or_default();
            let Ok(seq) = <[u8; 8]>::try_from(seq) else {
                return Err(corrupt(p, 0, "derived index key malformed"));
            };
            let seq = u64::from_be_bytes(seq);
            match out.last_mut() {
                Some((last, s)) if last.as_slice() == key => *s = seq,
                _ => out.push((key.to_vec(), seq)),
            }
        }
        Ok(out)
    }
}
