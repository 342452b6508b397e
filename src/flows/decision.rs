//! Flow 4, steps 4-①…⑥: B's 確定指示 on its candidates, the hub's confirmation with the
//! 高額該当回数 carry-over, and B's results and 連携ファイル. Everything is an entry: a decision
//! refers to its candidate, a correction is a newer decision on the same candidate, and a
//! confirmation and its carry-over refer to the decision they confirm. A's 高額該当 months
//! reach B only here, after B decided "continue", and the hand-over is a 提供記録 in A.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::crypto::{PartitionScope, PrefectureScope};
use crate::domain::continuity::Rules;
use crate::domain::tasukai::{CareMonth, KogakuMonth, Move, carried_months};
use crate::domain::text::parse_date;
use crate::flows::continuity::Candidate;
use crate::flows::import::{Importer, append_record};
use crate::flows::kogaku::KogakuRecord;
use crate::ledger::payload::ProvisionRecord;
use crate::ledger::{Kind, PartitionId};
use crate::store::{
    AppendError, AppendOptions, Claim, IndexKind, KeyError, NewEntry, ReadError, Store,
};

pub const DECISION_SCHEMA: &str = "continuity-decision-v1";
pub const CONFIRMATION_SCHEMA: &str = "continuity-confirmation-v1";
pub const CARRY_OVER_SCHEMA: &str = "kogaku-carry-over-v1";
pub const ACK_SCHEMA: &str = "continuity-anomaly-ack-v1";

/// B's 確定指示 (kind 0x0031, `ref_seq` = the candidate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub schema: String,
    pub candidate_seq: u64,
    /// `continue` or `not_continue`.
    pub decision: String,
    pub reason: Option<String>,
    /// Who decided: the clerk's display name (their credential's label at the terminal),
    /// or what the municipality's system sent as `operator`.
    pub operator: String,
    /// The credential that decided (absent on decisions made before named clerks).
    #[serde(default)]
    pub credential: Option<String>,
}

/// B's acknowledgement of a move's anomalies (kind 0x0034, `ref_seq` = the version whose
/// anomalies it covers): a person looked at the gap, overlap, reset 資格取得日 or ambiguous
/// match and wrote down what they found. Apart from the decision: it resolves the anomaly,
/// not the move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledgement {
    pub schema: String,
    /// The version acknowledged (the latest when it was written).
    pub candidate_seq: u64,
    /// The anomalies of that version it covers.
    pub anomalies: Vec<String>,
    /// What the person found or did (required).
    pub note: String,
    pub operator: String,
    /// The credential that acknowledged.
    #[serde(default)]
    pub credential: Option<String>,
}

/// The hub's 継続世帯確定結果 (kind 0x0032, `ref_seq` = the decision).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    pub schema: String,
    pub candidate_seq: u64,
    pub decision_seq: u64,
    pub confirmed_at: String,
}

/// The 高額該当回数引継結果 (kind 0x0033, `ref_seq` = the decision): docs/domain.md §9.5's row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarryOver {
    pub schema: String,
    /// `<B partition>:<decision seq>`.
    pub decision_id: String,
    pub old_hokensha_no: String,
    pub old_setai_no: String,
    pub new_hokensha_no: String,
    pub new_setai_no: String,
    pub ido_date: String,
    /// The months this row hands over (`new`, `add`) or withdraws (`cancel`), ascending: A's
    /// counting months from 2018-04 within 異動月 − 11 … 異動月 (docs/domain.md §5, §9.5).
    pub months: Vec<String>,
    /// The months B holds for the move after this row.
    pub count: u64,
    pub confirmed_at: String,
    /// `new` (新規: a confirmed move's months), `add` (追加: months whose 支給 was decided
    /// after an earlier row) or `cancel` (取消: the decision was corrected to 継続しない).
    /// Rows written before row kinds are `new`.
    #[serde(default = "row_new")]
    pub row_kind: String,
}

fn row_new() -> String {
    ROW_NEW.to_owned()
}

/// Row kinds of the 連携ファイル (hikitsugi-v2).
pub const ROW_NEW: &str = "new";
pub const ROW_ADD: &str = "add";
pub const ROW_CANCEL: &str = "cancel";

