//! The `tickhttp` command.

mod demo;
mod pool;

// A faster allocator for the many small, short-lived allocations of request handling.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
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

fn server_config(args: &ServeArgs) -> ServerConfig {
    ServerConfig::default()
        .listen(args.listen)
        .max_connections(args.max_connections)
        .max_body_size(args.max_body_size)
        .keep_alive_timeout(Duration::from_secs(args.keep_alive_timeout.max(1)))
        .header_timeout(Duration::from_secs(args.header_timeout.max(1)))
}

fn serve(args: ServeArgs) -> Result<(), tickhttp::Error> {
    let config = server_config(&args);
    match args.mode {
        Mode::Single => {
            let mut server = Server::bind(config)?;
            tickhttp::signal::shutdown_on_signals(
                &mut server,
                Duration::from_secs(args.shutdown_timeout),
            )?;
            let addr = server.local_addr().unwrap_or(args.listen);
            tracing::info!(%addr, mode = "single", "tickhttp listening on http://{addr}/");
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
