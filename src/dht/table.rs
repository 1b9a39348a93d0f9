//! The routing table: every node this shard knows, ordered by id.
//!
//! Ordered by id (not a bucket tree) because the shard's main job is to walk
//! its slice in id order (mldht's keyspace traversal), and because the k
//! XOR-closest ids to a target can be found exactly in an ordered map: all
//! ids sharing a prefix with the target form one contiguous range.
//!
//! Rules (libtorrent `routing_table.cpp`, mldht `sanitizing-algorithms`):
//! * One entry per IP address, and one per id.
//! * Entries start as candidates (heard of in `nodes`, or a query's sender)
//!   and become confirmed only when they answer one of our queries from the
//!   exact endpoint we asked, with the id we expected. [`Table::known`]
//!   returns confirmed nodes only.
//! * Nodes outside the slice are kept for routing only, at most
//!   `max_out_per_bucket` per distance bucket from the slice; nodes inside
//!   the slice are kept up to the table bound.
//! * When full, a newcomer inside the slice takes the place of the node
//!   whose BEP 51 samples arrived longest ago (turnover, on by default),
//!   else of the oldest candidate. Confirmed nodes leave by failing, by an
//!   id change, or by turnover once their samples are in: they gave what a
//!   crawler wants of them, a candidate has not yet. In a network larger
//!   than the table this turns the table into a moving window over the
//!   keyspace, where without it the table fills once and the sweep samples
//!   the same nodes over and over (`tuning/runs/sim-scale-*.md`).
//! * BEP 42 (libtorrent's `dht_prefer_verified_node_ids`): each entry
//!   records whether its id is valid for its IP ([`bep42_verify`]; local
//!   addresses are exempt and count as verified). With
//!   [`Table::set_prefer_verified`] on, a verified node beats an
//!   unverified one: in a full out-of-slice bucket it takes the place of an
//!   unverified candidate, or, once confirmed, of an unverified confirmed
//!   node (libtorrent's replacement rule for a full bucket); at the table
//!   bound unverified candidates are evicted before verified ones, and an
//!   unverified newcomer never pushes out a verified candidate. Nodes
//!   inside the slice are all kept when there is room, verified or not:
//!   each may hold samples.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::id::{bep42_verify, Id};
use crate::keyspace::Slice;
use crate::krpc::NodeInfo;

/// Failures in a row before a confirmed node is dropped.
pub const MAX_FAILS: u8 = 3;

/// What the table knows about a node.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Whether it has answered a query of ours as expected.
    pub confirmed: bool,
    /// Last matched reply.
    pub last_reply: Option<Instant>,
    /// Last query we sent it.
    pub last_query: Option<Instant>,
    /// Failures in a row.
    pub fails: u8,
    /// Earliest time for the next BEP 51 query (its `interval`).
    pub next_sample: Option<Instant>,
    /// Whether its samples have come in (it may then make room).
    pub sampled: bool,
    /// When it entered the table.
    pub added: Instant,
    /// Whether its id is valid for its IP under BEP 42 (exempt addresses
    /// count as verified).
    pub verified: bool,
}

/// The table (see the module docs).
#[derive(Debug, Clone)]
pub struct Table {
    nodes: BTreeMap<Id, Entry>,
    by_ip: HashMap<IpAddr, Id>,
    /// Candidates, oldest first (all of them, or the unverified ones when
    /// verified nodes are preferred); entries that left or were confirmed
    /// are skipped lazily.
    candidates: VecDeque<Id>,
    /// Verified candidates, oldest first, when verified nodes are preferred.
    candidates_verified: VecDeque<Id>,
    prefer_verified: bool,
    slice: Slice,
    reference: Id,
    out_per_bucket: Vec<u16>,
    max_nodes: usize,
    max_out_per_bucket: u16,
    confirmed: usize,
    /// Entries inside the slice.
    in_slice: usize,
    /// Counts insertions: who waits for new nodes compares it.
    generation: u64,
    /// Whether sampled nodes make room for newcomers (see the module docs).
    turnover: bool,
    /// Confirmed nodes whose samples came in, oldest first; entries that
    /// left are skipped lazily.
    sampled: VecDeque<Id>,
    /// Nodes that made room this way.
    turned_over: u64,
    /// When each node that made room is next due for samples, so that
    /// meeting it again does not mean asking it again before then (oldest
    /// first in `recent_order`, at most `RECENT_PER_NODE` × `max_nodes`).
    recent: HashMap<Id, Option<Instant>>,
    recent_order: VecDeque<Id>,
}

/// How many turned-over nodes the table remembers, per entry it holds
/// (each memory is about 60 bytes).
const RECENT_PER_NODE: usize = 4;

