//! Reading request data: query strings, cookies, urlencoded and JSON bodies, and
//! `multipart/form-data` uploads.
//!
//! Each helper works on what a [`Request`](crate::Request) already holds (the URI, the
//! headers, the [`RequestBody`]), so it can run in the loop or on another thread. Errors are a
//! [`FormError`], which knows its status code ([`FormError::status`]) and can answer for you
//! ([`FormError::to_response`]).
//!
//! # Uploads
//!
//! ```no_run
//! use tickhttp::form::{self, MultipartLimits};
//! # fn handle(server: &mut tickhttp::Server, req: tickhttp::Request) -> Result<(), tickhttp::Error> {
//! let limits = MultipartLimits::default().max_file_size(100 << 20).max_parts(10);
//! let resp = match form::Form::from_request(&req, &limits) {
//!     Ok(mut form) => {
//!         let title = form.field("title").unwrap_or("untitled").to_string();
//!         if let Some(upload) = form.take_file("document") {
//!             // Sanitized: a plain file name, never a path.
//!             let name = upload.filename().unwrap_or("upload.bin").to_string();
//!             upload.persist(std::path::Path::new("/srv/uploads").join(name)).ok();
//!         }
//!         // Files not taken and persisted are deleted when `form` is dropped.
//!         http::Response::new(format!("stored {title}\n").into())
//!     }
//!     // 413 with a message for a limit, 400 for a malformed body, 415 for another type.
//!     Err(e) => e.to_response(),
//! };
//! server.respond(req.id(), resp)
//! # }
//! ```
//!
//! The server has already spooled a large body to a temp file
//! ([`ServerConfig::body_spool_threshold`](crate::ServerConfig::body_spool_threshold)); the
//! parser streams it from there in 64 KiB reads and writes each file part to its own temp
//! file as the bytes come, so memory use does not grow with the upload. Fields are kept in
//! memory within [`MultipartLimits`].
//!
//! Temp files live in a directory private to the process, [`upload_dir`]
//! (`$TMPDIR/tickhttp-PID/`). Each is deleted when its [`UploadedFile`] is dropped unless
//! [`UploadedFile::persist`] moved it; directories left by processes that died are removed
//! the next time a process creates its own.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use serde::de::DeserializeOwned;

use crate::body::{Body, RequestBody};
use crate::proto::multipart::{self as mp, Event, MultipartParser, PartHead};
pub use crate::proto::multipart::{MultipartError, MultipartLimits};

/// Why request data could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormError {
    /// The body's `Content-Type` is not one this helper reads.
    #[error("unsupported content type {found:?}; expected {expected}")]
    UnsupportedMediaType {
        /// The request's content type (empty when absent).
        found: String,
        /// What was expected.
        expected: &'static str,
    },
    /// The body is larger than the helper's limit.
    #[error("request body of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The body length.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// A multipart body was malformed or broke a limit.
    #[error(transparent)]
    Multipart(#[from] MultipartError),
    /// The JSON body did not parse into the requested type.
    #[error("invalid JSON body: {0}")]
    Json(#[from] serde_json::Error),
    /// Reading the spooled body, or writing an upload, failed.
    #[error("I/O error while reading the request body: {0}")]
    Io(#[from] io::Error),
}

impl FormError {
    /// The status to answer with: 413 for limits, 415 for another content type, 400 for a
    /// malformed body, 500 for an I/O failure on our side.
    pub fn status(&self) -> StatusCode {
        match self {
            FormError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            FormError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            FormError::Multipart(e) => e.status(),
            FormError::Json(_) => StatusCode::BAD_REQUEST,
            FormError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A plain-text response with [`status`](FormError::status) and the error's message
    /// (server-side I/O details are not sent to the client).
    pub fn to_response(&self) -> Response<Body> {
        let status = self.status();
        let text = match self {
            FormError::Io(_) => "internal error while reading the request body\n".to_string(),
            FormError::Multipart(MultipartError::Io(_)) => {
                "internal error while storing the upload\n".to_string()
            }
            e => format!("{e}\n"),
        };
        let mut resp = Response::new(Body::from(text));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp
    }
}

// ----- query strings, urlencoded bodies, cookies ---------------------------------------------

/// Parses a query string or an `application/x-www-form-urlencoded` body into pairs.
///
/// Semantics (the WHATWG URL standard's urlencoded parser): pairs are separated by `&`; empty
/// pairs are skipped; a pair without `=` has an empty value; `+` is a space; `%XX` escapes are
/// decoded and malformed ones kept as they are; invalid UTF-8 becomes U+FFFD. Repeated names
/// are all kept, in order.
///
/// ```
/// use tickhttp::form::parse_urlencoded;
/// let pairs = parse_urlencoded(b"q=a+b%21&flag&&tag=1&tag=2&bad=%zz");
/// assert_eq!(pairs, [
///     ("q".into(), "a b!".into()),
///     ("flag".into(), "".into()),
///     ("tag".into(), "1".into()),
///     ("tag".into(), "2".into()),
///     ("bad".into(), "%zz".into()),
/// ]);
/// ```
pub fn parse_urlencoded(input: &[u8]) -> Vec<(String, String)> {
    input
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let eq = pair.iter().position(|&b| b == b'=');
            let (k, v) = match eq {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &pair[pair.len()..]),
            };
            (form_decode(k), form_decode(v))
        })
        .collect()
}

/// The pairs of a query string (see [`parse_urlencoded`] for the rules); empty for `None`.
///
/// ```
/// let uri: http::Uri = "/search?q=rust+http&page=2".parse().unwrap();
/// let pairs = tickhttp::form::query_pairs(uri.query());
/// assert_eq!(pairs[0], ("q".to_string(), "rust http".to_string()));
/// ```
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query.map_or_else(Vec::new, |q| parse_urlencoded(q.as_bytes()))
}

