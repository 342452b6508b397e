//! Flow 5 input: a transmission of 世帯ファイル and 個人ファイル (docs/domain.md §9.1–9.3, layout v1).
//!
//! `validate` decodes both files in the declared encoding, parses them as RFC 4180 CSV and
//! checks every rule. It returns either the households, ready to be stored, or every problem
//! found as (file, line, field, reason) — never a value from the files.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::domain::text::{check_kana, check_kigo_bango, check_text, parse_date};
use crate::domain::{InsurerNumber, InsurerNumberError, KojinNo};
use crate::ledger::PartitionId;

/// Largest file accepted (each of the two).
pub const MAX_FILE_BYTES: usize = 256 << 20;
/// Most problems listed in one answer; the total is always exact.
pub const MAX_LISTED_PROBLEMS: usize = 1000;

/// The declared encoding of both files. Never guessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Utf8,
    /// Shift_JIS as Windows code page 932 (`encoding_rs::SHIFT_JIS`).
    Cp932,
}

impl Encoding {
    pub fn parse(name: &str) -> Option<Encoding> {
        match name.to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" => Some(Encoding::Utf8),
            "cp932" | "shift_jis" | "shift-jis" | "sjis" | "windows-31j" => Some(Encoding::Cp932),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Encoding::Utf8 => "utf-8",
            Encoding::Cp932 => "cp932",
        }
    }
}

/// Which of the two files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    Setai,
    Kojin,
    /// 高額該当情報ファイル (flow 4, docs/domain.md §9.4).
    Kogaku,
}

impl FileKind {
    pub fn name(self) -> &'static str {
        match self {
            FileKind::Setai => "setai",
            FileKind::Kojin => "kojin",
            FileKind::Kogaku => "kogaku",
        }
    }
}

/// One problem: where and why, never what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub file: FileKind,
    /// Line where the record starts (header = 1); 0 for the file as a whole.
    pub line: u64,
    /// Column name, if the problem is in one field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
    /// Stable reason code.
    pub reason: &'static str,
}

/// Column names of the 世帯ファイル, in order.
pub const SETAI_HEADER: [&str; 13] = [
    "layout",
    "transmission_id",
    "hokensha_no",
    "setai_no",
    "ido_date",
    "ido_jiyu",
    "teisei_moto",
    "head_kojin_no",
    "head_kubun",
    "kigo",
    "yubin_no",
    "jusho",
    "person_rows",
];

/// Column names of the 個人ファイル, in order.
pub const KOJIN_HEADER: [&str; 22] = [
    "layout",
    "transmission_id",
    "setai_no",
    "kojin_no",
    "kigo",
    "bango",
    "edaban",
    "shimei",
    "shimei_kana",
    "birth_date",
    "sex",
    "zokugara",
    "shutoku_date",
    "shutoku_jiyu",
    "soshitsu_date",
    "soshitsu_jiyu",
    "tekiyo_start",
    "tekiyo_end",
    "futan_wariai",
    "gendo_kubun",
    "shosho_kubun",
    "giji_head",
];

/// One person of a household snapshot (sealed payload; docs/domain.md §9.2 fields, validated).
/// Dates are `YYYY-MM-DD`; absent values are `None`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct Person {
    pub kojin_no: String,
    pub kigo: Option<String>,
    pub bango: Option<String>,
    pub edaban: Option<String>,
    pub shimei: String,
    pub shimei_kana: Option<String>,
    pub birth_date: String,
    pub sex: String,
    pub zokugara: String,
    pub shutoku_date: Option<String>,
    pub shutoku_jiyu: Option<String>,
    pub soshitsu_date: Option<String>,
    pub soshitsu_jiyu: Option<String>,
    pub tekiyo_start: Option<String>,
    pub tekiyo_end: Option<String>,
    pub futan_wariai: Option<String>,
    pub gendo_kubun: Option<String>,
    pub shosho_kubun: Option<String>,
    pub giji_head: bool,
}

impl std::fmt::Debug for Person {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Person(<redacted>)")
    }
}

/// A household snapshot: the sealed payload of a `household_snapshot` entry.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct Household {
    /// `household-snapshot-v1`.
    pub schema: String,
    pub transmission_id: String,
    pub hokensha_no: String,
    pub setai_no: String,
    pub ido_date: String,
    pub ido_jiyu: String,
    pub teisei_moto: Option<String>,
    pub head_kojin_no: String,
    pub head_kubun: String,
    pub kigo: Option<String>,
    pub yubin_no: Option<String>,
    pub jusho: String,
    pub persons: Vec<Person>,
}

impl std::fmt::Debug for Household {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Household({} persons, <redacted>)", self.persons.len())
    }
}

pub const SNAPSHOT_SCHEMA: &str = "household-snapshot-v1";

/// A transmission that passed every rule.
#[derive(Debug)]
pub struct Validated {
    pub transmission_id: String,
    /// Households in 世帯ファイル order.
    pub households: Vec<Household>,
}

