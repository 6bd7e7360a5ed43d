//! A strict decoder for chunked request bodies (RFC 9112 section 7.1).
//!
//! Hand-written rather than built on `httparse::parse_chunk_size` because that function accepts
//! bare LF line endings and does not bound extensions or trailers, and a body decoder is where
//! a front proxy and this server must agree byte for byte.

use crate::error::RequestError;

/// Longest chunk-size line extension we skip, per chunk. Real clients send none.
const MAX_EXTENSION: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    SizeWhitespace,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLineLf,
    EndLf,
    Done,
}

/// Decodes a chunked body fed in arbitrary pieces.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    digits: u32,
    remaining: u64,
    total: u64,
    max_body: u64,
    extension_len: usize,
    trailer_len: usize,
    max_trailer: usize,
}

impl ChunkedDecoder {
    /// A decoder that refuses bodies over `max_body` bytes (413) and trailer sections over
    /// `max_trailer` bytes (431).
    pub fn new(max_body: u64, max_trailer: usize) -> Self {
        ChunkedDecoder {
            state: State::Size,
            size: 0,
            digits: 0,
            remaining: 0,
            total: 0,
            max_body,
            extension_len: 0,
            trailer_len: 0,
            max_trailer,
        }
    }

    /// Whether the final chunk and the trailer section have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Body bytes decoded so far.
    pub fn body_len(&self) -> u64 {
        self.total
    }

    /// Decodes from `input`, appending body bytes to `out`. Returns how many input bytes were
    /// consumed; stops right after the end of the body, so what follows is the next request.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, RequestError> {
        const BAD: RequestError = RequestError::Malformed("invalid chunked body");
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Size => match hex_value(b) {
                    Some(v) => {
                        self.digits += 1;
                        if self.digits > 16 {
                            return Err(RequestError::BodyTooLarge);
                        }
                        self.size = (self.size << 4) | u64::from(v);
                    }
                    None if self.digits == 0 => return Err(BAD),
                    None => match b {
                        b'\r' => self.state = State::SizeLf,
                        b';' => self.state = State::Extension,
                        b' ' | b'\t' => self.state = State::SizeWhitespace,
                        _ => return Err(BAD),
                    },
                },
                State::SizeWhitespace => match b {
                    b' ' | b'\t' => {}
                    b';' => self.state = State::Extension,
                    b'\r' => self.state = State::SizeLf,
                    _ => return Err(BAD),
                },
                State::Extension => {
                    self.extension_len += 1;
                    if self.extension_len > MAX_EXTENSION {
                        return Err(BAD);
                    }
                    match b {
                        b'\r' => self.state = State::SizeLf,
                        b'\t' => {}
                        0..=0x1f | 0x7f => return Err(BAD),
                        _ => {}
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(BAD);
                    }
                    self.extension_len = 0;
                    self.digits = 0;
                    if self.size == 0 {
                        self.state = State::TrailerStart;
                    } else {
                        self.total = self
                            .total
                            .checked_add(self.size)
                            .ok_or(RequestError::BodyTooLarge)?;
                        if self.total > self.max_body {
                            return Err(RequestError::BodyTooLarge);
                        }
                        self.remaining = self.size;
                        self.size = 0;
                        self.state = State::Data;
                    }
                }
                State::Data => {
                    let avail = (input.len() - i) as u64;
                    let take = avail.min(self.remaining) as usize;
                    out.extend_from_slice(&input[i..i + take]);
                    self.remaining -= take as u64;
                    i += take;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(BAD);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(BAD);
                    }
                    self.state = State::Size;
                }
                State::TrailerStart => match b {
                    b'\r' => self.state = State::EndLf,
                    _ => {
                        self.trailer_byte(b)?;
                        self.state = State::TrailerLine;
                    }
                },
                State::TrailerLine => match b {
                    b'\r' => self.state = State::TrailerLineLf,
                    _ => self.trailer_byte(b)?,
                },
                State::TrailerLineLf => {
                    if b != b'\n' {
                        return Err(BAD);
                    }
                    self.state = State::TrailerStart;
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(BAD);
                    }
                    self.state = State::Done;
                    return Ok(i + 1);
                }
                State::Done => return Ok(i),
            }
            i += 1;
        }
        Ok(i)
    }

    fn trailer_byte(&mut self, b: u8) -> Result<(), RequestError> {
        self.trailer_len += 1;
        if self.trailer_len > self.max_trailer {
            return Err(RequestError::HeadTooLarge);
        }
        match b {
            b'\t' => Ok(()),
            0..=0x1f | 0x7f => Err(RequestError::Malformed("invalid chunked trailer")),
            _ => Ok(()),
        }
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize), RequestError> {
        let mut d = ChunkedDecoder::new(1 << 20, 1024);
        let mut out = Vec::new();
        let used = d.decode(input, &mut out)?;
        assert!(d.is_done(), "not done");
        Ok((out, used))
    }

    #[test]
    fn decodes_with_extensions_and_trailers() {
        let (body, used) =
            decode_all(b"5;a=b\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT").unwrap();
        assert_eq!(body, b"hello world");
        assert_eq!(used, 38);
    }

    #[test]
    fn rejects_ambiguity() {
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhello\n0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"5;\x01\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
        ] {
            let mut d = ChunkedDecoder::new(1 << 20, 1024);
            assert!(d.decode(bad, &mut Vec::new()).is_err(), "{:?}", bad);
        }
        let mut d = ChunkedDecoder::new(1 << 20, 1024);
        let err = d
            .decode(b"fffffffffffffffff\r\n", &mut Vec::new())
            .unwrap_err();
        assert_eq!(err.status().as_u16(), 413);
        let mut d = ChunkedDecoder::new(4, 1024);
        let err = d.decode(b"5\r\nhello\r\n", &mut Vec::new()).unwrap_err();
        assert_eq!(err.status().as_u16(), 413);
    }

    proptest! {
        #[test]
        fn split_points_do_not_matter(body in proptest::collection::vec(any::<u8>(), 0..300),
                                      chunk in 1usize..40, cut in 0usize..400) {
            let mut wire = Vec::new();
            for part in body.chunks(chunk) {
                wire.extend_from_slice(format!("{:x};e=1\r\n", part.len()).as_bytes());
                wire.extend_from_slice(part);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"0\r\nT: v\r\n\r\n");
            let cut = cut.min(wire.len());
            let mut d = ChunkedDecoder::new(1 << 20, 1024);
            let mut out = Vec::new();
            let a = d.decode(&wire[..cut], &mut out).unwrap();
            prop_assert_eq!(a, cut);
            let b = d.decode(&wire[cut..], &mut out).unwrap();
            prop_assert_eq!(a + b, wire.len());
            prop_assert!(d.is_done());
            prop_assert_eq!(out, body);
        }
    }
}
