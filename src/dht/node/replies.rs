//! Replies to our own queries, matched to their transaction: what a
//! response teaches the table, the sweep, the harvester and the lookups;
//! what an error or a timeout costs the node that sent it (or failed to).

use super::*;

impl Node {
    pub(super) fn on_response(
        &mut self,
        p: Pending,
        from: SocketAddr,
        r: &Response<'_>,
        now: Instant,
    ) {
        if r.id == Id::ZERO || self.is_own_id(&r.id) {
            count(&mut self.stats.dropped.own_id);
            self.on_failure(p, now);
            return;
        }
        // A confirmed endpoint answering with another id: evict it and
        // re-ping its neighbourhood (libtorrent PR #961). Only a reply to our
        // own query (tid + exact endpoint already matched) gets here.
        if let Some(old) = self.table.id_of_ip(&from.ip()) {
            if old != r.id {
                let confirmed_here = self
                    .table
                    .get(&old)
                    .is_some_and(|e| e.confirmed && e.addr == from);
                if confirmed_here {
                    self.table.remove(&old);
                    count(&mut self.stats.evicted_id_change);
                    for n in self.table.neighbours(&old, K) {
                        if self.reping.len() < MAX_REPING_QUEUE {
                            self.reping.push_back(n);
                        }
                    }
                    self.on_failure(p, now);
                    return;
                }
                if self.table.get(&old).is_some_and(|e| !e.confirmed) {
                    // What we heard about this IP was wrong; the reply is
                    // authoritative.
                    self.table.remove(&old);
                }
            }
        }
        if let Some(exp) = p.expected {
            if exp != r.id {
                self.table.fail(&exp);
                self.on_failure(p, now);
                return;
            }
        }
        self.table.confirm(
            NodeInfo {
                id: r.id,
                addr: from,
            },
            now,
        );
        let holder = NodeInfo {
            id: r.id,
            addr: from,
        };
        match p.kind {
            Kind::Ping | Kind::FindNode => self.add_nodes_from(r, now),
            Kind::Sample => {
                self.add_nodes_from(r, now);
                let next = match r.as_samples() {
                    Ok(s) => {
                        self.stats.sample_replies = self.stats.sample_replies.saturating_add(1);
                        self.stats.samples_received =
                            self.stats.samples_received.saturating_add(s.len() as u64);
                        for infohash in s.samples() {
                            self.on_sample(infohash, holder, now);
                        }
                        self.table.mark_sampled(&r.id);
                        Duration::from_secs(u64::from(s.interval)).max(self.cfg.min_resample)
                    }
                    Err(_) => SAMPLE_RETRY,
                };
                self.set_next_sample(&r.id, now + next);
            }
            Kind::HolderGetPeers { infohash } => {
                let peers = self.valid_peers(r);
                if peers.is_empty() {
                    let seeds = self.acceptable_nodes(r);
                    self.add_nodes_from(r, now);
                    self.start_lookup(infohash, seeds, now);
                } else {
                    self.harvest.note_value_node(&infohash, holder);
                    self.finish(infohash, peers, now);
                    self.drive_harvest(now);
                }
            }
            Kind::Scrape { infohash } => self.on_scrape_reply(infohash, r, now),
            Kind::LookupGetPeers { lookup } => {
                let peers = self.valid_peers(r);
                let nodes = self.acceptable_nodes(r);
                self.add_nodes_from(r, now);
                if let Some(l) = self.lookups.get_mut(&lookup) {
                    if !peers.is_empty() {
                        self.harvest.note_value_node(&l.target, holder);
                    }
                    l.on_reply(from, peers);
                    for n in nodes {
                        l.add(n);
                    }
                    self.step_lookup(lookup, now);
                }
            }
        }
    }

    fn valid_peers(&self, r: &Response<'_>) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = r
            .peers()
            .filter(|p| is_valid_peer(p, self.cfg.allow_private))
            .take(crate::dht::lookup::MAX_PEERS)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The nodes of both families in `r` that the table may take.
    fn acceptable_nodes(&self, r: &Response<'_>) -> Vec<NodeInfo> {
        r.nodes
            .iter()
            .chain(r.nodes6.iter())
            .filter(|n| self.acceptable_node(n))
            .collect()
    }

    pub(super) fn on_error(&mut self, p: Pending, now: Instant) {
        // The node is alive but said no.
        if let (Kind::Sample, Some(id)) = (p.kind, p.expected) {
            self.set_next_sample(&id, now + SAMPLE_RETRY);
            return;
        }
        self.on_failure(p, now);
    }

    pub(super) fn on_failure(&mut self, p: Pending, now: Instant) {
        match p.kind {
            Kind::Ping | Kind::FindNode | Kind::Sample => {
                if let Some(id) = p.expected {
                    if self.table.get(&id).is_some_and(|e| e.addr == p.to) {
                        if p.kind == Kind::Sample {
                            // Unanswered is not an interval: ask again soon
                            // (if the node survives its failures).
                            self.set_next_sample(&id, now + SAMPLE_UNANSWERED_RETRY);
                        }
                        self.table.fail(&id);
                    }
                }
            }
            Kind::HolderGetPeers { infohash } => {
                if let Some(id) = p.expected {
                    self.table.fail(&id);
                }
                self.start_lookup(infohash, Vec::new(), now);
            }
            Kind::LookupGetPeers { lookup } => {
                if let Some(l) = self.lookups.get_mut(&lookup) {
                    l.on_fail(p.to);
                    self.step_lookup(lookup, now);
                }
            }
            Kind::Scrape { infohash } => self.scrape_done(infohash, false),
        }
    }
}
