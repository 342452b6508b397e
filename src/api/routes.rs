//! Handlers of this routes and the route table the router and the OpenAPI test share.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{MethodRouter, get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::access::{Touched, blocking, record_access};
use super::auth::{Auditor, Municipality, OpsSupport, Replicator};
use super::error::ApiError;
use super::error::Detail;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::wire::{CosignatureRequest, CosignatureResponse};
use super::{AppState, ServerRole, request_id};
use crate::crypto::PartitionScope;
use crate::crypto::credential::Role;
use crate::ledger::payload::ProvisionRecord;
use crate::ledger::proof_json::{ConsistencyProofJson, InclusionProofJson};
use crate::ledger::{Class, Kind, PartitionId};
use crate::store::{Entry, NewEntry, PartitionStatus, Store};

pub use crate::flows::feed::{FeedEntry, FeedResponse, forwarded_kind};

/// Path of the transmission import route (it has its own body limit).
pub const TRANSMISSIONS_PATH: &str = "/v1/transmissions";
/// Path of the 高額該当情報 import route (the same body limit as transmissions).
pub const KOGAKU_PATH: &str = "/v1/kogaku";

/// Most entries one range read or feed page returns.
pub const MAX_ENTRIES_PER_PAGE: u64 = 100;
/// Most envelopes one audit page returns.
pub const MAX_ENVELOPES_PER_PAGE: u64 = 1000;
/// Most checkpoints one audit page returns.
pub const MAX_CHECKPOINTS_PER_PAGE: usize = 1000;

/// One route: method, path template, who may call it, on which server roles it exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    pub method: &'static str,
    pub path: &'static str,
    /// `None`: no credential needed.
    pub role: Option<Role>,
    pub servers: &'static [ServerRole],
}

const BOTH: &[ServerRole] = &[ServerRole::Hub, ServerRole::Intermediate];
const HUB: &[ServerRole] = &[ServerRole::Hub];
const INTERMEDIATE: &[ServerRole] = &[ServerRole::Intermediate];

