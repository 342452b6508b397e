//! Verification of one proof JSON (docs/format.md §9) as `kukaku prove` and the auditor
//! routes return it: the embedded checkpoint under a pinned key whose window covers the
//! newest entry's time (`newestEntry`), then the proof. A
//! consistency proof from the state file's size advances the state (append-only since the
//! last run, without downloading the log).

use serde::Serialize;

use kukaku::ledger::proof_json::{
    ConsistencyProofJson, InclusionProofJson, NewestEntry, ProofJsonError,
};
use kukaku::ledger::{Checkpoint, Hash, PartitionId, SignedNote, VerifierKey};

use crate::audit::AuditError;
use crate::state::{LogState, State};
use crate::trust::{LogKey, Trust};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "proof", rename_all = "lowercase")]
pub enum ProofReport {
    Inclusion {
        log: String,
        leaf_index: u64,
        tree_size: u64,
        leaf_hash: String,
        root: String,
        /// The state file holds this size and its root matched.
        matches_state: bool,
    },
    Consistency {
        log: String,
        from: u64,
        to: u64,
        root: String,
        /// Where the old root came from: `state` (verified before) or `proof` (taken on
        /// first use from the proof's `root1`).
        old_root_from: &'static str,
    },
}

fn fail(log: &str, seq: u64, step: impl Into<String>) -> AuditError {
    AuditError::Failed {
        partition: log.to_owned(),
        seq,
        step: step.into(),
    }
}

/// What a proof's checkpoint names: the log (`<origin>/<partition>`), the partition, the
/// pinned keys of that log with their windows, and the root the note states (trusted only
/// once a key has verified the note).
struct Pinned {
    log: String,
    partition: PartitionId,
    keys: Vec<(LogKey, VerifierKey)>,
    root: Hash,
}

fn pinned(trust: &Trust, note: &str) -> Result<Pinned, AuditError> {
    let parsed = SignedNote::parse(note).map_err(|e| {
        AuditError::Usage(format!(
            "the proof's checkpoint: {}",
            kukaku::error::report(&e)
        ))
    })?;
    let cp = Checkpoint::parse_body(&parsed.text).map_err(|e| {
        AuditError::Usage(format!(
            "the proof's checkpoint: {}",
            kukaku::error::report(&e)
        ))
    })?;
    let (origin, p) = cp
        .origin
        .rsplit_once('/')
        .ok_or_else(|| AuditError::Usage("checkpoint origin names no partition".into()))?;
    let partition = PartitionId::parse(p)
        .map_err(|_| AuditError::Usage("checkpoint origin names no partition".into()))?;
    let keys: Vec<_> = trust
        .log_keys(origin, &partition)
        .map(|(l, k)| (l.clone(), k))
        .collect();
    if keys.is_empty() {
        return Err(AuditError::NotTrusted(cp.origin));
    }
    Ok(Pinned {
        log: cp.origin,
        partition,
        keys,
        root: cp.root,
    })
}

/// Accepts the proof under a pinned key that verifies it and whose validity window covers
/// the newest entry's `tx_time`, as `verify` does for a bundle's checkpoints. The time comes
/// from the proof's `newestEntry` (its header proven in the tree); a proof without one can
/// use only keys without a window, since nothing dates its checkpoint.
fn with_keys(
    pin: &Pinned,
    size: u64,
    newest: Option<&NewestEntry>,
    mut check: impl FnMut(&VerifierKey) -> Result<(), ProofJsonError>,
) -> Result<(), AuditError> {
    use kukaku::ledger::note::NoteError;
    let tx = newest
        .map(|e| e.tx_time(&pin.partition, size, &pin.root))
        .transpose()
        .map_err(|e| fail(&pin.log, size, kukaku::error::report(&e)))?;
    let mut outside = false;
    for (window, k) in &pin.keys {
        match check(k) {
            Ok(()) => {
                let open = window.from.is_none() && window.until.is_none();
                if open || tx.is_some_and(|t| window.covers(t)) {
                    return Ok(());
                }
                outside = true;
            }
            Err(ProofJsonError::Checkpoint(NoteError::NoTrustedSignature)) => {}
            Err(e) => return Err(fail(&pin.log, size, kukaku::error::report(&e))),
        }
    }
    Err(fail(
        &pin.log,
        size,
        match (outside, tx) {
            (true, Some(_)) => "checkpoint signed by a pinned key outside its validity window",
            (true, None) => {
                "checkpoint signed by a pinned key with a validity window, and the proof has no \
                 newestEntry to date it"
            }
            (false, _) => "checkpoint has no signature by a pinned key",
        },
    ))
}

