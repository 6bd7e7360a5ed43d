//! Request smuggling and ambiguity: every case either parses one unambiguous way or is
//! rejected (400, or 501/413 where the status says more) with the connection closed. A request
//! hidden behind an ambiguous one is never served.

mod util;

use std::io::Write;
use std::sync::{Arc, Mutex};

use http::Response;
use util::*;

const HIDDEN: &str = "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";

enum Expect {
    /// Rejected with this status, connection closed, nothing after it served.
    Reject(u16),
    /// Parsed: these paths are served, in this order.
    Serve(&'static [&'static str]),
}

fn run(cases: &[(&str, String, Expect)]) {
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen2 = Arc::clone(&seen);
    let server = start(config().max_body_size(1 << 20), move |server, req| {
        let body = req.body().to_vec().unwrap();
        seen2.lock().unwrap().push(req.path().to_string());
        server
            .respond(req.id(), Response::new(body.into()))
            .unwrap();
    });
    for (name, raw, expect) in cases {
        seen.lock().unwrap().clear();
        let mut s = connect(server.addr);
        s.write_all(raw.as_bytes()).unwrap();
        let mut buf = Vec::new();
        match expect {
            Expect::Reject(status) => {
                let r = read_response(&mut s, &mut buf, false)
                    .unwrap_or_else(|| panic!("{name}: no response"));
                assert_eq!(r.status, *status, "{name}: {}", r.text());
                assert_eq!(r.header("connection"), Some("close"), "{name}");
                assert!(is_closed(&mut s), "{name}: left open");
                assert!(buf.is_empty(), "{name}: more than one response");
            }
            Expect::Serve(paths) => {
                for _ in paths.iter() {
                    let r = read_response(&mut s, &mut buf, false)
                        .unwrap_or_else(|| panic!("{name}: missing response"));
                    assert_eq!(r.status, 200, "{name}");
                }
            }
        }
        let served = seen.lock().unwrap().clone();
        match expect {
            Expect::Reject(_) => assert!(
                !served.iter().any(|p| p == "/smuggled"),
                "{name}: hidden request served"
            ),
            Expect::Serve(paths) => assert_eq!(&served, paths, "{name}"),
        }
    }
}

fn post(headers: &str, body: &str) -> String {
    format!("POST /first HTTP/1.1\r\nHost: t\r\n{headers}\r\n{body}{HIDDEN}")
}

#[test]
fn cl_te_and_te_cl_are_rejected() {
    run(&[
        (
            "CL.TE",
            post(
                "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
            Expect::Reject(400),
        ),
        (
            "TE.CL",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
                "8\r\nSMUGGLED\r\n0\r\n\r\n",
            ),
            Expect::Reject(400),
        ),
        (
            "CL.CL differing",
            post("Content-Length: 0\r\nContent-Length: 5\r\n", "hello"),
            Expect::Reject(400),
        ),
        (
            "CL.CL equal",
            post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
            Expect::Reject(400),
        ),
        (
            "CL list",
            post("Content-Length: 5, 5\r\n", "hello"),
            Expect::Reject(400),
        ),
    ]);
}

#[test]
fn te_obfuscations_are_rejected_or_read_one_way() {
    run(&[
        (
            "xchunked",
            post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"),
            Expect::Reject(501),
        ),
        (
            "chunked-x",
            post("Transfer-Encoding: chunked-x\r\n", "0\r\n\r\n"),
            Expect::Reject(501),
        ),
        (
            "space before colon",
            post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n"),
            Expect::Reject(400),
        ),
        (
            "tab before colon",
            post("Transfer-Encoding\t: chunked\r\n", "0\r\n\r\n"),
            Expect::Reject(400),
        ),
        (
            "leading space line",
            post(" Transfer-Encoding: chunked\r\n", "0\r\n\r\n"),
            Expect::Reject(400),
        ),
        (
            "obs-fold value",
            post("Transfer-Encoding:\r\n chunked\r\n", "0\r\n\r\n"),
            Expect::Reject(400),
        ),
        (
            "two TE headers",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
                "0\r\n\r\n",
            ),
            Expect::Reject(400),
        ),
        (
            "chunked, identity",
            post("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n"),
            Expect::Reject(501),
        ),
        (
            "trailing comma",
            post("Transfer-Encoding: chunked,\r\n", "0\r\n\r\n"),
            Expect::Reject(400),
        ),
        (
            "chunked twice",
            post("Transfer-Encoding: chunked, chunked\r\n", "0\r\n\r\n"),
            Expect::Reject(400),
        ),
        (
            "vertical tab",
            post("Transfer-Encoding: \x0bchunked\r\n", "0\r\n\r\n"),
            Expect::Reject(400),
        ),
        (
            "NUL in name",
            post("Transfer-Encoding\0: chunked\r\n", "0\r\n\r\n"),
            Expect::Reject(400),
        ),
        // Unambiguous: OWS is trimmed, codings are case-insensitive.
        (
            "casing",
            post("Transfer-Encoding: ChUnKeD\r\n", "0\r\n\r\n"),
            Expect::Serve(&["/first", "/smuggled"]),
        ),
        (
            "tab before value",
            post("Transfer-Encoding:\tchunked\r\n", "0\r\n\r\n"),
            Expect::Serve(&["/first", "/smuggled"]),
        ),
        (
            "spaces around value",
            post("Transfer-Encoding:   chunked   \r\n", "0\r\n\r\n"),
            Expect::Serve(&["/first", "/smuggled"]),
        ),
    ]);
}

