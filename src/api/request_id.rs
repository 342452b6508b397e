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

/// 64 random bits as 16 letters `a`–`p` (one per nibble). No digit: an id that is logged
/// and stored in access records must never look like a 個人番号 (12 digits), which hex could
/// (a run of 12 digits with a valid check digit in about 1 of 600 ids; the demo's scan for
/// protected identifiers caught one).
fn fresh() -> String {
    crate::crypto::random::<8>()
        .map(|b| {
            b.iter()
                .flat_map(|x| [x >> 4, x & 0x0f])
                .map(|n| char::from(b'a' + n))
                .collect()
        })
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

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_have_no_digit() {
        for _ in 0..1000 {
            let id = super::fresh();
            assert_eq!(id.len(), 16);
            assert!(id.bytes().all(|b| (b'a'..=b'p').contains(&b)), "{id}");
        }
    }
}
