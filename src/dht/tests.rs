//! Protocol cases of the reference (section 5, cases 6–24 as they apply to
//! a node), each asserting the exact outcome.
//!
//! Unit tests of the node in a simulated network; long because each behaviour
//! is its own test.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::krpc::message::{encode_query, encode_response, Header, ResponseBody};
use crate::krpc::tid::Tid;
use crate::krpc::{decode, Body, Message, Method, Want};

const ME: Id = Id([0xaa; 20]);

fn me() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 6881))
}

fn peer(i: u8) -> SocketAddr {
    SocketAddr::from(([127, 1, i, 1], 7000 + u16::from(i)))
}

fn cfg() -> NodeConfig {
    let mut c = NodeConfig::new(0, 1, vec![Identity { addr: me(), id: ME }], 1, [3; 32]);
    c.allow_private = true;
    c.harvest.stored_capacity = 1 << 16;
    c.limiter_slots = 1024;
    c
}

fn quiet_cfg() -> NodeConfig {
    let mut c = cfg();
    c.crawl = false;
    c
}

fn query(tid: &[u8], id: Id, method: Method<'_>, want: Want, ro: bool) -> Vec<u8> {
    let mut out = Vec::new();
    encode_query(
        &mut out,
        &Header { tid, version: None },
        &id,
        &method,
        want,
        ro,
    );
    out
}

fn ping(tid: &[u8], id: Id) -> Vec<u8> {
    query(tid, id, Method::Ping, Want::default(), false)
}

fn out(n: &mut Node) -> Vec<Transmit> {
    std::iter::from_fn(|| n.poll_transmit()).collect()
}

fn actions(n: &mut Node) -> Vec<Action> {
    std::iter::from_fn(|| n.poll_action()).collect()
}

fn only_reply(n: &mut Node, to: SocketAddr) -> Vec<u8> {
    let mut t = out(n);
    assert_eq!(t.len(), 1, "expected exactly one datagram");
    let t = t.remove(0);
    assert_eq!(t.to, to);
    t.bytes
}

fn method_of<'a>(m: &Message<'a>) -> Option<Method<'a>> {
    match m.body {
        Body::Query(q) => Some(q.method),
        _ => None,
    }
}

fn response(tid: &[u8], id: Id, body: &ResponseBody<'_>) -> Vec<u8> {
    let mut o = Vec::new();
    encode_response(&mut o, &Header { tid, version: None }, None, &id, body);
    o
}

fn get_token(n: &mut Node, from: SocketAddr, infohash: Id, now: Instant) -> Vec<u8> {
    let q = query(
        b"gp",
        Id([5; 20]),
        Method::GetPeers {
            infohash,
            noseed: false,
            scrape: false,
        },
        Want::default(),
        true,
    );
    n.handle_datagram(0, from, &q, now);
    let r = only_reply(n, from);
    let m = decode(&r).unwrap();
    let Body::Response(r) = m.body else {
        panic!("not a response")
    };
    r.token.unwrap().to_vec()
}

fn announce(token: &[u8], infohash: Id, port: u16, implied: bool) -> Vec<u8> {
    query(
        b"an",
        Id([5; 20]),
        Method::AnnouncePeer {
            infohash,
            port,
            implied_port: implied,
            token,
            seed: None,
        },
        Want::default(),
        true,
    )
}

fn error_code(bytes: &[u8]) -> Option<i64> {
    match decode(bytes).ok()?.body {
        Body::Error(e) => e.code,
        _ => None,
    }
}

#[test]
fn case6_7_garbage_and_bad_y_get_no_reply() {
    let t0 = Instant::now();
    let mut n = Node::new(quiet_cfg(), t0);
    let from = peer(1);
    let packets: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae".to_vec(),
        b"l1:t2:aa1:y1:q1:q4:pinge".to_vec(),
        b"i1e-------------------------".to_vec(),
        vec![b'd'; 5000],
        b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q4:ping1:t2:xxe".to_vec(),
        b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q4:ping1:t2:xx1:y2:qqe".to_vec(),
        b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q4:ping1:t2:xx1:yi1ee".to_vec(),
    ];
    for p in &packets {
        n.handle_datagram(0, from, p, t0);
        assert!(out(&mut n).is_empty(), "{:?}", String::from_utf8_lossy(p));
    }
    assert_eq!(n.stats().dropped.garbage, packets.len() as u64);
    // A well-formed ping from port 0 is dropped as martian.
    let mut zero = from;
    zero.set_port(0);
    n.handle_datagram(0, zero, &ping(b"aa", Id([1; 20])), t0);
    assert!(out(&mut n).is_empty());
    assert_eq!(n.stats().dropped.martian, 1);
    // Zero id and our own id (a reflector) are dropped.
    n.handle_datagram(0, from, &ping(b"aa", Id::ZERO), t0);
    n.handle_datagram(0, from, &ping(b"aa", ME), t0);
    assert!(out(&mut n).is_empty());
    assert_eq!(n.stats().dropped.zero_id, 1);
    assert_eq!(n.stats().dropped.own_id, 1);
}

#[test]
fn private_sources_and_destinations_refused_unless_allowed() {
    let t0 = Instant::now();
    let mut c = quiet_cfg();
    c.allow_private = false;
    c.identities = vec![Identity {
        addr: SocketAddr::from(([1, 2, 3, 4], 6881)),
        id: ME,
    }];
    c.bootstrap = vec![
        SocketAddr::from(([10, 0, 0, 1], 6881)),
        SocketAddr::from(([192, 168, 1, 1], 6881)),
        SocketAddr::from(([8, 8, 8, 8], 6881)),
    ];
    let mut n = Node::new(c, t0);
    n.handle_datagram(0, peer(1), &ping(b"aa", Id([1; 20])), t0);
    assert!(out(&mut n).is_empty());
    n.handle_timeout(t0);
    let t = out(&mut n);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].to, SocketAddr::from(([8, 8, 8, 8], 6881)));
}

#[test]
fn case8_tid_echoed_and_ip_in_every_response() {
    let t0 = Instant::now();
    let mut n = Node::new(quiet_cfg(), t0);
    for (i, len) in [0usize, 1, 2, 4, 8, 255].into_iter().enumerate() {
        let tid: Vec<u8> = (0..len).map(|x| (x * 7 + 1) as u8).collect();
        let from = peer(i as u8 + 1);
        n.handle_datagram(0, from, &ping(&tid, Id([1; 20])), t0);
        let r = only_reply(&mut n, from);
        let m = decode(&r).unwrap();
        assert_eq!(m.tid, &tid[..]);
        assert_eq!(m.ip, Some(from));
        let Body::Response(r) = m.body else { panic!() };
        assert_eq!(r.id, ME);
    }
    assert_eq!(n.stats().answered.ping, 6);
}

