//! Failed-authentication limits: token guessing gets 429 and a log line, never an oracle.
//!
//! A token names its credential id in clear; guessing the 256-bit secret is hopeless, but
//! every failure is counted and logged by id, and after [`PER_ID`] failures within
//! [`WINDOW`] every attempt with that id (even a right one) gets 429 until the window ends.
//! Tokens naming an id that does not exist share one budget ([`UNKNOWN`] per window). Memory
//! is bounded: at most [`MAX_TRACKED`] ids are tracked; expired windows are dropped first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::crypto::credential::CredentialId;

/// Length of a counting window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Failed attempts per credential id and window before it is refused.
pub const PER_ID: u32 = 10;
/// Failed attempts with unknown ids, all together, per window.
pub const UNKNOWN: u32 = 100;
/// Ids tracked at once.
pub const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Default)]
pub struct Guesses {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    per_id: HashMap<CredentialId, (Instant, u32)>,
    unknown: Option<(Instant, u32)>,
}

/// Whole seconds (rounded up) until the window that started at `start` ends.
fn retry_after(start: Instant, now: Instant) -> u64 {
    WINDOW.saturating_sub(now.duration_since(start)).as_secs() + 1
}

/// Counts in the current window, restarting it when it has passed.
fn bump(slot: &mut (Instant, u32), now: Instant) -> u32 {
    if now.duration_since(slot.0) >= WINDOW {
        *slot = (now, 0);
    }
    slot.1 = slot.1.saturating_add(1);
    slot.1
}

fn current(slot: Option<&(Instant, u32)>, now: Instant) -> u32 {
    slot.filter(|(start, _)| now.duration_since(*start) < WINDOW)
        .map_or(0, |(_, n)| *n)
}

impl Guesses {
    /// Seconds to wait if attempts with `id` (or with unknown ids) are refused now.
    pub fn blocked(&self, id: CredentialId, now: Instant) -> Option<u64> {
        let state = self.state.lock().ok()?;
        let slot = state.per_id.get(&id)?;
        (current(Some(slot), now) >= PER_ID).then(|| retry_after(slot.0, now))
    }

    /// Whether the shared budget of unknown ids is spent.
    pub fn unknown_blocked(&self, now: Instant) -> Option<u64> {
        let state = self.state.lock().ok()?;
        let slot = state.unknown.as_ref()?;
        (current(Some(slot), now) >= UNKNOWN).then(|| retry_after(slot.0, now))
    }

    /// Records a failure for `id` (`known`: the id exists); returns the count in the window.
    pub fn failed(&self, id: CredentialId, known: bool, now: Instant) -> u32 {
        let Ok(mut state) = self.state.lock() else {
            return u32::MAX;
        };
        if !known {
            let slot = state.unknown.get_or_insert((now, 0));
            return bump(slot, now);
        }
        if state.per_id.len() >= MAX_TRACKED && !state.per_id.contains_key(&id) {
            state
                .per_id
                .retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            if state.per_id.len() >= MAX_TRACKED {
                // Still full of live windows: count this one with the unknown ids.
                let slot = state.unknown.get_or_insert((now, 0));
                return bump(slot, now);
            }
        }
        let slot = state.per_id.entry(id).or_insert((now, 0));
        bump(slot, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_refused_after_its_failures_until_the_window_ends() {
        let g = Guesses::default();
        let id = CredentialId::from_bytes([1; 8]);
        let other = CredentialId::from_bytes([2; 8]);
        let t0 = Instant::now();
        for i in 1..PER_ID {
            assert_eq!(g.failed(id, true, t0), i);
            assert_eq!(g.blocked(id, t0), None);
        }
        g.failed(id, true, t0);
        assert!(g.blocked(id, t0).is_some_and(|s| s <= 61));
        assert_eq!(g.blocked(other, t0), None, "other ids are not affected");
        assert_eq!(
            g.blocked(id, t0 + WINDOW),
            None,
            "a new window starts clean"
        );
        for _ in 0..UNKNOWN {
            g.failed(other, false, t0);
        }
        assert!(g.unknown_blocked(t0).is_some());
        assert_eq!(g.unknown_blocked(t0 + WINDOW), None);
    }
}
