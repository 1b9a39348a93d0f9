//! Store tests, run against both back ends.
//!
//! SQLite tests always run. PostgreSQL tests need `DHT_HUNTER_TEST_PG`
//! (a URL to a database where the role may create schemas; see
//! `.ci/postgres.sh`). Without it they print a notice and pass, unless `CI`
//! is set, in which case a missing URL fails them so CI cannot skip silently.
//! Each PostgreSQL test works in its own schema, so tests run in parallel;
//! the one that restarts the server (`postgres_restart_mid_run`) runs alone
//! ([`PG_SERVER`]).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dht_hunter::metainfo::{Torrent, TorrentFile, TorrentName};
use dht_hunter::store::{
    ImportReport, PgTimeouts, Source, Store, StoreError, StoreOptions, TorrentRecord,
    SCHEMA_VERSION,
};

/// PostgreSQL tests hold this for reading; the restart test holds it for
/// writing, so no other test sees the server go away.
static PG_SERVER: RwLock<()> = RwLock::new(());

fn pg_shared() -> RwLockReadGuard<'static, ()> {
    PG_SERVER.read().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------- harness

enum Kind {
    Sqlite { dir: PathBuf, path: PathBuf },
    Pg { base: String, schema: String },
}

struct TestDb {
    url: String,
    kind: Kind,
}

fn pg_base() -> Option<String> {
    match std::env::var("DHT_HUNTER_TEST_PG") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but DHT_HUNTER_TEST_PG is not: run `eval \"$(.ci/postgres.sh)\"` first"
            );
            eprintln!("notice: DHT_HUNTER_TEST_PG is unset; skipping PostgreSQL store test");
            None
        }
    }
}

fn pg_admin(base: &str) -> postgres::Client {
    postgres::Client::connect(base, postgres::NoTls).unwrap()
}

impl TestDb {
    fn sqlite(name: &str) -> TestDb {
        let dir =
            std::env::temp_dir().join(format!("dht-hunter-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db.sqlite");
        TestDb {
            url: format!("sqlite:{}", path.display()),
            kind: Kind::Sqlite { dir, path },
        }
    }

    fn postgres(name: &str) -> Option<TestDb> {
        let base = pg_base()?;
        let schema = format!("t_{}_{name}", std::process::id());
        pg_admin(&base)
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};"
            ))
            .unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        Some(TestDb {
            url: format!("{base}{sep}options=-csearch_path%3D{schema}"),
            kind: Kind::Pg { base, schema },
        })
    }

    /// Another, empty database of the same kind.
    fn sibling(&self, suffix: &str) -> TestDb {
        match &self.kind {
            Kind::Sqlite { dir, .. } => {
                let name = format!("{}-{suffix}", dir.file_name().unwrap().to_string_lossy());
                let dir = dir.with_file_name(name);
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).unwrap();
                let path = dir.join("db.sqlite");
                TestDb {
                    url: format!("sqlite:{}", path.display()),
                    kind: Kind::Sqlite { dir, path },
                }
            }
            Kind::Pg { schema, .. } => {
                let name = schema
                    .strip_prefix(&format!("t_{}_", std::process::id()))
                    .unwrap();
                TestDb::postgres(&format!("{name}_{suffix}")).unwrap()
            }
        }
    }

    fn open(&self) -> Store {
        Store::open(&self.url).unwrap()
    }

    fn is_pg(&self) -> bool {
        matches!(self.kind, Kind::Pg { .. })
    }

    /// Runs raw SQL on a side connection (for fault injection and checks).
    fn exec(&self, sql: &str) {
        match &self.kind {
            Kind::Sqlite { path, .. } => {
                rusqlite::Connection::open(path)
                    .unwrap()
                    .execute_batch(sql)
                    .unwrap();
            }
            Kind::Pg { base, schema } => {
                pg_admin(base)
                    .batch_execute(&format!("SET search_path TO {schema}; {sql}"))
                    .unwrap();
            }
        }
    }

    fn query_i64(&self, sql: &str) -> i64 {
        match &self.kind {
            Kind::Sqlite { path, .. } => rusqlite::Connection::open(path)
                .unwrap()
                .query_row(sql, [], |r| r.get(0))
                .unwrap(),
            Kind::Pg { base, schema } => {
                let mut c = pg_admin(base);
                c.batch_execute(&format!("SET search_path TO {schema}"))
                    .unwrap();
                c.query_one(sql, &[]).unwrap().get(0)
            }
        }
    }

    /// Takes the database's write lock on a side connection until the
    /// guard is dropped (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: an
    /// EXCLUSIVE lock on `torrents`, which blocks inserts).
    fn hold_write_lock(&self) -> Box<dyn std::any::Any> {
        match &self.kind {
            Kind::Sqlite { path, .. } => {
                let c = rusqlite::Connection::open(path).unwrap();
                c.execute_batch("BEGIN IMMEDIATE").unwrap();
                Box::new(c)
            }
            Kind::Pg { base, schema } => {
                let mut c = pg_admin(base);
                c.batch_execute(&format!(
                    "SET search_path TO {schema}; BEGIN; LOCK TABLE torrents IN EXCLUSIVE MODE"
                ))
                .unwrap();
                Box::new(c)
            }
        }
    }

    fn query_bytes(&self, sql: &str) -> Option<Vec<u8>> {
        match &self.kind {
            Kind::Sqlite { path, .. } => rusqlite::Connection::open(path)
                .unwrap()
                .query_row(sql, [], |r| r.get(0))
                .unwrap(),
            Kind::Pg { base, schema } => {
                let mut c = pg_admin(base);
                c.batch_execute(&format!("SET search_path TO {schema}"))
                    .unwrap();
                c.query_one(sql, &[]).unwrap().get(0)
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.kind {
            Kind::Sqlite { dir, .. } => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Kind::Pg { base, schema } => {
                if let Ok(mut c) = postgres::Client::connect(base, postgres::NoTls) {
                    let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
                }
            }
        }
    }
}

/// Runs `fn $name(&TestDb)` once per back end.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(&super::TestDb::sqlite(stringify!($name)));
            }
            #[test]
            fn postgres() {
                let _server = super::pg_shared();
                if let Some(db) = super::TestDb::postgres(stringify!($name)) {
                    super::$name(&db);
                }
            }
        }
    )*};
}

both_backends!(
    forget_prune_and_stored_infohashes,
    round_trip,
    dedup,
    pending_resume,
    search,
    export_import_identical,
    import_reports_bad_lines,
    migrations,
    writer_errors_surface,
    nothing_lost_on_close,
    stats,
    poisoned_batch,
    huge_search_vector,
    scrapes_update_stored_rows,
    prune_by_filter_and_age,
    upgrade_from_version_1_keeps_rows,
);

// ---------------------------------------------------------------- helpers

