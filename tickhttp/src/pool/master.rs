//! The master: a single-threaded loop over one epoll.
//!
//! It watches a signalfd (SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGTTIN, SIGTTOU and
//! SIGUSR2 are blocked and read from it, so no handler runs at an arbitrary point), one
//! control socket per worker, in centralized mode the listener, and during an upgrade the
//! new master's ready pipe. Every wait has a deadline computed from
//! the pending timers (restarts, ready timeouts, heartbeats, recycling, queue ageing, the kill
//! deadlines): nothing sleeps or polls.
//!
//! # Replacing a worker without losing capacity or a connection
//!
//! A rolling reload (`SIGHUP`) and every recycling trigger (request count, memory, age)
//! replace a worker the same way, one slot at a time: fork the replacement, wait for its
//! ready handshake (the old worker keeps serving meanwhile), then make the replacement the
//! slot's worker and drain the old one (`SIGTERM`: it finishes requests in flight, answers
//! them with `Connection: close`, and closes idle keep-alive connections only once they have
//! been quiet for a grace period, so no client request races the close). If the replacement
//! fails to start, the old worker simply stays.
//!
//! - Centralized mode: the master stops dispatching to the old worker the moment the
//!   replacement takes over; connections already sent are in the old worker's control
//!   socket, which it reads before it starts draining.
//! - Shared-socket mode: every worker of every generation accepts on the same listening
//!   socket, created once by the master before the first fork and inherited by each worker.
//!   There is one accept queue, so a retiring worker just stops accepting and the connections
//!   waiting in the queue go to the others: nothing is lost. (Per-worker `SO_REUSEPORT`
//!   sockets would each have their own queue, and closing a retiring worker's socket resets
//!   the connections waiting in it: the loss nginx and unicorn document for upgrades. The
//!   same holds for removing a worker with `SIGTTOU`, and for a crash-looping slot.)

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use slab::Slab;

use super::balancer::{Balancer, Candidate};
use super::board::{self, MasterFacts, PoolShape, SlotFacts, StatsBoard, WorkerBoard};
use super::ipc::{ToMaster, ToWorker, MAX_MESSAGE};
use super::limit::SharedLimits;
use super::metrics::{
    ExitReason, PoolMetrics, RestartCounts, RestartReason, WorkerMetrics, WorkerState,
};
use super::status::StatusServer;
use super::sys::{self, Forked, LoadBoard, Received};
use super::upgrade;
use super::worker::{self, WorkerSettings};
use super::{Architecture, BalancerKind, PoolConfig, PoolEvent, WorkerApp};
use crate::error::Error;

const SIGNALS: Token = Token(0);
const LISTENER: Token = Token(1);
const STATUS: Token = Token(2);
/// The ready pipe of a new master started by an upgrade.
const UPGRADE: Token = Token(3);
/// How long a new master started by an upgrade gets, beyond one ready timeout, to report
/// that all its workers are ready.
const UPGRADE_GRACE: Duration = Duration::from_secs(10);
const CONTROL_BASE: usize = 1 << 20;
const LINGER_BASE: usize = 2 << 20;
const STATUS_BASE: usize = 3 << 20;
/// Control sockets of replacements that have not reported ready yet (one per slot at most).
const NEXT_BASE: usize = 8 << 20;
/// Connections whose PROXY header the master waits for (sticky balancing behind a proxy).
const PEEK_BASE: usize = 10 << 20;
const PEEK_END: usize = 11 << 20;
/// Most connections waiting for their PROXY header at once; past it, the proxy's address
/// is the balancing key.
const MAX_PEEKING: usize = 4096;
/// How long the master waits for a PROXY header before balancing on the proxy's address.
const PEEK_WAIT: Duration = Duration::from_secs(1);
/// Bytes peeked for a PROXY header: a v1 line is at most 107; a v2 header with its
/// addresses 52, and proxies add few TLVs.
const PEEK_BYTES: usize = 512;
const NEXT_END: usize = 9 << 20;
/// Lines of the shared board: every process that may be alive at once (slots, replacements,
/// retiring workers) needs one.
const BOARD_LINES: usize = 4 * super::defaults::MAX_WORKERS;

/// Connections accepted per readiness event before other events get a turn.
const ACCEPT_BUDGET: usize = 256;
/// How long accepting pauses when the process is out of descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Rejected connections kept open to drain their request, so the 503 is not lost to a reset.
const MAX_LINGERING: usize = 1024;
/// How long a rejected connection may linger.
const LINGER_TIME: Duration = Duration::from_secs(2);

const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
Content-Length: 20\r\nRetry-After: 1\r\nConnection: close\r\n\r\nserver overloaded.\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopKind {
    /// SIGTERM or SIGINT: drain with a deadline, then kill.
    Term,
    /// SIGQUIT: drain, with a deadline only if configured.
    Quit,
}

struct Stop {
    kill_at: Option<Instant>,
    killed: bool,
}

struct Slot {
    id: u32,
    weight: u32,
    state: WorkerState,
    pid: Option<Pid>,
    control: Option<OwnedFd>,
    generation: u64,
    spawned_at: Instant,
    /// Last periodic report: connections open in the worker (shared-socket mode; centralized
    /// mode reads the live figure from the load board).
    open: u64,
    /// Connections sent to this process.
    dispatched: u64,
    /// Requests of this process (last report), and of the slot's earlier processes.
    requests: u64,
    requests_before: u64,
    restarts: u32,
    last_exit: Option<ExitReason>,
    deaths: VecDeque<Instant>,
    restart_at: Option<Instant>,
    /// The control socket was full at the last send; waiting for it to drain.
    blocked: bool,
    /// The current process's line on the shared board.
    line: usize,
    /// When the current process reported ready ([`sys::monotonic_ms`]); its heartbeat
    /// counts from there.
    ready_ms: u64,
    /// Recycling limits of the current process (jittered at each spawn).
    request_limit: Option<u64>,
    age_limit: Option<Duration>,
    /// Resident memory of the current process, read at its last report.
    rss: Option<u64>,
    /// A replacement starting for this slot.
    next: Option<Next>,
    /// Set when the master kills the current process, so its death is counted for that.
    kill_reason: Option<RestartReason>,
    /// Why the slot's current process was started (none for the first).
    last_restart: Option<RestartReason>,
    /// Recycling triggers wait until then (after a replacement failed to start).
    recycle_hold: Option<Instant>,
}

/// A replacement process, not yet ready.
struct Next {
    pid: Pid,
    control: OwnedFd,
    line: usize,
    generation: u64,
    spawned_at: Instant,
    reason: RestartReason,
    killed: bool,
}

/// A worker that was replaced or removed and is draining.
struct Retiring {
    id: u32,
    pid: Pid,
    /// Kept open (and unwatched) so the worker does not take its master for dead.
    _control: Option<OwnedFd>,
    line: usize,
    kill_at: Instant,
    killed: bool,
}

impl Slot {
    /// An empty slot at `index` (worker id `index + 1`) that publishes on board `line`.
    fn new(index: usize, weight: u32, line: usize, now: Instant) -> Slot {
        Slot {
            id: index as u32 + 1,
            weight,
            state: WorkerState::Restarting,
            pid: None,
            control: None,
            generation: 0,
            spawned_at: now,
            open: 0,
            dispatched: 0,
            requests: 0,
            requests_before: 0,
            restarts: 0,
            last_exit: None,
            deaths: VecDeque::new(),
            restart_at: None,
            blocked: false,
            line,
            ready_ms: 0,
            request_limit: None,
            age_limit: None,
            rss: None,
            next: None,
            kill_reason: None,
            last_restart: None,
            recycle_hold: None,
        }
    }

    /// Open connections: the worker's live figure from the board plus (in centralized mode)
    /// the connections sent that it has not picked up yet, so the count is exact even
    /// between the worker's loop turns.
    /// (`_slot` is unused: the current process has a board line of its own.)
    fn load(&self, board: Option<&LoadBoard>, _slot: usize) -> u64 {
        match board {
            Some(board) => {
                let (open, received) = board.load(self.line);
                u64::from(open) + u64::from((self.dispatched as u32).wrapping_sub(received))
            }
            None => self.open,
        }
    }

    fn can_take(&self) -> bool {
        self.state == WorkerState::Ready && self.control.is_some() && !self.blocked
    }
}

struct Queued {
    stream: TcpStream,
    peer: SocketAddr,
    /// The address the balancer keys on: the peer, or the client its PROXY header names.
    client: std::net::IpAddr,
    accepted_at: SystemTime,
    since: Instant,
}

/// A connection from a trusted proxy whose PROXY header has not arrived yet.
struct Peeking {
    conn: Queued,
    until: Instant,
}