/// Every route of kukaku. The router is built from this table, and the OpenAPI test compares
/// it with docs/openapi.json, so the two cannot drift.
pub fn table() -> Vec<(RouteSpec, MethodRouter<Arc<AppState>>)> {
    let spec = |method, path, role, servers| RouteSpec {
        method,
        path,
        role,
        servers,
    };
    vec![
        (spec("GET", "/healthz", None, BOTH), get(healthz)),
        (spec("GET", "/readyz", None, BOTH), get(readyz)),
        (
            spec("POST", TRANSMISSIONS_PATH, Some(Role::Municipality), HUB),
            post(post_transmission),
        ),
        (
            spec(
                "GET",
                "/v1/transmissions/{id}",
                Some(Role::Municipality),
                HUB,
            ),
            get(get_transmission),
        ),
        (
            spec("POST", KOGAKU_PATH, Some(Role::Municipality), HUB),
            post(post_kogaku),
        ),
        (
            spec("POST", "/v1/lookups", Some(Role::Municipality), HUB),
            post(lookup),
        ),
        (
            spec("GET", "/v1/checkpoint", Some(Role::Municipality), HUB),
            get(own_checkpoint),
        ),
        (
            spec("GET", "/v1/entries/{seq}", Some(Role::Municipality), HUB),
            get(own_entry),
        ),
        (
            spec("GET", "/v1/entries", Some(Role::Municipality), HUB),
            get(own_entries),
        ),
        (
            spec("GET", "/v1/proofs/inclusion", Some(Role::Municipality), HUB),
            get(own_inclusion),
        ),
        (
            spec(
                "GET",
                "/v1/proofs/consistency",
                Some(Role::Municipality),
                HUB,
            ),
            get(own_consistency),
        ),
        (
            spec(
                "POST",
                "/v1/continuity/extract",
                Some(Role::ContinuityOperator),
                HUB,
            ),
            post(super::continuity::extract),
        ),
        (
            spec(
                "POST",
                "/v1/continuity/confirm",
                Some(Role::ContinuityOperator),
                HUB,
            ),
            post(super::continuity::confirm),
        ),
        (
            spec(
                "GET",
                "/v1/continuity/candidates",
                Some(Role::Municipality),
                HUB,
            ),
            get(super::continuity::list),
        ),
        (
            spec(
                "GET",
                "/v1/continuity/candidates/{seq}",
                Some(Role::Municipality),
                HUB,
            ),
            get(super::continuity::one),
        ),
        (
            spec(
                "POST",
                "/v1/continuity/candidates/{seq}/decision",
                Some(Role::Municipality),
                HUB,
            ),
            post(super::continuity::decide),
        ),
        (
            spec(
                "POST",
                "/v1/continuity/candidates/{seq}/acknowledgement",
                Some(Role::Municipality),
                HUB,
            ),
            post(super::continuity::acknowledge),
        ),
        (
            spec(
                "GET",
                "/v1/continuity/anomalies",
                Some(Role::ContinuityOperator),
                HUB,
            ),
            get(super::continuity::anomalies),
        ),
        (
            spec(
                "GET",
                "/v1/continuity/results",
                Some(Role::Municipality),
                HUB,
            ),
            get(super::continuity::results),
        ),
        (
            spec(
                "GET",
                "/v1/continuity/carryover.csv",
                Some(Role::Municipality),
                HUB,
            ),
            get(super::continuity::carryover_csv),
        ),
        (
            spec("GET", "/v1/feed/{partition}", Some(Role::Replicator), HUB),
            get(feed),
        ),
        (
            spec(
                "POST",
                "/v1/feed/{partition}/cosignatures",
                Some(Role::Replicator),
                HUB,
            ),
            post(post_cosignature),
        ),
        (
            spec(
                "POST",
                "/v1/exports/history-file",
                Some(Role::OpsSupport),
                INTERMEDIATE,
            ),
            post(export_history),
        ),
        (
            spec("GET", "/v1/audit/partitions", Some(Role::Auditor), BOTH),
            get(audit_partitions),
        ),
        (
            spec(
                "GET",
                "/v1/audit/partitions/{partition}/envelopes",
                Some(Role::Auditor),
                BOTH,
            ),
            get(audit_envelopes),
        ),
        (
            spec(
                "GET",
                "/v1/audit/partitions/{partition}/checkpoints",
                Some(Role::Auditor),
                BOTH,
            ),
            get(audit_checkpoints),
        ),
        (
            spec(
                "GET",
                "/v1/audit/partitions/{partition}/proofs/inclusion",
                Some(Role::Auditor),
                BOTH,
            ),
            get(audit_inclusion),
        ),
        (
            spec(
                "GET",
                "/v1/audit/partitions/{partition}/proofs/consistency",
                Some(Role::Auditor),
                BOTH,
            ),
            get(audit_consistency),
        ),
    ]
}

// ---- any role ----

#[derive(Serialize)]
struct Health {
    status: &'static str,
    role: ServerRole,
}

async fn healthz(State(state): State<Arc<AppState>>) -> Json<Health> {
    Json(Health {
        status: "ok",
        role: state.role,
    })
}

async fn readyz(State(state): State<Arc<AppState>>) -> Result<Json<Health>, ApiError> {
    if state.store.is_poisoned() {
        return Err(ApiError::unavailable(
            "a write failed; the store refuses writes until it is reopened",
        ));
    }
    if !state.store.writer_alive() {
        return Err(ApiError::unavailable("the writer has stopped"));
    }
    Ok(Json(Health {
        status: "ready",
        role: state.role,
    }))
}

// ---- municipality: own partition, from the credential ----

#[derive(Serialize)]
pub struct CheckpointJson {
    pub partition: String,
    pub size: u64,
    pub root: String,
    pub checkpoint: String,
    pub verifier_key: String,
}

