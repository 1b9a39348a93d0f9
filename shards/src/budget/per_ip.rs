//! A per-source-address limiter in fixed memory.
//!
//! Why fixed memory: UDP source addresses are trivially spoofed, so a map
//! keyed by source IP grows with whatever the attacker sends. This table
//! has a fixed number of slots chosen at construction and never allocates
//! afterwards; memory is `16 bytes × slots` no matter how many sources exist.
//!
//! Why a keyed hash: with a public hash an attacker could aim spoofed
//! sources at the slot of a victim and starve it. Slots are chosen by
//! SipHash with a random per-process key (`RandomState`), so they cannot.
//!
//! Each source has two candidate slots (two-choice hashing). Its state is
//! one "theoretical arrival time" (GCRA, equivalent to a token bucket of
//! rate `r` and capacity `burst`).
//!
//! Behaviour on collision (a source whose two slots are both owned by other,
//! active sources): it *shares* the candidate slot with more credit left,
//! i.e. it is limited together with that owner. The alternative (evicting
//! an active owner) would let a spoofed flood reset the limits of a real
//! flooding source; sharing only ever makes a colliding source stricter.
//! A slot whose owner has been quiet long enough for the bucket to refill
//! is free to take over: it holds no information.
//!
//! What this does not do: it is not a defence against a volumetric flood of
//! distinct spoofed sources. Such a flood takes one token from many slots;
//! when it exceeds `slots × rate` per second, every slot is busy and honest
//! sources start sharing. The per-shard and global budgets bound the total.
//!
//! IPv6 sources are keyed by their prefix (default /64): one host usually
//! owns a whole /64, so keying by the full address would let it walk 2^64
//! keys. IPv4-mapped IPv6 addresses are keyed as IPv4. [`limit_key`] is
//! that rule on its own, for every other per-address limit (the TCP layer's
//! per-IP connection cap, an application's penalty tables).

use std::{
    collections::hash_map::RandomState,
    hash::BuildHasher,
    net::{IpAddr, Ipv6Addr},
    time::Instant,
};

use super::{sat_u64, saturating_nanos, NANOS_PER_SEC};

/// The IPv6 prefix length a source is limited under by default: one
/// subscriber or one server usually holds a whole /64 (RFC 6177 assigns
/// at least that), so a limit on single IPv6 addresses is no limit.
pub const IPV6_LIMIT_PREFIX: u8 = 64;

/// The address `ip` is limited under: an IPv4 address as it is, an
/// IPv4-mapped IPv6 address as its IPv4, any other IPv6 address as its
/// first `v6_prefix` bits (0..=128; the rest zeroed).
pub fn prefix_key(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let masked = match v6_prefix.min(128) {
                    0 => 0,
                    p => u128::from(v6) & (u128::MAX << (128 - u32::from(p))),
                };
                IpAddr::V6(Ipv6Addr::from(masked))
            }
        },
    }
}

/// The address `ip` is limited under with the default /64
/// ([`IPV6_LIMIT_PREFIX`]): every per-address cap, budget and penalty
/// should count by this, so that one IPv6 host cannot multiply its share
/// by walking its /64.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    prefix_key(ip, IPV6_LIMIT_PREFIX)
}

/// Upper bound on the table size (256 MiB), so a mistaken configuration
/// cannot ask for absurd memory.
pub const MAX_SLOTS: usize = 1 << 24;

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// High bits of the owner's hash, 0 when never used.
    tag: u32,
    /// GCRA theoretical arrival time, nanoseconds since `origin`.
    tat: u64,
}

/// Counters kept by the limiter (all saturating).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PerIpStats {
    /// Requests allowed.
    pub allowed: u64,
    /// Requests refused.
    pub denied: u64,
    /// Lookups that found both candidate slots owned by other active
    /// sources and had to share one.
    pub shared_slot: u64,
}

/// Fixed-memory per-IP rate limiter (see the module docs).
#[derive(Debug, Clone)]
pub struct PerIpLimiter<S = RandomState> {
    slots: Box<[Slot]>,
    mask: usize,
    hasher: S,
    origin: Instant,
    /// Nanoseconds per token (0 means "unlimited", used when rate > 1e9/s).
    interval_ns: u64,
    /// How far ahead of now a TAT may be and still pass: `interval × (burst-1)`.
    tolerance_ns: u64,
    /// Nothing passes (rate or burst of 0).
    closed: bool,
    ipv6_prefix: u8,
    stats: PerIpStats,
}

