//! The peer wire, for one job: fetching a torrent's info dictionary from a
//! peer (BEP 3 handshake, BEP 10 extension protocol, BEP 9 `ut_metadata`).
//!
//! * [`handshake`]: the 68-byte BT handshake, read incrementally.
//! * [`framing`]: length-prefixed messages, with the size limits.
//! * [`extension`]: the BEP 10 extension handshake.
//! * [`metadata`]: BEP 9 request / data / reject messages.
//! * [`fetch`]: [`MetadataFetch`], the fetching state machine.
//! * [`mse`]: the Message Stream Encryption handshake (BEP 8-style "PE")
//!   in front of the wire, both sides, and the RC4 stream after it.
//! * [`serve`]: [`MetadataServe`], the serving side, with misbehaving modes,
//!   for simulated peers and tests.
//!
//! # A sans-IO state machine
//!
//! Following quinn-proto, the protocol logic owns no socket and reads no
//! clock. The IO glue feeds it what the socket read, in whatever pieces the
//! network delivered (`handle_data`), the end of the stream (`handle_eof`) and
//! the time (`handle_timeout`, called when `poll_timeout` says so); it writes
//! what `poll_transmit` returns and stops when `poll_outcome` yields one. Every
//! method that depends on time takes `now: Instant` as an argument.
//!
//! That makes the hostile cases cheap to test exactly: a peer trickling a
//! byte per second for a minute is a loop over fake instants, not a minute
//! of wall time; every byte split of a whole exchange is a loop; and the same
//! code runs under the thread-per-core runtime, the load generator and the
//! fuzzer. It also keeps each connection's state small and explicit: a
//! handful of integers, one message buffer, and the metadata buffer.
//!
//! # Limits, and where they come from
//!
//! A peer is untrusted input: no length it announces is allocated before it
//! has been checked, and nothing it sends can panic us.
//!
//! | What | Limit | Source |
//! |---|---|---|
//! | any message | 1 MiB (so also every length ≥ 2^31) | libtorrent |
//! | extension handshake | 64 KiB | ours; real ones are a few hundred bytes |
//! | `ut_metadata` message | 17 KiB | libtorrent |
//! | `metadata_size` | 1 ..= 10 MiB (configurable) | magnetico/mldht-like; libtorrent 30 MiB |
//! | requests in flight | 2 | libtorrent |
//! | handshake timeout | 10 s | libtorrent `handshake_timeout` |
//! | idle timeout | 25 s | mldht |
//! | hard deadline | 30 s | ours: ends tricklers and keep-alive loops |
//! | bytes received | 2 MiB + 17 KiB per piece requested | ours: ends junk streams (skipped messages, keep-alive floods) |
//! | MSE sync (VC or `req1` hash) | within 512 pad bytes after the key | the MSE spec; libtorrent |
//! | MSE pads, initial payload | 512 B each; IA 1 KiB | the MSE spec; ours for IA |
//! | MSE handshake | within the handshake timeout above | ours: it spends the fetch's time, adds none |
//!
//! Messages the fetcher does not need (bitfield, have, PORT, extended
//! messages tagged with any id but the extension handshake's 0 and our own
//! `ut_metadata` id) are skipped as they stream past, never buffered. The metadata
//! buffer is allocated only after `metadata_size` passed the cap, and even then
//! it grows with the pieces actually received. Every data message is checked
//! against the advertised size (piece index, `total_size`, exact piece
//! lengths, solicited pieces only) before its bytes are copied, and the result
//! is accepted only if it hashes to the infohash (SHA-1, or BEP 52's SHA-256
//! truncated to 20 bytes, as libtorrent's `set_metadata`) and is one bencoded
//! dictionary.
//!
//! Connect timeouts and concurrency caps belong to the TCP layer that drives
//! this, not here.

pub mod extension;
pub mod fetch;
pub mod framing;
pub mod handshake;
pub mod metadata;
pub mod mse;
pub mod serve;
pub mod utp;

pub use fetch::{
    Deadline, FailReason, FetchConfig, HashKind, Malformed, MetadataFetch, Outcome, Phase, Verified,
};
pub use serve::{Behaviour, MetadataServe};

pub use crate::metainfo::{sha1_infohash, sha256_truncated_infohash};

#[cfg(test)]
mod tests;
