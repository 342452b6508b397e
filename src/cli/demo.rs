//! `kukaku demo`: a hub and an intermediate on embedded RocksDB with sample data: flow 5
//! (transmissions, a refused one, replication, the 資格履歴ファイル), flow 4 (a move, the
//! continuity job), the audit bundle; then both servers on loopback with the web terminal
//! and tokens printed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use kukaku::api::{self, AppState, Limits, ServerRole, server};
use kukaku::crypto::credential::{Reach, Role};
use kukaku::flows::import::{ImportError, Importer, import};
use kukaku::flows::replicate;
use kukaku::flows::sample::{self, DEMO_MUNICIPALITIES};
use kukaku::flows::transmission::Encoding;
use kukaku::ledger::{PartitionId, Seq};
use kukaku::store::{Paths, Store, StoreOptions};

use super::serve::shutdown_signal;
use super::verify::verify_all;
use super::{Outcome, partition};

/// `kukaku demo`: the hub and the intermediate on embedded stores with sample data, every
/// flow once, then both served on loopback with tokens printed (unless `no_serve`).
pub(crate) fn demo(listen: std::net::SocketAddr, no_serve: bool) -> Result<Outcome> {
    let (_temp, dir_path) = demo_dir()?;
    println!("demo instances in {}", dir_path.display());
    let hub_paths = Paths::under(&dir_path.join("hub"));
    let int_paths = Paths::under(&dir_path.join("intermediate"));
    let hub = Store::init(&hub_paths, "hub.kokuho-13.example", StoreOptions::default())?;
    let inter = Store::init(&int_paths, "intermediate.example", StoreOptions::default())?;
    let ids = DEMO_MUNICIPALITIES
        .iter()
        .map(|(p, ..)| partition(p))
        .collect::<Result<Vec<_>>>()?;
    for store in [&hub, &inter] {
        store.request_partitions(&ids)?;
        store.provision(&mut |_, _| {})?;
        for ((_, name, _), p) in DEMO_MUNICIPALITIES.iter().zip(&ids) {
            store.set_partition_name(p, name)?;
        }
    }
    println!("\n== 5-②: municipalities send 異動 files to the hub (validated, all or nothing)");
    let who = Importer {
        actor: "admin-cli".into(),
        role: "admin".into(),
        route: "kukaku demo".into(),
        request_id: "-".into(),
    };
    demo_transmissions(&hub, &ids, &who)?;
    demo_refused_file(&hub, &ids, &who)?;
    println!("\n== flow 4: a household moves 千代田区 → 中央区; 千代田区 sends its 高額該当情報");
    demo_flow4(&hub, &hub_paths, &who)?;

    let hub = Arc::new(hub);
    let inter = Arc::new(inter);
    let runtime = server::runtime(server::DEFAULT_REQUEST_NICE)?;
    let ok = runtime.block_on(demo_online(
        Arc::clone(&hub),
        Arc::clone(&inter),
        &ids,
        &int_paths,
        &dir_path,
        listen,
        no_serve,
    ))?;
    drop(runtime);
    for store in [hub, inter] {
        if let Ok(s) = Arc::try_unwrap(store) {
            drop(s);
        }
    }
    Ok(ok)
}

/// A temporary directory, removed at the end; `KUKAKU_DEMO_DIR` keeps the instances in a
/// given empty directory instead (the protected-identifier scan test reads them).
fn demo_dir() -> Result<(Option<tempfile::TempDir>, PathBuf)> {
    Ok(
        match std::env::var_os("KUKAKU_DEMO_DIR").map(PathBuf::from) {
            Some(d) => {
                std::fs::create_dir_all(&d)?;
                if std::fs::read_dir(&d)?.next().is_some() {
                    anyhow::bail!("KUKAKU_DEMO_DIR {} is not empty", d.display());
                }
                (None, d)
            }
            None => {
                let t = tempfile::tempdir()?;
                let path = t.path().to_owned();
                (Some(t), path)
            }
        },
    )
}