/// What `validate` needs besides the bytes.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    /// The caller's partition (from the credential).
    pub partition: &'a PartitionId,
    /// The transmission id the request declares; every row must carry it.
    pub transmission_id: &'a str,
    pub encoding: Encoding,
    /// Whether `(transmission id, 世帯番号)` names an accepted transmission of this partition
    /// holding that household: the target a 訂正 (異動事由 90) must name.
    pub correction_target: &'a dyn Fn(&str, &str) -> bool,
    /// The 個人番号 of the members of a household's latest stored snapshot who had no 喪失
    /// (`None`: no earlier snapshot, or not checked). Each must be sent again, with or
    /// without a 喪失 (seed 5-①: every 異動 carries the whole household).
    pub previous_members: &'a dyn Fn(&str) -> Option<Vec<zeroize::Zeroizing<String>>>,
}

/// A [`Context::previous_members`] that checks nothing.
pub fn no_previous(_: &str) -> Option<Vec<zeroize::Zeroizing<String>>> {
    None
}

/// Problems, all of them, with the exact total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub problems: Vec<Problem>,
}

pub(crate) fn valid_transmission_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub(crate) fn valid_setai_no(s: &str) -> bool {
    (1..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

mod fields;
mod household;
mod parse;

pub(crate) use fields::*;
use household::*;
pub use parse::declared_id;
pub(crate) use parse::*;

/// Validates a whole transmission. Nothing is partial: either every household, or every
/// problem.
pub fn validate(setai: &[u8], kojin: &[u8], ctx: &Context<'_>) -> Result<Validated, Rejected> {
    let (files, mut problems) = read_files(
        &[
            (setai, FileKind::Setai, &SETAI_HEADER),
            (kojin, FileKind::Kojin, &KOJIN_HEADER),
        ],
        ctx.transmission_id,
        ctx.encoding,
    )?;
    let mut files = files.into_iter();
    let (setai_rows, kojin_rows) = (
        files.next().unwrap_or_default(),
        files.next().unwrap_or_default(),
    );
    let mut drafts = Drafts::of(&setai_rows, ctx, &mut problems);
    let incomplete = drafts.add_persons(&kojin_rows, ctx, &mut problems);
    let households = drafts
        .list
        .into_iter()
        .flatten()
        .filter(|d| !incomplete.contains(&d.household.setai_no))
        .filter_map(|d| household_rules(d, ctx, &mut problems))
        .collect();
    if !problems.is_empty() {
        problems.sort_by(|a, b| {
            (a.file.name(), a.line, a.field).cmp(&(b.file.name(), b.line, b.field))
        });
        return Err(Rejected { problems });
    }
    Ok(Validated {
        transmission_id: ctx.transmission_id.to_owned(),
        households,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every record with its start position, as `Records` reads them.
    fn ours(text: &str) -> Vec<(usize, Vec<String>)> {
        with_parser(|core| {
            let mut r = Records::new(text.as_bytes(), core);
            let mut out = Vec::new();
            loop {
                let at = r.position();
                match r.next_record() {
                    Some(Ok(f)) => out.push((at, f.iter().map(|s| (*s).to_owned()).collect())),
                    Some(Err(())) => panic!("a &str input gave a non-UTF-8 field"),
                    None => return out,
                }
            }
        })
    }

    /// The same, as `csv::Reader` with the settings `rows` used before it had its own
    /// parser: no header row, records of any length.
    fn csv_crate(text: &str) -> Vec<(usize, Vec<String>)> {
        let mut r = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(text.as_bytes());
        let mut out = Vec::new();
        let mut rec = csv::StringRecord::new();
        loop {
            let at = r.position().byte() as usize;
            if !r.read_record(&mut rec).unwrap() {
                return out;
            }
            out.push((at, rec.iter().map(str::to_owned).collect()));
        }
    }

    #[test]
    fn records_grow_past_their_first_buffers() {
        // A 10,000-byte quoted field with commas, doubled quotes and a newline, and a
        // record of 300 fields: both buffers must grow.
        let long = format!("\"{}\"\"x,\ny\"", "あ".repeat(3000));
        let wide = vec!["f"; 300].join(",");
        let text = format!("\u{feff}a,b\r\n{long},2\r\n{wide}\n\nlast");
        let got = ours(&text);
        assert_eq!(got, csv_crate(&text));
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].1, ["a", "b"]);
        assert_eq!(got[1].1[0], format!("{}\"x,\ny", "あ".repeat(3000)));
        assert_eq!(got[2].1.len(), 300);
        assert_eq!(got[3].1, ["last"]);
    }

    proptest! {
        /// The shared parser reads exactly what `csv::Reader` reads, at the same positions,
        /// whatever the text: quotes, CR/LF mixes, a BOM, empty lines, multi-byte text.
        #[test]
        fn records_match_the_csv_crate(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just(","), Just("\""), Just("\"\""), Just("\r\n"), Just("\n"), Just("\r"),
                    Just("\u{feff}"), Just("abc"), Just("世帯"), Just(" "), Just("0123456789"),
                ],
                0..60,
            ),
        ) {
            let text: String = parts.concat();
            prop_assert_eq!(ours(&text), csv_crate(&text));
        }
    }
}
