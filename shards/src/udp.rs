//! Shard UDP sockets (one `SO_REUSEPORT` group per address, or one port
//! per shard), batched IO.
//!
//! # Binding without stealing a port
//!
//! `SO_REUSEPORT` lets N sockets share a port, but it also lets us silently
//! join a port that someone else (another process, or another socket of
//! ours) already holds with `SO_REUSEPORT` set. glommio's own `bind` always
//! sets it. To make "port in use" an error, the first socket of a group is
//! bound *without* `SO_REUSEPORT`: that bind fails with `EADDRINUSE` if any
//! socket holds the address, with or without the option. Only after it is
//! bound do we turn `SO_REUSEPORT` on for it and bind the other shards'
//! sockets with the option to the same (possibly kernel-chosen) port.
//!
//! This is race-free against sockets that existed before us: there is no
//! moment at which the port is unheld. What it cannot prevent is a socket
//! created *later* by a process of the same effective UID that also sets
//! `SO_REUSEPORT`: the kernel lets it join the group (processes of another
//! UID are refused by the kernel). Run the crawler under its own user.
//!
//! # One port per shard
//!
//! [`ShardsBuilder::udp_bind_spread`](crate::ShardsBuilder::udp_bind_spread)
//! gives each shard a socket of its own instead: shard `i` binds the
//! address with port `port + i` (or its own kernel-chosen port when the
//! port is 0), *without* `SO_REUSEPORT`, so nothing else can join it and a
//! held port is an error. Each shard then receives exactly what is sent to
//! its port.
//!
//! # Receive
//!
//! A shard waits for readiness (a 1-byte `MSG_PEEK` through glommio, which
//! parks the executor on io_uring), then drains with `recvmmsg` in batches.
//! After a full batch it tries `recvmmsg` again before waiting, so a busy
//! socket costs one syscall per batch.
//!
//! # Send
//!
//! `sendmmsg` in batches, non-blocking. When the send buffer is full
//! (`EAGAIN`/`ENOBUFS`) [`UdpSocket::send_batch`] waits (bounded by the
//! configured `send_wait`) for room by sending the next datagram through
//! glommio, then resumes batching; [`UdpSocket::try_send_batch`] drops
//! instead. Every datagram not sent is counted, never silent.
//!
//! # What drop counters cover
//!
//! * `tx_dropped_full`: datagrams not sent because the socket buffer stayed
//!   full (`EAGAIN`, `ENOBUFS`).
//! * `tx_failed`: datagrams the kernel refused for another reason (bad
//!   address family, unreachable network, message too large).
//! * `rx_kernel_drops`: the kernel's per-socket drop counter (`sk_drops`,
//!   read with `getsockopt(SO_MEMINFO)`): datagrams dropped because the
//!   receive buffer was full, plus checksum and similar failures. Not
//!   counted: drops before the socket (NIC rings, `netdev_max_backlog`;
//!   see `/proc/net/softnet_stat` and `/proc/net/snmp` `RcvbufErrors`,
//!   which are host-wide).
//! * `rx_truncated`: datagrams larger than [`DATAGRAM_BUF`] bytes.
//! * budget drops: the application decides what exceeds a budget and
//!   reports it with [`UdpSocket::record_budget_drops`].
//!
//! This file is about 1,100 lines: it is the one syscall layer for UDP
//! (recvmmsg/sendmmsg, IP_PKTINFO, SO_REUSEPORT groups, receive coalescing
//! and the socket's counters) that the runtime, the load generator, the echo
//! and the benches all use, kept in one place on purpose.

use std::{
    cell::{Cell, RefCell},
    io,
    mem::{size_of, zeroed},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd},
    time::Duration,
};

use metrics::{counter, gauge, Counter, Gauge};
use socket2::{Domain, Protocol, Socket, Type};

/// Bytes per receive slot: large enough for any DHT message (they are kept
/// under the 1280-byte IPv6 minimum MTU) with room to spare.
pub const DATAGRAM_BUF: usize = 2048;

/// Largest batch `recvmmsg`/`sendmmsg` accept in one call (`UIO_MAXIOV`).
pub const MAX_BATCH: usize = 1024;

/// Largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;

// Socket options not exported by the libc crate for every target. Values
// are those of the generic Linux ABI (x86_64, aarch64, riscv64).
const SO_MEMINFO: libc::c_int = 55;
const SO_RCVBUFFORCE: libc::c_int = 33;
const SO_SNDBUFFORCE: libc::c_int = 32;
const SK_MEMINFO_DROPS: usize = 8;
const SK_MEMINFO_VARS: usize = 9;

