//! `kukaku serve`: the hub's or the intermediate's HTTP server, its admin socket, and the
//! intermediate's replicator.

use anyhow::{Context, Result};
use kukaku::api::{self, AppState, Limits, ServerRole, server};
use kukaku::store::{Paths, Store};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::watch;

use std::path::PathBuf;

use super::args::*;
use super::continuity::load_rules;
use super::partition;

/// What the intermediate's replicator needs.
pub(crate) struct ReplicatorConfig {
    client: kukaku::api::client::HubClient,
    upstream: kukaku::flows::replicate::Upstream,
    every: std::time::Duration,
    max_backoff: std::time::Duration,
}

pub(crate) fn replicator_config(url: &str, a: &UpstreamArgs) -> Result<ReplicatorConfig> {
    if a.upstream_vkey.is_empty() {
        anyhow::bail!("--upstream needs --upstream-vkey (pins the hub's checkpoint key)");
    }
    let vkeys: Vec<&str> = a.upstream_vkey.iter().map(String::as_str).collect();
    let upstream = kukaku::flows::replicate::Upstream::from_partition_vkeys(&vkeys)
        .context("--upstream-vkey is not a hub partition verifier key (all of one origin)")?;
    let token_file = a
        .upstream_token_file
        .as_deref()
        .context("--upstream needs --upstream-token-file")?;
    let token = kukaku::api::client::read_token_file(token_file)?;
    let identity = a
        .upstream_client_cert
        .as_deref()
        .zip(a.upstream_client_key.as_deref());
    let client =
        kukaku::api::client::HubClient::new(url, token, a.upstream_ca.as_deref(), identity)?;
    Ok(ReplicatorConfig {
        client,
        upstream,
        every: std::time::Duration::from_secs(a.replicate_every.max(1)),
        max_backoff: std::time::Duration::from_secs(
            a.replicate_max_backoff.max(a.replicate_every.max(1)),
        ),
    })
}

/// `kukaku serve`'s arguments.
#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// Read every flag below from this TOML file first (keys are the flags' long names);
    /// flags on the command line override it (docs/operations.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Which server this instance is.
    #[arg(long, value_enum)]
    role: RoleArg,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: std::net::SocketAddr,
    /// TLS certificate chain (PEM). Default: tls/cert.pem under the home.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM, mode 0600). Default: tls/key.pem under the home.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// CA certificates (PEM) for client certificates (mTLS). Credentials bound to a client
    /// certificate are then accepted only with it; others work without one.
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// Serve plain HTTP instead of TLS. Refused unless --listen is a loopback address.
    #[arg(long)]
    plain_http_loopback: bool,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    max_body_bytes: usize,
    /// Requests handled at once; more get 503.
    #[arg(long, default_value_t = 256)]
    max_concurrent: usize,
    /// Open connections at once; more are closed when accepted.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Nice levels the request threads run below the store's writer thread (0-19; 0: the
    /// same). The writer is the serial stage of every append: giving it a core first
    /// raised throughput by about 5 % at 64 clients (docs/benchmarks.md, “Request threads
    /// below the writer”).
    #[arg(long, default_value_t = server::DEFAULT_REQUEST_NICE,
          value_parser = clap::value_parser!(u8).range(0..=19))]
    request_nice: u8,
    /// Hub: a witness's cosigner key (`kukaku public-keys --witness` on the intermediate) whose
    /// cosignatures of this hub's checkpoints are verified and kept. Repeatable.
    #[arg(long = "witness-vkey")]
    witness_vkeys: Vec<String>,
    /// Hub: the continuity rules file for POST /v1/continuity/extract and confirm (`case`,
    /// `tekiyo_end`, `late_shikyu_months`, `window_months` lines; `[NN]` per prefecture).
    #[arg(long)]
    continuity_rules: Option<PathBuf>,
    /// Hub: a terminal session ends after this many minutes without a request (and at
    /// logout).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=1440))]
    session_idle_minutes: u64,
    /// Serve Prometheus metrics (text format, GET /metrics) on their own plain-HTTP listener;
    /// off unless given, 127.0.0.1:9464 when given without an address. No label carries
    /// personal data or a credential id (docs/operations.md).
    #[arg(long, num_args = 0..=1, default_missing_value = "127.0.0.1:9464")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Several cells of one instance identity (docs/operations.md "Several cells"): a TOML
    /// file naming this cell (`cell = "a"`), every cell's address (`[cells]`, name = URL)
    /// and the partitions placed on each (`[partitions]`, 保険者番号 = cell). Requests for a
    /// partition placed on another cell get 421 with its address.
    #[arg(long)]
    placement: Option<PathBuf>,
    /// Also label the replication and witness lags by partition id.
    #[arg(long, requires = "metrics_listen")]
    metrics_partition_labels: bool,
    #[command(flatten)]
    upstream: UpstreamArgs,
}

