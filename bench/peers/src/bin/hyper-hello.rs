//! hyper 1.x peer server for side-by-side comparisons with tickhttp.
//!
//! Usage: hyper-hello ADDR [--threads N] [--rt reuseport|multi]
//!
//! Routes: GET /plaintext, GET /json, anything else 404.
//!
//! `--threads 1` runs one tokio current-thread runtime on the main thread.
//! With N > 1 the default (`--rt reuseport`) runs N current-thread runtimes,
//! each on its own thread with its own SO_REUSEPORT listener, as the
//! TechEmpower hyper entry does: the kernel spreads connections over the
//! listeners and no task ever crosses threads. `--rt multi` runs one
//! multi-thread runtime with N workers behind a single listener instead.
//! On the 2-core bench machine (wrk unpinned, 64 connections, 3 runs each)
//! the reuseport layout was the faster of the two: ~1.10M vs ~1.03M req/s
//! pipelined and ~158k vs ~142k req/s keep-alive with wrk -t2; with wrk -t1
//! keep-alive the two were within noise (~128k vs ~140k). Hence the default.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::process::exit;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use socket2::{Domain, Protocol, Socket, Type};

static PLAINTEXT: &[u8] = b"Hello, World!";
// A constant body: the benchmark measures the HTTP layer, not a JSON encoder.
static JSON: &[u8] = br#"{"message":"Hello, World!"}"#;
static NOT_FOUND: &[u8] = b"Not Found";

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, ctype, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/plaintext") => (StatusCode::OK, "text/plain", PLAINTEXT),
        (&Method::GET, "/json") => (StatusCode::OK, "application/json", JSON),
        _ => (StatusCode::NOT_FOUND, "text/plain", NOT_FOUND),
    };
    let mut res = Response::new(Full::new(Bytes::from_static(body)));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    Ok(res)
}

/// A bound, listening, non-blocking socket. SO_REUSEPORT is set only when
/// several listeners share the address; the backlog matches nginx's config.
fn bind(addr: SocketAddr, reuseport: bool) -> io::Result<std::net::TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    if reuseport {
        sock.set_reuse_port(true)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    Ok(sock.into())
}

async fn serve(listener: std::net::TcpListener) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("register listener");
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // EMFILE and friends: back off instead of spinning.
                eprintln!("hyper-hello: accept: {err}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                // Answers to a pipelined batch go out in one write.
                .pipeline_flush(true)
                .serve_connection(TokioIo::new(stream), service_fn(handle))
                .await;
        });
    }
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build tokio runtime")
}

fn usage() -> ! {
    eprintln!("usage: hyper-hello ADDR [--threads N] [--rt reuseport|multi]");
    exit(2)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = match args.next().map(|a| a.parse()) {
        Some(Ok(addr)) => addr,
        _ => usage(),
    };
    let mut threads = 1usize;
    let mut multi = false;
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--threads", Some(n)) => threads = n.parse().unwrap_or_else(|_| usage()),
            ("--rt", Some(rt)) if rt == "reuseport" => multi = false,
            ("--rt", Some(rt)) if rt == "multi" => multi = true,
            _ => usage(),
        }
    }
    if threads == 0 {
        usage();
    }

    if threads == 1 {
        let listener = bind(addr, false).unwrap_or_else(|e| die(addr, e));
        current_thread_runtime().block_on(serve(listener));
    } else if multi {
        let listener = bind(addr, false).unwrap_or_else(|e| die(addr, e));
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .expect("build tokio runtime")
            .block_on(serve(listener));
    } else {
        // Bind every listener before serving so that a port clash fails fast.
        let listeners: Vec<_> = (0..threads)
            .map(|_| bind(addr, true).unwrap_or_else(|e| die(addr, e)))
            .collect();
        let handles: Vec<_> = listeners
            .into_iter()
            .map(|l| std::thread::spawn(move || current_thread_runtime().block_on(serve(l))))
            .collect();
        for h in handles {
            let _ = h.join();
        }
    }
}

fn die(addr: SocketAddr, err: io::Error) -> ! {
    eprintln!("hyper-hello: cannot listen on {addr}: {err}");
    exit(1)
}
