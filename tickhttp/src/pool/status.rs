//! The master's admin listener: a deliberately tiny HTTP/1.x responder on its own port.
//!
//! It reads one request head, answers `/metrics`, `/status` (also `/`), `/health` or
//! `/ready` from the master's own view of the pool, and closes. It runs inside the
//! master's single-threaded loop, so every socket is non-blocking and every connection has a
//! deadline; a slow or silent client costs one slab entry until then.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use slab::Slab;

use crate::admin::{Endpoint, Reply};

/// Connections served at once; more wait in the backlog.
const MAX_CONNS: usize = 64;
/// Longest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// Time a client gets to send its request and read the answer.
const CONN_TIMEOUT: Duration = Duration::from_secs(5);

struct Conn {
    stream: TcpStream,
    head: Vec<u8>,
    out: Vec<u8>,
    written: usize,
    deadline: Instant,
}

pub(crate) struct StatusServer {
    listener: TcpListener,
    conns: Slab<Conn>,
    base: usize,
}

impl StatusServer {
    pub(crate) fn new(
        listener: std::net::TcpListener,
        registry: &Registry,
        listener_token: Token,
        base: usize,
    ) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        registry.register(&mut listener, listener_token, Interest::READABLE)?;
        Ok(StatusServer {
            listener,
            conns: Slab::new(),
            base,
        })
    }

    /// Whether `token` belongs to this server's connections.
    pub(crate) fn owns(&self, token: Token) -> bool {
        token.0 >= self.base && token.0 < self.base + (1 << 20)
    }

    pub(crate) fn accept(&mut self, registry: &Registry) {
        while self.conns.len() < MAX_CONNS {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let entry = self.conns.vacant_entry();
                    let token = Token(self.base + entry.key());
                    if registry
                        .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                        .is_ok()
                    {
                        entry.insert(Conn {
                            stream,
                            head: Vec::new(),
                            out: Vec::new(),
                            written: 0,
                            deadline: Instant::now() + CONN_TIMEOUT,
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(error = %e, "status endpoint: accept failed");
                    return;
                }
            }
        }
    }

    /// Handles readiness of one connection; `reply` is called only when an answer is due.
    pub(crate) fn on_ready(
        &mut self,
        registry: &Registry,
        token: Token,
        reply: impl FnOnce(Endpoint) -> Reply,
    ) {
        let key = token.0 - self.base;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let done = drive(conn, reply).unwrap_or(true);
        if done {
            let mut conn = self.conns.remove(key);
            let _ = registry.deregister(&mut conn.stream);
        }
    }

    /// Closes connections past their deadline; returns the next deadline.
    pub(crate) fn expire(&mut self, registry: &Registry, now: Instant) -> Option<Instant> {
        let expired: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(k, _)| k)
            .collect();
        for key in expired {
            let mut conn = self.conns.remove(key);
            let _ = registry.deregister(&mut conn.stream);
        }
        self.conns.iter().map(|(_, c)| c.deadline).min()
    }
}

/// Reads the head, then writes the answer; returns whether the connection is finished.
fn drive(conn: &mut Conn, reply: impl FnOnce(Endpoint) -> Reply) -> io::Result<bool> {
    if conn.out.is_empty() {
        let mut buf = [0u8; 2048];
        loop {
            match conn.stream.read(&mut buf) {
                Ok(0) => return Ok(true),
                Ok(n) => {
                    conn.head.extend_from_slice(&buf[..n]);
                    if conn.head.len() > MAX_HEAD {
                        return Ok(true);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if !conn.head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(false);
        }
        conn.out = answer(&conn.head, reply);
    }
    while conn.written < conn.out.len() {
        match conn.stream.write(&conn.out[conn.written..]) {
            Ok(n) => conn.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let _ = conn.stream.shutdown(Shutdown::Write);
    Ok(true)
}

fn answer(head: &[u8], reply: impl FnOnce(Endpoint) -> Reply) -> Vec<u8> {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let endpoint = match path {
        b"/" | b"/status.json" => Some(Endpoint::Status),
        _ => std::str::from_utf8(path)
            .ok()
            .and_then(|p| crate::admin::route("", p)),
    };
    let r = match (method, endpoint) {
        (b"GET" | b"HEAD", Some(endpoint)) => reply(endpoint),
        (b"GET" | b"HEAD", None) => Reply::text(
            http::StatusCode::NOT_FOUND,
            "try /metrics (Prometheus), /status (JSON), /health or /ready\n",
        ),
        _ => Reply::text(http::StatusCode::METHOD_NOT_ALLOWED, "GET only\n"),
    };
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        r.status.as_u16(),
        r.status.canonical_reason().unwrap_or(""),
        r.content_type,
        r.body.len()
    )
    .into_bytes();
    if method != b"HEAD" {
        out.extend_from_slice(r.body.as_bytes());
    }
    out
}
