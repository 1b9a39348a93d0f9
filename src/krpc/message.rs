//! Typed KRPC messages, decoded from the wire layer, and their encoders.
//!
//! This file is about 750 lines: every KRPC message type with its decoder and
//! its encoder side by side, so a field added to one is seen in the other.

use std::net::SocketAddr;

use super::compact::{self, NodeInfo, Nodes};
use super::raw::{self, RawBody, RawMessage, RawValues};
use super::scrape::{ScrapeBloom, BLOOM_BYTES};
use crate::bencode::{DecodeError, Encoder};
use crate::id::Id;

/// The largest datagram we ever send. Responses are built to stay under it
/// (BEP 32 asks for at most 1024-byte payloads where possible; the hard cap
/// that the issue and libtorrent's MTU assumptions set is 1500).
pub const MAX_DATAGRAM: usize = 1450;

/// Most values in one get_peers reply (libtorrent: 100, a quarter for IPv6).
pub const MAX_VALUES_V4: usize = 100;
/// See [`MAX_VALUES_V4`].
pub const MAX_VALUES_V6: usize = 25;

/// BEP 5 error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 201.
    Generic,
    /// 202.
    Server,
    /// 203: malformed packet, invalid arguments or bad token.
    Protocol,
    /// 204.
    MethodUnknown,
}

impl ErrorCode {
    /// The numeric code.
    pub fn code(self) -> i64 {
        match self {
            ErrorCode::Generic => 201,
            ErrorCode::Server => 202,
            ErrorCode::Protocol => 203,
            ErrorCode::MethodUnknown => 204,
        }
    }
}

/// `want` (BEP 32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Want {
    /// IPv4 nodes wanted.
    pub n4: bool,
    /// IPv6 nodes wanted.
    pub n6: bool,
}

impl Want {
    /// Whether the sender said anything.
    pub fn is_specified(&self) -> bool {
        self.n4 || self.n6
    }
}

/// A query method with its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method<'a> {
    /// `ping`.
    Ping,
    /// `find_node`.
    FindNode {
        /// `target`.
        target: Id,
    },
    /// `get_peers`.
    GetPeers {
        /// `infohash`.
        infohash: Id,
        /// BEP 33 `noseed`.
        noseed: bool,
        /// BEP 33 `scrape`.
        scrape: bool,
    },
    /// `announce_peer`.
    AnnouncePeer {
        /// `infohash`.
        infohash: Id,
        /// `port` (0 when absent and `implied_port` is set).
        port: u16,
        /// `implied_port`: use the UDP source port instead.
        implied_port: bool,
        /// `token`.
        token: &'a [u8],
        /// BEP 33 `seed`, when present (libtorrent always sends it, as 0
        /// or 1; keeping absence apart lets its queries re-encode exactly).
        seed: Option<bool>,
    },
    /// `sample_infohashes` (BEP 51).
    SampleInfohashes {
        /// `target`.
        target: Id,
    },
    /// A method we do not know, with a 20-byte `target` or `infohash` when
    /// it carried one (libtorrent answers those like find_node).
    Unknown {
        /// The method name.
        name: &'a [u8],
        /// `target`, else `infohash`, if 20 bytes.
        target: Option<Id>,
    },
}

impl Method<'_> {
    /// The method name on the wire.
    pub fn name(&self) -> &[u8] {
        match self {
            Method::Ping => b"ping",
            Method::FindNode { .. } => b"find_node",
            Method::GetPeers { .. } => b"get_peers",
            Method::AnnouncePeer { .. } => b"announce_peer",
            Method::SampleInfohashes { .. } => b"sample_infohashes",
            Method::Unknown { name, .. } => name,
        }
    }
}

/// A query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query<'a> {
    /// The sender's id.
    pub id: Id,
    /// The method.
    pub method: Method<'a>,
    /// `want`.
    pub want: Want,
    /// libtorrent's `bs = 1`: a bootstrap query whose sender asks not to be
    /// added to routing tables (treated like BEP 43 `ro`).
    pub bootstrap: bool,
}

