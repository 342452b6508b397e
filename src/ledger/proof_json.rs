//! JSON of inclusion and consistency proofs. Field names are those of the transparency-dev/merkle
//! test vectors, so one parser reads both; kukaku adds `checkpoint` (the signed note at the
//! proof's tree size) and `newestEntry` (the hashed header of the checkpoint's last entry with
//! its inclusion proof: it dates the checkpoint, so key validity windows apply to proofs as
//! to bundles).

use serde::{Deserialize, Serialize};

use super::hash::Hash;
use super::merkle::{ProofError, verify_consistency, verify_inclusion};
use super::note::{Checkpoint, NoteError, VerifierKey};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
/// Why a proof in JSON does not verify.
pub enum ProofJsonError {
    #[error("field {0} is not a base64 SHA-256 value")]
    /// A hash field (named) that is not base64 of 32 bytes.
    BadHash(&'static str),
    #[error("proof[{0}] is not a base64 SHA-256 value")]
    /// A proof hash (its index) that is not base64 of 32 bytes.
    BadProofHash(usize),
    #[error("no root: give a root or a checkpoint")]
    /// Neither a root nor a checkpoint to verify against.
    NoRoot,
    #[error("checkpoint")]
    /// The checkpoint does not verify with the key.
    Checkpoint(#[from] NoteError),
    #[error("checkpoint is for size {checkpoint}, proof for {proof}")]
    /// The checkpoint is for another tree size than the proof.
    SizeMismatch {
        /// The checkpoint's size.
        checkpoint: u64,
        /// The proof's size.
        proof: u64,
    },
    #[error("proof")]
    /// The proof does not verify.
    Proof(#[from] ProofError),
    #[error("newestEntry: {0}")]
    /// The newest entry does not check out (what is wrong).
    NewestEntry(&'static str),
}

/// The last entry of a proof's tree (seq `size − 1`): its hashed header (base64) and the
/// inclusion proof of that leaf. Once the checkpoint is verified, it proves the `tx_time`
/// of the newest entry the checkpoint covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewestEntry {
    /// The entry's encoded header, base64.
    pub header: String,
    /// Its inclusion proof in the tree, base64 hashes.
    pub proof: Vec<String>,
}

impl NewestEntry {
    /// The newest entry's `tx_time`, after checking that the header is partition `p`'s entry
    /// `size − 1` and that its leaf is in the tree of `size` with `root`.
    pub fn tx_time(
        &self,
        p: &super::PartitionId,
        size: u64,
        root: &Hash,
    ) -> Result<u64, ProofJsonError> {
        use base64::Engine as _;
        let bad = ProofJsonError::NewestEntry;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.header)
            .map_err(|_| bad("header is not base64"))?;
        let header =
            super::Header::decode(&bytes).map_err(|_| bad("header does not decode strictly"))?;
        if &header.partition != p {
            return Err(bad("header belongs to another partition"));
        }
        if size == 0 || header.seq != size - 1 {
            return Err(bad("header is not the tree's last entry"));
        }
        let proof: Vec<Hash> = self
            .proof
            .iter()
            .map(|h| Hash::from_base64(h).ok_or(bad("proof holds a hash that is not base64")))
            .collect::<Result<_, _>>()?;
        let leaf = super::hash::leaf_hash(&bytes);
        verify_inclusion(header.seq, size, &leaf, &proof, root)?;
        Ok(header.tx_time)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
/// An inclusion proof in the JSON of the API and the transparency-dev test vectors.
pub struct InclusionProofJson {
    #[serde(rename = "leafIdx")]
    /// The leaf (entry seq).
    pub leaf_idx: u64,
    #[serde(rename = "treeSize")]
    /// The tree size the proof is for.
    pub tree_size: u64,
    #[serde(rename = "leafHash")]
    /// The leaf hash, base64.
    pub leaf_hash: String,
    /// The audit path, base64 hashes (absent: empty).
    pub proof: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The root to verify against, base64 (or the checkpoint's).
    pub root: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The signed checkpoint at `tree_size`.
    pub checkpoint: Option<String>,
    /// The checkpoint's last entry, which dates it (kukaku only).
    #[serde(
        default,
        rename = "newestEntry",
        skip_serializing_if = "Option::is_none"
    )]
    pub newest_entry: Option<NewestEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// A test vector's description.
    pub desc: Option<String>,
    #[serde(default, rename = "wantErr", skip_serializing_if = "Option::is_none")]
    /// A test vector that must fail.
    pub want_err: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
/// A consistency proof in the JSON of the API and the transparency-dev test vectors.
pub struct ConsistencyProofJson {
    /// The older tree size.
    pub size1: u64,
    /// The newer tree size.
    pub size2: u64,
    /// The proof, base64 hashes (absent: empty).
    pub proof: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The older root, base64.
    pub root1: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The newer root, base64 (or the checkpoint's).
    pub root2: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The signed checkpoint at `size2`.
    pub checkpoint: Option<String>,
    /// The checkpoint's last entry, which dates it (kukaku only).
    #[serde(
        default,
        rename = "newestEntry",
        skip_serializing_if = "Option::is_none"
    )]
    pub newest_entry: Option<NewestEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// A test vector's description.
    pub desc: Option<String>,
    #[serde(default, rename = "wantErr", skip_serializing_if = "Option::is_none")]
    /// A test vector that must fail.
    pub want_err: Option<bool>,
}

fn hash_field(text: &str, field: &'static str) -> Result<Hash, ProofJsonError> {
    Hash::from_base64(text).ok_or(ProofJsonError::BadHash(field))
}

fn proof_hashes(proof: &Option<Vec<String>>) -> Result<Vec<Hash>, ProofJsonError> {
    proof
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, p)| Hash::from_base64(p).ok_or(ProofJsonError::BadProofHash(i)))
        .collect()
}

/// Hashes as the base64 strings a proof's JSON carries.
pub fn encode_hashes(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(Hash::to_base64).collect()
}

/// Root from a checkpoint verified with `key`, checked against the proof's size.
fn checkpoint_root(note: &str, key: &VerifierKey, size: u64) -> Result<Hash, ProofJsonError> {
    let cp = Checkpoint::verify_note(note, key)?;
    if cp.size != size {
        return Err(ProofJsonError::SizeMismatch {
            checkpoint: cp.size,
            proof: size,
        });
    }
    Ok(cp.root)
}

impl InclusionProofJson {
    /// Verifies against the given root (the `root` field if `None`).
    pub fn verify_root(&self, root: Option<&Hash>) -> Result<(), ProofJsonError> {
        let root = match root {
            Some(r) => *r,
            None => hash_field(self.root.as_deref().ok_or(ProofJsonError::NoRoot)?, "root")?,
        };
        let leaf = hash_field(&self.leaf_hash, "leafHash")?;
        let proof = proof_hashes(&self.proof)?;
        verify_inclusion(self.leaf_idx, self.tree_size, &leaf, &proof, &root)?;
        Ok(())
    }

