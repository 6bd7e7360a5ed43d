//! # tickhttp
//!
//! A non-blocking HTTP/1.1 server for long-running applications that own their event loop,
//! with a pre-fork worker pool in front of them.
//!
//! The application *polls* the [`Server`] from its own loop: [`Server::wait`] blocks in epoll
//! until something is ready, [`Server::get_request`] hands out complete requests, and
//! [`Server::respond`] answers any of them, in any order, in any later tick. tickhttp does the
//! sockets, HTTP/1.1 framing, keep-alive, pipelining, limits, timeouts, TLS and WebSocket;
//! background tasks (Rust futures) and timers run on the same loop and wake it.
//!
//! ```text
//!   clients ──TCP──▶ Server (mio/epoll, one thread)
//!                      │ accept · read · parse (httparse + strict framing) · timeouts
//!                      ▼
//!               ready queue ──get_request()──▶ application loop
//!                                                 │ respond(id, response)   (any order)
//!                      ┌──────────────────────────┘
//!                      ▼
//!      per-connection slots (request order) ──▶ one write per batch ──▶ clients
//!   background tasks (Futures) · timers · responders ──▶ wake wait()
//! ```
//!
//! ## Getting started
//!
//! ```
//! use tickhttp::{Server, ServerConfig};
//! # use std::io::{Read, Write};
//!
//! fn main() -> Result<(), tickhttp::Error> {
//!     let config = ServerConfig::default().listen("127.0.0.1:0".parse().unwrap());
//!     let mut server = Server::bind(config)?;
//! #   let addr = server.local_addr().unwrap();
//! #   let client = std::thread::spawn(move || {
//! #       let mut s = std::net::TcpStream::connect(addr).unwrap();
//! #       s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
//! #       let mut out = String::new();
//! #       s.read_to_string(&mut out).unwrap();
//! #       out
//! #   });
//!     while server.is_running() {
//!         server.wait(None)?; // no busy loop: sleeps until a request, task or timer is ready
//!         while let Some(req) = server.get_request() {
//!             let body = format!("Hello from {}\n", req.path());
//!             server.respond(req.id(), http::Response::new(body.into()))?;
//! #           server.shutdown(std::time::Duration::from_secs(5));
//!         }
//!     }
//! #   assert!(client.join().unwrap().ends_with("\r\n\r\nHello from /hello\n"));
//!     Ok(())
//! }
//! ```
//!
//! To serve on every core, run the same loop in a [`pool::WorkerPool`]: a single-threaded
//! master forks one worker per CPU and supervises them.
//!
//! ## Where to go next
//!
//! - [`Server`]: the loop's contract (ordering of pipelined responses, unanswered requests at
//!   shutdown, fork behaviour); [`ServerConfig`] for every option and
//!   [`config::defaults`] for the defaults and their reasons.
//! - [`pool`]: the worker pool. [`guide::pool`] explains architectures, balancers and signals;
//!   [`guide::event_driven`] how to write an event-driven worker;
//!   [`guide::migrating_from_callbacks`] how to move a callback worker over.
//! - [`ws`] (WebSocket in the poll style), [`fs`] (static files and downloads), [`form`]
//!   (query strings, cookies, JSON, streaming multipart uploads), [`tls`], [`ratelimit`],
//!   [`proxy`] (PROXY protocol), [`signal`] (graceful stop and certificate reload).
//! - [`proto`]: the sans-IO parsers and encoders underneath, usable on their own.
//! - Guides: [`guide::security`] (limits and what they defend), [`guide::tuning`],
//!   [`guide::defaults`], and [`guide::php_mapping`] for users of the PHP reference system.
//! - Runnable examples in `tickhttp/examples/`: `hello`, `streaming`, `websocket_chat`,
//!   `static_site`, `upload`, `tls`, `event_driven_worker`, `callback_worker`
//!   (`cargo run -p tickhttp --example NAME`).
//!
//! ## Features and platform
//!
//! tickhttp has no optional Cargo features: HTTP/1.1, TLS (rustls with the ring provider),
//! WebSocket, static files and the worker pool are always built. It targets Linux (epoll,
//! `SO_REUSEPORT`, `SCM_RIGHTS`, `sendfile`, `signalfd`); `unsafe` code is confined to the
//! pool's system-call modules.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod body;
pub mod config;
pub mod error;
pub mod form;
pub mod fs;
pub mod guide;
pub mod pool;
pub mod proto;
pub mod proxy;
pub mod ratelimit;
pub mod request;
pub mod server;
pub mod signal;
pub mod sys;
pub mod task;
pub mod tls;
pub mod ws;

pub use body::{Body, BodySender, RequestBody, StreamClosed};
pub use config::ServerConfig;
pub use error::{Error, RequestError};
pub use form::{Form, FormError};
pub use fs::{StaticConfig, StaticFiles};
pub use request::{ConnectionMeta, Request, RequestId};
pub use server::{
    EventSource, LoopActivity, Metrics, Server, ServerMode, ShutdownOutcome, SourceId,
};
pub use task::{yield_now, Responder, Sleep, TaskId, Timer};

/// The `http` crate, re-exported for its `Response`, `StatusCode` and header types.
pub use http;
