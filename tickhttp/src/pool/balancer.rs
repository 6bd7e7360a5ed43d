//! Choosing the worker for each connection in centralized mode. Pure: no sockets, no clocks.
//!
//! The master passes the workers that can take a connection now (alive, ready, not stopping,
//! not backed up), in slot order, each with its live load; the balancer returns one slot.
//! Ties always rotate, so equal workers share evenly (the reference broke ties at random and,
//! fed only zeros, was random throughout).

use std::collections::HashMap;
use std::net::IpAddr;

use super::BalancerKind;

/// A worker that can take a connection now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Candidate {
    /// Slot index (0-based; the worker id is `slot + 1`).
    pub slot: usize,
    /// Which incarnation of the slot: a restarted worker has a new generation.
    pub generation: u64,
    /// Connections open in the worker plus those sent and not yet reported received.
    pub load: u64,
    /// Relative share for the weighted balancer (at least 1).
    pub weight: u32,
}

/// Sticky entries kept before stale ones are swept (bounds memory under address churn).
const STICKY_CAPACITY: usize = 65_536;

/// The balancing state of one pool.
#[derive(Debug)]
pub(crate) enum Balancer {
    /// Each slot in turn, in slot order; a restarted worker keeps its place.
    RoundRobin { next: usize },
    /// The lowest live load; ties rotate.
    LeastConnections { next: usize },
    /// Smooth weighted round-robin (nginx's algorithm): over any window the shares follow the
    /// weights, and picks of one worker are spread out, not bunched.
    Weighted { current: Vec<i64> },
    /// The same client address goes to the same worker incarnation while it lives; new
    /// clients go to the least-loaded worker.
    Sticky {
        map: HashMap<IpAddr, StickyEntry>,
        fallback: usize,
        tick: u64,
    },
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct StickyEntry {
    slot: usize,
    generation: u64,
    last_used: u64,
}

impl Balancer {
    pub(crate) fn new(kind: &BalancerKind) -> Balancer {
        match kind {
            BalancerKind::RoundRobin => Balancer::RoundRobin { next: 0 },
            BalancerKind::LeastConnections => Balancer::LeastConnections { next: 0 },
            BalancerKind::Weighted => Balancer::Weighted {
                current: Vec::new(),
            },
            BalancerKind::Sticky => Balancer::Sticky {
                map: HashMap::new(),
                fallback: 0,
                tick: 0,
            },
        }
    }

