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
    /// Whether the pool is shutting down.
    pub stopping: bool,
    /// Time since the master started.
    pub uptime: Duration,
    /// Per slot, in id order.
    pub workers: Vec<WorkerMetrics>,
}

impl PoolMetrics {
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
             \"queue_length\":{},\"dispatched\":{},\"rejected\":{},\"stopping\":{},\
             \"uptime_s\":{:.3},\"connection_spread\":{},\"workers\":[",
            self.architecture,
            self.balancer
                .map_or("null".to_string(), |b| format!("\"{b}\"")),
            self.total_workers,
            self.alive_workers,
            self.queue_length,
            self.dispatched,
            self.rejected,
            self.stopping,
            self.uptime.as_secs_f64(),
            self.connection_spread(),
        );
        for (i, w) in self.workers.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(
                s,
                "{{\"id\":{},\"pid\":{},\"state\":\"{}\",\"connections\":{},\"requests\":{},\
                 \"restarts\":{},\"last_exit\":{},\"uptime_s\":{},\"weight\":{}}}",
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
            );
        }
        s.push_str("]}\n");
        s
    }

    /// Prometheus text exposition (the status endpoint's `GET /metrics`).
    pub fn to_prometheus(&self) -> String {
        let mut s = String::new();
        let mut gauge = |name: &str, kind: &str, help: &str, value: String| {
            let _ = write!(
                s,
                "# HELP tickhttp_pool_{name} {help}\n# TYPE tickhttp_pool_{name} {kind}\ntickhttp_pool_{name} {value}\n"
            );
        };
        gauge(
            "workers",
            "gauge",
            "Configured worker slots.",
            self.total_workers.to_string(),
        );
        gauge(
            "workers_alive",
            "gauge",
            "Slots with a live process.",
            self.alive_workers.to_string(),
        );
        gauge(
            "queue_length",
            "gauge",
            "Connections waiting for a worker.",
            self.queue_length.to_string(),
        );
        gauge(
            "dispatched_total",
            "counter",
            "Connections handed to workers.",
            self.dispatched.to_string(),
        );
        gauge(
            "rejected_total",
            "counter",
            "Connections answered 503 by the master.",
            self.rejected.to_string(),
        );
        type Series = (
            &'static str,
            &'static str,
            &'static str,
            fn(&WorkerMetrics) -> u64,
        );
        let per_worker: [Series; 4] = [
            (
                "worker_connections",
                "gauge",
                "Open connections per worker.",
                |w| w.connections,
            ),
            (
                "worker_requests_total",
                "counter",
                "Requests per worker slot.",
                |w| w.requests,
            ),
            (
                "worker_restarts_total",
                "counter",
                "Restarts per worker slot.",
                |w| u64::from(w.restarts),
            ),
            (
                "worker_up",
                "gauge",
                "1 while the slot's worker is ready.",
                |w| u64::from(w.state == WorkerState::Ready),
            ),
        ];
        for (name, kind, help, value) in per_worker {
            let _ = writeln!(
                s,
                "# HELP tickhttp_pool_{name} {help}\n# TYPE tickhttp_pool_{name} {kind}"
            );
            for w in &self.workers {
                let _ = writeln!(
                    s,
                    "tickhttp_pool_{name}{{worker=\"{}\"}} {}",
                    w.id,
                    value(w)
                );
            }
        }
        s
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
                },
            ],
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
