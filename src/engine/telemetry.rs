//! Counters shared between the shards and the status line / summary.
//!
//! Each shard copies its own counters here a few times a second (relaxed
//! atomics, one writer per slot), so reading them never touches a shard's
//! state.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;

use crate::dht::NodeStats;
use crate::fetch::{FailureKind, FetchStats, Handshake, Transport};
use crate::filter::Rejection;

/// One shard's published counters.
#[derive(Debug, Default)]
pub struct ShardTelemetry {
    /// Datagrams received.
    pub packets_in: AtomicU64,
    /// Datagrams sent.
    pub packets_out: AtomicU64,
    /// Queries answered (all methods).
    pub answered: AtomicU64,
    /// New infohashes from samples.
    pub ih_sample: AtomicU64,
    /// New infohashes from get_peers.
    pub ih_get_peers: AtomicU64,
    /// New infohashes from announces.
    pub ih_announce: AtomicU64,
    /// Infohashes handed to the fetcher.
    pub emitted: AtomicU64,
    /// BEP 51 samples received (every sample of every reply).
    pub samples_received: AtomicU64,
    /// announce_peer queries accepted (token valid).
    pub announces_accepted: AtomicU64,
    /// Valid BEP 51 replies received.
    pub sample_replies: AtomicU64,
    /// Torrents fetched and stored.
    pub fetched: AtomicU64,
    /// Jobs that ended without metadata.
    pub fetch_failed: AtomicU64,
    /// Fetch queue length.
    pub queue: AtomicU64,
    /// Known nodes.
    pub nodes: AtomicU64,
    /// Remembered infohashes.
    pub dedup_len: AtomicU64,
    /// Bytes per remembered infohash, as f64 bits.
    pub bytes_per_infohash: AtomicU64,
    /// Fetch failures by kind (indexed like [`FailureKind::ALL`]).
    pub failures: [AtomicU64; FailureKind::ALL.len()],
    /// Infohashes the harvester gave up on.
    pub given_up: AtomicU64,
    /// Infohashes in progress (searching, fetching or waiting).
    pub in_progress: AtomicU64,
    /// Sightings of infohashes already stored (not fetched again).
    pub already_stored: AtomicU64,
    /// Fetched torrents the content filter refused.
    pub filtered: AtomicU64,
    /// Stored torrents with a BEP 33 estimate.
    pub scraped: AtomicU64,
    /// 1 while the database is at or over `--max-db-size`.
    pub db_full: AtomicU64,
    /// Connections by handshake mode (indexed like [`Handshake::ALL`]).
    pub handshakes: [AtomicU64; Handshake::ALL.len()],
    /// Verified fetches by transport (indexed like [`Transport::ALL`]).
    pub transport_ok: [AtomicU64; Transport::ALL.len()],
}

impl ShardTelemetry {
    /// Copies a shard's counters.
    pub fn update(&self, n: &NodeStats, f: &FetchStats, queue: usize) {
        self.packets_in.store(n.packets_in, Relaxed);
        self.packets_out.store(n.packets_out, Relaxed);
        let a = &n.answered;
        self.answered.store(
            a.ping + a.find_node + a.get_peers + a.announce_peer + a.sample_infohashes + a.other,
            Relaxed,
        );
        for (i, m) in Handshake::ALL.iter().enumerate() {
            self.handshakes[i].store(f.handshakes(*m), Relaxed);
        }
        for (i, t) in Transport::ALL.iter().enumerate() {
            self.transport_ok[i].store(f.transport_ok(*t), Relaxed);
        }
        self.ih_sample.store(n.infohashes.sample, Relaxed);
        self.ih_get_peers.store(n.infohashes.get_peers, Relaxed);
        self.ih_announce.store(n.infohashes.announce, Relaxed);
        self.emitted.store(n.emitted, Relaxed);
        self.samples_received.store(n.samples_received, Relaxed);
        self.announces_accepted
            .store(n.answered.announce_peer, Relaxed);
        self.sample_replies.store(n.sample_replies, Relaxed);
        self.fetched.store(f.fetched.get(), Relaxed);
        self.fetch_failed.store(f.jobs_failed.get(), Relaxed);
        self.queue.store(queue as u64, Relaxed);
        self.nodes.store(n.nodes_known as u64, Relaxed);
        self.dedup_len.store(n.dedup_len as u64, Relaxed);
        self.bytes_per_infohash
            .store(n.bytes_per_infohash.to_bits(), Relaxed);
        for (i, k) in FailureKind::ALL.iter().enumerate() {
            self.failures[i].store(f.failures(*k), Relaxed);
        }
        self.given_up.store(n.harvest.given_up, Relaxed);
        self.in_progress
            .store(n.harvest.in_progress as u64, Relaxed);
        self.already_stored.store(n.harvest.already_stored, Relaxed);
        self.filtered.store(f.filtered_total(), Relaxed);
        self.scraped.store(n.scrapes.estimated, Relaxed);
    }
}

