//! Least-connections follows live load; round-robin does not.

mod pool_util;

use std::time::{Duration, Instant};

use pool_util::{get, Pool};

/// Alternates a long request (held open) and a short one (answered at once), in sequence.
/// Round-robin sends every long request to the same worker; least-connections, fed by the
/// workers' live reports, spreads them.
fn spread_of_long_requests(balancer: &str) -> u64 {
    let pool = Pool::start(2, &["--mode", "centralized", "--balancer", balancer]);
    let addr = pool.addr;
    let mut long = Vec::new();
    for _ in 0..6 {
        long.push(std::thread::spawn(move || get(addr, "/sleep?ms=1500")));
        // Wait until the master has seen the long request arrive at its worker.
        let want = long.len() as u64;
        let start = Instant::now();
        while pool.workers().iter().map(|w| w.connections).sum::<u64>() < want {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "{}",
                pool.status()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(get(addr, "/sleep?ms=1").0, 200);
        // Let the worker's "closed" report of the short request arrive.
        std::thread::sleep(Duration::from_millis(30));
    }
    let workers = pool.workers();
    let loads: Vec<u64> = workers.iter().map(|w| w.connections).collect();
    for t in long {
        assert_eq!(t.join().unwrap().0, 200);
    }
    eprintln!("{balancer}: in-flight per worker {loads:?}");
    loads.iter().max().unwrap() - loads.iter().min().unwrap()
}

#[test]
fn least_connections_keeps_the_spread_smaller_than_round_robin() {
    let rr = spread_of_long_requests("round-robin");
    let lc = spread_of_long_requests("least-connections");
    assert_eq!(rr, 6, "round-robin put every long request on one worker");
    assert!(lc <= 1, "least-connections spread {lc}");
}

#[test]
fn weighted_follows_the_weights() {
    let pool = Pool::start(
        2,
        &[
            "--mode",
            "centralized",
            "--balancer",
            "weighted",
            "--weights",
            "3,1",
        ],
    );
    let mut counts = [0u32; 2];
    for _ in 0..40 {
        let id = pool_util::whoami(&get(pool.addr, "/whoami").1).0;
        counts[id as usize - 1] += 1;
    }
    assert_eq!(counts, [30, 10]);
}

#[test]
fn sticky_keeps_a_client_on_its_worker() {
    let pool = Pool::start(3, &["--mode", "centralized", "--balancer", "sticky"]);
    let first = pool_util::whoami(&get(pool.addr, "/whoami").1).0;
    for _ in 0..20 {
        assert_eq!(pool_util::whoami(&get(pool.addr, "/whoami").1).0, first);
    }
}
