//! The `kukaku` binary's subcommands that are too long for `main.rs`, one file each.

pub(crate) mod demo;
