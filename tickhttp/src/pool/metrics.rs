//! The master's view of the pool, and its JSON and Prometheus renderings.

use std::fmt::{self, Write};
use std::time::Duration;

use super::{Architecture, BalancerKind};

/// Where a worker slot is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerState {
    /// Forked, not yet ready.
    Starting,
    /// Serving.
    Ready,
    /// Draining after a signal; takes no new connections.
    Stopping,
    /// Dead, restarting after a delay.
    Restarting,
    /// Stopped restarting: its crash-loop breaker tripped.
    Failed,
    /// Exited during the pool's shutdown.
    Stopped,
}

impl WorkerState {
    /// The state's name in reports.
    pub fn as_str(&self) -> &'static str {
        match self {
            WorkerState::Starting => "starting",
            WorkerState::Ready => "ready",
            WorkerState::Stopping => "stopping",
            WorkerState::Restarting => "restarting",
            WorkerState::Failed => "failed",
            WorkerState::Stopped => "stopped",
        }
    }
}

impl fmt::Display for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExitReason {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it (the signal number).
    Signal(i32),
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ExitReason::Code(c) => write!(f, "exit code {c}"),
            ExitReason::Signal(s) => match nix::sys::signal::Signal::try_from(s) {
                Ok(sig) => write!(f, "signal {}", sig.as_str()),
                Err(_) => write!(f, "signal {s}"),
            },
        }
    }
}

/// Why the master started a new process for a worker slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RestartReason {
    /// The worker died on its own (a crash, an exit, a kill from outside).
    Crash,
    /// Its event loop stopped turning for longer than `worker_timeout`; the master killed it.
    Timeout,
    /// A rolling reload (`SIGHUP`).
    Reload,
    /// It served its share of requests (`max_requests`, with jitter).
    MaxRequests,
    /// Its resident memory passed `max_rss`.
    MaxRss,
    /// It reached `max_age` (with jitter).
    MaxAge,
}

impl RestartReason {
    /// Every reason, in report order.
    pub const ALL: [RestartReason; 6] = [
        RestartReason::Crash,
        RestartReason::Timeout,
        RestartReason::Reload,
        RestartReason::MaxRequests,
        RestartReason::MaxRss,
        RestartReason::MaxAge,
    ];

    /// The reason's name in reports.
    pub fn as_str(&self) -> &'static str {
        match self {
            RestartReason::Crash => "crash",
            RestartReason::Timeout => "timeout",
            RestartReason::Reload => "reload",
            RestartReason::MaxRequests => "max_requests",
            RestartReason::MaxRss => "max_rss",
            RestartReason::MaxAge => "max_age",
        }
    }

    fn index(self) -> usize {
        RestartReason::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or(0)
    }
}

impl fmt::Display for RestartReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Restarts and replacements of worker processes, counted by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RestartCounts([u64; 6]);

impl RestartCounts {
    /// Counts one more for `reason`.
    pub fn add(&mut self, reason: RestartReason) {
        self.0[reason.index()] += 1;
    }

    /// Counts in [`RestartReason::ALL`] order (missing ones are zero).
    pub(crate) fn from_counts(counts: &[u64]) -> RestartCounts {
        let mut c = RestartCounts::default();
        for (slot, n) in c.0.iter_mut().zip(counts) {
            *slot = *n;
        }
        c
    }

    /// The count for `reason`.
    pub fn get(&self, reason: RestartReason) -> u64 {
        self.0[reason.index()]
    }

    /// Every reason with its count, in [`RestartReason::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (RestartReason, u64)> + '_ {
        RestartReason::ALL.iter().map(|r| (*r, self.get(*r)))
    }

    /// A JSON object, `{"crash":0,...}`.
    pub fn to_json(&self) -> String {
        let mut s = String::from("{");
        for (i, (r, n)) in self.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(s, "\"{r}\":{n}");
        }
        s.push('}');
        s
    }
}

