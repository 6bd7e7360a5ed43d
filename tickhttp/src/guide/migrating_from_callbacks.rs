//! # Moving a callback worker to an event-driven one
//!
//! A callback worker ([`PoolBuilder::callback`](crate::pool::PoolBuilder::callback), the
//! reference's `WorkerCallbackInterface::handle(socket, metadata)`) is called once per
//! connection with a blocking socket. It is simple, and it is one connection at a time: a
//! slow client or a slow query holds the whole worker, keep-alive connections hold it while
//! idle, and the callback must speak HTTP itself, limits and framing included.
//!
//! An event-driven worker hands the connections to a [`Server`](crate::Server) and sees only
//! complete, validated requests. The steps below move a callback over without changing what
//! it answers.
//!
//! ## Before
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use std::net::TcpStream;
//! use tickhttp::pool::WorkerPool;
//! use tickhttp::ConnectionMeta;
//!
//! fn handle(worker_id: u32, mut stream: TcpStream, meta: ConnectionMeta) {
//!     let mut buf = [0u8; 8192];
//!     let Ok(n) = stream.read(&mut buf) else { return }; // hopes the head fits one read
//!     let head = String::from_utf8_lossy(&buf[..n]);
//!     let path = head.split(' ').nth(1).unwrap_or("/").to_string();
//!     let body = answer(worker_id, &path, meta.peer_addr);
//!     let _ = write!(
//!         stream,
//!         "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
//!         body.len()
//!     );
//! }
//!
//! fn answer(worker_id: u32, path: &str, peer: Option<std::net::SocketAddr>) -> String {
//!     format!("worker {worker_id}, {path}, {peer:?}\n")
//! }
//!
//! WorkerPool::builder().callback(handle).build()?.run()?;
//! # Ok::<(), tickhttp::Error>(())
//! ```
//!
//! ## After
//!
//! ```no_run
//! use tickhttp::pool::WorkerPool;
//! use tickhttp::{Error, Server};
//!
//! fn run(worker_id: u32, server: &mut Server) -> Result<(), Error> {
//!     while server.is_running() {
//!         server.wait(None)?;
//!         while let Some(req) = server.get_request() {
//!             // The path, the client address and the worker id come with the request.
//!             let body = answer(worker_id, req.path(), Some(req.peer_addr()));
//!             server.respond(req.id(), http::Response::new(body.into()))?;
//!         }
//!     }
//!     Ok(())
//! }
//!
//! fn answer(worker_id: u32, path: &str, peer: Option<std::net::SocketAddr>) -> String {
//!     format!("worker {worker_id}, {path}, {peer:?}\n")
//! }
//!
//! WorkerPool::builder().event_driven(run).build()?.run()?;
//! # Ok::<(), Error>(())
//! ```
//!
//! ## Step by step
//!
//! 1. **Keep the business logic, drop the protocol code.** Everything that reads the socket,
//!    finds the end of the head, parses the request line and headers, reads the body and
//!    formats the response goes. The server does it, with strict framing, limits and the
//!    right error statuses ([`security`](super::security)). What the callback computed from
//!    the request becomes a function of the [`Request`](crate::Request): it dereferences to
//!    `http::Request`, so `method()`, `uri()`, `headers()` and `body()` are there.
//! 2. **Map the metadata.** The callback's [`ConnectionMeta`](crate::ConnectionMeta) is now
//!    on every request: `meta.peer_addr` is [`Request::peer_addr`](crate::Request::peer_addr)
//!    (the PROXY-protocol address when that is on), the worker id is the first argument of
//!    `run` and [`Request::worker_id`](crate::Request::worker_id), and the accept time's use
//!    (latency accounting) is [`Request::received_at`](crate::Request::received_at).
//! 3. **Replace the per-connection loop by the poll loop.** `wait`, then `get_request` until
//!    empty, then `respond`. Keep-alive, pipelining and `Connection: close` are the server's.
//! 4. **Move blocking calls off the loop.** In the callback, a blocking database query only
//!    blocked its own connection, because that was all the worker served. Now it would block
//!    every connection of the worker. Run it on a thread and answer through a
//!    [`Responder`](crate::Responder), or use a non-blocking client from a task; see
//!    [`event_driven`](super::event_driven).
//! 5. **Replace sleeps by timers.** `std::thread::sleep` in a callback becomes
//!    [`Server::sleep`](crate::Server::sleep) in a task, and the answer comes in a later tick.
//! 6. **Let the server write.** Write-side code (partial writes, slow readers, chunking a
//!    stream) becomes a response body: bytes, [`Body::file`](crate::Body::file) (sent with
//!    `sendfile`), or [`Body::channel`](crate::Body::channel) fed over many ticks.
//! 7. **Check the stop.** The callback's loop ended when the master stopped sending
//!    connections; `run` must loop on [`is_running`](crate::Server::is_running), and may use
//!    [`is_shutting_down`](crate::Server::is_shutting_down) to stop starting new work.
//! 8. **Revisit the worker count.** Callback pools need as many workers as concurrent
//!    connections you want served; event-driven pools need one per core. Start from
//!    [`Workers::Auto`](crate::pool::Workers::Auto).
//!
//! If the callback speaks a protocol other than HTTP, keep it a callback: the pool's
//! supervision, balancing and signals still apply. If part of it must stay a raw socket
//! (say, a legacy upgrade), an event-driven worker can still serve sockets it accepted
//! itself with [`Server::add_external_connection`](crate::Server::add_external_connection).
//!
//! ## What changes for clients
//!
//! Nothing they should notice, except for the better: requests that were refused or
//! mis-parsed by hand-written parsing now get the standard answers (400, 413, 414, 431, 501,
//! 505), keep-alive works as HTTP/1.1 defines it, slow clients no longer hold a worker, and a
//! `SIGTERM` lets every request in flight finish.
