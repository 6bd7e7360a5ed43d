//! Many requests in one packet are all served, in request order, whatever order the app
//! answers them in.

mod util;

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use http::Response;
use util::*;

#[test]
fn thousand_pipelined_requests_in_one_write_are_answered_in_order() {
    let server = start(config(), standard_app);
    let mut s = connect(server.addr);
    let mut wire = String::new();
    for i in 0..1000 {
        wire.push_str(&get(&format!("/r{i}")));
    }
    s.write_all(wire.as_bytes()).unwrap();
    let mut buf = Vec::new();
    for i in 0..1000 {
        let r = read_response(&mut s, &mut buf, false).expect("response");
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), format!("/r{i}"));
    }
    let m = server.finish();
    assert_eq!(m.total_requests, 1000);
    assert_eq!(m.total_connections, 1);
}

#[test]
fn responses_given_out_of_order_leave_in_request_order() {
    // The app holds every request and answers them in reverse, in a later tick.
    let mut held = Vec::new();
    let server = start(config(), move |server, req| {
        held.push(req);
        if held.len() == 5 {
            for r in held.drain(..).rev() {
                let body = r.path().to_string();
                server.respond(r.id(), Response::new(body.into())).unwrap();
            }
        }
    });
    let mut s = connect(server.addr);
    let wire: String = (0..5).map(|i| get(&format!("/{i}"))).collect();
    s.write_all(wire.as_bytes()).unwrap();
    let mut buf = Vec::new();
    for i in 0..5 {
        let r = read_response(&mut s, &mut buf, false).unwrap();
        assert_eq!(r.text(), format!("/{i}"));
    }
}

#[test]
fn interleaved_responses_across_connections_reach_the_right_clients() {
    let server = start(config(), standard_app);
    let mut clients: Vec<_> = (0..4).map(|_| connect(server.addr)).collect();
    // Each client asks for a different delay, so answers complete in a scrambled order.
    for (i, c) in clients.iter_mut().enumerate() {
        let ms = 120 - i * 30;
        c.write_all(format!("GET /delay?ms={ms} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .unwrap();
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let mut buf = Vec::new();
        let r = read_response(c, &mut buf, false).unwrap();
        assert_eq!(r.text(), format!("slept {}", 120 - i * 30));
    }
}

#[test]
fn pipelined_bodies_are_framed_exactly() {
    let server = start(config(), standard_app);
    let mut s = connect(server.addr);
    let wire = "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello\
                POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
                GET /after HTTP/1.1\r\nHost: t\r\n\r\n";
    s.write_all(wire.as_bytes()).unwrap();
    let mut buf = Vec::new();
    assert_eq!(
        read_response(&mut s, &mut buf, false).unwrap().text(),
        "hello"
    );
    assert_eq!(
        read_response(&mut s, &mut buf, false).unwrap().text(),
        "abc"
    );
    assert_eq!(
        read_response(&mut s, &mut buf, false).unwrap().text(),
        "/after"
    );
}

#[test]
fn a_bad_request_after_good_ones_is_answered_after_them_then_closed() {
    let server = start(config(), standard_app);
    let mut s = connect(server.addr);
    let wire = format!("{}{}GARBAGE\r\n\r\n{}", get("/a"), get("/b"), get("/never"));
    s.write_all(wire.as_bytes()).unwrap();
    let mut buf = Vec::new();
    assert_eq!(read_response(&mut s, &mut buf, false).unwrap().text(), "/a");
    assert_eq!(read_response(&mut s, &mut buf, false).unwrap().text(), "/b");
    let bad = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(bad.status, 400);
    assert_eq!(bad.header("connection"), Some("close"));
    assert!(buf.is_empty());
    assert!(
        is_closed(&mut s),
        "the request after garbage must never be served"
    );
}

#[test]
fn read_boundaries_do_not_change_the_answers() {
    // The same byte stream delivered one byte at a time, then in odd slices.
    let wire = "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nwiki\r\n5\r\npedia\r\n0\r\nT: 1\r\n\r\n\
                GET /x?y=1 HTTP/1.1\r\nHost: t\r\n\r\n\
                POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nxyz";
    let server = start(config(), standard_app);
    let mut results: HashMap<usize, Vec<String>> = HashMap::new();
    for step in [1usize, 2, 3, 7, 13, 64, wire.len()] {
        let mut s = connect(server.addr);
        for piece in wire.as_bytes().chunks(step) {
            s.write_all(piece).unwrap();
            if step < 4 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        let mut buf = Vec::new();
        let answers: Vec<String> = (0..3)
            .map(|_| read_response(&mut s, &mut buf, false).unwrap().text())
            .collect();
        results.insert(step, answers);
    }
    for answers in results.values() {
        assert_eq!(
            answers,
            &vec!["wikipedia".to_string(), "/x".to_string(), "xyz".to_string()]
        );
    }
}
