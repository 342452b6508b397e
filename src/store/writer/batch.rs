//! The writer's group commit: one batch of commands staged, finished (key metadata, signed
//! checkpoints, states), written with `sync = true`, then answered.

use super::*;
use crate::store::engine::{Op, Space};

impl Writer {
    pub(super) fn process(&mut self, cmds: Vec<Command>) {
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
        metrics::histogram!(crate::telemetry::BATCH_COMMANDS).record(cmds.len() as f64);
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
    pub(super) fn stage(&mut self, cmd: Command, batch: &mut Batch) {
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
                let staged = self.run_activate(&partition, batch.now, &mut local);
                stage_done(batch, partition, staged, &mut local, reply);
            }
            Command::MoveOut { partition, reply } => {
                resume(&mut self.states, batch, &partition);
                let staged = self.run_move_out(&partition, &mut local);
                stage_done(batch, partition, staged, &mut local, reply);
            }
        }
    }

    /// Stages an append: its claim checked against the store and this batch, its entries,
    /// replica state and transmission record.
    pub(super) fn stage_append(
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
                    let _ = reply.send(Err(AppendError::storage(e)));
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
    pub(super) fn finish(
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
                            tracing::error!(partition = %p, error = %crate::error::report(&e), "key metadata encoding")
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
                Err(e) => {
                    tracing::error!(partition = %p, error = %crate::error::report(&e), "state encoding")
                }
            }
            checkpoints.insert(p.clone(), (size, root, note));
        }
        let appended: u64 = staged
            .values()
            .map(|st| st.size() - st.committed_size)
            .sum();
        let started = std::time::Instant::now();
        match self.write(ops) {
            Ok(()) => {
                metrics::histogram!(crate::telemetry::COMMIT_SECONDS)
                    .record(started.elapsed().as_secs_f64());
                metrics::counter!(crate::telemetry::COMMITS).increment(1);
                metrics::counter!(crate::telemetry::APPENDED_ENTRIES).increment(appended);
                for (p, mut st) in staged {
                    st.committed_size = st.size();
                    self.inner.anchor.note(&p, st.committed_size);
                    self.states.insert(p, st);
                }
                Ok(checkpoints)
            }
            Err(e) => {
                self.inner.poison();
                self.states.clear();
                tracing::error!(error = %crate::error::report(&e), "write failed; store poisoned");
                Err(AppendError::Poisoned)
            }
        }
    }

    pub(super) fn write(&self, ops: Ops) -> Result<(), AppendError> {
        if ops.is_empty() {
            return Ok(());
        }
        let engine = &self.inner.engine;
        let mut data = Vec::with_capacity(ops.len());
        let mut key_records = Vec::new();
        let mut key_deletes = Vec::new();
        let mut checked = std::collections::HashSet::new();
        for (target, key, value) in ops {
            // A partition without its space is refused before anything is written.
            if let Target::Partition(p) | Target::PartitionDeleteRange(p) = &target
                && !checked.contains(p)
            {
                if !engine.has_space(p) {
                    return Err(AppendError::UnknownPartition(p.clone()));
                }
                checked.insert(p.clone());
            }
            let op = match target {
                Target::KeyStore => {
                    key_records.push((key, value));
                    continue;
                }
                Target::KeyStoreDelete => {
                    key_deletes.push(key);
                    continue;
                }
                Target::Sys => Op::Put {
                    space: Space::System,
                    key,
                    value,
                },
                Target::SysDelete => Op::Delete {
                    space: Space::System,
                    key,
                },
                Target::Partition(p) => Op::Put {
                    space: Space::Partition(p),
                    key,
                    value,
                },
                Target::PartitionDeleteRange(p) => Op::DeleteRange {
                    space: Space::Partition(p),
                    from: key,
                    to: value,
                },
            };
            data.push(op);
        }
        // Key material first: a crash between the two writes leaves an unused wrapped key,
        // never ciphertext whose key is missing. Deleted keys go in the same key-store
        // batch: their ciphertext stays, unreadable, which is what destroying them means.
        use crate::store::hooks::Write;
        let options = &self.inner.options;
        let injected = |what: &'static str| AppendError::Storage(StorageError::Injected(what));
        if !(key_records.is_empty() && key_deletes.is_empty())
            && options.injected_fault(Write::KeyStore)
        {
            return Err(injected("key store write"));
        }
        self.inner.keyring.commit(key_records, key_deletes)?;
        if options.injected_fault(Write::Data) {
            return Err(injected("data write"));
        }
        engine.commit(data).map_err(AppendError::storage)
    }
}

/// Stages a partition state change that is answered `Ok(())` once the batch is durable
/// (activation, a move out), or answers its refusal now.
fn stage_done(
    batch: &mut Batch,
    partition: PartitionId,
    staged: Result<PState, AppendError>,
    local: &mut Ops,
    reply: Reply<()>,
) {
    match staged {
        Ok(st) => {
            batch.staged.insert(partition, st);
            batch.ops.append(local);
            batch.pending.push(Pending::Activate(reply));
        }
        Err(e) => {
            let _ = reply.send(Err(e));
        }
    }
}
