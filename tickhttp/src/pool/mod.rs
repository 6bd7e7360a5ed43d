//! The pre-fork worker pool: one master process supervising N worker processes, each running
//! the application against its own [`Server`].
//!
//! ```text
//!   shared-socket                           centralized
//!   ─────────────                           ───────────
//!   master: supervises only                 master: accept ─▶ bounded queue ─▶ balancer
//!                                                   │ (full: 503 at once)       │
//!   workers: one listening socket,                SCM_RIGHTS + client address, accept time
//!     bound by the master, one accept queue         ▼                           ▼
//!                                           worker k: Server ◀── fd ── control socket ──▶
//!                                                     "opened/closed" load reports
//! ```
//!
//! # Use
//!
//! ```no_run
//! use tickhttp::pool::{Architecture, WorkerPool, Workers};
//! use tickhttp::{Server, ServerConfig};
//!
//! let pool = WorkerPool::builder()
//!     .workers(Workers::Auto)
//!     .architecture(Architecture::Auto)
//!     .server_config(ServerConfig::default().listen("127.0.0.1:8080".parse().unwrap()))
//!     .event_driven(|_worker_id: u32, server: &mut Server| {
//!         while server.is_running() {
//!             server.wait(None)?;
//!             while let Some(req) = server.get_request() {
//!                 server.respond(req.id(), http::Response::new("hello".into()))?;
//!             }
//!         }
//!         Ok(())
//!     })
//!     .build()?; // validates and binds: every misuse is reported here, before any fork
//! println!("{} on {}", pool.architecture(), pool.local_addr());
//! pool.run()?; // blocks until SIGTERM, SIGINT or SIGQUIT has stopped every worker
//! # Ok::<(), tickhttp::Error>(())
//! ```
//!
//! # Contract
//!
//! - **Fork.** The master forks, so it must be single-threaded: [`WorkerPool::run`] refuses
//!   (with an error saying so) while the process has another thread. Anything created before
//!   `run` is inherited by every worker (copy-on-write); create threads, runtimes and
//!   connections to other services inside the worker instead.
//! - **Worker ids** are stable per slot: `1..=N`, kept across restarts.
//! - **Supervision.** A worker reports ready once its server is built. Any death is followed
//!   by a restart after `restart_delay`, doubled for each further death within
//!   `crash_window`, up to `restart_delay_max`; a slot that dies `crash_limit` times within
//!   `crash_window` stops restarting, is logged and shown as `failed`, and the others keep
//!   serving. Workers get `SIGTERM` when the master dies (parent-death signal) and drain.
//!   With [`PoolBuilder::worker_timeout`], a worker whose loop stops turning (no heartbeat
//!   for that long) is logged with the request it was stuck on, killed and restarted.
//! - **Replacing workers** (rolling reload, recycling by [`PoolBuilder::max_requests`],
//!   [`PoolBuilder::max_rss`] or [`PoolBuilder::max_age`]): one slot at a time, the
//!   replacement starts first and the old worker drains only once the replacement is ready,
//!   so capacity never drops and no request is cut. Restarts are counted by reason
//!   ([`RestartReason`]) in the metrics.
//! - **Signals** (nginx and unicorn conventions): `SIGTERM` and `SIGINT` stop accepting, let
//!   workers finish requests in flight for up to `shutdown_timeout`, then `SIGKILL` what is
//!   left; `SIGQUIT` does the same without a kill deadline unless `quit_timeout` is set. The
//!   master never waits without a bound other than that, and [`WorkerPool::run`] returns
//!   `Ok` after a signal-initiated stop. An event-driven worker sees the stop through its
//!   `Server` (`is_shutting_down()`, then `is_running() == false` once drained). `SIGHUP`
//!   replaces every worker, one at a time (the new ones read the TLS certificates again);
//!   `SIGTTIN` adds a worker and `SIGTTOU` removes one (it drains); `SIGUSR2` execs a new
//!   master from the binary on disk with the listening sockets, and this generation drains
//!   and exits once the new one is ready (it keeps serving if the new one fails).
//! - **Load reports and heartbeats.** Each worker publishes its open connections, and the
//!   connections it has received, each time one opens or closes, on a load board: a cache
//!   line per worker process in memory shared with the master (mapped before the first fork). The master
//!   adds the connections it sent that the worker has not picked up yet, so least-connections,
//!   sticky's fallback and the metrics see live, exact load at every decision, at the cost
//!   of an atomic store: no message and no wakeup per connection. The same line carries the
//!   worker's heartbeat (stamped at each turn of its loop) and the method and path of the
//!   latest request it took. Every worker also reports over its control socket each second,
//!   which carries its request count.

mod balancer;
mod board;
mod ipc;
mod limit;
mod master;
mod metrics;
mod shm;
mod status;
mod sys;
mod upgrade;
mod worker;

use std::fmt;
use std::net::{SocketAddr, TcpStream};
use std::str::FromStr;
use std::time::Duration;

use crate::error::Error;
use crate::{ConnectionMeta, Request, Server, ServerConfig};

pub use metrics::{
    ExitReason, PoolMetrics, RestartCounts, RestartReason, WorkerMetrics, WorkerState,
};

