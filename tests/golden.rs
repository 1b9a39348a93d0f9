//! Golden packets captured from libtorrent 2.0 on loopback
//! (`tests/data/capture_krpc.py`; see `tests/data/krpc/MANIFEST.md`), and
//! golden info dictionaries made by libtorrent 2.0
//! (`tests/data/capture_metainfo.py`, `tests/data/metainfo/`).
//!
//! Every packet decodes to the expected typed value, and re-encoding the
//! typed value reproduces the captured bytes exactly — for responses, after
//! removing libtorrent's non-standard `p` key (its view of our port), which
//! our typed model does not carry.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use dht_hunter::bencode::{decode_with, Limits};
use dht_hunter::krpc::message::{encode_query_full, encode_response};
use dht_hunter::krpc::{decode, Body, Header, Method, NodeInfo, ResponseBody};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/krpc")
}

fn packets(prefix: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            (name.starts_with(prefix) && name.ends_with(".bin"))
                .then(|| (name.clone(), std::fs::read(e.path()).unwrap()))
        })
        .collect();
    out.sort();
    out
}

fn strict() -> Limits {
    Limits {
        strict: true,
        ..Limits::KRPC
    }
}

/// Removes `1:pi<digits>e` from the `r` dictionary.
fn without_p(pkt: &[u8]) -> Vec<u8> {
    let needle = b"1:pi";
    let Some(at) = pkt.windows(needle.len()).position(|w| w == needle) else {
        return pkt.to_vec();
    };
    let end = at
        + needle.len()
        + pkt[at + needle.len()..]
            .iter()
            .position(|&b| b == b'e')
            .unwrap()
        + 1;
    let mut out = pkt[..at].to_vec();
    out.extend_from_slice(&pkt[end..]);
    out
}

#[test]
fn there_are_golden_packets_of_every_kind() {
    let all = packets("");
    for kind in [
        "lt_query_ping",
        "lt_query_get_peers",
        "lt_query_announce_peer",
        "lt_query_sample_infohashes",
        "lt_response_ping",
        "lt_response_find_node",
        "lt_response_get_peers_values",
        "lt_response_get_peers_no_peers",
        "lt_response_announce_peer",
        "lt_response_sample_infohashes",
        "lt_error_",
    ] {
        assert!(
            all.iter().any(|(n, _)| n.starts_with(kind)),
            "no golden packet for {kind}"
        );
    }
}

#[test]
fn libtorrent_queries_decode_and_reencode_byte_for_byte() {
    let mut checked = 0;
    for (name, pkt) in packets("lt_query_") {
        decode_with(&pkt, strict()).unwrap_or_else(|e| panic!("{name}: not canonical: {e}"));
        let m = decode(&pkt).unwrap_or_else(|e| panic!("{name}: {e}"));
        // libtorrent sends 2-byte tids and "LT" + 2 version bytes.
        assert_eq!(m.tid.len(), 2, "{name}");
        assert_eq!(m.version.map(|v| &v[..2]), Some(&b"LT"[..]), "{name}");
        let Body::Query(q) = m.body else {
            panic!("{name}: not a query")
        };
        let expected_method = name
            .trim_start_matches("lt_query_")
            .trim_end_matches(".bin");
        let method_name = String::from_utf8_lossy(q.method.name()).to_string();
        assert!(
            expected_method.starts_with(&method_name),
            "{name}: decoded as {method_name}"
        );
        if name.contains("put") {
            // BEP 44 put carries `v` and `seq` fields we do not model.
            continue;
        }
        let mut out = Vec::new();
        encode_query_full(
            &mut out,
            &Header {
                tid: m.tid,
                version: m.version,
            },
            &q.id,
            &q.method,
            q.want,
            m.read_only,
            q.bootstrap,
        );
        assert_eq!(out, pkt, "{name}: re-encoding differs");
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} queries checked");
}

#[test]
fn libtorrent_responses_decode_and_reencode_byte_for_byte() {
    let mut exact = 0;
    for (name, pkt) in packets("lt_response_") {
        decode_with(&pkt, strict()).unwrap_or_else(|e| panic!("{name}: not canonical: {e}"));
        let m = decode(&pkt).unwrap_or_else(|e| panic!("{name}: {e}"));
        // BEP 42: libtorrent puts our address in every response.
        let ip = m.ip.unwrap_or_else(|| panic!("{name}: no ip"));
        assert!(ip.ip().is_loopback(), "{name}");
        let Body::Response(r) = m.body else {
            panic!("{name}: not a response")
        };
        // The tid echoes the query we sent.
        let q = std::fs::read(dir().join(name.replacen("lt_response_", "our_query_", 1))).unwrap();
        assert_eq!(decode_tid(&q), m.tid, "{name}");

        let nodes: Vec<NodeInfo> = r.nodes.iter().collect();
        let nodes6: Vec<NodeInfo> = r.nodes6.iter().collect();
        assert!(r.nodes.is_whole() && r.nodes6.is_whole(), "{name}");
        let values: Vec<_> = r.peers().collect();
        if name.contains("values") || name.contains("noseed") {
            assert!(!values.is_empty(), "{name}: no values");
        }
        if name.contains("find_node") || name.contains("get_peers") || name.contains("unknown") {
            assert!(!nodes.is_empty() || !nodes6.is_empty(), "{name}: no nodes");
        }
        if name.contains("get_peers") {
            assert!(r.token.is_some(), "{name}: no token");
        }
        let samples: Vec<_>;
        let mut sample_meta = None;
        if name.contains("sample_infohashes") {
            let s = r.as_samples().unwrap_or_else(|e| panic!("{name}: {e}"));
            samples = s.samples().collect();
            assert_eq!(samples.len(), s.len());
            sample_meta = Some((s.interval, s.num));
        } else {
            samples = Vec::new();
        }
        if name.contains("scrape") {
            // BEP 33 bloom filters are not part of our typed model.
            continue;
        }
        let mut out = Vec::new();
        encode_response(
            &mut out,
            &Header {
                tid: m.tid,
                version: m.version,
            },
            m.ip,
            &r.id,
            &ResponseBody {
                nodes: &nodes,
                nodes6: &nodes6,
                values: &values,
                token: r.token,
                samples: sample_meta.map(|(i, n)| (&samples[..], i, n)),
                // No golden packet is a scrape reply.
                scrape: None,
            },
        );
        assert_eq!(out, without_p(&pkt), "{name}: re-encoding differs");
        exact += 1;
    }
    assert!(exact >= 10, "only {exact} responses compared");
}

