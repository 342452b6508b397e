//! Flow 4 candidate extraction: a household moves from 千代田区 (A) to 中央区 (B) in Tokyo;
//! the same person also appears in 大阪市 (another prefecture), which is never read. The
//! candidate in B holds no 個人番号, gets the 参酌基準 case and suggestion, records the read
//! of A in A, and a rerun adds nothing. A gap between the two periods goes to a person.

use crate::common;

use common::pid;

/// The operator's extraction request over the fixtures' data (their moves start before
/// today's window).
const EXTRACT_BODY: &str = r#"{"as_of":"2025-03-31"}"#;
use kukaku::crypto::{AdminScope, Kek};
use kukaku::domain::continuity::Rules;
use kukaku::flows::continuity::{Candidate, extract};
use kukaku::ledger::payload::AccessRecord;
use kukaku::ledger::{Envelope, Kind, PartitionId};
use kukaku::store::Store;

use common::flow4::{
    CHILD, HEAD, SPOUSE, as_of, instance, kogaku, load, tokyo_arrives, tokyo_leaves, tokyo_move,
    who,
};

fn kinds(store: &Store, p: &PartitionId) -> Vec<(Kind, Vec<u8>)> {
    store
        .envelopes(p, Seq(0), Seq(store.size(p).unwrap()))
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
    let (a, b, c, d) = (pid("131011"), pid("131029"), pid("270009"), pid("131037"));
    let (_dir, paths, store) = instance(
        "hub.kokuho-13.example",
        &[a.clone(), b.clone(), c.clone(), d.clone()],
    );

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
    let report = extract(&store, &tokyo, &Rules::default(), &who(), as_of()).unwrap();
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
    // Since issue 27 item 2 the rerun is incremental: nothing changed, so it reads no
    // household at all (it used to rescan everything and find its two candidates again).
    let again = extract(&store, &tokyo, &Rules::default(), &who(), as_of()).unwrap();
    assert!(again.candidates.is_empty(), "{again:?}");
    assert_eq!((again.households_read, again.already_extracted), (0, 0));
    assert_eq!(extract_reads(&store), 2);
    let candidates = kinds(&store, &b)
        .iter()
        .filter(|(k, _)| *k == Kind::CONTINUITY_CANDIDATE)
        .count();
    assert_eq!(candidates, 1);

    // Osaka's job never reaches Tokyo.
    let osaka = admin.prefecture("27").unwrap();
    let a_size = store.size(&a).unwrap();
    let r = extract(&store, &osaka, &Rules::default(), &who(), as_of()).unwrap();
    assert_eq!((r.partitions, r.candidates.len()), (1, 0));
    assert_eq!(store.size(&a).unwrap(), a_size);
}

#[test]
fn a_prefecture_configured_differently_changes_the_suggestion() {
    // Two municipalities of 新潟県 (15): the spouse becomes head in B (case 2).
    let (a, b) = (pid("150011"), pid("150029"));
    let (_dir, paths, store) = instance("hub.kokuho-15.example", &[a.clone(), b.clone()]);
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
    let r = extract(&store, &niigata, &rules, &who(), as_of()).unwrap();
    assert_eq!(r.candidates.len(), 1);
    assert_eq!(
        (
            r.candidates[0].case.as_str(),
            r.candidates[0].suggestion.as_str()
        ),
        ("2", "manual")
    );
}

/// docs/domain.md §5 rows 7 and 8 end to end: A paid 2024-06 and 09 (and 2023-10, outside the
/// window); the household moves to B on 2024-11-01; B decides (after a correction) to
/// continue; the hub confirms and carries 2 months; with B's own 2025-01, care month 2025-03
/// is 多数回. A second household decided "not continue" carries nothing.
#[test]
fn decide_confirm_and_carry_over() {
    use kukaku::domain::tasukai::{CareMonth, tasukai_at};
    use kukaku::flows::decision::{candidates, confirm, decide, hikitsugi_csv};
    // A100 → B100 with A's months 2024-06 and 2024-09 (the shared fixture), plus 2023-10
    // outside the window, and a second household A200 → B200.
    let (_dir, paths, store, a, b) = tokyo_move();
    let second = "983205673214";
    load(
        &store,
        &a,
        "A-2",
        "A200",
        ("2024-10-31", "04"),
        &[(
            second,
            "佐藤 次郎",
            "01",
            "2020-01-01",
            "2020-01-01",
            "2024-10-31",
        )],
    );
    load(
        &store,
        &b,
        "B-2",
        "B200",
        ("2024-11-01", "03"),
        &[(second, "佐藤 次郎", "01", "2020-01-01", "2024-11-01", "")],
    );
    kogaku(
        &store,
        &a,
        "KA-2",
        &[("A100", "2023-10"), ("A200", "2024-08")],
    );

    let kek = Kek::load_file(&paths.kek).unwrap();
    let admin = AdminScope::from_kek(&kek);
    let tokyo = admin.prefecture("13").unwrap();
    extract(&store, &tokyo, &Rules::default(), &who(), as_of()).unwrap();
    let scope_b = admin.partition(&b);
    let list = candidates(&store, &scope_b).unwrap();
    assert_eq!(list.len(), 2);
    let (c1, c2) = (list[0].seq, list[1].seq);
    // No 高額該当 months reach B before it decides.
    assert!(!format!("{:?}", list[0].candidate).contains("2024-06"));

    // A decision on something that is not B's candidate is refused.
    assert!(decide(&store, &scope_b, 0, "continue", None, "窓口 1", &who()).is_err());
    assert!(decide(&store, &scope_b, c1, "maybe", None, "窓口 1", &who()).is_err());
    assert!(decide(&store, &scope_b, c1, "continue", None, " ", &who()).is_err());
    // A correction is a newer decision; the latest counts.
    decide(&store, &scope_b, c1, "not_continue", None, "窓口 1", &who()).unwrap();
    decide(
        &store,
        &scope_b,
        c1,
        "continue",
        Some("世帯主同一を確認"),
        "窓口 1",
        &who(),
    )
    .unwrap();
    decide(
        &store,
        &scope_b,
        c2,
        "not_continue",
        Some("別世帯"),
        "窓口 2",
        &who(),
    )
    .unwrap();
    let list = candidates(&store, &scope_b).unwrap();
    assert_eq!(list[0].decisions.len(), 2);
    assert_eq!(list[0].decision.as_ref().unwrap().1.decision, "continue");

    let r = confirm(&store, &tokyo, &who(), "2025-01-10T10:00:00+09:00").unwrap();
    assert_eq!(r.confirmed.len(), 1, "{r:?}");
    assert_eq!(r.confirmed[0].1, 2);
    let again = confirm(&store, &tokyo, &who(), "2025-01-11T10:00:00+09:00").unwrap();
    assert!(again.confirmed.is_empty());
    assert_eq!(again.already_confirmed, 1);

    let list = candidates(&store, &scope_b).unwrap();
    let carry = &list[0].carry_over.as_ref().unwrap().1;
    assert_eq!(carry.months, ["2024-06", "2024-09"]);
    assert_eq!(
        (carry.old_setai_no.as_str(), carry.new_setai_no.as_str()),
        ("A100", "B100")
    );
    assert!(
        list[1].carry_over.is_none(),
        "a not-continuing household carried months"
    );
    // Row 7: with B's own 2025-01, care month 2025-03 is 多数回; row 8 (not confirmed): not.
    let carried: Vec<CareMonth> = carry
        .months
        .iter()
        .map(|m| CareMonth::parse(m).unwrap())
        .collect();
    let own = vec![kukaku::domain::tasukai::KogakuMonth {
        month: CareMonth::parse("2025-01").unwrap(),
        shikyu: kukaku::domain::tasukai::Shikyu::Household,
        low_income: false,
    }];
    let ym = CareMonth::parse("2025-03").unwrap();
    assert_eq!(tasukai_at(&own, &carried, ym).prior, 3);
    assert!(tasukai_at(&own, &carried, ym).tasukai);
    assert!(!tasukai_at(&own, &[], ym).tasukai);

    // The 連携ファイル row; the hand-over is a 提供記録 in A.
    let csv = hikitsugi_csv(&list);
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 2, "{csv}");
    // hikitsugi-v2: row id (B and the row's seq), row kind 1 (新規), then the v1 columns.
    let (carry_seq, _) = list[0].carry_over.as_ref().unwrap();
    assert!(rows[1].starts_with(&format!(
        "hikitsugi-v2,131029:{carry_seq},1,131029:{}",
        list[0].decision.as_ref().unwrap().0
    )));
    assert!(rows[1].contains(",2024-06;2024-09,2,"), "{csv}");
    let provisions: Vec<_> = kinds(&store, &a)
        .into_iter()
        .filter(|(k, _)| *k == Kind::PROVISION_RECORD)
        .map(|(_, p)| kukaku::ledger::payload::ProvisionRecord::decode(&p).unwrap())
        .collect();
    assert_eq!(provisions.len(), 1);
    assert_eq!(provisions[0].purpose, "kogaku_carry_over");
    assert!(provisions[0].recipient.ends_with("/131029"));
}

