//! Key management commands and the local admin socket (docs/keys.md).
//!
//! [`execute`] runs one [`AdminRequest`] against an open store. `kukaku keys …` calls it
//! directly when no server runs; while `kukaku serve` runs (it holds the store), the command
//! goes through the server's admin socket instead: a Unix domain socket, mode 0600, answering
//! only the user that owns it, never reachable over TCP. The protocol is one JSON request
//! line in, then JSON [`Reply`] lines out (progress, output, and `done` or `error`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ledger::PartitionId;
use crate::store::{KeyActor, KeyAdminError, PartitionStatus, ProvisionError, ReadError, Store};

mod backup;
mod credentials;
mod export;
mod keys;
mod socket;

pub use socket::{AdminSocket, call, server_listening};

/// Longest request line the socket reads.
const MAX_REQUEST: u64 = 64 * 1024;

/// One admin command: key management, or an audit export (the server holds the store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdminRequest {
    /// DEK versions of the partitions (all active ones when empty).
    Status { partitions: Vec<String> },
    RotateDek {
        partitions: Vec<String>,
        reason: String,
    },
    /// A new KEK (in `to`: a file or an HSM, when the KEK moves), every key rewrapped.
    RotateKek {
        reason: String,
        #[serde(default)]
        to: Option<crate::crypto::instance_kek::KekTarget>,
    },
    /// Starts a signing-key transition (both keys sign), or ends it with `finish`.
    RotateSigningKey { finish: bool, reason: String },
    /// Moves old entries to current keys, at most `rate` entries per second, `chunk`
    /// entries per writer step.
    Reencrypt {
        partitions: Vec<String>,
        reason: String,
        rate: u64,
        chunk: u64,
    },
    Retire {
        partition: String,
        key_id: u32,
        reason: String,
    },
    /// The instance's public keys as kukaku-audit trust-file lines (only the witness vkey,
    /// or only the newest log vkey, if asked).
    PublicKeys { witness: bool, log: bool },
    /// Writes an audit bundle (docs/audit.md) of the partitions (all active ones when
    /// empty) from `from_size` to the new file `out` (an absolute path); with `prove_from`,
    /// each section carries the consistency proof from that size to `from_size`.
    ExportAudit {
        partitions: Vec<String>,
        from_size: u64,
        #[serde(default)]
        prove_from: Option<u64>,
        out: PathBuf,
    },
    /// Issues an API credential and answers its token once. The reach is exactly one of
    /// `partition`, `prefecture`, `partitions` or `all` (as `credentials issue` checks).
    IssueCredential {
        role: String,
        partition: Option<String>,
        prefecture: Option<String>,
        partitions: Vec<String>,
        all: bool,
        label: String,
        expires_in_days: u32,
        /// Hex SHA-256 of the DER client certificate the token is bound to (mTLS).
        client_cert_sha256: Option<String>,
    },
    /// Every credential: id, role, reach, label, expiry, revocation (never a token).
    ListCredentials,
    /// Revokes a credential by id; on a running server its next request gets 401.
    RevokeCredential { id: String },
    /// Backs the instance up into the directory `to` (an absolute path; created if missing),
    /// keeping the newest `keep` backups if given (docs/operations.md).
    Backup {
        to: PathBuf,
        #[serde(default)]
        keep: Option<usize>,
    },
    /// `confirm` must repeat the partition id.
    Destroy {
        partition: String,
        fiscal_year: Option<u16>,
        confirm: String,
        reason: String,
    },
}

