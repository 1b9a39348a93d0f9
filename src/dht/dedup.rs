//! The owner shard's set of infohashes already harvested, in bounded memory.
//!
//! Open addressing with linear probing over 16-byte keyed fingerprints.
//! Fingerprints are a keyed hash of the infohash (infohashes in get_peers
//! are attacker-chosen; a public hash would let someone pile them into one
//! probe run). Two different infohashes share a fingerprint with
//! probability about n²/2^129: negligible.
//!
//! Sizing: the table grows by 5/4 when it reaches a load of 0.85, so the
//! load stays in 0.68..0.85 once past the initial capacity, i.e. 18.8 to
//! 23.5 bytes per remembered infohash; linear probing at 0.85 costs about
//! 3.8 probes per hit and 22 per miss, all within one or two cache lines'
//! neighbourhood. Capacity is not a power of two; the home slot is found by
//! multiply-shift range reduction.
//!
//! Bound: at `max_entries` the set stops growing and refuses new entries
//! ([`Insert::Full`]). The node then drops the infohash (counted) rather
//! than emitting it without remembering it: forgetting would let the same
//! infohash be fetched again and again. Size the bound for the run.

use std::hash::{Hash, Hasher};

use crate::id::Id;

const MAX_LOAD_NUM: usize = 85;
const MAX_LOAD_DEN: usize = 100;
const MIN_CAPACITY: usize = 1024;

/// What [`InfohashSet::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// It was not there; now it is.
    New,
    /// It was already there.
    Known,
    /// Not there, and the set is at its bound.
    Full,
}

/// A bounded set of infohashes (see the module docs).
#[derive(Debug, Clone)]
pub struct InfohashSet {
    slots: Vec<u128>,
    len: usize,
    max_entries: usize,
    key: (u64, u64),
}

impl InfohashSet {
    /// An empty set that will hold at most `max_entries`, keyed by `key`.
    pub fn new(max_entries: usize, key: (u64, u64)) -> Self {
        InfohashSet {
            slots: Vec::new(),
            len: 0,
            max_entries,
            key,
        }
    }

    fn fingerprint(&self, ih: &Id) -> u128 {
        let half = |salt: u64| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (self.key.0, self.key.1, salt, ih.0).hash(&mut h);
            h.finish()
        };
        let fp = (u128::from(half(1)) << 64) | u128::from(half(2));
        fp.max(1) // 0 marks an empty slot
    }

    fn home(fp: u128, cap: usize) -> usize {
        ((u128::from(fp as u64) * cap as u128) >> 64) as usize
    }

    /// Number of infohashes remembered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slots allocated.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Heap bytes per remembered infohash, from the real allocation.
    pub fn bytes_per_infohash(&self) -> f64 {
        let bytes = self.slots.capacity() * std::mem::size_of::<u128>();
        if self.len == 0 {
            return bytes as f64;
        }
        bytes as f64 / self.len as f64
    }

    /// Whether `ih` is remembered.
    pub fn contains(&self, ih: &Id) -> bool {
        let cap = self.slots.len();
        if cap == 0 {
            return false;
        }
        let fp = self.fingerprint(ih);
        let mut i = Self::home(fp, cap);
        for _ in 0..cap {
            match self.slots.get(i) {
                Some(&0) | None => return false,
                Some(&s) if s == fp => return true,
                Some(_) => i = if i + 1 == cap { 0 } else { i + 1 },
            }
        }
        false
    }

    /// Remembers `ih`.
    pub fn insert(&mut self, ih: &Id) -> Insert {
        if self.contains(ih) {
            return Insert::Known;
        }
        if self.len >= self.max_entries {
            return Insert::Full;
        }
        if (self.len + 1) * MAX_LOAD_DEN > self.slots.len() * MAX_LOAD_NUM {
            let grown = (self.slots.len() + self.slots.len() / 4).max(MIN_CAPACITY);
            // Never allocate far beyond what the bound can use.
            let cap_for_bound = self.max_entries.saturating_mul(MAX_LOAD_DEN) / MAX_LOAD_NUM + 1;
            self.resize(grown.min(cap_for_bound.max(MIN_CAPACITY)).max(self.len + 1));
        }
        let fp = self.fingerprint(ih);
        self.place(fp);
        self.len += 1;
        Insert::New
    }

    fn place(&mut self, fp: u128) {
        let cap = self.slots.len();
        let mut i = Self::home(fp, cap);
        for _ in 0..cap {
            if let Some(s) = self.slots.get_mut(i) {
                if *s == 0 {
                    *s = fp;
                    return;
                }
            }
            i = if i + 1 == cap { 0 } else { i + 1 };
        }
    }

    fn resize(&mut self, cap: usize) {
        let old = std::mem::take(&mut self.slots);
        let mut slots = Vec::new();
        slots.reserve_exact(cap);
        slots.resize(cap, 0u128);
        self.slots = slots;
        for fp in old.into_iter().filter(|&f| f != 0) {
            self.place(fp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn dedup_bytes_per_infohash_at_most_32() {
        let mut rng = Rng::seed_from_u64(11);
        let mut set = InfohashSet::new(10_000_000, (3, 4));
        let mut ids = Vec::new();
        for i in 0..300_000usize {
            let id = Id::random(&mut rng);
            assert_eq!(set.insert(&id), Insert::New);
            if i % 1000 == 0 {
                ids.push(id);
            }
            if i >= 2_000 {
                let b = set.bytes_per_infohash();
                assert!(b <= 32.0, "{b} bytes per infohash at {i}");
            }
        }
        assert_eq!(set.len(), 300_000);
        for id in &ids {
            assert_eq!(set.insert(id), Insert::Known);
            assert!(set.contains(id));
        }
        let b = set.bytes_per_infohash();
        assert!((16.0..=32.0).contains(&b), "{b}");
        let mut misses = 0;
        for _ in 0..10_000 {
            if set.contains(&Id::random(&mut rng)) {
                misses += 1;
            }
        }
        assert_eq!(misses, 0);
    }

    #[test]
    fn bound_refuses_and_never_forgets() {
        let mut set = InfohashSet::new(100, (1, 1));
        let ids: Vec<Id> = (0..150u8).map(|i| Id([i; 20])).collect();
        for (i, id) in ids.iter().enumerate() {
            let r = set.insert(id);
            assert_eq!(r, if i < 100 { Insert::New } else { Insert::Full });
        }
        assert_eq!(set.len(), 100);
        for id in &ids[..100] {
            assert_eq!(set.insert(id), Insert::Known);
        }
    }
}
