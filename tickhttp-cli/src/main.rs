//! The `tickhttp` command.

mod demo;
mod pool;
mod settings;
mod systemd;

// A faster allocator for the many small, short-lived allocations of request handling.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use tickhttp::{Server, ServerConfig};

use crate::pool::parse_duration;
use crate::settings::{ConfigError, FileArgs};

#[derive(Parser, Debug)]
#[command(
    name = "tickhttp",
    version,
    about = "A poll-driven HTTP/1.1 server with a pre-fork worker pool",
    after_help = "Run `tickhttp serve --help` for every option. Each option is also a key of \
                  the --config file: `--max-body-size 1048576` is `max_body_size = 1048576`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the demo application (and static files) in one process or a worker pool.
    Serve(Box<ServeArgs>),
    /// Validate a configuration file and print the effective configuration as TOML.
    CheckConfig {
        /// The TOML file (the keys of `tickhttp serve --config`).
        file: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Mode {
    /// A worker pool, centralized where descriptor passing works, else shared-socket.
    Auto,
    /// A worker pool; every worker accepts on one shared listening socket.
    Shared,
    /// A worker pool; the master accepts and hands connections to the workers.
    Centralized,
    /// One process, no pool.
    Single,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per line.
    Json,
}

/// A boolean option: `--name` alone is true; `--name false` (or off, no, 0) turns it off;
/// `name = true|false` in the file.
macro_rules! bool_arg {
    () => {
        clap::builder::BoolishValueParser::new()
    };
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Every option is also a key of the --config file: the flag's name without the \
                  dashes, with _ for -, e.g. `listen = \"0.0.0.0:8080\"`, `workers = 4`, \
                  `mode = \"centralized\"`, `queue_timeout = \"500ms\"`, `weights = [3, 1, 1]`. \
                  Flags override the file. Durations take ms, s or m (a bare number is seconds)."
)]
struct ServeArgs {
    /// Read options from this TOML file (flags given on the command line win).
    #[arg(long, value_name = "FILE", help_heading = "Configuration")]
    config: Option<PathBuf>,

    /// Address to listen on.
    #[arg(long, default_value = tickhttp::config::defaults::LISTEN, help_heading = "Server")]
    listen: SocketAddr,
    /// Process architecture.
    #[arg(long, value_enum, default_value_t = Mode::Auto, help_heading = "Server")]
    mode: Mode,
    /// Seconds a graceful shutdown waits for requests in flight.
    #[arg(long, default_value = "10s", value_parser = parse_duration, help_heading = "Server")]
    shutdown_timeout: Duration,
    /// Serve the files under this directory for paths the demo routes do not take.
    #[arg(long, value_name = "DIR", help_heading = "Server")]
    root: Option<PathBuf>,