/// Appends `id` to one of the table's id queues, whose entries that no
/// longer qualify (`live` false, or gone) are skipped lazily when popped;
/// past twice the table's bound they are dropped, so the queue stays
/// bounded however often entries come and go.
fn push_lazily(
    queue: &mut VecDeque<Id>,
    id: Id,
    nodes: &BTreeMap<Id, Entry>,
    bound: usize,
    live: impl Fn(&Entry) -> bool,
) {
    queue.push_back(id);
    if queue.len() > 2 * bound {
        queue.retain(|id| nodes.get(id).is_some_and(&live));
    }
}

fn prefix_range(t: &Id, p: u32) -> (Id, Id) {
    let mut lo = *t;
    let mut hi = *t;
    for bit in p..160 {
        let byte = (bit / 8) as usize;
        let mask = 0x80u8 >> (bit % 8);
        if let (Some(l), Some(h)) = (lo.0.get_mut(byte), hi.0.get_mut(byte)) {
            *l &= !mask;
            *h |= mask;
        }
    }
    (lo, hi)
}

fn flip_bit(t: &Id, bit: u32) -> Id {
    let mut o = *t;
    if let Some(b) = o.0.get_mut((bit / 8) as usize) {
        *b ^= 0x80u8 >> (bit % 8);
    }
    o
}

impl Table {
    /// An empty table for a shard owning `slice`.
    pub fn new(slice: Slice, max_nodes: usize, max_out_per_bucket: u16) -> Self {
        // Distance buckets for out-of-slice nodes are measured from the
        // slice's middle.
        let mid = {
            let f = slice.first().prefix64();
            let l = slice.last().prefix64();
            let m = f.wrapping_add(l.wrapping_sub(f) / 2);
            let mut b = [0u8; 20];
            b[..8].copy_from_slice(&m.to_be_bytes());
            Id(b)
        };
        Table {
            nodes: BTreeMap::new(),
            by_ip: HashMap::new(),
            candidates: VecDeque::new(),
            candidates_verified: VecDeque::new(),
            prefer_verified: false,
            slice,
            reference: mid,
            out_per_bucket: vec![0; 161],
            max_nodes: max_nodes.max(1),
            max_out_per_bucket,
            confirmed: 0,
            in_slice: 0,
            generation: 0,
            turnover: true,
            sampled: VecDeque::new(),
            turned_over: 0,
            recent: HashMap::new(),
            recent_order: VecDeque::new(),
        }
    }

    /// Whether sampled nodes make room for newcomers (default on).
    pub fn set_turnover(&mut self, on: bool) {
        self.turnover = on;
    }

    /// Records that `id`'s samples came in: from now on it may make room
    /// for a newcomer when the table is full.
    pub fn mark_sampled(&mut self, id: &Id) {
        if !self.slice.contains(id) {
            // Routing nodes outside the slice are bounded per bucket and
            // stay.
            return;
        }
        if let Some(e) = self.nodes.get_mut(id) {
            if e.confirmed && !e.sampled {
                e.sampled = true;
                push_lazily(&mut self.sampled, *id, &self.nodes, self.max_nodes, |e| {
                    e.sampled
                });
            }
        }
    }

    /// Nodes that made room for newcomers after their samples came in.
    pub fn turned_over(&self) -> u64 {
        self.turned_over
    }

    /// Removes the node whose samples came in longest ago, remembering
    /// when it is next due; false if none.
    fn evict_sampled(&mut self) -> bool {
        while let Some(id) = self.sampled.pop_front() {
            if self.nodes.get(&id).is_some_and(|e| e.sampled) {
                if let Some(e) = self.remove(&id) {
                    if self.recent.insert(id, e.next_sample).is_none() {
                        self.recent_order.push_back(id);
                    }
                    while self.recent_order.len() > RECENT_PER_NODE * self.max_nodes {
                        if let Some(old) = self.recent_order.pop_front() {
                            self.recent.remove(&old);
                        }
                    }
                }
                self.turned_over += 1;
                return true;
            }
        }
        false
    }

    /// Prefer BEP 42-verified nodes (see the module docs). Set it before
    /// the first insertion.
    pub fn set_prefer_verified(&mut self, on: bool) {
        self.prefer_verified = on;
    }

    fn bucket(&self, id: &Id) -> usize {
        self.reference.bucket_index(id).unwrap_or(160)
    }

