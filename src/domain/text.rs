//! Text rules of the file layouts (docs/domain.md §6.3, §9): character classes, widths, dates.

use crate::ledger::days_from_civil;

/// Why a text field was refused. Codes are stable; messages never carry the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TextError {
    #[error("control character")]
    Control,
    #[error("private-use (外字) character")]
    PrivateUse,
    #[error("longer than {0} characters")]
    TooLong(usize),
    #[error("mixes half-width and full-width characters")]
    MixedWidth,
    #[error("full-width space")]
    FullWidthSpace,
    #[error("not full-width katakana")]
    NotKatakana,
}

impl TextError {
    pub fn code(self) -> &'static str {
        match self {
            TextError::Control => "control_character",
            TextError::PrivateUse => "private_use_character",
            TextError::TooLong(_) => "too_long",
            TextError::MixedWidth => "mixed_width",
            TextError::FullWidthSpace => "full_width_space",
            TextError::NotKatakana => "not_katakana",
        }
    }
}

fn private_use(c: char) -> bool {
    matches!(u32::from(c), 0xE000..=0xF8FF | 0xF0000..=0xFFFFD | 0x100000..=0x10FFFD)
}

/// Every text field: no control or private-use characters, at most `max` characters.
pub fn check_text(s: &str, max: usize) -> Result<(), TextError> {
    if s.chars().any(char::is_control) {
        return Err(TextError::Control);
    }
    if s.chars().any(private_use) {
        return Err(TextError::PrivateUse);
    }
    if s.chars().count() > max {
        return Err(TextError::TooLong(max));
    }
    Ok(())
}

fn half_width(c: char) -> bool {
    c.is_ascii() || matches!(u32::from(c), 0xFF61..=0xFF9F)
}

/// 記号 and 番号: all half-width or all full-width, no full-width space (docs/domain.md §6.3).
pub fn check_kigo_bango(s: &str, max: usize) -> Result<(), TextError> {
    check_text(s, max)?;
    if s.contains('\u{3000}') {
        return Err(TextError::FullWidthSpace);
    }
    let half = s.chars().filter(|c| half_width(*c)).count();
    if half != 0 && half != s.chars().count() {
        return Err(TextError::MixedWidth);
    }
    Ok(())
}

/// 氏名カナ: full-width katakana, ー and (half- or full-width) spaces.
pub fn check_kana(s: &str, max: usize) -> Result<(), TextError> {
    check_text(s, max)?;
    let ok = s
        .chars()
        .all(|c| matches!(c, '\u{30A1}'..='\u{30F6}' | 'ー' | ' ' | '\u{3000}'));
    if ok {
        Ok(())
    } else {
        Err(TextError::NotKatakana)
    }
}

/// A civil date `YYYY-MM-DD` (ISO 8601, Gregorian, four-digit year), as days since
/// 1970-01-01. 和暦 and other forms are refused.
pub fn parse_date(s: &str) -> Option<i32> {
    let b = s.as_bytes();
    if b.len() != 10 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&m) || d == 0 || y < 1868 {
        return None;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in_month = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if d > days_in_month {
        return None;
    }
    Some(days_from_civil(i32::try_from(y).ok()?, m, d))
}

/// The `YYYY-MM-DD` text of a day number.
pub fn format_date(days: i32) -> String {
    let (y, m, d) = crate::ledger::civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_strict() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(
            parse_date("2024-02-29").map(format_date).as_deref(),
            Some("2024-02-29")
        );
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-00-10",
            "2024-04-31",
            "R6.4.1",
            "2024/04/01",
            "2024-4-1",
            "２０２４-04-01",
            "",
            "2024-04-01T00:00",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    /// docs/domain.md §6.3: widths of 記号 and 番号.
    #[test]
    fn width_rules() {
        assert!(check_kigo_bango("あいう", 20).is_ok());
        assert!(check_kigo_bango("１８７", 20).is_ok());
        assert!(check_kigo_bango("187", 20).is_ok());
        assert_eq!(check_kigo_bango("ab１２", 20), Err(TextError::MixedWidth));
        assert_eq!(
            check_kigo_bango("あ\u{3000}い", 20),
            Err(TextError::FullWidthSpace)
        );
        assert_eq!(check_text("a\u{7}b", 20), Err(TextError::Control));
        assert_eq!(check_text("\u{E000}", 20), Err(TextError::PrivateUse));
        assert_eq!(
            check_text(&"あ".repeat(21), 20),
            Err(TextError::TooLong(20))
        );
        assert!(check_kana("ヤマダ タロウ", 100).is_ok());
        assert_eq!(check_kana("やまだ", 100), Err(TextError::NotKatakana));
    }
}