/// The hub's API over `store` for the API tests (oneshot, no socket).
struct Api {
    app: axum::Router,
}

impl Api {
    fn new(store: &std::sync::Arc<Store>, rules: Rules) -> Api {
        use kukaku::api::{self, AppState, Limits, ServerRole};
        let state = AppState::new(std::sync::Arc::clone(store), ServerRole::Hub)
            .with_continuity_rules(rules);
        Api {
            app: api::router(state, Limits::default()),
        }
    }

    /// A bearer token of a new credential, valid for a day.
    fn token(
        store: &Store,
        role: kukaku::crypto::credential::Role,
        reach: kukaku::crypto::credential::Reach,
    ) -> String {
        let day = kukaku::store::now_unix_ms() + 86_400_000;
        store
            .issue_credential(role, reach, "test", day)
            .unwrap()
            .0
            .to_text()
            .to_string()
    }

    async fn call(
        &self,
        method: &str,
        uri: impl AsRef<str>,
        token: &str,
        body: Option<&str>,
    ) -> (axum::http::StatusCode, String) {
        use tower::ServiceExt;
        let req = axum::http::Request::builder()
            .method(method)
            .uri(uri.as_ref())
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(body.map_or_else(axum::body::Body::empty, |b| {
                axum::body::Body::from(b.to_owned())
            }))
            .unwrap();
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 24)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    /// A municipality sends a 世帯ファイル and 個人ファイル pair (flow 5), which must be accepted.
    async fn send(&self, token: &str, tid: &str, (setai, kojin): (String, String)) {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let body = serde_json::json!({"transmission_id": tid, "encoding": "utf-8",
            "setai_file": b64(&setai), "kojin_file": b64(&kojin)})
        .to_string();
        let (s, body) = self
            .call("POST", "/v1/transmissions", token, Some(&body))
            .await;
        assert_eq!(s, axum::http::StatusCode::CREATED, "{body}");
    }

    /// The operator runs `extract` (as of the fixtures' date) or `confirm`: the report.
    async fn run(&self, op: &str, what: &str) -> serde_json::Value {
        let body = if what == "extract" {
            EXTRACT_BODY
        } else {
            "{}"
        };
        let uri = format!("/v1/continuity/{what}");
        let (s, body) = self.call("POST", uri, op, Some(body)).await;
        assert_eq!(s, axum::http::StatusCode::OK, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// A 確定指示 (`continue` or `not_continue`) on the caller's move `seq`.
    async fn decide(&self, token: &str, seq: u64, decision: &str) {
        let body = format!(r#"{{"decision":"{decision}","reason":null,"operator":"窓口 1"}}"#);
        let uri = format!("/v1/continuity/candidates/{seq}/decision");
        let (s, body) = self.call("POST", uri, token, Some(&body)).await;
        assert_eq!(s, axum::http::StatusCode::CREATED, "{body}");
    }

    /// The caller's candidates (every move's state).
    async fn listed(&self, token: &str) -> serde_json::Value {
        let (s, body) = self
            .call("GET", "/v1/continuity/candidates", token, None)
            .await;
        assert_eq!(s, axum::http::StatusCode::OK, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["candidates"].clone()
    }

    /// The caller's 連携ファイル rows as (row_kind code, months).
    async fn carryover_rows(&self, token: &str) -> Vec<(String, String)> {
        let (s, csv) = self
            .call("GET", "/v1/continuity/carryover.csv", token, None)
            .await;
        assert_eq!(s, axum::http::StatusCode::OK);
        csv.lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f[2].to_owned(), f[9].to_owned())
            })
            .collect()
    }
}

/// The same flow through the HTTP API: the continuity operator extracts and confirms, B lists,
/// decides, and downloads the 連携ファイル; A sees none of B's candidates and cannot decide
/// one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_keeps_each_municipality_to_its_own_candidates() {
    use axum::http::StatusCode;
    use kukaku::crypto::credential::{Reach, Role};
    use std::sync::Arc;

