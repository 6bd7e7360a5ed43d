//! The server's lifecycle, driven from its own loop: graceful shutdown (drained or forced),
//! stop, restart, signals, and pool mode with connections handed over from outside.

#[path = "util/extra.rs"]
mod extra;
mod util;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use extra::Harness;
use http::Response;
use tickhttp::{Body, ConnectionMeta, Request, RequestId, Server, ServerMode, ShutdownOutcome};
use util::*;

/// The standard app, counting the requests it was handed and remembering the ids of `/hang`
/// requests, which it never answers.
fn counting_app(
    seen: Arc<AtomicUsize>,
    hung: Arc<Mutex<Vec<RequestId>>>,
) -> impl FnMut(&mut Server, Request) + Send + 'static {
    move |server: &mut Server, req: Request| {
        seen.fetch_add(1, Ordering::SeqCst);
        if req.path() == "/hang" {
            hung.lock().unwrap().push(req.id());
        } else {
            standard_app(server, req);
        }
    }
}

/// Waits until the app was handed `n` requests.
fn wait_for_app(seen: &AtomicUsize, n: usize) {
    let reached = || seen.load(Ordering::SeqCst) == n;
    assert!(
        wait_until(Duration::from_secs(3), reached),
        "the app saw {} requests, not {n}",
        seen.load(Ordering::SeqCst)
    );
}

fn send(s: &mut TcpStream, raw: &str) {
    s.write_all(raw.as_bytes()).unwrap();
}

/// A connection attempt after the listener closed: refused, or at least never served.
fn assert_refused(addr: SocketAddr) {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
        Err(_) => {}
        Ok(mut s) => {
            let _ = s.write_all(get("/late").as_bytes());
            let mut buf = Vec::new();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            assert!(
                !fill(&mut s, &mut buf),
                "a connection made after the listener closed was served: {:?}",
                String::from_utf8_lossy(&buf)
            );
        }
    }
}

