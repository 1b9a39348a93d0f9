//! The swarm's BitTorrent peers: one TCP listener on the wildcard address
//! stands in for every peer address in 127.96.0.0/11 (the accepted
//! connection's local address says which peer was dialled), served on the
//! `shards` runtime by the sans-IO [`MetadataServe`].
//!
//! Peers that churn ([`Churn`]) are online and offline in turns: while one
//! is away, a connection to its address is reset at once (`SO_LINGER` 0, so
//! the dialler sees a reset as it would from a closed port, not a clean
//! close it might mistake for a peer that hung up mid-handshake).
//!
//! Slow and silent peers hold a connection for longer than the crawler's
//! default fetch deadline (`fetch-timeout = 20` s): a silent one accepts and
//! never answers for [`SILENT_HOLD`]; a slow one answers both handshakes at
//! once (so it passes the fetcher's 10 s handshake timeout, as a real
//! congested peer usually does) and then sends its metadata one byte every
//! [`TRICKLE`], so a 16 KiB piece takes half an hour. Each costs a
//! harvester a connection slot for its whole deadline, which is what makes
//! them expensive on the real DHT.
//!
//! A peer may speak MSE/PE ([`PeerEncryption`]): one that requires it runs
//! [`MseReceiver`] on every connection and hangs up on a plaintext
//! handshake; one that merely enables it also takes plaintext; the others
//! speak plaintext only and hang up on an MSE handshake (which they read
//! as a bad BT handshake), as old clients do.
//!
//! A junk peer ([`PeerKind::Junk`]) answers both handshakes, then streams
//! legal but useless messages (bitfields of [`JUNK_FRAME`] bytes) as fast
//! as the fetcher reads them, for at most [`SILENT_HOLD`]: only a byte
//! budget stops it. It is not among the swarm's
//! [`BAD_KINDS`](super::swarm::BAD_KINDS); tests place it by hand.

use std::net::{IpAddr, Ipv4Addr, TcpListener as StdListener};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use super::pktinfo::PktSocket;
use crate::id::Id;
use crate::rng::Rng;
use crate::wire::mse::{Cipher, Methods, MseReceiver};
use crate::wire::{Behaviour, MetadataServe};

/// What a simulated peer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerEncryption {
    /// Plaintext BT only.
    Plaintext,
    /// MSE (RC4 preferred) or plaintext.
    Enabled,
    /// MSE with RC4 only (libtorrent's forced policy, `allowed_enc_level`
    /// rc4).
    Required,
}

impl PeerEncryption {
    /// The ground-truth label.
    pub fn label(self) -> &'static str {
        match self {
            PeerEncryption::Plaintext => "plaintext",
            PeerEncryption::Enabled => "enabled",
            PeerEncryption::Required => "required",
        }
    }
}

/// First address of the simulated peers.
pub const PEER_BASE: Ipv4Addr = Ipv4Addr::new(127, 96, 0, 1);

/// What a simulated peer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerKind {
    /// A [`Behaviour`] of the serving state machine.
    Serve(Behaviour),
    /// Honest, but trickles its bytes slowly.
    Slow,
    /// Answers the handshakes, then streams junk messages without end.
    Junk,
}

impl PeerKind {
    /// The ground-truth label.
    pub fn label(self) -> &'static str {
        match self {
            PeerKind::Slow => "slow",
            PeerKind::Junk => "junk",
            PeerKind::Serve(Behaviour::Honest) => "honest",
            PeerKind::Serve(Behaviour::Reject) => "reject",
            PeerKind::Serve(Behaviour::Lie) => "lie",
            PeerKind::Serve(Behaviour::Oversize) => "oversize",
            PeerKind::Serve(Behaviour::DisconnectMidway) => "disconnect",
            PeerKind::Serve(Behaviour::NoHandshake) => "silent",
        }
    }

    /// Whether a fetch from it can succeed (slow ones do, eventually, but
    /// are not counted on: a crawler with a short deadline drops them).
    pub fn honest(self) -> bool {
        matches!(self, PeerKind::Serve(Behaviour::Honest))
    }
}

/// One simulated peer.
#[derive(Debug, Clone, Copy)]
pub struct PeerPlan {
    /// Its address (the listener's port).
    pub ip: Ipv4Addr,
    /// What it does.
    pub kind: PeerKind,
    /// The torrent it serves (index into the infos).
    pub torrent: usize,
    /// When it is offline, if it churns.
    pub churn: Option<Churn>,
    /// Plaintext, MSE, or either.
    pub encryption: PeerEncryption,
    /// Speaks uTP only (BEP 29, on the same port number over UDP): TCP
    /// connections to it are reset, as from a closed port.
    pub utp_only: bool,
}

