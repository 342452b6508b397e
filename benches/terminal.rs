//! The terminal's long lists against a page budget (issue 28): a municipality with 1,000
//! continuity candidates and one with 10,000 transmissions, each list paginated (100 rows a
//! page). A logged-in clerk's GET of the first and the last page through the whole router
//! (`Router::oneshot`, no socket), 20 times each: median and worst, beside the budget of
//! 300 ms a page. Each candidate-list view appends its access record (a synced write), as
//! in production.
//!
//! `cargo bench --bench terminal` (`KUKAKU_BENCH_CANDIDATES=1000`,
//! `KUKAKU_BENCH_TRANSMISSIONS=10000`). `KUKAKU_BENCH_SMOKE=1`: 20 candidates, 150
//! transmissions, 3 rounds.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: the panic is its report"
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{env, send, smoke, who};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use kukaku::api::{self, AppState, Limits, ServerRole};
use kukaku::crypto::credential::{Reach, Role};
use kukaku::crypto::{AdminScope, Kek};
use kukaku::domain::InsurerNumber;
use kukaku::domain::continuity::Rules;
use kukaku::flows::sample;
use kukaku::store::{Paths, Store, StoreOptions};
use tower::ServiceExt;

/// A page's time budget.
const BUDGET: Duration = Duration::from_millis(300);

async fn call(app: &axum::Router, req: Request<Body>) -> (StatusCode, Option<String>) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let cookie = res
        .headers()
        .get(header::SET_COOKIE)
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
    let _ = axum::body::to_bytes(res.into_body(), 1 << 26)
        .await
        .unwrap();
    (status, cookie)
}

async fn login(app: &axum::Router, token: &str) -> String {
    let req = Request::builder()
        .method("POST")
        .uri("/terminal/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("token={token}")))
        .unwrap();
    call(app, req).await.1.expect("a session cookie")
}

/// Median and worst of `rounds` GETs of `uri`.
async fn measure(
    app: &axum::Router,
    cookie: &str,
    uri: &str,
    rounds: usize,
) -> (Duration, Duration) {
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let req = Request::builder()
            .uri(uri)
            .header(header::COOKIE, cookie)
            .body(Body::empty())
            .unwrap();
        let t = Instant::now();
        let (status, _) = call(app, req).await;
        times.push(t.elapsed());
        assert_eq!(status, StatusCode::OK, "{uri}");
    }
    times.sort();
    (times[times.len() / 2], times[times.len() - 1])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let candidates = env("KUKAKU_BENCH_CANDIDATES", 1_000, 20);
    let transmissions = env("KUKAKU_BENCH_TRANSMISSIONS", 10_000, 150);
    let rounds = if smoke() { 3 } else { 20 };
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(dir.path());
    let (a, b) = (
        InsurerNumber::parse("131011").unwrap().partition_id(),
        InsurerNumber::parse("131029").unwrap().partition_id(),
    );
    let t = Instant::now();
    let store = tokio::task::block_in_place(|| {
        let store =
            Store::init(&paths, "bench.kokuho-13.example", StoreOptions::default()).unwrap();
        store.request_partitions(&[a.clone(), b.clone()]).unwrap();
        store.provision(&mut |_, _| {}).unwrap();
        let m = sample::movers(a.as_str(), b.as_str(), candidates, 1);
        send(&store, &a, &m.settled);
        send(&store, &a, &m.leave);
        send(&store, &b, &m.arrive);
        for i in 0..transmissions {
            let f =
                sample::transmission(a.as_str(), &format!("131011-B-{i:05}"), 1, 100 + i as u64);
            send(&store, &a, &f);
        }
        let kek = Kek::load_file(&paths.kek).unwrap();
        let tokyo = AdminScope::from_kek(&kek).prefecture("13").unwrap();
        let as_of = kukaku::domain::text::parse_date(sample::AS_OF).unwrap();
        let r =
            kukaku::flows::continuity::extract(&store, &tokyo, &Rules::default(), &who(), as_of)
                .unwrap();
        assert_eq!(r.candidates.len(), candidates);
        Arc::new(store)
    });
    eprintln!("set-up: {:.1} s", t.elapsed().as_secs_f64());
    let token = |p: &kukaku::ledger::PartitionId| {
        let day = kukaku::store::now_unix_ms() + 86_400_000;
        store
            .issue_credential(
                Role::Municipality,
                Reach::Partition(p.clone()),
                "bench clerk",
                day,
            )
            .unwrap()
            .0
            .to_text()
            .to_string()
    };
    let app = api::router(
        AppState::new(Arc::clone(&store), ServerRole::Hub),
        Limits::default(),
    );
    let (clerk_a, clerk_b) = (login(&app, &token(&a)).await, login(&app, &token(&b)).await);
    let last = |n: usize| n.div_ceil(100).max(1);
    let pages = [
        (
            format!("candidates, {candidates} rows: page 1"),
            clerk_b.clone(),
            "/terminal/candidates".to_owned(),
        ),
        (
            format!("candidates, {candidates} rows: last page"),
            clerk_b.clone(),
            format!("/terminal/candidates?page={}", last(candidates)),
        ),
        (
            format!("transmissions, {} rows: page 1", transmissions + 2),
            clerk_a.clone(),
            "/terminal/transmissions".to_owned(),
        ),
        (
            format!("transmissions, {} rows: last page", transmissions + 2),
            clerk_a.clone(),
            format!("/terminal/transmissions?page={}", last(transmissions + 2)),
        ),
    ];
    println!("| page | median | worst | budget |");
    println!("|---|---:|---:|---:|");
    for (name, cookie, uri) in &pages {
        let (median, worst) = measure(&app, cookie, uri, rounds).await;
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {} ms{} |",
            median.as_secs_f64() * 1000.0,
            worst.as_secs_f64() * 1000.0,
            BUDGET.as_millis(),
            if worst > BUDGET { " (over)" } else { "" }
        );
    }
}