#[test]
fn unknown_tids_and_stray_errors_get_no_reply() {
    let t0 = Instant::now();
    let mut n = Node::new(quiet_cfg(), t0);
    let tid = Tid {
        shard: 0,
        identity: 0,
        slot: 5,
    }
    .to_bytes();
    for t in [&b"xx"[..], &tid[..], b"toolongtid"] {
        n.handle_datagram(
            0,
            peer(1),
            &response(t, Id([1; 20]), &ResponseBody::default()),
            t0,
        );
        let mut e = Vec::new();
        crate::krpc::message::encode_error(
            &mut e,
            &Header {
                tid: t,
                version: None,
            },
            None,
            crate::krpc::ErrorCode::Generic,
            "x",
        );
        n.handle_datagram(0, peer(1), &e, t0);
    }
    assert!(out(&mut n).is_empty());
    assert!(actions(&mut n).is_empty());
    assert_eq!(n.stats().dropped.unknown_tid, 6);
}

#[test]
fn case10_11_bad_arguments_and_unknown_methods() {
    let t0 = Instant::now();
    let mut n = Node::new(quiet_cfg(), t0);
    let from = peer(1);
    n.add_known_node(
        NodeInfo {
            id: Id([3; 20]),
            addr: peer(3),
        },
        t0,
    );
    // id of 19 bytes.
    n.handle_datagram(
        0,
        from,
        b"d1:ad2:id19:aaaaaaaaaaaaaaaaaaae1:q4:ping1:t2:xx1:y1:qe",
        t0,
    );
    assert_eq!(error_code(&only_reply(&mut n, from)), Some(203));
    // find_node without target.
    n.handle_datagram(
        0,
        from,
        b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q9:find_node1:t2:xx1:y1:qe",
        t0,
    );
    let r = only_reply(&mut n, from);
    assert_eq!(error_code(&r), Some(203));
    assert_eq!(decode(&r).unwrap().tid, b"xx");
    // Unknown method with a target: answered like find_node.
    let q = query(
        b"uk",
        Id([1; 20]),
        Method::Unknown {
            name: b"vote",
            target: Some(Id([3; 20])),
        },
        Want::default(),
        false,
    );
    n.handle_datagram(0, from, &q, t0);
    let r = only_reply(&mut n, from);
    let Body::Response(r) = decode(&r).unwrap().body else {
        panic!()
    };
    assert_eq!(r.nodes.iter().next().map(|x| x.id), Some(Id([3; 20])));
    // Unknown method without one: 204.
    let q = query(
        b"uk",
        Id([1; 20]),
        Method::Unknown {
            name: b"vote",
            target: None,
        },
        Want::default(),
        false,
    );
    n.handle_datagram(0, from, &q, t0);
    assert_eq!(error_code(&only_reply(&mut n, from)), Some(204));
}

#[test]
fn want_selects_families() {
    let t0 = Instant::now();
    let mut n = Node::new(quiet_cfg(), t0);
    let v6: SocketAddr = "[fd00::5]:6881".parse().unwrap();
    n.add_known_node(
        NodeInfo {
            id: Id([3; 20]),
            addr: peer(3),
        },
        t0,
    );
    n.add_known_node(
        NodeInfo {
            id: Id([4; 20]),
            addr: v6,
        },
        t0,
    );
    let ask = |n: &mut Node, from: SocketAddr, want: Want| {
        let q = query(
            b"fn",
            Id([1; 20]),
            Method::FindNode {
                target: Id([3; 20]),
            },
            want,
            false,
        );
        n.handle_datagram(0, from, &q, t0);
        let r = only_reply(n, from);
        let Body::Response(r) = decode(&r).unwrap().body else {
            panic!()
        };
        (r.nodes.len(), r.nodes6.len())
    };
    assert_eq!(ask(&mut n, peer(1), Want::default()), (1, 0));
    let from6: SocketAddr = "[fd00::9]:6881".parse().unwrap();
    assert_eq!(ask(&mut n, from6, Want::default()), (0, 1));
    assert_eq!(ask(&mut n, peer(2), Want { n4: true, n6: true }), (1, 1));
    assert_eq!(
        ask(
            &mut n,
            peer(4),
            Want {
                n4: false,
                n6: true
            }
        ),
        (0, 1)
    );
}

#[test]
fn passive_get_peers_harvested_once() {
    let t0 = Instant::now();
    let mut n = Node::new(cfg(), t0);
    let infohash = Id([0x42; 20]);
    let tok = get_token(&mut n, peer(1), infohash, t0);
    assert_eq!(tok.len(), 8);
    // An empty table: the lookup ends at once, with no peers; nothing to
    // fetch, so the infohash waits in the harvester.
    assert_eq!(
        actions(&mut n),
        vec![Action::Discovered {
            infohash,
            source: Source::GetPeers,
        }]
    );
    get_token(&mut n, peer(2), infohash, t0);
    assert!(actions(&mut n).is_empty());
    assert_eq!(n.stats().infohashes.get_peers, 1);
    let h = n.harvest_stats();
    assert_eq!((h.discovered, h.in_progress, h.waiting), (1, 1, 1));
}

