//! `kukaku partitions create|name|list|show|move`: registering, provisioning, naming and
//! describing partitions.

use anyhow::{Context, Result};
use kukaku::ledger::{PartitionId, format_utc_ms};
use kukaku::store::{PartitionStatus, Paths, Store};

use super::args::PartitionsCommand;
use super::{open, open_read_only, partition};

/// `kukaku partitions …`.
pub(crate) fn run(paths: &Paths, command: PartitionsCommand) -> Result<()> {
    match command {
        PartitionsCommand::Create { ids, name } => partitions_create(paths, &ids, name.as_deref()),
        PartitionsCommand::Name { partition: p, name } => {
            let p = partition(&p)?;
            open(paths)?.set_partition_name(&p, &name)?;
            println!("{p}: {}", name.trim());
            Ok(())
        }
        PartitionsCommand::Move { partition: p, to } => {
            partitions_move(paths, &partition(&p)?, &to)
        }
        PartitionsCommand::DropMoved {
            partition: p,
            confirm,
        } => {
            let p = partition(&p)?;
            let r = open(paths)?.drop_moved(&p, &confirm)?;
            println!(
                "dropped the copy of moved partition {p}: {} keys, {} system records; the files were purged",
                r.keys, r.system_records
            );
            Ok(())
        }
        PartitionsCommand::List => partitions_list(&open_read_only(paths)?),
        PartitionsCommand::Show { partition: p } => {
            partitions_show(&open_read_only(paths)?, &partition(&p)?)
        }
    }
}

/// `kukaku partitions move P --to HOME`.
fn partitions_move(paths: &Paths, p: &PartitionId, to: &std::path::Path) -> Result<()> {
    let here = open(paths)?;
    let there = open(&Paths::under(to)).with_context(|| format!("opening {}", to.display()))?;
    let r = here.move_partition(p, &there)?;
    println!(
        "moved partition {p} to {}: {} entries, {} pairs, {} system records, {} keys, {} credentials; verified there with its keys and the same signed checkpoint",
        to.display(),
        r.entries,
        r.pairs,
        r.system_records,
        r.keys,
        r.credentials
    );
    println!(
        "this cell keeps its log as it was and takes no more writes of it: route {p} to the other cell now"
    );
    Ok(())
}

/// One line per partition: id, status, entries, name.
fn partitions_list(store: &Store) -> Result<()> {
    let names = store.partition_names()?;
    println!("partition\tstatus\tentries\tname");
    for p in store.partitions()? {
        let size = store.size(&p.partition).unwrap_or(0);
        let name = names.get(&p.partition).map_or("", String::as_str);
        println!("{}\t{:?}\t{size}\t{name}", p.partition, p.status);
    }
    Ok(())
}

pub(crate) fn partitions_create(paths: &Paths, ids: &[String], name: Option<&str>) -> Result<()> {
    let ids = ids
        .iter()
        .map(|s| partition(s))
        .collect::<Result<Vec<_>>>()?;
    if name.is_some() && ids.len() != 1 {
        anyhow::bail!(
            "--name names one partition: create them one at a time, or use `partitions name`"
        );
    }
    let added = {
        let store = open(paths)?;
        let added = store.request_partitions(&ids)?;
        if let (Some(name), Some(p)) = (name, ids.first()) {
            store.set_partition_name(p, name)?;
        }
        added
    };
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

pub(crate) fn partitions_show(store: &Store, p: &PartitionId) -> Result<()> {
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
        if let Some(size) = store.latest_cosigned_size(p)? {
            let lag = store.size(p)?.saturating_sub(size);
            println!("cosigned    {size} (witness lag {lag} entries)");
        }
        if let Some(note) = store.checkpoint(p)? {
            println!("checkpoint\n{note}");
        }
    }
    Ok(())
}
