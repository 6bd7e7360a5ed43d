//! Background tasks, timers and responders wake a blocked `wait`; an idle loop sleeps in
//! epoll instead of spinning; the epoll descriptor can be watched by another event loop.
//!
//! These tests drive the server on the test's own thread, as an application would.

#[path = "util/extra.rs"]
mod extra;
mod util;

use std::cell::Cell;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http::Response;
use tickhttp::{yield_now, Body, Server};
use util::*;

fn server() -> (Server, SocketAddr) {
    let server = Server::bind(config()).unwrap();
    let addr = server.local_addr().unwrap();
    (server, addr)
}

/// Connects after `after` unless dropped first: new I/O unblocks a `wait(None)` that a bug left
/// blocked, so a failing test fails instead of hanging.
struct Watchdog {
    cancel: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Watchdog {
    fn new(addr: SocketAddr, after: Duration) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        let handle = std::thread::spawn(move || {
            if rx.recv_timeout(after) == Err(mpsc::RecvTimeoutError::Timeout) {
                let _ = TcpStream::connect(addr).map(|mut s| s.write_all(b"GET / HTTP/1.1\r\n"));
            }
        });
        Watchdog {
            cancel: Some(tx),
            handle: Some(handle),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.cancel.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A client in its own thread: sends `GET path` and returns the response.
fn client(addr: SocketAddr, path: &str) -> JoinHandle<RawResponse> {
    let raw = get(path);
    std::thread::spawn(move || exchange(addr, raw.as_bytes()))
}

#[test]
fn a_timer_in_a_task_wakes_a_blocked_wait() {
    let (mut server, addr) = server();
    let fired = Rc::new(Cell::new(None));
    let sleep = server.sleep(Duration::from_millis(200));
    let started = Instant::now();
    let flag = fired.clone();
    server.spawn(async move {
        sleep.await;
        flag.set(Some(Instant::now()));
    });
    let _watchdog = Watchdog::new(addr, Duration::from_secs(3));
    let mut waits = 0;
    while fired.get().is_none() && started.elapsed() < Duration::from_secs(5) {
        server.wait(None).unwrap();
        waits += 1;
    }
    let fired_at = fired.get().expect("the task never completed");
    let took = fired_at - started;
    assert!(
        took >= Duration::from_millis(195) && took < Duration::from_millis(500),
        "the 200 ms timer fired after {took:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "wait returned late"
    );
    assert!(waits <= 4, "{waits} wakeups for one timer: the loop spins");
    assert_eq!(server.task_count(), 0, "a finished task is removed");
}

#[test]
fn a_responder_on_another_thread_answers_and_wakes_wait() {
    let (mut server, addr) = server();
    let c = client(addr, "/from-thread");
    let started = Instant::now();
    let req = loop {
        server.wait(Some(Duration::from_secs(1))).unwrap();
        if let Some(req) = server.get_request() {
            break req;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "no request");
    };
    let responder = server.responder();
    let id = req.id();
    let (sent_tx, sent_rx) = mpsc::channel();
    let helper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        sent_tx.send(Instant::now()).unwrap();
        responder.respond(id, Response::new(Body::from("answered by a thread")));
    });
    let _watchdog = Watchdog::new(addr, Duration::from_secs(3));
    assert!(server.has_pending_response());
    // Block until the pass that applies the response (each wakeup returns from wait).
    while server.has_pending_response() {
        server.wait(None).unwrap();
        assert!(started.elapsed() < Duration::from_secs(5), "never woken");
    }
    let woke_after = sent_rx.recv().unwrap().elapsed();
    assert!(
        woke_after < Duration::from_millis(100),
        "wait returned {woke_after:?} after the responder answered"
    );
    helper.join().unwrap();
    // The response was written on the pass that woke; turn a little more only as a safety net.
    let deadline = Instant::now() + Duration::from_secs(3);
    while !c.is_finished() && Instant::now() < deadline {
        server.wait(Some(Duration::from_millis(10))).unwrap();
    }
    let r = c.join().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "answered by a thread"));
}

#[test]
fn a_yielding_task_runs_once_per_loop_pass() {
    let (mut server, _addr) = server();
    let runs = Rc::new(Cell::new(0u32));
    let counter = runs.clone();
    let task = server.spawn(async move {
        loop {
            counter.set(counter.get() + 1);
            yield_now().await;
        }
    });
    let mut after_each = Vec::new();
    for _ in 0..10 {
        server.has_request();
        after_each.push(runs.get());
    }
    assert_eq!(after_each, (1..=10).collect::<Vec<u32>>());
    // A task that is always ready keeps `wait` from blocking...
    let started = Instant::now();
    server.wait(Some(Duration::from_secs(2))).unwrap();
    assert!(started.elapsed() < Duration::from_millis(100));
    // ...until it is cancelled.
    assert!(server.cancel(task));
    assert_eq!(server.task_count(), 0);
    let before = runs.get();
    server.has_request();
    server.has_request();
    assert_eq!(runs.get(), before);
}

