//! The swarm peers' uTP side: one `IP_PKTINFO` UDP socket on the peers'
//! port stands in for every peer address, as the TCP listener does, and
//! runs the accepting end of [`UtpConnection`] with [`MetadataServe`]
//! behind it, on one thread.
//!
//! A peer planned as uTP-only ([`PeerPlan::utp_only`]) accepts uTP and
//! refuses TCP. Every other address, and a churning peer while it is away,
//! answers a SYN with a RESET at once: it stands in for the ICMP
//! port-unreachable a real host without uTP sends (which the crawler's
//! shard socket does not read), as the TCP side resets connections to an
//! away peer, so that a fallback to uTP costs a round trip here, not a
//! connect timeout.
//!
//! uTP peers speak plaintext BT only (the fetcher's uTP path has no MSE),
//! with the plan's serving behaviour; slow and junk peers stay on TCP.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::peers::{PeerKind, PeerPlan, PEER_BASE};
use super::pktinfo::PktSocket;
use crate::id::Id;
use crate::rng::Rng;
use crate::wire::utp::{demux_id, reset_for, Packet, PacketType, UtpConfig, UtpConnection};
use crate::wire::{Behaviour, MetadataServe};

/// Connections held at once; SYNs past it are answered with a RESET.
const MAX_CONNS: usize = 4096;
/// How often the loop wakes without traffic, to run the timers.
const TICK: Duration = Duration::from_millis(10);
/// The BT handshake's length: the infohash in it says what is wanted.
const BT_HANDSHAKE: usize = 68;

/// One accepted connection.
struct Conn {
    conn: UtpConnection,
    /// The peer address the fetcher dialled.
    dst: Ipv4Addr,
    plan: usize,
    /// The handshake bytes until the infohash is known.
    head: Vec<u8>,
    srv: Option<MetadataServe>,
    /// Served bytes the send buffer could not take yet.
    pending: Vec<u8>,
}

/// Runs the uTP peers on `sock` until `stop` is set.
pub(super) fn run(
    sock: PktSocket,
    plans: Arc<Vec<PeerPlan>>,
    infos: Arc<Vec<(Id, Arc<Vec<u8>>)>>,
    epoch: Instant,
    stop: Arc<AtomicBool>,
) {
    let mut conns: HashMap<(SocketAddrV4, Ipv4Addr, u16), Conn> = HashMap::new();
    let mut rng = Rng::from_entropy();
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        match sock.recv(&mut buf) {
            Ok(Some(r)) => {
                let d = &buf[..r.len.min(buf.len())];
                let Ok(p) = Packet::parse(d) else { continue };
                let key = (r.from, r.dst, demux_id(&p));
                if let Some(c) = conns.get_mut(&key) {
                    let _ = c.conn.handle_datagram(d, now);
                } else if p.ty == PacketType::Syn {
                    let plan = u32::from(r.dst)
                        .checked_sub(u32::from(PEER_BASE))
                        .map(|i| i as usize)
                        .filter(|&i| i < plans.len());
                    let Some(i) = plan else { continue };
                    let pl = &plans[i];
                    let away = pl.churn.is_some_and(|c| c.away_at(epoch.elapsed()));
                    let accepted = (pl.utp_only && !away && conns.len() < MAX_CONNS)
                        .then(|| {
                            UtpConnection::accept(
                                d,
                                rng.below(1 << 16) as u16,
                                UtpConfig::default(),
                                now,
                            )
                            .ok()
                        })
                        .flatten();
                    match accepted {
                        Some(conn) => {
                            conns.insert(
                                key,
                                Conn {
                                    conn,
                                    dst: r.dst,
                                    plan: i,
                                    head: Vec::new(),
                                    srv: None,
                                    pending: Vec::new(),
                                },
                            );
                        }
                        None => {
                            out.clear();
                            reset_for(&p, &mut out);
                            let _ = sock.send_from(r.dst, SocketAddr::V4(r.from), &out);
                        }
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                log::debug!("swarm uTP peers: recv: {e}");
                std::thread::sleep(TICK);
            }
        }
        let now = Instant::now();
        conns.retain(|(from, _, _), c| {
            drive(c, &plans, &infos, now);
            while let Some(d) = c.conn.poll_transmit(now) {
                let _ = sock.send_from(c.dst, SocketAddr::V4(*from), &d);
            }
            !c.conn.is_ended()
        });
    }
}

/// Moves bytes between the connection and the serving machine, and runs
/// the connection's timers.
fn drive(c: &mut Conn, plans: &[PeerPlan], infos: &[(Id, Arc<Vec<u8>>)], now: Instant) {
    if c.conn.poll_timeout().is_some_and(|t| t <= now) {
        c.conn.handle_timeout(now);
    }
    let mut got = Vec::new();
    c.conn.read(&mut got);
    if c.srv.is_none() {
        c.head.extend_from_slice(&got);
        if c.head.len() < BT_HANDSHAKE {
            return;
        }
        let Some(plan) = plans.get(c.plan) else {
            c.conn.abort(now);
            return;
        };
        let wanted = Id::from_slice(&c.head[28..48]);
        let served = infos.get(plan.torrent).filter(|(h, _)| Some(*h) == wanted);
        let (Some((infohash, info)), true) = (served, c.head[..20] == *b"\x13BitTorrent protocol")
        else {
            // Not a BT handshake for our torrent: hang up as the TCP side
            // does.
            c.conn.close();
            return;
        };
        let behaviour = match plan.kind {
            PeerKind::Serve(b) => b,
            PeerKind::Slow | PeerKind::Junk => Behaviour::Honest,
        };
        let mut peer_id = *b"-SW0100-000000000000";
        peer_id[8..12].copy_from_slice(&plan.ip.octets());
        let mut srv = MetadataServe::new(*infohash, info.as_ref().clone(), peer_id, behaviour);
        srv.handle_data(&c.head);
        c.head = Vec::new();
        c.srv = Some(srv);
    } else if let Some(srv) = c.srv.as_mut() {
        if !got.is_empty() {
            srv.handle_data(&got);
        }
    }
    let Some(srv) = c.srv.as_mut() else { return };
    if c.conn.is_eof() {
        srv.handle_eof();
    }
    srv.poll_transmit(&mut c.pending);
    let n = c.conn.write(&c.pending);
    c.pending.drain(..n);
    if srv.poll_close() && c.pending.is_empty() {
        c.conn.close();
    }
}
