//! Crash loop: a child process appends under load while it also rotates DEKs, re-encrypts
//! and rotates the KEK, and is killed with SIGKILL at pseudo-random points; after each
//! reopen every acknowledged append is present, no partial batch is visible, every body
//! decrypts and verify passes. 3 kills by default (CI); `KUKAKU_CRASH_KILLS=200` for the full
//! loop (`tools/crashloop.sh`).

use crate::common;
use common::{pid, small};

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use kukaku::crypto::{AdminScope, Kek};
use kukaku::ledger::Kind;
use kukaku::store::{NewEntry, Paths, Store, VerifyOptions};

/// Runs only as the child of `sigkill_loses_no_acknowledged_append`.
#[test]
fn crash_child() {
    let Ok(home) = std::env::var("KUKAKU_CRASH_HOME") else {
        return;
    };
    let store = Store::open(&Paths::under(std::path::Path::new(&home)), small()).unwrap();
    let out = std::sync::Mutex::new(std::io::stdout());
    std::thread::scope(|s| {
        // Key management under the same load: a crash may land inside any of it.
        let store_ref = &store;
        s.spawn(move || {
            let who = || kukaku::store::KeyActor {
                actor: "crash-test".into(),
                reason: "load".into(),
            };
            for i in 0u32.. {
                let p = pid(if i % 2 == 0 { "131011" } else { "380014" });
                store_ref.rotate_deks(&p, who()).unwrap();
                let _ = store_ref.reencrypt(&p, who(), 16, &mut |_| true);
                if i % 5 == 4 {
                    let _ = store_ref.rotate_kek(who());
                }
            }
        });
        for t in 0..4u32 {
            let (store, out) = (&store, &out);
            s.spawn(move || {
                let p = pid(if t % 2 == 0 { "131011" } else { "380014" });
                for i in 0u32.. {
                    let body = format!("t{t} i{i}").into_bytes();
                    let entries = vec![
                        NewEntry::new(Kind::HOUSEHOLD_SNAPSHOT, 0, None, body.clone()).unwrap(),
                        NewEntry::new(Kind::ACCESS_RECORD, 0, None, body).unwrap(),
                    ];
                    let r = store.append(&p, entries).unwrap();
                    let mut o = out.lock().unwrap();
                    writeln!(o, "ack {} {} {}", p, r.entries[0].0, r.entries[1].0).unwrap();
                    o.flush().unwrap();
                }
            });
        }
    });
}

#[test]
fn sigkill_loses_no_acknowledged_append() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(dir.path());
    {
        let store = Store::init(&paths, "hub.test", small()).unwrap();
        store
            .request_partitions(&[pid("131011"), pid("380014")])
            .unwrap();
        store.provision(&mut |_, _| {}).unwrap();
    }
    let kills: usize = std::env::var("KUKAKU_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut checked = std::collections::HashMap::new();
    for round in 0..kills {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let kill_after = 1 + (seed % 300) as usize;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "crash::crash_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("KUKAKU_CRASH_HOME", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let reader = BufReader::new(child.stdout.take().unwrap());
        let mut acked = Vec::new();
        for line in reader.lines() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("ack ") {
                let f: Vec<&str> = rest.split(' ').collect();
                acked.push((
                    pid(f[0]),
                    f[1].parse::<u64>().unwrap(),
                    f[2].parse::<u64>().unwrap(),
                ));
                if acked.len() >= kill_after {
                    break;
                }
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let store = Store::open(&paths, small()).unwrap();
        assert!(store.quarantined().is_empty(), "{:?}", store.quarantined());
        let kek = Kek::load_file(&paths.kek).unwrap();
        let admin = AdminScope::from_kek(&kek);
        for (p, a, b) in &acked {
            let scope = admin.partition(p);
            assert_eq!(
                store.read_entry(&scope, *a).unwrap().header.kind,
                Kind::HOUSEHOLD_SNAPSHOT
            );
            assert_eq!(
                store.read_entry(&scope, *b).unwrap().header.kind,
                Kind::ACCESS_RECORD
            );
        }
        for p in [pid("131011"), pid("380014")] {
            let size = store.size(&p).unwrap();
            // No partial batch: every two-entry append is whole (after genesis and key event).
            // Entries checked in an earlier round are not read again.
            let scope = admin.partition(&p);
            let from = checked.insert(p.clone(), size).unwrap_or(2);
            for seq in from..size {
                let kind = store.read_entry(&scope, seq).unwrap().header.kind;
                if kind == Kind::HOUSEHOLD_SNAPSHOT {
                    assert!(seq + 1 < size, "round {round}: partial batch at {seq}");
                    // Its access record comes right after it (open: no key event between).
                    let next = store.read_entry(&scope, seq + 1).unwrap().header.kind;
                    assert_eq!(
                        next,
                        Kind::ACCESS_RECORD,
                        "round {round}: partial batch at {seq}"
                    );
                }
            }
            store
                .verify_partition(&p, VerifyOptions { with_keys: true })
                .unwrap();
        }
    }
}
