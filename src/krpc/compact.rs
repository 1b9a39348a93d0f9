//! Compact node and peer info (BEP 5, BEP 32): big-endian address and port,
//! 6 or 18 bytes for a peer, 26 or 38 for a node.
//!
//! Readers take whole entries only: a `nodes` string that is not a multiple
//! of 26 yields its complete entries and never reads past the end.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::id::Id;

/// Length of a compact IPv4 peer.
pub const PEER4_LEN: usize = 6;
/// Length of a compact IPv6 peer.
pub const PEER6_LEN: usize = 18;
/// Length of a compact IPv4 node.
pub const NODE4_LEN: usize = 26;
/// Length of a compact IPv6 node.
pub const NODE6_LEN: usize = 38;

/// A node: its id and address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeInfo {
    /// The node's id.
    pub id: Id,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// Reads a compact peer of 6 or 18 bytes.
pub fn read_peer(b: &[u8]) -> Option<SocketAddr> {
    match b.len() {
        PEER4_LEN => {
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            let port = u16::from_be_bytes([b[4], b[5]]);
            Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        PEER6_LEN => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[..16]);
            let port = u16::from_be_bytes([b[16], b[17]]);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(o),
                port,
                0,
                0,
            )))
        }
        _ => None,
    }
}

/// Appends the compact form of `addr` (6 or 18 bytes).
pub fn write_peer(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// The compact form of `addr` in a stack buffer: `(bytes, length)`.
pub fn peer_bytes(addr: &SocketAddr) -> ([u8; PEER6_LEN], usize) {
    let mut b = [0u8; PEER6_LEN];
    let n = match addr.ip() {
        IpAddr::V4(v4) => {
            b[..4].copy_from_slice(&v4.octets());
            4
        }
        IpAddr::V6(v6) => {
            b[..16].copy_from_slice(&v6.octets());
            16
        }
    };
    b[n..n + 2].copy_from_slice(&addr.port().to_be_bytes());
    (b, n + 2)
}

/// The compact length of `addr`.
pub fn peer_len(addr: &SocketAddr) -> usize {
    if addr.is_ipv4() {
        PEER4_LEN
    } else {
        PEER6_LEN
    }
}

/// Appends the compact form of a node (26 or 38 bytes).
pub fn write_node(out: &mut Vec<u8>, node: &NodeInfo) {
    out.extend_from_slice(node.id.as_bytes());
    write_peer(out, &node.addr);
}

/// A borrowed compact node list of one address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Nodes<'a> {
    raw: &'a [u8],
    entry: usize,
}

impl<'a> Nodes<'a> {
    /// IPv4 nodes (`nodes`).
    pub fn v4(raw: &'a [u8]) -> Self {
        Nodes {
            raw,
            entry: NODE4_LEN,
        }
    }

    /// IPv6 nodes (`nodes6`).
    pub fn v6(raw: &'a [u8]) -> Self {
        Nodes {
            raw,
            entry: NODE6_LEN,
        }
    }

    /// The raw bytes as received.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Whether the length is a whole number of entries.
    pub fn is_whole(&self) -> bool {
        self.entry == 0 || self.raw.len() % self.entry == 0
    }

    /// Number of complete entries.
    pub fn len(&self) -> usize {
        self.raw.len().checked_div(self.entry).unwrap_or(0)
    }

    /// Whether there is no complete entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The complete entries.
    pub fn iter(&self) -> impl Iterator<Item = NodeInfo> + 'a {
        let entry = self.entry.max(1);
        self.raw.chunks_exact(entry).filter_map(|c| {
            let id = Id::from_slice(&c[..20])?;
            let addr = read_peer(&c[20..])?;
            Some(NodeInfo { id, addr })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_nodes_read_whole_entries_only() {
        let node = NodeInfo {
            id: Id([7; 20]),
            addr: "127.0.0.2:6881".parse().unwrap(),
        };
        let mut buf = Vec::new();
        for _ in 0..20 {
            write_node(&mut buf, &node);
        }
        assert_eq!(buf.len(), 520);
        for len in [0usize, 25, 26, 27, 520] {
            let n = Nodes::v4(&buf[..len]);
            assert_eq!(n.iter().count(), len / 26, "len {len}");
            assert_eq!(n.is_whole(), len % 26 == 0);
            assert!(n.iter().all(|x| x == node));
        }
        let six = NodeInfo {
            id: Id([9; 20]),
            addr: "[::1]:7000".parse().unwrap(),
        };
        let mut b6 = Vec::new();
        write_node(&mut b6, &six);
        write_node(&mut b6, &six);
        b6.push(0);
        let n6 = Nodes::v6(&b6);
        assert!(!n6.is_whole());
        assert_eq!(n6.iter().collect::<Vec<_>>(), vec![six, six]);
    }

    #[test]
    fn peers() {
        for a in ["127.0.0.1:1", "[::1]:65535"] {
            let addr: SocketAddr = a.parse().unwrap();
            let mut b = Vec::new();
            write_peer(&mut b, &addr);
            assert_eq!(b.len(), peer_len(&addr));
            assert_eq!(read_peer(&b), Some(addr));
        }
        assert_eq!(read_peer(&[1, 2, 3, 4, 5]), None);
        assert_eq!(read_peer(&[1, 2, 3, 4, 5, 6, 7]), None);
    }
}
