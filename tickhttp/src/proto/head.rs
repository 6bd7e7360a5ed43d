//! Request head parsing and message framing (RFC 9112 sections 2-7).

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri, Version};

use crate::error::RequestError;

/// The most header lines any configuration may allow; the parser's slot array is this long.
pub const MAX_HEADERS_CAP: usize = 256;

/// Size limits applied while parsing a request head and deciding its framing.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request head (request line, headers and the blank line), in bytes. Over it: 431.
    pub max_head_size: usize,
    /// Most header lines. Over it: 431.
    pub max_headers: usize,
    /// Longest request target. Over it: 414.
    pub max_uri_len: usize,
    /// Largest request body. A Content-Length over it: 413 before any body byte is read.
    pub max_body_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        let d = crate::config::ServerConfig::default();
        d.limits()
    }
}

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// A chunked body follows the head.
    Chunked,
}

/// A parsed and validated request head.
#[derive(Debug)]
pub struct Head {
    /// The request method.
    pub method: Method,
    /// The request target, as sent (origin, absolute or asterisk form).
    pub uri: Uri,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The header fields.
    pub headers: HeaderMap,
    /// Where the body ends.
    pub framing: Framing,
    /// Whether the client asked to keep the connection open after this request.
    pub keep_alive: bool,
    /// Whether the client sent `Expect: 100-continue`.
    pub expect_continue: bool,
    /// Whether the client asked to switch protocols (`Connection: upgrade` plus `Upgrade`).
    pub upgrade: bool,
    /// Whether an `Upgrade` header is present (with or without `Connection: upgrade`).
    pub upgrade_header: bool,
    /// Length of the head in bytes, blank line included.
    pub head_len: usize,
}

/// Finds whether `buf` may hold a complete head, looking only at bytes from `from` on (minus
/// the three bytes before it, which can start a blank line). Saves re-parsing a slow client's
/// head on every byte.
pub fn may_be_complete(buf: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(3);
    for i in memchr::memchr_iter(b'\n', &buf[start..]) {
        let i = start + i;
        if (i >= 1 && buf[i - 1] == b'\n') || (i >= 2 && &buf[i - 2..i] == b"\n\r") {
            return true;
        }
    }
    false
}

/// Parses one request head at the start of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete and within limits, `Ok(Some(head))` once it
/// is complete and valid, and an error (carrying its status code) for anything malformed,
/// ambiguous or over a limit. The result does not depend on how the bytes were split across
/// reads.
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<Head>, RequestError> {
    parse_head_cached(buf, limits, &mut HeadCache::default())
}

/// What the previous request of a connection sent, kept so that what a keep-alive client
/// repeats (its `Host`, `User-Agent`, `Accept`... and often the same target) is not copied
/// and validated again.
///
/// Only a head that parsed successfully fills it: a cached value passed every check a value
/// of that header gets, so reusing it for the same bytes gives the same `Head`. A value is
/// reused only for byte-identical input, compared at the same position in the header list.
#[derive(Debug, Default)]
pub(crate) struct HeadCache {
    /// The origin-form target bytes and the `Uri` they parsed to.
    target: Option<(Bytes, Uri)>,
    /// The previous request's header fields, in order, each with its line as sent (name to
    /// end of value).
    headers: Vec<CachedField>,
}

#[derive(Debug)]
struct CachedField {
    line: Bytes,
    name: HeaderName,
    value: HeaderValue,
}

impl HeadCache {
    fn clear(&mut self) {
        self.target = None;
        self.headers.clear();
    }
}

/// [`parse_head`], reusing the fields `cache` holds from the connection's previous request,
/// and leaving this request's there for the next one.
pub(crate) fn parse_head_cached(
    buf: &[u8],
    limits: &Limits,
    cache: &mut HeadCache,
) -> Result<Option<Head>, RequestError> {
    let parsed = parse_head_inner(buf, limits, cache);
    if parsed.is_err() {
        // Entries written before the failure were never fully checked.
        cache.clear();
    }
    parsed
}

