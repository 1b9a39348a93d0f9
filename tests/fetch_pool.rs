//! The fetch pool against the load generator's peers on loopback: a lying
//! peer is detected, penalised and skipped afterwards; the next peer of the
//! same job succeeds; a full queue hands jobs back and counts them; tarpits
//! (tricklers, junk streamers, silent peers, privileged ports) cost at most
//! their budgets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dht_hunter::dht::harvest::FetchOutcome;
use dht_hunter::fetch::{
    EncryptionPolicy, FailureKind, FetchJob, FetchPool, Handshake, OutcomeSink, PoolConfig,
    Transport, TransportPolicy, UtpMux, UtpSocket, FIRST_UNPRIVILEGED_PORT,
};
use dht_hunter::id::Id;
use dht_hunter::loadgen::peers::{PeerEncryption, PeerKind, PeerPlan, PeerServer, PEER_BASE};
use dht_hunter::loadgen::swarm::{Swarm, SwarmConfig};
use dht_hunter::loadgen::torrents::synth;
use dht_hunter::rng::Rng;
use dht_hunter::store::{Source, Store};
use dht_hunter::wire::Behaviour;

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
                infohash: t.infohash.parse().unwrap(),
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
        infohash: liar.0.parse().unwrap(),
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
                let (outcomes, sink) = collect();
                let runner = glommio::spawn_local(pool.clone().run(tcp, writer, sink, stop));
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
                // Every job's outcome was reported, and each is Stored.
                let o = outcomes.borrow();
                assert_eq!(o.len() as u64, n + 1);
                assert!(o.iter().all(|(_, x)| *x == FetchOutcome::Stored), "{o:?}");
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

type Outcomes = Rc<RefCell<Vec<(Id, FetchOutcome)>>>;

fn collect() -> (Outcomes, OutcomeSink) {
    let out: Outcomes = Rc::new(RefCell::new(Vec::new()));
    let o = out.clone();
    (
        out,
        Rc::new(move |infohash, x| o.borrow_mut().push((infohash, x))),
    )
}

