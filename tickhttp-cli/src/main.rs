//! The `tickhttp` command.

mod demo;
mod pool;

// A faster allocator for the many small, short-lived allocations of request handling.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tickhttp::{Server, ServerConfig};

#[derive(Parser, Debug)]
#[command(
    name = "tickhttp",
    version,
    about = "A poll-driven HTTP/1.1 server with a pre-fork worker pool"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the demo application (and static files) in one process or a worker pool.
    Serve(ServeArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Mode {
    /// A worker pool, centralized where descriptor passing works, else shared-socket.
    Auto,
    /// A worker pool; each worker accepts on its own SO_REUSEPORT listener.
    Shared,
    /// A worker pool; the master accepts and hands connections to the workers.
    Centralized,
    /// One process, no pool.
    Single,
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = tickhttp::config::defaults::LISTEN)]
    listen: SocketAddr,
    /// Process architecture.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    mode: Mode,
    /// Log level filter (error, warn, info, debug, trace, or a tracing directive).
    #[arg(long, default_value = "info")]
    log: String,
    /// Seconds a graceful shutdown waits for requests in flight.
    #[arg(long, default_value_t = 10)]
    shutdown_timeout: u64,
    /// Most open connections per process.
    #[arg(long, default_value_t = tickhttp::config::defaults::MAX_CONNECTIONS)]
    max_connections: usize,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = tickhttp::config::defaults::MAX_BODY_SIZE)]
    max_body_size: u64,
    /// Seconds an idle keep-alive connection stays open.
    #[arg(long, default_value_t = tickhttp::config::defaults::KEEP_ALIVE_TIMEOUT.as_secs())]
    keep_alive_timeout: u64,
    /// Seconds allowed for a request head.
    #[arg(long, default_value_t = tickhttp::config::defaults::HEADER_TIMEOUT.as_secs())]
    header_timeout: u64,
    /// Serve the files under this directory for paths the demo routes do not take.
    #[arg(long)]
    root: Option<PathBuf>,
    /// PEM certificate chain: serve HTTPS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key matching --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Requests allowed per client address per --rate-limit-window (off when absent).
    #[arg(long)]
    rate_limit: Option<u32>,
    /// Seconds of the rate-limit window.
    #[arg(long, default_value_t = 60)]
    rate_limit_window: u64,
    #[command(flatten)]
    pool: pool::PoolArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            init_logging(&args.log);
            match serve(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tickhttp: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn server_config(args: &ServeArgs) -> Result<ServerConfig, tickhttp::Error> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tickhttp::tls::TlsConfig::from_pem_files(cert, key)?),
        _ => None,
    };
    let rate_limit = args.rate_limit.map(|n| {
        tickhttp::ratelimit::RateLimitConfig::new(
            n,
            Duration::from_secs(args.rate_limit_window.max(1)),
        )
    });
    let config = ServerConfig::default()
        .listen(args.listen)
        .max_connections(args.max_connections)
        .max_body_size(args.max_body_size)
        .keep_alive_timeout(Duration::from_secs(args.keep_alive_timeout.max(1)))
        .header_timeout(Duration::from_secs(args.header_timeout.max(1)))
        .tls(tls)
        .rate_limit(rate_limit);
    config.validate()?;
    Ok(config)
}

fn serve(args: ServeArgs) -> Result<(), tickhttp::Error> {
    let config = server_config(&args)?;
    if let Some(root) = &args.root {
        if !root.is_dir() {
            return Err(tickhttp::Error::Io {
                context: "--root must be a directory",
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    root.display().to_string(),
                ),
            });
        }
        demo::set_root(root.clone());
    }
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    match args.mode {
        Mode::Single => {
            let mut server = Server::bind(config)?;
            tickhttp::signal::shutdown_on_signals(
                &mut server,
                Duration::from_secs(args.shutdown_timeout),
            )?;
            tickhttp::signal::reload_tls_on_hup(&mut server)?;
            let addr = server.local_addr().unwrap_or(args.listen);
            tracing::info!(%addr, mode = "single", root = ?args.root, tls = server.is_tls(), "tickhttp listening on {scheme}://{addr}/");
            demo::run(&mut server)?;
            tracing::info!(outcome = ?server.shutdown_outcome(), "stopped");
            Ok(())
        }
        Mode::Auto | Mode::Shared | Mode::Centralized => {
            let architecture = match args.mode {
                Mode::Shared => tickhttp::pool::Architecture::Shared,
                Mode::Centralized => tickhttp::pool::Architecture::Centralized,
                _ => tickhttp::pool::Architecture::Auto,
            };
            let timeout = Duration::from_secs(args.shutdown_timeout);
            pool::serve(architecture, config, timeout, args.pool)
        }
    }
}
