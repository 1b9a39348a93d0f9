//! The store: where discovered infohashes and harvested torrents end up.
//!
//! One interface, two back ends:
//! * **SQLite** (`sqlite:PATH`), the embedded default: WAL mode,
//!   `synchronous=NORMAL`, an FTS5 index over names and file paths, and a
//!   WAL that is checkpointed so it cannot grow without bound.
//! * **PostgreSQL** (`postgres://…` / `postgresql://…`): multi-row
//!   `unnest` inserts with `ON CONFLICT DO NOTHING` and a GIN-indexed
//!   `tsvector` for search.
//!
//! # Writes never block the crawler
//!
//! The shards submit through a [`StoreWriter`] (cheap to clone, `Send`), which
//! pushes onto an **unbounded** crossbeam channel consumed by one writer thread
//! that batches everything it finds into a single transaction. Unbounded was
//! chosen over "bounded and hand the item back" because the only sensible
//! thing a shard could do with a handed-back item is hold it somewhere else in
//! memory; the queue is that somewhere, and it is observable: the
//! `dht_store_queue_depth` gauge and [`StoreWriter::queue_len`] let the caller
//! throttle metadata fetching if the database falls behind. The cost is
//! memory: a queued fetched torrent is its names and paths plus ~150 bytes, so
//! a backlog of 100 000 typical torrents is some tens of MiB. The bench
//! (`benches/store.rs`) shows the writer sustaining far more than a crawler
//! harvests, so a standing backlog means the disk is failing, not load.
//!
//! Submission fails only once the store is closed, and then it says so
//! ([`StoreError::Closed`]); nothing is dropped silently. If a batch fails to
//! commit, the error is kept and returned by the next [`StoreWriter::flush`]
//! or [`Store::close`], along with how many items were lost.
//!
//! # Search
//!
//! Names and file paths are reduced to lowercase alphanumeric tokens in Rust
//! (see [`search_tokens`]) before either back end sees them, so both back ends
//! match the same words in the same way regardless of database locale:
//! a query matches torrents containing every query token as a whole word.

mod pg;
pub mod rfc3339;
mod sqlite;

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::{Deserialize, Serialize};

use crate::metainfo::{Torrent, TorrentFile, TorrentName};

/// Newest schema version this build knows (both back ends).
pub const SCHEMA_VERSION: i64 = 1;

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The `--db` value is not a URL the store understands.
    #[error("bad database URL {url:?}: {reason}")]
    BadUrl {
        /// The offending value.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An SQLite error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A PostgreSQL error (the server's message is included: the client
    /// error's own Display is just "db error").
    #[error("postgres: {}", pg_message(.0))]
    Postgres(#[from] ::postgres::Error),
    /// The database was written by a newer build.
    #[error("database schema version {found} is newer than this build supports ({supported}); upgrade dht-hunter")]
    SchemaTooNew {
        /// Version recorded in the database.
        found: i64,
        /// [`SCHEMA_VERSION`].
        supported: i64,
    },
    /// The store was closed (or its writer thread died); the item was not queued.
    #[error("the store is closed")]
    Closed,
    /// A batch failed to commit in the writer thread.
    #[error("store writer failed, {lost} submitted items were not stored: {message}")]
    Write {
        /// Items (discoveries and torrents) in the failed batches.
        lost: u64,
        /// The first underlying error.
        message: String,
    },
    /// The writer thread panicked.
    #[error("store writer thread panicked")]
    WriterPanicked,
    /// A value does not fit the schema (e.g. a size above `i64::MAX`).
    #[error("value out of range: {0}")]
    Range(&'static str),
    /// Stored data that cannot be decoded (e.g. a bad `source`).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// I/O error (export, import, file sizes).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// How an infohash was discovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// BEP 51 `sample_infohashes`.
    Sample,
    /// A `get_peers` query we observed.
    GetPeers,
    /// An `announce_peer` we received.
    Announce,
}

impl Source {
    /// All sources, in a fixed order.
    pub const ALL: [Source; 3] = [Source::Sample, Source::GetPeers, Source::Announce];

    /// The stored / exported spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Sample => "sample",
            Source::GetPeers => "get_peers",
            Source::Announce => "announce",
        }
    }
}