/// Decodes `%XX` escapes and `+` (as a space); invalid escapes are kept, invalid UTF-8 is
/// replaced.
pub(crate) fn form_decode(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |b: Option<&u8>| b.and_then(|&b| (b as char).to_digit(16));
                match (hex(s.get(i + 1)), hex(s.get(i + 2))) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// The cookies of a request, in the order sent, from every `Cookie` header line.
///
/// Semantics (RFC 6265 §5.4 as browsers send it): pairs are separated by `;`; whitespace
/// around names and values is trimmed; one pair of double quotes around a value is removed;
/// values are **not** percent-decoded (cookie values are opaque; decode them yourself if your
/// app encoded them); pairs without `=` or with an empty name are skipped; a `Cookie` line
/// that is not visible ASCII (RFC 6265 cookies are) is skipped whole. Duplicate names are all kept: browsers send the most specific path
/// first, so the first is usually the one meant ([`cookie`] returns it).
///
/// ```
/// let mut headers = http::HeaderMap::new();
/// headers.append("cookie", "sid=abc123; theme=\"dark\"".parse().unwrap());
/// headers.append("cookie", "lang=en; junk; =x".parse().unwrap());
/// let all = tickhttp::form::cookies(&headers);
/// assert_eq!(all, [("sid", "abc123"), ("theme", "dark"), ("lang", "en")]);
/// assert_eq!(tickhttp::form::cookie(&headers, "theme"), Some("dark"));
/// ```
pub fn cookies(headers: &HeaderMap) -> Vec<(&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            let name = name.trim();
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            (!name.is_empty()).then_some((name, value))
        })
        .collect()
}

/// The value of the first cookie named `name` (see [`cookies`]).
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    cookies(headers)
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// The essence (`type/subtype`, lowercase) of a request's `Content-Type`, if any.
fn essence(headers: &HeaderMap) -> Option<String> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

fn read_limited(body: &RequestBody, limit: u64) -> Result<Bytes, FormError> {
    if body.len() > limit {
        return Err(FormError::TooLarge {
            len: body.len(),
            limit,
        });
    }
    match body {
        RequestBody::Empty => Ok(Bytes::new()),
        RequestBody::Bytes(b) => Ok(b.clone()),
        RequestBody::File { .. } => Ok(Bytes::from(body.to_vec()?)),
    }
}

/// Parses an urlencoded body of at most `limit` bytes (see [`parse_urlencoded`]).
pub fn urlencoded(body: &RequestBody, limit: u64) -> Result<Vec<(String, String)>, FormError> {
    Ok(parse_urlencoded(&read_limited(body, limit)?))
}

