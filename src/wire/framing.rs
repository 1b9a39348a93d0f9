//! Length-prefixed peer-wire messages (BEP 3), read incrementally.
//!
//! Every message after the handshake is `u32 BE length`, then `length` bytes
//! of which the first is the message id. Length 0 is a keep-alive.
//!
//! # Limits, and why nothing is allocated from a length field
//!
//! * A length over [`MAX_FRAME`] (1 MiB), which includes every length that
//!   would be negative as an `i32` (2^31 and above), is an error as soon as the
//!   four length bytes are in: libtorrent disconnects on the same rule
//!   (`bt_peer_connection.cpp`).
//! * The caller decides per message, from its id (and, for BEP 10 extended
//!   messages, from the extension sub-id that follows it), whether to keep the
//!   message — with its own, tighter limit — or skip it. A skipped message is
//!   counted down and discarded as it arrives: it is never buffered, so
//!   bitfields, `have`s, `PORT` and whatever else a peer sends cost nothing.
//! * A kept message is buffered as its bytes arrive; the buffer grows with
//!   the bytes actually received, never by reserving the advertised length, so
//!   a peer that announces a large message and then sends nothing costs
//!   nothing either.

/// The largest frame accepted at all (libtorrent's limit).
pub const MAX_FRAME: u32 = 1024 * 1024;

/// Message id of a BEP 10 extended message.
pub const MSG_EXTENDED: u8 = 20;

/// What to do with an incoming message, decided from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Buffer it and hand it over whole; its length (id byte included) must
    /// not exceed `max_len`.
    Keep {
        /// The largest length accepted for this kind of message.
        max_len: u32,
    },
    /// Discard it as it arrives.
    Skip,
}

/// A frame whose length is over the limit for its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("message of {len} bytes exceeds the {limit}-byte limit")]
pub struct FrameTooLarge {
    /// The length the peer announced.
    pub len: u32,
    /// The limit it broke.
    pub limit: u32,
}

/// One step of the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The input is used up; more bytes are needed.
    NeedMore,
    /// A keep-alive (length 0).
    KeepAlive,
    /// A kept message is complete: read it with [`FrameReader::message`].
    Message,
    /// A skipped message has been discarded completely.
    Skipped {
        /// Its message id.
        id: u8,
        /// Its length.
        len: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the length, the id and (for extended messages) the sub-id.
    Head,
    /// Buffering a kept message of `len` bytes.
    Body { len: u32 },
    /// Discarding `left` more bytes.
    Skip { id: u8, len: u32, left: u32 },
}

/// Splits a byte stream into messages; see the module docs for the limits.
#[derive(Debug, Clone)]
pub struct FrameReader {
    head: [u8; 6],
    head_len: usize,
    state: State,
    body: Vec<u8>,
}

impl Default for FrameReader {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameReader {
    /// A reader at a message boundary.
    pub fn new() -> Self {
        FrameReader {
            head: [0; 6],
            head_len: 0,
            state: State::Head,
            body: Vec::new(),
        }
    }

    /// The last complete kept message (id byte first), valid after
    /// [`Step::Message`] until the next call to [`FrameReader::read`].
    pub fn message(&self) -> &[u8] {
        &self.body
    }

    /// Takes the last complete kept message out of the reader, so the caller
    /// can work on it while mutating other state; hand the buffer back with
    /// [`FrameReader::recycle`] to keep its allocation.
    pub fn take_message(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.body)
    }