fn parse_head_inner(
    buf: &[u8],
    limits: &Limits,
    cache: &mut HeadCache,
) -> Result<Option<Head>, RequestError> {
    let mut slots: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS_CAP] =
        [const { MaybeUninit::uninit() }; MAX_HEADERS_CAP];
    let n = limits.max_headers.clamp(1, MAX_HEADERS_CAP);
    let mut req = httparse::Request::new(&mut []);
    let status = req.parse_with_uninit_headers(buf, &mut slots[..n]);
    let head_len = match status {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > limits.max_head_size {
                Err(oversize_head(buf, limits))
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(RequestError::TooManyHeaders),
        Err(httparse::Error::Version) => return Err(version_error(buf)),
        Err(httparse::Error::Token) if looks_like_long_target(buf, limits) => {
            return Err(RequestError::UriTooLong)
        }
        Err(e) => return Err(RequestError::Malformed(httparse_reason(e))),
    };
    let target = req.path.unwrap_or("");
    if target.len() > limits.max_uri_len {
        return Err(RequestError::UriTooLong);
    }
    if head_len > limits.max_head_size {
        return Err(RequestError::HeadTooLarge);
    }
    let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
        .map_err(|_| RequestError::Malformed("invalid method"))?;
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(RequestError::UnsupportedVersion),
    };

    // At most one copy of the head, made on the first field the cache does not hold; header
    // values and the target become views into it, so a request costs one allocation for its
    // head instead of one per header.
    let mut shared: Option<Bytes> = None;
    let base = buf.as_ptr() as usize;
    let mut view = |s: &[u8]| {
        let shared = shared.get_or_insert_with(|| Bytes::copy_from_slice(&buf[..head_len]));
        let start = s.as_ptr() as usize - base;
        shared.slice(start..start + s.len())
    };
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    let mut host: Option<&[u8]> = None;
    let mut host_checked = false;
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding: Option<&[u8]> = None;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut upgrade_token = false;
    let mut expect_continue = false;
    let mut upgrade_header = false;
    for (i, h) in req.headers.iter().enumerate() {
        // The same field as at this position in the previous request: its name and value were
        // validated then (header names are case-insensitive, and `HeaderName` stores them
        // lowercased, so a name equal but for case parses to the same `HeaderName`).
        // The whole line, name to end of value, as it sits in `buf` (checked slicing, though
        // httparse's slices always point into `buf`).
        let line_start = (h.name.as_ptr() as usize).checked_sub(base);
        let line_end = (h.value.as_ptr() as usize + h.value.len()).checked_sub(base);
        let line = line_start
            .zip(line_end)
            .and_then(|(start, end)| buf.get(start..end));
        // The same line as at this position in the previous request: its name and value were
        // validated then, and one comparison of the line checks both.
        let cached = match (cache.headers.get(i), line) {
            (Some(f), Some(line)) if f.line[..] == *line => Some(f),
            _ => None,
        };
        let hit = cached.is_some();
        let (name, value) = match cached {
            Some(f) => (f.name.clone(), f.value.clone()),
            None => {
                let name = HeaderName::from_bytes(h.name.as_bytes())
                    .map_err(|_| RequestError::Malformed("invalid header name"))?;
                let value = HeaderValue::from_maybe_shared(view(h.value))
                    .map_err(|_| RequestError::Malformed("invalid header value"))?;
                let entry = CachedField {
                    line: line.map(&mut view).unwrap_or_default(),
                    name: name.clone(),
                    value: value.clone(),
                };
                match cache.headers.get_mut(i) {
                    Some(slot) => *slot = entry,
                    None => cache.headers.push(entry),
                }
                (name, value)
            }
        };
        if name == header::HOST {
            if host.replace(h.value).is_some() {
                return Err(RequestError::Malformed("more than one Host header"));
            }
            // The previous request's Host passed `is_valid_host` below.
            host_checked = hit;
        } else if name == header::CONTENT_LENGTH {
            if content_length.is_some() {
                return Err(RequestError::Malformed("more than one Content-Length"));
            }
            content_length = Some(parse_content_length(h.value)?);
        } else if name == header::TRANSFER_ENCODING {
            if transfer_encoding.replace(h.value).is_some() {
                return Err(RequestError::Malformed(
                    "more than one Transfer-Encoding header",
                ));
            }
        } else if name == header::CONNECTION {
            for token in list_tokens(h.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_token = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    upgrade_token = true;
                }
            }
        } else if name == header::UPGRADE {
            upgrade_header = true;
        } else if name == header::EXPECT {
            if h.value.eq_ignore_ascii_case(b"100-continue") {
                expect_continue = version == Version::HTTP_11;
            } else {
                return Err(RequestError::ExpectationFailed);
            }
        }
        headers.append(name, value);
    }
    cache.headers.truncate(req.headers.len());

    // An origin-form target depends on its bytes alone: the same bytes as last time give the
    // same `Uri`.
    let uri = match &cache.target {
        Some((raw, uri)) if raw[..] == *target.as_bytes() => uri.clone(),
        _ => {
            let raw = view(target.as_bytes());
            let uri = parse_target(&method, raw.clone(), host)?;
            cache.target = raw.starts_with(b"/").then(|| (raw, uri.clone()));
            uri
        }
    };
    if version == Version::HTTP_11 && host.is_none() {
        return Err(RequestError::Malformed("HTTP/1.1 request without Host"));
    }
    if let Some(h) = host {
        if !host_checked && !h.is_empty() && !is_valid_host(h) {
            return Err(RequestError::Malformed("invalid Host header"));
        }
    }

    let framing = match (transfer_encoding, content_length) {
        (Some(_), Some(_)) => {
            return Err(RequestError::Malformed(
                "both Content-Length and Transfer-Encoding",
            ))
        }
        (Some(te), None) => {
            if version == Version::HTTP_10 {
                return Err(RequestError::Malformed(
                    "Transfer-Encoding in an HTTP/1.0 request",
                ));
            }
            check_transfer_coding(te)?;
            Framing::Chunked
        }
        (None, Some(0)) | (None, None) => Framing::None,
        (None, Some(n)) => {
            if n > limits.max_body_size {
                return Err(RequestError::BodyTooLarge);
            }
            Framing::Length(n)
        }
    };

    let keep_alive = match version {
        Version::HTTP_11 => !close,
        _ => keep_alive_token && !close,
    };
    let upgrade = upgrade_token && upgrade_header;
    Ok(Some(Head {
        method,
        uri,
        version,
        headers,
        framing,
        keep_alive,
        expect_continue,
        upgrade,
        upgrade_header,
        head_len,
    }))
}

