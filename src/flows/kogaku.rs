//! Flow 4 input: the 高額該当情報ファイル (docs/domain.md §9.4, layout `kogaku-v1`): per household
//! and care month, whether 高額療養費 was paid and how it counts. Validated completely, then
//! stored as one atomic batch: a sealed 高額該当 record (kind 0x0020) per household with all
//! its months in this file, the index `K` (世帯番号 → records), the transmission claim and
//! the access record. One bad row rejects the whole file; problems name line, column and
//! reason, never a value.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::tasukai::{CareMonth, KogakuMonth, Shikyu};
use crate::flows::import::{Claimed, ImportError, ImportOutcome, Importer, store_claimed};
use crate::flows::transmission::{
    Check, Encoding, FileKind, Problem, Rejected, Row, read_files, valid_setai_no,
};
use crate::ledger::{Kind, PartitionId};
use crate::store::{Claim, IndexKind, NewEntry, Store};

/// Column names of the 高額該当情報ファイル, in order.
pub const KOGAKU_HEADER: [&str; 7] = [
    "layout",
    "transmission_id",
    "hokensha_no",
    "setai_no",
    "shinryo_ym",
    "shikyu_kubun",
    "tasukai_nashi",
];

/// One month of a household's record, as stored (sealed payload, JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthRecord {
    /// `YYYY-MM`.
    pub shinryo_ym: String,
    /// 1 household 支給 (counts), 2 外来特例 only (does not).
    pub shikyu_kubun: u8,
    /// 70+ 低所得 that month: no 多数回.
    pub tasukai_nashi: bool,
}

/// The sealed payload of a 高額該当 record: one household's months from one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KogakuRecord {
    pub schema: String,
    pub transmission_id: String,
    pub setai_no: String,
    /// Ascending, one per month.
    pub months: Vec<MonthRecord>,
}

/// Payload schema name of [`KogakuRecord`].
pub const SCHEMA: &str = "kogaku-record-v1";

impl KogakuRecord {
    /// The months as the rule engine reads them.
    pub fn months(&self) -> Vec<KogakuMonth> {
        self.months
            .iter()
            .filter_map(|m| {
                Some(KogakuMonth {
                    month: CareMonth::parse(&m.shinryo_ym)?,
                    shikyu: match m.shikyu_kubun {
                        1 => Shikyu::Household,
                        _ => Shikyu::GairaiTokureiOnly,
                    },
                    low_income: m.tasukai_nashi,
                })
            })
            .collect()
    }
}

/// The claim id of a 高額該当 transmission: kept apart from flow-5 ids (`:` is not allowed
/// in a transmission id, so the two cannot collide).
pub fn claim_id(transmission_id: &str) -> String {
    format!("kogaku:{transmission_id}")
}

/// Validates a 高額該当情報ファイル for `partition`: every problem, or the households in file
/// order.
pub fn validate(
    bytes: &[u8],
    partition: &PartitionId,
    transmission_id: &str,
    encoding: Encoding,
) -> Result<Vec<KogakuRecord>, Rejected> {
    let file = FileKind::Kogaku;
    let (files, mut problems) =
        read_files(&[(bytes, file, &KOGAKU_HEADER)], transmission_id, encoding)?;
    let rows = files.into_iter().next().unwrap_or_default();
    let mut households: BTreeMap<String, (usize, BTreeMap<CareMonth, MonthRecord>)> =
        BTreeMap::new();
    for row in &rows {
        let Some((setai_no, month, record)) =
            kogaku_row(row, partition, transmission_id, &mut problems)
        else {
            continue;
        };
        let order = households.len();
        let (_, months) = households
            .entry(setai_no)
            .or_insert_with(|| (order, BTreeMap::new()));
        if months.contains_key(&month) {
            problems.push(Problem {
                file,
                line: row.line,
                field: Some("shinryo_ym"),
                reason: "duplicate",
            });
            continue;
        }
        months.insert(month, record);
    }
    if !problems.is_empty() {
        return Err(Rejected { problems });
    }
    let mut out: Vec<(usize, KogakuRecord)> = households
        .into_iter()
        .map(|(setai_no, (order, months))| {
            (
                order,
                KogakuRecord {
                    schema: SCHEMA.to_owned(),
                    transmission_id: transmission_id.to_owned(),
                    setai_no,
                    months: months.into_values().collect(),
                },
            )
        })
        .collect();
    out.sort_by_key(|(order, _)| *order);
    Ok(out.into_iter().map(|(_, r)| r).collect())
}

