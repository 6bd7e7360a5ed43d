//! Connection limits: over `max_connections` a client gets a 503 and a close; when the process
//! runs out of file descriptors, waiting clients are served once descriptors free up.
//!
//! The descriptor test lowers `RLIMIT_NOFILE` for this whole test process, so the tests in
//! this file take a lock and never run at the same time.

#[path = "util/extra.rs"]
mod extra;
mod util;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use util::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sends `GET path` on a new connection; `None` when refused, reset or closed unanswered.
fn try_get(addr: SocketAddr, path: &str) -> Option<RawResponse> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(get(path).as_bytes()).ok()?;
    let mut buf = Vec::new();
    read_response(&mut s, &mut buf, false)
}

#[test]
fn over_the_limit_a_client_gets_503_then_is_served_once_a_slot_frees() {
    let _serial = serial();
    let server = start(config().max_connections(2), standard_app);
    let addr = server.addr;
    let mut held = Vec::new();
    for i in 0..2 {
        let mut s = connect(addr);
        let mut buf = Vec::new();
        s.write_all(get(&format!("/held{i}")).as_bytes()).unwrap();
        let r = read_response(&mut s, &mut buf, false).unwrap();
        assert_eq!(r.status, 200);
        held.push(s);
    }

    let mut third = connect(addr);
    let mut buf = Vec::new();
    let r = read_response(&mut third, &mut buf, false).expect("a 503, not a silent close");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.text(), "server at capacity\r\n");
    assert!(is_closed(&mut third));

    // The connections already open are not disturbed.
    let mut buf = Vec::new();
    held[1].write_all(get("/still").as_bytes()).unwrap();
    assert_eq!(
        read_response(&mut held[1], &mut buf, false).unwrap().text(),
        "/still"
    );

    // One client leaves; the next newcomer is served (after the server noticed the close).
    drop(held.remove(0));
    let started = Instant::now();
    let mut refused = 0;
    let served = loop {
        match try_get(addr, "/newcomer") {
            Some(r) if r.status == 200 => break r,
            _ if started.elapsed() < Duration::from_secs(3) => {
                refused += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => panic!("never served after a slot freed: {other:?}"),
        }
    };
    assert_eq!(served.text(), "/newcomer");
    drop(held);
    let m = server.finish();
    assert_eq!(m.total_connections, 4 + refused, "{m:?}");
    assert_eq!(m.total_requests, 4, "{m:?}");
}

/// Restores the descriptor limit when dropped, even if the test fails.
struct NoFileLimit {
    soft: u64,
    hard: u64,
}

impl NoFileLimit {
    /// Lets the process open exactly one more descriptor (the lowest free number).
    fn allow_one_more() -> NoFileLimit {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        // Descriptors are allocated lowest-first: the probe's number is the next one handed out.
        let next = std::fs::File::open("/dev/null").unwrap().as_raw_fd() as u64;
        setrlimit(Resource::RLIMIT_NOFILE, next + 1, hard).unwrap();
        NoFileLimit { soft, hard }
    }
}

impl Drop for NoFileLimit {
    fn drop(&mut self) {
        use nix::sys::resource::{setrlimit, Resource};
        setrlimit(Resource::RLIMIT_NOFILE, self.soft, self.hard).unwrap();
    }
}

fn unconnected_socket() -> socket2::Socket {
    use socket2::{Domain, Protocol, Socket, Type};
    Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap()
}

fn connect_socket(s: socket2::Socket, addr: SocketAddr) -> TcpStream {
    s.connect(&addr.into()).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s
}

#[test]
fn clients_queued_while_out_of_descriptors_are_served_when_descriptors_free_up() {
    let _serial = serial();
    let server = start(config(), standard_app);
    let addr = server.addr;
    // Client sockets exist before the limit drops: connecting needs no new descriptor.
    let (s1, s2, s3) = (
        unconnected_socket(),
        unconnected_socket(),
        unconnected_socket(),
    );
    let limit = NoFileLimit::allow_one_more();

    let mut first = connect_socket(s1, addr);
    let mut buf1 = Vec::new();
    first.write_all(get("/first").as_bytes()).unwrap();
    let r = read_response(&mut first, &mut buf1, false).unwrap();
    assert_eq!(r.text(), "/first");

    // The server is out of descriptors now: these two wait in the listen backlog.
    let mut queued = [connect_socket(s2, addr), connect_socket(s3, addr)];
    for (i, s) in queued.iter_mut().enumerate() {
        s.write_all(get(&format!("/queued{i}")).as_bytes()).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    // The connection it holds is still served.
    first.write_all(get("/during").as_bytes()).unwrap();
    let r = read_response(&mut first, &mut buf1, false).unwrap();
    assert_eq!(r.text(), "/during");

    // Descriptors free up: the limit returns and the first client leaves.
    drop(limit);
    drop(first);
    let started = Instant::now();
    for (i, s) in queued.iter_mut().enumerate() {
        let mut buf = Vec::new();
        let r = read_response(s, &mut buf, false).expect("a queued client was never served");
        assert_eq!(r.text(), format!("/queued{i}"));
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "queued clients waited {:?}",
        started.elapsed()
    );
}
