//! [`StaticFiles`]: a directory tree served over HTTP.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use lru::LruCache;

use super::defaults;
use super::path::{self, Reject, Resolved};
use super::respond::{self, open_nonblocking, FileMeta, RangeLimits, Source, Stamp};
use crate::body::Body;

/// Settings of a [`StaticFiles`] handler. Defaults are in [`defaults`](super::defaults).
///
/// ```
/// use tickhttp::fs::StaticConfig;
/// let config = StaticConfig::default()
///     .cache_budget(8 << 20)
///     .max_cached_file_size(32 << 10)
///     .cache_control("public, max-age=3600")
///     .index(None);
/// assert_eq!(config.cache_budget, 8 << 20);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StaticConfig {
    /// Bytes of file content kept in memory (plus a small overhead per entry); 0 disables
    /// the cache.
    pub cache_budget: usize,
    /// Files up to this size are cached in memory; larger ones are sent with `sendfile(2)`.
    pub max_cached_file_size: u64,
    /// `Cache-Control` value of every file response, if any.
    pub cache_control: Option<String>,
    /// Serve files and directories whose name starts with `.` (`/.well-known/` always is).
    pub show_dotfiles: bool,
    /// File served for a directory path ending in `/`; `None` answers directories with 404.
    pub index: Option<String>,
    /// Serve `FILE.br` or `FILE.gz` in place of `FILE` when the client accepts that coding.
    pub precompressed: bool,
    /// Most ranges honoured in one `Range` header; more are answered 416.
    pub max_ranges: usize,
    /// Largest total of a multi-range (`multipart/byteranges`) answer, which is assembled in
    /// memory; above it the whole file is sent.
    pub max_multipart_range_bytes: u64,
}

impl Default for StaticConfig {
    fn default() -> Self {
        StaticConfig {
            cache_budget: defaults::CACHE_BUDGET,
            max_cached_file_size: defaults::MAX_CACHED_FILE_SIZE,
            cache_control: defaults::CACHE_CONTROL.map(str::to_string),
            show_dotfiles: defaults::SHOW_DOTFILES,
            index: Some(defaults::INDEX.to_string()),
            precompressed: defaults::PRECOMPRESSED,
            max_ranges: defaults::MAX_RANGES,
            max_multipart_range_bytes: defaults::MAX_MULTIPART_RANGE_BYTES,
        }
    }
}

impl StaticConfig {
    /// Sets [`StaticConfig::cache_budget`].
    #[must_use]
    pub fn cache_budget(mut self, bytes: usize) -> Self {
        self.cache_budget = bytes;
        self
    }

    /// Sets [`StaticConfig::max_cached_file_size`].
    #[must_use]
    pub fn max_cached_file_size(mut self, bytes: u64) -> Self {
        self.max_cached_file_size = bytes;
        self
    }

    /// Sets [`StaticConfig::cache_control`], e.g. `"public, max-age=3600"`.
    #[must_use]
    pub fn cache_control(mut self, value: impl Into<String>) -> Self {
        self.cache_control = Some(value.into());
        self
    }

    /// Sets [`StaticConfig::show_dotfiles`].
    #[must_use]
    pub fn show_dotfiles(mut self, show: bool) -> Self {
        self.show_dotfiles = show;
        self
    }

    /// Sets [`StaticConfig::index`].
    #[must_use]
    pub fn index(mut self, index: Option<&str>) -> Self {
        self.index = index.map(str::to_string);
        self
    }

    /// Sets [`StaticConfig::precompressed`].
    #[must_use]
    pub fn precompressed(mut self, on: bool) -> Self {
        self.precompressed = on;
        self
    }

    /// Sets [`StaticConfig::max_ranges`].
    #[must_use]
    pub fn max_ranges(mut self, n: usize) -> Self {
        self.max_ranges = n;
        self
    }

    /// Sets [`StaticConfig::max_multipart_range_bytes`].
    #[must_use]
    pub fn max_multipart_range_bytes(mut self, bytes: u64) -> Self {
        self.max_multipart_range_bytes = bytes;
        self
    }
}

