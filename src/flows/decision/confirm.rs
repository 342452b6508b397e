//! The hub's confirmation (4-③④): the 継続世帯確定結果 and the 高額該当回数引継結果 of each
//! decision to continue, 追加 rows for late 支給, 取消 rows after a reversal, A→B→C chains.

use super::*;

/// What a confirmation run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConfirmReport {
    pub prefecture: String,
    /// `<B>:<decision seq>` of each household confirmed now, with its carried count.
    pub confirmed: Vec<(String, u64)>,
    /// `<B>:<decision seq>` of each confirmed household whose late 支給 months were added
    /// now (追加), with the months added.
    pub added: Vec<(String, Vec<String>)>,
    /// `<B>:<decision seq>` of each household whose carried months were withdrawn now
    /// (取消: its decision was corrected to 継続しない).
    pub cancelled: Vec<String>,
    /// Decisions to continue confirmed by an earlier run.
    pub already_confirmed: u64,
    /// Candidates still without a decision.
    pub undecided: u64,
}

/// 4-③④: for every move of the prefecture, brings what B was told in line with its latest
/// decision: a decision "continue" without a confirmation gets the confirmation and a 新規
/// row (or a 追加 row of what B does not hold yet, after a reversal and a new "continue");
/// a confirmed one gets a 追加 row when 支給 months of A arrived since (within
/// the prefecture's `late_shikyu_months` of the 異動月, counted to the date of `now`); a decision
/// "not_continue" after months were handed
/// over gets a 取消 row. A's months include those carried into A's household by an earlier
/// move (A→B→C chains). Every hand-over is a 提供記録 in A; reruns add nothing.
pub fn confirm(
    store: &Store,
    scope: &PrefectureScope,
    who: &Importer,
    now: &str,
) -> Result<ConfirmReport, DecisionError> {
    confirm_with(store, scope, &Rules::default(), who, now)
}

/// [`confirm`] under a rules file (the prefecture's section: how long late 支給 are
/// carried).
pub fn confirm_with(
    store: &Store,
    scope: &PrefectureScope,
    rules: &Rules,
    who: &Importer,
    now: &str,
) -> Result<ConfirmReport, DecisionError> {
    let late_months = rules
        .for_prefecture(scope.prefecture())
        .late_shikyu_months();
    let mut report = ConfirmReport {
        prefecture: scope.prefecture().to_owned(),
        ..ConfirmReport::default()
    };
    let chains = Chains::default();
    let purpose = "continuity_confirm_scan";
    let kinds = [Kind::CONTINUITY_CANDIDATE, Kind::CONTINUITY_DECISION];
    super::prefecture::each_partition(store, scope, who, purpose, &kinds, |b, states| {
        for s in &states {
            let Some((decision_seq, d)) = &s.decision else {
                report.undecided += 1;
                continue;
            };
            let Ok(a) = PartitionId::parse(&s.candidate.old_hokensha_no) else {
                continue;
            };
            let Some(pair) = scope.pair(&a, b) else {
                continue;
            };
            let ctx = Row {
                store,
                pair: &pair,
                state: s,
                decision_seq: *decision_seq,
                who,
                now,
                late_months,
                chains: &chains,
            };
            if d.decision != "continue" {
                if !s.held().is_empty() && ctx.cancel()? {
                    report.cancelled.push(format!("{b}:{decision_seq}"));
                }
                continue;
            }
            if s.confirmation.is_some() {
                report.already_confirmed += 1;
                if let Some(added) = ctx.late()? {
                    report.added.push((format!("{b}:{decision_seq}"), added));
                }
                continue;
            }
            match ctx.confirm()? {
                Some(count) => report
                    .confirmed
                    .push((format!("{b}:{decision_seq}"), count)),
                None => report.already_confirmed += 1,
            }
        }
        // B's rows changed: a chain read of B later in the run (B as someone's A) reads
        // it again.
        chains.forget(b);
        Ok(())
    })?;
    Ok(report)
}

/// The moves into each partition as one confirmation run read them for A→B→C chains: each
/// partition's flow-4 entries are read (and the read recorded) once per run, not once per
/// household, and read again after the run appends rows to that partition.
#[derive(Default)]
struct Chains(std::cell::RefCell<HashMap<PartitionId, std::rc::Rc<Vec<CandidateState>>>>);

impl Chains {
    fn forget(&self, p: &PartitionId) {
        self.0.borrow_mut().remove(p);
    }

