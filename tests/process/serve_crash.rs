//! Crash loop through the binary: a child `kukaku serve` (hub) under concurrent HTTP load —
//! transmission imports from three clients, lookups (each appends an access record),
//! reads of acknowledged entries — while `kukaku keys rotate-dek` and `rotate-kek` run
//! through its admin socket, and an intermediate (`kukaku serve --role intermediate
//! --upstream …`) replicates from it the whole time. The hub is SIGKILLed at pseudo-random
//! points and restarted on the same port. After every kill:
//!
//! - every acknowledged import is there, whole, with its transmission record;
//! - every acknowledged lookup's access record is there;
//! - no partial batch: every transmission in the log has all of its households;
//! - `kukaku verify --with-keys` passes;
//!
//! and at the end the replicator has caught up with every snapshot exactly once and
//! receipts that tile the hub's log (it resumed cleanly across every kill).
//!
//! 3 kills by default (CI); `KUKAKU_SERVE_CRASH_KILLS=200` for the full loop
//! (`tools/crashloop.sh`).

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{pid, small};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kukaku::crypto::{AdminScope, Kek};
use kukaku::flows::sample;
use kukaku::flows::transmission::Household;
use kukaku::ledger::Seq;
use kukaku::ledger::{Kind, PartitionId};
use kukaku::store::{Paths, Store};
use serde_json::Value;

fn kukaku(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kukaku"));
    c.arg("--home").arg(home);
    c
}

