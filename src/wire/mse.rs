//! Message Stream Encryption (MSE, also "PE", protocol encryption): the
//! obfuscated handshake that many BitTorrent clients put in front of the
//! peer wire, as a sans-IO state machine for both sides.
//!
//! The spec is the Azureus wiki's "Message Stream Encryption"; libtorrent's
//! `pe_crypto.cpp` and `bt_peer_connection.cpp` are the reference for the
//! details. A is the side that connects (the fetcher, [`MseInitiator`]),
//! B the side that accepts (the load generator's peers, [`MseReceiver`]):
//!
//! ```text
//! 1 A->B: Ya, PadA
//! 2 B->A: Yb, PadB
//! 3 A->B: HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
//!         ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
//! 4 B->A: ENCRYPT(VC, crypto_select, len(PadD), PadD), ENCRYPT2(payload)
//! 5 A->B: ENCRYPT2(payload)
//! ```
//!
//! * `Y = 2^X mod P`, P the 768-bit prime below, X 160 random bits; S the
//!   shared secret `Yb^Xa = Ya^Xb mod P`, 96 bytes big-endian.
//! * SKEY is the infohash: B learns which torrent A wants from the `req2`
//!   hash, so B must know the infohashes it serves.
//! * ENCRYPT is RC4 keyed `HASH('keyA', S, SKEY)` for A's bytes and
//!   `HASH('keyB', S, SKEY)` for B's, the first 1024 bytes of keystream
//!   discarded. VC is 8 zero bytes, which is how a side finds where the
//!   other's random padding ends.
//! * `crypto_provide`/`crypto_select` are 32-bit fields: 0x01 plaintext,
//!   0x02 RC4. ENCRYPT2 is RC4 continued when RC4 was selected, nothing
//!   when plaintext was (the handshake itself is always RC4).
//! * Pads are 0..=512 random bytes.
//!
//! # Bounds against hostile peers
//!
//! Every length is capped before anything waits for it: a side looks for the
//! other's VC (A) or `req1` hash (B) within the 512 pad bytes the spec
//! allows and fails at once when it is not there, PadC/PadD over 512 and IA
//! over [`MAX_IA`] are errors, and a `crypto_select` that is not exactly one
//! of the methods offered is an error. The raw bytes held while the
//! handshake runs are therefore at most about 1.2 KiB plus the read that
//! completed it. Time is the caller's: the machine fails with
//! [`MseError::Timeout`] at the deadline it was given, which the fetcher
//! sets to its handshake timeout, so an MSE handshake adds no time to a
//! fetch's limits: it spends them.
//!
//! # After the handshake
//!
//! [`Established`] carries the bytes already received past the handshake
//! (decrypted) and the [`Cipher`], if RC4 was selected, that the caller
//! applies to every later byte in both directions around the unchanged
//! peer-wire state machine.
//!
//! This file is about 780 lines of code: both sides of one handshake, sharing
//! the `Conduit` they are built on.

use std::time::Instant;

use num_bigint::BigUint;
use rc4::consts::U20;
use rc4::{KeyInit, Rc4, StreamCipher};
use sha1::{Digest, Sha1};

use crate::id::Id;
use crate::rng::Rng;

/// The 768-bit prime of the MSE Diffie-Hellman exchange.
const P_BYTES: [u8; 96] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xC9, 0x0F, 0xDA, 0xA2, 0x21, 0x68, 0xC2, 0x34,
    0xC4, 0xC6, 0x62, 0x8B, 0x80, 0xDC, 0x1C, 0xD1, 0x29, 0x02, 0x4E, 0x08, 0x8A, 0x67, 0xCC, 0x74,
    0x02, 0x0B, 0xBE, 0xA6, 0x3B, 0x13, 0x9B, 0x22, 0x51, 0x4A, 0x08, 0x79, 0x8E, 0x34, 0x04, 0xDD,
    0xEF, 0x95, 0x19, 0xB3, 0xCD, 0x3A, 0x43, 0x1B, 0x30, 0x2B, 0x0A, 0x6D, 0xF2, 0x5F, 0x14, 0x37,
    0x4F, 0xE1, 0x35, 0x6D, 0x6D, 0x51, 0xC2, 0x45, 0xE4, 0x85, 0xB5, 0x76, 0x62, 0x5E, 0x7E, 0xC6,
    0xF4, 0x4C, 0x42, 0xE9, 0xA6, 0x3A, 0x36, 0x21, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0x05, 0x63,
];

/// Length of a public key and of S on the wire.
pub const KEY_LEN: usize = 96;
/// Longest PadA, PadB, PadC or PadD.
pub const MAX_PAD: usize = 512;
/// Longest initial payload accepted (a BT handshake is 68 bytes; Azureus
/// sends that, libtorrent sends none).
pub const MAX_IA: usize = 1024;
/// Keystream bytes discarded before use.
const DISCARD: usize = 1024;
/// The verification constant.
const VC: [u8; 8] = [0; 8];

/// `crypto_provide`/`crypto_select` bit: plaintext after the handshake.
pub const CRYPTO_PLAINTEXT: u32 = 0x01;
/// `crypto_provide`/`crypto_select` bit: RC4 after the handshake.
pub const CRYPTO_RC4: u32 = 0x02;

