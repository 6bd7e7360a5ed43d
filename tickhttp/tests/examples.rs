//! Every example, run: each is started on a free loopback port, sent a real request or two,
//! checked, and stopped (with SIGTERM where it shuts down gracefully, SIGKILL otherwise).
//!
//! The binaries come from `target/<profile>/examples/`, next to this test's own directory.
//! `cargo test` builds every example before running tests; a filtered run such as
//! `cargo test --test examples` does not, so run `cargo build --examples` first then. A
//! missing binary fails the test with that advice rather than skipping it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

/// How long an example may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Read and write timeout of every client socket.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a graceful stop may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The example binary `name`, built by `cargo test` into `target/<profile>/examples/`.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/examples-HASH -> target/<profile>/examples/NAME
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from target/<profile>/deps");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.is_file(),
        "example binary {} is missing. `cargo test` builds every example; a filtered run \
         (`cargo test --test examples`) does not: run `cargo build --examples` first",
        path.display()
    );
    path
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// A running example: killed with its process group on drop, pass or fail.
struct Running {
    name: &'static str,
    child: Child,
    log: tempfile::NamedTempFile,
    addr: SocketAddr,
}

impl Running {
    /// Starts example `name` with the arguments `args(addr)` and waits until `addr` accepts.
    fn start(name: &'static str, args: impl FnOnce(SocketAddr) -> Vec<String>) -> Running {
        let addr = free_addr();
        let log = tempfile::NamedTempFile::new().expect("a log file");
        let child = Command::new(example(name))
            .args(args(addr))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("the log file"))
            // A group of its own, so pool workers die with it on drop.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting example {name}: {e}"));
        let mut running = Running {
            name,
            child,
            log,
            addr,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return running;
            }
            if let Ok(Some(status)) = running.child.try_wait() {
                panic!(
                    "example {name} exited before listening ({status}):\n{}",
                    running.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "example {name} did not listen on {addr} within {START_TIMEOUT:?}:\n{}",
                running.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("a pid"))
    }

