//! Content filters: which harvested torrents are stored, and which stored
//! ones `dht-hunter prune` deletes.
//!
//! A filter has up to four parts, all optional, and a torrent passes only
//! if it passes each:
//! * `include`: a regular expression that the name or some file path must
//!   match;
//! * `exclude`: a regular expression that neither the name nor any file
//!   path may match;
//! * `min-size` / `max-size`: bounds on the total size, inclusive.
//!
//! Patterns are [`regex`] syntax (unanchored, case-sensitive unless the
//! pattern starts with `(?i)`), matched against the name and each path
//! as stored (lossy UTF-8, components joined by `/`). The regex crate
//! matches in time linear in the text, so a hostile name cannot stall a
//! shard: the cost is one pass over the name and paths of each fetched
//! torrent (bounded by the metadata limits), once, after the info
//! dictionary is verified and before the store write.

use regex::Regex;

use crate::metainfo::Torrent;

/// Why a filter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// A pattern does not compile.
    #[error("{key}: {source}")]
    Pattern {
        /// `include` or `exclude`.
        key: &'static str,
        /// The regex error (it shows where).
        source: regex::Error,
    },
    /// `min-size` above `max-size`.
    #[error("min-size {min} is above max-size {max}")]
    Bounds {
        /// The lower bound.
        min: u64,
        /// The upper bound.
        max: u64,
    },
}

/// Why a torrent did not pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Neither its name nor a path matches `include`.
    NotIncluded,
    /// Its name or a path matches `exclude`.
    Excluded,
    /// Smaller than `min-size`.
    TooSmall,
    /// Larger than `max-size`.
    TooLarge,
}

impl Rejection {
    /// Every reason, for metrics.
    pub const ALL: [Rejection; 4] = [
        Rejection::NotIncluded,
        Rejection::Excluded,
        Rejection::TooSmall,
        Rejection::TooLarge,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::NotIncluded => "not_included",
            Rejection::Excluded => "excluded",
            Rejection::TooSmall => "too_small",
            Rejection::TooLarge => "too_large",
        }
    }
}

/// A filter's settings as written in the config and on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterSpec {
    /// `include` pattern.
    pub include: Option<String>,
    /// `exclude` pattern.
    pub exclude: Option<String>,
    /// Smallest total size kept, bytes.
    pub min_size: Option<u64>,
    /// Largest total size kept, bytes.
    pub max_size: Option<u64>,
}

/// A compiled filter.
#[derive(Debug, Clone, Default)]
pub struct ContentFilter {
    include: Option<Regex>,
    exclude: Option<Regex>,
    min_size: Option<u64>,
    max_size: Option<u64>,
}

impl ContentFilter {
    /// Compiles `spec`.
    pub fn new(spec: &FilterSpec) -> Result<ContentFilter, FilterError> {
        let compile = |key, p: &Option<String>| {
            p.as_deref()
                .map(Regex::new)
                .transpose()
                .map_err(|source| FilterError::Pattern { key, source })
        };
        if let (Some(min), Some(max)) = (spec.min_size, spec.max_size) {
            if min > max {
                return Err(FilterError::Bounds { min, max });
            }
        }
        Ok(ContentFilter {
            include: compile("include", &spec.include)?,
            exclude: compile("exclude", &spec.exclude)?,
            min_size: spec.min_size,
            max_size: spec.max_size,
        })
    }

    /// Whether it lets everything through.
    pub fn is_empty(&self) -> bool {
        self.include.is_none()
            && self.exclude.is_none()
            && self.min_size.is_none()
            && self.max_size.is_none()
    }

    /// Whether the patterns look at names and paths (a size-only filter
    /// needs neither).
    pub fn needs_text(&self) -> bool {
        self.include.is_some() || self.exclude.is_some()
    }

    /// Why a fetched torrent is not to be stored, if it is not.
    pub fn check(&self, t: &Torrent) -> Option<Rejection> {
        let name = t.name.display();
        let paths: Vec<String> = if self.needs_text() {
            t.files.iter().map(|f| f.display_path()).collect()
        } else {
            Vec::new()
        };
        self.check_parts(&name, paths.iter().map(String::as_str), t.total_size)
    }

    /// [`ContentFilter::check`] on a torrent's parts (a stored row).
    pub fn check_parts<'a>(
        &self,
        name: &str,
        paths: impl Iterator<Item = &'a str> + Clone,
        total_size: u64,
    ) -> Option<Rejection> {
        if self.min_size.is_some_and(|m| total_size < m) {
            return Some(Rejection::TooSmall);
        }
        if self.max_size.is_some_and(|m| total_size > m) {
            return Some(Rejection::TooLarge);
        }
        let any = |re: &Regex| re.is_match(name) || paths.clone().any(|p| re.is_match(p));
        if self.exclude.as_ref().is_some_and(any) {
            return Some(Rejection::Excluded);
        }
        if self.include.as_ref().is_some_and(|re| !any(re)) {
            return Some(Rejection::NotIncluded);
        }
        None
    }
}

