//! Fetch counters, kept in `Cell`s: a pool lives on one shard.

use std::cell::Cell;

use crate::filter::Rejection;

/// Why one attempt (one peer) or one job failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The connection was refused or reset before the handshake.
    Refused,
    /// Connect, handshake, idle or hard deadline.
    Timeout,
    /// The peer lacks BEP 10, ut_metadata or metadata_size.
    NoExtension,
    /// The peer rejected our request.
    Reject,
    /// The metadata did not hash to the infohash.
    HashMismatch,
    /// metadata_size or a frame over the caps.
    Oversize,
    /// The peer sent more than the connection's byte budget (junk).
    ByteBudget,
    /// Any other protocol violation (bad handshake, wrong infohash, bad pieces).
    Malformed,
    /// The peer closed mid-exchange.
    Closed,
    /// The TCP layer's connection caps were full.
    Capped,
    /// The peer (or its IPv6 /64) is penalised: it lied, sent junk, or
    /// timed out repeatedly, recently. Skipped, not connected to.
    Penalised,
    /// The peer's port is below 1024 and privileged ports are not allowed.
    /// Skipped, not connected to.
    PrivilegedPort,
    /// A job with no peer left to try.
    NoPeers,
    /// Verified bytes that are not a usable info dictionary.
    Unparsable,
    /// The store is gone (shutting down).
    StoreClosed,
}

impl FailureKind {
    /// Every kind, in report order.
    pub const ALL: [FailureKind; 15] = [
        FailureKind::Refused,
        FailureKind::Timeout,
        FailureKind::NoExtension,
        FailureKind::Reject,
        FailureKind::HashMismatch,
        FailureKind::Oversize,
        FailureKind::ByteBudget,
        FailureKind::Malformed,
        FailureKind::Closed,
        FailureKind::Capped,
        FailureKind::Penalised,
        FailureKind::PrivilegedPort,
        FailureKind::NoPeers,
        FailureKind::Unparsable,
        FailureKind::StoreClosed,
    ];

    /// The label used in metrics and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Refused => "refused",
            FailureKind::Timeout => "timeout",
            FailureKind::NoExtension => "no_extension",
            FailureKind::Reject => "reject",
            FailureKind::HashMismatch => "hash_mismatch",
            FailureKind::Oversize => "oversize",
            FailureKind::ByteBudget => "byte_budget",
            FailureKind::Malformed => "malformed",
            FailureKind::Closed => "closed",
            FailureKind::Capped => "capped",
            FailureKind::Penalised => "penalised",
            FailureKind::PrivilegedPort => "privileged_port",
            FailureKind::NoPeers => "no_peers",
            FailureKind::Unparsable => "unparsable",
            FailureKind::StoreClosed => "store_closed",
        }
    }

    /// Whether the peer lied or sent junk and should be skipped for a
    /// while (timeouts are judged apart: one only puts a peer last).
    pub fn penalises(self) -> bool {
        matches!(
            self,
            FailureKind::HashMismatch
                | FailureKind::Malformed
                | FailureKind::Oversize
                | FailureKind::ByteBudget
        )
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Per-pool counters.
#[derive(Debug, Default)]
pub struct FetchStats {
    /// Jobs accepted into the queue.
    pub queued: Cell<u64>,
    /// Jobs handed back because the queue was full.
    pub rejected: Cell<u64>,
    /// Jobs running now.
    pub running: Cell<u64>,
    /// Torrents fetched, verified and sent to the store.
    pub fetched: Cell<u64>,
    /// Jobs that ended without metadata.
    pub jobs_failed: Cell<u64>,
    /// Sum of successful jobs' durations, microseconds.
    pub fetch_micros: Cell<u64>,
    /// Attempts that waited for a connection slot (the shard's or a peer
    /// IP's cap) instead of failing.
    pub deferred: Cell<u64>,
    /// Connection-slot time used, microseconds (all attempts).
    pub slot_micros: Cell<u64>,
    /// Jobs stopped by their time budget with attempts still running.
    pub over_budget: Cell<u64>,
    /// Jobs that waited for the database to be under `--max-db-size`
    /// before fetching.
    pub db_full_waits: Cell<u64>,
    failures: [Cell<u64>; FailureKind::ALL.len()],
    filtered: [Cell<u64>; Rejection::ALL.len()],
    handshakes: [Cell<u64>; Handshake::ALL.len()],
    /// MSE handshakes that failed (any reason; also counted as the
    /// attempt's [`FailureKind`] when no fallback followed).
    pub mse_failed: Cell<u64>,
    /// Attempts retried on a second connection with the other wire
    /// ([`crate::fetch::EncryptionPolicy`]).
    pub fallbacks: Cell<u64>,
    transports: [Cell<u64>; Transport::ALL.len()],
    transport_ok: [Cell<u64>; Transport::ALL.len()],
    /// uTP connections that failed in the transport (reset, timed out,
    /// refused for capacity), not in the exchange.
    pub utp_failed: Cell<u64>,
    /// Attempts that tried the other transport after the first failed
    /// ([`crate::fetch::TransportPolicy`]).
    pub transport_fallbacks: Cell<u64>,
}

/// Which transport carried a connection, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// TCP.
    Tcp,
    /// uTP (BEP 29) on the shard's UDP socket.
    Utp,
}

