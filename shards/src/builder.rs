//! Planning, starting and joining the shards.
//!
//! This file is about 700 lines: planning (cores, pinning, ports), starting
//! and joining are one life cycle and share the plan's types.

use std::{
    any::Any,
    cell::RefCell,
    future::Future,
    net::SocketAddr,
    rc::Rc,
    time::{Duration, Instant},
};

use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use metrics::{counter, gauge};
use socket2::Socket;

use crate::{
    budget::{BudgetMsg, GlobalBudget, GlobalBudgetConfig},
    context::{GlobalBudgetHandle, ShardContext},
    cores::CoreList,
    error::{AppError, FailureKind, ShardFailure, ShardFailures, ShardsError},
    mesh::{self, Mesh, MeshEnds},
    shutdown::{self, LocalShutdown, ShutdownHandle},
    tcp::{TcpConnector, TcpOptions},
    timers::Ticker,
    udp::{self, UdpOptions, UdpSocket},
};

/// Default io_uring registered memory per executor. Sockets do not use it
/// (it serves glommio's DMA file IO), and each executor locks it three
/// times, so small keeps RLIMIT_MEMLOCK needs small.
pub const DEFAULT_IO_MEMORY: usize = 1 << 20;
/// Default slots per mesh channel (each slot holds one batch).
pub const DEFAULT_MESH_CAPACITY: usize = 1024;
/// Default messages per mesh batch for `queue_to`.
pub const DEFAULT_MESH_BATCH: usize = 64;
/// Default datagrams per `sendmmsg` for `queue_send`.
pub const DEFAULT_UDP_BATCH: usize = 64;

/// Where each shard will run, decided before anything starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// CPU of each shard (`None`: unpinned).
    pub cpus: Vec<Option<usize>>,
    /// The shard count asked for when it was clamped to the CPU count.
    pub clamped_from: Option<usize>,
}

impl Plan {
    /// Number of shards.
    pub fn nr_shards(&self) -> usize {
        self.cpus.len()
    }
}

/// Configures and starts the shards. Every knob has a default; see the
/// crate docs and README for the trade-offs.
#[derive(Debug, Clone)]
pub struct ShardsBuilder {
    shards: Option<usize>,
    cores: Option<CoreList>,
    pin: bool,
    oversubscribe: bool,
    udp_bind: Vec<SocketAddr>,
    udp_spread: bool,
    udp: UdpOptions,
    udp_batch: usize,
    mesh_capacity: usize,
    mesh_batch: usize,
    io_memory: usize,
    tcp: TcpOptions,
    global_budget: Option<GlobalBudgetConfig>,
    metrics_interval: Duration,
    name: String,
}

impl Default for ShardsBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ShardsBuilder {
    /// Defaults: one shard per allowed CPU, pinned; no UDP; mesh capacity
    /// 1024; io_memory 1 MiB.
    pub fn new() -> Self {
        Self {
            shards: None,
            cores: None,
            pin: true,
            oversubscribe: false,
            udp_bind: Vec::new(),
            udp_spread: false,
            udp: UdpOptions::default(),
            udp_batch: DEFAULT_UDP_BATCH,
            mesh_capacity: DEFAULT_MESH_CAPACITY,
            mesh_batch: DEFAULT_MESH_BATCH,
            io_memory: DEFAULT_IO_MEMORY,
            tcp: TcpOptions::default(),
            global_budget: None,
            metrics_interval: Duration::from_secs(1),
            name: "shard".into(),
        }
    }

