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
mod entry;
mod error;
mod keyops;

pub use entry::{AppendOptions, AppendReceipt, Claim, IndexKind, NewEntry};
pub use error::{AppendError, StorageError};

pub use keyops::{DestroyScope, ReencryptStep};
pub(crate) use keyops::{KeyOp, KeyOutcome};

use super::Inner;
use super::keyring::KeyError;
use super::records::{
    KeyMeta, KeyStatus, LOWEST_STORED_LEVEL, PartitionRecord, PartitionStatus, REPLICA_STATE_KEY,
    STATE_KEY, StateRecord, TransmissionRecord, checkpoint_key, decode, encode, entry_key,
    index_key, key_meta_key, key_meta_prefix, node_key, registry_key, shred_key, transmission_key,
};
use crate::crypto::{Dek, RngError, random_nonce};
use crate::ledger::envelope::{NONCE_LEN, SALT_LEN, TAG_LEN};
use crate::ledger::hash::{Hash, chain_next, commitment};
use crate::ledger::header::{Class, Header, Kind, PartitionId};
use crate::ledger::merkle::CompactRange;
use crate::ledger::payload::{AccessRecord, Genesis, KeyClass, KeyEvent, KeyEventKind};

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
    /// The partition moved to another cell: no write of it from here on (`placement`).
    MoveOut {
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
            Command::Activate { .. }
            | Command::MoveOut { .. }
            | Command::Rotate { .. }
            | Command::Keys { .. } => 64,
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

    /// Marks `partition` moved to another cell once every append queued before is durable;
    /// the writer refuses its writes from then on (`NotActive`).
    pub(crate) fn move_out(&self, partition: PartitionId) -> Result<(), AppendError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::MoveOut { partition, reply })?;
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
    /// Moved to another cell: never written here again.
    moved: bool,
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
    /// Whether `p` (this state's partition) takes writes here.
    fn writable(&self, p: &PartitionId) -> Result<(), AppendError> {
        match (self.active, self.moved) {
            (true, _) => Ok(()),
            (false, true) => Err(AppendError::Moved(p.clone())),
            (false, false) => Err(AppendError::NotActive(p.clone())),
        }
    }

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
            Command::Activate { reply, .. } | Command::MoveOut { reply, .. } => {
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
