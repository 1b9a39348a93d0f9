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

mod pg;
pub mod rfc3339;
mod sqlite;
mod writer;

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Sender, TrySendError};
use serde::{Deserialize, Serialize};

use crate::metainfo::{check_component, Torrent, TorrentFile, TorrentName};

/// Newest schema version this build knows (both back ends).
pub const SCHEMA_VERSION: i64 = 2;

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
    Postgres(#[from] tokio_postgres::Error),
    /// PostgreSQL did not answer in time (the connection is dropped and
    /// opened again on the next attempt).
    #[error("postgres: no answer within {after:?} while {what}")]
    Timeout {
        /// What was being done.
        what: &'static str,
        /// The deadline.
        after: Duration,
    },
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
    /// A discovery or forget was not queued: the queue is past the share
    /// such hints may take (counted in `dht_hunter_store_shed_total`).
    #[error("the store queue is past its share for discoveries ({depth} items queued)")]
    QueueFull {
        /// Items queued when it was refused.
        depth: usize,
    },
    /// Rows the database rejected on their own were dropped (each is logged
    /// with its infohash); everything else was stored.
    #[error("{lost} submitted items were rejected by the database and dropped; first: {message}")]
    Write {
        /// Items (discoveries and torrents) dropped.
        lost: u64,
        /// The first one and its error.
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

pub use crate::source::Source;

impl From<crate::source::UnknownSource> for StoreError {
    fn from(e: crate::source::UnknownSource) -> Self {
        StoreError::Corrupt(e.to_string())
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

/// What [`Store::prune`] found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Stored torrents looked at.
    pub scanned: u64,
    /// Of those, the ones the filter or the age selects.
    pub matched: u64,
    /// Deleted (0 on a dry run).
    pub deleted: u64,
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
    /// When the infohash was first seen.
    pub discovered_at: SystemTime,
    /// When the metadata arrived.
    pub fetched_at: SystemTime,
    /// Seeders at the last scrape (`None`: not scraped yet).
    pub seeders: Option<u32>,
    /// Leechers at the last scrape (`None`: not scraped yet).
    pub leechers: Option<u32>,
    /// When it was last scraped.
    pub scraped_at: Option<SystemTime>,
}

/// A BEP 33 estimate of a torrent's swarm, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrapeCounts {
    /// Estimated seeders.
    pub seeders: u32,
    /// Estimated leechers.
    pub leechers: u32,
    /// When it was made (stored with one-second precision).
    pub at: SystemTime,
}

/// How search results are ordered. Every order is descending (best, largest,
/// newest, most seeded first) with a fixed tie-break, so pages do not
/// overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortKey {
    /// Best match first (BM25 on SQLite, `ts_rank` on PostgreSQL); newest
    /// first when there is no query text.
    #[default]
    Relevance,
    /// Largest first.
    Size,
    /// Most recently discovered first.
    Discovered,
    /// Most seeders first; torrents never scraped last.
    Seeders,
}

impl SortKey {
    /// Every order, as the UI lists them.
    pub const ALL: [SortKey; 4] = [
        SortKey::Relevance,
        SortKey::Size,
        SortKey::Discovered,
        SortKey::Seeders,
    ];

    /// The name used in URLs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            SortKey::Relevance => "relevance",
            SortKey::Size => "size",
            SortKey::Discovered => "discovered",
            SortKey::Seeders => "seeders",
        }
    }
}

impl FromStr for SortKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        SortKey::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown sort {s:?} (relevance, size, discovered, seeders)"))
    }
}

/// One page of a search.
///
/// With more than [`SEARCH_COUNT_CAP`] matches, both back ends order the
/// [`SEARCH_COUNT_CAP`] most recently stored of them (by rank, size, time
/// or seeders) and pages end there: ranking or sorting every match of
/// common words costs more than a page may (tuning/runs/search-*.md).
/// With fewer, every order is exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPage {
    /// The hits of this page.
    pub hits: Vec<SearchHit>,
    /// Whether there are hits past this page.
    pub more: bool,
    /// Matches counted, at most [`SEARCH_COUNT_CAP`]: counting every match
    /// of a common word in a large store costs more than the page itself.
    pub counted: u64,
    /// Whether there are more matches than `counted` ("more than N").
    pub counted_capped: bool,
}

/// Most matches a search counts (see [`SearchPage::counted`]).
pub const SEARCH_COUNT_CAP: u64 = 1000;

