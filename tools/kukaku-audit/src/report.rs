//! The human report (the JSON one is the serde form of the same structs).

use std::fmt::Write as _;

use crate::audit::{Report, is_purge};
use crate::proof::ProofReport;

/// The report of a verified bundle, as text.
pub fn bundle_text(r: &Report, source: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "kukaku-audit: {source}");
    for p in &r.partitions {
        let _ = writeln!(out, "\npartition {} ({})", p.partition, p.log);
        let kinds: Vec<String> = p.kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(out, "  entries      {} ({})", p.entries, kinds.join(", "));
        if let Some(cp) = &p.last_checkpoint {
            let _ = writeln!(
                out,
                "  checkpoints  {} verified; last at size {}, root {}",
                p.checkpoints, cp.size, cp.root
            );
        }
        for s in &p.signed_by {
            let _ = writeln!(out, "  signed by    {s}");
        }
        for w in &p.witnesses {
            let _ = writeln!(
                out,
                "  witness      {} cosigned size {} at {} ({} entries behind)",
                w.witness,
                w.cosigned_size,
                kukaku::ledger::format_utc_ms(w.time.saturating_mul(1000)),
                p.entries.saturating_sub(w.cosigned_size)
            );
        }
        if p.witnesses.is_empty() {
            let _ = writeln!(out, "  witness      none");
        }
        match (p.append_only_since, p.append_only_by) {
            (Some(s), Some("consistency_proof")) => {
                let _ = writeln!(
                    out,
                    "  append-only  since size {s} (previous run), proven by the bundle's \
                     consistency proof from size {s} to its start at size {}",
                    p.first_seq
                );
            }
            (Some(s), _) => {
                let _ = writeln!(
                    out,
                    "  append-only  since size {s} (previous run), proven by the bundle's entries"
                );
            }
            (None, _) => {
                let _ = writeln!(out, "  append-only  first run for this log");
            }
        }
        let purges = p.key_events.iter().filter(|e| is_purge(e)).count();
        let _ = writeln!(
            out,
            "  key events   {} ({} purge{})",
            p.key_events.len(),
            purges,
            if purges == 1 { "" } else { "s" }
        );
        for e in &p.key_events {
            let _ = writeln!(out, "    {}", e.describe());
        }
    }
    if !r.warnings.is_empty() {
        let _ = writeln!(out, "\nwarnings:");
        for w in &r.warnings {
            let _ = writeln!(out, "  {w}");
        }
    }
    let entries: u64 = r.partitions.iter().map(|p| p.entries).sum();
    let _ = writeln!(
        out,
        "\nVERIFIED: {} partition(s), {entries} entries; bundle trailer matches",
        r.partitions.len()
    );
    out
}

/// The report of a verified proof, as text.
pub fn proof_text(r: &ProofReport) -> String {
    match r {
        ProofReport::Inclusion {
            log,
            leaf_index,
            tree_size,
            leaf_hash,
            root,
            matches_state,
        } => format!(
            "VERIFIED: leaf {leaf_index} ({leaf_hash}) is in {log} at size {tree_size}, root {root}{}\n",
            if *matches_state {
                "; the root matches the state file"
            } else {
                ""
            }
        ),
        ProofReport::Consistency {
            log,
            from,
            to,
            root,
            old_root_from,
        } => format!(
            "VERIFIED: {log} at size {to} (root {root}) extends size {from} (root from the {old_root_from}{})\n",
            if *old_root_from == "proof" {
                ", trusted on first use"
            } else {
                ""
            }
        ),
    }
}
