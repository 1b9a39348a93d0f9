//! Answering queries: admission (per-IP), forwarding keyed queries to the
//! key's owner shard, the answers themselves, and error replies.

use super::*;

impl Node {
    /// The shard that answers a query about `key`: its owner when queries
    /// are forwarded (one node to the outside), else this one.
    pub(super) fn answering_shard(&self, q: &Query<'_>) -> Option<u8> {
        if !self.cfg.forward_queries || self.cfg.nr_shards < 2 {
            return None;
        }
        let key = match q.method {
            Method::FindNode { target }
            | Method::SampleInfohashes { target }
            | Method::Unknown {
                target: Some(target),
                ..
            } => target,
            Method::GetPeers { infohash, .. } | Method::AnnouncePeer { infohash, .. } => infohash,
            Method::Ping | Method::Unknown { target: None, .. } => return None,
        };
        self.owner(&key).filter(|o| *o != self.cfg.shard)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn handle_query(
        &mut self,
        identity: u8,
        from: SocketAddr,
        msg: &Message<'_>,
        q: &Query<'_>,
        data: &[u8],
        fwd: bool,
        now: Instant,
    ) {
        // A forwarded query was admitted (per-IP, ids, table) by the shard
        // the kernel gave it to.
        if !fwd && !self.per_ip_in.check(now, from.ip()) {
            count(&mut self.stats.dropped.per_ip_in);
            return;
        }
        if q.id == Id::ZERO {
            count(&mut self.stats.dropped.zero_id);
            return;
        }
        if self.is_own_id(&q.id) {
            count(&mut self.stats.dropped.own_id);
            return;
        }
        let Some(our_id) = self.our_id(identity) else {
            return;
        };
        // BEP 43: a read-only sender is answered but never inserted. Others
        // become candidates, confirmed only if they answer us later; an IP
        // already in the table keeps its entry whatever id this packet claims.
        if !msg.read_only && !fwd {
            self.add_candidate(
                NodeInfo {
                    id: q.id,
                    addr: from,
                },
                now,
            );
        }
        if !fwd {
            if let Some(owner) = self.answering_shard(q) {
                // One node to the outside: the key's owner answers, from its
                // own socket on the same address, with its store, its pool
                // and its dense table of the key's neighbourhood.
                count(&mut self.stats.queries_forwarded_out);
                let mut bytes = self.buffer();
                bytes.extend_from_slice(data);
                self.actions.push_back(Action::ToShard {
                    shard: owner,
                    msg: ShardMsg::Query {
                        identity,
                        from,
                        bytes,
                    },
                });
                return;
            }
        }
        let (n4, n6) = want_families(q.want, &from);
        let version = self.cfg.version;
        let header = Header {
            tid: msg.tid,
            version: version.as_ref().map(|v| &v[..]),
        };
        let mut nodes = std::mem::take(&mut self.scratch_nodes);
        let mut peers = std::mem::take(&mut self.scratch_peers);
        let mut samples = std::mem::take(&mut self.scratch_ids);
        nodes.clear();
        peers.clear();
        samples.clear();
        let fill_nodes = |table: &Table, target: &Id, nodes: &mut Vec<NodeInfo>| {
            table.nearby_confirmed(target, K, n4, n6, nodes);
        };
        let mut buf = self.buffer();
        let answered;
        match q.method {
            Method::Ping => {
                answered = Answered::Ping;
                encode_response(
                    &mut buf,
                    &header,
                    Some(from),
                    &our_id,
                    &ResponseBody::default(),
                );
            }
            Method::FindNode { target }
            | Method::Unknown {
                target: Some(target),
                ..
            } => {
                answered = if matches!(q.method, Method::FindNode { .. }) {
                    Answered::FindNode
                } else {
                    Answered::Other
                };
                fill_nodes(&self.table, &target, &mut nodes);
                let body = ResponseBody {
                    nodes: &nodes,
                    nodes6: &nodes,
                    ..Default::default()
                };
                encode_response(&mut buf, &header, Some(from), &our_id, &body);
            }
            Method::Unknown { target: None, .. } => {
                self.recycle(buf);
                self.scratch_nodes = nodes;
                self.scratch_peers = peers;
                self.scratch_ids = samples;
                self.send_error(
                    identity,
                    from,
                    msg.tid,
                    ErrorCode::MethodUnknown,
                    "method unknown",
                    now,
                );
                return;
            }
            Method::GetPeers {
                infohash, scrape, ..
            } => {
                answered = Answered::GetPeers;
                fill_nodes(&self.table, &infohash, &mut nodes);
                // A scrape (BEP 33) is answered as libtorrent does: the two
                // filters instead of `values` (which would not fit beside
                // them), nothing when no peer is stored.
                let filters = if scrape {
                    self.store.scrape(&infohash)
                } else {
                    self.store.peers(&infohash, &mut peers);
                    peers.retain(|p| p.is_ipv4() == from.is_ipv4());
                    None
                };
                let token = self.tokens.generate(from.ip(), &infohash, now);
                let body = ResponseBody {
                    nodes: &nodes,
                    nodes6: &nodes,
                    values: &peers,
                    token: Some(&token),
                    samples: None,
                    scrape: filters.as_ref().map(|(s, p)| (s, p)),
                };
                encode_response(&mut buf, &header, Some(from), &our_id, &body);
                self.harvest(infohash, Source::GetPeers, Vec::new(), None, now);
            }
            Method::AnnouncePeer {
                infohash,
                port,
                implied_port,
                token,
                seed,
            } => {
                let port = if implied_port { from.port() } else { port };
                let peer = SocketAddr::new(from.ip(), port);
                let err = if !self.tokens.verify(token, from.ip(), &infohash, now) {
                    Some("invalid token")
                } else if !is_valid_peer(&peer, self.cfg.allow_private) {
                    Some("invalid port")
                } else {
                    None
                };
                if let Some(e) = err {
                    self.recycle(buf);
                    self.scratch_nodes = nodes;
                    self.scratch_peers = peers;
                    self.scratch_ids = samples;
                    self.send_error(identity, from, msg.tid, ErrorCode::Protocol, e, now);
                    return;
                }
                answered = Answered::AnnouncePeer;
                let new_torrent = !self.store.contains(&infohash);
                let seed = seed.unwrap_or(false);
                if self.store.announce(infohash, peer, seed, now) && new_torrent && !self.cfg.crawl
                {
                    self.pool.offer(infohash, &mut self.rng);
                }
                encode_response(
                    &mut buf,
                    &header,
                    Some(from),
                    &our_id,
                    &ResponseBody::default(),
                );
                self.harvest(infohash, Source::Announce, vec![peer], None, now);
            }
            Method::SampleInfohashes { target } => {
                answered = Answered::SampleInfohashes;
                fill_nodes(&self.table, &target, &mut nodes);
                self.pool.sample(20, &mut self.rng, &mut samples);
                let body = ResponseBody {
                    nodes: &nodes,
                    nodes6: &nodes,
                    samples: Some((
                        &samples,
                        self.cfg.sample_interval.min(21_600),
                        self.pool.num(),
                    )),
                    ..Default::default()
                };
                encode_response(&mut buf, &header, Some(from), &our_id, &body);
            }
        }
        self.scratch_nodes = nodes;
        self.scratch_peers = peers;
        self.scratch_ids = samples;
        if self.send_reply(identity, from, buf, now) {
            let a = &mut self.stats.answered;
            count(match answered {
                Answered::Ping => &mut a.ping,
                Answered::FindNode => &mut a.find_node,
                Answered::GetPeers => &mut a.get_peers,
                Answered::AnnouncePeer => &mut a.announce_peer,
                Answered::SampleInfohashes => &mut a.sample_infohashes,
                Answered::Other => &mut a.other,
            });
        }
    }

    pub(super) fn bad_query(
        &mut self,
        identity: u8,
        from: SocketAddr,
        tid: &[u8],
        code: ErrorCode,
        message: &str,
        now: Instant,
    ) {
        if !self.per_ip_in.check(now, from.ip()) {
            count(&mut self.stats.dropped.per_ip_in);
            return;
        }
        self.send_error(identity, from, tid, code, message, now);
    }

    pub(super) fn send_error(
        &mut self,
        identity: u8,
        to: SocketAddr,
        tid: &[u8],
        code: ErrorCode,
        message: &str,
        now: Instant,
    ) {
        let mut buf = self.buffer();
        let version = self.cfg.version;
        encode_error(
            &mut buf,
            &Header {
                tid,
                version: version.as_ref().map(|v| &v[..]),
            },
            Some(to),
            code,
            message,
        );
        if self.send_reply(identity, to, buf, now) {
            count(&mut self.stats.errors_sent);
        }
    }

    pub(super) fn send_reply(
        &mut self,
        identity: u8,
        to: SocketAddr,
        buf: Vec<u8>,
        now: Instant,
    ) -> bool {
        if !self.budget.can_send(now, buf.len(), Tier::Respond) {
            count(&mut self.stats.dropped.budget);
            self.recycle(buf);
            return false;
        }
        if !self.per_ip_out.check(now, to.ip()) {
            count(&mut self.stats.dropped.per_ip_out);
            self.recycle(buf);
            return false;
        }
        self.budget.try_send(now, buf.len(), Tier::Respond);
        self.push_transmit(identity, to, buf);
        true
    }
}
