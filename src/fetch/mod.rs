//! The per-shard metadata fetch pool: the glue between the harvester's
//! fetch requests, the `shards` TCP layer and the sans-IO exchange in
//! [`crate::wire`].
//!
//! Each shard runs one pool. A job is one infohash with the peers known for
//! it; its outcome (stored, or failed with the peers tried) goes back to the
//! harvester, which owns retries. The pool
//! * bounds concurrency twice: `concurrency` jobs at once (a glommio
//!   semaphore) and `max_connections` connections at once (another), so
//!   the TCP layer's shard cap is never what refuses an attempt;
//! * treats capacity as something to wait for, never as a failure: an
//!   attempt refused by the per-IP cap is put back and retried shortly;
//! * keeps slow and silent peers from starving it: connects have their own
//!   short deadline (the TCP layer's), exchanges theirs
//!   ([`crate::wire::FetchConfig`]: a hard deadline whatever the peer
//!   does, and a byte budget whatever it sends); a job holds at most
//!   `peers_at_once` connections and lives at most `job_budget`, after
//!   which its attempts are cancelled;
//! * tries a job's peers a few at a time, stops at the first verified
//!   metadata and cancels the other attempts;
//! * remembers peers by their IPv6 /64 or IPv4 address, in bounded tables
//!   whose marks expire: ones that lie (hash mismatch, malformed data) or
//!   send junk are skipped for `penalty`; ones that time out are tried
//!   last, and skipped after `timeout_strikes` timeouts each within
//!   `penalty` of the last;
//! * never connects to a port below 1024 unless told to
//!   (`allow_privileged_ports`): DHT values must not aim the crawler at a
//!   third party's service;
//! * speaks plaintext or MSE to each peer, or one and then the other on a
//!   second connection when the peer hangs up on the first handshake, as
//!   `encryption` ([`EncryptionPolicy`]) says; the fallback spends the
//!   first connection's deadlines, never fresh ones;
//! * sends each verified torrent to the store with its source and timings,
//!   and counts failures by reason.
//!
//! **Fair share.** A job's share of the pool is at most `peers_at_once`
//! connection slots for at most `job_budget`, i.e. `peers_at_once ×
//! job_budget` slot-seconds, whatever its peers do; `slot_micros` and
//! `over_budget` in [`FetchStats`] measure what jobs really use.

mod attempt;
mod marks;
mod stats;
pub mod utp;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::sync::Semaphore;
use shards::TcpConnector;

pub use attempt::{
    attempt, attempt_peer, attempt_peer_via, AttemptError, EncryptionPolicy, TransportPolicy, Wire,
};
pub use marks::FIRST_UNPRIVILEGED_PORT;
pub use stats::{FailureKind, FetchStats, Handshake, Transport};
pub use utp::{attempt_utp, Dispatch, MuxStats, UtpMux, UtpSocket};

use marks::{PeerMarks, Pick};

use crate::dht::harvest::FetchOutcome;
use crate::filter::ContentFilter;
use crate::id::Id;
use crate::metainfo;
use crate::store::{Source, StoreWriter, TorrentRecord};
use crate::wire::FetchConfig;

type AttemptResult = (SocketAddr, Result<crate::wire::Verified, AttemptError>);

/// One infohash to fetch.
#[derive(Debug, Clone)]
pub struct FetchJob {
    /// The infohash.
    pub infohash: Id,
    /// How it was found.
    pub source: Source,
    /// When it was found.
    pub discovered_at: SystemTime,
    /// Peers known for it.
    pub peers: Vec<SocketAddr>,
}

/// Jobs fetched at once per shard unless configured (`--fetch-concurrency`
/// reads it): a loopback harvest with more new torrents than one shard
/// stores was bound by this number at 256 (`tuning/runs/`).
pub const DEFAULT_CONCURRENCY: usize = 1024;

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
    /// Connections open at once at most (keep it at or below the TCP
    /// layer's per-shard cap).
    pub max_connections: usize,
    /// Wall time one job may take, all attempts together.
    pub job_budget: Duration,
    /// Pause before retrying an attempt refused by the per-IP cap.
    pub cap_retry: Duration,
    /// How long a lying peer is skipped, and how long a timeout counts
    /// against a peer.
    pub penalty: Duration,
    /// Timeouts, each within `penalty` of the last, after which a peer's
    /// IPv4 address or IPv6 /64 is skipped instead of tried last (a
    /// success in between does not reset the count).
    pub timeout_strikes: u32,
    /// Penalised keys (and, apart, timed-out keys) remembered at most.
    pub max_penalised: usize,
    /// Connect to peers on ports below 1024 (`--allow-privileged-ports`).
    pub allow_privileged_ports: bool,
    /// The exchange's limits and deadlines.
    pub fetch: FetchConfig,
    /// Plaintext, MSE, or one then the other (`--encryption`).
    pub encryption: EncryptionPolicy,
    /// TCP, uTP, or one then the other (`--transport`); uTP needs a
    /// multiplexer ([`FetchPool::set_utp`]), without one only TCP is tried.
    pub transport: TransportPolicy,
    /// Our BitTorrent peer id.
    pub peer_id: [u8; 20],
}