    /// Log level filter (error, warn, info, debug, trace, or a tracing directive).
    #[arg(long, default_value = "info", help_heading = "Logging")]
    log: String,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, help_heading = "Logging")]
    log_format: LogFormat,
    /// One `tickhttp::access` line per response (method, path, status, bytes, duration,
    /// worker, peer). Off by default so benchmarks measure the server, not the logger.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value = "false",
          default_missing_value = "true", value_parser = bool_arg!(), help_heading = "Logging")]
    access_log: bool,

    /// Serve PREFIX/metrics (Prometheus), PREFIX/status (JSON), PREFIX/health and
    /// PREFIX/ready on the main listener, answered by the server before the application (in
    /// a pool, by any worker for the whole pool). "off" turns them off.
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = "/_tickhttp",
        help_heading = "Observability"
    )]
    admin_prefix: String,

    /// Most open connections per process (503 above).
    #[arg(long, default_value_t = tickhttp::config::defaults::MAX_CONNECTIONS, help_heading = "Limits")]
    max_connections: usize,
    /// Largest request head in bytes (431 above).
    #[arg(long, default_value_t = tickhttp::config::defaults::MAX_HEAD_SIZE, help_heading = "Limits")]
    max_head_size: usize,
    /// Most header fields in a request (431 above).
    #[arg(long, default_value_t = tickhttp::config::defaults::MAX_HEADERS, help_heading = "Limits")]
    max_headers: usize,
    /// Longest request target in bytes (414 above).
    #[arg(long, default_value_t = tickhttp::config::defaults::MAX_URI_LEN, help_heading = "Limits")]
    max_uri_len: usize,
    /// Largest request body in bytes (413 above).
    #[arg(long, default_value_t = tickhttp::config::defaults::MAX_BODY_SIZE, help_heading = "Limits")]
    max_body_size: u64,
    /// Bodies larger than this many bytes are spooled to a temp file.
    #[arg(long, default_value_t = tickhttp::config::defaults::BODY_SPOOL_THRESHOLD, help_heading = "Limits")]
    body_spool_threshold: usize,
    /// Directory for spooled bodies [default: the system temp directory].
    #[arg(long, value_name = "DIR", help_heading = "Limits")]
    spool_dir: Option<PathBuf>,
    /// Pipelined requests in flight per connection before reading pauses.
    #[arg(long, default_value_t = tickhttp::config::defaults::MAX_PIPELINED, help_heading = "Limits")]
    max_pipelined: usize,
    /// Accepts per loop pass.
    #[arg(long, default_value_t = tickhttp::config::defaults::MAX_ACCEPTS_PER_PASS, help_heading = "Limits")]
    max_accepts_per_pass: usize,

    /// Keep connections open between requests.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value = "true",
          default_missing_value = "true", value_parser = bool_arg!(), help_heading = "Connections")]
    keep_alive: bool,
    /// Requests served on one connection before it is closed.
    #[arg(long, default_value_t = tickhttp::config::defaults::MAX_REQUESTS_PER_CONNECTION, help_heading = "Connections")]
    max_requests_per_connection: u32,
    /// Idle time between requests before a keep-alive connection is closed.
    #[arg(long, default_value = "30s", value_parser = parse_duration, help_heading = "Connections")]
    keep_alive_timeout: Duration,
    /// Time allowed for a whole request head (408 after).
    #[arg(long, default_value = "10s", value_parser = parse_duration, help_heading = "Connections")]
    header_timeout: Duration,
    /// Longest silence while reading a body (408 after).
    #[arg(long, default_value = "30s", value_parser = parse_duration, help_heading = "Connections")]
    body_timeout: Duration,
    /// Longest time without write progress while a response is pending.
    #[arg(long, default_value = "30s", value_parser = parse_duration, help_heading = "Connections")]
    write_timeout: Duration,
    /// Set TCP_NODELAY on accepted connections.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value = "true",
          default_missing_value = "true", value_parser = bool_arg!(), help_heading = "Connections")]
    nodelay: bool,
    /// The `Server` header value; empty sends none.
    #[arg(long, default_value = tickhttp::config::defaults::SERVER_NAME, help_heading = "Connections")]
    server_name: String,

    /// PEM certificate chain: serve HTTPS (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key", help_heading = "TLS")]
    tls_cert: Option<PathBuf>,
    /// PEM private key matching --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert", help_heading = "TLS")]
    tls_key: Option<PathBuf>,
    /// Time allowed for a TLS handshake.
    #[arg(long, default_value = "10s", value_parser = parse_duration, help_heading = "TLS")]
    tls_handshake_timeout: Duration,

    /// Requests allowed per client address per --rate-limit-window (off when absent).
    #[arg(long, value_name = "N", help_heading = "Rate limiting")]
    rate_limit: Option<u32>,
    /// The rate-limit window.
    #[arg(long, default_value = "60s", value_parser = parse_duration, help_heading = "Rate limiting")]
    rate_limit_window: Duration,
    /// Proxies whose X-Forwarded-For names the client for rate limiting, e.g. 10.0.0.1,10.0.0.2.
    #[arg(
        long,
        value_name = "IP,...",
        value_delimiter = ',',
        help_heading = "Rate limiting"
    )]
    rate_limit_trusted_proxies: Vec<IpAddr>,

    /// Require a PROXY protocol (v1 or v2) header from these peers (addresses or networks,
    /// e.g. 10.0.0.0/8,192.0.2.7) and take the client address from it. Off when empty.
    #[arg(
        long,
        value_name = "NET,...",
        value_delimiter = ',',
        help_heading = "Proxies"
    )]
    proxy_protocol_trusted: Vec<tickhttp::proxy::TrustedNet>,

    /// /ws: largest message in bytes (1009 above).
    #[arg(long, default_value_t = 16 * 1024 * 1024, help_heading = "WebSocket (/ws)")]
    ws_max_message_size: usize,
    /// /ws: largest frame payload in bytes (1009 above); also the outgoing fragment size.
    #[arg(long, default_value_t = 16 * 1024 * 1024, help_heading = "WebSocket (/ws)")]
    ws_max_frame_size: usize,
    /// /ws: ping a client after this much silence.
    #[arg(long, default_value = "30s", value_parser = parse_duration, help_heading = "WebSocket (/ws)")]
    ws_ping_interval: Duration,
    /// /ws: close (1008) when a ping is unanswered this long.
    #[arg(long, default_value = "10s", value_parser = parse_duration, help_heading = "WebSocket (/ws)")]
    ws_pong_timeout: Duration,
    /// /ws: ping idle clients.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value = "true",
          default_missing_value = "true", value_parser = bool_arg!(), help_heading = "WebSocket (/ws)")]
    ws_auto_ping: bool,
    /// /ws: time allowed for the upgrade request's head.
    #[arg(long, default_value = "5s", value_parser = parse_duration, help_heading = "WebSocket (/ws)")]
    ws_handshake_timeout: Duration,
    /// /ws: after sending a close frame, how long to wait for the client's.
    #[arg(long, default_value = "5s", value_parser = parse_duration, help_heading = "WebSocket (/ws)")]
    ws_close_timeout: Duration,
    /// /ws: origins allowed when --ws-validate-origin is on (* allows any).
    #[arg(
        long,
        value_name = "ORIGIN,...",
        value_delimiter = ',',
        default_value = "*",
        help_heading = "WebSocket (/ws)"
    )]
    ws_allowed_origins: Vec<String>,
    /// /ws: check the Origin header against --ws-allowed-origins (403 otherwise).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value = "false",
          default_missing_value = "true", value_parser = bool_arg!(), help_heading = "WebSocket (/ws)")]
    ws_validate_origin: bool,
    /// /ws: refuse unmasked client frames (1002), as RFC 6455 requires.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value = "true",
          default_missing_value = "true", value_parser = bool_arg!(), help_heading = "WebSocket (/ws)")]
    ws_require_masking: bool,
    /// /ws: split outgoing messages larger than --ws-max-frame-size.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value = "true",
          default_missing_value = "true", value_parser = bool_arg!(), help_heading = "WebSocket (/ws)")]
    ws_auto_fragmentation: bool,
    /// /ws: bytes of outgoing frames batched before they reach the connection.
    #[arg(long, default_value_t = 8192, help_heading = "WebSocket (/ws)")]
    ws_write_buffer_size: usize,
    /// /ws: pending output in bytes above which a slow consumer is dropped.
    #[arg(long, default_value_t = 64 * 1024 * 1024, help_heading = "WebSocket (/ws)")]
    ws_max_write_buffer: usize,
    /// /ws: subprotocols offered, in order of preference.
    #[arg(
        long,
        value_name = "NAME,...",
        value_delimiter = ',',
        help_heading = "WebSocket (/ws)"
    )]
    ws_sub_protocols: Vec<String>,

    #[command(flatten)]
    pool: pool::PoolArgs,
}

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let matches = Cli::command().get_matches_from(&argv);
    let result = match matches.subcommand() {
        Some(("check-config", sub)) => {
            let file = sub.get_one::<PathBuf>("file").cloned().unwrap_or_default();
            check_config(&file)
        }
        _ => run_serve(argv, &matches),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(e)) => {
            eprintln!("tickhttp: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("tickhttp: {e}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    /// A bad option or file: exit status 2.
    Config(ConfigError),
    /// The server failed while starting or running: exit status 1.
    Runtime(tickhttp::Error),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Config(e)
    }
}

