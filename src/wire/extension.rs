//! The BEP 10 extension handshake (extended message id 20, sub-id 0).
//!
//! The `m` dictionary maps extension names to the ids **its sender wants to
//! receive**: we send `ut_metadata` messages tagged with the peer's id, and the
//! peer tags the ones it sends us with ours. An id of 0 disables the extension;
//! ids are one byte on the wire, so anything outside 0..=255 is invalid.
//! `metadata_size` (BEP 9) sits at the top level, not inside `m`. Its value is
//! returned raw here: whether it is acceptable is the fetcher's policy.

use crate::bencode::{decode_with, DecodeError, Encoder, Limits};

use super::framing::{encode_header, MSG_EXTENDED};

/// Extension sub-id of the handshake itself.
pub const EXT_HANDSHAKE: u8 = 0;

/// The largest extension handshake accepted (length prefix excluded). Real
/// handshakes are a few hundred bytes; this is our own bound, far below the
/// 1 MiB frame limit.
pub const MAX_EXT_HANDSHAKE: u32 = 64 * 1024;

/// The extension name of BEP 9.
pub const UT_METADATA: &[u8] = b"ut_metadata";

/// What the peer said about `ut_metadata` in `m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtId {
    /// Not mentioned (or no `m` at all): no change.
    Absent,
    /// Explicitly disabled with id 0.
    Disabled,
    /// Enabled: send messages for it tagged with this id.
    Id(u8),
}

/// A parsed extension handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtHandshake {
    /// Whether the `m` dictionary was present.
    pub has_m: bool,
    /// The peer's id for `ut_metadata`.
    pub ut_metadata: ExtId,
    /// The top-level `metadata_size`, unchecked.
    pub metadata_size: Option<i64>,
    /// The client name in `v`, if any (truncated to 64 bytes).
    pub client: Option<Vec<u8>>,
}

/// Why an extension handshake was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExtensionError {
    /// Not valid bencode (or over the extension-message limits).
    #[error("extension handshake: {0}")]
    Bencode(#[from] DecodeError),
    /// Valid bencode, but not a dictionary.
    #[error("extension handshake is not a dictionary")]
    NotADict,
    /// `m` is present but not a dictionary.
    #[error("extension handshake 'm' is not a dictionary")]
    MNotADict,
    /// An id in `m` (for `ut_metadata`) is not an integer.
    #[error("ut_metadata id is not an integer")]
    IdNotInt,
    /// An id in `m` (for `ut_metadata`) is negative or over 255.
    #[error("ut_metadata id {0} is outside 0..=255")]
    IdOutOfRange(i64),
    /// `metadata_size` is present but not an integer.
    #[error("metadata_size is not an integer")]
    SizeNotInt,
}

/// Parses the payload of an extension handshake (after the id and sub-id).
pub fn parse_handshake(payload: &[u8]) -> Result<ExtHandshake, ExtensionError> {
    let v = decode_with(payload, Limits::EXTENSION)?;
    let d = v.as_dict().ok_or(ExtensionError::NotADict)?;
    let (has_m, ut_metadata) = match d.get(b"m") {
        None => (false, ExtId::Absent),
        Some(m) => {
            let m = m.as_dict().ok_or(ExtensionError::MNotADict)?;
            let id = match m.get(UT_METADATA) {
                None => ExtId::Absent,
                Some(v) => match v.as_int().ok_or(ExtensionError::IdNotInt)? {
                    0 => ExtId::Disabled,
                    n => ExtId::Id(u8::try_from(n).map_err(|_| ExtensionError::IdOutOfRange(n))?),
                },
            };
            (true, id)
        }
    };
    let metadata_size = match d.get(b"metadata_size") {
        None => None,
        Some(v) => Some(v.as_int().ok_or(ExtensionError::SizeNotInt)?),
    };
    let client = d.bytes(b"v").map(|v| v.get(..64).unwrap_or(v).to_vec());
    Ok(ExtHandshake {
        has_m,
        ut_metadata,
        metadata_size,
        client,
    })
}

/// Appends a whole extension-handshake frame (length prefix included):
/// `{"m": {"ut_metadata": ut_metadata_id}, "metadata_size": .., "reqq": ..,
/// "v": client}`, keys sorted.
pub fn encode_handshake(
    out: &mut Vec<u8>,
    ut_metadata_id: u8,
    metadata_size: Option<i64>,
    reqq: Option<i64>,
    client: &[u8],
) {
    let mut body = Vec::with_capacity(96);
    let mut e = Encoder::new(&mut body);
    e.dict();
    e.bytes(b"m")
        .dict()
        .kv_int(UT_METADATA, i64::from(ut_metadata_id))
        .end();
    if let Some(size) = metadata_size {
        e.kv_int(b"metadata_size", size);
    }
    if let Some(reqq) = reqq {
        e.kv_int(b"reqq", reqq);
    }
    e.kv_bytes(b"v", client);
    e.end();
    encode_header(out, MSG_EXTENDED, body.len() + 1);
    out.push(EXT_HANDSHAKE);
    out.extend_from_slice(&body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_sorted_and_parses_back() {
        let mut out = Vec::new();
        encode_handshake(&mut out, 3, Some(31235), Some(250), b"DHT-Hunter 0.1");
        let body = &out[6..];
        assert_eq!(
            body,
            &b"d1:md11:ut_metadatai3ee13:metadata_sizei31235e4:reqqi250e1:v14:DHT-Hunter 0.1e"[..]
        );
        assert_eq!(
            u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize,
            out.len() - 4
        );
        assert_eq!(&out[4..6], &[20, 0]);
        let hs = parse_handshake(body).unwrap();
        assert_eq!(
            hs,
            ExtHandshake {
                has_m: true,
                ut_metadata: ExtId::Id(3),
                metadata_size: Some(31235),
                client: Some(b"DHT-Hunter 0.1".to_vec()),
            }
        );
    }

    #[test]
    fn ids() {
        let p = |s: &[u8]| parse_handshake(s);
        assert_eq!(
            p(b"d1:md11:ut_metadatai0eee").unwrap().ut_metadata,
            ExtId::Disabled
        );
        assert_eq!(
            p(b"d1:md11:ut_metadatai255eee").unwrap().ut_metadata,
            ExtId::Id(255)
        );
        assert_eq!(p(b"d1:md6:ut_pexi1eee").unwrap().ut_metadata, ExtId::Absent);
        let no_m = p(b"d1:v1:xe").unwrap();
        assert!(!no_m.has_m);
        assert_eq!(no_m.ut_metadata, ExtId::Absent);
        assert_eq!(
            p(b"d1:md11:ut_metadatai256eee"),
            Err(ExtensionError::IdOutOfRange(256))
        );
        assert_eq!(
            p(b"d1:md11:ut_metadatai-1eee"),
            Err(ExtensionError::IdOutOfRange(-1))
        );
        assert_eq!(
            p(b"d1:md11:ut_metadata1:xee"),
            Err(ExtensionError::IdNotInt)
        );
        assert_eq!(p(b"d1:mli1eee"), Err(ExtensionError::MNotADict));
        assert_eq!(p(b"li1ee"), Err(ExtensionError::NotADict));
        assert_eq!(p(b"d13:metadata_size1:xe"), Err(ExtensionError::SizeNotInt));
        assert!(matches!(p(b"d1:m"), Err(ExtensionError::Bencode(_))));
    }
}
