//! The node state machine (see the module docs of [`crate::dht`]).
//!
//! A [`Node`] is split, as quinn-proto's `Connection` is, into owned
//! sub-states and groups of methods, each in its own file:
//! * [`inflight`]: the transaction table (queries in flight by tid slot);
//! * [`responder`]: answering others' queries (admission, forwarding to
//!   the key's owner, answers, errors);
//! * [`search`]: peer searches for the harvester (holder queries,
//!   lookups) and its fetch requests; the infohashes' life itself is the
//!   [`Harvester`]'s (`super::harvest`);
//! * [`maintain`]: bootstrap, the sample sweep, walks, verification and
//!   re-pings; [`sweep`]: the sweep's cursor and when it next has work;
//! * [`external_ip`]: the vote on our external address and the move to a
//!   BEP 42 id for it;
//! * [`replies`]: replies to our own queries (responses, errors, timeouts);
//! * this file: the public surface (`handle_*`, `poll_*`), inbound
//!   dispatch and reply matching, and sending.
//!
//! This file is about 870 lines: the public surface, the inbound dispatch
//! and sending all work on the transaction table, the limits and the
//! routing table together, and read best side by side.

mod external_ip;
mod inflight;
mod maintain;
mod replies;
mod responder;
mod search;
mod sweep;

use inflight::{Inflight, Kind, Pending};

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::addr::{is_martian, is_valid_peer};
use super::harvest::{Discovered, FetchOutcome, Harvester};
use super::limiter::{Budget, IpLimit, Tier};
use super::lookup::Lookup;
use super::peers::{PeerStore, SamplePool};
use super::table::Table;
use super::{Action, NodeConfig, NodeStats, ShardMsg, Source, Transmit};
use crate::id::Id;
use crate::keyspace::Slice;
use crate::krpc::message::{
    encode_error, encode_query, encode_response, ErrorCode, Header, Response, ResponseBody,
};
use crate::krpc::scrape::ScrapeBloom;
use crate::krpc::tid::Tid;
use crate::krpc::token::TokenSecrets;
use crate::krpc::{decode, Body, KrpcError, Message, Method, NodeInfo, Query, Want};
use crate::rng::Rng;

/// Buffers kept for reuse.
const MAX_POOLED_BUFFERS: usize = 256;
/// Outstanding get_peers-to-holder jobs at most.
const MAX_EXPLOIT_QUEUE: usize = 65_536;
/// Peer searches queued in the node (holder queries plus lookups waiting
/// for a lookup slot) at most; the rest wait in the harvester.
const SEARCH_BACKLOG: usize = 1024;
/// Out-of-slice candidates waiting for verification at most.
const MAX_VERIFY_QUEUE: usize = 4096;
/// Nodes waiting for a re-ping at most.
const MAX_REPING_QUEUE: usize = 1024;
/// How long a get_peers-to-holder job may wait before a lookup replaces it.
const EXPLOIT_MAX_WAIT: Duration = Duration::from_secs(60);
/// Bootstrap again when fewer confirmed nodes than this.
const MIN_CONFIRMED: usize = 8;
/// Time between bootstrap rounds.
const BOOTSTRAP_INTERVAL: Duration = Duration::from_secs(10);
/// A node that has not answered for this long is pinged (BEP 5: 15 min).
const STALE: Duration = Duration::from_secs(15 * 60);
/// Node ids remembered as already forwarded to their owner shard.
const MAX_FORWARDED_NODES: usize = 4096;
/// Re-ask a node whose sample_infohashes went unanswered after this.
const SAMPLE_UNANSWERED_RETRY: Duration = Duration::from_secs(30);
/// Re-ask a node whose sample_infohashes failed or errored after this.
const SAMPLE_RETRY: Duration = Duration::from_secs(6 * 3600);
/// Entries looked at per window by the sweep, and (an eighth of it) at
/// least per refresh pass.
const SCAN_PER_TICK: usize = 512;
/// Time between passes of the stale-node refresh: a pass scans enough of
/// the table to go round it in half of [`STALE`].
const REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// Time between checks of the external-address votes' expiry.
const EXTERNAL_INTERVAL: Duration = Duration::from_secs(10);
/// Gaps remembered as recently walked into.
const RECENT_GAPS: usize = 16;
/// A query's size for the budget's admission check (get_peers with a
/// 4-byte tid and a version is about 100 bytes).
const QUERY_SIZE_ESTIMATE: usize = 128;
/// Nodes in find_node answers (per family).
const K: usize = 8;

