//! uTP, the Micro Transport Protocol of BEP 29: a reliable, ordered byte
//! stream over UDP with LEDBAT congestion control, as a sans-IO state
//! machine for both ends of one connection.
//!
//! # Why sans-IO, and why not a crate
//!
//! The crawler's shard owns exactly one UDP socket per core (bound with
//! `SO_REUSEPORT`, driven by glommio), and KRPC already lives on it. Peers
//! reached through the DHT are reached at the address the DHT saw, which is
//! that socket's port, so uTP has to share it: the shard reads every
//! datagram and hands the uTP ones (first byte `0x01`, `0x11` .. `0x41`,
//! never `d` as a bencoded KRPC dict starts) to the connection named by the
//! connection id. The Rust uTP crates on crates.io (as their docs.rs pages
//! describe them, December 2026) each own their socket and their clock:
//! `utp` (std, blocking; `UtpSocket::bind` / `UtpStream::connect` open a
//! socket of their own), `async-std-utp` (the same on async-std),
//! `async-utp` (tokio; a `UtpStreamDriver` task must run per stream),
//! `tokio-utp` (tokio-core 0.1 and futures 0.1), `libutp-rs` /
//! `libutp-rs2` (tokio around the C libutp; `UtpUdpContext::new_udp` binds
//! the UDP socket) and `librqbit-utp` (tokio, smoltcp-inspired, written for
//! rqbit). None is documented as taking datagrams from a socket someone
//! else reads, and none takes its time from the caller: none could share
//! the glommio shard's socket with KRPC, and none can be tested under
//! virtual time or fuzzed as a pure function. (`SO_REUSEPORT` also hashes a
//! peer's datagrams to any shard's socket; the glue in `crate::fetch::utp`
//! routes them to the owning shard by connection id, which no crate would
//! know to do.) This file
//! follows [`super::mse`]: the caller passes datagrams in
//! ([`UtpConnection::handle_datagram`]), takes datagrams out
//! ([`UtpConnection::poll_transmit`]), and passes the time in.
//!
//! # The protocol, as implemented
//!
//! * Header (20 bytes, big-endian): `type << 4 | version`, first extension,
//!   `connection_id`, `timestamp_microseconds`,
//!   `timestamp_difference_microseconds`, `wnd_size`, `seq_nr`, `ack_nr`;
//!   then the extension chain (`next`, `len`, `len` bytes each), then the
//!   payload. Version 1; types DATA 0, FIN 1, STATE 2, RESET 3, SYN 4.
//! * Connection ids: the initiator picks `recv_id`, sends the SYN with
//!   `connection_id = recv_id` and everything after it with
//!   `send_id = recv_id + 1`; it receives on `recv_id`. The acceptor
//!   receives on `syn.connection_id + 1` and sends with
//!   `syn.connection_id`. [`demux_id`] gives the id a datagram is routed by.
//! * Sequence numbers: SYN, DATA and FIN take one; STATE does not. The
//!   acceptor answers the SYN with a STATE carrying its (random) initial
//!   `seq_nr` and `ack_nr = syn.seq_nr`; its first DATA reuses that
//!   `seq_nr`, so the initiator sets `ack_nr = state.seq_nr - 1`, as
//!   libtorrent and libutp do.
//! * Acks: every packet carries the last in-order `seq_nr` received; a
//!   selective ack (extension 1) is added while packets past a hole are
//!   held, its bit `i` meaning `ack_nr + 2 + i`. Packets are resent on
//!   timeout, on three duplicate acks, and when three packets after one
//!   were selectively acked (libtorrent's rule).
//! * RTT and timeout as BEP 29: `rtt_var += (|rtt - sample| - rtt_var) / 4`,
//!   `rtt += (sample - rtt) / 8`, `timeout = max(rtt + 4 rtt_var, 500 ms)`,
//!   1 s before the first sample, doubled on each timeout in a row, never
//!   over 8 s. Samples come from packets sent once (Karn), taken when a
//!   packet is first acked, selectively or cumulatively: a packet sacked
//!   early and covered by the cumulative ack only after a resent hole would
//!   otherwise count the hole's recovery as its round trip (in the lossy
//!   test that inflated the timeout past 16 s).
//! * LEDBAT: the peer's `timestamp_difference` of our packets, minus the
//!   lowest one seen in the last two minutes (the base delay, which removes
//!   the clocks' offset), is our queuing delay; the window moves by
//!   `3000 B * (100 ms - delay) / 100 ms * acked / window` per ack, after a
//!   slow start (doubling per round trip while under target, as libtorrent
//!   does, so that a short metadata exchange is not paced at 3 KB per RTT).
//!   A loss halves it; a timeout drops it to one packet.
//!
//! # Bounds against hostile peers
//!
//! | What | Bound |
//! |---|---|
//! | receive window (in-order unread + out-of-order) | [`RECV_WINDOW`] bytes, advertised in `wnd_size` |
//! | out-of-order packets held | [`REORDER_SLOTS`], `ack_nr + 2 ..= ack_nr + REORDER_SLOTS + 1` |
//! | bytes accepted by `write` and not yet acked | [`SEND_BUFFER`] |
//! | extensions in one header | [`MAX_EXTENSIONS`] |
//! | payload we send | [`MAX_PAYLOAD`] bytes a packet |
//! | SYN resent | [`MAX_SYN_SENDS`] sends in all, then `Timeout` |
//! | data resent | [`MAX_TIMEOUTS`] timeouts in a row, then `Timeout` |
//! | silence | [`UtpConfig::idle_timeout`], then `Timeout` |
//!
//! A packet that fails to parse, names another connection or acks a
//! sequence number we never sent is refused with a [`UtpError`] and
//! changes nothing; only a RESET (or the timeouts) ends a connection.
//!
//! This file is about 1,200 lines: the header codec and one connection state
//! machine for both ends (handshake, delivery, acks, resends, LEDBAT, close)
//! share the packet and sequence-number types and are checked against each
//! other; its tests are in `utp_tests.rs`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Bytes in a header without extensions.
pub const HEADER_LEN: usize = 20;
/// The protocol version in the low nibble of the first byte.
pub const VERSION: u8 = 1;
/// Largest payload in one packet we send: 1200 bytes of IPv6's minimum
/// 1280-byte MTU, less the IP, UDP and uTP headers and a selective ack,
/// so that no path fragments it. libtorrent probes the MTU upwards; a
/// metadata exchange is too short for that to pay.
pub const MAX_PAYLOAD: usize = 1180;
/// Bytes we accept from the peer and hold until read (in order) or until
/// the hole before them fills (out of order). 256 KiB: a metadata piece is
/// 16 KiB, so this is sixteen of them, and is what libtorrent's default
/// `recv_socket_buffer_size` offers too.
pub const RECV_WINDOW: usize = 256 * 1024;
/// Out-of-order packets held at most. The selective-ack mask we send
/// covers this many packets after the hole.
pub const REORDER_SLOTS: usize = 256;
/// Bytes `write` accepts that are not yet acked: 256 KiB.
pub const SEND_BUFFER: usize = 256 * 1024;
/// Extensions parsed in one header at most. BEP 29 defines one (selective
/// ack); libtorrent adds a close reason. Eight is ample and keeps a chain
/// of zero-length extensions from being a loop over the whole datagram.
pub const MAX_EXTENSIONS: usize = 8;
/// Longest selective-ack mask accepted: enough for [`REORDER_SLOTS`].
pub const MAX_SACK_LEN: usize = REORDER_SLOTS / 8;
/// Sends of the SYN before the connect fails (libtorrent: `utp_syn_resends`
/// 2 resends after the first).
pub const MAX_SYN_SENDS: u32 = 3;
/// Retransmission timeouts in a row before the connection fails
/// (libtorrent's `utp_num_resends` is 3 for data; we allow a few more
/// because the fetcher's own deadlines bound the connection anyway).
pub const MAX_TIMEOUTS: u32 = 5;
/// LEDBAT's target queuing delay (BEP 29).
const TARGET_DELAY_US: f64 = 100_000.0;
/// LEDBAT's most window growth per round trip (BEP 29).
const MAX_CWND_INCREASE_PER_RTT: f64 = 3000.0;
/// Smallest congestion window: one full packet.
const MIN_WINDOW: f64 = (MAX_PAYLOAD + HEADER_LEN) as f64;
/// Initial congestion window: two packets, as TCP's old initial window.
const INITIAL_WINDOW: f64 = 2.0 * MIN_WINDOW;
/// Floor of the retransmission timeout (BEP 29).
const MIN_RTO: Duration = Duration::from_millis(500);
/// Timeout before any RTT sample (libutp, libtorrent use 1 s for data).
const INITIAL_RTO: Duration = Duration::from_secs(1);
/// Ceiling of the backed-off timeout: past this, waiting longer only
/// holds a connection slot.
const MAX_RTO: Duration = Duration::from_secs(8);
/// Base-delay history: the minimum over this many one-minute buckets.
const DELAY_BUCKETS: usize = 2;

