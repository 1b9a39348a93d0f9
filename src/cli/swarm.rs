//! `dht-loadgen swarm`: runs a simulated swarm on loopback for a bounded
//! time (see [`crate::loadgen::swarm`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::loadgen::swarm::{Swarm, SwarmConfig};

/// Flags of `dht-loadgen swarm`.
#[derive(Debug, Clone, clap::Args)]
pub struct SwarmArgs {
    /// Simulated DHT nodes (each on its own 127.64.0.0/10 address).
    #[arg(long, default_value_t = 10_000)]
    pub nodes: usize,
    /// Of those, full nodes (the crawler's own state machine, about 27 KiB
    /// each); the rest are light, stateless answerers (about 70 bytes).
    #[arg(long, default_value_t = crate::loadgen::swarm::DEFAULT_FULL_NODES)]
    pub full_nodes: usize,
    /// Synthetic torrents.
    #[arg(long, default_value_t = 10_000)]
    pub torrents: usize,
    /// Peers per torrent (each on its own 127.96.0.0/11 address).
    #[arg(long, default_value_t = 2)]
    pub peers_per_torrent: usize,
    /// Share of misbehaving peers.
    #[arg(long, default_value_t = 0.3)]
    pub bad_fraction: f64,
    /// Share of torrents with no honest peer.
    #[arg(long, default_value_t = 0.05)]
    pub unfetchable_fraction: f64,
    /// Torrents with metadata of several MiB.
    #[arg(long, default_value_t = 1)]
    pub large_torrents: usize,
    /// UDP port of every simulated node (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub dht_port: u16,
    /// Send client get_peers/announce_peer traffic to this harvester
    /// (loopback only). Repeatable: every target gets the same clients, in
    /// the same order, so harvesters can be compared on one swarm.
    #[arg(long)]
    pub target: Vec<SocketAddr>,
    /// Clients per second: each searches one torrent at every target.
    #[arg(long, default_value_t = 50)]
    pub client_rate: u32,
    /// Seconds from a client's search to its announce (it re-fetches a
    /// token first); 0: announce on the search's reply.
    #[arg(long, default_value_t = 20.0)]
    pub announce_delay: f64,
    /// Spread of the announce delay: uniform in delay × (1 ± jitter).
    #[arg(long, default_value_t = 0.5)]
    pub announce_jitter: f64,
    /// Share of clients that search and never announce.
    #[arg(long, default_value_t = 0.3)]
    pub search_only_fraction: f64,
    /// Share of peers (honest ones too) that go offline periodically.
    #[arg(long, default_value_t = 0.2)]
    pub churn_fraction: f64,
    /// Share of peers that speak uTP only (BEP 29 on the peers' port over
    /// UDP) and reset TCP connections.
    #[arg(long, default_value_t = 0.0)]
    pub utp_only_fraction: f64,
    /// Seconds of one online-plus-offline cycle of a churning peer.
    #[arg(long, default_value_t = 60.0)]
    pub churn_period: f64,
    /// Seconds offline in each cycle.
    #[arg(long, default_value_t = 30.0)]
    pub churn_away: f64,
    /// Start client traffic this many seconds after the swarm is up (time
    /// for the harvesters under test to start), counted in --duration.
    #[arg(long, default_value_t = 0)]
    pub clients_after: u64,
    /// Seed: the same seed builds the same swarm.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the ground truth (every torrent, its infohash, its peers and
    /// which are honest) to this file.
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// Run for this many seconds (at most a day), then stop.
    #[arg(long)]
    pub duration: u64,
    /// Every this many seconds, print a `swarm-stats` JSON line on stderr:
    /// datagrams, sample_infohashes received, distinct nodes sampled
    /// (0: only the counters at the end).
    #[arg(long, default_value_t = 0)]
    pub stats_every: u64,
}

