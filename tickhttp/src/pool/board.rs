//! The stats board: the pool's observable state in memory shared by the master and every
//! worker, so any process can answer `/metrics`, `/status` and `/ready` for the whole pool.
//!
//! ```text
//!   [ master area ]  [ slot 1: master part | worker part ]  [ slot 2 ... ]
//!     written by        written by the        written by the
//!     the master        master (state, pid,   slot's worker (its server's
//!                       restarts, load)       counters and histogram)
//! ```
//!
//! Each area has a single writer and a sequence word (a seqlock): the writer makes it odd,
//! stores the fields, makes it even again; a reader retries while it is odd or changed. A
//! writer that dies mid-write leaves it odd; the next writer of the area continues from
//! there, and readers give up retrying after a bound and take the fields as they are. No
//! lock is ever held, so no process can block another.
//!
//! The master publishes after each turn of its loop (a few dozen stores, no allocation);
//! workers publish their counters every [`PUBLISH_INTERVAL`] and right before they answer
//! an admin request themselves: no message and no store per request.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use super::metrics::{
    ExitReason, PoolMetrics, RestartCounts, RestartReason, WorkerMetrics, WorkerState,
};
use super::shm::SharedWords;
use super::sys::monotonic_ns;
use super::{Architecture, BalancerKind};
use crate::admin::{AdminContext, Endpoint, Reply};
use crate::error::Error;
use crate::server::{DurationHistogram, EventSource, Metrics, Server, DURATION_BUCKETS};

/// How often a worker publishes its counters.
pub(crate) const PUBLISH_INTERVAL: Duration = Duration::from_millis(500);

const MASTER_WORDS: usize = 16;
/// The master's fields: six figures and a count per restart reason.
const MASTER_FIELDS: usize = 6 + RestartReason::ALL.len();
const SLOT_WORDS: usize = 64;
const WORKER_PART: usize = 16;
const BUCKETS: usize = DURATION_BUCKETS.len();

/// Readers retry a torn read this many times before taking the fields as they are.
const READ_RETRIES: usize = 64;

fn write_area(area: &[AtomicU64], values: &[u64]) {
    let Some((seq, fields)) = area.split_first() else {
        return;
    };
    // Odd while writing; a predecessor that died mid-write left it odd already.
    let start = seq.load(Ordering::Relaxed) | 1;
    seq.store(start, Ordering::Relaxed);
    fence(Ordering::Release);
    for (w, v) in fields.iter().zip(values) {
        w.store(*v, Ordering::Relaxed);
    }
    seq.store(start.wrapping_add(1), Ordering::Release);
}

fn read_area<const N: usize>(area: &[AtomicU64]) -> [u64; N] {
    let mut out = [0u64; N];
    let Some((seq, fields)) = area.split_first() else {
        return out;
    };
    for _ in 0..READ_RETRIES {
        let before = seq.load(Ordering::Acquire);
        for (o, w) in out.iter_mut().zip(fields) {
            *o = w.load(Ordering::Relaxed);
        }
        fence(Ordering::Acquire);
        if before & 1 == 0 && seq.load(Ordering::Relaxed) == before {
            return out;
        }
        std::hint::spin_loop();
    }
    out
}

fn state_code(s: WorkerState) -> u64 {
    match s {
        WorkerState::Starting => 1,
        WorkerState::Ready => 2,
        WorkerState::Stopping => 3,
        WorkerState::Restarting => 4,
        WorkerState::Failed => 5,
        WorkerState::Stopped => 6,
    }
}

fn state_from(code: u64) -> WorkerState {
    match code {
        1 => WorkerState::Starting,
        2 => WorkerState::Ready,
        3 => WorkerState::Stopping,
        5 => WorkerState::Failed,
        6 => WorkerState::Stopped,
        _ => WorkerState::Restarting,
    }
}

