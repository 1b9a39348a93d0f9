//! [`MetadataFetch`]: fetching one torrent's info dictionary from one peer.
//!
//! See the [module docs](super) for the design. The connection goes through
//! three [`Phase`]s: the peer's BT handshake, its extension handshake, then the
//! transfer of the pieces. Every failure is terminal and reported once through
//! [`MetadataFetch::poll_outcome`]; after that every `handle_*` call is a
//! no-op.

use std::time::{Duration, Instant};

use crate::bencode::{Limits, Parser};
use crate::id::Id;
use crate::metainfo::infohash_matches;
pub use crate::metainfo::HashKind;

use super::extension::{
    encode_handshake, parse_handshake, ExtId, ExtensionError, EXT_HANDSHAKE, MAX_EXT_HANDSHAKE,
};
use super::framing::{FrameReader, FrameTooLarge, Policy, Step, MSG_EXTENDED};
use super::handshake::{Handshake, HandshakeError, HandshakeReader};
use super::metadata::{
    encode_request, parse, piece_count, piece_len, MetadataMsg, MetadataMsgError, MAX_MESSAGE,
    PIECE_SIZE,
};

/// The id we ask peers to tag their `ut_metadata` messages with.
pub const OUR_UT_METADATA: u8 = 1;

/// The length prefix in front of every peer-wire message.
const LEN_PREFIX: u64 = 4;

/// The client name sent in our extension handshake (`v`).
pub const CLIENT_NAME: &[u8] = b"DHT-Hunter 0.1";

/// Knobs of one fetch. The defaults are explained field by field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchConfig {
    /// Largest `metadata_size` accepted: 10 MiB, as magnetico and mldht's
    /// defaults in practice (real info dictionaries are rarely over 1 MiB;
    /// libtorrent allows 30 MiB, rqbit 32 MiB). Checked before anything is
    /// allocated for the metadata.
    pub max_metadata_size: usize,
    /// From the start until the peer's BT handshake **and** its extension
    /// handshake are in: 10 s, libtorrent's `handshake_timeout`.
    pub handshake_timeout: Duration,
    /// Longest silence (no byte received) tolerated: 25 s, mldht's metadata
    /// timeout. Keep-alives count as bytes.
    pub idle_timeout: Duration,
    /// The whole fetch, whatever the peer does: 30 s. This is what ends a
    /// peer that trickles a byte at a time (which never trips the idle
    /// timeout) or sends keep-alives forever; 30 s is ample for a fetch that
    /// is normally a few round trips of 16 KiB.
    pub hard_deadline: Duration,
    /// Bytes a peer may send on one connection beyond what the pieces we
    /// requested can take (one data message of at most 17 KiB each): 2 MiB.
    /// An honest peer's extra is its handshakes (68 B and at most 64 KiB),
    /// a bitfield (one bit a piece: 128 KiB even for a million pieces, and
    /// never over the 1 MiB frame cap) and a few have, PEX or port
    /// messages, so 2 MiB holds the largest legal frame twice over. Without
    /// it, a peer streaming skipped messages (or keep-alives) as fast as the
    /// link allows costs us bandwidth and CPU until the hard deadline:
    /// 30 s × line rate, gigabytes.
    pub byte_budget: usize,
    /// Requests outstanding at once: 2, as libtorrent's `ut_metadata`.
    pub max_requests_in_flight: usize,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            max_metadata_size: 10 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(25),
            hard_deadline: Duration::from_secs(30),
            byte_budget: 2 * 1024 * 1024,
            max_requests_in_flight: 2,
        }
    }
}

/// Where the exchange was when it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Waiting for the peer's 68-byte BT handshake.
    Handshake,
    /// Waiting for the peer's extension handshake.
    ExtensionHandshake,
    /// Requesting and receiving pieces.
    Transfer,
}

