//! Keys and encryption: the only place keys and plaintext meet.
//!
//! Secret bytes live in [`Secret32`] (zeroized on drop, redacted `Debug`, no `Display` or
//! `Serialize`). AES-256-GCM comes from `aes-gcm` with its `zeroize` feature; SHA-256, Ed25519
//! and randomness from `ring`. ring does not wipe its Ed25519 key objects: the signer is
//! long-lived, one per instance (residual risk noted in docs/ARCHITECTURE.md).

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
