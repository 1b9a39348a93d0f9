//! SQLite back end (embedded default).
//!
//! * WAL mode with `synchronous=NORMAL`: a commit is one sequential WAL append
//!   with no fsync; the WAL is fsynced when it is checkpointed (and on
//!   [`Backend::sync`], i.e. flush). A power cut can lose the last few
//!   batches, never corrupt the database.
//! * WAL growth is bounded three ways: `wal_autocheckpoint` (SQLite's own
//!   passive checkpoint every N pages), a `TRUNCATE` checkpoint from the writer
//!   every few batches and whenever it goes idle, and `journal_size_limit` so a
//!   WAL that did grow (e.g. behind a long-lived reader) is cut back after the
//!   next complete checkpoint. Magnetico's unbounded WAL came from never
//!   completing a checkpoint while readers were always active; the periodic
//!   `TRUNCATE` checkpoint waits (busy timeout) for readers to let go.
//! * Search uses a **contentless** FTS5 table (`content=''`) whose rowid is
//!   `torrents.id`. The indexed text (name plus every file path, tokenized) is
//!   not a column of any table, so external-content mode would need a view or
//!   a duplicate column; contentless stores only the index. The cost — the
//!   text cannot be read back from the FTS table — does not matter because
//!   hits are joined back to `torrents`.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, Row, TransactionBehavior};

use crate::category::Category;

use super::model::ToClassify;
use super::{
    name_columns, path_columns, search_body, to_i64, unix_secs, Backend, ExportGroups, ExportRow,
    ExportSink, Op, PendingEntry, SearchHit, SearchPage, SortKey, Source, Stats, StoreError,
    StoreOptions, TorrentDetail, SCHEMA_VERSION, SEARCH_COUNT_CAP,
};

/// Schema migrations, applied in order; entry `i` takes version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // Version 1.
    "CREATE TABLE torrents (
        id            INTEGER PRIMARY KEY,
        infohash      BLOB    NOT NULL UNIQUE CHECK (length(infohash) = 20),
        name          TEXT    NOT NULL,
        name_raw      BLOB,
        total_size    INTEGER NOT NULL,
        piece_length  INTEGER NOT NULL,
        private       INTEGER NOT NULL,
        file_count    INTEGER NOT NULL,
        discovered_at INTEGER NOT NULL,
        fetched_at    INTEGER NOT NULL,
        source        TEXT    NOT NULL
    );
    CREATE INDEX torrents_fetched_at ON torrents (fetched_at);
    CREATE TABLE files (
        torrent_id INTEGER NOT NULL REFERENCES torrents (id),
        idx        INTEGER NOT NULL,
        path       TEXT    NOT NULL,
        path_raw   BLOB,
        size       INTEGER NOT NULL,
        PRIMARY KEY (torrent_id, idx)
    ) WITHOUT ROWID;
    CREATE TABLE pending (
        infohash      BLOB    PRIMARY KEY CHECK (length(infohash) = 20),
        source        TEXT    NOT NULL,
        discovered_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX pending_discovered_at ON pending (discovered_at);
    CREATE VIRTUAL TABLE torrents_fts USING fts5 (
        body,
        content = '',
        contentless_delete = 1,
        tokenize = 'unicode61 remove_diacritics 0'
    );",
    // Version 2: BEP 33 estimates, and the indexes prune, filters and the
    // web side sort by.
    "ALTER TABLE torrents ADD COLUMN seeders INTEGER;
    ALTER TABLE torrents ADD COLUMN leechers INTEGER;
    ALTER TABLE torrents ADD COLUMN scraped_at INTEGER;
    CREATE INDEX torrents_seeders ON torrents (seeders);
    CREATE INDEX torrents_discovered_at ON torrents (discovered_at);
    CREATE INDEX torrents_total_size ON torrents (total_size);",
    // Version 3: the inferred category (crate::category), filled for
    // older rows by `classify_unclassified` after the migration.
    "ALTER TABLE torrents ADD COLUMN category INTEGER;
    CREATE INDEX torrents_category ON torrents (category, discovered_at);",
];

const _: () = assert!(MIGRATIONS.len() as i64 == SCHEMA_VERSION);

