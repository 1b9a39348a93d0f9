//! Protocol reference cases 25–31, whole exchanges split at every byte, and
//! the fetcher against each misbehaving simulated peer.
//!
//! Unit tests of the peer wire; long because each behaviour and each hostile
//! input is its own test.

use std::time::{Duration, Instant};

use super::extension::{ExtensionError, MAX_EXT_HANDSHAKE};
use super::fetch::OUR_UT_METADATA;
use super::framing::{FrameTooLarge, MAX_FRAME};
use super::handshake::{Handshake, HandshakeError};
use super::metadata::{encode_data, MetadataMsgError, MAX_MESSAGE, PIECE_SIZE};
use super::serve::OVERSIZE_ADVERTISED;
use super::*;
use crate::bencode::Encoder;
use crate::id::Id;

const SEC: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------- helpers

/// A plausible info dictionary with a `pieces` string of `pieces_len` bytes.
fn info_dict(pieces_len: usize) -> Vec<u8> {
    let mut pieces = Vec::with_capacity(pieces_len);
    let mut x: u32 = 0x1234_5678;
    for _ in 0..pieces_len {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        pieces.push((x >> 24) as u8);
    }
    let mut v = Vec::new();
    Encoder::new(&mut v)
        .dict()
        .kv_int(b"length", 123_456_789)
        .kv_bytes(b"name", b"example.iso")
        .kv_int(b"piece length", 262_144)
        .kv_bytes(b"pieces", &pieces)
        .end();
    v
}

fn fetch(infohash: Id, t0: Instant) -> MetadataFetch {
    MetadataFetch::new(infohash, [0xAA; 20], FetchConfig::default(), t0)
}

/// The peer's BT handshake, extension bit set unless `ext` is false.
fn peer_hs(infohash: Id, ext: bool) -> Vec<u8> {
    let mut hs = Handshake::ours(infohash, [0xBB; 20]);
    if !ext {
        hs.reserved = [0; 8];
    }
    let mut out = Vec::new();
    hs.encode(&mut out);
    out
}

/// A frame: length, id 20, `sub`, then `payload`.
fn ext_frame(sub: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = ((payload.len() + 2) as u32).to_be_bytes().to_vec();
    out.push(20);
    out.push(sub);
    out.extend_from_slice(payload);
    out
}

/// The peer's extension handshake: `ut_metadata` id 7 and `metadata_size`.
fn peer_ext(size: i64) -> Vec<u8> {
    let mut out = Vec::new();
    extension::encode_handshake(&mut out, 7, Some(size), None, b"test peer");
    out
}

/// BT handshake plus extension handshake.
fn prelude(infohash: Id, size: i64) -> Vec<u8> {
    let mut v = peer_hs(infohash, true);
    v.extend(peer_ext(size));
    v
}

/// A data message addressed to us.
fn data(piece: u32, total: i64, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_data(&mut out, OUR_UT_METADATA, piece, total, bytes);
    out
}

