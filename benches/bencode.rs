//! Decoding and encoding a realistic KRPC mix, this crate against
//! serde_bencode into equivalent structs, side by side in one run.
//!
//! Run: `cargo bench --bench bencode`. Results: `tuning/runs/`.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, Criterion};
use dht_hunter::id::Id;
use dht_hunter::krpc::message::{encode_query, encode_response};
use dht_hunter::krpc::{decode, Body, Header, Method, NodeInfo, ResponseBody, Want};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

#[derive(Debug, Deserialize, Serialize)]
struct SMessage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<SBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip: Option<ByteBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    q: Option<ByteBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<SBody>,
    t: ByteBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    v: Option<ByteBuf>,
    y: ByteBuf,
}

#[derive(Debug, Default, Deserialize, Serialize)]
struct SBody {
    id: ByteBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    implied_port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    infohash: Option<ByteBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interval: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nodes: Option<ByteBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    num: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    samples: Option<ByteBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<ByteBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<ByteBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    values: Option<Vec<ByteBuf>>,
}

struct Mix {
    get_peers: Vec<u8>,
    find_node_resp: Vec<u8>,
    announce: Vec<u8>,
    samples_resp: Vec<u8>,
}

fn mix() -> Mix {
    let h = Header {
        tid: b"ab",
        version: Some(b"LT\x02\x00"),
    };
    let id = Id([0x11; 20]);
    let mut get_peers = Vec::new();
    encode_query(
        &mut get_peers,
        &h,
        &id,
        &Method::GetPeers {
            infohash: Id([0x22; 20]),
            noseed: false,
            scrape: false,
        },
        Want::default(),
        false,
    );
    let mut announce = Vec::new();
    encode_query(
        &mut announce,
        &h,
        &id,
        &Method::AnnouncePeer {
            infohash: Id([0x22; 20]),
            port: 6881,
            implied_port: true,
            token: b"\x01\x02\x03\x04\x05\x06\x07\x08",
            seed: Some(false),
        },
        Want::default(),
        false,
    );
    let nodes: Vec<NodeInfo> = (0..8u8)
        .map(|i| NodeInfo {
            id: Id([i; 20]),
            addr: SocketAddr::from(([127, 0, 0, i + 1], 6881)),
        })
        .collect();
    let requester = Some(SocketAddr::from(([127, 0, 0, 9], 4000)));
    let mut find_node_resp = Vec::new();
    encode_response(
        &mut find_node_resp,
        &h,
        requester,
        &id,
        &ResponseBody {
            nodes: &nodes,
            ..Default::default()
        },
    );
    let samples: Vec<Id> = (0..20u8).map(|i| Id([i; 20])).collect();
    let mut samples_resp = Vec::new();
    encode_response(
        &mut samples_resp,
        &h,
        requester,
        &id,
        &ResponseBody {
            nodes: &nodes,
            samples: Some((&samples, 21600, 1000)),
            ..Default::default()
        },
    );
    Mix {
        get_peers,
        find_node_resp,
        announce,
        samples_resp,
    }
}

/// Touches what a node would use, so neither side is optimised away.
fn ours(pkt: &[u8]) -> usize {
    match decode(pkt) {
        Ok(m) => match m.body {
            Body::Query(q) => q.id.0[0] as usize + m.tid.len(),
            Body::Response(r) => {
                r.nodes.iter().count() + r.as_samples().map(|s| s.samples().count()).unwrap_or(0)
            }
            Body::Error(_) => 1,
        },
        Err(_) => 0,
    }
}

fn theirs(pkt: &[u8]) -> usize {
    match serde_bencode::from_bytes::<SMessage>(pkt) {
        Ok(m) => match (m.a, m.r) {
            (Some(a), _) => a.id[0] as usize + m.t.len(),
            (_, Some(r)) => {
                r.nodes.map_or(0, |n| n.len() / 26) + r.samples.map_or(0, |s| s.len() / 20)
            }
            _ => 1,
        },
        Err(_) => 0,
    }
}

fn bench(c: &mut Criterion) {
    let m = mix();
    let cases: [(&str, &[u8]); 4] = [
        ("get_peers_query", &m.get_peers),
        ("find_node_response_8_nodes", &m.find_node_resp),
        ("announce_peer_query", &m.announce),
        ("sample_infohashes_response_20", &m.samples_resp),
    ];
    for (name, pkt) in cases {
        // Both decoders must agree that the packet is valid.
        assert!(ours(pkt) > 0 && theirs(pkt) > 0, "{name}");
        let mut g = c.benchmark_group(format!("decode/{name}"));
        g.bench_function("dht-hunter", |b| b.iter(|| ours(black_box(pkt))));
        g.bench_function("serde_bencode", |b| b.iter(|| theirs(black_box(pkt))));
        g.finish();
    }
    for (name, pkt) in cases {
        let parsed: SMessage = match serde_bencode::from_bytes(pkt) {
            Ok(p) => p,
            Err(e) => panic!("{name}: {e}"),
        };
        let mut g = c.benchmark_group(format!("encode/{name}"));
        let mut buf = Vec::with_capacity(1500);
        g.bench_function("dht-hunter", |b| {
            b.iter(|| {
                buf.clear();
                encode_like(&mut buf, name);
                black_box(buf.len())
            })
        });
        g.bench_function("serde_bencode", |b| {
            b.iter(|| black_box(serde_bencode::to_bytes(black_box(&parsed)).map(|v| v.len())))
        });
        g.finish();
    }
}

/// Re-encodes the same message with our encoder (into a reused buffer).
fn encode_like(buf: &mut Vec<u8>, name: &str) {
    let h = Header {
        tid: b"ab",
        version: Some(b"LT\x02\x00"),
    };
    let id = Id([0x11; 20]);
    match name {
        "get_peers_query" => encode_query(
            buf,
            &h,
            &id,
            &Method::GetPeers {
                infohash: Id([0x22; 20]),
                noseed: false,
                scrape: false,
            },
            Want::default(),
            false,
        ),
        "announce_peer_query" => encode_query(
            buf,
            &h,
            &id,
            &Method::AnnouncePeer {
                infohash: Id([0x22; 20]),
                port: 6881,
                implied_port: true,
                token: b"\x01\x02\x03\x04\x05\x06\x07\x08",
                seed: Some(false),
            },
            Want::default(),
            false,
        ),
        _ => {
            let nodes: [NodeInfo; 8] = std::array::from_fn(|i| NodeInfo {
                id: Id([i as u8; 20]),
                addr: SocketAddr::from(([127, 0, 0, i as u8 + 1], 6881)),
            });
            let samples: [Id; 20] = std::array::from_fn(|i| Id([i as u8; 20]));
            let with_samples = name.starts_with("sample");
            encode_response(
                buf,
                &h,
                Some(SocketAddr::from(([127, 0, 0, 9], 4000))),
                &id,
                &ResponseBody {
                    nodes: &nodes,
                    samples: with_samples.then_some((&samples[..], 21600, 1000)),
                    ..Default::default()
                },
            );
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
        .sample_size(30);
    targets = bench
}
criterion_main!(benches);
