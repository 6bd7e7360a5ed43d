//! `tickhttp serve --mode auto|shared|centralized`: the demo application in a worker pool.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use clap::ValueEnum;
use tickhttp::pool::{Architecture, BalancerKind, WorkerPool, Workers};
use tickhttp::{ConnectionMeta, Server, ServerConfig};

use crate::demo;

/// How the demo application runs in each worker.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum WorkerMode {
    /// The demo's own loop polls the worker's server (`demo::run`).
    Event,
    /// tickhttp's loop calls the demo's request handler for each request.
    Handler,
    /// A blocking callback per connection: one request, one response, close (as in the
    /// reference); serves `/whoami` (with the client address), `/plaintext` and `/health`.
    Callback,
}

/// The pool's flags of `tickhttp serve`.
#[derive(clap::Args, Debug)]
pub struct PoolArgs {
    /// Worker processes: a number (1 to 1024) or "auto" (one per CPU available).
    #[arg(long, default_value = "auto", value_parser = parse_workers)]
    pub workers: Workers,
    /// Centralized-mode balancer: round-robin, least-connections, weighted or sticky
    /// [default: least-connections].
    #[arg(long, value_parser = parse_balancer)]
    pub balancer: Option<BalancerKind>,
    /// Per-worker weights for the weighted balancer, e.g. 3,1,1.
    #[arg(long, value_delimiter = ',')]
    pub weights: Vec<u32>,
    /// Connections the centralized master holds while every worker is busy; beyond it, 503.
    #[arg(long, default_value_t = tickhttp::pool::defaults::MAX_QUEUE)]
    pub max_queue: usize,
    /// Longest wait in that queue before a 503 (e.g. 500ms, 5s).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub queue_timeout: Duration,
    /// Listen backlog.
    #[arg(long, default_value_t = tickhttp::config::defaults::BACKLOG)]
    pub backlog: i32,
    /// Delay before restarting a dead worker, doubled per further death in the crash window.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub restart_delay: Duration,
    /// Cap of the restart delay.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub restart_delay_max: Duration,
    /// Deaths within the crash window that stop a worker slot from restarting.
    #[arg(long, default_value_t = tickhttp::pool::defaults::CRASH_LIMIT)]
    pub crash_limit: u32,
    /// The crash window.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub crash_window: Duration,
    /// Kill deadline after SIGQUIT (default: none, requests in flight finish however long).
    #[arg(long, value_parser = parse_duration)]
    pub quit_timeout: Option<Duration>,
    /// How long a new worker may take to report ready.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub ready_timeout: Duration,
    /// Kill and restart a worker whose event loop has not turned for this long (e.g. 30s),
    /// after logging the request it was stuck on; off by default.
    #[arg(long, value_parser = parse_duration)]
    pub worker_timeout: Option<Duration>,
    /// Replace a worker after this many requests (the replacement starts first; the old
    /// worker drains); off by default.
    #[arg(long)]
    pub max_requests: Option<u64>,
    /// Up to this many more requests, drawn per worker, so workers do not recycle together.
    #[arg(long, default_value_t = 0)]
    pub max_requests_jitter: u64,
    /// Replace a worker whose resident memory exceeds this (bytes, or with K, M or G, e.g.
    /// 512M); off by default.
    #[arg(long, value_parser = parse_size)]
    pub max_rss: Option<u64>,
    /// Replace a worker older than this (less up to a tenth, drawn per worker; e.g. 30m);
    /// off by default.
    #[arg(long, value_parser = parse_duration)]
    pub max_age: Option<Duration>,
    /// Also serve the admin endpoints from the master on this separate address: /metrics
    /// (Prometheus), /status (JSON, also /), /health and /ready.
    #[arg(long)]
    pub status_listen: Option<SocketAddr>,
    /// How the demo runs in each worker.
    #[arg(long, value_enum, default_value_t = WorkerMode::Event)]
    pub worker_mode: WorkerMode,
    /// Fault injection for supervision tests: the worker with this id exits with code 3 as
    /// soon as it starts.
    #[arg(long, hide = true)]
    pub crash_worker: Option<u32>,
    /// Fault injection for liveness tests (request-handler mode): `GET /block?ms=N` blocks
    /// the worker's loop for N milliseconds.
    #[arg(long, hide = true)]
    pub block_endpoint: bool,
}

/// `4096`, `64K`, `512M`, `2G` (powers of 1024).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let value: u64 = number
        .trim()
        .parse()
        .map_err(|_| format!("expected a size such as 4096, 64K, 512M or 2G, got {s:?}"))?;
    let factor: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}: use K, M or G")),
    };
    value
        .checked_mul(factor)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn parse_workers(s: &str) -> Result<Workers, String> {
    s.parse()
}

fn parse_balancer(s: &str) -> Result<BalancerKind, String> {
    s.parse()
}

/// `250ms`, `1.5s`, `2m`, or a bare number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("expected a duration such as 250ms, 1.5s or 2m, got {s:?}"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}: use ms, s or m")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is not a valid duration"))
}

