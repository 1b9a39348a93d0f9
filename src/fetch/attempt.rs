//! One connection to one peer for one infohash: drives
//! [`MetadataFetch`] over a `shards` TCP connection, plain or behind an
//! MSE handshake ([`crate::wire::mse`]); and the per-peer sequence of such
//! connections that an [`EncryptionPolicy`] asks for.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use shards::timers::with_deadline;
use shards::{TcpConnector, TcpError};

use super::stats::{Handshake, Transport};
use super::utp::{attempt_utp, UtpMux};
use super::{FailureKind, FetchStats};
use crate::id::Id;
use crate::rng::Rng;
use crate::wire::mse::{Cipher, Methods, MseError, MseInitiator};
use crate::wire::utp::UtpError;
use crate::wire::{FailReason, FetchConfig, MetadataFetch, Outcome, Phase, Verified};

/// Read buffer per connection: one metadata piece plus framing fits.
const READ_BUF: usize = 17 * 1024;

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// The TCP layer refused or failed.
    #[error(transparent)]
    Tcp(#[from] TcpError),
    /// The exchange failed.
    #[error("{0}")]
    Exchange(FailReason),
    /// Writing to the peer failed.
    #[error("write: {0}")]
    Write(io::Error),
    /// The MSE handshake failed.
    #[error("mse: {0}")]
    Mse(MseError),
    /// The uTP connection failed (reset, timed out).
    #[error("utp: {0}")]
    Utp(UtpError),
    /// No uTP connection slot was free on this shard.
    #[error("utp: connection cap reached")]
    UtpCapped,
}

impl AttemptError {
    /// The failure's class, for counting.
    pub fn kind(&self) -> FailureKind {
        match self {
            AttemptError::Tcp(TcpError::ShardCap { .. } | TcpError::IpCap { .. }) => {
                FailureKind::Capped
            }
            AttemptError::Tcp(TcpError::Timeout { .. }) => FailureKind::Timeout,
            AttemptError::Tcp(TcpError::Io { .. }) => FailureKind::Refused,
            AttemptError::Write(_) => FailureKind::Closed,
            AttemptError::Mse(e) => match e {
                MseError::Timeout => FailureKind::Timeout,
                MseError::Closed => FailureKind::Closed,
                // A peer that answers our key with junk, or with fields the
                // spec forbids, is judged as one that sends junk.
                _ => FailureKind::Malformed,
            },
            AttemptError::UtpCapped => FailureKind::Capped,
            AttemptError::Utp(e) => match e {
                UtpError::Timeout => FailureKind::Timeout,
                UtpError::Reset => FailureKind::Refused,
                _ => FailureKind::Closed,
            },
            AttemptError::Exchange(r) => match r {
                FailReason::BadHandshake(_)
                | FailReason::InfoHashMismatch
                | FailReason::Malformed(_) => FailureKind::Malformed,
                FailReason::NoExtensionSupport
                | FailReason::NoUtMetadata
                | FailReason::NoMetadataSize => FailureKind::NoExtension,
                FailReason::MetadataTooLarge(_) | FailReason::FrameTooLarge(_) => {
                    FailureKind::Oversize
                }
                FailReason::Rejected => FailureKind::Reject,
                FailReason::HashMismatch => FailureKind::HashMismatch,
                FailReason::Timeout { .. } => FailureKind::Timeout,
                FailReason::Closed(_) => FailureKind::Closed,
                FailReason::ByteBudget { .. } => FailureKind::ByteBudget,
            },
        }
    }
}

/// Which wire, in which order, the fetcher tries on a peer
/// (`--encryption`). See `tuning/README.md` for the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum EncryptionPolicy {
    /// Plaintext only: never MSE.
    Off,
    /// Plaintext; when the peer hangs up on it during the handshake, a
    /// second connection with MSE.
    #[default]
    PlainFirst,
    /// MSE; when the peer hangs up on it during the MSE handshake, a second
    /// connection in plaintext.
    EncryptedFirst,
    /// MSE only.
    EncryptedOnly,
}

