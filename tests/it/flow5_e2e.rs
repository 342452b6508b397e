//! Flow 5 end to end on loopback: two municipalities import at a hub (real listener), the
//! intermediate's replicator pulls the signed feed over HTTP, verifies and stores copies.
//! Exactly once, 提供記録 and forwarding receipts on both sides, every checkpoint verifies;
//! a tampered hub answer is refused and stores nothing; an interrupted sync resumes without
//! gaps or duplicates; no protected identifier in logs or raw data directories.

use crate::common;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{pid, small, walk};
use kukaku::api::client::HubClient;
use kukaku::api::server::{self, Transport};
use kukaku::api::{self, AppState, Limits, ServerRole};
use kukaku::crypto::credential::{Reach, Role};
use kukaku::crypto::{AdminScope, Kek};
use kukaku::flows::import::{Importer, import};
use kukaku::flows::replicate::{FeedSource, Upstream, sync_partition};
use kukaku::flows::sample::{self, SampleFiles};
use kukaku::flows::transmission::Encoding;
use kukaku::ledger::Seq;
use kukaku::ledger::payload::{ForwardingReceipt, ProvisionRecord};
use kukaku::ledger::{Envelope, Kind, PartitionId};
use kukaku::store::{Paths, Store, VerifyOptions};

/// Log lines of the whole test binary, to scan for protected identifiers.
#[derive(Clone, Default)]
struct LogSink(Arc<Mutex<Vec<u8>>>);

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> LogSink {
    static SINK: std::sync::OnceLock<LogSink> = std::sync::OnceLock::new();
    SINK.get_or_init(|| {
        let sink = LogSink::default();
        let writer = sink.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        sink
    })
    .clone()
}

fn open_store(dir: &std::path::Path, origin: &str, ids: &[PartitionId]) -> (Paths, Store) {
    tokio::task::block_in_place(|| open_store_blocking(dir, origin, ids))
}

fn open_store_blocking(dir: &std::path::Path, origin: &str, ids: &[PartitionId]) -> (Paths, Store) {
    let paths = Paths::under(dir);
    let store = crate::common::init_store(&paths, origin, small()).unwrap();
    store.request_partitions(ids).unwrap();
    store.provision(&mut |_, _| {}).unwrap();
    (paths, store)
}

struct Hub {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), server::ServeError>>,
}

async fn start_hub(store: Arc<Store>, witnesses: Vec<kukaku::ledger::VerifierKey>) -> Hub {
    let listener = server::bind("127.0.0.1:0".parse().unwrap(), &Transport::PlainLoopback)
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = api::router(
        AppState::new(store, ServerRole::Hub).with_witnesses(witnesses),
        Limits::default(),
    );
    let task = tokio::spawn(server::serve(
        listener,
        app,
        Transport::PlainLoopback,
        Limits::default(),
        async {
            let _ = stopped.await;
        },
        std::time::Duration::from_secs(5),
    ));
    Hub { addr, stop, task }
}

/// A hub answer with one byte changed, as a man in the middle would.
struct Tampering<'a> {
    inner: &'a HubClient,
    target: &'static str,
}

