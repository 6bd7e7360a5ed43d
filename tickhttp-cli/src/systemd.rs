//! systemd integration for `--mode single`: socket activation (`LISTEN_FDS`) and readiness,
//! stopping and watchdog notifications (`NOTIFY_SOCKET`, `WATCHDOG_USEC`).
//!
//! The worker pool does not use these yet: its master would need hooks for them.

use std::net::TcpListener;
use std::time::Duration;

use sd_notify::NotifyState;
use tickhttp::Server;

/// Whether systemd (or `systemd-socket-activate`) passed this process listening sockets:
/// `LISTEN_PID` is our pid and `LISTEN_FDS` is at least 1.
pub fn socket_activated() -> bool {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or(0);
    ours && count >= 1
}

/// The listening socket systemd passed as fd 3, when [`socket_activated`]; `None` otherwise.
/// Only the first socket is used; more are reported and left alone.
pub fn activated_listener() -> Result<Option<TcpListener>, tickhttp::Error> {
    if !socket_activated() {
        return Ok(None);
    }
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() > 1 {
        tracing::warn!(
            sockets = fds.len(),
            "systemd passed several sockets; serving only the first (fd 3)"
        );
    }
    let listener = fds
        .take_tcp_listener(0)
        .map_err(|source| tickhttp::Error::Io {
            context: "taking the listening socket passed by systemd (fd 3 must be a TCP socket)",
            source,
        })?;
    Ok(listener)
}

/// Sends `state` to the service manager when `NOTIFY_SOCKET` is set; a failure is logged,
/// never fatal.
pub fn notify(state: NotifyState<'_>) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let name = state.to_string();
    if let Err(e) = sd_notify::notify(&[state]) {
        tracing::warn!(error = %e, state = %name.trim(), "cannot notify systemd");
    } else {
        tracing::debug!(state = %name.trim(), "notified systemd");
    }
}

/// When systemd's watchdog is on (`WATCHDOG_USEC`), a background task on `server`'s loop
/// sends `WATCHDOG=1` every half interval, so a stalled loop is noticed and restarted.
/// Returns the interval.
pub fn start_watchdog(server: &mut Server) -> Option<Duration> {
    let interval = sd_notify::watchdog_enabled()?;
    let every = (interval / 2).max(Duration::from_millis(1));
    let timer = server.timer();
    server.spawn(async move {
        loop {
            notify(NotifyState::Watchdog);
            timer.sleep(every).await;
        }
    });
    Some(interval)
}