/// One worker slot, as the master sees it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WorkerMetrics {
    /// The worker id (`1..=N`, stable across restarts).
    pub id: u32,
    /// The current process, if one is alive.
    pub pid: Option<u32>,
    /// Where the slot is in its life.
    pub state: WorkerState,
    /// Open connections: the worker's last report plus connections sent since.
    pub connections: u64,
    /// Requests received by this slot's workers, all incarnations.
    pub requests: u64,
    /// Times the slot was restarted.
    pub restarts: u32,
    /// How the previous process of the slot ended.
    pub last_exit: Option<ExitReason>,
    /// Age of the current process.
    pub uptime: Option<Duration>,
    /// Relative share under the weighted balancer.
    pub weight: u32,
    /// The worker's own server counters (requests, responses, connections, durations), as
    /// it last published them on the shared board; `None` before its first publication.
    pub server: Option<crate::server::Metrics>,
    /// Why the slot's current process was started (`None` for its first).
    pub last_restart: Option<RestartReason>,
    /// Resident memory of the current process at its last report (the master's view).
    pub rss_bytes: Option<u64>,
    /// Time since the current process's event loop last turned (the master's view).
    pub heartbeat_age: Option<Duration>,
}

/// A snapshot of the master's counters.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PoolMetrics {
    /// The architecture in use.
    pub architecture: Architecture,
    /// The balancer, in centralized mode.
    pub balancer: Option<BalancerKind>,
    /// Configured worker slots.
    pub total_workers: usize,
    /// Slots with a live process.
    pub alive_workers: usize,
    /// Connections waiting in the master for a worker (centralized mode).
    pub queue_length: usize,
    /// Connections handed to workers (centralized mode).
    pub dispatched: u64,
    /// Connections answered 503 by the master: queue full, waited too long, or stopping.
    pub rejected: u64,
    /// Requests answered 429 by the pool-wide rate limit: the sum of the workers' last
    /// published `rate_limited_requests`.
    pub rate_limited: u64,
    /// Whether the pool is shutting down.
    pub stopping: bool,
    /// Time since the master started.
    pub uptime: Duration,
    /// Per slot, in id order.
    pub workers: Vec<WorkerMetrics>,
    /// Worker processes started for a slot after its first, by reason (the master's view).
    pub restarts_by_reason: RestartCounts,
    /// Replaced or removed workers still draining.
    pub retiring_workers: usize,
}

impl PoolMetrics {
    /// The sum of the workers' rate-limited requests, as last published.
    pub(crate) fn workers_rate_limited(&self) -> u64 {
        self.workers
            .iter()
            .filter_map(|w| w.server.as_ref())
            .map(|s| s.rate_limited_requests)
            .sum()
    }

    /// Workers ready to serve.
    pub fn ready_workers(&self) -> usize {
        self.workers
            .iter()
            .filter(|w| w.state == WorkerState::Ready)
            .count()
    }

    /// Whether the pool takes traffic: at least one worker is ready and the pool is not
    /// stopping (the `/ready` endpoint).
    pub fn is_ready(&self) -> bool {
        !self.stopping && self.ready_workers() > 0
    }

    /// The largest minus the smallest connection count over ready workers: how unevenly the
    /// live load is spread.
    pub fn connection_spread(&self) -> u64 {
        let ready = self
            .workers
            .iter()
            .filter(|w| w.state == WorkerState::Ready)
            .map(|w| w.connections);
        let (min, max) = ready.fold((u64::MAX, 0), |(lo, hi), c| (lo.min(c), hi.max(c)));
        max.saturating_sub(min.min(max))
    }

