//! The far part of a simulated DHT: nodes with no state of their own.
//!
//! A full simulated node is the crawler's own [`crate::dht::Node`], about
//! 27 KiB with its table, storage, token and rate-limit state and its
//! timers. A million of those do not fit in this machine's memory, and
//! most of a large network is far from any one crawler: it meets a far
//! node a few times (a lookup step, a sample sweep) and never keeps it.
//!
//! A light node is an index into shared arrays: its id, its place in the
//! id order, and the torrents stored at it (about 70 bytes a node). It
//! answers what a crawler asks, as a well-routed node would:
//!
//! * `ping`: its id;
//! * `find_node`: the 8 nodes closest to the target, from the whole
//!   network's id order (a perfect routing table, which real nodes only
//!   approximate);
//! * `get_peers`: the torrent's peers if it is one of the 8 nodes the
//!   torrent is stored at, else the 8 closest nodes; always a token;
//! * `announce_peer`: an empty reply (nothing is stored: the swarm's
//!   clients announce to the harvesters under test, not to the network);
//! * `sample_infohashes`: every torrent stored at it (at most 20 sent),
//!   with `num`, `interval` 30 s and the 8 nodes closest to the target;
//! * anything else: error 204, method unknown.
//!
//! It never sends a query, so it never pings the crawler back, never asks
//! it for nodes and never announces to it: the crawler's inbound traffic
//! from the far network is lower than from full nodes, and what it costs
//! the crawler is its own lookups and sweeps. `tuning/runs/` compares the
//! two models on one network size.

use std::net::SocketAddr;

use crate::id::Id;
use crate::krpc::message::{encode_error, encode_response, ErrorCode, Header, ResponseBody};
use crate::krpc::{decode, Body, Method, NodeInfo};

/// `interval` a light node gives in its samples, seconds (as full ones
/// in the swarm).
const SAMPLE_INTERVAL: u32 = 30;
/// The token every light node hands out (it stores no announce).
const TOKEN: &[u8] = b"light";

/// Light nodes `first..` of a swarm's node list.
#[derive(Debug)]
pub struct LightNodes {
    /// Index of the first light node.
    first: usize,
    /// Torrents stored at light node `first + k`:
    /// `stored[offsets[k]..offsets[k + 1]]`, indexes into the swarm's
    /// torrent list.
    offsets: Vec<u32>,
    stored: Vec<u32>,
}

impl LightNodes {
    /// Light nodes from `first` to `count - 1`, storing `placed`
    /// (node index, torrent index) pairs; pairs for full nodes are
    /// ignored.
    pub fn new(first: usize, count: usize, mut placed: Vec<(u32, u32)>) -> LightNodes {
        let n = count.saturating_sub(first);
        placed.retain(|&(node, _)| (node as usize) >= first && (node as usize) < count);
        placed.sort_unstable();
        let mut offsets = Vec::with_capacity(n + 1);
        let mut stored = Vec::with_capacity(placed.len());
        let mut it = placed.iter().peekable();
        for k in 0..n {
            offsets.push(stored.len() as u32);
            while let Some(&&(node, t)) = it.peek() {
                if node as usize != first + k {
                    break;
                }
                stored.push(t);
                it.next();
            }
        }
        offsets.push(stored.len() as u32);
        LightNodes {
            first,
            offsets,
            stored,
        }
    }

    /// Whether node `i` is light.
    pub fn is_light(&self, i: usize) -> bool {
        i >= self.first && i + 1 < self.first + self.offsets.len()
    }

