//! Keys and values of the system CF, the partition CFs and the key store (docs/format.md §7).
//!
//! System records are bincode 2 (pinned exactly) with a fixed configuration: big-endian,
//! fixed-width integers, 256 KiB decode limit (a credential may list every partition). They
//! hold no personal data.

use bincode::{Decode, Encode};

use crate::ledger::merkle::CompactRange;
use crate::ledger::{Hash, PartitionId};

/// The one bincode configuration kukaku uses.
pub fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_big_endian()
        .with_fixed_int_encoding()
        .with_limit::<{ 256 * 1024 }>()
}

pub fn encode<T: Encode>(value: &T) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::encode_to_vec(value, config())
}

pub fn decode<T: Decode<()>>(bytes: &[u8]) -> Option<T> {
    match bincode::decode_from_slice::<T, _>(bytes, config()) {
        Ok((v, used)) if used == bytes.len() => Some(v),
        _ => None,
    }
}

/// Name of the system column family.
pub const SYS_CF: &str = "sys";
/// Prefix of partition column family names.
pub const PARTITION_CF_PREFIX: &str = "p/";

pub fn partition_cf(p: &PartitionId) -> String {
    format!("{PARTITION_CF_PREFIX}{p}")
}

// ---- partition CF keys ----

pub fn entry_key(seq: u64) -> [u8; 9] {
    let mut k = [b'E'; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The lowest tree level stored under `N` (docs/format.md §7). The subtrees below it, a leaf
/// and the node over two leaves, are recomputed from the envelopes' headers when a proof
/// needs them, so an entry costs one envelope put and, on average, half a node put instead
/// of two node puts.
pub const LOWEST_STORED_LEVEL: u8 = 2;

pub fn node_key(level: u8, index: u64) -> [u8; 10] {
    let mut k = [b'N'; 10];
    k[1] = level;
    k[2..].copy_from_slice(&index.to_be_bytes());
    k
}

pub fn checkpoint_key(size: u64) -> [u8; 9] {
    let mut k = [b'C'; 9];
    k[1..].copy_from_slice(&size.to_be_bytes());
    k
}

/// `W ‖ size` → the checkpoint at `size` with the cosignature lines of trusted witnesses
/// added (hub only). Evidence beside `C`, never instead of it.
pub fn cosigned_key(size: u64) -> [u8; 9] {
    let mut k = [b'W'; 9];
    k[1..].copy_from_slice(&size.to_be_bytes());
    k
}

pub const STATE_KEY: &[u8] = b"M";

/// `F`: the replica's state of the upstream log (intermediate only), bincode
/// `ReplicaState`, written with the copies.
pub const REPLICA_STATE_KEY: &[u8] = b"F";

/// What the intermediate has verified of the hub's log of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ReplicaState {
    /// Hub tree size verified (a hub checkpoint size).
    pub hub_size: u64,
    /// Hub compact range at `hub_size` (to extend with new leaves).
    pub hub_frontier: Vec<[u8; 32]>,
    /// Hub chain head at `hub_size`.
    pub hub_chain: [u8; 32],
    /// The hub's signed checkpoint at `hub_size`.
    pub hub_checkpoint: String,
}

/// `prefix ‖ u8 len ‖ key ‖ seq:u64` → empty: a derived index entry (`I` person token,
/// `V` household).
pub fn index_key(prefix: u8, key: &[u8], seq: u64) -> Vec<u8> {
    let mut k = index_prefix(prefix, key);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `prefix ‖ u8 len ‖ key`: what every seq of one index key starts with.
pub fn index_prefix(prefix: u8, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 10);
    k.push(prefix);
    k.push(u8::try_from(key.len()).unwrap_or(u8::MAX));
    k.extend_from_slice(key);
    k
}

/// `T ‖ id` → [`TransmissionRecord`]: idempotency of transmissions.
pub fn transmission_key(id: &str) -> Vec<u8> {
    let mut k = b"T".to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

/// A stored transmission: written in the batch of its entries.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct TransmissionRecord {
    /// Keyed digest of the content (HMAC under the partition's index key).
    pub digest: [u8; 32],
    /// First seq and number of entries of the append (snapshots, then the access record).
    pub first_seq: u64,
    pub count: u64,
    pub tx_time_ms: u64,
    /// 世帯番号 in file order.
    pub households: Vec<String>,
}

/// Per-partition head: size, chain head, last tx_time and the compact range.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct StateRecord {
    pub size: u64,
    pub chain: [u8; 32],
    pub last_tx: u64,
    pub frontier: Vec<[u8; 32]>,
}

