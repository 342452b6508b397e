//! The hashed entry header (docs/format.md §2) and its one canonical encoding.

use std::fmt;

use super::hash::{HASH_LEN, Hash, leaf_hash};

/// Header format version written by this code.
pub const HEADER_VERSION: u8 = 1;
/// Longest partition id the header can carry.
pub const MAX_PARTITION_LEN: usize = 32;

/// A partition id as the ledger sees it: 1–32 ASCII digits.
///
/// The ledger only checks the shape; `domain::InsurerNumber` checks the 保険者番号 check digit
/// and produces the canonical form (6 digits for 市町村国保, otherwise 8). Shared, not copied:
/// the writer names a partition in every key it stages, so a clone must not allocate.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId(std::sync::Arc<str>);

impl PartitionId {
    /// Accepts 1–32 ASCII digits.
    pub fn parse(text: &str) -> Result<Self, PartitionIdError> {
        if text.is_empty() || text.len() > MAX_PARTITION_LEN {
            return Err(PartitionIdError::Length(text.len()));
        }
        if !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PartitionIdError::NotDigits);
        }
        Ok(PartitionId(std::sync::Arc::from(text)))
    }

    /// The id's digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Compares with the id's text, so `partition == "131011"` reads as it does for a string.
impl PartialEq<&str> for PartitionId {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl fmt::Debug for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PartitionId({})", self.0)
    }
}

/// A 保険者番号 is not personal data (docs/domain.md §7), so a partition id may be shown.
impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
/// Why a partition id is refused.
pub enum PartitionIdError {
    #[error("partition id must be 1 to 32 characters, got {0}")]
    /// Not 1 to 32 characters (the length given).
    Length(usize),
    #[error("partition id must be ASCII digits")]
    /// Not all ASCII digits.
    NotDigits,
}

/// Whether a kind's body is encrypted (sealed) or readable by auditors (open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Encrypted under a DEK of the partition; auditors see the header only.
    Sealed,
    /// Readable by auditors (`salt ‖ payload` in clear).
    Open,
}

/// An entry kind (docs/format.md §4). Codes are never reused; unknown codes are rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kind(u16);

impl Kind {
    /// The first entry of every partition: the instance origin.
    pub const GENESIS: Kind = Kind(0x0001);
    /// A household and its members as a transmission sent them (sealed).
    pub const HOUSEHOLD_SNAPSHOT: Kind = Kind(0x0010);
    /// A 訂正 of an earlier snapshot (sealed).
    pub const HOUSEHOLD_CORRECTION: Kind = Kind(0x0011);
    /// A household's 高額該当 months (sealed, dated keys).
    pub const KOGAKU_RECORD: Kind = Kind(0x0020);
    /// A version of a flow-4 move candidate (sealed, dated keys).
    pub const CONTINUITY_CANDIDATE: Kind = Kind(0x0030);
    /// A clerk's 確定指示 on a candidate (sealed, dated keys).
    pub const CONTINUITY_DECISION: Kind = Kind(0x0031);
    /// The 連合会's confirmation of a decision (sealed, dated keys).
    pub const CONTINUITY_CONFIRMATION: Kind = Kind(0x0032);
    /// A 高額該当回数 carry-over row of a confirmed decision (sealed, dated keys).
    pub const CONTINUITY_CARRY_OVER: Kind = Kind(0x0033);
    /// A clerk's acknowledgement of a candidate's anomalies (sealed, dated keys).
    pub const CONTINUITY_ANOMALY_ACK: Kind = Kind(0x0034);
    /// Who read or wrote which entries, and why (open).
    pub const ACCESS_RECORD: Kind = Kind(0x0100);
    /// A 提供記録: what was provided to whom (open).
    pub const PROVISION_RECORD: Kind = Kind(0x0101);
    /// Entries forwarded to another instance (open).
    pub const FORWARD_OUT: Kind = Kind(0x0102);
    /// The intermediate's receipt of copied hub entries (open).
    pub const FORWARDING_RECEIPT: Kind = Kind(0x0103);
    /// A key-management event: create, rotate, rewrap, re-encrypt, retire, destroy (open).
    pub const KEY_EVENT: Kind = Kind(0x0200);