#[test]
fn announce_stores_and_harvests_with_implied_port() {
    let t0 = Instant::now();
    let mut n = Node::new(cfg(), t0);
    let infohash = Id([0x43; 20]);
    let from = peer(1);
    let tok = get_token(&mut n, from, infohash, t0);
    actions(&mut n);
    n.handle_datagram(0, from, &announce(&tok, infohash, 0, true), t0);
    let r = only_reply(&mut n, from);
    assert!(matches!(decode(&r).unwrap().body, Body::Response(_)));
    assert_eq!(n.stored_peers(&infohash), vec![from]);
    // Seen first in a get_peers with no peer to be found: the announce's
    // peer wakes it and it is fetched at once (the bug that lost torrents
    // whose clients search before they announce).
    assert_eq!(
        actions(&mut n),
        vec![Action::Fetch {
            infohash,
            source: Source::GetPeers,
            peers: vec![from]
        }]
    );
    assert_eq!(n.harvest_stats().woken_by_peer, 1);
    // A fresh infohash announced directly is emitted with its peer.
    let ih2 = Id([0x44; 20]);
    let from2 = peer(2);
    let tok2 = get_token(&mut n, from2, ih2, t0);
    let _ = actions(&mut n);
    let mut n2 = Node::new(cfg(), t0);
    n2.handle_datagram(0, from2, &announce(&tok2, ih2, 9999, false), t0);
    let expect = SocketAddr::new(from2.ip(), 9999);
    assert_eq!(n2.stored_peers(&ih2), vec![expect]);
    assert_eq!(
        actions(&mut n2),
        vec![
            Action::Discovered {
                infohash: ih2,
                source: Source::Announce,
            },
            Action::Fetch {
                infohash: ih2,
                source: Source::Announce,
                peers: vec![expect]
            }
        ]
    );
    assert_eq!(n2.stats().infohashes.announce, 1);
}

#[test]
fn case12_bad_announces_get_203_and_store_nothing() {
    let t0 = Instant::now();
    let mut n = Node::new(cfg(), t0);
    let infohash = Id([0x45; 20]);
    let from = peer(1);
    let tok = get_token(&mut n, from, infohash, t0);
    let foreign = get_token(&mut n, peer(2), infohash, t0);
    actions(&mut n);
    let mut cases: Vec<(Vec<u8>, Instant)> = vec![
        (announce(b"garbage!", infohash, 7000, false), t0),
        (announce(&foreign, infohash, 7000, false), t0),
        (announce(&tok, Id([0x46; 20]), 7000, false), t0),
        (announce(&tok, infohash, 1, false), t0),
    ];
    // Ports out of range and implied_port with port 0 on a port-0 source
    // never get that far: -1 and 70000 are rejected by the decoder.
    for p in ["i-1e", "i70000e"] {
        let s = format!(
            "d1:ad2:id20:aaaaaaaaaaaaaaaaaaaa9:info_hash20:EEEEEEEEEEEEEEEEEEEE4:port{p}5:token8:{}e1:q13:announce_peer1:t2:an1:y1:qe",
            "x".repeat(8)
        );
        cases.push((s.into_bytes(), t0));
    }
    // Expired: two rotations later.
    cases.push((
        announce(&tok, infohash, 7000, false),
        t0 + 2 * crate::krpc::token::ROTATION,
    ));
    for (i, (q, at)) in cases.into_iter().enumerate() {
        n.handle_datagram(0, from, &q, at);
        let t = out(&mut n);
        assert_eq!(t.len(), 1, "case {i}: {:?}", n.stats().dropped);
        assert_eq!(error_code(&t[0].bytes), Some(203), "case {i}");
    }
    assert!(n.stored_peers(&infohash).is_empty());
    assert_eq!(n.stats().torrents, 0);
    assert!(actions(&mut n).is_empty());
}

#[test]
fn case24_token_survives_one_rotation_fails_after_two() {
    let t0 = Instant::now();
    let rot = crate::krpc::token::ROTATION;
    let infohash = Id([0x47; 20]);
    let from = peer(1);
    // Issued one second before the first rotation: it survives that one
    // (and the epoch after it) and dies at the second.
    for (later, ok) in [
        (Duration::ZERO, true),
        (Duration::from_secs(1), true),
        (rot, true),
        (rot + Duration::from_secs(1), false),
        (rot * 2, false),
    ] {
        let mut n = Node::new(cfg(), t0);
        // Token issued at the very end of the first epoch.
        let issued = t0 + rot - Duration::from_secs(1);
        let tok = get_token(&mut n, from, infohash, issued);
        n.handle_datagram(
            0,
            from,
            &announce(&tok, infohash, 7000, false),
            issued + later,
        );
        let r = only_reply(&mut n, from);
        assert_eq!(error_code(&r).is_none(), ok, "{later:?}");
        assert_eq!(n.stored_peers(&infohash).len(), usize::from(ok));
    }
}

#[test]
fn sample_infohashes_served_with_interval_and_num() {
    let t0 = Instant::now();
    let mut n = Node::new(cfg(), t0);
    for i in 0..25u8 {
        let from = peer(i + 1);
        let infohash = Id([i + 100; 20]);
        let tok = get_token(&mut n, from, infohash, t0);
        n.handle_datagram(0, from, &announce(&tok, infohash, 7000, false), t0);
        out(&mut n);
    }
    let q = query(
        b"si",
        Id([1; 20]),
        Method::SampleInfohashes {
            target: Id([9; 20]),
        },
        Want::default(),
        false,
    );
    let from = peer(200);
    n.handle_datagram(0, from, &q, t0);
    let r = only_reply(&mut n, from);
    let Body::Response(r) = decode(&r).unwrap().body else {
        panic!()
    };
    let s = r.as_samples().unwrap();
    assert_eq!(s.len(), 20);
    assert_eq!(s.num, 25);
    assert_eq!(s.interval, 21_600);
    assert!(s.samples().all(|x| x.0[0] >= 100 && x.0[0] < 125));
    assert_eq!(n.stats().answered.sample_infohashes, 1);
}

/// Makes `n` send one sample_infohashes to `holder` and returns its tid.
fn provoke_sample(n: &mut Node, holder: NodeInfo, now: Instant) -> Vec<u8> {
    n.add_known_node(holder, now);
    n.handle_timeout(now);
    let t = out(n);
    let q = t
        .iter()
        .find(|t| t.to == holder.addr)
        .expect("a query to the holder");
    let m = decode(&q.bytes).unwrap();
    assert!(matches!(
        method_of(&m),
        Some(Method::SampleInfohashes { .. })
    ));
    m.tid.to_vec()
}

