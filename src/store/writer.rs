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
use super::{Inner, now_ms, sync_write};
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
    #[error("key: {0}")]
    Key(#[from] KeyError),
    #[error("encryption failed")]
    Seal,
    #[error("stored state of partition {0} is unreadable")]
    BadState(String),
    #[error("storage: {0}")]
    Storage(String),
    #[error("index key must be 1–255 bytes")]
    BadIndexKey,
    /// A key event's actor or reason was refused before anything was written.
    #[error("refused before anything was written: {0}")]
    KeyText(crate::ledger::payload::PayloadError),
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
    fn new(inner: Arc<Inner>) -> Self {
        Writer {
            inner,
            states: HashMap::new(),
        }
    }

    /// The writer's clock: wall clock plus the (test-only) offset.
    fn now(&self) -> u64 {
        now_ms().saturating_add_signed(self.inner.options.clock_offset_ms)
    }

    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
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

    fn load(&mut self, p: &PartitionId) -> Result<PState, AppendError> {
        if let Some(s) = self.states.get(p) {
            return Ok(s.clone());
        }
        let db = &self.inner.db;
        let storage = |e: rocksdb::Error| AppendError::Storage(e.to_string());
        let cf = db
            .cf_handle(&partition_cf(p))
            .ok_or_else(|| AppendError::UnknownPartition(p.to_string()))?;
        let sys = db
            .cf_handle(SYS_CF)
            .ok_or_else(|| AppendError::Storage("system column family missing".into()))?;
        let record: Option<PartitionRecord> = db
            .get_cf(&sys, registry_key(p))
            .map_err(storage)?
            .map(|raw| decode(&raw).ok_or_else(|| AppendError::BadState(p.to_string())))
            .transpose()?;
        let Some(record) = record else {
            return Err(AppendError::UnknownPartition(p.to_string()));
        };
        let (chain, last_tx, range) = match db.get_cf(&cf, STATE_KEY).map_err(storage)? {
            Some(raw) => {
                let st: StateRecord =
                    decode(&raw).ok_or_else(|| AppendError::BadState(p.to_string()))?;
                let range = st
                    .range()
                    .ok_or_else(|| AppendError::BadState(p.to_string()))?;
                (Hash::from_bytes(st.chain), st.last_tx, range)
            }
            None => (Hash::ZERO, 0, CompactRange::new()),
        };
        let mut keys = BTreeMap::new();
        let prefix = key_meta_prefix(p);
        for item in db.prefix_iterator_cf(&sys, &prefix) {
            let (k, v) = item.map_err(storage)?;
            let Some(id) = k.strip_prefix(prefix.as_slice()) else {
                break;
            };
            let id: [u8; 4] = id
                .try_into()
                .map_err(|_| AppendError::BadState(p.to_string()))?;
            let meta: KeyMeta = decode(&v).ok_or_else(|| AppendError::BadState(p.to_string()))?;
            keys.insert(u32::from_be_bytes(id), meta);
        }
        let shredded = db.get_cf(&sys, shred_key(p)).map_err(storage)?.is_some();
        let state = PState {
            shredded,
            active: record.status == PartitionStatus::Active,
            chain,
            last_tx,
            committed_size: range.size(),
            range,
            keys,
            dirty_keys: BTreeSet::new(),
        };
        self.states.insert(p.clone(), state.clone());
        Ok(state)
    }

    /// Appends one entry to `st`, staging its puts.
    fn apply(
        &self,
        p: &PartitionId,
        st: &mut PState,
        e: &NewEntry,
        now: u64,
        ops: &mut Ops,
    ) -> Result<(u64, Hash), AppendError> {
        let tx_time = now.max(st.last_tx);
        let sealing = match e.kind.class() {
            Class::Open => None,
            Class::Sealed => Some(self.reserve_key(p, st, e.kind, tx_time, now, ops)?),
        };
        let seq = st.size();
        let header = Header {
            partition: p.clone(),
            seq,
            tx_time,
            valid_from: e.valid_from,
            kind: e.kind,
            ref_seq: e.ref_seq,
            prev_chain: st.chain,
            commitment: e.commitment,
        };
        // One buffer, sized once: header, key id, then the body (sealed in place).
        let mut env = Vec::with_capacity(
            header.encoded_len() + 4 + NONCE_LEN + SALT_LEN + e.payload.len() + TAG_LEN,
        );
        header.encode_into(&mut env);
        let leaf = crate::ledger::hash::leaf_hash(&env);
        match sealing {
            None => {
                env.extend_from_slice(&0u32.to_be_bytes());
                env.extend_from_slice(&e.salt);
                env.extend_from_slice(&e.payload);
            }
            Some((key_id, dek)) => {
                env.extend_from_slice(&key_id.to_be_bytes());
                dek.seal_into(&leaf, &e.salt, &e.payload, &mut env)
                    .map_err(|_| AppendError::Seal)?;
            }
        }
        let target = Target::Partition(p.clone());
        ops.push((target.clone(), entry_key(seq).to_vec(), env));
        for (prefix, key) in &e.index {
            ops.push((target.clone(), index_key(*prefix, key, seq), Vec::new()));
        }
        let nodes = st
            .range
            .append(leaf)
            .map_err(|e| AppendError::BadState(e.to_string()))?;
        // Levels below LOWEST_STORED_LEVEL are recomputed from the envelopes by readers.
        for n in nodes.into_iter().filter(|n| n.level >= LOWEST_STORED_LEVEL) {
            ops.push((
                target.clone(),
                node_key(n.level, n.index).to_vec(),
                n.hash.as_bytes().to_vec(),
            ));
        }
        st.chain = chain_next(&st.chain, &leaf);
        st.last_tx = tx_time;
        Ok((seq, leaf))
    }

    /// The current DEK for `kind`'s key scope, with one encryption reserved; creates or
    /// rotates a version (with its key event) when needed.
    fn reserve_key(
        &self,
        p: &PartitionId,
        st: &mut PState,
        kind: Kind,
        tx_time: u64,
        now: u64,
        ops: &mut Ops,
    ) -> Result<(u32, Arc<Dek>), AppendError> {
        let class = key_class(kind);
        let epoch = match class {
            KeyClass::Resident => 0,
            KeyClass::Dated => crate::ledger::fiscal_year_jst(tx_time),
        };
        if st.shredded {
            return Err(AppendError::Shredded(p.to_string()));
        }
        if st.keys.values().any(|m| {
            m.class == class.code() && m.epoch == epoch && m.status == KeyStatus::Destroyed
        }) {
            return Err(AppendError::ScopeDestroyed {
                partition: p.to_string(),
                class: class.name(),
                epoch,
            });
        }
        let current = st
            .keys
            .iter()
            .find(|(_, m)| {
                m.class == class.code() && m.epoch == epoch && m.status == KeyStatus::Current
            })
            .map(|(id, m)| (*id, m.version, m.encryptions));
        let key_id = match current {
            Some((id, _, used)) if used < self.inner.options.dek_rotate_after => id,
            Some((id, version, _)) => {
                if let Some(m) = st.keys.get_mut(&id) {
                    m.status = KeyStatus::Previous;
                }
                st.dirty_keys.insert(id);
                let who = KeyActor::system("encryption budget of previous version reached");
                self.create_key(p, st, (class, epoch, version + 1), &who, now, ops)?
            }
            None => {
                let who = KeyActor::system("first key of scope");
                self.create_key(p, st, (class, epoch, 1), &who, now, ops)?
            }
        };
        let meta = st
            .keys
            .get_mut(&key_id)
            .ok_or_else(|| AppendError::BadState(p.to_string()))?;
        meta.encryptions += 1;
        st.dirty_keys.insert(key_id);
        let dek = self.inner.keyring.dek(p, key_id)?;
        Ok((key_id, dek))
    }

    /// Creates a DEK version (material durable in the key store first) and appends its event.
    #[allow(clippy::too_many_arguments)]
    fn create_key(
        &self,
        p: &PartitionId,
        st: &mut PState,
        (class, epoch, version): (KeyClass, u16, u32),
        who: &KeyActor,
        now: u64,
        ops: &mut Ops,
    ) -> Result<u32, AppendError> {
        let key_id = st.keys.keys().next_back().map_or(1, |k| k + 1);
        let (key, wrapped) = self.inner.keyring.stage_dek(p, key_id)?;
        ops.push((Target::KeyStore, key, wrapped));
        st.keys.insert(
            key_id,
            KeyMeta {
                class: class.code(),
                epoch,
                version,
                status: KeyStatus::Current,
                created_ms: now,
                encryptions: 0,
            },
        );
        st.dirty_keys.insert(key_id);
        let event = KeyEvent {
            event: if version == 1 {
                KeyEventKind::Create
            } else {
                KeyEventKind::Rotate
            },
            key_id,
            class,
            epoch,
            version,
            count: 0,
            actor: who.actor.clone(),
            reason: who.reason.clone(),
        };
        self.key_event(p, st, &event, now, ops)?;
        Ok(key_id)
    }

    fn run_append(
        &mut self,
        p: &PartitionId,
        entries: &[NewEntry],
        access: Option<&AccessRecord>,
        now: u64,
        ops: &mut Ops,
    ) -> Result<Applied, AppendError> {
        if entries.is_empty() {
            return Err(AppendError::Empty);
        }
        self.check_quarantine(p)?;
        let mut st = self.load(p)?;
        if !st.active {
            return Err(AppendError::NotActive(p.to_string()));
        }
        let mut done = Vec::with_capacity(entries.len());
        for (index, e) in entries.iter().enumerate() {
            if let Some(r) = e.ref_seq
                && r >= st.size()
            {
                return Err(AppendError::BadRef { index, ref_seq: r });
            }
            done.push(self.apply(p, &mut st, e, now, ops)?);
        }
        let mut access_seq = None;
        if let (Some(template), Some(first), Some(last)) = (access, done.first(), done.last()) {
            let mut rec = template.clone();
            rec.first_seq = first.0;
            rec.count = last.0 - first.0 + 1;
            let mut kinds: Vec<u16> = entries.iter().map(|e| e.kind.code()).collect();
            kinds.sort_unstable();
            kinds.dedup();
            rec.kinds = kinds;
            let payload = rec
                .encode()
                .map_err(|e| AppendError::Storage(e.to_string()))?;
            let day = i32::try_from(now / 86_400_000).unwrap_or(0);
            let entry = NewEntry::new(Kind::ACCESS_RECORD, day, None, payload)?;
            access_seq = Some(self.apply(p, &mut st, &entry, now, ops)?.0);
        }
        Ok((st, done, access_seq))
    }

    /// Marks every current DEK of `p` previous and creates the next version of its scope,
    /// each with a key event naming who and why.
    fn run_rotate(
        &mut self,
        p: &PartitionId,
        who: &KeyActor,
        now: u64,
        ops: &mut Ops,
    ) -> Result<(PState, Vec<u32>), AppendError> {
        self.check_quarantine(p)?;
        let mut st = self.load(p)?;
        if !st.active {
            return Err(AppendError::NotActive(p.to_string()));
        }
        let current: Vec<(u32, KeyClass, u16, u32)> = st
            .keys
            .iter()
            .filter(|(_, m)| m.status == KeyStatus::Current)
            .filter_map(|(id, m)| {
                KeyClass::from_code(m.class).map(|c| (*id, c, m.epoch, m.version))
            })
            .collect();
        let mut created = Vec::new();
        for (id, class, epoch, version) in current {
            if let Some(m) = st.keys.get_mut(&id) {
                m.status = KeyStatus::Previous;
            }
            st.dirty_keys.insert(id);
            created.push(self.create_key(
                p,
                &mut st,
                (class, epoch, version + 1),
                who,
                now,
                ops,
            )?);
        }
        Ok((st, created))
    }

    fn run_activate(
        &mut self,
        p: &PartitionId,
        now: u64,
        ops: &mut Ops,
    ) -> Result<PState, AppendError> {
        let mut st = self.load(p)?;
        if st.size() == 0 {
            let genesis = Genesis {
                origin: self.inner.origin.clone(),
            }
            .encode()
            .map_err(|e| AppendError::Storage(e.to_string()))?;
            let entry = NewEntry::internal(Kind::GENESIS, genesis)?;
            self.apply(p, &mut st, &entry, now, ops)?;
            let who = KeyActor::system("first key of scope");
            self.create_key(p, &mut st, (KeyClass::Resident, 0, 1), &who, now, ops)?;
        }
        if !st.active {
            st.active = true;
            let requested_ms = self
                .inner
                .db
                .cf_handle(SYS_CF)
                .and_then(|sys| self.inner.db.get_cf(&sys, registry_key(p)).ok().flatten())
                .and_then(|raw| decode::<PartitionRecord>(&raw))
                .map_or(now, |r| r.requested_ms);
            let rec = PartitionRecord {
                status: PartitionStatus::Active,
                requested_ms,
                activated_ms: now,
            };
            let bytes = encode(&rec).map_err(|e| AppendError::Storage(e.to_string()))?;
            ops.push((Target::Sys, registry_key(p), bytes));
        }
        Ok(st)
    }

    /// A claimed transmission id: new, or already stored (same digest: `AlreadyStored`,
    /// else `Conflict`), in the store or earlier in this batch.
    fn check_claim(
        &self,
        p: &PartitionId,
        c: &Claim,
        claimed: &HashMap<(PartitionId, String), TransmissionRecord>,
    ) -> Result<(), AppendError> {
        let existing = match claimed.get(&(p.clone(), c.id.clone())) {
            Some(r) => Some(r.clone()),
            None => {
                let cf = self
                    .inner
                    .db
                    .cf_handle(&partition_cf(p))
                    .ok_or_else(|| AppendError::UnknownPartition(p.to_string()))?;
                self.inner
                    .db
                    .get_cf(&cf, transmission_key(&c.id))
                    .map_err(|e| AppendError::Storage(e.to_string()))?
                    .map(|raw| {
                        decode::<TransmissionRecord>(&raw)
                            .ok_or_else(|| AppendError::BadState(p.to_string()))
                    })
                    .transpose()?
            }
        };
        match existing {
            None => Ok(()),
            Some(r) if r.digest == c.digest => Err(AppendError::AlreadyStored {
                first_seq: r.first_seq,
                count: r.count,
            }),
            Some(_) => Err(AppendError::Conflict),
        }
    }

    fn check_quarantine(&self, p: &PartitionId) -> Result<(), AppendError> {
        let q = self
            .inner
            .quarantined
            .lock()
            .map(|q| q.contains_key(p))
            .unwrap_or(true);
        if q {
            return Err(AppendError::Quarantined(p.to_string()));
        }
        Ok(())
    }

    fn process(&mut self, cmds: Vec<Command>) {
        if self.inner.poisoned.load(Ordering::SeqCst) {
            cmds.into_iter().for_each(Command::poisoned);
            return;
        }
        let mut batch = Batch {
            now: self.now(),
            ops: Vec::new(),
            staged: HashMap::new(),
            pending: Vec::new(),
            claimed: HashMap::new(),
        };
        for cmd in cmds {
            self.stage(cmd, &mut batch);
        }
        let Batch {
            ops,
            staged,
            pending,
            ..
        } = batch;
        match self.finish(staged, ops) {
            Ok(checkpoints) => pending.into_iter().for_each(|p| p.answer(&checkpoints)),
            Err(_) => pending.into_iter().for_each(Pending::poisoned),
        }
    }

    /// Stages one command into the batch; a command refused here is answered at once, one
    /// refused by its claim after the batch is durable.
    fn stage(&mut self, cmd: Command, batch: &mut Batch) {
        let mut local: Ops = Vec::new();
        // A partition staged earlier in this batch continues from its staged state.
        let resume = |states: &mut HashMap<PartitionId, PState>, b: &Batch, p: &PartitionId| {
            if let Some(s) = b.staged.get(p) {
                states.insert(p.clone(), s.clone());
            }
        };
        match cmd {
            Command::Append {
                partition,
                entries,
                opts,
                reply,
            } => {
                resume(&mut self.states, batch, &partition);
                self.stage_append(partition, &entries, *opts, reply, batch);
            }
            Command::Rotate {
                partition,
                who,
                reply,
            } => {
                resume(&mut self.states, batch, &partition);
                match self.run_rotate(&partition, &who, batch.now, &mut local) {
                    Ok((st, ids)) => {
                        batch.staged.insert(partition, st);
                        batch.ops.append(&mut local);
                        batch.pending.push(Pending::Rotate(reply, ids));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::Keys { op, reply } => {
                // `run` never groups these; answered alone if one gets here.
                self.process_key_op(*op, reply);
            }
            Command::Activate { partition, reply } => {
                resume(&mut self.states, batch, &partition);
                match self.run_activate(&partition, batch.now, &mut local) {
                    Ok(st) => {
                        batch.staged.insert(partition, st);
                        batch.ops.append(&mut local);
                        batch.pending.push(Pending::Activate(reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
        }
    }

    /// Stages an append: its claim checked against the store and this batch, its entries,
    /// replica state and transmission record.
    fn stage_append(
        &mut self,
        partition: PartitionId,
        entries: &[NewEntry],
        opts: AppendOptions,
        reply: Reply<AppendReceipt>,
        batch: &mut Batch,
    ) {
        let AppendOptions {
            claim,
            access,
            replica_state,
        } = opts;
        if let Some(c) = &claim
            && let Err(e) = self.check_claim(&partition, c, &batch.claimed)
        {
            // Answered after the batch is durable: the caller may read the claim's record
            // as soon as it hears "already stored".
            batch.pending.push(Pending::Refused(reply, e));
            return;
        }
        let mut local: Ops = Vec::new();
        let (st, done, access_seq) =
            match self.run_append(&partition, entries, access.as_ref(), batch.now, &mut local) {
                Ok(x) => x,
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            };
        if let Some(state) = replica_state {
            local.push((
                Target::Partition(partition.clone()),
                REPLICA_STATE_KEY.to_vec(),
                state,
            ));
        }
        if let (Some(c), Some(first), Some(last)) = (claim, done.first(), done.last()) {
            let rec = TransmissionRecord {
                digest: c.digest,
                first_seq: first.0,
                count: last.0 - first.0 + 1,
                tx_time_ms: batch.now,
                households: c.households,
            };
            match encode(&rec) {
                Ok(b) => local.push((
                    Target::Partition(partition.clone()),
                    transmission_key(&c.id),
                    b,
                )),
                Err(e) => {
                    let _ = reply.send(Err(AppendError::Storage(e.to_string())));
                    return;
                }
            }
            batch.claimed.insert((partition.clone(), c.id), rec);
        }
        batch.staged.insert(partition.clone(), st);
        batch.ops.append(&mut local);
        batch
            .pending
            .push(Pending::Append(reply, partition, done, access_seq));
    }

    /// Finishes each touched partition (key metadata, signed checkpoint, state record) and
    /// writes the batch. On success the staged states become the writer's; on failure the
    /// store is poisoned and `Poisoned` returned.
    fn finish(
        &mut self,
        mut staged: HashMap<PartitionId, PState>,
        mut ops: Ops,
    ) -> Result<HashMap<PartitionId, (u64, Hash, String)>, AppendError> {
        // Finish each touched partition: key metadata, signed checkpoint, state record.
        let mut checkpoints: HashMap<PartitionId, (u64, Hash, String)> = HashMap::new();
        let signer = self.inner.signer();
        for (p, st) in staged.iter_mut() {
            for id in std::mem::take(&mut st.dirty_keys) {
                if let Some(meta) = st.keys.get(&id) {
                    match encode(meta) {
                        Ok(b) => ops.push((Target::Sys, key_meta_key(p, id), b)),
                        Err(e) => {
                            tracing::error!(partition = %p, error = %e, "key metadata encoding")
                        }
                    }
                }
            }
            let size = st.size();
            let root = st.range.root();
            let note = signer.sign_checkpoint(p, size, root);
            let target = Target::Partition(p.clone());
            if size != st.committed_size {
                ops.push((
                    target.clone(),
                    checkpoint_key(size).to_vec(),
                    note.clone().into_bytes(),
                ));
            }
            let rec = StateRecord {
                size,
                chain: *st.chain.as_bytes(),
                last_tx: st.last_tx,
                frontier: st.range.hashes().iter().map(|h| *h.as_bytes()).collect(),
            };
            match encode(&rec) {
                Ok(b) => ops.push((target, STATE_KEY.to_vec(), b)),
                Err(e) => tracing::error!(partition = %p, error = %e, "state encoding"),
            }
            checkpoints.insert(p.clone(), (size, root, note));
        }
        match self.write(ops) {
            Ok(()) => {
                for (p, mut st) in staged {
                    st.committed_size = st.size();
                    self.inner.anchor.note(&p, st.committed_size);
                    self.states.insert(p, st);
                }
                Ok(checkpoints)
            }
            Err(e) => {
                self.inner.poisoned.store(true, Ordering::SeqCst);
                self.states.clear();
                tracing::error!(error = %e, "write failed; store poisoned");
                Err(AppendError::Poisoned)
            }
        }
    }

    fn write(&self, ops: Ops) -> Result<(), AppendError> {
        if ops.is_empty() {
            return Ok(());
        }
        let db = &self.inner.db;
        let mut batch = rocksdb::WriteBatch::default();
        let sys = db
            .cf_handle(SYS_CF)
            .ok_or_else(|| AppendError::Storage("system column family missing".into()))?;
        let mut handles = HashMap::new();
        let mut key_records = Vec::new();
        let mut key_deletes = Vec::new();
        for (target, key, value) in ops {
            match target {
                Target::KeyStore => key_records.push((key, value)),
                Target::KeyStoreDelete => key_deletes.push(key),
                Target::Sys => batch.put_cf(&sys, key, value),
                Target::SysDelete => batch.delete_cf(&sys, key),
                Target::Partition(ref p) | Target::PartitionDeleteRange(ref p) => {
                    if !handles.contains_key(p) {
                        let h = db
                            .cf_handle(&partition_cf(p))
                            .ok_or_else(|| AppendError::UnknownPartition(p.to_string()))?;
                        handles.insert(p.clone(), h);
                    }
                    let h = handles.get(p).ok_or(AppendError::WriterGone)?;
                    if matches!(target, Target::Partition(_)) {
                        batch.put_cf(h, key, value);
                    } else {
                        batch.delete_range_cf(h, key, value);
                    }
                }
            }
        }
        // Key material first: a crash between the two writes leaves an unused wrapped key,
        // never ciphertext whose key is missing. Deleted keys go in the same key-store
        // batch: their ciphertext stays, unreadable, which is what destroying them means.
        let faults = self.inner.options.faults.as_deref();
        let injected = |what: &str| {
            AppendError::Storage(format!("{what}: No space left on device (injected fault)"))
        };
        if !(key_records.is_empty() && key_deletes.is_empty())
            && faults.is_some_and(|f| super::FaultPlan::fails(&f.key_writes_left))
        {
            return Err(injected("key store write"));
        }
        self.inner.keyring.commit(key_records, key_deletes)?;
        if faults.is_some_and(|f| super::FaultPlan::fails(&f.data_writes_left)) {
            return Err(injected("data write"));
        }
        db.write_opt(batch, &sync_write())
            .map_err(|e| AppendError::Storage(e.to_string()))
    }
}
