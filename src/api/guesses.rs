//! Failed-authentication limits: token guessing gets 429 and a log line, never an oracle.
//!
//! Failures are counted by the **source** of the request (its peer address; IPv6 by /64),
//! never by the credential id the token names. Credential ids are printed in clear in open
//! entries (access and provision records) that every municipality, auditor and replica can
//! read, so a limit by id would let anyone lock out someone else's credential with a few
//! wrong secrets a minute (issue 26). After [`PER_SOURCE`] failures within [`WINDOW`], every
//! attempt from that source (even a right one, so that the answer is no oracle) gets 429
//! until the window ends; other sources, and the credential itself from them, are not
//! affected. Guessing the 256-bit secret stays hopeless either way; the limit bounds the
//! noise and the log lines say who tried. Requests without a peer address are in-process
//! calls (the listener sets one on every request it serves); they are logged but never
//! limited. Memory is bounded: at most [`MAX_TRACKED`] sources; expired windows are
//! dropped first, then the oldest window.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Length of a counting window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Failed attempts per source and window before the source is refused.
pub const PER_SOURCE: u32 = 10;
/// Sources tracked at once.
pub const MAX_TRACKED: usize = 10_000;

/// Where a request came from, as the limiter counts it: an IPv4 address, the /64 of an IPv6
/// address (one host usually holds a whole /64), or no peer (in-process calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    V4(std::net::Ipv4Addr),
    /// The first 64 bits of the address.
    V6Net(u64),
    InProcess,
}

impl Source {
    /// The source of a request from `peer` (`None`: no network peer).
    pub fn of(peer: Option<IpAddr>) -> Self {
        match peer.map(|ip| ip.to_canonical()) {
            Some(IpAddr::V4(v4)) => Source::V4(v4),
            Some(IpAddr::V6(v6)) => Source::V6Net((v6.to_bits() >> 64) as u64),
            None => Source::InProcess,
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::V4(v4) => write!(f, "{v4}"),
            Source::V6Net(net) => {
                write!(
                    f,
                    "{}/64",
                    std::net::Ipv6Addr::from_bits(u128::from(*net) << 64)
                )
            }
            Source::InProcess => f.write_str("in-process"),
        }
    }
}

#[derive(Debug, Default)]
pub struct Guesses {
    state: Mutex<HashMap<Source, (Instant, u32)>>,
}

/// Whole seconds (rounded up) until the window that started at `start` ends.
fn retry_after(start: Instant, now: Instant) -> u64 {
    WINDOW.saturating_sub(now.duration_since(start)).as_secs() + 1
}

impl Guesses {
    /// Seconds to wait if attempts from `source` are refused now.
    pub fn blocked(&self, source: Source, now: Instant) -> Option<u64> {
        let state = self.state.lock().ok()?;
        let (start, n) = state.get(&source)?;
        (now.duration_since(*start) < WINDOW && *n >= PER_SOURCE).then(|| retry_after(*start, now))
    }

    /// Records a failure from `source`; returns the count in its window.
    pub fn failed(&self, source: Source, now: Instant) -> u32 {
        if source == Source::InProcess {
            return 0;
        }
        let Ok(mut state) = self.state.lock() else {
            return u32::MAX;
        };
        if state.len() >= MAX_TRACKED && !state.contains_key(&source) {
            state.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            if state.len() >= MAX_TRACKED
                && let Some(oldest) = state.iter().min_by_key(|(_, (s, _))| *s).map(|(k, _)| *k)
            {
                state.remove(&oldest);
            }
        }
        let slot = state.entry(source).or_insert((now, 0));
        if now.duration_since(slot.0) >= WINDOW {
            *slot = (now, 0);
        }
        slot.1 = slot.1.saturating_add(1);
        slot.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Source {
        Source::of(Some(s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))))
    }

    #[test]
    fn a_source_is_refused_after_its_failures_until_the_window_ends() {
        let g = Guesses::default();
        let attacker = ip("192.0.2.7");
        let t0 = Instant::now();
        for i in 1..PER_SOURCE {
            assert_eq!(g.failed(attacker, t0), i);
            assert_eq!(g.blocked(attacker, t0), None);
        }
        g.failed(attacker, t0);
        assert!(g.blocked(attacker, t0).is_some_and(|s| s <= 61));
        assert_eq!(
            g.blocked(ip("192.0.2.8"), t0),
            None,
            "other sources are not"
        );
        for _ in 0..PER_SOURCE {
            assert_eq!(
                g.failed(Source::of(None), t0),
                0,
                "in-process calls are not counted"
            );
        }
        assert_eq!(g.blocked(Source::of(None), t0), None);
        assert_eq!(
            g.blocked(attacker, t0 + WINDOW),
            None,
            "a new window is clean"
        );
    }

    /// Known answers: what counts as one source.
    #[test]
    fn sources_group_ipv6_by_64_and_unmap_ipv4() {
        for (a, b, same) in [
            ("192.0.2.1", "192.0.2.1", true),
            ("192.0.2.1", "192.0.2.2", false),
            ("192.0.2.1", "::ffff:192.0.2.1", true),
            ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9", true),
            ("2001:db8:1:2::1", "2001:db8:1:3::1", false),
            ("::1", "127.0.0.1", false),
        ] {
            assert_eq!(ip(a) == ip(b), same, "{a} vs {b}");
        }
        assert_eq!(ip("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(ip("192.0.2.1").to_string(), "192.0.2.1");
    }

    #[test]
    fn memory_stays_bounded() {
        let g = Guesses::default();
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 50) {
            let [a, b, c, d] = i.to_be_bytes();
            g.failed(Source::of(Some(IpAddr::from([10 ^ a, b, c, d]))), t0);
        }
        assert!(g.state.lock().map(|s| s.len()).unwrap_or(0) <= MAX_TRACKED);
    }
}
