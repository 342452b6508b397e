//! The stored envelope: `header ‖ key_id:u32 ‖ body` (docs/format.md §3). Not hashed.

use super::hash::{Hash, commitment};
use super::header::{Class, Header, HeaderError, Reader};

/// AES-GCM nonce length.
pub const NONCE_LEN: usize = 12;
/// AES-GCM tag length.
pub const TAG_LEN: usize = 16;
/// Salt length of every commitment.
pub const SALT_LEN: usize = 32;

/// A parsed envelope. The body is still sealed for sealed kinds; `ledger` never decrypts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The decoded header.
    pub header: Header,
    /// Length of the encoded header at the start of the envelope bytes.
    pub header_len: usize,
    /// 0 for open bodies, the partition-local DEK id (≥ 1) for sealed ones.
    pub key_id: u32,
    /// The body, sealed or open.
    pub body: Body,
}

/// An envelope body.
#[derive(Clone, PartialEq, Eq)]
pub enum Body {
    /// `salt ‖ payload`, readable without keys.
    Open {
        /// The commitment salt.
        salt: [u8; SALT_LEN],
        /// The payload in clear.
        payload: Vec<u8>,
    },
    /// `nonce ‖ ciphertext ‖ tag` over `salt ‖ payload`, AAD = leaf hash.
    Sealed {
        /// The AES-GCM nonce.
        nonce: [u8; NONCE_LEN],
        /// The ciphertext of `salt ‖ payload` and its tag.
        ciphertext_and_tag: Vec<u8>,
    },
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Open { payload, .. } => write!(f, "Open({} bytes)", payload.len()),
            Body::Sealed {
                ciphertext_and_tag, ..
            } => write!(f, "Sealed({} bytes)", ciphertext_and_tag.len()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
/// Why envelope bytes do not decode.
pub enum EnvelopeError {
    #[error("header")]
    /// The header does not decode.
    Header(#[from] HeaderError),
    #[error("open kind {kind} stored with key id {key_id}; open bodies use key id 0")]
    /// An open kind with a key id.
    OpenWithKey {
        /// The kind's name.
        kind: &'static str,
        /// The key id stored.
        key_id: u32,
    },
    #[error("sealed kind {0} stored with key id 0")]
    /// A sealed kind (named) with key id 0.
    SealedWithoutKey(&'static str),
    #[error("sealed body of {0} bytes is shorter than nonce, salt and tag")]
    /// A sealed body shorter than nonce, salt and tag (its length).
    SealedTooShort(usize),
    #[error("open body of {0} bytes is shorter than the salt")]
    /// An open body shorter than the salt (its length).
    OpenTooShort(usize),
    #[error("open payload does not match the header's commitment")]
    /// An open payload that does not match the header's commitment.
    Commitment,
}

impl Envelope {
    /// The envelope bytes (docs/format.md §3).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.header.encode();
        out.extend_from_slice(&self.key_id.to_be_bytes());
        match &self.body {
            Body::Open { salt, payload } => {
                out.extend_from_slice(salt);
                out.extend_from_slice(payload);
            }
            Body::Sealed {
                nonce,
                ciphertext_and_tag,
            } => {
                out.extend_from_slice(nonce);
                out.extend_from_slice(ciphertext_and_tag);
            }
        }
        out
    }

    /// Parses and checks structure: header rules, key id against the kind's class, body length,
    /// and for open bodies the commitment. Sealed commitments need the key (crypto).
    pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        EnvelopeRef::decode(bytes).map(|e| e.to_owned())
    }

    /// Leaf hash of this entry (over the header only).
    pub fn leaf_hash(&self) -> Hash {
        self.header.leaf_hash()
    }
}

/// An envelope parsed in place: the same checks as [`Envelope::decode`], without copying
/// the body. Verifiers that only hash use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeRef<'a> {
    /// The decoded header.
    pub header: Header,
    /// The encoded header: the bytes the leaf hash covers (the strict decoder accepts one
    /// encoding per header, so these are exactly `header.encode()`).
    pub header_bytes: &'a [u8],
    /// 0 for open bodies, the partition-local DEK id (≥ 1) for sealed ones.
    pub key_id: u32,
    /// The body in place.
    pub body: BodyRef<'a>,
}

/// A body in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRef<'a> {
    /// `salt ‖ payload`, readable without keys.
    Open {
        /// The commitment salt.
        salt: &'a [u8; SALT_LEN],
        /// The payload in clear.
        payload: &'a [u8],
    },
    /// `nonce ‖ ciphertext ‖ tag`: only the store can open it.
    Sealed {
        /// The AES-GCM nonce.
        nonce: &'a [u8; NONCE_LEN],
        /// The ciphertext of `salt ‖ payload` and its tag.
        ciphertext_and_tag: &'a [u8],
    },
}