#[test]
fn content_length_must_be_plain_digits() {
    run(&[
        (
            "plus sign",
            post("Content-Length: +5\r\n", "hello"),
            Expect::Reject(400),
        ),
        (
            "minus sign",
            post("Content-Length: -5\r\n", "hello"),
            Expect::Reject(400),
        ),
        (
            "inner space",
            post("Content-Length: 5 0\r\n", "hello"),
            Expect::Reject(400),
        ),
        (
            "hex",
            post("Content-Length: 0x5\r\n", "hello"),
            Expect::Reject(400),
        ),
        (
            "overflow",
            post("Content-Length: 99999999999999999999999\r\n", ""),
            Expect::Reject(400),
        ),
        (
            "u64 wrap",
            post("Content-Length: 18446744073709551621\r\n", "hello"),
            Expect::Reject(400),
        ),
        (
            "empty",
            post("Content-Length: \r\n", ""),
            Expect::Reject(400),
        ),
        (
            "leading zeros are still one number",
            post("Content-Length: 005\r\n", "hello"),
            Expect::Serve(&["/first", "/smuggled"]),
        ),
    ]);
}

#[test]
fn chunk_syntax_is_strict() {
    let te = "Transfer-Encoding: chunked\r\n";
    run(&[
        (
            "huge chunk size",
            post(te, "ffffffffffffffffffff\r\n"),
            Expect::Reject(413),
        ),
        (
            "chunk size over the body limit",
            post(te, "200000\r\n"),
            Expect::Reject(413),
        ),
        (
            "ext with control byte",
            post(te, "5;a=\x01\r\nhello\r\n0\r\n\r\n"),
            Expect::Reject(400),
        ),
        (
            "ext with bare LF",
            post(te, "5;a\nb\r\nhello\r\n0\r\n\r\n"),
            Expect::Reject(400),
        ),
        (
            "size line bare LF",
            post(te, "5\nhello\r\n0\r\n\r\n"),
            Expect::Reject(400),
        ),
        (
            "data not followed by CRLF",
            post(te, "3\r\nhello\r\n0\r\n\r\n"),
            Expect::Reject(400),
        ),
        ("negative size", post(te, "-1\r\n"), Expect::Reject(400)),
        (
            "size with 0x",
            post(te, "0x5\r\nhello\r\n0\r\n\r\n"),
            Expect::Reject(400),
        ),
        (
            "trailer with NUL",
            post(te, "0\r\nX: \0\r\n\r\n"),
            Expect::Reject(400),
        ),
        (
            "extensions and trailers",
            post(te, "5;name=\"v\"\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"),
            Expect::Serve(&["/first", "/smuggled"]),
        ),
    ]);
}

#[test]
fn header_syntax_is_strict() {
    let g = |headers: &str| format!("GET /first HTTP/1.1\r\n{headers}\r\n{HIDDEN}");
    run(&[
        (
            "no colon",
            g("Host: t\r\nJustAName\r\n"),
            Expect::Reject(400),
        ),
        (
            "NUL in value",
            g("Host: t\r\nX: a\0b\r\n"),
            Expect::Reject(400),
        ),
        (
            "bare CR in value",
            g("Host: t\r\nX: a\rb\r\n"),
            Expect::Reject(400),
        ),
        (
            "DEL in value",
            g("Host: t\r\nX: a\x7fb\r\n"),
            Expect::Reject(400),
        ),
        (
            "two Host headers",
            g("Host: a\r\nHost: b\r\n"),
            Expect::Reject(400),
        ),
        ("Host with a path", g("Host: a/b\r\n"), Expect::Reject(400)),
        (
            "absolute form vs Host",
            "GET http://a.example/first HTTP/1.1\r\nHost: b.example\r\n\r\n".to_string() + HIDDEN,
            Expect::Reject(400),
        ),
        (
            "bare LF line endings, consistently",
            "GET /first HTTP/1.1\nHost: t\n\n".to_string() + HIDDEN,
            Expect::Serve(&["/first", "/smuggled"]),
        ),
        (
            "absolute form agreeing with Host",
            "GET http://t/first HTTP/1.1\r\nHost: t\r\n\r\n".to_string() + HIDDEN,
            Expect::Serve(&["/first", "/smuggled"]),
        ),
    ]);
}
