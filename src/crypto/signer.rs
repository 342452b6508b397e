//! The instance checkpoint signer (Ed25519, C2SP signed-note).

use std::fmt;

use ring::signature::{Ed25519KeyPair, KeyPair as _};

use super::Secret32;
use crate::ledger::note::{
    Checkpoint, MAX_COSIGNATURE_TIME, NoteError, Signature, SignedNote, VerifierKey,
    cosigned_message, key_id,
};
use crate::ledger::{Hash, PartitionId};

/// Signs one checkpoint per partition under the key name `<origin>/<partition>`. During a
/// signing-key rotation it holds two keys and every note carries both signatures (C2SP
/// signed notes allow several; verifiers use the one they pin and ignore the others).
///
/// ring's key pair is not zeroized on drop; one signer lives for the whole process.
pub struct CheckpointSigner {
    origin: String,
    /// Oldest first; the last one is the newest (what `verifier_key` names).
    keys: Vec<(Ed25519KeyPair, [u8; 32])>,
}

impl fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("origin", &self.origin)
            .field(
                "public",
                &self
                    .keys
                    .iter()
                    .map(|(_, p)| Hash::from_bytes(*p))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignerError {
    #[error("signing seed is not a valid Ed25519 seed")]
    Seed,
    #[error("origin")]
    Origin(#[source] NoteError),
    #[error("a signer needs one or two keys")]
    KeyCount,
}

/// An instance origin: a key-name prefix such as `hub.kokuho-13.example`.
pub fn validate_origin(origin: &str) -> Result<(), NoteError> {
    if origin.is_empty()
        || origin.len() > 200
        || !origin
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/' | b':'))
    {
        return Err(NoteError::BadKey(
            "origin must be 1-200 characters of [A-Za-z0-9.-_/:]",
        ));
    }
    Ok(())
}

/// The Ed25519 public key of a seed.
pub fn public_key_of(seed: &Secret32) -> Result<[u8; 32], SignerError> {
    let pair = Ed25519KeyPair::from_seed_unchecked(seed.expose()).map_err(|_| SignerError::Seed)?;
    let mut public = [0u8; 32];
    public.copy_from_slice(pair.public_key().as_ref());
    Ok(public)
}

impl CheckpointSigner {
    pub fn from_seed(origin: &str, seed: &Secret32) -> Result<Self, SignerError> {
        Self::from_seeds(origin, &[seed])
    }

    /// A signer with one key, or two during a rotation (oldest first).
    pub fn from_seeds(origin: &str, seeds: &[&Secret32]) -> Result<Self, SignerError> {
        validate_origin(origin).map_err(SignerError::Origin)?;
        if seeds.is_empty() || seeds.len() > 2 {
            return Err(SignerError::KeyCount);
        }
        let keys = seeds
            .iter()
            .map(|seed| {
                let pair = Ed25519KeyPair::from_seed_unchecked(seed.expose())
                    .map_err(|_| SignerError::Seed)?;
                let mut public = [0u8; 32];
                public.copy_from_slice(pair.public_key().as_ref());
                Ok((pair, public))
            })
            .collect::<Result<Vec<_>, SignerError>>()?;
        Ok(CheckpointSigner {
            origin: origin.to_owned(),
            keys,
        })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The newest key's public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.keys.last().map_or([0; 32], |k| k.1)
    }

    /// Every key that signs now, oldest first.
    pub fn public_keys(&self) -> Vec<[u8; 32]> {
        self.keys.iter().map(|k| k.1).collect()
    }

    /// Key name and checkpoint origin of a partition.
    pub fn key_name(&self, partition: &PartitionId) -> String {
        format!("{}/{}", self.origin, partition)
    }

    /// The C2SP verifier key auditors pin for `partition` (the newest key).
    pub fn verifier_key(&self, partition: &PartitionId) -> Result<VerifierKey, NoteError> {
        VerifierKey::new(&self.key_name(partition), self.public_key())
    }

    /// Signs any note text under `name` with every key.
    pub fn sign_text(&self, name: &str, text: &str) -> SignedNote {
        SignedNote {
            text: text.to_owned(),
            signatures: self
                .keys
                .iter()
                .map(|(pair, public)| Signature {
                    name: name.to_owned(),
                    key_id: key_id(name, public),
                    signature: pair.sign(text.as_bytes()).as_ref().to_vec(),
                })
                .collect(),
        }
    }

    /// The signed checkpoint note for `partition` at `size` with `root`.
    pub fn sign_checkpoint(&self, partition: &PartitionId, size: u64, root: Hash) -> String {
        let name = self.key_name(partition);
        let body = Checkpoint {
            origin: name.clone(),
            size,
            root,
        }
        .body();
        self.sign_text(&name, &body).to_text()
    }
}

/// The instance's witness key: cosigns (C2SP `cosignature/v1`, type 0x04) checkpoints of
/// another log after verifying their consistency, under the key name `<origin>`. A key apart
/// from the checkpoint signer, as tlog-cosignature requires one key per cosigner role.
pub struct Cosigner {
    name: String,
    pair: Ed25519KeyPair,
    key: VerifierKey,
}

impl fmt::Debug for Cosigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cosigner")
            .field("name", &self.name)
            .field("public", &Hash::from_bytes(*self.key.public_key()))
            .finish_non_exhaustive()
    }
}

