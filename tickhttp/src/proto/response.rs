//! Response head encoding straight into a connection's output buffer.

use http::header::{self, HeaderMap};
use http::StatusCode;

use super::date::DateCache;

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

/// Headers the connection owns: the app's values for these are replaced. `text` is
/// `name.as_str()`, already at hand where this is called (comparing a `HeaderName` with a
/// `&str` lowercases both sides; a `HeaderName`'s text is lowercase already).
fn is_hop_header(name: &header::HeaderName, text: &str) -> bool {
    name == header::CONTENT_LENGTH
        || name == header::TRANSFER_ENCODING
        || name == header::CONNECTION
        || text == "keep-alive"
}

/// The status line of the most common statuses, preformatted (what the general path writes).
fn common_status_line(status: StatusCode) -> Option<&'static [u8]> {
    Some(match status.as_u16() {
        200 => b"HTTP/1.1 200 OK\r\n",
        201 => b"HTTP/1.1 201 Created\r\n",
        204 => b"HTTP/1.1 204 No Content\r\n",
        206 => b"HTTP/1.1 206 Partial Content\r\n",
        301 => b"HTTP/1.1 301 Moved Permanently\r\n",
        302 => b"HTTP/1.1 302 Found\r\n",
        304 => b"HTTP/1.1 304 Not Modified\r\n",
        400 => b"HTTP/1.1 400 Bad Request\r\n",
        404 => b"HTTP/1.1 404 Not Found\r\n",
        500 => b"HTTP/1.1 500 Internal Server Error\r\n",
        _ => return None,
    })
}

fn encode_status_line(out: &mut Vec<u8>, status: StatusCode) {
    if let Some(line) = common_status_line(status) {
        out.extend_from_slice(line);
        return;
    }
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends an app header line.
fn encode_field(out: &mut Vec<u8>, name: &str, value: &header::HeaderValue) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// [`encode_head`] as the server's connections call it, with the same output in fewer steps:
/// the `Server` and `Date` lines come preformatted from `date` (see [`DateCache::lines`]), and
/// an app's `Connection: close` is noticed while its headers are copied. `close` is whether
/// the connection decided to close after this response; the result is whether it closes (also
/// when the app asked), and `http10` an HTTP/1.0 client that gets keep-alive when it stays open.
pub(crate) fn encode_server_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    date: &DateCache,
    framing: ResponseFraming,
    close: bool,
    http10: bool,
) -> bool {
    // One capacity check for a typical head instead of a reallocation partway.
    out.reserve(256);
    encode_status_line(out, status);
    let mut has_server = false;
    let mut has_date = false;
    let mut app_close = false;
    let upgrade = status == StatusCode::SWITCHING_PROTOCOLS;
    for (name, value) in headers {
        let text = name.as_str();
        if is_hop_header(name, text) {
            if name == header::CONNECTION {
                app_close = app_close
                    || super::head::list_tokens(value.as_bytes())
                        .any(|t| t.eq_ignore_ascii_case(b"close"));
                // An upgrade response keeps the app's Connection: upgrade.
                if upgrade {
                    encode_field(out, text, value);
                }
            }
            continue;
        } else if name == header::SERVER {
            has_server = true;
        } else if name == header::DATE {
            has_date = true;
        }
        encode_field(out, text, value);
    }
    if !has_server && !has_date {
        out.extend_from_slice(date.lines());
    } else {
        if !has_server {
            out.extend_from_slice(date.server_line());
        }
        if !has_date {
            out.extend_from_slice(date.date_line());
        }
    }
    match framing {
        ResponseFraming::NoBody | ResponseFraming::UntilClose => {}
        ResponseFraming::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        ResponseFraming::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
    }
    let close = close || app_close;
    if upgrade {
        out.extend_from_slice(b"\r\n");
    } else if close {
        out.extend_from_slice(b"Connection: close\r\n\r\n");
    } else if http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n\r\n");
    } else {
        out.extend_from_slice(b"\r\n");
    }
    close
}

