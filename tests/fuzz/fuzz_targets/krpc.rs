//! The KRPC decoder on arbitrary datagrams: never panics; every accepted
//! response's node and peer lists iterate without over-reading; every
//! accepted message's tid is at most 255 bytes.
#![no_main]

use dht_hunter::krpc::{decode, Body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = decode(data) {
        assert!(m.tid.len() <= 255);
        if let Body::Response(r) = m.body {
            let _ = r.nodes.iter().count();
            let _ = r.nodes6.iter().count();
            let _ = r.peers().count();
            if let Ok(s) = r.as_samples() {
                assert_eq!(s.samples().count(), s.len());
            }
        }
    }
});
