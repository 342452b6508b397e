//! A municipality's own partition, from its credential: checkpoint, entries, proofs, and
//! the lookup of a household.

use super::*;
use crate::ledger::{Seq, TreeSize};

// ---- municipality: own partition, from the credential ----

#[derive(Serialize)]
pub struct CheckpointJson {
    pub partition: String,
    pub size: u64,
    pub root: String,
    pub checkpoint: String,
    pub verifier_key: String,
}

pub(crate) fn checkpoint_json(store: &Store, p: &PartitionId) -> Result<CheckpointJson, ApiError> {
    let cp = store
        .checkpoint_parsed(p)?
        .ok_or_else(|| ApiError::not_found("partition"))?;
    let note = store
        .checkpoint(p)?
        .ok_or_else(|| ApiError::not_found("partition"))?;
    let key = store
        .verifier_key(p)
        .ok_or_else(|| ApiError::not_found("partition"))?;
    Ok(CheckpointJson {
        partition: p.to_string(),
        size: cp.size,
        root: cp.root.to_base64(),
        checkpoint: note,
        verifier_key: key.to_text(),
    })
}

pub(crate) async fn own_checkpoint(
    State(state): State<Arc<AppState>>,
    who: Municipality,
) -> Result<Json<CheckpointJson>, ApiError> {
    let p = who.scope.partition().clone();
    Ok(Json(
        blocking(&state, move |s| checkpoint_json(s, &p)).await?,
    ))
}

/// One decrypted entry as JSON. The payload is base64: its schema belongs to the kind.
#[derive(Serialize)]
pub struct EntryJson {
    pub seq: u64,
    pub kind: &'static str,
    pub kind_code: u16,
    pub tx_time_ms: u64,
    pub valid_from_days: i32,
    pub ref_seq: Option<u64>,
    pub leaf_hash: String,
    pub key_id: u32,
    pub payload: String,
}

pub(crate) fn entry_json(e: &Entry) -> EntryJson {
    EntryJson {
        seq: e.header.seq,
        kind: e.header.kind.name(),
        kind_code: e.header.kind.code(),
        tx_time_ms: e.header.tx_time,
        valid_from_days: e.header.valid_from,
        ref_seq: e.header.ref_seq,
        leaf_hash: e.leaf_hash.to_base64(),
        key_id: e.key_id,
        payload: B64.encode(&e.payload[..]),
    }
}

#[derive(Serialize)]
pub struct EntryResponse {
    pub entry: EntryJson,
    /// Seq of the access record this read appended (none for open kinds).
    pub access_record_seq: Option<u64>,
}

pub(crate) async fn own_entry(
    State(state): State<Arc<AppState>>,
    who: Municipality,
    ApiPath(seq): ApiPath<u64>,
) -> Result<Json<EntryResponse>, ApiError> {
    let scope = who.scope.clone();
    let entry = blocking(&state, move |s| Ok(s.read_entry(&scope, seq)?)).await?;
    // Open entries (key events, access records) hold no personal data: no record.
    let access_record_seq = if entry.header.kind.class() != Class::Sealed {
        None
    } else {
        Some(
            record_access(
                &state,
                who.scope.partition(),
                &who.actor,
                Touched {
                    route: "GET /v1/entries/{seq}",
                    purpose: "entry_read",
                    kinds: [entry.header.kind.code()].into(),
                    first_seq: seq,
                    count: 1,
                },
            )
            .await?,
        )
    };
    Ok(Json(EntryResponse {
        entry: entry_json(&entry),
        access_record_seq,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RangeQuery {
    from: u64,
    limit: Option<u64>,
}

#[derive(Serialize)]
pub struct EntriesResponse {
    pub entries: Vec<EntryJson>,
    /// `from` of the next page, if there are more entries.
    pub next: Option<u64>,
    pub access_record_seq: Option<u64>,
}

pub(crate) fn read_page(
    store: &Store,
    scope: &PartitionScope,
    from: u64,
    limit: u64,
) -> Result<(Vec<Entry>, u64), ApiError> {
    let size = store.size(scope.partition())?;
    let entries = store.read_range(scope, Seq(from), limit)?;
    Ok((entries, size))
}

pub(crate) fn page_limit(limit: Option<u64>, max: u64) -> Result<u64, ApiError> {
    match limit.unwrap_or(max) {
        0 => Err(ApiError::bad_request(
            "bad_limit",
            "limit must be at least 1",
        )),
        n if n > max => Err(ApiError::bad_request(
            "bad_limit",
            format!("limit must be at most {max}"),
        )),
        n => Ok(n),
    }
}

pub(crate) async fn own_entries(
    State(state): State<Arc<AppState>>,
    who: Municipality,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<Json<EntriesResponse>, ApiError> {
    let limit = page_limit(q.limit, MAX_ENTRIES_PER_PAGE)?;
    let scope = who.scope.clone();
    let from = q.from;
    let (entries, size) = blocking(&state, move |s| read_page(s, &scope, from, limit)).await?;
    let count = entries.len() as u64;
    let next = (from + count < size && count > 0).then_some(from + count);
    let sealed: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.header.kind.class() == Class::Sealed)
        .collect();
    let access_record_seq = if let (Some(first), Some(last)) = (sealed.first(), sealed.last()) {
        Some(
            record_access(
                &state,
                who.scope.partition(),
                &who.actor,
                Touched {
                    route: "GET /v1/entries",
                    purpose: "entry_read",
                    kinds: sealed.iter().map(|e| e.header.kind.code()).collect(),
                    first_seq: first.header.seq,
                    count: last.header.seq - first.header.seq + 1,
                },
            )
            .await?,
        )
    } else {
        None
    };
    Ok(Json(EntriesResponse {
        entries: entries.iter().map(entry_json).collect(),
        next,
        access_record_seq,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InclusionQuery {
    seq: u64,
    size: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConsistencyQuery {
    from: u64,
    to: Option<u64>,
}

pub(crate) async fn inclusion(
    state: &Arc<AppState>,
    p: PartitionId,
    q: InclusionQuery,
) -> Result<Json<InclusionProofJson>, ApiError> {
    Ok(Json(
        blocking(state, move |s| {
            Ok(s.prove_inclusion(&p, Seq(q.seq), q.size.map(TreeSize))?)
        })
        .await?,
    ))
}

pub(crate) async fn consistency(
    state: &Arc<AppState>,
    p: PartitionId,
    q: ConsistencyQuery,
) -> Result<Json<ConsistencyProofJson>, ApiError> {
    Ok(Json(
        blocking(state, move |s| {
            Ok(s.prove_consistency(&p, TreeSize(q.from), q.to.map(TreeSize))?)
        })
        .await?,
    ))
}

pub(crate) async fn own_inclusion(
    State(state): State<Arc<AppState>>,
    who: Municipality,
    ApiQuery(q): ApiQuery<InclusionQuery>,
) -> Result<Json<InclusionProofJson>, ApiError> {
    inclusion(&state, who.scope.partition().clone(), q).await
}

pub(crate) async fn own_consistency(
    State(state): State<Arc<AppState>>,
    who: Municipality,
    ApiQuery(q): ApiQuery<ConsistencyQuery>,
) -> Result<Json<ConsistencyProofJson>, ApiError> {
    consistency(&state, who.scope.partition().clone(), q).await
}
