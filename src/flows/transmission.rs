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

/// Decodes a whole file, line by line so that an undecodable byte is reported on its line.
/// Splitting on LF is safe in CP932 too: 0x0A is never a trail byte.
pub(crate) fn decode(
    bytes: &[u8],
    enc: Encoding,
    file: FileKind,
    problems: &mut Vec<Problem>,
) -> String {
    let bytes = match enc {
        Encoding::Utf8 => bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes),
        Encoding::Cp932 => bytes,
    };
    let mut out = String::with_capacity(bytes.len());
    for (i, line) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
        let decoded = match enc {
            Encoding::Utf8 => std::str::from_utf8(line)
                .ok()
                .map(std::borrow::Cow::Borrowed),
            Encoding::Cp932 => {
                encoding_rs::SHIFT_JIS.decode_without_bom_handling_and_without_replacement(line)
            }
        };
        match decoded {
            Some(text) => out.push_str(&text),
            None => problems.push(Problem {
                file,
                line: i as u64 + 1,
                field: None,
                reason: "undecodable",
            }),
        }
    }
    out
}

/// One CSV record with its line.
pub(crate) struct Row {
    pub(crate) line: u64,
    pub(crate) fields: Vec<String>,
}

thread_local! {
    /// This thread's CSV parser, reused file after file: building `csv_core`'s DFA costs
    /// about as much as parsing a one-household file, and `csv::Reader` builds one per file
    /// (it was the largest single cost of an HTTP import, docs/benchmarks.md, “RocksDB's CRC32C
    /// and the CSV parser”). Not cloned from one shared parser: `csv_core::Reader::clone`
    /// copies its transition table without its byte classes (csv-core 0.1.13), and the clone
    /// misparses. RFC 4180 with the defaults of `csv::ReaderBuilder`: comma, double quote,
    /// doubled quotes, CR, LF or CRLF, a UTF-8 BOM skipped.
    static PARSER: std::cell::RefCell<csv_core::Reader> =
        std::cell::RefCell::new(csv_core::Reader::new());
}

/// Runs `f` with this thread's parser, reset to its start (a fresh one if it is in use).
fn with_parser<T>(f: impl FnOnce(&mut csv_core::Reader) -> T) -> T {
    PARSER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut parser) => {
            parser.reset();
            f(&mut parser)
        }
        Err(_) => f(&mut csv_core::Reader::new()),
    })
}

/// The records of an in-memory CSV file, in order.
struct Records<'a, 'p> {
    input: &'a [u8],
    pos: usize,
    parser: &'p mut csv_core::Reader,
    /// The current record's unescaped fields, back to back; wiped when dropped or replaced.
    data: zeroize::Zeroizing<Vec<u8>>,
    ends: Vec<usize>,
}

impl<'a, 'p> Records<'a, 'p> {
    /// Reads `input` with `parser`, which must be fresh or reset.
    fn new(input: &'a [u8], parser: &'p mut csv_core::Reader) -> Self {
        Records {
            input,
            pos: 0,
            parser,
            data: zeroize::Zeroizing::new(vec![0; input.len().clamp(1, 4096)]),
            ends: vec![0; 64],
        }
    }

    /// Bytes of the input read so far (the start of the next record).
    fn position(&self) -> usize {
        self.pos
    }