impl ServeArgs {
    /// Checks the arguments, opens the store and serves until Ctrl-C.
    pub(crate) fn run(self, home: &std::path::Path, paths: &Paths) -> Result<()> {
        let settings = self.settings(home, paths)?;
        serve(paths, settings)
    }

    /// `kukaku config check`: the same checks, and the settings printed instead of served.
    pub(crate) fn check(self, home: &std::path::Path, paths: &Paths) -> Result<()> {
        let files: Vec<(&str, Option<PathBuf>)> = vec![
            ("tls_cert", self.tls_cert.clone()),
            ("tls_key", self.tls_key.clone()),
            ("client_ca", self.client_ca.clone()),
            ("continuity_rules", self.continuity_rules.clone()),
            ("placement", self.placement.clone()),
            (
                "upstream_token_file",
                self.upstream.upstream_token_file.clone(),
            ),
            ("upstream_ca", self.upstream.upstream_ca.clone()),
            (
                "upstream_client_cert",
                self.upstream.upstream_client_cert.clone(),
            ),
            (
                "upstream_client_key",
                self.upstream.upstream_client_key.clone(),
            ),
        ];
        let upstream = self.upstream.upstream.clone();
        let upstream_vkeys = self.upstream.upstream_vkey.clone();
        let s = self.settings(home, paths)?;
        for (key, path) in files {
            if let Some(p) = path {
                println!("{key} = \"{}\"", p.display());
            }
        }
        if let Some(url) = upstream {
            println!("upstream = \"{url}\"");
            let keys: Vec<String> = upstream_vkeys.iter().map(|k| format!("\"{k}\"")).collect();
            println!("upstream_vkey = [{}]", keys.join(", "));
        }
        println!("role = \"{}\"", s.role.name());
        println!("listen = \"{}\"", s.listen);
        println!(
            "transport = \"{}\"",
            if s.transport.is_tls() {
                "tls"
            } else {
                "plain-http-loopback"
            }
        );
        println!("max_body_bytes = {}", s.limits.max_body_bytes);
        println!("max_concurrent = {}", s.limits.max_concurrent);
        println!("max_connections = {}", s.limits.max_connections);
        println!("request_nice = {}", s.request_nice);
        let vkeys: Vec<String> = s
            .witnesses
            .iter()
            .map(|k| format!("\"{}\"", k.to_text()))
            .collect();
        println!("witness_vkey = [{}]", vkeys.join(", "));
        println!("session_idle_minutes = {}", s.session_idle.as_secs() / 60);
        match s.metrics {
            Some((addr, labels)) => {
                println!("metrics_listen = \"{addr}\"");
                println!("metrics_partition_labels = {labels}");
            }
            None => println!("# metrics off"),
        }
        match &s.replicator {
            Some(r) => {
                println!("replicate_every = {}", r.every.as_secs());
                println!("replicate_max_backoff = {}", r.max_backoff.as_secs());
            }
            None => println!("# no replicator"),
        }
        println!("# configuration valid");
        Ok(())
    }

