//! 世帯の継続性 (docs/domain.md §4.3, MHLW 参酌基準): which case a same-prefecture move is, and the
//! suggestion a prefecture configures for it. Members are compared by opaque person keys
//! (matching tokens), never by 個人番号. Suggestions never decide: the municipality does.

use std::collections::BTreeSet;

use crate::domain::tasukai::CareMonth;

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
    /// The old head is not in B and a member of A heads it: the head died (a move completed
    /// within one household, continuing) or the member split off (not continuing for this
    /// pair). The tokens cannot tell which: a person decides by default.
    HeadLeft,
    /// B's head was not in A: A's mover joined another household (the 参酌基準's breaking
    /// case).
    Other,
}

impl Case {
    pub const ALL: [Case; 7] = [
        Case::SameHousehold,
        Case::HeadChanged,
        Case::MembersAdded,
        Case::MembersRemoved,
        Case::SplitOrMerge,
        Case::HeadLeft,
        Case::Other,
    ];

    /// Stable code: `1`…`5`, `head_left`, `other`.
    pub fn code(self) -> &'static str {
        match self {
            Case::SameHousehold => "1",
            Case::HeadChanged => "2",
            Case::MembersAdded => "3",
            Case::MembersRemoved => "4",
            Case::SplitOrMerge => "5",
            Case::HeadLeft => "head_left",
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
            Case::HeadLeft => "旧世帯主が異動後の世帯にいない（死亡または世帯分離）",
            Case::Other => "その他（他の世帯への加入など）",
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

/// Every 参酌基準 case a move from `old` (A) to `new` (B) shows (docs/domain.md §4.3, §4.5): the
/// cases combine, since a whole household's move may at once change its head within the
/// household, gain a newborn and lose a member who died. Never empty.
pub fn detect<K: Ord>(old: &Members<K>, new: &Members<K>) -> Vec<Case> {
    if !old.all.contains(&new.head) {
        return vec![Case::Other];
    }
    let added = new.all.difference(&old.all).next().is_some();
    let removed = old.all.difference(&new.all).any(|k| *k != old.head);
    let mut cases = Vec::new();
    if new.head != old.head {
        cases.push(if new.all.contains(&old.head) {
            Case::HeadChanged
        } else {
            Case::HeadLeft
        });
    } else if added && removed {
        return vec![Case::SplitOrMerge];
    }
    if added {
        cases.push(Case::MembersAdded);
    }
    if removed {
        cases.push(Case::MembersRemoved);
    }
    if cases.is_empty() {
        cases.push(Case::SameHousehold);
    }
    cases
}

/// The first detected case (the one a single-case view shows).
pub fn classify<K: Ord>(old: &Members<K>, new: &Members<K>) -> Case {
    detect(old, new).first().copied().unwrap_or(Case::Other)
}

/// Why a rules file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("continuity rules line {line}: {reason}")]
pub struct RulesError {
    pub line: usize,
    pub reason: &'static str,
}

/// What a file's 国保適用終了年月日 means (docs/domain.md §8 and the layout: the last day applied,
/// by design). A prefecture whose municipalities send the day of leaving instead sets
/// `tekiyo_end = leaving_day`, so that every move does not look like a one-day overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EndDate {
    /// The last day the person was applied (the layout's default).
    #[default]
    LastDay,
    /// The day the person left (the first day not applied).
    LeavingDay,
}

/// The continuity configuration (docs/domain.md §4.3: prefectures differ, e.g. 新潟県 warns that
/// a head change may reset the count): the suggestion for each case and the meaning of
/// 適用終了, as defaults and per prefecture (one file can serve a hub that runs several).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    suggestions: [Suggestion; 7],
    end_date: EndDate,
    /// How many months after a move's 異動月 the confirmation run looks for late 支給 of
    /// the carried months (`late_shikyu_months = N`, 1–60; default 12: a 支給 is decided
    /// about three months after the care month, docs/domain.md §4.5, and 再審査 may follow).
    late_shikyu_months: i32,
    /// How many care months, ending with the run's month, a new move's B-side start may lie
    /// in to become a candidate (`window_months = N`, 1–60; default 12, the window of
    /// 多数回該当, docs/domain.md §5). Older moves are listed for the operator, not proposed.
    window_months: i32,
    /// `[NN]` sections: a prefecture's rules, starting from the defaults above them.
    prefectures: std::collections::BTreeMap<String, Rules>,
}

impl Default for Rules {
    /// The 参酌基準 defaults: cases 1–5 continue, a departed head goes to a person, anything
    /// else does not continue.
    fn default() -> Self {
        Rules {
            suggestions: [
                Suggestion::Continue,
                Suggestion::Continue,
                Suggestion::Continue,
                Suggestion::Continue,
                Suggestion::Continue,
                Suggestion::Manual,
                Suggestion::NotContinue,
            ],
            end_date: EndDate::LastDay,
            late_shikyu_months: 12,
            window_months: 12,
            prefectures: std::collections::BTreeMap::new(),
        }
    }
}

