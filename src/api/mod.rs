//! The narrow HTTP API: routers per server role, one extractor per credential role, the one
//! error shape, limits, TLS; and the terminal's server-rendered pages. The only module that
//! knows HTTP (the flows' payloads are JSON too, but no flow speaks HTTP).

pub mod access;
pub mod auth;
pub mod client;
pub mod console;
pub mod continuity;
pub mod disclosure;
pub mod error;
pub mod extract;
pub mod guesses;
mod http_metrics;
pub mod pages;
pub mod placement;
pub mod request_id;
pub mod routes;
pub mod server;
pub mod upload;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use serde::Serialize;
use tower::ServiceBuilder;

use crate::store::Store;
use error::ApiError;

/// Which server this is (docs/design.md §2): the hub takes municipality, replicator and auditor
/// routes; the intermediate takes auditor routes (and ops-support with flow 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerRole {
    Hub,
    Intermediate,
}

impl ServerRole {
    pub fn name(self) -> &'static str {
        match self {
            ServerRole::Hub => "hub",
            ServerRole::Intermediate => "intermediate",
        }
    }
}

/// Shared by every handler.
#[derive(Debug)]
pub struct AppState {
    pub store: Arc<Store>,
    pub role: ServerRole,
    /// Cosigner keys (C2SP vkeys, type 0x04) of the witnesses whose cosignatures on this
    /// instance's checkpoints are kept (hub: the intermediate's witness key).
    pub witnesses: Vec<crate::ledger::VerifierKey>,
    /// The prefecture's 参酌基準 configuration for the continuity job (hub).
    pub continuity_rules: crate::domain::continuity::Rules,
    /// Terminal sessions (hub pages).
    pub sessions: pages::Sessions,
    /// A terminal session ends after this long without a request (`serve
    /// --session-idle-minutes`, default 30).
    pub session_idle: std::time::Duration,
    /// Mark session cookies `Secure` (the listener is TLS).
    pub secure_cookies: bool,
    /// Failed-authentication counts (token guessing gets 429).
    pub guesses: guesses::Guesses,
    /// The terminal's refused uploads, in memory (the 送信状況 page's エラー rows).
    pub refusals: upload::Refusals,
    /// Where partitions are served when there are several cells (`serve --placement`).
    pub placement: Arc<placement::Placement>,
}

impl AppState {
    pub fn new(store: Arc<Store>, role: ServerRole) -> Self {
        AppState {
            store,
            role,
            witnesses: Vec::new(),
            continuity_rules: crate::domain::continuity::Rules::default(),
            sessions: pages::Sessions::default(),
            session_idle: pages::DEFAULT_SESSION_IDLE,
            secure_cookies: false,
            guesses: guesses::Guesses::default(),
            refusals: upload::Refusals::default(),
            placement: Arc::default(),
        }
    }

    /// Session cookies only over TLS (`serve` without `--plain-http-loopback`).
    pub fn with_secure_cookies(mut self, secure: bool) -> Self {
        self.secure_cookies = secure;
        self
    }

    /// How long a terminal session lasts without a request (`serve --session-idle-minutes`).
    pub fn with_session_idle(mut self, idle: std::time::Duration) -> Self {
        self.session_idle = idle;
        self
    }

    /// The prefecture's 参酌基準 configuration (`serve --continuity-rules`).
    pub fn with_continuity_rules(mut self, rules: crate::domain::continuity::Rules) -> Self {
        self.continuity_rules = rules;
        self
    }

    /// Answers requests for partitions placed on other cells with 421 and their address.
    pub fn with_placement(mut self, placement: placement::Placement) -> Self {
        self.placement = Arc::new(placement);
        self
    }

    /// Trusts these witnesses' cosignatures (`POST /v1/feed/{p}/cosignatures`).
    pub fn with_witnesses(mut self, witnesses: Vec<crate::ledger::VerifierKey>) -> Self {
        self.witnesses = witnesses;
        self
    }
}

/// Request limits (docs/design.md §11: tower layers set limits and timeouts).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Whole-request deadline (handler included).
    pub request_timeout: Duration,
    /// Time a client has to send the request headers.
    pub header_timeout: Duration,
    /// Requests handled at once; more are refused with 503 at once, not queued.
    pub max_concurrent: usize,
    /// Largest body of `POST /v1/transmissions` (two files, base64 in JSON).
    pub max_transmission_bytes: usize,
    /// Open connections at once; a connection past it is closed as soon as it is accepted,
    /// so a flood of idle or slow connections cannot use up file descriptors or memory.
    pub max_connections: usize,
}

