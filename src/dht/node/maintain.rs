//! Table maintenance and exploration: bootstrap, the BEP 51 sweep of the
//! slice, find_node walks into it, verification of heard-of nodes, and the
//! re-pinging of stale and displaced ones. All of it is exploration
//! traffic, the first to stop when the budget is short.

use super::*;

impl Node {
    pub(super) fn pump_reping(&mut self, now: Instant) {
        while let Some(n) = self.reping.front().copied() {
            if !self.explore_room() {
                return;
            }
            match self.explore_ping(n, now) {
                Err(SendError::Budget | SendError::InflightFull) => return,
                _ => {
                    self.reping.pop_front();
                }
            }
        }
    }

    pub(super) fn pump_bootstrap(&mut self, now: Instant) {
        if now < self.next_bootstrap || self.table.confirmed_len() >= MIN_CONFIRMED {
            return;
        }
        self.next_bootstrap = now + BOOTSTRAP_INTERVAL;
        let target = self.slice.random_id(&mut self.rng);
        for addr in self.cfg.bootstrap.clone() {
            let _ = self.explore_find_node(addr, None, target, now);
        }
    }

    /// mldht's keyspace traversal: the slice's nodes in id order, each asked
    /// for samples once per its interval (see [`super::sweep`]).
    pub(super) fn pump_sweep(&mut self, now: Instant) {
        // Finish what was started first: while the holders of samples
        // already received wait to be asked, sampling more only grows the
        // backlog.
        if self.exploit.len() >= SEARCH_BACKLOG / 2 {
            return;
        }
        let generation = self.table.generation();
        if !self.sweep.is_active(generation, self.cfg.tick, now) {
            return;
        }
        let timeout = self.cfg.query_timeout;
        // One round of the slice at most per call.
        let mut budget_scan = self.table.slice_len();
        loop {
            if !self.explore_room() || !self.budget.can_send(now, 128, Tier::Explore) {
                return;
            }
            let (mut n, mut last, mut earliest, mut due) = (0, None, None::<Instant>, None);
            for (id, e) in self
                .table
                .slice_after(&self.sweep.cursor)
                .take(SCAN_PER_TICK.min(budget_scan.max(1)))
            {
                n += 1;
                last = Some(*id);
                let at = e
                    .next_sample
                    .unwrap_or(now)
                    .max(e.last_query.map_or(now, |q| q + timeout));
                if at <= now {
                    due = Some((*id, e.addr));
                    break;
                }
                earliest = Some(earliest.map_or(at, |x| x.min(at)));
            }
            let Some((id, addr)) = due else {
                let slice_len = self.table.slice_len();
                if self
                    .sweep
                    .nothing_due(last, n, earliest, slice_len, generation, now)
                {
                    return;
                }
                budget_scan = budget_scan.saturating_sub(n);
                if budget_scan == 0 {
                    return;
                }
                continue;
            };
            self.sweep.found(id);
            let m = Method::SampleInfohashes {
                target: self.table.gap_after(&id),
            };
            match self.send_query(addr, Some(id), Kind::Sample, &m, Tier::Explore, now) {
                Ok(()) => {
                    // Until the reply says otherwise, do not ask again soon.
                    self.set_next_sample(&id, now + self.cfg.min_resample);
                }
                Err(SendError::PerIp) => {
                    self.set_next_sample(&id, now + Duration::from_secs(1));
                }
                Err(SendError::Budget | SendError::InflightFull) => return,
                Err(SendError::Martian | SendError::NoIdentity) => {
                    self.table.remove(&id);
                }
            }
        }
    }

    /// Pings `n` (is it still there?) as exploration traffic.
    fn explore_ping(&mut self, n: NodeInfo, now: Instant) -> Result<(), SendError> {
        self.send_query(
            n.addr,
            Some(n.id),
            Kind::Ping,
            &Method::Ping,
            Tier::Explore,
            now,
        )
    }

