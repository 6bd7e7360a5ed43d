//! # Tuning
//!
//! The defaults ([`defaults`](super::defaults)) are chosen to be safe on a small machine facing
//! the internet. This page lists what to change for throughput or latency, in the order it
//! usually matters, and how to measure the result. Figures quoted here come from the
//! repository's `BENCHMARKS.md`, which says how each was taken.
//!
//! ## 1. Build for speed
//!
//! The workspace's release profile uses `lto = "fat"`, `codegen-units = 1` and
//! `panic = "abort"`; build your application the same way. The `tickhttp` binary links
//! mimalloc (its default `mimalloc` feature); an allocator tuned for many small, short-lived
//! allocations helps any server, since each request builds an `http::Request` with its
//! `HeaderMap`.
//!
//! ## 2. Processes: one per core
//!
//! One [`Server`](crate::Server) uses one core. Use the pool with
//! [`Workers::Auto`](crate::pool::Workers::Auto), which counts the CPUs this process may use
//! (affinity mask and cgroup quota included, so a container limited to 2 CPUs gets 2
//! workers). More workers than cores only adds context switches, unless the application
//! blocks (then fix the blocking: see [`event_driven`](super::event_driven)).
//!
//! Pick the architecture by traffic ([`pool`](super::pool)): shared-socket has no master on
//! the connection path and suits many similar keep-alive connections; centralized with
//! least-connections keeps a slow request from piling more work onto the same worker, which
//! matters when request costs differ.
//!
//! ## 3. Connections
//!
//! - **Keep-alive** is the largest single factor. In the single-process benchmark, one
//!   request per connection ran at 25,865 requests/s against 130,683 with keep-alive (both
//!   `GET /plaintext`, 64 connections). Raise
//!   [`max_requests_per_connection`](crate::ServerConfig::max_requests_per_connection) if
//!   clients are few and trusted (proxies); lower it to rebalance long-lived clients across
//!   workers.
//! - **Pipelining** is served in batches: responses answered in one tick leave in one
//!   `write`. With 16-deep pipelining the same benchmark reached 744,784 requests/s.
//!   [`max_pipelined`](crate::ServerConfig::max_pipelined) bounds the requests a connection
//!   may have in flight.
//! - **`TCP_NODELAY`** is on ([`nodelay`](crate::ServerConfig::nodelay)): responses are
//!   written whole, so Nagle's algorithm only adds delay.
//! - **Backlog**: [`backlog`](crate::ServerConfig::backlog) is 1024, and Linux caps it at
//!   `net.core.somaxconn`. Raise both for bursts of new connections.
//! - **File descriptors**: [`max_connections`](crate::ServerConfig::max_connections) is per
//!   process; the process also needs `ulimit -n` above it (plus files being sent). Out of
//!   descriptors, accepting pauses briefly and resumes rather than spinning.
//!
//! ## 4. Bodies and files
//!
//! - [`body_spool_threshold`](crate::ServerConfig::body_spool_threshold) (1 MiB): bodies above
//!   it go to a temp file. Raise it if uploads are medium-sized and memory is plentiful; the
//!   multipart parser streams from the spool either way (a 1 GiB upload did not move the
//!   worker's peak RSS). Point [`spool_dir`](crate::ServerConfig::spool_dir) at a fast disk or
//!   tmpfs.
//! - Static files: small files come from an in-memory cache, larger ones go out with
//!   `sendfile(2)` and `TCP_CORK`. Measured against nginx 1.22.1 on the same machine, 1 KiB
//!   files were served at 1.33x nginx's rate and 1 MiB files at 0.86x (see
//!   `BENCHMARKS.md` for what the gap was and how corking changed it). Raise
//!   [`StaticConfig::cache_budget`](crate::fs::StaticConfig::cache_budget) and
//!   [`max_cached_file_size`](crate::fs::StaticConfig::max_cached_file_size) for sites with
//!   many small assets; ship `.br`/`.gz` siblings for text assets.
//!
//! ## 5. The application's loop
//!
//! - Answer in the tick the request arrives when you can: responses are flushed in one batch
//!   when the loop turns.
//! - Do not block. A blocking call in one request delays every connection of the worker.
//! - Drain `get_request` fully before `wait` again; each `wait` is an `epoll_wait` call.
//! - Prefer [`Body::Bytes`](crate::Body::Bytes) built from shared `bytes::Bytes` for
//!   repeated payloads: no copy per response.
//!
//! ## 6. Observability costs
//!
//! [`access_log`](crate::ServerConfig::access_log) is off by default: with it on, every
//! response formats a `tracing` event. Turn it on when you need it; measure with it off.
//!
//! ## 7. WebSocket
//!
//! An idle WebSocket connection costs no CPU until its ping is due, and memory in the
//! order of kilobytes: 10,000 idle connections on one process measured 23,066 bytes each,
//! most of it a 16 KiB input buffer that is now given back while the connection is idle
//! (measured at 6,496 bytes per connection with that change). Raise
//! [`ping_interval`](crate::ws::WebSocketConfig::ping_interval) to save wakeups on very many
//! idle clients; keep it below the idle timeouts of proxies in front.
//!
//! ## Measuring
//!
//! ```text
//! bench/instructions.sh            # instructions per request under callgrind: stable figures
//! bench/compare.sh                 # wrk against hyper, alternating runs
//! SUITE=pool bench/compare.sh      # worker pools against hyper, actix-web and nginx
//! bench/static.sh                  # static files against nginx; upload memory
//! ```
//!
//! On a shared or virtual machine, wall-clock requests per second swing with other load;
//! instruction counts do not. The single-process profile measured 4,814 user-space
//! instructions per pipelined `GET /plaintext` against hyper's 3,961; most of the
//! difference is building the standard `http::Request` handed to the application.
//!
//! ## A throughput-minded configuration
//!
//! ```
//! use std::time::Duration;
//! use tickhttp::ServerConfig;
//!
//! let config = ServerConfig::default()
//!     .listen("0.0.0.0:8080".parse().unwrap())
//!     .backlog(4096)                        // with net.core.somaxconn >= 4096
//!     .max_connections(50_000)              // with ulimit -n above it
//!     .max_requests_per_connection(10_000)  // trusted proxy in front
//!     .keep_alive_timeout(Duration::from_secs(75)) // longer than the proxy's idle timeout
//!     .body_spool_threshold(4 * 1024 * 1024)
//!     .access_log(false);
//! config.validate()?;
//! # Ok::<(), tickhttp::Error>(())
//! ```
