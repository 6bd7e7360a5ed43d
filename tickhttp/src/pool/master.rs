//! The master: a single-threaded loop over one epoll.
//!
//! It watches a signalfd (SIGCHLD, SIGTERM, SIGINT, SIGQUIT are blocked and read from it, so
//! no handler runs at an arbitrary point), one control socket per worker, and in centralized
//! mode the listener. Every wait has a deadline computed from the pending timers (restarts,
//! ready timeouts, queue ageing, the kill deadline): nothing sleeps or polls.

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
use super::ipc::{ToMaster, ToWorker, MAX_MESSAGE};
use super::metrics::{ExitReason, PoolMetrics, WorkerMetrics, WorkerState};
use super::status::StatusServer;
use super::sys::{self, Forked, LoadBoard, Received};
use super::worker::{self, WorkerSettings};
use super::{Architecture, PoolConfig, WorkerApp};
use crate::error::Error;

const SIGNALS: Token = Token(0);
const LISTENER: Token = Token(1);
const STATUS: Token = Token(2);
const CONTROL_BASE: usize = 1 << 20;
const LINGER_BASE: usize = 2 << 20;
const STATUS_BASE: usize = 3 << 20;

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
    /// When the worker last reported (any message).
    last_report: Instant,
}

impl Slot {
    /// Open connections: in centralized mode the worker's live figure from the board plus
    /// the connections sent that it has not picked up yet, so the count is exact even
    /// between the worker's loop turns.
    fn load(&self, board: Option<&LoadBoard>, i: usize) -> u64 {
        match board {
            Some(board) => {
                let (open, received) = board.load(i);
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
    accepted_at: SystemTime,
    since: Instant,
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
    slot_listeners: Vec<Option<std::net::TcpListener>>,
    status: Option<StatusServer>,
    slots: Vec<Slot>,
    queue: VecDeque<Queued>,
    lingering: Slab<Lingering>,
    balancer: Balancer,
    board: Option<Rc<LoadBoard>>,
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

/// Runs the master until the pool is stopped.
pub(crate) fn run(
    cfg: PoolConfig,
    listeners: Vec<std::net::TcpListener>,
    status: Option<std::net::TcpListener>,
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
        let mut slot_listeners = Vec::new();
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
            _ => slot_listeners = listeners.into_iter().map(Some).collect(),
        }
        let status = match status {
            Some(l) => Some(
                StatusServer::new(l, poll.registry(), STATUS, STATUS_BASE)
                    .map_err(io_err("starting the status endpoint"))?,
            ),
            None => None,
        };
        let board = match cfg.architecture {
            Architecture::Centralized => Some(Rc::new(
                LoadBoard::new(cfg.workers).map_err(io_err("mapping the shared load board"))?,
            )),
            _ => None,
        };
        let now = Instant::now();
        let slots = (0..cfg.workers)
            .map(|i| Slot {
                id: i as u32 + 1,
                weight: cfg.weights.get(i).copied().unwrap_or(1),
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
                last_report: now,
            })
            .collect();
        Ok(Master {
            cfg,
            app,
            poll,
            signals,
            old_mask,
            listener,
            slot_listeners,
            status,
            slots,
            queue: VecDeque::new(),
            lingering: Slab::new(),
            balancer: Balancer::new(&cfg.balancer),
            board,
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
            if self.stop.is_some() && self.slots.iter().all(|s| s.pid.is_none()) {
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
                    token => self.status_ready(token),
                }
            }
            if self.accept_again {
                self.accept_again = false;
                self.accept();
            }
            self.on_timers()?;
            self.dispatch();
        }
        tracing::info!("all workers stopped; master exiting");
        Ok(self.metrics())
    }

    // ----- workers -------------------------------------------------------------------------

    fn spawn(&mut self, i: usize) -> Result<(), Error> {
        let (master_end, worker_end) = sys::seqpacket_pair()
            .map_err(|e| Error::io("creating a worker's control socket", e))?;
        let _ = io::stdout().flush();
        let generation = self.next_generation;
        self.next_generation += 1;
        // The new process starts from zero; a dead predecessor's figures must not linger.
        if let Some(board) = &self.board {
            board.store(i, 0, 0);
        }
        match sys::fork() {
            Ok(Forked::Child) => {
                drop(master_end);
                self.become_worker(i, worker_end)
            }
            Ok(Forked::Parent(pid)) => {
                drop(worker_end);
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
                slot.last_report = now;
                tracing::debug!(worker = slot.id, pid = pid.as_raw(), "worker forked");
                Ok(())
            }
            Err(e @ Error::Pool(_)) => Err(e),
            Err(e) => {
                // fork failed (EAGAIN: process limit, ENOMEM): count it as a death.
                tracing::error!(worker = self.slots[i].id, error = %e, "cannot start a worker");
                self.on_death(i, None);
                Ok(())
            }
        }
    }

    /// In the child: drop every master resource, run the worker, exit. Never returns.
    fn become_worker(&mut self, i: usize, control: OwnedFd) -> ! {
        // Descriptors that would keep the master's sockets alive or let this process touch
        // them: other workers' channels, queued clients, the listeners of other slots.
        self.listener = None;
        self.status = None;
        self.queue.clear();
        self.lingering.clear();
        for slot in &mut self.slots {
            slot.control = None;
        }
        let listener = self.slot_listeners.get_mut(i).and_then(Option::take);
        self.slot_listeners.clear();
        // The epoll fd and the signalfd stay open (close-on-exec, never read here); closing
        // them would need their owners, which live on in this frame until exit.
        let settings = WorkerSettings {
            id: self.slots[i].id,
            master: self.pid,
            control,
            listener,
            server_config: self.cfg.server_config.clone(),
            term_deadline: self.cfg.shutdown_timeout,
            quit_deadline: self.cfg.quit_timeout,
            board: self.board.as_ref().map(|b| (Rc::clone(b), i)),
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
                    Ok(Signal::SIGTERM) => self.begin_stop(StopKind::Term, "SIGTERM"),
                    Ok(Signal::SIGINT) => self.begin_stop(StopKind::Term, "SIGINT"),
                    Ok(Signal::SIGQUIT) => self.begin_stop(StopKind::Quit, "SIGQUIT"),
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
            let Some(pid) = self.slots[i].pid else {
                continue;
            };
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => self.on_death(i, Some(ExitReason::Code(code))),
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    self.on_death(i, Some(ExitReason::Signal(sig as i32)))
                }
                Ok(_) => {}
                Err(nix::errno::Errno::ECHILD) => self.on_death(i, None),
                Err(e) => tracing::error!(error = %e, "waitpid"),
            }
        }
    }