/// The master's figures, as published.
pub(crate) struct MasterFacts {
    pub(crate) stopping: bool,
    pub(crate) queue_length: usize,
    pub(crate) dispatched: u64,
    pub(crate) rejected: u64,
    pub(crate) started: Instant,
    pub(crate) restarts_by_reason: RestartCounts,
    pub(crate) retiring_workers: usize,
}

/// One slot, as the master publishes it.
pub(crate) struct SlotFacts {
    pub(crate) pid: Option<u32>,
    pub(crate) state: WorkerState,
    pub(crate) restarts: u32,
    pub(crate) last_exit: Option<ExitReason>,
    pub(crate) spawned_at: Instant,
    pub(crate) connections: u64,
    pub(crate) requests: u64,
    pub(crate) last_restart: Option<RestartReason>,
    pub(crate) rss_bytes: Option<u64>,
    /// When the worker's loop last turned ([`super::sys::monotonic_ms`]), once it is ready.
    pub(crate) heartbeat_ms: Option<u64>,
}

/// What a reader needs besides the board: the pool's fixed shape.
#[derive(Debug, Clone)]
pub(crate) struct PoolShape {
    pub(crate) architecture: Architecture,
    pub(crate) balancer: Option<BalancerKind>,
    pub(crate) weights: Vec<u32>,
}

/// The shared board (see the module documentation).
pub(crate) struct StatsBoard {
    shm: SharedWords,
    slots: usize,
}

impl StatsBoard {
    /// Maps a board for `slots` workers (before the first fork).
    pub(crate) fn new(slots: usize) -> std::io::Result<StatsBoard> {
        let slots = slots.max(1);
        Ok(StatsBoard {
            shm: SharedWords::new(MASTER_WORDS + slots * SLOT_WORDS)?,
            slots,
        })
    }

    fn master_area(&self) -> &[AtomicU64] {
        &self.shm.words()[..MASTER_WORDS]
    }

    fn slot_area(&self, slot: usize) -> Option<&[AtomicU64]> {
        if slot >= self.slots {
            return None;
        }
        let start = MASTER_WORDS + slot * SLOT_WORDS;
        self.shm.words().get(start..start + SLOT_WORDS)
    }

    /// Publishes the master's figures (in the master).
    pub(crate) fn publish_master(&self, f: &MasterFacts) {
        let now = Instant::now();
        let started =
            monotonic_ns().saturating_sub(nanos(now.saturating_duration_since(f.started)));
        let mut values = [0u64; MASTER_FIELDS];
        values[..6].copy_from_slice(&[
            u64::from(f.stopping),
            f.queue_length as u64,
            f.dispatched,
            f.rejected,
            started,
            f.retiring_workers as u64,
        ]);
        for (v, (_, n)) in values[6..].iter_mut().zip(f.restarts_by_reason.iter()) {
            *v = n;
        }
        write_area(self.master_area(), &values);
    }

    /// Publishes slot `slot` as the master sees it (in the master).
    pub(crate) fn publish_slot(&self, slot: usize, f: &SlotFacts) {
        let Some(area) = self.slot_area(slot) else {
            return;
        };
        let spawned = monotonic_ns().saturating_sub(nanos(
            Instant::now().saturating_duration_since(f.spawned_at),
        ));
        let (exit_kind, exit_value) = match f.last_exit {
            None => (0, 0),
            Some(ExitReason::Code(c)) => (1, c as u32 as u64),
            Some(ExitReason::Signal(s)) => (2, s as u32 as u64),
        };
        write_area(
            &area[..WORKER_PART],
            &[
                f.pid.map_or(0, u64::from),
                state_code(f.state),
                u64::from(f.restarts),
                exit_kind,
                exit_value,
                spawned,
                f.connections,
                f.requests,
                f.last_restart
                    .and_then(|r| RestartReason::ALL.iter().position(|x| *x == r))
                    .map_or(0, |i| i as u64 + 1),
                f.rss_bytes.unwrap_or(0),
                f.heartbeat_ms.unwrap_or(0),
            ],
        );
    }

