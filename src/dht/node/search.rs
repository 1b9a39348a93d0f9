//! Peer searches for the harvester: samples and passive sightings taken to
//! the owner and into the [`Harvester`], then what it asks for: get_peers
//! to a sample's holder first, iterative lookups otherwise, and fetches
//! handed to the runtime.

use super::*;

impl Node {
    // ------------------------------------------------------------------
    // Harvest pipeline.

    pub(super) fn on_sample(&mut self, infohash: Id, holder: NodeInfo, now: Instant) {
        self.harvest(infohash, Source::Sample, Vec::new(), Some(holder), now);
    }

    /// A seen infohash (passively, or as a sample with the node that holds
    /// its peers): to the owner shard.
    pub(super) fn harvest(
        &mut self,
        infohash: Id,
        source: Source,
        peers: Vec<SocketAddr>,
        holder: Option<NodeInfo>,
        now: Instant,
    ) {
        if !self.cfg.crawl {
            return;
        }
        match self.owner(&infohash) {
            None => count(&mut self.stats.dropped.foreign_key),
            Some(s) if s == self.cfg.shard => self.discover(infohash, source, peers, holder, now),
            Some(shard) => {
                let msg = match holder {
                    Some(holder) => ShardMsg::Sampled { infohash, holder },
                    None => ShardMsg::Harvested {
                        infohash,
                        source,
                        peers,
                    },
                };
                self.actions.push_back(Action::ToShard { shard, msg });
            }
        }
    }

    /// On the owner shard: the harvester takes the infohash in (or merges
    /// its peers), then runs what it wants.
    pub(super) fn discover(
        &mut self,
        infohash: Id,
        source: Source,
        peers: Vec<SocketAddr>,
        holder: Option<NodeInfo>,
        now: Instant,
    ) {
        if !self.cfg.crawl {
            return;
        }
        match self.harvest.discover(infohash, source, &peers, holder) {
            Discovered::New => {
                match source {
                    Source::Sample => count(&mut self.stats.infohashes.sample),
                    Source::GetPeers => count(&mut self.stats.infohashes.get_peers),
                    Source::Announce => count(&mut self.stats.infohashes.announce),
                }
                self.pool.offer(infohash, &mut self.rng);
                // Every shard serves samples from the same set.
                if self.cfg.forward_queries {
                    for shard in 0..self.cfg.nr_shards {
                        if shard != self.cfg.shard {
                            self.actions.push_back(Action::ToShard {
                                shard,
                                msg: ShardMsg::Offer { infohash },
                            });
                        }
                    }
                }
                self.actions
                    .push_back(Action::Discovered { infohash, source });
            }
            Discovered::InProgress => {
                if !peers.is_empty() && self.harvest.is_fetching(&infohash) {
                    self.actions
                        .push_back(Action::MorePeers { infohash, peers });
                }
            }
            Discovered::Shed => {
                count(&mut self.stats.dropped.harvest_full);
                // The table is full of entries at least as good. One that
                // someone announced or a node sampled is worth keeping:
                // it goes to the store as pending and is resumed later
                // (a get_peers-only sighting, most of a flood, is not).
                if source != Source::GetPeers {
                    self.actions
                        .push_back(Action::Discovered { infohash, source });
                }
            }
            Discovered::Stored | Discovered::GivenUp => {}
        }
        self.drive_harvest(now);
    }

    /// Hands out what the harvester wants: peer searches (while the node's
    /// search backlog has room), fetches, and the given-up infohashes.
    pub(super) fn drive_harvest(&mut self, now: Instant) {
        let exploit_before = self.exploit.len();
        while self.exploit.len() + self.lookup_queue.len() < SEARCH_BACKLOG {
            let Some(req) = self.harvest.poll_search() else {
                break;
            };
            match req.holder {
                Some(h) if self.exploit.len() < MAX_EXPLOIT_QUEUE => {
                    self.exploit.push_back(ExploitJob {
                        infohash: req.infohash,
                        holder: h,
                        since: now,
                    });
                }
                _ => self.start_lookup(req.infohash, Vec::new(), now),
            }
        }
        if self.exploit.len() > exploit_before {
            // Exploitation first: new holder queries are tried as soon as
            // the datagram or message that made them is processed.
            self.exploit_new = true;
        }
        while let Some(f) = self.harvest.poll_fetch() {
            count(&mut self.stats.emitted);
            self.actions.push_back(Action::Fetch {
                infohash: f.infohash,
                source: f.source,
                peers: f.peers,
            });
        }
        while let Some(infohash) = self.harvest.poll_given_up() {
            self.actions.push_back(Action::GaveUp { infohash });
        }
        while let Some((infohash, nodes)) = self.harvest.poll_scrape() {
            self.start_scrape(infohash, &nodes, now);
        }
    }

