//! Typed channels between every pair of shards.
//!
//! Built from glommio `shared_channel` pairs rather than `MeshBuilder`:
//! `MeshBuilder` numbers peers by glommio's process-wide executor id, while
//! here peer `i` is always shard `i`. Each pair gets one bounded SPSC
//! channel per direction carrying `Vec<M>`: a batch costs one slot and one
//! wake-up, which is what makes the mesh fast (measured: 19–26 M msgs/s one
//! by one at capacity 1024, 37–39 M msgs/s in batches of 64; at capacity 64
//! it collapses to ~1 M/s because a full producer parks).
//!
//! Queue depth is not exposed by glommio, so each pair keeps two atomic
//! counters (messages pushed, messages popped); depth is their difference.
//! They are touched once per batch, not per message.
//!
//! Ordering: messages from shard A to shard B arrive in the order A sent
//! them (one FIFO per direction). There is no order across different
//! senders.
//!
//! Deadlock warning: `send_*().await` waits for room. Two shards that each
//! wait to send to the other *from the task that also receives* can
//! deadlock when both queues are full. Receive in its own task, or use the
//! `try_` variants and handle `Full`.

use std::{
    cell::{Cell, RefCell},
    rc::Rc,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use glommio::{
    channels::shared_channel::{
        self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
    },
    GlommioError,
};
use metrics::{counter, gauge, Counter, Gauge};

/// Packets buffered in a shard's inbox between the per-peer forwarders and
/// `recv` (each packet is one message or one batch).
const INBOX_CAPACITY: usize = 1024;

/// Why a message (or batch) was handed back.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum MeshSendError<T> {
    /// The peer's queue is full (only from `try_` methods).
    #[error("mesh queue to the peer is full")]
    Full(T),
    /// The peer has stopped receiving (or closed), or never started.
    #[error("mesh peer is gone")]
    Closed(T),
    /// No such peer, or the shard itself.
    #[error("invalid mesh peer")]
    InvalidPeer(T),
    /// glommio reported an error that does not carry the message back.
    /// glommio 0.9 never does this for channel sends; the variant exists so
    /// that such a loss would be reported instead of hidden.
    #[error("mesh send failed inside glommio and the message was lost")]
    Lost,
}

impl<T> MeshSendError<T> {
    /// The message that was not sent (`None` only for [`Self::Lost`]).
    pub fn into_inner(self) -> Option<T> {
        match self {
            Self::Full(t) | Self::Closed(t) | Self::InvalidPeer(t) => Some(t),
            Self::Lost => None,
        }
    }

    fn map<U>(self, f: impl FnOnce(T) -> U) -> MeshSendError<U> {
        match self {
            Self::Full(t) => MeshSendError::Full(f(t)),
            Self::Closed(t) => MeshSendError::Closed(f(t)),
            Self::InvalidPeer(t) => MeshSendError::InvalidPeer(f(t)),
            Self::Lost => MeshSendError::Lost,
        }
    }
}

impl<M> MeshSendError<Packet<M>> {
    /// Converts the error of a one-message packet back to that message.
    fn single(self) -> MeshSendError<M> {
        let one = |p: Packet<M>| match p {
            Packet::One(m) => Some(m),
            Packet::Many(v) => v.into_iter().next(),
        };
        match self {
            Self::Full(t) => one(t).map_or(MeshSendError::Lost, MeshSendError::Full),
            Self::Closed(t) => one(t).map_or(MeshSendError::Lost, MeshSendError::Closed),
            Self::InvalidPeer(t) => one(t).map_or(MeshSendError::Lost, MeshSendError::InvalidPeer),
            Self::Lost => MeshSendError::Lost,
        }
    }
}

/// Per-pair counters, indexed `from * n + to`.
#[derive(Debug)]
pub(crate) struct PairCounters {
    n: usize,
    pushed: Vec<AtomicU64>,
    popped: Vec<AtomicU64>,
}

