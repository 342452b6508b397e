//! What the 連合会's operator sees across the prefecture: each municipality's counts and
//! the moves with anomalies (counts and codes, never who).

use super::*;

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
/// read is an access record in B (`purpose`, the record kinds read), durable before `f` sees
/// the states. The operator's lists and the confirmation run read through it.
pub(super) fn each_partition(
    store: &Store,
    scope: &PrefectureScope,
    who: &Importer,
    purpose: &str,
    kinds: &[Kind],
    mut f: impl FnMut(&PartitionId, Vec<CandidateState>) -> Result<(), DecisionError>,
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
            let codes = kinds.iter().map(|k| k.code()).collect();
            record_access(store, b, who, purpose, codes, range)?;
        }
        f(b, states)?;
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
    let purpose = "continuity_anomalies";
    each_partition(store, scope, who, purpose, &FLOW4_KINDS, |b, states| {
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
        Ok(())
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
    let purpose = "continuity_workload";
    each_partition(store, scope, who, purpose, &FLOW4_KINDS, |b, states| {
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
        Ok(())
    })?;
    Ok(out)
}