    /// The moves into `a`'s partition, read and recorded in it on first use.
    fn of(
        &self,
        store: &Store,
        a: &PartitionScope,
        who: &Importer,
    ) -> Result<std::rc::Rc<Vec<CandidateState>>, DecisionError> {
        if let Some(known) = self.0.borrow().get(a.partition()) {
            return Ok(std::rc::Rc::clone(known));
        }
        let moves = candidates(store, a)?;
        let first = moves.iter().map(|s| s.seq).min();
        let last = moves
            .iter()
            .flat_map(|s| s.rows.last().map(|(seq, _)| *seq))
            .chain(moves.iter().map(CandidateState::latest_seq))
            .max();
        if let Some(range) = first.zip(last) {
            let kinds = vec![
                Kind::CONTINUITY_CANDIDATE.code(),
                Kind::CONTINUITY_CARRY_OVER.code(),
            ];
            record_access(
                store,
                a.partition(),
                who,
                "continuity_chain_read",
                kinds,
                range,
            )?;
        }
        let moves = std::rc::Rc::new(moves);
        self.0
            .borrow_mut()
            .insert(a.partition().clone(), std::rc::Rc::clone(&moves));
        Ok(moves)
    }
}

/// One move's carry-over step: B, A and the move's state under its latest decision.
struct Row<'a> {
    store: &'a Store,
    pair: &'a crate::crypto::PrefecturePair,
    state: &'a CandidateState,
    decision_seq: u64,
    who: &'a Importer,
    now: &'a str,
    late_months: i32,
    chains: &'a Chains,
}

