//! Descriptor passing delivers the connection itself and its metadata.

mod pool_util;

use pool_util::{json_number, Client, Pool};

#[test]
fn fd_passing_carries_the_client_address() {
    let pool = Pool::start(2, &["--mode", "centralized", "--worker-mode", "callback"]);
    for _ in 0..4 {
        let mut client = Client::connect(pool.addr).unwrap();
        let me = client.local_addr();
        let (status, body) = client.get("/whoami").unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains(&format!("\"peer\":\"{me}\"")),
            "expected {me} in {body}"
        );
        assert!((1..=2).contains(&json_number(&body, "worker_id")));
    }
}

#[test]
fn a_connection_reaches_a_worker_only_once_it_has_sent_its_request() {
    use std::io::{Read, Write};
    let pool = Pool::start(1, &["--mode", "centralized"]);
    let mut silent = std::net::TcpStream::connect(pool.addr).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // Connected (the handshake is the kernel's), but not yet handed to the master.
    assert_eq!(json_number(&pool.status(), "dispatched"), 0);
    silent
        .write_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    silent.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(json_number(&pool.status(), "dispatched"), 1);
}