    let (_dir, _paths, store, a, b) = tokio::task::block_in_place(tokyo_move);
    let store = Arc::new(store);
    let op = Api::token(
        &store,
        Role::ContinuityOperator,
        Reach::Prefecture("13".into()),
    );
    let muni_a = Api::token(&store, Role::Municipality, Reach::Partition(a.clone()));
    let muni_b = Api::token(&store, Role::Municipality, Reach::Partition(b.clone()));
    let api = Api::new(&store, Rules::default());
    let (s, body) = api
        .call("POST", "/v1/continuity/extract", &op, Some(EXTRACT_BODY))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, body) = api
        .call(
            "GET",
            "/v1/continuity/candidates?state=undecided",
            &muni_b,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let seq = v["candidates"][0]["seq"].as_u64().unwrap();
    assert_eq!(v["candidates"][0]["candidate"]["old_setai_no"], "A100");
    assert!(
        !body.contains(HEAD) && !body.contains("2024-06"),
        "B sees too much before deciding"
    );
    // A: no candidates of its own, and B's seq names nothing in A.
    let (s, body) = api
        .call("GET", "/v1/continuity/candidates", &muni_a, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(!body.contains("A100"), "A sees B's candidate: {body}");
    let decision = r#"{"decision":"continue","reason":null,"operator":"窓口 1"}"#;
    let (s, _) = api
        .call(
            "POST",
            format!("/v1/continuity/candidates/{seq}/decision"),
            &muni_a,
            Some(decision),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, body) = api
        .call(
            "POST",
            format!("/v1/continuity/candidates/{seq}/decision"),
            &muni_b,
            Some(r#"{"decision":"maybe","operator":"x"}"#),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (s, body) = api
        .call(
            "POST",
            format!("/v1/continuity/candidates/{seq}/decision"),
            &muni_b,
            Some(decision),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    // Only the continuity operator confirms.
    let (s, _) = api
        .call("POST", "/v1/continuity/confirm", &muni_b, Some("{}"))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, body) = api
        .call("POST", "/v1/continuity/confirm", &op, Some("{}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, body) = api
        .call("GET", "/v1/continuity/results", &muni_b, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["candidates"][0]["carry_over"][1]["count"], 2, "{body}");
    let (s, csv) = api
        .call("GET", "/v1/continuity/carryover.csv", &muni_b, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(csv.contains(",2024-06;2024-09,2,"), "{csv}");
    let (s, sjis) = api
        .call(
            "GET",
            "/v1/continuity/carryover.csv?encoding=cp932",
            &muni_b,
            None,
        )
        .await;
    assert_eq!(
        (s, sjis.as_str()),
        (StatusCode::OK, csv.as_str()),
        "the layout is ASCII in both encodings"
    );
    let (s, _) = api
        .call(
            "GET",
            "/v1/continuity/carryover.csv?encoding=latin1",
            &muni_b,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, csv) = api
        .call("GET", "/v1/continuity/carryover.csv", &muni_a, None)
        .await;
    assert_eq!(
        (s, csv.lines().count()),
        (StatusCode::OK, 1),
        "A got B's rows: {csv}"
    );
}

fn files_under(dir: &std::path::Path, out: &mut Vec<(std::path::PathBuf, Vec<u8>)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
}

fn found(files: &[(std::path::PathBuf, Vec<u8>)], needle: &[u8]) -> Vec<std::path::PathBuf> {
    files
        .iter()
        .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle))
        .map(|(p, _)| p.clone())
        .collect()
}

/// Issue 26 item 3: after `keys destroy --partition A`, A's transmission records still
/// listed its 世帯番号 in clear (and `GET /v1/transmissions/{id}` returned them), its deleted
/// index keys stayed in the WAL and table files, and its people's matching tokens were
/// HMACs under the prefecture's key, which destroy does not touch. Now: a raw byte scan of
/// every file of the instance finds no 世帯番号 and no index key of A, and a matching
/// lookup for one of A's 個人番号 finds nothing (the slot needs A's destroyed index key).
#[test]
fn a_destroyed_partition_leaves_no_household_number_index_key_or_matching_token() {
    use kukaku::store::{DestroyScope, KeyActor};
    let (a, b) = (pid("131011"), pid("131029"));
    let (dir, paths, store) = instance("hub.kokuho-13.example", &[a.clone(), b.clone()]);
    const SETAI: &str = "SHRED7Q3Z9X1K4";
    load(
        &store,
        &a,
        "A-1",
        SETAI,
        ("2024-03-31", "04"),
        &[(
            HEAD,
            "山田 太郎",
            "01",
            "2020-01-01",
            "2020-01-01",
            "2024-03-31",
        )],
    );
    tokyo_arrives(&store, &b, "2024-04-01");
    kogaku(&store, &a, "KA", &[(SETAI, "2024-01")]);
    let kek = Kek::load_file(&paths.kek).unwrap();
    let admin = AdminScope::from_kek(&kek);
    let tokyo = admin.prefecture("13").unwrap();
    let made = extract(&store, &tokyo, &Rules::default(), &who(), as_of()).unwrap();
    assert_eq!(made.candidates.len(), 1, "{made:?}");
    let matching = store
        .matching_key("13")
        .unwrap()
        .token("kojin", HEAD.as_bytes());
    let slot = store.index_key(&a).unwrap().matching_slot(&matching);
    assert_eq!(
        store
            .index_seqs(&a, kukaku::store::IndexKind::Matching, &slot)
            .unwrap()
            .len(),
        1
    );
    assert!(store.transmission(&a, "A-1").unwrap().is_some());
    drop(store);
    // A's derived index keys, read raw: the 24 bytes after prefix and the first bytes of the
    // token (RocksDB shares key prefixes between neighbours in a table block; the rest of a
    // key is stored whole, uncompressed).
    let index_keys: Vec<Vec<u8>> = {
        let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), &paths.data).unwrap();
        let db = rocksdb::DB::open_cf_for_read_only(
            &rocksdb::Options::default(),
            &paths.data,
            &cfs,
            false,
        )
        .unwrap();
        let cf = db
            .cf_handle(&kukaku::store::records::partition_cf(&a))
            .unwrap();
        db.iterator_cf(&cf, rocksdb::IteratorMode::Start)
            .map(|kv| kv.unwrap().0.to_vec())
            .filter(|k| matches!(k.first(), Some(b'I' | b'K' | b'T' | b'V' | b'X')))
            .filter(|k| k.len() >= 33)
            .map(|k| k[k.len() - 24..].to_vec())
            .collect()
    };
    assert!(
        index_keys.len() >= 2,
        "the person's blind-index and matching keys: {}",
        index_keys.len()
    );
    // Put everything into table files first, as a long-running instance would have it (not
    // only in the WAL and memtables).
    {
        let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), &paths.data).unwrap();
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &paths.data, &cfs).unwrap();
        for name in &cfs {
            db.flush_cf(&db.cf_handle(name).unwrap()).unwrap();
        }
    }
    let mut before = Vec::new();
    files_under(dir.path(), &mut before);
    let tables_before = before
        .iter()
        .filter(|(p, bytes)| {
            p.extension().is_some_and(|e| e == "sst")
                && bytes.windows(SETAI.len()).any(|w| w == SETAI.as_bytes())
        })
        .count();
    assert!(
        tables_before > 0,
        "the 世帯番号 is in a table file before the destroy"
    );
    assert!(
        !found(&before, SETAI.as_bytes()).is_empty(),
        "the scan sees the 世帯番号 before"
    );
    assert!(index_keys.iter().all(|k| !found(&before, k).is_empty()));

    let store = Store::open(&paths, common::small()).unwrap();
    store
        .destroy(
            &a,
            DestroyScope::Partition,
            a.as_str(),
            KeyActor {
                actor: "admin-cli".into(),
                reason: "保存期間満了".into(),
            },
        )
        .unwrap();
    assert!(store.transmission(&a, "A-1").unwrap().is_none());
    // The prefecture key still makes the same token, but A's slot cannot be made any more,
    // and no slot of A holds anything.
    assert_eq!(
        store
            .matching_key("13")
            .unwrap()
            .token("kojin", HEAD.as_bytes()),
        matching
    );
    assert!(store.index_key(&a).is_err());
    assert!(
        store
            .index_seqs(&a, kukaku::store::IndexKind::Matching, &slot)
            .unwrap()
            .is_empty()
    );
    drop(store);
    // RocksDB's MANIFEST still names the smallest and largest key of the table files the
    // purge compacted away (an `X` slot here); the next open writes a new MANIFEST and
    // deletes the old one (docs/keys.md: restart after a destroy).
    drop(Store::open(&paths, common::small()).unwrap());
    let mut after = Vec::new();
    files_under(dir.path(), &mut after);
    assert_eq!(
        found(&after, SETAI.as_bytes()),
        Vec::<std::path::PathBuf>::new()
    );
    for k in &index_keys {
        assert_eq!(
            found(&after, k),
            Vec::<std::path::PathBuf>::new(),
            "{k:02x?}"
        );
    }
    // B and its candidate are untouched.
    let store = Store::open(&paths, common::small()).unwrap();
    assert!(store.transmission(&b, "B-1").unwrap().is_some());
    store
        .verify_partition(&b, kukaku::store::VerifyOptions { with_keys: true })
        .unwrap();
}

