//! PostgreSQL back end (`postgres` crate, synchronous client, no TLS).
//!
//! * A whole batch is three statements in one transaction: pending rows, then
//!   torrents and their files in a single data-modifying CTE, then the
//!   pending cleanup. Rows travel as parallel arrays expanded by `unnest`, so
//!   each statement is prepared once and a 2000-item batch costs three round
//!   trips regardless of size. `ON CONFLICT DO NOTHING` deduplicates, and the
//!   files insert only takes files of torrents the CTE actually inserted.
//! * Search is a GIN index over a `tsvector` column. The lexemes are the
//!   tokens computed in Rust (`array_to_tsvector`), not PostgreSQL's parser,
//!   so matching is identical to the SQLite back end and does not depend on
//!   the database's locale or text-search configuration. pg_trgm was not
//!   used: it needs an extension the database owner may not be allowed to
//!   create, and its substring semantics would differ from SQLite's FTS5.
//! * Tables are created in the first schema of the connection's
//!   `search_path`, so several stores can share one database (the tests use
//!   `?options=-csearch_path%3D<schema>`).

use std::time::SystemTime;

use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Statement};

use super::{
    dedup_fetched, from_unix_secs, name_columns, path_columns, search_body, to_i64, Backend,
    ExportRow, ExportSink, Op, PendingEntry, SearchHit, Source, Stats, StoreError, SCHEMA_VERSION,
};

/// Schema migrations, applied in order; entry `i` takes version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // Version 1.
    "CREATE TABLE torrents (
        infohash      bytea       PRIMARY KEY CHECK (octet_length(infohash) = 20),
        name          text        NOT NULL,
        name_raw      bytea,
        total_size    bigint      NOT NULL,
        piece_length  bigint      NOT NULL,
        private       boolean     NOT NULL,
        file_count    bigint      NOT NULL,
        discovered_at timestamptz NOT NULL,
        fetched_at    timestamptz NOT NULL,
        source        text        NOT NULL,
        search        tsvector    NOT NULL
    );
    CREATE INDEX torrents_fetched_at ON torrents (fetched_at);
    CREATE INDEX torrents_search ON torrents USING gin (search);
    CREATE TABLE files (
        infohash bytea   NOT NULL REFERENCES torrents (infohash) ON DELETE CASCADE,
        idx      integer NOT NULL,
        path     text    NOT NULL,
        path_raw bytea,
        size     bigint  NOT NULL,
        PRIMARY KEY (infohash, idx)
    );
    CREATE TABLE pending (
        infohash      bytea       PRIMARY KEY CHECK (octet_length(infohash) = 20),
        source        text        NOT NULL,
        discovered_at timestamptz NOT NULL
    );
    CREATE INDEX pending_discovered_at ON pending (discovered_at);",
];

const _: () = assert!(MIGRATIONS.len() as i64 == SCHEMA_VERSION);

const INSERT_PENDING: &str = "
    INSERT INTO pending (infohash, source, discovered_at)
    SELECT u.ih, u.src, u.at
    FROM unnest($1::bytea[], $2::text[], $3::timestamptz[]) AS u (ih, src, at)
    WHERE NOT EXISTS (SELECT 1 FROM torrents t WHERE t.infohash = u.ih)
    ON CONFLICT (infohash) DO NOTHING";

const INSERT_TORRENTS: &str = "
    WITH ins AS (
        INSERT INTO torrents (infohash, name, name_raw, total_size, piece_length, private,
                              file_count, discovered_at, fetched_at, source, search)
        SELECT u.ih, u.name, u.raw, u.size, u.pl, u.priv, u.fc, u.disc, u.fet, u.src,
               array_to_tsvector(string_to_array(u.body, ' '))
        FROM unnest($1::bytea[], $2::text[], $3::bytea[], $4::int8[], $5::int8[], $6::bool[],
                    $7::int8[], $8::timestamptz[], $9::timestamptz[], $10::text[], $11::text[])
             AS u (ih, name, raw, size, pl, priv, fc, disc, fet, src, body)
        ON CONFLICT (infohash) DO NOTHING
        RETURNING infohash
    ), files_ins AS (
        INSERT INTO files (infohash, idx, path, path_raw, size)
        SELECT f.ih, f.idx, f.path, f.raw, f.size
        FROM unnest($12::bytea[], $13::int4[], $14::text[], $15::bytea[], $16::int8[])
             AS f (ih, idx, path, raw, size)
        WHERE f.ih IN (SELECT infohash FROM ins)
    )
    SELECT count(*) FROM ins";

