//! The MSE handshake, both sides, on arbitrary and on corrupted peer bytes
//! split into arbitrary reads. Never panics; never holds more raw bytes than
//! the pad limits allow (plus the read in hand); every handshake ends with
//! an outcome by its deadline; an established pair agrees on its keys.
//!
//! Input layout: byte 0 picks the mode, bytes 1..=4 seed the read splits
//! and the sides' randomness, the rest drives the mode.
//!
//! * mode 0: the fuzz bytes are everything the receiver sends an initiator.
//! * mode 1: the fuzz bytes are everything an initiator sends a receiver.
//! * mode 2: an honest receiver answers an initiator, but its bytes are
//!   corrupted: each pair of fuzz bytes (offset, xor) flips one byte, and a
//!   final odd byte truncates the stream there.
//! * mode 3: the same with an honest initiator's bytes to a receiver.
#![no_main]

use std::time::{Duration, Instant};

use dht_hunter::id::Id;
use dht_hunter::rng::Rng;
use dht_hunter::wire::mse::{Methods, MseInitiator, MseReceiver, MAX_IA, MAX_PAD};
use libfuzzer_sys::fuzz_target;

/// Raw bytes a side may hold: Y, the pads, the sync hashes and IA, plus the
/// largest read fed at once.
fn bound(chunk: usize) -> usize {
    2 * (96 + 3 * MAX_PAD + MAX_IA + 64 + chunk)
}

struct Splits(u32);

impl Splits {
    fn next(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        match self.0 % 4 {
            0 => 1,
            1 | 2 => (self.0 >> 8) as usize % 64 + 1,
            _ => (self.0 >> 8) as usize % 2000 + 1,
        }
    }
}

fn methods(b: u8) -> Methods {
    match b % 3 {
        0 => Methods::Rc4,
        1 => Methods::Either,
        _ => Methods::Plaintext,
    }
}

fn corrupt(bytes: &mut Vec<u8>, edits: &[u8]) {
    let mut it = edits.chunks_exact(3);
    for e in &mut it {
        let at = usize::from(u16::from_le_bytes([e[0], e[1]]));
        if let Some(b) = bytes.get_mut(at) {
            *b ^= e[2].max(1);
        }
    }
    if let [t0, t1] = it.remainder() {
        bytes.truncate(usize::from(u16::from_le_bytes([*t0, *t1])));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&[mode, s0, s1, s2, s3], body)) = data.split_first_chunk::<5>() else {
        return;
    };
    let seed = u32::from_le_bytes([s0, s1, s2, s3]);
    let mut splits = Splits(seed | 1);
    let infohash = Id([0x42; 20]);
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(10);
    let m = methods(mode >> 2);
    match mode % 4 {
        0 | 2 => {
            let mut a = MseInitiator::new(infohash, m, deadline, Rng::seed_from_u64(u64::from(seed)));
            let mut to_b = Vec::new();
            a.poll_transmit(&mut to_b);
            let stream = if mode % 4 == 0 {
                body.to_vec()
            } else {
                let mut b = MseReceiver::new(
                    vec![infohash],
                    methods(mode >> 4),
                    true,
                    Rng::seed_from_u64(u64::from(seed) + 1),
                );
                b.handle_data(&to_b);
                let mut s = Vec::new();
                b.poll_transmit(&mut s);
                // A's step 3 needs Yb first: feed B what A sends after it.
                let mut a2 = Vec::new();
                a.handle_data(&s[..s.len().min(96)]);
                a.poll_transmit(&mut a2);
                b.handle_data(&a2);
                let mut rest = s.split_off(s.len().min(96));
                b.poll_transmit(&mut rest);
                rest.extend_from_slice(b"\x13BitTorrent protocol payload");
                corrupt(&mut rest, body);
                rest
            };
            let mut left = &stream[..];
            while !left.is_empty() && !a.is_finished() {
                let (chunk, tail) = left.split_at(splits.next().min(left.len()));
                a.handle_data(chunk);
                assert!(a.buffered() <= bound(chunk.len()));
                let mut out = Vec::new();
                a.poll_transmit(&mut out);
                left = tail;
            }
            a.handle_timeout(deadline);
            assert!(a.is_finished());
            assert!(a.poll_outcome().is_some());
            assert!(a.poll_outcome().is_none());
        }
        _ => {
            let mut b = MseReceiver::new(vec![infohash], m, mode & 0x10 != 0, Rng::seed_from_u64(u64::from(seed)));
            let stream = if mode % 4 == 1 {
                body.to_vec()
            } else {
                let mut a = MseInitiator::new(
                    infohash,
                    methods(mode >> 4),
                    deadline,
                    Rng::seed_from_u64(u64::from(seed) + 1),
                );
                let mut s = Vec::new();
                a.poll_transmit(&mut s);
                let mut probe =
                    MseReceiver::new(vec![infohash], m, true, Rng::seed_from_u64(u64::from(seed)));
                probe.handle_data(&s);
                let mut yb = Vec::new();
                probe.poll_transmit(&mut yb);
                a.handle_data(&yb[..yb.len().min(96)]);
                a.poll_transmit(&mut s);
                s.extend_from_slice(b"\x13BitTorrent protocol payload");
                corrupt(&mut s, body);
                s
            };
            let mut left = &stream[..];
            while !left.is_empty() && !b.is_finished() {
                let (chunk, tail) = left.split_at(splits.next().min(left.len()));
                b.handle_data(chunk);
                assert!(b.buffered() <= bound(chunk.len()));
                let mut out = Vec::new();
                b.poll_transmit(&mut out);
                left = tail;
            }
            b.handle_eof();
            assert!(b.is_finished());
            assert!(b.poll_outcome().is_some());
        }
    }
});