/// Deserializes a JSON body of at most `limit` bytes into `T`.
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct Login { user: String, remember: bool }
/// let body = tickhttp::RequestBody::Bytes(r#"{"user":"ann","remember":true}"#.into());
/// let login: Login = tickhttp::form::json(&body, 1 << 20).unwrap();
/// assert_eq!(login.user, "ann");
/// assert!(login.remember);
/// ```
pub fn json<T: DeserializeOwned>(body: &RequestBody, limit: u64) -> Result<T, FormError> {
    match body {
        RequestBody::File { .. } => {
            if body.len() > limit {
                return Err(FormError::TooLarge {
                    len: body.len(),
                    limit,
                });
            }
            let reader = io::BufReader::with_capacity(READ_CHUNK, body.reader()?);
            Ok(serde_json::from_reader(reader)?)
        }
        _ => Ok(serde_json::from_slice(&read_limited(body, limit)?)?),
    }
}

/// Like [`json`], after checking that the request's `Content-Type` is `application/json` or
/// `application/*+json` (415 otherwise).
pub fn json_request<T: DeserializeOwned>(
    req: &http::Request<RequestBody>,
    limit: u64,
) -> Result<T, FormError> {
    let found = essence(req.headers()).unwrap_or_default();
    let is_json = found == "application/json"
        || (found.starts_with("application/") && found.ends_with("+json"));
    if !is_json {
        return Err(FormError::UnsupportedMediaType {
            found,
            expected: "application/json",
        });
    }
    json(req.body(), limit)
}

// ----- multipart -----------------------------------------------------------------------------

/// Bytes read from the body per parser step.
const READ_CHUNK: usize = 64 * 1024;

/// A form: its fields and files, in the order sent.
#[derive(Debug, Default)]
pub struct Form {
    fields: Vec<Field>,
    files: Vec<UploadedFile>,
}

/// A form field (a part without a file name), held in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    name: String,
    value: Vec<u8>,
    content_type: Option<String>,
}

impl Field {
    /// The field name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The value's bytes, exactly as sent.
    pub fn bytes(&self) -> &[u8] {
        &self.value
    }
    /// The value as text, if it is valid UTF-8 (what browsers send for text fields).
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.value).ok()
    }
    /// The part's `Content-Type`, if it had one.
    pub fn content_type(&self) -> Option<&str> {
        self.content_type.as_deref()
    }
}

/// An uploaded file, stored in a temp file that is deleted when this is dropped unless
/// [`persist`](UploadedFile::persist)ed.
#[derive(Debug)]
pub struct UploadedFile {
    name: String,
    filename: Option<String>,
    client_filename: String,
    content_type: String,
    len: u64,
    file: tempfile::NamedTempFile,
}

impl UploadedFile {
    /// The form field name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The client's file name, sanitized (see [`sanitize_filename`]); `None` when nothing
    /// usable is left.
    pub fn filename(&self) -> Option<&str> {
        self.filename.as_deref()
    }
    /// The file name exactly as the client sent it. Never use it as a path.
    pub fn client_filename(&self) -> &str {
        &self.client_filename
    }
    /// The part's `Content-Type`, `application/octet-stream` when it had none.
    pub fn content_type(&self) -> &str {
        &self.content_type
    }
    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }
    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Where the temp file is now.
    pub fn path(&self) -> &Path {
        self.file.path()
    }
    /// Opens the file for reading, from its start.
    pub fn reopen(&self) -> io::Result<File> {
        self.file.reopen()
    }
    /// Moves the file to `path` (copying when it is on another file system) and keeps it.
    pub fn persist(self, path: impl AsRef<Path>) -> io::Result<()> {
        let path = path.as_ref();
        match self.file.persist(path) {
            Ok(_) => Ok(()),
            Err(e) => {
                let mut src = e.file.reopen()?;
                let mut dst = File::create(path)?;
                io::copy(&mut src, &mut dst)?;
                dst.sync_all()
            }
        }
    }
    /// The temp file itself, for the caller to manage.
    pub fn into_temp_file(self) -> tempfile::NamedTempFile {
        self.file
    }
}

