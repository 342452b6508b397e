//! Blind-index keys (DESIGN.md §7): per partition, HMAC-SHA256 tokens that find an entry by a
//! protected identifier without storing it. A leaked index key reverses every token (there
//! are only ~10^11 個人番号), so it is guarded like a DEK: wrapped by the KEK in the key store.

use ring::hmac;

use super::Secret32;

/// A partition's index key. No `Debug` output of the key, no `Clone`.
pub struct IndexKey(hmac::Key);

impl std::fmt::Debug for IndexKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IndexKey(<redacted>)")
    }
}

impl IndexKey {
    pub fn new(secret: &Secret32) -> Self {
        IndexKey(hmac::Key::new(hmac::HMAC_SHA256, secret.expose()))
    }

    /// `HMAC(k, domain ‖ ":" ‖ value)`, e.g. domain `kojin` for a 個人番号's digits.
    pub fn token(&self, domain: &str, value: &[u8]) -> [u8; 32] {
        self.token_parts(domain, &[value])
    }

    /// `HMAC(k, domain ‖ ":" ‖ part₁ ‖ part₂ ‖ …)`; the caller makes the parts unambiguous
    /// (fixed widths or length prefixes).
    pub fn token_parts(&self, domain: &str, parts: &[&[u8]]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(domain.as_bytes());
        ctx.update(b":");
        for p in parts {
            ctx.update(p);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
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
}
