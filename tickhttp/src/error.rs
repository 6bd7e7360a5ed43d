//! Typed errors: request errors map to the status code the client receives; API errors say
//! what was misused and how to fix it.

use std::io;
use std::net::SocketAddr;

use http::StatusCode;

use crate::RequestId;

/// Why a request was refused before it reached the application. Each maps to the status code
/// sent to the client ([`RequestError::status`]); the connection is then closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Malformed or ambiguous syntax or framing (400).
    #[error("bad request: {0}")]
    Malformed(&'static str),
    /// The request head is larger than `max_head_size`, or a trailer section is too large (431).
    #[error("request head too large")]
    HeadTooLarge,
    /// More header lines than `max_headers` (431).
    #[error("too many header fields")]
    TooManyHeaders,
    /// The request target is longer than `max_uri_len` (414).
    #[error("request target too long")]
    UriTooLong,
    /// The body is larger than `max_body_size` (413).
    #[error("request body too large")]
    BodyTooLarge,
    /// A transfer coding this server does not decode (501).
    #[error("unsupported transfer coding")]
    UnsupportedTransferCoding,
    /// A method this server does not implement, such as CONNECT (501).
    #[error("method not implemented")]
    NotImplemented,
    /// An `Expect` value other than `100-continue` (417).
    #[error("unsupported expectation")]
    ExpectationFailed,
    /// An HTTP version other than 1.0 and 1.1, including the HTTP/2 preface (505).
    #[error("HTTP version not supported")]
    UnsupportedVersion,
    /// The head or body did not arrive within its timeout (408).
    #[error("request timed out")]
    Timeout,
}

impl RequestError {
    /// The status code sent to the client for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            RequestError::Malformed(_) => StatusCode::BAD_REQUEST,
            RequestError::HeadTooLarge | RequestError::TooManyHeaders => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            RequestError::UriTooLong => StatusCode::URI_TOO_LONG,
            RequestError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::UnsupportedTransferCoding | RequestError::NotImplemented => {
                StatusCode::NOT_IMPLEMENTED
            }
            RequestError::ExpectationFailed => StatusCode::EXPECTATION_FAILED,
            RequestError::UnsupportedVersion => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            RequestError::Timeout => StatusCode::REQUEST_TIMEOUT,
        }
    }
}

/// Errors from the [`Server`](crate::Server) API and the worker pool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of range. Names the option and the rule.
    #[error("invalid configuration: {option}: {reason}")]
    Config {
        /// The option's name.
        option: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// The listening socket could not be created, bound or put into listening state.
    #[error("cannot listen on {addr}: {source} (is another process using the port, or does binding need privileges?)")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `respond` was called for a request that was already answered or never handed out.
    #[error("request {0} is not awaiting a response (answered twice, or never handed out by get_request)")]
    NotAwaitingResponse(RequestId),
    /// The operation needs a running server; call `start()` first.
    #[error("the server is not running; call start() first")]
    NotRunning,
    /// The operation is not available in this mode.
    #[error("{0}")]
    Mode(&'static str),
    /// The WebSocket connection is closed or unknown.
    #[error("WebSocket connection {0} is closed")]
    WebSocketClosed(crate::ws::WsId),
    /// The worker pool could not start or run.
    #[error("worker pool: {0}")]
    Pool(String),
}

impl Error {
    pub(crate) fn io(context: &'static str, source: io::Error) -> Self {
        Error::Io { context, source }
    }

    pub(crate) fn config(option: &'static str, reason: impl Into<String>) -> Self {
        Error::Config {
            option,
            reason: reason.into(),
        }
    }
}