/// The first bytes of a plaintext BT handshake, which a receiver that also
/// takes plaintext recognises.
const BT_PROTOCOL: &[u8; 20] = b"\x13BitTorrent protocol";

/// Why a handshake failed. Every variant is terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MseError {
    /// No VC (initiator) or `req1` hash (receiver) within the pad limit:
    /// the peer does not speak MSE, or speaks it with other keys.
    #[error("no MSE sync within {0} bytes")]
    NoSync(usize),
    /// The decrypted VC is not 8 zero bytes: the peer used other keys.
    #[error("wrong verification constant")]
    BadVc,
    /// The `req2` hash names no torrent this side serves.
    #[error("unknown infohash in MSE req2")]
    UnknownInfoHash,
    /// A public key of 0, 1, P-1 or more (a degenerate shared secret).
    #[error("degenerate Diffie-Hellman public key")]
    BadPublicKey,
    /// PadC or PadD over 512 bytes.
    #[error("pad of {0} bytes over the 512 limit")]
    PadTooLong(u16),
    /// An initial payload over [`MAX_IA`].
    #[error("initial payload of {0} bytes over the limit")]
    IaTooLong(u16),
    /// `crypto_select` is not exactly one of the methods offered.
    #[error("crypto_select {0:#x} is not one method we offered")]
    BadSelect(u32),
    /// No method in `crypto_provide` that this side accepts.
    #[error("no common crypto method in {0:#x}")]
    NoCommonMethod(u32),
    /// A plaintext BT handshake at a receiver that requires encryption.
    #[error("plaintext handshake refused")]
    PlaintextRefused,
    /// The peer closed the connection during the handshake.
    #[error("closed during the MSE handshake")]
    Closed,
    /// The deadline passed during the handshake.
    #[error("MSE handshake timeout")]
    Timeout,
}

impl MseError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            MseError::NoSync(_) => "no_sync",
            MseError::BadVc => "bad_vc",
            MseError::UnknownInfoHash => "unknown_infohash",
            MseError::BadPublicKey => "bad_public_key",
            MseError::PadTooLong(_) => "pad_too_long",
            MseError::IaTooLong(_) => "ia_too_long",
            MseError::BadSelect(_) => "bad_select",
            MseError::NoCommonMethod(_) => "no_common_method",
            MseError::PlaintextRefused => "plaintext_refused",
            MseError::Closed => "closed",
            MseError::Timeout => "timeout",
        }
    }
}

/// What a side accepts after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Methods {
    /// RC4 only (`crypto_provide` 0x02).
    Rc4,
    /// RC4 or plaintext (0x03); a receiver picks RC4 when offered.
    Either,
    /// Plaintext after an obfuscated handshake (0x01).
    Plaintext,
}

impl Methods {
    fn bits(self) -> u32 {
        match self {
            Methods::Rc4 => CRYPTO_RC4,
            Methods::Either => CRYPTO_RC4 | CRYPTO_PLAINTEXT,
            Methods::Plaintext => CRYPTO_PLAINTEXT,
        }
    }
}

/// RC4 both ways, once a handshake selected it.
pub struct Cipher {
    enc: Rc4<U20>,
    dec: Rc4<U20>,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(rc4)")
    }
}

impl Cipher {
    /// Encrypts bytes going to the peer, in place.
    pub fn encrypt(&mut self, bytes: &mut [u8]) {
        self.enc.apply_keystream(bytes);
    }

    /// Decrypts bytes from the peer, in place.
    pub fn decrypt(&mut self, bytes: &mut [u8]) {
        self.dec.apply_keystream(bytes);
    }
}

/// A finished handshake.
#[derive(Debug)]
pub struct Established {
    /// The RC4 state when RC4 was selected; `None` when the stream goes on
    /// in plaintext.
    pub cipher: Option<Cipher>,
    /// Bytes of the peer's payload already received (IA and what followed
    /// the handshake), decrypted.
    pub payload: Vec<u8>,
    /// Whether the peer came in plaintext without any MSE handshake (only a
    /// receiver that accepts plaintext reports this).
    pub plain_bt: bool,
}

/// The state of a finished or failed handshake.
#[derive(Debug)]
enum Done {
    Ok(Box<Established>),
    Failed(MseError),
    Taken,
}

impl Done {
    /// The outcome in `slot`, once (both sides' `poll_outcome`).
    fn take(slot: &mut Option<Done>) -> Option<Result<Established, MseError>> {
        let out = match slot.take()? {
            Done::Ok(e) => Some(Ok(*e)),
            Done::Failed(e) => Some(Err(e)),
            Done::Taken => None,
        };
        *slot = Some(Done::Taken);
        out
    }
}

fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn rc4(key: &[u8; 20]) -> Rc4<U20> {
    let mut c = Rc4::<U20>::new(key.into());
    let mut discard = [0u8; DISCARD];
    c.apply_keystream(&mut discard);
    c
}

/// A private key and its public key.
struct KeyPair {
    private: BigUint,
    public: [u8; KEY_LEN],
}

