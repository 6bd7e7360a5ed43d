//! Overload in centralized mode: the master's queue is bounded and a full queue answers 503
//! at once instead of dropping connections.

mod pool_util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use pool_util::{json_number, signal, Pool};

#[test]
fn a_full_queue_answers_503_at_once_and_queued_connections_are_served_later() {
    let pool = Pool::start(
        1,
        &[
            "--mode",
            "centralized",
            "--max-queue",
            "2",
            "--queue-timeout",
            "20s",
        ],
    );
    let worker = pool.workers()[0].pid.unwrap();
    // A stopped worker reads nothing: its control socket fills (the kernel holds the
    // descriptors in flight up to the socket's buffer), then the master's queue fills.
    signal(worker, "STOP");
    let mut clients = Vec::new();
    let start = Instant::now();
    let mut rejected_seen = None;
    while clients.len() < 900 {
        let mut s = TcpStream::connect(pool.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        clients.push(s);
        if clients.len() % 20 == 0 && json_number(&pool.status(), "rejected") > 0 {
            rejected_seen = Some(clients.len());
            break;
        }
    }
    let sent = rejected_seen.unwrap_or_else(|| panic!("no 503 after 900: {}", pool.status()));
    assert!(start.elapsed() < Duration::from_secs(10));
    let status = pool.status();
    assert_eq!(json_number(&status, "queue_length"), 2, "{status}");
    signal(worker, "CONT");
    let (mut ok, mut rejected) = (0u64, 0u64);
    for mut s in clients {
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("an answer, not a reset");
        if raw.starts_with("HTTP/1.1 200") {
            ok += 1;
        } else if raw.starts_with("HTTP/1.1 503") {
            assert!(raw.contains("Retry-After"), "{raw}");
            rejected += 1;
        } else {
            panic!("unexpected answer {raw:?}");
        }
    }
    assert!(
        rejected >= 1 && ok >= 3,
        "ok {ok}, rejected {rejected}, of {sent}"
    );
    assert_eq!(json_number(&pool.status(), "rejected"), rejected);
}
