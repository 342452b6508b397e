//! SIGHUP reloads `kukaku serve`'s TLS certificate and key on a real listener: requests
//! before it see the old certificate, after it the new one, none fails in between, and a
//! connection opened before the reload keeps working.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::keys_cli::{kukaku, run, text};

/// Takes any server certificate: the test looks at which one it was, not whether to trust it.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn connector() -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn connect(addr: &str) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    connector().connect(name, tcp).await.unwrap()
}

/// The leaf certificate the server presented.
fn leaf(tls: &TlsStream<TcpStream>) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// One `GET /healthz` on `tls` (kept alive); its status line.
async fn healthz(tls: &mut TlsStream<TcpStream>) -> String {
    tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 8192];
    let mut got = Vec::new();
    // Headers and the small JSON body arrive together; read until the body is complete.
    loop {
        let n = tls.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if body.len() >= len {
                return head.lines().next().unwrap().to_owned();
            }
        }
    }
}

fn copy_pair(from: &Path, to: &Path) {
    for name in ["cert.pem", "key.pem"] {
        let tmp = to.join(format!("{name}.tmp"));
        std::fs::copy(from.join(name), &tmp).unwrap();
        std::fs::rename(&tmp, to.join(name)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_certificate_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let (home, other) = (dir.path().join("home"), dir.path().join("other"));
    for h in [&home, &other] {
        let o = run(h, &["init", "--origin", "hub.test", "--dev-cert"]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let tls = dir.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    copy_pair(&home.join("tls"), &tls);
    let mut server = kukaku(&home)
        .args(["serve", "--role", "hub", "--listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(tls.join("cert.pem"))
        .arg("--tls-key")
        .arg(tls.join("key.pem"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (log_tx, log) = std::sync::mpsc::channel::<String>();
    let stderr = server.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = log_tx.send(line);
        }
    });
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("server exited").unwrap();
        if let Some(rest) = line.split("serving https://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let old_cert = std::fs::read(home.join("tls/cert.pem")).unwrap();

    // A connection opened before the reload, kept alive across it.
    let mut kept = connect(&addr).await;
    assert_eq!(healthz(&mut kept).await, "HTTP/1.1 200 OK");
    let before = leaf(&kept);

    // New connections, one after another, while the files change and SIGHUP arrives.
    let mut seen = Vec::new();
    let mut reloaded = false;
    for i in 0..400 {
        let mut c = connect(&addr).await;
        assert_eq!(healthz(&mut c).await, "HTTP/1.1 200 OK", "request {i}");
        let cert = leaf(&c);
        if seen.last() != Some(&cert) {
            seen.push(cert.clone());
        }
        if i == 20 {
            copy_pair(&other.join("tls"), &tls);
            let status = std::process::Command::new("kill")
                .args(["-HUP", &server.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            reloaded = true;
        }
        if reloaded && seen.len() == 2 && i > 40 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "the certificate changed exactly once");
    assert_eq!(seen[0], before);
    assert_ne!(seen[1], before);
    assert!(!old_cert.is_empty());

    // The connection from before the reload still answers, with the certificate it got.
    assert_eq!(healthz(&mut kept).await, "HTTP/1.1 200 OK");
    assert_eq!(leaf(&kept), before);

    // A reload that fails (a key others can read) keeps the new certificate in use.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(tls.join("key.pem"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &server.id().to_string()])
        .status()
        .unwrap();
    let failed = loop {
        let line = log
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the failed reload is logged");
        if line.contains("TLS reload failed") {
            break line;
        }
    };
    assert!(failed.contains("key.pem"), "{failed}");
    let mut c = connect(&addr).await;
    assert_eq!(healthz(&mut c).await, "HTTP/1.1 200 OK");
    assert_eq!(leaf(&c), seen[1]);
    server.kill().unwrap();
    server.wait().unwrap();
}

/// `Type=notify`: READY=1 once serving, RELOADING=1 (with MONOTONIC_USEC) and READY=1 around
/// a SIGHUP, STOPPING=1 at SIGTERM, on the datagram socket systemd names.
#[test]
fn readiness_reload_and_stop_are_notified_to_systemd() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let o = run(&home, &["init", "--origin", "hub.test", "--dev-cert"]);
    assert!(o.status.success(), "{}", text(&o));
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut server = kukaku(&home)
        .args(["serve", "--role", "hub", "--listen", "127.0.0.1:0"])
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let next = || {
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next(), "READY=1\n");
    std::process::Command::new("kill")
        .args(["-HUP", &server.id().to_string()])
        .status()
        .unwrap();
    let reloading = next();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert_eq!(next(), "READY=1\n");
    std::process::Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(next(), "STOPPING=1\n");
    assert!(server.wait().unwrap().success());
}