impl FromStr for Source {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, StoreError> {
        match s {
            "sample" => Ok(Source::Sample),
            "get_peers" => Ok(Source::GetPeers),
            "announce" => Ok(Source::Announce),
            _ => Err(StoreError::Corrupt(format!("unknown source {s:?}"))),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A harvested torrent, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorrentRecord {
    /// The 20-byte infohash it was fetched under.
    pub infohash: [u8; 20],
    /// The parsed info dictionary.
    pub torrent: Torrent,
    /// How the infohash was first seen.
    pub source: Source,
    /// When it was first seen (stored with one-second precision).
    pub discovered_at: SystemTime,
    /// When its metadata arrived (stored with one-second precision).
    pub fetched_at: SystemTime,
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHit {
    /// Infohash.
    pub infohash: [u8; 20],
    /// Name (lossy if the original was not UTF-8).
    pub name: String,
    /// Total size in bytes.
    pub total_size: u64,
    /// Number of files.
    pub file_count: u64,
    /// Discovery source.
    pub source: Source,
    /// When the metadata arrived.
    pub fetched_at: SystemTime,
}

/// An infohash seen but not yet fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEntry {
    /// Infohash.
    pub infohash: [u8; 20],
    /// How it was seen.
    pub source: Source,
    /// When it was first seen.
    pub discovered_at: SystemTime,
}

/// A snapshot of what is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Stored torrents.
    pub torrents: u64,
    /// Files across stored torrents.
    pub files: u64,
    /// Infohashes waiting for metadata.
    pub pending: u64,
    /// On-disk size: SQLite main file + WAL; PostgreSQL tables + indexes.
    pub db_bytes: u64,
    /// Stored torrents per discovery source, in [`Source::ALL`] order.
    pub by_source: [(Source, u64); 3],
    /// Oldest `fetched_at`.
    pub first_fetched: Option<SystemTime>,
    /// Newest `fetched_at`.
    pub last_fetched: Option<SystemTime>,
    /// Torrents whose `fetched_at` is within the last hour.
    pub fetched_last_hour: u64,
    /// Torrents whose `fetched_at` is within the last 24 hours.
    pub fetched_last_day: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            torrents: 0,
            files: 0,
            pending: 0,
            db_bytes: 0,
            by_source: Source::ALL.map(|s| (s, 0)),
            first_fetched: None,
            last_fetched: None,
            fetched_last_hour: 0,
            fetched_last_day: 0,
        }
    }
}

impl Stats {
    /// Mean harvest rate over the last hour, torrents per second.
    pub fn rate_last_hour(&self) -> f64 {
        self.fetched_last_hour as f64 / 3600.0
    }
    /// Mean harvest rate over the last day, torrents per second.
    pub fn rate_last_day(&self) -> f64 {
        self.fetched_last_day as f64 / 86_400.0
    }
}

/// Outcome of [`Store::import_jsonl`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImportReport {
    /// Records that were new and are now stored.
    pub imported: u64,
    /// Well-formed records whose infohash was already stored.
    pub duplicates: u64,
    /// Lines that could not be imported: (1-based line number, reason).
    pub errors: Vec<(u64, String)>,
}

/// Where the database lives, parsed from a `--db` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbUrl {
    /// `sqlite:PATH` (also `sqlite://PATH`).
    Sqlite(PathBuf),
    /// A libpq-style URL, passed to the `postgres` crate as is.
    Postgres(String),
}

impl FromStr for DbUrl {
    type Err = StoreError;
    fn from_str(url: &str) -> Result<Self, StoreError> {
        let bad = |reason: &str| StoreError::BadUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(bad("missing path after sqlite:"));
            }
            if path == ":memory:" {
                return Err(bad("in-memory SQLite is not supported (the writer thread and readers need to share a file)"));
            }
            return Ok(DbUrl::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            ::postgres::Config::from_str(url).map_err(|e| bad(&e.to_string()))?;
            return Ok(DbUrl::Postgres(url.to_owned()));
        }
        Err(bad(
            "expected sqlite:PATH, postgres://... or postgresql://...",
        ))
    }
}