/// Why a query was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum SendError {
    #[error("martian destination")]
    Martian,
    #[error("no identity of the destination's family")]
    NoIdentity,
    #[error("per-IP limit")]
    PerIp,
    #[error("budget")]
    Budget,
    #[error("no free transaction slot")]
    InflightFull,
}

#[derive(Debug, Clone, Copy)]
enum Answered {
    Ping,
    FindNode,
    GetPeers,
    AnnouncePeer,
    SampleInfohashes,
    Other,
}

/// A scrape in flight: the filters merged so far.
#[derive(Debug)]
struct ScrapeJob {
    seeds: ScrapeBloom,
    peers: ScrapeBloom,
    outstanding: u8,
    answered: u8,
}

/// Scrapes in flight at most (each up to `scrape_nodes` queries).
const MAX_SCRAPES: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct ExploitJob {
    infohash: Id,
    holder: NodeInfo,
    since: Instant,
}

/// One shard's DHT node (see the module docs of [`crate::dht`]).
#[derive(Debug)]
pub struct Node {
    cfg: NodeConfig,
    slice: Slice,
    rng: Rng,
    tokens: TokenSecrets,
    table: Table,
    inflight: Inflight,
    budget: Budget,
    per_ip_out: IpLimit,
    per_ip_in: IpLimit,
    /// Replies routed to another shard, per source: no source can answer
    /// more queries than the per-IP rate lets us send it.
    per_ip_replies: IpLimit,
    store: PeerStore,
    pool: SamplePool,
    harvest: Harvester,
    /// Holder queries were queued since the last exploit pass.
    exploit_new: bool,
    exploit: VecDeque<ExploitJob>,
    lookups: HashMap<u32, Lookup>,
    lookup_queue: VecDeque<(Id, Vec<NodeInfo>)>,
    next_lookup: u32,
    scrapes: HashMap<Id, ScrapeJob>,
    verify: VecDeque<Id>,
    reping: VecDeque<NodeInfo>,
    transmits: VecDeque<Transmit>,
    actions: VecDeque<Action>,
    buffers: Vec<Vec<u8>>,
    scratch_nodes: Vec<NodeInfo>,
    scratch_peers: Vec<SocketAddr>,
    scratch_ids: Vec<Id>,
    stats: NodeStats,
    /// When `handle_timeout` last ran: work it left undone (a queue held
    /// back by the budget, a due sweep) is retried one tick later.
    last_pump: Instant,
    next_bootstrap: Instant,
    next_walk: Instant,
    next_expire: Instant,
    next_refresh: Instant,
    next_external: Instant,
    sweep: sweep::Sweep,
    /// Ids of nodes recently handed to their owner shard.
    forwarded_nodes: std::collections::HashSet<Id>,
    refresh_cursor: Id,
    walks: u64,
    recent_gaps: Vec<u64>,
    external: external_ip::ExternalIp,
}

fn want_families(want: Want, from: &SocketAddr) -> (bool, bool) {
    if want.is_specified() {
        (want.n4, want.n6)
    } else {
        (from.is_ipv4(), from.is_ipv6())
    }
}

fn count(c: &mut u64) {
    *c = c.saturating_add(1);
}

/// The node's three per-IP limits: queries it answers (inbound), packets
/// it sends to one address (outbound), and replies it routes to another
/// shard (at most twice what it may ask one address: more are forged).
#[derive(Debug, Clone)]
pub struct IpLimits {
    /// Queries from one source.
    pub inbound: IpLimit,
    /// Packets to one destination.
    pub outbound: IpLimit,
    /// Replies routed to another shard, per source.
    pub replies: IpLimit,
}

