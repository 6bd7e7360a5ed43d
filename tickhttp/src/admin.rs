//! Observability on one surface: `/metrics` (Prometheus text format), `/status` (JSON),
//! `/health` (alive) and `/ready` (ready to take traffic).
//!
//! With [`ServerConfig::admin_prefix`](crate::ServerConfig::admin_prefix) set (say
//! `/_tickhttp`), the [`Server`](crate::Server) answers `GET /_tickhttp/metrics`,
//! `/_tickhttp/status`, `/_tickhttp/health` and `/_tickhttp/ready` itself, before the
//! application's queue and before rate limiting, so probes always get through:
//!
//! | endpoint  | single process                     | worker pool                                   |
//! |-----------|------------------------------------|-----------------------------------------------|
//! | `metrics` | this server's counters             | every worker's counters (`worker="1"`…) and the master's |
//! | `status`  | one pseudo-worker (id 0)           | each worker's state, pid, age, load, restarts  |
//! | `health`  | 200 while the loop turns           | 200 while the worker's loop turns              |
//! | `ready`   | 200; 503 once draining             | 200 while a worker is ready; 503 once the pool stops |
//!
//! In a pool, any worker answers for the whole pool: the master publishes its view of every
//! slot, and each worker its own counters, on a board of shared memory (no message per
//! request), and the answering worker reads the board. The master's separate admin listener
//! (`PoolBuilder::status_listen`) serves the same documents from the same board.

use http::StatusCode;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::pool::{PoolMetrics, WorkerState};
use crate::server::Metrics;

/// One of the admin endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Prometheus text exposition.
    Metrics,
    /// The JSON status document.
    Status,
    /// Liveness: 200 whenever the process answers.
    Health,
    /// Readiness: 200 while able to serve, 503 while draining or stopping.
    Ready,
}

impl Endpoint {
    /// The path of the endpoint under the prefix (`/metrics`, ...).
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Metrics => "/metrics",
            Endpoint::Status => "/status",
            Endpoint::Health => "/health",
            Endpoint::Ready => "/ready",
        }
    }
}

/// Which endpoint `path` names under `prefix` (`""` for the root), if any.
pub fn route(prefix: &str, path: &str) -> Option<Endpoint> {
    match path.strip_prefix(prefix)? {
        "/metrics" => Some(Endpoint::Metrics),
        "/status" => Some(Endpoint::Status),
        "/health" => Some(Endpoint::Health),
        "/ready" => Some(Endpoint::Ready),
        _ => None,
    }
}

/// Checks an admin prefix: it starts with `/`, does not end with one, and holds only
/// letters, digits and `-._~/` without empty or dot segments.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if !prefix.starts_with('/') || prefix.len() < 2 {
        return Err(format!(
            "must start with / and name a path, e.g. /_tickhttp; got {prefix:?}"
        ));
    }
    if prefix.ends_with('/') {
        return Err(format!("must not end with /, got {prefix:?}"));
    }
    let ok_chars = prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~/".contains(&b));
    let ok_segments = prefix[1..]
        .split('/')
        .all(|s| !s.is_empty() && s != "." && s != "..");
    if !ok_chars || !ok_segments {
        return Err(format!(
            "may hold only letters, digits and -._~ in non-empty segments, got {prefix:?}"
        ));
    }
    Ok(())
}

/// An admin answer: status, content type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reply {
    /// The status code.
    pub status: StatusCode,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

/// `Content-Type` of the Prometheus text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Reply {
    /// A reply from its parts.
    pub fn new(status: StatusCode, content_type: &'static str, body: String) -> Reply {
        Reply {
            status,
            content_type,
            body,
        }
    }

    /// 200 with a Prometheus exposition.
    pub fn prometheus(body: String) -> Reply {
        Reply::new(StatusCode::OK, PROMETHEUS_CONTENT_TYPE, body)
    }

    /// 200 with a JSON document.
    pub fn json(body: String) -> Reply {
        Reply::new(StatusCode::OK, "application/json", body)
    }

    /// A short plain-text answer.
    pub fn text(status: StatusCode, body: &str) -> Reply {
        Reply::new(status, "text/plain; charset=utf-8", body.to_string())
    }

    /// `/ready`'s answer.
    pub fn readiness(ready: bool) -> Reply {
        if ready {
            Reply::text(StatusCode::OK, "ready\n")
        } else {
            Reply::text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
        }
    }

    /// The reply as a response.
    pub fn into_response(self) -> http::Response<crate::Body> {
        let mut resp = http::Response::new(crate::Body::from(self.body));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(self.content_type),
        );
        h.insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        resp
    }
}

