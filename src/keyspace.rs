//! Slices of the 160-bit keyspace.
//!
//! Ownership is decided by the top 64 bits of an id: slice boundaries are
//! multiples of `2^64 / n` there, so any number of slices (not only powers of
//! two) gets equal widths, and the lower 96 bits never matter. A [`Slice`] can
//! be split again, which is how `--keyspace I/N` (one machine's share) and the
//! shards inside one machine compose: machine I owns `Slice::full().part(I, N)`
//! and its shard s owns `that.part(s, shards)`.

use crate::id::Id;
use crate::rng::Rng;

/// A contiguous range of the keyspace, by the ids' top 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    /// First top-64 value inside the slice.
    start: u64,
    /// Number of top-64 values inside (1..=2^64).
    len: u128,
}

/// Why a `I/N` keyspace specification is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SliceSpecError {
    /// Not of the form `I/N`.
    #[error("expected I/N (for example 0/4), got {0:?}")]
    Syntax(String),
    /// N is zero or I is not below N.
    #[error("index {index} is out of range for {count} parts")]
    Range {
        /// I.
        index: u64,
        /// N.
        count: u64,
    },
}

impl Slice {
    /// The whole keyspace.
    pub const fn full() -> Slice {
        Slice {
            start: 0,
            len: 1u128 << 64,
        }
    }

    /// Part `i` of `n` equal parts of this slice. Parts tile the slice
    /// exactly; `n` is clamped to at least 1 and `i` to `n - 1`.
    pub fn part(&self, i: usize, n: usize) -> Slice {
        let n = n.max(1) as u128;
        let i = (i as u128).min(n - 1);
        let lo = self.len * i / n;
        let hi = self.len * (i + 1) / n;
        Slice {
            start: self.start.wrapping_add(lo as u64),
            len: (hi - lo).max(1),
        }
    }

    /// Parses `I/N`.
    pub fn parse_spec(spec: &str) -> Result<Slice, SliceSpecError> {
        let (i, n) = spec
            .split_once('/')
            .ok_or_else(|| SliceSpecError::Syntax(spec.to_string()))?;
        let i: u64 = i
            .trim()
            .parse()
            .map_err(|_| SliceSpecError::Syntax(spec.to_string()))?;
        let n: u64 = n
            .trim()
            .parse()
            .map_err(|_| SliceSpecError::Syntax(spec.to_string()))?;
        if n == 0 || i >= n {
            return Err(SliceSpecError::Range { index: i, count: n });
        }
        Ok(Slice::full().part(i as usize, n as usize))
    }

    /// Whether `id` falls in this slice.
    pub fn contains(&self, id: &Id) -> bool {
        let off = id.prefix64().wrapping_sub(self.start);
        u128::from(off) < self.len
    }

    /// Which of `n` equal parts of this slice holds `id`, or `None` if the
    /// id is outside the slice.
    pub fn part_of(&self, id: &Id, n: usize) -> Option<usize> {
        if !self.contains(id) {
            return None;
        }
        let n = n.max(1) as u128;
        let off = u128::from(id.prefix64().wrapping_sub(self.start));
        // Invert `part`: the largest i with len*i/n <= off.
        let mut i = ((off * n) / self.len) as usize;
        // Integer rounding can put the estimate one part low.
        while i + 1 < n as usize && self.len * (i as u128 + 1) / n <= off {
            i += 1;
        }
        Some(i)
    }

    /// The first id of the slice.
    pub fn first(&self) -> Id {
        let mut b = [0u8; 20];
        b[..8].copy_from_slice(&self.start.to_be_bytes());
        Id(b)
    }

    /// The last id of the slice.
    pub fn last(&self) -> Id {
        let top = self.start.wrapping_add((self.len - 1) as u64);
        let mut b = [0xffu8; 20];
        b[..8].copy_from_slice(&top.to_be_bytes());
        Id(b)
    }

    /// A uniformly random id inside the slice.
    pub fn random_id(&self, rng: &mut Rng) -> Id {
        let off = if self.len > u128::from(u64::MAX) {
            rng.next_u64()
        } else {
            rng.below(self.len as u64)
        };
        let mut id = Id::random(rng);
        id.0[..8].copy_from_slice(&self.start.wrapping_add(off).to_be_bytes());
        id
    }
}

/// The shard (of `nr_shards` equal slices of the whole keyspace) that owns `id`.
pub fn shard_for(id: &Id, nr_shards: usize) -> usize {
    Slice::full().part_of(id, nr_shards).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_tile_the_keyspace() {
        for n in [1usize, 2, 3, 5, 7, 16, 255] {
            let full = Slice::full();
            let mut next = 0u128;
            for i in 0..n {
                let p = full.part(i, n);
                assert_eq!(u128::from(p.start), next, "n={n} i={i}");
                next += p.len;
                assert_eq!(full.part_of(&p.first(), n), Some(i));
                assert_eq!(full.part_of(&p.last(), n), Some(i));
            }
            assert_eq!(next, 1u128 << 64);
        }
    }

    #[test]
    fn random_ids_land_in_their_slice() {
        let mut rng = Rng::seed_from_u64(3);
        for n in [1usize, 2, 3, 8, 13] {
            for s in 0..n {
                let slice = Slice::full().part(s, n);
                for _ in 0..200 {
                    let id = slice.random_id(&mut rng);
                    assert!(slice.contains(&id));
                    assert_eq!(shard_for(&id, n), s);
                }
            }
        }
    }

    #[test]
    fn nested_slices() {
        let machine = Slice::parse_spec("1/3").unwrap();
        let mut rng = Rng::seed_from_u64(4);
        for s in 0..4 {
            let shard = machine.part(s, 4);
            for _ in 0..100 {
                let id = shard.random_id(&mut rng);
                assert!(machine.contains(&id));
                assert_eq!(machine.part_of(&id, 4), Some(s));
                assert_eq!(shard_for(&id, 3), 1);
            }
        }
        let outside = Slice::parse_spec("0/3").unwrap().first();
        assert_eq!(machine.part_of(&outside, 4), None);
    }

    #[test]
    fn spec_errors() {
        assert!(matches!(
            Slice::parse_spec("3/3"),
            Err(SliceSpecError::Range { .. })
        ));
        assert!(matches!(
            Slice::parse_spec("0/0"),
            Err(SliceSpecError::Range { .. })
        ));
        assert!(matches!(
            Slice::parse_spec("x"),
            Err(SliceSpecError::Syntax(_))
        ));
        assert!(matches!(
            Slice::parse_spec("-1/2"),
            Err(SliceSpecError::Syntax(_))
        ));
        assert_eq!(Slice::parse_spec("0/1").unwrap(), Slice::full());
    }
}
