//! One file as an attachment: [`download`].

use std::io;
use std::path::Path;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::defaults;
use super::respond::{self, open_nonblocking, FileMeta, RangeLimits, Source, Stamp};
use super::static_files::content_type_for;
use crate::body::Body;

/// Answers `req` with the file at `path` as a download named `filename`.
///
/// - `Content-Disposition: attachment` with `filename` (see [`content_disposition`]).
/// - `Content-Type` is `mime` when given and valid, else guessed from `filename`.
/// - `ETag`, `Last-Modified`, conditional requests, `Range` (single and multiple) and
///   `If-Range`, exactly as for [`StaticFiles`](super::StaticFiles), so interrupted downloads
///   resume; the body is sent with `sendfile(2)`.
/// - A missing path (or one that is not a regular file) is 404, an unreadable one 403, other
///   errors 500. The path is the application's: it is not confined to any root.
///
/// ```no_run
/// # fn handle(server: &mut tickhttp::Server, req: tickhttp::Request) -> Result<(), tickhttp::Error> {
/// let resp = tickhttp::fs::download(&req, "/srv/reports/2026-q1.pdf", "Q1 report.pdf", None);
/// server.respond(req.id(), resp)
/// # }
/// ```
pub fn download<B>(
    req: &http::Request<B>,
    path: impl AsRef<Path>,
    filename: &str,
    mime: Option<&str>,
) -> Response<Body> {
    let path = path.as_ref();
    let opened = open_nonblocking(path).and_then(|f| {
        let meta = f.metadata()?;
        if meta.is_file() {
            Ok((f, meta))
        } else {
            Err(io::ErrorKind::NotFound.into())
        }
    });
    let (file, meta) = match opened {
        Ok(x) => x,
        Err(e) => {
            let status = match e.kind() {
                io::ErrorKind::NotFound => StatusCode::NOT_FOUND,
                io::ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
                _ => {
                    tracing::warn!(path = %path.display(), error = %e, "download");
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            };
            return respond::status_response(status);
        }
    };
    let content_type = mime
        .and_then(|m| m.parse::<mime_guess::Mime>().ok())
        .and_then(|m| HeaderValue::from_str(m.as_ref()).ok())
        .unwrap_or_else(|| content_type_for(Path::new(filename)));
    let mut file_meta = FileMeta::new(&Stamp::of(&meta), "", content_type);
    file_meta
        .headers
        .insert(header::CONTENT_DISPOSITION, content_disposition(filename));
    let limits = RangeLimits {
        max_ranges: defaults::MAX_RANGES,
        max_multipart_bytes: defaults::MAX_MULTIPART_RANGE_BYTES,
    };
    respond::respond(
        req.method(),
        req.headers(),
        &file_meta,
        Source::File(file),
        limits,
    )
}

/// `Content-Disposition: attachment` for a file name (RFC 6266).
///
/// The quoted `filename` holds an ASCII fallback in which quotes, backslashes, `%`, control
/// and non-ASCII characters become `_`. When that changed anything, `filename*` carries the
/// exact name in UTF-8, percent-encoded (RFC 8187); clients that know it prefer it. Path
/// separators are replaced too: a download name is never a path.
///
/// ```
/// use tickhttp::fs::content_disposition;
/// assert_eq!(content_disposition("report.pdf"), "attachment; filename=\"report.pdf\"");
/// assert_eq!(
///     content_disposition("résumé \"v2\".pdf"),
///     "attachment; filename=\"r_sum_ _v2_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22v2%22.pdf"
/// );
/// ```
pub fn content_disposition(filename: &str) -> HeaderValue {
    let name: String = filename
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '%') || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut value = format!("attachment; filename=\"{fallback}\"");
    if fallback != name {
        value.push_str("; filename*=UTF-8''");
        for b in name.bytes() {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                value.push(b as char);
            } else {
                value.push_str(&format!("%{b:02X}"));
            }
        }
    }
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disposition_escapes_and_encodes() {
        assert_eq!(
            content_disposition("a b.txt"),
            "attachment; filename=\"a b.txt\""
        );
        assert_eq!(
            content_disposition("../etc/passwd"),
            "attachment; filename=\".._etc_passwd\""
        );
        assert_eq!(
            content_disposition("日本.txt"),
            "attachment; filename=\"__.txt\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.txt"
        );
        assert_eq!(
            content_disposition("100%.txt"),
            "attachment; filename=\"100_.txt\"; filename*=UTF-8''100%25.txt"
        );
        assert_eq!(
            content_disposition("a\r\nSet-Cookie: x"),
            "attachment; filename=\"a__Set-Cookie: x\""
        );
    }
}
