//! WebSocket (RFC 6455) in the poll style, with the framing done by `tungstenite`.
//!
//! Attach a path with [`Server::attach_websocket`](crate::Server::attach_websocket); upgrade
//! requests to it are answered by the server (101, or 400/403/404/426), and from then on the
//! connection produces [`WsEvent`]s read with
//! [`Server::next_ws_event`](crate::Server::next_ws_event), in the same loop as requests.
//!
//! ```no_run
//! use tickhttp::ws::{WebSocketConfig, WsEvent};
//! let mut server = tickhttp::Server::bind(tickhttp::ServerConfig::default())?;
//! server.attach_websocket("/ws", WebSocketConfig::default())?;
//! loop {
//!     server.wait(None)?;
//!     while let Some(event) = server.next_ws_event() {
//!         if let WsEvent::Text { id, text } = event {
//!             server.ws_send_text(id, text)?; // echo
//!         }
//!     }
//!     while let Some(req) = server.get_request() {
//!         server.respond(req.id(), http::Response::new("not a websocket\n".into()))?;
//!     }
//! }
//! # Ok::<(), tickhttp::Error>(())
//! ```
//!
//! # Limits and the slow-consumer policy
//!
//! Incoming frames and messages above `max_frame_size` / `max_message_size` close the
//! connection with 1009; invalid UTF-8 in text with 1007; unmasked client frames (when
//! `require_masking`) and other protocol violations with 1002. Outgoing data waits in the
//! connection's output buffer; when a client reads so slowly that more than
//! `max_write_buffer` bytes are pending, the connection is dropped (a `Close` event with
//! 1006 fires) rather than letting memory grow without bound.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use tungstenite::protocol::{Role, WebSocketContext};

use crate::body::Body;
use crate::error::Error;
use crate::proto::head::list_tokens;

/// Options of one WebSocket endpoint (every key of the reference system, all enforced).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WebSocketConfig {
    /// Largest message (after reassembly); above it the connection closes with 1009.
    pub max_message_size: usize,
    /// Largest frame payload; above it the connection closes with 1009. Also the fragment
    /// size for outgoing messages when `auto_fragmentation` is on.
    pub max_frame_size: usize,
    /// Send a ping after this much silence from the client.
    pub ping_interval: Duration,
    /// Close (1008) when a ping is unanswered this long.
    pub pong_timeout: Duration,
    /// Whether to ping idle clients.
    pub auto_ping: bool,
    /// Time allowed for the upgrade request's head, from its first byte.
    pub handshake_timeout: Duration,
    /// After sending a close frame, how long to wait for the client's before dropping TCP.
    pub close_timeout: Duration,
    /// Origins allowed when `validate_origin` is on (`*` allows any).
    pub allowed_origins: Vec<String>,
    /// Check the `Origin` header against `allowed_origins` (403 otherwise).
    pub validate_origin: bool,
    /// Refuse unmasked client frames (1002), as RFC 6455 requires.
    pub require_masking: bool,
    /// Split outgoing messages larger than `max_frame_size` into fragments.
    pub auto_fragmentation: bool,
    /// Bytes of outgoing frames batched before they are handed to the connection.
    pub write_buffer_size: usize,
    /// Pending output above which a slow consumer is dropped.
    pub max_write_buffer: usize,
    /// permessage-deflate. Not supported: `true` is refused by [`WebSocketConfig::validate`].
    pub enable_compression: bool,
    /// Subprotocols offered, in the server's order of preference.
    pub sub_protocols: Vec<String>,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            max_message_size: 1024 * 1024,
            max_frame_size: 64 * 1024,
            ping_interval: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(10),
            auto_ping: true,
            handshake_timeout: Duration::from_secs(5),
            close_timeout: Duration::from_secs(5),
            allowed_origins: vec!["*".to_string()],
            validate_origin: false,
            require_masking: true,
            auto_fragmentation: true,
            write_buffer_size: 8192,
            max_write_buffer: 16 * 1024 * 1024,
            enable_compression: false,
            sub_protocols: Vec::new(),
        }
    }
}