/// Runs the demo application in a worker pool until a signal stops it.
pub fn serve(
    architecture: Architecture,
    config: ServerConfig,
    shutdown_timeout: Duration,
    args: PoolArgs,
    root: String,
) -> Result<(), tickhttp::Error> {
    let tls = config.tls.is_some();
    let admin_prefix = config.admin_prefix.clone();
    let crash = args.crash_worker;
    let crash_check = move |worker_id: u32| {
        if crash == Some(worker_id) {
            tracing::error!(worker = worker_id, "--crash-worker: exiting at start");
            std::process::exit(3);
        }
    };
    let mut builder = WorkerPool::builder()
        .workers(args.workers)
        .architecture(architecture)
        .server_config(config)
        .backlog(args.backlog)
        .weights(args.weights)
        .max_queue(args.max_queue)
        .queue_timeout(args.queue_timeout)
        .restart_delay(args.restart_delay)
        .restart_delay_max(args.restart_delay_max)
        .crash_limit(args.crash_limit, args.crash_window)
        .shutdown_timeout(shutdown_timeout)
        .quit_timeout(args.quit_timeout)
        .ready_timeout(args.ready_timeout)
        .worker_timeout(args.worker_timeout)
        .max_requests(args.max_requests, args.max_requests_jitter)
        .max_rss(args.max_rss)
        .max_age(args.max_age);
    if let Some(balancer) = args.balancer {
        builder = builder.balancer(balancer);
    }
    if let Some(addr) = args.status_listen {
        builder = builder.status_listen(addr);
    }
    // Socket activation: systemd bound the port and passed it as fd 3; --listen is not
    // bound then.
    let activated = crate::systemd::activated_listener()?;
    let socket = if activated.is_some() {
        "passed by systemd (socket activation, fd 3; --listen not bound)"
    } else {
        "bound by the master"
    };
    if let Some(listener) = activated {
        builder = builder.listener(listener);
    }
    let watchdog = crate::systemd::watchdog_interval();
    builder = builder
        .heartbeat(watchdog.map(|w| (w / 2).max(Duration::from_millis(1))))
        .on_event(crate::systemd::on_pool_event);
    let notify = match (std::env::var_os("NOTIFY_SOCKET").is_some(), watchdog) {
        (false, _) => "off (no NOTIFY_SOCKET)".to_string(),
        (true, None) => "READY, RELOADING, STOPPING".to_string(),
        (true, Some(w)) => format!("READY, RELOADING, STOPPING, WATCHDOG every {:?}", w / 2),
    };
    builder = match args.worker_mode {
        WorkerMode::Event => builder.event_driven(move |worker_id, server: &mut Server| {
            crash_check(worker_id);
            demo::run(server)
        }),
        WorkerMode::Handler => {
            let mut started = false;
            let block = args.block_endpoint;
            builder.handler(move |server: &mut Server, req: tickhttp::Request| {
                if !started {
                    started = true;
                    crash_check(server.worker_id().unwrap_or(0));
                }
                if block && req.path() == "/block" {
                    let ms = req
                        .query_param("ms")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(1000);
                    std::thread::sleep(Duration::from_millis(ms));
                }
                demo::handle(server, req)
            })
        }
        WorkerMode::Callback => {
            let mut started = false;
            builder.callback(move |worker_id, stream, meta| {
                if !started {
                    started = true;
                    crash_check(worker_id);
                }
                answer_one(worker_id, stream, meta);
            })
        }
    };
    let pool = builder.build()?;
    let addr = pool.local_addr();
    let scheme = if tls { "https" } else { "http" };
    let balancer = pool
        .balancer()
        .map_or(String::new(), |b| format!(", balancer {b}"));
    let main = match &admin_prefix {
        Some(p) => crate::admin_urls(&format!("{scheme}://{addr}"), p),
        None => "off on the main listener (--admin-prefix off)".to_string(),
    };
    let metrics_url = match pool.status_addr() {
        Some(a) => {
            format!("{main}; admin listener http://{a}/metrics, http://{a}/status, /health, /ready")
        }
        None => main,
    };
    let status = pool
        .status_addr()
        .map_or(String::new(), |a| format!(", status on http://{a}/"));
    let headline = format!("tickhttp listening on {scheme}://{addr}/{status}");
    tracing::info!(
        "{}",
        crate::start_block(
            &headline,
            &[
                ("listening", format!("{scheme}://{addr}/")),
                (
                    "architecture",
                    format!(
                        "{} architecture ({}){balancer}",
                        pool.architecture(),
                        pool.architecture_reason()
                    )
                ),
                (
                    "workers",
                    format!(
                        "{} ({} workers)",
                        pool.worker_count(),
                        match args.worker_mode {
                            WorkerMode::Event => "event-driven",
                            WorkerMode::Handler => "request-handler",
                            WorkerMode::Callback => "callback",
                        }
                    )
                ),
                ("static root", root),
                ("TLS", if tls { "on" } else { "off" }.into()),
                ("metrics", metrics_url),
                ("socket", socket.to_string()),
                ("sd_notify", notify),
            ]
        )
    );
    let metrics = pool.run()?;
    tracing::info!(
        dispatched = metrics.dispatched,
        rejected = metrics.rejected,
        "pool stopped"
    );
    Ok(())
}

/// The callback demo: reads one request head, answers it, closes.
fn answer_one(worker_id: u32, mut stream: TcpStream, meta: ConnectionMeta) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 16 * 1024 {
            return;
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let path = parts
        .next()
        .unwrap_or_default()
        .split(|&b| b == b'?')
        .next()
        .unwrap_or_default();
    let peer = meta
        .peer_addr
        .map_or_else(|| "unknown".to_string(), |p| p.to_string());
    let (status, body) = match (method, path) {
        (b"GET", b"/whoami") => (
            "200 OK",
            format!(
                r#"{{"worker_id":{worker_id},"pid":{},"peer":"{peer}","mode":"callback"}}"#,
                std::process::id()
            ),
        ),
        (b"GET", b"/plaintext") => ("200 OK", "Hello, World!".to_string()),
        (b"GET", b"/health") => ("200 OK", "ok\n".to_string()),
        _ => ("404 Not Found", "not found\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::{parse_duration, parse_size};
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("1T").is_err());
        assert!(parse_size("99999999999G").is_err());
    }
}
