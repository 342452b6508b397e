//! The admin socket: a Unix domain socket, mode 0600, answering only the user that owns it;
//! one JSON request line in, JSON [`Reply`] lines out.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{AdminError, AdminRequest, MAX_REQUEST, Reply, execute};
use crate::store::Store;

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
