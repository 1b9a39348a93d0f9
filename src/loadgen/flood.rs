//! `flood`: blasts valid KRPC queries at one DHT node and measures what comes
//! back.
//!
//! The generator is one thread. It owns N UDP sockets ("sources"), each
//! bound to its own loopback address (127.1.0.1, 127.1.0.2, …: every
//! 127.x.y.z is local on Linux) and connected to the target, so the node's
//! per-IP limits can be exercised (few sources) or avoided (many). It sends
//! with `sendmmsg` and drains answers with `epoll` + `recvmmsg`: per-datagram
//! syscalls would make the generator, not the node, the bottleneck.
//!
//! Every query carries a 4-byte transaction id: the low 32 bits of a
//! sequence number. A ring indexed by that number remembers each query's
//! send time, source and state, so every answer is matched to exactly one
//! query (on the socket that sent it) and its latency measured. Each sent
//! query ends in exactly one of: answered (a response or an error), or
//! unanswered (timed out, or still pending when the run ends), so
//! `responses + errors + unanswered == sent` always holds.
//!
//! Safety for the network: the target must be loopback unless the caller
//! sets [`FloodConfig::allow_non_loopback`] (an operator testing a server
//! they own). The run always stops by itself after
//! [`FloodConfig::duration`] (at most [`MAX_DURATION`]) plus a short drain.
//!
//! This file is about 1,150 lines: one open-loop generator whose parts (the
//! query mix, the pacing, the ring of pending queries, the epoll loop and the
//! latency histogram) share the same per-query slots and timing, and a report
//! that must describe exactly what that loop measured.

use std::fmt;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::id::Id;
use crate::krpc::message::{encode_query, Header};
use crate::krpc::{decode, Body, Method, Want};
use crate::rng::Rng;

/// The longest run allowed: a flood always ends by itself.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Most source sockets (each is a file descriptor).
pub const MAX_SOURCES: usize = 4096;
/// Most datagrams per `sendmmsg`/`recvmmsg`.
pub const MAX_BATCH: usize = 1024;
/// The first source address used against an IPv4 loopback target.
pub const DEFAULT_SOURCE_BASE: Ipv4Addr = Ipv4Addr::new(127, 1, 0, 1);
/// Transaction ids are this long.
pub const TID_LEN: usize = 4;

/// Why a flood could not run.
#[derive(Debug, thiserror::Error)]
pub enum FloodError {
    /// The target is not loopback and the caller did not say it owns it.
    #[error(
        "refusing to flood {0}: not a loopback address (127.0.0.0/8 or ::1); \
         pass --i-own-this-target only for a server you operate"
    )]
    NotLoopback(SocketAddr),
    /// A setting is out of range.
    #[error("invalid {key}: {message}")]
    Invalid {
        /// The setting.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> FloodError {
    let what = what.into();
    move |source| FloodError::Io { what, source }
}

fn invalid(key: &'static str, message: impl Into<String>) -> FloodError {
    FloodError::Invalid {
        key,
        message: message.into(),
    }
}

/// The kinds of query the flood sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    /// `ping`.
    Ping,
    /// `find_node` with a random target.
    FindNode,
    /// `get_peers` (infohash from [`FloodConfig::infohashes`]).
    GetPeers,
    /// `announce_peer` with `implied_port`, using a token from an earlier
    /// `get_peers` answer to the same source (a `get_peers` is sent instead
    /// until that source has one).
    AnnouncePeer,
    /// `sample_infohashes` (BEP 51) with a random target.
    SampleInfohashes,
}

impl QueryKind {
    /// All kinds, in [`Mix`] order.
    pub const ALL: [QueryKind; 5] = [
        QueryKind::Ping,
        QueryKind::FindNode,
        QueryKind::GetPeers,
        QueryKind::AnnouncePeer,
        QueryKind::SampleInfohashes,
    ];

    /// The method name.
    pub fn name(self) -> &'static str {
        match self {
            QueryKind::Ping => "ping",
            QueryKind::FindNode => "find_node",
            QueryKind::GetPeers => "get_peers",
            QueryKind::AnnouncePeer => "announce_peer",
            QueryKind::SampleInfohashes => "sample_infohashes",
        }
    }

    fn index(self) -> usize {
        match self {
            QueryKind::Ping => 0,
            QueryKind::FindNode => 1,
            QueryKind::GetPeers => 2,
            QueryKind::AnnouncePeer => 3,
            QueryKind::SampleInfohashes => 4,
        }
    }
}

/// Relative weights of the query kinds, parsed from
/// `ping=1,find_node=1,get_peers=1,announce_peer=0,sample_infohashes=0`.
/// Kinds not named get weight 0; at least one weight must be positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    /// Weight per kind, in [`QueryKind::ALL`] order.
    pub weights: [u32; 5],
}

