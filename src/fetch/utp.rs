//! uTP connections for the fetcher, multiplexed on one UDP socket: the
//! glue between [`crate::wire::utp`] (the sans-IO protocol) and a socket
//! the caller reads.
//!
//! The shard's UDP socket already carries KRPC, and its receive loop reads
//! every datagram; [`UtpMux::handle_datagram`] takes the ones that look like
//! uTP (first byte `0x01`..`0x41`, where KRPC's bencoded dicts start with
//! `d`) and hands each to the connection named by the peer's address and
//! the connection id, waking the task that drives it. Datagrams for no
//! connection are counted and dropped: the fetcher only connects out, so an
//! unknown id is a late packet of a connection already done, or noise.
//!
//! Each connection is driven by the fetch attempt that opened it
//! ([`attempt_utp`]): the attempt moves bytes between the connection and
//! [`MetadataFetch`], sends what the connection wants sent, and sleeps until
//! a datagram arrives for it or a timer of either machine is due. Nothing
//! here owns a timer task or a buffer per connection beyond the two
//! machines themselves.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use shards::tcp::{ConnPermit, TcpConnector, TcpOptions};
use shards::timers::with_deadline;

use super::attempt::AttemptError;
use super::stats::Transport;
use super::FetchStats;
use crate::id::Id;
use crate::rng::Rng;
use crate::wire::utp::{demux_id, looks_like_utp, Packet, UtpConfig, UtpConnection, UtpError};
use crate::wire::{FetchConfig, MetadataFetch, Outcome, Verified};

/// Where a multiplexer's datagrams go out.
#[derive(Debug, Clone)]
pub enum UtpSocket {
    /// A shard's socket, shared with KRPC (queued, then flushed).
    Shard(Rc<shards::UdpSocket>),
    /// A plain glommio socket (tests, tools).
    Plain(Rc<glommio::net::UdpSocket>),
}

impl UtpSocket {
    async fn send(&self, to: SocketAddr, bytes: &[u8]) -> io::Result<()> {
        match self {
            UtpSocket::Shard(s) => {
                s.queue_send(to, bytes).map_err(io::Error::other)?;
                s.flush().await;
                Ok(())
            }
            UtpSocket::Plain(s) => s
                .send_to(bytes, to)
                .await
                .map(|_| ())
                .map_err(io::Error::from),
        }
    }
}

/// One connection's slot: the machine and who to wake.
#[derive(Debug)]
struct Slot {
    conn: UtpConnection,
    waker: Option<Waker>,
    woken: bool,
}

/// A connection's peer and receive id.
type ConnKey = (SocketAddr, u16);

/// Counters of a multiplexer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MuxStats {
    /// Datagrams handed to a connection.
    pub delivered: u64,
    /// uTP-looking datagrams that did not parse.
    pub malformed: u64,
    /// Datagrams for no open connection.
    pub unknown: u64,
    /// Connections refused because `max_connections` were open.
    pub refused: u64,
    /// Datagrams for another shard's connection, forwarded there.
    pub forwarded: u64,
    /// Datagrams naming another shard's connection from an address no
    /// shard has a connection to: dropped before any copy.
    pub unsolicited: u64,
}

impl std::ops::Add for MuxStats {
    type Output = MuxStats;
    fn add(self, b: MuxStats) -> MuxStats {
        MuxStats {
            delivered: self.delivered + b.delivered,
            malformed: self.malformed + b.malformed,
            unknown: self.unknown + b.unknown,
            refused: self.refused + b.refused,
            forwarded: self.forwarded + b.forwarded,
            unsolicited: self.unsolicited + b.unsolicited,
        }
    }
}

impl MuxStats {
    /// Each datagram counter with the `fate` label it is exported under
    /// (`refused` counts connections, not datagrams, and is not here).
    pub fn datagram_fates(&self) -> [(&'static str, u64); 5] {
        [
            ("delivered", self.delivered),
            ("malformed", self.malformed),
            ("unknown", self.unknown),
            ("forwarded", self.forwarded),
            ("unsolicited", self.unsolicited),
        ]
    }
}

/// Where [`UtpMux::dispatch`] sent a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// Not uTP: the caller's (KRPC's).
    NotUtp,
    /// Handled here (delivered, or counted and dropped).
    Taken,
    /// For a connection of this shard number: forward it there.
    OtherShard(usize),
}

