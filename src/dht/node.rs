//! The node state machine (see the module docs of [`crate::dht`]).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::addr::{is_martian, is_valid_peer};
use super::harvest::{Discovered, FetchOutcome, Harvester};
use super::limiter::{Budget, PerIpLimiter, Tier};
use super::lookup::Lookup;
use super::store::{PeerStore, SamplePool};
use super::table::Table;
use super::{Action, NodeConfig, NodeStats, ShardMsg, Source, Transmit};
use crate::id::Id;
use crate::keyspace::Slice;
use crate::krpc::message::{
    encode_error, encode_query, encode_response, ErrorCode, Header, Response, ResponseBody,
};
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
/// Entries looked at per tick by the sweep and by the refresh scan.
const SCAN_PER_TICK: usize = 512;
/// Gaps remembered as recently walked into.
const RECENT_GAPS: usize = 16;
/// A query's size for the budget's admission check (get_peers with a
/// 4-byte tid and a version is about 100 bytes).
const QUERY_SIZE_ESTIMATE: usize = 128;
/// Nodes in find_node answers (per family).
const K: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ping,
    FindNode,
    Sample,
    HolderGetPeers { info_hash: Id },
    LookupGetPeers { lookup: u32 },
}

impl Kind {
    fn explore(self) -> bool {
        matches!(self, Kind::Ping | Kind::FindNode | Kind::Sample)
    }
}

#[derive(Debug, Clone)]
struct Pending {
    to: SocketAddr,
    identity: u8,
    expected: Option<Id>,
    kind: Kind,
    deadline: Instant,
}

/// Queries in flight, by tid slot.
#[derive(Debug)]
struct Inflight {
    slots: Vec<Option<Pending>>,
    free: VecDeque<u16>,
    expiry: VecDeque<(Instant, u16)>,
    max: usize,
    explore: usize,
}

impl Inflight {
    fn new(max: usize) -> Self {
        Inflight {
            slots: Vec::new(),
            free: VecDeque::new(),
            expiry: VecDeque::new(),
            max: max.clamp(1, 1 << 16),
            explore: 0,
        }
    }

    fn reserve(&mut self) -> Option<u16> {
        if let Some(s) = self.free.pop_front() {
            return Some(s);
        }
        if self.slots.len() < self.max {
            self.slots.push(None);
            return u16::try_from(self.slots.len() - 1).ok();
        }
        None
    }

    fn insert(&mut self, slot: u16, p: Pending) {
        if p.kind.explore() {
            self.explore += 1;
        }
        self.expiry.push_back((p.deadline, slot));
        if let Some(s) = self.slots.get_mut(usize::from(slot)) {
            *s = Some(p);
        }
    }

    fn remove(&mut self, slot: u16) -> Option<Pending> {
        let p = self.slots.get_mut(usize::from(slot))?.take()?;
        if p.kind.explore() {
            self.explore = self.explore.saturating_sub(1);
        }
        self.free.push_back(slot);
        Some(p)
    }

    fn get(&self, slot: u16) -> Option<&Pending> {
        self.slots.get(usize::from(slot))?.as_ref()
    }

    fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// The next expired transaction.
    fn pop_expired(&mut self, now: Instant) -> Option<Pending> {
        while let Some(&(deadline, slot)) = self.expiry.front() {
            if deadline > now {
                return None;
            }
            self.expiry.pop_front();
            // The slot may have been answered and reused since.
            if self.get(slot).is_some_and(|p| p.deadline <= now) {
                return self.remove(slot);
            }
        }
        None
    }
}

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

