//! Why an append or a writer step failed.

use super::*;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    #[error("partition {0} does not exist")]
    UnknownPartition(PartitionId),
    #[error("partition {0} is not active yet; run the provisioning job")]
    NotActive(PartitionId),
    #[error("partition {0} has moved to another cell; nothing is written to it here")]
    Moved(PartitionId),
    #[error("partition {0} is quarantined after a failed integrity check")]
    Quarantined(PartitionId),
    #[error("kind {0} is written only by kukaku itself")]
    ReservedKind(&'static str),
    #[error("payload of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("empty append")]
    Empty,
    #[error("entry {index}: ref_seq {ref_seq} does not refer to an earlier entry")]
    BadRef { index: usize, ref_seq: u64 },
    #[error("store is poisoned after a failed write; no write is accepted until it is reopened")]
    Poisoned,
    #[error("writer is not running")]
    WriterGone,
    #[error(transparent)]
    Rng(#[from] RngError),
    #[error("key")]
    Key(#[from] KeyError),
    #[error("encryption failed")]
    Seal,
    #[error("stored state of partition {0} is unreadable")]
    BadState(String),
    #[error("storage")]
    Storage(#[from] StorageError),
    #[error("index key must be 1–255 bytes")]
    BadIndexKey,
    /// A key event's actor or reason was refused before anything was written.
    #[error("refused before anything was written")]
    KeyText(#[source] crate::ledger::payload::PayloadError),
    #[error("encoding an open payload")]
    Payload(#[source] crate::ledger::payload::PayloadError),
    #[error("transmission already stored with the same content (seq {first_seq}, {count} entries)")]
    AlreadyStored { first_seq: u64, count: u64 },
    #[error("transmission id already used with different content")]
    Conflict,
    #[error("partition {0}: its keys were destroyed (crypto-shredded); it takes no sealed entries")]
    Shredded(PartitionId),
    #[error(
        "partition {partition}: the {class} keys of fiscal year {epoch} were destroyed; nothing more is sealed in that period"
    )]
    ScopeDestroyed {
        partition: PartitionId,
        class: &'static str,
        epoch: u16,
    },
    #[error("partition {partition} key {key_id}: {reason}")]
    KeyState {
        partition: String,
        key_id: u32,
        reason: String,
    },
    #[error("partition {partition} seq {seq}: {reason}")]
    Corrupt {
        partition: PartitionId,
        seq: u64,
        reason: String,
    },
}

/// What failed below the writer: the cause of [`AppendError::Storage`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("RocksDB")]
    Db(#[from] rocksdb::Error),
    #[error("the storage engine")]
    Engine(#[from] crate::store::EngineError),
    #[error("encoding a record")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("the system column family is missing")]
    NoSystemFamily,
    #[error("reading the partition registry")]
    Registry(#[source] Box<crate::store::ProvisionError>),
    /// A test's injected fault (`store::hooks`): the write that a full disk would fail.
    #[error("{0}: no space left on device (injected fault)")]
    Injected(&'static str),
}

impl AppendError {
    /// A failure below the writer.
    pub(crate) fn storage(e: impl Into<StorageError>) -> Self {
        AppendError::Storage(e.into())
    }
}