/// Tuning knobs; [`StoreOptions::default`] is what [`Store::open`] uses.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Most items the writer puts in one transaction.
    pub batch_max: usize,
    /// Run a WAL checkpoint after this many batches (SQLite).
    pub checkpoint_every_batches: u32,
    /// Also checkpoint when no item arrived for this long after a write.
    pub idle_checkpoint: Duration,
    /// `PRAGMA wal_autocheckpoint` (pages).
    pub wal_autocheckpoint_pages: u32,
    /// `PRAGMA journal_size_limit` (bytes): the WAL is truncated back to at
    /// most this after a checkpoint.
    pub journal_size_limit: i64,
    /// Rows the `pending` table keeps at most: the periodic maintenance
    /// prunes the oldest discoveries beyond it (the crawler gave up on
    /// most of those long ago).
    pub max_pending_rows: i64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            batch_max: 2000,
            checkpoint_every_batches: 64,
            idle_checkpoint: Duration::from_secs(1),
            wal_autocheckpoint_pages: 1000,
            journal_size_limit: 64 << 20,
            max_pending_rows: 1_000_000,
        }
    }
}

/// A queued write.
#[derive(Debug)]
enum Op {
    Discovered {
        infohash: [u8; 20],
        source: Source,
        at: i64,
    },
    Fetched(Box<TorrentRecord>),
    /// The crawler gave up on it: out of `pending`.
    Forget {
        infohash: [u8; 20],
    },
}

#[derive(Debug)]
enum Msg {
    Op(Op),
    Flush(Sender<Result<(), StoreError>>),
    Shutdown,
}

/// One exported torrent, as the back ends hand it to the JSONL writer.
struct ExportRow {
    infohash: [u8; 20],
    name: String,
    size: u64,
    files: Vec<(String, u64)>,
    discovered_at: i64,
    fetched_at: i64,
    source: Source,
}

type ExportSink<'a> = dyn FnMut(ExportRow) -> Result<(), StoreError> + 'a;

/// What each back end implements. One instance lives in the writer thread,
/// another serves the read side.
trait Backend: Send {
    fn name(&self) -> &'static str;
    /// Applies `ops` in order in one transaction; returns how many torrents
    /// were newly stored. Duplicate infohashes are skipped.
    fn write(&mut self, ops: &[Op]) -> Result<u64, StoreError>;
    /// Makes committed writes durable.
    fn sync(&mut self) -> Result<(), StoreError>;
    /// Periodic housekeeping: the `pending` table pruned to `max_pending`
    /// rows, oldest first (and SQLite: a truncating WAL checkpoint).
    fn maintain(&mut self, max_pending: i64) -> Result<(), StoreError>;
    fn search(&mut self, tokens: &[String], limit: usize) -> Result<Vec<SearchHit>, StoreError>;
    fn stats(&mut self, now: i64) -> Result<Stats, StoreError>;
    fn pending(&mut self, limit: usize) -> Result<Vec<PendingEntry>, StoreError>;
    fn is_known(&mut self, infohash: &[u8; 20]) -> Result<bool, StoreError>;
    /// Streams the infohash of every stored torrent; returns how many.
    fn infohashes(&mut self, sink: &mut dyn FnMut([u8; 20])) -> Result<u64, StoreError>;
    /// Streams every torrent in infohash order; returns how many.
    fn export(&mut self, sink: &mut ExportSink<'_>) -> Result<u64, StoreError>;
}

/// The sending half shared by every [`StoreWriter`]. The lock is what makes
/// "nothing submitted before close() is lost" exact: `close` takes it for
/// writing, queues `Shutdown` and drops the sender, so every successful
/// submission is ordered before `Shutdown` in the channel. Submitters only
/// take it for reading (uncontended except during `close`).
#[derive(Debug)]
struct Shared {
    tx: RwLock<Option<Sender<Msg>>>,
}

impl Shared {
    fn send(&self, msg: Msg) -> Result<(), StoreError> {
        // Send fails if the writer thread is gone (its receiver dropped), so a
        // dead writer can never swallow submissions.
        let guard = self.tx.read().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(tx) => tx.send(msg).map_err(|_| StoreError::Closed),
            None => Err(StoreError::Closed),
        }
    }
}

