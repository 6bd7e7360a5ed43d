//! `tickhttp serve` under systemd, one server and the worker pool: socket activation (through
//! `systemd-socket-activate`) and sd_notify messages (READY=1, MAINPID=, RELOADING=1, WATCHDOG=1,
//! STOPPING=1) to a datagram socket the test binds.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_tickhttp");
const SOCKET_ACTIVATE: &str = "/usr/bin/systemd-socket-activate";

/// Kills the child (and reaps it) unless the test already did.
struct Guard(Option<Child>);

impl Guard {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.0.as_ref().expect("child").id() as i32)
    }

    /// Waits up to `limit` for the child to exit.
    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.0.as_mut()?;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.0 = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `GET path` with `Connection: close`; the whole answer, retried until `limit`.
fn get(port: u16, path: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        match try_get(port, path) {
            Ok(answer) => return answer,
            Err(e) if Instant::now() >= deadline => panic!("GET {path} on port {port}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn try_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    if answer.is_empty() {
        return Err(std::io::Error::other("empty answer"));
    }
    Ok(answer)
}

fn have_socket_activate() -> bool {
    if Path::new(SOCKET_ACTIVATE).exists() {
        return true;
    }
    eprintln!(
        "note: {SOCKET_ACTIVATE} is missing (Debian package `systemd`); \
         skipping the socket-activation test"
    );
    false
}

/// The next datagram from the notify socket, as text, or `None` after `limit`.
fn next_message(sock: &UnixDatagram, limit: Duration) -> Option<String> {
    sock.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    match sock.recv(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(_) => None,
    }
}

/// Reads datagrams until one has the line `want`; the messages seen before it.
fn expect_message(sock: &UnixDatagram, want: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Some(msg) = next_message(sock, left.max(Duration::from_millis(1))) else {
            break;
        };
        if msg.lines().any(|l| l == want) {
            return seen;
        }
        seen.push(msg);
    }
    panic!("no {want} within {limit:?}; got {seen:?}");
}

#[test]
fn socket_activation_serves_on_the_passed_socket() {
    if !have_socket_activate() {
        return;
    }
    let port = free_port();
    // --listen names a port that must not be bound: the socket comes from fd 3.
    let unused = free_port();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("stderr.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut child = Guard(Some(
        Command::new(SOCKET_ACTIVATE)
            .arg("-l")
            .arg(format!("127.0.0.1:{port}"))
            .arg(BIN)
            .args(["serve", "--mode", "single", "--log", "info"])
            .arg("--listen")
            .arg(format!("127.0.0.1:{unused}"))
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("systemd-socket-activate"),
    ));
    // The first connection makes systemd-socket-activate exec tickhttp (same pid).
    let whoami = get(port, "/whoami", Duration::from_secs(10));
    assert!(whoami.starts_with("HTTP/1.1 200"), "{whoami}");
    assert!(
        whoami.contains(&format!("\"pid\":{}", child.pid())),
        "answered by another process: {whoami}"
    );
    let health = get(port, "/health", Duration::from_secs(5));
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(
        TcpStream::connect(("127.0.0.1", unused)).is_err(),
        "--listen was bound although a socket was passed"
    );

    kill(child.pid(), Signal::SIGTERM).unwrap();
    let status = child
        .wait_exit(Duration::from_secs(10))
        .expect("no exit within 10 s of SIGTERM");
    assert!(status.success(), "{status}");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("passed by systemd (socket activation"),
        "the start block does not say where the socket came from:\n{log}"
    );
}

#[test]
fn notify_sends_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let port = free_port();
    let mut child = Guard(Some(
        Command::new(BIN)
            .args(["serve", "--mode", "single", "--log", "warn"])
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "200000")
            .env_remove("WATCHDOG_PID")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));

    // READY=1 comes once the socket listens: a request right after it is answered.
    expect_message(&sock, "READY=1", Duration::from_secs(10));
    let answer = try_get(port, "/plaintext").expect("not listening after READY=1");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // WATCHDOG=1 every 100 ms (half of WATCHDOG_USEC): several within a second.
    let start = Instant::now();
    for _ in 0..3 {
        expect_message(&sock, "WATCHDOG=1", Duration::from_secs(2));
    }
    assert!(start.elapsed() < Duration::from_secs(2));

    kill(child.pid(), Signal::SIGTERM).unwrap();
    let before = expect_message(&sock, "STOPPING=1", Duration::from_secs(10));
    assert!(
        before.iter().all(|m| m.trim() == "WATCHDOG=1"),
        "unexpected messages before STOPPING=1: {before:?}"
    );
    let status = child
        .wait_exit(Duration::from_secs(10))
        .expect("no exit within 10 s of SIGTERM");
    assert!(status.success(), "{status}");
}

#[test]
fn socket_activation_and_notify_together() {
    if !have_socket_activate() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let port = free_port();
    let mut child = Guard(Some(
        Command::new(SOCKET_ACTIVATE)
            .arg("-l")
            .arg(format!("127.0.0.1:{port}"))
            .arg(format!("--setenv=NOTIFY_SOCKET={}", path.display()))
            .arg(BIN)
            .args(["serve", "--mode", "single", "--log", "warn"])
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", free_port()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("systemd-socket-activate"),
    ));
    // Exec happens on the first connection, which is then served.
    let answer = get(port, "/json", Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    expect_message(&sock, "READY=1", Duration::from_secs(5));

    kill(child.pid(), Signal::SIGTERM).unwrap();
    expect_message(&sock, "STOPPING=1", Duration::from_secs(10));
    let status = child
        .wait_exit(Duration::from_secs(10))
        .expect("no exit within 10 s of SIGTERM");
    assert!(status.success(), "{status}");
}

/// The `KEY=value` line `key` of a notify message.
fn field<'a>(msg: &'a str, key: &str) -> Option<&'a str> {
    msg.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

