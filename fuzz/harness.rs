//! The fuzz targets' bodies, shared by `cargo fuzz` (fuzz/fuzz_targets/*.rs, coverage-guided,
//! run by `tools/fuzz.sh`) and by the bounded proptest run in `tests/it/fuzz.rs` (CI), so both
//! check the same properties:
//!
//! - never a panic, whatever the bytes;
//! - whatever a decoder accepts is canonical: encoding it again gives the same bytes;
//! - whatever verifies under the golden key carries the golden checkpoint body;
//! - a rejected import lists problems by (file, line, field, reason) with lines inside the
//!   input, and the same input gets the same answer twice;
//! - the HTTP API never answers 5xx to any JSON body on any POST route, every 4xx has the one
//!   error shape, and no error echoes a run of 8 or more digits from the request.
//!
//! Each target takes one byte string (what libFuzzer hands over); where a target needs
//! several inputs they are split off the front as described at the function.
#![allow(
    dead_code,
    reason = "each fuzz target and the CI test use a different part of the harness"
)]

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use kukaku::flows::transmission::{Context, Encoding, Rejected};
use kukaku::flows::{kogaku, transmission};
use kukaku::ledger::merkle::{verify_consistency, verify_inclusion};
use kukaku::ledger::note::{Checkpoint, SignedNote, VerifierKey};
use kukaku::ledger::payload::{
    AccessRecord, ForwardingReceipt, Genesis, KeyEvent, ProvisionRecord,
};
use kukaku::ledger::proof_json::{ConsistencyProofJson, InclusionProofJson};
use kukaku::ledger::{Envelope, EnvelopeRef, Hash, Header, PartitionId};

/// Every target, by the name of its corpus folder (fuzz/corpus/<name>).
pub const TARGETS: [&str; 5] = ["envelope", "proof", "checkpoint", "csv_import", "json_body"];

/// Runs the named target on `data`.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "envelope" => envelope(data),
        "proof" => proof(data),
        "checkpoint" => checkpoint(data),
        "csv_import" => csv_import(data),
        "json_body" => json_body(data),
        other => panic!("no fuzz target {other}"),
    }
}

/// The header and envelope decoders (owned and in place) and every open payload decoder.
pub fn envelope(data: &[u8]) {
    if let Ok((header, used)) = Header::decode_prefix(data) {
        assert_eq!(
            header.encode(),
            data[..used],
            "a decoded header re-encodes to its bytes"
        );
        assert_eq!(header.encoded_len(), used);
    }
    if let Ok(header) = Header::decode(data) {
        assert_eq!(
            header.encode(),
            data,
            "Header::decode accepts only exact headers"
        );
    }
    let owned = Envelope::decode(data);
    let borrowed = EnvelopeRef::decode(data);
    assert_eq!(
        owned.as_ref().err(),
        borrowed.as_ref().err(),
        "both decoders reject alike"
    );
    if let (Ok(e), Ok(r)) = (&owned, &borrowed) {
        assert_eq!(
            e.encode(),
            data,
            "a decoded envelope re-encodes to its bytes"
        );
        assert_eq!(r.to_owned(), *e);
        assert_eq!(r.header_bytes, &data[..e.header_len]);
    }
    macro_rules! canonical {
        ($($t:ty),*) => {$(
            if let Ok(v) = <$t>::decode(data) {
                if let Ok(bytes) = v.encode() {
                    assert_eq!(<$t>::decode(&bytes).ok(), Some(v), "{} round trip", stringify!($t));
                }
            }
        )*};
    }
    canonical!(
        Genesis,
        KeyEvent,
        AccessRecord,
        ProvisionRecord,
        ForwardingReceipt
    );
}

