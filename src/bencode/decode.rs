//! The zero-copy pull parser.

use std::fmt;

/// Hard ceiling on nesting, whatever [`Limits::max_depth`] says: the container
/// stack is two 128-bit masks, and the tree builder recurses once per level.
const DEPTH_CEILING: usize = 128;

/// Resource limits for one decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of lists and dictionaries (clamped to 128).
    pub max_depth: usize,
    /// Most values (integers, strings, lists, dictionaries, keys included).
    pub max_tokens: usize,
    /// Report unsorted and duplicate dictionary keys as errors.
    pub strict: bool,
}

impl Limits {
    /// libtorrent's limits for DHT datagrams (`dht_tracker.cpp`): depth 10,
    /// 500 tokens, lenient key order.
    pub const KRPC: Limits = Limits {
        max_depth: 10,
        max_tokens: 500,
        strict: false,
    };
    /// Limits for peer-wire extension messages (BEP 10/9 dictionaries).
    pub const EXTENSION: Limits = Limits {
        max_depth: 10,
        max_tokens: 2_000,
        strict: false,
    };
    /// Limits for an info dictionary: libtorrent's `load_torrent_limits`
    /// (depth 100, three million tokens).
    pub const METADATA: Limits = Limits {
        max_depth: 100,
        max_tokens: 3_000_000,
        strict: false,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::KRPC
    }
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// The input ended inside a value.
    UnexpectedEof,
    /// A byte that cannot start or continue a value here.
    UnexpectedByte(u8),
    /// `e` where a value was required (top level, or a dictionary value).
    UnexpectedEnd,
    /// An integer outside `i64`.
    IntOverflow,
    /// An integer with a leading zero (`i03e`).
    IntLeadingZero,
    /// `i-0e`.
    IntNegativeZero,
    /// `ie` or `i-e`.
    IntEmpty,
    /// A string length with a leading zero (`06:foobar`).
    LengthLeadingZero,
    /// A string length that does not fit in 64 bits.
    LengthOverflow,
    /// A string length longer than the bytes left.
    LengthExceedsInput {
        /// The length that was claimed.
        claimed: u64,
        /// The bytes that were left.
        remaining: usize,
    },
    /// Nesting deeper than the limit.
    DepthLimit(usize),
    /// More values than the limit.
    TokenLimit(usize),
    /// A dictionary key that is not a byte string.
    KeyNotString,
    /// A dictionary key that sorts before the previous one (strict mode).
    UnsortedKey,
    /// A dictionary key equal to the previous one (strict mode).
    DuplicateKey,
    /// Bytes after the complete top-level value.
    TrailingBytes,
    /// A value of another type than the caller asked for.
    WrongType {
        /// What the caller wanted.
        expected: &'static str,
    },
    /// A caller asked for a key outside a dictionary, or similar misuse.
    NotInDict,
}

/// A decode error and the byte offset where it was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bencode: {kind} at byte {offset}")]
pub struct DecodeError {
    /// What was wrong.
    pub kind: DecodeErrorKind,
    /// Where, as an offset into the input.
    pub offset: usize,
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnexpectedEof => write!(f, "unexpected end of input"),
            Self::UnexpectedByte(b) => write!(f, "unexpected byte {:?}", char::from(*b)),
            Self::UnexpectedEnd => write!(f, "'e' where a value was expected"),
            Self::IntOverflow => write!(f, "integer overflows i64"),
            Self::IntLeadingZero => write!(f, "integer with a leading zero"),
            Self::IntNegativeZero => write!(f, "negative zero"),
            Self::IntEmpty => write!(f, "integer without digits"),
            Self::LengthLeadingZero => write!(f, "string length with a leading zero"),
            Self::LengthOverflow => write!(f, "string length overflows"),
            Self::LengthExceedsInput { claimed, remaining } => write!(
                f,
                "string length {claimed} exceeds the {remaining} bytes left"
            ),
            Self::DepthLimit(n) => write!(f, "nesting deeper than {n}"),
            Self::TokenLimit(n) => write!(f, "more than {n} tokens"),
            Self::KeyNotString => write!(f, "dictionary key is not a byte string"),
            Self::UnsortedKey => write!(f, "dictionary keys out of order"),
            Self::DuplicateKey => write!(f, "duplicate dictionary key"),
            Self::TrailingBytes => write!(f, "trailing bytes after the value"),
            Self::WrongType { expected } => write!(f, "expected {expected}"),
            Self::NotInDict => write!(f, "not inside a dictionary"),
        }
    }
}

