//! Key management commands and the local admin socket (docs/keys.md).
//!
//! [`execute`] runs one [`AdminRequest`] against an open store. `kukaku keys …` calls it
//! directly when no server runs; while `kukaku serve` runs (it holds the store), the command
//! goes through the server's admin socket instead: a Unix domain socket, mode 0600, answering
//! only the user that owns it, never reachable over TCP. The protocol is one JSON request
//! line in, then JSON [`Reply`] lines out (progress, output, and `done` or `error`).

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::ledger::PartitionId;
use crate::store::{
    DestroyScope, KeyActor, KeyAdminError, PartitionStatus, ProvisionError, ReadError, Store,
};

mod credentials;

/// Longest request line the socket reads.
const MAX_REQUEST: u64 = 64 * 1024;

/// One admin command: key management, or an audit export (the server holds the store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdminRequest {
    /// DEK versions of the partitions (all active ones when empty).
    Status {
        partitions: Vec<String>,
    },
    RotateDek {
        partitions: Vec<String>,
        reason: String,
    },
    RotateKek {
        reason: String,
    },
    /// Starts a signing-key transition (both keys sign), or ends it with `finish`.
    RotateSigningKey {
        finish: bool,
        reason: String,
    },
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
    PublicKeys {
        witness: bool,
        log: bool,
    },
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
    RevokeCredential {
        id: String,
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
        AdminRequest::Status { partitions: asked } => status(store, asked, out),
        AdminRequest::RotateDek {
            partitions: asked,
            reason,
        } => rotate_deks(store, asked, who(reason), out),
        AdminRequest::RotateKek { reason } => {
            let r = store.rotate_kek(who(reason))?;
            out(Reply::Line(format!(
                "rewrapped {} key(s) under KEK {} (was {}); {} partition(s) got a rewrap event; the old KEK file is destroyed",
                r.keys, r.new_fingerprint, r.old_fingerprint, r.partitions
            )));
            Ok(())
        }
        AdminRequest::RotateSigningKey { finish, reason } => {
            rotate_signing_key(store, *finish, who(reason), out)
        }
        AdminRequest::Reencrypt {
            partitions: asked,
            reason,
            rate,
            chunk,
        } => reencrypt(store, asked, who(reason), (*rate, *chunk), out),
        AdminRequest::PublicKeys { witness, log } => {
            public_keys(store, *witness, *log, out);
            Ok(())
        }
        AdminRequest::ExportAudit {
            partitions: asked,
            from_size,
            prove_from,
            out: path,
        } => export_audit(store, asked, (*from_size, *prove_from), path, out),
        AdminRequest::Retire {
            partition,
            key_id,
            reason,
        } => {
            let p = one(store, partition)?;
            store.retire(&p, *key_id, who(reason))?;
            out(Reply::Line(format!(
                "{p}: key {key_id} retired (its wrapped key is removed)"
            )));
            Ok(())
        }
        AdminRequest::Destroy {
            partition,
            fiscal_year,
            confirm,
            reason,
        } => destroy(store, partition, (*fiscal_year, confirm), who(reason), out),
        AdminRequest::IssueCredential { .. }
        | AdminRequest::ListCredentials
        | AdminRequest::RevokeCredential { .. } => credentials::execute(store, req, out),
    }
}

/// `keys status`: every DEK version per partition, and any unfinished re-encryption.
fn status(store: &Store, asked: &[String], out: Out<'_>) -> Result<(), AdminError> {
    out(Reply::Line(
        "partition\tkey_id\tclass\tepoch\tversion\tstatus\tencryptions\tentries\tcreated".into(),
    ));
    for p in partitions(store, asked)? {
        for k in store.key_status(&p)? {
            out(Reply::Line(format!(
                "{p}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                k.key_id,
                k.class,
                k.epoch,
                k.version,
                k.status,
                k.encryptions,
                k.entries,
                crate::ledger::format_utc_ms(k.created_ms)
            )));
        }
        if let Some(job) = store.reencrypt_status(&p)? {
            out(Reply::Line(format!(
                "{p}\tre-encryption stopped at seq {} of {} ({} moved); run `kukaku keys reencrypt` to resume",
                job.next_seq, job.end, job.moved
            )));
        }
    }
    Ok(())
}

/// `keys rotate-dek`: a new current DEK version for every key scope of the partitions.
fn rotate_deks(
    store: &Store,
    asked: &[String],
    who: KeyActor,
    out: Out<'_>,
) -> Result<(), AdminError> {
    let ids = partitions(store, asked)?;
    let len = ids.len() as u64;
    let mut rotated = 0usize;
    for (i, p) in ids.iter().enumerate() {
        rotated += store
            .rotate_deks(p, who.clone())
            .map_err(KeyAdminError::from)?
            .len();
        out(Reply::Progress {
            label: "rotating".into(),
            pos: i as u64 + 1,
            len,
        });
    }
    out(Reply::Line(format!(
        "rotated {rotated} key scope(s) in {len} partition(s); see `kukaku keys status`"
    )));
    Ok(())
}

