//! `dht-hunter demo`: a simulated swarm and a real crawler on loopback,
//! crawled end to end into SQLite and verified against the swarm's ground
//! truth.
//!
//! The swarm ([`crate::loadgen::swarm`]) runs in this process on its own
//! threads; the crawler is the same engine `dht-hunter crawl` runs, with
//! `--allow-private`, bound to 127.0.0.1 and bootstrapped from a few of the
//! swarm's nodes. Nothing leaves 127.0.0.0/8.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::config::{CrawlConfig, FileConfig};
use crate::engine::{self, EngineParts, Telemetry};
use crate::loadgen::swarm::{Swarm, SwarmConfig};
use crate::store::Store;

/// Exit code for a failed verification.
pub const EXIT_VERIFY: u8 = 3;

/// Flags of `demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Simulated DHT nodes.
    #[arg(long, default_value_t = 2000)]
    pub nodes: usize,
    /// Synthetic torrents.
    #[arg(long, default_value_t = 300)]
    pub torrents: usize,
    /// Peers per torrent.
    #[arg(long, default_value_t = 2)]
    pub peers_per_torrent: usize,
    /// Share of misbehaving peers (slow, rejecting, lying, oversize,
    /// disconnecting, silent).
    #[arg(long, default_value_t = 0.3)]
    pub bad_fraction: f64,
    /// Torrents with metadata of several MiB.
    #[arg(long, default_value_t = 1)]
    pub large_torrents: usize,
    /// Share of peers that speak uTP only (BEP 29) and reset TCP: the
    /// crawler's default transport policy must reach them too.
    #[arg(long, default_value_t = 0.1)]
    pub utp_only_fraction: f64,
    /// Crawler shards.
    #[arg(long, default_value_t = 2)]
    pub shards: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Hard deadline of one metadata fetch, seconds (default: the crawl
    /// command's).
    #[arg(long)]
    pub fetch_timeout: Option<u64>,
    /// Where the database, the ids and the ground truth go.
    #[arg(long, default_value = "dht-hunter-demo")]
    pub state_dir: PathBuf,
    /// Swarm seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Status line: auto, always, never.
    #[arg(long, default_value = "auto")]
    pub status: crate::engine::status::StatusMode,
}

/// What the demo found, checked against the ground truth.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Torrents in the swarm.
    pub torrents: usize,
    /// Torrents with at least one honest peer.
    pub fetchable: usize,
    /// Infohashes the crawler found.
    pub discovered: u64,
    /// Valid metadata stored.
    pub fetched: usize,
    /// Fetchable torrents not fetched.
    pub missed: usize,
    /// Stored metadata that does not match the ground truth.
    pub invalid_accepted: usize,
    /// Seconds from start to the end of the crawl.
    pub elapsed_s: f64,
    /// Queries the crawler answered.
    pub queries_answered: u64,
    /// Fetch failures by reason.
    pub fetch_failures: HashMap<String, u64>,
    /// Fetch connections by handshake (`plain`, `mse_rc4`,
    /// `mse_plaintext`).
    pub fetch_handshakes: HashMap<String, u64>,
    /// Fetchable torrents whose every honest peer requires encryption:
    /// stored only if the crawler spoke MSE.
    pub encrypted_only: usize,
    /// Of those, how many were fetched.
    pub encrypted_only_fetched: usize,
    /// Verified fetches by transport (`tcp`, `utp`).
    pub fetch_transports: HashMap<String, u64>,
    /// Fetchable torrents whose every honest peer speaks uTP only: stored
    /// only if the crawler spoke uTP.
    pub utp_only: usize,
    /// Of those, how many were fetched.
    pub utp_only_fetched: usize,
    /// The database.
    pub db: String,
    /// Whether the run passed.
    pub ok: bool,
}