/// The proof parsers: the JSON of inclusion and consistency proofs (transparency-dev field
/// names) with and without their checkpoint, and the raw verifiers with the numbers taken from
/// the bytes (sizes near `u64::MAX` included).
pub fn proof(data: &[u8]) {
    let key = golden_key();
    if let Ok(p) = serde_json::from_slice::<InclusionProofJson>(data) {
        let _ = p.verify_root(None);
        let _ = p.verify_with_key(&key);
    }
    if let Ok(p) = serde_json::from_slice::<ConsistencyProofJson>(data) {
        let _ = p.verify_roots(None, None);
        let _ = p.verify_with_key(&key, &Hash::from_bytes([0; 32]));
    }
    // Raw: two u64, then hashes of 32 bytes.
    if data.len() >= 16 {
        let a = u64::from_be_bytes(data[..8].try_into().unwrap_or([0; 8]));
        let b = u64::from_be_bytes(data[8..16].try_into().unwrap_or([0; 8]));
        let hashes: Vec<Hash> = data[16..]
            .chunks_exact(32)
            .map(|c| Hash::from_bytes(c.try_into().unwrap_or([0; 32])))
            .collect();
        if let [first, second, rest @ ..] = hashes.as_slice() {
            let _ = verify_inclusion(a, b, first, rest, second);
            let _ = verify_consistency(a, b, rest, first, second);
        }
    }
}

/// The signed-note and checkpoint parsers and the signature check with the golden key.
pub fn checkpoint(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(note) = SignedNote::parse(text) {
        if let Ok(again) = SignedNote::parse(&note.to_text()) {
            assert_eq!(again, note, "a parsed note prints back to the same note");
        }
        let _ = note.verify_cosignature(&golden_cosigner());
    }
    if let Ok(cp) = Checkpoint::parse_body(text) {
        assert_eq!(cp.body(), text, "a checkpoint body is canonical");
    }
    if let Ok(cp) = Checkpoint::verify_note(text, &golden_key()) {
        assert_eq!(
            cp.body(),
            golden_body(),
            "nothing but the golden body verifies under the golden key"
        );
    }
}

/// The CSV import: byte 0 picks the encoding (even: UTF-8, odd: CP932) and the file kind
/// (bit 1: 高額該当情報ファイル, else a transmission); for a transmission the rest is split at
/// the first 0x00 into the 世帯ファイル and the 個人ファイル. Partition 131011, transmission id
/// `FUZZ-1`; a correction may name `(FUZZ-0, S000001)`.
pub fn csv_import(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let encoding = if mode & 1 == 0 {
        Encoding::Utf8
    } else {
        Encoding::Cp932
    };
    let partition = fuzz_partition();
    let check = |r: &Rejected, bytes: &[&[u8]]| {
        assert!(
            !r.problems.is_empty(),
            "a rejection names at least one problem"
        );
        let lines = bytes
            .iter()
            .map(|b| b.iter().filter(|c| **c == b'\n').count() as u64 + 1)
            .max()
            .unwrap_or(1);
        for p in &r.problems {
            assert!(
                p.line <= lines,
                "problem line {} past the input's {lines}",
                p.line
            );
            assert!(!p.reason.is_empty());
        }
    };
    if mode & 2 == 0 {
        let (setai, kojin) = match rest.iter().position(|b| *b == 0) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        let target = |tid: &str, setai_no: &str| tid == "FUZZ-0" && setai_no == "S000001";
        let ctx = Context {
            partition: &partition,
            transmission_id: "FUZZ-1",
            encoding,
            correction_target: &target,
            previous_members: &kukaku::flows::transmission::no_previous,
        };
        let first = transmission::validate(setai, kojin, &ctx);
        let second = transmission::validate(setai, kojin, &ctx);
        match (&first, &second) {
            (Err(a), Err(b)) => {
                assert_eq!(a, b, "the same input gets the same problems");
                check(a, &[setai, kojin]);
            }
            (Ok(a), Ok(b)) => {
                assert_eq!(a.households.len(), b.households.len());
                assert!(a.households.len() <= setai.iter().filter(|c| **c == b'\n').count());
            }
            _ => panic!("validate is not deterministic"),
        }
    } else {
        let first = kogaku::validate(rest, &partition, "FUZZ-1", encoding);
        let second = kogaku::validate(rest, &partition, "FUZZ-1", encoding);
        match (&first, &second) {
            (Err(a), Err(b)) => {
                assert_eq!(a, b, "the same input gets the same problems");
                check(a, &[rest]);
            }
            (Ok(a), Ok(b)) => assert_eq!(a.len(), b.len()),
            _ => panic!("validate is not deterministic"),
        }
    }
}

