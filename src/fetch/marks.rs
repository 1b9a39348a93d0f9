//! The pool's memory of peers, sans-IO: which to try, which to try last,
//! which not to connect to at all.
//!
//! Every mark is kept under the peer's [`limit_key`] (an IPv6 /64 is one
//! peer, an IPv4-mapped address is its IPv4), the key the TCP layer's
//! per-IP cap counts by, so a host cannot escape a penalty, or multiply its
//! timeouts' cost, by walking its /64. Both tables are bounded and their
//! marks expire.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::{FailureKind, PoolConfig};
use crate::dht::addr::limit_key;

/// Ports below this are privileged: a peer there is refused unless
/// [`PoolConfig::allow_privileged_ports`] (libtorrent's
/// `no_connect_privileged_ports`).
pub const FIRST_UNPRIVILEGED_PORT: u16 = 1024;

#[derive(Debug, Clone, Copy)]
struct Mark {
    until: Instant,
    /// Marks while this one was live, this one included.
    strikes: u32,
}

/// Addresses (by [`limit_key`]) marked until a time, with how many times
/// (each within the hold of the last), in a bounded table: expired marks
/// go on lookup or when the table is full.
#[derive(Debug)]
pub(super) struct IpMarks {
    marks: HashMap<IpAddr, Mark>,
    max: usize,
}

impl IpMarks {
    pub(super) fn new(max: usize) -> Self {
        IpMarks {
            marks: HashMap::new(),
            max: max.max(1),
        }
    }

    /// Live marks on `ip`'s key at `now` (0: none).
    pub(super) fn strikes(&mut self, ip: IpAddr, now: Instant) -> u32 {
        let key = limit_key(ip);
        match self.marks.get(&key) {
            Some(m) if m.until > now => m.strikes,
            Some(_) => {
                self.marks.remove(&key);
                0
            }
            None => 0,
        }
    }

    /// Marks `ip`'s key for `hold` from `now`: one more strike if a mark
    /// is still live (its hold starts again), else the first. Returns the
    /// strikes.
    pub(super) fn mark(&mut self, ip: IpAddr, hold: Duration, now: Instant) -> u32 {
        let key = limit_key(ip);
        let until = now.checked_add(hold).unwrap_or(now);
        let strikes = self.strikes(ip, now).saturating_add(1);
        if !self.marks.contains_key(&key) && self.marks.len() >= self.max {
            self.marks.retain(|_, m| m.until > now);
            if self.marks.len() >= self.max {
                // Still full of live marks: forget an arbitrary one rather
                // than grow.
                if let Some(k) = self.marks.keys().next().copied() {
                    self.marks.remove(&k);
                }
            }
        }
        self.marks.insert(key, Mark { until, strikes });
        strikes
    }

    /// Marks held (live or not yet swept).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.marks.len()
    }
}

/// What to do with one peer now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Connect.
    Try,
    /// Connect only when no peer is to [`Verdict::Try`] (it timed out
    /// recently).
    Last,
    /// Do not connect; count it as this failure.
    Skip(FailureKind),
}

/// The next peer of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pick {
    /// Connect to it.
    Try(SocketAddr),
    /// Taken off the list without a connection; count the failure.
    Skip(SocketAddr, FailureKind),
}

/// Penalties and timeout marks, and the privileged-port rule.
#[derive(Debug)]
pub(super) struct PeerMarks {
    /// Keys that lied or sent junk: skipped until the penalty ends.
    liars: IpMarks,
    /// Keys whose attempts timed out: last after one, skipped after
    /// `timeout_strikes`, each within `penalty` of the last.
    timeouts: IpMarks,
    penalty: Duration,
    timeout_strikes: u32,
    allow_privileged_ports: bool,
}

impl PeerMarks {
    pub(super) fn new(cfg: &PoolConfig) -> Self {
        PeerMarks {
            liars: IpMarks::new(cfg.max_penalised),
            timeouts: IpMarks::new(cfg.max_penalised),
            penalty: cfg.penalty,
            timeout_strikes: cfg.timeout_strikes.max(1),
            allow_privileged_ports: cfg.allow_privileged_ports,
        }
    }

    /// The verdict on `peer` at `now`.
    pub(super) fn judge(&mut self, peer: SocketAddr, now: Instant) -> Verdict {
        if peer.port() < FIRST_UNPRIVILEGED_PORT && !self.allow_privileged_ports {
            return Verdict::Skip(FailureKind::PrivilegedPort);
        }
        if self.liars.strikes(peer.ip(), now) > 0 {
            return Verdict::Skip(FailureKind::Penalised);
        }
        match self.timeouts.strikes(peer.ip(), now) {
            0 => Verdict::Try,
            n if n >= self.timeout_strikes => Verdict::Skip(FailureKind::Penalised),
            _ => Verdict::Last,
        }
    }