fn decode_tid(pkt: &[u8]) -> &[u8] {
    let v = decode_with(pkt, Limits::KRPC).unwrap();
    v.as_dict().unwrap().bytes(b"t").unwrap()
}

#[test]
fn libtorrent_errors_decode_with_their_codes() {
    for (name, pkt) in packets("lt_error_") {
        let m = decode(&pkt).unwrap_or_else(|e| panic!("{name}: {e}"));
        let Body::Error(e) = m.body else {
            panic!("{name}: not an error")
        };
        assert_eq!(e.code, Some(203), "{name}");
        assert!(e.message.is_some_and(|s| !s.is_empty()), "{name}");
    }
}

#[test]
fn our_queries_are_accepted_as_libtorrent_accepted_them() {
    // Every query the capture sent that libtorrent answered with a response
    // decodes as a query here too; the ones it answered with an error get an
    // error from us as well.
    for (name, pkt) in packets("our_query_") {
        let answered = dir().join(name.replacen("our_query_", "lt_response_", 1));
        let errored = dir().join(name.replacen("our_query_", "lt_error_", 1));
        match decode(&pkt) {
            Ok(m) => {
                assert!(matches!(m.body, Body::Query(_)), "{name}");
                if let Body::Query(q) = m.body {
                    if let Method::Unknown { target: None, .. } = q.method {
                        // libtorrent: 203 "unknown message" for a bare unknown method.
                        assert!(errored.exists(), "{name}");
                        continue;
                    }
                }
                // get_peers with a short infohash is refused by both.
                assert!(answered.exists() || errored.exists(), "{name}");
            }
            Err(_) => assert!(
                errored.exists(),
                "{name}: we refuse it but libtorrent answered"
            ),
        }
    }
}

/// v1, v2-only and hybrid info dictionaries made by libtorrent's
/// create_torrent: `parse_info` reads the name, piece length, private flag
/// and every file (path relative to the torrent's directory, size, in
/// libtorrent's order) as libtorrent does, and both infohashes match.
/// libtorrent lists a v2-only torrent's implicit pad files; a v2 `file
/// tree` has none, so they are left out of the comparison there. Hybrid
/// torrents are read from their v1 list, whose pad files are real entries.
#[test]
fn libtorrent_info_dictionaries_parse_as_libtorrent_reads_them() {
    use dht_hunter::id::Id;
    use dht_hunter::metainfo::{infohash_matches, parse_info, HashKind};

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/metainfo");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let torrents = manifest["torrents"].as_object().unwrap();
    assert!(torrents.len() >= 5);
    let (mut v2_only, mut hybrid) = (0, 0);
    for (name, want) in torrents {
        let info = std::fs::read(dir.join(format!("{name}.info"))).unwrap();
        let t = parse_info(&info).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(t.name.display(), want["name"].as_str().unwrap(), "{name}");
        assert_eq!(t.piece_length, want["piece_length"].as_u64().unwrap());
        assert_eq!(t.private, want["private"].as_bool().unwrap(), "{name}");
        let v1 = want["v1"].as_str();
        let v2 = want["v2"].as_str();
        match (v1, v2) {
            (None, Some(_)) => v2_only += 1,
            (Some(_), Some(_)) => hybrid += 1,
            _ => {}
        }
        let theirs: Vec<(String, u64)> = want["files"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| v1.is_some() || !f["pad"].as_bool().unwrap())
            .map(|f| {
                let path = f["path"].as_str().unwrap().to_owned();
                (path, f["size"].as_u64().unwrap())
            })
            .collect();
        let ours: Vec<(String, u64)> = t.files.iter().map(|f| (f.display_path(), f.size)).collect();
        assert_eq!(ours, theirs, "{name}");
        assert_eq!(t.total_size, theirs.iter().map(|f| f.1).sum::<u64>());
        if let Some(v1) = v1 {
            let id: Id = v1.parse().unwrap();
            assert_eq!(infohash_matches(&info, &id), Some(HashKind::Sha1));
        }
        if let Some(v2) = v2 {
            // The DHT key of a v2 torrent: SHA-256 truncated to 20 bytes.
            let id: Id = v2[..40].parse().unwrap();
            assert_eq!(
                infohash_matches(&info, &id),
                Some(HashKind::Sha256Truncated)
            );
        }
    }
    assert!(
        v2_only >= 2 && hybrid >= 1,
        "{v2_only} v2-only, {hybrid} hybrid"
    );
}
