//! The municipality terminal pages without sockets: login (cookie attributes), the candidate
//! list and detail, a decision through the form (CSRF checked), results, the printable list
//! and the 連携ファイル; another municipality's session sees none of it; every page view is an
//! access record; a revoked credential ends the session.

use crate::common;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::flow4::{HEAD, as_of, instance, tokyo_arrives, tokyo_leaves, tokyo_move, who};
use kukaku::api::{self, AppState, Limits, ServerRole};
use kukaku::crypto::credential::{Reach, Role};
use kukaku::crypto::{AdminScope, Kek};
use kukaku::domain::continuity::Rules;
use kukaku::ledger::Seq;
use kukaku::ledger::payload::AccessRecord;
use kukaku::ledger::{Envelope, Kind, PartitionId};
use kukaku::store::{Paths, Store};
use tower::ServiceExt;

struct Hub {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    app: Router,
    a: PartitionId,
    b: PartitionId,
    token_a: String,
    token_b: String,
}

/// 千代田区 (A) → 中央区 (B): one extracted candidate in B, A's 高額該当 months 2024-06/09.
fn hub() -> Hub {
    hub_of(tokyo_move())
}

/// The same move, but B starts four days after A's end: a candidate with a 空白期間.
fn gap_hub() -> Hub {
    let (a, b) = (common::pid("131011"), common::pid("131029"));
    let (dir, paths, store) = instance("hub.kokuho-13.example", &[a.clone(), b.clone()]);
    tokyo_leaves(&store, &a);
    tokyo_arrives(&store, &b, "2024-11-05");
    hub_of((dir, paths, store, a, b))
}

/// The display names of the clerks `hub_of` issues credentials to.
const A_CLERK: &str = "千代田区 窓口 佐藤";
const B_CLERK: &str = "中央区 窓口 山田";

/// A clerk's credential for partition `p`, labelled with their display name, valid a day.
fn clerk(store: &Store, p: &PartitionId, name: &str) -> String {
    let day = kukaku::store::now_unix_ms() + 86_400_000;
    store
        .issue_credential(Role::Municipality, Reach::Partition(p.clone()), name, day)
        .unwrap()
        .0
        .to_text()
        .to_string()
}

/// A hub router over an instance, after one extraction, with a clerk's token for A and B.
fn hub_of(
    (dir, paths, store, a, b): (tempfile::TempDir, Paths, Store, PartitionId, PartitionId),
) -> Hub {
    let kek = Kek::load_file(&paths.kek).unwrap();
    let tokyo = AdminScope::from_kek(&kek).prefecture("13").unwrap();
    kukaku::flows::continuity::extract(&store, &tokyo, &Rules::default(), &who(), as_of()).unwrap();
    let (token_a, token_b) = (clerk(&store, &a, A_CLERK), clerk(&store, &b, B_CLERK));
    store.set_partition_name(&a, "千代田区").unwrap();
    store.set_partition_name(&b, "中央区").unwrap();
    let store = Arc::new(store);
    let app = api::router(
        AppState::new(Arc::clone(&store), ServerRole::Hub),
        Limits::default(),
    );
    Hub {
        _dir: dir,
        store,
        app,
        a,
        b,
        token_a,
        token_b,
    }
}

struct Page {
    status: StatusCode,
    location: Option<String>,
    cookie: Option<String>,
    body: String,
}

async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    cookie: Option<&str>,
    form: Option<String>,
) -> Page {
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
    send_from(app, method, uri, &headers, None, form).await
}

fn form(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            let enc: String = v
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        (b as char).to_string()
                    }
                    b' ' => "+".to_owned(),
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={enc}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

async fn login(app: &Router, token: &str) -> String {
    let p = send(
        app,
        "POST",
        "/terminal/login",
        None,
        Some(form(&[("token", token)])),
    )
    .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let c = p.cookie.expect("no session cookie");
    c.split(';').next().unwrap().to_owned()
}

fn csrf(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").expect("no csrf field") + 19;
    body[at..at + 43].to_owned()
}