const DELETE_PENDING: &str = "DELETE FROM pending WHERE infohash = ANY($1::bytea[])";

pub(super) struct PgBackend {
    client: Client,
    insert_pending: Statement,
    insert_torrents: Statement,
    delete_pending: Statement,
}

impl PgBackend {
    /// Connects; the writer's connection (`migrate`) creates and upgrades the
    /// schema, and is opened first.
    pub(super) fn open(url: &str, migrate: bool) -> Result<PgBackend, StoreError> {
        let mut client = Client::connect(url, NoTls)?;
        if migrate {
            run_migrations(&mut client)?;
        }
        Ok(PgBackend {
            insert_pending: client.prepare(INSERT_PENDING)?,
            insert_torrents: client.prepare(INSERT_TORRENTS)?,
            delete_pending: client.prepare(DELETE_PENDING)?,
            client,
        })
    }
}

fn run_migrations(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    // Serializes concurrent openers of the same schema (CREATE TABLE IF NOT
    // EXISTS is not safe against a concurrent identical CREATE).
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('dht_hunter:' || coalesce(current_schema(), '')))",
        &[],
    )?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version bigint NOT NULL)")?;
    let current: i64 = tx
        .query_one(
            "SELECT coalesce(max(version), 0)::int8 FROM schema_version",
            &[],
        )?
        .get(0);
    if current > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    for sql in MIGRATIONS.iter().skip(current.max(0) as usize) {
        tx.batch_execute(sql)?;
    }
    if current < SCHEMA_VERSION {
        tx.execute("DELETE FROM schema_version", &[])?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&SCHEMA_VERSION],
        )?;
        log::info!("postgres schema migrated from version {current} to {SCHEMA_VERSION}");
    }
    tx.commit()?;
    Ok(())
}

fn infohash(row: &Row, idx: usize) -> Result<[u8; 20], StoreError> {
    let v: &[u8] = row.try_get(idx)?;
    v.try_into()
        .map_err(|_| StoreError::Corrupt(format!("infohash of {} bytes", v.len())))
}

fn source(row: &Row, idx: usize) -> Result<Source, StoreError> {
    row.try_get::<_, &str>(idx)?.parse()
}

fn to_time(secs: i64) -> SystemTime {
    from_unix_secs(secs)
}

