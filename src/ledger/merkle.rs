//! RFC 9162 Merkle tree: compact ranges for appending, proof generation from stored subtree
//! hashes, and proof verification that checks every step (§2.1.3.2, §2.1.4.2).

use super::hash::{Hash, empty_root, node_hash};

/// Most subtree roots a compact range of a `u64`-sized tree can hold.
pub const MAX_FRONTIER: usize = 64;

/// The right edge of a tree: the roots of its perfect subtrees, largest first.
///
/// Appending a leaf yields the subtree hashes that became complete, so a store can persist
/// every complete subtree `(level, index)` and later answer proofs with O(log n) reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CompactRange {
    size: u64,
    hashes: Vec<Hash>,
}

/// A subtree hash that became complete: covers leaves `[index·2^level, (index+1)·2^level)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    /// Height of the subtree (0: a leaf).
    pub level: u8,
    /// Its position among the subtrees of that height.
    pub index: u64,
    /// Its hash.
    pub hash: Hash,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
/// Why a compact range cannot be rebuilt or grown.
pub enum CompactRangeError {
    #[error("a tree of size {size} has {want} subtree roots, got {got}")]
    /// The stored roots do not fit the size.
    WrongCount {
        /// The tree size.
        size: u64,
        /// Roots a tree of that size has.
        want: usize,
        /// Roots given.
        got: usize,
    },
    #[error("tree is full")]
    /// The tree holds 2^64 − 1 leaves.
    Full,
}

impl CompactRange {
    /// The range of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a range from its stored parts; the count must match `size.count_ones()`.
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Result<Self, CompactRangeError> {
        let want = size.count_ones() as usize;
        if hashes.len() != want {
            return Err(CompactRangeError::WrongCount {
                size,
                want,
                got: hashes.len(),
            });
        }
        Ok(CompactRange { size, hashes })
    }

    /// The tree size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The roots of the complete subtrees, largest first.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// Appends a leaf hash; returns the leaf node and every parent it completed.
    pub fn append(&mut self, leaf: Hash) -> Result<Vec<Node>, CompactRangeError> {
        let index = self.size;
        let next = index.checked_add(1).ok_or(CompactRangeError::Full)?;
        let mut nodes = vec![Node {
            level: 0,
            index,
            hash: leaf,
        }];
        let mut hash = leaf;
        let mut level: u8 = 0;
        while (index >> level) & 1 == 1 {
            // The bit is set, so a left sibling is on the frontier.
            let Some(left) = self.hashes.pop() else {
                break;
            };
            hash = node_hash(&left, &hash);
            level += 1;
            nodes.push(Node {
                level,
                index: index >> level,
                hash,
            });
        }
        self.hashes.push(hash);
        self.size = next;
        Ok(nodes)
    }

    /// The RFC 9162 root of the tree this range is the edge of.
    pub fn root(&self) -> Hash {
        let mut iter = self.hashes.iter().rev();
        let Some(last) = iter.next() else {
            return empty_root();
        };
        iter.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

/// Reference `MTH(D[n])` over leaf hashes (RFC 9162 §2.1.1), for tests and small trees.
pub fn root_of(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [one] => *one,
        _ => {
            let k = split_point(leaves.len() as u64) as usize;
            let (l, r) = leaves.split_at(k);
            node_hash(&root_of(l), &root_of(r))
        }
    }
}

/// Largest power of two strictly below `n` (n ≥ 2).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Where proof generation reads complete subtree hashes from.
pub trait NodeSource {
    /// Why a node could not be read.
    type Error;
    /// Hash of the complete subtree at `level` covering leaves from `index << level`.
    fn node(&mut self, level: u8, index: u64) -> Result<Hash, Self::Error>;
}

/// Errors of proof generation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofRequestError<E> {
    #[error("leaf {index} is outside a tree of size {size}")]
    /// An inclusion proof for a leaf the tree does not have.
    LeafOutOfRange {
        /// The leaf asked for.
        index: u64,
        /// The tree size.
        size: u64,
    },
    #[error("consistency needs 0 < from ≤ to, got {from} → {to}")]
    /// A consistency proof between sizes out of order or from 0.
    BadRange {
        /// The older size.
        from: u64,
        /// The newer size.
        to: u64,
    },
    #[error("reading a tree node: {0}")]
    /// The node source failed.
    Source(E),
}

