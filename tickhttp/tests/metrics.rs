//! After a known sequence of requests and connections, every counter has its exact value.

#[path = "util/extra.rs"]
mod extra;
mod util;

use std::io::Write;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use http::{Response, StatusCode};
use tickhttp::{Body, Request, Server};
use util::*;

fn app(server: &mut Server, req: Request) {
    if req.path() == "/missing" {
        let mut resp = Response::new(Body::from("not here"));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        server.respond(req.id(), resp).unwrap();
    } else {
        standard_app(server, req);
    }
}

#[test]
fn counters_match_a_known_sequence() {
    let idle_timeout = Duration::from_millis(400);
    let started = Instant::now();
    let h = extra::Harness::start(config().keep_alive_timeout(idle_timeout), app);
    let addr = h.addr();

    let fresh = h.metrics();
    assert_eq!(
        (
            fresh.total_requests,
            fresh.total_connections,
            fresh.active_connections
        ),
        (0, 0, 0)
    );
    assert_eq!(fresh.min_request_duration_ms, 0.0);

    // One keep-alive connection: four quick requests, one answered 50 ms later, one 404.
    let mut c1 = connect(addr);
    let mut buf = Vec::new();
    for path in ["/a", "/b", "/c", "/d", "/delay?ms=50", "/missing"] {
        c1.write_all(get(path).as_bytes()).unwrap();
        let r = read_response(&mut c1, &mut buf, false).unwrap();
        let expected = if path == "/missing" { 404 } else { 200 };
        assert_eq!(r.status, expected, "{path}");
    }
    // The client hangs up; the server closes its side at once.
    c1.shutdown(Shutdown::Write).unwrap();
    assert_eq!(extra::read_to_eof(&mut c1), Ok(Vec::new()));

    // One malformed request: a 400 from the server itself.
    let mut c2 = connect(addr);
    c2.write_all(b"GARBAGE\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    assert_eq!(read_response(&mut c2, &mut buf, false).unwrap().status, 400);
    assert!(is_closed(&mut c2));
    drop(c2);

    // One connection that never sends anything and times out.
    let mut c3 = connect(addr);
    assert_eq!(extra::read_to_eof(&mut c3), Ok(Vec::new()));
    drop(c3);

    let m = h.metrics_when(Duration::from_secs(3), |m| {
        m.closed_connections == 3 && m.active_connections == 0
    });
    let elapsed = started.elapsed();
    assert_eq!(m.total_requests, 7, "{m:?}");
    assert_eq!(m.successful_requests, 5, "{m:?}");
    assert_eq!(m.failed_requests, 2, "{m:?}");
    assert_eq!(m.total_connections, 3, "{m:?}");
    assert_eq!(m.closed_connections, 3, "{m:?}");
    assert_eq!(m.active_connections, 0, "{m:?}");
    assert_eq!(m.timed_out_connections, 1, "{m:?}");
    assert_eq!((m.cache_hits, m.cache_misses), (0, 0), "{m:?}");
    assert_eq!(m.cache_hit_rate, 0.0, "{m:?}");

    assert!(m.min_request_duration_ms >= 0.0, "{m:?}");
    assert!(
        m.min_request_duration_ms <= m.avg_request_duration_ms,
        "{m:?}"
    );
    assert!(
        m.avg_request_duration_ms <= m.max_request_duration_ms,
        "{m:?}"
    );
    assert!(m.avg_request_duration_ms > 0.0, "{m:?}");
    // The slowest was the delayed one: 50 ms, give or take a loop pass.
    assert!(
        m.max_request_duration_ms >= 49.0 && m.max_request_duration_ms < 1000.0,
        "{m:?}"
    );
    // The mean of seven with one at ~50 ms and the rest near zero.
    assert!(
        m.avg_request_duration_ms >= 49.0 / 7.0 && m.avg_request_duration_ms < 1000.0 / 7.0,
        "{m:?}"
    );
    assert!(m.uptime > Duration::ZERO && m.uptime <= elapsed, "{m:?}");
    assert!(m.requests_per_second > 0.0, "{m:?}");
    let expected_rps = m.total_requests as f64 / m.uptime.as_secs_f64();
    assert!(
        (m.requests_per_second - expected_rps).abs() < 1e-6 * expected_rps.max(1.0),
        "{m:?}"
    );
    assert!(
        m.total_connections == m.closed_connections + m.active_connections,
        "{m:?}"
    );
}

#[test]
fn rejected_connections_and_server_errors_are_counted() {
    let h = extra::Harness::start(config().max_connections(1), app);
    let addr = h.addr();
    let mut held = connect(addr);
    let mut buf = Vec::new();
    held.write_all(get("/held").as_bytes()).unwrap();
    assert_eq!(
        read_response(&mut held, &mut buf, false).unwrap().status,
        200
    );
    // Over capacity: answered 503 by the server before any request is read.
    let mut over = connect(addr);
    let mut obuf = Vec::new();
    assert_eq!(
        read_response(&mut over, &mut obuf, false).unwrap().status,
        503
    );
    assert!(is_closed(&mut over));
    // A request with a body over the limit on the held connection: 413 and a close.
    held.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999\r\n\r\n")
        .unwrap();
    assert_eq!(
        read_response(&mut held, &mut buf, false).unwrap().status,
        413
    );
    assert!(is_closed(&mut held));
    drop((held, over));
    let m = h.metrics_when(Duration::from_secs(3), |m| m.active_connections == 0);
    assert_eq!(m.total_connections, 2, "{m:?}");
    assert_eq!(m.closed_connections, 2, "{m:?}");
    assert_eq!(m.total_requests, 2, "{m:?}");
    assert_eq!((m.successful_requests, m.failed_requests), (1, 1), "{m:?}");
    assert_eq!(m.timed_out_connections, 0, "{m:?}");
}