    /// Number of shards (default: number of CPUs in the core list).
    /// Clamped to the CPU count unless [`Self::oversubscribe`] is set.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = Some(n);
        self
    }

    /// CPUs to use, in shard order (default: the process affinity mask).
    pub fn cores(mut self, list: CoreList) -> Self {
        self.cores = Some(list);
        self
    }

    /// Pin each shard to one CPU (default true). Off: threads float.
    pub fn pin(mut self, pin: bool) -> Self {
        self.pin = pin;
        self
    }

    /// Allow more shards than CPUs (default false). Shards then share CPUs
    /// round robin, which costs context switches and latency.
    pub fn oversubscribe(mut self, yes: bool) -> Self {
        self.oversubscribe = yes;
        self
    }

    /// UDP addresses to serve; each gets one `SO_REUSEPORT` socket per
    /// shard. Port 0 picks a free port, shared by all shards. Replaces an
    /// earlier [`Self::udp_bind_spread`].
    pub fn udp_bind(mut self, addrs: Vec<SocketAddr>) -> Self {
        self.udp_bind = addrs;
        self.udp_spread = false;
        self
    }

    /// UDP addresses to serve with one port per shard: for each address,
    /// shard `i` binds its own socket on port `port + i` (its own
    /// kernel-chosen port when `port` is 0), without `SO_REUSEPORT`, so a
    /// port held by anyone is an error at [`Self::spawn`]. Each shard
    /// receives exactly what is sent to its port. Replaces an earlier
    /// [`Self::udp_bind`].
    pub fn udp_bind_spread(mut self, addrs: Vec<SocketAddr>) -> Self {
        self.udp_bind = addrs;
        self.udp_spread = true;
        self
    }

    /// Requested `SO_RCVBUF` / `SO_SNDBUF` per socket (default: system).
    pub fn udp_buffers(mut self, rcv: Option<usize>, snd: Option<usize>) -> Self {
        self.udp.recv_buffer = rcv;
        self.udp.send_buffer = snd;
        self
    }

    /// Longest wait for room in a full send buffer (default 100 ms).
    pub fn udp_send_wait(mut self, d: Duration) -> Self {
        self.udp.send_wait = d;
        self
    }

    /// Receive coalescing window (default zero: off; see
    /// [`crate::udp::UdpOptions::rx_coalesce`]).
    pub fn udp_rx_coalesce(mut self, d: Duration) -> Self {
        self.udp.rx_coalesce = d;
        self
    }

    /// Datagrams per `sendmmsg` for `queue_send` (default 64, max 1024).
    pub fn udp_batch(mut self, n: usize) -> Self {
        self.udp_batch = n;
        self
    }

    /// Slots per directed mesh channel (default 1024; below ~1024 a full
    /// queue parks the producer often and throughput collapses).
    pub fn mesh_capacity(mut self, n: usize) -> Self {
        self.mesh_capacity = n;
        self
    }

    /// Messages per batch for `Mesh::queue_to` (default 64).
    pub fn mesh_batch(mut self, n: usize) -> Self {
        self.mesh_batch = n;
        self
    }

    /// glommio io_memory per executor (default 1 MiB).
    pub fn io_memory(mut self, bytes: usize) -> Self {
        self.io_memory = bytes;
        self
    }

    /// TCP caps and timeouts for each shard's connector.
    pub fn tcp(mut self, opts: TcpOptions) -> Self {
        self.tcp = opts;
        self
    }

    /// A global budget split over shards with lending (default: none).
    pub fn global_budget(mut self, cfg: GlobalBudgetConfig) -> Self {
        self.global_budget = Some(cfg);
        self
    }

    /// How often gauges (mesh depth, kernel drops) are refreshed (1 s).
    pub fn metrics_interval(mut self, d: Duration) -> Self {
        self.metrics_interval = d;
        self
    }

    /// Thread name prefix (default "shard").
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// Decides shard count and placement without starting anything.
    pub fn plan(&self) -> Result<Plan, ShardsError> {
        let allowed = CoreList::allowed();
        let cores = match (&self.cores, &allowed) {
            (Some(list), Some(allowed)) => {
                if self.pin {
                    if let Some(&cpu) = list.cpus().iter().find(|c| !allowed.cpus().contains(c)) {
                        return Err(ShardsError::CpuNotAvailable {
                            cpu,
                            allowed: allowed.to_string(),
                        });
                    }
                }
                list.clone()
            }
            (Some(list), None) => list.clone(),
            (None, Some(allowed)) => allowed.clone(),
            (None, None) => return Err(ShardsError::AffinityUnknown),
        };
        let asked = self.shards.unwrap_or(cores.len());
        if asked == 0 {
            return Err(ShardsError::NoShards);
        }
        let (n, clamped_from) = if asked > cores.len() && !self.oversubscribe {
            (cores.len(), Some(asked))
        } else {
            (asked, None)
        };
        let cpus = (0..n)
            .map(|i| self.pin.then(|| cores.cpus()[i % cores.len()]))
            .collect();
        Ok(Plan { cpus, clamped_from })
    }

    /// Checks RLIMIT_MEMLOCK against the executors' needs.
    fn check_memlock(&self, shards: usize) -> Result<(), ShardsError> {
        memlock_verdict(memlock_limit(), has_cap_ipc_lock(), shards, self.io_memory)
    }

    /// Starts one executor per shard, each running `f(ctx)`.
    ///
    /// Errors that can be seen before any thread starts (core list,
    /// locked-memory limit, UDP binds) are returned here. Errors of the
    /// shards themselves (executor start-up, the future's `Err`, panics)
    /// are collected by [`Shards::join`], each with its shard index; the
    /// first failure also triggers shutdown of the others so `join`
    /// returns instead of hanging.
    pub fn spawn<M, F, Fut, T, E>(self, f: F) -> Result<Shards<T>, ShardsError>
    where
        M: Send + 'static,
        F: Fn(ShardContext<M>) -> Fut + Send + Clone + 'static,
        Fut: Future<Output = Result<T, E>> + 'static,
        T: Send + 'static,
        E: Into<AppError> + 'static,
    {
        let plan = self.plan()?;
        let n = plan.nr_shards();
        self.check_memlock(n)?;

        // Bind every address before any thread starts, so a port in use is
        // reported synchronously and no shard runs half-configured.
        let mut per_shard_udp: Vec<Vec<(Socket, SocketAddr, usize, usize)>> =
            (0..n).map(|_| Vec::new()).collect();
        let mut udp_addrs = Vec::new();
        let mut udp_addrs_by_shard: Vec<Vec<SocketAddr>> = (0..n).map(|_| Vec::new()).collect();
        for addr in &self.udp_bind {
            if self.udp_spread {
                for (i, g) in udp::bind_spread(*addr, n, &self.udp)?
                    .into_iter()
                    .enumerate()
                {
                    udp_addrs_by_shard[i].push(g.local);
                    for s in g.sockets {
                        per_shard_udp[i].push((s, g.local, g.recv_buffer, g.send_buffer));
                    }
                }
            } else {
                let group = udp::bind_group(*addr, n, &self.udp)?;
                udp_addrs.push(group.local);
                for (i, s) in group.sockets.into_iter().enumerate() {
                    per_shard_udp[i].push((s, group.local, group.recv_buffer, group.send_buffer));
                    udp_addrs_by_shard[i].push(group.local);
                }
            }
        }
        if self.udp_spread {
            udp_addrs = udp_addrs_by_shard.iter().flatten().copied().collect();
        }

        let app_mesh = mesh::wire::<M>(n, self.mesh_capacity);
        let mut budget_mesh: Vec<Option<MeshEnds<BudgetMsg>>> = match self.global_budget {
            Some(_) => mesh::wire::<BudgetMsg>(n, 1024)
                .into_iter()
                .map(Some)
                .collect(),
            None => (0..n).map(|_| None).collect(),
        };
        let (shutdown, readers) = ShutdownHandle::new(n).map_err(|source| ShardsError::Setup {
            what: "shutdown socketpair",
            source,
        })?;

        // One per-IP connection table for every shard's connector: the
        // per-IP cap is per process, not per shard.
        let conn_counts = std::sync::Arc::new(crate::budget::SharedConnCounts::new(
            crate::tcp::CONN_COUNT_SLOTS,
        ));
        let mut handles = Vec::with_capacity(n);
        let parts = app_mesh
            .into_iter()
            .zip(readers)
            .zip(per_shard_udp)
            .enumerate();
        for (i, ((mesh_ends, reader), udp)) in parts {
            let cpu = plan.cpus[i];
            let placement = match cpu {
                Some(c) => Placement::Fixed(c),
                None => Placement::Unbound,
            };
            let setup = ShardSetup {
                shard: i,
                nr_shards: n,
                cpu,
                udp,
                udp_opts: self.udp,
                udp_batch: self.udp_batch,
                mesh: mesh_ends,
                mesh_batch: self.mesh_batch,
                budget_mesh: budget_mesh[i].take(),
                budget: self.global_budget,
                tcp: self.tcp,
                conn_counts: conn_counts.clone(),
                metrics_interval: self.metrics_interval,
                reader,
                guard: FailGuard {
                    shutdown: shutdown.clone(),
                    armed: true,
                },
            };
            let f = f.clone();
            let spawned = LocalExecutorBuilder::new(placement)
                .name(&format!("{}-{i}", self.name))
                .io_memory(self.io_memory)
                .spawn(move || run_shard(setup, f));
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    // No thread: stop those already started, then report.
                    shutdown.trigger();
                    let started = Shards {
                        handles,
                        shutdown: shutdown.clone(),
                        udp_addrs: udp_addrs.clone(),
                        udp_addrs_by_shard: udp_addrs_by_shard.clone(),
                        plan: plan.clone(),
                    };
                    let mut failures = match started.join() {
                        Err(ShardsError::Failed(f)) => f.0,
                        _ => Vec::new(),
                    };
                    failures.push(ShardFailure {
                        shard: i,
                        kind: FailureKind::Executor(e.to_string()),
                    });
                    return Err(ShardsError::Failed(ShardFailures(failures)));
                }
            }
        }
        Ok(Shards {
            handles,
            shutdown,
            udp_addrs,
            udp_addrs_by_shard,
            plan,
        })
    }
}

