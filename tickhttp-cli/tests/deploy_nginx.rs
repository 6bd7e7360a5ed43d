//! nginx on loopback in front of two `tickhttp serve --mode single` processes, configured by
//! `deploy/nginx.conf` itself: the test rewrites only what an unprivileged run on loopback
//! needs (the upstream `server` lines, `listen 80`, the pid file, the logs and the temp
//! paths) and keeps every other directive as written. Checked through nginx: both backends
//! answer, upstream connections are reused (keep-alive), `/events` streams unbuffered, `/ws`
//! upgrades and echoes, the client address in `X-Forwarded-For` keys tickhttp's rate limiter,
//! and requests keep succeeding while one backend stops after SIGTERM
//! (`proxy_next_upstream`). Also `nginx -t` on the deploy file. Skipped with a note when nginx
//! is not installed.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_tickhttp");
const NGINX_CONF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/nginx.conf");

/// `--rate-limit` of each backend: requests per client address per minute.
const RATE_LIMIT: usize = 50;

/// Stops and reaps the children when the test ends, however it ends: SIGTERM (nginx's master
/// then stops and reaps its workers), and after 5 s SIGKILL to the child's process group.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            if let Ok(None) = child.try_wait() {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for child in &mut self.0 {
            while let Ok(None) = child.try_wait() {
                if Instant::now() >= deadline {
                    let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn nginx() -> Option<PathBuf> {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"] {
        if Path::new(p).exists() {
            return Some(p.into());
        }
    }
    eprintln!("note: nginx is not installed (apt-get install nginx); skipping");
    None
}

fn curl_present() -> bool {
    if Command::new("curl").arg("--version").output().is_ok() {
        return true;
    }
    eprintln!("note: curl is missing; skipping");
    false
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

/// `GET path` through curl from the source address `client`; (status, body).
fn curl(client: &str, port: u16, path: &str) -> Option<(u16, String)> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "--interface", client])
        .args(["-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n')?;
    Some((code.trim().parse().ok()?, body.to_string()))
}

/// `GET path?tag=1` .. `?tag=n` from `client`, one after the other on one client connection
/// (curl's URL globbing); the statuses in order.
fn curl_many(client: &str, port: u16, path: &str, tag: &str, n: usize) -> Vec<u16> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "--interface", client])
        .args(["-o", "/dev/null", "-w", "%{http_code}\n"])
        .arg(format!("http://127.0.0.1:{port}{path}?{tag}=[1-{n}]"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().parse().unwrap_or(0))
        .collect()
}

fn pid_of(body: &str) -> Option<u32> {
    let rest = body.split("\"pid\":").nth(1)?;
    rest.trim_end_matches(['}', '\n']).trim().parse().ok()
}