impl Default for Mix {
    /// ping, find_node and get_peers in equal parts.
    fn default() -> Self {
        Mix {
            weights: [1, 1, 1, 0, 0],
        }
    }
}

impl Mix {
    fn total(&self) -> u64 {
        self.weights.iter().map(|w| u64::from(*w)).sum()
    }

    fn pick(&self, rng: &mut Rng) -> QueryKind {
        let mut r = rng.below(self.total());
        for (k, w) in QueryKind::ALL.iter().zip(self.weights) {
            let w = u64::from(w);
            if r < w {
                return *k;
            }
            r -= w;
        }
        QueryKind::Ping
    }
}

impl FromStr for Mix {
    type Err = FloodError;
    fn from_str(s: &str) -> Result<Mix, FloodError> {
        let mut weights = [0u32; 5];
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| invalid("mix", format!("{part:?} is not NAME=WEIGHT")))?;
            let kind = QueryKind::ALL
                .iter()
                .find(|q| q.name() == k.trim())
                .ok_or_else(|| {
                    invalid(
                        "mix",
                        format!(
                            "unknown query {k:?} (ping, find_node, get_peers, announce_peer, \
                             sample_infohashes)"
                        ),
                    )
                })?;
            weights[kind.index()] = v
                .trim()
                .parse()
                .map_err(|_| invalid("mix", format!("{v:?} is not a weight")))?;
        }
        let mix = Mix { weights };
        if mix.total() == 0 {
            return Err(invalid("mix", "at least one weight must be positive"));
        }
        Ok(mix)
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, w)) in QueryKind::ALL.iter().zip(self.weights).enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}={w}", k.name())?;
        }
        Ok(())
    }
}

/// What to flood, how hard and for how long.
#[derive(Debug, Clone)]
pub struct FloodConfig {
    /// The node under load.
    pub target: SocketAddr,
    /// Source sockets, 1..=[`MAX_SOURCES`].
    pub sources: usize,
    /// First source address; source *i* binds `base + i` for an IPv4 base
    /// that is not unspecified (distinct addresses), else `base` itself.
    /// `None`: [`DEFAULT_SOURCE_BASE`] for an IPv4 loopback target, `::1`
    /// for `[::1]`, the unspecified address otherwise.
    pub source_base: Option<IpAddr>,
    /// Queries per second over all sources; 0 sends as fast as possible.
    pub rate: u64,
    /// Sending time, at most [`MAX_DURATION`]. A drain of at most
    /// `timeout` (capped at 1 s) follows.
    pub duration: Duration,
    /// Query mix.
    pub mix: Mix,
    /// Queries in flight at most (0: no limit). With `rate = 0` this makes
    /// a closed loop that measures capacity without overrunning the target.
    pub window: usize,
    /// A query unanswered for this long counts as unanswered.
    pub timeout: Duration,
    /// Distinct infohashes for `get_peers`/`announce_peer` (0: a fresh
    /// random one per query). Real traffic repeats infohashes; a crawler
    /// deduplicates them, so this changes how much work a node does.
    pub infohashes: u32,
    /// Send `ro=1` (BEP 43) so the node does not add the sources to its
    /// table.
    pub read_only: bool,
    /// Datagrams per `sendmmsg`/`recvmmsg`, 1..=[`MAX_BATCH`].
    pub batch: usize,
    /// SO_RCVBUF/SO_SNDBUF per source socket (the kernel may cap it).
    pub socket_buffer: usize,
    /// RNG seed (node ids, targets, the mix).
    pub seed: u64,
    /// Allow a target outside loopback (the operator owns it).
    pub allow_non_loopback: bool,
}

impl FloodConfig {
    /// Sensible defaults for `target`: 64 sources, 10 000 queries/s for
    /// 1 s, the default mix, a 1 s timeout.
    pub fn new(target: SocketAddr) -> FloodConfig {
        FloodConfig {
            target,
            sources: 64,
            source_base: None,
            rate: 10_000,
            duration: Duration::from_secs(1),
            mix: Mix::default(),
            window: 0,
            timeout: Duration::from_secs(1),
            infohashes: 0,
            read_only: false,
            batch: 64,
            socket_buffer: 4 << 20,
            seed: 1,
            allow_non_loopback: false,
        }
    }