    fn on_death(&mut self, i: usize, reason: Option<ExitReason>) {
        let now = Instant::now();
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
            // In shared-socket mode, stop the kernel from queueing connections for it.
            if let Some(l) = self.slot_listeners.get_mut(i) {
                *l = None;
            }
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
        slot.last_report = Instant::now();
        match msg {
            ToMaster::Ready { pid } => {
                if slot.state == WorkerState::Starting {
                    slot.state = WorkerState::Ready;
                    tracing::info!(worker = slot.id, pid, "worker ready");
                }
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
            }
            ToMaster::Stopping => {
                if matches!(slot.state, WorkerState::Ready | WorkerState::Starting) {
                    slot.state = WorkerState::Stopping;
                }
            }
        }
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
                        accepted_at: SystemTime::now(),
                        since: Instant::now(),
                    };
                    if self.queue.is_empty() && self.send_to_worker(&queued) {
                        continue;
                    }
                    if self.queue.len() >= self.cfg.max_queue {
                        self.reject(queued.stream, "queue full");
                    } else {
                        self.queue.push_back(queued);
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
            let Some(i) = self.balancer.pick(&self.candidates, conn.peer.ip()) else {
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
            status.on_ready(self.poll.registry(), token, || self.metrics());
        }
        self.status = Some(status);
    }

    // ----- stopping ------------------------------------------------------------------------

    fn close_listeners(&mut self) {
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        for l in &mut self.slot_listeners {
            *l = None;
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
        self.dispatch();
        while let Some(q) = self.queue.pop_front() {
            self.reject(q.stream, "stopping");
        }
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

    fn signal_workers(&self, sig: Signal) {
        for slot in &self.slots {
            if let Some(pid) = slot.pid {
                let _ = signal::kill(pid, sig);
            }
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
        for slot in &self.slots {
            consider(slot.restart_at);
            if slot.state == WorkerState::Starting {
                consider(Some(slot.spawned_at + self.cfg.ready_timeout));
            }
            if let (Some(t), WorkerState::Ready) = (self.cfg.worker_timeout, slot.state) {
                consider(Some(slot.last_report + t));
            }
        }
        if let Some(stop) = &self.stop {
            if !stop.killed {
                consider(stop.kill_at);
            }
        }
        consider(self.queue.front().map(|q| q.since + self.cfg.queue_timeout));
        consider(self.lingering.iter().map(|(_, l)| l.until).min());
        consider(self.accept_paused_until);
        if let Some(status) = &mut self.status {
            consider(status.expire(self.poll.registry(), now));
        }
        next.map(|t| t.saturating_duration_since(now))
    }

    fn on_timers(&mut self) -> Result<(), Error> {
        let now = Instant::now();
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            if self.stop.is_none() && slot.restart_at.is_some_and(|t| t <= now) {
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
                if now >= slot.last_report + t {
                    tracing::error!(
                        worker = slot.id,
                        pid = pid.as_raw(),
                        "worker sent no report for {t:?}: its loop is stuck; killing it"
                    );
                    let _ = signal::kill(pid, Signal::SIGKILL);
                    self.slots[i].state = WorkerState::Stopping;
                }
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

    fn metrics(&self) -> PoolMetrics {
        let now = Instant::now();
        let centralized = self.cfg.architecture == Architecture::Centralized;
        PoolMetrics {
            architecture: self.cfg.architecture,
            balancer: centralized.then_some(self.cfg.balancer),
            total_workers: self.slots.len(),
            alive_workers: self.slots.iter().filter(|s| s.pid.is_some()).count(),
            queue_length: self.queue.len(),
            dispatched: self.dispatched,
            rejected: self.rejected,
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
                })
                .collect(),
        }
    }
}