fn checkpoint_json(store: &Store, p: &PartitionId) -> Result<CheckpointJson, ApiError> {
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

async fn own_checkpoint(
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

fn entry_json(e: &Entry) -> EntryJson {
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

async fn own_entry(
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
struct RangeQuery {
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

fn read_page(
    store: &Store,
    scope: &PartitionScope,
    from: u64,
    limit: u64,
) -> Result<(Vec<Entry>, u64), ApiError> {
    let size = store.size(scope.partition())?;
    let entries = store.read_range(scope, from, limit)?;
    Ok((entries, size))
}

fn page_limit(limit: Option<u64>, max: u64) -> Result<u64, ApiError> {
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

async fn own_entries(
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
struct InclusionQuery {
    seq: u64,
    size: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsistencyQuery {
    from: u64,
    to: Option<u64>,
}

async fn inclusion(
    state: &Arc<AppState>,
    p: PartitionId,
    q: InclusionQuery,
) -> Result<Json<InclusionProofJson>, ApiError> {
    Ok(Json(
        blocking(state, move |s| Ok(s.prove_inclusion(&p, q.seq, q.size)?)).await?,
    ))
}

async fn consistency(
    state: &Arc<AppState>,
    p: PartitionId,
    q: ConsistencyQuery,
) -> Result<Json<ConsistencyProofJson>, ApiError> {
    Ok(Json(
        blocking(state, move |s| Ok(s.prove_consistency(&p, q.from, q.to)?)).await?,
    ))
}

async fn own_inclusion(
    State(state): State<Arc<AppState>>,
    who: Municipality,
    ApiQuery(q): ApiQuery<InclusionQuery>,
) -> Result<Json<InclusionProofJson>, ApiError> {
    inclusion(&state, who.scope.partition().clone(), q).await
}

async fn own_consistency(
    State(state): State<Arc<AppState>>,
    who: Municipality,
    ApiQuery(q): ApiQuery<ConsistencyQuery>,
) -> Result<Json<ConsistencyProofJson>, ApiError> {
    consistency(&state, who.scope.partition().clone(), q).await
}

// ---- municipality: flow 5 transmissions ----

/// `POST /v1/transmissions`: both files of a transmission, base64, with the declared
/// encoding.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransmissionRequest {
    pub transmission_id: String,
    /// `utf-8` or `cp932`.
    pub encoding: String,
    /// 世帯ファイル, base64.
    pub setai_file: String,
    /// 個人ファイル, base64.
    pub kojin_file: String,
}

impl std::fmt::Debug for TransmissionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TransmissionRequest(<redacted>)")
    }
}

fn rejected(r: crate::flows::transmission::Rejected) -> ApiError {
    use crate::flows::transmission::MAX_LISTED_PROBLEMS;
    let total = r.problems.len();
    let details = r
        .problems
        .iter()
        .take(MAX_LISTED_PROBLEMS)
        .map(|p| Detail {
            file: Some(p.file.name().to_owned()),
            line: Some(p.line),
            field: p.field.map(str::to_owned),
            reason: p.reason.to_owned(),
        })
        .collect();
    let listed = total.min(MAX_LISTED_PROBLEMS);
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
        format!("transmission rejected, nothing stored: {total} problem(s), {listed} listed"),
    )
    .with_details(details)
}

async fn post_transmission(
    State(state): State<Arc<AppState>>,
    who: Municipality,
    ApiJson(req): ApiJson<TransmissionRequest>,
) -> Result<(StatusCode, Json<crate::flows::import::ImportOutcome>), ApiError> {
    use crate::flows::import::{Importer, import_checked};
    use crate::flows::transmission::Encoding;
    let encoding = Encoding::parse(&req.encoding).ok_or_else(|| {
        ApiError::bad_request("unknown_encoding", "encoding must be utf-8 or cp932")
    })?;
    let decode = |field: &str, text: &str| {
        B64.decode(text).map_err(|_| {
            ApiError::bad_request("bad_base64", "a file is not valid base64").with_details(vec![
                Detail {
                    file: None,
                    line: None,
                    field: Some(field.to_owned()),
                    reason: "base64".into(),
                },
            ])
        })
    };
    let setai = zeroize::Zeroizing::new(decode("setai_file", &req.setai_file)?);
    let kojin = zeroize::Zeroizing::new(decode("kojin_file", &req.kojin_file)?);
    drop(req.setai_file);
    drop(req.kojin_file);
    let importer = Importer {
        actor: who.actor.credential.to_string(),
        role: who.actor.role.name().to_owned(),
        route: format!("POST {TRANSMISSIONS_PATH}"),
        request_id: request_id::current(),
    };
    let scope = who.scope;
    let id = req.transmission_id;
    let outcome = blocking(&state, move |s| {
        import_checked(s, &scope, &id, encoding, &setai, &kojin, &importer).map_err(import_error)
    })
    .await?;
    Ok((created_or_replayed(&outcome), Json(outcome)))
}

pub(crate) fn import_error(e: crate::flows::import::ImportError) -> ApiError {
    use crate::flows::import::ImportError;
    match e {
        ImportError::Rejected(r) => rejected(r),
        ImportError::Conflict => ApiError::new(
            StatusCode::CONFLICT,
            "transmission_conflict",
            "this transmission id was already used with different content",
        ),
        ImportError::Encoding => {
            ApiError::bad_request("unknown_encoding", "encoding must be utf-8 or cp932")
        }
        ImportError::Append(a) => ApiError::from(a),
        ImportError::Read(r) => ApiError::from(r),
        other => ApiError::internal(other),
    }
}

fn created_or_replayed(outcome: &crate::flows::import::ImportOutcome) -> StatusCode {
    if outcome.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    }
}

/// A 高額該当情報ファイル (docs/domain.md §9.4) in the declared encoding.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KogakuRequest {
    pub transmission_id: String,
    /// `utf-8` or `cp932`.
    pub encoding: String,
    /// 高額該当情報ファイル, base64.
    pub kogaku_file: String,
}

impl std::fmt::Debug for KogakuRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KogakuRequest(<redacted>)")
    }
}