    /// Every argument checked and loaded: TLS files, rules, witness keys, the replicator.
    fn settings<'p>(self, home: &std::path::Path, paths: &'p Paths) -> Result<Settings<'p>> {
        let ServeArgs {
            config: _,
            role,
            listen,
            tls_cert,
            tls_key,
            client_ca,
            plain_http_loopback,
            max_body_bytes,
            max_concurrent,
            max_connections,
            request_nice,
            witness_vkeys,
            continuity_rules,
            session_idle_minutes,
            metrics_listen,
            metrics_partition_labels,
            placement,
            upstream,
        } = self;
        let placement = match placement {
            Some(file) => load_placement(&file)?,
            None => kukaku::api::placement::Placement::default(),
        };
        let rules = load_rules(continuity_rules.as_deref())?;
        let witnesses = witness_vkeys
            .iter()
            .map(|t| {
                kukaku::ledger::VerifierKey::parse(t)
                    .ok()
                    .filter(|k| k.is_cosigner())
                    .with_context(|| {
                        format!("--witness-vkey {t:?} is not a cosigner key (type 0x04)")
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let (default_cert, default_key) = server::dev_cert_paths(home);
        let transport = if plain_http_loopback {
            server::Transport::PlainLoopback
        } else {
            server::Transport::ReloadableTls(server::TlsFiles::load(
                &tls_cert.unwrap_or(default_cert),
                &tls_key.unwrap_or(default_key),
                client_ca.as_deref(),
            )?)
        };
        let limits = Limits {
            max_body_bytes,
            max_concurrent,
            max_connections,
            ..Limits::default()
        };
        let role = match role {
            RoleArg::Hub => ServerRole::Hub,
            RoleArg::Intermediate => ServerRole::Intermediate,
        };
        let replicator = match (&role, upstream.upstream.as_deref()) {
            (ServerRole::Intermediate, Some(url)) => {
                Some(Arc::new(replicator_config(url, &upstream)?))
            }
            (ServerRole::Hub, Some(_)) => {
                anyhow::bail!("--upstream is for --role intermediate")
            }
            _ => None,
        };
        if role == ServerRole::Intermediate && !witnesses.is_empty() {
            anyhow::bail!("--witness-vkey is for --role hub");
        }
        Ok(Settings {
            admin_socket: &paths.admin_socket,
            role,
            listen,
            transport,
            limits,
            request_nice,
            witnesses,
            rules,
            session_idle: std::time::Duration::from_secs(session_idle_minutes * 60),
            replicator,
            metrics: metrics_listen.map(|addr| (addr, metrics_partition_labels)),
            placement,
        })
    }
}

/// `serve --placement FILE`, checked: every partition's cell is a known one, this cell too.
fn load_placement(file: &std::path::Path) -> Result<kukaku::api::placement::Placement> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct PlacementFile {
        cell: String,
        cells: std::collections::BTreeMap<String, String>,
        #[serde(default)]
        partitions: std::collections::BTreeMap<String, String>,
    }
    let text =
        std::fs::read_to_string(file).with_context(|| format!("--placement {}", file.display()))?;
    let f: PlacementFile =
        toml::from_str(&text).with_context(|| format!("--placement {}", file.display()))?;
    let partitions = f
        .partitions
        .into_iter()
        .map(|(p, cell)| Ok((partition(&p)?, cell)))
        .collect::<Result<_>>()
        .with_context(|| format!("--placement {}", file.display()))?;
    kukaku::api::placement::Placement::new(&f.cell, f.cells, partitions)
        .with_context(|| format!("--placement {}", file.display()))
}

/// Everything a server runs with but its store: checked, files loaded.
pub(crate) struct Settings<'a> {
    admin_socket: &'a std::path::Path,
    role: ServerRole,
    listen: std::net::SocketAddr,
    transport: server::Transport,
    limits: Limits,
    request_nice: u8,
    witnesses: Vec<kukaku::ledger::VerifierKey>,
    rules: kukaku::domain::continuity::Rules,
    session_idle: std::time::Duration,
    replicator: Option<Arc<ReplicatorConfig>>,
    /// The metrics listener and whether lags carry partition labels.
    metrics: Option<(std::net::SocketAddr, bool)>,
    /// Where partitions are served when there are several cells.
    placement: kukaku::api::placement::Placement,
}

/// Serves until SIGINT or SIGTERM: one term per store opened. On a cell, a term ends
/// early when the store is poisoned (another writer took the cell, or a commit's outcome is
/// unknown): the server then stands by and serves a store opened afresh (`standby`).
pub(crate) fn serve(paths: &Paths, s: Settings<'_>) -> Result<()> {
    let stop = super::standby::stop_signal()?;
    while let Some(store) = super::standby::open_as_writer(paths, &stop)? {
        match serve_term(store, &s, stop.clone())? {
            Ended::Stopped => break,
            Ended::CellLost => {
                println!("this server may no longer write the cell; standing by to open it again")
            }
        }
    }
    println!("stopped");
    Ok(())
}

/// How a term of serving ended.
enum Ended {
    /// SIGINT or SIGTERM.
    Stopped,
    /// The store was poisoned on a cell.
    CellLost,
}

