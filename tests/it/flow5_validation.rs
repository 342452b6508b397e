//! Flow 5 validation: each rule of docs/domain.md §9.3 broken once, encodings, truncation, sizes,
//! control characters, a foreign row. Every bad input gets its expected problem and stores
//! nothing; the accepted variants are stored correctly. Then idempotency.

use crate::common;

use common::{pid, small};
use kukaku::crypto::{AdminScope, Kek};
use kukaku::flows::import::{ImportError, Importer, import};
use kukaku::flows::sample;
use kukaku::flows::transmission::{Encoding, FileKind, Household, KOJIN_HEADER, SETAI_HEADER};
use kukaku::ledger::Kind;
use kukaku::ledger::Seq;
use kukaku::store::{IndexKind, Paths, Store};

const TID: &str = "T-2024-0001";

/// Two households: 1 (普通, two insured) and 2 (擬制世帯主 + one insured).
fn base() -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    let setai = vec![
        s(&SETAI_HEADER),
        s(&[
            "setai-v1",
            TID,
            "131011",
            "A1",
            "2024-04-01",
            "03",
            "",
            "123456789018",
            "1",
            "あいう",
            "100-0001",
            "東京都千代田区千代田1-1",
            "2",
        ]),
        s(&[
            "setai-v1",
            TID,
            "131011",
            "A2",
            "2024-04-01",
            "03",
            "",
            "983205673214",
            "2",
            "",
            "",
            "東京都千代田区丸の内2-2",
            "2",
        ]),
    ];
    let kojin = vec![
        s(&KOJIN_HEADER),
        s(&[
            "kojin-v1",
            TID,
            "A1",
            "123456789018",
            "",
            "１８７",
            "00",
            "山田 太郎",
            "ヤマダ タロウ",
            "1960-05-05",
            "1",
            "01",
            "2024-04-01",
            "01",
            "",
            "",
            "2024-04-01",
            "",
            "30",
            "A03",
            "01",
            "0",
        ]),
        s(&[
            "kojin-v1",
            TID,
            "A1",
            "123456789050",
            "",
            "１８７",
            "01",
            "山田 花子",
            "ヤマダ ハナコ",
            "1962-06-06",
            "2",
            "02",
            "2024-04-01",
            "01",
            "",
            "",
            "2024-04-01",
            "",
            "30",
            "",
            "",
            "0",
        ]),
        s(&[
            "kojin-v1",
            TID,
            "A2",
            "983205673214",
            "",
            "",
            "",
            "佐藤 一郎",
            "",
            "1950-01-01",
            "1",
            "01",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "1",
        ]),
        s(&[
            "kojin-v1",
            TID,
            "A2",
            "314159265352",
            "",
            "2001",
            "00",
            "佐藤 美咲",
            "",
            "1990-02-02",
            "2",
            "03",
            "2024-04-01",
            "03",
            "",
            "",
            "2024-04-01",
            "",
            "30",
            "",
            "",
            "0",
        ]),
    ];
    (setai, kojin)
}

fn to_csv(rows: &[Vec<String>], crlf: bool) -> String {
    let mut w = csv::WriterBuilder::new()
        .flexible(true)
        .terminator(if crlf {
            csv::Terminator::CRLF
        } else {
            csv::Terminator::Any(b'\n')
        })
        .from_writer(Vec::new());
    for r in rows {
        w.write_record(r).unwrap();
    }
    String::from_utf8(w.into_inner().unwrap()).unwrap()
}

fn set(rows: &mut [Vec<String>], header: &[&str], line: usize, col: &str, value: &str) {
    let c = header.iter().position(|h| *h == col).unwrap();
    rows[line - 1][c] = value.to_owned();
}

fn who() -> Importer {
    Importer {
        actor: "admin-cli".into(),
        role: "admin".into(),
        route: "test".into(),
        request_id: "-".into(),
    }
}

fn store() -> (tempfile::TempDir, Paths, Store) {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(dir.path());
    let store = crate::common::init_store(&paths, "hub.test", small()).unwrap();
    store
        .request_partitions(&[pid("131011"), pid("380014")])
        .unwrap();
    store.provision(&mut |_, _| {}).unwrap();
    (dir, paths, store)
}

