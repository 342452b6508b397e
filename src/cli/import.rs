//! `kukaku import`: a flow-5 transmission or a 高額該当情報ファイル from files.

use anyhow::{Context, Result};
use kukaku::store::Paths;
use std::path::PathBuf;

use super::args::ImportArgs;
use super::*;

/// What `kukaku import` reads.
pub(crate) enum ImportFiles {
    /// 世帯ファイル and 個人ファイル (flow 5).
    Transmission(PathBuf, PathBuf),
    /// 高額該当情報ファイル (flow 4).
    Kogaku(PathBuf),
}

/// `kukaku import`: a transmission (both files) or a 高額該当情報ファイル.
pub(crate) fn import(paths: &Paths, args: ImportArgs) -> Result<Outcome> {
    let files = match (args.setai, args.kojin, args.kogaku) {
        (_, _, Some(k)) => ImportFiles::Kogaku(k),
        (Some(s), Some(k), None) => ImportFiles::Transmission(s, k),
        _ => anyhow::bail!("give --setai and --kojin, or --kogaku"),
    };
    import_files(
        paths,
        &args.partition,
        &args.transmission_id,
        &args.encoding,
        &files,
    )
}

pub(crate) fn import_files(
    paths: &Paths,
    p: &str,
    transmission_id: &str,
    encoding: &str,
    files: &ImportFiles,
) -> Result<Outcome> {
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
            let scope = super::admin_scope(paths)?.partition(&p);
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
            Ok(Outcome::Passed)
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
            Ok(Outcome::Failed)
        }
        Err(e) => Err(e.into()),
    }
}