    /// Checks every setting, the loopback rule first.
    pub fn validate(&self) -> Result<(), FloodError> {
        if !is_loopback(self.target.ip()) && !self.allow_non_loopback {
            return Err(FloodError::NotLoopback(self.target));
        }
        if self.target.port() == 0 || self.target.ip().is_unspecified() {
            return Err(invalid(
                "target",
                format!("{} is not a destination", self.target),
            ));
        }
        if !(1..=MAX_SOURCES).contains(&self.sources) {
            return Err(invalid(
                "sources",
                format!("{} is outside 1..={MAX_SOURCES}", self.sources),
            ));
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return Err(invalid(
                "duration",
                format!(
                    "{:?} is outside (0, {} s]",
                    self.duration,
                    MAX_DURATION.as_secs()
                ),
            ));
        }
        if !(1..=MAX_BATCH).contains(&self.batch) {
            return Err(invalid(
                "batch",
                format!("{} is outside 1..={MAX_BATCH}", self.batch),
            ));
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(60) {
            return Err(invalid("timeout", "must be in (0, 60 s]"));
        }
        if self.mix.total() == 0 {
            return Err(invalid("mix", "at least one weight must be positive"));
        }
        let ips = self.source_ips()?;
        if is_loopback(self.target.ip()) {
            if let Some(bad) = ips.iter().find(|ip| !is_loopback(**ip)) {
                return Err(invalid(
                    "source-base",
                    format!("{bad} is not loopback but the target is"),
                ));
            }
        }
        Ok(())
    }

    /// The address each source binds.
    fn source_ips(&self) -> Result<Vec<IpAddr>, FloodError> {
        let base = self.source_base.unwrap_or(match self.target {
            SocketAddr::V4(t) if t.ip().is_loopback() => IpAddr::V4(DEFAULT_SOURCE_BASE),
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            SocketAddr::V6(t) if t.ip().is_loopback() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        });
        if base.is_ipv4() != self.target.is_ipv4() {
            return Err(invalid(
                "source-base",
                "must be of the same family as the target",
            ));
        }
        match base {
            IpAddr::V4(b) if !b.is_unspecified() => {
                let first = u32::from(b);
                let last = first
                    .checked_add(self.sources as u32 - 1)
                    .ok_or_else(|| invalid("source-base", "address range overflows"))?;
                if b.is_loopback() && !Ipv4Addr::from(last).is_loopback() {
                    return Err(invalid(
                        "source-base",
                        format!("{b} + {} sources leaves 127.0.0.0/8", self.sources),
                    ));
                }
                Ok((first..=last)
                    .map(|a| IpAddr::V4(Ipv4Addr::from(a)))
                    .collect())
            }
            other => Ok(vec![other; self.sources]),
        }
    }
}

/// Loopback, including IPv4-mapped loopback.
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Latency percentiles of answered queries, microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Largest.
    pub max_us: f64,
}

/// Queries sent per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindCounts {
    /// `ping`.
    pub ping: u64,
    /// `find_node`.
    pub find_node: u64,
    /// `get_peers`.
    pub get_peers: u64,
    /// `announce_peer`.
    pub announce_peer: u64,
    /// `sample_infohashes`.
    pub sample_infohashes: u64,
}

impl KindCounts {
    fn add(&mut self, k: QueryKind) {
        let c = match k {
            QueryKind::Ping => &mut self.ping,
            QueryKind::FindNode => &mut self.find_node,
            QueryKind::GetPeers => &mut self.get_peers,
            QueryKind::AnnouncePeer => &mut self.announce_peer,
            QueryKind::SampleInfohashes => &mut self.sample_infohashes,
        };
        *c += 1;
    }
}

/// What a flood measured (`dht-loadgen flood --json` prints it; the
/// benches read it back).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FloodReport {
    /// The target.
    pub target: String,
    /// Source sockets.
    pub sources: usize,
    /// Requested rate (0: as fast as possible).
    pub rate: u64,
    /// The mix, as `name=weight,…`.
    pub mix: String,
    /// Seconds spent sending.
    pub send_seconds: f64,
    /// Seconds in all, with the drain.
    pub total_seconds: f64,
    /// Queries sent.
    pub sent: u64,
    /// Queries sent per kind.
    pub sent_by_kind: KindCounts,
    /// Queries answered with a response (`y = r`).
    pub responses: u64,
    /// Queries answered with an error (`y = e`).
    pub errors: u64,
    /// `responses + errors`.
    pub answered: u64,
    /// Queries that got no answer within the timeout or before the end.
    pub unanswered: u64,
    /// Answers that came after their query was counted unanswered.
    pub late: u64,
    /// Datagrams that did not decode as KRPC.
    pub undecodable: u64,
    /// Answers whose tid matched no pending query of that source.
    pub unmatched: u64,
    /// Queries the target sent to the sources (ignored).
    pub queries_received: u64,
    /// Datagrams the kernel refused (send buffer full); not in `sent`.
    pub send_refused: u64,
    /// `sent / send_seconds`.
    pub sent_per_sec: f64,
    /// Answers received while sending, per second of sending.
    pub answers_per_sec: f64,
    /// Latency of answered queries.
    pub latency: Latency,
    /// CPU time of the generator thread (user + system), seconds.
    pub generator_cpu_seconds: f64,
    /// Generator CPU per datagram handled (sent or received), nanoseconds.
    pub generator_ns_per_datagram: f64,
}

