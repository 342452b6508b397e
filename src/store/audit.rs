//! Verifying a partition whole (chain, tree, checkpoints, optionally bodies) and writing
//! an audit bundle (from genesis, or from a checkpoint with a consistency proof).

use std::io::Write;

use super::Store;
use super::engine::{Dir, Space, View};
use super::read::*;
use super::records::{LOWEST_STORED_LEVEL, checkpoint_key, entry_key, node_key};
use crate::ledger::Seq;
use crate::ledger::bundle::BundleWriter;
use crate::ledger::hash::Hash;
use crate::ledger::header::PartitionId;
use crate::ledger::merkle::{Node, NodeSource, ProofRequestError, consistency_proof, range_root};
use crate::ledger::verify::{ChainVerifier, Step, VerifyError};

impl Store {
    /// Recomputes everything of one partition from storage: order, chain, every stored tree
    /// node, every checkpoint (signature and root), the stored head, and with `with_keys` every
    /// sealed body and commitment. The first failure is returned with partition, seq and step.
    pub fn verify_partition(
        &self,
        p: &PartitionId,
        options: VerifyOptions,
    ) -> Result<VerifyReport, VerifyError> {
        let walk = Walk {
            store: self,
            p,
            space: self.inner.known(p).map_err(|e| other(p, 0, e))?,
            view: self
                .inner
                .engine
                .snapshot()
                .map_err(|e| other(p, 0, e.into()))?,
        };
        let mut checkpoints = Self::checkpoint_sizes_in(&*walk.view, p)
            .map_err(|e| other(p, 0, e))?
            .into_iter()
            .peekable();
        let mut v = ChainVerifier::new(p.clone());
        let (mut checked, mut opened, mut shredded) = (0u64, 0u64, 0u64);
        let entries = walk
            .view
            .scan_prefix(&walk.space, b"E")
            .map_err(|e| other(p, 0, e.into()))?;
        for item in entries {
            let (k, raw) = item.map_err(|e| other(p, v.size(), e.into()))?;
            let seq = v.size();
            if k.as_ref() != entry_key(seq) {
                let got = k.get(1..).map_or(0, |b| b.len() as u64);
                return Err(fail(p, seq, Step::Sequence { want: seq, got }));
            }
            let (env, nodes) = v.push(&raw)?;
            walk.stored_nodes(seq, &nodes)?;
            if options.with_keys && env.key_id != 0 {
                match self.open_envelope(p, seq, &raw) {
                    Ok(_) => opened += 1,
                    Err(ReadError::KeyDestroyed { .. }) => shredded += 1,
                    Err(_) => return Err(fail(p, seq, Step::Body)),
                }
            }
            while let Some(size) = checkpoints.next_if(|s| *s <= v.size()) {
                walk.checkpoint(size, &v)?;
                checked += 1;
            }
        }
        if let Some(size) = checkpoints.next() {
            let log = v.size();
            return Err(fail(
                p,
                log,
                Step::CheckpointSize {
                    checkpoint: size,
                    log,
                },
            ));
        }
        walk.state(&v)?;
        Ok(VerifyReport {
            partition: p.clone(),
            entries: v.size(),
            checkpoints: checked,
            root: v.root(),
            bodies_opened: opened,
            bodies_shredded: shredded,
        })
    }

    /// Writes an audit bundle of the given partitions (all entries, all checkpoints).
    pub fn export_audit<W: Write>(
        &self,
        partitions: &[PartitionId],
        out: W,
        progress: &mut dyn FnMut(u64),
    ) -> Result<W, ReadError> {
        self.export_audit_from(partitions, 0, None, out, progress)
    }

