//! HTTP metrics (`telemetry::HTTP_REQUESTS`, `telemetry::HTTP_SECONDS`) labelled by route
//! template (never the path a client sent), method and status.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

/// Marks a response whose request was counted under its route.
#[derive(Clone, Copy)]
struct Counted;

/// A method as a label: the standard ones by name, anything else as `other` (a client must
/// not be able to mint labels).
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

fn record(route: String, method: &'static str, status: u16, started: Instant) {
    metrics::histogram!(crate::telemetry::HTTP_SECONDS, "route" => route.clone(), "method" => method)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(
        crate::telemetry::HTTP_REQUESTS,
        "route" => route,
        "method" => method,
        "status" => status.to_string()
    )
    .increment(1);
}

/// On every route: counts the request under its route template.
pub(crate) async fn routed(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "(none)".to_owned(), |m| m.as_str().to_owned());
    let method = method_label(req.method());
    let started = Instant::now();
    let mut res = next.run(req).await;
    record(route, method, res.status().as_u16(), started);
    res.extensions_mut().insert(Counted);
    res
}

/// Outermost: counts what no route answered (unknown paths, load shedding, timeouts) under
/// the route `(none)`.
pub(crate) async fn unrouted(req: Request, next: Next) -> Response {
    let method = method_label(req.method());
    let started = Instant::now();
    let res = next.run(req).await;
    if res.extensions().get::<Counted>().is_none() {
        record("(none)".to_owned(), method, res.status().as_u16(), started);
    }
    res
}