impl StateRecord {
    pub fn range(&self) -> Option<CompactRange> {
        CompactRange::from_parts(
            self.size,
            self.frontier.iter().map(|h| Hash::from_bytes(*h)).collect(),
        )
        .ok()
    }
}

// ---- system CF ----

pub const INSTANCE_KEY: &[u8] = b"I";

/// Instance metadata, written by `init`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct InstanceRecord {
    pub format: u16,
    pub origin: String,
    pub signing_public_key: [u8; 32],
    pub kek_fingerprint: String,
    pub created_ms: u64,
}

pub fn registry_key(p: &PartitionId) -> Vec<u8> {
    let mut k = b"R".to_vec();
    k.extend_from_slice(p.as_str().as_bytes());
    k
}

pub const REGISTRY_PREFIX: &[u8] = b"R";

/// `O` ‖ prefecture (2 digits) ‖ ms:u64 ‖ credential id → what a continuity operator did
/// (UTF-8 JSON): the operator console's log of its own actions.
pub const OPERATOR_LOG_PREFIX: &[u8] = b"O";

/// `L` ‖ partition → the partition's display name (UTF-8), e.g. the municipality's name.
pub const NAME_PREFIX: &[u8] = b"L";

pub fn name_key(p: &PartitionId) -> Vec<u8> {
    let mut k = NAME_PREFIX.to_vec();
    k.extend_from_slice(p.as_str().as_bytes());
    k
}

/// Provisioning status of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum PartitionStatus {
    /// Registered; the provisioning job has not finished it.
    Requested,
    /// Column family, genesis entry and first DEK exist.
    Active,
    /// Moved to another cell of the same instance identity (`kukaku partitions move`): its
    /// log stays here as it was at the move, and nothing is written to it here again.
    Moved,
}

#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct PartitionRecord {
    pub status: PartitionStatus,
    pub requested_ms: u64,
    pub activated_ms: u64,
}

pub fn key_meta_prefix(p: &PartitionId) -> Vec<u8> {
    let mut k = b"K".to_vec();
    k.extend_from_slice(p.as_str().as_bytes());
    k.push(0);
    k
}

pub fn key_meta_key(p: &PartitionId, key_id: u32) -> Vec<u8> {
    let mut k = key_meta_prefix(p);
    k.extend_from_slice(&key_id.to_be_bytes());
    k
}

/// Status of one DEK version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum KeyStatus {
    /// The version new writes of its scope use.
    Current,
    /// Superseded: still decrypts, no new writes.
    Previous,
    /// Removed after no entry used it (`kukaku keys retire`).
    Retired,
    /// Crypto-shredded: its entries are unreadable for good (`kukaku keys destroy`).
    Destroyed,
}

/// Metadata of one DEK (partition-local `key_id`): scope, version, counters.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct KeyMeta {
    /// `KeyClass::code()`.
    pub class: u8,
    pub epoch: u16,
    pub version: u32,
    pub status: KeyStatus,
    pub created_ms: u64,
    /// Encryptions made (nonces drawn) with this key; reserved before sealing.
    pub encryptions: u64,
}

/// `Q ‖ partition` → [`ReencryptCursor`]: a re-encryption job in progress, written in the
/// batch of the entries it moved (so a crash resumes exactly where it stopped).
pub fn reencrypt_key(p: &PartitionId) -> Vec<u8> {
    let mut k = b"Q".to_vec();
    k.extend_from_slice(p.as_str().as_bytes());
    k
}

#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ReencryptCursor {
    /// Next seq to look at.
    pub next_seq: u64,
    /// The job covers seqs below this (the size when it started).
    pub end: u64,
    /// Entries moved so far.
    pub moved: u64,
    pub started_ms: u64,
    /// `moved` at the last progress key event.
    pub reported: u64,
}

