//! `kukaku-audit`: the auditor's command line. Exit codes: 0 verified, 1 verification
//! failed (partition, seq and the failed step are printed), 2 usage or I/O error.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use kukaku_audit::{AuditError, Options, State, Trust, report};

/// jemalloc: with glibc malloc, the verifying thread freeing what the reading thread
/// allocated contended on the arena lock (docs/benchmarks.md, “The allocator”).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "kukaku-audit",
    version,
    about = "Verify kukaku audit bundles and proofs offline, against pinned keys",
    long_about = "Verifies what `kukaku export --audit` and the auditor routes produce: every \
                  entry's hash chain and Merkle tree, every signed checkpoint under a pinned \
                  key (with validity windows), witnesses' cosignatures, and, with --state, \
                  that each log only grew since the previous run. Needs no key to any data and \
                  never sees plaintext. Exit 0 verified, 1 verification failed, 2 usage or I/O \
                  error. Guide: docs/audit.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes.
#[derive(clap::Args)]
struct Common {
    /// Trust file: `log <vkey> [from=…] [until=…]` and `witness <vkey>` lines.
    #[arg(long)]
    trust: PathBuf,
    /// State file kept between runs: each log must show the same root at the size verified
    /// last time, and may only grow. Created if missing; updated only when everything
    /// verified.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Verify an audit bundle (`kukaku export --audit --out FILE`).
    Verify {
        /// The bundle file.
        bundle: PathBuf,
        #[command(flatten)]
        common: Common,
        /// Require every partition to have a checkpoint cosigned by this many trusted
        /// witnesses.
        #[arg(long, default_value_t = 0)]
        quorum: usize,
    },
    /// Verify saved answers of the auditor routes (`…/envelopes?from=&to=` pages from seq 0
    /// and `…/checkpoints`), as a bundle section from genesis without a trailer.
    Pages {
        /// The saved JSON answers, in any order.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        common: Common,
        /// As for `verify`.
        #[arg(long, default_value_t = 0)]
        quorum: usize,
    },
    /// Verify an inclusion or consistency proof (JSON from `kukaku prove` or the auditor
    /// routes). A consistency proof from the state file's size advances the state.
    Proof {
        /// The proof file (`-` for standard input).
        proof: PathBuf,
        #[command(flatten)]
        common: Common,
    },
}

fn load_state(path: Option<&PathBuf>) -> Result<State, AuditError> {
    match path {
        Some(p) => State::load(p).map_err(|e| AuditError::Usage(kukaku::error::report(&e))),
        None => Ok(State::default()),
    }
}

fn save_state(path: Option<&PathBuf>, state: &State) -> Result<(), AuditError> {
    match path {
        Some(p) => state
            .save(p)
            .map_err(|e| AuditError::Usage(kukaku::error::report(&e))),
        None => Ok(()),
    }
}

fn run(cli: Cli) -> Result<(String, bool), AuditError> {
    match cli.command {
        Command::Verify {
            bundle,
            common,
            quorum,
        } => verify_command(&bundle, common, quorum),
        Command::Pages {
            files,
            common,
            quorum,
        } => pages_command(&files, common, quorum),
        Command::Proof { proof, common } => proof_command(&proof, common),
    }
}

fn load_trust(path: &std::path::Path) -> Result<Trust, AuditError> {
    Trust::load(path).map_err(|e| AuditError::Usage(kukaku::error::report(&e)))
}

/// `{"verified": true, "report": …}`, pretty-printed.
fn verified_json(report: &impl serde::Serialize) -> Result<String, AuditError> {
    serde_json::to_string_pretty(&serde_json::json!({"verified": true, "report": report}))
        .map_err(|e| AuditError::Usage(kukaku::error::report(&e)))
}

/// `kukaku-audit verify`: a bundle file.
fn verify_command(
    bundle: &std::path::Path,
    Common { trust, state, json }: Common,
    quorum: usize,
) -> Result<(String, bool), AuditError> {
    let trust = load_trust(&trust)?;
    let previous = load_state(state.as_ref())?;
    let file = std::fs::File::open(bundle)
        .map_err(|e| AuditError::Usage(format!("cannot open {}: {e}", bundle.display())))?;
    let opts = Options {
        trust: &trust,
        previous: &previous,
        quorum,
    };
    let (report, next) =
        kukaku_audit::verify_bundle(std::io::BufReader::with_capacity(1 << 20, file), &opts)?;
    save_state(state.as_ref(), &next)?;
    let text = if json {
        verified_json(&report)?
    } else {
        report::bundle_text(&report, &bundle.display().to_string())
    };
    Ok((text, json))
}

/// `kukaku-audit pages`: saved route answers.
fn pages_command(
    files: &[PathBuf],
    Common { trust, state, json }: Common,
    quorum: usize,
) -> Result<(String, bool), AuditError> {
    let trust = load_trust(&trust)?;
    let previous = load_state(state.as_ref())?;
    let texts = files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .map(|t| (f.display().to_string(), t))
                .map_err(|e| AuditError::Usage(format!("cannot read {}: {e}", f.display())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let opts = Options {
        trust: &trust,
        previous: &previous,
        quorum,
    };
    let (report, next) = kukaku_audit::pages::verify_pages(&texts, &opts)?;
    save_state(state.as_ref(), &next)?;
    let text = if json {
        verified_json(&report)?
    } else {
        report::bundle_text(&report, &format!("{} saved route answers", texts.len()))
            .replace("bundle trailer matches", "every entry from genesis fetched")
    };
    Ok((text, json))
}

/// `kukaku-audit proof`: an inclusion or consistency proof (`-`: standard input).
fn proof_command(
    proof: &std::path::Path,
    Common { trust, state, json }: Common,
) -> Result<(String, bool), AuditError> {
    let trust = load_trust(&trust)?;
    let mut current = load_state(state.as_ref())?;
    let text = if proof.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(proof)
            .map_err(|e| AuditError::Usage(format!("cannot read {}: {e}", proof.display())))?
    };
    let (r, advance) = kukaku_audit::verify_proof(&text, &trust, &current)?;
    if let Some((log, entry)) = advance {
        current.logs.insert(log, entry);
        save_state(state.as_ref(), &current)?;
    }
    let text = if json {
        verified_json(&r)?
    } else {
        report::proof_text(&r)
    };
    Ok((text, json))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = match &cli.command {
        Command::Verify { common, .. }
        | Command::Pages { common, .. }
        | Command::Proof { common, .. } => common.json,
    };
    match run(cli) {
        Ok((text, _)) => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            let code = e.exit_code();
            if json {
                let failure = match &e {
                    AuditError::Failed {
                        partition,
                        seq,
                        step,
                    } => serde_json::json!({"partition": partition, "seq": seq, "step": step}),
                    other => serde_json::json!({"error": kukaku::error::report(other)}),
                };
                println!(
                    "{}",
                    serde_json::json!({"verified": false, "exit": code, "failure": failure})
                );
            }
            if code == 1 {
                eprintln!("FAILED: {}", kukaku::error::report(&e));
            } else {
                eprintln!("error: {}", kukaku::error::report(&e));
            }
            ExitCode::from(code)
        }
    }
}
