//! Per-connection state: buffers, the request being read, and the ordered response slots.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

use http::Version;
use mio::net::TcpStream;

use crate::body::StreamShared;
use crate::proto::head::HeadCache;
use crate::proto::{ChunkedDecoder, Head};
use crate::task::Response;

/// Initial read buffer; grows (doubling) only for large heads or fast uploads.
const READ_CHUNK: usize = 16 * 1024;

/// A growable input buffer: `data[start..end]` is unparsed input.
pub(crate) struct InBuf {
    buf: Vec<u8>,
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// The last read returned less than the free space: the socket was drained.
    pub(crate) last_read_short: bool,
}

impl InBuf {
    pub(crate) fn new() -> InBuf {
        InBuf {
            buf: Vec::new(),
            start: 0,
            end: 0,
            last_read_short: false,
        }
    }

    pub(crate) fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Reads once from `src` into free space, making room first. `limit` caps how much unparsed
    /// input may accumulate.
    pub(crate) fn read_from(&mut self, src: &mut impl Read, limit: usize) -> io::Result<usize> {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let grow = self.buf.len().max(READ_CHUNK).min(limit.max(READ_CHUNK));
                self.buf.resize(self.buf.len() + grow, 0);
            }
        }
        let space = self.buf.len() - self.end;
        let n = src.read(&mut self.buf[self.end..])?;
        self.end += n;
        self.last_read_short = n < space;
        Ok(n)
    }

    /// Frees the buffer entirely when it holds nothing (idle WebSocket connections).
    pub(crate) fn shrink_if_idle_to_zero(&mut self) {
        if self.is_empty() {
            self.buf = Vec::new();
        }
    }

    /// Frees the memory of an idle connection's buffer once it grew past the initial size.
    pub(crate) fn shrink_if_idle(&mut self) {
        if self.is_empty() && self.buf.len() > READ_CHUNK {
            self.buf = Vec::new();
        }
    }
}

/// The body being accumulated for the request whose head was parsed.
pub(crate) enum BodyAcc {
    Memory(Vec<u8>),
    File {
        file: tempfile::NamedTempFile,
        len: u64,
    },
}

pub(crate) enum BodyFraming {
    Length(u64),
    Chunked(ChunkedDecoder),
}

pub(crate) enum Phase {
    /// Waiting for (more of) a request head.
    Head,
    /// Reading the body of `head`.
    Body {
        head: Box<Head>,
        framing: BodyFraming,
        acc: BodyAcc,
    },
    /// Nothing more is read from this connection (an error response is pending, or it closes).
    Done,
    /// Upgraded: bytes are WebSocket frames.
    WebSocket(Box<crate::ws::WsConn>),
}

/// A WebSocket handshake accepted, waiting for its 101 to reach the front of the queue.
pub(crate) struct PendingUpgrade {
    pub(crate) route: usize,
    pub(crate) protocol: Option<String>,
    pub(crate) uri: http::Uri,
    pub(crate) headers: http::HeaderMap,
}

/// One request's place in the connection's response order.
pub(crate) struct Slot {
    pub(crate) seq: u64,
    pub(crate) head_request: bool,
    pub(crate) version: Version,
    pub(crate) keep_alive: bool,
    pub(crate) handed_out: bool,
    pub(crate) received: Instant,
    pub(crate) response: Option<Response>,
    pub(crate) upgrade: Option<Box<PendingUpgrade>>,
    /// The request's method and target for the access log; `None` when it is off.
    pub(crate) access: Option<Box<(http::Method, String)>>,
}

