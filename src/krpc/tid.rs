//! Transaction ids that say where they came from.
//!
//! With SO_REUSEPORT the kernel hashes the 4-tuple to pick a socket, so the
//! reply to a query sent by shard A can arrive on shard B. Our `t` is 4 bytes:
//! the origin shard, the identity (bind address / node id) that sent it, and
//! a 16-bit slot in the origin shard's in-flight table. Any shard can route a
//! reply home by reading byte 0, with no shared lookup; the origin then
//! checks the slot's expected endpoint, so a guessed tid from the wrong
//! ip:port matches nothing.

/// Length of our transaction ids.
pub const TID_LEN: usize = 4;

/// A decoded transaction id of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tid {
    /// The shard that sent the query.
    pub shard: u8,
    /// The identity (bind address) it was sent from.
    pub identity: u8,
    /// The slot in the shard's in-flight table.
    pub slot: u16,
}

impl Tid {
    /// The wire form.
    pub fn to_bytes(self) -> [u8; TID_LEN] {
        let s = self.slot.to_be_bytes();
        [self.shard, self.identity, s[0], s[1]]
    }

    /// Reads a tid of ours; anything not exactly 4 bytes is not ours.
    pub fn from_bytes(b: &[u8]) -> Option<Tid> {
        let b: [u8; TID_LEN] = b.try_into().ok()?;
        Some(Tid {
            shard: b[0],
            identity: b[1],
            slot: u16::from_be_bytes([b[2], b[3]]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = Tid {
            shard: 3,
            identity: 1,
            slot: 0xbeef,
        };
        assert_eq!(Tid::from_bytes(&t.to_bytes()), Some(t));
        assert_eq!(Tid::from_bytes(b"aa"), None);
        assert_eq!(Tid::from_bytes(b"aaaaa"), None);
    }
}
