//! The poll-driven [`Server`].

pub(crate) mod conn;
mod metrics;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::Version;
use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::body::{Body, RequestBody};
use crate::config::{defaults, ServerConfig};
use crate::error::{Error, RequestError};
use crate::proto::head::{may_be_complete, parse_head_cached};
use crate::proto::response::{self, ResponseFraming};
use crate::proto::{date::DateCache, parse_head, ChunkedDecoder, Framing, Head};
use crate::request::{ConnectionMeta, Request, RequestId};
use crate::task::{Hub, Notify, Responder, TaskId, Tasks, Timer};

use crate::ws::{self, WebSocketConfig, WsConn, WsEvent, WsId, WsIo, WsMessage};
use conn::{Active, BodyAcc, BodyFraming, Closing, Conn, Filled, PendingUpgrade, Phase, Slot};
pub(crate) use metrics::metrics_from_parts;
use metrics::MetricsState;
pub use metrics::{DurationHistogram, Metrics, DURATION_BUCKETS};

const WAKER: Token = Token(usize::MAX - 1);
const LISTENER_BASE: usize = usize::MAX / 2;
const SOURCE_BASE: usize = usize::MAX / 4;
/// Responses encoded ahead into one buffer before writing (pipelining batch).
const OUT_BATCH: usize = 256 * 1024;
/// Bytes pulled from one readiness event before other connections get a turn.
const READ_BUDGET: usize = 256 * 1024;
/// How long accepting pauses after the process ran out of file descriptors.
const EMFILE_BACKOFF: Duration = Duration::from_millis(100);

/// Whether the server owns its listener or receives connections from a worker pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerMode {
    /// Binds and accepts itself.
    Standalone,
    /// Runs inside a pool worker: connections arrive via
    /// [`Server::add_external_connection`] or a listener added with [`Server::add_listener`].
    WorkerPool,
}

/// How a graceful shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShutdownOutcome {
    /// Every request was answered and every connection closed before the deadline.
    Drained,
    /// The deadline passed; remaining connections were closed.
    ForceClosed,
}

/// An extra file descriptor watched by the server's poll, for code that feeds the server
/// from outside: the worker pool's fd channel, a signal pipe, an app's own socket.
///
/// Readiness is edge-triggered: `on_ready` must consume until the fd would block.
pub trait EventSource {
    /// The descriptor to watch for readability.
    fn raw_fd(&self) -> RawFd;
    /// Called when the descriptor is readable (or hung up).
    fn on_ready(&mut self, server: &mut Server);
}

/// Identifies an [`EventSource`] registered with [`Server::add_event_source`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceId(usize);

struct Draining {
    deadline: Instant,
    started: Instant,
}

/// Whether a connection of a draining server, with nothing in flight, may be closed now.
fn idle_close_due(draining: Option<&Draining>, grace: Duration, now: Instant, c: &Conn) -> bool {
    draining.is_some_and(|d| c.last_read.max(c.last_write).max(d.started) + grace <= now)
}