pub(super) struct SqliteBackend {
    conn: Connection,
    path: PathBuf,
}

impl SqliteBackend {
    /// Opens a connection; the writer's (`migrate`) creates and upgrades the
    /// schema, and is opened first.
    pub(super) fn open(
        path: &Path,
        opts: &StoreOptions,
        migrate: bool,
    ) -> Result<SqliteBackend, StoreError> {
        // Another process opening the same new file at the same moment
        // (switching it to WAL, migrating it) can make a step fail busy
        // before the busy timeout applies: retry the whole open for as long
        // as that timeout.
        let deadline = std::time::Instant::now() + opts.sqlite_busy_timeout;
        loop {
            match Self::open_once(path, opts, migrate) {
                Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)))
                    if matches!(
                        f.code,
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                    ) && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                r => return r,
            }
        }
    }

    fn open_once(
        path: &Path,
        opts: &StoreOptions,
        migrate: bool,
    ) -> Result<SqliteBackend, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(opts.sqlite_busy_timeout)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt(format!(
                "could not switch {} to WAL mode (journal_mode = {mode})",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "wal_autocheckpoint", opts.wal_autocheckpoint_pages)?;
        conn.pragma_update(None, "journal_size_limit", opts.journal_size_limit)?;
        if migrate {
            run_migrations(&mut conn)?;
            classify_unclassified(&mut conn)?;
        }
        Ok(SqliteBackend {
            conn,
            path: path.to_owned(),
        })
    }

    /// The connection, for tests that inject faults into it.
    #[cfg(test)]
    pub(super) fn conn(&self) -> &Connection {
        &self.conn
    }

    fn wal_bytes(&self) -> u64 {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        std::fs::metadata(wal).map_or(0, |m| m.len())
    }
}

/// Rows per transaction while older rows are classified.
const CLASSIFY_BATCH: i64 = 5_000;

/// Gives every torrent stored before schema version 3 its category, in
/// batches (the category index finds the rows without one, in any order:
/// ordering them would sort every such row for each batch), so a database
/// with none left costs one index probe.
fn classify_unclassified(conn: &mut Connection) -> Result<(), StoreError> {
    let mut done = 0u64;
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut rows: Vec<ToClassify<i64>> = Vec::new();
        {
            let mut stmt = tx.prepare_cached(
                "SELECT t.id, t.name, f.path, f.size
                 FROM (SELECT id, name FROM torrents WHERE category IS NULL LIMIT ?1) t
                 LEFT JOIN files f ON f.torrent_id = t.id
                 ORDER BY t.id, f.idx",
            )?;
            let mut q = stmt.query([CLASSIFY_BATCH])?;
            while let Some(r) = q.next()? {
                let path: Option<String> = r.get(2)?;
                let size: Option<i64> = r.get(3)?;
                ToClassify::push_row(&mut rows, r.get(0)?, r.get(1)?, path.zip(size));
            }
        }
        if rows.is_empty() {
            break;
        }
        {
            let mut set = tx.prepare_cached("UPDATE torrents SET category = ?2 WHERE id = ?1")?;
            for t in &rows {
                set.execute(params![t.key, t.category().newznab_id()])?;
            }
        }
        tx.commit()?;
        done += rows.len() as u64;
    }
    if done > 0 {
        log::info!("sqlite: classified {done} torrents stored before categories existed");
    }
    Ok(())
}

fn run_migrations(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let current: i64 = tx.query_row(
        "SELECT coalesce(max(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    for sql in MIGRATIONS.iter().skip(current.max(0) as usize) {
        tx.execute_batch(sql)?;
    }
    if current < SCHEMA_VERSION {
        tx.execute("DELETE FROM schema_version", [])?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [SCHEMA_VERSION],
        )?;
        log::info!("sqlite schema migrated from version {current} to {SCHEMA_VERSION}");
    }
    tx.commit()?;
    Ok(())
}

fn infohash(row: &Row<'_>, idx: usize) -> Result<[u8; 20], StoreError> {
    let v: Vec<u8> = row.get(idx)?;
    v.try_into()
        .map_err(|v: Vec<u8>| StoreError::Corrupt(format!("infohash of {} bytes", v.len())))
}

