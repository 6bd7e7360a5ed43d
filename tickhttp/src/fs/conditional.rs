//! Conditional requests (RFC 9110 §13): entity-tag comparison and the precondition order.
//! Pure functions over header values, no I/O.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use http::{HeaderMap, Method};
//! use tickhttp::fs::conditional::{evaluate, Precondition, Validators};
//!
//! let v = Validators { etag: "\"abc\"", last_modified: Some(UNIX_EPOCH + Duration::from_secs(1_000_000)) };
//! let mut headers = HeaderMap::new();
//! headers.insert("if-none-match", "W/\"abc\", \"other\"".parse().unwrap());
//! assert_eq!(evaluate(&Method::GET, &headers, &v), Precondition::NotModified);
//! ```

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{
    HeaderMap, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE,
};
use http::Method;

/// The validators of the selected representation.
#[derive(Debug, Clone, Copy)]
pub struct Validators<'a> {
    /// The entity-tag, quoted, as sent in `ETag` (`"…"` or `W/"…"`).
    pub etag: &'a str,
    /// The modification time, as sent in `Last-Modified` (whole seconds).
    pub last_modified: Option<SystemTime>,
}

/// The outcome of evaluating the preconditions of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Handle the request normally.
    Proceed,
    /// Answer 304 Not Modified (GET and HEAD only).
    NotModified,
    /// Answer 412 Precondition Failed.
    Failed,
}

/// Evaluates `If-Match`, `If-Unmodified-Since`, `If-None-Match` and `If-Modified-Since` in
/// the order of RFC 9110 §13.2.2.
///
/// - `If-Match` uses the strong comparison; `*` matches any current representation.
/// - `If-Unmodified-Since` is only looked at when `If-Match` is absent.
/// - `If-None-Match` uses the weak comparison; a match is 304 for GET and HEAD, 412 otherwise.
/// - `If-Modified-Since` is only looked at, for GET and HEAD, when `If-None-Match` is absent.
/// - Unparseable dates are ignored, as the RFC requires.
pub fn evaluate(method: &Method, headers: &HeaderMap, v: &Validators<'_>) -> Precondition {
    let safe = method == Method::GET || method == Method::HEAD;
    if let Some(list) = header_list(headers, &IF_MATCH) {
        if !list_matches(&list, v.etag, Comparison::Strong) {
            return Precondition::Failed;
        }
    } else if let (Some(since), Some(lm)) =
        (header_date(headers, &IF_UNMODIFIED_SINCE), v.last_modified)
    {
        if lm > since {
            return Precondition::Failed;
        }
    }
    if let Some(list) = header_list(headers, &IF_NONE_MATCH) {
        if list_matches(&list, v.etag, Comparison::Weak) {
            return if safe {
                Precondition::NotModified
            } else {
                Precondition::Failed
            };
        }
    } else if safe {
        if let (Some(since), Some(lm)) = (header_date(headers, &IF_MODIFIED_SINCE), v.last_modified)
        {
            if lm <= since {
                return Precondition::NotModified;
            }
        }
    }
    Precondition::Proceed
}

/// Whether a `Range` header may be honoured under `If-Range` (RFC 9110 §13.1.5): true when
/// there is no `If-Range`, when it is an entity-tag that strongly matches, or when it is a date
/// that equals `Last-Modified` exactly. A weak or mismatched validator means "send it all".
pub fn if_range_allows(headers: &HeaderMap, v: &Validators<'_>) -> bool {
    let Some(value) = headers.get(IF_RANGE) else {
        return true;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        return match parse_etag(value) {
            Some((tag, rest)) if rest.trim().is_empty() => strong_eq(tag, v.etag),
            _ => false,
        };
    }
    match (httpdate::parse_http_date(value), v.last_modified) {
        (Ok(date), Some(lm)) => truncate_to_seconds(lm) == date,
        _ => false,
    }
}

