//! Opens many WebSocket connections and keeps them idle (answering the server's pings), for
//! `bench/ws_idle.sh`. One thread, non-blocking sockets.
//!
//! ```text
//! ws_idle_client ADDR PATH COUNT HOLD_SECS [CONCURRENCY]
//! ws_idle_client 127.0.0.1:8080 /ws 10000 30
//! ```
//!
//! Prints `opened N in S s` once every connection is open, then holds them for HOLD_SECS,
//! then sends one text message on each and counts the echoes. Exits 1 if a connection
//! failed or closed, or an echo is missing.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

const HANDSHAKE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[derive(PartialEq)]
enum State {
    Connecting,
    Handshaking,
    Open,
    Closed,
}

struct Conn {
    sock: TcpStream,
    state: State,
    input: Vec<u8>,
    output: Vec<u8>,
    echoes: usize,
}

/// A masked client frame (FIN set).
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [1, 2, 3, 4];
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

struct Stats {
    pings: usize,
    /// Close frames from the server, by code.
    closes: std::collections::BTreeMap<u16, usize>,
    /// Connections that ended without a close frame.
    eofs: usize,
}

impl Conn {
    fn flush(&mut self) -> io::Result<()> {
        while !self.output.is_empty() {
            match self.sock.write(&self.output) {
                Ok(n) => drain(&mut self.output, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads what is there and handles it; returns false when the connection ended.
    fn on_readable(&mut self, stats: &mut Stats) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match self.sock.read(&mut buf) {
                Ok(0) => {
                    stats.eofs += 1;
                    return false;
                }
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    stats.eofs += 1;
                    return false;
                }
            }
        }
        if self.state == State::Handshaking {
            let Some(end) = self.input.windows(4).position(|w| w == b"\r\n\r\n") else {
                return true;
            };
            if !self.input.starts_with(b"HTTP/1.1 101") {
                return false;
            }
            drain(&mut self.input, end + 4);
            self.state = State::Open;
        }
        // Server frames: unmasked, control payloads under 126 bytes; echoes are short too.
        while self.input.len() >= 2 {
            let (opcode, len) = (self.input[0] & 0x0f, (self.input[1] & 0x7f) as usize);
            if len >= 126 || self.input.len() < 2 + len {
                break;
            }
            let payload = self.input[2..2 + len].to_vec();
            drain(&mut self.input, 2 + len);
            match opcode {
                0x9 => {
                    stats.pings += 1;
                    self.output.extend(frame(0xa, &payload));
                }
                0x8 => {
                    let code = match payload[..] {
                        [a, b, ..] => u16::from_be_bytes([a, b]),
                        _ => 1005,
                    };
                    *stats.closes.entry(code).or_default() += 1;
                    return false;
                }
                0x1 | 0x2 => self.echoes += 1,
                _ => {}
            }
        }
        self.flush().is_ok()
    }
}

fn drain(v: &mut Vec<u8>, n: usize) {
    v.drain(..n);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: ws_idle_client ADDR PATH COUNT HOLD_SECS [CONCURRENCY]");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[1].parse()?;
    let request = format!("GET {} HTTP/1.1\r\nHost: {addr}\r\n{HANDSHAKE}", args[2]);
    let count: usize = args[3].parse()?;
    let hold = Duration::from_secs(args[4].parse()?);
    let concurrency: usize = args.get(5).map_or(Ok(256), |c| c.parse())?;

    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut conns: Vec<Conn> = Vec::with_capacity(count);
    let mut stats = Stats {
        pings: 0,
        closes: Default::default(),
        eofs: 0,
    };
    let (mut open, mut failed) = (0usize, 0usize);
    let started = Instant::now();

    // Phase 1: open every connection, at most `concurrency` handshakes at a time.
    while open + failed < count {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "opening took too long"
        );
        while conns.len() < count && conns.len() - open - failed < concurrency {
            let mut sock = TcpStream::connect(addr)?;
            let token = Token(conns.len());
            poll.registry()
                .register(&mut sock, token, Interest::READABLE | Interest::WRITABLE)?;
            conns.push(Conn {
                sock,
                state: State::Connecting,
                input: Vec::new(),
                output: Vec::new(),
                echoes: 0,
            });
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))?;
        for event in events.iter() {
            let c = &mut conns[event.token().0];
            if c.state == State::Connecting && event.is_writable() {
                if c.sock.take_error()?.is_some() || c.sock.peer_addr().is_err() {
                    c.state = State::Closed;
                    failed += 1;
                    continue;
                }
                c.output.extend_from_slice(request.as_bytes());
                c.state = State::Handshaking;
                if c.flush().is_err() {
                    c.state = State::Closed;
                    failed += 1;
                    continue;
                }
            }
            if event.is_readable() && c.state == State::Handshaking {
                if !c.on_readable(&mut stats) {
                    c.state = State::Closed;
                    failed += 1;
                } else if c.state == State::Open {
                    open += 1;
                }
            }
        }
    }
    let took = started.elapsed();
    println!(
        "opened {open} in {:.3} s ({failed} failed)",
        took.as_secs_f64()
    );
    io::stdout().flush()?;

    // Phase 2: idle, answering pings.
    let idle_start = Instant::now();
    let mut dropped = 0;
    while idle_start.elapsed() < hold {
        poll.poll(&mut events, Some(hold.saturating_sub(idle_start.elapsed())))?;
        for event in events.iter() {
            let c = &mut conns[event.token().0];
            if c.state == State::Open
                && (event.is_readable() && !c.on_readable(&mut stats) || c.flush().is_err())
            {
                c.state = State::Closed;
                dropped += 1;
            }
        }
    }
    println!(
        "idle {} s: {} pings answered, {dropped} connections ended (close frames by code: {:?}, \
         without a close frame: {})",
        hold.as_secs(),
        stats.pings,
        stats.closes,
        stats.eofs
    );

    // Phase 3: every connection still answers.
    let check_start = Instant::now();
    for c in conns.iter_mut().filter(|c| c.state == State::Open) {
        c.output.extend(frame(0x1, b"still there?"));
        let _ = c.flush();
    }
    let alive = |conns: &[Conn]| conns.iter().filter(|c| c.state == State::Open).count();
    let echoed = |conns: &[Conn]| conns.iter().filter(|c| c.echoes > 0).count();
    while echoed(&conns) < alive(&conns) && check_start.elapsed() < Duration::from_secs(30) {
        poll.poll(&mut events, Some(Duration::from_millis(100)))?;
        for event in events.iter() {
            let c = &mut conns[event.token().0];
            if c.state == State::Open && event.is_readable() && !c.on_readable(&mut stats) {
                c.state = State::Closed;
                dropped += 1;
            }
        }
    }
    println!(
        "echo check: {}/{count} answered in {:.3} s",
        echoed(&conns),
        check_start.elapsed().as_secs_f64()
    );
    if failed > 0 || dropped > 0 || echoed(&conns) < count {
        std::process::exit(1);
    }
    Ok(())
}