    /// The next record's fields, `None` at the end, `Err` if a field is not UTF-8 (which a
    /// `&str` input cannot produce: delimiters and quotes are ASCII).
    fn next_record(&mut self) -> Option<Result<Vec<&str>, ()>> {
        let (mut nout, mut nend) = (0, 0);
        loop {
            let (result, nin, o, e) = self.parser.read_record(
                self.input.get(self.pos..).unwrap_or_default(),
                self.data.get_mut(nout..).unwrap_or_default(),
                self.ends.get_mut(nend..).unwrap_or_default(),
            );
            self.pos += nin;
            nout += o;
            nend += e;
            match result {
                csv_core::ReadRecordResult::InputEmpty => {}
                csv_core::ReadRecordResult::OutputFull => {
                    // Grown into a new buffer, so the old one is wiped, not left behind by
                    // a reallocation.
                    let mut bigger = zeroize::Zeroizing::new(vec![0; self.data.len() * 2]);
                    bigger
                        .get_mut(..self.data.len())
                        .unwrap_or_default()
                        .copy_from_slice(&self.data);
                    self.data = bigger;
                }
                csv_core::ReadRecordResult::OutputEndsFull => {
                    self.ends.resize(self.ends.len() * 2, 0);
                }
                csv_core::ReadRecordResult::Record => break,
                csv_core::ReadRecordResult::End => return None,
            }
        }
        let Ok(text) = std::str::from_utf8(self.data.get(..nout).unwrap_or_default()) else {
            return Some(Err(()));
        };
        let mut fields = Vec::with_capacity(nend);
        let mut start = 0;
        for &end in self.ends.get(..nend).unwrap_or_default() {
            match text.get(start..end) {
                Some(f) => fields.push(f),
                None => return Some(Err(())),
            }
            start = end;
        }
        Some(Ok(fields))
    }
}

/// The transmission id a 世帯ファイル declares (its first record's `transmission_id`), for an
/// upload that takes the id from the files (the terminal). `None` when there is none to
/// read; validation then says why.
pub fn declared_id(setai: &[u8], enc: Encoding) -> Option<String> {
    let mut problems = Vec::new();
    let text = zeroize::Zeroizing::new(decode(setai, enc, FileKind::Setai, &mut problems));
    let records = rows(&text, &SETAI_HEADER, FileKind::Setai, &mut problems);
    let column = SETAI_HEADER.iter().position(|h| *h == "transmission_id")?;
    records
        .first()?
        .fields
        .get(column)
        .filter(|id| !id.is_empty())
        .cloned()
}

pub(crate) fn rows(
    text: &str,
    header: &[&str],
    file: FileKind,
    problems: &mut Vec<Problem>,
) -> Vec<Row> {
    if text.trim().is_empty() {
        problems.push(Problem {
            file,
            line: 0,
            field: None,
            reason: "empty_file",
        });
        return Vec::new();
    }
    // Line (1-based) of a record from the parser's byte position before it. After a CRLF
    // record the parser stops on the LF, so a newline at the position itself counts.
    let newlines: Vec<usize> = text
        .bytes()
        .enumerate()
        .filter(|(_, b)| *b == b'\n')
        .map(|(i, _)| i)
        .collect();
    let line_at = |byte: usize| -> u64 { newlines.partition_point(|&n| n <= byte) as u64 + 1 };
    with_parser(|core| {
        let mut out = Vec::new();
        let mut first = true;
        let mut parser = Records::new(text.as_bytes(), core);
        loop {
            let line = line_at(parser.position());
            let record = match parser.next_record() {
                Some(Ok(record)) => record,
                None => break,
                Some(Err(())) => {
                    problems.push(Problem {
                        file,
                        line,
                        field: None,
                        reason: "csv_syntax",
                    });
                    break;
                }
            };
            if first {
                first = false;
                if record.iter().copied().ne(header.iter().copied()) {
                    problems.push(Problem {
                        file,
                        line,
                        field: None,
                        reason: "header",
                    });
                    return Vec::new();
                }
                continue;
            }
            if record.len() == 1 && record.first().is_some_and(|f| f.is_empty()) {
                continue; // blank line
            }
            if record.len() != header.len() {
                problems.push(Problem {
                    file,
                    line,
                    field: None,
                    reason: "column_count",
                });
                continue;
            }
            out.push(Row {
                line,
                fields: record.iter().map(|f| (*f).to_owned()).collect(),
            });
        }
        if out.is_empty() && problems.iter().all(|p| p.file != file) {
            problems.push(Problem {
                file,
                line: 0,
                field: None,
                reason: "no_rows",
            });
        }
        out
    })
}

