//! `dht-loadgen swarm`: a simulated DHT and BitTorrent swarm on loopback.
//!
//! * `nodes` DHT nodes, each on its own address in 127.64.0.0/10 and all on
//!   one UDP port, served by one wildcard socket with `IP_PKTINFO`
//!   ([`super::pktinfo`]). The first `full_nodes` are real [`Node`]s (the
//!   crawler's own state machine, crawling off), so they answer ping,
//!   find_node, get_peers, announce_peer and sample_infohashes exactly as a
//!   good node does. Their tables hold their id-order neighbours plus
//!   random contacts, so they form one consistent Kademlia network. The
//!   rest are [`super::light`] nodes: stateless answerers with a perfect
//!   view of the network, about 70 bytes each instead of 27 KiB, so that a
//!   million fit.
//! * `torrents` synthetic torrents ([`super::torrents`]); each infohash is
//!   stored (with its peers) at the 8 nodes closest to it, so sampling and
//!   lookups behave as on the real DHT.
//! * Peers on TCP, each on its own address in 127.96.0.0/11, serving the
//!   metadata with BEP 3/10/9 ([`crate::wire::MetadataServe`]), a chosen
//!   share of them misbehaving: slow, rejecting, lying, oversize,
//!   disconnecting mid-transfer, or silent. A share of all peers (honest
//!   ones included) churn: offline for part of every cycle
//!   ([`super::peers::Churn`]).
//! * Clients: at `client_rate` per second, a torrent's first peer (its
//!   client) sends get_peers for that torrent to every target (the
//!   harvesters under test). As real clients do, most announce only later:
//!   `announce_delay` (± `announce_jitter`) after the search they send
//!   get_peers again for a fresh token and announce_peer with it, to each
//!   target with that target's own token; a `search_only_fraction` of
//!   clients never announce. With `announce_delay` zero a client announces
//!   as soon as the reply to its search comes, with its token.
//!
//! Every target gets the same client traffic (same seed, same order, same
//! tick), so several harvesters can be measured side by side on one swarm.
//!
//! The swarm writes a ground-truth file listing every torrent, its
//! infohash, which of its peers are honest and which churn.
//!
//! This file is about 1,000 lines: the simulated swarm's configuration, its
//! ground truth and its one event loop (DHT nodes, searching and announcing
//! clients, per-target counters) describe one model and are checked against
//! each other.

use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::light::{Answered, LightNodes, Network};
use super::peers::{Churn, PeerPlan, PeerServer};
pub use super::peers::{PeerEncryption, PeerKind, PEER_BASE};
use super::pktinfo::PktSocket;
use super::torrents::{synth, SynthTorrent};
use crate::dht::{Identity, Node, NodeConfig};
use crate::id::Id;
use crate::krpc::message::{encode_query, Header, Method, Want};
use crate::krpc::{decode, Body, NodeInfo};
use crate::rng::Rng;
use crate::wire::Behaviour;

/// Full nodes in a swarm unless configured: every node of the swarms the
/// tests and harvest benches use, about 1.3 GiB at 27 KiB each.
pub const DEFAULT_FULL_NODES: usize = 50_000;

/// First address of the simulated DHT nodes.
pub const NODE_BASE: Ipv4Addr = Ipv4Addr::new(127, 64, 0, 1);

/// How a swarm is made.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// Simulated DHT nodes.
    pub nodes: usize,
    /// How many of them are full nodes; the rest are light
    /// ([`super::light`]).
    pub full_nodes: usize,
    /// Synthetic torrents.
    pub torrents: usize,
    /// Peers per torrent.
    pub peers_per_torrent: usize,
    /// Share of peers that misbehave (0.0–1.0), spread over the bad kinds.
    pub bad_fraction: f64,
    /// Share of torrents with no honest peer at all (not fetchable).
    pub unfetchable_fraction: f64,
    /// Torrents whose metadata is about this many bytes (several MiB).
    pub large_torrents: usize,
    /// Size of those.
    pub large_bytes: usize,
    /// UDP port of every simulated node (0: any).
    pub dht_port: u16,
    /// Clients per second: each searches (get_peers) for one torrent at
    /// every target and maybe announces later.
    pub client_rate: u32,
    /// RNG seed (the swarm is deterministic for a seed).
    pub seed: u64,
    /// How long after its search a client announces. Real clients search,
    /// connect to the peers they found, and announce on their next
    /// re-announce tick, seconds to minutes later; a harvester that only
    /// reacts to the announce sees the infohash that much later. Zero: the
    /// client announces on the reply to its search, with that token.
    pub announce_delay: Duration,
    /// Spread of `announce_delay`: each client's delay is drawn uniformly
    /// from `delay × (1 ± jitter)` (0.0–1.0).
    pub announce_jitter: f64,
    /// Share of clients (0.0–1.0) that search and never announce (leechers
    /// that found enough peers, clients that quit). A harvester sees their
    /// infohash only in a get_peers.
    pub search_only_fraction: f64,
    /// Share of peers (0.0–1.0, honest or not) that churn: offline for
    /// `churn_away` of every `churn_period`, each with its own phase.
    /// Ground truth still counts a torrent whose only honest peer churns
    /// as fetchable: it is, by a harvester that retries when the peer is
    /// back.
    pub churn_fraction: f64,
    /// Hostile info dictionaries (metadata bombs) served as extra torrents
    /// after the synthetic ones, each by honest peers that announce them
    /// like any other. Their infohashes are real (SHA-1 of the bytes), so a
    /// crawler fetches and verifies them; the truth lists them as not
    /// fetchable, since no crawler should store them.
    pub hostile_infos: Vec<Vec<u8>>,
    /// Share of peers (0.0–1.0) that require MSE/PE encryption with RC4
    /// and hang up on a plaintext handshake (libtorrent's forced policy).
    pub encryption_required_fraction: f64,
    /// Share of peers (0.0–1.0) that take either MSE or plaintext (most
    /// clients' default); the rest speak plaintext only and hang up on an
    /// MSE handshake.
    pub encryption_enabled_fraction: f64,
    /// Share of peers (0.0–1.0) that speak uTP only (BEP 29 on the peers'
    /// port over UDP) and reset TCP connections. Only peers with a serving
    /// behaviour (honest or misbehaving, not slow or junk) are drawn; they
    /// speak plaintext BT, since the fetcher's uTP has no MSE.
    pub utp_only_fraction: f64,
    /// One online-plus-offline cycle of a churning peer.
    pub churn_period: Duration,
    /// The offline part of that cycle.
    pub churn_away: Duration,
}

