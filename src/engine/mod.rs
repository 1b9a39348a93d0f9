//! The crawl engine: runs one [`Node`] and one [`FetchPool`] per shard on
//! the `shards` runtime, and connects them to the sockets, the mesh, the
//! timers and the store.
//!
//! Everything protocol-shaped lives in the sans-IO state machines; this
//! module only moves bytes and time in and actions out. Each shard runs
//! three kinds of task around one `Rc<RefCell<Node>>`: a receive loop per
//! UDP socket (readiness, then a recvmmsg drain, then one `handle_datagram`
//! per datagram), a mesh loop (messages from other shards), and a timer
//! loop (`poll_timeout` → `handle_timeout`). After each unit of work the
//! shard *pumps* the node: transmits go to the socket's send batch (flushed
//! with sendmmsg), infohashes go to the fetch pool and the store, mesh
//! messages go to their shard. No borrow of the node is held across an
//! await.
//!
//! This file is about 830 lines: the start-up that wires shards, channels and
//! sockets, and the `Shard` event loop that drives the node, the fetch pool
//! and the mesh from those same parts.

mod identity;
pub mod nodes_file;
pub mod outbox;
pub mod preflight;
pub mod status;
pub mod telemetry;

use std::cell::RefCell;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use shards::{CoreList, ShardContext, ShardsBuilder, ShutdownHandle, TcpOptions};

pub use identity::{load_or_create_identities, IdentityError};
pub use telemetry::{ShardTelemetry, Telemetry};

use crate::config::{CrawlConfig, IdentityMode};
use crate::dht::{Action, Identity, IpLimits, Node, NodeConfig, ShardMsg};
use crate::fetch::{FetchJob, FetchPool, PoolConfig};
use crate::krpc::NodeInfo;
use crate::source::Source;
use crate::store::StoreWriter;

