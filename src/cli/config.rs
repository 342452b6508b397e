//! `serve --config kukaku.toml` (docs/operations.md, "Configuration file"): every `serve` flag
//! as a TOML key (the flag's long name, `-` or `_` alike), turned into flags placed before
//! the command line's own, so that a flag given on the command line overrides the file
//! (`args_override_self`). An unknown key is refused by name.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::CommandFactory;

/// `argv` with the flags of the `--config` file of the `serve` or `config check` command
/// inserted right after the subcommand; `argv` unchanged without `--config`.
pub(crate) fn expand(argv: Vec<OsString>) -> Result<Vec<OsString>> {
    let Some(path) = config_path(&argv) else {
        return Ok(argv);
    };
    let Some(at) = subcommand_end(&argv) else {
        return Ok(argv);
    };
    let given: Vec<String> = argv
        .iter()
        .skip(at)
        .filter_map(|a| a.to_str())
        .filter_map(|a| a.strip_prefix("--"))
        .map(|a| a.split('=').next().unwrap_or(a).to_owned())
        .collect();
    let flags = file_flags(Path::new(&path), &given)?;
    let mut out = argv;
    let tail = out.split_off(at);
    out.extend(flags.into_iter().map(OsString::from));
    out.extend(tail);
    Ok(out)
}

/// The value of `--config` (`--config F` or `--config=F`).
fn config_path(argv: &[OsString]) -> Option<OsString> {
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        if a == "--config" {
            return it.next().cloned();
        }
        if let Some(v) = a.to_str().and_then(|s| s.strip_prefix("--config=")) {
            return Some(v.into());
        }
    }
    None
}

/// The index just after `serve`, or after `config check`.
fn subcommand_end(argv: &[OsString]) -> Option<usize> {
    let pos = |name: &str| argv.iter().position(|a| a == name);
    match (pos("serve"), pos("config")) {
        (Some(i), _) => Some(i + 1),
        (None, Some(i)) if argv.get(i + 1).is_some_and(|a| a == "check") => Some(i + 2),
        _ => None,
    }
}

/// The file's keys as flags. A key must name a `serve` flag; a list repeats its flag, and a
/// list the command line also gives is left to the command line.
fn file_flags(path: &Path, given: &[String]) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("--config {}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("--config {}", path.display()))?;
    let known = serve_flags();
    let mut flags = Vec::new();
    for (key, value) in table {
        let flag = key.replace('_', "-");
        if !known.contains(&flag) {
            bail!(
                "--config {}: unknown key `{key}` (a key is a `kukaku serve` flag's long name)",
                path.display()
            );
        }
        if flag == "config" {
            bail!(
                "--config {}: `config` cannot be set from a file",
                path.display()
            );
        }
        let values = match value {
            toml::Value::Array(items) if given.contains(&flag) => {
                let _ = items;
                continue;
            }
            toml::Value::Array(items) => items,
            other => vec![other],
        };
        for v in values {
            match v {
                toml::Value::Boolean(true) => flags.push(format!("--{flag}")),
                toml::Value::Boolean(false) => {}
                toml::Value::String(s) => flags.push(format!("--{flag}={s}")),
                toml::Value::Integer(n) => flags.push(format!("--{flag}={n}")),
                _ => bail!(
                    "--config {}: `{key}` must be a string, an integer, true or a list of them",
                    path.display()
                ),
            }
        }
    }
    Ok(flags)
}

/// The long names of `kukaku serve`'s flags.
fn serve_flags() -> Vec<String> {
    let cli = super::args::Cli::command();
    cli.find_subcommand("serve")
        .map(|c| {
            c.get_arguments()
                .filter_map(|a| a.get_long().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