impl SwarmConfig {
    /// A swarm where every torrent can be fetched at every moment: one
    /// honest peer each, no large torrent, no churn (the tests that check
    /// exact outcomes).
    pub fn honest(nodes: usize, torrents: usize, client_rate: u32, seed: u64) -> SwarmConfig {
        SwarmConfig {
            nodes,
            torrents,
            peers_per_torrent: 1,
            bad_fraction: 0.0,
            unfetchable_fraction: 0.0,
            large_torrents: 0,
            client_rate,
            seed,
            ..SwarmConfig::default()
        }
    }

    /// The defaults plus the client and peer behaviour of a real swarm:
    /// clients announce 20 s (± 50 %) after they search, with a fresh
    /// token; 30 % of them never announce; 20 % of peers are away 30 s of
    /// every 60 s. [`SwarmConfig::default`] leaves these off so that every
    /// fetchable torrent stays fetchable at every moment (what exact
    /// verifications such as the demo's need).
    pub fn realistic() -> SwarmConfig {
        SwarmConfig {
            announce_delay: Duration::from_secs(20),
            announce_jitter: 0.5,
            search_only_fraction: 0.3,
            churn_fraction: 0.2,
            ..SwarmConfig::default()
        }
    }
}

impl Default for SwarmConfig {
    fn default() -> Self {
        SwarmConfig {
            nodes: 2000,
            full_nodes: DEFAULT_FULL_NODES,
            torrents: 300,
            peers_per_torrent: 2,
            bad_fraction: 0.3,
            unfetchable_fraction: 0.05,
            large_torrents: 1,
            large_bytes: 3 << 20,
            dht_port: 0,
            client_rate: 50,
            seed: 1,
            announce_delay: Duration::ZERO,
            announce_jitter: 0.5,
            search_only_fraction: 0.0,
            churn_fraction: 0.0,
            hostile_infos: Vec::new(),
            // A mix, as on the real DHT: a fifth of the peers reachable only
            // encrypted, half either way, the rest plaintext only.
            encryption_required_fraction: 0.2,
            encryption_enabled_fraction: 0.5,
            utp_only_fraction: 0.0,
            churn_period: Duration::from_secs(60),
            churn_away: Duration::from_secs(30),
        }
    }
}

/// One torrent in the ground truth.
#[derive(Debug, Clone, Serialize)]
pub struct TruthTorrent {
    /// Hex infohash.
    pub infohash: String,
    /// Name.
    pub name: String,
    /// Total size.
    pub size: u64,
    /// Files `(path, size)`.
    pub files: Vec<(String, u64)>,
    /// Size of the info dictionary.
    pub info_len: usize,
    /// Its peers.
    pub peers: Vec<TruthPeer>,
    /// Whether at least one peer is honest.
    pub fetchable: bool,
}

/// One peer in the ground truth.
#[derive(Debug, Clone, Serialize)]
pub struct TruthPeer {
    /// `ip:port`.
    pub addr: String,
    /// Its behaviour.
    pub behaviour: String,
    /// Whether it serves the metadata correctly within a fetch deadline
    /// (honest; slow peers are not).
    pub honest: bool,
    /// Whether the DHT nodes store it as a seed (BEP 33 `seed`): the
    /// honest peers are, the others are not, so a scrape of a torrent
    /// should count its honest peers as seeders and the rest as leechers.
    pub seed: bool,
    /// What it speaks: `plaintext`, `enabled` (MSE or plaintext) or
    /// `required` (MSE only).
    pub encryption: String,
    /// Its transport: `tcp`, or `utp` (uTP only).
    pub transport: String,
    /// If it churns: its offline windows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub churn: Option<TruthChurn>,
}

