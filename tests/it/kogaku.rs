//! Flow 4 input: the 高額該当情報ファイル (kogaku-v1). Each rule broken once gets its problem
//! (line, column, reason) and stores nothing; accepted variants store one sealed record per
//! household whose months feed the 多数回 rule engine; idempotency; the index is rebuilt from
//! the log.

use crate::common;

use common::flow4::who;
use common::pid;
use kukaku::crypto::{AdminScope, Kek};
use kukaku::domain::tasukai::{CareMonth, tasukai_at};
use kukaku::flows::import::ImportError;
use kukaku::flows::kogaku::{KOGAKU_HEADER, KogakuRecord, import};
use kukaku::flows::transmission::{Encoding, FileKind};
use kukaku::ledger::Kind;
use kukaku::store::{IndexKind, Paths, Store};

const TID: &str = "K-2025-0001";

fn store() -> (tempfile::TempDir, Paths, Store) {
    common::flow4::instance("hub.test", &[pid("131011"), pid("380014")])
}

/// Household A1: docs/domain.md §5 row 1 (支給 2024-05, 07, 10); A2: row 11 (70+ 一般 with
/// 外来特例-only months 02 and 04).
fn base() -> Vec<Vec<String>> {
    let row = |setai: &str, ym: &str, kubun: &str, nashi: &str| {
        ["kogaku-v1", TID, "131011", setai, ym, kubun, nashi]
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<Vec<_>>()
    };
    vec![
        KOGAKU_HEADER.iter().map(|s| (*s).to_owned()).collect(),
        row("A1", "2024-05", "1", "0"),
        row("A1", "2024-10", "1", "0"),
        row("A1", "2024-07", "1", "0"),
        row("A2", "2024-01", "1", "0"),
        row("A2", "2024-02", "2", "0"),
        row("A2", "2024-03", "1", "0"),
        row("A2", "2024-04", "2", "0"),
        row("A2", "2024-05", "1", "0"),
    ]
}

fn csv(rows: &[Vec<String>], eol: &str) -> String {
    rows.iter()
        .map(|r| format!("{}{eol}", r.join(",")))
        .collect()
}

fn records(store: &Store, paths: &Paths) -> Vec<(u64, KogakuRecord)> {
    let kek = Kek::load_file(&paths.kek).unwrap();
    let scope = AdminScope::from_kek(&kek).partition(&pid("131011"));
    let size = store.size(&pid("131011")).unwrap();
    (0..size)
        .filter_map(|seq| {
            let e = store.read_entry(&scope, seq).unwrap();
            (e.header.kind == Kind::KOGAKU_RECORD)
                .then(|| (seq, serde_json::from_slice(&e.payload).unwrap()))
        })
        .collect()
}

#[test]
fn accepted_files_feed_the_rule_engine() {
    for (enc, bom, eol) in [
        (Encoding::Utf8, false, "\r\n"),
        (Encoding::Utf8, true, "\n"),
        (Encoding::Cp932, false, "\r\n"),
    ] {
        let (_d, paths, store) = store();
        let mut bytes = if bom {
            b"\xEF\xBB\xBF".to_vec()
        } else {
            Vec::new()
        };
        bytes.extend_from_slice(csv(&base(), eol).as_bytes());
        let out = import(&store, &pid("131011"), TID, enc, &bytes, &who()).unwrap();
        assert_eq!((out.households, out.replayed), (2, false));
        assert!(out.access_record_seq.is_some());
        let recs = records(&store, &paths);
        assert_eq!(recs.len(), 2);
        let (seq_a1, a1) = &recs[0];
        assert_eq!(a1.setai_no, "A1");
        // Months are stored ascending, whatever the file order.
        let months: Vec<_> = a1.months.iter().map(|m| m.shinryo_ym.as_str()).collect();
        assert_eq!(months, ["2024-05", "2024-07", "2024-10"]);
        let ym = |s| CareMonth::parse(s).unwrap();
        assert!(tasukai_at(&a1.months(), &[], ym("2025-02")).tasukai);
        assert!(!tasukai_at(&a1.months(), &[], ym("2025-06")).tasukai);
        let a2 = &recs[1].1;
        let r = tasukai_at(&a2.months(), &[], ym("2024-06"));
        assert_eq!((r.prior, r.tasukai), (3, true));
        assert_eq!(
            store
                .index_seqs(&pid("131011"), IndexKind::Kogaku, b"A1")
                .unwrap(),
            vec![*seq_a1]
        );
        // The flow-5 household view is not touched.
        assert!(
            store
                .index_seqs(&pid("131011"), IndexKind::Household, b"A1")
                .unwrap()
                .is_empty()
        );
    }
}

type Mutation = fn(&mut Vec<Vec<String>>);
/// (name, mutation, expected (line, column, reason)).
type Case = (
    &'static str,
    Mutation,
    (u64, Option<&'static str>, &'static str),
);

fn set(rows: &mut [Vec<String>], line: usize, col: &str, v: &str) {
    let i = KOGAKU_HEADER.iter().position(|c| *c == col).unwrap();
    rows[line - 1][i] = v.to_owned();
}

