//! Zero-downtime binary upgrade (`SIGUSR2`): the running master starts a new master from the
//! binary now on disk, hands it the listening sockets, and retires its own generation only
//! once the new one reports ready.
//!
//! ```text
//!   old master ── fork ── exec /proc/self/exe (same arguments)
//!       │                  env TICKHTTP_INHERIT_FDS=listen:3,status:4
//!       │                  env TICKHTTP_UPGRADE_READY_FD=5
//!       │                        │ binds nothing: takes the inherited sockets
//!       │                        │ starts its workers; once all are ready:
//!       ◀──── "R" on the ready pipe ┘
//!   drains and exits          serves on (same sockets: no connection lost)
//! ```
//!
//! The sockets are the same kernel objects in both generations, so nothing is rebound and
//! no accept queue is lost: in shared-socket mode the new workers accept from the queue the
//! old ones stop reading, in centralized mode both masters accept from it until the old one
//! closes its copy. If the new master exits, or is not ready within the timeout, the old
//! generation keeps serving, the failure is logged, and the new master is stopped.

use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::fcntl::OFlag;
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::unistd::Pid;

use super::sys::{self, Forked};
use crate::error::Error;

/// The listening sockets handed to a new master: `listen:FD,status:FD`.
pub(crate) const INHERIT_FDS: &str = "TICKHTTP_INHERIT_FDS";
/// The pipe on which the new master says it is ready.
pub(crate) const READY_FD: &str = "TICKHTTP_UPGRADE_READY_FD";
/// The byte that says "ready".
const READY: u8 = b'R';

/// What a master started by an upgrade inherited from its predecessor.
#[derive(Default)]
pub(crate) struct Inherited {
    pub(crate) listen: Option<TcpListener>,
    pub(crate) status: Option<TcpListener>,
    pub(crate) ready: Option<OwnedFd>,
}

/// Takes the sockets and the ready pipe named in the environment, if this process was
/// started by an upgrade, and removes the variables so that nothing started from here sees
/// them. A descriptor that is not what the variable says is refused (an error naming it).
pub(crate) fn take_inherited() -> Result<Inherited, Error> {
    let mut inherited = Inherited::default();
    let fds = std::env::var(INHERIT_FDS).ok();
    let ready = std::env::var(READY_FD).ok();
    std::env::remove_var(INHERIT_FDS);
    std::env::remove_var(READY_FD);
    let bad = |what: &str| Error::Pool(format!("{INHERIT_FDS}: {what}"));
    if let Some(list) = fds {
        for item in list.split(',').filter(|s| !s.is_empty()) {
            let (name, fd) = item
                .split_once(':')
                .ok_or_else(|| bad(&format!("expected name:fd, got {item:?}")))?;
            let fd: RawFd = fd
                .parse()
                .map_err(|_| bad(&format!("not a descriptor number: {item:?}")))?;
            let listener = sys::inherited_listener(fd)
                .map_err(|e| bad(&format!("descriptor {fd} ({name}): {e}")))?;
            match name {
                "listen" => inherited.listen = Some(listener),
                "status" => inherited.status = Some(listener),
                _ => return Err(bad(&format!("unknown socket name {name:?}"))),
            }
        }
    }
    if let Some(fd) = ready {
        let fd: RawFd = fd
            .parse()
            .map_err(|_| Error::Pool(format!("{READY_FD}: not a descriptor number: {fd:?}")))?;
        let pipe = sys::inherited_fd(fd)
            .map_err(|e| Error::Pool(format!("{READY_FD}: descriptor {fd}: {e}")))?;
        sys::set_cloexec(pipe.as_raw_fd(), true)
            .map_err(|e| Error::io("marking the ready pipe", e))?;
        inherited.ready = Some(pipe);
    }
    Ok(inherited)
}

/// Tells the old master this one is ready (consumes the pipe; a gone reader is not an
/// error: the old master has timed out already and stopped this one, or will).
pub(crate) fn report_ready(pipe: OwnedFd) {
    let mut file = std::fs::File::from(pipe);
    if let Err(e) = file.write_all(&[READY]) {
        tracing::warn!(error = %e, "cannot tell the previous master this one is ready");
    }
}

/// A new master being started.
pub(crate) struct Upgrade {
    pub(crate) pid: Pid,
    /// The read end of the ready pipe (non-blocking).
    pub(crate) ready: OwnedFd,
}

/// What the ready pipe said.
pub(crate) enum Heard {
    /// Nothing yet.
    Nothing,
    /// The new master is ready.
    Ready,
    /// The new master closed the pipe without saying ready: it exited.
    Gone,
}

impl Upgrade {
    /// Reads the ready pipe without blocking.
    pub(crate) fn hear(&self) -> Heard {
        let mut file = match self.ready.try_clone() {
            Ok(fd) => std::fs::File::from(fd),
            Err(_) => return Heard::Gone,
        };
        let mut buf = [0u8; 16];
        loop {
            match file.read(&mut buf) {
                Ok(0) => return Heard::Gone,
                Ok(n) if buf[..n].contains(&READY) => return Heard::Ready,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Heard::Nothing,
                Err(_) => return Heard::Gone,
            }
        }
    }
}

/// Forks and execs a new master from `/proc/self/exe` with this process's arguments,
/// handing it `sockets` (name, descriptor) and the write end of a ready pipe. Called in the
/// single-threaded master. The child never returns from here.
pub(crate) fn start_new_master(
    sockets: &[(&str, RawFd)],
    signal_mask: &SigSet,
) -> Result<Upgrade, Error> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
        .map_err(|e| Error::io("creating the upgrade's ready pipe", e.into()))?;
    let exe = std::fs::read_link("/proc/self/exe")
        .map_err(|e| Error::io("finding this program's binary", e))?;
    // `/proc/self/exe` of a replaced binary reads "PATH (deleted)": the new binary is at PATH.
    let exe = match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
        Some(path) => std::path::PathBuf::from(path),
        None => exe,
    };
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let _ = io::stdout().flush();
    match sys::fork()? {
        Forked::Parent(pid) => {
            drop(write);
            Ok(Upgrade { pid, ready: read })
        }
        Forked::Child => {
            drop(read);
            let code =
                exec_new_master(&exe, &args, sockets, write.as_fd().as_raw_fd(), signal_mask);
            std::process::exit(code)
        }
    }
}

/// In the forked child: makes the handed-over descriptors survive `exec`, then execs.
/// Returns only on failure, with the exit code to use.
fn exec_new_master(
    exe: &std::path::Path,
    args: &[std::ffi::OsString],
    sockets: &[(&str, RawFd)],
    ready: RawFd,
    signal_mask: &SigSet,
) -> i32 {
    use std::os::unix::process::CommandExt;
    let mut inherit = String::new();
    for (name, fd) in sockets {
        if let Err(e) = sys::set_cloexec(*fd, false) {
            tracing::error!(error = %e, "upgrade: cannot hand over the {name} socket");
            return 126;
        }
        if !inherit.is_empty() {
            inherit.push(',');
        }
        inherit.push_str(&format!("{name}:{fd}"));
    }
    if let Err(e) = sys::set_cloexec(ready, false) {
        tracing::error!(error = %e, "upgrade: cannot hand over the ready pipe");
        return 126;
    }
    // The master blocks its signals for its signalfd; the new program starts as this
    // program did.
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(signal_mask), None);
    let err = std::process::Command::new(exe)
        .args(args)
        .env(INHERIT_FDS, inherit)
        .env(READY_FD, ready.to_string())
        .exec();
    tracing::error!(error = %err, exe = %exe.display(), "upgrade: cannot start the new binary");
    127
}
