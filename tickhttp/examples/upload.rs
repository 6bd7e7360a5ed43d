//! File uploads: a form with a progress bar, parsed as a stream, files kept on disk.
//!
//! ```text
//! cargo run --example upload -- 127.0.0.1:8080 ./uploads     # ADDR [DIR]
//! ```
//!
//! Open <http://127.0.0.1:8080/>, pick files and upload: the page shows the upload's progress
//! (`XMLHttpRequest` upload events), then the result. Or from a shell:
//! `curl -F note=hi -F file=@photo.jpg http://127.0.0.1:8080/upload`.
//!
//! How a body travels: the server reads it as it arrives and spools it to a temp file past
//! `body_spool_threshold` (1 MiB); `Content-Length` above `max_body_size` is refused with 413
//! before a byte of body is read. The application gets the request once the body is complete
//! and hands it to tickhttp's streaming multipart parser, which reads the spool in 64 KiB
//! pieces and writes each file part to its own temp file, so memory stays flat whatever the
//! size. Files are then moved (a rename: same file system) into DIR under their sanitized
//! names; `/files/NAME` serves them back. The address and directory may also come from the
//! `ADDR` and `UPLOAD_DIR` environment variables.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Response, StatusCode};
use tickhttp::form::{self, MultipartLimits, UploadedFile};
use tickhttp::fs::{StaticConfig, StaticFiles};
use tickhttp::{Body, Request, Server, ServerConfig};

const PAGE: &str = include_str!("upload.html");
/// Largest upload (the whole form).
const MAX_UPLOAD: u64 = 512 * 1024 * 1024;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args
        .next()
        .or_else(|| std::env::var("ADDR").ok())
        .unwrap_or_else(|| "127.0.0.1:8080".into())
        .parse()?;
    let dir = PathBuf::from(
        args.next()
            .or_else(|| std::env::var("UPLOAD_DIR").ok())
            .unwrap_or_else(|| "uploads".into()),
    );
    // Parts are written below DIR while they arrive, so keeping one is a rename. The dot
    // keeps the directory out of `/files/` (dotfiles are never served). Parts left there by
    // a run that was killed are not wanted: start empty.
    let incoming = dir.join(".incoming");
    let _ = std::fs::remove_dir_all(&incoming);
    std::fs::create_dir_all(&incoming)?;
    let mut files = StaticFiles::new(&dir, StaticConfig::default())?;

    let config = ServerConfig::default()
        .listen(listen)
        .max_body_size(MAX_UPLOAD)
        // A browser on a slow uplink pauses; allow it before calling the body stalled.
        .body_timeout(Duration::from_secs(60));
    let mut server = Server::bind(config)?;
    tickhttp::signal::shutdown_on_signals(&mut server, Duration::from_secs(5))?;
    println!(
        "listening on http://{}/ (files in {})",
        server.local_addr().unwrap_or(listen),
        dir.display()
    );

    while server.is_running() {
        server.wait(None)?;
        while let Some(req) = server.get_request() {
            let resp = match (req.method(), req.path()) {
                (&Method::GET, "/") => html(StatusCode::OK, page(&dir)),
                (&Method::POST, "/upload") => upload(&req, &dir, &incoming),
                (&Method::GET | &Method::HEAD, path) if path.starts_with("/files/") => files
                    .serve_at(&req, &path["/files".len()..])
                    .unwrap_or_else(|| html(StatusCode::NOT_FOUND, "not found\n".into())),
                _ => html(StatusCode::NOT_FOUND, "not found\n".into()),
            };
            server.respond(req.id(), resp)?;
        }
    }
    Ok(())
}

/// Parses the form (streaming, from the spool file), keeps its files, describes the result.
fn upload(req: &Request, dir: &Path, incoming: &Path) -> Response<Body> {
    let content_type = req.header(CONTENT_TYPE).unwrap_or("");
    if !content_type.starts_with("multipart/form-data") {
        return html(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send multipart/form-data\n".into(),
        );
    }
    let limits = MultipartLimits::default().max_parts(32);
    let form = match form::multipart_in(req.body(), content_type, &limits, incoming) {
        Ok(form) => form,
        // 400 for a malformed body, 413 for a limit.
        Err(e) => return e.to_response(),
    };
    let (fields, uploads) = form.into_parts();
    let note = fields
        .iter()
        .find(|f| f.name() == "note")
        .and_then(|f| f.text())
        .unwrap_or("");

    let mut out = String::from("<section id=\"uploaded\"><h2>Uploaded</h2>");
    if !note.is_empty() {
        let _ = write!(out, "<p>Note: {}</p>", escape(note));
    }
    out.push_str("<table><tr><th>file</th><th>bytes</th><th>type</th></tr>");
    let mut kept = 0;
    for file in uploads {
        // An empty file input still sends a part, with no name and no bytes.
        if file.is_empty() && file.client_filename().is_empty() {
            continue;
        }
        let (len, mime) = (file.len(), file.content_type().to_string());
        match keep(file, dir) {
            Ok(name) => {
                kept += 1;
                let _ = write!(
                    out,
                    "<tr><td><a href=\"/files/{}\">{}</a></td><td>{len}</td><td>{}</td></tr>",
                    percent_encode(&name),
                    escape(&name),
                    escape(&mime)
                );
            }
            Err(e) => {
                eprintln!("keeping an upload failed: {e}");
                return html(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "could not store the file\n".into(),
                );
            }
        }
    }
    let _ = write!(out, "</table><p>{kept} file(s) stored.</p></section>");
    // The page's script asks for the fragment; a plain form post gets a whole page.
    if req.header("x-requested-with") == Some("XMLHttpRequest") {
        html(StatusCode::OK, out)
    } else {
        html(
            StatusCode::OK,
            format!(
                "<!doctype html><meta charset=\"utf-8\"><title>Uploaded</title>{out}\
                 <p><a href=\"/\">Upload more</a></p>"
            ),
        )
    }
}

/// Moves an upload into `dir` under its sanitized name, never over an existing file.
fn keep(file: UploadedFile, dir: &Path) -> std::io::Result<String> {
    let base = file.filename().unwrap_or("upload.bin").to_string();
    let mut name = base.clone();
    let mut n = 1;
    while dir.join(&name).exists() {
        n += 1;
        name = format!("{n}-{base}");
    }
    file.persist(dir.join(&name))?;
    Ok(name)
}

/// The form page with the list of stored files.
fn page(dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    let mut list = String::from("<ul>");
    for name in &names {
        let _ = write!(
            list,
            "<li><a href=\"/files/{}\">{}</a></li>",
            percent_encode(name),
            escape(name)
        );
    }
    list.push_str("</ul>");
    if names.is_empty() {
        list = "<p>None yet.</p>".into();
    }
    PAGE.replace("<!--FILES-->", &list)
}

fn html(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a file name for use as one URL path segment.
fn percent_encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}