fn to_96(n: &BigUint) -> [u8; KEY_LEN] {
    let b = n.to_bytes_be();
    let mut out = [0u8; KEY_LEN];
    // Values below P always fit in 96 bytes.
    let start = KEY_LEN.saturating_sub(b.len());
    out[start..].copy_from_slice(&b[b.len().saturating_sub(KEY_LEN)..]);
    out
}

impl KeyPair {
    fn new(rng: &mut Rng) -> KeyPair {
        let mut x = [0u8; 20];
        rng.fill(&mut x);
        let private = BigUint::from_bytes_be(&x);
        let p = BigUint::from_bytes_be(&P_BYTES);
        let public = to_96(&BigUint::from(2u32).modpow(&private, &p));
        KeyPair { private, public }
    }

    /// S from the other side's public key.
    fn shared(&self, other: &[u8]) -> Result<[u8; KEY_LEN], MseError> {
        let p = BigUint::from_bytes_be(&P_BYTES);
        let y = BigUint::from_bytes_be(other);
        let one = BigUint::from(1u32);
        if y <= one || y >= &p - &one {
            return Err(MseError::BadPublicKey);
        }
        Ok(to_96(&y.modpow(&self.private, &p)))
    }
}

fn random_pad(rng: &mut Rng, out: &mut Vec<u8>) {
    // Short pads: the spec allows 512, but every byte is a byte on the wire
    // and obfuscation needs only that lengths vary.
    let n = rng.below(65) as usize;
    let start = out.len();
    out.resize(start + n, 0);
    rng.fill(&mut out[start..]);
}

/// What both sides of a handshake hold alike and do alike: this side's key
/// pair and RNG, the bytes read and not yet consumed, the bytes to send,
/// the handshake keystreams once known, and the outcome. Each side's
/// [`Side::advance`] is the only part that differs.
struct Conduit {
    keys: KeyPair,
    rng: Rng,
    raw: Vec<u8>,
    /// Where the unconsumed part of `raw` starts.
    pos: usize,
    out: Vec<u8>,
    enc: Option<Rc4<U20>>,
    dec: Option<Rc4<U20>>,
    done: Option<Done>,
}

impl Conduit {
    fn new(mut rng: Rng) -> Self {
        let keys = KeyPair::new(&mut rng);
        Conduit {
            keys,
            rng,
            raw: Vec::new(),
            pos: 0,
            out: Vec::with_capacity(KEY_LEN + 64),
            enc: None,
            dec: None,
            done: None,
        }
    }

    fn avail(&self) -> usize {
        self.raw.len() - self.pos
    }

    fn fail(&mut self, e: MseError) {
        self.done = Some(Done::Failed(e));
        self.raw = Vec::new();
        self.out.clear();
    }

    /// Steps 1 and 2: this side's public key and a random pad.
    fn send_public_key(&mut self) {
        self.out.extend_from_slice(&self.keys.public);
        random_pad(&mut self.rng, &mut self.out);
    }

    /// S from the peer's public key, which starts the stream.
    fn shared_secret(&mut self) -> Result<[u8; KEY_LEN], MseError> {
        let s = self.keys.shared(&self.raw[..KEY_LEN])?;
        self.pos = KEY_LEN;
        Ok(s)
    }

    /// Looks for `want` within [`MAX_PAD`] bytes of padding: `Ok(true)` and
    /// consumed through it when found, `Ok(false)` while more bytes may
    /// still bring it, [`MseError::NoSync`] once the pad allowance is
    /// spent.
    fn sync_on(&mut self, want: &[u8]) -> Result<bool, MseError> {
        let window = &self.raw[self.pos..];
        let limit = MAX_PAD + want.len();
        if let Some(i) = window
            .windows(want.len())
            .take(MAX_PAD + 1)
            .position(|w| w == want)
        {
            self.pos += i + want.len();
            Ok(true)
        } else if window.len() >= limit {
            Err(MseError::NoSync(limit))
        } else {
            Ok(false)
        }
    }

    /// Decrypts and consumes the next `n` raw bytes (the caller has checked
    /// that they are there).
    fn read_decrypted(&mut self, n: usize) -> Vec<u8> {
        let mut b = self.raw[self.pos..self.pos + n].to_vec();
        self.pos += n;
        if let Some(dec) = self.dec.as_mut() {
            dec.apply_keystream(&mut b);
        }
        b
    }

    /// `ENCRYPT(VC, crypto field, len(pad), pad)` and `trailer` (A's
    /// `len(IA)`), encrypted with `enc`.
    fn send_vc_block(&mut self, enc: &mut Rc4<U20>, crypto: u32, trailer: &[u8]) {
        let start = self.out.len();
        self.out.extend_from_slice(&VC);
        self.out.extend_from_slice(&crypto.to_be_bytes());
        let mut pad = Vec::new();
        random_pad(&mut self.rng, &mut pad);
        self.out
            .extend_from_slice(&(pad.len() as u16).to_be_bytes());
        self.out.extend_from_slice(&pad);
        self.out.extend_from_slice(trailer);
        enc.apply_keystream(&mut self.out[start..]);
    }