impl SearchPage {
    /// The page both back ends build from what they read: up to
    /// `limit + 1` rows (the extra one only says that a next page exists)
    /// and a match count taken with `LIMIT` [`search_count_probe`] (so a
    /// count past [`SEARCH_COUNT_CAP`] says "more than" without counting
    /// every match).
    fn from_rows(mut hits: Vec<SearchHit>, limit: usize, counted: i64) -> Self {
        let more = hits.len() > limit;
        hits.truncate(limit);
        let counted = counted.max(0) as u64;
        SearchPage {
            hits,
            more,
            counted: counted.min(SEARCH_COUNT_CAP),
            counted_capped: counted > SEARCH_COUNT_CAP,
        }
    }
}

/// The `LIMIT` of a search's count query: one past the cap, so that the
/// count says whether there are more matches than it shows.
fn search_count_probe() -> i64 {
    sql_int(SEARCH_COUNT_CAP as usize + 1)
}

/// A count or offset as an SQL integer (both back ends bind `i64`);
/// saturates rather than wrapping for absurd values.
fn sql_int(n: usize) -> i64 {
    n.min(i64::MAX as usize) as i64
}

/// A stored torrent with its files, for a detail page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorrentDetail {
    /// What a search hit shows.
    pub hit: SearchHit,
    /// Piece length in bytes (0 when imported from JSONL).
    pub piece_length: u64,
    /// The private flag.
    pub private: bool,
    /// Paths (`/`-separated, lossy if not UTF-8) and sizes, in metainfo
    /// order; at most the `max_files` asked for.
    pub files: Vec<(String, u64)>,
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
    /// Records how many stored torrents came from `source`.
    fn set_stored_from(&mut self, source: Source, n: u64) {
        for (s, count) in &mut self.by_source {
            if *s == source {
                *count = n;
            }
        }
    }

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
            url: redact_url(url),
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
            tokio_postgres::Config::from_str(url).map_err(|e| bad(&e.to_string()))?;
            return Ok(DbUrl::Postgres(url.to_owned()));
        }
        Err(bad(
            "expected sqlite:PATH, postgres://... or postgresql://...",
        ))
    }
}

/// `url` with its password replaced by `***` (in the user-info part and in a
/// `password=` parameter), for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// PostgreSQL connection deadlines and keepalives. Where the URL sets one
/// of these itself (`connect_timeout`, `keepalives_idle`,
/// `keepalives_interval`, `keepalives_retries`, `tcp_user_timeout`, or
/// `statement_timeout` in `options`), the URL wins. tuning/README.md says
/// why each default is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgTimeouts {
    /// The whole connection set-up, from DNS to ready-for-query (enforced
    /// by the client, so a server that accepts and never answers is
    /// bounded too).
    pub connect: Duration,
    /// Idle time before the first TCP keepalive probe.
    pub keepalive_idle: Duration,
    /// Time between keepalive probes.
    pub keepalive_interval: Duration,
    /// Unanswered probes before the kernel drops the connection.
    pub keepalive_retries: u32,
    /// Most time sent data may stay unacknowledged (`TCP_USER_TIMEOUT`).
    pub tcp_user_timeout: Duration,
    /// The writer's server-side `statement_timeout`.
    pub statement: Duration,
    /// How long past `statement` the writer waits for any answer before it
    /// drops the connection as dead (a cancelled statement answers at once;
    /// silence means the server or the path to it is gone).
    pub reply_grace: Duration,
}

impl Default for PgTimeouts {
    fn default() -> Self {
        PgTimeouts {
            connect: Duration::from_secs(10),
            keepalive_idle: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(10),
            keepalive_retries: 3,
            tcp_user_timeout: Duration::from_secs(60),
            statement: Duration::from_secs(60),
            reply_grace: Duration::from_secs(15),
        }
    }
}