/// Serves the files below a root directory.
///
/// ```no_run
/// use tickhttp::fs::{StaticConfig, StaticFiles};
/// use tickhttp::{Server, ServerConfig};
///
/// let mut files = StaticFiles::new("public", StaticConfig::default())?;
/// let mut server = Server::bind(ServerConfig::default())?;
/// loop {
///     server.wait(None)?;
///     while let Some(req) = server.get_request() {
///         // Files first; whatever is not a file falls through to the app.
///         let resp = files.serve(&req).unwrap_or_else(|| {
///             let mut r = http::Response::new("no such page\n".into());
///             *r.status_mut() = http::StatusCode::NOT_FOUND;
///             r
///         });
///         server.respond(req.id(), resp)?;
///     }
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # What it answers
///
/// [`serve`](StaticFiles::serve) returns `None` when the path does not name a servable file,
/// so the application can route it elsewhere (or answer 404): missing files, hidden
/// dotfiles, and paths refused outright (`..`, `%2f`, `\`, NUL, malformed escapes). It returns
/// a response otherwise:
///
/// - **200** with `Content-Type` (from the extension; `charset=utf-8` for text), `ETag`
///   (strong, from mtime and size), `Last-Modified`, `Accept-Ranges`, and
///   `Cache-Control` when configured. HEAD gets the same head and no body.
/// - **304** for `If-None-Match` (weak comparison, lists, `*`) or, without it,
///   `If-Modified-Since`; **412** for a failed `If-Match`/`If-Unmodified-Since`.
/// - **206** for `Range` (GET only): one range as is, several as `multipart/byteranges`;
///   `If-Range` with a changed validator gets the whole file. **416** with
///   `Content-Range: bytes */LEN` when nothing is satisfiable.
/// - `FILE.br` / `FILE.gz` with `Content-Encoding` when present and accepted, with
///   `Vary: Accept-Encoding` on every representation of such a file.
/// - **301** to `PATH/` for a directory without the slash; its `index.html` with it.
/// - **403** when the path resolves, through a symlink, outside the root, or the file is not
///   readable; **405** with `Allow` for methods other than GET and HEAD.
///
/// # The cache
///
/// Small files (up to [`StaticConfig::max_cached_file_size`]) are kept in memory in an LRU
/// within [`StaticConfig::cache_budget`]; larger ones keep only their resolved path and
/// headers. Every hit is revalidated with one `stat` (or `open`+`fstat` for large files)
/// against the device, inode, mtime and size recorded at load time, so an edited or replaced
/// file is served fresh on the next request. A `.br`/`.gz` sibling created later is noticed
/// when its original changes or leaves the cache. [`cache_hits`](StaticFiles::cache_hits)
/// and [`cache_misses`](StaticFiles::cache_misses) count lookups.
pub struct StaticFiles {
    root: PathBuf,
    config: StaticConfig,
    cache_control: Option<HeaderValue>,
    limits: RangeLimits,
    cache: LruCache<Box<[u8]>, Entry>,
    cached_bytes: usize,
    hits: u64,
    misses: u64,
}

impl std::fmt::Debug for StaticFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticFiles")
            .field("root", &self.root)
            .field("cached_files", &self.cache.len())
            .field("cached_bytes", &self.cached_bytes)
            .field("hits", &self.hits)
            .field("misses", &self.misses)
            .finish()
    }
}

/// One URL path's representations: the file itself, then its precompressed siblings.
struct Entry {
    reps: Vec<Rep>,
    cost: usize,
}

struct Rep {
    coding: Coding,
    path: PathBuf,
    stamp: Stamp,
    meta: FileMeta,
    /// The bytes, for files small enough to cache.
    content: Option<Bytes>,
}

/// Bookkeeping bytes charged per cache entry on top of paths and content, so that entries
/// of large files (paths and headers only) are bounded by the budget too.
const ENTRY_OVERHEAD: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Identity,
    Brotli,
    Gzip,
}

impl Coding {
    fn suffix(self) -> &'static str {
        match self {
            Coding::Identity => "",
            Coding::Brotli => "-br",
            Coding::Gzip => "-gz",
        }
    }
    fn extension(self) -> &'static str {
        match self {
            Coding::Identity => "",
            Coding::Brotli => ".br",
            Coding::Gzip => ".gz",
        }
    }
    fn token(self) -> &'static str {
        match self {
            Coding::Identity => "identity",
            Coding::Brotli => "br",
            Coding::Gzip => "gzip",
        }
    }
}