    /// Publishes a worker's server counters (in the worker of `slot`).
    pub(crate) fn publish_server(&self, slot: usize, m: &Metrics) {
        let Some(area) = self.slot_area(slot) else {
            return;
        };
        let h = &m.request_duration;
        let mut values = [0u64; 11 + BUCKETS];
        values[..11].copy_from_slice(&[
            1, // published
            m.total_requests,
            m.successful_requests,
            m.failed_requests,
            m.total_connections,
            m.closed_connections,
            m.timed_out_connections,
            m.active_connections,
            h.count,
            (h.sum_seconds * 1e9) as u64,
            m.rate_limited_requests,
        ]);
        values[11..].copy_from_slice(&h.buckets);
        write_area(&area[WORKER_PART..], &values);
    }

    /// The server counters a slot's worker last published, if any.
    pub(crate) fn server(&self, slot: usize, uptime: Option<Duration>) -> Option<Metrics> {
        let area = self.slot_area(slot)?;
        let v: [u64; 11 + BUCKETS] = read_area(&area[WORKER_PART..]);
        if v[0] == 0 {
            return None;
        }
        let mut buckets = [0u64; BUCKETS];
        buckets.copy_from_slice(&v[11..]);
        let mut m = crate::server::metrics_from_parts(uptime.unwrap_or_default());
        m.total_requests = v[1];
        m.successful_requests = v[2];
        m.failed_requests = v[3];
        m.total_connections = v[4];
        m.closed_connections = v[5];
        m.timed_out_connections = v[6];
        m.active_connections = v[7];
        m.rate_limited_requests = v[10];
        m.request_duration = DurationHistogram::from_parts(buckets, v[8], v[9] as f64 / 1e9);
        Some(m)
    }

    /// Forgets a slot's server counters (a new process starts from zero).
    pub(crate) fn clear_server(&self, slot: usize) {
        if let Some(area) = self.slot_area(slot) {
            write_area(&area[WORKER_PART..], &[0u64; 11 + BUCKETS]);
        }
    }

    /// Fills in the server counters of every worker of `m` (in the master).
    pub(crate) fn attach_servers(&self, m: &mut PoolMetrics) {
        for (i, w) in m.workers.iter_mut().enumerate() {
            w.server = self.server(i, w.uptime);
        }
    }