/// JSON request bodies: byte 0 picks one of the POST routes of the hub and the intermediate
/// server (in `routes::table()` order, so new routes are fuzzed too); the rest is the body,
/// sent with `content-type: application/json` and a credential of the route's role.
pub fn json_body(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let f = api_fixture();
    let Some(route) = f.posts.get(usize::from(pick) % f.posts.len().max(1)) else {
        return;
    };
    let (status, answer) = f.runtime.block_on(f.post(route, body.to_vec()));
    assert!(
        !status.is_server_error(),
        "POST {} answered {status}: {}",
        route.uri,
        String::from_utf8_lossy(&answer)
    );
    if status.is_client_error() {
        let v: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
        assert!(
            v["error"]["code"].is_string(),
            "POST {} {status} without the error shape",
            route.uri
        );
        for run in digit_runs(body, 8) {
            assert!(
                !answer.windows(run.len()).any(|w| w == run),
                "POST {} {status} echoes a digit run of the request",
                route.uri
            );
        }
    }
}

/// Runs of at least `min` ASCII digits in `bytes`.
fn digit_runs(bytes: &[u8], min: usize) -> Vec<&[u8]> {
    bytes
        .split(|b| !b.is_ascii_digit())
        .filter(|r| r.len() >= min)
        .collect()
}

// ---- seeds ---------------------------------------------------------------------------------