/// Verifies `text` (an inclusion or a consistency proof). Returns the report and, for a
/// consistency proof, the state entry to store.
pub fn verify_proof(
    text: &str,
    trust: &Trust,
    state: &State,
) -> Result<(ProofReport, Option<(String, LogState)>), AuditError> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| AuditError::Usage(format!("not JSON: {}", kukaku::error::report(&e))))?;
    let usage = |e: serde_json::Error| {
        AuditError::Usage(format!("not a proof: {}", kukaku::error::report(&e)))
    };
    if let Some(err) = value.get("error") {
        let field = |k: &str| {
            err.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("?")
                .to_owned()
        };
        return Err(AuditError::Usage(format!(
            "the file is the server's error answer, not a proof: {}: {}",
            field("code"),
            field("message")
        )));
    }
    if value.get("leafIdx").is_some() {
        let proof: InclusionProofJson = serde_json::from_value(value).map_err(usage)?;
        Ok((inclusion(&proof, trust, state)?, None))
    } else if value.get("size1").is_some() {
        let proof: ConsistencyProofJson = serde_json::from_value(value).map_err(usage)?;
        let (report, entry) = consistency(&proof, trust, state)?;
        Ok((report, Some(entry)))
    } else {
        Err(AuditError::Usage(
            "not a proof: expected leafIdx (inclusion) or size1 (consistency)".into(),
        ))
    }
}

/// An inclusion proof under a pinned key; at the size of the saved state its root must be
/// the one verified before.
fn inclusion(
    proof: &InclusionProofJson,
    trust: &Trust,
    state: &State,
) -> Result<ProofReport, AuditError> {
    let note = proof
        .checkpoint
        .as_deref()
        .ok_or_else(|| AuditError::Usage("the proof carries no checkpoint".into()))?;
    let pin = pinned(trust, note)?;
    with_keys(&pin, proof.tree_size, proof.newest_entry.as_ref(), |k| {
        proof.verify_with_key(k)
    })?;
    let (log, root) = (pin.log, pin.root);
    let matches_state = match state.logs.get(&log) {
        Some(s) if s.size == proof.tree_size => {
            if s.root != root.to_base64() {
                return Err(fail(
                    &log,
                    proof.tree_size,
                    "root differs from the one verified before at this size (split view)",
                ));
            }
            true
        }
        _ => false,
    };
    Ok(ProofReport::Inclusion {
        log,
        leaf_index: proof.leaf_idx,
        tree_size: proof.tree_size,
        leaf_hash: proof.leaf_hash.clone(),
        root: root.to_base64(),
        matches_state,
    })
}

/// A consistency proof under a pinned key, from the saved state's size (or, without state,
/// from the root the proof names); the state entry to store at its newer size.
fn consistency(
    proof: &ConsistencyProofJson,
    trust: &Trust,
    state: &State,
) -> Result<(ProofReport, (String, LogState)), AuditError> {
    let note = proof
        .checkpoint
        .as_deref()
        .ok_or_else(|| AuditError::Usage("the proof carries no checkpoint".into()))?;
    let pin = pinned(trust, note)?;
    let (log, root) = (pin.log.clone(), pin.root);
    let (old, from) = match state.logs.get(&log) {
        Some(s) => {
            if s.size != proof.size1 {
                return Err(AuditError::Usage(format!(
                    "the state file holds {log} at size {}; ask for a proof from that size",
                    s.size
                )));
            }
            let old = Hash::from_base64(&s.root)
                .ok_or_else(|| AuditError::Usage("state file root is not base64".into()))?;
            (old, "state")
        }
        None => {
            let root1 = proof.root1.as_deref().ok_or_else(|| {
                AuditError::Usage("no state for this log and no root1 in the proof".into())
            })?;
            let old = Hash::from_base64(root1)
                .ok_or_else(|| AuditError::Usage("root1 is not base64".into()))?;
            (old, "proof")
        }
    };
    with_keys(&pin, proof.size2, proof.newest_entry.as_ref(), |k| {
        proof.verify_with_key(k, &old)
    })?;
    let entry = LogState {
        size: proof.size2,
        root: root.to_base64(),
        checkpoint: note.to_owned(),
    };
    let report = ProofReport::Consistency {
        log: log.clone(),
        from: proof.size1,
        to: proof.size2,
        root: root.to_base64(),
        old_root_from: from,
    };
    Ok((report, (log, entry)))
}