impl PairCounters {
    fn new(n: usize) -> Self {
        Self {
            n,
            pushed: (0..n * n).map(|_| AtomicU64::new(0)).collect(),
            popped: (0..n * n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Messages queued towards `to` and not yet received.
    fn inbound_depth(&self, to: usize) -> u64 {
        (0..self.n)
            .map(|from| {
                let i = from * self.n + to;
                let pushed = self.pushed[i].load(Ordering::Relaxed);
                pushed.saturating_sub(self.popped[i].load(Ordering::Relaxed))
            })
            .sum()
    }
}

/// What travels in a channel slot: a single message needs no `Vec`
/// allocation (one-by-one sends would otherwise pay an allocation on the
/// sender and a cross-thread free on the receiver per message).
#[derive(Debug)]
pub(crate) enum Packet<M> {
    One(M),
    Many(Vec<M>),
}

impl<M> Packet<M> {
    fn len(&self) -> usize {
        match self {
            Packet::One(_) => 1,
            Packet::Many(v) => v.len(),
        }
    }

    fn into_vec(self) -> Vec<M> {
        match self {
            Packet::One(m) => vec![m],
            Packet::Many(v) => v,
        }
    }
}

/// The unconnected ends of one shard, moved into its thread.
#[derive(Debug)]
pub(crate) struct MeshEnds<M: Send + 'static> {
    shard: usize,
    senders: Vec<Option<SharedSender<Packet<M>>>>,
    receivers: Vec<Option<SharedReceiver<Packet<M>>>>,
    counters: Arc<PairCounters>,
}

/// Creates the channels for `n` shards; element `i` goes to shard `i`.
pub(crate) fn wire<M: Send + 'static>(n: usize, capacity: usize) -> Vec<MeshEnds<M>> {
    let counters = Arc::new(PairCounters::new(n));
    let mut ends: Vec<MeshEnds<M>> = (0..n)
        .map(|shard| MeshEnds {
            shard,
            senders: (0..n).map(|_| None).collect(),
            receivers: (0..n).map(|_| None).collect(),
            counters: counters.clone(),
        })
        .collect();
    for from in 0..n {
        for to in 0..n {
            if from != to {
                let (s, r) = shared_channel::new_bounded(capacity.max(1));
                ends[from].senders[to] = Some(s);
                ends[to].receivers[from] = Some(r);
            }
        }
    }
    ends
}

#[derive(Debug)]
struct MeshMetrics {
    sent: Counter,
    received: Counter,
    full: Counter,
    closed: Counter,
    depth: Gauge,
}

/// Cumulative counters of one shard's mesh endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeshStats {
    /// Messages sent (accepted by a peer queue).
    pub sent: u64,
    /// Messages received.
    pub received: u64,
    /// Messages handed back because a queue was full.
    pub dropped_full: u64,
    /// Messages handed back because the peer was gone.
    pub dropped_closed: u64,
}

/// One shard's end of the mesh: send to any peer, receive from all.
#[derive(Debug)]
pub struct Mesh<M: Send + 'static> {
    shard: usize,
    n: usize,
    senders: Vec<Option<ConnectedSender<Packet<M>>>>,
    /// Everything received from any peer, in arrival order per peer (see
    /// `connect` for why this is not the peers' receivers themselves).
    inbox: glommio::channels::local_channel::LocalReceiver<(usize, Packet<M>)>,
    /// Leftover of a batch partly consumed by `recv`.
    current: RefCell<Option<(usize, std::vec::IntoIter<M>)>>,
    outbox: RefCell<Vec<Vec<M>>>,
    batch: usize,
    counters: Arc<PairCounters>,
    stats: Cell<MeshStats>,
    metrics: MeshMetrics,
}