    /// Returns a buffer taken with [`FrameReader::take_message`].
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        buf.clear();
        self.body = buf;
    }

    /// Frees the internal buffer.
    pub fn release(&mut self) {
        self.body = Vec::new();
    }

    /// The capacity of the internal buffer: what a peer has made us allocate.
    pub fn buffer_capacity(&self) -> usize {
        self.body.capacity()
    }

    /// Consumes bytes from the front of `input` until one message (or
    /// keep-alive) is complete or the input is used up. `policy` is called
    /// once per message with its id and, for an extended message of length
    /// 2 or more, its extension sub-id. An error is terminal.
    pub fn read<F>(&mut self, input: &mut &[u8], policy: F) -> Result<Step, FrameTooLarge>
    where
        F: FnOnce(u8, Option<u8>) -> Policy,
    {
        match self.state {
            State::Head => self.read_head(input, policy),
            State::Body { len } => Ok(self.read_body(input, len)),
            State::Skip { id, len, left } => Ok(self.skip(input, id, len, left)),
        }
    }

    fn fill_head(&mut self, input: &mut &[u8], upto: usize) -> bool {
        while self.head_len < upto {
            let Some((&b, rest)) = input.split_first() else {
                return false;
            };
            if let Some(slot) = self.head.get_mut(self.head_len) {
                *slot = b;
            }
            self.head_len += 1;
            *input = rest;
        }
        true
    }

    fn read_head<F>(&mut self, input: &mut &[u8], policy: F) -> Result<Step, FrameTooLarge>
    where
        F: FnOnce(u8, Option<u8>) -> Policy,
    {
        if !self.fill_head(input, 4) {
            return Ok(Step::NeedMore);
        }
        let [a, b, c, d, _, _] = self.head;
        let len = u32::from_be_bytes([a, b, c, d]);
        if len == 0 {
            self.head_len = 0;
            return Ok(Step::KeepAlive);
        }
        if len > MAX_FRAME {
            return Err(FrameTooLarge {
                len,
                limit: MAX_FRAME,
            });
        }
        if !self.fill_head(input, 5) {
            return Ok(Step::NeedMore);
        }
        let id = self.head[4];
        let ext = id == MSG_EXTENDED && len >= 2;
        if ext && !self.fill_head(input, 6) {
            return Ok(Step::NeedMore);
        }
        let sub = ext.then_some(self.head[5]);
        let taken = self.head_len as u32 - 4;
        self.head_len = 0;
        match policy(id, sub) {
            Policy::Keep { max_len } => {
                if len > max_len {
                    return Err(FrameTooLarge {
                        len,
                        limit: max_len,
                    });
                }
                self.body.clear();
                self.body.push(id);
                if let Some(sub) = sub {
                    self.body.push(sub);
                }
                Ok(self.read_body(input, len))
            }
            Policy::Skip => Ok(self.skip(input, id, len, len.saturating_sub(taken))),
        }
    }

    fn read_body(&mut self, input: &mut &[u8], len: u32) -> Step {
        let want = (len as usize).saturating_sub(self.body.len());
        let take = want.min(input.len());
        let (head, rest) = input.split_at(take);
        self.body.extend_from_slice(head);
        *input = rest;
        if take == want {
            self.state = State::Head;
            Step::Message
        } else {
            self.state = State::Body { len };
            Step::NeedMore
        }
    }

    fn skip(&mut self, input: &mut &[u8], id: u8, len: u32, left: u32) -> Step {
        let take = (left as usize).min(input.len());
        *input = input.get(take..).unwrap_or_default();
        let left = left - take as u32;
        if left == 0 {
            self.state = State::Head;
            Step::Skipped { id, len }
        } else {
            self.state = State::Skip { id, len, left };
            Step::NeedMore
        }
    }
}