    // ------------------------------------------------------------------
    // BEP 33 scrapes of stored torrents.
    //
    // Cost, bounded: one scrape per stored torrent, at most `scrape_nodes`
    // get_peers (`scrape = 1`; no `noseed`: seeds are what we count), sent
    // once each, only to the nodes that answered its peer search with
    // `values` (the ones that store its peers), at the exploration tier
    // (they wait for what is above half the budget, never crowding out
    // searches and answers). No retries; no re-scrape later in the run.
    // A scrape query is 117 bytes (4-byte tid, our version); its reply
    // carries 532 bytes of filters (two 256-byte strings and their keys)
    // in place of `values`. Lookup and holder get_peers
    // do not ask for a scrape: a scrape reply carries no `values`
    // (libtorrent answers one or the other), and `values` are what a
    // search needs.

    fn start_scrape(&mut self, infohash: Id, nodes: &[NodeInfo], now: Instant) {
        if self.scrapes.len() >= MAX_SCRAPES || self.scrapes.contains_key(&infohash) {
            count(&mut self.stats.scrapes.skipped);
            return;
        }
        let m = Method::GetPeers {
            infohash,
            noseed: false,
            scrape: true,
        };
        let mut sent = 0u8;
        for n in nodes {
            let kind = Kind::Scrape { infohash };
            if self
                .send_query(n.addr, Some(n.id), kind, &m, Tier::Explore, now)
                .is_ok()
            {
                sent = sent.saturating_add(1);
            }
        }
        if sent == 0 {
            count(&mut self.stats.scrapes.skipped);
            return;
        }
        count(&mut self.stats.scrapes.started);
        self.scrapes.insert(
            infohash,
            ScrapeJob {
                seeds: ScrapeBloom::default(),
                peers: ScrapeBloom::default(),
                outstanding: sent,
                answered: 0,
            },
        );
    }

    /// A node answered a scrape: its filters are merged in (a reply
    /// without both filters, or with filters of the wrong size, counts as
    /// no answer).
    pub(super) fn on_scrape_reply(&mut self, infohash: Id, r: &Response<'_>, _now: Instant) {
        let answered = match (r.bf_seeds, r.bf_peers) {
            (Some(seeds), Some(peers)) => {
                if let Some(job) = self.scrapes.get_mut(&infohash) {
                    job.seeds.union(seeds);
                    job.peers.union(peers);
                }
                count(&mut self.stats.scrapes.answered);
                true
            }
            _ => false,
        };
        self.scrape_done(infohash, answered);
    }

    /// One scrape query of `infohash` is over; the last one turns the merged
    /// filters into an estimate.
    pub(super) fn scrape_done(&mut self, infohash: Id, answered: bool) {
        let Some(job) = self.scrapes.get_mut(&infohash) else {
            return;
        };
        job.outstanding = job.outstanding.saturating_sub(1);
        if answered {
            job.answered = job.answered.saturating_add(1);
        }
        if job.outstanding > 0 {
            return;
        }
        let Some(job) = self.scrapes.remove(&infohash) else {
            return;
        };
        if job.answered == 0 {
            return;
        }
        let (s, p) = (job.seeds.estimate(), job.peers.estimate());
        count(&mut self.stats.scrapes.estimated);
        if s.saturated || p.saturated {
            count(&mut self.stats.scrapes.saturated);
        }
        self.actions.push_back(Action::Scraped {
            infohash,
            seeders: s.count(),
            leechers: p.count(),
        });
    }

    /// The peer search for `infohash` is over.
    pub(super) fn finish(&mut self, infohash: Id, peers: Vec<SocketAddr>, now: Instant) {
        self.harvest.search_done(&infohash, &peers, now);
    }

