//! The per-shard metadata fetch pool: the glue between harvested
//! infohashes, the `shards` TCP layer and the sans-IO exchange in
//! [`crate::wire`].
//!
//! Each shard runs one pool. A job is one infohash with the peers known for
//! it. The pool
//! * bounds concurrency twice: `concurrency` jobs at once (a glommio
//!   semaphore), and the TCP layer's per-shard and per-IP connection caps,
//!   which are taken before any socket exists, so file descriptors stay
//!   bounded under any load;
//! * applies back-pressure: the queue is bounded, and a job that does not
//!   fit is handed back to the caller and counted, never dropped silently;
//! * tries a job's peers a few at a time (`peers_at_once`), stops at the
//!   first verified metadata and cancels the other attempts;
//! * penalises peers that lie (hash mismatch, malformed data) for a while, in
//!   a bounded table;
//! * sends each verified torrent to the store with its source and timings,
//!   and counts failures by reason.

mod attempt;
mod stats;

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::sync::Semaphore;
use shards::TcpConnector;

pub use attempt::{attempt, AttemptError};
pub use stats::{FailureKind, FetchStats};

use crate::id::Id;
use crate::metainfo;
use crate::store::{Source, StoreWriter, TorrentRecord};
use crate::wire::FetchConfig;

type AttemptResult = (SocketAddr, Result<crate::wire::Verified, AttemptError>);

/// One infohash to fetch.
#[derive(Debug, Clone)]
pub struct FetchJob {
    /// The infohash.
    pub info_hash: Id,
    /// How it was found.
    pub source: Source,
    /// When it was found.
    pub discovered_at: SystemTime,
    /// Peers known for it.
    pub peers: Vec<SocketAddr>,
}

/// Pool knobs.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Jobs fetched at once on this shard (`--fetch-concurrency`).
    pub concurrency: usize,
    /// Connection attempts at once for one job.
    pub peers_at_once: usize,
    /// Peers tried per job at most.
    pub max_peers_per_job: usize,
    /// Jobs waiting at most; beyond that `submit` hands the job back.
    pub max_queue: usize,
    /// How long a lying peer is skipped.
    pub penalty: Duration,
    /// Penalised IPs remembered at most.
    pub max_penalised: usize,
    /// The exchange's limits and deadlines.
    pub fetch: FetchConfig,
    /// Our BitTorrent peer id.
    pub peer_id: [u8; 20],
}

impl Default for PoolConfig {
    fn default() -> Self {
        let mut peer_id = *b"-DH0100-000000000000";
        crate::rng::Rng::from_entropy().fill(&mut peer_id[8..]);
        PoolConfig {
            concurrency: 256,
            peers_at_once: 2,
            max_peers_per_job: 16,
            max_queue: 65_536,
            penalty: Duration::from_secs(300),
            max_penalised: 65_536,
            fetch: FetchConfig::default(),
            peer_id,
        }
    }
}

/// A shard's fetch pool. Lives on one executor (it is `!Send`).
#[derive(Debug)]
pub struct FetchPool {
    cfg: PoolConfig,
    tx: LocalSender<FetchJob>,
    rx: RefCell<Option<LocalReceiver<FetchJob>>>,
    stats: Rc<FetchStats>,
    penalised: RefCell<HashMap<IpAddr, Instant>>,
    /// Extra peers that arrived for jobs still queued or running.
    more_peers: RefCell<HashMap<Id, VecDeque<SocketAddr>>>,
}

impl FetchPool {
    /// A pool with its bounded queue.
    pub fn new(cfg: PoolConfig) -> Rc<FetchPool> {
        let (tx, rx) = local_channel::new_bounded(cfg.max_queue.max(1));
        Rc::new(FetchPool {
            cfg,
            tx,
            rx: RefCell::new(Some(rx)),
            stats: Rc::new(FetchStats::default()),
            penalised: RefCell::new(HashMap::new()),
            more_peers: RefCell::new(HashMap::new()),
        })
    }

    /// The counters.
    pub fn stats(&self) -> Rc<FetchStats> {
        self.stats.clone()
    }

