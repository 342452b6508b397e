//! A candidate from two households: the move's identity, the period, the 参酌基準 cases
//! and the suggestion.

use super::*;

/// Whether the person's 国保 in `old` started before their start in the new household:
/// only such a household can be where a move came from.
pub(super) fn came_before(
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
pub(super) fn move_id(
    b_key: &IndexKey,
    a: &PartitionId,
    matching: &[u8; 32],
    start: &str,
) -> String {
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
pub(super) fn version_tag(c: &Candidate) -> String {
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
pub(super) fn append_candidate(
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

/// The two snapshots a candidate compares: A's household (in partition `a`, at `a_seq`), where
/// the person came from, and B's (at `b_seq`), where they arrived.
#[derive(Clone, Copy)]
pub(super) struct Snapshots<'a> {
    pub a: &'a PartitionId,
    pub ha: &'a Household,
    pub a_seq: u64,
    pub hb: &'a Household,
    pub b_seq: u64,
}

pub(super) fn build(
    snapshots: Snapshots<'_>,
    person: &Person,
    rules: &Rules,
    token: &dyn Fn(&str) -> Vec<u8>,
) -> Candidate {
    let Snapshots {
        a,
        ha,
        a_seq,
        hb,
        b_seq,
    } = snapshots;
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