    /// The root of `p` at `size` and the consistency proof from there to `to`, from the
    /// stored subtree hashes (for a bundle's consistency record).
    pub(super) fn consistency_at(
        &self,
        p: &PartitionId,
        size: u64,
        to: u64,
    ) -> Result<(Hash, Vec<Hash>), ReadError> {
        let mut src = DbNodes {
            view: &*self.inner.engine,
            space: self.inner.known(p)?,
        };
        if size == 0 || size >= to {
            return Err(ReadError::BadRequest(format!(
                "--prove-from {size} must lie between 0 and the start {to} (exclusive)"
            )));
        }
        let root = range_root(&mut src, 0, size).map_err(|e| corrupt(p, size, e))?;
        let proof = consistency_proof(&mut src, size, to).map_err(|e| match e {
            ProofRequestError::Source(s) => corrupt(p, to, s),
            other => ReadError::BadRequest(other.to_string()),
        })?;
        Ok((root, proof))
    }

    /// The compact range (tree edge) of `p` at `size`, from the stored subtree hashes.
    pub(super) fn frontier_at(&self, p: &PartitionId, size: u64) -> Result<Vec<Hash>, ReadError> {
        let mut src = DbNodes {
            view: &*self.inner.engine,
            space: self.inner.known(p)?,
        };
        let mut out = Vec::new();
        for level in (0..64u8).rev() {
            if (size >> level) & 1 == 1 {
                // The perfect subtree of 2^level leaves that starts where the higher bits end.
                let index = (size >> level) - 1;
                out.push(src.node(level, index).map_err(|e| corrupt(p, size, e))?);
            }
        }
        Ok(out)
    }

    /// The checkpoint at `size`, in its cosigned form when a witness has cosigned it: the
    /// same note with more signature lines, so verifiers without witness keys read it as
    /// before.
    pub(super) fn best_checkpoint_at(
        &self,
        p: &PartitionId,
        size: u64,
    ) -> Result<String, ReadError> {
        match self.cosigned_checkpoint_at(p, size)? {
            Some(cosigned) => Ok(cosigned),
            None => self.inner.checkpoint_at(p, size),
        }
    }

    /// Writes an audit bundle of the given partitions from tree size `from` (0: genesis;
    /// else a checkpointed size: the section then starts with the tree edge there and that
    /// checkpoint, docs/format.md §10). With `prove_from` (`0 < prove_from < from`) each
    /// section also carries the consistency proof from that size to `from`, so that an
    /// auditor whose state holds `prove_from` can continue here.
    pub fn export_audit_from<W: Write>(
        &self,
        partitions: &[PartitionId],
        from: u64,
        prove_from: Option<u64>,
        out: W,
        progress: &mut dyn FnMut(u64),
    ) -> Result<W, ReadError> {
        if prove_from.is_some() && from == 0 {
            return Err(ReadError::BadRequest(
                "--prove-from needs --from-size: a bundle from genesis proves everything".into(),
            ));
        }
        let mut w = BundleWriter::new(out)?;
        let mut done = 0u64;
        for p in partitions {
            let key = self
                .verifier_key(p)
                .ok_or_else(|| ReadError::UnknownPartition(p.clone()))?;
            w.partition(p, &key)?;
            let sizes = self.checkpoint_sizes(p)?;
            // The bundle ends at the last checkpoint read here: entries a server appends
            // meanwhile (with their later checkpoints) are left to the next export.
            let end = sizes.last().copied().unwrap_or(0);
            let mut checkpoints = sizes.into_iter().peekable();
            if from > 0 {
                let anchor = self.best_checkpoint_at(p, from)?;
                let chain = match self.envelopes(p, Seq(from), Seq(from + 1))?.first() {
                    Some(raw) => {
                        crate::ledger::Envelope::decode(raw)
                            .map_err(|e| corrupt(p, from, e))?
                            .header
                            .prev_chain
                    }
                    None => self
                        .inner
                        .state(p)?
                        .map(|st| Hash::from_bytes(st.chain))
                        .ok_or_else(|| corrupt(p, from, "no partition state"))?,
                };
                w.start(from, &chain, &self.frontier_at(p, from)?)?;
                w.checkpoint(&anchor)?;
                if let Some(m) = prove_from {
                    let (root, proof) = self.consistency_at(p, m, from)?;
                    w.consistency(m, &root, &proof)?;
                }
                while checkpoints.next_if(|s| *s <= from).is_some() {}
            }
            let mut size = from;
            let start = entry_key(from);
            for item in self.inner.engine.scan(&space(p), &start, Dir::Forward)? {
                let (k, raw) = item?;
                if k.first() != Some(&b'E') || size >= end {
                    break;
                }
                w.envelope(&raw)?;
                size += 1;
                done += 1;
                while checkpoints.peek().is_some_and(|s| *s <= size) {
                    let s = checkpoints.next().unwrap_or_default();
                    if s == size {
                        w.checkpoint(&self.best_checkpoint_at(p, s)?)?;
                    }
                }
                if done.is_multiple_of(1024) {
                    progress(done);
                }
            }
        }
        progress(done);
        Ok(w.finish()?)
    }
}

