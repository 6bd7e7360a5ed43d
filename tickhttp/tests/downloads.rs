//! Downloads: `Content-Disposition` (RFC 6266, `filename*` for non-ASCII names), ranges and
//! resumption, validators, and error statuses.

mod util;

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use tickhttp::{Request, Server};
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

/// `/dl?file=F&name=N[&mime=M]` downloads `dir/F` as N.
fn download_server(dir: PathBuf) -> TestServer {
    start(config(), move |server: &mut Server, req: Request| {
        let file = req.query_param("file").unwrap_or_default();
        let name = req.query_param("name").unwrap_or_default();
        let mime = req.query_param("mime");
        let resp = tickhttp::fs::download(&req, dir.join(file), &name, mime.as_deref());
        server.respond(req.id(), resp).unwrap();
    })
}

fn fixture() -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let data = noise(250_000, 3);
    std::fs::write(dir.path().join("report.bin"), &data).unwrap();
    (dir, data)
}

fn get_with(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    let mut raw = format!("GET {path} HTTP/1.1\r\nHost: t\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    let mut s = connect(addr);
    s.write_all(raw.as_bytes()).unwrap();
    read_response(&mut s, &mut Vec::new(), false).expect("no response")
}

#[test]
fn attachment_headers_and_body() {
    let (dir, data) = fixture();
    let server = download_server(dir.path().to_path_buf());
    let r = get_with(server.addr, "/dl?file=report.bin&name=report.pdf", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"report.pdf\"")
    );
    assert_eq!(r.header("content-type"), Some("application/pdf"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert!(r.header("etag").is_some() && r.header("last-modified").is_some());

    let r = get_with(
        server.addr,
        "/dl?file=report.bin&name=%D0%BE%D1%82%D1%87%D1%91%D1%82%20%222026%22.csv&mime=text/csv",
        &[],
    );
    assert_eq!(
        r.header("content-disposition"),
        Some(
            "attachment; filename=\"_____ _2026_.csv\"; \
             filename*=UTF-8''%D0%BE%D1%82%D1%87%D1%91%D1%82%20%222026%22.csv"
        )
    );
    assert_eq!(r.header("content-type"), Some("text/csv"));
}

#[test]
fn ranges_and_validators() {
    let (dir, data) = fixture();
    let server = download_server(dir.path().to_path_buf());
    let path = "/dl?file=report.bin&name=r.bin";
    let r = get_with(server.addr, path, &[("Range", "bytes=1000-1999")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[1000..2000]);
    assert_eq!(r.header("content-range"), Some("bytes 1000-1999/250000"));
    assert!(r.header("content-disposition").is_some());

    let r = get_with(server.addr, path, &[("Range", "bytes=0-0,-1")]);
    assert_eq!(r.status, 206);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("multipart/byteranges; boundary="));

    let r = get_with(server.addr, path, &[("Range", "bytes=250000-")]);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */250000"));

    let etag = get_with(server.addr, path, &[])
        .header("etag")
        .unwrap()
        .to_string();
    assert_eq!(
        get_with(server.addr, path, &[("If-None-Match", &etag)]).status,
        304
    );
    let r = get_with(
        server.addr,
        path,
        &[("Range", "bytes=10-"), ("If-Range", &etag)],
    );
    assert_eq!((r.status, r.body.len()), (206, data.len() - 10));
    // The file changed since the client's copy: the whole new file, not a splice.
    let r = get_with(
        server.addr,
        path,
        &[("Range", "bytes=10-"), ("If-Range", "\"stale\"")],
    );
    assert_eq!((r.status, r.body.len()), (200, data.len()));
}

#[test]
fn missing_and_unreadable_files() {
    let (dir, _) = fixture();
    let server = download_server(dir.path().to_path_buf());
    assert_eq!(
        get_with(server.addr, "/dl?file=nope&name=x", &[]).status,
        404
    );
    // A directory is not a file.
    assert_eq!(get_with(server.addr, "/dl?file=.&name=x", &[]).status, 404);
    let locked = dir.path().join("locked.bin");
    std::fs::write(&locked, b"x").unwrap();
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    // Root reads anything; only check the status when the file is really unreadable.
    if std::fs::File::open(&locked).is_err() {
        assert_eq!(
            get_with(server.addr, "/dl?file=locked.bin&name=x", &[]).status,
            403
        );
    }
}

#[test]
fn curl_saves_the_attachment_and_resumes() {
    if !Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("curl is not installed: skipping");
        return;
    }
    let (dir, data) = fixture();
    let server = download_server(dir.path().to_path_buf());
    let out = tempfile::tempdir().unwrap();
    let url = format!("http://{}/dl?file=report.bin&name=saved.bin", server.addr);
    // -O -J: curl names the file from Content-Disposition.
    let status = Command::new("curl")
        .current_dir(out.path())
        .args(["-s", "--max-time", "10", "-O", "-J", &url])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(std::fs::read(out.path().join("saved.bin")).unwrap(), data);

    let partial = out.path().join("partial.bin");
    std::fs::write(&partial, &data[..100_000]).unwrap();
    let status = Command::new("curl")
        .args(["-s", "--max-time", "10", "-C", "-", "-o"])
        .arg(&partial)
        .arg(&url)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(std::fs::read(&partial).unwrap(), data);
}
