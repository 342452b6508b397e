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
    Snapshot { partition: String, seq: u64 },
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

/// What one extraction run needs throughout.
struct Job<'a> {
    store: &'a Store,
    scope: &'a PrefectureScope,
    rules: &'a Rules,
    who: &'a Importer,
    matching: &'a IndexKey,
    token: &'a dyn Fn(&str) -> Vec<u8>,
    partitions: &'a [PartitionId],
}

/// A move found from A: its candidate as built now and the move's latest version, or `None`
/// when the move's latest version was built from the same two snapshots (nothing read).
type Found = Option<(Candidate, Option<(u64, Candidate)>)>;

/// The name of the extraction's cursors (`Store::job_cursor`).
pub const EXTRACT_JOB: &str = "continuity_extract";

/// Households to look at per partition: 世帯番号 → the seq of its newest snapshot, and the
/// snapshot itself when finding the other ends of moves already read it (read once, and
/// recorded once).
type Visit = HashMap<PartitionId, std::collections::BTreeMap<Vec<u8>, (u64, Option<Household>)>>;

/// A household to look at: its 世帯番号, the seq of its newest snapshot, and the snapshot
/// when it was read already.
type Seen = (Vec<u8>, u64, Option<Household>);

impl Job<'_> {
    /// Looks at B's households of this run: each one that came from elsewhere in the
    /// prefecture is a move, filed as a candidate or a new version of one.
    fn visit(
        &self,
        b: &PartitionId,
        households: std::collections::BTreeMap<Vec<u8>, (u64, Option<Household>)>,
        as_of: i32,
        report: &mut ExtractReport,
    ) -> Result<(), ExtractError> {
        let (store, who) = (self.store, self.who);
        let Some(b_scope) = self.scope.partition(b) else {
            return Ok(());
        };
        if households.is_empty() {
            return Ok(());
        }
        let b_key = store.index_key(b)?;
        let mut moves = Known::new(store, &b_scope, who);
        // Households not read yet by this run are read (and recorded) now.
        let mut decoded: Vec<u64> = Vec::new();
        for (b_seq, known) in households.into_values() {
            let hb = match known {
                Some(h) => h,
                None => {
                    decoded.push(b_seq);
                    decode(store, &b_scope, b_seq)?
                }
            };
            report.households_read += 1;
            let Some((person, reset)) = mover(&hb) else {
                continue;
            };
            let found = self.predecessors(b, &b_key, &mut moves, (&hb, b_seq), person, report)?;
            // Two households of the prefecture that held the person before B: a person must
            // say which one the move came from.
            let ambiguous = found.len() > 1;
            for (mut candidate, previous) in found.into_iter().flatten() {
                if reset {
                    candidate.anomalies.push(ANOMALY_SHUTOKU_RESET.to_owned());
                }
                if ambiguous {
                    candidate.anomalies.push(ANOMALY_AMBIGUOUS.to_owned());
                }
                let here = (b, &hb, b_seq);
                self.file(here, (candidate, previous), as_of, &mut moves, report)?;
            }
        }
        // B's households read here: one access record for the scan (those read while
        // finding the other ends of moves were recorded then).
        if let (Some(&first), Some(&last)) = (decoded.iter().min(), decoded.iter().max()) {
            record(
                store,
                b,
                &access(who, "continuity_scan", first, last - first + 1),
            )?;
        }
        Ok(())
    }

    /// Files one move found in B: a new candidate when it starts in the window (else it is
    /// listed as outside), a new version when the candidate changed, or nothing.
    fn file(
        &self,
        (b, hb, b_seq): (&PartitionId, &Household, u64),
        (mut candidate, previous): (Candidate, Option<(u64, Candidate)>),
        as_of: i32,
        moves: &mut Known<'_>,
        report: &mut ExtractReport,
    ) -> Result<(), ExtractError> {
        let claim = match previous {
            None if !self.in_window(&candidate, as_of) => {
                report.outside_window.push(Outside {
                    partition: b.to_string(),
                    old_hokensha_no: candidate.old_hokensha_no.clone(),
                    ido_date: candidate.ido_date.clone(),
                });
                return Ok(());
            }
            None => format!("move:{}", candidate.move_id),
            Some((seq, earlier)) => {
                let changes = candidate.changes_from(&earlier);
                if changes.is_empty() {
                    report.already_extracted += 1;
                    return Ok(());
                }
                candidate.supersedes = Some(seq);
                candidate.changes = changes;
                format!("move:{}:{}", candidate.move_id, version_tag(&candidate))
            }
        };
        let Some(seq) = append_candidate(self.store, b, hb, b_seq, &candidate, claim, self.who)?
        else {
            report.already_extracted += 1;
            return Ok(());
        };
        report.candidates.push(Made {
            partition: b.to_string(),
            seq: Some(seq),
            old_hokensha_no: candidate.old_hokensha_no.clone(),
            case: candidate.case.clone(),
            period: candidate.period.clone(),
            suggestion: candidate.suggestion.clone(),
            anomalies: candidate.anomalies.clone(),
        });
        moves.add(seq, candidate);
        Ok(())
    }

    /// Whether a new move is proposed on `as_of`: it starts in the window, or its start is
    /// unknown (a person must look at it).
    fn in_window(&self, candidate: &Candidate, as_of: i32) -> bool {
        parse_date(&candidate.ido_date).is_none_or(|start| self.rules.in_window(start, as_of))
    }

    /// What changed since the last run: each partition's size now (the cursors to store at
    /// the end), and per partition the households to look at: those with a snapshot since
    /// its cursor, plus, for every person of such a household, their newest household in
    /// each other partition (a 転出 that arrives after the 転入 makes B's unchanged
    /// household the end of a move).
    fn changes(&self) -> Result<(Vec<(PartitionId, u64)>, Visit), ExtractError> {
        let store = self.store;
        let mut ends = Vec::new();
        let mut visit: Visit = HashMap::new();
        let mut changed: Vec<(PartitionId, Vec<Seen>)> = Vec::new();
        let mut reads = Reads::default();
        // A first run looks at every household of every partition already.
        let mut first_run = true;
        for p in self.partitions {
            let size = store.size(p)?;
            let from = store.job_cursor(EXTRACT_JOB, p)?.unwrap_or(0);
            first_run &= from == 0;
            ends.push((p.clone(), size));
            let now: Vec<Seen> = if from == 0 {
                // Every household: the index's newest snapshot of each.
                store
                    .index_latest(p, IndexKind::Household)?
                    .into_iter()
                    .filter(|(_, seq)| *seq < size)
                    .map(|(key, seq)| (key, seq, None))
                    .collect()
            } else {
                // Only the log since the cursor: O(changes), not O(households).
                self.snapshots_since(p, from, size, &mut reads)?
            };
            changed.push((p.clone(), now.clone()));
            visit
                .entry(p.clone())
                .or_default()
                .extend(now.into_iter().map(|(key, seq, h)| (key, (seq, h))));
        }
        for (x, households) in changed.into_iter().filter(|_| !first_run) {
            let Some(x_scope) = self.scope.partition(&x) else {
                continue;
            };
            for (_, seq, known) in households {
                let hx = match known {
                    Some(h) => h,
                    None => {
                        reads.add(&x, access(self.who, "continuity_scan", seq, 1));
                        decode(store, &x_scope, seq)?
                    }
                };
                for person in hx.persons.iter().filter(|p| !p.giji_head) {
                    self.elsewhere(&x, person, &mut visit, &mut reads)?;
                }
                visit
                    .entry(x.clone())
                    .or_default()
                    .insert(hx.setai_no.as_bytes().to_vec(), (seq, Some(hx)));
            }
        }
        // Durable before anything derived from these reads is stored.
        reads.flush(store)?;
        Ok((ends, visit))
    }

    /// The newest snapshot of each household with a snapshot in `[from, to)` of `p`, read
    /// from the log (each read recorded): 世帯番号, seq and the snapshot.
    fn snapshots_since(
        &self,
        p: &PartitionId,
        from: u64,
        to: u64,
        reads: &mut Reads,
    ) -> Result<Vec<Seen>, ExtractError> {
        let Some(scope) = self.scope.partition(p) else {
            return Ok(Vec::new());
        };
        let mut newest: std::collections::BTreeMap<Vec<u8>, (u64, Household)> =
            std::collections::BTreeMap::new();
        for (i, raw) in self.store.envelopes(p, from, to)?.iter().enumerate() {
            let seq = from + i as u64;
            let kind = crate::ledger::EnvelopeRef::decode(raw)
                .map_err(|_| ExtractError::Snapshot {
                    partition: p.to_string(),
                    seq,
                })?
                .header
                .kind;
            if !matches!(kind, Kind::HOUSEHOLD_SNAPSHOT | Kind::HOUSEHOLD_CORRECTION) {
                continue;
            }
            let h = decode(self.store, &scope, seq)?;
            reads.add(p, access(self.who, "continuity_scan", seq, 1));
            newest.insert(h.setai_no.as_bytes().to_vec(), (seq, h));
        }
        Ok(newest
            .into_iter()
            .map(|(key, (seq, h))| (key, seq, Some(h)))
            .collect())
    }

    /// Adds to `visit` the newest household holding `person` in each partition but `x`.
    fn elsewhere(
        &self,
        x: &PartitionId,
        person: &Person,
        visit: &mut Visit,
        reads: &mut Reads,
    ) -> Result<(), ExtractError> {
        let store = self.store;
        let t = self.matching.token("kojin", person.kojin_no.as_bytes());
        for b in self.partitions.iter().filter(|b| *b != x) {
            let Some(seq) = self.newest_holding(b, &t)? else {
                continue;
            };
            let Some(b_scope) = self.scope.partition(b) else {
                continue;
            };
            let hb = decode(store, &b_scope, seq)?;
            reads.add(b, access(self.who, "continuity_scan", seq, 1));
            let key = hb.setai_no.as_bytes().to_vec();
            if let Some(&latest) = store.index_seqs(b, IndexKind::Household, &key)?.last() {
                // The snapshot read is the household's newest: keep it for the visit.
                let read = (latest == seq).then_some(hb);
                visit
                    .entry(b.clone())
                    .or_default()
                    .insert(key, (latest, read));
            }
        }
        Ok(())
    }

    /// The newest snapshot of partition `p` that holds the person with prefecture matching
    /// token `t` (found through `p`'s own matching slot).
    fn newest_holding(&self, p: &PartitionId, t: &[u8; 32]) -> Result<Option<u64>, ExtractError> {
        let slot = self.store.index_key(p)?.matching_slot(t);
        Ok(self
            .store
            .index_seqs(p, IndexKind::Matching, &slot)?
            .last()
            .copied())
    }

    /// Every household of another partition that held `person` before B: one entry per A.
    /// Reads of A are recorded in A first.
    fn predecessors(
        &self,
        b: &PartitionId,
        b_key: &IndexKey,
        moves: &mut Known<'_>,
        (hb, b_seq): (&Household, u64),
        person: &Person,
        report: &mut ExtractReport,
    ) -> Result<Vec<Found>, ExtractError> {
        let store = self.store;
        let t = self.matching.token("kojin", person.kojin_no.as_bytes());
        let mut found = Vec::new();
        for a in self.partitions.iter().filter(|a| *a != b) {
            let Some(a_seq) = self.newest_holding(a, &t)? else {
                continue;
            };
            // A candidate of the old form (one per snapshot pair) stands for its move.
            if store
                .transmission(b, &format!("candidate:{b_seq}:{a}:{a_seq}"))?
                .is_some()
            {
                report.already_extracted += 1;
                continue;
            }
            let Some(pair) = self.scope.pair(a, b) else {
                continue;
            };
            let id = move_id(b_key, a, &t, person.tekiyo_start.as_deref().unwrap_or(""));
            let previous = moves.latest(&id)?;
            // The same two snapshots as the move's latest version: nothing to read.
            if previous
                .as_ref()
                .is_some_and(|(_, c)| c.old_seq == a_seq && c.new_seq == b_seq)
            {
                report.already_extracted += 1;
                found.push(None);
                continue;
            }
            // The read of A is recorded in A before anything derived from it is stored.
            let ha = decode(store, pair.from_scope(), a_seq)?;
            record(store, a, &access(self.who, "continuity_extract", a_seq, 1))?;
            // A household the person joined only after B's start (the next move of an
            // A→B→C chain, seen from B) is not where they came from.
            if !came_before(&ha, person, &t, self.token) {
                continue;
            }
            let mut candidate = build(&ha, a, a_seq, hb, b_seq, person, self.rules, self.token);
            candidate.move_id = id;
            found.push(Some((candidate, previous)));
        }
        Ok(found)
    }
}