/// Why a UDP address could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum UdpBindError {
    /// Another socket already holds the address.
    #[error("UDP address {addr} is already in use by another socket (not shared: binding it would silently split its traffic)")]
    InUse {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// One port per shard was asked for, but `port + shard` passes 65535.
    #[error("UDP address {addr}: {shards} shards need ports {first}..={last}, past 65535")]
    PortRange {
        /// The address asked for.
        addr: SocketAddr,
        /// The shard count.
        shards: usize,
        /// The first port (the one asked for).
        first: u16,
        /// The last port needed.
        last: u32,
    },
    /// Any other socket error, with the step that failed.
    #[error("UDP socket for {addr}: {op}: {source}")]
    Io {
        /// The address asked for.
        addr: SocketAddr,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Socket options for every shard socket.
#[derive(Debug, Clone, Copy)]
pub struct UdpOptions {
    /// Requested `SO_RCVBUF` in bytes (`None`: system default).
    pub recv_buffer: Option<usize>,
    /// Requested `SO_SNDBUF` in bytes (`None`: system default).
    pub send_buffer: Option<usize>,
    /// How long [`UdpSocket::send_batch`] waits for room in a full send
    /// buffer before dropping the rest of the batch.
    pub send_wait: Duration,
    /// Receive coalescing window (zero: off). While datagrams arrive
    /// closer together than this, [`UdpSocket::recv_batch`] waits this
    /// long after a batch that emptied the queue and takes what arrived
    /// meanwhile in one `recvmmsg`, instead of waking once per datagram.
    /// Adds up to this much latency, only under load.
    pub rx_coalesce: Duration,
}

impl Default for UdpOptions {
    fn default() -> Self {
        Self {
            recv_buffer: None,
            send_buffer: None,
            send_wait: Duration::from_millis(100),
            rx_coalesce: Duration::ZERO,
        }
    }
}

/// The sockets of one address, one per shard, bound before the shards start.
#[derive(Debug)]
pub(crate) struct BoundGroup {
    pub(crate) local: SocketAddr,
    pub(crate) sockets: Vec<Socket>,
    pub(crate) recv_buffer: usize,
    pub(crate) send_buffer: usize,
}

fn io_err(addr: SocketAddr, op: &'static str) -> impl FnOnce(io::Error) -> UdpBindError {
    move |source| UdpBindError::Io { addr, op, source }
}

fn set_int_opt(sock: &Socket, opt: libc::c_int, v: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(v).unwrap_or(libc::c_int::MAX);
    // SAFETY: valid fd, pointer to a live c_int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn new_socket(addr: SocketAddr, opts: &UdpOptions) -> Result<Socket, UdpBindError> {
    let domain = Domain::for_address(addr);
    let sock =
        Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(io_err(addr, "socket"))?;
    if addr.is_ipv6() {
        // Keep IPv4 and IPv6 separate so `[::]:p` and `0.0.0.0:p` can both
        // be bound and each shard socket serves one family.
        sock.set_only_v6(true)
            .map_err(io_err(addr, "IPV6_V6ONLY"))?;
    }
    sock.set_nonblocking(true)
        .map_err(io_err(addr, "O_NONBLOCK"))?;
    if let Some(n) = opts.recv_buffer {
        // Above net.core.rmem_max the plain option is silently capped;
        // the FORCE variant (CAP_NET_ADMIN) is not. Try it first.
        if set_int_opt(&sock, SO_RCVBUFFORCE, n).is_err() {
            sock.set_recv_buffer_size(n)
                .map_err(io_err(addr, "SO_RCVBUF"))?;
        }
    }
    if let Some(n) = opts.send_buffer {
        if set_int_opt(&sock, SO_SNDBUFFORCE, n).is_err() {
            sock.set_send_buffer_size(n)
                .map_err(io_err(addr, "SO_SNDBUF"))?;
        }
    }
    Ok(sock)
}

/// One socket bound to `addr` without `SO_REUSEPORT` (so a held address
/// is [`UdpBindError::InUse`]), with its real address and buffer sizes.
pub(crate) fn bind_exclusive(
    addr: SocketAddr,
    opts: &UdpOptions,
) -> Result<BoundGroup, UdpBindError> {
    let sock = new_socket(addr, opts)?;
    sock.bind(&addr.into()).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            UdpBindError::InUse { addr }
        } else {
            UdpBindError::Io {
                addr,
                op: "bind",
                source: e,
            }
        }
    })?;
    let local = sock
        .local_addr()
        .map_err(io_err(addr, "getsockname"))?
        .as_socket()
        .ok_or_else(|| UdpBindError::Io {
            addr,
            op: "getsockname",
            source: io::Error::other("not an IP address"),
        })?;
    let recv_buffer = sock.recv_buffer_size().map_err(io_err(addr, "SO_RCVBUF"))?;
    let send_buffer = sock.send_buffer_size().map_err(io_err(addr, "SO_SNDBUF"))?;
    Ok(BoundGroup {
        local,
        sockets: vec![sock],
        recv_buffer,
        send_buffer,
    })
}