impl<M: Send + 'static> Mesh<M> {
    /// Connects this shard's ends. Every connect is started before any is
    /// awaited: a connect completes only when the peer connects its end,
    /// so connecting one by one could deadlock across shards.
    pub(crate) async fn connect(ends: MeshEnds<M>, batch: usize, label: &'static str) -> Self {
        let n = ends.senders.len();
        let send_tasks: Vec<_> = ends
            .senders
            .into_iter()
            .map(|s| s.map(|s| glommio::spawn_local(s.connect())))
            .collect();
        let recv_tasks: Vec<_> = ends
            .receivers
            .into_iter()
            .map(|r| r.map(|r| glommio::spawn_local(r.connect())))
            .collect();
        let mut senders = Vec::with_capacity(n);
        for t in send_tasks {
            senders.push(match t {
                Some(t) => Some(t.await),
                None => None,
            });
        }
        // One forwarding task per peer moves that peer's packets into a
        // local inbox. Polling all peer receivers from one task would be
        // simpler, but glommio 0.9 pushes a new waker clone into a shared
        // channel's wait list on every pending poll and drains only as many
        // as there are messages: a quiet peer polled after every message of
        // a busy one accumulates clones until the task's 16-bit reference
        // count overflows (seen at 4 shards under load). A task that polls
        // only its own channel leaves at most one waker there. The inbox is
        // bounded by the mesh capacity, so back-pressure still reaches the
        // senders.
        let (inbox_tx, inbox) = glommio::channels::local_channel::new_bounded(INBOX_CAPACITY);
        let inbox_tx = std::rc::Rc::new(inbox_tx);
        for (from, t) in recv_tasks.into_iter().enumerate() {
            let Some(t) = t else { continue };
            let rx: ConnectedReceiver<Packet<M>> = t.await;
            let tx = inbox_tx.clone();
            glommio::spawn_local(async move {
                while let Some(p) = rx.recv().await {
                    if tx.send((from, p)).await.is_err() {
                        break;
                    }
                }
            })
            .detach();
        }
        drop(inbox_tx);
        let s = ends.shard.to_string();
        let c = |name: &'static str| counter!(name, "shard" => s.clone(), "mesh" => label);
        let metrics = MeshMetrics {
            sent: c("shards_mesh_sent_total"),
            received: c("shards_mesh_received_total"),
            full: c("shards_mesh_dropped_full_total"),
            closed: c("shards_mesh_dropped_closed_total"),
            depth: gauge!("shards_mesh_queue_depth", "shard" => s.clone(), "mesh" => label),
        };
        Self {
            shard: ends.shard,
            n,
            senders,
            inbox,
            current: RefCell::new(None),
            outbox: RefCell::new((0..n).map(|_| Vec::new()).collect()),
            batch: batch.max(1),
            counters: ends.counters,
            stats: Cell::new(MeshStats::default()),
            metrics,
        }
    }

    /// This shard's index.
    pub fn shard_id(&self) -> usize {
        self.shard
    }

    /// Number of shards in the mesh.
    pub fn nr_shards(&self) -> usize {
        self.n
    }

    /// Cumulative counters.
    pub fn stats(&self) -> MeshStats {
        self.stats.get()
    }

    /// Messages queued towards this shard and not yet received.
    pub fn queue_depth(&self) -> u64 {
        self.counters.inbound_depth(self.shard)
    }

    /// Exports the queue depth gauge (the runtime calls it periodically).
    pub fn publish_depth(&self) {
        self.metrics.depth.set(self.queue_depth() as f64);
    }

    fn update(&self, f: impl FnOnce(&mut MeshStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    fn sender(&self, peer: usize) -> Option<&ConnectedSender<Packet<M>>> {
        self.senders.get(peer).and_then(Option::as_ref)
    }

    fn on_sent(&self, peer: usize, k: usize) {
        self.counters.pushed[self.shard * self.n + peer].fetch_add(k as u64, Ordering::Relaxed);
        self.update(|s| s.sent += k as u64);
        self.metrics.sent.increment(k as u64);
    }

    fn on_failed(&self, e: GlommioError<Packet<M>>) -> MeshSendError<Packet<M>> {
        match e {
            GlommioError::WouldBlock(glommio::ResourceType::Channel(v)) => {
                self.update(|s| s.dropped_full += v.len() as u64);
                self.metrics.full.increment(v.len() as u64);
                MeshSendError::Full(v)
            }
            GlommioError::Closed(glommio::ResourceType::Channel(v)) => {
                self.update(|s| s.dropped_closed += v.len() as u64);
                self.metrics.closed.increment(v.len() as u64);
                MeshSendError::Closed(v)
            }
            // glommio 0.9 reports only the two shapes above for channel
            // sends; anything else carries no message to hand back.
            _ => MeshSendError::Lost,
        }
    }

    fn try_send_packet(&self, peer: usize, p: Packet<M>) -> Result<(), MeshSendError<Packet<M>>> {
        let Some(tx) = self.sender(peer) else {
            return Err(MeshSendError::InvalidPeer(p));
        };
        let k = p.len();
        match tx.try_send(p) {
            Ok(()) => {
                self.on_sent(peer, k);
                Ok(())
            }
            Err(e) => Err(self.on_failed(e)),
        }
    }

    async fn send_packet(&self, peer: usize, p: Packet<M>) -> Result<(), MeshSendError<Packet<M>>> {
        let Some(tx) = self.sender(peer) else {
            return Err(MeshSendError::InvalidPeer(p));
        };
        let k = p.len();
        match tx.send(p).await {
            Ok(()) => {
                self.on_sent(peer, k);
                Ok(())
            }
            Err(e) => Err(self.on_failed(e)),
        }
    }

    /// Sends a batch without waiting. An empty batch is a no-op.
    pub fn try_send_batch_to(
        &self,
        peer: usize,
        msgs: Vec<M>,
    ) -> Result<(), MeshSendError<Vec<M>>> {
        if msgs.is_empty() {
            return Ok(());
        }
        self.try_send_packet(peer, Packet::Many(msgs))
            .map_err(|e| e.map(Packet::into_vec))
    }

    /// Sends a batch, waiting for room in the peer's queue.
    pub async fn send_batch_to(
        &self,
        peer: usize,
        msgs: Vec<M>,
    ) -> Result<(), MeshSendError<Vec<M>>> {
        if msgs.is_empty() {
            return Ok(());
        }
        self.send_packet(peer, Packet::Many(msgs))
            .await
            .map_err(|e| e.map(Packet::into_vec))
    }

    /// Sends one message without waiting (one slot per message: prefer
    /// [`Self::queue_to`] for volume).
    pub fn try_send_to(&self, peer: usize, msg: M) -> Result<(), MeshSendError<M>> {
        self.try_send_packet(peer, Packet::One(msg))
            .map_err(MeshSendError::single)
    }

    /// Sends one message, waiting for room.
    pub async fn send_to(&self, peer: usize, msg: M) -> Result<(), MeshSendError<M>> {
        self.send_packet(peer, Packet::One(msg))
            .await
            .map_err(MeshSendError::single)
    }

    /// Adds a message to the per-peer outbox; when the outbox reaches the
    /// batch size it is sent without waiting. If the queue is full the
    /// outbox keeps its batch and the message is handed back (`Full`): the
    /// caller may `flush().await` and retry, or drop it.
    pub fn queue_to(&self, peer: usize, msg: M) -> Result<(), MeshSendError<M>> {
        if self.sender(peer).is_none() {
            return Err(MeshSendError::InvalidPeer(msg));
        }
        let mut outbox = self.outbox.borrow_mut();
        let slot = &mut outbox[peer];
        if slot.len() >= self.batch {
            let full = std::mem::take(slot);
            if let Err(e) = self.try_send_batch_to(peer, full) {
                let closed = matches!(e, MeshSendError::Closed(_));
                *slot = e.into_inner().unwrap_or_default();
                return Err(if closed {
                    MeshSendError::Closed(msg)
                } else {
                    MeshSendError::Full(msg)
                });
            }
        }
        if slot.capacity() == 0 {
            slot.reserve_exact(self.batch);
        }
        slot.push(msg);
        if slot.len() >= self.batch {
            let full = std::mem::take(slot);
            if let Err(e) = self.try_send_batch_to(peer, full) {
                // Keep it for the next attempt; the message was accepted.
                *slot = e.into_inner().unwrap_or_default();
            }
        }
        Ok(())
    }

    /// Sends every outbox, waiting for room. Batches to peers that are gone
    /// are handed back with their peer index.
    pub async fn flush(&self) -> Result<(), Vec<(usize, Vec<M>)>> {
        let mut failed = Vec::new();
        for peer in 0..self.n {
            let batch = std::mem::take(&mut self.outbox.borrow_mut()[peer]);
            if batch.is_empty() {
                continue;
            }
            if let Err(e) = self.send_batch_to(peer, batch).await {
                failed.push((peer, e.into_inner().unwrap_or_default()));
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed)
        }
    }

    /// Empties every outbox without sending (for a shard that stops while
    /// its peers may no longer drain): the batches, with their peer index.
    pub fn take_outboxes(&self) -> Vec<(usize, Vec<M>)> {
        let mut outbox = self.outbox.borrow_mut();
        outbox
            .iter_mut()
            .enumerate()
            .filter(|(_, b)| !b.is_empty())
            .map(|(peer, b)| (peer, std::mem::take(b)))
            .collect()
    }

    /// Messages waiting in outboxes (not yet in any queue).
    pub fn queued(&self) -> usize {
        self.outbox.borrow().iter().map(Vec::len).sum()
    }

    /// Closes all senders: peers receive what was queued, then `None` once
    /// every sender towards them has closed. Flush first.
    pub fn close(&self) {
        for s in self.senders.iter().flatten() {
            s.close();
        }
    }

    fn on_received(&self, from: usize, k: usize) {
        self.counters.popped[from * self.n + self.shard].fetch_add(k as u64, Ordering::Relaxed);
        self.update(|s| s.received += k as u64);
        self.metrics.received.increment(k as u64);
    }

    /// Next packet from any peer (from the inbox the forwarders fill).
    async fn recv_packet(&self) -> Option<(usize, Packet<M>)> {
        let (from, p) = self.inbox.recv().await?;
        self.on_received(from, p.len());
        Some((from, p))
    }

    /// Next batch from any peer, with the sender's index; `None` once every
    /// peer has closed and all queues are drained. (A message sent alone
    /// arrives as a batch of one, which costs an allocation here; `recv`
    /// does not.)
    pub async fn recv_batch(&self) -> Option<(usize, Vec<M>)> {
        if let Some((from, rest)) = self.current.borrow_mut().take() {
            let v: Vec<M> = rest.collect();
            if !v.is_empty() {
                return Some((from, v));
            }
        }
        self.recv_packet()
            .await
            .map(|(from, p)| (from, p.into_vec()))
    }

    /// Next message from any peer; `None` when all peers are closed and
    /// drained.
    pub async fn recv(&self) -> Option<(usize, M)> {
        {
            let mut cur = self.current.borrow_mut();
            if let Some((from, it)) = cur.as_mut() {
                if let Some(m) = it.next() {
                    return Some((*from, m));
                }
                *cur = None;
            }
        }
        loop {
            match self.recv_packet().await? {
                (from, Packet::One(m)) => return Some((from, m)),
                (from, Packet::Many(v)) => {
                    let mut it = v.into_iter();
                    if let Some(m) = it.next() {
                        *self.current.borrow_mut() = Some((from, it));
                        return Some((from, m));
                    }
                }
            }
        }
    }
}

/// Keeps `Rc<Mesh>` usable where a shard shares it between tasks.
pub type SharedMesh<M> = Rc<Mesh<M>>;
