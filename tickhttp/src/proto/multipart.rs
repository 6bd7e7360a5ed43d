//! A streaming `multipart/form-data` parser (RFC 7578 over RFC 2046), sans-IO.
//!
//! [`MultipartParser`] is fed the body in chunks of any size and calls a sink with
//! [`Event`]s: a part's headers, its bytes as they arrive, its end. It keeps only what it cannot
//! decide yet (a possible boundary split across chunks, an incomplete part head), so memory
//! stays bounded whatever the body size, and the bytes it passes on are exactly the part's
//! content: nothing is trimmed, so trailing whitespace, CR, LF and NUL bytes survive.
//!
//! Delimiters are recognised only where RFC 2046 puts them: `CRLF--boundary` (or `--boundary`
//! at the very start), followed by optional spaces and CRLF, or by `--` for the last one.
//! Limits on parts, part head size, field size, file size and the body are enforced as the
//! bytes arrive.
//!
//! [`tickhttp::form::multipart`](crate::form::multipart) drives this parser over a request body
//! and stores file parts in temp files.
//!
//! ```
//! use tickhttp::proto::multipart::{Event, MultipartLimits, MultipartParser};
//!
//! let body = b"--XyZ\r\n\
//!     Content-Disposition: form-data; name=\"title\"\r\n\r\n\
//!     Hello\r\n\
//!     --XyZ\r\n\
//!     Content-Disposition: form-data; name=\"doc\"; filename=\"a.txt\"\r\n\
//!     Content-Type: text/plain\r\n\r\n\
//!     line 1\r\n\0\r\n\
//!     --XyZ--\r\n";
//! let mut parser = MultipartParser::new("XyZ", MultipartLimits::default()).unwrap();
//! let mut seen = Vec::new();
//! for chunk in body.chunks(7) {
//!     parser
//!         .feed(chunk, &mut |event| {
//!             match event {
//!                 Event::Part(head) => seen.push((head.name, Vec::new())),
//!                 Event::Data(bytes) => seen.last_mut().unwrap().1.extend_from_slice(bytes),
//!                 Event::PartEnd => {}
//!             }
//!             Ok(())
//!         })
//!         .unwrap();
//! }
//! parser.finish().unwrap();
//! assert_eq!(seen[0], ("title".to_string(), b"Hello".to_vec()));
//! assert_eq!(seen[1], ("doc".to_string(), b"line 1\r\n\0".to_vec()));
//! ```

use std::io;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use memchr::memmem;

/// Limits on a multipart body. Defaults are in [`defaults`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MultipartLimits {
    /// Most parts (fields and files together).
    pub max_parts: usize,
    /// Largest head (header block) of one part, in bytes.
    pub max_part_head_size: usize,
    /// Largest value of one field (a part without a file name), in bytes.
    pub max_field_size: u64,
    /// Largest total of all field values, in bytes: what is held in memory.
    pub max_fields_size: u64,
    /// Largest file part, in bytes.
    pub max_file_size: u64,
    /// Largest body, in bytes, preamble and epilogue included.
    pub max_total_size: u64,
}

/// Defaults of [`MultipartLimits`], one place, one reason each.
pub mod defaults {
    /// Generous for real forms; bounds per-part bookkeeping.
    pub const MAX_PARTS: usize = 128;
    /// Browsers send two or three short lines; a long file name still fits.
    pub const MAX_PART_HEAD_SIZE: usize = 8 * 1024;
    /// Fields are held in memory: a large text area fits, a misplaced file does not.
    pub const MAX_FIELD_SIZE: u64 = 1024 * 1024;
    /// All fields together, in memory.
    pub const MAX_FIELDS_SIZE: u64 = 4 * 1024 * 1024;
    /// Files go to disk; the server's `max_body_size` is the real bound.
    pub const MAX_FILE_SIZE: u64 = u64::MAX;
    /// The server's `max_body_size` already bounds the body.
    pub const MAX_TOTAL_SIZE: u64 = u64::MAX;
}

impl Default for MultipartLimits {
    fn default() -> Self {
        use defaults::*;
        MultipartLimits {
            max_parts: MAX_PARTS,
            max_part_head_size: MAX_PART_HEAD_SIZE,
            max_field_size: MAX_FIELD_SIZE,
            max_fields_size: MAX_FIELDS_SIZE,
            max_file_size: MAX_FILE_SIZE,
            max_total_size: MAX_TOTAL_SIZE,
        }
    }
}