    /// The handshake is over with `select`: everything past the consumed
    /// bytes is payload (decrypted when RC4 goes on), after `payload`.
    fn establish(&mut self, select: u32, enc: Rc4<U20>, mut dec: Rc4<U20>, mut payload: Vec<u8>) {
        let mut rest = self.raw.split_off(self.pos);
        self.raw = Vec::new();
        let cipher = if select == CRYPTO_RC4 {
            dec.apply_keystream(&mut rest);
            Some(Cipher { enc, dec })
        } else {
            // Plaintext from here: the keystreams go unused.
            None
        };
        payload.extend_from_slice(&rest);
        self.done = Some(Done::Ok(Box::new(Established {
            cipher,
            payload,
            plain_bt: false,
        })));
    }
}

/// One side's part of the handshake: its states and what it does with the
/// bytes the [`Conduit`] holds.
trait Side {
    /// Consumes what it can of the conduit's raw bytes; returns when it
    /// needs more or has finished (the outcome set in `c.done`).
    fn advance(&mut self, c: &mut Conduit) -> Result<(), MseError>;
}

/// A handshake in progress, either side: [`MseInitiator`] or
/// [`MseReceiver`].
pub struct Handshake<S> {
    side: S,
    c: Conduit,
}

#[expect(
    private_bounds,
    reason = "the two sides are this module's own; callers name MseInitiator and MseReceiver"
)]
impl<S: Side> Handshake<S> {
    /// Appends the bytes to send to `out`; returns how many.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        let n = self.c.out.len();
        out.append(&mut self.c.out);
        n
    }

    /// The peer closed the connection.
    pub fn handle_eof(&mut self) {
        if self.c.done.is_none() {
            self.c.fail(MseError::Closed);
        }
    }

    /// Raw bytes held, for the memory bounds.
    pub fn buffered(&self) -> usize {
        self.c.raw.capacity()
    }

    /// Whether an outcome is ready or was taken.
    pub fn is_finished(&self) -> bool {
        self.c.done.is_some()
    }

    /// The outcome, once.
    pub fn poll_outcome(&mut self) -> Option<Result<Established, MseError>> {
        Done::take(&mut self.c.done)
    }

    /// Feeds bytes read from the peer.
    pub fn handle_data(&mut self, bytes: &[u8]) {
        if self.c.done.is_some() {
            return;
        }
        self.c.raw.extend_from_slice(bytes);
        if let Err(e) = self.side.advance(&mut self.c) {
            self.c.fail(e);
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for Handshake<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("side", &self.side)
            .field("raw", &self.c.raw.len())
            .field("done", &self.c.done)
            .finish_non_exhaustive()
    }
}

/// The connecting side of an MSE handshake (the fetcher).
pub type MseInitiator = Handshake<Initiating>;

/// The accepting side of an MSE handshake (the load generator's peers; a
/// fetcher never accepts).
pub type MseReceiver = Handshake<Receiving>;

/// Where an initiator is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IState {
    /// Waiting for Yb.
    Yb,
    /// Looking for ENCRYPT(VC) after Yb.
    Vc,
    /// Waiting for crypto_select and len(PadD).
    Select,
    /// Skipping PadD.
    PadD { select: u32, len: usize },
}

/// The initiator's own part of [`MseInitiator`].
#[derive(Debug)]
pub struct Initiating {
    skey: Id,
    methods: Methods,
    deadline: Instant,
    state: IState,
    /// ENCRYPT(VC) as the peer will send it.
    vc: [u8; 8],
}

impl Handshake<Initiating> {
    /// Starts a handshake for `infohash` offering `methods`; fails with
    /// [`MseError::Timeout`] at `deadline`. Ya and PadA are ready to send.
    pub fn new(infohash: Id, methods: Methods, deadline: Instant, rng: Rng) -> Self {
        let mut c = Conduit::new(rng);
        c.send_public_key();
        Handshake {
            side: Initiating {
                skey: infohash,
                methods,
                deadline,
                state: IState::Yb,
                vc: [0; 8],
            },
            c,
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.c.done.is_none().then_some(self.side.deadline)
    }

    /// Fails the handshake if its deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.c.done.is_none() && now >= self.side.deadline {
            self.c.fail(MseError::Timeout);
        }
    }
}

