//! `kukaku keys …` and `kukaku public-keys`: through a running server's admin socket, or on
//! the store directly when none runs (`admin_command`, which `credentials` uses too).

use anyhow::Result;
use kukaku::store::Paths;

use super::args::*;
use super::*;

/// `kukaku keys …`: through the running server's admin socket, or on the store directly.
pub(crate) fn keys(paths: &Paths, command: KeysCommand) -> Result<()> {
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
        KeysCommand::RotateKek {
            reason,
            to_pkcs11,
            to_file,
        } => {
            use kukaku::crypto::instance_kek::KekTarget;
            let to = match (to_pkcs11, to_file) {
                (Some(config), _) => Some(KekTarget::Pkcs11(
                    kukaku::crypto::pkcs11::Pkcs11Config::load(&config)?,
                )),
                (None, true) => Some(KekTarget::File),
                (None, false) => None,
            };
            AdminRequest::RotateKek { reason, to }
        }
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
pub(crate) fn admin_command(paths: &Paths, request: kukaku::admin::AdminRequest) -> Result<()> {
    use kukaku::admin::{self, Reply};
    let bar = indicatif::ProgressBar::new(0).with_style(indicatif::ProgressStyle::with_template(
        "{msg} {wide_bar} {pos}/{len} (ETA {eta})",
    )?);
    // Not on a terminal (a log, a script waiting for the job to start): the first progress
    // as a plain line, then one line every 10 s.
    let plain = !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut last_line: Option<std::time::Instant> = None;
    let mut show = |r: Reply| match r {
        Reply::Progress { label, pos, len } => {
            bar.set_length(len);
            bar.set_position(pos);
            if plain && last_line.is_none_or(|t| t.elapsed().as_secs() >= 10) {
                eprintln!("{label}: {pos}/{len}");
                last_line = Some(std::time::Instant::now());
            }
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
        // What only reads opens beside a cell's serving writer, never in its place.
        let reads_only = matches!(
            request,
            admin::AdminRequest::Status { .. }
                | admin::AdminRequest::PublicKeys { .. }
                | admin::AdminRequest::ExportAudit { .. }
        );
        let store = if reads_only {
            super::open_read_only(paths)?
        } else {
            open(paths)?
        };
        admin::execute(&store, &request, "admin-cli", &mut |r| {
            show(r);
            true
        })
    };
    bar.finish_and_clear();
    Ok(result?)
}