fn run(home: &Path, args: &[&str]) -> String {
    let o = kukaku(home).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "kukaku {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

pub(crate) fn token(home: &Path, args: &[&str]) -> String {
    let out = run(home, &[&["credentials", "issue"], args].concat());
    out.lines()
        .find(|l| l.starts_with("kk1_"))
        .unwrap()
        .to_owned()
}

pub(crate) type Http = Client<HttpConnector, Full<Bytes>>;

/// `(status, JSON)`, or `None` when the connection failed (the server is down).
pub(crate) async fn call(
    http: &Http,
    method: &str,
    url: &str,
    token: &str,
    body: Option<&Value>,
) -> Option<(u16, Value)> {
    let req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            body.map(|b| serde_json::to_vec(b).unwrap())
                .unwrap_or_default(),
        )))
        .unwrap();
    let res = tokio::time::timeout(Duration::from_secs(30), http.request(req))
        .await
        .ok()?
        .ok()?;
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.ok()?.to_bytes();
    Some((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

/// What the clients were told was durable.
#[derive(Default)]
struct Acks {
    /// (transmission id, partition, households, first snapshot seq, count), in ack order.
    imports: Vec<(String, PartitionId, u64, u64, u64)>,
    /// How many of `imports` and `access` the previous rounds checked.
    checked: (usize, usize),
    /// (partition, seq) of access records of lookups.
    access: Vec<(PartitionId, u64)>,
    /// Reads of acknowledged entries that got an HTTP answer other than 200.
    bad_reads: Vec<String>,
}

struct Hub {
    home: PathBuf,
    port: u16,
    witness: String,
}

impl Hub {
    fn start(&self) -> Child {
        kukaku(&self.home)
            .args(["serve", "--role", "hub", "--plain-http-loopback"])
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--witness-vkey", &self.witness])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }
}

pub(crate) async fn wait_ready(http: &Http, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some((200, _)) = call(
            http,
            "GET",
            &format!("http://127.0.0.1:{port}/readyz"),
            "-",
            None,
        )
        .await
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the hub did not come up");
}

/// One importing client of one partition.
struct Importer {
    http: Http,
    base: String,
    token: String,
    p: PartitionId,
    client: u32,
}

/// Transmissions `S{client}-{n}-H{households}` from `n + 1` until stopped; the last `n`.
async fn importer(c: Importer, mut n: u64, acks: Arc<Mutex<Acks>>, stop: Arc<AtomicBool>) -> u64 {
    let Importer {
        http,
        base,
        token,
        p,
        client,
    } = c;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let households = 1 + n % 4;
        let tid = format!("S{client}-{n}-H{households}");
        let f = sample::transmission(
            p.as_str(),
            &tid,
            households as usize,
            u64::from(client) << 32 | n,
        );
        let body = serde_json::json!({
            "transmission_id": tid, "encoding": "utf-8",
            "setai_file": B64.encode(&f.setai), "kojin_file": B64.encode(&f.kojin),
        });
        match call(
            &http,
            "POST",
            &format!("{base}/v1/transmissions"),
            &token,
            Some(&body),
        )
        .await
        {
            Some((201 | 200, v)) => {
                assert_eq!(v["households"].as_u64(), Some(households), "{v}");
                acks.lock().unwrap().imports.push((
                    tid,
                    p.clone(),
                    households,
                    v["first_seq"].as_u64().unwrap(),
                    v["count"].as_u64().unwrap(),
                ));
            }
            Some((503, _)) | None => tokio::time::sleep(Duration::from_millis(20)).await,
            Some((s, v)) => panic!("import {tid}: {s} {v}"),
        }
    }
    n
}

/// Lookups by 世帯番号 of acknowledged imports (each appends an access record) and reads
/// of acknowledged entries, until stopped.
async fn reader(
    http: Http,
    base: String,
    tokens: Vec<(PartitionId, String)>,
    acks: Arc<Mutex<Acks>>,
    stop: Arc<AtomicBool>,
) {
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let pick = {
            let a = acks.lock().unwrap();
            a.imports
                .get(i.wrapping_mul(7919) % a.imports.len().max(1))
                .cloned()
        };
        let Some((tid, p, _, first, _)) = pick else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let token = &tokens.iter().find(|(q, _)| *q == p).unwrap().1;
        match call(
            &http,
            "GET",
            &format!("{base}/v1/entries/{first}"),
            token,
            None,
        )
        .await
        {
            Some((200, _)) | None => {}
            Some((s, v)) => acks
                .lock()
                .unwrap()
                .bad_reads
                .push(format!("{tid} seq {first}: {s} {v}")),
        }
        // The sample's 世帯番号 of household h of seed s: S{s%1000*1000+h:06}.
        let client: u64 = tid[1..2].parse().unwrap();
        let n: u64 = tid.split('-').nth(1).unwrap().parse().unwrap();
        let seed = client << 32 | n;
        let setai_no = format!("S{:06}", seed % 1000 * 1000);
        let body = serde_json::json!({ "setai_no": setai_no });
        match call(
            &http,
            "POST",
            &format!("{base}/v1/lookups"),
            token,
            Some(&body),
        )
        .await
        {
            Some((200, v)) => {
                if let Some(seq) = v["access_record_seq"].as_u64() {
                    acks.lock().unwrap().access.push((p.clone(), seq));
                }
            }
            // Another import of the same seed may have a different 世帯番号 set; 404 is fine.
            Some((404 | 503, _)) | None => {}
            Some((s, v)) => panic!("lookup: {s} {v}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_loses_no_acknowledged_write_and_the_replicator_resumes() {
    let kills: usize = std::env::var("KUKAKU_SERVE_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let (a, b) = (pid("131011"), pid("380014"));
    let dir = tempfile::tempdir().unwrap();
    let hub_home = dir.path().join("hub");
    let int_home = dir.path().join("intermediate");
    run(&hub_home, &["init", "--origin", "hub.crash.example"]);
    run(&hub_home, &["partitions", "create", a.as_str(), b.as_str()]);
    run(
        &int_home,
        &["init", "--origin", "intermediate.crash.example"],
    );
    run(&int_home, &["partitions", "create", a.as_str()]);
    let witness = run(&int_home, &["public-keys", "--witness"])
        .trim()
        .to_owned();
    let tokens = vec![
        (
            a.clone(),
            token(
                &hub_home,
                &[
                    "--role",
                    "municipality",
                    "--partition",
                    a.as_str(),
                    "--label",
                    "a",
                ],
            ),
        ),
        (
            b.clone(),
            token(
                &hub_home,
                &[
                    "--role",
                    "municipality",
                    "--partition",
                    b.as_str(),
                    "--label",
                    "b",
                ],
            ),
        ),
    ];
    let replicator = token(
        &hub_home,
        &[
            "--role",
            "replicator",
            "--partitions",
            a.as_str(),
            "--label",
            "intermediate",
        ],
    );
    let token_file = dir.path().join("replicator.token");
    std::fs::write(&token_file, &replicator).unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let vkey = {
        let hub = Store::open(&Paths::under(&hub_home), small()).unwrap();
        hub.verifier_key(&a).unwrap().to_text()
    };
    // A port the hub keeps across restarts, so the replicator finds it again.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let hub = Hub {
        home: hub_home.clone(),
        port,
        witness,
    };
    let mut intermediate = kukaku(&int_home)
        .args(["serve", "--role", "intermediate", "--plain-http-loopback"])
        .args(["--listen", "127.0.0.1:0", "--replicate-every", "1"])
        .args(["--replicate-max-backoff", "2"])
        .args(["--upstream", &base, "--upstream-vkey", &vkey])
        .arg("--upstream-token-file")
        .arg(&token_file)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("intermediate.log")).unwrap())
        .spawn()
        .unwrap();

    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    let acks = Arc::new(Mutex::new(Acks::default()));
    let mut counters = [0u64; 3];
    let mut checked: BTreeMap<PartitionId, u64> = BTreeMap::new();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for round in 0..kills {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut child = hub.start();
        wait_ready(&http, port).await;
        let stop = Arc::new(AtomicBool::new(false));
        let importers: Vec<_> = (0..3u32)
            .map(|c| {
                let p = if c == 2 { b.clone() } else { a.clone() };
                let t = tokens.iter().find(|(q, _)| *q == p).unwrap().1.clone();
                let client = Importer {
                    http: http.clone(),
                    base: base.clone(),
                    token: t,
                    p,
                    client: c,
                };
                tokio::spawn(importer(
                    client,
                    counters[c as usize],
                    Arc::clone(&acks),
                    Arc::clone(&stop),
                ))
            })
            .collect();
        let reads = tokio::spawn(reader(
            http.clone(),
            base.clone(),
            tokens.clone(),
            Arc::clone(&acks),
            Arc::clone(&stop),
        ));
        // Key operations through the admin socket (or on the store itself once the hub is
        // gone: either is a real operator's run).
        let keys = {
            let (stop, home) = (Arc::clone(&stop), hub_home.clone());
            tokio::task::spawn_blocking(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let op: &[&str] = if i % 4 == 0 {
                        &["keys", "rotate-kek", "--reason", "crash loop"]
                    } else {
                        &["keys", "rotate-dek", "--all", "--reason", "crash loop"]
                    };
                    let _ = kukaku(&home)
                        .args(op)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                    std::thread::sleep(Duration::from_millis(150));
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(200 + seed % 1500)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for (i, t) in importers.into_iter().enumerate() {
            counters[i] = t.await.unwrap();
        }
        reads.await.unwrap();
        keys.await.unwrap();

        // The hub is down: check its store directly.
        let mut acks = acks.lock().unwrap();
        assert!(
            acks.bad_reads.is_empty(),
            "round {round}: {:?}",
            acks.bad_reads
        );
        tokio::task::block_in_place(|| {
            let paths = Paths::under(&hub_home);
            let store = Store::open(&paths, small()).unwrap();
            assert!(store.quarantined().is_empty(), "{:?}", store.quarantined());
            let kek = Kek::load_file(&paths.kek).unwrap();
            let admin = AdminScope::from_kek(&kek);
            // This round's acknowledgements all; earlier ones (checked after their own
            // round) a spread sample of 200, so a later crash that lost one would show.
            let (old_imports, old_access) = acks.checked;
            let step = (old_imports / 200).max(1);
            let sample = (0..old_imports)
                .step_by(step)
                .chain(old_imports..acks.imports.len());
            for (tid, p, households, first, count) in sample.map(|i| &acks.imports[i]) {
                let record = store.transmission(p, tid).unwrap();
                let record =
                    record.unwrap_or_else(|| panic!("round {round}: acknowledged {tid} lost"));
                assert_eq!(record.households.len() as u64, *households, "{tid}");
                let scope = admin.partition(p);
                let mut found = 0;
                for seq in *first..first + count {
                    let e = store.read_entry(&scope, seq).unwrap();
                    if e.header.kind == Kind::HOUSEHOLD_SNAPSHOT {
                        let h: Household = serde_json::from_slice(&e.payload).unwrap();
                        assert_eq!(&h.transmission_id, tid, "seq {seq}");
                        found += 1;
                    }
                }
                assert_eq!(found, *households, "round {round}: {tid} is partial");
            }
            let step = (old_access / 200).max(1);
            let sample = (0..old_access)
                .step_by(step)
                .chain(old_access..acks.access.len());
            for (p, seq) in sample.map(|i| &acks.access[i]) {
                let e = store.read_entry(&admin.partition(p), *seq).unwrap();
                assert_eq!(
                    e.header.kind,
                    Kind::ACCESS_RECORD,
                    "round {round}: {p} seq {seq}"
                );
            }
            // No partial batch: every transmission in the new part of the log is whole.
            for p in [&a, &b] {
                let scope = admin.partition(p);
                let size = store.size(p).unwrap();
                let from = checked.insert(p.clone(), size).unwrap_or(0);
                let mut per_tid: BTreeMap<String, u64> = BTreeMap::new();
                for seq in from..size {
                    let e = store.read_entry(&scope, seq).unwrap();
                    if e.header.kind == Kind::HOUSEHOLD_SNAPSHOT {
                        let h: Household = serde_json::from_slice(&e.payload).unwrap();
                        *per_tid.entry(h.transmission_id.clone()).or_default() += 1;
                    }
                }
                for (tid, n) in per_tid {
                    let want: u64 = tid.rsplit_once("-H").unwrap().1.parse().unwrap();
                    assert_eq!(n, want, "round {round}: {tid} has {n} of {want} households");
                }
            }
        });
        acks.checked = (acks.imports.len(), acks.access.len());
        run(&hub_home, &["verify", "--with-keys"]);
        eprintln!(
            "round {round}: {} imports, {} access records acknowledged so far",
            acks.imports.len(),
            acks.access.len()
        );
    }

    // Last run: no load, until the replicator has caught up (the hub grows while sealed
    // entries are fed: each feed page appends a 提供記録), then both stop.
    let mut child = hub.start();
    wait_ready(&http, port).await;
    let token_a = tokens[0].1.clone();
    let size = || async {
        let url = format!("{base}/v1/checkpoint");
        match call(&http, "GET", &url, &token_a, None).await {
            Some((200, v)) => v["size"].as_u64(),
            _ => None,
        }
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = (size().await, Instant::now());
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = size().await;
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    intermediate.kill().unwrap();
    intermediate.wait().unwrap();
    tokio::task::block_in_place(|| {
        let hub_store = Store::open(&Paths::under(&hub_home), small()).unwrap();
        let int_store = Store::open(&Paths::under(&int_home), small()).unwrap();
        let acks = acks.lock().unwrap();
        let on_a: u64 = acks
            .imports
            .iter()
            .filter(|(_, p, ..)| *p == a)
            .map(|(_, _, h, ..)| *h)
            .sum();
        if int_store.replica_state(&a).unwrap().is_none() {
            let log = std::fs::read_to_string(dir.path().join("intermediate.log")).unwrap();
            panic!("nothing replicated; the intermediate said:\n{log}");
        }
        // The key operations ran: key events beyond the genesis one.
        let key_events = hub_store
            .envelopes(&a, Seq(0), Seq(hub_store.size(&a).unwrap()))
            .unwrap()
            .iter()
            .filter(|raw| {
                kukaku::ledger::Envelope::decode(raw).unwrap().header.kind == Kind::KEY_EVENT
            })
            .count();
        assert!(kills == 0 || key_events > 1, "no key operation ran");
        let copied = common::assert_replicated_exactly_once(&hub_store, &int_store, &a);
        assert!(
            copied as u64 >= on_a,
            "{copied} copies for {on_a} acknowledged households"
        );
        assert!(
            kills == 0 || !acks.imports.is_empty(),
            "no import was acknowledged"
        );
    });
}