/// Packet types (the high nibble of the first byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// Payload.
    Data = 0,
    /// End of the sender's stream.
    Fin = 1,
    /// An ack, with no payload and no sequence number of its own.
    State = 2,
    /// Abort the connection.
    Reset = 3,
    /// Open a connection.
    Syn = 4,
}

impl PacketType {
    fn from_nibble(n: u8) -> Option<PacketType> {
        Some(match n {
            0 => PacketType::Data,
            1 => PacketType::Fin,
            2 => PacketType::State,
            3 => PacketType::Reset,
            4 => PacketType::Syn,
            _ => return None,
        })
    }
}

/// Why a datagram was refused (it changed nothing), or why a connection
/// ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UtpError {
    /// Shorter than the header or than its extensions say.
    #[error("uTP packet truncated at {0} bytes")]
    Truncated(usize),
    /// Not version 1.
    #[error("uTP version {0} unsupported")]
    BadVersion(u8),
    /// Type above 4.
    #[error("uTP packet type {0} unknown")]
    BadType(u8),
    /// More than [`MAX_EXTENSIONS`] extensions.
    #[error("uTP extension chain too long")]
    TooManyExtensions,
    /// A selective-ack mask whose length is not a non-zero multiple of 4
    /// up to [`MAX_SACK_LEN`].
    #[error("uTP selective ack of {0} bytes")]
    BadSackLength(u8),
    /// A connection id that is not this connection's.
    #[error("uTP connection id {0} is not ours")]
    WrongConnection(u16),
    /// An ack of a sequence number we never sent.
    #[error("uTP ack {0} of a packet never sent")]
    AckOutOfRange(u16),
    /// A packet type this end does not take in its state (a SYN at the
    /// initiator, data before the handshake).
    #[error("uTP packet unexpected in this state")]
    Unexpected,
    /// The connection already ended.
    #[error("uTP connection already ended")]
    Ended,
    /// The peer reset the connection.
    #[error("uTP connection reset by peer")]
    Reset,
    /// The peer stopped answering: SYN not acked, data not acked after
    /// [`MAX_TIMEOUTS`] timeouts, or silence past the idle timeout.
    #[error("uTP connection timed out")]
    Timeout,
}

