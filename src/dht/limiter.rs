//! The node's outbound budget with priority tiers, and a fixed-memory
//! per-IP limiter.
//!
//! The packet budget is a token bucket at `max_pps` for a node on its own
//! (the tests, the simulations). In the crawler its rate is this shard's
//! share of the runtime's global budget ([`shards::budget::GlobalBudget`]):
//! `--max-pps` is one limit for the whole process, and shards with little
//! to send lend their share to busy ones every 100 ms over the runtime's
//! budget mesh. The node stays sans-IO: the engine moves demand out and the
//! share in ([`Budget::take_demand`], [`Budget::set_share`]).
//!
//! Token buckets are the runtime's ([`shards::budget::TokenBucket`]): one
//! implementation. Everything takes `now` and saturates: limits of 0 let
//! nothing through, `u64::MAX` is effectively unlimited, a `now` earlier
//! than the last call is treated as no time passing, and a gap of centuries
//! just fills the bucket.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use shards::budget::TokenBucket;

const NANOS: u128 = 1_000_000_000;

/// Per-IP clock offsets past this (146 years) re-base the limiter.
const REBASE_NANOS: u64 = 1 << 62;

fn nanos(d: Duration) -> u128 {
    d.as_nanos()
}

/// Who is asking for outbound budget, most important first.
///
/// Exploitation (get_peers to a node known to hold an infohash, and the
/// lookups that follow) may drain the bucket; answering others keeps a
/// small reserve for exploitation; exploration (sampling, find_node walks,
/// pings) only spends what sits above half the burst. Under a sustained
/// shortage exploration therefore stops first (crawlers.md "priority tiers").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// get_peers to a holder, lookups for harvested infohashes.
    Exploit,
    /// Responses and errors to other nodes' queries.
    Respond,
    /// Sampling sweeps, find_node walks, pings.
    Explore,
}

impl Tier {
    fn reserve(self, burst: u64) -> u64 {
        match self {
            Tier::Exploit => 0,
            Tier::Respond => burst / 8,
            Tier::Explore => burst / 2,
        }
    }
}

/// A shard's outbound budget: packets and bytes per second.
///
/// On its own it spends `max_pps`. Under the runtime's global budget the
/// engine calls [`Budget::set_share`] every tick with this shard's current
/// share and feeds [`Budget::take_demand`] to the global budget, which
/// lends idle shards' shares to busy ones.
#[derive(Debug, Clone)]
pub struct Budget {
    packets: TokenBucket,
    bytes: TokenBucket,
    /// Bytes per packet the byte budget allows on average.
    bytes_per_packet: u64,
    window: Duration,
    /// Packets asked for (granted or refused) since the last `take_demand`.
    demand: u64,
}

/// `rate` over `window`, at least `min` (but never above `rate`).
fn burst_for(rate: u64, window: Duration, min: u64) -> u64 {
    let b = u128::from(rate).saturating_mul(nanos(window)) / NANOS;
    u64::try_from(b).unwrap_or(u64::MAX).max(min.min(rate))
}

impl Budget {
    /// `pps` packets and `bps` bytes per second with `window` worth of burst
    /// (at least one packet and one full datagram).
    pub fn new(pps: u64, bps: u64, window: Duration, now: Instant) -> Self {
        Budget {
            packets: TokenBucket::new(pps, burst_for(pps, window, 1), now),
            bytes: TokenBucket::new(bps, burst_for(bps, window, 1500), now),
            bytes_per_packet: bps.checked_div(pps).unwrap_or(0),
            window,
            demand: 0,
        }
    }

    /// Sets the packet rate to `pps` (a share of a global budget) and the
    /// byte rate to follow it at the same bytes per packet.
    pub fn set_share(&mut self, now: Instant, pps: u64) {
        if pps == self.packets.rate() {
            return;
        }
        self.packets
            .set_rate(now, pps, burst_for(pps, self.window, 1));
        let bps = pps.saturating_mul(self.bytes_per_packet);
        self.bytes
            .set_rate(now, bps, burst_for(bps, self.window, 1500));
    }

    /// The packet rate now.
    pub fn pps(&self) -> u64 {
        self.packets.rate()
    }

    /// Packets asked for since the last call (granted or not): what the
    /// global budget lends by.
    pub fn take_demand(&mut self) -> u64 {
        std::mem::take(&mut self.demand)
    }

    /// Whether one packet of `len` bytes fits for `tier` (nothing taken).
    /// A refusal counts as demand.
    pub fn can_send(&mut self, now: Instant, len: usize, tier: Tier) -> bool {
        let pr = tier.reserve(self.packets.burst());
        let br = tier.reserve(self.bytes.burst());
        let ok = self.packets.can_take(now, 1, pr) && self.bytes.can_take(now, len as u64, br);
        if !ok {
            self.demand = self.demand.saturating_add(1);
        }
        ok
    }

