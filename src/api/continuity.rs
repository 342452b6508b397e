//! Flow 4 routes. The municipality's routes take the partition from the credential: a
//! candidate of another municipality cannot even be named. The continuity operator's
//! extraction, confirmation and anomaly list cover its credential's prefecture; each run is
//! noted in the console's log of the operator's actions.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::access::{Touched, blocking, record_access};
use super::auth::{ContinuityOperator, Municipality};
use super::error::{ApiError, Detail};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::{AppState, request_id};
use crate::crypto::PartitionScope;
use crate::flows::decision::{self, CandidateState, DecisionError, FLOW4_KINDS};
use crate::flows::import::Importer;
use crate::store::Store;

/// Who acted: what the request names, else the credential's label (a clerk's display
/// name), else the credential id.
fn operator(actor: &super::auth::Actor, sent: Option<String>) -> String {
    sent.unwrap_or_else(|| actor.display_name())
}

/// The summaries an operator's runs leave in the console's log (counts only).
pub(crate) fn extract_summary(r: &crate::flows::continuity::ExtractReport) -> String {
    format!(
        "基準日 {}: {} 世帯を読み、新しい候補 {} 件、期間外 {} 件",
        r.as_of,
        r.households_read,
        r.candidates.len(),
        r.outside_window.len()
    )
}

pub(crate) fn confirm_summary(r: &decision::ConfirmReport) -> String {
    format!(
        "確定 {} 世帯、追加 {} 世帯、取消 {} 世帯",
        r.confirmed.len(),
        r.added.len(),
        r.cancelled.len()
    )
}

/// Notes an operator's run in the console's log; a failure to note it is logged, not
/// answered (the run itself is done and recorded in each partition).
pub(crate) async fn log_action(
    state: &Arc<AppState>,
    op: &ContinuityOperator,
    action: &str,
    via: &str,
    summary: String,
) {
    let entry = crate::store::OperatorAction {
        at_ms: crate::store::now_unix_ms(),
        action: action.to_owned(),
        via: via.to_owned(),
        summary,
    };
    let (prefecture, credential) = (op.prefecture.clone(), op.actor.credential.to_string());
    let done = blocking(state, move |s| {
        s.log_operator_action(&prefecture, &credential, &entry)
            .map_err(ApiError::internal)
    })
    .await;
    if let Err(e) = done {
        // The error's response logs its cause; nobody is answered with it.
        let _ = axum::response::IntoResponse::into_response(e);
    }
}

pub(crate) fn importer(actor: &super::auth::Actor, route: &str) -> Importer {
    Importer {
        actor: actor.credential.to_string(),
        role: actor.role.name().to_owned(),
        route: route.to_owned(),
        request_id: request_id::current(),
    }
}

pub(crate) fn decision_error(e: DecisionError) -> ApiError {
    let invalid = |field: &str, reason: &str| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "the decision is not valid",
        )
        .with_details(vec![Detail {
            file: None,
            line: None,
            field: Some(field.to_owned()),
            reason: reason.to_owned(),
        }])
    };
    match e {
        DecisionError::NoCandidate(_) => ApiError::not_found("candidate"),
        DecisionError::BadDecision => invalid("decision", "code"),
        DecisionError::NoOperator => invalid("operator", "missing"),
        DecisionError::NoNote => invalid("note", "missing"),
        DecisionError::NoneSelected => invalid("candidates", "missing"),
        DecisionError::NothingToAcknowledge(_) => ApiError::new(
            StatusCode::CONFLICT,
            "nothing_to_acknowledge",
            "the candidate has no anomaly left to acknowledge",
        ),
        DecisionError::TooLong(field) => invalid(field, "too_long"),
        DecisionError::Read(r) => ApiError::from(r),
        DecisionError::Append(a) => ApiError::from(a),
        other => ApiError::failed(&other),
    }
}

/// Reads the caller's candidates and records the read (durable before the answer).
pub(crate) async fn read_candidates(
    state: &Arc<AppState>,
    who: &Municipality,
    route: &'static str,
    purpose: &'static str,
) -> Result<(Vec<CandidateState>, Option<u64>), ApiError> {
    let scope = who.scope.clone();
    let list = blocking(state, move |s| {
        decision::candidates(s, &scope).map_err(decision_error)
    })
    .await?;
    let record = match (list.first(), list.last()) {
        (Some(first), Some(last)) => Some(
            record_access(
                state,
                who.scope.partition(),
                &who.actor,
                Touched {
                    route,
                    purpose,
                    kinds: FLOW4_KINDS
                        .iter()
                        .map(|k| k.code())
                        .collect::<BTreeSet<_>>(),
                    first_seq: first.seq,
                    count: last.seq - first.seq + 1,
                },
            )
            .await?,
        ),
        _ => None,
    };
    Ok((list, record))
}