impl Default for PoolConfig {
    fn default() -> Self {
        let mut peer_id = *b"-DH0100-000000000000";
        crate::rng::Rng::from_entropy().fill(&mut peer_id[8..]);
        PoolConfig {
            concurrency: DEFAULT_CONCURRENCY,
            peers_at_once: 2,
            max_peers_per_job: 16,
            max_queue: 65_536,
            max_connections: 2 * DEFAULT_CONCURRENCY,
            job_budget: Duration::from_secs(45),
            cap_retry: Duration::from_millis(200),
            penalty: Duration::from_secs(300),
            timeout_strikes: 3,
            max_penalised: 65_536,
            allow_privileged_ports: false,
            fetch: FetchConfig::default(),
            encryption: EncryptionPolicy::default(),
            transport: TransportPolicy::default(),
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
    /// Penalised and timed-out peers, the privileged-port rule.
    marks: RefCell<PeerMarks>,
    /// Extra peers that arrived for jobs still queued or running.
    more_peers: RefCell<HashMap<Id, VecDeque<SocketAddr>>>,
    /// Jobs queued or running.
    active: RefCell<HashSet<Id>>,
    /// What is stored (`--include`, `--exclude`, `--min-size`,
    /// `--max-size`).
    filter: ContentFilter,
    /// The shard's uTP multiplexers (one per UDP socket), when uTP is on.
    utp: RefCell<Vec<Rc<UtpMux>>>,
}

/// Where a job's outcome goes (the harvester, through the engine).
pub type OutcomeSink = Rc<dyn Fn(Id, FetchOutcome)>;

impl FetchPool {
    /// A pool with its bounded queue that stores every verified torrent.
    pub fn new(cfg: PoolConfig) -> Rc<FetchPool> {
        Self::with_filter(cfg, ContentFilter::default())
    }

    /// A pool that stores only the verified torrents `filter` passes.
    pub fn with_filter(cfg: PoolConfig, filter: ContentFilter) -> Rc<FetchPool> {
        let (tx, rx) = local_channel::new_bounded(cfg.max_queue.max(1));
        Rc::new(FetchPool {
            cfg,
            tx,
            rx: RefCell::new(Some(rx)),
            stats: Rc::new(FetchStats::default()),
            marks: RefCell::new(PeerMarks::new(&cfg)),
            more_peers: RefCell::new(HashMap::new()),
            active: RefCell::new(HashSet::new()),
            filter,
            utp: RefCell::new(Vec::new()),
        })
    }

    /// Lets the pool open uTP connections on `muxes` (one per shard UDP
    /// socket; a peer gets the one of its address family), as `transport`
    /// asks.
    pub fn set_utp(&self, muxes: Vec<Rc<UtpMux>>) {
        *self.utp.borrow_mut() = muxes;
    }

    /// The uTP multiplexers' counters, summed over the shard's sockets.
    pub fn utp_stats(&self) -> MuxStats {
        self.utp
            .borrow()
            .iter()
            .fold(MuxStats::default(), |sum, m| sum + m.stats())
    }

    /// The counters.
    pub fn stats(&self) -> Rc<FetchStats> {
        self.stats.clone()
    }

    /// Queues a job; when the queue is full the job comes back (and the
    /// drop is counted by the caller's choice of what to do with it).
    pub fn submit(&self, job: FetchJob) -> Result<(), FetchJob> {
        let infohash = job.infohash;
        match self.tx.try_send(job) {
            Ok(()) => {
                self.active.borrow_mut().insert(infohash);
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
    pub fn add_peers(&self, infohash: Id, peers: &[SocketAddr]) {
        if !self.active.borrow().contains(&infohash) {
            return;
        }
        let mut map = self.more_peers.borrow_mut();
        if map.len() >= self.cfg.max_queue && !map.contains_key(&infohash) {
            return;
        }
        let q = map.entry(infohash).or_default();
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

    /// Runs the pool until the queue is closed (all senders dropped) or
    /// `stop` resolves; in-flight jobs are awaited before returning. Each
    /// job's outcome goes to `outcomes`.
    pub async fn run(
        self: Rc<Self>,
        tcp: Rc<TcpConnector>,
        store: StoreWriter,
        outcomes: OutcomeSink,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let Some(rx) = self.rx.borrow_mut().take() else {
            return;
        };
        // Jobs watch the stop signal too: a stopping shard does not wait up
        // to a job budget (2 × the fetch timeout) for slow peers. A job cut
        // short reports `NotRun`; its infohash stays pending in the store.
        // A semaphore with no permits, closed at stop: every job waiting on
        // it wakes at once, and a finished job's wait leaves nothing behind.
        let stopped = Rc::new(Semaphore::new(0));
        let sem = Rc::new(Semaphore::new(self.cfg.concurrency.max(1) as u64));
        let conns = Rc::new(Semaphore::new(self.cfg.max_connections.max(1) as u64));
        let dispatch = async {
            while let Some(job) = rx.recv().await {
                let Ok(permit) = Semaphore::acquire_static_permit(&sem, 1).await else {
                    break;
                };
                let pool = self.clone();
                let tcp = tcp.clone();
                let store = store.clone();
                let conns = conns.clone();
                let outcomes = outcomes.clone();
                let stopped = stopped.clone();
                glommio::spawn_local(async move {
                    let infohash = job.infohash;
                    let job_stop = async {
                        // Only ever an error: nobody signals this semaphore.
                        let _closed = stopped.acquire(1).await;
                        FetchOutcome::NotRun
                    };
                    let outcome = futures_lite::future::or(
                        pool.fetch_job(job, &tcp, &conns, &store),
                        job_stop,
                    )
                    .await;
                    pool.active.borrow_mut().remove(&infohash);
                    pool.more_peers.borrow_mut().remove(&infohash);
                    drop(permit);
                    outcomes(infohash, outcome);
                })
                .detach();
            }
        };
        futures_lite::future::or(dispatch, stop).await;
        stopped.close();
        // Wait for the jobs to notice: take every permit back.
        let total = self.cfg.concurrency.max(1) as u64;
        let _all = sem.acquire(total).await;
    }

    /// The job's next peer: new arrivals merged, penalised ones and
    /// privileged ports skipped (counted, and listed as tried), ones that
    /// timed out last.
    fn next_peer(
        &self,
        infohash: &Id,
        peers: &mut VecDeque<SocketAddr>,
        tried: &mut Vec<SocketAddr>,
    ) -> Option<SocketAddr> {
        if let Some(more) = self.more_peers.borrow_mut().get_mut(infohash) {
            while let Some(p) = more.pop_front() {
                if !peers.contains(&p) && !tried.contains(&p) {
                    peers.push_back(p);
                }
            }
        }
        let now = Instant::now();
        loop {
            match self.marks.borrow_mut().pick(peers, now)? {
                Pick::Try(peer) => return Some(peer),
                Pick::Skip(peer, kind) => {
                    self.stats.count_failure(kind);
                    tried.push(peer);
                }
            }
        }
    }

    async fn fetch_job(
        self: &Rc<Self>,
        job: FetchJob,
        tcp: &Rc<TcpConnector>,
        conns: &Rc<Semaphore>,
        store: &StoreWriter,
    ) -> FetchOutcome {
        // Over `--max-db-size`: nothing new is fetched (or stored) until
        // the database is under it again; the job waits holding its slot,
        // like back-pressure, and a stop saves it as pending.
        if store.is_full() {
            self.stats
                .db_full_waits
                .set(self.stats.db_full_waits.get() + 1);
            while store.is_full() {
                shards::timers::sleep(crate::store::DB_FULL_PAUSE).await;
            }
        }
        let started = Instant::now();
        // The time budget runs from the job's first connection slot: time
        // spent queued for a slot is the pool's, not the job's.
        let first_slot: Rc<std::cell::Cell<Option<Instant>>> = Rc::default();
        let budget = self.cfg.job_budget;
        let budget_end = || first_slot.get().map(|t| t + budget);
        let spent = || budget_end().is_some_and(|end| Instant::now() >= end);
        self.stats.running.set(self.stats.running.get() + 1);
        let mut peers: VecDeque<SocketAddr> = job.peers.iter().copied().collect();
        let mut tried: Vec<SocketAddr> = Vec::new();
        // Peers refused by the per-IP cap: retried after `cap_retry`.
        let mut capped: Vec<SocketAddr> = Vec::new();
        let (res_tx, res_rx) =
            local_channel::new_bounded::<AttemptResult>(self.cfg.peers_at_once.max(1));
        let res_tx = Rc::new(res_tx);
        let mut running: Vec<glommio::Task<()>> = Vec::new();
        let mut outstanding = 0usize;
        let mut verified = None;
        loop {
            // Top up the attempts.
            while outstanding < self.cfg.peers_at_once.max(1)
                && tried.len() < self.cfg.max_peers_per_job
                && !spent()
            {
                let Some(peer) = self.next_peer(&job.infohash, &mut peers, &mut tried) else {
                    break;
                };
                outstanding += 1;
                let tcp = tcp.clone();
                let utp = self.utp.borrow().iter().find(|m| m.serves(&peer)).cloned();
                let tx = res_tx.clone();
                let cfg = self.cfg;
                let infohash = job.infohash;
                let conns = conns.clone();
                let stats = self.stats.clone();
                let first_slot = first_slot.clone();
                running.push(glommio::spawn_local(async move {
                    // Waits for a connection slot: capacity is a queue.
                    let r = match Semaphore::acquire_static_permit(&conns, 1).await {
                        Ok(_slot) => {
                            let t = Instant::now();
                            if first_slot.get().is_none() {
                                first_slot.set(Some(t));
                            }
                            let r = attempt_peer_via(
                                &tcp,
                                utp.as_ref(),
                                peer,
                                infohash,
                                cfg.peer_id,
                                cfg.fetch,
                                cfg.encryption,
                                cfg.transport,
                                &stats,
                            )
                            .await;
                            let used = t.elapsed().as_micros() as u64;
                            stats.slot_micros.set(stats.slot_micros.get() + used);
                            r
                        }
                        Err(_) => Err(AttemptError::Exchange(crate::wire::FailReason::Closed(
                            crate::wire::Phase::Handshake,
                        ))),
                    };
                    let _ = tx.send((peer, r)).await;
                }));
            }
            if outstanding == 0 {
                if capped.is_empty() || spent() {
                    break;
                }
                // Only capped peers are left: wait, then put them back.
                shards::timers::sleep(self.cfg.cap_retry).await;
                peers.extend(capped.drain(..));
                continue;
            }
            // Until a slot is had, wake up now and then to look again.
            let wake = budget_end().unwrap_or_else(|| Instant::now() + budget);
            let next = shards::timers::with_deadline(wake, res_rx.recv()).await;
            let (peer, result) = match next {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(_) if spent() => {
                    // The job's time budget is spent: cancel what still runs.
                    self.stats.over_budget.set(self.stats.over_budget.get() + 1);
                    break;
                }
                Err(_) => continue,
            };
            outstanding -= 1;
            match result {
                Ok(v) => {
                    verified = Some((peer, v));
                    break;
                }
                Err(e) => {
                    let kind = e.kind();
                    if kind == FailureKind::Capped {
                        self.stats.deferred.set(self.stats.deferred.get() + 1);
                        capped.push(peer);
                        continue;
                    }
                    tried.push(peer);
                    self.stats.count_failure(kind);
                    self.marks.borrow_mut().failed(peer, kind, Instant::now());
                }
            }
        }
        // Cancels the attempts still running.
        drop(running);
        self.stats
            .running
            .set(self.stats.running.get().saturating_sub(1));
        let Some((_peer, v)) = verified else {
            if tried.is_empty() {
                self.stats.count_failure(FailureKind::NoPeers);
            }
            self.stats.jobs_failed.set(self.stats.jobs_failed.get() + 1);
            tried.extend(capped);
            return FetchOutcome::Failed { tried };
        };
        // Up to 10 MiB of metadata: the parse lets the shard's reactor run
        // (UDP above all) every `metainfo::PAUSE_EVERY` values.
        match metainfo::parse_info_pausing(&v.info, shards::timers::reactor_turn).await {
            Ok(torrent) => {
                if let Some(why) = self.filter.check(&torrent) {
                    self.stats.count_filtered(why);
                    log::debug!("{} not stored: {}", job.infohash, why.as_str());
                    return FetchOutcome::Filtered;
                }
                let record = TorrentRecord {
                    infohash: job.infohash.0,
                    torrent,
                    source: job.source,
                    discovered_at: job.discovered_at,
                    fetched_at: SystemTime::now(),
                };
                // A full store queue makes the job wait here, holding its
                // slot: back-pressure stops new fetches, nothing is dropped.
                let pause = || shards::timers::sleep(crate::store::BACKPRESSURE_PAUSE);
                if store.fetched_waiting(record, pause).await.is_err() {
                    self.stats.count_failure(FailureKind::StoreClosed);
                    FetchOutcome::NotRun
                } else {
                    self.stats.fetched.set(self.stats.fetched.get() + 1);
                    self.stats
                        .fetch_micros
                        .set(self.stats.fetch_micros.get() + started.elapsed().as_micros() as u64);
                    FetchOutcome::Stored
                }
            }
            Err(_) => {
                // The bytes hash correctly, so no peer can give better ones:
                // the harvester gives up after its tries.
                self.stats.count_failure(FailureKind::Unparsable);
                self.stats.jobs_failed.set(self.stats.jobs_failed.get() + 1);
                tried.extend(job.peers.iter().copied());
                FetchOutcome::Failed { tried }
            }
        }
    }
}
