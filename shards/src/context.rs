//! What a shard's application code gets: its id, its sockets, its mesh end,
//! shutdown, TCP and budgets. Everything here is shard-local (`Rc`, not
//! `Arc`): it never crosses threads, so it needs no locks.

use std::{cell::RefCell, future::Future, net::SocketAddr, rc::Rc, time::Instant};

use crate::{
    budget::GlobalBudget,
    mesh::{Mesh, MeshSendError},
    shutdown::{LocalShutdown, ShutdownHandle, ShutdownSignal},
    tcp::TcpConnector,
    udp::UdpSocket,
};

/// Shard-local handle to this shard's part of the global budget.
#[derive(Debug, Clone)]
pub struct GlobalBudgetHandle {
    pub(crate) inner: Rc<RefCell<GlobalBudget>>,
}

impl GlobalBudgetHandle {
    /// Takes `n` tokens now, all or nothing.
    pub fn try_take(&self, n: u64) -> bool {
        self.inner.borrow_mut().try_take(Instant::now(), n)
    }

    /// Takes up to `max` tokens now; returns how many.
    pub fn take_up_to(&self, max: u64) -> u64 {
        self.inner.borrow_mut().take_up_to(Instant::now(), max)
    }

    /// This shard's current share, tokens/s.
    pub fn share(&self) -> u64 {
        self.inner.borrow().share()
    }

    /// Direct access to the pure state (for an explicit `now`, or stats).
    pub fn with<R>(&self, f: impl FnOnce(&mut GlobalBudget) -> R) -> R {
        f(&mut self.inner.borrow_mut())
    }
}

/// Everything a shard's future needs. Cheap to clone (reference counts).
#[derive(Debug)]
pub struct ShardContext<M: Send + 'static> {
    pub(crate) shard_id: usize,
    pub(crate) nr_shards: usize,
    pub(crate) cpu: Option<usize>,
    pub(crate) udp: Rc<[Rc<UdpSocket>]>,
    pub(crate) mesh: Rc<Mesh<M>>,
    pub(crate) shutdown: ShutdownHandle,
    pub(crate) local_shutdown: Rc<LocalShutdown>,
    pub(crate) tcp: TcpConnector,
    pub(crate) budget: Option<GlobalBudgetHandle>,
}

impl<M: Send + 'static> Clone for ShardContext<M> {
    fn clone(&self) -> Self {
        Self {
            shard_id: self.shard_id,
            nr_shards: self.nr_shards,
            cpu: self.cpu,
            udp: self.udp.clone(),
            mesh: self.mesh.clone(),
            shutdown: self.shutdown.clone(),
            local_shutdown: self.local_shutdown.clone(),
            tcp: self.tcp.clone(),
            budget: self.budget.clone(),
        }
    }
}

impl<M: Send + 'static> ShardContext<M> {
    /// This shard's index, `0..nr_shards()`.
    pub fn shard_id(&self) -> usize {
        self.shard_id
    }

    /// Number of shards.
    pub fn nr_shards(&self) -> usize {
        self.nr_shards
    }

    /// The CPU this shard is pinned to (`None` when pinning is off).
    pub fn cpu(&self) -> Option<usize> {
        self.cpu
    }

    /// This shard's sockets: one per address given to `udp_bind` (or
    /// `udp_bind_spread`), in the same order.
    pub fn udp_sockets(&self) -> &[Rc<UdpSocket>] {
        &self.udp
    }

    /// The socket for the `i`-th bind address.
    pub fn udp(&self, i: usize) -> Option<&Rc<UdpSocket>> {
        self.udp.get(i)
    }

    /// Local addresses of this shard's sockets: the same on all shards with
    /// `udp_bind`, this shard's own ports with `udp_bind_spread`.
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        self.udp.iter().map(|u| u.local_addr()).collect()
    }

    /// This shard's end of the mesh.
    pub fn mesh(&self) -> &Rc<Mesh<M>> {
        &self.mesh
    }

    /// Sends one message to shard `peer`, waiting for room.
    pub async fn send_to(&self, peer: usize, msg: M) -> Result<(), MeshSendError<M>> {
        self.mesh.send_to(peer, msg).await
    }

    /// Sends a batch to shard `peer`, waiting for room.
    pub async fn send_batch_to(
        &self,
        peer: usize,
        msgs: Vec<M>,
    ) -> Result<(), MeshSendError<Vec<M>>> {
        self.mesh.send_batch_to(peer, msgs).await
    }

    /// Next mesh message from any peer, with the sender's index.
    pub async fn recv(&self) -> Option<(usize, M)> {
        self.mesh.recv().await
    }

    /// Resolves when shutdown is triggered (by anyone, on any shard).
    pub fn shutdown(&self) -> ShutdownSignal {
        ShutdownSignal::new(self.local_shutdown.clone())
    }

    /// Runs `fut` until it completes (`Some`) or shutdown is triggered
    /// (`None`; `fut` is dropped, cancelling its IO). The usual shape of a
    /// shard's receive loop.
    pub async fn or_shutdown<F: Future>(&self, fut: F) -> Option<F::Output> {
        futures_lite::future::or(async { Some(fut.await) }, async {
            self.shutdown().await;
            None
        })
        .await
    }

    /// Whether shutdown has been triggered.
    pub fn is_shutting_down(&self) -> bool {
        self.local_shutdown.is_fired() || self.shutdown.is_triggered()
    }

    /// A `Send` handle to trigger shutdown of every shard.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Capped outgoing TCP connections of this shard.
    pub fn tcp(&self) -> &TcpConnector {
        &self.tcp
    }

    /// This shard's part of the global budget, if one was configured.
    pub fn global_budget(&self) -> Option<&GlobalBudgetHandle> {
        self.budget.as_ref()
    }
}
