//! Turning one file representation into a response: method, preconditions, ranges.
//! Shared by static files and downloads.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

use super::conditional::{self, Precondition, Validators};
use crate::body::Body;
use crate::proto::range::{self, RangeDecision};

/// Identity of a file's contents as far as `stat` can tell: a change to any field means the
/// cached copy and validators are stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub dev: u64,
    pub ino: u64,
    pub mtime: SystemTime,
    pub len: u64,
}

impl Stamp {
    pub fn of(meta: &std::fs::Metadata) -> Stamp {
        let mtime = meta.modified().unwrap_or_else(|_| {
            let secs = u64::try_from(meta.mtime()).unwrap_or(0);
            UNIX_EPOCH + Duration::from_secs(secs)
        });
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            mtime,
            len: meta.len(),
        }
    }

    /// A strong entity-tag from the modification time and length (as nginx does), with a
    /// suffix per content coding so each representation has its own.
    pub fn etag(&self, suffix: &str) -> String {
        let nanos = self
            .mtime
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("\"{nanos:x}-{:x}{suffix}\"", self.len)
    }
}

/// Opens a file for reading without ever blocking on a FIFO or device that replaced it
/// between `stat` and `open`; the caller checks the opened file's metadata.
pub(crate) fn open_nonblocking(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
}

/// What a response about one representation needs to know, built once per file version.
#[derive(Debug, Clone)]
pub(crate) struct FileMeta {
    pub len: u64,
    pub etag: String,
    pub last_modified: SystemTime,
    pub content_type: HeaderValue,
    /// Headers of a 200: type, validators, `Accept-Ranges`, plus the caller's extras.
    pub headers: HeaderMap,
}

impl FileMeta {
    pub fn new(stamp: &Stamp, etag_suffix: &str, content_type: HeaderValue) -> FileMeta {
        let etag = stamp.etag(etag_suffix);
        let last_modified = conditional::truncate_to_seconds(stamp.mtime);
        let mut headers = HeaderMap::with_capacity(8);
        headers.insert(header::CONTENT_TYPE, content_type.clone());
        if let Ok(v) = HeaderValue::from_str(&etag) {
            headers.insert(header::ETAG, v);
        }
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(last_modified)) {
            headers.insert(header::LAST_MODIFIED, v);
        }
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        FileMeta {
            len: stamp.len,
            etag,
            last_modified,
            content_type,
            headers,
        }
    }

    fn validators(&self) -> Validators<'_> {
        Validators {
            etag: &self.etag,
            last_modified: Some(self.last_modified),
        }
    }
}

/// Where the bytes of a representation are.
pub(crate) enum Source {
    /// Cached in memory: responses share the buffer.
    Memory(Bytes),
    /// An open file: whole-file and single-range responses go out with `sendfile(2)`.
    File(File),
}

/// Limits on answering `Range` requests.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RangeLimits {
    /// Most ranges in one request; more get 416.
    pub max_ranges: usize,
    /// Largest total of several ranges to assemble in memory; above it the whole file is sent.
    pub max_multipart_bytes: u64,
}

/// Answers `method` with the representation `meta`, whose bytes are in `source`.
pub(crate) fn respond(
    method: &Method,
    req_headers: &HeaderMap,
    meta: &FileMeta,
    source: Source,
    limits: RangeLimits,
) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        let mut resp = status_response(StatusCode::METHOD_NOT_ALLOWED);
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let validators = meta.validators();
    match conditional::evaluate(method, req_headers, &validators) {
        Precondition::Proceed => {}
        Precondition::NotModified => return not_modified(meta),
        Precondition::Failed => return status_response(StatusCode::PRECONDITION_FAILED),
    }
    // Range handling is defined for GET only (RFC 9110 §14.2); HEAD gets the 200 head.
    let range_value = match req_headers.get(header::RANGE) {
        Some(v) if method == Method::GET => v.to_str().ok(),
        _ => None,
    };
    if let Some(value) = range_value {
        if conditional::if_range_allows(req_headers, &validators) {
            match range::evaluate(value, meta.len, limits.max_ranges) {
                RangeDecision::Full => {}
                RangeDecision::Unsatisfiable => return unsatisfiable(meta.len),
                RangeDecision::Ranges(ranges) if ranges.len() == 1 => {
                    return single_range(meta, source, &ranges[0]);
                }
                RangeDecision::Ranges(ranges) => {
                    let total: u64 = ranges.iter().map(range::range_len).sum();
                    if total <= limits.max_multipart_bytes {
                        match multi_range(meta, &source, &ranges) {
                            Ok(resp) => return resp,
                            Err(e) => {
                                tracing::warn!(error = %e, "reading byte ranges");
                                return status_response(StatusCode::INTERNAL_SERVER_ERROR);
                            }
                        }
                    }
                }
            }
        }
    }
    let mut resp = Response::new(whole(source, meta.len));
    *resp.headers_mut() = meta.headers.clone();
    resp
}

