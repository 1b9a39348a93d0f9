//! BEP 33 DHT scrapes: the 256-byte bloom filters `BFsd` (seeds) and
//! `BFpe` (peers that are not seeds) a node returns for `get_peers` with
//! `scrape = 1`, and the swarm-size estimate read from them.
//!
//! A node puts the address of every peer it stores for the infohash into
//! one of the two filters (m = 2048 bits, k = 2): the SHA-1 of the IP's
//! bytes (4 for IPv4, 16 for IPv6; the port is not hashed, so one address
//! counts once), whose first two little-endian 16-bit words, modulo m,
//! are the two bit positions; bit `i` is bit `i % 8` (least significant
//! first) of byte `i / 8`. That is BEP 33's pseudocode and libtorrent's
//! `bloom_filter<256>::set` (`set_bits`), checked against both in the
//! tests below.
//!
//! Since the same address always sets the same bits, the filters of every
//! node that answers for one infohash are merged by OR, which counts a
//! peer stored on several nodes once; the count is then estimated from the
//! zero bits z: `n = ln(z / m) / (k · ln(1 − 1/m))`.
//!
//! # Accuracy
//!
//! The estimate is the expected number of inserted addresses given z zero
//! bits. Its spread grows with n: a few percent up to a few hundred
//! (BEP 33's own vector: 1256 addresses estimate 1224.93), tens of percent
//! past two thousand, and when every bit is set (z = 0, about 8,000
//! addresses and beyond) the formula has no answer: [`Estimate::saturated`]
//! is set and the count is the cap, the estimate at z = 1
//! ([`ESTIMATE_CAP`]). It counts what the answering nodes store, which is
//! the peers that announced in the last 30 minutes (libtorrent's TTL), not
//! every member of the swarm.

use std::net::IpAddr;

use sha1::{Digest, Sha1};

/// Bytes in a BEP 33 filter.
pub const BLOOM_BYTES: usize = 256;
/// Bits in a BEP 33 filter (m).
pub const BLOOM_BITS: u32 = (BLOOM_BYTES * 8) as u32;
/// Hash functions (k).
const K: f64 = 2.0;
/// The estimate of a filter with one zero bit, reported for a saturated
/// filter (no zero bit): ln(1/2048) / (2 · ln(2047/2048)), rounded down.
pub const ESTIMATE_CAP: u32 = 7_805;

/// One BEP 33 bloom filter.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ScrapeBloom(pub [u8; BLOOM_BYTES]);

impl std::fmt::Debug for ScrapeBloom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ScrapeBloom({} zero bits)", self.zero_bits())
    }
}

impl Default for ScrapeBloom {
    fn default() -> Self {
        ScrapeBloom([0; BLOOM_BYTES])
    }
}

/// An estimate of how many addresses a filter holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// The estimate, unrounded.
    pub value: f64,
    /// No zero bit was left: `value` is [`ESTIMATE_CAP`], a lower bound.
    pub saturated: bool,
}

impl Estimate {
    /// The estimate rounded to a whole count.
    pub fn count(&self) -> u32 {
        // In 0..=ESTIMATE_CAP by construction.
        self.value.round().clamp(0.0, f64::from(ESTIMATE_CAP)) as u32
    }
}

/// The estimate for a filter with `zero_bits` of its [`BLOOM_BITS`] clear.
pub fn estimate_from_zero_bits(zero_bits: u32) -> Estimate {
    let m = f64::from(BLOOM_BITS);
    if zero_bits == 0 {
        return Estimate {
            value: f64::from(ESTIMATE_CAP),
            saturated: true,
        };
    }
    let z = f64::from(zero_bits.min(BLOOM_BITS));
    Estimate {
        value: (z / m).ln() / (K * (1.0 - 1.0 / m).ln()),
        saturated: false,
    }
}

impl ScrapeBloom {
    /// A filter read from the wire: exactly [`BLOOM_BYTES`] bytes, else
    /// `None` (BEP 33 fixes the size; libtorrent ignores other lengths).
    pub fn from_wire(bytes: &[u8]) -> Option<ScrapeBloom> {
        <[u8; BLOOM_BYTES]>::try_from(bytes).ok().map(ScrapeBloom)
    }

    /// Inserts an address.
    pub fn insert_ip(&mut self, ip: IpAddr) {
        let digest: [u8; 20] = match ip.to_canonical() {
            IpAddr::V4(v4) => Sha1::digest(v4.octets()).into(),
            IpAddr::V6(v6) => Sha1::digest(v6.octets()).into(),
        };
        self.insert_hash(&digest);
    }

    /// Sets the two bits named by the first four bytes of `hash`.
    pub fn insert_hash(&mut self, hash: &[u8; 20]) {
        for pair in [[hash[0], hash[1]], [hash[2], hash[3]]] {
            let bit = u32::from(u16::from_le_bytes(pair)) % BLOOM_BITS;
            if let Some(b) = self.0.get_mut((bit / 8) as usize) {
                *b |= 1 << (bit % 8);
            }
        }
    }

    /// Merges `other` in (bitwise OR): the union of both sets.
    pub fn union(&mut self, other: &[u8; BLOOM_BYTES]) {
        for (a, b) in self.0.iter_mut().zip(other) {
            *a |= b;
        }
    }

    /// Clear bits (z).
    pub fn zero_bits(&self) -> u32 {
        self.0.iter().map(|b| b.count_zeros()).sum()
    }

