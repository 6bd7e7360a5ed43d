//! # tickhttp
//!
//! A non-blocking HTTP/1.1 server for long-running applications that own their event loop,
//! with a pre-fork worker pool in front of them.
//!
//! The application *polls* the [`Server`] from its own loop: [`Server::wait`] blocks in epoll
//! until something is ready, [`Server::get_request`] hands out complete requests, and
//! [`Server::respond`] answers any of them, in any order, in any later tick.
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
//! ```no_run
//! use tickhttp::{Server, ServerConfig};
//!
//! fn main() -> Result<(), tickhttp::Error> {
//!     let config = ServerConfig::default().listen("127.0.0.1:8080".parse().unwrap());
//!     let mut server = Server::bind(config)?;
//!     loop {
//!         server.wait(None)?;
//!         while let Some(req) = server.get_request() {
//!             let body = format!("Hello from {}\n", req.path());
//!             server.respond(req.id(), http::Response::new(body.into()))?;
//!         }
//!     }
//! }
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod body;
pub mod config;
pub mod error;
pub mod form;
pub mod fs;
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
pub use server::{EventSource, Metrics, Server, ServerMode, ShutdownOutcome, SourceId};
pub use task::{yield_now, Responder, Sleep, TaskId, Timer};

/// The `http` crate, re-exported for its `Response`, `StatusCode` and header types.
pub use http;