impl PerIpLimiter<RandomState> {
    /// `slots` is rounded up to a power of two (at least 2). `rate_per_sec`
    /// requests per second per source, with bursts of `burst`.
    pub fn new(slots: usize, rate_per_sec: u64, burst: u64, now: Instant) -> Self {
        Self::with_hasher(slots, rate_per_sec, burst, now, RandomState::new())
    }
}

impl<S: BuildHasher> PerIpLimiter<S> {
    /// Same as [`PerIpLimiter::new`] with an explicit hasher (tests use a
    /// fixed one to make slot choices reproducible; production should keep
    /// the random key).
    pub fn with_hasher(
        slots: usize,
        rate_per_sec: u64,
        burst: u64,
        now: Instant,
        hasher: S,
    ) -> Self {
        let n = slots.clamp(2, MAX_SLOTS).next_power_of_two();
        let interval_ns = if rate_per_sec == 0 {
            u64::MAX
        } else {
            sat_u64(NANOS_PER_SEC / u128::from(rate_per_sec))
        };
        Self {
            slots: vec![Slot::default(); n].into_boxed_slice(),
            mask: n - 1,
            hasher,
            origin: now,
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(burst.saturating_sub(1)),
            closed: rate_per_sec == 0 || burst == 0,
            ipv6_prefix: IPV6_LIMIT_PREFIX,
            stats: PerIpStats::default(),
        }
    }

    /// Keys IPv6 sources by their first `bits` bits (0..=128, default 64).
    pub fn ipv6_prefix(mut self, bits: u8) -> Self {
        self.ipv6_prefix = bits.min(128);
        self
    }

