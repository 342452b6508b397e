//! The one error shape: `{"error":{"code","message","details":[…]}}`.
//!
//! `code` is stable. 4xx messages explain the problem in words of the route, never echoing a
//! request value (a value could be a protected identifier). A 5xx says "internal error" and the
//! request id; the cause goes to the server log only.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::request_id;
use crate::store::{AppendError, ReadError};

/// One problem with a request, for `details`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Detail {
    /// `setai` or `kojin` when a request carries several files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Line where the record starts (header = 1); 0 for a whole file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub reason: String,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Vec<Detail>,
    /// For the log only (5xx).
    cause: Option<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    details: &'a [Detail],
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            cause: None,
        }
    }

    pub fn with_details(mut self, details: Vec<Detail>) -> Self {
        self.details = details;
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer credential is required (Authorization: Bearer kk1_…)",
        )
    }

    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this credential's role may not use this route",
        )
    }

    /// Also the answer for anything outside the caller's scope: existence is not leaked.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such {what}"),
        )
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// Token guessing: this credential id (or unknown ids as a whole) failed too often.
    pub fn too_many_failures(retry_after_s: u64) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_failed_attempts",
            format!("too many failed authentications; retry after {retry_after_s} s"),
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// A server-side failure: generic to the client, the error and its causes in the log.
    pub fn failed(e: &(dyn std::error::Error + 'static)) -> Self {
        Self::internal(crate::error::report(e))
    }

    /// A server-side failure: generic to the client, detailed in the log.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        );
        e.cause = Some(cause.to_string());
        e
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::UnknownPartition(_) => ApiError::not_found("partition"),
            ReadError::NoSuchEntry { .. } => ApiError::not_found("entry"),
            ReadError::NoCheckpoint { .. } => ApiError::bad_request(
                "no_checkpoint",
                "proofs are given only against checkpointed tree sizes",
            ),
            ReadError::BadRequest(m) => ApiError::bad_request("bad_proof_request", m),
            ReadError::KeyDestroyed { seq, .. } => ApiError::new(
                StatusCode::GONE,
                "key_destroyed",
                format!(
                    "entry {seq}: its key was destroyed (crypto-shredded); the entry stays in the log and its proofs verify, its body is unreadable"
                ),
            ),
            other => ApiError::failed(&other),
        }
    }
}

impl From<AppendError> for ApiError {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::Shredded(_) | AppendError::ScopeDestroyed { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "keys_destroyed",
                "this partition's keys (or this period's) were destroyed; it takes no sealed entries",
            ),
            AppendError::Moved(p) => ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "moved",
                format!("partition {p} has moved to another cell; send its requests there"),
            ),
            AppendError::Poisoned | AppendError::WriterGone => {
                let mut err = ApiError::unavailable("the store is not accepting writes");
                err.cause = Some(crate::error::report(&e));
                err
            }
            other => ApiError::failed(&other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let id = request_id::current();
        let message = if self.status.is_server_error() {
            tracing::error!(
                request_id = %id,
                code = self.code,
                cause = self.cause.as_deref().unwrap_or(""),
                "request failed"
            );
            format!("{} (request {id})", self.message)
        } else {
            self.message
        };
        let body = Body {
            error: Inner {
                code: self.code,
                message: &message,
                details: &self.details,
            },
        };
        (self.status, Json(body)).into_response()
    }
}
