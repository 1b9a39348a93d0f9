//! Queries in flight, by transaction-id slot: what each one was for and
//! when it expires.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use crate::id::Id;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Ping,
    FindNode,
    Sample,
    HolderGetPeers {
        infohash: Id,
    },
    LookupGetPeers {
        lookup: u32,
    },
    /// A BEP 33 scrape of a stored torrent.
    Scrape {
        infohash: Id,
    },
}

impl Kind {
    /// Counted against `max_explore_inflight`. Scrapes are not: they
    /// are bounded by their own table (`MAX_SCRAPES` × `scrape_nodes`)
    /// and must not take the room sampling and walks wait for.
    pub(super) fn explore(self) -> bool {
        matches!(self, Kind::Ping | Kind::FindNode | Kind::Sample)
    }
}

#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub(super) to: SocketAddr,
    pub(super) identity: u8,
    pub(super) expected: Option<Id>,
    pub(super) kind: Kind,
    pub(super) deadline: Instant,
}

/// Queries in flight, by tid slot.
#[derive(Debug)]
pub(super) struct Inflight {
    slots: Vec<Option<Pending>>,
    free: VecDeque<u16>,
    expiry: VecDeque<(Instant, u16)>,
    max: usize,
    pub(super) explore: usize,
}

impl Inflight {
    pub(super) fn new(max: usize) -> Self {
        Inflight {
            slots: Vec::new(),
            free: VecDeque::new(),
            expiry: VecDeque::new(),
            max: max.clamp(1, 1 << 16),
            explore: 0,
        }
    }

    pub(super) fn reserve(&mut self) -> Option<u16> {
        if let Some(s) = self.free.pop_front() {
            return Some(s);
        }
        if self.slots.len() < self.max {
            self.slots.push(None);
            return u16::try_from(self.slots.len() - 1).ok();
        }
        None
    }

    pub(super) fn insert(&mut self, slot: u16, p: Pending) {
        if p.kind.explore() {
            self.explore += 1;
        }
        self.expiry.push_back((p.deadline, slot));
        if let Some(s) = self.slots.get_mut(usize::from(slot)) {
            *s = Some(p);
        }
    }

    pub(super) fn remove(&mut self, slot: u16) -> Option<Pending> {
        let p = self.slots.get_mut(usize::from(slot))?.take()?;
        if p.kind.explore() {
            self.explore = self.explore.saturating_sub(1);
        }
        self.free.push_back(slot);
        Some(p)
    }

    pub(super) fn get(&self, slot: u16) -> Option<&Pending> {
        self.slots.get(usize::from(slot))?.as_ref()
    }

    pub(super) fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// The earliest deadline of a query in flight (possibly one answered
    /// since, which only costs a wake-up).
    pub(super) fn next_expiry(&self) -> Option<Instant> {
        self.expiry.front().map(|&(d, _)| d)
    }

    /// The next expired transaction.
    pub(super) fn pop_expired(&mut self, now: Instant) -> Option<Pending> {
        while let Some(&(deadline, slot)) = self.expiry.front() {
            if deadline > now {
                return None;
            }
            self.expiry.pop_front();
            // The slot may have been answered and reused since.
            if self.get(slot).is_some_and(|p| p.deadline <= now) {
                return self.remove(slot);
            }
        }
        None
    }
}
