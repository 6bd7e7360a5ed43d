//! The worker side: everything a forked worker process runs.
//!
//! Event-driven and request-handler workers feed one [`Server`]: the control socket, the
//! signal pipes and the stats timer are [`EventSource`]s in its epoll, so a connection from
//! the master, a signal or a report tick wakes `wait()` and never needs the app to spin.
//! Callback workers run a small loop of their own over the same sources.

use std::cell::Cell;
use std::io::{self, Read};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use nix::unistd::Pid;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGTTIN, SIGTTOU, SIGUSR2};

use super::ipc::{ToMaster, ToWorker, MAX_MESSAGE};
use super::sys::{self, LoadBoard, Received};
use super::{defaults, WorkerApp};
use crate::error::Error;
use crate::server::{EventSource, LoopActivity, Server};
use crate::{ConnectionMeta, ServerConfig};

/// A drain with no kill deadline still needs a finite `Server::shutdown` deadline.
const NO_DEADLINE: Duration = defaults::MAX_DURATION;

/// What a forked worker needs from its master.
pub(crate) struct WorkerSettings<'a> {
    pub(crate) id: u32,
    pub(crate) master: Pid,
    pub(crate) control: OwnedFd,
    pub(crate) listener: Option<std::net::TcpListener>,
    pub(crate) server_config: ServerConfig,
    pub(crate) term_deadline: Duration,
    pub(crate) quit_deadline: Option<Duration>,
    /// Where to publish live load (centralized mode), and this worker's slot on it.
    pub(crate) board: Option<(Rc<LoadBoard>, usize)>,
    /// Where to publish this worker's server counters, and read the pool's for `/metrics`.
    pub(crate) stats: Option<super::board::WorkerBoard>,
    /// The pool-wide rate-limit table, when a rate limit is configured.
    pub(crate) rate_limits: Option<Rc<dyn crate::ratelimit::SharedGcra>>,
    pub(crate) signal_mask: SigSet,
    pub(crate) app: &'a mut WorkerApp,
}

/// The worker's end of its control socket.
struct Channel {
    fd: OwnedFd,
    /// Connections received from the master.
    received: Cell<u64>,
    /// Connections open now (callback mode keeps it; servers report their own).
    open: Cell<u32>,
}

impl Channel {
    /// Sends a report. A full queue drops it: every report carries absolute values, so the
    /// next one repairs the master's view.
    fn send(&self, msg: ToMaster) {
        let mut buf = [0u8; MAX_MESSAGE];
        let len = msg.encode(&mut buf);
        match sys::send_message(self.fd.as_fd(), &buf[..len], None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tracing::debug!("control channel full; report dropped");
            }
            Err(e) => tracing::debug!(error = %e, "cannot report to the master"),
        }
    }

    /// Publishes the live load on the board, if the master reads one.
    fn publish(&self, board: &Option<(Rc<LoadBoard>, usize)>, open: usize) {
        if let Some((board, slot)) = board {
            let open = u32::try_from(open).unwrap_or(u32::MAX);
            // The board keeps the low 32 bits; the master subtracts with wrapping.
            board.store(*slot, open, self.received.get() as u32);
        }
    }
}

/// What a drain of the control socket found.
enum Drained {
    /// Everything queued was read.
    Empty,
    /// The master closed its end: it is gone.
    MasterGone,
}

/// Reads every queued message, handing each connection to `on_conn`.
fn drain_control(chan: &Channel, mut on_conn: impl FnMut(TcpStream, ConnectionMeta)) -> Drained {
    let mut buf = [0u8; MAX_MESSAGE];
    loop {
        match sys::recv_message(chan.fd.as_fd(), &mut buf) {
            Ok(Received::Message { len, fd }) => match (ToWorker::decode(&buf[..len]), fd) {
                (Ok(ToWorker::Conn { peer, accepted_at }), Some(fd)) => {
                    chan.received.set(chan.received.get() + 1);
                    let meta = ConnectionMeta::with_peer(peer).accepted_at(accepted_at);
                    on_conn(TcpStream::from(fd), meta);
                }
                (Ok(ToWorker::Conn { .. }), None) => {
                    tracing::error!("a connection message arrived without its socket");
                }
                (Err(_), _) => tracing::error!("malformed message from the master ignored"),
            },
            Ok(Received::Closed) => return Drained::MasterGone,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Drained::Empty,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Drained::MasterGone,
            Err(e) => {
                // A lost descriptor or an oversized message: logged, and the channel goes on.
                tracing::error!(error = %e, "control channel");
            }
        }
    }
}

/// A pipe written by a signal handler (signal-hook's self-pipe), read in the loop.
struct SignalPipe {
    read: UnixStream,
}

