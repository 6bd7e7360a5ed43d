//! Server counters. Every figure is fed by a real event.

use std::time::{Duration, Instant};

use http::StatusCode;

/// A snapshot of a server's counters (the reference system's metric keys, all fed).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Metrics {
    /// Time since the server started.
    pub uptime: Duration,
    /// Requests received: queued for the app, or answered by the server (errors, timeouts).
    pub total_requests: u64,
    /// Responses with a status below 400.
    pub successful_requests: u64,
    /// Responses with a status of 400 or above, server-generated errors included.
    pub failed_requests: u64,
    /// Connections open now.
    pub active_connections: u64,
    /// Connections accepted or added since start.
    pub total_connections: u64,
    /// Connections closed since start.
    pub closed_connections: u64,
    /// Connections closed by a timeout (idle, header, body, write).
    pub timed_out_connections: u64,
    /// Requests answered 429 by the rate limit (counted in `failed_requests` too).
    pub rate_limited_requests: u64,
    /// Static-file cache hits.
    pub cache_hits: u64,
    /// Static-file cache misses.
    pub cache_misses: u64,
    /// Hits over lookups, in percent.
    pub cache_hit_rate: f64,
    /// Mean time from a complete request to its response, in milliseconds.
    pub avg_request_duration_ms: f64,
    /// Shortest such time, in milliseconds.
    pub min_request_duration_ms: f64,
    /// Longest such time, in milliseconds.
    pub max_request_duration_ms: f64,
    /// Requests per second of uptime.
    pub requests_per_second: f64,
    /// Request-to-response times.
    pub request_duration: DurationHistogram,
}

/// Upper bounds, in seconds, of the request-duration histogram's buckets (Prometheus'
/// default buckets, plus 1 ms for a server that mostly answers from memory).
pub const DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram of request-to-response times, in the shape Prometheus exposes.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct DurationHistogram {
    /// Responses at or under each bound of [`DURATION_BUCKETS`] (cumulative, same order).
    pub buckets: [u64; DURATION_BUCKETS.len()],
    /// All responses timed (the `+Inf` bucket).
    pub count: u64,
    /// Their summed duration, in seconds.
    pub sum_seconds: f64,
}

impl DurationHistogram {
    /// A histogram from its parts (cumulative bucket counts, total count, summed seconds).
    pub fn from_parts(
        buckets: [u64; DURATION_BUCKETS.len()],
        count: u64,
        sum_seconds: f64,
    ) -> Self {
        DurationHistogram {
            buckets,
            count,
            sum_seconds,
        }
    }

    /// `(upper bound in seconds, cumulative count)` pairs, ending with `+Inf`.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        DURATION_BUCKETS
            .iter()
            .copied()
            .zip(self.buckets.iter().copied())
            .chain(std::iter::once((f64::INFINITY, self.count)))
            .collect()
    }
}

/// A snapshot with every counter at zero (filled in from figures published elsewhere).
pub(crate) fn metrics_from_parts(uptime: Duration) -> Metrics {
    MetricsState::new(Instant::now())
        .snapshot(0, Instant::now())
        .with_uptime(uptime)
}

impl Metrics {
    fn with_uptime(mut self, uptime: Duration) -> Self {
        self.uptime = uptime;
        self
    }
}

#[derive(Debug)]
pub(crate) struct MetricsState {
    started: Instant,
    total_requests: u64,
    ok: u64,
    failed: u64,
    opened: u64,
    closed: u64,
    timed_out: u64,
    rate_limited: u64,
    pub(crate) cache_hits: u64,
    pub(crate) cache_misses: u64,
    durations: u64,
    duration_sum: Duration,
    duration_min: Option<Duration>,
    duration_max: Duration,
    /// Responses per bucket of [`DURATION_BUCKETS`] (not cumulative; past the last: none).
    duration_buckets: [u64; DURATION_BUCKETS.len()],
}

impl MetricsState {
    pub(crate) fn new(now: Instant) -> Self {
        MetricsState {
            started: now,
            total_requests: 0,
            ok: 0,
            failed: 0,
            opened: 0,
            closed: 0,
            timed_out: 0,
            rate_limited: 0,
            cache_hits: 0,
            cache_misses: 0,
            durations: 0,
            duration_sum: Duration::ZERO,
            duration_min: None,
            duration_max: Duration::ZERO,
            duration_buckets: [0; DURATION_BUCKETS.len()],
        }
    }

    pub(crate) fn started(&mut self, now: Instant) {
        self.started = now;
    }

    pub(crate) fn request_received(&mut self) {
        self.total_requests += 1;
    }

    pub(crate) fn record_response(&mut self, status: StatusCode, took: Duration) {
        if status.as_u16() < 400 {
            self.ok += 1;
        } else {
            self.failed += 1;
        }
        self.durations += 1;
        self.duration_sum += took;
        self.duration_min = Some(self.duration_min.map_or(took, |m| m.min(took)));
        self.duration_max = self.duration_max.max(took);
        let secs = took.as_secs_f64();
        if let Some(i) = DURATION_BUCKETS.iter().position(|&b| secs <= b) {
            self.duration_buckets[i] += 1;
        }
    }

    pub(crate) fn connection_opened(&mut self) {
        self.opened += 1;
    }

    pub(crate) fn connection_closed(&mut self) {
        self.closed += 1;
    }

    pub(crate) fn request_rate_limited(&mut self) {
        self.rate_limited += 1;
    }

    pub(crate) fn connection_timed_out(&mut self) {
        self.timed_out += 1;
    }

    pub(crate) fn snapshot(&self, active: usize, now: Instant) -> Metrics {
        let uptime = now.saturating_duration_since(self.started);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let lookups = self.cache_hits + self.cache_misses;
        Metrics {
            uptime,
            total_requests: self.total_requests,
            successful_requests: self.ok,
            failed_requests: self.failed,
            active_connections: active as u64,
            total_connections: self.opened,
            closed_connections: self.closed,
            timed_out_connections: self.timed_out,
            rate_limited_requests: self.rate_limited,
            cache_hits: self.cache_hits,
            cache_misses: self.cache_misses,
            cache_hit_rate: if lookups == 0 {
                0.0
            } else {
                self.cache_hits as f64 * 100.0 / lookups as f64
            },
            avg_request_duration_ms: if self.durations == 0 {
                0.0
            } else {
                ms(self.duration_sum) / self.durations as f64
            },
            min_request_duration_ms: self.duration_min.map_or(0.0, ms),
            max_request_duration_ms: ms(self.duration_max),
            request_duration: {
                let mut buckets = self.duration_buckets;
                for i in 1..buckets.len() {
                    buckets[i] += buckets[i - 1];
                }
                DurationHistogram {
                    buckets,
                    count: self.durations,
                    sum_seconds: self.duration_sum.as_secs_f64(),
                }
            },
            requests_per_second: if uptime.as_secs_f64() > 0.0 {
                self.total_requests as f64 / uptime.as_secs_f64()
            } else {
                0.0
            },
        }
    }
}
