//! Load generators that stand in for the world on one machine.
//!
//! * [`swarm`]: a simulated DHT and BitTorrent swarm on loopback, with a
//!   ground truth, for the demo, the integration tests and the end-to-end
//!   benchmark.
//! * [`flood`]: valid KRPC queries at a fixed rate or as fast as possible,
//!   for measuring how many queries a node answers.

pub mod echo;
pub mod flood;
pub mod light;
pub mod peers;
pub mod pktinfo;
pub mod swarm;
pub mod torrents;
mod utp_peers;