async fn post_kogaku(
    State(state): State<Arc<AppState>>,
    who: Municipality,
    ApiJson(req): ApiJson<KogakuRequest>,
) -> Result<(StatusCode, Json<crate::flows::import::ImportOutcome>), ApiError> {
    use crate::flows::import::Importer;
    use crate::flows::transmission::Encoding;
    let encoding = Encoding::parse(&req.encoding).ok_or_else(|| {
        ApiError::bad_request("unknown_encoding", "encoding must be utf-8 or cp932")
    })?;
    let file = zeroize::Zeroizing::new(B64.decode(&req.kogaku_file).map_err(|_| {
        ApiError::bad_request("bad_base64", "a file is not valid base64").with_details(vec![
            Detail {
                file: None,
                line: None,
                field: Some("kogaku_file".to_owned()),
                reason: "base64".into(),
            },
        ])
    })?);
    drop(req.kogaku_file);
    let importer = Importer {
        actor: who.actor.credential.to_string(),
        role: who.actor.role.name().to_owned(),
        route: format!("POST {KOGAKU_PATH}"),
        request_id: request_id::current(),
    };
    let p = who.scope.partition().clone();
    let id = req.transmission_id;
    let outcome = blocking(&state, move |s| {
        crate::flows::kogaku::import(s, &p, &id, encoding, &file, &importer).map_err(import_error)
    })
    .await?;
    Ok((created_or_replayed(&outcome), Json(outcome)))
}

#[derive(Serialize)]
pub struct TransmissionJson {
    pub transmission_id: String,
    pub households: Vec<String>,
    pub first_seq: u64,
    pub count: u64,
    pub tx_time_ms: u64,
}

async fn get_transmission(
    State(state): State<Arc<AppState>>,
    who: Municipality,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TransmissionJson>, ApiError> {
    let p = who.scope.partition().clone();
    let t = blocking(&state, move |s| {
        let t = s
            .transmission(&p, &id)?
            .ok_or_else(|| ApiError::not_found("transmission"))?;
        Ok((id, t))
    })
    .await?;
    Ok(Json(TransmissionJson {
        transmission_id: t.0,
        households: t.1.households,
        first_seq: t.1.first_seq,
        count: t.1.count,
        tx_time_ms: t.1.tx_time_ms,
    }))
}

/// `POST /v1/lookups`: the current snapshot of a household, found by a member's 個人番号
/// (through the blind index) or by 世帯番号. In the body, never in the URL.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    pub kojin_no: Option<String>,
    pub setai_no: Option<String>,
}

