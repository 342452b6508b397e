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
    Payload { partition: PartitionId, seq: u64 },
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
    let bad = |seq| DecisionError::Payload {
        partition: p.clone(),
        seq,
    };
    let mut fold = Fold::default();
    store.for_each_envelope(p, |seq, raw| -> Result<(), DecisionError> {
        let kind = crate::ledger::EnvelopeRef::decode(raw)
            .map_err(|_| bad(seq))?
            .header
            .kind;
        if !FLOW4_KINDS.contains(&kind) {
            return Ok(());
        }
        let e = store.read_entry(scope, seq)?;
        let json = |_: serde_json::Error| bad(seq);
        match kind {
            k if k == Kind::CONTINUITY_CANDIDATE => {
                fold.candidate(seq, serde_json::from_slice(&e.payload).map_err(json)?);
            }
            k if k == Kind::CONTINUITY_DECISION => {
                fold.decision(seq, serde_json::from_slice(&e.payload).map_err(json)?);
            }
            k if k == Kind::CONTINUITY_ANOMALY_ACK => {
                fold.acknowledgement(seq, serde_json::from_slice(&e.payload).map_err(json)?);
            }
            _ => {
                // Confirmation and carry-over both refer to the decision they confirm.
                let decision_seq = e.header.ref_seq.ok_or_else(|| bad(seq))?;
                fold.follow_up(seq, kind, decision_seq, &e.payload)
                    .map_err(json)?;
            }
        }
        Ok(())
    })?;
    Ok(fold.states.into_values().collect())
}

/// The moves of a partition as its flow-4 entries are read in seq order.
#[derive(Default)]
struct Fold {
    /// A move's first version → its state.
    states: BTreeMap<u64, CandidateState>,
    /// Decision seq → the move it decided, for the entries that refer to a decision.
    decided: BTreeMap<u64, u64>,
    /// Version seq → the move's first version.
    version_of: BTreeMap<u64, u64>,
}

impl Fold {
    /// The state of the move whose version (or first version) is `candidate_seq`.
    fn state_of(&mut self, candidate_seq: u64) -> Option<&mut CandidateState> {
        let first = self.version_of.get(&candidate_seq).copied()?;
        self.states.get_mut(&first)
    }

    /// A new move, or a later version of a known one (its state follows the version).
    fn candidate(&mut self, seq: u64, candidate: Candidate) {
        let first = candidate
            .supersedes
            .and_then(|earlier| self.version_of.get(&earlier).copied());
        let Some((f, s)) = first.and_then(|f| self.states.get_mut(&f).map(|s| (f, s))) else {
            self.version_of.insert(seq, seq);
            self.states.insert(seq, CandidateState::new(seq, candidate));
            return;
        };
        if candidate
            .changes
            .iter()
            .any(|c| crate::flows::continuity::ANOMALY_FIELDS.contains(&c.as_str()))
        {
            s.anomalies_since = seq;
        }
        s.candidate = candidate;
        s.versions.push(seq);
        self.version_of.insert(seq, f);
    }

    /// A newer decision corrects the earlier one; what confirmed that is void.
    fn decision(&mut self, seq: u64, d: Decision) {
        let Some(s) = self.state_of(d.candidate_seq) else {
            return;
        };
        let move_seq = s.seq;
        s.decision = Some((seq, d.clone()));
        s.confirmation = None;
        s.carry_over = None;
        s.decisions.push((seq, d));
        self.decided.insert(seq, move_seq);
    }

    fn acknowledgement(&mut self, seq: u64, a: Acknowledgement) {
        if let Some(s) = self.state_of(a.candidate_seq) {
            s.acknowledgements.push((seq, a));
        }
    }

    /// A confirmation or carry-over row of decision `decision_seq`: only one of the move's
    /// latest decision counts; every row is kept.
    fn follow_up(
        &mut self,
        seq: u64,
        kind: Kind,
        decision_seq: u64,
        payload: &[u8],
    ) -> Result<(), serde_json::Error> {
        let Some(s) = self
            .decided
            .get(&decision_seq)
            .and_then(|c| self.states.get_mut(c))
        else {
            return Ok(());
        };
        let latest = s.decision.as_ref().is_some_and(|(d, _)| *d == decision_seq);
        if kind == Kind::CONTINUITY_CONFIRMATION {
            if latest {
                s.confirmation = Some((seq, serde_json::from_slice(payload)?));
            }
            return Ok(());
        }
        let row: CarryOver = serde_json::from_slice(payload)?;
        // The row a confirmation wrote is the decision's carry-over.
        if latest && s.carry_over.is_none() && row.row_kind != ROW_CANCEL {
            s.carry_over = Some((seq, row.clone()));
        }
        s.rows.push((seq, row));
        Ok(())
    }
}

impl CandidateState {
    /// A move's state at its first version.
    fn new(seq: u64, candidate: Candidate) -> Self {
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
        }
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

mod confirm;
mod decide;
mod hikitsugi;
mod prefecture;

pub use confirm::*;
pub use decide::*;
pub use hikitsugi::*;
pub use prefecture::*;
