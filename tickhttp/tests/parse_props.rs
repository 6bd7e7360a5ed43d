//! Property: any valid stream of pipelined requests gets the same answers whether it arrives
//! in one write or split at arbitrary points, and those answers match what was sent.

mod util;

use std::io::Write;
use std::time::Duration;

use http::Response;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tickhttp::{Body, Request, Server};
use util::*;

#[derive(Debug, Clone)]
enum Framing {
    None,
    Length,
    /// Chunk sizes, used in turn; whether chunks carry an extension; a trailer field.
    Chunked {
        sizes: Vec<usize>,
        extensions: bool,
        trailer: bool,
    },
}

#[derive(Debug, Clone)]
struct Req {
    post: bool,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    framing: Framing,
}

impl Req {
    fn encode(&self, out: &mut Vec<u8>) {
        let method = if self.post { "POST" } else { "GET" };
        out.extend_from_slice(
            format!("{method} /{} HTTP/1.1\r\nHost: t\r\n", self.path).as_bytes(),
        );
        for (name, value) in &self.headers {
            out.extend_from_slice(format!("x-{name}: {value}\r\n").as_bytes());
        }
        match &self.framing {
            Framing::None => out.extend_from_slice(b"\r\n"),
            Framing::Length => {
                out.extend_from_slice(
                    format!("Content-Length: {}\r\n\r\n", self.body.len()).as_bytes(),
                );
                out.extend_from_slice(&self.body);
            }
            Framing::Chunked {
                sizes,
                extensions,
                trailer,
            } => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                let mut rest = &self.body[..];
                let mut i = 0;
                while !rest.is_empty() {
                    let n = sizes[i % sizes.len()].min(rest.len());
                    i += 1;
                    let ext = if *extensions { ";ext=\"v\"" } else { "" };
                    out.extend_from_slice(format!("{n:X}{ext}\r\n").as_bytes());
                    out.extend_from_slice(&rest[..n]);
                    out.extend_from_slice(b"\r\n");
                    rest = &rest[n..];
                }
                out.extend_from_slice(b"0\r\n");
                if *trailer {
                    out.extend_from_slice(b"x-trailer: done\r\n");
                }
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    /// What the app below answers for this request.
    fn expected(&self) -> Vec<u8> {
        let method = if self.post { "POST" } else { "GET" };
        let mut v = format!("{method} /{} h={} b=", self.path, self.headers.len()).into_bytes();
        v.extend_from_slice(&self.body);
        v
    }
}

/// Answers method, path, the number of `x-` fields and the body.
fn app(server: &mut Server, req: Request) {
    let extra = req
        .headers()
        .keys()
        .filter(|k| k.as_str().starts_with("x-"))
        .map(|k| req.headers().get_all(k).iter().count())
        .sum::<usize>();
    let mut out = format!("{} {} h={extra} b=", req.method(), req.path()).into_bytes();
    out.extend_from_slice(&req.body().to_vec().unwrap());
    server
        .respond(req.id(), Response::new(Body::from(out)))
        .unwrap();
}

fn request() -> impl Strategy<Value = Req> {
    let headers = prop::collection::vec(("[a-z]{1,8}", "[A-Za-z0-9]{0,12}"), 0..6);
    let body = prop::collection::vec(any::<u8>(), 0..300);
    let chunked = (
        prop::collection::vec(1usize..64, 1..6),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(sizes, extensions, trailer)| Framing::Chunked {
            sizes,
            extensions,
            trailer,
        });
    let framing = prop_oneof![Just(Framing::Length), chunked];
    (any::<bool>(), "[a-z0-9]{1,10}", headers, body, framing).prop_map(
        |(post, path, headers, body, framing)| {
            if post {
                Req {
                    post,
                    path,
                    headers,
                    body,
                    framing,
                }
            } else {
                Req {
                    post,
                    path,
                    headers,
                    body: Vec::new(),
                    framing: Framing::None,
                }
            }
        },
    )
}

/// Sends `wire` in pieces cut at `cuts` (sorted offsets) and reads `n` responses.
fn run(server: &TestServer, wire: &[u8], cuts: &[usize], n: usize) -> Vec<Vec<u8>> {
    let mut s = connect(server.addr);
    let mut from = 0;
    for &cut in cuts.iter().chain(std::iter::once(&wire.len())) {
        if cut > from {
            s.write_all(&wire[from..cut]).unwrap();
            from = cut;
            if cut < wire.len() {
                // Let the server read this piece on its own.
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    let mut buf = Vec::new();
    let out = (0..n)
        .map(|_| {
            let r = read_response(&mut s, &mut buf, false).expect("a response");
            assert_eq!(r.status, 200, "{}", r.text());
            r.body
        })
        .collect();
    assert!(buf.is_empty(), "bytes after the last response");
    out
}

#[test]
fn split_request_streams_get_the_same_responses_as_whole_ones() {
    let server = start(config(), app);
    let mut runner = TestRunner::new(Config {
        cases: 32,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        prop::collection::vec(request(), 1..5),
        prop::collection::vec(any::<Index>(), 0..8),
    );
    runner
        .run(&strategy, |(reqs, cut_points)| {
            let mut wire = Vec::new();
            for r in &reqs {
                r.encode(&mut wire);
            }
            let mut cuts: Vec<usize> = cut_points.iter().map(|i| i.index(wire.len())).collect();
            cuts.sort_unstable();
            cuts.dedup();
            let expected: Vec<Vec<u8>> = reqs.iter().map(Req::expected).collect();
            let whole = run(&server, &wire, &[], reqs.len());
            let split = run(&server, &wire, &cuts, reqs.len());
            prop_assert_eq!(&whole, &expected);
            if split != whole {
                return Err(TestCaseError::fail(format!(
                    "cut at {cuts:?}: {:?} instead of {:?}",
                    split
                        .iter()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .collect::<Vec<_>>(),
                    whole
                        .iter()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .collect::<Vec<_>>()
                )));
            }
            Ok(())
        })
        .unwrap();
}
