//! Martian and bogon address filtering.
//!
//! Sources and destinations are checked against the ranges jech/dht calls
//! "martian" and the bogons libtorrent and hosting providers care about
//! (a crawler sending to 10.x or 100.64.x gets reported as a port scanner,
//! AlphaReign#27). Ranges are written as numeric octets, never as strings.
//!
//! Always refused: port 0; IPv4 0.0.0.0/8, 192.0.0.0/24 (IETF protocol
//! assignments), the documentation ranges 192.0.2.0/24, 198.51.100.0/24 and
//! 203.0.113.0/24, 198.18.0.0/15 (benchmarking) and 224.0.0.0/3 (multicast,
//! reserved and broadcast); IPv6 unspecified, ff00::/8 (multicast),
//! 2001:db8::/32 (documentation) and 100::/64 (discard-only).
//! Refused unless `allow_private` is set (tests run on loopback): 10/8,
//! 172.16/12, 192.168/16, 100.64/10, 169.254/16, 127/8, ::1, fc00::/7,
//! fe80::/10 and fec0::/10 (the deprecated site-local range).
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are judged as IPv4: on a
//! dual-stack socket they are that IPv4 host, loopback included. IPv6
//! addresses that route to an embedded IPv4 address through a gateway,
//! NAT64's well-known prefix 64:ff9b::/96 (RFC 6052) and 6to4's 2002::/16
//! (RFC 3056), are refused when the embedded address is martian or private
//! whatever `allow_private` says: they never lead to our own loopback, and
//! both RFCs forbid non-global IPv4 addresses in them.

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
const MARTIAN_V4: [([u8; 4], u8); 7] = [
    ([0, 0, 0, 0], 8),
    ([192, 0, 0, 0], 24),
    ([192, 0, 2, 0], 24),
    ([198, 18, 0, 0], 15),
    ([198, 51, 100, 0], 24),
    ([203, 0, 113, 0], 24),
    ([224, 0, 0, 0], 3),
];

/// IPv6 ranges refused unless private addresses are allowed:
/// fc00::/7, fe80::/10 and fec0::/10.
const PRIVATE_V6: [([u16; 8], u8); 3] = [
    ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
    ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
    ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
];

/// IPv6 ranges always refused (beyond unspecified and multicast):
/// 2001:db8::/32 and 100::/64.
const MARTIAN_V6: [([u16; 8], u8); 2] = [
    ([0x2001, 0x0db8, 0, 0, 0, 0, 0, 0], 32),
    ([0x0100, 0, 0, 0, 0, 0, 0, 0], 64),
];

/// NAT64's well-known prefix, 64:ff9b::/96: the IPv4 address is the last
/// 32 bits.
const NAT64: ([u16; 8], u8) = ([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96);

/// 6to4, 2002::/16: the IPv4 address is the next 32 bits.
const SIX_TO_FOUR: ([u16; 8], u8) = ([0x2002, 0, 0, 0, 0, 0, 0, 0], 16);

fn in_v4(ip: Ipv4Addr, net: [u8; 4], len: u8) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    };
    (u32::from(ip) & mask) == (u32::from_be_bytes(net) & mask)
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], len: u8) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    };
    (u128::from(ip) & mask) == (u128::from(Ipv6Addr::from(net)) & mask)
}

fn martian_v4(ip: Ipv4Addr, allow_private: bool) -> bool {
    if MARTIAN_V4.iter().any(|&(n, l)| in_v4(ip, n, l)) {
        return true;
    }
    !allow_private && PRIVATE_V4.iter().any(|&(n, l)| in_v4(ip, n, l))
}

/// The IPv4 address a NAT64 or 6to4 address leads to.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    if in_v6(ip, NAT64.0, NAT64.1) {
        Some(Ipv4Addr::from(bits as u32))
    } else if in_v6(ip, SIX_TO_FOUR.0, SIX_TO_FOUR.1) {
        Some(Ipv4Addr::from((bits >> 80) as u32))
    } else {
        None
    }
}