/// Binds `n` sockets to `addr` (see the module docs for the order of
/// operations that makes an occupied port an error).
pub(crate) fn bind_group(
    addr: SocketAddr,
    n: usize,
    opts: &UdpOptions,
) -> Result<BoundGroup, UdpBindError> {
    let mut group = bind_exclusive(addr, opts)?;
    for s in &group.sockets {
        s.set_reuse_port(true)
            .map_err(io_err(addr, "SO_REUSEPORT"))?;
    }
    let local = group.local;
    for _ in 1..n {
        let s = new_socket(addr, opts)?;
        s.set_reuse_port(true)
            .map_err(io_err(addr, "SO_REUSEPORT"))?;
        s.bind(&local.into())
            .map_err(io_err(local, "bind (shared)"))?;
        group.sockets.push(s);
    }
    Ok(group)
}

/// The address shard `shard` of `shards` binds in the one-port-per-shard
/// layout: `addr` with port `port + shard`, or port 0 (its own ephemeral
/// port) when `addr`'s port is 0.
pub fn spread_addr(
    addr: SocketAddr,
    shard: usize,
    shards: usize,
) -> Result<SocketAddr, UdpBindError> {
    if addr.port() == 0 {
        return Ok(addr);
    }
    let base = u64::from(addr.port());
    let last = base.saturating_add(shards.saturating_sub(1).max(shard) as u64);
    let err = || UdpBindError::PortRange {
        addr,
        shards,
        first: addr.port(),
        last: u32::try_from(last).unwrap_or(u32::MAX),
    };
    let port = u16::try_from(base.saturating_add(shard as u64)).map_err(|_| err())?;
    if last > u64::from(u16::MAX) {
        return Err(err());
    }
    let mut a = addr;
    a.set_port(port);
    Ok(a)
}

/// Binds one socket per shard, shard `i` on [`spread_addr`]`(addr, i, n)`,
/// each without `SO_REUSEPORT`. Returns them in shard order.
pub(crate) fn bind_spread(
    addr: SocketAddr,
    n: usize,
    opts: &UdpOptions,
) -> Result<Vec<BoundGroup>, UdpBindError> {
    (0..n)
        .map(|i| bind_exclusive(spread_addr(addr, i, n)?, opts))
        .collect()
}

/// One received datagram, borrowed from a [`RecvBatch`].
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// Source address.
    pub from: SocketAddr,
    /// Payload (at most [`DATAGRAM_BUF`] bytes).
    pub data: &'a [u8],
    /// The datagram was longer than [`DATAGRAM_BUF`] and was cut.
    pub truncated: bool,
}

/// Reusable storage for up to `capacity` received datagrams.
///
/// Allocate once per receive loop and reuse: the buffers are
/// `capacity × 2 KiB` and are never reallocated.
#[derive(Debug)]
pub struct RecvBatch {
    bufs: Vec<[u8; DATAGRAM_BUF]>,
    lens: Vec<usize>,
    addrs: Vec<SocketAddr>,
    truncated: Vec<bool>,
    len: usize,
}

impl RecvBatch {
    /// Room for `capacity` datagrams (clamped to `1..=MAX_BATCH`).
    pub fn new(capacity: usize) -> Self {
        let n = capacity.clamp(1, MAX_BATCH);
        Self {
            bufs: vec![[0u8; DATAGRAM_BUF]; n],
            lens: vec![0; n],
            addrs: vec![SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)); n],
            truncated: vec![false; n],
            len: 0,
        }
    }

    /// Slots available.
    pub fn capacity(&self) -> usize {
        self.bufs.len()
    }

    /// Datagrams held from the last receive.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No datagram held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `i`-th datagram of the last receive.
    pub fn get(&self, i: usize) -> Option<Datagram<'_>> {
        if i >= self.len {
            return None;
        }
        Some(Datagram {
            from: self.addrs[i],
            data: &self.bufs[i][..self.lens[i]],
            truncated: self.truncated[i],
        })
    }

    /// The datagrams of the last receive, in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = Datagram<'_>> + '_ {
        (0..self.len).filter_map(move |i| self.get(i))
    }
}

/// Datagrams queued for one `sendmmsg`.
#[derive(Debug, Clone)]
pub struct SendBatch {
    data: Vec<u8>,
    entries: Vec<SendEntry>,
    capacity: usize,
}

#[derive(Clone, Copy)]
struct SendEntry {
    start: usize,
    len: usize,
    addr: libc::sockaddr_storage,
    addr_len: libc::socklen_t,
}

