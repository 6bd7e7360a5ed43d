//! Fuzzes the static-file header logic: `Range` decisions, `multipart/byteranges` encoding,
//! and entity-tag lists (`If-None-Match`, `If-Match`, `If-Range`).
//!
//! Input layout: bytes 0-3 pick the representation length (little-endian u32, so multi-GiB
//! lengths are reached), byte 4 the most ranges allowed; the rest, as text, is the header
//! value. Invariants checked:
//!
//! 1. No panic.
//! 2. Every range lies within the representation, first <= last, and there are at most
//!    `max_ranges` of them; an empty representation never yields ranges.
//! 3. For small representations, the `multipart/byteranges` body holds each range's bytes
//!    exactly, with a matching `Content-Range`, and ends with the close delimiter.
//! 4. Entity-tag lists: a list matches under the strong comparison only if it matches under
//!    the weak one; `*` matches everything.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tickhttp::fs::conditional::{if_range_allows, list_matches, Comparison, Validators};
use tickhttp::http::header::{self, HeaderMap, HeaderValue};
use tickhttp::proto::range::{content_range, encode_byteranges, evaluate, RangeDecision};

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let len = u64::from(u32::from_le_bytes([data[0], data[1], data[2], data[3]]));
    let max_ranges = usize::from(data[4] % 64);
    let Ok(value) = std::str::from_utf8(&data[5..]) else {
        return;
    };

    match evaluate(value, len, max_ranges) {
        RangeDecision::Ranges(ranges) => {
            assert!(len > 0, "ranges of an empty representation");
            assert!(!ranges.is_empty() && ranges.len() <= max_ranges.max(1));
            for r in &ranges {
                assert!(
                    r.start() <= r.end() && *r.end() < len,
                    "{r:?} outside {len}"
                );
            }
            if len <= 4096 {
                let content: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                let parts: Vec<_> = ranges
                    .iter()
                    .map(|r| (r.clone(), &content[*r.start() as usize..=*r.end() as usize]))
                    .collect();
                let body = encode_byteranges("BOUND", "text/plain", len, &parts);
                assert!(body.ends_with(b"--BOUND--\r\n"));
                let mut at = 0;
                for (r, bytes) in &parts {
                    let head = format!(
                        "--BOUND\r\nContent-Type: text/plain\r\nContent-Range: {}\r\n\r\n",
                        content_range(r, len)
                    );
                    assert_eq!(&body[at..at + head.len()], head.as_bytes());
                    at += head.len();
                    assert_eq!(&body[at..at + bytes.len()], *bytes);
                    at += bytes.len();
                    assert_eq!(&body[at..at + 2], b"\r\n");
                    at += 2;
                }
                assert_eq!(at + "--BOUND--\r\n".len(), body.len());
            }
        }
        RangeDecision::Full | RangeDecision::Unsatisfiable => {}
    }

    for etag in ["\"abc\"", "W/\"abc\"", "\"\""] {
        let strong = list_matches(value, etag, Comparison::Strong);
        let weak = list_matches(value, etag, Comparison::Weak);
        assert!(
            !strong || weak,
            "strong match without a weak one: {value:?} vs {etag}"
        );
        if value.trim() == "*" {
            assert!(strong && weak);
        }
    }
    if let Ok(v) = HeaderValue::from_str(value) {
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_RANGE, v);
        let validators = Validators {
            etag: "\"abc\"",
            last_modified: Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(len)),
        };
        let _ = if_range_allows(&headers, &validators);
    }
});