/// The uTP connections of one socket.
///
/// With several shards on one `SO_REUSEPORT` address the kernel hashes a
/// peer's datagrams to any shard's socket, not to the one that opened the
/// connection. So each shard's multiplexer takes receive ids `id` with
/// `id % shards == shard` only, and a datagram for an unknown id of another
/// shard goes there ([`Dispatch::OtherShard`]), as KRPC replies do by their
/// transaction id.
///
/// **Admission.** Every connection holds a permit of the shard's
/// [`TcpConnector`], so uTP and TCP connections share one per-shard cap
/// and one per-IP cap, counted across shards. That table is also what
/// admits a datagram for another shard: it is forwarded (copied onto the
/// mesh) only when some shard holds a connection to its source address.
/// A flood of uTP-looking datagrams from addresses we never connected to
/// is counted as `unsolicited` and dropped uncopied, the way forged KRPC
/// replies are stopped before their copy.
#[derive(Debug)]
pub struct UtpMux {
    sock: UtpSocket,
    caps: TcpConnector,
    shard: u16,
    shards: u16,
    conns: RefCell<HashMap<ConnKey, Rc<RefCell<Slot>>>>,
    rng: RefCell<Rng>,
    max_connections: usize,
    stats: Cell<MuxStats>,
}

impl UtpMux {
    /// A multiplexer sending through `sock`, with at most
    /// `max_connections` connections open at once, alone on its socket and
    /// with no per-IP cap (tests and tools talking to loopback peers).
    pub fn new(sock: UtpSocket, max_connections: usize) -> Rc<Self> {
        let caps = TcpConnector::new(
            TcpOptions {
                max_per_shard: max_connections,
                max_per_ip: usize::MAX,
                ..TcpOptions::default()
            },
            0,
        );
        Self::for_shard(sock, max_connections, 0, 1, caps)
    }

    /// A multiplexer for shard `shard` of `shards` sharing one address,
    /// whose connections take their permits from `caps` (the shard's
    /// connector, so that TCP and uTP share the caps).
    pub fn for_shard(
        sock: UtpSocket,
        max_connections: usize,
        shard: usize,
        shards: usize,
        caps: TcpConnector,
    ) -> Rc<Self> {
        let shards = u16::try_from(shards.clamp(1, 256)).unwrap_or(1);
        let shard = u16::try_from(shard).unwrap_or(0) % shards;
        Rc::new(UtpMux {
            sock,
            caps,
            shard,
            shards,
            conns: RefCell::new(HashMap::new()),
            rng: RefCell::new(Rng::from_entropy()),
            max_connections,
            stats: Cell::new(MuxStats::default()),
        })
    }

    /// Whether this multiplexer's socket can reach `peer` (same address
    /// family).
    pub fn serves(&self, peer: &SocketAddr) -> bool {
        let local = match &self.sock {
            UtpSocket::Shard(s) => Some(s.local_addr()),
            UtpSocket::Plain(s) => s.local_addr().ok(),
        };
        local.is_some_and(|l| l.is_ipv4() == peer.is_ipv4())
    }

    /// Counters so far.
    pub fn stats(&self) -> MuxStats {
        self.stats.get()
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.conns.borrow().len()
    }

