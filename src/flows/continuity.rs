//! Flow 4, step 0: extraction of 継続候補世帯 (DOMAIN.md §4.2) by the prefecture's continuity
//! job. For each household of a municipality B whose member came from elsewhere in the
//! prefecture (資格取得 before B's 国保適用開始), it finds the household in another
//! municipality A of the same prefecture that held the member, through the prefecture's
//! matching tokens (`X`, HMAC: never a stored 個人番号), checks 空白期間 / 重複期間, applies
//! the 参酌基準 rules, and appends a candidate to B holding only what B needs to decide.
//! Each read of A's data appends an access record to A (durable first); B's candidate batch
//! carries B's access record. A rerun over the same data adds no candidate (claim per
//! (B snapshot, A snapshot)). Partitions outside the prefecture are never opened.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::crypto::{PartitionScope, PrefectureScope};
use crate::domain::continuity::{Members, Period, Rules, Suggestion, classify, period, suggest};
use crate::domain::text::parse_date;
use crate::flows::import::{Importer, append_record};
use crate::flows::transmission::{Household, Person};
use crate::ledger::payload::AccessRecord;
use crate::ledger::{Kind, PartitionId};
use crate::store::{
    AppendError, AppendOptions, Claim, IndexKind, KeyError, NewEntry, PartitionStatus, ReadError,
    Store,
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
    /// 参酌基準 case code (`1`–`5`, `other`) and label.
    pub case: String,
    pub case_label: String,
    /// `continue`, `not_continue` or `manual`: a suggestion, never a decision.
    pub suggestion: String,
    /// The snapshots it was based on: A's seq (in A) and B's seq (in B, also `ref_seq`).
    pub old_seq: u64,
    pub new_seq: u64,
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
    #[error("registry: {0}")]
    Registry(String),
    #[error("partition {partition} seq {seq}: snapshot does not decode")]
    Snapshot { partition: String, seq: u64 },
    #[error("encoding a candidate: {0}")]
    Encode(String),
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
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExtractReport {
    pub prefecture: String,
    pub partitions: u64,
    pub households_read: u64,
    pub candidates: Vec<Made>,
    /// Candidates an earlier run already made (not added again).
    pub already_extracted: u64,
}

fn decode(store: &Store, scope: &PartitionScope, seq: u64) -> Result<Household, ExtractError> {
    let e = store.read_entry(scope, seq)?;
    serde_json::from_slice(&e.payload).map_err(|_| ExtractError::Snapshot {
        partition: scope.partition().to_string(),
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
/// application here. The head first, then the others in file order.
fn mover(h: &Household) -> Option<&Person> {
    let moved = |p: &&Person| {
        !p.giji_head
            && matches!(
                (p.shutoku_date.as_deref().and_then(parse_date), p.tekiyo_start.as_deref().and_then(parse_date)),
                (Some(s), Some(t)) if s < t
            )
    };
    let head = h.persons.iter().filter(|p| p.zokugara == "01").find(moved);
    head.or_else(|| h.persons.iter().find(moved))
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
    let payload = rec
        .encode()
        .map_err(|e| ExtractError::Encode(e.to_string()))?;
    append_record(store, p, Kind::ACCESS_RECORD, payload)?;
    Ok(())
}

/// Runs the extraction over every active partition of the prefecture.
pub fn extract(
    store: &Store,
    scope: &PrefectureScope,
    rules: &Rules,
    who: &Importer,
) -> Result<ExtractReport, ExtractError> {
    let matching = store.matching_key(scope.prefecture())?;
    let token = |kojin_no: &str| matching.token("kojin", kojin_no.as_bytes()).to_vec();
    let partitions: Vec<PartitionId> = store
        .partitions()
        .map_err(|e| ExtractError::Registry(e.to_string()))?
        .into_iter()
        .filter(|i| i.status == PartitionStatus::Active && scope.contains(&i.partition))
        .filter(|i| !store.is_shredded(&i.partition))
        .map(|i| i.partition)
        .collect();
    let mut report = ExtractReport {
        prefecture: scope.prefecture().to_owned(),
        partitions: partitions.len() as u64,
        ..ExtractReport::default()
    };
    for b in &partitions {
        let Some(b_scope) = scope.partition(b) else {
            continue;
        };
        let mut read: Vec<u64> = Vec::new();
        for (_, b_seq) in store.index_latest(b, IndexKind::Household)? {
            let hb = decode(store, &b_scope, b_seq)?;
            read.push(b_seq);
            let Some(person) = mover(&hb) else {
                continue;
            };
            let t = matching.token("kojin", person.kojin_no.as_bytes());
            for a in partitions.iter().filter(|a| *a != b) {
                let slot = store.index_key(a)?.matching_slot(&t);
                let Some(&a_seq) = store.index_seqs(a, IndexKind::Matching, &slot)?.last() else {
                    continue;
                };
                let claim = format!("candidate:{b_seq}:{a}:{a_seq}");
                if store.transmission(b, &claim)?.is_some() {
                    report.already_extracted += 1;
                    continue;
                }
                let Some(pair) = scope.pair(a, b) else {
                    continue;
                };
                // The read of A is recorded in A before anything derived from it is stored.
                let ha = decode(store, pair.from_scope(), a_seq)?;
                record(store, a, &access(who, "continuity_extract", a_seq, 1))?;
                let candidate = build(&ha, a, a_seq, &hb, b_seq, person, rules, &token);
                let payload = zeroize::Zeroizing::new(
                    serde_json::to_vec(&candidate)
                        .map_err(|e| ExtractError::Encode(e.to_string()))?,
                );
                let valid_from =
                    parse_date(&candidate.ido_date).unwrap_or_else(crate::store::today_days);
                let entry = NewEntry::new(
                    Kind::CONTINUITY_CANDIDATE,
                    valid_from,
                    Some(b_seq),
                    payload.to_vec(),
                )?;
                let opts = AppendOptions {
                    claim: Some(Claim {
                        id: claim,
                        digest: [0; 32],
                        households: vec![hb.setai_no.clone()],
                    }),
                    access: Some(access(who, "continuity_candidate", b_seq, 1)),
                    replica_state: None,
                };
                match store.append_with(b, vec![entry], opts) {
                    Ok(r) => report.candidates.push(Made {
                        partition: b.to_string(),
                        seq: r.entries.first().map(|(s, _)| *s),
                        old_hokensha_no: candidate.old_hokensha_no,
                        case: candidate.case,
                        period: candidate.period,
                        suggestion: candidate.suggestion,
                    }),
                    // A concurrent run made it first.
                    Err(AppendError::AlreadyStored { .. }) => report.already_extracted += 1,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        report.households_read += read.len() as u64;
        // B's households were read: one access record for the scan.
        if let (Some(&first), Some(&last)) = (read.iter().min(), read.iter().max()) {
            record(
                store,
                b,
                &access(who, "continuity_scan", first, last - first + 1),
            )?;
        }
    }
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn build(
    ha: &Household,
    a: &PartitionId,
    a_seq: u64,
    hb: &Household,
    b_seq: u64,
    person: &Person,
    rules: &Rules,
    token: &dyn Fn(&str) -> Vec<u8>,
) -> Candidate {
    let members = |h: &Household| Members {
        head: token(&h.head_kojin_no),
        all: h
            .persons
            .iter()
            .map(|p| token(&p.kojin_no))
            .collect::<BTreeSet<_>>(),
    };
    let case = classify(&members(ha), &members(hb));
    let moved = token(&person.kojin_no);
    let old_end = ha
        .persons
        .iter()
        .find(|p| token(&p.kojin_no) == moved)
        .and_then(|p| p.tekiyo_end.clone());
    let start = person.tekiyo_start.clone().unwrap_or_default();
    let (period_name, days, suggestion) =
        match (old_end.as_deref().and_then(parse_date), parse_date(&start)) {
            (Some(end), Some(begin)) => {
                let p = period(end, begin);
                let (name, days) = match p {
                    Period::Contiguous => ("contiguous", 0),
                    Period::Gap(d) => ("gap", d),
                    Period::Overlap(d) => ("overlap", d),
                };
                (name, days, suggest(rules, case, p))
            }
            _ => ("old_not_ended", 0, Suggestion::Manual),
        };
    Candidate {
        schema: CANDIDATE_SCHEMA.to_owned(),
        old_hokensha_no: a.to_string(),
        old_setai_no: ha.setai_no.clone(),
        new_setai_no: hb.setai_no.clone(),
        ido_date: start,
        old_tekiyo_end: old_end,
        period: period_name.to_owned(),
        period_days: days,
        members_before: view(ha),
        members_after: view(hb),
        case: case.code().to_owned(),
        case_label: case.label().to_owned(),
        suggestion: suggestion.code().to_owned(),
        old_seq: a_seq,
        new_seq: b_seq,
    }
}
