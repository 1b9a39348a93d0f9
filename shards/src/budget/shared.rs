//! Per-IP limits that hold across shards.
//!
//! With `SO_REUSEPORT` the kernel spreads one address's datagrams over the
//! shards by their 4-tuple, and each shard opens its own TCP connections:
//! a limit kept per shard would be multiplied by the number of shards for a
//! source that uses several ports, or a peer that several shards fetch
//! from. These tables are shared by every shard of the process (one `Arc`,
//! built at start-up) and updated with atomics only: no lock, no message,
//! the same cost on every shard.
//!
//! Both are fixed arrays indexed by a keyed hash of the address's
//! [`limit_key`] (an IPv6 /64 is one address). They keep no owner tag: two
//! addresses that land on one slot share it, which only ever makes both
//! stricter, never lets either escape its limit. With the sizes used (2^16
//! slots or more against at most a few thousand concurrent connections or
//! active sources per process) that is rare; the keyed hash stops an
//! attacker from aiming at a victim's slot.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use super::{limit_key, sat_u64, saturating_nanos, NANOS_PER_SEC};

/// Upper bound on either table (64 MiB of slots).
pub const MAX_SHARED_SLOTS: usize = 1 << 23;

fn slot_of(hasher: &RandomState, mask: usize, ip: IpAddr) -> usize {
    (hasher.hash_one(limit_key(ip)) as usize) & mask
}

/// A per-IP rate limit (GCRA, one theoretical arrival time per slot) that
/// every shard of a process checks against the same table.
#[derive(Debug)]
pub struct SharedPerIpLimiter {
    slots: Box<[AtomicU64]>,
    mask: usize,
    hasher: RandomState,
    origin: Instant,
    interval_ns: u64,
    tolerance_ns: u64,
    closed: bool,
}

impl SharedPerIpLimiter {
    /// `rate_per_sec` per address with bursts of `burst`, over `slots`
    /// (rounded up to a power of two).
    pub fn new(slots: usize, rate_per_sec: u64, burst: u64, now: Instant) -> Self {
        let n = slots.clamp(2, MAX_SHARED_SLOTS).next_power_of_two();
        let interval_ns = if rate_per_sec == 0 {
            u64::MAX
        } else {
            sat_u64(NANOS_PER_SEC / u128::from(rate_per_sec))
        };
        SharedPerIpLimiter {
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
            mask: n - 1,
            hasher: RandomState::new(),
            origin: now,
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(burst.saturating_sub(1)),
            closed: rate_per_sec == 0 || burst == 0,
        }
    }

    /// Bytes used by the table (constant).
    pub fn memory_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<AtomicU64>()
    }

    /// One request from `ip` at `now`: true if allowed (and charged).
    pub fn check(&self, now: Instant, ip: IpAddr) -> bool {
        if self.closed {
            return false;
        }
        // +1 so that 0 stays "never used" (an idle slot).
        let t = saturating_nanos(now.saturating_duration_since(self.origin)).saturating_add(1);
        let slot = &self.slots[slot_of(&self.hasher, self.mask, ip)];
        let mut cur = slot.load(Ordering::Relaxed);
        loop {
            let tat = cur.max(t);
            if tat - t > self.tolerance_ns {
                return false;
            }
            let next = tat.saturating_add(self.interval_ns);
            match slot.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(seen) => cur = seen,
            }
        }
    }
}

/// Concurrent connections per IP, counted across shards.
#[derive(Debug)]
pub struct SharedConnCounts {
    slots: Box<[AtomicU32]>,
    mask: usize,
    hasher: RandomState,
}

impl SharedConnCounts {
    /// A table of `slots` counters (rounded up to a power of two).
    pub fn new(slots: usize) -> Self {
        let n = slots.clamp(2, MAX_SHARED_SLOTS).next_power_of_two();
        SharedConnCounts {
            slots: (0..n).map(|_| AtomicU32::new(0)).collect(),
            mask: n - 1,
            hasher: RandomState::new(),
        }
    }

    /// Counts one more connection to `ip` if fewer than `max` are open
    /// (across every shard); returns whether it did.
    pub fn try_acquire(&self, ip: IpAddr, max: usize) -> bool {
        let max = u32::try_from(max).unwrap_or(u32::MAX);
        let slot = &self.slots[slot_of(&self.hasher, self.mask, ip)];
        slot.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
    }

    /// Counts one connection to `ip` closed.
    pub fn release(&self, ip: IpAddr) {
        let slot = &self.slots[slot_of(&self.hasher, self.mask, ip)];
        let _ = slot.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
            Some(n.saturating_sub(1))
        });
    }

    /// Connections open to `ip` (and any address sharing its slot).
    pub fn count(&self, ip: IpAddr) -> usize {
        self.slots[slot_of(&self.hasher, self.mask, ip)].load(Ordering::Relaxed) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn one_rate_for_all_threads() {
        let t0 = Instant::now();
        let lim = Arc::new(SharedPerIpLimiter::new(1 << 16, 10, 20, t0));
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        // Four threads (as four shards) ask 100 times each at the same
        // instant: the burst passes once in total, not once per thread.
        let passed: usize = (0..4)
            .map(|_| {
                let lim = lim.clone();
                std::thread::spawn(move || (0..100).filter(|_| lim.check(t0, ip)).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(passed, 20);
        // One second later the rate (10/s) has refilled for everyone.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..100).filter(|_| lim.check(t1, ip)).count(), 10);
        // Other addresses are not charged; an IPv6 /64 is one address.
        assert!(lim.check(t1, "192.0.2.10".parse().unwrap()));
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(
            (0..50)
                .filter(|i| lim.check(t1, if i % 2 == 0 { a } else { b }))
                .count(),
            20
        );
        // Closed limits pass nothing.
        assert!(!SharedPerIpLimiter::new(8, 0, 5, t0).check(t0, ip));
    }

    #[test]
    fn connection_counts_hold_across_threads() {
        let c = Arc::new(SharedConnCounts::new(1 << 10));
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        let got: usize = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..10).filter(|_| c.try_acquire(ip, 3)).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(got, 3);
        assert_eq!(c.count(ip), 3);
        c.release(ip);
        assert!(c.try_acquire(ip, 3));
        assert!(!c.try_acquire(ip, 3));
        for _ in 0..5 {
            c.release(ip);
        }
        assert_eq!(c.count(ip), 0);
    }
}
