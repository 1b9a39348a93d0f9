//! Start-up checks: limits and address families a crawl needs, checked
//! before any shard starts, each with a clear message or an automatic
//! fallback instead of an abort deep inside the runtime.
//!
//! - **Open files.** Each shard may hold `2 × fetch concurrency` TCP
//!   connections plus its UDP sockets and the runtime's own descriptors.
//!   The soft `RLIMIT_NOFILE` is raised toward the hard one when it is too
//!   low (the usual 1,024 is below what two default shards need); a hard
//!   limit that is too low is an error naming both numbers and the flags
//!   that lower the need.
//! - **Locked memory.** glommio locks `io_memory` per io_uring ring; the
//!   runtime (`shards`) judges the limit and names the fix. Here the soft
//!   `RLIMIT_MEMLOCK` is only raised toward the hard one first, so a host
//!   whose hard limit suffices needs no `ulimit -l`.
//! - **IPv6.** The default binds `0.0.0.0` and `[::]`. On a host without
//!   IPv6 the `[::]` address is dropped with a warning and the crawl runs on
//!   IPv4 alone; if no address is left it is an error.

use std::net::{SocketAddr, UdpSocket};

/// Descriptors a shard needs besides its TCP connections (UDP sockets are
/// added per bind address): glommio's rings and eventfds, the mesh's
/// channels' eventfds, timers.
const PER_SHARD_EXTRA_FDS: u64 = 32;
/// Descriptors the process needs besides its shards: the database (SQLite
/// holds three files; PostgreSQL one socket), the metrics listener and its
/// connections, logs, signal pipes.
const PROCESS_EXTRA_FDS: u64 = 64;

/// Why a crawl cannot start on this host.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// The hard open-file limit is below the need.
    #[error(
        "the open-file limit is {hard} but this configuration needs {need} \
         ({shards} shards × {per_shard} descriptors + {PROCESS_EXTRA_FDS}); raise the hard limit \
         (LimitNOFILE= in the systemd unit, `ulimit -Hn` as root) or lower --fetch-concurrency \
         or --shards"
    )]
    NoFile {
        /// The hard limit.
        hard: u64,
        /// What is needed.
        need: u64,
        /// Shards.
        shards: usize,
        /// Per shard.
        per_shard: u64,
    },
    /// No bind address can be used.
    #[error("no bind address is usable on this host: {0}")]
    NoAddress(String),
}

/// The bind addresses this host can use: IPv6 ones are dropped (with a
/// warning) when the host has no IPv6, as long as one address remains.
pub fn usable_binds(binds: &[SocketAddr]) -> Result<Vec<SocketAddr>, PreflightError> {
    let mut out = Vec::with_capacity(binds.len());
    let mut why = Vec::new();
    for b in binds {
        if b.is_ipv6() {
            if let Err(e) = ipv6_usable(b) {
                why.push(format!("{b}: IPv6 cannot be bound here ({e})"));
                continue;
            }
        }
        out.push(*b);
    }
    if out.is_empty() {
        return Err(PreflightError::NoAddress(why.join("; ")));
    }
    for w in &why {
        log::warn!("{w}; running on the other addresses only");
    }
    Ok(out)
}

/// Whether an IPv6 socket can be bound on `addr`'s address (port 0: the
/// probe sends nothing and leaves the real port free).
fn ipv6_usable(addr: &SocketAddr) -> std::io::Result<()> {
    let mut probe = *addr;
    probe.set_port(0);
    UdpSocket::bind(probe).map(drop)
}

/// Checks (and where allowed raises) the open-file limit, and raises the
/// soft locked-memory limit toward the hard one, for `shards` shards with `tcp_per_shard` connections each.
pub fn check_limits(
    shards: usize,
    tcp_per_shard: usize,
    udp_per_shard: usize,
    io_memory_per_shard: usize,
) -> Result<(), PreflightError> {
    let (need, per_shard) = descriptors_needed(shards, tcp_per_shard, udp_per_shard);
    raise(libc::RLIMIT_NOFILE, need).map_err(|(hard, _)| PreflightError::NoFile {
        hard,
        need,
        shards,
        per_shard,
    })?;
    // The runtime judges locked memory (three rings per executor); raising
    // the soft limit toward the hard one is all that is done here.
    let memlock = (shards as u64)
        .saturating_mul(3)
        .saturating_mul(io_memory_per_shard as u64);
    let _ = raise(libc::RLIMIT_MEMLOCK, memlock);
    Ok(())
}

/// Descriptors the process needs, and each shard's part of them.
fn descriptors_needed(shards: usize, tcp_per_shard: usize, udp_per_shard: usize) -> (u64, u64) {
    let per_shard = tcp_per_shard as u64 + udp_per_shard as u64 + PER_SHARD_EXTRA_FDS;
    let need = (shards as u64)
        .saturating_mul(per_shard)
        .saturating_add(PROCESS_EXTRA_FDS);
    (need, per_shard)
}