/// How two entity-tags are compared (RFC 9110 §8.8.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// Both must be strong and their opaque tags equal.
    Strong,
    /// The opaque tags must be equal; `W/` is ignored.
    Weak,
}

/// Whether an `If-Match`/`If-None-Match` list (`*`, or comma-separated entity-tags) matches
/// `etag`. A malformed list matches nothing from the first bad member on.
pub fn list_matches(list: &str, etag: &str, cmp: Comparison) -> bool {
    let mut rest = list.trim();
    if rest == "*" {
        return true;
    }
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return false;
        }
        let Some((tag, after)) = parse_etag(rest) else {
            return false;
        };
        let hit = match cmp {
            Comparison::Strong => strong_eq(tag, etag),
            Comparison::Weak => opaque(tag) == opaque(etag),
        };
        if hit {
            return true;
        }
        rest = after;
    }
}

/// Splits the first entity-tag (`"…"` or `W/"…"`) off `s`: returns it and the rest.
fn parse_etag(s: &str) -> Option<(&str, &str)> {
    let body = s.strip_prefix("W/").unwrap_or(s);
    let inner = body.strip_prefix('"')?;
    let close = inner.find('"')?;
    let tag_len = (s.len() - body.len()) + 1 + close + 1;
    Some((&s[..tag_len], &s[tag_len..]))
}

fn is_weak(tag: &str) -> bool {
    tag.starts_with("W/")
}

fn opaque(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

fn strong_eq(a: &str, b: &str) -> bool {
    !is_weak(a) && !is_weak(b) && a == b
}

/// An entity-tag we never issue (ours are never empty).
const NO_MATCH: &str = "\"\"";

/// A list header's value, its field lines joined with commas (RFC 9110 §5.3). A line that is
/// not visible ASCII cannot hold an entity-tag we issued, so it is replaced by one that
/// matches nothing.
fn header_list<'h>(headers: &'h HeaderMap, name: &http::HeaderName) -> Option<Cow<'h, str>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let text = |v: &http::HeaderValue| -> String { v.to_str().unwrap_or(NO_MATCH).to_string() };
    let rest: Vec<String> = values.map(text).collect();
    if rest.is_empty() {
        return Some(match first.to_str() {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => Cow::Borrowed(NO_MATCH),
        });
    }
    let mut joined = text(first);
    for r in rest {
        joined.push_str(", ");
        joined.push_str(&r);
    }
    Some(Cow::Owned(joined))
}

fn header_date(headers: &HeaderMap, name: &http::HeaderName) -> Option<SystemTime> {
    let value = headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(value.trim()).ok()
}