/// One connection's wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// The plaintext BT handshake.
    Plain,
    /// MSE first, offering RC4 and plaintext (the peer picks; clients that
    /// require encryption pick RC4).
    Mse,
}

impl EncryptionPolicy {
    /// The wires to try, in order.
    pub fn wires(self) -> &'static [Wire] {
        match self {
            EncryptionPolicy::Off => &[Wire::Plain],
            EncryptionPolicy::PlainFirst => &[Wire::Plain, Wire::Mse],
            EncryptionPolicy::EncryptedFirst => &[Wire::Mse, Wire::Plain],
            EncryptionPolicy::EncryptedOnly => &[Wire::Mse],
        }
    }

    /// The flag's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EncryptionPolicy::Off => "off",
            EncryptionPolicy::PlainFirst => "plain-first",
            EncryptionPolicy::EncryptedFirst => "encrypted-first",
            EncryptionPolicy::EncryptedOnly => "encrypted-only",
        }
    }
}

/// Which transports, in which order, the fetcher tries on a peer
/// (`--transport`). See `tuning/README.md` for the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TransportPolicy {
    /// TCP; when the peer refuses it, times out or closes during the
    /// handshake, uTP to the same address.
    #[default]
    TcpFirst,
    /// uTP; when it is reset or times out, TCP.
    UtpFirst,
    /// TCP only.
    TcpOnly,
    /// uTP only.
    UtpOnly,
}

impl TransportPolicy {
    /// The transports to try, in order.
    pub fn transports(self) -> &'static [Transport] {
        match self {
            TransportPolicy::TcpFirst => &[Transport::Tcp, Transport::Utp],
            TransportPolicy::UtpFirst => &[Transport::Utp, Transport::Tcp],
            TransportPolicy::TcpOnly => &[Transport::Tcp],
            TransportPolicy::UtpOnly => &[Transport::Utp],
        }
    }

    /// The flag's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportPolicy::TcpFirst => "tcp-first",
            TransportPolicy::UtpFirst => "utp-first",
            TransportPolicy::TcpOnly => "tcp-only",
            TransportPolicy::UtpOnly => "utp-only",
        }
    }
}

/// Whether a failed attempt is one the other transport may fix: the peer
/// was not reached, or hung up before the BT handshake (a uTP-only
/// libtorrent accepts TCP and closes it at once). A peer that answered with
/// junk, a reject or the wrong hash is the same client on either transport
/// and is not retried.
fn wants_other_transport(e: &AttemptError) -> bool {
    match e {
        AttemptError::Tcp(TcpError::Io { .. } | TcpError::Timeout { .. }) => true,
        AttemptError::Tcp(_) => false,
        AttemptError::Utp(_) | AttemptError::UtpCapped => true,
        AttemptError::Write(_) => true,
        AttemptError::Mse(e) => *e == MseError::Closed,
        AttemptError::Exchange(r) => *r == FailReason::Closed(Phase::Handshake),
    }
}

/// Fetches `infohash` from `peer` over the transports `transport` lists,
/// each with the wires `policy` lists on TCP (uTP carries the plaintext
/// wire only). The second transport gets fresh deadlines: the first one
/// spent at most its connect timeout (TCP's, or the uTP handshake's) plus
/// a hard deadline, and the job's `job_budget` bounds both together.
/// Without a uTP multiplexer (`utp` `None`) only TCP is tried.
#[allow(clippy::too_many_arguments)]
pub async fn attempt_peer_via(
    tcp: &TcpConnector,
    utp: Option<&Rc<UtpMux>>,
    peer: SocketAddr,
    infohash: Id,
    peer_id: [u8; 20],
    cfg: FetchConfig,
    policy: EncryptionPolicy,
    transport: TransportPolicy,
    stats: &FetchStats,
) -> Result<Verified, AttemptError> {
    let mut last = None;
    let mut tried = 0;
    for &t in transport.transports() {
        if t == Transport::Utp && utp.is_none() {
            continue;
        }
        if tried > 0 {
            stats
                .transport_fallbacks
                .set(stats.transport_fallbacks.get() + 1);
        }
        let r = match utp {
            Some(mux) if t == Transport::Utp => {
                attempt_utp(mux, peer, infohash, peer_id, cfg, Instant::now(), stats).await
            }
            _ => attempt_peer(tcp, peer, infohash, peer_id, cfg, policy, stats).await,
        };
        tried += 1;
        match r {
            Ok(v) => return Ok(v),
            Err(e) => {
                let again = wants_other_transport(&e);
                last = Some(e);
                if !again {
                    break;
                }
            }
        }
    }
    Err(last.unwrap_or(AttemptError::UtpCapped))
}

