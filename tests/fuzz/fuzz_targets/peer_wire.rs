//! The metadata fetcher (and the simulated serving peer) on arbitrary peer
//! bytes, split into arbitrary reads. Never panics; never holds more memory
//! than the limits allow; a `Done` outcome always hashes to the infohash.
//!
//! Input layout: byte 0 picks the mode, bytes 1..=4 seed the read splits,
//! bytes 5..=6 give the advertised `metadata_size` (1..=65536, small enough
//! that the fuzzer can complete pieces), the rest is what the peer sends.
//!
//! * mode 0 (most inputs): a valid peer BT handshake and extension handshake
//!   are fed first, so the fuzz bytes reach `ut_metadata` parsing directly
//!   (as libtorrent's `ut_metadata` fuzzer does).
//! * mode 1: the fuzz bytes are the whole stream, handshake included.
//! * mode 2: the fuzz bytes go to a `MetadataServe` after a valid fetcher
//!   handshake and extension handshake.
#![no_main]

use std::time::{Duration, Instant};

use dht_hunter::id::Id;
use dht_hunter::wire::extension::encode_handshake;
use dht_hunter::wire::handshake::Handshake;
use dht_hunter::wire::{
    sha1_infohash, sha256_truncated_infohash, Behaviour, FetchConfig, MetadataFetch,
    MetadataServe, Outcome,
};
use libfuzzer_sys::fuzz_target;

/// Frame buffer (64 KiB extension-handshake limit, with `Vec` doubling) plus
/// the metadata buffer, which grows only with the pieces received: at most
/// twice the bytes fed plus one piece received out of order.
fn memory_bound(fed: usize) -> usize {
    2 * 64 * 1024 + 2 * (fed + 16 * 1024) + 4096
}

/// A tiny xorshift for the read sizes.
struct Splits(u32);

impl Splits {
    fn next(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        // Mostly small reads, sometimes large ones.
        match self.0 % 8 {
            0 => 1,
            1..=5 => (self.0 >> 8) as usize % 64 + 1,
            _ => (self.0 >> 8) as usize % 20_000 + 1,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&[mode, s0, s1, s2, s3, z0, z1], body)) = data.split_first_chunk::<7>() else {
        return;
    };
    let mut splits = Splits(u32::from_le_bytes([s0, s1, s2, s3]) | 1);
    let size = usize::from(u16::from_le_bytes([z0, z1])) + 1;
    let infohash = Id([0x42; 20]);
    let t0 = Instant::now();

    if mode % 8 == 2 {
        let mut s = MetadataServe::new(infohash, vec![b'x'; size], [2; 20], Behaviour::Honest);
        let mut f = MetadataFetch::new(infohash, [1; 20], FetchConfig::default(), t0);
        let mut hello = Vec::new();
        f.poll_transmit(&mut hello);
        s.handle_data(&hello);
        let mut rest = body;
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(splits.next().min(rest.len()));
            s.handle_data(chunk);
            let mut out = Vec::new();
            s.poll_transmit(&mut out);
            rest = tail;
        }
        s.handle_eof();
        return;
    }

    let mut f = MetadataFetch::new(infohash, [1; 20], FetchConfig::default(), t0);
    let mut out = Vec::new();
    f.poll_transmit(&mut out);
    if mode % 8 != 1 {
        let mut prelude = Vec::new();
        Handshake::ours(infohash, [2; 20]).encode(&mut prelude);
        encode_handshake(&mut prelude, 3, Some(size as i64), None, b"fuzz");
        f.handle_data(&prelude, t0);
        assert!(!f.is_finished());
    }
    let mut now = t0;
    let mut rest = body;
    let mut fed = 0;
    while !rest.is_empty() && !f.is_finished() {
        let (chunk, tail) = rest.split_at(splits.next().min(rest.len()));
        now += Duration::from_millis(10);
        f.handle_data(chunk, now);
        fed += chunk.len();
        assert!(f.buffer_capacity() <= memory_bound(fed));
        out.clear();
        f.poll_transmit(&mut out);
        rest = tail;
    }
    if let Some(deadline) = f.poll_timeout() {
        assert!(deadline > now);
        f.handle_timeout(deadline);
        assert!(f.is_finished());
    }
    f.handle_eof(now);
    let outcome = f.poll_outcome();
    assert!(outcome.is_some(), "a fetch must end with an outcome");
    if let Some(Outcome::Done(v)) = outcome {
        assert!(sha1_infohash(&v.info) == infohash || sha256_truncated_infohash(&v.info) == infohash);
    }
});