fn outcome_when_done(h: &Harness, timeout: Duration) -> (Option<ShutdownOutcome>, bool) {
    let start = Instant::now();
    loop {
        let (outcome, running) = h.call(|s| (s.shutdown_outcome(), s.is_running()));
        if outcome.is_some() || start.elapsed() > timeout {
            return (outcome, running);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn graceful_shutdown_answers_requests_in_flight_then_reports_drained() {
    let seen = Arc::new(AtomicUsize::new(0));
    let h = Harness::start(config(), counting_app(seen.clone(), Arc::default()));
    let addr = h.addr();

    // An idle keep-alive connection.
    let mut idle = connect(addr);
    let mut idle_buf = Vec::new();
    send(&mut idle, &get("/warm-up"));
    assert_eq!(
        read_response(&mut idle, &mut idle_buf, false)
            .unwrap()
            .text(),
        "/warm-up"
    );
    // Requests answered 200 ms from now, by a task: two connections with one each, one with
    // two pipelined.
    let mut singles: Vec<TcpStream> = (0..2).map(|_| connect(addr)).collect();
    for s in &mut singles {
        send(s, &get("/delay?ms=200"));
    }
    let mut piped = connect(addr);
    send(
        &mut piped,
        &format!("{}{}", get("/delay?ms=200"), get("/delay?ms=100")),
    );
    wait_for_app(&seen, 5);

    let started = Instant::now();
    let shutting = h.call(|s| {
        s.shutdown(Duration::from_secs(5));
        (s.is_shutting_down(), s.is_running())
    });
    assert_eq!(shutting, (true, true));

    // The idle connection closes at once, quietly.
    assert_eq!(extra::read_to_eof(&mut idle), Ok(Vec::new()));
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "the idle connection lingered {:?}",
        started.elapsed()
    );
    assert_refused(addr);

    for s in &mut singles {
        let mut buf = Vec::new();
        let r = read_response(s, &mut buf, false).expect("answered during the drain");
        assert_eq!((r.status, r.text().as_str()), (200, "slept 200"));
        assert_eq!(r.header("connection"), Some("close"));
        assert!(is_closed(s));
    }
    let mut buf = Vec::new();
    let first = read_response(&mut piped, &mut buf, false).unwrap();
    assert_eq!(first.text(), "slept 200");
    let second = read_response(&mut piped, &mut buf, false).unwrap();
    assert_eq!(second.text(), "slept 100");
    assert_eq!(second.header("connection"), Some("close"));
    assert!(is_closed(&mut piped));
    assert!(started.elapsed() >= Duration::from_millis(150));

    // Clients that read their last byte hang up; the server then has nothing left.
    drop((idle, singles, piped));
    let (outcome, running) = outcome_when_done(&h, Duration::from_secs(3));
    assert_eq!(outcome, Some(ShutdownOutcome::Drained));
    assert!(!running);
    assert_eq!(
        h.call(|s| (s.is_shutting_down(), s.connection_count())),
        (false, 0)
    );
}

#[test]
fn graceful_shutdown_closes_idle_connections_whose_clients_keep_them_open() {
    let seen = Arc::new(AtomicUsize::new(0));
    let h = Harness::start(config(), counting_app(seen.clone(), Arc::default()));
    let addr = h.addr();
    // One idle connection that never sent anything, one after a request; both clients keep
    // their sockets open after the server's FIN, as a browser's idle pool may.
    let mut fresh = connect(addr);
    let mut used = connect(addr);
    send(&mut used, &get("/x"));
    let mut buf = Vec::new();
    read_response(&mut used, &mut buf, false).unwrap();
    let both_open = || h.call(|s| s.connection_count()) == 2;
    assert!(wait_until(Duration::from_secs(3), both_open));

    let started = Instant::now();
    let cpu_before = h.call(|s| {
        s.shutdown(Duration::from_secs(8));
        extra::thread_cpu_time()
    });
    assert_eq!(extra::read_to_eof(&mut fresh), Ok(Vec::new()));
    assert_eq!(extra::read_to_eof(&mut used), Ok(Vec::new()));
    std::thread::sleep(Duration::from_millis(500));
    let cpu = h.call(|_| extra::thread_cpu_time()) - cpu_before;
    // The server lingers (reading and discarding) for a bounded time, then closes.
    let (outcome, running) = outcome_when_done(&h, Duration::from_secs(4));
    let took = started.elapsed();
    assert_eq!(
        outcome,
        Some(ShutdownOutcome::Drained),
        "still open after {took:?}: {} connections",
        h.call(|s| s.connection_count())
    );
    assert!(!running);
    assert!(took < Duration::from_secs(4), "drained after {took:?}");
    assert!(
        cpu < Duration::from_millis(150),
        "the loop used {cpu:?} of CPU in 500 ms of an idle drain"
    );
    drop((fresh, used));
}

#[test]
fn graceful_shutdown_with_nothing_in_flight_is_drained_at_once() {
    let h = Harness::start(config(), standard_app);
    let outcome = h.call(|s| {
        s.shutdown(Duration::from_secs(5));
        (s.shutdown_outcome(), s.is_running())
    });
    assert_eq!(outcome, (Some(ShutdownOutcome::Drained), false));
    assert_refused(h.addr());
}

#[test]
fn unanswered_request_is_force_closed_at_the_deadline() {
    let seen = Arc::new(AtomicUsize::new(0));
    let hung = Arc::new(Mutex::new(Vec::new()));
    let h = Harness::start(config(), counting_app(seen.clone(), hung.clone()));
    let mut s = connect(h.addr());
    send(&mut s, &get("/hang"));
    wait_for_app(&seen, 1);

    let deadline = Duration::from_millis(300);
    let started = Instant::now();
    h.call(move |s| s.shutdown(deadline));
    let (outcome, running) = outcome_when_done(&h, Duration::from_secs(3));
    let took = started.elapsed();
    assert_eq!(outcome, Some(ShutdownOutcome::ForceClosed));
    assert!(!running);
    assert!(
        took >= deadline - Duration::from_millis(20) && took < deadline * 5,
        "forced after {took:?}"
    );
    // The client got nothing, then the connection went away.
    let got = extra::read_to_eof(&mut s).unwrap_or_else(|partial| partial);
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    // Answering a request whose connection was force-closed is not an error.
    let id = hung.lock().unwrap()[0];
    let late = h.call(move |s| s.respond(id, Response::new(Body::from("late"))).is_ok());
    assert!(late);
    assert_eq!(h.call(|s| s.connection_count()), 0);
}

#[test]
fn stop_closes_everything_at_once() {
    let seen = Arc::new(AtomicUsize::new(0));
    let hung = Arc::new(Mutex::new(Vec::new()));
    let h = Harness::start(config(), counting_app(seen.clone(), hung.clone()));
    let addr = h.addr();
    let mut idle = connect(addr);
    let mut buf = Vec::new();
    send(&mut idle, &get("/x"));
    read_response(&mut idle, &mut buf, false).unwrap();
    let mut waiting = connect(addr);
    send(&mut waiting, &get("/hang"));
    wait_for_app(&seen, 2);

    let started = Instant::now();
    let after = h.call(|s| {
        s.stop();
        (s.is_running(), s.connection_count(), s.local_addr())
    });
    assert_eq!(after, (false, 0, None));
    for s in [&mut idle, &mut waiting] {
        let got = extra::read_to_eof(s).unwrap_or_else(|partial| partial);
        assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    }
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_refused(addr);
    let id = hung.lock().unwrap()[0];
    assert!(h.call(move |s| s.respond(id, Response::new(Body::from("late"))).is_ok()));
    let m = h.metrics();
    assert_eq!(
        (m.active_connections, m.closed_connections),
        (0, 2),
        "{m:?}"
    );
}

#[test]
fn restart_rebinds_the_same_port() {
    let port = extra::free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let h = Harness::start(config().listen(addr), standard_app);
    assert_eq!(h.addr(), addr);
    let mut old = connect(addr);
    let mut buf = Vec::new();
    send(&mut old, &get("/before"));
    assert_eq!(
        read_response(&mut old, &mut buf, false).unwrap().text(),
        "/before"
    );

    let restarted = h.call(|s| s.restart().map(|()| (s.is_running(), s.local_addr())));
    assert_eq!(restarted.unwrap(), (true, Some(addr)));
    assert!(is_closed(&mut old), "restart closes existing connections");
    let r = exchange(addr, get("/after").as_bytes());
    assert_eq!(r.text(), "/after");
}

#[test]
fn restart_reports_a_port_taken_in_between() {
    let port = extra::free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let h = Harness::start(config().listen(addr), standard_app);
    assert_eq!(exchange(addr, get("/one").as_bytes()).text(), "/one");

    h.call(|s| s.stop());
    // Another socket listens on the port now (Linux refuses a second listener on a port even
    // with SO_REUSEADDR on both).
    let squatter = TcpListener::bind(addr).expect("the stopped server released its port");
    let err = h.call(|s| {
        let r = s.restart();
        (r.map_err(|e| e.to_string()), s.is_running())
    });
    match err {
        (Err(msg), false) => assert!(msg.contains(&addr.to_string()), "{msg}"),
        other => panic!("restart over a taken port gave {other:?}"),
    }
    drop(squatter);
    assert!(h.call(|s| s.restart().is_ok()));
    assert_eq!(exchange(addr, get("/two").as_bytes()).text(), "/two");
}

#[test]
fn pool_worker_serves_handed_over_connections() {
    let h = Harness::spawn(
        || {
            let mut s = Server::new(config()).unwrap();
            s.set_worker_id(7);
            s
        },
        |server: &mut Server, req: Request| {
            let body = format!("worker={:?} peer={}", req.worker_id(), req.peer_addr());
            server
                .respond(req.id(), Response::new(body.into()))
                .unwrap();
        },
    );
    assert_eq!(h.addr, None, "a pool worker binds nothing");
    assert_eq!(
        h.call(|s| (s.mode(), s.worker_id(), s.is_running())),
        (ServerMode::WorkerPool, Some(7), false)
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let front = listener.local_addr().unwrap();

    // With the client address given in the metadata (as a proxy in front would).
    let mut client = connect(front);
    let (stream, _) = listener.accept().unwrap();
    let claimed: SocketAddr = "203.0.113.9:4242".parse().unwrap();
    let added = h.call(move |s| {
        let r = s.add_external_connection(stream, ConnectionMeta::with_peer(claimed));
        (r.map_err(|e| e.to_string()), s.is_running(), s.local_addr())
    });
    assert_eq!(added, (Ok(()), true, None));
    let mut buf = Vec::new();
    send(&mut client, &get("/"));
    let r = read_response(&mut client, &mut buf, false).unwrap();
    assert_eq!(r.text(), format!("worker=Some(7) peer={claimed}"));
    // The handed-over connection is kept alive like any other.
    send(&mut client, &get("/"));
    let r = read_response(&mut client, &mut buf, false).unwrap();
    assert_eq!(r.header("connection"), None);

    // Without metadata, the socket's own peer address.
    let mut client2 = connect(front);
    let own = client2.local_addr().unwrap();
    let (stream, _) = listener.accept().unwrap();
    h.call(move |s| {
        s.add_external_connection(stream, ConnectionMeta::default())
            .unwrap()
    });
    let r = {
        send(&mut client2, &get("/"));
        let mut buf = Vec::new();
        read_response(&mut client2, &mut buf, false).unwrap()
    };
    assert_eq!(r.text(), format!("worker=Some(7) peer={own}"));
    assert_eq!(h.metrics().total_connections, 2);
}

#[test]
fn pool_worker_refuses_handed_over_connections_while_shutting_down() {
    let hung = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(AtomicUsize::new(0));
    let app = counting_app(seen.clone(), hung);
    let h = Harness::spawn(
        || {
            let mut s = Server::new(config()).unwrap();
            s.set_worker_id(1);
            s
        },
        app,
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let front = listener.local_addr().unwrap();
    let mut busy = connect(front);
    let (stream, _) = listener.accept().unwrap();
    h.call(move |s| {
        s.add_external_connection(stream, ConnectionMeta::default())
            .unwrap()
    });
    send(&mut busy, &get("/hang"));
    wait_for_app(&seen, 1);
    h.call(|s| s.shutdown(Duration::from_secs(5)));

    let mut late = connect(front);
    let (stream, _) = listener.accept().unwrap();
    h.call(move |s| {
        s.add_external_connection(stream, ConnectionMeta::default())
            .unwrap()
    });
    send(&mut late, &get("/late"));
    let mut buf = Vec::new();
    let r = read_response(&mut late, &mut buf, false).unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(is_closed(&mut late));
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "the late request reached the app"
    );
    drop(busy);
}

#[test]
fn sigterm_starts_a_graceful_shutdown() {
    let h = Harness::spawn(
        || {
            let mut s = Server::bind(config()).unwrap();
            tickhttp::signal::shutdown_on_signals(&mut s, Duration::from_secs(5)).unwrap();
            s
        },
        standard_app,
    );
    let addr = h.addr();
    let mut s = connect(addr);
    send(&mut s, &get("/delay?ms=200"));
    std::thread::sleep(Duration::from_millis(50));
    // The handler only writes to a pipe; the server's loop reacts.
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.text(), "slept 200");
    assert_eq!(r.header("connection"), Some("close"));
    let (outcome, running) = outcome_when_done(&h, Duration::from_secs(3));
    assert_eq!(outcome, Some(ShutdownOutcome::Drained));
    assert!(!running);
    assert_refused(addr);
}