    /// Picks a slot among `candidates` (sorted by slot) for a client at `client`.
    pub(crate) fn pick(&mut self, candidates: &[Candidate], client: IpAddr) -> Option<usize> {
        if candidates.is_empty() {
            return None;
        }
        match self {
            Balancer::RoundRobin { next } => {
                let chosen = rotate_from(candidates, *next, |_| true)?;
                *next = chosen + 1;
                Some(chosen)
            }
            Balancer::LeastConnections { next } => {
                let chosen = least_loaded(candidates, *next)?;
                *next = chosen + 1;
                Some(chosen)
            }
            Balancer::Weighted { current } => {
                let top = candidates.iter().map(|c| c.slot).max().unwrap_or(0);
                if current.len() <= top {
                    current.resize(top + 1, 0);
                }
                let total: i64 = candidates.iter().map(|c| i64::from(c.weight.max(1))).sum();
                let mut best: Option<usize> = None;
                for c in candidates {
                    current[c.slot] += i64::from(c.weight.max(1));
                    if best.is_none_or(|b| current[c.slot] > current[b]) {
                        best = Some(c.slot);
                    }
                }
                let chosen = best?;
                current[chosen] -= total;
                Some(chosen)
            }
            Balancer::Sticky {
                map,
                fallback,
                tick,
            } => {
                *tick += 1;
                if let Some(entry) = map.get_mut(&client) {
                    let alive = candidates
                        .iter()
                        .any(|c| c.slot == entry.slot && c.generation == entry.generation);
                    if alive {
                        entry.last_used = *tick;
                        return Some(entry.slot);
                    }
                }
                let chosen = least_loaded(candidates, *fallback)?;
                *fallback = chosen + 1;
                let generation = candidates
                    .iter()
                    .find(|c| c.slot == chosen)
                    .map_or(0, |c| c.generation);
                if map.len() >= STICKY_CAPACITY && !map.contains_key(&client) {
                    sweep(map, candidates);
                }
                map.insert(
                    client,
                    StickyEntry {
                        slot: chosen,
                        generation,
                        last_used: *tick,
                    },
                );
                Some(chosen)
            }
        }
    }
}

/// The first candidate at or after slot `from` that passes `ok`, wrapping around.
fn rotate_from(
    candidates: &[Candidate],
    from: usize,
    ok: impl Fn(&Candidate) -> bool,
) -> Option<usize> {
    candidates
        .iter()
        .filter(|c| c.slot >= from && ok(c))
        .chain(candidates.iter().filter(|c| c.slot < from && ok(c)))
        .map(|c| c.slot)
        .next()
}

fn least_loaded(candidates: &[Candidate], from: usize) -> Option<usize> {
    let min = candidates.iter().map(|c| c.load).min()?;
    rotate_from(candidates, from, |c| c.load == min)
}

/// Drops entries of workers that are gone, then, if still full, the least recently used half.
fn sweep(map: &mut HashMap<IpAddr, StickyEntry>, candidates: &[Candidate]) {
    map.retain(|_, e| {
        candidates
            .iter()
            .any(|c| c.slot == e.slot && c.generation == e.generation)
    });
    if map.len() >= STICKY_CAPACITY {
        let mut ages: Vec<u64> = map.values().map(|e| e.last_used).collect();
        let mid = ages.len() / 2;
        let (_, median, _) = ages.select_nth_unstable(mid);
        let cutoff = *median;
        map.retain(|_, e| e.last_used > cutoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(loads: &[u64]) -> Vec<Candidate> {
        loads
            .iter()
            .enumerate()
            .map(|(slot, &load)| Candidate {
                slot,
                generation: 1,
                load,
                weight: 1,
            })
            .collect()
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn round_robin_cycles_and_skips_unavailable_slots() {
        let mut b = Balancer::new(&BalancerKind::RoundRobin);
        let all = cands(&[0, 0, 0]);
        let picks: Vec<_> = (0..6).map(|_| b.pick(&all, IP).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        // Slot 1 is restarting: the order of the others is unchanged.
        let without_1: Vec<_> = all.iter().copied().filter(|c| c.slot != 1).collect();
        let picks: Vec<_> = (0..4).map(|_| b.pick(&without_1, IP).unwrap()).collect();
        assert_eq!(picks, [0, 2, 0, 2]);
        // Slot 1 is back: it gets its turn in order.
        assert_eq!(b.pick(&all, IP), Some(0));
        assert_eq!(b.pick(&all, IP), Some(1));
    }

    #[test]
    fn least_connections_picks_the_lowest_load_and_rotates_ties() {
        let mut b = Balancer::new(&BalancerKind::LeastConnections);
        assert_eq!(b.pick(&cands(&[3, 1, 2]), IP), Some(1));
        let even = cands(&[0, 0, 0]);
        let picks: Vec<_> = (0..3).map(|_| b.pick(&even, IP).unwrap()).collect();
        assert_eq!(picks, [2, 0, 1]);
    }

    #[test]
    fn least_connections_spreads_when_fed_its_own_dispatches() {
        let mut b = Balancer::new(&BalancerKind::LeastConnections);
        let mut loads = [5u64, 0, 0, 2];
        for _ in 0..10 {
            let slot = b.pick(&cands(&loads), IP).unwrap();
            loads[slot] += 1;
        }
        assert_eq!(loads, [5, 4, 4, 4]);
    }

    #[test]
    fn weighted_follows_the_weights_smoothly() {
        let mut b = Balancer::new(&BalancerKind::Weighted);
        let mut cs = cands(&[0, 0, 0]);
        cs[0].weight = 5;
        cs[1].weight = 1;
        cs[2].weight = 1;
        let picks: Vec<_> = (0..7).map(|_| b.pick(&cs, IP).unwrap()).collect();
        // nginx's documented sequence for weights 5, 1, 1.
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
        let mut counts = [0; 3];
        for _ in 0..700 {
            counts[b.pick(&cs, IP).unwrap()] += 1;
        }
        assert_eq!(counts, [500, 100, 100]);
    }

    #[test]
    fn sticky_keeps_a_client_on_its_worker_while_it_lives() {
        let mut b = Balancer::new(&BalancerKind::Sticky);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let c: IpAddr = "10.0.0.2".parse().unwrap();
        let mut cs = cands(&[0, 0]);
        let first = b.pick(&cs, a).unwrap();
        // Load moves, the client stays.
        cs[first].load = 100;
        for _ in 0..5 {
            assert_eq!(b.pick(&cs, a), Some(first));
        }
        // A new client goes to the least-loaded worker.
        assert_eq!(b.pick(&cs, c), Some(1 - first));
        // The worker restarts (new generation): the client moves, then sticks again.
        cs[first].generation = 2;
        let moved = b.pick(&cs, a).unwrap();
        assert_eq!(moved, 1 - first);
        cs[first].load = 0;
        assert_eq!(b.pick(&cs, a), Some(moved));
    }

    #[test]
    fn sticky_memory_is_bounded() {
        let mut b = Balancer::new(&BalancerKind::Sticky);
        let cs = cands(&[0, 0]);
        for i in 0..(STICKY_CAPACITY as u32 + 10) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(i));
            b.pick(&cs, ip).unwrap();
        }
        let Balancer::Sticky { map, .. } = &b else {
            unreachable!()
        };
        assert!(map.len() <= STICKY_CAPACITY);
    }

    #[test]
    fn nothing_to_pick_from() {
        for kind in [
            BalancerKind::RoundRobin,
            BalancerKind::LeastConnections,
            BalancerKind::Weighted,
            BalancerKind::Sticky,
        ] {
            assert_eq!(Balancer::new(&kind).pick(&[], IP), None);
        }
    }
}
