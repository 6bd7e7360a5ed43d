//! Mapping a request path onto a file below a root, safely.
//!
//! Two steps. [`decode`] is pure: it percent-decodes each segment of the URL path on its own and
//! refuses anything that could change which directory a segment names (`..`, encoded `/`,
//! backslashes, NUL) or that is hidden (dotfiles). [`resolve`] then asks the file system:
//! `realpath` of the result must lie *inside* the canonical root, compared component by
//! component (so `/srv/public_secret` is not inside `/srv/public`), which also catches
//! symlinks that lead out.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Why a request path does not lead to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Nothing to serve: missing, hidden, or a path we refuse to interpret (404).
    NotFound,
    /// The file exists but may not be served: it lies outside the root through a symlink, or
    /// the server may not read it (403).
    Forbidden,
}

/// A request path decoded into a relative file path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The relative path, one component per non-empty URL segment (empty for the root).
    pub rel: PathBuf,
    /// The URL path ended with `/`: the client means a directory.
    pub trailing_slash: bool,
}

/// The one dot-directory served even when dotfiles are hidden (RFC 8615 well-known URIs).
const WELL_KNOWN: &[u8] = b".well-known";

/// Decodes a URL path (`/a/b%20c.txt`, without the query) into a relative path.
///
/// Refused, as [`Reject::NotFound`]: a path not starting with `/`; a segment that decodes to
/// `..`, or that contains `/` (an encoded slash), `\`, or NUL; a malformed `%` escape; and,
/// unless `show_dotfiles`, any segment starting with `.` other than a leading `.well-known`.
/// Empty and `.` segments are skipped. `+` is a literal plus in a path.
pub fn decode(url_path: &str, show_dotfiles: bool) -> Result<Decoded, Reject> {
    let rest = url_path.strip_prefix('/').ok_or(Reject::NotFound)?;
    let mut rel = PathBuf::new();
    let mut first = true;
    for raw in rest.split('/') {
        let seg = percent_decode_segment(raw.as_bytes()).ok_or(Reject::NotFound)?;
        if seg.is_empty() || seg == b"." {
            continue;
        }
        if seg == b".." || seg.iter().any(|&b| b == b'/' || b == b'\\' || b == 0) {
            return Err(Reject::NotFound);
        }
        if seg[0] == b'.' && !show_dotfiles && !(first && seg == WELL_KNOWN) {
            return Err(Reject::NotFound);
        }
        first = false;
        rel.push(OsStr::from_bytes(&seg));
    }
    Ok(Decoded {
        rel,
        trailing_slash: url_path.ends_with('/'),
    })
}

