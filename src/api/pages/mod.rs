//! The terminal's pages (docs/design.md §11): server-rendered HTML with Japanese labels, no
//! script. A clerk logs in with their own municipality credential, the 国保連合会's operator
//! with theirs (`session`); the session lives in server memory behind an HttpOnly,
//! SameSite=Strict cookie (Secure over TLS), every form carries the session's CSRF token,
//! and every page that shows personal data appends an access record (through the same reads
//! as the API). The partition comes from the session's credential, never from the request.
//! `layout` is the frame (dates in JST and 和暦, pagination), `candidates` and `results` are
//! flow 4; flow 5's upload, the operator's console and 本人開示 are `api::upload`,
//! `api::console` and `api::disclosure`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::AppState;
use super::auth::{Connection, Municipality, source_of, verify_token};
use super::continuity::{
    AcknowledgeRequest, DecisionRequest, append_acknowledgement, append_decision, matches,
    read_candidates,
};
use super::error::ApiError;
use crate::crypto::credential::Verified;
use crate::flows::decision::CandidateState;

mod candidates;
mod layout;
mod results;
mod session;

use candidates::*;
pub(crate) use layout::*;
use results::*;
pub(crate) use session::*;
pub use session::{CONSOLE_PATH, COOKIE, DEFAULT_SESSION_IDLE, SESSIONS_PER_CREDENTIAL, Sessions};

async fn index() -> Redirect {
    Redirect::to("/terminal/candidates")
}

/// The terminal's routes (hub only), merged into the API router.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/terminal", get(index))
        .route("/terminal/login", get(login_form).post(login))
        .route("/terminal/logout", post(logout))
        .route("/terminal/candidates", get(candidates_page))
        .route("/terminal/candidates/{seq}", get(candidate_page))
        .route("/terminal/candidates/{seq}/decision", post(decide))
        .route(BULK_PATH, post(bulk_decision))
        .route(
            "/terminal/candidates/{seq}/acknowledgement",
            post(acknowledge),
        )
        .route("/terminal/results", get(results_page))
        .route("/terminal/results/print", get(print_page))
        .route("/terminal/carryover.csv", get(carryover))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Times the flows write, read back as instants; JST as the municipality reads them.
    #[test]
    fn times_in_jst() {
        // 2025-01-10T01:00:00Z = 1736470800000 ms.
        for (text, want) in [
            ("2025-01-10T10:00:00+09:00", Some(1_736_470_800_000)),
            ("2025-01-10T01:00:00Z", Some(1_736_470_800_000)),
            ("2025-01-10T01:00:00.123Z", Some(1_736_470_800_000)),
            ("2025-01-09T20:00:00-05:00", Some(1_736_470_800_000)),
            ("2025-01-10", None),
            ("2025-02-30T01:00:00Z", None),
            ("2025-01-10T01:00:00*09:00", None),
        ] {
            assert_eq!(rfc3339_ms(text), want, "{text}");
        }
        assert_eq!(jst(1_736_470_800_000), "2025-01-10 10:00:00");
        // 15:00 UTC is the next day in Japan.
        assert_eq!(jst(1_736_521_200_000), "2025-01-11 00:00:00");
        assert_eq!(page_of(0, None), (0..0, 1, 1));
        assert_eq!(page_of(250, None), (0..100, 1, 3));
        assert_eq!(page_of(250, Some(3)), (200..250, 3, 3));
        assert_eq!(
            page_of(250, Some(9)),
            (200..250, 3, 3),
            "past the end: the last page"
        );
        assert_eq!(page_of(250, Some(0)), (0..100, 1, 3));
        assert_eq!(sheets(0), vec![0..0]);
        assert_eq!(sheets(1), vec![0..1]);
        assert_eq!(sheets(ROWS_PER_SHEET), vec![0..ROWS_PER_SHEET]);
        assert_eq!(
            sheets(ROWS_PER_SHEET + 1),
            vec![0..ROWS_PER_SHEET, ROWS_PER_SHEET..ROWS_PER_SHEET + 1]
        );
        assert!(
            jst_wareki(1_736_470_800_000)
                .into_string()
                .contains("令和7年1月10日 10:00")
        );
    }
}