    /// Takes one packet of `len` bytes if it fits for `tier`.
    pub fn try_send(&mut self, now: Instant, len: usize, tier: Tier) -> bool {
        if !self.can_send(now, len, tier) {
            return false;
        }
        self.demand = self.demand.saturating_add(1);
        self.packets.try_take(now, 1) && self.bytes.try_take(now, len as u64)
    }

    /// Whole packets available now.
    pub fn packets_available(&mut self, now: Instant) -> u64 {
        self.packets.available(now)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Non-zero tag of the owner's hash; 0 when never used.
    tag: u32,
    /// GCRA theoretical arrival time, nanoseconds since `origin`.
    tat: u64,
}

/// A per-source-IP limiter in fixed memory (libtorrent's dos_blocker idea,
/// sized for millions of spoofed sources).
///
/// Each IP (IPv6: its /64) hashes, with a secret key, to two candidate
/// slots of a table fixed at construction; its state is one GCRA
/// "theoretical arrival time". A source finding both slots busy with other
/// active sources shares the one with more credit, which only ever makes
/// it stricter, never lets it escape its limit. Memory is
/// `size_of::<Slot>() × slots` whatever the traffic.
#[derive(Debug, Clone)]
pub struct PerIpLimiter {
    slots: Box<[Slot]>,
    mask: usize,
    key: (u64, u64),
    origin: Instant,
    /// Nanoseconds per token.
    interval: u64,
    /// How far ahead of now a TAT may run: `interval × (burst - 1)`.
    tolerance: u64,
    closed: bool,
    denied: u64,
}

impl PerIpLimiter {
    /// `slots` (rounded up to a power of two, at least 2, at most 2^22)
    /// sources, each allowed one packet per `interval` with bursts of `burst`.
    /// An interval of zero means unlimited; a burst of zero closes it.
    pub fn new(
        slots: usize,
        interval: Duration,
        burst: u32,
        key: (u64, u64),
        now: Instant,
    ) -> Self {
        let n = slots.clamp(2, 1 << 22).next_power_of_two();
        let interval = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
        PerIpLimiter {
            slots: vec![Slot::default(); n].into_boxed_slice(),
            mask: n - 1,
            key,
            origin: now,
            interval,
            tolerance: interval.saturating_mul(u64::from(burst.saturating_sub(1))),
            closed: burst == 0,
            denied: 0,
        }
    }

    /// A limiter allowing `rate` packets per `per` (e.g. 5 per second split
    /// over 2 shards: `rate = 5, per = 2 s`). A rate of 0 closes it.
    pub fn with_rate(
        slots: usize,
        rate: u32,
        per: Duration,
        burst: u32,
        key: (u64, u64),
        now: Instant,
    ) -> Self {
        if rate == 0 {
            return Self::new(slots, Duration::MAX, 0, key, now);
        }
        Self::new(slots, per / rate, burst, key, now)
    }

    /// Bytes used by the table (constant).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.slots)
    }

    /// Requests refused so far.
    pub fn denied(&self) -> u64 {
        self.denied
    }