macro_rules! setters {
    ($($(#[$m:meta])* $name:ident: $ty:ty),* $(,)?) => {
        $( $(#[$m])* #[must_use] pub fn $name(mut self, value: $ty) -> Self { self.$name = value; self } )*
    };
}

impl MultipartLimits {
    setters! {
        /// Sets [`MultipartLimits::max_parts`].
        max_parts: usize,
        /// Sets [`MultipartLimits::max_part_head_size`].
        max_part_head_size: usize,
        /// Sets [`MultipartLimits::max_field_size`].
        max_field_size: u64,
        /// Sets [`MultipartLimits::max_fields_size`].
        max_fields_size: u64,
        /// Sets [`MultipartLimits::max_file_size`].
        max_file_size: u64,
        /// Sets [`MultipartLimits::max_total_size`].
        max_total_size: u64,
    }
}

/// Why a multipart body was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MultipartError {
    /// The boundary parameter is missing or breaks RFC 2046 (1 to 70 characters from a small
    /// set, not ending in a space).
    #[error("invalid multipart boundary: {0}")]
    InvalidBoundary(&'static str),
    /// The body does not follow the multipart syntax.
    #[error("malformed multipart body: {0}")]
    Malformed(String),
    /// More parts than [`MultipartLimits::max_parts`].
    #[error("more than {limit} parts in the form")]
    TooManyParts {
        /// The limit.
        limit: usize,
    },
    /// A part head larger than [`MultipartLimits::max_part_head_size`].
    #[error("a part's headers exceed {limit} bytes")]
    PartHeadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// A field larger than [`MultipartLimits::max_field_size`].
    #[error("field {name:?} exceeds {limit} bytes")]
    FieldTooLarge {
        /// The field name.
        name: String,
        /// The limit.
        limit: u64,
    },
    /// Fields larger in total than [`MultipartLimits::max_fields_size`].
    #[error("form fields exceed {limit} bytes in total")]
    FieldsTooLarge {
        /// The limit.
        limit: u64,
    },
    /// A file larger than [`MultipartLimits::max_file_size`].
    #[error("file {name:?} exceeds {limit} bytes")]
    FileTooLarge {
        /// The field name of the file.
        name: String,
        /// The limit.
        limit: u64,
    },
    /// A body larger than [`MultipartLimits::max_total_size`].
    #[error("multipart body exceeds {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: u64,
    },
    /// The sink failed (writing a file part, for instance).
    #[error("storing a part failed: {0}")]
    Io(#[from] io::Error),
}

impl MultipartError {
    /// The status to answer with: 413 for a limit, 400 for bad syntax, 500 for a failed sink.
    pub fn status(&self) -> StatusCode {
        match self {
            MultipartError::InvalidBoundary(_) | MultipartError::Malformed(_) => {
                StatusCode::BAD_REQUEST
            }
            MultipartError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    fn malformed(what: impl Into<String>) -> MultipartError {
        MultipartError::Malformed(what.into())
    }
}

/// The head of one part.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartHead {
    /// The `name` parameter of `Content-Disposition: form-data`.
    pub name: String,
    /// The file name the client sent (`filename*` preferred over `filename`), as is: it may
    /// hold path separators or anything else, so never use it as a path unsanitized.
    pub filename: Option<String>,
    /// The part's `Content-Type`, if any.
    pub content_type: Option<String>,
    /// All the part's headers.
    pub headers: HeaderMap,
}

impl PartHead {
    /// Whether this part is a file (it has a file name).
    pub fn is_file(&self) -> bool {
        self.filename.is_some()
    }
}

/// What the parser found, in body order: `Part`, any number of `Data`, `PartEnd`, repeated.
#[derive(Debug)]
pub enum Event<'a> {
    /// A part begins.
    Part(PartHead),
    /// The next bytes of the current part's content (never empty).
    Data(&'a [u8]),
    /// The current part is complete.
    PartEnd,
}

/// Checks a boundary against RFC 2046 §5.1.1: 1 to 70 characters of
/// `A-Z a-z 0-9 ' ( ) + _ , - . / : = ?` and space, not ending in a space.
pub fn validate_boundary(boundary: &str) -> Result<(), MultipartError> {
    let b = boundary.as_bytes();
    if b.is_empty() || b.len() > 70 {
        return Err(MultipartError::InvalidBoundary("length must be 1 to 70"));
    }
    let ok = |c: u8| c.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&c);
    if !b.iter().all(|&c| ok(c)) {
        return Err(MultipartError::InvalidBoundary(
            "character outside RFC 2046's set",
        ));
    }
    if b.ends_with(b" ") {
        return Err(MultipartError::InvalidBoundary("ends with a space"));
    }
    Ok(())
}

/// The boundary of a `multipart/form-data` `Content-Type` value (token or quoted string),
/// validated.
///
/// ```
/// use tickhttp::proto::multipart::boundary_from_content_type;
/// let b = boundary_from_content_type("multipart/form-data; boundary=\"a b\"").unwrap();
/// assert_eq!(b, "a b");
/// assert!(boundary_from_content_type("multipart/form-data").is_err());
/// assert!(boundary_from_content_type("text/plain; boundary=x").is_err());
/// ```
pub fn boundary_from_content_type(content_type: &str) -> Result<String, MultipartError> {
    let split = content_type.find(';').unwrap_or(content_type.len());
    let (essence, params) = content_type.split_at(split);
    if !essence.trim().eq_ignore_ascii_case("multipart/form-data") {
        return Err(MultipartError::malformed(
            "content type is not multipart/form-data",
        ));
    }
    let mut boundary = None;
    for (name, value) in parse_params(params.as_bytes())? {
        if name.eq_ignore_ascii_case("boundary") {
            if boundary.is_some() {
                return Err(MultipartError::InvalidBoundary("given twice"));
            }
            boundary = Some(String::from_utf8(value).map_err(|_| {
                MultipartError::InvalidBoundary("character outside RFC 2046's set")
            })?);
        }
    }
    let boundary = boundary.ok_or(MultipartError::InvalidBoundary("missing"))?;
    validate_boundary(&boundary)?;
    Ok(boundary)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing read: the body may open with `--boundary` directly.
    Start,
    /// Skipping the preamble up to the first delimiter.
    Preamble,
    /// Just after a delimiter: `--` closes, anything else starts a part.
    AfterDelimiter,
    /// Transport padding (spaces, tabs) and the CRLF after a delimiter.
    Padding,
    /// A part's header block, up to the empty line.
    Head,
    /// A part's content, up to the next delimiter.
    Content,
    /// After the close delimiter: ignored.
    Epilogue,
}

/// Bytes moved from a new chunk into the carry-over buffer per step: enough to settle a
/// boundary split across chunks, small enough that the copying stays negligible.
const CARRY_STEP: usize = 1024;

/// Spaces or tabs allowed between a delimiter and its CRLF.
const MAX_PADDING: usize = 256;

/// Most headers in one part head.
const MAX_PART_HEADERS: usize = 16;

/// The sink that receives parser events; an error stops parsing.
pub type Sink<'s> = dyn FnMut(Event<'_>) -> io::Result<()> + 's;

/// The streaming parser. See the [module documentation](self).
pub struct MultipartParser {
    /// `CRLF--boundary`.
    delimiter: Box<[u8]>,
    finder: memmem::Finder<'static>,
    limits: MultipartLimits,
    state: State,
    /// Input seen but not yet decided, carried to the next `feed`.
    carry: Vec<u8>,
    /// How far the current part head has been searched for its end.
    head_scanned: usize,
    padding: usize,
    total: u64,
    parts: usize,
    part_name: String,
    part_is_file: bool,
    part_len: u64,
    fields_len: u64,
    failed: bool,
}

impl std::fmt::Debug for MultipartParser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultipartParser")
            .field("state", &self.state)
            .field("total", &self.total)
            .field("parts", &self.parts)
            .finish()
    }
}

impl MultipartParser {
    /// A parser for parts separated by `boundary` (the `Content-Type` parameter; see
    /// [`boundary_from_content_type`]), which is validated.
    pub fn new(boundary: &str, limits: MultipartLimits) -> Result<Self, MultipartError> {
        validate_boundary(boundary)?;
        let mut delimiter = Vec::with_capacity(boundary.len() + 4);
        delimiter.extend_from_slice(b"\r\n--");
        delimiter.extend_from_slice(boundary.as_bytes());
        let finder = memmem::Finder::new(&delimiter).into_owned();
        Ok(MultipartParser {
            delimiter: delimiter.into_boxed_slice(),
            finder,
            limits,
            state: State::Start,
            carry: Vec::new(),
            head_scanned: 0,
            padding: 0,
            total: 0,
            parts: 0,
            part_name: String::new(),
            part_is_file: false,
            part_len: 0,
            fields_len: 0,
            failed: false,
        })
    }

    /// Parses the next chunk of the body, calling `sink` for what it completes. After an error
    /// the parser refuses further input.
    pub fn feed(&mut self, chunk: &[u8], sink: &mut Sink<'_>) -> Result<(), MultipartError> {
        if self.failed {
            return Err(MultipartError::malformed("parsing already failed"));
        }
        let result = self.feed_inner(chunk, sink);
        self.failed = result.is_err();
        result
    }

    /// Declares the end of the body: fails unless the close delimiter was seen.
    pub fn finish(&mut self) -> Result<(), MultipartError> {
        if self.failed {
            return Err(MultipartError::malformed("parsing already failed"));
        }
        if self.state == State::Epilogue {
            Ok(())
        } else {
            self.failed = true;
            Err(MultipartError::malformed(
                "the body ended before the closing boundary",
            ))
        }
    }

    /// Whether the close delimiter has been seen (the rest of the body is ignored).
    pub fn is_done(&self) -> bool {
        self.state == State::Epilogue
    }

    fn feed_inner(&mut self, mut chunk: &[u8], sink: &mut Sink<'_>) -> Result<(), MultipartError> {
        self.total += chunk.len() as u64;
        if self.total > self.limits.max_total_size {
            return Err(MultipartError::BodyTooLarge {
                limit: self.limits.max_total_size,
            });
        }
        // Settle what was carried over by moving in new bytes a little at a time; once the
        // carry is empty, the rest of the chunk is parsed in place, without copying.
        while !self.carry.is_empty() && !chunk.is_empty() {
            let take = chunk.len().min(CARRY_STEP);
            self.carry.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            let carry = std::mem::take(&mut self.carry);
            let used = self.step(&carry, sink);
            self.carry = carry;
            self.carry.drain(..used?);
        }
        if self.carry.is_empty() && !chunk.is_empty() {
            let used = self.step(chunk, sink)?;
            self.carry.extend_from_slice(&chunk[used..]);
        }
        Ok(())
    }

    /// Parses as much of `input` as can be decided; returns how many bytes were used. What
    /// is left is bounded: part of a delimiter, or an incomplete part head.
    fn step(&mut self, input: &[u8], sink: &mut Sink<'_>) -> Result<usize, MultipartError> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match self.state {
                State::Start => {
                    let dash_boundary = &self.delimiter[2..];
                    let n = rest.len().min(dash_boundary.len());
                    if rest[..n] != dash_boundary[..n] {
                        self.state = State::Preamble;
                    } else if n < dash_boundary.len() {
                        return Ok(pos);
                    } else {
                        pos += n;
                        self.state = State::AfterDelimiter;
                    }
                }
                State::Preamble => match self.finder.find(rest) {
                    Some(i) => {
                        pos += i + self.delimiter.len();
                        self.state = State::AfterDelimiter;
                    }
                    None => return Ok(input.len() - self.partial_delimiter(rest)),
                },
                State::AfterDelimiter => {
                    if rest.len() < 2 {
                        return Ok(pos);
                    }
                    if &rest[..2] == b"--" {
                        pos += 2;
                        self.state = State::Epilogue;
                    } else {
                        self.padding = 0;
                        self.state = State::Padding;
                    }
                }
                State::Padding => {
                    let spaces = rest
                        .iter()
                        .take_while(|&&b| b == b' ' || b == b'\t')
                        .count();
                    self.padding += spaces;
                    if self.padding > MAX_PADDING {
                        return Err(MultipartError::malformed(
                            "too much padding after a boundary",
                        ));
                    }
                    pos += spaces;
                    let rest = &input[pos..];
                    if rest.is_empty() || rest == b"\r" {
                        return Ok(pos);
                    }
                    if !rest.starts_with(b"\r\n") {
                        return Err(MultipartError::malformed(
                            "a boundary is not followed by CRLF (or the boundary occurs in the content)",
                        ));
                    }
                    pos += 2;
                    self.parts += 1;
                    if self.parts > self.limits.max_parts {
                        return Err(MultipartError::TooManyParts {
                            limit: self.limits.max_parts,
                        });
                    }
                    self.head_scanned = 0;
                    self.state = State::Head;
                }
                State::Head => {
                    let max = self.limits.max_part_head_size;
                    if rest.starts_with(b"\r\n") {
                        return Err(MultipartError::malformed("a part has no headers"));
                    }
                    let from = self.head_scanned.saturating_sub(3);
                    let Some(i) = memmem::find(&rest[from..], b"\r\n\r\n").map(|i| i + from) else {
                        if rest.len() > max {
                            return Err(MultipartError::PartHeadTooLarge { limit: max });
                        }
                        self.head_scanned = rest.len();
                        return Ok(pos);
                    };
                    let head_len = i + 4;
                    if head_len > max {
                        return Err(MultipartError::PartHeadTooLarge { limit: max });
                    }
                    let head = parse_part_head(&rest[..head_len])?;
                    pos += head_len;
                    self.part_name.clone_from(&head.name);
                    self.part_is_file = head.is_file();
                    self.part_len = 0;
                    self.state = State::Content;
                    sink(Event::Part(head))?;
                }
                State::Content => match self.finder.find(rest) {
                    Some(i) => {
                        self.data(&rest[..i], sink)?;
                        sink(Event::PartEnd)?;
                        pos += i + self.delimiter.len();
                        self.state = State::AfterDelimiter;
                    }
                    None => {
                        let keep = self.partial_delimiter(rest);
                        self.data(&rest[..rest.len() - keep], sink)?;
                        return Ok(input.len() - keep);
                    }
                },
                State::Epilogue => return Ok(input.len()),
            }
        }
    }

    /// Passes content on, enforcing the size limits.
    fn data(&mut self, bytes: &[u8], sink: &mut Sink<'_>) -> Result<(), MultipartError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let n = bytes.len() as u64;
        self.part_len += n;
        if self.part_is_file {
            if self.part_len > self.limits.max_file_size {
                return Err(MultipartError::FileTooLarge {
                    name: self.part_name.clone(),
                    limit: self.limits.max_file_size,
                });
            }
        } else {
            self.fields_len += n;
            if self.part_len > self.limits.max_field_size {
                return Err(MultipartError::FieldTooLarge {
                    name: self.part_name.clone(),
                    limit: self.limits.max_field_size,
                });
            }
            if self.fields_len > self.limits.max_fields_size {
                return Err(MultipartError::FieldsTooLarge {
                    limit: self.limits.max_fields_size,
                });
            }
        }
        sink(Event::Data(bytes))?;
        Ok(())
    }

    /// The length of the longest end of `data` that could begin a delimiter.
    fn partial_delimiter(&self, data: &[u8]) -> usize {
        let max = (self.delimiter.len() - 1).min(data.len());
        (1..=max)
            .rev()
            .find(|&k| data[data.len() - k..] == self.delimiter[..k])
            .unwrap_or(0)
    }
}