fn access_purposes(store: &Store, p: &PartitionId) -> Vec<String> {
    store
        .envelopes(p, Seq(0), Seq(store.size(p).unwrap()))
        .unwrap()
        .iter()
        .filter_map(|raw| {
            let e = Envelope::decode(raw).unwrap();
            match (e.header.kind, e.body) {
                (Kind::ACCESS_RECORD, kukaku::ledger::Body::Open { payload, .. }) => {
                    Some(AccessRecord::decode(&payload).unwrap().purpose)
                }
                _ => None,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_decide_and_see_the_result() {
    let h = tokio::task::block_in_place(hub);
    let app = &h.app;
    // Not logged in: to the login page. A wrong token: refused with a message.
    let p = send(app, "GET", "/terminal/candidates", None, None).await;
    assert_eq!(
        (p.status, p.location.as_deref()),
        (StatusCode::SEE_OTHER, Some("/terminal/login"))
    );
    let p = send(app, "GET", "/terminal/login", None, None).await;
    assert!(p.body.contains("ログイン") && p.body.contains("type=\"password\""));
    let p = send(
        app,
        "POST",
        "/terminal/login",
        None,
        Some(form(&[("token", "kk1_nonsense")])),
    )
    .await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    assert!(p.cookie.is_none());

    let raw = send(
        app,
        "POST",
        "/terminal/login",
        None,
        Some(form(&[("token", &h.token_b)])),
    )
    .await;
    let set = raw.cookie.unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/terminal"] {
        assert!(set.contains(attr), "cookie lacks {attr}: {set}");
    }
    assert!(!set.contains(&h.token_b), "the token is in the cookie");
    let cookie_b = set.split(';').next().unwrap().to_owned();

    let p = send(app, "GET", "/terminal/candidates", Some(&cookie_b), None).await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.body.contains("継続候補世帯リスト"));
    assert!(
        p.body.contains("A100") && p.body.contains("山田 太郎") && p.body.contains("未確定"),
        "{}",
        p.body
    );
    assert!(!p.body.contains(HEAD), "a 個人番号 on a page");
    let seq = {
        let at = p.body.find("/terminal/candidates/").unwrap() + 21;
        p.body[at..]
            .split('"')
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let detail = send(
        app,
        "GET",
        &format!("/terminal/candidates/{seq}"),
        Some(&cookie_b),
        None,
    )
    .await;
    assert!(detail.body.contains("異動前の世帯員") && detail.body.contains("確定指示を送信"));
    assert!(
        !detail.body.contains("2024-06"),
        "A's months before confirmation"
    );
    let token = csrf(&detail.body);

    // A form without the session's CSRF token is refused and stores nothing.
    let size = h.store.size(&h.b).unwrap();
    let bad = form(&[("csrf", "forged"), ("decision", "continue")]);
    let p = send(
        app,
        "POST",
        &format!("/terminal/candidates/{seq}/decision"),
        Some(&cookie_b),
        Some(bad),
    )
    .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert_eq!(h.store.size(&h.b).unwrap(), size);

    // No name to type: the decision records the logged-in clerk.
    assert!(
        !detail.body.contains("name=\"operator\""),
        "a typed-name field"
    );
    assert!(detail.body.contains(B_CLERK), "the header names the clerk");
    assert!(
        detail.body.contains("131029 中央区") && detail.body.contains("131011 千代田区"),
        "names beside the numbers: {}",
        detail.body
    );
    let good = form(&[
        ("csrf", &token),
        ("decision", "continue"),
        ("reason", "世帯主同一"),
    ]);
    let p = send(
        app,
        "POST",
        &format!("/terminal/candidates/{seq}/decision"),
        Some(&cookie_b),
        Some(good),
    )
    .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let back = send(
        app,
        "GET",
        p.location.as_deref().unwrap(),
        Some(&cookie_b),
        None,
    )
    .await;
    assert!(back.body.contains("確定指示を登録しました") && back.body.contains("世帯主同一"));
    assert!(back.body.contains(B_CLERK), "the history names the clerk");

    // The hub confirms; B sees the result, the printable list and the file.
    tokio::task::block_in_place(|| {
        let tokyo_scope = {
            let paths = Paths::under(h._dir.path());
            let kek = Kek::load_file(&paths.kek).unwrap();
            AdminScope::from_kek(&kek).prefecture("13").unwrap()
        };
        kukaku::flows::decision::confirm(
            &h.store,
            &tokyo_scope,
            &who(),
            "2025-01-10T10:00:00+09:00",
        )
        .unwrap();
    });
    let results = send(app, "GET", "/terminal/results", Some(&cookie_b), None).await;
    assert!(
        results.body.contains("2024-06, 2024-09") && results.body.contains("2025-01-10"),
        "{}",
        results.body
    );
    assert!(
        results.body.contains("令和7年1月10日 10:00"),
        "the confirmation time in JST and 和暦: {}",
        results.body
    );
    // Issue 28 item 4: the printed list is a municipal document.
    let print = send(app, "GET", "/terminal/results/print", Some(&cookie_b), None).await;
    for want in [
        "継続世帯確定リスト",
        "@page",
        "1 / 1",
        "B100",
        "合計 1 世帯",
        "引継月 計 2 か月",
        "確認欄",
        "131029 中央区",
        B_CLERK,
        "令和7年1月10日 〜 令和7年1月10日",
    ] {
        assert!(print.body.contains(want), "{want}: {}", print.body);
    }
    let later = send(
        app,
        "GET",
        "/terminal/results/print?from=2025-01-11&to=",
        Some(&cookie_b),
        None,
    )
    .await;
    assert!(later.body.contains("合計 0 世帯"), "{}", later.body);
    let bad = send(
        app,
        "GET",
        "/terminal/results/print?from=2025-13-01",
        Some(&cookie_b),
        None,
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let csv = send(app, "GET", "/terminal/carryover.csv", Some(&cookie_b), None).await;
    assert!(
        csv.body.starts_with("layout,row_id,row_kind,decision_id")
            && csv.body.contains(",2024-06;2024-09,2,"),
        "{}",
        csv.body
    );

    // Every page view with personal data left an access record in B.
    let purposes = access_purposes(&h.store, &h.b);
    for p in [
        "terminal_candidates",
        "terminal_candidate",
        "terminal_results",
        "terminal_print",
        "terminal_carryover_file",
    ] {
        assert!(
            purposes.iter().any(|x| x == p),
            "no access record {p}: {purposes:?}"
        );
    }

    // A's session: none of B's candidates, and B's seq names nothing.
    let cookie_a = login(app, &h.token_a).await;
    let p = send(app, "GET", "/terminal/candidates", Some(&cookie_a), None).await;
    assert!(
        !p.body.contains("A100") && !p.body.contains("B100"),
        "A sees B's candidate"
    );
    let p = send(
        app,
        "GET",
        &format!("/terminal/candidates/{seq}"),
        Some(&cookie_a),
        None,
    )
    .await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    assert!(
        p.body.contains("該当する候補世帯はありません"),
        "a terminal error is a page, not the API's JSON: {}",
        p.body
    );
    let a_csrf = csrf(
        &send(app, "GET", "/terminal/candidates", Some(&cookie_a), None)
            .await
            .body,
    );
    let try_b = form(&[("csrf", &a_csrf), ("decision", "not_continue")]);
    let p = send(
        app,
        "POST",
        &format!("/terminal/candidates/{seq}/decision"),
        Some(&cookie_a),
        Some(try_b),
    )
    .await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    let csv = send(app, "GET", "/terminal/carryover.csv", Some(&cookie_a), None).await;
    assert_eq!(csv.body.lines().count(), 1, "A got B's rows");
    // A was shown no personal data, so its log holds no terminal access record.
    assert!(
        access_purposes(&h.store, &h.a)
            .iter()
            .all(|p| !p.starts_with("terminal_")),
        "an access record in A for pages that showed nothing"
    );

    // Logout ends the session; a revoked credential ends it too.
    let list = send(app, "GET", "/terminal/candidates", Some(&cookie_b), None).await;
    let p = send(
        app,
        "POST",
        "/terminal/logout",
        Some(&cookie_b),
        Some(form(&[("csrf", &csrf(&list.body))])),
    )
    .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    let p = send(app, "GET", "/terminal/candidates", Some(&cookie_b), None).await;
    assert_eq!(p.location.as_deref(), Some("/terminal/login"));
    let id = kukaku::crypto::credential::Token::parse(&h.token_a)
        .unwrap()
        .id();
    tokio::task::block_in_place(|| h.store.revoke_credential(id).unwrap());
    let p = send(app, "GET", "/terminal/candidates", Some(&cookie_a), None).await;
    assert_eq!(
        p.location.as_deref(),
        Some("/terminal/login"),
        "a revoked credential kept its session"
    );
}

/// A request to the terminal with extra headers and, optionally, the peer address the
/// listener would set.
async fn send_from(
    app: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    peer: Option<&str>,
    body: Option<String>,
) -> Page {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    }
    let mut req = req.body(Body::from(body.unwrap_or_default())).unwrap();
    if let Some(ip) = peer {
        req.extensions_mut()
            .insert(kukaku::api::auth::PeerAddr(ip.parse().unwrap()));
    }
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let location = res
        .headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_owned());
    let cookie = res
        .headers()
        .get(header::SET_COOKIE)
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 24)
        .await
        .unwrap();
    Page {
        status,
        location,
        cookie,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// Issue 26 item 6 (login CSRF): a login form posted from another site was accepted, so a
/// page elsewhere could log a clerk's browser into the attacker's session. A browser's
/// `Origin` / `Sec-Fetch-Site` from another site is now refused; same-origin posts and
/// clients that send neither (curl) log in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_posted_from_another_site_is_refused() {
    let h = tokio::task::block_in_place(hub);
    let body = || Some(form(&[("token", &h.token_a)]));
    for (headers, want) in [
        (
            vec![
                ("host", "127.0.0.1:8080"),
                ("origin", "https://evil.example"),
            ],
            StatusCode::FORBIDDEN,
        ),
        (
            vec![
                ("host", "127.0.0.1:8080"),
                ("origin", "http://127.0.0.1:8081"),
            ],
            StatusCode::FORBIDDEN,
        ),
        (
            vec![("host", "127.0.0.1:8080"), ("origin", "null")],
            StatusCode::FORBIDDEN,
        ),
        (
            vec![("host", "127.0.0.1:8080"), ("sec-fetch-site", "cross-site")],
            StatusCode::FORBIDDEN,
        ),
        (
            vec![("host", "127.0.0.1:8080"), ("sec-fetch-site", "same-site")],
            StatusCode::FORBIDDEN,
        ),
        (
            vec![
                ("host", "127.0.0.1:8080"),
                ("origin", "http://127.0.0.1:8080"),
                ("sec-fetch-site", "same-origin"),
            ],
            StatusCode::SEE_OTHER,
        ),
        (vec![("host", "127.0.0.1:8080")], StatusCode::SEE_OTHER),
    ] {
        let p = send_from(&h.app, "POST", "/terminal/login", &headers, None, body()).await;
        assert_eq!(p.status, want, "{headers:?}: {}", p.body);
        assert_eq!(
            p.cookie.is_some(),
            want == StatusCode::SEE_OTHER,
            "{headers:?}"
        );
    }
}

/// Issue 26 item 6 (session cap): sessions were capped globally and the oldest dropped, so
/// one municipality logging in often could end everyone else's sessions. The cap is per
/// credential now: A's many logins end A's oldest sessions only; B stays logged in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_credential_cannot_end_another_credentials_sessions() {
    let h = tokio::task::block_in_place(hub);
    let b_session = login(&h.app, &h.token_b).await;
    let first_a = login(&h.app, &h.token_a).await;
    for _ in 0..kukaku::api::pages::SESSIONS_PER_CREDENTIAL + 5 {
        login(&h.app, &h.token_a).await;
    }
    let p = send(
        &h.app,
        "GET",
        "/terminal/candidates",
        Some(&b_session),
        None,
    )
    .await;
    assert_eq!(p.status, StatusCode::OK, "B's session survives A's logins");
    let p = send(&h.app, "GET", "/terminal/candidates", Some(&first_a), None).await;
    assert_eq!(
        p.location.as_deref(),
        Some("/terminal/login"),
        "A's own oldest session ended"
    );
}

/// Issue 26 item 2: a 429 (too many failures from this source) ended the terminal's session
/// as if the credential had been revoked. Now the 429 is shown and the session stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_failures_from_a_source_keep_the_session() {
    let h = tokio::task::block_in_place(hub);
    let session = login(&h.app, &h.token_a).await;
    let (prefix, secret) = h.token_a.rsplit_once('_').unwrap();
    let wrong = format!("{prefix}_{}", "A".repeat(secret.len()));
    let bearer = format!("Bearer {wrong}");
    for _ in 0..kukaku::api::guesses::PER_SOURCE {
        let p = send_from(
            &h.app,
            "GET",
            "/v1/checkpoint",
            &[("authorization", &bearer)],
            Some("192.0.2.5"),
            None,
        )
        .await;
        assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    }
    let cookie = [("cookie", session.as_str())];
    let p = send_from(
        &h.app,
        "GET",
        "/terminal/candidates",
        &cookie,
        Some("192.0.2.5"),
        None,
    )
    .await;
    assert_eq!(p.status, StatusCode::TOO_MANY_REQUESTS, "{}", p.body);
    let p = send_from(
        &h.app,
        "GET",
        "/terminal/candidates",
        &cookie,
        Some("198.51.100.7"),
        None,
    )
    .await;
    assert_eq!(p.status, StatusCode::OK, "the session was kept");
}

