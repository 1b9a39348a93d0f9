//! Martian and bogon address filtering.
//!
//! Sources and destinations are checked against the ranges jech/dht calls
//! "martian" and the bogons libtorrent and hosting providers care about
//! (a crawler sending to 10.x or 100.64.x gets reported as a port scanner,
//! AlphaReign#27). Ranges are written as numeric octets, never as strings.
//!
//! Always refused: port 0, 0.0.0.0/8, 224.0.0.0/3 (multicast, reserved and
//! broadcast), the IPv6 unspecified address and ff00::/8 (multicast).
//! Refused unless `allow_private` is set (tests run on loopback): 10/8,
//! 172.16/12, 192.168/16, 100.64/10, 169.254/16, 127/8, ::1, fc00::/7,
//! fe80::/10. IPv4-mapped IPv6 addresses are judged as IPv4.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// IPv4 ranges refused unless private addresses are allowed: (network, prefix length).
const PRIVATE_V4: [([u8; 4], u8); 6] = [
    ([10, 0, 0, 0], 8),
    ([172, 16, 0, 0], 12),
    ([192, 168, 0, 0], 16),
    ([100, 64, 0, 0], 10),
    ([169, 254, 0, 0], 16),
    ([127, 0, 0, 0], 8),
];

/// IPv4 ranges always refused.
const MARTIAN_V4: [([u8; 4], u8); 2] = [([0, 0, 0, 0], 8), ([224, 0, 0, 0], 3)];

/// IPv6 ranges refused unless private addresses are allowed (by the first
/// 16-bit segment): fc00::/7 and fe80::/10.
const PRIVATE_V6: [(u16, u8); 2] = [(0xfc00, 7), (0xfe80, 10)];

fn in_v4(ip: Ipv4Addr, net: [u8; 4], len: u8) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    };
    (u32::from(ip) & mask) == (u32::from_be_bytes(net) & mask)
}

fn martian_v4(ip: Ipv4Addr, allow_private: bool) -> bool {
    if MARTIAN_V4.iter().any(|&(n, l)| in_v4(ip, n, l)) {
        return true;
    }
    !allow_private && PRIVATE_V4.iter().any(|&(n, l)| in_v4(ip, n, l))
}

fn martian_v6(ip: Ipv6Addr, allow_private: bool) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return martian_v4(v4, allow_private);
    }
    let seg0 = ip.segments()[0];
    if ip.is_unspecified() || (seg0 >> 8) == 0xff {
        return true;
    }
    if allow_private {
        return false;
    }
    ip.is_loopback()
        || PRIVATE_V6.iter().any(|&(net, len)| {
            let mask = u16::MAX << (16 - u32::from(len));
            (seg0 & mask) == (net & mask)
        })
}

/// Whether `ip` must never be talked to or listened to.
pub fn is_martian_ip(ip: IpAddr, allow_private: bool) -> bool {
    match ip {
        IpAddr::V4(v4) => martian_v4(v4, allow_private),
        IpAddr::V6(v6) => martian_v6(v6, allow_private),
    }
}

/// Whether `addr` (ip and port) must never be talked to or listened to.
pub fn is_martian(addr: &SocketAddr, allow_private: bool) -> bool {
    addr.port() == 0 || is_martian_ip(addr.ip(), allow_private)
}

/// Whether `addr` is acceptable as a peer in `values` or an announce: not
/// martian, and port 0 or 1 refused (libtorrent#2284 saw port-1 poisoning).
pub fn is_valid_peer(addr: &SocketAddr, allow_private: bool) -> bool {
    addr.port() > 1 && !is_martian(addr, allow_private)
}

/// The address a peer or node is limited under (per-IP caps, budgets,
/// penalties): IPv4 as is, IPv4-mapped IPv6 as its IPv4, other IPv6 by
/// its /64. One rule for the whole crate, kept with the runtime's TCP cap.
pub use shards::budget::limit_key;

/// The prefix a lookup allows one node of: the /24 for IPv4, the /64 for IPv6.
pub fn lookup_prefix(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => u64::from(u32::from(v4) >> 8) | (1 << 63),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u64::from(u32::from(v4) >> 8) | (1 << 63),
            None => (u128::from(v6) >> 64) as u64 & !(1 << 63),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(o: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::from(o), port))
    }

    #[test]
    fn martians() {
        for (o, private) in [
            ([0, 1, 2, 3], false),
            ([224, 0, 0, 1], false),
            ([239, 1, 1, 1], false),
            ([255, 255, 255, 255], false),
            ([240, 0, 0, 1], false),
            ([10, 1, 2, 3], true),
            ([172, 16, 0, 1], true),
            ([172, 31, 255, 1], true),
            ([192, 168, 1, 1], true),
            ([100, 64, 0, 1], true),
            ([100, 127, 0, 1], true),
            ([169, 254, 3, 3], true),
            ([127, 0, 0, 1], true),
        ] {
            let a = v4(o, 6881);
            assert!(is_martian(&a, false), "{a}");
            assert_eq!(is_martian(&a, true), !private, "{a}");
        }
        for o in [
            [1, 2, 3, 4],
            [172, 32, 0, 1],
            [100, 128, 0, 1],
            [8, 8, 8, 8],
        ] {
            assert!(!is_martian(&v4(o, 6881), false));
        }
        assert!(is_martian(&v4([1, 2, 3, 4], 0), true));
        assert!(!is_valid_peer(&v4([1, 2, 3, 4], 1), true));
        assert!(is_valid_peer(&v4([1, 2, 3, 4], 2), false));

        let six = |segs: [u16; 8]| SocketAddr::from((Ipv6Addr::from(segs), 6881));
        assert!(is_martian(&six([0; 8]), true));
        assert!(is_martian(&six([0xff02, 0, 0, 0, 0, 0, 0, 1]), true));
        for s in [
            [0, 0, 0, 0, 0, 0, 0, 1],
            [0xfc00, 0, 0, 0, 0, 0, 0, 1],
            [0xfd12, 0, 0, 0, 0, 0, 0, 1],
            [0xfe80, 0, 0, 0, 0, 0, 0, 1],
            [0xfebf, 0, 0, 0, 0, 0, 0, 1],
        ] {
            assert!(is_martian(&six(s), false));
            assert!(!is_martian(&six(s), true));
        }
        assert!(!is_martian(&six([0x2001, 0xdb9, 0, 0, 0, 0, 0, 1]), false));
        // v4-mapped loopback is judged as IPv4.
        assert!(is_martian(&six([0, 0, 0, 0, 0, 0xffff, 0x7f00, 1]), false));
    }

    #[test]
    fn prefixes() {
        let a = lookup_prefix(IpAddr::from([1, 2, 3, 4]));
        assert_eq!(a, lookup_prefix(IpAddr::from([1, 2, 3, 200])));
        assert_ne!(a, lookup_prefix(IpAddr::from([1, 2, 4, 4])));
    }
}
