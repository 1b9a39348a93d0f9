//! DHT-Hunter: a thread-per-core BitTorrent DHT crawler and metadata harvester.
//!
//! (The architecture essay is written as the pieces land.)

pub mod bencode;
pub mod id;
pub mod keyspace;
pub mod krpc;
pub mod metainfo;
pub mod rng;
pub mod store;
