//! Serves a directory, and accepts multipart uploads at `POST /upload`.
//!
//! ```text
//! cargo run --release --example static_site -- 127.0.0.1:8080 ./public [MAX_BODY_BYTES]
//! curl http://127.0.0.1:8080/                         # ./public/index.html
//! curl -F file=@big.iso http://127.0.0.1:8080/upload  # streamed to a temp file, then deleted
//! ```
//!
//! One process, one thread: the loop below is the whole server. `bench/static.sh` runs it
//! against nginx.

use std::net::SocketAddr;

use http::{Method, Response, StatusCode};
use tickhttp::form::{Form, MultipartLimits};
use tickhttp::fs::{StaticConfig, StaticFiles};
use tickhttp::{Body, Server, ServerConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(root)) = (args.next(), args.next()) else {
        eprintln!("usage: static_site ADDR ROOT [MAX_BODY_BYTES]");
        std::process::exit(2);
    };
    let addr: SocketAddr = addr.parse()?;
    let max_body: u64 = match args.next() {
        Some(n) => n.parse()?,
        None => tickhttp::config::defaults::MAX_BODY_SIZE,
    };

    let mut files = StaticFiles::new(&root, StaticConfig::default())?;
    // Sweep the upload dirs of crashed processes now rather than at the first upload.
    tickhttp::form::upload_dir()?;
    let config = ServerConfig::default().listen(addr).max_body_size(max_body);
    let mut server = Server::bind(config)?;
    tickhttp::signal::shutdown_on_signals(&mut server, std::time::Duration::from_secs(5))?;
    eprintln!(
        "serving {root} on http://{}",
        server.local_addr().unwrap_or(addr)
    );

    while server.is_running() {
        server.wait(None)?;
        while let Some(req) = server.get_request() {
            let resp = if req.method() == Method::POST && req.path() == "/upload" {
                upload(&req)
            } else {
                files
                    .serve(&req)
                    .unwrap_or_else(|| status(StatusCode::NOT_FOUND, "not found\n".to_string()))
            };
            server.respond(req.id(), resp)?;
        }
    }
    tickhttp::form::remove_upload_dir().ok();
    Ok(())
}

/// Parses the form, answers what arrived; the files are deleted when `form` is dropped.
fn upload(req: &http::Request<tickhttp::RequestBody>) -> Response<Body> {
    match Form::from_request(req, &MultipartLimits::default()) {
        Ok(form) => {
            let mut text = String::new();
            for f in form.fields() {
                text.push_str(&format!("field {}: {} bytes\n", f.name(), f.bytes().len()));
            }
            for f in form.files() {
                text.push_str(&format!(
                    "file {} ({}): {} bytes\n",
                    f.name(),
                    f.filename().unwrap_or("unnamed"),
                    f.len()
                ));
            }
            status(StatusCode::OK, text)
        }
        Err(e) => e.to_response(),
    }
}

fn status(code: StatusCode, text: String) -> Response<Body> {
    let mut resp = Response::new(Body::from(text));
    *resp.status_mut() = code;
    resp
}