impl StaticFiles {
    /// A handler for the files below `root`, which must be a directory.
    ///
    /// Fails when the root cannot be resolved or `cache_control` is not a valid header value.
    pub fn new(root: impl AsRef<Path>, config: StaticConfig) -> io::Result<StaticFiles> {
        let root = std::fs::canonicalize(root.as_ref())?;
        if !std::fs::metadata(&root)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a directory", root.display()),
            ));
        }
        let cache_control = match &config.cache_control {
            Some(v) => Some(HeaderValue::from_str(v).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("invalid Cache-Control value {v:?}"),
                )
            })?),
            None => None,
        };
        Ok(StaticFiles {
            root,
            limits: RangeLimits {
                max_ranges: config.max_ranges.max(1),
                max_multipart_bytes: config.max_multipart_range_bytes,
            },
            config,
            cache_control,
            cache: LruCache::unbounded(),
            cached_bytes: 0,
            hits: 0,
            misses: 0,
        })
    }

    /// The canonical root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The settings.
    pub fn config(&self) -> &StaticConfig {
        &self.config
    }

    /// Answers `req` from the file its path names, or `None` when it names none (see the
    /// type's documentation for every case).
    pub fn serve<B>(&mut self, req: &http::Request<B>) -> Option<Response<Body>> {
        self.serve_at(req, req.uri().path())
    }

    /// Like [`serve`](StaticFiles::serve), for a path other than the request's: for files
    /// mounted below a prefix, pass what follows it (`/static/app.js` → `/app.js`). The path
    /// is percent-encoded, as in a request target.
    pub fn serve_at<B>(
        &mut self,
        req: &http::Request<B>,
        url_path: &str,
    ) -> Option<Response<Body>> {
        let decoded = path::decode(url_path, self.config.show_dotfiles).ok()?;
        let mut key = decoded.rel.as_os_str().as_bytes().to_vec();
        if decoded.trailing_slash {
            key.push(b'/');
        }
        let accept = req
            .headers()
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok());

        if let Some(entry) = self.cache.get(&key[..]) {
            let rep = &entry.reps[choose(&entry.reps, accept)];
            if let Some(source) = revalidate(rep) {
                self.hits += 1;
                return Some(respond::respond(
                    req.method(),
                    req.headers(),
                    &rep.meta,
                    source,
                    self.limits,
                ));
            }
            self.remove(&key);
        }
        self.misses += 1;

        let index = self.config.index.as_deref();
        match path::resolve(&self.root, &decoded, index, self.config.show_dotfiles) {
            Err(Reject::NotFound) => None,
            Err(Reject::Forbidden) => Some(respond::status_response(StatusCode::FORBIDDEN)),
            Ok(Resolved::AddSlash) => Some(add_slash(req.uri())),
            Ok(Resolved::File(file_path, _)) => {
                if req.method() != Method::GET && req.method() != Method::HEAD {
                    let mut resp = respond::status_response(StatusCode::METHOD_NOT_ALLOWED);
                    resp.headers_mut()
                        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                    return Some(resp);
                }
                let (entry, mut opened) = match self.load(&file_path) {
                    Ok(loaded) => loaded,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
                    Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                        return Some(respond::status_response(StatusCode::FORBIDDEN))
                    }
                    Err(e) => {
                        tracing::warn!(path = %file_path.display(), error = %e, "static file");
                        return Some(respond::status_response(StatusCode::INTERNAL_SERVER_ERROR));
                    }
                };
                let i = choose(&entry.reps, accept);
                let rep = &entry.reps[i];
                let source = match (&rep.content, opened[i].take()) {
                    (Some(bytes), _) => Source::Memory(bytes.clone()),
                    (None, Some(file)) => Source::File(file),
                    (None, None) => {
                        return Some(respond::status_response(StatusCode::INTERNAL_SERVER_ERROR))
                    }
                };
                let resp =
                    respond::respond(req.method(), req.headers(), &rep.meta, source, self.limits);
                self.insert(key, entry);
                Some(resp)
            }
        }
    }

    /// Lookups answered by a cache entry that was still valid.
    pub fn cache_hits(&self) -> u64 {
        self.hits
    }

    /// Lookups that had to resolve the path on disk (absent, evicted or stale entries,
    /// and paths that name no file).
    pub fn cache_misses(&self) -> u64 {
        self.misses
    }

    /// Bytes charged to the cache now (content plus per-entry overhead).
    pub fn cached_bytes(&self) -> usize {
        self.cached_bytes
    }

    /// Paths in the cache now.
    pub fn cached_paths(&self) -> usize {
        self.cache.len()
    }

    /// Empties the cache (counters are kept).
    pub fn clear_cache(&mut self) {
        self.cache.clear();
        self.cached_bytes = 0;
    }

    fn max_cached_len(&self) -> u64 {
        let budget = self.config.cache_budget.saturating_sub(ENTRY_OVERHEAD) as u64;
        self.config.max_cached_file_size.min(budget)
    }

    /// Opens a file and its precompressed siblings; small ones are read into memory, the
    /// others stay open for the response that follows.
    fn load(&self, path: &Path) -> io::Result<(Entry, Vec<Option<File>>)> {
        let content_type = content_type_for(path);
        let mut reps = Vec::with_capacity(3);
        let mut opened = Vec::with_capacity(3);
        let (rep, file) = self.load_rep(path, Coding::Identity, &content_type)?;
        reps.push(rep);
        opened.push(file);
        if self.config.precompressed {
            for coding in [Coding::Brotli, Coding::Gzip] {
                let mut sibling = OsString::from(path.as_os_str());
                sibling.push(coding.extension());
                // A sibling may be a symlink too: it must stay inside the root.
                let Ok(real) =
                    path::confine(&self.root, Path::new(&sibling), self.config.show_dotfiles)
                else {
                    continue;
                };
                if let Ok((rep, file)) = self.load_rep(&real, coding, &content_type) {
                    reps.push(rep);
                    opened.push(file);
                }
            }
        }
        let vary = reps.len() > 1;
        let mut cost = ENTRY_OVERHEAD;
        for rep in &mut reps {
            let h = &mut rep.meta.headers;
            if let Some(cc) = &self.cache_control {
                h.insert(header::CACHE_CONTROL, cc.clone());
            }
            if vary {
                h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
            }
            if rep.coding != Coding::Identity {
                h.insert(
                    header::CONTENT_ENCODING,
                    HeaderValue::from_static(rep.coding.token()),
                );
            }
            cost += rep.path.as_os_str().len() + rep.content.as_ref().map_or(0, Bytes::len);
        }
        Ok((Entry { reps, cost }, opened))
    }

    fn load_rep(
        &self,
        path: &Path,
        coding: Coding,
        content_type: &HeaderValue,
    ) -> io::Result<(Rep, Option<File>)> {
        let file = open_nonblocking(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::ErrorKind::NotFound.into());
        }
        let stamp = Stamp::of(&meta);
        let mut content = None;
        let mut file = Some(file);
        if stamp.len <= self.max_cached_len() {
            if let Some(f) = file.as_ref() {
                // A file that changes while read is left uncached and sent from the open fd.
                let mut buf = Vec::with_capacity(stamp.len as usize);
                f.take(stamp.len + 1).read_to_end(&mut buf)?;
                if buf.len() as u64 == stamp.len {
                    content = Some(Bytes::from(buf));
                    file = None;
                }
            }
        }
        let rep = Rep {
            coding,
            path: path.to_path_buf(),
            meta: FileMeta::new(&stamp, coding.suffix(), content_type.clone()),
            stamp,
            content,
        };
        Ok((rep, file))
    }

    fn insert(&mut self, key: Vec<u8>, entry: Entry) {
        if entry.cost > self.config.cache_budget {
            return;
        }
        while self.cached_bytes + entry.cost > self.config.cache_budget {
            match self.cache.pop_lru() {
                Some((_, old)) => self.cached_bytes -= old.cost,
                None => break,
            }
        }
        self.cached_bytes += entry.cost;
        if let Some(old) = self.cache.put(key.into_boxed_slice(), entry) {
            self.cached_bytes -= old.cost;
        }
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(old) = self.cache.pop(key) {
            self.cached_bytes -= old.cost;
        }
    }
}