/// Bytes allowed in a reg-name or IPv4 host: unreserved, sub-delims and `%` (RFC 3986).
const HOST_CHARS: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        b += 1;
    }
    t
};

/// `host [":" port]` (RFC 9110 7.2): a reg-name, IPv4 or bracketed IPv6 literal, then digits.
/// Cheaper than a full `Authority` parse, and as strict about what matters: no path, query,
/// userinfo, spaces or control bytes.
fn is_valid_host(h: &[u8]) -> bool {
    let (host, port) = if h.first() == Some(&b'[') {
        let Some(end) = memchr::memchr(b']', h) else {
            return false;
        };
        let literal = &h[1..end];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        match &h[end + 1..] {
            [] => return true,
            [b':', port @ ..] => (&h[..0], port),
            _ => return false,
        }
    } else {
        // One pass instead of a reverse search and then a scan: with at most one ':' (a reg-name
        // or IPv4 address has none), what follows it must be the port's digits.
        let mut colon = None;
        for (i, &b) in h.iter().enumerate() {
            if b == b':' {
                if colon.replace(i).is_some() {
                    return false;
                }
            } else if !HOST_CHARS[usize::from(b)] {
                return false;
            }
        }
        return colon.is_none_or(|i| {
            let port = &h[i + 1..];
            port.len() <= 5 && port.iter().all(u8::is_ascii_digit)
        });
    };
    let host_ok = host.iter().all(|&b| HOST_CHARS[usize::from(b)]);
    let port_ok = port.len() <= 5 && port.iter().all(u8::is_ascii_digit);
    host_ok && port_ok
}

