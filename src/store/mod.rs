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
//! # Writes: a bounded queue, back-pressure, and no silent loss
//!
//! The shards submit through a [`StoreWriter`] (cheap to clone, `Send`),
//! which pushes onto a **bounded** crossbeam channel
//! ([`StoreOptions::queue_max`] items) consumed by one writer thread that
//! batches what it finds into one transaction. What happens when the queue
//! is full depends on what is submitted:
//!
//! * a fetched torrent waits for room: [`StoreWriter::fetched_waiting`]
//!   (the fetch pool, on a shard: the job pauses and holds its fetch slot,
//!   so the pool stops starting fetches) or [`StoreWriter::fetched`]
//!   (blocking, for plain threads). A fetched torrent is never dropped for
//!   want of room;
//! * a discovery or a forget (hints for the `pending` table, which the
//!   crawler also keeps in memory) is queued only while the queue is less
//!   than half full; past that it is refused with [`StoreError::QueueFull`]
//!   and counted (`dht_hunter_store_shed_total`), so hints can never take
//!   the room fetched torrents need.
//!
//! The writer retries transient failures (busy, disk full, connection lost,
//! timeouts) with backoff for as long as it takes, and splits a batch the
//! database rejects until the one bad row fails alone; only that row is
//! dropped, logged with its infohash and counted (see `writer.rs`). Dropped
//! rows are reported by the next [`StoreWriter::flush`] or [`Store::close`]
//! as [`StoreError::Write`]. Submission fails only once the store is closed,
//! and then it says so ([`StoreError::Closed`]).
//!
//! [`Store::faults`] and the `dht_hunter_store_*` metrics show retries,
//! dropped rows, reconnects, shed hints, producer waits, the queue depth and
//! whether the writer is stalled.
//!
//! PostgreSQL connections have client-side deadlines on everything
//! (connecting included), TCP keepalives, a server-side
//! `statement_timeout`, and reconnect on the next attempt after a loss
//! ([`PgTimeouts`]).
//!
//! # Search
//!
//! Names and file paths are reduced to lowercase alphanumeric tokens in Rust
//! (see [`search_tokens`]) before either back end sees them, so both back ends
//! match the same words in the same way regardless of database locale:
//! a query matches torrents containing every query token as a whole word.
//!
//! This file is about 870 lines: the [`Store`] and its [`StoreWriter`] handle
//! share the write queue's protocol (`Op`, `Msg`, `Shared`, the back-pressure
//! rules above) and the `Backend` trait, and read best together; the data
//! types, text rules, JSONL format and read pool live in their own files.

mod jsonl;
mod model;
mod pg;
mod reader;
pub mod rfc3339;
mod sqlite;
mod text;
mod writer;

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Sender, TrySendError};

use crate::category::Category;
use jsonl::{export_jsonl_from, parse_json_line};
use model::{category_clause, search_count_probe, sql_int};
pub use model::{
    redact_url, DbUrl, FaultCounts, ImportReport, PendingEntry, PgTimeouts, PruneReport,
    ScrapeCounts, SearchHit, SearchPage, SortKey, Source, Stats, StoreError, StoreOptions,
    TorrentDetail, TorrentRecord, SCHEMA_VERSION, SEARCH_COUNT_CAP,
};
pub use reader::StoreReader;
use text::{name_columns, path_columns, search_body};
pub use text::{
    printable, search_tokens, unsafe_on_terminal, MAX_INDEXED_BYTES, MAX_INDEXED_TOKENS,
    MAX_TOKEN_BYTES,
};

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
    /// A BEP 33 estimate for a stored torrent: an UPDATE of its row (a
    /// newer estimate wins; an infohash not stored matches no row).
    Scraped {
        infohash: [u8; 20],
        seeders: u32,
        leechers: u32,
        at: i64,
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
    seeders: Option<u32>,
    leechers: Option<u32>,
    scraped_at: Option<i64>,
}

type ExportSink<'a> = dyn FnMut(ExportRow) -> Result<(), StoreError> + 'a;

/// Folds the rows of `torrents LEFT JOIN files ORDER BY infohash, idx` into
/// one [`ExportRow`] per torrent, handed to the sink as soon as the next
/// torrent starts: both back ends stream the export this way, so memory
/// stays at one torrent whatever the store holds.
struct ExportGroups<'s, 'a> {
    sink: &'s mut ExportSink<'a>,
    cur: Option<ExportRow>,
    count: u64,
}

impl<'s, 'a> ExportGroups<'s, 'a> {
    fn new(sink: &'s mut ExportSink<'a>) -> Self {
        ExportGroups {
            sink,
            cur: None,
            count: 0,
        }
    }

