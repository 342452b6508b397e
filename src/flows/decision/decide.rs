//! B's 確定指示 (one, or several in one batch) and its acknowledgement of a move's anomalies.

use super::*;

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
