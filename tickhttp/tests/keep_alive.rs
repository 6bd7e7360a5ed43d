//! Persistent connections: when a connection is reused, when it closes, and what the
//! response says about it.

#[path = "util/extra.rs"]
mod extra;
mod util;

use std::io::Write;
use std::time::{Duration, SystemTime};

use http::header::{HeaderValue, CONNECTION};
use http::Response;
use tickhttp::{Body, Request, Server};
use util::*;

/// `/bye` answers with the app's own `Connection: close`; everything else is the standard app.
fn app(server: &mut Server, req: Request) {
    if req.path() == "/bye" {
        let mut resp = Response::new(Body::from("bye"));
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        server.respond(req.id(), resp).unwrap();
    } else {
        standard_app(server, req);
    }
}

fn send(s: &mut std::net::TcpStream, raw: &str) {
    s.write_all(raw.as_bytes()).unwrap();
}

#[test]
fn http11_connection_is_reused_for_several_requests() {
    let server = start(config(), app);
    let mut s = connect(server.addr);
    let mut buf = Vec::new();
    for i in 0..5 {
        send(&mut s, &get(&format!("/r{i}")));
        let r = read_response(&mut s, &mut buf, false).expect("response on the same socket");
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), format!("/r{i}"));
        assert_eq!(
            r.header("connection"),
            None,
            "HTTP/1.1 keeps alive silently"
        );
        // A pause between requests, shorter than the keep-alive timeout, changes nothing.
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(buf.is_empty());
    drop(s);
    let m = server.finish();
    assert_eq!(
        m.total_connections, 1,
        "all five requests used one connection"
    );
    assert_eq!(m.total_requests, 5);
}

#[test]
fn connection_close_request_gets_close_and_the_socket_closes() {
    let server = start(config(), app);
    let mut s = connect(server.addr);
    send(
        &mut s,
        "GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "/last");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(buf.is_empty());
    assert!(is_closed(&mut s));
}

#[test]
fn connection_close_among_other_tokens_is_honoured() {
    let server = start(config(), app);
    let mut s = connect(server.addr);
    send(
        &mut s,
        "GET /x HTTP/1.1\r\nHost: t\r\nConnection: te, Close\r\nTE: trailers\r\n\r\n",
    );
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.header("connection"), Some("close"));
    assert!(is_closed(&mut s));
}

#[test]
fn http10_closes_by_default() {
    let server = start(config(), app);
    let mut s = connect(server.addr);
    send(&mut s, "GET /old HTTP/1.0\r\n\r\n");
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "/old");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(r.header("content-length").is_some());
    assert!(is_closed(&mut s));
}

#[test]
fn http10_keep_alive_is_confirmed_and_the_connection_stays_open() {
    let server = start(config(), app);
    let mut s = connect(server.addr);
    let mut buf = Vec::new();
    for i in 0..3 {
        send(
            &mut s,
            &format!("GET /k{i} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
        );
        let r = read_response(&mut s, &mut buf, false).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), format!("/k{i}"));
        assert_eq!(r.header("connection"), Some("keep-alive"));
        assert_eq!(r.header("content-length"), Some("3"));
    }
    // Without the token, the next HTTP/1.0 request ends the connection.
    send(&mut s, "GET /end HTTP/1.0\r\n\r\n");
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.text(), "/end");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(is_closed(&mut s));
    drop(s);
    let m = server.finish();
    assert_eq!(m.total_connections, 1);
}

#[test]
fn max_requests_per_connection_closes_after_the_last_one() {
    let server = start(config().max_requests_per_connection(3), app);
    let mut s = connect(server.addr);
    let mut buf = Vec::new();
    for i in 1..=3 {
        send(&mut s, &get(&format!("/n{i}")));
        let r = read_response(&mut s, &mut buf, false).unwrap();
        assert_eq!(r.text(), format!("/n{i}"));
        if i < 3 {
            assert_eq!(r.header("connection"), None, "response {i}");
        } else {
            assert_eq!(r.header("connection"), Some("close"), "response {i}");
        }
    }
    assert!(is_closed(&mut s));
}

#[test]
fn max_requests_per_connection_with_pipelining_answers_up_to_the_limit() {
    let server = start(config().max_requests_per_connection(3), app);
    let mut s = connect(server.addr);
    let wire: String = (1..=5).map(|i| get(&format!("/p{i}"))).collect();
    send(&mut s, &wire);
    let mut buf = Vec::new();
    for i in 1..=3 {
        let r = read_response(&mut s, &mut buf, false).unwrap();
        assert_eq!(r.text(), format!("/p{i}"));
    }
    assert!(buf.is_empty(), "nothing after the third response");
    assert!(is_closed(&mut s));
}

#[test]
fn app_connection_close_header_closes_the_connection() {
    let server = start(config(), app);
    let mut s = connect(server.addr);
    let mut buf = Vec::new();
    send(&mut s, &get("/first"));
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.header("connection"), None);
    send(&mut s, &get("/bye"));
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.text(), "bye");
    let connection: Vec<_> = r
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
        .collect();
    assert_eq!(
        connection.len(),
        1,
        "one Connection header: {:?}",
        r.headers
    );
    assert!(connection[0].1.eq_ignore_ascii_case("close"));
    assert!(is_closed(&mut s));
}

#[test]
fn keep_alive_disabled_closes_after_each_response() {
    let server = start(config().keep_alive(false), app);
    for raw in [
        get("/a"),
        "GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".to_string(),
    ] {
        let mut s = connect(server.addr);
        // A second pipelined request must not be served.
        send(&mut s, &format!("{raw}{}", get("/never")));
        let mut buf = Vec::new();
        let r = read_response(&mut s, &mut buf, false).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection"), Some("close"), "{raw:?}");
        assert!(buf.is_empty());
        assert!(is_closed(&mut s));
    }
    let m = server.finish();
    assert_eq!(m.total_requests, 2);
}

#[test]
fn date_and_server_headers_are_present_and_date_is_an_imf_fixdate() {
    let server = start(config(), app);
    let r = exchange(server.addr, get("/d").as_bytes());
    assert_eq!(r.header("server"), Some("tickhttp"));
    let date = r.header("date").expect("Date header");
    assert!(extra::is_imf_fixdate(date), "not an IMF-fixdate: {date:?}");
    let parsed = httpdate::parse_http_date(date).unwrap();
    assert_eq!(httpdate::fmt_http_date(parsed), date);
    let skew = match SystemTime::now().duration_since(parsed) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    assert!(skew < Duration::from_secs(5), "Date is {skew:?} off");
    let count = |name: &str| {
        r.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .count()
    };
    assert_eq!((count("date"), count("server")), (1, 1));
}

#[test]
fn server_header_follows_the_configuration() {
    let server = start(config().server_name(None), app);
    let r = exchange(server.addr, get("/d").as_bytes());
    assert_eq!(r.header("server"), None);
    assert!(r.header("date").is_some());
    drop(server);
    let server = start(config().server_name(Some("edge/2".into())), app);
    let r = exchange(server.addr, get("/d").as_bytes());
    assert_eq!(r.header("server"), Some("edge/2"));
}