/// `MTH(D[start:end])` from stored complete subtrees.
pub fn range_root<S: NodeSource>(src: &mut S, start: u64, end: u64) -> Result<Hash, S::Error> {
    let n = end - start;
    if n.is_power_of_two() && start.is_multiple_of(n) {
        return src.node(n.trailing_zeros() as u8, start / n);
    }
    let k = split_point(n);
    let left = range_root(src, start, start + k)?;
    let right = range_root(src, start + k, end)?;
    Ok(node_hash(&left, &right))
}

/// RFC 9162 §2.1.3.1 inclusion proof of leaf `index` in the tree of `size`.
pub fn inclusion_proof<S: NodeSource>(
    src: &mut S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofRequestError<S::Error>> {
    if index >= size {
        return Err(ProofRequestError::LeafOutOfRange { index, size });
    }
    let mut proof = Vec::new();
    path(src, index, 0, size, &mut proof).map_err(ProofRequestError::Source)?;
    Ok(proof)
}

fn path<S: NodeSource>(
    src: &mut S,
    m: u64,
    start: u64,
    end: u64,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    let n = end - start;
    if n <= 1 {
        return Ok(());
    }
    let k = split_point(n);
    if m < k {
        path(src, m, start, start + k, out)?;
        out.push(range_root(src, start + k, end)?);
    } else {
        path(src, m - k, start + k, end, out)?;
        out.push(range_root(src, start, start + k)?);
    }
    Ok(())
}

/// RFC 9162 §2.1.4.1 consistency proof from `from` to `to` (0 < from ≤ to).
pub fn consistency_proof<S: NodeSource>(
    src: &mut S,
    from: u64,
    to: u64,
) -> Result<Vec<Hash>, ProofRequestError<S::Error>> {
    if from == 0 || from > to {
        return Err(ProofRequestError::BadRange { from, to });
    }
    let mut proof = Vec::new();
    if from < to {
        subproof(src, from, 0, to, true, &mut proof).map_err(ProofRequestError::Source)?;
    }
    Ok(proof)
}

fn subproof<S: NodeSource>(
    src: &mut S,
    m: u64,
    start: u64,
    end: u64,
    whole: bool,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    let n = end - start;
    if m == n {
        if !whole {
            out.push(range_root(src, start, end)?);
        }
        return Ok(());
    }
    let k = split_point(n);
    if m <= k {
        subproof(src, m, start, start + k, whole, out)?;
        out.push(range_root(src, start + k, end)?);
    } else {
        subproof(src, m - k, start + k, end, false, out)?;
        out.push(range_root(src, start, start + k)?);
    }
    Ok(())
}

/// Why a proof did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    #[error("leaf index {index} is not below tree size {size}")]
    /// The leaf index is not below the tree size.
    IndexOutOfRange {
        /// The leaf index.
        index: u64,
        /// The tree size.
        size: u64,
    },
    #[error("proof has {got} hashes, a proof for these sizes has {want}")]
    /// The proof has the wrong number of hashes for its sizes.
    WrongLength {
        /// Hashes a proof for these sizes has.
        want: usize,
        /// Hashes given.
        got: usize,
    },
    #[error("consistency from size 0 is not defined")]
    /// A consistency proof from size 0.
    FromZero,
    #[error("consistency needs from ≤ to, got {from} → {to}")]
    /// A consistency proof to a smaller tree.
    Backwards {
        /// The older size.
        from: u64,
        /// The newer size.
        to: u64,
    },
    #[error("computed root does not match the expected root")]
    /// The computed root is not the expected one.
    RootMismatch,
    #[error("computed old root does not match the expected old root")]
    /// The computed old root is not the expected one.
    OldRootMismatch,
}