impl UtpError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            UtpError::Truncated(_) => "truncated",
            UtpError::BadVersion(_) => "bad_version",
            UtpError::BadType(_) => "bad_type",
            UtpError::TooManyExtensions => "too_many_extensions",
            UtpError::BadSackLength(_) => "bad_sack",
            UtpError::WrongConnection(_) => "wrong_connection",
            UtpError::AckOutOfRange(_) => "ack_out_of_range",
            UtpError::Unexpected => "unexpected",
            UtpError::Ended => "ended",
            UtpError::Reset => "reset",
            UtpError::Timeout => "timeout",
        }
    }
}

/// Whether a datagram can be uTP version 1 at all, from its first byte
/// alone: what the shard's demultiplexer checks before parsing (a KRPC
/// message starts with `d`, 0x64).
pub fn looks_like_utp(datagram: &[u8]) -> bool {
    datagram
        .first()
        .is_some_and(|b| b & 0x0f == VERSION && b >> 4 <= 4)
}

/// One packet: what [`Packet::parse`] returns (borrowing the datagram:
/// nothing is copied) and what [`Packet::encode`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The type.
    pub ty: PacketType,
    /// `connection_id`.
    pub conn_id: u16,
    /// `timestamp_microseconds`.
    pub timestamp: u32,
    /// `timestamp_difference_microseconds`.
    pub timestamp_diff: u32,
    /// `wnd_size`.
    pub wnd_size: u32,
    /// `seq_nr`.
    pub seq_nr: u16,
    /// `ack_nr`.
    pub ack_nr: u16,
    /// The selective-ack mask (extension 1), its length a multiple of 4.
    pub sack: Option<&'a [u8]>,
    /// The payload.
    pub payload: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Parses one datagram without copying. The extension chain is walked
    /// with every length checked against what is left; unknown extensions
    /// are skipped, as BEP 29 asks.
    pub fn parse(datagram: &'a [u8]) -> Result<Packet<'a>, UtpError> {
        let Some(h) = datagram.get(..HEADER_LEN) else {
            return Err(UtpError::Truncated(datagram.len()));
        };
        let version = h[0] & 0x0f;
        if version != VERSION {
            return Err(UtpError::BadVersion(version));
        }
        let ty = PacketType::from_nibble(h[0] >> 4).ok_or(UtpError::BadType(h[0] >> 4))?;
        let u16_at = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
        let u32_at = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let mut next = h[1];
        let mut at = HEADER_LEN;
        let mut sack = None;
        let mut count = 0;
        while next != 0 {
            count += 1;
            if count > MAX_EXTENSIONS {
                return Err(UtpError::TooManyExtensions);
            }
            let (Some(&following), Some(&len)) = (datagram.get(at), datagram.get(at + 1)) else {
                return Err(UtpError::Truncated(datagram.len()));
            };
            let body = datagram
                .get(at + 2..at + 2 + usize::from(len))
                .ok_or(UtpError::Truncated(datagram.len()))?;
            if next == 1 {
                if len == 0 || len % 4 != 0 || usize::from(len) > MAX_SACK_LEN {
                    return Err(UtpError::BadSackLength(len));
                }
                sack = Some(body);
            }
            next = following;
            at += 2 + usize::from(len);
        }
        Ok(Packet {
            ty,
            conn_id: u16_at(2),
            timestamp: u32_at(4),
            timestamp_diff: u32_at(8),
            wnd_size: u32_at(12),
            seq_nr: u16_at(16),
            ack_nr: u16_at(18),
            sack,
            payload: &datagram[at..],
        })
    }

    /// Appends the encoded packet to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push((self.ty as u8) << 4 | VERSION);
        out.push(u8::from(self.sack.is_some()));
        out.extend_from_slice(&self.conn_id.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.timestamp_diff.to_be_bytes());
        out.extend_from_slice(&self.wnd_size.to_be_bytes());
        out.extend_from_slice(&self.seq_nr.to_be_bytes());
        out.extend_from_slice(&self.ack_nr.to_be_bytes());
        if let Some(mask) = self.sack {
            out.push(0);
            // Callers build masks of at most MAX_SACK_LEN bytes.
            out.push(u8::try_from(mask.len()).unwrap_or(u8::MAX));
            out.extend_from_slice(mask);
        }
        out.extend_from_slice(self.payload);
    }
}

/// The connection id a datagram is routed by: the receiving connection's
/// `recv_id`. A SYN names the initiator's receive id; the connection it
/// opens (or has opened) at the acceptor receives on that plus one.
pub fn demux_id(p: &Packet<'_>) -> u16 {
    if p.ty == PacketType::Syn {
        p.conn_id.wrapping_add(1)
    } else {
        p.conn_id
    }
}

/// A RESET answering `p`, for a datagram that names no connection (the
/// caller's choice whether to send it).
pub fn reset_for(p: &Packet<'_>, out: &mut Vec<u8>) {
    Packet {
        ty: PacketType::Reset,
        conn_id: p.conn_id,
        timestamp: 0,
        timestamp_diff: 0,
        wnd_size: 0,
        seq_nr: 0,
        ack_nr: p.seq_nr,
        sack: None,
        payload: &[],
    }
    .encode(out);
}

/// `a < b` in sequence space (16-bit, wrapping).
fn seq_lt(a: u16, b: u16) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000
}