/// The moves B already has candidates for, looked up one move at a time through their
/// claims (`T move:<id>…`), so a daily run reads only the moves it meets: move id → the
/// latest version's seq and candidate. Each candidate read is recorded in B.
struct Known<'a> {
    store: &'a Store,
    b: &'a PartitionScope,
    who: &'a Importer,
    seen: HashMap<String, Option<(u64, Candidate)>>,
}

impl<'a> Known<'a> {
    fn new(store: &'a Store, b: &'a PartitionScope, who: &'a Importer) -> Self {
        Known {
            store,
            b,
            who,
            seen: HashMap::new(),
        }
    }

    /// The move's latest version in B, if B has one.
    fn latest(&mut self, move_id: &str) -> Result<Option<(u64, Candidate)>, ExtractError> {
        if let Some(known) = self.seen.get(move_id) {
            return Ok(known.clone());
        }
        let versions = self
            .store
            .claims(self.b.partition(), &format!("move:{move_id}"))?;
        let found = match versions.iter().map(|(_, r)| r.first_seq).max() {
            None => None,
            Some(seq) => {
                let e = self.store.read_entry(self.b, seq)?;
                let rec = self.who.access(
                    "continuity_candidate_read",
                    vec![Kind::CONTINUITY_CANDIDATE.code()],
                    seq,
                    1,
                );
                record(self.store, self.b.partition(), &rec)?;
                let c: Candidate =
                    serde_json::from_slice(&e.payload).map_err(|_| ExtractError::Snapshot {
                        partition: self.b.partition().to_string(),
                        seq,
                    })?;
                Some((seq, c))
            }
        };
        self.seen.insert(move_id.to_owned(), found.clone());
        Ok(found)
    }

