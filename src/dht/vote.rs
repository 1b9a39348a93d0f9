//! Our external address, by a vote of the nodes that answer us.
//!
//! BEP 42 ties a node id to the address other nodes see, and BEP 42 asks
//! every response to carry that address (`ip`). Behind a NAT, or bound to a
//! wildcard address, we only learn it from them. One node can lie, so it is
//! a vote, after libtorrent's `ip_voter`:
//!
//! * **Only replies to our own queries vote** (the caller checks the
//!   transaction id and the exact endpoint), never unsolicited packets.
//! * **One vote per voter, voters are prefixes**: the /24 of an IPv4 voter,
//!   the /64 of an IPv6 one ([`lookup_prefix`]), so one host, or one
//!   attacker with a block of addresses, counts once. A voter's newest
//!   report replaces its older one (that is how the vote follows a change of
//!   our address: voters switch as they answer again).
//! * **Votes expire** after [`VoteConfig::expiry`] without a fresh report
//!   from that voter.
//! * **A winner needs [`VoteConfig::min_votes`] votes and a clear margin**:
//!   more than 3/2 of the runner-up's (libtorrent: `top * 2 / 3 > second`).
//!   Liars who are a minority of the voters heard cannot win (only liars
//!   who all answer before the honest voters could, until those outvote
//!   them), 40 % of them or more can stall a change (the current address
//!   stays) but not make one, and a single voter never decides anything
//!   (at least two votes are always needed).
//! * **Reported addresses that cannot be ours are not votes**: another
//!   family than the voter's, unspecified, martian, or BEP 42-exempt (a
//!   private or loopback address needs no BEP 42 id).
//!
//! The voter is pure state with `now` passed in; memory is bounded by
//! [`VoteConfig::max_voters`] (a voter past the bound is not counted until
//! older votes expire: a flood of fresh prefixes cannot push out the
//! established voters).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::addr::{is_martian_ip, lookup_prefix};
use crate::id::bep42_exempt;

/// How expired votes are looked for at most this often (the precision of
/// [`VoteConfig::expiry`]).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The vote's knobs (see the module docs; defaults and reasons in
/// `tuning/README.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoteConfig {
    /// Learn the external address and move to a BEP 42 id for it (shard 0
    /// votes and re-keys the others). Off with `spread` identities, whose
    /// ids must stay inside their shards' slices.
    pub enabled: bool,
    /// Votes (distinct voter prefixes) the winner needs at least (2 at
    /// least, whatever is set).
    pub min_votes: u32,
    /// A vote counts this long after the voter's last report.
    pub expiry: Duration,
    /// Voters remembered at most.
    pub max_voters: usize,
}