/// A move's candidate with what followed it. A move has one state whatever the number of
/// its versions: `seq` is its first version (the move's handle in the API and on the
/// terminal), `candidate` its latest, and decisions on any version belong to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CandidateState {
    pub seq: u64,
    pub candidate: Candidate,
    /// The seq of every version, oldest first (one entry for a move seen once).
    pub versions: Vec<u64>,
    /// The latest decision (a correction replaces an earlier one), with its seq.
    pub decision: Option<(u64, Decision)>,
    /// The confirmation and carry-over of that latest decision.
    pub confirmation: Option<(u64, Confirmation)>,
    pub carry_over: Option<(u64, CarryOver)>,
    /// Every decision, oldest first (the history of corrections).
    pub decisions: Vec<(u64, Decision)>,
    /// Every carry-over row of the move (新規, 追加, 取消), in log order, whatever decision
    /// it followed: what B was told.
    pub rows: Vec<(u64, CarryOver)>,
    /// Every acknowledgement of the move's anomalies, oldest first.
    pub acknowledgements: Vec<(u64, Acknowledgement)>,
    /// The version the current anomalies stand from: the latest one that changed one of
    /// `ANOMALY_FIELDS` (or the first). Only an acknowledgement of it or a later version
    /// covers them.
    pub anomalies_since: u64,
}

impl CandidateState {
    /// The months B holds for the move: every `new` and `add` row's months, less those a
    /// later `cancel` withdrew.
    pub fn held(&self) -> std::collections::BTreeSet<String> {
        let mut held = std::collections::BTreeSet::new();
        for (_, r) in &self.rows {
            if r.row_kind == ROW_CANCEL {
                for m in &r.months {
                    held.remove(m);
                }
            } else {
                held.extend(r.months.iter().cloned());
            }
        }
        held
    }

    /// The latest version's anomalies that no acknowledgement covers: what a person must
    /// still look at.
    pub fn open_anomalies(&self) -> Vec<String> {
        let covered: std::collections::BTreeSet<&String> = self
            .acknowledgements
            .iter()
            .filter(|(_, a)| a.candidate_seq >= self.anomalies_since)
            .flat_map(|(_, a)| a.anomalies.iter())
            .collect();
        self.candidate
            .anomalies
            .iter()
            .filter(|a| !covered.contains(a))
            .cloned()
            .collect()
    }

    /// The seq of the latest version.
    pub fn latest_seq(&self) -> u64 {
        self.versions.last().copied().unwrap_or(self.seq)
    }