/// Triggers shutdown when dropped while armed: covers a shard whose
/// executor never starts (glommio drops the closure), a shard that panics
/// (unwinding drops it) and a shard that returns an error.
#[derive(Debug)]
struct FailGuard {
    shutdown: ShutdownHandle,
    armed: bool,
}

impl Drop for FailGuard {
    fn drop(&mut self) {
        if self.armed {
            self.shutdown.trigger();
        }
    }
}

struct ShardSetup<M: Send + 'static> {
    shard: usize,
    nr_shards: usize,
    cpu: Option<usize>,
    udp: Vec<(Socket, SocketAddr, usize, usize)>,
    udp_opts: UdpOptions,
    udp_batch: usize,
    mesh: MeshEnds<M>,
    mesh_batch: usize,
    budget_mesh: Option<MeshEnds<BudgetMsg>>,
    budget: Option<GlobalBudgetConfig>,
    tcp: TcpOptions,
    conn_counts: std::sync::Arc<crate::budget::SharedConnCounts>,
    metrics_interval: Duration,
    reader: std::os::unix::net::UnixStream,
    guard: FailGuard,
}

async fn run_shard<M, F, Fut, T, E>(setup: ShardSetup<M>, f: F) -> Result<T, ShardFailure>
where
    M: Send + 'static,
    F: Fn(ShardContext<M>) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Into<AppError>,
{
    let ShardSetup {
        shard,
        nr_shards,
        cpu,
        udp,
        udp_opts,
        udp_batch,
        mesh,
        mesh_batch,
        budget_mesh,
        budget,
        tcp,
        conn_counts,
        metrics_interval,
        reader,
        mut guard,
    } = setup;

    let local_shutdown = Rc::new(LocalShutdown::default());
    glommio::spawn_local(shutdown::watch(
        reader,
        guard.shutdown.clone(),
        local_shutdown.clone(),
    ))
    .detach();

    let mesh = Rc::new(Mesh::connect(mesh, mesh_batch, "app").await);
    let udp: Rc<[Rc<UdpSocket>]> = udp
        .into_iter()
        .map(|(s, local, rcv, snd)| {
            Rc::new(UdpSocket::adopt(
                s, shard, local, rcv, snd, &udp_opts, udp_batch,
            ))
        })
        .collect();

    let budget = match (budget, budget_mesh) {
        (Some(cfg), Some(ends)) => Some(start_budget(cfg, ends, shard, nr_shards).await),
        _ => None,
    };

    {
        let mesh = mesh.clone();
        let udp = udp.clone();
        glommio::spawn_local(async move {
            let mut ticker = Ticker::new(metrics_interval);
            loop {
                ticker.tick().await;
                mesh.publish_depth();
                for u in udp.iter() {
                    // A failing getsockopt only loses this sample.
                    let _ = u.refresh_kernel_drops();
                }
            }
        })
        .detach();
    }

    let ctx = ShardContext {
        shard_id: shard,
        nr_shards,
        cpu,
        udp,
        mesh,
        shutdown: guard.shutdown.clone(),
        local_shutdown,
        tcp: TcpConnector::with_shared_counts(tcp, shard, conn_counts),
        budget,
    };
    match f(ctx).await {
        Ok(t) => {
            guard.armed = false;
            Ok(t)
        }
        Err(e) => Err(ShardFailure {
            shard,
            kind: FailureKind::App(e.into()),
        }),
    }
}