/// Submission handle for the crawler: cheap to clone, never blocks on the
/// database.
#[derive(Debug, Clone)]
pub struct StoreWriter {
    shared: Arc<Shared>,
}

impl StoreWriter {
    /// Records that `infohash` was seen (kept in `pending` until fetched;
    /// ignored if already stored or pending).
    pub fn discovered(
        &self,
        infohash: [u8; 20],
        source: Source,
        at: SystemTime,
    ) -> Result<(), StoreError> {
        self.shared.send(Msg::Op(Op::Discovered {
            infohash,
            source,
            at: unix_secs(at),
        }))
    }

    /// Stores a harvested torrent (ignored if the infohash is already stored)
    /// and removes it from `pending`.
    pub fn fetched(&self, record: TorrentRecord) -> Result<(), StoreError> {
        self.shared.send(Msg::Op(Op::Fetched(Box::new(record))))
    }

    /// Removes `infohash` from `pending`: the crawler gave up on it, so a
    /// restart does not resume it (a later sighting with a peer starts it
    /// again).
    pub fn forget(&self, infohash: [u8; 20]) -> Result<(), StoreError> {
        self.shared.send(Msg::Op(Op::Forget { infohash }))
    }

    /// Blocks until everything submitted before this call is committed and
    /// synced, and reports (then clears) any write error since the last
    /// flush. SQLite durability: the WAL is fsynced by a passive checkpoint,
    /// which a concurrently open long read transaction can defer.
    pub fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.shared.send(Msg::Flush(tx))?;
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    /// Items queued and not yet taken by the writer thread.
    pub fn queue_len(&self) -> usize {
        let guard = self.shared.tx.read().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().map_or(0, Sender::len)
    }
}

/// An open store: the read side plus ownership of the writer thread.
pub struct Store {
    read: std::sync::Mutex<Box<dyn Backend>>,
    writer: StoreWriter,
    thread: Option<JoinHandle<Result<(), StoreError>>>,
    backend: &'static str,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating and migrating as needed) the database at `url`.
    pub fn open(url: &str) -> Result<Store, StoreError> {
        Self::open_with(url, StoreOptions::default())
    }

