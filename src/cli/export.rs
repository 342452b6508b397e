//! `kukaku rebuild-index`, `kukaku export-history` and `kukaku export --audit`.

use anyhow::{Context, Result};
use kukaku::store::Paths;

use super::args::ExportArgs;
use super::keys::admin_command;
use super::*;

pub(crate) fn rebuild_index(paths: &Paths, only: Option<&str>) -> Result<()> {
    let store = open(paths)?;
    let admin = admin_scope(paths)?;
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

pub(crate) fn export_history(
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
    let admin = admin_scope(paths)?;
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

/// `kukaku export --audit`: an audit bundle, written by the running server if there is one
/// (through its admin socket), else by this process.
pub(crate) fn export_audit(paths: &Paths, args: ExportArgs) -> Result<()> {
    // The server (if one runs) writes the file: give it an absolute path.
    let out = std::path::absolute(&args.out)?;
    admin_command(
        paths,
        kukaku::admin::AdminRequest::ExportAudit {
            partitions: args.partitions,
            from_size: args.from_size,
            prove_from: args.prove_from,
            out,
        },
    )
}
