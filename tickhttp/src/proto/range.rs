//! Byte ranges (RFC 9110 §14): deciding what a `Range` header asks of a representation, and
//! encoding `multipart/byteranges` bodies. Pure functions, no I/O.
//!
//! The grammar itself is `http-range-header`'s; this module adds the decisions a server makes
//! around it: which errors are ignored (serve the whole representation, as RFC 9110 §14.2
//! allows), which are answered 416, and how several ranges are framed.
//!
//! ```
//! use tickhttp::proto::range::{evaluate, RangeDecision};
//! assert_eq!(evaluate("bytes=0-99", 1000, 16), RangeDecision::Ranges(vec![0..=99]));
//! assert_eq!(evaluate("bytes=-10", 1000, 16), RangeDecision::Ranges(vec![990..=999]));
//! assert_eq!(evaluate("bytes=5000-", 1000, 16), RangeDecision::Unsatisfiable);
//! assert_eq!(evaluate("lines=1-2", 1000, 16), RangeDecision::Full);
//! ```

use std::num::NonZeroUsize;
use std::ops::RangeInclusive;

use http_range_header::RangeUnsatisfiableError;

/// What to send for a `Range` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeDecision {
    /// Ignore the header and send the whole representation (200): the header is malformed, in
    /// another unit, or selects nothing of an empty representation.
    Full,
    /// Send these ranges (206), in the order asked; each lies within the representation.
    Ranges(Vec<RangeInclusive<u64>>),
    /// Answer 416 with `Content-Range: bytes */LEN`: no range overlaps the representation, or
    /// the set is abusive (more than `max_ranges`, or several overlapping ranges).
    Unsatisfiable,
}

/// Decides what a `Range` header value asks of a representation of `len` bytes.
///
/// Suffix ranges (`-N`) and open ranges (`N-`) are supported; an end past the last byte is
/// clamped (RFC 9110 §14.1.2). Ranges that do not overlap the representation are dropped when
/// others remain. More than `max_ranges` ranges are refused with 416 rather than served, since
/// answering them costs the server more than the client.
pub fn evaluate(value: &str, len: u64, max_ranges: usize) -> RangeDecision {
    let max = NonZeroUsize::new(max_ranges).unwrap_or(NonZeroUsize::MIN);
    let parsed = match http_range_header::parse_range_header_with_max_ranges(value, max) {
        Ok(p) => p,
        Err(RangeUnsatisfiableError::Rejected(_)) => return RangeDecision::Unsatisfiable,
        Err(_) => return RangeDecision::Full,
    };
    match parsed.validate(len) {
        Ok(ranges) if ranges.is_empty() => RangeDecision::Full,
        Ok(ranges) => RangeDecision::Ranges(ranges),
        Err(RangeUnsatisfiableError::Invalid(_)) => RangeDecision::Full,
        Err(_) => RangeDecision::Unsatisfiable,
    }
}

/// The `Content-Range` value of one range: `bytes FIRST-LAST/LEN`.
pub fn content_range(range: &RangeInclusive<u64>, len: u64) -> String {
    format!("bytes {}-{}/{}", range.start(), range.end(), len)
}

/// The `Content-Range` value of a 416 response: `bytes */LEN`.
pub fn unsatisfied_content_range(len: u64) -> String {
    format!("bytes */{len}")
}

/// Number of bytes in a range.
pub fn range_len(range: &RangeInclusive<u64>) -> u64 {
    range.end() - range.start() + 1
}

/// Encodes a `multipart/byteranges` body (RFC 9110 §14.6) from the ranges and their bytes.
///
/// `parts` pairs each range with exactly its bytes; `content_type` is the representation's
/// type, repeated in every part. The response's own `Content-Type` is
/// `multipart/byteranges; boundary=BOUNDARY`; the boundary must not occur in the data, so use
/// a random one (see [`random_boundary`]).
///
/// ```
/// use tickhttp::proto::range::encode_byteranges;
/// let body = encode_byteranges("XYZ", "text/plain", 10, &[(0..=1, b"ab"), (8..=9, b"ij")]);
/// assert_eq!(
///     body,
///     b"--XYZ\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/10\r\n\r\nab\r\n\
///       --XYZ\r\nContent-Type: text/plain\r\nContent-Range: bytes 8-9/10\r\n\r\nij\r\n\
///       --XYZ--\r\n"
/// );
/// ```
pub fn encode_byteranges(
    boundary: &str,
    content_type: &str,
    len: u64,
    parts: &[(RangeInclusive<u64>, &[u8])],
) -> Vec<u8> {
    let payload: usize = parts.iter().map(|(_, d)| d.len()).sum();
    let mut out = Vec::with_capacity(payload + parts.len() * (boundary.len() + 96) + 64);
    for (range, data) in parts {
        debug_assert_eq!(range_len(range), data.len() as u64);
        out.extend_from_slice(b"--");
        out.extend_from_slice(boundary.as_bytes());
        out.extend_from_slice(b"\r\nContent-Type: ");
        out.extend_from_slice(content_type.as_bytes());
        out.extend_from_slice(b"\r\nContent-Range: ");
        out.extend_from_slice(content_range(range, len).as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"--");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"--\r\n");
    out
}

