//! The single writer: group commit of appends from any partitions into one synced WriteBatch.
//!
//! Callers do the seq-independent work (salt, commitment). The writer drains its queue, assigns
//! seq and tx_time, builds headers, chain and tree nodes, seals bodies, signs one checkpoint
//! per touched partition, writes one batch with `sync = true`, then answers. A command that
//! fails inside the writer is answered alone and left out of the batch. A failed write poisons
//! the store: nothing more is acknowledged until it is reopened.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

mod apply;
mod batch;
mod keyops;

pub use keyops::{DestroyScope, ReencryptStep};
pub(crate) use keyops::{KeyOp, KeyOutcome};

use super::keyring::KeyError;
use super::records::{
    KeyMeta, KeyStatus, LOWEST_STORED_LEVEL, PartitionRecord, PartitionStatus, REPLICA_STATE_KEY,
    STATE_KEY, SYS_CF, StateRecord, TransmissionRecord, checkpoint_key, decode, encode, entry_key,
    index_key, key_meta_key, key_meta_prefix, node_key, partition_cf, registry_key, shred_key,
    transmission_key,
};
use super::{Inner, sync_write};
use crate::crypto::{Dek, RngError, random_nonce};
use crate::ledger::envelope::{NONCE_LEN, SALT_LEN, TAG_LEN};
use crate::ledger::hash::{Hash, chain_next, commitment};
use crate::ledger::header::{Class, Header, Kind, PartitionId};
use crate::ledger::merkle::CompactRange;
use crate::ledger::payload::{AccessRecord, Genesis, KeyClass, KeyEvent, KeyEventKind};

/// Largest payload of one entry.
pub const MAX_PAYLOAD: usize = 4 << 20;

/// One entry to append. Build it with [`NewEntry::new`]: salt and commitment are computed
/// by the caller, outside the writer.
pub struct NewEntry {
    kind: Kind,
    valid_from: i32,
    ref_seq: Option<u64>,
    salt: [u8; SALT_LEN],
    payload: Zeroizing<Vec<u8>>,
    commitment: Hash,
    /// Derived index keys written with the entry: `(prefix, key)` → `prefix ‖ u8 len ‖ key ‖
    /// seq`.
    index: Vec<(u8, Vec<u8>)>,
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
    fn internal(kind: Kind, payload: Vec<u8>) -> Result<Self, AppendError> {
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

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    #[error("partition {0} does not exist")]
    UnknownPartition(String),
    #[error("partition {0} is not active yet; run the provisioning job")]
    NotActive(String),
    #[error("partition {0} is quarantined after a failed integrity check")]
    Quarantined(String),
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
    Shredded(String),
    #[error(
        "partition {partition}: the {class} keys of fiscal year {epoch} were destroyed; nothing more is sealed in that period"
    )]
    ScopeDestroyed {
        partition: String,
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
        partition: String,
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

type Reply<T> = oneshot::Sender<Result<T, AppendError>>;

enum Command {
    Append {
        partition: PartitionId,
        entries: Vec<NewEntry>,
        opts: Box<AppendOptions>,
        reply: Reply<AppendReceipt>,
    },
    Activate {
        partition: PartitionId,
        reply: Reply<()>,
    },
    /// A new current DEK version for every key scope of the partition (operator rotation).
    Rotate {
        partition: PartitionId,
        who: KeyActor,
        reply: Reply<Vec<u32>>,
    },
    /// A key-management step, run alone in its own batch (docs/keys.md).
    Keys {
        op: Box<KeyOp>,
        reply: Reply<KeyOutcome>,
    },
}

/// Longest reason a key operation accepts, in bytes: the writer adds context (sizes, the
/// KEK fingerprint) and the whole must fit a key event's 65,535-byte text.
pub const MAX_REASON: usize = 4096;

/// Who changes keys and why, for the key events (never key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyActor {
    /// `system`, `admin-cli`, or a credential id.
    pub actor: String,
    pub reason: String,
}

impl KeyActor {
    /// Refuses an actor or reason that a key event could not carry (a control character,
    /// a non-ASCII or over-long actor, a reason over 4,096 bytes). Every key operation
    /// checks this before it writes anything.
    pub fn validate(&self) -> Result<(), crate::ledger::payload::PayloadError> {
        use crate::ledger::payload::{PayloadError, check_text};
        check_text("actor", &self.actor)?;
        check_text("reason", &self.reason)?;
        if !self.actor.is_ascii() {
            return Err(PayloadError::Text("actor"));
        }
        if self.actor.len() > 255 {
            return Err(PayloadError::TooLong("actor"));
        }
        if self.reason.len() > MAX_REASON {
            return Err(PayloadError::TooLong("reason"));
        }
        Ok(())
    }

