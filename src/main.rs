//! The `kukaku` command line. The only user of `anyhow`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use kukaku::crypto::{AdminScope, Kek};
use kukaku::domain::InsurerNumber;
use kukaku::ledger::{Kind, PartitionId, format_utc_ms};
use kukaku::store::{NewEntry, PartitionStatus, Paths, Store, StoreOptions, VerifyOptions};

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
    },
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
        /// Output file; refuses to overwrite.
        #[arg(long)]
        out: PathBuf,
    },
    /// Run a self-contained demo in a temporary directory.
    Demo,
}

#[derive(Subcommand)]
enum PartitionsCommand {
    /// Register partitions (保険者番号, check digit validated) and run the provisioning job.
    /// Resumable: run again after an interruption to finish the remaining ones.
    Create {
        /// 保険者番号: 6 digits (市町村国保) or 8.
        #[arg(required = true)]
        ids: Vec<String>,
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

fn demo() -> Result<bool> {
    let dir = tempfile::tempdir()?;
    let paths = Paths::under(dir.path());
    println!("demo instance in {}", dir.path().display());
    let store = Store::init(&paths, "hub.kokuho-13.example", StoreOptions::default())?;
    let ids = ["131011", "380014", "33120015"]
        .iter()
        .map(|s| partition(s))
        .collect::<Result<Vec<_>>>()?;
    store.request_partitions(&ids)?;
    let n = store.provision(&mut |_, _| {})?;
    println!("provisioned {n} partitions");
    for (i, p) in ids.iter().enumerate() {
        for j in 0..5 {
            let payload = format!("sample sealed record {j} of partition {i}").into_bytes();
            store.append(
                p,
                vec![NewEntry::new(
                    Kind::HOUSEHOLD_SNAPSHOT,
                    20_000,
                    None,
                    payload,
                )?],
            )?;
        }
    }
    let p = ids.first().context("no partition")?;
    let kek = Kek::load_file(&paths.kek)?;
    let scope = AdminScope::from_kek(&kek).partition(p);
    let e = store.read_entry(&scope, 3)?;
    println!("read back seq 3: {}", String::from_utf8_lossy(&e.payload));
    println!("{}", store.checkpoint(p)?.unwrap_or_default());
    let proof = store.prove_inclusion(p, 3, None)?;
    let key = store.verifier_key(p).context("verifier key")?;
    proof.verify_with_key(&key)?;
    println!(
        "inclusion proof of seq 3 verified:\n{}",
        serde_json::to_string_pretty(&proof)?
    );
    println!("verifier key: {}", key.to_text());
    verify_all(&store, None, true)
}

fn open(paths: &Paths) -> Result<Store> {
    let store = Store::open(paths, StoreOptions::default())?;
    for (p, why) in store.quarantined() {
        eprintln!("warning: partition {p} is quarantined: {why}");
    }
    Ok(store)
}

fn partitions_create(paths: &Paths, ids: &[String]) -> Result<()> {
    let ids = ids
        .iter()
        .map(|s| partition(s))
        .collect::<Result<Vec<_>>>()?;
    let added = open(paths)?.request_partitions(&ids)?;
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
        if let Some(note) = store.checkpoint(p)? {
            println!("checkpoint\n{note}");
        }
    }
    Ok(())
}

fn export_audit(store: &Store, partitions: &[String], out: &std::path::Path) -> Result<()> {
    let ids: Vec<PartitionId> = if partitions.is_empty() {
        store
            .partitions()?
            .into_iter()
            .filter(|p| p.status == PartitionStatus::Active)
            .map(|p| p.partition)
            .collect()
    } else {
        partitions
            .iter()
            .map(|s| partition(s))
            .collect::<Result<_>>()?
    };
    let mut total = 0;
    for p in &ids {
        total += store.size(p)?;
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .with_context(|| format!("creating {}", out.display()))?;
    let bar = indicatif::ProgressBar::new(total).with_style(
        indicatif::ProgressStyle::with_template("exporting {bar:40} {pos}/{len} entries")?,
    );
    let file = store.export_audit(&ids, std::io::BufWriter::new(file), &mut |d| {
        bar.set_position(d)
    })?;
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    bar.finish_and_clear();
    println!(
        "wrote {} ({} partitions, {total} entries)",
        out.display(),
        ids.len()
    );
    Ok(())
}

fn run(cli: Cli) -> Result<bool> {
    let paths = Paths::under(&cli.home);
    match cli.command {
        Command::Init { origin } => {
            Store::init(&paths, &origin, StoreOptions::default())?;
            println!("initialised {} (origin {origin})", cli.home.display());
        }
        Command::Partitions(PartitionsCommand::Create { ids }) => partitions_create(&paths, &ids)?,
        Command::Partitions(PartitionsCommand::List) => {
            let store = open(&paths)?;
            println!("partition\tstatus\tentries");
            for p in store.partitions()? {
                let size = store.size(&p.partition).unwrap_or(0);
                println!("{}\t{:?}\t{size}", p.partition, p.status);
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
            out,
        } => export_audit(&open(&paths)?, &partitions, &out)?,
        Command::Demo => return demo(),
    }
    Ok(true)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
