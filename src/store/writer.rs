//! The writer thread and what it does when the database fails.
//!
//! Two kinds of failure, told apart by [`classify`]:
//!
//! * **Transient**: the database or the way to it is at fault, not the
//!   rows: SQLite busy or locked past its busy timeout, disk full, an I/O
//!   error, a lost or timed-out PostgreSQL connection, a server shutting
//!   down, and anything not known to be about the data. The same rows are
//!   written again after a pause that doubles up to
//!   [`StoreOptions::retry_max`], for as long as it takes. Meanwhile the
//!   bounded queue fills and producers wait (see the module docs of
//!   [`super`]), so memory stays bounded and nothing is dropped.
//! * **Row**: the database rejected the data (a constraint or trigger, a
//!   value out of range, a PostgreSQL data exception or program limit). The
//!   batch is split in halves and each half written on its own, down to the
//!   single row that fails alone: that row is logged with its infohash,
//!   counted (`dht_hunter_store_rows_dropped_total`) and reported by the next
//!   flush or close; every other row is stored.
//!
//! An error of unknown kind is treated as transient on purpose: stalling
//! (visible in the logs, `dht_hunter_store_stalled` and the queue depth) is
//! recoverable, dropping every row one by one is not.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::{printable, Backend, FaultCounts, Msg, Op, StoreError, StoreOptions};

/// How a failed write is handled (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    /// Retry the same rows after a pause; the reason labels the retry metric.
    Transient(&'static str),
    /// The rows are at fault: split until the bad one fails alone.
    Row,
}

/// Tells row faults from transient ones.
pub(super) fn classify(e: &StoreError) -> Fault {
    use rusqlite::ErrorCode as C;
    match e {
        StoreError::Range(_) => Fault::Row,
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => match f.code {
            C::ConstraintViolation | C::TooBig | C::TypeMismatch => Fault::Row,
            C::DatabaseBusy | C::DatabaseLocked => Fault::Transient("busy"),
            C::DiskFull => Fault::Transient("disk_full"),
            C::SystemIoFailure => Fault::Transient("io"),
            _ => Fault::Transient("other"),
        },
        StoreError::Sqlite(
            rusqlite::Error::ToSqlConversionFailure(_)
            | rusqlite::Error::IntegralValueOutOfRange(..),
        ) => Fault::Row,
        StoreError::Postgres(pe) => match pe.code() {
            Some(state) => classify_sqlstate(state.code()),
            // No SQLSTATE: the connection failed or closed.
            None => Fault::Transient("connection"),
        },
        StoreError::Timeout { .. } => Fault::Transient("timeout"),
        StoreError::Io(_) => Fault::Transient("io"),
        _ => Fault::Transient("other"),
    }
}

/// PostgreSQL error classes (the first two characters of the SQLSTATE).
fn classify_sqlstate(code: &str) -> Fault {
    match code {
        // Statement cancelled by statement_timeout.
        "57014" => Fault::Transient("timeout"),
        "53100" => Fault::Transient("disk_full"),
        "55P03" => Fault::Transient("busy"),
        _ => match code.get(..2).unwrap_or("") {
            // Data exception, integrity constraint, cardinality, program
            // limit (e.g. a tsvector too long), an exception raised by a
            // trigger (PL/pgSQL): about these rows.
            "21" | "22" | "23" | "54" | "P0" => Fault::Row,
            "08" | "57" => Fault::Transient("connection"),
            // Serialization failure or deadlock.
            "40" => Fault::Transient("busy"),
            "53" => Fault::Transient("resources"),
            "58" => Fault::Transient("io"),
            _ => Fault::Transient("other"),
        },
    }
}

/// The pause before retry number `attempt` (1-based): `min` doubled per
/// attempt up to `max`, then spread by ±25 % (`jitter` in [0, 1)) so that
/// crawlers sharing one PostgreSQL do not reconnect in step.
pub(super) fn backoff(attempt: u32, min: Duration, max: Duration, jitter: f64) -> Duration {
    let doubled = min.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let base = doubled.min(max);
    base.mul_f64(0.75 + 0.5 * jitter.clamp(0.0, 1.0)).min(max)
}