    /// Sends SIGTERM to the example (the pool's master, for pool examples) and waits for it.
    fn terminate(&mut self) -> ExitStatus {
        signal::kill(self.pid(), Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("waitpid") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "example {} did not stop within {STOP_TIMEOUT:?} of SIGTERM:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops gracefully and checks the exit status.
    fn stop(mut self) {
        let status = self.terminate();
        assert!(
            status.success(),
            "example {} exited with {status}:\n{}",
            self.name,
            self.log()
        );
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = signal::killpg(self.pid(), Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response read off the wire.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Parses every response in `wire` (a connection's whole output).
fn parse_replies(mut wire: &[u8]) -> Vec<Reply> {
    let mut replies = Vec::new();
    while !wire.is_empty() {
        let end = find(wire, b"\r\n\r\n").expect("a complete response head") + 4;
        let head = String::from_utf8_lossy(&wire[..end]).into_owned();
        wire = &wire[end..];
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status code");
        let mut reply = Reply {
            status,
            head,
            body: Vec::new(),
        };
        if let Some(len) = reply.header("content-length") {
            let len: usize = len.parse().unwrap();
            reply.body = wire[..len].to_vec();
            wire = &wire[len..];
        } else if reply
            .header("transfer-encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let line_end = find(wire, b"\r\n").expect("a chunk size line");
                let size_line = String::from_utf8_lossy(&wire[..line_end]).into_owned();
                let size = usize::from_str_radix(size_line.split(';').next().unwrap(), 16)
                    .expect("a chunk size");
                wire = &wire[line_end + 2..];
                if size == 0 {
                    wire = &wire[find(wire, b"\r\n").expect("the end of the body") + 2..];
                    break;
                }
                reply.body.extend_from_slice(&wire[..size]);
                wire = &wire[size + 2..];
            }
        } else {
            reply.body = wire.to_vec();
            wire = &[];
        }
        replies.push(reply);
    }
    replies
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Writes `raw` (whose last request must say `Connection: close`) and reads every response.
fn exchange(addr: SocketAddr, raw: &[u8]) -> Vec<Reply> {
    let mut s = connect(addr);
    s.write_all(raw).expect("write");
    let mut wire = Vec::new();
    s.read_to_end(&mut wire).expect("read");
    parse_replies(&wire)
}

/// Reads exactly one response with a `Content-Length` from a connection that stays open.
fn read_one(s: &mut TcpStream) -> Reply {
    let mut wire = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&wire, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&wire[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("a Content-Length");
            if wire.len() >= end + 4 + len {
                return parse_replies(&wire[..end + 4 + len]).remove(0);
            }
        }
        let n = s.read(&mut chunk).expect("read");
        assert!(n > 0, "the connection closed mid-response");
        wire.extend_from_slice(&chunk[..n]);
    }
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut replies = exchange(addr, raw.as_bytes());
    assert_eq!(replies.len(), 1, "{replies:?}");
    replies.remove(0)
}

/// A `multipart/form-data` request: `(name, filename, content)` parts, the file ones with a
/// file name.
fn multipart_post(
    addr: SocketAddr,
    path: &str,
    extra_headers: &str,
    parts: &[(&str, Option<&str>, &[u8])],
) -> Reply {
    let boundary = "----tickhttp-example-test";
    let mut body = Vec::new();
    for (name, filename, content) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match filename {
            Some(f) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra_headers}\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    let mut replies = exchange(addr, &raw);
    assert_eq!(replies.len(), 1, "{replies:?}");
    replies.remove(0)
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

// ----- standalone examples ------------------------------------------------------------------

#[test]
fn hello_answers_and_stops_on_sigterm() {
    let ex = Running::start("hello", |a| args(&[&a.to_string()]));
    let r = get(ex.addr, "/some/path");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "Hello from GET /some/path\n");
    ex.stop();
}

#[test]
fn streaming_sends_tokens_as_server_sent_events() {
    let ex = Running::start("streaming", |a| args(&[&a.to_string()]));
    let r = get(ex.addr, "/generate?prompt=alpha+beta");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(
        r.text(),
        "data: alpha\n\ndata: beta\n\nevent: done\ndata: \n\n"
    );
    ex.stop();
}

#[test]
fn tls_serves_https_with_the_given_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let ex = Running::start("tls", |a| {
        args(&[
            &a.to_string(),
            cert.to_str().unwrap(),
            key.to_str().unwrap(),
        ])
    });

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut sock = connect(ex.addr);
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut wire = Vec::new();
    let _ = tls.read_to_end(&mut wire); // a peer closing without close_notify is fine here
    let replies = parse_replies(&wire);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0].status, 200);
    assert!(replies[0].text().starts_with("Hello over TLS, 127.0.0.1:"));
    ex.stop();
}

#[test]
fn static_site_serves_files_and_reads_uploads() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("index.html"), "<h1>example site</h1>\n").unwrap();
    let ex = Running::start("static_site", |a| {
        args(&[&a.to_string(), root.path().to_str().unwrap()])
    });
    let r = get(ex.addr, "/");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "<h1>example site</h1>\n");
    assert!(r.header("etag").is_some());
    assert_eq!(get(ex.addr, "/missing.txt").status, 404);

    let r = multipart_post(
        ex.addr,
        "/upload",
        "",
        &[("title", None, b"hi"), ("doc", Some("a.bin"), &[7u8; 3000])],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.text(),
        "field title: 2 bytes\nfile doc (a.bin): 3000 bytes\n"
    );
    ex.stop();
}

