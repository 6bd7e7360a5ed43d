//! The request handed to the application.

use std::fmt;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::time::{Instant, SystemTime};

use crate::body::RequestBody;

/// Identifies one request; pass it to [`Server::respond`](crate::Server::respond).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId {
    pub(crate) conn: u32,
    pub(crate) gen: u64,
    pub(crate) seq: u64,
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.gen, self.seq)
    }
}

/// Facts about a connection that arrived from outside the server (the worker pool's master, or
/// an app that accepted the socket itself).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ConnectionMeta {
    /// The client address, when the socket's own peer address is not the client (a proxy).
    pub peer_addr: Option<SocketAddr>,
    /// When the connection was accepted.
    pub accepted_at: Option<SystemTime>,
}

impl ConnectionMeta {
    /// Metadata naming the client address.
    pub fn with_peer(peer_addr: SocketAddr) -> Self {
        ConnectionMeta {
            peer_addr: Some(peer_addr),
            accepted_at: None,
        }
    }

    /// Sets the accept time.
    #[must_use]
    pub fn accepted_at(mut self, at: SystemTime) -> Self {
        self.accepted_at = Some(at);
        self
    }
}

/// A complete request: an `http::Request` plus the facts of its connection.
///
/// It dereferences to [`http::Request<RequestBody>`], so `req.method()`, `req.uri()`,
/// `req.headers()` and `req.body()` work directly.
#[derive(Debug)]
pub struct Request {
    pub(crate) id: RequestId,
    pub(crate) peer_addr: SocketAddr,
    pub(crate) worker_id: Option<u32>,
    pub(crate) received_at: Instant,
    pub(crate) inner: http::Request<RequestBody>,
}

impl Request {
    /// The id to answer with.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// The client address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// The worker that received it, in the worker pool.
    pub fn worker_id(&self) -> Option<u32> {
        self.worker_id
    }

    /// When the request was complete.
    pub fn received_at(&self) -> Instant {
        self.received_at
    }

    /// The path of the target, without the query.
    pub fn path(&self) -> &str {
        self.inner.uri().path()
    }

    /// The query string, if any.
    pub fn query(&self) -> Option<&str> {
        self.inner.uri().query()
    }

    /// The value of the first query parameter named `name`, percent-decoded, `+` as space.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
    }

    /// A header value as text, when present and visible ASCII.
    pub fn header(&self, name: impl http::header::AsHeaderName) -> Option<&str> {
        self.inner.headers().get(name)?.to_str().ok()
    }

    /// The underlying `http::Request`.
    pub fn into_inner(self) -> http::Request<RequestBody> {
        self.inner
    }

    /// Splits into id and `http::Request`.
    pub fn into_parts(self) -> (RequestId, http::Request<RequestBody>) {
        (self.id, self.inner)
    }
}

impl Deref for Request {
    type Target = http::Request<RequestBody>;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl DerefMut for Request {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

/// Decodes `%XX` escapes and `+` (as a space) in a query component; invalid escapes are kept.
pub fn percent_decode(s: &str) -> String {
    crate::form::form_decode(s.as_bytes())
}