    /// The whole pool as published (in any process).
    pub(crate) fn pool_metrics(&self, shape: &PoolShape) -> PoolMetrics {
        let now = monotonic_ns();
        let since = |t: u64| Duration::from_nanos(now.saturating_sub(t));
        let master: [u64; MASTER_FIELDS] = read_area(self.master_area());
        let now_ms = super::sys::monotonic_ms();
        let workers = (0..self.slots)
            .map(|i| {
                let v: [u64; 11] = self
                    .slot_area(i)
                    .map(|a| read_area(&a[..WORKER_PART]))
                    .unwrap_or_default();
                let pid = (v[0] != 0).then(|| u32::try_from(v[0]).unwrap_or(0));
                let uptime = pid.map(|_| since(v[5]));
                WorkerMetrics {
                    id: i as u32 + 1,
                    pid,
                    state: state_from(v[1]),
                    connections: v[6],
                    requests: v[7],
                    restarts: u32::try_from(v[2]).unwrap_or(u32::MAX),
                    last_exit: match v[3] {
                        1 => Some(ExitReason::Code(v[4] as u32 as i32)),
                        2 => Some(ExitReason::Signal(v[4] as u32 as i32)),
                        _ => None,
                    },
                    uptime,
                    weight: shape.weights.get(i).copied().unwrap_or(1),
                    server: self.server(i, uptime),
                    last_restart: v[8]
                        .checked_sub(1)
                        .and_then(|i| RestartReason::ALL.get(i as usize).copied()),
                    rss_bytes: (pid.is_some() && v[9] != 0).then_some(v[9]),
                    heartbeat_age: (pid.is_some() && v[10] != 0)
                        .then(|| Duration::from_millis(now_ms.saturating_sub(v[10]))),
                }
            })
            .collect::<Vec<_>>();
        let mut m = PoolMetrics {
            architecture: shape.architecture,
            balancer: shape.balancer,
            total_workers: self.slots,
            alive_workers: workers.iter().filter(|w| w.pid.is_some()).count(),
            queue_length: usize::try_from(master[1]).unwrap_or(usize::MAX),
            dispatched: master[2],
            rejected: master[3],
            rate_limited: 0,
            stopping: master[0] != 0,
            uptime: if master[4] == 0 {
                Duration::ZERO
            } else {
                since(master[4])
            },
            workers,
            restarts_by_reason: RestartCounts::from_counts(&master[6..]),
            retiring_workers: usize::try_from(master[5]).unwrap_or(0),
        };
        m.rate_limited = m.workers_rate_limited();
        m
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A worker's link to the board: its slot, and the pool's shape for rendering.
#[derive(Clone)]
pub(crate) struct WorkerBoard {
    pub(crate) board: Rc<StatsBoard>,
    pub(crate) slot: usize,
    pub(crate) shape: Rc<PoolShape>,
}

impl WorkerBoard {
    /// Publishes the server's counters now, then every [`PUBLISH_INTERVAL`]; answers the
    /// admin endpoints (when the server has an admin prefix) for the whole pool.
    pub(crate) fn attach(self, server: &mut Server) -> Result<(), Error> {
        self.board.publish_server(self.slot, &server.metrics());
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(|e| Error::io("creating the publication timer", e.into()))?;
        timer
            .set(
                Expiration::Interval(TimeSpec::from_duration(PUBLISH_INTERVAL)),
                TimerSetTimeFlags::empty(),
            )
            .map_err(|e| Error::io("arming the publication timer", e.into()))?;
        let answering = self.clone();
        server.set_admin_source(Some(Box::new(move |endpoint, ctx| {
            answering.answer(endpoint, ctx)
        })));
        server.add_event_source(Box::new(Publisher { timer, link: self }))?;
        Ok(())
    }

    fn answer(&self, endpoint: Endpoint, ctx: &AdminContext<'_>) -> Reply {
        // This worker's own figures are current; the others' are at most one interval old.
        self.board.publish_server(self.slot, ctx.metrics);
        match endpoint {
            Endpoint::Health => Reply::text(http::StatusCode::OK, "ok\n"),
            Endpoint::Ready => Reply::readiness(self.board.pool_metrics(&self.shape).is_ready()),
            Endpoint::Status => Reply::json(self.board.pool_metrics(&self.shape).to_json()),
            Endpoint::Metrics => {
                Reply::prometheus(self.board.pool_metrics(&self.shape).to_prometheus())
            }
        }
    }
}

struct Publisher {
    timer: TimerFd,
    link: WorkerBoard,
}

impl EventSource for Publisher {
    fn raw_fd(&self) -> RawFd {
        self.timer.as_fd().as_raw_fd()
    }

    fn on_ready(&mut self, server: &mut Server) {
        while self.timer.wait().is_ok() {}
        self.link
            .board
            .publish_server(self.link.slot, &server.metrics());
    }
}

/// The master's admin listener answers from its own view, with the same renderings.
pub(crate) fn master_reply(endpoint: Endpoint, m: &PoolMetrics) -> Reply {
    match endpoint {
        Endpoint::Health => Reply::text(http::StatusCode::OK, "ok\n"),
        Endpoint::Ready => Reply::readiness(m.is_ready()),
        Endpoint::Status => Reply::json(m.to_json()),
        Endpoint::Metrics => Reply::prometheus(m.to_prometheus()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> PoolShape {
        PoolShape {
            architecture: Architecture::Centralized,
            balancer: Some(BalancerKind::LeastConnections),
            weights: vec![1, 1],
        }
    }

    #[test]
    fn what_the_master_publishes_any_process_reads() {
        let board = StatsBoard::new(2).unwrap();
        let started = Instant::now();
        board.publish_master(&MasterFacts {
            stopping: false,
            queue_length: 3,
            dispatched: 10,
            rejected: 2,
            started,
            restarts_by_reason: RestartCounts::from_counts(&[1, 0, 3]),
            retiring_workers: 1,
        });
        board.publish_slot(
            1,
            &SlotFacts {
                pid: Some(4242),
                state: WorkerState::Ready,
                restarts: 2,
                last_exit: Some(ExitReason::Signal(9)),
                spawned_at: started,
                connections: 5,
                requests: 77,
                last_restart: Some(RestartReason::Reload),
                rss_bytes: Some(1 << 20),
                heartbeat_ms: Some(super::super::sys::monotonic_ms()),
            },
        );
        let m = board.pool_metrics(&shape());
        assert_eq!((m.queue_length, m.dispatched, m.rejected), (3, 10, 2));
        assert!(m.is_ready());
        let w = &m.workers[1];
        assert_eq!(w.pid, Some(4242));
        assert_eq!(w.state, WorkerState::Ready);
        assert_eq!((w.restarts, w.connections, w.requests), (2, 5, 77));
        assert_eq!(w.last_exit, Some(ExitReason::Signal(9)));
        assert!(w.uptime.is_some());
        assert_eq!(w.last_restart, Some(RestartReason::Reload));
        assert_eq!(w.rss_bytes, Some(1 << 20));
        assert!(w.heartbeat_age.is_some_and(|a| a < Duration::from_secs(5)));
        assert_eq!(m.retiring_workers, 1);
        assert_eq!(
            m.restarts_by_reason
                .iter()
                .map(|(_, n)| n)
                .collect::<Vec<_>>(),
            vec![1, 0, 3, 0, 0, 0]
        );
        assert_eq!(m.workers[0].pid, None);
        assert_eq!(m.workers[0].state, WorkerState::Restarting);
        assert_eq!(m.workers[0].last_restart, None);
        assert!(w.server.is_none());
    }

    #[test]
    fn server_counters_round_trip() {
        let board = StatsBoard::new(1).unwrap();
        let mut m = crate::server::metrics_from_parts(Duration::from_secs(1));
        m.total_requests = 9;
        m.active_connections = 2;
        let mut buckets = [0; BUCKETS];
        buckets[3] = 4;
        buckets[11] = 9;
        m.request_duration = DurationHistogram::from_parts(buckets, 9, 0.5);
        board.publish_server(0, &m);
        let got = board.server(0, None).unwrap();
        assert_eq!(got.total_requests, 9);
        assert_eq!(got.active_connections, 2);
        assert_eq!(got.request_duration.buckets, buckets);
        assert!((got.request_duration.sum_seconds - 0.5).abs() < 1e-6);
        board.clear_server(0);
        assert!(board.server(0, None).is_none());
        assert!(
            board.server(5, None).is_none(),
            "out of range reads as nothing"
        );
    }

    #[test]
    fn a_writer_that_died_mid_write_does_not_wedge_readers() {
        let board = StatsBoard::new(1).unwrap();
        board.master_area()[0].store(7, Ordering::Relaxed); // odd: torn
        let m = board.pool_metrics(&shape());
        assert_eq!(m.dispatched, 0);
        board.publish_master(&MasterFacts {
            stopping: true,
            queue_length: 0,
            dispatched: 1,
            rejected: 0,
            started: Instant::now(),
            restarts_by_reason: RestartCounts::default(),
            retiring_workers: 0,
        });
        assert_eq!(board.master_area()[0].load(Ordering::Relaxed), 8);
        let m = board.pool_metrics(&shape());
        assert!(m.stopping && !m.is_ready());
    }
}
