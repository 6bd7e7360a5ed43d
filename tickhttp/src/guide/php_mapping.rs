//! # From Duyler HTTP Server (PHP) to tickhttp
//!
//! tickhttp implements the API of Duyler HTTP Server 1.1, in Rust's shape. This page maps each
//! public class and method of the PHP package to its counterpart, and says where the
//! behaviour differs (usually because the PHP version had a defect listed in its review).
//!
//! ## The poll loop, side by side
//!
//! The PHP application spins on `hasRequest()` (with a `usleep` to spare the CPU) and answers
//! the oldest request with `respond($response)`. In tickhttp, `wait` sleeps in epoll until
//! there is work, and `respond` names the request it answers:
//!
//! ```no_run
//! use tickhttp::{Server, ServerConfig};
//!
//! // $server = new Server(new ServerConfig(host: '127.0.0.1', port: 8080));
//! // $server->start();
//! let mut server = Server::bind(ServerConfig::default().listen("127.0.0.1:8080".parse().unwrap()))?;
//! while server.is_running() {
//!     // while (true) { if ($server->hasRequest()) { ... } usleep(1000); }
//!     server.wait(None)?;
//!     // $request = $server->getRequest();
//!     while let Some(req) = server.get_request() {
//!         // $server->respond(new Response(200, [], 'Hello'));
//!         server.respond(req.id(), http::Response::new("Hello".into()))?;
//!     }
//! }
//! # Ok::<(), tickhttp::Error>(())
//! ```
//!
//! ## `Server` (`ServerInterface`)
//!
//! | PHP | tickhttp | notes |
//! |---|---|---|
//! | `new Server(ServerConfig, LoggerInterface)` | [`Server::new(ServerConfig)`](crate::Server::new) | logging goes through `tracing`; no process-wide error or signal handlers are installed |
//! | `start(): bool` | [`start() -> Result<(), Error>`](crate::Server::start), or [`Server::bind`](crate::Server::bind) (new + start) | the error says why (address in use, permissions) |
//! | `stop()` | [`stop()`](crate::Server::stop) | WebSocket peers get 1001 on a graceful [`shutdown`](crate::Server::shutdown) |
//! | `shutdown(int $timeout): bool` (blocks) | [`shutdown(Duration)`](crate::Server::shutdown) (returns at once) + keep polling; [`shutdown_outcome()`](crate::Server::shutdown_outcome) | the application keeps answering in-flight requests while the server drains |
//! | `reset()` | [`reset()`](crate::Server::reset) | |
//! | `restart(): bool` | [`restart() -> Result<(), Error>`](crate::Server::restart) | a failed rebind is reported |
//! | `hasRequest(): bool` | [`has_request()`](crate::Server::has_request); [`wait(timeout)`](crate::Server::wait) to block | one non-blocking pass of all I/O |
//! | `getRequest(): ?ServerRequestInterface` | [`get_request() -> Option<Request>`](crate::Server::get_request) | [`Request`](crate::Request) derefs to `http::Request<RequestBody>`; carries an id, peer address, worker id |
//! | `respond(ResponseInterface)` | [`respond(RequestId, http::Response<Body>)`](crate::Server::respond) | answers *that* request, in any order, in any later tick |
//! | `hasPendingResponse(): bool` | [`has_pending_response()`](crate::Server::has_pending_response) | |
//! | — | [`is_running()`](crate::Server::is_running), [`is_shutting_down()`](crate::Server::is_shutting_down) | the PHP interface had no way to tell |
//! | `setLogger(LoggerInterface)` | a `tracing` subscriber, installed by the application | |
//! | `getMetrics(): array` | [`metrics() -> Metrics`](crate::Server::metrics) | every PHP key is a field, each fed by real counters (see below) |
//! | `getStaticCacheStats(): ?array` | [`StaticFiles::cache_hits`](crate::fs::StaticFiles::cache_hits), `cache_misses`, `cached_bytes`, `cached_paths` | |
//! | `attachWebSocket(string $path, WebSocketServer)` | [`attach_websocket(path, WebSocketConfig)`](crate::Server::attach_websocket) | events are polled: [`next_ws_event()`](crate::Server::next_ws_event) |
//! | `addExternalConnection(Socket, array $metadata)` | [`add_external_connection(TcpStream, ConnectionMeta)`](crate::Server::add_external_connection) | [`ConnectionMeta`](crate::ConnectionMeta) carries the client address and accept time |
//! | `getMode(): ServerMode` | [`mode() -> ServerMode`](crate::Server::mode) | `Standalone`, `WorkerPool` |
//! | `getWorkerId()`, `setWorkerId(int)` | [`worker_id()`](crate::Server::worker_id), [`set_worker_id(u32)`](crate::Server::set_worker_id) | |
//! | `registerFiber(Fiber)` | [`spawn(future)`](crate::Server::spawn), [`cancel(TaskId)`](crate::Server::cancel) | a future is resumed when woken; [`yield_now`](crate::yield_now) gives a fiber's "resume on every poll" |
//! | `Constants::DEFAULT_LISTEN_BACKLOG` (511) | [`config::defaults::BACKLOG`](crate::config::defaults::BACKLOG) (1024) | |
//!
//! ## `ServerConfig`
//!
//! | PHP option | tickhttp ([`ServerConfig`](crate::ServerConfig)) |
//! |---|---|
//! | `host`, `port` | `listen: SocketAddr` (IPv4 or IPv6) |
//! | `ssl`, `sslCert`, `sslKey` | `tls: Option<TlsConfig>` from [`TlsConfig::from_pem_files`](crate::tls::TlsConfig::from_pem_files) (SNI with [`with_sni`](crate::tls::TlsConfig::with_sni)) |
//! | `publicPath`, `enableStaticCache`, `staticCacheSize` | [`StaticFiles::new(root, StaticConfig)`](crate::fs::StaticFiles::new), called by the application ([`serve`](crate::fs::StaticFiles::serve)); [`StaticConfig::cache_budget`](crate::fs::StaticConfig::cache_budget) |
//! | `requestTimeout` | `header_timeout` (whole head) and `body_timeout` (silence in a body) |
//! | `connectionTimeout` | `keep_alive_timeout` (idle only: no absolute lifetime, so long responses and WebSockets are not cut) |
//! | `maxConnections` | `max_connections` (503 above) |
//! | `maxRequestSize` | `max_body_size` (413 before the body is read) |
//! | `bufferSize` | internal |
//! | `enableKeepAlive`, `keepAliveTimeout`, `keepAliveMaxRequests` | `keep_alive`, `keep_alive_timeout` (enforced), `max_requests_per_connection` |
//! | `enableRateLimit`, `rateLimitRequests`, `rateLimitWindow` | `rate_limit: Some(RateLimitConfig::new(requests, window))` |
//! | `maxAcceptsPerCycle` | `max_accepts_per_pass` |
//! | `debugMode` | the `tracing` subscriber's level (`RUST_LOG=tickhttp=debug`) |
//! | — | `max_head_size`, `max_headers`, `max_uri_len`, `max_pipelined`, `write_timeout`, `body_spool_threshold`, `access_log`, `proxy_protocol`, ... |
//!
//! ## Handlers, uploads, rate limiting, metrics
//!
//! | PHP | tickhttp |
//! |---|---|
//! | `StaticFileHandler::isStaticFile` + `handle` | [`StaticFiles::serve(&req) -> Option<Response>`](crate::fs::StaticFiles::serve) (`None`: not a file here) |
//! | `StaticFileHandler::clearCache` | [`StaticFiles::clear_cache`](crate::fs::StaticFiles::clear_cache) |
//! | `FileDownloadHandler::download(path, filename, mime)` | [`fs::download(&req, path, filename, mime)`](crate::fs::download) |
//! | `FileDownloadHandler::downloadRange`, `parseRangeHeader` | `download` and `StaticFiles` honour `Range` themselves (single, suffix and multiple ranges, clamped); the parser is [`proto::range::evaluate`](crate::proto::range::evaluate) |
//! | `RequestParser` (query, cookies, urlencoded, JSON, multipart) | [`form`](crate::form): [`query_pairs`](crate::form::query_pairs), [`cookies`](crate::form::cookies), [`urlencoded`](crate::form::urlencoded), [`json`](crate::form::json), [`Form::from_request`](crate::Form::from_request) (streaming multipart) |
//! | `UploadedFile` (Nyholm) | [`form::UploadedFile`](crate::form::UploadedFile): `filename()` sanitized, `persist(path)` |
//! | `TempFileManager` | [`form::upload_dir`](crate::form::upload_dir); a file is deleted when its `UploadedFile` is dropped, not at process exit |
//! | `HttpParser`, `ResponseWriter` | [`proto::parse_head`](crate::proto::parse_head), [`proto::response`](crate::proto::response) (sans-IO) |
//! | `RateLimiter` | built into the server (`ServerConfig::rate_limit`); [`rate_limit_keys()`](crate::Server::rate_limit_keys) is `getActiveIdentifiersCount` |
//! | `ServerMetrics` keys `uptime_seconds`, `total_requests`, `successful_requests`, `failed_requests`, `active_connections`, `total_connections`, `closed_connections`, `timed_out_connections`, `cache_hits`, `cache_misses`, `cache_hit_rate`, `avg_/min_/max_request_duration_ms`, `requests_per_second` | fields of [`Metrics`](crate::Metrics) with the same names (`uptime` is a `Duration`), plus a duration histogram |
//! | `ErrorHandler` | nothing global: [`signal::shutdown_on_signals`](crate::signal::shutdown_on_signals) and [`signal::reload_tls_on_hup`](crate::signal::reload_tls_on_hup) are opt-in; a panicking task is removed and logged |
//! | `HttpServerException`, `InvalidConfigException`, `ParseException`, `SocketException` | [`Error`](crate::Error) (`Config`, `Bind`, `Io`, `NotAwaitingResponse`, `Pool`, ...); a request error is a [`RequestError`](crate::RequestError) with its status, answered by the server |
//! | `StreamSocket`, `SslSocket`, `SocketResourceInterface` | internal (mio, rustls) |
//!
//! ## WebSocket
//!
//! | PHP | tickhttp |
//! |---|---|
//! | `new WebSocketServer(WebSocketConfig)` + `attachWebSocket` | [`attach_websocket(path, WebSocketConfig)`](crate::Server::attach_websocket) |
//! | `on('connect' / 'message' / 'close' / 'error', cb)` | `match` on [`next_ws_event()`](crate::Server::next_ws_event): [`WsEvent`](crate::ws::WsEvent)`::Connect`, `Text`, `Binary`, `Pong`, `Close` (always fires: drops and timeouts too), `Error` |
//! | `Connection::send(string or array, binary)` | [`ws_send_text`](crate::Server::ws_send_text), [`ws_send_binary`](crate::Server::ws_send_binary), [`ws_send_json`](crate::Server::ws_send_json) |
//! | `Connection::close(code, reason)` | [`ws_close(id, code, reason)`](crate::Server::ws_close) |
//! | `broadcast(data, exclude)` | [`ws_broadcast(path, message, except)`](crate::Server::ws_broadcast) |
//! | `joinRoom`, `leaveRoom`, `addConnectionToRoom`, `removeConnectionFromRoom` | [`ws_join`](crate::Server::ws_join), [`ws_leave`](crate::Server::ws_leave) |
//! | `broadcastToRoom`, `sendToRoom`, `getRoomConnections` | [`ws_broadcast_room`](crate::Server::ws_broadcast_room), [`ws_room`](crate::Server::ws_room) |
//! | `getConnections`, `getConnectionCount` | [`ws_connections(path)`](crate::Server::ws_connections) |
//! | `setData`, `getData`, `hasData` | [`ws_set_data`](crate::Server::ws_set_data), [`ws_data`](crate::Server::ws_data), [`ws_data_mut`](crate::Server::ws_data_mut) (typed) |
//! | `getRequest`, `getRemoteAddress` | the `uri`, `headers` and `peer` of `WsEvent::Connect` |
//! | `processPings`, `cleanupClosedConnections`, `closeAll` | automatic (pings and pong timeouts in the loop; closed connections removed at once; 1001 at shutdown) |
//! | `Frame`, `Handshake`, `Message`, `Opcode`, `CloseCode` | internal (tungstenite); `Message::getJson` is `serde_json::from_str` on the text |
//! | `WebSocketConfig` (every key) | [`WebSocketConfig`](crate::ws::WebSocketConfig), same keys in snake case, all enforced (`enable_compression: true` is refused, not ignored) |
//!
//! ## Worker pool
//!
//! | PHP | tickhttp |
//! |---|---|
//! | `WorkerPoolConfig(serverConfig, workerCount, ...)` | [`WorkerPool::builder()`](crate::pool::WorkerPool::builder): [`server_config`](crate::pool::PoolBuilder::server_config), [`workers`](crate::pool::PoolBuilder::workers) |
//! | `workerCount: 0` (auto), `fallbackCpuCores` | [`Workers::Auto`](crate::pool::Workers::Auto) (cgroup-quota aware), [`AUTO_WORKERS_FALLBACK`](crate::pool::defaults::AUTO_WORKERS_FALLBACK) |
//! | `balancer: BalancerType`, `enableStickySession` | [`balancer(BalancerKind)`](crate::pool::PoolBuilder::balancer): `RoundRobin`, `LeastConnections`, `Weighted` (with [`weights`](crate::pool::PoolBuilder::weights)), `Sticky` |
//! | `backlog`, `maxQueueSize` | [`backlog`](crate::pool::PoolBuilder::backlog), [`max_queue`](crate::pool::PoolBuilder::max_queue) (both honoured) |
//! | `autoRestart`, `restartDelay` | always on, with [`restart_delay`](crate::pool::PoolBuilder::restart_delay), exponential backoff and a [`crash_limit`](crate::pool::PoolBuilder::crash_limit) |
//! | `pollInterval` | none: nothing polls |
//! | `enableGracefulReload` | not implemented |
//! | `SharedSocketMaster`, `CentralizedMaster` | [`Architecture::Shared`](crate::pool::Architecture::Shared), [`Architecture::Centralized`](crate::pool::Architecture::Centralized) |
//! | `MasterFactory::create`, `createRecommended`, `recommendedMaster` | [`Architecture::Auto`](crate::pool::Architecture::Auto); [`WorkerPool::architecture`](crate::pool::WorkerPool::architecture) and [`architecture_reason`](crate::pool::WorkerPool::architecture_reason) |
//! | `MasterInterface::start()` (blocks) | [`build()`](crate::pool::PoolBuilder::build) (validates and binds) then [`run()`](crate::pool::WorkerPool::run) (blocks) |
//! | `MasterInterface::stop()` | `SIGTERM`/`SIGINT` (drain, then kill) or `SIGQUIT` to the master |
//! | `MasterInterface::getMetrics()` | [`PoolMetrics`](crate::pool::PoolMetrics), returned by `run` and served by [`status_listen`](crate::pool::PoolBuilder::status_listen) |
//! | `ProcessInfo`, `ProcessState` | [`WorkerMetrics`](crate::pool::WorkerMetrics), [`WorkerState`](crate::pool::WorkerState) (every state used) |
//! | `WorkerCallbackInterface::handle(Socket, array)` | [`WorkerCallback::handle(worker_id, TcpStream, ConnectionMeta)`](crate::pool::WorkerCallback::handle), or a closure, via [`callback`](crate::pool::PoolBuilder::callback) |
//! | `EventDrivenWorkerInterface::run(int, Server)` | [`EventDrivenWorker::run(worker_id, &mut Server)`](crate::pool::EventDrivenWorker::run), or a closure, via [`event_driven`](crate::pool::PoolBuilder::event_driven) |
//! | `HttpWorkerAdapter` | [`handler`](crate::pool::PoolBuilder::handler): tickhttp's own loop calls a [`RequestHandler`](crate::pool::RequestHandler) per request |
//! | `SystemInfo::getCpuCores`, `supportsFdPassing` | [`Workers::resolve`](crate::pool::Workers::resolve); the `Auto` architecture's probe |
//! | `BalancerInterface`, `SocketManager`, `ConnectionQueue`, `ConnectionRouter`, `WorkerManager`, `FdPasser`, `IPC\Message`, `UnixSocketChannel`, `SignalHandler`, `SignalManager` | internal to [`pool`](crate::pool) |
//!
//! ## Behaviour that differs on purpose
//!
//! - `respond` takes the request's id. Out-of-order answers go to the right clients.
//! - Pipelined requests are all served, in order; a body ends at its `Content-Length` or
//!   final chunk; chunked request bodies are decoded.
//! - HTTP/1.1 connections are persistent unless the client says otherwise.
//! - Limits are enforced before buffering (413, 414, 431), and errors carry a length.
//! - Upload temp files are deleted when dropped; file content is kept byte for byte.
//! - Workers exit on `SIGTERM` after draining; the master never waits without a deadline.
//! - Centralized mode's descriptor passing works, and least-connections sees real load.
