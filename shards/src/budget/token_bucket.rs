//! A classic token bucket with exact integer refill.

use std::time::{Duration, Instant};

use super::{sat_u64, saturating_nanos, NANOS_PER_SEC};

/// Tokens refill at `rate` per second up to `burst`; a request for `n`
/// tokens passes when `n` are available.
///
/// Refill is exact: the fractional token earned between calls is carried in
/// `frac` (units of token·nanosecond / 1e9), so calling `refill` a million
/// times a second grants exactly the same as calling it once. This matters
/// for conservation proofs of [`super::GlobalBudget`], which are built on
/// this type.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u64,
    burst: u64,
    tokens: u64,
    /// Remainder of `elapsed_ns * rate` not yet worth a whole token, `< 1e9`.
    frac: u64,
    last: Instant,
    granted: u64,
    denied: u64,
}

impl TokenBucket {
    /// A bucket that starts full (`burst` tokens).
    ///
    /// `rate == 0` means no refill (only the initial burst ever passes);
    /// `burst == 0` means nothing ever passes.
    pub fn new(rate_per_sec: u64, burst: u64, now: Instant) -> Self {
        Self {
            rate: rate_per_sec,
            burst,
            tokens: burst,
            frac: 0,
            last: now,
            granted: 0,
            denied: 0,
        }
    }

    /// A bucket that starts empty: useful when a burst at start-up would be
    /// unwelcome (for example right after a restart).
    pub fn new_empty(rate_per_sec: u64, burst: u64, now: Instant) -> Self {
        let mut b = Self::new(rate_per_sec, burst, now);
        b.tokens = 0;
        b
    }

    /// Configured refill rate, tokens per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Configured capacity.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Total tokens handed out by `try_take`/`take_up_to` (saturating).
    pub fn granted(&self) -> u64 {
        self.granted
    }

    /// Total tokens refused (saturating).
    pub fn denied(&self) -> u64 {
        self.denied
    }

    /// Adds the tokens earned since the last call. A `now` earlier than the
    /// last seen instant counts as no time passing (the stored instant is
    /// not moved backwards, so no token is ever granted twice).
    pub fn refill(&mut self, now: Instant) {
        let Some(elapsed) = now.checked_duration_since(self.last) else {
            return;
        };
        self.last = now;
        if self.tokens >= self.burst {
            self.tokens = self.burst;
            self.frac = 0;
            return;
        }
        if self.rate == 0 {
            return;
        }
        // (2^64-1)^2 + 1e9 < 2^128: the product cannot overflow u128, but
        // stay saturating anyway so a future change of types stays safe.
        let earned = u128::from(saturating_nanos(elapsed))
            .saturating_mul(u128::from(self.rate))
            .saturating_add(u128::from(self.frac));
        let whole = sat_u64(earned / NANOS_PER_SEC);
        let frac = (earned % NANOS_PER_SEC) as u64;
        let room = self.burst - self.tokens;
        if whole >= room {
            self.tokens = self.burst;
            self.frac = 0;
        } else {
            self.tokens += whole;
            self.frac = frac;
        }
    }

    /// Tokens available at `now`.
    pub fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        self.tokens
    }

    /// Takes `n` tokens if all are available; otherwise takes none.
    pub fn try_take(&mut self, now: Instant, n: u64) -> bool {
        self.try_take_reserving(now, n, 0)
    }

    /// Whether `n` tokens could be taken leaving at least `reserve` behind
    /// (nothing is taken). Callers keep the reserve for more important
    /// work: less important requests ask with a larger one.
    pub fn can_take(&mut self, now: Instant, n: u64, reserve: u64) -> bool {
        self.refill(now);
        self.tokens >= n.saturating_add(reserve)
    }

    /// Takes `n` tokens if that leaves at least `reserve`; otherwise none.
    pub fn try_take_reserving(&mut self, now: Instant, n: u64, reserve: u64) -> bool {
        if self.can_take(now, n, reserve) {
            self.tokens -= n;
            self.granted = self.granted.saturating_add(n);
            true
        } else {
            self.denied = self.denied.saturating_add(n);
            false
        }
    }

    /// Takes as many tokens as are available, up to `max`; returns how many.
    pub fn take_up_to(&mut self, now: Instant, max: u64) -> u64 {
        self.refill(now);
        let n = self.tokens.min(max);
        self.tokens -= n;
        self.granted = self.granted.saturating_add(n);
        self.denied = self.denied.saturating_add(max - n);
        n
    }

    /// Changes rate and capacity, first settling the tokens earned at the old
    /// rate. Tokens above the new capacity are discarded (never carried), so
    /// shrinking a share cannot leave extra tokens behind.
    pub fn set_rate(&mut self, now: Instant, rate_per_sec: u64, burst: u64) {
        self.refill(now);
        self.rate = rate_per_sec;
        self.burst = burst;
        if self.tokens >= burst {
            self.tokens = burst;
            self.frac = 0;
        }
    }

    /// How long until `n` tokens are available; `None` when that never
    /// happens (`n > burst`, or no refill and not enough tokens).
    pub fn time_until(&mut self, now: Instant, n: u64) -> Option<Duration> {
        self.refill(now);
        if self.tokens >= n {
            return Some(Duration::ZERO);
        }
        if n > self.burst || self.rate == 0 {
            return None;
        }
        let need = u128::from(n - self.tokens) * NANOS_PER_SEC - u128::from(self.frac);
        let ns = need.div_ceil(u128::from(self.rate));
        Some(Duration::from_nanos(sat_u64(ns)))
    }
}

