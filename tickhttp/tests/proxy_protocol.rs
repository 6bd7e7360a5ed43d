//! PROXY protocol v1 and v2 from trusted peers: the carried client address reaches the
//! request and the rate limiter; untrusted peers are plain HTTP; a trusted peer without a
//! valid header is disconnected.

mod util;

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use ppp::v2::{Builder, Command, Protocol, Version};
use tickhttp::proxy::ProxyProtocolConfig;
use tickhttp::ratelimit::RateLimitConfig;
use util::*;

/// Answers every request with the peer address the server believes.
fn peer_app(server: &mut tickhttp::Server, req: tickhttp::Request) {
    let body = req.peer_addr().to_string();
    server
        .respond(req.id(), http::Response::new(body.into()))
        .unwrap();
}

fn trusting(nets: &[&str]) -> tickhttp::ServerConfig {
    let nets = nets.iter().map(|n| n.parse().unwrap()).collect();
    config().proxy_protocol(Some(ProxyProtocolConfig::new(nets)))
}

fn v2_header(src: &str, dst: &str) -> Vec<u8> {
    let src: SocketAddr = src.parse().unwrap();
    let dst: SocketAddr = dst.parse().unwrap();
    Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, (src, dst))
        .build()
        .unwrap()
}

#[test]
fn v1_carries_the_client_address_for_every_request_of_the_connection() {
    let server = start(trusting(&["127.0.0.0/8"]), peer_app);
    let mut s = connect(server.addr);
    let mut wire = b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 80\r\n".to_vec();
    wire.extend_from_slice(get("/a").as_bytes());
    wire.extend_from_slice(get("/b").as_bytes());
    s.write_all(&wire).unwrap();
    let mut buf = Vec::new();
    for _ in 0..2 {
        let r = read_response(&mut s, &mut buf, false).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "203.0.113.7:40000");
    }
}

#[test]
fn v2_binary_headers_ipv4_and_ipv6() {
    let server = start(trusting(&["127.0.0.1"]), peer_app);
    let mut wire = v2_header("198.51.100.9:5555", "192.0.2.1:443");
    wire.extend_from_slice(get("/").as_bytes());
    let r = exchange(server.addr, &wire);
    assert_eq!(r.text(), "198.51.100.9:5555");

    let mut wire = v2_header("[2001:db8::5]:6000", "[2001:db8::1]:443");
    wire.extend_from_slice(get("/").as_bytes());
    assert_eq!(exchange(server.addr, &wire).text(), "[2001:db8::5]:6000");
}

#[test]
fn a_header_split_across_reads_is_reassembled() {
    let server = start(trusting(&["127.0.0.1"]), peer_app);
    let mut s = connect(server.addr);
    let header = v2_header("198.51.100.10:1234", "192.0.2.1:80");
    s.write_all(&header[..7]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(&header[7..]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(get("/").as_bytes()).unwrap();
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.text(), "198.51.100.10:1234");
}

#[test]
fn local_and_unknown_keep_the_connection_address() {
    let server = start(trusting(&["127.0.0.1"]), peer_app);
    let mut wire = b"PROXY UNKNOWN\r\n".to_vec();
    wire.extend_from_slice(get("/").as_bytes());
    assert!(exchange(server.addr, &wire)
        .text()
        .starts_with("127.0.0.1:"));
    let mut wire = Builder::new(Version::Two | Command::Local, 0)
        .build()
        .unwrap();
    wire.extend_from_slice(get("/").as_bytes());
    assert!(exchange(server.addr, &wire)
        .text()
        .starts_with("127.0.0.1:"));
}

#[test]
fn untrusted_peers_are_plain_http() {
    // Loopback is not trusted: a PROXY line is not HTTP, and the peer stays the real one.
    let server = start(trusting(&["10.0.0.0/8"]), peer_app);
    let mut wire = b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 80\r\n".to_vec();
    wire.extend_from_slice(get("/").as_bytes());
    assert_eq!(exchange(server.addr, &wire).status, 400);
    assert!(exchange(server.addr, get("/").as_bytes())
        .text()
        .starts_with("127.0.0.1:"));
}

#[test]
fn a_trusted_peer_without_a_valid_header_is_disconnected() {
    let server = start(trusting(&["127.0.0.1"]), peer_app);
    let mut s = connect(server.addr);
    s.write_all(get("/").as_bytes()).unwrap();
    assert!(is_closed(&mut s));
    let mut s = connect(server.addr);
    s.write_all(b"PROXY TCP4 not-an-address 192.0.2.1 1 2\r\n")
        .unwrap();
    assert!(is_closed(&mut s));
}

#[test]
fn the_rate_limit_is_keyed_on_the_carried_address() {
    let limit = RateLimitConfig::new(1, Duration::from_secs(60));
    let server = start(trusting(&["127.0.0.1"]).rate_limit(Some(limit)), peer_app);
    let from = |client: &str| {
        let mut wire = format!("PROXY TCP4 {client} 192.0.2.1 40000 80\r\n").into_bytes();
        wire.extend_from_slice(get("/").as_bytes());
        exchange(server.addr, &wire).status
    };
    assert_eq!(from("203.0.113.1"), 200);
    assert_eq!(from("203.0.113.1"), 429);
    // Another client behind the same proxy has its own budget.
    assert_eq!(from("203.0.113.2"), 200);
}

#[test]
fn an_empty_trusted_list_is_refused() {
    let proxy = ProxyProtocolConfig::new(vec!["127.0.0.1".parse().unwrap()]);
    assert!(config()
        .proxy_protocol(Some(ProxyProtocolConfig::new(Vec::new())))
        .validate()
        .is_err());
    assert!(config().proxy_protocol(Some(proxy)).validate().is_ok());
}
