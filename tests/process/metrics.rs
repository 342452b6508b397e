//! `serve --metrics-listen` as an operator scrapes it: after a short load the counters moved,
//! the text format parses, and no label carries an input's 個人番号 or 番号, a credential id
//! or any run of six digits (partition ids only with --metrics-partition-labels).

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::keys_cli::kukaku;
use super::serve_crash::{Http, call, token};

/// One sample of the text format: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// Parses the Prometheus text format strictly enough for the test: every line a comment, a
/// blank, or `name{label="value",…} number`.
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').expect(line);
        let value: f64 = value.parse().expect(line);
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), Vec::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect(line);
                let labels = body
                    .split("\",")
                    .map(|kv| {
                        let (k, v) = kv.split_once("=\"").expect(line);
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
        };
        assert!(
            name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "{line}"
        );
        out.push((name, labels, value));
    }
    out
}

fn total(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, labels, _)| {
            n == name
                && with
                    .iter()
                    .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_after_a_load_shows_the_work_and_no_identifier() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let run = |args: &[&str]| {
        let o = kukaku(&home).args(args).output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(&["init", "--origin", "hub.test"]);
    run(&["partitions", "create", "131011"]);
    let clerk = token(
        &home,
        &[
            "--role",
            "municipality",
            "--partition",
            "131011",
            "--label",
            "clerk",
        ],
    );
    let mut server = kukaku(&home)
        .args(["serve", "--role", "hub", "--plain-http-loopback"])
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let (mut api, mut metrics) = (None, None);
    while api.is_none() || metrics.is_none() {
        let line = lines.next().expect("server exited").unwrap();
        if let Some(rest) = line.strip_prefix("metrics on ") {
            metrics = Some(rest.to_owned());
        }
        if let Some(rest) = line.split("serving ").nth(1) {
            api = Some(rest.split_whitespace().next().unwrap().to_owned());
        }
    }
    let (api, metrics) = (api.unwrap(), metrics.unwrap());
    std::thread::spawn(move || for _ in lines {});
    let http: Http = Client::builder(TokioExecutor::new()).build_http();

    let mut inputs = Vec::new();
    for i in 0..3 {
        let tid = format!("T-M-{i}");
        let files = kukaku::flows::sample::transmission("131011", &tid, 4, 900 + i);
        inputs.extend(files.kojin_nos.iter().cloned());
        inputs.extend(files.bangos.iter().cloned());
        let body = serde_json::json!({
            "transmission_id": tid,
            "encoding": "utf-8",
            "setai_file": B64.encode(&files.setai),
            "kojin_file": B64.encode(&files.kojin),
        });
        let (status, _) = call(
            &http,
            "POST",
            &format!("{api}/v1/transmissions"),
            &clerk,
            Some(&body),
        )
        .await
        .unwrap();
        assert_eq!(status, 201);
    }
    let (status, _) = call(
        &http,
        "GET",
        &format!("{api}/v1/checkpoint"),
        "kk1_wrong",
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 401);

    let req = hyper::Request::get(&metrics)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = http.request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let text =
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    server.kill().unwrap();
    server.wait().unwrap();

    let samples = parse(&text);
    assert!(
        total(&samples, "kukaku_appended_entries_total", &[]) >= 3.0 * 5.0,
        "{text}"
    );
    assert!(
        total(&samples, "kukaku_commits_total", &[]) >= 3.0,
        "{text}"
    );
    assert!(
        total(&samples, "kukaku_commit_seconds_count", &[]) >= 3.0,
        "{text}"
    );
    let imports = [
        ("route", "/v1/transmissions"),
        ("method", "POST"),
        ("status", "201"),
    ];
    assert_eq!(
        total(&samples, "kukaku_http_requests_total", &imports),
        3.0,
        "{text}"
    );
    assert!(
        total(&samples, "kukaku_auth_failures_total", &[]) >= 1.0,
        "{text}"
    );
    // No identifier anywhere: not an input's numbers, not the clerk's credential id, and no
    // label value with a run of six digits.
    let credential_id = clerk
        .trim_start_matches("kk1_")
        .get(..16)
        .unwrap()
        .to_owned();
    for secret in inputs.iter().chain([&credential_id]) {
        assert!(!text.contains(secret.as_str()), "the scrape holds {secret}");
    }
    for (name, labels, _) in &samples {
        for (k, v) in labels {
            let run = v
                .split(|c: char| !c.is_ascii_digit())
                .map(str::len)
                .max()
                .unwrap_or(0);
            assert!(run < 6, "{name} {k}={v}");
        }
    }
}