/// A callback given to [`Server::set_activity_observer`].
pub type ActivityObserver = Box<dyn FnMut(LoopActivity<'_>)>;

/// What the application's loop just did, as reported to [`Server::set_activity_observer`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum LoopActivity<'a> {
    /// The loop turned: `wait` or `has_request` polled for events and is handing control
    /// back to the application.
    Turn,
    /// The application took this request (`get_request`).
    Request(&'a Request),
}

/// A non-blocking HTTP/1.1 server polled from the application's own loop.
///
/// # The loop
///
/// ```no_run
/// use tickhttp::{Server, ServerConfig};
///
/// let mut server = Server::new(ServerConfig::default())?;
/// server.start()?;
/// loop {
///     server.wait(None)?; // blocks in epoll until a request, task or timer is ready
///     while let Some(req) = server.get_request() {
///         let resp = http::Response::new(format!("you asked for {}", req.path()).into());
///         server.respond(req.id(), resp)?;
///     }
/// }
/// # Ok::<(), tickhttp::Error>(())
/// ```
///
/// # Contract
///
/// - **Ordering.** Responses may be given in any order and in any later tick; on one
///   connection, pipelined responses still leave in request order (a response waits for the
///   ones before it).
/// - **Batching.** Responses are written when the loop next turns (`wait`, or `has_request`
///   with an empty queue), so answering a pipelined batch costs one `write`.
/// - **Unanswered requests.** If the client goes away, `respond` for its requests succeeds and
///   does nothing. At a forced shutdown, unanswered requests are dropped with their connection.
/// - **Fork.** A `Server` holds an epoll fd and sockets; create it after `fork()`, in the
///   process that runs it.
pub struct Server {
    config: ServerConfig,
    limits: crate::proto::Limits,
    poll: Poll,
    events: Events,
    hub: Arc<Hub>,
    listeners: Vec<Option<TcpListener>>,
    conns: Slab<Conn>,
    ready: VecDeque<Request>,
    outstanding: usize,
    dirty: Vec<usize>,
    again: Vec<usize>,
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    tasks: Tasks,
    sources: Slab<Option<Box<dyn EventSource>>>,
    date: DateCache,
    metrics: MetricsState,
    mode: ServerMode,
    worker_id: Option<u32>,
    running: bool,
    draining: Option<Draining>,
    shutdown_outcome: Option<ShutdownOutcome>,
    next_gen: u64,
    now: Instant,
    accept_again: bool,
    accept_paused_until: Option<Instant>,
    emfile_logged: bool,
    tls: Option<Arc<rustls::ServerConfig>>,
    conn_observer: Option<Box<dyn FnMut(usize)>>,
    activity_observer: Option<ActivityObserver>,
    idle_close_grace: Duration,
    ws_routes: Vec<ws::Route>,
    ws_events: VecDeque<WsEvent>,
    rooms: ws::Rooms,
    rate_limit: Option<crate::ratelimit::RateLimit>,
    admin_source: Option<crate::admin::AdminSource>,
}

impl Server {
    /// Creates a server (validating the configuration); it does not bind until [`start`].
    ///
    /// [`start`]: Server::start
    pub fn new(config: ServerConfig) -> Result<Server, Error> {
        config.validate()?;
        let poll = Poll::new().map_err(|e| Error::io("creating the epoll instance", e))?;
        let waker = mio::Waker::new(poll.registry(), WAKER)
            .map_err(|e| Error::io("creating the loop waker", e))?;
        let now = Instant::now();
        let date = DateCache::with_server(config.server_name.as_deref().map(str::as_bytes));
        Ok(Server {
            limits: config.limits(),
            tls: config.tls.as_ref().map(|t| t.rustls_config()),
            rate_limit: config
                .rate_limit
                .clone()
                .map(crate::ratelimit::RateLimit::new),
            admin_source: None,
            ws_routes: Vec::new(),
            ws_events: VecDeque::new(),
            rooms: ws::Rooms::default(),
            config,
            poll,
            events: Events::with_capacity(1024),
            hub: Arc::new(Hub::new(waker)),
            listeners: Vec::new(),
            conns: Slab::new(),
            ready: VecDeque::new(),
            outstanding: 0,
            dirty: Vec::new(),
            again: Vec::new(),
            timers: BinaryHeap::new(),
            tasks: Tasks::default(),
            sources: Slab::new(),
            date,
            metrics: MetricsState::new(now),
            mode: ServerMode::Standalone,
            worker_id: None,
            running: false,
            draining: None,
            shutdown_outcome: None,
            next_gen: 1,
            now,
            accept_again: false,
            accept_paused_until: None,
            emfile_logged: false,
            conn_observer: None,
            activity_observer: None,
            idle_close_grace: Duration::ZERO,
        })
    }

    /// Creates and starts a standalone server on `config.listen`.
    pub fn bind(config: ServerConfig) -> Result<Server, Error> {
        let mut server = Server::new(config)?;
        server.start()?;
        Ok(server)
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    // ----- lifecycle -------------------------------------------------------------------------

    /// Binds and listens (standalone mode). In worker-pool mode there is nothing to bind and
    /// this only marks the server running. Starting a running server is a no-op.
    pub fn start(&mut self) -> Result<(), Error> {
        if self.running {
            return Ok(());
        }
        self.shutdown_outcome = None;
        self.draining = None;
        if self.mode == ServerMode::Standalone && self.listeners.iter().all(Option::is_none) {
            let listener = bind_listener(&self.config)?;
            self.register_listener(listener)?;
        }
        self.running = true;
        self.metrics.started(Instant::now());
        Ok(())
    }

    /// Closes every connection and the listeners at once; unanswered requests are dropped.
    pub fn stop(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close_conn(key);
        }
        self.drop_listeners();
        self.running = false;
        self.draining = None;
    }

    /// Stops and clears all queued state (ready requests, timers); mode, worker id and
    /// background tasks are kept.
    pub fn reset(&mut self) {
        self.stop();
        self.ready.clear();
        self.outstanding = 0;
        self.dirty.clear();
        self.again.clear();
        self.timers.clear();
        self.shutdown_outcome = None;
    }

    /// `stop`, `reset`, then `start`; reports a failed rebind.
    pub fn restart(&mut self) -> Result<(), Error> {
        self.reset();
        self.start()
    }

    /// Begins a graceful shutdown and returns at once: listeners close, idle keep-alive
    /// connections close, requests in flight keep being served (each response then carries
    /// `Connection: close`), and at `deadline` whatever remains is closed. Keep polling; the
    /// server stops running when it is done, and [`shutdown_outcome`] says how it ended.
    ///
    /// [`shutdown_outcome`]: Server::shutdown_outcome
    pub fn shutdown(&mut self, deadline: Duration) {
        if !self.running || self.draining.is_some() {
            return;
        }
        self.now = Instant::now();
        self.draining = Some(Draining {
            deadline: self.now + deadline,
            started: self.now,
        });
        self.drop_listeners();
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            if let Some(Phase::WebSocket(ws)) = self.conns.get(key).map(|c| &c.phase) {
                let id = ws.id;
                self.ws_close_with(id, 1001, "server shutdown");
                continue;
            }
            // Read what already arrived, so a request racing the shutdown is served, not reset.
            self.on_readable(key);
            self.after_io(key);
        }
        self.check_drained();
    }

    /// How long, during a graceful shutdown, a keep-alive connection must have been idle
    /// before it is closed (default zero: at once).
    ///
    /// Closing an idle keep-alive connection races the client's next request: a request
    /// already on the wire meets a closed connection, and a client that does not retry
    /// reports an error. With a grace, a busy client's next request arrives first and is
    /// answered with `Connection: close`, so it reconnects cleanly; only connections that
    /// stay quiet for the whole grace are closed (the worker pool uses one second).
    pub fn set_idle_close_grace(&mut self, grace: Duration) {
        self.idle_close_grace = grace;
    }

    /// Whether a draining connection with nothing in flight may be closed now.
    fn idle_close_due(&self, c: &Conn) -> bool {
        idle_close_due(self.draining.as_ref(), self.idle_close_grace, self.now, c)
    }

    /// Whether a graceful shutdown is in progress.
    pub fn is_shutting_down(&self) -> bool {
        self.draining.is_some()
    }

    /// Whether the server is running (started, and not yet stopped or fully shut down).
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// How the last graceful shutdown ended, once it has.
    pub fn shutdown_outcome(&self) -> Option<ShutdownOutcome> {
        self.shutdown_outcome
    }

    // ----- the poll API ----------------------------------------------------------------------

    /// Does all pending I/O without blocking, resumes ready background tasks, and returns
    /// whether a complete request is queued. When requests are already queued it returns `true`
    /// at once: I/O resumes when the queue is drained.
    pub fn has_request(&mut self) -> bool {
        if !self.ready.is_empty() {
            return true;
        }
        if let Err(e) = self.turn(Some(Duration::ZERO)) {
            tracing::error!(error = %e, "poll failed");
        }
        !self.ready.is_empty()
    }

    /// Takes the oldest complete request.
    pub fn get_request(&mut self) -> Option<Request> {
        let req = self.ready.front()?;
        if let Some(observer) = self.activity_observer.as_mut() {
            observer(LoopActivity::Request(req));
        }
        let id = req.id;
        if let Some(slot) = self.slot_mut(id) {
            slot.handed_out = true;
            self.outstanding += 1;
        }
        // Popped last, straight into the return value: a `Request` is a few hundred bytes, and
        // holding it in a local first costs extra copies.
        self.ready.pop_front()
    }

    /// Blocks in epoll until a request is ready, a task or timer fires, or `timeout` passes
    /// (`None`: no limit). Flushes pending responses first. Returns whether a request is ready.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<bool, Error> {
        if !self.ready.is_empty() || !self.ws_events.is_empty() {
            return Ok(true);
        }
        self.turn(timeout)?;
        Ok(!self.ready.is_empty() || !self.ws_events.is_empty())
    }

    /// Answers request `id`. Any order and any later tick is fine; per connection, responses
    /// are written in request order. If the client is gone the response is discarded (`Ok`).
    ///
    /// The server sets `Content-Length` or `Transfer-Encoding`, `Connection`, `Date` and
    /// `Server`; a `Connection: close` from the app closes the connection after the response.
    pub fn respond(&mut self, id: RequestId, response: http::Response<Body>) -> Result<(), Error> {
        let key = id.conn as usize;
        let Some(conn) = self.conns.get_mut(key) else {
            return Ok(());
        };
        if conn.gen != id.gen {
            return Ok(());
        }
        let Some(idx) = id.seq.checked_sub(conn.front_seq) else {
            return Err(Error::NotAwaitingResponse(id));
        };
        let Some(slot) = conn.slots.get_mut(idx as usize) else {
            // Slots after a closing response are discarded with their connection's reading.
            return if id.seq < conn.next_seq {
                Ok(())
            } else {
                Err(Error::NotAwaitingResponse(id))
            };
        };
        if slot.response.is_some() {
            return Err(Error::NotAwaitingResponse(id));
        }
        if slot.handed_out {
            self.outstanding = self.outstanding.saturating_sub(1);
        }
        // Timed with the loop's clock (read once per pass, when the poll returns) rather than
        // a clock read per response: a response given in the pass that received its request
        // counts as immediate, and a later one is timed to the pass it was given in.
        let took = if slot.received == self.now {
            Duration::ZERO // the usual case, without the subtraction's cost
        } else {
            self.now.saturating_duration_since(slot.received)
        };
        self.metrics.record_response(response.status(), took);
        slot.response = Some(response);
        if idx == 0 && !conn.dirty {
            conn.dirty = true;
            self.dirty.push(key);
        }
        Ok(())
    }

    /// Whether a request handed out by `get_request` is still unanswered.
    pub fn has_pending_response(&self) -> bool {
        self.outstanding > 0
    }

    /// Requests received and not yet taken with `get_request`.
    pub fn queued_requests(&self) -> usize {
        self.ready.len()
    }

    // ----- WebSocket -------------------------------------------------------------------------

    /// Serves WebSocket upgrades on `path` (exact match, query ignored). Upgrade requests to
    /// other paths get 404; bad handshakes get 400, 403 or 426.
    pub fn attach_websocket(&mut self, path: &str, config: WebSocketConfig) -> Result<(), Error> {
        config.validate()?;
        if !path.starts_with('/') {
            return Err(Error::config(
                "path",
                "a WebSocket path must start with '/'",
            ));
        }
        match self.ws_routes.iter_mut().find(|r| r.path == path) {
            Some(r) => r.config = config,
            None => self.ws_routes.push(ws::Route {
                path: path.to_string(),
                config,
            }),
        }
        Ok(())
    }

    /// The next WebSocket event, if any.
    pub fn next_ws_event(&mut self) -> Option<WsEvent> {
        self.ws_events.pop_front()
    }

    /// Whether WebSocket events are waiting.
    pub fn has_ws_event(&self) -> bool {
        !self.ws_events.is_empty()
    }

    /// Sends a text or binary message. Messages larger than the route's `max_frame_size` are
    /// fragmented when `auto_fragmentation` is on.
    pub fn ws_send(&mut self, id: WsId, message: impl Into<WsMessage>) -> Result<(), Error> {
        let message = message.into();
        let key = id.conn as usize;
        let Some(c) = self.conns.get_mut(key).filter(|c| c.gen == id.gen) else {
            return Err(Error::WebSocketClosed(id));
        };
        let Phase::WebSocket(ws) = &mut c.phase else {
            return Err(Error::WebSocketClosed(id));
        };
        if ws.close_sent.is_some() || ws.terminated {
            return Err(Error::WebSocketClosed(id));
        }
        let wc = &self.ws_routes[ws.route].config;
        if c.out_pos >= c.out.len() {
            c.last_write = self.now;
        }
        let mut io = WsIo {
            input: &mut c.input,
            out: &mut c.out,
        };
        let (payload, opcode) = match message {
            WsMessage::Text(t) => (
                Bytes::from(t),
                tungstenite::protocol::frame::coding::Data::Text,
            ),
            WsMessage::Binary(b) => (b, tungstenite::protocol::frame::coding::Data::Binary),
        };
        use tungstenite::protocol::frame::coding::{Data as OpData, OpCode};
        use tungstenite::protocol::frame::Frame;
        let result = if wc.auto_fragmentation && payload.len() > wc.max_frame_size {
            let mut r = Ok(());
            let pieces = payload.len().div_ceil(wc.max_frame_size);
            for (i, start) in (0..payload.len()).step_by(wc.max_frame_size).enumerate() {
                let end = (start + wc.max_frame_size).min(payload.len());
                let code = if i == 0 {
                    OpCode::Data(opcode)
                } else {
                    OpCode::Data(OpData::Continue)
                };
                let frame = Frame::message(payload.slice(start..end), code, i + 1 == pieces);
                r = ws.ctx.write(&mut io, tungstenite::Message::Frame(frame));
                if r.is_err() {
                    break;
                }
            }
            r
        } else {
            let msg = match opcode {
                OpData::Text => match tungstenite::Utf8Bytes::try_from(payload) {
                    Ok(t) => tungstenite::Message::Text(t),
                    Err(_) => return Err(Error::WebSocketClosed(id)),
                },
                _ => tungstenite::Message::Binary(payload),
            };
            ws.ctx.write(&mut io, msg)
        };
        let flushed = result.and_then(|()| ws.ctx.flush(&mut io));
        let pending = c.out.len() - c.out_pos;
        if flushed.is_err() {
            return Err(Error::WebSocketClosed(id));
        }
        if pending > wc.max_write_buffer {
            tracing::warn!(%id, pending, "WebSocket client reads too slowly; dropping it");
            if let Phase::WebSocket(ws) = &mut c.phase {
                ws.close_emitted = true;
            }
            self.ws_events.push_back(WsEvent::Close {
                id,
                code: 1006,
                reason: "slow consumer: write buffer full".to_string(),
            });
            self.close_conn(key);
            return Err(Error::WebSocketClosed(id));
        }
        self.mark_dirty(key);
        Ok(())
    }

    /// Sends a text message.
    pub fn ws_send_text(&mut self, id: WsId, text: impl Into<String>) -> Result<(), Error> {
        self.ws_send(id, WsMessage::Text(text.into()))
    }

    /// Sends a binary message.
    pub fn ws_send_binary(&mut self, id: WsId, data: impl Into<Bytes>) -> Result<(), Error> {
        self.ws_send(id, WsMessage::Binary(data.into()))
    }

    /// Sends a value as a JSON text message.
    pub fn ws_send_json<T: serde::Serialize>(&mut self, id: WsId, value: &T) -> Result<(), Error> {
        let text =
            serde_json::to_string(value).map_err(|e| Error::config("json", e.to_string()))?;
        self.ws_send_text(id, text)
    }

    /// Starts the closing handshake with `code` and `reason`; a `Close` event fires now, and
    /// TCP closes when the client answers (or after the route's `close_timeout`).
    pub fn ws_close(&mut self, id: WsId, code: u16, reason: &str) -> Result<(), Error> {
        if self.ws_close_with(id, code, reason) {
            Ok(())
        } else {
            Err(Error::WebSocketClosed(id))
        }
    }

    /// Sends `message` to every open connection of `path` except `except`; returns how many
    /// it was sent to.
    pub fn ws_broadcast(
        &mut self,
        path: &str,
        message: impl Into<WsMessage>,
        except: Option<WsId>,
    ) -> usize {
        let Some(route) = self.ws_routes.iter().position(|r| r.path == path) else {
            return 0;
        };
        let ids: Vec<WsId> = self
            .conns
            .iter()
            .filter_map(|(_, c)| match &c.phase {
                Phase::WebSocket(ws) if ws.route == route && Some(ws.id) != except => Some(ws.id),
                _ => None,
            })
            .collect();
        self.send_to_all(ids, message.into())
    }

    /// Adds a connection to a room.
    pub fn ws_join(&mut self, id: WsId, room: &str) -> Result<(), Error> {
        let Some(Phase::WebSocket(ws)) = self
            .conns
            .get_mut(id.conn as usize)
            .filter(|c| c.gen == id.gen)
            .map(|c| &mut c.phase)
        else {
            return Err(Error::WebSocketClosed(id));
        };
        if self.rooms.join(room, id) {
            ws.rooms.push(room.to_string());
        }
        Ok(())
    }

    /// Removes a connection from a room.
    pub fn ws_leave(&mut self, id: WsId, room: &str) {
        if let Some(Phase::WebSocket(ws)) = self
            .conns
            .get_mut(id.conn as usize)
            .filter(|c| c.gen == id.gen)
            .map(|c| &mut c.phase)
        {
            ws.rooms.retain(|r| r != room);
        }
        self.rooms.leave(room, id);
    }

    /// The members of a room.
    pub fn ws_room(&self, room: &str) -> Vec<WsId> {
        self.rooms.members.get(room).cloned().unwrap_or_default()
    }

    /// Sends `message` to every member of `room` except `except`; returns how many.
    pub fn ws_broadcast_room(
        &mut self,
        room: &str,
        message: impl Into<WsMessage>,
        except: Option<WsId>,
    ) -> usize {
        let ids: Vec<WsId> = self
            .ws_room(room)
            .into_iter()
            .filter(|id| Some(*id) != except)
            .collect();
        self.send_to_all(ids, message.into())
    }

    /// Attaches application data to a connection (replacing any).
    pub fn ws_set_data<T: std::any::Any>(&mut self, id: WsId, data: T) -> Result<(), Error> {
        match self.ws_conn_mut(id) {
            Some(ws) => {
                ws.data = Some(Box::new(data));
                Ok(())
            }
            None => Err(Error::WebSocketClosed(id)),
        }
    }

    /// The application data of a connection, if set and of type `T`.
    pub fn ws_data<T: std::any::Any>(&self, id: WsId) -> Option<&T> {
        let c = self
            .conns
            .get(id.conn as usize)
            .filter(|c| c.gen == id.gen)?;
        match &c.phase {
            Phase::WebSocket(ws) => ws.data.as_ref()?.downcast_ref(),
            _ => None,
        }
    }

    /// The application data of a connection, mutably.
    pub fn ws_data_mut<T: std::any::Any>(&mut self, id: WsId) -> Option<&mut T> {
        self.ws_conn_mut(id)?.data.as_mut()?.downcast_mut()
    }

    /// Open WebSocket connections on `path`.
    pub fn ws_connections(&self, path: &str) -> Vec<WsId> {
        let Some(route) = self.ws_routes.iter().position(|r| r.path == path) else {
            return Vec::new();
        };
        self.conns
            .iter()
            .filter_map(|(_, c)| match &c.phase {
                Phase::WebSocket(ws) if ws.route == route && ws.close_sent.is_none() => Some(ws.id),
                _ => None,
            })
            .collect()
    }

    fn ws_conn_mut(&mut self, id: WsId) -> Option<&mut WsConn> {
        let c = self
            .conns
            .get_mut(id.conn as usize)
            .filter(|c| c.gen == id.gen)?;
        match &mut c.phase {
            Phase::WebSocket(ws) => Some(ws),
            _ => None,
        }
    }

    fn send_to_all(&mut self, ids: Vec<WsId>, message: WsMessage) -> usize {
        ids.into_iter()
            .filter(|id| self.ws_send(*id, message.clone()).is_ok())
            .count()
    }

    /// Sends a close frame and emits the `Close` event; false if the connection is gone.
    fn ws_close_with(&mut self, id: WsId, code: u16, reason: &str) -> bool {
        let key = id.conn as usize;
        let Some(c) = self.conns.get_mut(key).filter(|c| c.gen == id.gen) else {
            return false;
        };
        let Phase::WebSocket(ws) = &mut c.phase else {
            return false;
        };
        if ws.close_sent.is_some() {
            return true;
        }
        if c.out_pos >= c.out.len() {
            c.last_write = self.now;
        }
        let mut io = WsIo {
            input: &mut c.input,
            out: &mut c.out,
        };
        let frame = tungstenite::protocol::CloseFrame {
            code: code.into(),
            reason: reason.into(),
        };
        if ws.ctx.close(&mut io, Some(frame)).is_err() {
            ws.terminated = true;
        }
        ws.close_sent = Some(self.now);
        if !ws.close_emitted {
            ws.close_emitted = true;
            self.ws_events.push_back(WsEvent::Close {
                id,
                code,
                reason: reason.to_string(),
            });
        }
        self.mark_dirty(key);
        self.schedule(key);
        true
    }

    /// Answers a WebSocket upgrade request: 101 (queued in order behind earlier responses),
    /// or an error status and close.
    fn upgrade_websocket(&mut self, key: usize, head: Head) {
        let handshake_late = self.conns.get(key).is_some_and(|c| {
            c.head_started.is_some_and(|t| {
                self.ws_routes
                    .iter()
                    .find(|r| r.path == head.uri.path())
                    .is_some_and(|r| self.now.duration_since(t) > r.config.handshake_timeout)
            })
        });
        let result = if handshake_late {
            Err(ws::refuse_timeout())
        } else {
            ws::handshake(
                &self.ws_routes,
                &head.method,
                head.version,
                head.uri.path(),
                &head.headers,
            )
            .map_err(|refusal| *refusal)
        };
        let access = self.config.access_log.then(|| access_facts(&head));
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.served += 1;
        c.phase = Phase::Done;
        let seq = c.next_seq;
        c.next_seq += 1;
        self.metrics.request_received();
        let (response, upgrade, keep_alive) = match result {
            Ok(accepted) => (
                accepted.response,
                Some(Box::new(PendingUpgrade {
                    route: accepted.route,
                    protocol: accepted.protocol,
                    uri: head.uri,
                    headers: head.headers,
                })),
                true,
            ),
            Err(refusal) => (refusal, None, false),
        };
        self.metrics
            .record_response(response.status(), Duration::ZERO);
        c.slots.push_back(Slot {
            seq,
            head_request: false,
            version: head.version,
            keep_alive,
            handed_out: false,
            received: self.now,
            response: Some(response),
            upgrade,
            access,
        });
        if c.slots.len() == 1 {
            self.mark_dirty(key);
        }
    }

    /// Reads every complete frame in the input buffer and turns messages into events.
    fn ws_read(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let Phase::WebSocket(ws) = &mut c.phase else {
            return;
        };
        let id = ws.id;
        let mut io = WsIo {
            input: &mut c.input,
            out: &mut c.out,
        };
        while !ws.terminated {
            match ws.ctx.read(&mut io) {
                Ok(msg) => {
                    ws.last_seen = self.now;
                    match msg {
                        tungstenite::Message::Text(t) => self.ws_events.push_back(WsEvent::Text {
                            id,
                            text: t.as_str().to_string(),
                        }),
                        tungstenite::Message::Binary(data) => {
                            self.ws_events.push_back(WsEvent::Binary { id, data })
                        }
                        tungstenite::Message::Pong(data) => {
                            ws.ping_sent = None;
                            self.ws_events.push_back(WsEvent::Pong { id, data });
                        }
                        tungstenite::Message::Close(frame) => {
                            if !ws.close_emitted {
                                ws.close_emitted = true;
                                let (code, reason) = frame
                                    .map(|f| (u16::from(f.code), f.reason.as_str().to_string()))
                                    .unwrap_or((1005, String::new()));
                                self.ws_events
                                    .push_back(WsEvent::Close { id, code, reason });
                            }
                            if ws.close_sent.is_none() {
                                ws.close_sent = Some(self.now);
                            }
                        }
                        tungstenite::Message::Ping(_) | tungstenite::Message::Frame(_) => {}
                    }
                }
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    ws.terminated = true;
                }
                Err(e) => {
                    let code = ws::close_code_for(&e);
                    let reason = e.to_string();
                    self.ws_events.push_back(WsEvent::Error {
                        id,
                        error: reason.clone(),
                    });
                    if !ws.close_emitted {
                        ws.close_emitted = true;
                        self.ws_events.push_back(WsEvent::Close {
                            id,
                            code,
                            reason: reason.clone(),
                        });
                    }
                    let frame = tungstenite::protocol::CloseFrame {
                        code: code.into(),
                        reason: reason.chars().take(100).collect::<String>().into(),
                    };
                    let _ = ws.ctx.close(&mut io, Some(frame));
                    ws.close_sent.get_or_insert(self.now);
                    // A failed connection is not read again (RFC 6455 7.1.7).
                    ws.terminated = true;
                }
            }
        }
        let wrote = !c.out.is_empty();
        let terminated = ws.terminated;
        if wrote || terminated {
            self.mark_dirty(key);
        }
        self.schedule(key);
    }

    // ----- tasks and timers ------------------------------------------------------------------

    /// Registers a background task, resumed by the loop whenever it is woken; its waker also
    /// breaks a blocking [`wait`](Server::wait). A panicking task is removed and logged.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + 'static) -> TaskId {
        self.tasks.spawn(&self.hub, Box::pin(task))
    }

    /// Cancels a task; returns whether it was still registered.
    pub fn cancel(&mut self, task: TaskId) -> bool {
        self.tasks.cancel(task)
    }

    /// Background tasks still registered.
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// A future that completes after `duration`, driven by this server's loop.
    pub fn sleep(&self, duration: Duration) -> crate::task::Sleep {
        self.timer().sleep(duration)
    }

    /// A cloneable, `Send` handle for creating timers.
    pub fn timer(&self) -> Timer {
        Timer {
            hub: Arc::clone(&self.hub),
        }
    }

    /// A cloneable, `Send` handle for answering requests from tasks or other threads.
    pub fn responder(&self) -> Responder {
        Responder {
            hub: Arc::clone(&self.hub),
        }
    }

    // ----- pool integration ------------------------------------------------------------------

    /// Marks this server as a pool worker with this id (worker-pool mode: it binds nothing).
    pub fn set_worker_id(&mut self, id: u32) {
        self.worker_id = Some(id);
        self.mode = ServerMode::WorkerPool;
    }

    /// The worker id, in a pool.
    pub fn worker_id(&self) -> Option<u32> {
        self.worker_id
    }

    /// Standalone or worker-pool.
    pub fn mode(&self) -> ServerMode {
        self.mode
    }

    /// Serves a connection accepted elsewhere (the pool's master, or the app). Switches the
    /// server to worker-pool mode if it has no listener of its own.
    pub fn add_external_connection(
        &mut self,
        stream: std::net::TcpStream,
        meta: ConnectionMeta,
    ) -> Result<(), Error> {
        if self.draining.is_some() {
            // Refused politely: the worker is going away.
            let _ = reject_overloaded(stream);
            return Ok(());
        }
        if self.listeners.iter().all(Option::is_none) {
            self.mode = ServerMode::WorkerPool;
            self.running = true;
        }
        stream
            .set_nonblocking(true)
            .map_err(|e| Error::io("making an external connection non-blocking", e))?;
        let peer = match meta.peer_addr {
            Some(p) => p,
            None => stream
                .peer_addr()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
        };
        self.now = Instant::now();
        self.add_conn(TcpStream::from_std(stream), peer);
        Ok(())
    }

    /// Adds a listening socket (for example a `SO_REUSEPORT` socket bound by a pool worker, or
    /// one inherited from systemd). It is made non-blocking.
    pub fn add_listener(&mut self, listener: std::net::TcpListener) -> Result<(), Error> {
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("making a listener non-blocking", e))?;
        self.register_listener(TcpListener::from_std(listener))?;
        self.running = true;
        Ok(())
    }

    /// Watches another file descriptor in this server's poll (edge-triggered readability).
    pub fn add_event_source(&mut self, source: Box<dyn EventSource>) -> Result<SourceId, Error> {
        let fd = source.raw_fd();
        let key = self.sources.insert(Some(source));
        self.poll
            .registry()
            .register(
                &mut SourceFd(&fd),
                Token(SOURCE_BASE + key),
                Interest::READABLE,
            )
            .map_err(|e| Error::io("registering an event source", e))?;
        Ok(SourceId(key))
    }

    /// Stops watching an event source and returns it.
    pub fn remove_event_source(&mut self, id: SourceId) -> Option<Box<dyn EventSource>> {
        let source = self.sources.try_remove(id.0)??;
        let fd = source.raw_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        Some(source)
    }

    /// Replaces the TLS certificates (for example after re-reading them on SIGHUP). New
    /// connections use the new ones; open connections keep theirs. `None` turns TLS off.
    pub fn set_tls(&mut self, tls: Option<crate::tls::TlsConfig>) {
        self.tls = tls.as_ref().map(|t| t.rustls_config());
        self.config.tls = tls;
    }

    /// Whether new connections are served over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The first listener's local address (useful after binding port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .flatten()
            .find_map(|l| l.local_addr().ok())
    }

    /// Counters and derived figures.
    pub fn metrics(&self) -> Metrics {
        self.metrics.snapshot(self.conns.len(), Instant::now())
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Calls `observer` with the number of open connections each time a connection opens or
    /// closes (the worker pool reports its live load this way). `None` removes it.
    pub fn set_connection_observer(&mut self, observer: Option<Box<dyn FnMut(usize)>>) {
        self.conn_observer = observer;
    }

    /// Calls `observer` each time the application's loop turns (`wait` or `has_request` has
    /// polled) and each time the application takes a request, so a watchdog can tell a loop
    /// that stopped turning, and what it was doing then (the worker pool's liveness check
    /// works this way). `None` removes it. The observer runs inside the loop: keep it short.
    pub fn set_activity_observer(&mut self, observer: Option<ActivityObserver>) {
        self.activity_observer = observer;
    }

    /// Answers the admin endpoints under [`ServerConfig::admin_prefix`] with `source`
    /// instead of this server's own figures (the worker pool answers for the whole pool this
    /// way). `None` restores the default.
    pub fn set_admin_source(&mut self, source: Option<crate::admin::AdminSource>) {
        self.admin_source = source;
    }

    /// The answer to an admin endpoint ([`crate::admin`]): from the source set with
    /// [`set_admin_source`](Server::set_admin_source) (in a worker pool: the whole pool), or
    /// from this server's own figures. An application can serve it on routes of its own.
    pub fn admin_reply(&mut self, endpoint: crate::admin::Endpoint) -> crate::admin::Reply {
        let metrics = self.metrics();
        let ctx = crate::admin::AdminContext {
            metrics: &metrics,
            draining: self.draining.is_some() || !self.running,
        };
        match self.admin_source.as_mut() {
            Some(source) => source(endpoint, &ctx),
            None => crate::admin::single_reply(endpoint, &ctx),
        }
    }

    fn notify_connection_count(&mut self) {
        if let Some(observer) = self.conn_observer.as_mut() {
            observer(self.conns.len());
        }
    }

    // ----- the turn --------------------------------------------------------------------------

    fn turn(&mut self, timeout: Option<Duration>) -> Result<(), Error> {
        self.flush_dirty();
        let now = Instant::now();
        let mut timeout = timeout;
        let immediate =
            !self.again.is_empty() || self.accept_again || self.hub.has_work(&self.hub.lock());
        if immediate {
            timeout = Some(Duration::ZERO);
        } else if let Some(next) = self.next_deadline() {
            let until = next.saturating_duration_since(now);
            timeout = Some(timeout.map_or(until, |t| t.min(until)));
        }
        let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        let polled = self.poll.poll(&mut events, timeout);
        self.now = Instant::now();
        self.date.refresh_at(self.now);
        if let Some(observer) = self.activity_observer.as_mut() {
            observer(LoopActivity::Turn);
        }
        match polled {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                self.events = events;
                return Err(Error::io("epoll_wait", e));
            }
        }
        for event in events.iter() {
            let token = event.token().0;
            if token == WAKER.0 {
                self.hub.clear_signal();
            } else if token >= LISTENER_BASE {
                self.accept(token - LISTENER_BASE);
            } else if token >= SOURCE_BASE {
                self.run_source(token - SOURCE_BASE);
            } else {
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    let hang_up = event.is_read_closed() || event.is_error();
                    self.read_ready(token, hang_up);
                }
                if event.is_writable() || event.is_error() {
                    self.pump(token);
                }
                self.after_io(token);
            }
        }
        self.events = events;

        if self
            .accept_paused_until
            .is_some_and(|until| self.now >= until)
        {
            // Connections may have queued while accepting was paused: no new edge will come.
            self.accept_again = true;
        }
        if self.accept_again {
            self.accept_again = false;
            for i in 0..self.listeners.len() {
                self.accept(i);
            }
        }
        for key in std::mem::take(&mut self.again) {
            if let Some(c) = self.conns.get_mut(key) {
                c.read_paused = false;
                self.process_input(key);
                self.on_readable(key);
                self.after_io(key);
            }
        }
        self.fire_conn_timers();
        self.hub.fire_timers(self.now);
        self.drain_hub();
        self.flush_dirty();
        self.check_drained();
        Ok(())
    }

    fn next_deadline(&self) -> Option<Instant> {
        let conn = self.timers.peek().map(|Reverse((at, _, _))| *at);
        let timer = self.hub.next_timer();
        let drain = self.draining.as_ref().map(|d| d.deadline);
        let accept = self.accept_paused_until;
        [conn, timer, drain, accept].into_iter().flatten().min()
    }

    /// Applies everything other threads and tasks handed over, then runs woken tasks (twice at
    /// most per turn, so a task that always wakes itself cannot starve I/O).
    fn drain_hub(&mut self) {
        // Tasks run once per pass: a task that wakes itself (yield_now) runs again on the next
        // pass, which then does not block. What the tasks handed over is applied right after.
        for round in 0..2 {
            let (woken, streams, responses) = {
                let mut inner = self.hub.lock();
                let woken = if round == 0 {
                    std::mem::take(&mut inner.woken_tasks)
                } else {
                    Vec::new()
                };
                (
                    woken,
                    std::mem::take(&mut inner.streams),
                    std::mem::take(&mut inner.responses),
                )
            };
            for (id, response) in responses {
                if let Err(e) = self.respond(id, response) {
                    tracing::warn!(error = %e, "response from a responder ignored");
                }
            }
            for (key, gen) in streams {
                if self.conns.get(key).is_some_and(|c| c.gen == gen) {
                    self.mark_dirty(key);
                }
            }
            // The second pass applies what the tasks run in the first handed over; when the
            // first woke none there is nothing new to wait for (anything another thread hands
            // over meanwhile wakes the poll, and the next turn applies it).
            if woken.is_empty() {
                break;
            }
            self.tasks.run(woken);
        }
    }

    fn check_drained(&mut self) {
        let Some(d) = &self.draining else { return };
        if self.conns.is_empty() && self.ready.is_empty() {
            self.draining = None;
            self.running = false;
            self.shutdown_outcome = Some(ShutdownOutcome::Drained);
        } else if self.now >= d.deadline {
            let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
            for key in keys {
                self.close_conn(key);
            }
            self.ready.clear();
            self.outstanding = 0;
            self.draining = None;
            self.running = false;
            self.shutdown_outcome = Some(ShutdownOutcome::ForceClosed);
        }
    }

    fn run_source(&mut self, key: usize) {
        let Some(slot) = self.sources.get_mut(key) else {
            return;
        };
        let Some(mut source) = slot.take() else {
            return;
        };
        source.on_ready(self);
        if let Some(slot) = self.sources.get_mut(key) {
            *slot = Some(source);
        }
    }

    // ----- accepting -------------------------------------------------------------------------

    fn register_listener(&mut self, mut listener: TcpListener) -> Result<(), Error> {
        let idx = self.listeners.len();
        self.poll
            .registry()
            .register(
                &mut listener,
                Token(LISTENER_BASE + idx),
                Interest::READABLE,
            )
            .map_err(|e| Error::io("registering the listener", e))?;
        self.listeners.push(Some(listener));
        Ok(())
    }

    fn drop_listeners(&mut self) {
        for l in self.listeners.iter_mut() {
            if let Some(mut l) = l.take() {
                let _ = self.poll.registry().deregister(&mut l);
            }
        }
        self.listeners.clear();
        self.accept_again = false;
    }

    fn accept(&mut self, idx: usize) {
        if let Some(until) = self.accept_paused_until {
            if self.now < until {
                return;
            }
            self.accept_paused_until = None;
        }
        for _ in 0..self.config.max_accepts_per_pass {
            let Some(Some(listener)) = self.listeners.get(idx) else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    self.emfile_logged = false;
                    if self.conns.len() >= self.config.max_connections {
                        self.metrics.connection_opened();
                        self.metrics.connection_closed();
                        let _ = reject_overloaded_mio(stream);
                        continue;
                    }
                    self.add_conn(stream, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => match e.raw_os_error() {
                    Some(
                        nix::libc::EMFILE
                        | nix::libc::ENFILE
                        | nix::libc::ENOBUFS
                        | nix::libc::ENOMEM,
                    ) => {
                        if !self.emfile_logged {
                            tracing::error!(error = %e, "cannot accept: out of file descriptors or memory; pausing accepts");
                            self.emfile_logged = true;
                        }
                        self.accept_paused_until = Some(self.now + EMFILE_BACKOFF);
                        self.accept_again = false;
                        return;
                    }
                    // The client gave up before we accepted (ECONNABORTED, EPERM by a firewall).
                    _ => continue,
                },
            }
        }
        // Budget spent with connections possibly still queued (edge-triggered: no new event).
        self.accept_again = true;
    }

    fn add_conn(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        if self.conns.len() >= self.config.max_connections {
            self.metrics.connection_opened();
            self.metrics.connection_closed();
            let _ = reject_overloaded_mio(stream);
            return;
        }
        if self.config.nodelay {
            let _ = stream.set_nodelay(true);
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(error = %e, "cannot register a connection");
            return;
        }
        let gen = self.next_gen;
        self.next_gen += 1;
        let mut conn = Conn::new(gen, stream, peer, self.now);
        conn.proxy_pending = self
            .config
            .proxy_protocol
            .as_ref()
            .is_some_and(|p| p.trusts(peer.ip()));
        if let Some(tls) = &self.tls {
            match rustls::ServerConnection::new(Arc::clone(tls)) {
                Ok(t) => conn.tls = Some(Box::new(t)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a TLS session");
                    let _ = self.poll.registry().deregister(&mut conn.sock);
                    return;
                }
            }
        }
        entry.insert(conn);
        self.metrics.connection_opened();
        self.schedule(key);
        self.notify_connection_count();
    }

    // ----- reading ---------------------------------------------------------------------------

    fn on_readable(&mut self, key: usize) {
        self.read_ready(key, true);
    }

    /// Reads from a readable connection. With `drain` false, a short read is taken to mean
    /// the socket is empty (edge-triggered epoll reports any later data or a hang-up as a new
    /// event), saving the `read` that would only return `EAGAIN`.
    fn read_ready(&mut self, key: usize, drain: bool) {
        let max_buffer = self.config.max_head_size.max(64 * 1024);
        let mut budget = READ_BUDGET;
        loop {
            let Some(c) = self.conns.get_mut(key) else {
                return;
            };
            if c.peer_eof {
                return;
            }
            if let Closing::Lingering(_) = c.closing {
                let mut sink = [0u8; 4096];
                match c.sock.read(&mut sink) {
                    Ok(0) => {
                        self.close_conn(key);
                        return;
                    }
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(_) => {
                        self.close_conn(key);
                        return;
                    }
                }
            }
            let reading_allowed = !matches!(c.phase, Phase::Done)
                && c.closing == Closing::Open
                && c.in_flight() < self.config.max_pipelined
                && c.input.data().len() < max_buffer;
            if !reading_allowed || budget == 0 {
                c.read_paused = true;
                if budget == 0 && !self.again.contains(&key) {
                    self.again.push(key);
                }
                return;
            }
            let was_handshaking = c.handshaking();
            let filled = c.fill_input(max_buffer);
            if was_handshaking && !c.handshaking() {
                // The handshake just finished: the head timer starts now.
                c.last_read = self.now;
            }
            match filled {
                Ok(Filled::Eof) => {
                    c.peer_eof = true;
                    self.process_input(key);
                    self.on_peer_eof(key);
                    return;
                }
                Ok(Filled::Data(n)) => {
                    budget = budget.saturating_sub(n);
                    c.last_read = self.now;
                    let drained = !drain && c.tls.is_none() && c.input.last_read_short;
                    self.process_input(key);
                    if drained {
                        return;
                    }
                }
                Ok(Filled::WouldBlock) => {
                    if c.tls.is_some() && c.tls.as_ref().is_some_and(|t| t.wants_write()) {
                        // Handshake records queued while the socket was full.
                        self.mark_dirty(key);
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close_conn(key);
                    return;
                }
            }
        }
    }

    fn on_peer_eof(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if let Phase::WebSocket(_) = c.phase {
            // Without a close frame: the Close event says 1006.
            self.close_conn(key);
            return;
        }
        // A half-closed client still gets the answers to what it sent.
        let mid_request = !matches!(c.phase, Phase::Head | Phase::Done) || !c.input.is_empty();
        if mid_request {
            c.phase = Phase::Done;
        }
        if c.slots.is_empty() && !c.has_output() {
            self.close_conn(key);
        } else {
            c.closing = Closing::AfterFlush;
        }
    }

    /// Parses every complete request in the input buffer (up to the pipelining limit).
    fn process_input(&mut self, key: usize) {
        loop {
            let Some(c) = self.conns.get_mut(key) else {
                return;
            };
            if let Phase::WebSocket(_) = c.phase {
                self.ws_read(key);
                return;
            }
            if c.closing != Closing::Open {
                return;
            }
            match &mut c.phase {
                Phase::Done | Phase::WebSocket(_) => return,
                Phase::Head => {
                    if c.in_flight() >= self.config.max_pipelined {
                        c.read_paused = true;
                        return;
                    }
                    let data = c.input.data();
                    if data.is_empty() {
                        c.head_started = None;
                        c.head_scanned = 0;
                        return;
                    }
                    if c.head_started.is_none() {
                        c.head_started = Some(self.now);
                    }
                    if c.proxy_pending {
                        match crate::proxy::parse(data) {
                            crate::proxy::Parsed::Incomplete => return,
                            crate::proxy::Parsed::Header { len, source } => {
                                c.input.consume(len);
                                c.proxy_pending = false;
                                c.head_started = None;
                                if let Some(source) = source {
                                    c.peer = source;
                                }
                                continue;
                            }
                            crate::proxy::Parsed::Invalid => {
                                tracing::debug!(peer = %c.peer, "no valid PROXY header from a trusted proxy");
                                self.close_conn(key);
                                return;
                            }
                        }
                    }
                    // The first look at a head parses it at once: behind a pipelined request
                    // the next head is usually complete already, and parsing an incomplete one
                    // costs no more than the blank-line search. Later looks (a head arriving in
                    // pieces) search only the new bytes for a blank line first, so a slow
                    // client's head is not parsed again on every read.
                    let first_look = c.head_scanned == 0;
                    if !first_look && !may_be_complete(data, c.head_scanned) {
                        c.head_scanned = data.len();
                        if data.len() > self.limits.max_head_size {
                            let err = match parse_head(data, &self.limits) {
                                Err(e) => e,
                                Ok(_) => RequestError::HeadTooLarge,
                            };
                            self.reject(key, err);
                        }
                        return;
                    }
                    let cache = c.head_cache.get_or_insert_with(Box::default);
                    match parse_head_cached(data, &self.limits, cache) {
                        Ok(None) => {
                            c.head_scanned = data.len();
                            return;
                        }
                        // As without the shortcut: a malformed head is answered once its blank
                        // line arrives or it outgrows the limit, not from a partial read.
                        Err(_)
                            if first_look
                                && data.len() <= self.limits.max_head_size
                                && !may_be_complete(data, 0) =>
                        {
                            c.head_scanned = data.len();
                            return;
                        }
                        Err(e) => {
                            self.reject(key, e);
                            return;
                        }
                        Ok(Some(head)) => {
                            c.input.consume(head.head_len);
                            c.head_scanned = 0;
                            c.head_started = None;
                            self.start_body(key, head);
                        }
                    }
                }
                Phase::Body { framing, acc, .. } => {
                    let data = c.input.data();
                    if data.is_empty() {
                        return;
                    }
                    let done = match framing {
                        BodyFraming::Length(remaining) => {
                            let take = (*remaining).min(data.len() as u64) as usize;
                            let r = append_body(acc, &data[..take]);
                            *remaining -= take as u64;
                            c.input.consume(take);
                            if let Err(e) = r {
                                tracing::error!(error = %e, "cannot spool a request body");
                                self.close_conn(key);
                                return;
                            }
                            *remaining == 0
                        }
                        BodyFraming::Chunked(decoder) => {
                            let mut decoded = Vec::new();
                            let target = match acc {
                                BodyAcc::Memory(v) => v,
                                BodyAcc::File { .. } => &mut decoded,
                            };
                            match decoder.decode(data, target) {
                                Ok(used) => {
                                    c.input.consume(used);
                                    if !decoded.is_empty() {
                                        if let Err(e) = append_body(acc, &decoded) {
                                            tracing::error!(error = %e, "cannot spool a request body");
                                            self.close_conn(key);
                                            return;
                                        }
                                    }
                                    decoder.is_done()
                                }
                                Err(e) => {
                                    self.reject(key, e);
                                    return;
                                }
                            }
                        }
                    };
                    if let BodyAcc::Memory(v) = acc {
                        if v.len() > self.config.body_spool_threshold {
                            if let Err(e) = spool(acc, self.config.spool_dir.as_deref()) {
                                tracing::error!(error = %e, "cannot create a temp file for a request body");
                                self.close_conn(key);
                                return;
                            }
                        }
                    }
                    if !done {
                        return;
                    }
                    let Phase::Body { head, acc, .. } =
                        std::mem::replace(&mut c.phase, Phase::Head)
                    else {
                        return;
                    };
                    let body = match acc {
                        BodyAcc::Memory(v) => RequestBody::Bytes(Bytes::from(v)),
                        BodyAcc::File { file, len } => RequestBody::File { file, len },
                    };
                    self.complete(key, *head, body);
                }
            }
        }
    }

    fn start_body(&mut self, key: usize, head: Head) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if head.expect_continue && head.framing != Framing::None {
            // Only when nothing is queued ahead of it; otherwise the client's own timer sends
            // the body anyway (RFC 9110 10.1.1).
            if c.slots.is_empty() && !c.has_output() {
                c.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                if !c.dirty {
                    c.dirty = true;
                    self.dirty.push(key);
                }
            }
        }
        match head.framing {
            Framing::None => self.complete(key, head, RequestBody::Empty),
            Framing::Length(n) => {
                let cap = (n as usize)
                    .min(self.config.body_spool_threshold + 1)
                    .min(1 << 20);
                c.phase = Phase::Body {
                    head: Box::new(head),
                    framing: BodyFraming::Length(n),
                    acc: BodyAcc::Memory(Vec::with_capacity(cap)),
                };
            }
            Framing::Chunked => {
                c.phase = Phase::Body {
                    head: Box::new(head),
                    framing: BodyFraming::Chunked(ChunkedDecoder::new(
                        self.limits.max_body_size,
                        self.limits.max_head_size,
                    )),
                    acc: BodyAcc::Memory(Vec::new()),
                };
            }
        }
    }

    fn complete(&mut self, key: usize, head: Head, body: RequestBody) {
        // The admin endpoints come first: probes are never rate-limited nor queued.
        if let Some(prefix) = &self.config.admin_prefix {
            // A path under the prefix has the prefix's second byte (its first is always '/'):
            // most paths already differ there, which is cheaper to check than the whole prefix.
            let path = head.uri.path();
            let may_match = prefix.len() < 2 || path.as_bytes().get(1) == prefix.as_bytes().get(1);
            if let Some(endpoint) = may_match
                .then(|| crate::admin::route(prefix, path))
                .flatten()
            {
                let resp = if matches!(head.method, http::Method::GET | http::Method::HEAD) {
                    self.admin_reply(endpoint).into_response()
                } else {
                    let mut r = crate::admin::Reply::text(
                        http::StatusCode::METHOD_NOT_ALLOWED,
                        "GET or HEAD only\n",
                    )
                    .into_response();
                    r.headers_mut()
                        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                    r
                };
                self.answer_now(key, &head, resp);
                return;
            }
        }
        if let Some(limit) = self.rate_limit.as_mut() {
            let Some(c) = self.conns.get(key) else { return };
            let client = limit.key(c.peer.ip(), &head.headers);
            // WebSocket upgrades count like any request.
            if let crate::ratelimit::Decision::Limited { retry_after } =
                limit.check(client, self.now)
            {
                let resp = limit.refusal(retry_after);
                self.metrics.request_rate_limited();
                self.answer_now(key, &head, resp);
                return;
            }
        }
        if head.upgrade_header
            && !self.ws_routes.is_empty()
            && ws::is_websocket_upgrade(&head.headers)
        {
            self.upgrade_websocket(key, head);
            return;
        }
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.served += 1;
        let keep_alive = head.keep_alive
            && self.config.keep_alive
            && c.served < self.config.max_requests_per_connection
            && self.draining.is_none();
        if !keep_alive {
            c.phase = Phase::Done;
        }
        let seq = c.next_seq;
        c.next_seq += 1;
        c.slots.push_back(Slot {
            seq,
            head_request: head.method == http::Method::HEAD,
            version: head.version,
            keep_alive,
            handed_out: false,
            received: self.now,
            response: None,
            upgrade: None,
            access: self.config.access_log.then(|| access_facts(&head)),
        });
        let mut req = http::Request::new(body);
        *req.method_mut() = head.method;
        *req.uri_mut() = head.uri;
        *req.version_mut() = head.version;
        *req.headers_mut() = head.headers;
        self.metrics.request_received();
        self.ready.push_back(Request {
            id: RequestId {
                conn: key as u32,
                gen: c.gen,
                seq,
            },
            peer_addr: c.peer,
            worker_id: self.worker_id,
            received_at: self.now,
            inner: req,
        });
    }

    /// Answers a request on the server's behalf (429), keeping the connection's keep-alive
    /// rules, in order behind the responses queued before it.
    fn answer_now(&mut self, key: usize, head: &Head, resp: http::Response<Body>) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.served += 1;
        let keep_alive = head.keep_alive
            && self.config.keep_alive
            && c.served < self.config.max_requests_per_connection
            && self.draining.is_none();
        if !keep_alive {
            c.phase = Phase::Done;
        }
        let seq = c.next_seq;
        c.next_seq += 1;
        self.metrics.request_received();
        self.metrics.record_response(resp.status(), Duration::ZERO);
        c.slots.push_back(Slot {
            seq,
            head_request: head.method == http::Method::HEAD,
            version: head.version,
            keep_alive,
            handed_out: false,
            received: self.now,
            response: Some(resp),
            upgrade: None,
            access: self.config.access_log.then(|| access_facts(head)),
        });
        if c.slots.len() == 1 {
            self.mark_dirty(key);
        }
    }

    /// Feeds the static-file cache counters of [`Server::metrics`] (running totals, for
    /// example from [`StaticFiles`](crate::fs::StaticFiles)' `cache_hits()` and
    /// `cache_misses()`).
    pub fn set_static_cache_counters(&mut self, hits: u64, misses: u64) {
        self.metrics.cache_hits = hits;
        self.metrics.cache_misses = misses;
    }

    /// Client addresses the rate limiter currently tracks (bounded: idle ones are purged).
    pub fn rate_limit_keys(&self) -> usize {
        self.rate_limit.as_ref().map_or(0, |r| r.tracked())
    }

    /// Keeps the rate limit's allowances in `table` (the worker pool's, shared by every
    /// worker), so the limit holds pool-wide instead of per process.
    pub(crate) fn share_rate_limit(
        &mut self,
        table: std::rc::Rc<dyn crate::ratelimit::SharedGcra>,
    ) {
        if let Some(limit) = self.rate_limit.as_mut() {
            limit.share(table);
        }
    }

    /// Answers a bad request with its status after the responses queued before it, then closes.
    fn reject(&mut self, key: usize, err: RequestError) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        tracing::debug!(peer = %c.peer, error = %err, "request rejected");
        c.must_linger = true;
        c.phase = Phase::Done;
        let seq = c.next_seq;
        c.next_seq += 1;
        let status = err.status();
        let mut resp = http::Response::new(Body::from(format!("{err}\n")));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        c.slots.push_back(Slot {
            seq,
            head_request: false,
            version: Version::HTTP_11,
            keep_alive: false,
            handed_out: false,
            received: self.now,
            response: Some(resp),
            upgrade: None,
            access: self
                .config
                .access_log
                .then(|| Box::new((http::Method::GET, "-".to_string()))),
        });
        self.metrics.request_received();
        self.metrics.record_response(status, Duration::ZERO);
        if c.slots.len() == 1 && !c.dirty {
            c.dirty = true;
            self.dirty.push(key);
        }
    }

    fn mark_dirty(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    // ----- writing ---------------------------------------------------------------------------

    fn flush_dirty(&mut self) {
        while let Some(key) = self.dirty.pop() {
            if let Some(c) = self.conns.get_mut(key) {
                c.dirty = false;
                self.pump(key);
                self.after_io(key);
            }
        }
    }

    /// Encodes ready responses in order and writes as much as the socket takes.
    fn pump(&mut self, key: usize) {
        let mut upgraded = false;
        if let Some(c) = self.conns.get_mut(key) {
            if !c.has_output() {
                // The write-stall clock runs from when output becomes pending.
                c.last_write = self.now;
            }
        }
        loop {
            let Some(c) = self.conns.get_mut(key) else {
                return;
            };
            // Encode every ready response at the front into one buffer (pipelining batch).
            while c.active.is_none() && c.out.len() < OUT_BATCH {
                let ready = c.slots.front().is_some_and(|s| s.response.is_some());
                if !ready {
                    break;
                }
                let Some(mut slot) = c.slots.pop_front() else {
                    break;
                };
                c.front_seq = slot.seq + 1;
                if let Some(access) = slot.access.take() {
                    log_access(&slot, &access, c.peer, self.worker_id);
                }
                if let Some(up) = slot.upgrade.take() {
                    encode_response(c, key, &mut slot, &self.hub, &self.date, false);
                    let id = WsId {
                        conn: key as u32,
                        gen: c.gen,
                    };
                    let config = &self.ws_routes[up.route].config;
                    c.phase =
                        Phase::WebSocket(Box::new(WsConn::new(id, up.route, config, self.now)));
                    self.ws_events.push_back(WsEvent::Connect {
                        id,
                        path: self.ws_routes[up.route].path.clone(),
                        peer: c.peer,
                        protocol: up.protocol,
                        uri: up.uri,
                        headers: Box::new(up.headers),
                    });
                    c.input.shrink_if_idle_to_zero();
                    c.head_cache = None;
                    upgraded = true;
                    break;
                }
                let close = encode_response(
                    c,
                    key,
                    &mut slot,
                    &self.hub,
                    &self.date,
                    self.draining.is_some(),
                );
                if c.tls.is_none() && matches!(c.active, Some(Active::File { .. })) {
                    // Cork while head and file go out, so the head shares a segment with the
                    // first file bytes and full segments follow (nginx's tcp_nopush).
                    let _ = socket2::SockRef::from(&c.sock).set_tcp_cork(true);
                }
                if close {
                    // Later pipelined requests will not be answered; their ids go stale.
                    let dropped = c.slots.iter().filter(|s| s.handed_out).count();
                    self.outstanding = self.outstanding.saturating_sub(dropped);
                    c.slots.clear();
                    c.phase = Phase::Done;
                    c.closing = Closing::AfterFlush;
                }
            }
            if let Some(Active::Stream { shared, chunked }) = &c.active {
                let mut st = shared.lock();
                while let Some(chunk) = st.chunks.pop_front() {
                    st.buffered -= chunk.len();
                    if *chunked {
                        response::encode_chunk(&mut c.out, &chunk);
                    } else {
                        c.out.extend_from_slice(&chunk);
                    }
                    if c.out.len() >= OUT_BATCH {
                        break;
                    }
                }
                let finished = st.finished && st.chunks.is_empty();
                let aborted = st.aborted;
                drop(st);
                if aborted {
                    self.close_conn(key);
                    return;
                }
                if finished {
                    if *chunked {
                        c.out.extend_from_slice(response::LAST_CHUNK);
                    } else {
                        c.closing = Closing::AfterFlush;
                    }
                    c.active = None;
                }
            }
            if c.tls.is_some() {
                if let Some(Active::File {
                    file,
                    offset,
                    remaining,
                }) = &mut c.active
                {
                    if c.out.len() < OUT_BATCH {
                        if conn::read_file_chunk(file, offset, remaining, &mut c.out, 64 * 1024)
                            .is_err()
                        {
                            self.close_conn(key);
                            return;
                        }
                        if *remaining == 0 {
                            c.active = None;
                        }
                    }
                }
            }
            match c.write_out(self.now) {
                Ok(true) => {}
                Ok(false) => return,
                Err(_) => {
                    self.close_conn(key);
                    return;
                }
            }
            match &mut c.active {
                Some(Active::File { .. }) if c.tls.is_some() => continue,
                Some(Active::File {
                    file,
                    offset,
                    remaining,
                }) => match send_file(&c.sock, file, offset, remaining) {
                    Ok(progress) => {
                        if progress {
                            c.last_write = self.now;
                        }
                        if *remaining > 0 {
                            return;
                        }
                        c.active = None;
                        let _ = socket2::SockRef::from(&c.sock).set_tcp_cork(false);
                    }
                    Err(_) => {
                        self.close_conn(key);
                        return;
                    }
                },
                Some(Active::Stream { .. }) => return, // waiting for the producer
                None => {
                    if c.slots.front().is_none_or(|s| s.response.is_none()) {
                        break;
                    }
                }
            }
        }
        if upgraded {
            // Frames that came with the handshake are already buffered.
            self.ws_read(key);
            self.pump(key);
            return;
        }
        self.after_responses(key);
    }

    /// After output drained: close, or resume reading if pipelining was paused.
    fn after_responses(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.has_output() || !c.slots.is_empty() {
            return;
        }
        if let Phase::WebSocket(ws) = &c.phase {
            if ws.terminated {
                self.begin_close(key);
            }
            return;
        }
        if let Closing::Lingering(_) = c.closing {
            return; // already closing; its deadline stands
        }
        let draining_idle = matches!(c.phase, Phase::Head)
            && c.input.is_empty()
            && idle_close_due(self.draining.as_ref(), self.idle_close_grace, self.now, c);
        if c.closing == Closing::AfterFlush
            || draining_idle
            || (matches!(c.phase, Phase::Done) && c.closing == Closing::Open)
        {
            self.begin_close(key);
            return;
        }
        c.input.shrink_if_idle();
        if c.read_paused && !self.again.contains(&key) {
            self.again.push(key);
        }
    }

    /// Shuts the write side and lingers, reading and discarding, so that the client receives
    /// the last response rather than a reset caused by unread input.
    fn begin_close(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.peer_eof {
            self.close_conn(key);
            return;
        }
        if let Closing::Lingering(_) = c.closing {
            return;
        }
        if let Some(tls) = c.tls.as_mut() {
            tls.send_close_notify();
            let _ = conn::flush_tls(tls, &mut c.sock);
        }
        // A clean end (the client asked to close and sent nothing more) needs no lingering;
        // after an error, or with unread input, the client may still be sending.
        let clean = !c.must_linger
            && c.input.is_empty()
            && c.input.last_read_short
            && matches!(c.phase, Phase::Head | Phase::Done);
        if clean {
            self.close_conn(key);
            return;
        }
        let _ = c.sock.shutdown(Shutdown::Write);
        c.closing = Closing::Lingering(self.now + defaults::LINGER);
        self.on_readable(key);
        self.schedule(key);
    }

    fn close_conn(&mut self, key: usize) {
        let Some(c) = self.conns.try_remove(key) else {
            return;
        };
        if let Phase::WebSocket(ws) = &c.phase {
            for room in &ws.rooms {
                self.rooms.leave(room, ws.id);
            }
            if !ws.close_emitted {
                self.ws_events.push_back(WsEvent::Close {
                    id: ws.id,
                    code: 1006,
                    reason: "connection dropped".to_string(),
                });
            }
        }
        // No EPOLL_CTL_DEL: the socket is closed when `c` drops, which removes it from the
        // epoll set (connection fds are never duplicated), saving a syscall per connection.
        let dropped = c
            .slots
            .iter()
            .filter(|s| s.handed_out && s.response.is_none())
            .count();
        self.outstanding = self.outstanding.saturating_sub(dropped);
        if let Some(Active::Stream { shared, .. }) = &c.active {
            let mut st = shared.lock();
            st.closed = true;
            st.notify = None;
        }
        self.metrics.connection_closed();
        self.notify_connection_count();
    }

    // ----- timeouts --------------------------------------------------------------------------

    /// Called after any I/O on a connection: resets its deadline.
    fn after_io(&mut self, key: usize) {
        if let Some(c) = self.conns.get(key) {
            if c.is_idle() && c.closing == Closing::Open && self.idle_close_due(c) {
                self.begin_close(key);
                return;
            }
        }
        self.schedule(key);
    }

    fn deadline(&self, c: &Conn) -> Option<Instant> {
        let cfg = &self.config;
        if let Closing::Lingering(at) = c.closing {
            return Some(at);
        }
        if c.handshaking() {
            return Some(c.accepted + cfg.tls_handshake_timeout);
        }
        if c.out_pos < c.out.len() || matches!(c.active, Some(Active::File { .. })) {
            return Some(c.last_write + cfg.write_timeout);
        }
        if let Phase::WebSocket(ws) = &c.phase {
            let wc = &self.ws_routes[ws.route].config;
            let mut at = if let Some(sent) = ws.close_sent {
                sent + wc.close_timeout
            } else if let Some(sent) = ws.ping_sent {
                sent + wc.pong_timeout
            } else if wc.auto_ping {
                ws.last_seen + wc.ping_interval
            } else {
                return None;
            };
            if ws.close_sent.is_none() && c.out_pos < c.out.len() {
                at = at.min(c.last_write + cfg.write_timeout);
            }
            return Some(at);
        }
        match c.phase {
            Phase::Body { .. } => return Some(c.last_read + cfg.body_timeout),
            Phase::Head => {
                if let Some(start) = c.head_started {
                    return Some(start + cfg.header_timeout);
                }
            }
            Phase::Done | Phase::WebSocket(_) => {}
        }
        if !c.slots.is_empty() || c.active.is_some() || c.peer_eof {
            return None; // the application has the next move
        }
        let idle_since = c.last_read.max(c.last_write);
        let keep_alive = idle_since + cfg.keep_alive_timeout;
        match &self.draining {
            Some(d) => Some(keep_alive.min(idle_since.max(d.started) + self.idle_close_grace)),
            None => Some(keep_alive),
        }
    }

    fn schedule(&mut self, key: usize) {
        let Some(c) = self.conns.get(key) else { return };
        let Some(at) = self.deadline(c) else { return };
        let gen = c.gen;
        let earlier = c.heap_deadline.is_none_or(|h| at < h);
        if earlier {
            self.timers.push(Reverse((at, key, gen)));
            if let Some(c) = self.conns.get_mut(key) {
                c.heap_deadline = Some(at);
            }
        }
    }

    fn fire_conn_timers(&mut self) {
        while let Some(Reverse((at, key, gen))) = self.timers.peek().copied() {
            if at > self.now {
                break;
            }
            self.timers.pop();
            let Some(c) = self.conns.get_mut(key) else {
                continue;
            };
            if c.gen != gen || c.heap_deadline != Some(at) {
                continue;
            }
            c.heap_deadline = None;
            let Some(due) = self.deadline(&self.conns[key]) else {
                continue;
            };
            if due > self.now {
                self.schedule(key);
                continue;
            }
            self.on_timeout(key);
        }
    }

    fn on_timeout(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if let Closing::Lingering(_) = c.closing {
            self.close_conn(key);
            return;
        }
        if let Phase::WebSocket(ws) = &mut c.phase {
            let wc = &self.ws_routes[ws.route].config;
            let write_stalled =
                c.out_pos < c.out.len() && c.last_write + self.config.write_timeout <= self.now;
            if ws.close_sent.is_some() || write_stalled {
                self.metrics.connection_timed_out();
                self.close_conn(key);
            } else if ws.ping_sent.is_some() {
                self.metrics.connection_timed_out();
                let id = ws.id;
                self.ws_close_with(id, 1008, "pong timeout");
            } else if wc.auto_ping {
                if c.out_pos >= c.out.len() {
                    c.last_write = self.now;
                }
                // An idle connection gives its input buffer back until the next frame.
                c.input.shrink_if_idle_to_zero();
                let mut io = WsIo {
                    input: &mut c.input,
                    out: &mut c.out,
                };
                let _ = ws
                    .ctx
                    .write(&mut io, tungstenite::Message::Ping(Bytes::new()));
                let _ = ws.ctx.flush(&mut io);
                ws.ping_sent = Some(self.now);
                self.mark_dirty(key);
                self.schedule(key);
            }
            return;
        }
        if self.draining.is_some()
            && matches!(c.phase, Phase::Head)
            && c.head_started.is_none()
            && c.input.is_empty()
            && !c.has_output()
            && c.slots.is_empty()
        {
            // Quiet for the whole drain grace: closed gracefully, not a timeout.
            self.begin_close(key);
            return;
        }
        self.metrics.connection_timed_out();
        let reading = match c.phase {
            Phase::Body { .. } => true,
            Phase::Head => c.head_started.is_some(),
            Phase::Done | Phase::WebSocket(_) => false,
        };
        if reading && !c.has_output() {
            // 408, after any responses still owed, then close.
            self.reject(key, RequestError::Timeout);
            if let Some(c) = self.conns.get_mut(key) {
                c.closing = Closing::AfterFlush;
                // Give the 408 a short write window of its own.
                c.last_write = self.now;
            }
            self.pump(key);
            self.after_io(key);
        } else {
            self.close_conn(key);
        }
    }

    fn slot_mut(&mut self, id: RequestId) -> Option<&mut Slot> {
        let c = self.conns.get_mut(id.conn as usize)?;
        if c.gen != id.gen {
            return None;
        }
        let idx = id.seq.checked_sub(c.front_seq)?;
        c.slots.get_mut(idx as usize)
    }
}