/// Parses a part's header block (ending with the empty line).
fn parse_part_head(block: &[u8]) -> Result<PartHead, MultipartError> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_PART_HEADERS];
    let parsed = match httparse::parse_headers(block, &mut raw) {
        Ok(httparse::Status::Complete((_, parsed))) => parsed,
        Ok(httparse::Status::Partial) => {
            return Err(MultipartError::malformed("incomplete part headers"))
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(MultipartError::malformed(format!(
                "more than {MAX_PART_HEADERS} headers in a part"
            )))
        }
        Err(e) => return Err(MultipartError::malformed(format!("bad part header: {e}"))),
    };
    let mut headers = HeaderMap::with_capacity(parsed.len());
    for h in parsed.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| MultipartError::malformed("bad part header name"))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| MultipartError::malformed("bad part header value"))?;
        headers.append(name, value);
    }
    let disposition = single(&headers, http::header::CONTENT_DISPOSITION)?
        .ok_or_else(|| MultipartError::malformed("a part has no Content-Disposition"))?;
    let content_type = single(&headers, http::header::CONTENT_TYPE)?
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string());
    let (name, filename) = parse_disposition(disposition.as_bytes())?;
    Ok(PartHead {
        name,
        filename,
        content_type,
        headers,
    })
}

/// The one value of a header that may appear at most once.
fn single(headers: &HeaderMap, name: HeaderName) -> Result<Option<&HeaderValue>, MultipartError> {
    let mut values = headers.get_all(&name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(MultipartError::malformed(format!(
            "{name} given twice in a part"
        )));
    }
    Ok(first)
}

