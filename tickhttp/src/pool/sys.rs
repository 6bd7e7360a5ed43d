//! The pool's operating-system calls: fork, descriptor passing, parent-death signal.
//!
//! This is the only module of the crate allowed to use `unsafe`; every block says why it is
//! sound. Everything here is a thin, typed wrapper; policy lives in `master` and `worker`.
#![allow(unsafe_code)]

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::socket::{
    self, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use nix::unistd::{ForkResult, Pid};

use super::shm::SharedWords;
use crate::error::Error;

/// Threads of the calling process, from `/proc/self/status`.
pub(crate) fn thread_count() -> io::Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no Threads line in /proc/self/status"))
}

/// Which side of a fork the caller is on.
pub(crate) enum Forked {
    /// The new process.
    Child,
    /// The calling process; the child's pid.
    Parent(Pid),
}

/// Forks, after checking that the process is single-threaded.
///
/// A multi-threaded process cannot fork safely: only the calling thread survives in the
/// child, and any lock another thread held (the allocator's, stdio's, a logger's) stays
/// locked there forever. The check runs before every fork, not once, because the
/// application may start a thread at any time.
pub(crate) fn fork() -> Result<Forked, Error> {
    let threads = thread_count().map_err(|e| Error::io("counting the master's threads", e))?;
    if threads != 1 {
        return Err(Error::Pool(format!(
            "the master process has {threads} threads; fork() is only safe in a \
             single-threaded process. Start the worker pool before creating any thread \
             (async runtimes, background loggers, metrics exporters, thread pools), and \
             create them in the workers instead"
        )));
    }
    // SAFETY: the process has exactly one thread (checked just above, and nothing between the
    // check and the fork starts one), so the child inherits no lock held by another thread
    // and may run any code, allocation included. Descriptors the child must not keep are
    // closed by the caller right after the fork.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => Ok(Forked::Child),
        Ok(ForkResult::Parent { child }) => Ok(Forked::Parent(child)),
        Err(e) => Err(Error::io("fork", e.into())),
    }
}

/// A connected pair of `SOCK_SEQPACKET` Unix sockets (message boundaries kept, descriptors
/// can ride along), both non-blocking and close-on-exec.
pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)
}

/// Sends one message, with `fd` attached as `SCM_RIGHTS` when given. Never blocks
/// (`WouldBlock` when the peer's queue is full) and never raises `SIGPIPE` (`BrokenPipe` when
/// the peer is gone).
pub(crate) fn send_message(sock: BorrowedFd<'_>, msg: &[u8], fd: Option<RawFd>) -> io::Result<()> {
    let iov = [IoSlice::new(msg)];
    let fds;
    let cmsgs: &[ControlMessage<'_>] = match fd {
        Some(fd) => {
            fds = [fd];
            &[ControlMessage::ScmRights(&fds)]
        }
        None => &[],
    };
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    loop {
        match socket::sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, flags, None) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// One message read by [`recv_message`].
pub(crate) enum Received {
    /// `len` bytes of the buffer were filled; `fd` is the descriptor that came with them.
    Message { len: usize, fd: Option<OwnedFd> },
    /// The peer closed its end.
    Closed,
}

/// Receives one message without blocking (`WouldBlock` when none is queued). Room for one
/// descriptor is reserved in the control buffer (the reference's receive reserved room for
/// none, so the kernel dropped every descriptor), and received descriptors are close-on-exec.
pub(crate) fn recv_message(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    let mut cmsg_space = nix::cmsg_space!([RawFd; 1]);
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        let msg =
            match socket::recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg_space), flags) {
                Ok(msg) => msg,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
        let len = msg.bytes;
        let mut fd = None;
        // `cmsgs()` fails with ENOBUFS when the control data was truncated (MSG_CTRUNC): a
        // descriptor was lost. Say so instead of delivering a message without its socket.
        let cmsgs = msg.cmsgs().map_err(|_| {
            io::Error::other("control data truncated: a passed descriptor was dropped")
        })?;
        for cmsg in cmsgs {
            if let ControlMessageOwned::ScmRights(raw_fds) = cmsg {
                for raw in raw_fds {
                    // SAFETY: the kernel just installed `raw` in this process's descriptor
                    // table for this message (SCM_RIGHTS); nothing else refers to it, so
                    // taking ownership is sound. Extra descriptors are closed by the drop.
                    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                    if fd.is_none() {
                        fd = Some(owned);
                    }
                }
            }
        }
        if len == 0 && fd.is_none() && !msg.flags.contains(MsgFlags::MSG_TRUNC) {
            return Ok(Received::Closed);
        }
        if msg.flags.contains(MsgFlags::MSG_TRUNC) {
            return Err(io::Error::other("control message longer than the buffer"));
        }
        return Ok(Received::Message { len, fd });
    }
}

