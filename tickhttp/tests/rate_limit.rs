//! Rate limiting: 429 with Retry-After and RateLimit headers; keep-alive survives a 429;
//! WebSocket upgrades count too; a trusted proxy's forwarded address is the key only when
//! configured.

mod util;

use std::io::Write;
use std::time::Duration;

use tickhttp::ratelimit::RateLimitConfig;
use util::*;

#[test]
fn the_limit_answers_429_with_headers_and_keeps_the_connection() {
    let limit = RateLimitConfig::new(3, Duration::from_secs(60));
    let server = start(config().rate_limit(Some(limit)), standard_app);
    let mut s = connect(server.addr);
    let wire: String = (0..5).map(|i| get(&format!("/{i}"))).collect();
    s.write_all(wire.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let statuses: Vec<u16> = (0..5)
        .map(|_| read_response(&mut s, &mut buf, false).unwrap())
        .map(|r| {
            if r.status == 429 {
                assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
                assert_eq!(r.header("ratelimit-limit"), Some("3"));
                assert_eq!(r.header("ratelimit-remaining"), Some("0"));
                assert!(r.header("ratelimit-reset").is_some());
            }
            r.status
        })
        .collect();
    assert_eq!(statuses, vec![200, 200, 200, 429, 429]);
    // The connection is still usable (no stale bytes were re-parsed).
    s.write_all(get("/again").as_bytes()).unwrap();
    assert_eq!(read_response(&mut s, &mut buf, false).unwrap().status, 429);
    let m = server.finish();
    assert_eq!(m.failed_requests, 3);
}

#[test]
fn forwarded_addresses_count_only_behind_trusted_proxies() {
    let untrusting = start(
        config().rate_limit(Some(RateLimitConfig::new(1, Duration::from_secs(60)))),
        standard_app,
    );
    let xff = |ip: &str| format!("GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: {ip}\r\n\r\n");
    // Without trust, the header is ignored: one bucket for this peer.
    assert_eq!(
        exchange(untrusting.addr, xff("10.0.0.1").as_bytes()).status,
        200
    );
    assert_eq!(
        exchange(untrusting.addr, xff("10.0.0.2").as_bytes()).status,
        429
    );

    let trusting = start(
        config().rate_limit(Some(
            RateLimitConfig::new(1, Duration::from_secs(60))
                .trust_proxies(vec!["127.0.0.1".parse().unwrap()]),
        )),
        standard_app,
    );
    assert_eq!(
        exchange(trusting.addr, xff("10.0.0.1").as_bytes()).status,
        200
    );
    assert_eq!(
        exchange(trusting.addr, xff("10.0.0.2").as_bytes()).status,
        200
    );
    assert_eq!(
        exchange(trusting.addr, xff("10.0.0.1").as_bytes()).status,
        429
    );
}

#[test]
fn tokens_come_back_after_the_window() {
    let limit = RateLimitConfig::new(2, Duration::from_millis(400));
    let server = start(config().rate_limit(Some(limit)), standard_app);
    assert_eq!(exchange(server.addr, get("/").as_bytes()).status, 200);
    assert_eq!(exchange(server.addr, get("/").as_bytes()).status, 200);
    assert_eq!(exchange(server.addr, get("/").as_bytes()).status, 429);
    std::thread::sleep(Duration::from_millis(450));
    assert_eq!(exchange(server.addr, get("/").as_bytes()).status, 200);
}

#[test]
fn websocket_upgrades_count_against_the_limit() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let cfg = config().rate_limit(Some(RateLimitConfig::new(1, Duration::from_secs(60))));
        let mut server = tickhttp::Server::bind(cfg).unwrap();
        server
            .attach_websocket("/ws", tickhttp::ws::WebSocketConfig::default())
            .unwrap();
        tx.send(server.local_addr().unwrap()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            server.wait(Some(Duration::from_millis(20))).unwrap();
            while server.next_ws_event().is_some() {}
        }
    });
    let addr = rx.recv().unwrap();
    let upgrade = "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    assert_eq!(exchange(addr, upgrade.as_bytes()).status, 101);
    assert_eq!(exchange(addr, upgrade.as_bytes()).status, 429);
}
