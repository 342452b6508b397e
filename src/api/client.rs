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

impl HubClient {
    /// `base`: `https://hub:8443` (or `http://127.0.0.1:…` on loopback). `ca`: PEM roots that
    /// sign the hub's certificate. `identity`: client certificate chain and key for mTLS.
    pub fn new(
        base: &str,
        token: Zeroizing<String>,
        ca: Option<&Path>,
        identity: Option<(&Path, &Path)>,
    ) -> Result<Self, ServeError> {
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
                .map_err(|e| format!("request: {e}"))?;
        let status = res.status();
        let body = Limited::new(res.into_body(), MAX_PAGE_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
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
            .map_err(|e| e.to_string())?;
        self.send(req).await
    }

    async fn post_cosignature(&self, p: &PartitionId, note: &str) -> Result<(), String> {
        let body = serde_json::to_vec(&super::routes::CosignatureRequest {
            checkpoint: note.to_owned(),
        })
        .map_err(|e| e.to_string())?;
        let req = hyper::Request::post(format!("{}/v1/feed/{p}/cosignatures", self.base))
            .header("authorization", format!("Bearer {}", &*self.token))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        self.send(req).await.map(|_| ())
    }
}