/// Number of hashes in an inclusion proof for `index` in `size` (index < size).
fn inclusion_len(index: u64, size: u64) -> usize {
    let inner = 64 - (index ^ (size - 1)).leading_zeros();
    // `inner` is 64 when the sizes reach 2^63: nothing is left above it.
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner + border) as usize
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2), rejecting extra or missing hashes.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let want = inclusion_len(index, size);
    if proof.len() != want {
        return Err(ProofError::WrongLength {
            want,
            got: proof.len(),
        });
    }
    let mut fnode = index;
    let mut snode = size - 1;
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(ProofError::WrongLength {
                want,
                got: proof.len(),
            });
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength {
            want,
            got: proof.len(),
        });
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The length of a consistency proof from `from` to `to` (0 < `from` < `to`): the
/// inclusion-style path of leaf `from`-1 in `to`, minus the levels shared by the old tree's
/// largest right subtree, plus the seed hash when `from` is not a power of two.
fn consistency_proof_len(from: u64, to: u64) -> usize {
    let shift = from.trailing_zeros();
    let inner = 64 - ((from - 1) ^ (to - 1)).leading_zeros();
    let inner = inner.saturating_sub(shift);
    let border = (from - 1)
        .checked_shr(inner + shift)
        .unwrap_or(0)
        .count_ones();
    let seed = u32::from(!from.is_power_of_two());
    (seed + inner + border) as usize
}

