//! The HTTP load of `benches/http.rs`, shared with `benches/cell.rs` (the same load on the
//! embedded engine and on a cell).

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kukaku::api::server::{self, Transport};
use kukaku::api::{self, AppState, Limits, ServerRole};
use kukaku::crypto::credential::{Reach, Role};
use kukaku::flows::sample;
use kukaku::ledger::PartitionId;
use kukaku::store::Store;

/// What one run of the HTTP load measured.
pub struct Run {
    pub requests: usize,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub failed: usize,
}

/// `ids.len()` clients, one partition of `store` (provisioned) each, sending `per_client`
/// one-household imports back to back through an in-process server on 127.0.0.1, for at
/// most `budget`.
pub fn run(store: Store, ids: &[PartitionId], per_client: usize, budget: Duration) -> Run {
    let clients = ids.len();
    let later = kukaku::store::now_unix_ms() + 86_400_000;
    // Bodies are made before the clock starts: the clients share the 2 cores with the server.
    let work: Vec<(String, Vec<String>)> = ids
        .iter()
        .enumerate()
        .map(|(c, p)| {
            let (token, _) = store
                .issue_credential(
                    Role::Municipality,
                    Reach::Partition(p.clone()),
                    "bench",
                    later,
                )
                .unwrap();
            let bodies = (0..per_client)
                .map(|i| {
                    let tid = format!("{p}-2026-{i:04}");
                    let f = sample::transmission(p.as_str(), &tid, 1, (c * 100_000 + i) as u64);
                    serde_json::json!({
                        "transmission_id": tid,
                        "encoding": "utf-8",
                        "setai_file": B64.encode(f.setai.as_bytes()),
                        "kojin_file": B64.encode(f.kojin.as_bytes()),
                    })
                    .to_string()
                })
                .collect();
            (format!("Bearer {}", &*token.to_text()), bodies)
        })
        .collect();
    let store = Arc::new(store);
    // The server's runtime, as `kukaku serve` builds it: request threads below the writer. The
    // clients' tasks run on it too. `KUKAKU_BENCH_REQUEST_NICE=0`: all at one level.
    let nice = std::env::var("KUKAKU_BENCH_REQUEST_NICE")
        .map_or(server::DEFAULT_REQUEST_NICE, |v| v.parse().unwrap());
    let rt = server::runtime(nice).unwrap();
    let result = rt.block_on(async {
        let listener = server::bind("127.0.0.1:0".parse().unwrap(), &Transport::PlainLoopback)
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits {
            max_concurrent: clients.max(256),
            ..Limits::default()
        };
        let app = api::router(AppState::new(Arc::clone(&store), ServerRole::Hub), limits);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(server::serve(
            listener,
            app,
            Transport::PlainLoopback,
            limits,
            async {
                let _ = stopped.await;
            },
            Duration::from_secs(5),
        ));
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(clients)
            .build_http();
        let uri: hyper::Uri = format!("http://{addr}/v1/transmissions").parse().unwrap();
        let start = Instant::now();
        let tasks: Vec<_> = work
            .into_iter()
            .map(|(auth, bodies)| {
                let (client, uri) = (client.clone(), uri.clone());
                tokio::spawn(async move {
                    let mut latencies = Vec::with_capacity(bodies.len());
                    let mut failed = 0;
                    for body in bodies {
                        if start.elapsed() > budget {
                            break;
                        }
                        let req = hyper::Request::post(uri.clone())
                            .header("authorization", &auth)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body)))
                            .unwrap();
                        let t = Instant::now();
                        match client.request(req).await {
                            Ok(resp) => {
                                let ok = resp.status().is_success();
                                let _ = resp.into_body().collect().await;
                                if ok {
                                    latencies.push(t.elapsed());
                                } else {
                                    failed += 1;
                                }
                            }
                            Err(_) => failed += 1,
                        }
                    }
                    (latencies, failed)
                })
            })
            .collect();
        let mut latencies = Vec::new();
        let mut failed = 0;
        for t in tasks {
            let (l, f) = t.await.unwrap();
            latencies.extend(l);
            failed += f;
        }
        let elapsed = start.elapsed();
        let _ = stop.send(());
        server.await.unwrap().unwrap();
        latencies.sort_unstable();
        let at = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        Run {
            requests: latencies.len(),
            elapsed,
            p50: at(0.50),
            p99: at(0.99),
            failed,
        }
    });
    drop(rt);
    result
}
