//! Back-pressure from a failing store reaches the fetch pool: while the
//! database cannot be written, each fetched torrent waits in its job, which
//! keeps its fetch slot, so the pool stops starting fetches instead of
//! piling torrents up in memory or dropping them; once the database can be
//! written again every one is stored.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dht_hunter::dht::harvest::FetchOutcome;
use dht_hunter::fetch::{FetchJob, FetchPool, OutcomeSink, PoolConfig};
use dht_hunter::loadgen::swarm::{Swarm, SwarmConfig};
use dht_hunter::store::{Source, Store, StoreOptions};

const CONCURRENCY: usize = 8;
const QUEUE_MAX: usize = 4;
const BATCH_MAX: usize = 2;

#[test]
fn a_stalled_store_makes_fetches_wait_and_loses_nothing() {
    let swarm = Swarm::start(&SwarmConfig::honest(8, 40, 0, 5)).unwrap();
    let jobs: Vec<FetchJob> = swarm
        .truth
        .iter()
        .map(|t| FetchJob {
            infohash: t.infohash.parse().unwrap(),
            source: Source::Sample,
            discovered_at: SystemTime::now(),
            peers: t.peers.iter().map(|p| p.addr.parse().unwrap()).collect(),
        })
        .collect();
    let n = jobs.len() as u64;

    let dir = std::env::temp_dir().join(format!("dh-backpressure-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("db.sqlite");
    let opts = StoreOptions {
        queue_max: QUEUE_MAX,
        batch_max: BATCH_MAX,
        sqlite_busy_timeout: Duration::from_millis(20),
        retry_min: Duration::from_millis(10),
        retry_max: Duration::from_millis(50),
        ..StoreOptions::default()
    };
    let store = Store::open_with(&format!("sqlite:{}", path.display()), opts).unwrap();
    // Another process holds the database's write lock: the writer stalls.
    let lock = rusqlite::Connection::open(&path).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();

    let writer = store.writer();
    let stalled = Arc::new(AtomicBool::new(false));
    let released = Arc::new(AtomicBool::new(false));
    let (stalled_in, released_in) = (stalled.clone(), released.clone());
    let shard = shards::ShardsBuilder::new()
        .shards(1)
        .pin(false)
        .spawn(move |ctx: shards::ShardContext<()>| {
            let jobs = jobs.clone();
            let writer = writer.clone();
            let (stalled, released) = (stalled_in.clone(), released_in.clone());
            async move {
                let pool = FetchPool::new(PoolConfig {
                    concurrency: CONCURRENCY,
                    max_queue: 64,
                    ..PoolConfig::default()
                });
                let stats = pool.stats();
                for j in jobs {
                    assert!(pool.submit(j).is_ok());
                }
                let tcp = Rc::new(ctx.tcp().clone());
                let (outcomes, sink) = collect();
                let runner = glommio::spawn_local(pool.clone().run(
                    tcp,
                    writer.clone(),
                    sink,
                    ctx.shutdown(),
                ));
                let give_up = Instant::now() + Duration::from_secs(30);
                // Until torrents wait for the store, then a while longer:
                // local peers answer in milliseconds, so anything the pool
                // would still start, it starts in this time.
                while writer.faults().producer_waits == 0 {
                    assert!(Instant::now() < give_up, "no fetch ever waited");
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                }
                glommio::timer::sleep(Duration::from_millis(500)).await;
                let fetched = stats.fetched.get();
                let started = n - pool.queue_len() as u64;
                let queued = writer.queue_len();
                stalled.store(true, Ordering::SeqCst);
                while !released.load(Ordering::SeqCst) {
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                }
                while stats.fetched.get() + stats.jobs_failed.get() < n {
                    assert!(Instant::now() < give_up, "the pool did not resume");
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                }
                ctx.shutdown_handle().trigger();
                runner.await;
                let all_stored = outcomes
                    .borrow()
                    .iter()
                    .all(|o| matches!(o, FetchOutcome::Stored));
                Ok::<_, std::io::Error>((
                    fetched,
                    started,
                    queued,
                    stats.fetched.get(),
                    stats.jobs_failed.get(),
                    all_stored,
                ))
            }
        })
        .unwrap();

    let give_up = Instant::now() + Duration::from_secs(40);
    while !stalled.load(Ordering::SeqCst) {
        assert!(Instant::now() < give_up, "the shard never saw the stall");
        std::thread::sleep(Duration::from_millis(10));
    }
    let f = store.faults();
    assert!(f.stalled && f.retries >= 1, "{f:?}");
    assert_eq!(store.stats().unwrap().torrents, 0);
    drop(lock);
    released.store(true, Ordering::SeqCst);
    let (fetched_stalled, started_stalled, queued_stalled, fetched, failed, all_stored) =
        shard.join().unwrap()[0];
    swarm.stop();

    // While stalled: what the pool handed over is what the queue and the
    // writer's held batch take, no more; the queue is full, not growing;
    // and the pool started no fetch beyond its slots (plus the one job its
    // dispatcher holds while it waits for a slot).
    assert!(
        fetched_stalled <= (QUEUE_MAX + BATCH_MAX) as u64,
        "{fetched_stalled} torrents handed over to a stalled store"
    );
    assert_eq!(queued_stalled, QUEUE_MAX);
    assert!(
        started_stalled <= CONCURRENCY as u64 + fetched_stalled + 1,
        "{started_stalled} fetches started, {fetched_stalled} finished"
    );
    assert!(started_stalled < n);
    // Afterwards: every torrent fetched and stored, none dropped.
    assert_eq!((fetched, failed, all_stored), (n, 0, true));
    store.flush().unwrap();
    assert_eq!(store.stats().unwrap().torrents, n);
    assert_eq!(store.faults().rows_dropped, 0);
    store.close().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

type Outcomes = Rc<RefCell<Vec<FetchOutcome>>>;

fn collect() -> (Outcomes, OutcomeSink) {
    let out: Outcomes = Rc::new(RefCell::new(Vec::new()));
    let o = out.clone();
    (out, Rc::new(move |_, x| o.borrow_mut().push(x)))
}
