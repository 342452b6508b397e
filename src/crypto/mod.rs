//! Keys and encryption: the only place keys and plaintext meet.
//!
//! Secret bytes live in [`Secret32`] (zeroized on drop, redacted `Debug`, no `Display` or
//! `Serialize`). AES-256-GCM comes from `aes-gcm` with its `zeroize` feature; SHA-256, Ed25519
//! and randomness from `ring`. ring does not wipe its Ed25519 key objects: the signer is
//! long-lived, one per instance (residual risk noted in docs/ARCHITECTURE.md).
//!
//! No secret type has `Display` (these do not compile):
//!
//! ```compile_fail
//! let s = kukaku::crypto::Secret32::generate().unwrap();
//! let _ = format!("{s}");
//! ```
//! ```compile_fail
//! let k = kukaku::crypto::Kek::generate().unwrap();
//! let _ = format!("{k}");
//! ```
//! ```compile_fail
//! let d = kukaku::crypto::Dek::new(&kukaku::crypto::Secret32::generate().unwrap());
//! let _ = format!("{d}");
//! ```
//! ```compile_fail
//! let i = kukaku::crypto::IndexKey::new(&kukaku::crypto::Secret32::generate().unwrap());
//! let _ = format!("{i}");
//! ```
//! ```compile_fail
//! let s = kukaku::crypto::Secret32::generate().unwrap();
//! let _ = s.clone();
//! ```
//!
//! while their `Debug` compiles and is redacted:
//!
//! ```
//! use kukaku::crypto::{Dek, IndexKey, Kek, Secret32};
//! let s = Secret32::from_slice(&[0xab; 32]).unwrap();
//! let k = Kek::generate().unwrap();
//! let all = format!("{s:?} {:?} {:?} {k:?}", Dek::new(&s), IndexKey::new(&s));
//! assert!(!all.to_lowercase().contains("abab") && !all.contains("q6ur"), "{all}");
//! ```

pub mod aead;
pub mod credential;
pub mod index;
pub mod kek;
pub mod scope;
pub mod secret;
pub mod signer;

pub use aead::{Dek, OpenError, SealError};
pub use index::IndexKey;
pub use kek::{Kek, KekError, KekFile, KekProvider, KekSource, WrapPurpose};
pub use scope::{AdminScope, PartitionScope, PrefecturePair, PrefectureScope};
pub use secret::Secret32;
pub use signer::{CheckpointSigner, Cosigner};

use ring::rand::{SecureRandom, SystemRandom};

/// The system random source failed; nothing was encrypted or signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("system random number generator failed")]
pub struct RngError;

/// Fills an array from the system CSPRNG.
pub fn random<const N: usize>() -> Result<[u8; N], RngError> {
    let mut out = [0u8; N];
    SystemRandom::new().fill(&mut out).map_err(|_| RngError)?;
    Ok(out)
}
