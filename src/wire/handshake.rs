//! The BEP 3 handshake: 68 bytes, read incrementally.
//!
//! ```text
//! 0x13 "BitTorrent protocol" | reserved[8] | infohash[20] | peer_id[20]
//! ```
//!
//! [`HandshakeReader`] checks the fixed prefix byte by byte as it arrives, so
//! a peer that is not speaking BitTorrent is dropped on its first wrong byte
//! rather than after 68 bytes, and it never holds more than those 68 bytes.

use crate::id::Id;

/// Length of the whole handshake.
pub const HANDSHAKE_LEN: usize = 68;

/// The protocol string, after its length byte.
pub const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";

/// `reserved[5] & 0x10`: the peer speaks the extension protocol (BEP 10).
pub const RESERVED_EXTENSION: (usize, u8) = (5, 0x10);

/// `reserved[7] & 0x01`: the peer runs a DHT node (BEP 5, PORT message).
pub const RESERVED_DHT: (usize, u8) = (7, 0x01);

/// The fixed 20-byte prefix: the length byte, then the protocol string.
const PREFIX: [u8; 20] = {
    let mut p = [0u8; 20];
    p[0] = 19;
    let mut i = 0;
    while i < 19 {
        p[i + 1] = PROTOCOL[i];
        i += 1;
    }
    p
};

/// A parsed handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    /// The eight reserved (capability) bytes.
    pub reserved: [u8; 8],
    /// The torrent this connection is about.
    pub infohash: Id,
    /// The sender's peer id.
    pub peer_id: [u8; 20],
}

impl Handshake {
    /// Our handshake: the extension-protocol and DHT bits set.
    pub fn ours(infohash: Id, peer_id: [u8; 20]) -> Self {
        let mut reserved = [0u8; 8];
        reserved[RESERVED_EXTENSION.0] |= RESERVED_EXTENSION.1;
        reserved[RESERVED_DHT.0] |= RESERVED_DHT.1;
        Handshake {
            reserved,
            infohash,
            peer_id,
        }
    }

    /// Whether the extension protocol (BEP 10) bit is set.
    pub fn supports_extensions(&self) -> bool {
        self.reserved[RESERVED_EXTENSION.0] & RESERVED_EXTENSION.1 != 0
    }

    /// Whether the DHT bit is set.
    pub fn supports_dht(&self) -> bool {
        self.reserved[RESERVED_DHT.0] & RESERVED_DHT.1 != 0
    }

    /// Appends the 68 bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&PREFIX);
        out.extend_from_slice(&self.reserved);
        out.extend_from_slice(self.infohash.as_bytes());
        out.extend_from_slice(&self.peer_id);
    }
}

/// Why a handshake was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The first byte was not 19.
    #[error("protocol string length {0}, expected 19")]
    BadPstrlen(u8),
    /// The protocol string was not "BitTorrent protocol".
    #[error("protocol string is not \"BitTorrent protocol\"")]
    BadProtocol,
}

/// Reads a handshake from input that may arrive in any split.
#[derive(Debug, Clone)]
pub struct HandshakeReader {
    buf: [u8; HANDSHAKE_LEN],
    len: usize,
}

impl Default for HandshakeReader {
    fn default() -> Self {
        Self::new()
    }
}

impl HandshakeReader {
    /// An empty reader.
    pub fn new() -> Self {
        HandshakeReader {
            buf: [0; HANDSHAKE_LEN],
            len: 0,
        }
    }

    /// How many bytes have been taken so far.
    pub fn received(&self) -> usize {
        self.len
    }

    /// Takes bytes from the front of `input` (never more than the handshake
    /// needs) and returns the handshake once all 68 bytes are in.
    pub fn feed(&mut self, input: &mut &[u8]) -> Result<Option<Handshake>, HandshakeError> {
        let want = HANDSHAKE_LEN - self.len;
        let take = want.min(input.len());
        let (head, rest) = input.split_at(take);
        *input = rest;
        for &b in head {
            // Check the fixed prefix as it arrives.
            if let Some(&expected) = PREFIX.get(self.len) {
                if b != expected {
                    return Err(if self.len == 0 {
                        HandshakeError::BadPstrlen(b)
                    } else {
                        HandshakeError::BadProtocol
                    });
                }
            }
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
            }
            self.len += 1;
        }
        if self.len < HANDSHAKE_LEN {
            return Ok(None);
        }
        let mut reserved = [0u8; 8];
        reserved.copy_from_slice(&self.buf[20..28]);
        let mut infohash = [0u8; 20];
        infohash.copy_from_slice(&self.buf[28..48]);
        let mut peer_id = [0u8; 20];
        peer_id.copy_from_slice(&self.buf[48..68]);
        Ok(Some(Handshake {
            reserved,
            infohash: Id(infohash),
            peer_id,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_any_split() {
        let hs = Handshake::ours(Id([7; 20]), [9; 20]);
        let mut bytes = Vec::new();
        hs.encode(&mut bytes);
        assert_eq!(bytes.len(), HANDSHAKE_LEN);
        assert_eq!(bytes[25], 0x10);
        assert_eq!(bytes[27], 0x01);
        for split in 0..=bytes.len() {
            let mut r = HandshakeReader::new();
            let (a, b) = bytes.split_at(split);
            let mut a = a;
            let first = r.feed(&mut a).unwrap();
            assert!(a.is_empty());
            if split == HANDSHAKE_LEN {
                assert_eq!(first, Some(hs));
                continue;
            }
            assert_eq!(first, None);
            let mut b = b;
            let got = r.feed(&mut b).unwrap();
            assert!(b.is_empty());
            assert_eq!(got, Some(hs));
            assert!(got.unwrap().supports_extensions() && got.unwrap().supports_dht());
        }
    }

    #[test]
    fn takes_no_more_than_68_bytes() {
        let mut bytes = Vec::new();
        Handshake::ours(Id([1; 20]), [2; 20]).encode(&mut bytes);
        bytes.extend_from_slice(b"\0\0\0\0");
        let mut r = HandshakeReader::new();
        let mut input = &bytes[..];
        assert!(r.feed(&mut input).unwrap().is_some());
        assert_eq!(input, b"\0\0\0\0");
    }

    #[test]
    fn wrong_prefix_fails_on_first_bad_byte() {
        let mut r = HandshakeReader::new();
        let mut input = &b"\x12BitTorrent protoco"[..];
        assert_eq!(r.feed(&mut input), Err(HandshakeError::BadPstrlen(18)));

        let mut r = HandshakeReader::new();
        let mut input = &b"\x13BitTorrent protocoX"[..];
        assert_eq!(r.feed(&mut input), Err(HandshakeError::BadProtocol));

        // Fails as soon as the wrong byte arrives, before 68 bytes.
        let mut r = HandshakeReader::new();
        let mut input = &b"\x13Bit"[..];
        assert_eq!(r.feed(&mut input), Ok(None));
        let mut input = &b"t"[..];
        assert_eq!(r.feed(&mut input), Err(HandshakeError::BadProtocol));
    }
}
