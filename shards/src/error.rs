//! Errors of the runtime as a whole.

use std::{error::Error as StdError, fmt, io};

use crate::udp::UdpBindError;

/// Boxed application error, as returned by a shard's future.
pub type AppError = Box<dyn StdError + Send + Sync + 'static>;

/// Why the runtime could not start, or which shards failed.
#[derive(Debug, thiserror::Error)]
pub enum ShardsError {
    /// Zero shards were asked for.
    #[error("no shards to start (shard count is 0)")]
    NoShards,
    /// The process's CPU affinity mask could not be read.
    #[error("cannot read this process's CPU affinity mask")]
    AffinityUnknown,
    /// A CPU of the core list is not one this process may run on.
    #[error("CPU {cpu} is not available to this process (allowed: {allowed})")]
    CpuNotAvailable {
        /// The CPU asked for.
        cpu: usize,
        /// The CPUs allowed, as a core list.
        allowed: String,
    },
    /// RLIMIT_MEMLOCK is too low for the executors' io_uring buffers.
    #[error(
        "locked-memory limit is {limit} bytes but {shards} shards need about {needed} bytes \
         (3 × io_memory each for glommio's io_uring rings). Raise it: `ulimit -l {needed_kib}` \
         in the shell, `LimitMEMLOCK={needed}` in the systemd unit, or `--ulimit memlock={needed}` \
         for docker; or lower io_memory / the shard count"
    )]
    MemLock {
        /// Current soft limit, bytes.
        limit: u64,
        /// Estimated need, bytes.
        needed: u64,
        /// Same, KiB (the unit of `ulimit -l`).
        needed_kib: u64,
        /// Shards planned.
        shards: usize,
    },
    /// A UDP address could not be bound.
    #[error(transparent)]
    UdpBind(#[from] UdpBindError),
    /// An OS resource needed at start-up could not be created.
    #[error("start-up: {what}: {source}")]
    Setup {
        /// What was being created.
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// One or more shards failed (to start, with an error, or by panicking).
    #[error("{0}")]
    Failed(ShardFailures),
}

/// How one shard failed.
#[derive(Debug)]
pub enum FailureKind {
    /// The executor did not start (e.g. locked-memory limit, bad CPU).
    Executor(String),
    /// The shard's future returned an error.
    App(AppError),
    /// The shard's thread panicked.
    Panic(String),
}

/// One shard's failure.
#[derive(Debug)]
pub struct ShardFailure {
    /// Index of the shard.
    pub shard: usize,
    /// What went wrong.
    pub kind: FailureKind,
}

impl fmt::Display for ShardFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            FailureKind::Executor(e) => {
                write!(f, "shard {}: executor failed to start: {e}", self.shard)
            }
            FailureKind::App(e) => write!(f, "shard {}: {e}", self.shard),
            FailureKind::Panic(e) => write!(f, "shard {}: panicked: {e}", self.shard),
        }
    }
}

/// All failures of one run, in shard order.
#[derive(Debug)]
pub struct ShardFailures(pub Vec<ShardFailure>);

impl fmt::Display for ShardFailures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} shard(s) failed", self.0.len())?;
        for (i, s) in self.0.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

impl ShardFailures {
    /// The indices of the failed shards.
    pub fn shards(&self) -> Vec<usize> {
        self.0.iter().map(|f| f.shard).collect()
    }
}
