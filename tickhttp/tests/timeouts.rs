//! Header, body, keep-alive and write timeouts: each cuts the connection it should, with the
//! answer it should, and never slows anyone else down.

#[path = "util/extra.rs"]
mod extra;
mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use tickhttp::{Body, Request, Server, StreamClosed};
use util::*;

const SHORT: Duration = Duration::from_millis(300);

fn assert_between(what: &str, took: Duration, min: Duration, max: Duration) {
    assert!(
        took >= min && took <= max,
        "{what} took {took:?}, expected between {min:?} and {max:?}"
    );
}

/// Reads one response and checks it is a 408 that closes the connection.
fn expect_408(s: &mut TcpStream) {
    let mut buf = Vec::new();
    let r = read_response(s, &mut buf, false).expect("a 408 response");
    assert_eq!(r.status, 408, "{}", r.text());
    assert_eq!(r.header("connection"), Some("close"));
    assert!(buf.is_empty());
    assert!(is_closed(s));
}

#[test]
fn partial_head_gets_408_after_the_header_timeout() {
    let server = start(config().header_timeout(SHORT), standard_app);
    let mut s = connect(server.addr);
    let started = Instant::now();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n").unwrap();
    expect_408(&mut s);
    assert_between(
        "the 408",
        started.elapsed(),
        SHORT - Duration::from_millis(20),
        SHORT * 5,
    );
}

/// A slowloris client: one byte of a never-ending head every 100 ms. Returns what the server
/// answered and when, measured from the first byte.
fn slowloris(addr: SocketAddr, give_up: Duration) -> (Vec<u8>, Duration) {
    let mut s = connect(addr);
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let head = format!(
        "GET /slow HTTP/1.1\r\nHost: t\r\nX-Pad: {}",
        "a".repeat(1000)
    );
    let started = Instant::now();
    let mut got = Vec::new();
    for &byte in head.as_bytes() {
        if started.elapsed() > give_up || s.write_all(&[byte]).is_err() {
            break;
        }
        let mut tmp = [0u8; 4096];
        match s.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&tmp[..n]);
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                if let Ok(rest) = extra::read_to_eof(&mut s) {
                    got.extend_from_slice(&rest);
                }
                break;
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
    }
    (got, started.elapsed())
}

#[test]
fn slowloris_never_delays_a_normal_client_and_is_cut_at_the_header_timeout() {
    let header_timeout = Duration::from_millis(800);
    let server = start(config().header_timeout(header_timeout), standard_app);
    let addr = server.addr;
    let lorises: Vec<_> = (0..5)
        .map(|_| std::thread::spawn(move || slowloris(addr, Duration::from_secs(4))))
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    // Meanwhile a normal client keeps asking, on new and reused connections.
    let mut worst = Duration::ZERO;
    let mut kept = connect(addr);
    let mut buf = Vec::new();
    for i in 0..20 {
        let started = Instant::now();
        let r = if i % 2 == 0 {
            exchange(addr, get(&format!("/n{i}")).as_bytes())
        } else {
            kept.write_all(get(&format!("/n{i}")).as_bytes()).unwrap();
            read_response(&mut kept, &mut buf, false).unwrap()
        };
        worst = worst.max(started.elapsed());
        assert_eq!(r.text(), format!("/n{i}"));
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(
        worst < Duration::from_millis(100),
        "a normal request took {worst:?} next to slowloris clients"
    );
    for loris in lorises {
        let (got, took) = loris.join().unwrap();
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("HTTP/1.1 408 "),
            "the slowloris got {text:?} after {took:?}"
        );
        // Trickling does not extend the header deadline, which runs from the first byte.
        assert_between(
            "cutting a slowloris",
            took,
            header_timeout - Duration::from_millis(20),
            header_timeout + Duration::from_millis(700),
        );
    }
}

#[test]
fn stalled_body_gets_408_after_the_body_timeout() {
    let server = start(config().body_timeout(SHORT), standard_app);
    for raw in [
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc",
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        let mut s = connect(server.addr);
        let started = Instant::now();
        s.write_all(raw.as_bytes()).unwrap();
        expect_408(&mut s);
        assert_between(
            &format!("the 408 for {raw:?}"),
            started.elapsed(),
            SHORT - Duration::from_millis(20),
            SHORT * 5,
        );
    }
}

#[test]
fn body_timeout_measures_silence_not_the_whole_upload() {
    let server = start(config().body_timeout(SHORT), standard_app);
    let mut s = connect(server.addr);
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\n")
        .unwrap();
    // Eight bytes over about 800 ms, never silent for 300 ms.
    for b in b"trickled" {
        std::thread::sleep(Duration::from_millis(100));
        s.write_all(&[*b]).unwrap();
    }
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "trickled"));
}