async fn start_budget(
    cfg: GlobalBudgetConfig,
    ends: MeshEnds<BudgetMsg>,
    shard: usize,
    nr_shards: usize,
) -> GlobalBudgetHandle {
    let bmesh = Rc::new(Mesh::connect(ends, 1, "budget").await);
    let state = Rc::new(RefCell::new(GlobalBudget::new(
        cfg,
        shard,
        nr_shards,
        Instant::now(),
    )));
    let s = shard.to_string();
    let share_gauge = gauge!("shards_budget_share", "shard" => s.clone());
    let granted = counter!("shards_budget_granted_total", "shard" => s.clone());
    let denied = counter!("shards_budget_denied_total", "shard" => s);
    {
        let state = state.clone();
        let bmesh = bmesh.clone();
        glommio::spawn_local(async move {
            let mut ticker = Ticker::new(cfg.epoch);
            let mut out = Vec::new();
            loop {
                ticker.tick().await;
                let now = Instant::now();
                state.borrow_mut().on_epoch(now, &mut out);
                for (peer, msg) in out.drain(..) {
                    if let Err(e) = bmesh.try_send_to(peer, msg) {
                        if let Some(msg) = e.into_inner() {
                            state.borrow_mut().on_undeliverable(now, msg);
                        }
                    }
                }
                let b = state.borrow();
                share_gauge.set(b.share() as f64);
                let (g, d) = b.granted_denied();
                granted.absolute(g);
                denied.absolute(d);
            }
        })
        .detach();
    }
    {
        let state = state.clone();
        glommio::spawn_local(async move {
            while let Some((from, msg)) = bmesh.recv().await {
                state.borrow_mut().on_message(Instant::now(), from, msg);
            }
        })
        .detach();
    }
    GlobalBudgetHandle { inner: state }
}