/// The pool's defaults, one place, one reason each.
pub mod defaults {
    use std::time::Duration;

    /// The reference system's `restartDelay`: long enough not to spin, short enough to matter.
    pub const RESTART_DELAY: Duration = Duration::from_secs(1);
    /// Backoff cap: a crashing slot retries at least twice a minute until the breaker trips.
    pub const RESTART_DELAY_MAX: Duration = Duration::from_secs(30);
    /// Deaths within [`CRASH_WINDOW`] that stop a slot from restarting (systemd's
    /// `StartLimitBurst` is 5).
    pub const CRASH_LIMIT: u32 = 5;
    /// The window of [`CRASH_LIMIT`] (systemd's `StartLimitIntervalSec` is 10 s; with our
    /// backoff, 5 deaths take at least 15 s, so the window is longer).
    pub const CRASH_WINDOW: Duration = Duration::from_secs(60);
    /// `SIGTERM`/`SIGINT` drain time before `SIGKILL` (puma and gunicorn use 30 s; a demo
    /// server should stop sooner).
    pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
    /// The reference system's `maxQueueSize` (it hard-coded the same number).
    pub const MAX_QUEUE: usize = 1000;
    /// A connection waiting longer than this for a free worker gets a 503 (a fast failure
    /// beats a client timeout; php-fpm users have asked for this since 2013).
    pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
    /// A worker that has not reported ready by then is killed and restarted (puma's
    /// `worker_boot_timeout` is 60 s; our workers only build a server).
    pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
    /// Worker count when the CPUs available cannot be determined (the reference's fallback).
    pub const AUTO_WORKERS_FALLBACK: usize = 4;
    /// The reference system's limit.
    pub const MAX_WORKERS: usize = 1024;
    /// Largest accepted value for the queue size: beyond this the queue only hides overload.
    pub const MAX_QUEUE_LIMIT: usize = 1_000_000;
    /// Period of the workers' stats report (also their liveness signal).
    pub const STATS_INTERVAL: Duration = Duration::from_secs(1);
    /// Time a worker gets, past the drain deadline, to close and exit before `SIGKILL`.
    pub const KILL_GRACE: Duration = Duration::from_secs(1);
    /// How long the kernel holds a connection that has sent nothing before handing it over
    /// anyway (`TCP_DEFER_ACCEPT`): the server's default header timeout.
    pub const DEFER_ACCEPT: Duration = Duration::from_secs(10);
    /// How long a draining worker's idle keep-alive connection must stay quiet before it is
    /// closed: long enough for a busy client's next request to arrive first and be answered
    /// with `Connection: close`, so no request races the close.
    pub const DRAIN_IDLE_GRACE: Duration = Duration::from_secs(1);
    /// Longest configurable timeout or delay (keeps deadline arithmetic far from overflow).
    pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);
}

/// How many workers to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Workers {
    /// One per CPU available to this process: affinity mask and cgroup CPU quota respected
    /// (`std::thread::available_parallelism`), [`defaults::AUTO_WORKERS_FALLBACK`] if unknown.
    #[default]
    Auto,
    /// Exactly this many (1 to 1024).
    Count(usize),
}

impl Workers {
    /// The number this resolves to on this machine.
    pub fn resolve(self) -> usize {
        match self {
            Workers::Count(n) => n,
            Workers::Auto => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(defaults::AUTO_WORKERS_FALLBACK)
                .clamp(1, defaults::MAX_WORKERS),
        }
    }
}

impl FromStr for Workers {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Workers::Auto);
        }
        s.parse()
            .map(Workers::Count)
            .map_err(|_| format!("expected a number of workers or \"auto\", got {s:?}"))
    }
}

/// How connections reach the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Architecture {
    /// Centralized where descriptor passing works here (checked by trying it), else shared
    /// socket: the reference's `MasterFactory`, minus its guessing.
    #[default]
    Auto,
    /// Every worker accepts on one listening socket the master bound before the first fork;
    /// the worker that is free first takes the connection. No master on the data path; the
    /// fastest for keep-alive traffic. (One socket rather than one `SO_REUSEPORT` socket per
    /// worker: a worker that is replaced or removed then leaves the connections waiting in
    /// the accept queue to the others instead of resetting them.)
    Shared,
    /// The master accepts, queues (bounded) and hands each connection to the worker the
    /// balancer picks, with its client address and accept time.
    Centralized,
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Architecture::Auto => "auto",
            Architecture::Shared => "shared-socket",
            Architecture::Centralized => "centralized",
        })
    }
}

impl FromStr for Architecture {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Architecture::Auto),
            "shared" | "shared-socket" => Ok(Architecture::Shared),
            "centralized" => Ok(Architecture::Centralized),
            _ => Err(format!("expected auto, shared or centralized, got {s:?}")),
        }
    }
}

