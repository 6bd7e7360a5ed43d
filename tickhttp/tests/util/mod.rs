//! Shared test helpers: a server on port 0 in its own thread, and raw socket clients.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http::{Response, StatusCode};
use tickhttp::{Body, Metrics, Request, Server, ServerConfig};

/// A running test server; stopped (gracefully) when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Metrics>>,
}

impl TestServer {
    /// Stops the server and returns its final metrics.
    pub fn finish(mut self) -> Metrics {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

pub fn config() -> ServerConfig {
    ServerConfig::default().listen("127.0.0.1:0".parse().unwrap())
}

/// Starts a server running `app` for every request, in a thread of its own.
pub fn start<F>(config: ServerConfig, mut app: F) -> TestServer
where
    F: FnMut(&mut Server, Request) + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let stop2 = Arc::clone(&stop);
    let handle = std::thread::spawn(move || {
        let mut server = Server::bind(config).expect("bind");
        tx.send(server.local_addr().unwrap()).unwrap();
        while !stop2.load(Ordering::SeqCst) {
            server.wait(Some(Duration::from_millis(20))).expect("wait");
            while let Some(req) = server.get_request() {
                app(&mut server, req);
            }
        }
        server.metrics()
    });
    let addr = rx.recv().unwrap();
    TestServer {
        addr,
        stop,
        handle: Some(handle),
    }
}

/// The standard test app: `/echo` echoes the body, `/len` answers the body length, `/delay?ms=N`
/// answers later from a task, anything else answers its path.
pub fn standard_app(server: &mut Server, req: Request) {
    let id = req.id();
    match req.path() {
        "/echo" => {
            let body = req.body().to_vec().unwrap();
            server.respond(id, Response::new(body.into())).unwrap();
        }
        "/len" => {
            let spooled = req.body().path().is_some();
            let body = format!("{} spooled={spooled}", req.body().len());
            server.respond(id, Response::new(body.into())).unwrap();
        }
        "/delay" => {
            let ms: u64 = req.query_param("ms").unwrap().parse().unwrap();
            let responder = server.responder();
            let sleep = server.sleep(Duration::from_millis(ms));
            server.spawn(async move {
                sleep.await;
                responder.respond(id, Response::new(format!("slept {ms}").into()));
            });
        }
        "/status" => {
            let code: u16 = req.query_param("code").unwrap().parse().unwrap();
            let mut resp = Response::new(Body::from("has a body"));
            *resp.status_mut() = StatusCode::from_u16(code).unwrap();
            server.respond(id, resp).unwrap();
        }
        path => {
            let body = path.to_string();
            server.respond(id, Response::new(body.into())).unwrap();
        }
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// A parsed response read from a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one response from `stream`, using `buf` for bytes already read past earlier
/// responses. `head_request` means no body follows.
pub fn read_response(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    head_request: bool,
) -> Option<RawResponse> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => {
                let status = resp.code.unwrap();
                let hs: Vec<(String, String)> = resp
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                buf.drain(..n);
                let get = |name: &str| {
                    hs.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.clone())
                };
                let no_body =
                    head_request || status == 204 || status == 304 || (100..200).contains(&status);
                let body = if no_body {
                    Vec::new()
                } else if let Some(len) = get("content-length") {
                    let len: usize = len.parse().unwrap();
                    while buf.len() < len {
                        if !fill(stream, buf) {
                            panic!("eof inside body");
                        }
                    }
                    buf.drain(..len).collect()
                } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
                    read_chunked(stream, buf)
                } else {
                    while fill(stream, buf) {}
                    std::mem::take(buf)
                };
                return Some(RawResponse {
                    status,
                    headers: hs,
                    body,
                });
            }
            Ok(httparse::Status::Partial) => {
                if !fill(stream, buf) {
                    return None;
                }
            }
            Err(e) => panic!("bad response: {e}: {:?}", String::from_utf8_lossy(buf)),
        }
    }
}

fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            assert!(fill(stream, buf), "eof in chunk size");
        };
        let size =
            usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).unwrap(), 16).unwrap();
        buf.drain(..line_end + 2);
        while buf.len() < size + 2 {
            assert!(fill(stream, buf), "eof in chunk");
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
        if size == 0 {
            return body;
        }
    }
}

/// Reads more bytes; false on EOF or reset.
pub fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut tmp = [0u8; 65536];
    match stream.read(&mut tmp) {
        Ok(0) => false,
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            true
        }
        Err(e)
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut =>
        {
            panic!("timed out waiting for the server")
        }
        Err(_) => false,
    }
}

/// Sends raw bytes and reads one response.
pub fn exchange(addr: SocketAddr, raw: &[u8]) -> RawResponse {
    let mut s = connect(addr);
    s.write_all(raw).unwrap();
    let mut buf = Vec::new();
    read_response(&mut s, &mut buf, false).expect("no response")
}

/// Whether the server closed the connection (EOF or reset) within a few seconds.
pub fn is_closed(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut b = [0u8; 1];
    matches!(stream.read(&mut b), Ok(0) | Err(_))
}

pub fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")
}

pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}
