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
//! Bound: the set never refuses and never grows past `max_entries`. It
//! keeps two generations of at most `max_entries / 2` each; when the
//! current one is full, the older one is dropped and the current one becomes
//! the older. So at the bound it forgets its oldest half, never what is new:
//! a full filter that refused new infohashes would stop the harvest until a
//! restart (a spoofed get_peers flood of random infohashes could fill it).
//! What is forgotten can be fetched again once; the store's own duplicate
//! check keeps it stored once.

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
}

/// One generation: open addressing over fingerprints.
#[derive(Debug, Clone, Default)]
struct Generation {
    slots: Vec<u128>,
    len: usize,
}

impl Generation {
    fn home(fp: u128, cap: usize) -> usize {
        ((u128::from(fp as u64) * cap as u128) >> 64) as usize
    }

    fn contains(&self, fp: u128) -> bool {
        let cap = self.slots.len();
        if cap == 0 {
            return false;
        }
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

    /// Adds `fp` (not present), growing by 5/4 up to what `bound` can use.
    fn insert(&mut self, fp: u128, bound: usize) {
        if (self.len + 1) * MAX_LOAD_DEN > self.slots.len() * MAX_LOAD_NUM {
            let grown = (self.slots.len() + self.slots.len() / 4).max(MIN_CAPACITY);
            // Never allocate far beyond what the bound can use.
            let cap_for_bound = bound.saturating_mul(MAX_LOAD_DEN) / MAX_LOAD_NUM + 1;
            self.resize(grown.min(cap_for_bound.max(MIN_CAPACITY)).max(self.len + 1));
        }
        self.place(fp);
        self.len += 1;
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

/// A bounded set of infohashes (see the module docs).
#[derive(Debug, Clone)]
pub struct InfohashSet {
    current: Generation,
    older: Generation,
    /// Entries per generation at most.
    half: usize,
    key: (u64, u64),
    forgotten: u64,
}

impl InfohashSet {
    /// An empty set that will hold at most `max_entries` (at least the
    /// newest `max_entries / 2`), keyed by `key`.
    pub fn new(max_entries: usize, key: (u64, u64)) -> Self {
        InfohashSet {
            current: Generation::default(),
            older: Generation::default(),
            half: (max_entries / 2).max(1),
            key,
            forgotten: 0,
        }
    }

    fn fingerprint(&self, infohash: &Id) -> u128 {
        let half = |salt: u64| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (self.key.0, self.key.1, salt, infohash.0).hash(&mut h);
            h.finish()
        };
        let fp = (u128::from(half(1)) << 64) | u128::from(half(2));
        fp.max(1) // 0 marks an empty slot
    }

    /// Number of infohashes remembered.
    pub fn len(&self) -> usize {
        self.current.len + self.older.len
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slots allocated.
    pub fn capacity(&self) -> usize {
        self.current.slots.len() + self.older.slots.len()
    }

    /// Infohashes forgotten so far to stay within the bound.
    pub fn forgotten(&self) -> u64 {
        self.forgotten
    }

    /// Heap bytes per remembered infohash, from the real allocation.
    pub fn bytes_per_infohash(&self) -> f64 {
        let bytes = (self.current.slots.capacity() + self.older.slots.capacity())
            * std::mem::size_of::<u128>();
        if self.is_empty() {
            return bytes as f64;
        }
        bytes as f64 / self.len() as f64
    }

    /// Whether `infohash` is remembered.
    pub fn contains(&self, infohash: &Id) -> bool {
        let fp = self.fingerprint(infohash);
        self.current.contains(fp) || self.older.contains(fp)
    }

    /// Forgets the older generation now and starts a new current one: what
    /// was inserted before the previous rotation is forgotten, what came
    /// after it is kept. Called on a clock, this bounds how long an
    /// infohash is remembered to between one and two periods.
    pub fn rotate(&mut self) {
        self.forgotten = self.forgotten.saturating_add(self.older.len as u64);
        self.older = std::mem::take(&mut self.current);
    }

    /// Remembers `infohash`, forgetting the older generation when the current
    /// one is full.
    pub fn insert(&mut self, infohash: &Id) -> Insert {
        let fp = self.fingerprint(infohash);
        if self.current.contains(fp) || self.older.contains(fp) {
            return Insert::Known;
        }
        if self.current.len >= self.half {
            self.forgotten = self.forgotten.saturating_add(self.older.len as u64);
            self.older = std::mem::take(&mut self.current);
        }
        self.current.insert(fp, self.half);
        Insert::New
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
    fn rotation_forgets_what_came_before_the_last_one() {
        let mut set = InfohashSet::new(100, (2, 2));
        set.insert(&Id([1; 20]));
        set.rotate();
        set.insert(&Id([2; 20]));
        assert!(set.contains(&Id([1; 20])) && set.contains(&Id([2; 20])));
        set.rotate();
        assert!(!set.contains(&Id([1; 20])), "two rotations: forgotten");
        assert!(set.contains(&Id([2; 20])), "one rotation: kept");
        assert_eq!(set.forgotten(), 1);
        assert_eq!(set.insert(&Id([1; 20])), Insert::New);
    }

    #[test]
    fn bound_forgets_the_oldest_never_refuses() {
        let mut set = InfohashSet::new(100, (1, 1));
        let ids: Vec<Id> = (0..=255u8).map(|i| Id([i; 20])).collect();
        for id in &ids {
            assert_eq!(set.insert(id), Insert::New);
            assert!(set.len() <= 100);
        }
        // The newest 50 are always remembered; the oldest are forgotten.
        for id in &ids[206..] {
            assert!(set.contains(id));
            assert_eq!(set.insert(id), Insert::Known);
        }
        assert!(!set.contains(&ids[0]));
        assert!(set.forgotten() >= 150);
        assert_eq!(set.forgotten() as usize + set.len(), 256);
    }
}