/// Issue 27 item 1: the claim key was `candidate:{b_seq}:{a}:{a_seq}`, so every later 異動
/// of the household in B and every 訂正 in A proposed the same move again, and deciding it
/// again added a second 連携ファイル row. A move now has one identity; a later snapshot of
/// it becomes a new version of the same candidate (superseding the last, naming what
/// changed), the decision stays attached, and confirmation makes one row.
#[test]
fn later_snapshots_of_a_move_are_versions_of_one_candidate() {
    use common::flow4::load_correction;
    use kukaku::flows::decision::{candidates, confirm, decide, hikitsugi_csv};
    let (_dir, paths, store, a, b) = tokyo_move();
    let kek = Kek::load_file(&paths.kek).unwrap();
    let admin = AdminScope::from_kek(&kek);
    let tokyo = admin.prefecture("13").unwrap();
    let b_scope = tokyo.partition(&b).unwrap();
    let first = extract(&store, &tokyo, &Rules::default(), &who(), as_of()).unwrap();
    assert_eq!(first.candidates.len(), 1, "{first:?}");
    let v1 = first.candidates[0].seq.unwrap();
    decide(&store, &b_scope, v1, "continue", None, "clerk", &who()).unwrap();

    // B: a birth in the household (世帯構成変更); A: a 訂正 of the head's name.
    load(
        &store,
        &b,
        "B-2",
        "B100",
        ("2024-12-10", "05"),
        &[
            (HEAD, "山田 太郎", "01", "2020-01-01", "2024-11-01", ""),
            (CHILD, "山田 花子", "03", "2024-12-05", "2024-12-05", ""),
        ],
    );
    load_correction(
        &store,
        &a,
        "A-2",
        "A-1",
        "A100",
        "2024-10-31",
        &[(
            HEAD,
            "山田 太朗",
            "01",
            "2020-01-01",
            "2020-01-01",
            "2024-10-31",
        )],
    );
    let second = extract(&store, &tokyo, &Rules::default(), &who(), as_of()).unwrap();
    assert_eq!(second.candidates.len(), 1, "one new version: {second:?}");
    let states = candidates(&store, &b_scope).unwrap();
    assert_eq!(states.len(), 1, "one move, one candidate");
    let s = &states[0];
    assert_eq!(s.seq, v1);
    assert_eq!(s.versions.len(), 2);
    assert_eq!(s.candidate.supersedes, Some(v1));
    assert_eq!(s.candidate.members_after.len(), 2);
    assert_eq!(s.candidate.members_before[0].shimei, "山田 太朗");
    for field in ["members_after", "members_before", "case"] {
        assert!(
            s.candidate.changes.iter().any(|c| c == field),
            "{:?}",
            s.candidate.changes
        );
    }
    assert!(s.decision.is_some(), "the decision stays with the move");
    assert!(!s.suggestion_changed_since_decision());

    // One confirmation, one 連携ファイル row; reruns add nothing.
    let done = confirm(&store, &tokyo, &who(), "2025-01-10T09:00:00+09:00").unwrap();
    assert_eq!(done.confirmed.len(), 1, "{done:?}");
    let again = extract(&store, &tokyo, &Rules::default(), &who(), as_of()).unwrap();
    assert!(again.candidates.is_empty(), "{again:?}");
    let again = confirm(&store, &tokyo, &who(), "2025-01-11T09:00:00+09:00").unwrap();
    assert!(
        again.confirmed.is_empty() && again.already_confirmed == 1,
        "{again:?}"
    );
    let csv = hikitsugi_csv(&candidates(&store, &b_scope).unwrap());
    assert_eq!(csv.lines().count(), 2, "header and one row:\n{csv}");
}