impl AsRawFd for Server {
    /// The epoll descriptor: readable when the server has work. Another event loop can watch
    /// it and call [`Server::has_request`] when it fires.
    fn as_raw_fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Streams still held by the app learn that their connection is gone.
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close_conn(key);
        }
    }
}

/// What the access log records of a request (only built when it is on).
fn access_facts(head: &Head) -> Box<(http::Method, String)> {
    Box::new((head.method.clone(), head.uri.to_string()))
}

/// One `tickhttp::access` event for a response about to be written.
fn log_access(slot: &Slot, access: &(http::Method, String), peer: SocketAddr, worker: Option<u32>) {
    let Some(resp) = slot.response.as_ref() else {
        return;
    };
    let bytes = if slot.head_request {
        Some(0)
    } else {
        resp.body().len()
    };
    tracing::info!(
        target: "tickhttp::access",
        method = %access.0,
        path = %access.1,
        status = resp.status().as_u16(),
        bytes,
        duration_ms = slot.received.elapsed().as_secs_f64() * 1000.0,
        worker,
        peer = %peer,
        "{} {} {}",
        access.0,
        access.1,
        resp.status().as_u16(),
    );
}

/// Encodes one response into the connection's output; returns whether the connection must
/// close after it. The response stays in `slot` (its body taken), which saves moving it.
fn encode_response(
    c: &mut Conn,
    key: usize,
    slot: &mut Slot,
    hub: &Arc<Hub>,
    date: &DateCache,
    draining: bool,
) -> bool {
    let Some(resp) = slot.response.as_mut() else {
        return false;
    };
    let body = std::mem::take(resp.body_mut());
    let status = resp.status();
    let no_body = response::status_has_no_body(status);
    let framing = if no_body {
        ResponseFraming::NoBody
    } else {
        match body.len() {
            Some(n) => ResponseFraming::Length(n),
            None if slot.version == Version::HTTP_11 => ResponseFraming::Chunked,
            None => ResponseFraming::UntilClose,
        }
    };
    let head_only = slot.head_request || no_body;
    let until_close = framing == ResponseFraming::UntilClose && !head_only;
    let last_in_drain = draining && c.slots.is_empty();
    // The app's own `Connection: close` is found by the encoder, while it copies the headers.
    let close = !slot.keep_alive || until_close || last_in_drain;
    let close = response::encode_server_head(
        &mut c.out,
        status,
        resp.headers(),
        date,
        if slot.head_request && framing == ResponseFraming::Chunked {
            ResponseFraming::UntilClose
        } else {
            framing
        },
        close,
        slot.version == Version::HTTP_10,
    );
    match body {
        Body::Empty => {}
        Body::Bytes(b) => {
            if !head_only {
                c.out.extend_from_slice(&b);
            }
        }
        Body::File { file, offset, len } => {
            if !head_only && len > 0 {
                c.active = Some(Active::File {
                    file,
                    offset,
                    remaining: len,
                });
            }
        }
        Body::Stream(stream) => {
            let mut st = stream.shared.lock();
            if head_only {
                st.closed = true;
            } else {
                st.notify = Some(Notify {
                    hub: Arc::clone(hub),
                    conn: key,
                    gen: c.gen,
                });
                drop(st);
                c.active = Some(Active::Stream {
                    shared: Arc::clone(&stream.shared),
                    chunked: framing == ResponseFraming::Chunked,
                });
            }
        }
    }
    close
}

