//! # Security and limits
//!
//! The repository's `SECURITY.md` holds the threat model, the full table of limits and the
//! framing rules; this page is its summary for people writing code against the API, and the
//! knobs that go with it.
//!
//! ## What the server defends
//!
//! - **The process**, against any byte sequence: no input may panic it, grow its memory
//!   without bound or make it spin. Every buffer has a limit, every wait a deadline, and
//!   every parser (request head, chunked bodies, multipart, Range, PROXY header) is a sans-IO
//!   state machine with a fuzz target in `fuzz/` and property tests over random splits.
//! - **Other clients**, against one slow or hostile client: all I/O is non-blocking; heads,
//!   bodies, idle connections, writes and TLS handshakes have timeouts.
//! - **The application behind a proxy**, against request smuggling: a message is framed one
//!   unambiguous way or rejected (with its status code) and the connection closed. Content-
//!   Length must be plain digits and single; Transfer-Encoding must end in `chunked`, once;
//!   both together are refused; obs-fold, whitespace before a colon, bare CR and control
//!   bytes are refused; HTTP/1.1 needs exactly one Host. Requests pipelined after a rejected
//!   one are never served. The cases are the tests `tests/smuggling.rs` and
//!   `tests/malformed.rs`.
//! - **The response stream**, against header injection: header values are
//!   [`http::HeaderValue`], which cannot hold CR or LF.
//!
//! Out of scope: the application's own logic, volumetric denial of service (use the rate
//! limiter, the connection cap and the network), and TLS policy beyond rustls' defaults.
//!
//! ## Limits
//!
//! | limit | default | over it |
//! |---|---|---|
//! | [`max_head_size`](crate::ServerConfig::max_head_size) | [16 KiB](crate::config::defaults::MAX_HEAD_SIZE) | 431, close |
//! | [`max_headers`](crate::ServerConfig::max_headers) | [100](crate::config::defaults::MAX_HEADERS) | 431, close |
//! | [`max_uri_len`](crate::ServerConfig::max_uri_len) | [8 KiB](crate::config::defaults::MAX_URI_LEN) | 414, close |
//! | [`max_body_size`](crate::ServerConfig::max_body_size) | [10 MiB](crate::config::defaults::MAX_BODY_SIZE) | 413 from `Content-Length` before the body is read (or as a chunked body passes it), close |
//! | [`max_pipelined`](crate::ServerConfig::max_pipelined) | [64](crate::config::defaults::MAX_PIPELINED) | reading pauses until the application answers |
//! | [`max_connections`](crate::ServerConfig::max_connections) | [10 000](crate::config::defaults::MAX_CONNECTIONS) per process | 503, close |
//! | [`header_timeout`](crate::ServerConfig::header_timeout) | [10 s](crate::config::defaults::HEADER_TIMEOUT) for the whole head | 408, close (slowloris) |
//! | [`body_timeout`](crate::ServerConfig::body_timeout) | [30 s](crate::config::defaults::BODY_TIMEOUT) of silence in a body | 408, close |
//! | [`keep_alive_timeout`](crate::ServerConfig::keep_alive_timeout) | [30 s](crate::config::defaults::KEEP_ALIVE_TIMEOUT) idle | quiet close |
//! | [`write_timeout`](crate::ServerConfig::write_timeout) | [30 s](crate::config::defaults::WRITE_TIMEOUT) without write progress | close |
//! | [`tls_handshake_timeout`](crate::ServerConfig::tls_handshake_timeout) | [10 s](crate::config::defaults::TLS_HANDSHAKE_TIMEOUT) | close |
//! | multipart ([`MultipartLimits`](crate::form::MultipartLimits)) | 128 parts, 1 MiB per field, 4 MiB of fields | 413 |
//! | WebSocket frame / message ([`WebSocketConfig`](crate::ws::WebSocketConfig)) | 64 KiB / 1 MiB | close 1009 |
//! | WebSocket slow consumer (`max_write_buffer`) | 16 MiB pending | connection dropped |
//! | rate limit ([`RateLimitConfig`](crate::ratelimit::RateLimitConfig)) | off | 429 with `Retry-After` and `RateLimit-*` |
//!
//! Every rejection closes the connection after the error response, with a short lingering
//! read ([`LINGER`](crate::config::defaults::LINGER)) so the client sees the response rather
//! than a reset.
//!
//! ## A server facing the internet
//!
//! ```
//! use std::time::Duration;
//! use tickhttp::ratelimit::RateLimitConfig;
//! use tickhttp::ServerConfig;
//!
//! let config = ServerConfig::default()
//!     .listen("0.0.0.0:8080".parse().unwrap())
//!     // What the application really accepts, not the 10 MiB default.
//!     .max_body_size(256 * 1024)
//!     .max_headers(50)
//!     // Mobile clients on bad links still fit; idle sockets go sooner.
//!     .header_timeout(Duration::from_secs(5))
//!     .keep_alive_timeout(Duration::from_secs(15))
//!     // 20 requests per second per client address, bursts of 20.
//!     .rate_limit(Some(RateLimitConfig::new(20, Duration::from_secs(1))))
//!     // Keep the version out of the Server header (the default sends "tickhttp").
//!     .server_name(None);
//! config.validate()?;
//! # Ok::<(), tickhttp::Error>(())
//! ```
//!
//! Checklist:
//!
//! - **Bind loopback until you mean it.** The default [`listen`](crate::config::defaults::LISTEN)
//!   is `127.0.0.1:8080`.
//! - **Behind a proxy, say which one.** The client address the rate limiter, the logs and
//!   [`Request::peer_addr`](crate::Request::peer_addr) see is the TCP peer unless you trust a
//!   proxy: the PROXY protocol ([`ServerConfig::proxy_protocol`](crate::ServerConfig::proxy_protocol),
//!   required from the listed networks only) or a forwarded header for the rate limiter
//!   ([`RateLimitConfig::trust_proxies`](crate::ratelimit::RateLimitConfig::trust_proxies)).
//!   Never trust `X-Forwarded-For` from everyone.
//! - **TLS.** [`TlsConfig::from_pem_files`](crate::tls::TlsConfig::from_pem_files) checks the
//!   files and that the key matches; SIGHUP reloads them
//!   ([`signal::reload_tls_on_hup`](crate::signal::reload_tls_on_hup)). rustls negotiates TLS
//!   1.2 and 1.3 only; the handshake runs in the event loop, under its own timeout, so a
//!   silent client blocks nothing.
//! - **Uploads.** [`Form::from_request`](crate::Form::from_request) streams file parts to
//!   private temp files (`$TMPDIR/tickhttp-PID/`, mode 0700), deleted when dropped unless
//!   persisted. Use [`UploadedFile::filename`](crate::form::UploadedFile::filename) (sanitized,
//!   never a path) and never `client_filename` to name files; bound
//!   [`MultipartLimits`](crate::form::MultipartLimits) to what the form needs.
//! - **Static files.** [`StaticFiles`](crate::fs::StaticFiles) resolves paths inside its root
//!   (percent-decoding first, refusing `..`, encoded slashes, backslashes and NUL, checking
//!   the resolved path, symlinks included, is inside the root) and does not serve dotfiles
//!   unless asked. [`fs::download`](crate::fs::download) takes any path: it is the
//!   application's job to choose it.
//! - **WebSocket.** Turn on [`validate_origin`](crate::ws::WebSocketConfig::validate_origin)
//!   with an allow-list for endpoints that browsers reach with cookies (cross-site WebSocket
//!   hijacking); size limits, masking and UTF-8 checks are on by default.
//! - **Worker pool.** Workers are forked from the master: secrets loaded before
//!   [`run`](crate::pool::WorkerPool::run) are in every worker. The status endpoint
//!   ([`status_listen`](crate::pool::PoolBuilder::status_listen)) has no authentication:
//!   bind it to loopback or a private network.
//!
//! ## Unsafe code
//!
//! The crate denies `unsafe` except in two small modules that need it for system calls
//! (`fork`, descriptor passing, shared memory for the pool's load board), each block with a
//! `SAFETY` comment.
