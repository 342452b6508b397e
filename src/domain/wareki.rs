//! 和暦 (Japanese era dates) for what a municipality prints and shows: 令和6年11月1日.
//! Municipal forms write dates in the era calendar; the files and the API keep ISO 8601
//! (`YYYY-MM-DD`), and this module only formats.
//!
//! Era boundaries (first day of each era), from the 元号 as promulgated: 明治 1868-01-25
//! (for the Gregorian dates this code handles, 明治6年 = 1873 onward is the solar calendar),
//! 大正 1912-07-30, 昭和 1926-12-25, 平成 1989-01-08 (元号を改める政令, 昭和64年政令第1号),
//! 令和 2019-05-01 (元号を改める政令, 平成31年政令第143号). The first year of an era is
//! written 元年, as on municipal forms (令和元年5月1日).

use crate::domain::text::parse_date;

/// The eras, newest first: (name, first day `YYYY-MM-DD`).
const ERAS: [(&str, &str); 5] = [
    ("令和", "2019-05-01"),
    ("平成", "1989-01-08"),
    ("昭和", "1926-12-25"),
    ("大正", "1912-07-30"),
    ("明治", "1873-01-01"),
];

/// `YYYY-MM-DD` in 和暦 (`令和6年11月1日`); `None` for text that is not such a date or a date
/// before 明治6年 (the solar calendar).
pub fn wareki(iso: &str) -> Option<String> {
    let day = parse_date(iso)?;
    let (name, start) = ERAS
        .iter()
        .find_map(|(name, start)| parse_date(start).filter(|s| day >= *s).map(|s| (*name, s)))?;
    let (y, m, d) = crate::ledger::civil_from_days(day);
    let (era_first_year, _, _) = crate::ledger::civil_from_days(start);
    // 明治 counts from 1868 although this table starts it at 1873 (the solar calendar).
    let base = if name == "明治" {
        1868
    } else {
        era_first_year
    };
    let n = y - base + 1;
    let year = if n == 1 {
        "元".to_owned()
    } else {
        n.to_string()
    };
    Some(format!("{name}{year}年{m}月{d}日"))
}

/// A date as a municipal form shows it: 和暦 with the ISO date after it, or the text as it
/// is when it is not a date.
pub fn form_date(iso: &str) -> String {
    match wareki(iso) {
        Some(w) => format!("{w}（{iso}）"),
        None => iso.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answers at each era's boundary (the day before and the first day), 元年, and
    /// must-fail inputs.
    #[test]
    fn era_dates() {
        for (iso, want) in [
            ("2024-11-01", Some("令和6年11月1日")),
            ("2019-05-01", Some("令和元年5月1日")),
            ("2019-04-30", Some("平成31年4月30日")),
            ("2020-01-01", Some("令和2年1月1日")),
            ("1989-01-08", Some("平成元年1月8日")),
            ("1989-01-07", Some("昭和64年1月7日")),
            ("1926-12-25", Some("昭和元年12月25日")),
            ("1926-12-24", Some("大正15年12月24日")),
            ("1912-07-30", Some("大正元年7月30日")),
            ("1912-07-29", Some("明治45年7月29日")),
            ("1873-01-01", Some("明治6年1月1日")),
            ("1872-12-31", None),
            ("2024-02-30", None),
            ("R6.11.1", None),
            ("", None),
        ] {
            assert_eq!(wareki(iso).as_deref(), want, "{iso}");
        }
        assert_eq!(form_date("2024-11-01"), "令和6年11月1日（2024-11-01）");
        assert_eq!(form_date("—"), "—");
    }
}
