//! The rate limit holds for the whole pool: N workers do not multiply it, whichever worker a
//! client's connections reach, and the pool's metrics count the refusals.

mod pool_util;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use pool_util::{get, json_number, whoami, Pool};

/// Sends `n` requests for /whoami, each on a new connection; returns the statuses and the
/// workers that answered 200.
fn burst(pool: &Pool, n: usize) -> (Vec<u16>, HashSet<u32>) {
    let mut statuses = Vec::new();
    let mut workers = HashSet::new();
    for _ in 0..n {
        let (status, body) = get(pool.addr, "/whoami");
        if status == 200 {
            workers.insert(whoami(&body).0);
        }
        statuses.push(status);
    }
    (statuses, workers)
}

fn rate_limited_total(pool: &Pool, expect: u64) -> u64 {
    // Workers publish their counters every 500 ms.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = json_number(&pool.status(), "rate_limited");
        if n >= expect || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn one_limit_for_the_pool(args: &[&str]) -> (Pool, HashSet<u32>) {
    let mut all = vec!["--rate-limit", "10", "--rate-limit-window", "60s"];
    all.extend_from_slice(args);
    let pool = Pool::start(2, &all);
    let (statuses, workers) = burst(&pool, 30);
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!((ok, limited), (10, 20), "{statuses:?}");
    // The first ten pass, then every one is refused: one allowance, not one per worker.
    assert!(statuses[..10].iter().all(|&s| s == 200), "{statuses:?}");
    assert_eq!(rate_limited_total(&pool, 20), 20, "{}", pool.status());
    (pool, workers)
}

#[test]
fn centralized_workers_share_one_allowance_per_client() {
    let (pool, workers) =
        one_limit_for_the_pool(&["--mode", "centralized", "--balancer", "round-robin"]);
    // Round-robin spread the allowed requests over both workers, and still only ten passed.
    assert_eq!(workers.len(), 2, "{workers:?}");
    // The admin surface is not rate limited.
    let (status, text) = get(pool.addr, "/_tickhttp/metrics");
    assert_eq!(status, 200);
    assert!(
        text.contains("tickhttp_pool_rate_limited_total 20"),
        "{text}"
    );
    assert!(
        text.contains("tickhttp_requests_rate_limited_total{worker=\"1\"}"),
        "{text}"
    );
}

#[test]
fn shared_socket_workers_share_one_allowance_per_client() {
    let (pool, _) = one_limit_for_the_pool(&["--mode", "shared"]);
    let (status, _) = get(pool.addr, "/whoami");
    assert_eq!(status, 429);
}
