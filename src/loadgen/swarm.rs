//! `dht-loadgen swarm`: a simulated DHT and BitTorrent swarm on loopback.
//!
//! * `nodes` DHT nodes, each on its own address in 127.64.0.0/10 and all on
//!   one UDP port, served by one wildcard socket with `IP_PKTINFO`
//!   ([`super::pktinfo`]). Each is a real [`Node`] (the crawler's own state
//!   machine, crawling off), so they answer ping, find_node, get_peers,
//!   announce_peer and sample_infohashes exactly as a good node does. Their
//!   tables hold their id-order neighbours plus random contacts, so they
//!   form one consistent Kademlia network.
//! * `torrents` synthetic torrents ([`super::torrents`]); each infohash is
//!   stored (with its peers) at the 8 nodes closest to it, so sampling and
//!   lookups behave as on the real DHT.
//! * Peers on TCP, each on its own address in 127.96.0.0/11, serving the
//!   metadata with BEP 3/10/9 ([`crate::wire::MetadataServe`]), a chosen
//!   share of them misbehaving: slow, rejecting, lying, oversize,
//!   disconnecting mid-transfer, or silent.
//! * Clients: at `client_rate` per second, a peer's address sends get_peers
//!   for one of its torrents to the crawler and, with the token, announces
//!   itself, as a real client would.
//!
//! The swarm writes a ground-truth file listing every torrent, its
//! infohash, and which of its peers are honest.

use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::peers::{PeerPlan, PeerServer};
use super::pktinfo::PktSocket;
use super::torrents::{synth, SynthTorrent};
use crate::dht::{Identity, Node, NodeConfig};
use crate::id::Id;
use crate::krpc::message::{encode_query, Header, Method, Want};
use crate::krpc::{decode, Body, NodeInfo};
use crate::rng::Rng;
use crate::wire::Behaviour;

/// First address of the simulated DHT nodes.
pub const NODE_BASE: Ipv4Addr = Ipv4Addr::new(127, 64, 0, 1);
/// First address of the simulated peers.
pub const PEER_BASE: Ipv4Addr = Ipv4Addr::new(127, 96, 0, 1);

/// How a swarm is made.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// Simulated DHT nodes.
    pub nodes: usize,
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
    /// Client get_peers/announce_peer per second toward the target.
    pub client_rate: u32,
    /// RNG seed (the swarm is deterministic for a seed).
    pub seed: u64,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        SwarmConfig {
            nodes: 2000,
            torrents: 300,
            peers_per_torrent: 2,
            bad_fraction: 0.3,
            unfetchable_fraction: 0.05,
            large_torrents: 1,
            large_bytes: 3 << 20,
            dht_port: 0,
            client_rate: 50,
            seed: 1,
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
    /// Whether it serves the metadata correctly (honest or slow).
    pub honest: bool,
}

/// Counters of a running swarm.
#[derive(Debug, Default)]
pub struct SwarmCounters {
    /// Datagrams received by the simulated nodes.
    pub dht_in: AtomicU64,
    /// Datagrams they sent.
    pub dht_out: AtomicU64,
    /// Client queries sent to the target.
    pub client_queries: AtomicU64,
    /// Client announces sent to the target.
    pub client_announces: AtomicU64,
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
    target: Arc<std::sync::Mutex<Option<SocketAddr>>>,
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

/// What a simulated peer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerKind {
    /// A [`Behaviour`] of the serving state machine.
    Serve(Behaviour),
    /// Honest, but trickles its bytes slowly.
    Slow,
}

impl PeerKind {
    /// The ground-truth label.
    pub fn label(self) -> &'static str {
        match self {
            PeerKind::Slow => "slow",
            PeerKind::Serve(Behaviour::Honest) => "honest",
            PeerKind::Serve(Behaviour::Reject) => "reject",
            PeerKind::Serve(Behaviour::Lie) => "lie",
            PeerKind::Serve(Behaviour::Oversize) => "oversize",
            PeerKind::Serve(Behaviour::DisconnectMidway) => "disconnect",
            PeerKind::Serve(Behaviour::NoHandshake) => "silent",
        }
    }

    /// Whether a fetch from it can succeed (slow ones do, eventually, but
    /// are not counted on: a crawler with a short deadline drops them).
    pub fn honest(self) -> bool {
        matches!(self, PeerKind::Serve(Behaviour::Honest))
    }
}

