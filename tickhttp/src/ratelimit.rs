//! Per-client rate limiting with GCRA (`governor`), answered with 429, `Retry-After` and the
//! `RateLimit-*` headers.
//!
//! The key is the peer address; behind a trusted proxy (configured explicitly) it is the
//! client address the proxy reports in `X-Forwarded-For`. Idle keys are purged periodically,
//! so memory stays bounded by the number of clients active within one window.
//!
//! In a worker pool the allowances live in one table in memory shared by every worker (a
//! fixed 16,384 client addresses, GCRA with compare-and-swap), so the limit holds for the
//! whole pool in both architectures and N workers do not multiply it. Requests refused are
//! counted in [`Metrics::rate_limited_requests`](crate::server::Metrics::rate_limited_requests)
//! and, for the pool, in `PoolMetrics::rate_limited`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::{Clock, MonotonicClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::error::Error;

/// Rate-limit settings.
///
/// ```
/// use std::time::Duration;
/// let limit = tickhttp::ratelimit::RateLimitConfig::new(100, Duration::from_secs(60));
/// let config = tickhttp::ServerConfig::default().rate_limit(Some(limit));
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RateLimitConfig {
    /// Requests allowed per window (also the burst size).
    pub requests: u32,
    /// The window.
    pub window: Duration,
    /// Proxies whose `X-Forwarded-For` is believed. Empty: the peer address is the key.
    pub trusted_proxies: Vec<IpAddr>,
    /// The header carrying the client address from a trusted proxy.
    pub forwarded_header: HeaderName,
}

impl RateLimitConfig {
    /// `requests` per `window` per client address (the reference system's default is 100
    /// per 60 s).
    pub fn new(requests: u32, window: Duration) -> Self {
        RateLimitConfig {
            requests,
            window,
            trusted_proxies: Vec::new(),
            forwarded_header: HeaderName::from_static("x-forwarded-for"),
        }
    }

    /// Believes the forwarded header when the peer is one of `proxies`.
    #[must_use]
    pub fn trust_proxies(mut self, proxies: Vec<IpAddr>) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.requests == 0 {
            return Err(Error::config("rate_limit.requests", "must be at least 1"));
        }
        if self.window.is_zero() {
            return Err(Error::config(
                "rate_limit.window",
                "must be longer than zero",
            ));
        }
        Ok(())
    }
}

type Limiter =
    RateLimiter<IpAddr, HashMapStateStore<IpAddr>, MonotonicClock, StateInformationMiddleware>;

/// What the limiter decided for one request.
#[derive(Debug)]
pub(crate) enum Decision {
    Allowed,
    Limited { retry_after: Duration },
}

/// A limiter whose state several processes share (the worker pool's table).
pub(crate) trait SharedGcra {
    /// Spends one unit of `key`'s allowance, or says how long until one is back.
    fn check(&self, key: IpAddr) -> Result<(), Duration>;
    /// Addresses currently holding state.
    fn tracked(&self) -> usize;
}

pub(crate) struct RateLimit {
    config: RateLimitConfig,
    limiter: Limiter,
    /// In a worker pool: the pool-wide table, used instead of `limiter`.
    shared: Option<std::rc::Rc<dyn SharedGcra>>,
    clock: MonotonicClock,
    next_purge: Instant,
}

impl RateLimit {
    pub(crate) fn new(config: RateLimitConfig) -> RateLimit {
        let burst = NonZeroU32::new(config.requests).unwrap_or(NonZeroU32::MIN);
        let period = config.window / burst.get();
        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(burst))
            .allow_burst(burst);
        let clock = MonotonicClock;
        RateLimit {
            limiter: RateLimiter::<_, _, _, governor::middleware::NoOpMiddleware<_>>::new(
                quota,
                HashMapStateStore::default(),
                clock.clone(),
            )
            .with_middleware::<StateInformationMiddleware>(),
            clock,
            shared: None,
            next_purge: Instant::now() + config.window,
            config,
        }
    }

    /// The key for a request: the peer, or the forwarded client behind a trusted proxy.
    pub(crate) fn key(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.config.trusted_proxies.contains(&peer) {
            return peer;
        }
        // The rightmost address not itself a trusted proxy is the client as far as any
        // trusted hop can vouch for.
        let mut client = peer;
        for value in headers.get_all(&self.config.forwarded_header) {
            let Ok(text) = value.to_str() else { continue };
            for part in text.split(',').rev() {
                match part.trim().parse::<IpAddr>() {
                    Ok(ip) if self.config.trusted_proxies.contains(&ip) => continue,
                    Ok(ip) => return ip,
                    Err(_) => return client,
                }
            }
            client = peer;
        }
        client
    }

    /// Keeps the allowances in `table`, shared with other processes, from now on.
    pub(crate) fn share(&mut self, table: std::rc::Rc<dyn SharedGcra>) {
        self.shared = Some(table);
    }

    pub(crate) fn check(&mut self, key: IpAddr, now: Instant) -> Decision {
        if let Some(shared) = &self.shared {
            return match shared.check(key) {
                Ok(()) => Decision::Allowed,
                Err(retry_after) => Decision::Limited { retry_after },
            };
        }
        if now >= self.next_purge {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
            self.next_purge = now + self.config.window;
        }
        match self.limiter.check_key(&key) {
            Ok(_) => Decision::Allowed,
            Err(not_until) => Decision::Limited {
                retry_after: not_until.wait_time_from(self.clock.now()),
            },
        }
    }

    /// Keys currently tracked.
    pub(crate) fn tracked(&self) -> usize {
        match &self.shared {
            Some(shared) => shared.tracked(),
            None => self.limiter.len(),
        }
    }

    /// The 429 response.
    pub(crate) fn refusal(&self, retry_after: Duration) -> http::Response<crate::Body> {
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        let mut resp = http::Response::new(crate::Body::from("Too Many Requests\n"));
        *resp.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
        let h = resp.headers_mut();
        let num = |n: u64| HeaderValue::from(n);
        h.insert(http::header::RETRY_AFTER, num(secs.max(1)));
        h.insert("ratelimit-limit", num(u64::from(self.config.requests)));
        h.insert("ratelimit-remaining", num(0));
        h.insert("ratelimit-reset", num(secs.max(1)));
        h.insert(
            "ratelimit-policy",
            HeaderValue::from_str(&format!(
                "{};w={}",
                self.config.requests,
                self.config.window.as_secs().max(1)
            ))
            .unwrap_or(HeaderValue::from_static("")),
        );
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp
    }
}