/// Writes `items` with `write`, which stores a contiguous run of them in one
/// transaction and says how many were new. A transient failure calls
/// `wait(error, reason, attempt)` and writes the same run again (`wait`
/// returning false gives up with that error); a row fault splits the run in
/// halves, written in order; an item that fails alone with a row fault goes
/// to `dropped(index, error)` and the rest carry on. Returns the sum of what
/// the successful writes returned.
pub(super) fn write_resilient<T, E>(
    items: &[T],
    mut write: impl FnMut(&[T]) -> Result<u64, E>,
    classify: impl Fn(&E) -> Fault,
    mut wait: impl FnMut(&E, &'static str, u32) -> bool,
    mut dropped: impl FnMut(usize, E),
) -> Result<u64, E> {
    let mut total = 0;
    // Runs still to write, the next on top.
    let mut runs = vec![(0, items.len())];
    while let Some((lo, hi)) = runs.pop() {
        if lo == hi {
            continue;
        }
        let mut attempt = 0;
        loop {
            let e = match write(&items[lo..hi]) {
                Ok(n) => {
                    total += n;
                    break;
                }
                Err(e) => e,
            };
            match classify(&e) {
                Fault::Row if hi - lo > 1 => {
                    let mid = lo + (hi - lo) / 2;
                    runs.push((mid, hi));
                    runs.push((lo, mid));
                    break;
                }
                Fault::Row => {
                    dropped(lo, e);
                    break;
                }
                Fault::Transient(reason) => {
                    attempt += 1;
                    if !wait(&e, reason, attempt) {
                        return Err(e);
                    }
                }
            }
        }
    }
    Ok(total)
}

/// How often the writer measures the database for `--max-db-size`.
pub(super) const DB_SIZE_CHECK_EVERY: Duration = Duration::from_secs(2);

/// The store's fault counters, shared by the writer thread, the
/// submission handles and the back ends; also exported as metrics.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) retries: AtomicU64,
    pub(super) rows_dropped: AtomicU64,
    pub(super) reconnects: AtomicU64,
    pub(super) shed: AtomicU64,
    pub(super) producer_waits: AtomicU64,
    pub(super) stalled: AtomicBool,
    /// The queue depth the writer last saw.
    pub(super) queue_depth: AtomicU64,
    /// The database's size when last measured (0 until then; only
    /// measured with `max_db_bytes`).
    pub(super) db_bytes: AtomicU64,
    /// The database is at or over `max_db_bytes`: no new torrent is
    /// fetched until it is under again.
    pub(super) full: AtomicBool,
}

impl Counters {
    pub(super) fn snapshot(&self) -> FaultCounts {
        FaultCounts {
            retries: self.retries.load(Relaxed),
            rows_dropped: self.rows_dropped.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            shed: self.shed.load(Relaxed),
            producer_waits: self.producer_waits.load(Relaxed),
            stalled: self.stalled.load(Relaxed),
        }
    }

    /// A connection was re-established after a loss.
    pub(super) fn reconnected(&self, backend: &'static str) {
        self.reconnects.fetch_add(1, Relaxed);
        metrics::counter!("dht_hunter_store_reconnects_total", "backend" => backend).increment(1);
    }
}

/// What a dropped op was, for the log: kind, infohash and (escaped) name.
fn describe(op: &Op) -> String {
    match op {
        Op::Fetched(r) => format!(
            "torrent {} \"{}\"",
            crate::id::Id(r.infohash).to_hex(),
            printable(&r.torrent.name.display())
        ),
        Op::Discovered { infohash, .. } => {
            format!("discovery of {}", crate::id::Id(*infohash).to_hex())
        }
        Op::Forget { infohash } => format!("forget of {}", crate::id::Id(*infohash).to_hex()),
        Op::Scraped { infohash, .. } => {
            format!("scrape of {}", crate::id::Id(*infohash).to_hex())
        }
    }
}

/// Rows dropped since the last report, and the first one's error.
#[derive(Default)]
struct Unreported(Option<(u64, String)>);

impl Unreported {
    fn add(&mut self, lost: u64, message: String) {
        match &mut self.0 {
            Some((n, _)) => *n += lost,
            None => self.0 = Some((lost, message)),
        }
    }

    fn take(&mut self) -> Result<(), StoreError> {
        match self.0.take() {
            None => Ok(()),
            Some((lost, message)) => Err(StoreError::Write { lost, message }),
        }
    }
}

