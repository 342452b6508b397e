//! The route table the router and the OpenAPI test share, and the handlers by role: a
//! municipality's own partition (`municipality`), flow 5's imports (`transmissions`), the
//! replicator's feed (`feed`), ops-support (`ops`), the auditor (`auditor`); flow 4's are in
//! `api::continuity`. Health checks and the 404/405 answers are here.

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

mod auditor;
mod feed;
mod municipality;
mod ops;
mod transmissions;

use auditor::*;
use feed::*;
use municipality::*;
use ops::*;
pub(crate) use transmissions::import_error;
use transmissions::*;

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
