//! Server configuration. Every default lives here, with its reason.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;
use crate::proto::head::{Limits, MAX_HEADERS_CAP};

/// The defaults, one place, one reason each.
pub mod defaults {
    use std::time::Duration;

    /// Loopback, so a first run never exposes a demo to the network.
    pub const LISTEN: &str = "127.0.0.1:8080";
    /// Linux caps this at `net.core.somaxconn` (4096 on current kernels); 1024 absorbs bursts.
    pub const BACKLOG: i32 = 1024;
    /// Per process. Bounded by the fd limit; epoll handles far more, memory is ~2 KiB idle each.
    pub const MAX_CONNECTIONS: usize = 10_000;
    /// Fits every real browser head (cookies included) with room; nginx allows 4 x 8 KiB.
    pub const MAX_HEAD_SIZE: usize = 16 * 1024;
    /// nginx and hyper both allow about 100 fields.
    pub const MAX_HEADERS: usize = 100;
    /// Matches nginx's default large header buffer (8 KiB).
    pub const MAX_URI_LEN: usize = 8 * 1024;
    /// The reference system's `maxRequestSize`: 10 MiB.
    pub const MAX_BODY_SIZE: u64 = 10 * 1024 * 1024;
    /// Bodies above 1 MiB go to a temp file so a few uploads cannot exhaust memory.
    pub const BODY_SPOOL_THRESHOLD: usize = 1024 * 1024;
    /// nginx's `keepalive_requests`: bounds per-connection state growth and rebalances load.
    pub const MAX_REQUESTS_PER_CONNECTION: u32 = 1000;
    /// The reference system's keep-alive timeout.
    pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(30);
    /// Short enough to shed slowloris clients, long enough for a phone on a bad link.
    pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    /// Longest silence between two reads of a body (nginx `client_body_timeout` semantics).
    pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
    /// Longest time without write progress while output is pending (slow readers).
    pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
    /// Pipelined requests in flight per connection before reading pauses (backpressure).
    pub const MAX_PIPELINED: usize = 64;
    /// Accepts per loop pass, so a connection storm cannot starve established connections.
    pub const MAX_ACCEPTS_PER_PASS: usize = 256;
    /// How long a closing connection keeps draining unread input so the client sees our
    /// error response instead of a reset (nginx `lingering_time` is 30 s; errors need less).
    pub const LINGER: Duration = Duration::from_secs(2);
    /// The `Server` header value.
    pub const SERVER_NAME: &str = "tickhttp";
    /// Time allowed for a TLS handshake; a silent client holds a slot no longer.
    pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
}