/// What an [`AdminSource`] may use to answer.
#[derive(Debug)]
#[non_exhaustive]
pub struct AdminContext<'a> {
    /// The answering server's own counters.
    pub metrics: &'a Metrics,
    /// Whether the answering server is draining.
    pub draining: bool,
}

/// Answers the admin endpoints in place of the server's own figures (the worker pool
/// installs one that reads the pool's shared board).
pub type AdminSource = Box<dyn FnMut(Endpoint, &AdminContext<'_>) -> Reply>;

/// The answers of a single server from its own counters.
pub fn single_reply(endpoint: Endpoint, ctx: &AdminContext<'_>) -> Reply {
    match endpoint {
        Endpoint::Metrics => Reply::prometheus(render_prometheus(&[(None, ctx.metrics)], None)),
        Endpoint::Status => Reply::json(single_status_json(ctx.metrics, ctx.draining)),
        Endpoint::Health => Reply::text(StatusCode::OK, "ok\n"),
        Endpoint::Ready => Reply::readiness(!ctx.draining),
    }
}

/// The JSON status of a single server, shaped like the pool's (one pseudo-worker, id 0), so
/// the same page or script reads both.
pub fn single_status_json(m: &Metrics, draining: bool) -> String {
    let state = if draining { "stopping" } else { "ready" };
    let uptime = m.uptime.as_secs_f64();
    format!(
        "{{\"architecture\":\"single\",\"balancer\":null,\"total_workers\":1,\
         \"alive_workers\":1,\"ready_workers\":{},\"ready\":{},\"queue_length\":0,\
         \"dispatched\":{},\"rejected\":0,\"rate_limited\":0,\"stopping\":{draining},\
         \"uptime_s\":{uptime:.3},\"connection_spread\":0,\"workers\":[{{\"id\":0,\"pid\":{},\
         \"state\":\"{state}\",\"connections\":{},\"requests\":{},\"restarts\":0,\
         \"last_exit\":null,\"uptime_s\":{uptime:.3},\"weight\":1}}]}}\n",
        u8::from(!draining),
        !draining,
        m.total_connections,
        std::process::id(),
        m.active_connections,
        m.total_requests,
    )
}

/// The Prometheus text exposition of server counters (each series labelled
/// `worker="N"` when a worker id is given) and, in a pool, of the master's figures.
pub fn render_prometheus(
    servers: &[(Option<u32>, &Metrics)],
    pool: Option<&PoolMetrics>,
) -> String {
    let exposition = Exposition {
        servers: servers
            .iter()
            .map(|(w, m)| (w.map(|w| w.to_string()), (*m).clone()))
            .collect(),
        pool: pool.cloned(),
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(exposition));
    let mut out = String::with_capacity(4096);
    if prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).is_err() {
        // Writing to a String does not fail; keep whatever was written.
        tracing::debug!("Prometheus encoding stopped early");
    }
    out
}

/// A snapshot to encode, owned so the registry can hold it.
#[derive(Debug)]
struct Exposition {
    servers: Vec<(Option<String>, Metrics)>,
    pool: Option<PoolMetrics>,
}