    /// A JSON object (the status endpoint's `GET /`).
    pub fn to_json(&self) -> String {
        let mut s = String::with_capacity(256 + 200 * self.workers.len());
        let _ = write!(
            s,
            "{{\"architecture\":\"{}\",\"balancer\":{},\"total_workers\":{},\"alive_workers\":{},\
             \"ready_workers\":{},\"ready\":{},\"queue_length\":{},\"dispatched\":{},\
             \"rejected\":{},\"rate_limited\":{},\"stopping\":{},\
             \"uptime_s\":{:.3},\"connection_spread\":{},\"restarts_by_reason\":{},\
             \"retiring_workers\":{},\"workers\":[",
            self.architecture,
            self.balancer
                .map_or("null".to_string(), |b| format!("\"{b}\"")),
            self.total_workers,
            self.alive_workers,
            self.ready_workers(),
            self.is_ready(),
            self.queue_length,
            self.dispatched,
            self.rejected,
            self.rate_limited,
            self.stopping,
            self.uptime.as_secs_f64(),
            self.connection_spread(),
            self.restarts_by_reason.to_json(),
            self.retiring_workers,
        );
        for (i, w) in self.workers.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(
                s,
                "{{\"id\":{},\"pid\":{},\"state\":\"{}\",\"connections\":{},\"requests\":{},\
                 \"restarts\":{},\"last_exit\":{},\"uptime_s\":{},\"weight\":{},\
                 \"last_restart\":{},\"rss_bytes\":{},\"heartbeat_age_ms\":{}}}",
                w.id,
                w.pid.map_or("null".to_string(), |p| p.to_string()),
                w.state,
                w.connections,
                w.requests,
                w.restarts,
                w.last_exit
                    .map_or("null".to_string(), |e| format!("\"{e}\"")),
                w.uptime
                    .map_or("null".to_string(), |u| format!("{:.3}", u.as_secs_f64())),
                w.weight,
                w.last_restart
                    .map_or("null".to_string(), |r| format!("\"{r}\"")),
                w.rss_bytes.map_or("null".to_string(), |b| b.to_string()),
                w.heartbeat_age
                    .map_or("null".to_string(), |a| a.as_millis().to_string()),
            );
        }
        s.push_str("]}\n");
        s
    }

    /// Prometheus text exposition (`GET /metrics`): the master's figures and, for each
    /// worker that published them, its server counters labelled `worker="N"`.
    pub fn to_prometheus(&self) -> String {
        let servers: Vec<(Option<u32>, &crate::server::Metrics)> = self
            .workers
            .iter()
            .filter_map(|w| w.server.as_ref().map(|m| (Some(w.id), m)))
            .collect();
        crate::admin::render_prometheus(&servers, Some(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PoolMetrics {
        PoolMetrics {
            architecture: Architecture::Centralized,
            balancer: Some(BalancerKind::LeastConnections),
            total_workers: 2,
            alive_workers: 1,
            queue_length: 0,
            dispatched: 10,
            rejected: 1,
            rate_limited: 0,
            stopping: false,
            uptime: Duration::from_millis(1500),
            workers: vec![
                WorkerMetrics {
                    id: 1,
                    pid: Some(100),
                    state: WorkerState::Ready,
                    connections: 3,
                    requests: 7,
                    restarts: 0,
                    last_exit: None,
                    uptime: Some(Duration::from_secs(1)),
                    weight: 1,
                    server: None,
                    last_restart: None,
                    rss_bytes: Some(8 << 20),
                    heartbeat_age: Some(Duration::from_millis(250)),
                },
                WorkerMetrics {
                    id: 2,
                    pid: None,
                    state: WorkerState::Restarting,
                    connections: 0,
                    requests: 3,
                    restarts: 1,
                    last_exit: Some(ExitReason::Signal(9)),
                    uptime: None,
                    weight: 1,
                    server: None,
                    last_restart: Some(RestartReason::Crash),
                    rss_bytes: None,
                    heartbeat_age: None,
                },
            ],
            restarts_by_reason: {
                let mut c = RestartCounts::default();
                c.add(RestartReason::Crash);
                c.add(RestartReason::Reload);
                c.add(RestartReason::Reload);
                c
            },
            retiring_workers: 1,
        }
    }

    #[test]
    fn json_names_every_field() {
        let json = sample().to_json();
        for needle in [
            "\"architecture\":\"centralized\"",
            "\"balancer\":\"least-connections\"",
            "\"alive_workers\":1",
            "\"rejected\":1",
            "\"last_exit\":\"signal SIGKILL\"",
            "\"state\":\"restarting\"",
            "\"pid\":null",
            "\"restarts_by_reason\":{\"crash\":1,\"timeout\":0,\"reload\":2,\"max_requests\":0,\
             \"max_rss\":0,\"max_age\":0}",
            "\"retiring_workers\":1",
            "\"last_restart\":\"crash\"",
            "\"rss_bytes\":8388608",
            "\"heartbeat_age_ms\":250",
        ] {
            assert!(json.contains(needle), "{needle} missing from {json}");
        }
    }

    #[test]
    fn spread_counts_ready_workers_only() {
        let mut m = sample();
        assert_eq!(m.connection_spread(), 0);
        m.workers[1].state = WorkerState::Ready;
        assert_eq!(m.connection_spread(), 3);
    }

    #[test]
    fn prometheus_has_per_worker_series() {
        let text = sample().to_prometheus();
        assert!(text.contains("tickhttp_pool_worker_connections{worker=\"1\"} 3"));
        assert!(text.contains("tickhttp_pool_worker_restarts_total{worker=\"2\"} 1"));
    }
}