impl<'a> EnvelopeRef<'a> {
    /// Decodes strictly: one encoding per envelope, the open payload checked against its
    /// commitment.
    pub fn decode(bytes: &'a [u8]) -> Result<EnvelopeRef<'a>, EnvelopeError> {
        let mut r = Reader::new(bytes);
        let header = Header::read(&mut r)?;
        let header_len = r.pos();
        let key_id = r.u32()?;
        let rest = r.rest();
        let header_bytes = bytes.get(..header_len).unwrap_or_default();
        let kind = header.kind;
        let body = match (kind.class(), key_id) {
            (Class::Open, 0) => {
                let (salt, payload) = rest
                    .split_first_chunk::<SALT_LEN>()
                    .ok_or(EnvelopeError::OpenTooShort(rest.len()))?;
                if commitment(salt, payload) != header.commitment {
                    return Err(EnvelopeError::Commitment);
                }
                BodyRef::Open { salt, payload }
            }
            (Class::Open, k) => {
                return Err(EnvelopeError::OpenWithKey {
                    kind: kind.name(),
                    key_id: k,
                });
            }
            (Class::Sealed, 0) => return Err(EnvelopeError::SealedWithoutKey(kind.name())),
            (Class::Sealed, _) => {
                if rest.len() < NONCE_LEN + SALT_LEN + TAG_LEN {
                    return Err(EnvelopeError::SealedTooShort(rest.len()));
                }
                let (nonce, ct) = rest
                    .split_first_chunk::<NONCE_LEN>()
                    .ok_or(EnvelopeError::SealedTooShort(rest.len()))?;
                BodyRef::Sealed {
                    nonce,
                    ciphertext_and_tag: ct,
                }
            }
        };
        Ok(EnvelopeRef {
            header,
            header_bytes,
            key_id,
            body,
        })
    }

    /// Leaf hash over the encoded header bytes, without re-encoding.
    pub fn leaf_hash(&self) -> Hash {
        super::hash::leaf_hash(self.header_bytes)
    }

    /// The owned [`Envelope`] (copies the body).
    pub fn to_owned(&self) -> Envelope {
        Envelope {
            header: self.header.clone(),
            header_len: self.header_bytes.len(),
            key_id: self.key_id,
            body: match self.body {
                BodyRef::Open { salt, payload } => Body::Open {
                    salt: *salt,
                    payload: payload.to_vec(),
                },
                BodyRef::Sealed {
                    nonce,
                    ciphertext_and_tag,
                } => Body::Sealed {
                    nonce: *nonce,
                    ciphertext_and_tag: ciphertext_and_tag.to_vec(),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::header::{Kind, PartitionId};

    fn open_envelope() -> Envelope {
        let salt = [5u8; SALT_LEN];
        let payload = b"open payload".to_vec();
        Envelope {
            header: Header {
                partition: PartitionId::parse("380014").unwrap(),
                seq: 4,
                tx_time: 1,
                valid_from: 0,
                kind: Kind::ACCESS_RECORD,
                ref_seq: None,
                prev_chain: Hash::from_bytes([1; 32]),
                commitment: commitment(&salt, &payload),
            },
            header_len: 103,
            key_id: 0,
            body: Body::Open { salt, payload },
        }
    }

    #[test]
    fn open_round_trip_checks_commitment() {
        let e = open_envelope();
        let bytes = e.encode();
        assert_eq!(Envelope::decode(&bytes), Ok(e.clone()));
        // The in-place view hashes the raw header bytes: the same leaf as re-encoding.
        let view = EnvelopeRef::decode(&bytes).unwrap();
        assert_eq!(view.leaf_hash(), e.header.leaf_hash());
        assert_eq!(view.to_owned(), e);
        let mut tampered = bytes.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(Envelope::decode(&tampered), Err(EnvelopeError::Commitment));
        let mut keyed = bytes;
        keyed[e.header_len + 3] = 1;
        assert!(matches!(
            Envelope::decode(&keyed),
            Err(EnvelopeError::OpenWithKey { .. })
        ));
    }

    #[test]
    fn sealed_kind_needs_a_key_and_a_long_enough_body() {
        let mut e = open_envelope();
        e.header.kind = Kind::HOUSEHOLD_SNAPSHOT;
        e.key_id = 0;
        e.body = Body::Sealed {
            nonce: [0; NONCE_LEN],
            ciphertext_and_tag: vec![0; SALT_LEN + TAG_LEN],
        };
        assert_eq!(
            Envelope::decode(&e.encode()),
            Err(EnvelopeError::SealedWithoutKey("household_snapshot"))
        );
        e.key_id = 1;
        assert!(Envelope::decode(&e.encode()).is_ok());
        let mut short = e.encode();
        short.pop();
        assert!(matches!(
            Envelope::decode(&short),
            Err(EnvelopeError::SealedTooShort(_))
        ));
    }
}
