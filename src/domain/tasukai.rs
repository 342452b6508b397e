//! 多数回該当 (docs/domain.md §5): whether a care month gets the lower 高額療養費 cap, and which of
//! the old municipality's months carry over to a continuing household. Pure functions over
//! months; the table of vectors below is docs/domain.md §5's, plus edge cases.

use std::collections::BTreeSet;

/// A care month (診療年月), `YYYY-MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CareMonth(u32);

impl CareMonth {
    /// 2018-04 (平成30年4月診療分): months before it never carry between municipalities.
    pub const CARRY_FLOOR: CareMonth = CareMonth(2018 * 12 + 3);

    pub fn new(year: u16, month: u8) -> Option<CareMonth> {
        (1..=12)
            .contains(&month)
            .then(|| CareMonth(u32::from(year) * 12 + u32::from(month) - 1))
    }

    /// Strict `YYYY-MM` (ISO 8601, Gregorian; 和暦 is refused).
    pub fn parse(text: &str) -> Option<CareMonth> {
        let (y, m) = text.split_once('-')?;
        if y.len() != 4 || m.len() != 2 || !(y.bytes().chain(m.bytes())).all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let year: u16 = y.parse().ok()?;
        if year < 1900 {
            return None;
        }
        CareMonth::new(year, m.parse().ok()?)
    }

    pub fn year(self) -> u16 {
        u16::try_from(self.0 / 12).unwrap_or(u16::MAX)
    }

    pub fn month(self) -> u8 {
        u8::try_from(self.0 % 12 + 1).unwrap_or(0)
    }

    /// `n` months later (negative: earlier); `None` outside the representable range.
    pub fn plus(self, n: i32) -> Option<CareMonth> {
        let v = i64::from(self.0) + i64::from(n);
        u32::try_from(v).ok().map(CareMonth)
    }

    /// The month of a civil date given as days since 1970-01-01.
    pub fn of_days(days: i32) -> CareMonth {
        let (y, m, _) = crate::ledger::civil_from_days(days);
        CareMonth(u32::try_from(y).unwrap_or(0) * 12 + m - 1)
    }
}

impl std::fmt::Display for CareMonth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year(), self.month())
    }
}

/// `shikyu_kubun` of a 高額該当 month (docs/domain.md §9.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shikyu {
    /// 1: a household-level 支給 (counter discounts under 限度額適用認定 too): counts.
    Household,
    /// 2: only the 70+ 外来特例 (outpatient cap): does not count.
    GairaiTokureiOnly,
}

/// One month of a household's 高額該当 record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KogakuMonth {
    pub month: CareMonth,
    pub shikyu: Shikyu,
    /// `tasukai_nashi`: a 70+ 低所得 (Ⅱ/Ⅰ) month, which has no 多数回 at all.
    pub low_income: bool,
}

/// The months that count toward 多数回: household 支給 months, each once.
pub fn counting_months(months: &[KogakuMonth]) -> BTreeSet<CareMonth> {
    months
        .iter()
        .filter(|m| m.shikyu == Shikyu::Household)
        .map(|m| m.month)
        .collect()
}

/// How the household came to the new municipality.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// A same-prefecture move confirmed as 継続世帯: the old months carry over.
    Continuing,
    /// Same prefecture, continuity not confirmed (or decided against): nothing carries.
    NotContinuing,
    /// Moved in from another prefecture: the count resets.
    OutOfPrefecture,
}

/// The old municipality's months handed to the new one (docs/domain.md §9.5 `months`): counting
/// months from 2018-04 within 異動月 − 11 … 異動月, only for a continuing household.
pub fn carried_months(old: &[KogakuMonth], ido: CareMonth, how: Move) -> Vec<CareMonth> {
    if how != Move::Continuing {
        return Vec::new();
    }
    let Some(first) = ido.plus(-11) else {
        return Vec::new();
    };
    let first = first.max(CareMonth::CARRY_FLOOR);
    counting_months(old)
        .into_iter()
        .filter(|m| *m >= first && *m <= ido)
        .collect()
}