/// `form-data; name="…"; filename="…"` → (name, filename). Parameters are matched by exact
/// name, each at most once; `filename*` (RFC 8187, UTF-8) wins over `filename`.
fn parse_disposition(value: &[u8]) -> Result<(String, Option<String>), MultipartError> {
    let split = value.iter().position(|&b| b == b';').unwrap_or(value.len());
    let kind = String::from_utf8_lossy(&value[..split]);
    if !kind.trim().eq_ignore_ascii_case("form-data") {
        return Err(MultipartError::malformed(
            "a part's Content-Disposition is not form-data",
        ));
    }
    let (mut name, mut filename, mut filename_ext) = (None, None, None);
    for (key, v) in parse_params(&value[split..])? {
        let slot = match key.to_ascii_lowercase().as_str() {
            "name" => &mut name,
            "filename" => &mut filename,
            "filename*" => &mut filename_ext,
            _ => continue,
        };
        if slot.is_some() {
            return Err(MultipartError::malformed(format!(
                "parameter {key} given twice in a Content-Disposition"
            )));
        }
        *slot = Some(v);
    }
    let name = name.ok_or_else(|| MultipartError::malformed("a part has no name"))?;
    let filename = filename_ext
        .and_then(|v| decode_ext_value(&v))
        .or_else(|| filename.map(|f| String::from_utf8_lossy(&f).into_owned()));
    Ok((String::from_utf8_lossy(&name).into_owned(), filename))
}

