//! The auditor's memory between runs: per log (`<origin>/<partition>`) the last verified
//! checkpoint. The next run must show the same root at that size (append-only since), and a
//! log that shrank is a failure. Written atomically (temporary file, then rename) and only
//! after a run in which everything verified.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// First field of every state file.
pub const FORMAT: &str = "kukaku-audit-state v1";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error("state file {path}: {error}")]
    Io {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error("state file {path} is not a kukaku-audit state file: {reason}")]
    Format {
        path: std::path::PathBuf,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogState {
    pub size: u64,
    /// Base64 root at `size`.
    pub root: String,
    /// The signed checkpoint note it came from.
    pub checkpoint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub format: String,
    pub logs: BTreeMap<String, LogState>,
}

impl Default for State {
    fn default() -> Self {
        State {
            format: FORMAT.to_owned(),
            logs: BTreeMap::new(),
        }
    }
}

impl State {
    /// Loads `path`; a missing file is an empty state (first run).
    pub fn load(path: &Path) -> Result<State, StateError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(error) => {
                return Err(StateError::Io {
                    path: path.to_owned(),
                    error,
                });
            }
        };
        let state: State = serde_json::from_str(&text).map_err(|e| StateError::Format {
            path: path.to_owned(),
            reason: kukaku::error::report(&e),
        })?;
        if state.format != FORMAT {
            return Err(StateError::Format {
                path: path.to_owned(),
                reason: format!("format is {:?}, expected {FORMAT:?}", state.format),
            });
        }
        Ok(state)
    }

    /// Replaces `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let io = |error| StateError::Io {
            path: path.to_owned(),
            error,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        let text = serde_json::to_string_pretty(self).map_err(|e| StateError::Format {
            path: path.to_owned(),
            reason: kukaku::error::report(&e),
        })?;
        std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(io)?;
        std::io::Write::write_all(&mut tmp, b"\n").map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        Ok(())
    }
}