/// Field access and problem reporting for one row.
pub(crate) struct Check<'a> {
    pub(crate) file: FileKind,
    pub(crate) row: &'a Row,
    pub(crate) header: &'a [&'static str],
    pub(crate) problems: &'a mut Vec<Problem>,
}

impl Check<'_> {
    pub(crate) fn raw(&self, name: &'static str) -> &str {
        self.header
            .iter()
            .position(|h| *h == name)
            .and_then(|i| self.row.fields.get(i))
            .map_or("", String::as_str)
    }

    /// The `layout` and `transmission_id` columns every layout-v1 row starts with.
    pub(crate) fn layout_and_id(&mut self, layout: &str, transmission_id: &str) {
        if self.raw("layout") != layout {
            self.fail("layout", "layout");
        }
        let tid = self.raw("transmission_id");
        if !valid_transmission_id(tid) {
            self.fail("transmission_id", "format");
        } else if tid != transmission_id {
            self.fail("transmission_id", "transmission_id_mismatch");
        }
    }

    /// `hokensha_no`: a valid 保険者番号 equal to the caller's partition.
    pub(crate) fn hokensha_no(&mut self, partition: &PartitionId) {
        match InsurerNumber::parse(self.raw("hokensha_no")) {
            Ok(n) if &n.partition_id() == partition => {}
            Ok(_) => self.fail("hokensha_no", "other_partition"),
            Err(InsurerNumberError::CheckDigit) => self.fail("hokensha_no", "check_digit"),
            Err(_) => self.fail("hokensha_no", "format"),
        }
    }

    pub(crate) fn fail(&mut self, field: &'static str, reason: &'static str) {
        self.problems.push(Problem {
            file: self.file,
            line: self.row.line,
            field: Some(field),
            reason,
        });
    }

    /// A required field, text rules applied; `None` after reporting.
    fn required(&mut self, name: &'static str, max: usize) -> Option<String> {
        let v = self.raw(name).to_owned();
        if v.is_empty() {
            self.fail(name, "missing");
            return None;
        }
        match check_text(&v, max) {
            Ok(()) => Some(v),
            Err(e) => {
                self.fail(name, e.code());
                None
            }
        }
    }

    pub(crate) fn code(
        &mut self,
        name: &'static str,
        allowed: &[&str],
        required: bool,
    ) -> Option<String> {
        let v = self.raw(name).to_owned();
        if v.is_empty() {
            if required {
                self.fail(name, "missing");
            }
            return None;
        }
        if allowed.contains(&v.as_str()) {
            Some(v)
        } else {
            self.fail(name, "code");
            None
        }
    }

    /// A date field: `(text, day number)`.
    fn date(&mut self, name: &'static str, required: bool) -> Option<(String, i32)> {
        let v = self.raw(name).to_owned();
        if v.is_empty() {
            if required {
                self.fail(name, "missing");
            }
            return None;
        }
        match parse_date(&v) {
            Some(d) => Some((v, d)),
            None => {
                self.fail(name, "date");
                None
            }
        }
    }

    fn kojin_no(&mut self, name: &'static str) -> Option<KojinNo> {
        let v = self.raw(name);
        if v.is_empty() {
            self.fail(name, "missing");
            return None;
        }
        match KojinNo::parse(v) {
            Ok(k) => Some(k),
            Err(e) => {
                self.fail(name, e.code());
                None
            }
        }
    }

    fn kigo_bango(&mut self, name: &'static str) -> Result<Option<String>, ()> {
        let v = self.raw(name).to_owned();
        if v.is_empty() {
            return Ok(None);
        }
        match check_kigo_bango(&v, 20) {
            Ok(()) => Ok(Some(v)),
            Err(e) => {
                self.fail(name, e.code());
                Err(())
            }
        }
    }
}

