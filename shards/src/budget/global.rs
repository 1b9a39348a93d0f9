//! One global rate shared by all shards, with lending.
//!
//! # Design
//!
//! The global rate `R` (tokens/s) is split into integer *shares*, one per
//! shard, starting at `R/N` each (the remainder spread over the first
//! shards so the shares sum to exactly `R`). Each shard spends its share
//! through a local [`TokenBucket`] without talking to anyone: the fast path
//! is a local, uncontended check.
//!
//! Every epoch (default 100 ms) each shard measures its *demand* (tokens
//! asked for, granted or not) and, from the latest [`BudgetMsg::Status`]
//! received from each peer:
//!
//! 1. **Reclaim.** A shard below its base share `R/N` that needs more
//!    announces a `reclaim`. Shards above their base hand back part of the
//!    excess, proportionally, even if they are busy themselves: a loan is
//!    never permanent.
//! 2. **Lend.** A shard whose share exceeds `demand × 1.1` (and a small
//!    floor) gives the surplus to shards reporting a deficit, in proportion
//!    to each deficit, scaled by `max(total surplus, total deficit)` so the
//!    lenders together never give a borrower more than its deficit (with
//!    the same views; with stale views the excess is passed on next epoch).
//! 3. It broadcasts its own status (surplus, deficit, reclaim, excess).
//!
//! Share moves only inside a [`BudgetMsg::Grant`]: the lender subtracts the
//! amount *before* the message leaves, the borrower adds it on arrival, and
//! a grant the mesh hands back is re-credited to the lender
//! ([`GlobalBudget::on_undeliverable`]). Hence the invariant, checked by the
//! tests at every step:
//!
//! `Σ shares + Σ grants in flight == R` (exactly, in integers).
//!
//! Over a window `W` the tokens granted by all shards are at most
//! `R·W + Σ burst` (each bucket holds at most `share × burst_window`), and
//! shares in flight only ever lower the total. With `burst_window` ≪ `W`
//! the total stays within a few percent of `R·W`; the tests check ±5%.

use std::time::{Duration, Instant};

use super::{sat_u64, saturating_nanos, TokenBucket, NANOS_PER_SEC};

/// Messages exchanged between the shards' budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetMsg {
    /// A shard's view of itself after its epoch (all in tokens/s).
    Status {
        /// Share above what it needs.
        surplus: u64,
        /// Share it lacks (includes `reclaim`).
        deficit: u64,
        /// Part of the deficit that brings it back up to its base share.
        reclaim: u64,
        /// Share above its base share.
        excess: u64,
    },
    /// Transfer of `amount` tokens/s of share to the recipient.
    Grant {
        /// Tokens per second moved.
        amount: u64,
    },
}

/// Parameters of a [`GlobalBudget`].
#[derive(Debug, Clone, Copy)]
pub struct GlobalBudgetConfig {
    /// Global rate, tokens per second, across all shards.
    pub rate: u64,
    /// Each shard's bucket holds `share × burst_window` tokens. Larger
    /// absorbs bursts; smaller tightens the global bound.
    pub burst_window: Duration,
    /// How often shards measure demand and rebalance. Shorter adapts faster
    /// but sends `N×(N-1)` status messages per epoch.
    pub epoch: Duration,
    /// A shard keeps this many permille of its measured demand (1100 =
    /// demand + 10%) before lending the rest.
    pub headroom_permille: u32,
    /// Permille of its base share an idle shard always keeps, so a burst of
    /// new work finds some tokens before the next rebalance.
    pub floor_permille: u32,
}

