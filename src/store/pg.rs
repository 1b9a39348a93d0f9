//! PostgreSQL back end (tokio-postgres on a private current-thread runtime,
//! no TLS).
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
//!
//! # Faults
//!
//! The synchronous `postgres` client bounds only the TCP connect: a server
//! that accepts and never answers, or a connection that went half-open
//! mid-statement, would block its caller forever. So this back end drives
//! tokio-postgres itself and puts a client-side deadline on every call
//! ([`PgTimeouts`]): the whole connection set-up, and (writer) each call at
//! `statement_timeout` plus a grace. TCP keepalives and `TCP_USER_TIMEOUT`
//! let the kernel notice a dead peer too. A call that times out or finds the
//! connection closed drops it; the next call connects again, and the writer
//! thread's retries (with backoff) make that "reconnect and resume".
//!
//! This file is about 900 lines: one back end, every `Backend` method with
//! its SQL, plus the connection deadlines that make each call bounded.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_lite::StreamExt;
use tokio::runtime::Runtime;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

use super::model::ToClassify;
use super::writer::Counters;
use crate::category::Category;

use super::{
    dedup_fetched, from_unix_secs, name_columns, path_columns, search_body, to_i64, Backend,
    ExportGroups, ExportRow, ExportSink, Op, PendingEntry, PgTimeouts, SearchHit, SearchPage,
    SortKey, Source, Stats, StoreError, TorrentDetail, SCHEMA_VERSION, SEARCH_COUNT_CAP,
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
    // Version 2: BEP 33 estimates, and the indexes prune, filters and the
    // web side sort by.
    "ALTER TABLE torrents ADD COLUMN seeders integer;
    ALTER TABLE torrents ADD COLUMN leechers integer;
    ALTER TABLE torrents ADD COLUMN scraped_at timestamptz;
    CREATE INDEX torrents_seeders ON torrents (seeders);
    CREATE INDEX torrents_discovered_at ON torrents (discovered_at);
    CREATE INDEX torrents_total_size ON torrents (total_size);",
    // Version 3: the inferred category (crate::category), filled for
    // older rows by `classify_batch`, when the writer connects, after the migration.
    "ALTER TABLE torrents ADD COLUMN category integer;
    CREATE INDEX torrents_category ON torrents (category, discovered_at);",
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
                              file_count, discovered_at, fetched_at, source, search, category)
        SELECT u.ih, u.name, u.raw, u.size, u.pl, u.priv, u.fc, u.disc, u.fet, u.src,
               array_to_tsvector(string_to_array(u.body, ' ')), u.cat
        FROM unnest($1::bytea[], $2::text[], $3::bytea[], $4::int8[], $5::int8[], $6::bool[],
                    $7::int8[], $8::timestamptz[], $9::timestamptz[], $10::text[], $11::text[],
                    $17::int4[])
             AS u (ih, name, raw, size, pl, priv, fc, disc, fet, src, body, cat)
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

/// BEP 33 estimates: a newer one replaces an older one; an infohash not
/// stored matches no row.
const UPDATE_SCRAPED: &str = "
    UPDATE torrents t SET seeders = u.s, leechers = u.l, scraped_at = u.at
    FROM unnest($1::bytea[], $2::int4[], $3::int4[], $4::timestamptz[]) AS u (ih, s, l, at)
    WHERE t.infohash = u.ih AND (t.scraped_at IS NULL OR t.scraped_at <= u.at)";

/// Which connection this is: the writer's (migrations, `statement_timeout`,
/// a client-side deadline on every call) or the read side's (searches,
/// stats and exports may legitimately run long: its connection set-up and
/// keepalives are bounded, its statements are not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Writer,
    Reader,
}

/// An open session and its prepared statements.
struct Conn {
    client: Client,
    insert_pending: Statement,
    insert_torrents: Statement,
    delete_pending: Statement,
}

pub(super) struct PgBackend {
    config: Config,
    timeouts: PgTimeouts,
    role: Role,
    /// Drives the connection, only while a call is in progress.
    rt: Runtime,
    /// None after a loss: the next call connects again.
    conn: Option<Conn>,
    /// A connection was made before (so the next one is a reconnect).
    connected_once: bool,
    counters: Arc<Counters>,
}

