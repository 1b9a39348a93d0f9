//! 160-bit identifiers (node ids and infohashes), XOR distance, and BEP 42
//! node-id generation and verification.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::rng::Rng;

/// A 160-bit identifier: a node id or an infohash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; 20]);

/// A node id.
pub type NodeId = Id;
/// An infohash (SHA-1 of the info dictionary, or a truncated SHA-256).
pub type InfoHash = Id;

impl Id {
    /// The all-zero id.
    pub const ZERO: Id = Id([0; 20]);

    /// Reads an id from exactly 20 bytes.
    pub fn from_slice(b: &[u8]) -> Option<Id> {
        <[u8; 20]>::try_from(b).ok().map(Id)
    }

    /// A uniformly random id.
    pub fn random(rng: &mut Rng) -> Id {
        let mut b = [0u8; 20];
        rng.fill(&mut b);
        Id(b)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    /// XOR distance to `other`.
    pub fn distance(&self, other: &Id) -> Id {
        let mut d = [0u8; 20];
        for (i, out) in d.iter_mut().enumerate() {
            *out = self.0[i] ^ other.0[i];
        }
        Id(d)
    }

    /// Number of leading zero bits (160 for the zero id).
    pub fn leading_zeros(&self) -> u32 {
        let mut n = 0;
        for b in self.0 {
            if b == 0 {
                n += 8;
            } else {
                return n + b.leading_zeros();
            }
        }
        n
    }

    /// The routing-table bucket of `other` relative to `self`: the length of
    /// the common prefix, so 0 is the farthest half of the keyspace and 159
    /// the closest. `None` when the ids are equal.
    pub fn bucket_index(&self, other: &Id) -> Option<usize> {
        let lz = self.distance(other).leading_zeros();
        (lz < 160).then_some(lz as usize)
    }

    /// The top 64 bits, big-endian: what keyspace slicing looks at.
    pub fn prefix64(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        u64::from_be_bytes(b)
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(40);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 15)]));
        }
        s
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Why a string is not an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseIdError {
    /// Not 40 characters.
    #[error("an id is 40 hex characters, got {0}")]
    Length(usize),
    /// A character that is not hex.
    #[error("invalid hex character at position {0}")]
    Char(usize),
}

impl FromStr for Id {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Id, ParseIdError> {
        let b = s.as_bytes();
        if b.len() != 40 {
            return Err(ParseIdError::Length(b.len()));
        }
        let nib = |i: usize| -> Result<u8, ParseIdError> {
            match b[i] {
                c @ b'0'..=b'9' => Ok(c - b'0'),
                c @ b'a'..=b'f' => Ok(c - b'a' + 10),
                c @ b'A'..=b'F' => Ok(c - b'A' + 10),
                _ => Err(ParseIdError::Char(i)),
            }
        };
        let mut out = [0u8; 20];
        for (i, o) in out.iter_mut().enumerate() {
            *o = (nib(2 * i)? << 4) | nib(2 * i + 1)?;
        }
        Ok(Id(out))
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.to_hex())
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

// ---------------------------------------------------------------------------
// BEP 42

/// CRC-32C (Castagnoli), bitwise-reflected, as BEP 42 specifies.
fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0x82f6_3b78 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

fn bep42_crc(ip: IpAddr, r: u8) -> u32 {
    let r = r & 7;
    match ip {
        IpAddr::V4(v4) => {
            let mut b = v4.octets();
            for (x, m) in b.iter_mut().zip([0x03u8, 0x0f, 0x3f, 0xff]) {
                *x &= m;
            }
            b[0] |= r << 5;
            crc32c(&b)
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let mut b = [0u8; 8];
            for (i, m) in [0x01u8, 0x03, 0x07, 0x0f, 0x1f, 0x3f, 0x7f, 0xff]
                .iter()
                .enumerate()
            {
                b[i] = o[i] & m;
            }
            b[0] |= r << 5;
            crc32c(&b)
        }
    }
}

/// A BEP 42-compliant node id for `ip`, with `rand` as its last byte and the
/// other free bits drawn from `rng`.
pub fn bep42_id(ip: IpAddr, rand: u8, rng: &mut Rng) -> Id {
    let crc = bep42_crc(ip, rand);
    let mut id = Id::random(rng);
    id.0[0] = (crc >> 24) as u8;
    id.0[1] = (crc >> 16) as u8;
    id.0[2] = ((crc >> 8) as u8 & 0xf8) | (id.0[2] & 0x07);
    id.0[19] = rand;
    id
}

/// Whether `id` is valid for `ip` under BEP 42: the top 21 bits equal the
/// CRC's, with `r = id[19] & 7`. Exempt (local) addresses always pass.
pub fn bep42_verify(id: &Id, ip: IpAddr) -> bool {
    if bep42_exempt(ip) {
        return true;
    }
    let crc = bep42_crc(ip, id.0[19]);
    id.0[0] == (crc >> 24) as u8
        && id.0[1] == (crc >> 16) as u8
        && (id.0[2] & 0xf8) == ((crc >> 8) as u8 & 0xf8)
}

/// The local ranges BEP 42 exempts: 10/8, 172.16/12, 192.168/16, 169.254/16,
/// 127/8, and for IPv6 loopback, link-local and unique-local addresses.
pub fn bep42_exempt(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_local_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_local_v4(v4);
            }
            let s = v6.segments();
            v6 == Ipv6Addr::LOCALHOST || (s[0] & 0xffc0) == 0xfe80 || (s[0] & 0xfe00) == 0xfc00
        }
    }
}