impl IpLimits {
    /// Tables of the node's own, from `cfg`.
    pub fn local(cfg: &NodeConfig, now: Instant) -> Self {
        let (i, o, r) = Self::rates(cfg);
        IpLimits {
            inbound: IpLimit::local(cfg.limiter_slots, i.0, i.1, now),
            outbound: IpLimit::local(cfg.limiter_slots, o.0, o.1, now),
            replies: IpLimit::local(cfg.limiter_slots, r.0, r.1, now),
        }
    }

    /// Tables every shard shares (build once, hand a clone to each node's
    /// [`Node::share_ip_limits`]): a source that the kernel spreads over
    /// the shards, or that several shards talk to, gets one limit in all.
    pub fn shared(cfg: &NodeConfig, now: Instant) -> Self {
        let (i, o, r) = Self::rates(cfg);
        let s = |(rate, burst): (u32, u32)| {
            IpLimit::Shared(IpLimit::shared(cfg.limiter_slots, rate, burst, now))
        };
        IpLimits {
            inbound: s(i),
            outbound: s(o),
            replies: s(r),
        }
    }

    /// (rate, burst) of inbound, outbound and routed replies.
    #[allow(clippy::type_complexity)]
    fn rates(cfg: &NodeConfig) -> ((u32, u32), (u32, u32), (u32, u32)) {
        (
            (cfg.inbound_per_ip_pps, cfg.inbound_per_ip_burst),
            (cfg.per_ip_pps, cfg.per_ip_burst),
            (
                cfg.per_ip_pps.saturating_mul(2),
                cfg.per_ip_burst.saturating_mul(2).max(1),
            ),
        )
    }
}