impl Swarm {
    /// Builds and starts a swarm.
    pub fn start(cfg: &SwarmConfig) -> Result<Swarm, SwarmError> {
        if cfg.nodes == 0 || cfg.nodes > (1 << 21) {
            return Err(SwarmError::Size(format!(
                "nodes must be 1..=2097152, got {}",
                cfg.nodes
            )));
        }
        let n_peers = cfg.torrents.saturating_mul(cfg.peers_per_torrent.max(1));
        if n_peers > (1 << 20) {
            return Err(SwarmError::Size(format!("too many peers: {n_peers}")));
        }
        let mut rng = Rng::seed_from_u64(cfg.seed);
        let torrents: Vec<SynthTorrent> = (0..cfg.torrents)
            .map(|i| {
                let large = (i < cfg.large_torrents).then_some(cfg.large_bytes);
                synth(i, &mut rng, large)
            })
            .collect();

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
        for (t, tor) in torrents.iter().enumerate() {
            let unfetchable = t % unfetchable_every == unfetchable_every - 1;
            let mut peers = Vec::with_capacity(k);
            for j in 0..k {
                let idx = t * k + j;
                let bad =
                    unfetchable || (j > 0 && rng.below(1000) < (cfg.bad_fraction * 1000.0) as u64);
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
                plans.push(PeerPlan {
                    ip: peer_ip(idx),
                    kind,
                    torrent: t,
                });
                peers.push((idx, kind));
            }
            truth.push((t, peers));
        }
        let infos: Arc<Vec<(Id, Arc<Vec<u8>>)>> = Arc::new(
            torrents
                .iter()
                .map(|t| (t.info_hash, Arc::new(t.info.clone())))
                .collect(),
        );
        let peer_server = PeerServer::start(plans, infos).map_err(SwarmError::Peers)?;
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
                    })
                    .collect();
                TruthTorrent {
                    infohash: tor.info_hash.to_hex(),
                    name: tor.name.clone(),
                    size: tor.total_size,
                    files: tor.files.clone(),
                    info_len: tor.info.len(),
                    fetchable: peers.iter().any(|p| p.honest),
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
        let mut nodes: Vec<Node> = Vec::with_capacity(cfg.nodes);
        for (i, info) in infos_ids.iter().enumerate() {
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
            nc.max_pps = 100_000;
            nc.per_ip_pps = 100_000;
            nc.per_ip_burst = 100_000;
            nc.inbound_per_ip_pps = 100_000;
            nc.inbound_per_ip_burst = 100_000;
            nodes.push(Node::new(nc, t0));
        }
        let n = cfg.nodes;
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| infos_ids[i].id);
        for (pos, &i) in order.iter().enumerate() {
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
        for (t, tor) in torrents.iter().enumerate() {
            let pos = order.partition_point(|&i| infos_ids[i].id < tor.info_hash);
            let mut near: Vec<usize> = (0..16)
                .map(|d| order[(pos + n + d).wrapping_sub(8) % n])
                .collect();
            near.sort_by_key(|&i| infos_ids[i].id.distance(&tor.info_hash));
            near.dedup();
            for &i in near.iter().take(8) {
                for p in &truth[t].peers {
                    if let Ok(addr) = p.addr.parse() {
                        nodes[i].seed_peer(tor.info_hash, addr, t0);
                    }
                }
            }
        }
        let node_addrs = infos_ids.iter().map(|x| x.addr).collect();
        let counters = Arc::new(SwarmCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let target = Arc::new(std::sync::Mutex::new(None));
        let client_torrents: Vec<(Id, Vec<SocketAddr>)> = torrents
            .iter()
            .zip(&truth)
            .map(|(t, tr)| {
                (
                    t.info_hash,
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
            base: u32::from(NODE_BASE),
            stop: stop.clone(),
            counters: counters.clone(),
            target: target.clone(),
            client_rate: cfg.client_rate,
            clients: client_torrents,
            rng: Rng::seed_from_u64(cfg.seed ^ 0x5157),
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
            target,
        })
    }

    /// Starts sending client traffic (get_peers, then announce_peer) to
    /// `target`.
    pub fn set_target(&self, target: SocketAddr) {
        if let Ok(mut t) = self.target.lock() {
            *t = Some(target);
        }
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

struct DhtLoop {
    sock: PktSocket,
    nodes: Vec<Node>,
    base: u32,
    stop: Arc<AtomicBool>,
    counters: Arc<SwarmCounters>,
    target: Arc<std::sync::Mutex<Option<SocketAddr>>>,
    client_rate: u32,
    clients: Vec<(Id, Vec<SocketAddr>)>,
    rng: Rng,
}

impl DhtLoop {
    fn node_of(&self, ip: Ipv4Addr) -> Option<usize> {
        let off = u32::from(ip).checked_sub(self.base)? as usize;
        (off < self.nodes.len()).then_some(off)
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
        for (i, node) in self.nodes.iter().enumerate() {
            let at = node.poll_timeout().unwrap_or(now + Duration::from_secs(5));
            timers.push(std::cmp::Reverse((at, i)));
        }
        // Client tids: [0xc1, torrent index (3 bytes)].
        let mut next_client = Instant::now();
        let interval = if self.client_rate > 0 {
            Duration::from_secs(1) / self.client_rate
        } else {
            Duration::from_secs(3600)
        };
        let mut out = Vec::with_capacity(512);
        while !self.stop.load(Ordering::Relaxed) {
            // Drain what has arrived.
            for _ in 0..256 {
                let r = match self.sock.recv(&mut buf) {
                    Ok(Some(r)) => r,
                    _ => break,
                };
                self.counters.dht_in.fetch_add(1, Ordering::Relaxed);
                let from = SocketAddr::V4(r.from);
                if let Some(i) = self.node_of(r.dst) {
                    self.nodes[i].handle_datagram(0, from, &buf[..r.len], Instant::now());
                    self.flush(i);
                } else {
                    self.handle_client_reply(r.dst, from, r.len, &buf, &mut out);
                }
            }
            let now = Instant::now();
            while let Some(std::cmp::Reverse((at, i))) = timers.peek().copied() {
                if at > now {
                    break;
                }
                timers.pop();
                self.nodes[i].handle_timeout(now);
                self.flush(i);
                let next = self.nodes[i]
                    .poll_timeout()
                    .unwrap_or(now + Duration::from_secs(5))
                    .max(now + Duration::from_millis(50));
                timers.push(std::cmp::Reverse((next, i)));
            }
            // Client traffic toward the target.
            let target = self.target.lock().ok().and_then(|t| *t);
            if let (Some(target), false) = (target, self.clients.is_empty()) {
                let mut budget = 64;
                while next_client <= now && budget > 0 {
                    budget -= 1;
                    next_client += interval;
                    let t = self.rng.below(self.clients.len() as u64) as usize;
                    let (ih, peers) = &self.clients[t];
                    let Some(SocketAddr::V4(peer)) = peers.first().copied() else {
                        continue;
                    };
                    let tid = [0xc1, (t >> 16) as u8, (t >> 8) as u8, t as u8];
                    out.clear();
                    encode_query(
                        &mut out,
                        &Header {
                            tid: &tid,
                            version: Some(b"SW01"),
                        },
                        &client_id(*peer.ip()),
                        &Method::GetPeers {
                            info_hash: *ih,
                            noseed: false,
                            scrape: false,
                        },
                        Want::default(),
                        false,
                    );
                    if self.sock.send_from(*peer.ip(), target, &out).is_ok() {
                        self.counters.client_queries.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if next_client + Duration::from_secs(1) < now {
                    next_client = now;
                }
            }
        }
    }

    /// A reply to a client's get_peers: announce with its token.
    fn handle_client_reply(
        &mut self,
        dst: Ipv4Addr,
        from: SocketAddr,
        len: usize,
        buf: &[u8],
        out: &mut Vec<u8>,
    ) {
        let Ok(m) = decode(&buf[..len]) else { return };
        let Body::Response(r) = m.body else { return };
        let Some(token) = r.token else { return };
        if m.tid.len() != 4 || m.tid[0] != 0xc1 {
            return;
        }
        let t =
            (usize::from(m.tid[1]) << 16) | (usize::from(m.tid[2]) << 8) | usize::from(m.tid[3]);
        let Some((ih, peers)) = self.clients.get(t) else {
            return;
        };
        let Some(SocketAddr::V4(peer)) = peers
            .iter()
            .copied()
            .find(|p| p.ip() == std::net::IpAddr::V4(dst))
        else {
            return;
        };
        out.clear();
        encode_query(
            out,
            &Header {
                tid: &[0xc2, 0, 0, 0],
                version: Some(b"SW01"),
            },
            &client_id(dst),
            &Method::AnnouncePeer {
                info_hash: *ih,
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