impl Default for VoteConfig {
    fn default() -> Self {
        VoteConfig {
            enabled: true,
            min_votes: 10,
            expiry: Duration::from_secs(10 * 60),
            max_voters: 1024,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Vote {
    ip: IpAddr,
    at: Instant,
}

/// The vote for one socket's external address (see the module docs).
#[derive(Debug, Clone)]
pub struct IpVoter {
    cfg: VoteConfig,
    voters: HashMap<u64, Vote>,
    tally: HashMap<IpAddr, u32>,
    current: Option<IpAddr>,
    /// The oldest vote's time, or earlier (a lower bound).
    oldest: Option<Instant>,
    last_sweep: Option<Instant>,
}

impl IpVoter {
    /// An empty vote.
    pub fn new(cfg: VoteConfig) -> Self {
        IpVoter {
            cfg,
            voters: HashMap::new(),
            tally: HashMap::new(),
            current: None,
            oldest: None,
            last_sweep: None,
        }
    }

    /// The address the vote settled on, if any.
    pub fn current(&self) -> Option<IpAddr> {
        self.current
    }

    /// Votes counted for `ip` now.
    pub fn votes_for(&self, ip: IpAddr) -> u32 {
        self.tally.get(&ip).copied().unwrap_or(0)
    }

    /// Voters remembered.
    pub fn voters(&self) -> usize {
        self.voters.len()
    }

    /// `voter` (the source of a reply to our query) says we are `reported`.
    /// Returns the new external address when this vote changes it.
    pub fn vote(&mut self, voter: IpAddr, reported: IpAddr, now: Instant) -> Option<IpAddr> {
        let voter = voter.to_canonical();
        let reported = reported.to_canonical();
        if voter.is_ipv4() != reported.is_ipv4()
            || is_martian_ip(reported, false)
            || bep42_exempt(reported)
        {
            return None;
        }
        let key = lookup_prefix(voter);
        match self.voters.get_mut(&key) {
            Some(v) if v.ip == reported => {
                v.at = now;
                return None;
            }
            Some(v) => {
                let old = std::mem::replace(
                    v,
                    Vote {
                        ip: reported,
                        at: now,
                    },
                );
                self.untally(old.ip);
            }
            None => {
                if self.voters.len() >= self.cfg.max_voters {
                    self.sweep(now, true);
                    if self.voters.len() >= self.cfg.max_voters {
                        return None;
                    }
                }
                self.voters.insert(
                    key,
                    Vote {
                        ip: reported,
                        at: now,
                    },
                );
                self.oldest = Some(self.oldest.map_or(now, |o| o.min(now)));
            }
        }
        *self.tally.entry(reported).or_insert(0) += 1;
        self.decide()
    }

    /// Drops expired votes. Returns the new external address when that
    /// changes it (the remaining voters settle on another one).
    pub fn expire(&mut self, now: Instant) -> Option<IpAddr> {
        if self.sweep(now, false) {
            self.decide()
        } else {
            None
        }
    }

    /// Removes votes older than the expiry (at most once a second unless
    /// `force`d, and only when the oldest may have expired). Returns
    /// whether any went.
    fn sweep(&mut self, now: Instant, force: bool) -> bool {
        let due = self
            .oldest
            .is_some_and(|o| now.saturating_duration_since(o) >= self.cfg.expiry);
        let recent = self
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < SWEEP_EVERY);
        if !due || (recent && !force) {
            return false;
        }
        self.last_sweep = Some(now);
        let expiry = self.cfg.expiry;
        let mut gone = Vec::new();
        self.voters.retain(|_, v| {
            let keep = now.saturating_duration_since(v.at) < expiry;
            if !keep {
                gone.push(v.ip);
            }
            keep
        });
        for ip in &gone {
            self.untally(*ip);
        }
        self.oldest = self.voters.values().map(|v| v.at).min();
        !gone.is_empty()
    }

    fn untally(&mut self, ip: IpAddr) {
        if let Some(c) = self.tally.get_mut(&ip) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.tally.remove(&ip);
            }
        }
    }

    /// The winner, if the votes say so and it is news.
    fn decide(&mut self) -> Option<IpAddr> {
        let mut top: Option<(IpAddr, u32)> = None;
        let mut second = 0u32;
        for (&ip, &n) in &self.tally {
            match top {
                Some((_, t)) if n <= t => second = second.max(n),
                _ => {
                    if let Some((_, t)) = top {
                        second = second.max(t);
                    }
                    top = Some((ip, n));
                }
            }
        }
        let (ip, n) = top?;
        let enough = n >= self.cfg.min_votes.max(2);
        // A clear margin: more than 3/2 of the runner-up (exact, no
        // rounding; a tie never decides).
        let clear = u64::from(second) * 3 < u64::from(n) * 2;
        if !enough || !clear || self.current == Some(ip) {
            return None;
        }
        self.current = Some(ip);
        Some(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const US: IpAddr = IpAddr::V4(Ipv4Addr::new(11, 22, 33, 7));
    const LIE: IpAddr = IpAddr::V4(Ipv4Addr::new(11, 22, 44, 9));

    /// Voter `i`, each in its own /24.
    fn voter(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0b00_0001 + (i << 8)))
    }

    fn cfg(min_votes: u32) -> VoteConfig {
        VoteConfig {
            min_votes,
            expiry: Duration::from_secs(600),
            ..VoteConfig::default()
        }
    }

    #[test]
    fn honest_majority_wins_once_it_has_enough_votes() {
        let t0 = Instant::now();
        let mut v = IpVoter::new(cfg(5));
        for i in 0..4 {
            assert_eq!(v.vote(voter(i), US, t0), None, "vote {i}");
        }
        assert_eq!(v.current(), None, "4 votes are not 5");
        assert_eq!(v.vote(voter(4), US, t0), Some(US));
        assert_eq!(v.current(), Some(US));
        // More of the same is no news.
        assert_eq!(v.vote(voter(5), US, t0), None);
    }