/// Why the engine could not run.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The runtime refused to start or a shard failed.
    #[error(transparent)]
    Shards(#[from] shards::ShardsError),
    /// A bad core list.
    #[error(transparent)]
    Cores(#[from] shards::CoreListError),
    /// Identities could not be loaded or saved.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A node configuration was rejected.
    #[error("node configuration: {0}")]
    Node(#[from] crate::dht::ConfigError),
    /// The host lacks a limit or an address family the crawl needs.
    #[error(transparent)]
    Preflight(#[from] preflight::PreflightError),
    /// The operating system gave no random bytes for the token secret.
    #[error("no entropy from the operating system for the token secret: {0}")]
    Entropy(getrandom::Error),
    /// The state directory could not be created.
    #[error("state directory {0}: {1}")]
    StateDir(std::path::PathBuf, std::io::Error),
    /// The content filter does not compile.
    #[error("content filter: {0}")]
    Filter(#[from] crate::filter::FilterError),
}

/// What a shard hands back when it stops.
#[derive(Debug, Clone)]
pub struct ShardReport {
    /// The shard.
    pub shard: usize,
    /// Nodes known at the end (persisted for the next start).
    pub known_nodes: Vec<NodeInfo>,
}

/// Tweaks applied to every shard's [`NodeConfig`] after the defaults (the
/// demo and the tests use it for faster timers).
pub type NodeTweak = Arc<dyn Fn(&mut NodeConfig) + Send + Sync>;

/// The tweak for benchmarks and loopback load tests: no rate limit on any
/// node ([`NodeConfig::unthrottle`]).
pub fn unthrottled() -> NodeTweak {
    Arc::new(NodeConfig::unthrottle)
}

/// Everything `run` needs besides the configuration.
#[derive(Clone)]
pub struct EngineParts {
    /// Where fetched torrents and discoveries go.
    pub store: StoreWriter,
    /// Counters shared with the status line and the summary.
    pub telemetry: Arc<Telemetry>,
    /// Optional node tweaks.
    pub tweak: Option<NodeTweak>,
    /// Nodes to seed the tables with (from the state directory).
    pub known_nodes: Arc<Vec<NodeInfo>>,
    /// Infohashes found earlier but never fetched (from the store).
    pub pending: Arc<Vec<(crate::id::Id, Source)>>,
    /// Infohashes already stored (from the store): never fetched again.
    pub stored: Arc<Vec<crate::id::Id>>,
}

impl EngineParts {
    /// Parts with no tweak, no saved nodes and nothing pending or stored
    /// (a fresh start; the tests', benches' and demo's set-up).
    pub fn new(store: StoreWriter, telemetry: Arc<Telemetry>) -> Self {
        EngineParts {
            store,
            telemetry,
            tweak: None,
            known_nodes: Arc::new(Vec::new()),
            pending: Arc::new(Vec::new()),
            stored: Arc::new(Vec::new()),
        }
    }

    /// The same parts with `tweak` applied to every shard's node config.
    pub fn with_tweak(mut self, tweak: NodeTweak) -> Self {
        self.tweak = Some(tweak);
        self
    }
}

impl std::fmt::Debug for EngineParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineParts").finish_non_exhaustive()
    }
}

/// A started engine.
pub struct Engine {
    shards: shards::Shards<ShardReport>,
    /// The bound UDP addresses (with real ports when 0 was asked for): one
    /// per bind address in `bep42` mode, one per shard per bind address
    /// (shard 0's first) in `spread` mode.
    pub udp_addrs: Vec<SocketAddr>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("udp_addrs", &self.udp_addrs)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// A handle that stops every shard.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shards.shutdown_handle()
    }

    /// Waits for every shard to stop.
    pub fn join(self) -> Result<Vec<ShardReport>, EngineError> {
        Ok(self.shards.join()?)
    }
}

/// Resolves `HOST:PORT` bootstrap entries; the ones that fail are logged.
pub fn resolve_bootstrap(entries: &[String]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for e in entries {
        match e.to_socket_addrs() {
            Ok(addrs) => out.extend(addrs),
            Err(err) => log::warn!("bootstrap {e}: {err}"),
        }
    }
    out
}

/// Starts the engine.
pub fn start(cfg: &CrawlConfig, parts: EngineParts) -> Result<Engine, EngineError> {
    std::fs::create_dir_all(&cfg.state_dir)
        .map_err(|e| EngineError::StateDir(cfg.state_dir.clone(), e))?;
    let binds = preflight::usable_binds(&cfg.bind)?;
    let builder = ShardsBuilder::new()
        .pin(cfg.pin)
        .oversubscribe(cfg.oversubscribe);
    // bep42: every shard shares each address (SO_REUSEPORT), one id per
    // address. spread: shard s binds port + s alone, with its own id.
    let mut builder = match cfg.identity {
        IdentityMode::Bep42 => builder.udp_bind(binds.clone()),
        IdentityMode::Spread => builder.udp_bind_spread(binds.clone()),
    }
    .udp_buffers(Some(cfg.udp_rcvbuf), Some(cfg.udp_sndbuf))
    .udp_rx_coalesce(cfg.rx_coalesce)
    .name("dht-hunter")
    // One packet limit for the process: each shard starts with an equal
    // share and idle shards lend theirs to busy ones (see dht::limiter).
    .global_budget(shards::budget::GlobalBudgetConfig::new(u64::from(
        cfg.max_pps,
    )));
    if let Some(list) = &cfg.cores {
        builder = builder.cores(list.parse::<CoreList>()?);
    }
    if let Some(n) = cfg.shards {
        builder = builder.shards(n);
    }
    let nr_shards = builder.plan()?.nr_shards();
    // The default pool shrinks to what the open-file limit holds; a size
    // the operator chose is checked as given.
    let fetch_concurrency = if cfg.fetch_concurrency_default {
        preflight::fit_default_fetch_concurrency(
            nr_shards,
            binds.len(),
            CONNECTIONS_PER_FETCH,
            cfg.fetch_concurrency,
        )
    } else {
        cfg.fetch_concurrency
    };
    let cfg = CrawlConfig {
        bind: binds,
        fetch_concurrency,
        ..cfg.clone()
    };
    let builder = builder.tcp(TcpOptions {
        connect_timeout: cfg.fetch_timeout.min(Duration::from_secs(10)),
        read_timeout: None,
        write_timeout: Some(cfg.fetch_timeout),
        max_per_shard: tcp_cap(&cfg),
        max_per_ip: 2,
    });
    preflight::check_limits(
        nr_shards,
        tcp_cap(&cfg),
        cfg.bind.len(),
        shards::DEFAULT_IO_MEMORY,
    )?;
    parts.telemetry.ensure_shards(nr_shards);

    // Ids are keyed on the configured addresses (spread: port + shard), so
    // they are known before binding; each shard pairs its own list with
    // its sockets' real addresses.
    let identities_base = load_or_create_identities(
        &cfg.state_dir,
        &cfg.bind,
        cfg.identity,
        cfg.keyspace,
        nr_shards,
    )?;
    // The token secret comes straight from the OS: a PRNG seeded with 64
    // bits would make every token guessable from 2^64 tries.
    let mut token_key = [0u8; 32];
    crate::rng::os_random(&mut token_key).map_err(EngineError::Entropy)?;
    let bootstrap = resolve_bootstrap(&cfg.bootstrap);
    if bootstrap.is_empty() {
        log::warn!("no bootstrap address resolved; relying on known nodes and inbound traffic");
    }
    let cfg = Arc::new(cfg);
    let ids = Arc::new(identities_base);
    let bootstrap = Arc::new(bootstrap);
    // One start instant for every shard: token epochs are counted from it,
    // so a token issued by one shard verifies on any other.
    let t0 = Instant::now();
    // Per-IP limits shared by every shard, built by the first shard from
    // its (tweaked) node config; every shard's config has the same rates.
    let ip_limits: Arc<std::sync::OnceLock<IpLimits>> = Arc::new(std::sync::OnceLock::new());
    let shards = builder.spawn(move |ctx: ShardContext<ShardMsg>| {
        let ip_limits = ip_limits.clone();
        let cfg = cfg.clone();
        let ids = ids.clone();
        let bootstrap = bootstrap.clone();
        let parts = parts.clone();
        async move {
            run_shard(
                ctx,
                &cfg,
                &ids,
                &bootstrap,
                (token_key, t0),
                &ip_limits,
                parts,
            )
            .await
        }
    })?;
    let udp_addrs = shards.udp_addrs().to_vec();
    Ok(Engine { shards, udp_addrs })
}

/// Connections one fetch may hold at once: two attempts per job.
const CONNECTIONS_PER_FETCH: usize = 2;

/// Connections one shard may hold.
fn tcp_cap(cfg: &CrawlConfig) -> usize {
    cfg.fetch_concurrency
        .saturating_mul(CONNECTIONS_PER_FETCH)
        .max(CONNECTIONS_PER_FETCH)
}

/// How long after start resumed infohashes are looked up.
const RESUME_DELAY: Duration = Duration::from_secs(5);
/// Resumed infohashes per shard per second.
const RESUME_BATCH: usize = 200;

struct Shard {
    ctx: ShardContext<ShardMsg>,
    node: RefCell<Node>,
    outbox: Rc<outbox::Outbox<ShardMsg>>,
    /// The longest a timer wake-up came late: how long the shard's thread
    /// was busy with something else (a stall), since start.
    stall_max: std::cell::Cell<Duration>,
    /// When the timer task sleeps until, and how to wake it sooner: work
    /// that moves the node's deadline earlier kicks it (see `pump`).
    timer_at: std::cell::Cell<Instant>,
    kick: glommio::channels::local_channel::LocalSender<()>,
    pool: Rc<FetchPool>,
    store: StoreWriter,
    tele: Arc<Telemetry>,
    /// The state directory and the configured binds, to save a new id.
    ids_file: (std::path::PathBuf, Vec<SocketAddr>),
}

async fn run_shard(
    ctx: ShardContext<ShardMsg>,
    cfg: &CrawlConfig,
    ids: &[Vec<crate::id::Id>],
    bootstrap: &[SocketAddr],
    (token_key, t0): ([u8; 32], Instant),
    ip_limits: &std::sync::OnceLock<IpLimits>,
    parts: EngineParts,
) -> Result<ShardReport, EngineError> {
    let shard = ctx.shard_id();
    let n = ctx.nr_shards();
    // This shard's sockets' real addresses (port 0 resolved) with their
    // ids: the same for every shard in bep42 mode, its own in spread mode.
    let identities: Vec<Identity> = ctx
        .udp_addrs()
        .into_iter()
        .zip(ids.get(shard).into_iter().flatten())
        .map(|(addr, id)| Identity { addr, id: *id })
        .collect();
    let mut nc = NodeConfig::new(shard as u8, n as u8, identities, seed_for(shard), token_key);
    nc.machine_slice = cfg.keyspace;
    nc.bootstrap = bootstrap.to_vec();
    nc.allow_private = cfg.allow_private;
    nc.max_pps = (cfg.max_pps / n as u32).max(1);
    // The byte budget follows the packet budget at 1 KiB per packet: KRPC
    // replies average a few hundred bytes, so the packet budget binds first.
    nc.max_bps = u64::from(nc.max_pps).saturating_mul(1024);
    nc.per_ip_pps = cfg.per_ip_pps;
    nc.per_ip_burst = cfg.per_ip_pps.saturating_mul(2).max(10);
    nc.inbound_per_ip_pps = cfg.inbound_per_ip_pps;
    nc.inbound_per_ip_burst = cfg.inbound_per_ip_pps.saturating_mul(10).max(50);
    // One node to the outside: with shared identities the key's owner
    // answers keyed queries.
    nc.forward_queries = cfg.identity == IdentityMode::Bep42 && n > 1;
    // BEP 42 ids follow the voted external address only where ids are
    // shared; spread ids must stay inside their shards' slices.
    nc.external_ip.enabled &= cfg.identity == IdentityMode::Bep42;
    // The harvester never hands the pool more than its queue holds.
    let pool_defaults = PoolConfig::default();
    nc.harvest.max_fetching = nc
        .harvest
        .max_fetching
        .min(pool_defaults.max_queue)
        .max(cfg.fetch_concurrency);
    nc.harvest.scrape_nodes = cfg.scrape_nodes;
    nc.max_nodes = cfg.max_nodes;
    nc.table_turnover = cfg.table_turnover;
    if let Some(t) = &parts.tweak {
        t(&mut nc);
    }
    nc.validate()?;
    let shared_limits = ip_limits.get_or_init(|| IpLimits::shared(&nc, t0)).clone();
    let mut node = Node::new(nc, t0);
    node.share_ip_limits(&shared_limits);
    let now = Instant::now();
    for k in parts.known_nodes.iter() {
        node.add_known_node(*k, now);
    }
    for infohash in parts
        .stored
        .iter()
        .filter(|infohash| cfg.keyspace.part_of(infohash, n) == Some(shard))
    {
        node.remember_stored(infohash);
    }
    let mut pool_cfg = PoolConfig {
        concurrency: cfg.fetch_concurrency,
        max_connections: tcp_cap(cfg),
        ..pool_defaults
    };
    pool_cfg.fetch.max_metadata_size = cfg.max_metadata_size as usize;
    pool_cfg.fetch.hard_deadline = cfg.fetch_timeout;
    pool_cfg.fetch.handshake_timeout = cfg.fetch_timeout.min(pool_cfg.fetch.handshake_timeout);
    pool_cfg.fetch.idle_timeout = cfg.fetch_timeout.min(pool_cfg.fetch.idle_timeout);
    pool_cfg.job_budget = cfg.fetch_timeout.saturating_mul(2);
    pool_cfg.allow_privileged_ports = cfg.allow_privileged_ports;
    pool_cfg.encryption = cfg.encryption;
    pool_cfg.transport = cfg.transport;
    // Validated when the configuration was resolved.
    let filter = crate::filter::ContentFilter::new(&cfg.filter)?;
    let pool = FetchPool::with_filter(pool_cfg, filter);
    // uTP shares each UDP socket with KRPC: one multiplexer per socket (per
    // address family), fed by the receive loop below. With `tcp-only` there
    // is none and uTP-looking datagrams go to the node as before.
    let utp_muxes: Vec<Option<Rc<crate::fetch::UtpMux>>> = ctx
        .udp_sockets()
        .iter()
        .map(|sock| {
            (pool_cfg.transport != crate::fetch::TransportPolicy::TcpOnly).then(|| {
                crate::fetch::UtpMux::for_shard(
                    crate::fetch::UtpSocket::Shard(sock.clone()),
                    pool_cfg.max_connections,
                    ctx.shard_id(),
                    ctx.nr_shards(),
                    ctx.tcp().clone(),
                )
            })
        })
        .collect();
    pool.set_utp(utp_muxes.iter().flatten().cloned().collect());
    let (kick, kicked) = glommio::channels::local_channel::new_bounded(1);
    let me = Rc::new(Shard {
        ctx: ctx.clone(),
        node: RefCell::new(node),
        outbox: outbox::Outbox::new(ctx.mesh().clone()),
        stall_max: std::cell::Cell::new(Duration::ZERO),
        timer_at: std::cell::Cell::new(Instant::now()),
        kick,
        pool: pool.clone(),
        store: parts.store.clone(),
        tele: parts.telemetry.clone(),
        ids_file: (cfg.state_dir.clone(), cfg.bind.clone()),
    });

    let tcp = Rc::new(ctx.tcp().clone());
    // Fetch outcomes go back to the harvester through an unbounded local
    // channel (bounded in practice by the harvester's `max_fetching`): the
    // pool never awaits the node.
    let (out_tx, out_rx) = glommio::channels::local_channel::new_unbounded();
    let sink: crate::fetch::OutcomeSink = Rc::new(move |infohash, o| {
        if out_tx.try_send((infohash, o)).is_err() {
            log::debug!("fetch outcome for {infohash} dropped: the shard is stopping");
        }
    });
    let fetcher =
        glommio::spawn_local(
            pool.clone()
                .run(tcp, parts.store.clone(), sink, ctx.shutdown()),
        );

    let mut tasks = Vec::new();
    for (i, sock) in ctx.udp_sockets().iter().enumerate() {
        let me = me.clone();
        let sock = sock.clone();
        let utp = utp_muxes.get(i).cloned().flatten();
        tasks.push(glommio::spawn_local(async move {
            let mut batch = shards::RecvBatch::new(64);
            let stop = me.ctx.shutdown();
            let recv = async {
                loop {
                    match sock.recv_batch(&mut batch).await {
                        Ok(_) => {
                            let now = Instant::now();
                            {
                                let mut node = me.node.borrow_mut();
                                for d in batch.iter() {
                                    if d.truncated {
                                        continue;
                                    }
                                    // uTP by its first byte (KRPC starts
                                    // with `d`), then by connection id,
                                    // which names the owning shard.
                                    match utp.as_ref().map(|m| m.dispatch(d.from, d.data, now)) {
                                        None | Some(crate::fetch::Dispatch::NotUtp) => {
                                            node.handle_datagram(i as u8, d.from, d.data, now);
                                        }
                                        Some(crate::fetch::Dispatch::Taken) => {}
                                        Some(crate::fetch::Dispatch::OtherShard(shard)) => {
                                            let msg = crate::dht::ShardMsg::Utp {
                                                identity: i as u8,
                                                from: d.from,
                                                bytes: d.data.to_vec(),
                                            };
                                            if let Err(msg) = me.outbox.push(shard, msg) {
                                                me.spill(msg);
                                            }
                                        }
                                    }
                                }
                            }
                            me.pump().await;
                        }
                        Err(e) => {
                            log::warn!("shard {}: recv: {e}", me.ctx.shard_id());
                            shards::timers::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            };
            futures_lite::future::or(recv, stop).await;
        }));
    }
    {
        let me = me.clone();
        let utp_for_mesh = utp_muxes.clone();
        tasks.push(glommio::spawn_local(async move {
            let stop = me.ctx.shutdown();
            let mesh = async {
                while let Some((_from, msg)) = me.ctx.recv().await {
                    if let crate::dht::ShardMsg::Utp {
                        identity,
                        from,
                        bytes,
                    } = &msg
                    {
                        if let Some(Some(m)) = utp_for_mesh.get(usize::from(*identity)) {
                            m.dispatch(*from, bytes, Instant::now());
                            continue;
                        }
                    }
                    me.node.borrow_mut().handle_shard_msg(msg, Instant::now());
                    me.pump().await;
                }
            };
            futures_lite::future::or(mesh, stop).await;
        }));
    }
    {
        let me = me.clone();
        tasks.push(glommio::spawn_local(async move {
            let stop = me.ctx.shutdown();
            let outcomes = async {
                while let Some((infohash, o)) = out_rx.recv().await {
                    me.node
                        .borrow_mut()
                        .handle_fetch_result(infohash, o, Instant::now());
                    me.pump().await;
                }
            };
            futures_lite::future::or(outcomes, stop).await;
        }));
    }
    if !parts.pending.is_empty() {
        // Resume unfetched infohashes once the table has had time to fill,
        // a few hundred a second, each shard only those it owns.
        let me = me.clone();
        let pending = parts.pending.clone();
        let slice = cfg.keyspace;
        tasks.push(glommio::spawn_local(async move {
            let stop = me.ctx.shutdown();
            let resume = async {
                shards::timers::sleep(RESUME_DELAY).await;
                let mine = pending
                    .iter()
                    .filter(|(infohash, _)| slice.part_of(infohash, n) == Some(shard));
                let mut in_batch = 0;
                for (infohash, src) in mine {
                    me.node.borrow_mut().resume(*infohash, *src, Instant::now());
                    in_batch += 1;
                    if in_batch == RESUME_BATCH {
                        in_batch = 0;
                        me.pump().await;
                        shards::timers::sleep(Duration::from_secs(1)).await;
                    }
                }
                me.pump().await;
            };
            futures_lite::future::or(resume, stop).await;
        }));
    }
    {
        let me = me.clone();
        tasks.push(glommio::spawn_local(async move {
            let stop = me.ctx.shutdown();
            let timers = async {
                // Budget lending and the published status run on their own
                // period; the node's pumps only when its deadline is due.
                let mut next_house = Instant::now();
                loop {
                    let node_at = me.node.borrow().poll_timeout();
                    let at = node_at.map_or(next_house, |t| t.min(next_house));
                    me.timer_at.set(at);
                    let woken = futures_lite::future::or(
                        async {
                            shards::timers::sleep_until(at).await;
                            false
                        },
                        async { kicked.recv().await.is_some() },
                    )
                    .await;
                    let woke = Instant::now();
                    if !woken {
                        let late = woke.saturating_duration_since(at);
                        if late > me.stall_max.get() {
                            me.stall_max.set(late);
                            if late > STALL_WARN {
                                log::warn!(
                                    "shard {}: its thread was busy for {late:?} (timer late)",
                                    me.ctx.shard_id()
                                );
                            }
                        }
                    }
                    let house = woke >= next_house;
                    if house {
                        next_house = woke + HOUSEKEEPING;
                        me.sync_budget(woke);
                    }
                    let due = me.node.borrow().poll_timeout().is_some_and(|t| t <= woke);
                    if due {
                        me.node.borrow_mut().handle_timeout(woke);
                        me.pump().await;
                    }
                    if house {
                        me.publish();
                    }
                }
            };
            futures_lite::future::or(timers, stop).await;
        }));
    }
    {
        // The only task that awaits a cross-shard send (see `outbox`).
        let me2 = me.clone();
        tasks.push(glommio::spawn_local(async move {
            let spill = |m| me2.spill(m);
            me2.outbox.clone().run(spill, me2.ctx.shutdown()).await;
        }));
    }
    for t in tasks {
        t.await;
    }
    fetcher.await;
    me.save_unfinished().await;
    me.publish();
    let known_nodes: Vec<NodeInfo> = me.node.borrow().known_nodes().collect();
    Ok(ShardReport { shard, known_nodes })
}

fn seed_for(shard: usize) -> u64 {
    crate::rng::Rng::from_entropy().next_u64() ^ (shard as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// How often a shard re-balances its share of a global budget and
/// publishes its status (whatever the node's own deadlines are).
const HOUSEKEEPING: Duration = Duration::from_millis(100);

/// A timer wake-up later than this is logged: something held the shard's
/// thread (see `Shard::stall_max`).
const STALL_WARN: Duration = Duration::from_millis(500);

/// How long a stopping shard keeps draining its mesh inbox for messages
/// its peers sent just before they stopped.
const DRAIN_WINDOW: Duration = Duration::from_millis(200);

impl Shard {
    /// A message that cannot reach its shard: an infohash is recorded as
    /// pending in the store (resumed at the next start); anything else is
    /// as losable as the datagram it came from, and only counted.
    fn spill(&self, msg: ShardMsg) {
        let (infohash, source) = match msg {
            ShardMsg::Harvested {
                infohash, source, ..
            } => (infohash, source),
            ShardMsg::Sampled { infohash, .. } => (infohash, Source::Sample),
            _ => return,
        };
        if let Err(e) = self.store.discovered(infohash.0, source, SystemTime::now()) {
            log::warn!("store: {infohash} from another shard not recorded as pending: {e}");
        }
    }

    /// Stopping: every infohash this shard knows but has not stored is
    /// written as pending, with what other shards sent it and what it had
    /// not yet sent them. Nothing here waits on another shard.
    async fn save_unfinished(&self) {
        let spill = |m| self.spill(m);
        self.outbox.spill_remaining(&spill);
        // Peers stop at about the same moment; what they sent just before
        // is in the inbox within microseconds. Drain until a quiet window.
        loop {
            let next =
                futures_lite::future::or(async { self.ctx.recv().await.map(|(_, m)| m) }, async {
                    shards::timers::sleep(DRAIN_WINDOW).await;
                    None
                })
                .await;
            match next {
                Some(m) => self.spill(m),
                None => break,
            }
        }
        // Collected first: saving may wait for room in the store's queue,
        // and the node must not stay borrowed across that wait.
        let unfinished: Vec<_> = self.node.borrow().unfinished().collect();
        let mut saved = 0u64;
        for (infohash, source) in unfinished {
            let pause = || shards::timers::sleep(crate::store::BACKPRESSURE_PAUSE);
            match self
                .store
                .discovered_waiting(infohash.0, source, SystemTime::now(), pause)
                .await
            {
                Ok(()) => saved += 1,
                Err(e) => {
                    log::warn!("store: unfinished infohashes not saved: {e}");
                    break;
                }
            }
        }
        log::debug!(
            "shard {}: {saved} unfinished infohashes saved as pending",
            self.ctx.shard_id()
        );
    }

    /// Moves the node's demand to the global budget and its current share
    /// back (lending happens in the runtime, every epoch).
    fn sync_budget(&self, now: Instant) {
        if let Some(g) = self.ctx.global_budget() {
            let mut node = self.node.borrow_mut();
            let demand = node.take_budget_demand();
            let share = g.with(|g| {
                g.note_demand(demand);
                g.share()
            });
            node.set_budget_share(share.max(1), now);
        }
    }

    /// Moves everything the node produced to where it goes. Never waits
    /// on another shard (see `outbox`).
    async fn pump(&self) {
        let mut failed = Vec::new();
        {
            let mut node = self.node.borrow_mut();
            let socks = self.ctx.udp_sockets();
            while let Some(t) = node.poll_transmit() {
                if let Some(s) = socks.get(usize::from(t.identity)) {
                    if s.queue_send(t.to, &t.bytes).is_err() {
                        s.record_budget_drops(1);
                    }
                }
                node.recycle(t.bytes);
            }
            while let Some(a) = node.poll_action() {
                match a {
                    Action::ToShard { shard, msg } => {
                        if let Err(msg) = self.outbox.push(usize::from(shard), msg) {
                            self.spill(msg);
                        }
                    }
                    Action::Discovered { infohash, source } => {
                        if let Err(e) = self.store.discovered(infohash.0, source, SystemTime::now())
                        {
                            log::debug!("store: {infohash} not recorded as pending: {e}");
                        }
                    }
                    Action::Fetch {
                        infohash,
                        source,
                        peers,
                    } => {
                        let job = FetchJob {
                            infohash,
                            source,
                            discovered_at: SystemTime::now(),
                            peers,
                        };
                        if let Err(job) = self.pool.submit(job) {
                            // Cannot happen while max_fetching <= the queue;
                            // if it does, the harvester retries later.
                            log::warn!("fetch queue full: {infohash} waits for a retry");
                            failed.push((infohash, job.peers));
                        }
                    }
                    Action::GaveUp { infohash } => {
                        if let Err(e) = self.store.forget(infohash.0) {
                            log::debug!("store: {infohash} not forgotten: {e}");
                        }
                    }
                    Action::MorePeers { infohash, peers } => self.pool.add_peers(infohash, &peers),
                    Action::Scraped {
                        infohash,
                        seeders,
                        leechers,
                    } => {
                        if let Err(e) =
                            self.store
                                .scraped(infohash.0, seeders, leechers, SystemTime::now())
                        {
                            log::debug!("store: scrape of {infohash} not recorded: {e}");
                        }
                    }
                    Action::Rekeyed { identity, id, .. } => {
                        let (dir, binds) = &self.ids_file;
                        if let Some(bind) = binds.get(usize::from(identity)) {
                            if let Err(e) = identity::save_id(dir, *bind, id) {
                                log::warn!("new id {id} for {bind} not saved: {e}");
                            }
                        }
                    }
                }
            }
        }
        if !failed.is_empty() {
            let mut node = self.node.borrow_mut();
            for (infohash, tried) in failed {
                node.handle_fetch_result(
                    infohash,
                    crate::dht::harvest::FetchOutcome::Failed { tried },
                    Instant::now(),
                );
            }
        }
        for s in self.ctx.udp_sockets().iter() {
            s.flush().await;
        }
        self.outbox.wake();
        // What was handled may have moved the node's deadline earlier (a
        // queue that was empty now waits on the budget): wake the timer.
        if let Some(t) = self.node.borrow().poll_timeout() {
            if t < self.timer_at.get() {
                self.timer_at.set(t);
                let _ = self.kick.try_send(());
            }
        }
    }

    /// Copies counters to the shared telemetry and the metrics recorder.
    fn publish(&self) {
        let stats = self.node.borrow().stats();
        let f = self.pool.stats();
        if let Some(t) = self.tele.shard(self.ctx.shard_id()) {
            t.update(&stats, &f, self.pool.queue_len());
            t.db_full.store(
                u64::from(self.store.is_full()),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        telemetry::export_metrics(self.ctx.shard_id(), &stats, &f, self.pool.queue_len());
        let shard = self.ctx.shard_id().to_string();
        for (fate, v) in self.pool.utp_stats().datagram_fates() {
            metrics::counter!("dht_hunter_utp_datagrams_total", "shard" => shard.clone(), "fate" => fate)
                .absolute(v);
        }
        metrics::gauge!("dht_hunter_shard_stall_max_seconds", "shard" => shard.clone())
            .set(self.stall_max.get().as_secs_f64());
        let o = self.outbox.stats();
        metrics::counter!("dht_hunter_mesh_held_total", "shard" => shard.clone()).absolute(o.held);
        metrics::counter!("dht_hunter_mesh_spilled_total", "shard" => shard.clone())
            .absolute(o.spilled);
        metrics::gauge!("dht_hunter_mesh_held", "shard" => shard)
            .set(self.outbox.held_len() as f64);
    }
}
