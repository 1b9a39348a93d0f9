//! uTP: the header parser on arbitrary bytes, and both ends of a
//! connection fed arbitrary datagrams at arbitrary times. Never panics;
//! a parsed packet re-encodes to the bytes it came from (up to unknown
//! extensions); the receive side never holds more than its window; the
//! send side never more than its buffer; every connection ends (or stays
//! within its timers) once time runs past the idle timeout.
//!
//! Input layout: byte 0 picks the mode, the rest drives it.
//!
//! * mode 0: the whole input is one datagram for `Packet::parse`.
//! * mode 1: an initiator after a real handshake is fed the input as
//!   datagrams: each record is `[len_hi, len_lo, dt_ms, header..]`, whose
//!   header bytes are laid over a valid DATA/STATE/FIN header for the
//!   connection (so that the fuzzer reaches past the id check), then
//!   `len` bytes of payload taken from the input.
//! * mode 2: the same against an acceptor.
#![no_main]

use std::time::{Duration, Instant};

use dht_hunter::wire::utp::{
    Packet, PacketType, UtpConfig, UtpConnection, HEADER_LEN, RECV_WINDOW, SEND_BUFFER,
};
use libfuzzer_sys::fuzz_target;

fn parse_only(data: &[u8]) {
    if let Ok(p) = Packet::parse(data) {
        assert!(p.payload.len() + HEADER_LEN <= data.len());
        if p.sack.is_some() || data[1] == 0 {
            // Without unknown extensions the encoding is canonical.
            let only_sack = p.sack.is_none() || (data[1] == 1 && data[HEADER_LEN] == 0);
            if only_sack {
                let mut out = Vec::new();
                Packet {
                    ty: p.ty,
                    conn_id: p.conn_id,
                    timestamp: p.timestamp,
                    timestamp_diff: p.timestamp_diff,
                    wnd_size: p.wnd_size,
                    seq_nr: p.seq_nr,
                    ack_nr: p.ack_nr,
                    sack: p.sack,
                    payload: p.payload,
                }
                .encode(&mut out);
                assert_eq!(out, data);
            }
        }
    }
}

/// A connected pair: (initiator, acceptor).
fn pair(now: Instant) -> Option<(UtpConnection, UtpConnection)> {
    let mut a = UtpConnection::connect(500, 1000, UtpConfig::default(), now);
    let syn = a.poll_transmit(now)?;
    let mut b = UtpConnection::accept(&syn, 7000, UtpConfig::default(), now).ok()?;
    let st = b.poll_transmit(now)?;
    a.handle_datagram(&st, now).ok()?;
    Some((a, b))
}

fn drive(data: &[u8], acceptor: bool) {
    let t0 = Instant::now();
    let Some((mut a, mut b)) = pair(t0) else {
        panic!("the handshake failed");
    };
    // Both ends have data to send, so acks of sent packets are meaningful.
    a.write(&[0xAA; 40_000]);
    b.write(&[0xBB; 40_000]);
    let (target, conn_id, seq_base, ack_base) = if acceptor {
        (&mut b, 501u16, 1001u16, 6999u16)
    } else {
        (&mut a, 500u16, 7000u16, 1000u16)
    };
    let mut now = t0;
    let mut rest = data;
    let mut got = Vec::new();
    while rest.len() >= 3 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])) % 3000;
        now += Duration::from_millis(u64::from(rest[2]) * 4);
        rest = &rest[3..];
        let hdr_n = rest.len().min(HEADER_LEN);
        let mut d = Vec::new();
        let ty = match rest.first().copied().unwrap_or(0) % 3 {
            0 => PacketType::Data,
            1 => PacketType::State,
            _ => PacketType::Fin,
        };
        Packet {
            ty,
            conn_id,
            timestamp: 0,
            timestamp_diff: 0,
            wnd_size: RECV_WINDOW as u32,
            seq_nr: seq_base,
            ack_nr: ack_base,
            sack: None,
            payload: &[],
        }
        .encode(&mut d);
        // Overlay fuzz bytes on the header past its first (type) byte
        // where the fuzzer says so: byte value 0 keeps the valid byte.
        for (i, &b) in rest[..hdr_n].iter().enumerate().skip(1) {
            if b != 0 {
                d[i] ^= b;
            }
        }
        rest = &rest[hdr_n..];
        let n = len.min(rest.len());
        d.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        let _ = target.handle_datagram(&d, now);
        while target.poll_transmit(now).is_some() {}
        if target.poll_timeout().is_some_and(|t| t <= now) {
            target.handle_timeout(now);
        }
        assert!(target.buffered() <= RECV_WINDOW);
        assert!(target.send_capacity() <= SEND_BUFFER);
        target.read(&mut got);
        got.clear();
    }
    // Past every timer: the connection ends (the peer went silent).
    let late = now + Duration::from_secs(600);
    for _ in 0..64 {
        while target.poll_transmit(late).is_some() {}
        match target.poll_timeout() {
            Some(t) if t <= late => target.handle_timeout(late),
            _ => break,
        }
    }
    assert!(target.is_ended(), "{:?}", target.state());
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => parse_only(rest),
        1 => drive(rest, false),
        _ => drive(rest, true),
    }
});
