//! The `kukaku` command line. The only user of `anyhow`.

use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use kukaku::api::{self, AppState, Limits, ServerRole, server};
use kukaku::crypto::{AdminScope, Kek};
use kukaku::domain::InsurerNumber;
use kukaku::ledger::{PartitionId, format_utc_ms};
use kukaku::store::{PartitionStatus, Paths, Store, StoreOptions, VerifyOptions};

mod cli;

/// jemalloc for the whole process, RocksDB's C++ included (the dependency is unprefixed):
/// glibc malloc cost a fifth of the CPU of an HTTP import (docs/benchmarks.md, “The allocator”).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "kukaku",
    version,
    about = "Append-only ledger store for 国保 委託区画"
)]
struct Cli {
    /// Instance home: data/, keystore/ and kek.key live here.
    #[arg(
        long,
        env = "KUKAKU_HOME",
        default_value = "kukaku-home",
        global = true
    )]
    home: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new instance: KEK file (0600), key store, checkpoint signing key, data dir.
    Init {
        /// Instance origin, the prefix of every checkpoint origin (e.g. hub.kokuho-13.example).
        #[arg(long)]
        origin: String,
        /// Also write a self-signed TLS pair for localhost to tls/cert.pem and tls/key.pem
        /// (local use only).
        #[arg(long)]
        dev_cert: bool,
    },
    /// Serve the HTTP API (TLS by default).
    Serve {
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
        #[command(flatten)]
        upstream: UpstreamArgs,
    },
    /// Print this instance's public keys as kukaku-audit trust-file lines: `log` (the
    /// checkpoint key, for every partition) and `witness` (the cosigner key the hub pins with
    /// `serve --witness-vkey`).
    PublicKeys {
        /// Print only the witness vkey.
        #[arg(long, conflicts_with = "log")]
        witness: bool,
        /// Print only the log vkey.
        #[arg(long)]
        log: bool,
    },
    /// Import a transmission (世帯ファイル + 個人ファイル, layout v1) or a 高額該当情報ファイル
    /// (kogaku-v1) as the local admin: the same validation and atomic batch as
    /// POST /v1/transmissions and POST /v1/kogaku.
    Import {
        /// 保険者番号 of the partition.
        #[arg(long)]
        partition: String,
        /// Transmission id (the one inside both files).
        #[arg(long)]
        transmission_id: String,
        /// Declared encoding of both files: utf-8 or cp932. Never guessed.
        #[arg(long)]
        encoding: String,
        /// 世帯ファイル (CSV).
        #[arg(long, required_unless_present = "kogaku", requires = "kojin")]
        setai: Option<PathBuf>,
        /// 個人ファイル (CSV).
        #[arg(long, required_unless_present = "kogaku", requires = "setai")]
        kojin: Option<PathBuf>,
        /// Instead: a 高額該当情報ファイル (layout kogaku-v1, flow 4).
        #[arg(long, conflicts_with_all = ["setai", "kojin"])]
        kogaku: Option<PathBuf>,
    },
    /// Rebuild the derived indexes (blind index of 個人番号, household view) from the log.
    RebuildIndex {
        /// Only this partition (default: all active ones).
        #[arg(long)]
        partition: Option<String>,
    },
    /// Write the 資格履歴ファイル (rireki-v2) to standard output, as the local admin on the
    /// intermediate; appends a 提供記録 to each partition. The file holds 個人番号: pipe it to
    /// its destination, do not leave it on disk in clear. The manifest goes to --manifest.
    ExportHistory {
        /// Partitions (default: all active ones).
        #[arg(long = "partition")]
        partitions: Vec<String>,
        /// Only persons touched by copies at or after this local seq.
        #[arg(long, default_value_t = 0)]
        since: u64,
        /// Where to write the manifest (JSON, no personal data); refuses to overwrite.
        #[arg(long)]
        manifest: PathBuf,
    },
    /// Issue, list and revoke API credentials (bearer tokens).
    #[command(subcommand)]
    Credentials(CredentialsCommand),
    /// Register, provision, list and inspect partitions (委託区画).
    #[command(subcommand)]
    Partitions(PartitionsCommand),
    /// Print a partition's latest signed checkpoint and its verifier key.
    Checkpoint {
        /// 保険者番号 of the partition.
        partition: String,
    },
    /// Print an RFC 9162 proof as JSON, with the signed checkpoint it is relative to.
    #[command(subcommand)]
    Prove(ProveCommand),
    /// Recompute chains, trees and checkpoints from storage. Exit 1 on a failure, naming
    /// partition and seq.
    Verify {
        /// Only this partition (default: all).
        #[arg(long)]
        partition: Option<String>,
        /// Also decrypt sealed bodies and recompute commitments (needs the KEK).
        #[arg(long)]
        with_keys: bool,
    },
    /// Write an audit bundle: headers, envelopes and checkpoints, verifiable without keys.
    Export {
        /// Required: the only export there is (no plaintext is ever exported).
        #[arg(long, required = true)]
        audit: bool,
        /// Partitions to include (default: all active ones).
        #[arg(long = "partition")]
        partitions: Vec<String>,
        /// Start each partition at this checkpointed tree size instead of genesis: the bundle
        /// then carries the tree edge and the checkpoint there (an auditor continues from a
        /// checkpoint verified before).
        #[arg(long, default_value_t = 0)]
        from_size: u64,
        /// With --from-size: also prove, per partition, that the tree at --from-size extends
        /// the tree at this earlier size (an RFC 9162 consistency proof in the bundle). Give
        /// the size the auditor's state file holds: kukaku-audit refuses a bundle that starts
        /// past its saved size without one.
        #[arg(long, requires = "from_size")]
        prove_from: Option<u64>,
        /// Output file; refuses to overwrite.
        #[arg(long)]
        out: PathBuf,
    },
    /// Flow 4 (継続世帯): the prefecture's continuity job, as the local admin.
    #[command(subcommand)]
    Continuity(ContinuityCommand),
    /// Key management for security reviewers (metadata only; never prints key material).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Run a self-contained demo in a temporary directory: provision, append, prove, verify,
    /// then serve the hub API on loopback (plain HTTP) with printed tokens until Ctrl-C.
    Demo {
        /// Loopback address for the demo hub.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Stop after the ledger part; do not serve.
        #[arg(long)]
        no_serve: bool,
    },
}

