//! `serve --metrics-listen`: the Prometheus recorder, its listener (GET /metrics, text
//! format) and a sampler of the store's health every 15 s (docs/operations.md, "Metrics").

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::routing::get;
use kukaku::store::Store;
use kukaku::telemetry as t;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::task::JoinHandle;

/// How often the store's health is read.
const SAMPLE_EVERY: Duration = Duration::from_secs(15);

/// Installs the recorder and starts the listener and the sampler.
pub(crate) async fn start(
    addr: SocketAddr,
    partition_labels: bool,
    store: &Arc<Store>,
) -> Result<[JoinHandle<()>; 2]> {
    let seconds = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    let commands = [
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(t::COMMIT_SECONDS.into()), &seconds)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(t::HTTP_SECONDS.into()), &seconds))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(t::BATCH_COMMANDS.into()), &commands))
        .context("histogram buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    t::describe();
    t::set_partition_labels(partition_labels);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics-listen {addr}"))?;
    println!("metrics on http://{}/metrics", listener.local_addr()?);
    let app = Router::new().route("/metrics", get(move || render(handle.clone())));
    let serving = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %kukaku::error::report(&e), "metrics listener");
        }
    });
    let sampling = tokio::spawn(sample(Arc::clone(store)));
    Ok([serving, sampling])
}

async fn render(handle: PrometheusHandle) -> String {
    handle.render()
}

/// Reads the store's health now and then and sets its gauges.
async fn sample(store: Arc<Store>) {
    loop {
        let s = Arc::clone(&store);
        match tokio::task::spawn_blocking(move || (s.health(), s.is_poisoned())).await {
            Ok((Ok(h), poisoned)) => {
                metrics::gauge!(t::PENDING_COMPACTION_BYTES).set(h.pending_compaction_bytes as f64);
                metrics::gauge!(t::WRITE_STOPPED).set(f64::from(u8::from(h.write_stopped)));
                metrics::gauge!(t::DELAYED_WRITE_RATE).set(h.delayed_write_rate as f64);
                metrics::gauge!(t::MEMTABLE_BYTES).set(h.memtable_bytes as f64);
                metrics::gauge!(t::BLOCK_CACHE_BYTES).set(h.block_cache_bytes as f64);
                metrics::gauge!(t::NONCE_BUDGET_USED).set(h.nonce_budget_used);
                metrics::gauge!(t::POISONED).set(f64::from(u8::from(poisoned)));
                let lag: u64 = h.witness_lag.iter().map(|(_, n)| n).sum();
                metrics::gauge!(t::WITNESS_LAG_ENTRIES).set(lag as f64);
                for (p, n) in &h.witness_lag {
                    t::partition_gauge(t::PARTITION_WITNESS_LAG_ENTRIES, p, *n);
                }
            }
            Ok((Err(e), _)) => {
                tracing::warn!(error = %kukaku::error::report(&e), "reading the store's health");
            }
            Err(e) => tracing::warn!(error = %kukaku::error::report(&e), "health sampler"),
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}