#[derive(Serialize)]
pub struct LookupResponse {
    /// The latest entry filed under the key.
    pub entry: EntryJson,
    /// Every seq filed under the key, ascending (history).
    pub history: Vec<u64>,
    pub access_record_seq: Option<u64>,
}

async fn lookup(
    State(state): State<Arc<AppState>>,
    who: Municipality,
    ApiJson(req): ApiJson<LookupRequest>,
) -> Result<Json<LookupResponse>, ApiError> {
    use crate::store::IndexKind;
    let scope = who.scope.clone();
    let (kind, key) = match (req.kojin_no, req.setai_no) {
        (Some(k), None) => {
            let kojin = zeroize::Zeroizing::new(k);
            crate::domain::KojinNo::parse(&kojin)
                .map_err(|e| ApiError::bad_request("bad_kojin_no", format!("kojin_no: {e}")))?;
            let p = scope.partition().clone();
            let token = blocking(&state, move |s| {
                Ok(s.index_key(&p)
                    .map_err(ApiError::internal)?
                    .token("kojin", kojin.as_bytes()))
            })
            .await?;
            (IndexKind::Person, token.to_vec())
        }
        (None, Some(setai)) => (IndexKind::Household, setai.into_bytes()),
        _ => {
            return Err(ApiError::bad_request(
                "bad_lookup",
                "give exactly one of kojin_no and setai_no",
            ));
        }
    };
    let read_scope = scope.clone();
    let (entry, history) = blocking(&state, move |s| {
        let history = s.index_seqs(read_scope.partition(), kind, &key)?;
        let last = *history
            .last()
            .ok_or_else(|| ApiError::not_found("household"))?;
        Ok((s.read_entry(&read_scope, last)?, history))
    })
    .await?;
    let access_record_seq = Some(
        record_access(
            &state,
            scope.partition(),
            &who.actor,
            Touched {
                route: "POST /v1/lookups",
                purpose: "lookup",
                kinds: [entry.header.kind.code()].into(),
                first_seq: entry.header.seq,
                count: 1,
            },
        )
        .await?,
    );
    Ok(Json(LookupResponse {
        entry: entry_json(&entry),
        history,
        access_record_seq,
    }))
}

// ---- replicator: the signed feed ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedQuery {
    from_size: u64,
    limit: Option<u64>,
}

/// Picks the page end: the largest checkpointed size in `(from, from + limit]`, else the
/// smallest checkpointed size above `from` (one batch larger than a page goes whole).
fn feed_end(sizes: &[u64], from: u64, limit: u64) -> Option<u64> {
    let cap = from.saturating_add(limit);
    sizes
        .iter()
        .copied()
        .filter(|&s| s > from && s <= cap)
        .max()
        .or_else(|| sizes.iter().copied().find(|&s| s > from))
}

struct FeedPage {
    response: FeedResponse,
    sealed: Vec<(u64, u16)>,
}

fn feed_page(
    store: &Store,
    scope: &PartitionScope,
    from: u64,
    limit: u64,
) -> Result<FeedPage, ApiError> {
    let p = scope.partition();
    let sizes = store.checkpoint_sizes(p)?;
    if from != 0 && !sizes.contains(&from) {
        return Err(ApiError::bad_request(
            "from_size_not_checkpointed",
            "from_size must be 0 or a checkpointed tree size (one the replica verified)",
        ));
    }
    let to = feed_end(&sizes, from, limit).unwrap_or(from);
    let mut entries = Vec::new();
    let mut sealed = Vec::new();
    for seq in from..to {
        let raw = store.envelopes(p, seq, seq + 1)?;
        let header = raw
            .first()
            .and_then(|r| crate::ledger::Header::decode_prefix(r).ok())
            .map(|(h, _)| h)
            .ok_or_else(|| ApiError::internal("unreadable envelope"))?;
        let kind = header.kind;
        let shared = kind.class() == Class::Open || forwarded_kind(kind);
        let (salt, payload) = if shared {
            let e = store.read_entry(scope, seq)?;
            if kind.class() == Class::Sealed {
                sealed.push((seq, kind.code()));
            }
            (Some(B64.encode(e.salt)), Some(B64.encode(&e.payload[..])))
        } else {
            (None, None)
        };
        entries.push(FeedEntry {
            seq,
            kind: kind.name().to_owned(),
            header: B64.encode(header.encode()),
            salt,
            payload,
        });
    }
    let checkpoint = store.checkpoint_at(p, to)?;
    let consistency = if from == 0 || from == to {
        None
    } else {
        Some(store.prove_consistency(p, from, Some(to))?)
    };
    Ok(FeedPage {
        response: FeedResponse {
            partition: p.to_string(),
            from_size: from,
            to_size: to,
            entries,
            checkpoint,
            consistency,
            access_record_seq: None,
        },
        sealed,
    })
}

