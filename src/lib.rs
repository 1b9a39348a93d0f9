//! DHT-Hunter: a thread-per-core BitTorrent DHT crawler and metadata harvester.
//!
//! (The architecture essay is written as the pieces land.)

pub mod bencode;
pub mod cli;
pub mod config;
pub mod demo;
pub mod dht;
pub mod engine;
pub mod fetch;
pub mod id;
pub mod keyspace;
pub mod krpc;
pub mod loadgen;
pub mod metainfo;
pub mod rng;
pub mod store;
pub mod wire;