const IDO_JIYU: [&str; 9] = ["01", "02", "03", "04", "05", "06", "07", "90", "99"];
const ZOKUGARA: [&str; 6] = ["01", "02", "03", "04", "05", "06"];
const SHUTOKU_JIYU: [&str; 5] = ["01", "02", "03", "04", "99"];
const SOSHITSU_JIYU: [&str; 4] = ["01", "02", "03", "99"];
const FUTAN: [&str; 3] = ["10", "20", "30"];
const SHOSHO: [&str; 7] = ["01", "02", "03", "04", "05", "06", "07"];

fn gendo_ok(v: &str) -> bool {
    let (band, n) = v.split_at_checked(1).unwrap_or(("", ""));
    let n: u8 = if n.len() == 2 && n.bytes().all(|b| b.is_ascii_digit()) {
        n.parse().unwrap_or(0)
    } else {
        0
    };
    matches!((band, n), ("A", 1..=6) | ("B", 1..=10))
}

/// A household row while validating.
struct SetaiDraft {
    line: u64,
    ido_date: Option<i32>,
    head_kojin_no: Option<KojinNo>,
    head_kubun: Option<String>,
    person_rows: Option<u32>,
    household: Household,
    persons: Vec<(u64, KojinNo, Person, PersonDates)>,
}

#[derive(Clone, Copy, Default)]
struct PersonDates {
    shutoku: Option<i32>,
    soshitsu: Option<i32>,
}

fn setai_row(row: &Row, ctx: &Context<'_>, problems: &mut Vec<Problem>) -> Option<SetaiDraft> {
    let mut c = Check {
        file: FileKind::Setai,
        row,
        header: &SETAI_HEADER,
        problems,
    };
    let before = c.problems.len();
    c.layout_and_id("setai-v1", ctx.transmission_id);
    c.hokensha_no(ctx.partition);
    let setai_no = c.raw("setai_no").to_owned();
    if !valid_setai_no(&setai_no) {
        c.fail("setai_no", "format");
    }
    let ido = c.date("ido_date", true);
    let ido_jiyu = c.code("ido_jiyu", &IDO_JIYU, true);
    let teisei = c.raw("teisei_moto").to_owned();
    match (ido_jiyu.as_deref(), teisei.is_empty()) {
        (Some("90"), true) => c.fail("teisei_moto", "missing"),
        (Some("90"), false) if !valid_transmission_id(&teisei) => c.fail("teisei_moto", "format"),
        (Some("90"), false) if !(ctx.correction_target)(&teisei, c.raw("setai_no")) => {
            c.fail("teisei_moto", "unknown_transmission")
        }
        (Some(j), false) if j != "90" => c.fail("teisei_moto", "not_allowed"),
        _ => {}
    }
    let head = c.kojin_no("head_kojin_no");
    let head_kubun = c.code("head_kubun", &["1", "2"], true);
    let kigo = c.kigo_bango("kigo").ok().flatten();
    let yubin = c.raw("yubin_no").to_owned();
    let yubin_ok = yubin.is_empty()
        || (yubin.len() == 8
            && yubin.bytes().enumerate().all(|(i, b)| {
                if i == 3 {
                    b == b'-'
                } else {
                    b.is_ascii_digit()
                }
            }));
    if !yubin_ok {
        c.fail("yubin_no", "format");
    }
    let jusho = c.required("jusho", 200);
    let rows_text = c.raw("person_rows").to_owned();
    let person_rows = rows_text
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=99).contains(n) && !rows_text.starts_with('+'));
    if person_rows.is_none() {
        c.fail("person_rows", "format");
    }
    if c.problems.len() != before {
        return None;
    }
    Some(SetaiDraft {
        line: row.line,
        ido_date: ido.as_ref().map(|(_, d)| *d),
        head_kojin_no: head,
        head_kubun: head_kubun.clone(),
        person_rows,
        household: Household {
            schema: SNAPSHOT_SCHEMA.to_owned(),
            transmission_id: ctx.transmission_id.to_owned(),
            hokensha_no: ctx.partition.as_str().to_owned(),
            setai_no,
            ido_date: ido.map(|(t, _)| t).unwrap_or_default(),
            ido_jiyu: ido_jiyu.unwrap_or_default(),
            teisei_moto: (!teisei.is_empty()).then_some(teisei),
            head_kojin_no: String::new(),
            head_kubun: head_kubun.unwrap_or_default(),
            kigo,
            yubin_no: (!yubin.is_empty()).then_some(yubin),
            jusho: jusho.unwrap_or_default(),
            persons: Vec::new(),
        },
        persons: Vec::new(),
    })
}

