//! The load generator's honest peers in a child process (this bench binary
//! run again), so that only the fetcher's heap and CPU are in the parent.
//! Shared by the benches that fetch metadata (`#[path]`-included).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::SystemTime;

use dht_hunter::fetch::FetchJob;
use dht_hunter::loadgen::swarm::{Swarm, SwarmConfig};
use dht_hunter::store::Source;

const CHILD: &str = "DH_BENCH_PEER_SWARM";

/// One torrent of the child's ground truth.
#[derive(serde::Deserialize)]
#[allow(dead_code)] // `info_len` is read by the fetch bench only.
pub struct Truth {
    /// Hex infohash.
    pub infohash: String,
    /// Size of the info dictionary.
    pub info_len: usize,
    peers: Vec<TruthPeer>,
}

#[derive(serde::Deserialize)]
struct TruthPeer {
    addr: String,
}

/// In the child: runs `torrents` torrents with one honest peer each, prints
/// the ground truth, serves until stdin closes, and returns true. In the
/// parent: returns false at once.
pub fn serve_if_child(torrents: usize) -> bool {
    if std::env::var_os(CHILD).is_none() {
        return false;
    }
    let swarm = Swarm::start(&SwarmConfig {
        nodes: 16,
        torrents,
        peers_per_torrent: 1,
        bad_fraction: 0.0,
        unfetchable_fraction: 0.0,
        large_torrents: 0,
        client_rate: 0,
        // Every peer speaks one wire (`DH_BENCH_WIRE`): plaintext TCP, MSE
        // with RC4 required, or uTP only; the benches compare the wires,
        // not a mix.
        encryption_required_fraction: if bench_wire() == Wire::Mse { 1.0 } else { 0.0 },
        encryption_enabled_fraction: 0.0,
        utp_only_fraction: if bench_wire() == Wire::Utp { 1.0 } else { 0.0 },
        ..SwarmConfig::default()
    })
    .unwrap();
    println!("{}", serde_json::to_string(&swarm.truth).unwrap());
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    swarm.stop();
    true
}

/// The wire a run measures, on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)] // Read by the fetch bench only.
pub enum Wire {
    /// Plaintext BT over TCP.
    Plain,
    /// MSE/PE with RC4 over TCP: the peers require it, the fetcher speaks
    /// only it.
    Mse,
    /// Plaintext BT over uTP: the peers accept no TCP, the fetcher opens
    /// only uTP, on its shard's UDP socket.
    Utp,
}

impl Wire {
    /// How the benches print it.
    #[allow(dead_code)]
    pub fn describe(self) -> &'static str {
        match self {
            Wire::Plain => "plaintext over TCP",
            Wire::Mse => "MSE/PE, RC4 (peers require it), over TCP",
            Wire::Utp => "plaintext over uTP (peers accept no TCP)",
        }
    }
}

/// The wire this run measures: `DH_BENCH_WIRE=plain|mse|utp` (default
/// plain), read by the parent and the child alike. Anything else is a
/// usage error, not a silent plaintext run.
pub fn bench_wire() -> Wire {
    match std::env::var("DH_BENCH_WIRE").as_deref() {
        Err(_) | Ok("plain") => Wire::Plain,
        Ok("mse") => Wire::Mse,
        Ok("utp") => Wire::Utp,
        Ok(other) => {
            eprintln!("DH_BENCH_WIRE={other}: expected plain, mse or utp");
            std::process::exit(2)
        }
    }
}

/// The running child; dropping it stops the peers.
pub struct PeerSwarm {
    child: Child,
    /// Every torrent it serves.
    pub truth: Vec<Truth>,
}

impl PeerSwarm {
    /// Starts the child with `args` (which must make it call
    /// [`serve_if_child`] with the torrent count) and reads its truth.
    pub fn spawn(args: &[String]) -> PeerSwarm {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(args)
            .env(CHILD, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let truth = serde_json::from_str(&first).unwrap();
        PeerSwarm { child, truth }
    }

    /// One fetch job per torrent, with its peer.
    pub fn jobs(&self) -> Vec<FetchJob> {
        self.truth
            .iter()
            .map(|t| FetchJob {
                infohash: t.infohash.parse().unwrap(),
                source: Source::Sample,
                discovered_at: SystemTime::now(),
                peers: t.peers.iter().map(|p| p.addr.parse().unwrap()).collect(),
            })
            .collect()
    }
}

impl Drop for PeerSwarm {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}