/// Knobs of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtpConfig {
    /// Longest silence (no packet from the peer) tolerated while the
    /// connection is open: 20 s, under the fetcher's 25 s idle timeout so
    /// that the transport, not the exchange, reports a vanished peer.
    pub idle_timeout: Duration,
}

impl Default for UtpConfig {
    fn default() -> Self {
        UtpConfig {
            idle_timeout: Duration::from_secs(20),
        }
    }
}

/// Where a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// SYN sent, no STATE back yet.
    SynSent,
    /// Open both ways.
    Connected,
    /// `close` was called: the rest of the send buffer, then a FIN, then
    /// waiting for its ack.
    Closing,
    /// Our FIN was acked and the peer's FIN received: done.
    Closed,
    /// Ended by a RESET or a timeout.
    Failed(UtpError),
}

/// A packet sent and not yet acked.
#[derive(Debug)]
struct Sent {
    seq: u16,
    ty: PacketType,
    payload: Vec<u8>,
    /// When last (re)sent; `None` until first sent.
    sent_at: Option<Instant>,
    transmissions: u32,
    need_resend: bool,
    /// Selectively acked: delivered, only waiting for the cumulative ack.
    sacked: bool,
}

/// The minimum of the peer's delay samples over the last minutes.
#[derive(Debug)]
struct DelayHistory {
    buckets: [Option<u32>; DELAY_BUCKETS],
    current: usize,
    bucket_start: Option<Instant>,
}

/// `a < b` for wrapping 32-bit microsecond values.
fn ts_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

impl DelayHistory {
    fn new() -> Self {
        DelayHistory {
            buckets: [None; DELAY_BUCKETS],
            current: 0,
            bucket_start: None,
        }
    }

    /// Adds a sample and returns the delay above the base (0 or more).
    fn add(&mut self, sample: u32, now: Instant) -> u32 {
        match self.bucket_start {
            None => self.bucket_start = Some(now),
            Some(t) if now.duration_since(t) >= Duration::from_secs(60) => {
                self.current = (self.current + 1) % DELAY_BUCKETS;
                self.buckets[self.current] = None;
                self.bucket_start = Some(now);
            }
            Some(_) => {}
        }
        let slot = &mut self.buckets[self.current];
        if slot.is_none_or(|m| ts_lt(sample, m)) {
            *slot = Some(sample);
        }
        let base = self
            .buckets
            .iter()
            .flatten()
            .copied()
            .reduce(|a, b| if ts_lt(b, a) { b } else { a })
            .unwrap_or(sample);
        let d = sample.wrapping_sub(base) as i32;
        d.max(0) as u32
    }
}

/// One uTP connection, either end. Feed it datagrams and time; take
/// datagrams from it; read and write bytes.
#[derive(Debug)]
pub struct UtpConnection {
    state: State,
    cfg: UtpConfig,
    recv_id: u16,
    send_id: u16,
    /// Next sequence number to take.
    seq_nr: u16,
    /// Last in-order sequence number received.
    ack_nr: u16,
    epoch: Instant,

    // Sending.
    /// Written and not yet in a packet.
    send_buf: VecDeque<u8>,
    /// In packets and not yet acked, in sequence order (contiguous).
    in_flight: VecDeque<Sent>,
    /// Payload bytes in `in_flight` not selectively acked.
    cur_window: usize,
    /// Payload bytes in `in_flight` (acked or not): counts against
    /// [`SEND_BUFFER`] with `send_buf`.
    unacked_bytes: usize,
    max_window: f64,
    slow_start: bool,
    ssthresh: f64,
    peer_wnd: usize,
    rtt: Option<(f64, f64)>,
    rto: Duration,
    timer: Option<Instant>,
    timeouts: u32,
    last_ack: u16,
    dup_acks: u32,
    delays: DelayHistory,
    close_requested: bool,
    fin_queued: bool,

    // Receiving.
    /// In order, not yet read.
    recv_buf: VecDeque<u8>,
    /// Index 0 is `ack_nr + 2`; `Some` holds a packet received past a hole.
    reorder: VecDeque<Option<(PacketType, Vec<u8>)>>,
    reorder_bytes: usize,
    /// The peer's FIN was delivered in order.
    eof: bool,
    ack_pending: bool,
    /// Our clock minus the peer's timestamp, from its last packet: sent
    /// back as `timestamp_difference`.
    reply_micro: u32,
    last_heard: Instant,
    /// The window we last advertised was under one packet.
    window_was_closed: bool,
    /// The acceptor's record of the peer's SYN `seq_nr`, to tell a resent
    /// SYN (our STATE was lost: answer again) from a stray one.
    syn_seq: Option<u16>,
    /// The acceptor owes the STATE answering the SYN. It goes out before
    /// any data or FIN: an initiator still in `SynSent` takes nothing else
    /// (libtorrent drops it too).
    syn_ack_pending: bool,
}

impl UtpConnection {
    fn new(cfg: UtpConfig, recv_id: u16, send_id: u16, seq_nr: u16, now: Instant) -> Self {
        UtpConnection {
            state: State::SynSent,
            cfg,
            recv_id,
            send_id,
            seq_nr,
            ack_nr: 0,
            epoch: now,
            send_buf: VecDeque::new(),
            in_flight: VecDeque::new(),
            cur_window: 0,
            unacked_bytes: 0,
            max_window: INITIAL_WINDOW,
            slow_start: true,
            ssthresh: SEND_BUFFER as f64,
            peer_wnd: MAX_PAYLOAD,
            rtt: None,
            rto: INITIAL_RTO,
            timer: None,
            timeouts: 0,
            last_ack: seq_nr.wrapping_sub(1),
            dup_acks: 0,
            delays: DelayHistory::new(),
            close_requested: false,
            fin_queued: false,
            recv_buf: VecDeque::new(),
            reorder: VecDeque::new(),
            reorder_bytes: 0,
            eof: false,
            ack_pending: false,
            reply_micro: 0,
            last_heard: now,
            window_was_closed: false,
            syn_seq: None,
            syn_ack_pending: false,
        }
    }

