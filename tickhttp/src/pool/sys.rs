//! The pool's operating-system calls: fork, descriptor passing, parent-death signal.
//!
//! This is the only module of the crate allowed to use `unsafe`; every block says why it is
//! sound. Everything here is a thin, typed wrapper; policy lives in `master` and `worker`.
#![allow(unsafe_code)]

use std::io::{self, IoSlice, IoSliceMut};
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::sys::mman::{self, MapFlags, ProtFlags};
use nix::sys::signal::Signal;
use nix::sys::socket::{
    self, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use nix::unistd::{ForkResult, Pid};

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

/// Bytes per worker on the [`LoadBoard`]: a cache line, so workers never share one.
const LOAD_SLOT_BYTES: usize = 64;

/// Memory shared by the master and every worker (mapped before the first fork), one word per
/// worker: the connections it has open (high 32 bits) and the connections it has received
/// from the master (low 32 bits, wrapping). The worker stores, the master loads, both with
/// single atomic operations, so the master always reads a consistent pair, live, without a
/// system call or a wakeup on either side.
pub(crate) struct LoadBoard {
    base: NonNull<u8>,
    slots: usize,
}

impl LoadBoard {
    pub(crate) fn new(slots: usize) -> io::Result<LoadBoard> {
        let len = NonZeroUsize::new(slots.max(1) * LOAD_SLOT_BYTES)
            .ok_or_else(|| io::Error::other("empty load board"))?;
        // SAFETY: a fresh anonymous mapping at an address the kernel picks: it aliases no
        // Rust object. It is zero-filled and page-aligned, which `slot` relies on.
        let ptr = unsafe {
            mman::mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }
        .map_err(io::Error::from)?;
        Ok(LoadBoard {
            base: ptr.cast(),
            slots: slots.max(1),
        })
    }

    fn slot(&self, slot: usize) -> Option<&AtomicU64> {
        if slot >= self.slots {
            return None;
        }
        // SAFETY: `slot * LOAD_SLOT_BYTES + 8` is within the mapping, which lives as long as
        // `self`; the offset is a multiple of 64 from a page-aligned base, so the word is
        // aligned for `AtomicU64`; every bit pattern (zero-filled at first) is a valid
        // `AtomicU64`, and the word is only ever accessed atomically, by this process or by
        // the forked ones sharing the mapping.
        Some(unsafe {
            &*self
                .base
                .as_ptr()
                .add(slot * LOAD_SLOT_BYTES)
                .cast::<AtomicU64>()
        })
    }

    /// Publishes a worker's load (called in the worker).
    pub(crate) fn store(&self, slot: usize, open: u32, received: u32) {
        if let Some(word) = self.slot(slot) {
            word.store(
                u64::from(open) << 32 | u64::from(received),
                Ordering::Release,
            );
        }
    }

    /// Reads a worker's load (called in the master): `(open, received)`.
    pub(crate) fn load(&self, slot: usize) -> (u32, u32) {
        self.slot(slot).map_or((0, 0), |word| {
            let v = word.load(Ordering::Acquire);
            ((v >> 32) as u32, v as u32)
        })
    }
}

impl Drop for LoadBoard {
    fn drop(&mut self) {
        // SAFETY: `base` and the length are exactly the mapping made in `new`, and no
        // reference into it outlives `self` (`slot` borrows `self`).
        let _ = unsafe { mman::munmap(self.base.cast(), self.slots * LOAD_SLOT_BYTES) };
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
