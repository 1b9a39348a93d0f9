//! Where an infohash came from: one type for the DHT node, the fetch pool,
//! the store and the export format.

use std::str::FromStr;

/// How an infohash was discovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// A BEP 51 `sample_infohashes` reply.
    Sample,
    /// Someone's `get_peers` query.
    GetPeers,
    /// A valid `announce_peer` query.
    Announce,
}

impl Source {
    /// All sources, in a fixed order.
    pub const ALL: [Source; 3] = [Source::Sample, Source::GetPeers, Source::Announce];

    /// The stored and exported spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Sample => "sample",
            Source::GetPeers => "get_peers",
            Source::Announce => "announce",
        }
    }
}

/// A spelling that names no [`Source`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown source {0:?} (sample, get_peers or announce)")]
pub struct UnknownSource(pub String);

impl FromStr for Source {
    type Err = UnknownSource;
    fn from_str(s: &str) -> Result<Self, UnknownSource> {
        Source::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownSource(s.to_owned()))
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip() {
        for s in Source::ALL {
            assert_eq!(s.as_str().parse::<Source>(), Ok(s));
            assert_eq!(s.to_string(), s.as_str());
        }
        assert_eq!(
            "dht".parse::<Source>(),
            Err(UnknownSource("dht".to_owned()))
        );
    }
}
