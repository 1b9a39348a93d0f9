//! `dht-loadgen`: load generators for DHT-Hunter (and any other DHT node).
//!
//! Loopback only unless told otherwise: every generator refuses a target
//! outside 127.0.0.0/8 and `::1` without `--i-own-this-target`, and every
//! run stops by itself.
//!
//! Exit codes: 0 success; 1 a runtime failure (sockets); 2 bad usage or a
//! refused target.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use dht_hunter::loadgen::flood::{self, FloodConfig, FloodError, Mix, MAX_SOURCES};

/// Load generators for BitTorrent DHT nodes, loopback by default.
#[derive(Debug, Parser)]
#[command(name = "dht-loadgen", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Blast valid KRPC queries at one node and report answers and latency.
    Flood(FloodArgs),
    /// Run a simulated DHT and BitTorrent swarm on loopback, with a ground truth.
    Swarm(dht_hunter::cli::swarm::SwarmArgs),
}

/// Flags of `flood`.
#[derive(Debug, Args)]
struct FloodArgs {
    /// The node under load, ADDR:PORT (loopback unless --i-own-this-target).
    #[arg(long)]
    target: SocketAddr,
    /// Source sockets, each on its own loopback address (127.1.0.1, …), so
    /// per-IP limits can be exercised (few) or avoided (many).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=MAX_SOURCES as u64))]
    sources: u64,
    /// First source address (default 127.1.0.1 for an IPv4 loopback target).
    #[arg(long)]
    source_base: Option<IpAddr>,
    /// Queries per second over all sources; 0 = as fast as possible.
    #[arg(long)]
    rate: u64,
    /// Seconds to send (1..=3600); the run always stops by itself.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration: u64,
    /// Query weights.
    #[arg(
        long,
        default_value = "ping=1,find_node=1,get_peers=1,announce_peer=0,sample_infohashes=0"
    )]
    mix: Mix,
    /// Queries in flight at most (0 = no limit). With --rate 0 this is a
    /// closed loop that measures capacity without overrunning the node.
    #[arg(long, default_value_t = 0)]
    window: usize,
    /// Milliseconds before a query counts as unanswered.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    timeout_ms: u64,
    /// Distinct infohashes for get_peers/announce_peer (0 = random each).
    #[arg(long, default_value_t = 0)]
    infohashes: u32,
    /// Send ro=1 (BEP 43): the node does not add the sources to its table.
    #[arg(long)]
    read_only: bool,
    /// Datagrams per sendmmsg/recvmmsg.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=flood::MAX_BATCH as u64))]
    batch: u64,
    /// RNG seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Allow a target outside loopback. Only for a server you operate.
    #[arg(long)]
    i_own_this_target: bool,
}

impl FloodArgs {
    fn config(&self) -> FloodConfig {
        FloodConfig {
            target: self.target,
            sources: self.sources as usize,
            source_base: self.source_base,
            rate: self.rate,
            duration: Duration::from_secs(self.duration),
            mix: self.mix,
            window: self.window,
            timeout: Duration::from_millis(self.timeout_ms),
            infohashes: self.infohashes,
            read_only: self.read_only,
            batch: self.batch as usize,
            seed: self.seed,
            allow_non_loopback: self.i_own_this_target,
            ..FloodConfig::new(self.target)
        }
    }
}

fn run_flood(args: &FloodArgs) -> anyhow::Result<ExitCode> {
    let cfg = args.config();
    let report = match flood::run(&cfg) {
        Ok(r) => r,
        Err(e @ (FloodError::NotLoopback(_) | FloodError::Invalid { .. })) => {
            eprintln!("dht-loadgen: {e}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Flood(args) => run_flood(args),
        Command::Swarm(args) => dht_hunter::cli::swarm::run(args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dht-loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}
