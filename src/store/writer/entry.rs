//! What callers hand the writer and get back: entries (salt and commitment computed before
//! the writer), append options, transmission claims, receipts.

use super::*;

/// Largest payload of one entry.
const MAX_PAYLOAD: usize = 4 << 20;

/// One entry to append. Build it with [`NewEntry::new`]: salt and commitment are computed
/// by the caller, outside the writer.
pub struct NewEntry {
    pub(super) kind: Kind,
    pub(super) valid_from: i32,
    pub(super) ref_seq: Option<u64>,
    pub(super) salt: [u8; SALT_LEN],
    pub(super) payload: Zeroizing<Vec<u8>>,
    pub(super) commitment: Hash,
    /// Derived index keys written with the entry: `(prefix, key)` → `prefix ‖ u8 len ‖ key ‖
    /// seq`.
    pub(super) index: Vec<(u8, Vec<u8>)>,
}

/// Derived indexes kept in a partition CF, written atomically with their entry and rebuilt
/// from the log by `rebuild-index`. Keys are blind where the value is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    /// `I`: blind-index token of a 個人番号 (HMAC under the partition's index key).
    Person,
    /// `V`: 世帯番号 → its snapshots (the current view is the latest).
    Household,
    /// `K`: 世帯番号 → its 高額該当 records (flow 4).
    Kogaku,
    /// `X`: matching token of a 個人番号 (HMAC under the prefecture's matching key): the
    /// continuity job joins these across the partitions of one prefecture.
    Matching,
}

impl IndexKind {
    pub const ALL: [IndexKind; 4] = [
        IndexKind::Person,
        IndexKind::Household,
        IndexKind::Kogaku,
        IndexKind::Matching,
    ];

    pub fn prefix(self) -> u8 {
        match self {
            IndexKind::Person => b'I',
            IndexKind::Household => b'V',
            IndexKind::Kogaku => b'K',
            IndexKind::Matching => b'X',
        }
    }
}

/// Options of an append beyond its entries.
#[derive(Debug, Clone, Default)]
pub struct AppendOptions {
    /// Claim a transmission id atomically with the entries (idempotency).
    pub claim: Option<Claim>,
    /// Append this access record after the entries, in the same batch; the writer fills in
    /// `first_seq`, `count` and `kinds` from the seqs it assigns.
    pub access: Option<AccessRecord>,
    /// Replica state (`F` in the partition CF), written in the same batch as the copies.
    pub replica_state: Option<Vec<u8>>,
}

/// A transmission id claimed by an append: stored atomically with its entries, so a retry is
/// recognised and never stored twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub id: String,
    /// Keyed digest of the transmission's content.
    pub digest: [u8; 32],
    /// 世帯番号 of the transmission, in order (not protected).
    pub households: Vec<String>,
}

impl std::fmt::Debug for NewEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewEntry")
            .field("kind", &self.kind.name())
            .field("valid_from", &self.valid_from)
            .field("ref_seq", &self.ref_seq)
            .field("payload_len", &self.payload.len())
            .finish_non_exhaustive()
    }
}

impl NewEntry {
    /// `valid_from` is days since 1970-01-01; `ref_seq` the corrected or answered entry.
    pub fn new(
        kind: Kind,
        valid_from: i32,
        ref_seq: Option<u64>,
        payload: Vec<u8>,
    ) -> Result<Self, AppendError> {
        if kind == Kind::GENESIS || kind == Kind::KEY_EVENT {
            return Err(AppendError::ReservedKind(kind.name()));
        }
        if payload.len() > MAX_PAYLOAD {
            return Err(AppendError::TooLarge(payload.len()));
        }
        let payload = Zeroizing::new(payload);
        let salt = random_nonce::<SALT_LEN>()?;
        let commitment = commitment(&salt, &payload);
        Ok(NewEntry {
            kind,
            valid_from,
            ref_seq,
            salt,
            payload,
            commitment,
            index: Vec::new(),
        })
    }

    /// A verified copy of another log's entry (the intermediate's replica): same salt and
    /// payload, so the same commitment; its own seq, chain and DEK.
    pub fn copy(
        kind: Kind,
        valid_from: i32,
        salt: [u8; SALT_LEN],
        payload: Vec<u8>,
    ) -> Result<Self, AppendError> {
        if kind == Kind::GENESIS || kind == Kind::KEY_EVENT {
            return Err(AppendError::ReservedKind(kind.name()));
        }
        if payload.len() > MAX_PAYLOAD {
            return Err(AppendError::TooLarge(payload.len()));
        }
        let payload = Zeroizing::new(payload);
        let commitment = commitment(&salt, &payload);
        Ok(NewEntry {
            kind,
            valid_from,
            ref_seq: None,
            salt,
            payload,
            commitment,
            index: Vec::new(),
        })
    }

    /// Adds a derived index key (at most 255 bytes) written atomically with the entry.
    pub fn with_index(mut self, kind: IndexKind, key: Vec<u8>) -> Result<Self, AppendError> {
        if key.is_empty() || key.len() > 255 {
            return Err(AppendError::BadIndexKey);
        }
        self.index.push((kind.prefix(), key));
        Ok(self)
    }

    /// Entries made by the writer itself (genesis, key events).
    pub(super) fn internal(kind: Kind, payload: Vec<u8>) -> Result<Self, AppendError> {
        let salt = random_nonce::<SALT_LEN>()?;
        let commitment = commitment(&salt, &payload);
        Ok(NewEntry {
            kind,
            valid_from: 0,
            ref_seq: None,
            salt,
            payload: Zeroizing::new(payload),
            commitment,
            index: Vec::new(),
        })
    }
}

/// What a durable append returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendReceipt {
    pub partition: PartitionId,
    /// Seq of the first appended entry (key events the writer added may precede it).
    pub first_seq: u64,
    /// Seq and leaf hash of each entry of the request, in order.
    pub entries: Vec<(u64, Hash)>,
    /// Tree size after the batch.
    pub size: u64,
    pub root: Hash,
    /// The signed checkpoint at `size`.
    pub checkpoint: String,
    /// Seq of the access record the writer appended with the entries, if one was asked for.
    pub access_record_seq: Option<u64>,
}
