//! Graceful stop: requests in flight are answered, the master exits 0, nothing is left.

mod pool_util;

use std::time::{Duration, Instant};

use pool_util::{alive, try_get, Pool};

fn sigterm_answers_requests_in_flight(mode: &str, worker_mode: &str) {
    let mut pool = Pool::start(2, &["--mode", mode, "--worker-mode", worker_mode]);
    let pids: Vec<u32> = pool.workers().iter().filter_map(|w| w.pid).collect();
    let addr = pool.addr;
    let clients: Vec<_> = (0..6)
        .map(|_| std::thread::spawn(move || try_get(addr, "/sleep?ms=700")))
        .collect();
    // Let every request reach a worker.
    let start = Instant::now();
    while pool.workers().iter().map(|w| w.connections).sum::<u64>() < 6
        && start.elapsed() < Duration::from_secs(2)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    if mode == "shared" {
        std::thread::sleep(Duration::from_millis(200));
    }
    pool.signal("TERM");
    let status = pool.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{mode}: master exit {status:?}");
    for c in clients {
        let (code, body) = c.join().unwrap().expect("answered");
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("\"slept_ms\":700"), "{body}");
    }
    for p in pids {
        assert!(!alive(p), "worker {p} left behind");
    }
}

#[test]
fn sigterm_with_requests_in_flight_shared() {
    sigterm_answers_requests_in_flight("shared", "event");
}

#[test]
fn sigterm_with_requests_in_flight_centralized() {
    sigterm_answers_requests_in_flight("centralized", "event");
}

#[test]
fn sigterm_with_requests_in_flight_handler_mode() {
    sigterm_answers_requests_in_flight("centralized", "handler");
}

#[test]
fn sigterm_kills_what_outlives_the_deadline_and_still_exits_zero() {
    let mut pool = Pool::start(2, &["--mode", "centralized", "--shutdown-timeout", "1"]);
    let addr = pool.addr;
    let slow = std::thread::spawn(move || try_get(addr, "/sleep?ms=30000"));
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    pool.signal("TERM");
    let status = pool.wait_exit(Duration::from_secs(6));
    assert!(status.success());
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    // The client is not left hanging.
    assert!(slow.join().unwrap().is_err());
}

#[test]
fn sigquit_drains_without_a_deadline() {
    let mut pool = Pool::start(2, &["--mode", "shared", "--shutdown-timeout", "1"]);
    let addr = pool.addr;
    // Longer than the TERM deadline: QUIT has none by default.
    let slow = std::thread::spawn(move || try_get(addr, "/sleep?ms=1800"));
    std::thread::sleep(Duration::from_millis(200));
    pool.signal("QUIT");
    let status = pool.wait_exit(Duration::from_secs(10));
    assert!(status.success());
    let (code, body) = slow.join().unwrap().expect("answered");
    assert_eq!(code, 200, "{body}");
}

#[test]
fn new_connections_are_refused_once_stopping() {
    let mut pool = Pool::start(1, &["--mode", "centralized"]);
    let addr = pool.addr;
    let slow = std::thread::spawn(move || try_get(addr, "/sleep?ms=800"));
    std::thread::sleep(Duration::from_millis(200));
    pool.signal("TERM");
    std::thread::sleep(Duration::from_millis(100));
    assert!(try_get(addr, "/plaintext").is_err(), "still accepting");
    assert_eq!(slow.join().unwrap().unwrap().0, 200);
    assert!(pool.wait_exit(Duration::from_secs(5)).success());
}
