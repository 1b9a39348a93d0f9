//! The DHT node: a sans-IO state machine, one per shard.
//!
//! # Shape
//!
//! Like quinn-proto, a [`Node`] owns no socket, no clock and no thread.
//! Bytes and time go in through `handle_*` methods ([`Node::handle_datagram`],
//! [`Node::handle_shard_msg`], [`Node::handle_timeout`]); what must go out
//! comes back through `poll_*` methods ([`Node::poll_transmit`] for
//! datagrams, [`Node::poll_action`] for messages to other shards and
//! harvested infohashes, [`Node::poll_timeout`] for when to call back).
//! Randomness comes from a seeded [`crate::rng::Rng`], so a simulation of a
//! thousand nodes (`sim.rs`, tests only) replays exactly.
//!
//! # Ownership by keyspace
//!
//! The engine runs one node per core. Shard `s` of `n` owns slice `s` of the
//! machine's slice of the keyspace (`machine.part(s, n)`, see
//! [`crate::keyspace`]), and owning means three things:
//! * the remote nodes whose ids fall in the slice: the shard tracks them,
//!   walks them in id order and asks each for BEP 51 samples;
//! * the infohashes that fall in the slice: the shard's harvester
//!   ([`harvest`]) owns each one's life, from seen to stored or given up,
//!   and a bounded filter ([`dedup`]) remembers what is stored, so an
//!   infohash is fetched by one shard, with no locks, until it is stored;
//! * the find_node walks that fill the slice.
//!
//! Work is partitioned, not shared: two shards never sample the same node
//! for the same reason, never look up the same infohash, never emit the same
//! infohash.
//!
//! # Reply routing by transaction id
//!
//! All shards of a machine share one UDP port per bind address
//! (SO_REUSEPORT), and the kernel hashes each datagram to any of them. Our
//! transaction ids are 4 bytes, `[shard, identity, slot_hi, slot_lo]`
//! ([`crate::krpc::tid`]), so the shard that receives a reply reads byte 0
//! and, when it is another shard's, passes the raw bytes on as
//! [`ShardMsg::Reply`]; the origin shard matches the slot against the exact
//! endpoint (ip **and** port) it asked, so a guessed or replayed tid from
//! anywhere else matches nothing. No shared table, no lock, one mesh hop for
//! the replies that land on the wrong core.
//!
//! # One node to the outside: queries answered by their key's owner
//!
//! With one identity shared by all shards (`bep42`), a remote node must see
//! one consistent node whichever shard the kernel hashes its datagram to.
//! So a find_node, get_peers, announce_peer or sample_infohashes whose key
//! lies in another shard's slice is passed, raw, to that owner
//! ([`ShardMsg::Query`], after the receiving shard's per-IP admission), and
//! the owner answers from its own socket, bound to the same address:
//! * announces are stored at the infohash's owner, so get_peers `values`
//!   are the same from every source port;
//! * find_node is answered from the owner's dense table of the target's
//!   neighbourhood, as close as a single-table node's answer;
//! * every new infohash is offered to every shard's sample pool
//!   ([`ShardMsg::Offer`]), so `num` and the samples come from one set.
//!
//! Pings stay local. The price is a mesh hop and a copy for (n−1)/n of the
//! keyed queries. With `spread` identities (one id and port per shard) each
//! shard is its own node and nothing is forwarded
//! ([`NodeConfig::forward_queries`]). Harvesting is owner-only in both
//! modes: infohashes heard on the wrong shard go to the owner
//! ([`ShardMsg::Harvested`], [`ShardMsg::Sampled`]).
//!
//! # Harvesting: exploration and exploitation
//!
//! * **Passive**: the infohash of every get_peers we receive, and of every
//!   announce_peer whose token verifies, with the announcing peer.
//! * **Active**: mldht's keyspace traversal. The shard walks the nodes of
//!   its slice in id order, asking each one `sample_infohashes` and
//!   honouring each node's `interval` (and at least `min_resample`) before
//!   asking again. The target is the middle of the stretch between that
//!   node and the next one we know, so the reply's `nodes` fill exactly the
//!   gap the walk is about to cross (asking about the node's own id returns
//!   XOR-close nodes, which stop at prefix boundaries: the simulation lost
//!   whole regions that way).
//!   Every sample counts (magnetico read only the first correctly). For
//!   each new sample the owner sends get_peers to the node that returned it:
//!   it holds the peers, no lookup needed. Only if it has no `values` does
//!   an iterative lookup ([`lookup`]) run.
//! * **Filling the slice**: bootstrap from the configured addresses, then
//!   find_node walks into the slice, alternately at a random target and at
//!   the widest stretch of the slice where we know no node; out-of-slice
//!   nodes we hear of are verified with a find_node aimed at our slice.
//!   Stale confirmed nodes (15 minutes silent) are pinged, failing ones
//!   dropped, and the table is bounded (`max_nodes`; outside the slice,
//!   `max_out_per_bucket` per distance bucket).
//!
//! Outbound traffic is in three tiers ([`limiter::Tier`]): exploitation
//! (get_peers to a holder, lookups) may drain the budget; answering others
//! keeps a small reserve; exploration (sampling, walks, pings) uses only
//! what is above half the burst. When the budget is short, exploration is
//! what stops (bitmagnet/magnetico report large gains from this). Lookups
//! for infohashes seen only in someone's get_peers count as exploration:
//! anyone can send get_peers for random infohashes, and each lookup costs up
//! to 24 datagrams to third parties.
//!
//! Each infohash's life, from seen to stored or given up, belongs to the
//! owner shard's [`harvest::Harvester`]: it asks the node for peer searches
//! and the runtime for fetches ([`Action::Fetch`], reported back through
//! [`Node::handle_fetch_result`]), retries with backoff, and lets a peer
//! arriving from anywhere wake an infohash that waits. Budget and per-IP
//! limits are checked before a query is built; a search or a holder query
//! that meets them waits for a later tick instead of failing.
//!
//! # Hygiene (and where the rules come from)
//!
//! * Never amplify (libtorrent `node.cpp`, SF-DRDoS): no reply to garbage,
//!   to packets failing decode, to responses or errors, to unknown tids.
//!   Responses stay under 1500 bytes (the encoder caps). A per-shard packet
//!   and byte budget, and a per-remote-IP limit on what we send (the
//!   machine's per-IP rate split evenly over shards, so all shards together
//!   stay under it) and on what we accept (libtorrent's dos_blocker), both in
//!   a fixed-size table that millions of spoofed sources cannot grow.
//! * Routing (libtorrent `routing_table.cpp`, mldht): one table entry per
//!   IP; a node is confirmed only by answering our query from the exact
//!   endpoint with the expected id; a confirmed endpoint answering with a
//!   new id is evicted and its neighbourhood re-pinged (libtorrent PR #961);
//!   unsolicited packets never change the table's view of a known IP;
//!   `ro=1` senders are answered but not inserted (BEP 43).
//! * Addresses ([`addr`]): martian and bogon sources and destinations are
//!   dropped (jech/dht), private ranges unless `allow_private`; our own id
//!   from elsewhere (a reflector) and the zero id are dropped (jech, mldht);
//!   peers with port 0 or 1 are dropped from `values` (libtorrent #2284).
//! * Tokens ([`crate::krpc::token`]): bound to the sender's IP and the
//!   infohash, keyed, valid for the current and the previous rotation. A bad,
//!   foreign or expired token, or a bad port, gets error 203 and stores
//!   nothing.