type Labels = Vec<(&'static str, String)>;

fn labels(worker: &Option<String>) -> Labels {
    worker
        .as_ref()
        .map(|w| vec![("worker", w.clone())])
        .unwrap_or_default()
}

/// A constant value of one family member.
enum Value {
    Counter(u64),
    Gauge(i64),
    GaugeF(f64),
}

fn family(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    members: impl IntoIterator<Item = (Labels, Value)>,
) -> std::fmt::Result {
    let mut metric = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in members {
        let mut m = metric.encode_family(&labels)?;
        encode_value(&mut m, value)?;
    }
    Ok(())
}

fn encode_value(m: &mut MetricEncoder<'_>, value: Value) -> std::fmt::Result {
    match value {
        Value::Counter(v) => {
            m.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&v, None)
        }
        Value::Gauge(v) => m.encode_gauge(&v),
        Value::GaugeF(v) => m.encode_gauge(&v),
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Collector for Exposition {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        type Counter = (&'static str, &'static str, fn(&Metrics) -> u64);
        let counters: [Counter; 7] = [
            ("tickhttp_requests", "Requests received.", |m| {
                m.total_requests
            }),
            (
                "tickhttp_requests_successful",
                "Responses with a status below 400.",
                |m| m.successful_requests,
            ),
            (
                "tickhttp_requests_failed",
                "Responses with a status of 400 or above.",
                |m| m.failed_requests,
            ),
            ("tickhttp_connections", "Connections opened.", |m| {
                m.total_connections
            }),
            ("tickhttp_connections_closed", "Connections closed.", |m| {
                m.closed_connections
            }),
            (
                "tickhttp_connections_timed_out",
                "Connections closed by a timeout.",
                |m| m.timed_out_connections,
            ),
            (
                "tickhttp_requests_rate_limited",
                "Requests answered 429 by the rate limit.",
                |m| m.rate_limited_requests,
            ),
        ];
        for (name, help, value) in counters {
            family(
                &mut enc,
                name,
                help,
                MetricType::Counter,
                self.servers
                    .iter()
                    .map(|(w, m)| (labels(w), Value::Counter(value(m)))),
            )?;
        }
        family(
            &mut enc,
            "tickhttp_connections_active",
            "Connections open now.",
            MetricType::Gauge,
            self.servers
                .iter()
                .map(|(w, m)| (labels(w), Value::Gauge(clamp(m.active_connections)))),
        )?;
        family(
            &mut enc,
            "tickhttp_uptime_seconds",
            "Seconds since the server started.",
            MetricType::Gauge,
            self.servers
                .iter()
                .map(|(w, m)| (labels(w), Value::GaugeF(m.uptime.as_secs_f64()))),
        )?;
        {
            let mut metric = enc.encode_descriptor(
                "tickhttp_request_duration_seconds",
                "Time from a complete request to its response.",
                None,
                MetricType::Histogram,
            )?;
            for (w, m) in &self.servers {
                let labels = labels(w);
                let mut f = metric.encode_family(&labels)?;
                let h = &m.request_duration;
                // The encoder sums what it is given, so it gets each bucket's own count
                // (ours are cumulative), ending with `+Inf`.
                let mut below = 0;
                let buckets: Vec<(f64, u64)> = h
                    .cumulative()
                    .into_iter()
                    .map(|(bound, cumulative)| {
                        let own = cumulative.saturating_sub(below);
                        below = below.max(cumulative);
                        (bound, own)
                    })
                    .collect();
                f.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    h.sum_seconds,
                    h.count,
                    &buckets,
                    None,
                )?;
            }
        }
        if let Some(pool) = &self.pool {
            encode_pool(&mut enc, pool)?;
        }
        Ok(())
    }
}

