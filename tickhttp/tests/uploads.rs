//! Uploads and request bodies: multipart with curl (byte-exact, spooled and in memory),
//! limits, malformed bodies, temp-file cleanup, urlencoded and JSON bodies, queries and
//! cookies.

mod util;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use http::{Response, StatusCode};
use tickhttp::form::{self, Form, MultipartLimits};
use tickhttp::{Body, Request, Server};
use util::*;

fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r
}

/// The upload app.
///
/// - `POST /upload`: files are persisted into `out` under their sanitized names; the answer
///   lists fields and files.
/// - `POST /small`: tight limits.
/// - `POST /discard`: files go to `scratch` and are dropped with the form.
/// - `POST /json`: echoes the parsed JSON.
/// - `GET /echo`: query pairs and cookies.
fn upload_app(out: PathBuf, scratch: PathBuf) -> impl FnMut(&mut Server, Request) + Send {
    move |server: &mut Server, req: Request| {
        let resp = match req.path() {
            "/upload" => match Form::from_request(&req, &MultipartLimits::default()) {
                Ok(form) => {
                    let mut listing = String::new();
                    for f in form.fields() {
                        listing.push_str(&format!(
                            "field {}={}\n",
                            f.name(),
                            f.text().unwrap_or("?")
                        ));
                    }
                    let (_, files) = form.into_parts();
                    for f in files {
                        listing.push_str(&format!(
                            "file {} {:?} {:?} {} {}\n",
                            f.name(),
                            f.client_filename(),
                            f.filename(),
                            f.content_type(),
                            f.len()
                        ));
                        let name = f.filename().unwrap_or("unnamed").to_string();
                        f.persist(out.join(name)).unwrap();
                    }
                    text(StatusCode::OK, listing)
                }
                Err(e) => e.to_response(),
            },
            "/small" => {
                let limits = MultipartLimits::default()
                    .max_field_size(16)
                    .max_file_size(1000)
                    .max_parts(3);
                match Form::from_request(&req, &limits) {
                    Ok(_) => text(StatusCode::OK, "ok".into()),
                    Err(e) => e.to_response(),
                }
            }
            "/discard" => {
                let ct = req.header("content-type").unwrap_or("").to_string();
                match form::multipart_in(req.body(), &ct, &MultipartLimits::default(), &scratch) {
                    Ok(form) => {
                        let n = std::fs::read_dir(&scratch).unwrap().count();
                        text(
                            StatusCode::OK,
                            format!("{} files, {n} on disk", form.files().len()),
                        )
                    }
                    Err(e) => e.to_response(),
                }
            }
            "/json" => match form::json_request::<serde_json::Value>(&req, 1 << 20) {
                Ok(v) => text(StatusCode::OK, v.to_string()),
                Err(e) => e.to_response(),
            },
            "/echo" => {
                let q = form::query_pairs(req.query());
                let c = form::cookies(req.headers());
                text(StatusCode::OK, format!("{q:?} {c:?}"))
            }
            _ => text(StatusCode::NOT_FOUND, "no".into()),
        };
        server.respond(req.id(), resp).unwrap();
    }
}

struct Env {
    _dir: tempfile::TempDir,
    files: PathBuf,
    out: PathBuf,
    scratch: PathBuf,
    server: TestServer,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let (files, out, scratch) = (
        dir.path().join("in"),
        dir.path().join("out"),
        dir.path().join("scratch"),
    );
    for d in [&files, &out, &scratch] {
        std::fs::create_dir(d).unwrap();
    }
    let server = start(config(), upload_app(out.clone(), scratch.clone()));
    Env {
        _dir: dir,
        files,
        out,
        scratch,
        server,
    }
}

fn curl_available() -> bool {
    let ok = Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("curl is not installed: skipping");
    }
    ok
}

/// Runs curl and returns (status, body).
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

#[test]
fn curl_uploads_random_binary_files_byte_exact() {
    if !curl_available() {
        return;
    }
    let env = env();
    let samples: Vec<(&str, Vec<u8>)> = vec![
        // Above the 1 MiB spool threshold: parsed from the server's temp file.
        ("big.bin", noise(3 * 1024 * 1024 + 17, 1)),
        ("small.bin", noise(10_000, 2)),
        // What the reference server's trim() destroyed.
        ("trailing.bin", b"data \t\r\n\0\x0b\r\n\r\n".to_vec()),
        ("empty.bin", Vec::new()),
        // Lines that look like boundaries.
        (
            "dashes.bin",
            b"\r\n--\r\n------------------------\r\n--x--\r\n".to_vec(),
        ),
    ];
    let mut args: Vec<String> = vec!["-F".into(), "title=hello world".into()];
    for (i, (name, data)) in samples.iter().enumerate() {
        let path = env.files.join(name);
        std::fs::write(&path, data).unwrap();
        args.push("-F".into());
        args.push(format!("f{i}=@{}", path.display()));
    }
    args.push(format!("http://{}/upload", env.server.addr));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, listing) = curl(&argv);
    assert_eq!(status, 200, "{listing}");
    assert!(listing.contains("field title=hello world"), "{listing}");
    for (name, data) in &samples {
        let got = std::fs::read(env.out.join(name)).unwrap();
        assert!(
            got == *data,
            "{name} differs ({} vs {} bytes)",
            got.len(),
            data.len()
        );
    }
}