/// Packets and bytes per shard: a datagram passes only if both buckets can
/// pay for it, and then both are charged (never one without the other).
#[derive(Debug, Clone)]
pub struct TrafficBudget {
    packets: TokenBucket,
    bytes: TokenBucket,
}

impl TrafficBudget {
    /// Budget of `pps` packets/s (burst `pkt_burst`) and `bps` bytes/s
    /// (burst `byte_burst`).
    pub fn new(pps: u64, pkt_burst: u64, bps: u64, byte_burst: u64, now: Instant) -> Self {
        Self {
            packets: TokenBucket::new(pps, pkt_burst, now),
            bytes: TokenBucket::new(bps, byte_burst, now),
        }
    }

    /// Admits one datagram of `len` bytes if both budgets allow it.
    pub fn try_admit(&mut self, now: Instant, len: usize) -> bool {
        let len = len as u64;
        if self.packets.available(now) >= 1 && self.bytes.available(now) >= len {
            self.packets.try_take(now, 1) && self.bytes.try_take(now, len)
        } else {
            self.packets.denied = self.packets.denied.saturating_add(1);
            self.bytes.denied = self.bytes.denied.saturating_add(len);
            false
        }
    }

    /// The packet bucket (for stats or re-rating).
    pub fn packets(&mut self) -> &mut TokenBucket {
        &mut self.packets
    }

    /// The byte bucket (for stats or re-rating).
    pub fn bytes(&mut self) -> &mut TokenBucket {
        &mut self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refills_exactly_regardless_of_call_frequency() {
        let t0 = Instant::now();
        let mut a = TokenBucket::new_empty(3, 1_000, t0);
        let mut b = TokenBucket::new_empty(3, 1_000, t0);
        // a: one refill after 10 s; b: 10_000 refills 1 ms apart.
        a.refill(t0 + Duration::from_secs(10));
        for i in 1..=10_000u64 {
            b.refill(t0 + Duration::from_millis(i));
        }
        assert_eq!(a.available(t0 + Duration::from_secs(10)), 30);
        assert_eq!(b.available(t0 + Duration::from_secs(10)), 30);
    }

    #[test]
    fn zero_limits() {
        let t0 = Instant::now();
        let mut no_burst = TokenBucket::new(1_000_000, 0, t0);
        assert!(!no_burst.try_take(t0 + Duration::from_secs(5), 1));
        assert!(no_burst.try_take(t0, 0), "taking zero tokens always passes");
        assert_eq!(no_burst.time_until(t0, 1), None);

        let mut no_rate = TokenBucket::new(0, 2, t0);
        assert!(no_rate.try_take(t0, 2));
        assert!(!no_rate.try_take(t0 + Duration::from_secs(1_000_000), 1));
        assert_eq!(no_rate.time_until(t0, 1), None);
        assert_eq!(no_rate.denied(), 1);
    }

    #[test]
    fn huge_limits_do_not_overflow() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new_empty(u64::MAX, u64::MAX, t0);
        let far = t0 + Duration::from_secs(u64::MAX / 4);
        assert_eq!(b.available(far), u64::MAX);
        assert!(b.try_take(far, u64::MAX));
        assert_eq!(b.available(far), 0);
        // One nanosecond at u64::MAX tokens/s is ~1.8e10 tokens.
        let got = b.available(far + Duration::from_nanos(1));
        assert_eq!(got, u64::MAX / 1_000_000_000);
        assert_eq!(b.take_up_to(far, u64::MAX), got);
        assert_eq!(b.granted(), u64::MAX, "granted saturates");
        let mut i = TokenBucket::new_empty(i32::MAX as u64, i32::MAX as u64, t0);
        assert_eq!(i.available(t0 + Duration::from_secs(2)), i32::MAX as u64);
    }

    #[test]
    fn long_gaps_and_backwards_clock() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5, t0);
        assert!(b.try_take(t0, 5));
        // Backwards: nothing earned, nothing panics.
        let earlier = t0.checked_sub(Duration::from_secs(3600)).unwrap_or(t0);
        assert_eq!(b.available(earlier), 0);
        // A gap of ~17,000 years fills the bucket to burst and no further.
        let far = t0 + Duration::from_secs(u64::MAX >> 25);
        assert_eq!(b.available(far), 5);
        assert_eq!(b.time_until(far, 6), None);
        assert!(b.try_take(far, 5));
        assert_eq!(b.time_until(far, 1), Some(Duration::from_millis(100)));
    }

    #[test]
    fn set_rate_settles_old_rate_and_clamps() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new_empty(1000, 1000, t0);
        b.set_rate(t0 + Duration::from_millis(500), 10, 100);
        assert_eq!(b.available(t0 + Duration::from_millis(500)), 100);
        assert_eq!(b.available(t0 + Duration::from_millis(600)), 100);
    }

    #[test]
    fn traffic_budget_charges_both_or_neither() {
        let t0 = Instant::now();
        let mut t = TrafficBudget::new(10, 10, 1000, 1000, t0);
        assert!(t.try_admit(t0, 600));
        assert!(!t.try_admit(t0, 600), "bytes exhausted");
        assert_eq!(
            t.packets().available(t0),
            9,
            "packet not charged on refusal"
        );
        assert!(t.try_admit(t0, 400));
        assert_eq!(t.bytes().available(t0), 0);
    }
}