    /// [`Store::open`] with explicit tuning.
    pub fn open_with(url: &str, opts: StoreOptions) -> Result<Store, StoreError> {
        let (write, read): (Box<dyn Backend>, Box<dyn Backend>) = match url.parse::<DbUrl>()? {
            DbUrl::Sqlite(path) => {
                let w = sqlite::SqliteBackend::open(&path, &opts, true)?;
                let r = sqlite::SqliteBackend::open(&path, &opts, false)?;
                (Box::new(w), Box::new(r))
            }
            DbUrl::Postgres(url) => {
                let w = pg::PgBackend::open(&url, true)?;
                let r = pg::PgBackend::open(&url, false)?;
                (Box::new(w), Box::new(r))
            }
        };
        let backend = write.name();
        let (tx, rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            tx: RwLock::new(Some(tx)),
        });
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(write, rx, opts))?;
        Ok(Store {
            read: std::sync::Mutex::new(read),
            writer: StoreWriter { shared },
            thread: Some(thread),
            backend,
        })
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// A submission handle for the crawler.
    pub fn writer(&self) -> StoreWriter {
        self.writer.clone()
    }

    /// See [`StoreWriter::flush`].
    pub fn flush(&self) -> Result<(), StoreError> {
        self.writer.flush()
    }

    /// Stops accepting submissions, writes everything already submitted,
    /// checkpoints, joins the writer thread and returns any write error not
    /// yet reported by a flush.
    pub fn close(mut self) -> Result<(), StoreError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), StoreError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        {
            let mut guard = self
                .writer
                .shared
                .tx
                .write()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(tx) = guard.take() {
                // Fails only if the thread already exited; join reports why.
                let _ = tx.send(Msg::Shutdown);
            }
        }
        thread.join().map_err(|_| StoreError::WriterPanicked)?
    }

    fn with_read<T>(
        &self,
        f: impl FnOnce(&mut dyn Backend) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = self.read.lock().unwrap_or_else(|e| e.into_inner());
        f(guard.as_mut())
    }

    /// Torrents whose name or file paths contain every word of `text`
    /// (case-insensitive, whole words), best match first.
    pub fn search(&self, text: &str, limit: usize) -> Result<Vec<SearchHit>, StoreError> {
        let tokens = search_tokens([text]);
        if tokens.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        self.with_read(|b| b.search(&tokens, limit))
    }

    /// Counts, sizes and recent rates. Reflects committed writes only.
    pub fn stats(&self) -> Result<Stats, StoreError> {
        let now = unix_secs(SystemTime::now());
        self.with_read(|b| b.stats(now))
    }

    /// Up to `limit` infohashes awaiting metadata, oldest first (what a
    /// restarted crawler should resume).
    pub fn pending(&self, limit: usize) -> Result<Vec<PendingEntry>, StoreError> {
        self.with_read(|b| b.pending(limit))
    }

    /// The infohash of every stored torrent (committed writes only): the
    /// crawler's "never fetch again" filter is rebuilt from it at start.
    pub fn stored_infohashes(&self) -> Result<Vec<[u8; 20]>, StoreError> {
        let mut out = Vec::new();
        self.with_read(|b| b.infohashes(&mut |ih| out.push(ih)))?;
        Ok(out)
    }

    /// Whether `infohash` is stored or pending (committed writes only).
    pub fn is_known(&self, infohash: &[u8; 20]) -> Result<bool, StoreError> {
        self.with_read(|b| b.is_known(infohash))
    }

    /// Writes every stored torrent as one JSON object per line, in infohash
    /// order; returns how many were written.
    pub fn export_jsonl(&self, out: &mut dyn Write) -> Result<u64, StoreError> {
        self.with_read(|b| {
            b.export(&mut |row: ExportRow| {
                let rec = JsonRecord {
                    infohash: rfc3339::hex(&row.infohash),
                    name: row.name,
                    size: row.size,
                    files: row
                        .files
                        .into_iter()
                        .map(|(path, size)| JsonFile { path, size })
                        .collect(),
                    discovered_at: rfc3339::format(row.discovered_at),
                    fetched_at: rfc3339::format(row.fetched_at),
                    source: row.source.as_str().to_owned(),
                };
                serde_json::to_writer(&mut *out, &rec).map_err(std::io::Error::from)?;
                out.write_all(b"\n")?;
                Ok(())
            })
        })
    }

    /// Reads JSONL in the [`Store::export_jsonl`] format and stores every
    /// record whose infohash is not already stored. Bad lines are reported
    /// with their line number and skipped; database errors abort.
    pub fn import_jsonl(&self, input: &mut dyn BufRead) -> Result<ImportReport, StoreError> {
        const BATCH: usize = 1000;
        let mut report = ImportReport::default();
        let mut batch = Vec::with_capacity(BATCH);
        let mut line = Vec::new();
        let mut line_no = 0u64;
        loop {
            line.clear();
            let n = input.read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            line_no += 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match parse_json_line(&line) {
                Ok(rec) => batch.push(Op::Fetched(Box::new(rec))),
                Err(msg) => report.errors.push((line_no, msg)),
            }
            if batch.len() == BATCH {
                self.import_batch(&mut batch, &mut report)?;
            }
        }
        self.import_batch(&mut batch, &mut report)?;
        Ok(report)
    }

    fn import_batch(
        &self,
        batch: &mut Vec<Op>,
        report: &mut ImportReport,
    ) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let new = self.with_read(|b| b.write(batch))?;
        report.imported += new;
        report.duplicates += batch.len() as u64 - new;
        batch.clear();
        Ok(())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            log::error!("store closed on drop with an error: {e}");
        }
    }
}