    /// An unverified out-of-slice entry of distance bucket `bucket` to make
    /// room for a verified node: a candidate, else (when `confirmed_too`)
    /// the confirmed one with the most failures.
    fn unverified_in_bucket(&self, bucket: usize, confirmed_too: bool) -> Option<Id> {
        use std::ops::Bound::{Excluded, Included};
        let b = u32::try_from(bucket).ok().filter(|b| *b < 160)?;
        // The bucket's ids share b bits with the reference and differ at
        // bit b; of those, only the ones outside the slice count.
        let (lo, hi) = prefix_range(&flip_bit(&self.reference, b), b + 1);
        let (first, last) = (self.slice.first(), self.slice.last());
        let below = (lo < first).then(|| {
            let end = if hi < first {
                Included(hi)
            } else {
                Excluded(first)
            };
            self.nodes.range((Included(lo), end))
        });
        let above = (hi > last).then(|| {
            let start = if lo > last {
                Included(lo)
            } else {
                Excluded(last)
            };
            self.nodes.range((start, Included(hi)))
        });
        let mut victim: Option<(&Id, &Entry)> = None;
        for (id, e) in below
            .into_iter()
            .flatten()
            .chain(above.into_iter().flatten())
        {
            if e.verified {
                continue;
            }
            if !e.confirmed {
                return Some(*id);
            }
            if confirmed_too && victim.is_none_or(|(_, v)| e.fails > v.fails) {
                victim = Some((id, e));
            }
        }
        victim.map(|(id, _)| *id)
    }

    /// Entries (candidates included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Confirmed entries.
    pub fn confirmed_len(&self) -> usize {
        self.confirmed
    }

    /// The entry for `id`.
    pub fn get(&self, id: &Id) -> Option<&Entry> {
        self.nodes.get(id)
    }

    /// The entry for `id`, mutably.
    pub fn get_mut(&mut self, id: &Id) -> Option<&mut Entry> {
        self.nodes.get_mut(id)
    }

    /// The id the table holds for `ip`.
    pub fn id_of_ip(&self, ip: &IpAddr) -> Option<Id> {
        self.by_ip.get(ip).copied()
    }

    /// Whether `id` falls in the shard's slice.
    pub fn in_slice(&self, id: &Id) -> bool {
        self.slice.contains(id)
    }

    /// Evicts the oldest candidate to make room for a newcomer: unverified
    /// ones first; a verified one only for a verified newcomer (or when
    /// verified nodes are not preferred: then there is one queue).
    fn evict_candidate(&mut self, newcomer_verified: bool) -> bool {
        for verified_queue in [false, true] {
            if verified_queue && !newcomer_verified {
                return false;
            }
            let queue = if verified_queue {
                &mut self.candidates_verified
            } else {
                &mut self.candidates
            };
            while let Some(id) = queue.pop_front() {
                if self.nodes.get(&id).is_some_and(|e| !e.confirmed) {
                    self.remove(&id);
                    return true;
                }
            }
        }
        false
    }

    /// Adds `node` as a candidate. Refused when its IP or id is already
    /// present (one entry per IP: a known IP never changes id this way), or
    /// when there is no room.
    pub fn insert_candidate(&mut self, node: NodeInfo, now: Instant) -> bool {
        self.insert(node, false, now)
    }

    /// Adds `node` as confirmed (it answered us from this endpoint with this
    /// id), or confirms the existing entry.
    pub fn confirm(&mut self, node: NodeInfo, now: Instant) -> bool {
        if let Some(e) = self.nodes.get_mut(&node.id) {
            if e.addr != node.addr {
                return false;
            }
            if !e.confirmed {
                e.confirmed = true;
                self.confirmed += 1;
            }
            e.fails = 0;
            e.last_reply = Some(now);
            return true;
        }
        self.insert(node, true, now)
    }

    fn insert(&mut self, node: NodeInfo, confirmed: bool, now: Instant) -> bool {
        if self.nodes.contains_key(&node.id) || self.by_ip.contains_key(&node.addr.ip()) {
            return false;
        }
        let verified = bep42_verify(&node.id, node.addr.ip());
        let preferred = self.prefer_verified && verified;
        let inside = self.slice.contains(&node.id);
        let bucket = self.bucket(&node.id);
        if !inside
            && self.out_per_bucket.get(bucket).copied().unwrap_or(u16::MAX)
                >= self.max_out_per_bucket
        {
            // A full bucket: only a verified node gets in, in the place of
            // an unverified one.
            let victim = if preferred {
                self.unverified_in_bucket(bucket, confirmed)
            } else {
                None
            };
            match victim {
                Some(v) => {
                    self.remove(&v);
                }
                None => return false,
            }
        }
        // Room at the bound: a node already sampled goes first (it gave
        // what a crawler wants of it; a candidate has not yet), then the
        // oldest candidate.
        if self.nodes.len() >= self.max_nodes
            && !(self.turnover && inside && self.evict_sampled())
            && !self.evict_candidate(verified || !self.prefer_verified)
        {
            return false;
        }
        // A node that made room before comes back with its due time: the
        // sweep leaves it until then, and it may make room again at once.
        let again = self.recent.get(&node.id).copied();
        self.nodes.insert(
            node.id,
            Entry {
                addr: node.addr,
                confirmed,
                last_reply: confirmed.then_some(now),
                last_query: None,
                fails: 0,
                next_sample: again.flatten(),
                sampled: again.is_some(),
                added: now,
                verified,
            },
        );
        if again.is_some() {
            push_lazily(
                &mut self.sampled,
                node.id,
                &self.nodes,
                self.max_nodes,
                |e| e.sampled,
            );
        }
        self.by_ip.insert(node.addr.ip(), node.id);
        self.generation = self.generation.wrapping_add(1);
        if inside {
            self.in_slice += 1;
        }
        if confirmed {
            self.confirmed += 1;
        } else {
            let queue = if preferred {
                &mut self.candidates_verified
            } else {
                &mut self.candidates
            };
            push_lazily(queue, node.id, &self.nodes, self.max_nodes, |e| {
                !e.confirmed
            });
        }
        if !inside {
            if let Some(c) = self.out_per_bucket.get_mut(bucket) {
                *c += 1;
            }
        }
        true
    }

