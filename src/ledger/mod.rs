#![deny(missing_docs)]
//! The pure ledger: formats, hashes, Merkle proofs, signed-note checkpoints and verification.
//!
//! No file, socket or clock access, no secret and no decryption: this module builds with
//! `--no-default-features` and is all the auditor links. Formats are in docs/format.md.

pub mod bundle;
pub mod envelope;
pub mod hash;
pub mod header;
pub mod merkle;
pub mod note;
pub mod payload;
pub mod proof_json;
pub mod verify;

pub use envelope::{Body, BodyRef, Envelope, EnvelopeError, EnvelopeRef};
pub use hash::Hash;
pub use header::{Class, Header, Kind, PartitionId};
pub use note::{Checkpoint, SignedNote, VerifierKey};
pub use verify::{ChainVerifier, Step, VerifyError};

/// The position of an entry in its partition's log (its leaf index), from 0. A newtype where
/// a seq and a count or a tree size stand side by side in a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seq(pub u64);

/// A number of entries from genesis: a tree's size, the size a checkpoint covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TreeSize(pub u64);

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i32, month: u32, day: u32) -> i32 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i32;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i32 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date `(year, month, day)` of a day count since 1970-01-01.
pub fn civil_from_days(days: i32) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Japanese fiscal year (April to March, JST) of a Unix millisecond time.
pub fn fiscal_year_jst(unix_ms: u64) -> u16 {
    const JST_MS: u64 = 9 * 3_600_000;
    let days = ((unix_ms + JST_MS) / 86_400_000) as i32;
    let (y, m, _) = civil_from_days(days);
    let fy = if m < 4 { y - 1 } else { y };
    u16::try_from(fy).unwrap_or(0)
}

/// RFC 3339 UTC text of a Unix millisecond time, e.g. `2026-11-24T23:40:01.123Z`.
pub fn format_utc_ms(unix_ms: u64) -> String {
    let days = (unix_ms / 86_400_000) as i32;
    let ms = unix_ms % 86_400_000;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_text() {
        assert_eq!(format_utc_ms(0), "1970-01-01T00:00:00.000Z");
        // 2026-11-24T23:40:01.123Z
        let t = days_from_civil(2026, 11, 24) as u64 * 86_400_000 + 85_201_123;
        assert_eq!(format_utc_ms(t), "2026-11-24T23:40:01.123Z");
    }

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        for d in (-800_000..800_000).step_by(997) {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }

    #[test]
    fn fiscal_year_turns_in_april_jst() {
        // 2026-03-31T15:00:00Z is 2026-04-01 00:00 JST.
        let t = days_from_civil(2026, 3, 31) as u64 * 86_400_000 + 15 * 3_600_000;
        assert_eq!(fiscal_year_jst(t - 1), 2025);
        assert_eq!(fiscal_year_jst(t), 2026);
    }
}
