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

use std::net::IpAddr;
use std::time::{Duration, Instant};

use std::sync::Arc;

use shards::budget::{PerIpLimiter, SharedPerIpLimiter, TokenBucket};

const NANOS: u128 = 1_000_000_000;

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

/// A per-IP limit: the node's own fixed table (a node on its own: the
/// tests, the simulations), or a table every shard of the process shares,
/// so that the limit holds for the process however the kernel spreads a
/// source's datagrams over the shards. Both are the runtime's
/// ([`shards::budget`]); an IPv6 /64 is one source.
#[derive(Debug, Clone)]
pub enum IpLimit {
    /// This node's table.
    Local(PerIpLimiter),
    /// The process's table.
    Shared(Arc<SharedPerIpLimiter>),
}

impl IpLimit {
    /// A table of its own: `rate` packets per second per source, bursts of
    /// `burst`; a rate or burst of 0 lets nothing through.
    pub fn local(slots: usize, rate: u32, burst: u32, now: Instant) -> Self {
        IpLimit::Local(PerIpLimiter::new(
            slots,
            u64::from(rate),
            u64::from(burst),
            now,
        ))
    }

    /// A table shared by every shard, with the same meaning.
    pub fn shared(slots: usize, rate: u32, burst: u32, now: Instant) -> Arc<SharedPerIpLimiter> {
        Arc::new(SharedPerIpLimiter::new(
            slots,
            u64::from(rate),
            u64::from(burst),
            now,
        ))
    }

    /// One packet from or to `ip` at `now`: true if allowed (and charged).
    pub fn check(&mut self, now: Instant, ip: IpAddr) -> bool {
        match self {
            IpLimit::Local(l) => l.check(now, ip),
            IpLimit::Shared(l) => l.check(now, ip),
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
    fn case22_millions_of_spoofed_ips_bounded_memory() {
        let t0 = Instant::now();
        let mut l = IpLimit::local(4096, 5, 10, t0);
        let mem = |l: &IpLimit| match l {
            IpLimit::Local(t) => t.memory_bytes(),
            IpLimit::Shared(t) => t.memory_bytes(),
        };
        let before = mem(&l);
        assert!(before <= 4096 * 16, "{before}");
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
        assert_eq!(mem(&l), before);
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