/// Where a [`Parser::skip_step`] left off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkipState {
    /// The value's start offset and the depth outside it, once begun.
    started: Option<(usize, usize)>,
}

/// One step of the pull parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item<'a> {
    /// An integer.
    Int(i64),
    /// A byte string, borrowed from the input.
    Bytes(&'a [u8]),
    /// The start of a list; its items follow, then [`Item::End`].
    List,
    /// The start of a dictionary; key, value pairs follow, then [`Item::End`].
    Dict,
    /// The end of the innermost list or dictionary.
    End,
}

/// A zero-copy, allocation-free pull parser over one bencoded value.
///
/// Errors are terminal: after any `Err` the parser's position is unspecified
/// and it must be dropped.
///
/// The container stack lives in two bit masks, so the parser never allocates
/// (strict mode keeps the previous key of each open dictionary in a small
/// vector, and is meant for cold paths).
#[derive(Debug)]
pub struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
    depth: usize,
    tokens: usize,
    limits: Limits,
    /// Bit d set: the container at depth d+1 is a dictionary.
    is_dict: u128,
    /// Bit d set: the dictionary at depth d+1 expects a key next.
    want_key: u128,
    /// The top-level value has been read completely.
    done: bool,
    last_keys: Vec<Option<&'a [u8]>>,
}

impl<'a> Parser<'a> {
    /// A parser over `buf` with the given limits.
    pub fn new(buf: &'a [u8], limits: Limits) -> Self {
        let mut limits = limits;
        limits.max_depth = limits.max_depth.min(DEPTH_CEILING);
        Parser {
            buf,
            pos: 0,
            depth: 0,
            tokens: 0,
            limits,
            is_dict: 0,
            want_key: 0,
            done: false,
            last_keys: Vec::new(),
        }
    }

