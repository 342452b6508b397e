//! 世帯の継続性 (DOMAIN.md §4.3, MHLW 参酌基準): which case a same-prefecture move is, and the
//! suggestion a prefecture configures for it. Members are compared by opaque person keys
//! (matching tokens), never by 個人番号. Suggestions never decide: the municipality does.

use std::collections::BTreeSet;

/// The 参酌基準 case of a move from household A (old) to household B (new).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Case {
    /// 1: same head and members, new address.
    SameHousehold,
    /// 2: the head changed within the household (the whole household moved).
    HeadChanged,
    /// 3: members added (birth, leaving employee insurance, …).
    MembersAdded,
    /// 4: members removed (death, joining employee insurance, …).
    MembersRemoved,
    /// 5: 世帯分離 / 世帯合併: B's head was A's head, members both added and removed.
    SplitOrMerge,
    /// Anything else, e.g. the old head joined another household.
    Other,
}

impl Case {
    pub const ALL: [Case; 6] = [
        Case::SameHousehold,
        Case::HeadChanged,
        Case::MembersAdded,
        Case::MembersRemoved,
        Case::SplitOrMerge,
        Case::Other,
    ];

    /// Stable code: `1`…`5`, `other`.
    pub fn code(self) -> &'static str {
        match self {
            Case::SameHousehold => "1",
            Case::HeadChanged => "2",
            Case::MembersAdded => "3",
            Case::MembersRemoved => "4",
            Case::SplitOrMerge => "5",
            Case::Other => "other",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Case::SameHousehold => "世帯主・世帯員とも同一（住所のみ変更）",
            Case::HeadChanged => "世帯内で世帯主が変更",
            Case::MembersAdded => "世帯員の増加",
            Case::MembersRemoved => "世帯員の減少",
            Case::SplitOrMerge => "世帯分離・世帯合併",
            Case::Other => "その他",
        }
    }
}

/// What kukaku suggests to the new municipality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suggestion {
    Continue,
    NotContinue,
    /// A person must look (also forced by a 空白期間 or 重複期間).
    Manual,
}

impl Suggestion {
    pub fn code(self) -> &'static str {
        match self {
            Suggestion::Continue => "continue",
            Suggestion::NotContinue => "not_continue",
            Suggestion::Manual => "manual",
        }
    }

    pub fn parse(code: &str) -> Option<Suggestion> {
        match code {
            "continue" => Some(Suggestion::Continue),
            "not_continue" => Some(Suggestion::NotContinue),
            "manual" => Some(Suggestion::Manual),
            _ => None,
        }
    }
}

/// A household as the continuity job sees it: its head and members as opaque person keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members<K: Ord> {
    pub head: K,
    /// Every member, the head included.
    pub all: BTreeSet<K>,
}

/// The case of a move from `old` (A) to `new` (B).
pub fn classify<K: Ord>(old: &Members<K>, new: &Members<K>) -> Case {
    let same_head = old.head == new.head;
    let added = new.all.difference(&old.all).next().is_some();
    let removed = old.all.difference(&new.all).next().is_some();
    match (same_head, added, removed) {
        (true, false, false) => Case::SameHousehold,
        (false, false, false) => Case::HeadChanged,
        (true, true, false) => Case::MembersAdded,
        (true, false, true) => Case::MembersRemoved,
        (true, true, true) => Case::SplitOrMerge,
        (false, _, _) => Case::Other,
    }
}

/// Why a rules file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("continuity rules line {line}: {reason}")]
pub struct RulesError {
    pub line: usize,
    pub reason: &'static str,
}

/// A prefecture's configuration: the suggestion for each case (DOMAIN.md §4.3: prefectures
/// differ, e.g. 新潟県 warns that a head change may reset the count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    suggestions: [Suggestion; 6],
}

impl Default for Rules {
    /// The 参酌基準 defaults: cases 1–5 continue, anything else does not.
    fn default() -> Self {
        Rules {
            suggestions: [
                Suggestion::Continue,
                Suggestion::Continue,
                Suggestion::Continue,
                Suggestion::Continue,
                Suggestion::Continue,
                Suggestion::NotContinue,
            ],
        }
    }
}