    /// One joined row of torrent `infohash`: `head` reads the torrent's
    /// own columns (called only for its first row); `file` is the file the
    /// row carries (`None` for a torrent without file rows).
    fn row(
        &mut self,
        infohash: [u8; 20],
        head: impl FnOnce() -> Result<ExportRow, StoreError>,
        file: Option<(String, u64)>,
    ) -> Result<(), StoreError> {
        if self.cur.as_ref().is_none_or(|c| c.infohash != infohash) {
            self.flush()?;
            self.cur = Some(head()?);
        }
        if let (Some(c), Some(file)) = (self.cur.as_mut(), file) {
            c.files.push(file);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        if let Some(done) = self.cur.take() {
            (self.sink)(done)?;
            self.count += 1;
        }
        Ok(())
    }

    /// Hands over the last torrent; returns how many were exported.
    fn finish(mut self) -> Result<u64, StoreError> {
        self.flush()?;
        Ok(self.count)
    }
}

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
    /// The database's size on disk, bytes (for `--max-db-size`).
    fn db_size(&mut self) -> Result<u64, StoreError>;
    /// Deletes the torrents with these infohashes (their files and search
    /// entries with them); returns how many were deleted.
    fn delete(&mut self, infohashes: &[[u8; 20]]) -> Result<u64, StoreError>;
    /// One page of hits for `tokens` (every stored torrent when empty)
    /// in `categories` (every category when empty).
    fn search_page(
        &mut self,
        tokens: &[String],
        categories: &[Category],
        sort: SortKey,
        offset: usize,
        limit: usize,
    ) -> Result<SearchPage, StoreError>;
    /// One torrent and up to `max_files` of its files.
    fn torrent(
        &mut self,
        infohash: &[u8; 20],
        max_files: usize,
    ) -> Result<Option<TorrentDetail>, StoreError>;
    /// Torrents fetched since `since` (Unix seconds), counted per
    /// `bucket` seconds: (bucket start, count), empty buckets left out.
    fn fetched_histogram(&mut self, since: i64, bucket: i64)
        -> Result<Vec<(i64, u64)>, StoreError>;
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
    /// Discoveries and forgets are queued only below this depth.
    hint_limit: usize,
    counters: Arc<writer::Counters>,
    backend: &'static str,
}

impl Shared {
    /// Queues `msg`, waiting for room.
    fn send(&self, msg: Msg) -> Result<(), StoreError> {
        // Send fails if the writer thread is gone (its receiver dropped), so a
        // dead writer can never swallow submissions.
        let guard = self.tx.read().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(tx) => tx.send(msg).map_err(|_| StoreError::Closed),
            None => Err(StoreError::Closed),
        }
    }

    /// Queues `msg` if there is room now; a full queue hands it back.
    fn try_send(&self, msg: Msg) -> Result<(), TrySendError<Msg>> {
        let guard = self.tx.read().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(tx) => tx.try_send(msg),
            None => Err(TrySendError::Disconnected(msg)),
        }
    }

    /// Queues a hint (discovery, forget) while the queue is below its share.
    fn send_hint(&self, op: Op, kind: &'static str) -> Result<(), StoreError> {
        let guard = self.tx.read().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = guard.as_ref() else {
            return Err(StoreError::Closed);
        };
        let depth = tx.len();
        let refused = if depth >= self.hint_limit {
            true
        } else {
            match tx.try_send(Msg::Op(op)) {
                Ok(()) => false,
                Err(TrySendError::Full(_)) => true,
                Err(TrySendError::Disconnected(_)) => return Err(StoreError::Closed),
            }
        };
        if refused {
            self.counters.shed.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("dht_hunter_store_shed_total", "backend" => self.backend, "op" => kind)
                .increment(1);
            return Err(StoreError::QueueFull { depth });
        }
        Ok(())
    }
}

/// Submission handle for the crawler: cheap to clone.
#[derive(Debug, Clone)]
pub struct StoreWriter {
    shared: Arc<Shared>,
}

impl StoreWriter {
    /// Records that `infohash` was seen (kept in `pending` until fetched;
    /// ignored if already stored or pending). Never blocks: refused with
    /// [`StoreError::QueueFull`] when the queue is past half full.
    pub fn discovered(
        &self,
        infohash: [u8; 20],
        source: Source,
        at: SystemTime,
    ) -> Result<(), StoreError> {
        self.shared.send_hint(
            Op::Discovered {
                infohash,
                source,
                at: unix_secs(at),
            },
            "discovered",
        )
    }