/// tokio-postgres's keepalive idle time when the URL does not set one.
const LIBRARY_KEEPALIVE_IDLE: Duration = Duration::from_secs(2 * 60 * 60);

/// Applies `t` to `config` wherever the URL did not set the value itself.
fn apply_timeouts(config: &mut Config, t: &PgTimeouts) {
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(t.connect);
    }
    config.keepalives(true);
    if config.get_keepalives_idle() == LIBRARY_KEEPALIVE_IDLE {
        config.keepalives_idle(t.keepalive_idle);
    }
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(t.keepalive_interval);
    }
    if config.get_keepalives_retries().is_none() {
        config.keepalives_retries(t.keepalive_retries);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(t.tcp_user_timeout);
    }
}

/// The writer session's `SET statement_timeout`, unless the URL's `options`
/// set one.
fn statement_timeout_sql(config: &Config, t: &PgTimeouts) -> Option<String> {
    if config
        .get_options()
        .is_some_and(|o| o.contains("statement_timeout"))
    {
        return None;
    }
    Some(format!(
        "SET statement_timeout = {}",
        t.statement.as_millis()
    ))
}

/// Runs `fut` to completion on `rt`, failing with [`StoreError::Timeout`]
/// past `deadline`.
fn block<T>(
    rt: &Runtime,
    deadline: Option<Duration>,
    what: &'static str,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match deadline {
        None => rt.block_on(fut),
        Some(after) => rt.block_on(async {
            tokio::time::timeout(after, fut)
                .await
                .unwrap_or(Err(StoreError::Timeout { what, after }))
        }),
    }
}

impl PgBackend {
    /// Connects; the writer's connection (which runs the migrations) is
    /// opened first. Fails if the server cannot be reached now: a crawler
    /// that cannot reach its database at start says so instead of waiting.
    pub(super) fn open(
        url: &str,
        role: Role,
        timeouts: PgTimeouts,
        counters: Arc<Counters>,
    ) -> Result<PgBackend, StoreError> {
        let mut config: Config = url.parse()?;
        apply_timeouts(&mut config, &timeouts);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut b = PgBackend {
            config,
            timeouts,
            role,
            rt,
            conn: None,
            connected_once: false,
            counters,
        };
        b.connect()?;
        Ok(b)
    }

    /// The client-side deadline of one call.
    fn call_deadline(&self) -> Option<Duration> {
        match self.role {
            Role::Writer => Some(self.timeouts.statement + self.timeouts.reply_grace),
            Role::Reader => None,
        }
    }

    fn connect_deadline(&self) -> Duration {
        self.config
            .get_connect_timeout()
            .copied()
            .unwrap_or(self.timeouts.connect)
    }

    fn connect(&mut self) -> Result<(), StoreError> {
        self.conn = None;
        let connect_deadline = self.connect_deadline();
        let connecting = self.config.connect(NoTls);
        let (mut client, connection) =
            block(&self.rt, Some(connect_deadline), "connecting", async {
                Ok(connecting.await?)
            })?;
        // Runs only while a call blocks on the runtime, which is when its
        // messages are needed.
        self.rt.spawn(async move {
            if let Err(e) = connection.await {
                log::debug!("postgres connection ended: {e}");
            }
        });
        let role = self.role;
        let set_timeout = statement_timeout_sql(&self.config, &self.timeouts);
        let setup = async move {
            if role == Role::Writer {
                if let Some(sql) = set_timeout {
                    client.batch_execute(&sql).await?;
                }
                run_migrations(&mut client).await?;
            }
            Ok(Conn {
                insert_pending: client.prepare(INSERT_PENDING).await?,
                insert_torrents: client.prepare(INSERT_TORRENTS).await?,
                delete_pending: client.prepare(DELETE_PENDING).await?,
                client,
            })
        };
        let deadline = self.call_deadline().unwrap_or(connect_deadline);
        let conn = block(&self.rt, Some(deadline), "setting up the session", setup)?;
        if role == Role::Writer {
            // Rows from before categories, a batch per call: each within
            // the statement deadline, however large the store.
            let mut done = 0u64;
            loop {
                let n = block(
                    &self.rt,
                    Some(deadline),
                    "classifying older torrents",
                    classify_batch(&conn.client),
                )?;
                if n == 0 {
                    break;
                }
                done += n;
            }
            if done > 0 {
                log::info!("postgres: classified {done} torrents stored before categories existed");
            }
        }
        if self.connected_once {
            self.counters.reconnected("postgres");
            log::info!("postgres: reconnected ({:?} connection)", self.role);
        }
        self.connected_once = true;
        self.conn = Some(conn);
        Ok(())
    }

