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
    /// Send client get_peers/announce_peer traffic to this crawler (loopback only).
    #[arg(long)]
    pub target: Option<SocketAddr>,
    /// Client queries per second toward the target.
    #[arg(long, default_value_t = 50)]
    pub client_rate: u32,
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
}

/// Runs the swarm until its duration ends.
pub fn run(a: &SwarmArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.duration > 0 && a.duration <= 86_400,
        "--duration must be 1..=86400 seconds"
    );
    if let Some(t) = a.target {
        anyhow::ensure!(
            t.ip().is_loopback(),
            "the swarm only talks to loopback; {t} is not"
        );
    }
    let start = Instant::now();
    let swarm = Swarm::start(&SwarmConfig {
        nodes: a.nodes,
        torrents: a.torrents,
        peers_per_torrent: a.peers_per_torrent,
        bad_fraction: a.bad_fraction,
        unfetchable_fraction: a.unfetchable_fraction,
        large_torrents: a.large_torrents,
        dht_port: a.dht_port,
        client_rate: a.client_rate,
        seed: a.seed,
        ..SwarmConfig::default()
    })
    .context("starting the swarm")?;
    if let Some(p) = &a.truth {
        swarm
            .write_truth(p)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(t) = a.target {
        swarm.set_target(t);
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
            "torrents": swarm.truth.len(),
            "fetchable": swarm.truth.iter().filter(|t| t.fetchable).count(),
            "bootstrap": boot,
            "startup_s": start.elapsed().as_secs_f64(),
        })
    );
    let end = Instant::now() + Duration::from_secs(a.duration);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
    }
    let c = &swarm.counters;
    use std::sync::atomic::Ordering::Relaxed;
    eprintln!(
        "swarm: {} datagrams in, {} out, {} client queries, {} announces",
        c.dht_in.load(Relaxed),
        c.dht_out.load(Relaxed),
        c.client_queries.load(Relaxed),
        c.client_announces.load(Relaxed)
    );
    swarm.stop();
    Ok(())
}
