//! Streaming verification of one partition's log: order, chain, tree and checkpoints, in
//! constant memory. Used by `kukaku verify`, the audit bundle reader and the auditor tool.

use std::fmt;

use super::envelope::{EnvelopeError, EnvelopeRef};
use super::hash::{Hash, chain_next};
use super::header::{Header, Kind, PartitionId};
use super::merkle::{CompactRange, Node};
use super::note::{Checkpoint, NoteError, VerifierKey};

/// Which check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Step {
    #[error("envelope does not decode")]
    /// The envelope does not decode.
    Decode(#[source] EnvelopeError),
    #[error("entry belongs to partition {0}")]
    /// The entry names another partition (the one named).
    Partition(String),
    #[error("expected seq {want}, found {got}")]
    /// An entry out of sequence.
    Sequence {
        /// The seq expected.
        want: u64,
        /// The seq found.
        got: u64,
    },
    #[error("prev_chain does not match the chain value of the previous entry")]
    /// The entry's `prev_chain` is not the chain value before it.
    Chain,
    #[error("tx_time goes backwards")]
    /// `tx_time` goes backwards.
    TxTime,
    #[error("stored tree node at level {level} does not match the entries")]
    /// A stored tree node is not the one the entries give.
    TreeNode {
        /// The node's level.
        level: u8,
    },
    #[error("checkpoint")]
    /// A checkpoint's signature or body does not verify.
    Checkpoint(#[source] NoteError),
    #[error("checkpoint at size {size} does not match the root recomputed from the entries")]
    /// A checkpoint's root is not the one the entries give.
    CheckpointRoot {
        /// The checkpoint's size.
        size: u64,
    },
    #[error("checkpoint for size {checkpoint} but the log has {log} entries there")]
    /// A checkpoint for a size the log is not at where it stands.
    CheckpointSize {
        /// The checkpoint's size.
        checkpoint: u64,
        /// The log's size there.
        log: u64,
    },
    #[error("stored state says size {stored}, the log has {log} entries")]
    /// The stored head names another size than the log has.
    StateSize {
        /// The size the head names.
        stored: u64,
        /// The entries found.
        log: u64,
    },
    #[error("stored chain head or tree edge does not match the entries")]
    /// The stored chain head or tree edge is not the one the entries give.
    StateMismatch,
    #[error("sealed body does not decrypt or does not match its commitment")]
    /// A sealed body does not decrypt or does not match its commitment (with keys only).
    Body,
    #[error("consistency proof from size {from}: {error}")]
    /// A consistency record does not prove the start.
    Consistency {
        /// The older size it proves from.
        from: u64,
        /// Why the proof fails.
        error: super::merkle::ProofError,
    },
    #[error("{0}")]
    /// Anything else, as text (a storage error met while verifying).
    Other(String),
}

/// A verification failure, naming partition, seq and step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    /// The partition verified.
    pub partition: String,
    /// The entry (or tree size, for checkpoint and state steps) where the check failed.
    pub seq: u64,
    /// The check that failed.
    pub step: Step,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "partition {} seq {}: {}",
            self.partition, self.seq, self.step
        )
    }
}

/// The failed step's own cause (an envelope or note that does not decode), for
/// [`crate::error::report`]; the step itself is part of the message.
impl std::error::Error for VerifyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.step)
    }
}

/// Consumes a partition's envelopes in order from seq 0 and checks every rule that needs no key.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    partition: PartitionId,
    chain: Hash,
    range: CompactRange,
    last_tx: u64,
}

impl ChainVerifier {
    /// A verifier for `partition` from genesis.
    pub fn new(partition: PartitionId) -> Self {
        ChainVerifier {
            partition,
            chain: Hash::ZERO,
            range: CompactRange::new(),
            last_tx: 0,
        }
    }