/// The bytes of a cached representation if its file is unchanged: a `stat` for cached
/// content, an `open` + `fstat` for files sent from disk (the fd goes into the response).
fn revalidate(rep: &Rep) -> Option<Source> {
    match &rep.content {
        Some(bytes) => {
            let meta = std::fs::metadata(&rep.path).ok()?;
            (meta.is_file() && Stamp::of(&meta) == rep.stamp).then(|| Source::Memory(bytes.clone()))
        }
        None => {
            let file = open_nonblocking(&rep.path).ok()?;
            let meta = file.metadata().ok()?;
            (meta.is_file() && Stamp::of(&meta) == rep.stamp).then_some(Source::File(file))
        }
    }
}

/// Picks the representation for an `Accept-Encoding` value: the accepted coding with the
/// highest q-value among those present (brotli on a tie), else the file itself.
fn choose(reps: &[Rep], accept: Option<&str>) -> usize {
    let Some(accept) = accept else { return 0 };
    if reps.len() == 1 {
        return 0;
    }
    let mut best = (0usize, 0u32);
    for (i, rep) in reps.iter().enumerate().skip(1) {
        let q = coding_q(accept, rep.coding);
        let better = q > best.1 || (q == best.1 && q > 0 && rep.coding == Coding::Brotli);
        if q > 0 && better {
            best = (i, q);
        }
    }
    best.0
}