impl FeedSource for Tampering<'_> {
    async fn post_cosignature(&self, p: &PartitionId, note: &str) -> Result<(), String> {
        self.inner.post_cosignature(p, note).await
    }

    async fn fetch(&self, p: &PartitionId, from: u64, limit: u64) -> Result<Vec<u8>, String> {
        let raw = self.inner.fetch(p, from, limit).await?;
        let mut v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        let flip_b64 = |s: &str| {
            let mut b = B64.decode(s).unwrap();
            let i = b.len() / 2;
            b[i] ^= 1;
            B64.encode(b)
        };
        match self.target {
            "payload" => {
                let e = v["entries"]
                    .as_array_mut()
                    .unwrap()
                    .iter_mut()
                    .find(|e| e["kind"] == "household_snapshot")
                    .unwrap();
                e["payload"] = flip_b64(e["payload"].as_str().unwrap()).into();
            }
            "header" => {
                let e = &mut v["entries"][2];
                e["header"] = flip_b64(e["header"].as_str().unwrap()).into();
            }
            "checkpoint" => {
                let note = v["checkpoint"].as_str().unwrap().to_owned();
                let root_line = note.lines().nth(2).unwrap().to_owned();
                v["checkpoint"] = note.replace(&root_line, &flip_b64(&root_line)).into();
            }
            "proof" => {
                let proof = v["consistency"]["proof"].as_array_mut().unwrap();
                let first = proof[0].as_str().unwrap().to_owned();
                proof[0] = flip_b64(&first).into();
            }
            "drop" => {
                v["entries"].as_array_mut().unwrap().remove(3);
            }
            _ => unreachable!(),
        }
        Ok(serde_json::to_vec(&v).unwrap())
    }
}

/// Fails after `pages` successful fetches (a network error mid-sync).
struct Flaky<'a> {
    inner: &'a HubClient,
    left: Mutex<u32>,
}

impl FeedSource for Flaky<'_> {
    async fn post_cosignature(&self, p: &PartitionId, note: &str) -> Result<(), String> {
        self.inner.post_cosignature(p, note).await
    }

    async fn fetch(&self, p: &PartitionId, from: u64, limit: u64) -> Result<Vec<u8>, String> {
        {
            let mut left = self.left.lock().unwrap();
            if *left == 0 {
                return Err("connection reset".into());
            }
            *left -= 1;
        }
        self.inner.fetch(p, from, limit).await
    }
}

