//! Static files: path safety, index files, validators and conditional requests, ranges,
//! precompressed siblings, the cache, and real clients (curl).

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use http::{Method, Request as HttpRequest, Response, StatusCode};
use tickhttp::fs::{StaticConfig, StaticFiles};
use tickhttp::{Body, Request, Server};
use util::*;

const HELLO: &[u8] = b"hello world\n";

/// Pseudo-random bytes (xorshift), so a test's data is the same on every run.
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

/// A site in a temp dir: `public/` is the root; `public_secret/` is a sibling whose name
/// starts with the root's (the reference server's prefix-check escape).
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("public");
        let secret = dir.path().join("public_secret");
        for d in [
            &p,
            &secret,
            &p.join("sub"),
            &p.join(".well-known"),
            &p.join(".git"),
        ] {
            std::fs::create_dir_all(d).unwrap();
        }
        let write = |rel: &str, data: &[u8]| std::fs::write(p.join(rel), data).unwrap();
        write("hello.txt", HELLO);
        write("index.html", b"<h1>home</h1>");
        write("sub/index.html", b"<h1>sub</h1>");
        write("a b+c.txt", b"spaces and plus");
        write("été.txt", b"accents");
        write(".env", b"SECRET=1");
        write(".git/config", b"[core]");
        write(".well-known/security.txt", b"Contact: x");
        write("big.bin", &noise(300_000, 7));
        write("style.css", b"body { color: red }");
        write("style.css.gz", b"GZIPPED");
        write("style.css.br", b"BROTLI");
        write("empty.txt", b"");
        std::fs::write(secret.join("secret.txt"), b"TOP SECRET").unwrap();
        std::fs::write(dir.path().join("outside.txt"), b"TOP SECRET").unwrap();
        std::os::unix::fs::symlink(secret.join("secret.txt"), p.join("link_out")).unwrap();
        std::os::unix::fs::symlink(&secret, p.join("dir_out")).unwrap();
        std::os::unix::fs::symlink(p.join("hello.txt"), p.join("link_in")).unwrap();
        std::os::unix::fs::symlink(p.join(".env"), p.join("env_link")).unwrap();
        Site { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("public")
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }
}

fn not_found() -> Response<Body> {
    let mut r = Response::new(Body::from("app 404"));
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}

/// Serves `files`; `/__stats` answers the cache counters, `/static/...` is a mount.
fn serve_site(files: StaticFiles) -> (TestServer, Arc<Mutex<StaticFiles>>) {
    let files = Arc::new(Mutex::new(files));
    let shared = Arc::clone(&files);
    let server = start(config(), move |server: &mut Server, req: Request| {
        let mut files = shared.lock().unwrap();
        let resp = if let Some(rest) = req.path().strip_prefix("/static") {
            let rest = rest.to_string();
            files.serve_at(&req, &rest)
        } else {
            files.serve(&req)
        };
        server
            .respond(req.id(), resp.unwrap_or_else(not_found))
            .unwrap();
    });
    (server, files)
}

fn site_server() -> (Site, TestServer, Arc<Mutex<StaticFiles>>) {
    let site = Site::new();
    let files = StaticFiles::new(site.root(), StaticConfig::default()).unwrap();
    let (server, files) = serve_site(files);
    (site, server, files)
}

fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> RawResponse {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: t\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    let mut s = connect(addr);
    std::io::Write::write_all(&mut s, raw.as_bytes()).unwrap();
    let mut buf = Vec::new();
    read_response(&mut s, &mut buf, method == "HEAD").expect("no response")
}

fn get_with(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    request(addr, "GET", path, headers)
}

