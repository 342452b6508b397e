//! Request ids: a random id per request, in the `x-request-id` response header, the log span
//! and 5xx bodies, and in access records (to join them with the log).

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The current request's id (`-` outside a request).
pub fn current() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "-".into())
}

fn fresh() -> String {
    crate::crypto::random::<8>()
        .map(|b| b.iter().map(|x| format!("{x:02x}")).collect())
        .unwrap_or_else(|_| "norandom".into())
}

/// Outer middleware: assigns the id and logs one line per request with the route template
/// (recorded by [`record_route`]; never the concrete path or query, which could carry request
/// values), status and latency.
pub async fn layer(req: Request, next: Next) -> Response {
    let id = fresh();
    let method = req.method().clone();
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        %method,
        route = tracing::field::Empty,
        credential = tracing::field::Empty
    );
    let started = std::time::Instant::now();
    let mut res = REQUEST_ID
        .scope(id.clone(), next.run(req).instrument(span.clone()))
        .await;
    span.in_scope(|| {
        tracing::info!(
            status = res.status().as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "done"
        )
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

/// Route-level middleware: records the matched route template in the request span.
pub async fn record_route(req: Request, next: Next) -> Response {
    if let Some(m) = req.extensions().get::<MatchedPath>() {
        tracing::Span::current().record("route", m.as_str());
    }
    next.run(req).await
}
