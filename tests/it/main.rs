//! The in-process suites, one test binary: the store, the flows and the HTTP API through
//! `Router::oneshot` and real loopback listeners, vectors, fuzzing and the model test. One
//! binary links RocksDB once (it was 14 binaries) and runs the suites side by side.
//!
//! Elsewhere: the suites that start processes or SIGKILL them (`tests/process`), the hostile
//! clients (`tests/hostile.rs`, alone because it measures its own process's memory) and the
//! browser test (`tests/terminal_browser.rs`, alone because it needs Chromium).
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: the panic is its report"
)]

#[path = "../common/mod.rs"]
mod common;

mod api;
mod backup;
mod continuity;
mod corruption;
mod faults;
mod flow5_e2e;
mod flow5_validation;
mod fuzz;
mod golden;
mod keys;
mod kogaku;
mod merkle_vectors;
mod model;
#[cfg(feature = "postgres")]
mod on_postgres;
mod placement;
mod store;
mod terminal;
