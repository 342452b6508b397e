//! The intermediate's replicator (`kukaku serve --role intermediate --upstream …`, a child
//! process) is killed with SIGKILL at random points while it pulls a multi-page feed from a
//! hub on loopback, and restarted. In the end every hub snapshot is on the intermediate
//! exactly once, the forwarding receipts cover the hub's log without a gap or an overlap,
//! the witness cosignature reached the hub, and both logs verify.

use crate::common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{pid, small};
use kukaku::api::server::{self, Transport};
use kukaku::api::{self, AppState, Limits, ServerRole};
use kukaku::crypto::credential::{Reach, Role};
use kukaku::flows::import::{Importer, import};
use kukaku::flows::sample;
use kukaku::flows::transmission::Encoding;
use kukaku::store::{Paths, Store, VerifyOptions};

fn kukaku(home: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kukaku"));
    c.arg("--home").arg(home);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_replicator_resumes_without_gaps_or_duplicates() {
    let p = pid("131011");
    let hub_dir = tempfile::tempdir().unwrap();
    let hub = tokio::task::block_in_place(|| {
        let store =
            Store::init(&Paths::under(hub_dir.path()), "hub.kill.example", small()).unwrap();
        store.request_partitions(std::slice::from_ref(&p)).unwrap();
        store.provision(&mut |_, _| {}).unwrap();
        let who = Importer {
            actor: "admin-cli".into(),
            role: "admin".into(),
            route: "test".into(),
            request_id: "-".into(),
        };
        // Enough households for several feed pages of 100 entries.
        for (i, n) in [1200usize, 1000, 800].into_iter().enumerate() {
            let tid = format!("K-{i}");
            let f = sample::transmission(p.as_str(), &tid, n, 40 + i as u64);
            import(
                &store,
                &p,
                &tid,
                Encoding::Utf8,
                f.setai.as_bytes(),
                f.kojin.as_bytes(),
                &who,
            )
            .unwrap();
        }
        Arc::new(store)
    });

    // The intermediate: a real instance made with the CLI.
    let int_dir = tempfile::tempdir().unwrap();
    let home = int_dir.path().join("intermediate");
    for args in [
        vec!["init", "--origin", "intermediate.kill.example"],
        vec!["partitions", "create", "131011"],
    ] {
        let o = kukaku(&home).args(&args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let o = kukaku(&home)
        .args(["public-keys", "--witness"])
        .output()
        .unwrap();
    let witness =
        kukaku::ledger::VerifierKey::parse(String::from_utf8_lossy(&o.stdout).trim()).unwrap();

    let listener = server::bind("127.0.0.1:0".parse().unwrap(), &Transport::PlainLoopback)
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server_task = tokio::spawn(server::serve(
        listener,
        api::router(
            AppState::new(Arc::clone(&hub), ServerRole::Hub).with_witnesses(vec![witness.clone()]),
            Limits::default(),
        ),
        Transport::PlainLoopback,
        Limits::default(),
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(5),
    ));
    let (token, _) = hub
        .issue_credential(
            Role::Replicator,
            Reach::Partitions([p.clone()].into()),
            "intermediate",
            kukaku::store::now_unix_ms() + 3_600_000,
        )
        .unwrap();
    let token_file = int_dir.path().join("token");
    std::fs::write(&token_file, token.to_text().as_bytes()).unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let vkey = hub.verifier_key(&p).unwrap().to_text();
    let start = || {
        kukaku(&home)
            .args(["serve", "--role", "intermediate", "--plain-http-loopback"])
            .args(["--listen", "127.0.0.1:0", "--replicate-every", "1"])
            .args([
                "--upstream",
                &format!("http://{addr}"),
                "--upstream-vkey",
                &vkey,
            ])
            .arg("--upstream-token-file")
            .arg(&token_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };

    // Kill at pseudo-random points: during start-up, in the middle of a sync, between pages.
    let mut seed = 0x9e37_79b9_u64;
    let mut kills = 0;
    let mut progress = Vec::new();
    for _ in 0..12 {
        let mut child = start();
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        tokio::time::sleep(Duration::from_millis(30 + (seed >> 33) % 300)).await;
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        // What a killed replicator left: a consistent prefix of the hub's log.
        let seen = tokio::task::block_in_place(|| {
            let inter = Store::open(&Paths::under(&home), small()).unwrap();
            inter.replica_state(&p).unwrap().map_or(0, |s| s.hub_size)
        });
        progress.push(seen);
    }
    // Progress never went back, and some kill left the copy partway.
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    let full = hub.size(&p).unwrap();
    assert!(
        progress.iter().any(|&s| s > 0 && s < full),
        "no kill landed mid-replication: {progress:?}"
    );

    // Let it finish: the hub grows only while sealed entries are fed (each feed appends a
    // 提供記録), so a hub size stable over several replication rounds means caught up.
    let mut child = start();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = (hub.size(&p).unwrap(), Instant::now());
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let size = hub.size(&p).unwrap();
        if size != last.0 {
            last = (size, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = stop.send(());
    server_task.await.unwrap().unwrap();
    assert!(kills > 0);

    tokio::task::block_in_place(|| {
        let inter = Store::open(&Paths::under(&home), small()).unwrap();
        assert_eq!(
            common::assert_replicated_exactly_once(&hub, &inter, &p),
            3000
        );
        // The witness cosignature of the last accepted checkpoint reached the hub.
        let cosigned = hub
            .latest_cosigned_size(&p)
            .unwrap()
            .expect("no cosignature");
        let note = hub.cosigned_checkpoint_at(&p, cosigned).unwrap().unwrap();
        kukaku::ledger::SignedNote::parse(&note)
            .unwrap()
            .verify_cosignature(&witness)
            .unwrap();
        hub.verify_partition(&p, VerifyOptions { with_keys: true })
            .unwrap();
        inter
            .verify_partition(&p, VerifyOptions { with_keys: true })
            .unwrap();
    });
}
