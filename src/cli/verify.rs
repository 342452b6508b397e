//! `kukaku verify`, `kukaku checkpoint` and `kukaku prove`: recomputing and proving what the
//! log holds.

use anyhow::{Context, Result};
use kukaku::ledger::{PartitionId, Seq, TreeSize};
use kukaku::store::{PartitionStatus, Paths, Store, VerifyOptions};

use super::args::ProveCommand;
use super::{Outcome, open_read_only, partition};

/// `kukaku verify`: every partition (or one) from genesis; a failed check prints `FAIL` with
/// partition, seq and step, and the command ends `Failed`.
pub(crate) fn verify(paths: &Paths, only: Option<&str>, with_keys: bool) -> Result<Outcome> {
    let store = open_read_only(paths)?;
    let only = only.map(partition).transpose()?;
    verify_all(&store, only, with_keys)
}

/// Verifies `only` or every partition of `store`, one line each.
pub(crate) fn verify_all(
    store: &Store,
    only: Option<PartitionId>,
    with_keys: bool,
) -> Result<Outcome> {
    let ids: Vec<PartitionId> = match only {
        Some(p) => vec![p],
        None => store
            .partitions()?
            .into_iter()
            .filter_map(|p| match p.status {
                PartitionStatus::Moved => {
                    println!("moved partition {} (verify it on its cell)", p.partition);
                    None
                }
                _ => Some(p.partition),
            })
            .collect(),
    };
    let mut outcome = Outcome::Passed;
    for p in ids {
        match store.verify_partition(&p, VerifyOptions { with_keys }) {
            Ok(r) if r.bodies_shredded > 0 => println!(
                "ok  partition {} entries {} checkpoints {} root {} opened {} shredded {}",
                r.partition, r.entries, r.checkpoints, r.root, r.bodies_opened, r.bodies_shredded
            ),
            Ok(r) => println!(
                "ok  partition {} entries {} checkpoints {} root {} opened {}",
                r.partition, r.entries, r.checkpoints, r.root, r.bodies_opened
            ),
            Err(e) => {
                println!("FAIL {}", kukaku::error::report(&e));
                outcome = Outcome::Failed;
            }
        }
    }
    Ok(outcome)
}

/// `kukaku checkpoint`: the latest signed checkpoint and the key it verifies with.
pub(crate) fn checkpoint(paths: &Paths, p: &str) -> Result<()> {
    let store = open_read_only(paths)?;
    let p = partition(p)?;
    print!("{}", store.checkpoint(&p)?.context("no checkpoint")?);
    println!("{}", store.verifier_key(&p).context("no key")?.to_text());
    Ok(())
}

/// `kukaku prove inclusion|consistency`: the proof as JSON (docs/format.md).
pub(crate) fn prove(paths: &Paths, command: ProveCommand) -> Result<()> {
    let store = open_read_only(paths)?;
    let json = match command {
        ProveCommand::Inclusion {
            partition: p,
            seq,
            size,
        } => {
            let proof = store.prove_inclusion(&partition(&p)?, Seq(seq), size.map(TreeSize))?;
            serde_json::to_string_pretty(&proof)?
        }
        ProveCommand::Consistency {
            partition: p,
            from,
            to,
        } => {
            let proof =
                store.prove_consistency(&partition(&p)?, TreeSize(from), to.map(TreeSize))?;
            serde_json::to_string_pretty(&proof)?
        }
    };
    println!("{json}");
    Ok(())
}
