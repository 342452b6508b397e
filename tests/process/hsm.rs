//! The KEK in an HSM (issue 30 item 3, SoftHSM2 here): an instance made with `init
//! --kek-pkcs11` seals and opens its entries through the token, rotates its KEK inside the
//! token, backs up and restores with the token, refuses a wrong PIN and a PIN file others
//! can read with a clear error, and keeps neither the KEK nor the PIN in any file of the
//! instance; the key object cannot be read out of the token. A file KEK moves into the
//! token and back.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::keys_cli::{import_five, ok, text};
use crate::common::walk;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "Qx7-pin-Zw";

/// A fresh SoftHSM2 token in `dir` and the `kukaku` command that uses it.
struct Hsm {
    conf: PathBuf,
}

impl Hsm {
    fn new(dir: &Path) -> Hsm {
        assert!(
            Path::new(MODULE).exists(),
            "SoftHSM2 is not installed ({MODULE}): `apt-get install softhsm2` (the test command does)"
        );
        let tokens = dir.join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let o = Command::new("softhsm2-util")
            .args([
                "--init-token",
                "--free",
                "--label",
                "kukaku",
                "--pin",
                PIN,
                "--so-pin",
                "864297",
            ])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        Hsm { conf }
    }

    /// A 0600 PIN file and the `--kek-pkcs11` configuration naming this token, in `dir`.
    fn config(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let pin = dir.join("pin");
        std::fs::write(&pin, format!("{PIN}\n")).unwrap();
        std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = dir.join("hsm.json");
        std::fs::write(
            &config,
            serde_json::json!({
                "module": MODULE,
                "token": "kukaku",
                "key_label": "kukaku-kek",
                "pin_file": pin,
            })
            .to_string(),
        )
        .unwrap();
        (config, pin)
    }

    /// Imports a five-household transmission into a new partition 131011 of `home`.
    fn import_five(&self, dir: &Path, home: &Path) {
        import_five(|args| self.kukaku(home, args), dir, "T-HSM-1");
    }

    fn kukaku(&self, home: &Path, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_kukaku"))
            .arg("--home")
            .arg(home)
            .args(args)
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .unwrap()
    }
}

#[test]
fn an_instance_keeps_its_kek_in_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let hsm = Hsm::new(dir.path());
    let (config, pin) = hsm.config(dir.path());
    let home = dir.path().join("home");
    let out = ok(hsm.kukaku(
        &home,
        &[
            "init",
            "--origin",
            "hub.test",
            "--kek-pkcs11",
            config.to_str().unwrap(),
        ],
    ));
    assert!(out.contains("the KEK is in the HSM"), "{out}");
    // Sealed entries, wrapped and unwrapped by the token.
    hsm.import_five(dir.path(), &home);
    let verified = ok(hsm.kukaku(&home, &["verify", "--with-keys"]));
    assert!(verified.contains("opened 5"), "{verified}");

    // A KEK rotation inside the token: new object, every key rewrapped, old object gone.
    let rotated = ok(hsm.kukaku(&home, &["keys", "rotate-kek", "--reason", "yearly"]));
    assert!(rotated.contains("the old KEK is destroyed"), "{rotated}");
    let verified = ok(hsm.kukaku(&home, &["verify", "--with-keys"]));
    assert!(verified.contains("opened 5"), "{verified}");

    // No KEK file, and the PIN in no file of the instance.
    assert!(!home.join("kek.key").exists());
    assert_in_no_file(&home, PIN.as_bytes(), "the PIN");

    // A backup holds no KEK; it restores with the token's configuration and verifies.
    let backups = dir.path().join("backups");
    ok(hsm.kukaku(&home, &["backup", "--to", backups.to_str().unwrap()]));
    let restored = dir.path().join("restored");
    let out = ok(hsm.kukaku(
        &restored,
        &[
            "restore",
            "--from",
            backups.to_str().unwrap(),
            "--kek-pkcs11",
            config.to_str().unwrap(),
        ],
    ));
    assert!(
        out.contains("every partition verified with its keys"),
        "{out}"
    );
    assert!(!restored.join("kek.key").exists());
    let verified = ok(hsm.kukaku(&restored, &["verify", "--with-keys"]));
    assert!(verified.contains("opened 5"), "{verified}");
    assert_in_no_file(&backups, PIN.as_bytes(), "the PIN");

    // A wrong PIN, and a PIN file others can read: refused with a clear error, nothing opened.
    std::fs::write(&pin, "wrong-pin\n").unwrap();
    let o = hsm.kukaku(&home, &["verify"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("the token refused the PIN"),
        "{}",
        text(&o)
    );
    std::fs::write(&pin, format!("{PIN}\n")).unwrap();
    std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = hsm.kukaku(&home, &["verify"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("is readable by others"), "{}", text(&o));
    std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();

    // The key object is sensitive and not extractable: the token does not hand its value out
    // (checked in a child of this test binary, which loads the module with this token).
    let o = Command::new(std::env::current_exe().unwrap())
        .args([
            "hsm::key_object_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SOFTHSM2_CONF", &hsm.conf)
        .env("KUKAKU_HSM_CHILD", "1")
        .output()
        .unwrap();
    assert!(
        text(&o).contains("kek object: sensitive=true extractable=false value=refused"),
        "{}",
        text(&o)
    );
    ok(hsm.kukaku(&home, &["verify", "--with-keys"]));
}

/// Run by [`an_instance_keeps_its_kek_in_the_token`] in a child with the token's
/// `SOFTHSM2_CONF`: prints what the token says of the KEK object.
#[test]
fn key_object_child() {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::object::{Attribute, AttributeType, ObjectClass};
    use cryptoki::session::UserType;
    if std::env::var("KUKAKU_HSM_CHILD").is_err() {
        return;
    }
    let ctx = Pkcs11::new(MODULE).unwrap();
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == "kukaku")
        .unwrap();
    let session = ctx.open_ro_session(slot).unwrap();
    session
        .login(
            UserType::User,
            Some(&cryptoki::types::AuthPin::from(PIN.to_owned())),
        )
        .unwrap();
    let key = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(b"kukaku-kek".to_vec()),
        ])
        .unwrap()[0];
    let attrs = session
        .get_attributes(key, &[AttributeType::Sensitive, AttributeType::Extractable])
        .unwrap();
    let flag = |want: AttributeType| {
        attrs.iter().find_map(|a| match (a, want) {
            (Attribute::Sensitive(v), AttributeType::Sensitive) => Some(*v),
            (Attribute::Extractable(v), AttributeType::Extractable) => Some(*v),
            _ => None,
        })
    };
    let value = match session.get_attributes(key, &[AttributeType::Value]) {
        Ok(v) if v.iter().any(|a| matches!(a, Attribute::Value(_))) => "readable",
        _ => "refused",
    };
    println!(
        "kek object: sensitive={} extractable={} value={value}",
        flag(AttributeType::Sensitive).unwrap_or(false),
        flag(AttributeType::Extractable).unwrap_or(true)
    );
}