#[derive(Debug, Clone, Copy)]
struct ExploitJob {
    info_hash: Id,
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
    per_ip_out: PerIpLimiter,
    per_ip_in: PerIpLimiter,
    store: PeerStore,
    pool: SamplePool,
    harvest: Harvester,
    /// Holder queries were queued since the last exploit pass.
    exploit_new: bool,
    exploit: VecDeque<ExploitJob>,
    lookups: HashMap<u32, Lookup>,
    lookup_queue: VecDeque<(Id, Vec<NodeInfo>)>,
    next_lookup: u32,
    verify: VecDeque<Id>,
    reping: VecDeque<NodeInfo>,
    transmits: VecDeque<Transmit>,
    actions: VecDeque<Action>,
    buffers: Vec<Vec<u8>>,
    scratch_nodes: Vec<NodeInfo>,
    scratch_peers: Vec<SocketAddr>,
    scratch_ids: Vec<Id>,
    stats: NodeStats,
    next_tick: Instant,
    next_bootstrap: Instant,
    next_walk: Instant,
    next_expire: Instant,
    sweep_cursor: Id,
    /// Ids of nodes recently handed to their owner shard.
    forwarded_nodes: std::collections::HashSet<Id>,
    refresh_cursor: Id,
    walks: u64,
    recent_gaps: Vec<u64>,
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

impl Node {
    /// A node for `cfg`, starting at `now`. All shards of a machine should be
    /// created with the same `now` and `token_key`, so that their token epochs
    /// agree.
    pub fn new(cfg: NodeConfig, now: Instant) -> Node {
        let mut rng = Rng::seed_from_u64(cfg.seed);
        let key = |rng: &mut Rng| (rng.next_u64(), rng.next_u64());
        let slice = cfg.slice();
        let shards = u64::from(cfg.nr_shards.max(1));
        let per_ip_out = PerIpLimiter::with_rate(
            cfg.limiter_slots,
            cfg.per_ip_pps,
            Duration::from_secs(shards),
            (u64::from(cfg.per_ip_burst) / shards).max(1) as u32,
            key(&mut rng),
            now,
        );
        let per_ip_in = PerIpLimiter::with_rate(
            cfg.limiter_slots,
            cfg.inbound_per_ip_pps,
            Duration::from_secs(1),
            cfg.inbound_per_ip_burst,
            key(&mut rng),
            now,
        );
        let harvest = Harvester::new(cfg.harvest, key(&mut rng));
        let sweep_cursor = slice.random_id(&mut rng);
        Node {
            slice,
            tokens: TokenSecrets::with_period(cfg.token_key, now, cfg.token_rotation),
            table: Table::new(slice, cfg.max_nodes, cfg.max_out_per_bucket),
            inflight: Inflight::new(cfg.max_inflight),
            budget: Budget::new(u64::from(cfg.max_pps), cfg.max_bps, cfg.budget_window, now),
            per_ip_out,
            per_ip_in,
            store: PeerStore::new(cfg.max_torrents, cfg.max_peers),
            pool: SamplePool::new(cfg.sample_pool),
            harvest,
            exploit_new: false,
            exploit: VecDeque::new(),
            lookups: HashMap::new(),
            lookup_queue: VecDeque::new(),
            next_lookup: 0,
            verify: VecDeque::new(),
            reping: VecDeque::new(),
            transmits: VecDeque::new(),
            actions: VecDeque::new(),
            buffers: Vec::new(),
            scratch_nodes: Vec::new(),
            scratch_peers: Vec::new(),
            scratch_ids: Vec::new(),
            stats: NodeStats::default(),
            next_tick: now,
            next_bootstrap: now,
            next_walk: now + cfg.walk_interval,
            next_expire: now + Duration::from_secs(60),
            sweep_cursor,
            forwarded_nodes: std::collections::HashSet::new(),
            refresh_cursor: slice.first(),
            walks: 0,
            recent_gaps: Vec::new(),
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
        match msg {
            ShardMsg::Reply {
                identity,
                from,
                bytes,
            } => {
                count(&mut self.stats.forwarded_in);
                self.process(identity, from, &bytes, now, true);
                self.recycle(bytes);
            }
            ShardMsg::Harvested {
                info_hash,
                source,
                peers,
            } => {
                if self.owner(&info_hash) == Some(self.cfg.shard) {
                    self.discover(info_hash, source, peers, None, now);
                }
            }
            ShardMsg::Sampled { info_hash, holder } => {
                if self.owner(&info_hash) == Some(self.cfg.shard) {
                    self.discover(info_hash, Source::Sample, Vec::new(), Some(holder), now);
                }
            }
            ShardMsg::Node { node } => {
                if self.owner(&node.id) == Some(self.cfg.shard) {
                    self.add_candidate(node, now);
                }
            }
            ShardMsg::Query {
                identity,
                from,
                bytes,
            } => {
                count(&mut self.stats.queries_forwarded_in);
                self.process(identity, from, &bytes, now, true);
                self.recycle(bytes);
            }
            ShardMsg::Offer { info_hash } => self.pool.offer(info_hash, &mut self.rng),
        }
        self.flush_exploit(now);
    }

    /// The fetch pool reports how a fetch of `ih` ended.
    pub fn handle_fetch_result(&mut self, ih: Id, outcome: FetchOutcome, now: Instant) {
        self.harvest.fetch_done(&ih, outcome, now);
        self.drive_harvest(now);
        self.flush_exploit(now);
    }

    /// Marks `ih` as already stored (loaded from the database at start): it
    /// is never fetched again.
    pub fn remember_stored(&mut self, ih: &Id) {
        self.harvest.remember_stored(ih);
    }

    /// The harvester's counters.
    pub fn harvest_stats(&self) -> super::harvest::HarvestStats {
        self.harvest.stats()
    }

    /// Time has passed: expire queries, maintain the table, crawl.
    pub fn handle_timeout(&mut self, now: Instant) {
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
        self.pump_refresh(now);
        if now >= self.next_tick {
            self.next_tick = now + self.cfg.tick;
        }
    }

    /// When [`Node::handle_timeout`] wants to be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next_tick)
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
        s.nodes_confirmed = self.table.confirmed_len();
        s.dedup_len = self.harvest.stored_filter().len();
        s.bytes_per_infohash = self.harvest.stored_filter().bytes_per_infohash();
        s.torrents = self.store.len();
        s.harvest = self.harvest.stats();
        s
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

    /// The peers the announce store holds for `ih`.
    pub fn stored_peers(&self, ih: &Id) -> Vec<SocketAddr> {
        let mut v = Vec::new();
        self.store.peers(ih, &mut v);
        v
    }

    /// Resumes an infohash found in an earlier run but never fetched: it is
    /// taken in like a fresh discovery and its peers are looked up.
    pub fn resume(&mut self, ih: Id, source: Source, now: Instant) {
        self.harvest(ih, source, Vec::new(), None, now);
        self.drive_harvest(now);
        self.flush_exploit(now);
    }

    /// Stores `peer` for `ih` as if it had announced (and offers `ih` to
    /// the BEP 51 sample pool). For simulations that build a swarm directly.
    pub fn seed_peer(&mut self, ih: Id, peer: SocketAddr, now: Instant) {
        // Offered once per torrent, as for a real announce: a pool holding
        // an infohash once per peer would sample fewer distinct torrents.
        let new_torrent = self.stored_peers_len(&ih) == 0;
        if self.store.announce(ih, peer, now) && new_torrent {
            self.pool.offer(ih, &mut self.rng);
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
        self.cfg.identities.iter().any(|i| i.id == *id)
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
                if let Some(p) = self.match_reply(identity, from, tid, data, fwd) {
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
                if let Some(p) = self.match_reply(identity, from, msg.tid, data, fwd) {
                    self.on_response(p, from, &r, now);
                }
            }
            Body::Error(_) => {
                if let Some(p) = self.match_reply(identity, from, msg.tid, data, fwd) {
                    self.on_error(p, now);
                }
            }
        }
    }

    /// Finds (and removes) the transaction a reply answers, forwarding it to
    /// its origin shard when that is another one.
    fn match_reply(
        &mut self,
        identity: u8,
        from: SocketAddr,
        tid: &[u8],
        data: &[u8],
        fwd: bool,
    ) -> Option<Pending> {
        let Some(t) = Tid::from_bytes(tid) else {
            count(&mut self.stats.dropped.unknown_tid);
            return None;
        };
        if t.shard != self.cfg.shard {
            if fwd || t.shard >= self.cfg.nr_shards {
                count(&mut self.stats.dropped.unknown_tid);
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

    fn bad_query(
        &mut self,
        identity: u8,
        from: SocketAddr,
        tid: &[u8],
        code: ErrorCode,
        message: &str,
        now: Instant,
    ) {
        if !self.per_ip_in.check(now, from.ip()) {
            count(&mut self.stats.dropped.per_ip_in);
            return;
        }
        self.send_error(identity, from, tid, code, message, now);
    }

    fn send_error(
        &mut self,
        identity: u8,
        to: SocketAddr,
        tid: &[u8],
        code: ErrorCode,
        message: &str,
        now: Instant,
    ) {
        let mut buf = self.buffer();
        let version = self.cfg.version;
        encode_error(
            &mut buf,
            &Header {
                tid,
                version: version.as_ref().map(|v| &v[..]),
            },
            Some(to),
            code,
            message,
        );
        if self.send_reply(identity, to, buf, now) {
            count(&mut self.stats.errors_sent);
        }
    }

    fn send_reply(&mut self, identity: u8, to: SocketAddr, buf: Vec<u8>, now: Instant) -> bool {
        if !self.budget.can_send(now, buf.len(), Tier::Respond) {
            count(&mut self.stats.dropped.budget);
            self.recycle(buf);
            return false;
        }
        if !self.per_ip_out.check(now, to.ip()) {
            count(&mut self.stats.dropped.per_ip_out);
            self.recycle(buf);
            return false;
        }
        self.budget.try_send(now, buf.len(), Tier::Respond);
        self.push_transmit(identity, to, buf);
        true
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

    /// The shard that answers a query about `key`: its owner when queries
    /// are forwarded (one node to the outside), else this one.
    fn answering_shard(&self, q: &Query<'_>) -> Option<u8> {
        if !self.cfg.forward_queries || self.cfg.nr_shards < 2 {
            return None;
        }
        let key = match q.method {
            Method::FindNode { target }
            | Method::SampleInfohashes { target }
            | Method::Unknown {
                target: Some(target),
                ..
            } => target,
            Method::GetPeers { info_hash, .. } | Method::AnnouncePeer { info_hash, .. } => {
                info_hash
            }
            Method::Ping | Method::Unknown { target: None, .. } => return None,
        };
        self.owner(&key).filter(|o| *o != self.cfg.shard)
    }

    #[allow(clippy::too_many_arguments)]
    fn handle_query(
        &mut self,
        identity: u8,
        from: SocketAddr,
        msg: &Message<'_>,
        q: &Query<'_>,
        data: &[u8],
        fwd: bool,
        now: Instant,
    ) {
        // A forwarded query was admitted (per-IP, ids, table) by the shard
        // the kernel gave it to.
        if !fwd && !self.per_ip_in.check(now, from.ip()) {
            count(&mut self.stats.dropped.per_ip_in);
            return;
        }
        if q.id == Id::ZERO {
            count(&mut self.stats.dropped.zero_id);
            return;
        }
        if self.is_own_id(&q.id) {
            count(&mut self.stats.dropped.own_id);
            return;
        }
        let Some(our_id) = self.our_id(identity) else {
            return;
        };
        // BEP 43: a read-only sender is answered but never inserted. Others
        // become candidates, confirmed only if they answer us later; an IP
        // already in the table keeps its entry whatever id this packet claims.
        if !msg.read_only && !fwd {
            self.add_candidate(
                NodeInfo {
                    id: q.id,
                    addr: from,
                },
                now,
            );
        }
        if !fwd {
            if let Some(owner) = self.answering_shard(q) {
                // One node to the outside: the key's owner answers, from its
                // own socket on the same address, with its store, its pool
                // and its dense table of the key's neighbourhood.
                count(&mut self.stats.queries_forwarded_out);
                let mut bytes = self.buffer();
                bytes.extend_from_slice(data);
                self.actions.push_back(Action::ToShard {
                    shard: owner,
                    msg: ShardMsg::Query {
                        identity,
                        from,
                        bytes,
                    },
                });
                return;
            }
        }
        let (n4, n6) = want_families(q.want, &from);
        let version = self.cfg.version;
        let header = Header {
            tid: msg.tid,
            version: version.as_ref().map(|v| &v[..]),
        };
        let mut nodes = std::mem::take(&mut self.scratch_nodes);
        let mut peers = std::mem::take(&mut self.scratch_peers);
        let mut samples = std::mem::take(&mut self.scratch_ids);
        nodes.clear();
        peers.clear();
        samples.clear();
        let fill_nodes = |table: &Table, target: &Id, nodes: &mut Vec<NodeInfo>| {
            table.nearby_confirmed(target, K, n4, n6, nodes);
        };
        let mut buf = self.buffer();
        let answered;
        match q.method {
            Method::Ping => {
                answered = Answered::Ping;
                encode_response(
                    &mut buf,
                    &header,
                    Some(from),
                    &our_id,
                    &ResponseBody::default(),
                );
            }
            Method::FindNode { target }
            | Method::Unknown {
                target: Some(target),
                ..
            } => {
                answered = if matches!(q.method, Method::FindNode { .. }) {
                    Answered::FindNode
                } else {
                    Answered::Other
                };
                fill_nodes(&self.table, &target, &mut nodes);
                let body = ResponseBody {
                    nodes: &nodes,
                    nodes6: &nodes,
                    ..Default::default()
                };
                encode_response(&mut buf, &header, Some(from), &our_id, &body);
            }
            Method::Unknown { target: None, .. } => {
                self.recycle(buf);
                self.scratch_nodes = nodes;
                self.scratch_peers = peers;
                self.scratch_ids = samples;
                self.send_error(
                    identity,
                    from,
                    msg.tid,
                    ErrorCode::MethodUnknown,
                    "method unknown",
                    now,
                );
                return;
            }
            Method::GetPeers { info_hash, .. } => {
                answered = Answered::GetPeers;
                fill_nodes(&self.table, &info_hash, &mut nodes);
                self.store.peers(&info_hash, &mut peers);
                peers.retain(|p| p.is_ipv4() == from.is_ipv4());
                let token = self.tokens.generate(from.ip(), &info_hash, now);
                let body = ResponseBody {
                    nodes: &nodes,
                    nodes6: &nodes,
                    values: &peers,
                    token: Some(&token),
                    samples: None,
                };
                encode_response(&mut buf, &header, Some(from), &our_id, &body);
                self.harvest(info_hash, Source::GetPeers, Vec::new(), None, now);
            }
            Method::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token,
                ..
            } => {
                let port = if implied_port { from.port() } else { port };
                let peer = SocketAddr::new(from.ip(), port);
                let err = if !self.tokens.verify(token, from.ip(), &info_hash, now) {
                    Some("invalid token")
                } else if !is_valid_peer(&peer, self.cfg.allow_private) {
                    Some("invalid port")
                } else {
                    None
                };
                if let Some(e) = err {
                    self.recycle(buf);
                    self.scratch_nodes = nodes;
                    self.scratch_peers = peers;
                    self.scratch_ids = samples;
                    self.send_error(identity, from, msg.tid, ErrorCode::Protocol, e, now);
                    return;
                }
                answered = Answered::AnnouncePeer;
                let new_torrent = self.stored_peers_len(&info_hash) == 0;
                if self.store.announce(info_hash, peer, now) && new_torrent && !self.cfg.crawl {
                    self.pool.offer(info_hash, &mut self.rng);
                }
                encode_response(
                    &mut buf,
                    &header,
                    Some(from),
                    &our_id,
                    &ResponseBody::default(),
                );
                self.harvest(info_hash, Source::Announce, vec![peer], None, now);
            }
            Method::SampleInfohashes { target } => {
                answered = Answered::SampleInfohashes;
                fill_nodes(&self.table, &target, &mut nodes);
                self.pool.sample(20, &mut self.rng, &mut samples);
                let body = ResponseBody {
                    nodes: &nodes,
                    nodes6: &nodes,
                    samples: Some((
                        &samples,
                        self.cfg.sample_interval.min(21_600),
                        self.pool.num(),
                    )),
                    ..Default::default()
                };
                encode_response(&mut buf, &header, Some(from), &our_id, &body);
            }
        }
        self.scratch_nodes = nodes;
        self.scratch_peers = peers;
        self.scratch_ids = samples;
        if self.send_reply(identity, from, buf, now) {
            let a = &mut self.stats.answered;
            count(match answered {
                Answered::Ping => &mut a.ping,
                Answered::FindNode => &mut a.find_node,
                Answered::GetPeers => &mut a.get_peers,
                Answered::AnnouncePeer => &mut a.announce_peer,
                Answered::SampleInfohashes => &mut a.sample_infohashes,
                Answered::Other => &mut a.other,
            });
        }
    }

    fn stored_peers_len(&self, ih: &Id) -> usize {
        let mut v = Vec::new();
        self.store.peers(ih, &mut v);
        v.len()
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
    // Replies to our queries.

    fn on_response(&mut self, p: Pending, from: SocketAddr, r: &Response<'_>, now: Instant) {
        if r.id == Id::ZERO || self.is_own_id(&r.id) {
            count(&mut self.stats.dropped.own_id);
            self.on_failure(p, now);
            return;
        }
        // A confirmed endpoint answering with another id: evict it and
        // re-ping its neighbourhood (libtorrent PR #961). Only a reply to our
        // own query (tid + exact endpoint already matched) gets here.
        if let Some(old) = self.table.id_of_ip(&from.ip()) {
            if old != r.id {
                let confirmed_here = self
                    .table
                    .get(&old)
                    .is_some_and(|e| e.confirmed && e.addr == from);
                if confirmed_here {
                    self.table.remove(&old);
                    count(&mut self.stats.evicted_id_change);
                    for n in self.table.neighbours(&old, K) {
                        if self.reping.len() < MAX_REPING_QUEUE {
                            self.reping.push_back(n);
                        }
                    }
                    self.on_failure(p, now);
                    return;
                }
                if self.table.get(&old).is_some_and(|e| !e.confirmed) {
                    // What we heard about this IP was wrong; the reply is
                    // authoritative.
                    self.table.remove(&old);
                }
            }
        }
        if let Some(exp) = p.expected {
            if exp != r.id {
                self.table.fail(&exp);
                self.on_failure(p, now);
                return;
            }
        }
        self.table.confirm(
            NodeInfo {
                id: r.id,
                addr: from,
            },
            now,
        );
        let holder = NodeInfo {
            id: r.id,
            addr: from,
        };
        match p.kind {
            Kind::Ping | Kind::FindNode => self.add_nodes_from(r, now),
            Kind::Sample => {
                self.add_nodes_from(r, now);
                let next = match r.as_samples() {
                    Ok(s) => {
                        self.stats.sample_replies = self.stats.sample_replies.saturating_add(1);
                        self.stats.samples_received =
                            self.stats.samples_received.saturating_add(s.len() as u64);
                        for ih in s.samples() {
                            self.on_sample(ih, holder, now);
                        }
                        Duration::from_secs(u64::from(s.interval)).max(self.cfg.min_resample)
                    }
                    Err(_) => SAMPLE_RETRY,
                };
                if let Some(e) = self.table.get_mut(&r.id) {
                    e.next_sample = Some(now + next);
                }
            }
            Kind::HolderGetPeers { info_hash } => {
                let peers = self.valid_peers(r);
                if peers.is_empty() {
                    let seeds: Vec<NodeInfo> = r
                        .nodes
                        .iter()
                        .chain(r.nodes6.iter())
                        .filter(|n| self.acceptable_node(n))
                        .collect();
                    self.add_nodes_from(r, now);
                    self.start_lookup(info_hash, seeds, now);
                } else {
                    self.finish(info_hash, peers, now);
                    self.drive_harvest(now);
                }
            }
            Kind::LookupGetPeers { lookup } => {
                let peers = self.valid_peers(r);
                let nodes: Vec<NodeInfo> = r
                    .nodes
                    .iter()
                    .chain(r.nodes6.iter())
                    .filter(|n| self.acceptable_node(n))
                    .collect();
                self.add_nodes_from(r, now);
                if let Some(l) = self.lookups.get_mut(&lookup) {
                    l.on_reply(from, peers);
                    for n in nodes {
                        l.add(n);
                    }
                    self.step_lookup(lookup, now);
                }
            }
        }
    }

    fn valid_peers(&self, r: &Response<'_>) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = r
            .peers()
            .filter(|p| is_valid_peer(p, self.cfg.allow_private))
            .take(super::lookup::MAX_PEERS)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    fn on_error(&mut self, p: Pending, now: Instant) {
        // The node is alive but said no.
        if let (Kind::Sample, Some(id)) = (p.kind, p.expected) {
            if let Some(e) = self.table.get_mut(&id) {
                e.next_sample = Some(now + SAMPLE_RETRY);
            }
            return;
        }
        self.on_failure(p, now);
    }

    fn on_failure(&mut self, p: Pending, now: Instant) {
        match p.kind {
            Kind::Ping | Kind::FindNode | Kind::Sample => {
                if let Some(id) = p.expected {
                    if let Some(e) = self.table.get_mut(&id).filter(|e| e.addr == p.to) {
                        if p.kind == Kind::Sample {
                            // Unanswered is not an interval: ask again soon
                            // (if the node survives its failures).
                            e.next_sample = Some(now + SAMPLE_UNANSWERED_RETRY);
                        }
                        self.table.fail(&id);
                    }
                }
            }
            Kind::HolderGetPeers { info_hash } => {
                if let Some(id) = p.expected {
                    self.table.fail(&id);
                }
                self.start_lookup(info_hash, Vec::new(), now);
            }
            Kind::LookupGetPeers { lookup } => {
                if let Some(l) = self.lookups.get_mut(&lookup) {
                    l.on_fail(p.to);
                    self.step_lookup(lookup, now);
                }
            }
        }
    }

    // ------------------------------------------------------------------
    // Harvest pipeline.

    fn on_sample(&mut self, ih: Id, holder: NodeInfo, now: Instant) {
        match self.owner(&ih) {
            None => count(&mut self.stats.dropped.foreign_key),
            Some(s) if s == self.cfg.shard => {
                self.discover(ih, Source::Sample, Vec::new(), Some(holder), now)
            }
            Some(s) => self.actions.push_back(Action::ToShard {
                shard: s,
                msg: ShardMsg::Sampled {
                    info_hash: ih,
                    holder,
                },
            }),
        }
    }

    /// A passively seen infohash: to the owner shard.
    fn harvest(
        &mut self,
        ih: Id,
        source: Source,
        peers: Vec<SocketAddr>,
        holder: Option<NodeInfo>,
        now: Instant,
    ) {
        if !self.cfg.crawl {
            return;
        }
        match self.owner(&ih) {
            None => count(&mut self.stats.dropped.foreign_key),
            Some(s) if s == self.cfg.shard => self.discover(ih, source, peers, holder, now),
            Some(s) => self.actions.push_back(Action::ToShard {
                shard: s,
                msg: ShardMsg::Harvested {
                    info_hash: ih,
                    source,
                    peers,
                },
            }),
        }
    }

    /// On the owner shard: the harvester takes the infohash in (or merges
    /// its peers), then runs what it wants.
    fn discover(
        &mut self,
        ih: Id,
        source: Source,
        peers: Vec<SocketAddr>,
        holder: Option<NodeInfo>,
        now: Instant,
    ) {
        if !self.cfg.crawl {
            return;
        }
        match self.harvest.discover(ih, source, &peers, holder) {
            Discovered::New => {
                match source {
                    Source::Sample => count(&mut self.stats.infohashes.sample),
                    Source::GetPeers => count(&mut self.stats.infohashes.get_peers),
                    Source::Announce => count(&mut self.stats.infohashes.announce),
                }
                self.pool.offer(ih, &mut self.rng);
                // Every shard serves samples from the same set.
                if self.cfg.forward_queries {
                    for shard in 0..self.cfg.nr_shards {
                        if shard != self.cfg.shard {
                            self.actions.push_back(Action::ToShard {
                                shard,
                                msg: ShardMsg::Offer { info_hash: ih },
                            });
                        }
                    }
                }
                self.actions.push_back(Action::Discovered {
                    info_hash: ih,
                    source,
                });
            }
            Discovered::InProgress => {
                if !peers.is_empty() && self.harvest.is_fetching(&ih) {
                    self.actions.push_back(Action::MorePeers {
                        info_hash: ih,
                        peers,
                    });
                }
            }
            Discovered::Shed => count(&mut self.stats.dropped.harvest_full),
            Discovered::Stored | Discovered::GivenUp => {}
        }
        self.drive_harvest(now);
    }

    /// Hands out what the harvester wants: peer searches (while the node's
    /// search backlog has room), fetches, and the given-up infohashes.
    fn drive_harvest(&mut self, now: Instant) {
        let exploit_before = self.exploit.len();
        while self.exploit.len() + self.lookup_queue.len() < SEARCH_BACKLOG {
            let Some(req) = self.harvest.poll_search() else {
                break;
            };
            match req.holder {
                Some(h) if self.exploit.len() < MAX_EXPLOIT_QUEUE => {
                    self.exploit.push_back(ExploitJob {
                        info_hash: req.info_hash,
                        holder: h,
                        since: now,
                    });
                }
                _ => self.start_lookup(req.info_hash, Vec::new(), now),
            }
        }
        if self.exploit.len() > exploit_before {
            // Exploitation first: new holder queries are tried as soon as
            // the datagram or message that made them is processed.
            self.exploit_new = true;
        }
        while let Some(f) = self.harvest.poll_fetch() {
            count(&mut self.stats.emitted);
            self.actions.push_back(Action::Fetch {
                info_hash: f.info_hash,
                source: f.source,
                peers: f.peers,
            });
        }
        while let Some(ih) = self.harvest.poll_given_up() {
            self.actions.push_back(Action::GaveUp { info_hash: ih });
        }
    }

    /// The peer search for `ih` is over.
    fn finish(&mut self, ih: Id, peers: Vec<SocketAddr>, now: Instant) {
        self.harvest.search_done(&ih, &peers, now);
    }

    fn start_lookup(&mut self, ih: Id, seeds: Vec<NodeInfo>, now: Instant) {
        let Some(source) = self.harvest.searching(&ih) else {
            return;
        };
        if self.lookups.len() >= self.cfg.max_lookups {
            if self.lookup_queue.len() >= MAX_EXPLOIT_QUEUE {
                self.finish(ih, Vec::new(), now);
            } else {
                self.lookup_queue.push_back((ih, seeds));
            }
            return;
        }
        let mut l = Lookup::new(ih, source, seeds);
        for n in self.table.closest(&ih, 16, false) {
            l.add(n);
        }
        count(&mut self.stats.lookups);
        let id = self.next_lookup;
        self.next_lookup = self.next_lookup.wrapping_add(1);
        self.lookups.insert(id, l);
        self.step_lookup(id, now);
    }

    /// Sends what lookup `id` wants to send; finishes it when done.
    /// Returns false when out of budget.
    fn step_lookup(&mut self, id: u32, now: Instant) -> bool {
        let Some(mut l) = self.lookups.remove(&id) else {
            return true;
        };
        let mut ok = true;
        // Lookups for infohashes seen only in someone's get_peers run as
        // exploration: anyone can send us get_peers for random infohashes,
        // and each lookup costs up to MAX_QUERIES datagrams to third
        // parties, so they must never crowd out real exploitation.
        let tier = if l.source == Source::GetPeers {
            Tier::Explore
        } else {
            Tier::Exploit
        };
        while let Some(n) = l.next_query() {
            let m = Method::GetPeers {
                info_hash: l.target,
                noseed: false,
                scrape: false,
            };
            match self.send_query(
                n.addr,
                Some(n.id),
                Kind::LookupGetPeers { lookup: id },
                &m,
                tier,
                now,
            ) {
                Ok(()) => {}
                Err(SendError::Budget | SendError::InflightFull) => {
                    l.unsend(n.addr);
                    ok = false;
                    break;
                }
                // That IP's share is used up for now: ask it next tick
                // rather than count a healthy node as failed.
                Err(SendError::PerIp) => {
                    l.unsend(n.addr);
                    break;
                }
                Err(_) => l.on_fail(n.addr),
            }
        }
        if l.done() {
            let peers = std::mem::take(&mut l.peers);
            self.finish(l.target, peers, now);
            self.start_queued_lookup(now);
            self.drive_harvest(now);
        } else {
            self.lookups.insert(id, l);
        }
        ok
    }

    fn start_queued_lookup(&mut self, now: Instant) {
        while self.lookups.len() < self.cfg.max_lookups {
            let Some((ih, seeds)) = self.lookup_queue.pop_front() else {
                return;
            };
            self.start_lookup(ih, seeds, now);
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
            Want::default(),
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

    fn pump_exploit(&mut self, now: Instant) {
        let mut n = self.exploit.len();
        // Holders whose per-IP share is used up in this pass: their other
        // jobs wait without asking the limiter again (a reply of 20 samples
        // makes 20 jobs for one holder).
        let mut refused: Vec<IpAddr> = Vec::new();
        while n > 0 {
            n -= 1;
            let Some(job) = self.exploit.pop_front() else {
                break;
            };
            if refused.contains(&job.holder.addr.ip()) {
                self.exploit.push_back(job);
                continue;
            }
            if self.harvest.searching(&job.info_hash).is_none() {
                continue;
            }
            if now.saturating_duration_since(job.since) > EXPLOIT_MAX_WAIT {
                self.start_lookup(job.info_hash, Vec::new(), now);
                continue;
            }
            let m = Method::GetPeers {
                info_hash: job.info_hash,
                noseed: false,
                scrape: false,
            };
            let kind = Kind::HolderGetPeers {
                info_hash: job.info_hash,
            };
            match self.send_query(
                job.holder.addr,
                Some(job.holder.id),
                kind,
                &m,
                Tier::Exploit,
                now,
            ) {
                Ok(()) => {}
                Err(SendError::Budget | SendError::InflightFull) => {
                    self.exploit.push_front(job);
                    break;
                }
                // That IP's share is used up for now: keep the job, try later.
                Err(SendError::PerIp) => {
                    if refused.len() < 64 {
                        refused.push(job.holder.addr.ip());
                    }
                    self.exploit.push_back(job);
                }
                Err(SendError::Martian | SendError::NoIdentity) => {
                    self.start_lookup(job.info_hash, Vec::new(), now)
                }
            }
        }
    }

    fn pump_lookups(&mut self, now: Instant) {
        let ids: Vec<u32> = self.lookups.keys().copied().collect();
        for id in ids {
            if !self.step_lookup(id, now) {
                break;
            }
        }
        self.start_queued_lookup(now);
    }

    fn pump_reping(&mut self, now: Instant) {
        while let Some(n) = self.reping.front().copied() {
            if !self.explore_room() {
                return;
            }
            match self.send_query(
                n.addr,
                Some(n.id),
                Kind::Ping,
                &Method::Ping,
                Tier::Explore,
                now,
            ) {
                Err(SendError::Budget | SendError::InflightFull) => return,
                _ => {
                    self.reping.pop_front();
                }
            }
        }
    }

    fn pump_bootstrap(&mut self, now: Instant) {
        if now < self.next_bootstrap || self.table.confirmed_len() >= MIN_CONFIRMED {
            return;
        }
        self.next_bootstrap = now + BOOTSTRAP_INTERVAL;
        let target = self.slice.random_id(&mut self.rng);
        let m = Method::FindNode { target };
        for addr in self.cfg.bootstrap.clone() {
            let _ = self.send_query(addr, None, Kind::FindNode, &m, Tier::Explore, now);
        }
    }

    /// mldht's keyspace traversal: the slice's nodes in id order, each asked
    /// for samples once per its interval.
    fn pump_sweep(&mut self, now: Instant) {
        // Finish what was started first: while the holders of samples
        // already received wait to be asked, sampling more only grows the
        // backlog.
        if self.exploit.len() >= SEARCH_BACKLOG / 2 {
            return;
        }
        let timeout = self.cfg.query_timeout;
        loop {
            if !self.explore_room() || !self.budget.can_send(now, 128, Tier::Explore) {
                return;
            }
            let next = self
                .table
                .next_in_slice(&self.sweep_cursor, SCAN_PER_TICK, |_, e| {
                    e.next_sample.is_none_or(|t| t <= now)
                        && e.last_query
                            .is_none_or(|t| now.saturating_duration_since(t) >= timeout)
                });
            let Some((id, addr)) = next else {
                return;
            };
            self.sweep_cursor = id;
            let m = Method::SampleInfohashes {
                target: self.table.gap_after(&id),
            };
            match self.send_query(addr, Some(id), Kind::Sample, &m, Tier::Explore, now) {
                Ok(()) => {
                    // Until the reply says otherwise, do not ask again soon.
                    if let Some(e) = self.table.get_mut(&id) {
                        e.next_sample = Some(now + self.cfg.min_resample);
                    }
                }
                Err(SendError::PerIp) => {
                    if let Some(e) = self.table.get_mut(&id) {
                        e.next_sample = Some(now + Duration::from_secs(1));
                    }
                }
                Err(SendError::Budget | SendError::InflightFull) => return,
                Err(SendError::Martian | SendError::NoIdentity) => {
                    self.table.remove(&id);
                }
            }
        }
    }

    /// Out-of-slice nodes we heard of: confirm them with a find_node aimed
    /// at our slice, which also pulls in nodes nearer to it.
    fn pump_verify(&mut self, now: Instant) {
        while let Some(id) = self.verify.front().copied() {
            if !self.explore_room() {
                return;
            }
            let Some(addr) = self.table.get(&id).filter(|e| !e.confirmed).map(|e| e.addr) else {
                self.verify.pop_front();
                continue;
            };
            let m = Method::FindNode {
                target: self.slice.random_id(&mut self.rng),
            };
            match self.send_query(addr, Some(id), Kind::FindNode, &m, Tier::Explore, now) {
                Err(SendError::Budget | SendError::InflightFull) => return,
                Err(SendError::PerIp) => {
                    self.verify.pop_front();
                    self.verify.push_back(id);
                    return;
                }
                _ => {
                    self.verify.pop_front();
                }
            }
        }
    }

    /// A find_node walk into the slice: ask the nodes closest to a random
    /// target in it (candidates included, which verifies them).
    fn pump_walk(&mut self, now: Instant) {
        if now < self.next_walk || self.table.is_empty() {
            return;
        }
        self.next_walk = now + self.cfg.walk_interval;
        // Every other walk aims at the widest stretch of the slice where we
        // know no node (skipping the last few tried); the others at random.
        self.walks = self.walks.wrapping_add(1);
        let gap = if self.walks % 2 == 0 {
            self.table.widest_gap(&self.recent_gaps)
        } else {
            None
        };
        let target = match gap {
            Some((t, start)) => {
                if self.recent_gaps.len() >= RECENT_GAPS {
                    self.recent_gaps.remove(0);
                }
                self.recent_gaps.push(start);
                t
            }
            None => self.slice.random_id(&mut self.rng),
        };
        let timeout = self.cfg.query_timeout;
        let mut sent = 0;
        for n in self.table.closest(&target, 8, false) {
            if sent >= 3 || !self.explore_room() {
                break;
            }
            let recent = self
                .table
                .get(&n.id)
                .and_then(|e| e.last_query)
                .is_some_and(|t| now.saturating_duration_since(t) < timeout);
            if recent {
                continue;
            }
            match self.send_query(
                n.addr,
                Some(n.id),
                Kind::FindNode,
                &Method::FindNode { target },
                Tier::Explore,
                now,
            ) {
                Ok(()) => sent += 1,
                Err(SendError::Budget | SendError::InflightFull) => return,
                Err(_) => {}
            }
        }
    }

    /// Pings confirmed nodes not heard from in [`STALE`], a few per tick.
    fn pump_refresh(&mut self, now: Instant) {
        let mut stale = Vec::new();
        let mut last = None;
        for (id, e) in self
            .table
            .iter_after(&self.refresh_cursor)
            .take(SCAN_PER_TICK / 8)
        {
            last = Some(*id);
            let quiet =
                |t: Option<Instant>| t.is_none_or(|t| now.saturating_duration_since(t) >= STALE);
            if e.confirmed && quiet(e.last_reply) && quiet(e.last_query) {
                stale.push(NodeInfo {
                    id: *id,
                    addr: e.addr,
                });
            }
        }
        self.refresh_cursor = last.unwrap_or(Id::ZERO);
        for n in stale {
            if !self.explore_room() {
                return;
            }
            if let Err(SendError::Budget | SendError::InflightFull) = self.send_query(
                n.addr,
                Some(n.id),
                Kind::Ping,
                &Method::Ping,
                Tier::Explore,
                now,
            ) {
                return;
            }
        }
    }
}
