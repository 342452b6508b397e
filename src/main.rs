//! The `kukaku` command line. The only user of `anyhow`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use kukaku::crypto::{AdminScope, Kek};
use kukaku::domain::InsurerNumber;
use kukaku::ledger::{Kind, PartitionId};
use kukaku::store::{NewEntry, Paths, Store, StoreOptions, VerifyOptions};

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
        /// Instance origin, the prefix of every checkpoint origin.
        #[arg(long)]
        origin: String,
    },
    /// Register partitions (保険者番号, check digit validated) and run the provisioning job.
    PartitionsCreate {
        /// 保険者番号: 6 digits (市町村国保) or 8.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// List registered partitions with status and size.
    PartitionsList,
    /// Print a partition's latest signed checkpoint and its verifier key.
    Checkpoint { partition: String },
    /// Recompute chains, trees and checkpoints from storage. Exit 1 on a failure.
    Verify {
        #[arg(long)]
        partition: Option<String>,
        /// Also decrypt sealed bodies and recompute commitments.
        #[arg(long)]
        with_keys: bool,
    },
    /// Run a self-contained demo in a temporary directory.
    Demo,
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

fn run(cli: Cli) -> Result<bool> {
    let paths = Paths::under(&cli.home);
    match cli.command {
        Command::Init { origin } => {
            Store::init(&paths, &origin, StoreOptions::default())?;
            println!("initialised {} (origin {origin})", cli.home.display());
        }
        Command::PartitionsCreate { ids } => {
            let ids = ids
                .iter()
                .map(|s| partition(s))
                .collect::<Result<Vec<_>>>()?;
            let store = Store::open(&paths, StoreOptions::default())?;
            let added = store.request_partitions(&ids)?;
            let bar = indicatif::ProgressBar::new(0);
            let done = store.provision(&mut |d, t| {
                bar.set_length(t);
                bar.set_position(d);
            })?;
            bar.finish_and_clear();
            println!("registered {added}, provisioned {done}");
        }
        Command::PartitionsList => {
            let store = Store::open(&paths, StoreOptions::default())?;
            for p in store.partitions()? {
                let size = store.size(&p.partition).unwrap_or(0);
                println!("{}\t{:?}\t{size}", p.partition, p.status);
            }
        }
        Command::Checkpoint { partition: p } => {
            let store = Store::open(&paths, StoreOptions::default())?;
            let p = partition(&p)?;
            print!("{}", store.checkpoint(&p)?.context("no checkpoint")?);
            println!("{}", store.verifier_key(&p).context("no key")?.to_text());
        }
        Command::Verify {
            partition: p,
            with_keys,
        } => {
            let store = Store::open(&paths, StoreOptions::default())?;
            let only = p.map(|s| partition(&s)).transpose()?;
            return verify_all(&store, only, with_keys);
        }
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