    /// Removes `id`.
    pub fn remove(&mut self, id: &Id) -> Option<Entry> {
        let e = self.nodes.remove(id)?;
        if self.by_ip.get(&e.addr.ip()) == Some(id) {
            self.by_ip.remove(&e.addr.ip());
        }
        if e.confirmed {
            self.confirmed -= 1;
        }
        if self.slice.contains(id) {
            self.in_slice -= 1;
        } else {
            let b = self.bucket(id);
            if let Some(c) = self.out_per_bucket.get_mut(b) {
                *c = c.saturating_sub(1);
            }
        }
        Some(e)
    }

    /// Records a failed query to `id`: candidates go at once, confirmed
    /// nodes after [`MAX_FAILS`] in a row. Returns whether it was removed.
    pub fn fail(&mut self, id: &Id) -> bool {
        let Some(e) = self.nodes.get_mut(id) else {
            return false;
        };
        e.fails = e.fails.saturating_add(1);
        if !e.confirmed || e.fails >= MAX_FAILS {
            self.remove(id);
            return true;
        }
        false
    }

    fn count_range(&self, lo: Id, hi: Id, cap: usize) -> usize {
        self.nodes.range(lo..=hi).take(cap).count()
    }

    /// The (up to) `k` entries XOR-closest to `target`, closest first.
    pub fn closest(&self, target: &Id, k: usize, confirmed_only: bool) -> Vec<NodeInfo> {
        let mut out = Vec::with_capacity(k);
        // Candidates are filtered afterwards, so ask for more when needed.
        let want = if confirmed_only { k * 3 } else { k };
        self.closest_in(target, 0, want, &mut out);
        if confirmed_only {
            out.retain(|n| self.nodes.get(&n.id).is_some_and(|e| e.confirmed));
        }
        out.sort_by_key(|n| n.id.distance(target));
        out.truncate(k);
        out
    }

    /// Confirmed nodes near `target` for answering a query, appended to
    /// `out` sorted by XOR distance: up to `per_family` IPv4 nodes (when
    /// `v4`) and IPv6 nodes (when `v6`).
    ///
    /// This is the hot path of every find_node and get_peers we answer, so
    /// it trades exactness for cost: it walks outward from `target` in id
    /// order (at most `SCAN` entries each way) instead of running the exact
    /// prefix search of [`Table::closest`]. The XOR-closest nodes lie in the
    /// smallest prefix subtree around the target, which is a contiguous id
    /// range, so the numeric neighbours are almost always the XOR-closest;
    /// an ordinary node answers from its routing-table bucket, which is
    /// coarser still.
    pub fn nearby_confirmed(
        &self,
        target: &Id,
        per_family: usize,
        v4: bool,
        v6: bool,
        out: &mut Vec<NodeInfo>,
    ) {
        const SCAN: usize = 48;
        let start = out.len();
        if self.confirmed == 0 || !(v4 || v6) || per_family == 0 {
            return;
        }
        // Collect 3 × `per_family` of each family from both sides, then
        // keep the XOR-closest: in a test of 200 random targets over 2000
        // confirmed nodes, 198 answers were exactly the 8 closest (2× gave
        // 149).
        let cap4 = if v4 { 3 * per_family } else { 0 };
        let cap6 = if v6 { 3 * per_family } else { 0 };
        let mut counts = [0usize; 2];
        let caps = [cap4, cap6];
        let consider = |id: &Id, e: &Entry, counts: &mut [usize; 2], out: &mut Vec<NodeInfo>| {
            let f = usize::from(!e.addr.is_ipv4());
            if e.confirmed && counts[f] < caps[f] {
                counts[f] += 1;
                out.push(NodeInfo {
                    id: *id,
                    addr: e.addr,
                });
            }
        };
        let mut up = self.nodes.range(*target..).take(SCAN);
        let mut down = self.nodes.range(..*target).rev().take(SCAN);
        let (mut up_live, mut down_live) = (true, true);
        while (up_live || down_live) && (counts[0] < caps[0] || counts[1] < caps[1]) {
            if up_live {
                match up.next() {
                    Some((id, e)) => consider(id, e, &mut counts, out),
                    None => up_live = false,
                }
            }
            if down_live {
                match down.next() {
                    Some((id, e)) => consider(id, e, &mut counts, out),
                    None => down_live = false,
                }
            }
        }
        out[start..].sort_unstable_by_key(|n| n.id.distance(target));
        // Keep the closest `per_family` of each family, in order.
        let (mut k4, mut k6) = (0usize, 0usize);
        let mut w = start;
        for r in start..out.len() {
            let keep = if out[r].addr.is_ipv4() {
                k4 += 1;
                v4 && k4 <= per_family
            } else {
                k6 += 1;
                v6 && k6 <= per_family
            };
            if keep {
                out.swap(w, r);
                w += 1;
            }
        }
        out.truncate(w);
    }

