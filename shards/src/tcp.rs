//! Outgoing TCP with caps that hold before any socket exists.
//!
//! A crawler that fetches metadata over TCP must not let a flood of
//! candidate peers exhaust file descriptors or hammer one host. Every
//! connection therefore needs a [`ConnPermit`] from its shard's
//! [`TcpConnector`]: at most `max_per_shard` in total and `max_per_ip` per
//! remote IP across every shard of the process (one shared table of
//! atomics, [`SharedConnCounts`]), counted by [`limit_key`] (an IPv6 /64 is
//! one IP, an IPv4-mapped address is its IPv4), so one host cannot multiply
//! its share by walking its /64 or by being fetched from by many shards. The permit is taken *before* `socket(2)` is called, so the
//! number of descriptors is bounded by construction, and it is released
//! when the [`TcpConn`] (or the permit) is dropped, whatever the path.
//!
//! Timeouts: the connect uses glommio's `connect_timeout` (an io_uring
//! linked timeout, so a peer that never answers costs no thread and no
//! poll loop); reads and writes use glommio's per-operation timeouts, set
//! from [`TcpOptions`]; [`crate::timers::with_deadline`] bounds a whole
//! exchange.

use std::{
    cell::Cell,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    rc::Rc,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use metrics::{counter, gauge, Counter, Gauge};

use crate::budget::{limit_key, SharedConnCounts};

/// Limits and timeouts for outgoing connections of one shard.
#[derive(Debug, Clone, Copy)]
pub struct TcpOptions {
    /// Time allowed for the TCP handshake.
    pub connect_timeout: Duration,
    /// Per-read timeout (`None`: wait forever).
    pub read_timeout: Option<Duration>,
    /// Per-write timeout (`None`: wait forever).
    pub write_timeout: Option<Duration>,
    /// Connections open at once on one shard.
    pub max_per_shard: usize,
    /// Connections open at once to one remote IP (IPv6: one /64), all
    /// shards together.
    pub max_per_ip: usize,
}

impl Default for TcpOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Some(Duration::from_secs(10)),
            write_timeout: Some(Duration::from_secs(10)),
            max_per_shard: 256,
            max_per_ip: 2,
        }
    }
}

/// Why a connection was not made.
#[derive(Debug, thiserror::Error)]
pub enum TcpError {
    /// The shard already has `limit` connections open.
    #[error("per-shard TCP connection cap reached ({limit})")]
    ShardCap {
        /// The cap.
        limit: usize,
    },
    /// The shard already has `limit` connections open to `ip` (or to
    /// others in its IPv6 /64).
    #[error("per-IP TCP connection cap reached for {ip} ({limit})")]
    IpCap {
        /// The remote IP asked for.
        ip: IpAddr,
        /// The cap.
        limit: usize,
    },
    /// The handshake did not finish in time.
    #[error("TCP connect to {addr} timed out after {after:?}")]
    Timeout {
        /// The remote address.
        addr: SocketAddr,
        /// The timeout that expired.
        after: Duration,
    },
    /// Any other socket error.
    #[error("TCP {op} {addr}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The remote address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

#[derive(Debug)]
struct Counts {
    total: Cell<usize>,
    /// Per IP across every shard of the process.
    per_ip: Arc<SharedConnCounts>,
}

/// Right to hold one connection; releases its slot on drop.
#[derive(Debug)]
pub struct ConnPermit {
    counts: Rc<Counts>,
    ip: IpAddr,
    open: Gauge,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.counts
            .total
            .set(self.counts.total.get().saturating_sub(1));
        self.counts.per_ip.release(self.ip);
        self.open.decrement(1.0);
    }
}

/// Slots of the per-IP connection table a process shares (256 KiB; see
/// [`SharedConnCounts`] on sharing a slot).
pub const CONN_COUNT_SLOTS: usize = 1 << 16;

#[derive(Debug)]
struct TcpMetrics {
    open: Gauge,
    shard_cap: Counter,
    ip_cap: Counter,
    timeouts: Counter,
    errors: Counter,
}

/// Per-shard factory of capped outgoing connections.
#[derive(Debug, Clone)]
pub struct TcpConnector {
    counts: Rc<Counts>,
    opts: TcpOptions,
    metrics: Rc<TcpMetrics>,
}

impl TcpConnector {
    /// A connector with the given limits and a per-IP table of its own;
    /// `shard` labels its metrics.
    pub fn new(opts: TcpOptions, shard: usize) -> Self {
        Self::with_shared_counts(
            opts,
            shard,
            Arc::new(SharedConnCounts::new(CONN_COUNT_SLOTS)),
        )
    }

    /// A connector whose per-IP cap counts connections in `per_ip`, shared
    /// with the other shards' connectors (the runtime builds one table).
    pub fn with_shared_counts(
        opts: TcpOptions,
        shard: usize,
        per_ip: Arc<SharedConnCounts>,
    ) -> Self {
        let s = shard.to_string();
        let c = |reason: &'static str| counter!("shards_tcp_refused_total", "shard" => s.clone(), "reason" => reason);
        let metrics = TcpMetrics {
            open: gauge!("shards_tcp_open_connections", "shard" => s.clone()),
            shard_cap: c("shard_cap"),
            ip_cap: c("ip_cap"),
            timeouts: counter!("shards_tcp_connect_timeouts_total", "shard" => s.clone()),
            errors: counter!("shards_tcp_connect_errors_total", "shard" => s.clone()),
        };
        Self {
            counts: Rc::new(Counts {
                total: Cell::new(0),
                per_ip,
            }),
            opts,
            metrics: Rc::new(metrics),
        }
    }

    /// The limits in force.
    pub fn options(&self) -> &TcpOptions {
        &self.opts
    }