struct Lingering {
    stream: TcpStream,
    until: Instant,
}

struct Master<'a> {
    cfg: &'a PoolConfig,
    app: &'a mut WorkerApp,
    poll: Poll,
    signals: SignalFd,
    old_mask: SigSet,
    listener: Option<TcpListener>,
    /// Shared-socket mode: the one listening socket every worker inherits.
    shared_listener: Option<std::net::TcpListener>,
    /// The workers' server configuration (its certificates are re-read on `SIGHUP`).
    server_config: crate::ServerConfig,
    status: Option<StatusServer>,
    slots: Vec<Slot>,
    queue: VecDeque<Queued>,
    lingering: Slab<Lingering>,
    peeking: Slab<Peeking>,
    balancer: Balancer,
    /// The load board (always mapped: every mode publishes load and heartbeats there).
    board: Option<Rc<LoadBoard>>,
    /// Board lines not in use.
    free_lines: Vec<usize>,
    retiring: Vec<Retiring>,
    /// The listening sockets, by descriptor number, for an upgrade to hand over.
    handover: Vec<(&'static str, std::os::fd::RawFd)>,
    /// Set when an upgrade started this master: where to say it is ready.
    ready_pipe: Option<OwnedFd>,
    /// Whether an upgrade started this master.
    upgraded: bool,
    /// The application's hook for pool events.
    on_event: Option<Box<dyn FnMut(PoolEvent)>>,
    /// [`PoolEvent::Ready`] was sent.
    announced_ready: bool,
    /// A rolling reload is under way ([`PoolEvent::Reloaded`] not sent yet).
    reloading: bool,
    /// When the next [`PoolEvent::Heartbeat`] is due.
    next_heartbeat: Option<Instant>,
    /// A new master being started by `SIGUSR2`, and when it must be ready by.
    upgrade: Option<(upgrade::Upgrade, Instant)>,
    /// New masters of failed upgrades, stopped, to be reaped.
    failed_upgrades: Vec<Pid>,
    /// Slots waiting for a replacement, served one at a time.
    replace_queue: VecDeque<(usize, RestartReason)>,
    restart_counts: RestartCounts,
    rng: u64,
    page_size: u64,
    /// What `/metrics`, `/status` and `/ready` show, in memory every worker reads.
    stats: Option<Rc<StatsBoard>>,
    /// The pool-wide rate-limit table, when a rate limit is configured.
    rate_limits: Option<Rc<SharedLimits>>,
    candidates: Vec<Candidate>,
    stop: Option<Stop>,
    dispatched: u64,
    rejected: u64,
    next_generation: u64,
    accept_again: bool,
    accept_paused_until: Option<Instant>,
    pid: Pid,
    started: Instant,
}

/// Reaps `pid` if it has exited: `Some(how)` then (`Some(None)` if it is already gone).
/// The client a PROXY header at the start of `stream`'s input names, without consuming it:
/// `None` while more bytes are needed, `Some(None)` when there is no better key than the
/// peer (not a PROXY header, `LOCAL`, the peer closed, an error).
fn peek_client(stream: &TcpStream) -> Option<Option<std::net::IpAddr>> {
    let mut buf = [0u8; PEEK_BYTES];
    match stream.peek(&mut buf) {
        Ok(0) => Some(None),
        Ok(n) => match crate::proxy::parse(&buf[..n]) {
            crate::proxy::Parsed::Header { source, .. } => Some(source.map(|s| s.ip())),
            crate::proxy::Parsed::Incomplete if n < PEEK_BYTES => None,
            _ => Some(None),
        },
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
        Err(_) => Some(None),
    }
}

fn try_reap(pid: Pid) -> Option<Option<ExitReason>> {
    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => Some(Some(ExitReason::Code(code))),
        Ok(WaitStatus::Signaled(_, sig, _)) => Some(Some(ExitReason::Signal(sig as i32))),
        Ok(_) => None,
        Err(nix::errno::Errno::ECHILD) => Some(None),
        Err(e) => {
            tracing::error!(error = %e, "waitpid");
            None
        }
    }
}

/// Resident memory of process `pid`, from `/proc/PID/statm` (its second field, in pages).
fn rss_bytes(pid: Pid, page_size: u64) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{}/statm", pid.as_raw())).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages.saturating_mul(page_size))
}

/// Runs the master until the pool is stopped.
pub(crate) fn run(
    cfg: PoolConfig,
    listeners: Vec<std::net::TcpListener>,
    status: Option<std::net::TcpListener>,
    ready_pipe: Option<OwnedFd>,
    on_event: Option<Box<dyn FnMut(PoolEvent)>>,
    mut app: WorkerApp,
) -> Result<PoolMetrics, Error> {
    // Fail early and clearly; `sys::fork` checks again before every fork.
    let threads = sys::thread_count().map_err(|e| Error::io("counting the master's threads", e))?;
    if threads != 1 {
        return Err(Error::Pool(format!(
            "the master process has {threads} threads; the worker pool forks and must be \
             started before any thread is created"
        )));
    }
    let mut blocked = SigSet::empty();
    for sig in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGHUP,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
        Signal::SIGUSR2,
    ] {
        blocked.add(sig);
    }
    let mut old_mask = SigSet::empty();
    signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), Some(&mut old_mask))
        .map_err(|e| Error::io("blocking signals in the master", e.into()))?;
    let result = (|| {
        let signals =
            SignalFd::with_flags(&blocked, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
                .map_err(|e| Error::io("creating the master's signalfd", e.into()))?;
        let mut master = Master::new(&cfg, &mut app, signals, old_mask, listeners, status)?;
        master.upgraded = ready_pipe.is_some();
        master.ready_pipe = ready_pipe;
        master.on_event = on_event;
        master.run()
    })();
    // Back to the caller's mask (signals that arrived during the run were all read).
    let _ = signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
    result
}

impl<'a> Master<'a> {
    fn new(
        cfg: &'a PoolConfig,
        app: &'a mut WorkerApp,
        signals: SignalFd,
        old_mask: SigSet,
        listeners: Vec<std::net::TcpListener>,
        status: Option<std::net::TcpListener>,
    ) -> Result<Master<'a>, Error> {
        let io_err = |context| move |e| Error::io(context, e);
        let poll = Poll::new().map_err(io_err("creating the master's epoll"))?;
        poll.registry()
            .register(
                &mut SourceFd(&signals.as_fd().as_raw_fd()),
                SIGNALS,
                Interest::READABLE,
            )
            .map_err(io_err("watching the signalfd"))?;
        let mut listener = None;
        let mut shared_listener = None;
        let mut handover: Vec<(&'static str, std::os::fd::RawFd)> = listeners
            .iter()
            .map(|l| ("listen", l.as_raw_fd()))
            .take(1)
            .collect();
        if let Some(l) = &status {
            handover.push(("status", l.as_raw_fd()));
        }
        match cfg.architecture {
            Architecture::Centralized => {
                for l in listeners {
                    l.set_nonblocking(true)
                        .map_err(io_err("making the listener non-blocking"))?;
                    let mut l = TcpListener::from_std(l);
                    poll.registry()
                        .register(&mut l, LISTENER, Interest::READABLE)
                        .map_err(io_err("watching the listener"))?;
                    listener = Some(l);
                }
            }
            _ => shared_listener = listeners.into_iter().next(),
        }
        let status = match status {
            Some(l) => Some(
                StatusServer::new(l, poll.registry(), STATUS, STATUS_BASE)
                    .map_err(io_err("starting the status endpoint"))?,
            ),
            None => None,
        };
        let board = Some(Rc::new(
            LoadBoard::new(BOARD_LINES).map_err(io_err("mapping the shared load board"))?,
        ));
        let stats = match StatsBoard::new(cfg.workers) {
            Ok(b) => Some(Rc::new(b)),
            Err(e) => {
                tracing::warn!(error = %e, "no shared stats board; workers answer /metrics for themselves");
                None
            }
        };
        // One rate limit for the whole pool: every worker spends from the same table.
        let rate_limits = match &cfg.server_config.rate_limit {
            Some(limit) => Some(Rc::new(
                SharedLimits::new(limit).map_err(io_err("mapping the shared rate-limit table"))?,
            )),
            None => None,
        };
        let now = Instant::now();
        let slots = (0..cfg.workers)
            .map(|i| Slot::new(i, cfg.weights.get(i).copied().unwrap_or(1), i, now))
            .collect();
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (u64::from(std::process::id()) << 32);
        Ok(Master {
            cfg,
            app,
            poll,
            signals,
            old_mask,
            listener,
            shared_listener,
            server_config: cfg.server_config.clone(),
            handover,
            ready_pipe: None,
            upgraded: false,
            on_event: None,
            announced_ready: false,
            reloading: false,
            next_heartbeat: cfg.heartbeat.map(|_| Instant::now()),
            upgrade: None,
            failed_upgrades: Vec::new(),
            status,
            slots,
            queue: VecDeque::new(),
            lingering: Slab::new(),
            peeking: Slab::new(),
            balancer: Balancer::new(&cfg.balancer),
            board,
            free_lines: (cfg.workers..BOARD_LINES).rev().collect(),
            retiring: Vec::new(),
            replace_queue: VecDeque::new(),
            restart_counts: RestartCounts::default(),
            rng: seed | 1,
            page_size: sys::page_size(),
            stats,
            rate_limits,
            candidates: Vec::with_capacity(cfg.workers),
            stop: None,
            dispatched: 0,
            rejected: 0,
            next_generation: 1,
            accept_again: false,
            accept_paused_until: None,
            pid: nix::unistd::getpid(),
            started: now,
        })
    }