impl SignalPipe {
    fn register(signals: &[i32]) -> io::Result<SignalPipe> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        for &sig in signals {
            signal_hook::low_level::pipe::register(sig, write.try_clone()?)?;
        }
        Ok(SignalPipe { read })
    }

    /// Empties the pipe; returns whether a signal arrived.
    fn take(&mut self) -> bool {
        let mut buf = [0u8; 64];
        let mut got = false;
        loop {
            match self.read.read(&mut buf) {
                Ok(0) => return got,
                Ok(_) => got = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return got,
            }
        }
    }
}

/// Runs in the child right after the fork; returns the process's exit code.
pub(crate) fn run(settings: WorkerSettings<'_>) -> i32 {
    let id = settings.id;
    match sys::die_with_parent(Signal::SIGTERM, settings.master) {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(worker = id, "the master died before the worker started");
            return 0;
        }
        Err(e) => {
            tracing::error!(worker = id, error = %e, "cannot set the parent-death signal");
            return 1;
        }
    }
    let result = match settings.app {
        WorkerApp::Callback(_) => run_callback(settings),
        _ => run_server(settings),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(worker = id, error = %e, "worker failed");
            1
        }
    }
}

/// Installs the worker's signal handlers, then lets signals through (the master blocks
/// them for its signalfd; a signal that arrived in between is delivered now, to the pipe).
fn install_signals(mask: &SigSet) -> Result<(SignalPipe, SignalPipe), Error> {
    let term = SignalPipe::register(&[SIGTERM, SIGINT])
        .map_err(|e| Error::io("installing the worker's signal handlers", e))?;
    let quit = SignalPipe::register(&[SIGQUIT])
        .map_err(|e| Error::io("installing the worker's signal handlers", e))?;
    // The master's operation signals mean nothing to a worker: one sent to the whole
    // process group (a closed terminal, `kill -HUP -PGID`) must not end or stop it.
    let ignored = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [SIGHUP, SIGUSR2, SIGTTIN, SIGTTOU] {
        signal_hook::flag::register(sig, std::sync::Arc::clone(&ignored))
            .map_err(|e| Error::io("installing the worker's signal handlers", e))?;
    }
    mask.thread_set_mask()
        .map_err(|e| Error::io("restoring the signal mask", e.into()))?;
    Ok((term, quit))
}

/// Arms `SIGALRM` (default action: terminate) as a backstop in case the application's loop
/// does not return after the drain deadline; the master's `SIGKILL` is the second one.
fn arm_backstop(deadline: Option<Duration>) {
    if let Some(d) = deadline {
        let secs = d.as_secs() + defaults::KILL_GRACE.as_secs() + 2;
        nix::unistd::alarm::set(u32::try_from(secs).unwrap_or(u32::MAX));
    }
}

// ----- event-driven and request-handler workers --------------------------------------------

struct Shared {
    chan: Channel,
    term_deadline: Duration,
    quit_deadline: Option<Duration>,
}

impl Shared {
    fn accept_from_master(&self, server: &mut Server) -> Drained {
        drain_control(&self.chan, |stream, meta| {
            if let Err(e) = server.add_external_connection(stream, meta) {
                tracing::warn!(error = %e, "cannot serve a connection from the master");
            }
        })
    }

    /// Starts the graceful stop: connections already sent by the master are served first.
    fn stop(&self, server: &mut Server, deadline: Option<Duration>) {
        if server.is_shutting_down() || !server.is_running() {
            return;
        }
        let _ = self.accept_from_master(server);
        self.chan.send(ToMaster::Stopping);
        tracing::info!(
            worker = server.worker_id().unwrap_or(0),
            deadline = ?deadline,
            "worker draining"
        );
        server.shutdown(deadline.unwrap_or(NO_DEADLINE));
        arm_backstop(deadline);
    }
}

struct ControlSource(Rc<Shared>);

impl EventSource for ControlSource {
    fn raw_fd(&self) -> RawFd {
        self.0.chan.fd.as_raw_fd()
    }

    fn on_ready(&mut self, server: &mut Server) {
        if let Drained::MasterGone = self.0.accept_from_master(server) {
            if !server.is_shutting_down() {
                tracing::warn!("the master is gone; draining");
                self.0.stop(server, Some(self.0.term_deadline));
            }
        }
    }
}

struct SignalSource {
    pipe: SignalPipe,
    shared: Rc<Shared>,
    quit: bool,
}

impl EventSource for SignalSource {
    fn raw_fd(&self) -> RawFd {
        self.pipe.read.as_raw_fd()
    }