fn encode_pool(enc: &mut DescriptorEncoder<'_>, p: &PoolMetrics) -> std::fmt::Result {
    let none = Labels::new;
    let ready = p
        .workers
        .iter()
        .filter(|w| w.state == WorkerState::Ready)
        .count() as u64;
    let gauges: [(&str, &str, i64); 6] = [
        (
            "tickhttp_pool_workers",
            "Configured worker slots.",
            clamp(p.total_workers as u64),
        ),
        (
            "tickhttp_pool_workers_alive",
            "Slots with a live process.",
            clamp(p.alive_workers as u64),
        ),
        (
            "tickhttp_pool_workers_ready",
            "Workers ready to serve.",
            clamp(ready),
        ),
        (
            "tickhttp_pool_queue_length",
            "Connections waiting in the master for a worker (centralized).",
            clamp(p.queue_length as u64),
        ),
        (
            "tickhttp_pool_stopping",
            "1 while the pool shuts down.",
            i64::from(p.stopping),
        ),
        (
            "tickhttp_pool_ready",
            "1 while at least one worker is ready and the pool is not stopping.",
            i64::from(p.is_ready()),
        ),
    ];
    for (name, help, v) in gauges {
        family(
            enc,
            name,
            help,
            MetricType::Gauge,
            [(none(), Value::Gauge(v))],
        )?;
    }
    let counters: [(&str, &str, u64); 3] = [
        (
            "tickhttp_pool_dispatched",
            "Connections handed to workers (centralized).",
            p.dispatched,
        ),
        (
            "tickhttp_pool_rejected",
            "Connections answered 503 by the master: queue full, waited too long, or stopping.",
            p.rejected,
        ),
        (
            "tickhttp_pool_rate_limited",
            "Requests answered 429 by the pool-wide rate limit.",
            p.rate_limited,
        ),
    ];
    for (name, help, v) in counters {
        family(
            enc,
            name,
            help,
            MetricType::Counter,
            [(none(), Value::Counter(v))],
        )?;
    }
    family(
        enc,
        "tickhttp_pool_uptime_seconds",
        "Seconds since the master started.",
        MetricType::Gauge,
        [(none(), Value::GaugeF(p.uptime.as_secs_f64()))],
    )?;
    let per = |w: &crate::pool::WorkerMetrics| vec![("worker", w.id.to_string())];
    family(
        enc,
        "tickhttp_pool_worker_connections",
        "Open connections per worker, as the master sees them.",
        MetricType::Gauge,
        p.workers
            .iter()
            .map(|w| (per(w), Value::Gauge(clamp(w.connections)))),
    )?;
    family(
        enc,
        "tickhttp_pool_worker_requests",
        "Requests per worker slot, all its processes.",
        MetricType::Counter,
        p.workers
            .iter()
            .map(|w| (per(w), Value::Counter(w.requests))),
    )?;
    family(
        enc,
        "tickhttp_pool_worker_restarts",
        "Restarts per worker slot.",
        MetricType::Counter,
        p.workers
            .iter()
            .map(|w| (per(w), Value::Counter(u64::from(w.restarts)))),
    )?;
    family(
        enc,
        "tickhttp_pool_restarts",
        "Worker restarts by reason: crash, timeout (stuck loop), reload, max_requests, max_rss, max_age.",
        MetricType::Counter,
        p.restarts_by_reason
            .iter()
            .map(|(r, n)| (vec![("reason", r.to_string())], Value::Counter(n))),
    )?;
    family(
        enc,
        "tickhttp_pool_worker_up",
        "1 while the slot's worker is ready.",
        MetricType::Gauge,
        p.workers.iter().map(|w| {
            (
                per(w),
                Value::Gauge(i64::from(w.state == WorkerState::Ready)),
            )
        }),
    )?;
    family(
        enc,
        "tickhttp_pool_worker_uptime_seconds",
        "Age of the slot's current process.",
        MetricType::Gauge,
        p.workers.iter().map(|w| {
            (
                per(w),
                Value::GaugeF(w.uptime.map_or(0.0, |u| u.as_secs_f64())),
            )
        }),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_under_a_prefix() {
        assert_eq!(route("/_t", "/_t/metrics"), Some(Endpoint::Metrics));
        assert_eq!(route("/_t", "/_t/ready"), Some(Endpoint::Ready));
        assert_eq!(route("/_t", "/_t/other"), None);
        assert_eq!(route("/_t", "/metrics"), None);
        assert_eq!(route("", "/status"), Some(Endpoint::Status));
    }

    #[test]
    fn histogram_buckets_are_cumulative_once() {
        let mut m = crate::server::metrics_from_parts(std::time::Duration::ZERO);
        // 3 requests at most 1 ms, 1 more at most 5 ms, 1 past the last bound.
        let mut buckets = [4u64; crate::server::DURATION_BUCKETS.len()];
        buckets[0] = 3;
        m.request_duration = crate::server::DurationHistogram::from_parts(buckets, 5, 20.5);
        let text = render_prometheus(&[(Some(1), &m)], None);
        let value = |le: &str| {
            let series =
                format!("tickhttp_request_duration_seconds_bucket{{worker=\"1\",le=\"{le}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&series))
                .unwrap_or_else(|| panic!("no {series} in\n{text}"))
                .to_string()
        };
        assert_eq!(value("0.001"), "3");
        assert_eq!(value("0.005"), "4");
        assert_eq!(value("10"), "4");
        assert_eq!(value("+Inf"), "5");
        assert!(
            text.contains("tickhttp_request_duration_seconds_count{worker=\"1\"} 5"),
            "{text}"
        );
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(check_prefix("/_tickhttp").is_ok());
        assert!(check_prefix("/ops/admin").is_ok());
        for bad in [
            "", "/", "admin", "/admin/", "/a//b", "/a/../b", "/a b", "/a?b",
        ] {
            assert!(check_prefix(bad).is_err(), "{bad:?} accepted");
        }
    }
}