    /// The `need` closest to `t` among ids sharing `p0` leading bits with `t`.
    fn closest_in(&self, t: &Id, p0: u32, need: usize, out: &mut Vec<NodeInfo>) {
        if need == 0 {
            return;
        }
        let (lo, hi) = prefix_range(t, p0);
        if self.count_range(lo, hi, need + 1) <= need {
            out.extend(self.nodes.range(lo..=hi).map(|(id, e)| NodeInfo {
                id: *id,
                addr: e.addr,
            }));
            return;
        }
        // Largest p >= p0 whose range still holds at least `need`.
        let (mut a, mut b) = (p0, 160);
        while a < b {
            let m = (a + b).div_ceil(2);
            let (l, h) = prefix_range(t, m);
            if self.count_range(l, h, need) >= need {
                a = m;
            } else {
                b = m - 1;
            }
        }
        let p = a;
        if p >= 160 {
            if let Some(e) = self.nodes.get(t) {
                out.push(NodeInfo {
                    id: *t,
                    addr: e.addr,
                });
            }
            return;
        }
        // Everything sharing p+1 bits (fewer than `need`), then the rest
        // from the sibling half, which orders by distance exactly like the
        // target with that bit flipped.
        let (l, h) = prefix_range(t, p + 1);
        let before = out.len();
        out.extend(self.nodes.range(l..=h).map(|(id, e)| NodeInfo {
            id: *id,
            addr: e.addr,
        }));
        let got = out.len() - before;
        self.closest_in(&flip_bit(t, p), p + 1, need.saturating_sub(got), out);
    }

    /// The slice's entries with an id above `after`, then from the slice's
    /// start up to `after` (the sweep's order).
    pub fn slice_after(&self, after: &Id) -> impl Iterator<Item = (&Id, &Entry)> {
        let (first, last) = (self.slice.first(), self.slice.last());
        let start = if self.slice.contains(after) {
            *after
        } else {
            first
        };
        let tail = self.nodes.range((
            std::ops::Bound::Excluded(start),
            std::ops::Bound::Included(last),
        ));
        let head = self.nodes.range(first..=start);
        tail.chain(head)
    }

    /// Entries inside the slice.
    pub fn slice_len(&self) -> usize {
        self.in_slice
    }

    /// Changes with every insertion (compare two readings).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A target between `id` and the next entry of the slice (or the slice's
    /// end): what the sweep asks about, so that replies fill the gap after
    /// `id`. (Asking about `id` itself returns only XOR-close nodes, which
    /// stop at prefix boundaries and leave whole regions unexplored.)
    pub fn gap_after(&self, id: &Id) -> Id {
        let next = self
            .nodes
            .range((std::ops::Bound::Excluded(*id), std::ops::Bound::Unbounded))
            .map(|(k, _)| *k)
            .find(|k| self.slice.contains(k));
        let (id, next) = match next {
            Some(n) => (*id, n),
            None => {
                // The last node: the gap runs to the slice's end and on from
                // its start to the first node; aim at the larger part.
                let first = self
                    .nodes
                    .range(self.slice.first()..)
                    .map(|(k, _)| *k)
                    .find(|k| self.slice.contains(k))
                    .unwrap_or(*id);
                let tail = self.slice.last().prefix64().wrapping_sub(id.prefix64());
                let head = first.prefix64().wrapping_sub(self.slice.first().prefix64());
                if tail >= head {
                    (*id, self.slice.last())
                } else {
                    (self.slice.first(), first)
                }
            }
        };
        let id = &id;
        let (a, b) = (id.prefix64(), next.prefix64());
        let mid = a.wrapping_add(b.wrapping_sub(a) / 2);
        let mut t = *id;
        t.0[..8].copy_from_slice(&mid.to_be_bytes());
        if mid == a {
            t = next;
        }
        t
    }

