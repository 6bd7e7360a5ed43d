//! Supervision: restarts, the crash-loop breaker, orphan protection.

mod pool_util;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pool_util::{alive, signal, whoami, Client, Pool};

/// Kills one worker with SIGKILL while keep-alive clients load every worker: clients on the
/// other workers see no error, and the slot is back within the restart delay.
fn kill_under_load(mode: &str) {
    let pool = Pool::start(3, &["--mode", mode, "--restart-delay", "300ms"]);
    let victim = pool.workers()[0].clone();
    let victim_pid = victim.pid.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let errors_elsewhere = Arc::new(AtomicUsize::new(0));
    let served_elsewhere = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for _ in 0..12 {
        let (stop, errors, served) = (
            Arc::clone(&stop),
            Arc::clone(&errors_elsewhere),
            Arc::clone(&served_elsewhere),
        );
        let addr = pool.addr;
        threads.push(std::thread::spawn(move || {
            let mut client = Client::connect(addr).unwrap();
            let (_, body) = client.get("/whoami").unwrap();
            let (_, pid) = whoami(&body);
            while !stop.load(Ordering::Relaxed) {
                match client.get("/plaintext") {
                    Ok((200, _)) if pid != victim_pid => {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) | Err(_) if pid == victim_pid => return,
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(300));
    let killed_at = Instant::now();
    signal(victim_pid, "KILL");
    // Back within the restart delay (300 ms) plus the time to fork and build a server.
    let back = loop {
        let w = &pool.workers()[0];
        if w.state == "ready" && w.pid.is_some_and(|p| p != victim_pid) {
            break w.clone();
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(3),
            "worker 1 not back: {}",
            pool.status()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = killed_at.elapsed();
    assert!(
        took < Duration::from_millis(1300),
        "{mode}: back after {took:?}"
    );
    assert_eq!(back.restarts, 1);
    assert_eq!(back.last_exit.as_deref(), Some("signal SIGKILL"));
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(errors_elsewhere.load(Ordering::Relaxed), 0, "{mode}");
    assert!(served_elsewhere.load(Ordering::Relaxed) > 0);
    // New connections are all served, by live workers (the new one included).
    for _ in 0..20 {
        assert_eq!(pool_util::get(pool.addr, "/plaintext").0, 200);
    }
}

#[test]
fn killed_worker_is_back_within_the_restart_delay_shared() {
    kill_under_load("shared");
}

#[test]
fn killed_worker_is_back_within_the_restart_delay_centralized() {
    kill_under_load("centralized");
}

#[test]
fn worker_crashing_at_start_trips_the_breaker_while_the_others_serve() {
    for mode in ["shared", "centralized"] {
        let pool = Pool::start_with_ready(
            2,
            1,
            &[
                "--mode",
                mode,
                "--crash-worker",
                "2",
                "--restart-delay",
                "50ms",
                "--crash-limit",
                "3",
                "--crash-window",
                "10s",
            ],
        );
        let start = Instant::now();
        loop {
            let w = &pool.workers()[1];
            if w.state == "failed" {
                assert_eq!(w.restarts, 2, "{mode}: {}", pool.status());
                assert_eq!(w.last_exit.as_deref(), Some("exit code 3"));
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{}",
                pool.status()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(pool.log_text().contains("crash-loop breaker"));
        for _ in 0..20 {
            let (status, body) = pool_util::get(pool.addr, "/whoami");
            assert_eq!(status, 200, "{mode}");
            assert_eq!(whoami(&body).0, 1, "{mode}");
        }
        assert_eq!(pool.workers()[0].state, "ready");
    }
}

#[test]
fn every_slot_in_a_crash_loop_stops_the_pool_with_an_error() {
    let (mut child, _rx, log) = pool_util::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--mode",
        "shared",
        "--workers",
        "1",
        "--crash-worker",
        "1",
        "--restart-delay",
        "20ms",
        "--crash-limit",
        "2",
    ]);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let log = log.lock().unwrap().join("\n");
    assert!(
        log.contains("every worker slot tripped its crash-loop breaker"),
        "{log}"
    );
}

#[test]
fn workers_do_not_outlive_a_killed_master() {
    let mut pool = Pool::start(2, &["--mode", "shared"]);
    let pids: Vec<u32> = pool.workers().iter().filter_map(|w| w.pid).collect();
    assert_eq!(pids.len(), 2);
    pool.signal("KILL");
    pool.wait_exit(Duration::from_secs(5));
    let start = Instant::now();
    while pids.iter().any(|&p| alive(p)) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "orphaned workers still running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_worker_whose_loop_stops_turning_is_killed_and_replaced() {
    let pool = Pool::start(
        2,
        &[
            "--mode",
            "centralized",
            "--worker-timeout",
            "1500ms",
            "--restart-delay",
            "50ms",
        ],
    );
    let stuck = pool.workers()[1].pid.unwrap();
    // A stopped process is the extreme of a stuck loop: no reports.
    signal(stuck, "STOP");
    let start = Instant::now();
    loop {
        let w = &pool.workers()[1];
        if w.state == "ready" && w.pid.is_some_and(|p| p != stuck) {
            assert_eq!(w.last_exit.as_deref(), Some("signal SIGKILL"));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(6),
            "{}",
            pool.status()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(start.elapsed() >= Duration::from_millis(400));
    assert!(pool.log_text().contains("event loop has not turned"));
    // The healthy worker was left alone.
    assert_eq!(pool.workers()[0].restarts, 0);
}