/// Capacity is a queue, not a failure: attempts over the per-IP cap wait
/// and succeed, and silent peers holding every connection slot delay honest
/// jobs by at most a job's time budget, never fail them.
#[test]
fn caps_wait_and_silent_peers_cannot_starve_the_pool() {
    let swarm = Swarm::start(&SwarmConfig {
        nodes: 8,
        torrents: 36,
        peers_per_torrent: 2,
        bad_fraction: 1.0,
        unfetchable_fraction: 0.0,
        large_torrents: 0,
        client_rate: 0,
        seed: 5,
        ..SwarmConfig::default()
    })
    .unwrap();
    let peer = |t: &dht_hunter::loadgen::swarm::TruthTorrent, honest: bool| {
        t.peers
            .iter()
            .find(|p| p.honest == honest && (honest || p.behaviour == "silent"))
            .map(|p| p.addr.parse::<SocketAddr>().unwrap())
    };
    // Six jobs for one torrent through its one honest peer: the TCP layer
    // allows two connections per IP, so four attempts must wait.
    let same = &swarm.truth[0];
    let same_peer = peer(same, true).unwrap();
    let jobs: Vec<FetchJob> = (0..6)
        .map(|_| FetchJob {
            infohash: same.infohash.parse().unwrap(),
            source: Source::Announce,
            discovered_at: SystemTime::now(),
            peers: vec![same_peer],
        })
        .collect();
    // Two jobs with only a silent peer each (they hold two of the four
    // connection slots), then ten honest jobs.
    let silent: Vec<FetchJob> = swarm
        .truth
        .iter()
        .filter_map(|t| {
            peer(t, false).map(|p| FetchJob {
                infohash: t.infohash.parse().unwrap(),
                source: Source::Sample,
                discovered_at: SystemTime::now(),
                peers: vec![p],
            })
        })
        .take(2)
        .collect();
    assert_eq!(silent.len(), 2, "the swarm has silent peers");
    let honest: Vec<FetchJob> = swarm.truth[1..]
        .iter()
        .filter(|t| !silent.iter().any(|s| s.infohash.to_hex() == t.infohash))
        .take(10)
        .map(|t| FetchJob {
            infohash: t.infohash.parse().unwrap(),
            source: Source::Sample,
            discovered_at: SystemTime::now(),
            peers: vec![peer(t, true).unwrap()],
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("dh-pool-cap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::open(&format!("sqlite:{}", dir.join("db.sqlite").display())).unwrap();
    let writer = store.writer();
    let res = shards::ShardsBuilder::new()
        .shards(1)
        .pin(false)
        .spawn(move |ctx: shards::ShardContext<()>| {
            let (mut jobs, silent, honest) = (jobs.clone(), silent.clone(), honest.clone());
            let writer = writer.clone();
            async move {
                let mut cfg = PoolConfig {
                    concurrency: 32,
                    peers_at_once: 1,
                    max_connections: 4,
                    job_budget: Duration::from_secs(2),
                    ..PoolConfig::default()
                };
                cfg.fetch.handshake_timeout = Duration::from_secs(30);
                let pool = FetchPool::new(cfg);
                let stats = pool.stats();
                let silent_ids: Vec<Id> = silent.iter().map(|j| j.infohash).collect();
                let total = jobs.len() + silent.len() + honest.len();
                // The six sharing a peer take all four slots first (two
                // meet the per-IP cap), then the silent ones hold two.
                for j in silent.into_iter().chain(honest) {
                    jobs.push(j);
                }
                for j in jobs {
                    assert!(pool.submit(j).is_ok());
                }
                let (outcomes, sink) = collect();
                let tcp = Rc::new(ctx.tcp().clone());
                let started = std::time::Instant::now();
                let runner =
                    glommio::spawn_local(pool.clone().run(tcp, writer, sink, ctx.shutdown()));
                while outcomes.borrow().len() < total {
                    assert!(started.elapsed() < Duration::from_secs(30), "jobs stuck");
                    glommio::timer::sleep(Duration::from_millis(20)).await;
                }
                let elapsed = started.elapsed();
                ctx.shutdown_handle().trigger();
                runner.await;
                let o = outcomes.borrow();
                let stored = o.iter().filter(|(_, x)| *x == FetchOutcome::Stored).count();
                let silent_failed = o
                    .iter()
                    .filter(|(infohash, x)| {
                        silent_ids.contains(infohash) && matches!(x, FetchOutcome::Failed { .. })
                    })
                    .count();
                Ok::<_, std::io::Error>((
                    stored,
                    silent_failed,
                    stats.deferred.get(),
                    stats.failures(FailureKind::Capped),
                    stats.over_budget.get(),
                    elapsed,
                ))
            }
        })
        .unwrap()
        .join()
        .unwrap();
    let (stored, silent_failed, deferred, capped, over_budget, elapsed) = res[0];
    swarm.stop();
    store.close().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    // All sixteen honest jobs (six sharing one peer) stored; both silent
    // jobs failed, by their budget, in about one budget's time.
    assert_eq!(stored, 16);
    assert_eq!(silent_failed, 2);
    assert!(deferred >= 1, "no attempt met the per-IP cap");
    assert_eq!(capped, 0, "a cap was counted as a failure");
    assert_eq!(over_budget, 2);
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
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
                    infohash: dht_hunter::id::Id([i; 20]),
                    source: Source::GetPeers,
                    discovered_at: SystemTime::now(),
                    peers: Vec::new(),
                };
                if let Err(j) = pool.submit(job) {
                    assert_eq!(j.infohash.0[0], i, "the job handed back is the one refused");
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

// ------------------------------------------------------------- tarpits
//
// Hostile peers served by the load generator's peer server on 127.96.0.x,
// each against a fresh pool that runs its jobs one after the other. (IPv6
// grouping by /64 cannot be shown on loopback, where IPv6 is one address:
// `src/fetch/marks.rs` and `shards::tcp` test it on synthetic addresses.)

/// The hostile peers, all serving one small synthetic torrent.
struct Tarpit {
    server: PeerServer,
    infohash: Id,
    addrs: Vec<SocketAddr>,
}

fn tarpit(kinds: &[PeerKind]) -> Tarpit {
    let plans: Vec<(PeerKind, PeerEncryption)> = kinds
        .iter()
        .map(|k| (*k, PeerEncryption::Plaintext))
        .collect();
    tarpit_with(&plans)
}

fn tarpit_with(kinds: &[(PeerKind, PeerEncryption)]) -> Tarpit {
    let mut rng = Rng::seed_from_u64(11);
    let t = synth(0, &mut rng, None);
    let plans: Vec<PeerPlan> = kinds
        .iter()
        .enumerate()
        .map(|(i, (kind, encryption))| PeerPlan {
            ip: Ipv4Addr::from(u32::from(PEER_BASE) + i as u32),
            kind: *kind,
            torrent: 0,
            churn: None,
            encryption: *encryption,
            utp_only: false,
        })
        .collect();
    let ips: Vec<Ipv4Addr> = plans.iter().map(|p| p.ip).collect();
    let infos = Arc::new(vec![(t.infohash, Arc::new(t.info))]);
    let server = PeerServer::start(plans, infos, Instant::now()).unwrap();
    // The swarm's peers listen on this (ephemeral) port: it must be one the
    // crawler connects to by default.
    assert!(server.port >= FIRST_UNPRIVILEGED_PORT, "{}", server.port);
    let addrs = ips
        .into_iter()
        .map(|ip| SocketAddr::from((ip, server.port)))
        .collect();
    Tarpit {
        server,
        infohash: t.infohash,
        addrs,
    }
}

/// One job's end: its outcome, how long it took, every failure count
/// after it (indexed like `FailureKind::ALL`).
#[derive(Debug, Clone)]
struct Turn {
    outcome: FetchOutcome,
    took: Duration,
    failures: Vec<u64>,
    /// Handshakes by mode (indexed like `Handshake::ALL`), fallbacks and
    /// failed MSE handshakes after it.
    handshakes: Vec<u64>,
    fallbacks: u64,
    mse_failed: u64,
}

impl Turn {
    fn count(&self, kind: FailureKind) -> u64 {
        let i = FailureKind::ALL.iter().position(|k| *k == kind).unwrap();
        self.failures[i]
    }

    fn hs(&self, mode: Handshake) -> u64 {
        let i = Handshake::ALL.iter().position(|m| *m == mode).unwrap();
        self.handshakes[i]
    }
}

/// Runs one job per peer list, each after the previous one ended, on one
/// pool.
fn in_turn(cfg: PoolConfig, infohash: Id, jobs: Vec<Vec<SocketAddr>>, name: &str) -> Vec<Turn> {
    let dir = std::env::temp_dir().join(format!("dh-tarpit-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::open(&format!("sqlite:{}", dir.join("db.sqlite").display())).unwrap();
    let writer = store.writer();
    let turns = shards::ShardsBuilder::new()
        .shards(1)
        .pin(false)
        .spawn(move |ctx: shards::ShardContext<()>| {
            let jobs = jobs.clone();
            let writer = writer.clone();
            async move {
                let pool = FetchPool::new(cfg);
                let stats = pool.stats();
                let (outcomes, sink) = collect();
                let tcp = Rc::new(ctx.tcp().clone());
                let runner =
                    glommio::spawn_local(pool.clone().run(tcp, writer, sink, ctx.shutdown()));
                let mut turns = Vec::new();
                for (i, peers) in jobs.into_iter().enumerate() {
                    let started = Instant::now();
                    assert!(pool
                        .submit(FetchJob {
                            infohash,
                            source: Source::GetPeers,
                            discovered_at: SystemTime::now(),
                            peers,
                        })
                        .is_ok());
                    while outcomes.borrow().len() <= i {
                        assert!(started.elapsed() < Duration::from_secs(30), "job {i} stuck");
                        glommio::timer::sleep(Duration::from_millis(5)).await;
                    }
                    turns.push(Turn {
                        outcome: outcomes.borrow()[i].1.clone(),
                        took: started.elapsed(),
                        failures: FailureKind::ALL
                            .iter()
                            .map(|k| stats.failures(*k))
                            .collect(),
                        handshakes: Handshake::ALL
                            .iter()
                            .map(|m| stats.handshakes(*m))
                            .collect(),
                        fallbacks: stats.fallbacks.get(),
                        mse_failed: stats.mse_failed.get(),
                    });
                }
                ctx.shutdown_handle().trigger();
                runner.await;
                Ok::<_, std::io::Error>(turns)
            }
        })
        .unwrap()
        .join()
        .unwrap();
    store.close().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    turns.into_iter().next().unwrap()
}

/// A peer that answers both handshakes at once, then trickles its metadata
/// a byte every 100 ms (progress inside every read deadline: the idle
/// timeout never fires) is cut off by the connection's wall-time budget.
#[test]
fn a_trickling_peer_is_cut_off_by_the_time_budget() {
    let pit = tarpit(&[PeerKind::Slow]);
    let mut cfg = PoolConfig::default();
    cfg.fetch.hard_deadline = Duration::from_millis(1500);
    let turns = in_turn(cfg, pit.infohash, vec![vec![pit.addrs[0]]], "trickle");
    pit.server.stop();
    let t = &turns[0];
    assert_eq!(
        t.outcome,
        FetchOutcome::Failed {
            tried: vec![pit.addrs[0]]
        }
    );
    assert_eq!(t.count(FailureKind::Timeout), 1);
    // The idle (25 s) and handshake (10 s) timeouts were far off: only the
    // time budget can have ended it, within it plus loopback slack.
    assert!(
        t.took >= Duration::from_millis(1500) && t.took < Duration::from_millis(2500),
        "{:?}",
        t.took
    );
}

/// A peer that answers both handshakes, then streams legal junk messages as
/// fast as we read is cut off by the byte budget long before any deadline,
/// and is penalised: the next job skips it without connecting and gets the
/// metadata from an honest peer.
#[test]
fn a_junk_streaming_peer_is_cut_off_by_the_byte_budget() {
    let pit = tarpit(&[PeerKind::Junk, PeerKind::Serve(Behaviour::Honest)]);
    let (junk, honest) = (pit.addrs[0], pit.addrs[1]);
    let cfg = PoolConfig {
        peers_at_once: 1,
        ..PoolConfig::default()
    };
    let turns = in_turn(
        cfg,
        pit.infohash,
        vec![vec![junk], vec![junk, honest]],
        "junk",
    );
    pit.server.stop();
    let (first, second) = (&turns[0], &turns[1]);
    assert_eq!(first.outcome, FetchOutcome::Failed { tried: vec![junk] });
    assert_eq!(first.count(FailureKind::ByteBudget), 1);
    assert_eq!(first.count(FailureKind::Timeout), 0);
    // The hard deadline is 30 s: 2 MiB on loopback takes milliseconds.
    assert!(first.took < Duration::from_secs(5), "{:?}", first.took);
    assert_eq!(second.outcome, FetchOutcome::Stored);
    assert_eq!(second.count(FailureKind::Penalised), 1);
    assert_eq!(
        second.count(FailureKind::ByteBudget),
        1,
        "junk was tried again"
    );
}

/// A peer that timed out is tried last by the next job (which succeeds
/// through another peer without waiting for it), and after
/// `timeout_strikes` timeouts not at all.
#[test]
fn timed_out_peers_go_last_then_off_the_list() {
    let pit = tarpit(&[
        PeerKind::Serve(Behaviour::NoHandshake),
        PeerKind::Serve(Behaviour::Honest),
    ]);
    let (silent, honest) = (pit.addrs[0], pit.addrs[1]);
    let mut cfg = PoolConfig {
        peers_at_once: 1,
        ..PoolConfig::default()
    };
    cfg.fetch.handshake_timeout = Duration::from_millis(300);
    assert_eq!(cfg.timeout_strikes, 3);
    let jobs = vec![
        vec![silent],
        vec![silent, honest],
        vec![silent],
        vec![silent],
        vec![silent, honest],
        vec![silent],
    ];
    let turns = in_turn(cfg, pit.infohash, jobs, "timeouts");
    pit.server.stop();
    let timeouts: Vec<u64> = turns
        .iter()
        .map(|t| t.count(FailureKind::Timeout))
        .collect();
    let penalised: Vec<u64> = turns
        .iter()
        .map(|t| t.count(FailureKind::Penalised))
        .collect();
    // 1: times out. 2: the silent peer goes last, the honest one serves
    // first, so no second timeout and no wait for one. 3, 4: strikes two
    // and three. 5: skipped (not connected to), the honest peer serves.
    // 6: skipped, nothing left to try.
    assert_eq!(timeouts, [1, 1, 2, 3, 3, 3]);
    assert_eq!(penalised, [0, 0, 0, 0, 1, 2]);
    assert_eq!(turns[1].outcome, FetchOutcome::Stored);
    assert!(
        turns[1].took < Duration::from_millis(300),
        "{:?}",
        turns[1].took
    );
    assert_eq!(turns[4].outcome, FetchOutcome::Stored);
    assert_eq!(
        turns[5].outcome,
        FetchOutcome::Failed {
            tried: vec![silent]
        }
    );
    assert!(
        turns[5].took < Duration::from_millis(300),
        "{:?}",
        turns[5].took
    );
}

/// Peers on ports below 1024 are refused by default: counted, listed as
/// tried, never connected to. (The addresses are loopback anyway; an
/// attempt would show as refused, timed out or closed.)
#[test]
fn privileged_ports_are_refused_without_connecting() {
    let low: Vec<SocketAddr> = [1u16, 22, 80, 1023]
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    let turns = in_turn(
        PoolConfig::default(),
        Id([7; 20]),
        vec![low.clone()],
        "ports",
    );
    let t = &turns[0];
    assert_eq!(t.outcome, FetchOutcome::Failed { tried: low });
    assert_eq!(t.count(FailureKind::PrivilegedPort), 4);
    let attempted: u64 = FailureKind::ALL
        .iter()
        .filter(|k| **k != FailureKind::PrivilegedPort)
        .map(|k| t.count(*k))
        .sum();
    assert_eq!(attempted, 0, "{t:?}");
}

#[path = "support/bombs.rs"]
mod bombs;

/// A pool parses metadata on its shard: 10 MiB of small files under eight
/// directories (seconds of parsing in a debug build) must not keep the
/// shard from its timers and sockets. A 1 ms timer on the same shard is
/// never late by more than a fraction of the parse.
#[test]
fn a_large_metadata_parse_does_not_hold_the_shard() {
    use std::cell::Cell;
    use std::time::Instant;

    use dht_hunter::metainfo::parse_info_pausing;

    let (info, n) = bombs::deep_v2(10 << 20, 8, 1);
    let info = std::sync::Arc::new(info);
    let results = shards::ShardsBuilder::new()
        .shards(1)
        .pin(false)
        .spawn(move |_ctx: shards::ShardContext<()>| {
            let info = info.clone();
            async move {
                let stop = Rc::new(Cell::new(false));
                let worst = Rc::new(Cell::new(Duration::ZERO));
                let (s, w) = (stop.clone(), worst.clone());
                let heartbeat = glommio::spawn_local(async move {
                    while !s.get() {
                        let asked = Instant::now();
                        shards::timers::sleep(Duration::from_millis(1)).await;
                        let late = asked.elapsed().saturating_sub(Duration::from_millis(1));
                        w.set(w.get().max(late));
                    }
                });
                shards::timers::sleep(Duration::from_millis(5)).await;
                worst.set(Duration::ZERO);
                let started = Instant::now();
                let parsed = parse_info_pausing(&info, shards::timers::reactor_turn).await;
                let took = started.elapsed();
                // Let the heartbeat see a stall at the very end, too.
                shards::timers::sleep(Duration::from_millis(5)).await;
                stop.set(true);
                heartbeat.await;
                let files = parsed.map(|t| t.files.len()).map_err(|e| e.to_string());
                Ok::<_, std::io::Error>((files, took, worst.get()))
            }
        })
        .unwrap()
        .join()
        .unwrap();
    let (files, took, worst) = results.into_iter().next().unwrap();
    assert_eq!(files, Ok(n));
    eprintln!("parse {took:?}, heartbeat at most {worst:?} late");
    // Without pauses the heartbeat would be late by the whole parse.
    assert!(
        took > Duration::from_millis(200),
        "{took:?}: too fast to show"
    );
    assert!(worst < took / 4, "{worst:?} late during a {took:?} parse");
}

// ------------------------------------------------------------- MSE/PE

const HONEST: PeerKind = PeerKind::Serve(Behaviour::Honest);

/// Peers that require encryption, enable it, or speak plaintext only, each
/// fetched alone by pools with each policy: the default (plain first, then
/// MSE) reaches them all, on the second connection for the one that
/// requires encryption; encrypted-first falls back to plaintext for the
/// plaintext-only peer; the strict policies miss what they exclude.
#[test]
fn encryption_policies_against_each_kind_of_peer() {
    let pit = tarpit_with(&[
        (HONEST, PeerEncryption::Required),
        (HONEST, PeerEncryption::Enabled),
        (HONEST, PeerEncryption::Plaintext),
    ]);
    let (required, enabled, plain) = (pit.addrs[0], pit.addrs[1], pit.addrs[2]);
    let jobs = || vec![vec![required], vec![enabled], vec![plain]];
    let run = |policy: EncryptionPolicy, name: &str| {
        let cfg = PoolConfig {
            peers_at_once: 1,
            encryption: policy,
            ..PoolConfig::default()
        };
        in_turn(cfg, pit.infohash, jobs(), name)
    };
    let stored = |turns: &[Turn]| -> Vec<bool> {
        turns
            .iter()
            .map(|t| t.outcome == FetchOutcome::Stored)
            .collect()
    };

    assert_eq!(
        PoolConfig::default().encryption,
        EncryptionPolicy::PlainFirst
    );
    let t = run(EncryptionPolicy::PlainFirst, "plain-first");
    assert_eq!(stored(&t), [true, true, true]);
    // Job 1: plaintext refused, then MSE with RC4 (the peer requires it).
    assert_eq!(t[0].hs(Handshake::Plain), 1);
    assert_eq!(t[0].hs(Handshake::MseRc4), 1);
    assert_eq!(t[0].fallbacks, 1);
    // Jobs 2 and 3: plaintext at once, no fallback.
    assert_eq!(t[2].hs(Handshake::Plain), 3);
    assert_eq!(t[2].hs(Handshake::MseRc4), 1);
    assert_eq!(t[2].fallbacks, 1);

    let t = run(EncryptionPolicy::EncryptedFirst, "encrypted-first");
    assert_eq!(stored(&t), [true, true, true]);
    // Both MSE peers pick RC4 from our offer of RC4 or plaintext.
    assert_eq!(t[1].hs(Handshake::MseRc4), 2);
    assert_eq!(t[1].fallbacks, 0);
    // The plaintext-only peer hangs up on our key: one failed MSE
    // handshake, then plaintext on a second connection.
    assert_eq!(t[2].mse_failed, 1);
    assert_eq!(t[2].fallbacks, 1);
    assert_eq!(t[2].hs(Handshake::Plain), 1);

    let t = run(EncryptionPolicy::EncryptedOnly, "encrypted-only");
    assert_eq!(stored(&t), [true, true, false]);
    assert_eq!(t[2].fallbacks, 0);

    let t = run(EncryptionPolicy::Off, "off");
    assert_eq!(stored(&t), [false, true, true]);
    assert_eq!(t[2].hs(Handshake::MseRc4), 0);
    pit.server.stop();
}

/// A raw TCP peer on loopback that sends `script` (bytes, then a pause
/// each) to every connection and then holds it open until `hold` passes.
/// Peers are marked by IP: each raw peer gets its own loopback address.
fn raw_peer(ip: &str, script: Vec<(Vec<u8>, Duration)>, hold: Duration) -> SocketAddr {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind((ip, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let script = script.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_millis(10)));
                let mut sink = [0u8; 4096];
                let end = Instant::now() + hold;
                for (bytes, pause) in script {
                    if s.write_all(&bytes).is_err() {
                        return;
                    }
                    std::thread::sleep(pause);
                }
                while Instant::now() < end {
                    match s.read(&mut sink) {
                        Ok(0) => return,
                        _ => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            });
        }
    });
    addr
}

/// Hostile MSE peers: 700 bytes of junk for a key and pad fails at once
/// with a protocol error (no sync within 96 + 520 bytes), long before any
/// deadline, and penalises the peer (600 bytes, inside the window the spec
/// allows, end like the trickler); a peer that trickles a byte every 50 ms (never
/// idle, never syncing within the window it allows itself) is ended by
/// the handshake timeout; neither holds the slot past the existing limits.
#[test]
fn hostile_mse_peers_release_their_slot() {
    let mut junk = vec![0u8; 700];
    Rng::seed_from_u64(5).fill(&mut junk);
    let hold = Duration::from_secs(20);
    let junk_peer = raw_peer("127.0.0.2", vec![(junk, Duration::ZERO)], hold);
    let trickle: Vec<(Vec<u8>, Duration)> = (0..400u32)
        .map(|i| (vec![i as u8 | 1], Duration::from_millis(50)))
        .collect();
    let trickle_peer = raw_peer("127.0.0.3", trickle, hold);
    let mut cfg = PoolConfig {
        peers_at_once: 1,
        encryption: EncryptionPolicy::EncryptedOnly,
        allow_privileged_ports: true,
        ..PoolConfig::default()
    };
    cfg.fetch.handshake_timeout = Duration::from_millis(1500);
    let turns = in_turn(
        cfg,
        Id([7; 20]),
        vec![vec![junk_peer], vec![trickle_peer]],
        "mse-hostile",
    );
    let (j, t) = (&turns[0], &turns[1]);
    assert_eq!(
        j.outcome,
        FetchOutcome::Failed {
            tried: vec![junk_peer]
        }
    );
    assert_eq!(j.count(FailureKind::Malformed), 1, "no sync is junk");
    assert_eq!(j.mse_failed, 1);
    assert!(j.took < Duration::from_millis(1000), "{:?}", j.took);
    assert_eq!(t.count(FailureKind::Timeout), 1);
    assert_eq!(t.mse_failed, 2);
    assert!(
        t.took >= Duration::from_millis(1500) && t.took < Duration::from_millis(2500),
        "{:?}",
        t.took
    );
}

// ----------------------------------------------------------------- uTP

/// One job per transport policy against a uTP-only honest peer and a
/// TCP-only honest peer, on a pool whose uTP runs on a loopback UDP socket
/// multiplexed as the shard's is. Returns per policy: the two outcomes
/// (uTP-only peer, TCP peer), verified counts (tcp, utp), transport
/// fallbacks, uTP transport failures, and how long each job took.
fn utp_turns(
    policy: TransportPolicy,
    large: Option<usize>,
) -> (
    FetchOutcome,
    FetchOutcome,
    (u64, u64),
    u64,
    u64,
    Vec<Duration>,
) {
    let mut rng = Rng::seed_from_u64(21);
    let t = synth(0, &mut rng, large);
    let plans = vec![
        PeerPlan {
            ip: PEER_BASE,
            kind: PeerKind::Serve(Behaviour::Honest),
            torrent: 0,
            churn: None,
            encryption: PeerEncryption::Plaintext,
            utp_only: true,
        },
        PeerPlan {
            ip: Ipv4Addr::from(u32::from(PEER_BASE) + 1),
            kind: PeerKind::Serve(Behaviour::Honest),
            torrent: 0,
            churn: None,
            encryption: PeerEncryption::Plaintext,
            utp_only: false,
        },
    ];
    let addrs: Vec<SocketAddr> = plans.iter().map(|p| SocketAddr::from((p.ip, 0))).collect();
    let infohash = t.infohash;
    let infos = Arc::new(vec![(t.infohash, Arc::new(t.info))]);
    let server = PeerServer::start(plans, infos, Instant::now()).unwrap();
    let port = server.port;
    let addrs: Vec<SocketAddr> = addrs
        .into_iter()
        .map(|a| SocketAddr::from((a.ip(), port)))
        .collect();
    let dir = std::env::temp_dir().join(format!(
        "dh-utp-pool-{}-{}-{}",
        policy.as_str(),
        large.unwrap_or(0),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::open(&format!("sqlite:{}", dir.join("db.sqlite").display())).unwrap();
    let writer = store.writer();
    let out = shards::ShardsBuilder::new()
        .shards(1)
        .pin(false)
        .spawn(move |ctx: shards::ShardContext<()>| {
            let writer = writer.clone();
            let addrs = addrs.clone();
            async move {
                let cfg = PoolConfig {
                    transport: policy,
                    encryption: EncryptionPolicy::Off,
                    ..PoolConfig::default()
                };
                let pool = FetchPool::new(cfg);
                let sock = Rc::new(glommio::net::UdpSocket::bind("127.0.0.1:0").unwrap());
                let mux = UtpMux::new(UtpSocket::Plain(sock.clone()), 16);
                let rx = {
                    let (sock, mux) = (sock.clone(), mux.clone());
                    glommio::spawn_local(async move {
                        let mut buf = vec![0u8; 65536];
                        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                            mux.handle_datagram(from, &buf[..n], Instant::now());
                        }
                    })
                    .detach()
                };
                pool.set_utp(vec![mux]);
                let stats = pool.stats();
                let (outcomes, sink) = collect();
                let tcp = Rc::new(ctx.tcp().clone());
                let runner =
                    glommio::spawn_local(pool.clone().run(tcp, writer, sink, ctx.shutdown()));
                let mut took = Vec::new();
                for (i, peer) in addrs.iter().enumerate() {
                    let started = Instant::now();
                    assert!(pool
                        .submit(FetchJob {
                            infohash,
                            source: Source::GetPeers,
                            discovered_at: SystemTime::now(),
                            peers: vec![*peer],
                        })
                        .is_ok());
                    while outcomes.borrow().len() <= i {
                        assert!(started.elapsed() < Duration::from_secs(30), "job {i} stuck");
                        glommio::timer::sleep(Duration::from_millis(5)).await;
                    }
                    took.push(started.elapsed());
                }
                let o = outcomes.borrow().clone();
                let counts = (
                    (
                        stats.transport_ok(Transport::Tcp),
                        stats.transport_ok(Transport::Utp),
                    ),
                    stats.transport_fallbacks.get(),
                    stats.utp_failed.get(),
                );
                rx.cancel();
                drop(pool);
                ctx.shutdown_handle().trigger();
                runner.await;
                Ok::<_, std::io::Error>((o, counts, took))
            }
        })
        .unwrap()
        .join()
        .unwrap();
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let (o, (ok, fallbacks, utp_failed), took) = out.into_iter().next().unwrap();
    (
        o[0].1.clone(),
        o[1].1.clone(),
        ok,
        fallbacks,
        utp_failed,
        took,
    )
}

/// The default policy (TCP first) fetches from a uTP-only peer (TCP reset,
/// then uTP) and from a TCP peer (TCP, no fallback); uTP-only fetches the
/// first and fails fast on the second (its SYN is answered with a RESET);
/// TCP-only fails on the first.
#[test]
fn pool_fetches_from_utp_only_peers_by_policy() {
    let (utp_peer, tcp_peer, ok, fallbacks, utp_failed, took) =
        utp_turns(TransportPolicy::default(), None);
    assert_eq!(TransportPolicy::default(), TransportPolicy::TcpFirst);
    assert_eq!(utp_peer, FetchOutcome::Stored);
    assert_eq!(tcp_peer, FetchOutcome::Stored);
    assert_eq!(ok, (1, 1), "verified over (tcp, utp)");
    assert_eq!(fallbacks, 1, "only the uTP-only peer needs the fallback");
    assert_eq!(utp_failed, 0);
    eprintln!("tcp-first: {took:?}");

    let (utp_peer, tcp_peer, ok, _, utp_failed, took) = utp_turns(TransportPolicy::UtpOnly, None);
    assert_eq!(utp_peer, FetchOutcome::Stored);
    assert!(
        matches!(tcp_peer, FetchOutcome::Failed { .. }),
        "{tcp_peer:?}"
    );
    assert_eq!(ok, (0, 1));
    assert_eq!(utp_failed, 1, "the TCP peer's RESET");
    assert!(
        took[1] < Duration::from_secs(2),
        "a RESET is not a timeout: {took:?}"
    );

    let (utp_peer, tcp_peer, ok, _, _, _) = utp_turns(TransportPolicy::TcpOnly, None);
    assert!(
        matches!(utp_peer, FetchOutcome::Failed { .. }),
        "{utp_peer:?}"
    );
    assert_eq!(tcp_peer, FetchOutcome::Stored);
    assert_eq!(ok, (1, 0));
}

/// Multi-piece metadata (about 200 KiB, 13 pieces of 16 KiB) from a
/// uTP-only peer through the pool.
#[test]
fn pool_fetches_multi_piece_metadata_over_utp() {
    let (utp_peer, _, ok, _, utp_failed, took) = utp_turns(TransportPolicy::UtpOnly, Some(200_000));
    eprintln!("multi-piece over uTP: {took:?}");
    assert_eq!(utp_peer, FetchOutcome::Stored);
    assert_eq!(ok.1, 1);
    assert_eq!(utp_failed, 1, "only the TCP peer's RESET");
}

/// A uTP peer that completes the handshake and then floods the fetcher
/// with acks as fast as a thread can send (and never a byte of data)
/// cannot hold the attempt past the fetch's handshake timeout (1 s here),
/// although every ack wakes the attempt and resets the connection's own
/// idle timer.
#[test]
fn utp_ack_flood_does_not_outlive_the_handshake_timeout() {
    use dht_hunter::fetch::{attempt_utp, FetchStats};
    use dht_hunter::wire::utp::{Packet, PacketType, UtpConfig, UtpConnection};
    use dht_hunter::wire::FetchConfig;
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let (n, from) = peer.recv_from(&mut buf).unwrap();
            let mut conn =
                UtpConnection::accept(&buf[..n], 100, UtpConfig::default(), Instant::now())
                    .unwrap();
            let syn = Packet::parse(&buf[..n]).unwrap();
            let state = conn.poll_transmit(Instant::now()).unwrap();
            peer.send_to(&state, from).unwrap();
            // As fast as the thread can send, for at most 6 s: a wait for
            // the next datagram then always ends at once.
            let mut sent = 0u32;
            let until = Instant::now() + Duration::from_secs(6);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < until {
                let mut out = Vec::new();
                Packet {
                    ty: PacketType::State,
                    conn_id: syn.conn_id,
                    timestamp: sent,
                    timestamp_diff: 0,
                    wnd_size: 1 << 20,
                    seq_nr: 100,
                    ack_nr: syn.seq_nr,
                    sack: None,
                    payload: &[],
                }
                .encode(&mut out);
                let _ = peer.send_to(&out, from);
                sent = sent.wrapping_add(1);
            }
            sent
        })
    };
    let (took, result) = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let sock = Rc::new(glommio::net::UdpSocket::bind("127.0.0.1:0").unwrap());
            let mux = UtpMux::new(UtpSocket::Plain(sock.clone()), 4);
            let rx = {
                let (sock, mux) = (sock.clone(), mux.clone());
                glommio::spawn_local(async move {
                    let mut buf = vec![0u8; 65536];
                    while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                        mux.handle_datagram(from, &buf[..n], Instant::now());
                    }
                })
                .detach()
            };
            let cfg = FetchConfig {
                handshake_timeout: Duration::from_secs(1),
                ..FetchConfig::default()
            };
            let started = Instant::now();
            let r = attempt_utp(
                &mux,
                peer_addr,
                Id([7; 20]),
                *b"-DH0100-floodtest000",
                cfg,
                started,
                &FetchStats::default(),
            )
            .await;
            rx.cancel();
            (started.elapsed(), r.map(|_| ()).map_err(|e| e.to_string()))
        })
        .unwrap()
        .join()
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = flooder.join().unwrap();
    assert!(result.is_err(), "a peer that sends no data served metadata");
    assert!(sent > 200, "the flood did not run ({sent} acks)");
    assert!(
        took < Duration::from_secs(3),
        "held for {took:?}: {result:?}"
    );
}

