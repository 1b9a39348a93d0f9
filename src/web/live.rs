//! The crawler's live counters as the status page shows them: a sampler
//! thread copies the shards' telemetry (relaxed atomics the shards publish
//! anyway, see [`crate::engine::telemetry`]) into a ring of the last hour,
//! so a page view reads a snapshot and never touches a shard.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::engine::Telemetry;
use crate::fetch::FailureKind;
use crate::store::StoreWriter;

/// How long the plots look back.
pub const HISTORY: Duration = Duration::from_secs(3600);

/// One shard's counters at one instant (cumulative, except the gauges
/// `queue` and `nodes`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardSample {
    /// Datagrams received.
    pub packets_in: u64,
    /// Datagrams sent.
    pub packets_out: u64,
    /// New infohashes (all sources).
    pub infohashes: u64,
    /// Torrents fetched.
    pub fetched: u64,
    /// Fetch jobs that ended without metadata.
    pub fetch_failed: u64,
    /// Fetch queue length (gauge).
    pub queue: u64,
    /// Known nodes (gauge).
    pub nodes: u64,
}

/// Everything sampled at one instant.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Seconds since the sampler started.
    pub at_s: f64,
    /// Per shard, in shard order.
    pub shards: Vec<ShardSample>,
    /// Items waiting in the store's write queue (gauge).
    pub store_queue: u64,
    /// Infohashes the harvester gave up on.
    pub given_up: u64,
    /// Infohashes in progress.
    pub in_progress: u64,
    /// Sightings of stored torrents (not fetched again).
    pub already_stored: u64,
    /// Fetch attempt failures by kind.
    pub failures: Vec<(FailureKind, u64)>,
}

impl Sample {
    /// Sum of `f` over shards.
    pub fn total(&self, f: impl Fn(&ShardSample) -> u64) -> u64 {
        self.shards.iter().map(f).sum()
    }
}

/// The sampled history, newest last.
#[derive(Debug)]
pub struct Live {
    samples: Mutex<VecDeque<Sample>>,
    /// Time between samples.
    pub every: Duration,
    stop: AtomicBool,
}

impl Live {
    /// Starts sampling `tele` (and the store queue through `store`) every
    /// `every` on a thread of its own; the thread ends when the returned
    /// handle's last clone is dropped (checked once a sample) or on
    /// [`Live::stop`].
    pub fn start(
        tele: Arc<Telemetry>,
        store: Option<StoreWriter>,
        every: Duration,
    ) -> std::io::Result<Arc<Live>> {
        let live = Arc::new(Live {
            samples: Mutex::new(VecDeque::new()),
            every,
            stop: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&live);
        let start = Instant::now();
        std::thread::Builder::new()
            .name("web-sampler".into())
            .spawn(move || loop {
                let Some(live) = weak.upgrade() else { return };
                if live.stop.load(Ordering::Relaxed) {
                    return;
                }
                let s = sample(&tele, store.as_ref(), start.elapsed().as_secs_f64());
                live.push(s);
                drop(live);
                std::thread::sleep(every);
            })?;
        Ok(live)
    }

    /// Ends the sampler thread (after its current sleep).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn push(&self, s: Sample) {
        let keep =
            (HISTORY.as_secs_f64() / self.every.as_secs_f64().max(0.001)).ceil() as usize + 1;
        let mut q = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        q.push_back(s);
        while q.len() > keep {
            q.pop_front();
        }
    }

    /// A copy of the history, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        let q = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        q.iter().cloned().collect()
    }
}

fn sample(tele: &Telemetry, store: Option<&StoreWriter>, at_s: f64) -> Sample {
    use std::sync::atomic::Ordering::Relaxed;
    let mut shards = Vec::new();
    let mut i = 0;
    while let Some(s) = tele.shard(i) {
        shards.push(ShardSample {
            packets_in: s.packets_in.load(Relaxed),
            packets_out: s.packets_out.load(Relaxed),
            infohashes: s.ih_sample.load(Relaxed)
                + s.ih_get_peers.load(Relaxed)
                + s.ih_announce.load(Relaxed),
            fetched: s.fetched.load(Relaxed),
            fetch_failed: s.fetch_failed.load(Relaxed),
            queue: s.queue.load(Relaxed),
            nodes: s.nodes.load(Relaxed),
        });
        i += 1;
    }
    let t = tele.totals();
    Sample {
        at_s,
        shards,
        store_queue: store.map_or(0, |w| w.queue_len() as u64),
        given_up: t.given_up,
        in_progress: t.in_progress,
        already_stored: t.already_stored,
        failures: t.failures,
    }
}

/// Per-second rate of `f` between two samples.
pub fn rate(a: &Sample, b: &Sample, f: impl Fn(&Sample) -> u64) -> f64 {
    let dt = (b.at_s - a.at_s).max(1e-3);
    f(b).saturating_sub(f(a)) as f64 / dt
}

/// `(seconds before the newest sample, rate)` of `f` between consecutive
/// samples: a plot's points, oldest first.
pub fn rate_series(samples: &[Sample], f: impl Fn(&Sample) -> u64) -> Vec<(f64, f64)> {
    let Some(last) = samples.last() else {
        return Vec::new();
    };
    samples
        .windows(2)
        .map(|w| (w[1].at_s - last.at_s, rate(&w[0], &w[1], &f)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_consecutive_samples() {
        let s = |at_s: f64, fetched: u64| Sample {
            at_s,
            shards: vec![ShardSample {
                fetched,
                ..ShardSample::default()
            }],
            ..Sample::default()
        };
        let samples = [s(0.0, 0), s(10.0, 50), s(20.0, 50)];
        let series = rate_series(&samples, |x| x.total(|sh| sh.fetched));
        assert_eq!(series, [(-10.0, 5.0), (0.0, 0.0)]);
    }

    #[test]
    fn the_ring_keeps_one_hour() {
        let tele = Arc::new(Telemetry::default());
        tele.ensure_shards(2);
        let live = Live::start(tele, None, Duration::from_secs(600)).unwrap();
        for i in 0..20 {
            live.push(Sample {
                at_s: f64::from(i) * 600.0,
                ..Sample::default()
            });
        }
        // 3600 / 600 + 1 samples span the hour.
        assert_eq!(live.samples().len(), 7);
        live.stop();
    }
}
