//! Cross-shard sends that never wait in the task that produced them.
//!
//! Every shard task (UDP receive, mesh receive, timers, fetch outcomes)
//! ends its unit of work with a pump that may hand messages to other
//! shards. If any of those tasks awaited room in a peer's mesh queue, two
//! shards that are each full towards the other would wait for each other
//! for ever: the mesh receive task, the only thing that drains a queue,
//! would be parked inside a send. So the pump only *queues*
//! ([`Outbox::push`], never awaiting), and one task per shard, the flusher
//! ([`Outbox::run`]), is the only one that awaits a send. The flusher
//! receives nothing, so its waiting never stops this shard from draining
//! its own inbox, and the peer's flusher always makes progress: no cycle of
//! waits can form.
//!
//! Messages the mesh queue refuses are held here, per peer, up to
//! [`HELD_MAX`]. Beyond that, or when a peer is gone, a message is handed
//! back to the caller's spill function: the engine writes infohashes to the
//! store as pending (they are resumed at the next start) and counts the
//! rest (forwarded datagrams, node hints, sample offers), which are as
//! losable as the UDP datagrams they came from.
//!
//! Order: messages to one peer keep their order except that a message
//! queued while the flusher is sending a held batch can overtake that
//! batch. Nothing in the DHT depends on cross-message order.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use shards::mesh::{Mesh, MeshSendError};

/// Messages held per peer when its mesh queue is full (about 64 bytes
/// each plus a datagram's buffer for forwarded ones: a few MiB per peer).
pub const HELD_MAX: usize = 65_536;

/// Counters of what did not go straight into a mesh queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Messages held because the peer's queue was full.
    pub held: u64,
    /// Messages handed to the spill function (peer gone, or held too many).
    pub spilled: u64,
}

/// See the module docs.
pub struct Outbox<M: Send + 'static> {
    mesh: Rc<Mesh<M>>,
    held: RefCell<Vec<VecDeque<M>>>,
    wake: LocalSender<()>,
    wakes: RefCell<Option<LocalReceiver<()>>>,
    stats: Cell<OutboxStats>,
}

impl<M: Send + 'static> std::fmt::Debug for Outbox<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("held", &self.held_len())
            .field("stats", &self.stats.get())
            .finish_non_exhaustive()
    }
}