/// `sendfile(2)` from the file to the socket until done or the socket is full. Returns whether
/// any byte moved.
fn send_file(
    sock: &TcpStream,
    file: &std::fs::File,
    offset: &mut u64,
    remaining: &mut u64,
) -> io::Result<bool> {
    let mut progress = false;
    while *remaining > 0 {
        let count = (*remaining).min(1 << 30) as usize;
        let mut off = *offset as nix::libc::off_t;
        match nix::sys::sendfile::sendfile(sock.as_fd(), file.as_fd(), Some(&mut off), count) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()), // file shrank
            Ok(n) => {
                *offset += n as u64;
                *remaining -= n as u64;
                progress = true;
            }
            Err(nix::errno::Errno::EAGAIN) => return Ok(progress),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(io::Error::from(e)),
        }
    }
    Ok(progress)
}

fn append_body(acc: &mut BodyAcc, data: &[u8]) -> io::Result<()> {
    match acc {
        BodyAcc::Memory(v) => {
            v.extend_from_slice(data);
            Ok(())
        }
        BodyAcc::File { file, len } => {
            file.as_file_mut().write_all(data)?;
            *len += data.len() as u64;
            Ok(())
        }
    }
}

fn spool(acc: &mut BodyAcc, dir: Option<&std::path::Path>) -> io::Result<()> {
    let BodyAcc::Memory(v) = acc else {
        return Ok(());
    };
    let mut file = match dir {
        Some(d) => tempfile::Builder::new()
            .prefix("tickhttp-body-")
            .tempfile_in(d)?,
        // The per-process upload directory: a crash's leftovers are swept at the next start.
        None => tempfile::Builder::new()
            .prefix("tickhttp-body-")
            .tempfile_in(crate::form::upload_dir()?)?,
    };
    file.as_file_mut().write_all(v)?;
    let len = v.len() as u64;
    *acc = BodyAcc::File { file, len };
    Ok(())
}

const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 20\r\nRetry-After: 1\r\nConnection: close\r\n\r\nserver at capacity\r\n";

/// Best effort: one non-blocking write of a 503, then close.
fn reject_overloaded_mio(mut stream: TcpStream) -> io::Result<()> {
    stream.write_all(OVERLOADED)?;
    let _ = stream.shutdown(Shutdown::Write);
    Ok(())
}

fn reject_overloaded(mut stream: std::net::TcpStream) -> io::Result<()> {
    stream.set_nonblocking(true)?;
    stream.write_all(OVERLOADED)?;
    let _ = stream.shutdown(Shutdown::Write);
    Ok(())
}

/// Binds a listener with the configured backlog and socket options.
pub(crate) fn bind_listener(config: &ServerConfig) -> Result<TcpListener, Error> {
    let std_listener = crate::sys::bind_tcp(config.listen, config.backlog, config.reuse_port)?;
    Ok(TcpListener::from_std(std_listener))
}