/// Flow 5-②: each municipality's sample transmission imported into the hub (one in CP932).
fn demo_transmissions(hub: &Store, ids: &[PartitionId], who: &Importer) -> Result<()> {
    for (i, ((code, name, _), p)) in DEMO_MUNICIPALITIES.iter().zip(ids).enumerate() {
        let files = sample::demo_transmission(i).context("demo municipality")?;
        let tid = files.transmission_id.clone();
        let enc = if i == 2 {
            Encoding::Cp932
        } else {
            Encoding::Utf8
        };
        let out = import(
            hub,
            p,
            &tid,
            enc,
            &sample::encode(&files.setai, enc),
            &sample::encode(&files.kojin, enc),
            who,
        )?;
        println!(
            "  {name} ({code}): {} households stored at seq {}.. ({}), access record {}",
            out.households,
            out.first_seq,
            enc.name(),
            out.access_record_seq.unwrap_or_default()
        );
    }
    Ok(())
}

/// A bad 個人ファイル (a wrong check digit, an impossible date): refused whole, every problem
/// listed, no value shown.
fn demo_refused_file(hub: &Store, ids: &[PartitionId], who: &Importer) -> Result<()> {
    let bad = sample::demo_refused();
    let first = bad.kojin_nos.first().context("sample has persons")?;
    let wrong_check = format!(
        "{}{}",
        first.get(..11).unwrap_or_default(),
        (first.as_bytes().get(11).map_or(0, |d| d - b'0') + 1) % 10
    );
    let broken = bad
        .kojin
        .replacen(first.as_str(), &wrong_check, 1)
        .replacen("2024-04-01", "2024-02-30", 1);
    let p0 = ids.first().context("partition")?;
    match import(
        hub,
        p0,
        "131011-2024-0002",
        Encoding::Utf8,
        bad.setai.as_bytes(),
        broken.as_bytes(),
        who,
    ) {
        Err(ImportError::Rejected(r)) => {
            println!("  a bad 個人ファイル is refused, nothing stored:");
            for pr in &r.problems {
                println!(
                    "    {} line {} {}: {}",
                    pr.file.name(),
                    pr.line,
                    pr.field.unwrap_or("-"),
                    pr.reason
                );
            }
        }
        other => anyhow::bail!("the bad file was not refused: {other:?}"),
    }

    Ok(())
}

/// Flow 4: a household moves 千代田区 → 中央区, 千代田区 sends its 高額該当情報, and the
/// continuity job proposes the move.
fn demo_flow4(hub: &Store, hub_paths: &Paths, who: &Importer) -> Result<()> {
    let (a, b) = (partition("131011")?, partition("131029")?);
    let moved = sample::demo_move();
    for (p, f) in [(&a, &moved.a), (&b, &moved.b)] {
        let out = import(
            hub,
            p,
            &f.transmission_id,
            Encoding::Utf8,
            f.setai.as_bytes(),
            f.kojin.as_bytes(),
            who,
        )?;
        println!(
            "  {p}: {} households ({})",
            out.households, f.transmission_id
        );
    }
    let out = kukaku::flows::kogaku::import(
        hub,
        &a,
        &format!("{a}-KOGAKU"),
        Encoding::Utf8,
        moved.kogaku_a.as_bytes(),
        who,
    )?;
    println!("  {a}: 高額該当 records of {} household(s)", out.households);
    let tokyo = super::admin_scope(hub_paths)?
        .prefecture("13")
        .context("prefecture")?;
    let as_of = kukaku::domain::text::parse_date(sample::AS_OF).context("sample date")?;
    let report = kukaku::flows::continuity::extract(
        hub,
        &tokyo,
        &kukaku::domain::continuity::Rules::default(),
        who,
        as_of,
    )?;
    println!(
        "  the continuity job as of {} read {} households of {} municipalities and found {} candidate(s):",
        report.as_of,
        report.households_read,
        report.partitions,
        report.candidates.len()
    );
    for c in &report.candidates {
        println!(
            "    in {} (seq {}): from {}, 参酌基準 case {}, period {}, suggestion {}",
            c.partition,
            c.seq.unwrap_or_default(),
            c.old_hokensha_no,
            c.case,
            c.period,
            c.suggestion
        );
    }
    Ok(())
}