impl Form {
    /// Reads a `multipart/form-data` or `application/x-www-form-urlencoded` request.
    ///
    /// Other content types are [`FormError::UnsupportedMediaType`]. An urlencoded body is
    /// held to [`MultipartLimits::max_fields_size`].
    pub fn from_request(
        req: &http::Request<RequestBody>,
        limits: &MultipartLimits,
    ) -> Result<Form, FormError> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        match essence(req.headers()).as_deref() {
            Some("multipart/form-data") => multipart(req.body(), content_type, limits),
            Some("application/x-www-form-urlencoded") => {
                let pairs = urlencoded(req.body(), limits.max_fields_size)?;
                Ok(Form {
                    fields: pairs
                        .into_iter()
                        .map(|(name, value)| Field {
                            name,
                            value: value.into_bytes(),
                            content_type: None,
                        })
                        .collect(),
                    files: Vec::new(),
                })
            }
            _ => Err(FormError::UnsupportedMediaType {
                found: content_type.to_string(),
                expected: "multipart/form-data or application/x-www-form-urlencoded",
            }),
        }
    }

    /// The first field named `name`, as text (`None` if absent or not UTF-8).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|f| f.name == name)?.text()
    }
    /// Every field, in order (repeated names included).
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }
    /// The first file sent as `name`.
    pub fn file(&self, name: &str) -> Option<&UploadedFile> {
        self.files.iter().find(|f| f.name == name)
    }
    /// Removes and returns the first file sent as `name` (to persist it).
    pub fn take_file(&mut self, name: &str) -> Option<UploadedFile> {
        let i = self.files.iter().position(|f| f.name == name)?;
        Some(self.files.remove(i))
    }
    /// Every file, in order.
    pub fn files(&self) -> &[UploadedFile] {
        &self.files
    }
    /// Splits into fields and files (to persist files, which consumes them).
    pub fn into_parts(self) -> (Vec<Field>, Vec<UploadedFile>) {
        (self.fields, self.files)
    }
}

/// Reads a `multipart/form-data` body: fields into memory, files into temp files in
/// [`upload_dir`], all within `limits`. `content_type` is the request's `Content-Type` value,
/// which carries the boundary.
///
/// The body is read in 64 KiB chunks, from memory or from the server's spool file, and each
/// chunk goes through [`MultipartParser`].
pub fn multipart(
    body: &RequestBody,
    content_type: &str,
    limits: &MultipartLimits,
) -> Result<Form, FormError> {
    multipart_in(body, content_type, limits, &upload_dir()?)
}

/// [`multipart`] with file parts stored in `dir` instead of [`upload_dir`].
pub fn multipart_in(
    body: &RequestBody,
    content_type: &str,
    limits: &MultipartLimits,
    dir: &Path,
) -> Result<Form, FormError> {
    let boundary = mp::boundary_from_content_type(content_type)?;
    let mut parser = MultipartParser::new(&boundary, limits.clone())?;
    let mut collector = Collector {
        dir,
        form: Form::default(),
        current: None,
    };
    let mut feed = |chunk: &[u8], parser: &mut MultipartParser| {
        parser.feed(chunk, &mut |ev| collector.on_event(ev))
    };
    match body {
        RequestBody::Empty => {}
        RequestBody::Bytes(b) => {
            for chunk in b.chunks(READ_CHUNK) {
                feed(chunk, &mut parser)?;
                if parser.is_done() {
                    break;
                }
            }
        }
        RequestBody::File { .. } => {
            let mut reader = body.reader()?;
            let mut buf = vec![0u8; READ_CHUNK];
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e.into()),
                };
                feed(&buf[..n], &mut parser)?;
                if parser.is_done() {
                    break;
                }
            }
        }
    }
    parser.finish()?;
    Ok(collector.form)
}

struct Collector<'d> {
    dir: &'d Path,
    form: Form,
    current: Option<Current>,
}

enum Current {
    Field(Field),
    File {
        head: PartHead,
        file: io::BufWriter<tempfile::NamedTempFile>,
        len: u64,
    },
}

impl Collector<'_> {
    fn on_event(&mut self, ev: Event<'_>) -> io::Result<()> {
        match ev {
            Event::Part(head) => {
                self.current = Some(if head.is_file() {
                    let file = tempfile::Builder::new()
                        .prefix("upload-")
                        .tempfile_in(self.dir)?;
                    Current::File {
                        head,
                        file: io::BufWriter::with_capacity(READ_CHUNK, file),
                        len: 0,
                    }
                } else {
                    Current::Field(Field {
                        name: head.name,
                        value: Vec::new(),
                        content_type: head.content_type,
                    })
                });
            }
            Event::Data(bytes) => match &mut self.current {
                Some(Current::Field(f)) => f.value.extend_from_slice(bytes),
                Some(Current::File { file, len, .. }) => {
                    io::Write::write_all(file, bytes)?;
                    *len += bytes.len() as u64;
                }
                None => {}
            },
            Event::PartEnd => match self.current.take() {
                Some(Current::Field(f)) => self.form.fields.push(f),
                Some(Current::File { head, file, len }) => {
                    let file = file.into_inner().map_err(|e| e.into_error())?;
                    let client_filename = head.filename.unwrap_or_default();
                    self.form.files.push(UploadedFile {
                        filename: sanitize_filename(&client_filename),
                        client_filename,
                        content_type: head
                            .content_type
                            .unwrap_or_else(|| "application/octet-stream".to_string()),
                        name: head.name,
                        len,
                        file,
                    });
                }
                None => {}
            },
        }
        Ok(())
    }
}

