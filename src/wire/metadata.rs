//! BEP 9 `ut_metadata` messages: request, data, reject.
//!
//! A message is a bencoded dictionary; a data message is followed, inside the
//! same frame, by the raw piece bytes. The pull [`Parser`] finds where the
//! dictionary ends without copying anything, and the rest of the payload is
//! the piece. Keys other than `msg_type`, `piece` and `total_size` are skipped
//! (after validation); the first occurrence of a duplicated key wins.

use crate::bencode::{DecodeError, Encoder, Limits, Parser};

use super::framing::{encode_header, MSG_EXTENDED};

/// Metadata is transferred in pieces of this size; only the last is shorter.
pub const PIECE_SIZE: usize = 16 * 1024;

/// The largest `ut_metadata` frame accepted (id and sub-id included):
/// libtorrent disconnects above 17 KiB, which leaves 1 KiB for the
/// dictionary in front of a full 16 KiB piece.
pub const MAX_MESSAGE: u32 = 17 * 1024;

/// `msg_type` of a request.
pub const MSG_REQUEST: i64 = 0;
/// `msg_type` of a data message.
pub const MSG_DATA: i64 = 1;
/// `msg_type` of a reject.
pub const MSG_REJECT: i64 = 2;

/// A parsed `ut_metadata` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataMsg<'a> {
    /// `msg_type` 0.
    Request {
        /// The piece asked for (unchecked).
        piece: i64,
    },
    /// `msg_type` 1: a piece, with the bytes that followed the dictionary.
    Data {
        /// The piece index (unchecked).
        piece: i64,
        /// `total_size`, if present (unchecked).
        total_size: Option<i64>,
        /// Everything after the dictionary.
        data: &'a [u8],
    },
    /// `msg_type` 2.
    Reject {
        /// The piece refused (unchecked).
        piece: i64,
    },
    /// Any other `msg_type`: BEP 9 says to ignore it.
    Unknown {
        /// The value received.
        msg_type: i64,
    },
}

/// Why a `ut_metadata` message could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MetadataMsgError {
    /// The dictionary is not valid bencode, not a dictionary, or a known key
    /// has the wrong type.
    #[error("ut_metadata message: {0}")]
    Bencode(#[from] DecodeError),
    /// No `msg_type`.
    #[error("ut_metadata message without msg_type")]
    NoMsgType,
    /// A request, data or reject without `piece`.
    #[error("ut_metadata message without piece")]
    NoPiece,
}

/// Parses a `ut_metadata` payload (after the id and sub-id).
pub fn parse(payload: &[u8]) -> Result<MetadataMsg<'_>, MetadataMsgError> {
    let mut p = Parser::new(payload, Limits::EXTENSION);
    p.dict()?;
    let mut msg_type = None;
    let mut piece = None;
    let mut total_size = None;
    while let Some(key) = p.next_key()? {
        let slot = match key {
            b"msg_type" => &mut msg_type,
            b"piece" => &mut piece,
            b"total_size" => &mut total_size,
            _ => {
                p.skip()?;
                continue;
            }
        };
        let v = p.int()?;
        slot.get_or_insert(v);
    }
    let data = payload.get(p.offset()..).unwrap_or_default();
    let msg_type = msg_type.ok_or(MetadataMsgError::NoMsgType)?;
    let piece = || piece.ok_or(MetadataMsgError::NoPiece);
    Ok(match msg_type {
        MSG_REQUEST => MetadataMsg::Request { piece: piece()? },
        MSG_DATA => MetadataMsg::Data {
            piece: piece()?,
            total_size,
            data,
        },
        MSG_REJECT => MetadataMsg::Reject { piece: piece()? },
        other => MetadataMsg::Unknown { msg_type: other },
    })
}

fn frame(out: &mut Vec<u8>, peer_ext_id: u8, dict: &[u8], data: &[u8]) {
    encode_header(out, MSG_EXTENDED, 1 + dict.len() + data.len());
    out.push(peer_ext_id);
    out.extend_from_slice(dict);
    out.extend_from_slice(data);
}

/// Appends a whole request frame, tagged with the peer's `ut_metadata` id.
pub fn encode_request(out: &mut Vec<u8>, peer_ext_id: u8, piece: u32) {
    let mut d = Vec::with_capacity(32);
    Encoder::new(&mut d)
        .dict()
        .kv_int(b"msg_type", MSG_REQUEST)
        .kv_int(b"piece", i64::from(piece))
        .end();
    frame(out, peer_ext_id, &d, &[]);
}