    fn run(&mut self) -> Result<PoolMetrics, Error> {
        for i in 0..self.slots.len() {
            self.spawn(i)?;
        }
        let mut events = Events::with_capacity(256);
        loop {
            if self.stop.is_some()
                && self.retiring.is_empty()
                && self
                    .slots
                    .iter()
                    .all(|s| s.pid.is_none() && s.next.is_none())
            {
                break;
            }
            if self.stop.is_none() && self.slots.iter().all(|s| s.state == WorkerState::Failed) {
                self.close_listeners();
                return Err(Error::Pool(
                    "every worker slot tripped its crash-loop breaker; the pool cannot serve \
                     (see the workers' errors above)"
                        .into(),
                ));
            }
            let timeout = self.next_timeout();
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("epoll_wait in the master", e)),
            }
            for event in events.iter() {
                match event.token() {
                    SIGNALS => self.on_signals(),
                    LISTENER => self.accept(),
                    UPGRADE => self.on_upgrade_pipe(),
                    STATUS => {
                        if let Some(status) = &mut self.status {
                            status.accept(self.poll.registry());
                        }
                    }
                    Token(t) if (CONTROL_BASE..LINGER_BASE).contains(&t) => {
                        let i = t - CONTROL_BASE;
                        if event.is_writable() {
                            self.unblock(i);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read_control(i);
                        }
                    }
                    Token(t) if (LINGER_BASE..STATUS_BASE).contains(&t) => {
                        self.linger(t - LINGER_BASE)
                    }
                    Token(t) if (NEXT_BASE..NEXT_END).contains(&t) => self.read_next(t - NEXT_BASE),
                    Token(t) if (PEEK_BASE..PEEK_END).contains(&t) => self.peeked(t - PEEK_BASE),
                    token => self.status_ready(token),
                }
            }
            if self.accept_again {
                self.accept_again = false;
                self.accept();
            }
            self.on_timers()?;
            self.pool_events(Instant::now());
            self.dispatch();
            self.publish_stats();
        }
        tracing::info!("all workers stopped; master exiting");
        Ok(self.metrics())
    }

    // ----- workers -------------------------------------------------------------------------

    /// Forks a worker process for slot `i` that publishes on board line `line`; `None` if
    /// the fork failed (logged).
    fn fork_worker(&mut self, i: usize, line: usize) -> Result<Option<(Pid, OwnedFd, u64)>, Error> {
        let (master_end, worker_end) = sys::seqpacket_pair()
            .map_err(|e| Error::io("creating a worker's control socket", e))?;
        let _ = io::stdout().flush();
        let generation = self.next_generation;
        self.next_generation += 1;
        // The new process starts from zero; a dead predecessor's figures must not linger.
        if let Some(board) = &self.board {
            board.reset(line);
        }
        match sys::fork() {
            Ok(Forked::Child) => {
                drop(master_end);
                self.become_worker(i, worker_end, line)
            }
            Ok(Forked::Parent(pid)) => {
                drop(worker_end);
                Ok(Some((pid, master_end, generation)))
            }
            Err(e @ Error::Pool(_)) => Err(e),
            Err(e) => {
                // fork failed (EAGAIN: process limit, ENOMEM).
                tracing::error!(worker = self.slots[i].id, error = %e, "cannot start a worker");
                Ok(None)
            }
        }
    }

    fn spawn(&mut self, i: usize) -> Result<(), Error> {
        if let Some(stats) = &self.stats {
            stats.clear_server(i);
        }
        let line = self.slots[i].line;
        match self.fork_worker(i, line)? {
            Some((pid, master_end, generation)) => {
                let token = Token(CONTROL_BASE + i);
                if let Err(e) = self.poll.registry().register(
                    &mut SourceFd(&master_end.as_raw_fd()),
                    token,
                    Interest::READABLE,
                ) {
                    // Without its channel the worker is unusable: end it, restart later.
                    tracing::error!(error = %e, "cannot watch a worker's control socket");
                    let _ = signal::kill(pid, Signal::SIGKILL);
                }
                let now = Instant::now();
                let slot = &mut self.slots[i];
                slot.pid = Some(pid);
                slot.control = Some(master_end);
                slot.generation = generation;
                slot.spawned_at = now;
                slot.state = WorkerState::Starting;
                slot.restart_at = None;
                slot.open = 0;
                slot.dispatched = 0;
                slot.requests = 0;
                slot.blocked = false;
                slot.rss = None;
                slot.kill_reason = None;
                tracing::debug!(worker = slot.id, pid = pid.as_raw(), "worker forked");
                self.set_limits(i);
                Ok(())
            }
            None => {
                // Counted as a death: the restart backoff and the breaker apply.
                self.on_death(i, None);
                Ok(())
            }
        }
    }

    /// Draws the recycling limits of slot `i`'s new process: `max_requests` plus up to
    /// `max_requests_jitter`, and `max_age` minus up to a tenth, so workers started together
    /// do not all recycle at once.
    fn set_limits(&mut self, i: usize) {
        let r1 = self.random();
        let r2 = self.random();
        let cfg = self.cfg;
        let slot = &mut self.slots[i];
        slot.request_limit = cfg
            .max_requests
            .map(|n| n.saturating_add(r1 % cfg.max_requests_jitter.saturating_add(1)));
        slot.age_limit = cfg.max_age.map(|age| {
            let tenth = (age.as_millis() / 10) as u64;
            age.saturating_sub(Duration::from_millis(r2 % tenth.saturating_add(1)))
        });
    }

    /// xorshift64: jitter only, no need for a better generator.
    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// In the child: drop every master resource, run the worker, exit. Never returns.
    fn become_worker(&mut self, i: usize, control: OwnedFd, line: usize) -> ! {
        // Descriptors that would keep the master's sockets alive or let this process touch
        // them: other workers' channels, queued clients, the listeners of other slots.
        self.listener = None;
        self.status = None;
        self.queue.clear();
        self.lingering.clear();
        self.peeking.clear();
        for slot in &mut self.slots {
            slot.control = None;
            slot.next = None;
        }
        self.retiring.clear();
        let listener = self.shared_listener.take();
        // The epoll fd and the signalfd stay open (close-on-exec, never read here); closing
        // them would need their owners, which live on in this frame until exit.
        let settings = WorkerSettings {
            id: self.slots[i].id,
            master: self.pid,
            control,
            listener,
            server_config: self.server_config.clone(),
            term_deadline: self.cfg.shutdown_timeout,
            quit_deadline: self.cfg.quit_timeout,
            board: self.board.as_ref().map(|b| (Rc::clone(b), line)),
            stats: self.stats.as_ref().map(|b| WorkerBoard {
                board: Rc::clone(b),
                slot: i,
                shape: Rc::new(self.shape()),
            }),
            rate_limits: self
                .rate_limits
                .as_ref()
                .map(|t| Rc::clone(t) as Rc<dyn crate::ratelimit::SharedGcra>),
            signal_mask: self.old_mask,
            app: self.app,
        };
        let code = catch_unwind(AssertUnwindSafe(|| worker::run(settings))).unwrap_or(101);
        let _ = io::stdout().flush();
        std::process::exit(code)
    }

    fn on_signals(&mut self) {
        loop {
            match self.signals.read_signal() {
                Ok(Some(info)) => match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGCHLD) => self.reap(),
                    Ok(Signal::SIGTERM) => self.stop_on_signal(StopKind::Term, "SIGTERM"),
                    Ok(Signal::SIGINT) => self.stop_on_signal(StopKind::Term, "SIGINT"),
                    Ok(Signal::SIGQUIT) => self.stop_on_signal(StopKind::Quit, "SIGQUIT"),
                    Ok(Signal::SIGHUP) => self.reload(),
                    Ok(Signal::SIGTTIN) => self.add_worker(),
                    Ok(Signal::SIGTTOU) => self.remove_worker(),
                    Ok(Signal::SIGUSR2) => self.start_upgrade(),
                    _ => {}
                },
                Ok(None) => return,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    tracing::error!(error = %e, "reading the signalfd");
                    return;
                }
            }
        }
    }

    /// Reaps exited workers (only ours: other children of the process are left alone).
    fn reap(&mut self) {
        for i in 0..self.slots.len() {
            if let Some(pid) = self.slots[i].pid {
                if let Some(reason) = try_reap(pid) {
                    self.on_death(i, reason);
                }
            }
            if let Some(pid) = self.slots[i].next.as_ref().map(|n| n.pid) {
                if let Some(reason) = try_reap(pid) {
                    self.on_next_death(i, reason);
                }
            }
        }
        if let Some(pid) = self.upgrade.as_ref().map(|(u, _)| u.pid) {
            if let Some(reason) = try_reap(pid) {
                let why = reason.map_or("gone".to_string(), |r| r.to_string());
                self.fail_upgrade(&format!("the new master exited ({why})"));
            }
        }
        self.failed_upgrades.retain(|&pid| try_reap(pid).is_none());
        let mut k = 0;
        while k < self.retiring.len() {
            let r = &self.retiring[k];
            match try_reap(r.pid) {
                Some(reason) => {
                    let why = reason.map_or("gone".to_string(), |r| r.to_string());
                    tracing::info!(
                        worker = r.id,
                        pid = r.pid.as_raw(),
                        "retired worker exited ({why})"
                    );
                    let r = self.retiring.swap_remove(k);
                    self.free_lines.push(r.line);
                }
                None => k += 1,
            }
        }
    }

    fn on_death(&mut self, i: usize, reason: Option<ExitReason>) {
        let now = Instant::now();
        self.replace_queue.retain(|&(q, _)| q != i);
        if let Some(fd) = self.slots[i].control.take() {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&fd.as_raw_fd()));
        }
        let slot = &mut self.slots[i];
        let pid = slot.pid.take().map_or(0, |p| p.as_raw());
        slot.requests_before += slot.requests;
        slot.requests = 0;
        slot.open = 0;
        slot.dispatched = 0;
        slot.blocked = false;
        if reason.is_some() {
            slot.last_exit = reason;
        }
        let why = reason.map_or("could not start".to_string(), |r| r.to_string());
        if self.stop.is_some() {
            slot.state = WorkerState::Stopped;
            tracing::info!(worker = slot.id, pid, "worker exited ({why})");
            return;
        }
        let cause = slot.kill_reason.take().unwrap_or(RestartReason::Crash);
        if reason.is_some() || pid != 0 {
            self.restart_counts.add(cause);
            slot.last_restart = Some(cause);
        }
        slot.deaths.push_back(now);
        while slot
            .deaths
            .front()
            .is_some_and(|&t| now.duration_since(t) > self.cfg.crash_window)
        {
            slot.deaths.pop_front();
        }
        let recent = slot.deaths.len() as u32;
        if recent >= self.cfg.crash_limit {
            slot.state = WorkerState::Failed;
            slot.restart_at = None;
            tracing::error!(
                worker = slot.id,
                pid,
                "worker exited ({why}); it died {recent} times within {:?}, so its slot stops \
                 restarting (crash-loop breaker); the other workers keep serving",
                self.cfg.crash_window
            );
            // In shared-socket mode its share of the accept queue goes to the others: there
            // is one queue.
            return;
        }
        let factor = 1u32
            .checked_shl(recent.saturating_sub(1))
            .unwrap_or(u32::MAX);
        let delay = self
            .cfg
            .restart_delay
            .checked_mul(factor)
            .unwrap_or(self.cfg.restart_delay_max)
            .min(self.cfg.restart_delay_max);
        slot.state = WorkerState::Restarting;
        slot.restart_at = Some(now + delay);
        tracing::warn!(
            worker = slot.id,
            pid,
            "worker exited ({why}); restarting in {delay:?}"
        );
    }

    fn read_control(&mut self, i: usize) {
        let mut buf = [0u8; MAX_MESSAGE];
        loop {
            let Some(fd) = &self.slots[i].control else {
                return;
            };
            match sys::recv_message(fd.as_fd(), &mut buf) {
                Ok(Received::Message { len, .. }) => match ToMaster::decode(&buf[..len]) {
                    Ok(msg) => self.on_report(i, msg),
                    Err(_) => tracing::error!(worker = self.slots[i].id, "malformed report"),
                },
                Ok(Received::Closed) => {
                    // The worker is exiting; SIGCHLD follows. Stop sending it connections.
                    if let Some(fd) = self.slots[i].control.take() {
                        let _ = self
                            .poll
                            .registry()
                            .deregister(&mut SourceFd(&fd.as_raw_fd()));
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!(worker = self.slots[i].id, error = %e, "control channel");
                    return;
                }
            }
        }
    }

    fn on_report(&mut self, i: usize, msg: ToMaster) {
        let stopping = self.stop.is_some();
        let slot = &mut self.slots[i];
        match msg {
            ToMaster::Ready { pid } => {
                if slot.state == WorkerState::Starting {
                    slot.state = WorkerState::Ready;
                    slot.ready_ms = sys::monotonic_ms();
                    tracing::info!(worker = slot.id, pid, "worker ready");
                }
                // Ready once every slot is (a slot whose breaker tripped does not hold it up).
                if !self.announced_ready
                    && !stopping
                    && self.slots.iter().any(|s| s.state == WorkerState::Ready)
                    && self
                        .slots
                        .iter()
                        .all(|s| matches!(s.state, WorkerState::Ready | WorkerState::Failed))
                {
                    self.announced_ready = true;
                    let upgraded = self.upgraded;
                    self.emit(PoolEvent::Ready { upgraded });
                }
                if self.ready_pipe.is_some()
                    && !stopping
                    && self.slots.iter().all(|s| s.state == WorkerState::Ready)
                {
                    if let Some(pipe) = self.ready_pipe.take() {
                        tracing::info!("every worker ready; telling the previous master");
                        upgrade::report_ready(pipe);
                    }
                }
                let slot = &mut self.slots[i];
                if stopping {
                    // It started while the pool was stopping: it missed the signal.
                    if let Some(p) = slot.pid {
                        let _ = signal::kill(p, Signal::SIGTERM);
                    }
                }
            }
            ToMaster::Stats { open, requests, .. } => {
                slot.open = u64::from(open);
                slot.requests = requests;
                slot.rss = slot.pid.and_then(|p| rss_bytes(p, self.page_size));
                self.check_recycling(i);
            }
            ToMaster::Stopping => {
                if matches!(slot.state, WorkerState::Ready | WorkerState::Starting) {
                    slot.state = WorkerState::Stopping;
                }
            }
        }
    }

    // ----- replacing workers ---------------------------------------------------------------

    /// Queues a replacement of slot `i` when one of its recycling limits is reached.
    fn check_recycling(&mut self, i: usize) {
        let now = Instant::now();
        let slot = &self.slots[i];
        if slot.state != WorkerState::Ready || slot.recycle_hold.is_some_and(|t| now < t) {
            return;
        }
        let reason = if slot.request_limit.is_some_and(|n| slot.requests >= n) {
            RestartReason::MaxRequests
        } else if self
            .cfg
            .max_rss
            .is_some_and(|max| slot.rss.is_some_and(|rss| rss > max))
        {
            RestartReason::MaxRss
        } else if slot
            .age_limit
            .is_some_and(|age| now >= slot.spawned_at + age)
        {
            RestartReason::MaxAge
        } else {
            return;
        };
        self.request_replacement(i, reason);
    }

    /// Asks for slot `i`'s worker to be replaced (once: a slot already queued or being
    /// replaced is left alone).
    fn request_replacement(&mut self, i: usize, reason: RestartReason) {
        if self.stop.is_some()
            || self.slots[i].next.is_some()
            || self.replace_queue.iter().any(|&(q, _)| q == i)
        {
            return;
        }
        let slot = &self.slots[i];
        match reason {
            RestartReason::MaxRequests => tracing::info!(
                worker = slot.id,
                requests = slot.requests,
                "worker served its share of requests; replacing it"
            ),
            RestartReason::MaxRss => tracing::info!(
                worker = slot.id,
                rss_bytes = slot.rss.unwrap_or(0),
                "worker's memory is over max_rss; replacing it"
            ),
            RestartReason::MaxAge => {
                tracing::info!(worker = slot.id, "worker reached max_age; replacing it")
            }
            _ => {}
        }
        self.replace_queue.push_back((i, reason));
        self.start_next_replacement();
    }

    /// Starts the next queued replacement, unless one is in progress: one slot at a time,
    /// so capacity never drops by more than the worker being drained.
    fn start_next_replacement(&mut self) {
        if self.stop.is_some() || self.slots.iter().any(|s| s.next.is_some()) {
            return;
        }
        while let Some((i, reason)) = self.replace_queue.pop_front() {
            let Some(slot) = self.slots.get(i) else {
                continue;
            };
            if slot.state != WorkerState::Ready || slot.pid.is_none() {
                continue; // dead or draining already: its restart brings a new process
            }
            let Some(line) = self.free_lines.pop() else {
                tracing::error!(
                    worker = slot.id,
                    "too many worker processes alive to start a replacement; the worker stays"
                );
                continue;
            };
            match self.fork_worker(i, line) {
                Ok(Some((pid, control, generation))) => {
                    if let Err(e) = self.poll.registry().register(
                        &mut SourceFd(&control.as_raw_fd()),
                        Token(NEXT_BASE + i),
                        Interest::READABLE,
                    ) {
                        tracing::error!(error = %e, "cannot watch a worker's control socket");
                        let _ = signal::kill(pid, Signal::SIGKILL);
                    }
                    let slot = &mut self.slots[i];
                    tracing::info!(
                        worker = slot.id,
                        pid = pid.as_raw(),
                        reason = %reason,
                        "starting a replacement worker"
                    );
                    slot.next = Some(Next {
                        pid,
                        control,
                        line,
                        generation,
                        spawned_at: Instant::now(),
                        reason,
                        killed: false,
                    });
                    return;
                }
                Ok(None) => {
                    self.free_lines.push(line);
                    self.slots[i].recycle_hold = Some(Instant::now() + self.cfg.restart_delay_max);
                }
                Err(e) => {
                    // Only when the master has become multi-threaded: no fork at all.
                    self.free_lines.push(line);
                    tracing::error!(error = %e, "cannot start a replacement worker");
                    self.replace_queue.clear();
                    return;
                }
            }
        }
    }

    /// Reads the control socket of slot `i`'s replacement: its ready report makes it the
    /// slot's worker.
    fn read_next(&mut self, i: usize) {
        let mut buf = [0u8; MAX_MESSAGE];
        loop {
            let Some(next) = self.slots.get(i).and_then(|s| s.next.as_ref()) else {
                return;
            };
            match sys::recv_message(next.control.as_fd(), &mut buf) {
                Ok(Received::Message { len, .. }) => {
                    if let Ok(ToMaster::Ready { .. }) = ToMaster::decode(&buf[..len]) {
                        self.promote(i);
                        return;
                    }
                }
                Ok(Received::Closed) => {
                    // It is exiting; SIGCHLD follows.
                    let _ = self
                        .poll
                        .registry()
                        .deregister(&mut SourceFd(&next.control.as_raw_fd()));
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => return,
            }
        }
    }

    /// Slot `i`'s replacement is ready: it becomes the slot's worker, and the old worker
    /// drains.
    fn promote(&mut self, i: usize) {
        let Some(next) = self.slots[i].next.take() else {
            return;
        };
        let registry = self.poll.registry();
        let _ = registry.deregister(&mut SourceFd(&next.control.as_raw_fd()));
        if let Err(e) = registry.register(
            &mut SourceFd(&next.control.as_raw_fd()),
            Token(CONTROL_BASE + i),
            Interest::READABLE,
        ) {
            tracing::error!(error = %e, "cannot watch a worker's control socket");
        }
        let now = Instant::now();
        let old_pid = self.slots[i].pid.take();
        let old_control = self.slots[i].control.take();
        if let Some(fd) = &old_control {
            let _ = registry.deregister(&mut SourceFd(&fd.as_raw_fd()));
        }
        let slot = &mut self.slots[i];
        let old_line = std::mem::replace(&mut slot.line, next.line);
        if let Some(pid) = old_pid {
            // Drain: requests in flight finish, then it exits; killed if it outlives the
            // shutdown timeout.
            let _ = signal::kill(pid, Signal::SIGTERM);
            self.retiring.push(Retiring {
                id: slot.id,
                pid,
                _control: old_control,
                line: old_line,
                kill_at: now + self.cfg.shutdown_timeout + super::defaults::KILL_GRACE,
                killed: false,
            });
        } else {
            self.free_lines.push(old_line);
        }
        slot.requests_before += slot.requests;
        slot.requests = 0;
        slot.pid = Some(next.pid);
        slot.control = Some(next.control);
        slot.generation = next.generation;
        slot.spawned_at = next.spawned_at;
        slot.state = WorkerState::Ready;
        slot.ready_ms = sys::monotonic_ms();
        slot.restart_at = None;
        slot.open = 0;
        slot.dispatched = 0;
        slot.blocked = false;
        slot.rss = None;
        slot.kill_reason = None;
        slot.restarts += 1;
        slot.last_restart = Some(next.reason);
        self.restart_counts.add(next.reason);
        tracing::info!(
            worker = slot.id,
            pid = next.pid.as_raw(),
            old_pid = old_pid.map_or(0, |p| p.as_raw()),
            reason = %next.reason,
            "replacement worker ready; the old one drains"
        );
        self.set_limits(i);
        self.start_next_replacement();
    }

    /// Slot `i`'s replacement died before it was ready: the old worker stays.
    fn on_next_death(&mut self, i: usize, reason: Option<ExitReason>) {
        let Some(next) = self.slots[i].next.take() else {
            return;
        };
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&next.control.as_raw_fd()));
        self.free_lines.push(next.line);
        let why = reason.map_or("gone".to_string(), |r| r.to_string());
        if self.stop.is_none() {
            tracing::error!(
                worker = self.slots[i].id,
                pid = next.pid.as_raw(),
                "the replacement worker exited before it was ready ({why}); the current \
                 worker keeps serving"
            );
            self.slots[i].recycle_hold = Some(Instant::now() + self.cfg.restart_delay_max);
        }
        self.start_next_replacement();
    }

    /// `SIGHUP`: re-reads the TLS certificates, then replaces every worker, one at a time.
    fn reload(&mut self) {
        if self.stop.is_some() {
            return;
        }
        if let Some(tls) = &self.server_config.tls {
            match tls.reload() {
                Ok(tls) => {
                    self.server_config.tls = Some(tls);
                    tracing::info!("SIGHUP: TLS certificates re-read");
                }
                Err(e) => tracing::error!(
                    error = %e,
                    "SIGHUP: cannot re-read the TLS certificates; new workers keep the old ones"
                ),
            }
        }
        tracing::info!(
            workers = self.slots.len(),
            "SIGHUP: rolling reload, one worker at a time"
        );
        self.reloading = true;
        self.emit(PoolEvent::Reloading);
        for i in 0..self.slots.len() {
            // A newer reload supersedes a replacement that is starting.
            if let Some(next) = &mut self.slots[i].next {
                next.reason = RestartReason::Reload;
            }
            if !self.replace_queue.iter().any(|&(q, _)| q == i) {
                self.replace_queue.push_back((i, RestartReason::Reload));
            }
        }
        self.start_next_replacement();
    }

    /// `SIGUSR2`: starts a new master from the binary on disk with the listening sockets;
    /// this generation retires once it reports ready (see [`upgrade`]).
    fn start_upgrade(&mut self) {
        if self.stop.is_some() {
            return;
        }
        if let Some((u, _)) = &self.upgrade {
            tracing::warn!(
                pid = u.pid.as_raw(),
                "SIGUSR2: an upgrade is already under way"
            );
            return;
        }
        match upgrade::start_new_master(&self.handover, &self.old_mask) {
            Ok(u) => {
                if let Err(e) = self.poll.registry().register(
                    &mut SourceFd(&u.ready.as_raw_fd()),
                    UPGRADE,
                    Interest::READABLE,
                ) {
                    tracing::error!(error = %e, "SIGUSR2: cannot watch the new master; stopping it");
                    let _ = signal::kill(u.pid, Signal::SIGTERM);
                    self.failed_upgrades.push(u.pid);
                    return;
                }
                let deadline = Instant::now() + self.cfg.ready_timeout + UPGRADE_GRACE;
                self.emit(PoolEvent::Upgrading {
                    pid: u.pid.as_raw() as u32,
                });
                tracing::info!(
                    pid = u.pid.as_raw(),
                    "SIGUSR2: upgrading: new master started with the listening sockets; this \
                     one serves until it is ready"
                );
                self.upgrade = Some((u, deadline));
            }
            Err(e) => tracing::error!(
                error = %e,
                "SIGUSR2: upgrade failed: cannot start a new master; this one keeps serving"
            ),
        }
    }

    fn on_upgrade_pipe(&mut self) {
        let heard = match &self.upgrade {
            Some((u, _)) => u.hear(),
            None => return,
        };
        match heard {
            upgrade::Heard::Nothing => {}
            upgrade::Heard::Gone => self.fail_upgrade("the new master exited before it was ready"),
            upgrade::Heard::Ready => {
                let Some((u, _)) = self.upgrade.take() else {
                    return;
                };
                let _ = self
                    .poll
                    .registry()
                    .deregister(&mut SourceFd(&u.ready.as_raw_fd()));
                tracing::info!(
                    pid = u.pid.as_raw(),
                    "upgrade: the new master is ready; this generation drains and exits"
                );
                // The new master answers the status endpoint from now on.
                self.status = None;
                self.emit(PoolEvent::UpgradeDone {
                    pid: u.pid.as_raw() as u32,
                });
                self.begin_stop(StopKind::Term, "upgrade");
            }
        }
    }

    /// The upgrade failed: this generation keeps serving; the new master, if alive, stops.
    fn fail_upgrade(&mut self, why: &str) {
        let Some((u, _)) = self.upgrade.take() else {
            return;
        };
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&u.ready.as_raw_fd()));
        tracing::error!(
            pid = u.pid.as_raw(),
            "upgrade failed: {why}; this master and its workers keep serving"
        );
        self.emit(PoolEvent::UpgradeFailed);
        if try_reap(u.pid).is_none() {
            let _ = signal::kill(u.pid, Signal::SIGTERM);
            self.failed_upgrades.push(u.pid);
        }
    }

    /// `SIGTTIN`: one more worker slot.
    fn add_worker(&mut self) {
        if self.stop.is_some() {
            return;
        }
        if self.slots.len() >= super::defaults::MAX_WORKERS {
            tracing::warn!("SIGTTIN: already at the maximum number of workers");
            return;
        }
        let Some(line) = self.free_lines.pop() else {
            tracing::warn!("SIGTTIN: too many worker processes alive; try again later");
            return;
        };
        let i = self.slots.len();
        let now = Instant::now();
        self.slots.push(Slot::new(i, 1, line, now));
        tracing::info!(worker = i + 1, workers = i + 1, "SIGTTIN: adding a worker");
        if let Err(e) = self.spawn(i) {
            tracing::error!(error = %e, "SIGTTIN: cannot start a worker");
        }
    }

    /// `SIGTTOU`: one worker slot fewer; its worker drains (the last slot stays).
    fn remove_worker(&mut self) {
        if self.stop.is_some() {
            return;
        }
        if self.slots.len() <= 1 {
            tracing::warn!("SIGTTOU: one worker left; keeping it");
            return;
        }
        let Some(mut slot) = self.slots.pop() else {
            return;
        };
        let i = self.slots.len();
        self.replace_queue.retain(|&(q, _)| q != i);
        let now = Instant::now();
        let kill_at = now + self.cfg.shutdown_timeout + super::defaults::KILL_GRACE;
        if let Some(next) = slot.next.take() {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&next.control.as_raw_fd()));
            let _ = signal::kill(next.pid, Signal::SIGTERM);
            self.retiring.push(Retiring {
                id: slot.id,
                pid: next.pid,
                _control: Some(next.control),
                line: next.line,
                kill_at,
                killed: false,
            });
        }
        match slot.pid {
            Some(pid) => {
                if let Some(fd) = &slot.control {
                    let _ = self
                        .poll
                        .registry()
                        .deregister(&mut SourceFd(&fd.as_raw_fd()));
                }
                let _ = signal::kill(pid, Signal::SIGTERM);
                self.retiring.push(Retiring {
                    id: slot.id,
                    pid,
                    _control: slot.control.take(),
                    line: slot.line,
                    kill_at,
                    killed: false,
                });
            }
            None => self.free_lines.push(slot.line),
        }
        tracing::info!(
            worker = slot.id,
            workers = self.slots.len(),
            "SIGTTOU: removing a worker; it drains"
        );
        self.start_next_replacement();
    }

    fn unblock(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        if !slot.blocked {
            return;
        }
        slot.blocked = false;
        if let Some(fd) = &slot.control {
            let _ = self.poll.registry().reregister(
                &mut SourceFd(&fd.as_raw_fd()),
                Token(CONTROL_BASE + i),
                Interest::READABLE,
            );
        }
    }

    // ----- connections (centralized) -------------------------------------------------------

    fn accept(&mut self) {
        if self.accept_paused_until.is_some_and(|t| Instant::now() < t) {
            return;
        }
        self.accept_paused_until = None;
        for _ in 0..ACCEPT_BUDGET {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    let queued = Queued {
                        stream,
                        peer,
                        client: peer.ip(),
                        accepted_at: SystemTime::now(),
                        since: Instant::now(),
                    };
                    if self.wants_proxy_header(peer) {
                        self.peek_proxy_header(queued);
                    } else {
                        self.enqueue(queued);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let out_of_resources = matches!(
                        e.raw_os_error(),
                        Some(
                            nix::libc::EMFILE
                                | nix::libc::ENFILE
                                | nix::libc::ENOBUFS
                                | nix::libc::ENOMEM
                        )
                    );
                    if out_of_resources {
                        tracing::error!(error = %e, "cannot accept; pausing accepts");
                        self.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                        return;
                    }
                    // Otherwise the client gave up before the accept: next.
                }
            }
        }
        self.accept_again = true;
    }

    /// Sends a new connection to a worker now, or queues it (503 when the queue is full).
    fn enqueue(&mut self, queued: Queued) {
        if self.queue.is_empty() && self.send_to_worker(&queued) {
            return;
        }
        if self.queue.len() >= self.cfg.max_queue {
            self.reject(queued.stream, "queue full");
        } else {
            self.queue.push_back(queued);
        }
    }

    /// Whether the balancer should key on the client a PROXY header from `peer` names:
    /// sticky balancing, with the PROXY protocol on and `peer` trusted.
    fn wants_proxy_header(&self, peer: SocketAddr) -> bool {
        self.cfg.balancer == BalancerKind::Sticky
            && self
                .server_config
                .proxy_protocol
                .as_ref()
                .is_some_and(|p| p.trusts(peer.ip()))
    }

    /// Reads the PROXY header without consuming it (the worker parses it again and serves
    /// the request after it) and keys the balancer on the client it names. If the header
    /// has not arrived, waits for it up to [`PEEK_WAIT`].
    fn peek_proxy_header(&mut self, mut queued: Queued) {
        match peek_client(&queued.stream) {
            Some(Some(client)) => {
                queued.client = client;
                self.enqueue(queued);
            }
            // Not a PROXY header (the worker answers it), or an error: no better key.
            Some(None) => self.enqueue(queued),
            None if self.peeking.len() >= MAX_PEEKING => self.enqueue(queued),
            None => {
                let entry = self.peeking.vacant_entry();
                let token = Token(PEEK_BASE + entry.key());
                if self
                    .poll
                    .registry()
                    .register(&mut queued.stream, token, Interest::READABLE)
                    .is_ok()
                {
                    entry.insert(Peeking {
                        conn: queued,
                        until: Instant::now() + PEEK_WAIT,
                    });
                } else {
                    self.enqueue(queued);
                }
            }
        }
    }

    /// Takes a connection off the PROXY-header wait. Registered here, its descriptor must
    /// leave this epoll before it goes to a worker.
    fn stop_peeking(&mut self, key: usize) -> Queued {
        let mut p = self.peeking.remove(key);
        let _ = self.poll.registry().deregister(&mut p.conn.stream);
        p.conn
    }

    /// More bytes arrived on a connection waiting for its PROXY header.
    fn peeked(&mut self, key: usize) {
        let Some(p) = self.peeking.get(key) else {
            return;
        };
        let client = match peek_client(&p.conn.stream) {
            None => return,
            Some(client) => client,
        };
        let mut conn = self.stop_peeking(key);
        if let Some(client) = client {
            conn.client = client;
        }
        self.enqueue(conn);
    }

    /// Hands the queue to the workers, oldest first, for as long as one can take a connection.
    fn dispatch(&mut self) {
        while let Some(front) = self.queue.pop_front() {
            if !self.send_to_worker(&front) {
                self.queue.push_front(front);
                return;
            }
        }
    }

    /// Sends one connection to the worker the balancer picks; false if none could take it.
    fn send_to_worker(&mut self, conn: &Queued) -> bool {
        let mut buf = [0u8; MAX_MESSAGE];
        let len = ToWorker::Conn {
            peer: conn.peer,
            accepted_at: conn.accepted_at,
        }
        .encode(&mut buf);
        loop {
            let board = self.board.as_deref();
            self.candidates.clear();
            self.candidates.extend(
                self.slots
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.can_take())
                    .map(|(slot, s)| Candidate {
                        slot,
                        generation: s.generation,
                        load: s.load(board, slot),
                        weight: s.weight,
                    }),
            );
            let Some(i) = self.balancer.pick(&self.candidates, conn.client) else {
                return false;
            };
            let slot = &mut self.slots[i];
            let Some(control) = &slot.control else {
                return false;
            };
            match sys::send_message(control.as_fd(), &buf[..len], Some(conn.stream.as_raw_fd())) {
                Ok(()) => {
                    slot.dispatched += 1;
                    self.dispatched += 1;
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Its queue is full: skip it until its socket drains.
                    slot.blocked = true;
                    let _ = self.poll.registry().reregister(
                        &mut SourceFd(&control.as_raw_fd()),
                        Token(CONTROL_BASE + i),
                        Interest::READABLE | Interest::WRITABLE,
                    );
                }
                Err(e) => {
                    // The worker is gone (EPIPE, ECONNREFUSED); SIGCHLD will follow.
                    tracing::debug!(worker = slot.id, error = %e, "cannot send a connection");
                    if let Some(fd) = slot.control.take() {
                        let _ = self
                            .poll
                            .registry()
                            .deregister(&mut SourceFd(&fd.as_raw_fd()));
                    }
                }
            }
        }
    }

    /// Answers 503 at once, then lets the client's request drain before closing, so the
    /// answer is read instead of lost to a reset.
    fn reject(&mut self, mut stream: TcpStream, why: &'static str) {
        self.rejected += 1;
        tracing::debug!(why, "connection rejected with 503");
        let _ = stream.write_all(OVERLOADED);
        let _ = stream.shutdown(Shutdown::Write);
        if self.lingering.len() >= MAX_LINGERING {
            return;
        }
        let entry = self.lingering.vacant_entry();
        let token = Token(LINGER_BASE + entry.key());
        if self
            .poll
            .registry()
            .register(&mut stream, token, Interest::READABLE)
            .is_ok()
        {
            entry.insert(Lingering {
                stream,
                until: Instant::now() + LINGER_TIME,
            });
        }
    }

    fn linger(&mut self, key: usize) {
        let Some(l) = self.lingering.get_mut(key) else {
            return;
        };
        let mut buf = [0u8; 4096];
        let done = loop {
            match l.stream.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break true,
            }
        };
        if done {
            let mut l = self.lingering.remove(key);
            let _ = self.poll.registry().deregister(&mut l.stream);
        }
    }

    fn status_ready(&mut self, token: Token) {
        let Some(mut status) = self.status.take() else {
            return;
        };
        if status.owns(token) {
            status.on_ready(self.poll.registry(), token, |endpoint| {
                board::master_reply(endpoint, &self.metrics())
            });
        }
        self.status = Some(status);
    }

    // ----- stopping ------------------------------------------------------------------------

    fn close_listeners(&mut self) {
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        self.shared_listener = None;
    }

    /// Calls the application's event hook, if any.
    fn emit(&mut self, event: PoolEvent) {
        if let Some(hook) = &mut self.on_event {
            hook(event);
        }
    }

    fn stop_on_signal(&mut self, kind: StopKind, signal_name: &str) {
        if self.stop.is_none() {
            self.emit(PoolEvent::Stopping);
        }
        self.begin_stop(kind, signal_name);
    }

    /// Sends [`PoolEvent::Reloaded`] once a reload has replaced every slot, and the
    /// heartbeat when it is due.
    fn pool_events(&mut self, now: Instant) {
        if self.reloading
            && self.replace_queue.is_empty()
            && self.slots.iter().all(|s| s.next.is_none())
        {
            self.reloading = false;
            if self.stop.is_none() {
                tracing::info!("rolling reload done");
                self.emit(PoolEvent::Reloaded);
            }
        }
        if let (Some(due), Some(every)) = (self.next_heartbeat, self.cfg.heartbeat) {
            if now >= due {
                self.next_heartbeat = Some(now + every);
                self.emit(PoolEvent::Heartbeat);
            }
        }
    }

    fn begin_stop(&mut self, kind: StopKind, signal_name: &str) {
        let now = Instant::now();
        let deadline = match kind {
            StopKind::Term => Some(self.cfg.shutdown_timeout),
            StopKind::Quit => self.cfg.quit_timeout,
        };
        let kill_at = deadline.map(|d| now + d + super::defaults::KILL_GRACE);
        if let Some(stop) = &mut self.stop {
            // A second signal may bring the kill deadline closer, never push it away.
            if let Some(at) = kill_at {
                if stop.kill_at.is_none_or(|old| at < old) {
                    stop.kill_at = Some(at);
                    tracing::info!("{signal_name}: workers get {deadline:?} more, then SIGKILL");
                    self.signal_workers(Signal::SIGTERM);
                }
            }
            return;
        }
        match deadline {
            Some(d) => tracing::info!(
                "{signal_name}: stopping; workers finish requests in flight for up to {d:?}"
            ),
            None => tracing::info!(
                "{signal_name}: stopping; workers finish requests in flight (no deadline)"
            ),
        }
        self.close_listeners();
        self.stop = Some(Stop {
            kill_at,
            killed: false,
        });
        // Connections accepted but not yet handed over are served if a worker can take them.
        let waiting: Vec<usize> = self.peeking.iter().map(|(k, _)| k).collect();
        for key in waiting {
            let conn = self.stop_peeking(key);
            self.queue.push_back(conn);
        }
        self.dispatch();
        while let Some(q) = self.queue.pop_front() {
            self.reject(q.stream, "stopping");
        }
        self.replace_queue.clear();
        for slot in &mut self.slots {
            if slot.state == WorkerState::Restarting {
                slot.state = WorkerState::Stopped;
                slot.restart_at = None;
            }
            if slot.pid.is_some() && slot.state != WorkerState::Failed {
                slot.state = WorkerState::Stopping;
            }
        }
        self.signal_workers(match kind {
            StopKind::Term => Signal::SIGTERM,
            StopKind::Quit => Signal::SIGQUIT,
        });
    }

    /// Signals every worker process: the slots', the replacements starting, the retiring.
    fn signal_workers(&self, sig: Signal) {
        for slot in &self.slots {
            if let Some(pid) = slot.pid {
                let _ = signal::kill(pid, sig);
            }
            if let Some(next) = &slot.next {
                let _ = signal::kill(next.pid, sig);
            }
        }
        for r in &self.retiring {
            let _ = signal::kill(r.pid, sig);
        }
    }

    // ----- time ----------------------------------------------------------------------------

    fn next_timeout(&mut self) -> Option<Duration> {
        if self.accept_again {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        let now_ms = sys::monotonic_ms();
        for slot in &self.slots {
            consider(slot.restart_at);
            if slot.state == WorkerState::Starting {
                consider(Some(slot.spawned_at + self.cfg.ready_timeout));
            }
            if let (Some(t), WorkerState::Ready) = (self.cfg.worker_timeout, slot.state) {
                let silent = Duration::from_millis(now_ms.saturating_sub(self.heartbeat(slot)));
                consider(Some(now + t.saturating_sub(silent)));
            }
            if let (Some(age), WorkerState::Ready) = (slot.age_limit, slot.state) {
                consider(Some(
                    (slot.spawned_at + age).max(slot.recycle_hold.unwrap_or(now)),
                ));
            }
            if let Some(next) = &slot.next {
                if !next.killed {
                    consider(Some(next.spawned_at + self.cfg.ready_timeout));
                }
            }
        }
        for r in &self.retiring {
            if !r.killed {
                consider(Some(r.kill_at));
            }
        }
        consider(self.upgrade.as_ref().map(|(_, deadline)| *deadline));
        if let Some(stop) = &self.stop {
            if !stop.killed {
                consider(stop.kill_at);
            }
        }
        consider(self.queue.front().map(|q| q.since + self.cfg.queue_timeout));
        consider(self.lingering.iter().map(|(_, l)| l.until).min());
        consider(self.peeking.iter().map(|(_, p)| p.until).min());
        consider(self.next_heartbeat);
        consider(self.accept_paused_until);
        if let Some(status) = &mut self.status {
            consider(status.expire(self.poll.registry(), now));
        }
        next.map(|t| t.saturating_duration_since(now))
    }

    /// When slot's current process last showed its loop turning ([`sys::monotonic_ms`]):
    /// its heartbeat on the board, or its ready time if it has not beaten since.
    fn heartbeat(&self, slot: &Slot) -> u64 {
        let beat = self.board.as_ref().map_or(0, |b| b.heartbeat(slot.line));
        beat.max(slot.ready_ms)
    }

    /// Logs what a worker whose loop stopped turning was doing, then kills it; its death
    /// restarts the slot.
    fn kill_stuck(&mut self, i: usize, pid: Pid, now_ms: u64, beat: u64) {
        let slot = &self.slots[i];
        let silent = Duration::from_millis(now_ms.saturating_sub(beat));
        let doing = match self.board.as_ref().and_then(|b| b.last_request(slot.line)) {
            Some((at, label)) if at >= beat => format!(
                "stuck serving {label:?} for {:.1?} (taken after the loop's last turn)",
                Duration::from_millis(now_ms.saturating_sub(at))
            ),
            Some((at, label)) => format!(
                "stuck outside a request; the last request taken was {label:?}, {:.1?} ago",
                Duration::from_millis(now_ms.saturating_sub(at))
            ),
            None => "stuck before taking any request".to_string(),
        };
        tracing::error!(
            worker = slot.id,
            pid = pid.as_raw(),
            silent_for = ?silent,
            "worker's event loop has not turned for {silent:.1?} (worker_timeout {:?}): {doing}; \
             killing it (SIGKILL) and starting another",
            self.cfg.worker_timeout.unwrap_or_default()
        );
        let _ = signal::kill(pid, Signal::SIGKILL);
        let slot = &mut self.slots[i];
        slot.state = WorkerState::Stopping;
        slot.kill_reason = Some(RestartReason::Timeout);
    }

    fn on_timers(&mut self) -> Result<(), Error> {
        let now = Instant::now();
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            if self.stop.is_none()
                && slot.next.is_none()
                && slot.restart_at.is_some_and(|t| t <= now)
            {
                self.slots[i].restarts += 1;
                self.spawn(i)?;
                continue;
            }
            if slot.state == WorkerState::Starting
                && now >= slot.spawned_at + self.cfg.ready_timeout
            {
                if let Some(pid) = slot.pid {
                    tracing::error!(
                        worker = slot.id,
                        "worker did not report ready within {:?}; killing it",
                        self.cfg.ready_timeout
                    );
                    let _ = signal::kill(pid, Signal::SIGKILL);
                }
                // Not again: the death restarts it.
                self.slots[i].state = WorkerState::Stopping;
                continue;
            }
            if let (Some(t), WorkerState::Ready, Some(pid)) =
                (self.cfg.worker_timeout, slot.state, slot.pid)
            {
                let now_ms = sys::monotonic_ms();
                let beat = self.heartbeat(slot);
                if now_ms.saturating_sub(beat) >= t.as_millis() as u64 {
                    self.kill_stuck(i, pid, now_ms, beat);
                    continue;
                }
            }
            if let Some(next) = &slot.next {
                if !next.killed && now >= next.spawned_at + self.cfg.ready_timeout {
                    tracing::error!(
                        worker = slot.id,
                        pid = next.pid.as_raw(),
                        "the replacement worker did not report ready within {:?}; killing it",
                        self.cfg.ready_timeout
                    );
                    let _ = signal::kill(next.pid, Signal::SIGKILL);
                    if let Some(next) = &mut self.slots[i].next {
                        next.killed = true;
                    }
                }
            }
            if self.slots[i].age_limit.is_some() {
                self.check_recycling(i);
            }
        }
        if self
            .upgrade
            .as_ref()
            .is_some_and(|(_, deadline)| now >= *deadline)
        {
            self.fail_upgrade("the new master did not report ready in time");
        }
        for r in &mut self.retiring {
            if !r.killed && now >= r.kill_at {
                tracing::warn!(
                    worker = r.id,
                    pid = r.pid.as_raw(),
                    "retired worker still draining past the shutdown timeout; killing it"
                );
                let _ = signal::kill(r.pid, Signal::SIGKILL);
                r.killed = true;
            }
        }
        if let Some(stop) = &mut self.stop {
            if !stop.killed && stop.kill_at.is_some_and(|t| now >= t) {
                stop.killed = true;
                let left: Vec<u32> = self
                    .slots
                    .iter()
                    .filter(|s| s.pid.is_some())
                    .map(|s| s.id)
                    .collect();
                if !left.is_empty() {
                    tracing::warn!(workers = ?left, "drain deadline passed; killing the workers left");
                    self.signal_workers(Signal::SIGKILL);
                }
            }
        }
        while let Some(front) = self.queue.front() {
            if now < front.since + self.cfg.queue_timeout {
                break;
            }
            if let Some(q) = self.queue.pop_front() {
                self.reject(q.stream, "no worker free in time");
            }
        }
        let late: Vec<usize> = self
            .peeking
            .iter()
            .filter(|(_, p)| p.until <= now)
            .map(|(k, _)| k)
            .collect();
        for key in late {
            // No PROXY header in time: balance on the proxy's address; the worker's own
            // header timeout decides the connection's fate.
            let conn = self.stop_peeking(key);
            self.enqueue(conn);
        }
        let expired: Vec<usize> = self
            .lingering
            .iter()
            .filter(|(_, l)| l.until <= now)
            .map(|(k, _)| k)
            .collect();
        for key in expired {
            let mut l = self.lingering.remove(key);
            let _ = self.poll.registry().deregister(&mut l.stream);
        }
        Ok(())
    }

    // ----- metrics -------------------------------------------------------------------------

    /// The pool's fixed shape, for rendering the board.
    fn shape(&self) -> PoolShape {
        PoolShape {
            architecture: self.cfg.architecture,
            balancer: (self.cfg.architecture == Architecture::Centralized)
                .then_some(self.cfg.balancer),
            weights: self.slots.iter().map(|s| s.weight).collect(),
        }
    }

    /// Publishes the master's view on the stats board (no allocation; a few stores a slot).
    fn publish_stats(&self) {
        let Some(stats) = &self.stats else {
            return;
        };
        stats.publish_master(&MasterFacts {
            stopping: self.stop.is_some(),
            queue_length: self.queue.len(),
            dispatched: self.dispatched,
            rejected: self.rejected,
            started: self.started,
            restarts_by_reason: self.restart_counts,
            retiring_workers: self.retiring.len(),
        });
        let board = self.board.as_deref();
        for (i, s) in self.slots.iter().enumerate() {
            stats.publish_slot(
                i,
                &SlotFacts {
                    pid: s.pid.map(|p| p.as_raw() as u32),
                    state: s.state,
                    restarts: s.restarts,
                    last_exit: s.last_exit,
                    spawned_at: s.spawned_at,
                    connections: if s.pid.is_some() { s.load(board, i) } else { 0 },
                    requests: s.requests_before + s.requests,
                    last_restart: s.last_restart,
                    rss_bytes: s.pid.and(s.rss),
                    heartbeat_ms: (s.pid.is_some() && s.state == WorkerState::Ready)
                        .then(|| self.heartbeat(s)),
                },
            );
        }
    }

    fn metrics(&self) -> PoolMetrics {
        let now = Instant::now();
        let now_ms = sys::monotonic_ms();
        let centralized = self.cfg.architecture == Architecture::Centralized;
        let mut m = PoolMetrics {
            architecture: self.cfg.architecture,
            balancer: centralized.then_some(self.cfg.balancer),
            total_workers: self.slots.len(),
            alive_workers: self.slots.iter().filter(|s| s.pid.is_some()).count(),
            queue_length: self.queue.len(),
            dispatched: self.dispatched,
            rejected: self.rejected,
            rate_limited: 0,
            stopping: self.stop.is_some(),
            uptime: now.duration_since(self.started),
            workers: self
                .slots
                .iter()
                .enumerate()
                .map(|(i, s)| WorkerMetrics {
                    id: s.id,
                    pid: s.pid.map(|p| p.as_raw() as u32),
                    state: s.state,
                    connections: if s.pid.is_some() {
                        s.load(self.board.as_deref(), i)
                    } else {
                        0
                    },
                    requests: s.requests_before + s.requests,
                    restarts: s.restarts,
                    last_exit: s.last_exit,
                    uptime: s.pid.map(|_| now.duration_since(s.spawned_at)),
                    weight: s.weight,
                    server: None,
                    last_restart: s.last_restart,
                    rss_bytes: s.pid.and(s.rss),
                    heartbeat_age: (s.pid.is_some() && s.state == WorkerState::Ready)
                        .then(|| Duration::from_millis(now_ms.saturating_sub(self.heartbeat(s)))),
                })
                .collect(),
            restarts_by_reason: self.restart_counts,
            retiring_workers: self.retiring.len(),
        };
        if let Some(stats) = &self.stats {
            stats.attach_servers(&mut m);
        }
        m.rate_limited = m.workers_rate_limited();
        m
    }
}
