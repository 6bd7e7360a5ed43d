//! Shared helpers of the worker-pool tests: start the real `tickhttp` binary in a process
//! group of its own, read its status endpoint, talk HTTP/1.1 over plain sockets, and kill
//! everything on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `tickhttp serve` in pool mode.
pub struct Pool {
    child: Option<Child>,
    pub pid: u32,
    pub addr: SocketAddr,
    pub status_addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn addr_after(line: &str, marker: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(marker)? + marker.len()..];
    rest.split('/').next()?.parse().ok()
}

/// Spawns `tickhttp serve` with `args`, without waiting for anything.
pub fn spawn(args: &[&str]) -> (Child, mpsc::Receiver<String>, Arc<Mutex<Vec<String>>>) {
    spawn_bin(env!("CARGO_BIN_EXE_tickhttp").as_ref(), args)
}

/// Spawns `BIN serve` with `args` (a copy of the binary, for upgrade tests).
pub fn spawn_bin(
    bin: &std::path::Path,
    args: &[&str],
) -> (Child, mpsc::Receiver<String>, Arc<Mutex<Vec<String>>>) {
    let mut child = Command::new(bin)
        .arg("serve")
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn tickhttp");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let line = strip_ansi(&line);
            log2.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    (child, rx, log)
}

impl Pool {
    /// Starts a pool on ephemeral ports and waits until `workers` workers are ready.
    pub fn start(workers: usize, args: &[&str]) -> Pool {
        Pool::start_with_ready(workers, workers, args)
    }

    /// Starts a pool of `workers` and waits until `ready` of them are ready.
    pub fn start_with_ready(workers: usize, ready: usize, args: &[&str]) -> Pool {
        Pool::start_bin(
            env!("CARGO_BIN_EXE_tickhttp").as_ref(),
            workers,
            ready,
            args,
        )
    }

    /// Starts `bin` as a pool of `workers` and waits until `ready` of them are ready.
    pub fn start_bin(bin: &std::path::Path, workers: usize, ready: usize, args: &[&str]) -> Pool {
        let workers_arg = workers.to_string();
        let mut all = vec![
            "--listen",
            "127.0.0.1:0",
            "--status-listen",
            "127.0.0.1:0",
            "--workers",
            &workers_arg,
        ];
        all.extend_from_slice(args);
        let (child, rx, log) = spawn_bin(bin, &all);
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut pool = Pool {
            child: Some(child),
            pid,
            addr: "0.0.0.0:0".parse().unwrap(),
            status_addr: "0.0.0.0:0".parse().unwrap(),
            log,
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no start line; log:\n{}", pool.log_text()));
            if line.contains("listening on http://") {
                pool.addr = addr_after(&line, "listening on http://").expect("address");
                pool.status_addr = addr_after(&line, "status on http://").expect("status");
                break;
            }
        }
        pool.wait_ready(ready, Duration::from_secs(15));
        pool
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The master's JSON status.
    pub fn status(&self) -> String {
        get(self.status_addr, "/").1
    }

    pub fn workers(&self) -> Vec<WorkerView> {
        parse_workers(&self.status())
    }

    /// Waits until `n` workers are ready.
    pub fn wait_ready(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let ready = self.workers().iter().filter(|w| w.state == "ready").count();
            if ready >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {ready} of {n} workers ready; status {}\nlog:\n{}",
                self.status(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` (a `kill` name like "TERM") to the master.
    pub fn signal(&self, sig: &str) {
        signal(self.pid, sig);
    }

    /// Waits for the master to exit.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the master did not exit within {within:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // The whole process group: the master and every worker it forked.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.pid)])
            .stderr(Stdio::null())
            .status();
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} {pid} failed");
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[derive(Debug, Clone)]
pub struct WorkerView {
    pub id: u32,
    pub pid: Option<u32>,
    pub state: String,
    pub connections: u64,
    pub requests: u64,
    pub restarts: u32,
    pub last_exit: Option<String>,
}

fn field<'a>(obj: &'a str, name: &str) -> &'a str {
    let key = format!("\"{name}\":");
    let start = obj.find(&key).map(|i| i + key.len()).unwrap_or(obj.len());
    let rest = &obj[start..];
    let end = if let Some(quoted) = rest.strip_prefix('"') {
        quoted.find('"').map_or(rest.len(), |i| i + 2)
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    rest[..end].trim_matches('"')
}

pub fn json_number(json: &str, name: &str) -> u64 {
    field(json, name)
        .parse()
        .unwrap_or_else(|_| panic!("{name} in {json}"))
}

pub fn parse_workers(status: &str) -> Vec<WorkerView> {
    let Some(list) = status.split("\"workers\":[").nth(1) else {
        return Vec::new();
    };
    list.split("{\"id\":")
        .skip(1)
        .map(|chunk| {
            let obj = format!("{{\"id\":{chunk}");
            WorkerView {
                id: field(&obj, "id").parse().unwrap_or(0),
                pid: field(&obj, "pid").parse().ok(),
                state: field(&obj, "state").to_string(),
                connections: field(&obj, "connections").parse().unwrap_or(0),
                requests: field(&obj, "requests").parse().unwrap_or(0),
                restarts: field(&obj, "restarts").parse().unwrap_or(0),
                last_exit: match field(&obj, "last_exit") {
                    "null" => None,
                    s => Some(s.to_string()),
                },
            }
        })
        .collect()
}

/// One request on a new connection (`Connection: close`); returns status and body.
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    try_get(addr, path).unwrap_or_else(|e| panic!("GET {path} on {addr}: {e}"))
}

pub fn try_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> std::io::Result<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no response head in {text:?}")))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    Ok((status, body.to_string()))
}

/// A keep-alive client: one request at a time on one connection.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Client {
            stream,
            buf: Vec::new(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local addr")
    }

    pub fn get(&mut self, path: &str) -> std::io::Result<(u16, String)> {
        write!(self.stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")?;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    let body =
                        String::from_utf8_lossy(&self.buf[end + 4..end + 4 + len]).to_string();
                    self.buf.drain(..end + 4 + len);
                    let (status, _) = parse_response(format!("{head}\r\n\r\n").as_bytes())?;
                    return Ok((status, body));
                }
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// `worker_id` and `pid` from a `/whoami` body.
pub fn whoami(body: &str) -> (u32, u32) {
    (
        json_number(body, "worker_id") as u32,
        json_number(body, "pid") as u32,
    )
}