/// Runs the swarm until its duration ends.
pub fn run(a: &SwarmArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.duration > 0 && a.duration <= 86_400,
        "--duration must be 1..=86400 seconds"
    );
    for t in &a.target {
        anyhow::ensure!(
            t.ip().is_loopback(),
            "the swarm only talks to loopback; {t} is not"
        );
    }
    let secs = |name: &str, v: f64| {
        anyhow::ensure!(
            v.is_finite() && (0.0..=86_400.0).contains(&v),
            "--{name} must be 0..=86400 seconds"
        );
        Ok(Duration::from_secs_f64(v))
    };
    let share = |name: &str, v: f64| {
        anyhow::ensure!((0.0..=1.0).contains(&v), "--{name} must be 0.0..=1.0");
        Ok(v)
    };
    let start = Instant::now();
    let swarm = Swarm::start(&SwarmConfig {
        nodes: a.nodes,
        full_nodes: a.full_nodes,
        torrents: a.torrents,
        peers_per_torrent: a.peers_per_torrent,
        bad_fraction: a.bad_fraction,
        unfetchable_fraction: a.unfetchable_fraction,
        large_torrents: a.large_torrents,
        dht_port: a.dht_port,
        client_rate: a.client_rate,
        seed: a.seed,
        announce_delay: secs("announce-delay", a.announce_delay)?,
        announce_jitter: share("announce-jitter", a.announce_jitter)?,
        search_only_fraction: share("search-only-fraction", a.search_only_fraction)?,
        churn_fraction: share("churn-fraction", a.churn_fraction)?,
        utp_only_fraction: share("utp-only-fraction", a.utp_only_fraction)?,
        churn_period: secs("churn-period", a.churn_period)?,
        churn_away: secs("churn-away", a.churn_away)?,
        ..SwarmConfig::realistic()
    })
    .context("starting the swarm")?;
    if let Some(p) = &a.truth {
        swarm
            .write_truth(p)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    let boot: Vec<String> = swarm
        .node_addrs
        .iter()
        .take(16)
        .map(|x| x.to_string())
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "nodes": swarm.node_addrs.len(),
            "full_nodes": a.full_nodes.min(a.nodes),
            "torrents": swarm.truth.len(),
            "fetchable": swarm.truth.iter().filter(|t| t.fetchable).count(),
            "bootstrap": boot,
            "churning_peers": swarm
                .truth
                .iter()
                .flat_map(|t| &t.peers)
                .filter(|p| p.churn.is_some())
                .count(),
            "startup_s": start.elapsed().as_secs_f64(),
        })
    );
    // stdout carries that one line only (scripts parse it), so flush it
    // before the run and print the counters on stderr.
    std::io::Write::flush(&mut std::io::stdout())?;
    let up = Instant::now();
    let clients_at = up + Duration::from_secs(a.clients_after.min(a.duration));
    let end = up + Duration::from_secs(a.duration);
    let mut targets_set = false;
    let every = Duration::from_secs(a.stats_every);
    let mut next_stats = up + every;
    let c = &swarm.counters;
    use std::sync::atomic::Ordering::Relaxed;
    while Instant::now() < end {
        if !targets_set && Instant::now() >= clients_at {
            swarm.set_targets(&a.target);
            targets_set = true;
        }
        if a.stats_every > 0 && Instant::now() >= next_stats {
            next_stats += every;
            eprintln!(
                "swarm-stats {}",
                serde_json::json!({
                    "t_s": up.elapsed().as_secs(),
                    "dht_in": c.dht_in.load(Relaxed),
                    "dht_out": c.dht_out.load(Relaxed),
                    "sample_queries": c.sample_queries.load(Relaxed),
                    "nodes_sampled": c.nodes_sampled.load(Relaxed),
                })
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "swarm: {} datagrams in, {} out; {} clients searched ({} search-only), \
         {} delayed announces due ({} dropped); {} get_peers and {} announces sent over all targets",
        c.dht_in.load(Relaxed),
        c.dht_out.load(Relaxed),
        c.client_searches.load(Relaxed),
        c.client_search_only.load(Relaxed),
        c.client_announce_due.load(Relaxed),
        c.client_announce_dropped.load(Relaxed),
        c.client_queries.load(Relaxed),
        c.client_announces.load(Relaxed)
    );
    let per_target = swarm.target_stats();
    for t in &per_target {
        eprintln!(
            "swarm: target {}: {} get_peers, {} tokens, {} announces, {} acked, {} errors",
            t.target, t.get_peers, t.tokens, t.announces, t.announce_acks, t.errors
        );
    }
    eprintln!(
        "swarm-counters {}",
        serde_json::json!({
            "dht_in": c.dht_in.load(Relaxed),
            "dht_out": c.dht_out.load(Relaxed),
            "client_searches": c.client_searches.load(Relaxed),
            "client_search_only": c.client_search_only.load(Relaxed),
            "client_announce_due": c.client_announce_due.load(Relaxed),
            "client_announce_dropped": c.client_announce_dropped.load(Relaxed),
            "client_queries": c.client_queries.load(Relaxed),
            "client_announces": c.client_announces.load(Relaxed),
            "sample_queries": c.sample_queries.load(Relaxed),
            "nodes_sampled": c.nodes_sampled.load(Relaxed),
            "per_target": per_target,
        })
    );
    swarm.stop();
    Ok(())
}
