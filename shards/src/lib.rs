//! Thread-per-core runtime for DHT-Hunter, on glommio 0.9.
//!
//! This crate knows nothing about BitTorrent. It starts one pinned shard
//! per CPU, gives every shard its own UDP socket on a shared port, wires a
//! mesh of channels between all shards, and provides the budgets, TCP caps,
//! timers, shutdown and metrics a crawler needs around that.
//!
//! # Design
//!
//! **Thread-per-core, shared-nothing.** The idea is Seastar's `sharded<T>`:
//! instead of one data structure guarded by locks and shared by a thread
//! pool, each core owns one *shard* of the state and runs one single-threaded
//! executor over it. A shard's state is plain `Rc`/`RefCell` (the future a
//! shard runs need not be `Send`); shards talk only by messages. Nothing
//! is contended, so throughput scales with cores and latency does not
//! depend on lock hold times. The price: work whose data lives on another
//! shard must be sent there.
//!
//! **One socket per shard with `SO_REUSEPORT`.** Every shard binds the same
//! address; the kernel spreads incoming datagrams over the sockets by a
//! hash of the 4-tuple (source ip:port, destination ip:port). So all
//! datagrams from one remote ip:port land on the same shard, but a *reply*
//! to a query sent by shard A lands wherever the remote's 4-tuple hashes,
//! often on shard B. The application must route replies: for example
//! encode the sending shard in the transaction id and forward the reply
//! over the mesh, or make any shard able to handle any reply.
//!
//! **Where to do the work.** Handling a datagram on the shard where it
//! landed costs nothing extra but spreads one key's state over all shards
//! (or needs it replicated). Forwarding it to the shard that owns its key
//! (e.g. by hashing an info-hash) keeps state in one place at the cost of
//! one mesh hop (about 0.1 µs of throughput per message when batched on the
//! test VM; see the benches). Cheap,
//! stateless replies (pings) belong where they land; stateful work
//! (tracking a lookup, deduplicating an info-hash) belongs to the owner.
//!
//! **Batching everywhere.** Measured on the target machine, batching
//! matters more than the runtime: receive = wait for readiness, then drain
//! with `recvmmsg`; send = `sendmmsg`; mesh = `Vec`s of messages. A
//! glommio park/wake costs ~18 `io_uring_enter` calls, so do as much work
//! per wake-up as possible.
//!
//! # Usage
//!
//! ```no_run
//! use shards::{RecvBatch, ShardContext, ShardsBuilder};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let running = ShardsBuilder::new()
//!     .udp_bind(vec!["0.0.0.0:6881".parse()?])
//!     .spawn(|ctx: ShardContext<Vec<u8>>| async move {
//!         let udp = ctx.udp(0).cloned().ok_or("no socket")?;
//!         let mut batch = RecvBatch::new(64);
//!         while let Some(got) = ctx.or_shutdown(udp.recv_batch(&mut batch)).await {
//!             got?;
//!             for d in batch.iter() {
//!                 udp.queue_send(d.from, d.data)?; // echo
//!             }
//!             udp.flush().await;
//!         }
//!         Ok::<_, Box<dyn std::error::Error + Send + Sync>>(ctx.shard_id())
//!     })?;
//! let stop = running.shutdown_handle(); // call stop.trigger() from a signal thread
//! # stop.trigger();
//! let ids = running.join()?; // every shard's result, or every failure by shard
//! # let _ = ids;
//! # Ok(())
//! # }
//! ```
//!
//! # Knobs and defaults
//!
//! | knob | default | trade-off |
//! |---|---|---|
//! | `shards(n)` | CPUs in the affinity mask | clamped to that count unless `oversubscribe(true)` |
//! | `cores(list)` | affinity mask | `CoreList` parses `0-3,6`; shard *i* runs on the *i*-th CPU |
//! | `pin(bool)` | `true` | pinned: cache-warm, predictable; off: the scheduler may move shards |
//! | `oversubscribe(bool)` | `false` | more shards than CPUs costs context switches |
//! | `io_memory(bytes)` | 1 MiB | locked 3× per executor; sockets do not use it |
//! | `udp_bind(addrs)` | none | one socket per shard per address; port 0 picks one port for all |
//! | `udp_bind_spread(addrs)` | off | instead of `udp_bind`: shard i binds port `port + i` alone (no `SO_REUSEPORT`); port 0: one ephemeral port each |
//! | `udp_buffers(rcv, snd)` | system | bigger absorbs bursts, costs memory per shard |
//! | `udp_batch(n)` | 64 | datagrams per `sendmmsg` in `queue_send` (max 1024) |
//! | `udp_send_wait(d)` | 100 ms | how long `send_batch` waits on a full buffer before dropping |
//! | `udp_rx_coalesce(d)` | off | while datagrams come closer than `d`, wait `d` after an emptied queue and take the lot in one `recvmmsg`: fewer wake-ups, up to `d` more latency |
//! | `mesh_capacity(n)` | 1024 | slots per directed channel; below ~1024 producers park often |
//! | `mesh_batch(n)` | 64 | messages per batch in `Mesh::queue_to` |
//! | `tcp(TcpOptions)` | 5 s connect, 10 s read/write, 256/shard, 2/IP | caps hold before `socket(2)` |
//! | `global_budget(cfg)` | none | rate split over shards with lending, 100 ms epoch |
//! | `metrics_interval(d)` | 1 s | refresh of gauges (mesh depth, kernel drops) |
//!
//! # Failure and shutdown
//!
//! Errors visible before any thread starts (bad core list, RLIMIT_MEMLOCK
//! too low, UDP address in use) come from `spawn`. glommio's `spawn`
//! succeeds even when an executor then fails to start; such failures, a
//! shard's `Err` and panics are collected by [`Shards::join`] with the
//! shard index. The first failure triggers shutdown of all shards so that
//! `join` returns. [`ShutdownHandle::trigger`] is async-signal-safe.
//!
//! # Metrics
//!
//! Through the `metrics` crate, every series labelled `shard`; install the
//! recorder *before* `spawn` (handles are bound at creation):
//! `shards_udp_{rx_datagrams,rx_batches,rx_truncated,rx_kernel_drops,tx_datagrams,
//! tx_dropped_full,tx_failed,budget_drops}_total`, `shards_udp_{rcvbuf,sndbuf}_bytes`,
//! `shards_mesh_{sent,received,dropped_full,dropped_closed}_total`,
//! `shards_mesh_queue_depth`, `shards_tcp_open_connections`,
//! `shards_tcp_refused_total{reason}`, `shards_tcp_connect_{timeouts,errors}_total`,
//! `shards_budget_share`, `shards_budget_{granted,denied}_total`.

pub mod budget;
mod builder;
mod context;
pub mod cores;
mod error;
pub mod mesh;
mod shutdown;
pub mod tcp;
pub mod timers;
pub mod udp;

/// The glommio version the runtime is built on, for `spawn_local`, timers
/// and anything else the application needs from it.
pub use glommio;

pub use builder::{
    Plan, Shards, ShardsBuilder, DEFAULT_IO_MEMORY, DEFAULT_MESH_BATCH, DEFAULT_MESH_CAPACITY,
    DEFAULT_UDP_BATCH,
};
pub use context::{GlobalBudgetHandle, ShardContext};
pub use cores::{CoreList, CoreListError};
pub use error::{AppError, FailureKind, ShardFailure, ShardFailures, ShardsError};
pub use mesh::{Mesh, MeshSendError, MeshStats};
pub use shutdown::{ShutdownHandle, ShutdownSignal};
pub use tcp::{ConnPermit, TcpConn, TcpConnector, TcpError, TcpOptions};
pub use udp::{Datagram, Mmsg, RecvBatch, SendBatch, SendReport, UdpSocket, UdpStats};
