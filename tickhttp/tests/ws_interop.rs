//! Interop with an independent WebSocket client: Python's `websockets` package
//! (tests/ws/interop_client.py) against an echo server.
//!
//! The interpreter is `$TICKHTTP_PY_VENV/bin/python`, else `target/py-venv/bin/python`, else
//! `python3`; the first that can import `websockets` is used. CI prepares the virtualenv:
//!
//! ```text
//! python3 -m venv target/py-venv && target/py-venv/bin/pip install websockets
//! ```
//!
//! Without it the test prints why and passes, unless TICKHTTP_REQUIRE_INTEROP=1.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tickhttp::ws::{WebSocketConfig, WsEvent};
use tickhttp::{Server, ServerConfig};

/// The echo server the client script expects; records the close codes and reasons it saw.
struct Echo {
    addr: SocketAddr,
    closes: Arc<Mutex<Vec<(u16, String)>>>,
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

fn echo_server() -> Echo {
    let (tx, rx) = mpsc::channel();
    let closes = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (closes2, stop2) = (Arc::clone(&closes), Arc::clone(&stop));
    let handle = std::thread::spawn(move || {
        let config = ServerConfig::default().listen("127.0.0.1:0".parse().unwrap());
        let mut server = Server::bind(config).unwrap();
        server
            .attach_websocket("/ws", WebSocketConfig::default())
            .unwrap();
        let mut proto = WebSocketConfig::default();
        proto.sub_protocols = vec!["chat.v2".into(), "chat.v1".into()];
        server.attach_websocket("/proto", proto).unwrap();
        tx.send(server.local_addr().unwrap()).unwrap();
        while !stop2.load(Ordering::SeqCst) {
            server.wait(Some(Duration::from_millis(20))).unwrap();
            while let Some(req) = server.get_request() {
                let _ = server.respond(req.id(), http::Response::new("http\n".into()));
            }
            while let Some(event) = server.next_ws_event() {
                let _ = match event {
                    WsEvent::Text { id, text } if text == "close-me" => {
                        server.ws_close(id, 4000, "asked")
                    }
                    WsEvent::Text { id, text } => server.ws_send_text(id, text),
                    WsEvent::Binary { id, data } => server.ws_send_binary(id, data),
                    WsEvent::Close { code, reason, .. } => {
                        closes2.lock().unwrap().push((code, reason));
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

/// An interpreter that has `websockets`.
fn python_with_websockets() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(venv) = std::env::var_os("TICKHTTP_PY_VENV") {
        candidates.push(Path::new(&venv).join("bin/python"));
    }
    // target/py-venv: next to this test binary's profile directory, and in the workspace.
    if let Some(target) = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
    {
        candidates.push(target.join("py-venv/bin/python"));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/py-venv/bin/python"));
    candidates.push(PathBuf::from("python3"));
    candidates.into_iter().find(|python| {
        Command::new(python)
            .args([
                "-c",
                "import websockets.sync.client, websockets.asyncio.client",
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[test]
fn python_websockets_client_interoperates() {
    let Some(python) = python_with_websockets() else {
        let why = "no Python with the websockets package \
                   (python3 -m venv target/py-venv && target/py-venv/bin/pip install websockets)";
        if std::env::var("TICKHTTP_REQUIRE_INTEROP").is_ok_and(|v| v == "1") {
            panic!("interop test required but {why}");
        }
        eprintln!("skipping the Python interop test: {why}");
        return;
    };
    let s = echo_server();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ws/interop_client.py");
    let started = Instant::now();
    let mut child = Command::new(&python)
        .arg(&script)
        .arg(format!("ws://{}", s.addr))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: the script's own timeouts are 10 s a step; kill it after a minute regardless.
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        status.success(),
        "client failed ({status}):\n{stdout}\n{stderr}"
    );
    eprint!("{stdout}");
    assert!(
        stdout.contains("ok 50 concurrent asyncio clients"),
        "{stdout}"
    );

    // The server saw each ending with the right code: the client's close with its reason,
    // its own close, and the 1009 of the oversized message.
    let closes = s.closes.lock().unwrap().clone();
    for (code, reason) in [(4001, "bye from python"), (4000, "asked"), (1009, "")] {
        assert!(
            closes
                .iter()
                .any(|(c, r)| *c == code && (reason.is_empty() || r == reason)),
            "no close {code} {reason:?} in {closes:?}"
        );
    }
    assert_eq!(closes.len(), 3 + 1 + 50, "{closes:?}");
}