    pub(super) fn start_lookup(&mut self, infohash: Id, seeds: Vec<NodeInfo>, now: Instant) {
        let Some(source) = self.harvest.searching(&infohash) else {
            return;
        };
        if self.lookups.len() >= self.cfg.max_lookups {
            if self.lookup_queue.len() >= MAX_EXPLOIT_QUEUE {
                self.finish(infohash, Vec::new(), now);
            } else {
                self.lookup_queue.push_back((infohash, seeds));
            }
            return;
        }
        let mut l = Lookup::new(infohash, source, seeds);
        for n in self.table.closest(&infohash, 16, false) {
            l.add(n);
        }
        count(&mut self.stats.lookups);
        let id = self.next_lookup;
        self.next_lookup = self.next_lookup.wrapping_add(1);
        self.lookups.insert(id, l);
        self.step_lookup(id, now);
    }

    /// Sends what lookup `id` wants to send; finishes it when done.
    /// Returns false when out of budget.
    pub(super) fn step_lookup(&mut self, id: u32, now: Instant) -> bool {
        let Some(mut l) = self.lookups.remove(&id) else {
            return true;
        };
        let mut ok = true;
        // Lookups for infohashes seen only in someone's get_peers run as
        // exploration: anyone can send us get_peers for random infohashes,
        // and each lookup costs up to MAX_QUERIES datagrams to third
        // parties, so they must never crowd out real exploitation.
        let tier = if l.source == Source::GetPeers {
            Tier::Explore
        } else {
            Tier::Exploit
        };
        while let Some(n) = l.next_query() {
            let m = Method::GetPeers {
                infohash: l.target,
                noseed: false,
                scrape: false,
            };
            match self.send_query(
                n.addr,
                Some(n.id),
                Kind::LookupGetPeers { lookup: id },
                &m,
                tier,
                now,
            ) {
                Ok(()) => {}
                Err(SendError::Budget | SendError::InflightFull) => {
                    l.unsend(n.addr);
                    ok = false;
                    break;
                }
                // That IP's share is used up for now: ask it next tick
                // rather than count a healthy node as failed.
                Err(SendError::PerIp) => {
                    l.unsend(n.addr);
                    break;
                }
                Err(_) => l.on_fail(n.addr),
            }
        }
        if l.done() {
            let peers = std::mem::take(&mut l.peers);
            self.finish(l.target, peers, now);
            self.start_queued_lookup(now);
            self.drive_harvest(now);
        } else {
            self.lookups.insert(id, l);
        }
        ok
    }

    pub(super) fn start_queued_lookup(&mut self, now: Instant) {
        while self.lookups.len() < self.cfg.max_lookups {
            let Some((infohash, seeds)) = self.lookup_queue.pop_front() else {
                return;
            };
            self.start_lookup(infohash, seeds, now);
        }
    }

    pub(super) fn pump_exploit(&mut self, now: Instant) {
        let mut n = self.exploit.len();
        // Holders whose per-IP share is used up in this pass: their other
        // jobs wait without asking the limiter again (a reply of 20 samples
        // makes 20 jobs for one holder).
        let mut refused: Vec<IpAddr> = Vec::new();
        while n > 0 {
            n -= 1;
            let Some(job) = self.exploit.pop_front() else {
                break;
            };
            if refused.contains(&job.holder.addr.ip()) {
                self.exploit.push_back(job);
                continue;
            }
            if self.harvest.searching(&job.infohash).is_none() {
                continue;
            }
            if now.saturating_duration_since(job.since) > EXPLOIT_MAX_WAIT {
                self.start_lookup(job.infohash, Vec::new(), now);
                continue;
            }
            let m = Method::GetPeers {
                infohash: job.infohash,
                noseed: false,
                scrape: false,
            };
            let kind = Kind::HolderGetPeers {
                infohash: job.infohash,
            };
            match self.send_query(
                job.holder.addr,
                Some(job.holder.id),
                kind,
                &m,
                Tier::Exploit,
                now,
            ) {
                Ok(()) => {}
                Err(SendError::Budget | SendError::InflightFull) => {
                    self.exploit.push_front(job);
                    break;
                }
                // That IP's share is used up for now: keep the job, try later.
                Err(SendError::PerIp) => {
                    if refused.len() < 64 {
                        refused.push(job.holder.addr.ip());
                    }
                    self.exploit.push_back(job);
                }
                Err(SendError::Martian | SendError::NoIdentity) => {
                    self.start_lookup(job.infohash, Vec::new(), now)
                }
            }
        }
    }

    pub(super) fn pump_lookups(&mut self, now: Instant) {
        let ids: Vec<u32> = self.lookups.keys().copied().collect();
        for id in ids {
            if !self.step_lookup(id, now) {
                break;
            }
        }
        self.start_queued_lookup(now);
    }
}