fn serve_term(store: Store, s: &Settings<'_>, stop: watch::Receiver<bool>) -> Result<Ended> {
    let store = Arc::new(store);
    // Started after the store (so after its writer thread): the request threads run below it.
    let runtime = server::runtime(s.request_nice)?;
    let lost = Arc::new(AtomicBool::new(false));
    runtime.block_on(run_server(Arc::clone(&store), s, stop, Arc::clone(&lost)))?;
    drop(runtime);
    // Every handler has finished: dropping the last reference drains the writer's queue.
    match Arc::try_unwrap(store) {
        Ok(store) => drop(store),
        Err(_) => eprintln!("warning: store still referenced at shutdown"),
    }
    Ok(if lost.load(Ordering::SeqCst) {
        Ended::CellLost
    } else {
        Ended::Stopped
    })
}

/// Serves `store` until `stop` or, on a cell, until the store is poisoned (`lost` is then
/// set).
async fn run_server(
    store: Arc<Store>,
    s: &Settings<'_>,
    mut stop: watch::Receiver<bool>,
    lost: Arc<AtomicBool>,
) -> Result<()> {
    let listener = server::bind(s.listen, &s.transport).await?;
    let admin = kukaku::admin::AdminSocket::bind(s.admin_socket)?;
    println!(
        "admin socket {} (mode 0600): `kukaku keys …` runs through this server",
        admin.path().display()
    );
    let mut tasks = vec![tokio::spawn(admin.run(Arc::clone(&store)))];
    if let Some((addr, labels)) = s.metrics {
        tasks.extend(super::metrics::start(addr, labels, &store).await?);
    }
    let scheme = if s.transport.is_tls() {
        "https"
    } else {
        "http"
    };
    if let server::Transport::ReloadableTls(files) = &s.transport {
        tasks.push(tokio::spawn(reload_on_sighup(Arc::clone(files))));
    }
    let app = api::router(
        AppState::new(Arc::clone(&store), s.role)
            .with_witnesses(s.witnesses.clone())
            .with_continuity_rules(s.rules.clone())
            .with_session_idle(s.session_idle)
            .with_secure_cookies(s.transport.is_tls())
            .with_placement(s.placement.clone()),
        s.limits,
    );
    println!(
        "kukaku {} serving {scheme}://{} (Ctrl-C to stop)",
        s.role.name(),
        listener.local_addr()?
    );
    if let Some(r) = &s.replicator {
        tasks.push(spawn_replicator(Arc::clone(&store), Arc::clone(r)));
    }
    // systemd (Type=notify): serving from here on. Without NOTIFY_SOCKET, nothing.
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %kukaku::error::report(&e), "readiness notification");
    }
    let watched = Arc::clone(&store);
    let ended = async move {
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => {}
            () = super::standby::cell_lost(&watched) => lost.store(true, Ordering::SeqCst),
        }
    };
    let drain = std::time::Duration::from_secs(30);
    server::serve(listener, app, s.transport.clone(), s.limits, ended, drain).await?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    for task in tasks {
        task.abort();
        let _ = task.await;
    }
    Ok(())
}

/// SIGHUP: reads the TLS certificate, key and client CA again; open connections keep what
/// they were accepted with, new ones get the new files. A reload that fails keeps the old
/// settings and says why.
async fn reload_on_sighup(files: Arc<server::TlsFiles>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("SIGHUP cannot be caught; TLS reload is off");
        return;
    };
    while hup.recv().await.is_some() {
        let mut reloading = vec![sd_notify::NotifyState::Reloading];
        reloading.extend(sd_notify::NotifyState::monotonic_usec_now().ok());
        let _ = sd_notify::notify(false, &reloading);
        let f = Arc::clone(&files);
        match tokio::task::spawn_blocking(move || f.reload()).await {
            Ok(Ok(())) => tracing::info!("TLS certificate, key and client CA reloaded"),
            Ok(Err(e)) => {
                tracing::error!(error = %kukaku::error::report(&e), "TLS reload failed; the previous certificate stays")
            }
            Err(e) => tracing::error!(error = %kukaku::error::report(&e), "TLS reload"),
        }
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    }
}

/// The intermediate's replicator, running until aborted.
fn spawn_replicator(store: Arc<Store>, r: Arc<ReplicatorConfig>) -> tokio::task::JoinHandle<()> {
    println!("replicating from the hub every {} s", r.every.as_secs());
    tokio::spawn(async move {
        kukaku::flows::replicate::run(&store, &r.client, &r.upstream, r.every, r.max_backoff).await
    })
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
