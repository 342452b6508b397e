//! The suites that run processes, one test binary: the `kukaku` binary's commands, the demo's
//! scan for protected identifiers, key tools through a running server's admin socket, and the
//! SIGKILL loops (a library child, `kukaku serve`, the replicator) that check no acknowledged
//! append is lost.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: the panic is its report"
)]

#[path = "../common/mod.rs"]
mod common;

mod backup_cli;
#[cfg(feature = "postgres")]
mod cell_failover;
mod cli;
mod config;
mod crash;
mod hsm;
mod keys_cli;
mod metrics;
#[cfg(feature = "postgres")]
mod on_postgres;
mod replicator_kill;
mod scan;
mod serve_crash;
mod tls_reload;