/// A boundary of 32 random hex digits, for `multipart/byteranges` bodies.
pub fn random_boundary() -> String {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS once per process and advanced per instance.
    let mut a = std::collections::hash_map::RandomState::new().build_hasher();
    a.write_u64(0x7469_636b);
    let mut b = std::collections::hash_map::RandomState::new().build_hasher();
    b.write_u64(0x6874_7470);
    format!("{:016x}{:016x}", a.finish(), b.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn single_ranges() {
        assert_eq!(
            evaluate("bytes=0-0", 10, 4),
            RangeDecision::Ranges(vec![0..=0])
        );
        assert_eq!(
            evaluate("bytes=5-", 10, 4),
            RangeDecision::Ranges(vec![5..=9])
        );
        // An end past the last byte is clamped, a suffix longer than the file selects all.
        assert_eq!(
            evaluate("bytes=5-100", 10, 4),
            RangeDecision::Ranges(vec![5..=9])
        );
        assert_eq!(
            evaluate("bytes=-100", 10, 4),
            RangeDecision::Ranges(vec![0..=9])
        );
        assert_eq!(
            evaluate("BYTES=1-2", 10, 4),
            RangeDecision::Ranges(vec![1..=2])
        );
    }

    #[test]
    fn unsatisfiable_ranges_get_416() {
        assert_eq!(evaluate("bytes=10-", 10, 4), RangeDecision::Unsatisfiable);
        assert_eq!(evaluate("bytes=10-20", 10, 4), RangeDecision::Unsatisfiable);
        assert_eq!(evaluate("bytes=-0", 10, 4), RangeDecision::Unsatisfiable);
        assert_eq!(evaluate("bytes=0-", 0, 4), RangeDecision::Unsatisfiable);
        // Too many ranges, or several overlapping ones.
        assert_eq!(
            evaluate("bytes=0-0,2-2,4-4,6-6,8-8", 10, 4),
            RangeDecision::Unsatisfiable
        );
        assert_eq!(
            evaluate("bytes=0-5,1-6,2-7", 10, 4),
            RangeDecision::Unsatisfiable
        );
    }

    #[test]
    fn malformed_headers_are_ignored() {
        for v in [
            "",
            "bytes",
            "bytes=",
            "bytes=a-b",
            "bytes=5-1",
            "items=0-1",
            "bytes=1",
        ] {
            assert_eq!(evaluate(v, 10, 4), RangeDecision::Full, "{v:?}");
        }
    }

    #[test]
    fn unsatisfiable_members_are_dropped_when_others_remain() {
        assert_eq!(
            evaluate("bytes=0-1, 50-60", 10, 4),
            RangeDecision::Ranges(vec![0..=1])
        );
        assert_eq!(
            evaluate("bytes=0-1,4-5", 10, 4),
            RangeDecision::Ranges(vec![0..=1, 4..=5])
        );
    }

    #[test]
    fn content_range_values() {
        assert_eq!(content_range(&(0..=99), 1000), "bytes 0-99/1000");
        assert_eq!(unsatisfied_content_range(1000), "bytes */1000");
        assert_ne!(random_boundary(), random_boundary());
        assert_eq!(random_boundary().len(), 32);
    }

    proptest! {
        #[test]
        fn ranges_always_lie_within_the_representation(
            value in "(bytes|BYTES|items)=[0-9, -]{0,24}",
            len in 0u64..2000,
        ) {
            match evaluate(&value, len, 8) {
                RangeDecision::Ranges(rs) => {
                    prop_assert!(!rs.is_empty() && rs.len() <= 8);
                    for r in rs {
                        prop_assert!(r.start() <= r.end() && *r.end() < len);
                    }
                }
                RangeDecision::Full | RangeDecision::Unsatisfiable => {}
            }
        }
    }
}