    fn torrents_of(&self, i: usize) -> &[u32] {
        let k = i - self.first;
        match (self.offsets.get(k), self.offsets.get(k + 1)) {
            (Some(&a), Some(&b)) => self.stored.get(a as usize..b as usize).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// Answers `query` sent to light node `i` by `from` into `out` (cleared
    /// first), and says what it answered. `None`, with nothing to send,
    /// for anything but a well-formed query (a light node never sends
    /// queries, so a reply to one is stray). `net` is the whole network:
    /// every node's id and address by index and the indexes in id order;
    /// `torrents` the infohash and peers of every torrent.
    pub fn answer(
        &self,
        i: usize,
        from: SocketAddr,
        query: &[u8],
        net: &Network<'_>,
        out: &mut Vec<u8>,
    ) -> Option<Answered> {
        out.clear();
        if !self.is_light(i) {
            return None;
        }
        let msg = decode(query).ok()?;
        let Body::Query(q) = msg.body else {
            return None;
        };
        let me = net.infos.get(i)?;
        let h = Header {
            tid: msg.tid,
            version: None,
        };
        let mut closest = [*me; 8];
        let mut samples: Vec<Id> = Vec::new();
        let mut answered = Answered::Other;
        let body = match q.method {
            Method::Ping | Method::AnnouncePeer { .. } => ResponseBody::default(),
            Method::FindNode { target } => {
                let n = net.closest(&target, &mut closest);
                ResponseBody {
                    nodes: &closest[..n],
                    ..ResponseBody::default()
                }
            }
            Method::GetPeers { infohash, .. } => {
                let here = self
                    .torrents_of(i)
                    .iter()
                    .filter_map(|&t| net.torrents.get(t as usize))
                    .find(|(ih, _)| *ih == infohash);
                let n = if here.is_some() {
                    0
                } else {
                    net.closest(&infohash, &mut closest)
                };
                ResponseBody {
                    nodes: &closest[..n],
                    values: here.map_or(&[][..], |(_, peers)| &peers[..]),
                    token: Some(TOKEN),
                    ..ResponseBody::default()
                }
            }
            Method::SampleInfohashes { target } => {
                answered = Answered::Sample;
                let mine = self.torrents_of(i);
                samples.extend(
                    mine.iter()
                        .take(20)
                        .filter_map(|&t| net.torrents.get(t as usize).map(|(ih, _)| *ih)),
                );
                let n = net.closest(&target, &mut closest);
                ResponseBody {
                    nodes: &closest[..n],
                    samples: Some((&samples, SAMPLE_INTERVAL, mine.len() as u32)),
                    ..ResponseBody::default()
                }
            }
            Method::Unknown { .. } => {
                encode_error(
                    out,
                    &h,
                    Some(from),
                    ErrorCode::MethodUnknown,
                    "method unknown",
                );
                return Some(Answered::Other);
            }
        };
        encode_response(out, &h, Some(from), &me.id, &body);
        Some(answered)
    }
}

/// What a light node answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// A `sample_infohashes` (the swarm counts the node as sampled).
    Sample,
    /// Anything else.
    Other,
}

/// The whole simulated network, as light nodes see it.
#[derive(Debug, Clone, Copy)]
pub struct Network<'a> {
    /// Every node's id and address, by node index.
    pub infos: &'a [NodeInfo],
    /// Node indexes sorted by id.
    pub order: &'a [u32],
    /// Every torrent's infohash and peers, by torrent index.
    pub torrents: &'a [(Id, Vec<SocketAddr>)],
}

impl Network<'_> {
    /// Writes the (up to) 8 nodes closest to `target` into `out`, closest
    /// first; returns how many. Exact: the nodes sharing at least `p`
    /// leading bits with `target` are one run of the id order, and every
    /// node outside the longest such run that still holds 8 is farther
    /// than every node inside it, so only that run is sorted.
    pub fn closest(&self, target: &Id, out: &mut [NodeInfo; 8]) -> usize {
        let id_at = |j: u32| self.infos.get(j as usize).map(|x| x.id);
        let run = |p: u32| {
            let (lo, hi) = prefix_bounds(target, p);
            let a = self
                .order
                .partition_point(|&j| id_at(j).is_some_and(|x| x < lo));
            let b = self
                .order
                .partition_point(|&j| id_at(j).is_some_and(|x| x <= hi));
            (a, b)
        };
        // Longest prefix whose run still holds 8 (or everything).
        let (mut good, mut bad) = (0u32, 161u32);
        while bad - good > 1 {
            let mid = (good + bad) / 2;
            let (a, b) = run(mid);
            if b - a >= 8 {
                good = mid;
            } else {
                bad = mid;
            }
        }
        let (a, b) = run(good);
        let mut near: Vec<&NodeInfo> = self.order[a..b]
            .iter()
            .filter_map(|&j| self.infos.get(j as usize))
            .collect();
        near.sort_by_key(|x| x.id.distance(target));
        let k = near.len().min(8);
        for (slot, x) in out.iter_mut().zip(near.into_iter().take(k)) {
            *slot = *x;
        }
        k
    }
}

