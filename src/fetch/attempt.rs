//! One connection to one peer for one infohash: drives
//! [`MetadataFetch`] over a `shards` TCP connection.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use shards::timers::with_deadline;
use shards::{TcpConnector, TcpError};

use super::FailureKind;
use crate::id::Id;
use crate::wire::{FailReason, FetchConfig, MetadataFetch, Outcome, Verified};

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

/// Connects to `peer` and fetches `info_hash`'s metadata: the connect
/// within the TCP layer's timeout, then reads and writes within the
/// exchange's deadlines and byte budget. A connection lasts at most the
/// connect timeout plus [`FetchConfig::hard_deadline`], whatever the peer
/// does.
pub async fn attempt(
    tcp: &TcpConnector,
    peer: SocketAddr,
    info_hash: Id,
    peer_id: [u8; 20],
    cfg: FetchConfig,
) -> Result<Verified, AttemptError> {
    let mut conn = tcp.connect(peer).await?;
    let mut fetch = MetadataFetch::new(info_hash, peer_id, cfg, Instant::now());
    let mut out = Vec::with_capacity(256);
    let mut buf = vec![0u8; READ_BUF];
    let outcome = loop {
        out.clear();
        if fetch.poll_transmit(&mut out) > 0 {
            // Writes are held to the exchange's deadlines too: a peer that
            // stops reading cannot stall us past the hard deadline.
            let deadline = fetch
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            match with_deadline(deadline, conn.write_all(&out)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(AttemptError::Write(e)),
                Err(_) => {
                    fetch.handle_timeout(Instant::now());
                    if !fetch.is_finished() {
                        // Part of the message may be out: the stream cannot
                        // go on.
                        return Err(AttemptError::Write(io::ErrorKind::TimedOut.into()));
                    }
                }
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
            Ok(Ok(n)) => fetch.handle_data(&buf[..n.min(buf.len())], Instant::now()),
            Err(_) => fetch.handle_timeout(Instant::now()),
        }
    };
    // Dropping the connection closes it; a lingering close would only keep
    // a descriptor for a peer we are done with.
    drop(conn);
    match outcome {
        Outcome::Done(v) => Ok(v),
        Outcome::Failed(r) => Err(AttemptError::Exchange(r)),
    }
}