#[test]
fn all_twenty_samples_count_and_get_peers_goes_to_the_holder() {
    let t0 = Instant::now();
    let mut c = cfg();
    c.query_timeout = Duration::from_secs(60);
    let mut n = Node::new(c, t0);
    let holder = NodeInfo {
        id: Id([0x31; 20]),
        addr: peer(9),
    };
    let tid = provoke_sample(&mut n, holder, t0);
    let samples: Vec<Id> = (0..20u8).map(|i| Id([i + 1; 20])).collect();
    let r = response(
        &tid,
        holder.id,
        &ResponseBody {
            samples: Some((&samples, 60, 20)),
            ..Default::default()
        },
    );
    n.handle_datagram(0, holder.addr, &r, t0);
    assert_eq!(n.stats().samples_received, 20);
    assert_eq!(n.stats().infohashes.sample, 20);
    // Exploitation: get_peers for each, to the holder (per-IP permitting:
    // its burst now, the rest as its rate allows).
    let mut asked = Vec::new();
    let mut at = t0;
    for _ in 0..100 {
        for t in out(&mut n) {
            assert_eq!(t.to, holder.addr);
            let m = decode(&t.bytes).unwrap();
            if let Some(Method::GetPeers { infohash, .. }) = method_of(&m) {
                asked.push((infohash, m.tid.to_vec()));
            }
        }
        at += Duration::from_millis(100);
        n.handle_timeout(at);
    }
    let mut ids: Vec<Id> = asked.iter().map(|a| a.0).collect();
    ids.sort();
    assert_eq!(ids, samples);
    // The holder answers one with values (port 0 and 1 peers dropped):
    // emitted with the good peer only.
    let (infohash, tid) = &asked[0];
    let peers = [
        SocketAddr::from(([127, 9, 9, 9], 0)),
        SocketAddr::from(([127, 9, 9, 9], 1)),
        SocketAddr::from(([127, 9, 9, 9], 6000)),
    ];
    let r = response(
        tid,
        holder.id,
        &ResponseBody {
            values: &peers,
            token: Some(b"tok"),
            ..Default::default()
        },
    );
    n.handle_datagram(0, holder.addr, &r, at);
    let acts: Vec<Action> = actions(&mut n)
        .into_iter()
        .filter(|a| !matches!(a, Action::Discovered { .. }))
        .collect();
    assert_eq!(
        acts,
        vec![Action::Fetch {
            infohash: *infohash,
            source: Source::Sample,
            peers: vec![peers[2]]
        }]
    );
    // Another answers without values: a lookup starts (the holder is the
    // only node known, already asked... so it ends empty-handed).
    let (ih2, tid2) = &asked[1];
    let r = response(tid2, holder.id, &ResponseBody::default());
    n.handle_datagram(0, holder.addr, &r, at);
    n.handle_timeout(at + Duration::from_secs(61));
    let acts = actions(&mut n);
    // No peers anywhere: nothing to fetch; it waits for a retry or a peer.
    assert!(!acts
        .iter()
        .any(|a| matches!(a, Action::Fetch { infohash, .. } if infohash == ih2)));
    assert!(n.harvest_stats().searches_empty >= 1);
    assert!(n.stats().lookups >= 1);
}

#[test]
fn case13_reply_from_wrong_port_not_matched() {
    let t0 = Instant::now();
    let mut n = Node::new(cfg(), t0);
    let holder = NodeInfo {
        id: Id([0x31; 20]),
        addr: peer(9),
    };
    let tid = provoke_sample(&mut n, holder, t0);
    let r = response(
        &tid,
        holder.id,
        &ResponseBody {
            samples: Some((&[Id([1; 20])], 60, 1)),
            ..Default::default()
        },
    );
    let mut wrong = holder.addr;
    wrong.set_port(holder.addr.port() + 1);
    n.handle_datagram(0, wrong, &r, t0);
    assert_eq!(n.stats().dropped.wrong_endpoint, 1);
    assert_eq!(n.stats().samples_received, 0);
    assert!(out(&mut n).is_empty());
    // Same IP, right port: matched.
    n.handle_datagram(0, holder.addr, &r, t0);
    assert_eq!(n.stats().samples_received, 1);
    assert_eq!(n.stats().replies, 1);
}

#[test]
fn case19_id_change_on_confirmed_endpoint_evicts_and_repings() {
    let t0 = Instant::now();
    let mut n = Node::new(cfg(), t0);
    let a = NodeInfo {
        id: Id([0x31; 20]),
        addr: peer(9),
    };
    let neighbours: Vec<NodeInfo> = (0..4u8)
        .map(|i| {
            let mut id = Id([0x31; 20]);
            id.0[19] = i;
            NodeInfo {
                id,
                addr: peer(20 + i),
            }
        })
        .collect();
    for nb in &neighbours {
        n.add_known_node(*nb, t0);
    }
    let tid = provoke_sample(&mut n, a, t0);
    assert_eq!(n.table_entry(&a.id), Some((a.addr, true)));

    // Spoofed, unsolicited: a query and a stray response from A's endpoint
    // with another id change nothing.
    let other = Id([0x99; 20]);
    n.handle_datagram(0, a.addr, &ping(b"sp", other), t0);
    n.handle_datagram(
        0,
        a.addr,
        &response(b"zz", other, &ResponseBody::default()),
        t0,
    );
    let stray = Tid {
        shard: 0,
        identity: 0,
        slot: 999,
    }
    .to_bytes();
    n.handle_datagram(
        0,
        a.addr,
        &response(&stray, other, &ResponseBody::default()),
        t0,
    );
    // The same tid from another port with the new id: not matched either.
    let mut wrong = a.addr;
    wrong.set_port(1234);
    n.handle_datagram(
        0,
        wrong,
        &response(&tid, other, &ResponseBody::default()),
        t0,
    );
    assert_eq!(n.table_entry(&a.id), Some((a.addr, true)));
    assert_eq!(n.table_entry(&other), None);
    assert_eq!(n.stats().evicted_id_change, 0);
    out(&mut n);

    // The real reply to our query, with a new id: evicted.
    n.handle_datagram(
        0,
        a.addr,
        &response(&tid, other, &ResponseBody::default()),
        t0,
    );
    assert_eq!(n.table_entry(&a.id), None);
    assert_eq!(n.table_entry(&other), None);
    assert_eq!(n.stats().evicted_id_change, 1);
    // And its neighbourhood is re-pinged.
    n.handle_timeout(t0 + Duration::from_millis(100));
    let pinged: Vec<SocketAddr> = out(&mut n)
        .into_iter()
        .filter(|t| matches!(method_of(&decode(&t.bytes).unwrap()), Some(Method::Ping)))
        .map(|t| t.to)
        .collect();
    for nb in &neighbours {
        assert!(pinged.contains(&nb.addr), "{nb:?} not re-pinged");
    }
}