    /// Every kind this version knows, in code order.
    pub const ALL: [Kind; 14] = [
        Kind::GENESIS,
        Kind::HOUSEHOLD_SNAPSHOT,
        Kind::HOUSEHOLD_CORRECTION,
        Kind::KOGAKU_RECORD,
        Kind::CONTINUITY_CANDIDATE,
        Kind::CONTINUITY_DECISION,
        Kind::CONTINUITY_CONFIRMATION,
        Kind::CONTINUITY_CARRY_OVER,
        Kind::CONTINUITY_ANOMALY_ACK,
        Kind::ACCESS_RECORD,
        Kind::PROVISION_RECORD,
        Kind::FORWARD_OUT,
        Kind::FORWARDING_RECEIPT,
        Kind::KEY_EVENT,
    ];

    /// A known code, or `None`.
    pub fn from_code(code: u16) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.0 == code)
    }

    /// The kind's code (docs/format.md §4).
    pub fn code(self) -> u16 {
        self.0
    }

    /// Sealed for codes 0x0010–0x00FF, open for all others.
    pub fn class(self) -> Class {
        match self.0 {
            0x0010..=0x00FF => Class::Sealed,
            _ => Class::Open,
        }
    }

    /// Short stable name, used in reports and the CLI.
    pub fn name(self) -> &'static str {
        match self.0 {
            0x0001 => "genesis",
            0x0010 => "household_snapshot",
            0x0011 => "household_correction",
            0x0020 => "kogaku_record",
            0x0030 => "continuity_candidate",
            0x0031 => "continuity_decision",
            0x0032 => "continuity_confirmation",
            0x0033 => "continuity_carry_over",
            0x0034 => "continuity_anomaly_ack",
            0x0100 => "access_record",
            0x0101 => "provision_record",
            0x0102 => "forward_out",
            0x0103 => "forwarding_receipt",
            0x0200 => "key_event",
            _ => "unknown",
        }
    }

    /// Looks a kind up by its `name()`.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.name() == name)
    }
}

/// The hashed header of one entry. It holds no key version, nonce, ciphertext or personal data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The partition the entry belongs to.
    pub partition: PartitionId,
    /// 0-based leaf index in the partition's tree.
    pub seq: u64,
    /// Unix milliseconds UTC, set by the writer, non-decreasing per partition.
    pub tx_time: u64,
    /// Legal effective date, days since 1970-01-01.
    pub valid_from: i32,
    /// What the entry is.
    pub kind: Kind,
    /// The corrected or answered entry, always `< seq`.
    pub ref_seq: Option<u64>,
    /// Chain value of `seq - 1`; zeros at seq 0.
    pub prev_chain: Hash,
    /// `SHA-256(salt ‖ payload)`.
    pub commitment: Hash,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
/// Why header bytes do not decode.
pub enum HeaderError {
    #[error("header truncated: need {need} bytes at offset {at}")]
    /// The bytes end inside the header.
    Truncated {
        /// Offset of the field that is cut off.
        at: usize,
        /// Bytes the field needs.
        need: usize,
    },
    #[error("unsupported header version {0}")]
    /// A header version this build does not know.
    Version(u8),
    #[error("bad partition id in header")]
    /// The partition id is refused.
    Partition(#[from] PartitionIdError),
    #[error("unknown entry kind 0x{0:04x}")]
    /// A kind code this build does not know.
    UnknownKind(u16),
    #[error("has_ref must be 0 or 1, got {0}")]
    /// `has_ref` other than 0 or 1.
    HasRef(u8),
    #[error("ref_seq must be 0 when has_ref is 0")]
    /// A `ref_seq` without `has_ref`.
    DanglingRef,
    #[error("ref_seq {ref_seq} is not below seq {seq}")]
    /// A reference to an entry that is not earlier.
    RefNotBefore {
        /// The referenced seq.
        ref_seq: u64,
        /// The entry's own seq.
        seq: u64,
    },
    #[error("genesis must be at seq 0 and only there")]
    /// A genesis entry anywhere but seq 0, or seq 0 that is not genesis.
    GenesisPosition,
    #[error("seq 0 must have an all-zero prev_chain")]
    /// Seq 0 with a non-zero `prev_chain`.
    FirstPrevChain,
}

/// Byte cursor used by the decoders of this module and its siblings.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], HeaderError> {
        let end = self.pos.checked_add(n).ok_or(HeaderError::Truncated {
            at: self.pos,
            need: n,
        })?;
        let out = self.buf.get(self.pos..end).ok_or(HeaderError::Truncated {
            at: self.pos,
            need: n,
        })?;
        self.pos = end;
        Ok(out)
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], HeaderError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, HeaderError> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, HeaderError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, HeaderError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, HeaderError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    pub(crate) fn i32(&mut self) -> Result<i32, HeaderError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    pub(crate) fn hash(&mut self) -> Result<Hash, HeaderError> {
        Ok(Hash::from_bytes(self.array::<HASH_LEN>()?))
    }
}