/// `deploy/nginx.conf` made to run unprivileged on loopback: the upstream's `server` lines
/// point at `backends` (in order; surplus lines are dropped), `listen` at `front`, and the
/// `http` block gets an access log and temp paths under `dir`. Everything else is verbatim.
fn rewrite(original: &str, front: u16, backends: &[u16], dir: &Path) -> String {
    let mut out = String::new();
    let mut in_upstream = false;
    let mut servers = 0;
    let mut listens = 0;
    let mut http = 0;
    for line in original.lines() {
        let t = line.trim_start();
        let indent = &line[..line.len() - t.len()];
        if t.starts_with("upstream ") {
            in_upstream = true;
        } else if in_upstream && t.starts_with('}') {
            in_upstream = false;
        }
        if in_upstream && t.starts_with("server ") {
            let addr = t.split_whitespace().nth(1).unwrap().trim_end_matches(';');
            assert!(addr.contains(':'), "upstream server without a port: {line}");
            if let Some(port) = backends.get(servers) {
                out.push_str(&line.replacen(addr, &format!("127.0.0.1:{port}"), 1));
                out.push('\n');
            }
            servers += 1;
            continue;
        }
        if t.starts_with("listen ") {
            listens += 1;
            out.push_str(&format!("{indent}listen 127.0.0.1:{front};\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if t.starts_with("http ") && t.ends_with('{') {
            http += 1;
            let d = dir.display();
            // Off the compiled-in /var/log/nginx and /var/lib/nginx, which need root.
            for (directive, name) in [
                ("access_log", "access.log"),
                ("client_body_temp_path", "client_body"),
                ("proxy_temp_path", "proxy"),
                ("fastcgi_temp_path", "fastcgi"),
                ("uwsgi_temp_path", "uwsgi"),
                ("scgi_temp_path", "scgi"),
            ] {
                out.push_str(&format!("    {directive} {d}/{name};\n"));
            }
        }
    }
    assert!(
        servers >= backends.len(),
        "deploy/nginx.conf names {servers} upstream servers, the test runs {}",
        backends.len()
    );
    assert_eq!(listens, 1, "deploy/nginx.conf: one `listen` expected");
    assert_eq!(http, 1, "deploy/nginx.conf: one `http` block expected");
    out
}

/// The main-context directives of an unprivileged run, for `-g`.
fn globals(dir: &Path) -> String {
    let d = dir.display();
    format!("daemon off; pid {d}/nginx.pid; error_log {d}/error.log info;")
}

fn nginx_test(nginx: &Path, args: &[&std::ffi::OsStr]) -> Output {
    Command::new(nginx).arg("-t").args(args).output().unwrap()
}

/// nginx with the rewritten deploy/nginx.conf in front of two tickhttp processes.
struct Setup {
    children: Children,
    dir: tempfile::TempDir,
    front: u16,
    /// The backends' pids, in the order of `logs`.
    pids: Vec<u32>,
    /// Each backend's stderr: its JSON access log.
    logs: Vec<PathBuf>,
}

impl Setup {
    fn start(nginx: &Path) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        // nginx's workers run as an unprivileged user when the master is root.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut children = Children(Vec::new());
        let mut logs = Vec::new();
        let mut ports = Vec::new();
        let mut pids = Vec::new();
        for i in 0..2 {
            let port = free_port();
            let log = dir.path().join(format!("tickhttp{i}.log"));
            let child = Command::new(BIN)
                .args(["serve", "--mode", "single", "--access-log"])
                .args(["--log-format", "json"])
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .args(["--rate-limit", &RATE_LIMIT.to_string()])
                .args(["--rate-limit-window", "60s"])
                .args(["--rate-limit-trusted-proxies", "127.0.0.1"])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .process_group(0)
                .spawn()
                .unwrap();
            pids.push(child.id());
            children.0.push(child);
            logs.push(log);
            ports.push(port);
        }
        for &port in &ports {
            wait_listening(port, Duration::from_secs(10));
        }

        let front = free_port();
        let original = std::fs::read_to_string(NGINX_CONF).unwrap();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, rewrite(&original, front, &ports, dir.path())).unwrap();
        // A prefix of our own, should the build's relative default paths apply.
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        let globals = globals(dir.path());
        let args = [
            "-p".as_ref(),
            dir.path().as_os_str(),
            "-c".as_ref(),
            conf.as_os_str(),
            "-g".as_ref(),
            globals.as_ref(),
        ];
        let check = nginx_test(nginx, &args);
        assert!(
            check.status.success(),
            "nginx -t on the rewritten deploy/nginx.conf: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        children.0.push(
            Command::new(nginx)
                .args(args)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("nginx.stderr")).unwrap())
                .process_group(0)
                .spawn()
                .unwrap(),
        );
        wait_listening(front, Duration::from_secs(10));
        Setup {
            children,
            dir,
            front,
            pids,
            logs,
        }
    }

    /// Requests `/whoami` from `client` until both backends have answered.
    fn reach_both(&self, client: &str) {
        let want: BTreeSet<u32> = self.pids.iter().copied().collect();
        let mut seen = BTreeSet::new();
        for _ in 0..20 {
            match curl(client, self.front, "/whoami") {
                Some((200, body)) => {
                    seen.insert(pid_of(&body).expect("a pid in /whoami"));
                }
                other => panic!("/whoami through nginx: {other:?}"),
            }
            if seen == want {
                return;
            }
        }
        panic!("not every backend answered /whoami through nginx: {seen:?} of {want:?}");
    }

    fn nginx_error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