pub mod addr;
pub mod dedup;
pub mod harvest;
pub mod limiter;
pub mod lookup;
mod node;
pub mod peers;
pub mod table;
pub mod vote;

#[cfg(test)]
mod deadline_tests;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub use node::{IpLimits, Node};

use crate::id::Id;
use crate::keyspace::Slice;
use crate::krpc::NodeInfo;

/// One bind address and the node id used on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// The bound address (shared by all shards through SO_REUSEPORT in the
    /// `bep42` identity mode; one per shard in `spread`).
    pub addr: SocketAddr,
    /// The node id on that address (stable across restarts).
    pub id: Id,
}

pub use crate::source::Source;

/// A message between shards of one machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardMsg {
    /// A reply whose tid names the receiving shard, delivered to another.
    Reply {
        /// The identity (socket) it arrived on.
        identity: u8,
        /// Its source.
        from: SocketAddr,
        /// The datagram.
        bytes: Vec<u8>,
    },
    /// An infohash seen passively by a shard that does not own it.
    Harvested {
        /// The infohash.
        infohash: Id,
        /// How it was seen.
        source: Source,
        /// Peers that came with it (an announce's peer).
        peers: Vec<SocketAddr>,
    },
    /// A BEP 51 sample whose infohash another shard owns, with the node that
    /// returned it (which holds its peers).
    Sampled {
        /// The infohash.
        infohash: Id,
        /// The node that sampled it.
        holder: NodeInfo,
    },
    /// A node whose id lies in another shard's slice, heard of here: the
    /// owner tracks and samples it. Without this a node that only ever
    /// talks to the wrong shard (the kernel hashes its ip:port there) would
    /// never be sampled.
    Node {
        /// The node.
        node: NodeInfo,
    },
    /// A uTP datagram for a connection another shard opened (the kernel
    /// hashed the peer's address to this shard's socket); the connection
    /// id names the owner ([`crate::fetch::UtpMux`]). Handled by the
    /// engine, not the node.
    Utp {
        /// The identity (socket) it arrived on.
        identity: u8,
        /// Its source.
        from: SocketAddr,
        /// The datagram.
        bytes: Vec<u8>,
    },
    /// A query about a key this shard does not own, for the owner to
    /// answer from its own socket on the same address (one node to the
    /// outside; only when identities are shared, `forward_queries`).
    Query {
        /// The identity (socket) it arrived on.
        identity: u8,
        /// Its source.
        from: SocketAddr,
        /// The datagram.
        bytes: Vec<u8>,
    },
    /// A new infohash for every shard's BEP 51 sample pool, so that
    /// `sample_infohashes` answers agree whichever shard gives them.
    Offer {
        /// The infohash.
        infohash: Id,
    },
    /// The voting shard moved `identity` to a new (BEP 42) id: every shard
    /// uses it from now on (shared identities move together).
    Rekey {
        /// The identity (bind address) index.
        identity: u8,
        /// Its new id.
        id: Id,
    },
}