/// The default fetch concurrency `wanted`, lowered to what the hard
/// open-file limit allows for `shards` shards, each fetch holding up to
/// `per_fetch` connections, with a warning naming the limit. A default that does not fit would otherwise refuse to start on
/// a host whose limit suits a smaller pool; a value the operator chose is
/// not passed here and is refused by [`check_limits`] instead. Never below
/// one fetch: a host that cannot hold even that is refused there too.
pub fn fit_default_fetch_concurrency(
    shards: usize,
    udp_per_shard: usize,
    per_fetch: usize,
    wanted: usize,
) -> usize {
    let Some(hard) = hard_limit(libc::RLIMIT_NOFILE) else {
        return wanted;
    };
    let fits = fetches_within(hard, shards, udp_per_shard, per_fetch);
    if fits >= wanted as u64 {
        return wanted;
    }
    let fit = fits.max(1) as usize;
    log::warn!(
        "the open-file hard limit ({hard}) allows {fit} concurrent fetches per shard on \
         {shards} shards, below the default {wanted}; harvest is bounded by it: raise the \
         limit (LimitNOFILE= in the systemd unit) or set --fetch-concurrency to silence this"
    );
    fit
}

/// Fetches per shard that `hard` descriptors hold: the inverse of
/// [`descriptors_needed`].
fn fetches_within(hard: u64, shards: usize, udp_per_shard: usize, per_fetch: usize) -> u64 {
    let per_shard = hard.saturating_sub(PROCESS_EXTRA_FDS) / (shards.max(1) as u64);
    per_shard.saturating_sub(udp_per_shard as u64 + PER_SHARD_EXTRA_FDS) / per_fetch.max(1) as u64
}

/// The limits of `res`, `None` when they cannot be read.
fn limits(res: libc::__rlimit_resource_t) -> Option<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(res, &mut lim) } != 0 {
        return None;
    }
    Some(lim)
}

/// The hard limit of `res`, `None` when unlimited or unknown.
fn hard_limit(res: libc::__rlimit_resource_t) -> Option<u64> {
    limits(res)
        .map(|l| l.rlim_max)
        .filter(|&h| h != libc::RLIM_INFINITY)
}

/// Raises the soft limit of `res` to at least `need` if the hard limit
/// allows; `Err((hard, soft))` when it does not.
fn raise(res: libc::__rlimit_resource_t, need: u64) -> Result<(), (u64, u64)> {
    // Unknown limits cannot be judged; let the runtime report.
    let Some(mut lim) = limits(res) else {
        return Ok(());
    };
    let (soft, hard) = (lim.rlim_cur, lim.rlim_max);
    if soft == libc::RLIM_INFINITY || soft >= need {
        return Ok(());
    }
    if hard != libc::RLIM_INFINITY && hard < need {
        return Err((hard, soft));
    }
    lim.rlim_cur = need;
    // SAFETY: setrlimit reads one rlimit from the struct we own.
    if unsafe { libc::setrlimit(res, &lim) } != 0 {
        return Err((hard, soft));
    }
    log::info!("raised a resource limit ({res}) from {soft} to {need} (hard limit {hard})");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_file_limit_is_raised_or_named() {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in `raise`.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        // A need within the hard limit is met (the soft one raised).
        let ok_need = lim.rlim_max.min(4096);
        assert!(raise(libc::RLIMIT_NOFILE, ok_need).is_ok());
        // SAFETY: as above.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert!(lim.rlim_cur >= ok_need);
        if lim.rlim_max != libc::RLIM_INFINITY {
            // A need above the hard limit is an error with both numbers.
            let e = check_limits(1_000_000, 1_000_000, 1, 0)
                .unwrap_err()
                .to_string();
            assert!(e.contains(&lim.rlim_max.to_string()), "{e}");
            assert!(e.contains("--fetch-concurrency"), "{e}");
        }
    }

    #[test]
    fn default_fetch_concurrency_fits_the_hard_limit() {
        // The inverse matches check_limits' need exactly: what fits passes,
        // one more fetch per shard does not.
        for (hard, shards, udp) in [(20_000u64, 1usize, 1usize), (4096, 2, 2), (1024, 4, 1)] {
            let fit = fetches_within(hard, shards, udp, 2);
            let need = |f: u64| {
                (shards as u64) * (2 * f + udp as u64 + PER_SHARD_EXTRA_FDS) + PROCESS_EXTRA_FDS
            };
            assert!(need(fit) <= hard, "{hard} {shards}: {fit}");
            assert!(need(fit + 1) > hard, "{hard} {shards}: {fit}");
        }
        // Under this process's real limit: the default is kept where it
        // fits, lowered (never to zero) where it does not, and what comes
        // back always passes check_limits.
        let f = fit_default_fetch_concurrency(1, 1, 2, 1024);
        assert!((1..=1024).contains(&f));
        assert!(check_limits(1, 2 * f, 1, 0).is_ok());
        let many = fit_default_fetch_concurrency(255, 2, 2, 1 << 20);
        assert!(many >= 1);
        if hard_limit(libc::RLIMIT_NOFILE).is_some() {
            assert!(many < 1 << 20, "a million fetches on 255 shards fit {many}");
        }
    }

    #[test]
    fn ipv6_fallback_keeps_ipv4() {
        let v4: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let v6: SocketAddr = "[::1]:0".parse().unwrap();
        let got = usable_binds(&[v4, v6]).unwrap();
        assert_eq!(got[0], v4);
        // Whatever this host has, IPv4 stays and IPv6 stays only if usable.
        assert_eq!(got.len() == 2, ipv6_usable(&v6).is_ok());
        // An IPv6 address that is not this host's is dropped; alone it is
        // an error that says why.
        let foreign: SocketAddr = "[2001:db8::1]:0".parse().unwrap();
        assert_eq!(usable_binds(&[v4, foreign]).unwrap(), vec![v4]);
        let e = usable_binds(&[foreign]).unwrap_err().to_string();
        assert!(e.contains("IPv6 cannot be bound here"), "{e}");
    }
}
