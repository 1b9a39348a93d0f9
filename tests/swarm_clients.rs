//! The swarm's client and peer model, seen from outside: a plain UDP socket
//! on 127.0.0.1 stands in for a harvester and records what the swarm's
//! clients send it; plain TCP connections probe churning peers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dht_hunter::krpc::{decode, message::Method, Body};
use dht_hunter::loadgen::swarm::{Swarm, SwarmConfig};

/// One query a fake target received.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    tid: Vec<u8>,
    from: SocketAddr,
    infohash: String,
    /// `None` for get_peers; the token and port for announce_peer.
    announce: Option<(Vec<u8>, u16)>,
    /// For get_peers: the token this target answered with.
    token_given: Vec<u8>,
}

/// A fake harvester: answers get_peers with a fresh token each time
/// (`<tag><n>`), acknowledges announces, records everything for `run`.
fn fake_target(tag: u8, run: Duration) -> (SocketAddr, JoinHandle<Vec<Seen>>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let addr = sock.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let end = Instant::now() + run;
        let mut seen = Vec::new();
        let mut buf = [0u8; 2048];
        let mut n = 0u32;
        while Instant::now() < end {
            let Ok((len, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let at = Instant::now();
            let m = decode(&buf[..len]).unwrap();
            let Body::Query(q) = m.body else {
                panic!("not a query: {m:?}")
            };
            let (infohash, announce) = match q.method {
                Method::GetPeers { infohash, .. } => (infohash, None),
                Method::AnnouncePeer {
                    infohash,
                    token,
                    port,
                    ..
                } => (infohash, Some((token.to_vec(), port))),
                other => panic!("unexpected {other:?}"),
            };
            n += 1;
            let token = format!("{}{n:06}", tag as char).into_bytes();
            let mut r = Vec::new();
            r.extend_from_slice(b"d1:rd2:id20:");
            r.extend_from_slice(&[tag; 20]);
            if announce.is_none() {
                r.extend_from_slice(format!("5:token{}:", token.len()).as_bytes());
                r.extend_from_slice(&token);
            }
            r.extend_from_slice(format!("e1:t{}:", m.tid.len()).as_bytes());
            r.extend_from_slice(m.tid);
            r.extend_from_slice(b"1:y1:re");
            sock.send_to(&r, from).unwrap();
            seen.push(Seen {
                at,
                tid: m.tid.to_vec(),
                from,
                infohash: infohash.to_hex(),
                announce,
                token_given: token,
            });
        }
        seen
    });
    (addr, h)
}

fn small(seed: u64) -> SwarmConfig {
    SwarmConfig::honest(8, 6, 20, seed)
}

#[test]
fn delayed_announces_come_after_the_search_with_a_fresh_token() {
    let delay = Duration::from_millis(1200);
    let swarm = Swarm::start(&SwarmConfig {
        announce_delay: delay,
        announce_jitter: 0.25,
        search_only_fraction: 0.5,
        ..small(5)
    })
    .unwrap();
    let run = Duration::from_millis(3200);
    let (a, ha) = fake_target(b'a', run);
    let (b, hb) = fake_target(b'b', run);
    let t0 = Instant::now();
    swarm.set_targets(&[a, b]);
    assert_eq!(swarm.targets(), vec![a, b]);
    let seen_a = ha.join().unwrap();
    let seen_b = hb.join().unwrap();
    let stats = swarm.target_stats();
    let c = &swarm.counters;
    let searches = c.client_searches.load(std::sync::atomic::Ordering::Relaxed);
    let search_only = c
        .client_search_only
        .load(std::sync::atomic::Ordering::Relaxed);
    let truth: Vec<(String, SocketAddr)> = swarm
        .truth
        .iter()
        .map(|t| (t.infohash.clone(), t.peers[0].addr.parse().unwrap()))
        .collect();
    swarm.stop();

    // Both targets saw the same get_peers, in the same order.
    let gp = |s: &[Seen]| -> Vec<(Vec<u8>, String)> {
        s.iter()
            .filter(|x| x.announce.is_none())
            .map(|x| (x.tid.clone(), x.infohash.clone()))
            .collect()
    };
    let (ga, gb) = (gp(&seen_a), gp(&seen_b));
    let common = ga.len().min(gb.len());
    assert!(common > 20, "{} / {} get_peers", ga.len(), gb.len());
    assert_eq!(ga[..common], gb[..common]);

    for (seen, tag) in [(&seen_a, b'a'), (&seen_b, b'b')] {
        let announces: Vec<&Seen> = seen.iter().filter(|x| x.announce.is_some()).collect();
        assert!(!announces.is_empty(), "no announce reached {}", tag as char);
        // Nothing announces before the shortest delay has passed.
        let first = announces[0].at.duration_since(t0);
        assert!(first >= delay.mul_f64(0.75), "first announce at {first:?}");
        for an in &announces {
            let (token, port) = an.announce.clone().unwrap();
            // The token is this target's own, handed out for a re-fetch
            // get_peers (not for the search itself) by the same client for
            // the same torrent, shortly before the announce.
            assert_eq!(token[0], tag);
            let source = seen
                .iter()
                .find(|x| x.announce.is_none() && x.token_given == token)
                .unwrap();
            assert_eq!(source.tid[0], 0xc3, "announce without a fresh get_peers");
            assert_eq!((source.from, &source.infohash), (an.from, &an.infohash));
            assert!(an.at.duration_since(source.at) < Duration::from_millis(500));
            // And a search (not a re-fetch) came at least 0.75 × delay
            // before it.
            let searched = seen.iter().any(|x| {
                x.tid[0] == 0xc0
                    && x.from == an.from
                    && x.infohash == an.infohash
                    && an.at.duration_since(x.at) >= delay.mul_f64(0.75)
            });
            assert!(searched, "announce with no search long before");
            // The client announces its own address: the datagram came from
            // the torrent's peer IP and names that peer's port.
            assert!(
                is_client(&truth, &an.infohash, &an.from, port),
                "announce does not carry the client's address"
            );
        }
    }
    // Counters agree with what the targets saw.
    let sa = stats.iter().find(|s| s.target == a.to_string()).unwrap();
    assert_eq!(
        sa.announces as usize,
        seen_a.iter().filter(|x| x.announce.is_some()).count()
    );
    // Every reply was read back (a few may still be in flight at the end).
    assert!(sa.tokens + 3 >= sa.get_peers, "{sa:?}");
    assert!(sa.announce_acks + 3 >= sa.announces, "{sa:?}");
    assert!(
        search_only > 0 && search_only < searches,
        "{search_only}/{searches}"
    );
}

