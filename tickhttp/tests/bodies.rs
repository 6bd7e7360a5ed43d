//! Request and response bodies: framing both ways, spooling, bodiless responses, streams,
//! files and slow readers.

#[path = "util/extra.rs"]
mod extra;
mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH};
use http::{Response, StatusCode};
use tickhttp::{Body, Request, Server, StreamClosed};
use util::*;

fn send(s: &mut TcpStream, raw: impl AsRef<[u8]>) {
    s.write_all(raw.as_ref()).unwrap();
}

/// Reads a response head (through the blank line) and returns it as text; what was read
/// past it stays in `buf`.
fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> String {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(buf[..i + 4].to_vec()).unwrap();
            buf.drain(..i + 4);
            return head;
        }
        assert!(fill(s, buf), "EOF inside a response head");
    }
}

/// Reads until `buf` ends with `suffix`.
fn read_until_suffix(s: &mut TcpStream, buf: &mut Vec<u8>, suffix: &[u8]) {
    while !buf.ends_with(suffix) {
        assert!(
            fill(s, buf),
            "EOF before {:?}",
            String::from_utf8_lossy(suffix)
        );
    }
}

// ----- request bodies -------------------------------------------------------------------------

#[test]
fn content_length_body_is_echoed_byte_exact() {
    let server = start(config(), standard_app);
    let body: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    let mut s = connect(server.addr);
    let mut wire = format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    wire.extend_from_slice(&body);
    // The body in several writes, the last one together with the next request.
    let (a, b) = wire.split_at(wire.len() - 1000);
    send(&mut s, a);
    std::thread::sleep(Duration::from_millis(5));
    let mut tail = b.to_vec();
    tail.extend_from_slice(get("/next").as_bytes());
    send(&mut s, &tail);
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body);
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.text(), "/next");
}

#[test]
fn chunked_body_with_extensions_and_trailers_is_decoded() {
    let server = start(config(), standard_app);
    let mut s = connect(server.addr);
    send(
        &mut s,
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
         5;name=value\r\nhello\r\n\
         1;quoted=\"a b\";flag\r\n \r\n\
         A\r\n0123456789\r\n\
         0;last=1\r\nX-Checksum: 123\r\nX-Other: a, b\r\n\r\n",
    );
    send(&mut s, get("/after-trailers"));
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello 0123456789");
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(
        r.text(),
        "/after-trailers",
        "trailers were consumed exactly"
    );
}

/// Answers `/spool` with what the app saw of a spooled body: its length, whether it was
/// spooled, whether the file existed while the request was alive, in which directory, and
/// whether it was gone right after the request was dropped; then the body itself.
fn spool_app(server: &mut Server, req: Request) {
    let id = req.id();
    let path: Option<PathBuf> = req.body().path().map(Path::to_path_buf);
    let exists_while_alive = path.as_deref().is_some_and(Path::exists);
    let dir = path
        .as_deref()
        .and_then(Path::parent)
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let data = req.body().to_vec().unwrap();
    let len = req.body().len();
    drop(req);
    let exists_after_drop = path.as_deref().is_some_and(Path::exists);
    let mut out = format!(
        "len={len} spooled={} alive={exists_while_alive} dropped={exists_after_drop} dir={dir}\n",
        path.is_some()
    )
    .into_bytes();
    out.extend_from_slice(&data);
    server.respond(id, Response::new(out.into())).unwrap();
}

fn split_report(r: &RawResponse) -> (String, Vec<u8>) {
    let nl = r.body.iter().position(|&b| b == b'\n').unwrap();
    (
        String::from_utf8(r.body[..nl].to_vec()).unwrap(),
        r.body[nl + 1..].to_vec(),
    )
}