fn failure(f: &mut MetadataFetch) -> FailReason {
    assert!(f.is_finished(), "fetch still running in {:?}", f.phase());
    match f.poll_outcome() {
        Some(Outcome::Failed(r)) => r,
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn verified(f: &mut MetadataFetch) -> Verified {
    match f.poll_outcome() {
        Some(Outcome::Done(v)) => v,
        other => panic!("expected success, got {other:?}"),
    }
}

/// Drives a fetcher against a server, advancing a fake clock by 1 ms per
/// delivery and jumping to the next deadline when both sides are stalled.
/// Returns the outcome, every byte the server sent, and the end time.
fn drive(f: &mut MetadataFetch, s: &mut MetadataServe, t0: Instant) -> (Outcome, Vec<u8>, Instant) {
    let mut now = t0;
    let mut stream = Vec::new();
    for _ in 0..10_000 {
        let mut to_server = Vec::new();
        f.poll_transmit(&mut to_server);
        s.handle_data(&to_server);
        let mut to_fetch = Vec::new();
        s.poll_transmit(&mut to_fetch);
        stream.extend_from_slice(&to_fetch);
        if !to_fetch.is_empty() {
            now += Duration::from_millis(1);
            f.handle_data(&to_fetch, now);
        } else if s.poll_close() {
            f.handle_eof(now);
        } else if to_server.is_empty() {
            now = f.poll_timeout().expect("a running fetch has a deadline");
            f.handle_timeout(now);
        }
        if let Some(o) = f.poll_outcome() {
            return (o, stream, now);
        }
    }
    panic!("exchange did not finish");
}

fn serve_and_fetch(info: &[u8], infohash: Id, behaviour: Behaviour) -> (Outcome, Vec<u8>, Instant) {
    let t0 = Instant::now();
    let mut f = fetch(infohash, t0);
    let mut s = MetadataServe::new(infohash, info.to_vec(), [0xCC; 20], behaviour);
    drive(&mut f, &mut s, t0)
}

// ------------------------------------------------------ valid exchanges

/// Every split of the server's stream into two reads, and one byte at a
/// time, ends Verified with the exact bytes.
fn check_every_split(info: &[u8], hash_kind: HashKind, infohash: Id) {
    let (outcome, stream, _) = serve_and_fetch(info, infohash, Behaviour::Honest);
    let expected = Outcome::Done(Verified {
        info: info.to_vec(),
        hash_kind,
    });
    assert_eq!(outcome, expected);
    let t0 = Instant::now();
    for split in 0..=stream.len() {
        let mut f = fetch(infohash, t0);
        f.handle_data(&stream[..split], t0);
        f.handle_data(&stream[split..], t0);
        assert_eq!(f.poll_outcome().as_ref(), Some(&expected), "split {split}");
    }
    let mut f = fetch(infohash, t0);
    for b in &stream {
        f.handle_data(std::slice::from_ref(b), t0);
    }
    assert_eq!(f.poll_outcome(), Some(expected));
}

#[test]
fn one_piece_exchange_every_split() {
    let info = info_dict(1000);
    assert!(info.len() < PIECE_SIZE);
    check_every_split(&info, HashKind::Sha1, sha1_infohash(&info));
}

#[test]
fn multi_piece_exchange_every_split() {
    let info = info_dict(40_000);
    assert_eq!(metadata::piece_count(info.len()), 3);
    check_every_split(&info, HashKind::Sha1, sha1_infohash(&info));
}

#[test]
fn exact_multiple_of_piece_size() {
    // The final piece is a full 16384 bytes; no empty third piece is asked.
    // info_dict(n) is (its length for n = 0, minus the digit "0") + n + the
    // digits of n; n has 5 digits here.
    let base = info_dict(0).len() - 1;
    let info = info_dict(2 * PIECE_SIZE - base - 5);
    assert_eq!(info.len(), 2 * PIECE_SIZE);
    let (outcome, stream, _) = serve_and_fetch(&info, sha1_infohash(&info), Behaviour::Honest);
    assert_eq!(
        outcome,
        Outcome::Done(Verified {
            info: info.clone(),
            hash_kind: HashKind::Sha1
        })
    );
    assert!(stream.len() < 2 * PIECE_SIZE + 400);
}

#[test]
fn our_messages_use_the_peers_id_and_advertise_no_size() {
    let info = info_dict(40_000);
    let infohash = sha1_infohash(&info);
    let t0 = Instant::now();
    let mut f = fetch(infohash, t0);
    let mut out = Vec::new();
    f.poll_transmit(&mut out);
    let mut expected = Vec::new();
    Handshake::ours(infohash, [0xAA; 20]).encode(&mut expected);
    assert_eq!(&out[..68], &expected[..]);
    assert_eq!(
        &out[74..],
        &b"d1:md11:ut_metadatai1ee4:reqqi250e1:v14:DHT-Hunter 0.1e"[..]
    );
    assert_eq!(&out[68..74], &[0, 0, 0, (out.len() - 72) as u8, 20, 0][..]);
    assert_eq!(f.poll_transmit(&mut Vec::new()), 0);
    // The peer wants ut_metadata as id 7: both requests (at most 2) use it.
    f.handle_data(&prelude(infohash, info.len() as i64), t0);
    let mut out = Vec::new();
    f.poll_transmit(&mut out);
    let mut reqs = Vec::new();
    metadata::encode_request(&mut reqs, 7, 0);
    metadata::encode_request(&mut reqs, 7, 1);
    assert_eq!(out, reqs);
    assert_eq!(f.phase(), Phase::Transfer);
    assert_eq!(f.metadata_size(), Some(info.len()));
    assert_eq!(f.peer_client(), Some(&b"test peer"[..]));
    // Piece 0 arrives: exactly one more request, for piece 2.
    f.handle_data(&data(0, info.len() as i64, &info[..PIECE_SIZE]), t0);
    let mut out = Vec::new();
    f.poll_transmit(&mut out);
    let mut req = Vec::new();
    metadata::encode_request(&mut req, 7, 2);
    assert_eq!(out, req);
}

#[test]
fn memory_follows_the_bytes_received() {
    let info = info_dict(40_000);
    let infohash = sha1_infohash(&info);
    let size = info.len() as i64;
    let t0 = Instant::now();
    let mut f = fetch(infohash, t0);
    f.handle_data(&prelude(infohash, size), t0);
    // Nothing is allocated for the metadata until a piece arrives.
    assert!(f.buffer_capacity() < 1024, "{}", f.buffer_capacity());
    f.handle_data(&data(0, size, &info[..PIECE_SIZE]), t0);
    let after_one = f.buffer_capacity();
    assert!(
        after_one <= PIECE_SIZE + 2 * MAX_MESSAGE as usize,
        "{after_one}"
    );
    f.handle_data(&data(1, size, &info[PIECE_SIZE..2 * PIECE_SIZE]), t0);
    f.handle_data(&data(2, size, &info[2 * PIECE_SIZE..]), t0);
    assert_eq!(verified(&mut f).info, info);
    let peak = f.peak_buffer_capacity();
    assert!(peak <= info.len() + 2 * MAX_MESSAGE as usize, "{peak}");
}

#[test]
fn tolerated_noise_between_messages() {
    // Keep-alives, bitfield, have, unchoke, PORT, an extended message for an
    // id we never advertised and an unknown msg_type: all skipped.
    let info = info_dict(20_000);
    let infohash = sha1_infohash(&info);
    let size = info.len() as i64;
    let mut s = peer_hs(infohash, true);
    s.extend([0, 0, 0, 0]);
    s.extend([0, 0, 0, 3, 5, 0xff, 0x80]); // bitfield
    s.extend(peer_ext(size));
    s.extend([0, 0, 0, 1, 1]); // unchoke
    s.extend([0, 0, 0, 5, 4, 0, 0, 0, 1]); // have
    s.extend([0, 0, 0, 3, 9, 0x1a, 0xe1]); // PORT
    s.extend(ext_frame(2, b"d5:addedi1ee")); // ut_pex on an id we never gave
    s.extend(ext_frame(OUR_UT_METADATA, b"d8:msg_typei7e5:piecei0ee"));
    s.extend([0, 0, 0, 0]);
    s.extend(data(0, size, &info[..PIECE_SIZE]));
    s.extend([0, 0, 0, 0]);
    s.extend(data(1, size, &info[PIECE_SIZE..]));
    let t0 = Instant::now();
    let mut f = fetch(infohash, t0);
    f.handle_data(&s, t0);
    assert_eq!(
        verified(&mut f),
        Verified {
            info,
            hash_kind: HashKind::Sha1
        }
    );
    assert!(f.peer_handshake().is_some_and(|h| h.supports_dht()));
}

#[test]
fn pieces_may_arrive_out_of_order() {
    let info = info_dict(20_000);
    let infohash = sha1_infohash(&info);
    let size = info.len() as i64;
    let t0 = Instant::now();
    let mut f = fetch(infohash, t0);
    f.handle_data(&prelude(infohash, size), t0);
    f.handle_data(&data(1, size, &info[PIECE_SIZE..]), t0);
    assert!(!f.is_finished());
    f.handle_data(&data(0, size, &info[..PIECE_SIZE]), t0);
    assert_eq!(verified(&mut f).info, info);
}

// ------------------------------------------------ case 25: BT handshake

#[test]
fn case25_wrong_pstrlen() {
    let t0 = Instant::now();
    let mut f = fetch(Id([1; 20]), t0);
    let mut hs = peer_hs(Id([1; 20]), true);
    hs[0] = 18;
    f.handle_data(&hs, t0);
    assert_eq!(
        failure(&mut f),
        FailReason::BadHandshake(HandshakeError::BadPstrlen(18))
    );
    assert_eq!(f.poll_timeout(), None);
}

#[test]
fn case25_wrong_protocol_string() {
    let t0 = Instant::now();
    let mut f = fetch(Id([1; 20]), t0);
    let mut hs = peer_hs(Id([1; 20]), true);
    hs[5] = b'X';
    // Fails on the first wrong byte, without waiting for the rest.
    f.handle_data(&hs[..6], t0);
    assert_eq!(
        failure(&mut f),
        FailReason::BadHandshake(HandshakeError::BadProtocol)
    );
}

#[test]
fn case25_wrong_echoed_infohash() {
    let t0 = Instant::now();
    let mut f = fetch(Id([1; 20]), t0);
    f.handle_data(&prelude(Id([2; 20]), 100), t0);
    assert_eq!(failure(&mut f), FailReason::InfoHashMismatch);
}

#[test]
fn case25_no_extension_bit() {
    let t0 = Instant::now();
    let mut f = fetch(Id([1; 20]), t0);
    f.handle_data(&peer_hs(Id([1; 20]), false), t0);
    assert_eq!(failure(&mut f), FailReason::NoExtensionSupport);
}

#[test]
fn case25_http_response_instead_of_handshake() {
    let t0 = Instant::now();
    let mut f = fetch(Id([1; 20]), t0);
    f.handle_data(b"HTTP/1.1 400 Bad Request\r\n\r\n", t0);
    assert_eq!(
        failure(&mut f),
        FailReason::BadHandshake(HandshakeError::BadPstrlen(b'H'))
    );
}

// ------------------------------------------------------ case 26: frames

#[test]
fn case26_keepalive_tolerated() {
    let t0 = Instant::now();
    let mut f = fetch(Id([1; 20]), t0);
    let mut s = peer_hs(Id([1; 20]), true);
    s.extend([0u8; 4 * 100]);
    f.handle_data(&s, t0);
    assert!(!f.is_finished());
    assert_eq!(f.phase(), Phase::ExtensionHandshake);
}

#[test]
fn case26_oversize_frames_disconnect_without_allocating() {
    for len in [MAX_FRAME + 1, 1 << 31, u32::MAX] {
        for before_ext in [true, false] {
            let t0 = Instant::now();
            let mut f = fetch(Id([1; 20]), t0);
            let mut s = if before_ext {
                peer_hs(Id([1; 20]), true)
            } else {
                prelude(Id([1; 20]), 40_000)
            };
            s.extend(len.to_be_bytes());
            s.extend([20, OUR_UT_METADATA]);
            s.extend([b'x'; 1000]);
            f.handle_data(&s, t0);
            assert!(
                f.peak_buffer_capacity() < 1024,
                "{}",
                f.peak_buffer_capacity()
            );
            assert_eq!(
                failure(&mut f),
                FailReason::FrameTooLarge(FrameTooLarge {
                    len,
                    limit: MAX_FRAME
                })
            );
        }
    }
}

#[test]
fn case26_large_skipped_frame_is_not_buffered() {
    // A 1 MiB bitfield (the largest frame allowed) streams past unbuffered.
    let info = info_dict(1000);
    let infohash = sha1_infohash(&info);
    let t0 = Instant::now();
    let mut f = fetch(infohash, t0);
    let mut s = prelude(infohash, info.len() as i64);
    s.extend(MAX_FRAME.to_be_bytes());
    s.push(5);
    s.resize(s.len() + MAX_FRAME as usize - 1, 0xff);
    for chunk in s.chunks(4096) {
        f.handle_data(chunk, t0);
    }
    assert!(
        f.peak_buffer_capacity() < 1024,
        "{}",
        f.peak_buffer_capacity()
    );
    f.handle_data(&data(0, info.len() as i64, &info), t0);
    assert_eq!(verified(&mut f).info, info);
}

#[test]
fn case26_announced_length_is_not_preallocated() {
    let t0 = Instant::now();
    let mut f = fetch(Id([1; 20]), t0);
    let mut s = prelude(Id([1; 20]), 40_000);
    s.extend(MAX_MESSAGE.to_be_bytes());
    s.extend([20, OUR_UT_METADATA, b'd']);
    f.handle_data(&s, t0);
    assert!(!f.is_finished());
    assert!(f.buffer_capacity() < 1024, "{}", f.buffer_capacity());
}

#[test]
fn case26_ut_metadata_message_over_17k() {
    let t0 = Instant::now();
    let mut f = fetch(Id([1; 20]), t0);
    let mut s = prelude(Id([1; 20]), 40_000);
    s.extend((MAX_MESSAGE + 1).to_be_bytes());
    s.extend([20, OUR_UT_METADATA]);
    f.handle_data(&s, t0);
    assert!(f.peak_buffer_capacity() < 1024);
    assert_eq!(
        failure(&mut f),
        FailReason::FrameTooLarge(FrameTooLarge {
            len: MAX_MESSAGE + 1,
            limit: MAX_MESSAGE
        })
    );
}

#[test]
fn case26_extension_handshake_over_64k() {
    let t0 = Instant::now();
    let mut f = fetch(Id([1; 20]), t0);
    let mut s = peer_hs(Id([1; 20]), true);
    s.extend((MAX_EXT_HANDSHAKE + 1).to_be_bytes());
    s.extend([20, 0]);
    f.handle_data(&s, t0);
    assert_eq!(
        failure(&mut f),
        FailReason::FrameTooLarge(FrameTooLarge {
            len: MAX_EXT_HANDSHAKE + 1,
            limit: MAX_EXT_HANDSHAKE
        })
    );
}

// ------------------------------------------ case 27: extension handshake

fn after_ext_payload(payload: &[u8]) -> MetadataFetch {
    let t0 = Instant::now();
    let mut f = fetch(Id([1; 20]), t0);
    let mut s = peer_hs(Id([1; 20]), true);
    s.extend(ext_frame(0, payload));
    f.handle_data(&s, t0);
    f
}

fn ext_failure(payload: &[u8]) -> FailReason {
    let mut f = after_ext_payload(payload);
    // Only the message itself was ever buffered: no metadata buffer.
    assert!(f.peak_buffer_capacity() <= 2 * payload.len() + 1024);
    failure(&mut f)
}

#[test]
fn case27_not_a_dict() {
    assert_eq!(
        ext_failure(b"l11:ut_metadatai1ee"),
        FailReason::Malformed(Malformed::ExtHandshake(ExtensionError::NotADict))
    );
    assert_eq!(
        ext_failure(b"i42e"),
        FailReason::Malformed(Malformed::ExtHandshake(ExtensionError::NotADict))
    );
    assert!(matches!(
        ext_failure(b"d1:md11:ut_metadatai1ee"),
        FailReason::Malformed(Malformed::ExtHandshake(ExtensionError::Bencode(_)))
    ));
    assert!(matches!(
        ext_failure(b""),
        FailReason::Malformed(Malformed::ExtHandshake(ExtensionError::Bencode(_)))
    ));
    // Nesting bomb inside the extension message: error, no crash.
    let mut bomb = vec![b'l'; 20_000];
    bomb.extend(vec![b'e'; 20_000]);
    assert!(matches!(
        ext_failure(&bomb),
        FailReason::Malformed(Malformed::ExtHandshake(ExtensionError::Bencode(_)))
    ));
    assert_eq!(
        ext_failure(b"d1:mi1e13:metadata_sizei100ee"),
        FailReason::Malformed(Malformed::ExtHandshake(ExtensionError::MNotADict))
    );
}

#[test]
fn case27_no_m_or_no_ut_metadata() {
    assert_eq!(
        ext_failure(b"d13:metadata_sizei100ee"),
        FailReason::NoUtMetadata
    );
    assert_eq!(
        ext_failure(b"d1:md6:ut_pexi1ee13:metadata_sizei100ee"),
        FailReason::NoUtMetadata
    );
}

#[test]
fn case27_ut_metadata_id_0_or_out_of_range() {
    assert_eq!(
        ext_failure(b"d1:md11:ut_metadatai0ee13:metadata_sizei100ee"),
        FailReason::NoUtMetadata
    );
    assert_eq!(
        ext_failure(b"d1:md11:ut_metadatai256ee13:metadata_sizei100ee"),
        FailReason::Malformed(Malformed::ExtHandshake(ExtensionError::IdOutOfRange(256)))
    );
    assert_eq!(
        ext_failure(b"d1:md11:ut_metadatai-1ee13:metadata_sizei100ee"),
        FailReason::Malformed(Malformed::ExtHandshake(ExtensionError::IdOutOfRange(-1)))
    );
    assert_eq!(
        ext_failure(b"d1:md11:ut_metadata1:1e13:metadata_sizei100ee"),
        FailReason::Malformed(Malformed::ExtHandshake(ExtensionError::IdNotInt))
    );
    // 255 is the largest valid id.
    let f = after_ext_payload(b"d1:md11:ut_metadatai255ee13:metadata_sizei100ee");
    assert!(!f.is_finished());
    assert_eq!(f.phase(), Phase::Transfer);
}

fn size_failure(size: &str) -> FailReason {
    let payload = format!("d1:md11:ut_metadatai7ee13:metadata_size{size}e");
    ext_failure(payload.as_bytes())
}

#[test]
fn case27_metadata_size_bad_values() {
    assert_eq!(
        ext_failure(b"d1:md11:ut_metadatai7eee"),
        FailReason::NoMetadataSize
    );
    assert_eq!(
        size_failure("i0e"),
        FailReason::Malformed(Malformed::MetadataSizeNotPositive(0))
    );
    assert_eq!(
        size_failure("i-1e"),
        FailReason::Malformed(Malformed::MetadataSizeNotPositive(-1))
    );
    assert_eq!(
        size_failure("i2147483648e"),
        FailReason::MetadataTooLarge(1 << 31)
    );
    assert_eq!(
        size_failure("i5000000000e"),
        FailReason::MetadataTooLarge(5_000_000_000)
    );
    assert_eq!(
        size_failure("i9223372036854775807e"),
        FailReason::MetadataTooLarge(i64::MAX)
    );
    assert_eq!(
        size_failure("i10485761e"),
        FailReason::MetadataTooLarge(10 * 1024 * 1024 + 1)
    );
    assert_eq!(
        size_failure("1:9"),
        FailReason::Malformed(Malformed::ExtHandshake(ExtensionError::SizeNotInt))
    );
    // Exactly the cap is accepted, and still nothing is allocated for it.
    let f = after_ext_payload(b"d1:md11:ut_metadatai7ee13:metadata_sizei10485760ee");
    assert!(!f.is_finished());
    assert_eq!(f.metadata_size(), Some(10 * 1024 * 1024));
    assert!(f.buffer_capacity() < 1024);
}

/// Size 9 is a valid (tiny) size: the transfer layer accepts it, and the
/// outcome is decided by the hash and the dictionary check.
#[test]
fn case27_metadata_size_9() {
    let t0 = Instant::now();
    // (a) Nine bytes that are a dictionary and hash to the infohash: Verified
    // (whether it is a usable torrent is the metainfo layer's call).
    let info = b"d1:ai12ee".to_vec();
    assert_eq!(info.len(), 9);
    let (o, _, _) = serve_and_fetch(&info, sha1_infohash(&info), Behaviour::Honest);
    assert_eq!(
        o,
        Outcome::Done(Verified {
            info: info.clone(),
            hash_kind: HashKind::Sha1
        })
    );
    // (b) Nine bytes that hash correctly but are not bencode: Malformed.
    let junk = b"123456789";
    let infohash = sha1_infohash(junk);
    let mut f = fetch(infohash, t0);
    f.handle_data(&prelude(infohash, 9), t0);
    f.handle_data(&data(0, 9, junk), t0);
    assert_eq!(
        failure(&mut f),
        FailReason::Malformed(Malformed::NotADictionary)
    );
    // (c) A list, hashing correctly: not a dictionary either.
    let list = b"li1ei22ee";
    let infohash = sha1_infohash(list);
    let mut f = fetch(infohash, t0);
    f.handle_data(&prelude(infohash, 9), t0);
    f.handle_data(&data(0, 9, list), t0);
    assert_eq!(
        failure(&mut f),
        FailReason::Malformed(Malformed::NotADictionary)
    );
    // (d) Nine bytes for some other infohash: HashMismatch.
    let infohash = Id([3; 20]);
    let mut f = fetch(infohash, t0);
    f.handle_data(&prelude(infohash, 9), t0);
    f.handle_data(&data(0, 9, &info), t0);
    assert_eq!(failure(&mut f), FailReason::HashMismatch);
}

#[test]
fn case27_repeated_handshake_is_additive() {
    let info = info_dict(20_000);
    let infohash = sha1_infohash(&info);
    let size = info.len() as i64;
    let t0 = Instant::now();
    let mut f = fetch(infohash, t0);
    f.handle_data(&prelude(infohash, size), t0);
    f.poll_transmit(&mut Vec::new());
    // Adds ut_pex, repeats the size, keeps ut_metadata: fine.
    let again = format!("d1:md6:ut_pexi2ee13:metadata_sizei{size}ee");
    f.handle_data(&ext_frame(0, again.as_bytes()), t0);
    // No m, no size at all: nothing changes.
    f.handle_data(&ext_frame(0, b"d1:v3:abce"), t0);
    assert!(!f.is_finished());
    assert_eq!(f.peer_client(), Some(&b"abc"[..]));
    // Nothing new to request (both pieces already in flight).
    assert_eq!(f.poll_transmit(&mut Vec::new()), 0);
    f.handle_data(&data(0, size, &info[..PIECE_SIZE]), t0);
    f.handle_data(&data(1, size, &info[PIECE_SIZE..]), t0);
    assert_eq!(verified(&mut f).info, info);
}

#[test]
fn case27_repeated_handshake_changing_size_or_disabling() {
    let t0 = Instant::now();
    let infohash = Id([1; 20]);
    let mut f = fetch(infohash, t0);
    f.handle_data(&prelude(infohash, 40_000), t0);
    f.handle_data(&peer_ext(40_001), t0);
    assert_eq!(
        failure(&mut f),
        FailReason::Malformed(Malformed::MetadataSizeChanged {
            was: 40_000,
            now: 40_001
        })
    );
    let mut f = fetch(infohash, t0);
    f.handle_data(&prelude(infohash, 40_000), t0);
    f.handle_data(&ext_frame(0, b"d1:md11:ut_metadatai0eee"), t0);
    assert_eq!(failure(&mut f), FailReason::NoUtMetadata);
}

#[test]
fn case27_repeated_handshake_moves_ut_metadata_id() {
    let info = info_dict(40_000);
    let infohash = sha1_infohash(&info);
    let size = info.len() as i64;
    let t0 = Instant::now();
    let mut f = fetch(infohash, t0);
    f.handle_data(&prelude(infohash, size), t0);
    f.poll_transmit(&mut Vec::new());
    f.handle_data(&ext_frame(0, b"d1:md11:ut_metadatai9eee"), t0);
    f.handle_data(&data(0, size, &info[..PIECE_SIZE]), t0);
    let mut out = Vec::new();
    f.poll_transmit(&mut out);
    let mut req = Vec::new();
    metadata::encode_request(&mut req, 9, 2);
    assert_eq!(out, req);
}

// --------------------------------------------------- case 28: data messages

const SIZE: usize = 40_000; // pieces of 16384, 16384, 7232

fn in_transfer(size: usize) -> (MetadataFetch, Instant) {
    let t0 = Instant::now();
    let mut f = fetch(Id([1; 20]), t0);
    f.handle_data(&prelude(Id([1; 20]), size as i64), t0);
    assert_eq!(f.phase(), Phase::Transfer);
    (f, t0)
}

fn data_failure(size: usize, frames: &[Vec<u8>]) -> FailReason {
    let (mut f, t0) = in_transfer(size);
    for fr in frames {
        f.handle_data(fr, t0);
    }
    failure(&mut f)
}

#[test]
fn case28_piece_out_of_range() {
    let total = SIZE as i64;
    assert_eq!(
        data_failure(SIZE, &[data(3, total, &[0; 100])]),
        FailReason::Malformed(Malformed::PieceOutOfRange(3))
    );
    let neg = ext_frame(
        OUR_UT_METADATA,
        b"d8:msg_typei1e5:piecei-1e10:total_sizei40000eexxxx",
    );
    assert_eq!(
        data_failure(SIZE, &[neg]),
        FailReason::Malformed(Malformed::PieceOutOfRange(-1))
    );
    let huge = ext_frame(
        OUR_UT_METADATA,
        b"d8:msg_typei1e5:piecei4294967296e10:total_sizei40000eexxxx",
    );
    assert_eq!(
        data_failure(SIZE, &[huge]),
        FailReason::Malformed(Malformed::PieceOutOfRange(1 << 32))
    );
}

#[test]
fn case28_total_size_differs_or_missing() {
    assert_eq!(
        data_failure(SIZE, &[data(0, SIZE as i64 + 1, &vec![0; PIECE_SIZE])]),
        FailReason::Malformed(Malformed::TotalSizeMismatch {
            advertised: SIZE,
            got: SIZE as i64 + 1
        })
    );
    assert_eq!(
        data_failure(SIZE, &[data(0, -1, &vec![0; PIECE_SIZE])]),
        FailReason::Malformed(Malformed::TotalSizeMismatch {
            advertised: SIZE,
            got: -1
        })
    );
    let no_total = ext_frame(OUR_UT_METADATA, b"d8:msg_typei1e5:piecei0eexxxx");
    assert_eq!(
        data_failure(SIZE, &[no_total]),
        FailReason::Malformed(Malformed::NoTotalSize)
    );
}

#[test]
fn case28_non_final_piece_not_16384() {
    let total = SIZE as i64;
    for len in [16_383, 16_385, 1] {
        assert_eq!(
            data_failure(SIZE, &[data(0, total, &vec![0; len])]),
            FailReason::Malformed(Malformed::WrongPieceLength {
                piece: 0,
                expected: PIECE_SIZE,
                got: len
            })
        );
    }
}

#[test]
fn case28_final_piece_wrong_length() {
    let total = SIZE as i64;
    let last = SIZE - 2 * PIECE_SIZE;
    for len in [last + 1, last - 1, PIECE_SIZE] {
        assert_eq!(
            data_failure(
                SIZE,
                &[
                    data(0, total, &vec![0; PIECE_SIZE]),
                    data(2, total, &vec![0; len])
                ]
            ),
            FailReason::Malformed(Malformed::WrongPieceLength {
                piece: 2,
                expected: last,
                got: len
            })
        );
    }
    // Single-piece metadata: the only piece is the final one.
    assert_eq!(
        data_failure(9, &[data(0, 9, b"d1:ai12eee")]),
        FailReason::Malformed(Malformed::WrongPieceLength {
            piece: 0,
            expected: 9,
            got: 10
        })
    );
}

#[test]
fn case28_whole_file_as_piece_0() {
    // Fits in one message: caught by the length check.
    assert_eq!(
        data_failure(17_000, &[data(0, 17_000, &vec![0; 17_000])]),
        FailReason::Malformed(Malformed::WholeMetadataAsPiece0)
    );
    // Larger: the message itself is over 17 KiB.
    let fr = data(0, SIZE as i64, &vec![0; SIZE]);
    assert_eq!(
        data_failure(SIZE, std::slice::from_ref(&fr)),
        FailReason::FrameTooLarge(FrameTooLarge {
            len: fr.len() as u32 - 4,
            limit: MAX_MESSAGE
        })
    );
}

#[test]
fn case28_unsolicited_pieces() {
    let total = SIZE as i64;
    let last = SIZE - 2 * PIECE_SIZE;
    // Piece 2 is not requested until piece 0 or 1 arrives.
    assert_eq!(
        data_failure(SIZE, &[data(2, total, &vec![0; last])]),
        FailReason::Malformed(Malformed::Unsolicited(2))
    );
    // A piece already received.
    assert_eq!(
        data_failure(
            SIZE,
            &[
                data(0, total, &vec![0; PIECE_SIZE]),
                data(0, total, &vec![0; PIECE_SIZE])
            ]
        ),
        FailReason::Malformed(Malformed::Unsolicited(0))
    );
    // A data message before the extension handshake.
    let t0 = Instant::now();
    let mut f = fetch(Id([1; 20]), t0);
    let mut s = peer_hs(Id([1; 20]), true);
    s.extend(data(0, 9, b"d1:ai12ee"));
    f.handle_data(&s, t0);
    assert_eq!(
        failure(&mut f),
        FailReason::Malformed(Malformed::Unsolicited(0))
    );
}

#[test]
fn case28_no_payload_after_dict() {
    assert_eq!(
        data_failure(SIZE, &[data(0, SIZE as i64, &[])]),
        FailReason::Malformed(Malformed::EmptyPiece(0))
    );
}

#[test]
fn case28_unparseable_messages() {
    let cases: [(&[u8], FailReason); 4] = [
        (
            b"d5:piecei0ee",
            FailReason::Malformed(Malformed::Message(MetadataMsgError::NoMsgType)),
        ),
        (
            b"d8:msg_typei1ee",
            FailReason::Malformed(Malformed::Message(MetadataMsgError::NoPiece)),
        ),
        (
            b"d8:msg_typei2ee",
            FailReason::Malformed(Malformed::Message(MetadataMsgError::NoPiece)),
        ),
        (
            b"",
            FailReason::Malformed(Malformed::Message(MetadataMsgError::Bencode(
                crate::bencode::DecodeError {
                    kind: crate::bencode::DecodeErrorKind::UnexpectedEof,
                    offset: 0,
                },
            ))),
        ),
    ];
    for (payload, expected) in cases {
        assert_eq!(
            data_failure(SIZE, &[ext_frame(OUR_UT_METADATA, payload)]),
            expected
        );
    }
    assert!(matches!(
        data_failure(SIZE, &[ext_frame(OUR_UT_METADATA, b"d8:msg_type1:1e")]),
        FailReason::Malformed(Malformed::Message(MetadataMsgError::Bencode(_)))
    ));
}

// ------------------------------------------------ case 29: msg_type 7, reject

#[test]
fn case29_unknown_msg_type_ignored() {
    let info = info_dict(1000);
    let infohash = sha1_infohash(&info);
    let t0 = Instant::now();
    let mut f = fetch(infohash, t0);
    let mut s = prelude(infohash, info.len() as i64);
    s.extend(ext_frame(OUR_UT_METADATA, b"d8:msg_typei7e5:piecei0ee"));
    s.extend(ext_frame(OUR_UT_METADATA, b"d8:msg_typei7ee"));
    // A request to us (we serve nothing) is ignored too.
    s.extend(ext_frame(OUR_UT_METADATA, b"d8:msg_typei0e5:piecei0ee"));
    f.handle_data(&s, t0);
    assert!(!f.is_finished());
    f.handle_data(&data(0, info.len() as i64, &info), t0);
    assert_eq!(verified(&mut f).info, info);
}

#[test]
fn case29_reject_moves_on() {
    assert_eq!(
        data_failure(
            SIZE,
            &[ext_frame(OUR_UT_METADATA, b"d8:msg_typei2e5:piecei0ee")]
        ),
        FailReason::Rejected
    );
    let info = info_dict(1000);
    let (o, _, _) = serve_and_fetch(&info, sha1_infohash(&info), Behaviour::Reject);
    assert_eq!(o, Outcome::Failed(FailReason::Rejected));
}

// -------------------------------------------------------- case 30: hashes

#[test]
fn case30_sha1_mismatch() {
    for info in [info_dict(1000), info_dict(40_000)] {
        let infohash = sha1_infohash(&info);
        let (o, _, _) = serve_and_fetch(&info, infohash, Behaviour::Lie);
        assert_eq!(o, Outcome::Failed(FailReason::HashMismatch));
    }
}

#[test]
fn case30_truncated_sha256_accepted() {
    let info = info_dict(40_000);
    let infohash = sha256_truncated_infohash(&info);
    assert_ne!(infohash, sha1_infohash(&info));
    let (o, _, _) = serve_and_fetch(&info, infohash, Behaviour::Honest);
    assert_eq!(
        o,
        Outcome::Done(Verified {
            info,
            hash_kind: HashKind::Sha256Truncated
        })
    );
}

// -------------------------------------------------------- case 31: time

#[test]
fn case31_never_sends_handshake() {
    let t0 = Instant::now();
    let mut f = fetch(Id([1; 20]), t0);
    assert_eq!(f.poll_timeout(), Some(t0 + 10 * SEC));
    f.handle_timeout(t0 + 10 * SEC - Duration::from_millis(1));
    assert!(!f.is_finished());
    f.handle_timeout(t0 + 10 * SEC);
    assert_eq!(
        failure(&mut f),
        FailReason::Timeout {
            deadline: Deadline::Handshake,
            phase: Phase::Handshake
        }
    );
    // The same against a simulated peer that never answers.
    let info = info_dict(1000);
    let (o, _, end) = serve_and_fetch(&info, sha1_infohash(&info), Behaviour::NoHandshake);
    assert_eq!(
        o,
        Outcome::Failed(FailReason::Timeout {
            deadline: Deadline::Handshake,
            phase: Phase::Handshake
        })
    );
    assert!(end.duration_since(t0) <= 10 * SEC + SEC);
}

#[test]
fn case31_no_extension_handshake() {
    let t0 = Instant::now();
    let mut f = fetch(Id([1; 20]), t0);
    f.handle_data(&peer_hs(Id([1; 20]), true), t0 + 3 * SEC);
    assert_eq!(f.poll_timeout(), Some(t0 + 10 * SEC));
    f.handle_timeout(t0 + 10 * SEC);
    assert_eq!(
        failure(&mut f),
        FailReason::Timeout {
            deadline: Deadline::Handshake,
            phase: Phase::ExtensionHandshake
        }
    );
}

/// Drives `f` with one byte of `stream` per second, calling `handle_timeout`
/// whenever `poll_timeout` comes due first. Returns when it finishes.
fn trickle(f: &mut MetadataFetch, stream: &[u8], start: Instant) -> Instant {
    let mut now = start;
    let mut bytes = stream.iter();
    loop {
        let next_byte = now + SEC;
        match f.poll_timeout() {
            Some(t) if t <= next_byte => {
                f.handle_timeout(t);
                if f.is_finished() {
                    return t;
                }
                now = t;
            }
            Some(_) => {
                now = next_byte;
                let b = bytes.next().expect("stream outlasts the deadline");
                f.handle_data(std::slice::from_ref(b), now);
                if f.is_finished() {
                    return now;
                }
            }
            None => panic!("finished without a timeout"),
        }
    }
}

#[test]
fn case31_trickle_after_handshake_hits_hard_deadline() {
    let t0 = Instant::now();
    let mut f = fetch(Id([1; 20]), t0);
    f.handle_data(&prelude(Id([1; 20]), SIZE as i64), t0);
    let stream = data(0, SIZE as i64, &vec![0; PIECE_SIZE]);
    let end = trickle(&mut f, &stream, t0);
    assert_eq!(end, t0 + 30 * SEC);
    assert_eq!(
        failure(&mut f),
        FailReason::Timeout {
            deadline: Deadline::Hard,
            phase: Phase::Transfer
        }
    );
}

#[test]
fn case31_trickled_handshake_hits_handshake_deadline() {
    let t0 = Instant::now();
    let mut f = fetch(Id([1; 20]), t0);
    let end = trickle(&mut f, &prelude(Id([1; 20]), 100), t0);
    assert_eq!(end, t0 + 10 * SEC);
    assert_eq!(
        failure(&mut f),
        FailReason::Timeout {
            deadline: Deadline::Handshake,
            phase: Phase::Handshake
        }
    );
}

#[test]
fn case31_keepalives_forever_hit_hard_deadline() {
    let t0 = Instant::now();
    let mut f = fetch(Id([1; 20]), t0);
    f.handle_data(&prelude(Id([1; 20]), SIZE as i64), t0);
    let mut now = t0;
    // Bounded, so that a missing hard deadline fails instead of hanging.
    for _ in 0..100 {
        now += 5 * SEC;
        f.handle_timeout(now);
        f.handle_data(&[0, 0, 0, 0], now);
        if f.is_finished() {
            break;
        }
    }
    assert_eq!(now, t0 + 30 * SEC);
    assert_eq!(
        failure(&mut f),
        FailReason::Timeout {
            deadline: Deadline::Hard,
            phase: Phase::Transfer
        }
    );
}

#[test]
fn case31_silence_hits_idle_deadline() {
    let t0 = Instant::now();
    let mut f = fetch(Id([1; 20]), t0);
    f.handle_data(&prelude(Id([1; 20]), SIZE as i64), t0 + 2 * SEC);
    assert_eq!(f.poll_timeout(), Some(t0 + 27 * SEC));
    f.handle_timeout(t0 + 27 * SEC);
    assert_eq!(
        failure(&mut f),
        FailReason::Timeout {
            deadline: Deadline::Idle,
            phase: Phase::Transfer
        }
    );
}

/// A skipped frame of `len` bytes (id 5, a bitfield) with its prefix.
fn junk_frame(len: u32) -> Vec<u8> {
    let mut out = len.to_be_bytes().to_vec();
    out.push(5);
    out.resize(4 + len as usize, 0xff);
    out
}

#[test]
fn byte_budget_ends_a_junk_stream_of_skipped_frames() {
    // Legal frames (each under the 1 MiB cap, each skipped unbuffered),
    // streamed without end after the handshakes, all in one instant: no
    // deadline can fire, the byte budget must.
    let t0 = Instant::now();
    let infohash = Id([1; 20]);
    let mut f = fetch(infohash, t0);
    let prelude = prelude(infohash, SIZE as i64);
    f.handle_data(&prelude, t0);
    assert_eq!(f.phase(), Phase::Transfer);
    let frame = junk_frame(256 * 1024);
    let mut sent = prelude.len() as u64;
    for _ in 0..1000 {
        for chunk in frame.chunks(17 * 1024) {
            f.handle_data(chunk, t0);
            sent += chunk.len() as u64;
            if f.is_finished() {
                break;
            }
        }
        if f.is_finished() {
            break;
        }
    }
    let budget = FetchConfig::default().byte_budget as u64;
    // Allowed: the budget plus one data message per piece requested (the
    // default two in flight), plus the read that crossed the line.
    let allowance = budget + 2 * (u64::from(MAX_MESSAGE) + 4);
    assert!(sent > allowance && sent <= allowance + 17 * 1024, "{sent}");
    assert_eq!(f.bytes_received(), sent);
    assert_eq!(
        failure(&mut f),
        FailReason::ByteBudget {
            received: sent,
            phase: Phase::Transfer
        }
    );
    assert!(
        f.peak_buffer_capacity() < 1024,
        "{}",
        f.peak_buffer_capacity()
    );
}

#[test]
fn byte_budget_ends_a_keepalive_flood_before_the_handshake_is_done() {
    // Keep-alives are bytes too: a flood of them, before the extension
    // handshake, is cut off at the budget (no piece is requested yet).
    let t0 = Instant::now();
    let infohash = Id([1; 20]);
    let mut f = fetch(infohash, t0);
    f.handle_data(&peer_hs(infohash, true), t0);
    let flood = [0u8; 4].repeat(4096);
    let mut rounds = 0u64;
    while !f.is_finished() && rounds < 10_000 {
        f.handle_data(&flood, t0);
        rounds += 1;
    }
    let budget = FetchConfig::default().byte_budget as u64;
    assert_eq!(rounds, (budget - 68) / flood.len() as u64 + 1);
    assert!(matches!(
        failure(&mut f),
        FailReason::ByteBudget {
            phase: Phase::ExtensionHandshake,
            ..
        }
    ));
}

#[test]
fn byte_budget_lets_the_largest_honest_exchange_through() {
    // The biggest metadata allowed (10 MiB, 640 pieces), behind the
    // largest legal frame (a 1 MiB bitfield) and some have messages.
    let max = FetchConfig::default().max_metadata_size;
    let info = info_dict(max - 100);
    assert!(
        info.len() <= max && info.len() > max - PIECE_SIZE,
        "{}",
        info.len()
    );
    let infohash = sha1_infohash(&info);
    let t0 = Instant::now();
    let mut f = fetch(infohash, t0);
    let mut s = MetadataServe::new(infohash, info.clone(), [0xCC; 20], Behaviour::Honest);
    let mut out = Vec::new();
    f.poll_transmit(&mut out);
    s.handle_data(&out);
    out.clear();
    s.poll_transmit(&mut out);
    // The server's handshakes, then the noise, then the pieces.
    out.extend(junk_frame(MAX_FRAME - 1));
    for i in 0..1000u32 {
        out.extend([0, 0, 0, 5, 4]);
        out.extend(i.to_be_bytes());
    }
    f.handle_data(&out, t0);
    let mut pieces = 0;
    while !f.is_finished() {
        out.clear();
        f.poll_transmit(&mut out);
        s.handle_data(&out);
        out.clear();
        s.poll_transmit(&mut out);
        assert!(!out.is_empty(), "the exchange stalled");
        f.handle_data(&out, t0);
        pieces += 1;
    }
    assert!(pieces > 300, "{pieces}");
    assert_eq!(verified(&mut f).info, info);
}

#[test]
fn case31_late_data_without_handle_timeout_still_times_out() {
    let info = info_dict(1000);
    let infohash = sha1_infohash(&info);
    let t0 = Instant::now();
    let mut f = fetch(infohash, t0);
    f.handle_data(&prelude(infohash, info.len() as i64), t0);
    // The glue forgot to call handle_timeout: the deadline still wins.
    f.handle_data(&data(0, info.len() as i64, &info), t0 + 31 * SEC);
    assert_eq!(
        failure(&mut f),
        FailReason::Timeout {
            deadline: Deadline::Idle,
            phase: Phase::Transfer
        }
    );
}

#[test]
fn case31_eof_mid_transfer() {
    let info = info_dict(40_000);
    let infohash = sha1_infohash(&info);
    let t0 = Instant::now();
    let mut f = fetch(infohash, t0);
    let mut s = MetadataServe::new(
        infohash,
        info.clone(),
        [0xCC; 20],
        Behaviour::DisconnectMidway,
    );
    let (o, _, end) = drive(&mut f, &mut s, t0);
    assert_eq!(o, Outcome::Failed(FailReason::Closed(Phase::Transfer)));
    assert_eq!(s.pieces_served(), 1);
    assert!(end < t0 + SEC);
    // EOF before anything arrived, and after a partial handshake.
    let mut f = fetch(infohash, t0);
    f.handle_eof(t0);
    assert_eq!(failure(&mut f), FailReason::Closed(Phase::Handshake));
    let mut f = fetch(infohash, t0);
    f.handle_data(&peer_hs(infohash, true), t0);
    f.handle_eof(t0);
    assert_eq!(
        failure(&mut f),
        FailReason::Closed(Phase::ExtensionHandshake)
    );
}

// --------------------------------------------------- misbehaving servers

#[test]
fn oversize_server() {
    let info = info_dict(1000);
    let (o, _, _) = serve_and_fetch(&info, sha1_infohash(&info), Behaviour::Oversize);
    assert_eq!(
        o,
        Outcome::Failed(FailReason::MetadataTooLarge(OVERSIZE_ADVERTISED))
    );
}

#[test]
fn every_behaviour_has_its_reason() {
    let info = info_dict(40_000);
    let infohash = sha1_infohash(&info);
    let cases = [
        (
            Behaviour::Honest,
            Outcome::Done(Verified {
                info: info.clone(),
                hash_kind: HashKind::Sha1,
            }),
        ),
        (Behaviour::Reject, Outcome::Failed(FailReason::Rejected)),
        (Behaviour::Lie, Outcome::Failed(FailReason::HashMismatch)),
        (
            Behaviour::Oversize,
            Outcome::Failed(FailReason::MetadataTooLarge(OVERSIZE_ADVERTISED)),
        ),
        (
            Behaviour::DisconnectMidway,
            Outcome::Failed(FailReason::Closed(Phase::Transfer)),
        ),
        (
            Behaviour::NoHandshake,
            Outcome::Failed(FailReason::Timeout {
                deadline: Deadline::Handshake,
                phase: Phase::Handshake,
            }),
        ),
    ];
    for (b, expected) in cases {
        let (o, _, _) = serve_and_fetch(&info, infohash, b);
        assert_eq!(o, expected, "{b:?}");
    }
}

#[test]
fn server_refuses_wrong_infohash() {
    let info = info_dict(1000);
    let mut s = MetadataServe::new(sha1_infohash(&info), info, [0xCC; 20], Behaviour::Honest);
    let t0 = Instant::now();
    let mut f = fetch(Id([9; 20]), t0);
    let mut out = Vec::new();
    f.poll_transmit(&mut out);
    s.handle_data(&out);
    assert!(s.poll_close());
    assert_eq!(s.poll_transmit(&mut Vec::new()), 0);
}

#[test]
fn outcome_is_reported_once_and_input_after_it_is_ignored() {
    let t0 = Instant::now();
    let mut f = fetch(Id([1; 20]), t0);
    f.handle_eof(t0);
    assert!(f.poll_outcome().is_some());
    assert_eq!(f.poll_outcome(), None);
    f.handle_data(&prelude(Id([1; 20]), 10), t0);
    f.handle_timeout(t0 + 100 * SEC);
    assert_eq!(f.poll_outcome(), None);
    assert_eq!(f.poll_timeout(), None);
}

#[test]
fn server_rejects_out_of_range_and_ignores_requests_before_ext_handshake() {
    let info = info_dict(1000);
    let infohash = sha1_infohash(&info);
    let mut s = MetadataServe::new(infohash, info.clone(), [0xCC; 20], Behaviour::Honest);
    let mut hello = Vec::new();
    Handshake::ours(infohash, [0xAA; 20]).encode(&mut hello);
    s.handle_data(&hello);
    let mut out = Vec::new();
    s.poll_transmit(&mut out);
    assert_eq!(&out[..68], &peer_hs_of(infohash, [0xCC; 20])[..]);
    // A request before our extension handshake: no id to answer with.
    let mut req = Vec::new();
    metadata::encode_request(&mut req, MetadataServe::UT_METADATA_ID, 0);
    s.handle_data(&req);
    assert_eq!(s.poll_transmit(&mut Vec::new()), 0);
    // After it: piece 1 does not exist (one piece), piece 0 does.
    let mut ext = Vec::new();
    extension::encode_handshake(&mut ext, 5, None, None, b"x");
    s.handle_data(&ext);
    let mut reqs = Vec::new();
    metadata::encode_request(&mut reqs, MetadataServe::UT_METADATA_ID, 1);
    metadata::encode_request(&mut reqs, MetadataServe::UT_METADATA_ID, 0);
    s.handle_data(&reqs);
    let mut out = Vec::new();
    s.poll_transmit(&mut out);
    let mut expected = Vec::new();
    metadata::encode_reject(&mut expected, 5, 1);
    encode_data(&mut expected, 5, 0, info.len() as i64, &info);
    assert_eq!(out, expected);
    assert_eq!(s.pieces_served(), 1);
    assert!(!s.poll_close());
}

fn peer_hs_of(infohash: Id, peer_id: [u8; 20]) -> Vec<u8> {
    let mut out = Vec::new();
    Handshake::ours(infohash, peer_id).encode(&mut out);
    out
}