/// `Z ‖ partition` → [`ShredRecord`]: every key of the partition was destroyed. Sealed
/// writes are refused from then on; open entries (key events, access records) still append.
pub fn shred_key(p: &PartitionId) -> Vec<u8> {
    let mut k = b"Z".to_vec();
    k.extend_from_slice(p.as_str().as_bytes());
    k
}

#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ShredRecord {
    pub destroyed_ms: u64,
    /// DEK versions destroyed, and entries they had sealed.
    pub keys: u32,
    pub entries: u64,
}

/// `J` → [`SigningKeys`]: every checkpoint-signing key the instance has had. Absent until
/// the first rotation (then version 1 is the instance record's `signing_public_key`).
pub const SIGNING_KEYS: &[u8] = b"J";

#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SigningKeyRecord {
    pub version: u32,
    pub public: [u8; 32],
    pub added_ms: u64,
    /// 0 while it signs; else when it stopped (its seed is then removed).
    pub retired_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SigningKeys {
    /// By version, oldest first.
    pub keys: Vec<SigningKeyRecord>,
}

/// `T ‖ id` → bincode [`CredentialRecord`] ‖ MAC (32 bytes, HMAC-SHA256 under the credential
/// MAC key over `"credential-v1:" ‖ id ‖ record`): a record planted in a copy of `data/`
/// without the KEK-wrapped key is refused.
pub const CREDENTIAL_PREFIX: &[u8] = b"T";

/// `G ‖ job ‖ 0x00 ‖ partition` → size:u64 (big-endian): how far a job has read the
/// partition's log (the continuity extraction reads only what came after).
pub fn job_cursor_key(job: &str, p: &PartitionId) -> Vec<u8> {
    let mut k = b"G".to_vec();
    k.extend_from_slice(job.as_bytes());
    k.push(0);
    k.extend_from_slice(p.as_str().as_bytes());
    k
}

/// `U` → empty: every credential record carries its MAC (set by the first open of a version
/// with MACs, after it added them to older records; from then on a record without one is
/// refused).
pub const CREDENTIAL_MACS: &[u8] = b"U";

pub fn credential_key(id: &[u8; 8]) -> Vec<u8> {
    let mut k = CREDENTIAL_PREFIX.to_vec();
    k.extend_from_slice(id);
    k
}

/// Reach of a credential as stored: 1 partition, 2 prefecture, 3 set, 4 all.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum ReachRecord {
    Partition(String),
    Prefecture(String),
    Partitions(Vec<String>),
    All,
}

/// A credential: SHA-256 of its secret, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct CredentialRecord {
    /// `Role::code()`.
    pub role: u8,
    pub reach: ReachRecord,
    pub secret_hash: [u8; 32],
    pub label: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    /// 0 while not revoked.
    pub revoked_ms: u64,
    /// SHA-256 of the bound client certificate (DER), for mTLS.
    pub client_cert: Option<[u8; 32]>,
}

// ---- key store ----

pub const SIGNING_KEY: &[u8] = b"S\x00\x00\x00\x01";

/// `S ‖ version:u32` → wrapped checkpoint-signing seed of that version (version 1 is
/// [`SIGNING_KEY`]).
pub fn signing_key_slot(version: u32) -> Vec<u8> {
    let mut k = b"S".to_vec();
    k.extend_from_slice(&version.to_be_bytes());
    k
}
/// Key-store key of the wrapped credential MAC key (version 1).
pub const CREDENTIAL_MAC_KEY: &[u8] = b"C\x00\x00\x00\x01";

/// Key-store key of the wrapped witness (cosigner) seed.
pub const WITNESS_KEY: &[u8] = b"G\x00\x00\x00\x01";

/// `Y ‖ prefecture` → wrapped matching key of a prefecture (version 1, flow 4).
pub fn matching_key_slot(prefecture: &str) -> Vec<u8> {
    let mut k = b"Y".to_vec();
    k.extend_from_slice(prefecture.as_bytes());
    k
}

