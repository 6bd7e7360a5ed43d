//! RFC 6455 conformance in the manner of Autobahn|Testsuite: framing, reserved bits, opcodes,
//! fragmentation, pings, UTF-8, close codes and limits, with hand-built frames on raw sockets
//! and tungstenite as a client. (The full Autobahn run is `scripts/autobahn.sh`.)

mod util;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tickhttp::ws::{WebSocketConfig, WsEvent};
use tickhttp::{Server, ServerConfig};
use tungstenite::Message;
use util::{fill, is_closed, read_response, wait_until};

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONT: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xa;

/// The largest message and frame on `/big`.
const BIG_LIMIT: usize = 4 * 1024 * 1024;

/// An echo server: `/ws` with the default limits (1 MiB messages, 64 KiB frames), `/big`
/// with 4 MiB for both. Records the close codes it reports.
struct Echo {
    addr: SocketAddr,
    closes: Arc<Mutex<Vec<u16>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Echo {
    fn start() -> Echo {
        let mut big = WebSocketConfig::default();
        big.max_message_size = BIG_LIMIT;
        big.max_frame_size = BIG_LIMIT;
        Echo::start_with(ServerConfig::default(), WebSocketConfig::default(), big)
    }

    /// `/ws` with `ws`, `/big` with `big`.
    fn start_with(config: ServerConfig, ws: WebSocketConfig, big: WebSocketConfig) -> Echo {
        let (tx, rx) = mpsc::channel();
        let closes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (closes2, stop2) = (Arc::clone(&closes), Arc::clone(&stop));
        let handle = std::thread::spawn(move || {
            let mut server = Server::bind(config.listen("127.0.0.1:0".parse().unwrap())).unwrap();
            server.attach_websocket("/ws", ws).unwrap();
            server.attach_websocket("/big", big).unwrap();
            tx.send(server.local_addr().unwrap()).unwrap();
            while !stop2.load(Ordering::SeqCst) {
                server.wait(Some(Duration::from_millis(20))).unwrap();
                while let Some(req) = server.get_request() {
                    let _ = server.respond(req.id(), http::Response::new("http\n".into()));
                }
                while let Some(event) = server.next_ws_event() {
                    let _ = match event {
                        WsEvent::Text { id, text } => server.ws_send_text(id, text),
                        WsEvent::Binary { id, data } => server.ws_send_binary(id, data),
                        WsEvent::Close { code, .. } => {
                            closes2.lock().unwrap().push(code);
                            Ok(())
                        }
                        _ => Ok(()),
                    };
                }
            }
        });
        Echo {
            addr: rx.recv().unwrap(),
            closes,
            stop,
            handle: Some(handle),
        }
    }

    fn saw_close(&self, code: u16) -> bool {
        wait_until(Duration::from_secs(3), || {
            self.closes.lock().unwrap().contains(&code)
        })
    }
}

/// A client frame, masked, with the minimal length encoding.
fn frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![(u8::from(fin) << 7) | (rsv << 4) | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// A frame from the server.
#[derive(Debug)]
struct Frame {
    fin: bool,
    rsv: u8,
    opcode: u8,
    payload: Vec<u8>,
}

impl Frame {
    fn close_code(&self) -> Option<u16> {
        (self.opcode == CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// A raw WebSocket client connection.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    fn connect(addr: SocketAddr, path: &str) -> Raw {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let resp = read_response(&mut stream, &mut buf, true).unwrap();
        assert_eq!(resp.status, 101);
        Raw { stream, buf }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next frame, or None at EOF.
    fn read(&mut self) -> Option<Frame> {
        let need = |raw: &mut Raw, n: usize| {
            while raw.buf.len() < n {
                if !fill(&mut raw.stream, &mut raw.buf) {
                    return false;
                }
            }
            true
        };
        if !need(self, 2) {
            return None;
        }
        assert_eq!(self.buf[1] & 0x80, 0, "server frames must not be masked");
        let (len, header) = match self.buf[1] & 0x7f {
            126 => {
                assert!(need(self, 4));
                (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
            }
            127 => {
                assert!(need(self, 10));
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.buf[2..10]);
                (u64::from_be_bytes(b) as usize, 10)
            }
            n => (n as usize, 2),
        };
        assert!(need(self, header + len), "eof inside a frame");
        let f = Frame {
            fin: self.buf[0] & 0x80 != 0,
            rsv: (self.buf[0] >> 4) & 0x7,
            opcode: self.buf[0] & 0x0f,
            payload: self.buf[header..header + len].to_vec(),
        };
        self.buf.drain(..header + len);
        Some(f)
    }

    /// Reads a whole data message (reassembling fragments): (opcode, payload, frames).
    fn read_message(&mut self) -> (u8, Vec<u8>, usize) {
        let first = self.read().expect("eof before a message");
        assert!(first.opcode == TEXT || first.opcode == BINARY, "{first:?}");
        let (opcode, mut payload, mut frames, mut fin) =
            (first.opcode, first.payload, 1, first.fin);
        while !fin {
            let f = self.read().expect("eof inside a message");
            assert_eq!(f.opcode, CONT);
            payload.extend_from_slice(&f.payload);
            frames += 1;
            fin = f.fin;
        }
        (opcode, payload, frames)
    }

    /// Reads frames until the server's close frame; returns its code (None for an empty
    /// close payload) and checks that the server then closes TCP.
    fn expect_close(&mut self) -> Option<u16> {
        loop {
            let f = self.read().expect("eof before the close frame");
            assert_eq!(f.rsv, 0);
            if f.opcode == CLOSE {
                assert!(
                    is_closed(&mut self.stream),
                    "TCP left open after the close frame"
                );
                return f.close_code();
            }
        }
    }
}

/// Sends `bytes` on a fresh `/ws` connection and returns the close code the server answers.
fn close_code_after(s: &Echo, bytes: &[u8]) -> Option<u16> {
    let mut c = Raw::connect(s.addr, "/ws");
    c.send(bytes);
    c.expect_close()
}

#[test]
fn text_and_binary_echo_including_empty_and_all_byte_values() {
    let s = Echo::start();
    let mut c = Raw::connect(s.addr, "/ws");
    c.send(&frame(true, 0, TEXT, "Hello, ünïcødé ✓ 𝄞".as_bytes()));
    assert_eq!(
        c.read_message(),
        (TEXT, "Hello, ünïcødé ✓ 𝄞".as_bytes().to_vec(), 1)
    );
    c.send(&frame(true, 0, TEXT, b""));
    assert_eq!(c.read_message(), (TEXT, vec![], 1));
    c.send(&frame(true, 0, BINARY, b""));
    assert_eq!(c.read_message(), (BINARY, vec![], 1));
    let all: Vec<u8> = (0..=255).collect();
    c.send(&frame(true, 0, BINARY, &all));
    assert_eq!(c.read_message(), (BINARY, all, 1));
    // 125, 126 and 65535 bytes: the edges of the 7- and 16-bit length encodings.
    for n in [125, 126, 65535] {
        c.send(&frame(true, 0, BINARY, &vec![0xab; n]));
        assert_eq!(c.read_message(), (BINARY, vec![0xab; n], 1));
    }
}

#[test]
fn frames_with_a_64_bit_length_and_a_1_mib_echo() {
    let s = Echo::start();
    // 65536 bytes, the smallest payload sent with a 64-bit length: exactly the default
    // max_frame_size, so accepted.
    let mut c = Raw::connect(s.addr, "/ws");
    let payload: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    let f = frame(true, 0, BINARY, &payload);
    assert_eq!(f[1] & 0x7f, 127);
    c.send(&f);
    assert_eq!(c.read_message(), (BINARY, payload, 1));

    // 1 MiB, exactly the default max_message_size, in 16 fragments of 64 KiB: echoed whole,
    // and sent back in max_frame_size fragments.
    let big: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    for (i, chunk) in big.chunks(65536).enumerate() {
        let opcode = if i == 0 { BINARY } else { CONT };
        c.send(&frame(i == 15, 0, opcode, chunk));
    }
    let (opcode, echoed, frames) = c.read_message();
    assert_eq!(opcode, BINARY);
    assert!(echoed == big, "1 MiB echo differs");
    assert_eq!(frames, 16);

    // One byte more closes with 1009, even in frames that are each within the limit.
    for (i, chunk) in big.chunks(65536).enumerate() {
        c.send(&frame(false, 0, if i == 0 { BINARY } else { CONT }, chunk));
    }
    c.send(&frame(true, 0, CONT, b"!"));
    assert_eq!(c.expect_close(), Some(1009));
    assert!(s.saw_close(1009));

    // With tungstenite as the client: 1 MiB in one frame (a 64-bit length) on /big.
    let stream = TcpStream::connect(s.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (mut ws, _) = tungstenite::client(format!("ws://{}/big", s.addr), stream).unwrap();
    let text = "é".repeat(512 * 1024);
    ws.send(Message::text(text.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text(text));
    ws.send(Message::binary(big.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(big));
    ws.close(None).unwrap();
    while ws.read().is_ok() {}
}

#[test]
fn a_frame_over_max_frame_size_closes_with_1009() {
    let s = Echo::start();
    assert_eq!(
        close_code_after(&s, &frame(true, 0, BINARY, &vec![0; 65537])),
        Some(1009)
    );
    // Only the header of an oversized frame: refused before its payload arrives.
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 40).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    assert_eq!(close_code_after(&s, &header), Some(1009));
}

#[test]
fn fragmented_text_with_a_ping_in_between() {
    let s = Echo::start();
    let mut c = Raw::connect(s.addr, "/ws");
    // "Hällo wörld" split in three, the first split inside a two-byte UTF-8 sequence.
    let text = "Hällo wörld".as_bytes();
    c.send(&frame(false, 0, TEXT, &text[..2]));
    c.send(&frame(true, 0, PING, b"in between"));
    c.send(&frame(false, 0, CONT, &text[2..6]));
    c.send(&frame(true, 0, CONT, &text[6..]));
    // The pong comes first (control frames may be injected in a fragmented message)...
    let pong = c.read().unwrap();
    assert_eq!(
        (pong.opcode, pong.fin, pong.payload.as_slice()),
        (PONG, true, &b"in between"[..])
    );
    // ...then the whole message.
    assert_eq!(c.read_message(), (TEXT, text.to_vec(), 1));
    // Fragments of zero length are allowed too.
    c.send(&frame(false, 0, BINARY, b""));
    c.send(&frame(false, 0, CONT, b"ab"));
    c.send(&frame(true, 0, CONT, b""));
    assert_eq!(c.read_message(), (BINARY, b"ab".to_vec(), 1));
}

#[test]
fn pings_are_answered_with_their_payload_and_unsolicited_pongs_ignored() {
    let s = Echo::start();
    let mut c = Raw::connect(s.addr, "/ws");
    c.send(&frame(true, 0, PING, b""));
    let pong = c.read().unwrap();
    assert_eq!((pong.opcode, pong.payload.len()), (PONG, 0));
    let payload: Vec<u8> = (0..125).collect();
    c.send(&frame(true, 0, PING, &payload));
    assert_eq!(c.read().unwrap().payload, payload);
    c.send(&frame(true, 0, PONG, b"unsolicited"));
    c.send(&frame(true, 0, TEXT, b"after pong"));
    assert_eq!(c.read_message(), (TEXT, b"after pong".to_vec(), 1));
}

#[test]
fn fragmentation_errors_close_with_1002() {
    let s = Echo::start();
    // A continuation frame without a message to continue.
    assert_eq!(
        close_code_after(&s, &frame(true, 0, CONT, b"orphan")),
        Some(1002)
    );
    assert_eq!(
        close_code_after(&s, &frame(false, 0, CONT, b"orphan")),
        Some(1002)
    );
    // A new data frame inside a fragmented message.
    let mut wire = frame(false, 0, TEXT, b"start");
    wire.extend(frame(true, 0, TEXT, b"not a continuation"));
    assert_eq!(close_code_after(&s, &wire), Some(1002));
    let mut wire = frame(false, 0, BINARY, b"start");
    wire.extend(frame(false, 0, BINARY, b"again"));
    assert_eq!(close_code_after(&s, &wire), Some(1002));
    assert!(s.saw_close(1002));
}

#[test]
fn control_frame_errors_close_with_1002() {
    let s = Echo::start();
    // Control frames carry at most 125 bytes...
    assert_eq!(
        close_code_after(&s, &frame(true, 0, PING, &[0; 126])),
        Some(1002)
    );
    assert_eq!(
        close_code_after(&s, &frame(true, 0, PONG, &[0; 126])),
        Some(1002)
    );
    // ...and cannot be fragmented.
    assert_eq!(
        close_code_after(&s, &frame(false, 0, PING, b"a")),
        Some(1002)
    );
    let mut wire = frame(false, 0, PING, b"a");
    wire.extend(frame(true, 0, CONT, b"b"));
    assert_eq!(close_code_after(&s, &wire), Some(1002));
}

#[test]
fn reserved_opcodes_and_bits_close_with_1002() {
    let s = Echo::start();
    for opcode in [0x3, 0x4, 0x5, 0x6, 0x7, 0xb, 0xc, 0xd, 0xe, 0xf] {
        assert_eq!(
            close_code_after(&s, &frame(true, 0, opcode, b"")),
            Some(1002),
            "opcode {opcode:#x}"
        );
    }
    // An unknown opcode after a valid message: the message is still echoed first.
    let mut c = Raw::connect(s.addr, "/ws");
    c.send(&frame(true, 0, TEXT, b"valid"));
    assert_eq!(c.read_message(), (TEXT, b"valid".to_vec(), 1));
    c.send(&frame(true, 0, 0x5, b"x"));
    assert_eq!(c.expect_close(), Some(1002));
    // RSV1 (no extension negotiated), RSV2, RSV3, on data and control frames.
    for rsv in [1, 2, 4, 7] {
        assert_eq!(
            close_code_after(&s, &frame(true, rsv, TEXT, b"x")),
            Some(1002),
            "rsv {rsv}"
        );
        assert_eq!(
            close_code_after(&s, &frame(true, rsv, PING, b"")),
            Some(1002),
            "rsv {rsv}"
        );
    }
}

#[test]
fn invalid_utf8_closes_with_1007() {
    let s = Echo::start();
    for bad in [
        &[0xff][..],
        &[0xc0, 0xaf],             // overlong '/'
        &[0xed, 0xa0, 0x80],       // a UTF-16 surrogate
        &[0xf4, 0x90, 0x80, 0x80], // above U+10FFFF
        &[b'a', 0xe2, 0x82],       // truncated at the end of the message
    ] {
        assert_eq!(
            close_code_after(&s, &frame(true, 0, TEXT, bad)),
            Some(1007),
            "{bad:x?}"
        );
    }
    // Invalid across fragments.
    let mut wire = frame(false, 0, TEXT, b"ok so far ");
    wire.extend(frame(
        true,
        0,
        CONT,
        &[0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xed, 0xa0, 0x80],
    ));
    assert_eq!(close_code_after(&s, &wire), Some(1007));
    assert!(s.saw_close(1007));
}

#[test]
fn close_handshake_codes_and_reasons() {
    let s = Echo::start();
    // A normal close is answered with the same code, then TCP closes.
    for code in [1000, 1001, 1003, 1007, 1011, 3000, 3999, 4000, 4999] {
        let got = close_code_after(&s, &frame(true, 0, CLOSE, &close_payload(code, b"bye")));
        assert_eq!(got, Some(code), "close {code}");
    }
    assert!(s.saw_close(4999));
    // An empty close is answered (with an empty close or 1000).
    let got = close_code_after(&s, &frame(true, 0, CLOSE, b""));
    assert!(matches!(got, None | Some(1000)), "{got:?}");
    // Codes that must not appear on the wire, or are unassigned, get 1002.
    for code in [
        0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
    ] {
        let got = close_code_after(&s, &frame(true, 0, CLOSE, &close_payload(code, b"")));
        assert_eq!(got, Some(1002), "close {code}");
    }
    // A one-byte close payload is malformed.
    assert_eq!(
        close_code_after(&s, &frame(true, 0, CLOSE, &[0x03])),
        Some(1002)
    );
    // A reason that is not UTF-8.
    let got = close_code_after(
        &s,
        &frame(true, 0, CLOSE, &close_payload(1000, &[0xce, 0xba, 0xff])),
    );
    assert_eq!(got, Some(1007));
    // A reason of the longest allowed size (123 bytes).
    let reason = "r".repeat(123);
    let got = close_code_after(
        &s,
        &frame(true, 0, CLOSE, &close_payload(1000, reason.as_bytes())),
    );
    assert_eq!(got, Some(1000));
}

#[test]
fn nothing_is_echoed_after_the_close_frame() {
    let s = Echo::start();
    let mut c = Raw::connect(s.addr, "/ws");
    let mut wire = frame(true, 0, TEXT, b"before");
    wire.extend(frame(true, 0, CLOSE, &close_payload(1000, b"")));
    wire.extend(frame(true, 0, TEXT, b"after"));
    wire.extend(frame(true, 0, PING, b"after"));
    c.send(&wire);
    let mut seen = Vec::new();
    loop {
        let f = c.read().expect("eof before the close frame");
        if f.opcode == CLOSE {
            assert_eq!(f.close_code(), Some(1000));
            break;
        }
        seen.push((f.opcode, f.payload));
    }
    assert!(is_closed(&mut c.stream));
    // The message before the close may or may not have been echoed before the server's
    // close frame; nothing after the close frame is.
    assert!(
        seen.iter().all(|(op, p)| *op == TEXT && p == b"before"),
        "{seen:?}"
    );
}

#[test]
fn tungstenite_client_round_trips_many_messages() {
    let s = Echo::start();
    let stream = TcpStream::connect(s.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (mut ws, _) = tungstenite::client(format!("ws://{}/ws", s.addr), stream).unwrap();
    // Pipelined: 200 messages written before any echo is read.
    for i in 0..200 {
        if i % 2 == 0 {
            ws.write(Message::text(format!("message {i}"))).unwrap();
        } else {
            ws.write(Message::binary(vec![i as u8; i])).unwrap();
        }
    }
    ws.flush().unwrap();
    for i in 0..200 {
        let expected = if i % 2 == 0 {
            Message::text(format!("message {i}"))
        } else {
            Message::binary(vec![i as u8; i])
        };
        assert_eq!(ws.read().unwrap(), expected);
    }
    ws.send(Message::Ping(b"p".to_vec().into())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Pong(b"p".to_vec().into()));
    ws.close(None).unwrap();
    loop {
        match ws.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(s.saw_close(1005));
}

/// A connection silent for longer than the server's write_timeout still gets its ping, and
/// stays open while it answers.
#[test]
fn a_ping_after_a_silence_longer_than_write_timeout_is_delivered() {
    let mut ws = WebSocketConfig::default();
    ws.ping_interval = Duration::from_millis(600);
    ws.pong_timeout = Duration::from_secs(2);
    let config = ServerConfig::default().write_timeout(Duration::from_millis(300));
    let s = Echo::start_with(config, ws, WebSocketConfig::default());
    let stream = TcpStream::connect(s.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let (mut c, _) = tungstenite::client(format!("ws://{}/ws", s.addr), stream).unwrap();
    let start = std::time::Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_millis(2000) {
        match c.read() {
            Ok(Message::Ping(_)) => pings += 1, // tungstenite queues the pong
            Ok(_) => {}
            Err(tungstenite::Error::Io(_)) => {}
            Err(e) => panic!("after {:?}, {pings} pings: {e}", start.elapsed()),
        }
    }
    assert!(pings >= 2, "pings: {pings}");
    assert!(s.closes.lock().unwrap().is_empty());
}