fn fail(p: &PartitionId, seq: u64, step: Step) -> VerifyError {
    VerifyError {
        partition: p.to_string(),
        seq,
        step,
    }
}

fn other(p: &PartitionId, seq: u64, e: ReadError) -> VerifyError {
    fail(p, seq, Step::Other(crate::error::report(&e)))
}

/// One partition's verification: every read through one snapshot, so a server appending
/// meanwhile does not disturb it.
struct Walk<'a> {
    store: &'a Store,
    p: &'a PartitionId,
    space: Space,
    view: Box<dyn View + 'a>,
}

impl Walk<'_> {
    /// Every stored node (level ≥ 2) the entry at `seq` completed equals the recomputed one.
    fn stored_nodes(&self, seq: u64, nodes: &[Node]) -> Result<(), VerifyError> {
        for n in nodes.iter().filter(|n| n.level >= LOWEST_STORED_LEVEL) {
            let stored = self
                .view
                .get(&self.space, &node_key(n.level, n.index))
                .map_err(|e| other(self.p, seq, e.into()))?;
            if stored.as_deref() != Some(n.hash.as_bytes().as_slice()) {
                return Err(fail(self.p, seq, Step::TreeNode { level: n.level }));
            }
        }
        Ok(())
    }

    /// The checkpoint stored at `size` is signed by the instance key it names and commits to
    /// the root recomputed so far, whose size it must be.
    fn checkpoint(&self, size: u64, v: &ChainVerifier) -> Result<(), VerifyError> {
        let note = self
            .view
            .get(&self.space, &checkpoint_key(size))
            .map_err(|e| other(self.p, size, e.into()))?
            .and_then(|raw| String::from_utf8(raw).ok())
            .ok_or_else(|| fail(self.p, size, Step::Other("checkpoint unreadable".into())))?;
        if size < v.size() {
            let log = v.size();
            return Err(fail(
                self.p,
                size,
                Step::CheckpointSize {
                    checkpoint: size,
                    log,
                },
            ));
        }
        // The instance key the note names (a signing-key rotation may lie between).
        let key = self
            .store
            .inner
            .key_for_note(self.p, &note)
            .ok_or_else(|| fail(self.p, size, Step::Other("no verifier key".into())))?;
        v.check_checkpoint(&note, &key).map(|_| ())
    }

    /// The stored head (size, chain value, tree edge) is the one recomputed from the entries.
    fn state(&self, v: &ChainVerifier) -> Result<(), VerifyError> {
        let log = v.size();
        let state =
            super::Inner::state_in(&*self.view, self.p).map_err(|e| other(self.p, log, e))?;
        let Some(st) = state else {
            return Ok(());
        };
        if st.size != log {
            return Err(fail(
                self.p,
                log,
                Step::StateSize {
                    stored: st.size,
                    log,
                },
            ));
        }
        let frontier: Vec<[u8; 32]> = v.range().hashes().iter().map(|h| *h.as_bytes()).collect();
        if st.chain != *v.chain_head().as_bytes() || st.frontier != frontier {
            return Err(fail(self.p, log, Step::StateMismatch));
        }
        Ok(())
    }
}