/// CPU and wall time of `n` sequential fetches of multi-piece metadata
/// (about 200 KiB) from one honest peer over one transport: TCP from a TCP
/// peer, or uTP from a uTP-only peer. Both ends run in this process (the
/// peer server's threads too), so the CPU time is both sides'. A
/// measurement, not a check: run it in release with
/// `cargo test --release --test fetch_pool fetch_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn fetch_cost_tcp_vs_utp() {
    fn cpu() -> Duration {
        // SAFETY: getrusage fills the zeroed struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        tv(u.ru_utime) + tv(u.ru_stime)
    }
    let n = 200;
    for (policy, utp_only) in [
        (TransportPolicy::TcpOnly, false),
        (TransportPolicy::UtpOnly, true),
    ] {
        let mut rng = Rng::seed_from_u64(21);
        let t = synth(0, &mut rng, Some(200_000));
        let info_len = t.info.len();
        let plan = PeerPlan {
            ip: PEER_BASE,
            kind: PeerKind::Serve(Behaviour::Honest),
            torrent: 0,
            churn: None,
            encryption: PeerEncryption::Plaintext,
            utp_only,
        };
        let infohash = t.infohash;
        let infos = Arc::new(vec![(t.infohash, Arc::new(t.info))]);
        let server = PeerServer::start(vec![plan], infos, Instant::now()).unwrap();
        let peer = SocketAddr::from((PEER_BASE, server.port));
        let (cpu0, wall0) = (cpu(), Instant::now());
        let ok = glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let sock = Rc::new(glommio::net::UdpSocket::bind("127.0.0.1:0").unwrap());
                let mux = UtpMux::new(UtpSocket::Plain(sock.clone()), 4);
                let rx = {
                    let (sock, mux) = (sock.clone(), mux.clone());
                    glommio::spawn_local(async move {
                        let mut buf = vec![0u8; 65536];
                        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                            mux.handle_datagram(from, &buf[..n], Instant::now());
                        }
                    })
                    .detach()
                };
                let tcp = shards::TcpConnector::new(shards::TcpOptions::default(), 0);
                let stats = dht_hunter::fetch::FetchStats::default();
                let mut ok = 0;
                for _ in 0..n {
                    let r = dht_hunter::fetch::attempt_peer_via(
                        &tcp,
                        Some(&mux),
                        peer,
                        infohash,
                        *b"-DH0100-costbench000",
                        dht_hunter::wire::FetchConfig::default(),
                        EncryptionPolicy::Off,
                        policy,
                        &stats,
                    )
                    .await;
                    ok += usize::from(r.is_ok());
                }
                rx.cancel();
                ok
            })
            .unwrap()
            .join()
            .unwrap();
        let (cpu1, wall1) = (cpu(), wall0.elapsed());
        server.stop();
        eprintln!(
            "{}: {ok}/{n} fetches of {info_len} B metadata, wall {:?} ({:?}/fetch), CPU {:?} ({:?}/fetch)",
            policy.as_str(),
            wall1,
            wall1 / n as u32,
            cpu1 - cpu0,
            (cpu1 - cpu0) / n as u32
        );
        assert_eq!(ok, n);
    }
}
