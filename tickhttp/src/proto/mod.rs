//! Sans-IO HTTP/1.1: pure state machines over bytes, no sockets.
//!
//! `httparse` tokenizes the request head; this module owns the framing rules that decide where
//! one request ends and the next begins (Content-Length, Transfer-Encoding, limits), because
//! those rules are where request smuggling lives and no crate enforces all of them.

pub mod chunked;
pub mod date;
pub mod head;
pub mod multipart;
pub mod range;
pub mod response;

pub use chunked::ChunkedDecoder;
pub use head::{parse_head, Framing, Head, Limits};