/// The access-log lines across `logs` whose path starts with `prefix`, once there are `n` of
/// them or after 5 s (a line is written as its response goes out).
fn access_lines(logs: &[PathBuf], prefix: &str, n: usize) -> Vec<String> {
    let needle = format!("\"path\":\"{prefix}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<String> = logs
            .iter()
            .flat_map(|log| {
                std::fs::read_to_string(log)
                    .unwrap()
                    .lines()
                    .filter(|l| {
                        l.contains("\"target\":\"tickhttp::access\"") && l.contains(&needle)
                    })
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        if lines.len() >= n || Instant::now() >= deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn peer_of(line: &str) -> &str {
    let rest = line.split("\"peer\":\"").nth(1).expect("a peer");
    &rest[..rest.find('"').expect("end of peer")]
}

/// Reads an HTTP response head byte by byte, leaving what follows it unread.
fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!(
                "response head cut short ({other:?}): {}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// One masked client frame (FIN set) with a payload under 126 bytes.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// One unmasked server frame with a payload under 126 bytes: (first byte, payload).
fn server_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).unwrap();
    assert_eq!(head[1] & 0x80, 0, "a server frame must not be masked");
    let len = usize::from(head[1] & 0x7f);
    assert!(len < 126, "unexpectedly long frame");
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).unwrap();
    (head[0], payload)
}

#[test]
fn nginx_t_accepts_the_deploy_config() {
    let Some(nginx) = nginx() else { return };
    // As written. nginx -t opens the files the configuration names (the build's pid file
    // and /var/log/nginx/access.log): without the rights to, it fails after the syntax check.
    let verbatim = nginx_test(&nginx, &["-c".as_ref(), NGINX_CONF.as_ref()]);
    let stderr = String::from_utf8_lossy(&verbatim.stderr);
    if !verbatim.status.success() {
        let environmental = stderr.contains("syntax is ok")
            && stderr.lines().filter(|l| l.contains("[emerg]")).all(|l| {
                l.contains("Permission denied") || l.contains("No such file or directory")
            });
        assert!(environmental, "nginx -t on deploy/nginx.conf: {stderr}");
        eprintln!(
            "note: nginx -t on deploy/nginx.conf as written needs root here \
             (syntax is ok); checking the rewritten configuration instead:\n{stderr}"
        );
    }
    // Rewritten for loopback, unprivileged (the one the other tests run).
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read_to_string(NGINX_CONF).unwrap();
    let conf = dir.path().join("nginx.conf");
    let backends = [free_port(), free_port()];
    std::fs::write(
        &conf,
        rewrite(&original, free_port(), &backends, dir.path()),
    )
    .unwrap();
    let globals = globals(dir.path());
    let rewritten = nginx_test(
        &nginx,
        &[
            "-p".as_ref(),
            dir.path().as_os_str(),
            "-c".as_ref(),
            conf.as_os_str(),
            "-g".as_ref(),
            globals.as_ref(),
        ],
    );
    assert!(
        rewritten.status.success(),
        "nginx -t on the rewritten deploy/nginx.conf: {}",
        String::from_utf8_lossy(&rewritten.stderr)
    );
}

#[test]
fn nginx_proxies_keep_alive_events_websocket_and_forwarded_for() {
    let Some(nginx) = nginx() else { return };
    if !curl_present() {
        return;
    }
    let setup = Setup::start(&nginx);
    let front = setup.front;

    // least_conn spreads the requests: both backends answer /whoami.
    setup.reach_both("127.0.0.2");

    // Keep-alive to the upstreams: 20 requests on one client connection reach the backends
    // over far fewer connections, all from nginx's address (not the client's).
    let n = 20;
    let codes = curl_many("127.0.0.3", front, "/json", "ka", n);
    assert_eq!(codes, vec![200; n], "/json through nginx");
    let lines = access_lines(&setup.logs, "/json?ka=", n);
    assert_eq!(lines.len(), n, "access-log lines of /json?ka=:\n{lines:#?}");
    let peers: BTreeSet<&str> = lines.iter().map(|l| peer_of(l)).collect();
    assert!(
        peers.iter().all(|p| p.starts_with("127.0.0.1:")),
        "the backends see nginx as the peer: {peers:?}"
    );
    assert!(
        peers.len() <= n / 2,
        "upstream connections are not reused: {} connections for {n} requests: {peers:?}",
        peers.len()
    );

    // /events: unbuffered, the first event arrives long before the stream ends.
    let mut s = TcpStream::connect(("127.0.0.1", front)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"GET /events?count=3&interval_ms=800 HTTP/1.1\r\nHost: localhost\r\n\
          Connection: close\r\n\r\n",
    )
    .unwrap();
    let mut text = String::new();
    let mut first = None;
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("reading /events through nginx");
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        if first.is_none() && text.contains("data: ") {
            first = Some(Instant::now());
        }
    }
    let end = Instant::now();
    assert!(text.starts_with("HTTP/1.1 200"), "/events: {text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "/events: {text}"
    );
    assert_eq!(text.matches("event: tick").count(), 3, "/events: {text}");
    let first = first.expect("no event through nginx");
    assert!(
        end - first >= Duration::from_millis(1000),
        "/events is buffered: the first event came {:?} before the end of the stream",
        end - first
    );

    // /ws: the upgrade goes through, and a text message comes back.
    let mut s = TcpStream::connect(("127.0.0.1", front)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
          Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let head = read_head(&mut s);
    assert!(
        head.starts_with("HTTP/1.1 101"),
        "/ws through nginx: {head}"
    );
    assert!(
        head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "/ws: wrong Sec-WebSocket-Accept: {head}"
    );
    s.write_all(&client_frame(0x1, b"through nginx")).unwrap();
    assert_eq!(server_frame(&mut s), (0x81, b"through nginx".to_vec()));
    s.write_all(&client_frame(0x8, &1000u16.to_be_bytes()))
        .unwrap();
    let (first_byte, payload) = server_frame(&mut s);
    assert_eq!(first_byte, 0x88, "a close frame answers the close");
    assert_eq!(payload.get(..2), Some(&1000u16.to_be_bytes()[..]));

    // X-Forwarded-For: each backend limits 127.0.0.5 on its own budget, not nginx's
    // address, so 127.0.0.6 still gets through.
    let codes = curl_many("127.0.0.5", front, "/plaintext", "rl", 3 * RATE_LIMIT);
    let allowed = codes.iter().take_while(|&&c| c == 200).count();
    assert!(
        codes.contains(&429) && codes.iter().all(|&c| c == 200 || c == 429),
        "no 429 for 127.0.0.5 after {} requests: {codes:?}",
        codes.len()
    );
    assert!(
        allowed >= RATE_LIMIT,
        "limited after {allowed} requests (limit {RATE_LIMIT} per backend)"
    );
    assert_eq!(
        curl("127.0.0.6", front, "/plaintext").map(|(code, _)| code),
        Some(200),
        "another client is limited too: the key is not the forwarded address"
    );
}

#[test]
fn nginx_retries_on_the_other_backend_when_one_stops() {
    let Some(nginx) = nginx() else { return };
    if !curl_present() {
        return;
    }
    let mut setup = Setup::start(&nginx);
    let front = setup.front;
    setup.reach_both("127.0.0.2");
    let (victim, survivor) = (setup.pids[0], setup.pids[1]);

    // Slow requests in flight on both backends (least_conn), and a stream of short ones.
    let slow: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                curl("127.0.0.3", front, "/sleep?ms=800").map(|(code, _)| code)
            })
        })
        .collect();
    let done = Arc::new(AtomicUsize::new(0));
    let stream = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut answers = Vec::new();
            for _ in 0..30 {
                let sent = Instant::now();
                answers.push((sent, curl("127.0.0.4", front, "/whoami")));
                done.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(30));
            }
            answers
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while done.load(Ordering::SeqCst) < 5 {
        assert!(Instant::now() < deadline, "no answers through nginx");
        std::thread::sleep(Duration::from_millis(10));
    }
    kill(Pid::from_raw(victim as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = setup.children.0[0].try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the stopped backend did not exit"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let exited = Instant::now();
    assert!(status.success(), "the stopped backend: {status}");

    for t in slow {
        assert_eq!(
            t.join().unwrap(),
            Some(200),
            "a slow request in flight during the stop"
        );
    }
    let answers = stream.join().unwrap();
    for (sent, answer) in &answers {
        let Some((200, body)) = answer else {
            panic!(
                "a request failed through nginx while a backend stopped: {answer:?}\n{}",
                setup.nginx_error_log()
            );
        };
        if *sent > exited {
            assert_eq!(pid_of(body), Some(survivor), "sent after the stop");
        }
    }
    // And afterwards: every request reaches the remaining backend.
    for _ in 0..10 {
        match curl("127.0.0.4", front, "/whoami") {
            Some((200, body)) => assert_eq!(pid_of(&body), Some(survivor)),
            other => panic!("after the stop: {other:?}\n{}", setup.nginx_error_log()),
        }
    }
}