/// Issue 27 item 5: carry-over follows the household. A 支給 decided after the confirmation
/// (months before the move keep arriving for about three months) reached B only if someone
/// noticed; a reversed decision left B holding the months; an A→B→C chain lost A's months.
/// Now a later run adds a 追加 row, a reversal writes a 取消 row, and C receives what B held
/// plus B's own months; the 連携ファイル (hikitsugi-v2) lists every row once.
#[test]
fn late_shikyu_reversals_and_chains_reach_the_new_municipality() {
    use kukaku::flows::decision::{candidates, confirm, decide, hikitsugi_csv};
    let (_dir, paths, store, a, b) = tokyo_move();
    let c = pid("131037");
    store.request_partitions(std::slice::from_ref(&c)).unwrap();
    drop(store);
    let store = Store::open(&paths, common::small()).unwrap();
    store.provision(&mut |_, _| {}).unwrap();
    let kek = Kek::load_file(&paths.kek).unwrap();
    let admin = AdminScope::from_kek(&kek);
    let tokyo = admin.prefecture("13").unwrap();
    let b_scope = tokyo.partition(&b).unwrap();
    let now = "2025-01-10T09:00:00+09:00";
    let held = |scope| -> Vec<Vec<String>> {
        candidates(&store, scope)
            .unwrap()
            .iter()
            .map(|s| s.held().into_iter().collect())
            .collect()
    };
    let made = extract(&store, &tokyo, &Rules::default(), &who(), as_of()).unwrap();
    let v1 = made.candidates[0].seq.unwrap();
    decide(&store, &b_scope, v1, "continue", None, "clerk", &who()).unwrap();
    let r = confirm(&store, &tokyo, &who(), now).unwrap();
    assert_eq!(r.confirmed.len(), 1);
    assert_eq!(held(&b_scope), vec![vec!["2024-06", "2024-09"]]);

    // A late 支給 for 2024-10 (before the move): a 追加 row, once.
    kogaku(&store, &a, "KA-late", &[("A100", "2024-10")]);
    let r = confirm(&store, &tokyo, &who(), now).unwrap();
    assert_eq!(r.added.len(), 1, "{r:?}");
    assert_eq!(r.added[0].1, vec!["2024-10"]);
    assert!(
        confirm(&store, &tokyo, &who(), now)
            .unwrap()
            .added
            .is_empty()
    );
    assert_eq!(held(&b_scope), vec![vec!["2024-06", "2024-09", "2024-10"]]);
    // Out of the window: a 支給 for 2023-10 (異動月 − 13) is not carried.
    kogaku(&store, &a, "KA-old", &[("A100", "2023-10")]);
    assert!(
        confirm(&store, &tokyo, &who(), now)
            .unwrap()
            .added
            .is_empty()
    );

    // A→B→C: B's household moves on to 港区 (C) on 2025-03-01 with a 支給 of its own.
    kogaku(&store, &b, "KB", &[("B100", "2024-12")]);
    load(
        &store,
        &b,
        "B-2",
        "B100",
        ("2025-02-28", "04"),
        &[(
            HEAD,
            "山田 太郎",
            "01",
            "2020-01-01",
            "2024-11-01",
            "2025-02-28",
        )],
    );
    load(
        &store,
        &c,
        "C-1",
        "C100",
        ("2025-03-01", "03"),
        &[(HEAD, "山田 太郎", "01", "2020-01-01", "2025-03-01", "")],
    );
    extract(&store, &tokyo, &Rules::default(), &who(), as_of()).unwrap();
    let c_scope = tokyo.partition(&c).unwrap();
    let from_b = candidates(&store, &c_scope)
        .unwrap()
        .into_iter()
        .find(|s| s.candidate.old_hokensha_no == b.as_str())
        .expect("a candidate from B in C");
    decide(
        &store,
        &c_scope,
        from_b.seq,
        "continue",
        None,
        "clerk",
        &who(),
    )
    .unwrap();
    confirm(&store, &tokyo, &who(), "2025-03-10T09:00:00+09:00").unwrap();
    let c_state = candidates(&store, &c_scope)
        .unwrap()
        .into_iter()
        .find(|s| s.seq == from_b.seq)
        .unwrap();
    let got: Vec<String> = c_state.held().into_iter().collect();
    assert_eq!(got, vec!["2024-06", "2024-09", "2024-10", "2024-12"]);
    // Reading what B's household held (B's flow-4 entries) is recorded in B.
    assert!(
        kinds(&store, &b)
            .iter()
            .filter(|(k, _)| *k == Kind::ACCESS_RECORD)
            .any(|(_, p)| AccessRecord::decode(p).unwrap().purpose == "continuity_chain_read")
    );

    // B corrects its decision to 継続しない: a 取消 row withdraws what B held.
    decide(
        &store,
        &b_scope,
        v1,
        "not_continue",
        Some("訂正"),
        "clerk",
        &who(),
    )
    .unwrap();
    let r = confirm(&store, &tokyo, &who(), now).unwrap();
    assert_eq!(r.cancelled.len(), 1, "{r:?}");
    assert_eq!(held(&b_scope), vec![Vec::<String>::new()]);
    assert!(
        confirm(&store, &tokyo, &who(), now)
            .unwrap()
            .cancelled
            .is_empty()
    );

    // The 連携ファイル: 新規, 追加 and 取消 rows, each once, with stable row ids.
    let csv = hikitsugi_csv(&candidates(&store, &b_scope).unwrap());
    let kinds: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap())
        .collect();
    assert_eq!(kinds, vec!["1", "2", "3"], "{csv}");
    assert_eq!(csv, hikitsugi_csv(&candidates(&store, &b_scope).unwrap()));
}

#[derive(Debug, Clone)]
enum Step {
    /// A 高額該当 (household 支給) of A's household for the month `2023-10` + n.
    Shikyu(u8),
    /// B decides the move: continue or not.
    Decide(bool),
    /// The 国保連合会 runs the confirmation.
    Confirm,
}

fn month(n: u8) -> String {
    let m = 2023 * 12 + 9 + u32::from(n);
    format!("{:04}-{:02}", m / 12, m % 12 + 1)
}

use kukaku::ledger::Seq;
use proptest::strategy::Strategy as _;

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

    /// Issue 27 item 5: for any sequence of late 支給, decisions and corrections, and runs,
    /// the months B has been told (新規 + 追加 − 取消) equal what the rule engine computes
    /// from the whole history (docs/domain.md §5: A's counting months in 異動月 − 11 … 異動月, for
    /// a move whose latest decision is "continue"; none otherwise).
    #[test]
    fn what_b_was_told_equals_what_the_rules_compute(
        steps in proptest::collection::vec(
            proptest::prop_oneof![
                (0u8..17).prop_map(Step::Shikyu),
                proptest::bool::ANY.prop_map(Step::Decide),
                proptest::strategy::Just(Step::Confirm),
            ],
            1..8,
        )
    ) {
        use kukaku::domain::tasukai::{CareMonth, KogakuMonth, Move, Shikyu, carried_months};
        use kukaku::flows::decision::{candidates, confirm, decide};
        let (_dir, paths, store, a, b) = tokyo_move();
        let kek = Kek::load_file(&paths.kek).unwrap();
        let admin = AdminScope::from_kek(&kek);
        let tokyo = admin.prefecture("13").unwrap();
        let b_scope = tokyo.partition(&b).unwrap();
        let made = extract(&store, &tokyo, &Rules::default(), &who(), as_of()).unwrap();
        let seq = made.candidates[0].seq.unwrap();
        let now = "2025-01-10T09:00:00+09:00";
        let mut shikyu: Vec<String> = vec!["2024-06".into(), "2024-09".into()];
        let mut latest: Option<bool> = None;
        for (i, step) in steps.iter().cloned().enumerate() {
            match step {
                Step::Shikyu(n) => {
                    kogaku(&store, &a, &format!("K{i}"), &[("A100", &month(n))]);
                    shikyu.push(month(n));
                }
                Step::Decide(yes) => {
                    let d = if yes { "continue" } else { "not_continue" };
                    decide(&store, &b_scope, seq, d, None, "clerk", &who()).unwrap();
                    latest = Some(yes);
                }
                Step::Confirm => {
                    confirm(&store, &tokyo, &who(), now).unwrap();
                }
            }
        }
        confirm(&store, &tokyo, &who(), now).unwrap();
        let told: Vec<String> = candidates(&store, &b_scope).unwrap()[0]
            .held()
            .into_iter()
            .collect();
        let months: Vec<KogakuMonth> = shikyu
            .iter()
            .map(|m| KogakuMonth {
                month: CareMonth::parse(m).unwrap(),
                shikyu: Shikyu::Household,
                low_income: false,
            })
            .collect();
        let how = if latest == Some(true) { Move::Continuing } else { Move::NotContinuing };
        let want: Vec<String> =
            carried_months(&months, CareMonth::parse("2024-11").unwrap(), how)
                .iter()
                .map(ToString::to_string)
                .collect();
        proptest::prop_assert_eq!(told, want, "{:?}", steps);
    }
}