const T0: u64 = 1_795_705_445; // 2026-11-26T15:04:05Z

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn infohash(i: u32) -> [u8; 20] {
    let mut h = [0u8; 20];
    for (k, b) in h.iter_mut().enumerate() {
        *b = (i.rotate_left(k as u32 * 5) as u8) ^ (k as u8);
    }
    h[..4].copy_from_slice(&i.to_be_bytes());
    h
}

fn record(i: u32, name: TorrentName, files: &[(&str, u64)], source: Source) -> TorrentRecord {
    let files: Vec<TorrentFile> = files
        .iter()
        .map(|(p, size)| TorrentFile {
            path: p.split('/').map(TorrentName::from).collect(),
            size: *size,
        })
        .collect();
    TorrentRecord {
        infohash: infohash(i),
        torrent: Torrent {
            name,
            total_size: files.iter().map(|f| f.size).sum(),
            piece_length: 16384,
            private: false,
            files,
        },
        source,
        discovered_at: at(T0 + u64::from(i)),
        fetched_at: at(T0 + u64::from(i) + 60),
    }
}

fn simple(i: u32, name: &str) -> TorrentRecord {
    record(
        i,
        name.into(),
        &[(name, 1000 + u64::from(i))],
        Source::Sample,
    )
}

fn export(store: &Store) -> (u64, Vec<u8>) {
    let mut out = Vec::new();
    let n = store.export_jsonl(&mut out).unwrap();
    (n, out)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs `checks` on `store`; if they fail, the store is leaked rather than
/// closed, so that a writer hung on a dead connection (the bug these tests
/// look for) makes the test fail instead of hang in close().
fn or_leak(store: Store, checks: impl FnOnce(&Store)) -> Store {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| checks(&store))) {
        Ok(()) => store,
        Err(panic) => {
            let _hung = std::mem::ManuallyDrop::new(store);
            std::panic::resume_unwind(panic)
        }
    }
}

fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------- tests

fn round_trip(db: &TestDb) {
    let cp1251: Vec<u8> = vec![0xCF, 0xF0, 0xE8, 0xE2, 0xE5, 0xF2];
    let store = db.open();
    let w = store.writer();
    w.fetched(simple(1, "debian-12.iso")).unwrap();
    w.fetched(record(
        2,
        "Album".into(),
        &[("CD1/01 Intro.flac", 30), ("cover.jpg", 12)],
        Source::Announce,
    ))
    .unwrap();
    let mut raw = record(
        3,
        TorrentName::Raw(cp1251.clone()),
        &[("a.txt", 5)],
        Source::GetPeers,
    );
    raw.torrent.files[0].path = vec![TorrentName::Raw(vec![0x93, 0xFA]), "a.txt".into()];
    raw.torrent.private = true;
    w.fetched(raw).unwrap();
    store.flush().unwrap();

    let s = store.stats().unwrap();
    assert_eq!((s.torrents, s.files, s.pending), (3, 4, 0));

    let (n, out) = export(&store);
    assert_eq!(n, 3);
    let lines: Vec<serde_json::Value> = out
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    let album = lines
        .iter()
        .find(|l| l["infohash"] == hex(&infohash(2)))
        .unwrap();
    let mut keys: Vec<&str> = album
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "discovered_at",
            "fetched_at",
            "files",
            "infohash",
            "name",
            "size",
            "source"
        ]
    );
    assert_eq!(album["name"], "Album");
    assert_eq!(album["size"], 42);
    assert_eq!(album["source"], "announce");
    assert_eq!(album["discovered_at"], "2026-11-26T15:04:07Z");
    assert_eq!(album["fetched_at"], "2026-11-26T15:05:07Z");
    assert_eq!(
        album["files"],
        serde_json::json!([{"path": "CD1/01 Intro.flac", "size": 30}, {"path": "cover.jpg", "size": 12}])
    );
    let rawline = lines
        .iter()
        .find(|l| l["infohash"] == hex(&infohash(3)))
        .unwrap();
    assert_eq!(rawline["name"], "\u{FFFD}".repeat(6));
    assert_eq!(rawline["files"][0]["path"], "\u{FFFD}\u{FFFD}/a.txt");
    // Exported in infohash order.
    let order: Vec<String> = lines
        .iter()
        .map(|l| l["infohash"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);

    // The non-UTF-8 bytes are kept exactly; UTF-8 names store no raw copy.
    let q = |h: [u8; 20], col: &str, table: &str, key: &str| {
        let lit = if db.is_pg() {
            format!("'\\x{}'::bytea", hex(&h))
        } else {
            format!("x'{}'", hex(&h))
        };
        db.query_bytes(&format!("SELECT {col} FROM {table} WHERE {key} = {lit}"))
    };
    assert_eq!(
        q(infohash(3), "name_raw", "torrents", "infohash"),
        Some(cp1251)
    );
    assert_eq!(q(infohash(1), "name_raw", "torrents", "infohash"), None);
    let path_raw_sql = if db.is_pg() {
        format!(
            "SELECT path_raw FROM files WHERE infohash = '\\x{}'::bytea",
            hex(&infohash(3))
        )
    } else {
        format!(
            "SELECT f.path_raw FROM files f JOIN torrents t ON t.id = f.torrent_id WHERE t.infohash = x'{}'",
            hex(&infohash(3))
        )
    };
    assert_eq!(
        db.query_bytes(&path_raw_sql),
        Some(b"\x93\xFA/a.txt".to_vec())
    );
    let private = db.query_i64(&format!(
        "SELECT {} FROM torrents WHERE piece_length = 16384 AND name = '{}'",
        if db.is_pg() {
            "count(*) FILTER (WHERE private)"
        } else {
            "sum(private)"
        },
        "\u{FFFD}".repeat(6)
    ));
    assert_eq!(private, 1);
    store.close().unwrap();
}

fn dedup(db: &TestDb) {
    let store = db.open();
    let w = store.writer();
    // Same infohash twice in one batch, then again in a later batch.
    w.fetched(record(
        7,
        "first".into(),
        &[("a", 1), ("b", 2)],
        Source::Sample,
    ))
    .unwrap();
    w.fetched(record(7, "second".into(), &[("c", 3)], Source::Announce))
        .unwrap();
    store.flush().unwrap();
    w.fetched(record(7, "third".into(), &[("d", 4)], Source::GetPeers))
        .unwrap();
    w.discovered(infohash(7), Source::GetPeers, at(T0)).unwrap();
    store.flush().unwrap();
    let s = store.stats().unwrap();
    assert_eq!((s.torrents, s.files, s.pending), (1, 2, 0));
    assert_eq!(store.search("first", 10).unwrap().len(), 1);
    assert!(store.search("second", 10).unwrap().is_empty());
    assert!(store.search("third", 10).unwrap().is_empty());
    store.close().unwrap();
}