    fn bump(&self, f: impl FnOnce(&mut MuxStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    /// Takes `datagram` if it is uTP: returns false (and does nothing)
    /// when it is not, so that the caller hands it to KRPC. A datagram for
    /// another shard's connection is dropped: see [`Self::dispatch`].
    pub fn handle_datagram(&self, from: SocketAddr, datagram: &[u8], now: Instant) -> bool {
        self.dispatch(from, datagram, now) != Dispatch::NotUtp
    }

    /// Hands `datagram` to its connection, or says whose it is.
    pub fn dispatch(&self, from: SocketAddr, datagram: &[u8], now: Instant) -> Dispatch {
        if !looks_like_utp(datagram) {
            return Dispatch::NotUtp;
        }
        let Ok(p) = Packet::parse(datagram) else {
            self.bump(|s| s.malformed += 1);
            return Dispatch::Taken;
        };
        let id = demux_id(&p);
        let slot = self.conns.borrow().get(&(from, id)).cloned();
        match slot {
            Some(slot) => {
                let mut s = slot.borrow_mut();
                // A refused datagram changes nothing; the driver sees
                // resets and timeouts through the connection's state.
                let _ = s.conn.handle_datagram(datagram, now);
                s.woken = true;
                if let Some(w) = s.waker.take() {
                    w.wake();
                }
                drop(s);
                self.bump(|s| s.delivered += 1);
                Dispatch::Taken
            }
            None => {
                let owner = id % self.shards;
                if owner != self.shard {
                    // Only a source some shard is connected to is worth
                    // the mesh copy (see the type's docs).
                    if self.caps.active_for(from.ip()) == 0 {
                        self.bump(|s| s.unsolicited += 1);
                        return Dispatch::Taken;
                    }
                    self.bump(|s| s.forwarded += 1);
                    return Dispatch::OtherShard(usize::from(owner));
                }
                self.bump(|s| s.unknown += 1);
                Dispatch::Taken
            }
        }
    }

    fn open(self: &Rc<Self>, peer: SocketAddr, now: Instant) -> Result<Handle, AttemptError> {
        let mut conns = self.conns.borrow_mut();
        if conns.len() >= self.max_connections {
            self.bump(|s| s.refused += 1);
            return Err(AttemptError::UtpCapped);
        }
        let permit = self.caps.try_permit(peer.ip())?;
        let mut rng = self.rng.borrow_mut();
        // Ids are per peer address; a free one is found at once unless
        // thousands of connections go to one address.
        // An id of this shard's residue class (see the type's docs).
        let n = u32::from(self.shards);
        let pick = |r: u64| -> u16 {
            let k = (r % (65536 / u64::from(n))) as u32;
            ((k * n + u32::from(self.shard)) & 0xffff) as u16
        };
        let mut id = pick(rng.next_u64());
        while conns.contains_key(&(peer, id)) {
            id = pick(rng.next_u64());
        }
        let seq = rng.below(1 << 16) as u16;
        let slot = Rc::new(RefCell::new(Slot {
            conn: UtpConnection::connect(id, seq, UtpConfig::default(), now),
            waker: None,
            woken: false,
        }));
        conns.insert((peer, id), slot.clone());
        Ok(Handle {
            mux: self.clone(),
            key: (peer, id),
            slot,
            _permit: permit,
        })
    }
}

/// An open connection; dropping it forgets the connection.
struct Handle {
    mux: Rc<UtpMux>,
    key: (SocketAddr, u16),
    slot: Rc<RefCell<Slot>>,
    /// The connection's place under the shard's caps, released on drop.
    _permit: ConnPermit,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // An attempt cancelled mid-connection (job budget, shutdown) still
        // tells the peer, where the socket can queue without waiting (the
        // shard flushes it with its next batch); a plain socket cannot send
        // from here, and its peer times out instead.
        if let UtpSocket::Shard(s) = &self.mux.sock {
            if let Ok(mut slot) = self.slot.try_borrow_mut() {
                if let Some(r) = slot.conn.abort(Instant::now()) {
                    let _ = s.queue_send(self.key.0, &r);
                }
            }
        }
        self.mux.conns.borrow_mut().remove(&self.key);
    }
}

impl Handle {
    /// Sends what the connection has to send.
    async fn transmit(&self, out: &mut Vec<Vec<u8>>) -> io::Result<()> {
        {
            let mut s = self.slot.borrow_mut();
            let now = Instant::now();
            while let Some(d) = s.conn.poll_transmit(now) {
                out.push(d);
            }
        }
        for d in out.drain(..) {
            self.mux.sock.send(self.key.0, &d).await?;
        }
        Ok(())
    }

    /// Ends the connection at once with a RESET. A FIN is what a
    /// graceful close would send, but libtorrent 2.0.8 answers our FIN
    /// with its own and then keeps the peer on the torrent until its read
    /// times out (seen in `libtorrent_utp_only_seeds_to_our_fetcher`: it
    /// refused the next connection for the same torrent as a duplicate
    /// peer id for some seconds); a RESET ends its side at once, as it ends
    /// ours, and holds nothing while waiting for acks.
    async fn finish(&self) {
        let reset = self.slot.borrow_mut().conn.abort(Instant::now());
        if let Some(r) = reset {
            let _ = self.mux.sock.send(self.key.0, &r).await;
        }
    }