/// Issue 27 item 7: the extraction applies the section of its own prefecture from a rules
/// file that serves several, including the meaning of 適用終了.
#[test]
fn the_job_uses_its_prefectures_section_of_the_rules() {
    use kukaku::flows::decision::candidates;
    for (text, period, suggestion) in [
        ("[27]\ntekiyo_end = leaving_day\n", "contiguous", "continue"),
        ("[13]\ntekiyo_end = leaving_day\n", "gap", "manual"),
        (
            "case 1 = manual\n[27]\ncase 1 = continue\n",
            "contiguous",
            "manual",
        ),
    ] {
        let (_dir, paths, store, _a, b) = tokyo_move();
        let kek = Kek::load_file(&paths.kek).unwrap();
        let tokyo = AdminScope::from_kek(&kek).prefecture("13").unwrap();
        let rules = Rules::parse(text).unwrap();
        extract(&store, &tokyo, &rules, &who(), as_of()).unwrap();
        let states = candidates(&store, &tokyo.partition(&b).unwrap()).unwrap();
        let c = &states[0].candidate;
        assert_eq!(
            (c.period.as_str(), c.suggestion.as_str()),
            (period, suggestion),
            "{text}"
        );
    }
}

/// Issue 27 item 3: B's system reset the mover's 資格取得日 to the move-in date, so no member
/// looked like a mover and the move was never found. A household that came in by 県内転入
/// (03) is now matched all the same, with the `shutoku_reset` anomaly; one that was
/// acquired (01) is not a move. Two earlier households of the person make both candidates
/// `ambiguous`.
#[test]
fn a_reset_acquisition_date_and_an_ambiguous_match_are_anomalies_not_silence() {
    use kukaku::flows::decision::candidates;
    let (a, b, d) = (pid("131011"), pid("131029"), pid("131037"));
    for (jiyu, want) in [("03", Some(vec!["shutoku_reset"])), ("01", None)] {
        let (_dir, paths, store) =
            instance("hub.kokuho-13.example", &[a.clone(), b.clone(), d.clone()]);
        tokyo_leaves(&store, &a);
        // B's system wrote the move-in date as 資格取得日.
        load(
            &store,
            &b,
            "B-1",
            "B100",
            ("2024-11-01", jiyu),
            &[(HEAD, "山田 太郎", "01", "2024-11-01", "2024-11-01", "")],
        );
        let kek = Kek::load_file(&paths.kek).unwrap();
        let tokyo = AdminScope::from_kek(&kek).prefecture("13").unwrap();
        extract(&store, &tokyo, &Rules::default(), &who(), as_of()).unwrap();
        let states = candidates(&store, &tokyo.partition(&b).unwrap()).unwrap();
        let got = states.first().map(|s| s.candidate.anomalies.clone());
        assert_eq!(
            got.as_ref()
                .map(|v| v.iter().map(String::as_str).collect::<Vec<_>>()),
            want,
            "異動事由 {jiyu}"
        );
        if jiyu == "03" {
            // The person was also in 港区 (D) before: both candidates are ambiguous.
            load(
                &store,
                &d,
                "D-1",
                "D100",
                ("2024-03-31", "04"),
                &[(
                    HEAD,
                    "山田 太郎",
                    "01",
                    "2020-01-01",
                    "2020-01-01",
                    "2024-03-31",
                )],
            );
            load(
                &store,
                &b,
                "B-2",
                "B100",
                ("2024-11-01", "03"),
                &[(HEAD, "山田 太郎", "01", "2024-11-01", "2024-11-01", "")],
            );
            extract(&store, &tokyo, &Rules::default(), &who(), as_of()).unwrap();
            let states = candidates(&store, &tokyo.partition(&b).unwrap()).unwrap();
            assert_eq!(states.len(), 2, "one candidate per earlier household");
            for s in &states {
                assert!(
                    s.candidate.anomalies.iter().any(|x| x == "ambiguous"),
                    "{:?}",
                    s.candidate.anomalies
                );
            }
        }
    }
}

/// Issue 27 item 2: every run decoded every household of the prefecture. A run now looks
/// only at what changed since the last one (per-partition cursors), plus the households of
/// the same people elsewhere, so a 転出 file that arrives after the 転入 still makes the move.
#[test]
fn extraction_is_incremental_and_finds_a_move_whose_other_end_arrives_later() {
    let (a, b) = (pid("131011"), pid("131029"));
    let (_dir, paths, store) = instance("hub.kokuho-13.example", &[a.clone(), b.clone()]);
    let kek = Kek::load_file(&paths.kek).unwrap();
    let tokyo = AdminScope::from_kek(&kek).prefecture("13").unwrap();
    tokyo_arrives(&store, &b, "2024-11-01");
    let first = extract(&store, &tokyo, &Rules::default(), &who(), as_of()).unwrap();
    assert_eq!((first.households_read, first.candidates.len()), (1, 0));
    // A's 転出 arrives a day later; B's household did not change.
    tokyo_leaves(&store, &a);
    let second = extract(&store, &tokyo, &Rules::default(), &who(), as_of()).unwrap();
    assert_eq!(second.candidates.len(), 1, "{second:?}");
    assert_eq!(second.candidates[0].partition, b.to_string());
    assert_eq!(
        second.households_read, 2,
        "A's changed household and B's other end"
    );
    let third = extract(&store, &tokyo, &Rules::default(), &who(), as_of()).unwrap();
    assert_eq!((third.households_read, third.candidates.len()), (0, 0));
    assert_eq!(
        store
            .job_cursor(kukaku::flows::continuity::EXTRACT_JOB, &b)
            .unwrap(),
        Some(store.size(&b).unwrap()),
        "the third run read nothing and wrote nothing in B: its cursor is B's size"
    );
}