/// All shards' counters.
#[derive(Debug, Default)]
pub struct Telemetry {
    shards: OnceLock<Box<[ShardTelemetry]>>,
}

/// A sum over shards.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    /// Datagrams received.
    pub packets_in: u64,
    /// Datagrams sent.
    pub packets_out: u64,
    /// Queries answered.
    pub answered: u64,
    /// New infohashes (all sources).
    pub infohashes: u64,
    /// New infohashes from announces.
    pub announced: u64,
    /// BEP 51 samples received.
    pub samples_received: u64,
    /// announce_peer queries accepted.
    pub announces_accepted: u64,
    /// Valid BEP 51 replies received.
    pub sample_replies: u64,
    /// Torrents fetched.
    pub fetched: u64,
    /// Jobs failed.
    pub fetch_failed: u64,
    /// Fetch queue length.
    pub queue: u64,
    /// Known nodes.
    pub nodes: u64,
    /// Failures by kind.
    pub failures: Vec<(FailureKind, u64)>,
    /// Infohashes per shard (for the imbalance figure).
    pub per_shard_infohashes: Vec<u64>,
    /// Infohashes given up.
    pub given_up: u64,
    /// Infohashes in progress.
    pub in_progress: u64,
    /// Sightings of infohashes already stored.
    pub already_stored: u64,
    /// Fetched torrents the content filter refused.
    pub filtered: u64,
    /// Stored torrents with a BEP 33 estimate.
    pub scraped: u64,
    /// The database is at or over `--max-db-size`.
    pub db_full: bool,
    /// Connections by handshake mode.
    pub handshakes: Vec<(Handshake, u64)>,
    /// Verified fetches by transport.
    pub transport_ok: Vec<(Transport, u64)>,
}

impl Telemetry {
    /// Allocates `n` slots (once; later calls keep the first size).
    pub fn ensure_shards(&self, n: usize) {
        let _ = self
            .shards
            .get_or_init(|| (0..n).map(|_| ShardTelemetry::default()).collect());
    }

    /// Shard `i`'s slot.
    pub fn shard(&self, i: usize) -> Option<&ShardTelemetry> {
        self.shards.get().and_then(|s| s.get(i))
    }

