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
pub mod instance_kek;
pub mod kek;
pub mod pkcs11;
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

/// Fills an array from the system CSPRNG (one `getrandom` call). For keys, tokens and ids.
pub fn random<const N: usize>() -> Result<[u8; N], RngError> {
    let mut out = [0u8; N];
    SystemRandom::new().fill(&mut out).map_err(|_| RngError)?;
    Ok(out)
}

/// Bytes of system randomness a thread fetches at once for [`random_nonce`].
const POOL: usize = 4096;

thread_local! {
    static NONCES: std::cell::RefCell<(Box<[u8; POOL]>, usize)> =
        std::cell::RefCell::new((Box::new([0u8; POOL]), POOL));
}

/// Random bytes for AES-GCM nonces and commitment salts: system randomness fetched 4 KiB at
/// a time per thread, so an append of a thousand entries makes a few `getrandom` calls
/// instead of two thousand. Each byte is handed out once and wiped as it is, so the pool
/// holds only bytes not used yet (no past salt stays in memory). Keys use [`random`].
pub fn random_nonce<const N: usize>() -> Result<[u8; N], RngError> {
    if N > POOL {
        return random::<N>();
    }
    NONCES.with(|cell| {
        let mut pool = cell.borrow_mut();
        if pool.1 + N > POOL {
            SystemRandom::new()
                .fill(&mut pool.0[..])
                .map_err(|_| RngError)?;
            pool.1 = 0;
        }
        let at = pool.1;
        let mut out = [0u8; N];
        out.copy_from_slice(pool.0.get(at..at + N).ok_or(RngError)?);
        // Handed-out bytes are wiped so none is given twice, even after a failed refill.
        pool.0.get_mut(at..at + N).ok_or(RngError)?.fill(0);
        pool.1 = at + N;
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pooled nonces never repeat across refills and are not all zero.
    #[test]
    fn pooled_nonces_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3 * POOL / 12 {
            let n = random_nonce::<12>().unwrap();
            assert_ne!(n, [0u8; 12]);
            assert!(seen.insert(n), "a nonce repeated");
        }
    }
}