/// The q-value (in thousandths) an `Accept-Encoding` value gives a coding; `*` covers
/// codings not named, and a coding not covered is not acceptable.
fn coding_q(accept: &str, coding: Coding) -> u32 {
    let mut star = None;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let token = parts.next().unwrap_or("").trim();
        let q = parts
            .find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("q")
                    .then(|| parse_q(v.trim()))
            })
            .unwrap_or(1000);
        let named = token.eq_ignore_ascii_case(coding.token())
            || (coding == Coding::Gzip && token.eq_ignore_ascii_case("x-gzip"));
        if named {
            return q;
        }
        if token == "*" {
            star = Some(q);
        }
    }
    star.unwrap_or(0)
}

/// Parses a qvalue (`0`, `0.5`, `1.000`) into thousandths; malformed means 0.
fn parse_q(v: &str) -> u32 {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    let mut thousandths = 0;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += u32::from(b - b'0') * [100, 10, 1][i];
    }
    match int {
        "0" => thousandths,
        "1" if thousandths == 0 => 1000,
        _ => 0,
    }
}

/// `Content-Type` from the file extension, with `charset=utf-8` for text.
pub(crate) fn content_type_for(path: &Path) -> HeaderValue {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let texty = mime.type_() == mime_guess::mime::TEXT
        || mime.subtype() == mime_guess::mime::JAVASCRIPT
        || mime.subtype() == mime_guess::mime::JSON;
    let value = if texty && mime.get_param(mime_guess::mime::CHARSET).is_none() {
        format!("{}; charset=utf-8", mime.essence_str())
    } else {
        mime.to_string()
    };
    HeaderValue::from_str(&value)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
}

/// 301 to the same path with a trailing slash (the query kept).
fn add_slash(uri: &http::Uri) -> Response<Body> {
    let mut location = format!("{}/", uri.path());
    if let Some(q) = uri.query() {
        location.push('?');
        location.push_str(q);
    }
    let mut resp = respond::status_response(StatusCode::MOVED_PERMANENTLY);
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qvalues() {
        assert_eq!(parse_q("1"), 1000);
        assert_eq!(parse_q("1.000"), 1000);
        assert_eq!(parse_q("0.5"), 500);
        assert_eq!(parse_q("0.05"), 50);
        assert_eq!(parse_q("0"), 0);
        assert_eq!(parse_q("2"), 0);
        assert_eq!(parse_q("0.5555"), 0);
        assert_eq!(parse_q("x"), 0);
    }

    #[test]
    fn accept_encoding() {
        assert_eq!(coding_q("gzip, deflate, br", Coding::Brotli), 1000);
        assert_eq!(coding_q("gzip;q=0.8, br;q=0.9", Coding::Gzip), 800);
        assert_eq!(coding_q("gzip;q=0", Coding::Gzip), 0);
        assert_eq!(coding_q("*;q=0.3", Coding::Brotli), 300);
        assert_eq!(coding_q("*, br;q=0", Coding::Brotli), 0);
        assert_eq!(coding_q("identity", Coding::Gzip), 0);
        assert_eq!(coding_q("X-GZIP", Coding::Gzip), 1000);
    }

    #[test]
    fn content_types_carry_a_charset_for_text() {
        let ct = |p: &str| content_type_for(Path::new(p)).to_str().unwrap().to_string();
        assert_eq!(ct("a.html"), "text/html; charset=utf-8");
        assert_eq!(ct("a.css"), "text/css; charset=utf-8");
        assert_eq!(ct("a.js"), "text/javascript; charset=utf-8");
        assert_eq!(ct("a.json"), "application/json; charset=utf-8");
        assert_eq!(ct("a.png"), "image/png");
        assert_eq!(ct("a.unknownext"), "application/octet-stream");
        assert_eq!(ct("noext"), "application/octet-stream");
    }
}