/// A response body. KRPC responses do not name their method: the caller
/// knows it from the transaction and validates what it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    /// The responder's id.
    pub id: Id,
    /// `nodes`.
    pub nodes: Nodes<'a>,
    /// `nodes6`.
    pub nodes6: Nodes<'a>,
    /// `values`.
    pub values: Option<RawValues<'a>>,
    /// `token`.
    pub token: Option<&'a [u8]>,
    /// `samples`, raw.
    pub samples: Option<&'a [u8]>,
    /// `interval`.
    pub interval: Option<i64>,
    /// `num`.
    pub num: Option<i64>,
    /// BEP 33 `BFsd`, when present and exactly 256 bytes (borrowed).
    pub bf_seeds: Option<&'a [u8; BLOOM_BYTES]>,
    /// BEP 33 `BFpe`, likewise.
    pub bf_peers: Option<&'a [u8; BLOOM_BYTES]>,
}

/// An error message. Malformed `e` values are kept as far as they go (a
/// string, `[int]`, `[string, int]`): the transaction still fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorMsg<'a> {
    /// The code, when present and an integer.
    pub code: Option<i64>,
    /// The message, when present and a string.
    pub message: Option<&'a [u8]>,
}

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body<'a> {
    /// `y = q`.
    Query(Query<'a>),
    /// `y = r`.
    Response(Response<'a>),
    /// `y = e`.
    Error(ErrorMsg<'a>),
}

/// A decoded KRPC message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// `t`, echoed verbatim in replies.
    pub tid: &'a [u8],
    /// `v`.
    pub version: Option<&'a [u8]>,
    /// `ip` (BEP 42): our address as the sender saw it.
    pub ip: Option<SocketAddr>,
    /// `ro = 1` (BEP 43).
    pub read_only: bool,
    /// The body.
    pub body: Body<'a>,
}

/// Why a datagram was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KrpcError<'a> {
    /// Not bencode, or over the limits: drop silently.
    #[error("{0}")]
    Bencode(#[from] DecodeError),
    /// Too short, or not a dictionary: drop silently.
    #[error("not a KRPC dictionary")]
    NotKrpc,
    /// No usable `t`, or a `t` longer than 255 bytes: drop silently.
    #[error("missing or oversized transaction id")]
    BadTid,
    /// Missing or unknown `y`: drop silently (no reply to garbage).
    #[error("missing or invalid 'y'")]
    BadY,
    /// A query whose arguments are wrong: reply with this error.
    #[error("bad query: {code:?} {message}")]
    BadQuery {
        /// The query's tid, to echo.
        tid: &'a [u8],
        /// The code to send.
        code: ErrorCode,
        /// The message to send.
        message: &'static str,
    },
    /// A response without a usable 20-byte `id` (counts as a timeout).
    #[error("response without a valid id")]
    BadResponse {
        /// The response's tid.
        tid: &'a [u8],
    },
}

/// Datagrams this short cannot be a KRPC message; libtorrent drops anything
/// of 20 bytes or less before parsing.
pub const MIN_DATAGRAM: usize = 21;

/// Decodes one datagram.
pub fn decode(buf: &[u8]) -> Result<Message<'_>, KrpcError<'_>> {
    if buf.len() < MIN_DATAGRAM || buf.first() != Some(&b'd') || buf.last() != Some(&b'e') {
        return Err(KrpcError::NotKrpc);
    }
    let raw = raw::decode_raw(buf)?;
    from_raw(&raw)
}

/// Interprets the wire layer.
pub fn from_raw<'a>(raw: &RawMessage<'a>) -> Result<Message<'a>, KrpcError<'a>> {
    let tid = match raw.t {
        Some(t) if t.len() <= 255 => t,
        _ => return Err(KrpcError::BadTid),
    };
    let ip = raw.ip.and_then(compact::read_peer);
    let read_only = raw.ro == Some(1);
    let body = match raw.y {
        Some(b"q") => Body::Query(query(raw, tid)?),
        Some(b"r") => {
            let r = raw
                .body
                .filter(|_| raw.body_key == b'r')
                .ok_or(KrpcError::BadResponse { tid })?;
            let id =
                r.id.and_then(Id::from_slice)
                    .ok_or(KrpcError::BadResponse { tid })?;
            Body::Response(Response {
                id,
                nodes: Nodes::v4(r.nodes.unwrap_or_default()),
                nodes6: Nodes::v6(r.nodes6.unwrap_or_default()),
                values: r.values,
                token: r.token,
                samples: r.samples,
                interval: r.interval,
                num: r.num,
                bf_seeds: r.bf_seeds.and_then(|b| b.try_into().ok()),
                bf_peers: r.bf_peers.and_then(|b| b.try_into().ok()),
            })
        }
        Some(b"e") => Body::Error(error_body(raw.e)),
        _ => return Err(KrpcError::BadY),
    };
    Ok(Message {
        tid,
        version: raw.v,
        ip,
        read_only,
        body,
    })
}