/// `n` bytes for people: `512 B`, `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Parses a byte count: a number with an optional unit, `B`, `K`/`KiB`
/// (1024), `KB` (1000), and so on up to `T`/`TiB`/`TB`; spaces allowed,
/// units case-insensitive (`50GiB`, `1.5 GB`, `4096`).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (like 50GiB or 1048576)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "kb" => 1e3,
        "m" | "mib" => 1024.0 * 1024.0,
        "mb" => 1e6,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "gb" => 1e9,
        "t" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "tb" => 1e12,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
            ))
        }
    };
    let bytes = value * mult;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("{s:?} is too large"));
    }
    Ok(bytes.round() as u64)
}

/// Parses an age: a whole number with a unit, `s`, `m`, `h`, `d` or `w`
/// (`30d`, `12h`).
pub fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not an age (like 30d or 12h)"))?;
    let secs = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        other => return Err(format!("{s:?}: unknown unit {other:?} (s, m, h, d, w)")),
    };
    n.checked_mul(secs)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::{TorrentFile, TorrentName};

    fn torrent(name: &str, files: &[(&str, u64)]) -> Torrent {
        Torrent {
            name: TorrentName::Utf8(name.into()),
            total_size: files.iter().map(|f| f.1).sum(),
            piece_length: 16384,
            private: false,
            files: files
                .iter()
                .map(|(p, s)| TorrentFile {
                    path: p.split('/').map(TorrentName::from).collect(),
                    size: *s,
                })
                .collect(),
        }
    }

    fn spec(
        include: Option<&str>,
        exclude: Option<&str>,
        min: Option<u64>,
        max: Option<u64>,
    ) -> FilterSpec {
        FilterSpec {
            include: include.map(Into::into),
            exclude: exclude.map(Into::into),
            min_size: min,
            max_size: max,
        }
    }

    #[test]
    fn names_paths_and_sizes() {
        let t = torrent(
            "Holiday Photos",
            &[("dir/a.jpg", 100), ("dir/sample.mkv", 900)],
        );
        let f = |s| ContentFilter::new(&s).unwrap().check(&t);
        assert_eq!(f(spec(None, None, None, None)), None);
        assert!(ContentFilter::new(&FilterSpec::default())
            .unwrap()
            .is_empty());
        // A path matches.
        assert_eq!(
            f(spec(None, Some(r"\.mkv$"), None, None)),
            Some(Rejection::Excluded)
        );
        // Case matters unless asked not to.
        assert_eq!(f(spec(None, Some("holiday"), None, None)), None);
        assert_eq!(
            f(spec(None, Some("(?i)holiday"), None, None)),
            Some(Rejection::Excluded)
        );
        assert_eq!(
            f(spec(Some(r"\.iso$"), None, None, None)),
            Some(Rejection::NotIncluded)
        );
        assert_eq!(f(spec(Some(r"\.jpg$"), None, None, None)), None);
        // Sizes are inclusive bounds on the total.
        assert_eq!(f(spec(None, None, Some(1000), Some(1000))), None);
        assert_eq!(
            f(spec(None, None, Some(1001), None)),
            Some(Rejection::TooSmall)
        );
        assert_eq!(
            f(spec(None, None, None, Some(999))),
            Some(Rejection::TooLarge)
        );
    }

    #[test]
    fn bad_specs_are_clear_errors() {
        let e = ContentFilter::new(&spec(None, Some("(unclosed"), None, None)).unwrap_err();
        assert!(e.to_string().starts_with("exclude:"), "{e}");
        let e = ContentFilter::new(&spec(None, None, Some(10), Some(5))).unwrap_err();
        assert!(e.to_string().contains("above"), "{e}");
    }

    #[test]
    fn sizes_and_ages_parse() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("50GiB"), Ok(50 << 30));
        assert_eq!(parse_bytes("1.5 GB"), Ok(1_500_000_000));
        assert_eq!(parse_bytes("2k"), Ok(2048));
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("GiB").is_err());
        assert_eq!(
            parse_age("30d"),
            Ok(std::time::Duration::from_secs(30 * 86_400))
        );
        assert_eq!(
            parse_age("12h"),
            Ok(std::time::Duration::from_secs(12 * 3600))
        );
        assert!(parse_age("30").is_err());
        assert!(parse_age("1y").is_err());
    }
}
