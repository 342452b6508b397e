//! Flow 4, steps 4-①…⑥: B's 確定指示 on its candidates, the hub's confirmation with the
//! 高額該当回数 carry-over, and B's results and 連携ファイル. Everything is an entry: a decision
//! refers to its candidate, a correction is a newer decision on the same candidate, and a
//! confirmation and its carry-over refer to the decision they confirm. A's 高額該当 months
//! reach B only here, after B decided "continue", and the hand-over is a 提供記録 in A.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::crypto::{PartitionScope, PrefectureScope};
use crate::domain::tasukai::{CareMonth, KogakuMonth, Move, carried_months};
use crate::domain::text::parse_date;
use crate::flows::continuity::Candidate;
use crate::flows::import::{Importer, append_record};
use crate::flows::kogaku::KogakuRecord;
use crate::ledger::payload::ProvisionRecord;
use crate::ledger::{Kind, PartitionId};
use crate::store::{
    AppendError, AppendOptions, Claim, IndexKind, KeyError, NewEntry, PartitionStatus, ReadError,
    Store,
};

pub const DECISION_SCHEMA: &str = "continuity-decision-v1";
pub const CONFIRMATION_SCHEMA: &str = "continuity-confirmation-v1";
pub const CARRY_OVER_SCHEMA: &str = "kogaku-carry-over-v1";

/// B's 確定指示 (kind 0x0031, `ref_seq` = the candidate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub schema: String,
    pub candidate_seq: u64,
    /// `continue` or `not_continue`.
    pub decision: String,
    pub reason: Option<String>,
    /// The operator at the terminal (a name or staff id, as the municipality enters it).
    pub operator: String,
}

/// The hub's 継続世帯確定結果 (kind 0x0032, `ref_seq` = the decision).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    pub schema: String,
    pub candidate_seq: u64,
    pub decision_seq: u64,
    pub confirmed_at: String,
}

/// The 高額該当回数引継結果 (kind 0x0033, `ref_seq` = the decision): DOMAIN.md §9.5's row.
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
    /// A's counting months from 2018-04 within 異動月 − 11 … 異動月, ascending.
    pub months: Vec<String>,
    pub count: u64,
    pub confirmed_at: String,
}

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
}

impl CandidateState {
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
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("registry: {0}")]
    Registry(String),
    #[error("partition {partition} seq {seq}: payload does not decode")]
    Payload { partition: String, seq: u64 },
    #[error("encoding: {0}")]
    Encode(String),
}

fn json<T: Serialize>(v: &T) -> Result<zeroize::Zeroizing<Vec<u8>>, DecisionError> {
    serde_json::to_vec(v)
        .map(zeroize::Zeroizing::new)
        .map_err(|e| DecisionError::Encode(e.to_string()))
}

/// Every candidate of the scope's partition with its decisions, confirmation and carry-over,
/// in seq order. Reads sealed entries: the caller records the access.
pub fn candidates(
    store: &Store,
    scope: &PartitionScope,
) -> Result<Vec<CandidateState>, DecisionError> {
    let p = scope.partition();
    let flow4 = [
        Kind::CONTINUITY_CANDIDATE,
        Kind::CONTINUITY_DECISION,
        Kind::CONTINUITY_CONFIRMATION,
        Kind::CONTINUITY_CARRY_OVER,
    ];
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
            _ => {
                // Confirmation and carry-over both refer to the decision they confirm; only
                // one of the candidate's latest decision counts.
                let Some(decision_seq) = e.header.ref_seq else {
                    return Err(bad(seq));
                };
                let Some(s) = decided
                    .get(&decision_seq)
                    .and_then(|c| states.get_mut(c))
                    .filter(|s| s.decision.as_ref().is_some_and(|(d, _)| *d == decision_seq))
                else {
                    return Ok(());
                };
                if kind == Kind::CONTINUITY_CONFIRMATION {
                    s.confirmation = Some((
                        seq,
                        serde_json::from_slice(&e.payload).map_err(|_| bad(seq))?,
                    ));
                } else {
                    s.carry_over = Some((
                        seq,
                        serde_json::from_slice(&e.payload).map_err(|_| bad(seq))?,
                    ));
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
    if !matches!(decision, "continue" | "not_continue") {
        return Err(DecisionError::BadDecision);
    }
    let operator = operator.trim();
    if operator.is_empty() {
        return Err(DecisionError::NoOperator);
    }
    if operator.chars().count() > 100 {
        return Err(DecisionError::TooLong("operator"));
    }
    if reason.is_some_and(|r| r.chars().count() > 1000) {
        return Err(DecisionError::TooLong("reason"));
    }
    let p = scope.partition();
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
        reason: reason
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned),
        operator: operator.to_owned(),
    };
    let entry = NewEntry::new(
        Kind::CONTINUITY_DECISION,
        crate::store::today_days(),
        Some(candidate_seq),
        json(&d)?.to_vec(),
    )?;
    let opts = AppendOptions {
        access: Some(who.access(
            "continuity_decision",
            vec![Kind::CONTINUITY_CANDIDATE.code()],
            candidate_seq,
            1,
        )),
        ..AppendOptions::default()
    };
    let r = store.append_with(p, vec![entry], opts)?;
    Ok(r.first_seq)
}