fn martian_v6(ip: Ipv6Addr, allow_private: bool) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return martian_v4(v4, allow_private);
    }
    if let Some(v4) = embedded_v4(ip) {
        return martian_v4(v4, false);
    }
    if ip.is_unspecified() || ip.is_multicast() || MARTIAN_V6.iter().any(|&(n, l)| in_v6(ip, n, l))
    {
        return true;
    }
    !allow_private && (ip.is_loopback() || PRIVATE_V6.iter().any(|&(n, l)| in_v6(ip, n, l)))
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

    /// Each bogon range at its first and last address, and the addresses
    /// just outside it.
    #[test]
    fn bogon_range_edges() {
        let ip4 = |o: [u8; 4]| IpAddr::from(o);
        for (first, last, below, above) in [
            (
                [192, 0, 0, 0],
                [192, 0, 0, 255],
                [191, 255, 255, 255],
                [192, 0, 1, 0],
            ),
            (
                [192, 0, 2, 0],
                [192, 0, 2, 255],
                [192, 0, 1, 255],
                [192, 0, 3, 0],
            ),
            (
                [198, 18, 0, 0],
                [198, 19, 255, 255],
                [198, 17, 255, 255],
                [198, 20, 0, 0],
            ),
            (
                [198, 51, 100, 0],
                [198, 51, 100, 255],
                [198, 51, 99, 255],
                [198, 51, 101, 0],
            ),
            (
                [203, 0, 113, 0],
                [203, 0, 113, 255],
                [203, 0, 112, 255],
                [203, 0, 114, 0],
            ),
        ] {
            for inside in [first, last] {
                // Always refused, loopback mode or not, mapped or not.
                assert!(is_martian_ip(ip4(inside), false), "{inside:?}");
                assert!(is_martian_ip(ip4(inside), true), "{inside:?}");
                let mapped = IpAddr::V6(Ipv4Addr::from(inside).to_ipv6_mapped());
                assert!(is_martian_ip(mapped, true), "{mapped}");
            }
            for outside in [below, above] {
                assert!(!is_martian_ip(ip4(outside), false), "{outside:?}");
            }
        }

        let ip6 = |segs: [u16; 8]| IpAddr::from(segs);
        const F: u16 = 0xffff;
        // Always refused: 2001:db8::/32 and 100::/64.
        for (first, last, below, above) in [
            (
                [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
                [0x2001, 0xdb8, F, F, F, F, F, F],
                [0x2001, 0xdb7, F, F, F, F, F, F],
                [0x2001, 0xdb9, 0, 0, 0, 0, 0, 0],
            ),
            (
                [0x100, 0, 0, 0, 0, 0, 0, 0],
                [0x100, 0, 0, 0, F, F, F, F],
                [0xff, F, F, F, F, F, F, F],
                [0x100, 0, 0, 1, 0, 0, 0, 0],
            ),
        ] {
            for inside in [first, last] {
                assert!(is_martian_ip(ip6(inside), false), "{}", ip6(inside));
                assert!(is_martian_ip(ip6(inside), true), "{}", ip6(inside));
            }
            for outside in [below, above] {
                assert!(!is_martian_ip(ip6(outside), false), "{}", ip6(outside));
            }
        }
        // fec0::/10 is private: refused unless private addresses are
        // allowed. Below it is fe80::/10 (private too), above it ff00::/8
        // (multicast); fe7f:… is outside every range.
        for inside in [[0xfec0, 0, 0, 0, 0, 0, 0, 0], [0xfeff, F, F, F, F, F, F, F]] {
            assert!(is_martian_ip(ip6(inside), false), "{}", ip6(inside));
            assert!(!is_martian_ip(ip6(inside), true), "{}", ip6(inside));
        }
        assert!(!is_martian_ip(ip6([0xfe7f, F, F, F, F, F, F, F]), false));
        assert!(is_martian_ip(ip6([0xff00, 0, 0, 0, 0, 0, 0, 0]), true));

        // NAT64 (64:ff9b::/96) and 6to4 (2002::/16): judged by the IPv4
        // address inside, and a private or loopback one is refused even
        // when private addresses are allowed.
        fn nat64(v4: [u8; 4]) -> IpAddr {
            let v = u32::from_be_bytes(v4);
            IpAddr::from([0x64, 0xff9b, 0, 0, 0, 0, (v >> 16) as u16, v as u16])
        }
        fn six_to_four(v4: [u8; 4]) -> IpAddr {
            let v = u32::from_be_bytes(v4);
            IpAddr::from([0x2002, (v >> 16) as u16, v as u16, 0, 0, 0, 0, 1])
        }
        for embed in [nat64 as fn([u8; 4]) -> IpAddr, six_to_four] {
            assert!(!is_martian_ip(embed([8, 8, 8, 8]), false));
            for bogon in [
                [127, 0, 0, 1],
                [10, 1, 2, 3],
                [192, 168, 1, 1],
                [0, 0, 0, 0],
                [192, 0, 2, 1],
                [198, 18, 0, 1],
                [224, 0, 0, 1],
            ] {
                assert!(is_martian_ip(embed(bogon), false), "{}", embed(bogon));
                assert!(is_martian_ip(embed(bogon), true), "{}", embed(bogon));
            }
        }
        // Just outside the prefixes, the same bits are not read as IPv4.
        let loopback_bits = [0x7f00, 0x0001];
        let past_nat64 = [0x64, 0xff9b, 0, 0, 0, 1, loopback_bits[0], loopback_bits[1]];
        let below_nat64 = [0x64, 0xff9a, F, F, F, F, loopback_bits[0], loopback_bits[1]];
        let past_6to4 = [0x2003, loopback_bits[0], loopback_bits[1], 0, 0, 0, 0, 1];
        let below_6to4 = [0x2001, F, loopback_bits[0], loopback_bits[1], 0, 0, 0, 1];
        for outside in [past_nat64, below_nat64, past_6to4, below_6to4] {
            assert!(!is_martian_ip(ip6(outside), false), "{}", ip6(outside));
        }

        // Loopback mode is unchanged: 127/8, ::1 and mapped loopback pass.
        for ok in [
            ip4([127, 0, 0, 1]),
            ip4([127, 255, 255, 254]),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()),
        ] {
            assert!(is_martian_ip(ok, false), "{ok}");
            assert!(!is_martian_ip(ok, true), "{ok}");
        }
    }

    #[test]
    fn prefixes() {
        let a = lookup_prefix(IpAddr::from([1, 2, 3, 4]));
        assert_eq!(a, lookup_prefix(IpAddr::from([1, 2, 3, 200])));
        assert_ne!(a, lookup_prefix(IpAddr::from([1, 2, 4, 4])));
    }
}
