//! # The worker pool
//!
//! One [`Server`](crate::Server) is one thread on one core. To use every core, run the
//! application in several processes: a master forks N workers, each with its own `Server`,
//! and supervises them. That is [`WorkerPool`](crate::pool::WorkerPool), the counterpart of
//! the reference system's `SharedSocketMaster`, `CentralizedMaster` and `MasterFactory`.
//!
//! ```no_run
//! use std::time::Duration;
//! use tickhttp::pool::{Architecture, BalancerKind, WorkerPool, Workers};
//! use tickhttp::{Server, ServerConfig};
//!
//! fn app(worker_id: u32, server: &mut Server) -> Result<(), tickhttp::Error> {
//!     while server.is_running() {
//!         server.wait(None)?;
//!         while let Some(req) = server.get_request() {
//!             let body = format!("worker {worker_id} says hello\n");
//!             server.respond(req.id(), http::Response::new(body.into()))?;
//!         }
//!     }
//!     Ok(())
//! }
//!
//! let pool = WorkerPool::builder()
//!     .workers(Workers::Count(4))
//!     .architecture(Architecture::Centralized)
//!     .balancer(BalancerKind::Weighted)
//!     .weights(vec![2, 1, 1, 1]) // worker 1 gets two shares
//!     .server_config(ServerConfig::default().listen("0.0.0.0:8080".parse().unwrap()))
//!     .shutdown_timeout(Duration::from_secs(20))
//!     .status_listen("127.0.0.1:9090".parse().unwrap()) // GET / JSON, GET /metrics
//!     .event_driven(app)
//!     .build()?; // validates and binds: every misuse fails here, before any fork
//! eprintln!("{} ({})", pool.architecture(), pool.architecture_reason());
//! let metrics = pool.run()?; // until SIGTERM, SIGINT or SIGQUIT
//! eprintln!("{} connections dispatched", metrics.dispatched);
//! # Ok::<(), tickhttp::Error>(())
//! ```
//!
//! Call [`run`](crate::pool::WorkerPool::run) from a single-threaded process: it forks, and
//! refuses (with an error saying so) if another thread exists. Create threads, runtimes,
//! database connections and anything else with state inside the worker function, not before
//! `run`: what exists before the fork is copied into every worker.
//!
//! ## Architectures
//!
//! | | shared-socket ([`Architecture::Shared`](crate::pool::Architecture::Shared)) | centralized ([`Architecture::Centralized`](crate::pool::Architecture::Centralized)) |
//! |---|---|---|
//! | who accepts | each worker, on one listening socket the master bound before the first fork and every worker inherits (one accept queue, so a retiring worker leaves nothing behind) | the master, on one listener |
//! | who balances | the kernel: whichever idle worker accepts first | the master's balancer, with each worker's live load |
//! | cost per connection | none beyond `accept` | one `sendmsg` with `SCM_RIGHTS` (descriptor, client address, accept time) |
//! | master on the data path | no | for the hand-over only; the bytes never pass through it |
//! | overload | the kernel's backlog of the busy worker fills | a bounded queue, then an immediate 503 with `Retry-After` |
//! | suits | many keep-alive connections of similar cost | uneven requests (some slow), long-lived connections, WebSocket |
//!
//! [`Architecture::Auto`](crate::pool::Architecture::Auto), the default, tries descriptor
//! passing at build time and picks centralized where it works (some sandboxes forbid it),
//! shared-socket otherwise; [`WorkerPool::architecture_reason`](crate::pool::WorkerPool::architecture_reason)
//! says what it found. The reference picked by operating system name; here the check is a
//! real hand-over.
//!
//! Both architectures bind before forking, so a busy port is an error from `build`, port 0
//! resolves once for every worker, and a restarted worker inherits its slot's listener
//! (shared-socket) instead of resetting the connections waiting in its queue. Both set
//! `TCP_DEFER_ACCEPT` (see [`PoolBuilder::defer_accept`](crate::pool::PoolBuilder::defer_accept)):
//! a connection reaches a worker with its first request already readable.
//!
//! ## Balancers (centralized only)
//!
//! | [`BalancerKind`](crate::pool::BalancerKind) | picks | use when |
//! |---|---|---|
//! | `LeastConnections` (default) | the worker with the fewest open connections, ties in turn | requests differ in cost; the safe default |
//! | `RoundRobin` | each worker in turn (a restarted worker keeps its place) | requests cost the same |
//! | `Weighted` | shares by [`weights`](crate::pool::PoolBuilder::weights), smoothly interleaved (nginx's algorithm) | workers differ (one also runs a cron, one is pinned to a busy core) |
//! | `Sticky` | the same worker for the same client address while that worker lives; new clients go to the least loaded | per-client state kept in a worker's memory |
//!
//! The load that least-connections reads is exact and live: each worker publishes its open
//! connections in a word of memory shared with the master whenever one opens or closes,
//! and the master adds the connections it has sent but the worker has not picked up yet. No
//! message per connection, no stale counter (the reference's least-connections was fed
//! zeros and therefore random). Asking for a balancer with the shared-socket architecture is
//! a configuration error: the kernel balances there.
//!
//! When no worker can take a connection (all busy with a full control socket, or none ready
//! yet), the master queues it, up to [`max_queue`](crate::pool::PoolBuilder::max_queue)
//! connections and [`queue_timeout`](crate::pool::PoolBuilder::queue_timeout) each; beyond
//! either, the client gets `503 Service Unavailable` with `Retry-After: 1` at once, which
//! beats a timeout on the client's side.
//!
//! ## Worker modes
//!
//! | builder method | the worker runs | choose it for |
//! |---|---|---|
//! | [`event_driven`](crate::pool::PoolBuilder::event_driven) | your function, once, with the worker's `Server`; it polls until `is_running()` is false | applications that own their loop: an event bus, timers, streams, WebSocket. See [`event_driven`](super::event_driven). |
//! | [`handler`](crate::pool::PoolBuilder::handler) | tickhttp's loop, calling your function per request (which may answer later) | request/response applications that want no loop code |
//! | [`callback`](crate::pool::PoolBuilder::callback) | your function once per connection, with the blocking socket and its [`ConnectionMeta`](crate::ConnectionMeta) | protocols other than HTTP, or code ported from the reference's `WorkerCallbackInterface`. One connection at a time per worker. |
//!
//! `examples/event_driven_worker.rs` and `examples/callback_worker.rs` show the two ends.
//!
//! ## Supervision
//!
//! - **Ready handshake.** A worker reports ready once its server is built; a worker that has
//!   not within [`ready_timeout`](crate::pool::PoolBuilder::ready_timeout) is killed and
//!   restarted. Connections go only to ready workers.
//! - **Restarts.** Any death (crash, exit, kill) is followed by a restart in the same slot,
//!   with the same worker id, after [`restart_delay`](crate::pool::PoolBuilder::restart_delay),
//!   doubled for each further death within the crash window, up to `restart_delay_max`. The
//!   master never sleeps for it: the delay is a timer in its loop, and the other workers keep
//!   getting connections.
//! - **Crash-loop breaker.** A slot that dies [`crash_limit`](crate::pool::PoolBuilder::crash_limit)
//!   times within the window stops restarting and shows as `failed` in the metrics; `run`
//!   returns an error once every slot has failed.
//! - **Hung workers.** With [`worker_timeout`](crate::pool::PoolBuilder::worker_timeout), a
//!   worker whose loop stops turning for that long is killed and replaced, after the master
//!   logs the request it was stuck on and for how long. The heartbeat is a timestamp each
//!   turn of the worker's `Server` loop stores in memory shared with the master: no message.
//! - **Recycling.** [`max_requests`](crate::pool::PoolBuilder::max_requests) (with jitter, so
//!   workers do not all recycle at once), [`max_rss`](crate::pool::PoolBuilder::max_rss) and
//!   [`max_age`](crate::pool::PoolBuilder::max_age) replace a worker: its replacement starts
//!   and reports ready first, then the old one drains, so capacity never drops and no request
//!   is cut. Restarts are counted by reason in the metrics.
//! - **Orphans.** Workers get `SIGTERM` if the master dies (parent-death signal) and drain.
//!
//! ## Signals
//!
//! Send signals to the master; it forwards what the workers need.
//!
//! | signal | effect |
//! |---|---|
//! | `SIGTERM`, `SIGINT` | stop accepting; every worker drains (answers what it has, closes idle keep-alive connections) for up to [`shutdown_timeout`](crate::pool::PoolBuilder::shutdown_timeout); then `SIGKILL` for what is left; `run` returns `Ok` |
//! | `SIGQUIT` | the same drain, with no kill deadline unless [`quit_timeout`](crate::pool::PoolBuilder::quit_timeout) is set |
//! | `SIGHUP` | rolling reload, one slot at a time: start the replacement (with TLS certificates re-read), wait for its ready handshake, then drain the old worker; a replacement that fails leaves the old worker in place |
//! | `SIGUSR2` | binary upgrade: exec the binary on disk with the same arguments, handing it the listening sockets; once all its workers are ready, this generation drains and exits. If the new master dies or is not ready in time, this one keeps serving |
//! | `SIGTTIN`, `SIGTTOU` | add a worker; remove the newest (it drains) |
//! | `SIGCHLD` | internal: a worker died; it is reaped and restarted |
//!
//! The master reads these from a `signalfd`, so no handler runs at an arbitrary point. Other
//! signals keep their default action. Draining never races a client: a draining worker
//! answers requests in flight with `Connection: close` and closes an idle keep-alive
//! connection only after a second of quiet. In shared-socket mode all workers accept on one
//! socket, so a retiring worker leaves the connections waiting in the accept queue to the
//! others.
//!
//! [`PoolBuilder::on_event`](crate::pool::PoolBuilder::on_event) reports these moments to the
//! application as [`PoolEvent`](crate::pool::PoolEvent)s (ready, reloading, reloaded,
//! upgrade started, done or failed, stopping, and a heartbeat every
//! [`heartbeat`](crate::pool::PoolBuilder::heartbeat) interval): the `tickhttp` binary turns
//! them into systemd's `READY=1`, `RELOADING=1`, `STOPPING=1`, `WATCHDOG=1` and `MAINPID=`.
//! [`PoolBuilder::listener`](crate::pool::PoolBuilder::listener) takes a socket bound by
//! someone else, such as systemd's socket activation. An event-driven worker sees a stop through its
//! `Server`: [`is_shutting_down`](crate::Server::is_shutting_down) turns true (stop taking new
//! work), then [`is_running`](crate::Server::is_running) turns false once everything in flight
//! was answered or the deadline passed.
//!
//! In standalone mode (no pool), [`signal::shutdown_on_signals`](crate::signal::shutdown_on_signals)
//! gives a `Server` the same graceful stop, and
//! [`signal::reload_tls_on_hup`](crate::signal::reload_tls_on_hup) reloads its certificates.
//!
//! ## Observing the pool
//!
//! The master and the workers share a stats board in memory: the master publishes each
//! slot's state, pid, restarts, last exit, memory and heartbeat, the workers their server
//! counters and latency histogram every half second. So any worker answers
//! [`ServerConfig::admin_prefix`](crate::ServerConfig::admin_prefix)`/metrics` (Prometheus,
//! per-worker series labelled `worker="N"`), `/status` (JSON), `/health` and `/ready` (503
//! while draining) for the whole pool on the main listener, and
//! [`PoolBuilder::status_listen`](crate::pool::PoolBuilder::status_listen) serves the same
//! documents from the master itself, which answers even when every worker is busy. `run`
//! returns the final [`PoolMetrics`](crate::pool::PoolMetrics).
