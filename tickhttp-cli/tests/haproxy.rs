//! HAProxy on loopback in front of two `tickhttp serve --mode single` processes, with health
//! checks on /_tickhttp/ready and `send-proxy-v2` to tickhttp's `--proxy-protocol-trusted`: both
//! backends answer /whoami, and the client's address (127.0.0.5, not HAProxy's 127.0.0.1)
//! reaches tickhttp's access log. Skipped with a note when haproxy is not installed.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tickhttp");

/// The client's source address: inside 127.0.0.0/8, different from HAProxy's own.
const CLIENT_IP: &str = "127.0.0.5";

/// Kills and reaps the children when the test ends, however it ends.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn haproxy() -> Option<PathBuf> {
    for p in [
        "/usr/sbin/haproxy",
        "/usr/bin/haproxy",
        "/usr/local/sbin/haproxy",
    ] {
        if Path::new(p).exists() {
            return Some(p.into());
        }
    }
    eprintln!("note: haproxy is not installed (apt-get install haproxy); skipping");
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET path` through curl from `CLIENT_IP`; (status, body).
fn curl(port: u16, path: &str) -> Option<(u16, String)> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "--interface", CLIENT_IP])
        .args(["-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n')?;
    Some((code.trim().parse().ok()?, body.to_string()))
}

fn pid_of(body: &str) -> Option<u32> {
    let rest = body.split("\"pid\":").nth(1)?;
    rest.trim_end_matches(['}', '\n']).trim().parse().ok()
}

fn config(front: u16, backends: &[u16]) -> String {
    let mut cfg = format!(
        "global\n    maxconn 256\n\n\
         defaults\n    mode http\n    timeout connect 2s\n    timeout client 10s\n    \
         timeout server 10s\n    timeout check 2s\n\n\
         frontend fe\n    bind 127.0.0.1:{front}\n    default_backend tickhttp\n\n\
         backend tickhttp\n    balance roundrobin\n    option httpchk GET /_tickhttp/ready\n    \
         http-check expect status 200\n"
    );
    for (i, port) in backends.iter().enumerate() {
        // Health checks also carry the PROXY header (send-proxy-v2, no separate check port).
        cfg.push_str(&format!(
            "    server t{i} 127.0.0.1:{port} check inter 200ms fall 2 rise 1 send-proxy-v2\n"
        ));
    }
    cfg
}

#[test]
fn haproxy_send_proxy_v2_to_two_single_processes() {
    let Some(haproxy) = haproxy() else { return };
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("note: curl is missing; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut children = Children(Vec::new());
    let mut logs = Vec::new();
    let mut ports = Vec::new();
    let mut pids = BTreeSet::new();
    for i in 0..2 {
        let port = free_port();
        let log = dir.path().join(format!("tickhttp{i}.log"));
        let child = Command::new(BIN)
            .args([
                "serve",
                "--mode",
                "single",
                "--access-log",
                "--log-format",
                "json",
            ])
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(["--proxy-protocol-trusted", "127.0.0.1/32"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        pids.insert(child.id());
        children.0.push(child);
        wait_listening(port, Duration::from_secs(10));
        logs.push(log);
        ports.push(port);
    }

    // A trusted peer without the PROXY header is refused: the header is required.
    let mut direct = TcpStream::connect(("127.0.0.1", ports[0])).unwrap();
    direct
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    direct
        .write_all(b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = direct.read_to_string(&mut answer);
    assert!(
        !answer.starts_with("HTTP/1.1 200"),
        "served without a PROXY header: {answer}"
    );

    let front = free_port();
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg, config(front, &ports)).unwrap();
    let check = Command::new(&haproxy)
        .arg("-c")
        .arg("-f")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "haproxy -c: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    children.0.push(
        Command::new(&haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("haproxy.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_listening(front, Duration::from_secs(10));

    // Round robin: both processes answer, within a bounded number of requests.
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut requests = 0;
    while seen != pids && Instant::now() < deadline && requests < 100 {
        requests += 1;
        if let Some((200, body)) = curl(front, "/whoami") {
            if let Some(pid) = pid_of(&body) {
                seen.insert(pid);
            }
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert_eq!(
        seen, pids,
        "not every backend answered /whoami through HAProxy"
    );

    // The client address from the PROXY v2 header reaches each access log, and HAProxy's
    // health checks reached /_tickhttp/ready.
    let deadline = Instant::now() + Duration::from_secs(5);
    for log in &logs {
        loop {
            let text = std::fs::read_to_string(log).unwrap();
            let whoami_from_client = text.lines().any(|l| {
                l.contains("\"target\":\"tickhttp::access\"")
                    && l.contains("\"path\":\"/whoami\"")
                    && l.contains(&format!("\"peer\":\"{CLIENT_IP}:"))
            });
            let health = text.lines().any(|l| {
                l.contains("\"path\":\"/_tickhttp/ready\"") && l.contains("\"status\":200")
            });
            if whoami_from_client && health {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no /whoami from {CLIENT_IP} or no /_tickhttp/ready check:\n{text}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
