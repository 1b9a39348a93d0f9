//! What this node serves: announced peers (get_peers `values`) and the pool
//! of infohashes it hands out as BEP 51 samples.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::id::Id;
use crate::krpc::scrape::ScrapeBloom;
use crate::rng::Rng;

/// How long an announced peer is kept (libtorrent: 30 minutes).
pub const PEER_TTL: Duration = Duration::from_secs(30 * 60);

/// One announced peer.
#[derive(Debug, Clone, Copy)]
struct Stored {
    addr: SocketAddr,
    at: Instant,
    /// BEP 33 `seed = 1` in its last announce.
    seed: bool,
}

/// Announced peers, bounded in torrents and peers per torrent.
#[derive(Debug, Clone)]
pub struct PeerStore {
    torrents: HashMap<Id, Vec<Stored>>,
    max_torrents: usize,
    max_peers: usize,
}

impl PeerStore {
    /// An empty store.
    pub fn new(max_torrents: usize, max_peers: usize) -> Self {
        PeerStore {
            torrents: HashMap::new(),
            max_torrents,
            max_peers: max_peers.max(1),
        }
    }

    /// Records `peer` for `infohash`, a seed when its announce said `seed = 1`
    /// (BEP 33). Returns false when there was no room.
    pub fn announce(&mut self, infohash: Id, peer: SocketAddr, seed: bool, now: Instant) -> bool {
        if !self.torrents.contains_key(&infohash) && self.torrents.len() >= self.max_torrents {
            return false;
        }
        let peers = self.torrents.entry(infohash).or_default();
        let entry = Stored {
            addr: peer,
            at: now,
            seed,
        };
        if let Some(p) = peers.iter_mut().find(|p| p.addr == peer) {
            *p = entry;
            return true;
        }
        if peers.len() >= self.max_peers {
            // Replace the stalest.
            if let Some(p) = peers.iter_mut().min_by_key(|p| p.at) {
                *p = entry;
            }
            return true;
        }
        peers.push(entry);
        true
    }

    /// The peers of `infohash`.
    pub fn peers(&self, infohash: &Id, out: &mut Vec<SocketAddr>) {
        if let Some(p) = self.torrents.get(infohash) {
            out.extend(p.iter().map(|p| p.addr));
        }
    }

    /// BEP 33's two filters for `infohash`, seeds and the others (as libtorrent
    /// answers a scrape: every stored peer, both families), or `None` when
    /// no peer is stored for it.
    pub fn scrape(&self, infohash: &Id) -> Option<(ScrapeBloom, ScrapeBloom)> {
        let peers = self.torrents.get(infohash)?;
        let (mut seeds, mut others) = (ScrapeBloom::default(), ScrapeBloom::default());
        for p in peers {
            if p.seed {
                seeds.insert_ip(p.addr.ip());
            } else {
                others.insert_ip(p.addr.ip());
            }
        }
        Some((seeds, others))
    }

    /// Whether any peer is held for `infohash` (entries are never empty: the last
    /// peer to expire takes its entry with it).
    pub fn contains(&self, infohash: &Id) -> bool {
        self.torrents.contains_key(infohash)
    }

    /// Torrents held.
    pub fn len(&self) -> usize {
        self.torrents.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.torrents.is_empty()
    }

    /// Drops peers older than [`PEER_TTL`].
    pub fn expire(&mut self, now: Instant) {
        self.torrents.retain(|_, peers| {
            peers.retain(|p| now.saturating_duration_since(p.at) < PEER_TTL);
            !peers.is_empty()
        });
    }
}

/// The infohashes we hand out as BEP 51 samples: a bounded pool; once full,
/// a new one replaces a random old one, so the pool stays a fair sample.
#[derive(Debug, Clone)]
pub struct SamplePool {
    ids: Vec<Id>,
    max: usize,
    seen: u64,
}

impl SamplePool {
    /// An empty pool of at most `max` infohashes.
    pub fn new(max: usize) -> Self {
        SamplePool {
            ids: Vec::new(),
            max,
            seen: 0,
        }
    }

    /// Offers `infohash` to the pool (callers offer each infohash once).
    pub fn offer(&mut self, infohash: Id, rng: &mut Rng) {
        self.seen = self.seen.saturating_add(1);
        if self.ids.len() < self.max {
            self.ids.push(infohash);
        } else if let Some(slot) = self.ids.get_mut(rng.below(self.max as u64) as usize) {
            *slot = infohash;
        }
    }

    /// Whether `infohash` is in the pool (linear; for small pools and tests).
    pub fn contains(&self, infohash: &Id) -> bool {
        self.ids.contains(infohash)
    }

    /// Up to `n` samples: a random window of the pool.
    pub fn sample(&self, n: usize, rng: &mut Rng, out: &mut Vec<Id>) {
        let len = self.ids.len();
        if len <= n {
            out.extend_from_slice(&self.ids);
            return;
        }
        let start = rng.below(len as u64) as usize;
        out.extend(self.ids.iter().cycle().skip(start).take(n));
    }

    /// How many infohashes we know (for `num`).
    pub fn num(&self) -> u32 {
        u32::try_from(self.seen).unwrap_or(u32::MAX)
    }

    /// Infohashes in the pool.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}