#[test]
fn every_rule_broken_once_is_reported_and_nothing_is_stored() {
    let cases: Vec<Case> = vec![
        (
            "layout",
            |r| set(r, 2, "layout", "kogaku-v2"),
            (2, Some("layout"), "layout"),
        ),
        (
            "transmission id",
            |r| set(r, 3, "transmission_id", "K-OTHER"),
            (3, Some("transmission_id"), "transmission_id_mismatch"),
        ),
        (
            "another partition",
            |r| set(r, 4, "hokensha_no", "380014"),
            (4, Some("hokensha_no"), "other_partition"),
        ),
        (
            "check digit",
            |r| set(r, 4, "hokensha_no", "131010"),
            (4, Some("hokensha_no"), "check_digit"),
        ),
        (
            "setai_no",
            |r| set(r, 5, "setai_no", "A-1"),
            (5, Some("setai_no"), "format"),
        ),
        (
            "month 13",
            |r| set(r, 6, "shinryo_ym", "2024-13"),
            (6, Some("shinryo_ym"), "month"),
        ),
        (
            "和暦",
            |r| set(r, 6, "shinryo_ym", "R6-04"),
            (6, Some("shinryo_ym"), "month"),
        ),
        (
            "slashes",
            |r| set(r, 6, "shinryo_ym", "2024/04"),
            (6, Some("shinryo_ym"), "month"),
        ),
        (
            "missing month",
            |r| set(r, 6, "shinryo_ym", ""),
            (6, Some("shinryo_ym"), "missing"),
        ),
        (
            "duplicate month",
            |r| set(r, 3, "shinryo_ym", "2024-05"),
            (3, Some("shinryo_ym"), "duplicate"),
        ),
        (
            "shikyu 3",
            |r| set(r, 7, "shikyu_kubun", "3"),
            (7, Some("shikyu_kubun"), "code"),
        ),
        (
            "tasukai_nashi 2",
            |r| set(r, 8, "tasukai_nashi", "2"),
            (8, Some("tasukai_nashi"), "code"),
        ),
        (
            "missing flag",
            |r| set(r, 9, "tasukai_nashi", ""),
            (9, Some("tasukai_nashi"), "missing"),
        ),
        (
            "header",
            |r| set(r, 1, "setai_no", "世帯番号"),
            (1, None, "header"),
        ),
        (
            "column count",
            |r| r[2].pop().map_or((), drop),
            (3, None, "column_count"),
        ),
    ];
    let (_d, paths, store) = store();
    let p = pid("131011");
    let before = store.size(&p).unwrap();
    for (name, mutate, (line, field, reason)) in cases {
        let mut rows = base();
        mutate(&mut rows);
        match import(
            &store,
            &p,
            TID,
            Encoding::Utf8,
            csv(&rows, "\r\n").as_bytes(),
            &who(),
        ) {
            Err(ImportError::Rejected(r)) => {
                assert_eq!(r.problems.len(), 1, "{name}: {:?}", r.problems);
                let pr = &r.problems[0];
                assert_eq!(
                    (pr.file, pr.line, pr.field, pr.reason),
                    (FileKind::Kogaku, line, field, reason),
                    "{name}"
                );
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    // Whole-file problems.
    for (name, bytes, reason) in [
        ("empty", Vec::new(), "empty_file"),
        (
            "header only",
            csv(&base()[..1], "\r\n").into_bytes(),
            "no_rows",
        ),
        ("undecodable", b"\xff\xfe\n".to_vec(), "undecodable"),
    ] {
        match import(&store, &p, TID, Encoding::Utf8, &bytes, &who()) {
            Err(ImportError::Rejected(r)) => {
                assert!(
                    r.problems.iter().any(|pr| pr.reason == reason),
                    "{name}: {:?}",
                    r.problems
                )
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    // Every problem at once, not just the first.
    let mut rows = base();
    set(&mut rows, 2, "shikyu_kubun", "9");
    set(&mut rows, 5, "hokensha_no", "380014");
    match import(
        &store,
        &p,
        TID,
        Encoding::Utf8,
        csv(&rows, "\n").as_bytes(),
        &who(),
    ) {
        Err(ImportError::Rejected(r)) => assert_eq!(r.problems.len(), 2),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.size(&p).unwrap(), before, "something was stored");
    assert!(records(&store, &paths).is_empty());
}

#[test]
fn idempotent_by_transmission_id_and_rebuilt_from_the_log() {
    let (_d, paths, store) = store();
    let p = pid("131011");
    let bytes = csv(&base(), "\r\n").into_bytes();
    let first = import(&store, &p, TID, Encoding::Utf8, &bytes, &who()).unwrap();
    let size = store.size(&p).unwrap();
    let again = import(&store, &p, TID, Encoding::Utf8, &bytes, &who()).unwrap();
    assert!(again.replayed);
    assert_eq!(
        (again.first_seq, again.count),
        (first.first_seq, first.count)
    );
    assert_eq!(store.size(&p).unwrap(), size, "stored twice");
    let mut other = base();
    set(&mut other, 2, "shikyu_kubun", "2");
    assert!(matches!(
        import(
            &store,
            &p,
            TID,
            Encoding::Utf8,
            csv(&other, "\r\n").as_bytes(),
            &who()
        ),
        Err(ImportError::Conflict)
    ));
    // A flow-5 transmission may use the same id: the namespaces are apart.
    assert!(store.transmission(&p, TID).unwrap().is_none());

    let seqs = store.index_seqs(&p, IndexKind::Kogaku, b"A2").unwrap();
    let kek = Kek::load_file(&paths.kek).unwrap();
    let scope = AdminScope::from_kek(&kek).partition(&p);
    store.replace_derived_index(&p, &[]).unwrap();
    assert!(
        store
            .index_seqs(&p, IndexKind::Kogaku, b"A2")
            .unwrap()
            .is_empty()
    );
    kukaku::flows::index::rebuild(&store, &scope, &mut |_, _| {}).unwrap();
    assert_eq!(
        store.index_seqs(&p, IndexKind::Kogaku, b"A2").unwrap(),
        seqs
    );
}