/// Something for the runtime to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Deliver `msg` to shard `shard`.
    ToShard {
        /// The destination shard.
        shard: u8,
        /// The message.
        msg: ShardMsg,
    },
    /// An infohash owned by this shard, for the store's pending table: once
    /// per infohash life when taken in, and at each announce or sample
    /// sighting while the harvester is too full to take it in.
    Discovered {
        /// The infohash.
        infohash: Id,
        /// How it was first seen.
        source: Source,
    },
    /// Fetch this infohash's metadata from these peers, and report the
    /// outcome with [`Node::handle_fetch_result`] (once per try).
    Fetch {
        /// The infohash.
        infohash: Id,
        /// How it was first seen.
        source: Source,
        /// Its peers, untried ones first (never empty).
        peers: Vec<SocketAddr>,
    },
    /// The harvester gave up on this infohash (bounded tries): the store
    /// forgets it from its pending table.
    GaveUp {
        /// The infohash.
        infohash: Id,
    },
    /// A BEP 33 estimate for a torrent this shard stored: the merged
    /// filters of the nodes that answered its scrape.
    Scraped {
        /// The infohash.
        infohash: Id,
        /// Estimated seeders.
        seeders: u32,
        /// Estimated leechers.
        leechers: u32,
    },
    /// More peers for an infohash being fetched.
    MorePeers {
        /// The infohash.
        infohash: Id,
        /// The new peers.
        peers: Vec<SocketAddr>,
    },
    /// The external address of `identity` was voted to `external` and the
    /// node moved to `id`, a BEP 42 id for it (all shards do): save it, so
    /// that a restart begins with it.
    Rekeyed {
        /// The identity (bind address) index.
        identity: u8,
        /// The voted external address.
        external: IpAddr,
        /// The new id.
        id: Id,
    },
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The identity (socket) to send from.
    pub identity: u8,
    /// The destination.
    pub to: SocketAddr,
    /// The datagram; give the buffer back with [`Node::recycle`].
    pub bytes: Vec<u8>,
}

/// Why a [`NodeConfig`] is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No identity.
    #[error("a node needs at least one identity")]
    NoIdentity,
    /// More than 256 identities (the tid has one byte for it).
    #[error("at most 256 identities")]
    TooManyIdentities,
    /// `shard` not below `nr_shards`, or no shard.
    #[error("shard {shard} out of range for {nr_shards} shards")]
    Shard {
        /// The shard.
        shard: u8,
        /// The number of shards.
        nr_shards: u8,
    },
}

