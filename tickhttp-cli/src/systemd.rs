//! systemd integration: socket activation (`LISTEN_FDS`) and readiness, reloading, stopping
//! and watchdog notifications (`NOTIFY_SOCKET`, `WATCHDOG_USEC`), for one server
//! (`--mode single`) and for the worker pool's master (through its [`PoolEvent`]s).
//!
//! A binary upgrade (`SIGUSR2`) starts a new master as a child of the old one; it tells
//! systemd `MAINPID=` itself when it is ready, before the old master exits, so the unit needs
//! `NotifyAccess=all` (see `deploy/systemd/`).

use std::net::TcpListener;
use std::time::Duration;

use sd_notify::NotifyState;
use tickhttp::pool::PoolEvent;
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

/// Sends several states in one message (so `MAINPID=` and `READY=1` arrive together).
fn notify_all(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// The watchdog interval systemd asks for (`WATCHDOG_USEC`), if any. `WATCHDOG_PID`, when
/// set, must name this process or its parent: a master started by an upgrade is the child
/// of the one systemd started, and takes over its watchdog.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
    {
        let parent = std::os::unix::process::parent_id();
        if pid != std::process::id() && pid != parent {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

/// Tells systemd what the pool's master reports: `READY=1` with `MAINPID=` once every worker
/// is ready (also for a master started by an upgrade, which becomes the main process),
/// `RELOADING=1` and `READY=1` around a rolling reload, `STOPPING=1`, and `WATCHDOG=1` on
/// each heartbeat.
pub fn on_pool_event(event: PoolEvent) {
    let pid = std::process::id();
    match event {
        PoolEvent::Ready { .. } => notify_all(&[NotifyState::MainPid(pid), NotifyState::Ready]),
        PoolEvent::Reloading => match NotifyState::monotonic_usec_now() {
            Ok(now) => notify_all(&[NotifyState::Reloading, now]),
            Err(_) => notify_all(&[NotifyState::Reloading]),
        },
        PoolEvent::Reloaded | PoolEvent::UpgradeFailed => notify_all(&[NotifyState::Ready]),
        PoolEvent::Stopping => notify_all(&[NotifyState::Stopping]),
        PoolEvent::Heartbeat => notify_all(&[NotifyState::Watchdog]),
        // The new master sends MAINPID= itself when it is ready; this one keeps the
        // watchdog fed until it exits.
        _ => {}
    }
}

/// When systemd's watchdog is on (`WATCHDOG_USEC`), a background task on `server`'s loop
/// sends `WATCHDOG=1` every half interval, so a stalled loop is noticed and restarted.
/// Returns the interval.
pub fn start_watchdog(server: &mut Server) -> Option<Duration> {
    let interval = watchdog_interval()?;
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