impl fmt::Display for FloodReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = |n: u64| {
            if self.sent == 0 {
                0.0
            } else {
                100.0 * n as f64 / self.sent as f64
            }
        };
        writeln!(
            f,
            "flood {} from {} sources, rate {}, mix {}",
            self.target,
            self.sources,
            if self.rate == 0 {
                "max".to_string()
            } else {
                format!("{}/s", self.rate)
            },
            self.mix
        )?;
        writeln!(
            f,
            "sent        {:>12}  ({:.0}/s over {:.2} s; {} refused by the kernel)",
            self.sent, self.sent_per_sec, self.send_seconds, self.send_refused
        )?;
        let k = &self.sent_by_kind;
        writeln!(
            f,
            "  by kind   ping {} find_node {} get_peers {} announce_peer {} sample_infohashes {}",
            k.ping, k.find_node, k.get_peers, k.announce_peer, k.sample_infohashes
        )?;
        writeln!(
            f,
            "answered    {:>12}  ({:.2}%: {} responses, {} errors)",
            self.answered,
            pct(self.answered),
            self.responses,
            self.errors
        )?;
        writeln!(
            f,
            "unanswered  {:>12}  ({:.2}%; {} late answers)",
            self.unanswered,
            pct(self.unanswered),
            self.late
        )?;
        writeln!(f, "answers/s   {:>12.0}", self.answers_per_sec)?;
        writeln!(
            f,
            "latency     p50 {:.0} us, p90 {:.0} us, p99 {:.0} us, max {:.0} us",
            self.latency.p50_us, self.latency.p90_us, self.latency.p99_us, self.latency.max_us
        )?;
        writeln!(
            f,
            "anomalies   {} undecodable, {} unmatched tids, {} queries from the target",
            self.undecodable, self.unmatched, self.queries_received
        )?;
        write!(
            f,
            "generator   {:.2} s CPU, {:.0} ns per datagram",
            self.generator_cpu_seconds, self.generator_ns_per_datagram
        )
    }
}

// ---------------------------------------------------------------------------
// Latency histogram: log-linear, 32 sub-buckets per power of two (about 3%
// resolution), fixed memory whatever the run length.

const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
const HIST_BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB as usize;

#[derive(Debug)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            counts: vec![0; HIST_BUCKETS],
            total: 0,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < SUB {
            return v as usize;
        }
        let msb = 63 - v.leading_zeros();
        let shift = msb - SUB_BITS;
        let sub = (v >> shift) & (SUB - 1);
        ((shift as u64 + 1) * SUB + sub) as usize
    }

    /// The largest value that maps to bucket `i`.
    fn upper(i: usize) -> u64 {
        let i = i as u64;
        if i < SUB {
            return i;
        }
        let shift = i / SUB - 1;
        let sub = i % SUB;
        let top = (u128::from(SUB + sub + 1) << shift) - 1;
        u64::try_from(top).unwrap_or(u64::MAX)
    }

    fn record(&mut self, v: u64) {
        if let Some(c) = self.counts.get_mut(Self::index(v)) {
            *c += 1;
        }
        self.total += 1;
        self.max = self.max.max(v);
    }

    fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::upper(i).min(self.max);
            }
        }
        self.max
    }
}

// ---------------------------------------------------------------------------
// Batched socket IO.

/// One flood thread's batched IO, on the runtime's `recvmmsg`/`sendmmsg`
/// layer ([`shards::Mmsg`]): the same calls the shards make.
struct Io {
    mmsg: shards::Mmsg,
    rx: shards::RecvBatch,
    tx: shards::SendBatch,
    /// One query being encoded.
    enc: Vec<u8>,
}

impl Io {
    fn new(batch: usize) -> Io {
        Io {
            mmsg: shards::Mmsg::new(),
            rx: shards::RecvBatch::new(batch),
            tx: shards::SendBatch::new(batch),
            enc: Vec::with_capacity(512),
        }
    }
}

/// Errors that mean "try later" rather than "the socket is broken".
/// ECONNREFUSED comes back on a connected socket after an ICMP port
/// unreachable (the target is not up yet, or went away).
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAGAIN) | Some(libc::ENOBUFS) | Some(libc::ECONNREFUSED) | Some(libc::EINTR)
    )
}