impl Backend for PgBackend {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn write(&mut self, ops: &[Op]) -> Result<u64, StoreError> {
        let (ops, fetched) = dedup_fetched(ops);
        // Pending rows (first discovery of each infohash wins).
        let mut seen = std::collections::HashSet::new();
        let (mut p_ih, mut p_src, mut p_at) = (Vec::new(), Vec::new(), Vec::new());
        // Torrent columns.
        let mut t_ih: Vec<&[u8]> = Vec::with_capacity(fetched.len());
        let mut t_name = Vec::with_capacity(fetched.len());
        let mut t_raw = Vec::with_capacity(fetched.len());
        let mut t_size = Vec::with_capacity(fetched.len());
        let mut t_pl = Vec::with_capacity(fetched.len());
        let mut t_priv = Vec::with_capacity(fetched.len());
        let mut t_fc = Vec::with_capacity(fetched.len());
        let mut t_disc = Vec::with_capacity(fetched.len());
        let mut t_fetch = Vec::with_capacity(fetched.len());
        let mut t_src = Vec::with_capacity(fetched.len());
        let mut t_body = Vec::with_capacity(fetched.len());
        // File columns.
        let (mut f_ih, mut f_idx, mut f_path, mut f_raw, mut f_size) = (
            Vec::<&[u8]>::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        let mut g_ih = Vec::<&[u8]>::new();
        for op in ops {
            match op {
                Op::Discovered {
                    infohash,
                    source,
                    at,
                } => {
                    if seen.insert(*infohash) {
                        p_ih.push(&infohash[..]);
                        p_src.push(source.as_str());
                        p_at.push(to_time(*at));
                    }
                }
                Op::Forget { infohash } => g_ih.push(&infohash[..]),
                Op::Fetched(r) => {
                    let t = &r.torrent;
                    let (name, raw) = name_columns(&t.name);
                    t_ih.push(&r.infohash[..]);
                    t_name.push(name);
                    t_raw.push(raw);
                    t_size.push(to_i64(t.total_size, "total size")?);
                    t_pl.push(to_i64(t.piece_length, "piece length")?);
                    t_priv.push(t.private);
                    t_fc.push(t.files.len() as i64);
                    t_disc.push(to_time(super::unix_secs(r.discovered_at)));
                    t_fetch.push(to_time(super::unix_secs(r.fetched_at)));
                    t_src.push(r.source.as_str());
                    t_body.push(search_body(t));
                    for (i, f) in t.files.iter().enumerate() {
                        let (path, raw) = path_columns(f);
                        f_ih.push(&r.infohash[..]);
                        f_idx.push(i32::try_from(i).map_err(|_| StoreError::Range("file index"))?);
                        f_path.push(path);
                        f_raw.push(raw);
                        f_size.push(to_i64(f.size, "file size")?);
                    }
                }
            }
        }

        let mut tx = self.client.transaction()?;
        if !p_ih.is_empty() {
            tx.execute(&self.insert_pending, &[&p_ih, &p_src, &p_at])?;
        }
        let mut new = 0;
        if !t_ih.is_empty() {
            let params: [&(dyn ToSql + Sync); 16] = [
                &t_ih, &t_name, &t_raw, &t_size, &t_pl, &t_priv, &t_fc, &t_disc, &t_fetch, &t_src,
                &t_body, &f_ih, &f_idx, &f_path, &f_raw, &f_size,
            ];
            let n: i64 = tx.query_one(&self.insert_torrents, &params)?.get(0);
            new = n as u64;
            tx.execute(&self.delete_pending, &[&t_ih])?;
        }
        if !g_ih.is_empty() {
            tx.execute(&self.delete_pending, &[&g_ih])?;
        }
        tx.commit()?;
        Ok(new)
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        // Commits are durable once acknowledged (synchronous_commit = on,
        // the server default).
        Ok(())
    }

    fn maintain(&mut self, max_pending: i64) -> Result<(), StoreError> {
        // The server checkpoints and autovacuums on its own; the pending
        // table is kept bounded here, oldest discoveries first.
        self.client.execute(
            "DELETE FROM pending WHERE infohash IN (
                 SELECT infohash FROM pending ORDER BY discovered_at
                 LIMIT greatest(0, (SELECT count(*) FROM pending) - $1))",
            &[&max_pending],
        )?;
        Ok(())
    }