/// Running shards.
#[derive(Debug)]
pub struct Shards<T: Send + 'static> {
    handles: Vec<ExecutorJoinHandle<Result<T, ShardFailure>>>,
    shutdown: ShutdownHandle,
    udp_addrs: Vec<SocketAddr>,
    udp_addrs_by_shard: Vec<Vec<SocketAddr>>,
    plan: Plan,
}

impl<T: Send + 'static> Shards<T> {
    /// Handle to stop every shard (`Send + Sync`, async-signal-safe).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Every bound UDP address (ports resolved). Shared layout
    /// ([`ShardsBuilder::udp_bind`]): one per address, in `udp_bind` order.
    /// One port per shard ([`ShardsBuilder::udp_bind_spread`]): one per
    /// shard per address, shard 0's first, then shard 1's, and so on.
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp_addrs
    }

    /// Each shard's bound UDP addresses (index: shard, then bind address
    /// in `udp_bind` order), which is what that shard's
    /// [`ShardContext::udp_addrs`] returns. In the shared layout every
    /// shard has the same list.
    pub fn udp_addrs_by_shard(&self) -> &[Vec<SocketAddr>] {
        &self.udp_addrs_by_shard
    }

    /// Placement in force.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Waits for every shard; returns their results in shard order, or
    /// every failure with its shard index.
    pub fn join(self) -> Result<Vec<T>, ShardsError> {
        let mut ok = Vec::with_capacity(self.handles.len());
        let mut failures = Vec::new();
        for (shard, h) in self.handles.into_iter().enumerate() {
            match h.join() {
                Ok(Ok(t)) => ok.push(t),
                Ok(Err(f)) => failures.push(f),
                Err(glommio::GlommioError::BuilderError(
                    glommio::BuilderErrorKind::ThreadPanic(p),
                )) => failures.push(ShardFailure {
                    shard,
                    kind: FailureKind::Panic(panic_message(&p)),
                }),
                Err(e) => failures.push(ShardFailure {
                    shard,
                    kind: FailureKind::Executor(e.to_string()),
                }),
            }
        }
        if failures.is_empty() {
            Ok(ok)
        } else {
            Err(ShardsError::Failed(ShardFailures(failures)))
        }
    }
}