/// How the centralized master picks a worker for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BalancerKind {
    /// Each worker in turn.
    RoundRobin,
    /// The worker with the fewest open connections, from live worker reports.
    #[default]
    LeastConnections,
    /// Shares by [`PoolBuilder::weights`] (smooth weighted round-robin).
    Weighted,
    /// A client address keeps its worker while that worker lives; new clients go to the
    /// least-loaded worker. Behind a proxy trusted for the PROXY protocol
    /// ([`ServerConfig::proxy_protocol`](crate::ServerConfig::proxy_protocol)) the client
    /// address is the one the PROXY header names: the master peeks at it without consuming
    /// it (waiting up to a second for it to arrive) before it picks the worker.
    Sticky,
}

impl fmt::Display for BalancerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BalancerKind::RoundRobin => "round-robin",
            BalancerKind::LeastConnections => "least-connections",
            BalancerKind::Weighted => "weighted",
            BalancerKind::Sticky => "sticky",
        })
    }
}

impl FromStr for BalancerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "round-robin" => Ok(BalancerKind::RoundRobin),
            "least-connections" => Ok(BalancerKind::LeastConnections),
            "weighted" => Ok(BalancerKind::Weighted),
            "sticky" => Ok(BalancerKind::Sticky),
            _ => Err(format!(
                "expected round-robin, least-connections, weighted or sticky, got {s:?}"
            )),
        }
    }
}

/// An application that owns its loop: `run` is called once per worker with that worker's
/// [`Server`] and should poll it until `server.is_running()` turns false (after a graceful
/// stop). Returning earlier ends the worker, which the master then restarts.
pub trait EventDrivenWorker {
    /// Runs the application in worker `worker_id`.
    fn run(&mut self, worker_id: u32, server: &mut Server) -> Result<(), Error>;
}

impl<F> EventDrivenWorker for F
where
    F: FnMut(u32, &mut Server) -> Result<(), Error>,
{
    fn run(&mut self, worker_id: u32, server: &mut Server) -> Result<(), Error> {
        self(worker_id, server)
    }
}

/// Called once per connection with the connected socket (blocking mode) and its metadata, as
/// in the reference. The worker handles one connection at a time; use the event-driven mode
/// for concurrency within a worker.
pub trait WorkerCallback {
    /// Handles one connection in worker `worker_id`; the socket closes when dropped.
    fn handle(&mut self, worker_id: u32, stream: TcpStream, meta: ConnectionMeta);
}

impl<F> WorkerCallback for F
where
    F: FnMut(u32, TcpStream, ConnectionMeta),
{
    fn handle(&mut self, worker_id: u32, stream: TcpStream, meta: ConnectionMeta) {
        self(worker_id, stream, meta)
    }
}

/// Answers one request; tickhttp's own loop calls it for every request of the worker. The
/// handler may answer later (from a task or a [`Responder`](crate::Responder)).
pub trait RequestHandler {
    /// Handles `request`.
    fn handle(&mut self, server: &mut Server, request: Request) -> Result<(), Error>;
}

impl<F> RequestHandler for F
where
    F: FnMut(&mut Server, Request) -> Result<(), Error>,
{
    fn handle(&mut self, server: &mut Server, request: Request) -> Result<(), Error> {
        self(server, request)
    }
}

/// What each worker runs.
pub(crate) enum WorkerApp {
    EventDriven(Box<dyn EventDrivenWorker>),
    Callback(Box<dyn WorkerCallback>),
    Handler(Box<dyn RequestHandler>),
}

impl WorkerApp {
    fn name(&self) -> &'static str {
        match self {
            WorkerApp::EventDriven(_) => "event-driven",
            WorkerApp::Callback(_) => "callback",
            WorkerApp::Handler(_) => "request handler",
        }
    }
}

/// What happens to the pool as a whole, reported by the master to the hook given to
/// [`PoolBuilder::on_event`]: enough to drive a service manager (systemd's `READY=1`,
/// `RELOADING=1`, `STOPPING=1`, `WATCHDOG=1`, `MAINPID=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolEvent {
    /// Every worker reported ready, for the first time in this master. `upgraded` when this
    /// master was started by a `SIGUSR2` upgrade (the previous master drains next).
    Ready {
        /// This master was started by an upgrade.
        upgraded: bool,
    },
    /// `SIGHUP`: a rolling reload began.
    Reloading,
    /// The rolling reload finished: every slot was replaced (or kept its worker because the
    /// replacement failed).
    Reloaded,
    /// `SIGUSR2`: a new master is starting with the listening sockets.
    Upgrading {
        /// The new master's process id.
        pid: u32,
    },
    /// The upgrade failed (the new master exited or was not ready in time); this master
    /// keeps serving.
    UpgradeFailed,
    /// The new master is ready and takes over; this one drains its workers and exits.
    UpgradeDone {
        /// The new master's process id.
        pid: u32,
    },
    /// `SIGTERM`, `SIGINT` or `SIGQUIT`: the pool stops.
    Stopping,
    /// The master's loop is turning; sent every [`PoolBuilder::heartbeat`] interval.
    Heartbeat,
}

/// A hook for [`PoolEvent`]s; runs in the master, in its loop: it must return promptly.
type EventHook = Box<dyn FnMut(PoolEvent)>;

