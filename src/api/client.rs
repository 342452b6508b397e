//! The intermediate's HTTP client for the hub's signed feed (rustls with the ring provider;
//! optional client certificate for mTLS). It fetches pages and posts cosignatures; every
//! check is in `flows::replicate`.

use std::path::Path;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

use super::server::ServeError;
use crate::flows::replicate::FeedSource;
use crate::ledger::PartitionId;

/// Largest feed page accepted.
pub const MAX_PAGE_BYTES: usize = 512 << 20;

pub struct HubClient {
    base: String,
    token: Zeroizing<String>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for HubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ServeError> {
    CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ServeError::File {
            path: path.to_owned(),
            error: std::io::Error::other(e.to_string()),
        })
}

/// Refuses an upstream the token would cross a network in clear to: `https://` anywhere,
/// `http://` only to a loopback host.
pub fn check_upstream(base: &str) -> Result<(), ServeError> {
    if base.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = base.strip_prefix("http://") else {
        return Err(ServeError::UpstreamScheme(base.to_owned()));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // A userinfo part would let "http://127.0.0.1@evil/" name another host.
    if authority.contains('@') {
        return Err(ServeError::PlainUpstream(base.to_owned()));
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(ServeError::PlainUpstream(base.to_owned()))
    }
}

/// Reads the replicator's token file, refusing one group or others can read (as the KEK
/// file and the TLS key are refused).
pub fn read_token_file(path: &Path) -> Result<Zeroizing<String>, ServeError> {
    use std::os::unix::fs::PermissionsExt as _;
    let io = |error| ServeError::File {
        path: path.to_owned(),
        error,
    };
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(ServeError::KeyPermissions(path.to_owned(), mode & 0o777));
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
    Ok(Zeroizing::new(text.trim().to_owned()))
}

impl HubClient {
    /// `base`: `https://hub:8443` (or `http://127.0.0.1:…` on loopback). `ca`: PEM roots that
    /// sign the hub's certificate. `identity`: client certificate chain and key for mTLS.
    pub fn new(
        base: &str,
        token: Zeroizing<String>,
        ca: Option<&Path>,
        identity: Option<(&Path, &Path)>,
    ) -> Result<Self, ServeError> {
        check_upstream(base)?;
        let mut roots = rustls::RootCertStore::empty();
        if let Some(ca) = ca {
            for c in certs(ca)? {
                roots.add(c)?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let key_der = PrivateKeyDer::from_pem_file(key)
                    .map_err(|_| ServeError::NoKey(key.to_owned()))?;
                builder.with_client_auth_cert(certs(cert)?, key_der)?
            }
        };
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(HubClient {
            base: base.trim_end_matches('/').to_owned(),
            token,
            client: Client::builder(TokioExecutor::new()).build(https),
        })
    }
}

impl HubClient {
    async fn send(&self, req: hyper::Request<Full<Bytes>>) -> Result<Vec<u8>, String> {
        let res =
            tokio::time::timeout(std::time::Duration::from_secs(60), self.client.request(req))
                .await
                .map_err(|_| "hub did not answer in 60 s".to_owned())?
                .map_err(|e| format!("request: {}", crate::error::report(&e)))?;
        let status = res.status();
        let body = Limited::new(res.into_body(), MAX_PAGE_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {}", crate::error::report(e.as_ref())))?
            .to_bytes();
        if !status.is_success() {
            // The error shape's code is stable and never carries a value.
            let code = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| {
                    v.get("error")
                        .and_then(|e| e.get("code"))
                        .and_then(|c| c.as_str())
                        .map(str::to_owned)
                })
                .unwrap_or_default();
            return Err(format!("hub answered {status} {code}")
                .trim_end()
                .to_owned());
        }
        Ok(body.to_vec())
    }
}

impl FeedSource for HubClient {
    async fn fetch(&self, p: &PartitionId, from_size: u64, limit: u64) -> Result<Vec<u8>, String> {
        let uri = format!(
            "{}/v1/feed/{p}?from_size={from_size}&limit={limit}",
            self.base
        );
        let req = hyper::Request::get(uri)
            .header("authorization", format!("Bearer {}", &*self.token))
            .body(Full::new(Bytes::new()))
            .map_err(|e| crate::error::report(&e))?;
        self.send(req).await
    }

    async fn post_cosignature(&self, p: &PartitionId, note: &str) -> Result<(), String> {
        let body = serde_json::to_vec(&super::wire::CosignatureRequest {
            checkpoint: note.to_owned(),
        })
        .map_err(|e| crate::error::report(&e))?;
        let req = hyper::Request::post(format!("{}/v1/feed/{p}/cosignatures", self.base))
            .header("authorization", format!("Bearer {}", &*self.token))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| crate::error::report(&e))?;
        self.send(req).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answers: which upstreams a token may be sent to.
    #[test]
    fn plain_upstreams_only_on_loopback() {
        for (url, ok) in [
            ("https://hub.example:8443", true),
            ("https://192.0.2.1/", true),
            ("http://127.0.0.1:8080", true),
            ("http://127.3.4.5", true),
            ("http://localhost:8080/", true),
            ("http://[::1]:8080", true),
            ("http://hub.example:8080", false),
            ("http://192.0.2.1:8080", false),
            ("http://[2001:db8::1]:80", false),
            ("http://127.0.0.1@evil.example/", false),
            ("http://127.0.0.1.evil.example/", false),
            ("ftp://127.0.0.1/", false),
            ("127.0.0.1:8080", false),
        ] {
            assert_eq!(check_upstream(url).is_ok(), ok, "{url}");
        }
    }

    #[test]
    fn a_token_file_others_can_read_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir()?;
        let f = dir.path().join("token");
        std::fs::write(&f, "kk1_x_y\n")?;
        for (mode, ok) in [(0o600, true), (0o400, true), (0o640, false), (0o604, false)] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode))?;
            let got = read_token_file(&f);
            assert_eq!(got.is_ok(), ok, "{mode:o}");
            if let Ok(t) = got {
                assert_eq!(t.as_str(), "kk1_x_y");
            }
        }
        Ok(())
    }
}