#[test]
fn a_yielding_task_is_resumed_at_least_once_per_pass_and_never_starves_io() {
    let (mut server, addr) = server();
    let runs = Rc::new(Cell::new(0u32));
    let counter = runs.clone();
    server.spawn(async move {
        loop {
            counter.set(counter.get() + 1);
            yield_now().await;
        }
    });
    let c = client(addr, "/while-busy");
    let started = Instant::now();
    let mut passes = 0u32;
    let req = loop {
        server.wait(None).unwrap();
        passes += 1;
        if let Some(req) = server.get_request() {
            break req;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "I/O starved");
    };
    assert!(
        runs.get() >= passes,
        "{} runs in {passes} passes",
        runs.get()
    );
    assert!(
        runs.get() <= 2 * passes,
        "{} runs in {passes} passes",
        runs.get()
    );
    server
        .respond(req.id(), Response::new(Body::from("served")))
        .unwrap();
    while !c.is_finished() && started.elapsed() < Duration::from_secs(5) {
        server.wait(Some(Duration::from_millis(10))).unwrap();
    }
    assert_eq!(c.join().unwrap().text(), "served");
}

#[test]
fn a_panicking_task_is_removed_and_the_server_keeps_serving() {
    let (mut server, addr) = server();
    let timer = server.timer();
    let ticks = Rc::new(Cell::new(0u32));
    let t = ticks.clone();
    server.spawn(async move {
        loop {
            timer.sleep(Duration::from_millis(10)).await;
            t.set(t.get() + 1);
        }
    });
    server.spawn(async { panic!("a task fails on its first poll") });
    let timer = server.timer();
    server.spawn(async move {
        timer.sleep(Duration::from_millis(30)).await;
        panic!("a task fails later");
    });
    assert_eq!(server.task_count(), 3);
    let started = Instant::now();
    while server.task_count() > 1 && started.elapsed() < Duration::from_secs(3) {
        server.wait(Some(Duration::from_millis(50))).unwrap();
    }
    assert_eq!(server.task_count(), 1, "both panicking tasks are removed");

    let c = client(addr, "/after-panics");
    let req = loop {
        server.wait(Some(Duration::from_millis(100))).unwrap();
        if let Some(req) = server.get_request() {
            break req;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "no request");
    };
    let body = req.path().to_string();
    server
        .respond(req.id(), Response::new(Body::from(body)))
        .unwrap();
    while !c.is_finished() && started.elapsed() < Duration::from_secs(5) {
        server.wait(Some(Duration::from_millis(10))).unwrap();
    }
    assert_eq!(c.join().unwrap().text(), "/after-panics");
    assert!(ticks.get() >= 3, "the healthy task kept running");
}

#[test]
fn an_idle_wait_sleeps_for_its_timeout_without_spinning() {
    let (mut server, addr) = server();
    // Idle, but not empty: a keep-alive connection and a far-off timer.
    let _idle = connect(addr);
    let sleep = server.sleep(Duration::from_secs(30));
    server.spawn(sleep);
    for _ in 0..5 {
        server.wait(Some(Duration::from_millis(20))).unwrap();
    }
    assert_eq!(server.connection_count(), 1);

    let cpu_before = extra::thread_cpu_time();
    let started = Instant::now();
    let ready = server.wait(Some(Duration::from_millis(500))).unwrap();
    let took = started.elapsed();
    let cpu = extra::thread_cpu_time() - cpu_before;
    assert!(!ready);
    assert!(
        took >= Duration::from_millis(490) && took < Duration::from_millis(800),
        "wait(500 ms) returned after {took:?}"
    );
    assert!(cpu < Duration::from_millis(50), "{cpu:?} of CPU while idle");

    // Shorter timeouts are honoured just as well.
    let started = Instant::now();
    for _ in 0..5 {
        server.wait(Some(Duration::from_millis(40))).unwrap();
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(195) && took < Duration::from_millis(500),
        "five 40 ms waits took {took:?}"
    );
}

#[test]
fn the_epoll_descriptor_becomes_readable_when_a_request_arrives() {
    use mio::unix::SourceFd;
    use mio::{Events, Interest, Poll, Token};

    let (mut server, addr) = server();
    let fd = server.as_raw_fd();
    let mut outer = Poll::new().unwrap();
    outer
        .registry()
        .register(&mut SourceFd(&fd), Token(7), Interest::READABLE)
        .unwrap();
    let mut events = Events::with_capacity(8);
    outer
        .poll(&mut events, Some(Duration::from_millis(100)))
        .unwrap();
    assert!(events.is_empty(), "readable with nothing to do");

    let c = client(addr, "/via-outer-loop");
    let started = Instant::now();
    outer
        .poll(&mut events, Some(Duration::from_secs(3)))
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.token() == Token(7) && e.is_readable()),
        "the epoll fd never became readable"
    );
    assert!(started.elapsed() < Duration::from_secs(1));

    // The outer loop drives the server with non-blocking passes only.
    let req = loop {
        if server.has_request() {
            break server.get_request().unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "no request");
        outer
            .poll(&mut events, Some(Duration::from_millis(500)))
            .unwrap();
    };
    server
        .respond(req.id(), Response::new(Body::from("outer")))
        .unwrap();
    server.has_request(); // flushes the response
    while !c.is_finished() && started.elapsed() < Duration::from_secs(5) {
        outer
            .poll(&mut events, Some(Duration::from_millis(50)))
            .unwrap();
        server.has_request();
    }
    assert_eq!(c.join().unwrap().text(), "outer");
}
