//! Flow 4, step 0: extraction of 継続候補世帯 (docs/domain.md §4.2) by the prefecture's continuity
//! job. For each household of a municipality B whose member came from elsewhere in the
//! prefecture (資格取得 before B's 国保適用開始), it finds the household in another
//! municipality A of the same prefecture that held the member, through the prefecture's
//! matching tokens (`X`, HMAC: never a stored 個人番号), checks 空白期間 / 重複期間, applies
//! the 参酌基準 rules, and appends a candidate to B holding only what B needs to decide.
//! Each read of A's data appends an access record to A (durable first); B's candidate batch
//! carries B's access record. A run looks only at households changed since the last one;
//! a later snapshot of a move adds a version of its candidate, and a rerun over the same
//! data adds nothing (one claim per move and per version's content). New moves that start
//! before the prefecture's window are listed for the operator, not proposed. Partitions
//! outside the prefecture are never opened.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::crypto::{IndexKey, PartitionScope, PrefectureScope};
use crate::domain::continuity::{Case, Members, Period, Rules, Suggestion, combine, detect};
use crate::domain::text::parse_date;
use crate::flows::import::{Importer, append_record};
use crate::flows::transmission::{Household, Person};
use crate::ledger::payload::AccessRecord;
use crate::ledger::{Kind, PartitionId};
use crate::store::{
    AppendError, AppendOptions, Claim, IndexKind, KeyError, NewEntry, ReadError, Store,
};

/// Payload schema of a candidate.
pub const CANDIDATE_SCHEMA: &str = "continuity-candidate-v1";

/// A member as B sees it on a candidate: no 個人番号, no 記号・番号.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub shimei: String,
    pub birth_date: String,
    pub zokugara: String,
    pub head: bool,
}

/// One detected 参酌基準 case of a move, with the suggestion the prefecture configured for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseView {
    pub code: String,
    pub label: String,
    pub suggestion: String,
}

/// The sealed payload of a continuity candidate (kind 0x0030), appended to B.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub schema: String,
    /// A: the old 保険者番号 and 世帯番号.
    pub old_hokensha_no: String,
    pub old_setai_no: String,
    /// B's household.
    pub new_setai_no: String,
    /// B's 国保適用開始年月日 of the member who moved: the 異動年月日 of the move.
    pub ido_date: String,
    /// A's 国保適用終了年月日 of that member, if A recorded the move out.
    pub old_tekiyo_end: Option<String>,
    /// `contiguous`, `gap`, `overlap` or `old_not_ended`.
    pub period: String,
    /// Days of the gap or overlap (0 when contiguous or unknown).
    pub period_days: i32,
    pub members_before: Vec<MemberView>,
    pub members_after: Vec<MemberView>,
    /// The first detected 参酌基準 case (code `1`–`5`, `head_left`, `other`) and its label.
    pub case: String,
    pub case_label: String,
    /// Every detected case with its configured suggestion (issue 27: cases combine; the
    /// suggestion is the strictest of them). Empty on candidates made before.
    #[serde(default)]
    pub cases: Vec<CaseView>,
    /// `continue`, `not_continue` or `manual`: a suggestion, never a decision.
    pub suggestion: String,
    /// The snapshots it was based on: A's seq (in A) and B's seq (in B, also `ref_seq`).
    pub old_seq: u64,
    pub new_seq: u64,
    /// The move's identity (docs/decisions.md): hex of `HMAC(B's index key, "move:" ‖ A ‖
    /// the mover's matching token ‖ B's 適用開始日)`, the same for every version of one move.
    /// Empty on candidates made before versions.
    #[serde(default)]
    pub move_id: String,
    /// The version of the same move this one replaces (its seq in B), if any.
    #[serde(default)]
    pub supersedes: Option<u64>,
    /// What a person must look at (issue 27): `gap` / `overlap` (空白期間 / 重複期間),
    /// `old_not_ended` (A recorded no 適用終了), `shutoku_reset` (the household came in by
    /// 県内転入 but B's 資格取得日 is not before its start: reset by B's system),
    /// `ambiguous` (more than one household of the prefecture held the person before).
    #[serde(default)]
    pub anomalies: Vec<String>,
    /// The fields that differ from the replaced version (e.g. `members_after`,
    /// `suggestion`; sorted), so the clerk sees what a later 異動 or 訂正 changed.
    #[serde(default)]
    pub changes: Vec<String>,
}