/// The writer thread: takes batches off the queue, writes them through
/// [`write_resilient`], checkpoints, answers flushes; returns at shutdown
/// with any dropped rows not yet reported.
pub(super) fn writer_loop(
    mut backend: Box<dyn Backend>,
    rx: Receiver<Msg>,
    opts: StoreOptions,
    counters: Arc<Counters>,
) -> Result<(), StoreError> {
    let name = backend.name();
    let batch_seconds = metrics::histogram!("dht_hunter_store_batch_seconds", "backend" => name);
    let batch_size = metrics::histogram!("dht_hunter_store_batch_size", "backend" => name);
    let queue_depth = metrics::gauge!("dht_hunter_store_queue_depth", "backend" => name);
    let stalled = metrics::gauge!("dht_hunter_store_stalled", "backend" => name);
    let dropped_metric =
        metrics::counter!("dht_hunter_store_rows_dropped_total", "backend" => name);
    let maintenance_failures =
        metrics::counter!("dht_hunter_store_maintenance_failures_total", "backend" => name);

    let mut rng = crate::rng::Rng::from_entropy();
    let mut unreported = Unreported::default();
    let mut batch: Vec<Op> = Vec::with_capacity(opts.batch_max);
    let mut replies = Vec::new();
    let mut batches_since_checkpoint = 0u32;
    let mut dirty = false;
    // `--max-db-size`: the size is measured now and then (SQLite: pages
    // times page size plus the WAL; PostgreSQL: pg_database_size), and the
    // `full` flag follows it.
    let mut next_size_check = Instant::now();
    let mut check_size = |backend: &mut Box<dyn Backend>| {
        let Some(max) = opts.max_db_bytes else {
            return;
        };
        if Instant::now() < next_size_check {
            return;
        }
        next_size_check = Instant::now() + DB_SIZE_CHECK_EVERY;
        match backend.db_size() {
            Ok(bytes) => {
                counters.db_bytes.store(bytes, Relaxed);
                // Looked up at each use: the store may open before the
                // metrics recorder is installed.
                metrics::gauge!("dht_hunter_store_db_bytes", "backend" => name).set(bytes as f64);
                let full = bytes >= max;
                metrics::gauge!("dht_hunter_store_full", "backend" => name).set(if full {
                    1.0
                } else {
                    0.0
                });
                if counters.full.swap(full, Relaxed) != full {
                    if full {
                        log::warn!(
                            "store ({name}): the database is {bytes} bytes, at or over --max-db-size {max}: \
                             no new torrents are fetched or stored until it is under (discovery goes on; \
                             what is seen is kept as pending)"
                        );
                    } else {
                        log::info!(
                            "store ({name}): the database is {bytes} bytes, under --max-db-size {max}: \
                             fetching and storing again"
                        );
                    }
                }
            }
            Err(e) => log::warn!("store ({name}): could not measure the database size: {e}"),
        }
    };
    check_size(&mut backend);

    // The pause between retries; the writer holds its batch meanwhile and
    // the queue fills behind it.
    let mut wait = |e: &StoreError, reason: &'static str, attempt: u32, items: usize| {
        counters.retries.fetch_add(1, Relaxed);
        counters.stalled.store(true, Relaxed);
        stalled.set(1.0);
        queue_depth.set(rx.len() as f64);
        counters.queue_depth.store(rx.len() as u64, Relaxed);
        metrics::counter!("dht_hunter_store_retries_total", "backend" => name, "reason" => reason)
            .increment(1);
        let jitter = rng.below(1 << 20) as f64 / f64::from(1u32 << 20);
        let pause = backoff(attempt, opts.retry_min, opts.retry_max, jitter);
        log::warn!(
            "store writer ({name}): {e}; {items} items held, retry {attempt} in {:.1} s ({reason})",
            pause.as_secs_f64()
        );
        std::thread::sleep(pause);
        true
    };
    let recovered = |counters: &Counters| {
        if counters.stalled.swap(false, Relaxed) {
            stalled.set(0.0);
            log::info!("store writer ({name}): writing again");
        }
    };

    loop {
        check_size(&mut backend);
        let first = match rx.recv_timeout(opts.idle_checkpoint) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => {
                if dirty {
                    if let Err(e) = backend.maintain(opts.max_pending_rows) {
                        log::warn!("store writer ({name}): maintenance failed: {e}");
                        maintenance_failures.increment(1);
                    }
                    dirty = false;
                    batches_since_checkpoint = 0;
                }
                continue;
            }
            // Every sender is gone: only happens after Shutdown was queued.
            Err(RecvTimeoutError::Disconnected) => Msg::Shutdown,
        };
        let mut shutdown = false;
        let mut next = Some(first);
        while let Some(msg) = next {
            match msg {
                Msg::Op(op) => batch.push(op),
                Msg::Flush(reply) => replies.push(reply),
                Msg::Shutdown => shutdown = true,
            }
            next = if shutdown || batch.len() >= opts.batch_max {
                None
            } else {
                rx.try_recv().ok()
            };
        }
        // After Shutdown nothing can be queued (the sender is gone), but drain
        // anything that raced in before it, in order.
        if shutdown {
            while let Ok(msg) = rx.try_recv() {
                match msg {
                    Msg::Op(op) => batch.push(op),
                    Msg::Flush(reply) => replies.push(reply),
                    Msg::Shutdown => {}
                }
            }
        }
        queue_depth.set(rx.len() as f64);
        counters.queue_depth.store(rx.len() as u64, Relaxed);

        if !batch.is_empty() {
            let started = Instant::now();
            let n = batch.len();
            // `wait` always returns true: the writer never gives up.
            let _ = write_resilient(
                &batch,
                |ops| backend.write(ops),
                classify,
                |e, reason, attempt| wait(e, reason, attempt, n),
                |i, e| {
                    let what = describe(&batch[i]);
                    log::error!(
                        "store writer ({name}): dropped {what}: the database rejects it alone: {e}"
                    );
                    counters.rows_dropped.fetch_add(1, Relaxed);
                    dropped_metric.increment(1);
                    unreported.add(1, format!("{what}: {e}"));
                },
            );
            recovered(&counters);
            batch_seconds.record(started.elapsed().as_secs_f64());
            batch_size.record(n as f64);
            batch.clear();
            batches_since_checkpoint += 1;
            dirty = true;
        }

        if batches_since_checkpoint >= opts.checkpoint_every_batches || shutdown {
            if let Err(e) = backend.maintain(opts.max_pending_rows) {
                log::warn!("store writer ({name}): maintenance failed: {e}");
                maintenance_failures.increment(1);
            }
            batches_since_checkpoint = 0;
            dirty = false;
        }
        if !replies.is_empty() {
            // A flush promises durability: syncing is retried like a write.
            let _ = write_resilient(
                &[()],
                |_| backend.sync().map(|()| 0),
                classify,
                |e, reason, attempt| wait(e, reason, attempt, 0),
                |_, e| unreported.add(0, format!("sync: {e}")),
            );
            recovered(&counters);
            let outcome = unreported.0.take();
            for reply in replies.drain(..) {
                let r = match &outcome {
                    None => Ok(()),
                    Some((lost, message)) => Err(StoreError::Write {
                        lost: *lost,
                        message: message.clone(),
                    }),
                };
                // The flusher may have given up waiting; nothing to do then.
                let _ = reply.send(r);
            }
        }
        if shutdown {
            return unreported.take();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake database over integers: `bad` items are rejected (a row
    /// fault), and the first `outage` calls fail transiently.
    struct Fake {
        bad: Vec<u32>,
        outage: u32,
        calls: u32,
        stored: Vec<u32>,
    }

    #[derive(Debug, PartialEq)]
    enum FakeErr {
        Down,
        Bad(u32),
    }

    impl Fake {
        fn write(&mut self, items: &[u32]) -> Result<u64, FakeErr> {
            self.calls += 1;
            if self.outage > 0 {
                self.outage -= 1;
                return Err(FakeErr::Down);
            }
            if let Some(b) = items.iter().find(|i| self.bad.contains(i)) {
                return Err(FakeErr::Bad(*b));
            }
            self.stored.extend_from_slice(items);
            Ok(items.len() as u64)
        }
    }

    fn fake_class(e: &FakeErr) -> Fault {
        match e {
            FakeErr::Down => Fault::Transient("down"),
            FakeErr::Bad(_) => Fault::Row,
        }
    }

    #[test]
    fn bisects_down_to_the_bad_rows_and_keeps_the_rest_in_order() {
        let items: Vec<u32> = (0..2000).collect();
        let mut db = Fake {
            bad: vec![3, 1234, 1999],
            outage: 0,
            calls: 0,
            stored: Vec::new(),
        };
        let mut dropped = Vec::new();
        let n = write_resilient(
            &items,
            |run| db.write(run),
            fake_class,
            |_, _, _| panic!("no transient error here"),
            |i, e| dropped.push((i, e)),
        )
        .unwrap();
        assert_eq!(n, 1997);
        let expect: Vec<u32> = items
            .iter()
            .copied()
            .filter(|i| ![3, 1234, 1999].contains(i))
            .collect();
        assert_eq!(db.stored, expect);
        assert_eq!(
            dropped,
            [
                (3, FakeErr::Bad(3)),
                (1234, FakeErr::Bad(1234)),
                (1999, FakeErr::Bad(1999))
            ]
        );
        // Bisection, not one write per row: ~2 log2(2000) writes per bad row.
        assert!(db.calls < 3 * 2 * 12, "{} writes", db.calls);
    }

    #[test]
    fn transient_errors_retry_the_same_rows_until_they_go_through() {
        let items: Vec<u32> = (0..10).collect();
        let mut db = Fake {
            bad: vec![],
            outage: 7,
            calls: 0,
            stored: Vec::new(),
        };
        let mut attempts = Vec::new();
        let n = write_resilient(
            &items,
            |run| db.write(run),
            fake_class,
            |e, reason, attempt| {
                assert_eq!((e, reason), (&FakeErr::Down, "down"));
                attempts.push(attempt);
                true
            },
            |_, e| panic!("nothing may be dropped: {e:?}"),
        )
        .unwrap();
        assert_eq!(n, 10);
        assert_eq!(attempts, [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(db.stored, items);
    }

    #[test]
    fn giving_up_returns_the_error_and_drops_nothing() {
        let mut db = Fake {
            bad: vec![5],
            outage: 100,
            calls: 0,
            stored: Vec::new(),
        };
        let r = write_resilient(
            &[1u32, 5, 9],
            |run| db.write(run),
            fake_class,
            |_, _, attempt| attempt < 3,
            |_, e| panic!("nothing may be dropped: {e:?}"),
        );
        assert_eq!(r, Err(FakeErr::Down));
        assert_eq!(db.calls, 3);
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_bounded_jitter() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(30));
        assert_eq!(backoff(1, min, max, 0.5), min);
        assert_eq!(backoff(2, min, max, 0.5), min * 2);
        assert_eq!(backoff(4, min, max, 0.5), min * 8);
        assert_eq!(backoff(40, min, max, 0.5), max);
        assert_eq!(backoff(u32::MAX, min, max, 0.5), max);
        assert_eq!(backoff(1, min, max, 0.0), min.mul_f64(0.75));
        assert!(backoff(1, min, max, 0.999) < min.mul_f64(1.25));
        assert!(backoff(40, min, max, 0.999) <= max);
    }

    #[test]
    fn sqlite_and_postgres_errors_are_classified() {
        use rusqlite::ffi;
        let sqlite = |code: i32| {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(ffi::Error::new(code), None))
        };
        assert_eq!(
            classify(&sqlite(ffi::SQLITE_FULL)),
            Fault::Transient("disk_full")
        );
        assert_eq!(
            classify(&sqlite(ffi::SQLITE_BUSY)),
            Fault::Transient("busy")
        );
        assert_eq!(
            classify(&sqlite(ffi::SQLITE_LOCKED)),
            Fault::Transient("busy")
        );
        assert_eq!(classify(&sqlite(ffi::SQLITE_IOERR)), Fault::Transient("io"));
        assert_eq!(classify(&sqlite(ffi::SQLITE_CONSTRAINT)), Fault::Row);
        assert_eq!(classify(&sqlite(ffi::SQLITE_TOOBIG)), Fault::Row);
        // Unknown kinds stall rather than drop.
        assert_eq!(
            classify(&sqlite(ffi::SQLITE_CORRUPT)),
            Fault::Transient("other")
        );
        assert_eq!(classify(&StoreError::Range("total size")), Fault::Row);
        assert_eq!(
            classify(&StoreError::Timeout {
                what: "writing a batch",
                after: Duration::from_secs(1)
            }),
            Fault::Transient("timeout")
        );
        for (code, fault) in [
            ("23505", Fault::Row),
            ("22021", Fault::Row),
            ("54000", Fault::Row),
            ("P0001", Fault::Row),
            ("57014", Fault::Transient("timeout")),
            ("57P01", Fault::Transient("connection")),
            ("08006", Fault::Transient("connection")),
            ("53100", Fault::Transient("disk_full")),
            ("40P01", Fault::Transient("busy")),
            // Permission denied, undefined table: not the rows' fault.
            ("42501", Fault::Transient("other")),
            ("42P01", Fault::Transient("other")),
        ] {
            assert_eq!(classify_sqlstate(code), fault, "{code}");
        }
    }
}
