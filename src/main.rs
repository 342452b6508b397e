//! The `kukaku` command line. The only user of `anyhow`: arguments in `cli/args.rs`, one file
//! per subcommand in `cli/`, the dispatch here.

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

mod cli;

use cli::Outcome;
use cli::args::*;

/// jemalloc for the whole process, RocksDB's C++ included (the dependency is unprefixed):
/// glibc malloc cost a fifth of the CPU of an HTTP import (docs/benchmarks.md, “The allocator”).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Runs one command: each arm hands its arguments to the subcommand's file.
fn run(cli: Cli) -> Result<Outcome> {
    use cli::{continuity, credentials, export, import, init, keys, partitions, verify};
    let home = cli.home;
    let paths = kukaku::store::Paths::under(&home);
    match cli.command {
        Command::Init {
            origin,
            sibling_of,
            dev_cert,
            kek_pkcs11,
            pg_dsn_file,
            pg_schema,
        } => init::init(
            &home,
            &paths,
            origin.as_deref(),
            init::InitChoices {
                dev_cert,
                kek_pkcs11: kek_pkcs11.as_deref(),
                postgres: pg_dsn_file.as_deref().map(|f| (f, pg_schema.as_str())),
                sibling_of: sibling_of.as_deref(),
            },
        )?,
        Command::MoveToCell {
            pg_dsn_file,
            pg_schema,
        } => return cli::cell::move_to_cell(&paths, &pg_dsn_file, &pg_schema),
        Command::JoinCell {
            kek,
            pg_dsn_file,
            pg_schema,
        } => cli::cell::join_cell(&home, &paths, &kek, &pg_dsn_file, &pg_schema)?,
        Command::Serve(args) => args.run(&home, &paths)?,
        Command::Config(ConfigCommand::Check(args)) => args.check(&home, &paths)?,
        Command::PublicKeys { witness, log } => keys::admin_command(
            &paths,
            kukaku::admin::AdminRequest::PublicKeys { witness, log },
        )?,
        Command::Credentials(c) => credentials::credentials(&paths, c)?,
        Command::RebuildIndex { partition: only } => {
            export::rebuild_index(&paths, only.as_deref())?
        }
        Command::ExportHistory {
            partitions,
            since,
            manifest,
        } => export::export_history(&paths, &partitions, since, &manifest)?,
        Command::Import(args) => return import::import(&paths, args),
        Command::Partitions(command) => partitions::run(&paths, command)?,
        Command::Checkpoint { partition: p } => verify::checkpoint(&paths, &p)?,
        Command::Prove(command) => verify::prove(&paths, command)?,
        Command::Verify {
            partition: p,
            with_keys,
        } => return verify::verify(&paths, p.as_deref(), with_keys),
        Command::Export(args) => export::export_audit(&paths, args)?,
        Command::Keys(command) => keys::keys(&paths, command)?,
        Command::Continuity(ContinuityCommand::Extract {
            prefecture,
            rules,
            as_of,
        }) => {
            continuity::continuity_extract(&paths, &prefecture, rules.as_deref(), as_of.as_deref())?
        }
        Command::Backup(args) => cli::backup::backup(&paths, args)?,
        Command::Restore(args) => return cli::backup::restore(&home, &paths, args),
        Command::Demo { listen, no_serve } => return cli::demo::demo(listen, no_serve),
    }
    Ok(Outcome::Passed)
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

/// Log lines on stderr, text or JSON, filtered by RUST_LOG.
fn init_logs(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
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
    let argv = match cli::config::expand(std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(argv);
    init_logs(cli.log_format);
    match run(cli) {
        Ok(Outcome::Passed) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            ExitCode::from(2)
        }
    }
}