/// Runs the demo.
pub fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let summary = run_demo(args)?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!("torrents in swarm   {}", summary.torrents);
        println!("fetchable           {}", summary.fetchable);
        println!("discovered          {}", summary.discovered);
        println!("fetched (valid)     {}", summary.fetched);
        println!("missed              {}", summary.missed);
        println!("invalid accepted    {}", summary.invalid_accepted);
        println!("queries answered    {}", summary.queries_answered);
        println!("elapsed             {:.1} s", summary.elapsed_s);
        println!(
            "encrypted only      {} fetched of {} (every honest peer requires MSE)",
            summary.encrypted_only_fetched, summary.encrypted_only
        );
        println!(
            "uTP only            {} fetched of {} (every honest peer speaks uTP only)",
            summary.utp_only_fetched, summary.utp_only
        );
        let mut h: Vec<_> = summary.fetch_handshakes.iter().collect();
        h.sort();
        for (k, n) in h {
            println!("  handshakes: {k:<14}{n}");
        }
        let mut tr: Vec<_> = summary.fetch_transports.iter().collect();
        tr.sort();
        for (k, n) in tr {
            println!("  verified over {k:<11}{n}");
        }
        let mut f: Vec<_> = summary
            .fetch_failures
            .iter()
            .filter(|(_, n)| **n > 0)
            .collect();
        f.sort();
        for (k, n) in f {
            println!("  failed: {k:<14}{n}");
        }
        println!("database            {}", summary.db);
        println!("{}", if summary.ok { "PASS" } else { "FAIL" });
        if summary.ok {
            // Where to go next: the harvest in a browser.
            println!();
            println!(
                "Browse what it harvested (then open http://{}/):",
                crate::web::DEFAULT_ADDR
            );
            println!(
                "  dht-hunter serve --state-dir {}",
                args.state_dir.display()
            );
        }
    }
    Ok(if summary.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_VERIFY)
    })
}

/// Runs the demo and returns its verified summary.
pub fn run_demo(args: &DemoArgs) -> anyhow::Result<Summary> {
    let start = Instant::now();
    // A fresh state directory each run: the summary must describe this run.
    if args.state_dir.exists() {
        std::fs::remove_dir_all(&args.state_dir)
            .with_context(|| format!("clearing {}", args.state_dir.display()))?;
    }
    std::fs::create_dir_all(&args.state_dir)?;
    let swarm_cfg = SwarmConfig {
        nodes: args.nodes,
        torrents: args.torrents,
        peers_per_torrent: args.peers_per_torrent,
        bad_fraction: args.bad_fraction,
        large_torrents: args.large_torrents,
        utp_only_fraction: args.utp_only_fraction,
        seed: args.seed,
        // Clients that search ~20 s before they announce (30 % never do)
        // and peers that come and go: what real swarms do, and what the
        // harvest must cope with.
        ..SwarmConfig::realistic()
    };
    let swarm = Swarm::start(&swarm_cfg).context("starting the swarm")?;
    swarm.write_truth(&args.state_dir.join("ground-truth.json"))?;
    log::info!(
        "swarm: {} nodes, {} torrents, {} peers",
        swarm.node_addrs.len(),
        swarm.truth.len(),
        swarm.truth.iter().map(|t| t.peers.len()).sum::<usize>()
    );
    let db_path = args.state_dir.join("dht-hunter.sqlite");
    let db = format!("sqlite:{}", db_path.display());
    let bootstrap = swarm
        .node_addrs
        .iter()
        .take(8)
        .map(|a| a.to_string())
        .collect();
    let flags = FileConfig {
        fetch_timeout: args.fetch_timeout,
        // Everything else is the crawl command's default: the demo shows
        // what a user gets, not a tuned run.
        ..FileConfig::loopback(args.shards, bootstrap, args.state_dir.clone(), db.clone())
    };
    let cfg = CrawlConfig::resolve(flags)?;
    let store = Store::open(&db).with_context(|| format!("opening {db}"))?;
    let telemetry = Arc::new(Telemetry::default());
    let eng = engine::start(&cfg, EngineParts::new(store.writer(), telemetry.clone()))?;
    if let Some(addr) = eng.udp_addrs.first() {
        swarm.set_targets(&[*addr]);
    }
    let stop = eng.shutdown_handle();
    let status = crate::engine::status::spawn(args.status, telemetry.clone(), stop.clone());
    let fetchable = swarm.truth.iter().filter(|t| t.fetchable).count();
    let deadline = start + Duration::from_secs(args.timeout);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        if telemetry.totals().fetched >= fetchable as u64 {
            // Fetches reported; give the store a moment to commit.
            break;
        }
    }
    stop.trigger();
    let joined = eng.join();
    status.stop();
    let elapsed_s = start.elapsed().as_secs_f64();
    swarm.stop();
    joined?;
    store.flush()?;
    // Verify what is in the database, not what the crawler says.
    let mut jsonl = Vec::new();
    store.export_jsonl(&mut jsonl)?;
    store.close()?;
    let (fetched, invalid, seen) = verify(&jsonl, &args.state_dir)?;
    let truth_all = load_truth(&args.state_dir)?;
    let missed = truth_all
        .iter()
        .filter(|t| t.fetchable && !seen.contains(&t.infohash))
        .count();
    // Fetchable torrents whose honest peers all serve one way, and how many
    // of them were stored.
    let served_only = |how: fn(&TruthPeerRow) -> bool| -> (usize, usize) {
        let only: Vec<&TruthRow> = truth_all
            .iter()
            .filter(|t| {
                t.fetchable
                    && t.peers.iter().any(|p| p.honest)
                    && t.peers.iter().filter(|p| p.honest).all(how)
            })
            .collect();
        let fetched = only.iter().filter(|t| seen.contains(&t.infohash)).count();
        (only.len(), fetched)
    };
    let (encrypted_only, encrypted_only_fetched) = served_only(|p| p.encryption == "required");
    let (utp_only, utp_only_fetched) = served_only(|p| p.transport == "utp");
    let t = telemetry.totals();
    let fetch_handshakes = t
        .handshakes
        .iter()
        .map(|(m, n)| (m.as_str().to_string(), *n))
        .collect();
    let fetch_transports = t
        .transport_ok
        .iter()
        .map(|(m, n)| (m.as_str().to_string(), *n))
        .collect();
    let fetch_failures = t
        .failures
        .iter()
        .map(|(k, n)| (k.as_str().to_string(), *n))
        .collect();
    Ok(Summary {
        torrents: truth_all.len(),
        fetchable,
        discovered: t.infohashes,
        fetched,
        missed,
        invalid_accepted: invalid,
        elapsed_s,
        queries_answered: t.answered,
        fetch_failures,
        fetch_handshakes,
        encrypted_only,
        encrypted_only_fetched,
        fetch_transports,
        utp_only,
        utp_only_fetched,
        db,
        ok: missed == 0 && invalid == 0,
    })
}