fn writer_loop(
    mut backend: Box<dyn Backend>,
    rx: Receiver<Msg>,
    opts: StoreOptions,
) -> Result<(), StoreError> {
    let name = backend.name();
    let batch_seconds = metrics::histogram!("dht_store_batch_seconds", "backend" => name);
    let batch_size = metrics::histogram!("dht_store_batch_size", "backend" => name);
    let queue_depth = metrics::gauge!("dht_store_queue_depth", "backend" => name);
    let failures = metrics::counter!("dht_store_write_failures_total", "backend" => name);
    let lost_items = metrics::counter!("dht_store_lost_items_total", "backend" => name);

    // The first write error not yet reported, and how many items failed since.
    let mut failed: Option<(u64, String)> = None;
    let mut batch: Vec<Op> = Vec::with_capacity(opts.batch_max);
    let mut replies = Vec::new();
    let mut batches_since_checkpoint = 0u32;
    let mut dirty = false;
    let note = |failed: &mut Option<(u64, String)>, lost: u64, e: &StoreError| {
        log::error!("store writer ({name}): {e}");
        failures.increment(1);
        lost_items.increment(lost);
        match failed {
            Some((n, _)) => *n += lost,
            None => *failed = Some((lost, e.to_string())),
        }
    };

    loop {
        let first = match rx.recv_timeout(opts.idle_checkpoint) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => {
                if dirty {
                    if let Err(e) = backend.maintain(opts.max_pending_rows) {
                        note(&mut failed, 0, &e);
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

        if !batch.is_empty() {
            let started = Instant::now();
            let n = batch.len();
            match backend.write(&batch) {
                Ok(_) => {
                    batch_seconds.record(started.elapsed().as_secs_f64());
                    batch_size.record(n as f64);
                }
                Err(e) => note(&mut failed, n as u64, &e),
            }
            batch.clear();
            batches_since_checkpoint += 1;
            dirty = true;
        }
        queue_depth.set(rx.len() as f64);

        if batches_since_checkpoint >= opts.checkpoint_every_batches || shutdown {
            if let Err(e) = backend.maintain(opts.max_pending_rows) {
                note(&mut failed, 0, &e);
            }
            batches_since_checkpoint = 0;
            dirty = false;
        }
        if !replies.is_empty() {
            if let Err(e) = backend.sync() {
                note(&mut failed, 0, &e);
            }
            let outcome = failed.take();
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
            return match failed {
                None => Ok(()),
                Some((lost, message)) => Err(StoreError::Write { lost, message }),
            };
        }
    }
}

fn pg_message(e: &::postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// Seconds since the Unix epoch (negative before it).
fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs().min(i64::MAX as u64) as i64,
        Err(e) => -(e.duration().as_secs().min(i64::MAX as u64) as i64),
    }
}

/// Inverse of [`unix_secs`].
fn from_unix_secs(s: i64) -> SystemTime {
    if s >= 0 {
        UNIX_EPOCH + Duration::from_secs(s as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(s.unsigned_abs())
    }
}

/// Splits text into lowercase alphanumeric words: the shared tokenizer for
/// indexing and querying, so SQLite and PostgreSQL agree on what matches.
/// Duplicates are dropped (first occurrence kept).
pub fn search_tokens<'a>(texts: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut push = |w: String| {
        if seen.insert(w.clone()) {
            out.push(w);
        }
    };
    for text in texts {
        for word in text.split(|c: char| !c.is_alphanumeric()) {
            // Scripts written without spaces (Han, kana, Hangul) are indexed
            // as overlapping character bigrams, as CJK search engines do, so
            // any substring of two or more characters finds its name.
            let chars: Vec<char> = word.chars().collect();
            let mut i = 0;
            while i < chars.len() {
                let cjk = is_cjk(chars[i]);
                let start = i;
                while i < chars.len() && is_cjk(chars[i]) == cjk {
                    i += 1;
                }
                let run = &chars[start..i];
                if !cjk {
                    push(run.iter().collect::<String>().to_lowercase());
                } else if run.len() == 1 {
                    push(run[0].to_string());
                } else {
                    for pair in run.windows(2) {
                        push(pair.iter().collect());
                    }
                }
            }
        }
    }
    out
}

/// Han, Hiragana, Katakana and Hangul: scripts written without spaces.
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30ff      // Hiragana, Katakana
        | 0x3400..=0x4dbf    // CJK extension A
        | 0x4e00..=0x9fff    // CJK unified ideographs
        | 0xac00..=0xd7af    // Hangul syllables
        | 0xf900..=0xfaff    // CJK compatibility ideographs
        | 0xff66..=0xff9f    // half-width Katakana
        | 0x20000..=0x2fa1f) // CJK extensions B–F, compatibility supplement
}

