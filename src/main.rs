//! The `kukaku` command line. The only user of `anyhow`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use kukaku::api::server;
use kukaku::domain::InsurerNumber;
use kukaku::ledger::PartitionId;
use kukaku::store::{PartitionStatus, Paths, Store, StoreOptions, VerifyOptions};

mod cli;

use cli::continuity::{continuity_extract, load_rules};
use cli::export::{export_history, rebuild_index};
use cli::import::{ImportFiles, import_files};
use cli::keys::{admin_command, credentials, keys};
use cli::partitions::{partitions_create, partitions_show};
use cli::serve::shutdown_signal;

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
    Serve(cli::serve::ServeArgs),
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
                println!("FAIL {}", kukaku::error::report(&e));
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
        Command::Serve(args) => args.run(&cli.home, &paths)?,
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

/// The error and its causes, each once (`kukaku::error::report`).
fn chain(e: &anyhow::Error) -> String {
    kukaku::error::report(e.as_ref())
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
