//! Sticky balancing behind a proxy: with the PROXY protocol on, the centralized master keys
//! the sticky balancer on the client address the PROXY header names, not on the proxy's.

mod pool_util;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use pool_util::{whoami, Pool};

fn start() -> Pool {
    Pool::start(
        2,
        &[
            "--mode",
            "centralized",
            "--balancer",
            "sticky",
            "--proxy-protocol-trusted",
            "127.0.0.1",
        ],
    )
}

/// GET /whoami on a new connection that starts with a PROXY v1 header for `client`; with
/// `split`, the header arrives in two writes 150 ms apart. Returns the worker id.
fn worker_for(pool: &Pool, client: &str, split: bool) -> u32 {
    let mut s = TcpStream::connect(pool.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let header = format!("PROXY TCP4 {client} 127.0.0.1 40000 80\r\n");
    let request = "GET /whoami HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    if split {
        let (a, b) = header.split_at(12);
        s.write_all(a.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(150));
        s.write_all(format!("{b}{request}").as_bytes()).unwrap();
    } else {
        s.write_all(format!("{header}{request}").as_bytes())
            .unwrap();
    }
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    whoami(body).0
}

#[test]
fn each_client_behind_the_proxy_sticks_to_its_worker() {
    let pool = start();
    let clients: Vec<String> = (1..=8).map(|n| format!("203.0.113.{n}")).collect();
    let mut seen: HashMap<&str, u32> = HashMap::new();
    for round in 0..3 {
        for c in &clients {
            let w = worker_for(&pool, c, false);
            match seen.get(c.as_str()) {
                None => {
                    seen.insert(c, w);
                }
                Some(&first) => assert_eq!(w, first, "{c} moved in round {round}"),
            }
        }
    }
    // All the connections come from 127.0.0.1: keyed on the proxy, they would all have
    // gone to one worker. Keyed on the clients, new clients go to both.
    let used: HashSet<u32> = seen.values().copied().collect();
    assert_eq!(used.len(), 2, "{seen:?}");
}

#[test]
fn a_header_that_arrives_in_pieces_still_keys_the_balancer() {
    let pool = start();
    let clients: Vec<String> = (1..=6).map(|n| format!("198.51.100.{n}")).collect();
    let first: Vec<u32> = clients
        .iter()
        .map(|c| worker_for(&pool, c, false))
        .collect();
    assert_eq!(first.iter().collect::<HashSet<_>>().len(), 2, "{first:?}");
    for (c, w) in clients.iter().zip(&first) {
        assert_eq!(worker_for(&pool, c, true), *w, "{c}");
    }
}