    /// The middle of the widest stretch of the slice holding no entry,
    /// skipping stretches that start at any prefix in `skip`, with that
    /// start's prefix. O(entries in the slice).
    pub fn widest_gap(&self, skip: &[u64]) -> Option<(Id, u64)> {
        let (first, last) = (self.slice.first(), self.slice.last());
        let mut prev = first.prefix64();
        let mut best: Option<(u64, u64)> = None; // (width, start)
        let mut consider = |start: u64, end: u64| {
            let w = end.wrapping_sub(start);
            if !skip.contains(&start) && best.is_none_or(|(bw, _)| w > bw) {
                best = Some((w, start));
            }
        };
        for id in self.nodes.range(first..=last).map(|(k, _)| k.prefix64()) {
            consider(prev, id);
            prev = id;
        }
        consider(prev, last.prefix64());
        let (w, start) = best?;
        if w < 2 {
            return None;
        }
        let mut t = Id([0x55; 20]);
        t.0[..8].copy_from_slice(&start.wrapping_add(w / 2).to_be_bytes());
        Some((t, start))
    }

    /// Entries with ids above `after`, in id order.
    pub fn iter_after(&self, after: &Id) -> impl Iterator<Item = (&Id, &Entry)> {
        self.nodes.range((
            std::ops::Bound::Excluded(*after),
            std::ops::Bound::Unbounded,
        ))
    }

    /// All entries.
    pub fn iter(&self) -> impl Iterator<Item = (&Id, &Entry)> {
        self.nodes.iter()
    }