/// What the crawler's restart needs: the stored infohashes (its "never
/// fetch again" filter), `forget` for infohashes it gave up on, and a
/// bounded pending table.
fn forget_prune_and_stored_infohashes(db: &TestDb) {
    let opts = StoreOptions {
        max_pending_rows: 3,
        ..StoreOptions::default()
    };
    let store = Store::open_with(&db.url, opts).unwrap();
    let w = store.writer();
    for i in 1..=3 {
        w.fetched(simple(i, &format!("stored-{i}"))).unwrap();
    }
    for i in 10..16u32 {
        w.discovered(infohash(i), Source::GetPeers, at(T0 + u64::from(i)))
            .unwrap();
    }
    w.forget(infohash(15)).unwrap();
    w.forget(infohash(99)).unwrap(); // never pending: nothing happens
    drop(w);
    store.close().unwrap(); // maintenance runs at shutdown
    let store = Store::open(&db.url).unwrap();
    let mut stored = store.stored_infohashes().unwrap();
    stored.sort_unstable();
    assert_eq!(stored, [infohash(1), infohash(2), infohash(3)]);
    // 10..=14 were pending after the forget; the bound keeps the newest 3.
    let left: Vec<_> = store
        .pending(100)
        .unwrap()
        .iter()
        .map(|p| p.infohash)
        .collect();
    assert_eq!(left, [infohash(12), infohash(13), infohash(14)]);
    store.close().unwrap();
}

fn pending_resume(db: &TestDb) {
    let store = db.open();
    let w = store.writer();
    w.fetched(simple(3, "already-stored")).unwrap();
    w.discovered(infohash(2), Source::Announce, at(T0 + 20))
        .unwrap();
    w.discovered(infohash(1), Source::Sample, at(T0 + 10))
        .unwrap();
    w.discovered(infohash(1), Source::GetPeers, at(T0 + 30))
        .unwrap(); // first sighting wins
    w.discovered(infohash(3), Source::Sample, at(T0)).unwrap(); // stored: not pending
    drop(w);
    store.close().unwrap();

    let store = db.open();
    let pending = store.pending(10).unwrap();
    let got: Vec<_> = pending
        .iter()
        .map(|p| (p.infohash, p.source, p.discovered_at))
        .collect();
    assert_eq!(
        got,
        [
            (infohash(1), Source::Sample, at(T0 + 10)),
            (infohash(2), Source::Announce, at(T0 + 20))
        ]
    );
    assert_eq!(store.pending(1).unwrap().len(), 1);
    assert!(store.is_known(&infohash(1)).unwrap());
    assert!(store.is_known(&infohash(3)).unwrap());
    assert!(!store.is_known(&infohash(99)).unwrap());

    store.writer().fetched(simple(1, "now-fetched")).unwrap();
    store.flush().unwrap();
    let left: Vec<_> = store
        .pending(10)
        .unwrap()
        .iter()
        .map(|p| p.infohash)
        .collect();
    assert_eq!(left, [infohash(2)]);
    assert!(store.is_known(&infohash(1)).unwrap());
    assert_eq!(store.stats().unwrap().pending, 1);
    store.close().unwrap();
}

fn search(db: &TestDb) {
    let store = db.open();
    let w = store.writer();
    w.fetched(record(
        1,
        "Ubuntu 24.04 Desktop amd64".into(),
        &[("ubuntu-24.04-desktop-amd64.iso", 5)],
        Source::Sample,
    ))
    .unwrap();
    w.fetched(record(
        2,
        "Война и мир".into(),
        &[("Том 1/Глава 01.txt", 1), ("Том 2/Глава 01.txt", 1)],
        Source::Sample,
    ))
    .unwrap();
    w.fetched(record(
        3,
        "日本語 ドラマ".into(),
        &[("第1話.mkv", 9)],
        Source::Sample,
    ))
    .unwrap();
    w.fetched(record(
        4,
        "Some Show".into(),
        &[
            ("Season 1/Episode 01.mkv", 9),
            ("Season 1/Extras/Making-Of.mkv", 2),
        ],
        Source::Sample,
    ))
    .unwrap();
    w.fetched(record(
        5,
        "Café Müller".into(),
        &[("cafe.ogg", 9)],
        Source::Sample,
    ))
    .unwrap();
    w.fetched(record(
        6,
        "Ubuntu 22.04 Server".into(),
        &[("ubuntu-22.04-server.iso", 5)],
        Source::Sample,
    ))
    .unwrap();
    store.flush().unwrap();

    let names = |q: &str| -> Vec<String> {
        let mut v: Vec<String> = store
            .search(q, 10)
            .unwrap()
            .into_iter()
            .map(|h| h.name)
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names("ubuntu"),
        ["Ubuntu 22.04 Server", "Ubuntu 24.04 Desktop amd64"]
    );
    assert_eq!(names("UBUNTU desktop"), ["Ubuntu 24.04 Desktop amd64"]);
    assert_eq!(names("ВОЙНА"), ["Война и мир"]);
    assert_eq!(names("глава"), ["Война и мир"]); // file path only
    assert_eq!(names("日本語"), ["日本語 ドラマ"]);
    assert_eq!(names("episode"), ["Some Show"]); // file path only
    assert_eq!(names("making of"), ["Some Show"]);
    assert_eq!(names("müller"), ["Café Müller"]);
    assert_eq!(names("café"), ["Café Müller"]);
    // Whole words only: no prefix matching, no accent folding.
    assert!(names("ubunt").is_empty());
    assert!(names("ubuntu nonexistent").is_empty());
    assert!(names("   ").is_empty());
    assert_eq!(store.search("ubuntu", 1).unwrap().len(), 1);
    let hit = &store.search("müller", 1).unwrap()[0];
    assert_eq!(
        (
            hit.infohash,
            hit.total_size,
            hit.file_count,
            hit.source,
            hit.fetched_at
        ),
        (infohash(5), 9, 1, Source::Sample, at(T0 + 65))
    );
    // Quotes and FTS/tsquery operators in the query are just separators.
    assert_eq!(
        names("\"ubuntu\" AND 'desktop' | !x*"),
        Vec::<String>::new()
    );
    assert_eq!(
        names("\"ubuntu\" 'desktop'"),
        ["Ubuntu 24.04 Desktop amd64"]
    );
    store.close().unwrap();
}

fn sample_records() -> Vec<TorrentRecord> {
    let mut v = vec![
        simple(1, "one.iso"),
        record(
            2,
            "Двa".into(),
            &[("d/ü.txt", 3), ("e.bin", 0)],
            Source::Announce,
        ),
        record(3, "日本".into(), &[("x", 1)], Source::GetPeers),
    ];
    for i in 10..60 {
        let files: Vec<(String, u64)> = (0..(i % 7 + 1))
            .map(|k| {
                (
                    format!("dir {i}/file {k}.dat"),
                    u64::from(i) * 1000 + u64::from(k),
                )
            })
            .collect();
        let files: Vec<(&str, u64)> = files.iter().map(|(p, s)| (p.as_str(), *s)).collect();
        v.push(record(
            i,
            format!("Torrent number {i}").into(),
            &files,
            Source::ALL[i as usize % 3],
        ));
    }
    v
}