impl Cosigner {
    pub fn from_seed(name: &str, seed: &Secret32) -> Result<Self, SignerError> {
        validate_origin(name).map_err(SignerError::Origin)?;
        let pair =
            Ed25519KeyPair::from_seed_unchecked(seed.expose()).map_err(|_| SignerError::Seed)?;
        let mut public = [0u8; 32];
        public.copy_from_slice(pair.public_key().as_ref());
        let key = VerifierKey::new_cosigner(name, public).map_err(SignerError::Origin)?;
        Ok(Cosigner {
            name: name.to_owned(),
            pair,
            key,
        })
    }

    /// The cosigner vkey (type 0x04) a log pins to check this witness.
    pub fn verifier_key(&self) -> &VerifierKey {
        &self.key
    }

    /// `note` with this witness's cosignature at `timestamp` (POSIX seconds) added. The
    /// caller has verified the note's log signature and its consistency.
    pub fn cosign(&self, note: &SignedNote, timestamp: u64) -> Result<SignedNote, NoteError> {
        if timestamp > MAX_COSIGNATURE_TIME {
            return Err(NoteError::Malformed("cosignature time out of range"));
        }
        let sig = self
            .pair
            .sign(cosigned_message(timestamp, &note.text).as_bytes());
        let mut signature = timestamp.to_be_bytes().to_vec();
        signature.extend_from_slice(sig.as_ref());
        let mut out = note.clone();
        out.signatures
            .retain(|s| s.key_id != self.key.id() || s.name != self.name);
        out.merge(&SignedNote {
            text: note.text.clone(),
            signatures: vec![Signature {
                name: self.name.clone(),
                key_id: self.key.id(),
                signature,
            }],
        })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    /// golang.org/x/mod sumdb/note: the PeterNeumann signer key (type 0x01 ‖ 32-byte seed)
    /// reproduces the published signature byte for byte (Ed25519 is deterministic).
    #[test]
    fn known_answer_signature() {
        let skey = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
        let b64 = skey.splitn(5, '+').nth(4).unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(raw[0], 0x01);
        let seed = Secret32::from_slice(&raw[1..]).unwrap();
        let signer = CheckpointSigner::from_seed("unused", &seed).unwrap();
        let text = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
        let note = signer.sign_text("PeterNeumann", text).to_text();
        assert_eq!(
            note,
            format!(
                "{text}\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
            )
        );
    }

    #[test]
    fn checkpoints_verify_only_for_their_partition() {
        let signer =
            CheckpointSigner::from_seed("hub.example", &Secret32::generate().unwrap()).unwrap();
        let p = PartitionId::parse("131011").unwrap();
        let q = PartitionId::parse("380014").unwrap();
        let note = signer.sign_checkpoint(&p, 5, Hash::from_bytes([4; 32]));
        let cp = Checkpoint::verify_note(&note, &signer.verifier_key(&p).unwrap()).unwrap();
        assert_eq!((cp.size, cp.origin.as_str()), (5, "hub.example/131011"));
        assert!(Checkpoint::verify_note(&note, &signer.verifier_key(&q).unwrap()).is_err());
        assert!(format!("{signer:?}").contains("hub.example"));
    }

    /// During a rotation a note carries both signatures; a verifier pinning either key
    /// accepts it, and one pinning neither does not.
    #[test]
    fn two_keys_sign_every_note_during_a_rotation() {
        let (old, new) = (Secret32::generate().unwrap(), Secret32::generate().unwrap());
        let both = CheckpointSigner::from_seeds("hub.example", &[&old, &new]).unwrap();
        let p = PartitionId::parse("131011").unwrap();
        let note = both.sign_checkpoint(&p, 3, Hash::from_bytes([1; 32]));
        assert_eq!(SignedNote::parse(&note).unwrap().signatures.len(), 2);
        for seed in [&old, &new] {
            let one = CheckpointSigner::from_seed("hub.example", seed).unwrap();
            Checkpoint::verify_note(&note, &one.verifier_key(&p).unwrap()).unwrap();
        }
        assert_eq!(both.public_key(), public_key_of(&new).unwrap());
        let stranger =
            CheckpointSigner::from_seed("hub.example", &Secret32::generate().unwrap()).unwrap();
        assert!(Checkpoint::verify_note(&note, &stranger.verifier_key(&p).unwrap()).is_err());
        assert!(matches!(
            CheckpointSigner::from_seeds("hub.example", &[]),
            Err(SignerError::KeyCount)
        ));
    }

    proptest::proptest! {
        /// Every single-bit change anywhere in a signed checkpoint (body or signature line)
        /// is rejected.
        #[test]
        fn every_single_bit_flip_of_a_checkpoint_is_rejected(
            size in 0u64..u64::MAX,
            root in proptest::array::uniform32(0u8..),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            bit in 0u8..8,
        ) {
            let signer =
                CheckpointSigner::from_seed("hub.example", &Secret32::from_slice(&[7; 32]).unwrap())
                    .unwrap();
            let p = PartitionId::parse("131011").unwrap();
            let key = signer.verifier_key(&p).unwrap();
            let note = signer.sign_checkpoint(&p, size, Hash::from_bytes(root));
            proptest::prop_assert!(Checkpoint::verify_note(&note, &key).is_ok());
            let mut bytes = note.into_bytes();
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
            if let Ok(text) = String::from_utf8(bytes) {
                proptest::prop_assert!(Checkpoint::verify_note(&text, &key).is_err());
            }
        }
    }
}
