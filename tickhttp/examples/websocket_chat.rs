//! A chat server: the page at `/`, a WebSocket at `/chat`, rooms and broadcast.
//!
//! ```text
//! cargo run --example websocket_chat -- 127.0.0.1:8090     # or ADDR=127.0.0.1:8090
//! ```
//!
//! Then open http://127.0.0.1:8090/ in two browser tabs. The protocol is JSON text messages.
//! A client joins a room with its first message, `{"type":"join","name":"ann","room":"lobby"}`,
//! or with the query of its upgrade request (`/chat?name=ann&room=lobby`), then sends
//! `{"type":"say","text":"hello"}`. The server sends `welcome` (with the members of the room)
//! to the one who joined, and `joined`, `message` (with the sender's name) and `left` to
//! everyone in the room.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tickhttp::ws::{WebSocketConfig, WsEvent, WsId};
use tickhttp::{Body, Server, ServerConfig};

const PAGE: &str = include_str!("chat.html");

/// Longest name, room name and message, in characters.
const MAX_NAME: usize = 32;
const MAX_TEXT: usize = 2000;

/// The per-connection data (kept by the server with `ws_set_data`) of a client that joined.
struct User {
    name: String,
    room: String,
}

/// What a client sends.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ClientMessage {
    Join { name: String, room: String },
    Say { text: String },
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen: SocketAddr = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("ADDR").ok())
        .unwrap_or_else(|| "127.0.0.1:8090".to_string())
        .parse()?;
    let mut server = Server::bind(ServerConfig::default().listen(listen))?;
    let mut ws_config = WebSocketConfig::default();
    ws_config.max_message_size = 16 * 1024;
    ws_config.max_frame_size = 16 * 1024;
    ws_config.ping_interval = Duration::from_secs(20);
    server.attach_websocket("/chat", ws_config)?;
    tickhttp::signal::shutdown_on_signals(&mut server, Duration::from_secs(2))?;
    // The address goes to stdout so that a script (or a test) that chose port 0 can find it.
    let addr = server.local_addr().unwrap_or(listen);
    println!("chat listening on http://{addr}/");

    // The rooms the server saw each connection join, to announce who left: by the time a
    // Close event is read the connection (and its data) may already be gone.
    let mut joined: HashMap<WsId, User> = HashMap::new();
    while server.is_running() {
        server.wait(None)?;
        while let Some(req) = server.get_request() {
            let resp = match req.path() {
                "/" => page(),
                _ => plain(StatusCode::NOT_FOUND, "not found\n"),
            };
            server.respond(req.id(), resp)?;
        }
        while let Some(event) = server.next_ws_event() {
            match event {
                WsEvent::Connect { id, uri, .. } => {
                    // Joining by query: /chat?name=ann&room=lobby.
                    let query: HashMap<String, String> = tickhttp::form::query_pairs(uri.query())
                        .into_iter()
                        .collect();
                    if let (Some(name), Some(room)) = (query.get("name"), query.get("room")) {
                        join(&mut server, &mut joined, id, name, room);
                    }
                }
                WsEvent::Text { id, text } => match serde_json::from_str(&text) {
                    Ok(ClientMessage::Join { name, room }) => {
                        if server.ws_data::<User>(id).is_some() {
                            send_error(&mut server, id, "already joined");
                        } else {
                            join(&mut server, &mut joined, id, &name, &room);
                        }
                    }
                    Ok(ClientMessage::Say { text }) => say(&mut server, id, &text),
                    Err(e) => send_error(&mut server, id, &format!("bad message: {e}")),
                },
                WsEvent::Binary { id, .. } => {
                    let _ = server.ws_close(id, 1003, "text messages only");
                }
                WsEvent::Close { id, .. } => {
                    // The server has already taken the connection out of its rooms.
                    if let Some(user) = joined.remove(&id) {
                        let notice = json!({"type": "left", "room": user.room, "name": user.name});
                        server.ws_broadcast_room(&user.room, notice.to_string(), None);
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Puts a connection in a room under a name, tells it who is there and tells the room.
fn join(server: &mut Server, joined: &mut HashMap<WsId, User>, id: WsId, name: &str, room: &str) {
    let (name, room) = (name.trim(), room.trim());
    let valid = |s: &str| {
        !s.is_empty() && s.chars().count() <= MAX_NAME && !s.chars().any(char::is_control)
    };
    if !valid(name) || !valid(room) {
        send_error(server, id, "name and room: 1 to 32 characters");
        return;
    }
    let members: Vec<String> = server
        .ws_room(room)
        .into_iter()
        .filter_map(|member| server.ws_data::<User>(member).map(|u| u.name.clone()))
        .collect();
    if server.ws_join(id, room).is_err() {
        return; // gone already
    }
    let user = || User {
        name: name.to_string(),
        room: room.to_string(),
    };
    let _ = server.ws_set_data(id, user());
    joined.insert(id, user());
    let welcome = json!({"type": "welcome", "room": room, "name": name, "members": members});
    let _ = server.ws_send_text(id, welcome.to_string());
    let notice = json!({"type": "joined", "room": room, "name": name});
    server.ws_broadcast_room(room, notice.to_string(), Some(id));
}

/// Broadcasts a message to the sender's room, with the sender's name, the sender included
/// (its copy confirms delivery).
fn say(server: &mut Server, id: WsId, text: &str) {
    let Some(user) = server.ws_data::<User>(id) else {
        send_error(server, id, "join a room first");
        return;
    };
    if text.trim().is_empty() || text.chars().count() > MAX_TEXT {
        send_error(server, id, "messages are 1 to 2000 characters");
        return;
    }
    let room = user.room.clone();
    let message = json!({"type": "message", "room": room, "from": user.name, "text": text});
    server.ws_broadcast_room(&room, message.to_string(), None);
}

fn send_error(server: &mut Server, id: WsId, text: &str) {
    let _ = server.ws_send_text(id, json!({"type": "error", "text": text}).to_string());
}

fn page() -> Response<Body> {
    let mut resp = Response::new(Body::from(PAGE));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::from(text));
    *resp.status_mut() = status;
    resp
}