/// What the store has weathered since it was opened; the same numbers are
/// exported as `dht_hunter_store_*` metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Writes retried after a transient failure (busy, disk full, a lost
    /// connection, a timeout).
    pub retries: u64,
    /// Rows the database rejected on their own: logged and dropped.
    pub rows_dropped: u64,
    /// Connections re-established after a loss (PostgreSQL).
    pub reconnects: u64,
    /// Discoveries and forgets refused because the queue was past their share.
    pub shed: u64,
    /// Times a fetched torrent found the queue full and waited.
    pub producer_waits: u64,
    /// Whether the writer is waiting to retry right now.
    pub stalled: bool,
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
    /// Items the submission queue holds at most; discoveries and forgets
    /// only use the first half.
    pub queue_max: usize,
    /// First pause before retrying a transient failure; doubled per retry.
    pub retry_min: Duration,
    /// Longest pause between retries.
    pub retry_max: Duration,
    /// SQLite's busy timeout: how long a statement waits for a lock held by
    /// another connection before failing (and being retried).
    pub sqlite_busy_timeout: Duration,
    /// PostgreSQL deadlines and keepalives.
    pub pg: PgTimeouts,
    /// `--max-db-size`: at or over this many bytes, no new torrent is
    /// fetched or stored (see [`StoreWriter::is_full`]); `None`: no cap.
    pub max_db_bytes: Option<u64>,
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
            queue_max: 16_384,
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(30),
            sqlite_busy_timeout: Duration::from_secs(10),
            pg: PgTimeouts::default(),
            max_db_bytes: None,
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
    /// One page of hits for `tokens` (every stored torrent when empty).
    fn search_page(
        &mut self,
        tokens: &[String],
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
            .with_read(|b| b.search_page(&tokens, SortKey::Relevance, 0, limit))?
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

/// The JSONL export of everything `b` stores (see [`Store::export_jsonl`]).
fn export_jsonl_from(b: &mut dyn Backend, out: &mut dyn Write) -> Result<u64, StoreError> {
    b.export(&mut |row: ExportRow| {
        let rec = JsonRecord {
            infohash: crate::id::Id(row.infohash).to_hex(),
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
            seeders: row.seeders,
            leechers: row.leechers,
            scraped_at: row.scraped_at.map(rfc3339::format),
        };
        serde_json::to_writer(&mut *out, &rec).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
        Ok(())
    })
}

/// Opens one read connection to `url`.
fn open_read_backend(
    url: &str,
    opts: &StoreOptions,
    counters: &Arc<writer::Counters>,
) -> Result<Box<dyn Backend>, StoreError> {
    Ok(match url.parse::<DbUrl>()? {
        DbUrl::Sqlite(path) => Box::new(sqlite::SqliteBackend::open(&path, opts, false)?),
        DbUrl::Postgres(url) => Box::new(pg::PgBackend::open(
            &url,
            pg::Role::Reader,
            opts.pg,
            counters.clone(),
        )?),
    })
}

/// Read-only access through a small pool of connections of its own, for
/// a server answering several requests at once: each call takes a free
/// connection (waiting for one when all are busy) and puts it back. A
/// streamed export opens a connection of its own so it cannot hold the
/// pool for minutes. `Send + Sync`: share it in an `Arc`.
pub struct StoreReader {
    free: crossbeam_channel::Receiver<Box<dyn Backend>>,
    back: Sender<Box<dyn Backend>>,
    url: String,
    opts: StoreOptions,
    counters: Arc<writer::Counters>,
    backend: &'static str,
}

impl std::fmt::Debug for StoreReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreReader")
            .field("backend", &self.backend)
            .field("free", &self.free.len())
            .finish_non_exhaustive()
    }
}

/// A pooled connection, put back when dropped (even by a panic).
struct Pooled<'a> {
    b: Option<Box<dyn Backend>>,
    back: &'a Sender<Box<dyn Backend>>,
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.b.take() {
            let _ = self.back.send(b);
        }
    }
}

impl StoreReader {
    fn open(
        url: &str,
        opts: &StoreOptions,
        counters: Arc<writer::Counters>,
        connections: usize,
    ) -> Result<StoreReader, StoreError> {
        let n = connections.max(1);
        let (back, free) = crossbeam_channel::bounded(n);
        let mut backend = "";
        for _ in 0..n {
            let b = open_read_backend(url, opts, &counters)?;
            backend = b.name();
            back.send(b).map_err(|_| StoreError::Closed)?;
        }
        Ok(StoreReader {
            free,
            back,
            url: url.to_owned(),
            opts: opts.clone(),
            counters,
            backend,
        })
    }