/// Issue 27 item 3 at the terminal: a candidate with a 空白期間 shows it as 要確認 with a form
/// to record what the clerk found, apart from the 確定指示 (CSRF checked); once recorded, it
/// shows as 確認済 with its history and the list's 要確認 filter no longer holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anomaly_is_acknowledged_at_the_terminal() {
    let h = tokio::task::block_in_place(gap_hub);
    let app = &h.app;
    let cookie = login(app, &h.token_b).await;
    let list = send(
        app,
        "GET",
        "/terminal/candidates?state=anomalies",
        Some(&cookie),
        None,
    )
    .await;
    assert!(
        list.body.contains("1 件") && list.body.contains("要確認"),
        "{}",
        list.body
    );
    let at = list.body.find("/terminal/candidates/").unwrap() + 21;
    let seq: u64 = list.body[at..].split('"').next().unwrap().parse().unwrap();
    let uri = format!("/terminal/candidates/{seq}");
    let detail = send(app, "GET", &uri, Some(&cookie), None).await;
    assert!(
        detail.body.contains("要確認事項の確認") && detail.body.contains("空白期間"),
        "{}",
        detail.body
    );
    let size = h.store.size(&h.b).unwrap();
    let fields = |csrf: &str| {
        form(&[
            ("csrf", csrf),
            ("note", "転入届の遅れ。空白期間の国保加入なしを確認"),
        ])
    };
    let ack = format!("{uri}/acknowledgement");
    let p = send(app, "POST", &ack, Some(&cookie), Some(fields("forged"))).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert_eq!(
        h.store.size(&h.b).unwrap(),
        size,
        "a forged form stored something"
    );
    let token = csrf(&detail.body);
    let p = send(app, "POST", &ack, Some(&cookie), Some(fields(&token))).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let back = send(
        app,
        "GET",
        p.location.as_deref().unwrap(),
        Some(&cookie),
        None,
    )
    .await;
    assert!(
        back.body.contains("確認済にしました")
            && back.body.contains("（確認済）")
            && back.body.contains("転入届の遅れ")
            && !back.body.contains("確認済にする"),
        "{}",
        back.body
    );
    assert!(
        back.body.contains("確定指示を送信"),
        "the decision is still to make"
    );
    let list = send(
        app,
        "GET",
        "/terminal/candidates?state=anomalies",
        Some(&cookie),
        None,
    )
    .await;
    assert!(list.body.contains("0 件"), "{}", list.body);
    assert!(
        access_purposes(&h.store, &h.b)
            .iter()
            .any(|p| p == "continuity_anomaly_ack"),
        "the acknowledgement's read is an access record"
    );
}

