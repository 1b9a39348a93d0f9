//! Rate budgets as pure (sans-IO) state machines.
//!
//! Nothing in this module reads a clock, sleeps or does IO: every method that
//! depends on time takes `now: Instant` from the caller. That makes the
//! arithmetic testable with synthetic clocks (hours of simulated time in a
//! millisecond of test time, clock gaps of centuries) and lets one `now` be
//! read per batch of datagrams instead of per datagram.
//!
//! All arithmetic saturates: limits of 0 (nothing passes), `u64::MAX`
//! (effectively unlimited), a `now` earlier than the last call (treated as no
//! time passing) and very long gaps (the bucket is simply full) never
//! overflow or panic.
//!
//! * [`TokenBucket`] / [`TrafficBudget`]: per-shard packets and bytes.
//! * [`GlobalBudget`]: one global rate split over shards, with idle shards
//!   lending their share to busy ones over the mesh.
//! * [`PerIpLimiter`]: a fixed-memory per-source limiter that survives
//!   millions of spoofed sources.
//! * [`SharedPerIpLimiter`], [`SharedConnCounts`]: per-IP limits that hold
//!   across shards (atomics in one table shared by every shard).
//! * [`limit_key`]: the address a source is limited under (IPv6 by /64,
//!   IPv4-mapped as IPv4), for every per-address limit.

mod global;
mod per_ip;
mod shared;
mod token_bucket;

pub use global::{BudgetMsg, GlobalBudget, GlobalBudgetConfig};
pub use per_ip::{limit_key, prefix_key, PerIpLimiter, PerIpStats, IPV6_LIMIT_PREFIX};
pub use shared::{SharedConnCounts, SharedPerIpLimiter, MAX_SHARED_SLOTS};
pub use token_bucket::{TokenBucket, TrafficBudget};

/// Nanoseconds per second, as the u128 the refill arithmetic uses.
pub(crate) const NANOS_PER_SEC: u128 = 1_000_000_000;

/// `d` in nanoseconds, saturated to `u64` (584 years); longer gaps behave
/// exactly like 584 years would: every bucket is full.
pub(crate) fn saturating_nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `v` saturated into a u64.
pub(crate) fn sat_u64(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}