/// Makes a client-supplied file name safe to use as one file name in a directory.
///
/// Keeps the part after the last `/` or `\` (browsers on Windows once sent full paths);
/// drops control characters; replaces characters Windows forbids (`<>:"|?*`) with `_`; trims
/// spaces and dots at both ends (no hidden files, no `..`); cuts to 255 bytes at a character
/// boundary. Returns `None` when nothing is left.
///
/// ```
/// use tickhttp::form::sanitize_filename;
/// assert_eq!(sanitize_filename("../../etc/passwd").as_deref(), Some("passwd"));
/// assert_eq!(sanitize_filename("C:\\Users\\ann\\cv.pdf").as_deref(), Some("cv.pdf"));
/// assert_eq!(sanitize_filename(".htaccess").as_deref(), Some("htaccess"));
/// assert_eq!(sanitize_filename("a\0b<c>.txt").as_deref(), Some("ab_c_.txt"));
/// assert_eq!(sanitize_filename(".."), None);
/// ```
pub fn sanitize_filename(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| if "<>:\"|?*".contains(c) { '_' } else { c })
        .collect();
    let trimmed = cleaned.trim_matches(|c: char| c == '.' || c.is_whitespace());
    let mut end = trimmed.len().min(255);
    while !trimmed.is_char_boundary(end) {
        end -= 1;
    }
    let out = &trimmed[..end];
    (!out.is_empty()).then(|| out.to_string())
}

// ----- the per-process upload directory ------------------------------------------------------

static UPLOAD_DIR: Mutex<Option<(u32, PathBuf)>> = Mutex::new(None);

const DIR_PREFIX: &str = "tickhttp-";

/// This process's upload directory, `$TMPDIR/tickhttp-PID/` (mode 0700), created on first use.
///
/// Creating it first removes the `tickhttp-PID` directories of processes that no longer exist
/// (crashed, killed) and that belong to this user. Each forked worker gets its own directory,
/// since the PID is checked on every call. Call it at startup to sweep early; call
/// [`remove_upload_dir`] at a clean exit.
pub fn upload_dir() -> io::Result<PathBuf> {
    let pid = std::process::id();
    let mut guard = UPLOAD_DIR.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((owner, dir)) = guard.as_ref() {
        if *owner == pid && dir.is_dir() {
            return Ok(dir.clone());
        }
    }
    let base = std::env::temp_dir();
    let dir = base.join(format!("{DIR_PREFIX}{pid}"));
    create_private_dir(&dir)?;
    sweep_dead(&base, pid, &dir);
    *guard = Some((pid, dir.clone()));
    Ok(dir)
}

/// Removes this process's upload directory and whatever is still in it.
pub fn remove_upload_dir() -> io::Result<()> {
    let pid = std::process::id();
    let mut guard = UPLOAD_DIR.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((owner, dir)) = guard.take() {
        if owner == pid {
            return std::fs::remove_dir_all(dir);
        }
    }
    Ok(())
}

/// Creates `dir` with mode 0700, or accepts an existing one only if it is a real directory
/// of ours that nobody else can enter (in a shared `/tmp`, someone could have planted it).
fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    // A directory we can create files in is ours if its owner matches a file we create.
    let probe = tempfile::tempfile_in(std::env::temp_dir())?;
    let uid = probe.metadata()?.uid();
    if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "refusing to use {} for uploads: not a private directory of this user",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// Removes `tickhttp-PID` directories of this user whose process is gone.
fn sweep_dead(base: &Path, own_pid: u32, own_dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(own_uid) = std::fs::metadata(own_dir).map(|m| m.uid()) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid <= 0 || pid as u32 == own_pid || process_alive(pid) {
            continue;
        }
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        if meta.is_dir() && meta.uid() == own_uid {
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::debug!(dir = %entry.path().display(), error = %e, "stale upload dir");
            }
        }
    }
}