    /// Verifies the embedded checkpoint with `key`, then the proof against its root.
    pub fn verify_with_key(&self, key: &VerifierKey) -> Result<(), ProofJsonError> {
        let note = self.checkpoint.as_deref().ok_or(ProofJsonError::NoRoot)?;
        let root = checkpoint_root(note, key, self.tree_size)?;
        self.verify_root(Some(&root))
    }
}

impl ConsistencyProofJson {
    /// Verifies between two roots (the `root1`/`root2` fields where `None`).
    pub fn verify_roots(
        &self,
        old: Option<&Hash>,
        new: Option<&Hash>,
    ) -> Result<(), ProofJsonError> {
        let old = match old {
            Some(r) => *r,
            None => hash_field(
                self.root1.as_deref().ok_or(ProofJsonError::NoRoot)?,
                "root1",
            )?,
        };
        let new = match new {
            Some(r) => *r,
            None => hash_field(
                self.root2.as_deref().ok_or(ProofJsonError::NoRoot)?,
                "root2",
            )?,
        };
        let proof = proof_hashes(&self.proof)?;
        verify_consistency(self.size1, self.size2, &proof, &old, &new)?;
        Ok(())
    }

    /// Verifies the embedded checkpoint (at `size2`) with `key`, then the proof from `old`.
    pub fn verify_with_key(&self, key: &VerifierKey, old: &Hash) -> Result<(), ProofJsonError> {
        let note = self.checkpoint.as_deref().ok_or(ProofJsonError::NoRoot)?;
        let new = checkpoint_root(note, key, self.size2)?;
        self.verify_roots(Some(old), Some(&new))
    }
}