fn kojin_row(
    row: &Row,
    ctx: &Context<'_>,
    ido_dates: &BTreeMap<String, Option<i32>>,
    problems: &mut Vec<Problem>,
) -> Option<(String, KojinNo, Person, PersonDates)> {
    let mut c = Check {
        file: FileKind::Kojin,
        row,
        header: &KOJIN_HEADER,
        problems,
    };
    let before = c.problems.len();
    c.layout_and_id("kojin-v1", ctx.transmission_id);
    let setai_no = c.raw("setai_no").to_owned();
    if !valid_setai_no(&setai_no) {
        c.fail("setai_no", "format");
    } else if !ido_dates.contains_key(&setai_no) {
        c.fail("setai_no", "unknown_household");
    }
    let kojin = c.kojin_no("kojin_no");
    let giji = c.code("giji_head", &["0", "1"], true);
    let insured = giji.as_deref() == Some("0");
    let kigo = c.kigo_bango("kigo").ok().flatten();
    let bango = c.kigo_bango("bango").ok().flatten();
    if insured && bango.is_none() && c.raw("bango").is_empty() {
        c.fail("bango", "missing");
    }
    let edaban = c.raw("edaban").to_owned();
    if edaban.is_empty() {
        if insured {
            c.fail("edaban", "missing");
        }
    } else if !(edaban.len() == 2 && edaban.bytes().all(|b| b.is_ascii_digit())) {
        c.fail("edaban", "format");
    }
    let shimei = c.required("shimei", 100);
    let kana = c.raw("shimei_kana").to_owned();
    if !kana.is_empty()
        && let Err(e) = check_kana(&kana, 100)
    {
        c.fail("shimei_kana", e.code());
    }
    let birth = c.date("birth_date", true);
    let sex = c.code("sex", &["1", "2", "3"], true);
    let zokugara = c.code("zokugara", &ZOKUGARA, true);
    let shutoku = c.date("shutoku_date", insured);
    let shutoku_jiyu = c.code("shutoku_jiyu", &SHUTOKU_JIYU, shutoku.is_some());
    if shutoku.is_none() && !c.raw("shutoku_jiyu").is_empty() && !c.raw("shutoku_date").is_empty() {
        // reported with the date
    } else if shutoku.is_none() && !c.raw("shutoku_jiyu").is_empty() {
        c.fail("shutoku_jiyu", "not_allowed");
    }
    let soshitsu = c.date("soshitsu_date", false);
    let soshitsu_jiyu = c.code("soshitsu_jiyu", &SOSHITSU_JIYU, soshitsu.is_some());
    if c.raw("soshitsu_date").is_empty() && !c.raw("soshitsu_jiyu").is_empty() {
        c.fail("soshitsu_jiyu", "not_allowed");
    }
    let start = c.date("tekiyo_start", insured);
    let end = c.date("tekiyo_end", false);
    let futan = c.code("futan_wariai", &FUTAN, insured);
    let gendo = c.raw("gendo_kubun").to_owned();
    if !gendo.is_empty() && !gendo_ok(&gendo) {
        c.fail("gendo_kubun", "code");
    }
    let shosho = c.code("shosho_kubun", &SHOSHO, false);
    // Date order.
    let d = |x: &Option<(String, i32)>| x.as_ref().map(|(_, d)| *d);
    if let (Some(b), Some(s)) = (d(&birth), d(&shutoku))
        && b > s
    {
        c.fail("birth_date", "date_order");
    }
    if let (Some(b), Some(Some(ido))) = (d(&birth), ido_dates.get(&setai_no))
        && b > *ido
    {
        c.fail("birth_date", "date_order");
    }
    if let (Some(s), Some(l)) = (d(&shutoku), d(&soshitsu))
        && l < s
    {
        c.fail("soshitsu_date", "date_order");
    }
    if let (Some(s), Some(t)) = (d(&shutoku), d(&start))
        && t < s
    {
        c.fail("tekiyo_start", "date_order");
    }
    if let (Some(t), Some(e)) = (d(&start), d(&end))
        && e < t
    {
        c.fail("tekiyo_end", "date_order");
    }
    match (d(&soshitsu), d(&end), c.raw("tekiyo_end").is_empty()) {
        (Some(_), None, true) => c.fail("tekiyo_end", "missing"),
        (Some(l), Some(e), _) if e != l - 1 => c.fail("tekiyo_end", "not_day_before_soshitsu"),
        _ => {}
    }
    if c.problems.len() != before {
        return None;
    }
    let kojin = kojin?;
    let person = Person {
        kojin_no: String::from_utf8_lossy(kojin.expose()).into_owned(),
        kigo,
        bango,
        edaban: (!edaban.is_empty()).then_some(edaban),
        shimei: shimei?,
        shimei_kana: (!kana.is_empty()).then_some(kana),
        birth_date: birth.map(|(t, _)| t)?,
        sex: sex?,
        zokugara: zokugara?,
        shutoku_date: shutoku.as_ref().map(|(t, _)| t.clone()),
        shutoku_jiyu,
        soshitsu_date: soshitsu.as_ref().map(|(t, _)| t.clone()),
        soshitsu_jiyu,
        tekiyo_start: start.map(|(t, _)| t),
        tekiyo_end: end.map(|(t, _)| t),
        futan_wariai: futan,
        gendo_kubun: (!gendo.is_empty()).then_some(gendo),
        shosho_kubun: shosho,
        giji_head: !insured,
    };
    let dates = PersonDates {
        shutoku: d(&shutoku),
        soshitsu: d(&soshitsu),
    };
    Some((setai_no, kojin, person, dates))
}

