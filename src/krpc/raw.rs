//! The raw layer: one pass over a datagram that picks out every key KRPC
//! knows, as borrowed slices, with no allocation and no interpretation.
//!
//! The typed layer ([`super::message`]) then decides what the keys mean. The
//! split follows pubky/mainline's `messages/internal.rs` and rqbit's borrowed
//! buffers: raw types mirror the bencode; typed messages mirror the protocol.
//!
//! A known key with an unexpected type is treated as absent (so an `id` that
//! is an integer reads as a missing id and earns a 203 error). Unknown keys
//! are skipped, but still validated: the whole datagram must be one valid
//! bencoded dictionary within the KRPC limits.

use crate::bencode::{DecodeError, DecodeErrorKind, Item, Limits, Parser};

/// The arguments (`a`) of a query or the body (`r`) of a response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawBody<'a> {
    /// `id`.
    pub id: Option<&'a [u8]>,
    /// `target` (find_node, sample_infohashes).
    pub target: Option<&'a [u8]>,
    /// `infohash` (get_peers, announce_peer).
    pub infohash: Option<&'a [u8]>,
    /// `port` (announce_peer).
    pub port: Option<i64>,
    /// `implied_port` (announce_peer).
    pub implied_port: Option<i64>,
    /// `token`.
    pub token: Option<&'a [u8]>,
    /// `seed` (announce_peer, BEP 33).
    pub seed: Option<i64>,
    /// `noseed` (get_peers, BEP 33).
    pub noseed: Option<i64>,
    /// `scrape` (get_peers, BEP 33).
    pub scrape: Option<i64>,
    /// `bs` (libtorrent 2.0: a bootstrap query; do not add the sender).
    pub bs: Option<i64>,
    /// `want` contained `n4`.
    pub want_n4: bool,
    /// `want` contained `n6`.
    pub want_n6: bool,
    /// `nodes` (compact IPv4 nodes).
    pub nodes: Option<&'a [u8]>,
    /// `nodes6` (compact IPv6 nodes).
    pub nodes6: Option<&'a [u8]>,
    /// `values`: the raw bencoded list, or the raw string in libtorrent's
    /// concatenated form (see [`RawValues`]).
    pub values: Option<RawValues<'a>>,
    /// `samples` (BEP 51).
    pub samples: Option<&'a [u8]>,
    /// `interval` (BEP 51).
    pub interval: Option<i64>,
    /// `num` (BEP 51).
    pub num: Option<i64>,
    /// `BFsd` (BEP 33): the seeds' bloom filter, any length (checked by
    /// the typed layer).
    pub bf_seeds: Option<&'a [u8]>,
    /// `BFpe` (BEP 33): the other peers' bloom filter.
    pub bf_peers: Option<&'a [u8]>,
}

/// `values` as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawValues<'a> {
    /// A list of compact peers; the span is the whole bencoded list, already
    /// validated.
    List(&'a [u8]),
    /// One string of concatenated 6-byte peers ("mainline format").
    Concat(&'a [u8]),
}

/// Every top-level key of a KRPC message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawMessage<'a> {
    /// `t`.
    pub t: Option<&'a [u8]>,
    /// `y`.
    pub y: Option<&'a [u8]>,
    /// `q`.
    pub q: Option<&'a [u8]>,
    /// `v`.
    pub v: Option<&'a [u8]>,
    /// `ip` (BEP 42).
    pub ip: Option<&'a [u8]>,
    /// `ro` (BEP 43).
    pub ro: Option<i64>,
    /// `a` or `r`, whichever came last (a message never needs both; one
    /// slot keeps the struct small, and decoding copies it).
    pub body: Option<RawBody<'a>>,
    /// Which key `body` came from: `b'a'` or `b'r'`.
    pub body_key: u8,
    /// `e`: the raw bencoded value, of whatever type it was.
    pub e: Option<&'a [u8]>,
}

/// Decodes the wire layer of one datagram with the KRPC limits.
pub fn decode_raw(buf: &[u8]) -> Result<RawMessage<'_>, DecodeError> {
    let mut p = Parser::new(buf, Limits::KRPC);
    let at = p.offset();
    if p.next_item()? != Item::Dict {
        return Err(DecodeError {
            kind: DecodeErrorKind::WrongType {
                expected: "a dictionary",
            },
            offset: at,
        });
    }
    let mut m = RawMessage::default();
    while let Some(key) = p.next_key()? {
        match key {
            b"t" => m.t = opt_bytes(&mut p)?,
            b"y" => m.y = opt_bytes(&mut p)?,
            b"q" => m.q = opt_bytes(&mut p)?,
            b"v" => m.v = opt_bytes(&mut p)?,
            b"ip" => m.ip = opt_bytes(&mut p)?,
            b"ro" => m.ro = opt_int(&mut p)?,
            b"a" | b"r" => {
                if let Some(b) = body(&mut p)? {
                    m.body = Some(b);
                    m.body_key = key[0];
                }
            }
            b"e" => m.e = Some(p.skip()?),
            _ => {
                p.skip()?;
            }
        }
    }
    p.finish()?;
    Ok(m)
}