    fn on_ready(&mut self, server: &mut Server) {
        if self.pipe.take() {
            let deadline = if self.quit {
                self.shared.quit_deadline
            } else {
                Some(self.shared.term_deadline)
            };
            self.shared.stop(server, deadline);
        }
    }
}

struct StatsSource {
    timer: TimerFd,
    shared: Rc<Shared>,
}

impl EventSource for StatsSource {
    fn raw_fd(&self) -> RawFd {
        self.timer.as_fd().as_raw_fd()
    }

    fn on_ready(&mut self, server: &mut Server) {
        // One read takes every expiry since the last; the next one fails with EAGAIN.
        while self.timer.wait().is_ok() {}
        let m = server.metrics();
        self.shared.chan.send(ToMaster::Stats {
            open: u32::try_from(server.connection_count()).unwrap_or(u32::MAX),
            received: self.shared.chan.received.get(),
            requests: m.total_requests,
        });
    }
}

fn stats_timer() -> Result<TimerFd, Error> {
    let timer = TimerFd::new(
        ClockId::CLOCK_MONOTONIC,
        TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
    )
    .map_err(|e| Error::io("creating the stats timer", e.into()))?;
    timer
        .set(
            Expiration::Interval(TimeSpec::from_duration(defaults::STATS_INTERVAL)),
            TimerSetTimeFlags::empty(),
        )
        .map_err(|e| Error::io("arming the stats timer", e.into()))?;
    Ok(timer)
}

fn run_server(settings: WorkerSettings<'_>) -> Result<(), Error> {
    let WorkerSettings {
        id,
        control,
        listener,
        server_config,
        term_deadline,
        quit_deadline,
        board,
        stats,
        rate_limits,
        signal_mask,
        app,
        ..
    } = settings;
    let mut server = Server::new(server_config)?;
    server.set_worker_id(id);
    if let Some(table) = rate_limits {
        server.share_rate_limit(table);
    }
    if let Some(listener) = listener {
        server.add_listener(listener)?;
    }
    server.start()?;
    if let Some(stats) = stats {
        stats.attach(&mut server)?;
    }

    let shared = Rc::new(Shared {
        chan: Channel {
            fd: control,
            received: Cell::new(0),
            open: Cell::new(0),
        },
        term_deadline,
        quit_deadline,
    });
    let (term, quit) = install_signals(&signal_mask)?;
    server.add_event_source(Box::new(ControlSource(Rc::clone(&shared))))?;
    server.add_event_source(Box::new(SignalSource {
        pipe: term,
        shared: Rc::clone(&shared),
        quit: false,
    }))?;
    server.add_event_source(Box::new(SignalSource {
        pipe: quit,
        shared: Rc::clone(&shared),
        quit: true,
    }))?;
    server.add_event_source(Box::new(StatsSource {
        timer: stats_timer()?,
        shared: Rc::clone(&shared),
    }))?;
    if let Some((board, line)) = board.clone() {
        // The heartbeat: each turn of the loop and each request taken, stamped on the board
        // (a clock read and a store or two); the master's liveness check reads it.
        board.beat(line, sys::monotonic_ms());
        server.set_activity_observer(Some(Box::new(move |activity| match activity {
            LoopActivity::Turn => board.beat(line, sys::monotonic_ms()),
            LoopActivity::Request(req) => {
                let mut label = [0u8; sys::LABEL_BYTES];
                let mut n = 0;
                for part in [
                    req.method().as_str().as_bytes(),
                    b" ",
                    req.path().as_bytes(),
                ] {
                    let take = part.len().min(label.len() - n);
                    label[n..n + take].copy_from_slice(&part[..take]);
                    n += take;
                }
                board.request(line, sys::monotonic_ms(), &label[..n]);
            }
        })));
    }
    // A draining worker closes an idle keep-alive connection only once it has been quiet
    // for a while, so a client's next request never races the close.
    server.set_idle_close_grace(defaults::DRAIN_IDLE_GRACE);
    if board.is_some() {
        // Every open and close, published on the shared board: an atomic store, no message.
        let reporter = Rc::clone(&shared);
        server.set_connection_observer(Some(Box::new(move |open| {
            reporter.chan.publish(&board, open);
        })));
    }

    shared.chan.send(ToMaster::Ready {
        pid: std::process::id(),
    });
    tracing::debug!(worker = id, pid = std::process::id(), "worker ready");

    match app {
        WorkerApp::EventDriven(app) => app.run(id, &mut server)?,
        WorkerApp::Handler(handler) => {
            while server.is_running() {
                server.wait(None)?;
                while let Some(req) = server.get_request() {
                    handler.handle(&mut server, req)?;
                }
            }
        }
        WorkerApp::Callback(_) => unreachable!("callback workers run run_callback"),
    }
    if server.is_running() {
        tracing::warn!(
            worker = id,
            "the application returned while the pool runs; the worker exits and will be restarted"
        );
    }
    Ok(())
}