#[test]
fn serves_a_file_with_type_length_and_validators() {
    let (_site, server, _) = site_server();
    let r = get_with(server.addr, "/hello.txt", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, HELLO);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("content-length"), Some("12"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    let etag = r.header("etag").unwrap();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let lm = r.header("last-modified").unwrap();
    assert!(httpdate::parse_http_date(lm).is_ok(), "{lm}");
    assert_eq!(r.header("cache-control"), None);

    assert_eq!(
        get_with(server.addr, "/a%20b+c.txt", &[]).body,
        b"spaces and plus"
    );
    assert_eq!(
        get_with(server.addr, "/%C3%A9t%C3%A9.txt", &[]).body,
        b"accents"
    );
    assert_eq!(get_with(server.addr, "/link_in", &[]).body, HELLO);
    assert_eq!(get_with(server.addr, "/static/hello.txt", &[]).body, HELLO);
    let empty = get_with(server.addr, "/empty.txt", &[]);
    assert_eq!(
        (empty.status, empty.header("content-length")),
        (200, Some("0"))
    );
    let big = get_with(server.addr, "/big.bin", &[]);
    assert_eq!(big.body, noise(300_000, 7));
    assert_eq!(big.header("content-type"), Some("application/octet-stream"));
}

#[test]
fn traversal_attempts_never_reach_files_outside_the_root() {
    let (_site, server, _) = site_server();
    let attempts = [
        "/../public_secret/secret.txt",
        "/..%2fpublic_secret/secret.txt",
        "/..%2Fpublic_secret%2Fsecret.txt",
        "/%2e%2e/public_secret/secret.txt",
        "/%2E%2E/%2E%2E/outside.txt",
        "/.%2e/outside.txt",
        "/sub/../../public_secret/secret.txt",
        "/sub/%2e%2e/%2e%2e/outside.txt",
        "/..%5cpublic_secret%5csecret.txt",
        "/%5c..%5coutside.txt",
        "/hello.txt%00.png",
        "/%00",
        "/link_out",
        "/dir_out/secret.txt",
        "/static/../outside.txt",
        "/static/%2e%2e/outside.txt",
        "/....//outside.txt",
        "/%252e%252e/outside.txt",
        "/%c0%ae%c0%ae/outside.txt",
        "//outside.txt",
        "/.env",
        "/.git/config",
        "/%2egit/config",
        "/env_link",
        "/hello.txt/",
        "/sub/index.html/..",
    ];
    for path in attempts {
        let r = get_with(server.addr, path, &[]);
        assert!(
            matches!(r.status, 400 | 403 | 404),
            "{path}: {} {:?}",
            r.status,
            r.text()
        );
        assert!(!r.text().contains("SECRET"), "{path} leaked");
        assert!(!r.text().contains("[core]"), "{path} leaked");
    }
    // Symlinks that lead out are refused as such.
    assert_eq!(get_with(server.addr, "/link_out", &[]).status, 403);
    assert_eq!(
        get_with(server.addr, "/dir_out/secret.txt", &[]).status,
        403
    );
    // The well-known directory is the exception to hidden dotfiles.
    assert_eq!(
        get_with(server.addr, "/.well-known/security.txt", &[]).body,
        b"Contact: x"
    );
}

#[test]
fn dotfiles_can_be_shown_when_configured() {
    let site = Site::new();
    let files = StaticFiles::new(site.root(), StaticConfig::default().show_dotfiles(true)).unwrap();
    let (server, _) = serve_site(files);
    assert_eq!(get_with(server.addr, "/.env", &[]).body, b"SECRET=1");
    // Still confined to the root.
    assert_eq!(get_with(server.addr, "/link_out", &[]).status, 403);
}

#[test]
fn directories_redirect_then_serve_their_index() {
    let (_site, server, _) = site_server();
    let r = get_with(server.addr, "/", &[]);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"<h1>home</h1>"[..]));
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let r = get_with(server.addr, "/sub?x=1", &[]);
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/sub/?x=1"));
    assert_eq!(get_with(server.addr, "/sub/", &[]).body, b"<h1>sub</h1>");
    assert_eq!(
        get_with(server.addr, "/static/sub/", &[]).body,
        b"<h1>sub</h1>"
    );
    assert_eq!(
        get_with(server.addr, "/static/sub", &[]).header("location"),
        Some("/static/sub/")
    );
    assert_eq!(get_with(server.addr, "/missing.txt", &[]).text(), "app 404");
}

