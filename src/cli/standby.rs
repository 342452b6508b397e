//! `kukaku serve` on a replicated cell (issue 31): a server that cannot hold the cell now
//! stands by (another writer holds it, or no leader answers) and takes it when it can; a
//! server whose store is poisoned (fenced by another writer, a commit whose outcome is
//! unknown after a failover) stops serving and stands by again, so that the store it serves
//! next is one opened afresh from what the cell holds. On the embedded engine nothing of
//! this happens: an open either works or fails.

use std::time::Duration;

use anyhow::Result;
use kukaku::store::{Paths, Standby, Store, StoreOptions};
use tokio::sync::watch;

/// How long one try waits for another writer's lease before the standby looks at its stop
/// signal again.
const TRY_PATIENCE: Duration = Duration::from_secs(2);

/// The longest pause between tries while no leader answers.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// Opens the store; on a cell, stands by until it can be opened as the writer. `None` when
/// `stop` said to stop first.
pub(crate) fn open_as_writer(paths: &Paths, stop: &watch::Receiver<bool>) -> Result<Option<Store>> {
    let options = StoreOptions {
        writer_patience: TRY_PATIENCE,
        ..StoreOptions::default()
    };
    let mut said: Option<Standby> = None;
    let mut pause = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            return Ok(None);
        }
        let error = match super::open_with(paths, options.clone()) {
            Ok(store) => {
                if said.is_some() {
                    println!("took over the cell");
                }
                return Ok(Some(store));
            }
            Err(e) => e,
        };
        let Some(why) = error
            .downcast_ref::<kukaku::store::OpenError>()
            .and_then(|e| e.standby())
        else {
            return Err(error);
        };
        match &why {
            Standby::Held(holder) if said.as_ref() != Some(&why) => {
                println!(
                    "standing by: {holder} holds the cell; taking it over when its lease lapses"
                );
                notify_status("standing by: another writer holds the cell");
            }
            Standby::Unreachable => {
                println!(
                    "standing by: the cell answers no writes now ({}); trying again",
                    kukaku::error::report(error.root_cause())
                );
                notify_status("standing by: the cell answers no writes");
                sleep_unless_stopped(pause, stop);
                pause = (pause * 2).min(MAX_PAUSE);
            }
            Standby::Held(_) => {}
        }
        said = Some(why);
    }
}

/// Sleeps `d`, waking early when `stop` says so.
fn sleep_unless_stopped(d: Duration, stop: &watch::Receiver<bool>) {
    let until = std::time::Instant::now() + d;
    while !*stop.borrow() {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// The status line systemd shows (`Type=notify`); nothing without `NOTIFY_SOCKET`.
fn notify_status(status: &str) {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(status)]);
}

/// Resolves once a store that holds a lease is poisoned (fenced, or a commit failed on the
/// cell): it must not serve on. Never for a store on the embedded engine.
pub(crate) async fn cell_lost(store: &Store) {
    if !store.holds_a_lease() {
        return std::future::pending().await;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    while !store.is_poisoned() {
        tick.tick().await;
    }
}

/// A receiver that turns true at SIGINT or SIGTERM, whatever runtime is running then: the
/// signals are watched by a thread of their own for the whole life of the server.
pub(crate) fn stop_signal() -> Result<watch::Receiver<bool>> {
    let (tx, rx) = watch::channel(false);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("kukaku-signals".into())
        .spawn(move || {
            runtime.block_on(async {
                super::serve::shutdown_signal().await;
                let _ = tx.send(true);
            })
        })?;
    Ok(rx)
}
