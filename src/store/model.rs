//! The store's public data types: errors, records, search pages, stats,
//! database URLs and options.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::pg_message;
#[cfg(doc)]
use super::{Store, StoreWriter};
use crate::category::Category;
use crate::metainfo::Torrent;

/// Newest schema version this build knows (both back ends).
pub const SCHEMA_VERSION: i64 = 3;

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
    /// What it holds, as inferred from its files when it was stored.
    pub category: Category,
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
    pub(super) fn from_rows(mut hits: Vec<SearchHit>, limit: usize, counted: i64) -> Self {
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

    /// A page with no hits and nothing counted.
    pub fn empty() -> Self {
        SearchPage {
            hits: Vec::new(),
            more: false,
            counted: 0,
            counted_capped: false,
        }
    }

    /// Marks the count as a lower bound when the search window was full
    /// (a filter counted inside the [`SEARCH_COUNT_CAP`] newest matches,
    /// and older matches exist).
    pub(super) fn window_full(mut self, full: bool) -> Self {
        self.counted_capped |= full;
        self
    }
}

/// The SQL condition (` AND t.category IN (…)`, `t` being `torrents`)
/// that keeps `categories`; empty for none (every category). The ids are
/// integers this crate writes, never user text.
pub(super) fn category_clause(categories: &[Category]) -> String {
    if categories.is_empty() {
        return String::new();
    }
    let ids: Vec<String> = categories
        .iter()
        .map(|c| c.newznab_id().to_string())
        .collect();
    format!(" AND t.category IN ({})", ids.join(","))
}

/// A torrent read back to be classified (stored before categories
/// existed): its key in the back end, its name and its files.
pub(super) struct ToClassify<K> {
    /// The row's key (SQLite rowid, PostgreSQL infohash).
    pub key: K,
    name: String,
    files: Vec<(String, u64)>,
}

impl<K: PartialEq> ToClassify<K> {
    /// Adds one row of a `torrents LEFT JOIN files` read ordered by key:
    /// a new torrent when the key changes, and its file if it has one.
    pub fn push_row(list: &mut Vec<Self>, key: K, name: String, file: Option<(String, i64)>) {
        if list.last().is_none_or(|t| t.key != key) {
            list.push(ToClassify {
                key,
                name,
                files: Vec::new(),
            });
        }
        if let (Some((path, size)), Some(t)) = (file, list.last_mut()) {
            t.files.push((path, size.max(0) as u64));
        }
    }

    /// What [`Category::classify`] makes of it.
    pub fn category(&self) -> Category {
        Category::classify(&self.name, self.files.iter().map(|(p, s)| (p.as_str(), *s)))
    }
}

/// The `LIMIT` of a search's count query: one past the cap, so that the
/// count says whether there are more matches than it shows.
pub(super) fn search_count_probe() -> i64 {
    sql_int(SEARCH_COUNT_CAP as usize + 1)
}

/// A count or offset as an SQL integer (both back ends bind `i64`);
/// saturates rather than wrapping for absurd values.
pub(super) fn sql_int(n: usize) -> i64 {
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
    pub(super) fn set_stored_from(&mut self, source: Source, n: u64) {
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
