//! The flood generator against the real engine, in-process, on loopback:
//! every answer decodes and matches its query's tid, the accounting adds
//! up, and at a moderate rate nearly every query is answered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use dht_hunter::config::{CrawlConfig, FileConfig};
use dht_hunter::engine::{self, EngineParts, Telemetry};
use dht_hunter::loadgen::flood::{self, FloodConfig, FloodError};
use dht_hunter::store::Store;

/// A crawler engine on loopback with its own directory and SQLite store.
struct Rig {
    eng: engine::Engine,
    store: Store,
    telemetry: Arc<Telemetry>,
    dir: std::path::PathBuf,
}

impl Rig {
    /// `shards` shards bootstrapping from `bootstrap`, with `edit` applied
    /// to the loopback file config and `tweak` to every node config.
    fn start(
        name: &str,
        shards: usize,
        bootstrap: Vec<String>,
        edit: impl FnOnce(&mut FileConfig),
        tweak: Option<engine::NodeTweak>,
    ) -> Rig {
        let dir = std::env::temp_dir().join(format!("dh-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = format!("sqlite:{}", dir.join("db.sqlite").display());
        let mut fc = FileConfig::loopback(shards, bootstrap, dir.join("state"), db.clone());
        edit(&mut fc);
        let cfg = CrawlConfig::resolve(fc).unwrap();
        let store = Store::open(&db).unwrap();
        let telemetry = Arc::new(Telemetry::default());
        let mut parts = EngineParts::new(store.writer(), telemetry.clone());
        if let Some(t) = tweak {
            parts = parts.with_tweak(t);
        }
        let eng = engine::start(&cfg, parts).unwrap();
        Rig {
            eng,
            store,
            telemetry,
            dir,
        }
    }

    /// Per-shard counter `f` of the telemetry.
    fn per_shard(&self, n: usize, f: impl Fn(&engine::ShardTelemetry) -> u64) -> Vec<u64> {
        (0..n)
            .map(|s| self.telemetry.shard(s).map(&f).unwrap_or(0))
            .collect()
    }

    fn stop(self) {
        self.eng.shutdown_handle().trigger();
        self.eng.join().unwrap();
        self.store.close().unwrap();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn engine_answers_a_mixed_flood() {
    // Bootstrap to a bound socket that never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rig = Rig::start(
        "flood",
        1,
        vec![silent.local_addr().unwrap().to_string()],
        |fc| {
            fc.max_pps = Some(1_000_000);
            fc.per_ip_pps = Some(1_000_000);
            fc.fetch_concurrency = Some(8);
            fc.fetch_timeout = Some(2);
        },
        Some(engine::unthrottled()),
    );
    let target = rig.eng.udp_addrs[0];

    let mut fc = FloodConfig::new(target);
    fc.sources = 32;
    fc.rate = 3000;
    fc.duration = Duration::from_secs(1);
    fc.timeout = Duration::from_millis(800);
    fc.mix = "ping=2,find_node=2,get_peers=2,announce_peer=1,sample_infohashes=1"
        .parse()
        .unwrap();
    fc.infohashes = 500;
    let r = flood::run(&fc);
    rig.stop();
    let r = r.unwrap();
    eprintln!("{r}");

    assert!(r.sent > 2000, "{r}");
    assert_eq!(r.undecodable, 0, "every answer decodes\n{r}");
    assert_eq!(r.unmatched, 0, "every answer's tid matches a query\n{r}");
    assert_eq!(r.answered, r.responses + r.errors);
    assert_eq!(r.answered + r.unanswered, r.sent, "{r}");
    assert!(
        r.answered as f64 > 0.9 * r.sent as f64,
        "at a moderate rate nearly everything is answered\n{r}"
    );
    // Every kind was sent, announces with valid tokens: no errors.
    let k = r.sent_by_kind;
    assert!(k.ping > 0 && k.find_node > 0 && k.get_peers > 0, "{r}");
    assert!(k.announce_peer > 0 && k.sample_infohashes > 0, "{r}");
    assert_eq!(r.errors, 0, "{r}");
}

#[test]
fn refuses_non_loopback_target() {
    let cfg = FloodConfig::new("198.51.100.7:6881".parse().unwrap());
    assert!(matches!(flood::run(&cfg), Err(FloodError::NotLoopback(_))));
}

/// A flood of get_peers for random infohashes from many sources, in the
/// same run as a real harvest: the flood fills the harvester's table (kept
/// small here so that it overflows), yet every fetchable torrent of the
/// swarm is stored, because infohashes seen only in get_peers are the first
/// to be evicted and the last to be searched for.
#[test]
fn get_peers_flood_does_not_stop_the_harvest() {
    use dht_hunter::loadgen::swarm::{Swarm, SwarmConfig};
    use std::time::Instant;
    let swarm = Swarm::start(&SwarmConfig {
        nodes: 300,
        torrents: 120,
        large_torrents: 0,
        client_rate: 0,
        seed: 21,
        ..SwarmConfig::default()
    })
    .unwrap();
    let fetchable = swarm.truth.iter().filter(|t| t.fetchable).count() as u64;
    let bootstrap = swarm
        .node_addrs
        .iter()
        .take(8)
        .map(|a| a.to_string())
        .collect();
    // A small table, so that the flood overflows it.
    let tweak: engine::NodeTweak = Arc::new(|nc: &mut dht_hunter::dht::NodeConfig| {
        nc.harvest.max_entries = 1000;
    });
    let rig = Rig::start("flood-harvest", 1, bootstrap, |_| {}, Some(tweak));
    let telemetry = rig.telemetry.clone();
    let mut fc = FloodConfig::new(rig.eng.udp_addrs[0]);
    fc.sources = 256;
    fc.rate = 3000;
    fc.duration = Duration::from_secs(10);
    fc.timeout = Duration::from_millis(500);
    fc.mix = "get_peers=1".parse().unwrap();
    fc.infohashes = 0; // a fresh random infohash per query
    let start = Instant::now();
    let flood = std::thread::spawn(move || flood::run(&fc));
    while telemetry.totals().fetched < fetchable && start.elapsed() < Duration::from_secs(90) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = flood.join().unwrap().unwrap();
    let t = telemetry.totals();
    rig.stop();
    swarm.stop();
    eprintln!(
        "{r}\nfetched {} of {fetchable} in {:?}",
        t.fetched,
        start.elapsed()
    );
    // The flood really was one: thousands of random infohashes taken in.
    assert!(r.sent_by_kind.get_peers > 10_000, "{r}");
    // Each answered get_peers went through the harvester, whose table of
    // 1000 filled up.
    assert!(t.answered > 10_000, "the flood did not reach the harvester");
    assert!(t.infohashes >= 1000, "the table never filled");
    assert!(
        t.fetched >= fetchable,
        "{} of {fetchable} stored",
        t.fetched
    );
}

/// `--max-pps` is one limit for the process: with one shard flooded and the
/// other idle, the busy shard answers well above its static half (it
/// borrows the idle shard's share through the runtime's global budget),
/// and the two together stay within the limit.
#[test]
fn busy_shard_borrows_the_idle_shards_budget() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    const LIMIT: u64 = 2000;
    let tweak: engine::NodeTweak = Arc::new(|nc: &mut dht_hunter::dht::NodeConfig| {
        nc.inbound_per_ip_pps = 1_000_000;
        nc.inbound_per_ip_burst = 1_000_000;
        nc.per_ip_pps = 1_000_000;
        nc.per_ip_burst = 1_000_000;
    });
    let rig = Rig::start(
        "lend",
        2,
        vec![silent.local_addr().unwrap().to_string()],
        |fc| {
            fc.max_pps = Some(LIMIT as u32);
            // Spread: each shard its own port, so the flood reaches one.
            fc.identity = Some(dht_hunter::config::IdentityMode::Spread);
        },
        Some(tweak),
    );
    // Shard 0's socket (spread lists shard 0's first).
    let mut fc = FloodConfig::new(rig.eng.udp_addrs[0]);
    fc.sources = 64;
    fc.rate = 3 * LIMIT;
    fc.duration = Duration::from_secs(4);
    fc.timeout = Duration::from_millis(500);
    fc.mix = "ping=1".parse().unwrap();
    fc.read_only = true;
    let r = flood::run(&fc).unwrap();
    let per_shard = rig.per_shard(2, |t| t.packets_out.load(Relaxed));
    rig.stop();
    eprintln!("{r}\npackets out per shard: {per_shard:?}");
    let secs = fc.duration.as_secs_f64();
    let answered_rate = r.answered as f64 / secs;
    // Above its static share (LIMIT / 2) by a margin lending alone explains.
    assert!(
        answered_rate > 0.7 * LIMIT as f64,
        "the busy shard answered {answered_rate:.0}/s, static share {}",
        LIMIT / 2
    );
    // Everything both shards sent, over the run (plus start-up bursts and
    // the drain), within the one limit.
    let total: u64 = per_shard.iter().sum();
    assert!(
        (total as f64) < LIMIT as f64 * (secs + 0.5) * 1.05,
        "sent {total} in {secs} s under a {LIMIT}/s limit"
    );
}

/// One source address using many ports reaches both shards (the kernel
/// spreads its datagrams by 4-tuple), yet its inbound per-IP limit holds
/// for the process: the shards check one shared table.
#[test]
fn inbound_per_ip_limit_holds_across_shards() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    const RATE: u32 = 100;
    let tweak: engine::NodeTweak = Arc::new(|nc: &mut dht_hunter::dht::NodeConfig| {
        nc.inbound_per_ip_pps = RATE;
        nc.inbound_per_ip_burst = RATE;
        nc.per_ip_pps = 1_000_000;
        nc.per_ip_burst = 1_000_000;
        nc.max_pps = 1_000_000;
        nc.max_bps = 1_000_000_000;
    });
    let rig = Rig::start(
        "perip",
        2,
        vec![silent.local_addr().unwrap().to_string()],
        |_| {},
        Some(tweak),
    );
    // 64 ports of one address, pinging round-robin at 2000/s for 2 s.
    let target = rig.eng.udp_addrs[0];
    let socks: Vec<UdpSocket> = (0..64)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.9:0").unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let run = Duration::from_secs(2);
    let mut ping = Vec::new();
    dht_hunter::krpc::message::encode_query(
        &mut ping,
        &dht_hunter::krpc::message::Header {
            tid: b"pp",
            version: None,
        },
        &dht_hunter::id::Id([3; 20]),
        &dht_hunter::krpc::Method::Ping,
        dht_hunter::krpc::Want::default(),
        true,
    );
    let start = std::time::Instant::now();
    let (mut sent, mut answered) = (0u64, 0u64);
    let mut buf = [0u8; 1500];
    while start.elapsed() < run + Duration::from_millis(500) {
        if start.elapsed() < run {
            let due = (start.elapsed().as_secs_f64() * 2000.0) as u64;
            while sent < due {
                let _ = socks[sent as usize % socks.len()].send_to(&ping, target);
                sent += 1;
            }
        }
        for s in &socks {
            while s.recv_from(&mut buf).is_ok() {
                answered += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let per_shard_in = rig.per_shard(2, |t| t.packets_in.load(Relaxed));
    rig.stop();
    eprintln!("sent {sent}, answered {answered}; packets in per shard: {per_shard_in:?}");
    // Both shards received part of the flood...
    assert!(per_shard_in.iter().all(|n| *n > 100), "{per_shard_in:?}");
    // ...and together answered one source's limit: its burst plus the rate
    // over the run and the drain (per-shard tables would allow twice that).
    let bound = f64::from(RATE) + f64::from(RATE) * (run.as_secs_f64() + 0.5);
    assert!(
        (answered as f64) <= bound,
        "answered {answered} over a per-IP bound of {bound}"
    );
    assert!(answered as f64 >= 0.6 * bound, "answered only {answered}");
}