    /// Takes the next peer off `peers`: a peer to skip as soon as it is
    /// met (so the caller counts it), else the first to try, else the first
    /// to try last.
    pub(super) fn pick(&mut self, peers: &mut VecDeque<SocketAddr>, now: Instant) -> Option<Pick> {
        let mut last = None;
        for (i, p) in peers.iter().enumerate() {
            match self.judge(*p, now) {
                Verdict::Try => return peers.remove(i).map(Pick::Try),
                Verdict::Skip(kind) => return peers.remove(i).map(|p| Pick::Skip(p, kind)),
                Verdict::Last => {
                    last.get_or_insert(i);
                }
            }
        }
        last.and_then(|i| peers.remove(i)).map(Pick::Try)
    }

    /// An attempt to `peer` failed with `kind` at `now`: liars and junk
    /// senders are penalised, timeouts counted against the peer's key.
    pub(super) fn failed(&mut self, peer: SocketAddr, kind: FailureKind, now: Instant) {
        if kind.penalises() {
            self.liars.mark(peer.ip(), self.penalty, now);
        }
        if kind == FailureKind::Timeout {
            self.timeouts.mark(peer.ip(), self.penalty, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const SEC: Duration = Duration::from_secs(1);

    fn cfg() -> PoolConfig {
        PoolConfig {
            penalty: 300 * SEC,
            timeout_strikes: 3,
            max_penalised: 1000,
            ..PoolConfig::default()
        }
    }

    /// Address `host` in 2001:db8:0:`net`::/64 (documentation prefix; never
    /// sent to).
    fn v6(net: u16, host: u64) -> SocketAddr {
        let bits = (0x2001_0db8_0000u128 << 80) | (u128::from(net) << 64) | u128::from(host);
        SocketAddr::from((Ipv6Addr::from(bits), 6881))
    }

    #[test]
    fn a_liar_penalises_its_whole_v6_prefix_and_nothing_else() {
        let t0 = Instant::now();
        let mut m = PeerMarks::new(&cfg());
        m.failed(v6(1, 7), FailureKind::HashMismatch, t0);
        // A thousand tarpit addresses in that /64: every one skipped.
        for host in (0..1000u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) {
            assert_eq!(
                m.judge(v6(1, host), t0 + SEC),
                Verdict::Skip(FailureKind::Penalised)
            );
        }
        assert_eq!(m.judge(v6(2, 7), t0 + SEC), Verdict::Try);
        assert_eq!(m.liars.len(), 1, "one key for the whole /64");
        // The penalty ends.
        assert_eq!(m.judge(v6(1, 99), t0 + 300 * SEC), Verdict::Try);
        assert_eq!(m.liars.len(), 0, "an expired mark is swept on lookup");
    }

    #[test]
    fn junk_senders_are_penalised_like_liars() {
        let t0 = Instant::now();
        let mut m = PeerMarks::new(&cfg());
        let p = SocketAddr::from(([198, 51, 100, 1], 6881));
        m.failed(p, FailureKind::ByteBudget, t0);
        assert_eq!(m.judge(p, t0), Verdict::Skip(FailureKind::Penalised));
        // Failures that are not the peer's lie mark nothing.
        let q = SocketAddr::from(([198, 51, 100, 2], 6881));
        for k in [
            FailureKind::Refused,
            FailureKind::Reject,
            FailureKind::Closed,
            FailureKind::NoExtension,
        ] {
            m.failed(q, k, t0);
        }
        assert_eq!(m.judge(q, t0), Verdict::Try);
    }

    #[test]
    fn timeouts_put_a_prefix_last_then_off_the_list() {
        let t0 = Instant::now();
        let mut m = PeerMarks::new(&cfg());
        // Three different addresses of one /64 time out, one after the
        // other: the /64 goes last after the first, is skipped after the
        // third.
        m.failed(v6(5, 1), FailureKind::Timeout, t0);
        assert_eq!(m.judge(v6(5, 1000), t0 + SEC), Verdict::Last);
        m.failed(v6(5, 2), FailureKind::Timeout, t0 + 10 * SEC);
        assert_eq!(m.judge(v6(5, 1001), t0 + 11 * SEC), Verdict::Last);
        m.failed(v6(5, 3), FailureKind::Timeout, t0 + 20 * SEC);
        assert_eq!(
            m.judge(v6(5, 1002), t0 + 21 * SEC),
            Verdict::Skip(FailureKind::Penalised)
        );
        // Each strike renewed the hold: 300 s from the last one.
        assert_eq!(
            m.judge(v6(5, 4), t0 + 319 * SEC),
            Verdict::Skip(FailureKind::Penalised)
        );
        assert_eq!(m.judge(v6(5, 4), t0 + 320 * SEC), Verdict::Try);
        // After the hold, the count starts again.
        m.failed(v6(5, 4), FailureKind::Timeout, t0 + 400 * SEC);
        assert_eq!(m.judge(v6(5, 4), t0 + 401 * SEC), Verdict::Last);
        // Another /64 and IPv4 were never touched.
        assert_eq!(m.judge(v6(6, 1), t0 + 21 * SEC), Verdict::Try);
    }

    #[test]
    fn mapped_v4_and_v4_are_one_peer() {
        let t0 = Instant::now();
        let mut m = PeerMarks::new(&cfg());
        let v4 = Ipv4Addr::new(198, 51, 100, 9);
        let mapped = SocketAddr::from((v4.to_ipv6_mapped(), 6881));
        m.failed(mapped, FailureKind::Malformed, t0);
        assert_eq!(
            m.judge(SocketAddr::from((v4, 7000)), t0),
            Verdict::Skip(FailureKind::Penalised)
        );
        // IPv4 is not grouped: the neighbour is another peer.
        assert_eq!(
            m.judge(SocketAddr::from(([198, 51, 100, 10], 7000)), t0),
            Verdict::Try
        );
    }

    #[test]
    fn pick_skips_then_prefers_untimed_peers() {
        let t0 = Instant::now();
        let mut m = PeerMarks::new(&cfg());
        let slow = SocketAddr::from(([198, 51, 100, 1], 6881));
        let liar = SocketAddr::from(([198, 51, 100, 2], 6881));
        let fine = SocketAddr::from(([198, 51, 100, 3], 6881));
        let low = SocketAddr::from(([198, 51, 100, 4], 80));
        m.failed(slow, FailureKind::Timeout, t0);
        m.failed(liar, FailureKind::Oversize, t0);
        let mut peers: VecDeque<SocketAddr> = [slow, liar, low, fine].into_iter().collect();
        assert_eq!(
            m.pick(&mut peers, t0),
            Some(Pick::Skip(liar, FailureKind::Penalised))
        );
        assert_eq!(
            m.pick(&mut peers, t0),
            Some(Pick::Skip(low, FailureKind::PrivilegedPort))
        );
        assert_eq!(m.pick(&mut peers, t0), Some(Pick::Try(fine)));
        assert_eq!(m.pick(&mut peers, t0), Some(Pick::Try(slow)));
        assert_eq!(m.pick(&mut peers, t0), None);
    }

    #[test]
    fn privileged_ports_only_when_allowed() {
        let t0 = Instant::now();
        let p = |port| SocketAddr::from(([198, 51, 100, 1], port));
        let mut m = PeerMarks::new(&cfg());
        for port in [1, 22, 80, 443, 1023] {
            assert_eq!(
                m.judge(p(port), t0),
                Verdict::Skip(FailureKind::PrivilegedPort)
            );
        }
        assert_eq!(m.judge(p(1024), t0), Verdict::Try);
        let mut open = PeerMarks::new(&PoolConfig {
            allow_privileged_ports: true,
            ..cfg()
        });
        assert_eq!(open.judge(p(80), t0), Verdict::Try);
    }

    #[test]
    fn tables_are_bounded_and_expired_marks_make_room_first() {
        let t0 = Instant::now();
        let mut marks = IpMarks::new(64);
        // 64 marks that expire at 10 s, then 10,000 distinct /64s at 20 s.
        for i in 0..64 {
            marks.mark(v6(i, 1).ip(), 10 * SEC, t0);
        }
        let late = t0 + 20 * SEC;
        marks.mark(v6(1000, 1).ip(), 100 * SEC, late);
        assert_eq!(marks.len(), 1, "the expired marks were swept");
        for i in 0..10_000u16 {
            marks.mark(v6(i, 1).ip(), 100 * SEC, late);
            assert!(marks.len() <= 64);
        }
        // Re-marking a key already held never evicts.
        let before = marks.len();
        let held = (0..10_000u16)
            .map(|i| v6(i, 9).ip())
            .find(|ip| marks.strikes(*ip, late) > 0)
            .unwrap();
        assert_eq!(marks.mark(held, 100 * SEC, late), 2);
        assert_eq!(marks.len(), before);
    }
}