/// When a churning peer is offline: for `away_ms` at the start of every
/// `period_ms` cycle, the first cycle starting `period_ms - phase_ms` after
/// the swarm started (see [`Churn::away_at`]).
#[derive(Debug, Clone, Serialize)]
pub struct TruthChurn {
    /// Cycle length, milliseconds.
    pub period_ms: u64,
    /// Offline part of the cycle, milliseconds.
    pub away_ms: u64,
    /// Position in the cycle at the start, milliseconds.
    pub phase_ms: u64,
}

/// Counters of a running swarm.
#[derive(Debug, Default)]
pub struct SwarmCounters {
    /// Datagrams received by the simulated nodes.
    pub dht_in: AtomicU64,
    /// Datagrams they sent.
    pub dht_out: AtomicU64,
    /// Client get_peers sent, summed over targets (searches and the
    /// token re-fetches before delayed announces).
    pub client_queries: AtomicU64,
    /// Client announce_peer sent, summed over targets.
    pub client_announces: AtomicU64,
    /// Clients that searched (once per client, whatever the target count).
    pub client_searches: AtomicU64,
    /// Of those, the ones that will never announce.
    pub client_search_only: AtomicU64,
    /// Delayed announces whose time came (each re-fetches a token from
    /// every target, then announces to those that answered).
    pub client_announce_due: AtomicU64,
    /// Delayed announces dropped because the queue was full.
    pub client_announce_dropped: AtomicU64,
    /// Per target, in the order first added.
    pub per_target: Mutex<Vec<TargetStats>>,
    /// sample_infohashes queries received by the nodes (from anyone: the
    /// swarm's clients send none).
    pub sample_queries: AtomicU64,
    /// Distinct nodes that received at least one of them: how much of
    /// the network a crawler's BEP 51 sweep has covered.
    pub nodes_sampled: AtomicU64,
}

/// Client traffic exchanged with one target.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct TargetStats {
    /// The target.
    pub target: String,
    /// get_peers sent to it (searches and re-fetches).
    pub get_peers: u64,
    /// Its get_peers replies that carried a token.
    pub tokens: u64,
    /// announce_peer sent to it.
    pub announces: u64,
    /// Its replies to those.
    pub announce_acks: u64,
    /// The torrents (indexes into the truth) whose announce it answered:
    /// infohashes it has certainly seen (for loss checks across restarts).
    #[serde(skip)]
    pub acked_torrents: std::collections::BTreeSet<u32>,
    /// KRPC errors it sent back.
    pub errors: u64,
}

impl SwarmCounters {
    fn with_target(&self, target: SocketAddr, f: impl FnOnce(&mut TargetStats)) {
        let Ok(mut v) = self.per_target.lock() else {
            return;
        };
        let key = target.to_string();
        if let Some(t) = v.iter_mut().find(|t| t.target == key) {
            f(t);
        } else {
            let mut t = TargetStats {
                target: key,
                ..TargetStats::default()
            };
            f(&mut t);
            v.push(t);
        }
    }
}

/// A running swarm. Dropping it stops it.
#[derive(Debug)]
pub struct Swarm {
    /// Every torrent, with its peers.
    pub truth: Vec<TruthTorrent>,
    /// Addresses of the simulated DHT nodes (for bootstrapping).
    pub node_addrs: Vec<SocketAddr>,
    /// Counters.
    pub counters: Arc<SwarmCounters>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    peers: Option<PeerServer>,
    targets: Arc<Mutex<Vec<SocketAddr>>>,
    churn: Vec<Option<Churn>>,
    epoch: Instant,
}

/// Why a swarm could not start.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    /// A socket could not be bound.
    #[error("swarm socket: {0}")]
    Io(#[from] std::io::Error),
    /// Too many nodes or peers for their address ranges.
    #[error("{0}")]
    Size(String),
    /// The peer runtime failed.
    #[error("peer runtime: {0}")]
    Peers(String),
}

fn node_addr(i: usize, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(u32::from(NODE_BASE) + i as u32),
        port,
    ))
}

fn peer_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(PEER_BASE) + i as u32)
}

/// The misbehaviours, in the order they are handed out.
pub const BAD_KINDS: [PeerKind; 6] = [
    PeerKind::Slow,
    PeerKind::Serve(Behaviour::Reject),
    PeerKind::Serve(Behaviour::Lie),
    PeerKind::Serve(Behaviour::Oversize),
    PeerKind::Serve(Behaviour::DisconnectMidway),
    PeerKind::Serve(Behaviour::NoHandshake),
];