/// `keys rotate-signing-key [--finish]`: add the new key (both sign), or retire the old.
fn rotate_signing_key(
    store: &Store,
    finish: bool,
    who: KeyActor,
    out: Out<'_>,
) -> Result<(), AdminError> {
    if finish {
        let v = store.finish_signing_rotation(who)?;
        out(Reply::Line(format!(
            "signing key v{v} retired (its seed is removed); checkpoints carry the new key's signature only"
        )));
        return Ok(());
    }
    let v = store.rotate_signing_key(who)?;
    let key = store
        .signing_keys()
        .into_iter()
        .find(|k| k.version == v)
        .map(|k| k.key.to_text())
        .unwrap_or_default();
    out(Reply::Line(format!(
        "signing key v{v} added: every checkpoint now carries the old and the new signature"
    )));
    out(Reply::Line(format!("new key: {key}")));
    out(Reply::Line(
        "pin it everywhere (auditors' trust files: `kukaku public-keys`; intermediates: --upstream-vkey), then run `kukaku keys rotate-signing-key --finish`".into(),
    ));
    Ok(())
}

/// `keys reencrypt`: every entry under an older key moved to the current one, at most
/// `rate` entries a second (0: no limit), `chunk` per batch; stops (resumable) when nobody
/// listens.
fn reencrypt(
    store: &Store,
    asked: &[String],
    who: KeyActor,
    (rate, chunk): (u64, u64),
    out: Out<'_>,
) -> Result<(), AdminError> {
    for p in partitions(store, asked)? {
        let started = Instant::now();
        let mut first_moved = None;
        let mut listening = true;
        let label = format!("re-encrypting {p}");
        let step = store.reencrypt(&p, who.clone(), chunk.max(1), &mut |s| {
            let base = *first_moved.get_or_insert(s.moved);
            listening = out(Reply::Progress {
                label: label.clone(),
                pos: s.next_seq,
                len: s.end,
            });
            // Throttle: at most `rate` entries moved per second, so serving goes on.
            if rate > 0 {
                let due = Duration::from_secs_f64((s.moved - base) as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            listening
        })?;
        if !step.done {
            return Err(AdminError::Stopped);
        }
        out(Reply::Line(format!(
            "{p}: {} entries moved to current keys (seqs 0..{})",
            step.moved, step.end
        )));
    }
    Ok(())
}

/// `public-keys`: the trust file lines of the instance's signing keys and its witness key,
/// or one of them alone.
fn public_keys(store: &Store, witness: bool, log: bool, out: Out<'_>) {
    let witness_key = store.cosigner_key().to_text();
    if witness {
        out(Reply::Line(witness_key));
        return;
    }
    if log {
        let key = store.log_key().map(|k| k.to_text()).unwrap_or_default();
        out(Reply::Line(key));
        return;
    }
    out(Reply::Line(format!(
        "# kukaku-audit trust file lines of {}",
        store.origin()
    )));
    for (i, k) in store.signing_keys().iter().enumerate() {
        let retired = if k.retired_ms.is_some() {
            ", retired"
        } else {
            ""
        };
        out(Reply::Line(format!(
            "{}  # signing key v{}{retired}",
            k.trust_line(i == 0),
            k.version
        )));
    }
    out(Reply::Line(
        "# this instance as a witness (pin on the hub with serve --witness-vkey):".into(),
    ));
    out(Reply::Line(format!("# witness {witness_key}")));
}

/// `keys destroy`: a partition's keys (or one fiscal year's), with what that leaves.
fn destroy(
    store: &Store,
    partition: &str,
    (fiscal_year, confirm): (Option<u16>, &str),
    who: KeyActor,
    out: Out<'_>,
) -> Result<(), AdminError> {
    let p = one(store, partition)?;
    let scope = fiscal_year.map_or(DestroyScope::Partition, DestroyScope::FiscalYear);
    let report = store.destroy(&p, scope, confirm, who)?;
    for (key_id, entries) in &report.keys {
        out(Reply::Line(format!(
            "{p}: key {key_id} destroyed; {entries} entries are unreadable from now on"
        )));
    }
    if matches!(scope, DestroyScope::Partition) {
        out(Reply::Line(format!(
            "{p}: blind-index key, derived index entries and transmission records destroyed and compacted away; sealed writes are refused"
        )));
        out(Reply::Line(
            "RocksDB's MANIFEST still names the bounds of the removed table files until the instance is next opened: restart `kukaku serve` now (docs/keys.md)".into(),
        ));
    }
    match report.kek {
        Some(k) => out(Reply::Line(format!(
            "KEK rotated {} -> {}: older copies of the key store no longer open",
            k.old_fingerprint, k.new_fingerprint
        ))),
        None => out(Reply::Line(
            "warning: fixed KEK, not rotated; an older key-store copy still opens the destroyed keys".into(),
        )),
    };
    Ok(())
}

fn export_audit(
    store: &Store,
    asked: &[String],
    (from, prove_from): (u64, Option<u64>),
    path: &Path,
    out: &mut dyn FnMut(Reply) -> bool,
) -> Result<(), AdminError> {
    let ids = partitions(store, asked)?;
    if let Some(m) = prove_from
        && (m == 0 || m >= from)
    {
        return Err(AdminError::ProveFrom {
            prove_from: m,
            from,
        });
    }
    let mut total = 0;
    for p in &ids {
        let size = store.size(p)?;
        if from > size {
            return Err(AdminError::FromSize {
                from,
                partition: p.to_string(),
                size,
            });
        }
        total += size - from;
    }
    let file_err = |error| AdminError::File {
        path: path.to_owned(),
        error,
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(file_err)?;
    let written = store
        // The store reports every 1,024 entries and at the end.
        .export_audit_from(
            &ids,
            from,
            prove_from,
            std::io::BufWriter::new(file),
            &mut |done| {
                out(Reply::Progress {
                    label: "exporting".into(),
                    pos: done,
                    len: total,
                });
            },
        )
        .map_err(AdminError::from)
        .and_then(|w| w.into_inner().map_err(|e| file_err(e.into_error())))
        .and_then(|f| f.sync_all().map_err(file_err));
    if let Err(e) = written {
        // Leave no partial bundle behind.
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    out(Reply::Line(format!(
        "wrote {} ({} partitions, {total} entries)",
        path.display(),
        ids.len()
    )));
    Ok(())
}

/// Sends `req` to a running server's admin socket and passes its replies to `out`.
pub fn call(
    socket: &Path,
    req: &AdminRequest,
    out: &mut dyn FnMut(Reply),
) -> Result<(), AdminError> {
    let io = |error| AdminError::Socket {
        path: socket.to_owned(),
        error,
    };
    let mut stream = std::os::unix::net::UnixStream::connect(socket).map_err(io)?;
    let mut line = serde_json::to_vec(req).map_err(|e| AdminError::Protocol(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    for line in BufReader::new(stream).lines() {
        let line = line.map_err(io)?;
        let reply: Reply =
            serde_json::from_str(&line).map_err(|e| AdminError::Protocol(e.to_string()))?;
        match reply {
            Reply::Done => return Ok(()),
            Reply::Error(e) => return Err(AdminError::Remote(e)),
            other => out(other),
        }
    }
    Err(AdminError::Protocol(
        "the server closed the connection before answering".into(),
    ))
}

/// Whether a server answers on `socket`.
pub fn server_listening(socket: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

/// The admin socket of a running server; removed when dropped.
#[derive(Debug)]
pub struct AdminSocket {
    path: PathBuf,
    listener: tokio::net::UnixListener,
    owner: u32,
}

impl AdminSocket {
    /// Binds `path` (mode 0600). A stale socket file nobody answers on is replaced.
    pub fn bind(path: &Path) -> Result<Self, AdminError> {
        let io = |error| AdminError::Socket {
            path: path.to_owned(),
            error,
        };
        if path.exists() {
            if server_listening(path) {
                return Err(io(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another server answers on it",
                )));
            }
            std::fs::remove_file(path).map_err(io)?;
        }
        let listener = tokio::net::UnixListener::bind(path).map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        let owner = std::fs::metadata(path).map_err(io)?.uid();
        Ok(AdminSocket {
            path: path.to_owned(),
            listener,
            owner,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers requests until the task is dropped: one connection at a time per request,
    /// from the socket's owner only. Key operations run on blocking threads.
    pub async fn run(self, store: Arc<Store>) {
        loop {
            let Ok((stream, _)) = self.listener.accept().await else {
                continue;
            };
            let uid = stream.peer_cred().map(|c| c.uid()).ok();
            if uid != Some(self.owner) {
                tracing::warn!(?uid, "admin socket: refused a connection from another user");
                continue;
            }
            tokio::spawn(answer(stream, Arc::clone(&store)));
        }
    }
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn answer(stream: tokio::net::UnixStream, store: Arc<Store>) {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST));
    let parsed = match reader.read_line(&mut line).await {
        Ok(_) => serde_json::from_str::<AdminRequest>(&line).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Reply>(64);
    match parsed {
        Ok(req) => {
            tracing::info!(op = ?std::mem::discriminant(&req), "admin socket request");
            tokio::task::spawn_blocking(move || {
                let mut out = |r: Reply| tx.blocking_send(r).is_ok();
                let last = match execute(&store, &req, "admin-cli", &mut out) {
                    Ok(()) => Reply::Done,
                    Err(e) => Reply::Error(crate::error::report(&e)),
                };
                let _ = tx.blocking_send(last);
            });
        }
        Err(e) => {
            let _ = tx.send(Reply::Error(format!("bad request: {e}"))).await;
        }
    }
    while let Some(reply) = rx.recv().await {
        let Ok(mut bytes) = serde_json::to_vec(&reply) else {
            break;
        };
        bytes.push(b'\n');
        if write.write_all(&bytes).await.is_err() {
            // The client left (Ctrl-C): dropping `rx` makes the job stop at its next step.
            break;
        }
    }
}
