//! Bencode (BEP 3): a zero-copy pull decoder, a small tree for cold paths, and an
//! encoder that writes straight into a buffer.
//!
//! # Why a pull decoder
//!
//! The hot path (KRPC datagrams) wants to pick a dozen known keys out of a
//! 100–400 byte dictionary and ignore the rest. A pull parser
//! ([`Parser`]) lets the KRPC layer do exactly that with no allocation at all:
//! it walks the bytes once, hands out borrowed byte strings, and can skip an
//! unknown value while still validating it. The info dictionary
//! ([`crate::metainfo`]) is read with it too, straight into its own bounded
//! structures, skipping large values in steps ([`Parser::skip_step`]) so the
//! caller can pause. The extension handshake uses [`Value`], a tree built on
//! the same parser.
//!
//! # What is checked
//!
//! * Integers are checked `i64`: overflow, `i-0e`, leading zeros, an empty
//!   `ie`, a bare `-` and any non-digit are errors.
//! * String lengths are checked against the bytes actually left *before*
//!   anything is sliced or allocated, so `99999999:x` costs nothing.
//! * Nesting depth and the number of tokens are limited ([`Limits`]); KRPC uses
//!   libtorrent's 10 and 500.
//! * Trailing bytes after the top-level value are an error.
//! * Dictionary keys must be byte strings. Unsorted and duplicate keys are
//!   accepted (as libtorrent does) unless [`Limits::strict`] is set, in which
//!   case they are reported.
//!
//! Every error carries the byte offset where it was found.

mod decode;
mod encode;
mod value;

pub use decode::{DecodeError, DecodeErrorKind, Item, Limits, Parser, SkipState};
pub use encode::Encoder;
pub use value::{decode, decode_with, Dict, Value};