impl Swarm {
    /// Builds and starts a swarm.
    pub fn start(cfg: &SwarmConfig) -> Result<Swarm, SwarmError> {
        if cfg.nodes == 0 || cfg.nodes > (1 << 21) {
            return Err(SwarmError::Size(format!(
                "nodes must be 1..=2097152, got {}",
                cfg.nodes
            )));
        }
        let n_torrents = cfg.torrents.saturating_add(cfg.hostile_infos.len());
        let n_peers = n_torrents.saturating_mul(cfg.peers_per_torrent.max(1));
        if n_peers > (1 << 20) {
            return Err(SwarmError::Size(format!("too many peers: {n_peers}")));
        }
        let mut rng = Rng::seed_from_u64(cfg.seed);
        let mut torrents: Vec<SynthTorrent> = (0..cfg.torrents)
            .map(|i| {
                let large = (i < cfg.large_torrents).then_some(cfg.large_bytes);
                synth(i, &mut rng, large)
            })
            .collect();
        torrents.extend(
            cfg.hostile_infos
                .iter()
                .enumerate()
                .map(|(i, info)| SynthTorrent {
                    infohash: crate::metainfo::sha1_infohash(info),
                    info: info.clone(),
                    name: format!("hostile-{i}"),
                    total_size: 0,
                    files: Vec::new(),
                }),
        );

        // Peers: torrent t gets peers t*k .. t*k+k-1.
        let k = cfg.peers_per_torrent.max(1);
        let mut plans = Vec::with_capacity(n_peers);
        let mut truth = Vec::with_capacity(torrents.len());
        let unfetchable_every = if cfg.unfetchable_fraction > 0.0 {
            (1.0 / cfg.unfetchable_fraction).round().max(1.0) as usize
        } else {
            usize::MAX
        };
        let mut bad_i = 0usize;
        // Churn draws come from their own stream so that a seed builds the
        // same torrents and misbehaviours whatever the churn settings.
        let mut churn_rng = Rng::seed_from_u64(cfg.seed ^ 0xc4_0c4_0c4);
        let churn_period = cfg.churn_period.max(Duration::from_millis(1));
        // Encryption draws too.
        let mut enc_rng = Rng::seed_from_u64(cfg.seed ^ 0x3e_c3e_c3e);
        // And transport draws: a seed's plans without uTP stay the same.
        let mut utp_rng = Rng::seed_from_u64(cfg.seed ^ 0x07_b07_b07);
        let mut transports = Vec::with_capacity(n_peers);
        let mut churn = Vec::with_capacity(n_peers);
        let mut encryptions = Vec::with_capacity(n_peers);
        for (t, tor) in torrents.iter().enumerate() {
            let hostile = t >= cfg.torrents;
            let unfetchable = !hostile && t % unfetchable_every == unfetchable_every - 1;
            let mut peers = Vec::with_capacity(k);
            for j in 0..k {
                let idx = t * k + j;
                let bad = unfetchable
                    || (!hostile && j > 0 && rng.below(1000) < (cfg.bad_fraction * 1000.0) as u64);
                let kind = if bad {
                    bad_i += 1;
                    BAD_KINDS[bad_i % BAD_KINDS.len()]
                } else {
                    PeerKind::Serve(Behaviour::Honest)
                };
                // Multi-piece metadata is needed for a mid-transfer disconnect
                // to be one; on single-piece metadata it would succeed.
                let kind = if kind == PeerKind::Serve(Behaviour::DisconnectMidway)
                    && tor.info.len() <= 16384
                {
                    PeerKind::Serve(Behaviour::Reject)
                } else {
                    kind
                };
                let churns = churn_rng.below(1_000_000) < (cfg.churn_fraction * 1e6) as u64;
                let phase = churn_rng.below(churn_period.as_millis().max(1) as u64);
                let c = churns.then_some(Churn {
                    period: churn_period,
                    away: cfg.churn_away.min(churn_period),
                    phase: Duration::from_millis(phase),
                });
                churn.push(c);
                let e = enc_rng.below(1_000_000);
                let required = (cfg.encryption_required_fraction * 1e6) as u64;
                let enabled = (cfg.encryption_enabled_fraction * 1e6) as u64;
                let encryption = if e < required {
                    PeerEncryption::Required
                } else if e < required.saturating_add(enabled) {
                    PeerEncryption::Enabled
                } else {
                    PeerEncryption::Plaintext
                };
                let utp_only = matches!(kind, PeerKind::Serve(_))
                    && utp_rng.below(1_000_000) < (cfg.utp_only_fraction * 1e6) as u64;
                // MSE is TCP-only here: a uTP-only peer speaks plaintext.
                let encryption = if utp_only {
                    PeerEncryption::Plaintext
                } else {
                    encryption
                };
                encryptions.push(encryption);
                transports.push(utp_only);
                plans.push(PeerPlan {
                    ip: peer_ip(idx),
                    kind,
                    torrent: t,
                    churn: c,
                    encryption,
                    utp_only,
                });
                peers.push((idx, kind));
            }
            truth.push((t, peers));
        }
        let infos: Arc<Vec<(Id, Arc<Vec<u8>>)>> = Arc::new(
            torrents
                .iter()
                .map(|t| (t.infohash, Arc::new(t.info.clone())))
                .collect(),
        );
        let epoch = Instant::now();
        let peer_server = PeerServer::start(plans, infos, epoch).map_err(SwarmError::Peers)?;
        let tcp_port = peer_server.port;
        let truth: Vec<TruthTorrent> = truth
            .into_iter()
            .map(|(t, peers)| {
                let tor = &torrents[t];
                let peers: Vec<TruthPeer> = peers
                    .into_iter()
                    .map(|(idx, kind)| TruthPeer {
                        addr: SocketAddr::from((peer_ip(idx), tcp_port)).to_string(),
                        behaviour: kind.label().to_string(),
                        honest: kind.honest(),
                        seed: kind.honest(),
                        encryption: encryptions
                            .get(idx)
                            .copied()
                            .unwrap_or(PeerEncryption::Plaintext)
                            .label()
                            .to_string(),
                        transport: if transports.get(idx).copied().unwrap_or(false) {
                            "utp"
                        } else {
                            "tcp"
                        }
                        .to_string(),
                        churn: churn.get(idx).copied().flatten().map(|c| TruthChurn {
                            period_ms: c.period.as_millis() as u64,
                            away_ms: c.away.as_millis() as u64,
                            phase_ms: c.phase.as_millis() as u64,
                        }),
                    })
                    .collect();
                TruthTorrent {
                    infohash: tor.infohash.to_hex(),
                    name: tor.name.clone(),
                    size: tor.total_size,
                    files: tor.files.clone(),
                    info_len: tor.info.len(),
                    fetchable: t < cfg.torrents && peers.iter().any(|p| p.honest),
                    peers,
                }
            })
            .collect();

        // The DHT side.
        let sock = PktSocket::bind(cfg.dht_port, Duration::from_millis(5))?;
        let port = sock.port()?;
        let t0 = Instant::now();
        let infos_ids: Vec<NodeInfo> = (0..cfg.nodes)
            .map(|i| NodeInfo {
                id: Id::random(&mut rng),
                addr: node_addr(i, port),
            })
            .collect();
        let full = cfg.full_nodes.min(cfg.nodes);
        let mut nodes: Vec<Node> = Vec::with_capacity(full);
        for (i, info) in infos_ids.iter().enumerate().take(full) {
            let mut nc = NodeConfig::population(
                Identity {
                    addr: info.addr,
                    id: info.id,
                },
                cfg.seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9),
                [(i % 251) as u8; 32],
            );
            // Loopback load: no per-IP throttling of the crawler under test.
            nc.sample_interval = 30;
            nc.unthrottle();
            nodes.push(Node::new(nc, t0));
        }
        let n = cfg.nodes;
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| infos_ids[i].id);
        for (pos, &i) in order.iter().enumerate() {
            if i >= full {
                continue;
            }
            for d in 1..=12usize.min(n.saturating_sub(1)) {
                for j in [order[(pos + d) % n], order[(pos + n - d) % n]] {
                    if j != i {
                        nodes[i].add_known_node(infos_ids[j], t0);
                    }
                }
            }
            for _ in 0..8 {
                let j = rng.below(n as u64) as usize;
                if j != i {
                    nodes[i].add_known_node(infos_ids[j], t0);
                }
            }
        }
        // Store each torrent's peers at the 8 nodes closest to it.
        let mut placed: Vec<(u32, u32)> = Vec::new();
        for (t, tor) in torrents.iter().enumerate() {
            let pos = order.partition_point(|&i| infos_ids[i].id < tor.infohash);
            let mut near: Vec<usize> = (0..16)
                .map(|d| order[(pos + n + d).wrapping_sub(8) % n])
                .collect();
            near.sort_by_key(|&i| infos_ids[i].id.distance(&tor.infohash));
            near.dedup();
            for &i in near.iter().take(8) {
                if i >= full {
                    placed.push((i as u32, t as u32));
                    continue;
                }
                for p in &truth[t].peers {
                    if let Ok(addr) = p.addr.parse() {
                        nodes[i].seed_peer(tor.infohash, addr, p.seed, t0);
                    }
                }
            }
        }
        let light = LightNodes::new(full, n, placed);
        let order: Vec<u32> = order.into_iter().map(|i| i as u32).collect();
        let node_addrs = infos_ids.iter().map(|x| x.addr).collect();
        let counters = Arc::new(SwarmCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let targets = Arc::new(Mutex::new(Vec::new()));
        let client_torrents: Vec<(Id, Vec<SocketAddr>)> = torrents
            .iter()
            .zip(&truth)
            .map(|(t, tr)| {
                (
                    t.infohash,
                    tr.peers
                        .iter()
                        .filter_map(|p| p.addr.parse().ok())
                        .collect(),
                )
            })
            .collect();
        let dht = DhtLoop {
            sock,
            nodes,
            light,
            net: (infos_ids, order),
            sampled: vec![0u64; n.div_ceil(64)],
            base: u32::from(NODE_BASE),
            stop: stop.clone(),
            counters: counters.clone(),
            targets: targets.clone(),
            client_rate: cfg.client_rate,
            clients: client_torrents,
            rng: Rng::seed_from_u64(cfg.seed ^ 0x5157),
            client_rng: Rng::seed_from_u64(cfg.seed ^ 0xc11e),
            announce_delay: cfg.announce_delay,
            announce_jitter: cfg.announce_jitter.clamp(0.0, 1.0),
            search_only_fraction: cfg.search_only_fraction.clamp(0.0, 1.0),
            pending: BinaryHeap::new(),
        };
        let t = std::thread::Builder::new()
            .name("swarm-dht".into())
            .spawn(move || dht.run())?;
        Ok(Swarm {
            truth,
            node_addrs,
            counters,
            stop,
            threads: vec![t],
            peers: Some(peer_server),
            targets,
            churn,
            epoch,
        })
    }

    /// Sends client traffic (get_peers, then maybe announce_peer) to every
    /// one of `targets`, replacing the targets set before. All of them start
    /// together: from the next tick every client search and announce goes
    /// to each target in the same tick, each announce with the token that
    /// target handed out, so harvesters compared side by side see the same
    /// stream from the first query. Duplicates are sent to once.
    pub fn set_targets(&self, targets: &[SocketAddr]) {
        if let Ok(mut t) = self.targets.lock() {
            t.clear();
            for &target in targets {
                if !t.contains(&target) {
                    t.push(target);
                }
            }
        }
        for &target in targets {
            self.counters.with_target(target, |_| {});
        }
    }

    /// The targets client traffic goes to now.
    pub fn targets(&self) -> Vec<SocketAddr> {
        self.targets.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Client traffic per target so far (every target ever set or added).
    pub fn target_stats(&self) -> Vec<TargetStats> {
        self.counters
            .per_target
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default()
    }

    /// Whether the peer at `addr` is offline (churned away) at `at`. False
    /// for an address that is not a peer of this swarm or does not churn.
    pub fn peer_away(&self, addr: SocketAddr, at: Instant) -> bool {
        let IpAddr::V4(ip) = addr.ip() else {
            return false;
        };
        let Some(idx) = u32::from(ip).checked_sub(u32::from(PEER_BASE)) else {
            return false;
        };
        self.churn
            .get(idx as usize)
            .copied()
            .flatten()
            .is_some_and(|c| c.away_at(at.saturating_duration_since(self.epoch)))
    }

    /// Writes the ground truth as JSON.
    pub fn write_truth(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(&self.truth).map_err(std::io::Error::other)?;
        std::fs::write(path, json)
    }

    /// Stops every thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(p) = self.peers.take() {
            p.stop();
        }
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Transaction-id kinds of client queries: `[kind, torrent (3 bytes)]`.
const TID_SEARCH: u8 = 0xc0;
/// A search whose reply is answered with an announce (no delay).
const TID_SEARCH_ANNOUNCE: u8 = 0xc1;
/// An announce_peer.
const TID_ANNOUNCE: u8 = 0xc2;
/// The token re-fetch just before a delayed announce.
const TID_REFETCH: u8 = 0xc3;
/// Most delayed announces waiting at once (500 clients/s × 60 s × 2).
const MAX_PENDING: usize = 60_000;

