//! The harvester: the one owner of every infohash's life on its shard.
//!
//! An infohash the owner shard hears of (a sample, someone's get_peers, an
//! announce) lives here, and only here, until it ends in exactly one of:
//!
//! * **stored**: the metadata was fetched, verified and handed to the store;
//!   the infohash moves to the `stored` filter and is never fetched again;
//! * **given up**: every try failed (bounded, with backoff); it moves to the
//!   `given_up` filter, which only an infohash *with a peer* can leave
//!   early; a sighting without one (a sample from a node that holds it,
//!   someone's get_peers) is ignored until the filter has forgotten it,
//!   one to two `given_up_hold` periods later;
//! * still **in progress**, in one of the phases below, with a reason when
//!   it waits.
//!
//! ```text
//!   seen ──▶ search ──▶ searching ──peers──▶ ready ──▶ fetching ──ok──▶ stored
//!     │  (no peers)         │                  ▲           │
//!     │                     └─no peers─┐       │           └─failed─┐
//!     └─(with peers)───────────────────┼──▶ ready                   ▼
//!                                      ▼                      waiting(until, why)
//!                              waiting(until, why) ──timer──▶ search (or give up)
//! ```
//!
//! Peers arriving from anywhere at any time (an announce, a later get_peers
//! reply's `values`, a holder's answer) are merged into the entry; an
//! untried peer wakes a waiting entry at once. This is what magnetico gets
//! for free by forgetting failed infohashes, and what the old design lost
//! by marking an infohash "known" forever after a failed fetch.
//!
//! Like the node, the harvester is sans-IO: it is told what happened
//! (`discover`, `search_done`, `fetch_done`, `handle_timeout`) and asked
//! what to do next (`poll_search`, `poll_fetch`, `poll_timeout`). The node
//! runs the peer searches (holder queries, lookups); the engine's fetch pool
//! runs the fetches.
//!
//! # Bounds
//!
//! Every collection is bounded ([`HarvestConfig`], documented in
//! `tuning/README.md`): in-progress entries (`max_entries`; when full, a
//! newcomer that brings a peer or a holder evicts the oldest entry seen only
//! in someone's get_peers, so a flood of random get_peers cannot crowd out
//! real torrents), peers per entry, fetches handed out at once
//! (`max_fetching`, so the pool's queue never overflows), and the two
//! filters, which forget their oldest half when full instead of refusing.
//!
//! This file is about 780 lines of code before its tests: one state machine
//! (the [`Harvester`]) whose phases, queues and filters hand entries to one
//! another and are easiest to check side by side.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::dedup::InfohashSet;
#[cfg(test)]
use super::dedup::Insert;
use super::Source;
use crate::id::Id;
use crate::krpc::NodeInfo;

/// Retries after `retry_base` before the wait starts doubling.
pub const QUICK_RETRIES: u8 = 3;

/// Peers remembered per in-progress infohash.
pub const MAX_PEERS_PER_ENTRY: usize = 32;

/// The harvester's bounds and retry policy.
#[derive(Debug, Clone, Copy)]
pub struct HarvestConfig {
    /// In-progress infohashes at most.
    pub max_entries: usize,
    /// Fetches handed to the pool and not yet reported back, at most.
    pub max_fetching: usize,
    /// Delay before the first retry; doubled per failed try.
    pub retry_base: Duration,
    /// Longest delay between tries.
    pub retry_max: Duration,
    /// Fetch tries (each with every known peer) before giving up.
    pub max_fetch_tries: u8,
    /// Peer searches that found nobody before giving up.
    pub max_searches: u8,
    /// Stored infohashes remembered (the "never fetch again" filter).
    pub stored_capacity: usize,
    /// Given-up infohashes remembered (ignored unless they bring a peer).
    pub given_up_capacity: usize,
    /// A given-up infohash is ignored without a peer for one to two of
    /// these (the filter forgets its older half on this clock too).
    pub given_up_hold: Duration,
    /// Nodes remembered per infohash as having answered with `values`,
    /// and asked for a BEP 33 scrape once its torrent is stored (0: no
    /// scrapes).
    pub scrape_nodes: usize,
}

/// Nodes asked for a BEP 33 scrape of each stored torrent unless the
/// operator says otherwise (`--scrape-nodes`).
pub const DEFAULT_SCRAPE_NODES: usize = 4;

impl Default for HarvestConfig {
    fn default() -> Self {
        HarvestConfig {
            max_entries: 200_000,
            max_fetching: 4096,
            retry_base: Duration::from_secs(10),
            retry_max: Duration::from_secs(30 * 60),
            max_fetch_tries: 6,
            max_searches: 3,
            stored_capacity: 16_000_000,
            given_up_capacity: 1_000_000,
            given_up_hold: Duration::from_secs(3600),
            scrape_nodes: DEFAULT_SCRAPE_NODES,
        }
    }
}

/// Why an infohash waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    /// Its last peer search found no peer.
    NoPeers,
    /// Its last fetch failed with every peer it had.
    FetchFailed,
}