    /// [`StoreWriter::discovered`] for a stopping crawler saving what it
    /// has not finished: it may use the whole queue (no fetched torrent
    /// competes for room any more) and awaits `pause()` while the queue is
    /// full, as long as the writer is making progress. If the writer is
    /// stalled on a failing database it is refused with
    /// [`StoreError::QueueFull`] (and counted as shed) rather than wait.
    pub async fn discovered_waiting<F>(
        &self,
        infohash: [u8; 20],
        source: Source,
        at: SystemTime,
        mut pause: impl FnMut() -> F,
    ) -> Result<(), StoreError>
    where
        F: std::future::Future<Output = ()>,
    {
        let mut msg = Msg::Op(Op::Discovered {
            infohash,
            source,
            at: unix_secs(at),
        });
        loop {
            match self.shared.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(back)) => {
                    if self.shared.counters.stalled.load(Ordering::Relaxed) {
                        self.shared.counters.shed.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("dht_hunter_store_shed_total", "backend" => self.shared.backend, "op" => "discovered")
                            .increment(1);
                        return Err(StoreError::QueueFull {
                            depth: self.queue_len(),
                        });
                    }
                    msg = back;
                    pause().await;
                }
                Err(TrySendError::Disconnected(_)) => return Err(StoreError::Closed),
            }
        }
    }

    /// Stores a harvested torrent (ignored if the infohash is already stored)
    /// and removes it from `pending`. Blocks while the queue is full: for
    /// plain threads; an async task uses [`StoreWriter::fetched_waiting`].
    pub fn fetched(&self, record: TorrentRecord) -> Result<(), StoreError> {
        let msg = Msg::Op(Op::Fetched(Box::new(record)));
        match self.shared.try_send(msg) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(msg)) => {
                self.note_wait();
                self.shared.send(msg)
            }
            Err(TrySendError::Disconnected(_)) => Err(StoreError::Closed),
        }
    }

    /// [`StoreWriter::fetched`] for async code: while the queue is full it
    /// awaits `pause()` (a timer of the caller's executor) and tries again,
    /// without blocking the thread. Fails only if the store is closed.
    pub async fn fetched_waiting<F>(
        &self,
        record: TorrentRecord,
        mut pause: impl FnMut() -> F,
    ) -> Result<(), StoreError>
    where
        F: std::future::Future<Output = ()>,
    {
        let mut msg = Msg::Op(Op::Fetched(Box::new(record)));
        let mut waited = false;
        loop {
            match self.shared.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(back)) => {
                    if !waited {
                        waited = true;
                        self.note_wait();
                    }
                    msg = back;
                    pause().await;
                }
                Err(TrySendError::Disconnected(_)) => return Err(StoreError::Closed),
            }
        }
    }

    fn note_wait(&self) {
        self.shared
            .counters
            .producer_waits
            .fetch_add(1, Ordering::Relaxed);
        metrics::counter!("dht_hunter_store_producer_waits_total", "backend" => self.shared.backend)
            .increment(1);
    }

    /// Records a BEP 33 estimate for a stored torrent (an UPDATE of its
    /// row; a newer estimate replaces an older one, an infohash not stored
    /// is ignored). A hint like [`StoreWriter::discovered`]: never blocks,
    /// refused with [`StoreError::QueueFull`] when the queue is past half
    /// full (the estimate is lost, the torrent is not).
    pub fn scraped(
        &self,
        infohash: [u8; 20],
        seeders: u32,
        leechers: u32,
        at: SystemTime,
    ) -> Result<(), StoreError> {
        self.shared.send_hint(
            Op::Scraped {
                infohash,
                seeders,
                leechers,
                at: unix_secs(at),
            },
            "scraped",
        )
    }

    /// Removes `infohash` from `pending`: the crawler gave up on it, so a
    /// restart does not resume it (a later sighting with a peer starts it
    /// again). Never blocks; refused like [`StoreWriter::discovered`].
    pub fn forget(&self, infohash: [u8; 20]) -> Result<(), StoreError> {
        self.shared.send_hint(Op::Forget { infohash }, "forget")
    }

    /// Blocks until everything submitted before this call is committed and
    /// synced (however long the database takes to come back), and reports
    /// (then clears) any rows dropped since the last flush. SQLite
    /// durability: the WAL is fsynced by a passive checkpoint, which a
    /// concurrently open long read transaction can defer.
    pub fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.shared.send(Msg::Flush(tx))?;
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    /// Items queued and not yet taken by the writer thread. Never blocks
    /// (a signal handler asks it): while the store is closing it returns
    /// the depth the writer last saw.
    pub fn queue_len(&self) -> usize {
        match self.shared.tx.try_read() {
            Ok(guard) => guard.as_ref().map_or(0, Sender::len),
            Err(_) => self.shared.counters.queue_depth.load(Ordering::Relaxed) as usize,
        }
    }

    /// See [`Store::faults`].
    pub fn faults(&self) -> FaultCounts {
        self.shared.counters.snapshot()
    }

    /// Whether the database was at or over [`StoreOptions::max_db_bytes`]
    /// when last measured: the fetch pool then starts nothing new.
    pub fn is_full(&self) -> bool {
        self.shared.counters.full.load(Ordering::Relaxed)
    }

    /// The database's size when last measured, bytes (0 without
    /// [`StoreOptions::max_db_bytes`]).
    pub fn db_bytes(&self) -> u64 {
        self.shared.counters.db_bytes.load(Ordering::Relaxed)
    }
}