/// Configures a [`WorkerPool`]; [`build`](PoolBuilder::build) validates and binds.
#[must_use]
pub struct PoolBuilder {
    workers: Workers,
    architecture: Architecture,
    balancer: Option<BalancerKind>,
    weights: Vec<u32>,
    server_config: ServerConfig,
    max_queue: usize,
    queue_timeout: Duration,
    restart_delay: Duration,
    restart_delay_max: Duration,
    crash_limit: u32,
    crash_window: Duration,
    shutdown_timeout: Duration,
    quit_timeout: Option<Duration>,
    ready_timeout: Duration,
    worker_timeout: Option<Duration>,
    max_requests: Option<u64>,
    max_requests_jitter: u64,
    max_rss: Option<u64>,
    max_age: Option<Duration>,
    defer_accept: Option<Duration>,
    status_listen: Option<SocketAddr>,
    listener: Option<std::net::TcpListener>,
    on_event: Option<EventHook>,
    heartbeat: Option<Duration>,
    app: Option<WorkerApp>,
}

impl fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("workers", &self.workers)
            .field("architecture", &self.architecture)
            .field("balancer", &self.balancer)
            .field("listen", &self.server_config.listen)
            .field("app", &self.app.as_ref().map(WorkerApp::name))
            .finish_non_exhaustive()
    }
}

impl PoolBuilder {
    fn new() -> Self {
        PoolBuilder {
            workers: Workers::Auto,
            architecture: Architecture::Auto,
            balancer: None,
            weights: Vec::new(),
            server_config: ServerConfig::default(),
            max_queue: defaults::MAX_QUEUE,
            queue_timeout: defaults::QUEUE_TIMEOUT,
            restart_delay: defaults::RESTART_DELAY,
            restart_delay_max: defaults::RESTART_DELAY_MAX,
            crash_limit: defaults::CRASH_LIMIT,
            crash_window: defaults::CRASH_WINDOW,
            shutdown_timeout: defaults::SHUTDOWN_TIMEOUT,
            quit_timeout: None,
            ready_timeout: defaults::READY_TIMEOUT,
            worker_timeout: None,
            max_requests: None,
            max_requests_jitter: 0,
            max_rss: None,
            max_age: None,
            defer_accept: Some(defaults::DEFER_ACCEPT),
            status_listen: None,
            listener: None,
            on_event: None,
            heartbeat: None,
            app: None,
        }
    }

    /// Serves on `listener`, already bound and listening (for example the socket systemd
    /// passes with socket activation), instead of binding
    /// [`ServerConfig::listen`](crate::ServerConfig::listen). A socket inherited by an
    /// upgraded master (`SIGUSR2`) still takes precedence.
    pub fn listener(mut self, listener: std::net::TcpListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Calls `hook` in the master for each [`PoolEvent`].
    ///
    /// ```no_run
    /// use tickhttp::pool::{PoolEvent, WorkerPool};
    /// # fn app(_: u32, _: &mut tickhttp::Server) -> Result<(), tickhttp::Error> { Ok(()) }
    /// let pool = WorkerPool::builder()
    ///     .event_driven(app)
    ///     .on_event(|event| {
    ///         if let PoolEvent::Ready { .. } = event {
    ///             eprintln!("every worker is ready");
    ///         }
    ///     })
    ///     .build()?;
    /// pool.run()?;
    /// # Ok::<(), tickhttp::Error>(())
    /// ```
    pub fn on_event(mut self, hook: impl FnMut(PoolEvent) + 'static) -> Self {
        self.on_event = Some(Box::new(hook));
        self
    }

    /// Sends [`PoolEvent::Heartbeat`] every `interval` from the master's loop (default:
    /// never), for a service manager's watchdog.
    pub fn heartbeat(mut self, interval: Option<Duration>) -> Self {
        self.heartbeat = interval;
        self
    }

    /// Worker count (default: [`Workers::Auto`]).
    pub fn workers(mut self, workers: Workers) -> Self {
        self.workers = workers;
        self
    }

    /// Architecture (default: [`Architecture::Auto`]).
    pub fn architecture(mut self, architecture: Architecture) -> Self {
        self.architecture = architecture;
        self
    }

    /// Balancer for centralized mode (default: least-connections). Asking for one with
    /// [`Architecture::Shared`] is an error: the kernel balances there.
    pub fn balancer(mut self, balancer: BalancerKind) -> Self {
        self.balancer = Some(balancer);
        self
    }

    /// Per-worker weights for [`BalancerKind::Weighted`], one per worker, each 1 to 1000.
    pub fn weights(mut self, weights: Vec<u32>) -> Self {
        self.weights = weights;
        self
    }

    /// The configuration of every worker's [`Server`]; its `listen` address and `backlog`
    /// are the pool's.
    pub fn server_config(mut self, config: ServerConfig) -> Self {
        self.server_config = config;
        self
    }

    /// Listen backlog (shortcut for the server configuration's `backlog`).
    pub fn backlog(mut self, backlog: i32) -> Self {
        self.server_config.backlog = backlog;
        self
    }

    /// Connections the centralized master holds while no worker can take them; beyond
    /// this, new connections get a 503 at once (default 1000).
    pub fn max_queue(mut self, max_queue: usize) -> Self {
        self.max_queue = max_queue;
        self
    }

    /// Longest wait in that queue before a 503 (default 5 s).
    pub fn queue_timeout(mut self, timeout: Duration) -> Self {
        self.queue_timeout = timeout;
        self
    }

    /// Delay before restarting a dead worker (default 1 s), doubled for each further death
    /// within the crash window.
    pub fn restart_delay(mut self, delay: Duration) -> Self {
        self.restart_delay = delay;
        self
    }

    /// Cap of the restart backoff (default 30 s).
    pub fn restart_delay_max(mut self, delay: Duration) -> Self {
        self.restart_delay_max = delay;
        self
    }

    /// Crash-loop breaker: a slot whose worker dies `limit` times within `window` stops
    /// restarting (default 5 in 60 s).
    pub fn crash_limit(mut self, limit: u32, window: Duration) -> Self {
        self.crash_limit = limit;
        self.crash_window = window;
        self
    }

    /// How long `SIGTERM`/`SIGINT` let workers finish requests in flight before `SIGKILL`
    /// (default 10 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Kill deadline for `SIGQUIT`; `None` (the default) waits for requests in flight however
    /// long they take.
    pub fn quit_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.quit_timeout = timeout;
        self
    }

