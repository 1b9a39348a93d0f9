//! [`MetadataServe`]: the other end of a fetch, for simulated peers.
//!
//! The load generator and the tests need peers that hand out metadata, and
//! peers that misbehave in the ways seen in the wild. This is the accepting
//! side of one connection, sans-IO like the fetcher: it waits for the
//! fetcher's BT handshake, answers with its own and an extension handshake
//! carrying `metadata_size`, then answers each `ut_metadata` request.
//!
//! It has no clock: nothing it does depends on time. Slow peers (a byte per
//! second, a stall after the handshake) are an IO-level concern: the glue
//! that owns the socket decides how fast to write what
//! [`MetadataServe::poll_transmit`] returns.

use crate::id::Id;

use super::extension::{
    encode_handshake, parse_handshake, ExtId, EXT_HANDSHAKE, MAX_EXT_HANDSHAKE,
};
use super::framing::{FrameReader, Policy, Step, MSG_EXTENDED};
use super::handshake::{Handshake, HandshakeReader};
use super::metadata::{
    encode_data, encode_reject, parse, piece_count, MetadataMsg, MAX_MESSAGE, PIECE_SIZE,
};

/// The `metadata_size` advertised by [`Behaviour::Oversize`]: 2 GB, as seen in
/// the wild (magnetico PR #58).
pub const OVERSIZE_ADVERTISED: i64 = 2_000_000_000;

/// How a simulated peer behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Behaviour {
    /// Serves the metadata correctly.
    #[default]
    Honest,
    /// Answers every request with a reject (`msg_type` 2).
    Reject,
    /// Serves corrupted bytes (one byte flipped in the first piece), so the
    /// hash does not match.
    Lie,
    /// Advertises a `metadata_size` of 2 GB ([`OVERSIZE_ADVERTISED`]).
    Oversize,
    /// Serves the first piece, then asks for the connection to be closed
    /// ([`MetadataServe::poll_close`]). With single-piece metadata the first
    /// piece is all of it, so the fetch succeeds: use multi-piece metadata.
    DisconnectMidway,
    /// Reads everything and never writes a byte.
    NoHandshake,
}

/// The serving side of one connection.
#[derive(Debug)]
pub struct MetadataServe {
    infohash: Id,
    peer_id: [u8; 20],
    info: Vec<u8>,
    behaviour: Behaviour,
    hs: HandshakeReader,
    handshaken: bool,
    frames: FrameReader,
    peer_ut_id: Option<u8>,
    out: Vec<u8>,
    close: bool,
    pieces_served: usize,
}

impl MetadataServe {
    /// The id this side asks to receive `ut_metadata` messages with
    /// (deliberately not the fetcher's, so mixing them up shows).
    pub const UT_METADATA_ID: u8 = 3;

    /// A peer serving `info` (the raw info dictionary) for `infohash`.
    /// The hash is not recomputed, so a v2 (truncated SHA-256) infohash works.
    pub fn new(infohash: Id, info: Vec<u8>, peer_id: [u8; 20], behaviour: Behaviour) -> Self {
        let mut info = info;
        if behaviour == Behaviour::Lie {
            let mid = info.len().min(PIECE_SIZE) / 2;
            if let Some(b) = info.get_mut(mid) {
                *b ^= 0x5a;
            }
        }
        MetadataServe {
            infohash,
            peer_id,
            info,
            behaviour,
            hs: HandshakeReader::new(),
            handshaken: false,
            frames: FrameReader::new(),
            peer_ut_id: None,
            out: Vec::new(),
            close: false,
            pieces_served: 0,
        }
    }

    /// Appends the bytes to write to the socket to `out`; returns how many.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        let n = self.out.len();
        out.append(&mut self.out);
        n
    }

    /// Whether the connection should be closed once the pending output has
    /// been written.
    pub fn poll_close(&self) -> bool {
        self.close
    }

    /// How many data messages have been sent.
    pub fn pieces_served(&self) -> usize {
        self.pieces_served
    }

    /// The fetcher closed the connection.
    pub fn handle_eof(&mut self) {
        self.close = true;
    }

    /// Bytes read from the socket.
    pub fn handle_data(&mut self, bytes: &[u8]) {
        if self.close || self.behaviour == Behaviour::NoHandshake {
            return;
        }
        let mut input = bytes;
        if !self.handshaken {
            match self.hs.feed(&mut input) {
                Err(_) => {
                    self.close = true;
                    return;
                }
                Ok(None) => return,
                Ok(Some(hs)) => {
                    if hs.infohash != self.infohash {
                        self.close = true;
                        return;
                    }
                    self.handshaken = true;
                    Handshake::ours(self.infohash, self.peer_id).encode(&mut self.out);
                    let size = if self.behaviour == Behaviour::Oversize {
                        OVERSIZE_ADVERTISED
                    } else {
                        self.info.len() as i64
                    };
                    encode_handshake(
                        &mut self.out,
                        Self::UT_METADATA_ID,
                        Some(size),
                        None,
                        b"DHT-Hunter simulated peer",
                    );
                }
            }
        }
        while !self.close {
            let step = self.frames.read(&mut input, |id, sub| match (id, sub) {
                (MSG_EXTENDED, Some(EXT_HANDSHAKE)) => Policy::Keep {
                    max_len: MAX_EXT_HANDSHAKE,
                },
                (MSG_EXTENDED, Some(Self::UT_METADATA_ID)) => Policy::Keep {
                    max_len: MAX_MESSAGE,
                },
                _ => Policy::Skip,
            });
            match step {
                Err(_) => self.close = true,
                Ok(Step::NeedMore) => break,
                Ok(Step::KeepAlive | Step::Skipped { .. }) => {}
                Ok(Step::Message) => {
                    let msg = self.frames.take_message();
                    self.on_message(&msg);
                    self.frames.recycle(msg);
                }
            }
        }
    }

    fn on_message(&mut self, msg: &[u8]) {
        let [_, sub, payload @ ..] = msg else {
            return;
        };
        if *sub == EXT_HANDSHAKE {
            match parse_handshake(payload) {
                Ok(hs) => match hs.ut_metadata {
                    ExtId::Id(id) => self.peer_ut_id = Some(id),
                    ExtId::Disabled => self.peer_ut_id = None,
                    ExtId::Absent => {}
                },
                Err(_) => self.close = true,
            }
            return;
        }
        let Ok(MetadataMsg::Request { piece }) = parse(payload) else {
            // Data, rejects and unknown types are not for a server; garbage
            // is ignored too (this side is a test tool, not a target).
            return;
        };
        let Some(peer_id) = self.peer_ut_id else {
            return;
        };
        let index = usize::try_from(piece)
            .ok()
            .filter(|i| *i < piece_count(self.info.len()));
        let (Some(index), false) = (index, self.behaviour == Behaviour::Reject) else {
            encode_reject(&mut self.out, peer_id, u32::try_from(piece).unwrap_or(0));
            return;
        };
        let start = index * PIECE_SIZE;
        let end = (start + PIECE_SIZE).min(self.info.len());
        let total = if self.behaviour == Behaviour::Oversize {
            OVERSIZE_ADVERTISED
        } else {
            self.info.len() as i64
        };
        let data = self.info.get(start..end).unwrap_or_default();
        encode_data(&mut self.out, peer_id, index as u32, total, data);
        self.pieces_served += 1;
        if self.behaviour == Behaviour::DisconnectMidway {
            self.close = true;
        }
    }
}
