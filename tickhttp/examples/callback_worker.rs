//! The worker pool in callback mode: a function called once per connection with the connected
//! socket (in blocking mode) and its metadata, as the reference's `WorkerCallbackInterface`.
//!
//! The callback owns the connection. Here it speaks HTTP/1.1 itself with tickhttp's sans-IO
//! pieces (`proto::parse_head` for strict request parsing and limits, `proto::response` to
//! write the head), serves several requests on a keep-alive connection, and returns, which
//! closes the socket. A worker handles one connection at a time: concurrency comes from the
//! number of workers. For concurrency inside a worker, see `event_driven_worker`.
//!
//! ```text
//! cargo run --example callback_worker -- 127.0.0.1:8080 4      # ADDR [WORKERS]
//! curl http://127.0.0.1:8080/
//! curl -d 'hello' http://127.0.0.1:8080/echo
//! ```
//!
//! The address may also come from the `ADDR` environment variable.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use http::{Method, StatusCode, Version};
use tickhttp::pool::{WorkerPool, Workers};
use tickhttp::proto::date::DateCache;
use tickhttp::proto::response::{encode_head, HeadParams, ResponseFraming};
use tickhttp::proto::{parse_head, Framing, Limits};
use tickhttp::ConnectionMeta;

/// A client silent for this long loses its connection: the worker serves nobody else meanwhile.
const IDLE: Duration = Duration::from_secs(5);
/// Requests served on one connection before it is closed, so one client cannot keep a worker.
const MAX_REQUESTS: u32 = 100;
/// Largest `/echo` body.
const MAX_BODY: u64 = 64 * 1024;

/// Handles one connection: the pool calls this in a worker process, one connection at a time.
fn handle(worker_id: u32, mut stream: TcpStream, meta: ConnectionMeta) {
    let peer = meta.peer_addr.or_else(|| stream.peer_addr().ok());
    let _ = stream.set_read_timeout(Some(IDLE));
    let _ = stream.set_write_timeout(Some(IDLE));
    let limits = Limits {
        max_body_size: MAX_BODY,
        ..Limits::default()
    };
    let mut date = DateCache::default();
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    for served in 1..=MAX_REQUESTS {
        // Read until the head is complete (or invalid, or over a limit).
        let head = loop {
            match parse_head(&buf, &limits) {
                Ok(Some(head)) => break head,
                Ok(None) => {}
                Err(e) => {
                    // 400, 413, 414, 431, 501 or 505, as the server would answer.
                    let _ = reply(&mut stream, &mut date, e.status(), e.to_string(), true);
                    return;
                }
            }
            if read_more(&mut stream, &mut buf).is_err() {
                return; // closed, timed out or reset
            }
        };
        buf.drain(..head.head_len);
        let body_len = match head.framing {
            Framing::None => 0,
            Framing::Length(n) => n as usize,
            Framing::Chunked => {
                let msg = "send a Content-Length body".to_string();
                let _ = reply(
                    &mut stream,
                    &mut date,
                    StatusCode::LENGTH_REQUIRED,
                    msg,
                    true,
                );
                return;
            }
        };
        if head.expect_continue && buf.len() < body_len {
            // The client waits for this before sending its body (curl does above 1 KiB).
            if stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
                return;
            }
        }
        while buf.len() < body_len {
            if read_more(&mut stream, &mut buf).is_err() {
                return;
            }
        }
        let body: Vec<u8> = buf.drain(..body_len).collect();

        let (status, text) = match (&head.method, head.uri.path()) {
            (&Method::GET, "/") => (
                StatusCode::OK,
                format!(
                    "callback worker {worker_id} (pid {}): request {served} on this connection \
                     from {}\n",
                    std::process::id(),
                    peer.map_or_else(|| "unknown".into(), |p| p.to_string())
                ),
            ),
            (&Method::POST, "/echo") => (StatusCode::OK, String::from_utf8_lossy(&body).into()),
            _ => (StatusCode::NOT_FOUND, "not found\n".into()),
        };
        // HTTP/1.0 clients get one response per connection: simpler, and rare today.
        let close = !head.keep_alive || head.version == Version::HTTP_10 || served == MAX_REQUESTS;
        if reply(&mut stream, &mut date, status, text, close).is_err() || close {
            return;
        }
    }
}

fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk)? {
        0 => Err(io::ErrorKind::UnexpectedEof.into()),
        n => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
    }
}

/// Writes one response with tickhttp's encoder (it adds `Date`, `Server`, `Content-Length`
/// and `Connection`).
fn reply(
    stream: &mut TcpStream,
    date: &mut DateCache,
    status: StatusCode,
    text: String,
    close: bool,
) -> io::Result<()> {
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    date.refresh();
    let mut out = Vec::with_capacity(256 + text.len());
    encode_head(
        &mut out,
        status,
        &headers,
        &HeadParams {
            date: date.value(),
            server: Some(b"tickhttp-callback"),
            close,
            keep_alive_10: false,
            framing: ResponseFraming::Length(text.len() as u64),
        },
    );
    out.extend_from_slice(text.as_bytes());
    stream.write_all(&out)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args
        .next()
        .or_else(|| std::env::var("ADDR").ok())
        .unwrap_or_else(|| "127.0.0.1:8080".into())
        .parse()?;
    let workers = match args.next() {
        Some(n) => Workers::Count(n.parse()?),
        None => Workers::Auto,
    };
    let pool = WorkerPool::builder()
        .workers(workers)
        .server_config(tickhttp::ServerConfig::default().listen(listen))
        .callback(handle)
        .build()?;
    println!(
        "listening on http://{}/ ({}, {} callback workers)",
        pool.local_addr(),
        pool.architecture(),
        pool.worker_count()
    );
    pool.run()?; // until SIGTERM, SIGINT or SIGQUIT
    Ok(())
}