#[test]
fn client_file_names_are_sanitized() {
    if !curl_available() {
        return;
    }
    let env = env();
    let path = env.files.join("x.bin");
    std::fs::write(&path, b"payload").unwrap();
    let url = format!("http://{}/upload", env.server.addr);
    let (status, listing) = curl(&[
        "-F",
        &format!("doc=@{};filename=../../etc/evil name.txt", path.display()),
        "-F",
        &format!("doc2=@{};filename=.hidden", path.display()),
        &url,
    ]);
    assert_eq!(status, 200, "{listing}");
    assert!(
        listing.contains("\"../../etc/evil name.txt\" Some(\"evil name.txt\")"),
        "{listing}"
    );
    assert!(env.out.join("evil name.txt").exists());
    assert!(env.out.join("hidden").exists());
    assert_eq!(std::fs::read_dir(&env.out).unwrap().count(), 2);
}

#[test]
fn limits_answer_413_with_a_message() {
    if !curl_available() {
        return;
    }
    let env = env();
    let url = format!("http://{}/small", env.server.addr);
    let (status, body) = curl(&["-F", "comment=this is longer than sixteen bytes", &url]);
    assert_eq!(status, 413);
    assert!(
        body.contains("field \"comment\" exceeds 16 bytes"),
        "{body}"
    );

    let path = env.files.join("big");
    std::fs::write(&path, vec![7u8; 1001]).unwrap();
    let (status, body) = curl(&["-F", &format!("up=@{}", path.display()), &url]);
    assert_eq!(status, 413);
    assert!(body.contains("file \"up\" exceeds 1000 bytes"), "{body}");

    let (status, body) = curl(&["-F", "a=1", "-F", "b=2", "-F", "c=3", "-F", "d=4", &url]);
    assert_eq!(status, 413);
    assert!(body.contains("more than 3 parts"), "{body}");

    let (status, _) = curl(&["-F", "a=1", &url]);
    assert_eq!(status, 200);
}

fn post(addr: std::net::SocketAddr, path: &str, content_type: &str, body: &[u8]) -> RawResponse {
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    let mut s = connect(addr);
    s.write_all(&raw).unwrap();
    read_response(&mut s, &mut Vec::new(), false).expect("no response")
}

#[test]
fn malformed_bodies_and_other_types() {
    let env = env();
    let addr = env.server.addr;
    let ok_part = b"--b\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--b--\r\n";
    assert_eq!(
        post(addr, "/upload", "multipart/form-data; boundary=b", ok_part).status,
        200
    );
    let cases: &[(&str, &[u8])] = &[
        ("multipart/form-data", ok_part),
        ("multipart/form-data; boundary=", ok_part),
        ("multipart/form-data; boundary=\"bad boundary \"", ok_part),
        (
            "multipart/form-data; boundary=b",
            b"--b\r\nContent-Disposition: form-data; name=a\r\n\r\n1",
        ),
        ("multipart/form-data; boundary=b", b"garbage"),
        (
            "multipart/form-data; boundary=b",
            b"--b\r\nNo-Colon\r\n\r\nx\r\n--b--",
        ),
    ];
    for (ct, body) in cases {
        let r = post(addr, "/upload", ct, body);
        assert_eq!(
            r.status,
            400,
            "{ct} {:?}: {}",
            String::from_utf8_lossy(body),
            r.text()
        );
    }
    let r = post(addr, "/upload", "text/plain", b"x");
    assert_eq!(r.status, 415);
    let r = post(
        addr,
        "/upload",
        "application/x-www-form-urlencoded",
        b"a=1&b=x+y%21",
    );
    assert_eq!(r.text(), "field a=1\nfield b=x y!\n");
}

#[test]
fn temp_files_are_removed_unless_persisted() {
    let env = env();
    let mut body =
        b"--b\r\nContent-Disposition: form-data; name=f; filename=a.bin\r\n\r\n".to_vec();
    body.extend_from_slice(&noise(2 * 1024 * 1024, 5));
    body.extend_from_slice(b"\r\n--b--\r\n");
    let r = post(
        env.server.addr,
        "/discard",
        "multipart/form-data; boundary=b",
        &body,
    );
    assert_eq!(r.text(), "1 files, 1 on disk");
    // The form was dropped with the request: its temp file is gone.
    assert!(wait_until(std::time::Duration::from_secs(2), || {
        std::fs::read_dir(&env.scratch).unwrap().count() == 0
    }));
    // A failed parse leaves nothing behind either.
    let truncated = &body[..body.len() - 12];
    let r = post(
        env.server.addr,
        "/discard",
        "multipart/form-data; boundary=b",
        truncated,
    );
    assert_eq!(r.status, 400);
    assert_eq!(std::fs::read_dir(&env.scratch).unwrap().count(), 0);
}

#[test]
fn json_query_and_cookies() {
    let env = env();
    let addr = env.server.addr;
    let r = post(
        addr,
        "/json",
        "application/json",
        br#"{"a":[1,2,{"b":null}]}"#,
    );
    assert_eq!(r.text(), r#"{"a":[1,2,{"b":null}]}"#);
    assert_eq!(
        post(addr, "/json", "application/json", b"{oops").status,
        400
    );
    assert_eq!(post(addr, "/json", "text/plain", b"{}").status, 415);
    assert_eq!(
        post(addr, "/json", "application/problem+json", b"{}").status,
        200
    );

    let r = exchange(
        addr,
        b"GET /echo?q=a+b%26c&empty=&flag HTTP/1.1\r\nHost: t\r\nCookie: sid=1; theme=\"dark\"\r\nCookie: x=%41\r\n\r\n",
    );
    assert_eq!(
        r.text(),
        r#"[("q", "a b&c"), ("empty", ""), ("flag", "")] [("sid", "1"), ("theme", "dark"), ("x", "%41")]"#
    );
}

#[test]
fn the_upload_dir_is_per_process() {
    let dir = form::upload_dir().unwrap();
    assert_eq!(
        dir.file_name().and_then(|n| n.to_str()),
        Some(format!("tickhttp-{}", std::process::id()).as_str())
    );
    assert!(Path::new(&dir).is_dir());
}
