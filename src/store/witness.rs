//! Witnessing (docs/design.md §6): the intermediate cosigns the hub checkpoints it verified; the
//! hub keeps the cosignatures of the witnesses it trusts beside its own checkpoints.
//!
//! A cosigned checkpoint is stored under `W ‖ size` as the hub's checkpoint note at that size
//! with the trusted witnesses' `cosignature/v1` lines appended. `C ‖ size` is never touched:
//! the log's own checkpoint stays what the writer signed.

use super::Store;
use super::engine::{Dir, Op};
use super::read::ReadError;
use super::records::{checkpoint_key, cosigned_key};
use crate::ledger::note::{NoteError, SignedNote};
use crate::ledger::{Checkpoint, PartitionId, VerifierKey};

/// Why a cosignature was not accepted (hub) or not made (witness).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CosignError {
    #[error("the checkpoint is not a note this instance signed for partition {partition}: {why}")]
    NotOurs {
        partition: PartitionId,
        why: NoteError,
    },
    #[error("partition {partition} has no checkpoint at size {size}")]
    UnknownCheckpoint { partition: PartitionId, size: u64 },
    #[error(
        "partition {partition}: the cosigned checkpoint at size {size} differs from the stored one"
    )]
    Conflict { partition: PartitionId, size: u64 },
    #[error("no cosignature by a witness this instance trusts")]
    UntrustedWitness,
    #[error("cosignature by {0} does not verify")]
    BadCosignature(String),
    #[error("malformed note")]
    Note(#[source] NoteError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("storage")]
    Storage(#[from] super::EngineError),
    #[error("the cosignature lock is poisoned (a thread panicked holding it)")]
    LockPoisoned,
    #[error("the stored checkpoint of partition {0} is unreadable")]
    UnreadableCheckpoint(PartitionId),
    #[error("the stored cosigned checkpoint of partition {0} is unreadable")]
    UnreadableCosigned(PartitionId),
}

/// What the hub kept of a cosignature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignatureAccepted {
    pub size: u64,
    /// Names of the trusted witnesses whose valid cosignatures were found, sorted.
    pub witnesses: Vec<String>,
    /// The stored note: the checkpoint with every trusted cosignature so far.
    pub note: String,
}

fn now_secs() -> u64 {
    super::now_ms() / 1000
}

/// The trusted witnesses (cosigner keys) whose cosignature on `incoming` verifies; a line
/// that claims a trusted key but fails refuses the whole note, and so does a note no trusted
/// witness cosigned.
fn cosigned_by<'k>(
    incoming: &SignedNote,
    trusted: &'k [VerifierKey],
) -> Result<Vec<&'k VerifierKey>, CosignError> {
    let mut witnessed = Vec::new();
    for w in trusted.iter().filter(|w| w.is_cosigner()) {
        match incoming.verify_cosignature(w) {
            Ok(_) => witnessed.push(w),
            Err(NoteError::NoTrustedSignature) => {}
            Err(_) => return Err(CosignError::BadCosignature(w.name().to_owned())),
        }
    }
    if witnessed.is_empty() {
        return Err(CosignError::UntrustedWitness);
    }
    Ok(witnessed)
}

/// Adds to `merged` the lines of `incoming` by the witnesses just verified (other lines are
/// dropped); a witness's newer line replaces its older one.
fn merge_cosignatures(
    merged: &mut SignedNote,
    incoming: &SignedNote,
    witnessed: &[&VerifierKey],
) -> Result<(), CosignError> {
    let lines: Vec<_> = incoming
        .signatures
        .iter()
        .filter(|s| {
            witnessed
                .iter()
                .any(|w| s.name == w.name() && s.key_id == w.id())
        })
        .cloned()
        .collect();
    merged.signatures.retain(|s| {
        !lines
            .iter()
            .any(|l| l.name == s.name && l.key_id == s.key_id)
    });
    merged
        .merge(&SignedNote {
            text: incoming.text.clone(),
            signatures: lines,
        })
        .map_err(CosignError::Note)
}

impl Store {
    /// This instance's witness key (C2SP vkey, type 0x04), for hubs to pin.
    pub fn cosigner_key(&self) -> VerifierKey {
        self.inner.cosigner.verifier_key().clone()
    }

    /// Cosigns `note` now. The caller has verified the note's signature and the log's
    /// consistency up to it (the replicator does, before it stores a page).
    pub fn cosign(&self, note: &str) -> Result<String, CosignError> {
        let parsed = SignedNote::parse(note).map_err(CosignError::Note)?;
        let signed = self
            .inner
            .cosigner
            .cosign(&parsed, now_secs())
            .map_err(CosignError::Note)?;
        Ok(signed.to_text())
    }