    pub(crate) fn system(reason: &str) -> Self {
        KeyActor {
            actor: "system".into(),
            reason: reason.into(),
        }
    }
}

impl Command {
    fn bytes(&self) -> usize {
        match self {
            Command::Append { entries, .. } => entries.iter().map(|e| e.payload.len() + 64).sum(),
            Command::Activate { .. } | Command::Rotate { .. } | Command::Keys { .. } => 64,
        }
    }
}

pub(crate) struct WriterHandle {
    tx: Option<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<()>>,
}

impl WriterHandle {
    pub(crate) fn start(inner: Arc<Inner>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(inner.options.queue_depth.max(1));
        let thread = std::thread::Builder::new()
            .name("kukaku-writer".into())
            .spawn(move || Writer::new(inner).run(rx))?;
        Ok(WriterHandle {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    fn send(&self, cmd: Command) -> Result<(), AppendError> {
        self.tx
            .as_ref()
            .ok_or(AppendError::WriterGone)?
            .blocking_send(cmd)
            .map_err(|_| AppendError::WriterGone)
    }

    pub(crate) fn append(
        &self,
        partition: PartitionId,
        entries: Vec<NewEntry>,
        opts: AppendOptions,
    ) -> Result<AppendReceipt, AppendError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Append {
            partition,
            entries,
            opts: Box::new(opts),
            reply,
        })?;
        Self::wait(rx)
    }

    pub(crate) async fn append_async(
        &self,
        partition: PartitionId,
        entries: Vec<NewEntry>,
        opts: AppendOptions,
    ) -> Result<AppendReceipt, AppendError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .as_ref()
            .ok_or(AppendError::WriterGone)?
            .send(Command::Append {
                partition,
                entries,
                opts: Box::new(opts),
                reply,
            })
            .await
            .map_err(|_| AppendError::WriterGone)?;
        rx.await.map_err(|_| AppendError::WriterGone)?
    }

    /// Activates partitions, queueing them all so that group commit merges them; calls
    /// `done(partition, result)` as each one completes, in order.
    pub(crate) fn activate_many(
        &self,
        partitions: &[PartitionId],
        done: &mut dyn FnMut(&PartitionId, Result<(), AppendError>),
    ) -> Result<(), AppendError> {
        // Bounded in flight so a huge request does not fill the queue ahead of appends.
        const WINDOW: usize = 512;
        let mut waiting = std::collections::VecDeque::new();
        for p in partitions {
            if waiting.len() == WINDOW
                && let Some((q, rx)) = waiting.pop_front()
            {
                done(q, Self::wait(rx));
            }
            let (reply, rx) = oneshot::channel();
            self.send(Command::Activate {
                partition: p.clone(),
                reply,
            })?;
            waiting.push_back((p, rx));
        }
        for (q, rx) in waiting {
            done(q, Self::wait(rx));
        }
        Ok(())
    }