/// The file-level checks every layout-v1 import starts with: sizes, the declared transmission
/// id, decoding in the declared encoding, exact headers and CSV syntax. Returns each file's
/// rows in order with the row-level problems found so far, or every problem when a file is
/// unusable as a whole (the cross-file checks would only add noise). A bad transmission id
/// is reported against the first file.
pub(crate) fn read_files(
    files: &[(&[u8], FileKind, &[&str])],
    transmission_id: &str,
    encoding: Encoding,
) -> Result<(Vec<Vec<Row>>, Vec<Problem>), Rejected> {
    let mut problems = Vec::new();
    for (bytes, file, _) in files {
        if bytes.len() > MAX_FILE_BYTES {
            problems.push(Problem {
                file: *file,
                line: 0,
                field: None,
                reason: "file_too_large",
            });
        }
    }
    if !valid_transmission_id(transmission_id) {
        problems.push(Problem {
            file: files.first().map_or(FileKind::Setai, |f| f.1),
            line: 0,
            field: Some("transmission_id"),
            reason: "format",
        });
    }
    if !problems.is_empty() {
        return Err(Rejected { problems });
    }
    let texts: Vec<String> = files
        .iter()
        .map(|(bytes, file, _)| decode(bytes, encoding, *file, &mut problems))
        .collect();
    if !problems.is_empty() {
        return Err(Rejected { problems });
    }
    let rows: Vec<Vec<Row>> = files
        .iter()
        .zip(&texts)
        .map(|((_, file, header), text)| rows(text, header, *file, &mut problems))
        .collect();
    if problems
        .iter()
        .any(|p| p.line == 0 || matches!(p.reason, "header" | "csv_syntax"))
    {
        return Err(Rejected { problems });
    }
    Ok((rows, problems))
}

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

