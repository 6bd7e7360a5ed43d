//! Every malformed or ambiguous request gets its status code and a closed connection; nothing
//! panics and no hidden request is served.

mod util;

use std::io::Write;

use util::*;

fn check(server: &TestServer, raw: &str, status: u16) {
    let mut s = connect(server.addr);
    s.write_all(raw.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let r =
        read_response(&mut s, &mut buf, false).unwrap_or_else(|| panic!("no response to {raw:?}"));
    assert_eq!(r.status, status, "for {raw:?}: {}", r.text());
    assert_eq!(r.header("connection"), Some("close"), "for {raw:?}");
    assert!(
        r.header("content-length").is_some(),
        "error responses are framed"
    );
    assert!(buf.is_empty(), "a hidden second response for {raw:?}");
    assert!(is_closed(&mut s), "connection left open after {raw:?}");
}

#[test]
fn framing_conflicts_are_rejected() {
    let server = start(config(), standard_app);
    let cases = [
        ("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400),
        ("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
        ("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -5\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5 5\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5,5\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0x10\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 18446744073709551617\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n", 501),
        ("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 501),
        ("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked,\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: \tchunked\r\n\r\n0\r\n\r\n", 200),
        ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n", 413),
        ("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3;\x01\r\nabc\r\n0\r\n\r\n", 400),
    ];
    for (raw, status) in cases {
        if status == 200 {
            let r = exchange(server.addr, raw.as_bytes());
            assert_eq!(r.status, 200, "{raw:?}");
        } else {
            check(&server, raw, status);
        }
    }
}

#[test]
fn syntax_errors_are_rejected() {
    let server = start(config(), standard_app);
    let cases = [
        ("GET / HTTP/1.1\r\n\r\n", 400),                       // no Host
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400), // two Hosts
        ("GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n  folded\r\n\r\n", 400), // obs-fold
        ("GET / HTTP/1.1\r\nHost : t\r\n\r\n", 400),           // space before colon
        ("GET / HTTP/1.1\r\nHost: t\r\nNoColon\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: t\r\nX: a\rb\r\n\r\n", 400), // bare CR
        ("GET / HTTP/1.1\r\nHost: t\r\nX: a\0b\r\n\r\n", 400), // NUL
        ("GET / HTTP/1.1\r\nHost: t\r\nX: a\x01b\r\n\r\n", 400), // control byte
        ("GET / HTTP/1.1\r\nHo\"st: t\r\n\r\n", 400),          // invalid name
        ("GET /a b HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("GET http://other/x HTTP/1.1\r\nHost: t\r\n\r\n", 400), // absolute vs Host
        ("GET * HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        ("GET / HTTP/1.2\r\nHost: t\r\n\r\n", 505),
        ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
        ("GET / HTTX/1.1\r\nHost: t\r\n\r\n", 400),
        ("CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n", 501),
        (
            "GET / HTTP/1.1\r\nHost: t\r\nExpect: something\r\n\r\n",
            417,
        ),
    ];
    for (raw, status) in cases {
        check(&server, raw, status);
    }
}

#[test]
fn accepted_forms_are_served() {
    let server = start(config(), standard_app);
    for (raw, body) in [
        ("GET http://t/abs?q=1 HTTP/1.1\r\nHost: t\r\n\r\n", "/abs"),
        ("OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n", "*"),
        ("GET /lf HTTP/1.1\nHost: t\n\n", "/lf"),
        ("GET /ten HTTP/1.0\r\n\r\n", "/ten"),
        (
            "\r\nGET /leading-crlf HTTP/1.1\r\nHost: t\r\n\r\n",
            "/leading-crlf",
        ),
    ] {
        let r = exchange(server.addr, raw.as_bytes());
        assert_eq!(r.status, 200, "{raw:?}");
        assert_eq!(r.text(), body, "{raw:?}");
    }
}

#[test]
fn limits_have_their_status_codes() {
    let cfg = config()
        .max_body_size(1000)
        .max_head_size(4096)
        .max_uri_len(1024)
        .max_headers(20);
    let server = start(cfg, standard_app);
    check(
        &server,
        &format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(2000)),
        414,
    );
    check(&server, &format!("GET /{}", "a".repeat(5000)), 414);
    check(
        &server,
        &format!(
            "GET / HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n",
            "a".repeat(5000)
        ),
        431,
    );
    let many: String = (0..30).map(|i| format!("X-{i}: v\r\n")).collect();
    check(
        &server,
        &format!("GET / HTTP/1.1\r\nHost: t\r\n{many}\r\n"),
        431,
    );
    // 413 is decided from Content-Length, before any body byte is sent.
    check(
        &server,
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n",
        413,
    );
    check(
        &server,
        &format!("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3e9\r\n{}\r\n0\r\n\r\n", "a".repeat(1001)),
        413,
    );
    let ok = exchange(
        server.addr,
        format!(
            "POST /len HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n{}",
            "a".repeat(1000)
        )
        .as_bytes(),
    );
    assert_eq!(ok.text(), "1000 spooled=false");
}

#[test]
fn expect_continue_is_answered() {
    let server = start(config().max_body_size(100), standard_app);
    let mut s = connect(server.addr);
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let mut buf = Vec::new();
    let interim = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(interim.status, 100);
    s.write_all(b"hello").unwrap();
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    // Too large: 413 without a 100, and without waiting for the body.
    check(
        &server,
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 500\r\nExpect: 100-continue\r\n\r\n",
        413,
    );
}

#[test]
fn random_garbage_never_kills_the_server() {
    let server = start(config(), standard_app);
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    for _ in 0..300 {
        let mut s = connect(server.addr);
        let len = (seed % 300) as usize + 1;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed & 0xff) as u8
            })
            .collect();
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut buf = Vec::new();
        while fill(&mut s, &mut buf) {}
    }
    let r = exchange(server.addr, get("/still-alive").as_bytes());
    assert_eq!(r.text(), "/still-alive");
}
