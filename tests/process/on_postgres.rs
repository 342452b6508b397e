//! The `kukaku` binary with its data in PostgreSQL (issue 31, `--features postgres`): `init
//! --pg-dsn-file` writes `engine.json` and no data directory of its own, every later command
//! finds the engine through it (partitions, import, verify with keys), `backup` says it
//! copies only the embedded engine, and a DSN file others can read is refused; two `kukaku
//! serve` on one cell, one serving and one standing by, taking over from each other without
//! ever both committing. Run by the test command against its cell (`KUKAKU_TEST_PG_DSN`).

use std::os::unix::fs::PermissionsExt as _;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::cli::kukaku;
use super::keys_cli::{import_five, ok, text};
use super::serve_crash::{Http, call, token, wait_ready};
use crate::common::walk;

/// A schema of its own on the test command's cell (dropped first if a run left it), and in
/// a new temporary directory a DSN file for it, owner-only.
pub(crate) struct CellSchema {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) dsn_file: std::path::PathBuf,
    pub(crate) schema: String,
}

pub(crate) fn cell_schema(name: &str) -> CellSchema {
    let dsn = std::env::var("KUKAKU_TEST_PG_DSN").expect("KUKAKU_TEST_PG_DSN");
    let schema = format!("t_{name}_{}", std::process::id());
    let mut c = postgres::Client::connect(&dsn, postgres::NoTls).unwrap();
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dsn_file = dir.path().join("pg.dsn");
    write_private(&dsn_file, &format!("{dsn}\n"));
    CellSchema {
        dir,
        dsn_file,
        schema,
    }
}

/// Writes `text` to `path`, mode 0600 (a DSN with its password, a copy of a KEK).
pub(crate) fn write_private(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A municipality's token for partition `p` of the instance in `home`.
pub(crate) fn municipality_token(home: &std::path::Path, p: &str) -> String {
    token(
        home,
        &["--role", "municipality", "--partition", p, "--label", "m"],
    )
}

/// SIGTERM to a `kukaku serve`, and its exit.
pub(crate) fn stop(server: &mut Child) -> std::process::ExitStatus {
    signal(server, "-TERM");
    server.wait().unwrap()
}

#[test]
#[ignore = "needs PostgreSQL: run by the test command against its cell"]
fn the_cli_runs_an_instance_whose_data_is_in_postgres() {
    let CellSchema {
        dir,
        dsn_file,
        schema,
    } = cell_schema("cli");
    let dsn = std::env::var("KUKAKU_TEST_PG_DSN").expect("KUKAKU_TEST_PG_DSN");
    std::fs::set_permissions(&dsn_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let home = dir.path().join("home");
    let init = [
        "init",
        "--origin",
        "hub.test",
        "--pg-dsn-file",
        dsn_file.to_str().unwrap(),
        "--pg-schema",
        &schema,
    ];
    // A DSN file others can read: refused before anything is made.
    let o = kukaku(&home, &init);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("is readable by others"), "{}", text(&o));
    std::fs::set_permissions(&dsn_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    let out = ok(kukaku(&home, &init));
    assert!(out.contains("the data is in PostgreSQL"), "{out}");
    assert!(home.join("engine.json").exists());
    import_five(|args| kukaku(&home, args), dir.path(), "T-PG-1");
    let verified = ok(kukaku(&home, &["verify", "--with-keys"]));
    assert!(verified.contains("opened 5"), "{verified}");
    assert!(!home.join("data/CURRENT").exists());

    let backups = dir.path().join("backups");
    let o = kukaku(&home, &["backup", "--to", backups.to_str().unwrap()]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("copies the embedded RocksDB engine"),
        "{}",
        text(&o)
    );
    // The DSN (and its password) is in no file of the home.
    for entry in walk(&home) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(dsn.len()).any(|w| w == dsn.as_bytes()),
            "{} holds the DSN",
            entry.display()
        );
    }
}

/// One instance on the cell with two homes, as two machines have: `a` made it, `b` joined
/// it (`kukaku join-cell`: a copy of its KEK and `engine.json`, nothing else).
pub(crate) struct TwoHomes {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) a: std::path::PathBuf,
    pub(crate) b: std::path::PathBuf,
    /// The instance's schema.
    pub(crate) schema: String,
}