impl<M: Send + 'static> Outbox<M> {
    /// An outbox over this shard's end of the mesh.
    pub fn new(mesh: Rc<Mesh<M>>) -> Rc<Self> {
        let (wake, wakes) = local_channel::new_bounded(1);
        let n = mesh.nr_shards();
        Rc::new(Outbox {
            mesh,
            held: RefCell::new((0..n).map(|_| VecDeque::new()).collect()),
            wake,
            wakes: RefCell::new(Some(wakes)),
            stats: Cell::new(OutboxStats::default()),
        })
    }

    /// Counters.
    pub fn stats(&self) -> OutboxStats {
        self.stats.get()
    }

    /// Messages held (refused by a full queue, not yet sent).
    pub fn held_len(&self) -> usize {
        self.held.borrow().iter().map(VecDeque::len).sum()
    }

    fn bump(&self, f: impl FnOnce(&mut OutboxStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    /// Queues `msg` for `peer` without waiting. `Err(msg)` hands it back
    /// when it can be neither queued nor held (the caller spills it).
    pub fn push(&self, peer: usize, msg: M) -> Result<(), M> {
        let mut held = self.held.borrow_mut();
        let Some(q) = held.get_mut(peer) else {
            return Err(msg);
        };
        if q.is_empty() {
            match self.mesh.queue_to(peer, msg) {
                Ok(()) => return Ok(()),
                Err(MeshSendError::Full(m)) => {
                    q.push_back(m);
                    self.bump(|s| s.held += 1);
                    return Ok(());
                }
                Err(MeshSendError::Closed(m) | MeshSendError::InvalidPeer(m)) => return Err(m),
                Err(MeshSendError::Lost) => {
                    // Never produced by glommio 0.9 for channel sends.
                    self.bump(|s| s.spilled += 1);
                    return Ok(());
                }
            }
        }
        // Something is already held for this peer: keep the order.
        if q.len() >= HELD_MAX {
            return Err(msg);
        }
        q.push_back(msg);
        self.bump(|s| s.held += 1);
        Ok(())
    }

    /// Asks the flusher to run (after a pump). Cheap when nothing waits.
    pub fn wake(&self) {
        if self.mesh.queued() > 0 || self.held_len() > 0 {
            // Full means a wake-up is already pending.
            let _ = self.wake.try_send(());
        }
    }

    /// The flusher: sends outboxes and held messages, waiting for room.
    /// Runs until `stop` resolves; `spill` gets what a gone peer refused.
    pub async fn run(
        self: Rc<Self>,
        spill: impl Fn(M),
        stop: impl std::future::Future<Output = ()>,
    ) {
        let Some(wakes) = self.wakes.borrow_mut().take() else {
            return;
        };
        let work = async {
            while wakes.recv().await.is_some() {
                self.send_all(&spill).await;
            }
        };
        futures_lite::future::or(work, stop).await;
    }

    async fn send_all(&self, spill: &impl Fn(M)) {
        if let Err(failed) = self.mesh.flush().await {
            for (_, msgs) in failed {
                self.spill_all(msgs, spill);
            }
        }
        for peer in 0..self.mesh.nr_shards() {
            let batch: Vec<M> = {
                let mut held = self.held.borrow_mut();
                match held.get_mut(peer) {
                    Some(q) if !q.is_empty() => q.drain(..).collect(),
                    _ => continue,
                }
            };
            if let Err(e) = self.mesh.send_batch_to(peer, batch).await {
                self.spill_all(e.into_inner().unwrap_or_default(), spill);
            }
        }
    }

    fn spill_all(&self, msgs: Vec<M>, spill: &impl Fn(M)) {
        self.bump(|s| s.spilled += msgs.len() as u64);
        for m in msgs {
            spill(m);
        }
    }

    /// At shutdown: everything not yet in a mesh queue goes to `spill`
    /// (the peers may have stopped draining; nothing waits).
    pub fn spill_remaining(&self, spill: &impl Fn(M)) {
        for peer in 0..self.mesh.nr_shards() {
            let q: Vec<M> = self
                .held
                .borrow_mut()
                .get_mut(peer)
                .map(|q| q.drain(..).collect())
                .unwrap_or_default();
            self.spill_all(q, spill);
        }
        for (_, msgs) in self.mesh.take_outboxes() {
            self.spill_all(msgs, spill);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// Both shards answer every message they receive with two more, from
    /// the task that receives, over tiny mesh queues: both directions stay
    /// full. With sends that waited in the receiving task this is the
    /// mesh's deadlock; through the outbox both shards keep receiving.
    #[test]
    fn saturated_both_ways_keeps_moving() {
        const TARGET: u64 = 200_000;
        let got: Arc<Vec<AtomicU64>> = Arc::new((0..2).map(|_| AtomicU64::new(0)).collect());
        let held: Arc<Vec<AtomicU64>> = Arc::new((0..2).map(|_| AtomicU64::new(0)).collect());
        let shards = shards::ShardsBuilder::new()
            .shards(2)
            .pin(false)
            .oversubscribe(true)
            .mesh_capacity(4)
            .mesh_batch(8)
            .spawn({
                let got = got.clone();
                let held = held.clone();
                move |ctx: shards::ShardContext<u64>| {
                    let got = got.clone();
                    let held = held.clone();
                    async move {
                        let me = ctx.shard_id();
                        let peer = 1 - me;
                        let out = Outbox::new(ctx.mesh().clone());
                        let flusher = glommio::spawn_local(out.clone().run(|_| {}, ctx.shutdown()));
                        for i in 0..1000 {
                            out.push(peer, i).map_err(|_| "refused at start")?;
                        }
                        out.wake();
                        let recv = async {
                            while let Some((_, m)) = ctx.recv().await {
                                got[me].fetch_add(1, Ordering::Relaxed);
                                // Refusals (held too many) are fine here:
                                // the point is that receiving never stops.
                                let _ = out.push(peer, m + 1);
                                let _ = out.push(peer, m + 2);
                                out.wake();
                                held[me].store(out.stats().held, Ordering::Relaxed);
                            }
                        };
                        futures_lite::future::or(recv, ctx.shutdown()).await;
                        flusher.await;
                        Ok::<_, &'static str>(())
                    }
                }
            })
            .unwrap();
        let stop = shards.shutdown_handle();
        let start = Instant::now();
        while got.iter().any(|g| g.load(Ordering::Relaxed) < TARGET)
            && start.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.trigger();
        shards.join().unwrap();
        let got: Vec<u64> = got.iter().map(|g| g.load(Ordering::Relaxed)).collect();
        let held: Vec<u64> = held.iter().map(|g| g.load(Ordering::Relaxed)).collect();
        assert!(
            got.iter().all(|g| *g >= TARGET),
            "stalled: received {got:?} in {:?}",
            start.elapsed()
        );
        // The queues really were full in both directions.
        assert!(held.iter().all(|h| *h > 0), "never held: {held:?}");
    }
}