/// `X ‖ partition` → wrapped blind-index key (version 1).
pub fn index_key_slot(p: &PartitionId) -> Vec<u8> {
    let mut k = b"X".to_vec();
    k.extend_from_slice(p.as_str().as_bytes());
    k
}

/// What a key-store record is: wrapping purpose, scope and key id (the wrapping AAD).
pub fn slot_of(key: &[u8]) -> Option<(crate::crypto::WrapPurpose, String, u32)> {
    use crate::crypto::WrapPurpose as W;
    let text = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_owned);
    let (&tag, rest) = key.split_first()?;
    match tag {
        b'S' => Some((
            W::SigningKey,
            "instance".into(),
            u32::from_be_bytes(rest.try_into().ok()?),
        )),
        b'G' => Some((
            W::WitnessKey,
            "instance".into(),
            u32::from_be_bytes(rest.try_into().ok()?),
        )),
        b'Y' => Some((W::MatchingKey, format!("prefecture:{}", text(rest)?), 1)),
        b'C' => Some((
            W::CredentialMac,
            "instance".into(),
            u32::from_be_bytes(rest.try_into().ok()?),
        )),
        b'X' => Some((
            W::IndexKey,
            PartitionId::parse(&text(rest)?).ok()?.to_string(),
            1,
        )),
        b'D' => {
            let (id, tail) = rest.split_at_checked(rest.len().checked_sub(5)?)?;
            let (&zero, key_id) = tail.split_first()?;
            (zero == 0).then_some(())?;
            let p = PartitionId::parse(&text(id)?).ok()?;
            Some((
                W::Dek,
                p.to_string(),
                u32::from_be_bytes(key_id.try_into().ok()?),
            ))
        }
        _ => None,
    }
}

pub fn dek_key(p: &PartitionId, key_id: u32) -> Vec<u8> {
    let mut k = b"D".to_vec();
    k.extend_from_slice(p.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(&key_id.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden bytes of a system record: bincode 2.0.1, big-endian, fixed-width integers.
    #[test]
    fn key_meta_golden_bytes() {
        let m = KeyMeta {
            class: 2,
            epoch: 2026,
            version: 3,
            status: KeyStatus::Previous,
            created_ms: 1,
            encryptions: 258,
        };
        let b = encode(&m).unwrap();
        assert_eq!(
            hex::encode(&b),
            "02\
             07ea\
             00000003\
             00000001\
             0000000000000001\
             0000000000000102"
        );
        assert_eq!(decode::<KeyMeta>(&b), Some(m));
        let mut longer = b.clone();
        longer.push(0);
        assert_eq!(decode::<KeyMeta>(&longer), None);
    }

    #[test]
    fn key_store_slots_name_their_wrapping_aad() {
        use crate::crypto::WrapPurpose as W;
        let p = PartitionId::parse("131011").unwrap();
        assert_eq!(slot_of(&dek_key(&p, 7)), Some((W::Dek, "131011".into(), 7)));
        assert_eq!(
            slot_of(&index_key_slot(&p)),
            Some((W::IndexKey, "131011".into(), 1))
        );
        assert_eq!(
            slot_of(&matching_key_slot("13")),
            Some((W::MatchingKey, "prefecture:13".into(), 1))
        );
        assert_eq!(
            slot_of(SIGNING_KEY),
            Some((W::SigningKey, "instance".into(), 1))
        );
        assert_eq!(
            slot_of(CREDENTIAL_MAC_KEY),
            Some((W::CredentialMac, "instance".into(), 1))
        );
        assert_eq!(
            slot_of(WITNESS_KEY),
            Some((W::WitnessKey, "instance".into(), 1))
        );
        for bad in [
            &b""[..],
            b"Z1",
            b"S\x00",
            b"D131011\x01\x00\x00\x00\x01",
            b"Xabc",
        ] {
            assert_eq!(slot_of(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn keys_sort_by_number() {
        assert!(entry_key(255) < entry_key(256));
        assert!(node_key(0, u64::MAX) < node_key(1, 0));
        assert!(checkpoint_key(9) < checkpoint_key(10));
    }
}