    /// Opens a connection: the SYN goes out on the first `poll_transmit`.
    /// `recv_id` must be free among the caller's connections to this peer;
    /// `seq_nr` is the initial sequence number (random, so that an off-path
    /// host cannot guess it).
    pub fn connect(recv_id: u16, seq_nr: u16, cfg: UtpConfig, now: Instant) -> Self {
        let mut c = UtpConnection::new(cfg, recv_id, recv_id.wrapping_add(1), seq_nr, now);
        c.push_packet(PacketType::Syn, Vec::new());
        c
    }

    /// Accepts the SYN in `datagram`: the STATE answering it goes out on
    /// the first `poll_transmit`. `seq_nr` is our initial sequence number.
    pub fn accept(
        datagram: &[u8],
        seq_nr: u16,
        cfg: UtpConfig,
        now: Instant,
    ) -> Result<Self, UtpError> {
        let p = Packet::parse(datagram)?;
        if p.ty != PacketType::Syn {
            return Err(UtpError::Unexpected);
        }
        let mut c = UtpConnection::new(cfg, p.conn_id.wrapping_add(1), p.conn_id, seq_nr, now);
        c.state = State::Connected;
        c.ack_nr = p.seq_nr;
        c.syn_seq = Some(p.seq_nr);
        c.peer_wnd = p.wnd_size as usize;
        c.reply_micro = c.micros(now).wrapping_sub(p.timestamp);
        c.syn_ack_pending = true;
        Ok(c)
    }

    /// The id this connection receives on (what [`demux_id`] routes by).
    pub fn recv_id(&self) -> u16 {
        self.recv_id
    }

