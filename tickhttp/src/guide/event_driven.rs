//! # Writing an event-driven worker
//!
//! An event-driven application owns its loop. It polls its [`Server`](crate::Server) for
//! requests, turns them into its own events, does its own scheduling, and answers each
//! request whenever the answer is ready: in the same tick, in a later one, or from another
//! thread. This is the mode the reference system was designed for (its
//! `EventDrivenWorkerInterface`), without its two traps: `respond` there answered the oldest
//! request, whatever the application meant, and its loop could only spin.
//!
//! The complete, runnable version of this page is `examples/event_driven_worker.rs`: an event
//! bus, listeners, background jobs, out-of-order answers and a graceful stop, in the pool.
//!
//! ## The shape of a worker
//!
//! ```no_run
//! use std::collections::VecDeque;
//! use tickhttp::pool::{EventDrivenWorker, WorkerPool};
//! use tickhttp::{Error, Request, Server};
//!
//! /// The application's own events.
//! enum Event {
//!     Http(Request),
//! }
//!
//! struct App {
//!     events: VecDeque<Event>,
//! }
//!
//! impl EventDrivenWorker for App {
//!     fn run(&mut self, worker_id: u32, server: &mut Server) -> Result<(), Error> {
//!         // Runs once per worker process. Loop until the pool stops this worker: after a
//!         // graceful stop has drained, `is_running` turns false.
//!         while server.is_running() {
//!             // Sleeps in epoll until a request, a task, a timer or a signal is ready.
//!             server.wait(None)?;
//!             while let Some(req) = server.get_request() {
//!                 self.events.push_back(Event::Http(req));
//!             }
//!             while let Some(event) = self.events.pop_front() {
//!                 match event {
//!                     Event::Http(req) => {
//!                         let body = format!("worker {worker_id}: {}\n", req.path());
//!                         server.respond(req.id(), http::Response::new(body.into()))?;
//!                     }
//!                 }
//!             }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! // A fresh `App` per worker: the value given here is moved into each forked process.
//! let pool = WorkerPool::builder()
//!     .event_driven(App { events: VecDeque::new() })
//!     .build()?;
//! pool.run()?;
//! # Ok::<(), Error>(())
//! ```
//!
//! A closure `FnMut(u32, &mut Server) -> Result<(), Error>` is an `EventDrivenWorker` too.
//! The same loop runs unchanged on a standalone server ([`Server::bind`](crate::Server::bind)),
//! which is handy in tests and during development.
//!
//! ## Answering in a later tick
//!
//! [`get_request`](crate::Server::get_request) hands out a [`Request`](crate::Request); its
//! [`id`](crate::Request::id) is all `respond` needs. Keep the id, drop or keep the request,
//! and answer whenever you like:
//!
//! - **Any order.** Requests on different connections are answered independently: a fast
//!   request is not held behind a slow one.
//! - **Per connection, in order.** Pipelined requests on one connection still get their
//!   responses in request order, as HTTP/1.1 requires; a response waits for those before it.
//!   The server stops reading a connection with [`max_pipelined`](crate::ServerConfig::max_pipelined)
//!   requests unanswered.
//! - **Gone clients.** If the client closed, `respond` succeeds and discards the response;
//!   answering twice, or an id that was never handed out, is
//!   [`Error::NotAwaitingResponse`](crate::Error::NotAwaitingResponse).
//! - **Batching.** Responses are written when the loop next turns, so a burst costs one
//!   `write` per connection.
//! - [`has_pending_response`](crate::Server::has_pending_response) says whether any request
//!   handed out is still unanswered.
//!
//! ## Background tasks and timers
//!
//! The server runs futures on the loop's thread: [`spawn`](crate::Server::spawn) registers
//! one, and it is resumed whenever it is woken, inside `wait`. Its waker breaks a blocking
//! `wait`, so there is no polling interval to tune. [`timer`](crate::Server::timer) gives a
//! `Send + Clone` handle whose `sleep` futures are driven by the same loop. Tasks need no
//! `Send`: they may hold `Rc`s into the application's state.
//!
//! ```no_run
//! use std::cell::RefCell;
//! use std::rc::Rc;
//! use std::time::Duration;
//! use tickhttp::{RequestId, Server};
//!
//! # fn f(server: &mut Server, req: tickhttp::Request) {
//! // Results published by tasks, consumed by the loop after `wait` returns.
//! let done: Rc<RefCell<Vec<RequestId>>> = Rc::default();
//!
//! let (id, timer, done2) = (req.id(), server.timer(), Rc::clone(&done));
//! server.spawn(async move {
//!     timer.sleep(Duration::from_millis(250)).await; // the loop serves others meanwhile
//!     done2.borrow_mut().push(id);
//! });
//!
//! // Later, in the loop:
//! for id in done.borrow_mut().drain(..) {
//!     server.respond(id, http::Response::new("done\n".into())).ok();
//! }
//! # }
//! ```
//!
//! A task can also answer directly with a [`Responder`](crate::Responder)
//! ([`Server::responder`](crate::Server::responder)); it is `Send`, so it works from other
//! threads too (a thread pool for blocking work, a database driver's callback thread).
//! Responses given through it wake `wait` and leave on the next turn:
//!
//! ```no_run
//! # fn f(server: &mut tickhttp::Server, req: tickhttp::Request) {
//! let (id, responder) = (req.id(), server.responder());
//! std::thread::spawn(move || {
//!     let report = "expensive result\n"; // blocking work, off the loop
//!     responder.respond(id, http::Response::new(report.into()));
//! });
//! # }
//! ```
//!
//! Streamed responses work the same way: [`Body::channel`](crate::Body::channel) returns a
//! sender and a body; respond with the body now and feed the sender from a task over many
//! ticks (`examples/streaming.rs` sends server-sent events this way). The send fails once the
//! client is gone, which is the signal to stop producing.
//!
//! ## Other event sources
//!
//! - WebSocket events arrive in the same loop: [`next_ws_event`](crate::Server::next_ws_event)
//!   after `wait` (`examples/websocket_chat.rs`).
//! - Any other file descriptor (a message-queue socket, an inotify fd) can wake `wait` as an
//!   [`EventSource`](crate::EventSource).
//! - To run the server inside another event loop instead, watch its epoll fd
//!   ([`AsRawFd`](std::os::fd::AsRawFd)) there and call
//!   [`has_request`](crate::Server::has_request) when it is readable.
//!
//! ## Shutdown
//!
//! In the pool, `SIGTERM`, `SIGINT` or `SIGQUIT` to the master starts a graceful stop in
//! every worker. From the worker's side:
//!
//! 1. [`is_shutting_down`](crate::Server::is_shutting_down) turns true. The listener is
//!    closed, idle keep-alive connections are closed, new connections are refused, and every
//!    response from now on carries `Connection: close`.
//! 2. Requests already received keep arriving and must still be answered; jobs in flight
//!    should finish. This is the moment to stop starting long new work (answer 503), flush
//!    application buffers and tell peers.
//! 3. Once everything handed out is answered and written, or at the deadline
//!    ([`shutdown_timeout`](crate::pool::PoolBuilder::shutdown_timeout)), the server stops:
//!    `is_running` turns false, the loop ends, `run` returns, and the worker exits. At a
//!    forced stop, unanswered requests are dropped with their connections.
//!
//! A standalone server gets the same behaviour from
//! [`signal::shutdown_on_signals`](crate::signal::shutdown_on_signals), or from calling
//! [`shutdown`](crate::Server::shutdown) yourself; it returns at once and
//! [`shutdown_outcome`](crate::Server::shutdown_outcome) says how it ended.
//!
//! ## Best practices
//!
//! - **Never block the loop.** Every connection of the worker waits while the loop does. Do
//!   blocking calls (files on slow disks, DNS, synchronous database drivers, heavy CPU) on
//!   a thread and answer with a `Responder`; prefer futures and timers for waiting.
//! - **Drain the queue every turn.** Take every request `get_request` has, then every
//!   WebSocket event, before calling `wait` again: `wait` returns at once while anything is
//!   queued, so forgetting one is a busy loop, not a hang.
//! - **Bound your own queues.** The server bounds connections, pipelining and bodies; the
//!   application's event queue and job lists are its own to bound. Answer 503 rather than
//!   queue without limit.
//! - **Answer every request.** A request never answered holds its connection until the client
//!   gives up, and holds a graceful stop until its deadline. Time out your own jobs.
//! - **Create state in the worker.** The value passed to the builder is copied into every
//!   worker by `fork`; open connections, threads and runtimes inside `run`.
//! - **Return only to stop.** Returning from `run` ends the worker process; the master then
//!   restarts it as if it had crashed. Return an error to have it logged.
//! - **Tell the master you are alive.** With
//!   [`worker_timeout`](crate::pool::PoolBuilder::worker_timeout) set, a loop that stops
//!   turning is detected and the worker restarted; keep each turn short.
