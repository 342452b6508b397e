//! The terminal in headless Chromium on a real loopback listener, as people use it: a clerk
//! logs in with the keyboard, sends a transmission with an error, reads the 処理結果, sends
//! the fixed one, opens the list and a candidate and sends a 確定指示; the 国保連合会's
//! operator logs in and confirms from the console; the clerk's results show the carried
//! months, the printable 継続世帯確定リスト becomes a PDF (text, page number, page count, A4
//! checked), and the 要確認 candidate's 空白期間 is acknowledged with a note. Screenshots and
//! the PDF are kept under the target directory (`CARGO_TARGET_TMPDIR/terminal-browser`).
//!
//! Needs Chromium, CJK fonts, pdftotext and playwright-core: `scripts/test.sh` installs them
//! and runs this test with `--ignored`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::flow4::{as_of, who};
use common::{pid, small};
use kukaku::api::server::{self, Transport};
use kukaku::api::{self, AppState, Limits, ServerRole};
use kukaku::crypto::credential::{Reach, Role};
use kukaku::crypto::{AdminScope, Kek};
use kukaku::domain::continuity::Rules;
use kukaku::flows::import::import;
use kukaku::flows::transmission::Encoding;
use kukaku::store::{Paths, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and playwright-core; scripts/test.sh installs them and runs it"]
async fn a_person_decides_in_the_browser_and_prints_the_list() {
    let node_path = std::env::var("KUKAKU_NODE_PATH").unwrap_or_else(|_| {
        format!(
            "{}/.cache/kukaku-node/node_modules",
            std::env::var("HOME").unwrap()
        )
    });
    assert!(
        std::path::Path::new(&node_path)
            .join("playwright-core")
            .exists(),
        "playwright-core is not in {node_path}: run scripts/test.sh, which installs it"
    );
    let out = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("terminal-browser");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(dir.path());
    let (a, b) = (pid("131011"), pid("131029"));
    let (store, store_tokens) = tokio::task::block_in_place(|| {
        let store = Store::init(&paths, "hub.kokuho-13.example", small()).unwrap();
        store.request_partitions(&[a.clone(), b.clone()]).unwrap();
        store.provision(&mut |_, _| {}).unwrap();
        store.set_partition_name(&a, "千代田区").unwrap();
        store.set_partition_name(&b, "中央区").unwrap();
        // The demo's move: 山田 (case 3, contiguous) and 佐藤 (a 空白期間).
        let m = kukaku::flows::sample::same_prefecture_move(a.as_str(), b.as_str(), 7);
        for (p, f) in [(&a, &m.a), (&b, &m.b)] {
            let (s, k) = (f.setai.as_bytes(), f.kojin.as_bytes());
            import(&store, p, &f.transmission_id, Encoding::Utf8, s, k, &who()).unwrap();
        }
        let tid = format!("{a}-KOGAKU");
        kukaku::flows::kogaku::import(
            &store,
            &a,
            &tid,
            Encoding::Utf8,
            m.kogaku_a.as_bytes(),
            &who(),
        )
        .unwrap();
        let kek = Kek::load_file(&paths.kek).unwrap();
        let tokyo = AdminScope::from_kek(&kek).prefecture("13").unwrap();
        kukaku::flows::continuity::extract(&store, &tokyo, &Rules::default(), &who(), as_of())
            .unwrap();
        let issue = |role, reach, label| {
            let hour = kukaku::store::now_unix_ms() + 3_600_000;
            let (t, _) = store.issue_credential(role, reach, label, hour).unwrap();
            t.to_text().to_string()
        };
        let clerk = issue(
            Role::Municipality,
            Reach::Partition(b.clone()),
            "中央区 窓口 山田",
        );
        let operator = issue(
            Role::ContinuityOperator,
            Reach::Prefecture("13".into()),
            "連合会 運用 田中",
        );
        (Arc::new(store), (clerk, operator))
    });
    let (token, operator) = store_tokens;

    let listener = server::bind("127.0.0.1:0".parse().unwrap(), &Transport::PlainLoopback)
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    // The intermediate server: a store of its own whose witness key the hub trusts; it
    // replicates B when the clerk's transmission has been accepted.
    let inter_dir = tempfile::tempdir().unwrap();
    let inter = tokio::task::block_in_place(|| {
        let inter = Store::init(
            &Paths::under(inter_dir.path()),
            "intermediate.example",
            small(),
        )
        .unwrap();
        inter.request_partitions(std::slice::from_ref(&b)).unwrap();
        inter.provision(&mut |_, _| {}).unwrap();
        inter
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server::serve(
        listener,
        api::router(
            AppState::new(Arc::clone(&store), ServerRole::Hub)
                .with_witnesses(vec![inter.cosigner_key()]),
            Limits::default(),
        ),
        Transport::PlainLoopback,
        Limits::default(),
        async {
            let _ = stopped.await;
        },
        std::time::Duration::from_secs(5),
    ));

    // The files the person sends first with an error, then fixed.
    let sent = kukaku::flows::sample::transmission("131029", "131029-2024-0201", 3, 51);
    let first = sent.kojin_nos[0].clone();
    let wrong = format!("{}{}", &first[..11], (first.as_bytes()[11] - b'0' + 1) % 10);
    std::fs::write(out.join("setai.csv"), &sent.setai).unwrap();
    std::fs::write(out.join("kojin.csv"), &sent.kojin).unwrap();
    std::fs::write(
        out.join("kojin-bad.csv"),
        sent.kojin.replacen(first.as_str(), &wrong, 1),
    )
    .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/terminal.cjs");
    let mut child = Command::new("node")
        .arg(script)
        .arg(format!("http://{addr}"))
        .arg(&token)
        .arg(&out)
        .arg(&operator)
        .env("NODE_PATH", &node_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node is needed for the browser test");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut steps = std::collections::BTreeMap::new();
    let (rep_token, _) = store
        .issue_credential(
            Role::Replicator,
            Reach::Partitions([b.clone()].into_iter().collect()),
            "intermediate",
            kukaku::store::now_unix_ms() + 3_600_000,
        )
        .unwrap();
    let client = kukaku::api::client::HubClient::new(
        &format!("http://{addr}"),
        rep_token.to_text(),
        None,
        None,
    )
    .unwrap();
    let upstream = kukaku::flows::replicate::Upstream::from_partition_vkey(
        &store.verifier_key(&b).unwrap().to_text(),
    )
    .unwrap();
    tokio::task::block_in_place(|| {
        use std::io::Write as _;
        for line in stdout.lines() {
            let line = line.unwrap();
            let v: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|_| panic!("{line}"));
            let step = v["step"].as_str().unwrap().to_owned();
            if step == "accepted" {
                // The intermediate pulls, verifies and cosigns B's log, as its replicator
                // does every few seconds; then the clerk looks at 送信状況 again.
                let r = tokio::runtime::Handle::current()
                    .block_on(kukaku::flows::replicate::sync_partition(
                        &inter, &client, &upstream, &b, 100,
                    ))
                    .unwrap();
                assert_eq!(r.cosigned, Some(Ok(())), "{r:?}");
                writeln!(stdin, "replicated").unwrap();
                // The 個人番号 of 山田 太郎 for the disclosure step: on stdin only.
                let yamada = kukaku::flows::sample::kojin_no(70_000_000_000 + 7 * 1000 + 1);
                writeln!(stdin, "{yamada}").unwrap();
            }
            steps.insert(step, v["text"].as_str().unwrap_or_default().to_owned());
        }
    });
    assert!(child.wait().unwrap().success(), "the browser script failed");
    let _ = stop.send(());
    serving.await.unwrap().unwrap();

    // What the person saw, page by page.
    let refused = &steps["refused"];
    assert!(
        refused.contains("処理結果")
            && refused.contains("check_digit")
            && !refused.contains(&wrong),
        "{refused}"
    );
    let accepted = &steps["accepted"];
    assert!(
        accepted.contains("131029-2024-0201") && accepted.contains("受付済"),
        "{accepted}"
    );
    let forwarded = &steps["forwarded"];
    assert!(
        forwarded.contains("中間サーバー送付済") && forwarded.contains("131029-2024-0201"),
        "{forwarded}"
    );
    let list = &steps["list"];
    assert!(
        list.contains("継続候補世帯リスト") && list.contains("2 件"),
        "{list}"
    );
    assert!(
        list.contains("N200") && list.contains("山田 太郎") && list.contains("N201"),
        "{list}"
    );
    assert!(
        list.contains("空白期間 4 日") && list.contains("要確認"),
        "{list}"
    );
    assert!(steps["detail"].contains("異動前の世帯員") && steps["detail"].contains("M100"));
    assert!(
        steps["decided"].contains("確定指示を登録しました")
            && steps["decided"].contains("中央区 窓口 山田"),
        "{}",
        steps["decided"]
    );
    // The operator confirmed from the console (4-③④).
    let console = &steps["console"];
    assert!(
        console.contains("131029 中央区") && console.contains("確定処理を実行"),
        "{console}"
    );
    assert!(
        steps["confirmed"].contains("確定 1 世帯"),
        "{}",
        steps["confirmed"]
    );
    let today = kukaku::domain::wareki::wareki(&kukaku::domain::text::format_date(
        kukaku::store::today_jst(),
    ))
    .unwrap();
    let results = &steps["results"];
    assert!(
        results.contains("継続する") && results.contains("2024-06, 2024-09"),
        "{results}"
    );
    assert!(
        !results.contains("2023-10"),
        "a month outside the window was carried: {results}"
    );
    assert!(steps["printed"].contains("継続世帯確定リスト") && steps["printed"].contains("1 世帯"));
    let acknowledged = &steps["acknowledged"];
    assert!(
        acknowledged.contains("確認済にしました")
            && acknowledged.contains("（確認済）")
            && acknowledged.contains("他の保険の加入なし"),
        "{acknowledged}"
    );
    assert!(
        steps["bulk_review"].contains("1 件に「継続する」")
            && steps["bulk_review"].contains("提案と異なる"),
        "{}",
        steps["bulk_review"]
    );
    assert!(
        steps["bulk_done"].contains("1 件の確定指示を登録しました"),
        "{}",
        steps["bulk_done"]
    );
    let disclosure = &steps["disclosure"];
    assert!(
        disclosure.contains("本人開示記録")
            && disclosure.contains("窓口端末での閲覧")
            && disclosure.contains("中央区"),
        "{disclosure}"
    );
    for shot in [
        "0a-refused.png",
        "0b-transmissions.png",
        "0c-forwarded.png",
        "1-candidates.png",
        "2-decision.png",
        "3-results.png",
        "4-print.png",
        "5-anomaly.png",
        "6-acknowledged.png",
        "6b-bulk-review.png",
        "7-console.png",
        "8-confirmed.png",
        "9-disclosure.png",
    ] {
        let len = std::fs::metadata(out.join(shot)).unwrap().len();
        assert!(len > 5_000, "{shot} is empty ({len} bytes)");
    }

    // The PDF holds the household (text extracted with poppler's pdftotext).
    let pdf = out.join("keizoku-list.pdf");
    let text = Command::new("pdftotext")
        .arg("-layout")
        .arg(&pdf)
        .arg("-")
        .output()
        .expect("pdftotext (poppler-utils) is needed");
    let text = String::from_utf8_lossy(&text.stdout);
    for want in [
        "N200",
        "M100",
        "131011",
        "2024-06, 2024-09",
        "継続世帯確定リスト",
        "山田 太郎",
        // Issue 28 item 4: totals, the clerk, the period and the 確認欄.
        "合計 1 世帯",
        "中央区 窓口 山田",
        today.as_str(),
        "確認欄",
        "131029 中央区",
        "131011 千代田区",
    ] {
        assert!(text.contains(want), "the PDF lacks {want}:\n{text}");
    }
    // The page number, n / N (pdftotext may close up the spaces).
    let compact: String = text.split_whitespace().collect();
    assert!(compact.contains("1/1"), "no page number:\n{text}");
    let info = Command::new("pdfinfo")
        .arg(&pdf)
        .output()
        .expect("pdfinfo (poppler-utils) is needed");
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.lines()
            .any(|l| l.starts_with("Pages:") && l.trim_end().ends_with(" 1")),
        "one page: {info}"
    );
    assert!(
        info.contains("(A4)") && info.contains("841.92 x 594.96"),
        "A4 landscape: {info}"
    );
    assert!(
        !text.contains("N201"),
        "an unconfirmed household is on the list"
    );
}