impl Limits {
    /// The body limit of a route: `max_transmission_bytes` for the two file uploads,
    /// `max_body_bytes` for every other path (including paths no route matches).
    pub fn body_limit(&self, path: &str) -> usize {
        if path == routes::TRANSMISSIONS_PATH
            || path == routes::KOGAKU_PATH
            || path == upload::UPLOAD_PATH
        {
            self.max_transmission_bytes
        } else {
            self.max_body_bytes
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 8 << 20,
            request_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            max_concurrent: 256,
            max_transmission_bytes: 96 << 20,
            max_connections: 1024,
        }
    }
}

/// Gives responses made by layers (body limit, timeout) the one error shape.
async fn shape_errors(
    req: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    let mut res = shaped(next.run(req).await);
    // The body was not read to its end (too large, or too slow). hyper stops reading it and
    // closes the connection; say so, so that a client does not send its next request on it.
    if matches!(
        res.status(),
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
    ) {
        res.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    res
}

fn shaped(res: axum::response::Response) -> axum::response::Response {
    use axum::response::IntoResponse;
    // A handler's own answer (JSON, or a terminal page in HTML) stays as it is; only what a
    // layer made (plain text) gets the error shape.
    let own = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes().starts_with(b"application/json") || v.as_bytes().starts_with(b"text/html")
        });
    if own || !(res.status().is_client_error() || res.status().is_server_error()) {
        return res;
    }
    match res.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the request body is larger than this server accepts",
        )
        .into_response(),
        StatusCode::REQUEST_TIMEOUT => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the request took longer than this server allows",
        )
        .into_response(),
        s if s.is_server_error() => {
            ApiError::internal(format!("layer answered {s}")).into_response()
        }
        s => ApiError::new(s, "bad_request", "the request was refused").into_response(),
    }
}

/// Refuses a declared body larger than the limit before any handler runs, whatever the route.
/// Bodies without a length are capped by `DefaultBodyLimit` when an extractor reads them.
async fn refuse_large_bodies(
    axum::extract::State(limits): axum::extract::State<Limits>,
    req: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let max = limits.body_limit(req.uri().path());
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than this server accepts ({max} bytes)"),
        )
        .into_response();
    }
    next.run(req).await
}

async fn overloaded_or_timeout(err: tower::BoxError) -> ApiError {
    if err.is::<tower::load_shed::error::Overloaded>() {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "too many requests in flight; retry shortly",
        )
    } else {
        ApiError::failed(err.as_ref())
    }
}

/// Headers on every response: nothing is cached (entries, lookups, transmissions,
/// continuity results and history exports carry personal data; the rest costs nothing to
/// leave uncached), no content sniffing, and over TLS HSTS for a year.
async fn security_headers(
    axum::extract::State(tls): axum::extract::State<bool>,
    req: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if tls {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    res
}

/// The router of a server role, with every limit applied.
pub fn router(state: AppState, limits: Limits) -> Router {
    let role = state.role;
    let tls = state.secure_cookies;
    let mut app: Router<Arc<AppState>> = Router::new();
    let mut paths: Vec<(&str, axum::routing::MethodRouter<Arc<AppState>>)> = Vec::new();
    for (spec, handler) in routes::table() {
        if !spec.servers.contains(&role) {
            continue;
        }
        match paths.iter_mut().find(|(p, _)| *p == spec.path) {
            Some((_, existing)) => *existing = std::mem::take(existing).merge(handler),
            None => paths.push((spec.path, handler)),
        }
    }
    for (path, handler) in paths {
        // A body without a declared length is cut at its own route's limit when an
        // extractor reads it (this layer is inside the router-wide one, so it wins).
        let limit = DefaultBodyLimit::max(limits.body_limit(path));
        app = app.route(
            path,
            handler.fallback(routes::method_not_allowed).layer(limit),
        );
    }
    if role == ServerRole::Hub {
        // The terminal: the pages, flow 5's upload, the operator's console, 本人開示.
        app = app
            .merge(pages::router())
            .merge(upload::router(limits))
            .merge(console::router())
            .merge(disclosure::router());
    }
    app.fallback(routes::fallback)
        .route_layer(middleware::from_fn(request_id::record_route))
        .route_layer(middleware::from_fn(http_metrics::routed))
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn(http_metrics::unrouted))
                .layer(middleware::from_fn_with_state(tls, security_headers))
                .layer(middleware::from_fn(request_id::layer))
                .layer(middleware::from_fn(shape_errors))
                .layer(HandleErrorLayer::new(overloaded_or_timeout))
                .load_shed()
                .concurrency_limit(limits.max_concurrent)
                .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    limits.request_timeout,
                ))
                .layer(middleware::from_fn_with_state(limits, refuse_large_bodies))
                .layer(DefaultBodyLimit::max(limits.max_body_bytes)),
        )
        .with_state(Arc::new(state))
}