fn bad<'a>(tid: &'a [u8], code: ErrorCode, message: &'static str) -> KrpcError<'a> {
    KrpcError::BadQuery { tid, code, message }
}

fn query<'a>(raw: &RawMessage<'a>, tid: &'a [u8]) -> Result<Query<'a>, KrpcError<'a>> {
    let Some(name) = raw.q else {
        return Err(bad(tid, ErrorCode::Protocol, "missing 'q' key"));
    };
    let Some(a) = raw.body.filter(|_| raw.body_key == b'a') else {
        return Err(bad(tid, ErrorCode::Protocol, "missing 'a' key"));
    };
    let id = match a.id.map(Id::from_slice) {
        Some(Some(id)) => id,
        Some(None) => return Err(bad(tid, ErrorCode::Protocol, "invalid 'id' length")),
        None => return Err(bad(tid, ErrorCode::Protocol, "missing 'id' key")),
    };
    let want = Want {
        n4: a.want_n4,
        n6: a.want_n6,
    };
    let id20 = |v: Option<&'a [u8]>, what: &'static str| -> Result<Id, KrpcError<'a>> {
        v.and_then(Id::from_slice)
            .ok_or_else(|| bad(tid, ErrorCode::Protocol, what))
    };
    let method = match name {
        b"ping" => Method::Ping,
        b"find_node" => Method::FindNode {
            target: id20(a.target, "missing 'target' key")?,
        },
        b"get_peers" => Method::GetPeers {
            infohash: id20(a.infohash, "missing 'info_hash' key")?,
            noseed: a.noseed.unwrap_or(0) != 0,
            scrape: a.scrape.unwrap_or(0) != 0,
        },
        b"announce_peer" => announce(&a, tid)?,
        b"sample_infohashes" => Method::SampleInfohashes {
            target: id20(a.target, "missing 'target' key")?,
        },
        other => Method::Unknown {
            name: other,
            target: a
                .target
                .and_then(Id::from_slice)
                .or_else(|| a.infohash.and_then(Id::from_slice)),
        },
    };
    Ok(Query {
        id,
        method,
        want,
        bootstrap: a.bs.is_some_and(|v| v != 0),
    })
}

fn announce<'a>(a: &RawBody<'a>, tid: &'a [u8]) -> Result<Method<'a>, KrpcError<'a>> {
    let infohash = a
        .infohash
        .and_then(Id::from_slice)
        .ok_or_else(|| bad(tid, ErrorCode::Protocol, "missing 'info_hash' key"))?;
    let token = a
        .token
        .ok_or_else(|| bad(tid, ErrorCode::Protocol, "missing 'token' key"))?;
    let implied_port = a.implied_port.unwrap_or(0) != 0;
    let port = match a.port {
        Some(p) => u16::try_from(p).map_err(|_| bad(tid, ErrorCode::Protocol, "invalid port"))?,
        None if implied_port => 0,
        None => return Err(bad(tid, ErrorCode::Protocol, "missing 'port' key")),
    };
    if port == 0 && !implied_port {
        return Err(bad(tid, ErrorCode::Protocol, "invalid port"));
    }
    Ok(Method::AnnouncePeer {
        infohash,
        port,
        implied_port,
        token,
        seed: a.seed.map(|s| s != 0),
    })
}