    /// Runs `op` on a live connection (connecting first if the last one was
    /// lost), with this role's deadline. A timeout or a closed connection
    /// drops the connection, so the next call starts afresh. On the read
    /// side, a call that found an old connection dead (the server restarted
    /// since the last call) is run once more on a new one when `rerun` says
    /// it can be (the writer's own retries cover the write side).
    fn with_conn<T>(
        &mut self,
        rerun: bool,
        mut op: impl FnMut(&Runtime, Option<Duration>, &mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        loop {
            let fresh = if self.conn.as_ref().is_none_or(|c| c.client.is_closed()) {
                self.connect()?;
                true
            } else {
                false
            };
            let deadline = self.call_deadline();
            let Some(conn) = self.conn.as_mut() else {
                return Err(StoreError::Closed);
            };
            let r = op(&self.rt, deadline, conn);
            let Err(e) = &r else {
                return r;
            };
            let lost = matches!(e, StoreError::Timeout { .. })
                || matches!(e, StoreError::Postgres(pe) if pe.is_closed())
                || conn.client.is_closed();
            if !lost {
                return r;
            }
            log::warn!("postgres: dropping the {:?} connection: {e}", self.role);
            self.conn = None;
            if fresh || !rerun || self.role == Role::Writer {
                return r;
            }
        }
    }
}

/// Rows per statement while older rows are classified.
const CLASSIFY_BATCH: i64 = 5_000;

/// Gives up to [`CLASSIFY_BATCH`] torrents stored before schema version 3
/// their category; returns how many (0: none left). The category index
/// finds the rows without one in any order (ordering them would sort every
/// such row for each batch), so a store with none left costs one probe.
async fn classify_batch(client: &Client) -> Result<u64, StoreError> {
    let rows = client
        .query(
            "SELECT t.infohash, t.name, f.path, f.size
             FROM (SELECT infohash, name FROM torrents WHERE category IS NULL LIMIT $1) t
             LEFT JOIN files f ON f.infohash = t.infohash
             ORDER BY t.infohash, f.idx",
            &[&CLASSIFY_BATCH],
        )
        .await?;
    let mut torrents: Vec<ToClassify<Vec<u8>>> = Vec::new();
    for r in &rows {
        let path: Option<String> = r.try_get(2)?;
        let size: Option<i64> = r.try_get(3)?;
        ToClassify::push_row(&mut torrents, r.try_get(0)?, r.try_get(1)?, path.zip(size));
    }
    if torrents.is_empty() {
        return Ok(0);
    }
    let ihs: Vec<&[u8]> = torrents.iter().map(|t| t.key.as_slice()).collect();
    let cats: Vec<i32> = torrents
        .iter()
        .map(|t| t.category().newznab_id() as i32)
        .collect();
    client
        .execute(
            "UPDATE torrents t SET category = u.c
             FROM unnest($1::bytea[], $2::int4[]) AS u (ih, c) WHERE t.infohash = u.ih",
            &[&ihs, &cats],
        )
        .await?;
    Ok(torrents.len() as u64)
}

async fn run_migrations(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    // Serializes concurrent openers of the same schema (CREATE TABLE IF NOT
    // EXISTS is not safe against a concurrent identical CREATE).
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('dht_hunter:' || coalesce(current_schema(), '')))",
        &[],
    )
    .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version bigint NOT NULL)")
        .await?;
    let current: i64 = tx
        .query_one(
            "SELECT coalesce(max(version), 0)::int8 FROM schema_version",
            &[],
        )
        .await?
        .get(0);
    if current > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    for sql in MIGRATIONS.iter().skip(current.max(0) as usize) {
        tx.batch_execute(sql).await?;
    }
    if current < SCHEMA_VERSION {
        tx.execute("DELETE FROM schema_version", &[]).await?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&SCHEMA_VERSION],
        )
        .await?;
        log::info!("postgres schema migrated from version {current} to {SCHEMA_VERSION}");
    }
    tx.commit().await?;
    Ok(())
}