/// The transaction id of a datagram that is a reply (`y` is `r` or `e`),
/// found by walking the top-level keys and skipping every value: no body is
/// looked into. A shard uses it to route a reply to the shard that sent the
/// query before decoding anything (so a flood of forged replies costs a
/// skim, not a decode and a copy). `None` for queries and for anything that
/// is not a dictionary with both keys; those take the full decode path,
/// which reports their errors.
pub fn reply_tid(buf: &[u8]) -> Option<&[u8]> {
    let mut p = Parser::new(buf, Limits::KRPC);
    if p.next_item().ok()? != Item::Dict {
        return None;
    }
    let (mut t, mut y) = (None, None);
    while let Some(key) = p.next_key().ok()? {
        match key {
            b"t" => t = opt_bytes(&mut p).ok()?,
            b"y" => y = opt_bytes(&mut p).ok()?,
            _ => {
                p.skip().ok()?;
            }
        }
        if let (Some(t), Some(y)) = (t, y) {
            return matches!(y, b"r" | b"e").then_some(t);
        }
    }
    None
}

fn opt_bytes<'a>(p: &mut Parser<'a>) -> Result<Option<&'a [u8]>, DecodeError> {
    match p.input().get(p.offset()) {
        Some(b'0'..=b'9') => Ok(Some(p.bytes()?)),
        _ => {
            p.skip()?;
            Ok(None)
        }
    }
}

fn opt_int(p: &mut Parser<'_>) -> Result<Option<i64>, DecodeError> {
    match p.input().get(p.offset()) {
        Some(b'i') => Ok(Some(p.int()?)),
        _ => {
            p.skip()?;
            Ok(None)
        }
    }
}

fn body<'a>(p: &mut Parser<'a>) -> Result<Option<RawBody<'a>>, DecodeError> {
    if p.input().get(p.offset()) != Some(&b'd') {
        p.skip()?;
        return Ok(None);
    }
    p.dict()?;
    let mut b = RawBody::default();
    while let Some(key) = p.next_key()? {
        match key {
            b"id" => b.id = opt_bytes(p)?,
            b"bs" => b.bs = opt_int(p)?,
            b"target" => b.target = opt_bytes(p)?,
            b"info_hash" => b.infohash = opt_bytes(p)?,
            b"port" => b.port = opt_int(p)?,
            b"implied_port" => b.implied_port = opt_int(p)?,
            b"token" => b.token = opt_bytes(p)?,
            b"seed" => b.seed = opt_int(p)?,
            b"noseed" => b.noseed = opt_int(p)?,
            b"scrape" => b.scrape = opt_int(p)?,
            b"nodes" => b.nodes = opt_bytes(p)?,
            b"nodes6" => b.nodes6 = opt_bytes(p)?,
            b"samples" => b.samples = opt_bytes(p)?,
            b"interval" => b.interval = opt_int(p)?,
            b"num" => b.num = opt_int(p)?,
            b"BFsd" => b.bf_seeds = opt_bytes(p)?,
            b"BFpe" => b.bf_peers = opt_bytes(p)?,
            b"want" => want(p, &mut b)?,
            b"values" => {
                b.values = match p.input().get(p.offset()) {
                    Some(b'l') => Some(RawValues::List(p.skip()?)),
                    Some(b'0'..=b'9') => Some(RawValues::Concat(p.bytes()?)),
                    _ => {
                        p.skip()?;
                        None
                    }
                }
            }
            _ => {
                p.skip()?;
            }
        }
    }
    Ok(Some(b))
}

/// `want` is a list of strings; unknown entries (and non-strings) are ignored
/// (BEP 32).
fn want(p: &mut Parser<'_>, b: &mut RawBody<'_>) -> Result<(), DecodeError> {
    if p.input().get(p.offset()) != Some(&b'l') {
        p.skip()?;
        return Ok(());
    }
    p.list()?;
    while p.list_has_next()? {
        match p.input().get(p.offset()) {
            Some(b'0'..=b'9') => match p.bytes()? {
                b"n4" => b.want_n4 = true,
                b"n6" => b.want_n6 = true,
                _ => {}
            },
            _ => {
                p.skip()?;
            }
        }
    }
    Ok(())
}

/// Iterates the byte strings of an already-validated `values` list span,
/// skipping entries that are not strings.
pub fn values_entries(list_span: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut p = Parser::new(list_span, Limits::KRPC);
    let ok = p.list().is_ok();
    let mut live = ok;
    std::iter::from_fn(move || {
        while live {
            match p.list_has_next() {
                Ok(true) => {}
                _ => {
                    live = false;
                    return None;
                }
            }
            match p.input().get(p.offset()) {
                Some(b'0'..=b'9') => match p.bytes() {
                    Ok(b) => return Some(b),
                    Err(_) => live = false,
                },
                _ => {
                    if p.skip().is_err() {
                        live = false;
                    }
                }
            }
        }
        None
    })
}