/// Issue 28 item 1: each clerk of a municipality logs in with their own credential; a
/// decision records the credential and its display name, never a typed one (a sent
/// `operator` field is ignored), so a correction by a second clerk names both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_clerk_is_named_by_their_own_credential() {
    let h = tokio::task::block_in_place(hub);
    let app = &h.app;
    let second = clerk(&h.store, &h.b, "中央区 窓口 鈴木");
    let (first, other) = (login(app, &h.token_b).await, login(app, &second).await);
    let list = send(app, "GET", "/terminal/candidates", Some(&first), None).await;
    let at = list.body.find("/terminal/candidates/").unwrap() + 21;
    let seq: u64 = list.body[at..].split('"').next().unwrap().parse().unwrap();
    let uri = format!("/terminal/candidates/{seq}");
    for (cookie, decision) in [(&first, "continue"), (&other, "not_continue")] {
        let page = send(app, "GET", &uri, Some(cookie), None).await;
        let body = form(&[
            ("csrf", &csrf(&page.body)),
            ("decision", decision),
            ("operator", "なりすまし"),
        ]);
        let p = send(
            app,
            "POST",
            &format!("{uri}/decision"),
            Some(cookie),
            Some(body),
        )
        .await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    }
    let page = send(app, "GET", &uri, Some(&other), None).await;
    assert!(
        page.body.contains(B_CLERK) && page.body.contains("中央区 窓口 鈴木"),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains("なりすまし"),
        "a typed name was recorded"
    );
    // The entries name the credentials.
    let scope = {
        let kek = Kek::load_file(&Paths::under(h._dir.path()).kek).unwrap();
        AdminScope::from_kek(&kek).partition(&h.b)
    };
    let states = kukaku::flows::decision::candidates(&h.store, &scope).unwrap();
    let ids: Vec<String> = [&h.token_b, &second]
        .iter()
        .map(|t| {
            kukaku::crypto::credential::Token::parse(t)
                .unwrap()
                .id()
                .to_string()
        })
        .collect();
    let recorded: Vec<Option<String>> = states[0]
        .decisions
        .iter()
        .map(|(_, d)| d.credential.clone())
        .collect();
    assert_eq!(recorded, ids.into_iter().map(Some).collect::<Vec<_>>());
}