/// Decodes an RFC 8187 `ext-value` in UTF-8: `UTF-8'lang'pct-encoded`.
fn decode_ext_value(v: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(v).ok()?;
    let mut it = text.splitn(3, '\'');
    let (charset, _lang, encoded) = (it.next()?, it.next()?, it.next()?);
    if !charset.eq_ignore_ascii_case("utf-8") {
        return None;
    }
    let b = encoded.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = (*b.get(i + 1)? as char).to_digit(16)?;
            let lo = (*b.get(i + 2)? as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parses `; key=value; key="quoted value"` parameters.
///
/// Quoted strings end at the first unescaped `"`; `\"` and `\\` are the only escapes, so a
/// Windows path such as `C:\dir\a.txt` (sent as is by old browsers) keeps its backslashes.
fn parse_params(mut s: &[u8]) -> Result<Vec<(String, Vec<u8>)>, MultipartError> {
    let ows = |s: &[u8]| -> usize { s.iter().take_while(|&&b| b == b' ' || b == b'\t').count() };
    let bad = || MultipartError::malformed("bad parameter in a header");
    let mut out = Vec::new();
    loop {
        s = &s[ows(s)..];
        if s.is_empty() {
            return Ok(out);
        }
        if s[0] != b';' {
            return Err(bad());
        }
        s = &s[1..];
        s = &s[ows(s)..];
        if s.is_empty() {
            return Ok(out); // a trailing `;` is tolerated
        }
        let key_len = s
            .iter()
            .position(|&b| b == b'=' || b == b';' || b == b' ' || b == b'\t')
            .unwrap_or(s.len());
        if key_len == 0 {
            return Err(bad());
        }
        let key = String::from_utf8_lossy(&s[..key_len]).into_owned();
        s = &s[key_len..];
        s = &s[ows(s)..];
        if s.first() != Some(&b'=') {
            return Err(bad());
        }
        s = &s[1..];
        s = &s[ows(s)..];
        let mut value = Vec::new();
        if s.first() == Some(&b'"') {
            let mut i = 1;
            loop {
                match s.get(i) {
                    None => return Err(bad()),
                    Some(b'"') => break,
                    Some(b'\\') if matches!(s.get(i + 1), Some(b'"') | Some(b'\\')) => {
                        value.push(s[i + 1]);
                        i += 2;
                    }
                    Some(&b) => {
                        value.push(b);
                        i += 1;
                    }
                }
            }
            s = &s[i + 1..];
        } else {
            let len = s
                .iter()
                .position(|&b| b == b';' || b == b' ' || b == b'\t')
                .unwrap_or(s.len());
            value.extend_from_slice(&s[..len]);
            s = &s[len..];
        }
        out.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A part as the tests see it: head and content.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Seen {
        name: String,
        filename: Option<String>,
        content_type: Option<String>,
        data: Vec<u8>,
    }

    fn parse_chunks<'a>(
        boundary: &str,
        limits: MultipartLimits,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Vec<Seen>, MultipartError> {
        let mut parser = MultipartParser::new(boundary, limits)?;
        let mut seen: Vec<Seen> = Vec::new();
        let mut open = false;
        for chunk in chunks {
            parser.feed(chunk, &mut |ev| {
                match ev {
                    Event::Part(h) => {
                        assert!(!open, "part started inside a part");
                        open = true;
                        seen.push(Seen {
                            name: h.name,
                            filename: h.filename,
                            content_type: h.content_type,
                            data: Vec::new(),
                        });
                    }
                    Event::Data(d) => {
                        assert!(open && !d.is_empty());
                        seen.last_mut().unwrap().data.extend_from_slice(d);
                    }
                    Event::PartEnd => {
                        assert!(open);
                        open = false;
                    }
                }
                Ok(())
            })?;
        }
        parser.finish()?;
        assert!(!open);
        Ok(seen)
    }

    fn parse_whole(boundary: &str, body: &[u8]) -> Result<Vec<Seen>, MultipartError> {
        parse_chunks(boundary, MultipartLimits::default(), [body])
    }

    fn encode(boundary: &str, parts: &[(String, Option<String>, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, filename, data) in parts {
            out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            match filename {
                Some(f) => out.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\
                         Content-Type: application/octet-stream\r\n\r\n"
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
        out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        out
    }

    #[test]
    fn content_bytes_are_exact() {
        // What the reference's trim() destroyed: trailing whitespace, CR, LF, NUL, VT.
        let data = b" \t abc \n\0\x0b\r\n\r\r\n".to_vec();
        let body = encode("b", &[("f".into(), Some("x.bin".into()), data.clone())]);
        let seen = parse_whole("b", &body).unwrap();
        assert_eq!(seen[0].data, data);
        assert_eq!(seen[0].filename.as_deref(), Some("x.bin"));
        assert_eq!(
            seen[0].content_type.as_deref(),
            Some("application/octet-stream")
        );
    }

    #[test]
    fn boundary_lookalikes_in_content_are_content() {
        let data = b"--b\r\n--bb\r\nx--b--\r\n-\r\n--".to_vec();
        let body = encode("b", &[("f".into(), None, data.clone())]);
        let err = parse_whole("b", &body);
        // "\r\n--bb" is a delimiter followed by a non-CRLF: the sender broke the rule that the
        // boundary must not occur in content, so the body is refused rather than misread.
        assert!(matches!(err, Err(MultipartError::Malformed(_))), "{err:?}");
        let data = b"--b\r\nb--\r\n-\r\n--".to_vec();
        let body = encode("b", &[("f".into(), None, data.clone())]);
        assert_eq!(parse_whole("b", &body).unwrap()[0].data, data);
    }

    #[test]
    fn preamble_epilogue_and_padding() {
        let body = b"This is the preamble.\r\n--zz  \t\r\n\
            Content-Disposition: form-data; name=a\r\n\r\n1\r\n--zz\r\n\
            content-disposition: FORM-DATA; NAME=\"b\"\r\n\r\n\r\n--zz-- \r\nepilogue";
        let seen = parse_whole("zz", body).unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!((seen[0].name.as_str(), &seen[0].data[..]), ("a", &b"1"[..]));
        assert_eq!((seen[1].name.as_str(), &seen[1].data[..]), ("b", &b""[..]));
    }

    #[test]
    fn empty_form() {
        assert_eq!(parse_whole("q", b"--q--\r\n").unwrap(), vec![]);
        assert_eq!(parse_whole("q", b"--q--").unwrap(), vec![]);
    }

    #[test]
    fn malformed_bodies() {
        let cases: &[&[u8]] = &[
            b"",
            b"no boundary at all",
            b"--q\r\nContent-Disposition: form-data; name=a\r\n\r\nunterminated",
            b"--q\r\n\r\nno headers\r\n--q--",
            b"--q\r\nContent-Type: text/plain\r\n\r\nno disposition\r\n--q--",
            b"--q\r\nContent-Disposition: attachment; name=a\r\n\r\nx\r\n--q--",
            b"--q\r\nContent-Disposition: form-data\r\n\r\nno name\r\n--q--",
            b"--q\r\nContent-Disposition: form-data; name=a; name=b\r\n\r\nx\r\n--q--",
            b"--q\r\nContent-Disposition: form-data; name=a\r\nContent-Disposition: form-data; name=b\r\n\r\nx\r\n--q--",
            b"--q\r\nContent-Disposition: form-data; name=\"a\r\n\r\nx\r\n--q--",
            b"--qx\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--q--",
            b"--q\r\nbad header line\r\n\r\nx\r\n--q--",
        ];
        for body in cases {
            let r = parse_whole("q", body);
            assert!(
                matches!(r, Err(MultipartError::Malformed(_))),
                "{:?}: {r:?}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(r.unwrap_err().status(), StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn disposition_parameters() {
        let d = |v: &str| parse_disposition(v.as_bytes());
        assert_eq!(
            d("form-data; filename=\"evil.txt\"; name=\"real\"").unwrap(),
            ("real".into(), Some("evil.txt".into()))
        );
        assert_eq!(
            d("form-data; name=\"a\\\"b\"; filename=\"C:\\dir\\x.txt\"").unwrap(),
            ("a\"b".into(), Some("C:\\dir\\x.txt".into()))
        );
        assert_eq!(
            d("form-data; name=f; filename=\"a.txt\"; filename*=UTF-8''%C3%A9t%C3%A9.txt").unwrap(),
            ("f".into(), Some("été.txt".into()))
        );
        assert_eq!(
            d("form-data; name=\"f\"; filename=\"\"").unwrap(),
            ("f".into(), Some(String::new()))
        );
        assert!(d("form-data; name").is_err());
        assert!(d("form-data name=a").is_err());
    }

    #[test]
    fn boundaries() {
        assert!(validate_boundary("----WebKitFormBoundary7MA4YWxkTrZu0gW").is_ok());
        assert!(validate_boundary("a'()+_,-./:=? b").is_ok());
        assert!(validate_boundary(&"x".repeat(70)).is_ok());
        assert!(validate_boundary(&"x".repeat(71)).is_err());
        assert!(validate_boundary("").is_err());
        assert!(validate_boundary("ends ").is_err());
        assert!(validate_boundary("semi;colon").is_err());
        assert!(validate_boundary("quote\"").is_err());
        assert!(validate_boundary("é").is_err());
        assert_eq!(
            boundary_from_content_type("Multipart/Form-Data ; charset=utf-8; boundary=abc")
                .unwrap(),
            "abc"
        );
        assert!(boundary_from_content_type("multipart/form-data; boundary=a; boundary=b").is_err());
        assert!(boundary_from_content_type("multipart/form-data; boundary=\"\"").is_err());
    }

    #[test]
    fn limits() {
        let lim = MultipartLimits::default;
        let field = encode("b", &[("f".into(), None, vec![b'x'; 100])]);
        let r = parse_chunks("b", lim().max_field_size(99), [&field[..]]);
        assert!(
            matches!(r, Err(MultipartError::FieldTooLarge { .. })),
            "{r:?}"
        );
        assert_eq!(r.unwrap_err().status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(parse_chunks("b", lim().max_field_size(100), [&field[..]]).is_ok());

        let two = encode(
            "b",
            &[
                ("a".into(), None, vec![1; 60]),
                ("c".into(), None, vec![2; 60]),
            ],
        );
        let r = parse_chunks("b", lim().max_fields_size(100), [&two[..]]);
        assert!(
            matches!(r, Err(MultipartError::FieldsTooLarge { .. })),
            "{r:?}"
        );
        let r = parse_chunks("b", lim().max_parts(1), [&two[..]]);
        assert!(
            matches!(r, Err(MultipartError::TooManyParts { limit: 1 })),
            "{r:?}"
        );

        let file = encode("b", &[("f".into(), Some("a".into()), vec![0; 1000])]);
        let r = parse_chunks("b", lim().max_file_size(999), file.chunks(10));
        assert!(
            matches!(r, Err(MultipartError::FileTooLarge { .. })),
            "{r:?}"
        );
        assert!(parse_chunks("b", lim().max_field_size(10), [&file[..]]).is_ok());
        let r = parse_chunks("b", lim().max_total_size(100), file.chunks(10));
        assert!(
            matches!(r, Err(MultipartError::BodyTooLarge { .. })),
            "{r:?}"
        );

        let mut big_head = b"--b\r\nContent-Disposition: form-data; name=a\r\nX-Pad: ".to_vec();
        big_head.extend(std::iter::repeat_n(b'p', 200));
        big_head.extend_from_slice(b"\r\n\r\nx\r\n--b--");
        let r = parse_chunks("b", lim().max_part_head_size(100), big_head.chunks(7));
        assert!(
            matches!(r, Err(MultipartError::PartHeadTooLarge { .. })),
            "{r:?}"
        );
        let r = parse_chunks("b", lim().max_part_head_size(100), [&big_head[..]]);
        assert!(
            matches!(r, Err(MultipartError::PartHeadTooLarge { .. })),
            "{r:?}"
        );
    }

    #[test]
    fn memory_stays_bounded_on_a_large_part() {
        let mut parser = MultipartParser::new("bound", MultipartLimits::default()).unwrap();
        let seen = std::cell::Cell::new(0u64);
        let mut sink = |ev: Event<'_>| {
            if let Event::Data(d) = ev {
                seen.set(seen.get() + d.len() as u64);
            }
            Ok(())
        };
        parser
            .feed(
                b"--bound\r\nContent-Disposition: form-data; name=f; filename=a\r\n\r\n",
                &mut sink,
            )
            .unwrap();
        // Content that keeps nearly matching the delimiter at every chunk end.
        let chunk: Vec<u8> = [vec![b'z'; 4093], b"\r\n-".to_vec()].concat();
        for _ in 0..256 {
            parser.feed(&chunk, &mut sink).unwrap();
            assert!(parser.carry.len() < 16);
        }
        parser.feed(b"\r\n--bound--\r\n", &mut sink).unwrap();
        parser.finish().unwrap();
        assert_eq!(seen.get(), 256 * 4096);
    }

    /// Bytes that make boundary confusion likely: CR, LF, dashes, and the boundary's letters.
    fn tricky_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                Just(b'\r'),
                Just(b'\n'),
                Just(b'-'),
                Just(b'x'),
                Just(b'y'),
                Just(0u8),
                any::<u8>()
            ],
            0..max,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Random parts, encoded and fed split at random points, give back exactly the parts,
        /// and the same events as when fed whole.
        #[test]
        fn chunk_splits_do_not_change_the_result(
            parts in prop::collection::vec(
                ("[a-z]{1,8}", prop::option::of("[a-zA-Z0-9 ._-]{0,12}"), tricky_bytes(200)),
                0..5,
            ),
            splits in prop::collection::vec(0usize..2000, 0..12),
        ) {
            let boundary = "xy-Xy";
            // The sender's duty (RFC 2046): the delimiter never occurs in content.
            let delimiter = format!("\r\n--{boundary}");
            let mut parts = parts;
            for p in &mut parts {
                while let Some(i) = memmem::find(&p.2, delimiter.as_bytes()) {
                    p.2.remove(i);
                }
                if p.2.starts_with(&delimiter.as_bytes()[2..]) {
                    p.2.insert(0, b'.');
                }
            }
            let body = encode(boundary, &parts);
            let whole = parse_whole(boundary, &body).unwrap();
            let expected: Vec<Seen> = parts
                .iter()
                .map(|(name, filename, data)| Seen {
                    name: name.clone(),
                    filename: filename.clone(),
                    content_type: filename.as_ref().map(|_| "application/octet-stream".into()),
                    data: data.clone(),
                })
                .collect();
            prop_assert_eq!(&whole, &expected);

            let mut cuts: Vec<usize> = splits.into_iter().map(|s| s % (body.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for c in cuts {
                chunks.push(&body[last..c]);
                last = c;
            }
            chunks.push(&body[last..]);
            let split = parse_chunks(boundary, MultipartLimits::default(), chunks).unwrap();
            prop_assert_eq!(&split, &expected);
        }

        /// Every single-byte split of arbitrary input gives the same verdict as the whole.
        #[test]
        fn arbitrary_input_never_panics_and_splits_agree(body in tricky_bytes(300)) {
            let mut body = body;
            body.splice(0..0, b"--xy\r\nContent-Disposition: form-data; name=a\r\n\r\n".iter().copied());
            let whole = parse_whole("xy", &body).map_err(|e| e.to_string());
            let bytewise = parse_chunks("xy", MultipartLimits::default(), body.chunks(1))
                .map_err(|e| e.to_string());
            prop_assert_eq!(whole, bytewise);
        }
    }
}