/// Strict `%XX` decoding of one path segment; `None` on a malformed escape.
fn percent_decode_segment(raw: &[u8]) -> Option<Vec<u8>> {
    if !raw.contains(&b'%') {
        return Some(raw.to_vec());
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hi = (*raw.get(i + 1)? as char).to_digit(16)?;
            let lo = (*raw.get(i + 2)? as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Whether a path relative to the root has a hidden component (see [`decode`]).
pub fn has_hidden_component(rel: &Path) -> bool {
    rel.components().enumerate().any(|(i, c)| match c {
        Component::Normal(name) => {
            let b = name.as_bytes();
            b.first() == Some(&b'.') && !(i == 0 && b == WELL_KNOWN)
        }
        _ => true,
    })
}

/// A file found below the root.
#[derive(Debug)]
pub enum Resolved {
    /// A regular file: its canonical path and metadata.
    File(PathBuf, std::fs::Metadata),
    /// A directory requested without the trailing slash: redirect to add it, so relative links
    /// in its index page resolve.
    AddSlash,
}

/// Finds the file a decoded path names below `root` (which must be canonical).
///
/// Directories lead to `index` inside them (no listings); a file requested with a trailing
/// slash is not found. Whatever the path resolves to, through symlinks included, must lie
/// inside `root` and, unless `show_dotfiles`, have no hidden component there.
pub fn resolve(
    root: &Path,
    decoded: &Decoded,
    index: Option<&str>,
    show_dotfiles: bool,
) -> Result<Resolved, Reject> {
    let path = confine(root, &root.join(&decoded.rel), show_dotfiles)?;
    let meta = std::fs::metadata(&path).map_err(io_reject)?;
    if meta.is_file() {
        return if decoded.trailing_slash {
            Err(Reject::NotFound)
        } else {
            Ok(Resolved::File(path, meta))
        };
    }
    if !meta.is_dir() {
        return Err(Reject::NotFound);
    }
    if !decoded.trailing_slash {
        return Ok(Resolved::AddSlash);
    }
    let index = index.ok_or(Reject::NotFound)?;
    let path = confine(root, &path.join(index), show_dotfiles)?;
    let meta = std::fs::metadata(&path).map_err(io_reject)?;
    if meta.is_file() {
        Ok(Resolved::File(path, meta))
    } else {
        Err(Reject::NotFound)
    }
}

/// `realpath(path)`, if it is inside `root` and not hidden.
pub fn confine(root: &Path, path: &Path, show_dotfiles: bool) -> Result<PathBuf, Reject> {
    let real = std::fs::canonicalize(path).map_err(io_reject)?;
    let rel = real.strip_prefix(root).map_err(|_| Reject::Forbidden)?;
    if !show_dotfiles && has_hidden_component(rel) {
        return Err(Reject::NotFound);
    }
    Ok(real)
}

fn io_reject(e: io::Error) -> Reject {
    match e.kind() {
        io::ErrorKind::PermissionDenied => Reject::Forbidden,
        _ => Reject::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(p: &str) -> Result<PathBuf, Reject> {
        decode(p, false).map(|d| d.rel)
    }

    #[test]
    fn plain_and_encoded_paths() {
        assert_eq!(rel("/"), Ok(PathBuf::new()));
        assert_eq!(rel("/a/b.txt"), Ok(PathBuf::from("a/b.txt")));
        assert_eq!(rel("/a%20b.txt"), Ok(PathBuf::from("a b.txt")));
        assert_eq!(rel("/a+b.txt"), Ok(PathBuf::from("a+b.txt")));
        assert_eq!(rel("//a/./b//"), Ok(PathBuf::from("a/b")));
        assert_eq!(rel("/%C3%A9t%C3%A9"), Ok(PathBuf::from("été")));
        assert!(decode("/dir/", false).unwrap().trailing_slash);
        assert!(!decode("/dir", false).unwrap().trailing_slash);
    }

    #[test]
    fn traversal_attempts_are_refused() {
        for p in [
            "/..",
            "/../etc/passwd",
            "/a/../../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/%2E%2E/etc/passwd",
            "/.%2e/x",
            "/a%2f..%2f..%2fetc/passwd",
            "/a%2Fb",
            "/..%5c..%5cwindows",
            "/a\\..\\b",
            "/file%00.txt",
            "/bad%zz",
            "/bad%2",
            "relative",
            "",
        ] {
            assert_eq!(rel(p), Err(Reject::NotFound), "{p:?}");
        }
    }

    #[test]
    fn dotfiles_are_hidden_unless_asked() {
        assert_eq!(rel("/.env"), Err(Reject::NotFound));
        assert_eq!(rel("/a/.git/config"), Err(Reject::NotFound));
        assert_eq!(rel("/%2egit/config"), Err(Reject::NotFound));
        assert_eq!(
            rel("/.well-known/security.txt"),
            Ok(PathBuf::from(".well-known/security.txt"))
        );
        assert_eq!(rel("/a/.well-known"), Err(Reject::NotFound));
        assert_eq!(
            decode("/.env", true).map(|d| d.rel),
            Ok(PathBuf::from(".env"))
        );
        assert!(has_hidden_component(Path::new("a/.b/c")));
        assert!(!has_hidden_component(Path::new(".well-known/x")));
        assert!(!has_hidden_component(Path::new("a/b.c")));
    }
}