    /// Waits for a datagram for this connection, or `deadline`; true when
    /// a datagram came.
    async fn wait(&self, deadline: Instant) -> bool {
        let woken = poll_fn(|cx| {
            let mut s = self.slot.borrow_mut();
            if s.woken {
                s.woken = false;
                Poll::Ready(())
            } else {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        });
        with_deadline(deadline, woken).await.is_ok()
    }
}

/// Fetches `infohash` from `peer` over a uTP connection of `mux`, against
/// the fetch's deadlines counted from `started` (a fallback from TCP spends
/// what TCP left, as [`super::attempt_peer`]'s fallbacks do). The connect
/// (SYN until its STATE) is held to the fetch's handshake timeout.
#[allow(clippy::too_many_arguments)]
pub async fn attempt_utp(
    mux: &Rc<UtpMux>,
    peer: SocketAddr,
    infohash: Id,
    peer_id: [u8; 20],
    cfg: FetchConfig,
    started: Instant,
    stats: &FetchStats,
) -> Result<Verified, AttemptError> {
    let conn = mux.open(peer, Instant::now())?;
    let connect_deadline = started + cfg.handshake_timeout.min(cfg.hard_deadline);
    let mut fetch = MetadataFetch::new(infohash, peer_id, cfg, started);
    let mut to_peer = Vec::with_capacity(256);
    let mut from_peer = Vec::with_capacity(crate::wire::utp::MAX_PAYLOAD);
    let mut datagrams = Vec::new();
    let mut counted = false;
    let outcome = loop {
        let now = Instant::now();
        {
            let mut s = conn.slot.borrow_mut();
            let c = &mut s.conn;
            if c.is_connected() && !counted {
                counted = true;
                stats.count_transport(Transport::Utp);
            }
            if let Some(e) = c.error() {
                drop(s);
                stats.count_utp_failure(&e);
                return Err(AttemptError::Utp(e));
            }
            if !c.is_connected() && now >= connect_deadline {
                drop(s);
                stats.count_utp_failure(&UtpError::Timeout);
                return Err(AttemptError::Utp(UtpError::Timeout));
            }
            // Peer-wire bytes both ways, what arrived first so that the
            // answers to it go out in this round; what the send buffer
            // cannot take yet waits in `to_peer`.
            from_peer.clear();
            if c.read(&mut from_peer) > 0 {
                fetch.handle_data(&from_peer, now);
            }
            if c.is_eof() {
                fetch.handle_eof(now);
            }
            fetch.poll_transmit(&mut to_peer);
            let n = c.write(&to_peer);
            to_peer.drain(..n);
        }
        if let Some(o) = fetch.poll_outcome() {
            break o;
        }
        if let Err(e) = conn.transmit(&mut datagrams).await {
            log::debug!("utp send to {peer}: {e}");
        }
        let deadline = {
            let s = conn.slot.borrow();
            [
                s.conn.poll_timeout(),
                fetch.poll_timeout(),
                (!s.conn.is_connected()).then_some(connect_deadline),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1))
        };
        conn.wait(deadline).await;
        // Timers run whether the wait ended by a datagram or the clock: a
        // peer that sends a stream of datagrams must not keep the
        // exchange's deadlines from being checked.
        let now = Instant::now();
        {
            let mut s = conn.slot.borrow_mut();
            if s.conn.poll_timeout().is_some_and(|t| t <= now) {
                s.conn.handle_timeout(now);
            }
        }
        if fetch.poll_timeout().is_some_and(|t| t <= now) {
            fetch.handle_timeout(now);
        }
    };
    conn.finish().await;
    match outcome {
        Outcome::Done(v) => {
            stats.count_transport_ok(Transport::Utp);
            Ok(v)
        }
        Outcome::Failed(r) => Err(AttemptError::Exchange(r)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(conn_id: u16, ty: crate::wire::utp::PacketType) -> Vec<u8> {
        let mut out = Vec::new();
        Packet {
            ty,
            conn_id,
            timestamp: 0,
            timestamp_diff: 0,
            wnd_size: 0,
            seq_nr: 1,
            ack_nr: 0,
            sack: None,
            payload: &[],
        }
        .encode(&mut out);
        out
    }

    /// Shard 1 of 2 opens only odd receive ids, hands KRPC back, keeps
    /// what is its own and names shard 0 for even ids (a SYN's id is routed
    /// as the id it opens, plus one).
    #[test]
    fn dispatch_routes_by_first_byte_and_owning_shard() {
        use crate::wire::utp::PacketType;
        let r = glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let sock = Rc::new(glommio::net::UdpSocket::bind("127.0.0.1:0").unwrap());
                let caps = TcpConnector::new(
                    TcpOptions {
                        max_per_ip: usize::MAX,
                        ..TcpOptions::default()
                    },
                    1,
                );
                let mux = UtpMux::for_shard(UtpSocket::Plain(sock), 64, 1, 2, caps);
                let peer: SocketAddr = ([127, 0, 0, 1], 9).into();
                let stranger: SocketAddr = ([127, 0, 0, 2], 9).into();
                let now = Instant::now();
                let handles: Vec<Handle> = (0..40).map(|_| mux.open(peer, now).unwrap()).collect();
                let odd = handles.iter().all(|h| h.key.1 % 2 == 1);
                let distinct = handles
                    .iter()
                    .map(|h| h.key.1)
                    .collect::<std::collections::HashSet<_>>()
                    .len();
                let own = handles[0].key.1;
                let d = [
                    mux.dispatch(peer, b"d1:ad2:id20:", now),
                    mux.dispatch(peer, &state(4, PacketType::State), now),
                    mux.dispatch(peer, &state(5, PacketType::State), now),
                    mux.dispatch(peer, &state(4, PacketType::Syn), now),
                    mux.dispatch(peer, &[0x01, 0, 0], now),
                    mux.dispatch(peer, &state(own, PacketType::State), now),
                    // Shard 0's id, from an address nobody connected to.
                    mux.dispatch(stranger, &state(4, PacketType::State), now),
                ];
                let stats = mux.stats();
                let open = mux.open_connections();
                drop(handles);
                // With every connection to `peer` closed, it is a stranger
                // too.
                let late = mux.dispatch(peer, &state(4, PacketType::State), now);
                (
                    odd,
                    distinct,
                    d,
                    stats,
                    open,
                    mux.open_connections(),
                    late,
                    mux.stats(),
                )
            })
            .unwrap()
            .join()
            .unwrap();
        let (odd, distinct, d, stats, open, after, late, last) = r;
        assert!(odd, "an even id opened on shard 1");
        assert_eq!(distinct, 40);
        assert_eq!(
            d,
            [
                Dispatch::NotUtp,
                Dispatch::OtherShard(0),
                Dispatch::Taken,
                Dispatch::Taken,
                Dispatch::Taken,
                Dispatch::Taken,
                Dispatch::Taken,
            ]
        );
        // 5 (own, no connection) and the SYN naming 5: unknown; the
        // three-byte datagram: malformed; the open connection's: delivered;
        // the stranger's: unsolicited, not forwarded.
        assert_eq!((stats.unknown, stats.malformed, stats.delivered), (2, 1, 1));
        assert_eq!((stats.forwarded, stats.unsolicited), (1, 1));
        assert_eq!(late, Dispatch::Taken);
        assert_eq!((last.forwarded, last.unsolicited), (1, 2));
        assert_eq!((open, after), (40, 0));
    }