/// The text to index for a torrent: name and file paths, tokenized.
fn search_body(t: &Torrent) -> String {
    let name = t.name.display();
    let paths: Vec<String> = t.files.iter().map(TorrentFile::display_path).collect();
    search_tokens(std::iter::once(name.as_ref()).chain(paths.iter().map(String::as_str))).join(" ")
}

/// Text column value plus the raw bytes when the text is not exact.
/// NUL is replaced too: PostgreSQL `text` cannot hold it.
fn text_and_raw(bytes: &[u8], lossy: String) -> (String, Option<Vec<u8>>) {
    let text = if lossy.contains('\0') {
        lossy.replace('\0', "\u{FFFD}")
    } else {
        lossy
    };
    let raw = (text.as_bytes() != bytes).then(|| bytes.to_vec());
    (text, raw)
}

fn name_columns(name: &TorrentName) -> (String, Option<Vec<u8>>) {
    text_and_raw(name.as_bytes(), name.display().into_owned())
}

fn path_columns(f: &TorrentFile) -> (String, Option<Vec<u8>>) {
    text_and_raw(&f.raw_path(), f.display_path())
}

fn to_i64(v: u64, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Range(what))
}

/// Keeps only the first `Fetched` op per infohash (later ones are
/// duplicates either way, and bulk inserts want unique keys).
fn dedup_fetched(ops: &[Op]) -> (Vec<&Op>, HashSet<[u8; 20]>) {
    let mut seen = HashSet::new();
    let kept = ops
        .iter()
        .filter(|op| match op {
            Op::Fetched(r) => seen.insert(r.infohash),
            Op::Discovered { .. } | Op::Forget { .. } => true,
        })
        .collect();
    (kept, seen)
}

#[derive(Serialize)]
struct JsonRecord {
    infohash: String,
    name: String,
    size: u64,
    files: Vec<JsonFile>,
    discovered_at: String,
    fetched_at: String,
    source: String,
}

#[derive(Serialize, Deserialize)]
struct JsonFile {
    path: String,
    size: u64,
}

#[derive(Deserialize)]
struct JsonRecordIn {
    infohash: String,
    name: String,
    size: u64,
    files: Vec<JsonFile>,
    discovered_at: String,
    fetched_at: String,
    source: String,
}

