//! `kukaku keys …` as a security reviewer runs it: on a stopped instance (a re-encryption
//! killed with SIGKILL resumes), and on a running `kukaku serve` through its admin socket.

use crate::common;

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{pid, small};
use kukaku::ledger::Kind;
use kukaku::store::{NewEntry, Paths, Store};

pub(crate) fn kukaku(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kukaku"));
    c.arg("--home").arg(home);
    c
}

pub(crate) fn run(home: &Path, args: &[&str]) -> Output {
    kukaku(home)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Makes partition 131011 and imports a five-household sample transmission `tid` into it
/// through the binary (`run` runs it with the instance's home), the files written in `dir`.
pub(crate) fn import_five(run: impl Fn(&[&str]) -> Output, dir: &Path, tid: &str) {
    ok(run(&["partitions", "create", "131011"]));
    ok(import_sample(run, dir, tid, 5, 77));
}

/// `kukaku import` of a sample transmission `tid` of `households` households into 131011
/// (files made from `seed`, written in `dir`), as `run` runs it.
pub(crate) fn import_sample(
    run: impl Fn(&[&str]) -> Output,
    dir: &Path,
    tid: &str,
    households: usize,
    seed: u64,
) -> Output {
    let files = kukaku::flows::sample::transmission("131011", tid, households, seed);
    let (setai, kojin) = (dir.join("setai.csv"), dir.join("kojin.csv"));
    std::fs::write(&setai, &files.setai).unwrap();
    std::fs::write(&kojin, &files.kojin).unwrap();
    run(&[
        "import",
        "--partition",
        "131011",
        "--transmission-id",
        tid,
        "--encoding",
        "utf-8",
        "--setai",
        setai.to_str().unwrap(),
        "--kojin",
        kojin.to_str().unwrap(),
    ])
}

/// The output of a command that must succeed (its stdout and stderr otherwise).
pub(crate) fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", text(&o));
    text(&o)
}

pub(crate) fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// An instance with two partitions and 400 sealed entries in each.
pub(crate) fn instance(home: &Path) {
    let paths = Paths::under(home);
    let store = Store::init(&paths, "hub.test", small()).unwrap();
    let ids = [pid("131011"), pid("380014")];
    store.request_partitions(&ids).unwrap();
    store.provision(&mut |_, _| {}).unwrap();
    for p in &ids {
        for b in 0..4 {
            let entries = (0..100)
                .map(|i| {
                    let body = format!("snapshot {b}/{i}").into_bytes();
                    NewEntry::new(Kind::HOUSEHOLD_SNAPSHOT, 1, None, body).unwrap()
                })
                .collect();
            store.append(p, entries).unwrap();
        }
    }
}