impl Node {
    /// A node for `cfg`, starting at `now`. All shards of a machine should be
    /// created with the same `now` and `token_key`, so that their token epochs
    /// agree.
    pub fn new(cfg: NodeConfig, now: Instant) -> Node {
        let mut rng = Rng::seed_from_u64(cfg.seed);
        let key = |rng: &mut Rng| (rng.next_u64(), rng.next_u64());
        let slice = cfg.slice();
        let limits = IpLimits::local(&cfg, now);
        let harvest = Harvester::new(cfg.harvest, key(&mut rng));
        let sweep_cursor = slice.random_id(&mut rng);
        let mut table = Table::new(slice, cfg.max_nodes, cfg.max_out_per_bucket);
        table.set_prefer_verified(cfg.prefer_verified);
        table.set_turnover(cfg.table_turnover);
        Node {
            slice,
            tokens: TokenSecrets::with_period(cfg.token_key, now, cfg.token_rotation),
            table,
            inflight: Inflight::new(cfg.max_inflight),
            budget: Budget::new(u64::from(cfg.max_pps), cfg.max_bps, cfg.budget_window, now),
            per_ip_out: limits.outbound,
            per_ip_in: limits.inbound,
            per_ip_replies: limits.replies,
            store: PeerStore::new(cfg.max_torrents, cfg.max_peers),
            pool: SamplePool::new(cfg.sample_pool),
            harvest,
            exploit_new: false,
            exploit: VecDeque::new(),
            lookups: HashMap::new(),
            lookup_queue: VecDeque::new(),
            next_lookup: 0,
            scrapes: HashMap::new(),
            verify: VecDeque::new(),
            reping: VecDeque::new(),
            transmits: VecDeque::new(),
            actions: VecDeque::new(),
            buffers: Vec::new(),
            scratch_nodes: Vec::new(),
            scratch_peers: Vec::new(),
            scratch_ids: Vec::new(),
            stats: NodeStats::default(),
            last_pump: now,
            next_bootstrap: now,
            next_walk: now + cfg.walk_interval,
            next_expire: now + Duration::from_secs(60),
            next_refresh: now,
            next_external: now,
            sweep: sweep::Sweep::new(sweep_cursor),
            forwarded_nodes: std::collections::HashSet::new(),
            refresh_cursor: slice.first(),
            walks: 0,
            recent_gaps: Vec::new(),
            external: external_ip::ExternalIp::new(&cfg),
            rng,
            cfg,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    // ------------------------------------------------------------------
    // Public surface.

    /// A datagram arrived on `identity` from `from`.
    pub fn handle_datagram(&mut self, identity: u8, from: SocketAddr, data: &[u8], now: Instant) {
        count(&mut self.stats.packets_in);
        self.stats.bytes_in = self.stats.bytes_in.saturating_add(data.len() as u64);
        if is_martian(&from, self.cfg.allow_private) {
            count(&mut self.stats.dropped.martian);
            return;
        }
        if self.cfg.nr_shards > 1 && self.route_reply(identity, from, data, now) {
            return;
        }
        self.process(identity, from, data, now, false);
        self.flush_exploit(now);
    }

    /// Sends the holder queries made while handling one input, in one pass
    /// (a reply of 20 samples makes 20 of them).
    fn flush_exploit(&mut self, now: Instant) {
        if std::mem::take(&mut self.exploit_new) {
            self.pump_exploit(now);
        }
    }

    /// A message from another shard.
    pub fn handle_shard_msg(&mut self, msg: ShardMsg, now: Instant) {
        let is_reply = matches!(msg, ShardMsg::Reply { .. });
        match msg {
            // A datagram another shard received for us: a reply to one of
            // our queries, or a query about a key we own.
            ShardMsg::Reply {
                identity,
                from,
                bytes,
            }
            | ShardMsg::Query {
                identity,
                from,
                bytes,
            } => {
                count(if is_reply {
                    &mut self.stats.forwarded_in
                } else {
                    &mut self.stats.queries_forwarded_in
                });
                self.process(identity, from, &bytes, now, true);
                self.recycle(bytes);
            }
            ShardMsg::Harvested {
                infohash,
                source,
                peers,
            } => {
                if self.owner(&infohash) == Some(self.cfg.shard) {
                    self.discover(infohash, source, peers, None, now);
                }
            }
            ShardMsg::Sampled { infohash, holder } => {
                if self.owner(&infohash) == Some(self.cfg.shard) {
                    self.discover(infohash, Source::Sample, Vec::new(), Some(holder), now);
                }
            }
            ShardMsg::Node { node } => {
                if self.owner(&node.id) == Some(self.cfg.shard) {
                    self.add_candidate(node, now);
                }
            }
            ShardMsg::Offer { infohash } => self.pool.offer(infohash, &mut self.rng),
            ShardMsg::Rekey { identity, id } => self.rekey(identity, id),
            // The engine hands these to its uTP multiplexer; one that
            // reaches the node (uTP off on this shard) is dropped.
            ShardMsg::Utp { bytes, .. } => self.recycle(bytes),
        }
        self.flush_exploit(now);
    }

    /// The fetch pool reports how a fetch of `infohash` ended.
    pub fn handle_fetch_result(&mut self, infohash: Id, outcome: FetchOutcome, now: Instant) {
        self.harvest.fetch_done(&infohash, outcome, now);
        self.drive_harvest(now);
        self.flush_exploit(now);
    }

    /// Marks `infohash` as already stored (loaded from the database at start): it
    /// is never fetched again.
    pub fn remember_stored(&mut self, infohash: &Id) {
        self.harvest.remember_stored(infohash);
    }

    /// The harvester's counters.
    pub fn harvest_stats(&self) -> super::harvest::HarvestStats {
        self.harvest.stats()
    }

    /// Time has passed: expire queries, maintain the table, crawl.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_pump = now;
        while let Some(p) = self.inflight.pop_expired(now) {
            count(&mut self.stats.timeouts);
            self.on_failure(p, now);
        }
        if now >= self.next_expire {
            self.store.expire(now);
            self.next_expire = now + Duration::from_secs(60);
        }
        self.harvest.handle_timeout(now);
        self.drive_harvest(now);
        self.exploit_new = false;
        self.pump_exploit(now);
        self.pump_lookups(now);
        self.pump_reping(now);
        self.pump_bootstrap(now);
        if self.cfg.crawl {
            self.pump_sweep(now);
        }
        self.pump_verify(now);
        self.pump_walk(now);
        if now >= self.next_refresh {
            self.next_refresh = now + REFRESH_INTERVAL;
            self.pump_refresh(now);
        }
        if now >= self.next_external || self.external.refresh_pending() {
            self.next_external = now + EXTERNAL_INTERVAL;
            self.pump_external(now);
        }
    }

    /// When [`Node::handle_timeout`] wants to be called: the earliest real
    /// deadline (a query's timeout, a harvester's wait, the next walk,
    /// bootstrap, refresh or expiry, the sweep's next due node), and one
    /// tick after the last call while work waits (a queue held back by the
    /// budget or the per-IP limits). Deadlines are coalesced to at most one
    /// call per tick: a timeout fires up to a tick late, as a DHT allows,
    /// rather than waking the shard once per query sent.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let pacing = self.last_pump + self.cfg.tick;
        let backlog = !self.exploit.is_empty()
            || !self.lookups.is_empty()
            || !self.lookup_queue.is_empty()
            || !self.reping.is_empty()
            || !self.verify.is_empty()
            || self.external.refresh_pending()
            || (self.cfg.crawl && self.sweep.active());
        let bootstrap = (self.table.confirmed_len() < MIN_CONFIRMED
            && !self.cfg.bootstrap.is_empty())
        .then_some(self.next_bootstrap);
        let walk = (!self.table.is_empty()).then_some(self.next_walk);
        let sweep = if self.cfg.crawl {
            self.sweep.wake(self.table.generation(), self.cfg.tick)
        } else {
            None
        };
        [
            backlog.then_some(pacing),
            self.inflight.next_expiry(),
            self.harvest.poll_timeout(),
            Some(self.next_expire),
            Some(self.next_refresh),
            Some(self.next_external),
            bootstrap,
            walk,
            sweep,
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|t| t.max(pacing))
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next action for the runtime.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Gives a transmitted buffer back for reuse.
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.buffers.len() < MAX_POOLED_BUFFERS && buf.capacity() >= 256 {
            buf.clear();
            self.buffers.push(buf);
        }
    }

