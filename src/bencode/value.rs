//! A borrowed bencode tree for cold paths (extension handshakes, metadata
//! dictionaries). Every node keeps its raw byte span, so a dictionary can be
//! hashed exactly as it was received.

use super::decode::{DecodeError, Item, Limits, Parser};
use super::encode::Encoder;

/// A decoded value together with the exact bytes it was decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value<'a> {
    raw: &'a [u8],
    kind: Kind<'a>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind<'a> {
    Int(i64),
    Bytes(&'a [u8]),
    List(Vec<Value<'a>>),
    Dict(Dict<'a>),
}

/// A dictionary: entries in the order received. Lookups return the first
/// entry with a given key (duplicates are tolerated, as in libtorrent).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dict<'a> {
    entries: Vec<(&'a [u8], Value<'a>)>,
}

impl<'a> Dict<'a> {
    /// The first value stored under `key`.
    pub fn get(&self, key: &[u8]) -> Option<&Value<'a>> {
        self.entries.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The entries in the order received.
    pub fn entries(&self) -> &[(&'a [u8], Value<'a>)] {
        &self.entries
    }

    /// A byte string under `key`.
    pub fn bytes(&self, key: &[u8]) -> Option<&'a [u8]> {
        self.get(key).and_then(Value::as_bytes)
    }

    /// An integer under `key`.
    pub fn int(&self, key: &[u8]) -> Option<i64> {
        self.get(key).and_then(Value::as_int)
    }

    /// A dictionary under `key`.
    pub fn dict(&self, key: &[u8]) -> Option<&Dict<'a>> {
        self.get(key).and_then(Value::as_dict)
    }
}

impl<'a> Value<'a> {
    /// The exact bytes this value was decoded from.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match self.kind {
            Kind::Int(v) => Some(v),
            _ => None,
        }
    }

    /// The byte string, if this is one.
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self.kind {
            Kind::Bytes(v) => Some(v),
            _ => None,
        }
    }

    /// The list items, if this is a list.
    pub fn as_list(&self) -> Option<&[Value<'a>]> {
        match &self.kind {
            Kind::List(v) => Some(v),
            _ => None,
        }
    }

    /// The dictionary, if this is one.
    pub fn as_dict(&self) -> Option<&Dict<'a>> {
        match &self.kind {
            Kind::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// Re-encodes the tree (keys in received order). For canonical input
    /// this equals [`Value::raw`]; never hash the result of this.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut e = Encoder::new(out);
        self.encode_into(&mut e);
    }

    fn encode_into(&self, e: &mut Encoder<'_>) {
        match &self.kind {
            Kind::Int(v) => {
                e.int(*v);
            }
            Kind::Bytes(b) => {
                e.bytes(b);
            }
            Kind::List(items) => {
                e.list();
                for it in items {
                    it.encode_into(e);
                }
                e.end();
            }
            Kind::Dict(d) => {
                e.dict();
                for (k, v) in &d.entries {
                    e.bytes(k);
                    v.encode_into(e);
                }
                e.end();
            }
        }
    }
}

/// Decodes one complete value with [`Limits::default`] (the KRPC limits).
pub fn decode(input: &[u8]) -> Result<Value<'_>, DecodeError> {
    decode_with(input, Limits::default())
}

/// Decodes one complete value; trailing bytes are an error.
pub fn decode_with(input: &[u8], limits: Limits) -> Result<Value<'_>, DecodeError> {
    let mut p = Parser::new(input, limits);
    let v = build(&mut p)?;
    p.finish()?;
    Ok(v)
}

/// Recursion is bounded by the parser's depth limit (at most 128).
fn build<'a>(p: &mut Parser<'a>) -> Result<Value<'a>, DecodeError> {
    let start = p.offset();
    let kind = match p.next_item()? {
        Item::Int(v) => Kind::Int(v),
        Item::Bytes(b) => Kind::Bytes(b),
        Item::List => {
            let mut items = Vec::new();
            while p.list_has_next()? {
                items.push(build(p)?);
            }
            Kind::List(items)
        }
        Item::Dict => {
            let mut entries = Vec::new();
            while let Some(k) = p.next_key()? {
                let v = build(p)?;
                entries.push((k, v));
            }
            Kind::Dict(Dict { entries })
        }
        Item::End => {
            return Err(DecodeError {
                kind: super::DecodeErrorKind::UnexpectedEnd,
                offset: start,
            })
        }
    };
    Ok(Value {
        raw: &p.input()[start..p.offset()],
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bencode::DecodeErrorKind;

    #[test]
    fn tree_and_raw_spans() {
        let input = b"d1:md11:ut_metadatai3ee13:metadata_sizei31235e1:v4:abcde";
        let v = decode_with(input, Limits::EXTENSION).unwrap();
        let d = v.as_dict().unwrap();
        assert_eq!(d.dict(b"m").unwrap().int(b"ut_metadata"), Some(3));
        assert_eq!(d.int(b"metadata_size"), Some(31235));
        assert_eq!(d.bytes(b"v"), Some(&b"abcd"[..]));
        assert_eq!(d.get(b"m").unwrap().raw(), b"d11:ut_metadatai3ee");
        assert_eq!(v.raw(), input);
        let mut out = Vec::new();
        v.encode(&mut out);
        assert_eq!(out, input);
    }

    #[test]
    fn duplicates_first_wins() {
        let v = decode(b"d1:ai1e1:ai2ee").unwrap();
        assert_eq!(v.as_dict().unwrap().int(b"a"), Some(1));
    }

    #[test]
    fn errors_propagate() {
        assert_eq!(
            decode(b"li1e").unwrap_err().kind,
            DecodeErrorKind::UnexpectedEof
        );
        assert_eq!(
            decode(b"li1eex").unwrap_err().kind,
            DecodeErrorKind::TrailingBytes
        );
    }
}