/// The job covers the credential's prefecture with the hub's rules, as of today in JST
/// unless `as_of` (`YYYY-MM-DD`) names the run's date (a rerun of a missed day, or data of
/// another period such as the demo's).
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ExtractRequest {
    #[serde(default)]
    pub as_of: Option<String>,
}

/// `POST /v1/continuity/extract`: the operator's run of the extraction.
pub(crate) async fn extract(
    State(state): State<Arc<AppState>>,
    op: ContinuityOperator,
    ApiJson(ExtractRequest { as_of }): ApiJson<ExtractRequest>,
) -> Result<Json<crate::flows::continuity::ExtractReport>, ApiError> {
    let scope = op.scope()?;
    let as_of = match as_of {
        None => crate::store::today_jst(),
        Some(text) => crate::domain::text::parse_date(&text).ok_or_else(|| {
            ApiError::bad_request("bad_date", "as_of: expected a date YYYY-MM-DD")
        })?,
    };
    let importer = importer(&op.actor, "POST /v1/continuity/extract");
    let rules = state.continuity_rules.clone();
    let report = blocking(&state, move |s| {
        crate::flows::continuity::extract(s, &scope, &rules, &importer, as_of).map_err(
            |e| match e {
                crate::flows::continuity::ExtractError::Read(r) => ApiError::from(r),
                crate::flows::continuity::ExtractError::Append(a) => ApiError::from(a),
                other => ApiError::failed(&other),
            },
        )
    })
    .await?;
    let summary = extract_summary(&report);
    log_action(&state, &op, "extract", "api", summary).await;
    Ok(Json(report))
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `undecided`, `decided`, `confirmed`, or `anomalies` (an anomaly no one has
    /// acknowledged yet, decided or not: a gap, an overlap, a reset 資格取得日, an ambiguous
    /// match).
    pub state: Option<String>,
    /// `continue`, `not_continue` or `manual`.
    pub suggestion: Option<String>,
}

#[derive(Serialize)]
pub struct CandidatesResponse {
    pub candidates: Vec<CandidateState>,
    pub access_record_seq: Option<u64>,
}

/// Whether a candidate passes the list filters.
pub(crate) fn matches(c: &CandidateState, state: Option<&str>, suggestion: Option<&str>) -> bool {
    let s = match (&c.decision, &c.confirmation) {
        (None, _) => "undecided",
        (Some(_), None) => "decided",
        (Some(_), Some(_)) => "confirmed",
    };
    let anomalous = !c.open_anomalies().is_empty();
    state.is_none_or(|w| w == s || (w == "anomalies" && anomalous))
        && suggestion.is_none_or(|w| w == c.candidate.suggestion)
}

pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    who: Municipality,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<CandidatesResponse>, ApiError> {
    for (field, value, allowed) in [
        (
            "state",
            &q.state,
            &["undecided", "decided", "confirmed", "anomalies"][..],
        ),
        (
            "suggestion",
            &q.suggestion,
            &["continue", "not_continue", "manual"][..],
        ),
    ] {
        if value.as_deref().is_some_and(|v| !allowed.contains(&v)) {
            return Err(ApiError::bad_request(
                "bad_query",
                format!("{field} must be one of {}", allowed.join(", ")),
            ));
        }
    }
    let (all, access_record_seq) = read_candidates(
        &state,
        &who,
        "GET /v1/continuity/candidates",
        "continuity_candidates",
    )
    .await?;
    let candidates = all
        .into_iter()
        .filter(|c| matches(c, q.state.as_deref(), q.suggestion.as_deref()))
        .collect();
    Ok(Json(CandidatesResponse {
        candidates,
        access_record_seq,
    }))
}

#[derive(Serialize)]
pub struct CandidateResponse {
    pub candidate: CandidateState,
    pub access_record_seq: Option<u64>,
}

pub(crate) async fn one(
    State(state): State<Arc<AppState>>,
    who: Municipality,
    ApiPath(seq): ApiPath<u64>,
) -> Result<Json<CandidateResponse>, ApiError> {
    let (all, access_record_seq) = read_candidates(
        &state,
        &who,
        "GET /v1/continuity/candidates/{seq}",
        "continuity_candidate",
    )
    .await?;
    let candidate = all
        .into_iter()
        .find(|c| c.seq == seq)
        .ok_or_else(|| ApiError::not_found("candidate"))?;
    Ok(Json(CandidateResponse {
        candidate,
        access_record_seq,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// `continue` or `not_continue`.
    pub decision: String,
    pub reason: Option<String>,
    /// Who decided, when the municipality's system relays its own user; default: the
    /// credential's label (a clerk's display name).
    #[serde(default)]
    pub operator: Option<String>,
}

impl std::fmt::Debug for DecisionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionRequest")
            .field("decision", &self.decision)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize, Debug)]
pub struct DecisionResponse {
    pub decision_seq: u64,
}

/// Runs one decision-flow write for `who`'s partition off the async runtime, as
/// `operator`, recorded under `route`: what a decision, a bulk 確定指示 and an
/// acknowledgement share, from the API and the terminal pages alike.
pub(crate) async fn on_partition<T, F>(
    state: &Arc<AppState>,
    who: &Municipality,
    operator: String,
    route: &str,
    f: F,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Store, &PartitionScope, &str, &Importer) -> Result<T, DecisionError>
        + Send
        + 'static,
{
    let scope = who.scope.clone();
    let importer = importer(&who.actor, route);
    blocking(state, move |s| {
        f(s, &scope, &operator, &importer).map_err(decision_error)
    })
    .await
}

/// Appends the decision; shared by the API and the terminal pages.
pub(crate) async fn append_decision(
    state: &Arc<AppState>,
    who: &Municipality,
    seq: u64,
    req: DecisionRequest,
    route: &str,
) -> Result<u64, ApiError> {
    let name = operator(&who.actor, req.operator);
    on_partition(state, who, name, route, move |s, scope, name, importer| {
        let reason = req.reason.as_deref();
        decision::decide(s, scope, seq, &req.decision, reason, name, importer)
    })
    .await
}

pub(crate) async fn decide(
    State(state): State<Arc<AppState>>,
    who: Municipality,
    ApiPath(seq): ApiPath<u64>,
    ApiJson(req): ApiJson<DecisionRequest>,
) -> Result<(StatusCode, Json<DecisionResponse>), ApiError> {
    let decision_seq = append_decision(
        &state,
        &who,
        seq,
        req,
        "POST /v1/continuity/candidates/{seq}/decision",
    )
    .await?;
    Ok((StatusCode::CREATED, Json(DecisionResponse { decision_seq })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcknowledgeRequest {
    /// What the person found or did about the anomalies (required, at most 1,000 characters).
    pub note: String,
    /// Who acknowledged, as for a decision; default: the credential's label.
    #[serde(default)]
    pub operator: Option<String>,
}

impl std::fmt::Debug for AcknowledgeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcknowledgeRequest").finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize, Debug)]
pub struct AcknowledgeResponse {
    pub acknowledgement_seq: u64,
}

/// Appends an acknowledgement of a move's open anomalies; shared by the API and the
/// terminal pages.
pub(crate) async fn append_acknowledgement(
    state: &Arc<AppState>,
    who: &Municipality,
    seq: u64,
    req: AcknowledgeRequest,
    route: &str,
) -> Result<u64, ApiError> {
    let name = operator(&who.actor, req.operator);
    on_partition(state, who, name, route, move |s, scope, name, importer| {
        decision::acknowledge(s, scope, seq, &req.note, name, importer)
    })
    .await
}

pub(crate) async fn acknowledge(
    State(state): State<Arc<AppState>>,
    who: Municipality,
    ApiPath(seq): ApiPath<u64>,
    ApiJson(req): ApiJson<AcknowledgeRequest>,
) -> Result<(StatusCode, Json<AcknowledgeResponse>), ApiError> {
    let acknowledgement_seq = append_acknowledgement(
        &state,
        &who,
        seq,
        req,
        "POST /v1/continuity/candidates/{seq}/acknowledgement",
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(AcknowledgeResponse {
            acknowledgement_seq,
        }),
    ))
}

#[derive(Serialize)]
pub struct AnomaliesResponse {
    pub prefecture: String,
    pub anomalies: Vec<decision::AnomalyRow>,
}

/// The operator's list of the prefecture's moves with anomalies and whether each is still
/// open (each municipality's read is an access record there).
pub(crate) async fn anomalies(
    State(state): State<Arc<AppState>>,
    who: ContinuityOperator,
) -> Result<Json<AnomaliesResponse>, ApiError> {
    let scope = who.scope()?;
    let prefecture = scope.prefecture().to_owned();
    let importer = importer(&who.actor, "GET /v1/continuity/anomalies");
    let anomalies = blocking(&state, move |s| {
        decision::prefecture_anomalies(s, &scope, &importer).map_err(decision_error)
    })
    .await?;
    Ok(Json(AnomaliesResponse {
        prefecture,
        anomalies,
    }))
}

pub(crate) async fn results(
    State(state): State<Arc<AppState>>,
    who: Municipality,
) -> Result<Json<CandidatesResponse>, ApiError> {
    let (all, access_record_seq) = read_candidates(
        &state,
        &who,
        "GET /v1/continuity/results",
        "continuity_results",
    )
    .await?;
    Ok(Json(CandidatesResponse {
        candidates: all.into_iter().filter(|c| c.decision.is_some()).collect(),
        access_record_seq,
    }))
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct FileQuery {
    /// `utf-8` (default) or `cp932`.
    pub encoding: Option<String>,
}

/// The declared encoding of a download (never guessed); 400 for anything else.
pub(crate) fn file_encoding(
    q: &FileQuery,
) -> Result<crate::flows::transmission::Encoding, ApiError> {
    match q.encoding.as_deref() {
        None => Ok(crate::flows::transmission::Encoding::Utf8),
        Some(name) => crate::flows::transmission::Encoding::parse(name).ok_or_else(|| {
            ApiError::bad_request("unknown_encoding", "encoding must be utf-8 or cp932")
        }),
    }
}

/// The `content-type` of a 連携ファイル in `enc`.
pub(crate) fn csv_type(enc: crate::flows::transmission::Encoding) -> &'static str {
    match enc {
        crate::flows::transmission::Encoding::Utf8 => "text/csv; charset=utf-8",
        crate::flows::transmission::Encoding::Cp932 => "text/csv; charset=shift_jis",
    }
}

/// The 連携ファイル of the caller's carry-overs in `enc` as a download, after recording the
/// read (shared by the API route and the terminal page).
pub(crate) async fn carryover_file(
    state: &Arc<AppState>,
    who: &Municipality,
    enc: crate::flows::transmission::Encoding,
    route: &'static str,
    purpose: &'static str,
) -> Result<Response, ApiError> {
    let (all, _) = read_candidates(state, who, route, purpose).await?;
    let body = decision::hikitsugi_file(&all, enc);
    Ok((
        [
            (header::CONTENT_TYPE, csv_type(enc)),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"hikitsugi.csv\"",
            ),
        ],
        body,
    )
        .into_response())
}

pub(crate) async fn carryover_csv(
    State(state): State<Arc<AppState>>,
    who: Municipality,
    ApiQuery(q): ApiQuery<FileQuery>,
) -> Result<Response, ApiError> {
    let enc = file_encoding(&q)?;
    carryover_file(
        &state,
        &who,
        enc,
        "GET /v1/continuity/carryover.csv",
        "continuity_carryover_file",
    )
    .await
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ConfirmRequest {}

pub(crate) async fn confirm(
    State(state): State<Arc<AppState>>,
    op: ContinuityOperator,
    ApiJson(ConfirmRequest {}): ApiJson<ConfirmRequest>,
) -> Result<Json<decision::ConfirmReport>, ApiError> {
    let scope = op.scope()?;
    let who = importer(&op.actor, "POST /v1/continuity/confirm");
    let now = crate::ledger::format_utc_ms(crate::store::now_unix_ms());
    let rules = state.continuity_rules.clone();
    let report = blocking(&state, move |s| {
        decision::confirm_with(s, &scope, &rules, &who, &now).map_err(decision_error)
    })
    .await?;
    log_action(&state, &op, "confirm", "api", confirm_summary(&report)).await;
    Ok(Json(report))
}
