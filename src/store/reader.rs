//! [`StoreReader`]: the read side's own pool of connections.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crossbeam_channel::Sender;

use crate::category::Category;

#[cfg(doc)]
use super::Store;
use super::{
    export_jsonl_from, pg, search_tokens, sqlite, unix_secs, writer, Backend, DbUrl, SearchPage,
    SortKey, Stats, StoreError, StoreOptions, TorrentDetail,
};

/// Opens one read connection to `url`.
pub(super) fn open_read_backend(
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
    pub(super) fn open(
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
    /// (all torrents when `text` has no word) in one of `categories` (any
    /// when empty), in `sort` order.
    pub fn search_page(
        &self,
        text: &str,
        categories: &[Category],
        sort: SortKey,
        offset: usize,
        limit: usize,
    ) -> Result<SearchPage, StoreError> {
        let tokens = search_tokens([text]);
        self.with(|b| b.search_page(&tokens, categories, sort, offset, limit))
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
