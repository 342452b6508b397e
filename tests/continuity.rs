//! Flow 4 candidate extraction: a household moves from 千代田区 (A) to 中央区 (B) in Tokyo;
//! the same person also appears in 大阪市 (another prefecture), which is never read. The
//! candidate in B holds no 個人番号, gets the 参酌基準 case and suggestion, records the read
//! of A in A, and a rerun adds nothing. A gap between the two periods goes to a person.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::{pid, small};
use kukaku::crypto::{AdminScope, Kek};
use kukaku::domain::continuity::Rules;
use kukaku::flows::continuity::{Candidate, extract};
use kukaku::flows::import::{Importer, import};
use kukaku::flows::transmission::{Encoding, KOJIN_HEADER, SETAI_HEADER};
use kukaku::ledger::payload::AccessRecord;
use kukaku::ledger::{Envelope, Kind, PartitionId};
use kukaku::store::{Paths, Store};

const HEAD: &str = "123456789018";
const SPOUSE: &str = "123456789050";
const CHILD: &str = "314159265352";

fn who() -> Importer {
    Importer {
        actor: "admin-cli".into(),
        role: "admin".into(),
        route: "test".into(),
        request_id: "-".into(),
    }
}

/// One person row: (個人番号, 氏名, 続柄, 取得, 適用開始, 適用終了).
type P<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, &'a str);

