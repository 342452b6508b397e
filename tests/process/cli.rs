//! The `kukaku` binary as a user runs it: init, partitions, checkpoint, prove, verify, export.

use std::process::{Command, Output};

/// The binary with `--home home` and `args`.
pub(crate) fn kukaku(home: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kukaku"))
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_user_session() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let o = kukaku(&home, &["init", "--origin", "hub.test"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // A wrong check digit is named and nothing is registered.
    let o = kukaku(&home, &["partitions", "create", "131011", "131012"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("131012"), "{}", stderr(&o));
    assert!(stderr(&o).contains("check digit"), "{}", stderr(&o));
    let o = kukaku(&home, &["partitions", "list"]);
    assert_eq!(stdout(&o).lines().count(), 1, "{}", stdout(&o));
    // The 8-digit form of a 市町村国保 number is the same partition.
    let o = kukaku(
        &home,
        &["partitions", "create", "131011", "00131011", "380014"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("registered 2 new, provisioned 2"));
    let o = kukaku(&home, &["partitions", "list"]);
    assert!(stdout(&o).contains("131011\tActive\t2"), "{}", stdout(&o));
    let o = kukaku(&home, &["partitions", "show", "131011"]);
    assert!(stdout(&o).contains("entries     2"), "{}", stdout(&o));
    assert!(stdout(&o).contains("hub.test/131011+"), "{}", stdout(&o));
    let o = kukaku(&home, &["partitions", "show", "010009"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not registered"));

    let o = kukaku(&home, &["checkpoint", "380014"]);
    assert!(
        stdout(&o).starts_with("hub.test/380014\n2\n"),
        "{}",
        stdout(&o)
    );
    let o = kukaku(&home, &["prove", "inclusion", "131011", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let proof: kukaku::ledger::proof_json::InclusionProofJson =
        serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((proof.leaf_idx, proof.tree_size), (1, 2));
    // Proofs are only given against checkpointed sizes.
    let o = kukaku(&home, &["prove", "consistency", "131011", "1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no checkpoint at size 1"),
        "{}",
        stderr(&o)
    );
    let o = kukaku(&home, &["prove", "inclusion", "131011", "7"]);
    assert_eq!(o.status.code(), Some(2));

    let o = kukaku(&home, &["verify", "--with-keys"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).matches("ok  partition").count(), 2);

    let bundle = dir.path().join("audit.bin");
    let b = bundle.to_str().unwrap();
    let o = kukaku(&home, &["export", "--audit", "--out", b]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("2 partitions, 4 entries"),
        "{}",
        stdout(&o)
    );
    let o = kukaku(&home, &["export", "--audit", "--out", b]);
    assert_eq!(o.status.code(), Some(2), "refuses to overwrite");
    let o = kukaku(&home, &["export", "--out", b]);
    assert_eq!(o.status.code(), Some(2), "--audit is required");

    // An instance held by another process (a running server): a clear error, not a lock dump.
    {
        let held = kukaku::store::Store::open(
            &kukaku::store::Paths::under(&home),
            kukaku::store::StoreOptions::default(),
        )
        .unwrap();
        let o = kukaku(&home, &["credentials", "list"]);
        assert_eq!(o.status.code(), Some(2));
        assert!(
            stderr(&o).contains("in use by another process"),
            "{}",
            stderr(&o)
        );
        assert_eq!(stderr(&o).matches("LOCK").count(), 0, "{}", stderr(&o));
        drop(held);
    }

    // Credentials: issue prints the token once; list never shows it; revoke by id.
    let o = kukaku(
        &home,
        &[
            "credentials",
            "issue",
            "--role",
            "municipality",
            "--partition",
            "131011",
            "--label",
            "terminal 1",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let token = out.lines().last().unwrap().to_owned();
    assert!(token.starts_with("kk1_"));
    let id = &token[4..20];
    let o = kukaku(&home, &["credentials", "list"]);
    assert!(stdout(&o).contains(id) && !stdout(&o).contains(&token[21..]));
    let o = kukaku(
        &home,
        &[
            "credentials",
            "issue",
            "--role",
            "municipality",
            "--partitions",
            "131011",
            "--label",
            "x",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("exactly one --partition"),
        "{}",
        stderr(&o)
    );
    let o = kukaku(&home, &["credentials", "revoke", id]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = kukaku(&home, &["credentials", "revoke", id]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("already revoked"));

    // Import a transmission from files; again (idempotent); a bad one (exit 1, problems
    // listed without values).
    let files = kukaku::flows::sample::transmission("131011", "T-CLI-1", 4, 9);
    let (sf, kf) = (dir.path().join("setai.csv"), dir.path().join("kojin.csv"));
    std::fs::write(
        &sf,
        kukaku::flows::sample::encode(&files.setai, kukaku::flows::transmission::Encoding::Cp932),
    )
    .unwrap();
    std::fs::write(
        &kf,
        kukaku::flows::sample::encode(&files.kojin, kukaku::flows::transmission::Encoding::Cp932),
    )
    .unwrap();
    let args = |tid: &'static str, enc: &'static str| {
        vec![
            "import".to_owned(),
            "--partition".into(),
            "131011".into(),
            "--transmission-id".into(),
            tid.into(),
            "--encoding".into(),
            enc.into(),
            "--setai".into(),
            sf.to_str().unwrap().into(),
            "--kojin".into(),
            kf.to_str().unwrap().into(),
        ]
    };
    let run = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        kukaku(&home, &a)
    };
    let o = run(args("T-CLI-1", "cp932"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("stored T-CLI-1: 4 households"),
        "{}",
        stdout(&o)
    );
    let o = run(args("T-CLI-1", "cp932"));
    assert!(stdout(&o).starts_with("already stored"), "{}", stdout(&o));
    let o = run(args("T-CLI-1", "utf-8"));
    assert_eq!(o.status.code(), Some(2), "same id, other content: conflict");
    assert!(stderr(&o).contains("different content"), "{}", stderr(&o));
    let o = run(args("T-CLI-2", "utf-8"));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("undecodable"), "{}", stderr(&o));
    for k in &files.kojin_nos {
        assert!(!stderr(&o).contains(k.as_str()));
    }

    // Missing instance: exit 2 with a hint.
    let o = kukaku(&dir.path().join("nowhere"), &["partitions", "list"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("kukaku init"), "{}", stderr(&o));
}

/// Issue 26 item 6: under a umask of 022 the home, `data/`, `keystore/` and RocksDB's files
/// were created readable by group and others. Now every directory of the instance is 0700
/// and every file 0600 whatever the umask, and open refuses a home others can enter.
#[test]
fn an_instance_is_owner_only_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let bin = env!("CARGO_BIN_EXE_kukaku");
    let h = home.to_str().unwrap();
    for cmd in [
        format!("umask 000; mkdir -p {h}; {bin} --home {h} init --origin hub.test --dev-cert"),
        format!("umask 000; {bin} --home {h} partitions create 131011 380014"),
        format!("umask 000; {bin} --home {h} credentials issue --role auditor --all --label a"),
    ] {
        let o = Command::new("sh").args(["-c", &cmd]).output().unwrap();
        assert!(o.status.success(), "{cmd}: {}", stderr(&o));
    }
    fn walk(p: &std::path::Path, out: &mut Vec<(std::path::PathBuf, u32, bool)>) {
        let m = std::fs::symlink_metadata(p).unwrap();
        out.push((p.to_owned(), m.permissions().mode() & 0o777, m.is_dir()));
        if m.is_dir() {
            for e in std::fs::read_dir(p).unwrap() {
                walk(&e.unwrap().path(), out);
            }
        }
    }
    let mut all = Vec::new();
    walk(&home, &mut all);
    assert!(all.len() > 10, "{all:?}");
    for (path, mode, is_dir) in &all {
        if *is_dir {
            assert_eq!(*mode, 0o700, "{}", path.display());
        } else {
            assert_eq!(*mode, 0o600, "{}", path.display());
        }
        assert_eq!(mode & 0o077, 0, "{}", path.display());
    }
    // A home others can enter is refused, naming it and the fix; nothing else changes.
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = kukaku(&home, &["partitions", "list"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("mode 0755") && stderr(&o).contains("chmod 700"),
        "{}",
        stderr(&o)
    );
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(home.join("data"), std::fs::Permissions::from_mode(0o750)).unwrap();
    assert_eq!(
        kukaku(&home, &["partitions", "list"]).status.code(),
        Some(2)
    );
    std::fs::set_permissions(home.join("data"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let o = kukaku(&home, &["partitions", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Issue 28 item 3: a partition's name, shown beside its number: at creation (one partition)
/// or later; a bad name or an unregistered partition is refused.
#[test]
fn partitions_have_names() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let o = kukaku(&home, &["init", "--origin", "hub.test"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = kukaku(&home, &["partitions", "create", "131011"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = kukaku(
        &home,
        &[
            "partitions",
            "create",
            "131029",
            "131037",
            "--name",
            "中央区",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "--name with two partitions");
    let o = kukaku(
        &home,
        &["partitions", "create", "131029", "--name", "中央区"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = kukaku(&home, &["partitions", "name", "131011", "千代田区"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = kukaku(&home, &["partitions", "name", "131011", "a\u{7}b"]);
    assert_eq!(o.status.code(), Some(2), "a control character in a name");
    let o = kukaku(&home, &["partitions", "name", "010009", "どこか"]);
    assert_eq!(o.status.code(), Some(2), "an unregistered partition");
    let o = kukaku(&home, &["partitions", "list"]);
    assert!(
        stdout(&o).contains("131011\tActive\t2\t千代田区") && stdout(&o).contains("\t中央区"),
        "{}",
        stdout(&o)
    );
}

/// A further cell of the instance (`init --sibling-of`) and a partition moved to it
/// (`partitions move`): verified there, refused here (issue 31).
#[test]
fn a_partition_moves_to_a_further_cell() {
    use super::keys_cli::{import_five, import_sample, ok, text};
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    ok(kukaku(&a, &["init", "--origin", "hub.test"]));
    import_five(|args| kukaku(&a, args), dir.path(), "T-MOVE-1");
    ok(kukaku(&a, &["partitions", "create", "380014"]));
    let b_str = b.to_str().unwrap();
    let made = ok(kukaku(&b, &["init", "--sibling-of", a.to_str().unwrap()]));
    assert!(made.contains("as a further cell of"), "{made}");
    // One identity: the same log key on both cells.
    let key_a = ok(kukaku(&a, &["public-keys", "--log"]));
    assert_eq!(ok(kukaku(&b, &["public-keys", "--log"])), key_a);
    let checkpoint = ok(kukaku(&a, &["checkpoint", "131011"]));

    let moved = ok(kukaku(&a, &["partitions", "move", "131011", "--to", b_str]));
    assert!(moved.contains("moved partition 131011"), "{moved}");
    assert_eq!(ok(kukaku(&b, &["checkpoint", "131011"])), checkpoint);
    let verified = ok(kukaku(&b, &["verify", "--with-keys"]));
    assert!(verified.contains("opened 5"), "{verified}");
    let listed = ok(kukaku(&a, &["partitions", "list"]));
    assert!(listed.contains("Moved"), "{listed}");

    // The old cell refuses its writes, and saying why; not moved twice.
    let import = |home: &std::path::Path| {
        import_sample(|args| kukaku(home, args), dir.path(), "T-MOVE-2", 1, 78)
    };
    let o = import(&a);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("has moved to another cell"),
        "{}",
        text(&o)
    );
    ok(import(&b));
    let o = kukaku(&a, &["partitions", "move", "131011", "--to", b_str]);
    assert!(
        !o.status.success() && text(&o).contains("already has partition"),
        "{}",
        text(&o)
    );

    // The old cell's copy dropped: verify there names it moved, the new cell's is intact.
    let dropped = ok(kukaku(
        &a,
        &["partitions", "drop-moved", "131011", "--confirm", "131011"],
    ));
    assert!(
        dropped.contains("dropped the copy of moved partition 131011"),
        "{dropped}"
    );
    let here = ok(kukaku(&a, &["verify", "--with-keys"]));
    assert!(here.contains("moved partition 131011"), "{here}");
    let there = ok(kukaku(&b, &["verify", "--with-keys"]));
    assert!(
        there.contains("opened 6"),
        "five and the one imported there: {there}"
    );
}