async fn feed(
    State(state): State<Arc<AppState>>,
    who: Replicator,
    ApiPath(partition): ApiPath<String>,
    ApiQuery(q): ApiQuery<FeedQuery>,
) -> Result<Json<FeedResponse>, ApiError> {
    let p = PartitionId::parse(&partition).map_err(|_| ApiError::not_found("partition"))?;
    let scope = who.scope(&p)?;
    let limit = page_limit(q.limit, MAX_ENTRIES_PER_PAGE)?;
    let from = q.from_size;
    let page = blocking(&state, move |s| feed_page(s, &scope, from, limit)).await?;
    let mut response = page.response;
    // Handing sealed flow-5 entries to the intermediate is a provision: a 提供記録 (which
    // doubles as the access record). Open entries alone record nothing, so an idle poll adds
    // no entry.
    if let (Some(first), Some(last)) = (page.sealed.first(), page.sealed.last()) {
        let record = ProvisionRecord {
            provider: format!("{}/{}", state.store.origin(), p),
            recipient: format!("replicator {}", who.actor.credential),
            items: vec!["資格情報(世帯)".into(), "資格情報(個人)".into()],
            nondisclosure: false,
            purpose: "forward_to_intermediate".into(),
            first_seq: first.0,
            count: last.0 - first.0 + 1,
            checkpoint_size: response.to_size,
            request_id: request_id::current(),
        };
        let payload = record.encode().map_err(ApiError::internal)?;
        let entry = NewEntry::new(
            Kind::PROVISION_RECORD,
            crate::store::today_days(),
            None,
            payload,
        )?;
        let receipt = state.store.append_async(&p, vec![entry]).await?;
        response.access_record_seq = receipt.entries.first().map(|(seq, _)| *seq);
    }
    Ok(Json(response))
}

async fn post_cosignature(
    State(state): State<Arc<AppState>>,
    who: Replicator,
    ApiPath(partition): ApiPath<String>,
    ApiJson(req): ApiJson<CosignatureRequest>,
) -> Result<Json<CosignatureResponse>, ApiError> {
    use crate::store::CosignError;
    let p = PartitionId::parse(&partition).map_err(|_| ApiError::not_found("partition"))?;
    who.scope(&p)?;
    let witnesses = state.witnesses.clone();
    let accepted = blocking(&state, move |s| {
        s.add_cosignature(&p, &req.checkpoint, &witnesses)
            .map_err(|e| {
                let unprocessable = |code, msg: &str| {
                    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, msg.to_owned())
                };
                match e {
                    CosignError::NotOurs { .. } => unprocessable(
                        "not_our_checkpoint",
                        "the note is not a checkpoint this hub signed for the partition",
                    ),
                    CosignError::UnknownCheckpoint { .. } => unprocessable(
                        "unknown_checkpoint",
                        "this hub stored no checkpoint at that size",
                    ),
                    CosignError::Conflict { partition, size } => {
                        tracing::error!(
                            %partition,
                            size,
                            "a cosigned checkpoint differs from the stored one"
                        );
                        ApiError::new(
                            StatusCode::CONFLICT,
                            "conflicting_checkpoint",
                            "the checkpoint differs from the one stored at that size",
                        )
                    }
                    CosignError::UntrustedWitness => unprocessable(
                        "untrusted_witness",
                        "no cosignature by a witness this hub trusts",
                    ),
                    CosignError::BadCosignature(_) => unprocessable(
                        "bad_cosignature",
                        "a cosignature by a trusted witness does not verify",
                    ),
                    CosignError::Note(_) => {
                        ApiError::bad_request("bad_note", "the checkpoint is not a signed note")
                    }
                    CosignError::Read(r) => ApiError::from(r),
                    other => ApiError::internal(other),
                }
            })
    })
    .await?;
    tracing::info!(size = accepted.size, witnesses = ?accepted.witnesses, "cosignature stored");
    Ok(Json(CosignatureResponse {
        size: accepted.size,
        witnesses: accepted.witnesses,
    }))
}