fn export_import_identical(db: &TestDb) {
    let store = db.open();
    for r in sample_records() {
        store.writer().fetched(r).unwrap();
    }
    store
        .writer()
        .discovered(infohash(500), Source::Sample, at(T0))
        .unwrap();
    store.flush().unwrap();
    let (n, first) = export(&store);
    assert_eq!(n, 53);
    store.close().unwrap();

    let target = db.sibling("copy");
    let copy = target.open();
    let report = copy.import_jsonl(&mut BufReader::new(&first[..])).unwrap();
    assert_eq!(
        report,
        ImportReport {
            imported: 53,
            duplicates: 0,
            errors: vec![]
        }
    );
    let (_, second) = export(&copy);
    assert_eq!(
        String::from_utf8(first.clone()).unwrap(),
        String::from_utf8(second).unwrap()
    );
    // Importing again is all duplicates (merge semantics).
    let again = copy.import_jsonl(&mut BufReader::new(&first[..])).unwrap();
    assert_eq!((again.imported, again.duplicates), (0, 53));
    copy.close().unwrap();

    // When both back ends are available, they export byte-identical JSONL.
    if !db.is_pg() {
        if let Ok(url) = std::env::var("DHT_HUNTER_TEST_PG") {
            if !url.is_empty() {
                let pg = TestDb::postgres("export_cross").unwrap();
                let pg_store = pg.open();
                for r in sample_records() {
                    pg_store.writer().fetched(r).unwrap();
                }
                pg_store.flush().unwrap();
                assert_eq!(export(&pg_store).1, first);
                pg_store.close().unwrap();
            }
        }
    }
}