    /// Opens (migrating first if needed, so a database written by an older
    /// build gets the columns the pages show) and returns a reader alone,
    /// without a writer thread: for `dht-hunter serve`.
    pub fn open_url(url: &str, connections: usize) -> Result<StoreReader, StoreError> {
        let opts = StoreOptions::default();
        let counters = Arc::new(writer::Counters::default());
        match url.parse::<DbUrl>()? {
            DbUrl::Sqlite(path) => drop(sqlite::SqliteBackend::open(&path, &opts, true)?),
            DbUrl::Postgres(u) => drop(pg::PgBackend::open(
                &u,
                pg::Role::Writer,
                opts.pg,
                counters.clone(),
            )?),
        }
        StoreReader::open(url, &opts, counters, connections)
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut dyn Backend) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let b = self.free.recv().map_err(|_| StoreError::Closed)?;
        let mut pooled = Pooled {
            b: Some(b),
            back: &self.back,
        };
        match pooled.b.as_mut() {
            Some(b) => f(b.as_mut()),
            None => Err(StoreError::Closed),
        }
    }

    /// Page `offset / limit` of the torrents matching every word of `text`
    /// (all torrents when `text` has no word), in `sort` order.
    pub fn search_page(
        &self,
        text: &str,
        sort: SortKey,
        offset: usize,
        limit: usize,
    ) -> Result<SearchPage, StoreError> {
        let tokens = search_tokens([text]);
        self.with(|b| b.search_page(&tokens, sort, offset, limit))
    }

    /// One torrent with up to `max_files` files, if stored.
    pub fn torrent(
        &self,
        infohash: &[u8; 20],
        max_files: usize,
    ) -> Result<Option<TorrentDetail>, StoreError> {
        self.with(|b| b.torrent(infohash, max_files))
    }

    /// See [`Store::stats`].
    pub fn stats(&self) -> Result<Stats, StoreError> {
        let now = unix_secs(SystemTime::now());
        self.with(|b| b.stats(now))
    }

    /// Torrents fetched in the last `window`, per `bucket`: (bucket start
    /// in Unix seconds, count), oldest first, empty buckets left out.
    pub fn fetched_histogram(
        &self,
        window: Duration,
        bucket: Duration,
    ) -> Result<Vec<(i64, u64)>, StoreError> {
        let now = unix_secs(SystemTime::now());
        let bucket = bucket.as_secs().max(1) as i64;
        let since = (now - window.as_secs() as i64).div_euclid(bucket) * bucket;
        self.with(|b| b.fetched_histogram(since, bucket))
    }

    /// [`Store::export_jsonl`] over a connection opened for this export
    /// alone (an export may take minutes and must not hold the pool).
    pub fn export_jsonl(&self, out: &mut dyn Write) -> Result<u64, StoreError> {
        let mut b = open_read_backend(&self.url, &self.opts, &self.counters)?;
        export_jsonl_from(b.as_mut(), out)
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

/// Longest search token, in bytes: longer words are cut (at a character
/// boundary) when indexed and when queried alike, so they still match.
/// A PostgreSQL lexeme must stay under 2 KiB; nobody searches for 200-byte
/// words.
pub const MAX_TOKEN_BYTES: usize = 200;
/// Most distinct tokens indexed for one torrent (name first, then paths).
pub const MAX_INDEXED_TOKENS: usize = 20_000;
/// Most bytes of tokens indexed for one torrent. With
/// [`MAX_INDEXED_TOKENS`] this keeps a PostgreSQL `tsvector` (lexemes under
/// 2 KiB, 1 MiB in all) far from its limits. `array_to_tsvector` does not
/// check them: on PostgreSQL 15 a longer lexeme or a larger vector is
/// stored corrupt (its offsets wrap) and nothing in it can be found, so
/// without these caps one torrent with many long file names would be
/// unsearchable, and could fail its batch on a version that checks.
pub const MAX_INDEXED_BYTES: usize = 256 * 1024;

/// Splits text into lowercase alphanumeric words: the shared tokenizer for
/// indexing and querying, so SQLite and PostgreSQL agree on what matches.
/// Duplicates are dropped (first occurrence kept); words are cut to
/// [`MAX_TOKEN_BYTES`].
pub fn search_tokens<'a>(texts: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    tokens_capped(texts, usize::MAX, usize::MAX)
}

/// [`search_tokens`], stopping before `max_tokens` tokens or `max_bytes`
/// bytes (each token counted with one separator byte).
fn tokens_capped<'a>(
    texts: impl IntoIterator<Item = &'a str>,
    max_tokens: usize,
    max_bytes: usize,
) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut bytes = 0usize;
    // Returns false once a cap is reached.
    let mut push = |mut w: String| {
        if w.len() > MAX_TOKEN_BYTES {
            let mut end = MAX_TOKEN_BYTES;
            while !w.is_char_boundary(end) {
                end -= 1;
            }
            w.truncate(end);
        }
        if out.len() >= max_tokens || bytes.saturating_add(w.len() + 1) > max_bytes {
            return false;
        }
        if seen.insert(w.clone()) {
            bytes += w.len() + 1;
            out.push(w);
        }
        true
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
                let more = if !cjk {
                    push(run.iter().collect::<String>().to_lowercase())
                } else if run.len() == 1 {
                    push(run[0].to_string())
                } else {
                    run.windows(2).all(|pair| push(pair.iter().collect()))
                };
                if !more {
                    return out;
                }
            }
        }
    }
    out
}