fn set_buffers(fd: RawFd, bytes: usize) {
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: a valid fd and a c_int option of the right size. Failure
        // only means a smaller buffer.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by the kernel and is owned here.
        Ok(Epoll {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: valid fds and a live event struct.
        let r = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> io::Result<usize> {
        // SAFETY: `events` is a live, writable array of its length.
        let r = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                timeout_ms,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                return Ok(0);
            }
            return Err(e);
        }
        Ok(r as usize)
    }
}

/// CPU time (user + system) of the calling thread.
pub fn thread_cpu_time() -> Duration {
    // SAFETY: plain data, filled by the kernel.
    let mut ru: libc::rusage = unsafe { zeroed() };
    // SAFETY: a live rusage struct.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

// ---------------------------------------------------------------------------
// The in-flight ring.

const PENDING: u8 = 1;
const ANSWERED: u8 = 2;
const EXPIRED: u8 = 3;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    seq: u64,
    sent_ns: u64,
    src: u32,
    kind: u8,
    state: u8,
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn id_from(seed: u64) -> Id {
    let mut b = [0u8; 20];
    for (i, chunk) in b.chunks_mut(8).enumerate() {
        let v = splitmix(seed ^ (i as u64).wrapping_mul(0xa076_1d64_78bd_642f)).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    Id(b)
}

struct Source {
    sock: UdpSocket,
    id: Id,
    /// The last get_peers answer's (seq, token), for announce_peer.
    token: Option<(u64, Vec<u8>)>,
}

struct Flood<'c> {
    cfg: &'c FloodConfig,
    sources: Vec<Source>,
    ring: Vec<Slot>,
    mask: u64,
    next_seq: u64,
    oldest: u64,
    pending: u64,
    rng: Rng,
    start: Instant,
    hist: Histogram,
    r: FloodReport,
    answers_while_sending: u64,
    sending: bool,
}

impl Flood<'_> {
    fn infohash(&self, seq: u64) -> Id {
        let k = if self.cfg.infohashes == 0 {
            seq
        } else {
            splitmix(seq ^ 0x5555) % u64::from(self.cfg.infohashes)
        };
        id_from(self.cfg.seed ^ k.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x1f1f)
    }

    fn elapsed_ns(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_nanos() as u64
    }

    /// Encodes up to `n` queries from source `src` and sends them.
    fn send_batch(&mut self, src: usize, n: usize, io: &mut Io) -> Result<(), FloodError> {
        io.tx.clear();
        let now_ns = self.elapsed_ns(Instant::now());
        let id = self.sources[src].id;
        let mut kinds = [QueryKind::Ping; MAX_BATCH];
        for (i, sent_kind) in kinds.iter_mut().enumerate().take(n) {
            let seq = self.next_seq + i as u64;
            let tid = (seq as u32).to_be_bytes();
            let mut kind = self.cfg.mix.pick(&mut self.rng);
            let mut announce = None;
            if kind == QueryKind::AnnouncePeer {
                match &self.sources[src].token {
                    Some((gp_seq, token)) => announce = Some((*gp_seq, token.clone())),
                    None => kind = QueryKind::GetPeers,
                }
            }
            let target = Id::random(&mut self.rng);
            let method = match kind {
                QueryKind::Ping => Method::Ping,
                QueryKind::FindNode => Method::FindNode { target },
                QueryKind::SampleInfohashes => Method::SampleInfohashes { target },
                QueryKind::GetPeers => Method::GetPeers {
                    infohash: self.infohash(seq),
                    noseed: false,
                    scrape: false,
                },
                QueryKind::AnnouncePeer => Method::AnnouncePeer {
                    infohash: self.infohash(announce.as_ref().map_or(seq, |a| a.0)),
                    port: 0,
                    implied_port: true,
                    token: announce.as_ref().map_or(&[][..], |a| &a.1[..]),
                    seed: Some(false),
                },
            };
            let buf = &mut io.enc;
            buf.clear();
            encode_query(
                buf,
                &Header {
                    tid: &tid,
                    version: None,
                },
                &id,
                &method,
                Want::default(),
                self.cfg.read_only,
            );
            // Sources are connected to the target; the address repeats it.
            if io.tx.push(self.cfg.target, buf).is_err() {
                break;
            }
            *sent_kind = kind;
        }
        let fd = self.sources[src].sock.as_raw_fd();
        let took = match io.mmsg.send_all(fd, &io.tx, libc::MSG_DONTWAIT) {
            Ok(k) => k,
            Err(e) if is_transient(&e) => 0,
            Err(e) => return Err(io_err(format!("sendmmsg from source {src}"))(e)),
        };
        self.r.send_refused += (n - took) as u64;
        for (i, kind) in kinds.iter().enumerate().take(took) {
            let seq = self.next_seq + i as u64;
            let slot = &mut self.ring[(seq & self.mask) as usize];
            if slot.state == PENDING {
                // Overwritten before it was answered or expired: the ring
                // is sized so this is rare; count it now.
                self.r.unanswered += 1;
                self.pending -= 1;
            }
            *slot = Slot {
                seq,
                sent_ns: now_ns,
                src: src as u32,
                kind: kind.index() as u8,
                state: PENDING,
            };
            self.r.sent_by_kind.add(*kind);
        }
        self.r.sent += took as u64;
        self.pending += took as u64;
        self.next_seq += took as u64;
        Ok(())
    }

    /// Marks queries older than the timeout unanswered.
    fn expire(&mut self, now: Instant) {
        let now_ns = self.elapsed_ns(now);
        let timeout = self.cfg.timeout.as_nanos() as u64;
        while self.oldest < self.next_seq {
            let slot = &mut self.ring[(self.oldest & self.mask) as usize];
            if slot.seq == self.oldest && slot.state == PENDING {
                if now_ns.saturating_sub(slot.sent_ns) < timeout {
                    break;
                }
                slot.state = EXPIRED;
                self.r.unanswered += 1;
                self.pending -= 1;
            }
            self.oldest += 1;
        }
    }

    /// Accounts one received datagram on source `src`.
    fn on_datagram(&mut self, src: usize, data: &[u8], truncated: bool, now_ns: u64) {
        if truncated {
            self.r.undecodable += 1;
            return;
        }
        // A response without a valid 20-byte id is malformed too: it
        // counts as undecodable and its query stays pending.
        let Ok(msg) = decode(data) else {
            self.r.undecodable += 1;
            return;
        };
        let is_error = match msg.body {
            Body::Query(_) => {
                self.r.queries_received += 1;
                return;
            }
            Body::Response(_) => false,
            Body::Error(_) => true,
        };
        let Ok(tid) = <[u8; TID_LEN]>::try_from(msg.tid) else {
            self.r.unmatched += 1;
            return;
        };
        let t = u32::from_be_bytes(tid);
        let idx = (u64::from(t) & self.mask) as usize;
        let slot = self.ring[idx];
        if slot.seq as u32 != t || slot.src as usize != src {
            self.r.unmatched += 1;
            return;
        }
        match slot.state {
            PENDING => {}
            EXPIRED => {
                self.r.late += 1;
                return;
            }
            _ => {
                // A second answer to the same query.
                self.r.unmatched += 1;
                return;
            }
        }
        if let Some(s) = self.ring.get_mut(idx) {
            s.state = ANSWERED;
        }
        self.pending -= 1;
        if is_error {
            self.r.errors += 1;
        } else {
            self.r.responses += 1;
            if slot.kind == QueryKind::GetPeers.index() as u8 {
                if let Body::Response(resp) = msg.body {
                    if let Some(token) = resp.token {
                        let s = &mut self.sources[src];
                        match &mut s.token {
                            Some((q, t)) => {
                                *q = slot.seq;
                                t.clear();
                                t.extend_from_slice(token);
                            }
                            None => s.token = Some((slot.seq, token.to_vec())),
                        }
                    }
                }
            }
        }
        if self.sending {
            self.answers_while_sending += 1;
        }
        self.hist.record(now_ns.saturating_sub(slot.sent_ns));
    }

    /// Drains source `src`'s socket.
    fn drain(&mut self, src: usize, io: &mut Io) -> Result<u64, FloodError> {
        let fd = self.sources[src].sock.as_raw_fd();
        let mut got = 0u64;
        loop {
            let n = match io.mmsg.recv(fd, &mut io.rx, libc::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(e) if is_transient(&e) => break,
                Err(e) => return Err(io_err(format!("recvmmsg on source {src}"))(e)),
            };
            let now_ns = self.elapsed_ns(Instant::now());
            for d in io.rx.iter() {
                self.on_datagram(src, d.data, d.truncated, now_ns);
            }
            got += n as u64;
            if n < io.rx.capacity() {
                break;
            }
        }
        Ok(got)
    }
}