    /// Continues a log at `range.size()` from a trusted tree edge and chain value there (an
    /// audit bundle from a checkpoint instead of genesis). `tx_time` order is checked from the
    /// first entry pushed.
    pub fn resume(partition: PartitionId, range: CompactRange, chain: Hash) -> Self {
        ChainVerifier {
            partition,
            chain,
            range,
            last_tx: 0,
        }
    }

    /// The partition verified.
    pub fn partition(&self) -> &PartitionId {
        &self.partition
    }

    /// Entries verified so far (the tree size).
    pub fn size(&self) -> u64 {
        self.range.size()
    }

    /// The chain value after the last entry.
    pub fn chain_head(&self) -> Hash {
        self.chain
    }

    /// The tree root after the last entry.
    pub fn root(&self) -> Hash {
        self.range.root()
    }

    /// The compact range of the tree so far.
    pub fn range(&self) -> &CompactRange {
        &self.range
    }

    /// `tx_time` (Unix ms) of the last entry pushed; 0 before any.
    pub fn last_tx(&self) -> u64 {
        self.last_tx
    }

    fn fail(&self, seq: u64, step: Step) -> VerifyError {
        VerifyError {
            partition: self.partition.to_string(),
            seq,
            step,
        }
    }

    /// Checks the next envelope; returns it (parsed in place) and the tree nodes it completed.
    pub fn push<'b>(
        &mut self,
        bytes: &'b [u8],
    ) -> Result<(EnvelopeRef<'b>, Vec<Node>), VerifyError> {
        let seq = self.size();
        let env = EnvelopeRef::decode(bytes).map_err(|e| self.fail(seq, Step::Decode(e)))?;
        let nodes = self.push_decoded(&env.header, env.leaf_hash())?;
        Ok((env, nodes))
    }

    /// The order, chain and tree checks of [`ChainVerifier::push`] for an envelope that was
    /// already decoded strictly (`EnvelopeRef::decode`) and leaf-hashed, e.g. by another
    /// thread. `leaf` must be the leaf hash of `header`'s encoding.
    pub fn push_decoded(&mut self, h: &Header, leaf: Hash) -> Result<Vec<Node>, VerifyError> {
        let seq = self.size();
        if h.partition != self.partition {
            return Err(self.fail(seq, Step::Partition(h.partition.to_string())));
        }
        if h.seq != seq {
            return Err(self.fail(
                seq,
                Step::Sequence {
                    want: seq,
                    got: h.seq,
                },
            ));
        }
        if h.prev_chain != self.chain {
            return Err(self.fail(seq, Step::Chain));
        }
        if h.tx_time < self.last_tx {
            return Err(self.fail(seq, Step::TxTime));
        }
        if seq == 0 && h.kind != Kind::GENESIS {
            return Err(self.fail(seq, Step::Other("seq 0 is not a genesis entry".into())));
        }
        let nodes = self
            .range
            .append(leaf)
            .map_err(|e| self.fail(seq, Step::Other(crate::error::report(&e))))?;
        self.chain = chain_next(&self.chain, &leaf);
        self.last_tx = h.tx_time;
        Ok(nodes)
    }

    /// The failure of a decode step at the current position (for callers that decode
    /// elsewhere).
    pub fn decode_failure(&self, e: EnvelopeError) -> VerifyError {
        self.fail(self.size(), Step::Decode(e))
    }

    /// Checks a signed checkpoint for the current size: signature, origin and root.
    pub fn check_checkpoint(
        &self,
        note: &str,
        key: &VerifierKey,
    ) -> Result<Checkpoint, VerifyError> {
        let size = self.size();
        let cp =
            Checkpoint::verify_note(note, key).map_err(|e| self.fail(size, Step::Checkpoint(e)))?;
        if cp.size != size {
            return Err(self.fail(
                size,
                Step::CheckpointSize {
                    checkpoint: cp.size,
                    log: size,
                },
            ));
        }
        if cp.root != self.root() {
            return Err(self.fail(size, Step::CheckpointRoot { size }));
        }
        Ok(cp)
    }
}
