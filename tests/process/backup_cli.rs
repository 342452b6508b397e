//! `kukaku backup` and `kukaku restore` as an operator runs them: through a running
//! server's admin socket, on a stopped instance, and a backup killed with SIGKILL leaves the
//! earlier backups usable and the next backup works.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::Stdio;

use super::keys_cli::{instance, kukaku, run, serve, text};

fn restore(home: &Path, from: &Path, kek: &Path, id: Option<&str>) -> std::process::Output {
    let (from, kek) = (from.to_str().unwrap(), kek.to_str().unwrap());
    let mut args = vec!["restore", "--from", from, "--kek", kek];
    if let Some(id) = id {
        args.extend(["--backup-id", id]);
    }
    run(home, &args)
}

#[test]
fn backup_through_a_running_server_and_restore_into_a_new_home() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    instance(&home);
    let backups = dir.path().join("backups");
    let (mut server, _) = serve(&home);
    let o = run(&home, &["backup", "--to", backups.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("through the running server"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("backup 1 of hub.test"), "{}", text(&o));
    server.kill().unwrap();
    server.wait().unwrap();

    let restored = dir.path().join("restored");
    let o = restore(&restored, &backups, &home.join("kek.key"), None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("every partition verified"),
        "{}",
        text(&o)
    );
    let o = run(&restored, &["verify", "--with-keys"]);
    assert!(o.status.success(), "{}", text(&o));
    // Never over an existing home.
    let o = restore(&restored, &backups, &home.join("kek.key"), None);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("restore only into a new home"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_backup_killed_midway_leaves_the_earlier_backups_usable() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    instance(&home);
    let backups = dir.path().join("backups");
    let to = backups.to_str().unwrap();
    let o = run(&home, &["backup", "--to", to]);
    assert!(o.status.success(), "{}", text(&o));
    // The second backup is killed once it has started (its first progress line).
    let mut child = kukaku(&home)
        .args(["backup", "--to", to])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map(Result::unwrap)
        .any(|l| l.starts_with("backup: "));
    assert!(started, "no progress line");
    child.kill().unwrap();
    child.wait().unwrap();
    let kek = home.join("kek.key");
    let o = restore(&dir.path().join("one"), &backups, &kek, Some("1"));
    assert!(o.status.success(), "{}", text(&o));
    // The next backup runs (what the killed one left is cleared) and restores.
    let o = run(&home, &["backup", "--to", to]);
    assert!(o.status.success(), "{}", text(&o));
    let o = restore(&dir.path().join("latest"), &backups, &kek, None);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&home, &["restore", "--from", to, "--list"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("backup 1\t"), "{}", text(&o));
}