fn files(
    hokensha: &str,
    tid: &str,
    setai_no: &str,
    ido: (&str, &str),
    people: &[P<'_>],
) -> (String, String) {
    let line = |fields: Vec<String>| fields.join(",") + "\r\n";
    let mut setai = line(SETAI_HEADER.iter().map(|s| (*s).to_owned()).collect());
    setai += &line(
        [
            "setai-v1",
            tid,
            hokensha,
            setai_no,
            ido.0,
            ido.1,
            "",
            people[0].0,
            "1",
            "",
            "",
            "東京都",
            &people.len().to_string(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect(),
    );
    let mut kojin = line(KOJIN_HEADER.iter().map(|s| (*s).to_owned()).collect());
    for (i, (no, name, zoku, shutoku, start, end)) in people.iter().enumerate() {
        kojin += &line(
            [
                "kojin-v1",
                tid,
                setai_no,
                no,
                "",
                &format!("{}", 100 + i),
                "00",
                name,
                "",
                "1980-01-01",
                "1",
                zoku,
                shutoku,
                "99",
                "",
                "",
                start,
                end,
                "30",
                "",
                "",
                "0",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        );
    }
    (setai, kojin)
}

fn load(
    store: &Store,
    p: &PartitionId,
    tid: &str,
    setai_no: &str,
    ido: (&str, &str),
    people: &[P<'_>],
) {
    let (s, k) = files(p.as_str(), tid, setai_no, ido, people);
    import(
        store,
        p,
        tid,
        Encoding::Utf8,
        s.as_bytes(),
        k.as_bytes(),
        &who(),
    )
    .unwrap();
}

fn kinds(store: &Store, p: &PartitionId) -> Vec<(Kind, Vec<u8>)> {
    store
        .envelopes(p, 0, store.size(p).unwrap())
        .unwrap()
        .iter()
        .map(|raw| {
            let e = Envelope::decode(raw).unwrap();
            let payload = match e.body {
                kukaku::ledger::Body::Open { payload, .. } => payload,
                _ => Vec::new(),
            };
            (e.header.kind, payload)
        })
        .collect()
}

#[test]
fn a_same_prefecture_move_becomes_one_candidate_in_b() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(dir.path());
    let store = Store::init(&paths, "hub.kokuho-13.example", small()).unwrap();
    let (a, b, c, d) = (pid("131011"), pid("131029"), pid("270009"), pid("131037"));
    store
        .request_partitions(&[a.clone(), b.clone(), c.clone(), d.clone()])
        .unwrap();
    store.provision(&mut |_, _| {}).unwrap();

    // A: the household as it left (適用終了 2024-03-31); B: the same people from 2024-04-01,
    // a child born since (case 3). Osaka has the head too; 港区 (D) has a household that
    // started a day late (a 空白期間).
    load(
        &store,
        &a,
        "A-1",
        "A100",
        ("2024-03-31", "04"),
        &[
            (
                HEAD,
                "山田 太郎",
                "01",
                "2020-01-01",
                "2020-01-01",
                "2024-03-31",
            ),
            (
                SPOUSE,
                "山田 花子",
                "02",
                "2020-01-01",
                "2020-01-01",
                "2024-03-31",
            ),
        ],
    );
    load(
        &store,
        &b,
        "B-1",
        "B200",
        ("2024-04-01", "03"),
        &[
            (HEAD, "山田 太郎", "01", "2020-01-01", "2024-04-01", ""),
            (SPOUSE, "山田 花子", "02", "2020-01-01", "2024-04-01", ""),
            (CHILD, "山田 一郎", "03", "2024-05-01", "2024-05-01", ""),
        ],
    );
    load(
        &store,
        &c,
        "C-1",
        "C300",
        ("2019-01-01", "01"),
        &[(HEAD, "山田 太郎", "01", "2019-01-01", "2019-01-01", "")],
    );
    let other = "983205673214";
    load(
        &store,
        &a,
        "A-2",
        "A101",
        ("2024-05-31", "04"),
        &[(
            other,
            "佐藤 次郎",
            "01",
            "2018-01-01",
            "2018-01-01",
            "2024-05-31",
        )],
    );
    load(
        &store,
        &d,
        "D-1",
        "D400",
        ("2024-06-05", "03"),
        &[(other, "佐藤 次郎", "01", "2018-01-01", "2024-06-05", "")],
    );
    let c_size = store.size(&c).unwrap();

    let kek = Kek::load_file(&paths.kek).unwrap();
    let admin = AdminScope::from_kek(&kek);
    let tokyo = admin.prefecture("13").unwrap();
    let report = extract(&store, &tokyo, &Rules::default(), &who()).unwrap();
    assert_eq!(report.partitions, 3, "Osaka must not be in Tokyo's run");
    assert_eq!(report.candidates.len(), 2, "{report:?}");

    // B's candidate: the old household, case 3 (a member added), contiguous, continue.
    let scope_b = admin.partition(&b);
    let seq = report
        .candidates
        .iter()
        .find(|m| m.partition == "131029")
        .unwrap()
        .seq
        .unwrap();
    let e = store.read_entry(&scope_b, seq).unwrap();
    assert_eq!(e.header.kind, Kind::CONTINUITY_CANDIDATE);
    let cand: Candidate = serde_json::from_slice(&e.payload).unwrap();
    assert_eq!(
        (
            cand.old_hokensha_no.as_str(),
            cand.old_setai_no.as_str(),
            cand.new_setai_no.as_str()
        ),
        ("131011", "A100", "B200")
    );
    assert_eq!(
        (
            cand.case.as_str(),
            cand.period.as_str(),
            cand.suggestion.as_str()
        ),
        ("3", "contiguous", "continue")
    );
    assert_eq!(cand.ido_date, "2024-04-01");
    assert_eq!(cand.members_before.len(), 2);
    assert_eq!(cand.members_after.len(), 3);
    assert_eq!(e.header.ref_seq, Some(cand.new_seq));
    // Only what B needs: no 個人番号 or 番号 in the payload.
    let text = String::from_utf8_lossy(&e.payload);
    for id in [HEAD, SPOUSE, CHILD] {
        assert!(!text.contains(id), "a 個人番号 in the candidate");
    }
    // D's candidate: a day's gap goes to a person.
    let m = report
        .candidates
        .iter()
        .find(|m| m.partition == "131037")
        .unwrap();
    assert_eq!(
        (m.period.as_str(), m.suggestion.as_str()),
        ("gap", "manual")
    );

    // The reads of A are recorded in A; B has its scan and candidate access records.
    let a_records: Vec<AccessRecord> = kinds(&store, &a)
        .into_iter()
        .filter(|(k, _)| *k == Kind::ACCESS_RECORD)
        .map(|(_, p)| AccessRecord::decode(&p).unwrap())
        .filter(|r| r.purpose == "continuity_extract")
        .collect();
    assert_eq!(a_records.len(), 2);
    let b_purposes: Vec<String> = kinds(&store, &b)
        .into_iter()
        .filter(|(k, _)| *k == Kind::ACCESS_RECORD)
        .map(|(_, p)| AccessRecord::decode(&p).unwrap().purpose)
        .collect();
    assert!(b_purposes.iter().any(|p| p == "continuity_candidate"));
    assert!(b_purposes.iter().any(|p| p == "continuity_scan"));
    // Another prefecture is never read.
    assert_eq!(store.size(&c).unwrap(), c_size);

    // A rerun adds no candidate and opens no snapshot of A for one (the scan of each
    // partition's own households is recorded again: it is a read).
    let extract_reads = |store: &Store| {
        kinds(store, &a)
            .into_iter()
            .filter(|(k, p)| {
                *k == Kind::ACCESS_RECORD
                    && AccessRecord::decode(p).unwrap().purpose == "continuity_extract"
            })
            .count()
    };
    let again = extract(&store, &tokyo, &Rules::default(), &who()).unwrap();
    assert!(again.candidates.is_empty(), "{again:?}");
    assert_eq!(again.already_extracted, 2);
    assert_eq!(extract_reads(&store), 2);
    let candidates = kinds(&store, &b)
        .iter()
        .filter(|(k, _)| *k == Kind::CONTINUITY_CANDIDATE)
        .count();
    assert_eq!(candidates, 1);

    // Osaka's job never reaches Tokyo.
    let osaka = admin.prefecture("27").unwrap();
    let a_size = store.size(&a).unwrap();
    let r = extract(&store, &osaka, &Rules::default(), &who()).unwrap();
    assert_eq!((r.partitions, r.candidates.len()), (1, 0));
    assert_eq!(store.size(&a).unwrap(), a_size);
}

#[test]
fn a_prefecture_configured_differently_changes_the_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(dir.path());
    let store = Store::init(&paths, "hub.kokuho-15.example", small()).unwrap();
    // Two municipalities of 新潟県 (15): the spouse becomes head in B (case 2).
    let (a, b) = (pid("150011"), pid("150029"));
    store.request_partitions(&[a.clone(), b.clone()]).unwrap();
    store.provision(&mut |_, _| {}).unwrap();
    load(
        &store,
        &a,
        "A-1",
        "A1",
        ("2024-03-31", "04"),
        &[
            (
                HEAD,
                "山田 太郎",
                "01",
                "2020-01-01",
                "2020-01-01",
                "2024-03-31",
            ),
            (
                SPOUSE,
                "山田 花子",
                "02",
                "2020-01-01",
                "2020-01-01",
                "2024-03-31",
            ),
        ],
    );
    load(
        &store,
        &b,
        "B-1",
        "B1",
        ("2024-04-01", "03"),
        &[
            (SPOUSE, "山田 花子", "01", "2020-01-01", "2024-04-01", ""),
            (HEAD, "山田 太郎", "02", "2020-01-01", "2024-04-01", ""),
        ],
    );
    let kek = Kek::load_file(&paths.kek).unwrap();
    let niigata = AdminScope::from_kek(&kek).prefecture("15").unwrap();
    let rules = Rules::parse("case 2 = manual\n").unwrap();
    let r = extract(&store, &niigata, &rules, &who()).unwrap();
    assert_eq!(r.candidates.len(), 1);
    assert_eq!(
        (
            r.candidates[0].case.as_str(),
            r.candidates[0].suggestion.as_str()
        ),
        ("2", "manual")
    );
}