/// Whether a process exists (`kill(pid, 0)`; EPERM means it exists but is not ours).
fn process_alive(pid: i32) -> bool {
    use nix::errno::Errno;
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(Errno::ESRCH)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn multipart_body(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, filename, data) in parts {
            out.extend_from_slice(b"--BOUNDARY\r\n");
            match filename {
                Some(f) => out.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\r\n"
                    )
                    .as_bytes(),
                ),
                None => out.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                ),
            }
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--BOUNDARY--\r\n");
        out
    }

    const CT: &str = "multipart/form-data; boundary=BOUNDARY";

    #[test]
    fn fields_and_files_from_memory_and_from_a_spool_file() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let raw = multipart_body(&[
            ("title", None, b"hello world"),
            ("doc", Some("../../x/report.bin"), &data),
            ("title", None, b"second"),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let in_memory = RequestBody::Bytes(Bytes::from(raw.clone()));
        let mut spool = tempfile::NamedTempFile::new().unwrap();
        io::Write::write_all(&mut spool, &raw).unwrap();
        let spooled = RequestBody::File {
            file: spool,
            len: raw.len() as u64,
        };
        for body in [in_memory, spooled] {
            let form = multipart_in(&body, CT, &MultipartLimits::default(), dir.path()).unwrap();
            assert_eq!(form.field("title"), Some("hello world"));
            assert_eq!(form.fields().len(), 2);
            let f = form.file("doc").unwrap();
            assert_eq!(f.len(), data.len() as u64);
            assert_eq!(f.filename(), Some("report.bin"));
            assert_eq!(f.client_filename(), "../../x/report.bin");
            assert_eq!(f.content_type(), "application/octet-stream");
            assert_eq!(std::fs::read(f.path()).unwrap(), data);
            assert!(f.path().starts_with(dir.path()));
            let path = f.path().to_path_buf();
            drop(form);
            assert!(!path.exists(), "temp file removed on drop");
        }
    }

    #[test]
    fn persisted_files_stay() {
        let raw = multipart_body(&[("f", Some("a.txt"), b"keep me \n\0")]);
        let dir = tempfile::tempdir().unwrap();
        let body = RequestBody::Bytes(Bytes::from(raw));
        let form = multipart_in(&body, CT, &MultipartLimits::default(), dir.path()).unwrap();
        let (_, files) = form.into_parts();
        let target = dir.path().join("kept.txt");
        files.into_iter().next().unwrap().persist(&target).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me \n\0");
    }

    #[test]
    fn errors_map_to_statuses() {
        let raw = multipart_body(&[("f", None, &[b'x'; 100])]);
        let body = RequestBody::Bytes(Bytes::from(raw));
        let dir = tempfile::tempdir().unwrap();
        let limits = MultipartLimits::default().max_field_size(10);
        let err = multipart_in(&body, CT, &limits, dir.path()).unwrap_err();
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(err.to_string().contains("\"f\""), "{err}");
        let err = multipart_in(
            &body,
            "multipart/form-data; boundary=\"\"",
            &limits,
            dir.path(),
        )
        .unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        let truncated = RequestBody::Bytes(Bytes::from_static(b"--BOUNDARY\r\nContent-Dispo"));
        let err = multipart_in(&truncated, CT, &limits, dir.path()).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert_eq!(err.to_response().status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn urlencoded_and_json_limits() {
        let body = RequestBody::Bytes(Bytes::from_static(b"a=1&b=%C3%A9"));
        assert_eq!(
            urlencoded(&body, 100).unwrap(),
            [
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "é".to_string())
            ]
        );
        let err = urlencoded(&body, 5).unwrap_err();
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let err = json::<serde_json::Value>(&body, 100).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        let v: serde_json::Value =
            json(&RequestBody::Bytes(Bytes::from_static(b"[1,2]")), 10).unwrap();
        assert_eq!(v, serde_json::json!([1, 2]));
    }

    #[test]
    fn upload_dir_is_private_and_stale_dirs_are_swept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = upload_dir().unwrap();
        assert!(dir.ends_with(format!("tickhttp-{}", std::process::id())));
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // A directory of a process that cannot exist (above pid_max) is removed by a sweep.
        let stale = std::env::temp_dir().join("tickhttp-2147483646");
        std::fs::create_dir_all(stale.join("sub")).unwrap();
        sweep_dead(&std::env::temp_dir(), std::process::id(), &dir);
        assert!(!stale.exists());
        assert!(dir.exists());
    }
}
