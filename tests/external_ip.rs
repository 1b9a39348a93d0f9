//! A restart begins with the BEP 42 id the vote chose. A 2-shard engine on
//! loopback starts with a random id (its bind is a local address, as a
//! wildcard bind would be); its bootstrap nodes, twelve sockets in distinct
//! /24s of 127/8, answer every query with `ip` = 11.22.33.7 (only bytes:
//! nothing is ever sent there). The engine moves to a BEP 42 id for that
//! address on both shards and saves it; started again on the same state
//! directory, its very first queries carry that id.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dht_hunter::config::{CrawlConfig, FileConfig};
use dht_hunter::engine::{self, EngineParts, Telemetry};
use dht_hunter::id::{bep42_verify, Id};
use dht_hunter::krpc::message::{encode_response, Header, ResponseBody};
use dht_hunter::krpc::{decode, Body};
use dht_hunter::store::Store;

const EXTERNAL: &str = "11.22.33.7:6881";

struct Fakes {
    socks: Vec<UdpSocket>,
}

impl Fakes {
    fn new() -> Fakes {
        let socks = (0..12u8)
            .map(|i| {
                let s = UdpSocket::bind((format!("127.{}.0.1", 60 + i).as_str(), 0)).unwrap();
                s.set_nonblocking(true).unwrap();
                s
            })
            .collect();
        Fakes { socks }
    }

    fn addrs(&self) -> Vec<String> {
        self.socks
            .iter()
            .map(|s| s.local_addr().unwrap().to_string())
            .collect()
    }

    /// Answers queries until `done` says so (given each query's sending
    /// shard, from its tid, and sender id) or `limit` passes. Returns the
    /// queries seen, in order.
    fn serve(&self, limit: Duration, mut done: impl FnMut(u8, Id) -> bool) -> Vec<(u8, Id)> {
        let external: SocketAddr = EXTERNAL.parse().unwrap();
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 2048];
        while Instant::now() < deadline {
            let mut idle = true;
            for (i, s) in self.socks.iter().enumerate() {
                let Ok((n, from)) = s.recv_from(&mut buf) else {
                    continue;
                };
                idle = false;
                let Ok(m) = decode(&buf[..n]) else { continue };
                let Body::Query(q) = m.body else { continue };
                let shard = m.tid.first().copied().unwrap_or(u8::MAX);
                seen.push((shard, q.id));
                let mut out = Vec::new();
                encode_response(
                    &mut out,
                    &Header {
                        tid: m.tid,
                        version: None,
                    },
                    Some(external),
                    &Id([i as u8 + 1; 20]),
                    &ResponseBody::default(),
                );
                s.send_to(&out, from).unwrap();
                if done(shard, q.id) {
                    return seen;
                }
            }
            if idle {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        seen
    }
}

fn saved_ids(state: &Path) -> Vec<Id> {
    std::fs::read_to_string(state.join("identities"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' ').and_then(|(_, h)| h.trim().parse().ok()))
        .collect()
}

#[test]
fn a_restart_begins_with_the_voted_bep42_id() {
    let dir = std::env::temp_dir().join(format!("dh-external-ip-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state");
    let db = format!("sqlite:{}", dir.join("db.sqlite").display());
    let fakes = Fakes::new();
    let cfg = CrawlConfig::resolve(FileConfig::loopback(
        2,
        fakes.addrs(),
        state.clone(),
        db.clone(),
    ))
    .unwrap();
    let ext: IpAddr = EXTERNAL.parse::<SocketAddr>().unwrap().ip();
    let store = Store::open(&db).unwrap();
    let start = |store: &Store| {
        let parts = EngineParts::new(store.writer(), Arc::new(Telemetry::default()));
        engine::start(&cfg, parts).unwrap()
    };

    // First run: random id, then the vote, then both shards on a BEP 42 id.
    let eng = start(&store);
    let first = saved_ids(&state);
    assert_eq!(first.len(), 1);
    assert!(!bep42_verify(&first[0], ext), "starts with a random id");
    let mut moved: HashMap<u8, Id> = HashMap::new();
    let seen = fakes.serve(Duration::from_secs(20), |shard, id| {
        if bep42_verify(&id, ext) {
            moved.insert(shard, id);
        }
        moved.len() == 2
    });
    eng.shutdown_handle().trigger();
    eng.join().unwrap();
    assert_eq!(
        moved.len(),
        2,
        "both shards moved: {moved:?}; seen {seen:?}"
    );
    let new = moved[&0];
    assert_eq!(moved[&1], new, "one id for both shards");
    assert!(
        seen.iter().any(|(_, id)| *id == first[0]),
        "the old id was used first"
    );
    assert_eq!(saved_ids(&state), vec![new], "saved over the bind's line");

    // Second run: the saved id from the first query on; the vote agrees,
    // so it stays.
    let eng = start(&store);
    let again = fakes.serve(Duration::from_secs(2), |_, _| false);
    eng.shutdown_handle().trigger();
    eng.join().unwrap();
    assert!(
        again.len() >= 24,
        "both shards bootstrapped: {}",
        again.len()
    );
    assert!(again.iter().all(|(_, id)| *id == new), "{again:?}");
    assert_eq!(saved_ids(&state), vec![new]);
    store.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
