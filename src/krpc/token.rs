//! announce_peer tokens: a keyed SHA-1 over the requester's IP, with two
//! rotating secrets.
//!
//! The secret of epoch `k` is derived from a 32-byte master key drawn from
//! the OS at start-up, so rotation needs no randomness and the state machine
//! stays deterministic given its key. A token is
//! `SHA1(master ‖ k ‖ ip ‖ infohash)[..8]`; it verifies against the current
//! epoch and the one before, so it survives one rotation and fails after
//! two. Unlike CRC-based tokens (pubky/mainline uses CRC32C(ip‖secret), which
//! is affine), knowing the token for one IP says nothing about another's.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use sha1::{Digest, Sha1};

use crate::id::Id;

/// Length of the tokens we hand out.
pub const TOKEN_LEN: usize = 8;

/// The rotation period: BEP 5 suggests 5 minutes (tokens then live 5–10).
pub const ROTATION: Duration = Duration::from_secs(300);

/// Token issuer and verifier.
#[derive(Clone)]
pub struct TokenSecrets {
    master: [u8; 32],
    start: Instant,
    period: Duration,
}

impl std::fmt::Debug for TokenSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSecrets")
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

impl TokenSecrets {
    /// A token issuer keyed by `master`, starting its first epoch at `now`.
    pub fn new(master: [u8; 32], now: Instant) -> Self {
        Self::with_period(master, now, ROTATION)
    }

    /// As [`TokenSecrets::new`] with another rotation period (at least 1 s).
    pub fn with_period(master: [u8; 32], now: Instant, period: Duration) -> Self {
        TokenSecrets {
            master,
            start: now,
            period: period.max(Duration::from_secs(1)),
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start);
        elapsed.as_secs() / self.period.as_secs().max(1)
    }

    fn compute(&self, epoch: u64, ip: IpAddr, infohash: &Id) -> [u8; TOKEN_LEN] {
        let mut h = Sha1::new();
        h.update(self.master);
        h.update(epoch.to_be_bytes());
        match ip {
            IpAddr::V4(v4) => h.update(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => h.update(v4.octets()),
                None => h.update(v6.octets()),
            },
        }
        h.update(infohash.as_bytes());
        let d = h.finalize();
        let mut out = [0u8; TOKEN_LEN];
        out.copy_from_slice(&d[..TOKEN_LEN]);
        out
    }

    /// The token for `ip` asking about `infohash` at `now`.
    pub fn generate(&self, ip: IpAddr, infohash: &Id, now: Instant) -> [u8; TOKEN_LEN] {
        self.compute(self.epoch(now), ip, infohash)
    }

    /// Whether `token` was issued to `ip` for `infohash` in this epoch or
    /// the previous one.
    pub fn verify(&self, token: &[u8], ip: IpAddr, infohash: &Id, now: Instant) -> bool {
        if token.len() != TOKEN_LEN {
            return false;
        }
        let e = self.epoch(now);
        let ok = |k: u64| constant_time_eq(token, &self.compute(k, ip, infohash));
        ok(e) || (e > 0 && ok(e - 1))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_one_rotation_fails_after_two() {
        let t0 = Instant::now();
        let s = TokenSecrets::new([5; 32], t0);
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let infohash = Id([1; 20]);
        let tok = s.generate(ip, &infohash, t0 + Duration::from_secs(299));
        assert!(s.verify(&tok, ip, &infohash, t0 + Duration::from_secs(299)));
        assert!(s.verify(&tok, ip, &infohash, t0 + Duration::from_secs(300)));
        assert!(s.verify(&tok, ip, &infohash, t0 + Duration::from_secs(599)));
        assert!(!s.verify(&tok, ip, &infohash, t0 + Duration::from_secs(600)));
        // A long clock gap invalidates it too, without overflow.
        assert!(!s.verify(
            &tok,
            ip,
            &infohash,
            t0 + Duration::from_secs(u32::MAX as u64)
        ));
    }

    #[test]
    fn bound_to_ip_and_infohash_and_key() {
        let t0 = Instant::now();
        let s = TokenSecrets::new([5; 32], t0);
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let other: IpAddr = "127.0.0.10".parse().unwrap();
        let infohash = Id([1; 20]);
        let tok = s.generate(ip, &infohash, t0);
        assert!(!s.verify(&tok, other, &infohash, t0));
        assert!(!s.verify(&tok, ip, &Id([2; 20]), t0));
        assert!(!s.verify(&tok[..7], ip, &infohash, t0));
        let s2 = TokenSecrets::new([6; 32], t0);
        assert!(!s2.verify(&tok, ip, &infohash, t0));
        // Tokens of neighbouring IPs do not differ by a fixed pattern.
        let a = s.generate(ip, &infohash, t0);
        let b = s.generate(other, &infohash, t0);
        let ip3: IpAddr = "127.0.0.11".parse().unwrap();
        let c = s.generate(ip3, &infohash, t0);
        let d1: Vec<u8> = a.iter().zip(b).map(|(x, y)| x ^ y).collect();
        let d2: Vec<u8> = b.iter().zip(c).map(|(x, y)| x ^ y).collect();
        assert_ne!(d1, d2);
    }
}
