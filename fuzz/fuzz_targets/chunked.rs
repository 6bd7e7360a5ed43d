//! Fuzzes `tickhttp::proto::ChunkedDecoder`: splitting the input must not change the result.
//!
//! Input layout: bytes 0-1 pick the split point (little-endian, modulo the stream length + 1),
//! byte 2 picks the body limit, byte 3 the trailer limit; the rest is the chunked stream.
//!
//! The stream is decoded three ways: all at once, in two pieces split at the chosen point, and
//! one byte at a time (each feeding the decoder only what it has not consumed, as the server
//! does). Invariants checked:
//!
//! 1. No panic.
//! 2. All three give the same outcome: the same body bytes, the same consumed length, the same
//!    done flag, and the same error (or none).
//! 3. A call that does not finish the body consumes its whole input; a finished decoder stops
//!    right after the final CRLF, so consumed <= input length and the last consumed byte is LF.
//! 4. The body never exceeds the configured maximum: `out.len() <= body_len() <= max_body`
//!    whenever decoding has not failed, and `out.len() <= max_body` even when it has.
//! 5. Once done, the body length equals `body_len()`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tickhttp::proto::ChunkedDecoder;
use tickhttp::RequestError;

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    body: Vec<u8>,
    consumed: usize,
    done: bool,
    error: Option<RequestError>,
}

/// Feeds `input` to a fresh decoder in pieces ending at `cuts` (then the rest), stopping at
/// the first error or once the body is complete. Each call gets the bytes the previous calls
/// left unconsumed, as the server's read buffer would hold them.
fn decode_in_pieces(
    input: &[u8],
    cuts: &mut dyn Iterator<Item = usize>,
    max_body: u64,
    max_trailer: usize,
) -> Outcome {
    let mut d = ChunkedDecoder::new(max_body, max_trailer);
    let mut body = Vec::new();
    let mut consumed = 0;
    for end in cuts.chain(std::iter::once(input.len())) {
        if d.is_done() {
            break;
        }
        let piece = &input[consumed..end.max(consumed)];
        match d.decode(piece, &mut body) {
            Ok(used) => {
                assert!(
                    used <= piece.len(),
                    "consumed {used} of a {}-byte piece",
                    piece.len()
                );
                if !d.is_done() {
                    assert_eq!(
                        used,
                        piece.len(),
                        "stopped early without finishing the body"
                    );
                }
                consumed += used;
                assert!(
                    body.len() as u64 <= d.body_len(),
                    "more body bytes than declared"
                );
                assert!(
                    d.body_len() <= max_body,
                    "body_len {} over max {max_body}",
                    d.body_len()
                );
            }
            Err(e) => {
                assert!(
                    body.len() as u64 <= max_body,
                    "body of {} bytes over max {max_body}",
                    body.len()
                );
                // How much was consumed before the failing call depends on the split; nothing
                // after an error is used, so it is left out of the comparison.
                return Outcome {
                    body,
                    consumed: 0,
                    done: false,
                    error: Some(e),
                };
            }
        }
    }
    assert!(
        body.len() as u64 <= max_body,
        "body of {} bytes over max {max_body}",
        body.len()
    );
    let done = d.is_done();
    if done {
        assert_eq!(body.len() as u64, d.body_len());
        assert!(
            consumed > 0 && input[consumed - 1] == b'\n',
            "done but did not end on LF"
        );
        // A finished decoder takes nothing more.
        let mut more = Vec::new();
        assert_eq!(d.decode(b"0\r\n\r\n", &mut more), Ok(0));
        assert!(more.is_empty());
    }
    Outcome {
        body,
        consumed,
        done,
        error: None,
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let split_seed = usize::from(u16::from_le_bytes([data[0], data[1]]));
    // Small limits make the 413/431 paths reachable; large ones let long bodies through.
    let max_body = match data[2] {
        b @ 0..=127 => u64::from(b),
        b @ 128..=191 => u64::from(b) * 64,
        b @ 192..=253 => u64::from(b) << 20,
        254 => u64::MAX - 1,
        255 => u64::MAX,
    };
    let max_trailer = match data[3] {
        b @ 0..=127 => usize::from(b),
        b => 16 * 1024 + usize::from(b),
    };
    let input = &data[4..];
    let split = split_seed % (input.len() + 1);

    let whole = decode_in_pieces(input, &mut std::iter::empty(), max_body, max_trailer);
    let two = decode_in_pieces(input, &mut std::iter::once(split), max_body, max_trailer);
    assert_eq!(whole, two, "split at {split} changes the result");
    let bytewise = decode_in_pieces(input, &mut (1..input.len()), max_body, max_trailer);
    assert_eq!(whole, bytewise, "byte-at-a-time feeding changes the result");
});