impl GlobalBudgetConfig {
    /// `rate` tokens/s with defaults: 50 ms burst window, 100 ms epoch,
    /// 10% headroom, 1% floor.
    pub fn new(rate: u64) -> Self {
        Self {
            rate,
            burst_window: Duration::from_millis(50),
            epoch: Duration::from_millis(100),
            headroom_permille: 1100,
            floor_permille: 10,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct PeerView {
    surplus: u64,
    deficit: u64,
    reclaim: u64,
    excess: u64,
}

/// One shard's part of the global budget (see the module docs).
#[derive(Debug, Clone)]
pub struct GlobalBudget {
    cfg: GlobalBudgetConfig,
    shard: usize,
    base: u64,
    share: u64,
    bucket: TokenBucket,
    epoch_start: Instant,
    demand: u64,
    peers: Vec<PeerView>,
    lent: u64,
    received: u64,
}

fn mul_div(a: u64, b: u64, c: u64) -> u64 {
    if c == 0 {
        return 0;
    }
    sat_u64(u128::from(a) * u128::from(b) / u128::from(c))
}

fn permille(v: u64, p: u32) -> u64 {
    sat_u64(u128::from(v) * u128::from(p) / 1000)
}

impl GlobalBudget {
    /// The part of `cfg.rate` owned by `shard` of `nr_shards` at start.
    pub fn new(cfg: GlobalBudgetConfig, shard: usize, nr_shards: usize, now: Instant) -> Self {
        let n = nr_shards.max(1) as u64;
        let extra = u64::from((shard as u64) < cfg.rate % n);
        let base = cfg.rate / n + extra;
        let burst = Self::burst_for(&cfg, base);
        Self {
            cfg,
            shard,
            base,
            share: base,
            bucket: TokenBucket::new(base, burst, now),
            epoch_start: now,
            demand: 0,
            peers: vec![PeerView::default(); nr_shards.max(1)],
            lent: 0,
            received: 0,
        }
    }

    fn burst_for(cfg: &GlobalBudgetConfig, share: u64) -> u64 {
        let b = u128::from(share) * u128::from(saturating_nanos(cfg.burst_window)) / NANOS_PER_SEC;
        sat_u64(b).max(u64::from(share > 0))
    }

    /// This shard's current share, tokens/s.
    pub fn share(&self) -> u64 {
        self.share
    }

    /// This shard's base share (`rate / N`).
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Total share lent and received so far (saturating), for metrics.
    pub fn lent_received(&self) -> (u64, u64) {
        (self.lent, self.received)
    }

    /// Tokens granted and denied by the local bucket so far.
    pub fn granted_denied(&self) -> (u64, u64) {
        (self.bucket.granted(), self.bucket.denied())
    }

    /// The epoch length configured.
    pub fn epoch(&self) -> Duration {
        self.cfg.epoch
    }

    /// Takes `n` tokens if available (all or nothing).
    pub fn try_take(&mut self, now: Instant, n: u64) -> bool {
        self.demand = self.demand.saturating_add(n);
        self.bucket.try_take(now, n)
    }

    /// Whether `n` tokens could be taken leaving `reserve` (see
    /// [`TokenBucket::can_take`]); asking counts as demand only when the
    /// tokens are then taken or refused by [`Self::try_take_reserving`].
    pub fn can_take(&mut self, now: Instant, n: u64, reserve: u64) -> bool {
        self.bucket.can_take(now, n, reserve)
    }

    /// Takes `n` tokens if that leaves `reserve`. `n` counts as demand
    /// either way, so a shard refused here borrows from idle ones.
    pub fn try_take_reserving(&mut self, now: Instant, n: u64, reserve: u64) -> bool {
        self.demand = self.demand.saturating_add(n);
        self.bucket.try_take_reserving(now, n, reserve)
    }

    /// The local bucket's capacity now (it follows the share).
    pub fn burst(&self) -> u64 {
        self.bucket.burst()
    }

    /// Counts `n` tokens of demand that were not asked for through the
    /// bucket (a request refused before it was built).
    pub fn note_demand(&mut self, n: u64) {
        self.demand = self.demand.saturating_add(n);
    }

    /// Takes up to `max` tokens; returns how many. `max` counts as demand.
    pub fn take_up_to(&mut self, now: Instant, max: u64) -> u64 {
        self.demand = self.demand.saturating_add(max);
        self.bucket.take_up_to(now, max)
    }

    fn set_share(&mut self, now: Instant, share: u64) {
        self.share = share;
        let burst = Self::burst_for(&self.cfg, share);
        self.bucket.set_rate(now, share, burst);
    }

    /// Ends an epoch: rebalances and appends the messages to send to `out`
    /// as `(peer, message)`. Call it every `epoch` (a late call is fine: the
    /// demand is measured over the real elapsed time).
    pub fn on_epoch(&mut self, now: Instant, out: &mut Vec<(usize, BudgetMsg)>) {
        let elapsed = saturating_nanos(now.saturating_duration_since(self.epoch_start));
        if elapsed == 0 {
            return;
        }
        let demand_rate = sat_u64(u128::from(self.demand) * NANOS_PER_SEC / u128::from(elapsed));
        let floor = permille(self.base, self.cfg.floor_permille);
        let target = permille(demand_rate, self.cfg.headroom_permille).max(floor);
        let mut share = self.share;

        // 1. Reclaim: give back excess above base to shards below theirs.
        let my_excess = share.saturating_sub(self.base);
        if my_excess > 0 {
            let total_reclaim = self.peers_sum(|p| p.reclaim);
            let total_excess = self.peers_sum(|p| p.excess).saturating_add(my_excess);
            let scale = total_reclaim.max(total_excess);
            for peer in 0..self.peers.len() {
                let want = self.peers[peer].reclaim;
                if peer == self.shard || want == 0 {
                    continue;
                }
                let give = mul_div(want, my_excess, scale).min(share);
                if give > 0 {
                    share -= give;
                    self.peers[peer].reclaim -= give.min(want);
                    self.peers[peer].deficit = self.peers[peer].deficit.saturating_sub(give);
                    out.push((peer, BudgetMsg::Grant { amount: give }));
                    self.lent = self.lent.saturating_add(give);
                }
            }
        }

        // 2. Lend surplus to shards with a deficit.
        let surplus = share.saturating_sub(target);
        if surplus > 0 {
            let total_deficit = self.peers_sum(|p| p.deficit);
            let total_surplus = self.peers_sum(|p| p.surplus).saturating_add(surplus);
            let scale = total_deficit.max(total_surplus);
            for peer in 0..self.peers.len() {
                let want = self.peers[peer].deficit;
                if peer == self.shard || want == 0 {
                    continue;
                }
                let give = mul_div(want, surplus, scale).min(share);
                if give > 0 {
                    share -= give;
                    self.peers[peer].deficit -= give.min(want);
                    out.push((peer, BudgetMsg::Grant { amount: give }));
                    self.lent = self.lent.saturating_add(give);
                }
            }
        }

        // 3. Announce where we stand now.
        let deficit = target.saturating_sub(share);
        let reclaim = if share < self.base {
            deficit.min(self.base - share)
        } else {
            0
        };
        let status = BudgetMsg::Status {
            surplus: share.saturating_sub(target),
            deficit,
            reclaim,
            excess: share.saturating_sub(self.base),
        };
        for peer in 0..self.peers.len() {
            if peer != self.shard {
                out.push((peer, status));
            }
        }
        self.set_share(now, share);
        self.demand = 0;
        self.epoch_start = now;
    }

    fn peers_sum(&self, f: impl Fn(&PeerView) -> u64) -> u64 {
        self.peers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != self.shard)
            .fold(0u64, |acc, (_, p)| acc.saturating_add(f(p)))
    }

    /// A message from peer `from`.
    pub fn on_message(&mut self, now: Instant, from: usize, msg: BudgetMsg) {
        match msg {
            BudgetMsg::Status {
                surplus,
                deficit,
                reclaim,
                excess,
            } => {
                if let Some(p) = self.peers.get_mut(from) {
                    *p = PeerView {
                        surplus,
                        deficit,
                        reclaim,
                        excess,
                    };
                }
            }
            BudgetMsg::Grant { amount } => {
                self.received = self.received.saturating_add(amount);
                let share = self.share.saturating_add(amount);
                self.set_share(now, share);
            }
        }
    }

    /// A message that could not be delivered: a grant is taken back so no
    /// share is ever lost; a status is simply dropped.
    pub fn on_undeliverable(&mut self, now: Instant, msg: BudgetMsg) {
        if let BudgetMsg::Grant { amount } = msg {
            self.lent = self.lent.saturating_sub(amount);
            let share = self.share.saturating_add(amount);
            self.set_share(now, share);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic simulation: `n` shards, 1 ms ticks, each shard's epoch
    /// is offset so they do not act in lockstep, and messages arrive `delay`
    /// ticks after being sent. `demand(shard, tick)` says how many tokens a
    /// shard wants per tick. Returns tokens granted per shard during the
    /// measurement window `[warmup, warmup + window)` ticks and checks the
    /// conservation invariant at every tick.
    fn simulate(
        cfg: GlobalBudgetConfig,
        n: usize,
        delay: u64,
        warmup: u64,
        window: u64,
        demand: impl Fn(usize, u64) -> u64,
    ) -> Vec<u64> {
        let t0 = Instant::now();
        let mut shards: Vec<_> = (0..n).map(|i| GlobalBudget::new(cfg, i, n, t0)).collect();
        let mut in_flight: Vec<(u64, usize, usize, BudgetMsg)> = Vec::new();
        let mut granted = vec![0u64; n];
        let epoch_ticks = cfg.epoch.as_millis() as u64;
        let mut out = Vec::new();
        for tick in 1..=warmup + window {
            let now = t0 + Duration::from_millis(tick);
            // Deliver due messages.
            let mut i = 0;
            while i < in_flight.len() {
                if in_flight[i].0 <= tick {
                    let (_, from, to, msg) = in_flight.swap_remove(i);
                    shards[to].on_message(now, from, msg);
                } else {
                    i += 1;
                }
            }
            for (s, b) in shards.iter_mut().enumerate() {
                let got = b.take_up_to(now, demand(s, tick));
                if tick >= warmup {
                    granted[s] += got;
                }
                if (tick + s as u64 * 37) % epoch_ticks == 0 {
                    b.on_epoch(now, &mut out);
                    for (to, msg) in out.drain(..) {
                        in_flight.push((tick + delay, s, to, msg));
                    }
                }
            }
            let shares: u64 = shards.iter().map(|b| b.share()).sum();
            let flying: u64 = in_flight
                .iter()
                .map(|m| match m.3 {
                    BudgetMsg::Grant { amount } => amount,
                    BudgetMsg::Status { .. } => 0,
                })
                .sum();
            assert_eq!(shares + flying, cfg.rate, "share conserved at tick {tick}");
        }
        granted
    }

    fn within(total: u64, expected: u64, pct: u64) -> bool {
        total * 100 >= expected * (100 - pct) && total * 100 <= expected * (100 + pct)
    }

    #[test]
    fn idle_shards_lend_to_a_busy_one() {
        let cfg = GlobalBudgetConfig::new(100_000);
        // Shard 0 wants far more than the global rate; 1..3 are idle.
        let g = simulate(
            cfg,
            4,
            3,
            2_000,
            10_000,
            |s, _| if s == 0 { 1_000 } else { 0 },
        );
        let total: u64 = g.iter().sum();
        let expected = 100_000 * 10; // 10 s window
        assert!(
            within(total, expected, 5),
            "granted {total} vs {expected}: {g:?}"
        );
        assert!(
            g[0] > expected * 95 / 100,
            "busy shard got the loans: {g:?}"
        );
    }

    #[test]
    fn all_busy_stays_at_global_rate_and_fair() {
        let cfg = GlobalBudgetConfig::new(50_000);
        let g = simulate(cfg, 3, 5, 1_000, 5_000, |_, _| 10_000);
        let total: u64 = g.iter().sum();
        assert!(within(total, 50_000 * 5, 5), "granted {total}: {g:?}");
        for s in &g {
            assert!(within(*s * 3, 50_000 * 5, 5), "fair split: {g:?}");
        }
    }

    #[test]
    fn shifting_demand_is_reclaimed() {
        // Each switch of the busy shard costs about 1.5 epochs of the global
        // rate (the old borrower must notice it is idle, the new one must
        // report its deficit). With the default 100 ms epoch, switching
        // every 2 s loses ~6.5%; with 50 ms it stays within 5%.
        let cfg = GlobalBudgetConfig {
            epoch: Duration::from_millis(50),
            ..GlobalBudgetConfig::new(20_000)
        };
        // The busy shard changes every 2 s; the window spans several shifts.
        let g = simulate(cfg, 2, 2, 1_000, 8_000, |s, t| {
            if (t / 2_000) % 2 == s as u64 {
                500
            } else {
                0
            }
        });
        let total: u64 = g.iter().sum();
        assert!(within(total, 20_000 * 8, 5), "granted {total}: {g:?}");
        // Each shard was busy about half the time and got about half.
        assert!(within(g[0] * 2, 20_000 * 8, 10), "{g:?}");
    }

    #[test]
    fn never_exceeds_budget_with_light_demand() {
        let cfg = GlobalBudgetConfig::new(10_000);
        // Demand 8/ms = 8000/s per shard × 2 > rate: the busy periods alternate
        // per millisecond, which is the hardest case for a 100 ms epoch.
        let g = simulate(cfg, 2, 1, 500, 4_000, |s, t| {
            if t % 2 == s as u64 {
                16
            } else {
                0
            }
        });
        let total: u64 = g.iter().sum();
        assert!(total <= 10_000 * 4 * 105 / 100, "granted {total}: {g:?}");
        assert!(within(total, 10_000 * 4, 5), "granted {total}: {g:?}");
    }

    #[test]
    fn undeliverable_grant_is_recredited_and_edges_are_safe() {
        let t0 = Instant::now();
        let mut b = GlobalBudget::new(GlobalBudgetConfig::new(u64::MAX), 0, 2, t0);
        let mut out = Vec::new();
        // Idle epoch: lends nothing yet (no peer reported a deficit).
        b.on_epoch(t0 + Duration::from_millis(100), &mut out);
        assert!(out
            .iter()
            .all(|(_, m)| matches!(m, BudgetMsg::Status { .. })));
        let before = b.share();
        b.on_message(
            t0,
            1,
            BudgetMsg::Status {
                surplus: 0,
                deficit: u64::MAX,
                reclaim: 0,
                excess: 0,
            },
        );
        out.clear();
        b.on_epoch(t0 + Duration::from_secs(1_000_000), &mut out);
        let lent: u64 = out
            .iter()
            .filter_map(|(_, m)| match m {
                BudgetMsg::Grant { amount } => Some(*amount),
                _ => None,
            })
            .sum();
        assert!(lent > 0);
        assert_eq!(b.share() + lent, before);
        for (_, m) in out.drain(..) {
            b.on_undeliverable(t0, m);
        }
        assert_eq!(b.share(), before);
        // Zero rate: nothing ever passes, nothing panics.
        let mut z = GlobalBudget::new(GlobalBudgetConfig::new(0), 1, 3, t0);
        assert!(!z.try_take(t0 + Duration::from_secs(10), 1));
        z.on_epoch(t0 + Duration::from_secs(10), &mut out);
        assert_eq!(z.share(), 0);
        // Rate smaller than the shard count: shares still sum to the rate.
        let s: u64 = (0..4)
            .map(|i| GlobalBudget::new(GlobalBudgetConfig::new(3), i, 4, t0).share())
            .sum();
        assert_eq!(s, 3);
    }
}