#[test]
fn websocket_chat_serves_its_page_and_chats() {
    let ex = Running::start("websocket_chat", |a| args(&[&a.to_string()]));
    let page = get(ex.addr, "/");
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.text().contains("new WebSocket"), "{}", page.text());

    let ws = |name: &str| {
        let url = format!("ws://{}/chat?name={name}&room=lobby", ex.addr);
        let (socket, resp) = tungstenite::client(url, connect(ex.addr)).expect("handshake");
        assert_eq!(resp.status(), 101);
        socket
    };
    let next_json = |socket: &mut tungstenite::WebSocket<TcpStream>| loop {
        match socket.read().expect("a message") {
            tungstenite::Message::Text(t) => {
                return serde_json::from_str::<serde_json::Value>(t.as_str()).unwrap()
            }
            _ => continue,
        }
    };
    let mut ann = ws("ann");
    assert_eq!(next_json(&mut ann)["type"], "welcome");
    let mut bob = ws("bob");
    assert_eq!(next_json(&mut bob)["type"], "welcome");
    assert_eq!(next_json(&mut ann)["type"], "joined");
    bob.send(tungstenite::Message::text(
        r#"{"type":"say","text":"hi ann"}"#,
    ))
    .unwrap();
    let msg = next_json(&mut ann);
    assert_eq!(msg["type"], "message", "{msg}");
    assert_eq!(msg["from"], "bob");
    assert_eq!(msg["text"], "hi ann");
    drop((ann, bob));
    ex.stop();
}

#[test]
fn ws_idle_client_holds_and_echoes() {
    // The client needs a WebSocket echo server: one in this process, on its own thread.
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let server = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let config = tickhttp::ServerConfig::default().listen(free_addr());
            let mut server = tickhttp::Server::bind(config).unwrap();
            server
                .attach_websocket("/ws", tickhttp::ws::WebSocketConfig::default())
                .unwrap();
            tx.send(server.local_addr().unwrap()).unwrap();
            while !stop.load(Ordering::SeqCst) {
                server.wait(Some(Duration::from_millis(20))).unwrap();
                while let Some(ev) = server.next_ws_event() {
                    if let tickhttp::ws::WsEvent::Text { id, text } = ev {
                        let _ = server.ws_send_text(id, text);
                    }
                }
            }
        })
    };
    let addr: SocketAddr = rx.recv().unwrap();
    let mut child = Command::new(example("ws_idle_client"))
        .args(args(&[&addr.to_string(), "/ws", "20", "1", "8"]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting ws_idle_client");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ws_idle_client did not finish within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    server.join().unwrap();
    assert!(status.success(), "{status}\n{out}\n{err}");
    assert!(out.contains("opened 20"), "{out}");
}

#[test]
fn upload_shows_progress_page_and_keeps_files() {
    let dir = tempfile::tempdir().unwrap();
    let ex = Running::start("upload", |a| {
        args(&[&a.to_string(), dir.path().to_str().unwrap()])
    });
    let page = get(ex.addr, "/");
    assert_eq!(page.status, 200, "{page:?}");
    let html = page.text();
    assert!(html.contains("xhr.upload.onprogress"), "{html}");
    assert!(html.contains("<progress"), "{html}");
    assert!(html.contains("None yet."), "{html}");

    // Past the spool threshold (1 MiB): the body goes through a temp file and the parser.
    let content: Vec<u8> = (0..1_500_000u32).map(|i| (i % 251) as u8).collect();
    let xhr = "X-Requested-With: XMLHttpRequest\r\n";
    let parts: &[(&str, Option<&str>, &[u8])] = &[
        ("note", None, b"<quarterly>"),
        ("file", Some("../my report.bin"), &content),
    ];
    let r = multipart_post(ex.addr, "/upload", xhr, parts);
    assert_eq!(r.status, 200, "{r:?}");
    let text = r.text();
    assert!(
        text.starts_with("<section"),
        "a fragment for the page's script: {text}"
    );
    assert!(text.contains("Note: &lt;quarterly&gt;"), "{text}");
    assert!(text.contains("href=\"/files/my%20report.bin\""), "{text}");
    assert!(text.contains("1500000"), "{text}");
    assert_eq!(
        std::fs::read(dir.path().join("my report.bin")).unwrap(),
        content
    );

    // The same name again is kept beside the first; a plain form post gets a whole page.
    let r = multipart_post(ex.addr, "/upload", "", parts);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.text().starts_with("<!doctype html>"), "{}", r.text());
    assert!(r.text().contains("2-my%20report.bin"), "{}", r.text());

    let back = get(ex.addr, "/files/my%20report.bin");
    assert_eq!(back.status, 200);
    assert!(back.body == content, "the stored file comes back unchanged");
    assert!(get(ex.addr, "/").text().contains("2-my report.bin"));
    assert_eq!(get(ex.addr, "/files/.incoming").status, 404);
    ex.stop();
}

