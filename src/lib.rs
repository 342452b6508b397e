//! kukaku (区画): a secure append-only ledger store for the 委託区画 of 国民健康保険.
//!
//! Each partition is an encrypted RocksDB column family with its own keys; every change is a
//! hash-chained entry in an RFC 9162 Merkle tree under signed C2SP checkpoints.
//! docs/ARCHITECTURE.md is the map; docs/format.md the byte-exact formats.
//!
//! Dependencies point one way: `ledger ← crypto ← store ← api ← main`; `domain` is pure
//! validation.
//! With `--no-default-features` only `ledger` and `domain` build: no RocksDB, no keys, no
//! decryption.
#![forbid(unsafe_code)]

pub mod domain;
pub mod error;
pub mod ledger;

#[cfg(feature = "server")]
pub mod admin;
#[cfg(feature = "server")]
pub mod api;
#[cfg(feature = "server")]
pub mod crypto;
#[cfg(feature = "server")]
pub mod flows;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod telemetry;
