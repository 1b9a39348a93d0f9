//! The fetch pool against the load generator's peers on loopback: a lying
//! peer is detected, penalised and skipped afterwards; the next peer of the
//! same job succeeds; a full queue hands jobs back and counts them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use dht_hunter::fetch::{FailureKind, FetchJob, FetchPool, PoolConfig};
use dht_hunter::loadgen::swarm::{Swarm, SwarmConfig};
use dht_hunter::store::{Source, Store};

#[test]
fn liars_are_penalised_and_honest_peers_win() {
    // Every torrent has two peers; with bad_fraction 1.0 the second peer of
    // each torrent misbehaves, in turn, in every way the swarm knows.
    let swarm = Swarm::start(&SwarmConfig {
        nodes: 8,
        torrents: 24,
        peers_per_torrent: 2,
        bad_fraction: 1.0,
        unfetchable_fraction: 0.0,
        large_torrents: 0,
        client_rate: 0,
        seed: 3,
        ..SwarmConfig::default()
    })
    .unwrap();
    let liar = swarm
        .truth
        .iter()
        .find_map(|t| {
            t.peers
                .iter()
                .find(|p| p.behaviour == "lie")
                .map(|p| (t.infohash.clone(), p.addr.parse::<SocketAddr>().unwrap()))
        })
        .expect("a lying peer");
    // Jobs list the misbehaving peer FIRST, so it is always tried.
    let jobs: Vec<FetchJob> = swarm
        .truth
        .iter()
        .map(|t| {
            let mut peers: Vec<SocketAddr> =
                t.peers.iter().map(|p| p.addr.parse().unwrap()).collect();
            peers.reverse();
            FetchJob {
                info_hash: t.infohash.parse().unwrap(),
                source: Source::Sample,
                discovered_at: SystemTime::now(),
                peers,
            }
        })
        .collect();
    // One more job for the liar's own torrent, listing only the liar and
    // then an honest peer: the liar must now be skipped as penalised.
    let honest = swarm
        .truth
        .iter()
        .find(|t| t.infohash == liar.0)
        .and_then(|t| t.peers.iter().find(|p| p.honest))
        .map(|p| p.addr.parse::<SocketAddr>().unwrap())
        .unwrap();
    let dir = std::env::temp_dir().join(format!("dh-pool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::open(&format!("sqlite:{}", dir.join("db.sqlite").display())).unwrap();
    let writer = store.writer();
    let n = jobs.len() as u64;
    let late = FetchJob {
        info_hash: liar.0.parse().unwrap(),
        source: Source::Sample,
        discovered_at: SystemTime::now(),
        peers: vec![liar.1, honest],
    };
    let results = shards::ShardsBuilder::new()
        .shards(1)
        .pin(false)
        .spawn(move |ctx: shards::ShardContext<()>| {
            let jobs = jobs.clone();
            let late = late.clone();
            let writer = writer.clone();
            async move {
                let mut cfg = PoolConfig {
                    concurrency: 12,
                    peers_at_once: 1,
                    max_queue: 64,
                    ..PoolConfig::default()
                };
                cfg.fetch.hard_deadline = Duration::from_secs(3);
                cfg.fetch.handshake_timeout = Duration::from_secs(2);
                let pool = FetchPool::new(cfg);
                let stats = pool.stats();
                for j in jobs {
                    assert!(pool.submit(j).is_ok());
                }
                let tcp = Rc::new(ctx.tcp().clone());
                let stop = ctx.shutdown();
                let runner = glommio::spawn_local(pool.clone().run(tcp, writer, stop));
                while stats.fetched.get() + stats.jobs_failed.get() < n {
                    glommio::timer::sleep(Duration::from_millis(20)).await;
                }
                let penalised_before = stats.failures(FailureKind::Penalised);
                assert!(pool.submit(late).is_ok());
                while stats.fetched.get() + stats.jobs_failed.get() < n + 1 {
                    glommio::timer::sleep(Duration::from_millis(20)).await;
                }
                ctx.shutdown_handle().trigger();
                runner.await;
                Ok::<_, std::io::Error>((
                    stats.fetched.get(),
                    stats.jobs_failed.get(),
                    stats.failures(FailureKind::HashMismatch),
                    stats.failures(FailureKind::Penalised) - penalised_before,
                    [
                        FailureKind::Reject,
                        FailureKind::Oversize,
                        FailureKind::Timeout,
                        FailureKind::Closed,
                    ]
                    .map(|k| stats.failures(k)),
                ))
            }
        })
        .unwrap()
        .join()
        .unwrap();
    let (fetched, failed, mismatches, penalised_late, others) = results[0];
    swarm.stop();
    // Every job, the late one included, ended with verified metadata.
    assert_eq!(fetched, n + 1);
    assert_eq!(failed, 0);
    assert!(mismatches >= 1, "the liar was not caught");
    assert_eq!(penalised_late, 1, "the penalised liar was tried again");
    assert!(others.iter().all(|c| *c > 0), "{others:?}");
    store.flush().unwrap();
    assert_eq!(store.stats().unwrap().torrents, n);
    store.close().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_full_queue_hands_jobs_back() {
    let out = shards::ShardsBuilder::new()
        .shards(1)
        .pin(false)
        .spawn(|_ctx: shards::ShardContext<()>| async move {
            let pool = FetchPool::new(PoolConfig {
                max_queue: 2,
                ..PoolConfig::default()
            });
            let mut back = 0;
            for i in 0..5u8 {
                let job = FetchJob {
                    info_hash: dht_hunter::id::Id([i; 20]),
                    source: Source::GetPeers,
                    discovered_at: SystemTime::now(),
                    peers: Vec::new(),
                };
                if let Err(j) = pool.submit(job) {
                    assert_eq!(
                        j.info_hash.0[0], i,
                        "the job handed back is the one refused"
                    );
                    back += 1;
                }
            }
            let s = pool.stats();
            Ok::<_, std::io::Error>((back, s.rejected.get(), s.queued.get(), pool.queue_len()))
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(out[0], (3, 3, 2, 2));
}