/// The smallest and largest ids sharing the first `p` bits of `target`.
fn prefix_bounds(target: &Id, p: u32) -> (Id, Id) {
    let (mut lo, mut hi) = (*target, *target);
    for bit in p..160 {
        let (byte, mask) = ((bit / 8) as usize, 0x80u8 >> (bit % 8));
        lo.0[byte] &= !mask;
        hi.0[byte] |= mask;
    }
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::krpc::message::{encode_query, Want};
    use crate::rng::Rng;
    use std::net::{Ipv4Addr, SocketAddrV4};

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(0x7f40_0001 + i as u32),
            6881,
        ))
    }

    fn network(n: usize, seed: u64) -> (Vec<NodeInfo>, Vec<u32>) {
        let mut rng = Rng::seed_from_u64(seed);
        let infos: Vec<NodeInfo> = (0..n)
            .map(|i| NodeInfo {
                id: Id::random(&mut rng),
                addr: addr(i),
            })
            .collect();
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_by_key(|&i| infos[i as usize].id);
        (infos, order)
    }

    fn query(method: Method<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        let h = Header {
            tid: b"tx",
            version: None,
        };
        encode_query(&mut out, &h, &Id([7; 20]), &method, Want::default(), false);
        out
    }

    #[test]
    fn closest_matches_a_full_scan() {
        let (infos, order) = network(10_000, 3);
        let net = Network {
            infos: &infos,
            order: &order,
            torrents: &[],
        };
        let mut rng = Rng::seed_from_u64(9);
        let (mut exact, mut first_right) = (0, 0);
        let targets = 1000;
        for _ in 0..targets {
            let target = Id::random(&mut rng);
            let mut out = [infos[0]; 8];
            assert_eq!(net.closest(&target, &mut out), 8);
            let mut all: Vec<&NodeInfo> = infos.iter().collect();
            all.sort_by_key(|x| x.id.distance(&target));
            let truth: Vec<Id> = all[..8].iter().map(|x| x.id).collect();
            let got: Vec<Id> = out.iter().map(|x| x.id).collect();
            exact += usize::from(got == truth);
            first_right += usize::from(got[0] == truth[0]);
        }
        // Measured: the window of 8 either side gives the exact 8, in
        // order, for most targets; the closest one is always right.
        assert_eq!(first_right, targets);
        assert!(
            exact * 100 >= targets * 90,
            "exact top 8 for {exact} of {targets}"
        );
    }

    fn reply(out: &[u8]) -> crate::krpc::Response<'_> {
        match decode(out).map(|m| (m.tid, m.body)) {
            Ok((b"tx", Body::Response(r))) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn light_nodes_answer_every_query_a_crawler_sends() {
        let (infos, order) = network(100, 1);
        let ih = Id([0xab; 20]);
        let peer: SocketAddr = "127.96.0.9:7000".parse().unwrap();
        let torrents = vec![(ih, vec![peer]), (Id([0xcd; 20]), vec![])];
        let net = Network {
            infos: &infos,
            order: &order,
            torrents: &torrents,
        };
        // Nodes 40.. are light; node 50 stores torrent 0, node 40 none;
        // node 10 is full (its pair is dropped).
        let light = LightNodes::new(40, 100, vec![(50, 0), (50, 1), (10, 0)]);
        assert!(!light.is_light(10) && light.is_light(40) && light.is_light(99));
        assert!(!light.is_light(100));
        let from = addr(500);
        let mut out = Vec::new();

        assert_eq!(
            light.answer(50, from, &query(Method::Ping), &net, &mut out),
            Some(Answered::Other)
        );
        assert_eq!(reply(&out).id, infos[50].id);

        let gp = |infohash| Method::GetPeers {
            infohash,
            noseed: false,
            scrape: false,
        };
        assert!(light
            .answer(50, from, &query(gp(ih)), &net, &mut out)
            .is_some());
        let r = reply(&out);
        assert_eq!(r.peers().collect::<Vec<_>>(), vec![peer]);
        assert_eq!(r.token, Some(TOKEN));
        assert!(light
            .answer(40, from, &query(gp(ih)), &net, &mut out)
            .is_some());
        let r = reply(&out);
        assert_eq!(r.peers().count(), 0);
        assert_eq!(r.nodes.iter().count(), 8);

        let target = infos[77].id;
        assert!(light
            .answer(
                40,
                from,
                &query(Method::FindNode { target }),
                &net,
                &mut out
            )
            .is_some());
        assert_eq!(reply(&out).nodes.iter().next().map(|x| x.id), Some(target));

        let si = Method::SampleInfohashes { target };
        assert_eq!(
            light.answer(50, from, &query(si), &net, &mut out),
            Some(Answered::Sample)
        );
        let r = reply(&out);
        let s = r.as_samples().unwrap();
        assert_eq!((s.num, s.interval), (2, SAMPLE_INTERVAL));
        assert_eq!(s.samples().collect::<Vec<_>>(), vec![ih, Id([0xcd; 20])]);
        assert!(light.answer(40, from, &query(si), &net, &mut out).is_some());
        assert_eq!(reply(&out).as_samples().unwrap().num, 0);

        let unknown = Method::Unknown {
            name: b"vote",
            target: None,
        };
        assert!(light
            .answer(40, from, &query(unknown), &net, &mut out)
            .is_some());
        assert!(matches!(decode(&out).unwrap().body, Body::Error(e) if e.code == Some(204)));

        // A full node's index, a reply, garbage: nothing to send.
        assert!(light
            .answer(10, from, &query(Method::Ping), &net, &mut out)
            .is_none());
        let mut r = Vec::new();
        encode_response(
            &mut r,
            &Header {
                tid: b"tx",
                version: None,
            },
            None,
            &Id([1; 20]),
            &ResponseBody::default(),
        );
        assert!(light.answer(40, from, &r, &net, &mut out).is_none());
        assert!(light.answer(40, from, b"d1:q", &net, &mut out).is_none());
        assert!(out.is_empty());
    }
}