/// A node's configuration. [`NodeConfig::new`] gives working defaults.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This shard.
    pub shard: u8,
    /// Shards on this machine.
    pub nr_shards: u8,
    /// The machine's slice of the keyspace (the whole keyspace on one
    /// machine); this shard owns `machine_slice.part(shard, nr_shards)`.
    pub machine_slice: Slice,
    /// Bind addresses and their ids.
    pub identities: Vec<Identity>,
    /// Where to bootstrap from.
    pub bootstrap: Vec<SocketAddr>,
    /// Accept private and loopback addresses (tests, LANs).
    pub allow_private: bool,
    /// Set `ro=1` in our queries (BEP 43).
    pub read_only: bool,
    /// Crawl: sample the slice, harvest and emit infohashes. Off, the node
    /// is an ordinary DHT node (the simulation's population).
    pub crawl: bool,
    /// Table entries at most.
    pub max_nodes: usize,
    /// Table entries per distance bucket outside the slice.
    pub max_out_per_bucket: u16,
    /// This shard's share of the outbound packet budget, per second.
    pub max_pps: u32,
    /// This shard's share of the outbound byte budget, per second.
    pub max_bps: u64,
    /// Burst window of the budget.
    pub budget_window: Duration,
    /// Packets per second we may send to one remote IP, all shards together
    /// (each shard enforces `1/nr_shards` of it).
    pub per_ip_pps: u32,
    /// Burst of the above, all shards together.
    pub per_ip_burst: u32,
    /// Packets per second one remote IP may send us (this shard).
    pub inbound_per_ip_pps: u32,
    /// Burst of the above.
    pub inbound_per_ip_burst: u32,
    /// Slots of each per-IP limiter table (fixed memory).
    pub limiter_slots: usize,
    /// The `interval` we serve in BEP 51 replies, seconds (at most 21600).
    pub sample_interval: u32,
    /// The least time before asking a node for samples again, whatever its
    /// `interval` says. The node's own `interval` is what BEP 51 asks us to
    /// honour (libtorrent serves 21600 s, so on the real DHT this floor
    /// rarely binds); the floor only guards against nodes that say 0. One
    /// query a minute is far below any node's rate limit (libtorrent's
    /// dos_blocker: 5/s).
    pub min_resample: Duration,
    /// How long to wait for a reply.
    pub query_timeout: Duration,
    /// The pacing of work that waits (a queue held back by the budget, a
    /// sweep with nodes due): `handle_timeout` runs at most this often,
    /// and one tick after the last run while such work waits. An idle
    /// node sleeps until its next real deadline (see `Node::poll_timeout`).
    pub tick: Duration,
    /// How often a find_node walk into the slice starts.
    pub walk_interval: Duration,
    /// Queries in flight at most (at most 65536).
    pub max_inflight: usize,
    /// Exploration queries in flight at most.
    pub max_explore_inflight: usize,
    /// Lookups running at once at most.
    pub max_lookups: usize,
    /// The harvester's bounds and retry policy.
    pub harvest: harvest::HarvestConfig,
    /// Forward queries about keys another shard owns to that shard, which
    /// answers from its own socket (shards share identities: `bep42`).
    pub forward_queries: bool,
    /// Torrents in the announce store at most.
    pub max_torrents: usize,
    /// Peers per torrent at most.
    pub max_peers: usize,
    /// Infohashes in the BEP 51 sample pool.
    pub sample_pool: usize,
    /// Token rotation period (tokens live one to two periods).
    pub token_rotation: Duration,
    /// Seed of the node's RNG.
    pub seed: u64,
    /// Token master key (the same on all shards, so any shard verifies).
    pub token_key: [u8; 32],
    /// The `v` we send.
    pub version: Option<[u8; 4]>,
    /// Learn our external address from the `ip` of replies, by a vote, and
    /// move to a BEP 42 id for it ([`vote`]; `node/external_ip.rs`). Shard
    /// 0 votes and re-keys the others; the flag must be the same on all.
    pub external_ip: vote::VoteConfig,
    /// Prefer nodes whose ids are BEP 42-valid for their addresses in the
    /// table (libtorrent's `dht_prefer_verified_node_ids`, on there too):
    /// see [`table`].
    pub prefer_verified: bool,
    /// When the table is full, a newcomer inside the slice takes the place
    /// of a node whose samples are in (see [`table`]): the table becomes a
    /// moving window over a network larger than `max_nodes`.
    pub table_turnover: bool,
}

