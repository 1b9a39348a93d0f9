//! Iterative get_peers lookups (BEP 5), the fallback when the node that
//! sampled an infohash returned no `values`, and the way to find peers for
//! an infohash seen only in someone else's get_peers.
//!
//! Bounded: at most [`MAX_CANDIDATES`] candidates kept closest-first, at
//! most [`ALPHA`] queries in flight, at most [`MAX_QUERIES`] queries in all,
//! and one node per /24 (IPv6: /64) per lookup, as libtorrent's
//! `traversal_algorithm.cpp` does, so one operator with a subnet full of
//! fake nodes cannot capture it.

use std::net::SocketAddr;

use super::addr::lookup_prefix;
use super::Source;
use crate::id::Id;
use crate::krpc::NodeInfo;

/// Queries in flight per lookup.
pub const ALPHA: u8 = 3;
/// Candidates kept.
pub const MAX_CANDIDATES: usize = 32;
/// Queries sent per lookup at most.
pub const MAX_QUERIES: u16 = 24;
/// How many of the closest live candidates must have answered.
pub const K: usize = 8;
/// Stop once this many nodes returned peers.
pub const ENOUGH_VALUES: u8 = 3;
/// Peers kept per lookup.
pub const MAX_PEERS: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    New,
    Sent,
    Replied,
    Failed,
}

#[derive(Debug, Clone)]
struct Cand {
    node: NodeInfo,
    dist: Id,
    state: State,
}

/// One lookup.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// The infohash.
    pub target: Id,
    /// How the infohash was first seen.
    pub source: Source,
    cands: Vec<Cand>,
    prefixes: Vec<u64>,
    inflight: u8,
    queried: u16,
    values_from: u8,
    /// Peers found so far.
    pub peers: Vec<SocketAddr>,
}

impl Lookup {
    /// A lookup for `target`, seeded with `seeds`.
    pub fn new(target: Id, source: Source, seeds: impl IntoIterator<Item = NodeInfo>) -> Self {
        let mut l = Lookup {
            target,
            source,
            cands: Vec::new(),
            prefixes: Vec::new(),
            inflight: 0,
            queried: 0,
            values_from: 0,
            peers: Vec::new(),
        };
        for s in seeds {
            l.add(s);
        }
        l
    }

    /// Offers a node learnt from a reply. Nodes of an already used /24 or
    /// already known id are refused.
    pub fn add(&mut self, node: NodeInfo) -> bool {
        let prefix = lookup_prefix(node.addr.ip());
        if self.prefixes.contains(&prefix) || self.cands.iter().any(|c| c.node.id == node.id) {
            return false;
        }
        let dist = node.id.distance(&self.target);
        let pos = self.cands.partition_point(|c| c.dist < dist);
        if pos >= MAX_CANDIDATES {
            return false;
        }
        self.cands.insert(
            pos,
            Cand {
                node,
                dist,
                state: State::New,
            },
        );
        self.prefixes.push(prefix);
        if self.cands.len() > MAX_CANDIDATES {
            // Drop the farthest candidate not yet asked.
            if let Some(i) = self.cands.iter().rposition(|c| c.state == State::New) {
                let c = self.cands.remove(i);
                let p = lookup_prefix(c.node.addr.ip());
                self.prefixes.retain(|x| *x != p);
            }
        }
        true
    }

    /// The next node to ask, marked as asked.
    pub fn next_query(&mut self) -> Option<NodeInfo> {
        if self.inflight >= ALPHA
            || self.queried >= MAX_QUERIES
            || self.values_from >= ENOUGH_VALUES
        {
            return None;
        }
        let c = self
            .cands
            .iter_mut()
            .filter(|c| c.state != State::Failed)
            .take(K)
            .find(|c| c.state == State::New)?;
        c.state = State::Sent;
        self.inflight += 1;
        self.queried += 1;
        Some(c.node)
    }

    /// Undoes [`Lookup::next_query`] when the query could not be sent for lack of
    /// budget (it will be tried again).
    pub fn unsend(&mut self, addr: SocketAddr) {
        if let Some(c) = self.cands.iter_mut().find(|c| c.node.addr == addr) {
            if c.state == State::Sent {
                c.state = State::New;
                self.inflight = self.inflight.saturating_sub(1);
                self.queried = self.queried.saturating_sub(1);
            }
        }
    }

    fn settle(&mut self, addr: SocketAddr, state: State) {
        if let Some(c) = self
            .cands
            .iter_mut()
            .find(|c| c.node.addr == addr && c.state == State::Sent)
        {
            c.state = state;
            self.inflight = self.inflight.saturating_sub(1);
        }
    }

    /// A reply from `addr` carrying `peers` (already filtered).
    pub fn on_reply(&mut self, addr: SocketAddr, peers: impl IntoIterator<Item = SocketAddr>) {
        self.settle(addr, State::Replied);
        let before = self.peers.len();
        for p in peers {
            if self.peers.len() < MAX_PEERS && !self.peers.contains(&p) {
                self.peers.push(p);
            }
        }
        if self.peers.len() > before {
            self.values_from = self.values_from.saturating_add(1);
        }
    }

    /// The query to `addr` failed (timeout, error or not sendable).
    pub fn on_fail(&mut self, addr: SocketAddr) {
        self.settle(addr, State::Failed);
    }

    /// Whether the lookup is over.
    pub fn done(&self) -> bool {
        if self.values_from >= ENOUGH_VALUES {
            return true;
        }
        if self.inflight > 0 {
            return false;
        }
        if self.queried >= MAX_QUERIES {
            return true;
        }
        !self
            .cands
            .iter()
            .filter(|c| c.state != State::Failed)
            .take(K)
            .any(|c| c.state == State::New)
    }

    /// Queries sent so far.
    pub fn queried(&self) -> u16 {
        self.queried
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u8, ip: [u8; 4]) -> NodeInfo {
        NodeInfo {
            id: Id([id; 20]),
            addr: SocketAddr::from((ip, 6881)),
        }
    }

    #[test]
    fn one_node_per_24_and_alpha() {
        let mut l = Lookup::new(Id([0; 20]), Source::Sample, []);
        assert!(l.add(node(1, [1, 2, 3, 4])));
        assert!(!l.add(node(2, [1, 2, 3, 5])));
        assert!(l.add(node(3, [1, 2, 4, 5])));
        assert!(l.add(node(4, [1, 2, 5, 5])));
        assert!(l.add(node(5, [1, 2, 6, 5])));
        let a = l.next_query().unwrap();
        let b = l.next_query().unwrap();
        let c = l.next_query().unwrap();
        assert!(l.next_query().is_none());
        assert_eq!([a.id, b.id, c.id], [Id([1; 20]), Id([3; 20]), Id([4; 20])]);
        l.on_fail(a.addr);
        l.on_reply(b.addr, [SocketAddr::from(([5, 5, 5, 5], 80))]);
        assert!(!l.done());
        let d = l.next_query().unwrap();
        assert_eq!(d.id, Id([5; 20]));
        l.on_reply(c.addr, []);
        l.on_reply(d.addr, []);
        assert!(l.done());
        assert_eq!(l.peers.len(), 1);
    }
}