    fn search(&mut self, tokens: &[String], limit: usize) -> Result<Vec<SearchHit>, StoreError> {
        // tsquery input syntax with quoted lexemes: no parsing or stemming
        // is applied to them, so they match the stored tokens exactly.
        let query = tokens
            .iter()
            .map(|t| format!("'{}'", t.replace('\\', "\\\\").replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(" & ");
        let rows = self.client.query(
            "SELECT infohash, name, total_size, file_count, source, fetched_at
             FROM torrents
             WHERE search @@ $1::text::tsquery
             ORDER BY ts_rank(search, $1::text::tsquery) DESC, infohash
             LIMIT $2",
            &[&query, &(limit.min(i64::MAX as usize) as i64)],
        )?;
        rows.iter()
            .map(|row| {
                Ok(SearchHit {
                    infohash: infohash(row, 0)?,
                    name: row.try_get(1)?,
                    total_size: row.try_get::<_, i64>(2)? as u64,
                    file_count: row.try_get::<_, i64>(3)? as u64,
                    source: source(row, 4)?,
                    fetched_at: row.try_get(5)?,
                })
            })
            .collect()
    }

    fn stats(&mut self, now: i64) -> Result<Stats, StoreError> {
        let mut s = Stats::default();
        let row = self.client.query_one(
            "SELECT count(*), coalesce(sum(file_count), 0)::int8, min(fetched_at), max(fetched_at),
                    count(*) FILTER (WHERE fetched_at >= $1),
                    count(*) FILTER (WHERE fetched_at >= $2)
             FROM torrents",
            &[&to_time(now - 3600), &to_time(now - 86_400)],
        )?;
        s.torrents = row.try_get::<_, i64>(0)? as u64;
        s.files = row.try_get::<_, i64>(1)? as u64;
        s.first_fetched = row.try_get(2)?;
        s.last_fetched = row.try_get(3)?;
        s.fetched_last_hour = row.try_get::<_, i64>(4)? as u64;
        s.fetched_last_day = row.try_get::<_, i64>(5)? as u64;
        for row in self
            .client
            .query("SELECT source, count(*) FROM torrents GROUP BY source", &[])?
        {
            let src = source(&row, 0)?;
            let n = row.try_get::<_, i64>(1)? as u64;
            for (s, count) in &mut s.by_source {
                if *s == src {
                    *count = n;
                }
            }
        }
        s.pending = self
            .client
            .query_one("SELECT count(*) FROM pending", &[])?
            .try_get::<_, i64>(0)? as u64;
        s.db_bytes = self
            .client
            .query_one(
                "SELECT (pg_total_relation_size('torrents') + pg_total_relation_size('files')
                         + pg_total_relation_size('pending'))::int8",
                &[],
            )?
            .try_get::<_, i64>(0)? as u64;
        Ok(s)
    }

    fn pending(&mut self, limit: usize) -> Result<Vec<PendingEntry>, StoreError> {
        let rows = self.client.query(
            "SELECT infohash, source, discovered_at FROM pending
             ORDER BY discovered_at, infohash LIMIT $1",
            &[&(limit.min(i64::MAX as usize) as i64)],
        )?;
        rows.iter()
            .map(|row| {
                Ok(PendingEntry {
                    infohash: infohash(row, 0)?,
                    source: source(row, 1)?,
                    discovered_at: row.try_get(2)?,
                })
            })
            .collect()
    }

    fn is_known(&mut self, ih: &[u8; 20]) -> Result<bool, StoreError> {
        let row = self.client.query_one(
            "SELECT EXISTS (SELECT 1 FROM torrents WHERE infohash = $1)
                 OR EXISTS (SELECT 1 FROM pending WHERE infohash = $1)",
            &[&&ih[..]],
        )?;
        Ok(row.try_get(0)?)
    }

    fn infohashes(&mut self, sink: &mut dyn FnMut([u8; 20])) -> Result<u64, StoreError> {
        let mut n = 0;
        for row in self.client.query("SELECT infohash FROM torrents", &[])? {
            let b: &[u8] = row.get(0);
            let ih: [u8; 20] = b
                .try_into()
                .map_err(|_| StoreError::Corrupt("infohash is not 20 bytes".into()))?;
            sink(ih);
            n += 1;
        }
        Ok(n)
    }

    fn export(&mut self, sink: &mut ExportSink<'_>) -> Result<u64, StoreError> {
        // One snapshot; rows are streamed, not collected.
        let mut tx = self
            .client
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let mut rows = tx.query_raw(
            "SELECT t.infohash, t.name, t.total_size,
                    extract(epoch FROM t.discovered_at)::int8,
                    extract(epoch FROM t.fetched_at)::int8, t.source, f.path, f.size
             FROM torrents t LEFT JOIN files f ON f.infohash = t.infohash
             ORDER BY t.infohash, f.idx",
            std::iter::empty::<&(dyn ToSql + Sync)>(),
        )?;
        let mut count = 0;
        let mut cur: Option<ExportRow> = None;
        while let Some(row) = rows.next()? {
            let ih = infohash(&row, 0)?;
            if cur.as_ref().is_none_or(|c| c.infohash != ih) {
                if let Some(done) = cur.take() {
                    sink(done)?;
                    count += 1;
                }
                cur = Some(ExportRow {
                    infohash: ih,
                    name: row.try_get(1)?,
                    size: row.try_get::<_, i64>(2)? as u64,
                    files: Vec::new(),
                    discovered_at: row.try_get(3)?,
                    fetched_at: row.try_get(4)?,
                    source: source(&row, 5)?,
                });
            }
            if let (Some(c), Some(path)) = (cur.as_mut(), row.try_get::<_, Option<String>>(6)?) {
                c.files.push((path, row.try_get::<_, i64>(7)? as u64));
            }
        }
        drop(rows);
        if let Some(done) = cur.take() {
            sink(done)?;
            count += 1;
        }
        tx.commit()?;
        Ok(count)
    }
}
