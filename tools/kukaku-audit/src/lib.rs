//! kukaku-audit: verifies kukaku audit bundles and proofs offline, against pinned keys.
//!
//! It links only kukaku's pure `ledger` (no RocksDB, tokio, axum, aes-gcm, no key handling):
//! it can check structure, hashes, signatures and cosignatures, never decrypt. The guide is
//! docs/audit.md.

pub mod audit;
pub mod pages;
pub mod proof;
pub mod report;
mod section;
pub mod state;
pub mod trust;

pub use audit::{AuditError, Options, Report, verify_bundle};
pub use proof::{ProofReport, verify_proof};
pub use state::State;
pub use trust::Trust;
