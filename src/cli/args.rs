//! The command line's arguments: every subcommand and flag, with the help text users read.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kukaku",
    version,
    about = "Append-only ledger store for 国保 委託区画"
)]
pub(crate) struct Cli {
    /// Instance home: data/, keystore/ and kek.key live here.
    #[arg(
        long,
        env = "KUKAKU_HOME",
        default_value = "kukaku-home",
        global = true
    )]
    pub(crate) home: PathBuf,
    /// Log lines on stderr as text, or as one JSON object per line (for log shippers).
    /// RUST_LOG filters them (e.g. `info`, `kukaku=debug`).
    #[arg(long, value_enum, default_value = "text", global = true)]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Create a new instance: KEK file (0600), key store, checkpoint signing key, data dir.
    Init {
        /// Instance origin, the prefix of every checkpoint origin (e.g. hub.kokuho-13.example).
        #[arg(long, required_unless_present = "sibling_of")]
        origin: Option<String>,
        /// Make a further cell of the instance whose home this is (docs/operations.md
        /// "Several cells"): its origin, signing, witness and credential keys and its KEK
        /// (copied from that home), on this home's engine. Partitions then move to it with
        /// `partitions move`.
        #[arg(long, conflicts_with_all = ["origin", "kek_pkcs11"])]
        sibling_of: Option<PathBuf>,
        /// Also write a self-signed TLS pair for localhost to tls/cert.pem and tls/key.pem
        /// (local use only).
        #[arg(long)]
        dev_cert: bool,
        /// Keep the KEK in an HSM instead of kek.key: a PKCS#11 configuration (JSON: module,
        /// token, key_label, pin_file or pin_env; docs/keys.md), copied into the home as
        /// kek.pkcs11. The KEK is made in the token and never leaves it.
        #[arg(long)]
        kek_pkcs11: Option<PathBuf>,
        /// Keep the data in PostgreSQL (a Patroni cell, docs/ARCHITECTURE.md "Storage
        /// engines") instead of the embedded RocksDB: a file (mode 0600) holding the libpq
        /// connection string. Needs a kukaku built with `--features postgres`.
        #[arg(long)]
        pg_dsn_file: Option<PathBuf>,
        /// The PostgreSQL schema of this instance's tables.
        #[arg(long, default_value = "kukaku", requires = "pg_dsn_file")]
        pg_schema: String,
    },
    /// Move this embedded instance onto a replicated cell (PostgreSQL under Patroni): every
    /// pair and key-store record copied into an empty schema and read back, then
    /// `engine.json` written and `data/` and `keystore/` renamed to `….before-cell`; verified on
    /// the cell with keys. The instance must not be serving. Needs `--features postgres`.
    MoveToCell {
        /// A file (mode 0600) holding the cell's libpq connection string.
        #[arg(long)]
        pg_dsn_file: PathBuf,
        /// The PostgreSQL schema (must be empty).
        #[arg(long, default_value = "kukaku")]
        pg_schema: String,
    },
    /// Make this home a further machine of a cell's instance: a copy of the instance's KEK
    /// file and `engine.json`, nothing else (the data and keys are in the cell), checked by
    /// opening the cell to read. `kukaku serve` here then stands by while another serves.
    /// Needs `--features postgres`.
    JoinCell {
        /// A copy of the instance's `kek.key` (mode 0600), brought from its first machine.
        #[arg(long)]
        kek: PathBuf,
        /// A file (mode 0600) holding the cell's libpq connection string.
        #[arg(long)]
        pg_dsn_file: PathBuf,
        /// The instance's PostgreSQL schema.
        #[arg(long, default_value = "kukaku")]
        pg_schema: String,
    },
    /// Serve the HTTP API (TLS by default). `--config FILE` reads every flag from a TOML
    /// file first; flags given on the command line override it.
    #[command(args_override_self = true)]
    Serve(Box<super::serve::ServeArgs>),
    /// Check a `serve` configuration (the file and any flags) without starting.
    #[command(subcommand)]
    Config(ConfigCommand),
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
    Import(ImportArgs),
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
    Export(ExportArgs),
    /// Flow 4 (継続世帯): the prefecture's continuity job, as the local admin.
    #[command(subcommand)]
    Continuity(ContinuityCommand),
    /// Key management for security reviewers (metadata only; never prints key material).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Back the instance up into a directory (online: through the running server's admin
    /// socket, else directly): a consistent, incremental copy of data/ and keystore/ with a
    /// manifest of every partition's checkpoint. The KEK is never in a backup.
    Backup(BackupArgs),
    /// Restore a backup into a new home (--home, which must not exist or be empty), install
    /// the KEK file given, open it and verify every partition with its keys against the
    /// backup's manifest.
    Restore(RestoreArgs),
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
pub(crate) struct UpstreamArgs {
    /// Hub base URL, e.g. https://hub.example:8443. With it, `--role intermediate` runs the
    /// replicator.
    #[arg(long)]
    pub(crate) upstream: Option<String>,
    /// Any of the hub's partition verifier keys (`kukaku partitions show` on the hub): pins
    /// the hub origin and checkpoint key. Give it twice while the hub rotates its signing
    /// key (`kukaku keys rotate-signing-key`): either key's signature is then accepted.
    #[arg(long, requires = "upstream")]
    pub(crate) upstream_vkey: Vec<String>,
    /// File holding the replicator credential's token (never on the command line).
    #[arg(long, requires = "upstream")]
    pub(crate) upstream_token_file: Option<PathBuf>,
    /// PEM roots for the hub's TLS certificate.
    #[arg(long, requires = "upstream")]
    pub(crate) upstream_ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for mTLS to the hub.
    #[arg(long, requires = "upstream_client_key")]
    pub(crate) upstream_client_cert: Option<PathBuf>,
    #[arg(long, requires = "upstream_client_cert")]
    pub(crate) upstream_client_key: Option<PathBuf>,
    /// Seconds between replication rounds.
    #[arg(long, default_value_t = 5)]
    pub(crate) replicate_every: u64,
    /// Longest wait, in seconds, between rounds after failures (the wait doubles per failed
    /// round from --replicate-every up to this).
    #[arg(long, default_value_t = 300)]
    pub(crate) replicate_max_backoff: u64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum RoleArg {
    Hub,
    Intermediate,
}

#[derive(Subcommand)]
pub(crate) enum CredentialsCommand {
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
pub(crate) enum PartitionsCommand {
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
    /// Move a partition to another cell of this instance's identity (`init --sibling-of`):
    /// marked moved here once every queued append is durable, copied with its keys and
    /// credentials, verified there with its keys and the same signed checkpoint. Neither
    /// cell may be serving (on a cell, their servers stand by while it runs). Then switch
    /// the partition's route to the other cell.
    Move {
        /// 保険者番号 of the partition.
        partition: String,
        /// The home of the other cell.
        #[arg(long)]
        to: PathBuf,
    },
    /// Remove the copy a move left on this cell: the partition's entries, its wrapped keys,
    /// key metadata and the credentials that reach it alone, purged from the files as a
    /// destroy does (docs/keys.md). Its writes stay refused here.
    DropMoved {
        /// 保険者番号 of the moved partition.
        partition: String,
        /// The partition id again, to confirm.
        #[arg(long)]
        confirm: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum KeysCommand {
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
        /// Move the KEK into an HSM: a PKCS#11 configuration (JSON, as for `init
        /// --kek-pkcs11`); the KEK file is shredded once every key is rewrapped.
        #[arg(long, conflicts_with = "to_file")]
        to_pkcs11: Option<PathBuf>,
        /// Move the KEK out of the HSM into a new kek.key (mode 0600); the token's object is
        /// destroyed once every key is rewrapped.
        #[arg(long)]
        to_file: bool,
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
pub(crate) enum ContinuityCommand {
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
pub(crate) enum ProveCommand {
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

/// `kukaku import`'s arguments.
#[derive(clap::Args)]
pub(crate) struct ImportArgs {
    /// 保険者番号 of the partition.
    #[arg(long)]
    pub(crate) partition: String,
    /// Transmission id (the one inside both files).
    #[arg(long)]
    pub(crate) transmission_id: String,
    /// Declared encoding of both files: utf-8 or cp932. Never guessed.
    #[arg(long)]
    pub(crate) encoding: String,
    /// 世帯ファイル (CSV).
    #[arg(long, required_unless_present = "kogaku", requires = "kojin")]
    pub(crate) setai: Option<PathBuf>,
    /// 個人ファイル (CSV).
    #[arg(long, required_unless_present = "kogaku", requires = "setai")]
    pub(crate) kojin: Option<PathBuf>,
    /// Instead: a 高額該当情報ファイル (layout kogaku-v1, flow 4).
    #[arg(long, conflicts_with_all = ["setai", "kojin"])]
    pub(crate) kogaku: Option<PathBuf>,
}

/// `kukaku export --audit`'s arguments.
#[derive(clap::Args)]
pub(crate) struct ExportArgs {
    /// Required: the only export there is (no plaintext is ever exported).
    #[arg(long, required = true)]
    pub(crate) audit: bool,
    /// Partitions to include (default: all active ones).
    #[arg(long = "partition")]
    pub(crate) partitions: Vec<String>,
    /// Start each partition at this checkpointed tree size instead of genesis: the bundle
    /// then carries the tree edge and the checkpoint there (an auditor continues from a
    /// checkpoint verified before).
    #[arg(long, default_value_t = 0)]
    pub(crate) from_size: u64,
    /// With --from-size: also prove, per partition, that the tree at --from-size extends
    /// the tree at this earlier size (an RFC 9162 consistency proof in the bundle). Give
    /// the size the auditor's state file holds: kukaku-audit refuses a bundle that starts
    /// past its saved size without one.
    #[arg(long, requires = "from_size")]
    pub(crate) prove_from: Option<u64>,
    /// Output file; refuses to overwrite.
    #[arg(long)]
    pub(crate) out: PathBuf,
}

/// `kukaku backup`'s arguments.
#[derive(clap::Args)]
pub(crate) struct BackupArgs {
    /// The backup directory (created if missing); each backup adds what changed.
    #[arg(long)]
    pub(crate) to: PathBuf,
    /// Keep only the newest N backups (default: all).
    #[arg(long)]
    pub(crate) keep: Option<usize>,
}

/// `kukaku restore`'s arguments.
#[derive(clap::Args)]
pub(crate) struct RestoreArgs {
    /// The backup directory.
    #[arg(long)]
    pub(crate) from: PathBuf,
    /// The backup to restore (default: the newest; `kukaku restore --list` shows them).
    #[arg(long)]
    pub(crate) backup_id: Option<u32>,
    /// The KEK file the backup needs (its fingerprint is in the manifest); copied into the
    /// new home with mode 0600.
    #[arg(long, required_unless_present_any = ["list", "kek_pkcs11"], conflicts_with = "kek_pkcs11")]
    pub(crate) kek: Option<PathBuf>,
    /// The backup's KEK is in an HSM: its PKCS#11 configuration (JSON, as for `init
    /// --kek-pkcs11`), written into the new home as kek.pkcs11.
    #[arg(long)]
    pub(crate) kek_pkcs11: Option<PathBuf>,
    /// A kukaku-audit state file (what auditors verified, or a witness's checkpoints in the
    /// same shape): each restored partition must extend the checkpoint verified of it.
    #[arg(long)]
    pub(crate) against: Option<PathBuf>,
    /// With --against: restore even a backup that holds fewer entries than were verified
    /// (the log would fork there); each such partition records a `restore` key event.
    #[arg(long, requires = "against")]
    pub(crate) accept_older: bool,
    /// A consistency proof from the live instance (JSON of its auditor route
    /// `/v1/audit/partitions/P/proofs/consistency?from=<P's size in the backup>`), proving the
    /// backup's log of P a prefix of the live one; repeat for each partition.
    #[arg(long)]
    pub(crate) live_proof: Vec<PathBuf>,
    /// Why, for the key event of --accept-older.
    #[arg(long, default_value = "")]
    pub(crate) reason: String,
    /// List the backups in --from and exit.
    #[arg(long)]
    pub(crate) list: bool,
}

#[derive(Subcommand)]
pub(crate) enum ConfigCommand {
    /// Validate `--config FILE` and the flags given (the TLS files, rules, witness keys,
    /// the replicator's token file) and print the settings `serve` would run with.
    #[command(args_override_self = true)]
    Check(Box<super::serve::ServeArgs>),
}