#[test]
fn body_above_the_spool_threshold_is_a_temp_file_removed_with_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config()
        .body_spool_threshold(1024)
        .spool_dir(Some(dir.path().to_path_buf()));
    let server = start(cfg, spool_app);
    let dir_text = dir.path().display().to_string();

    let mut s = connect(server.addr);
    let mut buf = Vec::new();
    for (len, chunked, spooled) in [
        (1024usize, false, false),
        (1025, false, true),
        (50_000, false, true),
        (3000, true, true),
        (1000, true, false),
    ] {
        let body = extra::random_bytes(len, len as u64);
        let wire = if chunked {
            let mut w =
                b"POST /spool HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for piece in body.chunks(700) {
                w.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                w.extend_from_slice(piece);
                w.extend_from_slice(b"\r\n");
            }
            w.extend_from_slice(b"0\r\n\r\n");
            w
        } else {
            let mut w = format!("POST /spool HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n")
                .into_bytes();
            w.extend_from_slice(&body);
            w
        };
        send(&mut s, &wire);
        let r = read_response(&mut s, &mut buf, false).unwrap();
        assert_eq!(r.status, 200);
        let (report, data) = split_report(&r);
        assert_eq!(data, body, "body of {len} bytes (chunked: {chunked})");
        if spooled {
            assert_eq!(
                report,
                format!("len={len} spooled=true alive=true dropped=false dir={dir_text}"),
                "chunked: {chunked}"
            );
        } else {
            assert_eq!(
                report,
                format!("len={len} spooled=false alive=false dropped=false dir="),
                "chunked: {chunked}"
            );
        }
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "spool files left behind: {left:?}");
}

#[test]
fn spooled_body_of_an_unanswered_request_is_removed_when_its_connection_goes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config()
        .body_spool_threshold(1024)
        .spool_dir(Some(dir.path().to_path_buf()));
    // The app never looks at the body; the server discards a half-read one with its connection.
    let server = start(cfg, |_server: &mut Server, _req: Request| {});
    let mut s = connect(server.addr);
    send(
        &mut s,
        format!(
            "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n{}",
            "a".repeat(5000)
        ),
    );
    let spooled = wait_until(Duration::from_secs(3), || {
        std::fs::read_dir(dir.path()).unwrap().count() == 1
    });
    assert!(spooled, "the partial body was not spooled");
    drop(s);
    let gone = wait_until(Duration::from_secs(3), || {
        std::fs::read_dir(dir.path()).unwrap().count() == 0
    });
    assert!(gone, "the spool file outlived its connection");
}

// ----- bodiless responses ---------------------------------------------------------------------

#[test]
fn head_response_has_content_length_but_no_body() {
    let server = start(config(), standard_app);
    let mut s = connect(server.addr);
    send(
        &mut s,
        format!("HEAD /abcdef HTTP/1.1\r\nHost: t\r\n\r\n{}", get("/after")),
    );
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, true).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("7"), "what GET would send");
    // Had the HEAD response carried a body, the next response would not parse.
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "/after");
    assert!(buf.is_empty());
}

fn bodiless_app(server: &mut Server, req: Request) {
    if req.path() == "/bodiless" {
        let code: u16 = req.query_param("code").unwrap().parse().unwrap();
        let mut resp = Response::new(Body::from("this must not be sent"));
        *resp.status_mut() = StatusCode::from_u16(code).unwrap();
        resp.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("21"));
        server.respond(req.id(), resp).unwrap();
    } else if req.path() == "/bodiless-stream" {
        let (tx, body) = Body::channel();
        let mut resp = Response::new(body);
        *resp.status_mut() = StatusCode::NO_CONTENT;
        server.respond(req.id(), resp).unwrap();
        // Whatever the producer sends, a 204 carries none of it.
        let _ = tx.send("this must not be sent either");
    } else {
        standard_app(server, req);
    }
}

#[test]
fn no_content_and_not_modified_have_no_body_and_no_length() {
    let server = start(config(), bodiless_app);
    for target in [
        "/bodiless?code=204",
        "/bodiless?code=304",
        "/status?code=204",
        "/status?code=304",
        "/bodiless-stream",
    ] {
        let mut s = connect(server.addr);
        send(&mut s, format!("{}{}", get(target), get("/after")));
        let mut buf = Vec::new();
        let head = read_head(&mut s, &mut buf);
        let lower = head.to_ascii_lowercase();
        assert!(
            lower.starts_with("http/1.1 204 ") || lower.starts_with("http/1.1 304 "),
            "{target}: {head}"
        );
        assert!(!lower.contains("content-length"), "{target}: {head}");
        assert!(!lower.contains("transfer-encoding"), "{target}: {head}");
        let r = read_response(&mut s, &mut buf, false).unwrap();
        assert_eq!(r.text(), "/after", "{target}: stray body bytes");
        assert!(buf.is_empty());
    }
}

// ----- streamed responses ---------------------------------------------------------------------