impl From<tickhttp::Error> for Failure {
    fn from(e: tickhttp::Error) -> Self {
        Failure::Runtime(e)
    }
}

/// The `serve` options after merging the file: the arguments, their matches, the file.
struct Resolved {
    args: ServeArgs,
    matches: ArgMatches,
    file: Option<FileArgs>,
}

/// Parses `argv` (a `tickhttp serve ...` command line), merging `--config FILE` (or `file`)
/// under the flags.
fn resolve(
    mut argv: Vec<OsString>,
    matches: &ArgMatches,
    file: Option<&Path>,
) -> Result<Resolved, ConfigError> {
    let cli = Cli::command();
    let serve_cmd = cli
        .find_subcommand("serve")
        .ok_or_else(|| ConfigError("no serve command".into()))?;
    let sub = matches
        .subcommand_matches("serve")
        .ok_or_else(|| ConfigError("expected the serve command".into()))?;
    let path = file
        .map(Path::to_path_buf)
        .or_else(|| sub.get_one::<PathBuf>("config").cloned());
    let file = match &path {
        Some(p) => Some(settings::load(p, serve_cmd, sub)?),
        None => None,
    };
    let matches = match &file {
        Some(f) if !f.args.is_empty() => {
            argv.extend(f.args.iter().cloned());
            cli.clone().try_get_matches_from(&argv).map_err(|e| {
                ConfigError(format!(
                    "{}: {}",
                    f.path.display(),
                    settings::clap_reason(&e)
                ))
            })?
        }
        _ => matches.clone(),
    };
    let sub = matches
        .subcommand_matches("serve")
        .ok_or_else(|| ConfigError("expected the serve command".into()))?
        .clone();
    let args =
        ServeArgs::from_arg_matches(&sub).map_err(|e| ConfigError(settings::clap_reason(&e)))?;
    Ok(Resolved {
        args,
        matches: sub,
        file,
    })
}