/// Which deadline expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Deadline {
    /// [`FetchConfig::handshake_timeout`].
    Handshake,
    /// [`FetchConfig::idle_timeout`].
    Idle,
    /// [`FetchConfig::hard_deadline`].
    Hard,
}

/// The peer broke the protocol in a way that is not a size or timing issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// The extension handshake could not be parsed.
    #[error("{0}")]
    ExtHandshake(#[from] ExtensionError),
    /// `metadata_size` of 0 or below.
    #[error("metadata_size {0} is not positive")]
    MetadataSizeNotPositive(i64),
    /// A repeated extension handshake changed `metadata_size`.
    #[error("metadata_size changed from {was} to {now}")]
    MetadataSizeChanged {
        /// The size accepted first.
        was: usize,
        /// The new value.
        now: i64,
    },
    /// A `ut_metadata` message could not be parsed.
    #[error("{0}")]
    Message(#[from] MetadataMsgError),
    /// A data message without `total_size`.
    #[error("data message without total_size")]
    NoTotalSize,
    /// A data message whose `total_size` differs from `metadata_size`.
    #[error("total_size {got} differs from metadata_size {advertised}")]
    TotalSizeMismatch {
        /// `metadata_size` from the extension handshake.
        advertised: usize,
        /// `total_size` in the data message.
        got: i64,
    },
    /// A data message for a piece that does not exist.
    #[error("piece {0} out of range")]
    PieceOutOfRange(i64),
    /// A data message for a piece not requested, or already received.
    #[error("unsolicited piece {0}")]
    Unsolicited(i64),
    /// A data message with nothing after its dictionary.
    #[error("data message for piece {0} carries no bytes")]
    EmptyPiece(u32),
    /// The whole metadata sent as piece 0 of a multi-piece transfer.
    #[error("the whole metadata sent as piece 0")]
    WholeMetadataAsPiece0,
    /// A piece of the wrong length: a non-final piece that is not 16384
    /// bytes, or a final piece that is not exactly the remainder.
    #[error("piece {piece} is {got} bytes, expected {expected}")]
    WrongPieceLength {
        /// The piece index.
        piece: u32,
        /// The required length.
        expected: usize,
        /// The length received.
        got: usize,
    },
    /// The assembled metadata matched the hash but is not one bencoded
    /// dictionary.
    #[error("metadata is not a bencoded dictionary")]
    NotADictionary,
}

/// Why a fetch failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FailReason {
    /// The peer's handshake is not a BitTorrent handshake.
    #[error("bad handshake: {0}")]
    BadHandshake(#[from] HandshakeError),
    /// The peer answered for another torrent.
    #[error("peer echoed another infohash")]
    InfoHashMismatch,
    /// The peer did not set the extension-protocol bit.
    #[error("peer does not support the extension protocol")]
    NoExtensionSupport,
    /// The peer did not offer `ut_metadata`, or disabled it.
    #[error("peer does not offer ut_metadata")]
    NoUtMetadata,
    /// The extension handshake carried no `metadata_size`.
    #[error("peer did not announce metadata_size")]
    NoMetadataSize,
    /// `metadata_size` over [`FetchConfig::max_metadata_size`].
    #[error("metadata_size {0} over the cap")]
    MetadataTooLarge(i64),
    /// A message over the 1 MiB frame limit or its kind's own limit.
    #[error("{0}")]
    FrameTooLarge(#[from] FrameTooLarge),
    /// Any other protocol violation.
    #[error("malformed: {0}")]
    Malformed(#[from] Malformed),
    /// The peer rejected a request (`msg_type` 2): try another peer.
    #[error("peer rejected the request")]
    Rejected,
    /// The metadata matched neither SHA-1 nor truncated SHA-256.
    #[error("metadata does not hash to the infohash")]
    HashMismatch,
    /// A deadline expired.
    #[error("{deadline:?} timeout during {phase:?}")]
    Timeout {
        /// Which one.
        deadline: Deadline,
        /// Where the exchange was.
        phase: Phase,
    },
    /// The peer closed the connection.
    #[error("connection closed during {0:?}")]
    Closed(Phase),
    /// The peer sent more than [`FetchConfig::byte_budget`] beyond the
    /// pieces requested.
    #[error("peer sent {received} bytes, over the connection's byte budget, during {phase:?}")]
    ByteBudget {
        /// Bytes received in all.
        received: u64,
        /// Where the exchange was.
        phase: Phase,
    },
}

/// Verified metadata: exactly the bytes that hashed to the infohash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The raw, bencoded info dictionary.
    pub info: Vec<u8>,
    /// Which hash matched.
    pub hash_kind: HashKind,
}

/// The end of a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The metadata was received and verified.
    Done(Verified),
    /// The fetch failed; the connection should be closed.
    Failed(FailReason),
}

/// The pieces being transferred.
#[derive(Debug)]
struct Transfer {
    size: usize,
    pieces: usize,
    next: usize,
    in_flight: Vec<u32>,
    received: usize,
    /// Grows with the pieces received, never ahead of them by more than a
    /// doubling (capped at `size`).
    buf: Vec<u8>,
}

/// One TCP connection to one peer, fetching one infohash's metadata.
///
/// Sans-IO: feed it what the socket read ([`handle_data`](Self::handle_data)),
/// the end of the stream ([`handle_eof`](Self::handle_eof)) and the clock
/// ([`handle_timeout`](Self::handle_timeout) when
/// [`poll_timeout`](Self::poll_timeout) has passed); write what
/// [`poll_transmit`](Self::poll_transmit) hands out; stop when
/// [`poll_outcome`](Self::poll_outcome) returns something.
#[derive(Debug)]
pub struct MetadataFetch {
    infohash: Id,
    cfg: FetchConfig,
    started: Instant,
    last_rx: Instant,
    /// Bytes received so far.
    received: u64,
    phase: Phase,
    hs: HandshakeReader,
    frames: FrameReader,
    peer: Option<Handshake>,
    peer_ut_id: Option<u8>,
    peer_client: Option<Vec<u8>>,
    size: Option<usize>,
    transfer: Option<Transfer>,
    out: Vec<u8>,
    finished: bool,
    outcome: Option<Outcome>,
    peak_capacity: usize,
}

fn later(t: Instant, d: Duration) -> Option<Instant> {
    t.checked_add(d)
}

impl MetadataFetch {
    /// Starts a fetch; our BT handshake and extension handshake are queued
    /// for [`poll_transmit`](Self::poll_transmit) at once (the extension
    /// handshake may be sent before the peer's handshake is seen, since ours
    /// advertises the extension bit).
    pub fn new(infohash: Id, our_peer_id: [u8; 20], cfg: FetchConfig, now: Instant) -> Self {
        let mut cfg = cfg;
        cfg.max_requests_in_flight = cfg.max_requests_in_flight.max(1);
        let mut out = Vec::with_capacity(160);
        Handshake::ours(infohash, our_peer_id).encode(&mut out);
        encode_handshake(&mut out, OUR_UT_METADATA, None, Some(250), CLIENT_NAME);
        MetadataFetch {
            infohash,
            cfg,
            started: now,
            last_rx: now,
            received: 0,
            phase: Phase::Handshake,
            hs: HandshakeReader::new(),
            frames: FrameReader::new(),
            peer: None,
            peer_ut_id: None,
            peer_client: None,
            size: None,
            transfer: None,
            out,
            finished: false,
            outcome: None,
            peak_capacity: 0,
        }
    }

    /// Appends the bytes to write to the socket to `out`; returns how many.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        let n = self.out.len();
        out.append(&mut self.out);
        n
    }

    /// Bytes read from the socket, split however the network split them.
    pub fn handle_data(&mut self, bytes: &[u8], now: Instant) {
        if self.finished || self.expire(now) {
            return;
        }
        if bytes.is_empty() {
            return;
        }
        self.last_rx = now;
        self.received = self.received.saturating_add(bytes.len() as u64);
        if self.received > self.byte_allowance() {
            return self.fail(FailReason::ByteBudget {
                received: self.received,
                phase: self.phase,
            });
        }
        let mut input = bytes;
        if self.phase == Phase::Handshake {
            match self.hs.feed(&mut input) {
                Err(e) => return self.fail(FailReason::BadHandshake(e)),
                Ok(None) => return,
                Ok(Some(hs)) => {
                    if hs.infohash != self.infohash {
                        return self.fail(FailReason::InfoHashMismatch);
                    }
                    if !hs.supports_extensions() {
                        return self.fail(FailReason::NoExtensionSupport);
                    }
                    self.peer = Some(hs);
                    self.phase = Phase::ExtensionHandshake;
                }
            }
        }
        while !self.finished {
            let step = self.frames.read(&mut input, |id, sub| match (id, sub) {
                (MSG_EXTENDED, Some(EXT_HANDSHAKE)) => Policy::Keep {
                    max_len: MAX_EXT_HANDSHAKE,
                },
                (MSG_EXTENDED, Some(OUR_UT_METADATA)) => Policy::Keep {
                    max_len: MAX_MESSAGE,
                },
                _ => Policy::Skip,
            });
            match step {
                Err(e) => self.fail(FailReason::FrameTooLarge(e)),
                Ok(Step::NeedMore) => {
                    self.note_peak();
                    break;
                }
                Ok(Step::KeepAlive | Step::Skipped { .. }) => {}
                Ok(Step::Message) => {
                    self.note_peak();
                    let msg = self.frames.take_message();
                    let r = self.on_message(&msg);
                    self.frames.recycle(msg);
                    if let Err(reason) = r {
                        self.fail(reason);
                    }
                }
            }
        }
    }

    /// The peer closed the connection (or it was reset).
    pub fn handle_eof(&mut self, now: Instant) {
        if self.finished || self.expire(now) {
            return;
        }
        self.fail(FailReason::Closed(self.phase));
    }

    /// The clock moved; fails the fetch if a deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.finished {
            self.expire(now);
        }
    }

    /// The next deadline, or `None` once the fetch is over.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        self.deadlines().into_iter().flatten().map(|(t, _)| t).min()
    }

    /// The outcome, once (then `None`).
    pub fn poll_outcome(&mut self) -> Option<Outcome> {
        self.outcome.take()
    }

    /// Whether the fetch is over (its outcome may already have been taken).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The peer's BT handshake, once received.
    pub fn peer_handshake(&self) -> Option<&Handshake> {
        self.peer.as_ref()
    }

    /// The peer's client name (`v`), if it sent one.
    pub fn peer_client(&self) -> Option<&[u8]> {
        self.peer_client.as_deref()
    }

    /// The accepted `metadata_size`.
    pub fn metadata_size(&self) -> Option<usize> {
        self.size
    }

    /// Bytes received from the peer so far.
    pub fn bytes_received(&self) -> u64 {
        self.received
    }

    /// Bytes the peer may have sent by now: the byte budget plus one
    /// largest data message (with its length prefix) per piece requested.
    fn byte_allowance(&self) -> u64 {
        let requested = self.transfer.as_ref().map_or(0, |t| t.next) as u64;
        let per_piece = u64::from(MAX_MESSAGE) + LEN_PREFIX;
        (self.cfg.byte_budget as u64).saturating_add(requested.saturating_mul(per_piece))
    }

    /// Bytes currently allocated on the peer's behalf (message buffer plus
    /// metadata buffer): a diagnostic, and what the tests bound.
    pub fn buffer_capacity(&self) -> usize {
        self.frames.buffer_capacity() + self.transfer.as_ref().map_or(0, |t| t.buf.capacity())
    }

    /// The largest [`buffer_capacity`](Self::buffer_capacity) seen, sampled
    /// after every message and before the buffers are freed at the end.
    pub fn peak_buffer_capacity(&self) -> usize {
        self.peak_capacity
    }

    fn note_peak(&mut self) {
        self.peak_capacity = self.peak_capacity.max(self.buffer_capacity());
    }

    fn deadlines(&self) -> [Option<(Instant, Deadline)>; 3] {
        [
            (self.phase != Phase::Transfer)
                .then(|| later(self.started, self.cfg.handshake_timeout))
                .flatten()
                .map(|t| (t, Deadline::Handshake)),
            later(self.last_rx, self.cfg.idle_timeout).map(|t| (t, Deadline::Idle)),
            later(self.started, self.cfg.hard_deadline).map(|t| (t, Deadline::Hard)),
        ]
    }

    /// Fails with the earliest deadline at or before `now`, if any.
    fn expire(&mut self, now: Instant) -> bool {
        let due = self
            .deadlines()
            .into_iter()
            .flatten()
            .filter(|(t, _)| *t <= now)
            .min_by_key(|(t, _)| *t);
        match due {
            Some((_, deadline)) => {
                self.fail(FailReason::Timeout {
                    deadline,
                    phase: self.phase,
                });
                true
            }
            None => false,
        }
    }

    fn fail(&mut self, reason: FailReason) {
        self.finish(Outcome::Failed(reason));
    }

    fn finish(&mut self, outcome: Outcome) {
        self.note_peak();
        self.finished = true;
        self.outcome = Some(outcome);
        self.transfer = None;
        self.frames.release();
        self.out = Vec::new();
    }

    /// One complete kept message: id 20, then the sub-id, then the payload.
    fn on_message(&mut self, msg: &[u8]) -> Result<(), FailReason> {
        let (sub, payload) = match msg {
            [_, sub, payload @ ..] => (*sub, payload),
            _ => return Ok(()),
        };
        if sub == EXT_HANDSHAKE {
            self.on_ext_handshake(payload)
        } else {
            self.on_ut_metadata(payload)
        }
    }

    fn on_ext_handshake(&mut self, payload: &[u8]) -> Result<(), FailReason> {
        let hs = parse_handshake(payload).map_err(Malformed::from)?;
        match hs.ut_metadata {
            ExtId::Id(id) => self.peer_ut_id = Some(id),
            ExtId::Disabled => return Err(FailReason::NoUtMetadata),
            ExtId::Absent if self.peer_ut_id.is_none() => return Err(FailReason::NoUtMetadata),
            ExtId::Absent => {}
        }
        match (hs.metadata_size, self.size) {
            (None, None) => return Err(FailReason::NoMetadataSize),
            (None, Some(_)) => {}
            (Some(n), _) if n <= 0 => return Err(Malformed::MetadataSizeNotPositive(n).into()),
            (Some(n), None) => {
                let size = usize::try_from(n)
                    .ok()
                    .filter(|s| *s <= self.cfg.max_metadata_size)
                    .ok_or(FailReason::MetadataTooLarge(n))?;
                self.size = Some(size);
            }
            (Some(n), Some(was)) => {
                if usize::try_from(n).ok() != Some(was) {
                    return Err(Malformed::MetadataSizeChanged { was, now: n }.into());
                }
            }
        }
        if hs.client.is_some() {
            self.peer_client = hs.client;
        }
        if self.transfer.is_none() {
            if let Some(size) = self.size {
                let pieces = piece_count(size);
                self.transfer = Some(Transfer {
                    size,
                    pieces,
                    next: 0,
                    in_flight: Vec::with_capacity(self.cfg.max_requests_in_flight.min(pieces)),
                    received: 0,
                    buf: Vec::new(),
                });
                self.phase = Phase::Transfer;
            }
        }
        self.pump_requests();
        Ok(())
    }

    fn pump_requests(&mut self) {
        let (Some(t), Some(peer_id)) = (self.transfer.as_mut(), self.peer_ut_id) else {
            return;
        };
        while t.in_flight.len() < self.cfg.max_requests_in_flight && t.next < t.pieces {
            let piece = t.next as u32;
            encode_request(&mut self.out, peer_id, piece);
            t.in_flight.push(piece);
            t.next += 1;
        }
    }

    fn on_ut_metadata(&mut self, payload: &[u8]) -> Result<(), FailReason> {
        let msg = parse(payload).map_err(Malformed::from)?;
        match msg {
            // We advertise no metadata: nothing to serve. Ignored, like
            // unknown message types.
            MetadataMsg::Request { .. } | MetadataMsg::Unknown { .. } => Ok(()),
            MetadataMsg::Reject { .. } => Err(FailReason::Rejected),
            MetadataMsg::Data {
                piece,
                total_size,
                data,
            } => {
                let t = self
                    .transfer
                    .as_mut()
                    .ok_or(Malformed::Unsolicited(piece))?;
                let total = total_size.ok_or(Malformed::NoTotalSize)?;
                if usize::try_from(total).ok() != Some(t.size) {
                    return Err(Malformed::TotalSizeMismatch {
                        advertised: t.size,
                        got: total,
                    }
                    .into());
                }
                let index = usize::try_from(piece)
                    .ok()
                    .filter(|i| *i < t.pieces)
                    .ok_or(Malformed::PieceOutOfRange(piece))?;
                let index32 = index as u32;
                let slot = t
                    .in_flight
                    .iter()
                    .position(|p| *p == index32)
                    .ok_or(Malformed::Unsolicited(piece))?;
                if data.is_empty() {
                    return Err(Malformed::EmptyPiece(index32).into());
                }
                let expected = piece_len(t.size, index);
                if data.len() != expected {
                    if index == 0 && t.pieces > 1 && data.len() == t.size {
                        return Err(Malformed::WholeMetadataAsPiece0.into());
                    }
                    return Err(Malformed::WrongPieceLength {
                        piece: index32,
                        expected,
                        got: data.len(),
                    }
                    .into());
                }
                let start = index * PIECE_SIZE;
                let end = start + expected;
                if t.buf.len() < end {
                    let target = end.max(t.buf.capacity().saturating_mul(2)).min(t.size);
                    if t.buf.capacity() < target {
                        t.buf.reserve_exact(target - t.buf.len());
                    }
                }
                // Pieces start on 16 KiB boundaries and the buffer always ends
                // on one (or at `size`), so a piece is either inside the
                // buffer, right after it, or after a gap left by a piece still
                // in flight (zero-filled until it arrives).
                if end <= t.buf.len() {
                    if let Some(dst) = t.buf.get_mut(start..end) {
                        dst.copy_from_slice(data);
                    }
                } else {
                    if t.buf.len() < start {
                        t.buf.resize(start, 0);
                    }
                    t.buf.truncate(start);
                    t.buf.extend_from_slice(data);
                }
                t.in_flight.swap_remove(slot);
                t.received += 1;
                if t.received == t.pieces {
                    let info = std::mem::take(&mut t.buf);
                    let outcome = self.verify(info)?;
                    self.finish(Outcome::Done(outcome));
                } else {
                    self.pump_requests();
                }
                Ok(())
            }
        }
    }

    fn verify(&self, info: Vec<u8>) -> Result<Verified, FailReason> {
        let hash_kind = infohash_matches(&info, &self.infohash).ok_or(FailReason::HashMismatch)?;
        // A hash match makes this near certain; check anyway, without
        // building a tree (the parser validates and allocates nothing).
        let mut p = Parser::new(&info, Limits::METADATA);
        let is_dict = info.first() == Some(&b'd') && p.skip().is_ok() && p.finish().is_ok();
        if !is_dict {
            return Err(Malformed::NotADictionary.into());
        }
        Ok(Verified { info, hash_kind })
    }
}