/// Appends a response head to `out`. Header values come from `http::HeaderValue`, which
/// cannot hold CR or LF, so no app value can split the response.
pub fn encode_head(out: &mut Vec<u8>, status: StatusCode, headers: &HeaderMap, p: &HeadParams<'_>) {
    encode_status_line(out, status);
    // One pass over the app's headers; Server and Date are added after them when absent
    // (header order carries no meaning), saving two hash lookups per response.
    let mut has_server = false;
    let mut has_date = false;
    let upgrade = status == StatusCode::SWITCHING_PROTOCOLS;
    for (name, value) in headers {
        let text = name.as_str();
        if is_hop_header(name, text) {
            // An upgrade response keeps the app's Connection: upgrade.
            if !(upgrade && name == header::CONNECTION) {
                continue;
            }
        } else if name == header::SERVER {
            has_server = true;
        } else if name == header::DATE {
            has_date = true;
        }
        encode_field(out, text, value);
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
    fn common_status_lines_match_the_general_form() {
        for code in [200, 201, 204, 206, 301, 302, 304, 400, 404, 500] {
            let status = StatusCode::from_u16(code).unwrap();
            let line = format!(
                "HTTP/1.1 {} {}\r\n",
                status.as_str(),
                status.canonical_reason().unwrap()
            );
            assert_eq!(common_status_line(status), Some(line.as_bytes()));
        }
    }

    #[test]
    fn the_server_encoder_writes_what_encode_head_writes() {
        let mut cases: Vec<(u16, Vec<(&str, &str)>)> = vec![
            (200, vec![("content-type", "text/plain")]),
            (200, vec![]),
            (418, vec![("x-a", "1"), ("x-a", "2")]),
            (
                200,
                vec![("server", "app"), ("connection", "keep-alive, Close")],
            ),
            (404, vec![("date", "yesterday"), ("content-length", "9")]),
            (
                200,
                vec![("server", "app"), ("date", "today"), ("keep-alive", "x")],
            ),
            (
                101,
                vec![("connection", "upgrade"), ("upgrade", "websocket")],
            ),
            (101, vec![("connection", "close, upgrade")]),
            (204, vec![("transfer-encoding", "chunked")]),
        ];
        cases.push((599, vec![("x", "y")]));
        let framings = [
            ResponseFraming::NoBody,
            ResponseFraming::Length(13),
            ResponseFraming::Chunked,
            ResponseFraming::UntilClose,
        ];
        for server in [None, Some(&b"tickhttp"[..])] {
            let date = DateCache::with_server(server);
            for (code, fields) in &cases {
                let mut headers = HeaderMap::new();
                for (n, v) in fields {
                    headers.append(
                        header::HeaderName::from_static(n),
                        header::HeaderValue::from_static(v),
                    );
                }
                let status = StatusCode::from_u16(*code).unwrap();
                for framing in framings {
                    for (close, http10) in
                        [(false, false), (true, false), (false, true), (true, true)]
                    {
                        let mut fast = Vec::new();
                        let closes = encode_server_head(
                            &mut fast, status, &headers, &date, framing, close, http10,
                        );
                        let app_close = headers.get_all(header::CONNECTION).iter().any(|v| {
                            crate::proto::head::list_tokens(v.as_bytes())
                                .any(|t| t.eq_ignore_ascii_case(b"close"))
                        });
                        let expected_close = close || app_close;
                        let mut general = Vec::new();
                        let p = HeadParams {
                            date: date.value(),
                            server,
                            close: expected_close,
                            keep_alive_10: !expected_close && http10,
                            framing,
                        };
                        encode_head(&mut general, status, &headers, &p);
                        assert_eq!(closes, expected_close);
                        assert_eq!(
                            String::from_utf8(fast).unwrap(),
                            String::from_utf8(general).unwrap(),
                            "{code} {fields:?} {framing:?} {close} {http10} {server:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn chunks_are_hex_sized() {
        let mut out = Vec::new();
        encode_chunk(&mut out, &[b'a'; 300]);
        assert!(out.starts_with(b"12c\r\naaa"));
        assert!(out.ends_with(b"a\r\n"));
    }
}
