//! Response head encoding straight into a connection's output buffer.

use http::header::{self, HeaderMap};
use http::StatusCode;

/// How the body of a response is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body and no length header: 1xx, 204 and 304 responses.
    NoBody,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked` (HTTP/1.1 streams).
    Chunked,
    /// The body ends when the connection closes (HTTP/1.0 streams).
    UntilClose,
}

/// What the connection decided about this response, beyond the app's headers.
#[derive(Debug, Clone, Copy)]
pub struct HeadParams<'a> {
    /// The cached `Date` value.
    pub date: &'a [u8],
    /// The `Server` value, unless the app set its own.
    pub server: Option<&'a [u8]>,
    /// The connection closes after this response.
    pub close: bool,
    /// An HTTP/1.0 client asked for keep-alive and gets it.
    pub keep_alive_10: bool,
    /// Framing headers to send (for HEAD: those a GET would have had).
    pub framing: ResponseFraming,
}

/// Whether a status never carries a body (RFC 9110 6.4.1).
pub fn status_has_no_body(status: StatusCode) -> bool {
    status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// Headers the connection owns: the app's values for these are replaced.
fn is_hop_header(name: &header::HeaderName) -> bool {
    name == header::CONTENT_LENGTH
        || name == header::TRANSFER_ENCODING
        || name == header::CONNECTION
        || name == "keep-alive"
}

/// Appends a response head to `out`. Header values come from `http::HeaderValue`, which
/// cannot hold CR or LF, so no app value can split the response.
pub fn encode_head(out: &mut Vec<u8>, status: StatusCode, headers: &HeaderMap, p: &HeadParams<'_>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    // One pass over the app's headers; Server and Date are added after them when absent
    // (header order carries no meaning), saving two hash lookups per response.
    let mut has_server = false;
    let mut has_date = false;
    let upgrade = status == StatusCode::SWITCHING_PROTOCOLS;
    for (name, value) in headers {
        if is_hop_header(name) {
            // An upgrade response keeps the app's Connection: upgrade.
            if !(upgrade && name == header::CONNECTION) {
                continue;
            }
        } else if name == header::SERVER {
            has_server = true;
        } else if name == header::DATE {
            has_date = true;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(server) = p.server.filter(|_| !has_server) {
        out.extend_from_slice(b"Server: ");
        out.extend_from_slice(server);
        out.extend_from_slice(b"\r\n");
    }
    if !has_date {
        out.extend_from_slice(b"Date: ");
        out.extend_from_slice(p.date);
        out.extend_from_slice(b"\r\n");
    }
    match p.framing {
        ResponseFraming::NoBody | ResponseFraming::UntilClose => {}
        ResponseFraming::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        ResponseFraming::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
    }
    if status != StatusCode::SWITCHING_PROTOCOLS {
        if p.close {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if p.keep_alive_10 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends one chunk of a chunked body.
pub fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let mut hex = [0u8; 16];
    let mut n = data.len();
    let mut i = hex.len();
    while n > 0 {
        i -= 1;
        hex[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
    }
    out.extend_from_slice(&hex[i..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk of a chunked body, with no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_minimal_response() {
        let mut out = Vec::new();
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        headers.insert(header::CONTENT_LENGTH, "999".parse().unwrap());
        let p = HeadParams {
            date: b"Thu, 03 Dec 2026 00:00:00 GMT",
            server: Some(b"tickhttp"),
            close: true,
            keep_alive_10: false,
            framing: ResponseFraming::Length(13),
        };
        encode_head(&mut out, StatusCode::OK, &headers, &p);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nServer: tickhttp\r\n\
             Date: Thu, 03 Dec 2026 00:00:00 GMT\r\nContent-Length: 13\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn chunks_are_hex_sized() {
        let mut out = Vec::new();
        encode_chunk(&mut out, &[b'a'; 300]);
        assert!(out.starts_with(b"12c\r\naaa"));
        assert!(out.ends_with(b"a\r\n"));
    }
}
