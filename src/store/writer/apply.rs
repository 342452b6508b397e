//! The writer's per-partition work inside a batch: loading a partition's state, building
//! and sealing entries, keys for them, appends, rotations, activations, claims.

use super::*;
use crate::store::engine::Space;

impl Writer {
    pub(super) fn load(&mut self, p: &PartitionId) -> Result<PState, AppendError> {
        if let Some(s) = self.states.get(p) {
            return Ok(s.clone());
        }
        let engine = &self.inner.engine;
        let storage = |e: crate::store::EngineError| AppendError::storage(e);
        if !engine.has_space(p) {
            return Err(AppendError::UnknownPartition(p.clone()));
        }
        let space = Space::Partition(p.clone());
        let record: Option<PartitionRecord> = engine
            .get(&Space::System, &registry_key(p))
            .map_err(storage)?
            .map(|raw| decode(&raw).ok_or_else(|| AppendError::BadState(p.to_string())))
            .transpose()?;
        let Some(record) = record else {
            return Err(AppendError::UnknownPartition(p.clone()));
        };
        let (chain, last_tx, range) = match engine.get(&space, STATE_KEY).map_err(storage)? {
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
        for item in engine
            .scan_prefix(&Space::System, &prefix)
            .map_err(storage)?
        {
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
        let shredded = engine
            .get(&Space::System, &shred_key(p))
            .map_err(storage)?
            .is_some();
        let state = PState {
            shredded,
            active: record.status == PartitionStatus::Active,
            moved: record.status == PartitionStatus::Moved,
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
    pub(super) fn apply(
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
            .map_err(|e| AppendError::BadState(crate::error::report(&e)))?;
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
    pub(super) fn reserve_key(
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
            return Err(AppendError::Shredded(p.clone()));
        }
        if st.keys.values().any(|m| {
            m.class == class.code() && m.epoch == epoch && m.status == KeyStatus::Destroyed
        }) {
            return Err(AppendError::ScopeDestroyed {
                partition: p.clone(),
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
    pub(super) fn create_key(
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

    pub(super) fn run_append(
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
        st.writable(p)?;
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
            let payload = rec.encode().map_err(AppendError::Payload)?;
            let day = i32::try_from(now / 86_400_000).unwrap_or(0);
            let entry = NewEntry::new(Kind::ACCESS_RECORD, day, None, payload)?;
            access_seq = Some(self.apply(p, &mut st, &entry, now, ops)?.0);
        }
        Ok((st, done, access_seq))
    }

    /// Marks every current DEK of `p` previous and creates the next version of its scope,
    /// each with a key event naming who and why.
    pub(super) fn run_rotate(
        &mut self,
        p: &PartitionId,
        who: &KeyActor,
        now: u64,
        ops: &mut Ops,
    ) -> Result<(PState, Vec<u32>), AppendError> {
        self.check_quarantine(p)?;
        let mut st = self.load(p)?;
        st.writable(p)?;
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

    pub(super) fn run_activate(
        &mut self,
        p: &PartitionId,
        now: u64,
        ops: &mut Ops,
    ) -> Result<PState, AppendError> {
        let mut st = self.load(p)?;
        if st.moved {
            return Err(AppendError::Moved(p.clone()));
        }
        if st.size() == 0 {
            let genesis = Genesis {
                origin: self.inner.origin.clone(),
            }
            .encode()
            .map_err(AppendError::Payload)?;
            let entry = NewEntry::internal(Kind::GENESIS, genesis)?;
            self.apply(p, &mut st, &entry, now, ops)?;
            let who = KeyActor::system("first key of scope");
            self.create_key(p, &mut st, (KeyClass::Resident, 0, 1), &who, now, ops)?;
        }
        if !st.active {
            st.active = true;
            let requested_ms = self
                .inner
                .engine
                .get(&Space::System, &registry_key(p))
                .ok()
                .flatten()
                .and_then(|raw| decode::<PartitionRecord>(&raw))
                .map_or(now, |r| r.requested_ms);
            let rec = PartitionRecord {
                status: PartitionStatus::Active,
                requested_ms,
                activated_ms: now,
            };
            let bytes = encode(&rec).map_err(AppendError::storage)?;
            ops.push((Target::Sys, registry_key(p), bytes));
        }
        Ok(st)
    }

    /// Marks `p` moved to another cell: inactive here from this batch on (its appends are
    /// refused `NotActive`), its log kept as it is.
    pub(super) fn run_move_out(
        &mut self,
        p: &PartitionId,
        ops: &mut Ops,
    ) -> Result<PState, AppendError> {
        let mut st = self.load(p)?;
        st.writable(p)?;
        st.active = false;
        st.moved = true;
        let raw = self
            .inner
            .engine
            .get(&Space::System, &registry_key(p))
            .map_err(AppendError::storage)?
            .ok_or_else(|| AppendError::UnknownPartition(p.clone()))?;
        let mut rec: PartitionRecord =
            decode(&raw).ok_or_else(|| AppendError::BadState(p.to_string()))?;
        rec.status = PartitionStatus::Moved;
        let bytes = encode(&rec).map_err(AppendError::storage)?;
        ops.push((Target::Sys, registry_key(p), bytes));
        Ok(st)
    }

    /// A claimed transmission id: new, or already stored (same digest: `AlreadyStored`,
    /// else `Conflict`), in the store or earlier in this batch.
    pub(super) fn check_claim(
        &self,
        p: &PartitionId,
        c: &Claim,
        claimed: &HashMap<(PartitionId, String), TransmissionRecord>,
    ) -> Result<(), AppendError> {
        let existing = match claimed.get(&(p.clone(), c.id.clone())) {
            Some(r) => Some(r.clone()),
            None => self
                .inner
                .engine
                .get(&Space::Partition(p.clone()), &transmission_key(&c.id))
                .map_err(|e| match e {
                    crate::store::EngineError::NoSpace(p) => AppendError::UnknownPartition(p),
                    e => AppendError::storage(e),
                })?
                .map(|raw| {
                    decode::<TransmissionRecord>(&raw)
                        .ok_or_else(|| AppendError::BadState(p.to_string()))
                })
                .transpose()?,
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

    pub(super) fn check_quarantine(&self, p: &PartitionId) -> Result<(), AppendError> {
        let q = self
            .inner
            .quarantined
            .lock()
            .map(|q| q.contains_key(p))
            .unwrap_or(true);
        if q {
            return Err(AppendError::Quarantined(p.clone()));
        }
        Ok(())
    }
}
