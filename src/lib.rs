//! DHT-Hunter: a thread-per-core BitTorrent DHT crawler and metadata
//! harvester.
//!
//! # The shape of the system
//!
//! A crawler does three things: it is a node of the mainline DHT (BEP 5),
//! it collects infohashes (passively from the get_peers and announce_peer
//! queries it receives, actively by sweeping the keyspace with BEP 51
//! `sample_infohashes`), and it fetches each torrent's metadata from peers
//! over TCP (BEP 3/10/9), checks it against the infohash and stores it.
//!
//! ## Pure state machines at the core
//!
//! Everything protocol-shaped is sans-IO, in the style of quinn-proto: it
//! takes bytes and a `now: Instant` and returns actions, with `handle_*`
//! methods for what comes in and `poll_*` methods for what goes out. No
//! sockets, no clocks, no threads. That is what lets the node be tested in
//! a simulated network of a thousand nodes in virtual time
//! ([`dht`]), the peer-wire exchange be fed every valid conversation split
//! at every byte offset ([`wire`]), and every decoder be fuzzed.
//!
//! * [`bencode`]: a zero-copy pull parser (no allocation, depth and token
//!   limits, raw spans for hashing what was received) and a direct encoder.
//! * [`krpc`]: the wire layer (every known key as a borrowed slice, in one
//!   pass) apart from typed, validated messages; tokens and transaction ids.
//! * [`id`], [`keyspace`]: 160-bit ids, BEP 42, and slices of the keyspace.
//! * [`dht`]: the node: routing hygiene, answering, and the harvester that
//!   owns each infohash's life from seen to stored.
//! * [`wire`]: BEP 3/10/9 fetch and serve.
//! * [`metainfo`]: the info dictionary, parsed into bounded structures, and
//!   the infohash check.
//!
//! ## Thread-per-core around them
//!
//! The `shards` crate runs one glommio executor per core. Each executor is a
//! *shard* and owns one slice of the keyspace: the remote nodes whose ids
//! fall in it (which it tracks and samples), the infohashes that fall in
//! it (whose life, from seen to stored, its harvester owns) and the keyed
//! queries about them (which it answers, so that all shards look like one
//! node from outside). All shards share each UDP port
//! through SO_REUSEPORT; the kernel hashes every datagram to some shard, so
//! a reply may land on a shard that did not send the query. Our transaction
//! ids name their origin shard, and the receiving shard forwards such
//! replies over the mesh, a set of lock-free channels built once at start.
//! Infohashes and keyed queries seen on the wrong shard go to their owner
//! the same way. No shard state is shared; it never leaves its shard except
//! inside a message. (The store's writer handle takes an uncontended read
//! lock per submission; see [`store`].)
//!
//! [`engine`] is the glue: per shard, one [`dht::Node`] and one
//! [`fetch::FetchPool`], a receive loop per socket (readiness, then a
//! recvmmsg drain), a mesh loop and a timer loop, and a *pump* that moves
//! what the node produced to sockets (sendmmsg), the fetch pool, the store
//! and other shards. Fetch outcomes come back to the node's harvester, which
//! decides on retries: capacity (connection slots, per-IP caps) is waited
//! for, never counted as a failure.
//!
//! ## Results
//!
//! [`store`] keeps torrents in SQLite (WAL, FTS5, a dedicated writer
//! thread fed by a channel, so shards never block on the database) or in
//! PostgreSQL for several machines, each crawling part of the keyspace
//! (`--keyspace I/N`). [`web`] serves what is stored over HTTP (pages,
//! JSON, Torznab) from threads and read connections of its own, so
//! browsing never touches a shard. [`cli`] is the command line; [`demo`]
//! and [`loadgen`] stand in for the world on one machine.

pub mod bencode;
pub mod category;
pub mod cli;
pub mod config;
pub mod demo;
pub mod dht;
pub mod engine;
pub mod fetch;
pub mod filter;
pub mod id;
pub mod keyspace;
pub mod krpc;
pub mod loadgen;
pub mod metainfo;
pub mod rng;
pub mod setting;
pub mod source;
pub mod store;
pub mod web;
pub mod wire;