impl TwoHomes {
    pub(crate) fn new(name: &str, partition: &str) -> Self {
        let CellSchema {
            dir,
            dsn_file,
            schema,
        } = cell_schema(name);
        let a = dir.path().join("a");
        ok(kukaku(
            &a,
            &[
                "init",
                "--origin",
                "hub.cell.test",
                "--pg-dsn-file",
                dsn_file.to_str().unwrap(),
                "--pg-schema",
                &schema,
            ],
        ));
        ok(kukaku(&a, &["partitions", "create", partition]));
        // The second machine: a copy of the KEK brought over, then `join-cell`.
        let kek_copy = dir.path().join("kek.copy");
        write_private(
            &kek_copy,
            &std::fs::read_to_string(a.join("kek.key")).unwrap(),
        );
        let b = dir.path().join("b");
        let joined = ok(kukaku(
            &b,
            &[
                "join-cell",
                "--kek",
                kek_copy.to_str().unwrap(),
                "--pg-dsn-file",
                dsn_file.to_str().unwrap(),
                "--pg-schema",
                &schema,
            ],
        ));
        assert!(
            joined.contains("joined the cell of hub.cell.test"),
            "{joined}"
        );
        std::fs::remove_file(&kek_copy).unwrap();
        TwoHomes { dir, a, b, schema }
    }
}