    /// A version this run appended.
    fn add(&mut self, seq: u64, c: Candidate) {
        self.seen.insert(c.move_id.clone(), Some((seq, c)));
    }
}

/// Whether the person's 国保 in `old` started before their start in the new household:
/// only such a household can be where a move came from.
fn came_before(
    old: &Household,
    person: &Person,
    matching: &[u8; 32],
    token: &dyn Fn(&str) -> Vec<u8>,
) -> bool {
    let start = |p: &Person| p.tekiyo_start.as_deref().and_then(parse_date);
    let there = old
        .persons
        .iter()
        .find(|p| token(&p.kojin_no).as_slice() == matching.as_slice());
    match (there.and_then(start), start(person)) {
        (Some(a), Some(b)) => a < b,
        // Without dates the match stands; the candidate shows what is missing.
        _ => true,
    }
}

/// A move's identity: the same for every snapshot of one household's move from A into B,
/// whatever later 異動 or 訂正 change (docs/decisions.md).
fn move_id(b_key: &IndexKey, a: &PartitionId, matching: &[u8; 32], start: &str) -> String {
    let mac = b_key.token_parts(
        "move",
        &[
            &[a.as_str().len() as u8],
            a.as_str().as_bytes(),
            matching,
            start.as_bytes(),
        ],
    );
    mac.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// A version's claim suffix: its content, so a rerun over the same data adds nothing.
fn version_tag(c: &Candidate) -> String {
    let json = serde_json::to_vec(c).unwrap_or_default();
    let h = crate::ledger::Hash::digest(&[&json]);
    h.as_bytes()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Appends a candidate version to B under its claim; `None` when the claim already exists
/// (a concurrent or earlier run made it).
fn append_candidate(
    store: &Store,
    b: &PartitionId,
    hb: &Household,
    b_seq: u64,
    candidate: &Candidate,
    claim: String,
    who: &Importer,
) -> Result<Option<u64>, ExtractError> {
    if store.transmission(b, &claim)?.is_some() {
        return Ok(None);
    }
    let payload =
        zeroize::Zeroizing::new(serde_json::to_vec(candidate).map_err(ExtractError::Json)?);
    let valid_from = parse_date(&candidate.ido_date).unwrap_or_else(crate::store::today_days);
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
        Ok(r) => Ok(r.entries.first().map(|(s, _)| *s)),
        Err(AppendError::AlreadyStored { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
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
    let cases = detect(&members(ha), &members(hb));
    let case = cases.first().copied().unwrap_or(Case::Other);
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
                let p = rules.period(end, begin);
                let (name, days) = match p {
                    Period::Contiguous => ("contiguous", 0),
                    Period::Gap(d) => ("gap", d),
                    Period::Overlap(d) => ("overlap", d),
                };
                (name, days, combine(rules, &cases, p))
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
        cases: cases
            .iter()
            .map(|c| CaseView {
                code: c.code().to_owned(),
                label: c.label().to_owned(),
                suggestion: rules.suggestion(*c).code().to_owned(),
            })
            .collect(),
        suggestion: suggestion.code().to_owned(),
        old_seq: a_seq,
        new_seq: b_seq,
        move_id: String::new(),
        supersedes: None,
        anomalies: match period_name {
            "contiguous" => Vec::new(),
            other => vec![other.to_owned()],
        },
        changes: Vec::new(),
    }
}