impl Side for Initiating {
    fn advance(&mut self, c: &mut Conduit) -> Result<(), MseError> {
        loop {
            let avail = c.avail();
            match self.state {
                IState::Yb => {
                    if avail < KEY_LEN {
                        return Ok(());
                    }
                    let s = c.shared_secret()?;
                    let skey = self.skey.0;
                    let mut enc = rc4(&sha1(&[b"keyA", &s, &skey]));
                    // ENCRYPT(VC) is the keystream's first 8 bytes: keep them
                    // to look for, the cipher moves past them.
                    let mut dec = rc4(&sha1(&[b"keyB", &s, &skey]));
                    let mut want = VC;
                    dec.apply_keystream(&mut want);
                    self.vc = want;
                    c.out.extend_from_slice(&sha1(&[b"req1", &s]));
                    let req2 = sha1(&[b"req2", &skey]);
                    let req3 = sha1(&[b"req3", &s]);
                    c.out.extend(req2.iter().zip(req3).map(|(a, b)| a ^ b));
                    // No initial payload (len(IA) = 0): what follows depends
                    // on the method the peer selects.
                    c.send_vc_block(&mut enc, self.methods.bits(), &0u16.to_be_bytes());
                    c.enc = Some(enc);
                    c.dec = Some(dec);
                    self.state = IState::Vc;
                }
                IState::Vc => {
                    if !c.sync_on(&self.vc)? {
                        return Ok(());
                    }
                    self.state = IState::Select;
                }
                IState::Select => {
                    if avail < 6 {
                        return Ok(());
                    }
                    let b = c.read_decrypted(6);
                    let select = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                    if select.count_ones() != 1 || select & self.methods.bits() == 0 {
                        return Err(MseError::BadSelect(select));
                    }
                    let len = u16::from_be_bytes([b[4], b[5]]);
                    if usize::from(len) > MAX_PAD {
                        return Err(MseError::PadTooLong(len));
                    }
                    self.state = IState::PadD {
                        select,
                        len: usize::from(len),
                    };
                }
                IState::PadD { select, len } => {
                    if avail < len {
                        return Ok(());
                    }
                    // PadD moves the keystream on; its bytes mean nothing.
                    c.read_decrypted(len);
                    let (Some(enc), Some(dec)) = (c.enc.take(), c.dec.take()) else {
                        return Ok(());
                    };
                    c.establish(select, enc, dec, Vec::new());
                    return Ok(());
                }
            }
        }
    }
}

/// Where a receiver is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RState {
    /// Waiting for Ya (or a plaintext BT handshake).
    Ya,
    /// Looking for HASH('req1', S) after Ya.
    Req1,
    /// Waiting for the `req2 ^ req3` hash.
    Req2,
    /// Waiting for VC, crypto_provide and len(PadC).
    Provide,
    /// Skipping PadC, then reading len(IA).
    PadC { provide: u32, len: usize },
    /// Reading IA.
    Ia { provide: u32, len: usize },
}

/// The receiver's own part of [`MseReceiver`].
#[derive(Debug)]
pub struct Receiving {
    skeys: Vec<Id>,
    methods: Methods,
    accept_plain_bt: bool,
    s: [u8; KEY_LEN],
    state: RState,
}

impl Handshake<Receiving> {
    /// A receiver for the torrents `skeys`, selecting among `methods`;
    /// `accept_plain_bt` lets a plaintext BT handshake through unchanged
    /// (a peer that does not require encryption).
    pub fn new(skeys: Vec<Id>, methods: Methods, accept_plain_bt: bool, rng: Rng) -> Self {
        Handshake {
            side: Receiving {
                skeys,
                methods,
                accept_plain_bt,
                s: [0; KEY_LEN],
                state: RState::Ya,
            },
            c: Conduit::new(rng),
        }
    }
}