/// Issue 28 item 1: a session ends after the configured time without a request
/// (`serve --session-idle-minutes`); here the time is zero, so the next request is already
/// past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_ends() {
    let h = tokio::task::block_in_place(hub);
    let app = api::router(
        AppState::new(Arc::clone(&h.store), ServerRole::Hub)
            .with_session_idle(std::time::Duration::ZERO),
        Limits::default(),
    );
    let cookie = login(&app, &h.token_b).await;
    let p = send(&app, "GET", "/terminal/candidates", Some(&cookie), None).await;
    assert_eq!(
        (p.status, p.location.as_deref()),
        (StatusCode::SEE_OTHER, Some("/terminal/login"))
    );
    // The default keeps it, and a forged logout does not end it.
    let cookie = login(&h.app, &h.token_b).await;
    let p = send(&h.app, "GET", "/terminal/candidates", Some(&cookie), None).await;
    assert_eq!(p.status, StatusCode::OK);
    let forged = form(&[("csrf", "forged")]);
    let p = send(
        &h.app,
        "POST",
        "/terminal/logout",
        Some(&cookie),
        Some(forged),
    )
    .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    let p = send(&h.app, "GET", "/terminal/candidates", Some(&cookie), None).await;
    assert_eq!(
        p.status,
        StatusCode::OK,
        "a forged logout ended the session"
    );
}

