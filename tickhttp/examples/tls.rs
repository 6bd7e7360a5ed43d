//! HTTPS with certificates from PEM files; SIGHUP reloads them without dropping connections.
//!
//! ```sh
//! openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 7 -subj /CN=localhost
//! cargo run --example tls -- 127.0.0.1:8443 cert.pem key.pem
//! curl --cacert cert.pem https://localhost:8443/
//! ```

use std::time::Duration;

use tickhttp::tls::TlsConfig;
use tickhttp::{Server, ServerConfig};

fn main() -> Result<(), tickhttp::Error> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(cert), Some(key)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: tls ADDR:PORT CERT.pem KEY.pem");
        std::process::exit(2);
    };
    let listen = addr
        .parse()
        .map_err(|_| tickhttp::Error::Mode("the first argument must be ADDR:PORT"))?;
    // A wrong path, an unreadable file or a key that does not match is a clear error here.
    let tls = TlsConfig::from_pem_files(&cert, &key)?;
    let mut server = Server::bind(ServerConfig::default().listen(listen).tls(Some(tls)))?;
    tickhttp::signal::shutdown_on_signals(&mut server, Duration::from_secs(5))?;
    tickhttp::signal::reload_tls_on_hup(&mut server)?;
    println!(
        "listening on https://{}/",
        server.local_addr().unwrap_or(listen)
    );
    while server.is_running() {
        server.wait(None)?;
        while let Some(req) = server.get_request() {
            let body = format!("Hello over TLS, {}\n", req.peer_addr());
            server.respond(req.id(), http::Response::new(body.into()))?;
        }
    }
    Ok(())
}