/// Whether `from` (an announce's source) and `port` are the client (first
/// peer) of the torrent `infohash`.
fn is_client(truth: &[(String, SocketAddr)], infohash: &str, from: &SocketAddr, port: u16) -> bool {
    truth
        .iter()
        .any(|(hash, addr)| hash == infohash && addr.ip() == from.ip() && addr.port() == port)
}

#[test]
fn search_only_clients_never_announce_and_undelayed_ones_announce_at_once() {
    let swarm = Swarm::start(&SwarmConfig {
        search_only_fraction: 1.0,
        ..small(9)
    })
    .unwrap();
    let (a, ha) = fake_target(b'a', Duration::from_millis(800));
    swarm.set_targets(&[a]);
    let seen = ha.join().unwrap();
    swarm.stop();
    assert!(seen.len() > 5, "{}", seen.len());
    assert!(seen.iter().all(|x| x.announce.is_none()));

    let swarm = Swarm::start(&small(9)).unwrap();
    let (a, ha) = fake_target(b'a', Duration::from_millis(800));
    swarm.set_targets(&[a]);
    let seen = ha.join().unwrap();
    swarm.stop();
    let announces: Vec<&Seen> = seen.iter().filter(|x| x.announce.is_some()).collect();
    assert!(announces.len() > 5, "{}", announces.len());
    for an in announces {
        // With no delay the announce uses the token of the search itself.
        let search = seen
            .iter()
            .rev()
            .find(|x| x.at <= an.at && x.announce.is_none() && x.from == an.from)
            .unwrap();
        assert_eq!(search.tid[0], 0xc1);
        assert_eq!(an.announce.as_ref().unwrap().0, search.token_given);
        assert!(an.at.duration_since(search.at) < Duration::from_millis(500));
    }
}

/// Dials `addr` and sends a BitTorrent handshake for `infohash`: true if
/// the peer answers with its own handshake, false if the connection is
/// refused, reset or closed first.
fn peer_answers(addr: SocketAddr, infohash: &[u8; 20]) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut hs = Vec::with_capacity(68);
    hs.push(19);
    hs.extend_from_slice(b"BitTorrent protocol");
    hs.extend_from_slice(&[0, 0, 0, 0, 0, 0x10, 0, 0]);
    hs.extend_from_slice(infohash);
    hs.extend_from_slice(b"-TT0000-000000000000");
    if s.write_all(&hs).is_err() {
        return false;
    }
    let mut got = [0u8; 68];
    s.read_exact(&mut got).is_ok() && got[28..48] == infohash[..]
}