fn panic_message(p: &Box<dyn Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".into()
    }
}

/// Decides whether `shards` executors with `io_memory` each can start under
/// the soft locked-memory `limit` (`None`: unlimited). glommio locks
/// `io_memory` once per io_uring ring, three rings per executor; holders of
/// CAP_IPC_LOCK are exempt from the limit.
pub(crate) fn memlock_verdict(
    limit: Option<u64>,
    cap_ipc_lock: bool,
    shards: usize,
    io_memory: usize,
) -> Result<(), ShardsError> {
    let needed = (shards as u64)
        .saturating_mul(3)
        .saturating_mul(io_memory as u64);
    match limit {
        Some(limit) if limit < needed && !cap_ipc_lock => Err(ShardsError::MemLock {
            limit,
            needed,
            needed_kib: needed.div_ceil(1024),
            shards,
        }),
        _ => Ok(()),
    }
}

/// Soft RLIMIT_MEMLOCK in bytes; `None` when unlimited or unreadable.
pub(crate) fn memlock_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid resource id and a live out-pointer.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) };
    if rc != 0 || r.rlim_cur == libc::RLIM_INFINITY {
        None
    } else {
        Some(r.rlim_cur)
    }
}

/// CAP_IPC_LOCK lifts the locked-memory limit for io_uring buffers.
fn has_cap_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_clamps_unless_oversubscribed() {
        let allowed = CoreList::allowed().unwrap();
        let n = allowed.len();
        let p = ShardsBuilder::new().shards(n + 3).plan().unwrap();
        assert_eq!(p.nr_shards(), n);
        assert_eq!(p.clamped_from, Some(n + 3));
        let p = ShardsBuilder::new()
            .shards(n + 3)
            .oversubscribe(true)
            .plan()
            .unwrap();
        assert_eq!(p.nr_shards(), n + 3);
        assert_eq!(p.cpus[n], Some(allowed.cpus()[0]), "wraps round robin");
        let p = ShardsBuilder::new().pin(false).plan().unwrap();
        assert!(p.cpus.iter().all(Option::is_none));
        assert_eq!(p.nr_shards(), n);
        assert!(matches!(
            ShardsBuilder::new().shards(0).plan(),
            Err(ShardsError::NoShards)
        ));
    }

    #[test]
    fn plan_rejects_cpus_outside_the_mask() {
        let err = ShardsBuilder::new()
            .cores("1000".parse().unwrap())
            .plan()
            .unwrap_err();
        assert!(
            err.to_string().contains("CPU 1000 is not available"),
            "{err}"
        );
        // Unpinned, any list is only a count.
        let p = ShardsBuilder::new()
            .pin(false)
            .cores("1000-1001".parse().unwrap())
            .plan()
            .unwrap();
        assert_eq!(p.nr_shards(), 2);
    }

    #[test]
    fn memlock_error_names_the_fix() {
        let e = ShardsError::MemLock {
            limit: 65536,
            needed: 6 << 20,
            needed_kib: 6 << 10,
            shards: 2,
        };
        let s = e.to_string();
        assert!(
            s.contains("ulimit -l 6144") && s.contains("LimitMEMLOCK="),
            "{s}"
        );
    }
}
