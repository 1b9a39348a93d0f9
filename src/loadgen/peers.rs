//! The swarm's BitTorrent peers: one TCP listener on the wildcard address
//! stands in for every peer address in 127.96.0.0/11 (the accepted
//! connection's local address says which peer was dialled), served on the
//! `shards` runtime by the sans-IO [`MetadataServe`].

use std::net::{IpAddr, Ipv4Addr, TcpListener as StdListener};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use super::swarm::{PeerKind, PEER_BASE};
use crate::id::Id;
use crate::wire::{Behaviour, MetadataServe};

/// One simulated peer.
#[derive(Debug, Clone, Copy)]
pub struct PeerPlan {
    /// Its address (the listener's port).
    pub ip: Ipv4Addr,
    /// What it does.
    pub kind: PeerKind,
    /// The torrent it serves (index into the infos).
    pub torrent: usize,
}

/// The running peers.
pub struct PeerServer {
    /// The TCP port every peer listens on.
    pub port: u16,
    handle: shards::ShutdownHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for PeerServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerServer")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// How long a silent peer keeps a connection open.
const SILENT_HOLD: Duration = Duration::from_secs(120);
/// Pause between bytes of a slow peer.
const TRICKLE: Duration = Duration::from_millis(100);

impl PeerServer {
    /// Binds the listener and starts serving.
    pub fn start(
        plans: Vec<PeerPlan>,
        infos: Arc<Vec<(Id, Arc<Vec<u8>>)>>,
    ) -> Result<PeerServer, String> {
        let std_listener =
            StdListener::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| format!("bind: {e}"))?;
        let port = std_listener.local_addr().map_err(|e| e.to_string())?.port();
        let fd = Arc::new(Mutex::new(Some(std_listener.into_raw_fd())));
        let plans = Arc::new(plans);
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
                                serve(stream, &plans, &infos).await;
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
        })
    }

    /// Stops serving.
    pub fn stop(mut self) {
        self.handle.trigger();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        self.handle.trigger();
    }
}

async fn serve(mut stream: TcpStream, plans: &[PeerPlan], infos: &[(Id, Arc<Vec<u8>>)]) {
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
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
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
    // The infohash is in the handshake: bytes 28..48.
    let mut got = 0;
    while got < 68 {
        match stream.read(&mut buf[got..68]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => got += n,
        }
    }
    let Some(ih) = Id::from_slice(&buf[28..48]) else {
        return;
    };
    let Some((_, info)) = infos.get(plan.torrent).filter(|(h, _)| *h == ih) else {
        return;
    };
    let behaviour = match plan.kind {
        PeerKind::Serve(b) => b,
        PeerKind::Slow => Behaviour::Honest,
    };
    let mut peer_id = *b"-SW0100-000000000000";
    peer_id[8..12].copy_from_slice(&ip.octets());
    let mut srv = MetadataServe::new(ih, info.as_ref().clone(), peer_id, behaviour);
    srv.handle_data(&buf[..68]);
    let mut out = Vec::new();
    let slow = plan.kind == PeerKind::Slow;
    loop {
        out.clear();
        srv.poll_transmit(&mut out);
        if !out.is_empty() {
            let ok = if slow {
                trickle(&mut stream, &out).await
            } else {
                stream.write_all(&out).await.is_ok()
            };
            if !ok {
                return;
            }
        }
        if srv.poll_close() {
            let _ = stream.close().await;
            return;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => {
                srv.handle_eof();
                return;
            }
            Ok(n) => srv.handle_data(&buf[..n]),
        }
    }
}

async fn trickle(stream: &mut TcpStream, data: &[u8]) -> bool {
    for b in data {
        if stream.write_all(std::slice::from_ref(b)).await.is_err() {
            return false;
        }
        glommio::timer::sleep(TRICKLE).await;
    }
    true
}