#[test]
fn churning_peers_refuse_connections_while_away() {
    let period = Duration::from_millis(1000);
    let swarm = Swarm::start(&SwarmConfig {
        churn_fraction: 1.0,
        churn_period: period,
        churn_away: Duration::from_millis(500),
        client_rate: 0,
        ..small(4)
    })
    .unwrap();
    let t = &swarm.truth[0];
    assert!(t.fetchable, "churn does not change what is fetchable");
    let peer = &t.peers[0];
    assert!(
        peer.churn.is_some(),
        "churn_fraction 1.0: every peer churns"
    );
    let addr: SocketAddr = peer.addr.parse().unwrap();
    let infohash: [u8; 20] = t.infohash.parse::<dht_hunter::id::Id>().unwrap().0;
    let (mut up, mut away) = (0, 0);
    let end = Instant::now() + period * 2;
    while Instant::now() < end {
        let before = swarm.peer_away(addr, Instant::now());
        let answered = peer_answers(addr, &infohash);
        let after = swarm.peer_away(addr, Instant::now());
        // Only count probes that did not straddle a boundary.
        if before == after {
            assert_eq!(answered, !before, "away={before} but answered={answered}");
            if before {
                away += 1;
            } else {
                up += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    swarm.stop();
    assert!(up >= 3 && away >= 3, "up {up}, away {away}");
}

/// Sends `method` to `to` and returns the decoded reply's raw bytes (one
/// query at a time on `sock`, so the next datagram is the reply).
fn ask(sock: &UdpSocket, to: SocketAddr, method: &Method<'_>) -> Option<Vec<u8>> {
    use dht_hunter::krpc::message::{encode_query, Header, Want};
    let mut q = Vec::new();
    let h = Header {
        tid: b"lk",
        version: None,
    };
    let id = dht_hunter::id::Id([0x11; 20]);
    encode_query(&mut q, &h, &id, method, Want::default(), false);
    sock.send_to(&q, to).unwrap();
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = sock.recv_from(&mut buf).ok()?;
        // Full nodes may also query us (we are in their tables now).
        let reply = decode(&buf[..n]).is_ok_and(|m| !matches!(m.body, Body::Query(_)));
        if from == to && reply {
            return Some(buf[..n].to_vec());
        }
    }
}

#[test]
fn lookups_cross_light_and_full_nodes_and_sweeps_are_counted() {
    // 3,000 nodes of which the first 300 are full: most of every lookup
    // path is light nodes, and full nodes' tables point into them.
    let swarm = Swarm::start(&SwarmConfig {
        nodes: 3000,
        full_nodes: 300,
        client_rate: 0,
        ..SwarmConfig::honest(3000, 40, 0, 5)
    })
    .unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let light_from = swarm.node_addrs[300];
    let (mut found, mut light_hops, mut full_hops) = (0, 0, 0);
    for t in swarm.truth.iter().take(20) {
        let infohash: dht_hunter::id::Id = t.infohash.parse().unwrap();
        let method = Method::GetPeers {
            infohash,
            noseed: false,
            scrape: false,
        };
        // Iterative lookup: always the closest node not yet asked.
        let mut seen = std::collections::BTreeMap::new();
        let mut asked = std::collections::BTreeSet::new();
        seen.insert(
            dht_hunter::id::Id([0xff; 20]).distance(&infohash),
            swarm.node_addrs[0],
        );
        let truth_peers: Vec<SocketAddr> =
            t.peers.iter().map(|p| p.addr.parse().unwrap()).collect();
        for _ in 0..30 {
            let Some((_, &to)) = seen.iter().find(|(_, a)| !asked.contains(*a)) else {
                break;
            };
            asked.insert(to);
            let index = swarm.node_addrs.iter().position(|a| *a == to).unwrap();
            if index >= 300 {
                light_hops += 1;
            } else {
                full_hops += 1;
            }
            let Some(bytes) = ask(&sock, to, &method) else {
                continue;
            };
            let Ok(msg) = decode(&bytes) else { continue };
            let Body::Response(r) = msg.body else {
                continue;
            };
            let peers: Vec<SocketAddr> = r.peers().collect();
            if !peers.is_empty() {
                assert!(peers.iter().all(|p| truth_peers.contains(p)), "{peers:?}");
                found += 1;
                break;
            }
            for n in r.nodes.iter() {
                seen.insert(n.id.distance(&infohash), n.addr);
            }
        }
    }
    assert_eq!(found, 20, "every lookup reaches the torrent's peers");
    assert!(
        light_hops > full_hops,
        "light {light_hops}, full {full_hops}"
    );

    // Sample sweeps are counted once per node, light or full.
    let target = dht_hunter::id::Id([0x42; 20]);
    let si = Method::SampleInfohashes { target };
    for to in [light_from, light_from, swarm.node_addrs[0]] {
        let bytes = ask(&sock, to, &si).expect("a sample reply");
        let msg = decode(&bytes).unwrap();
        let Body::Response(r) = msg.body else {
            panic!("{:?}", msg.body)
        };
        assert!(r.as_samples().is_ok());
    }
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(swarm.counters.sample_queries.load(Relaxed), 3);
    assert_eq!(swarm.counters.nodes_sampled.load(Relaxed), 2);
    swarm.stop();
}