    /// Whether a later version changed the suggestion after the latest decision was made:
    /// the clerk should look again.
    pub fn suggestion_changed_since_decision(&self) -> bool {
        self.decision.as_ref().is_some_and(|(d, _)| {
            self.latest_seq() > *d && self.candidate.changes.iter().any(|c| c == "suggestion")
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecisionError {
    #[error("no candidate at seq {0}")]
    NoCandidate(u64),
    #[error("decision must be continue or not_continue")]
    BadDecision,
    #[error("{0} is too long")]
    TooLong(&'static str),
    #[error("operator is required")]
    NoOperator,
    #[error("a note is required")]
    NoNote,
    #[error("no candidate was selected")]
    NoneSelected,
    #[error("candidate {0} has no anomaly left to acknowledge")]
    NothingToAcknowledge(u64),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("reading the partition registry")]
    Registry(#[source] crate::store::ProvisionError),
    #[error("partition {partition} seq {seq}: payload does not decode")]
    Payload { partition: String, seq: u64 },
    #[error("encoding a record")]
    Record(#[source] crate::ledger::payload::PayloadError),
    #[error("encoding a payload")]
    Json(#[source] serde_json::Error),
}

fn json<T: Serialize>(v: &T) -> Result<zeroize::Zeroizing<Vec<u8>>, DecisionError> {
    serde_json::to_vec(v)
        .map(zeroize::Zeroizing::new)
        .map_err(DecisionError::Json)
}

/// The kinds that make up a move's state in B.
pub const FLOW4_KINDS: [Kind; 5] = [
    Kind::CONTINUITY_CANDIDATE,
    Kind::CONTINUITY_DECISION,
    Kind::CONTINUITY_CONFIRMATION,
    Kind::CONTINUITY_CARRY_OVER,
    Kind::CONTINUITY_ANOMALY_ACK,
];

/// Every candidate of the scope's partition with its decisions, confirmation and carry-over,
/// in seq order. Reads sealed entries: the caller records the access.
pub fn candidates(
    store: &Store,
    scope: &PartitionScope,
) -> Result<Vec<CandidateState>, DecisionError> {
    let p = scope.partition();
    let flow4 = FLOW4_KINDS;
    let mut states: BTreeMap<u64, CandidateState> = BTreeMap::new();
    // decision seq → candidate seq, for the entries that refer to a decision.
    let mut decided: BTreeMap<u64, u64> = BTreeMap::new();
    // version seq → the move's first version (its state's key).
    let mut version_of: BTreeMap<u64, u64> = BTreeMap::new();
    let bad = |seq| DecisionError::Payload {
        partition: p.to_string(),
        seq,
    };
    store.for_each_envelope(p, |seq, raw| {
        let kind = crate::ledger::EnvelopeRef::decode(raw)
            .map_err(|_| bad(seq))?
            .header
            .kind;
        if !flow4.contains(&kind) {
            return Ok(());
        }
        let e = store.read_entry(scope, seq)?;
        match kind {
            k if k == Kind::CONTINUITY_CANDIDATE => {
                let candidate: Candidate =
                    serde_json::from_slice(&e.payload).map_err(|_| bad(seq))?;
                let first = candidate
                    .supersedes
                    .and_then(|earlier| version_of.get(&earlier).copied());
                match first.and_then(|f| states.get_mut(&f).map(|s| (f, s))) {
                    // A later version of a known move: the move's state follows it.
                    Some((f, s)) => {
                        if candidate
                            .changes
                            .iter()
                            .any(|c| crate::flows::continuity::ANOMALY_FIELDS.contains(&c.as_str()))
                        {
                            s.anomalies_since = seq;
                        }
                        s.candidate = candidate;
                        s.versions.push(seq);
                        version_of.insert(seq, f);
                    }
                    None => {
                        version_of.insert(seq, seq);
                        states.insert(
                            seq,
                            CandidateState {
                                seq,
                                candidate,
                                versions: vec![seq],
                                decision: None,
                                confirmation: None,
                                carry_over: None,
                                decisions: Vec::new(),
                                rows: Vec::new(),
                                acknowledgements: Vec::new(),
                                anomalies_since: seq,
                            },
                        );
                    }
                }
            }
            k if k == Kind::CONTINUITY_DECISION => {
                let d: Decision = serde_json::from_slice(&e.payload).map_err(|_| bad(seq))?;
                let first = version_of.get(&d.candidate_seq).copied();
                if let Some(s) = first.and_then(|f| states.get_mut(&f)) {
                    // A newer decision corrects the earlier one; what confirmed that is void.
                    decided.insert(seq, s.seq);
                    s.decision = Some((seq, d.clone()));
                    s.confirmation = None;
                    s.carry_over = None;
                    s.decisions.push((seq, d));
                }
            }
            k if k == Kind::CONTINUITY_ANOMALY_ACK => {
                let a: Acknowledgement =
                    serde_json::from_slice(&e.payload).map_err(|_| bad(seq))?;
                let first = version_of.get(&a.candidate_seq).copied();
                if let Some(s) = first.and_then(|f| states.get_mut(&f)) {
                    s.acknowledgements.push((seq, a));
                }
            }
            _ => {
                // Confirmation and carry-over both refer to the decision they confirm; only
                // one of the candidate's latest decision counts.
                let Some(decision_seq) = e.header.ref_seq else {
                    return Err(bad(seq));
                };
                let Some(s) = decided.get(&decision_seq).and_then(|c| states.get_mut(c)) else {
                    return Ok(());
                };
                let latest = s.decision.as_ref().is_some_and(|(d, _)| *d == decision_seq);
                if kind == Kind::CONTINUITY_CONFIRMATION {
                    if latest {
                        s.confirmation = Some((
                            seq,
                            serde_json::from_slice(&e.payload).map_err(|_| bad(seq))?,
                        ));
                    }
                } else {
                    let row: CarryOver =
                        serde_json::from_slice(&e.payload).map_err(|_| bad(seq))?;
                    // The row a confirmation wrote is the decision's carry-over.
                    if latest && s.carry_over.is_none() && row.row_kind != ROW_CANCEL {
                        s.carry_over = Some((seq, row.clone()));
                    }
                    s.rows.push((seq, row));
                }
            }
        }
        Ok(())
    })?;
    Ok(states.into_values().collect())
}

/// Appends B's 確定指示 on its own candidate at `candidate_seq` (the scope is B's, from the
/// credential: a candidate of another partition cannot be named). With the access record.
pub fn decide(
    store: &Store,
    scope: &PartitionScope,
    candidate_seq: u64,
    decision: &str,
    reason: Option<&str>,
    operator: &str,
    who: &Importer,
) -> Result<u64, DecisionError> {
    let seqs = decide_all(
        store,
        scope,
        &[candidate_seq],
        decision,
        reason,
        operator,
        who,
    )?;
    seqs.first()
        .copied()
        .ok_or(DecisionError::NoCandidate(candidate_seq))
}

/// The same 確定指示 on several of B's candidates at once (the terminal's bulk decision):
/// one batch, so either every decision is stored or none; the decisions' seqs in the order
/// given. Every seq must name a candidate.
pub fn decide_all(
    store: &Store,
    scope: &PartitionScope,
    candidate_seqs: &[u64],
    decision: &str,
    reason: Option<&str>,
    operator: &str,
    who: &Importer,
) -> Result<Vec<u64>, DecisionError> {
    if !matches!(decision, "continue" | "not_continue") {
        return Err(DecisionError::BadDecision);
    }
    let operator = checked_operator(operator)?;
    if reason.is_some_and(|r| r.chars().count() > 1000) {
        return Err(DecisionError::TooLong("reason"));
    }
    let (Some(&low), Some(&high)) = (candidate_seqs.iter().min(), candidate_seqs.iter().max())
    else {
        return Err(DecisionError::NoneSelected);
    };
    let reason = reason
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_owned);
    let mut entries = Vec::with_capacity(candidate_seqs.len());
    for &candidate_seq in candidate_seqs {
        let is_candidate = match store.read_entry(scope, candidate_seq) {
            Ok(e) => e.header.kind == Kind::CONTINUITY_CANDIDATE,
            Err(ReadError::NoSuchEntry { .. }) => false,
            Err(e) => return Err(e.into()),
        };
        if !is_candidate {
            return Err(DecisionError::NoCandidate(candidate_seq));
        }
        let d = Decision {
            schema: DECISION_SCHEMA.to_owned(),
            candidate_seq,
            decision: decision.to_owned(),
            reason: reason.clone(),
            operator: operator.to_owned(),
            credential: Some(who.actor.clone()),
        };
        entries.push(NewEntry::new(
            Kind::CONTINUITY_DECISION,
            crate::store::today_days(),
            Some(candidate_seq),
            json(&d)?.to_vec(),
        )?);
    }
    let opts = AppendOptions {
        access: Some(who.access(
            "continuity_decision",
            vec![Kind::CONTINUITY_CANDIDATE.code()],
            low,
            high - low + 1,
        )),
        ..AppendOptions::default()
    };
    let r = store.append_with(scope.partition(), entries, opts)?;
    Ok(r.entries.iter().map(|(seq, _)| *seq).collect())
}

/// The person at the terminal, trimmed: required, at most 100 characters.
fn checked_operator(operator: &str) -> Result<&str, DecisionError> {
    let operator = operator.trim();
    if operator.is_empty() {
        return Err(DecisionError::NoOperator);
    }
    if operator.chars().count() > 100 {
        return Err(DecisionError::TooLong("operator"));
    }
    Ok(operator)
}

/// Appends B's acknowledgement of the open anomalies of the move whose first version is
/// `move_seq` (its handle in the API), naming the move's latest version. With the access
/// record of the partition's flow-4 entries read to find them.
pub fn acknowledge(
    store: &Store,
    scope: &PartitionScope,
    move_seq: u64,
    note: &str,
    operator: &str,
    who: &Importer,
) -> Result<u64, DecisionError> {
    let operator = checked_operator(operator)?;
    let note = note.trim();
    if note.is_empty() {
        return Err(DecisionError::NoNote);
    }
    if note.chars().count() > 1000 {
        return Err(DecisionError::TooLong("note"));
    }
    let states = candidates(store, scope)?;
    // Every move's entries were read to find this one's state: the access record says so.
    let read_from = states.first().map_or(move_seq, |s| s.seq);
    let read_to = states.iter().map(CandidateState::latest_seq).max();
    let state = states
        .into_iter()
        .find(|s| s.seq == move_seq)
        .ok_or(DecisionError::NoCandidate(move_seq))?;
    let open = state.open_anomalies();
    if open.is_empty() {
        return Err(DecisionError::NothingToAcknowledge(move_seq));
    }
    let latest = state.latest_seq();
    let ack = Acknowledgement {
        schema: ACK_SCHEMA.to_owned(),
        candidate_seq: latest,
        anomalies: open,
        note: note.to_owned(),
        operator: operator.to_owned(),
        credential: Some(who.actor.clone()),
    };
    let entry = NewEntry::new(
        Kind::CONTINUITY_ANOMALY_ACK,
        crate::store::today_days(),
        Some(latest),
        json(&ack)?.to_vec(),
    )?;
    let opts = AppendOptions {
        access: Some(who.access(
            "continuity_anomaly_ack",
            FLOW4_KINDS.iter().map(|k| k.code()).collect(),
            read_from,
            read_to.unwrap_or(latest).saturating_sub(read_from) + 1,
        )),
        ..AppendOptions::default()
    };
    let r = store.append_with(scope.partition(), vec![entry], opts)?;
    Ok(r.first_seq)
}

/// A move with anomalies, as the 連合会's operator sees it across the prefecture: where and
/// what, never who (no names, no 世帯番号).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnomalyRow {
    /// B and the move's handle (its first version's seq) in B.
    pub partition: String,
    pub seq: u64,
    pub old_hokensha_no: String,
    pub ido_date: String,
    /// The latest version's anomalies, and those of them no acknowledgement covers yet.
    pub anomalies: Vec<String>,
    pub open: Vec<String>,
    pub decided: bool,
}

/// Every partition of the prefecture with its moves' states, in registry order; each B's
/// read is an access record in B (`purpose`), durable before `f` sees the states.
fn each_partition(
    store: &Store,
    scope: &PrefectureScope,
    who: &Importer,
    purpose: &str,
    mut f: impl FnMut(&PartitionId, Vec<CandidateState>),
) -> Result<(), DecisionError> {
    let partitions = store
        .prefecture_partitions(scope)
        .map_err(DecisionError::Registry)?;
    for b in &partitions {
        let Some(b_scope) = scope.partition(b) else {
            continue;
        };
        let states = candidates(store, &b_scope)?;
        let first = states.first().map(|s| s.seq);
        let last = states.iter().map(CandidateState::latest_seq).max();
        if let Some(range) = first.zip(last) {
            let kinds = FLOW4_KINDS.iter().map(|k| k.code()).collect();
            record_access(store, b, who, purpose, kinds, range)?;
        }
        f(b, states);
    }
    Ok(())
}

/// Every move of the prefecture with anomalies, per B in registry order. Each B's read is
/// an access record in B, durable before the list is returned.
pub fn prefecture_anomalies(
    store: &Store,
    scope: &PrefectureScope,
    who: &Importer,
) -> Result<Vec<AnomalyRow>, DecisionError> {
    let mut rows = Vec::new();
    each_partition(store, scope, who, "continuity_anomalies", |b, states| {
        rows.extend(
            states
                .into_iter()
                .filter(|s| !s.candidate.anomalies.is_empty())
                .map(|s| AnomalyRow {
                    partition: b.to_string(),
                    seq: s.seq,
                    open: s.open_anomalies(),
                    decided: s.decision.is_some(),
                    old_hokensha_no: s.candidate.old_hokensha_no,
                    ido_date: s.candidate.ido_date,
                    anomalies: s.candidate.anomalies,
                }),
        );
    })?;
    Ok(rows)
}

/// One municipality's flow-4 work as the 連合会's operator sees it: counts only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Workload {
    pub partition: String,
    pub undecided: u64,
    /// Decided to continue, not yet confirmed (the next confirmation run's work).
    pub decided: u64,
    pub confirmed: u64,
    /// Decided not to continue (nothing to confirm).
    pub not_continued: u64,
    /// Moves with an anomaly no one has acknowledged.
    pub anomalies_open: u64,
}

/// The flow-4 counts of every municipality of the prefecture (the operator console).
pub fn prefecture_workload(
    store: &Store,
    scope: &PrefectureScope,
    who: &Importer,
) -> Result<Vec<Workload>, DecisionError> {
    let mut out = Vec::new();
    each_partition(store, scope, who, "continuity_workload", |b, states| {
        let mut w = Workload {
            partition: b.to_string(),
            ..Workload::default()
        };
        for s in &states {
            match (&s.decision, &s.confirmation) {
                (None, _) => w.undecided += 1,
                (Some((_, d)), _) if d.decision != "continue" => w.not_continued += 1,
                (Some(_), None) => w.decided += 1,
                (Some(_), Some(_)) => w.confirmed += 1,
            }
            if !s.open_anomalies().is_empty() {
                w.anomalies_open += 1;
            }
        }
        out.push(w);
    })?;
    Ok(out)
}

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
    let partitions: Vec<PartitionId> = store
        .prefecture_partitions(scope)
        .map_err(DecisionError::Registry)?;
    let chains = Chains::default();
    for b in &partitions {
        let Some(b_scope) = scope.partition(b) else {
            continue;
        };
        let states = candidates(store, &b_scope)?;
        let first = states.first().map(|s| s.seq);
        let last = states.iter().map(CandidateState::latest_seq).max();
        if let Some(range) = first.zip(last) {
            let kinds = vec![
                Kind::CONTINUITY_CANDIDATE.code(),
                Kind::CONTINUITY_DECISION.code(),
            ];
            record_access(store, b, who, "continuity_confirm_scan", kinds, range)?;
        }
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
    }
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

/// Appends an access record to `p`: `who` read entries `first..=last` of `kinds`.
fn record_access(
    store: &Store,
    p: &PartitionId,
    who: &Importer,
    purpose: &str,
    kinds: Vec<u16>,
    (first, last): (u64, u64),
) -> Result<(), DecisionError> {
    let rec = who.access(purpose, kinds, first, last - first + 1);
    let payload = rec.encode().map_err(DecisionError::Record)?;
    append_record(store, p, Kind::ACCESS_RECORD, payload)?;
    Ok(())
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
                    partition: a.to_string(),
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

/// Column names of the 高額該当回数引継情報連携ファイル, layout hikitsugi-v2 (docs/format.md
/// §5b): one row per carry-over row, 新規, 追加 or 取消.
pub const HIKITSUGI_HEADER: [&str; 12] = [
    "layout",
    "row_id",
    "row_kind",
    "decision_id",
    "old_hokensha_no",
    "old_setai_no",
    "new_hokensha_no",
    "new_setai_no",
    "ido_date",
    "months",
    "count",
    "confirmed_at",
];

/// The `row_kind` code of the file: 1 新規, 2 追加, 3 取消.
fn row_kind_code(kind: &str) -> &'static str {
    match kind {
        ROW_ADD => "2",
        ROW_CANCEL => "3",
        _ => "1",
    }
}

/// The 連携ファイル in the requested encoding (UTF-8, or CP932 via encoding_rs; every value
/// of the layout is ASCII, so nothing is unmappable).
pub fn hikitsugi_file(
    states: &[CandidateState],
    encoding: crate::flows::transmission::Encoding,
) -> Vec<u8> {
    let text = hikitsugi_csv(states);
    match encoding {
        crate::flows::transmission::Encoding::Utf8 => text.into_bytes(),
        crate::flows::transmission::Encoding::Cp932 => {
            encoding_rs::SHIFT_JIS.encode(&text).0.into_owned()
        }
    }
}

/// The 連携ファイル (hikitsugi-v2, CRLF) of every carry-over row in `states`, in log order.
/// `row_id` (`<B>:<seq of the row>`) is unique and stable, so B's system imports each row
/// once however often it downloads the file.
pub fn hikitsugi_csv(states: &[CandidateState]) -> String {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    let _ = w.write_record(HIKITSUGI_HEADER);
    let mut rows: Vec<&(u64, CarryOver)> = states.iter().flat_map(|s| &s.rows).collect();
    rows.sort_by_key(|(seq, _)| *seq);
    for (seq, c) in rows {
        let row_id = format!("{}:{seq}", c.new_hokensha_no);
        let count = c.count.to_string();
        let months = c.months.join(";");
        let _ = w.write_record([
            "hikitsugi-v2",
            &row_id,
            row_kind_code(&c.row_kind),
            &c.decision_id,
            &c.old_hokensha_no,
            &c.old_setai_no,
            &c.new_hokensha_no,
            &c.new_setai_no,
            &c.ido_date,
            &months,
            &count,
            &c.confirmed_at,
        ]);
    }
    w.into_inner()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}