struct DhtLoop {
    sock: PktSocket,
    /// The full nodes, `0..full_nodes`.
    nodes: Vec<Node>,
    /// The light ones, `full_nodes..`.
    light: LightNodes,
    /// Every node's id and address, and the indexes in id order.
    net: (Vec<NodeInfo>, Vec<u32>),
    /// Bit per node: has received a sample_infohashes.
    sampled: Vec<u64>,
    base: u32,
    stop: Arc<AtomicBool>,
    counters: Arc<SwarmCounters>,
    targets: Arc<Mutex<Vec<SocketAddr>>>,
    client_rate: u32,
    clients: Vec<(Id, Vec<SocketAddr>)>,
    /// Which torrent each client searches: the stream the swarm has always
    /// used, so a seed gives the same client order as before.
    rng: Rng,
    /// Whether a client announces, and its delay.
    client_rng: Rng,
    announce_delay: Duration,
    announce_jitter: f64,
    search_only_fraction: f64,
    /// Delayed announces: (when, torrent).
    pending: BinaryHeap<std::cmp::Reverse<(Instant, usize)>>,
}

impl DhtLoop {
    fn node_of(&self, ip: Ipv4Addr) -> Option<usize> {
        let off = u32::from(ip).checked_sub(self.base)? as usize;
        (off < self.net.0.len()).then_some(off)
    }