    /// How long a new worker may take to report ready (default 30 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Kills and restarts a ready worker whose event loop has not turned for this long
    /// (default: off).
    ///
    /// Each worker stamps a heartbeat on the shared board every time its loop turns (each
    /// `wait` or `has_request` of its `Server`, at least once a second since a report timer
    /// wakes it), and the time and method and path of each request it takes. A stale
    /// heartbeat means the application's loop has stopped turning: a handler stuck in a
    /// blocking call or an endless computation. The master then logs what the worker was
    /// doing (the request it took after its loop's last turn, and for how long), kills it
    /// with `SIGKILL` and starts another. Set it well above the longest time the application
    /// may legitimately block (a callback handles one connection at a time).
    pub fn worker_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.worker_timeout = timeout;
        self
    }

    /// Replaces a worker once it has received `n` requests (checked each second), plus a
    /// random `0..=jitter` drawn for each process so workers do not all recycle at once
    /// (default: off). The replacement is started first and the old worker drains only
    /// once it is ready: no capacity drop, no request cut.
    pub fn max_requests(mut self, n: Option<u64>, jitter: u64) -> Self {
        self.max_requests = n;
        self.max_requests_jitter = jitter;
        self
    }

    /// Replaces a worker whose resident memory (`/proc/PID/statm`, read each second) is over
    /// `bytes` (default: off); replace-before-retire as for [`max_requests`](Self::max_requests).
    pub fn max_rss(mut self, bytes: Option<u64>) -> Self {
        self.max_rss = bytes;
        self
    }

    /// Replaces a worker older than `age`, less a random tenth drawn for each process
    /// (default: off); replace-before-retire as for [`max_requests`](Self::max_requests).
    pub fn max_age(mut self, age: Option<Duration>) -> Self {
        self.max_age = age;
        self
    }

    /// Hands a new connection to a worker only once the client has sent its first bytes, or
    /// after this long (`TCP_DEFER_ACCEPT`; default 10 s, `None` to accept at once). The worker
    /// then finds the request already there: one wakeup per connection instead of two, and
    /// connections that never send anything never reach the application.
    pub fn defer_accept(mut self, wait: Option<Duration>) -> Self {
        self.defer_accept = wait;
        self
    }

    /// Serves the master's metrics on this address (`GET /` JSON, `GET /metrics`
    /// Prometheus text), from the master itself.
    pub fn status_listen(mut self, addr: SocketAddr) -> Self {
        self.status_listen = Some(addr);
        self
    }

    /// Runs `app` in each worker (event-driven mode).
    pub fn event_driven(mut self, app: impl EventDrivenWorker + 'static) -> Self {
        self.app = Some(WorkerApp::EventDriven(Box::new(app)));
        self
    }

    /// Calls `callback` for each connection (callback mode).
    pub fn callback(mut self, callback: impl WorkerCallback + 'static) -> Self {
        self.app = Some(WorkerApp::Callback(Box::new(callback)));
        self
    }

    /// Calls `handler` for each request, from tickhttp's own loop.
    pub fn handler(mut self, handler: impl RequestHandler + 'static) -> Self {
        self.app = Some(WorkerApp::Handler(Box::new(handler)));
        self
    }

    /// Validates the configuration, picks the architecture and binds the listening
    /// socket(s). Every misuse is reported here, before anything forks.
    pub fn build(self) -> Result<WorkerPool, Error> {
        let app = self.app.ok_or_else(|| {
            Error::config(
                "worker",
                "no worker given: call event_driven(), handler() or callback() on the builder",
            )
        })?;
        let workers = self.workers.resolve();
        if workers == 0 {
            return Err(Error::config(
                "workers",
                "must be at least 1, got 0 (use \"auto\" for one per CPU)",
            ));
        }
        if workers > defaults::MAX_WORKERS {
            return Err(Error::config(
                "workers",
                format!("must be at most {}, got {workers}", defaults::MAX_WORKERS),
            ));
        }
        // Everything a worker's server checks at creation (limits, TLS files) fails here, once,
        // instead of in every worker after the fork.
        drop(Server::new(self.server_config.clone())?);
        if self.server_config.backlog > 65_535 {
            return Err(Error::config(
                "backlog",
                format!(
                    "must be at most 65535, got {} (the kernel caps it at net.core.somaxconn)",
                    self.server_config.backlog
                ),
            ));
        }
        if self.max_queue == 0 || self.max_queue > defaults::MAX_QUEUE_LIMIT {
            return Err(Error::config(
                "max_queue",
                format!(
                    "must be from 1 to {}, got {}",
                    defaults::MAX_QUEUE_LIMIT,
                    self.max_queue
                ),
            ));
        }
        if self.crash_limit == 0 {
            return Err(Error::config(
                "crash_limit",
                "must be at least 1 (deaths within the crash window before a slot stops restarting)",
            ));
        }
        for (option, value) in [
            ("queue_timeout", self.queue_timeout),
            ("restart_delay", self.restart_delay),
            ("restart_delay_max", self.restart_delay_max),
            ("crash_window", self.crash_window),
            ("shutdown_timeout", self.shutdown_timeout),
            ("ready_timeout", self.ready_timeout),
        ]
        .into_iter()
        .chain(self.quit_timeout.map(|t| ("quit_timeout", t)))
        .chain(self.worker_timeout.map(|t| ("worker_timeout", t)))
        .chain(self.max_age.map(|t| ("max_age", t)))
        {
            if value > defaults::MAX_DURATION {
                return Err(Error::config(
                    option,
                    format!("must be at most 30 days, got {value:?}"),
                ));
            }
        }
        for (option, value) in [
            ("queue_timeout", self.queue_timeout),
            ("crash_window", self.crash_window),
            ("ready_timeout", self.ready_timeout),
        ]
        .into_iter()
        .chain(self.worker_timeout.map(|t| ("worker_timeout", t)))
        .chain(self.max_age.map(|t| ("max_age", t)))
        {
            if value.is_zero() {
                return Err(Error::config(option, "must be greater than zero"));
            }
        }
        if self.max_requests == Some(0) {
            return Err(Error::config("max_requests", "must be at least 1"));
        }
        if self.max_rss == Some(0) {
            return Err(Error::config("max_rss", "must be greater than zero"));
        }
        if self.restart_delay > self.restart_delay_max {
            return Err(Error::config(
                "restart_delay",
                format!(
                    "must not exceed restart_delay_max ({:?}), got {:?}",
                    self.restart_delay_max, self.restart_delay
                ),
            ));
        }
        if self.architecture == Architecture::Shared && self.balancer.is_some() {
            return Err(Error::config(
                "balancer",
                "balancers apply to the centralized architecture only; in shared-socket mode \
                 the kernel spreads connections over the workers' listeners",
            ));
        }
        let balancer = self.balancer.unwrap_or_default();
        if balancer == BalancerKind::Weighted {
            if self.weights.len() != workers {
                return Err(Error::config(
                    "weights",
                    format!(
                        "the weighted balancer needs one weight per worker: {workers} workers, \
                         {} weights given",
                        self.weights.len()
                    ),
                ));
            }
            if let Some(w) = self.weights.iter().find(|w| !(1..=1000).contains(*w)) {
                return Err(Error::config(
                    "weights",
                    format!("each weight must be from 1 to 1000, got {w}"),
                ));
            }
        } else if !self.weights.is_empty() {
            return Err(Error::config(
                "weights",
                format!("weights apply to the weighted balancer only, not {balancer}"),
            ));
        }

        let (architecture, reason) = match self.architecture {
            Architecture::Shared => (Architecture::Shared, "asked for".to_string()),
            Architecture::Centralized => {
                sys::probe_fd_passing().map_err(|why| {
                    Error::Pool(format!(
                        "the centralized architecture needs descriptor passing, which fails \
                         here: {why}; use the shared-socket architecture"
                    ))
                })?;
                (Architecture::Centralized, "asked for".to_string())
            }
            Architecture::Auto => match sys::probe_fd_passing() {
                Ok(()) => (
                    Architecture::Centralized,
                    "auto: descriptor passing (SCM_RIGHTS) works here, so the master can \
                     balance every connection"
                        .to_string(),
                ),
                Err(why) => (
                    Architecture::Shared,
                    format!(
                        "auto: descriptor passing fails here ({why}), so every worker \
                         accepts on one shared listener"
                    ),
                ),
            },
        };

        let listen = self.server_config.listen;
        let backlog = self.server_config.backlog;
        // A master started by an upgrade (`SIGUSR2`) takes its predecessor's sockets.
        let inherited = upgrade::take_inherited()?;
        // One listening socket in either architecture, bound here so a bad address fails
        // before any fork and port 0 resolves once. In shared-socket mode every worker of
        // every generation inherits it: one accept queue, so a worker that is replaced,
        // removed, restarted or stuck leaves the connections waiting in it to the others
        // instead of resetting them (see the master's notes on replacing workers).
        // `SO_REUSEPORT` stays set there so another process may bind the port alongside.
        let given = match self.listener {
            Some(l) => {
                l.set_nonblocking(true)
                    .map_err(|e| Error::io("making the given listener non-blocking", e))?;
                Some(l)
            }
            None => None,
        };
        let l = match (reuse(inherited.listen, listen, "listen"), given) {
            (Some(l), _) => l,
            (None, Some(l)) => l,
            (None, None) => {
                crate::sys::bind_tcp(listen, backlog, architecture != Architecture::Centralized)?
            }
        };
        let local_addr = l
            .local_addr()
            .map_err(|e| Error::io("reading the listener's address", e))?;
        let listeners = vec![l];
        if let Some(wait) = self.defer_accept {
            let secs = u32::try_from(wait.as_secs().max(1)).unwrap_or(u32::MAX);
            for l in &listeners {
                if let Err(e) = sys::set_defer_accept(l, secs) {
                    tracing::warn!(error = %e, "TCP_DEFER_ACCEPT unavailable; accepting at once");
                    break;
                }
            }
        }
        let status = match self.status_listen {
            Some(addr) => match reuse(inherited.status, addr, "status") {
                Some(l) => Some(l),
                None => Some(crate::sys::bind_tcp(addr, 64, false)?),
            },
            None => None,
        };
        let weights = if self.weights.is_empty() {
            vec![1; workers]
        } else {
            self.weights
        };
        Ok(WorkerPool {
            config: PoolConfig {
                workers,
                architecture,
                reason,
                balancer,
                weights,
                server_config: self.server_config,
                max_queue: self.max_queue,
                queue_timeout: self.queue_timeout,
                restart_delay: self.restart_delay,
                restart_delay_max: self.restart_delay_max,
                crash_limit: self.crash_limit,
                crash_window: self.crash_window,
                shutdown_timeout: self.shutdown_timeout,
                quit_timeout: self.quit_timeout,
                ready_timeout: self.ready_timeout,
                worker_timeout: self.worker_timeout,
                max_requests: self.max_requests,
                max_requests_jitter: self.max_requests_jitter,
                max_rss: self.max_rss,
                max_age: self.max_age,
                heartbeat: self.heartbeat,
                local_addr,
            },
            on_event: self.on_event,
            listeners,
            status,
            ready_pipe: inherited.ready,
            app,
        })
    }
}