/// A multipart/form-data body of text fields and files (name, filename, content).
fn multipart(fields: &[(&str, &str)], files: &[(&str, &str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "kukaku-test-boundary-7f3a";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    for (name, filename, content) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: text/csv\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Sends a multipart form to the terminal with the session cookie.
async fn post_multipart(
    app: &Router,
    uri: &str,
    cookie: &str,
    (kind, body): (String, Vec<u8>),
) -> Page {
    let req = Request::builder()
        .method("POST")
        .uri(uri)
        .header("cookie", cookie)
        .header(header::CONTENT_TYPE, kind)
        .body(Body::from(body))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let location = res
        .headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 24)
        .await
        .unwrap();
    Page {
        status,
        location,
        cookie: None,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// Issue 28 item 2: a clerk sends a transmission from the terminal. A file with errors is
/// refused whole: the 処理結果 lists each problem by file, line, field and reason (never the
/// value) with a CSV of them, nothing is stored, and 送信状況 shows the エラー. The fixed
/// files are accepted (the id read from the files), listed as 受付済 with their seqs and
/// checkpoint, and as 中間サーバー送付済 once the intermediate's cosignature of a covering
/// checkpoint is kept. A forged form stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clerk_sends_a_transmission_and_sees_it_forwarded() {
    let h = tokio::task::block_in_place(hub);
    // The intermediate's witness key, trusted by this hub.
    let witness_dir = tempfile::tempdir().unwrap();
    let witness = tokio::task::block_in_place(|| {
        crate::common::init_store(
            &Paths::under(witness_dir.path()),
            "intermediate.example",
            common::small(),
        )
        .unwrap()
    });
    let app = api::router(
        AppState::new(Arc::clone(&h.store), ServerRole::Hub)
            .with_witnesses(vec![witness.cosigner_key()]),
        Limits::default(),
    );
    let cookie = login(&app, &h.token_a).await;
    let form_page = send(
        &app,
        "GET",
        "/terminal/transmissions/new",
        Some(&cookie),
        None,
    )
    .await;
    assert!(
        form_page.body.contains("multipart/form-data") && form_page.body.contains("文字コード"),
        "{}",
        form_page.body
    );
    let token = csrf(&form_page.body);
    let good = kukaku::flows::sample::transmission("131011", "131011-2024-0101", 3, 41);
    let first = good.kojin_nos[0].clone();
    let wrong_check = format!("{}{}", &first[..11], (first.as_bytes()[11] - b'0' + 1) % 10);
    let broken = good.kojin.replacen(first.as_str(), &wrong_check, 1);
    let files = |kojin: &str| -> Vec<(String, String, Vec<u8>)> {
        vec![
            (
                "setai_file".into(),
                "setai.csv".into(),
                good.setai.as_bytes().to_vec(),
            ),
            (
                "kojin_file".into(),
                "kojin.csv".into(),
                kojin.as_bytes().to_vec(),
            ),
        ]
    };
    let body = |csrf: &str, kojin: &str| {
        let f = files(kojin);
        let refs: Vec<(&str, &str, &[u8])> = f
            .iter()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_slice()))
            .collect();
        multipart(&[("csrf", csrf), ("encoding", "utf-8")], &refs)
    };
    let size = h.store.size(&h.a).unwrap();
    let p = post_multipart(
        &app,
        "/terminal/transmissions",
        &cookie,
        body("forged", &good.kojin),
    )
    .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert_eq!(
        h.store.size(&h.a).unwrap(),
        size,
        "a forged form stored something"
    );

    let p = post_multipart(
        &app,
        "/terminal/transmissions",
        &cookie,
        body(&token, &broken),
    )
    .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", p.body);
    assert!(
        p.body.contains("処理結果")
            && p.body.contains("個人ファイル")
            && p.body.contains("kojin_no"),
        "{}",
        p.body
    );
    assert!(p.body.contains("check_digit"), "the reason: {}", p.body);
    assert!(p.body.contains("data:text/csv"), "no CSV of the problems");
    for value in [&wrong_check, &first] {
        assert!(!p.body.contains(value.as_str()), "a value on the 処理結果");
    }
    assert_eq!(
        h.store.size(&h.a).unwrap(),
        size,
        "a refused transmission stored something"
    );
    let list = send(&app, "GET", "/terminal/transmissions", Some(&cookie), None).await;
    assert!(
        list.body.contains("エラー") && list.body.contains("131011-2024-0101"),
        "{}",
        list.body
    );

    let p = post_multipart(
        &app,
        "/terminal/transmissions",
        &cookie,
        body(&token, &good.kojin),
    )
    .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert_eq!(
        p.location.as_deref(),
        Some("/terminal/transmissions?accepted=131011-2024-0101")
    );
    let list = send(
        &app,
        "GET",
        p.location.as_deref().unwrap(),
        Some(&cookie),
        None,
    )
    .await;
    assert!(
        list.body.contains("受け付けました")
            && list.body.contains("受付済")
            && list.body.contains("サイズ "),
        "{}",
        list.body
    );
    assert!(!list.body.contains("中間サーバー送付済"), "{}", list.body);

    // The intermediate verifies and cosigns the checkpoint that covers it.
    tokio::task::block_in_place(|| {
        let end = h
            .store
            .transmission(&h.a, "131011-2024-0101")
            .unwrap()
            .unwrap();
        let end = end.first_seq + end.count;
        let sizes = h.store.checkpoint_sizes(&h.a).unwrap();
        let at = *sizes.iter().find(|s| **s >= end).unwrap();
        let note = h.store.checkpoint_at(&h.a, at).unwrap();
        let cosigned = witness.cosign(&note).unwrap();
        h.store
            .add_cosignature(&h.a, &cosigned, &[witness.cosigner_key()])
            .unwrap();
    });
    let list = send(&app, "GET", "/terminal/transmissions", Some(&cookie), None).await;
    assert!(list.body.contains("中間サーバー送付済"), "{}", list.body);
    assert!(list.body.contains(" 秒"), "the lag: {}", list.body);
    // B's clerk sees none of A's transmissions.
    let b = login(&app, &h.token_b).await;
    let list = send(&app, "GET", "/terminal/transmissions", Some(&b), None).await;
    assert!(!list.body.contains("131011-2024-0101"), "{}", list.body);
}

/// Issue 28 item 3: a bulk 確定指示. The list offers a checkbox per undecided move and no
/// pre-selected choice; the review step shows what will be registered and warns where the
/// choice differs from the suggestion or an anomaly is open; only the commit registers the
/// decisions, all in one batch, each naming the clerk. A forged form registers nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_decision_is_reviewed_then_registered() {
    let h = tokio::task::block_in_place(gap_hub);
    let app = &h.app;
    let cookie = login(app, &h.token_b).await;
    let list = send(app, "GET", "/terminal/candidates", Some(&cookie), None).await;
    assert!(list.body.contains("type=\"checkbox\""), "{}", list.body);
    assert!(!list.body.contains("checked"), "a pre-selected choice");
    let at = list.body.find("/terminal/candidates/").unwrap() + 21;
    let seq: u64 = list.body[at..].split('"').next().unwrap().parse().unwrap();
    let token = csrf(&list.body);
    let seq_field = format!("seq_{seq}");
    let fields = |csrf: &str, stage: &str| {
        form(&[
            ("csrf", csrf),
            (seq_field.as_str(), "1"),
            ("decision", "continue"),
            ("reason", "一括"),
            ("stage", stage),
        ])
    };
    let size = h.store.size(&h.b).unwrap();
    let p = send(
        app,
        "POST",
        "/terminal/bulk-decision",
        Some(&cookie),
        Some(fields("forged", "commit")),
    )
    .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert_eq!(h.store.size(&h.b).unwrap(), size);
    let review = send(
        app,
        "POST",
        "/terminal/bulk-decision",
        Some(&cookie),
        Some(fields(&token, "review")),
    )
    .await;
    assert_eq!(review.status, StatusCode::OK, "{}", review.body);
    assert!(
        review.body.contains("1 件に「継続する」")
            && review.body.contains("提案と異なる")
            && review.body.contains("未確認の要確認事項"),
        "{}",
        review.body
    );
    let states = |h: &Hub| {
        let kek = Kek::load_file(&Paths::under(h._dir.path()).kek).unwrap();
        let scope = AdminScope::from_kek(&kek).partition(&h.b);
        kukaku::flows::decision::candidates(&h.store, &scope).unwrap()
    };
    assert!(
        tokio::task::block_in_place(|| states(&h))[0]
            .decision
            .is_none(),
        "the review decided"
    );
    let p = send(
        app,
        "POST",
        "/terminal/bulk-decision",
        Some(&cookie),
        Some(fields(&token, "commit")),
    )
    .await;
    assert_eq!(
        (p.status, p.location.as_deref()),
        (StatusCode::SEE_OTHER, Some("/terminal/candidates?bulk=1")),
        "{}",
        p.body
    );
    let s = tokio::task::block_in_place(|| states(&h));
    let (_, d) = s[0].decision.clone().unwrap();
    assert_eq!(
        (d.decision.as_str(), d.operator.as_str()),
        ("continue", B_CLERK)
    );
    let back = send(
        app,
        "GET",
        "/terminal/candidates?bulk=1",
        Some(&cookie),
        None,
    )
    .await;
    assert!(
        back.body.contains("1 件の確定指示を登録しました"),
        "{}",
        back.body
    );
    // Nothing selected: refused, nothing stored.
    let size = h.store.size(&h.b).unwrap();
    let none = form(&[
        ("csrf", &token),
        ("decision", "continue"),
        ("stage", "commit"),
    ]);
    let p = send(
        app,
        "POST",
        "/terminal/bulk-decision",
        Some(&cookie),
        Some(none),
    )
    .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert_eq!(h.store.size(&h.b).unwrap(), size);
}

