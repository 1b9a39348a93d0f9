//! The end-to-end benchmark, everything in one run on the same machine:
//!
//! 1. memory per known node (a routing table of 100,000 confirmed nodes)
//!    and per remembered infohash (the dedup set with 1,000,000), counted
//!    by a counting global allocator;
//! 2. KRPC queries answered per second, closed loop (the flood keeps 256
//!    queries in flight from 64 sources): a raw recvmmsg/sendmmsg echo,
//!    then the engine with 1 shard and with 2 shards (keyed queries
//!    answered by their key's owner, and, for the cost of that, answered
//!    locally), with the CPU each spent per answer;
//! 3. metadata fetched per second from the load generator's honest peers
//!    (run in a child process), with 1 and with 2 shards.
//!
//! Run: `cargo bench --bench e2e`. Results: `tuning/runs/`. The generator
//! and the peers share the machine with the server; on 2 cores the 2-shard
//! cases are contended (said in the output), so run it on many cores to
//! see scaling (`tuning/scripts/scaling.sh` does that for KRPC alone).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::mem::zeroed;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dht_hunter::config::{CrawlConfig, FileConfig};
use dht_hunter::dht::dedup::InfohashSet;
use dht_hunter::dht::table::Table;
use dht_hunter::engine::{self, EngineParts, Telemetry};
use dht_hunter::fetch::{FetchJob, FetchPool, PoolConfig};
use dht_hunter::id::Id;
use dht_hunter::keyspace::Slice;
use dht_hunter::krpc::NodeInfo;
use dht_hunter::loadgen::flood::{self, thread_cpu_time, FloodConfig, FloodReport};
use dht_hunter::rng::Rng;
use dht_hunter::store::Store;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{live, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[path = "support/peer_swarm.rs"]
mod peer_swarm;
use peer_swarm::{serve_if_child, PeerSwarm};

const SECS: f64 = 3.0;

fn process_cpu() -> Duration {
    // SAFETY: plain data filled by the kernel.
    let mut ru: libc::rusage = unsafe { zeroed() };
    // SAFETY: a live rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |v: libc::timeval| Duration::new(v.tv_sec as u64, (v.tv_usec as u32) * 1000);
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn flood_cfg(target: SocketAddr) -> FloodConfig {
    let mut c = FloodConfig::new(target);
    c.sources = 64;
    c.rate = 0;
    c.window = 256;
    c.duration = Duration::from_secs_f64(SECS);
    c.mix = "ping=1,find_node=1,get_peers=1".parse().unwrap();
    c.infohashes = 10_000;
    c.timeout = Duration::from_millis(500);
    c
}

fn check(r: &FloodReport) {
    assert_eq!(r.undecodable, 0);
    assert_eq!(r.unmatched, 0);
    assert_eq!(r.answered + r.unanswered, r.sent);
}

fn memory() -> (f64, f64) {
    let now = Instant::now();
    let mut rng = Rng::seed_from_u64(1);
    let before = live();
    let mut table = Table::new(Slice::full(), 200_000, 1 << 15);
    let mut added = 0usize;
    for i in 0..100_000u32 {
        let n = NodeInfo {
            id: Id::random(&mut rng),
            addr: SocketAddr::from((Ipv4Addr::from(0x0b00_0000 + i), 6881)),
        };
        if table.confirm(n, now) {
            added += 1;
        }
    }
    let per_node = (live() - before) as f64 / added.max(1) as f64;
    drop(table);
    let before = live();
    let mut set = InfohashSet::new(2_000_000, (7, 9));
    for _ in 0..1_000_000 {
        set.insert(&Id::random(&mut rng));
    }
    let per_ih = (live() - before) as f64 / set.len() as f64;
    println!(
        "memory: {per_node:.0} B per known node ({added} confirmed nodes), {per_ih:.1} B per remembered infohash ({} in the set; the set's own figure: {:.1})",
        set.len(),
        set.bytes_per_infohash()
    );
    (per_node, per_ih)
}

fn raw_echo() -> (f64, f64) {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    sock.set_nonblocking(true).unwrap();
    let addr = sock.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let stop = stop.clone();
        std::thread::spawn(move || dht_hunter::loadgen::echo::serve(&sock, &stop))
    };
    std::thread::sleep(Duration::from_millis(50));
    let r = flood::run(&flood_cfg(addr)).unwrap();
    stop.store(true, Ordering::Relaxed);
    let cpu = server.join().unwrap();
    check(&r);
    let ns = cpu.as_nanos() as f64 / r.answered.max(1) as f64;
    (r.answers_per_sec, ns)
}

/// The engine answering a closed-loop flood; `forward`: keyed queries go
/// to their key's owner shard (the default with shared identities).
fn engine_case(shards: usize, forward: bool) -> (f64, f64) {
    let dir = std::env::temp_dir().join(format!(
        "dh-e2e-bench-{}-{shards}-{forward}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let silent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let db = format!("sqlite:{}", dir.join("db.sqlite").display());
    let cfg = CrawlConfig::resolve(FileConfig {
        max_pps: Some(10_000_000),
        per_ip_pps: Some(10_000_000),
        inbound_per_ip_pps: Some(1_000_000),
        ..FileConfig::loopback(
            shards,
            vec![silent.local_addr().unwrap().to_string()],
            dir.join("state"),
            db.clone(),
        )
    })
    .unwrap();
    let store = Store::open(&db).unwrap();
    let mut parts = EngineParts::new(store.writer(), Arc::new(Telemetry::default()));
    if !forward {
        parts = parts.with_tweak(Arc::new(|nc: &mut dht_hunter::dht::NodeConfig| {
            nc.forward_queries = false;
        }));
    }
    let eng = engine::start(&cfg, parts).unwrap();
    let target = eng.udp_addrs[0];
    std::thread::sleep(Duration::from_millis(200));
    let cpu0 = process_cpu();
    let g0 = thread_cpu_time();
    let r = flood::run(&flood_cfg(target)).unwrap();
    let gen = thread_cpu_time().saturating_sub(g0);
    let cpu = process_cpu().saturating_sub(cpu0).saturating_sub(gen);
    eng.shutdown_handle().trigger();
    eng.join().unwrap();
    store.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    check(&r);
    (
        r.answers_per_sec,
        cpu.as_nanos() as f64 / r.answered.max(1) as f64,
    )
}

fn fetch_case(swarm: &PeerSwarm, shards: usize) -> f64 {
    let jobs = swarm.jobs();
    let dir = std::env::temp_dir().join(format!("dh-e2e-fetch-{}-{shards}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::open(&format!("sqlite:{}", dir.join("db.sqlite").display())).unwrap();
    let writer = store.writer();
    let jobs = Arc::new(jobs);
    let start = Instant::now();
    let out = shards::ShardsBuilder::new()
        .shards(shards)
        .pin(false)
        .oversubscribe(true)
        .spawn(move |ctx: shards::ShardContext<()>| {
            let jobs = jobs.clone();
            let writer = writer.clone();
            async move {
                let (me, n) = (ctx.shard_id(), ctx.nr_shards());
                let mine: Vec<FetchJob> = jobs.iter().skip(me).step_by(n).cloned().collect();
                let count = mine.len() as u64;
                let pool = FetchPool::new(PoolConfig {
                    concurrency: 256,
                    max_queue: mine.len() + 1,
                    ..PoolConfig::default()
                });
                let stats = pool.stats();
                for j in mine {
                    pool.submit(j)
                        .map_err(|_| std::io::Error::other("queue full"))?;
                }
                let tcp = Rc::new(ctx.tcp().clone());
                let (stop_tx, stop_rx) =
                    shards::glommio::channels::local_channel::new_bounded::<()>(1);
                let runner = glommio::spawn_local(pool.clone().run(
                    tcp,
                    writer,
                    Rc::new(|_, _| {}),
                    async move {
                        let _ = stop_rx.recv().await;
                    },
                ));
                while stats.fetched.get() + stats.jobs_failed.get() < count {
                    glommio::timer::sleep(Duration::from_millis(2)).await;
                }
                let _ = stop_tx.send(()).await;
                runner.await;
                Ok::<_, std::io::Error>((stats.fetched.get(), stats.jobs_failed.get()))
            }
        })
        .unwrap()
        .join()
        .unwrap();
    let elapsed = start.elapsed();
    let fetched: u64 = out.iter().map(|x| x.0).sum();
    let failed: u64 = out.iter().map(|x| x.1).sum();
    store.flush().unwrap();
    assert_eq!(store.stats().unwrap().torrents, fetched);
    store.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(failed, 0);
    fetched as f64 / elapsed.as_secs_f64()
}

fn main() {
    if serve_if_child(6000) {
        return;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("# end-to-end benchmark");
    println!(
        "machine: {cpus} cpus, {}, loadavg {}",
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| s
                .lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l[13..].trim().to_string()))
            .unwrap_or_default(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    if cpus < 4 {
        println!("note: {cpus} cpus: the generator, the peers and the store share cores with the shards; 2-shard figures are contended");
    }
    memory();
    let (raw, raw_ns) = raw_echo();
    println!("krpc raw echo:        {raw:>10.0} answers/s, {raw_ns:>6.0} ns CPU per answer");
    for (n, forward) in [(1usize, true), (2, true), (2, false)] {
        let (aps, ns) = engine_case(n, forward);
        let how = if n > 1 && forward {
            " (keyed queries answered by their owner)"
        } else if n > 1 {
            " (answered locally: forwarding off)"
        } else {
            ""
        };
        println!(
            "krpc dht-hunter {n} shard(s){how}: {aps:>10.0} answers/s, {ns:>6.0} ns CPU per answer, {:.2}x raw echo",
            aps / raw
        );
    }
    let swarm = PeerSwarm::spawn(&["--bench".into()]);
    for n in [1usize, 2] {
        let rate = fetch_case(&swarm, n);
        println!(
            "fetch {n} shard(s): {rate:>8.0} metadata fetched/s ({} torrents)",
            swarm.truth.len()
        );
    }
}
