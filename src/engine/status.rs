//! The live status line: rates and totals about once a second, and how
//! evenly the shards share the work.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shards::ShutdownHandle;

use crate::engine::Telemetry;

/// When to show the status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum StatusMode {
    /// When stderr is a terminal.
    #[default]
    Auto,
    /// Always (one line per second when not a terminal).
    Always,
    /// Never.
    Never,
}

/// A running status line.
#[derive(Debug)]
pub struct Status {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Status {
    /// Stops and clears the line.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the status thread.
pub fn spawn(mode: StatusMode, tele: Arc<Telemetry>, _engine: ShutdownHandle) -> Status {
    let tty = std::io::stderr().is_terminal();
    let on = match mode {
        StatusMode::Auto => tty,
        StatusMode::Always => true,
        StatusMode::Never => false,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let thread = on.then(|| {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("status".into())
            .spawn(move || run(&tele, &stop, tty))
            .ok()
    });
    Status {
        stop,
        thread: thread.flatten(),
    }
}

fn run(tele: &Telemetry, stop: &AtomicBool, tty: bool) {
    let start = Instant::now();
    let mut prev = tele.totals();
    let mut prev_t = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(250));
        if prev_t.elapsed() < Duration::from_secs(1) && !stop.load(Ordering::Relaxed) {
            continue;
        }
        let t = tele.totals();
        let dt = prev_t.elapsed().as_secs_f64().max(1e-3);
        let rate = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / dt;
        let max = t.per_shard_infohashes.iter().copied().max().unwrap_or(0);
        let mean = t.per_shard_infohashes.iter().sum::<u64>() as f64
            / t.per_shard_infohashes.len().max(1) as f64;
        let imbalance = if mean > 0.0 { max as f64 / mean } else { 1.0 };
        let line = format!(
            "{:>5.0}s  in {:>7.0}/s  out {:>7.0}/s  answered {:>7.0}/s  nodes {:>6}  infohashes {:>7} (+{:.0}/s)  fetched {:>6} (+{:.1}/s)  failed {:>5}  filtered {:>5}  scraped {:>6}  queue {:>5}  imbalance {:.2}{}",
            start.elapsed().as_secs_f64(),
            rate(t.packets_in, prev.packets_in),
            rate(t.packets_out, prev.packets_out),
            rate(t.answered, prev.answered),
            t.nodes,
            t.infohashes,
            rate(t.infohashes, prev.infohashes),
            t.fetched,
            rate(t.fetched, prev.fetched),
            t.fetch_failed,
            t.filtered,
            t.scraped,
            t.queue,
            imbalance,
            if t.db_full {
                "  DB FULL: not fetching (--max-db-size)"
            } else {
                ""
            },
        );
        let mut e = std::io::stderr().lock();
        if tty {
            let _ = write!(e, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(e, "{line}");
        }
        let _ = e.flush();
        prev = t;
        prev_t = Instant::now();
    }
    if tty {
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }
}