fn pool_socket_activation(mode: &str) {
    if !have_socket_activate() {
        return;
    }
    let port = free_port();
    let unused = free_port();
    let mut child = Guard(Some(
        Command::new(SOCKET_ACTIVATE)
            .arg("-l")
            .arg(format!("127.0.0.1:{port}"))
            .arg(BIN)
            .args(["serve", "--mode", mode, "--workers", "2", "--log", "warn"])
            .arg("--listen")
            .arg(format!("127.0.0.1:{unused}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("systemd-socket-activate"),
    ));
    // The first connection makes systemd-socket-activate exec tickhttp; its workers serve.
    for _ in 0..4 {
        let whoami = get(port, "/whoami", Duration::from_secs(10));
        assert!(whoami.starts_with("HTTP/1.1 200"), "{whoami}");
        assert!(whoami.contains("\"worker_id\":"), "{whoami}");
        assert!(
            !whoami.contains(&format!("\"pid\":{}", child.pid())),
            "answered by the master, not a worker: {whoami}"
        );
    }
    assert!(
        TcpStream::connect(("127.0.0.1", unused)).is_err(),
        "--listen was bound although a socket was passed"
    );
    kill(child.pid(), Signal::SIGTERM).unwrap();
    let status = child
        .wait_exit(Duration::from_secs(15))
        .expect("no exit within 15 s of SIGTERM");
    assert!(status.success(), "{status}");
}

#[test]
fn pool_socket_activation_centralized() {
    pool_socket_activation("centralized");
}

#[test]
fn pool_socket_activation_shared() {
    pool_socket_activation("shared");
}

#[test]
fn pool_notifies_ready_reloading_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let port = free_port();
    let mut child = Guard(Some(
        Command::new(BIN)
            .args([
                "serve",
                "--mode",
                "shared",
                "--workers",
                "2",
                "--log",
                "warn",
            ])
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "200000")
            .env_remove("WATCHDOG_PID")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let master = child.pid().as_raw().to_string();

    // READY=1 with MAINPID= in one message, once every worker is ready.
    let deadline = Instant::now() + Duration::from_secs(10);
    let ready = loop {
        let msg = next_message(&sock, Duration::from_secs(10)).expect("no READY=1");
        if field(&msg, "READY").is_some() {
            break msg;
        }
        assert!(Instant::now() < deadline, "no READY=1");
    };
    assert_eq!(field(&ready, "MAINPID"), Some(master.as_str()), "{ready}");
    let answer = try_get(port, "/plaintext").expect("not serving after READY=1");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // The master's loop feeds the watchdog every 100 ms.
    for _ in 0..3 {
        expect_message(&sock, "WATCHDOG=1", Duration::from_secs(2));
    }

    // SIGHUP: RELOADING=1 with MONOTONIC_USEC=, then READY=1 when every worker is new.
    kill(child.pid(), Signal::SIGHUP).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let reloading = loop {
        let msg = next_message(&sock, Duration::from_secs(15)).expect("no RELOADING=1");
        if field(&msg, "RELOADING").is_some() {
            break msg;
        }
        assert!(Instant::now() < deadline, "no RELOADING=1");
    };
    assert!(field(&reloading, "MONOTONIC_USEC").is_some(), "{reloading}");
    expect_message(&sock, "READY=1", Duration::from_secs(15));
    let answer = try_get(port, "/plaintext").expect("not serving after the reload");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    kill(child.pid(), Signal::SIGTERM).unwrap();
    expect_message(&sock, "STOPPING=1", Duration::from_secs(10));
    let status = child
        .wait_exit(Duration::from_secs(15))
        .expect("no exit within 15 s of SIGTERM");
    assert!(status.success(), "{status}");
}

#[test]
fn an_upgraded_master_tells_systemd_it_is_the_main_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let port = free_port();
    let mut child = Guard(Some(
        Command::new(BIN)
            .args([
                "serve",
                "--mode",
                "centralized",
                "--workers",
                "1",
                "--log",
                "warn",
            ])
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("NOTIFY_SOCKET", &path)
            .env_remove("WATCHDOG_USEC")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let old = child.pid().as_raw().to_string();
    expect_message(&sock, "READY=1", Duration::from_secs(10));

    kill(child.pid(), Signal::SIGUSR2).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        let msg = next_message(&sock, Duration::from_secs(20)).expect("no READY=1 after USR2");
        if field(&msg, "READY").is_some() {
            break msg;
        }
        assert!(
            field(&msg, "STOPPING").is_none(),
            "the old master told systemd it stops: {msg}"
        );
        assert!(Instant::now() < deadline, "no READY=1 after USR2");
    };
    let new: i32 = field(&ready, "MAINPID")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no MAINPID= in {ready}"));
    assert_ne!(new.to_string(), old, "{ready}");
    // The old master drains and exits; the new one serves.
    let status = child
        .wait_exit(Duration::from_secs(20))
        .expect("the old master did not exit after the upgrade");
    assert!(status.success(), "{status}");
    let answer = get(port, "/plaintext", Duration::from_secs(5));
    kill(Pid::from_raw(new), Signal::SIGTERM).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let msg = expect_message(&sock, "STOPPING=1", Duration::from_secs(10));
    drop(msg);
    let deadline = Instant::now() + Duration::from_secs(15);
    while kill(Pid::from_raw(new), None).is_ok() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        kill(Pid::from_raw(new), None).is_err(),
        "the new master outlived SIGTERM"
    );
}