#[derive(Debug, serde::Deserialize)]
struct TruthRow {
    infohash: String,
    name: String,
    size: u64,
    files: Vec<(String, u64)>,
    fetchable: bool,
    #[serde(default)]
    peers: Vec<TruthPeerRow>,
}

#[derive(Debug, serde::Deserialize)]
struct TruthPeerRow {
    honest: bool,
    encryption: String,
    #[serde(default)]
    transport: String,
}

fn load_truth(dir: &std::path::Path) -> anyhow::Result<Vec<TruthRow>> {
    let text = std::fs::read(dir.join("ground-truth.json"))?;
    Ok(serde_json::from_slice(&text)?)
}

#[derive(Debug, serde::Deserialize)]
struct ExportRow {
    infohash: String,
    name: String,
    size: u64,
    files: Vec<ExportFile>,
}

#[derive(Debug, serde::Deserialize)]
struct ExportFile {
    path: String,
    size: u64,
}

/// Compares every exported torrent with the ground truth: returns
/// (valid, invalid, infohashes seen).
fn verify(
    jsonl: &[u8],
    dir: &std::path::Path,
) -> anyhow::Result<(usize, usize, std::collections::HashSet<String>)> {
    let truth = load_truth(dir)?;
    let by_hash: HashMap<&str, &TruthRow> =
        truth.iter().map(|t| (t.infohash.as_str(), t)).collect();
    let mut valid = 0;
    let mut invalid = 0;
    let mut seen = std::collections::HashSet::new();
    for line in jsonl.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let row: ExportRow = serde_json::from_str(&line)?;
        let ok = by_hash.get(row.infohash.as_str()).is_some_and(|t| {
            t.name == row.name
                && t.size == row.size
                && t.files.len() == row.files.len()
                && t.files
                    .iter()
                    .zip(&row.files)
                    .all(|((p, s), f)| *p == f.path && *s == f.size)
        });
        if ok {
            valid += 1;
            seen.insert(row.infohash);
        } else {
            log::error!(
                "stored torrent {} does not match the ground truth",
                row.infohash
            );
            invalid += 1;
        }
    }
    Ok((valid, invalid, seen))
}