// ---- ops-support: 資格履歴ファイル (5-⑤) ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// Partitions to export (default: every partition of the credential).
    pub partitions: Option<Vec<String>>,
    /// Only persons touched by copies at or after this local seq (default 0: everything).
    pub since_seq: Option<u64>,
}

#[derive(Serialize)]
pub struct ExportResponse {
    pub manifest: crate::flows::history::Manifest,
    /// The 資格履歴ファイル (UTF-8 CSV), base64. Holds protected identifiers: it is only ever
    /// sent over this connection, never stored by kukaku.
    pub file: String,
}

async fn export_history(
    State(state): State<Arc<AppState>>,
    who: OpsSupport,
    ApiJson(req): ApiJson<ExportRequest>,
) -> Result<Json<ExportResponse>, ApiError> {
    use crate::flows::history::{Exporter, export};
    let ids: Vec<PartitionId> = match req.partitions {
        None => who.partitions(),
        Some(list) => list
            .iter()
            .map(|t| PartitionId::parse(t).map_err(|_| ApiError::not_found("partition")))
            .collect::<Result<_, _>>()?,
    };
    let scopes = ids
        .iter()
        .map(|p| who.scope(p))
        .collect::<Result<Vec<_>, _>>()?;
    let exporter = Exporter {
        recipient: format!("ops-support {}", who.actor.credential),
        request_id: request_id::current(),
    };
    let since = req.since_seq.unwrap_or(0);
    let (file, manifest) = blocking(&state, move |s| {
        export(s, &scopes, since, &exporter, &mut |_, _| {}).map_err(|e| match e {
            crate::flows::history::HistoryError::Read(r) => ApiError::from(r),
            other => ApiError::internal(other),
        })
    })
    .await?;
    Ok(Json(ExportResponse {
        manifest,
        file: B64.encode(&file[..]),
    }))
}

// ---- auditor: no plaintext ----

#[derive(Serialize)]
pub struct AuditPartition {
    pub partition: String,
    pub size: u64,
    pub verifier_key: String,
}

async fn audit_partitions(
    State(state): State<Arc<AppState>>,
    who: Auditor,
) -> Result<Json<Vec<AuditPartition>>, ApiError> {
    let list = blocking(&state, move |s| {
        let mut out = Vec::new();
        for info in s.partitions().map_err(ApiError::internal)? {
            if info.status != PartitionStatus::Active || !who.reaches(&info.partition) {
                continue;
            }
            let key = s
                .verifier_key(&info.partition)
                .ok_or_else(|| ApiError::internal("no verifier key"))?;
            out.push(AuditPartition {
                size: s.size(&info.partition)?,
                partition: info.partition.to_string(),
                verifier_key: key.to_text(),
            });
        }
        Ok(out)
    })
    .await?;
    Ok(Json(list))
}