/// Appends a whole data frame: the dictionary, then the piece bytes.
pub fn encode_data(out: &mut Vec<u8>, peer_ext_id: u8, piece: u32, total_size: i64, data: &[u8]) {
    let mut d = Vec::with_capacity(48);
    Encoder::new(&mut d)
        .dict()
        .kv_int(b"msg_type", MSG_DATA)
        .kv_int(b"piece", i64::from(piece))
        .kv_int(b"total_size", total_size)
        .end();
    frame(out, peer_ext_id, &d, data);
}

/// Appends a whole reject frame.
pub fn encode_reject(out: &mut Vec<u8>, peer_ext_id: u8, piece: u32) {
    let mut d = Vec::with_capacity(32);
    Encoder::new(&mut d)
        .dict()
        .kv_int(b"msg_type", MSG_REJECT)
        .kv_int(b"piece", i64::from(piece))
        .end();
    frame(out, peer_ext_id, &d, &[]);
}

/// Appends a frame carrying an arbitrary raw `ut_metadata` payload (for
/// tests and misbehaving simulated peers).
pub fn encode_raw(out: &mut Vec<u8>, peer_ext_id: u8, payload: &[u8]) {
    frame(out, peer_ext_id, payload, &[]);
}

/// Number of pieces for metadata of `size` bytes.
pub fn piece_count(size: usize) -> usize {
    size.div_ceil(PIECE_SIZE)
}

/// The length of piece `index` of metadata of `size` bytes (0 if out of range).
pub fn piece_len(size: usize, index: usize) -> usize {
    let start = index.saturating_mul(PIECE_SIZE);
    size.saturating_sub(start).min(PIECE_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mut out = Vec::new();
        encode_request(&mut out, 3, 7);
        assert_eq!(&out[4..], b"\x14\x03d8:msg_typei0e5:piecei7ee");
        assert_eq!(parse(&out[6..]), Ok(MetadataMsg::Request { piece: 7 }));

        let mut out = Vec::new();
        encode_data(&mut out, 3, 1, 20000, b"xyz");
        assert_eq!(
            &out[4..],
            b"\x14\x03d8:msg_typei1e5:piecei1e10:total_sizei20000eexyz"
        );
        assert_eq!(
            parse(&out[6..]),
            Ok(MetadataMsg::Data {
                piece: 1,
                total_size: Some(20000),
                data: b"xyz"
            })
        );

        let mut out = Vec::new();
        encode_reject(&mut out, 3, 0);
        assert_eq!(parse(&out[6..]), Ok(MetadataMsg::Reject { piece: 0 }));
    }

    #[test]
    fn lenient_and_strict_parts() {
        // Unknown msg_type, unknown keys skipped, the data may start with 'e'.
        assert_eq!(
            parse(b"d8:msg_typei7ee"),
            Ok(MetadataMsg::Unknown { msg_type: 7 })
        );
        assert_eq!(
            parse(b"d1:xli1ee8:msg_typei1e5:piecei0eeeeee"),
            Ok(MetadataMsg::Data {
                piece: 0,
                total_size: None,
                data: b"eeee"
            })
        );
        // Duplicates: the first wins.
        assert_eq!(
            parse(b"d8:msg_typei2e8:msg_typei1e5:piecei4ee"),
            Ok(MetadataMsg::Reject { piece: 4 })
        );
        assert_eq!(parse(b"d5:piecei0ee"), Err(MetadataMsgError::NoMsgType));
        assert_eq!(parse(b"d8:msg_typei1ee"), Err(MetadataMsgError::NoPiece));
        assert!(matches!(
            parse(b"d8:msg_type1:1e"),
            Err(MetadataMsgError::Bencode(_))
        ));
        assert!(matches!(parse(b"li1ee"), Err(MetadataMsgError::Bencode(_))));
        assert!(matches!(parse(b""), Err(MetadataMsgError::Bencode(_))));
        assert!(matches!(
            parse(b"d8:msg_typei1e5:piecei0e"),
            Err(MetadataMsgError::Bencode(_))
        ));
    }

    #[test]
    fn piece_arithmetic() {
        assert_eq!(piece_count(1), 1);
        assert_eq!(piece_count(PIECE_SIZE), 1);
        assert_eq!(piece_count(PIECE_SIZE + 1), 2);
        assert_eq!(piece_len(PIECE_SIZE + 1, 0), PIECE_SIZE);
        assert_eq!(piece_len(PIECE_SIZE + 1, 1), 1);
        assert_eq!(piece_len(PIECE_SIZE + 1, 2), 0);
        assert_eq!(piece_len(10, usize::MAX), 0);
    }
}