fn error_body(e: Option<&[u8]>) -> ErrorMsg<'_> {
    let mut out = ErrorMsg {
        code: None,
        message: None,
    };
    let Some(span) = e else { return out };
    let Ok(v) = crate::bencode::decode(span) else {
        return out;
    };
    if let Some(s) = v.as_bytes() {
        out.message = Some(s);
    } else if let Some(items) = v.as_list() {
        out.code = items.first().and_then(|x| x.as_int());
        out.message = items.get(1).and_then(|x| x.as_bytes());
    }
    out
}

impl<'a> Response<'a> {
    /// The peers in `values`: 6- and 18-byte entries in any mix, or
    /// libtorrent's single concatenated string of 6-byte entries. Entries of
    /// any other length are skipped.
    pub fn peers(&self) -> impl Iterator<Item = SocketAddr> + 'a {
        let (list, concat) = match self.values {
            Some(RawValues::List(span)) => (Some(span), None),
            Some(RawValues::Concat(s)) => (None, Some(s)),
            None => (None, None),
        };
        let from_list = list
            .into_iter()
            .flat_map(raw::values_entries)
            .filter_map(compact::read_peer);
        let from_concat = concat
            .into_iter()
            .flat_map(|s| s.chunks_exact(compact::PEER4_LEN))
            .filter_map(compact::read_peer);
        from_list.chain(from_concat)
    }

    /// Interprets the response as a BEP 51 reply, with libtorrent's checks:
    /// `interval` in 0..=21600, `num` non-negative, `samples` present and a
    /// multiple of 20.
    pub fn as_samples(&self) -> Result<SampleReply<'a>, SampleError> {
        let samples = self.samples.ok_or(SampleError::MissingSamples)?;
        if samples.len() % 20 != 0 {
            return Err(SampleError::SamplesLength(samples.len()));
        }
        let interval = self.interval.ok_or(SampleError::MissingInterval)?;
        if !(0..=21_600).contains(&interval) {
            return Err(SampleError::Interval(interval));
        }
        let num = self.num.ok_or(SampleError::MissingNum)?;
        if !(0..=i64::from(i32::MAX)).contains(&num) {
            return Err(SampleError::Num(num));
        }
        Ok(SampleReply {
            interval: interval as u32,
            num: num as u32,
            samples,
        })
    }
}

/// A validated BEP 51 reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleReply<'a> {
    /// Seconds before the node wants to be asked again.
    pub interval: u32,
    /// How many infohashes the node holds.
    pub num: u32,
    samples: &'a [u8],
}

impl<'a> SampleReply<'a> {
    /// Every sample, 20 bytes each (all of them: magnetico reads only the first
    /// correctly).
    pub fn samples(&self) -> impl Iterator<Item = Id> + 'a {
        self.samples.chunks_exact(20).filter_map(Id::from_slice)
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len() / 20
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// Why a BEP 51 reply was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SampleError {
    /// No `samples`.
    #[error("missing 'samples'")]
    MissingSamples,
    /// `samples` not a multiple of 20.
    #[error("'samples' length {0} is not a multiple of 20")]
    SamplesLength(usize),
    /// No `interval`.
    #[error("missing 'interval'")]
    MissingInterval,
    /// `interval` outside 0..=21600.
    #[error("'interval' {0} out of range")]
    Interval(i64),
    /// No `num`.
    #[error("missing 'num'")]
    MissingNum,
    /// `num` negative or huge.
    #[error("'num' {0} out of range")]
    Num(i64),
}

// ---------------------------------------------------------------------------
// Encoding. Keys are written in sorted order by hand, straight into the
// output buffer.

/// Common fields of everything we send.
#[derive(Debug, Clone, Copy)]
pub struct Header<'x> {
    /// `t`.
    pub tid: &'x [u8],
    /// `v`, if we send one.
    pub version: Option<&'x [u8]>,
}