/// Binds, connects and tunes the source sockets.
fn open_sources(cfg: &FloodConfig) -> Result<Vec<Source>, FloodError> {
    let ips = cfg.source_ips()?;
    let mut rng = Rng::seed_from_u64(cfg.seed ^ 0x0123_4567);
    let mut out = Vec::with_capacity(ips.len());
    for (i, ip) in ips.into_iter().enumerate() {
        let sock = UdpSocket::bind(SocketAddr::new(ip, 0))
            .map_err(io_err(format!("binding source {i} on {ip}")))?;
        sock.connect(cfg.target)
            .map_err(io_err(format!("connecting source {i} to {}", cfg.target)))?;
        sock.set_nonblocking(true)
            .map_err(io_err("setting non-blocking"))?;
        set_buffers(sock.as_raw_fd(), cfg.socket_buffer);
        let mut id = Id::random(&mut rng);
        if id == Id::ZERO {
            id.0[0] = 1;
        }
        out.push(Source {
            sock,
            id,
            token: None,
        });
    }
    Ok(out)
}

/// Ring size: a power of two that holds every query that can be pending.
fn ring_size(cfg: &FloodConfig) -> usize {
    let by_rate = if cfg.rate == 0 {
        1 << 21
    } else {
        (cfg.rate as u128 * cfg.timeout.as_millis() / 1000 * 2) as usize
    };
    let need = if cfg.window > 0 {
        cfg.window.saturating_mul(2)
    } else {
        by_rate
    };
    need.clamp(1 << 12, 1 << 22).next_power_of_two()
}

