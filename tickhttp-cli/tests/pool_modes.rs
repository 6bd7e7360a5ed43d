//! Every architecture runs every worker mode, and requests reach every worker.

mod pool_util;

use std::collections::HashSet;
use std::time::Duration;

use pool_util::{get, whoami, Pool};

fn serves(mode: &str, worker_mode: &str) {
    let mut pool = Pool::start(2, &["--mode", mode, "--worker-mode", worker_mode]);
    let (status, body) = get(pool.addr, "/plaintext");
    assert_eq!(
        (status, body.as_str()),
        (200, "Hello, World!"),
        "{mode}/{worker_mode}"
    );
    let mut ids = HashSet::new();
    for _ in 0..20 {
        let (status, body) = get(pool.addr, "/whoami");
        assert_eq!(status, 200, "{mode}/{worker_mode}: {body}");
        let (id, pid) = whoami(&body);
        assert!((1..=2).contains(&id), "{body}");
        assert_ne!(pid, pool.pid, "the master answered");
        ids.insert(id);
    }
    if mode == "centralized" {
        // The balancer alternates between idle workers.
        assert_eq!(ids.len(), 2, "{mode}/{worker_mode}: only {ids:?}");
    }
    pool.signal("TERM");
    assert!(pool.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn shared_socket_event_driven() {
    serves("shared", "event");
}

#[test]
fn shared_socket_request_handler() {
    serves("shared", "handler");
}

#[test]
fn shared_socket_callback() {
    serves("shared", "callback");
}

#[test]
fn centralized_event_driven() {
    serves("centralized", "event");
}

#[test]
fn centralized_request_handler() {
    serves("centralized", "handler");
}

#[test]
fn centralized_callback() {
    serves("centralized", "callback");
}

#[test]
fn auto_picks_centralized_where_fd_passing_works_and_says_why() {
    let pool = Pool::start(1, &["--mode", "auto"]);
    let log = pool.log_text();
    assert!(
        log.contains("centralized architecture (auto: descriptor passing (SCM_RIGHTS) works here"),
        "{log}"
    );
    assert!(pool.status().contains("\"architecture\":\"centralized\""));
}

#[test]
fn requests_spread_over_all_workers() {
    for mode in ["shared", "centralized"] {
        let pool = Pool::start(4, &["--mode", mode]);
        let mut ids = HashSet::new();
        for _ in 0..100 {
            ids.insert(whoami(&get(pool.addr, "/whoami").1).0);
            if ids.len() == 4 {
                break;
            }
        }
        assert_eq!(ids.len(), 4, "{mode}: only workers {ids:?} answered");
    }
}

#[test]
fn ipv6_listeners_work_in_both_architectures() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    }
    for mode in ["shared", "centralized"] {
        let (mut child, rx, log) =
            pool_util::spawn(&["--listen", "[::1]:0", "--mode", mode, "--workers", "2"]);
        let line = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no start line: {:?}", log.lock().unwrap()));
            if line.contains("listening on http://") {
                break line;
            }
        };
        let start = line.find("http://").unwrap() + 7;
        let addr: std::net::SocketAddr = line[start..].split('/').next().unwrap().parse().unwrap();
        assert!(addr.is_ipv6());
        let mut ok = false;
        for _ in 0..100 {
            if let Ok((200, _)) = pool_util::try_get(addr, "/plaintext") {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        pool_util::signal(child.id(), "TERM");
        let status = child.wait().unwrap();
        assert!(ok, "{mode}: no answer over IPv6");
        assert!(status.success());
    }
}
