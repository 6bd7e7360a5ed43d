//! Observability on one surface: `/_tickhttp/metrics` (Prometheus), `/status` (JSON),
//! `/health` and `/ready`, from any worker on the main listener and from the master's admin
//! listener, in pool and single mode; and the demo's live page.

mod pool_util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use pool_util::{get, json_number, parse_workers, spawn, try_get, Pool};

/// The value of the first sample line starting with `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls `path` on `addr` until `done` holds for the body (workers publish every 500 ms).
fn poll_until(addr: SocketAddr, path: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // A connection handed to a worker that was just killed may fail: try again.
        let (status, body) = try_get(addr, path).unwrap_or((0, String::new()));
        if status == 200 && done(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "GET {path} never satisfied:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn pool_metrics_come_from_every_worker_with_a_worker_label() {
    let pool = Pool::start(2, &["--mode", "centralized", "--balancer", "round-robin"]);
    for _ in 0..10 {
        assert_eq!(get(pool.addr, "/plaintext").0, 200);
    }
    let both = |t: &str| {
        let a = sample(t, "tickhttp_requests_total{worker=\"1\"}").unwrap_or(0.0);
        let b = sample(t, "tickhttp_requests_total{worker=\"2\"}").unwrap_or(0.0);
        a >= 5.0 && b >= 5.0
    };
    // Any worker answers for the whole pool, on the main listener.
    let text = poll_until(pool.addr, "/_tickhttp/metrics", both);
    for needle in [
        "# TYPE tickhttp_requests_total counter",
        "# TYPE tickhttp_request_duration_seconds histogram",
        "tickhttp_request_duration_seconds_bucket{worker=\"1\",le=\"0.001\"}",
        "tickhttp_request_duration_seconds_bucket{worker=\"2\",le=\"+Inf\"}",
        "tickhttp_request_duration_seconds_count{worker=\"2\"}",
        "tickhttp_connections_active{worker=\"1\"}",
        "tickhttp_pool_workers_ready 2",
        "tickhttp_pool_ready 1",
        "tickhttp_pool_worker_restarts_total{worker=\"2\"} 0",
        "tickhttp_pool_dispatched_total",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    // The master's admin listener renders the same families from the same board.
    let admin = poll_until(pool.status_addr, "/metrics", both);
    assert!(admin.contains("tickhttp_pool_workers_ready 2"), "{admin}");
    assert!(
        admin.contains("tickhttp_request_duration_seconds_sum{worker=\"1\"}"),
        "{admin}"
    );
}

#[test]
fn status_health_and_ready_on_both_surfaces() {
    let pool = Pool::start(2, &[]);
    let (status, json) = get(pool.addr, "/_tickhttp/status");
    assert_eq!(status, 200, "{json}");
    let workers = parse_workers(&json);
    assert_eq!(workers.len(), 2, "{json}");
    for w in &workers {
        assert_eq!(w.state, "ready", "{json}");
        assert!(w.pid.is_some(), "{json}");
        assert_eq!(w.restarts, 0);
    }
    assert!(json.contains("\"ready\":true"), "{json}");
    assert!(json.contains("\"uptime_s\":"), "{json}");
    assert_eq!(json_number(&json, "ready_workers"), 2);
    assert_eq!(get(pool.addr, "/_tickhttp/health"), (200, "ok\n".into()));
    assert_eq!(get(pool.addr, "/_tickhttp/ready"), (200, "ready\n".into()));
    assert_eq!(get(pool.status_addr, "/health").0, 200);
    assert_eq!(get(pool.status_addr, "/ready").0, 200);
    assert_eq!(get(pool.status_addr, "/status").0, 200);
    // The demo also serves them at the root.
    assert_eq!(get(pool.addr, "/ready").0, 200);
    assert!(get(pool.addr, "/status").1.contains("\"workers\":["));
}

#[test]
fn a_worker_answers_status_with_the_masters_view_of_restarts() {
    let pool = Pool::start(2, &["--mode", "centralized", "--restart-delay", "50ms"]);
    let victim = parse_workers(&pool.status())
        .into_iter()
        .find(|w| w.id == 1)
        .and_then(|w| w.pid)
        .expect("worker 1 has a pid");
    pool_util::signal(victim, "KILL");
    // Any worker, on the main listener, reports the crash as the master counted it.
    // Once it is back: its restart reason, every worker's memory (sampled each second) and
    // heartbeat, as the master sees them.
    poll_until(pool.addr, "/_tickhttp/status", |b| {
        b.contains("\"crash\":1")
            && b.contains("\"last_restart\":\"crash\"")
            && b.contains("\"restarts\":1")
            && !b.contains("\"rss_bytes\":null")
            && !b.contains("\"heartbeat_age_ms\":null")
    });
    let text = poll_until(pool.addr, "/_tickhttp/metrics", |t| {
        t.contains("reason=\"crash\"} 1")
    });
    assert!(
        text.contains("tickhttp_pool_worker_restarts_total{worker=\"1\"} 1"),
        "{text}"
    );
}

#[test]
fn ready_turns_503_while_the_pool_drains() {
    let pool = Pool::start(1, &["--shutdown-timeout", "5s"]);
    // A request in flight keeps the worker draining after the signal.
    let mut slow = TcpStream::connect(pool.addr).unwrap();
    slow.write_all(b"GET /sleep?ms=2500 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    pool.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (status, body) = get(pool.status_addr, "/ready");
        if status == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "still {status} {body}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(get(pool.status_addr, "/status")
        .1
        .contains("\"stopping\":true"));
    // The request in flight still completes.
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = String::new();
    BufReader::new(&slow).read_line(&mut head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

/// Kills the process group of a `tickhttp` started by [`single`] when dropped.
struct Killer(Option<std::process::Child>);

impl Drop for Killer {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .stderr(std::process::Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `tickhttp serve --mode single` on an ephemeral port; returns the child and address.
fn single(args: &[&str]) -> (Killer, SocketAddr) {
    let mut all = vec!["--mode", "single", "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let (child, rx, _log) = spawn(&all);
    let killer = Killer(Some(child));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("start line");
        if let Some(i) = line.find("listening on http://") {
            let rest = &line[i + "listening on http://".len()..];
            let addr = rest.split('/').next().unwrap().parse().unwrap();
            return (killer, addr);
        }
    }
}

#[test]
fn single_mode_serves_the_same_endpoints_from_its_server() {
    let (_server, addr) = single(&[]);
    for _ in 0..3 {
        assert_eq!(get(addr, "/json").0, 200);
    }
    let (status, text) = get(addr, "/_tickhttp/metrics");
    assert_eq!(status, 200);
    assert!(
        sample(&text, "tickhttp_requests_total").is_some_and(|n| n >= 3.0),
        "{text}"
    );
    assert!(text.contains("tickhttp_request_duration_seconds_bucket{le=\"0.005\"}"));
    assert!(
        !text.contains("worker=\""),
        "no worker label in single mode:\n{text}"
    );
    let (status, json) = get(addr, "/_tickhttp/status");
    assert_eq!(status, 200);
    assert!(json.contains("\"architecture\":\"single\""), "{json}");
    assert_eq!(parse_workers(&json).len(), 1);
    assert_eq!(get(addr, "/_tickhttp/ready").0, 200);
    assert_eq!(get(addr, "/_tickhttp/health").0, 200);
}

#[test]
fn admin_prefix_is_configurable_and_can_be_turned_off() {
    let (_a, addr) = single(&["--admin-prefix", "/ops"]);
    assert_eq!(get(addr, "/ops/ready").0, 200);
    assert_eq!(get(addr, "/_tickhttp/ready").0, 404);
    let (_b, addr) = single(&["--admin-prefix", "off"]);
    assert_eq!(get(addr, "/_tickhttp/metrics").0, 404);
    // Only GET and HEAD.
    let (_c, addr) = single(&[]);
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"POST /_tickhttp/ready HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 405"), "{out}");
}

#[test]
fn a_bad_admin_prefix_is_a_configuration_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tickhttp"))
        .args(["serve", "--mode", "single", "--admin-prefix", "no-slash"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--admin-prefix"), "{err}");
}