#[test]
fn case20_read_only_senders_answered_not_inserted() {
    let t0 = Instant::now();
    let mut n = Node::new(quiet_cfg(), t0);
    let ro = query(b"ro", Id([0x51; 20]), Method::Ping, Want::default(), true);
    n.handle_datagram(0, peer(1), &ro, t0);
    only_reply(&mut n, peer(1));
    assert_eq!(n.table_entry(&Id([0x51; 20])), None);
    let rw = query(b"rw", Id([0x52; 20]), Method::Ping, Want::default(), false);
    n.handle_datagram(0, peer(2), &rw, t0);
    only_reply(&mut n, peer(2));
    // A candidate, not confirmed until it answers us.
    assert_eq!(n.table_entry(&Id([0x52; 20])), Some((peer(2), false)));
    assert_eq!(n.known_nodes().count(), 0);
}

#[test]
fn our_queries_carry_ro_when_read_only() {
    let t0 = Instant::now();
    let mut c = quiet_cfg();
    c.read_only = true;
    c.bootstrap = vec![peer(1)];
    let mut n = Node::new(c, t0);
    n.handle_timeout(t0);
    let t = out(&mut n);
    assert_eq!(t.len(), 1);
    assert!(decode(&t[0].bytes).unwrap().read_only);
}

#[test]
fn case21_flood_from_one_ip_throttled_others_pass() {
    let t0 = Instant::now();
    let mut c = quiet_cfg();
    c.inbound_per_ip_pps = 5;
    c.inbound_per_ip_burst = 50;
    c.per_ip_pps = 1000;
    c.per_ip_burst = 1000;
    let mut n = Node::new(c, t0);
    let flooder = peer(1);
    let mut flood_answered = 0;
    let mut others_answered = 0;
    for ms in 0..10_000u64 {
        let now = t0 + Duration::from_millis(ms);
        n.handle_datagram(0, flooder, &ping(b"fl", Id([1; 20])), now);
        flood_answered += out(&mut n).len();
        if ms % 100 == 0 {
            let other = peer(2 + (ms / 100 % 50) as u8);
            n.handle_datagram(0, other, &ping(b"ok", Id([2; 20])), now);
            others_answered += out(&mut n).len();
        }
    }
    // 50 burst + 5/s for 10 s.
    assert!((99..=101).contains(&flood_answered), "{flood_answered}");
    assert_eq!(others_answered, 100);
    assert_eq!(n.stats().dropped.per_ip_in, 10_000 - flood_answered as u64);
}

#[test]
fn case21_global_budget_held_within_5_percent() {
    let t0 = Instant::now();
    let mut c = quiet_cfg();
    c.max_pps = 100;
    c.max_bps = u64::MAX;
    c.per_ip_pps = 1000;
    c.per_ip_burst = 1000;
    let mut n = Node::new(c, t0);
    let secs = 40u64;
    let mut received = 0u64;
    let mut sent = 0u64;
    // 300 queries/s from 3000 different IPs.
    for i in 0..(secs * 300) {
        let now = t0 + Duration::from_micros(i * 1_000_000 / 300);
        let from = SocketAddr::from(([127, 2, (i / 250 % 250) as u8, (i % 250) as u8 + 1], 6881));
        n.handle_datagram(0, from, &ping(b"gb", Id([1; 20])), now);
        received += 1;
        sent += out(&mut n).len() as u64;
    }
    let limit = 100 * secs;
    let err = (sent as f64 - limit as f64).abs() / limit as f64;
    assert!(err <= 0.05, "sent {sent} for a budget of {limit}");
    let s = n.stats();
    assert_eq!(s.answered.ping, sent);
    assert_eq!(s.packets_out, sent);
    assert_eq!(s.dropped.budget + sent, received);
}

#[test]
fn replies_route_home_by_tid_and_harvests_go_to_the_owner() {
    let t0 = Instant::now();
    let mk = |s: u8| {
        let mut c = cfg();
        c.shard = s;
        c.nr_shards = 2;
        Node::new(c, t0)
    };
    let (mut s0, mut s1) = (mk(0), mk(1));
    // Shard 1 samples a node in its slice.
    let mut id = Id([0x91; 20]);
    id.0[0] = 0xc0;
    let holder = NodeInfo { id, addr: peer(9) };
    let tid = provoke_sample(&mut s1, holder, t0);
    assert_eq!(Tid::from_bytes(&tid).unwrap().shard, 1);
    // Its reply lands on shard 0: forwarded, not processed there.
    let mut low = Id([0x05; 20]);
    low.0[0] = 0x10; // owned by shard 0
    let mut high = Id([0x06; 20]);
    high.0[0] = 0xd0; // owned by shard 1
    let r = response(
        &tid,
        holder.id,
        &ResponseBody {
            samples: Some((&[low, high], 60, 2)),
            ..Default::default()
        },
    );
    s0.handle_datagram(0, holder.addr, &r, t0);
    assert!(out(&mut s0).is_empty());
    let mut acts = actions(&mut s0);
    assert_eq!(acts.len(), 1);
    let Action::ToShard { shard: 1, msg } = acts.remove(0) else {
        panic!("not forwarded to shard 1")
    };
    s1.handle_shard_msg(msg, t0);
    assert_eq!(s1.stats().samples_received, 2);
    assert_eq!(s1.stats().replies, 1);
    // The sample owned by shard 0 goes there with its holder...
    let acts = actions(&mut s1);
    let sampled: Vec<_> = acts
        .into_iter()
        .filter_map(|a| match a {
            Action::ToShard { shard: 0, msg } => Some(msg),
            _ => None,
        })
        .collect();
    assert_eq!(
        sampled,
        vec![ShardMsg::Sampled {
            infohash: low,
            holder
        }]
    );
    for m in sampled {
        s0.handle_shard_msg(m, t0);
    }
    // ... and shard 0 asks the holder for its peers.
    let t = out(&mut s0);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].to, holder.addr);
    assert!(matches!(
        method_of(&decode(&t[0].bytes).unwrap()),
        Some(Method::GetPeers { infohash, .. }) if infohash == low
    ));
    assert_eq!(s0.stats().infohashes.sample, 1);
    assert_eq!(s1.stats().infohashes.sample, 1);
    actions(&mut s0);

    // A passive get_peers for shard 1's key on shard 0: sent to shard 1,
    // which emits it; shard 0 never does.
    let mut infohash = Id([0x77; 20]);
    infohash.0[0] = 0xe0;
    get_token(&mut s0, peer(3), infohash, t0);
    let acts = actions(&mut s0);
    assert_eq!(
        acts,
        vec![Action::ToShard {
            shard: 1,
            msg: ShardMsg::Harvested {
                infohash,
                source: Source::GetPeers,
                peers: vec![]
            }
        }]
    );
    for a in acts {
        if let Action::ToShard { msg, .. } = a {
            s1.handle_shard_msg(msg.clone(), t0);
            s1.handle_shard_msg(msg, t0); // a duplicate changes nothing
        }
    }
    s1.handle_timeout(t0 + Duration::from_secs(10));
    let discovered: Vec<_> = actions(&mut s1)
        .into_iter()
        .filter(|a| matches!(a, Action::Discovered { infohash: seen, .. } if *seen == infohash))
        .collect();
    assert_eq!(discovered.len(), 1);
    // Each shard: its own sample; shard 1 also this get_peers, once.
    assert_eq!(s1.harvest_stats().discovered, 2);
    assert_eq!(s0.harvest_stats().discovered, 1);
}

