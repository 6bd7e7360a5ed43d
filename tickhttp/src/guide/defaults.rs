//! # The defaults and their reasons
//!
//! Every default lives in one place in the code, with its reason next to it:
//! [`config::defaults`](crate::config::defaults) for the server,
//! [`pool::defaults`](crate::pool::defaults) for the worker pool,
//! [`fs::defaults`](crate::fs::defaults) for static files and
//! [`proto::multipart::defaults`](crate::proto::multipart::defaults) for uploads. This page
//! gathers them. Where the reference system had the same option, its default is kept unless
//! it was unsafe, and the table says so.
//!
//! ## Server ([`ServerConfig`](crate::ServerConfig))
//!
//! | option | default | why |
//! |---|---|---|
//! | `listen` | `127.0.0.1:8080` | loopback, so a first run never exposes a demo to the network (the reference bound `0.0.0.0`) |
//! | `backlog` | 1024 | absorbs bursts; Linux caps it at `net.core.somaxconn` (4096 on current kernels). The reference used 511 |
//! | `max_connections` | 10 000 per process | bounded by the fd limit; epoll handles far more, and an idle connection costs about 2 KiB. Above it: 503 (the reference's 1000 closed silently) |
//! | `max_head_size` | 16 KiB | fits every real browser head, cookies included; nginx allows 4 x 8 KiB. The reference had no limit |
//! | `max_headers` | 100 | what nginx and hyper allow |
//! | `max_uri_len` | 8 KiB | nginx's large header buffer |
//! | `max_body_size` | 10 MiB | the reference's `maxRequestSize`, now enforced from `Content-Length` before reading |
//! | `body_spool_threshold` | 1 MiB | larger bodies go to a temp file, so a few uploads cannot exhaust memory |
//! | `keep_alive` | on | HTTP/1.1's own default (the reference required `Connection: keep-alive`) |
//! | `max_requests_per_connection` | 1000 | nginx's `keepalive_requests`: bounds per-connection state and rebalances load (the reference: 100) |
//! | `keep_alive_timeout` | 30 s | the reference's value, now enforced |
//! | `header_timeout` | 10 s | sheds slowloris clients, yet a phone on a bad link gets its head through |
//! | `body_timeout` | 30 s of silence | nginx's `client_body_timeout` semantics: a slow upload that progresses is never cut |
//! | `write_timeout` | 30 s without progress | slow readers get every byte; stalled ones are dropped |
//! | `max_pipelined` | 64 | requests in flight per connection before reading pauses (backpressure) |
//! | `max_accepts_per_pass` | 256 | a connection storm cannot starve established connections (the reference: 10) |
//! | `server_name` | `tickhttp` | the `Server` header; `None` sends none |
//! | `nodelay` | on | responses are written whole; Nagle would only delay them |
//! | `tls_handshake_timeout` | 10 s | a silent client holds a slot no longer |
//! | `rate_limit` | off | the reference's default; when on, [`RateLimitConfig::new`](crate::ratelimit::RateLimitConfig::new) takes the reference's shape (`requests` per `window`, e.g. 100 per 60 s) |
//! | `access_log` | off | benchmarks measure the server, not the logger |
//! | `proxy_protocol` | off | a PROXY header is believed only from networks you list |
//! | lingering close after an error | 2 s | the client sees the error response instead of a reset; nginx's `lingering_time` is 30 s, errors need less |
//!
//! ## Worker pool ([`PoolBuilder`](crate::pool::PoolBuilder))
//!
//! | option | default | why |
//! |---|---|---|
//! | `workers` | one per CPU available | affinity and cgroup quota respected; 4 when unknown (the reference's fallback); at most 1024 (the reference's limit) |
//! | `architecture` | auto | centralized where descriptor passing works (checked by trying it), shared-socket otherwise |
//! | `balancer` | least-connections | fed live, exact load; safe when request costs differ |
//! | `max_queue` | 1000 | the reference's `maxQueueSize` (it hard-coded the same number, ignoring the option) |
//! | `queue_timeout` | 5 s | a connection waiting longer gets a 503: a fast failure beats a client timeout |
//! | `restart_delay` | 1 s | the reference's `restartDelay`: long enough not to spin, short enough to matter |
//! | `restart_delay_max` | 30 s | the backoff cap: a crashing slot retries at least twice a minute until the breaker trips |
//! | `crash_limit` | 5 deaths in 60 s | systemd's `StartLimitBurst` is 5; the window is longer than systemd's 10 s because the backoff makes 5 deaths take at least 15 s |
//! | `shutdown_timeout` | 10 s | drain time before `SIGKILL`; puma and gunicorn use 30 s, a demo should stop sooner |
//! | `quit_timeout` | none | `SIGQUIT` is the patient stop |
//! | `ready_timeout` | 30 s | a worker only builds a server before it is ready; puma allows 60 s to boot |
//! | `worker_timeout` | off | only the application knows how long it may legitimately block |
//! | `defer_accept` | 10 s | the server's header timeout: a connection reaches a worker with its request |
//! | stats report | every second | also the worker's liveness signal |
//! | kill grace | 1 s past the deadline | time to close and exit before `SIGKILL` |
//!
//! ## Static files ([`StaticConfig`](crate::fs::StaticConfig))
//!
//! | option | default | why |
//! |---|---|---|
//! | cache budget | 32 MiB per process | thousands of typical assets, small next to the page cache that serves the rest |
//! | largest cached file | 64 KiB | larger files are cheaper to `sendfile(2)` from the page cache than to copy from ours |
//! | `Cache-Control` | none | like nginx; `ETag` and `Last-Modified` still let clients revalidate |
//! | dotfiles | hidden | they are usually secrets (`.env`, `.git/`, `.htpasswd`) |
//! | index file | `index.html` | what web servers and site generators agree on |
//! | precompressed siblings | on | two `stat`s per cache miss for less bandwidth |
//! | ranges per request | 32 | enough for PDF and media clients |
//! | multi-range bytes | 1 MiB | several ranges are assembled in memory; beyond it the whole file is sent |
//!
//! ## Uploads ([`MultipartLimits`](crate::form::MultipartLimits))
//!
//! | limit | default | why |
//! |---|---|---|
//! | parts | 128 | generous for real forms; bounds per-part bookkeeping |
//! | part head | 8 KiB | browsers send two or three short lines |
//! | one field | 1 MiB | fields are held in memory: a large text area fits, a misplaced file does not |
//! | all fields | 4 MiB | what is held in memory for one form |
//! | one file, whole body | unbounded here | files go to disk; the server's `max_body_size` is the bound |
//!
//! ## WebSocket ([`WebSocketConfig`](crate::ws::WebSocketConfig))
//!
//! The reference's defaults, all of them now enforced: messages up to 1 MiB and frames up to
//! 64 KiB (1009 above), a ping after 30 s of silence and a close (1008) when it is
//! unanswered for 10 s, 5 s for the handshake and for the closing handshake, masking
//! required, outgoing messages fragmented above the frame size, an 8 KiB write batch, any
//! origin (origin checks off), no subprotocols, no compression (permessage-deflate is not
//! supported). New: a slow consumer is dropped above 16 MiB of pending output, so one reader
//! cannot grow the server's memory.
//!
//! ## The values, checked
//!
//! This example is run with the tests, so the tables above cannot silently drift from the
//! code:
//!
//! ```
//! use std::time::Duration;
//! use tickhttp::{config, pool, ServerConfig};
//!
//! let c = ServerConfig::default();
//! assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
//! assert_eq!((c.backlog, c.max_connections), (1024, 10_000));
//! assert_eq!((c.max_head_size, c.max_headers, c.max_uri_len), (16 << 10, 100, 8 << 10));
//! assert_eq!((c.max_body_size, c.body_spool_threshold), (10 << 20, 1 << 20));
//! assert_eq!(c.max_requests_per_connection, 1000);
//! assert_eq!(c.keep_alive_timeout, Duration::from_secs(30));
//! assert_eq!(c.header_timeout, Duration::from_secs(10));
//! assert_eq!((c.body_timeout, c.write_timeout), (Duration::from_secs(30), Duration::from_secs(30)));
//! assert_eq!((c.max_pipelined, c.max_accepts_per_pass), (64, 256));
//! assert!(c.keep_alive && c.nodelay && !c.access_log && c.rate_limit.is_none());
//! assert_eq!(config::defaults::LINGER, Duration::from_secs(2));
//!
//! assert_eq!(pool::defaults::MAX_QUEUE, 1000);
//! assert_eq!(pool::defaults::QUEUE_TIMEOUT, Duration::from_secs(5));
//! assert_eq!(pool::defaults::RESTART_DELAY, Duration::from_secs(1));
//! assert_eq!(pool::defaults::RESTART_DELAY_MAX, Duration::from_secs(30));
//! assert_eq!((pool::defaults::CRASH_LIMIT, pool::defaults::CRASH_WINDOW), (5, Duration::from_secs(60)));
//! assert_eq!(pool::defaults::SHUTDOWN_TIMEOUT, Duration::from_secs(10));
//! assert_eq!(pool::defaults::READY_TIMEOUT, Duration::from_secs(30));
//! assert_eq!(pool::defaults::DEFER_ACCEPT, Duration::from_secs(10));
//!
//! assert_eq!(tickhttp::fs::defaults::CACHE_BUDGET, 32 << 20);
//! assert_eq!(tickhttp::fs::defaults::MAX_CACHED_FILE_SIZE, 64 << 10);
//!
//! let ws = tickhttp::ws::WebSocketConfig::default();
//! assert_eq!((ws.max_message_size, ws.max_frame_size), (1 << 20, 64 << 10));
//! assert_eq!((ws.ping_interval, ws.pong_timeout), (Duration::from_secs(30), Duration::from_secs(10)));
//! assert_eq!(ws.max_write_buffer, 16 << 20);
//! ```