/// How long a fetch job waits between looks while the database is full.
pub const DB_FULL_PAUSE: Duration = Duration::from_millis(500);

/// How long [`StoreWriter::fetched_waiting`]'s callers pause between tries
/// while the queue is full.
pub const BACKPRESSURE_PAUSE: Duration = Duration::from_millis(50);

/// An open store: the read side plus ownership of the writer thread.
pub struct Store {
    read: std::sync::Mutex<Box<dyn Backend>>,
    writer: StoreWriter,
    thread: Option<JoinHandle<Result<(), StoreError>>>,
    backend: &'static str,
    /// Where it is, for [`Store::reader`] (None: opened over given back ends).
    url: Option<String>,
    opts: StoreOptions,
    counters: Arc<writer::Counters>,
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
        let counters = Arc::new(writer::Counters::default());
        let (write, read): (Box<dyn Backend>, Box<dyn Backend>) = match url.parse::<DbUrl>()? {
            DbUrl::Sqlite(path) => {
                let w = sqlite::SqliteBackend::open(&path, &opts, true)?;
                let r = sqlite::SqliteBackend::open(&path, &opts, false)?;
                (Box::new(w), Box::new(r))
            }
            DbUrl::Postgres(url) => {
                let w = pg::PgBackend::open(&url, pg::Role::Writer, opts.pg, counters.clone())?;
                let r = pg::PgBackend::open(&url, pg::Role::Reader, opts.pg, counters.clone())?;
                (Box::new(w), Box::new(r))
            }
        };
        let mut store = Self::with_backends(write, read, opts, counters)?;
        store.url = Some(url.to_owned());
        Ok(store)
    }

    /// Starts the writer thread over already opened back ends.
    fn with_backends(
        write: Box<dyn Backend>,
        read: Box<dyn Backend>,
        opts: StoreOptions,
        counters: Arc<writer::Counters>,
    ) -> Result<Store, StoreError> {
        let backend = write.name();
        let kept = opts.clone();
        let cap = opts.queue_max.max(2);
        let (tx, rx) = crossbeam_channel::bounded(cap);
        let shared = Arc::new(Shared {
            tx: RwLock::new(Some(tx)),
            hint_limit: cap / 2,
            counters: counters.clone(),
            backend,
        });
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn({
                let counters = counters.clone();
                move || writer::writer_loop(write, rx, opts, counters)
            })?;
        Ok(Store {
            read: std::sync::Mutex::new(read),
            writer: StoreWriter { shared },
            thread: Some(thread),
            backend,
            url: None,
            opts: kept,
            counters,
        })
    }

    /// Retries, dropped rows, reconnects, shed hints and producer waits
    /// since the store was opened, and whether the writer is stalled now.
    pub fn faults(&self) -> FaultCounts {
        self.writer.faults()
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
        // Taking the sender under the write lock orders every successful
        // submission before Shutdown; the lock is released before the send,
        // which waits for room when the database is failing.
        let tx = self
            .writer
            .shared
            .tx
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(tx) = tx {
            // Fails only if the thread already exited; join reports why.
            let _ = tx.send(Msg::Shutdown);
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
        Ok(self
            .with_read(|b| b.search_page(&tokens, &[], SortKey::Relevance, 0, limit))?
            .hits)
    }

    /// A read-only handle on `connections` read connections of its own
    /// (the web server's): its queries never wait for this store's own
    /// read side, nor it for them. SQLite readers see committed writes
    /// (WAL mode lets them run beside the writer).
    pub fn reader(&self, connections: usize) -> Result<StoreReader, StoreError> {
        let Some(url) = &self.url else {
            return Err(StoreError::Closed);
        };
        StoreReader::open(url, &self.opts, self.counters.clone(), connections)
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
        self.with_read(|b| b.infohashes(&mut |infohash| out.push(infohash)))?;
        Ok(out)
    }

    /// Whether `infohash` is stored or pending (committed writes only).
    pub fn is_known(&self, infohash: &[u8; 20]) -> Result<bool, StoreError> {
        self.with_read(|b| b.is_known(infohash))
    }

    /// Writes every stored torrent as one JSON object per line, in infohash
    /// order; returns how many were written.
    pub fn export_jsonl(&self, out: &mut dyn Write) -> Result<u64, StoreError> {
        self.with_read(|b| export_jsonl_from(b, out))
    }

    /// Deletes every stored torrent that `filter` would not store (the
    /// crawl's filter syntax: prune keeps what a crawl with that filter
    /// keeps) or that was discovered before `older_than`, with its files
    /// and search entry; `dry_run` only counts. The scan reads every
    /// torrent's name and paths once (one pass, like an export); deletes
    /// go in transactions of a thousand. A running crawler keeps the
    /// deleted infohashes in its "already stored" filter until it
    /// restarts; after that, one seen again is fetched again unless its
    /// own filter refuses it.
    pub fn prune(
        &self,
        filter: &crate::filter::ContentFilter,
        older_than: Option<SystemTime>,
        dry_run: bool,
    ) -> Result<PruneReport, StoreError> {
        const CHUNK: usize = 1000;
        let cutoff = older_than.map(unix_secs);
        let mut report = PruneReport::default();
        let mut doomed: Vec<[u8; 20]> = Vec::new();
        self.with_read(|b| {
            b.export(&mut |row: ExportRow| {
                report.scanned += 1;
                let old = cutoff.is_some_and(|c| row.discovered_at < c);
                let refused = !filter.is_empty()
                    && filter
                        .check_parts(
                            &row.name,
                            row.files.iter().map(|(p, _)| p.as_str()),
                            row.size,
                        )
                        .is_some();
                if old || refused {
                    doomed.push(row.infohash);
                }
                Ok(())
            })
        })?;
        report.matched = doomed.len() as u64;
        if !dry_run {
            for chunk in doomed.chunks(CHUNK) {
                report.deleted += self.with_read(|b| b.delete(chunk))?;
            }
        }
        Ok(report)
    }

    /// Reads JSONL in the [`Store::export_jsonl`] format and stores every
    /// record whose infohash is not already stored. Bad lines (and records
    /// the database rejects on their own) are reported with their line
    /// number and skipped; a database that stays unreachable through a few
    /// retries aborts the import (run it again: what is stored is skipped).
    pub fn import_jsonl(&self, input: &mut dyn BufRead) -> Result<ImportReport, StoreError> {
        const BATCH: usize = 1000;
        let mut report = ImportReport::default();
        let mut batch = Vec::with_capacity(BATCH);
        let mut lines = Vec::with_capacity(BATCH);
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
                Ok((rec, scrape)) => {
                    let infohash = rec.infohash;
                    batch.push(Op::Fetched(Box::new(rec)));
                    lines.push(line_no);
                    if let Some(c) = scrape {
                        batch.push(Op::Scraped {
                            infohash,
                            seeders: c.seeders,
                            leechers: c.leechers,
                            at: unix_secs(c.at),
                        });
                        lines.push(line_no);
                    }
                }
                Err(msg) => report.errors.push((line_no, msg)),
            }
            if batch.len() >= BATCH {
                self.import_batch(&mut batch, &mut lines, &mut report)?;
            }
        }
        self.import_batch(&mut batch, &mut lines, &mut report)?;
        report.errors.sort_by_key(|(n, _)| *n);
        Ok(report)
    }

    fn import_batch(
        &self,
        batch: &mut Vec<Op>,
        lines: &mut Vec<u64>,
        report: &mut ImportReport,
    ) -> Result<(), StoreError> {
        /// Retries of a transient failure before the import gives up.
        const RETRIES: u32 = 5;
        if batch.is_empty() {
            return Ok(());
        }
        let mut rejected = 0u64;
        let torrents = batch
            .iter()
            .filter(|op| matches!(op, Op::Fetched(_)))
            .count() as u64;
        let new = self.with_read(|b| {
            writer::write_resilient(
                batch,
                |ops| b.write(ops),
                writer::classify,
                |e, _, attempt| {
                    let pause = writer::backoff(
                        attempt,
                        Duration::from_millis(200),
                        Duration::from_secs(5),
                        0.5,
                    );
                    log::warn!("import: {e}; retry {attempt} of {RETRIES} in {pause:?}");
                    std::thread::sleep(pause);
                    attempt <= RETRIES
                },
                |i, e| {
                    rejected += 1;
                    report
                        .errors
                        .push((lines[i], format!("rejected by the database: {e}")));
                },
            )
        })?;
        report.imported += new;
        report.duplicates += torrents.saturating_sub(new + rejected);
        batch.clear();
        lines.clear();
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

fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// Seconds since the Unix epoch (negative before it): the one conversion
/// the store, the export and the command line use.
pub fn unix_secs(t: SystemTime) -> i64 {
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
            Op::Discovered { .. } | Op::Forget { .. } | Op::Scraped { .. } => true,
        })
        .collect();
    (kept, seen)
}

