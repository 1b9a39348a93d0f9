//! The bencode decoder on arbitrary bytes, under every limit set: it must
//! never panic, and whatever it accepts must re-encode to the same bytes when
//! the input was canonical.
#![no_main]

use dht_hunter::bencode::{decode_with, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for limits in [
        Limits::KRPC,
        Limits::EXTENSION,
        Limits::METADATA,
        Limits {
            strict: true,
            ..Limits::KRPC
        },
    ] {
        if let Ok(v) = decode_with(data, limits) {
            assert_eq!(v.raw(), data);
            if limits.strict {
                // Strict input is canonical: the tree re-encodes byte for byte.
                let mut out = Vec::new();
                v.encode(&mut out);
                assert_eq!(out, data);
            }
        }
    }
});