/// Whether a failed connection is the kind a peer that wants the other wire
/// produces: it hung up (or reset) during the handshake, before anything
/// else went wrong. A libtorrent peer with forced encryption closes on a
/// plaintext handshake at once; one without MSE closes on our key (which
/// it reads as a bad BT handshake). Timeouts are not retried: the second
/// connection would have no time left (see [`attempt_peer`]).
fn wants_other_wire(e: &AttemptError) -> bool {
    match e {
        AttemptError::Tcp(_) | AttemptError::Utp(_) | AttemptError::UtpCapped => false,
        AttemptError::Write(e) => e.kind() != io::ErrorKind::TimedOut,
        AttemptError::Mse(e) => *e == MseError::Closed,
        AttemptError::Exchange(r) => *r == FailReason::Closed(Phase::Handshake),
    }
}

/// Fetches `infohash` from `peer` with the wires `policy` lists: a second
/// connection only when the first was closed during its handshake.
///
/// **Deadlines are not doubled.** Every connection's exchange runs against
/// deadlines counted from the *first* connection's start (the handshake
/// timeout, idle timeout and hard deadline of [`FetchConfig`]), so the two
/// connections together last at most twice the TCP layer's connect timeout
/// plus one hard deadline, and a fallback gets only what the first
/// connection left of the handshake timeout. The job's own `job_budget`
/// bounds it all again.
#[allow(clippy::too_many_arguments)]
pub async fn attempt_peer(
    tcp: &TcpConnector,
    peer: SocketAddr,
    infohash: Id,
    peer_id: [u8; 20],
    cfg: FetchConfig,
    policy: EncryptionPolicy,
    stats: &FetchStats,
) -> Result<Verified, AttemptError> {
    let started = Instant::now();
    let wires = policy.wires();
    let mut last = None;
    for (i, &wire) in wires.iter().enumerate() {
        if i > 0 {
            stats.fallbacks.set(stats.fallbacks.get() + 1);
        }
        match attempt(tcp, peer, infohash, peer_id, cfg, wire, started, stats).await {
            Ok(v) => return Ok(v),
            Err(e) => {
                let again = wants_other_wire(&e);
                last = Some(e);
                if !again {
                    break;
                }
            }
        }
    }
    Err(last.unwrap_or(AttemptError::Exchange(FailReason::Closed(Phase::Handshake))))
}

/// Writes `out` (encrypted first when a cipher is set) within `deadline`.
async fn write_within(
    conn: &mut shards::TcpConn,
    out: &mut [u8],
    cipher: Option<&mut Cipher>,
    deadline: Instant,
) -> Result<(), AttemptError> {
    if let Some(c) = cipher {
        c.encrypt(out);
    }
    match with_deadline(deadline, conn.write_all(out)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(AttemptError::Write(e)),
        // Part of the message may be out: the stream cannot go on.
        Err(_) => Err(AttemptError::Write(io::ErrorKind::TimedOut.into())),
    }
}