/// Whether a terminal may act on `c` instead of showing it: control
/// characters (C0, ESC included, DEL, C1) and the Unicode bidirectional
/// overrides and isolates (which reorder what is displayed).
pub fn unsafe_on_terminal(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` made safe to print on a terminal: names and paths are data from
/// strangers, not terminal commands. What [`unsafe_on_terminal`] names is
/// written as `\x1b` / `\u{202e}` escapes; everything else is left as is.
pub fn printable(text: &str) -> Cow<'_, str> {
    let unsafe_char = unsafe_on_terminal;
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !unsafe_char(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    Cow::Owned(out)
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

/// The text to index for a torrent: name and file paths, tokenized, within
/// [`MAX_INDEXED_TOKENS`] and [`MAX_INDEXED_BYTES`].
fn search_body(t: &Torrent) -> String {
    let name = t.name.display();
    let paths: Vec<String> = t.files.iter().map(TorrentFile::display_path).collect();
    tokens_capped(
        std::iter::once(name.as_ref()).chain(paths.iter().map(String::as_str)),
        MAX_INDEXED_TOKENS,
        MAX_INDEXED_BYTES,
    )
    .join(" ")
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
            Op::Discovered { .. } | Op::Forget { .. } | Op::Scraped { .. } => true,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    seeders: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    leechers: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scraped_at: Option<String>,
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
    #[serde(default)]
    seeders: Option<u32>,
    #[serde(default)]
    leechers: Option<u32>,
    #[serde(default)]
    scraped_at: Option<String>,
}

/// Validates one JSONL line into a record and its BEP 33 estimate, if it
/// has one (`seeders`, `leechers` and `scraped_at` all three, or none).
/// The JSONL format does not carry piece length or the private flag;
/// imported torrents get 0 and false.
fn parse_json_line(line: &[u8]) -> Result<(TorrentRecord, Option<ScrapeCounts>), String> {
    let r: JsonRecordIn = serde_json::from_slice(line).map_err(|e| format!("bad JSON: {e}"))?;
    let infohash = r
        .infohash
        .parse::<crate::id::Id>()
        .map_err(|e| e.to_string())?
        .0;
    let discovered_at =
        rfc3339::parse(&r.discovered_at).map_err(|e| format!("discovered_at: {e}"))?;
    let fetched_at = rfc3339::parse(&r.fetched_at).map_err(|e| format!("fetched_at: {e}"))?;
    let source: Source = r
        .source
        .parse()
        .map_err(|e: crate::source::UnknownSource| e.to_string())?;
    let scrape = match (r.seeders, r.leechers, &r.scraped_at) {
        (None, None, None) => None,
        (Some(seeders), Some(leechers), Some(at)) => Some(ScrapeCounts {
            seeders,
            leechers,
            at: from_unix_secs(rfc3339::parse(at).map_err(|e| format!("scraped_at: {e}"))?),
        }),
        _ => return Err("seeders, leechers and scraped_at go together".into()),
    };
    if r.files.is_empty() {
        return Err("files is empty".into());
    }
    // The same rule as fetched metadata: no empty, `.` or `..` component.
    let name = TorrentName::Utf8(r.name);
    check_component(name.as_bytes()).map_err(|e| format!("name: {e}"))?;
    let mut total: i64 = 0;
    let mut files = Vec::with_capacity(r.files.len());
    for (i, f) in r.files.into_iter().enumerate() {
        let size = i64::try_from(f.size).map_err(|_| format!("file {i}: size too large"))?;
        total = total
            .checked_add(size)
            .ok_or_else(|| "total size overflows".to_owned())?;
        let path: Vec<TorrentName> = f.path.split('/').map(TorrentName::from).collect();
        for c in &path {
            check_component(c.as_bytes()).map_err(|e| format!("file {i}: {e} in {:?}", f.path))?;
        }
        files.push(TorrentFile { path, size: f.size });
    }
    if total as u64 != r.size {
        return Err(format!(
            "size {} is not the sum of file sizes {total}",
            r.size
        ));
    }
    Ok((
        TorrentRecord {
            infohash,
            torrent: Torrent {
                name,
                total_size: r.size,
                piece_length: 0,
                private: false,
                files,
            },
            source,
            discovered_at: from_unix_secs(discovered_at),
            fetched_at: from_unix_secs(fetched_at),
        },
        scrape,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            s: SortKey,
            o: usize,
            l: usize,
        ) -> Result<SearchPage, StoreError> {
            self.inner.search_page(t, s, o, l)
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
