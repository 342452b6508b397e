//! Data-encryption keys: AES-256-GCM of sealed bodies, AAD = leaf hash (docs/format.md §3).

use std::fmt;

use aes_gcm::aead::{Aead, AeadInPlace, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::{Zeroize, Zeroizing};

use super::{RngError, Secret32, random_nonce};
use crate::ledger::Hash;
use crate::ledger::envelope::{NONCE_LEN, SALT_LEN, TAG_LEN};

/// A DEK with its expanded AES key schedule (zeroized on drop by aes-gcm's `zeroize` feature).
pub struct Dek {
    cipher: Aes256Gcm,
}

impl fmt::Debug for Dek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Dek(<redacted>)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    #[error(transparent)]
    Rng(#[from] RngError),
    #[error("encryption failed")]
    Encrypt,
}

/// Opaque on purpose: a wrong key, a moved ciphertext and a flipped bit look the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sealed body does not decrypt (wrong key, altered bytes, or moved to another entry)")]
pub struct OpenError;

impl Dek {
    pub fn new(key: &Secret32) -> Self {
        Dek {
            cipher: Aes256Gcm::new(key.expose().into()),
        }
    }

    /// Encrypts `salt ‖ payload` under a fresh random nonce, bound to `leaf`, and appends
    /// `nonce ‖ ciphertext ‖ tag` to `out` (the envelope's body, docs/format.md §3), in place:
    /// no second buffer holds the plaintext. On failure `out` is as it was.
    pub fn seal_into(
        &self,
        leaf: &Hash,
        salt: &[u8; SALT_LEN],
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), SealError> {
        let nonce = random_nonce::<NONCE_LEN>()?;
        let start = out.len();
        out.reserve(NONCE_LEN + SALT_LEN + payload.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(salt);
        out.extend_from_slice(payload);
        let body = out.get_mut(start + NONCE_LEN..).unwrap_or_default();
        match self.cipher.encrypt_in_place_detached(
            Nonce::from_slice(&nonce),
            leaf.as_bytes(),
            body,
        ) {
            Ok(tag) => {
                out.extend_from_slice(&tag);
                Ok(())
            }
            Err(_) => {
                out.get_mut(start..).unwrap_or_default().zeroize();
                out.truncate(start);
                Err(SealError::Encrypt)
            }
        }
    }

    /// Decrypts to `salt ‖ payload`.
    pub fn open(
        &self,
        leaf: &Hash,
        nonce: &[u8; NONCE_LEN],
        ciphertext_and_tag: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext_and_tag,
                    aad: leaf.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| OpenError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ciphertext_is_bound_to_its_leaf_and_key() {
        let dek = Dek::new(&Secret32::generate().unwrap());
        let leaf = Hash::from_bytes([1; 32]);
        let mut body = b"before".to_vec();
        dek.seal_into(&leaf, &[2; 32], b"payload", &mut body)
            .unwrap();
        assert_eq!(body.len(), 6 + NONCE_LEN + 32 + 7 + TAG_LEN);
        assert_eq!(&body[..6], b"before");
        let (nonce, ct) = body[6..].split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().unwrap();
        let ct = ct.to_vec();
        let plain = dek.open(&leaf, &nonce, &ct).unwrap();
        assert_eq!(&plain[32..], b"payload");
        assert_eq!(
            dek.open(&Hash::from_bytes([9; 32]), &nonce, &ct),
            Err(OpenError)
        );
        let other = Dek::new(&Secret32::generate().unwrap());
        assert_eq!(other.open(&leaf, &nonce, &ct), Err(OpenError));
        let mut flipped = ct.clone();
        flipped[0] ^= 1;
        assert_eq!(dek.open(&leaf, &nonce, &flipped), Err(OpenError));
        assert_eq!(format!("{dek:?}"), "Dek(<redacted>)");
    }
}