/// An inherited socket, if it is bound where `want` says (port 0: any port); one bound
/// elsewhere (the configuration changed across the upgrade) is closed and the caller binds.
fn reuse(
    inherited: Option<std::net::TcpListener>,
    want: SocketAddr,
    name: &str,
) -> Option<std::net::TcpListener> {
    let l = inherited?;
    let have = l.local_addr().ok()?;
    if have.ip() == want.ip() && (want.port() == 0 || want.port() == have.port()) {
        tracing::info!(address = %have, "{name} socket inherited from the previous master");
        Some(l)
    } else {
        tracing::warn!(
            inherited = %have,
            configured = %want,
            "the inherited {name} socket is bound elsewhere; binding the configured address"
        );
        None
    }
}

/// The validated settings of a pool.
pub(crate) struct PoolConfig {
    pub(crate) workers: usize,
    pub(crate) architecture: Architecture,
    pub(crate) reason: String,
    pub(crate) balancer: BalancerKind,
    pub(crate) weights: Vec<u32>,
    pub(crate) server_config: ServerConfig,
    pub(crate) max_queue: usize,
    pub(crate) queue_timeout: Duration,
    pub(crate) restart_delay: Duration,
    pub(crate) restart_delay_max: Duration,
    pub(crate) crash_limit: u32,
    pub(crate) crash_window: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) quit_timeout: Option<Duration>,
    pub(crate) ready_timeout: Duration,
    pub(crate) worker_timeout: Option<Duration>,
    pub(crate) max_requests: Option<u64>,
    pub(crate) max_requests_jitter: u64,
    pub(crate) max_rss: Option<u64>,
    pub(crate) max_age: Option<Duration>,
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) local_addr: SocketAddr,
}

