//! The demo application: the routes every tickhttp process serves out of the box, written as
//! an ordinary event-driven app over the poll API.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use tickhttp::admin::Endpoint;
use tickhttp::fs::{StaticConfig, StaticFiles};
use tickhttp::ws::{WebSocketConfig, WsEvent};
use tickhttp::{Body, Request, Server};

const INDEX: &str = include_str!("index.html");

/// Longest `/sleep` the demo accepts, so one request cannot pin a connection for long.
const MAX_SLEEP_MS: u64 = 60_000;

/// The `--root` directory, set once before any worker starts.
static ROOT: OnceLock<PathBuf> = OnceLock::new();

thread_local! {
    /// Each process builds its own file cache on first use, after the fork.
    static FILES: RefCell<Option<StaticFiles>> = const { RefCell::new(None) };
}

/// Serves files under `root` for the paths the demo routes do not take.
pub fn set_root(root: PathBuf) {
    let _ = ROOT.set(root);
}

fn serve_static(server: &mut Server, req: &Request) -> Option<Response<Body>> {
    let root = ROOT.get()?;
    FILES.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            match StaticFiles::new(root, StaticConfig::default()) {
                Ok(files) => *slot = Some(files),
                Err(e) => {
                    tracing::error!(error = %e, root = %root.display(), "cannot serve --root");
                    return None;
                }
            }
        }
        let files = slot.as_mut()?;
        let resp = files.serve(req);
        server.set_static_cache_counters(files.cache_hits(), files.cache_misses());
        resp
    })
}

/// Runs the demo app on `server` until the server stops (after a graceful shutdown).
pub fn run(server: &mut Server) -> Result<(), tickhttp::Error> {
    run_with(server, || {})
}

/// [`run`], calling `on_stopping` once, as soon as the loop sees that a graceful shutdown
/// began (or that the server stopped, when the shutdown finished within one turn).
pub fn run_with(server: &mut Server, on_stopping: impl FnOnce()) -> Result<(), tickhttp::Error> {
    let mut on_stopping = Some(on_stopping);
    server.attach_websocket("/ws", ws_config())?;
    while server.is_running() {
        server.wait(None)?;
        if server.is_shutting_down() || !server.is_running() {
            if let Some(f) = on_stopping.take() {
                f();
            }
        }
        while let Some(req) = server.get_request() {
            handle(server, req)?;
        }
        while let Some(event) = server.next_ws_event() {
            ws_echo(server, event);
        }
    }
    Ok(())
}

/// The `/ws` options of the command line, set once before any worker starts.
static WS_CONFIG: OnceLock<WebSocketConfig> = OnceLock::new();

/// Uses `config` for `/ws` instead of the built-in one.
pub fn set_ws_config(config: WebSocketConfig) {
    let _ = WS_CONFIG.set(config);
}

/// `/ws`: a WebSocket echo. Its default limits let through the 16 MiB messages of the
/// Autobahn conformance suite (`scripts/autobahn.sh`).
fn ws_config() -> WebSocketConfig {
    if let Some(config) = WS_CONFIG.get() {
        return config.clone();
    }
    let mut config = WebSocketConfig::default();
    config.max_message_size = 16 * 1024 * 1024;
    config.max_frame_size = 16 * 1024 * 1024;
    config.max_write_buffer = 64 * 1024 * 1024;
    config
}

fn ws_echo(server: &mut Server, event: WsEvent) {
    // A send fails only when the connection is already gone; its Close event follows.
    let _ = match event {
        WsEvent::Text { id, text } => server.ws_send_text(id, text),
        WsEvent::Binary { id, data } => server.ws_send_binary(id, data),
        _ => Ok(()),
    };
}

fn text(status: StatusCode, body: impl Into<Body>, content_type: &'static str) -> Response<Body> {
    typed(status, body, HeaderValue::from_static(content_type))
}

/// [`text`] with a `Content-Type` already made: the hot routes pass one built at compile time
/// (`const { HeaderValue::from_static(..) }`), so it is not validated again on every request.
fn typed(status: StatusCode, body: impl Into<Body>, content_type: HeaderValue) -> Response<Body> {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    resp
}

