//! Blind-index keys (docs/design.md §7): per partition, HMAC-SHA256 tokens that find an entry by a
//! protected identifier without storing it. A leaked index key reverses every token (there
//! are only ~10^11 個人番号), so it is guarded like a DEK: wrapped by the KEK in the key store,
//! and in memory its keyed HMAC state is zeroized on drop (RustCrypto `hmac`/`sha2` with their
//! `zeroize` features; ring's `hmac::Key` is not wiped). The same type holds the prefecture
//! matching keys and the credential MAC key.

use hmac::{KeyInit as _, Mac as _};
use zeroize::Zeroizing;

use super::Secret32;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// A partition's index key. No `Debug` output of the key, no `Clone`; zeroized on drop.
pub struct IndexKey(HmacSha256);

impl std::fmt::Debug for IndexKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IndexKey(<redacted>)")
    }
}

impl IndexKey {
    pub fn new(secret: &Secret32) -> Self {
        // RFC 2104: a key shorter than the block is padded with zeros to the block size, so
        // the 32-byte secret as a zero-padded 64-byte block is the same HMAC key.
        let mut block = Zeroizing::new([0u8; 64]);
        for (b, s) in block.iter_mut().zip(secret.expose()) {
            *b = *s;
        }
        IndexKey(HmacSha256::new(&(*block).into()))
    }

    /// `HMAC(k, domain ‖ ":" ‖ value)`, e.g. domain `kojin` for a 個人番号's digits.
    pub fn token(&self, domain: &str, value: &[u8]) -> [u8; 32] {
        self.token_parts(domain, &[value])
    }

    /// `HMAC(k, domain ‖ ":" ‖ part₁ ‖ part₂ ‖ …)`; the caller makes the parts unambiguous
    /// (fixed widths or length prefixes).
    pub fn token_parts(&self, domain: &str, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(domain.as_bytes());
        mac.update(b":");
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    /// Where a prefecture matching token (`matching`, the continuity job's HMAC of a
    /// 個人番号 under the prefecture's matching key) is filed in this partition's index:
    /// `HMAC(k, "match:" ‖ matching)` under this partition's own index key. The job, which
    /// holds both keys, finds a person in partition A by computing A's slot; destroying A's
    /// index key (crypto-shredding) makes every slot of A unrecomputable, so an old copy of
    /// `data/` no longer links A's entries to 個人番号 (issue 26).
    pub fn matching_slot(&self, matching: &[u8; 32]) -> [u8; 32] {
        self.token_parts("match", &[matching])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answer: HMAC-SHA256(key = 32 × 0x01, "kojin:123456789018"), from Python's hmac.
    #[test]
    fn token_known_answer() {
        let k = IndexKey::new(&Secret32::from_slice(&[1; 32]).unwrap());
        let t = k.token("kojin", b"123456789018");
        let hex: String = t.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "bb7bcaf9ef3683ae67108c8627a86f104c19004d54b8fc0dbb5b39cd0e876781"
        );
    }

    /// The keyed HMAC state is wiped when an `IndexKey` is dropped (issue 26: ring's key
    /// object was not). `Hmac<Sha256>` holds the key only as two SHA-256 cores (after the
    /// ipad and opad blocks); the core type says at compile time that it zeroizes on drop.
    #[test]
    fn the_keyed_state_is_zeroized_on_drop() {
        fn wiped<T: zeroize::ZeroizeOnDrop>() {}
        wiped::<<sha2::Sha256 as hmac::digest::block_api::CoreProxy>::Core>();
    }

    /// Known answer: HMAC-SHA256(key = 32 × 0x01, "match:" ‖ 32 × 0x02), from Python's hmac;
    /// another partition's key files the same token elsewhere.
    #[test]
    fn matching_slot_known_answer() {
        let k = IndexKey::new(&Secret32::from_slice(&[1; 32]).unwrap());
        let hex: String = k
            .matching_slot(&[2; 32])
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "9f944c551cfd5bd47424dd108df5347322cdacbcdc48fa9a90e760d4ffd2b54c"
        );
        let other = IndexKey::new(&Secret32::from_slice(&[3; 32]).unwrap());
        assert_ne!(other.matching_slot(&[2; 32]), k.matching_slot(&[2; 32]));
    }
}