/// Drops the sub-second part: HTTP dates have one-second resolution.
pub fn truncate_to_seconds(t: SystemTime) -> SystemTime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => UNIX_EPOCH + Duration::from_secs(d.as_secs()),
        Err(_) => UNIX_EPOCH,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const V: Validators<'static> = Validators {
        etag: "\"1a-2b\"",
        last_modified: Some(UNIX_EPOCH),
    };

    fn v() -> Validators<'static> {
        Validators {
            last_modified: Some(at(1_700_000_000)),
            ..V
        }
    }

    fn date(secs: u64) -> String {
        httpdate::fmt_http_date(at(secs))
    }

    #[test]
    fn entity_tag_lists() {
        assert!(list_matches("\"1a-2b\"", "\"1a-2b\"", Comparison::Strong));
        assert!(list_matches(
            "\"x\", \"1a-2b\"",
            "\"1a-2b\"",
            Comparison::Strong
        ));
        assert!(list_matches("*", "\"1a-2b\"", Comparison::Strong));
        assert!(!list_matches(
            "W/\"1a-2b\"",
            "\"1a-2b\"",
            Comparison::Strong
        ));
        assert!(list_matches("W/\"1a-2b\"", "\"1a-2b\"", Comparison::Weak));
        assert!(list_matches(
            "\"a,b\",\"1a-2b\"",
            "\"1a-2b\"",
            Comparison::Weak
        ));
        assert!(!list_matches("1a-2b", "\"1a-2b\"", Comparison::Weak));
        assert!(!list_matches("\"1a-2b", "\"1a-2b\"", Comparison::Weak));
        assert!(!list_matches("", "\"1a-2b\"", Comparison::Weak));
    }

    #[test]
    fn if_none_match_gives_304_for_get_and_412_otherwise() {
        let h = headers(&[("if-none-match", "W/\"1a-2b\"")]);
        assert_eq!(evaluate(&Method::GET, &h, &v()), Precondition::NotModified);
        assert_eq!(evaluate(&Method::HEAD, &h, &v()), Precondition::NotModified);
        assert_eq!(evaluate(&Method::PUT, &h, &v()), Precondition::Failed);
        let h = headers(&[("if-none-match", "\"other\"")]);
        assert_eq!(evaluate(&Method::GET, &h, &v()), Precondition::Proceed);
    }

    #[test]
    fn if_modified_since_is_ignored_when_if_none_match_is_present() {
        let h = headers(&[
            ("if-none-match", "\"other\""),
            ("if-modified-since", &date(1_800_000_000)),
        ]);
        assert_eq!(evaluate(&Method::GET, &h, &v()), Precondition::Proceed);
        let h = headers(&[("if-modified-since", &date(1_800_000_000))]);
        assert_eq!(evaluate(&Method::GET, &h, &v()), Precondition::NotModified);
        let h = headers(&[("if-modified-since", &date(1_700_000_000))]);
        assert_eq!(evaluate(&Method::GET, &h, &v()), Precondition::NotModified);
        let h = headers(&[("if-modified-since", &date(1_699_999_999))]);
        assert_eq!(evaluate(&Method::GET, &h, &v()), Precondition::Proceed);
        let h = headers(&[("if-modified-since", "yesterday")]);
        assert_eq!(evaluate(&Method::GET, &h, &v()), Precondition::Proceed);
        let h = headers(&[("if-modified-since", &date(1_800_000_000))]);
        assert_eq!(evaluate(&Method::POST, &h, &v()), Precondition::Proceed);
    }

    #[test]
    fn if_match_and_if_unmodified_since() {
        let h = headers(&[("if-match", "\"other\"")]);
        assert_eq!(evaluate(&Method::GET, &h, &v()), Precondition::Failed);
        let h = headers(&[("if-match", "W/\"1a-2b\"")]);
        assert_eq!(evaluate(&Method::GET, &h, &v()), Precondition::Failed);
        let h = headers(&[("if-match", "\"1a-2b\"")]);
        assert_eq!(evaluate(&Method::GET, &h, &v()), Precondition::Proceed);
        let h = headers(&[("if-unmodified-since", &date(1_699_999_999))]);
        assert_eq!(evaluate(&Method::GET, &h, &v()), Precondition::Failed);
        // If-Match takes precedence over If-Unmodified-Since.
        let h = headers(&[
            ("if-match", "*"),
            ("if-unmodified-since", &date(1_699_999_999)),
        ]);
        assert_eq!(evaluate(&Method::GET, &h, &v()), Precondition::Proceed);
    }

    #[test]
    fn if_range() {
        assert!(if_range_allows(&headers(&[]), &v()));
        assert!(if_range_allows(
            &headers(&[("if-range", "\"1a-2b\"")]),
            &v()
        ));
        assert!(!if_range_allows(
            &headers(&[("if-range", "W/\"1a-2b\"")]),
            &v()
        ));
        assert!(!if_range_allows(&headers(&[("if-range", "\"zz\"")]), &v()));
        assert!(if_range_allows(
            &headers(&[("if-range", &date(1_700_000_000))]),
            &v()
        ));
        assert!(!if_range_allows(
            &headers(&[("if-range", &date(1_700_000_001))]),
            &v()
        ));
        assert!(!if_range_allows(&headers(&[("if-range", "garbage")]), &v()));
    }
}