#[cfg(test)]
mod tests {
    use super::text::text_and_raw;
    use super::*;
    use crate::metainfo::{Torrent, TorrentFile};
    use std::borrow::Cow;

    fn export_head(b: u8) -> ExportRow {
        ExportRow {
            infohash: [b; 20],
            name: format!("t{b}"),
            size: 1,
            files: Vec::new(),
            discovered_at: 0,
            fetched_at: 0,
            source: Source::ALL[0],
            seeders: None,
            leechers: None,
            scraped_at: None,
        }
    }

    #[test]
    fn export_groups_fold_joined_rows_into_one_row_per_torrent() {
        let mut out = Vec::new();
        let mut sink = |r: ExportRow| {
            out.push((r.infohash[0], r.files));
            Ok(())
        };
        let mut g = ExportGroups::new(&mut sink);
        let file = |p: &str| Some((p.to_string(), 7));
        for (b, f) in [(1, file("a")), (1, file("b")), (2, None), (3, file("c"))] {
            g.row([b; 20], || Ok(export_head(b)), f).unwrap();
        }
        assert_eq!(g.finish().unwrap(), 3);
        let f = |p: &str| (p.to_string(), 7);
        assert_eq!(
            out,
            vec![(1, vec![f("a"), f("b")]), (2, vec![]), (3, vec![f("c")])]
        );
        // A sink that fails stops the export with its error.
        let mut failing = |_: ExportRow| Err(StoreError::Range("sink"));
        let mut g = ExportGroups::new(&mut failing);
        g.row([1; 20], || Ok(export_head(1)), None).unwrap();
        assert!(g.row([2; 20], || Ok(export_head(2)), None).is_err());
    }

