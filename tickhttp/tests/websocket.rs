//! WebSocket: handshake validation, echo, events that always fire, limits and close codes,
//! rooms and broadcast — with tungstenite as an independent client over real sockets.

mod util;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tickhttp::ws::{WebSocketConfig, WsEvent};
use tickhttp::{Server, ServerConfig};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;
use util::*;

/// An echo server on /ws (and /chat with rooms) that records every event it saw.
struct WsServer {
    addr: SocketAddr,
    events: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for WsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn ws_server(ws_config: WebSocketConfig, shutdown_after: Option<Duration>) -> WsServer {
    let (tx, rx) = mpsc::channel();
    let events = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (events2, stop2) = (Arc::clone(&events), Arc::clone(&stop));
    let handle = std::thread::spawn(move || {
        let config = ServerConfig::default().listen("127.0.0.1:0".parse().unwrap());
        let mut server = Server::bind(config).unwrap();
        server.attach_websocket("/ws", ws_config.clone()).unwrap();
        server.attach_websocket("/chat", ws_config).unwrap();
        tx.send(server.local_addr().unwrap()).unwrap();
        let started = std::time::Instant::now();
        while !stop2.load(Ordering::SeqCst) && (server.is_running()) {
            if let Some(after) = shutdown_after {
                if started.elapsed() > after && !server.is_shutting_down() {
                    server.shutdown(Duration::from_secs(2));
                }
            }
            server.wait(Some(Duration::from_millis(20))).unwrap();
            while let Some(req) = server.get_request() {
                server
                    .respond(req.id(), http::Response::new("plain http\n".into()))
                    .unwrap();
            }
            while let Some(ev) = server.next_ws_event() {
                let line = match &ev {
                    WsEvent::Connect { path, protocol, .. } => {
                        format!("connect {path} {protocol:?}")
                    }
                    WsEvent::Text { text, .. } => format!("text {}", text.len()),
                    WsEvent::Binary { data, .. } => format!("binary {}", data.len()),
                    WsEvent::Pong { .. } => "pong".to_string(),
                    WsEvent::Close { code, .. } => format!("close {code}"),
                    WsEvent::Error { .. } => "error".to_string(),
                    _ => "other".to_string(),
                };
                events2.lock().unwrap().push(line);
                match ev {
                    WsEvent::Connect { id, path, .. } if path == "/chat" => {
                        server.ws_join(id, "lobby").unwrap();
                    }
                    WsEvent::Text { id, text } => {
                        if let Some(rest) = text.strip_prefix("say ") {
                            server.ws_broadcast_room("lobby", rest.to_string(), Some(id));
                        } else if text == "close-me" {
                            server.ws_close(id, 4000, "asked").unwrap();
                        } else if text == "json" {
                            server
                                .ws_send_json(id, &serde_json::json!({"ok": true}))
                                .unwrap();
                        } else if text == "big" {
                            server.ws_send_text(id, "x".repeat(200_000)).unwrap();
                        } else {
                            let _ = server.ws_send_text(id, text);
                        }
                    }
                    WsEvent::Binary { id, data } => {
                        let _ = server.ws_send_binary(id, data);
                    }
                    _ => {}
                }
            }
        }
    });
    let addr = rx.recv().unwrap();
    WsServer {
        addr,
        events,
        stop,
        handle: Some(handle),
    }
}

type Client = tungstenite::WebSocket<TcpStream>;

fn client(addr: SocketAddr, path: &str) -> Client {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (ws, resp) = tungstenite::client(format!("ws://{addr}{path}"), stream).unwrap();
    assert_eq!(resp.status(), 101);
    ws
}

fn events_of(s: &WsServer) -> Vec<String> {
    s.events.lock().unwrap().clone()
}

#[test]
fn echoes_text_binary_and_json() {
    let s = ws_server(WebSocketConfig::default(), None);
    let mut c = client(s.addr, "/ws");
    c.send(Message::text("hello")).unwrap();
    assert_eq!(c.read().unwrap(), Message::text("hello"));
    c.send(Message::binary(vec![0u8, 1, 2, 255])).unwrap();
    assert_eq!(c.read().unwrap(), Message::binary(vec![0u8, 1, 2, 255]));
    c.send(Message::text("json")).unwrap();
    assert_eq!(c.read().unwrap(), Message::text(r#"{"ok":true}"#));
    // A message larger than max_frame_size goes out in fragments and arrives whole.
    c.send(Message::text("big")).unwrap();
    assert_eq!(c.read().unwrap().len(), 200_000);
    c.close(None).unwrap();
    while c.read().is_ok() {}
    assert!(wait_until(Duration::from_secs(2), || events_of(&s)
        .contains(&"close 1005".to_string())));
}

#[test]
fn frames_in_the_same_packet_as_the_handshake_are_not_lost() {
    let s = ws_server(WebSocketConfig::default(), None);
    let mut raw = TcpStream::connect(s.addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut wire = b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .to_vec();
    // A masked text frame "hi" (mask key 1,2,3,4).
    wire.extend_from_slice(&[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2]);
    raw.write_all(&wire).unwrap();
    let mut buf = Vec::new();
    let resp = read_response(&mut raw, &mut buf, true).unwrap();
    assert_eq!(resp.status, 101);
    assert_eq!(
        resp.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    while buf.len() < 4 {
        assert!(fill(&mut raw, &mut buf));
    }
    assert_eq!(&buf[..4], &[0x81, 0x02, b'h', b'i']);
}

#[test]
fn bad_handshakes_get_their_status() {
    let s = ws_server(WebSocketConfig::default(), None);
    let base = |path: &str, extra: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{extra}\r\n")
    };
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let cases = [
        (base("/nope", &format!("{key}Sec-WebSocket-Version: 13\r\n")), 404),
        (base("/ws", &format!("{key}Sec-WebSocket-Version: 8\r\n")), 426),
        (base("/ws", "Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n"), 400),
        (base("/ws", "Sec-WebSocket-Version: 13\r\n"), 400),
        (format!("POST /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{key}Sec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n"), 400),
        (format!("GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n{key}Sec-WebSocket-Version: 13\r\n\r\n"), 400),
    ];
    for (raw, status) in cases {
        let r = exchange(s.addr, raw.as_bytes());
        assert_eq!(r.status, status, "{raw}");
        if status == 426 {
            assert_eq!(r.header("sec-websocket-version"), Some("13"));
        }
    }
    // Plain HTTP on the same server still works.
    assert_eq!(
        exchange(s.addr, get("/ws").as_bytes()).text(),
        "plain http\n"
    );
}

#[test]
fn origin_allowlist_and_subprotocols() {
    let mut cfg = WebSocketConfig::default();
    cfg.validate_origin = true;
    cfg.allowed_origins = vec!["https://good.example".into()];
    cfg.sub_protocols = vec!["chat.v2".into(), "chat.v1".into()];
    let s = ws_server(cfg, None);
    let req = |origin: &str, protocols: &str| {
        format!("GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\
Sec-WebSocket-Protocol: {protocols}\r\n\r\n")
    };
    assert_eq!(
        exchange(s.addr, req("https://evil.example", "chat.v1").as_bytes()).status,
        403
    );
    let ok = exchange(
        s.addr,
        req("https://good.example", "other, chat.v1, chat.v2").as_bytes(),
    );
    assert_eq!(ok.status, 101);
    // The client's order of preference wins among supported protocols.
    assert_eq!(ok.header("sec-websocket-protocol"), Some("chat.v1"));
}

#[test]
fn limits_and_protocol_errors_close_with_their_codes() {
    let mut cfg = WebSocketConfig::default();
    cfg.max_message_size = 1000;
    cfg.max_frame_size = 1000;
    let s = ws_server(cfg, None);
    let expect_close = |c: &mut Client, code: u16| loop {
        match c.read() {
            Ok(Message::Close(Some(f))) => {
                assert_eq!(u16::from(f.code), code);
                return;
            }
            Ok(_) => continue,
            Err(e) => panic!("expected close {code}, got {e}"),
        }
    };
    let mut c = client(s.addr, "/ws");
    c.send(Message::text("y".repeat(5000))).unwrap();
    expect_close(&mut c, 1009);

    // Invalid UTF-8 in a text frame (raw, masked with a zero key).
    let mut raw = raw_ws(s.addr);
    raw.write_all(&[0x81, 0x82, 0, 0, 0, 0, 0xff, 0xfe])
        .unwrap();
    assert_eq!(read_close_code(&mut raw), 1007);

    // An unmasked client frame.
    let mut raw = raw_ws(s.addr);
    raw.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    assert_eq!(read_close_code(&mut raw), 1002);

    // Reserved bits set.
    let mut raw = raw_ws(s.addr);
    raw.write_all(&[0xc1, 0x80, 0, 0, 0, 0]).unwrap();
    assert_eq!(read_close_code(&mut raw), 1002);

    assert!(
        wait_until(Duration::from_secs(2), || {
            let e = events_of(&s);
            ["close 1009", "close 1007", "close 1002"]
                .iter()
                .all(|c| e.contains(&c.to_string()))
        }),
        "{:?}",
        events_of(&s)
    );
}

fn raw_ws(addr: SocketAddr) -> TcpStream {
    let mut raw = TcpStream::connect(addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut buf = Vec::new();
    assert_eq!(read_response(&mut raw, &mut buf, true).unwrap().status, 101);
    assert!(buf.is_empty());
    raw
}

/// Reads server frames until a close frame; returns its code. The TCP connection must then
/// be closed by the server.
fn read_close_code(raw: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    loop {
        while buf.len() < 2 {
            assert!(fill(raw, &mut buf), "eof before close frame");
        }
        let len = (buf[1] & 0x7f) as usize;
        while buf.len() < 2 + len {
            assert!(fill(raw, &mut buf));
        }
        if buf[0] & 0x0f == 0x8 {
            let code = u16::from_be_bytes([buf[2], buf[3]]);
            assert!(is_closed(raw), "TCP left open after close");
            return code;
        }
        buf.drain(..2 + len);
    }
}

#[test]
fn close_fires_for_drops_server_closes_and_shutdown() {
    let s = ws_server(WebSocketConfig::default(), Some(Duration::from_millis(700)));
    let c = client(s.addr, "/ws");
    drop(c); // TCP drop without a close frame
    let mut c2 = client(s.addr, "/ws");
    c2.send(Message::text("close-me")).unwrap();
    match c2.read() {
        Ok(Message::Close(Some(f))) => assert_eq!(f.code, CloseCode::from(4000)),
        other => panic!("{other:?}"),
    }
    let mut c3 = client(s.addr, "/ws");
    // Shutdown sends 1001 to every connection.
    match c3.read() {
        Ok(Message::Close(Some(f))) => assert_eq!(f.code, CloseCode::Away),
        other => panic!("{other:?}"),
    }
    let _ = c3.close(None);
    assert!(
        wait_until(Duration::from_secs(3), || {
            let e = events_of(&s);
            e.contains(&"close 1006".to_string())
                && e.contains(&"close 4000".to_string())
                && e.contains(&"close 1001".to_string())
        }),
        "{:?}",
        events_of(&s)
    );
}

#[test]
fn pings_are_sent_and_pong_timeouts_close() {
    let mut cfg = WebSocketConfig::default();
    cfg.ping_interval = Duration::from_millis(200);
    cfg.pong_timeout = Duration::from_millis(300);
    let s = ws_server(cfg, None);
    // tungstenite answers pings while reading.
    let mut c = client(s.addr, "/ws");
    c.get_mut()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let start = std::time::Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_millis(900) {
        match c.read() {
            Ok(Message::Ping(_)) => pings += 1,
            Ok(_) => {}
            Err(tungstenite::Error::Io(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(pings >= 2, "pings: {pings}");
    assert!(events_of(&s).iter().any(|e| e == "pong"));
    // A raw client that never answers is closed with 1008.
    let mut raw = raw_ws(s.addr);
    assert_eq!(read_close_code(&mut raw), 1008);
}

#[test]
fn rooms_broadcast_to_members_only() {
    let s = ws_server(WebSocketConfig::default(), None);
    let mut a = client(s.addr, "/chat");
    let mut b = client(s.addr, "/chat");
    let mut outsider = client(s.addr, "/ws");
    assert!(wait_until(Duration::from_secs(2), || events_of(&s)
        .iter()
        .filter(|e| e.starts_with("connect"))
        .count()
        == 3));
    a.send(Message::text("say hi all")).unwrap();
    assert_eq!(b.read().unwrap(), Message::text("hi all"));
    outsider.send(Message::text("ping?")).unwrap();
    assert_eq!(outsider.read().unwrap(), Message::text("ping?"));
    // The sender is excluded from its own broadcast.
    a.send(Message::text("echo")).unwrap();
    assert_eq!(a.read().unwrap(), Message::text("echo"));
}