/// Appends a query.
pub fn encode_query(
    out: &mut Vec<u8>,
    h: &Header<'_>,
    id: &Id,
    method: &Method<'_>,
    want: Want,
    read_only: bool,
) {
    encode_query_full(out, h, id, method, want, read_only, false);
}

/// Appends a query, with libtorrent's `bs` flag when `bootstrap` is set.
pub fn encode_query_full(
    out: &mut Vec<u8>,
    h: &Header<'_>,
    id: &Id,
    method: &Method<'_>,
    want: Want,
    read_only: bool,
    bootstrap: bool,
) {
    let mut e = Encoder::new(out);
    e.dict().bytes(b"a").dict();
    if bootstrap {
        e.kv_int(b"bs", 1);
    }
    e.kv_bytes(b"id", id.as_bytes());
    match method {
        Method::Ping => {}
        Method::FindNode { target } | Method::SampleInfohashes { target } => {
            e.kv_bytes(b"target", target.as_bytes());
        }
        Method::GetPeers {
            infohash,
            noseed,
            scrape,
        } => {
            e.kv_bytes(b"info_hash", infohash.as_bytes());
            if *noseed {
                e.kv_int(b"noseed", 1);
            }
            if *scrape {
                e.kv_int(b"scrape", 1);
            }
        }
        Method::AnnouncePeer {
            infohash,
            port,
            implied_port,
            token,
            seed,
        } => {
            if *implied_port {
                e.kv_int(b"implied_port", 1);
            }
            e.kv_bytes(b"info_hash", infohash.as_bytes());
            e.kv_int(b"port", i64::from(*port));
            if let Some(s) = seed {
                e.kv_int(b"seed", i64::from(*s));
            }
            e.kv_bytes(b"token", token);
        }
        Method::Unknown { target, .. } => {
            if let Some(t) = target {
                e.kv_bytes(b"target", t.as_bytes());
            }
        }
    }
    if want.is_specified() {
        e.bytes(b"want").list();
        if want.n4 {
            e.bytes(b"n4");
        }
        if want.n6 {
            e.bytes(b"n6");
        }
        e.end();
    }
    e.end();
    e.kv_bytes(b"q", method.name());
    if read_only {
        e.kv_int(b"ro", 1);
    }
    e.kv_bytes(b"t", h.tid);
    if let Some(v) = h.version {
        e.kv_bytes(b"v", v);
    }
    e.kv_bytes(b"y", b"q");
    e.end();
}

/// What a response carries besides the responder's id.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResponseBody<'x> {
    /// IPv4 nodes (at most 8 are written).
    pub nodes: &'x [NodeInfo],
    /// IPv6 nodes (at most 8 are written).
    pub nodes6: &'x [NodeInfo],
    /// Peers for `values`: IPv4 and IPv6 as given (capped, and cut to fit).
    pub values: &'x [SocketAddr],
    /// `token`.
    pub token: Option<&'x [u8]>,
    /// BEP 51 `samples` (at most 20 are written), with `interval` and `num`.
    pub samples: Option<(&'x [Id], u32, u32)>,
    /// BEP 33 `BFsd` and `BFpe`: the seeds' and the other peers' filters.
    pub scrape: Option<(&'x ScrapeBloom, &'x ScrapeBloom)>,
}