impl Header {
    /// The canonical encoding (docs/format.md §2).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let p = self.partition.as_str().as_bytes();
        out.push(HEADER_VERSION);
        // PartitionId guarantees 1..=32 bytes, so the length fits in a u8.
        out.push(p.len() as u8);
        out.extend_from_slice(p);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.tx_time.to_be_bytes());
        out.extend_from_slice(&self.valid_from.to_be_bytes());
        out.extend_from_slice(&self.kind.code().to_be_bytes());
        match self.ref_seq {
            Some(r) => {
                out.push(1);
                out.extend_from_slice(&r.to_be_bytes());
            }
            None => {
                out.push(0);
                out.extend_from_slice(&0u64.to_be_bytes());
            }
        }
        out.extend_from_slice(self.prev_chain.as_bytes());
        out.extend_from_slice(self.commitment.as_bytes());
    }

    /// Length of [`Header::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        97 + self.partition.as_str().len()
    }

    /// RFC 9162 leaf hash of the encoded header.
    pub fn leaf_hash(&self) -> Hash {
        leaf_hash(&self.encode())
    }

    /// Decodes exactly one header from the start of `bytes`; returns it and the bytes it used.
    pub fn decode_prefix(bytes: &[u8]) -> Result<(Header, usize), HeaderError> {
        let mut r = Reader::new(bytes);
        let header = Self::read(&mut r)?;
        Ok((header, r.pos()))
    }

    /// Decodes a header that must fill `bytes` exactly.
    pub fn decode(bytes: &[u8]) -> Result<Header, HeaderError> {
        let (header, used) = Self::decode_prefix(bytes)?;
        if used != bytes.len() {
            return Err(HeaderError::Truncated { at: used, need: 0 });
        }
        Ok(header)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Header, HeaderError> {
        let version = r.u8()?;
        if version != HEADER_VERSION {
            return Err(HeaderError::Version(version));
        }
        let plen = usize::from(r.u8()?);
        let pbytes = r.take(plen)?;
        let ptext = std::str::from_utf8(pbytes).map_err(|_| PartitionIdError::NotDigits)?;
        let partition = PartitionId::parse(ptext)?;
        let seq = r.u64()?;
        let tx_time = r.u64()?;
        let valid_from = r.i32()?;
        let code = r.u16()?;
        let kind = Kind::from_code(code).ok_or(HeaderError::UnknownKind(code))?;
        let has_ref = r.u8()?;
        let raw_ref = r.u64()?;
        let ref_seq = match has_ref {
            0 if raw_ref == 0 => None,
            0 => return Err(HeaderError::DanglingRef),
            1 if raw_ref < seq => Some(raw_ref),
            1 => {
                return Err(HeaderError::RefNotBefore {
                    ref_seq: raw_ref,
                    seq,
                });
            }
            other => return Err(HeaderError::HasRef(other)),
        };
        let prev_chain = r.hash()?;
        let commitment = r.hash()?;
        if (kind == Kind::GENESIS) != (seq == 0) {
            return Err(HeaderError::GenesisPosition);
        }
        if seq == 0 && prev_chain != Hash::ZERO {
            return Err(HeaderError::FirstPrevChain);
        }
        Ok(Header {
            partition,
            seq,
            tx_time,
            valid_from,
            kind,
            ref_seq,
            prev_chain,
            commitment,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            partition: PartitionId::parse("131011").unwrap_or_else(|e| panic!("{e}")),
            seq: 3,
            tx_time: 1_700_000_000_000,
            valid_from: 19_800,
            kind: Kind::HOUSEHOLD_CORRECTION,
            ref_seq: Some(2),
            prev_chain: Hash::from_bytes([7; 32]),
            commitment: Hash::from_bytes([9; 32]),
        }
    }

    #[test]
    fn round_trip_and_length() {
        let h = sample();
        let bytes = h.encode();
        assert_eq!(bytes.len(), h.encoded_len());
        assert_eq!(Header::decode(&bytes), Ok(h));
    }

    /// One encoding per header: whatever single-byte change still decodes re-encodes to
    /// exactly the changed bytes, so hashing the raw bytes (audit fast path) and hashing the
    /// re-encoded header (writer) give the same leaf.
    #[test]
    fn every_accepted_encoding_is_canonical() {
        let good = sample().encode();
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut b = good.clone();
                b[i] ^= 1 << bit;
                if let Ok((h, used)) = Header::decode_prefix(&b) {
                    assert_eq!(h.encode(), b[..used].to_vec(), "byte {i} bit {bit}");
                }
            }
        }
    }

    #[test]
    fn every_truncation_and_extension_is_rejected() {
        let bytes = sample().encode();
        for n in 0..bytes.len() {
            assert!(Header::decode(&bytes[..n]).is_err(), "prefix {n} accepted");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Header::decode(&longer).is_err());
    }

    #[test]
    fn non_canonical_fields_are_rejected() {
        let good = sample().encode();
        let kind_at = 1 + 1 + 6 + 8 + 8 + 4;
        let ref_at = kind_at + 2;
        let cases: Vec<(usize, u8)> = vec![
            (0, 2),              // version
            (1, 0),              // empty partition
            (2, b'a'),           // non-digit partition
            (kind_at + 1, 0x02), // unknown kind 0x0002
            (ref_at, 2),         // has_ref 2
            (ref_at + 8, 3),     // ref_seq 3 == seq
        ];
        for (at, value) in cases {
            let mut b = good.clone();
            b[at] = value;
            assert!(Header::decode(&b).is_err(), "byte {at} = {value} accepted");
        }
        let mut dangling = sample();
        dangling.ref_seq = None;
        let mut b = dangling.encode();
        b[ref_at + 8] = 1;
        assert_eq!(Header::decode(&b), Err(HeaderError::DanglingRef));
    }

    #[test]
    fn genesis_only_at_zero() {
        let mut h = sample();
        h.kind = Kind::GENESIS;
        h.ref_seq = None;
        assert_eq!(
            Header::decode(&h.encode()),
            Err(HeaderError::GenesisPosition)
        );
        h.seq = 0;
        assert_eq!(
            Header::decode(&h.encode()),
            Err(HeaderError::FirstPrevChain)
        );
        h.prev_chain = Hash::ZERO;
        assert!(Header::decode(&h.encode()).is_ok());
        h.kind = Kind::KEY_EVENT;
        assert_eq!(
            Header::decode(&h.encode()),
            Err(HeaderError::GenesisPosition)
        );
    }

    #[test]
    fn kinds_have_fixed_classes() {
        assert_eq!(Kind::HOUSEHOLD_SNAPSHOT.class(), Class::Sealed);
        assert_eq!(Kind::CONTINUITY_CARRY_OVER.class(), Class::Sealed);
        assert_eq!(Kind::CONTINUITY_ANOMALY_ACK.class(), Class::Sealed);
        assert_eq!(Kind::ACCESS_RECORD.class(), Class::Open);
        assert_eq!(Kind::KEY_EVENT.class(), Class::Open);
        assert_eq!(Kind::GENESIS.class(), Class::Open);
        for k in Kind::ALL {
            assert_eq!(Kind::from_name(k.name()), Some(k));
            assert_eq!(Kind::from_code(k.code()), Some(k));
        }
        assert_eq!(Kind::from_code(0x0002), None);
    }
}
