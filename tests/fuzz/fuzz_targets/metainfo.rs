//! The info dictionary parser on arbitrary bytes: never panics, and every
//! torrent it accepts keeps every promise of `Torrent` and every bound of
//! `metainfo`: files and path depth within the caps, no empty, `.`, `..`,
//! `/`-holding or over-long component, sizes that add up to `total_size`
//! within `i64`, a positive piece length, a file list within
//! `MEMORY_PER_INPUT_BYTE`, and input that the fetcher's own
//! well-formedness check (the same parser) accepts.
#![no_main]

use dht_hunter::bencode::{Limits, Parser};
use dht_hunter::metainfo::{
    parse_info, Torrent, TorrentFile, TorrentName, MAX_COMPONENT_LEN, MAX_FILES, MAX_PATH_DEPTH,
    MEMORY_PER_INPUT_BYTE,
};
use libfuzzer_sys::fuzz_target;

fn check_component(c: &TorrentName) {
    let b = c.as_bytes();
    assert!(!b.is_empty() && b.len() <= MAX_COMPONENT_LEN, "{c:?}");
    assert!(b != b"." && b != b".." && !b.contains(&b'/'), "{c:?}");
    assert_eq!(c.is_utf8(), std::str::from_utf8(b).is_ok());
}

fn check(data: &[u8], t: &Torrent) {
    check_component(&t.name);
    assert!(t.piece_length > 0);
    assert!(!t.files.is_empty() && t.files.len() <= MAX_FILES);
    let mut total: u64 = 0;
    let mut cost: usize = 0;
    for f in &t.files {
        assert!(!f.path.is_empty() && f.path.len() <= MAX_PATH_DEPTH);
        for c in &f.path {
            check_component(c);
            cost += std::mem::size_of::<TorrentName>() + c.as_bytes().len();
        }
        cost += std::mem::size_of::<TorrentFile>();
        total = total.checked_add(f.size).expect("sizes overflow u64");
    }
    assert_eq!(total, t.total_size);
    assert!(i64::try_from(total).is_ok());
    assert!(cost <= data.len() * MEMORY_PER_INPUT_BYTE, "{cost} for {}", data.len());
    let mut p = Parser::new(data, Limits::METADATA);
    assert!(p.skip().is_ok() && p.finish().is_ok());
}

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = parse_info(data) {
        check(data, &t);
    }
});