/// Configuration of one [`Server`](crate::Server).
///
/// ```
/// use std::time::Duration;
/// let config = tickhttp::ServerConfig::default()
///     .listen("127.0.0.1:0".parse().unwrap())
///     .max_body_size(1 << 20)
///     .keep_alive_timeout(Duration::from_secs(5));
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Address to bind in standalone mode.
    pub listen: SocketAddr,
    /// Listen backlog.
    pub backlog: i32,
    /// Set `SO_REUSEPORT` on the listener (several processes may bind the same port).
    pub reuse_port: bool,
    /// Most open connections; more are answered 503 and closed.
    pub max_connections: usize,
    /// Largest request head in bytes (431 above).
    pub max_head_size: usize,
    /// Most header fields (431 above).
    pub max_headers: usize,
    /// Longest request target (414 above).
    pub max_uri_len: usize,
    /// Largest request body (413 above, decided from Content-Length before reading).
    pub max_body_size: u64,
    /// Bodies larger than this are spooled to a temp file.
    pub body_spool_threshold: usize,
    /// Directory for spooled bodies (the system temp dir when `None`).
    pub spool_dir: Option<PathBuf>,
    /// Whether connections are kept open between requests.
    pub keep_alive: bool,
    /// Requests served on one connection before it is closed.
    pub max_requests_per_connection: u32,
    /// Idle time between requests before a keep-alive connection is closed quietly.
    pub keep_alive_timeout: Duration,
    /// Time allowed for a whole request head, from its first byte (408 after).
    pub header_timeout: Duration,
    /// Longest silence while reading a body (408 after).
    pub body_timeout: Duration,
    /// Longest time without write progress while a response is pending.
    pub write_timeout: Duration,
    /// Pipelined requests in flight per connection before reading pauses.
    pub max_pipelined: usize,
    /// Accepts per loop pass.
    pub max_accepts_per_pass: usize,
    /// `Server` header value; `None` sends none.
    pub server_name: Option<String>,
    /// Set `TCP_NODELAY` on accepted connections.
    pub nodelay: bool,
    /// Serve HTTPS with these certificates (`None`: plain HTTP).
    pub tls: Option<crate::tls::TlsConfig>,
    /// Time allowed for a TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Per-client rate limit (`None`: off).
    pub rate_limit: Option<crate::ratelimit::RateLimitConfig>,
    /// Emit one `tickhttp::access` tracing event per response (method, path, status, bytes,
    /// duration_ms, worker, peer). Off: nothing is recorded or allocated for it.
    pub access_log: bool,
    /// Require a PROXY protocol header from these trusted peers and take the client address
    /// from it (`None`: off). Plain TCP only.
    pub proxy_protocol: Option<crate::proxy::ProxyProtocolConfig>,
    /// Answer `PREFIX/metrics`, `PREFIX/status`, `PREFIX/health` and `PREFIX/ready` in the
    /// server itself, before the application sees them (see [`crate::admin`]); `None`: off.
    /// The prefix starts with `/` and does not end with one, e.g. `/_tickhttp`.
    pub admin_prefix: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        use defaults::*;
        ServerConfig {
            listen: LISTEN
                .parse()
                .unwrap_or_else(|_| ([127, 0, 0, 1], 8080).into()),
            backlog: BACKLOG,
            reuse_port: false,
            max_connections: MAX_CONNECTIONS,
            max_head_size: MAX_HEAD_SIZE,
            max_headers: MAX_HEADERS,
            max_uri_len: MAX_URI_LEN,
            max_body_size: MAX_BODY_SIZE,
            body_spool_threshold: BODY_SPOOL_THRESHOLD,
            spool_dir: None,
            keep_alive: true,
            max_requests_per_connection: MAX_REQUESTS_PER_CONNECTION,
            keep_alive_timeout: KEEP_ALIVE_TIMEOUT,
            header_timeout: HEADER_TIMEOUT,
            body_timeout: BODY_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
            max_pipelined: MAX_PIPELINED,
            max_accepts_per_pass: MAX_ACCEPTS_PER_PASS,
            server_name: Some(SERVER_NAME.to_string()),
            nodelay: true,
            tls: None,
            tls_handshake_timeout: TLS_HANDSHAKE_TIMEOUT,
            rate_limit: None,
            access_log: false,
            proxy_protocol: None,
            admin_prefix: None,
        }
    }
}