/// Routing-table entries a crawling shard keeps unless the operator says
/// otherwise (`--max-nodes`). The sweep samples only nodes it knows, so on
/// a network larger than the shards' tables together this bounds how much
/// of the keyspace a day's sweep covers (`tuning/runs/sim-scale-*.md`).
pub const DEFAULT_MAX_NODES: usize = 20_000;

impl NodeConfig {
    /// A small, ordinary (non-crawling) node for simulated populations:
    /// the simulation's and the load generator's DHT nodes. It answers like
    /// any good node, with small tables and no walks of its own.
    pub fn population(identity: Identity, seed: u64, token_key: [u8; 32]) -> Self {
        let mut cfg = NodeConfig::new(0, 1, vec![identity], seed, token_key);
        cfg.allow_private = true;
        cfg.crawl = false;
        cfg.max_nodes = 64;
        cfg.tick = Duration::from_secs(5);
        cfg.walk_interval = Duration::from_secs(1 << 20);
        cfg.limiter_slots = 64;
        cfg.sample_interval = 60;
        cfg.max_inflight = 64;
        cfg.harvest.stored_capacity = 16;
        cfg.max_pps = 1000;
        cfg.max_bps = 1 << 30;
        cfg
    }

    /// Defaults for shard `shard` of `nr_shards` on the whole keyspace.
    pub fn new(
        shard: u8,
        nr_shards: u8,
        identities: Vec<Identity>,
        seed: u64,
        token_key: [u8; 32],
    ) -> Self {
        NodeConfig {
            shard,
            nr_shards,
            machine_slice: Slice::full(),
            identities,
            bootstrap: Vec::new(),
            allow_private: false,
            read_only: false,
            crawl: true,
            max_nodes: DEFAULT_MAX_NODES,
            max_out_per_bucket: 8,
            max_pps: 2_000,
            max_bps: 2_000_000,
            budget_window: Duration::from_secs(1),
            per_ip_pps: 5,
            per_ip_burst: 10,
            inbound_per_ip_pps: 5,
            inbound_per_ip_burst: 50,
            limiter_slots: 1 << 16,
            sample_interval: 21_600,
            min_resample: Duration::from_secs(60),
            query_timeout: Duration::from_secs(3),
            tick: Duration::from_millis(100),
            walk_interval: Duration::from_secs(1),
            max_inflight: 8192,
            max_explore_inflight: 1024,
            max_lookups: 256,
            harvest: harvest::HarvestConfig::default(),
            forward_queries: false,
            max_torrents: 2_000,
            max_peers: 200,
            sample_pool: 4096,
            token_rotation: crate::krpc::token::ROTATION,
            seed,
            token_key,
            version: Some(*b"DH\x00\x01"),
            external_ip: vote::VoteConfig::default(),
            prefer_verified: true,
            table_turnover: true,
        }
    }

    /// The slice this shard owns.
    pub fn slice(&self) -> Slice {
        self.machine_slice
            .part(usize::from(self.shard), usize::from(self.nr_shards))
    }

    /// Lifts every rate limit of the node (per-IP in and out, the packet
    /// and byte budgets): for benchmarks and load tests on loopback, where
    /// a few source addresses carry all the load. Never for the real DHT.
    pub fn unthrottle(&mut self) {
        const A_LOT: u32 = 10_000_000;
        self.inbound_per_ip_pps = A_LOT;
        self.inbound_per_ip_burst = A_LOT;
        self.per_ip_pps = A_LOT;
        self.per_ip_burst = A_LOT;
        self.max_pps = A_LOT;
        self.max_bps = u64::from(A_LOT) * 1000;
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.identities.is_empty() {
            return Err(ConfigError::NoIdentity);
        }
        if self.identities.len() > 256 {
            return Err(ConfigError::TooManyIdentities);
        }
        if self.nr_shards == 0 || self.shard >= self.nr_shards {
            return Err(ConfigError::Shard {
                shard: self.shard,
                nr_shards: self.nr_shards,
            });
        }
        Ok(())
    }
}

/// Counters by query method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MethodCounts {
    /// ping.
    pub ping: u64,
    /// find_node.
    pub find_node: u64,
    /// get_peers.
    pub get_peers: u64,
    /// announce_peer.
    pub announce_peer: u64,
    /// sample_infohashes.
    pub sample_infohashes: u64,
    /// Anything else.
    pub other: u64,
}