fn infohash(row: &Row, idx: usize) -> Result<[u8; 20], StoreError> {
    let v: &[u8] = row.try_get(idx)?;
    v.try_into()
        .map_err(|_| StoreError::Corrupt(format!("infohash of {} bytes", v.len())))
}

fn source(row: &Row, idx: usize) -> Result<Source, StoreError> {
    Ok(row.try_get::<_, &str>(idx)?.parse()?)
}

/// The columns [`hit`] reads, in its order (`t` is `torrents`).
const HIT_COLUMNS: &str = "t.infohash, t.name, t.total_size, t.file_count, t.source, \
     t.discovered_at, t.fetched_at, t.seeders, t.leechers, t.scraped_at, t.category";

/// A search hit from the first columns of `row` ([`HIT_COLUMNS`]).
fn hit(row: &Row) -> Result<SearchHit, StoreError> {
    let count = |i: usize| -> Result<Option<u32>, StoreError> {
        Ok(row.try_get::<_, Option<i32>>(i)?.map(|n| n.max(0) as u32))
    };
    Ok(SearchHit {
        infohash: infohash(row, 0)?,
        name: row.try_get(1)?,
        total_size: row.try_get::<_, i64>(2)? as u64,
        file_count: row.try_get::<_, i64>(3)? as u64,
        source: source(row, 4)?,
        discovered_at: row.try_get(5)?,
        fetched_at: row.try_get(6)?,
        seeders: count(7)?,
        leechers: count(8)?,
        scraped_at: row.try_get(9)?,
        category: Category::from_stored(row.try_get::<_, Option<i32>>(10)?.map(i64::from)),
    })
}

fn to_time(secs: i64) -> SystemTime {
    from_unix_secs(secs)
}