/// Issue 27 item 2: a new move that starts before the window (12 care months ending with the
/// run's month) is listed for the operator and not proposed; a move already proposed keeps
/// getting versions after its start has left the window (its decision stays attached).
#[test]
fn moves_before_the_window_are_listed_not_proposed() {
    use kukaku::domain::text::parse_date;
    use kukaku::flows::decision::candidates;
    let day = |s: &str| parse_date(s).unwrap();
    // The move starts 2024-11-01; a run in 2025-10 still holds it, one in 2025-11 does not.
    let (_dir, paths, store, a, b) = tokyo_move();
    let kek = Kek::load_file(&paths.kek).unwrap();
    let tokyo = AdminScope::from_kek(&kek).prefecture("13").unwrap();
    let b_scope = tokyo.partition(&b).unwrap();
    let late = extract(&store, &tokyo, &Rules::default(), &who(), day("2025-11-01")).unwrap();
    assert_eq!(late.as_of, "2025-11-01");
    assert!(late.candidates.is_empty(), "{late:?}");
    assert_eq!(late.outside_window.len(), 1, "{late:?}");
    let o = &late.outside_window[0];
    assert_eq!(
        (
            o.partition.as_str(),
            o.old_hokensha_no.as_str(),
            o.ido_date.as_str()
        ),
        ("131029", a.as_str(), "2024-11-01")
    );
    assert!(candidates(&store, &b_scope).unwrap().is_empty());
    let (_dir2, paths2, store2, _, b2) = tokyo_move();
    let kek2 = Kek::load_file(&paths2.kek).unwrap();
    let tokyo2 = AdminScope::from_kek(&kek2).prefecture("13").unwrap();
    let r = extract(
        &store2,
        &tokyo2,
        &Rules::default(),
        &who(),
        day("2025-10-31"),
    )
    .unwrap();
    assert_eq!(
        (r.candidates.len(), r.outside_window.len()),
        (1, 0),
        "{r:?}"
    );
    // A later 異動 of the proposed move, seen by a run two years on: a version, not a listing.
    load(
        &store2,
        &b2,
        "B-2",
        "B100",
        ("2024-12-10", "05"),
        &[
            (HEAD, "山田 太郎", "01", "2020-01-01", "2024-11-01", ""),
            (CHILD, "山田 花子", "03", "2024-12-05", "2024-12-05", ""),
        ],
    );
    let later = extract(
        &store2,
        &tokyo2,
        &Rules::default(),
        &who(),
        day("2026-12-07"),
    )
    .unwrap();
    assert_eq!(
        (later.candidates.len(), later.outside_window.len()),
        (1, 0),
        "{later:?}"
    );
    let states = candidates(&store2, &tokyo2.partition(&b2).unwrap()).unwrap();
    assert_eq!((states.len(), states[0].versions.len()), (1, 2));
    // A window set per prefecture: four months ending 2025-03 start in 2024-12.
    let (_dir3, paths3, store3, _, _) = tokyo_move();
    let kek3 = Kek::load_file(&paths3.kek).unwrap();
    let tokyo3 = AdminScope::from_kek(&kek3).prefecture("13").unwrap();
    let rules = Rules::parse("[13]\nwindow_months = 4").unwrap();
    let r = extract(&store3, &tokyo3, &rules, &who(), day("2025-03-31")).unwrap();
    assert_eq!(
        (r.candidates.len(), r.outside_window.len()),
        (0, 1),
        "{r:?}"
    );
}

/// Issue 27, end to end through the HTTP API (municipalities send files, the operator runs
/// the job, B decides and downloads): a move, then a later 異動 in B and a 訂正 in A, is one
/// candidate with two versions and one 新規 row; a late 支給 in A adds a 追加 row; B's
/// correction to 継続しない adds a 取消 row; reruns add nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_late_shikyu_and_a_reversal_through_the_api() {
    use axum::http::StatusCode;
    use base64::Engine as _;
    use common::flow4::files;
    use kukaku::crypto::credential::{Reach, Role};
    use std::sync::Arc;

    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let (_dir, _paths, store, a, b) = tokio::task::block_in_place(tokyo_move);
    let store = Arc::new(store);
    let op = Api::token(
        &store,
        Role::ContinuityOperator,
        Reach::Prefecture("13".into()),
    );
    let muni_a = Api::token(&store, Role::Municipality, Reach::Partition(a.clone()));
    let muni_b = Api::token(&store, Role::Municipality, Reach::Partition(b.clone()));
    // The run's date is today's, two years after these moves: carry late 支給 for 5 years.
    let api = Api::new(&store, Rules::parse("late_shikyu_months = 60").unwrap());

    api.run(&op, "extract").await;
    let seq = api.listed(&muni_b).await[0]["seq"].as_u64().unwrap();
    api.decide(&muni_b, seq, "continue").await;
    // Later: a birth in B (世帯構成変更) and a 訂正 of the head's name in A.
    api.send(
        &muni_b,
        "B-2",
        files(
            b.as_str(),
            "B-2",
            "B100",
            ("2024-12-10", "05"),
            &[
                (HEAD, "山田 太郎", "01", "2020-01-01", "2024-11-01", ""),
                (CHILD, "山田 花子", "03", "2024-12-05", "2024-12-05", ""),
            ],
        ),
    )
    .await;
    let (setai, kojin) = files(
        a.as_str(),
        "A-2",
        "A100",
        ("2024-10-31", "90"),
        &[(
            HEAD,
            "山田 太朗",
            "01",
            "2020-01-01",
            "2020-01-01",
            "2024-10-31",
        )],
    );
    api.send(
        &muni_a,
        "A-2",
        (setai.replacen(",90,,", ",90,A-1,", 1), kojin),
    )
    .await;
    api.run(&op, "extract").await;
    api.run(&op, "confirm").await;
    let list = api.listed(&muni_b).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["versions"].as_array().unwrap().len(), 2, "{list}");
    assert_eq!(
        api.carryover_rows(&muni_b).await,
        vec![("1".into(), "2024-06;2024-09".into())]
    );

    // A late 支給 for 2024-10, sent by A: the next run adds it.
    let kogaku = format!(
        "layout,transmission_id,hokensha_no,setai_no,shinryo_ym,shikyu_kubun,tasukai_nashi\r\n\
         kogaku-v1,KA-2,{a},A100,2024-10,1,0\r\n"
    );
    let body = serde_json::json!({"transmission_id": "KA-2", "encoding": "utf-8",
        "kogaku_file": b64(&kogaku)})
    .to_string();
    let (s, body) = api.call("POST", "/v1/kogaku", &muni_a, Some(&body)).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let report = api.run(&op, "confirm").await;
    assert_eq!(report["added"].as_array().unwrap().len(), 1, "{report}");
    // B corrects its decision: the next run withdraws the months.
    api.decide(&muni_b, seq, "not_continue").await;
    api.run(&op, "confirm").await;
    api.run(&op, "extract").await;
    api.run(&op, "confirm").await;
    assert_eq!(
        api.carryover_rows(&muni_b).await,
        vec![
            ("1".into(), "2024-06;2024-09".into()),
            ("2".into(), "2024-10".into()),
            ("3".into(), "2024-06;2024-09;2024-10".into()),
        ]
    );
}