impl Row<'_> {
    fn b(&self) -> &PartitionId {
        self.pair.to_scope().partition()
    }

    fn a(&self) -> &PartitionId {
        self.pair.from_scope().partition()
    }

    /// The months to carry from A now (docs/domain.md §5): A's 高額該当 months of the old
    /// household, with the months an earlier move carried into it, in the window of the
    /// 異動月. Also the seqs of A's records read, for the 提供記録.
    fn carried(&self) -> Result<(Vec<String>, Vec<u64>), DecisionError> {
        let c = &self.state.candidate;
        let (mut months, a_seqs) = self.kogaku_months()?;
        months.extend(self.held_from_earlier_move()?);
        let ido = parse_date(&c.ido_date).map(CareMonth::of_days);
        let carried = ido.map_or_else(Vec::new, |m| carried_months(&months, m, Move::Continuing));
        Ok((carried.iter().map(ToString::to_string).collect(), a_seqs))
    }

    /// A's 高額該当 months of the old household and the seqs of the records read (recorded
    /// in A, handed over or not).
    fn kogaku_months(&self) -> Result<(Vec<KogakuMonth>, Vec<u64>), DecisionError> {
        let a = self.a();
        let a_seqs = self.store.index_seqs(
            a,
            IndexKind::Kogaku,
            self.state.candidate.old_setai_no.as_bytes(),
        )?;
        let mut months: Vec<KogakuMonth> = Vec::new();
        for seq in &a_seqs {
            let e = self.store.read_entry(self.pair.from_scope(), *seq)?;
            let r: KogakuRecord =
                serde_json::from_slice(&e.payload).map_err(|_| DecisionError::Payload {
                    partition: a.clone(),
                    seq: *seq,
                })?;
            months.extend(r.months());
        }
        let range = a_seqs.first().zip(a_seqs.last());
        if let Some((&first, &last)) = range {
            let kinds = vec![Kind::KOGAKU_RECORD.code()];
            record_access(
                self.store,
                a,
                self.who,
                "continuity_carry_read",
                kinds,
                (first, last),
            )?;
        }
        Ok((months, a_seqs))
    }

    /// A→B→C: what A's household holds from its own earlier move into A counts like A's own
    /// months. Reading A's flow-4 entries for it is recorded in A (once per run).
    fn held_from_earlier_move(&self) -> Result<Vec<KogakuMonth>, DecisionError> {
        let earlier_moves = self
            .chains
            .of(self.store, self.pair.from_scope(), self.who)?;
        let old_setai = &self.state.candidate.old_setai_no;
        Ok(earlier_moves
            .iter()
            .filter(|s| &s.candidate.new_setai_no == old_setai)
            .flat_map(|s| s.held())
            .filter_map(|m| {
                Some(KogakuMonth {
                    month: CareMonth::parse(&m)?,
                    shikyu: crate::domain::tasukai::Shikyu::Household,
                    low_income: false,
                })
            })
            .collect())
    }

    /// The 提供記録 in A of a hand-over to B (written before B's row).
    fn provided(&self, a_seqs: &[u64]) -> Result<(), DecisionError> {
        let (a, b) = (self.a(), self.b());
        let provision = ProvisionRecord {
            provider: format!("{}/{a}", self.store.origin()),
            recipient: format!("{}/{b}", self.store.origin()),
            items: vec!["高額該当回数".into(), "高額該当年月".into()],
            nondisclosure: false,
            purpose: "kogaku_carry_over".into(),
            first_seq: a_seqs.first().copied().unwrap_or(0),
            count: a_seqs.len() as u64,
            checkpoint_size: self.store.size(a)?,
            request_id: self.who.request_id.clone(),
        };
        let payload = provision.encode().map_err(DecisionError::Record)?;
        self.store.append(
            a,
            vec![NewEntry::new(
                Kind::PROVISION_RECORD,
                crate::store::today_days(),
                None,
                payload,
            )?],
        )?;
        Ok(())
    }

    fn row(&self, kind: &str, months: Vec<String>, count: u64) -> CarryOver {
        let c = &self.state.candidate;
        CarryOver {
            schema: CARRY_OVER_SCHEMA.to_owned(),
            decision_id: format!("{}:{}", self.b(), self.decision_seq),
            old_hokensha_no: self.a().to_string(),
            old_setai_no: c.old_setai_no.clone(),
            new_hokensha_no: self.b().to_string(),
            new_setai_no: c.new_setai_no.clone(),
            ido_date: c.ido_date.clone(),
            months,
            count,
            confirmed_at: self.now.to_owned(),
            row_kind: kind.to_owned(),
        }
    }

    /// Appends `entries` to B under `claim`; `false` if the claim was already made.
    fn append(&self, entries: Vec<NewEntry>, claim: String) -> Result<bool, DecisionError> {
        if self.store.transmission(self.b(), &claim)?.is_some() {
            return Ok(false);
        }
        let opts = AppendOptions {
            claim: Some(Claim {
                id: claim,
                digest: [0; 32],
                households: vec![self.state.candidate.new_setai_no.clone()],
            }),
            access: Some(self.who.access(
                "continuity_confirm",
                vec![Kind::CONTINUITY_DECISION.code()],
                self.decision_seq,
                1,
            )),
            replica_state: None,
        };
        match self.store.append_with(self.b(), entries, opts) {
            Ok(_) => Ok(true),
            Err(AppendError::AlreadyStored { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn carry_entry(&self, row: &CarryOver) -> Result<NewEntry, DecisionError> {
        Ok(NewEntry::new(
            Kind::CONTINUITY_CARRY_OVER,
            crate::store::today_days(),
            Some(self.decision_seq),
            json(row)?.to_vec(),
        )?)
    }

    /// The confirmation of a "continue" and its row: 新規, or 追加 of what B does not hold
    /// after a reversal. Returns the count B holds, `None` if an earlier run confirmed it.
    fn confirm(&self) -> Result<Option<u64>, DecisionError> {
        let claim = format!("confirm:{}", self.decision_seq);
        if self.store.transmission(self.b(), &claim)?.is_some() {
            return Ok(None);
        }
        let (carried, a_seqs) = self.carried()?;
        let held = self.state.held();
        let kind = if held.is_empty() { ROW_NEW } else { ROW_ADD };
        let months: Vec<String> = carried
            .iter()
            .filter(|m| !held.contains(*m))
            .cloned()
            .collect();
        let count = (held.len() + months.len()) as u64;
        self.provided(&a_seqs)?;
        let confirmation = Confirmation {
            schema: CONFIRMATION_SCHEMA.to_owned(),
            candidate_seq: self.state.seq,
            decision_seq: self.decision_seq,
            confirmed_at: self.now.to_owned(),
        };
        let entries = vec![
            NewEntry::new(
                Kind::CONTINUITY_CONFIRMATION,
                crate::store::today_days(),
                Some(self.decision_seq),
                json(&confirmation)?.to_vec(),
            )?,
            self.carry_entry(&self.row(kind, months, count))?,
        ];
        Ok(self.append(entries, claim)?.then_some(count))
    }

    /// A 追加 row of A's months that arrived after B was told (late 支給), while the move's
    /// 異動月 is within the prefecture's `late_shikyu_months`. Returns the months added.
    fn late(&self) -> Result<Option<Vec<String>>, DecisionError> {
        let Some(ido) = parse_date(&self.state.candidate.ido_date) else {
            return Ok(None);
        };
        // `now` dates the run (the confirmation time it writes); the store's clock otherwise.
        let today = CareMonth::of_days(
            self.now
                .get(..10)
                .and_then(parse_date)
                .unwrap_or_else(crate::store::today_days),
        );
        let recent = CareMonth::of_days(ido)
            .plus(self.late_months)
            .is_some_and(|end| today <= end);
        if !recent {
            return Ok(None);
        }
        let (carried, a_seqs) = self.carried()?;
        let held = self.state.held();
        let missing: Vec<String> = carried.into_iter().filter(|m| !held.contains(m)).collect();
        if missing.is_empty() {
            return Ok(None);
        }
        let claim = format!("carry-add:{}:{}", self.decision_seq, missing.join(";"));
        if self.store.transmission(self.b(), &claim)?.is_some() {
            return Ok(None);
        }
        self.provided(&a_seqs)?;
        let count = (held.len() + missing.len()) as u64;
        let row = self.row(ROW_ADD, missing.clone(), count);
        Ok(self
            .append(vec![self.carry_entry(&row)?], claim)?
            .then_some(missing))
    }

    /// A 取消 row withdrawing every month B holds for the move (the latest decision is
    /// "not_continue"). Returns whether it was written now.
    fn cancel(&self) -> Result<bool, DecisionError> {
        let months: Vec<String> = self.state.held().into_iter().collect();
        let row = self.row(ROW_CANCEL, months, 0);
        let claim = format!("carry-cancel:{}", self.decision_seq);
        self.append(vec![self.carry_entry(&row)?], claim)
    }
}