    /// Sums every shard.
    pub fn totals(&self) -> Totals {
        let mut t = Totals {
            failures: FailureKind::ALL.iter().map(|k| (*k, 0)).collect(),
            handshakes: Handshake::ALL.iter().map(|m| (*m, 0)).collect(),
            transport_ok: Transport::ALL.iter().map(|m| (*m, 0)).collect(),
            ..Totals::default()
        };
        for s in self.shards.get().map(|b| &b[..]).unwrap_or(&[]) {
            t.packets_in += s.packets_in.load(Relaxed);
            t.packets_out += s.packets_out.load(Relaxed);
            t.answered += s.answered.load(Relaxed);
            let infohash = s.ih_sample.load(Relaxed)
                + s.ih_get_peers.load(Relaxed)
                + s.ih_announce.load(Relaxed);
            t.infohashes += infohash;
            t.announced += s.ih_announce.load(Relaxed);
            t.samples_received += s.samples_received.load(Relaxed);
            t.announces_accepted += s.announces_accepted.load(Relaxed);
            t.sample_replies += s.sample_replies.load(Relaxed);
            t.per_shard_infohashes.push(infohash);
            t.fetched += s.fetched.load(Relaxed);
            t.fetch_failed += s.fetch_failed.load(Relaxed);
            t.queue += s.queue.load(Relaxed);
            t.nodes += s.nodes.load(Relaxed);
            t.given_up += s.given_up.load(Relaxed);
            t.in_progress += s.in_progress.load(Relaxed);
            t.already_stored += s.already_stored.load(Relaxed);
            t.filtered += s.filtered.load(Relaxed);
            t.scraped += s.scraped.load(Relaxed);
            t.db_full |= s.db_full.load(Relaxed) != 0;
            for (i, f) in t.failures.iter_mut().enumerate() {
                f.1 += s.failures[i].load(Relaxed);
            }
            for (i, h) in t.handshakes.iter_mut().enumerate() {
                h.1 += s.handshakes[i].load(Relaxed);
            }
            for (i, h) in t.transport_ok.iter_mut().enumerate() {
                h.1 += s.transport_ok[i].load(Relaxed);
            }
        }
        t
    }
}

