//! Signals delivered through the server's own poll: SIGTERM, SIGINT and SIGQUIT start a
//! graceful shutdown; SIGHUP reloads the TLS certificates.
//!
//! The handler only writes a byte to a pipe (async-signal-safe, via `signal-hook`); the pipe
//! is an [`EventSource`] of the server, so the signal wakes `wait()` and the action runs on
//! the loop's thread.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};

use crate::error::Error;
use crate::server::{EventSource, Server, SourceId};

/// What a signal does once it reaches the loop.
enum Action {
    Shutdown(Duration),
    ReloadTls,
}

struct SignalPipe {
    read: UnixStream,
    action: Action,
}

impl SignalPipe {
    /// Drains the pipe; whether any signal arrived.
    fn drain(&mut self) -> bool {
        let mut buf = [0u8; 64];
        let mut got = false;
        loop {
            match self.read.read(&mut buf) {
                Ok(0) => return got,
                Ok(_) => got = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return got,
            }
        }
    }
}

impl EventSource for SignalPipe {
    fn raw_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    fn on_ready(&mut self, server: &mut Server) {
        if !self.drain() {
            return;
        }
        match self.action {
            Action::Shutdown(deadline) => {
                if !server.is_shutting_down() {
                    tracing::info!("signal received; shutting down gracefully");
                    server.shutdown(deadline);
                }
            }
            Action::ReloadTls => reload_tls(server),
        }
    }
}

fn reload_tls(server: &mut Server) {
    let Some(tls) = server.config().tls.clone() else {
        tracing::info!("SIGHUP: nothing to reload (TLS is off)");
        return;
    };
    match tls.reload() {
        Ok(fresh) => {
            server.set_tls(Some(fresh));
            tracing::info!("SIGHUP: TLS certificates reloaded; open connections keep theirs");
        }
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: TLS reload failed; keeping the old certificates")
        }
    }
}

/// Registers `signals` to write into a pipe that `server` watches, running `action`.
fn watch(server: &mut Server, signals: &[i32], action: Action) -> Result<SourceId, Error> {
    let err = |e| Error::io("creating the signal pipe", e);
    let (read, write) = UnixStream::pair().map_err(err)?;
    read.set_nonblocking(true).map_err(err)?;
    write.set_nonblocking(true).map_err(err)?;
    for &sig in signals {
        let w = write.try_clone().map_err(err)?;
        signal_hook::low_level::pipe::register(sig, w)
            .map_err(|e| Error::io("installing a signal handler", e))?;
    }
    server.add_event_source(Box::new(SignalPipe { read, action }))
}

/// Makes SIGTERM, SIGINT and SIGQUIT start [`Server::shutdown`] with `deadline`.
///
/// ```no_run
/// let mut server = tickhttp::Server::bind(tickhttp::ServerConfig::default())?;
/// tickhttp::signal::shutdown_on_signals(&mut server, std::time::Duration::from_secs(10))?;
/// while server.is_running() {
///     server.wait(None)?;
///     while let Some(req) = server.get_request() {
///         server.respond(req.id(), http::Response::new("bye".into()))?;
///     }
/// }
/// # Ok::<(), tickhttp::Error>(())
/// ```
pub fn shutdown_on_signals(server: &mut Server, deadline: Duration) -> Result<SourceId, Error> {
    watch(
        server,
        &[SIGTERM, SIGINT, SIGQUIT],
        Action::Shutdown(deadline),
    )
}

/// Makes SIGHUP re-read the TLS certificate and key files. New connections get the new
/// certificates; open connections are not dropped. A failed reload keeps the old ones.
pub fn reload_tls_on_hup(server: &mut Server) -> Result<SourceId, Error> {
    watch(server, &[SIGHUP], Action::ReloadTls)
}