/// Sets or clears close-on-exec on descriptor `fd` (clear it only in a child about to exec).
pub(crate) fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    let flags = if on { nix::libc::FD_CLOEXEC } else { 0 };
    // SAFETY: `fcntl(F_SETFD)` takes a descriptor number and an integer; it touches no memory
    // of this process, and a number that is not an open descriptor fails with EBADF.
    let rc = unsafe { nix::libc::fcntl(fd, nix::libc::F_SETFD, flags) };
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Takes ownership of descriptor `fd`, inherited across `exec` from the previous master;
/// fails if it is not open.
pub(crate) fn inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 3 {
        return Err(io::Error::other("standard streams cannot be handed over"));
    }
    // SAFETY: as in `set_cloexec`: a descriptor number and no memory.
    if unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is open (checked just above) and was handed to this process by the
    // previous master for this purpose alone: the environment variable naming it is removed
    // before this call, so nothing else in the process refers to it, and this `OwnedFd`
    // becomes its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Takes ownership of an inherited listening TCP socket; fails (closing nothing that is not
/// a listening socket) if `fd` is anything else.
pub(crate) fn inherited_listener(fd: RawFd) -> io::Result<std::net::TcpListener> {
    let mut listening: nix::libc::c_int = 0;
    let mut len = std::mem::size_of::<nix::libc::c_int>() as nix::libc::socklen_t;
    // SAFETY: the option value points to a live `c_int` and `len` is its size; a number that
    // is not a socket fails with EBADF or ENOTSOCK.
    let rc = unsafe {
        nix::libc::getsockopt(
            fd,
            nix::libc::SOL_SOCKET,
            nix::libc::SO_ACCEPTCONN,
            (&mut listening as *mut nix::libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    if listening == 0 {
        return Err(io::Error::other("not a listening socket"));
    }
    let listener = std::net::TcpListener::from(inherited_fd(fd)?);
    listener.local_addr()?;
    set_cloexec(fd, true)?;
    Ok(listener)
}

/// The size of a memory page, for `/proc/PID/statm` (4096 if the system will not say).
pub(crate) fn page_size() -> u64 {
    // SAFETY: `sysconf` only reads a constant of the C library; it takes no pointer.
    let n = unsafe { nix::libc::sysconf(nix::libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// Asks the kernel to send `signal` to this process when its parent dies, then closes the race
/// where the parent died before the request: returns `false` if the parent is already gone.
pub(crate) fn die_with_parent(signal: Signal, parent: Pid) -> io::Result<bool> {
    nix::sys::prctl::set_pdeathsig(signal).map_err(io::Error::from)?;
    Ok(nix::unistd::getppid() == parent)
}

/// Sets `TCP_DEFER_ACCEPT` on a listener: the kernel completes the handshake as usual but
/// queues the connection for `accept` only once the client has sent data (its request), or
/// after `secs` seconds. The process that accepts then finds the request already there, so a
/// worker handles a new connection in one wakeup instead of two (nginx's `deferred`).
pub(crate) fn set_defer_accept(listener: &std::net::TcpListener, secs: u32) -> io::Result<()> {
    let value = nix::libc::c_int::try_from(secs).unwrap_or(nix::libc::c_int::MAX);
    // SAFETY: `listener` owns a valid socket for the duration of the call; the option value
    // points to a live `c_int` and the length passed is exactly its size.
    let rc = unsafe {
        nix::libc::setsockopt(
            listener.as_raw_fd(),
            nix::libc::IPPROTO_TCP,
            nix::libc::TCP_DEFER_ACCEPT,
            (&value as *const nix::libc::c_int).cast(),
            std::mem::size_of::<nix::libc::c_int>() as nix::libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Bytes per worker process on the [`LoadBoard`]: a cache line, so workers never share one.
const LOAD_SLOT_BYTES: usize = 64;
/// Words of a line: load, heartbeat, request start, then the request's label.
const WORD_LOAD: usize = 0;
const WORD_BEAT: usize = 1;
const WORD_REQUEST_AT: usize = 2;
const WORD_LABEL: usize = 3;
/// Bytes of the label of the request a worker is serving (the rest of the line).
pub(crate) const LABEL_BYTES: usize = LOAD_SLOT_BYTES - WORD_LABEL * 8;

/// Milliseconds on `CLOCK_MONOTONIC`, which every process of the machine shares, so a
/// worker's timestamp means the same to its master. Never 0 (0 means "never" on the board).
pub(crate) fn monotonic_ms() -> u64 {
    (monotonic_ns() / 1_000_000).max(1)
}

/// Nanoseconds on `CLOCK_MONOTONIC` (0 if the clock cannot be read).
pub(crate) fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        u64::try_from(t.tv_sec())
            .unwrap_or(0)
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::try_from(t.tv_nsec()).unwrap_or(0))
    })
}

/// Memory shared by the master and every worker (mapped before the first fork), one cache
/// line per worker process (the master hands out lines, so a replacement and the worker it
/// replaces never share one):
///
/// - the connections the worker has open (high 32 bits) and has received from the master
///   (low 32 bits, wrapping), stored as one word so the master always reads a consistent pair;
/// - its heartbeat: the [`monotonic_ms`] time its event loop last turned;
/// - the time it took its latest request, and that request's label (method and path,
///   truncated), for the diagnostics of a stuck worker.
///
/// Workers store, the master loads, with single atomic operations: live figures without a
/// system call or a wakeup on either side. (The label's words are read one by one, so a
/// label read while it changes may mix two requests; it only ever goes to a log line.)
pub(crate) struct LoadBoard {
    shm: SharedWords,
    slots: usize,
}

/// Words of one line.
const LINE_WORDS: usize = LOAD_SLOT_BYTES / 8;

impl LoadBoard {
    pub(crate) fn new(slots: usize) -> io::Result<LoadBoard> {
        // The mapping is page-aligned, so each line is a cache line of its own.
        Ok(LoadBoard {
            shm: SharedWords::new(slots.max(1) * LINE_WORDS)?,
            slots: slots.max(1),
        })
    }

    fn word(&self, slot: usize, word: usize) -> Option<&AtomicU64> {
        if slot >= self.slots || word >= LINE_WORDS {
            return None;
        }
        self.shm.words().get(slot * LINE_WORDS + word)
    }

    /// Clears a line before a new process gets it.
    pub(crate) fn reset(&self, slot: usize) {
        for w in 0..LOAD_SLOT_BYTES / 8 {
            if let Some(word) = self.word(slot, w) {
                word.store(0, Ordering::Release);
            }
        }
    }

    /// Publishes a worker's load (called in the worker).
    pub(crate) fn store(&self, slot: usize, open: u32, received: u32) {
        if let Some(word) = self.word(slot, WORD_LOAD) {
            word.store(
                u64::from(open) << 32 | u64::from(received),
                Ordering::Release,
            );
        }
    }

    /// Reads a worker's load (called in the master): `(open, received)`.
    pub(crate) fn load(&self, slot: usize) -> (u32, u32) {
        self.word(slot, WORD_LOAD).map_or((0, 0), |word| {
            let v = word.load(Ordering::Acquire);
            ((v >> 32) as u32, v as u32)
        })
    }

    /// Records that the worker's loop turned at `now_ms` (called in the worker).
    pub(crate) fn beat(&self, slot: usize, now_ms: u64) {
        if let Some(word) = self.word(slot, WORD_BEAT) {
            word.store(now_ms, Ordering::Release);
        }
    }

    /// When the worker's loop last turned ([`monotonic_ms`]), 0 if never.
    pub(crate) fn heartbeat(&self, slot: usize) -> u64 {
        self.word(slot, WORD_BEAT)
            .map_or(0, |w| w.load(Ordering::Acquire))
    }

    /// Records that the worker took a request at `now_ms`, labelled `label` (called in the
    /// worker).
    pub(crate) fn request(&self, slot: usize, now_ms: u64, label: &[u8]) {
        let mut bytes = [0u8; LABEL_BYTES];
        let n = label.len().min(LABEL_BYTES);
        bytes[..n].copy_from_slice(&label[..n]);
        for (i, chunk) in bytes.chunks_exact(8).enumerate() {
            if let Some(word) = self.word(slot, WORD_LABEL + i) {
                let mut w = [0u8; 8];
                w.copy_from_slice(chunk);
                word.store(u64::from_le_bytes(w), Ordering::Relaxed);
            }
        }
        if let Some(word) = self.word(slot, WORD_REQUEST_AT) {
            word.store(now_ms, Ordering::Release);
        }
    }

    /// The latest request the worker took: when ([`monotonic_ms`]) and its label.
    pub(crate) fn last_request(&self, slot: usize) -> Option<(u64, String)> {
        let at = self.word(slot, WORD_REQUEST_AT)?.load(Ordering::Acquire);
        if at == 0 {
            return None;
        }
        let mut bytes = Vec::with_capacity(LABEL_BYTES);
        for i in 0..LABEL_BYTES / 8 {
            if let Some(word) = self.word(slot, WORD_LABEL + i) {
                bytes.extend_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
            }
        }
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        Some((at, String::from_utf8_lossy(&bytes[..end]).into_owned()))
    }
}

/// Whether a descriptor can travel over a Unix socket here: sends one end of a socket pair
/// through the other and checks it arrives (the reference's `FdPasser::isSupported`, done by
/// trying it instead of by guessing from the OS name).
pub(crate) fn probe_fd_passing() -> Result<(), String> {
    let (a, b) = seqpacket_pair().map_err(|e| format!("cannot create a socket pair: {e}"))?;
    let (payload, _keep) =
        seqpacket_pair().map_err(|e| format!("cannot create a socket pair: {e}"))?;
    send_message(a.as_fd(), b"probe", Some(payload.as_raw_fd()))
        .map_err(|e| format!("sendmsg with SCM_RIGHTS failed: {e}"))?;
    let mut buf = [0u8; 16];
    match recv_message(b.as_fd(), &mut buf) {
        Ok(Received::Message {
            len: 5,
            fd: Some(_),
        }) => Ok(()),
        Ok(_) => Err("the descriptor did not arrive with the message".into()),
        Err(e) => Err(format!("recvmsg failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn the_load_board_is_shared_with_forked_processes() {
        let board = LoadBoard::new(3).unwrap();
        board.store(2, 7, u32::MAX);
        assert_eq!(board.load(2), (7, u32::MAX));
        assert_eq!(board.load(0), (0, 0));
        assert_eq!(board.load(3), (0, 0), "out of range reads as idle");
        board.store(9, 1, 1); // out of range: ignored
                              // A forked child writes, the parent sees it. The test harness is multi-threaded, so
                              // the child only stores a word and leaves with `_exit`.
                              // SAFETY: the child touches no lock: one atomic store, then `_exit`.
        match unsafe { nix::unistd::fork() }.unwrap() {
            ForkResult::Child => {
                board.store(1, 42, 5);
                // SAFETY: ends the child at once, running nothing of the parent's.
                unsafe { nix::libc::_exit(0) }
            }
            ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(board.load(1), (42, 5));
            }
        }
    }

    #[test]
    fn heartbeat_and_request_label_round_trip() {
        let board = LoadBoard::new(2).unwrap();
        assert_eq!(board.heartbeat(1), 0);
        assert_eq!(board.last_request(1), None);
        let now = monotonic_ms();
        board.beat(1, now);
        board.request(
            1,
            now,
            b"GET /a/very/long/path/that/does/not/fit/in/the/line",
        );
        assert_eq!(board.heartbeat(1), now);
        let (at, label) = board.last_request(1).unwrap();
        assert_eq!(at, now);
        assert_eq!(label.len(), LABEL_BYTES);
        assert!(label.starts_with("GET /a/very"));
        board.store(1, 3, 4);
        board.reset(1);
        assert_eq!(board.load(1), (0, 0));
        assert_eq!(board.heartbeat(1), 0);
    }

    #[test]
    fn fd_passing_works_here() {
        probe_fd_passing().expect("fd passing");
    }

    #[test]
    fn passed_socket_is_the_same_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, peer) = listener.accept().unwrap();
        let (a, b) = seqpacket_pair().unwrap();
        send_message(a.as_fd(), b"conn", Some(accepted.as_raw_fd())).unwrap();
        drop(accepted);
        let mut buf = [0u8; 16];
        let Received::Message { len, fd: Some(fd) } = recv_message(b.as_fd(), &mut buf).unwrap()
        else {
            panic!("no descriptor")
        };
        assert_eq!(&buf[..len], b"conn");
        let mut passed = TcpStream::from(fd);
        assert_eq!(passed.peer_addr().unwrap(), peer);
        passed.write_all(b"hi").unwrap();
        let mut got = [0u8; 2];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
    }

    #[test]
    fn closed_peer_and_empty_queue_are_told_apart() {
        let (a, b) = seqpacket_pair().unwrap();
        let mut buf = [0u8; 16];
        let err = recv_message(b.as_fd(), &mut buf).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        drop(a);
        assert!(matches!(
            recv_message(b.as_fd(), &mut buf).unwrap(),
            Received::Closed
        ));
    }

    #[test]
    fn sending_to_a_closed_peer_is_an_error_not_a_signal() {
        let (a, b) = seqpacket_pair().unwrap();
        drop(b);
        let err = send_message(a.as_fd(), b"x", None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