    /// Where the connection is.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether the handshake is done and the connection not ended.
    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Connected | State::Closing)
    }

    /// Whether the connection ended (closed, reset or timed out): nothing
    /// more will be sent.
    pub fn is_ended(&self) -> bool {
        matches!(self.state, State::Closed | State::Failed(_))
    }

    /// The error that ended the connection, if one did.
    pub fn error(&self) -> Option<UtpError> {
        match self.state {
            State::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the peer's stream ended (its FIN arrived in order) and
    /// every byte before it was read.
    pub fn is_eof(&self) -> bool {
        self.eof && self.recv_buf.is_empty()
    }

    /// Bytes `write` would accept now.
    pub fn send_capacity(&self) -> usize {
        if self.close_requested || self.is_ended() {
            return 0;
        }
        SEND_BUFFER.saturating_sub(self.send_buf.len() + self.unacked_bytes)
    }

    /// Whether everything written was acked.
    pub fn all_acked(&self) -> bool {
        self.send_buf.is_empty() && self.in_flight.is_empty()
    }

    /// Queues bytes to send; returns how many were taken (the send buffer
    /// is bounded by [`SEND_BUFFER`]).
    pub fn write(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.send_capacity());
        self.send_buf.extend(&bytes[..n]);
        n
    }

    /// Moves the bytes received in order to `out`; returns how many.
    pub fn read(&mut self, out: &mut Vec<u8>) -> usize {
        let n = self.recv_buf.len();
        let (a, b) = self.recv_buf.as_slices();
        out.extend_from_slice(a);
        out.extend_from_slice(b);
        self.recv_buf.clear();
        // A window that was closed is now open: tell the peer, or it waits
        // for its timeout.
        if n > 0 && self.window_was_closed && self.recv_window() >= MAX_PAYLOAD {
            self.ack_pending = true;
        }
        n
    }

    /// Ends our side: what was written is still sent, then a FIN. Reading
    /// goes on until the peer's FIN.
    pub fn close(&mut self) {
        if !self.is_ended() {
            self.close_requested = true;
            if self.state == State::Connected {
                self.state = State::Closing;
            }
        }
    }

    /// Aborts the connection: returns the RESET to send (none if it had
    /// already ended), after which the connection is failed with
    /// [`UtpError::Reset`] and sends nothing more.
    pub fn abort(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.is_ended() {
            return None;
        }
        let mut out = Vec::with_capacity(HEADER_LEN);
        let mut h = self.header(PacketType::Reset, self.seq_nr, None, &[], now);
        h.conn_id = self.send_id;
        h.encode(&mut out);
        self.fail(UtpError::Reset);
        Some(out)
    }

    fn micros(&self, now: Instant) -> u32 {
        // Truncation is the protocol's: timestamps wrap at 2^32 µs.
        now.saturating_duration_since(self.epoch).as_micros() as u32
    }

    fn recv_window(&self) -> usize {
        RECV_WINDOW.saturating_sub(self.recv_buf.len() + self.reorder_bytes)
    }

    fn push_packet(&mut self, ty: PacketType, payload: Vec<u8>) {
        self.cur_window += payload.len();
        self.unacked_bytes += payload.len();
        self.in_flight.push_back(Sent {
            seq: self.seq_nr,
            ty,
            payload,
            sent_at: None,
            transmissions: 0,
            need_resend: true,
            sacked: false,
        });
        self.seq_nr = self.seq_nr.wrapping_add(1);
    }

    fn fail(&mut self, e: UtpError) {
        self.state = State::Failed(e);
        self.timer = None;
        self.in_flight.clear();
        self.send_buf.clear();
        self.reorder.clear();
        self.reorder_bytes = 0;
    }

    /// Feeds one datagram from the peer. An `Err` means it was refused and
    /// changed nothing, except [`UtpError::Reset`], which ended the
    /// connection.
    pub fn handle_datagram(&mut self, datagram: &[u8], now: Instant) -> Result<(), UtpError> {
        if self.state == State::Closed {
            // The peer may not have our last ack (of its FIN): answer its
            // resends, nothing more.
            let p = Packet::parse(datagram)?;
            if p.conn_id == self.recv_id && matches!(p.ty, PacketType::Fin | PacketType::Data) {
                self.ack_pending = true;
            }
            return Err(UtpError::Ended);
        }
        if self.is_ended() {
            return Err(UtpError::Ended);
        }
        let p = Packet::parse(datagram)?;
        if p.ty == PacketType::Reset {
            // libutp takes a RESET naming either of the ids.
            if p.conn_id != self.recv_id && p.conn_id != self.send_id {
                return Err(UtpError::WrongConnection(p.conn_id));
            }
            self.fail(UtpError::Reset);
            return Err(UtpError::Reset);
        }
        if p.ty == PacketType::Syn {
            // Only the acceptor sees SYNs: a resent one means our STATE
            // was lost.
            if self.state == State::SynSent || p.conn_id != self.send_id {
                return Err(UtpError::WrongConnection(p.conn_id));
            }
            if Some(p.seq_nr) != self.syn_seq {
                return Err(UtpError::Unexpected);
            }
            self.syn_ack_pending = true;
            self.last_heard = now;
            return Ok(());
        }
        if p.conn_id != self.recv_id {
            return Err(UtpError::WrongConnection(p.conn_id));
        }
        // Refuse acks of what we never sent before touching anything.
        let last_sent = self.seq_nr.wrapping_sub(1);
        if seq_lt(last_sent, p.ack_nr) {
            return Err(UtpError::AckOutOfRange(p.ack_nr));
        }
        if self.state == State::SynSent {
            if p.ty != PacketType::State {
                return Err(UtpError::Unexpected);
            }
            self.state = if self.close_requested {
                State::Closing
            } else {
                State::Connected
            };
            self.ack_nr = p.seq_nr.wrapping_sub(1);
        }
        self.last_heard = now;
        self.reply_micro = self.micros(now).wrapping_sub(p.timestamp);
        self.peer_wnd = p.wnd_size as usize;
        self.process_ack(&p, now);
        match p.ty {
            PacketType::Data | PacketType::Fin => self.receive(p.ty, p.seq_nr, p.payload),
            _ => {}
        }
        // Closed once our FIN is acked and the peer's stream ended: until
        // then its data is still taken and acked.
        if self.state == State::Closing
            && self.eof
            && self.fin_queued
            && self.in_flight.is_empty()
            && self.send_buf.is_empty()
        {
            self.state = State::Closed;
            self.timer = None;
        }
        Ok(())
    }

    fn process_ack(&mut self, p: &Packet<'_>, now: Instant) {
        let ack = p.ack_nr;
        // Cumulative ack: pop what it covers. An ack older than what is in
        // flight (a reordered packet) pops nothing.
        let mut bytes_acked = 0usize;
        let mut progressed = false;
        while let Some(front) = self.in_flight.front() {
            if seq_lt(ack, front.seq) {
                break;
            }
            let Some(s) = self.in_flight.pop_front() else {
                break;
            };
            progressed = true;
            if !s.sacked {
                self.cur_window -= s.payload.len();
                bytes_acked += s.payload.len();
            }
            self.unacked_bytes -= s.payload.len();
            // Karn: only packets sent once; and not one selectively acked
            // before (sampled then: its cumulative ack waited for a hole
            // to fill, which is no round trip).
            if s.transmissions == 1 && !s.sacked {
                if let Some(t) = s.sent_at {
                    self.rtt_sample(now.saturating_duration_since(t));
                }
            }
        }
        // Selective ack: bit i of the mask is ack + 2 + i.
        let mut lost = false;
        if let Some(mask) = p.sack {
            let mut samples = Vec::new();
            for s in self.in_flight.iter_mut() {
                let off = s.seq.wrapping_sub(ack).wrapping_sub(2) as usize;
                let bit = mask.get(off / 8).is_some_and(|b| b & (1 << (off % 8)) != 0);
                if bit && !s.sacked {
                    s.sacked = true;
                    self.cur_window -= s.payload.len();
                    bytes_acked += s.payload.len();
                    if s.transmissions == 1 {
                        samples.extend(s.sent_at.map(|t| now.saturating_duration_since(t)));
                    }
                }
            }
            for d in samples {
                self.rtt_sample(d);
            }
            // Holes with three or more packets acked after them are lost
            // (libtorrent's rule): resend each once per round trip.
            let rtt = self.rto_base();
            let mut later = self.in_flight.iter().filter(|s| s.sacked).count();
            for s in self.in_flight.iter_mut() {
                if s.sacked {
                    later = later.saturating_sub(1);
                    continue;
                }
                if later >= 3
                    && !s.need_resend
                    && s.sent_at
                        .is_some_and(|t| now.saturating_duration_since(t) >= rtt)
                {
                    s.need_resend = true;
                    lost = true;
                }
            }
        }
        // Duplicate acks: three of the same with data outstanding.
        if !progressed && ack == self.last_ack && !self.in_flight.is_empty() && p.payload.is_empty()
        {
            self.dup_acks += 1;
            if self.dup_acks == 3 {
                if let Some(front) = self.in_flight.front_mut() {
                    front.need_resend = true;
                    lost = true;
                }
            }
        } else if progressed {
            self.dup_acks = 0;
        }
        if !seq_lt(ack, self.last_ack) {
            self.last_ack = ack;
        }
        if lost {
            self.on_loss();
        }
        if bytes_acked > 0 {
            self.ledbat(bytes_acked, p.timestamp_diff, now);
        }
        if progressed {
            self.timeouts = 0;
            self.rto = self.rto_from_rtt();
            self.timer = if self.in_flight.is_empty() {
                None
            } else {
                Some(now + self.rto)
            };
        }
    }

    fn rtt_sample(&mut self, sample: Duration) {
        let s = sample.as_secs_f64() * 1e6;
        self.rtt = Some(match self.rtt {
            None => (s, s / 2.0),
            Some((rtt, var)) => {
                let delta = rtt - s;
                let var = var + (delta.abs() - var) / 4.0;
                let rtt = rtt + (s - rtt) / 8.0;
                (rtt, var)
            }
        });
    }

    fn rto_from_rtt(&self) -> Duration {
        match self.rtt {
            None => INITIAL_RTO,
            Some((rtt, var)) => {
                Duration::from_micros((rtt + 4.0 * var) as u64).clamp(MIN_RTO, MAX_RTO)
            }
        }
    }

    /// A round trip, for pacing resends of sacked-over holes.
    fn rto_base(&self) -> Duration {
        match self.rtt {
            None => Duration::ZERO,
            Some((rtt, _)) => Duration::from_micros(rtt as u64),
        }
    }

    fn on_loss(&mut self) {
        self.slow_start = false;
        self.max_window = (self.max_window / 2.0).max(MIN_WINDOW);
        self.ssthresh = self.max_window;
    }

    fn ledbat(&mut self, bytes_acked: usize, their_delay: u32, now: Instant) {
        // A zero difference is a peer that has not heard from us yet.
        let our_delay = if their_delay == 0 {
            0.0
        } else {
            f64::from(self.delays.add(their_delay, now))
        };
        let off_target = TARGET_DELAY_US - our_delay;
        let acked = bytes_acked as f64;
        if self.slow_start && off_target > 0.0 {
            self.max_window += acked;
            if self.max_window >= self.ssthresh {
                self.slow_start = false;
            }
        } else {
            self.slow_start = false;
            let delay_factor = off_target / TARGET_DELAY_US;
            let window_factor = acked / self.max_window.max(MIN_WINDOW);
            self.max_window += MAX_CWND_INCREASE_PER_RTT * delay_factor * window_factor;
        }
        self.max_window = self.max_window.clamp(MIN_WINDOW, SEND_BUFFER as f64);
    }

    fn receive(&mut self, ty: PacketType, seq: u16, payload: &[u8]) {
        self.ack_pending = true;
        if self.eof {
            return;
        }
        let next = self.ack_nr.wrapping_add(1);
        if seq == next {
            if payload.len() > self.recv_window() {
                // No room: dropped unacked, the peer resends.
                return;
            }
            self.deliver(ty, payload);
            // The hole filled: what waited behind it follows.
            while let Some(Some(_)) = self.reorder.front() {
                if let Some(Some((t, data))) = self.reorder.pop_front() {
                    self.reorder_bytes -= data.len();
                    self.deliver(t, &data);
                }
            }
            if self.reorder.front().is_some() {
                // The slot for the new ack_nr + 1 was empty: shift.
                self.reorder.pop_front();
            }
            return;
        }
        if !seq_lt(next, seq) {
            // Already delivered: the ack we owe covers it.
            return;
        }
        let idx = seq.wrapping_sub(next).wrapping_sub(1) as usize;
        if idx >= REORDER_SLOTS || payload.len() > self.recv_window() {
            return;
        }
        while self.reorder.len() <= idx {
            self.reorder.push_back(None);
        }
        if self.reorder[idx].is_none() {
            self.reorder_bytes += payload.len();
            self.reorder[idx] = Some((ty, payload.to_vec()));
        }
    }

    fn deliver(&mut self, ty: PacketType, payload: &[u8]) {
        self.ack_nr = self.ack_nr.wrapping_add(1);
        if ty == PacketType::Fin {
            self.eof = true;
            self.reorder.clear();
            self.reorder_bytes = 0;
            return;
        }
        self.recv_buf.extend(payload);
    }

    /// The selective-ack mask for what the reorder buffer holds.
    fn sack_mask(&self) -> Option<Vec<u8>> {
        if self.reorder.iter().all(Option::is_none) {
            return None;
        }
        let bits = self.reorder.len().min(REORDER_SLOTS);
        let len = bits.div_ceil(32) * 4;
        let mut mask = vec![0u8; len];
        for (i, slot) in self.reorder.iter().enumerate().take(bits) {
            if slot.is_some() {
                mask[i / 8] |= 1 << (i % 8);
            }
        }
        Some(mask)
    }

    /// The next datagram to send, if any. Call until `None` after every
    /// event.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.state == State::Closed && self.ack_pending {
            // The ack of the peer's FIN, owed when the connection closed.
            self.ack_pending = false;
            let mut out = Vec::with_capacity(HEADER_LEN);
            self.header(PacketType::State, self.seq_nr, None, &[], now)
                .encode(&mut out);
            return Some(out);
        }
        if self.is_ended() {
            return None;
        }
        if self.syn_ack_pending {
            self.syn_ack_pending = false;
            self.ack_pending = false;
            let mut out = Vec::with_capacity(HEADER_LEN);
            self.header(PacketType::State, self.seq_nr, None, &[], now)
                .encode(&mut out);
            return Some(out);
        }
        // Resends first (including the SYN and its first send).
        if let Some(i) = self.in_flight.iter().position(|s| s.need_resend) {
            // The SYN before a STATE, and any resend, go out whatever the
            // window: one packet at a time.
            return Some(self.send_in_flight(i, now));
        }
        if self.state == State::SynSent {
            return None;
        }
        // New data, within the congestion window and the peer's window; one
        // packet is always allowed when none is in flight, which probes a
        // closed window.
        if !self.send_buf.is_empty() && self.in_flight.len() < usize::from(u16::MAX / 2) {
            let len = self.send_buf.len().min(MAX_PAYLOAD);
            let window = (self.max_window as usize).min(self.peer_wnd);
            if self.in_flight.is_empty() || self.cur_window + len <= window {
                let payload: Vec<u8> = self.send_buf.drain(..len).collect();
                self.push_packet(PacketType::Data, payload);
                let i = self.in_flight.len() - 1;
                return Some(self.send_in_flight(i, now));
            }
        }
        if self.close_requested && !self.fin_queued && self.send_buf.is_empty() {
            self.fin_queued = true;
            self.push_packet(PacketType::Fin, Vec::new());
            let i = self.in_flight.len() - 1;
            return Some(self.send_in_flight(i, now));
        }
        if self.ack_pending {
            self.ack_pending = false;
            let mut out = Vec::with_capacity(HEADER_LEN + 2 + MAX_SACK_LEN);
            let sack = self.sack_mask();
            self.header(PacketType::State, self.seq_nr, sack.as_deref(), &[], now)
                .encode(&mut out);
            return Some(out);
        }
        None
    }

    fn header<'a>(
        &mut self,
        ty: PacketType,
        seq: u16,
        sack: Option<&'a [u8]>,
        payload: &'a [u8],
        now: Instant,
    ) -> Packet<'a> {
        let wnd = self.recv_window();
        self.window_was_closed = wnd < MAX_PAYLOAD;
        Packet {
            ty,
            conn_id: if ty == PacketType::Syn {
                self.recv_id
            } else {
                self.send_id
            },
            timestamp: self.micros(now),
            timestamp_diff: self.reply_micro,
            wnd_size: u32::try_from(wnd).unwrap_or(u32::MAX),
            seq_nr: seq,
            ack_nr: self.ack_nr,
            sack,
            payload,
        }
    }

    fn send_in_flight(&mut self, i: usize, now: Instant) -> Vec<u8> {
        let sack = self.sack_mask();
        let (ty, seq, payload) = match self.in_flight.get_mut(i) {
            Some(s) => {
                s.need_resend = false;
                s.transmissions += 1;
                s.sent_at = Some(now);
                (s.ty, s.seq, std::mem::take(&mut s.payload))
            }
            None => return Vec::new(),
        };
        let mut out = Vec::with_capacity(HEADER_LEN + 2 + MAX_SACK_LEN + payload.len());
        self.header(ty, seq, sack.as_deref(), &payload, now)
            .encode(&mut out);
        if let Some(s) = self.in_flight.get_mut(i) {
            s.payload = payload;
        }
        // Every packet carries the ack we owed.
        self.ack_pending = false;
        if self.timer.is_none() {
            self.timer = Some(now + self.rto);
        }
        out
    }

    /// When `handle_timeout` wants to run next; `None` once ended.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_ended() {
            return None;
        }
        let idle = self.last_heard + self.cfg.idle_timeout;
        Some(self.timer.map_or(idle, |t| t.min(idle)))
    }

    /// Runs the timers: resends on the retransmission timeout, and fails
    /// the connection after too many of them or too long a silence.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_ended() {
            return;
        }
        if now >= self.last_heard + self.cfg.idle_timeout {
            self.fail(UtpError::Timeout);
            return;
        }
        let Some(t) = self.timer else {
            return;
        };
        if now < t {
            return;
        }
        if self.in_flight.is_empty() {
            self.timer = None;
            return;
        }
        self.timeouts += 1;
        let limit = if self.state == State::SynSent {
            MAX_SYN_SENDS
        } else {
            MAX_TIMEOUTS + 1
        };
        if self.timeouts >= limit {
            self.fail(UtpError::Timeout);
            return;
        }
        // BEP 29: the window drops to one packet and the oldest packet is
        // resent; the others follow as acks reopen the window (or are
        // found lost by selective acks).
        self.slow_start = false;
        self.ssthresh = (self.max_window / 2.0).max(MIN_WINDOW);
        self.max_window = MIN_WINDOW;
        self.dup_acks = 0;
        if let Some(front) = self.in_flight.iter_mut().find(|s| !s.sacked) {
            front.need_resend = true;
        }
        self.rto = (self.rto * 2).min(MAX_RTO);
        self.timer = Some(now + self.rto);
    }

    /// The congestion window in bytes (for tests and metrics).
    pub fn congestion_window(&self) -> usize {
        self.max_window as usize
    }

    /// Bytes held for reading or reordering (bounded by [`RECV_WINDOW`]).
    pub fn buffered(&self) -> usize {
        self.recv_buf.len() + self.reorder_bytes
    }

    /// The smoothed RTT, once measured.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt.map(|(r, _)| Duration::from_micros(r as u64))
    }
}

#[cfg(test)]
#[path = "utp_tests.rs"]
mod tests;