fn audit_partition(who: &Auditor, text: &str) -> Result<PartitionId, ApiError> {
    let p = PartitionId::parse(text).map_err(|_| ApiError::not_found("partition"))?;
    who.check(&p)?;
    Ok(p)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeQuery {
    from: u64,
    to: u64,
}

#[derive(Serialize)]
pub struct EnvelopesResponse {
    pub partition: String,
    pub from: u64,
    pub to: u64,
    /// Stored envelopes (docs/format.md §4), base64: headers in clear, sealed bodies still
    /// encrypted.
    pub envelopes: Vec<String>,
}

async fn audit_envelopes(
    State(state): State<Arc<AppState>>,
    who: Auditor,
    ApiPath(partition): ApiPath<String>,
    ApiQuery(q): ApiQuery<EnvelopeQuery>,
) -> Result<Json<EnvelopesResponse>, ApiError> {
    let p = audit_partition(&who, &partition)?;
    if q.to < q.from || q.to - q.from > MAX_ENVELOPES_PER_PAGE {
        return Err(ApiError::bad_request(
            "bad_range",
            format!("need from <= to and at most {MAX_ENVELOPES_PER_PAGE} envelopes"),
        ));
    }
    let pp = p.clone();
    let raw = blocking(&state, move |s| Ok(s.envelopes(&pp, q.from, q.to)?)).await?;
    Ok(Json(EnvelopesResponse {
        partition: p.to_string(),
        from: q.from,
        to: q.from + raw.len() as u64,
        envelopes: raw.iter().map(|e| B64.encode(e)).collect(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointsQuery {
    from_size: Option<u64>,
    limit: Option<usize>,
}

#[derive(Serialize)]
pub struct CheckpointsResponse {
    pub partition: String,
    pub verifier_key: String,
    /// Signed checkpoints with size ≥ `from_size`, ascending.
    pub checkpoints: Vec<String>,
    /// `from_size` of the next page, if any.
    pub next: Option<u64>,
}

async fn audit_checkpoints(
    State(state): State<Arc<AppState>>,
    who: Auditor,
    ApiPath(partition): ApiPath<String>,
    ApiQuery(q): ApiQuery<CheckpointsQuery>,
) -> Result<Json<CheckpointsResponse>, ApiError> {
    let p = audit_partition(&who, &partition)?;
    let limit = page_limit(q.limit.map(|l| l as u64), MAX_CHECKPOINTS_PER_PAGE as u64)? as usize;
    let from = q.from_size.unwrap_or(0);
    Ok(Json(
        blocking(&state, move |s| {
            let sizes: Vec<u64> = s
                .checkpoint_sizes(&p)?
                .into_iter()
                .filter(|&n| n >= from)
                .collect();
            let mut checkpoints = Vec::new();
            for &n in sizes.iter().take(limit) {
                checkpoints.push(s.checkpoint_at(&p, n)?);
            }
            Ok(CheckpointsResponse {
                partition: p.to_string(),
                verifier_key: s
                    .verifier_key(&p)
                    .ok_or_else(|| ApiError::internal("no verifier key"))?
                    .to_text(),
                checkpoints,
                next: sizes.get(limit).copied(),
            })
        })
        .await?,
    ))
}

async fn audit_inclusion(
    State(state): State<Arc<AppState>>,
    who: Auditor,
    ApiPath(partition): ApiPath<String>,
    ApiQuery(q): ApiQuery<InclusionQuery>,
) -> Result<Json<InclusionProofJson>, ApiError> {
    let p = audit_partition(&who, &partition)?;
    inclusion(&state, p, q).await
}

async fn audit_consistency(
    State(state): State<Arc<AppState>>,
    who: Auditor,
    ApiPath(partition): ApiPath<String>,
    ApiQuery(q): ApiQuery<ConsistencyQuery>,
) -> Result<Json<ConsistencyProofJson>, ApiError> {
    let p = audit_partition(&who, &partition)?;
    consistency(&state, p, q).await
}

/// 404 in the one error shape, for unknown paths.
pub async fn fallback() -> ApiError {
    ApiError::not_found("route")
}

/// 405 in the one error shape.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

#[cfg(test)]
mod tests {
    use super::feed_end;

    #[test]
    fn feed_pages_end_on_checkpoints() {
        let sizes = [2, 3, 5, 9, 300];
        assert_eq!(feed_end(&sizes, 0, 100), Some(9));
        assert_eq!(feed_end(&sizes, 3, 2), Some(5));
        assert_eq!(feed_end(&sizes, 3, 1), Some(5));
        assert_eq!(feed_end(&sizes, 9, 100), Some(300));
        assert_eq!(feed_end(&sizes, 300, 100), None);
    }
}