/// Issue 28 item 5: the 国保連合会 operator's console. The operator logs in at the same page
/// and lands on the console: per municipality the flow-4 counts and the forwarding, counts
/// only (no name, no 世帯番号); it runs the extraction and the confirmation (CSRF checked,
/// a rerun adds nothing); its reads are access records in each municipality; a clerk cannot
/// open it, the operator of another prefecture sees none of these municipalities.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_runs_flow_4_from_the_console() {
    let h = tokio::task::block_in_place(hub);
    let app = &h.app;
    let operator = |prefecture: &str| {
        let day = kukaku::store::now_unix_ms() + 86_400_000;
        h.store
            .issue_credential(
                Role::ContinuityOperator,
                Reach::Prefecture(prefecture.into()),
                "連合会 運用 田中",
                day,
            )
            .unwrap()
            .0
            .to_text()
            .to_string()
    };
    let raw = send(
        app,
        "POST",
        "/terminal/login",
        None,
        Some(form(&[("token", &operator("13"))])),
    )
    .await;
    assert_eq!(raw.location.as_deref(), Some("/terminal/console"));
    let cookie = raw.cookie.unwrap().split(';').next().unwrap().to_owned();
    let page = send(app, "GET", "/terminal/console", Some(&cookie), None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    for want in [
        "131011 千代田区",
        "131029 中央区",
        "連合会 運用 田中",
        "抽出を実行",
        "13 東京都",
    ] {
        assert!(page.body.contains(want), "{want}: {}", page.body);
    }
    for never in ["山田", "B100", "A100", HEAD] {
        assert!(!page.body.contains(never), "{never} on the console");
    }
    assert!(
        access_purposes(&h.store, &h.b)
            .iter()
            .any(|p| p == "continuity_workload"),
        "counting B's moves is an access record in B"
    );
    // The operator's session belongs on the console.
    let p = send(app, "GET", "/terminal/candidates", Some(&cookie), None).await;
    assert_eq!(p.location.as_deref(), Some("/terminal/console"));
    let token = csrf(&page.body);
    let run = |path: &'static str, fields: Vec<(&'static str, String)>| {
        let cookie = cookie.clone();
        async move {
            let f: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            send(app, "POST", path, Some(&cookie), Some(form(&f))).await
        }
    };
    let size = h.store.size(&h.b).unwrap();
    let p = run(
        "/terminal/console/extract",
        vec![("csrf", "forged".into()), ("as_of", "2025-03-31".into())],
    )
    .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert_eq!(
        h.store.size(&h.b).unwrap(),
        size,
        "a forged form ran the job"
    );
    let p = run(
        "/terminal/console/extract",
        vec![("csrf", token.clone()), ("as_of", "2025-03-31".into())],
    )
    .await;
    assert!(
        p.body.contains("新しい候補 0 件") && p.body.contains("令和7年3月31日"),
        "the fixture's move was extracted already: {}",
        p.body
    );
    // B's clerk decides; the operator confirms, twice.
    let b = login(app, &h.token_b).await;
    let list = send(app, "GET", "/terminal/candidates", Some(&b), None).await;
    let at = list.body.find("/terminal/candidates/").unwrap() + 21;
    let seq: u64 = list.body[at..].split('"').next().unwrap().parse().unwrap();
    let detail = send(
        app,
        "GET",
        &format!("/terminal/candidates/{seq}"),
        Some(&b),
        None,
    )
    .await;
    let decided = send(
        app,
        "POST",
        &format!("/terminal/candidates/{seq}/decision"),
        Some(&b),
        Some(form(&[
            ("csrf", &csrf(&detail.body)),
            ("decision", "continue"),
        ])),
    )
    .await;
    assert_eq!(decided.status, StatusCode::SEE_OTHER);
    let p = run("/terminal/console/confirm", vec![("csrf", "forged".into())]).await;
    assert_eq!(
        p.status,
        StatusCode::FORBIDDEN,
        "a forged confirmation form"
    );
    let p = run("/terminal/console/confirm", vec![("csrf", token.clone())]).await;
    assert!(p.body.contains("確定 1 世帯"), "{}", p.body);
    let p = run("/terminal/console/confirm", vec![("csrf", token.clone())]).await;
    assert!(
        p.body.contains("確定 0 世帯") && p.body.contains("確定済 1 世帯"),
        "{}",
        p.body
    );
    // The operator's own actions, newest first.
    let page = send(app, "GET", "/terminal/console", Some(&cookie), None).await;
    let log = &page.body[page.body.find("自分の操作の記録").unwrap()..];
    let at = |s: &str| log.find(s).unwrap_or_else(|| panic!("{s}: {log}"));
    assert!(
        at("確定 0 世帯") < at("確定 1 世帯") && at("確定 1 世帯") < at("新しい候補 0 件"),
        "{log}"
    );
    // A clerk cannot open the console; another prefecture's operator sees none of Tokyo.
    let p = send(app, "GET", "/terminal/console", Some(&b), None).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    let osaka = send(
        app,
        "POST",
        "/terminal/login",
        None,
        Some(form(&[("token", &operator("27"))])),
    )
    .await;
    let osaka = osaka.cookie.unwrap().split(';').next().unwrap().to_owned();
    let p = send(app, "GET", "/terminal/console", Some(&osaka), None).await;
    assert!(
        !p.body.contains("131011") && !p.body.contains("131029"),
        "{}",
        p.body
    );
    assert!(
        p.body.contains("まだ操作の記録はありません"),
        "another operator's log: {}",
        p.body
    );
}

