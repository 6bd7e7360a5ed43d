//! More test helpers: a server loop that runs closures sent from the test thread (to drive
//! shutdown, restart and metrics while clients are connected), sockets with small receive
//! buffers, free ports, pseudo-random bytes and thread CPU time.
#![allow(dead_code)]

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tickhttp::{Metrics, Request, Server, ServerConfig};

type Job = Box<dyn FnOnce(&mut Server) + Send>;

enum Cmd {
    Run(Job),
    Stop,
}

/// A server running its own loop in a thread; the test reaches into it with [`Harness::call`].
pub struct Harness {
    /// The listener address, when the server has one.
    pub addr: Option<SocketAddr>,
    tx: Sender<Cmd>,
    handle: Option<JoinHandle<()>>,
}

/// How long the loop blocks before it looks at the command queue.
const TICK: Duration = Duration::from_millis(5);

impl Harness {
    /// Builds the server inside the loop thread with `make` and serves every request with `app`.
    pub fn spawn<M, F>(make: M, mut app: F) -> Harness
    where
        M: FnOnce() -> Server + Send + 'static,
        F: FnMut(&mut Server, Request) + Send + 'static,
    {
        let (tx, rx): (Sender<Cmd>, Receiver<Cmd>) = mpsc::channel();
        let (addr_tx, addr_rx) = mpsc::channel();
        let handle = std::thread::spawn(move || {
            let mut server = make();
            addr_tx.send(server.local_addr()).unwrap();
            'run: loop {
                server.wait(Some(TICK)).expect("wait");
                while let Some(req) = server.get_request() {
                    app(&mut server, req);
                }
                loop {
                    match rx.try_recv() {
                        Ok(Cmd::Run(job)) => job(&mut server),
                        Ok(Cmd::Stop) | Err(TryRecvError::Disconnected) => break 'run,
                        Err(TryRecvError::Empty) => break,
                    }
                }
            }
        });
        let addr = addr_rx.recv().expect("the server thread failed to start");
        Harness {
            addr,
            tx,
            handle: Some(handle),
        }
    }

    /// A standalone server bound to `config.listen`.
    pub fn start<F>(config: ServerConfig, app: F) -> Harness
    where
        F: FnMut(&mut Server, Request) + Send + 'static,
    {
        Harness::spawn(move || Server::bind(config).expect("bind"), app)
    }

    /// The listener address (panics for a server without one).
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("the server has no listener")
    }

    /// Runs `f` on the server's thread, between two loop passes, and returns its result.
    pub fn call<R, F>(&self, f: F) -> R
    where
        R: Send + 'static,
        F: FnOnce(&mut Server) -> R + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        self.tx
            .send(Cmd::Run(Box::new(move |server| {
                let _ = tx.send(f(server));
            })))
            .expect("the server thread is gone");
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the server thread did not run the call")
    }

    /// A metrics snapshot.
    pub fn metrics(&self) -> Metrics {
        self.call(|s| s.metrics())
    }

    /// Polls the metrics until `cond` holds or `timeout` passes; returns the last snapshot.
    pub fn metrics_when(&self, timeout: Duration, cond: impl Fn(&Metrics) -> bool) -> Metrics {
        let start = Instant::now();
        loop {
            let m = self.metrics();
            if cond(&m) || start.elapsed() > timeout {
                return m;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the loop and joins its thread.
    pub fn finish(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        let _ = self.tx.send(Cmd::Stop);
        if let Some(h) = self.handle.take() {
            if let Err(e) = h.join() {
                if !std::thread::panicking() {
                    std::panic::resume_unwind(e);
                }
            }
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shut();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Connects with a small receive buffer, so the server runs into a full socket quickly.
pub fn connect_small_rcvbuf(addr: SocketAddr, rcvbuf: usize) -> TcpStream {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    s.set_recv_buffer_size(rcvbuf).unwrap();
    s.connect(&addr.into()).unwrap();
    let s: TcpStream = s.into();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    s
}

/// Reads until EOF; `Err` carries what arrived before a reset or timeout.
pub fn read_to_eof(stream: &mut TcpStream) -> Result<Vec<u8>, Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(out),
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift64*).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// CPU time (user + system) used by the calling thread so far.
pub fn thread_cpu_time() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_THREAD).expect("getrusage");
    let micros = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    micros(u.user_time()) + micros(u.system_time())
}

/// Whether `text` is an IMF-fixdate (RFC 9110 5.6.7), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn is_imf_fixdate(text: &str) -> bool {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() == 29
        && text.is_ascii()
        && DAYS.contains(&&text[0..3])
        && &text[3..5] == ", "
        && digits(5..7)
        && b[7] == b' '
        && MONTHS.contains(&&text[8..11])
        && b[11] == b' '
        && digits(12..16)
        && b[16] == b' '
        && digits(17..19)
        && b[19] == b':'
        && digits(20..22)
        && b[22] == b':'
        && digits(23..25)
        && &text[25..] == " GMT"
}