impl WebSocketConfig {
    /// Checks every value, with the reference system's messages where it had one.
    pub fn validate(&self) -> Result<(), Error> {
        let positive = |option: &'static str, ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(Error::config(option, format!("{option} must be positive")))
            }
        };
        positive("max_message_size", self.max_message_size > 0)?;
        positive("max_frame_size", self.max_frame_size > 0)?;
        if self.max_frame_size > self.max_message_size {
            return Err(Error::config(
                "max_frame_size",
                "maxFrameSize cannot exceed maxMessageSize",
            ));
        }
        positive("ping_interval", !self.ping_interval.is_zero())?;
        positive("pong_timeout", !self.pong_timeout.is_zero())?;
        positive("handshake_timeout", !self.handshake_timeout.is_zero())?;
        positive("close_timeout", !self.close_timeout.is_zero())?;
        positive("write_buffer_size", self.write_buffer_size > 0)?;
        positive("max_write_buffer", self.max_write_buffer > 0)?;
        if self.allowed_origins.is_empty() {
            return Err(Error::config(
                "allowed_origins",
                "allowedOrigins cannot be empty",
            ));
        }
        if self.enable_compression {
            return Err(Error::config(
                "enable_compression",
                "permessage-deflate is not supported; leave it off",
            ));
        }
        for p in &self.sub_protocols {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
                return Err(Error::config(
                    "sub_protocols",
                    format!("invalid subprotocol {p:?}"),
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn tungstenite(&self) -> tungstenite::protocol::WebSocketConfig {
        tungstenite::protocol::WebSocketConfig::default()
            // Bytes come from the connection's own buffer: a small read chunk keeps idle
            // connections cheap.
            .read_buffer_size(4096)
            .write_buffer_size(0)
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_frame_size))
            .accept_unmasked_frames(!self.require_masking)
    }
}

/// Identifies one WebSocket connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WsId {
    pub(crate) conn: u32,
    pub(crate) gen: u64,
}

impl fmt::Display for WsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ws-{}", self.gen)
    }
}

/// Something that happened on a WebSocket connection. Every connection that produced a
/// `Connect` produces exactly one `Close`, whatever ended it.
#[derive(Debug)]
#[non_exhaustive]
pub enum WsEvent {
    /// The handshake completed.
    Connect {
        /// The connection.
        id: WsId,
        /// The attached path it connected to.
        path: String,
        /// The client address.
        peer: SocketAddr,
        /// The negotiated subprotocol.
        protocol: Option<String>,
        /// The upgrade request's target (path and query).
        uri: http::Uri,
        /// The upgrade request's headers (cookies, auth...).
        headers: Box<HeaderMap>,
    },
    /// A text message.
    Text {
        /// The connection.
        id: WsId,
        /// The message.
        text: String,
    },
    /// A binary message.
    Binary {
        /// The connection.
        id: WsId,
        /// The message.
        data: Bytes,
    },
    /// A pong (answer to the server's ping, or unsolicited).
    Pong {
        /// The connection.
        id: WsId,
        /// Its payload.
        data: Bytes,
    },
    /// The connection ended: by a close frame (its code and reason), or 1006 when it dropped,
    /// or the code the server sent (1001 at shutdown, 1008 on a pong timeout, 1009, 1007, 1002).
    Close {
        /// The connection.
        id: WsId,
        /// The close code.
        code: u16,
        /// The reason.
        reason: String,
    },
    /// A protocol error; a `Close` follows.
    Error {
        /// The connection.
        id: WsId,
        /// What went wrong.
        error: String,
    },
}

/// A message to send.
#[derive(Debug, Clone)]
pub enum WsMessage {
    /// Text.
    Text(String),
    /// Binary.
    Binary(Bytes),
}

impl From<String> for WsMessage {
    fn from(s: String) -> Self {
        WsMessage::Text(s)
    }
}
impl From<&str> for WsMessage {
    fn from(s: &str) -> Self {
        WsMessage::Text(s.to_string())
    }
}
impl From<Vec<u8>> for WsMessage {
    fn from(v: Vec<u8>) -> Self {
        WsMessage::Binary(Bytes::from(v))
    }
}
impl From<Bytes> for WsMessage {
    fn from(b: Bytes) -> Self {
        WsMessage::Binary(b)
    }
}

/// A route: the attached path and its options.
pub(crate) struct Route {
    pub(crate) path: String,
    pub(crate) config: WebSocketConfig,
}

/// What the handshake decided.
pub(crate) struct Accepted {
    pub(crate) route: usize,
    pub(crate) protocol: Option<String>,
    pub(crate) response: Response<Body>,
}

/// Whether a request asks for a WebSocket (Upgrade: websocket).
pub(crate) fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .any(|v| list_tokens(v.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"websocket")))
}