    /// The current byte offset.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// The input.
    pub fn input(&self) -> &'a [u8] {
        self.buf
    }

    /// The current nesting depth (0 at the top level).
    pub fn depth(&self) -> usize {
        self.depth
    }

    fn err(&self, kind: DecodeErrorKind) -> DecodeError {
        DecodeError {
            kind,
            offset: self.pos,
        }
    }

    fn err_at(kind: DecodeErrorKind, offset: usize) -> DecodeError {
        DecodeError { kind, offset }
    }

    #[inline]
    fn top_bit(&self) -> u128 {
        1u128 << (self.depth - 1)
    }

    #[inline]
    fn in_dict(&self) -> bool {
        self.depth > 0 && self.is_dict & self.top_bit() != 0
    }

    #[inline]
    fn count_token(&mut self) -> Result<(), DecodeError> {
        self.tokens += 1;
        if self.tokens > self.limits.max_tokens {
            return Err(self.err(DecodeErrorKind::TokenLimit(self.limits.max_tokens)));
        }
        Ok(())
    }

    /// Reads the next item.
    ///
    /// Inside a dictionary the items alternate key ([`Item::Bytes`]) and value;
    /// a key that is not a byte string is an error.
    pub fn next_item(&mut self) -> Result<Item<'a>, DecodeError> {
        if self.depth == 0 && self.done {
            return Err(self.err(DecodeErrorKind::TrailingBytes));
        }
        let Some(&b) = self.buf.get(self.pos) else {
            return Err(self.err(DecodeErrorKind::UnexpectedEof));
        };
        if self.in_dict() {
            let bit = self.top_bit();
            if self.want_key & bit != 0 {
                if b == b'e' {
                    return Ok(self.close());
                }
                if !b.is_ascii_digit() {
                    return Err(self.err(DecodeErrorKind::KeyNotString));
                }
                let start = self.pos;
                let key = self.read_bytes()?;
                if self.limits.strict {
                    self.check_key_order(key, start)?;
                }
                self.want_key &= !bit;
                return Ok(Item::Bytes(key));
            }
            if b == b'e' {
                return Err(self.err(DecodeErrorKind::UnexpectedEnd));
            }
            // The value about to be read completes this pair.
            self.want_key |= bit;
        } else if b == b'e' {
            if self.depth == 0 {
                return Err(self.err(DecodeErrorKind::UnexpectedEnd));
            }
            return Ok(self.close());
        }
        self.read_value_start(b)
    }

    fn close(&mut self) -> Item<'a> {
        self.pos += 1;
        self.depth -= 1;
        if self.depth == 0 {
            self.done = true;
        }
        Item::End
    }

    fn read_value_start(&mut self, b: u8) -> Result<Item<'a>, DecodeError> {
        self.count_token()?;
        match b {
            b'i' => {
                let v = self.read_int()?;
                if self.depth == 0 {
                    self.done = true;
                }
                Ok(Item::Int(v))
            }
            b'0'..=b'9' => {
                let v = self.read_bytes()?;
                if self.depth == 0 {
                    self.done = true;
                }
                Ok(Item::Bytes(v))
            }
            b'l' | b'd' => {
                if self.depth >= self.limits.max_depth {
                    return Err(self.err(DecodeErrorKind::DepthLimit(self.limits.max_depth)));
                }
                self.pos += 1;
                self.depth += 1;
                let bit = self.top_bit();
                if b == b'd' {
                    self.is_dict |= bit;
                    self.want_key |= bit;
                    if self.limits.strict {
                        if self.last_keys.len() < self.depth {
                            self.last_keys.resize(self.depth, None);
                        }
                        self.last_keys[self.depth - 1] = None;
                    }
                    Ok(Item::Dict)
                } else {
                    self.is_dict &= !bit;
                    self.want_key &= !bit;
                    Ok(Item::List)
                }
            }
            other => Err(self.err(DecodeErrorKind::UnexpectedByte(other))),
        }
    }

    fn check_key_order(&mut self, key: &'a [u8], at: usize) -> Result<(), DecodeError> {
        let slot = self.depth - 1;
        if self.last_keys.len() <= slot {
            self.last_keys.resize(slot + 1, None);
        }
        if let Some(prev) = self.last_keys[slot] {
            match prev.cmp(key) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => {
                    return Err(Self::err_at(DecodeErrorKind::DuplicateKey, at))
                }
                std::cmp::Ordering::Greater => {
                    return Err(Self::err_at(DecodeErrorKind::UnsortedKey, at))
                }
            }
        }
        self.last_keys[slot] = Some(key);
        Ok(())
    }

    /// Parses `i…e` at `pos`.
    fn read_int(&mut self) -> Result<i64, DecodeError> {
        let start = self.pos;
        let mut p = self.pos + 1;
        let neg = self.buf.get(p) == Some(&b'-');
        if neg {
            p += 1;
        }
        let digits_start = p;
        // Accumulate as u64 magnitude; i64::MIN's magnitude is 2^63.
        let mut mag: u64 = 0;
        loop {
            let Some(&c) = self.buf.get(p) else {
                return Err(Self::err_at(DecodeErrorKind::UnexpectedEof, p));
            };
            match c {
                b'0'..=b'9' => {
                    mag = mag
                        .checked_mul(10)
                        .and_then(|m| m.checked_add(u64::from(c - b'0')))
                        .ok_or(Self::err_at(DecodeErrorKind::IntOverflow, start))?;
                    p += 1;
                }
                b'e' => break,
                other => return Err(Self::err_at(DecodeErrorKind::UnexpectedByte(other), p)),
            }
        }
        let ndigits = p - digits_start;
        if ndigits == 0 {
            return Err(Self::err_at(DecodeErrorKind::IntEmpty, start));
        }
        if self.buf[digits_start] == b'0' {
            if ndigits > 1 {
                return Err(Self::err_at(DecodeErrorKind::IntLeadingZero, start));
            }
            if neg {
                return Err(Self::err_at(DecodeErrorKind::IntNegativeZero, start));
            }
        }
        let v = if neg {
            if mag > 1u64 << 63 {
                return Err(Self::err_at(DecodeErrorKind::IntOverflow, start));
            }
            (mag as i64).wrapping_neg()
        } else {
            i64::try_from(mag).map_err(|_| Self::err_at(DecodeErrorKind::IntOverflow, start))?
        };
        self.pos = p + 1;
        Ok(v)
    }

    /// Parses `<len>:<bytes>` at `pos`.
    #[inline]
    fn read_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let start = self.pos;
        let mut p = self.pos;
        let mut len: u64 = 0;
        loop {
            let Some(&c) = self.buf.get(p) else {
                return Err(Self::err_at(DecodeErrorKind::UnexpectedEof, p));
            };
            match c {
                b'0'..=b'9' => {
                    len = len
                        .checked_mul(10)
                        .and_then(|m| m.checked_add(u64::from(c - b'0')))
                        .ok_or(Self::err_at(DecodeErrorKind::LengthOverflow, start))?;
                    p += 1;
                }
                b':' => break,
                other => return Err(Self::err_at(DecodeErrorKind::UnexpectedByte(other), p)),
            }
        }
        if p - start > 1 && self.buf[start] == b'0' {
            return Err(Self::err_at(DecodeErrorKind::LengthLeadingZero, start));
        }
        let body = p + 1;
        let remaining = self.buf.len() - body;
        if len > remaining as u64 {
            return Err(Self::err_at(
                DecodeErrorKind::LengthExceedsInput {
                    claimed: len,
                    remaining,
                },
                start,
            ));
        }
        let end = body + len as usize;
        self.pos = end;
        Ok(&self.buf[body..end])
    }

    /// Skips one complete value (validating it) and returns its raw bytes.
    pub fn skip(&mut self) -> Result<&'a [u8], DecodeError> {
        let mut state = SkipState::default();
        loop {
            if let Some(raw) = self.skip_step(&mut state, usize::MAX)? {
                return Ok(raw);
            }
        }
    }

    /// [`Parser::skip`] in steps, for callers that must not hold the thread
    /// for the whole of a large value: reads at most `max_items` items after
    /// the value's first (at least one), then returns `Ok(None)` (call again
    /// with the same `state`) or `Ok(Some(raw))` once the value is complete.
    #[inline]
    pub fn skip_step(
        &mut self,
        state: &mut SkipState,
        max_items: usize,
    ) -> Result<Option<&'a [u8]>, DecodeError> {
        let (start, base) = match state.started {
            Some(s) => s,
            None => {
                if self.in_dict() && self.want_key & self.top_bit() != 0 {
                    return Err(self.err(DecodeErrorKind::WrongType {
                        expected: "a key, not a value",
                    }));
                }
                let start = self.pos;
                let base = self.depth;
                match self.next_item()? {
                    Item::End => return Err(Self::err_at(DecodeErrorKind::UnexpectedEnd, start)),
                    Item::Int(_) | Item::Bytes(_) => return Ok(Some(&self.buf[start..self.pos])),
                    Item::List | Item::Dict => {}
                }
                state.started = Some((start, base));
                (start, base)
            }
        };
        let max_items = max_items.max(1);
        let mut n = 0;
        while self.depth > base {
            if n == max_items {
                return Ok(None);
            }
            self.next_item()?;
            n += 1;
        }
        Ok(Some(&self.buf[start..self.pos]))
    }

    /// Whether a value (not a key) may start here, and bookkeeping for it:
    /// counts the token and, inside a dictionary, marks the pair complete.
    #[inline]
    fn enter_value(&mut self) -> Result<bool, DecodeError> {
        if self.depth == 0 {
            if self.done {
                return Ok(false);
            }
        } else {
            let bit = self.top_bit();
            if self.is_dict & bit != 0 {
                if self.want_key & bit != 0 {
                    return Ok(false);
                }
                self.want_key |= bit;
            }
        }
        self.count_token()?;
        Ok(true)
    }

    /// Reads a byte string value.
    #[inline]
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        // Fast path: a string where a value is expected.
        if matches!(self.buf.get(self.pos), Some(b'0'..=b'9')) && self.enter_value()? {
            let v = self.read_bytes()?;
            if self.depth == 0 {
                self.done = true;
            }
            return Ok(v);
        }
        let at = self.pos;
        match self.next_item()? {
            Item::Bytes(b) => Ok(b),
            other => self.wrong_type(other, at, "a byte string"),
        }
    }

    /// Reads an integer value.
    #[inline]
    pub fn int(&mut self) -> Result<i64, DecodeError> {
        if self.buf.get(self.pos) == Some(&b'i') && self.enter_value()? {
            let v = self.read_int()?;
            if self.depth == 0 {
                self.done = true;
            }
            return Ok(v);
        }
        let at = self.pos;
        match self.next_item()? {
            Item::Int(v) => Ok(v),
            other => self.wrong_type(other, at, "an integer"),
        }
    }

    /// Consumes the start of a dictionary.
    pub fn dict(&mut self) -> Result<(), DecodeError> {
        let at = self.pos;
        match self.next_item()? {
            Item::Dict => Ok(()),
            other => self.wrong_type(other, at, "a dictionary"),
        }
    }

    /// Consumes the start of a list.
    pub fn list(&mut self) -> Result<(), DecodeError> {
        let at = self.pos;
        match self.next_item()? {
            Item::List => Ok(()),
            other => self.wrong_type(other, at, "a list"),
        }
    }

    /// Inside a dictionary: the next key, or `None` at its end (consumed).
    #[inline]
    pub fn next_key(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        if self.depth == 0 {
            return Err(self.err(DecodeErrorKind::NotInDict));
        }
        let bit = self.top_bit();
        if self.is_dict & bit == 0 || self.want_key & bit == 0 {
            return Err(self.err(DecodeErrorKind::NotInDict));
        }
        match self.buf.get(self.pos) {
            Some(b'e') => {
                self.close();
                Ok(None)
            }
            Some(b'0'..=b'9') => {
                let start = self.pos;
                let key = self.read_bytes()?;
                if self.limits.strict {
                    self.check_key_order(key, start)?;
                }
                self.want_key &= !bit;
                Ok(Some(key))
            }
            Some(_) => Err(self.err(DecodeErrorKind::KeyNotString)),
            None => Err(self.err(DecodeErrorKind::UnexpectedEof)),
        }
    }

    /// Inside a list: `true` if another item follows, `false` at its end
    /// (consumed).
    pub fn list_has_next(&mut self) -> Result<bool, DecodeError> {
        if self.depth == 0 || self.in_dict() {
            return Err(self.err(DecodeErrorKind::WrongType {
                expected: "to be inside a list",
            }));
        }
        match self.buf.get(self.pos) {
            Some(b'e') => {
                self.close();
                Ok(false)
            }
            Some(_) => Ok(true),
            None => Err(self.err(DecodeErrorKind::UnexpectedEof)),
        }
    }

    /// Checks that the top-level value is complete and nothing follows it.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if !self.done || self.depth != 0 {
            return Err(self.err(DecodeErrorKind::UnexpectedEof));
        }
        if self.pos != self.buf.len() {
            return Err(self.err(DecodeErrorKind::TrailingBytes));
        }
        Ok(())
    }

    /// A type mismatch names the offset where the offending value starts.
    /// Like every error, it is terminal: the parser must not be used after it.
    fn wrong_type<T>(
        &mut self,
        got: Item<'a>,
        at: usize,
        expected: &'static str,
    ) -> Result<T, DecodeError> {
        if matches!(got, Item::End) {
            return Err(Self::err_at(DecodeErrorKind::UnexpectedEnd, at));
        }
        Err(Self::err_at(DecodeErrorKind::WrongType { expected }, at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8], limits: Limits) -> Result<usize, DecodeError> {
        let mut p = Parser::new(input, limits);
        let mut n = 0;
        p.skip()?;
        n += 1;
        p.finish()?;
        Ok(n)
    }

    fn kind(input: &[u8]) -> DecodeErrorKind {
        parse_all(input, Limits::KRPC).expect_err("must fail").kind
    }

    fn int(input: &[u8]) -> Result<i64, DecodeErrorKind> {
        let mut p = Parser::new(input, Limits::KRPC);
        let v = p.int().map_err(|e| e.kind)?;
        p.finish().map_err(|e| e.kind)?;
        Ok(v)
    }

    #[test]
    fn integers() {
        assert_eq!(int(b"i0e"), Ok(0));
        assert_eq!(int(b"i-7e"), Ok(-7));
        assert_eq!(int(b"i9223372036854775807e"), Ok(i64::MAX));
        assert_eq!(int(b"i-9223372036854775808e"), Ok(i64::MIN));
        assert_eq!(
            int(b"i9223372036854775808e"),
            Err(DecodeErrorKind::IntOverflow)
        );
        assert_eq!(
            int(b"i-9223372036854775809e"),
            Err(DecodeErrorKind::IntOverflow)
        );
        assert_eq!(
            int(b"i18446744073709551615e"),
            Err(DecodeErrorKind::IntOverflow)
        );
        assert_eq!(
            int(b"i184467440737095516154e"),
            Err(DecodeErrorKind::IntOverflow)
        );
        assert_eq!(int(b"ie"), Err(DecodeErrorKind::IntEmpty));
        assert_eq!(int(b"i-e"), Err(DecodeErrorKind::IntEmpty));
        assert_eq!(
            int(b"i35412-5633e"),
            Err(DecodeErrorKind::UnexpectedByte(b'-'))
        );
        assert_eq!(int(b"i-"), Err(DecodeErrorKind::UnexpectedEof));
        assert_eq!(int(b"i9233t7e"), Err(DecodeErrorKind::UnexpectedByte(b't')));
        assert_eq!(int(b"i01e"), Err(DecodeErrorKind::IntLeadingZero));
        assert_eq!(int(b"i-0e"), Err(DecodeErrorKind::IntNegativeZero));
        assert_eq!(int(b"i1ex"), Err(DecodeErrorKind::TrailingBytes));
    }

    #[test]
    fn string_lengths_never_trusted() {
        assert_eq!(kind(b"06:foobar"), DecodeErrorKind::LengthLeadingZero);
        assert_eq!(kind(b"-10:x"), DecodeErrorKind::UnexpectedByte(b'-'));
        assert_eq!(
            kind(b"18446744073709551615:x"),
            DecodeErrorKind::LengthExceedsInput {
                claimed: u64::MAX,
                remaining: 1
            }
        );
        assert_eq!(
            kind(b"18446744073709551616:x"),
            DecodeErrorKind::LengthOverflow
        );
        assert_eq!(
            kind(b"99999999:x"),
            DecodeErrorKind::LengthExceedsInput {
                claimed: 99_999_999,
                remaining: 1
            }
        );
        assert_eq!(
            kind(b"199999999:"),
            DecodeErrorKind::LengthExceedsInput {
                claimed: 199_999_999,
                remaining: 0
            }
        );
        assert_eq!(
            kind(b"d2222222222:l"),
            DecodeErrorKind::LengthExceedsInput {
                claimed: 2_222_222_222,
                remaining: 1
            }
        );
        assert_eq!(
            kind(b"d1000:"),
            DecodeErrorKind::LengthExceedsInput {
                claimed: 1000,
                remaining: 0
            }
        );
        assert_eq!(parse_all(b"0:", Limits::KRPC), Ok(1));
    }

    #[test]
    fn structure_errors_and_offsets() {
        // Integer key.
        let e = parse_all(b"di5e1:ae", Limits::KRPC).unwrap_err();
        assert_eq!(
            e,
            DecodeError {
                kind: DecodeErrorKind::KeyNotString,
                offset: 1
            }
        );
        // Key without a value.
        let e = parse_all(b"d1:ai1e1:be", Limits::KRPC).unwrap_err();
        assert_eq!(
            e,
            DecodeError {
                kind: DecodeErrorKind::UnexpectedEnd,
                offset: 10
            }
        );
        // A NUL inside a key is fine: keys are bytes.
        assert_eq!(parse_all(b"d3:a\0bi1ee", Limits::KRPC), Ok(1));
        assert_eq!(kind(b"e"), DecodeErrorKind::UnexpectedEnd);
        assert_eq!(kind(b"l2:.."), DecodeErrorKind::UnexpectedEof);
        assert_eq!(kind(b"i1ei2e"), DecodeErrorKind::TrailingBytes);
        assert_eq!(kind(b""), DecodeErrorKind::UnexpectedEof);
        assert_eq!(kind(b"x"), DecodeErrorKind::UnexpectedByte(b'x'));
    }

    #[test]
    fn unsorted_and_duplicate_keys() {
        let unsorted = b"d1:bi1e1:ai2ee";
        let dup = b"d1:ai1e1:ai2ee";
        assert_eq!(parse_all(unsorted, Limits::KRPC), Ok(1));
        assert_eq!(parse_all(dup, Limits::KRPC), Ok(1));
        let strict = Limits {
            strict: true,
            ..Limits::KRPC
        };
        assert_eq!(
            parse_all(unsorted, strict).unwrap_err(),
            DecodeError {
                kind: DecodeErrorKind::UnsortedKey,
                offset: 7
            }
        );
        assert_eq!(
            parse_all(dup, strict).unwrap_err(),
            DecodeError {
                kind: DecodeErrorKind::DuplicateKey,
                offset: 7
            }
        );
        // Nested dictionaries keep their own order.
        assert_eq!(parse_all(b"d1:ad1:zi1ee1:bd1:ai1eee", strict), Ok(1));
    }

    #[test]
    fn depth_limit() {
        for n in [11usize, 1024, 20_000, 200_000] {
            let mut v = vec![b'l'; n];
            v.extend(std::iter::repeat_n(b'e', n));
            assert_eq!(kind(&v), DecodeErrorKind::DepthLimit(10), "depth {n}");
        }
        let mut ok = vec![b'l'; 10];
        ok.extend(std::iter::repeat_n(b'e', 10));
        assert_eq!(parse_all(&ok, Limits::KRPC), Ok(1));
        // The ceiling holds whatever the caller asks for.
        let huge = Limits {
            max_depth: usize::MAX,
            ..Limits::METADATA
        };
        let mut deep = vec![b'l'; 200];
        deep.extend(std::iter::repeat_n(b'e', 200));
        assert_eq!(
            parse_all(&deep, huge).unwrap_err().kind,
            DecodeErrorKind::DepthLimit(DEPTH_CEILING)
        );
    }

    #[test]
    fn token_limit() {
        let mut v = vec![b'l'];
        for _ in 0..5000 {
            v.extend_from_slice(b"0:");
        }
        v.push(b'e');
        assert_eq!(kind(&v), DecodeErrorKind::TokenLimit(500));
        assert_eq!(
            parse_all(&v, Limits::EXTENSION).unwrap_err().kind,
            DecodeErrorKind::TokenLimit(2000)
        );
        assert_eq!(parse_all(&v, Limits::METADATA), Ok(1));
    }

    #[test]
    fn skip_returns_raw_span() {
        let input = b"d4:infod4:name3:abc6:lengthi5ee1:xi1ee";
        let mut p = Parser::new(input, Limits::METADATA);
        p.dict().unwrap();
        assert_eq!(p.next_key().unwrap(), Some(&b"info"[..]));
        assert_eq!(p.skip().unwrap(), b"d4:name3:abc6:lengthi5ee");
        assert_eq!(p.next_key().unwrap(), Some(&b"x"[..]));
        assert_eq!(p.int().unwrap(), 1);
        assert_eq!(p.next_key().unwrap(), None);
        p.finish().unwrap();
    }

    #[test]
    fn skip_in_steps_matches_skip() {
        let input = b"d4:infod4:name3:abc5:filesld6:lengthi5eeee1:xi1ee";
        for max_items in [1, 2, 5, usize::MAX] {
            let mut p = Parser::new(input, Limits::METADATA);
            p.dict().unwrap();
            assert_eq!(p.next_key().unwrap(), Some(&b"info"[..]));
            let mut state = SkipState::default();
            let mut calls = 0;
            let raw = loop {
                calls += 1;
                if let Some(raw) = p.skip_step(&mut state, max_items).unwrap() {
                    break raw;
                }
            };
            assert_eq!(raw, b"d4:name3:abc5:filesld6:lengthi5eeee", "{max_items}");
            // 10 items follow the opening `d`.
            assert_eq!(calls, 10_usize.div_ceil(max_items), "{max_items}");
            assert_eq!(p.next_key().unwrap(), Some(&b"x"[..]));
            assert_eq!(p.int().unwrap(), 1);
            assert_eq!(p.next_key().unwrap(), None);
            p.finish().unwrap();
        }
        // Errors surface from whichever step reaches them.
        let mut p = Parser::new(b"ld1:ai1e1:bee", Limits::METADATA);
        let mut state = SkipState::default();
        let e = loop {
            match p.skip_step(&mut state, 1) {
                Ok(None) => continue,
                Ok(Some(_)) => panic!("accepted a key without value"),
                Err(e) => break e,
            }
        };
        assert_eq!(e.kind, DecodeErrorKind::UnexpectedEnd);
    }

    #[test]
    fn wrong_type_reports_offset() {
        let mut p = Parser::new(b"d1:ti5ee", Limits::KRPC);
        p.dict().unwrap();
        p.next_key().unwrap();
        let e = p.bytes().unwrap_err();
        assert_eq!(e.offset, 4);
        assert!(matches!(e.kind, DecodeErrorKind::WrongType { .. }));
        assert!(e.to_string().contains("at byte 4"));
    }
}