/// BEP 33 estimates: an UPDATE of the stored row (the newer estimate
/// wins, an infohash not stored is ignored), read back by search, carried
/// by export and import.
fn scrapes_update_stored_rows(db: &TestDb) {
    let store = db.open();
    let w = store.writer();
    for i in 1..=3 {
        w.fetched(simple(i, &format!("scraped{i} thing"))).unwrap();
    }
    w.scraped(infohash(1), 5, 2, at(T0 + 100)).unwrap();
    w.scraped(infohash(1), 9, 9, at(T0 + 50)).unwrap(); // older: ignored
    w.scraped(infohash(3), 0, 7, at(T0 + 10)).unwrap();
    w.scraped(infohash(3), 1, 8, at(T0 + 20)).unwrap(); // newer: replaces
    w.scraped(infohash(99), 4, 4, at(T0)).unwrap(); // not stored: no row
    store.flush().unwrap();
    let hits = store.search("thing", 10).unwrap();
    let get = |i: u32| hits.iter().find(|h| h.infohash == infohash(i)).unwrap();
    assert_eq!(
        (get(1).seeders, get(1).leechers, get(1).scraped_at),
        (Some(5), Some(2), Some(at(T0 + 100)))
    );
    assert_eq!(
        (get(2).seeders, get(2).leechers, get(2).scraped_at),
        (None, None, None)
    );
    assert_eq!((get(3).seeders, get(3).leechers), (Some(1), Some(8)));
    assert_eq!(db.query_i64("SELECT count(*) FROM torrents"), 3);

    let (n, first) = export(&store);
    assert_eq!(n, 3);
    let text = String::from_utf8(first.clone()).unwrap();
    let line1 = text
        .lines()
        .find(|l| l.contains(&hex(&infohash(1))))
        .unwrap();
    assert!(
        line1.contains(r#""seeders":5,"leechers":2,"scraped_at":"2026-11-26T15:05:45Z""#),
        "{line1}"
    );
    let line2 = text
        .lines()
        .find(|l| l.contains(&hex(&infohash(2))))
        .unwrap();
    assert!(!line2.contains("seeders"), "{line2}");
    store.close().unwrap();

    let target = db.sibling("scrape_copy");
    let copy = target.open();
    let report = copy.import_jsonl(&mut BufReader::new(&first[..])).unwrap();
    assert_eq!((report.imported, report.duplicates), (3, 0), "{report:?}");
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(String::from_utf8(export(&copy).1).unwrap(), text);
    // A line with a partial estimate is refused, with its line number.
    let bad = text.replacen(r#","leechers":2"#, "", 1);
    let report = copy
        .import_jsonl(&mut BufReader::new(bad.as_bytes()))
        .unwrap();
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert!(report.errors[0].1.contains("go together"), "{report:?}");
    copy.close().unwrap();
}

/// `prune`: what the crawl's filter would refuse, or what is older than
/// the cutoff, goes with its files and search entry; a dry run only
/// counts; the rest stays searchable.
fn prune_by_filter_and_age(db: &TestDb) {
    use dht_hunter::filter::{ContentFilter, FilterSpec};
    let store = db.open();
    let w = store.writer();
    for i in 0..10u32 {
        let name = if i % 3 == 0 {
            "alpha sample"
        } else {
            "beta keeper"
        };
        w.fetched(record(
            i,
            name.into(),
            &[(&format!("dir/{name}.bin"), 1000 * u64::from(i + 1))],
            Source::Sample,
        ))
        .unwrap();
    }
    store.flush().unwrap();
    let exclude = ContentFilter::new(&FilterSpec {
        exclude: Some("(?i)SAMPLE".into()),
        ..FilterSpec::default()
    })
    .unwrap();
    // Dry run: counted, nothing deleted.
    let r = store.prune(&exclude, None, true).unwrap();
    assert_eq!((r.scanned, r.matched, r.deleted), (10, 4, 0));
    assert_eq!(db.query_i64("SELECT count(*) FROM torrents"), 10);
    // For real: i = 0, 3, 6, 9 go, with their files and search entries.
    let r = store.prune(&exclude, None, false).unwrap();
    assert_eq!((r.matched, r.deleted), (4, 4));
    assert_eq!(db.query_i64("SELECT count(*) FROM torrents"), 6);
    assert_eq!(db.query_i64("SELECT count(*) FROM files"), 6);
    if !db.is_pg() {
        assert_eq!(db.query_i64("SELECT count(*) FROM torrents_fts"), 6);
    }
    assert!(store.search("alpha", 20).unwrap().is_empty());
    assert_eq!(store.search("beta", 20).unwrap().len(), 6);
    // By size: below 5000 bytes (i = 1, 2; 5000 itself stays).
    let small = ContentFilter::new(&FilterSpec {
        min_size: Some(5000),
        ..FilterSpec::default()
    })
    .unwrap();
    let r = store.prune(&small, None, false).unwrap();
    assert_eq!((r.scanned, r.deleted), (6, 2));
    // By age: discovered before T0 + 8 (i = 4, 5, 7 of those left).
    let r = store
        .prune(&ContentFilter::default(), Some(at(T0 + 8)), false)
        .unwrap();
    assert_eq!((r.scanned, r.deleted), (4, 3));
    let left: Vec<[u8; 20]> = store.stored_infohashes().unwrap();
    assert_eq!(left, vec![infohash(8)]);
    store.close().unwrap();
}

/// A database written by a version-1 build (no scrape columns, no
/// categories, no new indexes) is migrated on open: its rows stay,
/// unscraped, are classified from their files, and take estimates from
/// then on.
fn upgrade_from_version_1_keeps_rows(db: &TestDb) {
    let store = db.open();
    store.writer().fetched(simple(1, "old torrent")).unwrap();
    store
        .writer()
        .fetched(simple(2, "Old.Show.S02E03.mkv"))
        .unwrap();
    store.close().unwrap();
    // Back to what version 1 had.
    db.exec(
        "DROP INDEX torrents_category; ALTER TABLE torrents DROP COLUMN category;
         DROP INDEX torrents_seeders; DROP INDEX torrents_discovered_at;
         DROP INDEX torrents_total_size;
         ALTER TABLE torrents DROP COLUMN seeders;
         ALTER TABLE torrents DROP COLUMN leechers;
         ALTER TABLE torrents DROP COLUMN scraped_at;
         UPDATE schema_version SET version = 1;",
    );
    let store = db.open();
    assert_eq!(
        db.query_i64("SELECT max(version) FROM schema_version"),
        SCHEMA_VERSION
    );
    assert_eq!(
        db.query_i64("SELECT count(*) FROM torrents WHERE category IS NULL"),
        0
    );
    let hit = &store.search("old torrent", 5).unwrap()[0];
    assert_eq!(
        (hit.seeders, hit.leechers, hit.scraped_at),
        (None, None, None)
    );
    assert_eq!(hit.category, dht_hunter::category::Category::Other);
    let show = &store.search("old show", 5).unwrap()[0];
    assert_eq!(show.category, dht_hunter::category::Category::Tv);
    store.writer().scraped(infohash(1), 3, 4, at(T0)).unwrap();
    store.flush().unwrap();
    let hit = &store.search("old torrent", 5).unwrap()[0];
    assert_eq!((hit.seeders, hit.leechers), (Some(3), Some(4)));
    store.close().unwrap();
}

fn import_reports_bad_lines(db: &TestDb) {
    let good = |i: u32, name: &str| {
        format!(
            r#"{{"infohash":"{}","name":"{name}","size":3,"files":[{{"path":"a/b","size":1}},{{"path":"c","size":2}}],"discovered_at":"2024-02-29T12:00:00Z","fetched_at":"2024-03-01T00:00:00+01:00","source":"get_peers"}}"#,
            hex(&infohash(i))
        )
    };
    let bad_date = good(3, "x").replace("2024-02-29", "2023-02-29");
    let bad_source = good(4, "x").replace("get_peers", "dht");
    let bad_size = good(5, "x").replace(r#""size":3"#, r#""size":4"#);
    let no_files = format!(
        r#"{{"infohash":"{}","name":"n","size":0,"files":[],"discovered_at":"2024-01-01T00:00:00Z","fetched_at":"2024-01-01T00:00:00Z","source":"sample"}}"#,
        hex(&infohash(6))
    );
    let input = [
        good(1, "good one"),                               // 1
        "{not json".to_owned(),                            // 2
        good(2, "x").replace(&hex(&infohash(2)), "abcd"),  // 3
        bad_date,                                          // 4
        bad_source,                                        // 5
        bad_size,                                          // 6
        no_files,                                          // 7
        String::new(),                                     // 8: blank, skipped
        good(1, "duplicate of line 1"),                    // 9
        good(8, "good two"),                               // 10
        String::from_utf8_lossy(b"\xff\xfe").into_owned(), // 11
    ]
    .join("\n");
    let store = db.open();
    let report = store
        .import_jsonl(&mut BufReader::new(input.as_bytes()))
        .unwrap();
    assert_eq!((report.imported, report.duplicates), (2, 1));
    let lines: Vec<u64> = report.errors.iter().map(|(n, _)| *n).collect();
    assert_eq!(lines, [2, 3, 4, 5, 6, 7, 11], "{:?}", report.errors);
    assert!(
        report.errors[2].1.contains("discovered_at"),
        "{}",
        report.errors[2].1
    );
    assert!(report.errors[4].1.contains("sum"), "{}", report.errors[4].1);

    let s = store.stats().unwrap();
    assert_eq!((s.torrents, s.files), (2, 4));
    assert_eq!(store.search("good", 10).unwrap().len(), 2);
    let (_, out) = export(&store);
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(
            r#""discovered_at":"2024-02-29T12:00:00Z","fetched_at":"2024-02-29T23:00:00Z""#
        ),
        "{text}"
    );
    store.close().unwrap();
}

fn migrations(db: &TestDb) {
    db.open().close().unwrap();
    assert_eq!(
        db.query_i64("SELECT max(version) FROM schema_version"),
        SCHEMA_VERSION
    );
    assert_eq!(db.query_i64("SELECT count(*) FROM schema_version"), 1);
    // Reopening at the current version changes nothing.
    db.open().close().unwrap();
    assert_eq!(db.query_i64("SELECT count(*) FROM schema_version"), 1);

    db.exec(&format!(
        "UPDATE schema_version SET version = {}",
        SCHEMA_VERSION + 1
    ));
    match Store::open(&db.url) {
        Err(StoreError::SchemaTooNew { found, supported }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

fn writer_errors_surface(db: &TestDb) {
    let store = db.open();
    let w = store.writer();
    w.fetched(simple(1, "fine")).unwrap();
    store.flush().unwrap();

    let inject = if db.is_pg() {
        "CREATE FUNCTION fail() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$;
         CREATE TRIGGER fail_insert BEFORE INSERT ON torrents FOR EACH ROW EXECUTE FUNCTION fail();"
    } else {
        "CREATE TRIGGER fail_insert BEFORE INSERT ON torrents BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
    };
    db.exec(inject);
    w.fetched(simple(2, "doomed")).unwrap();
    match store.flush() {
        Err(StoreError::Write { lost, message }) => {
            assert_eq!(lost, 1);
            assert!(message.contains("injected failure"), "{message}");
        }
        other => panic!("expected a write error, got {other:?}"),
    }
    // Reported once; the store keeps working when the fault goes away.
    store.flush().unwrap();
    db.exec(if db.is_pg() {
        "DROP TRIGGER fail_insert ON torrents"
    } else {
        "DROP TRIGGER fail_insert"
    });
    w.fetched(simple(4, "after")).unwrap();
    store.flush().unwrap();
    assert_eq!(store.stats().unwrap().torrents, 2);

    // An error after the last flush comes out of close().
    db.exec(
        inject
            .replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION")
            .as_str(),
    );
    w.fetched(simple(5, "doomed too")).unwrap();
    match store.close() {
        Err(StoreError::Write { lost: 1, .. }) => {}
        other => panic!("expected a write error from close, got {other:?}"),
    }
    // And the writer handle now refuses instead of dropping silently.
    assert!(matches!(
        w.fetched(simple(6, "late")),
        Err(StoreError::Closed)
    ));
    assert!(matches!(w.flush(), Err(StoreError::Closed)));
}

fn nothing_lost_on_close(db: &TestDb) {
    const THREADS: u32 = 4;
    const PER_THREAD: u32 = 1500;
    let store = db.open();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let w = store.writer();
            std::thread::spawn(move || {
                for k in 0..PER_THREAD {
                    let i = t * PER_THREAD + k;
                    if k % 3 == 0 {
                        w.discovered(infohash(i + 1_000_000), Source::GetPeers, at(T0))
                            .unwrap();
                    }
                    w.fetched(simple(i, &format!("t{t} k{k}"))).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // No flush: close alone must write everything.
    store.close().unwrap();
    let store = db.open();
    let s = store.stats().unwrap();
    assert_eq!(s.torrents, u64::from(THREADS * PER_THREAD));
    assert_eq!(s.files, u64::from(THREADS * PER_THREAD));
    assert_eq!(s.pending, u64::from(THREADS * PER_THREAD.div_ceil(3)));
    store.close().unwrap();
}

fn stats(db: &TestDb) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let store = db.open();
    assert_eq!(store.stats().unwrap().torrents, 0);
    assert_eq!(store.stats().unwrap().first_fetched, None);
    let w = store.writer();
    for (i, age, src) in [
        (1, 10, Source::Sample),
        (2, 7200, Source::Announce),
        (3, 2 * 86_400, Source::Announce),
    ] {
        let mut r = simple(i, &format!("s{i}"));
        r.fetched_at = at(now - age);
        r.source = src;
        w.fetched(r).unwrap();
    }
    w.discovered(infohash(9), Source::Sample, at(now)).unwrap();
    store.flush().unwrap();
    let s = store.stats().unwrap();
    assert_eq!((s.torrents, s.files, s.pending), (3, 3, 1));
    assert_eq!((s.fetched_last_hour, s.fetched_last_day), (1, 2));
    assert_eq!(
        s.by_source,
        [
            (Source::Sample, 1),
            (Source::GetPeers, 0),
            (Source::Announce, 2)
        ]
    );
    assert_eq!(s.first_fetched, Some(at(now - 2 * 86_400)));
    assert_eq!(s.last_fetched, Some(at(now - 10)));
    assert!(s.db_bytes > 0);
    assert!((s.rate_last_hour() - 1.0 / 3600.0).abs() < 1e-12);
    store.close().unwrap();
}

// ------------------------------------------------------ SQLite-only tests

/// Writes 4000 torrents (~9 MiB) without flushing, sampling the WAL size as
/// the writer goes; returns (largest WAL seen, database size).
fn wal_run(name: &str, opts: StoreOptions) -> (u64, u64) {
    let db = TestDb::sqlite(name);
    let Kind::Sqlite { path, .. } = &db.kind else {
        unreachable!()
    };
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let store = Store::open_with(&db.url, opts).unwrap();
    let w = store.writer();
    let mut max_wal = 0;
    let long = "x".repeat(200);
    for chunk in 0..40u32 {
        for k in 0..100u32 {
            let i = chunk * 100 + k;
            let files: Vec<(String, u64)> = (0..8)
                .map(|f| (format!("dir {i}/{long} {f}.bin"), 10))
                .collect();
            let files: Vec<(&str, u64)> = files.iter().map(|(p, s)| (p.as_str(), *s)).collect();
            w.fetched(record(
                i,
                format!("wal test {i}").into(),
                &files,
                Source::Sample,
            ))
            .unwrap();
        }
        while w.queue_len() > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        max_wal = max_wal.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    store.close().unwrap();
    assert_eq!(db.query_i64("SELECT count(*) FROM torrents"), 4000);
    let db_bytes = std::fs::metadata(path).unwrap().len();
    eprintln!("{name}: max WAL {max_wal} bytes, database {db_bytes} bytes");
    (max_wal, db_bytes)
}

#[test]
fn sqlite_wal_stays_bounded() {
    let batches = StoreOptions {
        batch_max: 100,
        ..StoreOptions::default()
    };
    let (max_wal, db_bytes) = wal_run(
        "wal_bound",
        StoreOptions {
            wal_autocheckpoint_pages: 64,
            journal_size_limit: 512 << 10,
            checkpoint_every_batches: 4,
            ..batches.clone()
        },
    );
    assert!(db_bytes > 8 << 20, "database only {db_bytes} bytes");
    assert!(max_wal < 2 << 20, "WAL grew to {max_wal} bytes");

    // Control: with every checkpoint disabled the same load does grow the
    // WAL past the bound, so the assertion above is not vacuous.
    let (max_wal, _) = wal_run(
        "wal_unbounded",
        StoreOptions {
            wal_autocheckpoint_pages: 0,
            checkpoint_every_batches: u32::MAX,
            idle_checkpoint: Duration::from_secs(3600),
            ..batches
        },
    );
    assert!(max_wal > 4 << 20, "control WAL only {max_wal} bytes");
}

#[test]
fn bad_urls_are_clear_errors() {
    for url in ["mysql://localhost/db", "sqlite:", "dht.sqlite"] {
        let err = Store::open(url).unwrap_err();
        assert!(matches!(err, StoreError::BadUrl { .. }), "{url}: {err}");
    }
    let err = Store::open("sqlite:/nonexistent-dir-for-dht-hunter/x.sqlite").unwrap_err();
    assert!(matches!(err, StoreError::Sqlite(_)), "{err}");
}

#[test]
fn sqlite_search_index_survives_reopen() {
    let db = TestDb::sqlite("fts_reopen");
    let store = db.open();
    store
        .writer()
        .fetched(simple(1, "persistent-name"))
        .unwrap();
    store.close().unwrap();
    let store = db.open();
    assert_eq!(store.search("persistent", 5).unwrap().len(), 1);
    assert_eq!(
        db.query_i64("SELECT count(*) FROM torrents_fts WHERE torrents_fts MATCH 'name'"),
        1
    );
    store.close().unwrap();
}

// ---------------------------------------------------------------- faults

/// One bad row among hundreds in one batch: it alone is dropped, logged,
/// counted and reported by the flush; every other row is stored.
fn poisoned_batch(db: &TestDb) {
    const N: u32 = 400;
    const POISON: u32 = 137;
    let store = db.open();
    let w = store.writer();
    w.fetched(simple(0, "warm-up")).unwrap();
    store.flush().unwrap();
    db.exec(if db.is_pg() {
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.name = 'poison' THEN RAISE EXCEPTION 'poisoned row'; END IF; RETURN NEW; END $$;
         CREATE TRIGGER poison BEFORE INSERT ON torrents FOR EACH ROW EXECUTE FUNCTION poison();"
    } else {
        "CREATE TRIGGER poison BEFORE INSERT ON torrents WHEN NEW.name = 'poison'
         BEGIN SELECT RAISE(ABORT, 'poisoned row'); END;"
    });
    // Hold the writer on a first batch, so that everything after it waits
    // in the queue and reaches the database as one batch.
    let lock = db.hold_write_lock();
    w.fetched(simple(1, "held")).unwrap();
    wait_until(
        "the writer takes the held batch",
        Duration::from_secs(10),
        || w.queue_len() == 0,
    );
    for i in 2..=N {
        w.fetched(simple(i, if i == POISON { "poison" } else { "fine" }))
            .unwrap();
    }
    // And a torrent whose size does not fit the schema (bigint).
    let mut huge = simple(N + 1, "huge");
    huge.torrent.total_size = u64::MAX;
    huge.torrent.files[0].size = u64::MAX;
    w.fetched(huge).unwrap();
    assert_eq!(w.queue_len(), N as usize);
    drop(lock);

    match store.flush() {
        Err(StoreError::Write { lost, message }) => {
            assert_eq!(lost, 2, "{message}");
            assert!(message.contains(&hex(&infohash(POISON))), "{message}");
            assert!(message.contains("poisoned row"), "{message}");
        }
        other => panic!("expected the two bad rows reported, got {other:?}"),
    }
    // Reported once.
    store.flush().unwrap();
    let f = store.faults();
    assert_eq!(f.rows_dropped, 2);
    assert_eq!(f.retries, 0, "a bad row is not retried");
    assert_eq!(db.query_i64("SELECT count(*) FROM torrents"), i64::from(N));
    assert!(!store.is_known(&infohash(POISON)).unwrap());
    assert!(!store.is_known(&infohash(N + 1)).unwrap());
    for i in [0, 1, 2, POISON - 1, POISON + 1, N] {
        assert!(store.is_known(&infohash(i)).unwrap(), "{i}");
    }
    assert_eq!(store.search("fine", 1000).unwrap().len(), N as usize - 2);
    store.close().unwrap();
}

/// A torrent with a 5000-letter word and 30 000 long file names: its search
/// vector is capped, so it is stored and found like any other. (Uncapped,
/// PostgreSQL 15's `array_to_tsvector` stores a vector over 1 MiB or a
/// lexeme over 2 KiB corrupt, and neither word below is found.)
fn huge_search_vector(db: &TestDb) {
    let store = db.open();
    let long_word = "x".repeat(5000);
    let name = format!("giant {long_word}");
    let paths: Vec<String> = (0..30_000)
        .map(|i| format!("d{i}/f{i}{}", "q".repeat(300)))
        .collect();
    let files: Vec<(&str, u64)> = paths.iter().map(|p| (p.as_str(), 1)).collect();
    let w = store.writer();
    w.fetched(record(1, name.as_str().into(), &files, Source::Sample))
        .unwrap();
    w.fetched(simple(2, "neighbour")).unwrap();
    store.flush().unwrap();
    let s = store.stats().unwrap();
    assert_eq!((s.torrents, s.files), (2, 30_001));
    assert_eq!(store.faults().rows_dropped, 0);
    assert_eq!(store.search("giant", 5).unwrap()[0].infohash, infohash(1));
    // The long word is cut alike when indexed and when searched.
    assert_eq!(
        store.search(&long_word, 5).unwrap()[0].infohash,
        infohash(1)
    );
    assert_eq!(store.search("d0", 5).unwrap()[0].infohash, infohash(1));
    assert_eq!(store.search("neighbour", 5).unwrap().len(), 1);
    store.close().unwrap();
}

/// SQLite busy past its timeout (another process holds the write lock):
/// the writer retries until the lock is released, and stores everything.
#[test]
fn sqlite_busy_is_retried_until_the_lock_goes() {
    let db = TestDb::sqlite("busy");
    let opts = StoreOptions {
        sqlite_busy_timeout: Duration::from_millis(50),
        retry_min: Duration::from_millis(10),
        retry_max: Duration::from_millis(50),
        ..StoreOptions::default()
    };
    let store = Store::open_with(&db.url, opts).unwrap();
    let lock = db.hold_write_lock();
    let w = store.writer();
    for i in 0..100 {
        w.fetched(simple(i, "busy")).unwrap();
    }
    wait_until("the writer retries", Duration::from_secs(10), || {
        let f = store.faults();
        f.stalled && f.retries >= 3
    });
    assert_eq!(store.stats().unwrap().torrents, 0);
    drop(lock);
    store.flush().unwrap();
    let f = store.faults();
    assert_eq!((f.rows_dropped, f.stalled), (0, false));
    assert_eq!(store.stats().unwrap().torrents, 100);
    store.close().unwrap();
}

/// Hints take half the queue; a stopping crawler's save may fill all of it,
/// and then waits for a writer that is working (here: waiting inside
/// SQLite's busy timeout for a lock another process holds).
#[test]
fn saving_unfinished_hints_may_fill_the_queue_and_waits_for_a_working_writer() {
    let db = TestDb::sqlite("hint_wait");
    let opts = StoreOptions {
        queue_max: 8,
        ..StoreOptions::default()
    };
    let store = Store::open_with(&db.url, opts).unwrap();
    let w = store.writer();
    let Kind::Sqlite { path, .. } = &db.kind else {
        unreachable!()
    };
    let lock = rusqlite::Connection::open(path).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    w.discovered(infohash(0), Source::GetPeers, at(T0)).unwrap();
    wait_until("the writer takes it", Duration::from_secs(10), || {
        w.queue_len() == 0
    });
    for i in 1..=4 {
        w.discovered(infohash(i), Source::GetPeers, at(T0)).unwrap();
    }
    assert!(matches!(
        w.discovered(infohash(5), Source::GetPeers, at(T0)),
        Err(StoreError::QueueFull { depth: 4 })
    ));
    let pauses = std::cell::Cell::new(0u32);
    let pause = || {
        pauses.set(pauses.get() + 1);
        std::thread::sleep(Duration::from_millis(5));
        std::future::ready(())
    };
    for i in 5..=8 {
        futures_lite::future::block_on(w.discovered_waiting(
            infohash(i),
            Source::GetPeers,
            at(T0),
            pause,
        ))
        .unwrap();
    }
    assert_eq!((pauses.get(), w.queue_len()), (0, 8));
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        drop(lock);
    });
    futures_lite::future::block_on(w.discovered_waiting(
        infohash(9),
        Source::GetPeers,
        at(T0),
        pause,
    ))
    .unwrap();
    assert!(pauses.get() > 0);
    release.join().unwrap();
    store.flush().unwrap();
    assert_eq!(store.stats().unwrap().pending, 10);
    let f = store.faults();
    assert_eq!((f.shed, f.retries), (1, 0));
    store.close().unwrap();
}

/// A TCP relay between the store and PostgreSQL that can go silent: it then
/// swallows what either side sends and accepts new connections without a
/// word, as a server or path that hangs does (the sockets stay open).
struct Relay {
    port: u16,
    silent: Arc<AtomicBool>,
}

impl Relay {
    fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let silent = Arc::new(AtomicBool::new(false));
        let quiet = silent.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                if quiet.load(Ordering::SeqCst) {
                    held.push(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let quiet = quiet.clone();
                    std::thread::spawn(move || pump(from, to, &quiet));
                }
            }
        });
        Relay { port, silent }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, silent: &AtomicBool) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) if silent.load(Ordering::SeqCst) => {}
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

/// `url` with its host:port replaced by 127.0.0.1:`port`; also returns the
/// original address.
fn via_port(url: &str, port: u16) -> (String, SocketAddr) {
    let at = url.find('@').unwrap() + 1;
    let end = at + url[at..].find('/').unwrap();
    let upstream: SocketAddr = url[at..end].parse().unwrap();
    (
        format!("{}127.0.0.1:{port}{}", &url[..at], &url[end..]),
        upstream,
    )
}

/// A server that stops answering mid-run (a half-open connection, a hung
/// host): the writer's call is bounded by statement_timeout + grace, the
/// connection is dropped, reconnecting is bounded by the connect deadline
/// and retried; once the server answers again everything is stored.
#[test]
fn postgres_silent_server_is_timed_out_and_reconnected() {
    let _server = pg_shared();
    let Some(db) = TestDb::postgres("silent") else {
        return;
    };
    let (_, upstream) = via_port(&db.url, 0);
    let relay = Relay::start(upstream);
    let (url, _) = via_port(&db.url, relay.port);
    let opts = StoreOptions {
        pg: PgTimeouts {
            connect: Duration::from_millis(500),
            statement: Duration::from_millis(1000),
            reply_grace: Duration::from_millis(500),
            ..PgTimeouts::default()
        },
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(300),
        ..StoreOptions::default()
    };
    let store = Store::open_with(&url, opts).unwrap();
    let w = store.writer();
    w.fetched(simple(1, "before")).unwrap();
    store.flush().unwrap();

    relay.silent.store(true, Ordering::SeqCst);
    let went_silent = Instant::now();
    for i in 2..=50 {
        w.fetched(simple(i, "during")).unwrap();
    }
    let store = or_leak(store, |store| {
        // The write times out (1.5 s), then reconnects time out (0.5 s each).
        wait_until("timeouts and retries", Duration::from_secs(30), || {
            store.faults().retries >= 3
        });
        let waited = went_silent.elapsed();
        assert!(waited >= Duration::from_millis(1500), "{waited:?}");
        assert_eq!(db.query_i64("SELECT count(*) FROM torrents"), 1);

        relay.silent.store(false, Ordering::SeqCst);
        wait_until("everything is stored", Duration::from_secs(30), || {
            db.query_i64("SELECT count(*) FROM torrents") == 50
        });
    });
    store.flush().unwrap();
    assert_eq!(db.query_i64("SELECT count(*) FROM torrents"), 50);
    let f = store.faults();
    assert!(f.reconnects >= 1, "{f:?}");
    assert_eq!((f.rows_dropped, f.stalled), (0, false));
    store.close().unwrap();
}

/// The cluster `.ci/postgres.sh` made for `url` (`pg_lsclusters` by port),
/// when this process may control it.
fn cluster_of(url: &str) -> Option<(String, String)> {
    let (_, addr) = via_port(url, 0);
    let out = std::process::Command::new("pg_lsclusters")
        .arg("--no-header")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 3 && f[2] == addr.port().to_string())
            .then(|| (f[0].to_string(), f[1].to_string()))
    })
}