/// The intermediate's link to the hub (flow 5 forwarding).
#[derive(clap::Args)]
struct UpstreamArgs {
    /// Hub base URL, e.g. https://hub.example:8443. With it, `--role intermediate` runs the
    /// replicator.
    #[arg(long)]
    upstream: Option<String>,
    /// Any of the hub's partition verifier keys (`kukaku partitions show` on the hub): pins
    /// the hub origin and checkpoint key. Give it twice while the hub rotates its signing
    /// key (`kukaku keys rotate-signing-key`): either key's signature is then accepted.
    #[arg(long, requires = "upstream")]
    upstream_vkey: Vec<String>,
    /// File holding the replicator credential's token (never on the command line).
    #[arg(long, requires = "upstream")]
    upstream_token_file: Option<PathBuf>,
    /// PEM roots for the hub's TLS certificate.
    #[arg(long, requires = "upstream")]
    upstream_ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for mTLS to the hub.
    #[arg(long, requires = "upstream_client_key")]
    upstream_client_cert: Option<PathBuf>,
    #[arg(long, requires = "upstream_client_cert")]
    upstream_client_key: Option<PathBuf>,
    /// Seconds between replication rounds.
    #[arg(long, default_value_t = 5)]
    replicate_every: u64,
    /// Longest wait, in seconds, between rounds after failures (the wait doubles per failed
    /// round from --replicate-every up to this).
    #[arg(long, default_value_t = 300)]
    replicate_max_backoff: u64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    Hub,
    Intermediate,
}

#[derive(Subcommand)]
enum CredentialsCommand {
    /// Issue a credential and print its token once (only a hash is stored).
    Issue {
        /// municipality, continuity-operator, replicator, ops-support or auditor.
        #[arg(long)]
        role: String,
        /// The one partition of a municipality credential.
        #[arg(long, conflicts_with_all = ["prefecture", "partitions", "all"])]
        partition: Option<String>,
        /// The prefecture (01–47) of a continuity-operator credential.
        #[arg(long, conflicts_with_all = ["partitions", "all"])]
        prefecture: Option<String>,
        /// Comma-separated partitions of a replicator, ops-support or auditor credential.
        #[arg(long, value_delimiter = ',', conflicts_with = "all")]
        partitions: Vec<String>,
        /// Every partition (auditor only).
        #[arg(long)]
        all: bool,
        /// Who holds it, for `list` (e.g. "Shinjuku terminal 1").
        #[arg(long)]
        label: String,
        /// Days until it expires.
        #[arg(long, default_value_t = 90)]
        expires_in_days: u32,
        /// Bind to this client certificate (PEM; e.g. the replicator's): the token is then
        /// accepted only on a TLS connection presenting it (`serve --client-ca`).
        #[arg(long)]
        client_cert: Option<PathBuf>,
    },
    /// List credentials: id, role, reach, label, expiry, revocation. Never the token.
    List,
    /// Revoke a credential by id; the next request with it gets 401.
    Revoke {
        /// The 16-hex-digit credential id from `list`.
        id: String,
    },
}