/// `kukaku serve` on loopback, once its admin socket answers: the child and its HTTP address.
pub(crate) fn serve(home: &Path) -> (std::process::Child, String) {
    use std::io::{BufRead as _, BufReader};
    let mut server = kukaku(home)
        .args(["serve", "--role", "hub", "--plain-http-loopback"])
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("server exited").unwrap();
        if let Some(rest) = line.split("serving http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let started = Instant::now();
    while !kukaku::admin::server_listening(&home.join("admin.sock")) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no admin socket"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, addr)
}

#[test]
fn killed_reencryption_resumes_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    instance(&home);
    let o = run(&home, &["keys", "rotate-dek", "--all"]);
    assert!(o.status.success(), "{}", text(&o));
    // Slow on purpose (100 entries/s); SIGKILL once the first chunk is reported moved.
    let mut child = kukaku(&home)
        .args(["keys", "reencrypt", "--partition", "131011"])
        .args(["--rate", "100", "--chunk", "10"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let progress = BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map(Result::unwrap)
        .find(|l| l.starts_with("re-encrypting 131011: "))
        .expect("no progress line before the end");
    let (moved, of) = progress
        .rsplit_once(' ')
        .unwrap()
        .1
        .split_once('/')
        .unwrap();
    assert!(
        moved.parse::<u64>().unwrap() < of.parse().unwrap(),
        "{progress}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let o = run(&home, &["keys", "status", "--partition", "131011"]);
    assert!(
        text(&o).contains("re-encryption stopped at seq"),
        "{}",
        text(&o)
    );
    let o = run(&home, &["keys", "reencrypt", "--all", "--rate", "0"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("131011: 400 entries moved"),
        "{}",
        text(&o)
    );
    let o = run(&home, &["keys", "status"]);
    for line in text(&o).lines().filter(|l| l.contains("\tprevious\t")) {
        assert!(line.contains("\tprevious\t400\t0\t"), "{line}");
    }
    let o = run(
        &home,
        &["keys", "retire", "--partition", "131011", "--key-id", "2"],
    );
    assert_eq!(o.status.code(), Some(2), "the current key: {}", text(&o));
    let o = run(
        &home,
        &["keys", "retire", "--partition", "131011", "--key-id", "1"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&home, &["verify", "--with-keys"]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn key_commands_reach_a_running_server_through_its_admin_socket() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    instance(&home);
    let socket = home.join("admin.sock");
    let (mut server, _) = serve(&home);
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // The store is held by the server; the commands go through it.
    let o = run(&home, &["keys", "status"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("through the running server"),
        "{}",
        text(&o)
    );
    for args in [
        &["keys", "rotate-dek", "--all"][..],
        &["keys", "reencrypt", "--all", "--rate", "0"],
        &["keys", "rotate-kek", "--reason", "test"],
        &["keys", "rotate-signing-key"],
        &["keys", "rotate-signing-key", "--finish"],
    ] {
        let o = run(&home, args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    }
    // Destroy wants the partition id typed again.
    let destroy = [
        "keys",
        "destroy",
        "--partition",
        "380014",
        "--reason",
        "保存期間満了",
    ];
    let o = run(&home, &destroy);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("--confirm"), "{}", text(&o));
    let o = run(&home, &[&destroy[..], &["--confirm", "131011"]].concat());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("confirmation does not match"),
        "{}",
        text(&o)
    );
    let o = run(&home, &[&destroy[..], &["--confirm", "380014"]].concat());
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("400 entries are unreadable"),
        "{}",
        text(&o)
    );
    // The audit export runs in the server too (the auditor then checks every key event).
    let bundle = dir.path().join("audit.bundle");
    let o = run(
        &home,
        &["export", "--audit", "--out", bundle.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("through the running server"),
        "{}",
        text(&o)
    );
    let bytes = std::fs::read(&bundle).unwrap();
    assert!(bytes.starts_with(kukaku::ledger::bundle::MAGIC));
    let o = run(
        &home,
        &["export", "--audit", "--out", bundle.to_str().unwrap()],
    );
    assert_eq!(
        o.status.code(),
        Some(2),
        "an existing file is not overwritten"
    );
    // Errors from the server come back as errors.
    let o = run(
        &home,
        &["keys", "retire", "--partition", "131011", "--key-id", "99"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("no key 99"), "{}", text(&o));
    // A clean stop removes the socket; the store then opens directly again.
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(server.wait().unwrap().success());
    assert!(!socket.exists());
    let o = run(&home, &["verify", "--with-keys"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("shredded 400"), "{}", text(&o));
    // The trust lines for auditors cover both signing keys, each in its window.
    let o = run(&home, &["public-keys"]);
    let lines: Vec<&str> = std::str::from_utf8(&o.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("log "))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].contains(" until=") && lines[0].contains("retired"),
        "{lines:?}"
    );
    assert!(lines[1].contains(" from="), "{lines:?}");
}

/// Issue 26 item 5: `credentials revoke` refused while `kukaku serve` held the store, so a
/// leaked token could only be answered by stopping the hub. Now `credentials issue|list|
/// revoke` go through the admin socket: a token issued while serving works at once, and
/// after `revoke` its next request gets 401.
#[test]
fn credentials_are_issued_and_revoked_through_a_running_server() {
    use std::io::{Read as _, Write as _};
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    instance(&home);
    let (mut server, addr) = serve(&home);
    let get = |token: &str| {
        let mut tcp = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            tcp,
            "GET /v1/checkpoint HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        tcp.read_to_string(&mut out).unwrap();
        out.get(9..12).unwrap_or("").to_owned()
    };
    let o = run(
        &home,
        &[
            "credentials",
            "issue",
            "--role",
            "municipality",
            "--partition",
            "131011",
            "--label",
            "leaked terminal",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("through the running server"),
        "{}",
        text(&o)
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let token = out
        .lines()
        .find(|l| l.starts_with("kk1_"))
        .unwrap()
        .to_owned();
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("credential "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    assert_eq!(get(&token), "200");
    let o = run(&home, &["credentials", "list"]);
    assert!(o.status.success() && text(&o).contains(&id), "{}", text(&o));
    assert!(!text(&o).contains(&token[4..]), "list never shows a token");
    let o = run(&home, &["credentials", "revoke", &id]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("through the running server"),
        "{}",
        text(&o)
    );
    assert_eq!(
        get(&token),
        "401",
        "the next request after revoke is refused"
    );
    let o = run(&home, &["credentials", "revoke", &id]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(server.wait().unwrap().success());
}

/// Issue 26 item 4: a reason with a control character is refused before anything is
/// written, from the CLI as from the library.
#[test]
fn a_reason_with_a_control_character_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    instance(&home);
    let before = run(&home, &["keys", "status"]);
    let size = |home: &Path| {
        let store = Store::open(&Paths::under(home), small()).unwrap();
        store.size(&pid("131011")).unwrap()
    };
    let size_before = size(&home);
    let kek_before = std::fs::read(home.join("kek.key")).ok();
    for args in [
        &["keys", "rotate-dek", "--all", "--reason", "line\nbreak"][..],
        &["keys", "rotate-kek", "--reason", "esc\u{1b}[2J"],
        &[
            "keys",
            "destroy",
            "--partition",
            "131011",
            "--confirm",
            "131011",
            "--reason",
            "purge\rhidden",
        ],
    ] {
        let o = run(&home, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains("control character"), "{}", text(&o));
    }
    assert_eq!(size(&home), size_before, "no entry was written");
    assert_eq!(std::fs::read(home.join("kek.key")).ok(), kek_before);
    let after = run(&home, &["keys", "status"]);
    assert_eq!(after.stdout, before.stdout, "no key changed");
}