/// Runs a flood on the calling thread and reports what came back. Blocks
/// for `cfg.duration` plus a drain of at most `min(timeout, 1 s)`.
pub fn run(cfg: &FloodConfig) -> Result<FloodReport, FloodError> {
    cfg.validate()?;
    let sources = open_sources(cfg)?;
    let epoll = Epoll::new().map_err(io_err("epoll_create1"))?;
    for (i, s) in sources.iter().enumerate() {
        epoll
            .add(s.sock.as_raw_fd(), i as u64)
            .map_err(io_err("epoll_ctl"))?;
    }
    let size = ring_size(cfg);
    let cpu0 = thread_cpu_time();
    let start = Instant::now();
    let mut f = Flood {
        cfg,
        sources,
        ring: vec![Slot::default(); size],
        mask: size as u64 - 1,
        next_seq: 0,
        oldest: 0,
        pending: 0,
        rng: Rng::seed_from_u64(cfg.seed),
        start,
        hist: Histogram::new(),
        r: FloodReport {
            target: cfg.target.to_string(),
            sources: cfg.sources,
            rate: cfg.rate,
            mix: cfg.mix.to_string(),
            ..FloodReport::default()
        },
        answers_while_sending: 0,
        sending: true,
    };
    // No slot is pending at start: mark the ring's zero seqs answered so
    // seq 0 is never mistaken for an old entry.
    for s in &mut f.ring {
        s.state = ANSWERED;
        s.seq = u64::MAX;
    }
    let mut io = Io::new(cfg.batch);
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; cfg.sources.min(1024)];
    let end = start + cfg.duration;
    let drain_for = cfg.timeout.min(Duration::from_secs(1));
    let mut send_end = None;
    let mut scheduled = 0u64;
    let mut cur = 0usize;
    let mut received = 0u64;
    loop {
        let now = Instant::now();
        if f.sending && now >= end {
            f.sending = false;
            send_end = Some(now);
        }
        if !f.sending {
            let ended = send_end.unwrap_or(now);
            if f.pending == 0 || now.duration_since(ended) >= drain_for {
                break;
            }
        }
        f.expire(now);
        let mut budget = 0u64;
        if f.sending {
            budget = if cfg.rate == 0 {
                cfg.batch as u64
            } else {
                let due = (u128::from(cfg.rate) * now.duration_since(start).as_nanos()
                    / 1_000_000_000) as u64;
                due.saturating_sub(scheduled).min(4 * MAX_BATCH as u64)
            };
            if cfg.window > 0 {
                budget = budget.min((cfg.window as u64).saturating_sub(f.pending));
            }
        }
        let mut left = budget;
        while left > 0 {
            let n = left.min(cfg.batch as u64) as usize;
            f.send_batch(cur, n, &mut io)?;
            scheduled += n as u64;
            left -= n as u64;
            cur = (cur + 1) % cfg.sources;
        }
        // Poll without waiting while there is more to send; otherwise wait
        // a little for answers (or for the next sending tick).
        let more_now = f.sending
            && (cfg.window == 0 || f.pending < cfg.window as u64)
            && (cfg.rate == 0 || budget > 0);
        let timeout_ms = if more_now { 0 } else { 1 };
        let ready = epoll
            .wait(&mut events, timeout_ms)
            .map_err(io_err("epoll_wait"))?;
        for ev in events.iter().take(ready) {
            let src = ev.u64 as usize;
            received += f.drain(src, &mut io)?;
        }
    }
    let finished = Instant::now();
    // Whatever is still pending was never answered.
    f.r.unanswered += f.pending;
    f.pending = 0;
    let send_seconds = send_end
        .unwrap_or(finished)
        .duration_since(start)
        .as_secs_f64();
    let cpu = thread_cpu_time().saturating_sub(cpu0);
    let mut r = f.r;
    r.send_seconds = send_seconds;
    r.total_seconds = finished.duration_since(start).as_secs_f64();
    r.answered = r.responses + r.errors;
    r.sent_per_sec = r.sent as f64 / send_seconds.max(1e-9);
    r.answers_per_sec = f.answers_while_sending as f64 / send_seconds.max(1e-9);
    let us = |ns: u64| ns as f64 / 1000.0;
    r.latency = Latency {
        p50_us: us(f.hist.quantile(0.50)),
        p90_us: us(f.hist.quantile(0.90)),
        p99_us: us(f.hist.quantile(0.99)),
        max_us: us(f.hist.max),
    };
    r.generator_cpu_seconds = cpu.as_secs_f64();
    r.generator_ns_per_datagram = cpu.as_nanos() as f64 / (r.sent + received).max(1) as f64;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parses_and_prints() {
        let m: Mix = "ping=2, get_peers=1".parse().unwrap();
        assert_eq!(m.weights, [2, 0, 1, 0, 0]);
        assert_eq!(
            m.to_string(),
            "ping=2,find_node=0,get_peers=1,announce_peer=0,sample_infohashes=0"
        );
        assert!("ping=0".parse::<Mix>().is_err());
        assert!("pong=1".parse::<Mix>().is_err());
        assert!("ping".parse::<Mix>().is_err());
        assert!("ping=x".parse::<Mix>().is_err());
        let mut rng = Rng::seed_from_u64(7);
        let mut seen = [0u32; 5];
        for _ in 0..3000 {
            seen[m.pick(&mut rng).index()] += 1;
        }
        assert_eq!(seen[1] + seen[3] + seen[4], 0);
        assert!(seen[0] > seen[2] * 3 / 2, "{seen:?}");
    }

    #[test]
    fn refuses_non_loopback_targets() {
        for t in [
            "192.0.2.1:6881",
            "0.0.0.0:6881",
            "[2001:db8::1]:6881",
            "[::ffff:198.51.100.1]:1",
        ] {
            let cfg = FloodConfig::new(t.parse().unwrap());
            assert!(
                matches!(cfg.validate(), Err(FloodError::NotLoopback(_))),
                "{t}"
            );
        }
        for t in ["127.0.0.1:6881", "127.9.9.9:1", "[::1]:6881"] {
            let cfg = FloodConfig::new(t.parse().unwrap());
            cfg.validate().unwrap();
        }
        let mut cfg = FloodConfig::new("192.0.2.1:6881".parse().unwrap());
        cfg.allow_non_loopback = true;
        cfg.validate().unwrap();
        // A loopback target with a non-loopback source range is refused.
        let mut cfg = FloodConfig::new("127.0.0.1:6881".parse().unwrap());
        cfg.source_base = Some("198.51.100.1".parse().unwrap());
        assert!(cfg.validate().is_err());
        cfg.source_base = Some("127.255.255.250".parse().unwrap());
        cfg.sources = 10;
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn bounded_settings() {
        let mut cfg = FloodConfig::new("127.0.0.1:1".parse().unwrap());
        cfg.duration = Duration::from_secs(3601);
        assert!(cfg.validate().is_err());
        cfg.duration = Duration::ZERO;
        assert!(cfg.validate().is_err());
        cfg.duration = Duration::from_secs(1);
        cfg.sources = 0;
        assert!(cfg.validate().is_err());
        cfg.sources = MAX_SOURCES + 1;
        assert!(cfg.validate().is_err());
        cfg.sources = 3;
        assert_eq!(
            cfg.source_ips().unwrap(),
            vec![
                "127.1.0.1".parse::<IpAddr>().unwrap(),
                "127.1.0.2".parse().unwrap(),
                "127.1.0.3".parse().unwrap()
            ]
        );
    }

    #[test]
    fn histogram_quantiles_are_close() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        for (q, want) in [(0.5, 50_000.0), (0.9, 90_000.0), (0.99, 99_000.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.04, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.quantile(1.0), 100_000);
        for v in [0u64, 1, 31, 32, 33, 1000, 1 << 40, u64::MAX] {
            let i = Histogram::index(v);
            assert!(i < HIST_BUCKETS);
            assert!(Histogram::upper(i) >= v, "{v}");
        }
    }

    /// Against a socket that answers nothing, every query ends unanswered.
    #[test]
    fn silent_target_counts_everything_unanswered() {
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut cfg = FloodConfig::new(sink.local_addr().unwrap());
        cfg.sources = 4;
        cfg.rate = 2000;
        cfg.duration = Duration::from_millis(200);
        cfg.timeout = Duration::from_millis(50);
        let r = run(&cfg).unwrap();
        assert!(r.sent > 100, "{r}");
        assert_eq!(r.answered, 0);
        assert_eq!(r.unanswered, r.sent);
    }
}
