//! A 256-bit secret that zeroizes on drop and never prints.

use std::fmt;

use zeroize::Zeroizing;

use super::{RngError, random};

/// 32 secret bytes: a KEK, a DEK, or an Ed25519 seed.
///
/// `Debug` prints `Secret32(<redacted>)`; there is no `Display`, `Serialize` or `Clone`.
pub struct Secret32(Zeroizing<[u8; 32]>);

impl Secret32 {
    /// Fresh random key material.
    pub fn generate() -> Result<Self, RngError> {
        Ok(Secret32(Zeroizing::new(random::<32>()?)))
    }

    /// Takes ownership of key bytes (the caller's copy should itself be zeroizing).
    pub fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> Self {
        Secret32(bytes)
    }

    /// Copies from a slice of exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let mut out = Zeroizing::new([0u8; 32]);
        if bytes.len() != 32 {
            return None;
        }
        out.copy_from_slice(bytes);
        Some(Secret32(out))
    }

    /// The secret bytes; keep the borrow short.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Wipes the bytes now; `Drop` does the same through `Zeroizing`.
impl zeroize::Zeroize for Secret32 {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Secret32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret32(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = Secret32::from_slice(&[0xAB; 32]).unwrap();
        let d = format!("{s:?} {s:#?}");
        assert!(d.contains("redacted"));
        assert!(!d.to_lowercase().contains("ab"), "{d}");
        assert!(!d.contains("171"));
    }

    #[test]
    fn zeroize_wipes_the_bytes() {
        let mut s = Secret32::from_slice(&[7u8; 32]).unwrap();
        zeroize::Zeroize::zeroize(&mut s);
        assert_eq!(s.expose(), &[0u8; 32]);
        assert!(Secret32::from_slice(&[1; 31]).is_none());
    }
}