impl Rules {
    /// Parses a rules file over the defaults; `#` starts a comment. Lines are
    /// `case <1-5|head_left|other> = <continue|not_continue|manual>`,
    /// `tekiyo_end = <last_day|leaving_day>`, `late_shikyu_months = N` and
    /// `window_months = N`; a `[NN]` line (a prefecture code, 01–47) starts that
    /// prefecture's section, which begins from the defaults read so far.
    ///
    /// ```text
    /// case other = manual
    /// [15]            # 新潟県: a head change goes to a person
    /// case 2 = manual
    /// [27]
    /// tekiyo_end = leaving_day
    /// ```
    pub fn parse(text: &str) -> Result<Rules, RulesError> {
        let mut rules = Rules::default();
        let mut section: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let bad = |reason| RulesError { line, reason };
            if let Some(code) = content.strip_prefix('[').and_then(|c| c.strip_suffix(']')) {
                let code = code.trim();
                let valid = code.len() == 2
                    && code.bytes().all(|b| b.is_ascii_digit())
                    && (1..=47).contains(&code.parse::<u8>().unwrap_or(0));
                if !valid {
                    return Err(bad("a section is [NN], a prefecture code 01-47"));
                }
                if rules.prefectures.contains_key(code) {
                    return Err(bad("this prefecture has a section already"));
                }
                let mut base = rules.clone();
                base.prefectures.clear();
                rules.prefectures.insert(code.to_owned(), base);
                section = Some(code.to_owned());
                continue;
            }
            let target = match &section {
                Some(code) => rules.prefectures.get_mut(code).ok_or(bad("section lost"))?,
                None => &mut rules,
            };
            target.apply(content).map_err(bad)?;
        }
        Ok(rules)
    }

    /// One `case …` or `tekiyo_end …` line.
    fn apply(&mut self, content: &str) -> Result<(), &'static str> {
        const CASE: &str = "expected `case <1-5|head_left|other> = <continue|not_continue|manual>` `tekiyo_end = <last_day|leaving_day>`, `late_shikyu_months = N` or `window_months = N`";
        let (key, value) = content.split_once('=').ok_or(CASE)?;
        let (key, value) = (key.trim(), value.trim());
        let months = |reason| {
            value
                .parse::<i32>()
                .ok()
                .filter(|n| (1..=60).contains(n))
                .ok_or(reason)
        };
        if key == "late_shikyu_months" {
            self.late_shikyu_months = months("late_shikyu_months is a number of months, 1-60")?;
            return Ok(());
        }
        if key == "window_months" {
            self.window_months = months("window_months is a number of months, 1-60")?;
            return Ok(());
        }
        if key == "tekiyo_end" {
            self.end_date = match value {
                "last_day" => EndDate::LastDay,
                "leaving_day" => EndDate::LeavingDay,
                _ => return Err("unknown tekiyo_end (last_day or leaving_day)"),
            };
            return Ok(());
        }
        let code = key.strip_prefix("case").ok_or(CASE)?;
        let case = Case::ALL
            .iter()
            .position(|c| c.code() == code.trim())
            .ok_or("unknown case (1-5, head_left or other)")?;
        let s = Suggestion::parse(value)
            .ok_or("unknown suggestion (continue, not_continue or manual)")?;
        if let Some(slot) = self.suggestions.get_mut(case) {
            *slot = s;
        }
        Ok(())
    }

    /// Months after the 異動月 during which late 支給 are still carried (追加 rows).
    pub fn late_shikyu_months(&self) -> i32 {
        self.late_shikyu_months
    }

    /// Whether a new move whose B-side 適用開始 is `start` is proposed by a run on `as_of`
    /// (days since 1970-01-01): its month is one of the `window_months` care months ending
    /// with the run's month, or later. With the default 12, a run in 2025-03 proposes moves
    /// that start in 2024-04 or after.
    pub fn in_window(&self, start: i32, as_of: i32) -> bool {
        let first = CareMonth::of_days(as_of).plus(1 - self.window_months);
        first.is_none_or(|first| CareMonth::of_days(start) >= first)
    }

    /// The rules of prefecture `code`: its section, else the defaults.
    pub fn for_prefecture(&self, code: &str) -> &Rules {
        self.prefectures.get(code).unwrap_or(self)
    }

    /// The period between A's 適用終了 and B's 適用開始 under this prefecture's meaning of
    /// 適用終了 (days since 1970-01-01).
    pub fn period(&self, a_end: i32, b_start: i32) -> Period {
        match self.end_date {
            EndDate::LastDay => period(a_end, b_start),
            EndDate::LeavingDay => period(a_end - 1, b_start),
        }
    }

    pub fn suggestion(&self, case: Case) -> Suggestion {
        let i = Case::ALL.iter().position(|c| *c == case).unwrap_or(6);
        self.suggestions
            .get(i)
            .copied()
            .unwrap_or(Suggestion::Manual)
    }
}

/// The gap between A's 国保適用終了年月日 and B's 国保適用開始年月日 (docs/domain.md §8), in days
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

/// The suggestion for a move showing `cases`: each case's configured suggestion combined
/// (any `not_continue` wins, then `manual`, else `continue`), and `manual` when the periods
/// do not join.
pub fn combine(rules: &Rules, cases: &[Case], period: Period) -> Suggestion {
    if !matches!(period, Period::Contiguous) {
        return Suggestion::Manual;
    }
    let each: Vec<Suggestion> = cases.iter().map(|c| rules.suggestion(*c)).collect();
    if each.is_empty() || each.contains(&Suggestion::NotContinue) {
        Suggestion::NotContinue
    } else if each.contains(&Suggestion::Manual) {
        Suggestion::Manual
    } else {
        Suggestion::Continue
    }
}

#[cfg(test)]
mod tests;