/// The MSE handshake on `conn`, within the fetch's handshake timeout
/// counted from `started`.
async fn mse_handshake(
    conn: &mut shards::TcpConn,
    infohash: Id,
    cfg: &FetchConfig,
    started: Instant,
    buf: &mut [u8],
) -> Result<crate::wire::mse::Established, MseError> {
    let deadline = started + cfg.handshake_timeout.min(cfg.hard_deadline);
    let mut mse = MseInitiator::new(infohash, Methods::Either, deadline, Rng::from_entropy());
    let mut out = Vec::with_capacity(256);
    loop {
        out.clear();
        if mse.poll_transmit(&mut out) > 0
            && write_within(conn, &mut out, None, deadline).await.is_err()
        {
            // A peer that stops reading or resets mid-handshake.
            mse.handle_eof();
        }
        if let Some(r) = mse.poll_outcome() {
            return r;
        }
        match with_deadline(deadline, conn.read(buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => mse.handle_eof(),
            Ok(Ok(n)) => mse.handle_data(&buf[..n.min(buf.len())]),
            Err(_) => mse.handle_timeout(Instant::now()),
        }
    }
}

/// Connects to `peer` and fetches `infohash`'s metadata over `wire`: the
/// connect within the TCP layer's timeout, then reads and writes within the
/// exchange's deadlines (counted from `started`) and byte budget. A
/// connection lasts at most the connect timeout plus
/// [`FetchConfig::hard_deadline`], whatever the peer does.
#[allow(clippy::too_many_arguments)]
pub async fn attempt(
    tcp: &TcpConnector,
    peer: SocketAddr,
    infohash: Id,
    peer_id: [u8; 20],
    cfg: FetchConfig,
    wire: Wire,
    started: Instant,
    stats: &FetchStats,
) -> Result<Verified, AttemptError> {
    let mut conn = tcp.connect(peer).await?;
    stats.count_transport(Transport::Tcp);
    let mut buf = vec![0u8; READ_BUF];
    let mut fetch = MetadataFetch::new(infohash, peer_id, cfg, started);
    let mut cipher = None;
    match wire {
        Wire::Plain => stats.count_handshake(Handshake::Plain),
        Wire::Mse => match mse_handshake(&mut conn, infohash, &cfg, started, &mut buf).await {
            Ok(e) => {
                stats.count_handshake(if e.cipher.is_some() {
                    Handshake::MseRc4
                } else {
                    Handshake::MsePlaintext
                });
                cipher = e.cipher;
                if !e.payload.is_empty() {
                    fetch.handle_data(&e.payload, Instant::now());
                }
            }
            Err(e) => {
                stats.count_mse_failure(&e);
                return Err(AttemptError::Mse(e));
            }
        },
    }
    let mut out = Vec::with_capacity(256);
    let outcome = loop {
        out.clear();
        if fetch.poll_transmit(&mut out) > 0 {
            // Writes are held to the exchange's deadlines too: a peer that
            // stops reading cannot stall us past the hard deadline.
            let deadline = fetch
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            match write_within(&mut conn, &mut out, cipher.as_mut(), deadline).await {
                Ok(()) => {}
                Err(AttemptError::Write(e)) if e.kind() == io::ErrorKind::TimedOut => {
                    fetch.handle_timeout(Instant::now());
                    if !fetch.is_finished() {
                        return Err(AttemptError::Write(e));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(o) = fetch.poll_outcome() {
            break o;
        }
        let deadline = fetch
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        match with_deadline(deadline, conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => fetch.handle_eof(Instant::now()),
            Ok(Ok(n)) => {
                let got = &mut buf[..n.min(READ_BUF)];
                if let Some(c) = cipher.as_mut() {
                    c.decrypt(got);
                }
                fetch.handle_data(got, Instant::now());
            }
            Err(_) => fetch.handle_timeout(Instant::now()),
        }
    };
    // Dropping the connection closes it; a lingering close would only keep
    // a descriptor for a peer we are done with.
    drop(conn);
    match outcome {
        Outcome::Done(v) => {
            stats.count_transport_ok(Transport::Tcp);
            Ok(v)
        }
        Outcome::Failed(r) => Err(AttemptError::Exchange(r)),
    }
}