    fn hash(&self, ip: IpAddr) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.key.hash(&mut h);
        super::addr::limit_key(ip).hash(&mut h);
        h.finish()
    }

    /// One packet from or to `ip` at `now`: true if allowed (and charged).
    pub fn check(&mut self, now: Instant, ip: IpAddr) -> bool {
        if self.closed {
            self.denied = self.denied.saturating_add(1);
            return false;
        }
        let mut t = u64::try_from(now.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX);
        if t >= REBASE_NANOS {
            // After a gap of a century every bucket is full: start over
            // rather than let the clock saturate.
            self.origin = now;
            self.slots.fill(Slot::default());
            t = 0;
        }
        let h = self.hash(ip);
        let tag = ((h >> 32) as u32) | 1;
        let i1 = (h as usize) & self.mask;
        let mut i2 = (h.rotate_right(21) as usize) & self.mask;
        if i2 == i1 {
            i2 ^= 1;
        }
        let (s1, s2) = match (self.slots.get(i1), self.slots.get(i2)) {
            (Some(a), Some(b)) => (*a, *b),
            _ => return false,
        };
        let idle = |s: &Slot| s.tag == 0 || s.tat <= t;
        let idx = if s1.tag == tag {
            i1
        } else if s2.tag == tag {
            i2
        } else if idle(&s1) {
            i1
        } else if idle(&s2) {
            i2
        } else if s1.tat <= s2.tat {
            i1
        } else {
            i2
        };
        let Some(slot) = self.slots.get_mut(idx) else {
            return false;
        };
        if slot.tag != tag && (slot.tag == 0 || slot.tat <= t) {
            *slot = Slot { tag, tat: t };
        }
        let tat = slot.tat.max(t);
        if tat - t <= self.tolerance {
            slot.tat = tat.saturating_add(self.interval);
            true
        } else {
            self.denied = self.denied.saturating_add(1);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case23_bucket_limits_and_clock_gaps() {
        let t0 = Instant::now();
        // Limit 0: nothing ever passes, even after a long gap.
        let mut zero = TokenBucket::new(0, 0, t0);
        assert!(!zero.try_take(t0, 1));
        assert!(!zero.try_take(t0 + Duration::from_secs(1 << 40), 1));
        // Huge: everything passes, no overflow after a huge gap.
        let mut huge = TokenBucket::new(u64::MAX, u64::MAX, t0);
        for _ in 0..1000 {
            assert!(huge.try_take(t0, 1_000_000));
        }
        assert!(huge.try_take(t0 + Duration::from_secs(u64::MAX / 4), u64::MAX / 2));
        // Normal: 10/s, burst 5; a clock going backwards gives nothing.
        let mut b = TokenBucket::new(10, 5, t0 + Duration::from_secs(10));
        for _ in 0..5 {
            assert!(b.try_take(t0 + Duration::from_secs(10), 1));
        }
        assert!(!b.try_take(t0 + Duration::from_secs(10), 1));
        assert!(!b.try_take(t0, 1));
        assert!(b.try_take(t0 + Duration::from_millis(10_100), 1));
        // A gap of centuries refills to the burst, not beyond.
        assert_eq!(b.available(t0 + Duration::from_secs(1 << 36)), 5);
        // Reserve is honoured.
        assert!(!b.try_take_reserving(t0 + Duration::from_secs(1 << 36), 1, 5));
        assert!(b.try_take_reserving(t0 + Duration::from_secs(1 << 36), 1, 4));
    }

    #[test]
    fn case23_per_ip_limits() {
        let t0 = Instant::now();
        let ip: IpAddr = IpAddr::from([1, 2, 3, 4]);
        let mut closed = PerIpLimiter::with_rate(64, 0, Duration::from_secs(1), 10, (1, 2), t0);
        assert!(!closed.check(t0, ip));
        assert!(!closed.check(t0 + Duration::from_secs(1 << 40), ip));
        let mut open = PerIpLimiter::new(64, Duration::ZERO, 1, (1, 2), t0);
        for _ in 0..10_000 {
            assert!(open.check(t0, ip));
        }
        let mut l = PerIpLimiter::with_rate(64, 5, Duration::from_secs(1), 10, (1, 2), t0);
        let passed = (0..100).filter(|_| l.check(t0, ip)).count();
        assert_eq!(passed, 10);
        // After a huge gap the burst is back, exactly.
        let later = t0 + Duration::from_secs(1 << 40);
        let passed = (0..100).filter(|_| l.check(later, ip)).count();
        assert_eq!(passed, 10);
        // A clock going backwards gives no extra credit.
        assert!(!l.check(t0, ip));
        // Rate: over 10 s at 100 attempts/s, 10 burst + 5/s pass (±1).
        let mut l = PerIpLimiter::with_rate(64, 5, Duration::from_secs(1), 10, (1, 2), t0);
        let mut n = 0;
        for ms in (0..10_000u64).step_by(10) {
            if l.check(t0 + Duration::from_millis(ms), ip) {
                n += 1;
            }
        }
        assert!((59..=61).contains(&n), "{n}");
    }

    #[test]
    fn case22_millions_of_spoofed_ips_bounded_memory() {
        let t0 = Instant::now();
        let mut l = PerIpLimiter::with_rate(4096, 5, Duration::from_secs(1), 10, (7, 9), t0);
        let mem = l.memory_bytes();
        assert_eq!(mem, 4096 * std::mem::size_of::<Slot>());
        let victim = IpAddr::from([9, 9, 9, 9]);
        // The victim floods too: it must stay limited whatever else happens.
        let mut victim_passed = 0;
        for i in 0..2_000_000u32 {
            let now = t0 + Duration::from_micros(u64::from(i));
            let spoofed = IpAddr::from((i.wrapping_mul(2_654_435_761)).to_be_bytes());
            l.check(now, spoofed);
            if i % 100 == 0 && l.check(now, victim) {
                victim_passed += 1;
            }
        }
        assert_eq!(l.memory_bytes(), mem);
        // 2 s of flooding: at most its burst + 2 s of rate.
        assert!(victim_passed <= 10 + 10 + 1, "{victim_passed}");
    }

    #[test]
    fn budget_tiers() {
        let t0 = Instant::now();
        let mut b = Budget::new(100, u64::MAX, Duration::from_secs(1), t0);
        let explore = (0..200)
            .filter(|_| b.try_send(t0, 100, Tier::Explore))
            .count();
        assert_eq!(explore, 50);
        let respond = (0..200)
            .filter(|_| b.try_send(t0, 100, Tier::Respond))
            .count();
        assert_eq!(respond, 50 - 12);
        let exploit = (0..200)
            .filter(|_| b.try_send(t0, 100, Tier::Exploit))
            .count();
        assert_eq!(exploit, 12);
        // Bytes bind too.
        let mut b = Budget::new(1000, 3000, Duration::from_secs(1), t0);
        let n = (0..100)
            .filter(|_| b.try_send(t0, 1000, Tier::Exploit))
            .count();
        assert_eq!(n, 3);
    }
}