/// One row's fields: its 世帯番号, month and record, or `None` with its problems added.
fn kogaku_row(
    row: &Row,
    partition: &PartitionId,
    transmission_id: &str,
    problems: &mut Vec<Problem>,
) -> Option<(String, CareMonth, MonthRecord)> {
    let mut c = Check {
        file: FileKind::Kogaku,
        row,
        header: &KOGAKU_HEADER,
        problems,
    };
    let before = c.problems.len();
    c.layout_and_id("kogaku-v1", transmission_id);
    c.hokensha_no(partition);
    let setai_no = c.raw("setai_no").to_owned();
    if !valid_setai_no(&setai_no) {
        c.fail("setai_no", "format");
    }
    let month = match c.raw("shinryo_ym") {
        "" => {
            c.fail("shinryo_ym", "missing");
            None
        }
        v => {
            let m = CareMonth::parse(v);
            if m.is_none() {
                c.fail("shinryo_ym", "month");
            }
            m
        }
    };
    let shikyu = c.code("shikyu_kubun", &["1", "2"], true);
    let nashi = c.code("tasukai_nashi", &["0", "1"], true);
    if c.problems.len() != before {
        return None;
    }
    let (month, shikyu, nashi) = (month?, shikyu?, nashi?);
    let record = MonthRecord {
        shinryo_ym: month.to_string(),
        shikyu_kubun: if shikyu == "1" { 1 } else { 2 },
        tasukai_nashi: nashi == "1",
    };
    Some((setai_no, month, record))
}

/// Validates and stores a 高額該当情報ファイル (blocking; call from the blocking pool). The
/// same transmission id with the same content answers the first result; with other content
/// it is a conflict.
pub fn import(
    store: &Store,
    partition: &PartitionId,
    transmission_id: &str,
    encoding: Encoding,
    bytes: &[u8],
    who: &Importer,
) -> Result<ImportOutcome, ImportError> {
    let key = store.index_key(partition)?;
    let digest = key.token_parts(
        "kogaku",
        &[
            encoding.name().as_bytes(),
            &(bytes.len() as u64).to_be_bytes(),
            bytes,
        ],
    );
    let claim = claim_id(transmission_id);
    if let Some(t) = store.transmission(partition, &claim)? {
        return crate::flows::import::replay(store, partition, transmission_id, &t, digest);
    }
    let records =
        validate(bytes, partition, transmission_id, encoding).map_err(ImportError::Rejected)?;
    let mut entries = Vec::with_capacity(records.len());
    for r in &records {
        let payload = zeroize::Zeroizing::new(serde_json::to_vec(r).map_err(ImportError::Encode)?);
        // Valid from the first day of the latest month in the file.
        let valid_from = r
            .months
            .last()
            .and_then(|m| CareMonth::parse(&m.shinryo_ym))
            .map_or(0, |m| {
                crate::ledger::days_from_civil(i32::from(m.year()), u32::from(m.month()), 1)
            });
        entries.push(
            NewEntry::new(Kind::KOGAKU_RECORD, valid_from, None, payload.to_vec())
                .map_err(ImportError::Append)?
                .with_index(IndexKind::Kogaku, r.setai_no.as_bytes().to_vec())
                .map_err(ImportError::Append)?,
        );
    }
    let households = records.iter().map(|r| r.setai_no.clone()).collect();
    store_claimed(
        store,
        partition,
        Claimed {
            transmission_id,
            claim: Claim {
                id: claim,
                digest,
                households,
            },
            access: who.access("kogaku_import", Vec::new(), 0, 0),
            entries,
        },
    )
}
