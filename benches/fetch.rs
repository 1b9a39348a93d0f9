//! Metadata fetches completed per second by one shard's fetch pool, against
//! the load generator's honest peers on loopback, and the heap held per
//! in-flight fetch.
//!
//! Run: `cargo bench --bench fetch [-- TORRENTS CONCURRENCY]` (concurrency
//! defaults to the crawl's, `fetch::DEFAULT_CONCURRENCY`), with
//! `DH_BENCH_WIRE` choosing the one wire both sides speak:
//! - `plain` (default): plaintext BT over TCP;
//! - `mse`: every peer requires MSE/PE with RC4 and the pool speaks only
//!   that (DH, RC4 both ways);
//! - `utp`: every peer is uTP-only and the pool opens only uTP, on the
//!   shard's own UDP socket read by a receive loop like the crawler's
//!   (batched `recvmmsg`, datagrams handed to the multiplexer, sends queued
//!   and flushed by `sendmmsg`).
//!
//! Results: `tuning/runs/`. The swarm's peers run in a child process (this
//! binary again, on its own shard), so the heap counted here is the
//! fetcher's alone; on a 2-core machine each side has one core.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dht_hunter::fetch::{
    EncryptionPolicy, FetchPool, PoolConfig, TransportPolicy, UtpMux, UtpSocket,
};

use dht_hunter::store::Store;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{live, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[path = "support/peer_swarm.rs"]
mod peer_swarm;
use peer_swarm::{bench_wire, serve_if_child, PeerSwarm, Wire};

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let torrents: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5000);
    let concurrency: usize = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(dht_hunter::fetch::DEFAULT_CONCURRENCY);
    if serve_if_child(torrents) {
        return;
    }
    let swarm = PeerSwarm::spawn(&[
        "--bench".into(),
        torrents.to_string(),
        concurrency.to_string(),
    ]);
    let truth = &swarm.truth;
    let jobs = swarm.jobs();
    let mean_info: f64 = truth.iter().map(|t| t.info_len as f64).sum::<f64>() / truth.len() as f64;
    let mut sizes: Vec<usize> = truth.iter().map(|t| t.info_len).collect();
    sizes.sort_unstable();
    let median_info = sizes[sizes.len() / 2];
    let dir = std::env::temp_dir().join(format!("dh-bench-fetch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::open(&format!("sqlite:{}", dir.join("db.sqlite").display())).unwrap();
    let writer = store.writer();
    let baseline = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (b2, p2) = (baseline.clone(), peak.clone());
    let n = jobs.len();
    let wire = bench_wire();
    let result = shards::ShardsBuilder::new()
        .shards(1)
        .pin(false)
        .udp_bind(vec!["127.0.0.1:0".parse().unwrap()])
        // The crawl command's socket buffers (`--udp-rcvbuf`/`--udp-sndbuf`)
        // and receive coalescing (`--rx-coalesce-us`), which uTP's datagrams
        // meet on the shard's socket.
        .udp_buffers(
            Some(dht_hunter::config::defaults::UDP_BUFFER),
            Some(dht_hunter::config::defaults::UDP_BUFFER),
        )
        .udp_rx_coalesce(Duration::from_micros(
            std::env::var("DH_BENCH_COALESCE_US")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(dht_hunter::config::defaults::RX_COALESCE_US),
        ))
        .tcp(shards::TcpOptions {
            max_per_shard: concurrency * 2,
            max_per_ip: 4,
            ..shards::TcpOptions::default()
        })
        .spawn(move |ctx: shards::ShardContext<()>| {
            let jobs = jobs.clone();
            let writer = writer.clone();
            let (baseline, peak) = (b2.clone(), p2.clone());
            async move {
                let pool = FetchPool::new(PoolConfig {
                    concurrency,
                    max_queue: jobs.len() + 1,
                    encryption: if wire == Wire::Mse {
                        EncryptionPolicy::EncryptedOnly
                    } else {
                        EncryptionPolicy::Off
                    },
                    transport: if wire == Wire::Utp {
                        TransportPolicy::UtpOnly
                    } else {
                        TransportPolicy::TcpOnly
                    },
                    ..PoolConfig::default()
                });
                // The crawler's uTP path: one multiplexer on the shard's
                // socket, under the shard connector's caps, fed by a batched
                // receive loop (as `engine` does).
                let sock = ctx.udp_sockets()[0].clone();
                let mux = UtpMux::for_shard(
                    UtpSocket::Shard(sock.clone()),
                    concurrency * 2,
                    0,
                    1,
                    ctx.tcp().clone(),
                );
                let rx = {
                    let mux = mux.clone();
                    glommio::spawn_local(async move {
                        let mut batch = shards::RecvBatch::new(64);
                        while sock.recv_batch(&mut batch).await.is_ok() {
                            let now = Instant::now();
                            for d in batch.iter() {
                                mux.dispatch(d.from, d.data, now);
                            }
                            sock.flush().await;
                        }
                    })
                };
                pool.set_utp(vec![mux]);
                let stats = pool.stats();
                baseline.store(live(), Ordering::Relaxed);
                let start = Instant::now();
                for j in jobs {
                    pool.submit(j)
                        .map_err(|_| std::io::Error::other("queue full"))?;
                }
                let tcp = Rc::new(ctx.tcp().clone());
                let stop = ctx.shutdown();
                let runner =
                    glommio::spawn_local(pool.clone().run(tcp, writer, Rc::new(|_, _| {}), stop));
                loop {
                    let done = stats.fetched.get() + stats.jobs_failed.get();
                    let live = live();
                    peak.fetch_max(live, Ordering::Relaxed);
                    if done as usize >= n || start.elapsed() > Duration::from_secs(120) {
                        break;
                    }
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                }
                let elapsed = start.elapsed();
                ctx.shutdown_handle().trigger();
                runner.await;
                drop(rx);
                Ok::<_, std::io::Error>((elapsed, stats.fetched.get(), stats.jobs_failed.get()))
            }
        })
        .unwrap()
        .join()
        .unwrap();
    let (elapsed, fetched, failed) = result[0];
    store.flush().unwrap();
    let stored = store.stats().unwrap().torrents;
    store.close().unwrap();
    drop(swarm);
    let rate = fetched as f64 / elapsed.as_secs_f64();
    let held = peak
        .load(Ordering::Relaxed)
        .saturating_sub(baseline.load(Ordering::Relaxed));
    println!(
        "machine: {} cpus, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );
    println!("wire: {}", wire.describe());
    println!(
        "torrents {n}, concurrency {concurrency}, info dict mean {mean_info:.0} B, median {median_info} B"
    );
    println!(
        "fetched {fetched}, failed {failed}, stored {stored}, elapsed {:.3} s",
        elapsed.as_secs_f64()
    );
    println!("fetches/s (one shard): {rate:.0}");
    println!(
        "peak heap above baseline: {held} B over {concurrency} in flight = {:.0} B per in-flight fetch (upper bound: includes the queued jobs and the store's queue)",
        held as f64 / concurrency as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default()
}