macro_rules! setters {
    ($($(#[$m:meta])* $name:ident: $ty:ty),* $(,)?) => {
        $( $(#[$m])* #[must_use] pub fn $name(mut self, value: $ty) -> Self { self.$name = value; self } )*
    };
}

impl ServerConfig {
    setters! {
        /// Sets [`ServerConfig::listen`].
        listen: SocketAddr,
        /// Sets [`ServerConfig::backlog`].
        backlog: i32,
        /// Sets [`ServerConfig::reuse_port`].
        reuse_port: bool,
        /// Sets [`ServerConfig::max_connections`].
        max_connections: usize,
        /// Sets [`ServerConfig::max_head_size`].
        max_head_size: usize,
        /// Sets [`ServerConfig::max_headers`].
        max_headers: usize,
        /// Sets [`ServerConfig::max_uri_len`].
        max_uri_len: usize,
        /// Sets [`ServerConfig::max_body_size`].
        max_body_size: u64,
        /// Sets [`ServerConfig::body_spool_threshold`].
        body_spool_threshold: usize,
        /// Sets [`ServerConfig::spool_dir`].
        spool_dir: Option<PathBuf>,
        /// Sets [`ServerConfig::keep_alive`].
        keep_alive: bool,
        /// Sets [`ServerConfig::max_requests_per_connection`].
        max_requests_per_connection: u32,
        /// Sets [`ServerConfig::keep_alive_timeout`].
        keep_alive_timeout: Duration,
        /// Sets [`ServerConfig::header_timeout`].
        header_timeout: Duration,
        /// Sets [`ServerConfig::body_timeout`].
        body_timeout: Duration,
        /// Sets [`ServerConfig::write_timeout`].
        write_timeout: Duration,
        /// Sets [`ServerConfig::max_pipelined`].
        max_pipelined: usize,
        /// Sets [`ServerConfig::max_accepts_per_pass`].
        max_accepts_per_pass: usize,
        /// Sets [`ServerConfig::server_name`].
        server_name: Option<String>,
        /// Sets [`ServerConfig::nodelay`].
        nodelay: bool,
        /// Sets [`ServerConfig::tls`].
        tls: Option<crate::tls::TlsConfig>,
        /// Sets [`ServerConfig::tls_handshake_timeout`].
        tls_handshake_timeout: Duration,
        /// Sets [`ServerConfig::rate_limit`].
        rate_limit: Option<crate::ratelimit::RateLimitConfig>,
        /// Sets [`ServerConfig::access_log`].
        access_log: bool,
        /// Sets [`ServerConfig::proxy_protocol`].
        proxy_protocol: Option<crate::proxy::ProxyProtocolConfig>,
        /// Sets [`ServerConfig::admin_prefix`].
        admin_prefix: Option<String>,
    }

    /// Checks every value; the error names the option and the allowed range.
    pub fn validate(&self) -> Result<(), Error> {
        fn at_least<T: PartialOrd + std::fmt::Display>(
            option: &'static str,
            value: T,
            min: T,
        ) -> Result<(), Error> {
            if value < min {
                return Err(Error::config(
                    option,
                    format!("must be at least {min}, got {value}"),
                ));
            }
            Ok(())
        }
        at_least("backlog", self.backlog, 1)?;
        at_least("max_connections", self.max_connections, 1)?;
        at_least("max_head_size", self.max_head_size, 256)?;
        at_least("max_headers", self.max_headers, 1)?;
        if self.max_headers > MAX_HEADERS_CAP {
            return Err(Error::config(
                "max_headers",
                format!(
                    "must be at most {MAX_HEADERS_CAP}, got {}",
                    self.max_headers
                ),
            ));
        }
        at_least("max_uri_len", self.max_uri_len, 16)?;
        at_least(
            "max_requests_per_connection",
            self.max_requests_per_connection,
            1,
        )?;
        at_least("max_pipelined", self.max_pipelined, 1)?;
        at_least("max_accepts_per_pass", self.max_accepts_per_pass, 1)?;
        for (option, value) in [
            ("keep_alive_timeout", self.keep_alive_timeout),
            ("header_timeout", self.header_timeout),
            ("body_timeout", self.body_timeout),
            ("write_timeout", self.write_timeout),
            ("tls_handshake_timeout", self.tls_handshake_timeout),
        ] {
            if value.is_zero() {
                return Err(Error::config(option, "must be longer than zero"));
            }
        }
        if let Some(limit) = &self.rate_limit {
            limit.validate()?;
        }
        if let Some(proxy) = &self.proxy_protocol {
            proxy.validate()?;
            if self.tls.is_some() {
                return Err(Error::config(
                    "proxy_protocol",
                    "is not supported together with TLS (terminate TLS at the proxy)",
                ));
            }
        }
        if let Some(prefix) = &self.admin_prefix {
            crate::admin::check_prefix(prefix).map_err(|why| Error::config("admin_prefix", why))?;
        }
        if let Some(name) = &self.server_name {
            if http::HeaderValue::from_str(name).is_err() {
                return Err(Error::config("server_name", "must be a valid header value"));
            }
        }
        Ok(())
    }

    /// The parser limits derived from this configuration.
    pub fn limits(&self) -> Limits {
        Limits {
            max_head_size: self.max_head_size,
            max_headers: self.max_headers,
            max_uri_len: self.max_uri_len,
            max_body_size: self.max_body_size,
        }
    }
}