#[test]
fn head_and_other_methods() {
    let (_site, server, _) = site_server();
    let r = request(server.addr, "HEAD", "/big.bin", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("300000"));
    assert!(r.body.is_empty());
    // The connection is still usable: no body bytes were sent after the head.
    let mut s = connect(server.addr);
    let mut buf = Vec::new();
    std::io::Write::write_all(
        &mut s,
        b"HEAD /hello.txt HTTP/1.1\r\nHost: t\r\n\r\nGET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .unwrap();
    let head = read_response(&mut s, &mut buf, true).unwrap();
    assert_eq!(head.header("content-length"), Some("12"));
    assert_eq!(read_response(&mut s, &mut buf, false).unwrap().body, HELLO);

    let r = request(
        server.addr,
        "POST",
        "/hello.txt",
        &[("Content-Length", "0")],
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = request(server.addr, "DELETE", "/missing", &[]);
    assert_eq!(r.text(), "app 404");
}

#[test]
fn conditional_requests() {
    let (_site, server, _) = site_server();
    for path in ["/hello.txt", "/big.bin"] {
        let first = get_with(server.addr, path, &[]);
        let etag = first.header("etag").unwrap().to_string();
        let lm = first.header("last-modified").unwrap().to_string();

        let r = get_with(server.addr, path, &[("If-None-Match", &etag)]);
        assert_eq!(r.status, 304, "{path}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some(etag.as_str()));
        assert_eq!(r.header("content-length"), None);
        let weak = format!("\"nope\", W/{etag}");
        assert_eq!(
            get_with(server.addr, path, &[("If-None-Match", &weak)]).status,
            304
        );
        assert_eq!(
            get_with(server.addr, path, &[("If-None-Match", "*")]).status,
            304
        );
        assert_eq!(
            get_with(server.addr, path, &[("If-Modified-Since", &lm)]).status,
            304
        );
        // If-None-Match wins over If-Modified-Since.
        let r = get_with(
            server.addr,
            path,
            &[("If-None-Match", "\"nope\""), ("If-Modified-Since", &lm)],
        );
        assert_eq!(r.status, 200);
        let past = httpdate::fmt_http_date(std::time::UNIX_EPOCH);
        assert_eq!(
            get_with(server.addr, path, &[("If-Modified-Since", &past)]).status,
            200
        );
        assert_eq!(
            get_with(server.addr, path, &[("If-Match", "\"nope\"")]).status,
            412
        );
        assert_eq!(
            get_with(server.addr, path, &[("If-Match", &etag)]).status,
            200
        );
        assert_eq!(
            request(server.addr, "HEAD", path, &[("If-None-Match", &etag)]).status,
            304
        );
    }
}

#[test]
fn ranges_on_cached_and_sendfile_files() {
    let (_site, server, _) = site_server();
    let big = noise(300_000, 7);
    for (path, data) in [("/hello.txt", HELLO.to_vec()), ("/big.bin", big)] {
        let len = data.len();
        let r = get_with(server.addr, path, &[("Range", "bytes=0-4")]);
        assert_eq!(r.status, 206);
        assert_eq!(r.body, &data[..5]);
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes 0-4/{len}").as_str())
        );
        assert_eq!(r.header("content-length"), Some("5"));

        let r = get_with(server.addr, path, &[("Range", "bytes=-3")]);
        assert_eq!(r.body, &data[len - 3..]);
        let r = get_with(server.addr, path, &[("Range", "bytes=6-")]);
        assert_eq!(r.body, &data[6..]);
        let r = get_with(server.addr, path, &[("Range", "bytes=6-999999999")]);
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes 6-{}/{len}", len - 1).as_str())
        );

        let r = get_with(server.addr, path, &[("Range", "bytes=999999-")]);
        assert_eq!(r.status, 416);
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes */{len}").as_str())
        );
        // Malformed or foreign units are ignored.
        assert_eq!(
            get_with(server.addr, path, &[("Range", "lines=1-2")]).status,
            200
        );
        assert_eq!(
            get_with(server.addr, path, &[("Range", "bytes=5-1")]).status,
            200
        );
        // HEAD ignores Range.
        assert_eq!(
            request(server.addr, "HEAD", path, &[("Range", "bytes=0-1")]).status,
            200
        );

        // Several ranges: multipart/byteranges.
        let r = get_with(server.addr, path, &[("Range", "bytes=0-1, 4-6")]);
        assert_eq!(r.status, 206);
        let ct = r.header("content-type").unwrap();
        let boundary = ct.strip_prefix("multipart/byteranges; boundary=").unwrap();
        let mut expected = Vec::new();
        let inner_ct = if path == "/hello.txt" {
            "text/plain; charset=utf-8"
        } else {
            "application/octet-stream"
        };
        for (a, b) in [(0usize, 1usize), (4, 6)] {
            expected.extend_from_slice(
                format!("--{boundary}\r\nContent-Type: {inner_ct}\r\nContent-Range: bytes {a}-{b}/{len}\r\n\r\n").as_bytes(),
            );
            expected.extend_from_slice(&data[a..=b]);
            expected.extend_from_slice(b"\r\n");
        }
        expected.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        assert_eq!(r.body, expected);

        // If-Range: the current ETag allows the range, another one gets the whole file.
        let etag = get_with(server.addr, path, &[])
            .header("etag")
            .unwrap()
            .to_string();
        let r = get_with(
            server.addr,
            path,
            &[("Range", "bytes=0-4"), ("If-Range", &etag)],
        );
        assert_eq!(r.status, 206);
        let r = get_with(
            server.addr,
            path,
            &[("Range", "bytes=0-4"), ("If-Range", "\"old\"")],
        );
        assert_eq!((r.status, r.body.len()), (200, len));
    }
    // Too many ranges are refused rather than served.
    let many: Vec<String> = (0..40)
        .map(|i| format!("{}-{}", i * 10, i * 10 + 1))
        .collect();
    let header = format!("bytes={}", many.join(","));
    assert_eq!(
        get_with(server.addr, "/big.bin", &[("Range", &header)]).status,
        416
    );
}