    /// Hub side: checks that `note` is this instance's checkpoint of `p` as stored, keeps the
    /// valid cosignatures of the `trusted` witnesses (cosigner vkeys), and stores the merged
    /// note under `W ‖ size`. Lines by other keys are dropped; a line that claims a trusted
    /// key but fails refuses the whole note.
    pub fn add_cosignature(
        &self,
        p: &PartitionId,
        note: &str,
        trusted: &[VerifierKey],
    ) -> Result<CosignatureAccepted, CosignError> {
        let partition = p.clone();
        let key = self
            .inner
            .key_for_note(p, note)
            .ok_or_else(|| ReadError::UnknownPartition(partition.clone()))?;
        let cp = Checkpoint::verify_note(note, &key).map_err(|why| CosignError::NotOurs {
            partition: partition.clone(),
            why,
        })?;
        let incoming = SignedNote::parse(note).map_err(CosignError::Note)?;
        let witnessed = cosigned_by(&incoming, trusted)?;
        let inner = &self.inner;
        let _guard = inner
            .cosign_lock
            .lock()
            .map_err(|_| CosignError::LockPoisoned)?;
        let space = inner.known(p)?;
        let stored = inner
            .engine
            .get(&space, &checkpoint_key(cp.size))
            .map_err(CosignError::Storage)?
            .ok_or_else(|| CosignError::UnknownCheckpoint {
                partition: partition.clone(),
                size: cp.size,
            })?;
        let stored = std::str::from_utf8(&stored)
            .ok()
            .and_then(|t| SignedNote::parse(t).ok())
            .ok_or_else(|| CosignError::UnreadableCheckpoint(partition.clone()))?;
        if stored.text != incoming.text {
            return Err(CosignError::Conflict {
                partition,
                size: cp.size,
            });
        }
        let mut merged = match inner
            .engine
            .get(&space, &cosigned_key(cp.size))
            .map_err(CosignError::Storage)?
        {
            Some(raw) => std::str::from_utf8(&raw)
                .ok()
                .and_then(|t| SignedNote::parse(t).ok())
                .ok_or_else(|| CosignError::UnreadableCosigned(partition.clone()))?,
            None => stored,
        };
        merge_cosignatures(&mut merged, &incoming, &witnessed)?;
        let text = merged.to_text();
        inner
            .engine
            .commit(vec![Op::Put {
                space,
                key: cosigned_key(cp.size).to_vec(),
                value: text.as_bytes().to_vec(),
            }])
            .map_err(CosignError::Storage)?;
        let mut witnesses: Vec<String> = witnessed.iter().map(|w| w.name().to_owned()).collect();
        witnesses.sort();
        Ok(CosignatureAccepted {
            size: cp.size,
            witnesses,
            note: text,
        })
    }

    /// The checkpoint at `size` with its stored cosignatures, if any were accepted.
    pub fn cosigned_checkpoint_at(
        &self,
        p: &PartitionId,
        size: u64,
    ) -> Result<Option<String>, ReadError> {
        match self
            .inner
            .engine
            .get(&super::read::space(p), &cosigned_key(size))?
        {
            None => Ok(None),
            Some(raw) => String::from_utf8(raw)
                .map(Some)
                .map_err(|_| ReadError::Corrupt {
                    partition: p.clone(),
                    seq: size,
                    step: "cosigned checkpoint is not UTF-8".into(),
                }),
        }
    }

    /// The smallest cosigned checkpoint of a partition whose size is at least `size` (the
    /// first the witness verified that covers the entries below `size`), with its note.
    pub fn cosigned_at_or_after(
        &self,
        p: &PartitionId,
        size: u64,
    ) -> Result<Option<(u64, String)>, ReadError> {
        let from = cosigned_key(size);
        let it = self
            .inner
            .engine
            .scan(&super::read::space(p), &from, Dir::Forward)?;
        for item in it {
            let (k, v) = item?;
            if k.first() != Some(&b'W') {
                break;
            }
            let Some(at) = k
                .get(1..)
                .and_then(|s| <[u8; 8]>::try_from(s).ok())
                .map(u64::from_be_bytes)
            else {
                continue;
            };
            let note = String::from_utf8(v.to_vec()).map_err(|_| ReadError::Corrupt {
                partition: p.clone(),
                seq: at,
                step: "cosigned checkpoint is not UTF-8".into(),
            })?;
            return Ok(Some((at, note)));
        }
        Ok(None)
    }

    /// The largest cosigned size of a partition (the witness has verified up to it).
    pub fn latest_cosigned_size(&self, p: &PartitionId) -> Result<Option<u64>, ReadError> {
        let mut it = self
            .inner
            .engine
            .scan(&super::read::space(p), b"X", Dir::Reverse)?;
        for item in &mut it {
            let (k, _) = item?;
            match k.first() {
                Some(b'W') => {
                    return Ok(k
                        .get(1..)
                        .and_then(|s| <[u8; 8]>::try_from(s).ok())
                        .map(u64::from_be_bytes));
                }
                Some(&c) if c < b'W' => return Ok(None),
                _ => {}
            }
        }
        Ok(None)
    }
}
