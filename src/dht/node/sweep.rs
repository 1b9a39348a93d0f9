//! The BEP 51 sweep's clock: where the traversal of the slice stands and
//! when it next has work.
//!
//! The sweep asks each node of the slice, in id order, for samples once
//! per the interval that node gave. It scans a bounded window per call
//! (`SCAN_PER_TICK`), moving its cursor past what it scanned, so a long
//! stretch of nodes that are not due cannot pin it in place. Once it has
//! gone round the whole slice without finding a node due, it sleeps until
//! the earliest due time it saw, or until the table changes (a new node
//! is due at once) or a node's due time moves earlier (an unanswered
//! query is retried sooner than an interval).

use std::time::{Duration, Instant};

use crate::id::Id;

#[derive(Debug)]
pub(super) struct Sweep {
    /// The last node asked (or scanned past).
    pub(super) cursor: Id,
    /// Entries scanned since a node was last found due.
    scanned: usize,
    /// The earliest due time among them.
    earliest: Option<Instant>,
    state: State,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Has (or may have) a node due: pumped at the node's pacing.
    Active,
    /// Went round the slice and found no node due.
    Asleep {
        /// The earliest due time seen in that round (None: no node).
        until: Option<Instant>,
        /// The table's generation then.
        generation: u64,
        /// When it fell asleep.
        since: Instant,
    },
}

impl Sweep {
    pub(super) fn new(cursor: Id) -> Self {
        Sweep {
            cursor,
            scanned: 0,
            earliest: None,
            state: State::Active,
        }
    }

    /// A node was found due (and asked, or refused for now).
    pub(super) fn found(&mut self, id: Id) {
        self.cursor = id;
        self.scanned = 0;
        self.earliest = None;
        self.state = State::Active;
    }

    /// A window of `n` entries up to `last` held no node due; the earliest
    /// of them is due at `earliest`. Returns whether the round is complete
    /// (`slice_len` entries scanned): the sweep is then asleep.
    pub(super) fn nothing_due(
        &mut self,
        last: Option<Id>,
        n: usize,
        earliest: Option<Instant>,
        slice_len: usize,
        generation: u64,
        now: Instant,
    ) -> bool {
        if let Some(l) = last {
            self.cursor = l;
        }
        self.scanned = self.scanned.saturating_add(n);
        self.earliest = match (self.earliest, earliest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if n == 0 || self.scanned >= slice_len {
            self.state = State::Asleep {
                until: self.earliest,
                generation,
                since: now,
            };
            self.scanned = 0;
            self.earliest = None;
            return true;
        }
        false
    }

    /// A node's due time became `at`: wake by then.
    pub(super) fn due_at(&mut self, at: Instant) {
        if let State::Asleep { until, .. } = &mut self.state {
            *until = Some(until.map_or(at, |u| u.min(at)));
        }
    }

    /// Whether the sweep should run at `now` (the table is at `generation`).
    pub(super) fn is_active(&mut self, generation: u64, tick: Duration, now: Instant) -> bool {
        if let Some(at) = self.wake(generation, tick) {
            if at <= now {
                self.state = State::Active;
            }
        }
        matches!(self.state, State::Active)
    }

    /// When an asleep sweep wants to run: its earliest due time, or one
    /// tick after it fell asleep if the table has changed since (new nodes
    /// are swept within a tick, without a wake-up per datagram). `None`
    /// while active (the node paces it) or when nothing will be due.
    pub(super) fn wake(&self, generation: u64, tick: Duration) -> Option<Instant> {
        match self.state {
            State::Active => None,
            State::Asleep {
                until,
                generation: g,
                since,
            } => {
                let changed = (g != generation).then_some(since + tick);
                match (until, changed) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        }
    }

    /// Whether the sweep is active (has work at the node's pacing).
    pub(super) fn active(&self) -> bool {
        matches!(self.state, State::Active)
    }
}