#[test]
fn precompressed_siblings_follow_accept_encoding() {
    let (_site, server, _) = site_server();
    let r = get_with(
        server.addr,
        "/style.css",
        &[("Accept-Encoding", "gzip, deflate, br")],
    );
    assert_eq!(r.body, b"BROTLI");
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert_eq!(r.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(r.header("vary"), Some("accept-encoding"));
    let br_etag = r.header("etag").unwrap().to_string();

    let r = get_with(server.addr, "/style.css", &[("Accept-Encoding", "gzip")]);
    assert_eq!(
        (r.body.as_slice(), r.header("content-encoding")),
        (&b"GZIPPED"[..], Some("gzip"))
    );
    assert_ne!(r.header("etag"), Some(br_etag.as_str()));
    let r = get_with(
        server.addr,
        "/style.css",
        &[("Accept-Encoding", "br;q=0, gzip;q=0.5")],
    );
    assert_eq!(r.header("content-encoding"), Some("gzip"));

    let r = get_with(server.addr, "/style.css", &[]);
    assert_eq!(r.body, b"body { color: red }");
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("vary"), Some("accept-encoding"));
    // The compressed representation has its own validator.
    let r = get_with(
        server.addr,
        "/style.css",
        &[("Accept-Encoding", "br"), ("If-None-Match", &br_etag)],
    );
    assert_eq!(r.status, 304);
    assert_eq!(r.header("vary"), Some("accept-encoding"));
    // A file without siblings does not vary.
    let r = get_with(server.addr, "/hello.txt", &[("Accept-Encoding", "br")]);
    assert_eq!(
        (r.header("vary"), r.header("content-encoding")),
        (None, None)
    );
}

#[test]
fn cache_control_is_configurable() {
    let site = Site::new();
    let files = StaticFiles::new(
        site.root(),
        StaticConfig::default().cache_control("public, max-age=60"),
    )
    .unwrap();
    let (server, _) = serve_site(files);
    let r = get_with(server.addr, "/hello.txt", &[]);
    assert_eq!(r.header("cache-control"), Some("public, max-age=60"));
    let etag = r.header("etag").unwrap().to_string();
    let r = get_with(server.addr, "/hello.txt", &[("If-None-Match", &etag)]);
    assert_eq!(r.header("cache-control"), Some("public, max-age=60"));
    assert!(StaticFiles::new(
        site.root(),
        StaticConfig::default().cache_control("bad\nvalue")
    )
    .is_err());
    assert!(StaticFiles::new(site.path("hello.txt"), StaticConfig::default()).is_err());
}

// ----- the cache, without sockets ------------------------------------------------------------

