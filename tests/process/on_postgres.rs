//! The `kukaku` binary with its data in PostgreSQL (issue 31, `--features postgres`): `init
//! --pg-dsn-file` writes `engine.json` and no data directory of its own, every later command
//! finds the engine through it (partitions, import, verify with keys), `backup` says it
//! copies only the embedded engine, and a DSN file others can read is refused. Run by the
//! test command against its cell (`KUKAKU_TEST_PG_DSN`).

use std::os::unix::fs::PermissionsExt as _;

use super::cli::kukaku;
use super::keys_cli::{import_five, ok, text};
use crate::common::walk;

#[test]
#[ignore = "needs PostgreSQL: run by the test command against its cell"]
fn the_cli_runs_an_instance_whose_data_is_in_postgres() {
    let dsn = std::env::var("KUKAKU_TEST_PG_DSN").expect("KUKAKU_TEST_PG_DSN");
    let schema = format!("t_cli_{}", std::process::id());
    let mut c = postgres::Client::connect(&dsn, postgres::NoTls).unwrap();
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dsn_file = dir.path().join("pg.dsn");
    std::fs::write(&dsn_file, format!("{dsn}\n")).unwrap();
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
