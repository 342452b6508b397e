//! Listening: TLS (rustls, ring provider) by default, plain HTTP only on loopback; HTTP/1.1
//! with a header read timeout; graceful shutdown that lets in-flight requests (and so their
//! appends) finish.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::Limits;
use super::auth::{PeerAddr, PeerCertificate};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("{path}: {error}")]
    File {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{0}: no certificate in the PEM file")]
    NoCertificate(PathBuf),
    #[error("{0}: no private key in the PEM file")]
    NoKey(PathBuf),
    #[error(
        "{0} is readable by group or others (mode {1:o}); run `chmod 600` on the TLS private key"
    )]
    KeyPermissions(PathBuf, u32),
    #[error("client CA {0}: {1}")]
    ClientCa(PathBuf, String),
    #[error("TLS configuration")]
    Tls(#[from] rustls::Error),
    #[error("plain HTTP is allowed only on a loopback address, not {0}")]
    NotLoopback(SocketAddr),
    #[error(
        "upstream {0}: plain http:// is allowed only to a loopback address (127.0.0.0/8, [::1], localhost); use https://"
    )]
    PlainUpstream(String),
    #[error("upstream {0}: not an http:// or https:// URL")]
    UpstreamScheme(String),
    #[error("certificate generation")]
    CertGen(#[from] rcgen::Error),
    #[error("listener")]
    Io(#[from] std::io::Error),
}

/// Where the dev certificate pair lives under an instance home.
pub fn dev_cert_paths(home: &Path) -> (PathBuf, PathBuf) {
    (home.join("tls/cert.pem"), home.join("tls/key.pem"))
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ServeError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |error| ServeError::File {
        path: path.to_owned(),
        error,
    };
    if let Some(dir) = path.parent() {
        crate::store::private::create_dir(dir).map_err(|e| match e {
            crate::store::private::PrivateError::Io { error, .. } => err(error),
            other => err(std::io::Error::other(other.to_string())),
        })?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}

/// Writes a self-signed certificate for `localhost` and `127.0.0.1` (local use only) and its
/// key (mode 0600). Refuses to overwrite.
pub fn write_dev_cert(cert: &Path, key: &Path) -> Result<(), ServeError> {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let pair = rcgen::generate_simple_self_signed(names)?;
    let key_pem = zeroize::Zeroizing::new(pair.signing_key.serialize_pem());
    write_file(key, key_pem.as_bytes(), 0o600)?;
    // Public, but owner-only like every file of an instance's home.
    write_file(cert, pair.cert.pem().as_bytes(), 0o600)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ServeError> {
    let err = |e: rustls::pki_types::pem::Error| ServeError::File {
        path: path.to_owned(),
        error: std::io::Error::other(e.to_string()),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(err)?
        .collect::<Result<_, _>>()
        .map_err(err)?;
    if certs.is_empty() {
        return Err(ServeError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

/// SHA-256 of the DER of the first certificate in a PEM file: what a credential is bound to.
pub fn certificate_sha256(path: &Path) -> Result<[u8; 32], ServeError> {
    let certs = read_certs(path)?;
    let first = certs
        .first()
        .ok_or_else(|| ServeError::NoCertificate(path.to_owned()))?;
    Ok(der_sha256(first))
}

fn der_sha256(der: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, der).as_ref());
    out
}

/// Loads a certificate chain and private key (PEM) into a rustls server config (ring
/// provider, TLS 1.2 and 1.3, HTTP/1.1 by ALPN). The key file must not be group/world readable.
///
/// With `client_ca`, clients may present a certificate issued by one of its CAs (mTLS); a
/// presented certificate is verified, and credentials bound to it accept only that
/// connection. Clients without a certificate are still accepted (bearer tokens alone).
pub fn load_tls(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, ServeError> {
    use std::os::unix::fs::PermissionsExt;
    let file_err = |path: &Path| {
        let path = path.to_owned();
        move |error| ServeError::File { path, error }
    };
    let mode = std::fs::metadata(key)
        .map_err(file_err(key))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(ServeError::KeyPermissions(key.to_owned(), mode & 0o777));
    }
    let certs = read_certs(cert)?;
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|_| ServeError::NoKey(key.to_owned()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(ca)? {
                roots.add(c)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| ServeError::ClientCa(ca.to_owned(), e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key_der)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// TLS settings read from files, swapped whole by [`TlsFiles::reload`].
pub struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    current: std::sync::RwLock<Arc<ServerConfig>>,
}

impl TlsFiles {
    /// Loads the certificate chain, key and client CA (as [`load_tls`]).
    pub fn load(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<Arc<Self>, ServeError> {
        let current = load_tls(cert, key, client_ca)?;
        Ok(Arc::new(TlsFiles {
            cert: cert.to_owned(),
            key: key.to_owned(),
            client_ca: client_ca.map(Path::to_owned),
            current: std::sync::RwLock::new(current),
        }))
    }

    /// Reads the files again; on any error the settings in use stay.
    pub fn reload(&self) -> Result<(), ServeError> {
        let next = load_tls(&self.cert, &self.key, self.client_ca.as_deref())?;
        if let Ok(mut current) = self.current.write() {
            *current = next;
        }
        Ok(())
    }

    /// The settings for the next connection.
    pub fn current(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(c) => Arc::clone(&c),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Whether connections are TLS.
    pub fn is_tls(&self) -> bool {
        !matches!(self, Transport::PlainLoopback)
    }
}

/// How connections are carried.
#[derive(Clone)]
pub enum Transport {
    Tls(Arc<ServerConfig>),
    /// TLS from files that [`TlsFiles::reload`] reads again (SIGHUP): new connections get
    /// the new certificate, open ones keep theirs.
    ReloadableTls(Arc<TlsFiles>),
    /// Plain HTTP: only on loopback, only when asked for explicitly.
    PlainLoopback,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Tls(_) => "Tls",
            Transport::ReloadableTls(_) => "ReloadableTls",
            Transport::PlainLoopback => "PlainLoopback",
        })
    }
}

/// Largest request line plus headers (hyper's `max_header_size`); larger requests get 431.
pub const MAX_HEADER_BYTES: usize = 64 << 10;

/// Binds `addr`, refusing plain HTTP on anything but loopback.
pub async fn bind(addr: SocketAddr, transport: &Transport) -> Result<TcpListener, ServeError> {
    if matches!(transport, Transport::PlainLoopback) && !addr.ip().is_loopback() {
        return Err(ServeError::NotLoopback(addr));
    }
    Ok(TcpListener::bind(addr).await?)
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and waits (up to
/// `drain`) for in-flight requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    transport: Transport,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> Result<(), ServeError> {
    let graceful = GracefulShutdown::new();
    let acceptor = |t: &Transport| match t {
        Transport::Tls(config) => Some(TlsAcceptor::from(Arc::clone(config))),
        Transport::ReloadableTls(files) => Some(TlsAcceptor::from(files.current())),
        Transport::PlainLoopback => None,
    };
    tokio::pin!(shutdown);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut refused = 0u64;
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %crate::error::report(&e), "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // Closed at once: the client sees a reset, not a hang. Logged once per 1,000.
            refused += 1;
            if refused % 1000 == 1 {
                tracing::warn!(%peer, refused, max = limits.max_connections, "connection limit reached; closing new connections");
            }
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (app, acceptor, watcher) = (app.clone(), acceptor(&transport), graceful.watcher());
        tokio::spawn(async move {
            let _slot = slot;
            connection(tcp, peer, app, acceptor, watcher, limits).await;
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(drain) => tracing::warn!("drain timeout; closing remaining connections"),
    }
    Ok(())
}

/// One accepted connection: TLS (when configured) within the header timeout, then HTTP/1.1
/// with the peer's address (and client certificate hash) on every request.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    acceptor: Option<TlsAcceptor>,
    watcher: Watcher,
    limits: Limits,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // Request line and headers past 64 KiB get 431 (hyper's default is ~400 KiB).
        .max_header_size(MAX_HEADER_BYTES);
    let result = match acceptor {
        Some(acceptor) => {
            let Some(tls) = handshake(&acceptor, tcp, peer, limits.header_timeout).await else {
                return;
            };
            let peer_cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| PeerCertificate(der_sha256(c)));
            let svc = tagged(app, peer, peer_cert);
            watcher
                .watch(http.serve_connection(TokioIo::new(tls), svc))
                .await
        }
        None => {
            let svc = tagged(app, peer, None);
            watcher
                .watch(http.serve_connection(TokioIo::new(tcp), svc))
                .await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %crate::error::report(&e), "connection ended with an error");
    }
}

/// The TLS handshake, bounded by the header timeout; `None` (logged) when it fails.
async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    within: Duration,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(within, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %crate::error::report(&e), "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// `app` as a hyper service that puts the peer's address (and certificate hash) on each
/// request.
fn tagged(
    app: Router,
    peer: SocketAddr,
    peer_cert: Option<PeerCertificate>,
) -> TowerToHyperService<
    tower::util::MapRequest<Router, impl FnMut(Request<Incoming>) -> Request<Incoming> + Clone>,
> {
    TowerToHyperService::new(tower::ServiceExt::map_request(
        app,
        move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(PeerAddr(peer.ip()));
            if let Some(p) = peer_cert {
                req.extensions_mut().insert(p);
            }
            req
        },
    ))
}

/// Default of [`runtime`]'s `request_nice` (and of `kukaku serve --request-nice`).
pub const DEFAULT_REQUEST_NICE: u8 = 5;

/// The tokio runtime a server runs on. Its worker and blocking-pool threads (HTTP, JSON,
/// validation, reads: everything a request does before and after its append) run
/// `request_nice` nice levels below the thread that builds it, and so below the store's
/// writer thread, which `Store::open` started from that thread earlier. The writer is the one
/// serial stage of every append; at equal priority it waited on the run queue for 21–33 % of
/// an HTTP run while its requests' own threads held both cores (docs/benchmarks.md, “Request
/// threads below the writer”). A higher nice value is always allowed, so this needs no privilege. 0 leaves every
/// thread at the builder's level; the level is capped at 19, the lowest priority.
pub fn runtime(request_nice: u8) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if request_nice > 0 {
        // Absolute, not relative: a blocking thread is started by a worker and inherits its
        // level already.
        let level = (nice::current()? + i32::from(request_nice)).min(19);
        builder.on_thread_start(move || {
            if let Err(e) = nice::set_current(level) {
                tracing::warn!(level, error = %crate::error::report(&e), "could not lower a request thread's priority");
            }
        });
    }
    builder.build()
}

/// The calling thread's nice level (Linux keeps one per thread).
pub mod nice {
    /// The calling thread's nice level.
    #[cfg(target_os = "linux")]
    pub fn current() -> std::io::Result<i32> {
        Ok(rustix::process::getpriority_process(Some(
            rustix::thread::gettid(),
        ))?)
    }

    /// Sets the calling thread's nice level.
    #[cfg(target_os = "linux")]
    pub fn set_current(level: i32) -> std::io::Result<()> {
        Ok(rustix::process::setpriority_process(
            Some(rustix::thread::gettid()),
            level,
        )?)
    }

    #[cfg(not(target_os = "linux"))]
    pub fn current() -> std::io::Result<i32> {
        Err(std::io::ErrorKind::Unsupported.into())
    }

    #[cfg(not(target_os = "linux"))]
    pub fn set_current(_level: i32) -> std::io::Result<()> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

#[cfg(test)]
mod tests {
    use super::{nice, runtime};

    #[test]
    fn request_threads_run_below_the_builder() {
        let base = nice::current().unwrap();
        let expected = (base + 5).min(19);
        let rt = runtime(5).unwrap();
        let (worker, blocking) = rt.block_on(async {
            let worker = tokio::spawn(async { nice::current().unwrap() })
                .await
                .unwrap();
            let blocking = tokio::task::spawn_blocking(|| nice::current().unwrap())
                .await
                .unwrap();
            (worker, blocking)
        });
        assert_eq!((worker, blocking), (expected, expected));
        // The builder (and a writer thread it starts) keeps its level.
        assert_eq!(nice::current().unwrap(), base);
        drop(rt);
        let rt = runtime(0).unwrap();
        let worker = rt.block_on(async {
            tokio::spawn(async { nice::current().unwrap() })
                .await
                .unwrap()
        });
        assert_eq!(worker, base);
    }
}