    /// Counters.
    pub fn stats(&self) -> NodeStats {
        let mut s = self.stats.clone();
        s.nodes_known = self.table.len();
        s.table_turnovers = self.table.turned_over();
        s.nodes_confirmed = self.table.confirmed_len();
        s.dedup_len = self.harvest.stored_filter().len();
        s.bytes_per_infohash = self.harvest.stored_filter().bytes_per_infohash();
        s.torrents = self.store.len();
        s.harvest = self.harvest.stats();
        s
    }

    /// Uses per-IP tables shared with the other shards from now on, so each
    /// limit holds for the process (see [`IpLimits::shared`]).
    pub fn share_ip_limits(&mut self, limits: &IpLimits) {
        self.per_ip_out = limits.outbound.clone();
        self.per_ip_in = limits.inbound.clone();
        self.per_ip_replies = limits.replies.clone();
    }

    /// Packets asked of the outbound budget since the last call (sent or
    /// refused): this shard's demand, for a global budget that lends.
    pub fn take_budget_demand(&mut self) -> u64 {
        self.budget.take_demand()
    }

    /// Sets the outbound packet rate to `pps` (this shard's current share
    /// of a global budget); bytes follow at the configured bytes/packet.
    pub fn set_budget_share(&mut self, pps: u64, now: Instant) {
        self.budget.set_share(now, pps);
    }

    /// The outbound packet rate now.
    pub fn budget_pps(&self) -> u64 {
        self.budget.pps()
    }