/// Why packets were dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// Martian or bogon source.
    pub martian: u64,
    /// Failed to decode (no reply is ever sent for these).
    pub garbage: u64,
    /// A response or error with a tid that is not ours, or not in flight.
    pub unknown_tid: u64,
    /// A tid in flight but from another endpoint or identity.
    pub wrong_endpoint: u64,
    /// Over the inbound per-IP limit.
    pub per_ip_in: u64,
    /// Replies for another shard from a source that sent more of them than
    /// we could have asked it for (forged-reply floods), dropped before
    /// any copy.
    pub per_ip_replies: u64,
    /// Reply not sent: over the outbound per-IP limit.
    pub per_ip_out: u64,
    /// Reply not sent: over the shard's budget.
    pub budget: u64,
    /// Zero id.
    pub zero_id: u64,
    /// Our own id from someone else.
    pub own_id: u64,
    /// Not sent: no free transaction slot.
    pub inflight_full: u64,
    /// Infohash not in this machine's slice.
    pub foreign_key: u64,
    /// Infohash not taken in: the harvester's table is full of entries at
    /// least as good.
    pub harvest_full: u64,
}

/// Queries not built because a limit said "later" (the job waits; these
/// are not drops).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeferCounts {
    /// The destination IP's outbound share was used up.
    pub per_ip: u64,
    /// The shard's packet or byte budget for the query's tier was used up.
    pub budget: u64,
}

/// New infohashes by source (counted on the owner shard).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceCounts {
    /// BEP 51 samples.
    pub sample: u64,
    /// Passive get_peers.
    pub get_peers: u64,
    /// Valid announces.
    pub announce: u64,
}

/// BEP 33 scrapes of stored torrents (see `node/search.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrapeCounts {
    /// Scrapes started (one per stored torrent with a node to ask).
    pub started: u64,
    /// Not started: the table of scrapes in flight was full.
    pub skipped: u64,
    /// Scrape get_peers that came back with filters.
    pub answered: u64,
    /// Scrapes finished with an estimate ([`Action::Scraped`]).
    pub estimated: u64,
    /// Of those, a filter was saturated (the count is a lower bound).
    pub saturated: u64,
}

/// A node's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeStats {
    /// Datagrams received.
    pub packets_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Datagrams sent.
    pub packets_out: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Replies forwarded to their origin shard.
    pub forwarded_out: u64,
    /// Replies received from other shards.
    pub forwarded_in: u64,
    /// Queries handed to the shard owning their key.
    pub queries_forwarded_out: u64,
    /// Queries answered for another shard that received them.
    pub queries_forwarded_in: u64,
    /// Queries answered, by method.
    pub answered: MethodCounts,
    /// Error replies sent.
    pub errors_sent: u64,
    /// Queries sent, by method.
    pub queries_sent: MethodCounts,
    /// Replies matched to a query of ours.
    pub replies: u64,
    /// Queries that timed out.
    pub timeouts: u64,
    /// Drops, by reason.
    pub dropped: DropCounts,
    /// Queries deferred, by reason.
    pub deferred: DeferCounts,
    /// New infohashes, by source.
    pub infohashes: SourceCounts,
    /// Fetches handed out as [`Action::Fetch`].
    pub emitted: u64,
    /// BEP 51 samples received (each sample of each reply).
    pub samples_received: u64,
    /// Valid BEP 51 replies received (with or without samples).
    pub sample_replies: u64,
    /// Confirmed nodes whose id changed, evicted.
    pub evicted_id_change: u64,
    /// Our own id changed (a BEP 42 id for a newly voted external address).
    pub rekeys: u64,
    /// Table entries (candidates included).
    pub nodes_known: usize,
    /// Nodes that left the full table for a newcomer once their samples
    /// were in (turnover).
    pub table_turnovers: u64,
    /// Confirmed table entries.
    pub nodes_confirmed: usize,
    /// Infohashes in the harvester's stored filter.
    pub dedup_len: usize,
    /// Heap bytes per remembered infohash.
    pub bytes_per_infohash: f64,
    /// Lookups started.
    pub lookups: u64,
    /// Torrents in the announce store.
    pub torrents: usize,
    /// BEP 33 scrapes of stored torrents.
    pub scrapes: ScrapeCounts,
    /// The harvester's counters (every infohash's life).
    pub harvest: harvest::HarvestStats,
}
