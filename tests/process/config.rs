//! `serve --config kukaku.toml` and `kukaku config check`: every `serve` flag can be set from
//! the file (a hub's and an intermediate's), flags on the command line override it, and an
//! unknown key is refused by name.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use super::keys_cli::{run, text};

fn check(home: &Path, config: &Path, flags: &[&str]) -> std::process::Output {
    let config = config.to_str().unwrap();
    run(
        home,
        &[&["config", "check", "--config", config], flags].concat(),
    )
}

/// The `key = value` lines `config check` printed.
fn printed(o: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// The long names of `kukaku serve`'s flags, from its help.
fn serve_flags(home: &Path) -> Vec<String> {
    let help = text(&run(home, &["serve", "--help"]));
    let mut flags: Vec<String> = help
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| {
            w.trim_end_matches(',')
                .split(['=', '<', ' '])
                .next()
                .unwrap()
                .to_owned()
        })
        .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        .collect();
    flags.sort();
    flags.dedup();
    flags
}

#[test]
fn every_serve_flag_can_come_from_the_file_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let o = run(&home, &["init", "--origin", "hub.test", "--dev-cert"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&home, &["partitions", "create", "131011"]);
    assert!(o.status.success(), "{}", text(&o));
    let vkey = text(&run(&home, &["partitions", "show", "131011"]))
        .lines()
        .find_map(|l| l.strip_prefix("vkey").map(|k| k.trim().to_owned()))
        .unwrap();
    let witness = text(&run(&home, &["public-keys", "--witness"]))
        .lines()
        .find(|l| l.contains('+') && !l.starts_with('#'))
        .unwrap()
        .trim()
        .to_owned();
    let (cert, key) = (home.join("tls/cert.pem"), home.join("tls/key.pem"));
    let rules = dir.path().join("rules.txt");
    std::fs::write(&rules, "case 2 = manual\n").unwrap();
    let token = dir.path().join("token");
    std::fs::write(
        &token,
        "kk1_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
    )
    .unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (cert, key, rules, token) = (
        cert.display().to_string(),
        key.display().to_string(),
        rules.display().to_string(),
        token.display().to_string(),
    );

    let placement = dir.path().join("placement.toml");
    std::fs::write(
        &placement,
        "cell = \"a\"\n[cells]\na = \"https://hub-a.example\"\nb = \"https://hub-b.example\"\n[partitions]\n\"131011\" = \"b\"\n",
    )
    .unwrap();
    let placement = placement.display().to_string();
    let hub_toml = dir.path().join("hub.toml");
    let hub = format!(
        r#"# every hub flag
role = "hub"
listen = "127.0.0.1:18443"
tls-cert = "{cert}"
tls_key = "{key}"
client_ca = "{cert}"
max_body_bytes = 1048576
max_concurrent = 64
max_connections = 512
request_nice = 3
witness_vkey = ["{witness}"]
continuity_rules = "{rules}"
session_idle_minutes = 15
metrics_listen = "127.0.0.1:19464"
metrics_partition_labels = true
placement = "{placement}"
"#
    );
    std::fs::write(&hub_toml, hub).unwrap();
    let o = check(&home, &hub_toml, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let lines = printed(&o);
    for want in [
        "role = \"hub\"".to_owned(),
        "listen = \"127.0.0.1:18443\"".to_owned(),
        "transport = \"tls\"".to_owned(),
        format!("tls_cert = \"{cert}\""),
        format!("tls_key = \"{key}\""),
        format!("client_ca = \"{cert}\""),
        "max_body_bytes = 1048576".to_owned(),
        "max_concurrent = 64".to_owned(),
        "max_connections = 512".to_owned(),
        "request_nice = 3".to_owned(),
        format!("witness_vkey = [\"{witness}\"]"),
        format!("continuity_rules = \"{rules}\""),
        "session_idle_minutes = 15".to_owned(),
        "metrics_listen = \"127.0.0.1:19464\"".to_owned(),
        "metrics_partition_labels = true".to_owned(),
        format!("placement = \"{placement}\""),
    ] {
        assert!(lines.contains(&want), "{want} not in {lines:?}");
    }
    // Flags override the file.
    let o = check(
        &home,
        &hub_toml,
        &["--max-concurrent", "9", "--listen", "127.0.0.1:1"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let lines = printed(&o);
    assert!(
        lines.contains(&"max_concurrent = 9".to_owned()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"listen = \"127.0.0.1:1\"".to_owned()),
        "{lines:?}"
    );

    let int_toml = dir.path().join("intermediate.toml");
    let int = format!(
        r#"role = "intermediate"
plain_http_loopback = true
listen = "127.0.0.1:18444"
upstream = "https://localhost:18443"
upstream_vkey = ["{vkey}"]
upstream_token_file = "{token}"
upstream_ca = "{cert}"
upstream_client_cert = "{cert}"
upstream_client_key = "{key}"
replicate_every = 7
replicate_max_backoff = 70
"#
    );
    std::fs::write(&int_toml, int).unwrap();
    let o = check(&home, &int_toml, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let lines = printed(&o);
    for want in [
        "role = \"intermediate\"".to_owned(),
        "transport = \"plain-http-loopback\"".to_owned(),
        "upstream = \"https://localhost:18443\"".to_owned(),
        format!("upstream_vkey = [\"{vkey}\"]"),
        format!("upstream_token_file = \"{token}\""),
        format!("upstream_ca = \"{cert}\""),
        format!("upstream_client_cert = \"{cert}\""),
        format!("upstream_client_key = \"{key}\""),
        "replicate_every = 7".to_owned(),
        "replicate_max_backoff = 70".to_owned(),
    ] {
        assert!(lines.contains(&want), "{want} not in {lines:?}");
    }

    // The two files together set every flag `serve --help` lists (but --config itself).
    let both = format!(
        "{}{}",
        std::fs::read_to_string(&hub_toml).unwrap(),
        std::fs::read_to_string(&int_toml).unwrap()
    );
    let flags = serve_flags(&home);
    assert!(flags.len() > 20, "{flags:?}");
    for flag in flags {
        // --config itself, and the global flags (not `serve` settings).
        if ["config", "help", "home", "log-format", "version"].contains(&flag.as_str()) {
            continue;
        }
        let key = flag.replace('-', "_");
        let set = both
            .lines()
            .any(|l| l.starts_with(&format!("{key} =")) || l.starts_with(&format!("{flag} =")));
        assert!(set, "--{flag} is not set by the test's files");
    }

    // The commented example in docs/ holds only known keys and checks, with this machine's
    // TLS files given as flags.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/kukaku.example.toml");
    let o = check(&home, &example, &["--tls-cert", &cert, "--tls-key", &key]);
    assert!(o.status.success(), "{}", text(&o));

    // An unknown key is refused by name; a wrong value by flag.
    std::fs::write(&hub_toml, "role = \"hub\"\nmax_concurent = 3\n").unwrap();
    let o = check(&home, &hub_toml, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("unknown key `max_concurent`"),
        "{}",
        text(&o)
    );
    std::fs::write(&hub_toml, "role = \"hub\"\nmax_concurrent = \"many\"\n").unwrap();
    let o = check(&home, &hub_toml, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("--max-concurrent"), "{}", text(&o));
}