/// One of the demo's servers: plain HTTP on loopback until `stop` turns true.
async fn serve_plain(
    listen: std::net::SocketAddr,
    state: AppState,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(
    std::net::SocketAddr,
    tokio::task::JoinHandle<Result<(), server::ServeError>>,
)> {
    let listener = server::bind(listen, &server::Transport::PlainLoopback).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(server::serve(
        listener,
        api::router(state, Limits::default()),
        server::Transport::PlainLoopback,
        Limits::default(),
        async move {
            let _ = stop.changed().await;
        },
        Duration::from_secs(30),
    ));
    Ok((addr, task))
}

/// The demo's ledger part: a signed checkpoint and an inclusion proof checked against the
/// pinned key, then an audit bundle and a trust file for kukaku-audit.
fn demo_ledger_and_audit(
    hub: &Store,
    inter: &Store,
    ids: &[PartitionId],
    dir: &std::path::Path,
) -> Result<()> {
    let p = ids.first().context("partition")?;
    let key = hub.verifier_key(p).context("hub key")?;
    println!("\n== the ledger: {p}'s signed checkpoint (C2SP) and verifier key");
    print!("{}", hub.checkpoint(p)?.context("no checkpoint")?);
    println!("{}", key.to_text());
    let proof = hub.prove_inclusion(p, Seq(2), None)?;
    proof.verify_with_key(&key)?;
    println!(
        "\n== RFC 9162 inclusion proof of seq 2 (a household snapshot) in tree size {}: {} hashes, verified",
        proof.tree_size,
        proof.proof.as_ref().map_or(0, Vec::len)
    );
    println!("{}", serde_json::to_string_pretty(&proof)?);

    let bundle = dir.join("hub-audit.bundle");
    let file = std::fs::File::create_new(&bundle)?;
    hub.export_audit(ids, std::io::BufWriter::new(file), &mut |_| {})?;
    let trust = dir.join("trust.txt");
    std::fs::write(
        &trust,
        format!(
            "# pinned keys for kukaku-audit (docs/audit.md)\nlog {}\nwitness {}\n",
            hub.log_key().context("hub key")?.to_text(),
            inter.cosigner_key().to_text()
        ),
    )?;
    let auditor = std::env::current_exe()
        .ok()
        .map(|e| e.with_file_name("kukaku-audit"))
        .filter(|a| a.exists())
        .map_or_else(
            || "cargo run -p kukaku-audit --".to_owned(),
            |a| a.display().to_string(),
        );
    println!(
        "\n== audit bundle of the hub (headers, envelopes, cosigned checkpoints; no keys, no plaintext)\n  \
         {}\n  verify it offline, requiring the intermediate's cosignature:\n  \
         {auditor} verify {} --trust {} --quorum 1",
        bundle.display(),
        bundle.display(),
        trust.display()
    );
    Ok(())
}

async fn demo_online(
    hub: Arc<Store>,
    inter: Arc<Store>,
    ids: &[PartitionId],
    int_paths: &Paths,
    dir: &std::path::Path,
    listen: std::net::SocketAddr,
    no_serve: bool,
) -> Result<Outcome> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let hub_state =
        AppState::new(Arc::clone(&hub), ServerRole::Hub).with_witnesses(vec![inter.cosigner_key()]);
    let (hub_addr, hub_task) = serve_plain(listen, hub_state, stop_rx.clone()).await?;

    let (client, upstream) = replicate_once(&hub, &inter, ids, hub_addr).await?;

    export_history_file(&inter, ids, int_paths)?;

    println!("\n== verification of both logs (chain, tree, checkpoints, commitments)");
    let ok = tokio::task::block_in_place(|| -> Result<Outcome> {
        println!("hub:");
        let a = verify_all(&hub, None, true)?;
        println!("intermediate:");
        Ok(a.and(verify_all(&inter, None, true)?))
    })?;
    if ok == Outcome::Passed {
        tokio::task::block_in_place(|| demo_ledger_and_audit(&hub, &inter, ids, dir))?;
    }
    if ok == Outcome::Failed || no_serve {
        let _ = stop_tx.send(true);
        hub_task.await??;
        return Ok(ok);
    }

    // Serve both, with tokens to try.
    let int_listen = std::net::SocketAddr::new(hub_addr.ip(), hub_addr.port().wrapping_add(1));
    let int_state = AppState::new(Arc::clone(&inter), ServerRole::Intermediate);
    let (int_addr, int_task) = serve_plain(int_listen, int_state, stop_rx).await?;
    let replicator = {
        let inter = Arc::clone(&inter);
        tokio::spawn(async move {
            let (every, max_backoff) = (Duration::from_secs(5), Duration::from_secs(60));
            replicate::run(&inter, &client, &upstream, every, max_backoff).await
        })
    };
    let tokens = demo_tokens(&hub, &inter, ids)?;
    let hub_home = dir.join("hub");
    let admin = kukaku::admin::AdminSocket::bind(&Paths::under(&hub_home).admin_socket)?;
    let admin_task = tokio::spawn(admin.run(Arc::clone(&hub)));
    print_instructions(
        &format!("http://{hub_addr}"),
        &format!("http://{int_addr}"),
        &tokens,
        &hub_home,
    );
    shutdown_signal().await;
    admin_task.abort();
    let _ = admin_task.await;
    let _ = stop_tx.send(true);
    hub_task.await??;
    int_task.await??;
    replicator.abort();
    let _ = replicator.await;
    println!("stopped");
    Ok(Outcome::Passed)
}