/// The result for one care month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tasukai {
    /// Counting months in M − 11 … M − 1.
    pub prior: usize,
    /// Whether M is 多数回 (the 4th or later 支給 month in 12): `prior ≥ 3`, unless M is a
    /// 70+ 低所得 month.
    pub tasukai: bool,
}

/// Whether care month `m` is 多数回, from the household's own months in the new
/// municipality and the months carried over to it.
pub fn tasukai_at(own: &[KogakuMonth], carried: &[CareMonth], m: CareMonth) -> Tasukai {
    let mut months = counting_months(own);
    months.extend(carried.iter().copied());
    let prior = match (m.plus(-11), m.plus(-1)) {
        (Some(from), Some(to)) => months.range(from..=to).count(),
        _ => 0,
    };
    let low_income = own.iter().any(|k| k.month == m && k.low_income);
    Tasukai {
        prior,
        tasukai: prior >= 3 && !low_income,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ym(s: &str) -> CareMonth {
        CareMonth::parse(s).unwrap()
    }

    fn household(months: &[&str]) -> Vec<KogakuMonth> {
        months
            .iter()
            .map(|m| KogakuMonth {
                month: ym(m),
                shikyu: Shikyu::Household,
                low_income: false,
            })
            .collect()
    }

    #[test]
    fn months_parse_strictly() {
        assert_eq!(ym("2024-05").to_string(), "2024-05");
        assert_eq!(ym("2024-01").plus(-1), Some(ym("2023-12")));
        assert_eq!(ym("2024-12").plus(1), Some(ym("2025-01")));
        for bad in [
            "2024-13",
            "2024-00",
            "2024-5",
            "24-05",
            "R6-05",
            "2024/05",
            "２０２４-05",
            "",
        ] {
            assert_eq!(CareMonth::parse(bad), None, "{bad}");
        }
        assert_eq!(
            CareMonth::of_days(crate::ledger::days_from_civil(2024, 2, 29)),
            ym("2024-02")
        );
    }

    /// docs/domain.md §5, rows 1–13, and edge cases. (own months, carried (old months, 異動月,
    /// move), M, prior, 多数回)
    #[test]
    fn rule_vectors() {
        struct V {
            name: &'static str,
            own: Vec<KogakuMonth>,
            carried: Vec<CareMonth>,
            m: &'static str,
            prior: usize,
            tasukai: bool,
        }
        let a_7 = household(&["2024-06", "2024-09"]);
        let a_9 = household(&["2017-11", "2018-01", "2018-03", "2018-05"]);
        let a_10 = household(&["2023-06", "2023-08", "2023-10"]);
        let mut seventy_11 = household(&["2024-01", "2024-03", "2024-05"]);
        for m in ["2024-02", "2024-04"] {
            seventy_11.push(KogakuMonth {
                month: ym(m),
                shikyu: Shikyu::GairaiTokureiOnly,
                low_income: false,
            });
        }
        let mut seventy_12 = household(&["2024-01", "2024-05"]);
        for m in ["2024-02", "2024-03", "2024-04"] {
            seventy_12.push(KogakuMonth {
                month: ym(m),
                shikyu: Shikyu::GairaiTokureiOnly,
                low_income: false,
            });
        }
        let low_13: Vec<KogakuMonth> = [
            "2024-01", "2024-02", "2024-03", "2024-04", "2024-05", "2024-06",
        ]
        .iter()
        .map(|m| KogakuMonth {
            month: ym(m),
            shikyu: Shikyu::Household,
            low_income: true,
        })
        .collect();
        let vectors = vec![
            V {
                name: "1 window example",
                own: household(&["2024-05", "2024-07", "2024-10"]),
                carried: vec![],
                m: "2025-02",
                prior: 3,
                tasukai: true,
            },
            V {
                name: "2 多数回 months count too",
                own: household(&["2024-05", "2024-07", "2024-10", "2025-02"]),
                carried: vec![],
                m: "2025-06",
                prior: 3,
                tasukai: true,
            },
            V {
                name: "3 M−11 = 2024-05 still inside",
                own: household(&["2024-05", "2024-07", "2024-10"]),
                carried: vec![],
                m: "2025-04",
                prior: 3,
                tasukai: true,
            },
            V {
                name: "4 2024-05 dropped out",
                own: household(&["2024-05", "2024-07", "2024-10"]),
                carried: vec![],
                m: "2025-06",
                prior: 2,
                tasukai: false,
            },
            V {
                name: "5 01 is M−11",
                own: household(&["2024-01", "2024-02", "2024-03"]),
                carried: vec![],
                m: "2024-12",
                prior: 3,
                tasukai: true,
            },
            V {
                name: "6 01 is M−12",
                own: household(&["2024-01", "2024-02", "2024-03"]),
                carried: vec![],
                m: "2025-01",
                prior: 2,
                tasukai: false,
            },
            V {
                name: "7 carried, confirmed",
                own: household(&["2025-01"]),
                carried: carried_months(&a_7, ym("2024-11"), Move::Continuing),
                m: "2025-03",
                prior: 3,
                tasukai: true,
            },
            V {
                name: "8 not confirmed",
                own: household(&["2025-01"]),
                carried: carried_months(&a_7, ym("2024-11"), Move::NotContinuing),
                m: "2025-03",
                prior: 1,
                tasukai: false,
            },
            V {
                name: "9 2018-04 floor",
                own: vec![],
                carried: carried_months(&a_9, ym("2018-07"), Move::Continuing),
                m: "2018-08",
                prior: 1,
                tasukai: false,
            },
            V {
                name: "10 out-of-prefecture reset",
                own: vec![],
                carried: carried_months(&a_10, ym("2023-11"), Move::OutOfPrefecture),
                m: "2024-01",
                prior: 0,
                tasukai: false,
            },
            V {
                name: "11 外来特例 months do not count",
                own: seventy_11,
                carried: vec![],
                m: "2024-06",
                prior: 3,
                tasukai: true,
            },
            V {
                name: "12 外来特例 only 02–04",
                own: seventy_12,
                carried: vec![],
                m: "2024-06",
                prior: 2,
                tasukai: false,
            },
            V {
                name: "13 70+ 低所得: no 多数回",
                own: low_13,
                carried: vec![],
                m: "2024-06",
                prior: 5,
                tasukai: false,
            },
            // Edge cases of this project.
            V {
                name: "the month itself does not count for itself",
                own: household(&["2024-04", "2024-05", "2024-06"]),
                carried: vec![],
                m: "2024-06",
                prior: 2,
                tasukai: false,
            },
            V {
                name: "a month counts once (own and carried)",
                own: household(&["2024-06", "2024-09"]),
                carried: vec![ym("2024-06"), ym("2024-09")],
                m: "2025-01",
                prior: 2,
                tasukai: false,
            },
            V {
                name: "year boundary",
                own: household(&["2023-12", "2024-01", "2024-02"]),
                carried: vec![],
                m: "2024-03",
                prior: 3,
                tasukai: true,
            },
            V {
                name: "no history",
                own: vec![],
                carried: vec![],
                m: "2024-03",
                prior: 0,
                tasukai: false,
            },
        ];
        for v in vectors {
            let r = tasukai_at(&v.own, &v.carried, ym(v.m));
            assert_eq!((r.prior, r.tasukai), (v.prior, v.tasukai), "{}", v.name);
        }
    }

    #[test]
    fn carried_months_follow_the_window_and_floor() {
        let a = household(&["2017-12", "2018-04", "2018-09", "2019-03", "2019-04"]);
        assert_eq!(
            carried_months(&a, ym("2019-03"), Move::Continuing),
            vec![ym("2018-04"), ym("2018-09"), ym("2019-03")]
        );
        // 異動月 − 11 is the first month carried.
        assert_eq!(
            carried_months(&a, ym("2019-08"), Move::Continuing),
            vec![ym("2018-09"), ym("2019-03"), ym("2019-04")]
        );
        let gairai = vec![KogakuMonth {
            month: ym("2019-01"),
            shikyu: Shikyu::GairaiTokureiOnly,
            low_income: false,
        }];
        assert!(carried_months(&gairai, ym("2019-03"), Move::Continuing).is_empty());
        assert!(carried_months(&a, ym("2019-03"), Move::NotContinuing).is_empty());
        assert!(carried_months(&a, ym("2019-03"), Move::OutOfPrefecture).is_empty());
    }
}