    /// How many addresses the filter holds, estimated.
    pub fn estimate(&self) -> Estimate {
        estimate_from_zero_bits(self.zero_bits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// BEP 33's test vector (also in libtorrent's test_dht.cpp): the
    /// IPv4 addresses 192.0.2.0–255 and the IPv6 addresses
    /// 2001:db8::0–3e7 give this filter, estimated at 1224.93.
    #[test]
    fn bep33_test_vector() {
        let mut f = ScrapeBloom::default();
        for i in 0..=255u8 {
            f.insert_ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)));
        }
        for i in 0..0x3e8u16 {
            f.insert_ip(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i)));
        }
        assert_eq!(
            hex(&f.0),
            "f6c3f5eaa07ffd91bde89f777f26fb2bff37bdb8fb2bbaa2fd3ddde7bacfff75ee7ccbaefe5eedb1fbfaff67f6abff5e43ddbca3fd9b9ffdf4ffd3e9dff12d1bdf59db53dbe9fa5b7ff3b8fdfcde1afb8bedd7be2f3ee71ebbbfe93bcdeefe148246c2bc5dbff7e7efdcf24fd8dc7adffd8fffdfddfff7a4bbeedf5cb95ce81fc7fcff1ff4ffffdfe5f7fdcbb7fd79b3fa1fc77bfe07fff905b7b7ffc7fefeffe0b8370bb0cd3f5b7f2bd93feb4386cfdd6f7fd5bfaf2e9ebffffeecd67adbf7c67f17efd5d75eba6ffeba7fff47a91eb1bfbb53e8abfb5762abe8ff237279bfefbfeef5ffc5febfdfe5adffadfee1fb737ffffbfd9f6aeffeee76b6fd8f72ef"
        );
        let e = f.estimate();
        assert!((e.value - 1224.93).abs() < 0.01, "{e:?}");
        assert!(!e.saturated);
        assert_eq!(e.count(), 1225);
    }

    /// libtorrent's test_bloom_filter.cpp: the key "\x01\x00\x02\x00…"
    /// sets bits 1 and 2 of byte 0 (0x10 | 0x06 = 0x16 there). In a
    /// 2048-bit filter a 16-bit index is taken modulo 2048.
    #[test]
    fn bit_positions_match_libtorrent_set_bits() {
        let mut key = [b' '; 20];
        key[..4].copy_from_slice(&[1, 0, 2, 0]);
        let mut f = ScrapeBloom::default();
        f.0[0] = 0x10;
        f.insert_hash(&key);
        assert_eq!(f.0[0], 0x16);
        assert_eq!(f.zero_bits(), BLOOM_BITS - 3);

        // 0x0900 = 2304 → 2304 % 2048 = 256: byte 32, bit 0;
        // 0x07ff = 2047: byte 255, bit 7.
        let mut g = ScrapeBloom::default();
        let mut key = [0u8; 20];
        key[..4].copy_from_slice(&[0x00, 0x09, 0xff, 0x07]);
        g.insert_hash(&key);
        assert_eq!(g.0[32], 0x01);
        assert_eq!(g.0[255], 0x80);
        assert_eq!(g.zero_bits(), BLOOM_BITS - 2);
    }

    #[test]
    fn estimator_follows_the_formula() {
        let m = 2048f64;
        for z in [1u32, 2, 100, 1000, 1500, 2000, 2047, 2048] {
            let want = (f64::from(z) / m).ln() / (2.0 * (1.0 - 1.0 / m).ln());
            let got = estimate_from_zero_bits(z);
            assert!((got.value - want).abs() < 1e-9, "z={z}: {got:?} vs {want}");
            assert!(!got.saturated);
        }
        // Empty: nothing inserted.
        assert_eq!(estimate_from_zero_bits(2048).count(), 0);
        // One address sets one or two bits: about 1 either way.
        assert_eq!(estimate_from_zero_bits(2046).count(), 1);
        assert_eq!(estimate_from_zero_bits(2047).count(), 1);
        // Saturated: the cap, flagged; the cap is the estimate at z = 1.
        let sat = estimate_from_zero_bits(0);
        assert!(sat.saturated);
        assert_eq!(sat.count(), ESTIMATE_CAP);
        assert_eq!(
            estimate_from_zero_bits(1).value.floor() as u32,
            ESTIMATE_CAP
        );
    }

    #[test]
    fn union_counts_a_shared_address_once() {
        let mut a = ScrapeBloom::default();
        let mut b = ScrapeBloom::default();
        for i in 0..40u8 {
            a.insert_ip(IpAddr::V4(Ipv4Addr::new(203, 0, 113, i)));
        }
        for i in 20..60u8 {
            b.insert_ip(IpAddr::V4(Ipv4Addr::new(203, 0, 113, i)));
        }
        a.union(&b.0);
        let n = a.estimate().value;
        assert!((n - 60.0).abs() < 5.0, "{n}");
    }

    #[test]
    fn v4_mapped_addresses_hash_as_ipv4() {
        let mut a = ScrapeBloom::default();
        let mut b = ScrapeBloom::default();
        a.insert_ip(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)));
        b.insert_ip(IpAddr::V6(Ipv4Addr::new(198, 51, 100, 7).to_ipv6_mapped()));
        assert_eq!(a, b);
    }

    #[test]
    fn wire_size_is_exact() {
        assert!(ScrapeBloom::from_wire(&[0; 255]).is_none());
        assert!(ScrapeBloom::from_wire(&[0; 257]).is_none());
        assert!(ScrapeBloom::from_wire(&[0xff; 256]).is_some_and(|f| f.estimate().saturated));
    }
}