type Mutation = fn(&mut Vec<Vec<String>>, &mut Vec<Vec<String>>);
type Expected = (FileKind, u64, Option<&'static str>, &'static str);

fn s(rows: &mut [Vec<String>], line: usize, col: &str, v: &str) {
    set(rows, &SETAI_HEADER, line, col, v)
}

fn k(rows: &mut [Vec<String>], line: usize, col: &str, v: &str) {
    set(rows, &KOJIN_HEADER, line, col, v)
}

#[test]
fn every_rule_broken_once_is_reported_and_nothing_is_stored() {
    let (_dir, _paths, store) = store();
    let p = pid("131011");
    let size0 = store.size(&p).unwrap();
    // (name, mutation, expected (file, line, field, reason))
    let cases: Vec<(&str, Mutation, Expected)> = vec![
        (
            "layout",
            |s_, _| s(s_, 2, "layout", "setai-v2"),
            (FileKind::Setai, 2, Some("layout"), "layout"),
        ),
        (
            "kojin layout",
            |_, k_| k(k_, 3, "layout", "kojin-v0"),
            (FileKind::Kojin, 3, Some("layout"), "layout"),
        ),
        (
            "tid mismatch",
            |_, k_| k(k_, 2, "transmission_id", "T-OTHER"),
            (
                FileKind::Kojin,
                2,
                Some("transmission_id"),
                "transmission_id_mismatch",
            ),
        ),
        (
            "tid format",
            |s_, _| s(s_, 3, "transmission_id", "bad id!"),
            (FileKind::Setai, 3, Some("transmission_id"), "format"),
        ),
        (
            "foreign partition",
            |s_, _| s(s_, 3, "hokensha_no", "380014"),
            (FileKind::Setai, 3, Some("hokensha_no"), "other_partition"),
        ),
        (
            "hokensha check digit",
            |s_, _| s(s_, 2, "hokensha_no", "131012"),
            (FileKind::Setai, 2, Some("hokensha_no"), "check_digit"),
        ),
        (
            "setai_no format",
            |s_, _| s(s_, 2, "setai_no", "A-1"),
            (FileKind::Setai, 2, Some("setai_no"), "format"),
        ),
        (
            "duplicate setai",
            |s_, _| s(s_, 3, "setai_no", "A1"),
            (FileKind::Setai, 3, Some("setai_no"), "duplicate"),
        ),
        (
            "ido date",
            |s_, _| s(s_, 2, "ido_date", "2024-02-30"),
            (FileKind::Setai, 2, Some("ido_date"), "date"),
        ),
        (
            "wareki date",
            |s_, _| s(s_, 2, "ido_date", "R6.4.1"),
            (FileKind::Setai, 2, Some("ido_date"), "date"),
        ),
        (
            "ido jiyu code",
            |s_, _| s(s_, 2, "ido_jiyu", "08"),
            (FileKind::Setai, 2, Some("ido_jiyu"), "code"),
        ),
        (
            "teisei without 90",
            |s_, _| s(s_, 2, "teisei_moto", "T-0"),
            (FileKind::Setai, 2, Some("teisei_moto"), "not_allowed"),
        ),
        (
            "90 without teisei",
            |s_, _| s(s_, 2, "ido_jiyu", "90"),
            (FileKind::Setai, 2, Some("teisei_moto"), "missing"),
        ),
        (
            "90 unknown target",
            |s_, _| {
                s(s_, 2, "ido_jiyu", "90");
                s(s_, 2, "teisei_moto", "T-NONE")
            },
            (
                FileKind::Setai,
                2,
                Some("teisei_moto"),
                "unknown_transmission",
            ),
        ),
        (
            "head kojin check",
            |s_, _| s(s_, 2, "head_kojin_no", "123456789012"),
            (FileKind::Setai, 2, Some("head_kojin_no"), "check_digit"),
        ),
        (
            "head kojin mismatch",
            |s_, _| s(s_, 2, "head_kojin_no", "123456789050"),
            (
                FileKind::Setai,
                2,
                Some("head_kojin_no"),
                "head_kojin_no_mismatch",
            ),
        ),
        (
            "head kubun code",
            |s_, _| s(s_, 2, "head_kubun", "3"),
            (FileKind::Setai, 2, Some("head_kubun"), "code"),
        ),
        (
            "kigo mixed width",
            |s_, _| s(s_, 2, "kigo", "ab１２"),
            (FileKind::Setai, 2, Some("kigo"), "mixed_width"),
        ),
        (
            "yubin",
            |s_, _| s(s_, 2, "yubin_no", "1000001"),
            (FileKind::Setai, 2, Some("yubin_no"), "format"),
        ),
        (
            "jusho missing",
            |s_, _| s(s_, 2, "jusho", ""),
            (FileKind::Setai, 2, Some("jusho"), "missing"),
        ),
        (
            "jusho too long",
            |s_, _| s(s_, 2, "jusho", &"あ".repeat(201)),
            (FileKind::Setai, 2, Some("jusho"), "too_long"),
        ),
        (
            "control char",
            |s_, _| s(s_, 2, "jusho", "千代田\u{7}"),
            (FileKind::Setai, 2, Some("jusho"), "control_character"),
        ),
        (
            "gaiji",
            |_, k_| k(k_, 2, "shimei", "山田 \u{E001}"),
            (FileKind::Kojin, 2, Some("shimei"), "private_use_character"),
        ),
        (
            "person rows",
            |s_, _| s(s_, 2, "person_rows", "3"),
            (
                FileKind::Setai,
                2,
                Some("person_rows"),
                "person_rows_mismatch",
            ),
        ),
        (
            "person rows format",
            |s_, _| s(s_, 2, "person_rows", "0"),
            (FileKind::Setai, 2, Some("person_rows"), "format"),
        ),
        (
            "unknown household",
            |_, k_| k(k_, 3, "setai_no", "A9"),
            (FileKind::Kojin, 3, Some("setai_no"), "unknown_household"),
        ),
        (
            "kojin check digit",
            |_, k_| k(k_, 3, "kojin_no", "123456789051"),
            (FileKind::Kojin, 3, Some("kojin_no"), "check_digit"),
        ),
        (
            "kojin full width",
            |_, k_| k(k_, 3, "kojin_no", "１２３４５６７８９０５０"),
            (FileKind::Kojin, 3, Some("kojin_no"), "format"),
        ),
        (
            "kojin duplicate",
            |_, k_| k(k_, 5, "kojin_no", "123456789050"),
            (FileKind::Kojin, 5, Some("kojin_no"), "duplicate"),
        ),
        (
            "bango missing",
            |_, k_| k(k_, 3, "bango", ""),
            (FileKind::Kojin, 3, Some("bango"), "missing"),
        ),
        (
            "bango full-width space",
            |_, k_| k(k_, 3, "bango", "１\u{3000}８"),
            (FileKind::Kojin, 3, Some("bango"), "full_width_space"),
        ),
        (
            "edaban format",
            |_, k_| k(k_, 3, "edaban", "1"),
            (FileKind::Kojin, 3, Some("edaban"), "format"),
        ),
        (
            "card duplicate",
            |_, k_| k(k_, 3, "edaban", "00"),
            (FileKind::Kojin, 3, Some("bango"), "duplicate_card_number"),
        ),
        (
            "kana",
            |_, k_| k(k_, 2, "shimei_kana", "やまだ"),
            (FileKind::Kojin, 2, Some("shimei_kana"), "not_katakana"),
        ),
        (
            "sex",
            |_, k_| k(k_, 2, "sex", "0"),
            (FileKind::Kojin, 2, Some("sex"), "code"),
        ),
        (
            "zokugara",
            |_, k_| k(k_, 3, "zokugara", "07"),
            (FileKind::Kojin, 3, Some("zokugara"), "code"),
        ),
        (
            "birth after shutoku",
            |_, k_| k(k_, 2, "birth_date", "2024-05-01"),
            (FileKind::Kojin, 2, Some("birth_date"), "date_order"),
        ),
        (
            "shutoku missing",
            |_, k_| {
                k(k_, 2, "shutoku_date", "");
                k(k_, 2, "shutoku_jiyu", "")
            },
            (FileKind::Kojin, 2, Some("shutoku_date"), "missing"),
        ),
        (
            "shutoku jiyu code",
            |_, k_| k(k_, 2, "shutoku_jiyu", "05"),
            (FileKind::Kojin, 2, Some("shutoku_jiyu"), "code"),
        ),
        (
            "soshitsu before shutoku",
            |_, k_| {
                k(k_, 2, "soshitsu_date", "2024-03-01");
                k(k_, 2, "soshitsu_jiyu", "01");
                k(k_, 2, "tekiyo_end", "2024-02-29")
            },
            (FileKind::Kojin, 2, Some("soshitsu_date"), "date_order"),
        ),
        (
            "soshitsu without jiyu",
            |_, k_| {
                k(k_, 2, "soshitsu_date", "2024-06-01");
                k(k_, 2, "tekiyo_end", "2024-05-31")
            },
            (FileKind::Kojin, 2, Some("soshitsu_jiyu"), "missing"),
        ),
        (
            "jiyu without soshitsu",
            |_, k_| k(k_, 2, "soshitsu_jiyu", "01"),
            (FileKind::Kojin, 2, Some("soshitsu_jiyu"), "not_allowed"),
        ),
        (
            "tekiyo end not day before",
            |_, k_| {
                k(k_, 2, "soshitsu_date", "2024-06-01");
                k(k_, 2, "soshitsu_jiyu", "01");
                k(k_, 2, "tekiyo_end", "2024-06-01")
            },
            (
                FileKind::Kojin,
                2,
                Some("tekiyo_end"),
                "not_day_before_soshitsu",
            ),
        ),
        (
            "tekiyo end missing",
            |_, k_| {
                k(k_, 2, "soshitsu_date", "2024-06-01");
                k(k_, 2, "soshitsu_jiyu", "01")
            },
            (FileKind::Kojin, 2, Some("tekiyo_end"), "missing"),
        ),
        (
            "tekiyo start before shutoku",
            |_, k_| k(k_, 2, "tekiyo_start", "2024-03-31"),
            (FileKind::Kojin, 2, Some("tekiyo_start"), "date_order"),
        ),
        (
            "futan",
            |_, k_| k(k_, 2, "futan_wariai", "40"),
            (FileKind::Kojin, 2, Some("futan_wariai"), "code"),
        ),
        (
            "gendo",
            |_, k_| k(k_, 2, "gendo_kubun", "A07"),
            (FileKind::Kojin, 2, Some("gendo_kubun"), "code"),
        ),
        (
            "shosho",
            |_, k_| k(k_, 2, "shosho_kubun", "08"),
            (FileKind::Kojin, 2, Some("shosho_kubun"), "code"),
        ),
        (
            "giji flag",
            |_, k_| k(k_, 2, "giji_head", "2"),
            (FileKind::Kojin, 2, Some("giji_head"), "code"),
        ),
        (
            "no head",
            |_, k_| k(k_, 2, "zokugara", "02"),
            (FileKind::Setai, 2, None, "no_head"),
        ),
        (
            "two heads",
            |_, k_| k(k_, 3, "zokugara", "01"),
            (FileKind::Setai, 2, None, "multiple_heads"),
        ),
        (
            "futsu head is giji",
            |s_, _| s(s_, 3, "head_kubun", "1"),
            (FileKind::Setai, 3, Some("head_kubun"), "head_not_insured"),
        ),
        // Issue 27 item 6 (docs/domain.md §9.3 rule 4): a 普通 head whose own 資格 ended by
        // the 異動年月日 is not insured any more.
        (
            "futsu head with closed shikaku",
            |_, k_| {
                k(k_, 2, "soshitsu_date", "2024-04-01");
                k(k_, 2, "soshitsu_jiyu", "03");
                k(k_, 2, "tekiyo_end", "2024-03-31");
                k(k_, 2, "tekiyo_start", "2024-03-31");
                k(k_, 2, "shutoku_date", "2024-03-31")
            },
            (
                FileKind::Setai,
                2,
                Some("head_kubun"),
                "head_shikaku_closed",
            ),
        ),
        (
            "giji head with shikaku",
            |_, k_| {
                k(k_, 4, "shutoku_date", "2020-04-01");
                k(k_, 4, "shutoku_jiyu", "99")
            },
            (
                FileKind::Setai,
                3,
                Some("head_kubun"),
                "giji_head_has_shikaku",
            ),
        ),
        (
            "giji not head",
            |_, k_| k(k_, 5, "giji_head", "1"),
            (FileKind::Kojin, 5, Some("giji_head"), "giji_head_not_head"),
        ),
        (
            "giji household without insured",
            |s_, k_| {
                s(s_, 3, "person_rows", "1");
                k_.remove(4);
            },
            (FileKind::Setai, 3, None, "no_insured"),
        ),
        (
            "header",
            |s_, _| s_[0][2] = "hokenja_no".into(),
            (FileKind::Setai, 1, None, "header"),
        ),
        (
            "column count",
            |_, k_| {
                k_[2].pop();
            },
            (FileKind::Kojin, 3, None, "column_count"),
        ),
        (
            "no rows",
            |s_, _| s_.truncate(1),
            (FileKind::Setai, 0, None, "no_rows"),
        ),
    ];
    let mut failures = Vec::new();
    for (name, mutate, want) in &cases {
        let (mut setai, mut kojin) = base();
        mutate(&mut setai, &mut kojin);
        let r = import(
            &store,
            &p,
            TID,
            Encoding::Utf8,
            to_csv(&setai, true).as_bytes(),
            to_csv(&kojin, true).as_bytes(),
            &who(),
        );
        match r {
            Err(ImportError::Rejected(rej)) => {
                let found = rej
                    .problems
                    .iter()
                    .any(|pr| (pr.file, pr.line, pr.field, pr.reason) == *want);
                if !found {
                    failures.push(format!("{name}: want {want:?}, got {:?}", rej.problems));
                }
                // Never a value in a problem: problems hold only codes and positions.
                let text = serde_json::to_string(&rej.problems).unwrap();
                for protected in ["123456789018", "123456789050", "１８７", "983205673214"] {
                    assert!(!text.contains(protected), "{name}");
                }
            }
            other => failures.push(format!("{name}: not rejected: {other:?}")),
        }
        assert_eq!(
            store.size(&p).unwrap(),
            size0,
            "{name}: something was stored"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn encodings_truncation_and_sizes() {
    let (_dir, _paths, store) = store();
    let p = pid("131011");
    let (setai, kojin) = base();
    let (s8, k8) = (to_csv(&setai, true), to_csv(&kojin, true));
    let reject =
        |setai: &[u8], kojin: &[u8], enc: Encoding| -> Vec<(FileKind, u64, &'static str)> {
            match import(&store, &p, TID, enc, setai, kojin, &who()) {
                Err(ImportError::Rejected(r)) => r
                    .problems
                    .iter()
                    .map(|p| (p.file, p.line, p.reason))
                    .collect(),
                other => panic!("not rejected: {other:?}"),
            }
        };
    // Invalid UTF-8 on line 3 of the 個人ファイル.
    let mut bad = k8.clone().into_bytes();
    let at = bad
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(1)
        .unwrap()
        .0
        + 5;
    bad[at] = 0xFF;
    assert_eq!(
        reject(s8.as_bytes(), &bad, Encoding::Utf8),
        vec![(FileKind::Kojin, 3, "undecodable")]
    );
    // CP932 bytes declared as UTF-8, and the reverse.
    let sj = sample::encode(&s8, Encoding::Cp932);
    assert!(
        reject(&sj, k8.as_bytes(), Encoding::Utf8)
            .iter()
            .all(|p| p.2 == "undecodable")
    );
    let mut bad_sj = sample::encode(&k8, Encoding::Cp932);
    bad_sj.extend_from_slice(b"\x81\n"); // a lead byte without its trail byte
    assert!(
        reject(
            &sample::encode(&s8, Encoding::Cp932),
            &bad_sj,
            Encoding::Cp932
        )
        .contains(&(FileKind::Kojin, 6, "undecodable"))
    );
    // Truncated in the middle of the last row; an unterminated quoted field; empty file.
    let cut = k8
        .char_indices()
        .map(|(i, _)| i)
        .rfind(|&i| i <= k8.len() - 40)
        .unwrap();
    let truncated = &k8[..cut];
    assert!(
        reject(s8.as_bytes(), truncated.as_bytes(), Encoding::Utf8).contains(&(
            FileKind::Kojin,
            5,
            "column_count"
        ))
    );
    let open_quote = format!("{k8}\"山田");
    let got = reject(s8.as_bytes(), open_quote.as_bytes(), Encoding::Utf8);
    assert!(
        got.contains(&(FileKind::Kojin, 6, "column_count")),
        "{got:?}"
    );
    assert_eq!(
        reject(b"", k8.as_bytes(), Encoding::Utf8),
        vec![(FileKind::Setai, 0, "empty_file")]
    );
    // A huge field.
    let mut huge = kojin.clone();
    set(&mut huge, &KOJIN_HEADER, 2, "shimei", &"長".repeat(100_000));
    assert!(
        reject(
            s8.as_bytes(),
            to_csv(&huge, true).as_bytes(),
            Encoding::Utf8
        )
        .contains(&(FileKind::Kojin, 2, "too_long"))
    );
    assert_eq!(store.size(&p).unwrap(), 2);
}

fn stored_households(store: &Store, paths: &Paths) -> Vec<Household> {
    let p = pid("131011");
    let kek = Kek::load_file(&paths.kek).unwrap();
    let scope = AdminScope::from_kek(&kek).partition(&p);
    (0..store.size(&p).unwrap())
        .filter_map(|seq| {
            let e = store.read_entry(&scope, seq).unwrap();
            (e.header.kind == Kind::HOUSEHOLD_SNAPSHOT)
                .then(|| serde_json::from_slice(&e.payload).unwrap())
        })
        .collect()
}

#[test]
fn accepted_variants_store_the_same_households() {
    let (setai, kojin) = base();
    let variants: Vec<(&str, Vec<u8>, Vec<u8>, Encoding)> = vec![
        (
            "utf-8 crlf",
            to_csv(&setai, true).into_bytes(),
            to_csv(&kojin, true).into_bytes(),
            Encoding::Utf8,
        ),
        (
            "utf-8 lf",
            to_csv(&setai, false).into_bytes(),
            to_csv(&kojin, false).into_bytes(),
            Encoding::Utf8,
        ),
        (
            "utf-8 bom",
            [b"\xEF\xBB\xBF".as_slice(), to_csv(&setai, true).as_bytes()].concat(),
            [b"\xEF\xBB\xBF".as_slice(), to_csv(&kojin, true).as_bytes()].concat(),
            Encoding::Utf8,
        ),
        (
            "cp932",
            sample::encode(&to_csv(&setai, true), Encoding::Cp932),
            sample::encode(&to_csv(&kojin, true), Encoding::Cp932),
            Encoding::Cp932,
        ),
    ];
    let mut reference: Option<Vec<Household>> = None;
    for (name, s_, k_, enc) in variants {
        let (_dir, paths, store) = store();
        let p = pid("131011");
        let out = import(&store, &p, TID, enc, &s_, &k_, &who())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(out.households, 2, "{name}");
        assert!(!out.replayed);
        let got = stored_households(&store, &paths);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].persons[0].shimei, "佐藤 一郎", "{name}");
        assert!(got[1].persons[0].giji_head);
        assert_eq!(got[0].persons[0].bango.as_deref(), Some("１８７"));
        match &reference {
            None => reference = Some(got),
            Some(r) => assert!(r == &got, "{name} stored different households"),
        }
        // Derived indexes: the household view and the blind index of a person.
        assert_eq!(
            store
                .index_seqs(&p, IndexKind::Household, b"A1")
                .unwrap()
                .len(),
            1
        );
        let token = store.index_key(&p).unwrap().token("kojin", b"314159265352");
        assert_eq!(
            store
                .index_seqs(&p, IndexKind::Person, &token)
                .unwrap()
                .len(),
            1
        );
        // An access record closes the batch, naming the snapshots.
        let kek = Kek::load_file(&paths.kek).unwrap();
        let scope = AdminScope::from_kek(&kek).partition(&p);
        let rec = store
            .read_entry(&scope, out.access_record_seq.unwrap())
            .unwrap();
        let rec = kukaku::ledger::payload::AccessRecord::decode(&rec.payload).unwrap();
        assert_eq!((rec.first_seq, rec.count), (out.first_seq, out.count));
        assert_eq!(rec.purpose, "transmission_import");
    }
}

#[test]
fn idempotency_and_corrections() {
    let (_dir, paths, store) = store();
    let p = pid("131011");
    let (setai, kojin) = base();
    let (s_, k_) = (to_csv(&setai, true), to_csv(&kojin, true));
    let first = import(
        &store,
        &p,
        TID,
        Encoding::Utf8,
        s_.as_bytes(),
        k_.as_bytes(),
        &who(),
    )
    .unwrap();
    let size = store.size(&p).unwrap();
    // Same id, same content: the original result, nothing stored.
    let again = import(
        &store,
        &p,
        TID,
        Encoding::Utf8,
        s_.as_bytes(),
        k_.as_bytes(),
        &who(),
    )
    .unwrap();
    assert!(again.replayed);
    assert_eq!(
        (again.first_seq, again.count, again.households),
        (first.first_seq, first.count, first.households)
    );
    assert_eq!(store.size(&p).unwrap(), size);
    // Same id, other content: conflict.
    let mut changed = kojin.clone();
    set(&mut changed, &KOJIN_HEADER, 2, "shimei", "山田 次郎");
    let r = import(
        &store,
        &p,
        TID,
        Encoding::Utf8,
        s_.as_bytes(),
        to_csv(&changed, true).as_bytes(),
        &who(),
    );
    assert!(matches!(r, Err(ImportError::Conflict)), "{r:?}");
    assert_eq!(store.size(&p).unwrap(), size);
    // Concurrent identical retries store once.
    let (s2, k2) = {
        let f = sample::transmission("131011", "T-CONC", 5, 7);
        (f.setai, f.kojin)
    };
    let results: Vec<_> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                sc.spawn(|| {
                    import(
                        &store,
                        &p,
                        "T-CONC",
                        Encoding::Utf8,
                        s2.as_bytes(),
                        k2.as_bytes(),
                        &who(),
                    )
                    .unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|r| !r.replayed).count(), 1);
    assert_eq!(
        store
            .index_seqs(&p, IndexKind::Household, b"S0000000700000")
            .unwrap()
            .len(),
        1
    );
    // A correction (異動事由 90) names the transmission it corrects and refers to its entry.
    let mut cs = setai.clone();
    cs.truncate(2);
    set(&mut cs, &SETAI_HEADER, 2, "transmission_id", "T-FIX");
    set(&mut cs, &SETAI_HEADER, 2, "ido_jiyu", "90");
    set(&mut cs, &SETAI_HEADER, 2, "teisei_moto", TID);
    let mut ck = kojin.clone();
    ck.truncate(3);
    for line in 2..=3 {
        set(&mut ck, &KOJIN_HEADER, line, "transmission_id", "T-FIX");
    }
    set(&mut ck, &KOJIN_HEADER, 2, "shimei", "山田 太朗");
    let fix = import(
        &store,
        &p,
        "T-FIX",
        Encoding::Utf8,
        to_csv(&cs, true).as_bytes(),
        to_csv(&ck, true).as_bytes(),
        &who(),
    )
    .unwrap();
    let kek = Kek::load_file(&paths.kek).unwrap();
    let scope = AdminScope::from_kek(&kek).partition(&p);
    let e = store.read_entry(&scope, fix.first_seq).unwrap();
    assert_eq!(e.header.kind, Kind::HOUSEHOLD_CORRECTION);
    assert_eq!(e.header.ref_seq, Some(first.first_seq));
    assert_eq!(
        store.index_seqs(&p, IndexKind::Household, b"A1").unwrap(),
        vec![first.first_seq, fix.first_seq]
    );

    // The indexes are derived: wiped, then rebuilt from the log, they are the same.
    let token = store.index_key(&p).unwrap().token("kojin", b"314159265352");
    let before = (
        store.index_seqs(&p, IndexKind::Household, b"A1").unwrap(),
        store.index_seqs(&p, IndexKind::Person, &token).unwrap(),
    );
    store.replace_derived_index(&p, &[]).unwrap();
    assert!(
        store
            .index_seqs(&p, IndexKind::Household, b"A1")
            .unwrap()
            .is_empty()
    );
    let report = kukaku::flows::index::rebuild(&store, &scope, &mut |_, _| {}).unwrap();
    assert!(report.snapshots >= 8);
    let after = (
        store.index_seqs(&p, IndexKind::Household, b"A1").unwrap(),
        store.index_seqs(&p, IndexKind::Person, &token).unwrap(),
    );
    assert_eq!(before, after);
}

/// Issue 27 item 6: every 異動 transmission carries the whole household (seed 5-①). A member
/// of the household's previous snapshot who is neither sent again nor sent with a 喪失 was
/// silently dropped; through `import_checked` (the API's and the CLI's import) it is an error
/// on the household's line, and nothing is stored.
#[test]
fn a_member_missing_without_a_soshitsu_is_refused() {
    use kukaku::crypto::{AdminScope, Kek};
    use kukaku::flows::import::import_checked;
    let (_dir, paths, store) = store();
    let p = pid("131011");
    let kek = Kek::load_file(&paths.kek).unwrap();
    let scope = AdminScope::from_kek(&kek).partition(&p);
    let send = |setai: &[Vec<String>], kojin: &[Vec<String>], tid: &str| {
        import_checked(
            &store,
            &scope,
            tid,
            Encoding::Utf8,
            to_csv(setai, true).as_bytes(),
            to_csv(kojin, true).as_bytes(),
            &who(),
        )
    };
    let (setai, kojin) = base();
    send(&setai, &kojin, TID).unwrap();
    // Household A1 again (世帯構成変更), under a new transmission id.
    let a1 = |tid: &str, member: Option<bool>| {
        let (mut s_, mut k_) = base();
        s_.remove(2); // A2
        k_.truncate(3); // A2's rows go
        for r in s_.iter_mut().chain(k_.iter_mut()).skip(1) {
            r[1] = tid.to_owned();
        }
        k_[0][1] = "transmission_id".to_owned();
        s(&mut s_, 2, "ido_jiyu", "05");
        match member {
            None => {
                k_.remove(2);
                s(&mut s_, 2, "person_rows", "1");
            }
            Some(lost) if lost => {
                k(&mut k_, 3, "soshitsu_date", "2024-06-01");
                k(&mut k_, 3, "soshitsu_jiyu", "03");
                k(&mut k_, 3, "tekiyo_end", "2024-05-31");
            }
            Some(_) => {}
        }
        (s_, k_)
    };
    let size = store.size(&p).unwrap();
    let (s1, k1) = a1("T-2", None);
    match send(&s1, &k1, "T-2") {
        Err(ImportError::Rejected(r)) => assert!(
            r.problems
                .iter()
                .any(|pr| (pr.file, pr.line, pr.field, pr.reason)
                    == (FileKind::Setai, 2, Some("person_rows"), "member_missing")),
            "{:?}",
            r.problems
        ),
        other => panic!("accepted: {other:?}"),
    }
    assert_eq!(store.size(&p).unwrap(), size, "nothing stored");
    // Sent with a 喪失: accepted; afterwards the member may be left out.
    let (s2, k2) = a1("T-3", Some(true));
    send(&s2, &k2, "T-3").unwrap();
    let (s3, k3) = a1("T-4", None);
    send(&s3, &k3, "T-4").unwrap();
    // The import's access record names the earlier snapshot it read.
    let last = store.size(&p).unwrap() - 1;
    let raw = store.envelopes(&p, Seq(last), Seq(last + 1)).unwrap();
    let env = kukaku::ledger::Envelope::decode(&raw[0]).unwrap();
    let kukaku::ledger::Body::Open { payload, .. } = env.body else {
        panic!("the access record is open")
    };
    let rec = kukaku::ledger::payload::AccessRecord::decode(&payload).unwrap();
    assert_eq!(rec.purpose, "transmission_import");
    assert_eq!(
        rec.kinds,
        vec![kukaku::ledger::Kind::HOUSEHOLD_SNAPSHOT.code()]
    );
}