/// A configured, bound worker pool; [`run`](WorkerPool::run) forks the workers.
pub struct WorkerPool {
    config: PoolConfig,
    listeners: Vec<std::net::TcpListener>,
    status: Option<std::net::TcpListener>,
    /// Set when an upgrade started this master: where to say it is ready.
    ready_pipe: Option<std::os::fd::OwnedFd>,
    on_event: Option<EventHook>,
    app: WorkerApp,
}

impl fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerPool")
            .field("workers", &self.config.workers)
            .field("architecture", &self.config.architecture)
            .field("balancer", &self.balancer())
            .field("local_addr", &self.config.local_addr)
            .field("app", &self.app.name())
            .finish_non_exhaustive()
    }
}

impl WorkerPool {
    /// Starts configuring a pool.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::new()
    }

    /// The architecture in use (never `Auto`: resolved by [`PoolBuilder::build`]).
    pub fn architecture(&self) -> Architecture {
        self.config.architecture
    }

    /// Why that architecture: "asked for", or what the automatic choice found.
    pub fn architecture_reason(&self) -> &str {
        &self.config.reason
    }

    /// The balancer, in centralized mode.
    pub fn balancer(&self) -> Option<BalancerKind> {
        (self.config.architecture == Architecture::Centralized).then_some(self.config.balancer)
    }

    /// Number of worker processes.
    pub fn worker_count(&self) -> usize {
        self.config.workers
    }

    /// The bound address (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.config.local_addr
    }

    /// The bound address of the status endpoint, if any.
    pub fn status_addr(&self) -> Option<SocketAddr> {
        self.status.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Forks the workers and supervises them until a signal stops the pool; returns the final
    /// metrics. Fails before forking if the process has more than one thread, and later if
    /// every worker slot tripped its crash-loop breaker.
    pub fn run(self) -> Result<PoolMetrics, Error> {
        master::run(
            self.config,
            self.listeners,
            self.status,
            self.ready_pipe,
            self.on_event,
            self.app,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(_: u32, _: &mut Server) -> Result<(), Error> {
        Ok(())
    }

    fn config_error(builder: PoolBuilder) -> (&'static str, String) {
        match builder.build() {
            Err(Error::Config { option, reason }) => (option, reason),
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    fn local() -> ServerConfig {
        ServerConfig::default().listen("127.0.0.1:0".parse().unwrap())
    }

    #[test]
    fn no_worker_given() {
        let (option, reason) = config_error(WorkerPool::builder().server_config(local()));
        assert_eq!(option, "worker");
        assert!(reason.contains("event_driven()"), "{reason}");
    }

    #[test]
    fn worker_count_bounds() {
        let b = || {
            WorkerPool::builder()
                .server_config(local())
                .event_driven(app)
        };
        assert_eq!(config_error(b().workers(Workers::Count(0))).0, "workers");
        assert_eq!(config_error(b().workers(Workers::Count(1025))).0, "workers");
        assert!((1..=1024).contains(&Workers::Auto.resolve()));
    }

    #[test]
    fn limits_are_checked() {
        let b = || {
            WorkerPool::builder()
                .server_config(local())
                .workers(Workers::Count(2))
                .event_driven(app)
        };
        assert_eq!(config_error(b().max_queue(0)).0, "max_queue");
        assert_eq!(config_error(b().backlog(0)).0, "backlog");
        assert_eq!(config_error(b().backlog(1 << 20)).0, "backlog");
        assert_eq!(
            config_error(b().crash_limit(0, Duration::from_secs(1))).0,
            "crash_limit"
        );
        assert_eq!(
            config_error(b().restart_delay(Duration::from_secs(60))).0,
            "restart_delay"
        );
        assert_eq!(
            config_error(b().shutdown_timeout(Duration::from_secs(u64::MAX))).0,
            "shutdown_timeout"
        );
        assert_eq!(
            config_error(b().balancer(BalancerKind::Weighted).weights(vec![1])).0,
            "weights"
        );
        assert_eq!(
            config_error(b().balancer(BalancerKind::Weighted).weights(vec![1, 0])).0,
            "weights"
        );
        assert_eq!(config_error(b().weights(vec![1, 1])).0, "weights");
        assert_eq!(
            config_error(
                b().architecture(Architecture::Shared)
                    .balancer(BalancerKind::RoundRobin)
            )
            .0,
            "balancer"
        );
    }

    #[test]
    fn build_binds_and_resolves_the_port_once() {
        let pool = WorkerPool::builder()
            .server_config(local())
            .workers(Workers::Count(3))
            .architecture(Architecture::Shared)
            .event_driven(app)
            .build()
            .unwrap();
        assert_eq!(
            pool.listeners.len(),
            1,
            "one accept queue shared by every worker"
        );
        let port = pool.local_addr().port();
        assert_ne!(port, 0);
        for l in &pool.listeners {
            assert_eq!(l.local_addr().unwrap().port(), port);
        }
        assert_eq!(pool.balancer(), None);
    }

    #[test]
    fn auto_resolves_and_explains() {
        let pool = WorkerPool::builder()
            .server_config(local())
            .workers(Workers::Count(1))
            .event_driven(app)
            .build()
            .unwrap();
        assert_ne!(pool.architecture(), Architecture::Auto);
        assert!(pool.architecture_reason().starts_with("auto: "));
    }

    #[test]
    fn names_parse() {
        assert_eq!("auto".parse(), Ok(Workers::Auto));
        assert_eq!("8".parse(), Ok(Workers::Count(8)));
        assert!("many".parse::<Workers>().is_err());
        assert_eq!("shared".parse(), Ok(Architecture::Shared));
        assert_eq!(
            "least-connections".parse(),
            Ok(BalancerKind::LeastConnections)
        );
        for b in [
            BalancerKind::RoundRobin,
            BalancerKind::LeastConnections,
            BalancerKind::Weighted,
            BalancerKind::Sticky,
        ] {
            assert_eq!(b.to_string().parse(), Ok(b));
        }
    }

    #[test]
    fn run_refuses_a_multithreaded_master() {
        // A second thread, whatever the harness does: `run` must refuse before forking.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            let _ = rx.recv();
        });
        let pool = WorkerPool::builder()
            .server_config(local())
            .workers(Workers::Count(1))
            .event_driven(app)
            .build()
            .unwrap();
        match pool.run() {
            Err(Error::Pool(msg)) => assert!(msg.contains("threads"), "{msg}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        drop(tx);
        let _ = other.join();
    }
}
