//! Static files and downloads.
//!
//! [`StaticFiles`] serves a directory tree: safe path resolution, `index.html`, MIME types,
//! validators and conditional requests, byte ranges, precompressed `.br`/`.gz` siblings and an
//! in-memory cache of small files. [`download`] answers with one file as an attachment, with
//! ranges so interrupted downloads resume.
//!
//! Both return an `http::Response<Body>` for [`Server::respond`](crate::Server::respond).
//! Cached files go out as shared [`Body::Bytes`](crate::Body::Bytes) (no copy per hit), the
//! others as [`Body::File`](crate::Body::File), which the server sends with `sendfile(2)`:
//! no file is ever read whole into memory.
//!
//! ```text
//!   GET /a%20b.css ─▶ decode segments ─▶ cache lookup ─hit─▶ stat: unchanged? ─▶ 200/206/304
//!                     (.., %2f, \, NUL,     │ miss                 │ changed: drop entry
//!                      dotfiles refused)    ▼                      ▼
//!                                  realpath inside root? ─▶ open, fstat ─▶ small: read, cache
//!                                                                         large: sendfile
//! ```
//!
//! Caches are per process: in the worker pool each worker has its own, within its budget.

pub mod conditional;
mod download;
pub mod path;
mod respond;
mod static_files;

pub use download::{content_disposition, download};
pub use static_files::{StaticConfig, StaticFiles};

/// Defaults of [`StaticConfig`], one place, one reason each.
pub mod defaults {
    /// Per process (workers share nothing): thousands of typical assets, small next to the
    /// page cache that serves the rest.
    pub const CACHE_BUDGET: usize = 32 * 1024 * 1024;
    /// Larger files are cheaper to `sendfile(2)` from the page cache than to copy from ours.
    pub const MAX_CACHED_FILE_SIZE: u64 = 64 * 1024;
    /// Like nginx: no `Cache-Control` unless asked; `ETag` and `Last-Modified` still let
    /// clients revalidate.
    pub const CACHE_CONTROL: Option<&str> = None;
    /// Dotfiles are usually secrets (`.env`, `.git/`, `.htpasswd`).
    pub const SHOW_DOTFILES: bool = false;
    /// What web servers and static site generators agree on.
    pub const INDEX: &str = "index.html";
    /// Serving a `.br`/`.gz` sibling costs two `stat`s per cache miss and saves bandwidth.
    pub const PRECOMPRESSED: bool = true;
    /// Enough for PDF and media clients; each range costs a part header and a read.
    pub const MAX_RANGES: usize = 32;
    /// Several ranges are assembled in memory; past this the whole file is sent (RFC 9110
    /// §14.2 allows ignoring `Range`), so one request cannot make a large allocation.
    pub const MAX_MULTIPART_RANGE_BYTES: u64 = 1024 * 1024;
}