    #[test]
    fn minority_liars_do_not_win() {
        let t0 = Instant::now();
        let mut v = IpVoter::new(cfg(5));
        // Liars first: they reach the minimum before the honest voters.
        for i in 0..6 {
            v.vote(voter(100 + i), LIE, t0);
        }
        assert_eq!(v.current(), Some(LIE), "alone, 6 liars are a majority");
        let mut v = IpVoter::new(cfg(5));
        // Interleaved, 6 liars against 10 honest voters: honest wins, and
        // the liars arriving later change nothing.
        for i in 0..10 {
            v.vote(voter(i), US, t0);
            if i < 6 {
                v.vote(voter(100 + i), LIE, t0);
            }
        }
        assert_eq!(v.current(), Some(US));
        assert_eq!(v.votes_for(LIE), 6);
        // A large minority (7 of 17) stalls a first decision but cannot win.
        let mut v = IpVoter::new(cfg(5));
        for i in 0..7 {
            v.vote(voter(100 + i), LIE, t0);
            v.vote(voter(i), US, t0);
        }
        for i in 7..10 {
            v.vote(voter(i), US, t0);
        }
        assert_eq!(v.current(), None, "10 vs 7 is no clear margin");
        v.vote(voter(10), US, t0);
        assert_eq!(v.current(), Some(US), "11 vs 7 is");
    }

    #[test]
    fn a_single_voter_cannot_flip_it() {
        let t0 = Instant::now();
        // Even with the minimum set to 1, one voter is not enough.
        let mut v = IpVoter::new(cfg(1));
        for _ in 0..100 {
            assert_eq!(v.vote(voter(0), LIE, t0), None);
        }
        assert_eq!(v.current(), None);
        assert_eq!(v.votes_for(LIE), 1);
        // Settled on US; one voter switching, however often, changes nothing.
        let mut v = IpVoter::new(cfg(3));
        for i in 0..3 {
            v.vote(voter(i), US, t0);
        }
        assert_eq!(v.current(), Some(US));
        for k in 0..50 {
            let ip = if k % 2 == 0 { LIE } else { US };
            assert_eq!(v.vote(voter(9), ip, t0), None);
        }
        assert_eq!(v.current(), Some(US));
    }