/// A seeders/leechers column (`integer`, NULL until scraped).
fn count_column(row: &tokio_postgres::Row, idx: usize) -> Result<Option<u32>, StoreError> {
    Ok(row
        .try_get::<_, Option<i32>>(idx)?
        .map(|v| u32::try_from(v).unwrap_or(0)))
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
        let mut t_cat = Vec::with_capacity(fetched.len());
        // File columns.
        let (mut f_ih, mut f_idx, mut f_path, mut f_raw, mut f_size) = (
            Vec::<&[u8]>::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        let mut g_ih = Vec::<&[u8]>::new();
        // Scrapes: the newest one per infohash (one UPDATE may not touch a
        // row twice; the newest wins, as across batches).
        let mut scrapes: std::collections::HashMap<[u8; 20], (i32, i32, i64)> =
            std::collections::HashMap::new();
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
                Op::Scraped {
                    infohash,
                    seeders,
                    leechers,
                    at,
                } => {
                    let clamp = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
                    let new = (clamp(*seeders), clamp(*leechers), *at);
                    let slot = scrapes.entry(*infohash).or_insert(new);
                    if slot.2 <= *at {
                        *slot = new;
                    }
                }
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
                    t_cat.push(Category::of_torrent(t).newznab_id() as i32);
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

        let (mut s_ih, mut s_s, mut s_l, mut s_at) =
            (Vec::<&[u8]>::new(), Vec::new(), Vec::new(), Vec::new());
        for (infohash, (s, l, at)) in &scrapes {
            s_ih.push(&infohash[..]);
            s_s.push(*s);
            s_l.push(*l);
            s_at.push(to_time(*at));
        }
        self.with_conn(true, |rt, deadline, c| {
            block(rt, deadline, "writing a batch", async {
                let tx = c.client.transaction().await?;
                if !p_ih.is_empty() {
                    tx.execute(&c.insert_pending, &[&p_ih, &p_src, &p_at])
                        .await?;
                }
                let mut new = 0;
                if !t_ih.is_empty() {
                    let params: [&(dyn ToSql + Sync); 17] = [
                        &t_ih, &t_name, &t_raw, &t_size, &t_pl, &t_priv, &t_fc, &t_disc, &t_fetch,
                        &t_src, &t_body, &f_ih, &f_idx, &f_path, &f_raw, &f_size, &t_cat,
                    ];
                    let n: i64 = tx.query_one(&c.insert_torrents, &params).await?.get(0);
                    new = n as u64;
                    tx.execute(&c.delete_pending, &[&t_ih]).await?;
                }
                if !g_ih.is_empty() {
                    tx.execute(&c.delete_pending, &[&g_ih]).await?;
                }
                if !s_ih.is_empty() {
                    tx.execute(UPDATE_SCRAPED, &[&s_ih, &s_s, &s_l, &s_at])
                        .await?;
                }
                tx.commit().await?;
                Ok(new)
            })
        })
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        // Commits are durable once acknowledged (synchronous_commit = on,
        // the server default).
        Ok(())
    }

    fn maintain(&mut self, max_pending: i64) -> Result<(), StoreError> {
        // The server checkpoints and autovacuums on its own; the pending
        // table is kept bounded here, oldest discoveries first.
        self.with_conn(true, |rt, deadline, c| {
            block(rt, deadline, "pruning pending", async {
                c.client
                    .execute(
                        "DELETE FROM pending WHERE infohash IN (
                             SELECT infohash FROM pending ORDER BY discovered_at
                             LIMIT greatest(0, (SELECT count(*) FROM pending) - $1))",
                        &[&max_pending],
                    )
                    .await?;
                Ok(())
            })
        })
    }

    fn db_size(&mut self) -> Result<u64, StoreError> {
        // The whole database, as the server counts it on disk (what a disk
        // cap is about), not only this crawler's tables.
        self.with_conn(true, |rt, deadline, c| {
            block(rt, deadline, "measuring the database", async {
                let row = c
                    .client
                    .query_one("SELECT pg_database_size(current_database())::int8", &[])
                    .await?;
                Ok(row.try_get::<_, i64>(0)?.max(0) as u64)
            })
        })
    }

    fn delete(&mut self, infohashes: &[[u8; 20]]) -> Result<u64, StoreError> {
        let ihs: Vec<&[u8]> = infohashes.iter().map(|infohash| &infohash[..]).collect();
        // Files go with their torrent (ON DELETE CASCADE); the search
        // vector is a column of the row.
        self.with_conn(true, |rt, deadline, c| {
            block(rt, deadline, "deleting torrents", async {
                Ok(c.client
                    .execute(
                        "DELETE FROM torrents WHERE infohash = ANY($1::bytea[])",
                        &[&ihs],
                    )
                    .await?)
            })
        })
    }

    fn search_page(
        &mut self,
        tokens: &[String],
        categories: &[Category],
        sort: SortKey,
        offset: usize,
        limit: usize,
    ) -> Result<SearchPage, StoreError> {
        // tsquery input syntax with quoted lexemes: no parsing or stemming
        // is applied to them, so they match the stored tokens exactly.
        let query = tokens
            .iter()
            .map(|t| format!("'{}'", t.replace('\\', "\\\\").replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(" & ");
        let order = match sort {
            SortKey::Relevance if !tokens.is_empty() => {
                "ts_rank(t.search, $1::text::tsquery) DESC, t.infohash DESC"
            }
            SortKey::Relevance | SortKey::Discovered => "t.discovered_at DESC, t.infohash DESC",
            SortKey::Size => "t.total_size DESC, t.infohash DESC",
            SortKey::Seeders => "t.seeders DESC NULLS LAST, t.infohash DESC",
        };
        // Without words every torrent matches ($1 is then unused but typed).
        let filter = if tokens.is_empty() {
            "$1::text IS NOT NULL"
        } else {
            "t.search @@ $1::text::tsquery"
        };
        // With words, as on SQLite: the SEARCH_COUNT_CAP most recently
        // stored matches, then ranked or sorted (ts_rank of every match of
        // two common words took 267 ms p99 on 1M torrents).
        // A category filter applies to what the window holds.
        let cat = super::category_clause(categories);
        let window = format!(
            "(SELECT * FROM torrents t WHERE {filter}
              ORDER BY t.fetched_at DESC, t.infohash DESC LIMIT {SEARCH_COUNT_CAP}) t"
        );
        let words_and_cats = !tokens.is_empty() && !categories.is_empty();
        let sql = if tokens.is_empty() {
            format!(
                "SELECT {HIT_COLUMNS} FROM torrents t WHERE {filter}{cat} ORDER BY {order} LIMIT $2 OFFSET $3"
            )
        } else {
            // With a category, the window's matches of it are counted in
            // the same pass (column 11), not by scanning the window again.
            let in_window = if words_and_cats {
                ", count(*) OVER () AS n"
            } else {
                ""
            };
            format!(
                "SELECT {HIT_COLUMNS}{in_window} FROM {window} WHERE 1 = 1{cat}
                 ORDER BY {order} LIMIT $2 OFFSET $3"
            )
        };
        // Without words the category is part of what is counted; with
        // words the count says whether the window was full.
        let count_cat = if tokens.is_empty() { cat.as_str() } else { "" };
        let count_sql = format!(
            "SELECT count(*) FROM (SELECT 1 FROM torrents t WHERE {filter}{count_cat} LIMIT $2) m"
        );
        // A page past the end counts the window's matches apart.
        let window_count_sql = format!("SELECT count(*) FROM {window} WHERE 1 = 1{cat}");
        // One more than asked: whether there is a next page.
        let want = super::sql_int(limit.saturating_add(1));
        let offset = super::sql_int(offset);
        let cap = super::search_count_probe();
        let (rows, counted, in_window) = self.with_conn(true, |rt, deadline, c| {
            block(rt, deadline, "searching", async {
                let rows = c.client.query(&sql, &[&query, &want, &offset]).await?;
                let counted: i64 = c
                    .client
                    .query_one(&count_sql, &[&query, &cap])
                    .await?
                    .try_get(0)?;
                let in_window: Option<i64> = match rows.first() {
                    _ if !words_and_cats => None,
                    Some(r) => Some(r.try_get(11)?),
                    None if offset == 0 => Some(0),
                    None => Some(
                        c.client
                            .query_one(&window_count_sql, &[&query])
                            .await?
                            .try_get(0)?,
                    ),
                };
                Ok((rows, counted, in_window))
            })
        })?;
        let hits = rows.iter().map(hit).collect::<Result<Vec<_>, _>>()?;
        Ok(match in_window {
            Some(n) => {
                SearchPage::from_rows(hits, limit, n).window_full(counted > SEARCH_COUNT_CAP as i64)
            }
            None => SearchPage::from_rows(hits, limit, counted),
        })
    }

    fn torrent(
        &mut self,
        infohash: &[u8; 20],
        max_files: usize,
    ) -> Result<Option<TorrentDetail>, StoreError> {
        let sql = format!(
            "SELECT {HIT_COLUMNS}, t.piece_length, t.private FROM torrents t WHERE t.infohash = $1"
        );
        let max_files = super::sql_int(max_files);
        let found = self.with_conn(true, |rt, deadline, c| {
            block(rt, deadline, "reading a torrent", async {
                let Some(row) = c.client.query_opt(&sql, &[&&infohash[..]]).await? else {
                    return Ok(None);
                };
                let files = c
                    .client
                    .query(
                        "SELECT path, size FROM files WHERE infohash = $1 ORDER BY idx LIMIT $2",
                        &[&&infohash[..], &max_files],
                    )
                    .await?;
                Ok(Some((row, files)))
            })
        })?;
        let Some((row, files)) = found else {
            return Ok(None);
        };
        Ok(Some(TorrentDetail {
            hit: hit(&row)?,
            piece_length: row.try_get::<_, i64>(11)? as u64,
            private: row.try_get(12)?,
            files: files
                .iter()
                .map(|f| Ok((f.try_get(0)?, f.try_get::<_, i64>(1)? as u64)))
                .collect::<Result<_, StoreError>>()?,
        }))
    }

    fn fetched_histogram(
        &mut self,
        since: i64,
        bucket: i64,
    ) -> Result<Vec<(i64, u64)>, StoreError> {
        let rows = self.with_conn(true, |rt, deadline, c| {
            block(rt, deadline, "reading the harvest histogram", async {
                Ok(c.client
                    .query(
                        "SELECT (floor(extract(epoch FROM fetched_at) / $2::int8) * $2::int8)::int8 AS b,
                                count(*)
                         FROM torrents WHERE fetched_at >= $1 GROUP BY b ORDER BY b",
                        &[&to_time(since), &bucket.max(1)],
                    )
                    .await?)
            })
        })?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get::<_, i64>(1)? as u64)))
            .collect()
    }

    fn stats(&mut self, now: i64) -> Result<Stats, StoreError> {
        self.with_conn(true, |rt, deadline, c| {
            block(rt, deadline, "reading stats", async {
                let client = &c.client;
                let mut s = Stats::default();
                let row = client
                    .query_one(
                        "SELECT count(*), coalesce(sum(file_count), 0)::int8, min(fetched_at),
                                max(fetched_at),
                                count(*) FILTER (WHERE fetched_at >= $1),
                                count(*) FILTER (WHERE fetched_at >= $2)
                         FROM torrents",
                        &[&to_time(now - 3600), &to_time(now - 86_400)],
                    )
                    .await?;
                s.torrents = row.try_get::<_, i64>(0)? as u64;
                s.files = row.try_get::<_, i64>(1)? as u64;
                s.first_fetched = row.try_get(2)?;
                s.last_fetched = row.try_get(3)?;
                s.fetched_last_hour = row.try_get::<_, i64>(4)? as u64;
                s.fetched_last_day = row.try_get::<_, i64>(5)? as u64;
                for row in client
                    .query("SELECT source, count(*) FROM torrents GROUP BY source", &[])
                    .await?
                {
                    s.set_stored_from(source(&row, 0)?, row.try_get::<_, i64>(1)? as u64);
                }
                s.pending = client
                    .query_one("SELECT count(*) FROM pending", &[])
                    .await?
                    .try_get::<_, i64>(0)? as u64;
                s.db_bytes = client
                    .query_one(
                        "SELECT (pg_total_relation_size('torrents')
                                 + pg_total_relation_size('files')
                                 + pg_total_relation_size('pending'))::int8",
                        &[],
                    )
                    .await?
                    .try_get::<_, i64>(0)? as u64;
                Ok(s)
            })
        })
    }

    fn pending(&mut self, limit: usize) -> Result<Vec<PendingEntry>, StoreError> {
        let rows = self.with_conn(true, |rt, deadline, c| {
            block(rt, deadline, "reading pending", async {
                Ok(c.client
                    .query(
                        "SELECT infohash, source, discovered_at FROM pending
                         ORDER BY discovered_at, infohash LIMIT $1",
                        &[&super::sql_int(limit)],
                    )
                    .await?)
            })
        })?;
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

    fn is_known(&mut self, infohash: &[u8; 20]) -> Result<bool, StoreError> {
        self.with_conn(true, |rt, deadline, c| {
            block(rt, deadline, "looking up an infohash", async {
                let row = c
                    .client
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM torrents WHERE infohash = $1)
                             OR EXISTS (SELECT 1 FROM pending WHERE infohash = $1)",
                        &[&&infohash[..]],
                    )
                    .await?;
                Ok(row.try_get(0)?)
            })
        })
    }

    fn infohashes(&mut self, sink: &mut dyn FnMut([u8; 20])) -> Result<u64, StoreError> {
        // Not rerun: the sink may have taken infohashes already.
        self.with_conn(false, |rt, deadline, c| {
            block(rt, deadline, "reading infohashes", async {
                let rows = c
                    .client
                    .query_raw(
                        "SELECT infohash FROM torrents",
                        std::iter::empty::<&(dyn ToSql + Sync)>(),
                    )
                    .await?;
                let mut rows = std::pin::pin!(rows);
                let mut n = 0;
                while let Some(row) = rows.next().await {
                    sink(infohash(&row?, 0)?);
                    n += 1;
                }
                Ok(n)
            })
        })
    }

    fn export(&mut self, sink: &mut ExportSink<'_>) -> Result<u64, StoreError> {
        // Not rerun: the sink may have written rows already.
        self.with_conn(false, |rt, deadline, c| {
            block(rt, deadline, "exporting", async {
                // One snapshot; rows are streamed, not collected.
                let tx = c
                    .client
                    .build_transaction()
                    .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
                    .await?;
                let rows = tx
                    .query_raw(
                        "SELECT t.infohash, t.name, t.total_size,
                                extract(epoch FROM t.discovered_at)::int8,
                                extract(epoch FROM t.fetched_at)::int8, t.source, f.path, f.size,
                                t.seeders, t.leechers, extract(epoch FROM t.scraped_at)::int8
                         FROM torrents t LEFT JOIN files f ON f.infohash = t.infohash
                         ORDER BY t.infohash, f.idx",
                        std::iter::empty::<&(dyn ToSql + Sync)>(),
                    )
                    .await?;
                let mut rows = std::pin::pin!(rows);
                let mut groups = ExportGroups::new(sink);
                while let Some(row) = rows.next().await {
                    let row = row?;
                    let infohash = infohash(&row, 0)?;
                    let file = match row.try_get::<_, Option<String>>(6)? {
                        Some(path) => Some((path, row.try_get::<_, i64>(7)? as u64)),
                        None => None,
                    };
                    groups.row(
                        infohash,
                        || {
                            Ok(ExportRow {
                                infohash,
                                name: row.try_get(1)?,
                                size: row.try_get::<_, i64>(2)? as u64,
                                files: Vec::new(),
                                discovered_at: row.try_get(3)?,
                                fetched_at: row.try_get(4)?,
                                source: source(&row, 5)?,
                                seeders: count_column(&row, 8)?,
                                leechers: count_column(&row, 9)?,
                                scraped_at: row.try_get(10)?,
                            })
                        },
                        file,
                    )?;
                }
                let count = groups.finish()?;
                tx.commit().await?;
                Ok(count)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Instant;

    #[test]
    fn timeouts_are_applied_unless_the_url_sets_them() {
        let t = PgTimeouts::default();
        let mut c: Config = "postgres://u:p@127.0.0.1:5432/db".parse().unwrap();
        apply_timeouts(&mut c, &t);
        assert_eq!(c.get_connect_timeout(), Some(&t.connect));
        assert!(c.get_keepalives());
        assert_eq!(c.get_keepalives_idle(), t.keepalive_idle);
        assert_eq!(c.get_keepalives_interval(), Some(t.keepalive_interval));
        assert_eq!(c.get_keepalives_retries(), Some(t.keepalive_retries));
        assert_eq!(c.get_tcp_user_timeout(), Some(&t.tcp_user_timeout));
        assert_eq!(
            statement_timeout_sql(&c, &t).as_deref(),
            Some("SET statement_timeout = 60000")
        );

        let mut c: Config = "postgres://u:p@127.0.0.1/db?connect_timeout=3&keepalives_idle=7\
                             &options=-cstatement_timeout%3D5s"
            .parse()
            .unwrap();
        apply_timeouts(&mut c, &t);
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(3)));
        assert_eq!(c.get_keepalives_idle(), Duration::from_secs(7));
        assert_eq!(statement_timeout_sql(&c, &t), None);
    }

    /// A "server" that accepts connections and never says a word: the
    /// TCP connect succeeds, so only a client-side deadline on the whole
    /// set-up (not tokio-postgres's own connect_timeout, which covers the
    /// TCP connect alone) can end the wait.
    #[test]
    fn a_server_that_never_answers_is_bounded_by_the_connect_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = held.clone();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                keep.lock().unwrap().push(s);
            }
        });
        let t = PgTimeouts {
            connect: Duration::from_millis(300),
            ..PgTimeouts::default()
        };
        let url = format!("postgres://u:p@127.0.0.1:{port}/db");
        for _ in 0..2 {
            let started = Instant::now();
            let err = PgBackend::open(&url, Role::Writer, t, Arc::default())
                .err()
                .unwrap();
            let took = started.elapsed();
            assert!(
                matches!(
                    err,
                    StoreError::Timeout {
                        what: "connecting",
                        ..
                    }
                ),
                "{err}"
            );
            assert!(took >= Duration::from_millis(300), "{took:?}");
            assert!(took < Duration::from_secs(5), "{took:?}");
            // Transient: the writer retries it.
            assert!(matches!(
                super::super::writer::classify(&err),
                super::super::writer::Fault::Transient("timeout")
            ));
        }
        // The connections were accepted: the wait was past the TCP connect.
        assert_eq!(held.lock().unwrap().len(), 2);
    }
}