fn pg_ctl(cluster: &(String, String), action: &[&str]) {
    let st = std::process::Command::new("pg_ctlcluster")
        .args([cluster.0.as_str(), cluster.1.as_str()])
        .args(action)
        .status()
        .unwrap();
    assert!(st.success(), "pg_ctlcluster {action:?}: {st}");
}

/// PostgreSQL restarts mid-run (`pg_ctlcluster stop -m fast`, which ends
/// every session, then `start`): the writer retries, reconnects and stores
/// everything submitted while the server was down.
#[test]
fn postgres_restart_mid_run() {
    let _alone = PG_SERVER.write().unwrap_or_else(|e| e.into_inner());
    let Some(db) = TestDb::postgres("restart") else {
        return;
    };
    let Some(cluster) = cluster_of(&db.url) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but the test cluster cannot be controlled with pg_ctlcluster"
        );
        eprintln!(
            "notice: no pg_ctlcluster cluster serves DHT_HUNTER_TEST_PG; skipping restart test"
        );
        return;
    };
    let opts = StoreOptions {
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(500),
        ..StoreOptions::default()
    };
    let store = Store::open_with(&db.url, opts).unwrap();
    let w = store.writer();
    for i in 0..100 {
        w.fetched(simple(i, "before")).unwrap();
    }
    store.flush().unwrap();

    pg_ctl(&cluster, &["stop", "-m", "fast"]);
    let store = or_leak(store, |store| {
        let down = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for i in 100..600 {
                w.fetched(simple(i, "while down")).unwrap();
            }
            wait_until("the writer notices", Duration::from_secs(20), || {
                let f = store.faults();
                f.stalled && f.retries >= 2
            });
        }));
        // Started again whatever happened, so the other tests keep a server.
        pg_ctl(&cluster, &["start"]);
        if let Err(panic) = down {
            std::panic::resume_unwind(panic);
        }
        // (Polled: a writer that never reconnects would make flush wait
        // forever.)
        wait_until("everything is stored", Duration::from_secs(60), || {
            db.query_i64("SELECT count(*) FROM torrents") == 600
        });
    });
    store.flush().unwrap();
    assert_eq!(db.query_i64("SELECT count(*) FROM torrents"), 600);
    let f = store.faults();
    assert!(f.reconnects >= 1, "{f:?}");
    assert_eq!(f.rows_dropped, 0);
    // The read side reconnects too.
    assert_eq!(store.stats().unwrap().torrents, 600);
    store.close().unwrap();
}

/// Several processes (here threads) opening the same new SQLite file at
/// once (the crawler and `dht-hunter stats`, say): each open succeeds, the
/// losers of the race to set it up wait instead of failing "locked".
#[test]
fn concurrent_opens_of_a_new_sqlite_file_all_succeed() {
    let dir = std::env::temp_dir().join(format!("dht-hunter-open-race-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for round in 0..20 {
        let url = format!("sqlite:{}", dir.join(format!("db{round}.sqlite")).display());
        let go = Arc::new(std::sync::Barrier::new(4));
        let openers: Vec<_> = (0..4)
            .map(|_| {
                let (url, go) = (url.clone(), go.clone());
                std::thread::spawn(move || {
                    go.wait();
                    Store::open(&url).and_then(|s| s.close())
                })
            })
            .collect();
        for o in openers {
            if let Err(e) = o.join().unwrap() {
                panic!("round {round}: an open failed: {e}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