/// The households of a 世帯ファイル as drafts, by 世帯番号 (a refused row stays `None` so
/// its persons are not reported twice).
struct Drafts {
    list: Vec<Option<SetaiDraft>>,
    index: BTreeMap<String, usize>,
}

impl Drafts {
    fn of(rows: &[Row], ctx: &Context<'_>, problems: &mut Vec<Problem>) -> Drafts {
        let mut d = Drafts {
            list: Vec::new(),
            index: BTreeMap::new(),
        };
        for row in rows {
            let draft = setai_row(row, ctx, problems);
            let setai_no = row.fields.get(3).cloned().unwrap_or_default();
            if valid_setai_no(&setai_no) {
                if d.index.contains_key(&setai_no) {
                    problems.push(Problem {
                        file: FileKind::Setai,
                        line: row.line,
                        field: Some("setai_no"),
                        reason: "duplicate",
                    });
                    continue;
                }
                d.index.insert(setai_no, d.list.len());
            }
            d.list.push(draft);
        }
        d
    }

    /// Each household's 異動年月日, by 世帯番号 (a person's dates are checked against it).
    fn ido_dates(&self) -> BTreeMap<String, Option<i32>> {
        self.index
            .iter()
            .map(|(k, &i)| {
                let ido = self
                    .list
                    .get(i)
                    .and_then(Option::as_ref)
                    .and_then(|x| x.ido_date);
                (k.clone(), ido)
            })
            .collect()
    }

    /// Files each person row under its household; returns the households with a refused
    /// person row, whose household-level checks would only echo that row's problem.
    fn add_persons(
        &mut self,
        rows: &[Row],
        ctx: &Context<'_>,
        problems: &mut Vec<Problem>,
    ) -> BTreeSet<String> {
        let ido_dates = self.ido_dates();
        let mut seen_kojin: BTreeSet<KojinNo> = BTreeSet::new();
        let mut incomplete: BTreeSet<String> = BTreeSet::new();
        let mut seen_card: BTreeSet<(String, String, String)> = BTreeSet::new();
        for row in rows {
            let Some((setai_no, kojin, person, dates)) = kojin_row(row, ctx, &ido_dates, problems)
            else {
                if let Some(s) = row.fields.get(2) {
                    incomplete.insert(s.clone());
                }
                continue;
            };
            let at = |field, reason| Problem {
                file: FileKind::Kojin,
                line: row.line,
                field: Some(field),
                reason,
            };
            if !seen_kojin.insert(kojin.clone()) {
                problems.push(at("kojin_no", "duplicate"));
                incomplete.insert(setai_no);
                continue;
            }
            let Some(draft) = self
                .index
                .get(&setai_no)
                .and_then(|&i| self.list.get_mut(i))
                .and_then(Option::as_mut)
            else {
                continue; // its household row had problems, already reported
            };
            if !person.giji_head {
                let kigo = person
                    .kigo
                    .clone()
                    .or_else(|| draft.household.kigo.clone())
                    .unwrap_or_default();
                let card = (
                    kigo,
                    person.bango.clone().unwrap_or_default(),
                    person.edaban.clone().unwrap_or_default(),
                );
                if !seen_card.insert(card) {
                    problems.push(at("bango", "duplicate_card_number"));
                    incomplete.insert(setai_no);
                    continue;
                }
            }
            draft.persons.push((row.line, kojin, person, dates));
        }
        incomplete
    }
}