#[test]
fn idle_keep_alive_connection_is_closed_quietly() {
    let server = start(config().keep_alive_timeout(SHORT), standard_app);
    let mut s = connect(server.addr);
    let mut buf = Vec::new();
    s.write_all(get("/once").as_bytes()).unwrap();
    assert_eq!(
        read_response(&mut s, &mut buf, false).unwrap().text(),
        "/once"
    );
    let idle_from = Instant::now();
    let rest = extra::read_to_eof(&mut s).expect("a clean close, not a reset");
    assert!(rest.is_empty(), "bytes before the close: {rest:?}");
    assert_between(
        "the idle close",
        idle_from.elapsed(),
        SHORT - Duration::from_millis(20),
        SHORT * 5,
    );

    // A connection that never sends anything is closed the same way.
    let mut silent = connect(server.addr);
    let started = Instant::now();
    let rest = extra::read_to_eof(&mut silent).expect("a clean close");
    assert!(rest.is_empty());
    assert_between(
        "closing a silent connection",
        started.elapsed(),
        SHORT - Duration::from_millis(20),
        SHORT * 5,
    );
}

#[test]
fn activity_keeps_a_connection_alive_past_the_idle_timeout() {
    let server = start(config().keep_alive_timeout(SHORT), standard_app);
    let mut s = connect(server.addr);
    let mut buf = Vec::new();
    // Five requests 150 ms apart: 750 ms in all, each gap below the 300 ms timeout.
    for i in 0..5 {
        std::thread::sleep(Duration::from_millis(150));
        s.write_all(get(&format!("/{i}")).as_bytes()).unwrap();
        assert_eq!(
            read_response(&mut s, &mut buf, false).unwrap().text(),
            format!("/{i}")
        );
    }
}

/// `/huge` answers 16 MiB at once; `/endless` streams from a task until the client is gone and
/// reports how the stream ended.
fn big_app(
    report: mpsc::Sender<Result<(), StreamClosed>>,
) -> impl FnMut(&mut Server, Request) + Send + 'static {
    let huge = Bytes::from(vec![b'h'; 16 * 1024 * 1024]);
    move |server: &mut Server, req: Request| match req.path() {
        "/huge" => server
            .respond(req.id(), Response::new(Body::from(huge.clone())))
            .unwrap(),
        "/endless" => {
            let (tx, body) = Body::channel();
            server.respond(req.id(), Response::new(body)).unwrap();
            let timer = server.timer();
            let report = report.clone();
            server.spawn(async move {
                let result = loop {
                    if tx.buffered() < 256 * 1024 {
                        if let Err(e) = tx.send(vec![b'e'; 64 * 1024]) {
                            break Err(e);
                        }
                    }
                    timer.sleep(Duration::from_millis(5)).await;
                };
                let _ = report.send(result);
            });
        }
        _ => standard_app(server, req),
    }
}

#[test]
fn client_that_never_reads_is_dropped_after_the_write_timeout() {
    let (rtx, rrx) = mpsc::channel();
    let h = extra::Harness::start(config().write_timeout(SHORT), big_app(rtx));
    let addr = h.addr();

    // A large in-memory response nobody reads.
    let mut a = extra::connect_small_rcvbuf(addr, 16 * 1024);
    a.write_all(get("/huge").as_bytes()).unwrap();
    let m = h.metrics_when(Duration::from_secs(4), |m| {
        m.timed_out_connections == 1 && m.active_connections == 0
    });
    assert_eq!(m.timed_out_connections, 1, "{m:?}");
    assert_eq!(m.active_connections, 0, "{m:?}");
    assert_eq!(h.call(|s| s.connection_count()), 0);

    // An endless stream nobody reads: the producer learns the client is gone.
    let mut b = extra::connect_small_rcvbuf(addr, 16 * 1024);
    b.write_all(get("/endless").as_bytes()).unwrap();
    let m = h.metrics_when(Duration::from_secs(4), |m| {
        m.timed_out_connections == 2 && m.active_connections == 0
    });
    assert_eq!(m.timed_out_connections, 2, "{m:?}");
    assert_eq!(m.active_connections, 0, "{m:?}");
    assert_eq!(
        rrx.recv_timeout(Duration::from_secs(2))
            .expect("the producer was not stopped"),
        Err(StreamClosed)
    );
    drop((a, b));
}

#[test]
fn every_kind_of_timeout_is_counted() {
    let cfg = config()
        .header_timeout(SHORT)
        .body_timeout(SHORT)
        .keep_alive_timeout(SHORT)
        .write_timeout(SHORT);
    let (rtx, _rrx) = mpsc::channel();
    let h = extra::Harness::start(cfg, big_app(rtx));
    let addr = h.addr();
    let idle = connect(addr);
    let mut head = connect(addr);
    head.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    let mut body = connect(addr);
    body.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\nab")
        .unwrap();
    let mut reader = extra::connect_small_rcvbuf(addr, 16 * 1024);
    reader.write_all(get("/huge").as_bytes()).unwrap();
    // Reading the 408s to their end lets the server finish closing those two at once.
    expect_408(&mut head);
    expect_408(&mut body);
    drop((head, body));
    let m = h.metrics_when(Duration::from_secs(4), |m| {
        m.timed_out_connections == 4 && m.active_connections == 0
    });
    assert_eq!(m.timed_out_connections, 4, "{m:?}");
    assert_eq!(m.active_connections, 0, "{m:?}");
    assert_eq!(m.total_connections, 4, "{m:?}");
    assert_eq!(m.closed_connections, 4, "{m:?}");
    drop((idle, reader));
}