fn stream_app(
    reports: mpsc::Sender<(usize, Result<(), StreamClosed>, bool)>,
) -> impl FnMut(&mut Server, Request) + Send + 'static {
    move |server: &mut Server, req: Request| {
        let id = req.id();
        match req.path() {
            "/stream" => {
                // Five parts, 20 ms apart, from a background task.
                let (tx, body) = Body::channel();
                server.respond(id, Response::new(body)).unwrap();
                let timer = server.timer();
                server.spawn(async move {
                    for i in 0..5 {
                        timer.sleep(Duration::from_millis(20)).await;
                        tx.send(format!("part{i};")).unwrap();
                    }
                    // Dropping the sender ends the body.
                });
            }
            "/one-then-drop" => {
                let (tx, body) = Body::channel();
                server.respond(id, Response::new(body)).unwrap();
                let timer = server.timer();
                server.spawn(async move {
                    tx.send("only").unwrap();
                    timer.sleep(Duration::from_millis(30)).await;
                    drop(tx);
                });
            }
            "/dropped-before-respond" => {
                let (tx, body) = Body::channel();
                tx.send("early").unwrap();
                drop(tx);
                server.respond(id, Response::new(body)).unwrap();
            }
            "/abort" => {
                let (tx, body) = Body::channel();
                server.respond(id, Response::new(body)).unwrap();
                let timer = server.timer();
                server.spawn(async move {
                    tx.send("partial").unwrap();
                    timer.sleep(Duration::from_millis(30)).await;
                    tx.abort();
                });
            }
            "/forever" => {
                // Sends 1 KiB every 5 ms until the client is gone, then reports.
                let (tx, body) = Body::channel();
                server.respond(id, Response::new(body)).unwrap();
                let timer = server.timer();
                let reports = reports.clone();
                server.spawn(async move {
                    let mut sent = 0;
                    let result = loop {
                        if let Err(e) = tx.send(vec![b'x'; 1024]) {
                            break Err(e);
                        }
                        sent += 1;
                        if sent > 2000 {
                            break Ok(());
                        }
                        timer.sleep(Duration::from_millis(5)).await;
                    };
                    let _ = reports.send((sent, result, tx.is_closed()));
                });
            }
            _ => standard_app(server, req),
        }
    }
}

#[test]
fn streamed_body_is_chunked_on_http11_one_chunk_per_send() {
    let (rtx, _rrx) = mpsc::channel();
    let server = start(config(), stream_app(rtx));
    let mut s = connect(server.addr);
    let started = Instant::now();
    send(&mut s, get("/stream"));
    let mut buf = Vec::new();
    let head = read_head(&mut s, &mut buf).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 "), "{head}");
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    read_until_suffix(&mut s, &mut buf, b"0\r\n\r\n");
    let expected: String = (0..5).map(|i| format!("6\r\npart{i};\r\n")).collect();
    assert_eq!(
        String::from_utf8_lossy(&buf),
        format!("{expected}0\r\n\r\n")
    );
    assert!(
        started.elapsed() >= Duration::from_millis(95),
        "the parts were produced over about 100 ms"
    );
    // The connection is still usable after the stream.
    buf.clear();
    send(&mut s, get("/next"));
    assert_eq!(
        read_response(&mut s, &mut buf, false).unwrap().text(),
        "/next"
    );
}

#[test]
fn streamed_body_is_close_delimited_on_http10() {
    let (rtx, _rrx) = mpsc::channel();
    let server = start(config(), stream_app(rtx));
    let mut s = connect(server.addr);
    send(
        &mut s,
        "GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    );
    let mut buf = Vec::new();
    let head = read_head(&mut s, &mut buf).to_ascii_lowercase();
    assert!(head.contains("connection: close\r\n"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    let rest = extra::read_to_eof(&mut s).expect("clean EOF ends the body");
    buf.extend_from_slice(&rest);
    assert_eq!(
        String::from_utf8_lossy(&buf),
        "part0;part1;part2;part3;part4;"
    );
}

#[test]
fn dropping_the_sender_ends_the_body() {
    let (rtx, _rrx) = mpsc::channel();
    let server = start(config(), stream_app(rtx));
    let mut s = connect(server.addr);
    let mut buf = Vec::new();
    send(&mut s, get("/one-then-drop"));
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.text(), "only");
    send(&mut s, get("/dropped-before-respond"));
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.text(), "early");
    send(&mut s, get("/still-open"));
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.text(), "/still-open");
    assert!(buf.is_empty());
}