    /// Rotates every current DEK of `partition`; returns the new key ids once durable.
    pub(crate) fn rotate(
        &self,
        partition: PartitionId,
        who: KeyActor,
    ) -> Result<Vec<u32>, AppendError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Rotate {
            partition,
            who,
            reply,
        })?;
        Self::wait(rx)
    }

    /// Runs one key-management step alone in its own group commit.
    pub(crate) fn key_op(&self, op: KeyOp) -> Result<KeyOutcome, AppendError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Keys {
            op: Box::new(op),
            reply,
        })?;
        Self::wait(rx)
    }

    fn wait<T>(rx: oneshot::Receiver<Result<T, AppendError>>) -> Result<T, AppendError> {
        rx.blocking_recv().map_err(|_| AppendError::WriterGone)?
    }

    pub(crate) fn alive(&self) -> bool {
        self.tx.as_ref().is_some_and(|tx| !tx.is_closed())
            && self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Closes the queue and waits for queued commands to finish.
    pub(crate) fn shutdown(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where a staged put goes.
#[derive(Clone)]
enum Target {
    /// The key store: written (synced) before the data batch that uses the key.
    KeyStore,
    /// A key-store record removed (retire, destroy), in the same key-store batch.
    KeyStoreDelete,
    Sys,
    SysDelete,
    Partition(PartitionId),
    /// Deletes the partition's keys in `[key, value)`.
    PartitionDeleteRange(PartitionId),
}

type Ops = Vec<(Target, Vec<u8>, Vec<u8>)>;

/// A partition's writer-side state.
#[derive(Clone)]
struct PState {
    active: bool,
    chain: Hash,
    last_tx: u64,
    range: CompactRange,
    keys: BTreeMap<u32, KeyMeta>,
    dirty_keys: BTreeSet<u32>,
    /// Size at the start of the current batch.
    committed_size: u64,
    /// Every key destroyed (`Z` record): sealed writes are refused.
    shredded: bool,
}

impl PState {
    fn size(&self) -> u64 {
        self.range.size()
    }
}

fn key_class(kind: Kind) -> KeyClass {
    match kind {
        Kind::KOGAKU_RECORD
        | Kind::CONTINUITY_CANDIDATE
        | Kind::CONTINUITY_DECISION
        | Kind::CONTINUITY_CONFIRMATION
        | Kind::CONTINUITY_CARRY_OVER
        | Kind::CONTINUITY_ANOMALY_ACK => KeyClass::Dated,
        _ => KeyClass::Resident,
    }
}

struct Writer {
    inner: Arc<Inner>,
    states: HashMap<PartitionId, PState>,
}

/// A command's staged result: partition state, (seq, leaf) of its entries, access record seq.
type Applied = (PState, Vec<(u64, Hash)>, Option<u64>);

enum Pending {
    Append(
        Reply<AppendReceipt>,
        PartitionId,
        Vec<(u64, Hash)>,
        Option<u64>,
    ),
    /// A request refused inside the batch, answered after the batch is durable.
    Refused(Reply<AppendReceipt>, AppendError),
    Activate(Reply<()>),
    Rotate(Reply<Vec<u32>>, Vec<u32>),
}

/// A group commit being staged: its clock, writes, staged partition states, the answers it
/// owes once durable, and the claims it holds so far.
struct Batch {
    now: u64,
    ops: Ops,
    staged: HashMap<PartitionId, PState>,
    pending: Vec<Pending>,
    claimed: HashMap<(PartitionId, String), TransmissionRecord>,
}

impl Command {
    /// Answers the command `Poisoned` (the store refuses writes after a failed batch).
    fn poisoned(self) {
        match self {
            Command::Append { reply, .. } => {
                let _ = reply.send(Err(AppendError::Poisoned));
            }
            Command::Activate { reply, .. } => {
                let _ = reply.send(Err(AppendError::Poisoned));
            }
            Command::Rotate { reply, .. } => {
                let _ = reply.send(Err(AppendError::Poisoned));
            }
            Command::Keys { reply, .. } => {
                let _ = reply.send(Err(AppendError::Poisoned));
            }
        }
    }
}

impl Pending {
    /// Answers once the batch is durable, with the checkpoint of each partition it touched.
    fn answer(self, checkpoints: &HashMap<PartitionId, (u64, Hash, String)>) {
        match self {
            Pending::Append(reply, p, done, access_record_seq) => {
                let receipt = match checkpoints.get(&p) {
                    Some((size, root, note)) => Ok(AppendReceipt {
                        first_seq: done.first().map_or(0, |d| d.0),
                        entries: done,
                        size: *size,
                        root: *root,
                        checkpoint: note.clone(),
                        partition: p,
                        access_record_seq,
                    }),
                    None => Err(AppendError::BadState(p.to_string())),
                };
                let _ = reply.send(receipt);
            }
            Pending::Activate(reply) => {
                let _ = reply.send(Ok(()));
            }
            Pending::Rotate(reply, ids) => {
                let _ = reply.send(Ok(ids));
            }
            Pending::Refused(reply, e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Answers `Poisoned`: the batch was not written.
    fn poisoned(self) {
        match self {
            Pending::Append(reply, ..) | Pending::Refused(reply, _) => {
                let _ = reply.send(Err(AppendError::Poisoned));
            }
            Pending::Activate(reply) => {
                let _ = reply.send(Err(AppendError::Poisoned));
            }
            Pending::Rotate(reply, _) => {
                let _ = reply.send(Err(AppendError::Poisoned));
            }
        }
    }
}
impl Writer {
    pub(super) fn new(inner: Arc<Inner>) -> Self {
        Writer {
            inner,
            states: HashMap::new(),
        }
    }

    /// The writer's clock: the store's (the wall clock, but for a test's clock).
    pub(super) fn now(&self) -> u64 {
        self.inner.options.now_ms()
    }

    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut carried = None;
        loop {
            let first = match carried.take() {
                Some(c) => c,
                None => match rx.blocking_recv() {
                    Some(c) => c,
                    None => break,
                },
            };
            if let Command::Keys { op, reply } = first {
                self.process_key_op(*op, reply);
                continue;
            }
            let mut bytes = first.bytes();
            let mut cmds = vec![first];
            while cmds.len() < self.inner.options.max_batch_commands
                && bytes < self.inner.options.max_batch_bytes
            {
                match rx.try_recv() {
                    Ok(c @ Command::Keys { .. }) => {
                        carried = Some(c);
                        break;
                    }
                    Ok(c) => {
                        bytes += c.bytes();
                        cmds.push(c);
                    }
                    Err(_) => break,
                }
            }
            self.process(cmds);
        }
    }
}
