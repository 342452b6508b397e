//! The `kukaku` binary's subcommands, one file each; `main.rs` keeps the argument
//! definitions, the dispatch and the helpers they share (opening a store, parsing a
//! partition id, printing an error chain).

pub(crate) mod continuity;
pub(crate) mod demo;
pub(crate) mod export;
pub(crate) mod import;
pub(crate) mod keys;
pub(crate) mod partitions;
pub(crate) mod serve;