    /// Connections currently held on this shard.
    pub fn active(&self) -> usize {
        self.counts.total.get()
    }

    /// Connections currently held to `ip` by every shard (IPv6: to its
    /// /64).
    pub fn active_for(&self, ip: IpAddr) -> usize {
        self.counts.per_ip.count(ip)
    }

    /// Takes a slot for `ip` if both caps allow it (the per-IP cap counts
    /// `ip`'s [`limit_key`]).
    pub fn try_permit(&self, ip: IpAddr) -> Result<ConnPermit, TcpError> {
        let key = limit_key(ip);
        let total = self.counts.total.get();
        if total >= self.opts.max_per_shard {
            self.metrics.shard_cap.increment(1);
            return Err(TcpError::ShardCap {
                limit: self.opts.max_per_shard,
            });
        }
        if !self.counts.per_ip.try_acquire(key, self.opts.max_per_ip) {
            self.metrics.ip_cap.increment(1);
            return Err(TcpError::IpCap {
                ip,
                limit: self.opts.max_per_ip,
            });
        }
        self.counts.total.set(total + 1);
        self.metrics.open.increment(1.0);
        Ok(ConnPermit {
            counts: self.counts.clone(),
            ip: key,
            open: self.metrics.open.clone(),
        })
    }

    /// Connects to `addr` within the connect timeout, after taking a
    /// permit (so a refused permit never creates a socket).
    pub async fn connect(&self, addr: SocketAddr) -> Result<TcpConn, TcpError> {
        let permit = self.try_permit(addr.ip())?;
        let after = self.opts.connect_timeout.max(Duration::from_millis(1));
        let stream = match TcpStream::connect_timeout(addr, after).await {
            Ok(s) => s,
            Err(e) => {
                let e = io::Error::from(e);
                if e.kind() == io::ErrorKind::TimedOut {
                    self.metrics.timeouts.increment(1);
                    return Err(TcpError::Timeout { addr, after });
                }
                self.metrics.errors.increment(1);
                return Err(TcpError::Io {
                    op: "connect",
                    addr,
                    source: e,
                });
            }
        };
        let io_err = |source: glommio::GlommioError<()>| TcpError::Io {
            op: "set timeout",
            addr,
            source: source.into(),
        };
        // Zero durations are EINVAL in glommio; treat them as "no timeout".
        let nz = |d: Option<Duration>| d.filter(|d| !d.is_zero());
        stream
            .set_read_timeout(nz(self.opts.read_timeout))
            .map_err(io_err)?;
        stream
            .set_write_timeout(nz(self.opts.write_timeout))
            .map_err(io_err)?;
        Ok(TcpConn {
            stream,
            peer: addr,
            _permit: permit,
        })
    }
}

/// An open connection holding its permit. Implements `AsyncRead` and
/// `AsyncWrite`.
#[derive(Debug)]
pub struct TcpConn {
    stream: TcpStream,
    peer: SocketAddr,
    _permit: ConnPermit,
}

impl TcpConn {
    /// The remote address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The underlying glommio stream (for options not wrapped here).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Graceful close: flush, send FIN, then read and discard until the
    /// peer closes too (bounded by `linger`), so the peer sees an orderly
    /// shutdown rather than a reset. The permit is released afterwards.
    pub async fn close(mut self, linger: Duration) -> io::Result<()> {
        self.stream.flush().await?;
        self.stream
            .shutdown(std::net::Shutdown::Write)
            .await
            .map_err(io::Error::from)?;
        let mut sink = [0u8; 512];
        let drain = async {
            loop {
                match self.stream.read(&mut sink).await {
                    Ok(0) => return Ok(()),
                    Ok(_) => continue,
                    Err(e) => return Err(glommio::GlommioError::<()>::from(e)),
                }
            }
        };
        match glommio::timer::timeout(linger.max(Duration::from_millis(1)), drain).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = io::Error::from(e);
                if e.kind() == io::ErrorKind::TimedOut {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }
}

impl AsyncRead for TcpConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TcpConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-IP cap counts an IPv6 /64 as one IP and a v4-mapped address
    /// as its IPv4. Permits create no socket, so the addresses are only
    /// counted, never contacted.
    #[test]
    fn per_ip_cap_counts_a_v6_prefix_as_one_ip() {
        let tcp = TcpConnector::new(
            TcpOptions {
                max_per_shard: 100,
                max_per_ip: 2,
                ..TcpOptions::default()
            },
            0,
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let a = tcp.try_permit(ip("2001:db8:1:2::1"));
        let b = tcp.try_permit(ip("2001:db8:1:2:ffff::9"));
        assert!(a.is_ok() && b.is_ok());
        let c = tcp.try_permit(ip("2001:db8:1:2:1234::77"));
        assert!(matches!(c, Err(TcpError::IpCap { limit: 2, .. })), "{c:?}");
        assert_eq!(tcp.active_for(ip("2001:db8:1:2::5")), 2);
        // Another /64 has its own count.
        let d = tcp.try_permit(ip("2001:db8:1:3::1"));
        assert!(d.is_ok());
        drop(a);
        assert!(tcp.try_permit(ip("2001:db8:1:2::3")).is_ok());
        // v4-mapped and plain IPv4 share one count.
        let e = tcp.try_permit(ip("::ffff:198.51.100.1"));
        let f = tcp.try_permit(ip("198.51.100.1"));
        assert!(e.is_ok() && f.is_ok());
        assert!(matches!(
            tcp.try_permit(ip("198.51.100.1")),
            Err(TcpError::IpCap { .. })
        ));
        assert!(tcp.try_permit(ip("198.51.100.2")).is_ok());
        drop((b, d, e, f));
        assert_eq!(tcp.active(), 0);
    }
}