impl Transport {
    /// Every transport, in report order.
    pub const ALL: [Transport; 2] = [Transport::Tcp, Transport::Utp];

    /// The label used in metrics and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Utp => "utp",
        }
    }
}

/// How a connection's peer-wire handshake went out, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Handshake {
    /// A plaintext BT handshake, no MSE.
    Plain,
    /// MSE, RC4 selected.
    MseRc4,
    /// MSE, plaintext selected after the obfuscated handshake.
    MsePlaintext,
}

impl Handshake {
    /// Every mode, in report order.
    pub const ALL: [Handshake; 3] = [Handshake::Plain, Handshake::MseRc4, Handshake::MsePlaintext];

    /// The label used in metrics and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Handshake::Plain => "plain",
            Handshake::MseRc4 => "mse_rc4",
            Handshake::MsePlaintext => "mse_plaintext",
        }
    }
}

impl FetchStats {
    /// Counts one failure.
    pub fn count_failure(&self, kind: FailureKind) {
        let c = &self.failures[kind.index()];
        c.set(c.get() + 1);
        metrics::counter!("dht_hunter_fetch_failures_total", "reason" => kind.as_str())
            .increment(1);
    }

    /// Failures of one kind.
    pub fn failures(&self, kind: FailureKind) -> u64 {
        self.failures[kind.index()].get()
    }

    /// Counts one torrent refused by the content filter.
    pub fn count_filtered(&self, why: Rejection) {
        let c = &self.filtered[why as usize];
        c.set(c.get() + 1);
    }

    /// Torrents refused by the content filter for `why`.
    pub fn filtered(&self, why: Rejection) -> u64 {
        self.filtered[why as usize].get()
    }

    /// Torrents refused by the content filter, every reason.
    pub fn filtered_total(&self) -> u64 {
        self.filtered.iter().map(Cell::get).sum()
    }

    /// Counts one connection whose handshake went out as `mode` (for MSE:
    /// one whose MSE handshake completed).
    pub fn count_handshake(&self, mode: Handshake) {
        let c = &self.handshakes[mode as usize];
        c.set(c.get() + 1);
        metrics::counter!("dht_hunter_fetch_handshakes_total", "mode" => mode.as_str())
            .increment(1);
    }

    /// Connections counted for `mode`.
    pub fn handshakes(&self, mode: Handshake) -> u64 {
        self.handshakes[mode as usize].get()
    }

    /// Counts one failed MSE handshake.
    pub fn count_mse_failure(&self, e: &crate::wire::mse::MseError) {
        self.mse_failed.set(self.mse_failed.get() + 1);
        metrics::counter!("dht_hunter_fetch_mse_failures_total", "reason" => e.label())
            .increment(1);
    }

    /// Counts one connection established over `t` (TCP connected, uTP
    /// handshake done).
    pub fn count_transport(&self, t: Transport) {
        let c = &self.transports[t as usize];
        c.set(c.get() + 1);
        metrics::counter!("dht_hunter_fetch_connections_total", "transport" => t.as_str())
            .increment(1);
    }

    /// Connections established over `t`.
    pub fn transports(&self, t: Transport) -> u64 {
        self.transports[t as usize].get()
    }

    /// Counts one verified fetch over `t`.
    pub fn count_transport_ok(&self, t: Transport) {
        let c = &self.transport_ok[t as usize];
        c.set(c.get() + 1);
        metrics::counter!("dht_hunter_fetch_verified_total", "transport" => t.as_str())
            .increment(1);
    }

    /// Verified fetches over `t`.
    pub fn transport_ok(&self, t: Transport) -> u64 {
        self.transport_ok[t as usize].get()
    }

    /// Counts one uTP connection that failed in the transport.
    pub fn count_utp_failure(&self, e: &crate::wire::utp::UtpError) {
        self.utp_failed.set(self.utp_failed.get() + 1);
        metrics::counter!("dht_hunter_fetch_utp_failures_total", "reason" => e.label())
            .increment(1);
    }
}