/// Answers one request (possibly later, from a background task).
pub fn handle(server: &mut Server, req: Request) -> Result<(), tickhttp::Error> {
    let id = req.id();
    let method = req.method().clone();
    let resp = match (&method, req.path()) {
        (&Method::GET | &Method::HEAD, "/") => {
            text(StatusCode::OK, INDEX, "text/html; charset=utf-8")
        }
        (&Method::GET | &Method::HEAD, "/plaintext") => typed(
            StatusCode::OK,
            "Hello, World!",
            const { HeaderValue::from_static("text/plain") },
        ),
        (&Method::GET | &Method::HEAD, "/json") => typed(
            StatusCode::OK,
            r#"{"message":"Hello, World!"}"#,
            const { HeaderValue::from_static("application/json") },
        ),
        (&Method::GET | &Method::HEAD, "/health") => {
            text(StatusCode::OK, "ok\n", "text/plain; charset=utf-8")
        }
        (&Method::GET | &Method::HEAD, "/whoami") => {
            let body = format!(
                r#"{{"worker_id":{},"pid":{}}}"#,
                server.worker_id().unwrap_or(0),
                std::process::id()
            );
            text(StatusCode::OK, body, "application/json")
        }
        // The same documents as under --admin-prefix, also at the root for convenience.
        (&Method::GET | &Method::HEAD, "/metrics") => {
            server.admin_reply(Endpoint::Metrics).into_response()
        }
        (&Method::GET | &Method::HEAD, "/status") => {
            server.admin_reply(Endpoint::Status).into_response()
        }
        (&Method::GET | &Method::HEAD, "/ready") => {
            server.admin_reply(Endpoint::Ready).into_response()
        }
        (&Method::POST | &Method::PUT, "/echo") => {
            let content_type = req
                .headers()
                .get(header::CONTENT_TYPE)
                .cloned()
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            let mut resp = match req.body().to_vec() {
                Ok(bytes) => Response::new(Body::from(bytes)),
                Err(_) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot read body\n",
                    "text/plain",
                ),
            };
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, content_type);
            resp
        }
        (&Method::GET, "/sleep") => return sleep(server, &req),
        (&Method::GET, "/events") => return events(server, &req),
        (
            _,
            "/" | "/plaintext" | "/json" | "/health" | "/whoami" | "/metrics" | "/status"
            | "/ready" | "/echo" | "/sleep" | "/events",
        ) => {
            let mut resp = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed\n",
                "text/plain",
            );
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
            resp
        }
        _ => match serve_static(server, &req) {
            Some(resp) => resp,
            None => text(
                StatusCode::NOT_FOUND,
                "not found\n",
                "text/plain; charset=utf-8",
            ),
        },
    };
    server.respond(id, resp)
}

/// `/sleep?ms=N`: answered by a timer task, so the loop keeps serving other requests.
fn sleep(server: &mut Server, req: &Request) -> Result<(), tickhttp::Error> {
    let ms = match req.query_param("ms").map(|v| v.parse::<u64>()) {
        None => 100,
        Some(Ok(ms)) if ms <= MAX_SLEEP_MS => ms,
        Some(_) => {
            let body = format!("ms must be an integer from 0 to {MAX_SLEEP_MS}\n");
            return server.respond(req.id(), text(StatusCode::BAD_REQUEST, body, "text/plain"));
        }
    };
    let id = req.id();
    let responder = server.responder();
    let timer = server.sleep(Duration::from_millis(ms));
    let worker = server.worker_id().unwrap_or(0);
    server.spawn(async move {
        timer.await;
        let body = format!(r#"{{"slept_ms":{ms},"worker_id":{worker}}}"#);
        responder.respond(id, text(StatusCode::OK, body, "application/json"));
    });
    Ok(())
}

/// `/events?count=N&interval_ms=M`: a server-sent-events stream fed by a background task.
fn events(server: &mut Server, req: &Request) -> Result<(), tickhttp::Error> {
    let count: u64 = req
        .query_param("count")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .min(10_000);
    let interval: u64 = req
        .query_param("interval_ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
        .clamp(1, 60_000);
    let (tx, body) = Body::channel();
    let mut resp = text(StatusCode::OK, body, "text/event-stream");
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    server.respond(req.id(), resp)?;
    let timer = server.timer();
    let worker = server.worker_id().unwrap_or(0);
    server.spawn(async move {
        for n in 1..=count {
            let event =
                format!("id: {n}\nevent: tick\ndata: {{\"n\":{n},\"worker_id\":{worker}}}\n\n");
            if tx.send(event).is_err() {
                return; // the client left
            }
            if n < count {
                timer.sleep(Duration::from_millis(interval)).await;
            }
        }
    });
    Ok(())
}
