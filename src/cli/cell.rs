//! `kukaku move-to-cell`: an embedded instance moved onto a replicated cell, byte for byte
//! (`Store::move_to_cell`), then verified there with its keys; `kukaku join-cell`: a home
//! for a further machine of a cell (`Store::join_cell`).

use std::path::Path;

use anyhow::Result;
use kukaku::store::Paths;

use super::Outcome;

#[cfg(feature = "postgres")]
pub(crate) fn move_to_cell(paths: &Paths, dsn_file: &Path, schema: &str) -> Result<Outcome> {
    use kukaku::store::{EngineRecord, Store, StoreOptions};
    let record = EngineRecord::postgres(schema, dsn_file);
    let bar = indicatif::ProgressBar::new_spinner().with_style(
        indicatif::ProgressStyle::with_template("{spinner} copying: {pos} pairs {per_sec}")?,
    );
    let (report, aside) = Store::move_to_cell(paths, &record, StoreOptions::default(), &mut |n| {
        bar.set_position(n)
    })?;
    bar.finish_and_clear();
    for (p, pairs) in &report.partitions {
        println!("copied partition {p}: {pairs} pairs");
    }
    println!(
        "copied the system space ({} pairs) and the key store ({} records); every space read back from the cell is the same",
        report.system, report.keys
    );
    println!("the data is in PostgreSQL (schema {schema}); engine.json names it");
    for dir in &aside {
        println!(
            "the embedded copy is in {} (remove it once the cell is verified: its keys open under this KEK)",
            dir.display()
        );
    }
    println!("verifying on the cell, with keys:");
    let store = super::open(paths)?;
    super::verify::verify_all(&store, None, true)
}

#[cfg(feature = "postgres")]
pub(crate) fn join_cell(
    home: &Path,
    paths: &Paths,
    kek: &Path,
    dsn_file: &Path,
    schema: &str,
) -> Result<()> {
    use kukaku::store::{EngineRecord, Store, StoreOptions};
    let record = EngineRecord::postgres(schema, dsn_file);
    let store = Store::join_cell(paths, kek, &record, StoreOptions::default())?;
    println!(
        "{} joined the cell of {} (schema {schema}): {} partitions; `kukaku serve` here stands by while another serves",
        home.display(),
        store.origin(),
        store.partitions()?.len()
    );
    Ok(())
}

#[cfg(not(feature = "postgres"))]
pub(crate) fn join_cell(_: &Path, _: &Paths, _: &Path, _: &Path, _: &str) -> Result<()> {
    anyhow::bail!(
        "join-cell: this kukaku was built without PostgreSQL (cargo build --features postgres)"
    )
}

#[cfg(not(feature = "postgres"))]
pub(crate) fn move_to_cell(_: &Paths, _: &Path, _: &str) -> Result<Outcome> {
    anyhow::bail!(
        "move-to-cell: this kukaku was built without PostgreSQL (cargo build --features postgres)"
    )
}