/// The columns [`hit`] reads, in its order (`t` is `torrents`).
const HIT_COLUMNS: &str = "t.infohash, t.name, t.total_size, t.file_count, t.source, \
     t.discovered_at, t.fetched_at, t.seeders, t.leechers, t.scraped_at, t.category";

/// A search hit from the first columns of `row` ([`HIT_COLUMNS`]).
fn hit(row: &Row<'_>) -> Result<SearchHit, StoreError> {
    let count = |i: usize| -> Result<Option<u32>, StoreError> {
        Ok(row
            .get::<_, Option<i64>>(i)?
            .map(|n| n.clamp(0, i64::from(u32::MAX)) as u32))
    };
    Ok(SearchHit {
        infohash: infohash(row, 0)?,
        name: row.get(1)?,
        total_size: row.get::<_, i64>(2)? as u64,
        file_count: row.get::<_, i64>(3)? as u64,
        source: source(row, 4)?,
        discovered_at: super::from_unix_secs(row.get(5)?),
        fetched_at: super::from_unix_secs(row.get(6)?),
        seeders: count(7)?,
        leechers: count(8)?,
        scraped_at: row.get::<_, Option<i64>>(9)?.map(super::from_unix_secs),
        category: Category::from_stored(row.get(10)?),
    })
}

fn source(row: &Row<'_>, idx: usize) -> Result<Source, StoreError> {
    row.get_ref(idx)?
        .as_str()
        .map_err(rusqlite::Error::from)?
        .parse()
        .map_err(StoreError::from)
}