#[derive(Subcommand)]
enum PartitionsCommand {
    /// Register partitions (保険者番号, check digit validated) and run the provisioning job.
    /// Resumable: run again after an interruption to finish the remaining ones.
    Create {
        /// 保険者番号: 6 digits (市町村国保) or 8.
        #[arg(required = true)]
        ids: Vec<String>,
        /// The insurer's name (e.g. 千代田区), shown beside its number on the terminal and in
        /// print; only with one partition (`partitions name` names one later).
        #[arg(long)]
        name: Option<String>,
    },
    /// Name a registered partition (its municipality's or insurer's name).
    Name {
        /// 保険者番号 of the partition.
        partition: String,
        /// The name, 1–40 characters.
        name: String,
    },
    /// List registered partitions with status and size.
    List,
    /// Show one partition: status, size, checkpoints, latest checkpoint and verifier key.
    Show {
        /// 保険者番号 of the partition.
        partition: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Every DEK version per partition: scope (class, epoch), version, status (current,
    /// previous, retired, destroyed), encryptions made and stored entries still under it.
    Status {
        /// Only this partition (default: all active ones).
        #[arg(long)]
        partition: Option<String>,
    },
    /// Give every key scope of the partitions a new current DEK version (new writes use it;
    /// old versions still decrypt). Each version gets a key-event entry naming who and why.
    RotateDek {
        /// The partition to rotate.
        #[arg(long, required_unless_present = "all", conflicts_with = "all")]
        partition: Option<String>,
        /// Rotate every active partition.
        #[arg(long)]
        all: bool,
        /// Why (recorded in the key events).
        #[arg(long, default_value = "operator rotation")]
        reason: String,
    },
    /// Rewrap every key under a new KEK (one atomic key-store batch); the old KEK file is
    /// destroyed. A `rewrap` key event goes to every partition.
    RotateKek {
        #[arg(long, default_value = "operator KEK rotation")]
        reason: String,
    },
    /// Start a checkpoint-signing key transition: a new key, and every checkpoint signed by
    /// both until `--finish` retires the old one. Pin the new key in between.
    RotateSigningKey {
        /// End the transition: the older key stops signing.
        #[arg(long)]
        finish: bool,
        #[arg(long, default_value = "signing-key rotation")]
        reason: String,
    },
    /// Move entries sealed under previous DEK versions to the current version of their
    /// scope, throttled; resumable after a crash or Ctrl-C (run it again).
    Reencrypt {
        #[arg(long, required_unless_present = "all", conflicts_with = "all")]
        partition: Option<String>,
        #[arg(long)]
        all: bool,
        /// At most this many entries per second (0: no limit).
        #[arg(long, default_value_t = 2000)]
        rate: u64,
        /// Entries per writer step (appends run between steps).
        #[arg(long, default_value_t = 256)]
        chunk: u64,
        #[arg(long, default_value = "re-encryption to current keys")]
        reason: String,
    },
    /// Remove a previous DEK version once no entry is sealed under it (refused while any is).
    Retire {
        #[arg(long)]
        partition: String,
        /// The key id (`keys status`).
        #[arg(long)]
        key_id: u32,
        #[arg(long, default_value = "no entry uses it")]
        reason: String,
    },
    /// Crypto-shred a partition's keys (or one past fiscal year's dated keys): its bodies
    /// become unreadable for good; proofs and audits stay valid. Then the KEK is rotated.
    Destroy {
        #[arg(long)]
        partition: String,
        /// Only the dated keys (高額, 継続世帯 records) of this past fiscal year.
        #[arg(long)]
        fiscal_year: Option<u16>,
        /// The partition id again (asked for on the terminal when missing).
        #[arg(long)]
        confirm: Option<String>,
        /// Why, e.g. the retention rule (recorded in every destroy event).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
enum ContinuityCommand {
    /// Extract 継続候補世帯: households new in a municipality of the prefecture whose member
    /// came from another municipality of it. Appends a candidate to the new municipality
    /// (with access records in both); a rerun adds no duplicate.
    Extract {
        /// 都道府県 code, 01–47.
        #[arg(long)]
        prefecture: String,
        /// The continuity rules file (`case <1-5|head_left|other> = <continue|not_continue|manual>`,
        /// `tekiyo_end`, `late_shikyu_months`, `window_months` lines; `[NN]` per prefecture);
        /// default: cases 1–5 continue.
        #[arg(long)]
        rules: Option<PathBuf>,
        /// The run's date, YYYY-MM-DD (default: today in JST): new moves that start before
        /// the window (`window_months`, default 12 months) are listed, not proposed.
        #[arg(long, value_name = "YYYY-MM-DD")]
        as_of: Option<String>,
    },
}

#[derive(Subcommand)]
enum ProveCommand {
    /// Inclusion proof of entry SEQ in the tree of a checkpointed size.
    Inclusion {
        /// 保険者番号 of the partition.
        partition: String,
        /// Entry sequence number (leaf index).
        seq: u64,
        /// Checkpointed tree size (default: latest).
        #[arg(long)]
        size: Option<u64>,
    },
    /// Consistency proof between two checkpointed sizes.
    Consistency {
        /// 保険者番号 of the partition.
        partition: String,
        /// Older checkpointed size.
        from: u64,
        /// Newer checkpointed size (default: latest).
        #[arg(long)]
        to: Option<u64>,
    },
}

fn partition(text: &str) -> Result<PartitionId> {
    Ok(InsurerNumber::parse(text)
        .with_context(|| format!("partition {text}"))?
        .partition_id())
}

fn verify_all(store: &Store, only: Option<PartitionId>, with_keys: bool) -> Result<bool> {
    let ids: Vec<PartitionId> = match only {
        Some(p) => vec![p],
        None => store
            .partitions()?
            .into_iter()
            .map(|p| p.partition)
            .collect(),
    };
    let mut ok = true;
    for p in ids {
        match store.verify_partition(&p, VerifyOptions { with_keys }) {
            Ok(r) if r.bodies_shredded > 0 => println!(
                "ok  partition {} entries {} checkpoints {} root {} opened {} shredded {}",
                r.partition, r.entries, r.checkpoints, r.root, r.bodies_opened, r.bodies_shredded
            ),
            Ok(r) => println!(
                "ok  partition {} entries {} checkpoints {} root {} opened {}",
                r.partition, r.entries, r.checkpoints, r.root, r.bodies_opened
            ),
            Err(e) => {
                println!("FAIL {e}");
                ok = false;
            }
        }
    }
    Ok(ok)
}

fn open(paths: &Paths) -> Result<Store> {
    let store = Store::open(paths, StoreOptions::default())?;
    for (p, why) in store.quarantined() {
        eprintln!("warning: partition {p} is quarantined: {why}");
    }
    Ok(store)
}

fn partitions_create(paths: &Paths, ids: &[String], name: Option<&str>) -> Result<()> {
    let ids = ids
        .iter()
        .map(|s| partition(s))
        .collect::<Result<Vec<_>>>()?;
    if name.is_some() && ids.len() != 1 {
        anyhow::bail!(
            "--name names one partition: create them one at a time, or use `partitions name`"
        );
    }
    let added = {
        let store = open(paths)?;
        let added = store.request_partitions(&ids)?;
        if let (Some(name), Some(p)) = (name, ids.first()) {
            store.set_partition_name(p, name)?;
        }
        added
    };
    // Reopening creates all new column families in one step (see Store::provision).
    let store = open(paths)?;
    let bar = indicatif::ProgressBar::new(0).with_style(indicatif::ProgressStyle::with_template(
        "provisioning {bar:40} {pos}/{len} partitions ({eta} left)",
    )?);
    let done = store.provision(&mut |d, t| {
        bar.set_length(t);
        bar.set_position(d);
    })?;
    bar.finish_and_clear();
    println!("registered {added} new, provisioned {done}");
    Ok(())
}

fn partitions_show(store: &Store, p: &PartitionId) -> Result<()> {
    let info = store
        .partition(p)?
        .with_context(|| format!("partition {p} is not registered"))?;
    println!("partition   {p}");
    println!("status      {:?}", info.status);
    println!("requested   {}", format_utc_ms(info.requested_ms));
    if info.activated_ms != 0 {
        println!("activated   {}", format_utc_ms(info.activated_ms));
    }
    if let Some(why) = store.quarantined().get(p) {
        println!("QUARANTINED {why}");
    }
    if info.status == PartitionStatus::Active {
        println!("entries     {}", store.size(p)?);
        println!("checkpoints {}", store.checkpoint_sizes(p)?.len());
        if let Some(key) = store.verifier_key(p) {
            println!("vkey        {}", key.to_text());
        }
        if let Some(size) = store.latest_cosigned_size(p)? {
            let lag = store.size(p)?.saturating_sub(size);
            println!("cosigned    {size} (witness lag {lag} entries)");
        }
        if let Some(note) = store.checkpoint(p)? {
            println!("checkpoint\n{note}");
        }
    }
    Ok(())
}

/// What the intermediate's replicator needs.
struct ReplicatorConfig {
    client: kukaku::api::client::HubClient,
    upstream: kukaku::flows::replicate::Upstream,
    every: std::time::Duration,
    max_backoff: std::time::Duration,
}

fn replicator_config(url: &str, a: &UpstreamArgs) -> Result<ReplicatorConfig> {
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

fn serve(
    (store, admin_socket): (Store, &std::path::Path),
    role: ServerRole,
    listen: std::net::SocketAddr,
    transport: server::Transport,
    (limits, request_nice): (Limits, u8),
    (witnesses, rules, session_idle): (
        Vec<kukaku::ledger::VerifierKey>,
        kukaku::domain::continuity::Rules,
        std::time::Duration,
    ),
    replicator: Option<ReplicatorConfig>,
) -> Result<()> {
    let store = Arc::new(store);
    // Started after the store (so after its writer thread): the request threads run below it.
    let runtime = server::runtime(request_nice)?;
    runtime.block_on(async {
        let listener = server::bind(listen, &transport).await?;
        let admin = kukaku::admin::AdminSocket::bind(admin_socket)?;
        println!(
            "admin socket {} (mode 0600): `kukaku keys …` runs through this server",
            admin.path().display()
        );
        let admin_task = tokio::spawn(admin.run(Arc::clone(&store)));
        let scheme = match transport {
            server::Transport::Tls(_) => "https",
            server::Transport::PlainLoopback => "http",
        };
        let app = api::router(
            AppState::new(Arc::clone(&store), role)
                .with_witnesses(witnesses)
                .with_continuity_rules(rules)
                .with_session_idle(session_idle)
                .with_secure_cookies(matches!(transport, server::Transport::Tls(_))),
            limits,
        );
        println!(
            "kukaku {} serving {scheme}://{} (Ctrl-C to stop)",
            role.name(),
            listener.local_addr()?
        );
        let replicating = replicator.map(|r| {
            let store = Arc::clone(&store);
            println!("replicating from the hub every {} s", r.every.as_secs());
            tokio::spawn(async move {
                kukaku::flows::replicate::run(
                    &store,
                    &r.client,
                    &r.upstream,
                    r.every,
                    r.max_backoff,
                )
                .await
            })
        });
        server::serve(
            listener,
            app,
            transport,
            limits,
            shutdown_signal(),
            std::time::Duration::from_secs(30),
        )
        .await?;
        admin_task.abort();
        let _ = admin_task.await;
        if let Some(task) = replicating {
            task.abort();
            let _ = task.await;
        }
        anyhow::Ok(())
    })?;
    drop(runtime);
    // Every handler has finished: dropping the last reference drains the writer's queue.
    match Arc::try_unwrap(store) {
        Ok(store) => drop(store),
        Err(_) => eprintln!("warning: store still referenced at shutdown"),
    }
    println!("stopped");
    Ok(())
}

async fn shutdown_signal() {
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

/// `credentials …` as an admin request: through the running server's admin socket (so a
/// revocation acts on its next request), or on the store directly when none runs.
fn credentials(paths: &Paths, command: CredentialsCommand) -> Result<()> {
    use kukaku::admin::AdminRequest;
    let request = match command {
        CredentialsCommand::Issue {
            role,
            partition,
            prefecture,
            partitions,
            all,
            label,
            expires_in_days,
            client_cert,
        } => AdminRequest::IssueCredential {
            role,
            partition,
            prefecture,
            partitions,
            all,
            label,
            expires_in_days,
            client_cert_sha256: client_cert
                .as_deref()
                .map(server::certificate_sha256)
                .transpose()?
                .map(|h| h.iter().map(|b| format!("{b:02x}")).collect()),
        },
        CredentialsCommand::List => AdminRequest::ListCredentials,
        CredentialsCommand::Revoke { id } => AdminRequest::RevokeCredential { id },
    };
    admin_command(paths, request)
}

fn load_rules(path: Option<&std::path::Path>) -> Result<kukaku::domain::continuity::Rules> {
    Ok(match path {
        Some(f) => kukaku::domain::continuity::Rules::parse(
            &std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
        )
        .with_context(|| format!("{}", f.display()))?,
        None => kukaku::domain::continuity::Rules::default(),
    })
}

fn continuity_extract(
    paths: &Paths,
    prefecture: &str,
    rules: Option<&std::path::Path>,
    as_of: Option<&str>,
) -> Result<()> {
    let rules = load_rules(rules)?;
    let as_of = match as_of {
        None => kukaku::store::today_jst(),
        Some(text) => {
            kukaku::domain::text::parse_date(text).context("--as-of must be a date YYYY-MM-DD")?
        }
    };
    let store = open(paths)?;
    let kek = Kek::load_file(&paths.kek)?;
    let scope = AdminScope::from_kek(&kek)
        .prefecture(prefecture)
        .context("--prefecture must be a 2-digit code 01–47")?;
    let who = kukaku::flows::import::Importer {
        actor: "admin-cli".into(),
        role: "admin".into(),
        route: "kukaku continuity extract".into(),
        request_id: "-".into(),
    };
    let r = kukaku::flows::continuity::extract(&store, &scope, &rules, &who, as_of)?;
    println!(
        "prefecture {} as of {}: {} partitions, {} households read, {} new candidate(s), {} already extracted, {} outside the window",
        r.prefecture,
        r.as_of,
        r.partitions,
        r.households_read,
        r.candidates.len(),
        r.already_extracted,
        r.outside_window.len()
    );
    for c in &r.candidates {
        println!(
            "  {} seq {}: from {}, case {}, period {}, suggestion {}{}",
            c.partition,
            c.seq.map_or("-".to_owned(), |s| s.to_string()),
            c.old_hokensha_no,
            c.case,
            c.period,
            c.suggestion,
            if c.anomalies.is_empty() {
                String::new()
            } else {
                format!(", 要確認: {}", c.anomalies.join(" "))
            }
        );
    }
    for o in &r.outside_window {
        println!(
            "  {}: a move from {} starting {} is before the window (not proposed)",
            o.partition, o.old_hokensha_no, o.ido_date
        );
    }
    Ok(())
}

/// What `kukaku import` reads.
enum ImportFiles {
    /// 世帯ファイル and 個人ファイル (flow 5).
    Transmission(PathBuf, PathBuf),
    /// 高額該当情報ファイル (flow 4).
    Kogaku(PathBuf),
}

fn import_files(
    paths: &Paths,
    p: &str,
    transmission_id: &str,
    encoding: &str,
    files: &ImportFiles,
) -> Result<bool> {
    use kukaku::flows::import::{ImportError, Importer, import_checked};
    use kukaku::flows::transmission::Encoding;
    let encoding = Encoding::parse(encoding).context("--encoding must be utf-8 or cp932")?;
    let read = |path: &std::path::Path| {
        std::fs::read(path)
            .map(zeroize::Zeroizing::new)
            .with_context(|| format!("reading {}", path.display()))
    };
    let store = open(paths)?;
    let who = Importer {
        actor: "admin-cli".into(),
        role: "admin".into(),
        route: "kukaku import".into(),
        request_id: "-".into(),
    };
    let p = partition(p)?;
    let result = match files {
        ImportFiles::Transmission(setai, kojin) => {
            let (setai, kojin) = (read(setai)?, read(kojin)?);
            // The household rules read the partition's earlier snapshots: the admin's scope.
            let kek = kukaku::crypto::Kek::load_file(&paths.kek)?;
            let scope = kukaku::crypto::AdminScope::from_kek(&kek).partition(&p);
            import_checked(
                &store,
                &scope,
                transmission_id,
                encoding,
                &setai,
                &kojin,
                &who,
            )
        }
        ImportFiles::Kogaku(file) => {
            let file = read(file)?;
            kukaku::flows::kogaku::import(&store, &p, transmission_id, encoding, &file, &who)
        }
    };
    match result {
        Ok(out) => {
            println!(
                "{} {}: {} households, seq {}..{}",
                if out.replayed {
                    "already stored"
                } else {
                    "stored"
                },
                out.transmission_id,
                out.households,
                out.first_seq,
                out.first_seq + out.count
            );
            Ok(true)
        }
        Err(ImportError::Rejected(r)) => {
            eprintln!("rejected, nothing stored: {} problem(s)", r.problems.len());
            for pr in &r.problems {
                eprintln!(
                    "  {} line {}{}: {}",
                    pr.file.name(),
                    pr.line,
                    pr.field.map(|f| format!(" {f}")).unwrap_or_default(),
                    pr.reason
                );
            }
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

fn active_or(store: &Store, asked: &[String]) -> Result<Vec<PartitionId>> {
    if asked.is_empty() {
        Ok(store
            .partitions()?
            .into_iter()
            .filter(|p| p.status == PartitionStatus::Active)
            .map(|p| p.partition)
            .collect())
    } else {
        asked.iter().map(|s| partition(s)).collect()
    }
}

fn rebuild_index(paths: &Paths, only: Option<&str>) -> Result<()> {
    let store = open(paths)?;
    let kek = Kek::load_file(&paths.kek)?;
    let admin = AdminScope::from_kek(&kek);
    let asked: Vec<String> = only.map(str::to_owned).into_iter().collect();
    for p in active_or(&store, &asked)? {
        let bar =
            indicatif::ProgressBar::new(0).with_style(indicatif::ProgressStyle::with_template(
                &format!("{p} {{bar:40}} {{pos}}/{{len}} entries"),
            )?);
        let r = kukaku::flows::index::rebuild(&store, &admin.partition(&p), &mut |d, t| {
            bar.set_length(t);
            bar.set_position(d);
        })?;
        bar.finish_and_clear();
        println!(
            "{p}: {} snapshots, {} index entries",
            r.snapshots, r.index_entries
        );
    }
    Ok(())
}

fn export_history(
    paths: &Paths,
    asked: &[String],
    since: u64,
    manifest: &std::path::Path,
) -> Result<()> {
    use std::io::{IsTerminal, Write};
    if std::io::stdout().is_terminal() {
        anyhow::bail!(
            "the 資格履歴ファイル holds 個人番号; redirect standard output to its destination"
        );
    }
    let store = open(paths)?;
    let kek = Kek::load_file(&paths.kek)?;
    let admin = AdminScope::from_kek(&kek);
    let scopes: Vec<_> = active_or(&store, asked)?
        .iter()
        .map(|p| admin.partition(p))
        .collect();
    let mut manifest_file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(manifest)
        .with_context(|| format!("creating {}", manifest.display()))?;
    let bar = indicatif::ProgressBar::new(0).with_style(indicatif::ProgressStyle::with_template(
        "exporting {bar:40} {pos}/{len} partitions",
    )?);
    let who = kukaku::flows::history::Exporter {
        recipient: "admin-cli".into(),
        request_id: "-".into(),
    };
    let (file, m) = kukaku::flows::history::export(&store, &scopes, since, &who, &mut |d, t| {
        bar.set_length(t);
        bar.set_position(d);
    })?;
    bar.finish_and_clear();
    let mut out = std::io::stdout().lock();
    out.write_all(&file)?;
    out.flush()?;
    manifest_file.write_all(serde_json::to_string_pretty(&m)?.as_bytes())?;
    manifest_file.sync_all()?;
    eprintln!(
        "{} rows from {} partitions; manifest {} (sha256 {})",
        m.rows,
        m.partitions.len(),
        manifest.display(),
        m.sha256
    );
    Ok(())
}

fn run(cli: Cli) -> Result<bool> {
    let paths = Paths::under(&cli.home);
    match cli.command {
        Command::Init { origin, dev_cert } => {
            Store::init(&paths, &origin, StoreOptions::default())?;
            println!("initialised {} (origin {origin})", cli.home.display());
            if dev_cert {
                let (cert, key) = server::dev_cert_paths(&cli.home);
                server::write_dev_cert(&cert, &key)?;
                println!(
                    "wrote self-signed TLS pair {} and {} (localhost only)",
                    cert.display(),
                    key.display()
                );
            }
        }
        Command::Serve {
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
            upstream,
        } => {
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
            let (default_cert, default_key) = server::dev_cert_paths(&cli.home);
            let transport = if plain_http_loopback {
                server::Transport::PlainLoopback
            } else {
                server::Transport::Tls(server::load_tls(
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
                (ServerRole::Intermediate, Some(url)) => Some(replicator_config(url, &upstream)?),
                (ServerRole::Hub, Some(_)) => {
                    anyhow::bail!("--upstream is for --role intermediate")
                }
                _ => None,
            };
            if role == ServerRole::Intermediate && !witnesses.is_empty() {
                anyhow::bail!("--witness-vkey is for --role hub");
            }
            serve(
                (open(&paths)?, &paths.admin_socket),
                role,
                listen,
                transport,
                (limits, request_nice),
                (
                    witnesses,
                    rules,
                    std::time::Duration::from_secs(session_idle_minutes * 60),
                ),
                replicator,
            )?;
        }
        Command::PublicKeys { witness, log } => admin_command(
            &paths,
            kukaku::admin::AdminRequest::PublicKeys { witness, log },
        )?,
        Command::Credentials(c) => credentials(&paths, c)?,
        Command::RebuildIndex { partition: only } => rebuild_index(&paths, only.as_deref())?,
        Command::ExportHistory {
            partitions,
            since,
            manifest,
        } => export_history(&paths, &partitions, since, &manifest)?,
        Command::Import {
            partition: p,
            transmission_id,
            encoding,
            setai,
            kojin,
            kogaku,
        } => {
            let files = match (setai, kojin, kogaku) {
                (_, _, Some(k)) => ImportFiles::Kogaku(k),
                (Some(s), Some(k), None) => ImportFiles::Transmission(s, k),
                _ => anyhow::bail!("give --setai and --kojin, or --kogaku"),
            };
            return import_files(&paths, &p, &transmission_id, &encoding, &files);
        }
        Command::Partitions(PartitionsCommand::Create { ids, name }) => {
            partitions_create(&paths, &ids, name.as_deref())?
        }
        Command::Partitions(PartitionsCommand::Name { partition: p, name }) => {
            let p = partition(&p)?;
            open(&paths)?.set_partition_name(&p, &name)?;
            println!("{p}: {}", name.trim());
        }
        Command::Partitions(PartitionsCommand::List) => {
            let store = open(&paths)?;
            let names = store.partition_names()?;
            println!("partition\tstatus\tentries\tname");
            for p in store.partitions()? {
                let size = store.size(&p.partition).unwrap_or(0);
                let name = names.get(&p.partition).map_or("", String::as_str);
                println!("{}\t{:?}\t{size}\t{name}", p.partition, p.status);
            }
        }
        Command::Partitions(PartitionsCommand::Show { partition: p }) => {
            partitions_show(&open(&paths)?, &partition(&p)?)?
        }
        Command::Checkpoint { partition: p } => {
            let store = open(&paths)?;
            let p = partition(&p)?;
            print!("{}", store.checkpoint(&p)?.context("no checkpoint")?);
            println!("{}", store.verifier_key(&p).context("no key")?.to_text());
        }
        Command::Prove(ProveCommand::Inclusion {
            partition: p,
            seq,
            size,
        }) => {
            let proof = open(&paths)?.prove_inclusion(&partition(&p)?, seq, size)?;
            println!("{}", serde_json::to_string_pretty(&proof)?);
        }
        Command::Prove(ProveCommand::Consistency {
            partition: p,
            from,
            to,
        }) => {
            let proof = open(&paths)?.prove_consistency(&partition(&p)?, from, to)?;
            println!("{}", serde_json::to_string_pretty(&proof)?);
        }
        Command::Verify {
            partition: p,
            with_keys,
        } => {
            let store = open(&paths)?;
            let only = p.map(|s| partition(&s)).transpose()?;
            return verify_all(&store, only, with_keys);
        }
        Command::Export {
            audit: _,
            partitions,
            from_size,
            prove_from,
            out,
        } => {
            // The server (if one runs) writes the file: give it an absolute path.
            let out = std::path::absolute(&out)?;
            admin_command(
                &paths,
                kukaku::admin::AdminRequest::ExportAudit {
                    partitions,
                    from_size,
                    prove_from,
                    out,
                },
            )?
        }
        Command::Keys(command) => keys(&paths, command)?,
        Command::Continuity(ContinuityCommand::Extract {
            prefecture,
            rules,
            as_of,
        }) => continuity_extract(&paths, &prefecture, rules.as_deref(), as_of.as_deref())?,
        Command::Demo { listen, no_serve } => return cli::demo::demo(listen, no_serve),
    }
    Ok(true)
}

/// `kukaku keys …`: through the running server's admin socket, or on the store directly.
fn keys(paths: &Paths, command: KeysCommand) -> Result<()> {
    use kukaku::admin::AdminRequest;
    let some = |p: Option<String>| p.into_iter().collect::<Vec<_>>();
    let request = match command {
        KeysCommand::Status { partition } => AdminRequest::Status {
            partitions: some(partition),
        },
        KeysCommand::RotateDek {
            partition, reason, ..
        } => AdminRequest::RotateDek {
            partitions: some(partition),
            reason,
        },
        KeysCommand::RotateKek { reason } => AdminRequest::RotateKek { reason },
        KeysCommand::RotateSigningKey { finish, reason } => {
            AdminRequest::RotateSigningKey { finish, reason }
        }
        KeysCommand::Reencrypt {
            partition,
            rate,
            chunk,
            reason,
            ..
        } => AdminRequest::Reencrypt {
            partitions: some(partition),
            reason,
            rate,
            chunk,
        },
        KeysCommand::Retire {
            partition,
            key_id,
            reason,
        } => AdminRequest::Retire {
            partition,
            key_id,
            reason,
        },
        KeysCommand::Destroy {
            partition,
            fiscal_year,
            confirm,
            reason,
        } => {
            let confirm = match confirm {
                Some(c) => c,
                None if std::io::IsTerminal::is_terminal(&std::io::stdin()) => {
                    let what = fiscal_year.map_or("every key".to_owned(), |y| {
                        format!("the dated keys of fiscal year {y}")
                    });
                    eprint!(
                        "This destroys {what} of partition {partition}; its data becomes unreadable for good.\nType the partition id to confirm: "
                    );
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim().to_owned()
                }
                None => anyhow::bail!(
                    "destroy needs --confirm <partition id> when not run on a terminal"
                ),
            };
            AdminRequest::Destroy {
                partition,
                fiscal_year,
                confirm,
                reason,
            }
        }
    };
    admin_command(paths, request)
}

/// Runs an admin request through the running server's admin socket, or on the store.
fn admin_command(paths: &Paths, request: kukaku::admin::AdminRequest) -> Result<()> {
    use kukaku::admin::{self, Reply};
    let bar = indicatif::ProgressBar::new(0).with_style(indicatif::ProgressStyle::with_template(
        "{msg} {wide_bar} {pos}/{len} (ETA {eta})",
    )?);
    let mut show = |r: Reply| match r {
        Reply::Progress { label, pos, len } => {
            bar.set_length(len);
            bar.set_position(pos);
            bar.set_message(label);
        }
        Reply::Line(line) => bar.suspend(|| println!("{line}")),
        Reply::Done | Reply::Error(_) => {}
    };
    let result = if admin::server_listening(&paths.admin_socket) {
        eprintln!(
            "(through the running server's admin socket {})",
            paths.admin_socket.display()
        );
        admin::call(&paths.admin_socket, &request, &mut show)
    } else {
        let store = open(paths)?;
        admin::execute(&store, &request, "admin-cli", &mut |r| {
            show(r);
            true
        })
    };
    bar.finish_and_clear();
    Ok(result?)
}

/// The error and its causes, skipping a cause whose text the message already ends with
/// (errors that print their source inline).
fn chain(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.ends_with(&c) {
            text = format!("{text}: {c}");
        }
    }
    text
}

/// RocksDB's C++ is compiled with SSE4.2 and PCLMUL for x86_64-unknown-linux-gnu
/// (`.cargo/config.toml`, for the hardware CRC32C): refuse to start on a CPU without them
/// rather than die on an illegal instruction later. Other targets get no such flags.
fn cpu_supported() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    {
        std::arch::is_x86_feature_detected!("sse4.2")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu")))]
    {
        true
    }
}

fn main() -> ExitCode {
    if !cpu_supported() {
        eprintln!(
            "error: this CPU lacks SSE4.2 or PCLMULQDQ, which this build of RocksDB uses \
             (x86-64 CPUs since 2010 have both); rebuild without CXXFLAGS_x86_64_unknown_linux_gnu \
             in .cargo/config.toml"
        );
        return ExitCode::from(2);
    }
    // Before any key is loaded: no core file, no ptrace by other processes of this user.
    if let Err(e) = kukaku::store::private::harden_process() {
        eprintln!("error: could not disable core dumps and ptrace attachment: {e}");
        return ExitCode::from(2);
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            ExitCode::from(2)
        }
    }
}