pub const ANOMALY_SHUTOKU_RESET: &str = "shutoku_reset";
/// The fields a person's acknowledgement of a version's anomalies rests on: a later version
/// that changes one of them needs a new acknowledgement.
pub const ANOMALY_FIELDS: [&str; 5] = [
    "anomalies",
    "period",
    "period_days",
    "old_tekiyo_end",
    "ido_date",
];
pub const ANOMALY_AMBIGUOUS: &str = "ambiguous";

/// Fields that only say where a version came from; they are not compared between versions.
const PROVENANCE: [&str; 5] = ["old_seq", "new_seq", "move_id", "supersedes", "changes"];

impl Candidate {
    /// The fields whose values differ from `earlier` (provenance fields aside), in field
    /// name order: empty when a later snapshot of the move changed nothing B decides on.
    pub fn changes_from(&self, earlier: &Candidate) -> Vec<String> {
        let (Ok(serde_json::Value::Object(now)), Ok(serde_json::Value::Object(then))) =
            (serde_json::to_value(self), serde_json::to_value(earlier))
        else {
            return vec!["candidate".to_owned()];
        };
        now.iter()
            .filter(|(k, _)| !PROVENANCE.contains(&k.as_str()))
            .filter(|(k, v)| then.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExtractError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error("reading the partition registry")]
    Registry(#[source] crate::store::ProvisionError),
    #[error("partition {partition} seq {seq}: snapshot does not decode")]
    Snapshot { partition: PartitionId, seq: u64 },
    #[error("encoding an access record")]
    Record(#[source] crate::ledger::payload::PayloadError),
    #[error("encoding a candidate")]
    Json(#[source] serde_json::Error),
}

/// One candidate made (or found from an earlier run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Made {
    /// B, and the candidate's seq in B (`None` for one an earlier run made).
    pub partition: String,
    pub seq: Option<u64>,
    pub old_hokensha_no: String,
    pub case: String,
    pub period: String,
    pub suggestion: String,
    /// What a person must look at (the candidate's `anomalies`), for the operator's report.
    pub anomalies: Vec<String>,
}

/// A move found that starts before the window (`window_months`): listed for the operator,
/// not proposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outside {
    /// B, A, and B's 適用開始日 of the move.
    pub partition: String,
    pub old_hokensha_no: String,
    pub ido_date: String,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExtractReport {
    pub prefecture: String,
    /// The run's date (JST), which the window of new moves counts back from.
    pub as_of: String,
    pub partitions: u64,
    pub households_read: u64,
    pub candidates: Vec<Made>,
    /// Candidates an earlier run already made (not added again).
    pub already_extracted: u64,
    /// New moves that start before the window: not candidates (issue 27 item 2).
    pub outside_window: Vec<Outside>,
}

mod build;
mod job;
mod known;

use build::*;
pub use job::EXTRACT_JOB;
use job::*;
use known::*;

fn decode(store: &Store, scope: &PartitionScope, seq: u64) -> Result<Household, ExtractError> {
    let e = store.read_entry(scope, seq)?;
    serde_json::from_slice(&e.payload).map_err(|_| ExtractError::Snapshot {
        partition: scope.partition().clone(),
        seq,
    })
}

fn view(h: &Household) -> Vec<MemberView> {
    h.persons
        .iter()
        .map(|p| MemberView {
            shimei: p.shimei.clone(),
            birth_date: p.birth_date.clone(),
            zokugara: p.zokugara.clone(),
            head: p.zokugara == "01",
        })
        .collect()
}

/// The member who came from elsewhere in the prefecture: 資格 acquired before the
/// application here. The head first, then the others in file order. When no member shows
/// that but the household came in by 県内転入 (異動事由 03), B's 資格取得日 was reset
/// (docs/domain.md §4.5: the 連合会 carries 取得日 over, a municipality's system may not): the
/// insured head (else the first insured member) is taken, and `true` says so.
fn mover(h: &Household) -> Option<(&Person, bool)> {
    let moved = |p: &&Person| {
        !p.giji_head
            && matches!(
                (p.shutoku_date.as_deref().and_then(parse_date), p.tekiyo_start.as_deref().and_then(parse_date)),
                (Some(s), Some(t)) if s < t
            )
    };
    let head = h.persons.iter().filter(|p| p.zokugara == "01").find(moved);
    if let Some(p) = head.or_else(|| h.persons.iter().find(moved)) {
        return Some((p, false));
    }
    if h.ido_jiyu != "03" {
        return None;
    }
    let insured = |p: &&Person| !p.giji_head && p.tekiyo_start.is_some();
    let head = h
        .persons
        .iter()
        .filter(|p| p.zokugara == "01")
        .find(insured);
    head.or_else(|| h.persons.iter().find(insured))
        .map(|p| (p, true))
}

/// An access record of snapshot reads.
fn access(who: &Importer, purpose: &str, first_seq: u64, count: u64) -> AccessRecord {
    who.access(
        purpose,
        vec![Kind::HOUSEHOLD_SNAPSHOT.code()],
        first_seq,
        count,
    )
}

/// Appends an access record on its own, durable before the caller goes on.
fn record(store: &Store, p: &PartitionId, rec: &AccessRecord) -> Result<(), ExtractError> {
    let payload = rec.encode().map_err(ExtractError::Record)?;
    append_record(store, p, Kind::ACCESS_RECORD, payload)?;
    Ok(())
}

/// Access records of reads made while finding what changed, appended per partition in one
/// batch (one sync per partition, not one per household) before anything derived from the
/// reads is stored.
#[derive(Default)]
struct Reads(HashMap<PartitionId, Vec<AccessRecord>>);

impl Reads {
    fn add(&mut self, p: &PartitionId, rec: AccessRecord) {
        self.0.entry(p.clone()).or_default().push(rec);
    }

    fn flush(&mut self, store: &Store) -> Result<(), ExtractError> {
        let day = crate::store::today_days();
        for (p, recs) in self.0.drain() {
            let entries = recs
                .iter()
                .map(|r| {
                    let payload = r.encode().map_err(ExtractError::Record)?;
                    Ok(NewEntry::new(Kind::ACCESS_RECORD, day, None, payload)?)
                })
                .collect::<Result<Vec<_>, ExtractError>>()?;
            store.append(&p, entries)?;
        }
        Ok(())
    }
}

/// Runs the extraction over every active partition of the prefecture, as of day `as_of`
/// (days since 1970-01-01, the run's date in JST; `crate::store::today_jst()` for a daily
/// run): new moves that start before the prefecture's window are listed, not proposed.
pub fn extract(
    store: &Store,
    scope: &PrefectureScope,
    rules: &Rules,
    who: &Importer,
    as_of: i32,
) -> Result<ExtractReport, ExtractError> {
    let matching = store.matching_key(scope.prefecture())?;
    let token = |kojin_no: &str| matching.token("kojin", kojin_no.as_bytes()).to_vec();
    // One rules file may serve several prefectures: this job's section.
    let rules = rules.for_prefecture(scope.prefecture());
    let partitions: Vec<PartitionId> = store
        .prefecture_partitions(scope)
        .map_err(ExtractError::Registry)?;
    let mut report = ExtractReport {
        prefecture: scope.prefecture().to_owned(),
        as_of: crate::domain::text::format_date(as_of),
        partitions: partitions.len() as u64,
        ..ExtractReport::default()
    };
    let job = Job {
        store,
        scope,
        rules,
        who,
        matching: &matching,
        token: &token,
        partitions: &partitions,
    };
    // Incremental: only households that changed since the last run, and the households of
    // the same people in the other partitions (the other end of a move), are looked at.
    let (ends, mut visit) = job.changes()?;
    for b in &partitions {
        let households = visit.remove(b).unwrap_or_default();
        job.visit(b, households, as_of, &mut report)?;
    }
    // Only a run that finished moves the cursors: a failed one is repeated whole.
    store.set_job_cursors(EXTRACT_JOB, &ends)?;
    Ok(report)
}