fn refuse(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Validates an upgrade request (RFC 6455 4.2.1) against the routes.
pub(crate) fn handshake(
    routes: &[Route],
    method: &Method,
    version: Version,
    path: &str,
    headers: &HeaderMap,
) -> Result<Accepted, Box<Response<Body>>> {
    let Some(route) = routes.iter().position(|r| r.path == path) else {
        return Err(Box::new(refuse(
            StatusCode::NOT_FOUND,
            "WebSocket endpoint not found\n",
        )));
    };
    let config = &routes[route].config;
    if method != Method::GET || version != Version::HTTP_11 {
        return Err(Box::new(refuse(
            StatusCode::BAD_REQUEST,
            "a WebSocket handshake must be an HTTP/1.1 GET\n",
        )));
    }
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| list_tokens(v.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"upgrade")));
    if !connection_upgrade {
        return Err(Box::new(refuse(
            StatusCode::BAD_REQUEST,
            "missing Connection: upgrade\n",
        )));
    }
    let version_ok = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    if !version_ok {
        let mut r = refuse(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported WebSocket version\n",
        );
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return Err(Box::new(r));
    }
    let key = match headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(k) if key_is_valid(k.as_bytes()) => k.as_bytes().to_vec(),
        _ => {
            return Err(Box::new(refuse(
                StatusCode::BAD_REQUEST,
                "Sec-WebSocket-Key must be 16 bytes in base64\n",
            )))
        }
    };
    if config.validate_origin && !config.allowed_origins.iter().any(|o| o == "*") {
        let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
        let allowed = origin.is_some_and(|o| config.allowed_origins.iter().any(|a| a == o));
        if !allowed {
            return Err(Box::new(refuse(
                StatusCode::FORBIDDEN,
                "Origin not allowed\n",
            )));
        }
    }
    // The client lists protocols in its order of preference; the first one we support wins.
    let protocol = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .flat_map(|v| {
            list_tokens(v.as_bytes())
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        })
        .find_map(|p| {
            config
                .sub_protocols
                .iter()
                .find(|s| s.as_bytes() == p.as_slice())
                .cloned()
        });
    let mut response = Response::new(Body::Empty);
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    let accept = tungstenite::handshake::derive_accept_key(&key);
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = &protocol {
        if let Ok(v) = HeaderValue::from_str(p) {
            h.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
        }
    }
    Ok(Accepted {
        route,
        protocol,
        response,
    })
}

/// The upgrade request's head took longer than the route's handshake timeout.
pub(crate) fn refuse_timeout() -> Response<Body> {
    refuse(
        StatusCode::REQUEST_TIMEOUT,
        "WebSocket handshake timed out\n",
    )
}

fn key_is_valid(key: &[u8]) -> bool {
    use base64::Engine;
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|k| k.len() == 16)
}

/// The connection state after the upgrade.
pub(crate) struct WsConn {
    pub(crate) id: WsId,
    pub(crate) route: usize,
    pub(crate) ctx: WebSocketContext,
    pub(crate) last_seen: Instant,
    pub(crate) ping_sent: Option<Instant>,
    pub(crate) close_sent: Option<Instant>,
    pub(crate) close_emitted: bool,
    /// Tungstenite is done (close handshake complete, or the connection failed): close TCP
    /// once the output is written.
    pub(crate) terminated: bool,
    pub(crate) rooms: Vec<String>,
    pub(crate) data: Option<Box<dyn Any>>,
}

impl WsConn {
    pub(crate) fn new(id: WsId, route: usize, config: &WebSocketConfig, now: Instant) -> Self {
        WsConn {
            id,
            route,
            ctx: WebSocketContext::new(Role::Server, Some(config.tungstenite())),
            last_seen: now,
            ping_sent: None,
            close_sent: None,
            close_emitted: false,
            terminated: false,
            rooms: Vec::new(),
            data: None,
        }
    }
}

/// Feeds tungstenite from the connection's input buffer and collects its output in the
/// connection's output buffer, so framing runs without touching the socket (and works the
/// same over TLS).
pub(crate) struct WsIo<'a> {
    pub(crate) input: &'a mut crate::server::conn::InBuf,
    pub(crate) out: &'a mut Vec<u8>,
}

impl Read for WsIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let data = self.input.data();
        if data.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        self.input.consume(n);
        Ok(n)
    }
}

impl Write for WsIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The close code for a tungstenite error.
pub(crate) fn close_code_for(e: &tungstenite::Error) -> u16 {
    match e {
        tungstenite::Error::Capacity(_) => 1009,
        tungstenite::Error::Utf8(_) => 1007,
        tungstenite::Error::Protocol(_) => 1002,
        _ => 1011,
    }
}

/// Rooms: named groups of connections for broadcast.
#[derive(Default)]
pub(crate) struct Rooms {
    pub(crate) members: HashMap<String, Vec<WsId>>,
}

impl Rooms {
    pub(crate) fn join(&mut self, room: &str, id: WsId) -> bool {
        let list = self.members.entry(room.to_string()).or_default();
        if list.contains(&id) {
            return false;
        }
        list.push(id);
        true
    }

    pub(crate) fn leave(&mut self, room: &str, id: WsId) {
        if let Some(list) = self.members.get_mut(room) {
            list.retain(|m| *m != id);
            if list.is_empty() {
                self.members.remove(room);
            }
        }
    }
}