fn whole(source: Source, len: u64) -> Body {
    match source {
        Source::Memory(b) => Body::Bytes(b),
        Source::File(file) => Body::File {
            file,
            offset: 0,
            len,
        },
    }
}

fn single_range(
    meta: &FileMeta,
    source: Source,
    r: &std::ops::RangeInclusive<u64>,
) -> Response<Body> {
    let len = range::range_len(r);
    let body = match source {
        Source::Memory(b) => {
            // In range by construction: evaluate() clamps to the representation's length.
            let start = usize::try_from(*r.start()).unwrap_or(usize::MAX);
            let end = usize::try_from(*r.end()).unwrap_or(usize::MAX);
            if end >= b.len() {
                return status_response(StatusCode::INTERNAL_SERVER_ERROR);
            }
            Body::Bytes(b.slice(start..=end))
        }
        Source::File(file) => Body::File {
            file,
            offset: *r.start(),
            len,
        },
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    *resp.headers_mut() = meta.headers.clone();
    if let Ok(v) = HeaderValue::from_str(&range::content_range(r, meta.len)) {
        resp.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    resp
}

fn multi_range(
    meta: &FileMeta,
    source: &Source,
    ranges: &[std::ops::RangeInclusive<u64>],
) -> io::Result<Response<Body>> {
    let mut owned: Vec<Bytes> = Vec::with_capacity(ranges.len());
    for r in ranges {
        let len = usize::try_from(range::range_len(r))
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "range too long"))?;
        let chunk = match source {
            Source::Memory(b) => {
                let start = usize::try_from(*r.start()).unwrap_or(usize::MAX);
                let end = start.saturating_add(len);
                if end > b.len() {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short cache"));
                }
                b.slice(start..end)
            }
            Source::File(f) => {
                let mut buf = vec![0u8; len];
                f.read_exact_at(&mut buf, *r.start())?;
                Bytes::from(buf)
            }
        };
        owned.push(chunk);
    }
    let parts: Vec<_> = ranges
        .iter()
        .cloned()
        .zip(owned.iter().map(|b| &b[..]))
        .collect();
    let boundary = range::random_boundary();
    let content_type = meta
        .content_type
        .to_str()
        .unwrap_or("application/octet-stream");
    let body = range::encode_byteranges(&boundary, content_type, meta.len, &parts);
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    *resp.headers_mut() = meta.headers.clone();
    let ct = format!("multipart/byteranges; boundary={boundary}");
    if let Ok(v) = HeaderValue::from_str(&ct) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    Ok(resp)
}

/// 304 carries the headers a 200 would have that caches need (RFC 9110 §15.4.5).
fn not_modified(meta: &FileMeta) -> Response<Body> {
    let mut resp = Response::new(Body::Empty);
    *resp.status_mut() = StatusCode::NOT_MODIFIED;
    let h = resp.headers_mut();
    for name in [
        header::ETAG,
        header::LAST_MODIFIED,
        header::CACHE_CONTROL,
        header::VARY,
        header::EXPIRES,
        header::CONTENT_LOCATION,
    ] {
        if let Some(v) = meta.headers.get(&name) {
            h.insert(name, v.clone());
        }
    }
    resp
}

fn unsatisfiable(len: u64) -> Response<Body> {
    let mut resp = status_response(StatusCode::RANGE_NOT_SATISFIABLE);
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&range::unsatisfied_content_range(len)) {
        h.insert(header::CONTENT_RANGE, v);
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    resp
}

/// A short text response naming the status.
pub(crate) fn status_response(status: StatusCode) -> Response<Body> {
    let text = format!("{}\n", status.canonical_reason().unwrap_or("Error"));
    let mut resp = Response::new(Body::from(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