#[test]
fn aborted_stream_closes_without_the_last_chunk() {
    let (rtx, _rrx) = mpsc::channel();
    let server = start(config(), stream_app(rtx));
    let mut s = connect(server.addr);
    send(&mut s, get("/abort"));
    let mut buf = Vec::new();
    let head = read_head(&mut s, &mut buf).to_ascii_lowercase();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let rest = extra::read_to_eof(&mut s).unwrap_or_else(|partial| partial);
    buf.extend_from_slice(&rest);
    assert_eq!(String::from_utf8_lossy(&buf), "7\r\npartial\r\n");
}

#[test]
fn send_fails_after_the_client_disconnected() {
    let (rtx, rrx) = mpsc::channel();
    let server = start(config(), stream_app(rtx));
    let mut s = connect(server.addr);
    send(&mut s, get("/forever"));
    let mut buf = Vec::new();
    read_head(&mut s, &mut buf);
    while buf.len() < 3000 {
        assert!(fill(&mut s, &mut buf));
    }
    drop(s);
    let (sent, result, closed) = rrx
        .recv_timeout(Duration::from_secs(5))
        .expect("the producer was never told the client left");
    assert_eq!(result, Err(StreamClosed), "after {sent} sends");
    assert!(closed, "is_closed() agrees");
    assert!(sent < 2000);
}

// ----- files and slow readers -----------------------------------------------------------------

#[test]
fn file_body_arrives_byte_exact() {
    let data = extra::random_bytes(3 * 1024 * 1024 + 17, 42);
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(&data).unwrap();
    file.flush().unwrap();
    let path = file.path().to_path_buf();
    let server = start(config(), move |server: &mut Server, req: Request| {
        let f = std::fs::File::open(&path).unwrap();
        let body = match req.path() {
            "/file" => Body::file(f).unwrap(),
            "/slice" => Body::File {
                file: f,
                offset: 1000,
                len: 5000,
            },
            _ => Body::from("?"),
        };
        server.respond(req.id(), Response::new(body)).unwrap();
    });
    // A small receive window makes sendfile run into a full socket many times.
    let mut s = extra::connect_small_rcvbuf(server.addr, 32 * 1024);
    send(
        &mut s,
        format!(
            "{}HEAD /file HTTP/1.1\r\nHost: t\r\n\r\n{}",
            get("/file"),
            get("/slice")
        ),
    );
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length"),
        Some(data.len().to_string().as_str())
    );
    assert!(r.body == data, "file body differs");
    let r = read_response(&mut s, &mut buf, true).unwrap();
    assert_eq!(
        r.header("content-length"),
        Some(data.len().to_string().as_str())
    );
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.header("content-length"), Some("5000"));
    assert!(r.body == data[1000..6000], "file slice differs");
    assert!(buf.is_empty());
}

#[test]
fn slow_reader_of_a_large_response_gets_every_byte_in_order() {
    let data = Bytes::from(extra::random_bytes(4 * 1024 * 1024, 7));
    let served = data.clone();
    let server = start(config(), move |server: &mut Server, req: Request| {
        server
            .respond(req.id(), Response::new(Body::from(served.clone())))
            .unwrap();
    });
    let mut s = extra::connect_small_rcvbuf(server.addr, 16 * 1024);
    send(&mut s, get("/big"));
    let started = Instant::now();
    let mut got = Vec::with_capacity(data.len() + 1024);
    let mut piece = [0u8; 1024];
    let mut reads = 0u32;
    let mut head_len = None;
    loop {
        let n = s.read(&mut piece).expect("read");
        assert!(n > 0, "EOF after {} bytes", got.len());
        got.extend_from_slice(&piece[..n]);
        reads += 1;
        if reads % 8 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
        if head_len.is_none() {
            head_len = got.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
        }
        if let Some(h) = head_len {
            if got.len() >= h + data.len() {
                break;
            }
        }
    }
    let h = head_len.unwrap();
    let head = String::from_utf8_lossy(&got[..h]).to_ascii_lowercase();
    assert!(
        head.contains(&format!("content-length: {}", data.len())),
        "{head}"
    );
    assert_eq!(got.len(), h + data.len(), "no bytes after the body");
    assert!(got[h..] == data[..], "body differs");
    assert!(
        started.elapsed() > Duration::from_millis(500),
        "the read was not slow ({:?}); the test proves nothing",
        started.elapsed()
    );
    // Still open and usable.
    let mut buf = Vec::new();
    send(&mut s, get("/again"));
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.body.len(), data.len());
}