    /// Queues a job; when the queue is full the job comes back (and the
    /// drop is counted by the caller's choice of what to do with it).
    pub fn submit(&self, job: FetchJob) -> Result<(), FetchJob> {
        match self.tx.try_send(job) {
            Ok(()) => {
                self.stats.queued.set(self.stats.queued.get() + 1);
                Ok(())
            }
            Err(e) => {
                self.stats.rejected.set(self.stats.rejected.get() + 1);
                match e {
                    glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(j))
                    | glommio::GlommioError::Closed(glommio::ResourceType::Channel(j)) => Err(j),
                    // No other error carries the job; nothing to hand back.
                    _ => Ok(()),
                }
            }
        }
    }

    /// More peers for a job that may still be queued or running.
    pub fn add_peers(&self, info_hash: Id, peers: &[SocketAddr]) {
        let mut map = self.more_peers.borrow_mut();
        if map.len() >= self.cfg.max_queue && !map.contains_key(&info_hash) {
            return;
        }
        let q = map.entry(info_hash).or_default();
        for p in peers {
            if q.len() < self.cfg.max_peers_per_job && !q.contains(p) {
                q.push_back(*p);
            }
        }
    }

    /// Jobs waiting in the queue.
    pub fn queue_len(&self) -> usize {
        self.tx.len()
    }

    fn is_penalised(&self, ip: IpAddr, now: Instant) -> bool {
        let mut map = self.penalised.borrow_mut();
        match map.get(&ip) {
            Some(until) if *until > now => true,
            Some(_) => {
                map.remove(&ip);
                false
            }
            None => false,
        }
    }

    fn penalise(&self, ip: IpAddr, now: Instant) {
        let mut map = self.penalised.borrow_mut();
        if map.len() >= self.cfg.max_penalised {
            map.retain(|_, until| *until > now);
            if map.len() >= self.cfg.max_penalised {
                // Still full of live entries: forget an arbitrary one
                // rather than grow.
                if let Some(k) = map.keys().next().copied() {
                    map.remove(&k);
                }
            }
        }
        map.insert(ip, now + self.cfg.penalty);
    }

    /// Runs the pool until the queue is closed (all senders dropped) or
    /// `stop` resolves; in-flight jobs are awaited before returning.
    pub async fn run(
        self: Rc<Self>,
        tcp: Rc<TcpConnector>,
        store: StoreWriter,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let Some(rx) = self.rx.borrow_mut().take() else {
            return;
        };
        let sem = Rc::new(Semaphore::new(self.cfg.concurrency.max(1) as u64));
        let dispatch = async {
            while let Some(job) = rx.recv().await {
                let Ok(permit) = Semaphore::acquire_static_permit(&sem, 1).await else {
                    break;
                };
                let pool = self.clone();
                let tcp = tcp.clone();
                let store = store.clone();
                glommio::spawn_local(async move {
                    pool.fetch_job(job, &tcp, &store).await;
                    drop(permit);
                })
                .detach();
            }
        };
        futures_lite::future::or(dispatch, stop).await;
        // Let running jobs finish: take every permit back.
        let total = self.cfg.concurrency.max(1) as u64;
        let _all = sem.acquire(total).await;
    }

    async fn fetch_job(
        self: &Rc<Self>,
        job: FetchJob,
        tcp: &Rc<TcpConnector>,
        store: &StoreWriter,
    ) {
        let started = Instant::now();
        self.stats.running.set(self.stats.running.get() + 1);
        let mut peers: VecDeque<SocketAddr> = job.peers.iter().copied().collect();
        let mut tried = 0usize;
        let (res_tx, res_rx) =
            local_channel::new_bounded::<AttemptResult>(self.cfg.peers_at_once.max(1));
        let res_tx = Rc::new(res_tx);
        let mut running: Vec<glommio::Task<()>> = Vec::new();
        let mut outstanding = 0usize;
        let mut verified = None;
        loop {
            // Top up the attempts.
            while outstanding < self.cfg.peers_at_once.max(1) && tried < self.cfg.max_peers_per_job
            {
                if let Some(more) = self.more_peers.borrow_mut().get_mut(&job.info_hash) {
                    while let Some(p) = more.pop_front() {
                        if !peers.contains(&p) {
                            peers.push_back(p);
                        }
                    }
                }
                let Some(peer) = peers.pop_front() else { break };
                if self.is_penalised(peer.ip(), Instant::now()) {
                    self.stats.count_failure(FailureKind::Penalised);
                    continue;
                }
                tried += 1;
                outstanding += 1;
                let tcp = tcp.clone();
                let tx = res_tx.clone();
                let cfg = self.cfg;
                let ih = job.info_hash;
                running.push(glommio::spawn_local(async move {
                    let r = attempt(&tcp, peer, ih, cfg.peer_id, cfg.fetch).await;
                    let _ = tx.send((peer, r)).await;
                }));
            }
            if outstanding == 0 {
                break;
            }
            let Some((peer, result)) = res_rx.recv().await else {
                break;
            };
            outstanding -= 1;
            match result {
                Ok(v) => {
                    verified = Some((peer, v));
                    break;
                }
                Err(e) => {
                    let kind = e.kind();
                    self.stats.count_failure(kind);
                    if kind.penalises() {
                        self.penalise(peer.ip(), Instant::now());
                    }
                }
            }
        }
        // Cancels the attempts still running.
        drop(running);
        self.more_peers.borrow_mut().remove(&job.info_hash);
        self.stats
            .running
            .set(self.stats.running.get().saturating_sub(1));
        let Some((_peer, v)) = verified else {
            if tried == 0 {
                self.stats.count_failure(FailureKind::NoPeers);
            }
            self.stats.jobs_failed.set(self.stats.jobs_failed.get() + 1);
            return;
        };
        match metainfo::parse_info(&v.info) {
            Ok(torrent) => {
                let record = TorrentRecord {
                    infohash: job.info_hash.0,
                    torrent,
                    source: job.source,
                    discovered_at: job.discovered_at,
                    fetched_at: SystemTime::now(),
                };
                if store.fetched(record).is_err() {
                    self.stats.count_failure(FailureKind::StoreClosed);
                } else {
                    self.stats.fetched.set(self.stats.fetched.get() + 1);
                    self.stats
                        .fetch_micros
                        .set(self.stats.fetch_micros.get() + started.elapsed().as_micros() as u64);
                }
            }
            Err(_) => {
                // The bytes hash correctly, so no peer can give better ones.
                self.stats.count_failure(FailureKind::Unparsable);
                self.stats.jobs_failed.set(self.stats.jobs_failed.get() + 1);
            }
        }
    }
}