/// A peer that is offline for `away` of every `period`, shifted by `phase`
/// so that churning peers do not all leave at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Churn {
    /// Length of one online-plus-offline cycle.
    pub period: Duration,
    /// Offline part of each cycle.
    pub away: Duration,
    /// Where in its cycle the peer is when the swarm starts.
    pub phase: Duration,
}

impl Churn {
    /// Whether the peer is offline `elapsed` after the swarm started. The
    /// offline part comes first in each cycle.
    pub fn away_at(&self, elapsed: Duration) -> bool {
        let period = self.period.as_millis().max(1);
        let pos = (elapsed.as_millis() + self.phase.as_millis()) % period;
        pos < self.away.as_millis()
    }
}

/// The running peers.
pub struct PeerServer {
    /// The TCP port every peer listens on (and the UDP port of their uTP).
    pub port: u16,
    handle: shards::ShutdownHandle,
    thread: Option<std::thread::JoinHandle<()>>,
    utp_stop: Arc<std::sync::atomic::AtomicBool>,
    utp_thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for PeerServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerServer")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// How long a silent peer keeps a connection open: well past the
/// crawler's default 20 s fetch deadline, so the deadline, not the peer,
/// ends the attempt.
pub const SILENT_HOLD: Duration = Duration::from_secs(120);
/// Pause between metadata bytes of a slow peer.
pub const TRICKLE: Duration = Duration::from_millis(100);
/// Length of each junk message (a bitfield, id 5): legal (under the 1 MiB
/// frame cap), skipped by the fetcher without buffering.
pub const JUNK_FRAME: u32 = 256 * 1024;
/// Idle read limit of a connection: longer than [`SILENT_HOLD`]'s purpose
/// needs (a silent peer must outlast a 20 s fetch deadline), short enough
/// that abandoned connections do not pile up.
const READ_IDLE: Duration = Duration::from_secs(30);

impl PeerServer {
    /// Binds the listener and starts serving.
    ///
    /// `epoch` is the instant churn schedules count from.
    pub fn start(
        plans: Vec<PeerPlan>,
        infos: Arc<Vec<(Id, Arc<Vec<u8>>)>>,
        epoch: Instant,
    ) -> Result<PeerServer, String> {
        let std_listener =
            StdListener::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| format!("bind: {e}"))?;
        let port = std_listener.local_addr().map_err(|e| e.to_string())?.port();
        let fd = Arc::new(Mutex::new(Some(std_listener.into_raw_fd())));
        let plans = Arc::new(plans);
        // uTP on the same port number. Without uTP-only peers a failed bind
        // is only logged: the TCP peers do not need it.
        let utp_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let utp_thread = match PktSocket::bind(port, Duration::from_millis(10)) {
            Ok(sock) => {
                let (plans, infos, stop) = (plans.clone(), infos.clone(), utp_stop.clone());
                Some(
                    std::thread::Builder::new()
                        .name("swarm-peers-utp".into())
                        .spawn(move || super::utp_peers::run(sock, plans, infos, epoch, stop))
                        .map_err(|e| e.to_string())?,
                )
            }
            Err(e) if plans.iter().any(|p| p.utp_only) => {
                return Err(format!("uTP bind on port {port}: {e}"));
            }
            Err(e) => {
                log::warn!("swarm peers: no uTP on port {port}: {e}");
                None
            }
        };
        let shards = shards::ShardsBuilder::new()
            .shards(1)
            .pin(false)
            .name("swarm-peers")
            .spawn(move |ctx: shards::ShardContext<()>| {
                let fd = fd.lock().ok().and_then(|mut f| f.take());
                let plans = plans.clone();
                let infos = infos.clone();
                async move {
                    let Some(fd) = fd else {
                        return Err(std::io::Error::other("listener already taken"));
                    };
                    // SAFETY: the fd came from `into_raw_fd` and is owned here.
                    let listener = unsafe { TcpListener::from_raw_fd(fd) };
                    let stop = ctx.shutdown();
                    let accept = async {
                        loop {
                            let Ok(stream) = listener.accept().await else {
                                continue;
                            };
                            let plans = plans.clone();
                            let infos = infos.clone();
                            glommio::spawn_local(async move {
                                serve(stream, &plans, &infos, epoch).await;
                            })
                            .detach();
                        }
                    };
                    futures_lite::future::or(accept, stop).await;
                    Ok::<(), std::io::Error>(())
                }
            })
            .map_err(|e| e.to_string())?;
        let handle = shards.shutdown_handle();
        let thread = std::thread::Builder::new()
            .name("swarm-peers-join".into())
            .spawn(move || {
                if let Err(e) = shards.join() {
                    log::warn!("swarm peers: {e}");
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(PeerServer {
            port,
            handle,
            thread: Some(thread),
            utp_stop,
            utp_thread,
        })
    }

    /// Stops serving.
    pub fn stop(mut self) {
        self.handle.trigger();
        self.utp_stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(t) = self.utp_thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        self.handle.trigger();
        self.utp_stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

async fn serve(
    mut stream: TcpStream,
    plans: &[PeerPlan],
    infos: &[(Id, Arc<Vec<u8>>)],
    epoch: Instant,
) {
    let (Ok(local), Ok(remote)) = (stream.local_addr(), stream.peer_addr()) else {
        return;
    };
    if !remote.ip().is_loopback() {
        return;
    }
    let IpAddr::V4(ip) = local.ip() else { return };
    let Some(idx) = u32::from(ip).checked_sub(u32::from(PEER_BASE)) else {
        return;
    };
    let Some(plan) = plans.get(idx as usize) else {
        return;
    };
    if plan.utp_only || plan.churn.is_some_and(|c| c.away_at(epoch.elapsed())) {
        reset_on_close(&stream);
        return;
    }
    let _ = stream.set_read_timeout(Some(READ_IDLE));
    let mut buf = vec![0u8; 16 * 1024];
    if plan.kind == PeerKind::Serve(Behaviour::NoHandshake) {
        // Read and discard until the fetcher gives up.
        let hold = async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        let _ = shards::timers::with_deadline(std::time::Instant::now() + SILENT_HOLD, hold).await;
        return;
    }
    let mut conn = PeerConn {
        stream,
        cipher: None,
        pending: Vec::new(),
    };
    if plan.encryption != PeerEncryption::Plaintext {
        let Some((infohash, _)) = infos.get(plan.torrent) else {
            return;
        };
        let (methods, plain) = match plan.encryption {
            PeerEncryption::Required => (Methods::Rc4, false),
            _ => (Methods::Either, true),
        };
        let mut rx = MseReceiver::new(vec![*infohash], methods, plain, Rng::from_entropy());
        let mut out = Vec::new();
        loop {
            out.clear();
            rx.poll_transmit(&mut out);
            if !out.is_empty() && conn.stream.write_all(&out).await.is_err() {
                return;
            }
            match rx.poll_outcome() {
                Some(Ok(e)) => {
                    conn.cipher = e.cipher;
                    conn.pending = e.payload;
                    break;
                }
                // A failed handshake (a plaintext one at a peer that
                // requires encryption): hang up, as libtorrent does.
                Some(Err(_)) => return,
                None => {}
            }
            match conn.stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => rx.handle_data(&buf[..n]),
            }
        }
    }
    // The infohash is in the handshake: bytes 28..48.
    let mut got = 0;
    while got < 68 {
        match conn.read(&mut buf[got..68]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => got += n,
        }
    }
    // A plaintext-only peer hangs up on what is not a BT handshake (an MSE
    // key, above all).
    if buf[..20] != *b"\x13BitTorrent protocol" {
        return;
    }
    let Some(infohash) = Id::from_slice(&buf[28..48]) else {
        return;
    };
    let Some((_, info)) = infos.get(plan.torrent).filter(|(h, _)| *h == infohash) else {
        return;
    };
    let behaviour = match plan.kind {
        PeerKind::Serve(b) => b,
        PeerKind::Slow | PeerKind::Junk => Behaviour::Honest,
    };
    let mut peer_id = *b"-SW0100-000000000000";
    peer_id[8..12].copy_from_slice(&ip.octets());
    let mut srv = MetadataServe::new(infohash, info.as_ref().clone(), peer_id, behaviour);
    srv.handle_data(&buf[..68]);
    let mut out = Vec::new();
    let slow = plan.kind == PeerKind::Slow;
    // The first output is the BT and extension handshakes: sent at once.
    let mut handshaken = false;
    loop {
        out.clear();
        srv.poll_transmit(&mut out);
        if !out.is_empty() {
            let ok = if slow && handshaken {
                trickle(&mut conn, &out).await
            } else {
                conn.write_all(&out).await.is_ok()
            };
            if !ok {
                return;
            }
            if plan.kind == PeerKind::Junk {
                let deadline = std::time::Instant::now() + SILENT_HOLD;
                let _ = shards::timers::with_deadline(deadline, junk(&mut conn)).await;
                return;
            }
            handshaken = true;
        }
        if srv.poll_close() {
            let _ = conn.stream.close().await;
            return;
        }
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => {
                srv.handle_eof();
                return;
            }
            Ok(n) => srv.handle_data(&buf[..n]),
        }
    }
}

/// A peer's connection after its (optional) MSE handshake: RC4 both ways
/// when it was selected, and the payload bytes that came with the
/// handshake, handed out first.
struct PeerConn {
    stream: TcpStream,
    cipher: Option<Cipher>,
    pending: Vec<u8>,
}

impl PeerConn {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.pending.is_empty() {
            let n = buf.len().min(self.pending.len());
            buf[..n].copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            return Ok(n);
        }
        let n = self.stream.read(buf).await?;
        if let Some(c) = self.cipher.as_mut() {
            c.decrypt(&mut buf[..n]);
        }
        Ok(n)
    }

    async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self.cipher.as_mut() {
            None => self.stream.write_all(data).await,
            Some(c) => {
                let mut v = data.to_vec();
                c.encrypt(&mut v);
                self.stream.write_all(&v).await
            }
        }
    }
}

/// Makes dropping `stream` send a reset instead of a FIN: the dialler
/// sees "connection reset", as from a peer that is not there.
fn reset_on_close(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid open socket fd and a correctly sized `linger` value.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        log::debug!(
            "swarm peers: SO_LINGER: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Writes junk messages until the connection fails.
async fn junk(stream: &mut PeerConn) {
    let mut frame = JUNK_FRAME.to_be_bytes().to_vec();
    frame.push(5);
    frame.resize(4 + JUNK_FRAME as usize, 0xff);
    while stream.write_all(&frame).await.is_ok() {}
}

async fn trickle(stream: &mut PeerConn, data: &[u8]) -> bool {
    for b in data {
        if stream.write_all(std::slice::from_ref(b)).await.is_err() {
            return false;
        }
        glommio::timer::sleep(TRICKLE).await;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn churn_schedule_is_away_then_back_with_phase() {
        let c = Churn {
            period: Duration::from_secs(60),
            away: Duration::from_secs(30),
            phase: Duration::from_secs(50),
        };
        // Phase 50 s: at 0 s it is 50 s into its cycle (online), at 10 s it
        // starts a new cycle (away for 30 s), back at 40 s.
        assert!(!c.away_at(Duration::from_secs(0)));
        assert!(!c.away_at(Duration::from_millis(9_999)));
        assert!(c.away_at(Duration::from_secs(10)));
        assert!(c.away_at(Duration::from_millis(39_999)));
        assert!(!c.away_at(Duration::from_secs(40)));
        assert!(c.away_at(Duration::from_secs(70)));
        // Half of every cycle offline, whatever the phase.
        let away = (0..600)
            .filter(|s| c.away_at(Duration::from_millis(s * 100)))
            .count();
        assert_eq!(away, 300);
    }

    #[test]
    fn slow_and_silent_peers_outlast_the_default_fetch_deadline() {
        use crate::wire::{FetchConfig, MetadataFetch, Phase};
        let deadline = crate::config::CrawlConfig::resolve(crate::config::FileConfig::default())
            .unwrap()
            .fetch_timeout;
        assert!(SILENT_HOLD >= deadline, "{SILENT_HOLD:?} < {deadline:?}");
        assert!(READ_IDLE >= deadline, "{READ_IDLE:?} < {deadline:?}");
        // A slow peer against the crawler's own fetch state machine: its
        // first (fast) output must get the fetcher past both handshakes, and
        // what it trickles afterwards must take longer than the deadline,
        // for every synthetic torrent.
        let mut rng = crate::rng::Rng::seed_from_u64(1);
        let now = Instant::now();
        for i in 0..48 {
            let t = super::super::torrents::synth(i, &mut rng, None);
            let mut f = MetadataFetch::new(t.infohash, [1; 20], FetchConfig::default(), now);
            let mut s = MetadataServe::new(t.infohash, t.info.clone(), [2; 20], Behaviour::Honest);
            let (mut batches, mut trickled) = (0, 0);
            let mut out = Vec::new();
            for _ in 0..100 {
                out.clear();
                f.poll_transmit(&mut out);
                s.handle_data(&out);
                out.clear();
                s.poll_transmit(&mut out);
                if !out.is_empty() {
                    f.handle_data(&out, now);
                    if batches == 0 {
                        assert_eq!(f.phase(), Phase::Transfer, "torrent {i}");
                    } else {
                        trickled += out.len();
                    }
                    batches += 1;
                }
                if f.is_finished() {
                    break;
                }
            }
            assert!(f.is_finished(), "torrent {i}: the exchange stalled");
            let took = TRICKLE * trickled as u32;
            assert!(
                took >= deadline,
                "torrent {i}: {trickled} bytes take {took:?}"
            );
        }
    }
}