#[test]
fn exploitation_goes_before_exploration_when_budget_is_short() {
    let t0 = Instant::now();
    let mut c = cfg();
    c.max_pps = 20;
    c.budget_window = Duration::from_secs(1);
    c.per_ip_pps = 1000;
    c.per_ip_burst = 1000;
    let mut n = Node::new(c, t0);
    let holder = NodeInfo {
        id: Id([0x31; 20]),
        addr: peer(9),
    };
    let tid = provoke_sample(&mut n, holder, t0);
    // Plenty of other nodes to explore.
    for i in 0..200u8 {
        let mut id = Id([i; 20]);
        id.0[1] = 0xee;
        n.add_known_node(
            NodeInfo {
                id,
                addr: SocketAddr::from(([127, 3, i, 1], 6881)),
            },
            t0,
        );
    }
    let samples: Vec<Id> = (0..20u8).map(|i| Id([i + 1; 20])).collect();
    let r = response(
        &tid,
        holder.id,
        &ResponseBody {
            samples: Some((&samples, 60, 20)),
            ..Default::default()
        },
    );
    n.handle_datagram(0, holder.addr, &r, t0);
    // Exploitation first: by the first tick all 20 get_peers are out and
    // nothing has been explored, though 200 nodes wait to be sampled.
    let count = |n: &mut Node| {
        let (mut exploit, mut explore) = (0, 0);
        for t in out(n) {
            match method_of(&decode(&t.bytes).unwrap()) {
                Some(Method::GetPeers { .. }) => exploit += 1,
                _ => explore += 1,
            }
        }
        (exploit, explore)
    };
    let (mut exploit, mut explore) = count(&mut n);
    n.handle_timeout(t0 + Duration::from_millis(100));
    let (a, b) = count(&mut n);
    exploit += a;
    explore += b;
    assert_eq!((exploit, explore), (20, 0));
    // Later, exploration gets what the budget has left above its reserve.
    for step in 2..=20u64 {
        n.handle_timeout(t0 + Duration::from_millis(step * 100));
        let (a, b) = count(&mut n);
        exploit += a;
        explore += b;
    }
    assert_eq!(exploit, 20);
    assert!((1..=30).contains(&explore), "{explore}");
}

#[test]
fn known_nodes_round_trip() {
    let t0 = Instant::now();
    let mut n = Node::new(quiet_cfg(), t0);
    let nodes: Vec<NodeInfo> = (0..10u8)
        .map(|i| NodeInfo {
            id: Id([i + 1; 20]),
            addr: peer(i + 1),
        })
        .collect();
    for x in &nodes {
        assert!(n.add_known_node(*x, t0));
    }
    // Our own id, the zero id and a martian are refused.
    assert!(!n.add_known_node(
        NodeInfo {
            id: ME,
            addr: peer(50)
        },
        t0
    ));
    assert!(!n.add_known_node(
        NodeInfo {
            id: Id::ZERO,
            addr: peer(51)
        },
        t0
    ));
    assert!(!n.add_known_node(
        NodeInfo {
            id: Id([0x60; 20]),
            addr: SocketAddr::from(([224, 0, 0, 1], 6881))
        },
        t0
    ));
    let mut back: Vec<NodeInfo> = n.known_nodes().collect();
    back.sort_by_key(|x| x.id);
    assert_eq!(back, nodes);
}

#[test]
fn nodes_heard_on_the_wrong_shard_go_to_their_owner() {
    let t0 = Instant::now();
    let mk = |s: u8| {
        let mut c = cfg();
        c.shard = s;
        c.nr_shards = 2;
        Node::new(c, t0)
    };
    let (mut s0, mut s1) = (mk(0), mk(1));
    // A node whose id lies in shard 1's half answers shard 0's find_node
    // with itself among the nodes.
    let mut far = Id([0x42; 20]);
    far.0[0] = 0xd0;
    let far_addr = peer(9);
    let node = NodeInfo {
        id: far,
        addr: far_addr,
    };
    s0.add_known_node(
        NodeInfo {
            id: Id([0x10; 20]),
            addr: peer(1),
        },
        t0,
    );
    // Learn of `node` through a response's nodes: look for the query shard
    // 0 sends, answer it.
    s0.handle_timeout(t0 + Duration::from_secs(1));
    let sent = out(&mut s0);
    let q = sent
        .iter()
        .find(|t| t.to == peer(1))
        .expect("a query to the known node");
    let m = decode(&q.bytes).unwrap();
    let r = response(
        m.tid,
        Id([0x10; 20]),
        &ResponseBody {
            nodes: &[node],
            ..Default::default()
        },
    );
    s0.handle_datagram(0, peer(1), &r, t0 + Duration::from_secs(1));
    let forwarded: Vec<ShardMsg> = actions(&mut s0)
        .into_iter()
        .filter_map(|a| match a {
            Action::ToShard {
                shard: 1,
                msg: msg @ ShardMsg::Node { .. },
            } => Some(msg),
            _ => None,
        })
        .collect();
    assert_eq!(forwarded, vec![ShardMsg::Node { node }]);
    for m in forwarded {
        s1.handle_shard_msg(m, t0 + Duration::from_secs(1));
    }
    // The owner now tracks it (and its sweep will sample it).
    assert_eq!(s1.table_entry(&far).map(|(a, _)| a), Some(far_addr));
    // A shard that does not own a node ignores it.
    let mut near = Id([0x42; 20]);
    near.0[0] = 0x10;
    s1.handle_shard_msg(
        ShardMsg::Node {
            node: NodeInfo {
                id: near,
                addr: peer(8),
            },
        },
        t0,
    );
    assert!(s1.table_entry(&near).is_none());
}