/// What a fetch came to, as the pool reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// Verified and handed to the store.
    Stored,
    /// Every peer tried failed; `tried` lists them.
    Failed {
        /// The peers that were tried.
        tried: Vec<SocketAddr>,
    },
    /// The pool could not run it (shutting down, queue full): not a try.
    NotRun,
    /// Fetched and verified, but the content filter said not to store it:
    /// it is not fetched again in this run, and leaves `pending`.
    Filtered,
}

/// What [`Harvester::discover`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovered {
    /// A new infohash, now in progress.
    New,
    /// Already in progress; its peers (if any) were merged.
    InProgress,
    /// Already stored.
    Stored,
    /// Given up earlier and brought no peer.
    GivenUp,
    /// Dropped: the in-progress table is full of entries at least as good.
    Shed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Wants a peer search.
    Search,
    /// A search runs.
    Searching,
    /// Has untried peers; wants a fetch.
    Ready,
    /// Handed to the pool.
    Fetching,
    /// Waits for its timer or for a new peer.
    Waiting { until: Instant, reason: WaitReason },
}

#[derive(Debug, Clone)]
struct Entry {
    source: Source,
    phase: Phase,
    /// Known peers and whether the current round tried them.
    peers: Vec<(SocketAddr, bool)>,
    holder: Option<NodeInfo>,
    fetch_tries: u8,
    searches: u8,
    /// Ever had a peer or a holder (not only someone's get_peers).
    vouched: bool,
    /// Nodes that answered with `values` (at most `scrape_nodes`): asked
    /// for a BEP 33 scrape when the torrent is stored.
    value_nodes: Vec<NodeInfo>,
}

impl Entry {
    fn has_untried(&self) -> bool {
        self.peers.iter().any(|(_, tried)| !tried)
    }

    /// Adds peers; returns how many were new.
    fn merge(&mut self, peers: &[SocketAddr]) -> usize {
        let mut added = 0;
        for p in peers {
            if self.peers.iter().any(|(q, _)| q == p) {
                continue;
            }
            if self.peers.len() >= MAX_PEERS_PER_ENTRY {
                // Keep the newest: drop the oldest tried peer, else skip.
                match self.peers.iter().position(|(_, tried)| *tried) {
                    Some(i) => {
                        self.peers.remove(i);
                    }
                    None => continue,
                }
            }
            self.peers.push((*p, false));
            added += 1;
        }
        if !self.peers.is_empty() {
            self.vouched = true;
        }
        added
    }
}

/// A fetch to run: the infohash with every peer known for it, untried first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// The infohash.
    pub infohash: Id,
    /// How it was first seen.
    pub source: Source,
    /// Its peers.
    pub peers: Vec<SocketAddr>,
}

/// A peer search to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchRequest {
    /// The infohash.
    pub infohash: Id,
    /// How it was first seen (lookups for get_peers-only infohashes run as
    /// exploration).
    pub source: Source,
    /// A node known to hold its peers (the sample's holder), asked first.
    pub holder: Option<NodeInfo>,
}

/// Counters: every infohash taken in is in exactly one of stored, given
/// up, evicted, filtered or in progress (`discovered = stored + given_up +
/// evicted + filtered + in_progress`); `shed` counts those never taken in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HarvestStats {
    /// New infohashes taken in.
    pub discovered: u64,
    /// Fetched and handed to the store.
    pub stored: u64,
    /// Given up after the bounded tries.
    pub given_up: u64,
    /// Not taken in: the table was full of entries at least as good.
    pub shed: u64,
    /// Taken in, then evicted by a better newcomer.
    pub evicted: u64,
    /// Fetches handed out (first tries and retries).
    pub fetches: u64,
    /// Fetch tries that failed.
    pub fetch_failures: u64,
    /// Peer searches handed out.
    pub searches: u64,
    /// Searches that found no peer.
    pub searches_empty: u64,
    /// Waiting entries woken by a new peer.
    pub woken_by_peer: u64,
    /// Sightings of infohashes already stored.
    pub already_stored: u64,
    /// Fetched, then refused by the content filter.
    pub filtered: u64,
    /// In progress now.
    pub in_progress: usize,
    /// Of those, waiting for a retry.
    pub waiting: usize,
    /// Of those, handed to the pool.
    pub fetching: usize,
    /// Infohashes in the stored filter.
    pub stored_known: usize,
}

/// The harvester (see the module docs).
#[derive(Debug)]
pub struct Harvester {
    cfg: HarvestConfig,
    entries: HashMap<Id, Entry>,
    stored: InfohashSet,
    given_up: InfohashSet,
    to_search: VecDeque<Id>,
    /// First tries.
    ready: VecDeque<Id>,
    /// Retries: served after first tries (finish what is new and cheap).
    retry: VecDeque<Id>,
    timers: BinaryHeap<Reverse<(Instant, Id)>>,
    /// Entries seen only in get_peers, oldest first: eviction candidates.
    weak: VecDeque<Id>,
    fetching: usize,
    waiting: usize,
    gave_up: Vec<Id>,
    /// When the given-up filter next forgets its older half.
    given_up_rotation: Option<Instant>,
    /// Stored infohashes with the nodes to scrape them from.
    to_scrape: VecDeque<(Id, Vec<NodeInfo>)>,
    stats: HarvestStats,
}