/// The old and new roots a consistency `path` (the seed, then the proof) recomputes (RFC 9162
/// §2.1.4.2, steps 4–6); `None` when the path does not fit the two sizes.
fn consistency_roots(from: u64, to: u64, path: &[Hash]) -> Option<(Hash, Hash)> {
    let mut fnode = from - 1;
    let mut snode = to - 1;
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (first, rest) = path.split_first()?;
    let mut fr = *first;
    let mut sr = *first;
    for c in rest {
        if snode == 0 {
            return None;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    (snode == 0).then_some((fr, sr))
}

/// Verifies a consistency proof (RFC 9162 §2.1.4.2). Equal sizes need an empty proof and equal
/// roots; size 0 and shrinking trees are rejected.
pub fn verify_consistency(
    from: u64,
    to: u64,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> Result<(), ProofError> {
    if from == 0 {
        return Err(ProofError::FromZero);
    }
    if from > to {
        return Err(ProofError::Backwards { from, to });
    }
    if from == to {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength {
                want: 0,
                got: proof.len(),
            });
        }
        if old_root != new_root {
            return Err(ProofError::RootMismatch);
        }
        return Ok(());
    }
    let want = consistency_proof_len(from, to);
    if proof.len() != want {
        return Err(ProofError::WrongLength {
            want,
            got: proof.len(),
        });
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if from.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let wrong_length = ProofError::WrongLength {
        want,
        got: proof.len(),
    };
    let (fr, sr) = consistency_roots(from, to, &path).ok_or(wrong_length)?;
    if fr != *old_root {
        return Err(ProofError::OldRootMismatch);
    }
    if sr != *new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// In-memory node source over all leaf hashes; used by tests and small tools.
pub struct MemoryTree<'a>(pub &'a [Hash]);

impl NodeSource for MemoryTree<'_> {
    type Error = std::convert::Infallible;
    fn node(&mut self, level: u8, index: u64) -> Result<Hash, Self::Error> {
        let width = 1usize << level;
        let start = index as usize * width;
        let leaves = self.0.get(start..start + width).unwrap_or_default();
        Ok(root_of(leaves))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::hash::leaf_hash;
    use proptest::prelude::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
            .collect()
    }

    /// Found by fuzzing: at sizes of 2^63 and more the expected-length arithmetic shifted a
    /// u64 by 64 (a panic in debug builds). Such proofs are now refused by length.
    #[test]
    fn proofs_for_sizes_above_2_pow_63_are_refused_without_panicking() {
        let h = Hash::ZERO;
        let big = 1u64 << 63;
        for (index, size) in [
            (big, u64::MAX),
            (big - 1, u64::MAX),
            (0, u64::MAX),
            (big, big + 1),
        ] {
            let want = inclusion_len(index, size);
            assert!(want <= 64, "{index} in {size}: {want}");
            assert!(verify_inclusion(index, size, &h, &[h; 3], &h).is_err());
        }
        for (from, to) in [
            (big, u64::MAX),
            (big + 1, u64::MAX),
            (1, u64::MAX),
            (3, big + 5),
        ] {
            assert!(matches!(
                verify_consistency(from, to, &[h; 2], &h, &h),
                Err(ProofError::WrongLength { .. })
            ));
        }
    }

    #[test]
    fn compact_range_matches_reference_root_and_emits_complete_nodes() {
        let all = leaves(70);
        let mut cr = CompactRange::new();
        for (i, leaf) in all.iter().enumerate() {
            let nodes = cr.append(*leaf).unwrap();
            for n in nodes {
                let w = 1usize << n.level;
                let s = n.index as usize * w;
                assert_eq!(n.hash, root_of(&all[s..s + w]));
            }
            assert_eq!(cr.root(), root_of(&all[..=i]));
            assert_eq!(cr.hashes().len(), ((i + 1) as u64).count_ones() as usize);
        }
    }

    proptest! {
        #[test]
        fn proofs_verify_and_lengths_are_exact(size in 1u64..300, a in any::<u64>(), b in any::<u64>()) {
            let all = leaves(size as usize);
            let index = a % size;
            let mut src = MemoryTree(&all);
            let root = root_of(&all);
            let proof = inclusion_proof(&mut src, index, size).unwrap();
            prop_assert_eq!(proof.len(), inclusion_len(index, size));
            prop_assert!(verify_inclusion(index, size, &all[index as usize], &proof, &root).is_ok());
            let from = b % size + 1;
            let old = root_of(&all[..from as usize]);
            let cproof = consistency_proof(&mut src, from, size).unwrap();
            prop_assert!(verify_consistency(from, size, &cproof, &old, &root).is_ok());
            // Truncated and extended proofs fail.
            if !cproof.is_empty() {
                prop_assert!(verify_consistency(from, size, &cproof[1..], &old, &root).is_err());
            }
            let mut longer = cproof.clone();
            longer.push(root);
            prop_assert!(verify_consistency(from, size, &longer, &old, &root).is_err());
        }

        /// Every single-bit change of any proof hash, the leaf or a root, and a change of the
        /// leaf index, is rejected.
        #[test]
        fn every_single_mutation_is_rejected(
            size in 2u64..200,
            a in any::<u64>(),
            b in any::<u64>(),
            bit in 0usize..256,
        ) {
            let all = leaves(size as usize);
            let index = a % size;
            let from = b % (size - 1) + 1;
            let root = root_of(&all);
            let old = root_of(&all[..from as usize]);
            let leaf = all[index as usize];
            let mut src = MemoryTree(&all);
            let proof = inclusion_proof(&mut src, index, size).unwrap();
            let cproof = consistency_proof(&mut src, from, size).unwrap();
            let flip = |h: &Hash| {
                let mut x = *h.as_bytes();
                x[bit / 8] ^= 1 << (bit % 8);
                Hash::from_bytes(x)
            };
            for i in 0..proof.len() {
                let mut p = proof.clone();
                p[i] = flip(&p[i]);
                prop_assert!(verify_inclusion(index, size, &leaf, &p, &root).is_err());
            }
            prop_assert!(verify_inclusion(index, size, &flip(&leaf), &proof, &root).is_err());
            prop_assert!(verify_inclusion(index, size, &leaf, &proof, &flip(&root)).is_err());
            prop_assert!(verify_inclusion(index ^ 1, size, &leaf, &proof, &root).is_err());
            // The tree size is not a mutation target here: a proof for (i, n) can also fit
            // (i, n') whose path has the same shape. The size is bound to the root by the
            // signed checkpoint, which is why proofs travel with their checkpoint.
            for i in 0..cproof.len() {
                let mut p = cproof.clone();
                p[i] = flip(&p[i]);
                prop_assert!(verify_consistency(from, size, &p, &old, &root).is_err());
            }
            prop_assert!(verify_consistency(from, size, &cproof, &flip(&old), &root).is_err());
            prop_assert!(verify_consistency(from, size, &cproof, &old, &flip(&root)).is_err());
        }
    }
}