/// The household rules (docs/domain.md §9.3 items 3–4) on one complete draft: the
/// household, or `None` with its problems added.
fn household_rules(
    draft: SetaiDraft,
    ctx: &Context<'_>,
    problems: &mut Vec<Problem>,
) -> Option<Household> {
    let before = problems.len();
    let at = |field, reason| Problem {
        file: FileKind::Setai,
        line: draft.line,
        field,
        reason,
    };
    // Every member of the previous snapshot is sent again (docs/domain.md §4.5, issue 27
    // item 6): one problem per member missing, on the household's line.
    if let Some(before) = (ctx.previous_members)(&draft.household.setai_no) {
        for kojin in &before {
            let sent = draft
                .persons
                .iter()
                .any(|(_, k, _, _)| k.expose() == kojin.as_bytes());
            if !sent {
                problems.push(at(Some("person_rows"), "member_missing"));
            }
        }
    }
    if draft.person_rows != Some(draft.persons.len() as u32) {
        problems.push(at(Some("person_rows"), "person_rows_mismatch"));
    }
    head_rules(&draft, problems);
    for (line, _, p, _) in &draft.persons {
        if p.giji_head && p.zokugara != "01" {
            problems.push(Problem {
                file: FileKind::Kojin,
                line: *line,
                field: Some("giji_head"),
                reason: "giji_head_not_head",
            });
        }
    }
    if !draft.persons.iter().any(|(_, _, p, _)| !p.giji_head) {
        problems.push(at(None, "no_insured"));
    }
    if problems.len() > before {
        return None;
    }
    let mut h = draft.household.clone();
    h.head_kojin_no = draft
        .head_kojin_no
        .as_ref()
        .map(|k| String::from_utf8_lossy(k.expose()).into_owned())
        .unwrap_or_default();
    h.persons = draft.persons.iter().map(|(_, _, p, _)| p.clone()).collect();
    Some(h)
}

/// One head per household, the one the 世帯ファイル names, insured (普通, head_kubun 1) with
/// an open 資格 or a 擬制世帯主 (2) without one.
fn head_rules(draft: &SetaiDraft, problems: &mut Vec<Problem>) {
    let at = |field, reason| Problem {
        file: FileKind::Setai,
        line: draft.line,
        field,
        reason,
    };
    let heads: Vec<_> = draft
        .persons
        .iter()
        .filter(|(_, _, p, _)| p.zokugara == "01")
        .collect();
    let [(_, kojin, head, dates)] = heads.as_slice() else {
        problems.push(at(
            None,
            if heads.is_empty() {
                "no_head"
            } else {
                "multiple_heads"
            },
        ));
        return;
    };
    if draft.head_kojin_no.as_ref() != Some(kojin) {
        problems.push(at(Some("head_kojin_no"), "head_kojin_no_mismatch"));
    }
    match draft.head_kubun.as_deref() {
        Some("1") if head.giji_head => problems.push(at(Some("head_kubun"), "head_not_insured")),
        // An insured head (普通) whose own 資格 has ended by the 異動年月日 is no longer
        // insured: the household needs another head or 擬制 (docs/domain.md §9.3 rule 4;
        // issue 27 item 6).
        Some("1")
            if dates
                .soshitsu
                .zip(draft.ido_date)
                .is_some_and(|(lost, ido)| lost <= ido) =>
        {
            problems.push(at(Some("head_kubun"), "head_shikaku_closed"));
        }
        Some("2") if !head.giji_head => problems.push(at(Some("head_kubun"), "head_not_giji")),
        Some("2") => {
            let open = match (dates.shutoku, draft.ido_date) {
                (Some(s), Some(ido)) => s <= ido && dates.soshitsu.is_none_or(|l| l > ido),
                _ => false,
            };
            if open {
                problems.push(at(Some("head_kubun"), "giji_head_has_shikaku"));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
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
