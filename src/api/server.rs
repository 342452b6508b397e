//! Listening: TLS (rustls, ring provider) by default, plain HTTP only on loopback; HTTP/1.1
//! with a header read timeout; graceful shutdown that lets in-flight requests (and so their
//! appends) finish.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::Limits;
use super::auth::PeerCertificate;

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
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("plain HTTP is allowed only on a loopback address, not {0}")]
    NotLoopback(SocketAddr),
    #[error("certificate generation: {0}")]
    CertGen(#[from] rcgen::Error),
    #[error("listener: {0}")]
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
        std::fs::create_dir_all(dir).map_err(err)?;
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
    write_file(cert, pair.cert.pem().as_bytes(), 0o644)
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

/// How connections are carried.
#[derive(Clone)]
pub enum Transport {
    Tls(Arc<ServerConfig>),
    /// Plain HTTP: only on loopback, only when asked for explicitly.
    PlainLoopback,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Tls(_) => "Tls",
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
    let acceptor = match &transport {
        Transport::Tls(config) => Some(TlsAcceptor::from(Arc::clone(config))),
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
                    tracing::warn!(error = %e, "accept failed");
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
        let app = app.clone();
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                // Request line and headers past 64 KiB get 431 (hyper's default is ~400 KiB).
                .max_header_size(MAX_HEADER_BYTES);
            let result = match acceptor {
                Some(acceptor) => {
                    let tls =
                        match tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    let peer_cert = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| PeerCertificate(der_sha256(c)));
                    let svc = TowerToHyperService::new(tower::ServiceExt::map_request(
                        app,
                        move |mut req: axum::http::Request<hyper::body::Incoming>| {
                            if let Some(p) = peer_cert {
                                req.extensions_mut().insert(p);
                            }
                            req
                        },
                    ));
                    watcher
                        .watch(http.serve_connection(TokioIo::new(tls), svc))
                        .await
                }
                None => {
                    let svc = TowerToHyperService::new(app);
                    watcher
                        .watch(http.serve_connection(TokioIo::new(tcp), svc))
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
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
