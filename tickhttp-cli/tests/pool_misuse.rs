//! Misuse is reported clearly, before anything forks, with a nonzero exit.

mod pool_util;

use std::process::{Command, Output};
use std::time::Duration;

fn serve(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tickhttp"))
        .arg("serve")
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("tickhttp serve {args:?} kept running");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn fails_with(args: &[&str], needle: &str) {
    let out = serve(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(
        stderr.contains(needle),
        "{args:?}: expected {needle:?} in:\n{stderr}"
    );
    assert!(
        !stderr.contains("worker ready"),
        "{args:?} forked workers:\n{stderr}"
    );
}

#[test]
fn zero_workers() {
    fails_with(
        &[
            "--listen",
            "127.0.0.1:0",
            "--mode",
            "shared",
            "--workers",
            "0",
        ],
        "workers: must be at least 1",
    );
}

#[test]
fn too_many_workers() {
    fails_with(
        &["--listen", "127.0.0.1:0", "--workers", "1025"],
        "workers: must be at most 1024",
    );
}

#[test]
fn port_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for mode in ["shared", "centralized"] {
        fails_with(
            &["--listen", &addr, "--mode", mode, "--workers", "2"],
            "cannot listen on",
        );
    }
}

#[test]
fn address_not_on_this_host() {
    fails_with(
        &[
            "--listen",
            "192.0.2.1:8080",
            "--mode",
            "centralized",
            "--workers",
            "1",
        ],
        "cannot listen on 192.0.2.1:8080",
    );
}

#[test]
fn no_permission_to_bind() {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(true);
    if root {
        eprintln!("running as root: privileged ports are allowed; skipped");
        return;
    }
    fails_with(
        &[
            "--listen",
            "127.0.0.1:1",
            "--mode",
            "shared",
            "--workers",
            "1",
        ],
        "cannot listen on 127.0.0.1:1",
    );
}

#[test]
fn balancer_options_that_do_not_fit() {
    fails_with(
        &[
            "--listen",
            "127.0.0.1:0",
            "--mode",
            "shared",
            "--balancer",
            "round-robin",
        ],
        "balancers apply to the centralized architecture only",
    );
    fails_with(
        &[
            "--listen",
            "127.0.0.1:0",
            "--mode",
            "centralized",
            "--workers",
            "2",
            "--balancer",
            "weighted",
            "--weights",
            "1",
        ],
        "one weight per worker",
    );
    fails_with(
        &[
            "--listen",
            "127.0.0.1:0",
            "--mode",
            "centralized",
            "--workers",
            "2",
            "--weights",
            "1,2",
        ],
        "weights apply to the weighted balancer only",
    );
    fails_with(
        &[
            "--listen",
            "127.0.0.1:0",
            "--mode",
            "centralized",
            "--max-queue",
            "0",
        ],
        "max_queue: must be from 1",
    );
    fails_with(
        &["--listen", "127.0.0.1:0", "--balancer", "random"],
        "expected round-robin, least-connections, weighted or sticky",
    );
}

#[test]
fn single_mode_still_works() {
    let (mut child, rx, log) = pool_util::spawn(&["--listen", "127.0.0.1:0", "--mode", "single"]);
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
    let (status, body) = pool_util::get(addr, "/whoami");
    assert_eq!(status, 200);
    assert_eq!(
        pool_util::whoami(&body).1,
        child.id(),
        "single mode serves from one process"
    );
    pool_util::signal(child.id(), "TERM");
    assert!(child.wait().unwrap().success());
}