/// What a confirmation run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConfirmReport {
    pub prefecture: String,
    /// `<B>:<decision seq>` of each household confirmed now, with its carried count.
    pub confirmed: Vec<(String, u64)>,
    /// Decisions to continue confirmed by an earlier run.
    pub already_confirmed: u64,
    /// Candidates still without a decision.
    pub undecided: u64,
}

/// 4-③④: for every latest decision "continue" in the prefecture that has no confirmation
/// yet, reads A's 高額該当 records of the old household (recorded in A as a 提供記録 to B),
/// computes the carried months (DOMAIN.md §5) and appends the confirmation and carry-over to
/// B. Idempotent: one confirmation per decision.
pub fn confirm(
    store: &Store,
    scope: &PrefectureScope,
    who: &Importer,
    now: &str,
) -> Result<ConfirmReport, DecisionError> {
    let mut report = ConfirmReport {
        prefecture: scope.prefecture().to_owned(),
        ..ConfirmReport::default()
    };
    let partitions: Vec<PartitionId> = store
        .partitions()
        .map_err(|e| DecisionError::Registry(e.to_string()))?
        .into_iter()
        .filter(|i| i.status == PartitionStatus::Active && scope.contains(&i.partition))
        .filter(|i| !store.is_shredded(&i.partition))
        .map(|i| i.partition)
        .collect();
    for b in &partitions {
        let Some(b_scope) = scope.partition(b) else {
            continue;
        };
        let states = candidates(store, &b_scope)?;
        if let (Some(first), Some(last)) = (states.first(), states.last()) {
            let rec = who.access(
                "continuity_confirm_scan",
                vec![
                    Kind::CONTINUITY_CANDIDATE.code(),
                    Kind::CONTINUITY_DECISION.code(),
                ],
                first.seq,
                last.seq - first.seq + 1,
            );
            let payload = rec
                .encode()
                .map_err(|e| DecisionError::Encode(e.to_string()))?;
            append_record(store, b, Kind::ACCESS_RECORD, payload)?;
        }
        for s in &states {
            let Some((decision_seq, d)) = &s.decision else {
                report.undecided += 1;
                continue;
            };
            if d.decision != "continue" {
                continue;
            }
            if s.confirmation.is_some() {
                report.already_confirmed += 1;
                continue;
            }
            let claim = format!("confirm:{decision_seq}");
            if store.transmission(b, &claim)?.is_some() {
                report.already_confirmed += 1;
                continue;
            }
            let Ok(a) = PartitionId::parse(&s.candidate.old_hokensha_no) else {
                continue;
            };
            let Some(pair) = scope.pair(&a, b) else {
                continue;
            };
            // A's months of the old household: read in A, handed to B (提供記録 in A first).
            let a_seqs =
                store.index_seqs(&a, IndexKind::Kogaku, s.candidate.old_setai_no.as_bytes())?;
            let mut months: Vec<KogakuMonth> = Vec::new();
            for seq in &a_seqs {
                let e = store.read_entry(pair.from_scope(), *seq)?;
                let r: KogakuRecord =
                    serde_json::from_slice(&e.payload).map_err(|_| DecisionError::Payload {
                        partition: a.to_string(),
                        seq: *seq,
                    })?;
                months.extend(r.months());
            }
            let ido = parse_date(&s.candidate.ido_date).map(CareMonth::of_days);
            let carried =
                ido.map_or_else(Vec::new, |m| carried_months(&months, m, Move::Continuing));
            let decision_id = format!("{b}:{decision_seq}");
            let provision = ProvisionRecord {
                provider: format!("{}/{a}", store.origin()),
                recipient: format!("{}/{b}", store.origin()),
                items: vec!["高額該当回数".into(), "高額該当年月".into()],
                nondisclosure: false,
                purpose: "kogaku_carry_over".into(),
                first_seq: a_seqs.first().copied().unwrap_or(0),
                count: a_seqs.len() as u64,
                checkpoint_size: store.size(&a)?,
                request_id: who.request_id.clone(),
            };
            let payload = provision
                .encode()
                .map_err(|e| DecisionError::Encode(e.to_string()))?;
            store.append(
                &a,
                vec![NewEntry::new(
                    Kind::PROVISION_RECORD,
                    crate::store::today_days(),
                    None,
                    payload,
                )?],
            )?;
            let confirmation = Confirmation {
                schema: CONFIRMATION_SCHEMA.to_owned(),
                candidate_seq: s.seq,
                decision_seq: *decision_seq,
                confirmed_at: now.to_owned(),
            };
            let carry = CarryOver {
                schema: CARRY_OVER_SCHEMA.to_owned(),
                decision_id: decision_id.clone(),
                old_hokensha_no: a.to_string(),
                old_setai_no: s.candidate.old_setai_no.clone(),
                new_hokensha_no: b.to_string(),
                new_setai_no: s.candidate.new_setai_no.clone(),
                ido_date: s.candidate.ido_date.clone(),
                months: carried.iter().map(ToString::to_string).collect(),
                count: carried.len() as u64,
                confirmed_at: now.to_owned(),
            };
            let entries = vec![
                NewEntry::new(
                    Kind::CONTINUITY_CONFIRMATION,
                    crate::store::today_days(),
                    Some(*decision_seq),
                    json(&confirmation)?.to_vec(),
                )?,
                NewEntry::new(
                    Kind::CONTINUITY_CARRY_OVER,
                    crate::store::today_days(),
                    Some(*decision_seq),
                    json(&carry)?.to_vec(),
                )?,
            ];
            let opts = AppendOptions {
                claim: Some(Claim {
                    id: claim,
                    digest: [0; 32],
                    households: vec![s.candidate.new_setai_no.clone()],
                }),
                access: Some(who.access(
                    "continuity_confirm",
                    vec![Kind::CONTINUITY_DECISION.code()],
                    *decision_seq,
                    1,
                )),
                replica_state: None,
            };
            match store.append_with(b, entries, opts) {
                Ok(_) => report.confirmed.push((decision_id, carry.count)),
                Err(AppendError::AlreadyStored { .. }) => report.already_confirmed += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(report)
}

/// Column names of the 高額該当回数引継情報連携ファイル (DOMAIN.md §9.5).
pub const HIKITSUGI_HEADER: [&str; 10] = [
    "layout",
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

/// The 連携ファイル (hikitsugi-v1, CRLF) of the carry-overs in `states`, in decision order.
pub fn hikitsugi_csv(states: &[CandidateState]) -> String {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    let _ = w.write_record(HIKITSUGI_HEADER);
    let mut rows: Vec<&CarryOver> = states
        .iter()
        .filter_map(|s| s.carry_over.as_ref().map(|(_, c)| c))
        .collect();
    rows.sort_by(|x, y| x.decision_id.cmp(&y.decision_id));
    for c in rows {
        let count = c.count.to_string();
        let months = c.months.join(";");
        let _ = w.write_record([
            "hikitsugi-v1",
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
