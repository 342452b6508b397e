//! SHA-256 hashes of the ledger: leaf, node and chain values (RFC 9162 §2.1.1).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::digest;
use subtle::ConstantTimeEq;

/// Length of every hash in kukaku.
pub const HASH_LEN: usize = 32;

/// A SHA-256 value: a leaf hash, a tree node, a root, a chain value or a commitment.
///
/// Equality is constant-time. `Debug` and `Display` print base64, as the wire formats do.
#[derive(Clone, Copy, Default, Eq)]
pub struct Hash([u8; HASH_LEN]);

impl Hash {
    /// The all-zero value: `prev_chain` of seq 0.
    pub const ZERO: Hash = Hash([0u8; HASH_LEN]);

    pub const fn from_bytes(bytes: [u8; HASH_LEN]) -> Self {
        Hash(bytes)
    }

    /// Takes exactly 32 bytes; any other length is `None`.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; HASH_LEN]>::try_from(bytes).ok().map(Hash)
    }

    pub fn as_bytes(&self) -> &[u8; HASH_LEN] {
        &self.0
    }

    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    /// Strict base64 (standard alphabet, padded) of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Option<Self> {
        let bytes = B64.decode(text).ok()?;
        Self::from_slice(&bytes)
    }

    /// SHA-256 of the concatenation of `parts`.
    pub fn digest(parts: &[&[u8]]) -> Self {
        let mut ctx = digest::Context::new(&digest::SHA256);
        for part in parts {
            ctx.update(part);
        }
        let out = ctx.finish();
        let mut bytes = [0u8; HASH_LEN];
        bytes.copy_from_slice(out.as_ref());
        Hash(bytes)
    }
}

impl PartialEq for Hash {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_base64())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

/// RFC 9162 leaf hash: `SHA-256(0x00 ‖ leaf)`.
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    Hash::digest(&[&[0x00], leaf])
}

/// RFC 9162 interior node: `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Hash::digest(&[&[0x01], &left.0, &right.0])
}

/// Root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Hash::digest(&[])
}

/// Chain step: `chain_n = SHA-256(chain_{n-1} ‖ leaf_n)`, `chain_{-1}` = zeros.
pub fn chain_next(prev: &Hash, leaf: &Hash) -> Hash {
    Hash::digest(&[&prev.0, &leaf.0])
}

/// Salted commitment to a payload: `SHA-256(salt ‖ payload)`.
pub fn commitment(salt: &[u8; 32], payload: &[u8]) -> Hash {
    Hash::digest(&[salt, payload])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(
            empty_root().to_base64(),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    #[test]
    fn base64_rejects_wrong_lengths_and_garbage() {
        assert!(Hash::from_base64("V3JvbmdMZWFm").is_none());
        assert!(Hash::from_base64("").is_none());
        assert!(Hash::from_base64("not base64!").is_none());
        let h = leaf_hash(b"");
        assert_eq!(Hash::from_base64(&h.to_base64()), Some(h));
    }
}
