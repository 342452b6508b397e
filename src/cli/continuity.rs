//! `kukaku continuity extract`: the continuity job of one prefecture from the command line.

use anyhow::{Context, Result};
use kukaku::store::Paths;

use super::*;

pub(crate) fn load_rules(
    path: Option<&std::path::Path>,
) -> Result<kukaku::domain::continuity::Rules> {
    Ok(match path {
        Some(f) => kukaku::domain::continuity::Rules::parse(
            &std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
        )
        .with_context(|| format!("{}", f.display()))?,
        None => kukaku::domain::continuity::Rules::default(),
    })
}

pub(crate) fn continuity_extract(
    paths: &Paths,
    prefecture: &str,
    rules: Option<&std::path::Path>,
    as_of: Option<&str>,
) -> Result<()> {
    let rules = load_rules(rules)?;
    let as_of = match as_of {
        None => kukaku::store::today_jst(),
        Some(text) => {
            kukaku::domain::text::parse_date(text).context("--as-of must be a date YYYY-MM-DD")?
        }
    };
    let store = open(paths)?;
    let scope = admin_scope(paths)?
        .prefecture(prefecture)
        .context("--prefecture must be a 2-digit code 01–47")?;
    let who = kukaku::flows::import::Importer {
        actor: "admin-cli".into(),
        role: "admin".into(),
        route: "kukaku continuity extract".into(),
        request_id: "-".into(),
    };
    let r = kukaku::flows::continuity::extract(&store, &scope, &rules, &who, as_of)?;
    println!(
        "prefecture {} as of {}: {} partitions, {} households read, {} new candidate(s), {} already extracted, {} outside the window",
        r.prefecture,
        r.as_of,
        r.partitions,
        r.households_read,
        r.candidates.len(),
        r.already_extracted,
        r.outside_window.len()
    );
    for c in &r.candidates {
        println!(
            "  {} seq {}: from {}, case {}, period {}, suggestion {}{}",
            c.partition,
            c.seq.map_or("-".to_owned(), |s| s.to_string()),
            c.old_hokensha_no,
            c.case,
            c.period,
            c.suggestion,
            if c.anomalies.is_empty() {
                String::new()
            } else {
                format!(", 要確認: {}", c.anomalies.join(" "))
            }
        );
    }
    for o in &r.outside_window {
        println!(
            "  {}: a move from {} starting {} is before the window (not proposed)",
            o.partition, o.old_hokensha_no, o.ido_date
        );
    }
    Ok(())
}