/// One line of an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Progress { label: String, pos: u64, len: u64 },
    Line(String),
    Done,
    Error(String),
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    #[error(transparent)]
    Key(#[from] KeyAdminError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Registry(#[from] ProvisionError),
    #[error("partition {0:?}: {1}")]
    BadPartition(String, String),
    #[error("partition {0} is not an active partition of this instance")]
    NotActive(String),
    #[error("stopped before the end; run the same command again to resume")]
    Stopped,
    #[error("admin socket {path}: {error}")]
    Socket {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("admin socket: {0}")]
    Protocol(String),
    #[error("{0}")]
    Remote(String),
    #[error(
        "--prove-from {prove_from} must be above 0 and below --from-size {from} (the auditor's saved size, before the bundle's start)"
    )]
    ProveFrom { prove_from: u64, from: u64 },
    #[error("--from-size {from} is beyond partition {partition}'s size {size}")]
    FromSize {
        from: u64,
        partition: String,
        size: u64,
    },
    #[error("{path}: {error}")]
    File {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Credential(#[from] crate::store::CredentialStoreError),
    #[error("backup")]
    Backup(#[from] crate::store::backup::BackupError),
    #[error(
        "unknown role {0:?}; one of: municipality, continuity-operator, replicator, ops-support, auditor"
    )]
    UnknownRole(String),
    #[error("credential id {0:?} is not 16 hex digits")]
    CredentialId(String),
    #[error("client certificate hash {0:?} is not 64 hex digits")]
    CertificateHash(String),
}

fn partitions(store: &Store, asked: &[String]) -> Result<Vec<PartitionId>, AdminError> {
    let active: Vec<PartitionId> = store
        .partitions()?
        .into_iter()
        .filter(|p| p.status == PartitionStatus::Active)
        .map(|p| p.partition)
        .collect();
    if asked.is_empty() {
        return Ok(active);
    }
    asked
        .iter()
        .map(|s| {
            let p = PartitionId::parse(s)
                .map_err(|e| AdminError::BadPartition(s.clone(), e.to_string()))?;
            if active.contains(&p) {
                Ok(p)
            } else {
                Err(AdminError::NotActive(p.to_string()))
            }
        })
        .collect()
}

fn one(store: &Store, s: &str) -> Result<PartitionId, AdminError> {
    partitions(store, &[s.to_owned()])?
        .pop()
        .ok_or_else(|| AdminError::NotActive(s.to_owned()))
}

/// Where a request's lines and progress go; `false` once nobody listens.
type Out<'a> = &'a mut dyn FnMut(Reply) -> bool;

/// Runs `req` on `store` as `actor`, sending progress and output to `out`. `out` returns
/// `false` once nobody listens; a long job then stops where it is (resumable).
pub fn execute(
    store: &Store,
    req: &AdminRequest,
    actor: &str,
    out: &mut dyn FnMut(Reply) -> bool,
) -> Result<(), AdminError> {
    let who = |reason: &str| KeyActor {
        actor: actor.to_owned(),
        reason: reason.to_owned(),
    };
    match req {
        AdminRequest::Status { partitions: asked } => keys::status(store, asked, out),
        AdminRequest::RotateDek {
            partitions: asked,
            reason,
        } => keys::rotate_deks(store, asked, who(reason), out),
        AdminRequest::RotateKek { reason, to } => {
            keys::rotate_kek(store, who(reason), to.as_ref(), out)
        }
        AdminRequest::RotateSigningKey { finish, reason } => {
            keys::rotate_signing_key(store, *finish, who(reason), out)
        }
        AdminRequest::Reencrypt {
            partitions: asked,
            reason,
            rate,
            chunk,
        } => keys::reencrypt(store, asked, who(reason), (*rate, *chunk), out),
        AdminRequest::PublicKeys { witness, log } => {
            keys::public_keys(store, *witness, *log, out);
            Ok(())
        }
        AdminRequest::ExportAudit {
            partitions: asked,
            from_size,
            prove_from,
            out: path,
        } => export::export_audit(store, asked, (*from_size, *prove_from), path, out),
        AdminRequest::Retire {
            partition,
            key_id,
            reason,
        } => keys::retire(store, partition, *key_id, who(reason), out),
        AdminRequest::Destroy {
            partition,
            fiscal_year,
            confirm,
            reason,
        } => keys::destroy(store, partition, (*fiscal_year, confirm), who(reason), out),
        AdminRequest::Backup { to, keep } => backup::backup(store, to, *keep, out),
        AdminRequest::IssueCredential { .. }
        | AdminRequest::ListCredentials
        | AdminRequest::RevokeCredential { .. } => credentials::execute(store, req, out),
    }
}