// ----- callback workers --------------------------------------------------------------------

const CONTROL: Token = Token(0);
const LISTENER: Token = Token(1);
const TERM: Token = Token(2);
const QUIT: Token = Token(3);

fn run_callback(settings: WorkerSettings<'_>) -> Result<(), Error> {
    let WorkerSettings {
        id,
        control,
        listener,
        term_deadline,
        quit_deadline,
        board,
        signal_mask,
        app,
        ..
    } = settings;
    let WorkerApp::Callback(callback) = app else {
        unreachable!("run_callback runs callback workers")
    };
    let chan = Channel {
        fd: control,
        received: Cell::new(0),
        open: Cell::new(0),
    };
    let io_err = |context| move |e| Error::io(context, e);
    let mut poll = Poll::new().map_err(io_err("creating the worker's epoll"))?;
    let registry = poll.registry();
    registry
        .register(
            &mut SourceFd(&chan.fd.as_raw_fd()),
            CONTROL,
            Interest::READABLE,
        )
        .map_err(io_err("watching the control socket"))?;
    if let Some(l) = &listener {
        l.set_nonblocking(true)
            .map_err(io_err("making the listener non-blocking"))?;
        registry
            .register(&mut SourceFd(&l.as_raw_fd()), LISTENER, Interest::READABLE)
            .map_err(io_err("watching the listener"))?;
    }
    let (mut term, mut quit) = install_signals(&signal_mask)?;
    registry
        .register(
            &mut SourceFd(&term.read.as_raw_fd()),
            TERM,
            Interest::READABLE,
        )
        .map_err(io_err("watching the signal pipe"))?;
    registry
        .register(
            &mut SourceFd(&quit.read.as_raw_fd()),
            QUIT,
            Interest::READABLE,
        )
        .map_err(io_err("watching the signal pipe"))?;

    chan.send(ToMaster::Ready {
        pid: std::process::id(),
    });
    let handled = Cell::new(0u64);
    let mut serve = |stream: TcpStream, meta: ConnectionMeta| {
        if let Err(e) = stream.set_nonblocking(false) {
            tracing::warn!(error = %e, "cannot make a connection blocking; dropped");
            return;
        }
        chan.open.set(1);
        chan.publish(&board, 1);
        if let Some((board, line)) = &board {
            let peer = meta.peer_addr.map_or_else(
                || "a connection".to_string(),
                |p| format!("connection from {p}"),
            );
            board.request(*line, sys::monotonic_ms(), peer.as_bytes());
        }
        callback.handle(id, stream, meta);
        handled.set(handled.get() + 1);
        chan.open.set(0);
        chan.publish(&board, 0);
    };

    let mut events = Events::with_capacity(16);
    let mut next_stats = Instant::now() + defaults::STATS_INTERVAL;
    let mut stop: Option<Option<Duration>> = None;
    while stop.is_none() {
        let timeout = next_stats.saturating_duration_since(Instant::now());
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("epoll_wait", e)),
        }
        if let Some((board, line)) = &board {
            board.beat(*line, sys::monotonic_ms());
        }
        for event in events.iter() {
            match event.token() {
                CONTROL => {
                    if let Drained::MasterGone = drain_control(&chan, &mut serve) {
                        tracing::warn!(worker = id, "the master is gone; stopping");
                        stop = Some(Some(term_deadline));
                    }
                }
                LISTENER => {
                    let Some(l) = &listener else { continue };
                    loop {
                        match l.accept() {
                            Ok((stream, peer)) => serve(
                                stream,
                                ConnectionMeta::with_peer(peer)
                                    .accepted_at(std::time::SystemTime::now()),
                            ),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "accept failed");
                                break;
                            }
                        }
                    }
                }
                TERM if term.take() => stop = Some(Some(term_deadline)),
                QUIT if quit.take() => stop = Some(quit_deadline),
                _ => {}
            }
        }
        if Instant::now() >= next_stats {
            next_stats = Instant::now() + defaults::STATS_INTERVAL;
            chan.send(ToMaster::Stats {
                open: chan.open.get(),
                received: chan.received.get(),
                requests: handled.get(),
            });
        }
    }
    // Callbacks run one at a time, so nothing is in flight here except connections the
    // master already sent: serve those, then leave.
    chan.send(ToMaster::Stopping);
    arm_backstop(stop.flatten());
    let _ = drain_control(&chan, &mut serve);
    tracing::info!(worker = id, "worker stopped");
    Ok(())
}
