//! 個人番号 (My Number), docs/domain.md §6.1. A protected identifier: no `Display`, a redacted
//! `Debug`, zeroized on drop, and errors never carry the value.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// A 12-digit 個人番号 with a valid check digit.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Zeroize, ZeroizeOnDrop)]
pub struct KojinNo([u8; 12]);

impl fmt::Debug for KojinNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KojinNo(<redacted>)")
    }
}

/// Why a 個人番号 was refused (never the value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KojinNoError {
    #[error("must be 12 ASCII digits")]
    Format,
    #[error("check digit is wrong")]
    CheckDigit,
}

impl KojinNoError {
    /// Stable reason code for error lists.
    pub fn code(self) -> &'static str {
        match self {
            KojinNoError::Format => "format",
            KojinNoError::CheckDigit => "check_digit",
        }
    }
}

const WEIGHTS: [u32; 11] = [6, 5, 4, 3, 2, 7, 6, 5, 4, 3, 2];

impl KojinNo {
    pub fn parse(text: &str) -> Result<Self, KojinNoError> {
        let bytes = text.as_bytes();
        let digits: [u8; 12] = bytes.try_into().map_err(|_| KojinNoError::Format)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return Err(KojinNoError::Format);
        }
        let sum: u32 = digits
            .iter()
            .zip(WEIGHTS)
            .map(|(d, w)| u32::from(d - b'0') * w)
            .sum();
        let r = sum % 11;
        let check = if r <= 1 { 0 } else { 11 - r };
        if digits.get(11).map(|d| u32::from(d - b'0')) != Some(check) {
            return Err(KojinNoError::CheckDigit);
        }
        Ok(KojinNo(digits))
    }

    /// The digits, for sealing and for the blind index. Keep the borrow short.
    pub fn expose(&self) -> &[u8; 12] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/domain.md §6.1 vectors.
    #[test]
    fn domain_vectors() {
        for ok in [
            "983205673214",
            "123456789018",
            "123456789050",
            "123456789000",
            "314159265352",
        ] {
            assert!(KojinNo::parse(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("983205673210", KojinNoError::CheckDigit),
            ("123456789012", KojinNoError::CheckDigit),
            ("98320567321", KojinNoError::Format),
            ("98320567321４", KojinNoError::Format),
            ("９８３２０５６７３２１４", KojinNoError::Format),
            ("", KojinNoError::Format),
        ] {
            assert_eq!(KojinNo::parse(bad), Err(why), "{bad}");
        }
        assert_eq!(
            format!("{:?}", KojinNo::parse("983205673214").unwrap()),
            "KojinNo(<redacted>)"
        );
    }
}
