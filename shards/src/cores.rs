//! CPU lists such as `0-3,6`, as accepted by `taskset -c` and the kernel's
//! `cpuset` files.
//!
//! The list is the user's statement of *where* shards may run. It is parsed
//! strictly (no silent skipping of bad parts) because a typo in a core list
//! otherwise shows up much later as "why is everything on CPU 0".

use std::{fmt, str::FromStr};

/// Largest CPU index accepted. Linux's `CPU_SETSIZE` is 1024; anything above
/// is certainly a typo and would make range expansion allocate needlessly.
pub const MAX_CPU_INDEX: usize = 1023;

/// An ordered, duplicate-free list of CPU indices.
///
/// Order is kept as written (after removing duplicates): shard `i` goes to
/// the `i`-th CPU of the list, so the user controls the mapping.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CoreList {
    cpus: Vec<usize>,
}

/// Why a core list could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreListError {
    /// The whole string was empty or only separators.
    #[error("empty core list (expected something like `0-3,6`)")]
    Empty,
    /// One comma-separated part is not a number or a range.
    #[error("bad core list item `{item}`: expected a CPU number or a range such as `0-3`")]
    BadItem {
        /// The offending part, as written.
        item: String,
    },
    /// A range whose end is before its start, such as `5-2`.
    #[error("bad core range `{item}`: the end is before the start")]
    ReversedRange {
        /// The offending range, as written.
        item: String,
    },
    /// A CPU index above [`MAX_CPU_INDEX`].
    #[error("CPU {cpu} is out of range (the largest accepted index is {MAX_CPU_INDEX})")]
    OutOfRange {
        /// The offending index.
        cpu: usize,
    },
}

impl CoreList {
    /// Builds a list from explicit indices (duplicates removed, order kept).
    pub fn from_cpus(cpus: impl IntoIterator<Item = usize>) -> Result<Self, CoreListError> {
        let mut out = Vec::new();
        for cpu in cpus {
            if cpu > MAX_CPU_INDEX {
                return Err(CoreListError::OutOfRange { cpu });
            }
            if !out.contains(&cpu) {
                out.push(cpu);
            }
        }
        if out.is_empty() {
            return Err(CoreListError::Empty);
        }
        Ok(Self { cpus: out })
    }

    /// The CPUs the calling thread may run on (its affinity mask, which
    /// `taskset`/cgroups set for the whole process at start), in ascending
    /// order; `None` when the mask cannot be read. Call it (and
    /// `ShardsBuilder::spawn`) from a thread you have not pinned yourself.
    pub fn allowed() -> Option<Self> {
        let ids = core_affinity::get_core_ids()?;
        Self::from_cpus(ids.into_iter().map(|c| c.id)).ok()
    }

    /// The CPU indices, in the order shards will use them.
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// Number of CPUs in the list (never zero).
    pub fn len(&self) -> usize {
        self.cpus.len()
    }

    /// Always false: a `CoreList` holds at least one CPU. Present for API
    /// symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.cpus.is_empty()
    }
}

impl FromStr for CoreList {
    type Err = CoreListError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut cpus = Vec::new();
        for raw in s.split(',') {
            let item = raw.trim();
            if item.is_empty() {
                continue;
            }
            let parse = |t: &str| -> Result<usize, CoreListError> {
                let t = t.trim();
                if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(CoreListError::BadItem {
                        item: item.to_string(),
                    });
                }
                let v: usize = t
                    .parse()
                    .map_err(|_| CoreListError::OutOfRange { cpu: usize::MAX })?;
                if v > MAX_CPU_INDEX {
                    return Err(CoreListError::OutOfRange { cpu: v });
                }
                Ok(v)
            };
            match item.split_once('-') {
                Some((a, b)) => {
                    let (lo, hi) = (parse(a)?, parse(b)?);
                    if hi < lo {
                        return Err(CoreListError::ReversedRange {
                            item: item.to_string(),
                        });
                    }
                    cpus.extend(lo..=hi);
                }
                None => cpus.push(parse(item)?),
            }
        }
        Self::from_cpus(cpus)
    }
}

impl fmt::Display for CoreList {
    /// Writes the list back in compact form (`0-3,6`), merging ascending runs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut i = 0;
        let mut first = true;
        while i < self.cpus.len() {
            let start = self.cpus[i];
            let mut j = i;
            while j + 1 < self.cpus.len() && self.cpus[j + 1] == self.cpus[j] + 1 {
                j += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if j > i {
                write!(f, "{}-{}", start, self.cpus[j])?;
            } else {
                write!(f, "{start}")?;
            }
            i = j + 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_and_singles() {
        let l: CoreList = "0-3,6".parse().unwrap();
        assert_eq!(l.cpus(), &[0, 1, 2, 3, 6]);
        assert_eq!(l.to_string(), "0-3,6");
        let l: CoreList = " 5 , 1-2 ,1".parse().unwrap();
        assert_eq!(l.cpus(), &[5, 1, 2]);
        assert_eq!(l.to_string(), "5,1-2");
    }

    #[test]
    fn rejects_bad_input_with_clear_errors() {
        assert_eq!("".parse::<CoreList>(), Err(CoreListError::Empty));
        assert_eq!(" , ".parse::<CoreList>(), Err(CoreListError::Empty));
        assert_eq!(
            "1,x".parse::<CoreList>(),
            Err(CoreListError::BadItem { item: "x".into() })
        );
        assert_eq!(
            "-3".parse::<CoreList>(),
            Err(CoreListError::BadItem { item: "-3".into() })
        );
        assert_eq!(
            "1-2-3".parse::<CoreList>(),
            Err(CoreListError::BadItem {
                item: "1-2-3".into()
            })
        );
        assert_eq!(
            "5-2".parse::<CoreList>(),
            Err(CoreListError::ReversedRange { item: "5-2".into() })
        );
        assert_eq!(
            "0-5000".parse::<CoreList>(),
            Err(CoreListError::OutOfRange { cpu: 5000 })
        );
        assert_eq!(
            "99999999999999999999999".parse::<CoreList>(),
            Err(CoreListError::OutOfRange { cpu: usize::MAX })
        );
        let msg = "5-2".parse::<CoreList>().unwrap_err().to_string();
        assert!(msg.contains("5-2"), "{msg}");
    }

    #[test]
    fn allowed_is_not_empty_here() {
        let l = CoreList::allowed().unwrap();
        assert!(!l.is_empty());
    }
}
