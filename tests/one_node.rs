//! One node to the outside: a 2-shard engine sharing one port and one id
//! (`bep42`) must answer like a single node whichever shard the kernel
//! hands a datagram to. A peer announces from one socket; queries from
//! many other sources (other IPs, other ports, so the kernel's 4-tuple hash
//! spreads them over both shards) must all see the announced peer in
//! get_peers `values`, the same `num` in sample_infohashes, and the
//! infohash among the samples. The same run with forwarding switched off
//! must disagree: that is what shows the check can fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use dht_hunter::config::{CrawlConfig, FileConfig};
use dht_hunter::engine::{self, EngineParts, Telemetry};
use dht_hunter::id::Id;
use dht_hunter::krpc::message::{encode_query, Header, Method, Want};
use dht_hunter::krpc::{decode, Body};
use dht_hunter::store::Store;

struct Answers {
    /// Per source: whether get_peers carried the announced peer.
    values: Vec<bool>,
    /// Per source: the `num` of sample_infohashes.
    nums: Vec<u32>,
    /// Per source: whether the samples held the infohash.
    sampled: Vec<bool>,
    /// Datagrams received per shard.
    per_shard_in: Vec<u64>,
}

fn ask(sock: &UdpSocket, to: SocketAddr, tid: &[u8], method: &Method<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut id = [0x33u8; 20];
    id[..2].copy_from_slice(tid);
    encode_query(
        &mut out,
        &Header { tid, version: None },
        &Id(id),
        method,
        Want::default(),
        false,
    );
    sock.send_to(&out, to).unwrap();
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, from) = sock.recv_from(&mut buf).expect("an answer");
        // The node also queries us (we are in its table now): skip those.
        let ours = from == to
            && decode(&buf[..n]).is_ok_and(|m| m.tid == tid && !matches!(m.body, Body::Query(_)));
        if ours {
            buf.truncate(n);
            return buf;
        }
    }
}

fn run(forward: bool) -> Answers {
    let dir = std::env::temp_dir().join(format!("dh-one-node-{}-{forward}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let db = format!("sqlite:{}", dir.join("db.sqlite").display());
    let cfg = CrawlConfig::resolve(FileConfig {
        ..FileConfig::loopback(
            2,
            vec![silent.local_addr().unwrap().to_string()],
            dir.join("state"),
            db.clone(),
        )
    })
    .unwrap();
    let store = Store::open(&db).unwrap();
    let telemetry = Arc::new(Telemetry::default());
    let mut parts = EngineParts::new(store.writer(), telemetry.clone());
    if !forward {
        parts = parts.with_tweak(Arc::new(|nc: &mut dht_hunter::dht::NodeConfig| {
            nc.forward_queries = false;
        }));
    }
    let eng = engine::start(&cfg, parts).unwrap();
    let node = eng.udp_addrs[0];
    let infohash = Id([0x5c; 20]);
    let get_peers = Method::GetPeers {
        infohash,
        noseed: false,
        scrape: false,
    };

    // The announcer, on its own address.
    let announcer = UdpSocket::bind("127.1.0.1:0").unwrap();
    announcer
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let r = ask(&announcer, node, b"g0", &get_peers);
    let m = decode(&r).unwrap();
    let Body::Response(resp) = m.body else {
        panic!("get_peers: {m:?}")
    };
    let token = resp.token.unwrap().to_vec();
    let r = ask(
        &announcer,
        node,
        b"a0",
        &Method::AnnouncePeer {
            infohash,
            port: 7777,
            implied_port: false,
            token: &token,
            seed: None,
        },
    );
    assert!(
        matches!(decode(&r).unwrap().body, Body::Response(_)),
        "announce accepted"
    );
    let peer: SocketAddr = "127.1.0.1:7777".parse().unwrap();
    // Let the sample offer cross the mesh.
    std::thread::sleep(Duration::from_millis(300));

    let mut a = Answers {
        values: Vec::new(),
        nums: Vec::new(),
        sampled: Vec::new(),
        per_shard_in: Vec::new(),
    };
    for i in 0..32u8 {
        let s = UdpSocket::bind((format!("127.1.1.{}", i + 1).as_str(), 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let r = ask(&s, node, &[b'g', i], &get_peers);
        let m = decode(&r).unwrap();
        let Body::Response(resp) = m.body else {
            panic!("get_peers: {m:?}")
        };
        a.values.push(resp.peers().any(|p| p == peer));
        let r = ask(
            &s,
            node,
            &[b's', i],
            &Method::SampleInfohashes {
                target: Id([i.wrapping_mul(37); 20]),
            },
        );
        let m = decode(&r).unwrap();
        let Body::Response(resp) = m.body else {
            panic!("sample_infohashes: {m:?}")
        };
        let s = resp.as_samples().unwrap();
        a.nums.push(s.num);
        a.sampled.push(s.samples().any(|x| x == infohash));
    }
    // Telemetry is published every tick.
    std::thread::sleep(Duration::from_millis(400));
    for i in 0..2 {
        let s = telemetry.shard(i).unwrap();
        a.per_shard_in
            .push(s.packets_in.load(std::sync::atomic::Ordering::Relaxed));
    }
    eng.shutdown_handle().trigger();
    eng.join().unwrap();
    store.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    a
}

#[test]
fn every_shard_answers_as_one_node() {
    let a = run(true);
    // The kernel spread the sources over both shards, so the test means
    // something.
    assert!(
        a.per_shard_in.iter().all(|n| *n > 0),
        "{:?}",
        a.per_shard_in
    );
    assert!(a.values.iter().all(|v| *v), "values: {:?}", a.values);
    assert!(a.sampled.iter().all(|v| *v), "samples: {:?}", a.sampled);
    let first = a.nums[0];
    assert!(first >= 1);
    assert!(a.nums.iter().all(|n| *n == first), "num: {:?}", a.nums);
}

#[test]
fn without_forwarding_the_shards_disagree() {
    let a = run(false);
    assert!(
        a.per_shard_in.iter().all(|n| *n > 0),
        "{:?}",
        a.per_shard_in
    );
    let agree = a.values.iter().all(|v| *v) && a.sampled.iter().all(|v| *v);
    assert!(!agree, "two shards answered alike without forwarding");
}
