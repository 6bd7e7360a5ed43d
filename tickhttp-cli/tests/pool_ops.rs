//! Pool operations with real processes: rolling reload under load, adding and removing
//! workers at run time, recycling, the liveness watchdog, load shedding by queue age.

mod pool_util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pool_util::{alive, json_number, signal, Pool};

/// Keep-alive clients hammering `/plaintext`: a response with `Connection: close` (a
/// draining worker) is followed by a new connection, as a well-behaved client does; anything
/// else that is not a 200 (a reset, an EOF instead of a response, another status) is a
/// failure.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// One response read from a keep-alive connection: status and whether the server closes.
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<(u16, bool)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let close = head.lines().any(|l| l == "connection: close");
                buf.drain(..end + 4 + len);
                return Ok((status, close));
            }
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed without a response",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

impl Load {
    fn start(addr: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, failed, errors) = (
                    Arc::clone(&stop),
                    Arc::clone(&ok),
                    Arc::clone(&failed),
                    Arc::clone(&errors),
                );
                std::thread::spawn(move || {
                    let mut conn: Option<(TcpStream, Vec<u8>)> = None;
                    while !stop.load(Ordering::Relaxed) {
                        let (s, buf) = match &mut conn {
                            Some(c) => c,
                            None => match TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                            {
                                Ok(s) => {
                                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                                    conn.insert((s, Vec::new()))
                                }
                                Err(e) => {
                                    failed.fetch_add(1, Ordering::Relaxed);
                                    errors.lock().unwrap().push(format!("connect: {e}"));
                                    continue;
                                }
                            },
                        };
                        let result = s
                            .write_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n")
                            .and_then(|()| read_response(s, buf));
                        match result {
                            Ok((200, close)) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                if close {
                                    conn = None;
                                }
                            }
                            Ok((status, _)) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                errors.lock().unwrap().push(format!("status {status}"));
                                conn = None;
                            }
                            Err(e) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                errors.lock().unwrap().push(e.to_string());
                                conn = None;
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            errors,
            threads,
        }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the clients; returns (served, failed, the failures' descriptions).
    fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let errors = self.errors.lock().unwrap().clone();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}

/// Waits until every slot has been restarted `restarts` times and is ready again.
fn wait_replaced(pool: &Pool, restarts: u32, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let workers = pool.workers();
        if workers
            .iter()
            .all(|w| w.restarts >= restarts && w.state == "ready")
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not every worker replaced {restarts} times: {}\nlog:\n{}",
            pool.status(),
            pool.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGHUP three times under load: every worker is replaced each time, one at a time, and
/// no request fails.
fn reload_under_load(mode: &str) {
    let pool = Pool::start(2, &["--mode", mode]);
    let load = Load::start(pool.addr, 8);
    std::thread::sleep(Duration::from_millis(200));
    let before: Vec<u32> = pool.workers().iter().filter_map(|w| w.pid).collect();
    for round in 1..=3 {
        pool.signal("HUP");
        wait_replaced(&pool, round, Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(100));
    }
    let served_during = load.ok();
    let (ok, failed, errors) = load.finish();
    assert_eq!(failed, 0, "{mode}: {errors:?}\nlog:\n{}", pool.log_text());
    assert!(served_during > 100, "{mode}: only {ok} served");
    let status = pool.status();
    assert!(
        status.contains("\"reload\":6"),
        "{mode}: 3 reloads of 2 workers: {status}"
    );
    // The old generation is gone (drained, not killed).
    std::thread::sleep(Duration::from_millis(1500));
    for pid in before {
        assert!(!alive(pid), "{mode}: old worker {pid} still alive");
    }
    assert!(
        !pool.log_text().contains("killing it"),
        "{}",
        pool.log_text()
    );
}

#[test]
fn sighup_reloads_every_worker_under_load_without_a_failed_request_shared() {
    reload_under_load("shared");
}

#[test]
fn sighup_reloads_every_worker_under_load_without_a_failed_request_centralized() {
    reload_under_load("centralized");
}

fn wait_count(pool: &Pool, total: u64, ready: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = pool.status();
        let ready_now = pool_util::parse_workers(&status)
            .iter()
            .filter(|w| w.state == "ready")
            .count();
        if json_number(&status, "total_workers") == total && ready_now == ready {
            return;
        }
        assert!(Instant::now() < deadline, "{status}\n{}", pool.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigttin_and_sigttou_add_and_remove_workers() {
    for mode in ["shared", "centralized"] {
        let pool = Pool::start(2, &["--mode", mode]);
        pool.signal("TTIN");
        wait_count(&pool, 3, 3);
        let load = Load::start(pool.addr, 4);
        std::thread::sleep(Duration::from_millis(200));
        let third = pool.workers()[2].pid.unwrap();
        pool.signal("TTOU");
        wait_count(&pool, 2, 2);
        pool.signal("TTOU");
        wait_count(&pool, 1, 1);
        // The last one stays.
        pool.signal("TTOU");
        std::thread::sleep(Duration::from_millis(200));
        wait_count(&pool, 1, 1);
        std::thread::sleep(Duration::from_millis(300));
        let (ok, failed, errors) = load.finish();
        assert_eq!(failed, 0, "{mode}: {errors:?}");
        assert!(ok > 0);
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(third) {
            assert!(
                Instant::now() < deadline,
                "{mode}: removed worker still alive"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        for _ in 0..10 {
            assert_eq!(pool_util::get(pool.addr, "/plaintext").0, 200);
        }
        assert!(pool.log_text().contains("one worker left; keeping it"));
    }
}

#[test]
fn max_requests_replaces_workers_without_a_failed_request() {
    for mode in ["shared", "centralized"] {
        let pool = Pool::start(
            2,
            &[
                "--mode",
                mode,
                "--max-requests",
                "300",
                "--max-requests-jitter",
                "50",
            ],
        );
        let load = Load::start(pool.addr, 4);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = pool.status();
            if json_number(&status, "max_requests") >= 2 {
                break;
            }
            assert!(Instant::now() < deadline, "{mode}: {status}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let (ok, failed, errors) = load.finish();
        assert_eq!(failed, 0, "{mode}: {errors:?}\n{}", pool.log_text());
        assert!(ok >= 600, "{mode}: {ok}");
        assert!(pool.log_text().contains("served its share of requests"));
        assert_eq!(pool.workers().len(), 2);
    }
}

#[test]
fn a_stuck_worker_is_killed_with_a_diagnostic_and_replaced() {
    let pool = Pool::start(
        2,
        &[
            "--mode",
            "centralized",
            "--worker-mode",
            "handler",
            "--block-endpoint",
            "--worker-timeout",
            "1s",
            "--restart-delay",
            "100ms",
        ],
    );
    let addr = pool.addr;
    let before: Vec<u32> = pool.workers().iter().filter_map(|w| w.pid).collect();
    // Blocks the loop of whichever worker takes it, far longer than the timeout.
    let blocked = std::thread::spawn(move || pool_util::try_get(addr, "/block?ms=30000"));
    let start = Instant::now();
    loop {
        let log = pool.log_text();
        if log.contains("event loop has not turned")
            && pool
                .workers()
                .iter()
                .any(|w| w.last_exit.as_deref() == Some("signal SIGKILL"))
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(6),
            "{}\n{log}",
            pool.status()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(900), "killed after {took:?}");
    let log = pool.log_text();
    assert!(
        log.contains("stuck serving \"GET /block\""),
        "no diagnostic naming the request:\n{log}"
    );
    // The client of the stuck request loses its connection; nobody else is affected.
    assert!(blocked.join().unwrap().is_err());
    pool.wait_ready(2, Duration::from_secs(5));
    let now: Vec<u32> = pool.workers().iter().filter_map(|w| w.pid).collect();
    assert_eq!(
        now.iter().filter(|p| !before.contains(p)).count(),
        1,
        "one worker replaced: {before:?} -> {now:?}"
    );
    assert!(pool.status().contains("\"timeout\":1"), "{}", pool.status());
    for _ in 0..10 {
        assert_eq!(pool_util::get(pool.addr, "/plaintext").0, 200);
    }
}

#[test]
fn a_connection_that_waited_longer_than_the_queue_timeout_gets_503_with_retry_after() {
    let pool = Pool::start(
        1,
        &[
            "--mode",
            "centralized",
            "--max-queue",
            "1000",
            "--queue-timeout",
            "300ms",
        ],
    );
    let worker = pool.workers()[0].pid.unwrap();
    // A stopped worker reads nothing: once its control socket is full, connections wait in
    // the master's queue (far from full here), and age out.
    signal(worker, "STOP");
    let mut clients = Vec::new();
    let start = Instant::now();
    loop {
        let mut s = TcpStream::connect(pool.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        clients.push(s);
        if clients.len() % 10 == 0 && json_number(&pool.status(), "queue_length") > 0 {
            break;
        }
        assert!(clients.len() < 2000, "nothing queued: {}", pool.status());
    }
    let queued_at = Instant::now();
    // The last client is in the queue: it is answered 503 after the queue timeout, while
    // the worker is still stopped (so not because the queue was full).
    let mut last = clients.pop().unwrap();
    let mut raw = String::new();
    last.read_to_string(&mut raw)
        .expect("an answer, not a reset");
    let waited = queued_at.elapsed();
    assert!(raw.starts_with("HTTP/1.1 503"), "{raw}");
    assert!(raw.contains("Retry-After: 1"), "{raw}");
    assert!(waited < Duration::from_secs(3), "answered after {waited:?}");
    assert!(start.elapsed() >= Duration::from_millis(300));
    let status = pool.status();
    assert!(json_number(&status, "rejected") >= 1, "{status}");
    assert_eq!(json_number(&status, "queue_length"), 0, "{status}");
    signal(worker, "CONT");
    // The ones handed to the worker before it stopped reading are served.
    let mut ok = 0;
    for mut s in clients {
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("an answer, not a reset");
        if raw.starts_with("HTTP/1.1 200") {
            ok += 1;
        } else {
            assert!(raw.starts_with("HTTP/1.1 503"), "{raw}");
        }
    }
    assert!(ok > 0);
}

/// A copy of the binary in a directory of its own, so a test can replace it on disk.
struct BinCopy {
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
}

impl BinCopy {
    fn new(name: &str) -> BinCopy {
        let dir =
            std::env::temp_dir().join(format!("tickhttp-upgrade-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("tickhttp");
        std::fs::copy(env!("CARGO_BIN_EXE_tickhttp"), &bin).unwrap();
        BinCopy { dir, bin }
    }

    /// Replaces the binary (by rename, as a package manager does) with a program that fails.
    fn break_it(&self) {
        use std::os::unix::fs::PermissionsExt;
        let broken = self.dir.join("broken");
        std::fs::write(&broken, "#!/bin/sh\necho 'broken build' >&2\nexit 1\n").unwrap();
        std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&broken, &self.bin).unwrap();
    }
}

impl Drop for BinCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The pid logged by the old master when the new one reported ready.
fn new_master_pid(pool: &Pool) -> Option<u32> {
    let log = pool.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("the new master is ready"))?
        .to_string();
    line.split("pid=")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// SIGUSR2 under load: a new master takes the sockets over, the old generation drains and
/// exits with status 0, and no request fails.
fn upgrade_under_load(mode: &str) {
    let copy = BinCopy::new(mode);
    let mut pool = Pool::start_bin(&copy.bin, 2, 2, &["--mode", mode]);
    let old_workers: Vec<u32> = pool.workers().iter().filter_map(|w| w.pid).collect();
    let load = Load::start(pool.addr, 8);
    std::thread::sleep(Duration::from_millis(300));
    pool.signal("USR2");
    let status = pool.wait_exit(Duration::from_secs(15));
    assert!(
        status.success(),
        "old master: {status:?}\n{}",
        pool.log_text()
    );
    let new_master = new_master_pid(&pool).expect("the new master's pid in the log");
    assert!(alive(new_master));
    let served_before = load.ok();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        load.ok() > served_before,
        "{mode}: the new generation serves"
    );
    let (ok, failed, errors) = load.finish();
    assert_eq!(failed, 0, "{mode}: {errors:?}\n{}", pool.log_text());
    assert!(ok > 100);
    // The status endpoint (same port) is the new master's now, with new workers.
    let workers = pool.workers();
    assert_eq!(workers.len(), 2);
    for w in &workers {
        assert_eq!(w.state, "ready");
        assert!(!old_workers.contains(&w.pid.unwrap()), "{workers:?}");
    }
    for pid in old_workers {
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid) {
            assert!(Instant::now() < deadline, "old worker {pid} still alive");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // The new master is in the test's process group: dropping the pool kills it too.
    signal(new_master, "TERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(new_master) {
        assert!(Instant::now() < deadline, "new master did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigusr2_upgrades_under_load_without_a_failed_request_shared() {
    upgrade_under_load("shared");
}

#[test]
fn sigusr2_upgrades_under_load_without_a_failed_request_centralized() {
    upgrade_under_load("centralized");
}

#[test]
fn a_failed_upgrade_leaves_the_old_generation_serving() {
    let copy = BinCopy::new("broken");
    let pool = Pool::start_bin(&copy.bin, 2, 2, &["--mode", "shared"]);
    let workers: Vec<u32> = pool.workers().iter().filter_map(|w| w.pid).collect();
    copy.break_it();
    let load = Load::start(pool.addr, 4);
    pool.signal("USR2");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pool.log_text().contains("upgrade failed") {
        assert!(Instant::now() < deadline, "{}", pool.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let (ok, failed, errors) = load.finish();
    assert_eq!(failed, 0, "{errors:?}");
    assert!(ok > 0);
    assert!(alive(pool.pid), "the old master keeps serving");
    let now: Vec<u32> = pool.workers().iter().filter_map(|w| w.pid).collect();
    assert_eq!(now, workers, "the old workers keep serving");
    assert!(pool
        .log_text()
        .contains("this master and its workers keep serving"));
    assert_eq!(pool_util::get(pool.addr, "/plaintext").0, 200);
}

#[test]
fn operation_signals_sent_to_the_whole_process_group_leave_workers_alone() {
    let pool = Pool::start(2, &["--mode", "shared"]);
    let before: Vec<u32> = pool.workers().iter().filter_map(|w| w.pid).collect();
    for sig in ["TTIN", "TTOU", "HUP"] {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), "--", &format!("-{}", pool.pid)])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        std::thread::sleep(Duration::from_millis(100));
    }
    // The master acted on each (a worker added, then removed, then a rolling reload); no
    // worker died of a signal.
    wait_replaced(&pool, 1, Duration::from_secs(10));
    let status = pool.status();
    assert!(status.contains("\"crash\":0"), "{status}");
    assert!(status.contains("\"reload\":2"), "{status}");
    for pid in before {
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid) {
            assert!(Instant::now() < deadline, "old worker {pid} did not drain");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert_eq!(pool_util::get(pool.addr, "/plaintext").0, 200);
}

/// Waits until the status counts `n` restarts for `reason`.
fn wait_reason(pool: &Pool, reason: &str, n: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let status = pool.status();
        if json_number(&status, reason) >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{reason}: {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn max_rss_and_max_age_replace_workers_without_a_failed_request() {
    // Any worker is over 1 KiB: each is replaced at its first report.
    let pool = Pool::start(2, &["--mode", "centralized", "--max-rss", "1K"]);
    let load = Load::start(pool.addr, 4);
    wait_reason(&pool, "max_rss", 2, Duration::from_secs(10));
    let (ok, failed, errors) = load.finish();
    assert_eq!(failed, 0, "{errors:?}");
    assert!(ok > 0);
    assert!(pool.status().contains("\"rss_bytes\":"));
    drop(pool);

    let pool = Pool::start(2, &["--mode", "shared", "--max-age", "1s"]);
    let load = Load::start(pool.addr, 4);
    wait_reason(&pool, "max_age", 2, Duration::from_secs(10));
    let (ok, failed, errors) = load.finish();
    assert_eq!(failed, 0, "{errors:?}");
    assert!(ok > 0);
    assert!(pool.log_text().contains("reached max_age"));
}
