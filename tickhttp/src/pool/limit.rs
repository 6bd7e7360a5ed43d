//! The pool-wide rate limit: one GCRA table in memory shared by every worker, so N workers
//! enforce one limit per client address instead of N.
//!
//! Each entry is two words: a hash of the client address (0: free) and its theoretical
//! arrival time (TAT, nanoseconds on the machine-wide monotonic clock). A request at `now`
//! is allowed when `max(TAT, now) - now <= period * (burst - 1)`, and then moves TAT on by
//! one period with a compare-and-swap, so concurrent workers never both spend the last unit.
//! This is the algorithm `governor` implements for one process (and what a single server
//! uses); `governor`'s state lives in process memory, hence this small table here.
//!
//! Memory is fixed: [`ENTRIES`] addresses, probed [`PROBES`] at a time from the address's
//! hash. An entry whose TAT has passed holds no state (a fresh client would get the same
//! answer), so it is free for any address: idle keys need no purge. If all the probed
//! entries are busy, the one whose TAT is soonest is taken over — that client briefly gets
//! a fresh allowance, the only leniency, and only when more than [`ENTRIES`] addresses are
//! limited at once. Two workers seeing a new address at the same instant may each claim an
//! entry for it; the lookups then settle on the first, so at most one extra request passes.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::shm::SharedWords;
use super::sys::monotonic_ns;
use crate::ratelimit::{RateLimitConfig, SharedGcra};

/// Client addresses the table tracks at once.
pub(crate) const ENTRIES: usize = 16_384;
/// Entries probed per address.
const PROBES: usize = 8;

/// The shared GCRA table; made by the master before the first fork.
pub(crate) struct SharedLimits {
    shm: SharedWords,
    /// The same seed in every process: it is made before the fork.
    hasher: RandomState,
    period_ns: u64,
    tolerance_ns: u64,
}

impl SharedLimits {
    /// A table for `config`'s quota: `requests` per `window`, all of them as a burst.
    pub(crate) fn new(config: &RateLimitConfig) -> std::io::Result<SharedLimits> {
        let burst = u64::from(config.requests.max(1));
        let window_ns = u64::try_from(config.window.as_nanos()).unwrap_or(u64::MAX);
        let period_ns = (window_ns / burst).max(1);
        Ok(SharedLimits {
            shm: SharedWords::new(ENTRIES * 2)?,
            hasher: RandomState::new(),
            period_ns,
            tolerance_ns: period_ns.saturating_mul(burst - 1),
        })
    }

    fn key(&self, addr: IpAddr) -> u64 {
        // 0 marks a free entry.
        self.hasher.hash_one(addr).max(1)
    }

    fn entry(&self, i: usize) -> (&AtomicU64, &AtomicU64) {
        let words = self.shm.words();
        (&words[2 * i], &words[2 * i + 1])
    }

    /// The entry for `key`, claiming one if it has none.
    fn find_or_claim(&self, key: u64, now: u64) -> usize {
        let start = (key as usize) & (ENTRIES - 1);
        let probes = || (0..PROBES).map(move |p| (start + p) & (ENTRIES - 1));
        for i in probes() {
            if self.entry(i).0.load(Ordering::Acquire) == key {
                return i;
            }
        }
        loop {
            // A free or expired entry; else the one that frees soonest.
            let mut victim = None;
            let mut soonest = u64::MAX;
            for i in probes() {
                let (k, tat) = self.entry(i);
                let (k, tat) = (k.load(Ordering::Acquire), tat.load(Ordering::Acquire));
                if k == 0 || tat <= now {
                    victim = Some((i, k));
                    break;
                }
                if tat < soonest {
                    soonest = tat;
                    victim = Some((i, k));
                }
            }
            let Some((i, old)) = victim else {
                return start;
            };
            let (k, tat) = self.entry(i);
            if k.compare_exchange(old, key, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                if old != 0 && tat.load(Ordering::Acquire) > now {
                    // Taken over from a live client: start this one fresh.
                    tat.store(now, Ordering::Release);
                }
                return i;
            }
            // Another process changed it first; if it claimed it for this key, use it.
            if k.load(Ordering::Acquire) == key {
                return i;
            }
        }
    }
}

impl SharedGcra for SharedLimits {
    fn check(&self, addr: IpAddr) -> Result<(), Duration> {
        let now = monotonic_ns();
        let key = self.key(addr);
        let i = self.find_or_claim(key, now);
        let tat = self.entry(i).1;
        let mut current = tat.load(Ordering::Acquire);
        loop {
            let start = current.max(now);
            if start - now > self.tolerance_ns {
                return Err(Duration::from_nanos(start - now - self.tolerance_ns));
            }
            match tat.compare_exchange_weak(
                current,
                start + self.period_ns,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(seen) => current = seen,
            }
        }
    }

    fn tracked(&self) -> usize {
        let now = monotonic_ns();
        (0..ENTRIES)
            .filter(|&i| {
                let (k, tat) = self.entry(i);
                k.load(Ordering::Relaxed) != 0 && tat.load(Ordering::Relaxed) > now
            })
            .count()
    }
}

#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use super::*;

    fn limits(requests: u32, window: Duration) -> SharedLimits {
        SharedLimits::new(&RateLimitConfig::new(requests, window)).unwrap()
    }

    #[test]
    fn allows_the_burst_then_refuses_with_the_wait() {
        let l = limits(5, Duration::from_secs(50));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..5 {
            assert!(l.check(a).is_ok());
        }
        let wait = l.check(a).unwrap_err();
        assert!(
            wait > Duration::from_secs(9) && wait <= Duration::from_secs(10),
            "{wait:?}"
        );
        // Another address has its own allowance.
        assert!(l.check("192.0.2.2".parse().unwrap()).is_ok());
        assert_eq!(l.tracked(), 2);
    }

    #[test]
    fn a_refill_comes_after_one_period() {
        let l = limits(2, Duration::from_millis(100));
        let a: IpAddr = "::1".parse().unwrap();
        assert!(l.check(a).is_ok());
        assert!(l.check(a).is_ok());
        assert!(l.check(a).is_err());
        std::thread::sleep(Duration::from_millis(60));
        assert!(l.check(a).is_ok());
        assert!(l.check(a).is_err());
    }

    #[test]
    fn memory_is_fixed_when_many_addresses_are_limited() {
        let l = limits(1, Duration::from_secs(60));
        for n in 0..(ENTRIES as u32 * 2) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            let _ = l.check(ip);
        }
        assert!(l.tracked() <= ENTRIES);
        // A recent address is still limited.
        let last = IpAddr::from(std::net::Ipv4Addr::from(
            0x0a00_0000 + ENTRIES as u32 * 2 - 1,
        ));
        assert!(l.check(last).is_err());
    }

    #[test]
    fn one_limit_across_forked_processes() {
        let l = limits(10, Duration::from_secs(60));
        let a: IpAddr = "198.51.100.7".parse().unwrap();
        // SAFETY: the child only runs atomics on the shared mapping and `_exit`s (the test
        // harness is multi-threaded, so it must touch no lock).
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let mut ok = 0;
                for _ in 0..6 {
                    ok += i32::from(l.check(a).is_ok());
                }
                // SAFETY: ends the child at once, running nothing of the parent's.
                unsafe { nix::libc::_exit(ok) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let mut ok = 0;
                for _ in 0..6 {
                    ok += i32::from(l.check(a).is_ok());
                }
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                let nix::sys::wait::WaitStatus::Exited(_, child_ok) = status else {
                    panic!("{status:?}");
                };
                assert_eq!(ok + child_ok, 10);
            }
        }
    }
}