/// Publishes one shard's counters through the `metrics` crate, labelled
/// with the shard, for `--metrics` (Prometheus). Counters are cumulative,
/// so they are set absolutely from the shard's own totals.
pub fn export_metrics(shard: usize, n: &NodeStats, f: &FetchStats, queue: usize) {
    use metrics::{counter, gauge};
    let s = shard.to_string();
    counter!("dht_hunter_packets_in_total", "shard" => s.clone()).absolute(n.packets_in);
    counter!("dht_hunter_packets_out_total", "shard" => s.clone()).absolute(n.packets_out);
    counter!("dht_hunter_bytes_in_total", "shard" => s.clone()).absolute(n.bytes_in);
    counter!("dht_hunter_bytes_out_total", "shard" => s.clone()).absolute(n.bytes_out);
    let a = &n.answered;
    for (m, v) in [
        ("ping", a.ping),
        ("find_node", a.find_node),
        ("get_peers", a.get_peers),
        ("announce_peer", a.announce_peer),
        ("sample_infohashes", a.sample_infohashes),
        ("other", a.other),
    ] {
        counter!("dht_hunter_queries_answered_total", "shard" => s.clone(), "method" => m)
            .absolute(v);
    }
    for (src, v) in [
        ("sample", n.infohashes.sample),
        ("get_peers", n.infohashes.get_peers),
        ("announce", n.infohashes.announce),
    ] {
        counter!("dht_hunter_infohashes_discovered_total", "shard" => s.clone(), "source" => src)
            .absolute(v);
    }
    let d = &n.dropped;
    for (why, v) in [
        ("budget", d.budget),
        ("per_ip_out", d.per_ip_out),
        ("per_ip_in", d.per_ip_in),
        ("garbage", d.garbage),
        ("martian", d.martian),
        ("unknown_tid", d.unknown_tid),
        ("per_ip_replies", d.per_ip_replies),
        ("wrong_endpoint", d.wrong_endpoint),
        ("inflight_full", d.inflight_full),
        ("harvest_full", d.harvest_full),
    ] {
        counter!("dht_hunter_dropped_total", "shard" => s.clone(), "reason" => why).absolute(v);
    }
    // The audit: discovered = stored + given_up + evicted + filtered + in progress
    // (waiting, fetching, or searching); shed ones were never taken in.
    let h = &n.harvest;
    for (what, v) in [
        ("discovered", h.discovered),
        ("stored", h.stored),
        ("given_up", h.given_up),
        ("shed", h.shed),
        ("evicted", h.evicted),
        ("fetches", h.fetches),
        ("fetch_failures", h.fetch_failures),
        ("searches", h.searches),
        ("searches_empty", h.searches_empty),
        ("woken_by_peer", h.woken_by_peer),
        ("already_stored", h.already_stored),
        ("filtered", h.filtered),
    ] {
        counter!("dht_hunter_harvest_total", "shard" => s.clone(), "event" => what).absolute(v);
    }
    for (phase, v) in [
        ("all", h.in_progress),
        ("waiting", h.waiting),
        ("fetching", h.fetching),
    ] {
        gauge!("dht_hunter_harvest_in_progress", "shard" => s.clone(), "phase" => phase)
            .set(v as f64);
    }
    counter!("dht_hunter_queries_deferred_total", "shard" => s.clone(), "reason" => "per_ip")
        .absolute(n.deferred.per_ip);
    counter!("dht_hunter_queries_deferred_total", "shard" => s.clone(), "reason" => "budget")
        .absolute(n.deferred.budget);
    let q = &n.queries_sent;
    for (m, v) in [
        ("ping", q.ping),
        ("find_node", q.find_node),
        ("get_peers", q.get_peers),
        ("sample_infohashes", q.sample_infohashes),
    ] {
        counter!("dht_hunter_queries_sent_total", "shard" => s.clone(), "method" => m).absolute(v);
    }
    counter!("dht_hunter_query_timeouts_total", "shard" => s.clone()).absolute(n.timeouts);
    counter!("dht_hunter_queries_forwarded_total", "shard" => s.clone(), "direction" => "out")
        .absolute(n.queries_forwarded_out);
    counter!("dht_hunter_queries_forwarded_total", "shard" => s.clone(), "direction" => "in")
        .absolute(n.queries_forwarded_in);
    counter!("dht_hunter_fetch_deferred_total", "shard" => s.clone()).absolute(f.deferred.get());
    counter!("dht_hunter_fetch_slot_seconds_total", "shard" => s.clone())
        .absolute(f.slot_micros.get() / 1_000_000);
    counter!("dht_hunter_fetch_jobs_over_budget_total", "shard" => s.clone())
        .absolute(f.over_budget.get());
    counter!("dht_hunter_fetches_total", "shard" => s.clone(), "outcome" => "ok")
        .absolute(f.fetched.get());
    for k in FailureKind::ALL {
        counter!("dht_hunter_fetch_attempt_failures_total", "shard" => s.clone(), "reason" => k.as_str())
            .absolute(f.failures(k));
    }
    for why in Rejection::ALL {
        counter!("dht_hunter_filtered_total", "shard" => s.clone(), "reason" => why.as_str())
            .absolute(f.filtered(why));
    }
    counter!("dht_hunter_fetch_db_full_waits_total", "shard" => s.clone())
        .absolute(f.db_full_waits.get());
    let sc = &n.scrapes;
    for (what, v) in [
        ("started", sc.started),
        ("skipped", sc.skipped),
        ("answered", sc.answered),
        ("estimated", sc.estimated),
        ("saturated", sc.saturated),
    ] {
        counter!("dht_hunter_scrapes_total", "shard" => s.clone(), "event" => what).absolute(v);
    }
    gauge!("dht_hunter_fetch_queue", "shard" => s.clone()).set(queue as f64);
    gauge!("dht_hunter_fetch_running", "shard" => s.clone()).set(f.running.get() as f64);
    gauge!("dht_hunter_nodes_known", "shard" => s.clone()).set(n.nodes_known as f64);
    counter!("dht_hunter_table_turnovers_total", "shard" => s.clone()).absolute(n.table_turnovers);
    gauge!("dht_hunter_infohashes_remembered", "shard" => s.clone()).set(n.dedup_len as f64);
    gauge!("dht_hunter_bytes_per_infohash", "shard" => s).set(n.bytes_per_infohash);
}
