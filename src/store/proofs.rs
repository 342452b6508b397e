//! RFC 9162 inclusion and consistency proofs from the stored nodes, against signed
//! checkpoints.

use super::Store;
use super::read::*;
use crate::ledger::hash::Hash;
use crate::ledger::header::{Header, PartitionId};
use crate::ledger::merkle::{ProofRequestError, consistency_proof, inclusion_proof};
use crate::ledger::note::Checkpoint;
use crate::ledger::proof_json::{
    ConsistencyProofJson, InclusionProofJson, NewestEntry, encode_hashes,
};
use crate::ledger::{Seq, TreeSize};

impl Store {
    pub(super) fn proof_size(
        &self,
        p: &PartitionId,
        size: Option<u64>,
    ) -> Result<(u64, String), ReadError> {
        match size {
            Some(s) => Ok((s, self.inner.checkpoint_at(p, s)?)),
            None => {
                let s = self.inner.size(p)?;
                Ok((s, self.inner.checkpoint_at(p, s)?))
            }
        }
    }

    /// Inclusion proof of `seq` in the checkpointed tree of `size` (latest if `None`).
    pub fn prove_inclusion(
        &self,
        p: &PartitionId,
        Seq(seq): Seq,
        size: Option<TreeSize>,
    ) -> Result<InclusionProofJson, ReadError> {
        let (size, note) = self.proof_size(p, size.map(|s| s.0))?;
        let raw = self.envelope_bytes(p, seq)?;
        let (header, _) = Header::decode_prefix(&raw).map_err(|e| corrupt(p, seq, e))?;
        let proof = self.inclusion_path(p, seq, size)?;
        Ok(InclusionProofJson {
            leaf_idx: seq,
            tree_size: size,
            leaf_hash: header.leaf_hash().to_base64(),
            proof: Some(encode_hashes(&proof)),
            root: None,
            checkpoint: Some(note),
            newest_entry: self.newest_entry(p, size)?,
            desc: None,
            want_err: None,
        })
    }

    /// The RFC 9162 inclusion path of leaf `seq` in the tree of `size`, from stored nodes.
    pub(super) fn inclusion_path(
        &self,
        p: &PartitionId,
        seq: u64,
        size: u64,
    ) -> Result<Vec<Hash>, ReadError> {
        let mut src = DbNodes {
            view: &*self.inner.engine,
            space: self.inner.known(p)?,
        };
        inclusion_proof(&mut src, seq, size).map_err(|e| match e {
            ProofRequestError::Source(s) => corrupt(p, seq, s),
            other => ReadError::BadRequest(other.to_string()),
        })
    }

    /// The hashed header of entry `size − 1` and its inclusion proof in the tree of `size`
    /// (`None` for the empty tree): what dates a proof's checkpoint for key windows.
    pub(super) fn newest_entry(
        &self,
        p: &PartitionId,
        size: u64,
    ) -> Result<Option<NewestEntry>, ReadError> {
        use base64::Engine as _;
        let Some(last) = size.checked_sub(1) else {
            return Ok(None);
        };
        let raw = self.envelope_bytes(p, last)?;
        let (_, len) = Header::decode_prefix(&raw).map_err(|e| corrupt(p, last, e))?;
        let header = raw.get(..len).ok_or_else(|| corrupt(p, last, "header"))?;
        let proof = self.inclusion_path(p, last, size)?;
        Ok(Some(NewestEntry {
            header: base64::engine::general_purpose::STANDARD.encode(header),
            proof: encode_hashes(&proof),
        }))
    }

    /// Consistency proof between two checkpointed sizes (`to` = latest if `None`).
    pub fn prove_consistency(
        &self,
        p: &PartitionId,
        TreeSize(from): TreeSize,
        to: Option<TreeSize>,
    ) -> Result<ConsistencyProofJson, ReadError> {
        let (to, note) = self.proof_size(p, to.map(|s| s.0))?;
        let old = self.inner.checkpoint_at(p, from)?;
        // Each note with the instance key it names: a signing-key rotation may lie between.
        let key_of = |n: &str| {
            self.inner
                .key_for_note(p, n)
                .ok_or_else(|| ReadError::UnknownPartition(p.clone()))
        };
        let old_cp =
            Checkpoint::verify_note(&old, &key_of(&old)?).map_err(|e| corrupt(p, from, e))?;
        let new_cp =
            Checkpoint::verify_note(&note, &key_of(&note)?).map_err(|e| corrupt(p, to, e))?;
        let mut src = DbNodes {
            view: &*self.inner.engine,
            space: self.inner.known(p)?,
        };
        let proof = consistency_proof(&mut src, from, to).map_err(|e| match e {
            ProofRequestError::Source(s) => corrupt(p, to, s),
            other => ReadError::BadRequest(other.to_string()),
        })?;
        Ok(ConsistencyProofJson {
            size1: from,
            size2: to,
            proof: Some(encode_hashes(&proof)),
            root1: Some(old_cp.root.to_base64()),
            root2: Some(new_cp.root.to_base64()),
            checkpoint: Some(note),
            newest_entry: self.newest_entry(p, to)?,
            desc: None,
            want_err: None,
        })
    }
}
