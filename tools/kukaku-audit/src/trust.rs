//! The auditor's trust roots: pinned checkpoint keys (with validity windows, so that a
//! signing-key rotation verifies) and pinned witness keys. docs/audit.md §2 gives the format.
//!
//! ```text
//! # one entry per line; '#' starts a comment
//! log hub.kokuho-13.example+1a2b3c4d+AQ…                     # every partition of the origin
//! log hub.kokuho-13.example/131011+5e6f7a8b+AQ… until=2027-04-01
//! log hub.kokuho-13.example+9c0d1e2f+AQ… from=2027-04-01T00:00:00Z
//! witness intermediate.kokuho.example+c3c19a25+BM…
//! ```

use std::path::Path;

use kukaku::ledger::{PartitionId, VerifierKey};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    #[error("{path}: {error}")]
    Io {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error("trust file line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("trust file pins no log key")]
    Empty,
}

/// A pinned checkpoint key. With `partition` it covers that partition of `origin` only;
/// without, every partition of `origin` (one instance key signs them all, each under the
/// key name `<origin>/<partition>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogKey {
    pub origin: String,
    pub partition: Option<PartitionId>,
    pub public_key: [u8; 32],
    /// The key is trusted for checkpoints whose newest entry has `tx_time` in
    /// `[from, until)` (Unix ms); `None` is open-ended.
    pub from: Option<u64>,
    pub until: Option<u64>,
}

impl LogKey {
    /// The verifier key of `origin/partition` if this entry covers it.
    pub fn key_for(&self, origin: &str, p: &PartitionId) -> Option<VerifierKey> {
        if self.origin != origin || self.partition.as_ref().is_some_and(|q| q != p) {
            return None;
        }
        VerifierKey::new(&format!("{origin}/{p}"), self.public_key).ok()
    }

    /// Whether a checkpoint whose newest entry was appended at `tx_ms` may be signed by this
    /// key.
    pub fn covers(&self, tx_ms: u64) -> bool {
        self.from.is_none_or(|f| tx_ms >= f) && self.until.is_none_or(|u| tx_ms < u)
    }

    /// The window as text, for reports.
    pub fn window(&self) -> String {
        if self.from.is_none() && self.until.is_none() {
            return "(no validity window)".to_owned();
        }
        let show = |t: Option<u64>| t.map_or("…".to_owned(), kukaku::ledger::format_utc_ms);
        format!("valid [{}, {})", show(self.from), show(self.until))
    }
}

/// Everything an audit trusts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trust {
    pub logs: Vec<LogKey>,
    /// Cosigner keys (type 0x04).
    pub witnesses: Vec<VerifierKey>,
}

/// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ` (UTC) as Unix ms.
pub fn parse_time(text: &str) -> Option<u64> {
    let (date, time) = match text.split_once('T') {
        Some((d, t)) => (d, Some(t.strip_suffix('Z')?)),
        None => (text, None),
    };
    let num = |s: &str, len: usize| -> Option<u32> {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let mut d = date.split('-');
    let (y, m, day) = (num(d.next()?, 4)?, num(d.next()?, 2)?, num(d.next()?, 2)?);
    if d.next().is_some() || !(1..=12).contains(&m) || day == 0 {
        return None;
    }
    let days = kukaku::ledger::days_from_civil(i32::try_from(y).ok()?, m, day);
    // Reject dates that do not exist (2027-02-30 would roll over).
    if kukaku::ledger::civil_from_days(days) != (i32::try_from(y).ok()?, m, day) {
        return None;
    }
    let secs = match time {
        None => 0,
        Some(t) => {
            let mut p = t.split(':');
            let (h, mi, s) = (num(p.next()?, 2)?, num(p.next()?, 2)?, num(p.next()?, 2)?);
            if p.next().is_some() || h > 23 || mi > 59 || s > 59 {
                return None;
            }
            u64::from(h * 3600 + mi * 60 + s)
        }
    };
    let days = u64::try_from(days).ok()?;
    Some((days * 86_400 + secs) * 1000)
}

impl Trust {
    pub fn load(path: &Path) -> Result<Trust, TrustError> {
        let text = std::fs::read_to_string(path).map_err(|error| TrustError::Io {
            path: path.to_owned(),
            error,
        })?;
        Trust::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Trust, TrustError> {
        let mut trust = Trust::default();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let bad = |reason: &str| TrustError::Line {
                line,
                reason: reason.to_owned(),
            };
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let mut words = content.split_whitespace();
            let (Some(what), Some(vkey)) = (words.next(), words.next()) else {
                return Err(bad(
                    "expected `log <vkey> [from=…] [until=…]` or `witness <vkey>`",
                ));
            };
            let key = VerifierKey::parse(vkey)
                .map_err(|e| bad(&format!("verifier key: {}", kukaku::error::report(&e))))?;
            match what {
                "witness" => {
                    if !key.is_cosigner() {
                        return Err(bad("a witness key is a cosigner key (type 0x04)"));
                    }
                    if words.next().is_some() {
                        return Err(bad("a witness line takes no options"));
                    }
                    trust.witnesses.push(key);
                }
                "log" => {
                    if key.is_cosigner() {
                        return Err(bad("a log key is a note-signing key (type 0x01)"));
                    }
                    // `<origin>/<partition>` pins one partition; any other name is an origin.
                    let (origin, partition) = match key.name().rsplit_once('/') {
                        Some((o, p)) if p.bytes().all(|b| b.is_ascii_digit()) => {
                            let p = PartitionId::parse(p)
                                .map_err(|_| bad("bad partition id in the key name"))?;
                            (o.to_owned(), Some(p))
                        }
                        _ => (key.name().to_owned(), None),
                    };
                    let mut entry = LogKey {
                        origin,
                        partition,
                        public_key: *key.public_key(),
                        from: None,
                        until: None,
                    };
                    for opt in words {
                        let (name, value) = opt
                            .split_once('=')
                            .ok_or_else(|| bad("options are from=TIME and until=TIME"))?;
                        let t = parse_time(value).ok_or_else(|| {
                            bad("time must be YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC)")
                        })?;
                        match name {
                            "from" => entry.from = Some(t),
                            "until" => entry.until = Some(t),
                            _ => return Err(bad("options are from=TIME and until=TIME")),
                        }
                    }
                    if let (Some(f), Some(u)) = (entry.from, entry.until)
                        && f >= u
                    {
                        return Err(bad("from must be before until"));
                    }
                    trust.logs.push(entry);
                }
                _ => return Err(bad("a line starts with `log` or `witness`")),
            }
        }
        if trust.logs.is_empty() {
            return Err(TrustError::Empty);
        }
        Ok(trust)
    }

    /// Pinned keys of `origin/p` with their entries.
    pub fn log_keys<'a>(
        &'a self,
        origin: &'a str,
        p: &'a PartitionId,
    ) -> impl Iterator<Item = (&'a LogKey, VerifierKey)> + 'a {
        self.logs
            .iter()
            .filter_map(move |l| l.key_for(origin, p).map(|k| (l, k)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str =
        "hub.kokuho-13.example/131011+b49a58cb+ASFS+NGbeR0kRTJC4V8uq2y3z/p7al7TAJeWDgaYgdsS";
    const WIT: &str =
        "intermediate.kokuho.example+c3c19a25+BMhAafoiFsbtwdUsqDqhHCZ91UQK+lJgkMpD69DKhqnP";

    #[test]
    fn parses_logs_windows_and_witnesses() {
        let t = Trust::parse(&format!(
            "# pins\nlog {LOG} until=2027-04-01\n\nwitness {WIT}  # the intermediate\n"
        ))
        .unwrap();
        assert_eq!(t.logs.len(), 1);
        let l = &t.logs[0];
        assert_eq!(l.origin, "hub.kokuho-13.example");
        assert_eq!(l.partition, Some(PartitionId::parse("131011").unwrap()));
        assert_eq!(l.until, parse_time("2027-04-01"));
        assert!(l.covers(0) && !l.covers(parse_time("2027-04-01").unwrap()));
        assert_eq!(t.witnesses.len(), 1);
        let p = PartitionId::parse("131011").unwrap();
        let q = PartitionId::parse("380014").unwrap();
        assert_eq!(t.log_keys("hub.kokuho-13.example", &p).count(), 1);
        assert_eq!(t.log_keys("hub.kokuho-13.example", &q).count(), 0);
        assert_eq!(t.log_keys("other.example", &p).count(), 0);
    }

    #[test]
    fn bad_lines_name_their_line() {
        for (text, line) in [
            (format!("log {WIT}"), 1),
            (format!("# ok\nwitness {LOG}"), 2),
            (format!("log {LOG} from=2027-02-30"), 1),
            (format!("log {LOG} from=2027-04-01 until=2027-01-01"), 1),
            (format!("log {LOG} since=2027-04-01"), 1),
            ("log nonsense".to_owned(), 1),
            (format!("pin {LOG}"), 1),
        ] {
            match Trust::parse(&text) {
                Err(TrustError::Line { line: l, .. }) => assert_eq!(l, line, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(matches!(
            Trust::parse(&format!("witness {WIT}")),
            Err(TrustError::Empty)
        ));
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("1970-01-02"), Some(86_400_000));
        assert_eq!(parse_time("1970-01-01T00:01:01Z"), Some(61_000));
        for bad in [
            "1970-1-01",
            "1970-01-01T00:00:00",
            "1970-01-01T24:00:00Z",
            "2025-02-29",
            "R6.4.1",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        assert!(parse_time("2024-02-29").is_some());
    }
}