/// A file-KEK instance moves its KEK into the token (`keys rotate-kek --to-pkcs11`) and back
/// (`--to-file`): every key is rewrapped each time, the entries still open, the old KEK file is
/// shredded (its bytes in no file of the instance) and the token's object is destroyed.
#[test]
fn a_kek_moves_from_a_file_into_the_token_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let hsm = Hsm::new(dir.path());
    let (config, _pin) = hsm.config(dir.path());
    let home = dir.path().join("home");
    ok(hsm.kukaku(&home, &["init", "--origin", "hub.test"]));
    hsm.import_five(dir.path(), &home);
    let file_kek = std::fs::read(home.join("kek.key")).unwrap();

    let moved = ok(hsm.kukaku(
        &home,
        &[
            "keys",
            "rotate-kek",
            "--reason",
            "into the HSM",
            "--to-pkcs11",
            config.to_str().unwrap(),
        ],
    ));
    assert!(moved.contains("the KEK is in the HSM"), "{moved}");
    assert!(!home.join("kek.key").exists(), "{moved}");
    assert!(home.join("kek.pkcs11").exists(), "{moved}");
    assert_in_no_file(&home, &file_kek, "the old KEK file");
    let raw = String::from_utf8(file_kek.clone()).unwrap();
    let raw = raw.trim_end().strip_prefix("kukaku-kek-v1 ").unwrap();
    let raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, raw).unwrap();
    assert_in_no_file(&home, &raw, "the old KEK");
    let verified = ok(hsm.kukaku(&home, &["verify", "--with-keys"]));
    assert!(verified.contains("opened 5"), "{verified}");

    let back = ok(hsm.kukaku(
        &home,
        &[
            "keys",
            "rotate-kek",
            "--reason",
            "out of the HSM",
            "--to-file",
        ],
    ));
    assert!(!home.join("kek.pkcs11").exists(), "{back}");
    let mode = std::fs::metadata(home.join("kek.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{back}");
    let verified = ok(hsm.kukaku(&home, &["verify", "--with-keys"]));
    assert!(verified.contains("opened 5"), "{verified}");
}

/// An HSM KEK does not move to another token or key label in one step (the old object would
/// be left behind): refused with a clear error, nothing changed.
#[test]
fn a_kek_does_not_move_between_two_hsm_keys() {
    let dir = tempfile::tempdir().unwrap();
    let hsm = Hsm::new(dir.path());
    let (config, pin) = hsm.config(dir.path());
    let home = dir.path().join("home");
    let config_arg = config.to_str().unwrap();
    ok(hsm.kukaku(
        &home,
        &["init", "--origin", "hub.test", "--kek-pkcs11", config_arg],
    ));
    hsm.import_five(dir.path(), &home);
    let other = dir.path().join("other.json");
    std::fs::write(
        &other,
        serde_json::json!({
            "module": MODULE,
            "token": "kukaku",
            "key_label": "another-kek",
            "pin_file": pin,
        })
        .to_string(),
    )
    .unwrap();
    let before = std::fs::read(home.join("kek.pkcs11")).unwrap();
    let o = hsm.kukaku(
        &home,
        &["keys", "rotate-kek", "--to-pkcs11", other.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("the KEK is in another HSM"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(home.join("kek.pkcs11")).unwrap(), before);
    let verified = ok(hsm.kukaku(&home, &["verify", "--with-keys"]));
    assert!(verified.contains("opened 5"), "{verified}");
}

fn assert_in_no_file(home: &Path, needle: &[u8], what: &str) {
    for file in walk(home) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "{} holds {what}",
            file.display()
        );
    }
}