    /// Number of slots (the memory bound).
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Bytes used by the table; constant for the limiter's lifetime.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.slots)
    }

    /// Counters so far.
    pub fn stats(&self) -> PerIpStats {
        self.stats
    }

    fn key(&self, ip: IpAddr) -> u64 {
        self.hasher.hash_one(prefix_key(ip, self.ipv6_prefix))
    }

    /// One request from `ip` at `now`: true if allowed (and charged).
    pub fn check(&mut self, now: Instant, ip: IpAddr) -> bool {
        if self.closed {
            self.stats.denied = self.stats.denied.saturating_add(1);
            return false;
        }
        let t = saturating_nanos(now.saturating_duration_since(self.origin));
        let h = self.key(ip);
        // Tag 0 marks an unused slot, so force owner tags non-zero.
        let tag = ((h >> 32) as u32) | 1;
        let i1 = (h as usize) & self.mask;
        let mut i2 = (h.rotate_right(17) as usize) & self.mask;
        if i2 == i1 {
            i2 ^= 1;
        }
        let idle = |s: &Slot| s.tag == 0 || s.tat <= t;
        let idx = if self.slots[i1].tag == tag {
            i1
        } else if self.slots[i2].tag == tag {
            i2
        } else if idle(&self.slots[i1]) {
            self.slots[i1] = Slot { tag, tat: t };
            i1
        } else if idle(&self.slots[i2]) {
            self.slots[i2] = Slot { tag, tat: t };
            i2
        } else {
            self.stats.shared_slot = self.stats.shared_slot.saturating_add(1);
            if self.slots[i1].tat <= self.slots[i2].tat {
                i1
            } else {
                i2
            }
        };
        let slot = &mut self.slots[idx];
        let tat = slot.tat.max(t);
        if tat - t <= self.tolerance_ns {
            slot.tat = tat.saturating_add(self.interval_ns);
            self.stats.allowed = self.stats.allowed.saturating_add(1);
            true
        } else {
            self.stats.denied = self.stats.denied.saturating_add(1);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{hash::BuildHasherDefault, net::Ipv4Addr, time::Duration};

    type Fixed = BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

    #[test]
    fn throttles_a_flooder_while_others_pass() {
        let t0 = Instant::now();
        // A fixed hasher keeps slot placement, hence the result, reproducible.
        let mut l = PerIpLimiter::with_hasher(65536, 10, 5, t0, Fixed::default());
        let flooder = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let mut flood_ok = 0;
        let mut others_ok = 0;
        // 1 second: the flooder sends 10_000 requests, 50 others send 5 each.
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_micros(i * 100);
            if l.check(now, flooder) {
                flood_ok += 1;
            }
            if i % 40 == 0 {
                let other = IpAddr::V4(Ipv4Addr::new(192, 168, 0, (i / 40 % 50) as u8));
                if l.check(now, other) {
                    others_ok += 1;
                }
            }
        }
        // burst 5 + 10/s for ~1 s.
        assert!((14..=16).contains(&flood_ok), "flooder got {flood_ok}");
        assert_eq!(others_ok, 250, "every well-behaved source passes");
    }

    #[test]
    fn memory_is_fixed_under_millions_of_spoofed_sources() {
        let t0 = Instant::now();
        let mut l = PerIpLimiter::new(4096, 100, 10, t0);
        let before = l.memory_bytes();
        for i in 0..2_000_000u32 {
            l.check(
                t0 + Duration::from_nanos(u64::from(i)),
                IpAddr::V4(Ipv4Addr::from(i)),
            );
        }
        assert_eq!(l.memory_bytes(), before);
        assert_eq!(before, 4096 * 16);
        assert_eq!(l.stats().allowed + l.stats().denied, 2_000_000);
    }

    #[test]
    fn colliding_source_shares_and_is_never_looser() {
        let t0 = Instant::now();
        // Two slots only: every source collides with every other.
        let mut l = PerIpLimiter::with_hasher(2, 1, 2, t0, Fixed::default());
        let a = IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1));
        let b = IpAddr::V4(Ipv4Addr::new(2, 2, 2, 2));
        let c = IpAddr::V4(Ipv4Addr::new(3, 3, 3, 3));
        assert!(l.check(t0, a));
        assert!(l.check(t0, b));
        // c finds both slots active and shares whichever has more credit
        // left: one token remains in each, so two requests pass, then none.
        let c1 = l.check(t0, c);
        let c2 = l.check(t0, c);
        let c3 = l.check(t0, c);
        assert!(l.stats().shared_slot >= 1);
        assert_eq!([c1, c2, c3].iter().filter(|x| **x).count(), 2);
        // The whole table allowed at most slots × burst at t0.
        assert!(l.stats().allowed <= 4);
    }

    #[test]
    fn edge_limits() {
        let t0 = Instant::now();
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut zero_rate = PerIpLimiter::new(8, 0, 100, t0);
        assert!(!zero_rate.check(t0, ip));
        let mut zero_burst = PerIpLimiter::new(8, 100, 0, t0);
        assert!(!zero_burst.check(t0 + Duration::from_secs(9), ip));
        let mut huge = PerIpLimiter::new(8, u64::MAX, u64::MAX, t0);
        for _ in 0..10_000 {
            assert!(huge.check(t0, ip));
        }
        let mut big = PerIpLimiter::new(0, i32::MAX as u64, i32::MAX as u64, t0);
        assert_eq!(big.slots(), 2);
        for _ in 0..1000 {
            assert!(big.check(t0, ip));
        }
        // Long gap and backwards clock.
        let mut l = PerIpLimiter::new(8, 1, 1, t0);
        assert!(l.check(t0, ip));
        assert!(!l.check(t0, ip));
        let earlier = t0.checked_sub(Duration::from_secs(10)).unwrap_or(t0);
        assert!(!l.check(earlier, ip));
        assert!(l.check(t0 + Duration::from_secs(u64::MAX >> 25), ip));
    }

    #[test]
    fn limit_keys_group_a_v6_prefix_and_unmap_v4() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(limit_key(ip("198.51.100.7")), ip("198.51.100.7"));
        assert_ne!(limit_key(ip("198.51.100.7")), limit_key(ip("198.51.100.8")));
        assert_eq!(limit_key(ip("::ffff:198.51.100.7")), ip("198.51.100.7"));
        assert_eq!(limit_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            limit_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            limit_key(ip("2001:db8:1:2::1"))
        );
        assert_ne!(
            limit_key(ip("2001:db8:1:3::1")),
            limit_key(ip("2001:db8:1:2::1"))
        );
        assert_eq!(prefix_key(ip("2001:db8::1"), 0), ip("::"));
        assert_eq!(prefix_key(ip("2001:db8::1"), 128), ip("2001:db8::1"));
        assert_eq!(prefix_key(ip("2001:db8::1"), 200), ip("2001:db8::1"));
        assert_eq!(
            prefix_key(ip("2001:db8:ffff::1"), 40),
            ip("2001:db8:ff00::")
        );
    }

    #[test]
    fn ipv6_hosts_in_one_prefix_share_a_budget() {
        let t0 = Instant::now();
        let mut l = PerIpLimiter::new(1024, 1, 3, t0);
        let mut ok = 0;
        for i in 0..100u16 {
            let ip = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, i));
            if l.check(t0, ip) {
                ok += 1;
            }
        }
        assert_eq!(ok, 3);
        let mapped: IpAddr = "::ffff:198.51.100.1".parse().unwrap();
        let v4: IpAddr = "198.51.100.1".parse().unwrap();
        let mut l = PerIpLimiter::new(1024, 1, 1, t0);
        assert!(l.check(t0, mapped));
        assert!(!l.check(t0, v4), "mapped and plain IPv4 are one source");
    }
}
