//! The auditor HTTP routes as input: saved answers of
//! `GET /v1/audit/partitions/{p}/envelopes?from=&to=` and `…/checkpoints?from_size=` (JSON, in
//! any order, any number of pages per partition). They are put back in log order and checked
//! exactly as a bundle section from genesis, except that there is no trailer: what was
//! fetched must cover every entry from seq 0 to the last checkpoint.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

use kukaku::ledger::bundle::Record;
use kukaku::ledger::{Checkpoint, PartitionId, SignedNote, VerifierKey};

use crate::audit::{AuditError, Options, Report, verify_records};
use crate::state::State;

#[derive(Deserialize)]
struct EnvelopesPage {
    partition: String,
    from: u64,
    to: u64,
    envelopes: Vec<String>,
}

#[derive(Deserialize)]
struct CheckpointsPage {
    partition: String,
    verifier_key: String,
    checkpoints: Vec<String>,
}

#[derive(Default)]
struct Fetched {
    vkey: Option<String>,
    /// from → envelopes of that page.
    pages: BTreeMap<u64, (u64, Vec<Vec<u8>>)>,
    /// size → note.
    checkpoints: BTreeMap<u64, String>,
}

fn usage(what: impl Into<String>) -> AuditError {
    AuditError::Usage(what.into())
}

/// Verifies saved route answers (`(name, text)` pairs, the name for messages).
pub fn verify_pages(
    files: &[(String, String)],
    opts: &Options<'_>,
) -> Result<(Report, State), AuditError> {
    let mut by_partition: BTreeMap<String, Fetched> = BTreeMap::new();
    for (name, text) in files {
        read_page(name, text, &mut by_partition)?;
    }
    let mut records = Vec::new();
    for (partition, f) in by_partition {
        partition_records(&partition, f, &mut records)?;
    }
    verify_records(records, opts)
}

/// One saved answer: an envelopes page or a checkpoints page, filed under its partition.
fn read_page(
    name: &str,
    text: &str,
    by_partition: &mut BTreeMap<String, Fetched>,
) -> Result<(), AuditError> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| usage(format!("{name}: not JSON: {}", kukaku::error::report(&e))))?;
    if v.get("envelopes").is_some() {
        let page: EnvelopesPage = serde_json::from_value(v).map_err(|e| {
            usage(format!(
                "{name}: not an envelopes page: {}",
                kukaku::error::report(&e)
            ))
        })?;
        let envelopes = page
            .envelopes
            .iter()
            .map(|e| B64.decode(e))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| AuditError::Malformed("an envelope is not base64"))?;
        if envelopes.len() as u64 != page.to.saturating_sub(page.from) {
            return Err(AuditError::Malformed(
                "an envelopes page holds fewer envelopes than its range",
            ));
        }
        by_partition
            .entry(page.partition)
            .or_default()
            .pages
            .insert(page.from, (page.to, envelopes));
    } else if v.get("checkpoints").is_some() {
        let page: CheckpointsPage = serde_json::from_value(v).map_err(|e| {
            usage(format!(
                "{name}: not a checkpoints page: {}",
                kukaku::error::report(&e)
            ))
        })?;
        let f = by_partition.entry(page.partition).or_default();
        f.vkey = Some(page.verifier_key);
        for note in page.checkpoints {
            let size = SignedNote::parse(&note)
                .ok()
                .and_then(|n| Checkpoint::parse_body(&n.text).ok())
                .map(|c| c.size)
                .ok_or(AuditError::Malformed("a checkpoint does not parse"))?;
            f.checkpoints.insert(size, note);
        }
    } else if let Some(err) = v.get("error") {
        return Err(usage(format!(
            "{name}: the server's error answer, not a page: {err}"
        )));
    } else {
        return Err(usage(format!(
            "{name}: neither an envelopes nor a checkpoints page"
        )));
    }
    Ok(())
}

/// A partition's fetched pages as bundle records in log order: its key, every entry once
/// (no gap), each checkpoint after the entry that completes its size.
fn partition_records(
    partition: &str,
    f: Fetched,
    records: &mut Vec<Record>,
) -> Result<(), AuditError> {
    let p = PartitionId::parse(partition).map_err(|_| AuditError::Malformed("bad partition id"))?;
    let vkey = f
        .vkey
        .ok_or_else(|| usage(format!("partition {p}: no checkpoints page was given")))?;
    let vkey = VerifierKey::parse(&vkey).map_err(|_| AuditError::Malformed("bad verifier key"))?;
    records.push(Record::Partition {
        partition: p.clone(),
        vkey,
    });
    let mut next = 0u64;
    let mut checkpoints = f.checkpoints.into_iter().peekable();
    for (from, (_, envelopes)) in f.pages {
        if from > next {
            return Err(AuditError::Failed {
                partition: p.to_string(),
                seq: next,
                step: format!("entries {next}..{from} were not fetched"),
            });
        }
        // Overlapping pages: skip what an earlier page gave.
        for (i, e) in envelopes.into_iter().enumerate() {
            let seq = from + i as u64;
            if seq < next {
                continue;
            }
            records.push(Record::Envelope(e));
            next = seq + 1;
            while let Some((size, note)) = checkpoints.next_if(|(s, _)| *s <= next) {
                if size == next {
                    records.push(Record::Checkpoint(note));
                }
            }
        }
    }
    Ok(())
}