/// Stored torrents waiting for their scrape to be sent, at most (the node
/// takes them at once unless its scrape table is full; past this the
/// oldest wait is dropped, the torrent stays unscraped).
const MAX_SCRAPE_QUEUE: usize = 4096;

fn count(c: &mut u64) {
    *c = c.saturating_add(1);
}

impl Harvester {
    /// An empty harvester; `key` keys the filters' fingerprints.
    pub fn new(cfg: HarvestConfig, key: (u64, u64)) -> Self {
        Harvester {
            stored: InfohashSet::new(cfg.stored_capacity, key),
            given_up: InfohashSet::new(cfg.given_up_capacity, (key.1, key.0)),
            cfg,
            entries: HashMap::new(),
            to_search: VecDeque::new(),
            ready: VecDeque::new(),
            retry: VecDeque::new(),
            timers: BinaryHeap::new(),
            weak: VecDeque::new(),
            fetching: 0,
            waiting: 0,
            gave_up: Vec::new(),
            given_up_rotation: None,
            to_scrape: VecDeque::new(),
            stats: HarvestStats::default(),
        }
    }

    /// Every infohash in progress, with how it was first seen.
    pub fn unfinished(&self) -> impl Iterator<Item = (Id, Source)> + '_ {
        self.entries
            .iter()
            .map(|(infohash, e)| (*infohash, e.source))
    }

    /// Counters.
    pub fn stats(&self) -> HarvestStats {
        let mut s = self.stats;
        s.in_progress = self.entries.len();
        s.waiting = self.waiting;
        s.fetching = self.fetching;
        s.stored_known = self.stored.len();
        s
    }

    /// The stored filter (for memory accounting).
    pub fn stored_filter(&self) -> &InfohashSet {
        &self.stored
    }

    /// Marks `infohash` as stored (loaded from the database at start).
    pub fn remember_stored(&mut self, infohash: &Id) {
        self.stored.insert(infohash);
    }

    /// Whether `infohash` is in progress.
    pub fn in_progress(&self, infohash: &Id) -> bool {
        self.entries.contains_key(infohash)
    }

    fn set_phase(&mut self, infohash: &Id, phase: Phase) {
        let Some(e) = self.entries.get_mut(infohash) else {
            return;
        };
        let was_waiting = matches!(e.phase, Phase::Waiting { .. });
        let was_fetching = e.phase == Phase::Fetching;
        e.phase = phase;
        if was_waiting {
            self.waiting = self.waiting.saturating_sub(1);
        }
        if was_fetching {
            self.fetching = self.fetching.saturating_sub(1);
        }
        match phase {
            Phase::Waiting { until, .. } => {
                self.waiting += 1;
                self.timers.push(Reverse((until, *infohash)));
            }
            Phase::Fetching => self.fetching += 1,
            Phase::Search => self.to_search.push_back(*infohash),
            Phase::Ready => {
                if e.fetch_tries == 0 {
                    self.ready.push_back(*infohash);
                } else {
                    self.retry.push_back(*infohash);
                }
            }
            Phase::Searching => {}
        }
    }

    fn remove(&mut self, infohash: &Id) -> Option<Entry> {
        let e = self.entries.remove(infohash)?;
        match e.phase {
            Phase::Waiting { .. } => self.waiting = self.waiting.saturating_sub(1),
            Phase::Fetching => self.fetching = self.fetching.saturating_sub(1),
            _ => {}
        }
        Some(e)
    }

    fn give_up(&mut self, infohash: &Id) {
        if self.remove(infohash).is_some() {
            count(&mut self.stats.given_up);
            self.given_up.insert(infohash);
            self.gave_up.push(*infohash);
        }
    }

    /// `node` answered a get_peers for `infohash` with `values`: it stores
    /// peers, so it is one to scrape once the torrent is stored.
    pub fn note_value_node(&mut self, infohash: &Id, node: NodeInfo) {
        let cap = self.cfg.scrape_nodes;
        if let Some(e) = self.entries.get_mut(infohash) {
            if e.value_nodes.len() < cap && !e.value_nodes.iter().any(|n| n.addr == node.addr) {
                e.value_nodes.push(node);
            }
        }
    }

    /// A stored torrent and the nodes to ask for its BEP 33 scrape.
    pub fn poll_scrape(&mut self) -> Option<(Id, Vec<NodeInfo>)> {
        self.to_scrape.pop_front()
    }

    /// Infohashes given up since the last call (the store forgets them).
    pub fn poll_given_up(&mut self) -> Option<Id> {
        self.gave_up.pop()
    }

    /// Makes room for a vouched newcomer by evicting the oldest entry seen
    /// only in get_peers that is not being worked on.
    fn evict_weak(&mut self) -> bool {
        while let Some(infohash) = self.weak.pop_front() {
            let evictable = self.entries.get(&infohash).is_some_and(|e| {
                !e.vouched && !matches!(e.phase, Phase::Searching | Phase::Fetching)
            });
            if evictable {
                self.remove(&infohash);
                count(&mut self.stats.evicted);
                return true;
            }
        }
        false
    }

    /// An infohash was seen (on its owner shard).
    pub fn discover(
        &mut self,
        infohash: Id,
        source: Source,
        peers: &[SocketAddr],
        holder: Option<NodeInfo>,
    ) -> Discovered {
        if self.stored.contains(&infohash) {
            count(&mut self.stats.already_stored);
            return Discovered::Stored;
        }
        if let Some(e) = self.entries.get_mut(&infohash) {
            let new_holder = holder.is_some() && e.holder.is_none();
            if new_holder {
                e.holder = holder;
                e.vouched = true;
            }
            let added = e.merge(peers);
            if added > 0 {
                match e.phase {
                    Phase::Waiting { .. } | Phase::Search => {
                        count(&mut self.stats.woken_by_peer);
                        self.set_phase(&infohash, Phase::Ready);
                    }
                    // A running search or fetch picks them up when it ends
                    // (the node passes them to a running fetch too).
                    _ => {}
                }
            } else if new_holder && matches!(e.phase, Phase::Waiting { .. }) {
                // A node that holds its peers: ask it now.
                self.set_phase(&infohash, Phase::Search);
            }
            return Discovered::InProgress;
        }
        let vouched = !peers.is_empty() || holder.is_some();
        // A holder is no news for a given-up infohash: its holders were
        // asked before it was given up, and a sweep meets them again every
        // sample interval. Without this, each of them re-sampled revived
        // it: a search and a round of doomed fetches per holder per sweep.
        if peers.is_empty() && self.given_up.contains(&infohash) {
            return Discovered::GivenUp;
        }
        if self.entries.len() >= self.cfg.max_entries && !(vouched && self.evict_weak()) {
            count(&mut self.stats.shed);
            return Discovered::Shed;
        }
        let mut e = Entry {
            source,
            phase: Phase::Searching,
            peers: Vec::new(),
            holder,
            fetch_tries: 0,
            searches: 0,
            vouched,
            value_nodes: Vec::new(),
        };
        e.merge(peers);
        let phase = if e.peers.is_empty() {
            Phase::Search
        } else {
            Phase::Ready
        };
        self.entries.insert(infohash, e);
        if !vouched {
            self.weak.push_back(infohash);
            // Lazily validated; keep it from outgrowing the table.
            if self.weak.len() > 2 * self.cfg.max_entries.max(1) {
                let entries = &self.entries;
                self.weak
                    .retain(|w| entries.get(w).is_some_and(|e| !e.vouched));
            }
        }
        self.set_phase(&infohash, phase);
        count(&mut self.stats.discovered);
        Discovered::New
    }

    /// The next peer search to run.
    pub fn poll_search(&mut self) -> Option<SearchRequest> {
        while let Some(infohash) = self.to_search.pop_front() {
            let Some(e) = self.entries.get_mut(&infohash) else {
                continue;
            };
            if e.phase != Phase::Search {
                continue;
            }
            e.phase = Phase::Searching;
            e.searches = e.searches.saturating_add(1);
            count(&mut self.stats.searches);
            // The holder is asked once; later searches are lookups.
            let holder = e.holder.take();
            return Some(SearchRequest {
                infohash,
                source: e.source,
                holder,
            });
        }
        None
    }

    /// Whether a peer search is wanted.
    pub fn wants_search(&self) -> bool {
        !self.to_search.is_empty()
    }

    /// The wait after `tries` failures of `infohash`: `retry_base` for the first
    /// [`QUICK_RETRIES`] (most failures are transient: a peer away for a
    /// while, a connection limit), then doubling, capped, and spread over
    /// ±25 % by a hash of the infohash and the try, so that retries do not
    /// fall into step with a peer that comes and goes on a fixed period.
    fn backoff(&self, infohash: &Id, tries: u8) -> Duration {
        let shift = u32::from(tries.saturating_sub(QUICK_RETRIES)).min(16);
        let d = self
            .cfg
            .retry_base
            .saturating_mul(1 << shift)
            .min(self.cfg.retry_max);
        let h = u64::from_le_bytes([
            infohash.0[0],
            infohash.0[3],
            infohash.0[7],
            infohash.0[11],
            infohash.0[13],
            infohash.0[17],
            infohash.0[19],
            tries,
        ])
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // 750..1250 thousandths.
        let permille = 750 + (h >> 32) % 501;
        d.mul_f64(permille as f64 / 1000.0)
    }

    /// A peer search ended with `peers` (possibly none).
    pub fn search_done(&mut self, infohash: &Id, peers: &[SocketAddr], now: Instant) {
        let Some(e) = self.entries.get_mut(infohash) else {
            return;
        };
        if e.phase != Phase::Searching {
            // Woken meanwhile; just keep the peers.
            e.merge(peers);
            return;
        }
        e.merge(peers);
        if peers.is_empty() {
            count(&mut self.stats.searches_empty);
        }
        if !peers.is_empty() || e.has_untried() {
            self.set_phase(infohash, Phase::Ready);
            return;
        }
        let searches = e.searches;
        let limit = if e.vouched {
            self.cfg
                .max_searches
                .saturating_add(self.cfg.max_fetch_tries)
        } else {
            self.cfg.max_searches
        };
        if searches >= limit {
            self.give_up(infohash);
            return;
        }
        let until = now + self.backoff(infohash, searches);
        self.set_phase(
            infohash,
            Phase::Waiting {
                until,
                reason: WaitReason::NoPeers,
            },
        );
    }

    /// The next fetch to hand to the pool (none while `max_fetching` are
    /// out). First tries go before retries.
    pub fn poll_fetch(&mut self) -> Option<FetchRequest> {
        if self.fetching >= self.cfg.max_fetching {
            return None;
        }
        loop {
            let infohash = match self.ready.pop_front() {
                Some(infohash) => infohash,
                None => self.retry.pop_front()?,
            };
            let Some(e) = self.entries.get_mut(&infohash) else {
                continue;
            };
            if e.phase != Phase::Ready {
                continue;
            }
            // Untried first; the tried ones last, as spares.
            let mut peers: Vec<SocketAddr> = e
                .peers
                .iter()
                .filter(|(_, t)| !t)
                .map(|(p, _)| *p)
                .collect();
            peers.extend(e.peers.iter().filter(|(_, t)| *t).map(|(p, _)| *p));
            let source = e.source;
            self.set_phase(&infohash, Phase::Fetching);
            count(&mut self.stats.fetches);
            return Some(FetchRequest {
                infohash,
                source,
                peers,
            });
        }
    }

    /// `infohash`'s source while a peer search for it runs.
    pub fn searching(&self, infohash: &Id) -> Option<Source> {
        self.entries
            .get(infohash)
            .filter(|e| e.phase == Phase::Searching)
            .map(|e| e.source)
    }

    /// Whether `infohash` is being fetched (new peers should go to the pool).
    pub fn is_fetching(&self, infohash: &Id) -> bool {
        self.entries
            .get(infohash)
            .is_some_and(|e| e.phase == Phase::Fetching)
    }

    /// The pool reports how a fetch of `infohash` ended.
    pub fn fetch_done(&mut self, infohash: &Id, outcome: FetchOutcome, now: Instant) {
        let Some(e) = self.entries.get_mut(infohash) else {
            if matches!(outcome, FetchOutcome::Stored | FetchOutcome::Filtered) {
                self.stored.insert(infohash);
            }
            return;
        };
        if e.phase != Phase::Fetching {
            return;
        }
        match outcome {
            FetchOutcome::Stored => {
                if let Some(e) = self.remove(infohash) {
                    if !e.value_nodes.is_empty() {
                        if self.to_scrape.len() >= MAX_SCRAPE_QUEUE {
                            self.to_scrape.pop_front();
                        }
                        self.to_scrape.push_back((*infohash, e.value_nodes));
                    }
                }
                self.stored.insert(infohash);
                count(&mut self.stats.stored);
            }
            FetchOutcome::NotRun => self.set_phase(infohash, Phase::Ready),
            FetchOutcome::Filtered => {
                // Remembered as if stored, so no sighting fetches it
                // again; the store forgets it from `pending`.
                self.remove(infohash);
                self.stored.insert(infohash);
                self.gave_up.push(*infohash);
                count(&mut self.stats.filtered);
            }
            FetchOutcome::Failed { tried } => {
                count(&mut self.stats.fetch_failures);
                for (p, t) in e.peers.iter_mut() {
                    if tried.contains(p) {
                        *t = true;
                    }
                }
                e.fetch_tries = e.fetch_tries.saturating_add(1);
                let tries = e.fetch_tries;
                if e.has_untried() {
                    // Peers arrived while it ran: try them now.
                    self.set_phase(infohash, Phase::Ready);
                    return;
                }
                if tries >= self.cfg.max_fetch_tries {
                    self.give_up(infohash);
                    return;
                }
                let until = now + self.backoff(infohash, tries);
                self.set_phase(
                    infohash,
                    Phase::Waiting {
                        until,
                        reason: WaitReason::FetchFailed,
                    },
                );
            }
        }
    }

    /// Wakes the entries whose wait is over: a fresh search for more peers
    /// (the old ones are retried with whatever it finds).
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.given_up_rotation {
            None => self.given_up_rotation = Some(now + self.cfg.given_up_hold),
            Some(at) if now >= at => {
                self.given_up.rotate();
                self.given_up_rotation = Some(now + self.cfg.given_up_hold);
            }
            Some(_) => {}
        }
        while let Some(Reverse((at, infohash))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(e) = self.entries.get_mut(&infohash) else {
                continue;
            };
            let Phase::Waiting { until, .. } = e.phase else {
                continue;
            };
            if until != at {
                continue;
            }
            // Every known peer gets another chance (peers churn; a timeout
            // is not a verdict), after a search for fresh ones.
            for (_, t) in e.peers.iter_mut() {
                *t = false;
            }
            self.set_phase(&infohash, Phase::Search);
        }
    }

    /// When [`Harvester::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Why `infohash` waits, if it does.
    pub fn wait_reason(&self, infohash: &Id) -> Option<WaitReason> {
        match self.entries.get(infohash)?.phase {
            Phase::Waiting { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// Whether `infohash` is in the stored filter.
    pub fn is_stored(&self, infohash: &Id) -> bool {
        self.stored.contains(infohash)
    }

    /// Whether `insert` into the stored filter says it was new (tests).
    #[cfg(test)]
    fn stored_insert(&mut self, infohash: &Id) -> Insert {
        self.stored.insert(infohash)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn infohash(n: u8) -> Id {
        Id([n; 20])
    }

    fn peer(n: u16) -> SocketAddr {
        SocketAddr::from(([127, 96, 0, 1], 1000 + n))
    }

    fn small() -> Harvester {
        Harvester::new(
            HarvestConfig {
                max_entries: 4,
                max_fetching: 2,
                retry_base: Duration::from_secs(10),
                retry_max: Duration::from_secs(60),
                max_fetch_tries: 3,
                max_searches: 2,
                stored_capacity: 1000,
                given_up_capacity: 1000,
                given_up_hold: Duration::from_secs(3600),
                scrape_nodes: 2,
            },
            (1, 2),
        )
    }

    #[test]
    fn get_peers_first_then_announce_wakes_and_stores() {
        let t0 = Instant::now();
        let mut h = small();
        assert_eq!(
            h.discover(infohash(1), Source::GetPeers, &[], None),
            Discovered::New
        );
        let s = h.poll_search().unwrap();
        assert_eq!(s.infohash, infohash(1));
        h.search_done(&infohash(1), &[], t0);
        assert_eq!(h.wait_reason(&infohash(1)), Some(WaitReason::NoPeers));
        assert!(h.poll_fetch().is_none());
        // The announce brings the peer: woken at once, fetched.
        assert_eq!(
            h.discover(infohash(1), Source::Announce, &[peer(1)], None),
            Discovered::InProgress
        );
        let f = h.poll_fetch().unwrap();
        assert_eq!(f.peers, vec![peer(1)]);
        h.fetch_done(&infohash(1), FetchOutcome::Stored, t0);
        assert!(h.is_stored(&infohash(1)));
        assert_eq!(
            h.discover(infohash(1), Source::Announce, &[peer(1)], None),
            Discovered::Stored
        );
        let st = h.stats();
        assert_eq!((st.discovered, st.stored, st.in_progress), (1, 1, 0));
        assert_eq!(st.woken_by_peer, 1);
    }

    #[test]
    fn a_new_holder_wakes_a_waiting_infohash() {
        let t0 = Instant::now();
        let mut h = small();
        h.discover(infohash(4), Source::GetPeers, &[], None);
        h.poll_search().unwrap();
        h.search_done(&infohash(4), &[], t0);
        assert_eq!(h.wait_reason(&infohash(4)), Some(WaitReason::NoPeers));
        let holder = NodeInfo {
            id: Id([9; 20]),
            addr: peer(9),
        };
        h.discover(infohash(4), Source::Sample, &[], Some(holder));
        let s = h.poll_search().unwrap();
        assert_eq!(s.holder, Some(holder));
    }

    #[test]
    fn failed_fetch_backs_off_retries_and_gives_up() {
        let t0 = Instant::now();
        let mut h = small();
        h.discover(infohash(2), Source::Announce, &[peer(1)], None);
        let mut now = t0;
        for tries in 1..=3u32 {
            let f = h.poll_fetch().unwrap();
            assert_eq!(f.peers, vec![peer(1)]);
            h.fetch_done(
                &infohash(2),
                FetchOutcome::Failed {
                    tried: vec![peer(1)],
                },
                now,
            );
            if tries == 3 {
                break;
            }
            assert_eq!(h.wait_reason(&infohash(2)), Some(WaitReason::FetchFailed));
            let at = h.poll_timeout().unwrap();
            let base = Duration::from_secs(10 << tries.saturating_sub(u32::from(QUICK_RETRIES)));
            let wait = at - now;
            assert!(
                wait >= base.mul_f64(0.75) && wait <= base.mul_f64(1.25),
                "{wait:?} for {base:?}"
            );
            h.handle_timeout(at - Duration::from_millis(1));
            assert!(h.poll_search().is_none(), "woken early");
            now = at;
            h.handle_timeout(now);
            // A re-search finds nothing new; the old peer is retried.
            let s = h.poll_search().unwrap();
            assert_eq!(s.infohash, infohash(2));
            h.search_done(&infohash(2), &[], now);
        }
        assert!(!h.in_progress(&infohash(2)));
        assert_eq!(h.poll_given_up(), Some(infohash(2)));
        assert_eq!(h.stats().given_up, 1);
        // Given up: a bare get_peers does not revive it, nor a sample from
        // a node that holds it; a peer does.
        assert_eq!(
            h.discover(infohash(2), Source::GetPeers, &[], None),
            Discovered::GivenUp
        );
        assert_eq!(
            h.discover(infohash(2), Source::Sample, &[], Some(holder(8))),
            Discovered::GivenUp
        );
        assert_eq!(
            h.discover(infohash(2), Source::Announce, &[peer(9)], None),
            Discovered::New
        );
    }

    fn holder(i: u8) -> NodeInfo {
        NodeInfo {
            id: infohash(i),
            addr: peer(u16::from(i)),
        }
    }

    /// A sweep meets a given-up infohash's holders every sample interval;
    /// they revive it only once the filter has forgotten it, one to two
    /// `given_up_hold` later.
    #[test]
    fn given_up_is_ignored_without_a_peer_for_one_to_two_holds() {
        let t0 = Instant::now();
        let mut h = small();
        let hold = h.cfg.given_up_hold;
        h.handle_timeout(t0);
        let ih = infohash(5);
        assert_eq!(
            h.discover(ih, Source::Sample, &[], Some(holder(1))),
            Discovered::New
        );
        h.give_up(&ih);
        assert!(!h.in_progress(&ih));
        let again = |h: &mut Harvester| h.discover(ih, Source::Sample, &[], Some(holder(2)));
        assert_eq!(again(&mut h), Discovered::GivenUp);
        h.handle_timeout(t0 + hold - Duration::from_millis(1));
        assert_eq!(again(&mut h), Discovered::GivenUp);
        // First rotation: moved to the older half, still remembered.
        h.handle_timeout(t0 + hold);
        assert_eq!(again(&mut h), Discovered::GivenUp);
        // Second: forgotten, and a holder's sample starts it afresh.
        h.handle_timeout(t0 + hold * 2);
        assert_eq!(again(&mut h), Discovered::New);
        assert!(h.in_progress(&ih));
    }

    #[test]
    fn peers_arriving_during_a_fetch_are_tried_after_it() {
        let t0 = Instant::now();
        let mut h = small();
        h.discover(infohash(3), Source::Sample, &[peer(1)], None);
        let _ = h.poll_fetch().unwrap();
        assert!(h.is_fetching(&infohash(3)));
        h.discover(infohash(3), Source::Announce, &[peer(2)], None);
        h.fetch_done(
            &infohash(3),
            FetchOutcome::Failed {
                tried: vec![peer(1)],
            },
            t0,
        );
        let f = h.poll_fetch().unwrap();
        assert_eq!(f.peers, vec![peer(2), peer(1)]);
    }

    #[test]
    fn fetches_out_are_bounded_and_first_tries_go_first() {
        let t0 = Instant::now();
        let mut h = small();
        h.discover(infohash(1), Source::Announce, &[peer(1)], None);
        h.discover(infohash(2), Source::Announce, &[peer(2)], None);
        h.discover(infohash(3), Source::Announce, &[peer(3)], None);
        let a = h.poll_fetch().unwrap();
        let _b = h.poll_fetch().unwrap();
        assert!(h.poll_fetch().is_none(), "max_fetching is 2");
        // infohash(1) fails with a new peer waiting: a retry, queued behind infohash(3).
        h.discover(a.infohash, Source::Announce, &[peer(7)], None);
        h.fetch_done(
            &a.infohash,
            FetchOutcome::Failed {
                tried: vec![peer(1)],
            },
            t0,
        );
        assert_eq!(h.poll_fetch().unwrap().infohash, infohash(3));
    }

    #[test]
    fn a_full_table_evicts_get_peers_only_entries_for_vouched_ones() {
        let mut h = small();
        for n in 10..14 {
            assert_eq!(
                h.discover(infohash(n), Source::GetPeers, &[], None),
                Discovered::New
            );
        }
        // Full of weak entries: another weak one is shed...
        assert_eq!(
            h.discover(infohash(20), Source::GetPeers, &[], None),
            Discovered::Shed
        );
        // ...a vouched one evicts the oldest weak one.
        assert_eq!(
            h.discover(infohash(21), Source::Announce, &[peer(1)], None),
            Discovered::New
        );
        assert!(!h.in_progress(&infohash(10)));
        assert!(h.in_progress(&infohash(21)));
        let s = h.stats();
        assert_eq!((s.shed, s.evicted, s.in_progress), (1, 1, 4));
    }

    #[test]
    fn get_peers_only_infohashes_age_out() {
        let t0 = Instant::now();
        let mut h = small();
        h.discover(infohash(5), Source::GetPeers, &[], None);
        let mut now = t0;
        for _ in 0..2 {
            assert!(h.poll_search().is_some());
            h.search_done(&infohash(5), &[], now);
            if let Some(at) = h.poll_timeout() {
                now = at;
                h.handle_timeout(now);
            }
        }
        assert!(!h.in_progress(&infohash(5)));
        assert_eq!(h.stats().given_up, 1);
    }

    /// Random sightings, searches, fetch outcomes and timers: the audit
    /// equation holds after every step, and nothing is fetched twice at
    /// once.
    #[test]
    fn every_infohash_is_accounted_for() {
        let mut rng = crate::rng::Rng::seed_from_u64(7);
        let mut h = small();
        let t0 = Instant::now();
        let mut now = t0;
        let mut out: Vec<Id> = Vec::new();
        for step in 0..5000u32 {
            now += Duration::from_millis(rng.below(2000));
            let infohash = infohash(rng.below(12) as u8);
            match rng.below(6) {
                0 => {
                    h.discover(infohash, Source::GetPeers, &[], None);
                }
                1 => {
                    h.discover(
                        infohash,
                        Source::Announce,
                        &[peer(rng.below(5) as u16)],
                        None,
                    );
                }
                2 => {
                    if let Some(s) = h.poll_search() {
                        let found: Vec<SocketAddr> =
                            (0..rng.below(2)).map(|i| peer(i as u16)).collect();
                        h.search_done(&s.infohash, &found, now);
                    }
                }
                3 => {
                    if let Some(f) = h.poll_fetch() {
                        assert!(!out.contains(&f.infohash), "fetched twice at once");
                        out.push(f.infohash);
                    }
                }
                4 => {
                    if !out.is_empty() {
                        let i = rng.below(out.len() as u64) as usize;
                        let infohash = out.swap_remove(i);
                        let o = match rng.below(4) {
                            0 => FetchOutcome::Stored,
                            1 => FetchOutcome::NotRun,
                            2 => FetchOutcome::Filtered,
                            _ => FetchOutcome::Failed {
                                tried: vec![peer(0), peer(1)],
                            },
                        };
                        h.fetch_done(&infohash, o, now);
                    }
                }
                _ => h.handle_timeout(now),
            }
            let s = h.stats();
            assert_eq!(
                s.discovered,
                s.stored + s.given_up + s.evicted + s.filtered + s.in_progress as u64,
                "step {step}: {s:?}"
            );
            assert!(s.in_progress <= 4 && s.fetching <= 2, "{s:?}");
        }
        assert!(h.stats().stored > 0 && h.stats().given_up > 0 && h.stats().filtered > 0);
    }

    /// A torrent the content filter refused: out of `pending` (handed
    /// out like a given-up one), never fetched again in this run, not
    /// scraped.
    #[test]
    fn filtered_is_forgotten_and_never_fetched_again() {
        let mut h = small();
        let now = Instant::now();
        h.discover(infohash(3), Source::Announce, &[peer(1)], None);
        let f = h.poll_fetch().unwrap();
        h.note_value_node(
            &f.infohash,
            NodeInfo {
                id: infohash(9),
                addr: peer(9),
            },
        );
        h.fetch_done(&f.infohash, FetchOutcome::Filtered, now);
        assert_eq!(h.poll_given_up(), Some(infohash(3)));
        assert_eq!(h.poll_scrape(), None);
        assert_eq!(h.stats().filtered, 1);
        assert_eq!(h.stats().given_up, 0);
        assert_eq!(
            h.discover(infohash(3), Source::Announce, &[peer(2)], None),
            Discovered::Stored
        );
        assert!(h.poll_fetch().is_none());
    }

    /// The nodes that answered with values are the ones scraped, once the
    /// torrent is stored (at most `scrape_nodes`, each address once).
    #[test]
    fn stored_torrents_hand_out_their_value_nodes_for_a_scrape() {
        let mut h = small();
        let now = Instant::now();
        h.discover(infohash(4), Source::Sample, &[], None);
        let s = h.poll_search().unwrap();
        for n in [9u16, 9, 10, 11] {
            h.note_value_node(
                &s.infohash,
                NodeInfo {
                    id: infohash(n as u8),
                    addr: peer(n),
                },
            );
        }
        h.search_done(&s.infohash, &[peer(1)], now);
        let f = h.poll_fetch().unwrap();
        assert_eq!(h.poll_scrape(), None);
        h.fetch_done(&f.infohash, FetchOutcome::Stored, now);
        let (got, nodes) = h.poll_scrape().unwrap();
        assert_eq!(got, infohash(4));
        let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
        assert_eq!(addrs, vec![peer(9), peer(10)]);
    }

    #[test]
    fn stored_filter_is_the_source_of_truth() {
        let mut h = small();
        h.remember_stored(&infohash(8));
        assert_eq!(
            h.discover(infohash(8), Source::Announce, &[peer(1)], None),
            Discovered::Stored
        );
        assert_eq!(h.stored_insert(&infohash(8)), Insert::Known);
    }
}
