//! Our external address and our BEP 42 id for it.
//!
//! Bound to a wildcard or a private address, a node does not know the
//! address others see, so its id cannot be BEP 42-valid from the start.
//! Every reply to one of our queries carries `ip`, what its sender saw;
//! [`IpVoter`] turns those into a vote (see [`crate::dht::vote`]). When the
//! vote settles on an address our id is not valid for, the node moves to a
//! BEP 42 id for it, as libtorrent's `node::update_node_id` does (an id
//! already valid for the address is kept: a restart, or a bind on the
//! public address itself, changes nothing).
//!
//! Shards: with `bep42` identities every shard shares each address and
//! its id, so they must move together. Shard 0 alone votes (it sees the
//! replies to its own queries, plenty for a vote) and sends the new id to
//! the others
//! ([`ShardMsg::Rekey`]); the runtime saves it ([`Action::Rekeyed`]) so a
//! restart begins with it. The shards' slices do not move: in `bep42` mode
//! the shared id is not tied to any slice, and the table is ordered around
//! the shard's slice, not around our id, so there is nothing to rebuild.
//! What libtorrent's re-key also does, a refresh around the new id (a
//! lookup of itself, so that the nodes near it hear of it), is done by the
//! shard whose slice holds the new id: find_node for it to the nodes it
//! knows closest to it. With `spread` identities each shard's id must stay
//! inside its own slice, which a BEP 42 id (its top 21 bits fixed by the
//! address) cannot promise, so the vote is off there.

use super::*;
use crate::dht::vote::IpVoter;
use crate::id::{bep42_id, bep42_verify};

/// Former ids remembered as ours.
const MAX_FORMER: usize = 8;

/// The vote's state: one voter per identity (none when not voting), the
/// refreshes around new ids waiting to be sent, and our former ids.
#[derive(Debug)]
pub(super) struct ExternalIp {
    voters: Vec<IpVoter>,
    refresh: Vec<Id>,
    /// Ids we used before a re-key: other nodes keep listing us under them
    /// for a while, and an entry for one would be ourselves.
    former: Vec<Id>,
}

impl ExternalIp {
    /// Whether a refresh around a new id waits to be sent.
    pub(super) fn refresh_pending(&self) -> bool {
        !self.refresh.is_empty()
    }

    pub(super) fn new(cfg: &NodeConfig) -> Self {
        let voters = if cfg.external_ip.enabled && cfg.shard == 0 {
            cfg.identities
                .iter()
                .map(|_| IpVoter::new(cfg.external_ip))
                .collect()
        } else {
            Vec::new()
        };
        ExternalIp {
            voters,
            refresh: Vec::new(),
            former: Vec::new(),
        }
    }

    /// Whether `id` was one of ours before a re-key.
    pub(super) fn was_ours(&self, id: &Id) -> bool {
        self.former.contains(id)
    }

    /// The address the vote settled on for `identity`.
    pub(super) fn current(&self, identity: u8) -> Option<IpAddr> {
        self.voters
            .get(usize::from(identity))
            .and_then(IpVoter::current)
    }
}

impl Node {
    /// A reply to our query, on `identity` from `from`, says we are `ip`.
    pub(super) fn on_reported_ip(
        &mut self,
        identity: u8,
        from: SocketAddr,
        ip: Option<SocketAddr>,
        now: Instant,
    ) {
        let Some(ip) = ip else { return };
        let Some(voter) = self.external.voters.get_mut(usize::from(identity)) else {
            return;
        };
        if let Some(ext) = voter.vote(from.ip(), ip.ip(), now) {
            self.external_ip_changed(identity, ext);
        }
    }

    /// Expires votes and sends a pending refresh.
    pub(super) fn pump_external(&mut self, now: Instant) {
        for i in 0..self.external.voters.len() {
            let changed = self.external.voters.get_mut(i).and_then(|v| v.expire(now));
            if let (Some(ext), Ok(identity)) = (changed, u8::try_from(i)) {
                self.external_ip_changed(identity, ext);
            }
        }
        self.pump_self_refresh(now);
    }

    /// The external address of `identity`, as voted.
    pub fn external_ip(&self, identity: u8) -> Option<IpAddr> {
        self.external.current(identity)
    }

    /// The vote settled on `ext` for `identity`: move to a BEP 42 id for it
    /// (unless ours is valid for it already), on every shard.
    fn external_ip_changed(&mut self, identity: u8, ext: IpAddr) {
        let Some(me) = self.cfg.identities.get(usize::from(identity)).copied() else {
            return;
        };
        if me.addr.is_ipv4() != ext.is_ipv4() {
            return;
        }
        if bep42_verify(&me.id, ext) {
            log::info!(
                "shard {}: external address of {} is {ext}; id {} is valid for it",
                self.cfg.shard,
                me.addr,
                me.id
            );
            return;
        }
        let r = self.rng.next_u64() as u8;
        let id = bep42_id(ext, r, &mut self.rng);
        log::info!(
            "shard {}: external address of {} is {ext}; node id {} -> {id} (BEP 42)",
            self.cfg.shard,
            me.addr,
            me.id
        );
        self.rekey(identity, id);
        for shard in 0..self.cfg.nr_shards {
            if shard != self.cfg.shard {
                self.actions.push_back(Action::ToShard {
                    shard,
                    msg: ShardMsg::Rekey { identity, id },
                });
            }
        }
        self.actions.push_back(Action::Rekeyed {
            identity,
            external: ext,
            id,
        });
    }

    /// Uses `id` on `identity` from now on (decided here or by the voting
    /// shard).
    pub(super) fn rekey(&mut self, identity: u8, id: Id) {
        let Some(slot) = self.cfg.identities.get_mut(usize::from(identity)) else {
            return;
        };
        if slot.id == id {
            return;
        }
        let old = std::mem::replace(&mut slot.id, id);
        if self.external.former.len() >= MAX_FORMER {
            self.external.former.remove(0);
        }
        self.external.former.push(old);
        self.external.former.retain(|f| *f != id);
        count(&mut self.stats.rekeys);
        // Whoever the table knew under our new id is not us.
        self.table.remove(&id);
        // The shard whose slice holds the new id (shard 0 when it lies
        // outside this machine's keyspace) tells the nodes near it.
        if self.owner(&id).unwrap_or(0) == self.cfg.shard {
            self.external.refresh.push(id);
        }
    }

    /// find_node for our new id to the nodes closest to it, once we know
    /// any (libtorrent's refresh after a new id).
    fn pump_self_refresh(&mut self, now: Instant) {
        let Some(target) = self.external.refresh.first().copied() else {
            return;
        };
        if self.table.is_empty() {
            return;
        }
        let mut sent = 0;
        for n in self.table.closest(&target, K, false) {
            match self.explore_find_node(n.addr, Some(n.id), target, now) {
                Ok(()) => sent += 1,
                Err(SendError::Budget | SendError::InflightFull) if sent == 0 => return,
                Err(_) => {}
            }
        }
        self.external.refresh.remove(0);
    }
}