/// Appends a response. `requester` goes into `ip` (BEP 42). Returns the
/// number of values written (some may be cut to stay under
/// [`MAX_DATAGRAM`]).
pub fn encode_response(
    out: &mut Vec<u8>,
    h: &Header<'_>,
    requester: Option<SocketAddr>,
    id: &Id,
    body: &ResponseBody<'_>,
) -> usize {
    let start = out.len();
    {
        let mut e = Encoder::new(out);
        e.dict();
        if let Some(addr) = requester {
            let (b, n) = compact::peer_bytes(&addr);
            e.kv_bytes(b"ip", &b[..n]);
        }
        e.bytes(b"r").dict();
        // Sorted keys: "BFpe" < "BFsd" < "id" (upper case first).
        if let Some((seeds, peers)) = body.scrape {
            e.kv_bytes(b"BFpe", &peers.0);
            e.kv_bytes(b"BFsd", &seeds.0);
        }
        e.kv_bytes(b"id", id.as_bytes());
        if let Some((_, interval, _)) = body.samples {
            e.kv_int(b"interval", i64::from(interval));
        }
    }
    write_nodes(out, b"nodes", body.nodes, compact::NODE4_LEN);
    write_nodes(out, b"nodes6", body.nodes6, compact::NODE6_LEN);
    {
        let mut e = Encoder::new(out);
        if let Some((samples, _, num)) = body.samples {
            e.kv_int(b"num", i64::from(num));
            let n = samples.len().min(20);
            e.bytes(b"samples");
            e.bytes_concat(n * 20, samples[..n].iter().map(|s| &s.0[..]));
        }
        if let Some(t) = body.token {
            e.kv_bytes(b"token", t);
        }
    }
    // Trailer: "e" closing r, then t, v, y and the final "e".
    let trailer = 1
        + 3
        + decimal_len(h.tid.len())
        + 1
        + h.tid.len()
        + h.version
            .map_or(0, |v| 3 + decimal_len(v.len()) + 1 + v.len())
        + 6
        + 1;
    let mut written = 0;
    if !body.values.is_empty() {
        let list_overhead = 8 + 2; // "6:values" + 'l' + 'e'
        let mut budget = MAX_DATAGRAM.saturating_sub(out.len() - start + trailer + list_overhead);
        let mut e = Encoder::new(out);
        e.bytes(b"values").list();
        let (mut n4, mut n6) = (0, 0);
        for v in body.values {
            let len = compact::peer_len(v);
            let cost = len + 2 + usize::from(len >= 10);
            let cap_hit = if v.is_ipv4() {
                n4 >= MAX_VALUES_V4
            } else {
                n6 >= MAX_VALUES_V6
            };
            if cap_hit || cost > budget {
                continue;
            }
            budget -= cost;
            let (b, n) = compact::peer_bytes(v);
            e.bytes(&b[..n]);
            if v.is_ipv4() {
                n4 += 1;
            } else {
                n6 += 1;
            }
            written += 1;
        }
        e.end();
    }
    let mut e = Encoder::new(out);
    e.end();
    e.kv_bytes(b"t", h.tid);
    if let Some(v) = h.version {
        e.kv_bytes(b"v", v);
    }
    e.kv_bytes(b"y", b"r");
    e.end();
    written
}

fn write_nodes(out: &mut Vec<u8>, key: &[u8], nodes: &[NodeInfo], entry: usize) {
    if nodes.is_empty() {
        return;
    }
    // Nodes of the other family are skipped rather than mis-encoded.
    let want_v4 = entry == compact::NODE4_LEN;
    let n = nodes
        .iter()
        .filter(|x| x.addr.is_ipv4() == want_v4)
        .take(8)
        .count();
    if n == 0 {
        return;
    }
    Encoder::new(out).bytes(key).bytes_header(n * entry);
    for node in nodes.iter().filter(|x| x.addr.is_ipv4() == want_v4).take(n) {
        compact::write_node(out, node);
    }
}

fn decimal_len(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// Appends an error reply.
pub fn encode_error(
    out: &mut Vec<u8>,
    h: &Header<'_>,
    requester: Option<SocketAddr>,
    code: ErrorCode,
    message: &str,
) {
    let mut e = Encoder::new(out);
    e.dict().bytes(b"e").list().int(code.code());
    e.bytes(message.as_bytes()).end();
    if let Some(addr) = requester {
        let (b, n) = compact::peer_bytes(&addr);
        e.kv_bytes(b"ip", &b[..n]);
    }
    e.kv_bytes(b"t", h.tid);
    if let Some(v) = h.version {
        e.kv_bytes(b"v", v);
    }
    e.kv_bytes(b"y", b"e");
    e.end();
}