// ----- worker pool examples -----------------------------------------------------------------

#[test]
fn event_driven_worker_answers_out_of_order_and_drains() {
    // One worker, so the fast request overtakes the slow one inside a single event loop.
    let mut ex = Running::start("event_driven_worker", |a| args(&[&a.to_string(), "1"]));
    let info = get(ex.addr, "/");
    assert_eq!(info.status, 200, "{info:?}");
    assert!(info.text().contains("\"worker_id\":1"), "{}", info.text());

    // The slow request waits on a timer; the fast one, sent after it, is answered first.
    // Ordering, not latency, is checked, with a margin for a loaded machine.
    let started = Instant::now();
    let mut slow = connect(ex.addr);
    slow.write_all(b"GET /slow?ms=2000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let fast = get(ex.addr, "/fast");
    assert_eq!(fast.status, 200, "{fast:?}");
    assert!(fast.text().starts_with("fast: answered in tick"));
    slow.set_nonblocking(true).unwrap();
    let mut probe = [0u8; 1];
    let unanswered =
        matches!(slow.peek(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    assert!(
        unanswered,
        "the slow request was answered before the fast one ({:?} after it was sent)",
        started.elapsed()
    );
    slow.set_nonblocking(false).unwrap();
    let mut wire = Vec::new();
    slow.read_to_end(&mut wire).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(2000));
    let slow_reply = parse_replies(&wire).remove(0);
    assert_eq!(slow_reply.status, 200, "{slow_reply:?}");
    assert!(
        slow_reply.text().starts_with("slow: received in tick"),
        "{}",
        slow_reply.text()
    );
    assert_eq!(get(ex.addr, "/slow?ms=nope").status, 400);

    // A request in flight when the master gets SIGTERM is still answered. A first request on
    // the same connection makes sure the connection is in the worker before the signal.
    let mut pending = connect(ex.addr);
    pending
        .write_all(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let first = read_one(&mut pending);
    assert_eq!(first.status, 200, "{first:?}");
    pending
        .write_all(b"GET /slow?ms=500 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let status = ex.terminate();
    let mut wire = Vec::new();
    pending.read_to_end(&mut wire).unwrap();
    assert_eq!(parse_replies(&wire)[0].status, 200, "{}", ex.log());
    assert!(status.success(), "{status}:\n{}", ex.log());
}

#[test]
fn callback_worker_speaks_http_per_connection() {
    let ex = Running::start("callback_worker", |a| args(&[&a.to_string(), "2"]));
    let r = get(ex.addr, "/");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.text().starts_with("callback worker "), "{}", r.text());
    assert!(r.text().contains("request 1 on this connection"));

    // Keep-alive and pipelining on one connection, then a body.
    let raw = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\
                POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    let replies = exchange(ex.addr, raw);
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert!(replies[0].text().contains("request 1 on this connection"));
    assert_eq!(replies[1].text(), "hello");
    assert_eq!(replies[1].header("connection"), Some("close"));

    // The strict parser's verdicts reach the client.
    let bad = exchange(
        ex.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    );
    assert_eq!(bad[0].status, 400, "{bad:?}");
    ex.stop();
}