fn get_req(path: &str) -> HttpRequest<()> {
    HttpRequest::builder().uri(path).body(()).unwrap()
}

fn body_bytes(resp: Response<Body>) -> Vec<u8> {
    match resp.into_body() {
        Body::Bytes(b) => b.to_vec(),
        Body::Empty => Vec::new(),
        Body::File { file, offset, len } => {
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0; len as usize];
            file.read_exact_at(&mut buf, offset).unwrap();
            buf
        }
        other => panic!("unexpected body {other:?}"),
    }
}

#[test]
fn small_files_are_served_from_memory_and_large_ones_from_the_file() {
    let site = Site::new();
    let mut files = StaticFiles::new(site.root(), StaticConfig::default()).unwrap();
    let resp = files.serve(&get_req("/hello.txt")).unwrap();
    assert!(matches!(resp.body(), Body::Bytes(_)));
    let resp = files.serve(&get_req("/big.bin")).unwrap();
    assert!(matches!(
        resp.body(),
        Body::File {
            offset: 0,
            len: 300_000,
            ..
        }
    ));
    let resp = files
        .serve(
            &HttpRequest::builder()
                .uri("/big.bin")
                .header("range", "bytes=10-19")
                .body(())
                .unwrap(),
        )
        .unwrap();
    assert!(matches!(
        resp.body(),
        Body::File {
            offset: 10,
            len: 10,
            ..
        }
    ));
    assert_eq!((files.cache_hits(), files.cache_misses()), (1, 2));
}

#[test]
fn edited_files_are_revalidated_and_the_counters_count() {
    let site = Site::new();
    let mut files = StaticFiles::new(site.root(), StaticConfig::default()).unwrap();
    assert_eq!(
        body_bytes(files.serve(&get_req("/hello.txt")).unwrap()),
        HELLO
    );
    assert_eq!(
        body_bytes(files.serve(&get_req("/hello.txt")).unwrap()),
        HELLO
    );
    assert_eq!((files.cache_hits(), files.cache_misses()), (1, 1));

    std::fs::write(site.path("hello.txt"), b"changed, and longer").unwrap();
    assert_eq!(
        body_bytes(files.serve(&get_req("/hello.txt")).unwrap()),
        b"changed, and longer"
    );
    assert_eq!((files.cache_hits(), files.cache_misses()), (1, 2));

    // Replaced by a file of the same size: the inode differs.
    let tmp = site.path("tmp");
    std::fs::write(&tmp, b"CHANGED, AND LONGER").unwrap();
    std::fs::rename(&tmp, site.path("hello.txt")).unwrap();
    assert_eq!(
        body_bytes(files.serve(&get_req("/hello.txt")).unwrap()),
        b"CHANGED, AND LONGER"
    );

    std::fs::remove_file(site.path("hello.txt")).unwrap();
    assert!(files.serve(&get_req("/hello.txt")).is_none());
    assert_eq!(files.cached_paths(), 0);

    // A large file rewritten in place.
    std::fs::write(site.path("big.bin"), noise(200_000, 9)).unwrap();
    assert_eq!(
        body_bytes(files.serve(&get_req("/big.bin")).unwrap()),
        noise(200_000, 9)
    );
    std::fs::write(site.path("big.bin"), noise(210_000, 10)).unwrap();
    assert_eq!(
        body_bytes(files.serve(&get_req("/big.bin")).unwrap()),
        noise(210_000, 10)
    );
}

#[test]
fn the_cache_keeps_within_its_byte_budget() {
    let site = Site::new();
    for i in 0..20 {
        std::fs::write(site.path(&format!("f{i}.bin")), noise(10_000, i)).unwrap();
    }
    let budget = 50_000;
    let mut files = StaticFiles::new(
        site.root(),
        StaticConfig::default()
            .cache_budget(budget)
            .max_cached_file_size(20_000),
    )
    .unwrap();
    for round in 0..2 {
        for i in 0..20 {
            let path = format!("/f{i}.bin");
            assert_eq!(
                body_bytes(files.serve(&get_req(&path)).unwrap()),
                noise(10_000, i),
                "{round}"
            );
            assert!(files.cached_bytes() <= budget);
        }
    }
    assert!(
        files.cached_paths() >= 3 && files.cached_paths() <= 5,
        "{}",
        files.cached_paths()
    );
    // The most recent ones are hits.
    let before = files.cache_hits();
    files.serve(&get_req("/f19.bin")).unwrap();
    assert_eq!(files.cache_hits(), before + 1);

    // No cache at all still serves, from the file.
    let mut uncached =
        StaticFiles::new(site.root(), StaticConfig::default().cache_budget(0)).unwrap();
    let resp = uncached.serve(&get_req("/hello.txt")).unwrap();
    assert!(matches!(resp.body(), Body::File { .. }));
    assert_eq!(uncached.cached_paths(), 0);
}

