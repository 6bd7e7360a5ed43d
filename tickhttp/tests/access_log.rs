//! The access log: one `tickhttp::access` event per response with method, path, status,
//! bytes, duration, worker and peer; nothing when the option is off.

mod util;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use util::*;

/// Every event of the test binary, as JSON lines (the server runs in other threads, so the
/// subscriber is global).
fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&buf);
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_env_filter("tickhttp::access=info")
            .with_writer(move || Writer(Arc::clone(&writer)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buf
    })
}

struct Writer(Arc<Mutex<Vec<u8>>>);

impl Write for Writer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The access events whose path contains `marker`.
fn events(marker: &str) -> Vec<serde_json::Value> {
    let buf = captured().lock().unwrap();
    String::from_utf8_lossy(&buf)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "tickhttp::access")
        .filter(|v| v["path"].as_str().is_some_and(|p| p.contains(marker)))
        .collect()
}

#[test]
fn one_line_per_response_with_its_facts() {
    captured();
    let server = start(config().access_log(true), |server, req| {
        let mut resp = http::Response::new(tickhttp::Body::from("hello"));
        if req.path() == "/on-missing" {
            *resp.status_mut() = http::StatusCode::NOT_FOUND;
        }
        server.respond(req.id(), resp).unwrap();
    });
    let mut s = connect(server.addr);
    s.write_all(
        b"GET /on-first?x=1 HTTP/1.1\r\nHost: t\r\n\r\nHEAD /on-head HTTP/1.1\r\nHost: t\r\n\r\n\
          POST /on-missing HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi",
    )
    .unwrap();
    let mut buf = Vec::new();
    for head in [false, true, false] {
        read_response(&mut s, &mut buf, head).unwrap();
    }
    assert!(wait_until(Duration::from_secs(5), || events("/on-").len() == 3));
    let ev = events("/on-");
    let local = s.local_addr().unwrap().to_string();
    assert_eq!(ev[0]["method"], "GET");
    assert_eq!(ev[0]["path"], "/on-first?x=1");
    assert_eq!(ev[0]["status"], 200);
    assert_eq!(ev[0]["bytes"], 5);
    assert!(ev[0]["duration_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(ev[0]["peer"], local.as_str());
    assert_eq!(ev[1]["method"], "HEAD");
    assert_eq!(ev[1]["bytes"], 0);
    assert_eq!(ev[2]["method"], "POST");
    assert_eq!(ev[2]["status"], 404);
    server.finish();
}

#[test]
fn rejected_requests_are_logged_too() {
    captured();
    let server = start(config().access_log(true).max_uri_len(16), standard_app);
    let resp = exchange(server.addr, get("/rejected-with-a-long-path").as_bytes());
    assert_eq!(resp.status, 414);
    assert!(wait_until(Duration::from_secs(5), || {
        let buf = captured().lock().unwrap();
        String::from_utf8_lossy(&buf).contains("\"status\":414")
    }));
    server.finish();
}

#[test]
fn nothing_is_logged_when_off() {
    captured();
    let server = start(config(), standard_app);
    assert_eq!(
        exchange(server.addr, get("/off-quiet").as_bytes()).status,
        200
    );
    std::thread::sleep(Duration::from_millis(100));
    assert!(events("/off-").is_empty());
    server.finish();
}