/// Appends a frame header: the length of `id` plus `body_len` bytes, then the
/// id. The caller appends exactly `body_len` bytes.
pub fn encode_header(out: &mut Vec<u8>, id: u8, body_len: usize) {
    let len = (body_len as u32).saturating_add(1);
    out.extend_from_slice(&len.to_be_bytes());
    out.push(id);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep_ext(id: u8, sub: Option<u8>) -> Policy {
        if id == MSG_EXTENDED && sub.is_some() {
            Policy::Keep { max_len: 100 }
        } else {
            Policy::Skip
        }
    }

    fn all_steps(r: &mut FrameReader, mut input: &[u8]) -> Vec<(Step, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            let s = r.read(&mut input, keep_ext).unwrap();
            if s == Step::NeedMore {
                assert!(input.is_empty());
                return out;
            }
            out.push((s, r.message().to_vec()));
        }
    }

    fn stream() -> Vec<u8> {
        let mut s = Vec::new();
        s.extend_from_slice(&[0, 0, 0, 0]); // keep-alive
        s.extend_from_slice(&[0, 0, 0, 5, 4, 0, 0, 0, 9]); // have
        s.extend_from_slice(&[0, 0, 0, 3, 9, 0x1a, 0xe1]); // PORT
        s.extend_from_slice(&[0, 0, 0, 4, 20, 3, b'a', b'b']); // extended
        s.extend_from_slice(&[0, 0, 0, 1, 20]); // extended without sub-id
        s.extend_from_slice(&[0, 0, 0, 2, 20, 0]); // extended, empty body
        s
    }

    #[test]
    fn every_split_gives_the_same_steps() {
        let s = stream();
        let mut whole = FrameReader::new();
        let expected = all_steps(&mut whole, &s);
        assert_eq!(
            expected.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![
                Step::KeepAlive,
                Step::Skipped { id: 4, len: 5 },
                Step::Skipped { id: 9, len: 3 },
                Step::Message,
                Step::Skipped { id: 20, len: 1 },
                Step::Message,
            ]
        );
        assert_eq!(expected[3].1, b"\x14\x03ab");
        assert_eq!(expected[5].1, b"\x14\x00");
        for split in 0..=s.len() {
            let mut r = FrameReader::new();
            let mut got = all_steps(&mut r, &s[..split]);
            got.extend(all_steps(&mut r, &s[split..]));
            assert_eq!(got, expected, "split at {split}");
        }
        let mut r = FrameReader::new();
        let mut got = Vec::new();
        for b in &s {
            got.extend(all_steps(&mut r, std::slice::from_ref(b)));
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn oversize_lengths_fail_without_allocating() {
        for len in [MAX_FRAME + 1, 1 << 31, u32::MAX] {
            let mut r = FrameReader::new();
            let bytes = len.to_be_bytes();
            let mut input = &bytes[..];
            assert_eq!(
                r.read(&mut input, keep_ext),
                Err(FrameTooLarge {
                    len,
                    limit: MAX_FRAME
                })
            );
            assert_eq!(r.buffer_capacity(), 0);
        }
        // Exactly 1 MiB is allowed, and skipping it buffers nothing.
        let mut r = FrameReader::new();
        let mut s = MAX_FRAME.to_be_bytes().to_vec();
        s.push(5);
        s.extend(std::iter::repeat_n(0u8, MAX_FRAME as usize - 1));
        let mut input = &s[..];
        assert_eq!(
            r.read(&mut input, keep_ext),
            Ok(Step::Skipped {
                id: 5,
                len: MAX_FRAME
            })
        );
        assert_eq!(r.buffer_capacity(), 0);
    }

    #[test]
    fn kept_message_over_its_own_limit_fails() {
        let mut r = FrameReader::new();
        let mut input = &[0u8, 0, 0, 101, 20, 1][..];
        assert_eq!(
            r.read(&mut input, keep_ext),
            Err(FrameTooLarge {
                len: 101,
                limit: 100
            })
        );
        assert_eq!(r.buffer_capacity(), 0);
    }

    #[test]
    fn announced_length_is_not_reserved() {
        let mut r = FrameReader::new();
        let mut input = &[0u8, 0, 0, 100, 20, 1, b'x'][..];
        assert_eq!(r.read(&mut input, keep_ext), Ok(Step::NeedMore));
        assert!(r.buffer_capacity() < 64, "{}", r.buffer_capacity());
    }

    #[test]
    fn header_encoding() {
        let mut out = Vec::new();
        encode_header(&mut out, 20, 3);
        assert_eq!(out, [0, 0, 0, 4, 20]);
    }
}