/// 5-③/④: the intermediate pulls the hub's signed feed for every partition, verifies every
/// page, stores the copies and cosigns; the replicator's client and the pinned hub key.
async fn replicate_once(
    hub: &Arc<Store>,
    inter: &Arc<Store>,
    ids: &[PartitionId],
    hub_addr: std::net::SocketAddr,
) -> Result<(
    kukaku::api::client::HubClient,
    kukaku::flows::replicate::Upstream,
)> {
    use kukaku::flows::replicate::{Upstream, sync_partition};
    let day = 86_400_000;
    println!("\n== 5-③/④: the intermediate pulls the hub's signed feed and verifies every page");
    let (rep_token, _) = hub.issue_credential(
        Role::Replicator,
        Reach::Partitions(ids.iter().cloned().collect()),
        "demo intermediate",
        kukaku::store::now_unix_ms() + day,
    )?;
    let client = kukaku::api::client::HubClient::new(
        &format!("http://{hub_addr}"),
        rep_token.to_text(),
        None,
        None,
    )?;
    let first = ids.first().context("partition")?;
    let upstream =
        Upstream::from_partition_vkey(&hub.verifier_key(first).context("hub key")?.to_text())
            .context("hub key")?;
    for p in ids {
        let r = sync_partition(inter, &client, &upstream, p, 100).await?;
        // The hub recorded each hand-over (提供記録); one more round takes those records in.
        sync_partition(inter, &client, &upstream, p, 100).await?;
        let cosigned = match (&r.cosigned, hub.latest_cosigned_size(p)?) {
            (Some(Ok(())), Some(size)) => format!("hub checkpoint {size} cosigned"),
            (Some(Err(e)), _) => format!("cosignature not taken: {e}"),
            _ => "nothing to cosign".to_owned(),
        };
        println!(
            "  {p}: {} pages, {} copies verified and stored; hub 提供記録 appended; {cosigned}",
            r.pages, r.copies
        );
    }

    Ok((client, upstream))
}

/// 5-⑤: ops-support exports the 資格履歴ファイル from the intermediate (the file is returned,
/// never stored; the manifest holds no personal data).
fn export_history_file(inter: &Store, ids: &[PartitionId], int_paths: &Paths) -> Result<()> {
    println!("\n== 5-⑤: ops-support exports the 資格履歴ファイル (file returned, never stored)");
    let admin = super::admin_scope(int_paths)?;
    let scopes: Vec<_> = ids.iter().map(|p| admin.partition(p)).collect();
    let exporter = kukaku::flows::history::Exporter {
        recipient: "admin-cli".into(),
        request_id: "-".into(),
    };
    let (file, manifest) = tokio::task::block_in_place(|| {
        kukaku::flows::history::export(inter, &scopes, 0, &exporter, &mut |_, _| {})
    })?;
    println!(
        "  {} rows, {} bytes; manifest (no personal data):\n{}",
        manifest.rows,
        file.len(),
        serde_json::to_string_pretty(&manifest)?
    );
    drop(file);

    Ok(())
}

