//! HTTPS: handshakes with a rustls client, curl and openssl against certificates made at test
//! time; SNI; clear errors for bad files; a silent client cannot hold the handshake open.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tickhttp::tls::TlsConfig;
use util::*;

struct Certs {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    other_cert: PathBuf,
    other_key: PathBuf,
    der: Vec<u8>,
    other_der: Vec<u8>,
}

fn make_certs() -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, names: Vec<String>| {
        let ck = rcgen::generate_simple_self_signed(names).unwrap();
        let cert = dir.path().join(format!("{name}-cert.pem"));
        let key = dir.path().join(format!("{name}-key.pem"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        (cert, key, ck.cert.der().to_vec())
    };
    let (cert, key, der) = write("main", vec!["localhost".into()]);
    let (other_cert, other_key, other_der) = write("other", vec!["other.test".into()]);
    Certs {
        _dir: dir,
        cert,
        key,
        other_cert,
        other_key,
        der,
        other_der,
    }
}

fn client_config(trusted: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for der in trusted {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.to_vec()))
            .unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn https_get(
    addr: std::net::SocketAddr,
    name: &str,
    trusted: &[&[u8]],
    paths: &[&str],
) -> (Vec<String>, Option<Vec<u8>>) {
    let config = client_config(trusted);
    let server_name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(config, server_name).unwrap();
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let mut wire = String::new();
    for p in paths {
        wire.push_str(&format!("GET {p} HTTP/1.1\r\nHost: {name}\r\n\r\n"));
    }
    wire.push_str(&format!(
        "GET /last HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n"
    ));
    tls.write_all(wire.as_bytes()).unwrap();
    let mut all = Vec::new();
    let _ = tls.read_to_end(&mut all);
    let alpn = conn.alpn_protocol().map(|a| a.to_vec());
    let text = String::from_utf8_lossy(&all).into_owned();
    let bodies = text
        .split("HTTP/1.1 200 OK")
        .skip(1)
        .map(|r| r.rsplit("\r\n\r\n").next().unwrap_or("").to_string())
        .collect();
    (bodies, alpn)
}

fn tls_server(certs: &Certs) -> TestServer {
    let tls = TlsConfig::from_pem_files(&certs.cert, &certs.key)
        .unwrap()
        .with_sni("other.test", &certs.other_cert, &certs.other_key)
        .unwrap();
    start(config().tls(Some(tls)), standard_app)
}

#[test]
fn keep_alive_and_pipelining_work_over_tls() {
    let certs = make_certs();
    let server = tls_server(&certs);
    let (bodies, alpn) = https_get(server.addr, "localhost", &[&certs.der], &["/a", "/b", "/c"]);
    assert_eq!(bodies, vec!["/a", "/b", "/c", "/last"]);
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
}

#[test]
fn sni_picks_the_certificate_for_the_name() {
    let certs = make_certs();
    let server = tls_server(&certs);
    // Trusting only the second certificate: the handshake succeeds only if SNI chose it.
    let (bodies, _) = https_get(server.addr, "other.test", &[&certs.other_der], &["/sni"]);
    assert_eq!(bodies, vec!["/sni", "/last"]);
}

#[test]
fn large_bodies_cross_tls_intact() {
    let certs = make_certs();
    let server = start(
        config().tls(Some(
            TlsConfig::from_pem_files(&certs.cert, &certs.key).unwrap(),
        )),
        standard_app,
    );
    let config = client_config(&[&certs.der]);
    let mut conn = rustls::ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
    let mut sock = TcpStream::connect(server.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).unwrap();
    tls.write_all(&body).unwrap();
    let mut all = Vec::new();
    let _ = tls.read_to_end(&mut all);
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(all.starts_with(b"HTTP/1.1 200 OK"));
    assert_eq!(&all[split..], &body[..]);
}

#[test]
fn curl_and_openssl_talk_to_it() {
    let certs = make_certs();
    let server = tls_server(&certs);
    let port = server.addr.port();
    if Command::new("curl").arg("--version").output().is_ok() {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&certs.cert)
            .arg("--resolve")
            .arg(format!("localhost:{port}:127.0.0.1"))
            .arg(format!("https://localhost:{port}/curl"))
            .arg(format!("https://localhost:{port}/again"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "/curl/again");
        for version in ["--tlsv1.2", "--tlsv1.3"] {
            let max = if version == "--tlsv1.2" { "1.2" } else { "1.3" };
            let out = Command::new("curl")
                .args([
                    "-sS",
                    "--max-time",
                    "10",
                    version,
                    "--tls-max",
                    max,
                    "--cacert",
                ])
                .arg(&certs.cert)
                .arg("--resolve")
                .arg(format!("localhost:{port}:127.0.0.1"))
                .arg(format!("https://localhost:{port}/v"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{version}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    } else {
        eprintln!("curl not installed: skipping the curl part");
    }
    if Command::new("openssl").arg("version").output().is_ok() {
        let mut child = Command::new("openssl")
            .args(["s_client", "-quiet", "-connect"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-servername", "localhost", "-alpn", "http/1.1"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"GET /openssl HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        assert!(text.ends_with("/openssl"), "{text}");
    }
}

#[test]
fn a_silent_client_is_dropped_after_the_handshake_timeout() {
    let certs = make_certs();
    let tls = TlsConfig::from_pem_files(&certs.cert, &certs.key).unwrap();
    let server = start(
        config()
            .tls(Some(tls))
            .tls_handshake_timeout(Duration::from_millis(300)),
        standard_app,
    );
    let mut silent = connect(server.addr);
    let started = Instant::now();
    assert!(is_closed(&mut silent));
    assert!(started.elapsed() < Duration::from_secs(3));
    // Meanwhile and after, real clients are served.
    let (bodies, _) = https_get(server.addr, "localhost", &[&certs.der], &["/ok"]);
    assert_eq!(bodies, vec!["/ok", "/last"]);
    let m = server.finish();
    assert!(m.timed_out_connections >= 1);
}

#[test]
fn plain_http_on_the_tls_port_is_refused_without_harm() {
    let certs = make_certs();
    let server = tls_server(&certs);
    let mut s = connect(server.addr);
    s.write_all(get("/plain").as_bytes()).unwrap();
    // A TLS alert at most, then EOF; never an HTTP answer.
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(!got.starts_with(b"HTTP/"), "{got:?}");
    assert!(got.len() < 64);
    let (bodies, _) = https_get(server.addr, "localhost", &[&certs.der], &[]);
    assert_eq!(bodies, vec!["/last"]);
}

#[test]
fn bad_certificate_files_are_clear_errors() {
    let certs = make_certs();
    let missing = Path::new("/nonexistent/cert.pem");
    let err = TlsConfig::from_pem_files(missing, &certs.key)
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    // A key that belongs to another certificate.
    let err = TlsConfig::from_pem_files(&certs.cert, &certs.other_key)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not match"), "{err}");
    // A file that is not PEM.
    let junk = certs._dir.path().join("junk.pem");
    std::fs::write(&junk, "hello").unwrap();
    let err = TlsConfig::from_pem_files(&junk, &certs.key)
        .unwrap_err()
        .to_string();
    assert!(err.contains("junk.pem"), "{err}");
}