/// Seed inputs per target, built from the golden vectors, the sample generator and a real
/// store, so they follow the formats as they change. `tests/it/fuzz.rs` writes them to
/// fuzz/corpus (`write_seed_corpora`, ignored) and mutates them in CI.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let golden = golden();
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    match target {
        "envelope" => {
            let mut out = vec![hex::decode(s(&golden["header_hex"])).unwrap_or_default()];
            let f = api_fixture();
            if let Ok(raw) =
                f.store
                    .envelopes(&f.partition, kukaku::ledger::Seq(0), kukaku::ledger::Seq(8))
            {
                out.extend(raw.into_iter().map(|e| e.to_vec()));
            }
            out
        }
        "proof" => {
            let mut inclusion = golden["inclusion"].clone();
            let mut out = vec![serde_json::to_vec(&inclusion).unwrap_or_default()];
            inclusion["checkpoint"] = golden["checkpoint"].clone();
            out.push(serde_json::to_vec(&inclusion).unwrap_or_default());
            out.push(
                br#"{"size1":2,"size2":4,"proof":["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="],"root1":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","root2":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}"#
                    .to_vec(),
            );
            let mut raw = Vec::new();
            raw.extend_from_slice(&2u64.to_be_bytes());
            raw.extend_from_slice(&5u64.to_be_bytes());
            raw.extend_from_slice(&[0x11; 32 * 5]);
            out.push(raw);
            out
        }
        "checkpoint" => vec![
            s(&golden["checkpoint"]).into_bytes(),
            s(&golden["cosigned_checkpoint"]).into_bytes(),
            golden_body().into_bytes(),
        ],
        "csv_import" => {
            let files = kukaku::flows::sample::transmission("131011", "FUZZ-1", 3, 7);
            let mut utf8 = vec![0u8];
            utf8.extend_from_slice(files.setai.as_bytes());
            utf8.push(0);
            utf8.extend_from_slice(files.kojin.as_bytes());
            let mut cp932 = vec![1u8];
            cp932.extend(kukaku::flows::sample::encode(&files.setai, Encoding::Cp932));
            cp932.push(0);
            cp932.extend(kukaku::flows::sample::encode(&files.kojin, Encoding::Cp932));
            let mut kogaku = vec![2u8];
            kogaku.extend_from_slice(
                b"layout,transmission_id,hokensha_no,setai_no,shinryo_ym,shikyu_kubun,tasukai_nashi\r\n\
                  kogaku-v1,FUZZ-1,131011,S007000,2024-06,1,0\r\n",
            );
            vec![utf8, cp932, kogaku]
        }
        "json_body" => {
            let f = api_fixture();
            let files = kukaku::flows::sample::transmission("131011", "FUZZ-2", 2, 11);
            let kogaku = "layout,transmission_id,hokensha_no,setai_no,shinryo_ym,shikyu_kubun,tasukai_nashi\r\n\
                          kogaku-v1,FUZZ-3,131011,S011000,2024-06,1,0\r\n";
            let cp = f
                .store
                .checkpoint(&f.partition)
                .ok()
                .flatten()
                .unwrap_or_default();
            let body_for = |uri: &str| -> serde_json::Value {
                match uri {
                    "/v1/transmissions" => serde_json::json!({
                        "transmission_id": "FUZZ-2", "encoding": "utf-8",
                        "setai_file": B64.encode(&files.setai), "kojin_file": B64.encode(&files.kojin)}),
                    "/v1/kogaku" => serde_json::json!({
                        "transmission_id": "FUZZ-3", "encoding": "utf-8",
                        "kogaku_file": B64.encode(kogaku)}),
                    "/v1/lookups" => serde_json::json!({"setai_no": "S011000"}),
                    u if u.ends_with("/decision") => serde_json::json!({
                        "decision": "continue", "reason": null, "operator": "fuzz"}),
                    u if u.ends_with("/cosignatures") => serde_json::json!({"checkpoint": cp}),
                    "/v1/exports/history-file" => serde_json::json!({"since_seq": 0}),
                    _ => serde_json::json!({}),
                }
            };
            f.posts
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let mut v = vec![i as u8];
                    v.extend(serde_json::to_vec(&body_for(&r.uri)).unwrap_or_default());
                    v
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

// ---- fixtures ------------------------------------------------------------------------------

fn golden() -> &'static serde_json::Value {
    static GOLDEN: OnceLock<serde_json::Value> = OnceLock::new();
    GOLDEN.get_or_init(|| {
        serde_json::from_str(include_str!("../tests/data/golden.json")).unwrap_or_default()
    })
}

fn golden_key() -> VerifierKey {
    VerifierKey::parse(golden()["vkey"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("golden vkey: {e}"))
}

fn golden_cosigner() -> VerifierKey {
    VerifierKey::parse(golden()["cosigner_vkey"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("golden cosigner vkey: {e}"))
}

fn golden_body() -> String {
    let note = golden()["checkpoint"].as_str().unwrap_or_default();
    note.split_once("\n\n")
        .map(|(body, _)| format!("{body}\n"))
        .unwrap_or_default()
}

fn fuzz_partition() -> PartitionId {
    PartitionId::parse("131011").unwrap_or_else(|e| panic!("partition: {e}"))
}

pub struct Route {
    pub uri: String,
    pub server: kukaku::api::ServerRole,
    pub token: String,
}

pub struct ApiFixture {
    /// The hub instance (a small transmission imported into 131011).
    pub store: Arc<kukaku::store::Store>,
    pub partition: PartitionId,
    pub runtime: tokio::runtime::Runtime,
    pub posts: Vec<Route>,
    hub: axum::Router,
    intermediate: axum::Router,
}

impl ApiFixture {
    async fn post(&self, route: &Route, body: Vec<u8>) -> (axum::http::StatusCode, Vec<u8>) {
        use tower::ServiceExt as _;
        let app = match route.server {
            kukaku::api::ServerRole::Hub => self.hub.clone(),
            kukaku::api::ServerRole::Intermediate => self.intermediate.clone(),
        };
        let req = axum::http::Request::post(&route.uri)
            .header("authorization", format!("Bearer {}", route.token))
            .header("content-type", "application/json")
            .header("content-length", body.len())
            .body(axum::body::Body::from(body))
            .unwrap_or_else(|e| panic!("request: {e}"));
        let res = app
            .oneshot(req)
            .await
            .unwrap_or_else(|e| panic!("router: {e}"));
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 26)
            .await
            .unwrap_or_default();
        (status, bytes.to_vec())
    }
}

fn fail(what: &str, e: &dyn std::fmt::Display) -> ! {
    panic!("{what}: {e}")
}

/// This process's fixture folder, `kukaku-fuzz-<pid>` in the temporary directory. The
/// fixture is a static, which is never dropped, so folders of finished processes are removed
/// here instead.
fn fixture_root() -> std::path::PathBuf {
    let tmp = std::env::temp_dir();
    for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let finished = name
            .strip_prefix("kukaku-fuzz-")
            .is_some_and(|pid| !std::path::Path::new("/proc").join(pid).exists());
        if finished {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let root = tmp.join(format!("kukaku-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    root
}

/// A store with partition 131011 provisioned, under `root/origin`.
fn instance(root: &std::path::Path, origin: &str) -> Arc<kukaku::store::Store> {
    use kukaku::store::{Paths, Store, StoreOptions};
    let dir = root.join(origin);
    let options = StoreOptions {
        write_buffer_bytes: 1 << 20,
        ..StoreOptions::default()
    };
    let store =
        Store::init(&Paths::under(&dir), origin, options).unwrap_or_else(|e| fail("init", &e));
    store
        .request_partitions(&[fuzz_partition()])
        .unwrap_or_else(|e| fail("request", &e));
    store
        .provision(&mut |_, _| {})
        .unwrap_or_else(|e| fail("provision", &e));
    Arc::new(store)
}

/// A hub instance with partition 131011 (a small sample transmission imported) and an
/// intermediate instance with the same partition (no copies yet), a credential per POST
/// route of the route's role, and those routes (hub and intermediate).
pub fn api_fixture() -> &'static ApiFixture {
    static FIXTURE: OnceLock<ApiFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        use kukaku::api::{AppState, Limits, ServerRole, routes};
        use kukaku::crypto::credential::{Reach, Role};
        let root = fixture_root();
        let hub = instance(&root, "hub.fuzz");
        let int = instance(&root, "intermediate.fuzz");
        let p = fuzz_partition();
        let files = kukaku::flows::sample::transmission("131011", "FUZZ-0", 2, 5);
        let who = kukaku::flows::import::Importer {
            actor: "fuzz".into(),
            role: "admin".into(),
            route: "fuzz".into(),
            request_id: "-".into(),
        };
        kukaku::flows::import::import(
            &hub,
            &p,
            "FUZZ-0",
            Encoding::Utf8,
            files.setai.as_bytes(),
            files.kojin.as_bytes(),
            &who,
        )
        .unwrap_or_else(|e| fail("import", &e));
        let later = kukaku::store::now_unix_ms() + 86_400_000;
        let reach = |role: Role| match role {
            Role::Municipality => Reach::Partition(p.clone()),
            Role::ContinuityOperator => Reach::Prefecture("13".into()),
            _ => Reach::Partitions([p.clone()].into()),
        };
        let mut posts = Vec::new();
        for (spec, _) in routes::table() {
            let Some(role) = spec.role.filter(|_| spec.method == "POST") else {
                continue;
            };
            let uri = spec
                .path
                .replace("{partition}", p.as_str())
                .replace("{seq}", "1")
                .replace("{id}", "1");
            for server in spec.servers {
                let store = match server {
                    ServerRole::Hub => &hub,
                    ServerRole::Intermediate => &int,
                };
                let (token, _) = store
                    .issue_credential(role, reach(role), "fuzz", later)
                    .unwrap_or_else(|e| fail("credential", &e));
                posts.push(Route {
                    uri: uri.clone(),
                    server: *server,
                    token: token.to_text().to_string(),
                });
            }
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| fail("runtime", &e));
        let router = |store: &Arc<kukaku::store::Store>, role| {
            kukaku::api::router(AppState::new(Arc::clone(store), role), Limits::default())
        };
        ApiFixture {
            hub: router(&hub, ServerRole::Hub),
            intermediate: router(&int, ServerRole::Intermediate),
            store: hub,
            partition: p,
            runtime,
            posts,
        }
    })
}