#[test]
fn methods_and_fall_through_without_sockets() {
    let site = Site::new();
    let mut files = StaticFiles::new(site.root(), StaticConfig::default().index(None)).unwrap();
    assert!(files.serve(&get_req("/nope")).is_none());
    assert!(
        files.serve(&get_req("/sub/")).is_none(),
        "no index configured"
    );
    let post = HttpRequest::builder()
        .method(Method::POST)
        .uri("/hello.txt")
        .body(())
        .unwrap();
    assert_eq!(
        files.serve(&post).unwrap().status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
    // Cached entries answer other methods the same way.
    files.serve(&get_req("/hello.txt")).unwrap();
    assert_eq!(
        files.serve(&post).unwrap().status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
}

// ----- curl ----------------------------------------------------------------------------------

fn curl_available() -> bool {
    let ok = Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("curl is not installed: skipping the curl tests");
    }
    ok
}

/// Runs curl, returning (headers, body) as written with `-D` and `-o`.
fn curl(args: &[&str], out: &Path) -> (String, Vec<u8>) {
    let headers = out.with_extension("headers");
    let _ = std::fs::remove_file(out);
    let status = Command::new("curl")
        .args(["-s", "--max-time", "10", "-D"])
        .arg(&headers)
        .arg("-o")
        .arg(out)
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "curl {args:?} failed");
    (
        std::fs::read_to_string(&headers).unwrap(),
        std::fs::read(out).unwrap_or_default(),
    )
}

fn header_of<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn curl_ranges_and_conditional_requests() {
    if !curl_available() {
        return;
    }
    let (site, server, _) = site_server();
    let out = site.dir.path().join("curl.out");
    let url = format!("http://{}/big.bin", server.addr);
    let data = noise(300_000, 7);

    let (head, body) = curl(&["-r", "0-99", &url], &out);
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    assert_eq!(body, &data[..100]);
    assert_eq!(header_of(&head, "content-range"), Some("bytes 0-99/300000"));

    let (_, body) = curl(&["-r", "-1000", &url], &out);
    assert_eq!(body, &data[data.len() - 1000..]);

    let (head, body) = curl(&[&url], &out);
    assert_eq!(body, data);
    let etag = header_of(&head, "etag").unwrap().to_string();
    let (head, body) = curl(&["-H", &format!("If-None-Match: {etag}"), &url], &out);
    assert!(head.starts_with("HTTP/1.1 304"), "{head}");
    assert!(body.is_empty());
    let (head, _) = curl(&["-z", "Sat, 01 Jan 2000 00:00:00 GMT", &url], &out);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (head, _) = curl(&["-z", "Fri, 01 Jan 2100 00:00:00 GMT", &url], &out);
    assert!(head.starts_with("HTTP/1.1 304"), "{head}");

    // Resuming a partial download.
    std::fs::write(&out, &data[..123_456]).unwrap();
    let status = Command::new("curl")
        .args(["-s", "--max-time", "10", "-C", "-", "-o"])
        .arg(&out)
        .arg(&url)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(std::fs::read(&out).unwrap(), data);

    let (head, _) = curl(&["-r", "400000-", &url], &out);
    assert!(head.starts_with("HTTP/1.1 416"), "{head}");
    assert_eq!(header_of(&head, "content-range"), Some("bytes */300000"));

    // curl sends the path as given with --path-as-is: the traversal still fails.
    let evil = format!("http://{}/../public_secret/secret.txt", server.addr);
    let (head, body) = curl(&["--path-as-is", &evil], &out);
    assert!(!head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!String::from_utf8_lossy(&body).contains("SECRET"));
}