    /// Confirmed nodes (to persist across restarts).
    pub fn known(&self) -> impl Iterator<Item = NodeInfo> + '_ {
        self.nodes
            .iter()
            .filter(|(_, e)| e.confirmed)
            .map(|(id, e)| NodeInfo {
                id: *id,
                addr: e.addr,
            })
    }

    /// Up to `n` entries around `id` (in id order), to re-ping a region.
    pub fn neighbours(&self, id: &Id, n: usize) -> Vec<NodeInfo> {
        self.closest(id, n, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn addr(i: u32) -> SocketAddr {
        SocketAddr::from((std::net::Ipv4Addr::from(0x7f00_0000 | i), 6881))
    }

    /// A full table of confirmed nodes takes a newcomer in the slice only
    /// by turnover: the node sampled longest ago makes room; unsampled
    /// confirmed nodes never do, and with turnover off nothing does.
    #[test]
    fn sampled_nodes_make_room_when_full() {
        let now = Instant::now();
        let mut rng = Rng::seed_from_u64(9);
        for turnover in [true, false] {
            let mut t = Table::new(Slice::full(), 4, 8);
            t.set_turnover(turnover);
            let nodes: Vec<NodeInfo> = (0..4)
                .map(|i| NodeInfo {
                    id: Id::random(&mut rng),
                    addr: addr(i + 1),
                })
                .collect();
            for n in &nodes {
                assert!(t.confirm(*n, now));
            }
            let newcomer = |i: u32, rng: &mut Rng| NodeInfo {
                id: Id::random(rng),
                addr: addr(100 + i),
            };
            // Nobody sampled yet: no room.
            assert!(!t.confirm(newcomer(0, &mut rng), now));
            t.mark_sampled(&nodes[2].id);
            t.mark_sampled(&nodes[0].id);
            t.mark_sampled(&nodes[2].id);
            let took = t.confirm(newcomer(1, &mut rng), now);
            assert_eq!(took, turnover);
            if turnover {
                // nodes[2] was sampled first, so it went first.
                assert!(t.get(&nodes[2].id).is_none());
                assert!(t.get(&nodes[0].id).is_some());
                assert!(t.confirm(newcomer(2, &mut rng), now));
                assert!(t.get(&nodes[0].id).is_none());
                // Only unsampled confirmed nodes are left: no room.
                assert!(!t.confirm(newcomer(3, &mut rng), now));
                assert!(!t.insert_candidate(newcomer(4, &mut rng), now));
                assert_eq!(t.turned_over(), 2);
                assert!(t.get(&nodes[1].id).is_some() && t.get(&nodes[3].id).is_some());
            } else {
                assert_eq!(t.turned_over(), 0);
            }
            assert_eq!(t.len(), 4);
        }
    }

    #[test]
    fn closest_is_exact() {
        let mut rng = Rng::seed_from_u64(5);
        let now = Instant::now();
        let mut t = Table::new(Slice::full(), 10_000, 8);
        let mut all = Vec::new();
        for i in 0..2000 {
            let id = Id::random(&mut rng);
            // Clustered ids too, to exercise deep prefixes.
            let id = if i % 3 == 0 {
                let mut c = id;
                c.0[..6].copy_from_slice(&[1, 2, 3, 4, 5, 6]);
                c
            } else {
                id
            };
            let n = NodeInfo {
                id,
                addr: addr(i + 1),
            };
            assert!(t.insert_candidate(n, now));
            all.push(n);
        }
        for round in 0..100 {
            let mut target = Id::random(&mut rng);
            if round % 2 == 0 {
                target.0[..6].copy_from_slice(&[1, 2, 3, 4, 5, 6]);
            }
            if round % 7 == 0 {
                target = all[round].id;
            }
            let mut sorted = all.clone();
            sorted.sort_by_cached_key(|n| n.id.distance(&target));
            for k in [1usize, 3, 8, 20] {
                let got = t.closest(&target, k, false);
                assert_eq!(got, sorted[..k], "round {round} k {k}");
            }
        }
    }

    #[test]
    fn nearby_confirmed_is_close_and_well_formed() {
        let mut rng = Rng::seed_from_u64(6);
        let now = Instant::now();
        let mut t = Table::new(Slice::full(), 10_000, 64);
        let mut confirmed = Vec::new();
        for i in 0..3000 {
            let n = NodeInfo {
                id: Id::random(&mut rng),
                addr: addr(i + 1),
            };
            // Two in three confirmed; the rest stay candidates.
            if i % 3 == 0 {
                assert!(t.insert_candidate(n, now));
            } else {
                assert!(t.confirm(n, now));
                confirmed.push(n);
            }
        }
        let mut exact_hits = 0;
        for _ in 0..200 {
            let target = Id::random(&mut rng);
            let mut got = Vec::new();
            t.nearby_confirmed(&target, 8, true, false, &mut got);
            assert_eq!(got.len(), 8);
            assert!(got
                .windows(2)
                .all(|w| w[0].id.distance(&target) <= w[1].id.distance(&target)));
            assert!(got.iter().all(|n| confirmed.contains(n)));
            let mut best = confirmed.clone();
            best.sort_by_cached_key(|n| n.id.distance(&target));
            // The closest confirmed node is always found, and most answers
            // are exactly the 8 closest.
            assert_eq!(got[0], best[0]);
            exact_hits += usize::from(got[..] == best[..8]);
            // No IPv6 asked for, none given; none known, none given.
            let mut six = Vec::new();
            t.nearby_confirmed(&target, 8, false, true, &mut six);
            assert!(six.is_empty());
        }
        assert!(
            exact_hits >= 180,
            "only {exact_hits}/200 answers were the exact 8 closest"
        );
    }

    /// A public address (bytes only: the table sends nothing).
    fn public(i: u32) -> SocketAddr {
        SocketAddr::from((std::net::Ipv4Addr::from(0x0b00_0001 + (i << 8)), 6881))
    }

    /// A node in distance bucket 0 of the lower half's table (top bit set),
    /// with an id valid for its address under BEP 42 or not.
    fn far_node(i: u32, verified: bool, rng: &mut Rng) -> NodeInfo {
        // The CRC of (address, r & 7) fixes the top 21 bits: find an
        // address with an r that sets the top bit.
        for k in 0.. {
            let addr = public(i * 64 + k);
            let id = if verified {
                let top = (0..8u8)
                    .map(|r| crate::id::bep42_id(addr.ip(), r, rng))
                    .find(|id| id.0[0] & 0x80 != 0);
                match top {
                    Some(id) => id,
                    None => continue,
                }
            } else {
                let mut id = Id::random(rng);
                id.0[0] |= 0x80;
                id
            };
            assert_eq!(bep42_verify(&id, addr.ip()), verified);
            return NodeInfo { id, addr };
        }
        unreachable!()
    }

    #[test]
    fn verified_nodes_beat_unverified_ones_in_a_full_bucket() {
        let now = Instant::now();
        let mut rng = Rng::seed_from_u64(11);
        let lower = Slice::full().part(0, 2);
        let mut t = Table::new(lower, 100, 2);
        t.set_prefer_verified(true);
        let u1 = far_node(1, false, &mut rng);
        let u2 = far_node(2, false, &mut rng);
        assert!(t.confirm(u1, now));
        assert!(t.insert_candidate(u2, now));
        assert!(!t.get(&u1.id).unwrap().verified);
        // Full: an unverified newcomer is refused, a verified candidate
        // takes the unverified candidate's place.
        assert!(!t.insert_candidate(far_node(3, false, &mut rng), now));
        let v1 = far_node(4, true, &mut rng);
        assert!(t.insert_candidate(v1, now));
        assert!(t.get(&u2.id).is_none());
        assert!(t.get(&v1.id).unwrap().verified);
        // A verified candidate does not push out a confirmed node.
        assert!(!t.insert_candidate(far_node(5, true, &mut rng), now));
        assert!(t.get(&u1.id).is_some());
        // A verified node that answered us does: it replaces the
        // unverified confirmed one.
        let v2 = far_node(6, true, &mut rng);
        assert!(t.confirm(v2, now));
        assert!(t.get(&u1.id).is_none());
        assert_eq!(t.confirmed_len(), 1);
        assert_eq!(t.len(), 2);
        // Now all verified: nothing more gets in.
        assert!(!t.confirm(far_node(7, true, &mut rng), now));

        // Off, the bucket is first come, first kept.
        let mut t = Table::new(lower, 100, 2);
        assert!(t.confirm(u1, now));
        assert!(t.insert_candidate(u2, now));
        assert!(!t.insert_candidate(far_node(4, true, &mut rng), now));
        assert!(!t.confirm(far_node(6, true, &mut rng), now));
    }

    #[test]
    fn at_the_bound_unverified_candidates_go_first() {
        let now = Instant::now();
        let mut rng = Rng::seed_from_u64(12);
        // The whole keyspace: every node is inside the slice.
        let mut t = Table::new(Slice::full(), 3, 8);
        t.set_prefer_verified(true);
        let v = far_node(1, true, &mut rng);
        let u1 = far_node(2, false, &mut rng);
        let u2 = far_node(3, false, &mut rng);
        for n in [v, u1, u2] {
            assert!(t.insert_candidate(n, now));
        }
        // A verified newcomer evicts the oldest unverified candidate, not
        // the older verified one.
        let v2 = far_node(4, true, &mut rng);
        assert!(t.insert_candidate(v2, now));
        assert!(t.get(&u1.id).is_none() && t.get(&v.id).is_some());
        // An unverified newcomer takes the last unverified one's place...
        let u3 = far_node(5, false, &mut rng);
        assert!(t.insert_candidate(u3, now));
        assert!(t.get(&u2.id).is_none());
        // ...but, with only verified candidates left, never theirs.
        assert!(t.insert_candidate(far_node(6, true, &mut rng), now));
        assert!(t.get(&u3.id).is_none());
        assert!(!t.insert_candidate(far_node(7, false, &mut rng), now));
        assert_eq!(t.len(), 3);
        assert!(t.iter().all(|(_, e)| e.verified));
        // Loopback and private addresses are exempt: verified whatever
        // their id.
        let mut t = Table::new(Slice::full(), 10, 8);
        t.set_prefer_verified(true);
        assert!(t.insert_candidate(
            NodeInfo {
                id: Id([0x42; 20]),
                addr: addr(1)
            },
            now
        ));
        assert!(t.get(&Id([0x42; 20])).unwrap().verified);
    }

    #[test]
    fn one_entry_per_ip_and_bounds() {
        let now = Instant::now();
        let mut t = Table::new(Slice::full().part(0, 2), 4, 1);
        let inside = |b: u8| {
            let mut id = Id([b; 20]);
            id.0[0] = 0x10;
            id
        };
        assert!(t.insert_candidate(
            NodeInfo {
                id: inside(1),
                addr: addr(1)
            },
            now
        ));
        // Same IP, other id (and other port): refused.
        let mut a = addr(1);
        a.set_port(9);
        assert!(!t.insert_candidate(
            NodeInfo {
                id: inside(2),
                addr: a
            },
            now
        ));
        // Same id, other IP: refused.
        assert!(!t.insert_candidate(
            NodeInfo {
                id: inside(1),
                addr: addr(2)
            },
            now
        ));
        // Outside the slice: one per bucket.
        let out1 = Id([0xf0; 20]);
        let mut out2 = Id([0xf0; 20]);
        out2.0[19] = 1;
        assert!(t.insert_candidate(
            NodeInfo {
                id: out1,
                addr: addr(3)
            },
            now
        ));
        assert!(!t.insert_candidate(
            NodeInfo {
                id: out2,
                addr: addr(4)
            },
            now
        ));
        // Bound: confirmed nodes push out candidates, oldest first.
        assert!(t.confirm(
            NodeInfo {
                id: inside(3),
                addr: addr(5)
            },
            now
        ));
        assert!(t.confirm(
            NodeInfo {
                id: inside(4),
                addr: addr(6)
            },
            now
        ));
        assert!(t.confirm(
            NodeInfo {
                id: inside(5),
                addr: addr(7)
            },
            now
        ));
        assert_eq!(t.len(), 4);
        assert!(t.get(&inside(1)).is_none());
        assert_eq!(t.confirmed_len(), 3);
        assert!(t.confirm(
            NodeInfo {
                id: inside(6),
                addr: addr(8)
            },
            now
        ));
        assert!(!t.confirm(
            NodeInfo {
                id: inside(7),
                addr: addr(9)
            },
            now
        ));
        assert_eq!(t.known().count(), 4);
        // Failures: confirmed nodes survive MAX_FAILS - 1.
        for _ in 0..MAX_FAILS - 1 {
            assert!(!t.fail(&inside(3)));
        }
        assert!(t.fail(&inside(3)));
        assert!(t.id_of_ip(&addr(5).ip()).is_none());
    }
}
