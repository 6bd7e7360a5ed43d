//! Fuzzes `tickhttp::proto::parse_head` and `may_be_complete` with arbitrary bytes.
//!
//! Invariants checked, each under the default limits and under a set of tiny limits (so the
//! 413/414/431 paths are reachable with short inputs):
//!
//! 1. Neither function panics.
//! 2. `Ok(Some(head))` implies `head.head_len <= data.len()`, `head_len <= max_head_size`, the
//!    head ends with a line feed, and the framing agrees with the limits and the headers.
//! 3. Trailing bytes do not matter: parsing `data[..head_len]` gives an identical head.
//! 4. Prefixes: for a prefix `p = data[..k]` with `k < data.len()`:
//!    - if the full input gives `Ok(Some(head))` and `k < head_len`, `p` gives `Ok(None)`
//!      (a complete head is never over a limit, so a shorter prefix is never over one either);
//!    - if the full input gives `Ok(Some(head))` and `k >= head_len`, `p` gives an identical head;
//!    - if the full input gives `Ok(None)`, so does `p`;
//!    - if `p` gives an error, so does the full input (a server that rejects a request after a
//!      partial read would also have rejected it after reading everything).
//! 5. `may_be_complete(data, 0)` is true whenever `parse_head` returns `Ok(Some(_))`, and so is
//!    `may_be_complete(data, k)` for every `k < head_len`, which is how the server calls it
//!    after an earlier read ended at `k` without a complete head.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tickhttp::http::header;
use tickhttp::proto::head::may_be_complete;
use tickhttp::proto::{parse_head, Framing, Head, Limits};
use tickhttp::RequestError;

type Parsed = Result<Option<Head>, RequestError>;

fn tiny_limits() -> Limits {
    Limits {
        max_head_size: 200,
        max_headers: 4,
        max_uri_len: 24,
        max_body_size: 1000,
    }
}

fn same_head(a: &Head, b: &Head) -> bool {
    a.method == b.method
        && a.uri == b.uri
        && a.version == b.version
        && a.headers == b.headers
        && a.framing == b.framing
        && a.keep_alive == b.keep_alive
        && a.expect_continue == b.expect_continue
        && a.upgrade == b.upgrade
        && a.head_len == b.head_len
}

fn describe(r: &Parsed) -> String {
    match r {
        Ok(None) => "Ok(None)".to_string(),
        Ok(Some(h)) => format!(
            "Ok(Some(method={} uri={} version={:?} framing={:?} head_len={}))",
            h.method, h.uri, h.version, h.framing, h.head_len
        ),
        Err(e) => format!("Err({e:?})"),
    }
}

/// Prefix lengths worth checking: the edges, both sides of the first line feeds, the bytes
/// just before the end of the head, and a few positions derived from the input.
fn prefix_lengths(data: &[u8], head_len: Option<usize>) -> Vec<usize> {
    let len = data.len();
    let mut ks = vec![0, 1, len / 2, len.saturating_sub(1), len.saturating_sub(2)];
    if let Some(hl) = head_len {
        ks.extend([
            hl.saturating_sub(1),
            hl.saturating_sub(2),
            hl.saturating_sub(3),
            hl,
        ]);
    }
    for (i, _) in data
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .take(24)
    {
        ks.extend([i, i + 1]);
    }
    // FNV-1a over the input picks a few more positions deterministically.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    for _ in 0..4 {
        h = h.rotate_left(17).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        if len > 0 {
            ks.push((h % len as u64) as usize);
        }
    }
    ks.retain(|&k| k < len);
    ks.sort_unstable();
    ks.dedup();
    ks
}

fn check_head(data: &[u8], head: &Head, limits: &Limits) {
    assert!(
        head.head_len <= data.len(),
        "head_len {} > input length {}",
        head.head_len,
        data.len()
    );
    assert!(head.head_len > 0, "empty head");
    assert!(
        head.head_len <= limits.max_head_size,
        "head_len {} over max_head_size {}",
        head.head_len,
        limits.max_head_size
    );
    assert_eq!(
        data[head.head_len - 1],
        b'\n',
        "head does not end with a line feed"
    );
    assert!(head.headers.len() <= limits.max_headers.max(1));
    match head.framing {
        Framing::None => {}
        Framing::Length(n) => {
            assert!(
                n > 0 && n <= limits.max_body_size,
                "Content-Length {n} accepted"
            );
            assert!(!head.headers.contains_key(header::TRANSFER_ENCODING));
            let cl = head
                .headers
                .get(header::CONTENT_LENGTH)
                .expect("Length without header");
            assert_eq!(
                cl.to_str().ok().and_then(|s| s.parse::<u64>().ok()),
                Some(n)
            );
        }
        Framing::Chunked => {
            assert_eq!(head.version, tickhttp::http::Version::HTTP_11);
            assert!(head.headers.contains_key(header::TRANSFER_ENCODING));
            assert!(!head.headers.contains_key(header::CONTENT_LENGTH));
        }
    }
    if head.version == tickhttp::http::Version::HTTP_11 {
        assert!(
            head.headers.contains_key(header::HOST),
            "HTTP/1.1 head without Host"
        );
    }
}

fn check(data: &[u8], limits: &Limits) {
    let full = parse_head(data, limits);
    let head_len = match &full {
        Ok(Some(head)) => {
            check_head(data, head, limits);

            // Trailing bytes do not affect the head.
            let truncated = parse_head(&data[..head.head_len], limits);
            match &truncated {
                Ok(Some(t)) if same_head(head, t) => {}
                other => panic!(
                    "input cut after head_len parses differently: full {}, cut {}",
                    describe(&full),
                    describe(other)
                ),
            }

            assert!(
                may_be_complete(data, 0),
                "may_be_complete(data, 0) is false for a complete head"
            );
            Some(head.head_len)
        }
        _ => None,
    };

    for k in prefix_lengths(data, head_len) {
        let prefix = &data[..k];
        let p = parse_head(prefix, limits);
        let ok = match (&full, &p) {
            (Ok(Some(f)), Ok(None)) => k < f.head_len,
            (Ok(Some(f)), Ok(Some(ph))) => k >= f.head_len && same_head(f, ph),
            (Ok(Some(_)), Err(_)) => false,
            (Ok(None), r) => matches!(r, Ok(None)),
            (Err(_), Ok(None)) | (Err(_), Err(_)) => true,
            (Err(_), Ok(Some(_))) => false,
        };
        assert!(
            ok,
            "prefix of {k} bytes (of {}) gives {} but the full input gives {}",
            data.len(),
            describe(&p),
            describe(&full)
        );
        if let Some(hl) = head_len {
            if k < hl {
                // The server remembers how far it scanned and resumes there on the next read.
                assert!(
                    may_be_complete(data, k),
                    "may_be_complete(data, {k}) is false but the head is complete at {hl}"
                );
                assert!(may_be_complete(&data[..hl], k));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data, &Limits::default());
    check(data, &tiny_limits());
});