impl Backend for SqliteBackend {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn write(&mut self, ops: &[Op]) -> Result<u64, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut new = 0;
        {
            let mut pend = tx.prepare_cached(
                "INSERT INTO pending (infohash, source, discovered_at)
                 SELECT ?1, ?2, ?3 WHERE NOT EXISTS (SELECT 1 FROM torrents WHERE infohash = ?1)
                 ON CONFLICT (infohash) DO NOTHING",
            )?;
            let mut tor = tx.prepare_cached(
                "INSERT INTO torrents (infohash, name, name_raw, total_size, piece_length, private,
                                       file_count, discovered_at, fetched_at, source, category)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (infohash) DO NOTHING",
            )?;
            let mut file = tx.prepare_cached(
                "INSERT INTO files (torrent_id, idx, path, path_raw, size) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut fts =
                tx.prepare_cached("INSERT INTO torrents_fts (rowid, body) VALUES (?1, ?2)")?;
            let mut unpend = tx.prepare_cached("DELETE FROM pending WHERE infohash = ?1")?;
            let mut scraped = tx.prepare_cached(
                "UPDATE torrents SET seeders = ?2, leechers = ?3, scraped_at = ?4
                 WHERE infohash = ?1 AND (scraped_at IS NULL OR scraped_at <= ?4)",
            )?;
            for op in ops {
                match op {
                    Op::Discovered {
                        infohash,
                        source,
                        at,
                    } => {
                        pend.execute(params![&infohash[..], source.as_str(), at])?;
                    }
                    Op::Fetched(r) => {
                        let t = &r.torrent;
                        let (name, name_raw) = name_columns(&t.name);
                        let inserted = tor.execute(params![
                            &r.infohash[..],
                            name,
                            name_raw,
                            to_i64(t.total_size, "total size")?,
                            to_i64(t.piece_length, "piece length")?,
                            t.private,
                            t.files.len() as i64,
                            unix_secs(r.discovered_at),
                            unix_secs(r.fetched_at),
                            r.source.as_str(),
                            Category::of_torrent(t).newznab_id(),
                        ])?;
                        if inserted == 1 {
                            let id = tx.last_insert_rowid();
                            for (idx, f) in t.files.iter().enumerate() {
                                let (path, raw) = path_columns(f);
                                file.execute(params![
                                    id,
                                    idx as i64,
                                    path,
                                    raw,
                                    to_i64(f.size, "file size")?
                                ])?;
                            }
                            fts.execute(params![id, search_body(t)])?;
                            new += 1;
                        }
                        unpend.execute([&r.infohash[..]])?;
                    }
                    Op::Forget { infohash } => {
                        unpend.execute([&infohash[..]])?;
                    }
                    Op::Scraped {
                        infohash,
                        seeders,
                        leechers,
                        at,
                    } => {
                        scraped.execute(params![&infohash[..], seeders, leechers, at])?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(new)
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        // A passive checkpoint fsyncs the WAL before copying it into the
        // database file, which is what makes NORMAL-mode commits durable.
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    }

    fn maintain(&mut self, max_pending: i64) -> Result<(), StoreError> {
        // The pending table stays bounded: the oldest discoveries beyond
        // the cap go (the crawler gave up on most of them long ago).
        self.conn.execute(
            "DELETE FROM pending WHERE infohash IN (
                 SELECT infohash FROM pending ORDER BY discovered_at
                 LIMIT max(0, (SELECT count(*) FROM pending) - ?1))",
            [max_pending],
        )?;
        let (busy, log, done): (i64, i64, i64) =
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
        if busy != 0 {
            log::debug!(
                "sqlite checkpoint incomplete: {done} of {log} WAL frames (readers active)"
            );
        }
        Ok(())
    }

    fn db_size(&mut self) -> Result<u64, StoreError> {
        // Pages in use: SQLite keeps a deleted row's pages in the file, on
        // its freelist, and reuses them before it grows the file. Counting
        // them would keep a cap full forever after a `prune`.
        let pages: i64 = self.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let free: i64 = self
            .conn
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        let page_size: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        Ok((pages - free).max(0) as u64 * page_size as u64 + self.wal_bytes())
    }

    fn delete(&mut self, infohashes: &[[u8; 20]]) -> Result<u64, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut n = 0;
        {
            let mut id_of = tx.prepare_cached("SELECT id FROM torrents WHERE infohash = ?1")?;
            let mut files = tx.prepare_cached("DELETE FROM files WHERE torrent_id = ?1")?;
            // Contentless FTS5 with contentless_delete = 1: a row goes by
            // its rowid alone.
            let mut fts = tx.prepare_cached("DELETE FROM torrents_fts WHERE rowid = ?1")?;
            let mut tor = tx.prepare_cached("DELETE FROM torrents WHERE id = ?1")?;
            for infohash in infohashes {
                let id: Option<i64> = match id_of.query_row([&infohash[..]], |r| r.get(0)) {
                    Ok(id) => Some(id),
                    Err(rusqlite::Error::QueryReturnedNoRows) => None,
                    Err(e) => return Err(e.into()),
                };
                if let Some(id) = id {
                    files.execute([id])?;
                    fts.execute([id])?;
                    n += tor.execute([id])? as u64;
                }
            }
        }
        tx.commit()?;
        Ok(n)
    }

    fn search_page(
        &mut self,
        tokens: &[String],
        categories: &[Category],
        sort: SortKey,
        offset: usize,
        limit: usize,
    ) -> Result<SearchPage, StoreError> {
        // Each token as a quoted FTS5 string: implicit AND, no operators.
        let query = tokens
            .iter()
            .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(" ");
        let order = match sort {
            SortKey::Relevance | SortKey::Discovered => "t.discovered_at DESC, t.id DESC",
            SortKey::Size => "t.total_size DESC, t.id DESC",
            SortKey::Seeders => "t.seeders DESC NULLS LAST, t.id DESC",
        };
        // With words: the newest SEARCH_COUNT_CAP matches (FTS5 walks its
        // doclists in rowid order, newest first on request, and stops
        // there), then ranked or sorted. Ranking or sorting every match of
        // two common words in a large store costs hundreds of milliseconds
        // (BM25 of 400,000 rows; see tuning/runs/search-*.md); within the
        // window every order is exact whenever there are at most
        // SEARCH_COUNT_CAP matches, which the count tells the caller.
        // A category filter applies to what the window holds.
        let cat = super::category_clause(categories);
        let window = |rank: &str| {
            format!(
                "(SELECT rowid AS id{rank} FROM torrents_fts WHERE torrents_fts MATCH ?1
                  ORDER BY rowid DESC LIMIT {SEARCH_COUNT_CAP}) f
                 JOIN torrents t ON t.id = f.id
                 WHERE 1 = 1{cat}"
            )
        };
        let sql = if tokens.is_empty() {
            format!("SELECT {HIT_COLUMNS} FROM torrents t WHERE ?1 = ?1{cat} ORDER BY {order} LIMIT ?2 OFFSET ?3")
        } else {
            let (rank, order) = match sort {
                SortKey::Relevance => (", rank AS r", "f.r, t.id DESC"),
                _ => ("", order),
            };
            // With a category, the window's matches of it are counted in
            // the same pass (column 11), not by joining the window again.
            let in_window = if categories.is_empty() {
                ""
            } else {
                ", count(*) OVER () AS n"
            };
            format!(
                "SELECT {HIT_COLUMNS}{in_window} FROM {}
                 ORDER BY {order} LIMIT ?2 OFFSET ?3",
                window(rank)
            )
        };
        let words_and_cats = !tokens.is_empty() && !categories.is_empty();
        // One more than asked: whether there is a next page.
        let want = super::sql_int(limit.saturating_add(1));
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![query, want, super::sql_int(offset)])?;
        let mut hits = Vec::new();
        let mut in_window: Option<i64> = None;
        while let Some(row) = rows.next()? {
            hits.push(hit(row)?);
            if words_and_cats && in_window.is_none() {
                in_window = Some(row.get(11)?);
            }
        }
        drop(rows);
        drop(stmt);
        let count_sql = if tokens.is_empty() {
            format!("SELECT count(*) FROM (SELECT 1 FROM torrents t WHERE ?1 = ?1{cat} LIMIT ?2)")
        } else {
            "SELECT count(*) FROM (SELECT 1 FROM torrents_fts WHERE torrents_fts MATCH ?1 LIMIT ?2)"
                .to_owned()
        };
        let counted: i64 = self
            .conn
            .prepare_cached(&count_sql)?
            .query_row(params![query, super::search_count_probe()], |r| r.get(0))?;
        if !words_and_cats {
            return Ok(SearchPage::from_rows(hits, limit, counted));
        }
        // Words and categories: the window's matches of the categories, as
        // the page counted them; a page past the end counts them apart.
        let in_window: i64 = match in_window {
            Some(n) => n,
            None if offset == 0 => 0,
            None => self
                .conn
                .prepare_cached(&format!("SELECT count(*) FROM {}", window("")))?
                .query_row(params![query], |r| r.get(0))?,
        };
        Ok(SearchPage::from_rows(hits, limit, in_window)
            .window_full(counted > SEARCH_COUNT_CAP as i64))
    }

    fn torrent(
        &mut self,
        infohash: &[u8; 20],
        max_files: usize,
    ) -> Result<Option<TorrentDetail>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {HIT_COLUMNS}, t.piece_length, t.private, t.id FROM torrents t
             WHERE t.infohash = ?1"
        ))?;
        let mut rows = stmt.query([&infohash[..]])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let hit = hit(row)?;
        let piece_length = row.get::<_, i64>(11)? as u64;
        let private: bool = row.get(12)?;
        let id: i64 = row.get(13)?;
        drop(rows);
        drop(stmt);
        let mut stmt = self.conn.prepare_cached(
            "SELECT path, size FROM files WHERE torrent_id = ?1 ORDER BY idx LIMIT ?2",
        )?;
        let mut rows = stmt.query(params![id, super::sql_int(max_files)])?;
        let mut files = Vec::new();
        while let Some(row) = rows.next()? {
            files.push((row.get(0)?, row.get::<_, i64>(1)? as u64));
        }
        Ok(Some(TorrentDetail {
            hit,
            piece_length,
            private,
            files,
        }))
    }

    fn fetched_histogram(
        &mut self,
        since: i64,
        bucket: i64,
    ) -> Result<Vec<(i64, u64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT (fetched_at / ?2) * ?2 AS b, count(*) FROM torrents
             WHERE fetched_at >= ?1 GROUP BY b ORDER BY b",
        )?;
        let mut rows = stmt.query(params![since, bucket.max(1)])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push((row.get(0)?, row.get::<_, i64>(1)? as u64));
        }
        Ok(out)
    }

    fn stats(&mut self, now: i64) -> Result<Stats, StoreError> {
        let mut s = Stats::default();
        self.conn.query_row(
            "SELECT count(*), coalesce(sum(file_count), 0), min(fetched_at), max(fetched_at),
                    coalesce(sum(fetched_at >= ?1), 0), coalesce(sum(fetched_at >= ?2), 0)
             FROM torrents",
            params![now - 3600, now - 86_400],
            |r| {
                s.torrents = r.get::<_, i64>(0)? as u64;
                s.files = r.get::<_, i64>(1)? as u64;
                s.first_fetched = r.get::<_, Option<i64>>(2)?.map(super::from_unix_secs);
                s.last_fetched = r.get::<_, Option<i64>>(3)?.map(super::from_unix_secs);
                s.fetched_last_hour = r.get::<_, i64>(4)? as u64;
                s.fetched_last_day = r.get::<_, i64>(5)? as u64;
                Ok(())
            },
        )?;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT source, count(*) FROM torrents GROUP BY source")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            s.set_stored_from(source(row, 0)?, row.get::<_, i64>(1)? as u64);
        }
        drop(rows);
        drop(stmt);
        s.pending = self
            .conn
            .query_row("SELECT count(*) FROM pending", [], |r| r.get::<_, i64>(0))?
            as u64;
        s.db_bytes = self.db_size()?;
        Ok(s)
    }

    fn pending(&mut self, limit: usize) -> Result<Vec<PendingEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT infohash, source, discovered_at FROM pending
             ORDER BY discovered_at, infohash LIMIT ?1",
        )?;
        let mut rows = stmt.query([super::sql_int(limit)])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(PendingEntry {
                infohash: infohash(row, 0)?,
                source: source(row, 1)?,
                discovered_at: super::from_unix_secs(row.get(2)?),
            });
        }
        Ok(out)
    }

    fn is_known(&mut self, infohash: &[u8; 20]) -> Result<bool, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM torrents WHERE infohash = ?1)
                 OR EXISTS (SELECT 1 FROM pending WHERE infohash = ?1)",
        )?;
        Ok(stmt.query_row([&infohash[..]], |r| r.get(0))?)
    }

    fn infohashes(&mut self, sink: &mut dyn FnMut([u8; 20])) -> Result<u64, StoreError> {
        let mut stmt = self.conn.prepare("SELECT infohash FROM torrents")?;
        let mut rows = stmt.query([])?;
        let mut n = 0;
        while let Some(row) = rows.next()? {
            sink(infohash(row, 0)?);
            n += 1;
        }
        Ok(n)
    }

    fn export(&mut self, sink: &mut ExportSink<'_>) -> Result<u64, StoreError> {
        let tx = self.conn.transaction()?; // one consistent snapshot
        let mut stmt = tx.prepare(
            "SELECT t.infohash, t.name, t.total_size, t.discovered_at, t.fetched_at, t.source,
                    f.path, f.size, t.seeders, t.leechers, t.scraped_at
             FROM torrents t LEFT JOIN files f ON f.torrent_id = t.id
             ORDER BY t.infohash, f.idx",
        )?;
        let mut rows = stmt.query([])?;
        let mut groups = ExportGroups::new(sink);
        while let Some(row) = rows.next()? {
            let infohash = infohash(row, 0)?;
            let file = match row.get::<_, Option<String>>(6)? {
                Some(path) => Some((path, row.get::<_, i64>(7)? as u64)),
                None => None,
            };
            groups.row(
                infohash,
                || {
                    Ok(ExportRow {
                        infohash,
                        name: row.get(1)?,
                        size: row.get::<_, i64>(2)? as u64,
                        files: Vec::new(),
                        discovered_at: row.get(3)?,
                        fetched_at: row.get(4)?,
                        source: source(row, 5)?,
                        seeders: row.get(8)?,
                        leechers: row.get(9)?,
                        scraped_at: row.get(10)?,
                    })
                },
                file,
            )?;
        }
        groups.finish()
    }
}