/// Decides between 414 and 431 for a head that outgrew its limit before completing: 414 only
/// when the request target itself is over `max_uri_len`, as a complete parse would decide.
fn oversize_head(buf: &[u8], limits: &Limits) -> RequestError {
    if looks_like_long_target(buf, limits) {
        RequestError::UriTooLong
    } else {
        RequestError::HeadTooLarge
    }
}

/// Whether the request target (the second token of the request line, possibly still
/// arriving) is longer than `max_uri_len`.
fn looks_like_long_target(buf: &[u8], limits: &Limits) -> bool {
    let line_end = memchr::memchr(b'\n', buf).unwrap_or(buf.len());
    let line = &buf[..line_end];
    let Some(start) = memchr::memchr(b' ', line) else {
        return false;
    };
    let rest = &line[start + 1..];
    let target_len = memchr::memchr(b' ', rest).unwrap_or(rest.len());
    target_len > limits.max_uri_len
}

/// `HTTP/x.y` with other digits is an unsupported version (505); anything else is garbage (400).
fn version_error(buf: &[u8]) -> RequestError {
    let line_end = memchr::memchr(b'\n', buf).unwrap_or(buf.len());
    let line = buf[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&buf[..line_end]);
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let [_, _, version] = parts[..] else {
        return RequestError::Malformed("invalid request line");
    };
    match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            RequestError::UnsupportedVersion
        }
        [b'H', b'T', b'T', b'P', b'/', major] if major.is_ascii_digit() => {
            RequestError::UnsupportedVersion
        }
        _ => RequestError::Malformed("invalid HTTP version"),
    }
}

fn httparse_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Token => "invalid request line",
        _ => "malformed request head",
    }
}

/// Content-Length must be plain digits: no sign, no spaces, no list, no overflow.
fn parse_content_length(value: &[u8]) -> Result<u64, RequestError> {
    const BAD: RequestError = RequestError::Malformed("invalid Content-Length");
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(BAD);
    }
    value.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(d - b'0')))
            .ok_or(BAD)
    })
}

/// Accepts exactly one `chunked` coding, last. Other known codings are not implemented (501);
/// unknown ones are 501 too; a list whose last coding is not chunked, or an empty element, is 400.
fn check_transfer_coding(value: &[u8]) -> Result<(), RequestError> {
    let mut codings = Vec::new();
    for element in value.split(|&b| b == b',') {
        let element = trim_ows(element);
        if element.is_empty() {
            return Err(RequestError::Malformed("empty Transfer-Encoding element"));
        }
        // Parameters (`;q=...`) are not defined for any coding we accept.
        if !element.iter().all(|&b| is_tchar(b)) {
            return Err(RequestError::Malformed("invalid Transfer-Encoding"));
        }
        codings.push(element);
    }
    for coding in &codings {
        let known = [
            &b"chunked"[..],
            b"gzip",
            b"x-gzip",
            b"deflate",
            b"compress",
            b"x-compress",
        ]
        .iter()
        .any(|k| coding.eq_ignore_ascii_case(k));
        if !known {
            return Err(RequestError::UnsupportedTransferCoding);
        }
    }
    let last_is_chunked = codings
        .last()
        .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
    if !last_is_chunked {
        return Err(RequestError::Malformed(
            "Transfer-Encoding does not end with chunked",
        ));
    }
    if codings.len() > 1 {
        let chunked_twice = codings[..codings.len() - 1]
            .iter()
            .any(|c| c.eq_ignore_ascii_case(b"chunked"));
        return Err(if chunked_twice {
            RequestError::Malformed("chunked applied more than once")
        } else {
            RequestError::UnsupportedTransferCoding
        });
    }
    Ok(())
}