    /// Counts a sample_infohashes received by node `i`.
    fn mark_sampled(&mut self, i: usize) {
        self.counters.sample_queries.fetch_add(1, Ordering::Relaxed);
        if let Some(w) = self.sampled.get_mut(i / 64) {
            let bit = 1u64 << (i % 64);
            if *w & bit == 0 {
                *w |= bit;
                self.counters.nodes_sampled.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A light node answers (it decodes the query, and says whether it was
    /// a sample).
    fn answer_light(&mut self, i: usize, from: SocketAddr, bytes: &[u8], out: &mut Vec<u8>) {
        let net = Network {
            infos: &self.net.0,
            order: &self.net.1,
            torrents: &self.clients,
        };
        let Some(answered) = self.light.answer(i, from, bytes, &net, out) else {
            return;
        };
        if answered == Answered::Sample {
            self.mark_sampled(i);
        }
        if let Some(SocketAddr::V4(me)) = self.net.0.get(i).map(|x| x.addr) {
            if self.sock.send_from(*me.ip(), from, out).is_ok() {
                self.counters.dht_out.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn flush(&mut self, i: usize) {
        let Some(node) = self.nodes.get_mut(i) else {
            return;
        };
        let mut sent = 0;
        while let Some(t) = node.poll_transmit() {
            if let SocketAddr::V4(me) = node.config().identities[0].addr {
                if self.sock.send_from(*me.ip(), t.to, &t.bytes).is_ok() {
                    sent += 1;
                }
            }
            node.recycle(t.bytes);
        }
        while node.poll_action().is_some() {}
        self.counters.dht_out.fetch_add(sent, Ordering::Relaxed);
    }

    fn run(mut self) {
        let mut buf = vec![0u8; 2048];
        let mut timers: BinaryHeap<std::cmp::Reverse<(Instant, usize)>> = BinaryHeap::new();
        let now = Instant::now();
        // Each node's scheduled `handle_timeout` (older heap entries are
        // stale).
        let mut scheduled: Vec<Instant> = Vec::with_capacity(self.nodes.len());
        for (i, node) in self.nodes.iter().enumerate() {
            let at = node.poll_timeout().unwrap_or(now + Duration::from_secs(5));
            scheduled.push(at);
            timers.push(std::cmp::Reverse((at, i)));
        }
        let mut next_client = Instant::now();
        let interval = if self.client_rate > 0 {
            Duration::from_secs(1) / self.client_rate
        } else {
            Duration::from_secs(3600)
        };
        let mut out = Vec::with_capacity(512);
        let mut targets: Vec<SocketAddr> = Vec::new();
        while !self.stop.load(Ordering::Relaxed) {
            if let Ok(t) = self.targets.lock() {
                if *t != targets {
                    targets.clone_from(&t);
                }
            }
            // Drain what has arrived.
            for _ in 0..256 {
                let r = match self.sock.recv(&mut buf) {
                    Ok(Some(r)) => r,
                    _ => break,
                };
                self.counters.dht_in.fetch_add(1, Ordering::Relaxed);
                let from = SocketAddr::V4(r.from);
                if let Some(i) = self.node_of(r.dst) {
                    if self.light.is_light(i) {
                        self.answer_light(i, from, &buf[..r.len], &mut out);
                        continue;
                    }
                    // A full node decodes its own datagram; a substring
                    // test is enough to count its samples.
                    const SAMPLE: &[u8] = b"17:sample_infohashes";
                    if buf[..r.len].windows(SAMPLE.len()).any(|w| w == SAMPLE) {
                        self.mark_sampled(i);
                    }
                    let now = Instant::now();
                    self.nodes[i].handle_datagram(0, from, &buf[..r.len], now);
                    self.flush(i);
                    // Work it left for later may be due before its timer.
                    if let Some(t) = self.nodes[i].poll_timeout() {
                        let t = t.max(now + Duration::from_millis(50));
                        if scheduled.get(i).is_some_and(|&s| t < s) {
                            scheduled[i] = t;
                            timers.push(std::cmp::Reverse((t, i)));
                        }
                    }
                } else if targets.contains(&from) {
                    self.handle_client_reply(r.dst, from, &buf[..r.len], &mut out);
                }
            }
            let now = Instant::now();
            while let Some(std::cmp::Reverse((at, i))) = timers.peek().copied() {
                if at > now {
                    break;
                }
                timers.pop();
                if scheduled.get(i) != Some(&at) {
                    continue;
                }
                self.nodes[i].handle_timeout(now);
                self.flush(i);
                let next = self.nodes[i]
                    .poll_timeout()
                    .unwrap_or(now + Duration::from_secs(5))
                    .max(now + Duration::from_millis(50));
                scheduled[i] = next;
                timers.push(std::cmp::Reverse((next, i)));
            }
            if targets.is_empty() || self.clients.is_empty() {
                // Nobody to talk to: clients start when a target is set.
                next_client = now;
                continue;
            }
            // New clients: each searches at every target.
            let mut budget = 64;
            while next_client <= now && budget > 0 {
                budget -= 1;
                next_client += interval;
                self.new_client(now, &targets, &mut out);
            }
            if next_client + Duration::from_secs(1) < now {
                next_client = now;
            }
            // Delayed announces that are due: a fresh token first.
            let mut budget = 256;
            while let Some(std::cmp::Reverse((at, t))) = self.pending.peek().copied() {
                if at > now || budget == 0 {
                    break;
                }
                budget -= 1;
                self.pending.pop();
                self.counters
                    .client_announce_due
                    .fetch_add(1, Ordering::Relaxed);
                self.send_get_peers(t, TID_REFETCH, &targets, &mut out);
            }
        }
    }

    /// One client arrives: it searches, and announces now, later or never.
    fn new_client(&mut self, now: Instant, targets: &[SocketAddr], out: &mut Vec<u8>) {
        let t = self.rng.below(self.clients.len() as u64) as usize;
        let search_only =
            self.client_rng.below(1_000_000) < (self.search_only_fraction * 1e6) as u64;
        // Drawn for every client so the stream does not depend on the mix.
        let spread = self.client_rng.below(1_000_001) as f64 / 1e6 * 2.0 - 1.0;
        self.counters
            .client_searches
            .fetch_add(1, Ordering::Relaxed);
        if search_only {
            self.counters
                .client_search_only
                .fetch_add(1, Ordering::Relaxed);
            self.send_get_peers(t, TID_SEARCH, targets, out);
        } else if self.announce_delay.is_zero() {
            self.send_get_peers(t, TID_SEARCH_ANNOUNCE, targets, out);
        } else {
            self.send_get_peers(t, TID_SEARCH, targets, out);
            let delay = self
                .announce_delay
                .mul_f64((1.0 + self.announce_jitter * spread).max(0.0));
            if self.pending.len() < MAX_PENDING {
                self.pending.push(std::cmp::Reverse((now + delay, t)));
            } else {
                self.counters
                    .client_announce_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// get_peers for torrent `t` from its client (first peer) to every
    /// target.
    fn send_get_peers(&mut self, t: usize, kind: u8, targets: &[SocketAddr], out: &mut Vec<u8>) {
        let Some((infohash, peers)) = self.clients.get(t) else {
            return;
        };
        let Some(SocketAddr::V4(peer)) = peers.first().copied() else {
            return;
        };
        let tid = [kind, (t >> 16) as u8, (t >> 8) as u8, t as u8];
        out.clear();
        encode_query(
            out,
            &Header {
                tid: &tid,
                version: Some(b"SW01"),
            },
            &client_id(*peer.ip()),
            &Method::GetPeers {
                infohash: *infohash,
                noseed: false,
                scrape: false,
            },
            Want::default(),
            false,
        );
        for &target in targets {
            if self.sock.send_from(*peer.ip(), target, out).is_ok() {
                self.counters.client_queries.fetch_add(1, Ordering::Relaxed);
                self.counters.with_target(target, |s| s.get_peers += 1);
            }
        }
    }

    /// A target's reply to a client: counts it and, for a search that
    /// announces, announces to that target with the token it gave.
    fn handle_client_reply(
        &mut self,
        dst: Ipv4Addr,
        from: SocketAddr,
        msg: &[u8],
        out: &mut Vec<u8>,
    ) {
        let Ok(m) = decode(msg) else { return };
        if m.tid.len() != 4 || !(TID_SEARCH..=TID_REFETCH).contains(&m.tid[0]) {
            return;
        }
        let kind = m.tid[0];
        let r = match m.body {
            Body::Response(r) => r,
            Body::Error(_) => {
                self.counters.with_target(from, |s| s.errors += 1);
                return;
            }
            _ => return,
        };
        if kind == TID_ANNOUNCE {
            let t = u32::from_be_bytes([0, m.tid[1], m.tid[2], m.tid[3]]);
            self.counters.with_target(from, |s| {
                s.announce_acks += 1;
                s.acked_torrents.insert(t);
            });
            return;
        }
        let Some(token) = r.token else { return };
        self.counters.with_target(from, |s| s.tokens += 1);
        if kind == TID_SEARCH {
            return;
        }
        let t =
            (usize::from(m.tid[1]) << 16) | (usize::from(m.tid[2]) << 8) | usize::from(m.tid[3]);
        let Some((infohash, peers)) = self.clients.get(t) else {
            return;
        };
        // The client's own address: the announce carries it (port in the
        // message, IP as the datagram's source).
        let Some(SocketAddr::V4(peer)) =
            peers.first().copied().filter(|p| p.ip() == IpAddr::V4(dst))
        else {
            return;
        };
        out.clear();
        encode_query(
            out,
            &Header {
                tid: &[TID_ANNOUNCE, m.tid[1], m.tid[2], m.tid[3]],
                version: Some(b"SW01"),
            },
            &client_id(dst),
            &Method::AnnouncePeer {
                infohash: *infohash,
                port: peer.port(),
                implied_port: false,
                token,
                seed: Some(true),
            },
            Want::default(),
            false,
        );
        if self.sock.send_from(dst, from, out).is_ok() {
            self.counters
                .client_announces
                .fetch_add(1, Ordering::Relaxed);
            self.counters.with_target(from, |s| s.announces += 1);
        }
    }
}

/// A stable id for a client address.
fn client_id(ip: Ipv4Addr) -> Id {
    let mut b = [0x5au8; 20];
    b[..4].copy_from_slice(&ip.octets());
    Id(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_kinds_and_addresses() {
        assert!(PeerKind::Serve(Behaviour::Honest).honest());
        assert!(!PeerKind::Slow.honest());
        assert!(BAD_KINDS.iter().all(|k| !k.honest()));
        assert_eq!(node_addr(0, 7), "127.64.0.1:7".parse().unwrap());
        assert_eq!(peer_ip(256), Ipv4Addr::new(127, 96, 1, 1));
    }
}