    /// Every infohash taken in and not yet stored or given up, with how it
    /// was first seen (saved as pending when the crawler stops).
    pub fn unfinished(&self) -> impl Iterator<Item = (Id, Source)> + '_ {
        self.harvest.unfinished()
    }

    /// Confirmed nodes, to persist across restarts.
    pub fn known_nodes(&self) -> impl Iterator<Item = NodeInfo> + '_ {
        self.table.known()
    }

    /// Restores a node saved from [`Node::known_nodes`]: trusted as
    /// confirmed, dropped after failing like any other. Returns whether it
    /// was inserted (one per IP, table bounds).
    pub fn add_known_node(&mut self, node: NodeInfo, now: Instant) -> bool {
        if !self.acceptable_node(&node) {
            return false;
        }
        self.table.confirm(node, now)
    }

    /// Whether the table holds `id` (confirmed or candidate), and where.
    pub fn table_entry(&self, id: &Id) -> Option<(SocketAddr, bool)> {
        self.table.get(id).map(|e| (e.addr, e.confirmed))
    }

    /// The peers the announce store holds for `infohash`.
    pub fn stored_peers(&self, infohash: &Id) -> Vec<SocketAddr> {
        let mut v = Vec::new();
        self.store.peers(infohash, &mut v);
        v
    }

    /// Resumes an infohash found in an earlier run but never fetched: it is
    /// taken in like a fresh discovery and its peers are looked up.
    pub fn resume(&mut self, infohash: Id, source: Source, now: Instant) {
        self.harvest(infohash, source, Vec::new(), None, now);
        self.drive_harvest(now);
        self.flush_exploit(now);
    }

    /// Stores `peer` for `infohash` as if it had announced, as a seed or not
    /// (BEP 33), and offers `infohash` to the BEP 51 sample pool. For
    /// simulations that build a swarm directly.
    pub fn seed_peer(&mut self, infohash: Id, peer: SocketAddr, seed: bool, now: Instant) {
        // Offered once per torrent, as for a real announce: a pool holding
        // an infohash once per peer would sample fewer distinct torrents.
        let new_torrent = !self.store.contains(&infohash);
        if self.store.announce(infohash, peer, seed, now) && new_torrent {
            self.pool.offer(infohash, &mut self.rng);
        }
    }

    /// Queries in flight.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    // ------------------------------------------------------------------
    // Inbound.

    fn owner(&self, id: &Id) -> Option<u8> {
        self.cfg
            .machine_slice
            .part_of(id, usize::from(self.cfg.nr_shards))
            .and_then(|s| u8::try_from(s).ok())
    }

    fn is_own_id(&self, id: &Id) -> bool {
        self.cfg.identities.iter().any(|i| i.id == *id) || self.external.was_ours(id)
    }

    fn acceptable_node(&self, n: &NodeInfo) -> bool {
        n.id != Id::ZERO && !self.is_own_id(&n.id) && !is_martian(&n.addr, self.cfg.allow_private)
    }

    fn process(&mut self, identity: u8, from: SocketAddr, data: &[u8], now: Instant, fwd: bool) {
        let msg = match decode(data) {
            Ok(m) => m,
            Err(KrpcError::BadQuery { tid, code, message }) => {
                if !fwd {
                    self.bad_query(identity, from, tid, code, message, now);
                } else {
                    count(&mut self.stats.dropped.garbage);
                }
                return;
            }
            Err(KrpcError::BadResponse { tid }) => {
                // A response without an id counts as a failed transaction.
                if let Some(p) = self.match_reply(identity, from, tid) {
                    self.on_failure(p, now);
                }
                return;
            }
            Err(_) => {
                count(&mut self.stats.dropped.garbage);
                return;
            }
        };
        match msg.body {
            Body::Query(q) => self.handle_query(identity, from, &msg, &q, data, fwd, now),
            Body::Response(r) => {
                if let Some(p) = self.match_reply(identity, from, msg.tid) {
                    self.on_reported_ip(identity, from, msg.ip, now);
                    self.on_response(p, from, &r, now);
                }
            }
            Body::Error(_) => {
                if let Some(p) = self.match_reply(identity, from, msg.tid) {
                    self.on_error(p, now);
                }
            }
        }
    }

    /// A reply whose transaction id names another shard goes there, found
    /// from the `t` and `y` keys alone (no decode) and admitted by the
    /// per-source reply limit before it is copied. Returns whether the
    /// datagram was dealt with here.
    fn route_reply(&mut self, identity: u8, from: SocketAddr, data: &[u8], now: Instant) -> bool {
        let Some(t) = crate::krpc::raw::reply_tid(data).and_then(Tid::from_bytes) else {
            return false;
        };
        if t.shard == self.cfg.shard {
            return false;
        }
        if t.shard >= self.cfg.nr_shards {
            count(&mut self.stats.dropped.unknown_tid);
        } else if !self.per_ip_replies.check(now, from.ip()) {
            count(&mut self.stats.dropped.per_ip_replies);
        } else {
            count(&mut self.stats.forwarded_out);
            let mut bytes = self.buffer();
            bytes.extend_from_slice(data);
            self.actions.push_back(Action::ToShard {
                shard: t.shard,
                msg: ShardMsg::Reply {
                    identity,
                    from,
                    bytes,
                },
            });
        }
        true
    }

    /// Finds (and removes) the transaction a reply answers. Replies for
    /// other shards were routed before decoding (`route_reply`).
    fn match_reply(&mut self, identity: u8, from: SocketAddr, tid: &[u8]) -> Option<Pending> {
        let Some(t) = Tid::from_bytes(tid) else {
            count(&mut self.stats.dropped.unknown_tid);
            return None;
        };
        if t.shard != self.cfg.shard {
            count(&mut self.stats.dropped.unknown_tid);
            return None;
        }
        let Some(p) = self.inflight.get(t.slot) else {
            count(&mut self.stats.dropped.unknown_tid);
            return None;
        };
        // Tid AND exact endpoint AND the socket it was sent from.
        if p.to != from || p.identity != t.identity || t.identity != identity {
            count(&mut self.stats.dropped.wrong_endpoint);
            return None;
        }
        count(&mut self.stats.replies);
        self.inflight.remove(t.slot)
    }

    fn push_transmit(&mut self, identity: u8, to: SocketAddr, bytes: Vec<u8>) {
        count(&mut self.stats.packets_out);
        self.stats.bytes_out = self.stats.bytes_out.saturating_add(bytes.len() as u64);
        self.transmits.push_back(Transmit {
            identity,
            to,
            bytes,
        });
    }

    fn buffer(&mut self) -> Vec<u8> {
        self.buffers
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(1500))
    }

    fn our_id(&self, identity: u8) -> Option<Id> {
        self.cfg.identities.get(usize::from(identity)).map(|i| i.id)
    }

    fn add_candidate(&mut self, node: NodeInfo, now: Instant) {
        if !self.acceptable_node(&node) {
            return;
        }
        if self.cfg.crawl {
            if let Some(owner) = self.owner(&node.id).filter(|o| *o != self.cfg.shard) {
                // Forward once in a while per node: a small set of recently
                // forwarded ids, forgotten wholesale when full.
                if self.forwarded_nodes.len() >= MAX_FORWARDED_NODES {
                    self.forwarded_nodes.clear();
                }
                if self.forwarded_nodes.insert(node.id) {
                    self.actions.push_back(Action::ToShard {
                        shard: owner,
                        msg: ShardMsg::Node { node },
                    });
                }
            }
        }
        if self.table.insert_candidate(node, now)
            && !self.table.in_slice(&node.id)
            && self.verify.len() < MAX_VERIFY_QUEUE
        {
            self.verify.push_back(node.id);
        }
    }

    fn add_nodes_from(&mut self, r: &Response<'_>, now: Instant) {
        for n in r.nodes.iter().chain(r.nodes6.iter()) {
            self.add_candidate(n, now);
        }
    }

    // ------------------------------------------------------------------
    // Outbound queries.

    fn identity_for(&self, to: &SocketAddr) -> Option<u8> {
        // Stable per remote IP: a remote always sees the same id from us.
        let fam: Vec<usize> = self
            .cfg
            .identities
            .iter()
            .enumerate()
            .filter(|(_, i)| i.addr.is_ipv4() == to.is_ipv4())
            .map(|(n, _)| n)
            .collect();
        if fam.is_empty() {
            return None;
        }
        let h = match to.ip() {
            IpAddr::V4(v4) => u64::from(u32::from(v4)),
            IpAddr::V6(v6) => (u128::from(v6) >> 64) as u64,
        };
        let pick = (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize % fam.len();
        fam.get(pick).and_then(|&n| u8::try_from(n).ok())
    }

    /// BEP 32 `want` for our queries: both families when both are bound
    /// (we can use either kind of node), nothing otherwise (the responder's
    /// default, our own family, is what we can use).
    /// A find_node for `target` to `addr` (its id when known) at the
    /// exploration tier: the table's upkeep (bootstrap, verification,
    /// walks, the refresh after a new id).
    fn explore_find_node(
        &mut self,
        addr: SocketAddr,
        id: Option<Id>,
        target: Id,
        now: Instant,
    ) -> Result<(), SendError> {
        let m = Method::FindNode { target };
        self.send_query(addr, id, Kind::FindNode, &m, Tier::Explore, now)
    }

    fn query_want(&self) -> Want {
        let ids = &self.cfg.identities;
        let both = ids.iter().any(|i| i.addr.is_ipv4()) && ids.iter().any(|i| i.addr.is_ipv6());
        Want { n4: both, n6: both }
    }

    fn send_query(
        &mut self,
        to: SocketAddr,
        expected: Option<Id>,
        kind: Kind,
        method: &Method<'_>,
        tier: Tier,
        now: Instant,
    ) -> Result<(), SendError> {
        if is_martian(&to, self.cfg.allow_private) {
            return Err(SendError::Martian);
        }
        let identity = self.identity_for(&to).ok_or(SendError::NoIdentity)?;
        let our_id = self.our_id(identity).ok_or(SendError::NoIdentity)?;
        // Admission before any work: a query the limits would refuse is
        // never built (callers keep the job and retry on a later tick).
        if !self.budget.can_send(now, QUERY_SIZE_ESTIMATE, tier) {
            count(&mut self.stats.deferred.budget);
            return Err(SendError::Budget);
        }
        if !self.per_ip_out.check(now, to.ip()) {
            count(&mut self.stats.deferred.per_ip);
            return Err(SendError::PerIp);
        }
        let Some(slot) = self.inflight.reserve() else {
            count(&mut self.stats.dropped.inflight_full);
            return Err(SendError::InflightFull);
        };
        let tid = Tid {
            shard: self.cfg.shard,
            identity,
            slot,
        }
        .to_bytes();
        let mut buf = self.buffer();
        let version = self.cfg.version;
        encode_query(
            &mut buf,
            &Header {
                tid: &tid,
                version: version.as_ref().map(|v| &v[..]),
            },
            &our_id,
            method,
            self.query_want(),
            self.cfg.read_only,
        );
        self.budget.try_send(now, buf.len(), tier);
        self.inflight.insert(
            slot,
            Pending {
                to,
                identity,
                expected,
                kind,
                deadline: now + self.cfg.query_timeout,
            },
        );
        let c = &mut self.stats.queries_sent;
        match method {
            Method::Ping => count(&mut c.ping),
            Method::FindNode { .. } => count(&mut c.find_node),
            Method::GetPeers { .. } => count(&mut c.get_peers),
            Method::AnnouncePeer { .. } => count(&mut c.announce_peer),
            Method::SampleInfohashes { .. } => count(&mut c.sample_infohashes),
            Method::Unknown { .. } => count(&mut c.other),
        }
        if let Some(id) = expected {
            if let Some(e) = self.table.get_mut(&id) {
                e.last_query = Some(now);
            }
        }
        self.push_transmit(identity, to, buf);
        Ok(())
    }

    fn explore_room(&self) -> bool {
        self.inflight.explore < self.cfg.max_explore_inflight
    }
}