/// Issue 27, the rest end to end through the API: the household moves on from B to C, whose
/// system reset the 資格取得日 to the day it came in. C's candidate from B is still made, with
/// the `shutoku_reset` anomaly; once C decides and the operator confirms, C's 連携ファイル
/// carries A's months as B held them (A→B→C).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_with_a_reset_date_through_the_api() {
    use common::flow4::files;
    use kukaku::crypto::credential::{Reach, Role};
    use std::sync::Arc;

    let c = pid("131037");
    let (_dir, _paths, store, _a, b) = tokio::task::block_in_place(|| {
        let (dir, paths, store, a, b) = tokyo_move();
        store.request_partitions(std::slice::from_ref(&c)).unwrap();
        drop(store);
        let store = Store::open(&paths, common::small()).unwrap();
        store.provision(&mut |_, _| {}).unwrap();
        (dir, paths, store, a, b)
    });
    let store = Arc::new(store);
    let op = Api::token(
        &store,
        Role::ContinuityOperator,
        Reach::Prefecture("13".into()),
    );
    let muni_b = Api::token(&store, Role::Municipality, Reach::Partition(b.clone()));
    let muni_c = Api::token(&store, Role::Municipality, Reach::Partition(c.clone()));
    let api = Api::new(&store, Rules::default());
    api.run(&op, "extract").await;
    let seq = api.listed(&muni_b).await[0]["seq"].as_u64().unwrap();
    api.decide(&muni_b, seq, "continue").await;
    api.run(&op, "confirm").await;

    // B's household leaves on 2025-02-28; C records it from 2025-03-01 with 取得 reset.
    let leave = files(
        b.as_str(),
        "B-2",
        "B100",
        ("2025-02-28", "04"),
        &[(
            HEAD,
            "山田 太郎",
            "01",
            "2020-01-01",
            "2024-11-01",
            "2025-02-28",
        )],
    );
    api.send(&muni_b, "B-2", leave).await;
    let arrive = files(
        c.as_str(),
        "C-1",
        "C100",
        ("2025-03-01", "03"),
        &[(HEAD, "山田 太郎", "01", "2025-03-01", "2025-03-01", "")],
    );
    api.send(&muni_c, "C-1", arrive).await;
    let report = api.run(&op, "extract").await;
    let listed = api.listed(&muni_c).await;
    let from_b = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["candidate"]["old_hokensha_no"] == b.as_str())
        .unwrap_or_else(|| panic!("no candidate from B in C: {listed} {report}"));
    let anomalies = from_b["candidate"]["anomalies"].to_string();
    assert!(anomalies.contains("shutoku_reset"), "{anomalies}");
    api.decide(&muni_c, from_b["seq"].as_u64().unwrap(), "continue")
        .await;
    api.run(&op, "confirm").await;
    assert_eq!(
        api.carryover_rows(&muni_c).await,
        vec![("1".into(), "2024-06;2024-09".into())],
        "C holds A's months as B held them"
    );
}

/// Issue 27 item 3: the clerk and the operator see which moves have something to look at
/// (`?state=anomalies`, the extraction report, `GET /v1/continuity/anomalies`), and the clerk
/// resolves each with an acknowledgement apart from the decision; a later version that
/// changes the period opens it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomalies_are_listed_for_the_clerk_and_the_operator() {
    use axum::http::StatusCode;
    use kukaku::crypto::credential::{Reach, Role};
    let (a, b) = (pid("131011"), pid("131029"));
    let (_dir, paths, store) = tokio::task::block_in_place(|| {
        let (dir, paths, store) = instance("hub.kokuho-13.example", &[a.clone(), b.clone()]);
        tokyo_leaves(&store, &a);
        // B starts four days late: a 空白期間.
        tokyo_arrives(&store, &b, "2024-11-05");
        (dir, paths, store)
    });
    let kek = Kek::load_file(&paths.kek).unwrap();
    let tokyo = AdminScope::from_kek(&kek).prefecture("13").unwrap();
    let report = tokio::task::block_in_place(|| {
        extract(&store, &tokyo, &Rules::default(), &who(), as_of()).unwrap()
    });
    assert_eq!(report.candidates[0].anomalies, vec!["gap"]);
    let store = std::sync::Arc::new(store);
    let muni_b = Api::token(&store, Role::Municipality, Reach::Partition(b.clone()));
    let api = Api::new(&store, Rules::default());
    let count = |state: &'static str| {
        let api = &api;
        let muni_b = muni_b.clone();
        async move {
            let (s, body) = api
                .call(
                    "GET",
                    format!("/v1/continuity/candidates?state={state}"),
                    &muni_b,
                    None,
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            v["candidates"].as_array().unwrap().len()
        }
    };
    assert_eq!(count("anomalies").await, 1);
    assert_eq!(count("undecided").await, 1);
    let (s, _) = api
        .call("GET", "/v1/continuity/candidates?state=odd", &muni_b, None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // The operator's list: where and what, never who.
    let op = Api::token(
        &store,
        Role::ContinuityOperator,
        Reach::Prefecture("13".into()),
    );
    let operator_list = || {
        let api = &api;
        let op = op.clone();
        async move {
            let (s, body) = api.call("GET", "/v1/continuity/anomalies", &op, None).await;
            assert_eq!(s, StatusCode::OK, "{body}");
            assert!(!body.contains("山田") && !body.contains("B100"), "{body}");
            serde_json::from_str::<serde_json::Value>(&body).unwrap()
        }
    };
    let v = operator_list().await;
    let row = &v["anomalies"][0];
    assert_eq!(
        (
            row["partition"].as_str(),
            row["open"].clone(),
            row["decided"].as_bool()
        ),
        (Some("131029"), serde_json::json!(["gap"]), Some(false)),
        "{v}"
    );
    let seq = row["seq"].as_u64().unwrap();

    // Issue 27 item 3: a decision does not resolve the anomaly; an acknowledgement does.
    let post = |uri: String, token: String, body: &'static str| {
        let api = &api;
        async move { api.call("POST", uri, &token, Some(body)).await }
    };
    let decision = r#"{"decision":"continue","reason":null,"operator":"窓口 1"}"#;
    let (s, _) = post(
        format!("/v1/continuity/candidates/{seq}/decision"),
        muni_b.clone(),
        decision,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(count("anomalies").await, 1, "decided, still to look at");
    let ack_uri = format!("/v1/continuity/candidates/{seq}/acknowledgement");
    let (s, body) = post(
        ack_uri.clone(),
        muni_b.clone(),
        r#"{"note":" ","operator":"窓口 1"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("\"note\""), "{body}");
    let muni_a = Api::token(&store, Role::Municipality, Reach::Partition(a.clone()));
    let note = r#"{"note":"転入届の遅れ。空白期間は国保加入なし","operator":"窓口 1"}"#;
    let (s, _) = post(ack_uri.clone(), muni_a, note).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "A cannot name B's move");
    let (s, body) = post(ack_uri.clone(), muni_b.clone(), note).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(count("anomalies").await, 0);
    let (s, body) = post(ack_uri.clone(), muni_b.clone(), note).await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("nothing_to_acknowledge"), "{body}");
    let v = operator_list().await;
    assert_eq!(
        (
            v["anomalies"][0]["open"].clone(),
            v["anomalies"][0]["decided"].as_bool()
        ),
        (serde_json::json!([]), Some(true)),
        "{v}"
    );

    // A 訂正 in A moves the end: a longer gap, a version that changes the period, and the
    // anomaly is open again.
    tokio::task::block_in_place(|| {
        common::flow4::load_correction(
            &store,
            &a,
            "A-2",
            "A-1",
            "A100",
            "2024-10-31",
            &[(
                HEAD,
                "山田 太郎",
                "01",
                "2020-01-01",
                "2020-01-01",
                "2024-10-25",
            )],
        );
        extract(&store, &tokyo, &Rules::default(), &who(), as_of()).unwrap()
    });
    assert_eq!(
        count("anomalies").await,
        1,
        "a changed gap needs a new look"
    );
    let (s, body) = post(ack_uri, muni_b.clone(), note).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(count("anomalies").await, 0);
}