/// Origin form (`/path?q`), absolute form (`http://host/path`) and asterisk form (`*`, OPTIONS
/// only). Authority form is CONNECT's, which this server does not tunnel (501).
fn parse_target(method: &Method, target: Bytes, host: Option<&[u8]>) -> Result<Uri, RequestError> {
    const BAD: RequestError = RequestError::Malformed("invalid request target");
    if target.starts_with(b"/") {
        return Uri::from_maybe_shared(target).map_err(|_| BAD);
    }
    if &target[..] == b"*" {
        return if method == Method::OPTIONS {
            Uri::from_maybe_shared(target).map_err(|_| BAD)
        } else {
            Err(RequestError::Malformed("asterisk target outside OPTIONS"))
        };
    }
    if method == Method::CONNECT {
        return Err(RequestError::NotImplemented);
    }
    let uri = Uri::from_maybe_shared(target).map_err(|_| BAD)?;
    let scheme_ok = matches!(uri.scheme_str(), Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"));
    let authority = uri.authority().ok_or(BAD)?;
    if !scheme_ok {
        return Err(BAD);
    }
    // RFC 9112 3.2.2 lets the target's authority override Host; a front proxy may have routed
    // on Host instead, so a disagreement is refused rather than silently resolved.
    if let Some(h) = host {
        if !authority.as_str().as_bytes().eq_ignore_ascii_case(h) {
            return Err(RequestError::Malformed(
                "absolute-form target disagrees with Host",
            ));
        }
    }
    Ok(uri)
}

/// Elements of a comma-separated header list, trimmed of optional whitespace.
pub fn list_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|t| !t.is_empty())
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Option<Head>, RequestError> {
        parse_head(s.as_bytes(), &Limits::default())
    }

    fn status(s: &str) -> u16 {
        match parse(s) {
            Ok(Some(_)) => 200,
            Ok(None) => 0,
            Err(e) => e.status().as_u16(),
        }
    }

    #[test]
    fn simple_get_keeps_alive() {
        let h = parse("GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.method, Method::GET);
        assert_eq!(h.uri.path(), "/a");
        assert_eq!(h.framing, Framing::None);
        assert!(h.keep_alive);
    }

    #[test]
    fn http10_closes_unless_asked() {
        assert!(!parse("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap().keep_alive);
        let h = parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive);
    }

    #[test]
    fn framing_rules() {
        assert_eq!(status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
            400
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n"),
            400
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\n"),
            400
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n"),
            400
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n"),
            501
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n"),
            501
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"),
            400
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked,\r\n\r\n"),
            400
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            501
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ChUnKeD\r\n\r\n"),
            200
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 20000000\r\n\r\n"),
            413
        );
    }

    #[test]
    fn syntax_rules() {
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
        assert_eq!(
            status("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"),
            400
        );
        assert_eq!(status("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
        assert_eq!(status("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 505);
        assert_eq!(status("GET * HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), 200);
        assert_eq!(status("GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n"), 200);
        assert_eq!(status("GET http://a/x HTTP/1.1\r\nHost: b\r\n\r\n"), 400);
        assert_eq!(status("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"), 501);
        assert_eq!(
            status("GET / HTTP/1.1\r\nHost: a\r\nExpect: nope\r\n\r\n"),
            417
        );
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nX: \0\r\n\r\n"), 400);
    }

    #[test]
    fn oversize_status_does_not_depend_on_the_read_split() {
        // A target just under max_uri_len in a head over max_head_size: 431 whole or partial.
        let mut wire = format!("GET /{} HTTP/1.1\r\nHost: a\r\nX: ", "a".repeat(8180)).into_bytes();
        wire.extend(std::iter::repeat_n(b'b', 9000));
        wire.extend_from_slice(b"\r\n\r\n");
        let limits = Limits::default();
        assert_eq!(
            parse_head(&wire, &limits).unwrap_err(),
            RequestError::HeadTooLarge
        );
        for cut in [16_385, 16_800, wire.len() - 1] {
            assert_eq!(
                parse_head(&wire[..cut], &limits).unwrap_err(),
                RequestError::HeadTooLarge,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn host_validation() {
        for ok in [
            &b"example.com"[..],
            b"example.com:8080",
            b"127.0.0.1:1",
            b"[::1]:80",
            b"[::1]",
            b"a_b",
        ] {
            assert!(is_valid_host(ok), "{:?}", ok);
        }
        for bad in [
            &b"a/b"[..],
            b"a b",
            b"a@b",
            b"a:b:c",
            b"[::1",
            b"[zz]",
            b"a:123456",
            b"a?b",
            b"a#b",
        ] {
            assert!(!is_valid_host(bad), "{:?}", bad);
        }
    }

    #[test]
    fn limits() {
        let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
        assert_eq!(status(&long), 414);
        let partial_long = format!("GET /{}", "a".repeat(20000));
        assert_eq!(status(&partial_long), 414);
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "a".repeat(20000)
        );
        assert_eq!(status(&big), 431);
        let many: String = (0..200).map(|i| format!("X{i}: a\r\n")).collect();
        assert_eq!(
            status(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")),
            431
        );
    }

    #[test]
    fn completeness_hint() {
        assert!(!may_be_complete(b"GET / HTTP/1.1\r\nHost: a\r\n", 0));
        assert!(may_be_complete(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 20));
        assert!(may_be_complete(b"GET / HTTP/1.1\nHost: a\n\n", 23));
    }

    fn same_head(a: &Head, b: &Head) -> bool {
        a.method == b.method
            && a.uri == b.uri
            && a.version == b.version
            && a.headers == b.headers
            && a.framing == b.framing
            && a.keep_alive == b.keep_alive
            && a.expect_continue == b.expect_continue
            && a.upgrade == b.upgrade
            && a.upgrade_header == b.upgrade_header
            && a.head_len == b.head_len
    }

    #[test]
    fn cached_fields_give_the_same_heads() {
        let heads = [
            "GET /a HTTP/1.1\r\nHost: x:80\r\nAccept: */*\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: x:80\r\nAccept: */*\r\n\r\n",
            "GET /a HTTP/1.1\r\nHOST: x:80\r\naccept: */*\r\n\r\n",
            "GET /b?q HTTP/1.1\r\nHost: x:80\r\n\r\n",
            // The cached Host is not reused for a value that differs, nor at another position.
            "GET /b?q HTTP/1.1\r\nHost: x y\r\n\r\n",
            "GET /b?q HTTP/1.1\r\nHost: x:80\r\n\r\n",
            "GET /b?q HTTP/1.1\r\nX: x:80\r\nHost: x:80\r\nHost: x:80\r\n\r\n",
            "GET /b?q HTTP/1.1\r\nHost: x:80\r\n\r\n",
            "GET /b?q HTTP/1.1\r\nHost: x:80\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "POST /b?q HTTP/1.1\r\nHost: x:80\r\nContent-Length: 1\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: x:80\r\n\r\n",
            "GET * HTTP/1.1\r\nHost: x:80\r\n\r\n",
            "GET http://x:80/b HTTP/1.1\r\nHost: x:80\r\n\r\n",
            "GET http://x:80/b HTTP/1.1\r\nHost: y\r\n\r\n",
            "GET /b#f HTTP/1.1\r\nHost: y\r\n\r\n",
            "GET /b#f HTTP/1.1\r\nHost: y\r\n\r\n",
            "GET /b#f HTTP/1.1\r\n\r\n",
        ];
        let limits = Limits::default();
        let mut cache = HeadCache::default();
        for head in heads {
            let cached = parse_head_cached(head.as_bytes(), &limits, &mut cache);
            let fresh = parse_head(head.as_bytes(), &limits);
            match (&cached, &fresh) {
                (Ok(Some(a)), Ok(Some(b))) => assert!(same_head(a, b), "{head:?}"),
                (Err(a), Err(b)) => assert_eq!(a, b, "{head:?}"),
                _ => panic!("{head:?}: {cached:?} vs {fresh:?}"),
            }
        }
    }

    proptest::proptest! {
        /// Feeding a head in two pieces (as a server does when the first read was partial)
        /// gives the same head as feeding it whole.
        #[test]
        fn head_parse_is_independent_of_read_boundaries(
            path in "/[a-z0-9]{0,20}",
            headers in proptest::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,12}", "[ -~]{0,30}"), 0..8),
            body_len in 0u64..100,
            cut in 0usize..400,
        ) {
            let mut wire = format!("POST {path} HTTP/1.1\r\nHost: example\r\n");
            for (n, v) in &headers {
                let n = format!("X-{n}");
                wire.push_str(&format!("{n}: {}\r\n", v.trim()));
            }
            wire.push_str(&format!("Content-Length: {body_len}\r\n\r\n"));
            let whole = parse_head(wire.as_bytes(), &Limits::default()).unwrap().unwrap();
            let cut = cut.min(wire.len());
            let first = parse_head(&wire.as_bytes()[..cut], &Limits::default()).unwrap();
            if cut < wire.len() {
                proptest::prop_assert!(first.is_none());
                proptest::prop_assert!(!may_be_complete(&wire.as_bytes()[..cut], 0));
            }
            proptest::prop_assert_eq!(whole.head_len, wire.len());
            proptest::prop_assert_eq!(whole.uri.path(), if path.is_empty() { "/" } else { path.as_str() });
            proptest::prop_assert_eq!(whole.framing, if body_len == 0 { Framing::None } else { Framing::Length(body_len) });
            proptest::prop_assert_eq!(whole.headers.len(), headers.len() + 2);
        }

        /// A connection's requests parse to the same heads with the cache of the previous
        /// request's fields as without it.
        #[test]
        fn the_cache_does_not_change_a_head(
            heads in proptest::collection::vec(
                (
                    proptest::sample::select(vec!["/", "/a", "/a?b", "*", "http://h/x", "/a#f"]),
                    proptest::collection::vec(
                        proptest::sample::select(vec![
                            "Host: h", "host: h", "Host: h:1", "Host: h h", "Accept: */*",
                            "Content-Length: 3", "Transfer-Encoding: chunked", "Connection: close",
                            "X: \u{1}", "Expect: 100-continue", "Upgrade: websocket",
                        ]),
                        0..5,
                    ),
                ),
                1..8,
            ),
        ) {
            let limits = Limits::default();
            let mut cache = HeadCache::default();
            for (target, fields) in heads {
                let mut wire = format!("GET {target} HTTP/1.1\r\n");
                for f in fields {
                    wire.push_str(f);
                    wire.push_str("\r\n");
                }
                wire.push_str("\r\n");
                let cached = parse_head_cached(wire.as_bytes(), &limits, &mut cache);
                let fresh = parse_head(wire.as_bytes(), &limits);
                match (&cached, &fresh) {
                    (Ok(Some(a)), Ok(Some(b))) => proptest::prop_assert!(same_head(a, b)),
                    (Err(a), Err(b)) => proptest::prop_assert_eq!(a, b),
                    _ => proptest::prop_assert!(false, "{:?}: {:?} vs {:?}", wire, cached, fresh),
                }
            }
        }
    }
}
