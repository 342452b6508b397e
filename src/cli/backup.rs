//! `kukaku backup` and `kukaku restore` (docs/operations.md, "Backup and restore").

use std::path::Path;

use anyhow::{Context, Result};
use kukaku::ledger::format_utc_ms;
use kukaku::store::Paths;
use kukaku::store::backup;

use super::Outcome;
use super::args::{BackupArgs, RestoreArgs};
use super::keys::admin_command;

/// `kukaku backup`: through the running server's admin socket, or on the store directly.
pub(crate) fn backup(paths: &Paths, args: BackupArgs) -> Result<()> {
    // The server (if one runs) writes the backup: give it an absolute path.
    let to = std::path::absolute(&args.to)?;
    admin_command(
        paths,
        kukaku::admin::AdminRequest::Backup {
            to,
            keep: args.keep,
        },
    )
}

/// `kukaku restore`: into the new home `home`, then verified; or `--list`.
pub(crate) fn restore(home: &Path, paths: &Paths, args: RestoreArgs) -> Result<Outcome> {
    if args.list {
        for m in backup::list_backups(&args.from)? {
            let entries: u64 = m.partitions.iter().map(|p| p.size).sum();
            println!(
                "backup {}\t{}\t{} partitions\t{entries} entries\tKEK {}",
                m.backup_id,
                format_utc_ms(m.created_ms),
                m.partitions.len(),
                m.kek_fingerprint
            );
        }
        return Ok(Outcome::Passed);
    }
    let kek = match (args.kek, args.kek_pkcs11) {
        (Some(file), _) => backup::RestoredKek::File(file),
        (None, Some(config)) => {
            backup::RestoredKek::Pkcs11(kukaku::crypto::pkcs11::Pkcs11Config::load(&config)?)
        }
        (None, None) => anyhow::bail!("--kek or --kek-pkcs11 is required to restore"),
    };
    let checks = backup::RestoreChecks {
        verified: args
            .against
            .as_deref()
            .map(backup::Verified::load)
            .transpose()?,
        accept_older: args.accept_older,
        actor: "admin-cli".into(),
        reason: args.reason,
        live_proofs: args
            .live_proof
            .iter()
            .map(|path| {
                let text = std::fs::read(path).with_context(|| path.display().to_string())?;
                serde_json::from_slice(&text)
                    .with_context(|| format!("{}: not a consistency proof", path.display()))
            })
            .collect::<Result<_>>()?,
    };
    let report = backup::restore(&args.from, args.backup_id, (home, paths), &kek, &checks)?;
    let m = &report.manifest;
    for p in &m.partitions {
        println!(
            "ok  partition {} size {} matches the backup's checkpoint",
            p.partition, p.size
        );
    }
    for x in &report.prefixes {
        println!(
            "ok  partition {} size {} is a prefix of the live log at size {} (proof verified)",
            x.partition, x.backup, x.live
        );
    }
    println!(
        "restored backup {} of {} (taken {}) into {}; every partition verified with its keys",
        m.backup_id,
        m.origin,
        format_utc_ms(m.created_ms),
        home.display()
    );
    Ok(Outcome::Passed)
}