    /// When `id` may be sampled next (the sweep wakes for it).
    pub(super) fn set_next_sample(&mut self, id: &Id, at: Instant) {
        if let Some(e) = self.table.get_mut(id) {
            e.next_sample = Some(at);
            self.sweep.due_at(at);
        }
    }

    /// Out-of-slice nodes we heard of: confirm them with a find_node aimed
    /// at our slice, which also pulls in nodes nearer to it.
    pub(super) fn pump_verify(&mut self, now: Instant) {
        while let Some(id) = self.verify.front().copied() {
            if !self.explore_room() {
                return;
            }
            let Some(addr) = self.table.get(&id).filter(|e| !e.confirmed).map(|e| e.addr) else {
                self.verify.pop_front();
                continue;
            };
            let target = self.slice.random_id(&mut self.rng);
            match self.explore_find_node(addr, Some(id), target, now) {
                Err(SendError::Budget | SendError::InflightFull) => return,
                Err(SendError::PerIp) => {
                    self.verify.pop_front();
                    self.verify.push_back(id);
                    return;
                }
                _ => {
                    self.verify.pop_front();
                }
            }
        }
    }

    /// A find_node walk into the slice: ask the nodes closest to a random
    /// target in it (candidates included, which verifies them).
    pub(super) fn pump_walk(&mut self, now: Instant) {
        if now < self.next_walk || self.table.is_empty() {
            return;
        }
        self.next_walk = now + self.cfg.walk_interval;
        // Every other walk aims at the widest stretch of the slice where we
        // know no node (skipping the last few tried); the others at random.
        self.walks = self.walks.wrapping_add(1);
        let gap = if self.walks % 2 == 0 {
            self.table.widest_gap(&self.recent_gaps)
        } else {
            None
        };
        let target = match gap {
            Some((t, start)) => {
                if self.recent_gaps.len() >= RECENT_GAPS {
                    self.recent_gaps.remove(0);
                }
                self.recent_gaps.push(start);
                t
            }
            None => self.slice.random_id(&mut self.rng),
        };
        let timeout = self.cfg.query_timeout;
        let mut sent = 0;
        for n in self.table.closest(&target, 8, false) {
            if sent >= 3 || !self.explore_room() {
                break;
            }
            let recent = self
                .table
                .get(&n.id)
                .and_then(|e| e.last_query)
                .is_some_and(|t| now.saturating_duration_since(t) < timeout);
            if recent {
                continue;
            }
            match self.explore_find_node(n.addr, Some(n.id), target, now) {
                Ok(()) => sent += 1,
                Err(SendError::Budget | SendError::InflightFull) => return,
                Err(_) => {}
            }
        }
    }

    /// Pings confirmed nodes not heard from in [`STALE`]: one pass every
    /// [`REFRESH_INTERVAL`] scans a share of the table that takes it round
    /// in half of `STALE`.
    pub(super) fn pump_refresh(&mut self, now: Instant) {
        let mut stale = Vec::new();
        let mut last = None;
        for (id, e) in self
            .table
            .iter_after(&self.refresh_cursor)
            .take((SCAN_PER_TICK / 8).max(
                self.table.len() / (STALE.as_secs() / 2 / REFRESH_INTERVAL.as_secs()) as usize + 1,
            ))
        {
            last = Some(*id);
            let quiet =
                |t: Option<Instant>| t.is_none_or(|t| now.saturating_duration_since(t) >= STALE);
            if e.confirmed && quiet(e.last_reply) && quiet(e.last_query) {
                stale.push(NodeInfo {
                    id: *id,
                    addr: e.addr,
                });
            }
        }
        self.refresh_cursor = last.unwrap_or(Id::ZERO);
        for n in stale {
            if !self.explore_room() {
                return;
            }
            if let Err(SendError::Budget | SendError::InflightFull) = self.explore_ping(n, now) {
                return;
            }
        }
    }
}