/// A body being written after its head.
pub(crate) enum Active {
    File {
        file: File,
        offset: u64,
        remaining: u64,
    },
    Stream {
        shared: Arc<StreamShared>,
        chunked: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closing {
    Open,
    /// Close once every queued response is written.
    AfterFlush,
    /// Write side shut; discarding input until EOF or the deadline, so the client reads our
    /// last response instead of a reset.
    Lingering(Instant),
}

pub(crate) struct Conn {
    pub(crate) gen: u64,
    pub(crate) sock: TcpStream,
    pub(crate) peer: SocketAddr,
    pub(crate) input: InBuf,
    /// How far into `input.data()` the blank-line search has looked.
    pub(crate) head_scanned: usize,
    /// The previous request's target and header fields, reused when the next one repeats them
    /// (boxed: an upgraded or idle connection keeps only the pointer).
    pub(crate) head_cache: Option<Box<HeadCache>>,
    pub(crate) head_started: Option<Instant>,
    pub(crate) phase: Phase,
    pub(crate) slots: VecDeque<Slot>,
    pub(crate) front_seq: u64,
    pub(crate) next_seq: u64,
    pub(crate) out: Vec<u8>,
    pub(crate) out_pos: usize,
    pub(crate) active: Option<Active>,
    pub(crate) served: u32,
    pub(crate) peer_eof: bool,
    pub(crate) closing: Closing,
    pub(crate) read_paused: bool,
    pub(crate) last_read: Instant,
    pub(crate) last_write: Instant,
    pub(crate) heap_deadline: Option<Instant>,
    pub(crate) dirty: bool,
    pub(crate) tls: Option<Box<rustls::ServerConnection>>,
    pub(crate) accepted: Instant,
    /// Closing follows an error: drain input before closing so the client reads our answer.
    pub(crate) must_linger: bool,
    /// A trusted proxy's connection whose PROXY header has not been read yet.
    pub(crate) proxy_pending: bool,
}

/// What one attempt to read request bytes gave.
pub(crate) enum Filled {
    Data(usize),
    Eof,
    WouldBlock,
}

impl Conn {
    pub(crate) fn new(gen: u64, sock: TcpStream, peer: SocketAddr, now: Instant) -> Conn {
        Conn {
            gen,
            sock,
            peer,
            input: InBuf::new(),
            head_scanned: 0,
            head_cache: None,
            head_started: None,
            phase: Phase::Head,
            slots: VecDeque::new(),
            front_seq: 0,
            next_seq: 0,
            out: Vec::new(),
            out_pos: 0,
            proxy_pending: false,
            active: None,
            served: 0,
            peer_eof: false,
            closing: Closing::Open,
            read_paused: false,
            last_read: now,
            last_write: now,
            heap_deadline: None,
            dirty: false,
            tls: None,
            accepted: now,
            must_linger: false,
        }
    }

    /// Reads request bytes into `input`: straight from the socket, or through TLS.
    pub(crate) fn fill_input(&mut self, limit: usize) -> io::Result<Filled> {
        let Some(tls) = self.tls.as_mut() else {
            return match self.input.read_from(&mut self.sock, limit) {
                Ok(0) => Ok(Filled::Eof),
                Ok(n) => Ok(Filled::Data(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Filled::WouldBlock),
                Err(e) => Err(e),
            };
        };
        loop {
            match self.input.read_from(&mut tls.reader(), limit) {
                Ok(0) => return Ok(Filled::Eof), // close_notify
                Ok(n) => return Ok(Filled::Data(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Filled::Eof),
                Err(e) => return Err(e),
            }
            match tls.read_tls(&mut self.sock) {
                Ok(0) => return Ok(Filled::Eof),
                Ok(_) => {
                    if let Err(e) = tls.process_new_packets() {
                        // Send the alert, then fail the connection.
                        let _ = tls.write_tls(&mut self.sock);
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                    flush_tls(tls, &mut self.sock)?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Filled::WouldBlock),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether a TLS handshake is still in progress.
    pub(crate) fn handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// Requests parsed and not yet fully written.
    pub(crate) fn in_flight(&self) -> usize {
        self.slots.len() + usize::from(self.active.is_some())
    }

    pub(crate) fn has_output(&self) -> bool {
        self.out_pos < self.out.len() || self.active.is_some()
    }

    /// Idle: between requests, nothing buffered, nothing owed.
    pub(crate) fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Head)
            && self.input.is_empty()
            && self.slots.is_empty()
            && !self.has_output()
    }

    /// Writes buffered output until done or the socket is full. `Ok(true)` when all written.
    pub(crate) fn write_out(&mut self, now: Instant) -> io::Result<bool> {
        if let Some(tls) = self.tls.as_mut() {
            loop {
                while self.out_pos < self.out.len() {
                    let n = tls.writer().write(&self.out[self.out_pos..])?;
                    if n == 0 {
                        break; // rustls' buffer is full; write records first
                    }
                    self.out_pos += n;
                }
                let before = self.out_pos;
                if !flush_tls(tls, &mut self.sock)? {
                    if before > 0 {
                        self.last_write = now;
                    }
                    return Ok(false);
                }
                self.last_write = now;
                if self.out_pos >= self.out.len() {
                    break;
                }
            }
            self.out.clear();
            self.out_pos = 0;
            return Ok(true);
        }
        while self.out_pos < self.out.len() {
            match self.sock.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out_pos += n;
                    self.last_write = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        if self.out.capacity() > 256 * 1024 {
            self.out = Vec::new();
        }
        Ok(true)
    }
}

/// Writes TLS records until rustls has none left (`Ok(true)`) or the socket is full.
pub(crate) fn flush_tls(
    tls: &mut rustls::ServerConnection,
    sock: &mut TcpStream,
) -> io::Result<bool> {
    while tls.wants_write() {
        match tls.write_tls(sock) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Appends up to `max` bytes of a file region to `out` (files cannot be sent with sendfile
/// through TLS: the bytes must be encrypted).
pub(crate) fn read_file_chunk(
    file: &File,
    offset: &mut u64,
    remaining: &mut u64,
    out: &mut Vec<u8>,
    max: usize,
) -> io::Result<()> {
    let want = (*remaining).min(max as u64) as usize;
    let start = out.len();
    out.resize(start + want, 0);
    let mut filled = 0;
    while filled < want {
        match file.read_at(&mut out[start + filled..], *offset + filled as u64) {
            Ok(0) => {
                out.truncate(start + filled);
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                out.truncate(start);
                return Err(e);
            }
        }
    }
    *offset += want as u64;
    *remaining -= want as u64;
    Ok(())
}