    #[test]
    fn search_pages_say_whether_more_hits_and_matches_exist() {
        let p = SearchPage::from_rows(Vec::new(), 10, search_count_probe());
        assert!(!p.more);
        assert_eq!((p.counted, p.counted_capped), (SEARCH_COUNT_CAP, true));
        let p = SearchPage::from_rows(Vec::new(), 10, SEARCH_COUNT_CAP as i64);
        assert_eq!((p.counted, p.counted_capped), (SEARCH_COUNT_CAP, false));
        assert_eq!(sql_int(usize::MAX), i64::MAX);
    }

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
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://dht:s3cret@db.example:5432/dht?sslmode=disable"),
            "postgres://dht:***@db.example:5432/dht?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgresql://dht@db/dht?password=s3cret&application_name=x"),
            "postgresql://dht@db/dht?password=***&application_name=x"
        );
        assert_eq!(
            redact_url("postgres://u:p%40ss@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("sqlite:/tmp/x.db"), "sqlite:/tmp/x.db");
        let err = "postgres://u:s3cret@h:notaport/db"
            .parse::<DbUrl>()
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn control_characters_are_escaped_for_the_terminal() {
        assert!(matches!(printable("Ubuntu 24.04 日本"), Cow::Borrowed(_)));
        assert_eq!(
            printable("evil\x1b]0;pwned\x07\x1b[2Jname"),
            "evil\\x1b]0;pwned\\x07\\x1b[2Jname"
        );
        assert_eq!(printable("a\nb\rc\td\x7f"), "a\\x0ab\\x0dc\\x09d\\x7f");
        // C1 CSI, and a right-to-left override that would reorder the name.
        assert_eq!(printable("x\u{9b}31m"), "x\\u{9b}31m");
        assert_eq!(
            printable("invoice\u{202e}fdp.exe"),
            "invoice\\u{202e}fdp.exe"
        );
    }

    #[test]
    fn long_tokens_are_cut_alike_when_indexed_and_queried() {
        let long = "a".repeat(5000);
        let toks = search_tokens([long.as_str()]);
        assert_eq!(toks, ["a".repeat(MAX_TOKEN_BYTES)]);
        // Cut at a character boundary (Cyrillic is 2 bytes a letter).
        let cyr = "я".repeat(MAX_TOKEN_BYTES);
        let toks = search_tokens([cyr.as_str()]);
        assert_eq!(toks[0].len(), MAX_TOKEN_BYTES);
        assert!(toks[0].chars().all(|c| c == 'я'));
    }

    #[test]
    fn the_search_body_of_one_torrent_is_capped() {
        let files: Vec<TorrentFile> = (0..60_000)
            .map(|i| TorrentFile {
                path: vec![
                    format!("dir{i}").into(),
                    format!("file{i}x{}", "b".repeat(300)).into(),
                ],
                size: 1,
            })
            .collect();
        let t = Torrent {
            name: "the-name".into(),
            total_size: 60_000,
            piece_length: 16384,
            private: false,
            files,
        };
        let body = search_body(&t);
        let toks: Vec<&str> = body.split(' ').collect();
        assert!(body.len() <= MAX_INDEXED_BYTES, "{}", body.len());
        assert!(toks.len() <= MAX_INDEXED_TOKENS);
        assert!(toks.iter().all(|t| t.len() <= MAX_TOKEN_BYTES));
        // The name comes first, so it is always searchable.
        assert_eq!(&toks[..2], ["the", "name"]);
        // Small torrents are indexed whole.
        let small = Torrent {
            files: t.files[..3].to_vec(),
            ..t.clone()
        };
        assert_eq!(search_body(&small).split(' ').count(), 2 + 6);
    }

    #[test]
    fn import_rejects_unsafe_paths_as_fetching_does() {
        let line = |name: &str, path: &str| {
            format!(
                r#"{{"infohash":"{}","name":{},"size":1,"files":[{{"path":{},"size":1}}],"discovered_at":"2024-01-01T00:00:00Z","fetched_at":"2024-01-01T00:00:00Z","source":"sample"}}"#,
                "ab".repeat(20),
                serde_json::to_string(name).unwrap(),
                serde_json::to_string(path).unwrap()
            )
        };
        assert!(parse_json_line(line("ok", "dir/file.txt").as_bytes()).is_ok());
        for (name, path) in [
            ("ok", "../etc/passwd"),
            ("ok", "dir/../../x"),
            ("ok", "dir//x"),
            ("ok", "/abs"),
            ("ok", "dir/"),
            ("ok", "./x"),
            ("ok", ""),
            ("..", "x"),
            ("", "x"),
            (".", "x"),
        ] {
            let err = parse_json_line(line(name, path).as_bytes()).unwrap_err();
            assert!(
                err.contains("unsafe path component"),
                "{name:?} {path:?}: {err}"
            );
        }
    }

    /// The writer's SQLite connection behind a page limit the test moves: a
    /// disk that fills up (SQLITE_FULL from SQLite itself) and is freed.
    struct PageLimited {
        inner: sqlite::SqliteBackend,
        limit: Arc<std::sync::atomic::AtomicU64>,
        applied: u64,
        full_errors: Arc<std::sync::atomic::AtomicU64>,
    }

    impl PageLimited {
        fn apply(&mut self) -> Result<(), StoreError> {
            let limit = self.limit.load(Ordering::Relaxed);
            if limit != self.applied {
                self.inner.conn().query_row(
                    &format!("PRAGMA max_page_count = {limit}"),
                    [],
                    |_| Ok(()),
                )?;
                self.applied = limit;
            }
            Ok(())
        }

        fn note<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
            if let Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _))) = &r {
                if e.code == rusqlite::ErrorCode::DiskFull {
                    self.full_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            r
        }
    }

    impl Backend for PageLimited {
        fn name(&self) -> &'static str {
            self.inner.name()
        }
        fn write(&mut self, ops: &[Op]) -> Result<u64, StoreError> {
            self.apply()?;
            let r = self.inner.write(ops);
            self.note(r)
        }
        fn sync(&mut self) -> Result<(), StoreError> {
            self.inner.sync()
        }
        fn maintain(&mut self, max_pending: i64) -> Result<(), StoreError> {
            self.inner.maintain(max_pending)
        }
        fn db_size(&mut self) -> Result<u64, StoreError> {
            self.inner.db_size()
        }
        fn delete(&mut self, ihs: &[[u8; 20]]) -> Result<u64, StoreError> {
            self.inner.delete(ihs)
        }
        fn search_page(
            &mut self,
            t: &[String],
            c: &[Category],
            s: SortKey,
            o: usize,
            l: usize,
        ) -> Result<SearchPage, StoreError> {
            self.inner.search_page(t, c, s, o, l)
        }
        fn torrent(
            &mut self,
            infohash: &[u8; 20],
            m: usize,
        ) -> Result<Option<TorrentDetail>, StoreError> {
            self.inner.torrent(infohash, m)
        }
        fn fetched_histogram(&mut self, s: i64, b: i64) -> Result<Vec<(i64, u64)>, StoreError> {
            self.inner.fetched_histogram(s, b)
        }
        fn stats(&mut self, now: i64) -> Result<Stats, StoreError> {
            self.inner.stats(now)
        }
        fn pending(&mut self, limit: usize) -> Result<Vec<PendingEntry>, StoreError> {
            self.inner.pending(limit)
        }
        fn is_known(&mut self, infohash: &[u8; 20]) -> Result<bool, StoreError> {
            self.inner.is_known(infohash)
        }
        fn infohashes(&mut self, sink: &mut dyn FnMut([u8; 20])) -> Result<u64, StoreError> {
            self.inner.infohashes(sink)
        }
        fn export(&mut self, sink: &mut ExportSink<'_>) -> Result<u64, StoreError> {
            self.inner.export(sink)
        }
    }

    fn record(i: u32) -> TorrentRecord {
        let mut infohash = [0u8; 20];
        infohash[..4].copy_from_slice(&i.to_be_bytes());
        infohash[19] = 0x5a;
        let name = format!("torrent {i} {}", "padding ".repeat(40));
        TorrentRecord {
            infohash,
            torrent: Torrent {
                name: name.as_str().into(),
                total_size: 100,
                piece_length: 16384,
                private: false,
                files: vec![TorrentFile {
                    path: vec![name.as_str().into()],
                    size: 100,
                }],
            },
            source: Source::Sample,
            discovered_at: from_unix_secs(1_700_000_000),
            fetched_at: from_unix_secs(1_700_000_060),
        }
    }

    fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `--max-db-size` measures the pages in use: a prune frees room at
    /// once (the file keeps its size until VACUUM, its freed pages are
    /// reused first).
    #[test]
    fn sqlite_db_size_falls_after_a_prune() {
        let dir = std::env::temp_dir().join(format!("dht-hunter-dbsize-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db.sqlite");
        let mut b = sqlite::SqliteBackend::open(&path, &StoreOptions::default(), true).unwrap();
        let ops: Vec<Op> = (0..2000)
            .map(|i| Op::Fetched(Box::new(record(i))))
            .collect();
        assert_eq!(b.write(&ops).unwrap(), 2000);
        b.maintain(1_000_000).unwrap();
        let full = b.db_size().unwrap();
        let ihs: Vec<[u8; 20]> = (0..2000).map(|i| record(i).infohash).collect();
        assert_eq!(b.delete(&ihs).unwrap(), 2000);
        b.maintain(1_000_000).unwrap();
        let after = b.db_size().unwrap();
        let file = std::fs::metadata(&path).unwrap().len();
        assert!(
            after * 4 < full,
            "in use {after} of {full} bytes after deleting everything"
        );
        assert!(
            file >= full / 2,
            "the file ({file}) was expected to keep its pages"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Disk full: the writer stalls and retries, producers wait (blocking
    /// and async alike), hints are shed; once space is freed every torrent
    /// submitted is stored and none is dropped.
    #[test]
    fn sqlite_disk_full_stalls_then_stores_everything() {
        const N: u32 = 1500;
        let dir = std::env::temp_dir().join(format!("dht-hunter-diskfull-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db.sqlite");
        let opts = StoreOptions {
            queue_max: 64,
            batch_max: 50,
            retry_min: Duration::from_millis(5),
            retry_max: Duration::from_millis(40),
            ..StoreOptions::default()
        };
        let w = sqlite::SqliteBackend::open(&path, &opts, true).unwrap();
        let r = sqlite::SqliteBackend::open(&path, &opts, false).unwrap();
        let pages: u64 = w
            .conn()
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        // Room for a few dozen of these torrents, not for N.
        let limit = Arc::new(std::sync::atomic::AtomicU64::new(pages + 12));
        let full_errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let w = PageLimited {
            inner: w,
            limit: limit.clone(),
            applied: 0,
            full_errors: full_errors.clone(),
        };
        let store = Store::with_backends(Box::new(w), Box::new(r), opts, Arc::default()).unwrap();

        let blocking = store.writer();
        let producer = std::thread::spawn(move || {
            for i in 0..N / 2 {
                blocking.fetched(record(i)).unwrap();
            }
        });
        let waiting = store.writer();
        let pauses = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = pauses.clone();
        let async_producer = std::thread::spawn(move || {
            for i in N / 2..N {
                let pause = || {
                    counted.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(2));
                    std::future::ready(())
                };
                futures_lite::future::block_on(waiting.fetched_waiting(record(i), pause)).unwrap();
            }
        });

        // The disk fills: the writer stalls, the queue fills, producers wait.
        wait_until("the writer stalls on a full disk", || {
            let f = store.faults();
            f.stalled && f.retries >= 3 && store.writer().queue_len() == 64
        });
        assert!(full_errors.load(Ordering::Relaxed) >= 1);
        assert!(!producer.is_finished() && !async_producer.is_finished());
        wait_until("the async producer pauses", || {
            pauses.load(Ordering::Relaxed) > 0
        });
        let stored_while_full = store.stats().unwrap().torrents;
        assert!(
            stored_while_full < u64::from(N) / 2,
            "{stored_while_full} stored on a full disk"
        );
        // Hints give way to torrents.
        assert!(matches!(
            store
                .writer()
                .discovered([7; 20], Source::GetPeers, UNIX_EPOCH),
            Err(StoreError::QueueFull { .. })
        ));
        // Even a stopping crawler's save does not wait on a stalled writer.
        let never = || -> std::future::Ready<()> { panic!("must not wait") };
        let r = futures_lite::future::block_on(store.writer().discovered_waiting(
            [8; 20],
            Source::GetPeers,
            UNIX_EPOCH,
            never,
        ));
        assert!(matches!(r, Err(StoreError::QueueFull { .. })), "{r:?}");
        let f = store.faults();
        assert_eq!((f.rows_dropped, f.shed), (0, 2));
        assert!(f.producer_waits >= 1);

        // Space is freed.
        limit.store(1 << 30, Ordering::Relaxed);
        producer.join().unwrap();
        async_producer.join().unwrap();
        store.flush().unwrap();
        let f = store.faults();
        assert!(!f.stalled);
        assert_eq!(f.rows_dropped, 0);
        assert_eq!(store.stats().unwrap().torrents, u64::from(N));
        for i in [0, N / 2 - 1, N / 2, N - 1] {
            assert!(store.is_known(&record(i).infohash).unwrap(), "{i}");
        }
        store.close().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unix_secs_round_trip() {
        for s in [-86_400 * 365, -1, 0, 1, 1_795_705_445] {
            assert_eq!(unix_secs(from_unix_secs(s)), s);
        }
    }
}