/// Validates one JSONL line into a record. The JSONL format does not carry
/// piece length or the private flag; imported torrents get 0 and false.
fn parse_json_line(line: &[u8]) -> Result<TorrentRecord, String> {
    let r: JsonRecordIn = serde_json::from_slice(line).map_err(|e| format!("bad JSON: {e}"))?;
    let infohash = rfc3339::parse_infohash(&r.infohash).map_err(str::to_owned)?;
    let discovered_at =
        rfc3339::parse(&r.discovered_at).map_err(|e| format!("discovered_at: {e}"))?;
    let fetched_at = rfc3339::parse(&r.fetched_at).map_err(|e| format!("fetched_at: {e}"))?;
    let source: Source = r.source.parse().map_err(|e: StoreError| e.to_string())?;
    if r.files.is_empty() {
        return Err("files is empty".into());
    }
    let mut total: i64 = 0;
    let mut files = Vec::with_capacity(r.files.len());
    for (i, f) in r.files.into_iter().enumerate() {
        let size = i64::try_from(f.size).map_err(|_| format!("file {i}: size too large"))?;
        total = total
            .checked_add(size)
            .ok_or_else(|| "total size overflows".to_owned())?;
        let path: Vec<TorrentName> = f.path.split('/').map(TorrentName::from).collect();
        if path.iter().any(|c| c.as_bytes().is_empty()) {
            return Err(format!("file {i}: empty path component in {:?}", f.path));
        }
        files.push(TorrentFile { path, size: f.size });
    }
    if total as u64 != r.size {
        return Err(format!(
            "size {} is not the sum of file sizes {total}",
            r.size
        ));
    }
    Ok(TorrentRecord {
        infohash,
        torrent: Torrent {
            name: TorrentName::Utf8(r.name),
            total_size: r.size,
            piece_length: 0,
            private: false,
            files,
        },
        source,
        discovered_at: from_unix_secs(discovered_at),
        fetched_at: from_unix_secs(fetched_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parsing() {
        assert_eq!(
            "sqlite:/tmp/x.db".parse::<DbUrl>().unwrap(),
            DbUrl::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            "sqlite:///tmp/x.db".parse::<DbUrl>().unwrap(),
            DbUrl::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            "sqlite:rel.db".parse::<DbUrl>().unwrap(),
            DbUrl::Sqlite("rel.db".into())
        );
        assert!(matches!(
            "postgresql://u:p@localhost:5432/db"
                .parse::<DbUrl>()
                .unwrap(),
            DbUrl::Postgres(_)
        ));
        for bad in [
            "",
            "sqlite:",
            "sqlite::memory:",
            "mysql://x",
            "/tmp/x.db",
            "postgres://u@h:notaport/db",
        ] {
            let err = bad.parse::<DbUrl>().unwrap_err();
            assert!(matches!(err, StoreError::BadUrl { .. }), "{bad}: {err}");
            assert!(err.to_string().contains("bad database URL"));
        }
    }

    #[test]
    fn sources() {
        for s in Source::ALL {
            assert_eq!(s.as_str().parse::<Source>().unwrap(), s);
        }
        assert!("dht".parse::<Source>().is_err());
    }

    #[test]
    fn tokens() {
        assert_eq!(
            search_tokens(["Ubuntu-24.04 Desktop/amd64.ISO", "ubuntu"]),
            ["ubuntu", "24", "04", "desktop", "amd64", "iso"]
        );
        assert_eq!(
            search_tokens(["Война и МИР", "日本語"]),
            ["война", "и", "мир", "日本", "本語"]
        );
        // Mixed scripts in one word: the CJK run becomes bigrams.
        assert_eq!(
            search_tokens(["日本語のトレント2024"]),
            ["日本", "本語", "語の", "のト", "トレ", "レン", "ント", "2024"]
        );
        assert_eq!(search_tokens(["中"]), ["中"]);
        assert!(search_tokens(["--- ..."]).is_empty());
    }

    #[test]
    fn text_columns() {
        assert_eq!(text_and_raw(b"abc", "abc".into()), ("abc".into(), None));
        let (t, raw) = text_and_raw(b"a\0b", "a\0b".into());
        assert_eq!(t, "a\u{FFFD}b");
        assert_eq!(raw.as_deref(), Some(&b"a\0b"[..]));
        let (t, raw) = text_and_raw(&[0xff], "\u{FFFD}".into());
        assert_eq!(t, "\u{FFFD}");
        assert_eq!(raw.as_deref(), Some(&[0xffu8][..]));
    }

    #[test]
    fn unix_secs_round_trip() {
        for s in [-86_400 * 365, -1, 0, 1, 1_795_705_445] {
            assert_eq!(unix_secs(from_unix_secs(s)), s);
        }
    }
}