impl Rules {
    /// Parses `case <code> = <suggestion>` lines over the defaults; `#` starts a comment.
    ///
    /// ```text
    /// # 新潟県: a head change goes to a person
    /// case 2 = manual
    /// ```
    pub fn parse(text: &str) -> Result<Rules, RulesError> {
        let mut rules = Rules::default();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let bad = |reason| RulesError { line, reason };
            let rest = content.strip_prefix("case").ok_or(bad(
                "expected `case <1-5|other> = <continue|not_continue|manual>`",
            ))?;
            let (code, value) = rest.split_once('=').ok_or(bad(
                "expected `case <1-5|other> = <continue|not_continue|manual>`",
            ))?;
            let case = Case::ALL
                .iter()
                .position(|c| c.code() == code.trim())
                .ok_or(bad("unknown case (1-5 or other)"))?;
            let s = Suggestion::parse(value.trim())
                .ok_or(bad("unknown suggestion (continue, not_continue or manual)"))?;
            if let Some(slot) = rules.suggestions.get_mut(case) {
                *slot = s;
            }
        }
        Ok(rules)
    }

    pub fn suggestion(&self, case: Case) -> Suggestion {
        let i = Case::ALL.iter().position(|c| *c == case).unwrap_or(5);
        self.suggestions
            .get(i)
            .copied()
            .unwrap_or(Suggestion::Manual)
    }
}

/// The gap between A's 国保適用終了年月日 and B's 国保適用開始年月日 (DOMAIN.md §8), in days
/// since 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// B.開始 = A.終了 + 1 day.
    Contiguous,
    /// 空白期間: days without 国保 between them.
    Gap(i32),
    /// 重複期間: days applied in both.
    Overlap(i32),
}

pub fn period(a_end: i32, b_start: i32) -> Period {
    match b_start - a_end {
        1 => Period::Contiguous,
        d if d > 1 => Period::Gap(d - 1),
        d => Period::Overlap(1 - d),
    }
}

/// The suggestion for a candidate: the configured one, or `manual` when the periods do not
/// join.
pub fn suggest(rules: &Rules, case: Case, period: Period) -> Suggestion {
    match period {
        Period::Contiguous => rules.suggestion(case),
        Period::Gap(_) | Period::Overlap(_) => Suggestion::Manual,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(head: u32, all: &[u32]) -> Members<u32> {
        Members {
            head,
            all: all.iter().copied().collect(),
        }
    }

    /// 参酌基準 cases 1–5 and the rest, with the default suggestions.
    #[test]
    fn cases_and_default_suggestions() {
        let a = h(1, &[1, 2, 3]);
        for (name, b, case, s) in [
            (
                "1 same household",
                h(1, &[1, 2, 3]),
                Case::SameHousehold,
                Suggestion::Continue,
            ),
            (
                "2 head changed within",
                h(2, &[1, 2, 3]),
                Case::HeadChanged,
                Suggestion::Continue,
            ),
            (
                "3 a birth",
                h(1, &[1, 2, 3, 4]),
                Case::MembersAdded,
                Suggestion::Continue,
            ),
            (
                "4 a death",
                h(1, &[1, 2]),
                Case::MembersRemoved,
                Suggestion::Continue,
            ),
            (
                "5 split with the old head",
                h(1, &[1, 4]),
                Case::SplitOrMerge,
                Suggestion::Continue,
            ),
            (
                "the old head joined another household",
                h(5, &[5, 1]),
                Case::Other,
                Suggestion::NotContinue,
            ),
            (
                "a member split off as head",
                h(3, &[3]),
                Case::Other,
                Suggestion::NotContinue,
            ),
        ] {
            let got = classify(&a, &b);
            assert_eq!(got, case, "{name}");
            let rules = Rules::default();
            assert_eq!(suggest(&rules, got, Period::Contiguous), s, "{name}");
        }
    }

    #[test]
    fn a_prefecture_configured_differently_changes_the_suggestion() {
        let niigata =
            Rules::parse("# 新潟県\ncase 2 = manual\ncase other = manual  # look\n").unwrap();
        let a = h(1, &[1, 2]);
        assert_eq!(
            suggest(&niigata, classify(&a, &h(2, &[1, 2])), Period::Contiguous),
            Suggestion::Manual
        );
        assert_eq!(
            suggest(&niigata, classify(&a, &h(1, &[1, 2])), Period::Contiguous),
            Suggestion::Continue
        );
        assert_eq!(niigata.suggestion(Case::Other), Suggestion::Manual);
        for (bad, line) in [
            ("case 9 = continue", 1),
            ("\ncase 2 = yes", 2),
            ("rule 2 = manual", 1),
        ] {
            assert_eq!(Rules::parse(bad).unwrap_err().line, line, "{bad}");
        }
    }

    #[test]
    fn gaps_and_overlaps_go_to_a_person() {
        assert_eq!(period(100, 101), Period::Contiguous);
        assert_eq!(period(100, 105), Period::Gap(4));
        assert_eq!(period(100, 100), Period::Overlap(1));
        assert_eq!(period(100, 90), Period::Overlap(11));
        let r = Rules::default();
        assert_eq!(
            suggest(&r, Case::SameHousehold, Period::Gap(4)),
            Suggestion::Manual
        );
        assert_eq!(
            suggest(&r, Case::SameHousehold, Period::Overlap(1)),
            Suggestion::Manual
        );
    }
}