fn entries_of(store: &Store, paths: &Paths, p: &PartitionId) -> Vec<(Kind, Vec<u8>, [u8; 32])> {
    let kek = Kek::load_file(&paths.kek).unwrap();
    let scope = AdminScope::from_kek(&kek).partition(p);
    (0..store.size(p).unwrap())
        .map(|seq| {
            let e = store.read_entry(&scope, seq).unwrap();
            (
                e.header.kind,
                e.payload.to_vec(),
                *e.header.commitment.as_bytes(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow5_hub_to_intermediate() {
    let sink = logs();
    let (a, b) = (pid("131011"), pid("380014"));
    let hub_dir = tempfile::tempdir().unwrap();
    let int_dir = tempfile::tempdir().unwrap();
    let (hub_paths, hub) = open_store(
        hub_dir.path(),
        "hub.kokuho-13.example",
        &[a.clone(), b.clone()],
    );
    let (int_paths, inter) = open_store(
        int_dir.path(),
        "intermediate.example",
        &[a.clone(), b.clone()],
    );
    let hub = Arc::new(hub);
    let inter = Arc::new(inter);

    // Two municipalities import (one in CP932), two transmissions for A.
    let mut files: Vec<SampleFiles> = Vec::new();
    let who = Importer {
        actor: "admin-cli".into(),
        role: "admin".into(),
        route: "test".into(),
        request_id: "-".into(),
    };
    for (p, tid, n, seed, enc) in [
        (&a, "A-1", 7, 11, Encoding::Utf8),
        (&a, "A-2", 3, 12, Encoding::Cp932),
        (&b, "B-1", 5, 13, Encoding::Utf8),
    ] {
        let f = sample::transmission(p.as_str(), tid, n, seed);
        let hub2 = Arc::clone(&hub);
        let (p2, tid2, who2) = (p.clone(), tid.to_owned(), who.clone());
        let (s_, k_) = (sample::encode(&f.setai, enc), sample::encode(&f.kojin, enc));
        tokio::task::spawn_blocking(move || {
            import(&hub2, &p2, &tid2, enc, &s_, &k_, &who2).unwrap()
        })
        .await
        .unwrap();
        files.push(f);
    }

    let server = start_hub(Arc::clone(&hub), vec![inter.cosigner_key()]).await;
    let base = format!("http://{}", server.addr);
    let (token, _) = hub
        .issue_credential(
            Role::Replicator,
            Reach::Partitions([a.clone(), b.clone()].into()),
            "intermediate",
            kukaku::store::now_unix_ms() + 3_600_000,
        )
        .unwrap();
    let client = HubClient::new(&base, token.to_text(), None, None).unwrap();
    let upstream = Upstream::from_partition_vkey(&hub.verifier_key(&a).unwrap().to_text()).unwrap();

    // A tampered answer, each way, is refused and stores nothing.
    for target in ["payload", "header", "checkpoint", "drop"] {
        let before = inter.size(&a).unwrap();
        let t = Tampering {
            inner: &client,
            target,
        };
        let r = sync_partition(&inter, &t, &upstream, &a, 100).await;
        assert!(r.is_err(), "{target} accepted");
        assert_eq!(
            inter.size(&a).unwrap(),
            before,
            "{target}: something stored"
        );
        assert!(inter.replica_state(&a).unwrap().is_none());
    }

    // A sync interrupted after two pages of two resumes without gaps or duplicates.
    let flaky = Flaky {
        inner: &client,
        left: Mutex::new(2),
    };
    assert!(
        sync_partition(&inter, &flaky, &upstream, &a, 2)
            .await
            .is_err()
    );
    let partial = inter.replica_state(&a).unwrap().unwrap().hub_size;
    assert!(partial > 0);
    // A tampered consistency proof on the resumed sync is refused too.
    let t = Tampering {
        inner: &client,
        target: "proof",
    };
    assert!(
        sync_partition(&inter, &t, &upstream, &a, 100)
            .await
            .is_err()
    );
    assert_eq!(inter.replica_state(&a).unwrap().unwrap().hub_size, partial);
    for p in [&a, &b] {
        let r = sync_partition(&inter, &client, &upstream, p, 100)
            .await
            .unwrap();
        assert!(r.pages > 0);
    }
    // The feed reads appended 提供記録 on the hub; one more round picks them up, then idle.
    for p in [&a, &b] {
        sync_partition(&inter, &client, &upstream, p, 100)
            .await
            .unwrap();
        let again = sync_partition(&inter, &client, &upstream, p, 100)
            .await
            .unwrap();
        assert_eq!(
            (again.pages, again.copies),
            (0, 0),
            "idle poll changed something"
        );
        assert_eq!(
            inter.replica_state(p).unwrap().unwrap().hub_size,
            hub.size(p).unwrap(),
            "intermediate is behind the hub"
        );
    }

    // Exactly once: every hub snapshot has one copy with the same commitment and payload.
    for p in [&a, &b] {
        let hub_entries = entries_of(&hub, &hub_paths, p);
        let int_entries = entries_of(&inter, &int_paths, p);
        let mut copies: BTreeMap<[u8; 32], (usize, Vec<u8>)> = BTreeMap::new();
        for (kind, payload, c) in &int_entries {
            if *kind == Kind::HOUSEHOLD_SNAPSHOT {
                let slot = copies.entry(*c).or_insert((0, payload.clone()));
                slot.0 += 1;
            }
        }
        let snapshots: Vec<_> = hub_entries
            .iter()
            .filter(|(k, ..)| *k == Kind::HOUSEHOLD_SNAPSHOT)
            .collect();
        assert_eq!(copies.len(), snapshots.len());
        for (_, payload, c) in snapshots {
            let (n, copy) = copies.get(c).expect("snapshot not forwarded");
            assert_eq!(*n, 1, "duplicate copy");
            assert_eq!(copy, payload);
        }
        // 提供記録 on the hub; forwarding receipts on the intermediate naming hub checkpoints.
        let provisions: Vec<ProvisionRecord> = hub_entries
            .iter()
            .filter(|(k, ..)| *k == Kind::PROVISION_RECORD)
            .map(|(_, pl, _)| ProvisionRecord::decode(pl).unwrap())
            .collect();
        assert!(!provisions.is_empty());
        assert!(
            provisions
                .iter()
                .all(|r| r.purpose == "forward_to_intermediate")
        );
        let receipts: Vec<ForwardingReceipt> = int_entries
            .iter()
            .filter(|(k, ..)| *k == Kind::FORWARDING_RECEIPT)
            .map(|(_, pl, _)| ForwardingReceipt::decode(pl).unwrap())
            .collect();
        let hub_key = hub.verifier_key(p).unwrap();
        let mut expect_from = 0;
        for r in &receipts {
            assert_eq!(r.hub_from, expect_from, "gap or overlap between receipts");
            expect_from = r.hub_to;
            kukaku::ledger::Checkpoint::verify_note(&r.hub_checkpoint, &hub_key).unwrap();
        }
        assert_eq!(
            receipts.iter().map(|r| r.hub_seqs.len()).sum::<usize>(),
            copies.len()
        );
        // The intermediate cosigned the last hub checkpoint it verified; the hub kept it
        // beside its own checkpoint, and it verifies under the pinned witness key.
        let cosigned_size = hub
            .latest_cosigned_size(p)
            .unwrap()
            .expect("no cosignature");
        assert_eq!(
            cosigned_size, expect_from,
            "cosigned size is not the last verified"
        );
        let note = hub
            .cosigned_checkpoint_at(p, cosigned_size)
            .unwrap()
            .unwrap();
        kukaku::ledger::Checkpoint::verify_note(&note, &hub_key).unwrap();
        kukaku::ledger::SignedNote::parse(&note)
            .unwrap()
            .verify_cosignature(&inter.cosigner_key())
            .unwrap();
        // Both logs verify end to end, with keys.
        hub.verify_partition(p, VerifyOptions { with_keys: true })
            .unwrap();
        inter
            .verify_partition(p, VerifyOptions { with_keys: true })
            .unwrap();
    }

    // An auditor pairs copies with hub entries by commitment, without keys.
    let hub_commitments: Vec<_> = hub
        .envelopes(&a, Seq(0), Seq(1000))
        .unwrap()
        .iter()
        .map(|e| Envelope::decode(e).unwrap().header)
        .filter(|h| h.kind == Kind::HOUSEHOLD_SNAPSHOT)
        .map(|h| h.commitment)
        .collect();
    let int_commitments: Vec<_> = inter
        .envelopes(&a, Seq(0), Seq(1000))
        .unwrap()
        .iter()
        .map(|e| Envelope::decode(e).unwrap().header)
        .filter(|h| h.kind == Kind::HOUSEHOLD_SNAPSHOT)
        .map(|h| h.commitment)
        .collect();
    assert_eq!(hub_commitments, int_commitments);

    // 5-⑤: ops-support on the intermediate exports the 資格履歴ファイル.
    let (ops, _) = inter
        .issue_credential(
            Role::OpsSupport,
            Reach::Partitions([a.clone(), b.clone()].into()),
            "ops-support",
            kukaku::store::now_unix_ms() + 3_600_000,
        )
        .unwrap();
    let int_app = api::router(
        AppState::new(Arc::clone(&inter), ServerRole::Intermediate),
        Limits::default(),
    );
    let export = |body: &'static str| {
        let app = int_app.clone();
        let token = ops.to_text().to_string();
        async move {
            use tower::ServiceExt;
            let res = app
                .oneshot(
                    axum::http::Request::post("/v1/exports/history-file")
                        .header("authorization", format!("Bearer {token}"))
                        .header("content-type", "application/json")
                        .body(axum::body::Body::from(body))
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            let bytes = axum::body::to_bytes(res.into_body(), 1 << 26)
                .await
                .unwrap();
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
        }
    };
    let first = export("{}").await;
    let file = B64.decode(first["file"].as_str().unwrap()).unwrap();
    let text = String::from_utf8(file.clone()).unwrap();
    let manifest = &first["manifest"];
    let sha: String = ring::digest::digest(&ring::digest::SHA256, &file)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(manifest["sha256"], sha);
    // rireki-v2 (issue 27 item 6): a 擬制世帯主 (giji_head 1, the last 個人ファイル column)
    // has no 資格履歴 row.
    let persons: usize = files
        .iter()
        .map(|f| {
            f.kojin
                .lines()
                .skip(1)
                .filter(|l| !l.trim_end().ends_with(",1"))
                .count()
        })
        .sum();
    let giji: usize = files.iter().map(|f| f.kojin_nos.len()).sum::<usize>() - persons;
    assert!(giji > 0, "the samples have 擬制世帯主");
    assert_eq!(manifest["rows"], persons as u64);
    assert_eq!(text.lines().count(), persons + 1);
    assert!(text.starts_with("layout,hokensha_no,kojin_no,"));
    assert!(
        text.lines()
            .next()
            .unwrap()
            .ends_with(",source_seq,setai_no,setai_nushi")
    );
    assert!(text.lines().skip(1).all(|l| l.starts_with("rireki-v2,")));
    assert!(
        text.lines().skip(1).any(|l| l.ends_with(",1")),
        "a 世帯主 is marked"
    );
    let mut kojin_col: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap())
        .collect();
    let sorted = {
        let mut v = kojin_col.clone();
        v.sort();
        v
    };
    assert_eq!(kojin_col, sorted, "rows sorted by 個人番号");
    kojin_col.dedup();
    // Deterministic: a second export at a later checkpoint (only records added) has the same
    // bytes; each export appended a 提供記録 per partition.
    let second = export(r#"{"partitions":["380014","131011"]}"#).await;
    assert_eq!(second["file"], first["file"]);
    for part in manifest["partitions"].as_array().unwrap() {
        let p = pid(part["partition"].as_str().unwrap());
        let seq = part["provision_record_seq"].as_u64().unwrap();
        let kek = Kek::load_file(&int_paths.kek).unwrap();
        let e = inter
            .read_entry(&AdminScope::from_kek(&kek).partition(&p), seq)
            .unwrap();
        let r = ProvisionRecord::decode(&e.payload).unwrap();
        assert_eq!(r.purpose, "shikaku_rireki_file");
        assert_eq!(r.checkpoint_size, part["to_seq"].as_u64().unwrap());
        kukaku::ledger::Checkpoint::verify_note(
            part["checkpoint"].as_str().unwrap(),
            &inter.verifier_key(&p).unwrap(),
        )
        .unwrap();
    }
    // A delta since the end: no rows.
    let to = manifest["partitions"][0]["to_seq"].as_u64().unwrap() + 100;
    let body: &'static str = Box::leak(format!(r#"{{"since_seq":{to}}}"#).into_boxed_str());
    let delta = export(body).await;
    assert_eq!(delta["manifest"]["rows"], 0);
    drop(int_app);

    server.stop.send(()).unwrap();
    server.task.await.unwrap().unwrap();
    drop(client);

    // No protected identifier in the logs or in any raw byte of either data directory.
    let hub = Arc::try_unwrap(hub).unwrap();
    let inter = Arc::try_unwrap(inter).unwrap();
    drop(hub);
    drop(inter);
    let log = sink.0.lock().unwrap().clone();
    assert!(!log.is_empty(), "no logs captured");
    let mut needles: Vec<Vec<u8>> = Vec::new();
    for f in &files {
        for v in f.kojin_nos.iter().chain(&f.bangos) {
            needles.push(v.as_bytes().to_vec());
            needles.push(sample::encode(v, Encoding::Cp932));
            let wide: String = v
                .chars()
                .map(|c| char::from_u32(c as u32 - '0' as u32 + '０' as u32).unwrap_or(c))
                .collect();
            needles.push(wide.into_bytes());
        }
    }
    let scan = |name: &str, bytes: &[u8]| {
        for n in &needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == n.as_slice()),
                "a protected identifier appears in {name}"
            );
        }
    };
    scan("the logs", &log);
    for dir in [hub_dir.path(), int_dir.path()] {
        for file in walk(dir) {
            scan(&file.display().to_string(), &std::fs::read(&file).unwrap());
        }
    }
}

/// The hub rotates its checkpoint key while the intermediate replicates: dual-signed pages
/// pass with the old pin, the new key's pages need the new pin (refused with the old one
/// alone), and cosignatures keep reaching the hub throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_continues_across_a_hub_signing_key_rotation() {
    let a = pid("131011");
    let (hub_dir, int_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_, hub) = open_store(
        hub_dir.path(),
        "hub.kokuho-13.example",
        std::slice::from_ref(&a),
    );
    let (_, inter) = open_store(
        int_dir.path(),
        "intermediate.example",
        std::slice::from_ref(&a),
    );
    let (hub, inter) = (Arc::new(hub), Arc::new(inter));
    let who = Importer {
        actor: "admin-cli".into(),
        role: "admin".into(),
        route: "test".into(),
        request_id: "-".into(),
    };
    let load = |tid: &'static str, seed: u64| {
        let (hub, a, who) = (Arc::clone(&hub), a.clone(), who.clone());
        tokio::task::spawn_blocking(move || {
            let f = sample::transmission(a.as_str(), tid, 3, seed);
            let (s, k) = (
                sample::encode(&f.setai, Encoding::Utf8),
                sample::encode(&f.kojin, Encoding::Utf8),
            );
            import(&hub, &a, tid, Encoding::Utf8, &s, &k, &who).unwrap();
        })
    };
    let actor = |r: &str| kukaku::store::KeyActor {
        actor: "admin-cli".into(),
        reason: r.into(),
    };
    load("A-1", 1).await.unwrap();
    let server = start_hub(Arc::clone(&hub), vec![inter.cosigner_key()]).await;
    let (token, _) = hub
        .issue_credential(
            Role::Replicator,
            Reach::Partitions([a.clone()].into()),
            "intermediate",
            kukaku::store::now_unix_ms() + 3_600_000,
        )
        .unwrap();
    let client = HubClient::new(
        &format!("http://{}", server.addr),
        token.to_text(),
        None,
        None,
    )
    .unwrap();
    let old_vkey = hub.verifier_key(&a).unwrap().to_text();
    let old_pin = Upstream::from_partition_vkey(&old_vkey).unwrap();
    sync_partition(&inter, &client, &old_pin, &a, 100)
        .await
        .unwrap();

    let h = Arc::clone(&hub);
    tokio::task::spawn_blocking(move || h.rotate_signing_key(actor("annual")).unwrap())
        .await
        .unwrap();
    load("A-2", 2).await.unwrap();
    let r = sync_partition(&inter, &client, &old_pin, &a, 100)
        .await
        .unwrap();
    assert!(r.pages > 0, "dual-signed pages pass with the old pin");
    let new_vkey = hub.verifier_key(&a).unwrap().to_text();
    let both = Upstream::from_partition_vkeys(&[&old_vkey, &new_vkey]).unwrap();

    let h = Arc::clone(&hub);
    tokio::task::spawn_blocking(move || h.finish_signing_rotation(actor("pinned")).unwrap())
        .await
        .unwrap();
    load("A-3", 3).await.unwrap();
    let before = inter.size(&a).unwrap();
    assert!(
        sync_partition(&inter, &client, &old_pin, &a, 100)
            .await
            .is_err()
    );
    assert_eq!(
        inter.size(&a).unwrap(),
        before,
        "a refused page stored nothing"
    );
    sync_partition(&inter, &client, &both, &a, 100)
        .await
        .unwrap();
    assert_eq!(
        inter.replica_state(&a).unwrap().unwrap().hub_size,
        hub.size(&a).unwrap()
    );
    let cosigned = hub.latest_cosigned_size(&a).unwrap().unwrap();
    assert!(cosigned > 0, "the witness's cosignatures reached the hub");
    let _ = server.stop.send(());
    server.task.await.unwrap().unwrap();
}
