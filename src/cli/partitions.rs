//! `kukaku partitions create|show`: registering, provisioning and describing partitions.

use anyhow::{Context, Result};
use kukaku::ledger::{PartitionId, format_utc_ms};
use kukaku::store::{PartitionStatus, Paths, Store};

use crate::*;

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