impl Side for Receiving {
    fn advance(&mut self, c: &mut Conduit) -> Result<(), MseError> {
        loop {
            let avail = c.avail();
            match self.state {
                RState::Ya => {
                    // A plaintext BT handshake starts with 19 and the
                    // protocol name; a public key does so with odds of
                    // 2^-160.
                    let n = c.raw.len().min(BT_PROTOCOL.len());
                    if c.raw[..n] == BT_PROTOCOL[..n] {
                        if n < BT_PROTOCOL.len() {
                            return Ok(());
                        }
                        if !self.accept_plain_bt {
                            return Err(MseError::PlaintextRefused);
                        }
                        c.done = Some(Done::Ok(Box::new(Established {
                            cipher: None,
                            payload: std::mem::take(&mut c.raw),
                            plain_bt: true,
                        })));
                        return Ok(());
                    }
                    if avail < KEY_LEN {
                        return Ok(());
                    }
                    self.s = c.shared_secret()?;
                    c.send_public_key();
                    self.state = RState::Req1;
                }
                RState::Req1 => {
                    if !c.sync_on(&sha1(&[b"req1", &self.s]))? {
                        return Ok(());
                    }
                    self.state = RState::Req2;
                }
                RState::Req2 => {
                    if avail < 20 {
                        return Ok(());
                    }
                    let req3 = sha1(&[b"req3", &self.s]);
                    let got: Vec<u8> = c.raw[c.pos..c.pos + 20]
                        .iter()
                        .zip(req3)
                        .map(|(a, b)| a ^ b)
                        .collect();
                    c.pos += 20;
                    let skey = self
                        .skeys
                        .iter()
                        .find(|k| sha1(&[b"req2", &k.0])[..] == got[..])
                        .copied()
                        .ok_or(MseError::UnknownInfoHash)?;
                    c.enc = Some(rc4(&sha1(&[b"keyB", &self.s, &skey.0])));
                    c.dec = Some(rc4(&sha1(&[b"keyA", &self.s, &skey.0])));
                    self.state = RState::Provide;
                }
                RState::Provide => {
                    if avail < 14 {
                        return Ok(());
                    }
                    let b = c.read_decrypted(14);
                    if b[..8] != VC {
                        return Err(MseError::BadVc);
                    }
                    let provide = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
                    let len = u16::from_be_bytes([b[12], b[13]]);
                    if usize::from(len) > MAX_PAD {
                        return Err(MseError::PadTooLong(len));
                    }
                    self.state = RState::PadC {
                        provide,
                        len: usize::from(len),
                    };
                }
                RState::PadC { provide, len } => {
                    if avail < len + 2 {
                        return Ok(());
                    }
                    let b = c.read_decrypted(len + 2);
                    let ia = u16::from_be_bytes([b[len], b[len + 1]]);
                    if usize::from(ia) > MAX_IA {
                        return Err(MseError::IaTooLong(ia));
                    }
                    self.state = RState::Ia {
                        provide,
                        len: usize::from(ia),
                    };
                }
                RState::Ia { provide, len } => {
                    if avail < len {
                        return Ok(());
                    }
                    let payload = c.read_decrypted(len);
                    let common = provide & self.methods.bits();
                    let select = if common & CRYPTO_RC4 != 0 {
                        CRYPTO_RC4
                    } else if common & CRYPTO_PLAINTEXT != 0 {
                        CRYPTO_PLAINTEXT
                    } else {
                        return Err(MseError::NoCommonMethod(provide));
                    };
                    let (Some(mut enc), Some(dec)) = (c.enc.take(), c.dec.take()) else {
                        return Ok(());
                    };
                    c.send_vc_block(&mut enc, select, &[]);
                    c.establish(select, enc, dec, payload);
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const IH: Id = Id([0x42; 20]);

    fn pair(am: Methods, bm: Methods, seed: u64) -> (MseInitiator, MseReceiver, Instant) {
        let t0 = Instant::now();
        let a = MseInitiator::new(
            IH,
            am,
            t0 + Duration::from_secs(10),
            Rng::seed_from_u64(seed),
        );
        let b = MseReceiver::new(
            vec![Id([1; 20]), IH],
            bm,
            false,
            Rng::seed_from_u64(seed + 1),
        );
        (a, b, t0)
    }

    /// Runs the handshake, delivering every write split at `split` (a
    /// write shorter than that goes whole); B's first payload bytes
    /// ("from B") go out in the same write as the end of its handshake.
    fn run(am: Methods, bm: Methods, seed: u64, split: usize) -> (Established, Established) {
        let (mut a, mut b, _) = pair(am, bm, seed);
        let mut eb = None;
        let mut late = Vec::new();
        for _ in 0..4 {
            let mut ab = Vec::new();
            a.poll_transmit(&mut ab);
            let (x, y) = ab.split_at(split.min(ab.len()));
            b.handle_data(x);
            b.handle_data(y);
            let mut ba = Vec::new();
            b.poll_transmit(&mut ba);
            if let Some(r) = b.poll_outcome() {
                let mut e: Established = r.expect("receiver");
                let mut hello = b"from B".to_vec();
                if let Some(c) = e.cipher.as_mut() {
                    c.encrypt(&mut hello);
                }
                ba.append(&mut hello);
                eb = Some(e);
            }
            // Bytes that arrive after the handshake ended belong to the
            // stream: the caller decrypts them itself.
            let (x, y) = ba.split_at(split.min(ba.len()));
            for part in [x, y] {
                if a.is_finished() {
                    late.extend_from_slice(part);
                } else {
                    a.handle_data(part);
                }
            }
        }
        let mut ea = match a.poll_outcome() {
            Some(Ok(e)) => e,
            other => panic!("initiator: {other:?}"),
        };
        if let Some(c) = ea.cipher.as_mut() {
            c.decrypt(&mut late);
        }
        ea.payload.append(&mut late);
        (ea, eb.expect("receiver finished"))
    }

    #[test]
    fn both_methods_agree_split_at_every_byte() {
        for (am, bm, rc4) in [
            (Methods::Rc4, Methods::Either, true),
            (Methods::Either, Methods::Rc4, true),
            (Methods::Either, Methods::Either, true),
            (Methods::Either, Methods::Plaintext, false),
            (Methods::Plaintext, Methods::Either, false),
        ] {
            // The longest write is A's Ya + PadA (≤ 96 + 64) or B's
            // Yb + PadB + step 4 (≤ 96 + 64 + 14 + 64 + 6).
            for split in 0..=250 {
                let seed = split as u64 * 7 + 3;
                let (mut ea, mut eb) = run(am, bm, seed, split);
                assert_eq!(ea.cipher.is_some(), rc4, "{am:?}/{bm:?}");
                assert_eq!(eb.cipher.is_some(), rc4);
                assert!(!eb.plain_bt);
                // B's payload tacked on after its handshake reached A,
                // decrypted.
                assert_eq!(ea.payload, b"from B", "split {split}");
                assert!(eb.payload.is_empty());
                // Then the stream both ways.
                let mut msg = b"\x13BitTorrent protocol and more".to_vec();
                if let Some(c) = ea.cipher.as_mut() {
                    c.encrypt(&mut msg);
                    assert_ne!(&msg[..], b"\x13BitTorrent protocol and more");
                }
                if let Some(c) = eb.cipher.as_mut() {
                    c.decrypt(&mut msg);
                }
                assert_eq!(&msg[..], b"\x13BitTorrent protocol and more");
                let mut back = b"reply".to_vec();
                if let Some(c) = eb.cipher.as_mut() {
                    c.encrypt(&mut back);
                }
                if let Some(c) = ea.cipher.as_mut() {
                    c.decrypt(&mut back);
                }
                assert_eq!(back, b"reply");
            }
        }
    }

    #[test]
    fn byte_at_a_time() {
        let (mut a, mut b, _) = pair(Methods::Rc4, Methods::Rc4, 9);
        for _ in 0..4 {
            let mut ab = Vec::new();
            a.poll_transmit(&mut ab);
            for x in &ab {
                b.handle_data(std::slice::from_ref(x));
            }
            let mut ba = Vec::new();
            b.poll_transmit(&mut ba);
            for x in &ba {
                a.handle_data(std::slice::from_ref(x));
            }
        }
        assert!(matches!(
            a.poll_outcome(),
            Some(Ok(Established {
                cipher: Some(_),
                ..
            }))
        ));
        assert!(matches!(
            b.poll_outcome(),
            Some(Ok(Established {
                cipher: Some(_),
                ..
            }))
        ));
    }

    fn outcome_err<T: std::fmt::Debug>(o: Option<Result<T, MseError>>) -> MseError {
        match o {
            Some(Err(e)) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn no_common_method_is_an_error() {
        let (mut a, mut b, _) = pair(Methods::Plaintext, Methods::Rc4, 5);
        for _ in 0..3 {
            let mut ab = Vec::new();
            a.poll_transmit(&mut ab);
            b.handle_data(&ab);
            let mut ba = Vec::new();
            b.poll_transmit(&mut ba);
            a.handle_data(&ba);
        }
        assert_eq!(
            outcome_err(b.poll_outcome()),
            MseError::NoCommonMethod(CRYPTO_PLAINTEXT)
        );
    }

    #[test]
    fn unknown_infohash_is_an_error() {
        let t0 = Instant::now();
        let mut a = MseInitiator::new(
            Id([9; 20]),
            Methods::Rc4,
            t0 + Duration::from_secs(1),
            Rng::seed_from_u64(1),
        );
        let mut b = MseReceiver::new(vec![IH], Methods::Rc4, false, Rng::seed_from_u64(2));
        for _ in 0..3 {
            let mut ab = Vec::new();
            a.poll_transmit(&mut ab);
            b.handle_data(&ab);
            let mut ba = Vec::new();
            b.poll_transmit(&mut ba);
            a.handle_data(&ba);
        }
        assert_eq!(outcome_err(b.poll_outcome()), MseError::UnknownInfoHash);
    }

    #[test]
    fn junk_fails_fast_and_holds_little() {
        // Junk: a random "key" then no sync within the 520-byte window.
        let mut junk = vec![0u8; 700];
        Rng::seed_from_u64(77).fill(&mut junk);
        let (mut a, _, t0) = pair(Methods::Rc4, Methods::Rc4, 1);
        a.handle_data(&junk[..96]);
        assert!(!a.is_finished());
        for x in &junk[96..96 + 519] {
            a.handle_data(std::slice::from_ref(x));
        }
        assert!(!a.is_finished(), "VC may still come at pad offset 512");
        a.handle_data(&junk[615..616]);
        assert_eq!(outcome_err(a.poll_outcome()), MseError::NoSync(520));
        assert_eq!(a.buffered(), 0, "the buffer is released at once");
        assert_eq!(a.poll_timeout(), None);
        let _ = t0;

        let mut b = MseReceiver::new(vec![IH], Methods::Rc4, false, Rng::seed_from_u64(3));
        b.handle_data(&junk[..96 + 531]);
        assert!(!b.is_finished(), "532 bytes of sync window after Ya");
        b.handle_data(&junk[..1]);
        assert_eq!(outcome_err(b.poll_outcome()), MseError::NoSync(532));
    }

    #[test]
    fn degenerate_keys_are_refused() {
        for y in [0u8, 1] {
            let mut key = [0u8; 96];
            key[95] = y;
            let (mut a, _, _) = pair(Methods::Rc4, Methods::Rc4, 1);
            a.handle_data(&key);
            assert_eq!(outcome_err(a.poll_outcome()), MseError::BadPublicKey);
        }
        let (mut a, _, _) = pair(Methods::Rc4, Methods::Rc4, 1);
        a.handle_data(&P_BYTES);
        assert_eq!(outcome_err(a.poll_outcome()), MseError::BadPublicKey);
    }

    #[test]
    fn trickle_and_silence_end_at_the_deadline() {
        let (mut a, _, t0) = pair(Methods::Rc4, Methods::Rc4, 1);
        let deadline = a.poll_timeout().expect("a deadline");
        assert_eq!(deadline, t0 + Duration::from_secs(10));
        for i in 0..50u32 {
            a.handle_data(&[7]);
            a.handle_timeout(t0 + Duration::from_millis(u64::from(i) * 100));
        }
        assert!(!a.is_finished());
        a.handle_timeout(deadline);
        assert_eq!(outcome_err(a.poll_outcome()), MseError::Timeout);
        let (mut a, _, _) = pair(Methods::Rc4, Methods::Rc4, 1);
        a.handle_data(&[1, 2, 3]);
        a.handle_eof();
        assert_eq!(outcome_err(a.poll_outcome()), MseError::Closed);
    }

    /// Runs A and B up to B's answer, lets `edit` change the decrypted
    /// fields of B's step 4 (re-encrypted with B's key), and returns A's
    /// error.
    fn tamper_step4(edit: impl Fn(&mut Vec<u8>)) -> MseError {
        let (mut a, _, _) = pair(Methods::Rc4, Methods::Rc4, 11);
        let mut ya = Vec::new();
        a.poll_transmit(&mut ya);
        // A receiver with known keys, driven by hand for step 4.
        let mut b = MseReceiver::new(vec![IH], Methods::Rc4, false, Rng::seed_from_u64(12));
        b.handle_data(&ya);
        let mut yb = Vec::new();
        b.poll_transmit(&mut yb);
        a.handle_data(&yb[..KEY_LEN]);
        let s = b.side.s;
        let mut enc = rc4(&sha1(&[b"keyB", &s, &IH.0]));
        let mut step4 = Vec::new();
        step4.extend_from_slice(&VC);
        step4.extend_from_slice(&CRYPTO_RC4.to_be_bytes());
        step4.extend_from_slice(&0u16.to_be_bytes());
        edit(&mut step4);
        enc.apply_keystream(&mut step4);
        a.handle_data(&step4);
        outcome_err(a.poll_outcome())
    }

    #[test]
    fn hostile_step4_fields_are_clear_errors() {
        assert_eq!(
            tamper_step4(|b| b[8..12].copy_from_slice(&3u32.to_be_bytes())),
            MseError::BadSelect(3)
        );
        assert_eq!(
            tamper_step4(|b| b[8..12].copy_from_slice(&1u32.to_be_bytes())),
            MseError::BadSelect(1),
            "plaintext was not offered"
        );
        assert_eq!(
            tamper_step4(|b| b[12..14].copy_from_slice(&513u16.to_be_bytes())),
            MseError::PadTooLong(513)
        );
        // A wrong VC never matches what A looks for: no sync.
        assert_eq!(
            tamper_step4(|b| {
                b[0] = 1;
                b.resize(600, 0);
            }),
            MseError::NoSync(520)
        );
    }

    #[test]
    fn hostile_step3_fields_are_clear_errors() {
        // Drive B with a hand-built step 3.
        let build = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut b = MseReceiver::new(vec![IH], Methods::Either, false, Rng::seed_from_u64(4));
            let a_keys = KeyPair::new(&mut Rng::seed_from_u64(5));
            b.handle_data(&a_keys.public);
            let mut yb = Vec::new();
            b.poll_transmit(&mut yb);
            let s = a_keys.shared(&yb[..KEY_LEN]).expect("shared");
            let mut m = Vec::new();
            m.extend_from_slice(&sha1(&[b"req1", &s]));
            let req2 = sha1(&[b"req2", &IH.0]);
            m.extend(req2.iter().zip(sha1(&[b"req3", &s])).map(|(x, y)| x ^ y));
            let mut body = Vec::new();
            body.extend_from_slice(&VC);
            body.extend_from_slice(&CRYPTO_RC4.to_be_bytes());
            body.extend_from_slice(&0u16.to_be_bytes());
            body.extend_from_slice(&0u16.to_be_bytes());
            edit(&mut body);
            rc4(&sha1(&[b"keyA", &s, &IH.0])).apply_keystream(&mut body);
            m.extend_from_slice(&body);
            b.handle_data(&m);
            b.poll_outcome()
        };
        assert!(
            matches!(build(&|_| {}), Some(Ok(_))),
            "the unedited step 3 works"
        );
        assert_eq!(outcome_err(build(&|b| b[0] = 1)), MseError::BadVc);
        assert_eq!(
            outcome_err(build(&|b| b[12..14].copy_from_slice(&600u16.to_be_bytes()))),
            MseError::PadTooLong(600)
        );
        assert_eq!(
            outcome_err(build(&|b| b[14..16].copy_from_slice(&2000u16.to_be_bytes()))),
            MseError::IaTooLong(2000)
        );
    }

    #[test]
    fn plaintext_bt_handshake_at_a_receiver() {
        let mut hs = Vec::new();
        crate::wire::handshake::Handshake::ours(IH, [1; 20]).encode(&mut hs);
        let mut strict = MseReceiver::new(vec![IH], Methods::Rc4, false, Rng::seed_from_u64(1));
        strict.handle_data(&hs[..5]);
        assert!(!strict.is_finished());
        strict.handle_data(&hs[5..]);
        assert_eq!(
            outcome_err(strict.poll_outcome()),
            MseError::PlaintextRefused
        );
        let mut lax = MseReceiver::new(vec![IH], Methods::Either, true, Rng::seed_from_u64(1));
        lax.handle_data(&hs);
        match lax.poll_outcome() {
            Some(Ok(e)) => {
                assert!(e.plain_bt && e.cipher.is_none());
                assert_eq!(e.payload, hs, "the handshake is handed on whole");
            }
            other => panic!("{other:?}"),
        }
    }
}