impl std::fmt::Debug for SendEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendEntry")
            .field("len", &self.len)
            .field("to", &storage_to_addr(&self.addr))
            .finish()
    }
}

/// Why a datagram could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The batch holds `capacity` datagrams already; send it first.
    #[error("send batch is full")]
    Full,
    /// Larger than the largest UDP payload.
    #[error("datagram of {0} bytes is larger than {MAX_DATAGRAM}")]
    TooLarge(usize),
}

impl SendBatch {
    /// Room for `capacity` datagrams (clamped to `1..=MAX_BATCH`).
    pub fn new(capacity: usize) -> Self {
        let n = capacity.clamp(1, MAX_BATCH);
        Self {
            data: Vec::with_capacity(n * 512),
            entries: Vec::with_capacity(n),
            capacity: n,
        }
    }

    /// Queues one datagram (copied).
    pub fn push(&mut self, to: SocketAddr, payload: &[u8]) -> Result<(), QueueError> {
        if payload.len() > MAX_DATAGRAM {
            return Err(QueueError::TooLarge(payload.len()));
        }
        if self.entries.len() >= self.capacity {
            return Err(QueueError::Full);
        }
        let (addr, addr_len) = addr_to_storage(&to);
        self.entries.push(SendEntry {
            start: self.data.len(),
            len: payload.len(),
            addr,
            addr_len,
        });
        self.data.extend_from_slice(payload);
        Ok(())
    }

    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The batch cannot take another datagram.
    pub fn is_full(&self) -> bool {
        self.entries.len() >= self.capacity
    }

    /// Maximum datagrams per batch.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// A batch with no room and no allocation, left in place while a flush
    /// holds the real one.
    fn placeholder() -> Self {
        Self {
            data: Vec::new(),
            entries: Vec::new(),
            capacity: 0,
        }
    }

    /// Forgets everything queued (keeps the allocations).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.data.clear();
    }
}

/// What happened to a batch handed to the socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendReport {
    /// Accepted by the kernel.
    pub sent: usize,
    /// Dropped: the send buffer stayed full (`EAGAIN`/`ENOBUFS`).
    pub dropped_full: usize,
    /// Refused by the kernel for another reason.
    pub failed: usize,
}

/// Counters of one shard socket (cumulative, for tests and diagnostics; the
/// same values go to the `metrics` recorder).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpStats {
    /// Datagrams received.
    pub rx_datagrams: u64,
    /// `recvmmsg` calls that returned data.
    pub rx_batches: u64,
    /// Datagrams longer than the slot.
    pub rx_truncated: u64,
    /// Datagrams sent.
    pub tx_datagrams: u64,
    /// Dropped on a full send buffer.
    pub tx_dropped_full: u64,
    /// Refused by the kernel.
    pub tx_failed: u64,
    /// Reported by the application as over budget.
    pub budget_drops: u64,
}

#[derive(Debug)]
struct UdpMetrics {
    rx: Counter,
    rx_batches: Counter,
    rx_truncated: Counter,
    rx_kernel_drops: Counter,
    tx: Counter,
    tx_full: Counter,
    tx_failed: Counter,
    budget: Counter,
    rcvbuf: Gauge,
    sndbuf: Gauge,
}

impl UdpMetrics {
    fn new(shard: usize, local: SocketAddr) -> Self {
        let s = shard.to_string();
        let l = local.to_string();
        let c = |name: &'static str| counter!(name, "shard" => s.clone(), "local" => l.clone());
        let g = |name: &'static str| gauge!(name, "shard" => s.clone(), "local" => l.clone());
        Self {
            rx: c("shards_udp_rx_datagrams_total"),
            rx_batches: c("shards_udp_rx_batches_total"),
            rx_truncated: c("shards_udp_rx_truncated_total"),
            rx_kernel_drops: c("shards_udp_rx_kernel_drops_total"),
            tx: c("shards_udp_tx_datagrams_total"),
            tx_full: c("shards_udp_tx_dropped_full_total"),
            tx_failed: c("shards_udp_tx_failed_total"),
            budget: c("shards_udp_budget_drops_total"),
            rcvbuf: g("shards_udp_rcvbuf_bytes"),
            sndbuf: g("shards_udp_sndbuf_bytes"),
        }
    }
}

/// The one `recvmmsg`/`sendmmsg` layer: batched receive and send on any
/// UDP socket descriptor, with reusable headers. The shard sockets use it,
/// and so do the load generator's flood and echo and the runtime's bench
/// (blocking or not, by `flags`).
#[derive(Debug, Default)]
pub struct Mmsg {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
}

impl Mmsg {
    /// Empty; headers grow to the largest batch used.
    pub fn new() -> Self {
        Self::default()
    }