fn check_config(path: &Path) -> Result<(), Failure> {
    let argv: Vec<OsString> = vec!["tickhttp".into(), "serve".into()];
    let matches = Cli::command()
        .try_get_matches_from(&argv)
        .map_err(|e| ConfigError(settings::clap_reason(&e)))?;
    let resolved = resolve(argv, &matches, Some(path))?;
    validate(&resolved)?;
    let cli = Cli::command();
    let serve_cmd = cli
        .find_subcommand("serve")
        .ok_or_else(|| ConfigError("no serve command".into()))?;
    print!(
        "# {}: valid. The effective configuration (# where each value comes from):\n{}",
        path.display(),
        settings::effective_toml(serve_cmd, &resolved.matches, resolved.file.as_ref())
    );
    Ok(())
}

fn run_serve(argv: Vec<OsString>, matches: &ArgMatches) -> Result<(), Failure> {
    let resolved = resolve(argv, matches, None)?;
    init_logging(&resolved.args.log, resolved.args.log_format);
    let (config, ws) = validate(&resolved)?;
    if let Some(f) = &resolved.file {
        tracing::debug!(file = %f.path.display(), keys = ?f.keys, "configuration file read");
    }
    serve(resolved.args, config, ws)?;
    Ok(())
}

fn init_logging(filter: &str, format: LogFormat) {
    // rustls warns once per handshake about clients that send an IP address as SNI (wrk,
    // some curl builds); that is the client's quirk, not an operator's concern.
    let quiet = |f: &str| {
        if f.contains("rustls") {
            f.to_string()
        } else {
            format!("{f},rustls=error")
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(quiet(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(quiet("info")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Builds and checks the server and WebSocket configurations; an error names the key (and
/// the file when the value came from it).
fn validate(
    resolved: &Resolved,
) -> Result<(ServerConfig, tickhttp::ws::WebSocketConfig), ConfigError> {
    let args = &resolved.args;
    let file = resolved.file.as_ref();
    let describe = |key: &str, reason: &str| ConfigError(FileArgs::describe(file, key, reason));
    if let Some(root) = &args.root {
        if !root.is_dir() {
            return Err(describe(
                "root",
                &format!("{} is not a directory", root.display()),
            ));
        }
    }
    let config = server_config(args).map_err(|e| match e {
        tickhttp::Error::Config { option, reason } => {
            let key = match option {
                "tls" => "tls_cert",
                "rate_limit.requests" => "rate_limit",
                "rate_limit.window" => "rate_limit_window",
                "proxy_protocol" | "proxy_protocol.trusted" => "proxy_protocol_trusted",
                other => other,
            };
            describe(key, &reason)
        }
        other => describe("tls_cert", &other.to_string()),
    })?;
    let ws = ws_config(args);
    ws.validate().map_err(|e| match e {
        tickhttp::Error::Config { option, reason } => describe(&format!("ws_{option}"), &reason),
        other => ConfigError(other.to_string()),
    })?;
    Ok((config, ws))
}

fn server_config(args: &ServeArgs) -> Result<ServerConfig, tickhttp::Error> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tickhttp::tls::TlsConfig::from_pem_files(cert, key)?),
        _ => None,
    };
    let rate_limit = args.rate_limit.map(|n| {
        tickhttp::ratelimit::RateLimitConfig::new(n, args.rate_limit_window)
            .trust_proxies(args.rate_limit_trusted_proxies.clone())
    });
    let config = ServerConfig::default()
        .listen(args.listen)
        .backlog(args.pool.backlog)
        .max_connections(args.max_connections)
        .max_head_size(args.max_head_size)
        .max_headers(args.max_headers)
        .max_uri_len(args.max_uri_len)
        .max_body_size(args.max_body_size)
        .body_spool_threshold(args.body_spool_threshold)
        .spool_dir(args.spool_dir.clone())
        .keep_alive(args.keep_alive)
        .max_requests_per_connection(args.max_requests_per_connection)
        .keep_alive_timeout(args.keep_alive_timeout)
        .header_timeout(args.header_timeout)
        .body_timeout(args.body_timeout)
        .write_timeout(args.write_timeout)
        .max_pipelined(args.max_pipelined)
        .max_accepts_per_pass(args.max_accepts_per_pass)
        .server_name((!args.server_name.is_empty()).then(|| args.server_name.clone()))
        .nodelay(args.nodelay)
        .tls(tls)
        .tls_handshake_timeout(args.tls_handshake_timeout)
        .rate_limit(rate_limit)
        .access_log(args.access_log)
        .admin_prefix(admin_prefix(&args.admin_prefix))
        .proxy_protocol((!args.proxy_protocol_trusted.is_empty()).then(|| {
            tickhttp::proxy::ProxyProtocolConfig::new(args.proxy_protocol_trusted.clone())
        }));
    config.validate()?;
    Ok(config)
}

/// `--admin-prefix`: "off" (or empty) turns the endpoints off.
pub(crate) fn admin_prefix(value: &str) -> Option<String> {
    let v = value.trim();
    (!v.is_empty() && !v.eq_ignore_ascii_case("off")).then(|| v.to_string())
}

fn ws_config(args: &ServeArgs) -> tickhttp::ws::WebSocketConfig {
    let mut ws = tickhttp::ws::WebSocketConfig::default();
    ws.max_message_size = args.ws_max_message_size;
    ws.max_frame_size = args.ws_max_frame_size;
    ws.ping_interval = args.ws_ping_interval;
    ws.pong_timeout = args.ws_pong_timeout;
    ws.auto_ping = args.ws_auto_ping;
    ws.handshake_timeout = args.ws_handshake_timeout;
    ws.close_timeout = args.ws_close_timeout;
    ws.allowed_origins = args.ws_allowed_origins.clone();
    ws.validate_origin = args.ws_validate_origin;
    ws.require_masking = args.ws_require_masking;
    ws.auto_fragmentation = args.ws_auto_fragmentation;
    ws.write_buffer_size = args.ws_write_buffer_size;
    ws.max_write_buffer = args.ws_max_write_buffer;
    ws.sub_protocols = args.ws_sub_protocols.clone();
    ws
}

fn serve(
    args: ServeArgs,
    config: ServerConfig,
    ws: tickhttp::ws::WebSocketConfig,
) -> Result<(), tickhttp::Error> {
    if let Some(root) = &args.root {
        demo::set_root(root.clone());
    }
    demo::set_ws_config(ws);
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    match args.mode {
        Mode::Single => {
            let mut server = Server::new(config)?;
            // Socket activation: systemd bound the port and passed it as fd 3; --listen is
            // not bound then. start() binds only when no listener was added.
            let activated = match systemd::activated_listener()? {
                Some(listener) => {
                    server.add_listener(listener)?;
                    true
                }
                None => false,
            };
            server.start()?;
            tickhttp::signal::shutdown_on_signals(&mut server, args.shutdown_timeout)?;
            tickhttp::signal::reload_tls_on_hup(&mut server)?;
            let watchdog = systemd::start_watchdog(&mut server);
            let addr = server.local_addr().unwrap_or(args.listen);
            let socket = if activated {
                "passed by systemd (socket activation, fd 3; --listen not bound)".to_string()
            } else {
                format!("bound by tickhttp (--listen {})", args.listen)
            };
            let notify = match (std::env::var_os("NOTIFY_SOCKET").is_some(), watchdog) {
                (false, _) => "off (no NOTIFY_SOCKET)".to_string(),
                (true, None) => "READY=1, STOPPING=1".to_string(),
                (true, Some(w)) => format!(
                    "READY=1, STOPPING=1, WATCHDOG=1 every {:?} (WatchdogSec {:?})",
                    w / 2,
                    w
                ),
            };
            let root = args
                .root
                .as_ref()
                .map_or("none (demo routes only)".to_string(), |r| {
                    r.display().to_string()
                });
            tracing::info!(
                "{}",
                start_block(
                    &format!("tickhttp listening on {scheme}://{addr}/"),
                    &[
                        ("listening", format!("{scheme}://{addr}/")),
                        (
                            "architecture",
                            "single process (asked for with --mode single)".into()
                        ),
                        (
                            "workers",
                            "none (this process serves every connection)".into()
                        ),
                        ("static root", root),
                        ("TLS", if server.is_tls() { "on" } else { "off" }.into()),
                        (
                            "metrics",
                            admin_urls(&format!("{scheme}://{addr}"), &args.admin_prefix)
                        ),
                        ("socket", socket),
                        ("sd_notify", notify),
                    ]
                )
            );
            systemd::notify(sd_notify::NotifyState::Ready);
            demo::run_with(&mut server, || {
                tracing::info!("graceful shutdown started");
                systemd::notify(sd_notify::NotifyState::Stopping);
            })?;
            tracing::info!(outcome = ?server.shutdown_outcome(), "stopped");
            Ok(())
        }
        Mode::Auto | Mode::Shared | Mode::Centralized => {
            let architecture = match args.mode {
                Mode::Shared => tickhttp::pool::Architecture::Shared,
                Mode::Centralized => tickhttp::pool::Architecture::Centralized,
                _ => tickhttp::pool::Architecture::Auto,
            };
            let timeout = args.shutdown_timeout;
            let root = args
                .root
                .as_ref()
                .map_or("none (demo routes only)".to_string(), |r| {
                    r.display().to_string()
                });
            pool::serve(architecture, config, timeout, args.pool, root)
        }
    }
}

/// The start block's line for the admin endpoints under `prefix` at `base`.
pub(crate) fn admin_urls(base: &str, prefix: &str) -> String {
    match admin_prefix(prefix) {
        Some(p) => format!(
            "{base}{p}/metrics (Prometheus), {base}{p}/status (JSON), {p}/health, {p}/ready; \
             the demo's {base}/ shows them live"
        ),
        None => format!("{base}/metrics (demo route; --admin-prefix is off)"),
    }
}

/// The block logged at start: one `name: value` line each, names aligned.
pub(crate) fn start_block(headline: &str, lines: &[(&str, String)]) -> String {
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = headline.to_string();
    for (name, value) in lines {
        out.push_str(&format!("\n  {name:<width$}  {value}"));
    }
    out
}