/// A `kukaku serve --role hub` on `port` whose standard output goes to `log`.
pub(crate) fn serve_hub(home: &std::path::Path, port: u16, log: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_kukaku"))
        .arg("--home")
        .arg(home)
        .args(["serve", "--role", "hub", "--plain-http-loopback"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
        .spawn()
        .unwrap()
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (up to 60 s) until `log` has a line containing `what`.
pub(crate) async fn wait_for_line(log: &std::path::Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if std::fs::read_to_string(log).is_ok_and(|t| t.contains(what)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never said {what:?}", log.display());
}

/// The body of an import of sample transmission `tid` with `households` households.
pub(crate) fn import_body(p: &str, tid: &str, households: usize, seed: u64) -> serde_json::Value {
    use base64::Engine as _;
    let b64 = &base64::engine::general_purpose::STANDARD;
    let f = kukaku::flows::sample::transmission(p, tid, households, seed);
    serde_json::json!({
        "transmission_id": tid, "encoding": "utf-8",
        "setai_file": b64.encode(&f.setai), "kojin_file": b64.encode(&f.kojin),
    })
}

/// Imports `tid` through the server on `port`: the HTTP status, `None` if no server answered.
pub(crate) async fn import(http: &Http, port: u16, token: &str, p: &str, tid: &str) -> Option<u16> {
    let body = import_body(p, tid, 2, tid.len() as u64);
    let url = format!("http://127.0.0.1:{port}/v1/transmissions");
    call(http, "POST", &url, token, Some(&body))
        .await
        .map(|(status, _)| status)
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run by the test command against its cell"]
async fn two_servers_on_one_cell_never_both_commit_and_take_over_in_turn() {
    let p = "131011";
    let homes = tokio::task::block_in_place(|| TwoHomes::new("serve2", p));
    let token = municipality_token(&homes.a, p);
    let (port_a, port_b) = (free_port(), free_port());
    let (log_a, log_b) = (
        homes.dir.path().join("a.log"),
        homes.dir.path().join("b.log"),
    );
    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    let mut a = serve_hub(&homes.a, port_a, &log_a);
    wait_ready(&http, port_a).await;
    let mut b = serve_hub(&homes.b, port_b, &log_b);
    wait_for_line(&log_b, "standing by").await;
    assert_eq!(
        import(&http, port_b, &token, p, "T-B-0").await,
        None,
        "b serves nothing yet"
    );
    let mut acked = Vec::new();
    for i in 0..5 {
        let tid = format!("T-A-{i}");
        assert_eq!(import(&http, port_a, &token, p, &tid).await, Some(201));
        acked.push(tid);
    }

    // `a` stops (as in a long pause or a partition) past its lease: `b` takes the cell.
    signal(&a, "-STOP");
    wait_ready(&http, port_b).await;
    assert!(
        std::fs::read_to_string(&log_b)
            .unwrap()
            .contains("took over the cell")
    );
    for i in 0..5 {
        let tid = format!("T-B-{i}");
        assert_eq!(import(&http, port_b, &token, p, &tid).await, Some(201));
        acked.push(tid);
    }
    // A request `a` finds when it wakes is never acknowledged: its epoch is taken.
    let stale = {
        let (http, token) = (http.clone(), token.clone());
        tokio::spawn(async move { import(&http, port_a, &token, p, "T-STALE").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&a, "-CONT");
    wait_for_line(&log_a, "standing by to open it again").await;
    let answer = stale.await.unwrap();
    assert!(
        !matches!(answer, Some(200 | 201)),
        "the fenced server acknowledged: {answer:?}"
    );
    assert_eq!(
        import(&http, port_a, &token, p, "T-A-late").await,
        None,
        "a stands by"
    );

    // `b` is killed: `a` takes the cell again once b's lease lapses.
    b.kill().unwrap();
    b.wait().unwrap();
    wait_ready(&http, port_a).await;
    for i in 5..10 {
        let tid = format!("T-A-{i}");
        assert_eq!(import(&http, port_a, &token, p, &tid).await, Some(201));
        acked.push(tid);
    }
    assert!(stop(&mut a).success());

    // Every acknowledged import whole; the stale one nowhere; the log verifies with keys.
    tokio::task::block_in_place(|| check_acked(&homes.a, p, &acked, &["T-STALE"]));
}

/// Every import of `acked` is in the log of `home` with its households, none of `absent`
/// is, and `verify --with-keys` opens every snapshot (two per import).
pub(crate) fn check_acked(home: &std::path::Path, p: &str, acked: &[String], absent: &[&str]) {
    let store = kukaku::store::Store::open(
        &kukaku::store::Paths::under(home),
        kukaku::store::StoreOptions::default(),
    )
    .unwrap();
    let partition = crate::common::pid(p);
    for tid in acked {
        let record = store.transmission(&partition, tid).unwrap();
        assert_eq!(record.map(|r| r.households.len()), Some(2), "{tid}");
    }
    for tid in absent {
        assert!(
            store.transmission(&partition, tid).unwrap().is_none(),
            "{tid}"
        );
    }
    drop(store);
    let verified = ok(kukaku(home, &["verify", "--with-keys"]));
    let opened = format!("opened {}", 2 * acked.len());
    assert!(verified.contains(&opened), "{verified}");
}

#[test]
#[ignore = "needs PostgreSQL: run by the test command against its cell"]
fn move_to_cell_takes_an_embedded_instance_onto_the_cell() {
    let CellSchema {
        dir,
        dsn_file,
        schema,
    } = cell_schema("move");
    let home = dir.path().join("home");
    ok(kukaku(&home, &["init", "--origin", "hub.test"]));
    import_five(|args| kukaku(&home, args), dir.path(), "T-MOVE-1");
    let before = ok(kukaku(&home, &["verify", "--with-keys"]));
    let move_args = [
        "move-to-cell",
        "--pg-dsn-file",
        dsn_file.to_str().unwrap(),
        "--pg-schema",
        &schema,
    ];
    let out = ok(kukaku(&home, &move_args));
    assert!(
        out.contains("every space read back from the cell is the same"),
        "{out}"
    );
    assert!(home.join("engine.json").exists() && home.join("data.before-cell").exists());
    assert!(!home.join("data").exists() && !home.join("keystore").exists());
    assert!(home.join("keystore.before-cell").exists());
    // The same entries, roots and checkpoints: verify prints the same lines on the cell.
    let after = ok(kukaku(&home, &["verify", "--with-keys"]));
    assert_eq!(after, before);
    assert!(out.contains(before.trim()), "{out}");
    // Once moved there is no embedded instance left to move.
    let o = kukaku(&home, &move_args);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("not in the embedded engine"),
        "{}",
        text(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run by the test command against its cell"]
async fn commands_that_only_read_run_beside_the_serving_writer_without_displacing_it() {
    let p = "131011";
    let homes = tokio::task::block_in_place(|| TwoHomes::new("readers", p));
    let token = municipality_token(&homes.a, p);
    let port = free_port();
    let log = homes.dir.path().join("a.log");
    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    let mut a = serve_hub(&homes.a, port, &log);
    wait_ready(&http, port).await;
    assert_eq!(import(&http, port, &token, p, "R-1").await, Some(201));

    // From the other machine's home, while `a` serves: before, each of these took the
    // writer's place or waited 30 s for its lease and gave up.
    let bundle = homes.dir.path().join("audit.bundle");
    let (verified, listed) = tokio::task::block_in_place(|| {
        let verified = ok(kukaku(&homes.b, &["verify", "--with-keys"]));
        let listed = ok(kukaku(&homes.b, &["partitions", "list"]));
        ok(kukaku(
            &homes.b,
            &["export", "--audit", "--out", bundle.to_str().unwrap()],
        ));
        (verified, listed)
    });
    assert!(verified.contains("opened 2"), "{verified}");
    assert!(listed.contains(p), "{listed}");
    assert!(std::fs::metadata(&bundle).unwrap().len() > 0);

    // The server was never displaced: it serves on, and never stood by.
    assert_eq!(import(&http, port, &token, p, "R-2").await, Some(201));
    assert!(stop(&mut a).success());
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(!said.contains("standing by"), "{said}");
    tokio::task::block_in_place(|| {
        check_acked(&homes.a, p, &["R-1".into(), "R-2".into()], &[]);
    });
}
