//! Per-connection state: buffers, the request being read, and the ordered response slots.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::Version;
use mio::net::TcpStream;

use crate::body::StreamShared;
use crate::proto::{ChunkedDecoder, Head};
use crate::task::Response;

/// Initial read buffer; grows (doubling) only for large heads or fast uploads.
const READ_CHUNK: usize = 16 * 1024;

/// A growable input buffer: `data[start..end]` is unparsed input.
pub(crate) struct InBuf {
    buf: Vec<u8>,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl InBuf {
    pub(crate) fn new() -> InBuf {
        InBuf {
            buf: Vec::new(),
            start: 0,
            end: 0,
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
        let n = src.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
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
}

impl Conn {
    pub(crate) fn new(gen: u64, sock: TcpStream, peer: SocketAddr, now: Instant) -> Conn {
        Conn {
            gen,
            sock,
            peer,
            input: InBuf::new(),
            head_scanned: 0,
            head_started: None,
            phase: Phase::Head,
            slots: VecDeque::new(),
            front_seq: 0,
            next_seq: 0,
            out: Vec::new(),
            out_pos: 0,
            active: None,
            served: 0,
            peer_eof: false,
            closing: Closing::Open,
            read_paused: false,
            last_read: now,
            last_write: now,
            heap_deadline: None,
            dirty: false,
        }
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