#[test]
fn forged_replies_for_another_shard_are_limited_before_any_copy() {
    let t0 = Instant::now();
    let mut c = cfg();
    c.shard = 0;
    c.nr_shards = 2;
    c.per_ip_pps = 5;
    c.per_ip_burst = 10;
    let mut s0 = Node::new(c, t0);
    // A flood of replies naming shard 1's transactions, from one source,
    // with bodies shard 0 would have to decode to judge.
    let forged = |i: u16| {
        let tid = [1u8, 0, (i >> 8) as u8, i as u8];
        response(
            &tid,
            Id([7; 20]),
            &ResponseBody {
                token: Some(b"tok"),
                ..Default::default()
            },
        )
    };
    let src = peer(3);
    for i in 0..1000u16 {
        s0.handle_datagram(0, src, &forged(i), t0);
    }
    let forwarded = actions(&mut s0)
        .into_iter()
        .filter(|a| matches!(a, Action::ToShard { shard: 1, .. }))
        .count() as u64;
    let s = s0.stats();
    // Twice the per-IP burst passes; the rest is dropped uncopied.
    assert_eq!(forwarded, 20);
    assert_eq!(s.forwarded_out, 20);
    assert_eq!(s.dropped.per_ip_replies, 980);
    // Nothing was decoded as a reply here.
    assert_eq!(s.replies, 0);
    assert_eq!(s.dropped.unknown_tid, 0);
    // A tid naming a shard that does not exist is dropped, not forwarded.
    let bad = response(&[9, 0, 0, 1], Id([7; 20]), &ResponseBody::default());
    s0.handle_datagram(0, peer(4), &bad, t0);
    assert_eq!(s0.stats().dropped.unknown_tid, 1);
    // One second later the source may send a few more.
    s0.handle_datagram(0, src, &forged(2000), t0 + Duration::from_secs(1));
    assert_eq!(s0.stats().forwarded_out, 21);
}

// ----------------------------------------------------------------------
// BEP 42 citizenship: our external address, our id, `want`.

/// A reply to query `t` with `ip` as the address its sender saw.
fn reply_with_ip(t: &Transmit, id: Id, ip: SocketAddr) -> Vec<u8> {
    let tid = decode(&t.bytes).unwrap().tid.to_vec();
    let mut o = Vec::new();
    encode_response(
        &mut o,
        &Header {
            tid: &tid,
            version: None,
        },
        Some(ip),
        &id,
        &ResponseBody::default(),
    );
    o
}

fn query_of(t: &Transmit) -> crate::krpc::Query<'_> {
    match decode(&t.bytes).unwrap().body {
        Body::Query(q) => q,
        other => panic!("not a query: {other:?}"),
    }
}

/// Voters in distinct /24s (loopback: the sources are real here).
fn voter(i: u8) -> SocketAddr {
    SocketAddr::from(([127, 40 + i, 0, 1], 7000))
}

#[test]
fn queries_want_both_families_only_when_both_are_bound() {
    let t0 = Instant::now();
    let six: SocketAddr = "[::1]:6881".parse().unwrap();
    let mut c = quiet_cfg();
    c.identities.push(Identity {
        addr: six,
        id: Id([0xab; 20]),
    });
    c.bootstrap = vec![peer(1), "[::1]:7001".parse().unwrap()];
    let mut n = Node::new(c, t0);
    n.handle_timeout(t0);
    let sent = out(&mut n);
    assert_eq!(sent.len(), 2);
    for t in &sent {
        assert_eq!(query_of(t).want, Want { n4: true, n6: true }, "{t:?}");
        let wire = &t.bytes[..];
        assert!(wire.windows(16).any(|w| w == b"4:wantl2:n42:n6e"));
    }
    // One family bound: no `want` at all (the responder's default, our
    // own family, is what we can use).
    let mut c = quiet_cfg();
    c.bootstrap = vec![peer(1)];
    let mut n = Node::new(c, t0);
    n.handle_timeout(t0);
    let sent = out(&mut n);
    assert_eq!(sent.len(), 1);
    assert!(!query_of(&sent[0]).want.is_specified());
    assert!(!sent[0].bytes.windows(6).any(|w| w == b"4:want"));
}

