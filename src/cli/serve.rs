//! `kukaku serve`: the hub's or the intermediate's HTTP server, its admin socket, and the
//! intermediate's replicator.

use anyhow::{Context, Result};
use kukaku::api::{self, AppState, Limits, ServerRole, server};
use kukaku::store::Store;
use std::sync::Arc;

use crate::*;

/// What the intermediate's replicator needs.
pub(crate) struct ReplicatorConfig {
    client: kukaku::api::client::HubClient,
    upstream: kukaku::flows::replicate::Upstream,
    every: std::time::Duration,
    max_backoff: std::time::Duration,
}

pub(crate) fn replicator_config(url: &str, a: &UpstreamArgs) -> Result<ReplicatorConfig> {
    if a.upstream_vkey.is_empty() {
        anyhow::bail!("--upstream needs --upstream-vkey (pins the hub's checkpoint key)");
    }
    let vkeys: Vec<&str> = a.upstream_vkey.iter().map(String::as_str).collect();
    let upstream = kukaku::flows::replicate::Upstream::from_partition_vkeys(&vkeys)
        .context("--upstream-vkey is not a hub partition verifier key (all of one origin)")?;
    let token_file = a
        .upstream_token_file
        .as_deref()
        .context("--upstream needs --upstream-token-file")?;
    let token = kukaku::api::client::read_token_file(token_file)?;
    let identity = a
        .upstream_client_cert
        .as_deref()
        .zip(a.upstream_client_key.as_deref());
    let client =
        kukaku::api::client::HubClient::new(url, token, a.upstream_ca.as_deref(), identity)?;
    Ok(ReplicatorConfig {
        client,
        upstream,
        every: std::time::Duration::from_secs(a.replicate_every.max(1)),
        max_backoff: std::time::Duration::from_secs(
            a.replicate_max_backoff.max(a.replicate_every.max(1)),
        ),
    })
}

pub(crate) fn serve(
    (store, admin_socket): (Store, &std::path::Path),
    role: ServerRole,
    listen: std::net::SocketAddr,
    transport: server::Transport,
    (limits, request_nice): (Limits, u8),
    (witnesses, rules, session_idle): (
        Vec<kukaku::ledger::VerifierKey>,
        kukaku::domain::continuity::Rules,
        std::time::Duration,
    ),
    replicator: Option<ReplicatorConfig>,
) -> Result<()> {
    let store = Arc::new(store);
    // Started after the store (so after its writer thread): the request threads run below it.
    let runtime = server::runtime(request_nice)?;
    runtime.block_on(async {
        let listener = server::bind(listen, &transport).await?;
        let admin = kukaku::admin::AdminSocket::bind(admin_socket)?;
        println!(
            "admin socket {} (mode 0600): `kukaku keys …` runs through this server",
            admin.path().display()
        );
        let admin_task = tokio::spawn(admin.run(Arc::clone(&store)));
        let scheme = match transport {
            server::Transport::Tls(_) => "https",
            server::Transport::PlainLoopback => "http",
        };
        let app = api::router(
            AppState::new(Arc::clone(&store), role)
                .with_witnesses(witnesses)
                .with_continuity_rules(rules)
                .with_session_idle(session_idle)
                .with_secure_cookies(matches!(transport, server::Transport::Tls(_))),
            limits,
        );
        println!(
            "kukaku {} serving {scheme}://{} (Ctrl-C to stop)",
            role.name(),
            listener.local_addr()?
        );
        let replicating = replicator.map(|r| {
            let store = Arc::clone(&store);
            println!("replicating from the hub every {} s", r.every.as_secs());
            tokio::spawn(async move {
                kukaku::flows::replicate::run(
                    &store,
                    &r.client,
                    &r.upstream,
                    r.every,
                    r.max_backoff,
                )
                .await
            })
        });
        server::serve(
            listener,
            app,
            transport,
            limits,
            shutdown_signal(),
            std::time::Duration::from_secs(30),
        )
        .await?;
        admin_task.abort();
        let _ = admin_task.await;
        if let Some(task) = replicating {
            task.abort();
            let _ = task.await;
        }
        anyhow::Ok(())
    })?;
    drop(runtime);
    // Every handler has finished: dropping the last reference drains the writer's queue.
    match Arc::try_unwrap(store) {
        Ok(store) => drop(store),
        Err(_) => eprintln!("warning: store still referenced at shutdown"),
    }
    println!("stopped");
    Ok(())
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