    fn ensure(&mut self, n: usize) {
        if self.hdrs.len() < n {
            // SAFETY: these are plain C structs for which all-zero is a
            // valid (empty) value.
            self.hdrs.resize(n, unsafe { zeroed() });
            self.iovs.resize(
                n,
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                },
            );
            self.names.resize(n, unsafe { zeroed() });
        }
    }

    /// One `recvmmsg` of up to `batch.capacity()` datagrams on `fd` with
    /// `flags` (`MSG_DONTWAIT` for a non-blocking call); fills `batch` and
    /// returns how many. A connected socket's datagrams carry its peer.
    pub fn recv(
        &mut self,
        fd: RawFd,
        batch: &mut RecvBatch,
        flags: libc::c_int,
    ) -> io::Result<usize> {
        batch.len = 0;
        let n = batch.capacity();
        self.ensure(n);
        for i in 0..n {
            self.iovs[i] = libc::iovec {
                iov_base: batch.bufs[i].as_mut_ptr().cast(),
                iov_len: DATAGRAM_BUF,
            };
            point_header(
                &mut self.hdrs[i],
                &mut self.names[i],
                size_of::<libc::sockaddr_storage>() as libc::socklen_t,
                &mut self.iovs[i],
            );
        }
        // SAFETY: `hdrs[..n]` point into `iovs`, `names` and `batch.bufs`,
        // all alive and unaliased for the duration of the call; `n` ≤ 1024.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let got = rc as usize;
        for i in 0..got {
            let h = &self.hdrs[i];
            batch.lens[i] = (h.msg_len as usize).min(DATAGRAM_BUF);
            batch.truncated[i] = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            batch.addrs[i] = storage_to_addr(&self.names[i])
                .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
        }
        batch.len = got;
        Ok(got)
    }

    /// One `sendmmsg` of `batch`'s datagrams from `start` on `fd` with
    /// `flags`: how many the kernel took, or the error of the first.
    pub fn send(
        &mut self,
        fd: RawFd,
        batch: &SendBatch,
        start: usize,
        flags: libc::c_int,
    ) -> io::Result<usize> {
        let n = batch.entries.len().saturating_sub(start);
        if n == 0 {
            return Ok(0);
        }
        self.ensure(n);
        for (i, e) in batch.entries[start..].iter().enumerate() {
            self.names[i] = e.addr;
            self.iovs[i] = libc::iovec {
                // sendmmsg only reads through this pointer.
                iov_base: batch.data[e.start..].as_ptr() as *mut libc::c_void,
                iov_len: e.len,
            };
            point_header(
                &mut self.hdrs[i],
                &mut self.names[i],
                e.addr_len,
                &mut self.iovs[i],
            );
        }
        // SAFETY: the headers point into live buffers owned by `self` and
        // `batch` for the duration of the call; `n` ≤ 1024.
        let rc = unsafe { libc::sendmmsg(fd, self.hdrs.as_mut_ptr(), n as libc::c_uint, flags) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc as usize)
        }
    }

    /// Sends all of `batch` with `flags`, calling `sendmmsg` until the
    /// kernel has taken everything or refuses: how many were sent, or the
    /// error when not even the first was.
    pub fn send_all(
        &mut self,
        fd: RawFd,
        batch: &SendBatch,
        flags: libc::c_int,
    ) -> io::Result<usize> {
        let mut off = 0;
        while off < batch.len() {
            match self.send(fd, batch, off, flags) {
                Ok(0) => break,
                Ok(k) => off += k,
                Err(e) if off == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(off)
    }
}

/// A shard's socket on one shared address.
///
/// Not `Send`: it lives on its shard. All methods take `&self`, so it can be
/// shared between tasks of the shard with `Rc`.
#[derive(Debug)]
pub struct UdpSocket {
    inner: glommio::net::UdpSocket,
    fd: RawFd,
    local: SocketAddr,
    recv_buffer: usize,
    send_buffer: usize,
    send_wait: Duration,
    maybe_more: Cell<bool>,
    rx_coalesce: Duration,
    /// The traffic is dense (the last wake came within `rx_coalesce` of the
    /// one before): coalesce.
    dense: Cell<bool>,
    last_wake: Cell<Option<std::time::Instant>>,
    mmsg: RefCell<Mmsg>,
    outbox: RefCell<SendBatch>,
    batch_size: usize,
    stats: Cell<UdpStats>,
    kernel_drops: Cell<u64>,
    metrics: UdpMetrics,
}

impl UdpSocket {
    /// Wraps a socket bound by [`bind_group`]; must run inside the shard's
    /// executor (glommio registers it with the thread's reactor).
    pub(crate) fn adopt(
        sock: Socket,
        shard: usize,
        local: SocketAddr,
        recv_buffer: usize,
        send_buffer: usize,
        opts: &UdpOptions,
        batch: usize,
    ) -> Self {
        let fd = sock.into_raw_fd();
        // SAFETY: `fd` was just released by `into_raw_fd`; the glommio
        // socket takes sole ownership and closes it on drop. `self.fd` is
        // only a borrowed copy used while `inner` is alive.
        let inner = unsafe { glommio::net::UdpSocket::from_raw_fd(fd) };
        let metrics = UdpMetrics::new(shard, local);
        metrics.rcvbuf.set(recv_buffer as f64);
        metrics.sndbuf.set(send_buffer as f64);
        Self {
            inner,
            fd,
            local,
            recv_buffer,
            send_buffer,
            send_wait: opts.send_wait,
            maybe_more: Cell::new(true),
            rx_coalesce: opts.rx_coalesce,
            dense: Cell::new(false),
            last_wake: Cell::new(None),
            mmsg: RefCell::new(Mmsg::new()),
            outbox: RefCell::new(SendBatch::new(batch)),
            batch_size: batch,
            stats: Cell::new(UdpStats::default()),
            kernel_drops: Cell::new(0),
            metrics,
        }
    }

    /// The shared local address (same on every shard).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Effective `(SO_RCVBUF, SO_SNDBUF)` as reported by the kernel (Linux
    /// reports twice the requested size: it counts its own overhead).
    pub fn buffer_sizes(&self) -> (usize, usize) {
        (self.recv_buffer, self.send_buffer)
    }

    /// Cumulative counters of this socket.
    pub fn stats(&self) -> UdpStats {
        self.stats.get()
    }

    fn update(&self, f: impl FnOnce(&mut UdpStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    /// The application dropped `n` datagrams for lack of budget; counted so
    /// such drops are visible next to the kernel's.
    pub fn record_budget_drops(&self, n: u64) {
        self.update(|s| s.budget_drops = s.budget_drops.saturating_add(n));
        self.metrics.budget.increment(n);
    }

    /// Reads the kernel's drop counter for this socket (`SO_MEMINFO`) and
    /// exports it. One `getsockopt`; the runtime calls it once a second.
    pub fn refresh_kernel_drops(&self) -> io::Result<u64> {
        let mut info = [0u32; SK_MEMINFO_VARS];
        let mut len = size_of::<[u32; SK_MEMINFO_VARS]>() as libc::socklen_t;
        // SAFETY: valid fd; `info`/`len` are live and describe the buffer.
        let rc = unsafe {
            libc::getsockopt(
                self.fd,
                libc::SOL_SOCKET,
                SO_MEMINFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let drops = u64::from(info[SK_MEMINFO_DROPS]);
        self.kernel_drops.set(drops);
        self.metrics.rx_kernel_drops.absolute(drops);
        Ok(drops)
    }

    /// Waits until at least one datagram is available, then receives up to
    /// `batch.capacity()` with one `recvmmsg`. Returns how many (≥ 1).
    pub async fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.len = 0;
        if self.dense.get() && !self.maybe_more.get() {
            // Dense traffic and an empty queue: let a window's worth arrive,
            // then take it in one call (one wake-up for the lot).
            crate::timers::sleep(self.rx_coalesce).await;
            match self.recvmmsg_now(batch) {
                Ok(0) => {}
                Ok(n) => {
                    self.maybe_more.set(n == batch.capacity());
                    return Ok(n);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
            // Quiet again: the next datagram wakes us at once.
            self.dense.set(false);
        }
        loop {
            if !self.maybe_more.get() {
                let mut probe = [0u8; 1];
                self.inner
                    .peek_from(&mut probe)
                    .await
                    .map_err(io::Error::from)?;
                if !self.rx_coalesce.is_zero() {
                    let now = std::time::Instant::now();
                    let last = self.last_wake.replace(Some(now));
                    self.dense.set(
                        last.is_some_and(|t| now.saturating_duration_since(t) <= self.rx_coalesce),
                    );
                }
            }
            match self.recvmmsg_now(batch) {
                Ok(0) => self.maybe_more.set(false),
                Ok(n) => {
                    self.maybe_more.set(n == batch.capacity());
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.maybe_more.set(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Non-blocking receive of up to `batch.capacity()` datagrams; 0 when
    /// none is queued.
    pub fn try_recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.len = 0;
        match self.recvmmsg_now(batch) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn recvmmsg_now(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        let got = self
            .mmsg
            .borrow_mut()
            .recv(self.fd, batch, libc::MSG_DONTWAIT)?;
        let truncated = batch.truncated[..got].iter().filter(|t| **t).count() as u64;
        if got > 0 {
            self.update(|s| {
                s.rx_datagrams += got as u64;
                s.rx_batches += 1;
                s.rx_truncated += truncated;
            });
            self.metrics.rx.increment(got as u64);
            self.metrics.rx_batches.increment(1);
            if truncated > 0 {
                self.metrics.rx_truncated.increment(truncated);
            }
        }
        Ok(got)
    }

    /// One `sendmmsg` over `entries[start..]`: Ok(sent) or the error of the
    /// first datagram.
    fn sendmmsg_now(&self, batch: &SendBatch, start: usize) -> io::Result<usize> {
        self.mmsg
            .borrow_mut()
            .send(self.fd, batch, start, libc::MSG_DONTWAIT)
    }

    fn is_full_error(e: &io::Error) -> bool {
        e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS)
    }

    fn record(&self, r: &SendReport) {
        self.update(|s| {
            s.tx_datagrams += r.sent as u64;
            s.tx_dropped_full += r.dropped_full as u64;
            s.tx_failed += r.failed as u64;
        });
        self.metrics.tx.increment(r.sent as u64);
        if r.dropped_full > 0 {
            self.metrics.tx_full.increment(r.dropped_full as u64);
        }
        if r.failed > 0 {
            self.metrics.tx_failed.increment(r.failed as u64);
        }
    }

    /// Sends `batch` from entry `*i` on until it is all sent (true) or the
    /// socket buffer is full at entry `*i` (false), counting into `r`.
    fn send_ready(&self, batch: &SendBatch, i: &mut usize, r: &mut SendReport) -> bool {
        while *i < batch.len() {
            match self.sendmmsg_now(batch, *i) {
                Ok(n) => {
                    r.sent += n;
                    *i += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if Self::is_full_error(&e) => return false,
                Err(_) => {
                    r.failed += 1;
                    *i += 1;
                }
            }
        }
        true
    }

    /// Sends the batch without waiting: what does not fit in the socket
    /// buffer is dropped and counted. Clears the batch.
    pub fn try_send_batch(&self, batch: &mut SendBatch) -> SendReport {
        let mut r = SendReport::default();
        let mut i = 0;
        if !self.send_ready(batch, &mut i, &mut r) {
            r.dropped_full += batch.len() - i;
        }
        batch.clear();
        self.record(&r);
        r
    }

    /// Sends the batch; when the send buffer is full, waits up to the
    /// configured `send_wait` for room before dropping (and counting) the
    /// rest. Clears the batch.
    pub async fn send_batch(&self, batch: &mut SendBatch) -> SendReport {
        let mut r = SendReport::default();
        let mut i = 0;
        while !self.send_ready(batch, &mut i, &mut r) {
            // Wait for room by sending this one datagram through glommio
            // (io_uring parks until the buffer drains).
            let e = batch.entries[i];
            let payload = &batch.data[e.start..e.start + e.len];
            let sent = match storage_to_addr(&e.addr) {
                Some(to) => glommio::timer::timeout(self.send_wait, async {
                    self.inner.send_to(payload, to).await
                })
                .await
                .is_ok(),
                None => false,
            };
            if !sent {
                r.dropped_full += batch.len() - i;
                break;
            }
            r.sent += 1;
            i += 1;
        }
        batch.clear();
        self.record(&r);
        r
    }

    /// Queues one datagram in the socket's own batch; when that batch is
    /// full it is first sent without waiting (see [`Self::try_send_batch`]).
    /// Call [`Self::flush`] at the end of each unit of work.
    pub fn queue_send(&self, to: SocketAddr, payload: &[u8]) -> Result<(), QueueError> {
        let mut out = self.outbox.borrow_mut();
        if out.capacity == 0 {
            // A flush is in progress and holds the real batch: start another.
            *out = SendBatch::new(self.batch_size);
        }
        if out.is_full() {
            self.try_send_batch(&mut out);
        }
        out.push(to, payload)
    }

    /// Sends what [`Self::queue_send`] queued (waiting for room, bounded).
    pub async fn flush(&self) -> SendReport {
        // Move the batch out (leaving a non-allocating placeholder) so no
        // RefCell borrow is held across the await.
        let mut batch = std::mem::replace(&mut *self.outbox.borrow_mut(), SendBatch::placeholder());
        if batch.is_empty() {
            *self.outbox.borrow_mut() = batch;
            return SendReport::default();
        }
        let r = self.send_batch(&mut batch).await;
        let mut out = self.outbox.borrow_mut();
        // Put the (now empty) batch back unless another task queued into a
        // new one meanwhile; then that one stays and ours is dropped.
        if out.capacity == 0 || out.is_empty() {
            *out = batch;
        }
        r
    }

    /// Datagrams waiting in the socket's own batch.
    pub fn queued(&self) -> usize {
        self.outbox.borrow().len()
    }
}

/// Converts a kernel socket address to std; `None` for non-IP families.
pub(crate) fn storage_to_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: family says this storage holds a sockaddr_in, which
            // is smaller than and layout-compatible with sockaddr_storage.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Converts a std address into kernel form.
pub(crate) fn addr_to_storage(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut s: libc::sockaddr_storage = unsafe { zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_in fits in sockaddr_storage and is aligned
            // by it; we write only within it.
            let sin = unsafe {
                &mut *(&mut s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            };
            (s, size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_scope_id = a.scope_id();
            (s, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

/// Points one `mmsghdr` at one address and one buffer, with no control
/// data: the shape both `recvmmsg` and `sendmmsg` use.
#[inline]
fn point_header(
    h: &mut libc::mmsghdr,
    name: &mut libc::sockaddr_storage,
    name_len: libc::socklen_t,
    iov: &mut libc::iovec,
) {
    h.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
    h.msg_hdr.msg_namelen = name_len;
    h.msg_hdr.msg_iov = iov;
    h.msg_hdr.msg_iovlen = 1;
    h.msg_hdr.msg_control = std::ptr::null_mut();
    h.msg_hdr.msg_controllen = 0;
    h.msg_hdr.msg_flags = 0;
    h.msg_len = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_round_trip() {
        for a in [
            "127.0.0.1:6881".parse::<SocketAddr>().unwrap(),
            "[::1]:1".parse().unwrap(),
            "[fe80::1%2]:65535".parse().unwrap(),
        ] {
            let (s, _) = addr_to_storage(&a);
            assert_eq!(storage_to_addr(&s), Some(a));
        }
    }

    #[test]
    fn held_port_is_an_error_and_port_zero_is_shared() {
        let opts = UdpOptions::default();
        let g = bind_group("127.0.0.1:0".parse().unwrap(), 3, &opts).unwrap();
        assert_ne!(g.local.port(), 0);
        assert_eq!(g.sockets.len(), 3);
        for s in &g.sockets {
            assert_eq!(s.local_addr().unwrap().as_socket(), Some(g.local));
        }
        // Held by our own reuseport group: still refused.
        let err = bind_group(g.local, 2, &opts).unwrap_err();
        assert!(matches!(err, UdpBindError::InUse { .. }), "{err}");
        // Held by a plain std socket (no SO_REUSEPORT).
        let plain = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let err = bind_group(plain.local_addr().unwrap(), 1, &opts).unwrap_err();
        assert!(err.to_string().contains("already in use"), "{err}");
    }

    #[test]
    fn ipv6_only_lets_v4_and_v6_share_a_port_number() {
        let opts = UdpOptions::default();
        let Ok(v6) = bind_group("[::1]:0".parse().unwrap(), 2, &opts) else {
            return; // no IPv6 loopback on this host
        };
        let v4 = bind_group(
            SocketAddr::from((Ipv4Addr::LOCALHOST, v6.local.port())),
            2,
            &opts,
        );
        assert!(v4.is_ok(), "{:?}", v4.err());
    }

    #[test]
    fn send_batch_limits() {
        let mut b = SendBatch::new(2);
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(
            b.push(to, &vec![0; MAX_DATAGRAM + 1]),
            Err(QueueError::TooLarge(MAX_DATAGRAM + 1))
        );
        b.push(to, b"a").unwrap();
        b.push(to, b"b").unwrap();
        assert_eq!(b.push(to, b"c"), Err(QueueError::Full));
        b.clear();
        assert!(b.is_empty());
    }

    #[test]
    fn buffer_sizes_are_applied_and_reported() {
        let opts = UdpOptions {
            recv_buffer: Some(1 << 20),
            send_buffer: Some(256 << 10),
            ..UdpOptions::default()
        };
        let g = bind_group("127.0.0.1:0".parse().unwrap(), 1, &opts).unwrap();
        // Linux reports twice the size set. With CAP_NET_ADMIN the FORCE
        // option sets it exactly; otherwise it is capped at rmem_max/wmem_max.
        let cap =
            |f: &str| -> usize { std::fs::read_to_string(f).unwrap().trim().parse().unwrap() };
        let rcv_ok = [2 << 20, 2 * cap("/proc/sys/net/core/rmem_max").min(1 << 20)];
        let snd_ok = [
            2 * (256 << 10),
            2 * cap("/proc/sys/net/core/wmem_max").min(256 << 10),
        ];
        assert!(
            rcv_ok.contains(&g.recv_buffer),
            "{} not in {rcv_ok:?}",
            g.recv_buffer
        );
        assert!(
            snd_ok.contains(&g.send_buffer),
            "{} not in {snd_ok:?}",
            g.send_buffer
        );
    }
}