    #[test]
    fn one_vote_per_24_and_per_64() {
        let t0 = Instant::now();
        let mut v = IpVoter::new(cfg(3));
        // 200 hosts of one /24 are one voter.
        for h in 1..=200u8 {
            v.vote(IpAddr::V4(Ipv4Addr::new(11, 1, 2, h)), US, t0);
        }
        assert_eq!(v.voters(), 1);
        assert_eq!(v.current(), None);
        // Likewise a /64 for IPv6.
        let us6: IpAddr = "2a00:1:aa::1".parse().unwrap();
        let mut v6 = IpVoter::new(cfg(3));
        for h in 1..=200u16 {
            let src = Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, h, 1);
            v6.vote(IpAddr::V6(src), us6, t0);
        }
        assert_eq!(v6.voters(), 1);
        assert_eq!(v6.current(), None);
        for net in 3..5u16 {
            let src = Ipv6Addr::new(0x2001, 0xdb8, 1, net, 0, 0, 0, 1);
            v6.vote(IpAddr::V6(src), us6, t0);
        }
        assert_eq!(v6.current(), Some(us6));
    }

    #[test]
    fn votes_expire() {
        let t0 = Instant::now();
        let expiry = Duration::from_secs(600);
        let mut v = IpVoter::new(cfg(3));
        v.vote(voter(0), US, t0);
        v.vote(voter(1), US, t0);
        // Just before the expiry the two count; one more decides.
        assert_eq!(v.expire(t0 + expiry - Duration::from_secs(1)), None);
        assert_eq!(v.votes_for(US), 2);
        // After it they are gone: a third voter alone is not enough.
        v.expire(t0 + expiry);
        assert_eq!(v.votes_for(US), 0);
        assert_eq!(v.voters(), 0);
        assert_eq!(v.vote(voter(2), US, t0 + expiry), None);
        assert_eq!(v.current(), None);
        // A refreshed vote lives on from its refresh.
        let mut v = IpVoter::new(cfg(3));
        v.vote(voter(0), US, t0);
        v.vote(voter(0), US, t0 + Duration::from_secs(300));
        v.expire(t0 + expiry + Duration::from_secs(1));
        assert_eq!(v.votes_for(US), 1);
        v.expire(t0 + expiry + Duration::from_secs(301));
        assert_eq!(v.votes_for(US), 0);
    }

    #[test]
    fn a_change_of_address_is_voted_again() {
        let t0 = Instant::now();
        let mut v = IpVoter::new(cfg(5));
        for i in 0..10 {
            v.vote(voter(i), US, t0);
        }
        assert_eq!(v.current(), Some(US));
        // Our address changes; voters report the new one as they answer
        // again. Until it has a clear margin nothing moves.
        let new: IpAddr = IpAddr::V4(Ipv4Addr::new(11, 22, 55, 44));
        let t1 = t0 + Duration::from_secs(60);
        let mut changed = None;
        for i in 0..10 {
            if let Some(ip) = v.vote(voter(i), new, t1) {
                changed = Some((i, ip));
                break;
            }
        }
        // 7 of 10 switched: 7 > 3 * 3/2 and 7 >= 5.
        assert_eq!(changed, Some((6, new)));
        assert_eq!(v.current(), Some(new));
        // Voters that never answer again expire; the rest keep it.
        v.expire(t0 + Duration::from_secs(601));
        assert_eq!(v.votes_for(US), 0);
        assert_eq!(v.current(), Some(new));
    }

    #[test]
    fn reports_that_cannot_be_ours_are_not_votes() {
        let t0 = Instant::now();
        let mut v = IpVoter::new(cfg(2));
        let six: IpAddr = "2a00:1::5".parse().unwrap();
        for (i, ip) in [
            six,                                        // other family
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),    // loopback
            IpAddr::V4(Ipv4Addr::new(192, 168, 1, 10)), // private
            IpAddr::V4(Ipv4Addr::new(100, 64, 0, 1)),   // CGNAT
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V4(Ipv4Addr::new(224, 0, 0, 1)),
        ]
        .into_iter()
        .enumerate()
        {
            v.vote(voter(i as u32), ip, t0);
            v.vote(voter(50 + i as u32), ip, t0);
        }
        assert_eq!(v.voters(), 0);
        assert_eq!(v.current(), None);
        // A v4-mapped report from a v4 voter is a v4 vote.
        let mapped = IpAddr::V6(Ipv4Addr::new(11, 22, 33, 7).to_ipv6_mapped());
        v.vote(voter(0), mapped, t0);
        v.vote(voter(1), US, t0);
        assert_eq!(v.current(), Some(US));
    }

    #[test]
    fn memory_is_bounded_and_established_voters_stay() {
        let t0 = Instant::now();
        let mut v = IpVoter::new(VoteConfig {
            max_voters: 8,
            ..cfg(3)
        });
        for i in 0..5 {
            v.vote(voter(i), US, t0);
        }
        assert_eq!(v.current(), Some(US));
        // A flood of fresh prefixes with a lie: three get in, the rest are
        // not counted, and the established majority stands.
        for i in 0..1000 {
            v.vote(voter(1000 + i), LIE, t0 + Duration::from_secs(1));
        }
        assert_eq!(v.voters(), 8);
        assert_eq!(v.votes_for(LIE), 3);
        assert_eq!(v.current(), Some(US));
        // The honest voters answer again; once the liars' votes expire,
        // room is made for new voters.
        for i in 0..5 {
            v.vote(voter(i), US, t0 + Duration::from_secs(400));
        }
        let later = t0 + Duration::from_secs(601);
        assert_eq!(v.vote(voter(3000), US, later), None);
        assert_eq!(v.voters(), 6, "3 liars expired, one new voter");
        assert_eq!(v.votes_for(LIE), 0);
        assert_eq!(v.votes_for(US), 6);
        assert_eq!(v.current(), Some(US));
    }
}
