//! 保険者番号 (insurer number), docs/domain.md §6.2: the partition id of a 委託区画.

use crate::ledger::PartitionId;

/// A validated 保険者番号 in canonical form: 6 digits for 市町村国保, 8 for other insurers.
/// `"00"` followed by 6 digits is the 市町村国保 number written in 8 digits and becomes 6.
///
/// A 保険者番号 alone is not personal data, so it has `Display`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InsurerNumber(PartitionId);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InsurerNumberError {
    #[error("保険者番号 must be 6 or 8 ASCII digits, got {0} characters")]
    Length(usize),
    #[error("保険者番号 must be ASCII digits")]
    NotDigits,
    #[error("保険者番号 check digit is wrong")]
    CheckDigit,
}

/// Check digit over the body digits: from the rightmost body digit multiply by 2, 1, 2, 1…,
/// add the digits of each product; check = 10 − (sum mod 10), 10 → 0.
fn check_digit(body: &[u8]) -> u8 {
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let p = u32::from(d - b'0') * if i % 2 == 0 { 2 } else { 1 };
            p / 10 + p % 10
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

impl InsurerNumber {
    pub fn parse(text: &str) -> Result<Self, InsurerNumberError> {
        let chars = text.chars().count();
        if chars != 6 && chars != 8 {
            return Err(InsurerNumberError::Length(chars));
        }
        if !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InsurerNumberError::NotDigits);
        }
        let bytes = text.as_bytes();
        let Some((&check, body)) = bytes.split_last() else {
            return Err(InsurerNumberError::Length(0));
        };
        if check_digit(body) != check - b'0' {
            return Err(InsurerNumberError::CheckDigit);
        }
        let canonical = match text.strip_prefix("00") {
            Some(six) if text.len() == 8 => six,
            _ => text,
        };
        let id = PartitionId::parse(canonical).map_err(|_| InsurerNumberError::NotDigits)?;
        Ok(InsurerNumber(id))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// 市町村国保 (6 digits) rather than another insurer (8 digits).
    pub fn is_municipal(&self) -> bool {
        self.0.as_str().len() == 6
    }

    /// The 都道府県 code: digits 1–2 of a 6-digit number, 3–4 of an 8-digit one.
    pub fn prefecture(&self) -> &str {
        let range = if self.is_municipal() { 0..2 } else { 2..4 };
        self.0.as_str().get(range).unwrap_or_default()
    }

    /// A 市町村国保 of prefecture `code`: what a continuity operator (the prefecture's
    /// 国保連合会, flow 4) may reach. 国保組合 and other insurers of the prefecture are not
    /// part of flow 4 (docs/domain.md §4) and stay out of its reach.
    pub fn is_municipal_in(&self, code: &str) -> bool {
        self.is_municipal() && self.prefecture() == code
    }

    pub fn partition_id(&self) -> PartitionId {
        self.0.clone()
    }
}

impl std::fmt::Display for InsurerNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// The 47 都道府県 by code (JIS X 0401, the codes 保険者番号 begin with; 01 北海道 … 47
/// 沖縄県), for showing a prefecture's name beside its code.
const PREFECTURES: [&str; 47] = [
    "北海道",
    "青森県",
    "岩手県",
    "宮城県",
    "秋田県",
    "山形県",
    "福島県",
    "茨城県",
    "栃木県",
    "群馬県",
    "埼玉県",
    "千葉県",
    "東京都",
    "神奈川県",
    "新潟県",
    "富山県",
    "石川県",
    "福井県",
    "山梨県",
    "長野県",
    "岐阜県",
    "静岡県",
    "愛知県",
    "三重県",
    "滋賀県",
    "京都府",
    "大阪府",
    "兵庫県",
    "奈良県",
    "和歌山県",
    "鳥取県",
    "島根県",
    "岡山県",
    "広島県",
    "山口県",
    "徳島県",
    "香川県",
    "愛媛県",
    "高知県",
    "福岡県",
    "佐賀県",
    "長崎県",
    "熊本県",
    "大分県",
    "宮崎県",
    "鹿児島県",
    "沖縄県",
];

/// The name of prefecture `code` (`13` → 東京都); `None` for anything but 01–47.
pub fn prefecture_name(code: &str) -> Option<&'static str> {
    if code.len() != 2 {
        return None;
    }
    let n: usize = code.parse().ok()?;
    PREFECTURES.get(n.checked_sub(1)?).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// JIS X 0401: the first, a middle and the last code; must-fail rows.
    #[test]
    fn prefecture_names() {
        for (code, want) in [
            ("01", Some("北海道")),
            ("13", Some("東京都")),
            ("27", Some("大阪府")),
            ("47", Some("沖縄県")),
            ("00", None),
            ("48", None),
            ("1", None),
            ("013", None),
            ("ab", None),
        ] {
            assert_eq!(prefecture_name(code), want, "{code}");
        }
    }

    /// docs/domain.md §6.2 vectors (synthetic).
    #[test]
    fn domain_vectors() {
        for (input, want) in [
            ("131011", Ok("131011")),
            ("131010", Err(InsurerNumberError::CheckDigit)),
            ("380014", Ok("380014")),
            ("470351", Ok("470351")),
            ("33120015", Ok("33120015")),
            ("33120010", Err(InsurerNumberError::CheckDigit)),
            ("06139992", Ok("06139992")),
            ("39123450", Ok("39123450")),
            ("00131011", Ok("131011")),
            ("13101", Err(InsurerNumberError::Length(5))),
            ("1310111", Err(InsurerNumberError::Length(7))),
            ("13101１", Err(InsurerNumberError::NotDigits)),
        ] {
            let got = InsurerNumber::parse(input);
            match want {
                Ok(canon) => assert_eq!(
                    got.map(|n| n.as_str().to_owned()),
                    Ok(canon.to_owned()),
                    "{input}"
                ),
                Err(e) => assert_eq!(got, Err(e), "{input}"),
            }
        }
    }

    /// Known answers: the continuity operator's reach (issue 26: it covered 国保組合 too).
    #[test]
    fn municipal_in_a_prefecture() {
        for (number, code, want) in [
            ("131011", "13", true),
            ("131011", "38", false),
            ("33130014", "13", false), // a 国保組合 of Tokyo (法別 33)
            ("33120015", "12", false),
            ("380014", "38", true),
        ] {
            assert_eq!(
                InsurerNumber::parse(number).unwrap().is_municipal_in(code),
                want,
                "{number} in {code}"
            );
        }
    }

    #[test]
    fn prefecture_codes() {
        assert_eq!(InsurerNumber::parse("131011").unwrap().prefecture(), "13");
        assert_eq!(InsurerNumber::parse("33120015").unwrap().prefecture(), "12");
    }
}