/// Issue 28 item 6: a person's disclosure record. The clerk enters the 個人番号 in a form
/// (never in a URL, never shown back) and gets every access and provision record that
/// touched the person's entries in this municipality; the JSON carries each record's
/// envelope and an inclusion proof that verifies with the partition's key (the auditor's
/// code: `InclusionProofJson::verify_with_key`) and whose leaf is the envelope's; the request
/// is itself an access record; a bad number is refused without echoing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disclosure_record_lists_who_touched_a_person_with_proofs() {
    use base64::Engine as _;
    let h = tokio::task::block_in_place(hub);
    let app = &h.app;
    let cookie = login(app, &h.token_b).await;
    let page = send(app, "GET", "/terminal/disclosure", Some(&cookie), None).await;
    assert!(page.body.contains("type=\"password\""), "{}", page.body);
    let token = csrf(&page.body);
    let ask = |kojin: &str, format: &str| {
        form(&[("csrf", &token), ("kojin_no", kojin), ("format", format)])
    };
    let size = h.store.size(&h.b).unwrap();
    let forged = form(&[("csrf", "forged"), ("kojin_no", HEAD), ("format", "html")]);
    let p = send(
        app,
        "POST",
        "/terminal/disclosure",
        Some(&cookie),
        Some(forged),
    )
    .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert_eq!(
        h.store.size(&h.b).unwrap(),
        size,
        "a forged request was recorded"
    );
    let wrong = format!("{}{}", &HEAD[..11], (HEAD.as_bytes()[11] - b'0' + 1) % 10);
    let p = send(
        app,
        "POST",
        "/terminal/disclosure",
        Some(&cookie),
        Some(ask(&wrong, "html")),
    )
    .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert!(!p.body.contains(&wrong), "the number was echoed");
    let p = send(
        app,
        "POST",
        "/terminal/disclosure",
        Some(&cookie),
        Some(ask("314159265352", "html")),
    )
    .await;
    assert_eq!(p.status, StatusCode::NOT_FOUND, "{}", p.body);

    let p = send(
        app,
        "POST",
        "/terminal/disclosure",
        Some(&cookie),
        Some(ask(HEAD, "html")),
    )
    .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert!(
        p.body.contains("本人開示記録") && p.body.contains("継続世帯の処理"),
        "{}",
        p.body
    );
    assert!(!p.body.contains(HEAD), "the 個人番号 on the page");
    assert!(
        access_purposes(&h.store, &h.b)
            .iter()
            .any(|p| p == "disclosure"),
        "the request is an access record"
    );

    let p = send(
        app,
        "POST",
        "/terminal/disclosure",
        Some(&cookie),
        Some(ask(HEAD, "json")),
    )
    .await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(!p.body.contains(HEAD), "the 個人番号 in the JSON");
    let d: serde_json::Value = serde_json::from_str(&p.body).unwrap();
    assert_eq!(d["partition"], "131029");
    let handled = d["handled"].as_array().unwrap();
    for purpose in ["transmission_import", "continuity_scan", "disclosure"] {
        assert!(
            handled.iter().any(|r| r["purpose"] == purpose),
            "{purpose}: the import, the extraction's read and the earlier request: {d}"
        );
    }
    let key = h.store.verifier_key(&h.b).unwrap();
    for r in handled {
        let proof: kukaku::ledger::proof_json::InclusionProofJson =
            serde_json::from_value(r["proof"].clone()).unwrap();
        proof.verify_with_key(&key).unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(r["envelope"].as_str().unwrap())
            .unwrap();
        let env = kukaku::ledger::EnvelopeRef::decode(&raw).unwrap();
        assert_eq!(
            env.leaf_hash().to_base64(),
            proof.leaf_hash,
            "the proof is of this record"
        );
        let kukaku::ledger::envelope::BodyRef::Open { salt, payload } = env.body else {
            panic!("a sealed record in a disclosure");
        };
        assert_eq!(
            env.header.commitment,
            kukaku::ledger::hash::commitment(salt, payload),
            "the record's text is the one the log holds"
        );
    }
    // A's clerk gets A's records of the same person, never B's.
    let a = login(app, &h.token_a).await;
    let a_page = send(app, "GET", "/terminal/disclosure", Some(&a), None).await;
    let a_form = form(&[
        ("csrf", &csrf(&a_page.body)),
        ("kojin_no", HEAD),
        ("format", "json"),
    ]);
    let p = send(app, "POST", "/terminal/disclosure", Some(&a), Some(a_form)).await;
    let d: serde_json::Value = serde_json::from_str(&p.body).unwrap();
    assert_eq!(d["partition"], "131011");
}