#[test]
fn the_vote_on_reply_ips_moves_every_shard_to_a_bep42_id() {
    let t0 = Instant::now();
    let ext: SocketAddr = "11.22.33.7:6881".parse().unwrap();
    let lie: SocketAddr = "11.22.44.9:6881".parse().unwrap();
    let mk = |s: u8| {
        let mut c = quiet_cfg();
        c.shard = s;
        c.nr_shards = 2;
        c.bootstrap = (0..14).map(voter).collect();
        Node::new(c, t0)
    };
    let (mut s0, mut s1) = (mk(0), mk(1));
    let old = s0.config().identities[0].id;
    assert!(!crate::id::bep42_verify(&old, ext.ip()));
    s0.handle_timeout(t0);
    let sent = out(&mut s0);
    assert_eq!(sent.len(), 14);
    // Four liars answer first, then ten honest nodes; unsolicited
    // responses (a stray tid) with the honest address count for nothing.
    for i in 0..20u8 {
        let stray = Tid {
            shard: 0,
            identity: 0,
            slot: 4000 + u16::from(i),
        }
        .to_bytes();
        let mut o = Vec::new();
        encode_response(
            &mut o,
            &Header {
                tid: &stray,
                version: None,
            },
            Some(ext),
            &Id([i; 20]),
            &ResponseBody::default(),
        );
        s0.handle_datagram(0, SocketAddr::from(([127, 90 + i, 0, 1], 7000)), &o, t0);
    }
    for (k, t) in sent.iter().enumerate() {
        let ip = if k < 4 { lie } else { ext };
        s0.handle_datagram(0, t.to, &reply_with_ip(t, Id([k as u8 + 1; 20]), ip), t0);
        let moved = s0.config().identities[0].id != old;
        // The tenth honest reply (k = 13) decides: 10 >= 10 votes, and
        // 10 > 4 * 3/2.
        assert_eq!(moved, k == 13, "reply {k}");
    }
    let new = s0.config().identities[0].id;
    assert!(crate::id::bep42_verify(&new, ext.ip()));
    assert_eq!(s0.external_ip(0), Some(ext.ip()));
    assert_eq!(s0.stats().rekeys, 1);
    // The runtime is told to save it, and shard 1 to use it.
    let acts = actions(&mut s0);
    assert!(acts.contains(&Action::Rekeyed {
        identity: 0,
        external: ext.ip(),
        id: new,
    }));
    let to_s1: Vec<ShardMsg> = acts
        .into_iter()
        .filter_map(|a| match a {
            Action::ToShard { shard: 1, msg } => Some(msg),
            _ => None,
        })
        .collect();
    assert_eq!(
        to_s1,
        vec![ShardMsg::Rekey {
            identity: 0,
            id: new
        }]
    );
    // Our former id is still ours: others keep listing us under it for a
    // while, and an entry for it would be ourselves.
    let own_before = s0.stats().dropped.own_id;
    s0.handle_datagram(0, peer(60), &ping(b"o1", old), t0);
    assert_eq!(s0.stats().dropped.own_id, own_before + 1);
    assert!(out(&mut s0).is_empty());
    // Shard 1 does not vote: a unanimous lie in its replies moves nothing.
    s1.handle_timeout(t0);
    for (k, t) in out(&mut s1).iter().enumerate() {
        s1.handle_datagram(0, t.to, &reply_with_ip(t, Id([k as u8 + 1; 20]), lie), t0);
    }
    assert_eq!(s1.config().identities[0].id, old);
    assert!(actions(&mut s1).is_empty());
    for m in to_s1 {
        s1.handle_shard_msg(m, t0);
    }
    assert_eq!(s1.config().identities[0].id, new);
    assert_eq!(s1.stats().rekeys, 1);
    // From now on both shards' queries carry the new id, and the shard
    // whose slice holds it asks the nodes closest to it about it (the
    // refresh libtorrent does after a new id).
    let t1 = t0 + Duration::from_secs(1);
    let owner = crate::keyspace::shard_for(&new, 2);
    let mut refreshed = false;
    for (s, n) in [&mut s0, &mut s1].into_iter().enumerate() {
        n.add_known_node(
            NodeInfo {
                id: Id([0x77; 20]),
                addr: peer(77),
            },
            t0,
        );
        n.handle_timeout(t1);
        for t in out(n) {
            let q = query_of(&t);
            assert_eq!(q.id, new, "shard {s}");
            if q.method == (Method::FindNode { target: new }) {
                assert_eq!(s, owner, "only the owner refreshes");
                refreshed = true;
            }
        }
    }
    assert!(refreshed, "no find_node for the new id");
    // The same vote again (a restart with the saved id) keeps the id.
    let mut c = quiet_cfg();
    c.identities[0].id = new;
    c.bootstrap = (0..10).map(voter).collect();
    let mut again = Node::new(c, t0);
    again.handle_timeout(t0);
    for (k, t) in out(&mut again).iter().enumerate() {
        again.handle_datagram(0, t.to, &reply_with_ip(t, Id([k as u8 + 1; 20]), ext), t0);
    }
    assert_eq!(again.external_ip(0), Some(ext.ip()));
    assert_eq!(again.config().identities[0].id, new);
    assert_eq!(again.stats().rekeys, 0);
    assert!(!actions(&mut again)
        .iter()
        .any(|a| matches!(a, Action::Rekeyed { .. })));
}

/// BEP 33 on our side: announces with `seed = 1` and `seed = 0` from
/// distinct IPs (one IP announcing twice counts once); a `get_peers` with
/// `scrape = 1` is answered with the two filters and no `values` (as
/// libtorrent answers), and the estimator reads the counts back; an
/// infohash with no stored peer gets no filters; a plain get_peers still
/// gets `values`.
#[test]
fn scrape_is_answered_with_seed_and_peer_filters() {
    let t0 = Instant::now();
    let mut n = Node::new(quiet_cfg(), t0);
    let infohash = Id([0x47; 20]);
    let announce_as = |n: &mut Node, i: u8, seed: bool| {
        let from = peer(i);
        let tok = get_token(n, from, infohash, t0);
        let q = query(
            b"an",
            Id([5; 20]),
            Method::AnnouncePeer {
                infohash,
                port: 0,
                implied_port: true,
                token: &tok,
                seed: Some(seed),
            },
            Want::default(),
            true,
        );
        n.handle_datagram(0, from, &q, t0);
        let r = only_reply(n, from);
        assert!(matches!(decode(&r).unwrap().body, Body::Response(_)));
    };
    for i in 1..=5 {
        announce_as(&mut n, i, true);
    }
    for i in 6..=8 {
        announce_as(&mut n, i, false);
    }
    // A leecher that became a seed: its last announce counts.
    announce_as(&mut n, 8, true);
    let ask = |n: &mut Node, infohash: Id, scrape: bool| -> Vec<u8> {
        let q = query(
            b"sc",
            Id([6; 20]),
            Method::GetPeers {
                infohash,
                noseed: false,
                scrape,
            },
            Want::default(),
            true,
        );
        n.handle_datagram(0, peer(99), &q, t0);
        only_reply(n, peer(99))
    };
    let bytes = ask(&mut n, infohash, true);
    let m = decode(&bytes).unwrap();
    let Body::Response(r) = m.body else {
        panic!("not a response")
    };
    assert!(r.values.is_none(), "a scrape reply carries no values");
    assert!(r.token.is_some());
    let est = |b: Option<&[u8; 256]>| crate::krpc::scrape::ScrapeBloom(*b.unwrap()).estimate();
    assert_eq!(est(r.bf_seeds).count(), 6);
    assert_eq!(est(r.bf_peers).count(), 2);
    let mut seeds = crate::krpc::scrape::ScrapeBloom::default();
    for i in [1, 2, 3, 4, 5, 8] {
        seeds.insert_ip(peer(i).ip());
    }
    assert_eq!(r.bf_seeds, Some(&seeds.0));
    // Unknown infohash: no filters.
    let bytes = ask(&mut n, Id([0x48; 20]), true);
    let Body::Response(r) = decode(&bytes).unwrap().body else {
        panic!("not a response")
    };
    assert!(r.bf_seeds.is_none() && r.bf_peers.is_none());
    // No scrape asked: values, no filters.
    let bytes = ask(&mut n, infohash, false);
    let Body::Response(r) = decode(&bytes).unwrap().body else {
        panic!("not a response")
    };
    assert_eq!(r.peers().count(), 8);
    assert!(r.bf_seeds.is_none());
}
