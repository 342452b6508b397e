//! Known-answer tables of the 参酌基準 cases and periods, with their sources, and the rules
//! file parser.
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
        // Was `other` / not continue until issue 27: the same tokens also describe a
        // household whose head died, which continues; a person decides.
        (
            "a member split off as head, or the head died",
            h(3, &[3]),
            Case::HeadLeft,
            Suggestion::Manual,
        ),
    ] {
        let got = classify(&a, &b);
        assert_eq!(got, case, "{name}");
        let rules = Rules::default();
        assert_eq!(
            combine(&rules, &detect(&a, &b), Period::Contiguous),
            s,
            "{name}"
        );
    }
}

/// Issue 27 item 4: the cases combine. Sources: the 参酌基準 table of docs/domain.md §4.3
/// (https://www.city.tondabayashi.lg.jp/soshiki/25/20835.html), and §4.5 (松山市: "一の世帯で
/// 完結する住所異動" continues even with several changes at once; only what the standard
/// names as breaking does not). A = head 1 with members 2, 3.
#[test]
fn cases_combine_and_the_strictest_suggestion_wins() {
    use Case::*;
    use Suggestion::*;
    let a = h(1, &[1, 2, 3]);
    for (name, b, cases, want) in [
        (
            "§4.3 case 1",
            h(1, &[1, 2, 3]),
            vec![SameHousehold],
            Continue,
        ),
        (
            "§4.5 head change + newborn",
            h(2, &[1, 2, 3, 4]),
            vec![HeadChanged, MembersAdded],
            Continue,
        ),
        (
            "§4.5 head change + a member died",
            h(2, &[1, 2]),
            vec![HeadChanged, MembersRemoved],
            Continue,
        ),
        (
            "§4.5 newborn alone",
            h(1, &[1, 2, 3, 4]),
            vec![MembersAdded],
            Continue,
        ),
        (
            "§4.3 case 5 with the old head",
            h(1, &[1, 4]),
            vec![SplitOrMerge],
            Continue,
        ),
        (
            "head gone: died, or a member split off as head",
            h(3, &[3]),
            vec![HeadLeft, MembersRemoved],
            Manual,
        ),
        (
            "head gone + newborn",
            h(2, &[2, 3, 9]),
            vec![HeadLeft, MembersAdded],
            Manual,
        ),
        (
            "§4.3 breaking: joined another household",
            h(5, &[5, 1]),
            vec![Other],
            NotContinue,
        ),
        (
            "must fail to continue: B's head from outside A",
            h(7, &[7, 1, 2, 3]),
            vec![Other],
            NotContinue,
        ),
    ] {
        assert_eq!(detect(&a, &b), cases, "{name}");
        assert_eq!(
            combine(&Rules::default(), &cases, Period::Contiguous),
            want,
            "{name}"
        );
    }
    // A prefecture that sends head changes to a person makes the combination manual; a
    // gap makes anything manual.
    let niigata = Rules::parse("case 2 = manual").unwrap();
    assert_eq!(
        combine(&niigata, &[HeadChanged, MembersAdded], Period::Contiguous),
        Manual
    );
    assert_eq!(
        combine(&Rules::default(), &[SameHousehold], Period::Gap(3)),
        Manual
    );
    assert_eq!(
        combine(&Rules::default(), &[], Period::Contiguous),
        NotContinue
    );
}

#[test]
fn a_prefecture_configured_differently_changes_the_suggestion() {
    let niigata = Rules::parse("# 新潟県\ncase 2 = manual\ncase other = manual  # look\n").unwrap();
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

/// Issue 27 item 7: one file, several prefectures; the meaning of 適用終了 per
/// prefecture (docs/domain.md §8: by design the last day applied; a file sending the day of
/// leaving would make every move an overlap). Must-fail rows name the line.
#[test]
fn rules_per_prefecture_and_the_meaning_of_the_end_date() {
    let text = "case other = manual\n[15]  # 新潟県\ncase 2 = manual\nlate_shikyu_months = 6\n[27]\ntekiyo_end = leaving_day\n";
    let r = Rules::parse(text).unwrap();
    assert_eq!(
        r.for_prefecture("13").suggestion(Case::Other),
        Suggestion::Manual
    );
    assert_eq!(
        r.for_prefecture("13").suggestion(Case::HeadChanged),
        Suggestion::Continue
    );
    assert_eq!(
        r.for_prefecture("15").suggestion(Case::HeadChanged),
        Suggestion::Manual
    );
    assert_eq!(
        r.for_prefecture("15").suggestion(Case::Other),
        Suggestion::Manual,
        "from the defaults above"
    );
    assert_eq!(
        r.for_prefecture("27").suggestion(Case::HeadChanged),
        Suggestion::Continue
    );
    // 2024-10-31 = day 20027; B starts 2024-11-01 = 20028.
    for (code, end, start, want) in [
        ("13", 20027, 20028, Period::Contiguous),
        ("13", 20028, 20028, Period::Overlap(1)),
        ("27", 20028, 20028, Period::Contiguous),
        ("27", 20027, 20028, Period::Gap(1)),
        ("27", 20029, 20028, Period::Overlap(1)),
    ] {
        assert_eq!(
            r.for_prefecture(code).period(end, start),
            want,
            "{code} {end} {start}"
        );
    }
    for (bad, line) in [
        ("[48]", 1),
        ("[1]", 1),
        ("[13]\n[13]", 2),
        ("case 2 = manual\n[13]\ntekiyo_end = yesterday", 3),
        ("[13]\ncase 9 = continue", 2),
        ("late_shikyu_months = 0", 1),
        ("late_shikyu_months = 61", 1),
        ("window_months = 0", 1),
        ("[13]\nwindow_months = 12 months", 2),
    ] {
        assert_eq!(Rules::parse(bad).unwrap_err().line, line, "{bad}");
    }
}

/// Issue 27 item 2: only moves that start in the window become candidates. The window
/// is counted in care months like 多数回該当's 直近12か月 (docs/domain.md §5), ending with the
/// run's month; a start after the run's date (a move entered ahead) is in.
#[test]
fn the_window_of_new_moves() {
    let d = |s: &str| crate::domain::text::parse_date(s).unwrap();
    let default = Rules::default();
    let six = Rules::parse("[13]\nwindow_months = 6").unwrap();
    let six = six.for_prefecture("13");
    for (rules, start, as_of, want) in [
        (&default, "2024-04-01", "2025-03-31", true),
        (&default, "2024-04-01", "2025-03-01", true),
        (&default, "2024-03-31", "2025-03-31", false),
        (&default, "2024-03-31", "2025-03-01", false),
        (&default, "2025-03-31", "2025-03-31", true),
        (&default, "2025-06-01", "2025-03-31", true),
        (&default, "2024-02-29", "2025-02-28", false),
        (&default, "2024-03-01", "2025-02-28", true),
        (six, "2024-10-01", "2025-03-31", true),
        (six, "2024-09-30", "2025-03-31", false),
    ] {
        assert_eq!(
            rules.in_window(d(start), d(as_of)),
            want,
            "{start} on {as_of}"
        );
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
