//! The 高額該当回数引継情報連携ファイル (hikitsugi-v2, docs/format.md §5b) B downloads.

use super::*;

/// Column names of the 高額該当回数引継情報連携ファイル, layout hikitsugi-v2 (docs/format.md
/// §5b): one row per carry-over row, 新規, 追加 or 取消.
pub const HIKITSUGI_HEADER: [&str; 12] = [
    "layout",
    "row_id",
    "row_kind",
    "decision_id",
    "old_hokensha_no",
    "old_setai_no",
    "new_hokensha_no",
    "new_setai_no",
    "ido_date",
    "months",
    "count",
    "confirmed_at",
];

/// The `row_kind` code of the file: 1 新規, 2 追加, 3 取消.
fn row_kind_code(kind: &str) -> &'static str {
    match kind {
        ROW_ADD => "2",
        ROW_CANCEL => "3",
        _ => "1",
    }
}

/// The 連携ファイル in the requested encoding (UTF-8, or CP932 via encoding_rs; every value
/// of the layout is ASCII, so nothing is unmappable).
pub fn hikitsugi_file(
    states: &[CandidateState],
    encoding: crate::flows::transmission::Encoding,
) -> Vec<u8> {
    let text = hikitsugi_csv(states);
    match encoding {
        crate::flows::transmission::Encoding::Utf8 => text.into_bytes(),
        crate::flows::transmission::Encoding::Cp932 => {
            encoding_rs::SHIFT_JIS.encode(&text).0.into_owned()
        }
    }
}

/// The 連携ファイル (hikitsugi-v2, CRLF) of every carry-over row in `states`, in log order.
/// `row_id` (`<B>:<seq of the row>`) is unique and stable, so B's system imports each row
/// once however often it downloads the file.
pub fn hikitsugi_csv(states: &[CandidateState]) -> String {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    let _ = w.write_record(HIKITSUGI_HEADER);
    let mut rows: Vec<&(u64, CarryOver)> = states.iter().flat_map(|s| &s.rows).collect();
    rows.sort_by_key(|(seq, _)| *seq);
    for (seq, c) in rows {
        let row_id = format!("{}:{seq}", c.new_hokensha_no);
        let count = c.count.to_string();
        let months = c.months.join(";");
        let _ = w.write_record([
            "hikitsugi-v2",
            &row_id,
            row_kind_code(&c.row_kind),
            &c.decision_id,
            &c.old_hokensha_no,
            &c.old_setai_no,
            &c.new_hokensha_no,
            &c.new_setai_no,
            &c.ido_date,
            &months,
            &count,
            &c.confirmed_at,
        ]);
    }
    w.into_inner()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}