/// The demo's credentials, valid a day: two clerks of two municipalities, an auditor, the
/// continuity operator, ops-support, and a second clerk of 中央区.
fn demo_tokens(
    hub: &Store,
    inter: &Store,
    ids: &[PartitionId],
) -> Result<Vec<(&'static str, zeroize::Zeroizing<String>)>> {
    let day = 86_400_000;
    let expires = kukaku::store::now_unix_ms() + day;
    let mut tokens = Vec::new();
    for (store, role, reach, label) in [
        (
            hub,
            Role::Municipality,
            Reach::Partition(partition("131011")?),
            "千代田区 窓口 佐藤 (clerk)",
        ),
        (
            hub,
            Role::Municipality,
            Reach::Partition(partition("131029")?),
            "中央区 窓口 山田 (clerk)",
        ),
        (hub, Role::Auditor, Reach::All, "auditor (hub)"),
        (
            hub,
            Role::ContinuityOperator,
            Reach::Prefecture("13".into()),
            "continuity operator (東京都)",
        ),
        (
            inter,
            Role::OpsSupport,
            Reach::Partitions(ids.iter().cloned().collect()),
            "ops-support (intermediate)",
        ),
        // A second clerk of 中央区: each person logs in with their own credential, and
        // decisions record who made them.
        (
            hub,
            Role::Municipality,
            Reach::Partition(partition("131029")?),
            "中央区 窓口 鈴木 (clerk)",
        ),
    ] {
        let (token, _) = store.issue_credential(role, reach, label, expires)?;
        tokens.push((label, token.to_text()));
    }
    Ok(tokens)
}

/// What to try against the running servers: curl commands, key management through the
/// admin socket, and flow 4 at the terminal.
fn print_instructions(
    hub_base: &str,
    int_base: &str,
    tokens: &[(&'static str, zeroize::Zeroizing<String>)],
    hub_home: &std::path::Path,
) {
    let t = |i: usize| {
        tokens
            .get(i)
            .map(|(_, t)| t.to_string())
            .unwrap_or_default()
    };
    println!("\nhub {hub_base}, intermediate {int_base} (replicating every 5 s); Ctrl-C to stop");
    println!("credentials (demo only; valid 24 h):");
    for (label, token) in tokens {
        println!("  {label}: {}", &**token);
    }
    println!("\ntry:");
    println!(
        "  curl -s -H 'Authorization: Bearer {}' {hub_base}/v1/checkpoint",
        t(0)
    );
    println!(
        "  curl -s -H 'Authorization: Bearer {}' {hub_base}/v1/transmissions/131011-2024-0001",
        t(0)
    );
    println!(
        "  curl -s -H 'Authorization: Bearer {}' {hub_base}/v1/checkpoint",
        t(1)
    );
    println!(
        "  curl -s -H 'Authorization: Bearer {}' {hub_base}/v1/audit/partitions",
        t(2)
    );
    println!(
        "  curl -s -H 'Authorization: Bearer {}' -H 'content-type: application/json' -d '{{}}' {int_base}/v1/exports/history-file",
        t(4)
    );
    let exe =
        std::env::current_exe().map_or_else(|_| "kukaku".to_owned(), |e| e.display().to_string());
    println!("\nkey management on the running hub (docs/keys.md; through its admin socket):");
    let home = hub_home.display();
    for cmd in [
        "keys status --partition 131011".to_owned(),
        "keys rotate-dek --all --reason 'demo rotation'".to_owned(),
        "keys reencrypt --all".to_owned(),
        "keys rotate-kek".to_owned(),
        "keys destroy --partition 131037 --reason 'retention period ended'".to_owned(),
    ] {
        println!("  {exe} --home {home} {cmd}");
    }
    println!("\nflow 4 at the 中央区 terminal (a browser):");
    println!(
        "  1. open {hub_base}/terminal/login and log in with a 中央区 clerk token above (each clerk has their own)"
    );
    println!("  2. open a candidate in 継続候補世帯リスト and send a 確定指示");
    println!(
        "  3. the 国保連合会 confirms and carries over the 高額該当回数: log in at {hub_base}/terminal/login with the continuity operator's token (the console) and press 確定処理を実行, or:"
    );
    println!(
        "     curl -s -H 'Authorization: Bearer {}' -H 'content-type: application/json' -d '{{}}' {hub_base}/v1/continuity/confirm",
        t(3)
    );
    println!(
        "  4. 確定結果, 継続世帯確定リスト (print to PDF) and 引継情報連携ファイル are on the terminal"
    );
}