    /// uTP connections take the shard connector's permits: the per-IP cap
    /// holds across both transports, and a closed connection gives its
    /// place back.
    #[test]
    fn connections_hold_the_connectors_per_ip_permits() {
        let r = glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let sock = Rc::new(glommio::net::UdpSocket::bind("127.0.0.1:0").unwrap());
                let caps = TcpConnector::new(
                    TcpOptions {
                        max_per_ip: 2,
                        ..TcpOptions::default()
                    },
                    0,
                );
                let mux = UtpMux::for_shard(UtpSocket::Plain(sock), 64, 0, 1, caps.clone());
                let peer: SocketAddr = ([127, 0, 0, 1], 9).into();
                let other: SocketAddr = ([127, 0, 0, 1], 10).into();
                let now = Instant::now();
                let a = mux.open(peer, now).unwrap();
                // A TCP connection to the same address counts too.
                let tcp = caps.try_permit(other.ip()).unwrap();
                let third = mux.open(other, now).map(|_| ()).map_err(|e| e.kind());
                let held = caps.active_for(peer.ip());
                drop(a);
                let again = mux.open(other, now).is_ok();
                drop(tcp);
                (third, held, again, caps.active_for(peer.ip()))
            })
            .unwrap()
            .join()
            .unwrap();
        let (third, held, again, after) = r;
        assert_eq!(third, Err(super::super::FailureKind::Capped));
        assert_eq!(held, 2);
        assert!(again, "a closed connection kept its permit");
        assert_eq!(after, 0);
    }
}
