//! SIGHUP re-reads the certificate files: new connections see the new certificate, an open
//! connection keeps working. (Own test binary: it signals its own process.)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use tickhttp::tls::TlsConfig;
use tickhttp::{Server, ServerConfig};

fn cert(names: &[&str]) -> (String, String, Vec<u8>) {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    (
        ck.cert.pem(),
        ck.signing_key.serialize_pem(),
        ck.cert.der().to_vec(),
    )
}

fn client(trusted: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(trusted.to_vec()))
        .unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

fn handshake_ok(addr: std::net::SocketAddr, trusted: &[u8]) -> bool {
    let mut conn =
        rustls::ClientConnection::new(client(trusted), "localhost".try_into().unwrap()).unwrap();
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    if tls
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    out.starts_with(b"HTTP/1.1 200")
}

#[test]
fn sighup_reloads_certificates_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    let (c1, k1, der1) = cert(&["localhost"]);
    let (c2, k2, der2) = cert(&["localhost"]);
    std::fs::write(&cert_path, c1).unwrap();
    std::fs::write(&key_path, k1).unwrap();
    let tls = TlsConfig::from_pem_files(&cert_path, &key_path).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let cfg = ServerConfig::default()
            .listen("127.0.0.1:0".parse().unwrap())
            .tls(Some(tls));
        let mut server = Server::bind(cfg).unwrap();
        tickhttp::signal::reload_tls_on_hup(&mut server).unwrap();
        tx.send(server.local_addr().unwrap()).unwrap();
        loop {
            server.wait(Some(Duration::from_millis(50))).unwrap();
            while let Some(req) = server.get_request() {
                server
                    .respond(req.id(), http::Response::new("ok".into()))
                    .unwrap();
            }
        }
    });
    let addr = rx.recv().unwrap();
    assert!(handshake_ok(addr, &der1));
    // An open keep-alive connection established with the old certificate.
    let mut conn =
        rustls::ClientConnection::new(client(&der1), "localhost".try_into().unwrap()).unwrap();
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    {
        let mut tls = rustls::Stream::new(&mut conn, &mut sock);
        tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 256];
        let n = tls.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    }
    std::fs::write(&cert_path, c2).unwrap();
    std::fs::write(&key_path, k2).unwrap();
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
    let mut switched = false;
    for _ in 0..50 {
        if handshake_ok(addr, &der2) {
            switched = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(switched, "new connections should get the new certificate");
    assert!(!handshake_ok(addr, &der1));
    // The old connection still works.
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}