fn is_local_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    o[0] == 10
        || (o[0] == 172 && (o[1] & 0xf0) == 16)
        || (o[0] == 192 && o[1] == 168)
        || (o[0] == 169 && o[1] == 254)
        || o[0] == 127
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Id {
        s.parse().unwrap()
    }

    /// The five vectors from BEP 42.
    const VECTORS: [(&str, &str); 5] = [
        ("124.31.75.21", "5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eee401"),
        ("21.75.31.124", "5a3ce9c14e7a08645677bbd1cfe7d8f956d53256"),
        ("65.23.51.170", "a5d43220bc8f112a3d426c84764f8c2a1150e616"),
        ("84.124.73.14", "1b0321dd1bb1fe518101ceef99462b947a01ff41"),
        ("43.213.53.83", "e56f6cbf5b7c4be0237986d5243b87aa6d51305a"),
    ];

    #[test]
    fn bep42_vectors_pass() {
        for (ip, hex) in VECTORS {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(bep42_verify(&id(hex), ip), "{ip}");
            // And generation reproduces the constrained bits.
            let mut rng = Rng::seed_from_u64(1);
            let g = bep42_id(ip, id(hex).0[19], &mut rng);
            assert_eq!(g.0[..2], id(hex).0[..2]);
            assert_eq!(g.0[2] & 0xf8, id(hex).0[2] & 0xf8);
            assert!(bep42_verify(&g, ip));
        }
    }

    #[test]
    fn bep42_bit_flips_fail() {
        for (ip, hex) in VECTORS {
            let ip: IpAddr = ip.parse().unwrap();
            // Every one of the 21 constrained bits, and the 3 bits of r.
            for bit in 0..21 {
                let mut bad = id(hex);
                bad.0[bit / 8] ^= 0x80 >> (bit % 8);
                assert!(!bep42_verify(&bad, ip), "{ip} bit {bit}");
            }
            for bit in 0..3 {
                let mut bad = id(hex);
                bad.0[19] ^= 1 << bit;
                assert!(!bep42_verify(&bad, ip), "{ip} r bit {bit}");
            }
            // The wrong address fails too.
            let other: IpAddr = "124.31.75.22".parse().unwrap();
            if hex != VECTORS[0].1 {
                assert!(!bep42_verify(&id(hex), other));
            }
        }
    }

    #[test]
    fn bep42_ipv6() {
        let mut rng = Rng::seed_from_u64(9);
        let ip: IpAddr = "2001:db8:1234:5678::1".parse().unwrap();
        for r in 0..=255u8 {
            let g = bep42_id(ip, r, &mut rng);
            assert!(bep42_verify(&g, ip));
            let mut bad = g;
            bad.0[1] ^= 4;
            assert!(!bep42_verify(&bad, ip));
        }
        // Only the top 64 bits (masked) matter.
        let same_net: IpAddr = "2001:db8:1234:5678:ffff::9".parse().unwrap();
        let g = bep42_id(ip, 3, &mut rng);
        assert!(bep42_verify(&g, same_net));
    }

    #[test]
    fn bep42_local_ranges_exempt() {
        let junk = Id([0xab; 20]);
        for ip in [
            IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
            IpAddr::V4(Ipv4Addr::new(172, 16, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(172, 31, 255, 1)),
            IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1)),
            IpAddr::V4(Ipv4Addr::new(169, 254, 3, 4)),
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            "fe80::1".parse().unwrap(),
            "fd00::1".parse().unwrap(),
        ] {
            assert!(bep42_verify(&junk, ip), "{ip}");
        }
        for ip in [
            IpAddr::V4(Ipv4Addr::new(172, 32, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(11, 0, 0, 1)),
            "2001:db8::1".parse().unwrap(),
        ] {
            assert!(!bep42_verify(&junk, ip), "{ip}");
        }
    }

    #[test]
    fn distance_and_buckets() {
        let a = Id([0; 20]);
        let mut b = Id([0; 20]);
        b.0[0] = 0x80;
        assert_eq!(a.bucket_index(&b), Some(0));
        b.0[0] = 0;
        b.0[19] = 1;
        assert_eq!(a.bucket_index(&b), Some(159));
        assert_eq!(a.bucket_index(&a), None);
        assert_eq!(a.distance(&b), b);
        assert_eq!(Id::ZERO.leading_zeros(), 160);
    }

    #[test]
    fn hex_round_trip() {
        let h = "5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eee401";
        assert_eq!(id(h).to_hex(), h);
        assert_eq!(id(&h.to_uppercase()), id(h));
        assert_eq!("abc".parse::<Id>(), Err(ParseIdError::Length(3)));
        assert_eq!(
            "zfbfbff10c5d6a4ec8a88e4c6ab4c28b95eee401".parse::<Id>(),
            Err(ParseIdError::Char(0))
        );
    }
}
