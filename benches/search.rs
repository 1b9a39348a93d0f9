//! Search latency on a large store, through the web API's own query code
//! ([`StoreReader::search_page`], what `/api/search`, the search page and
//! Torznab call).
//!
//! `cargo bench --bench search`. Builds (once; kept under the target
//! directory and reused while its row count matches) a store of
//! `SEARCH_BENCH_TORRENTS` (default 1,000,000) synthetic torrents: names of
//! 3–7 words and 1–4 files of 1–3 words each, words drawn from a 20,000-word
//! vocabulary with a Zipf (s = 1) distribution, as real names repeat a few
//! words a lot ("1080p", "x264", "season") and most rarely. Then runs
//! two-word queries (both words Zipf-drawn, so common words dominate as in
//! real use) and prints p50 / p99 / max latency per sort order, then the
//! same queries in one category (TV) and TV browsing without words. File
//! extensions make the kinds: 40 % video (a quarter of it with an episode
//! mark), 15 % audio, 5 % books, the rest opaque. Last, every row's
//! category is cleared and the store reopened, which times what the
//! migration to schema version 3 costs a store of this size.
//! PostgreSQL runs too when `DHT_HUNTER_TEST_PG` is set (schema
//! `bench_search_N`, kept for reruns).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dht_hunter::category::Category;
use dht_hunter::metainfo::{Torrent, TorrentFile};
use dht_hunter::rng::Rng;
use dht_hunter::store::{SortKey, Source, Store, StoreReader, TorrentRecord};

const VOCABULARY: usize = 20_000;
const QUERIES: usize = 300;
const WARMUP: usize = 30;

/// Deterministic pronounceable words: rank 0 is the most frequent.
fn vocabulary() -> Vec<String> {
    const SYL: &[&str] = &[
        "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "ba", "do", "fi", "gu", "ha", "je",
        "ko", "la", "me", "no", "pi", "qu", "re", "si", "to", "un", "ve", "wa", "xi", "yo", "zu",
    ];
    let mut rng = Rng::seed_from_u64(42);
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(VOCABULARY);
    while out.len() < VOCABULARY {
        let n = 2 + rng.below(3) as usize;
        let w: String = (0..n)
            .map(|_| SYL[rng.below(SYL.len() as u64) as usize])
            .collect();
        if seen.insert(w.clone()) {
            out.push(w);
        }
    }
    out
}

/// Zipf(s = 1) sampler over ranks 0..n.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize) -> Zipf {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|r| {
                acc += 1.0 / r as f64;
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }
    fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.below(1 << 53) as f64 / (1u64 << 53) as f64;
        self.cdf.partition_point(|c| *c < u).min(self.cdf.len() - 1)
    }
}

fn words(rng: &mut Rng, z: &Zipf, vocab: &[String], n: usize, sep: &str) -> String {
    (0..n)
        .map(|_| vocab[z.sample(rng)].as_str())
        .collect::<Vec<_>>()
        .join(sep)
}

fn torrent(i: u64, rng: &mut Rng, z: &Zipf, vocab: &[String]) -> TorrentRecord {
    let n_words = 3 + rng.below(5) as usize;
    let name = words(rng, z, vocab, n_words, " ");
    let nfiles = 1 + rng.below(4) as usize;
    // The torrent's kind, by its files' extensions (see the module docs).
    let ext = match rng.below(100) {
        0..=9 => "S01E02.mkv",
        10..=39 => "mkv",
        40..=54 => "mp3",
        55..=59 => "epub",
        _ => "bin",
    };
    let files: Vec<TorrentFile> = (0..nfiles)
        .map(|k| {
            let k_words = 1 + rng.below(3) as usize;
            let base = words(rng, z, vocab, k_words, ".");
            TorrentFile {
                path: vec![format!("{base}.{k}.{ext}").as_str().into()],
                size: 1 + rng.below(4 << 30),
            }
        })
        .collect();
    let mut infohash = [0u8; 20];
    infohash[..8].copy_from_slice(&i.to_be_bytes());
    rng.fill(&mut infohash[8..]);
    let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000 + i * 7);
    TorrentRecord {
        infohash,
        torrent: Torrent {
            name: name.as_str().into(),
            total_size: files.iter().map(|f| f.size).sum(),
            piece_length: 1 << 20,
            private: false,
            files,
        },
        source: Source::Sample,
        discovered_at: t,
        fetched_at: t + Duration::from_secs(3),
    }
}

/// Opens `url`, filling it to `n` torrents if it has fewer.
fn fill(url: &str, n: u64, vocab: &[String], z: &Zipf) {
    let store = Store::open(url).unwrap();
    let have = store.stats().unwrap().torrents;
    if have >= n {
        println!("  reusing {have} stored torrents");
        store.close().unwrap();
        return;
    }
    let started = Instant::now();
    let mut rng = Rng::seed_from_u64(7 + have);
    let w = store.writer();
    for i in have..n {
        w.fetched(torrent(i, &mut rng, z, vocab)).unwrap();
        if i % 100_000 == 0 && i > have {
            println!("  {i} submitted, {:.0} s", started.elapsed().as_secs_f64());
        }
    }
    store.flush().unwrap();
    println!(
        "  filled {} torrents in {:.0} s",
        n - have,
        started.elapsed().as_secs_f64()
    );
    store.close().unwrap();
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn run(label: &str, url: &str, n: u64, vocab: &[String], z: &Zipf, clear: &dyn Fn(&str)) {
    println!("{label}: {n} torrents");
    fill(url, n, vocab, z);
    let reader = StoreReader::open_url(url, 1).unwrap();
    let s = reader.stats().unwrap();
    println!(
        "  store: {} torrents, {} files, {:.0} MiB",
        s.torrents,
        s.files,
        s.db_bytes as f64 / (1 << 20) as f64
    );
    let mut rng = Rng::seed_from_u64(99);
    let queries: Vec<String> = (0..WARMUP + QUERIES)
        .map(|_| words(&mut rng, z, vocab, 2, " "))
        .collect();
    let tv = [Category::Tv];
    let runs: Vec<(&str, SortKey, &[Category])> = SortKey::ALL
        .iter()
        .map(|s| ("two-word", *s, &[][..]))
        .chain([("two-word, cat=tv", SortKey::Relevance, &tv[..])])
        .collect();
    for (what, sort, cats) in runs {
        let mut lat = Vec::with_capacity(QUERIES);
        let mut matched = Vec::with_capacity(QUERIES);
        for (i, q) in queries.iter().enumerate() {
            let t = Instant::now();
            let page = reader.search_page(q, cats, sort, 0, 50).unwrap();
            let d = t.elapsed();
            if i >= WARMUP {
                lat.push(d);
                matched.push(if page.counted_capped {
                    page.counted + 1
                } else {
                    page.counted
                });
            }
        }
        lat.sort();
        matched.sort();
        println!(
            "  {what}, sort={:<10} p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  (matches: median {}, p99 {}{})",
            sort.as_str(),
            pct(&lat, 0.5).as_secs_f64() * 1e3,
            pct(&lat, 0.99).as_secs_f64() * 1e3,
            lat[lat.len() - 1].as_secs_f64() * 1e3,
            matched[matched.len() / 2],
            matched[(matched.len() - 1) * 99 / 100],
            if matched.iter().any(|m| *m > 1000) { ", capped at 1000+" } else { "" },
        );
    }
    // A deep page and the empty query (browse), relevance order.
    for (what, q, offset, cats) in [
        (
            "page 20 (offset 950)",
            queries[WARMUP].as_str(),
            950,
            &[][..],
        ),
        ("no words (browse)", "", 0, &[][..]),
        ("no words, cat=tv (browse TV)", "", 0, &tv[..]),
    ] {
        let t = Instant::now();
        let page = reader
            .search_page(q, cats, SortKey::Relevance, offset, 50)
            .unwrap();
        println!(
            "  {what}: {:.2} ms ({} hits)",
            t.elapsed().as_secs_f64() * 1e3,
            page.hits.len()
        );
    }
    drop(reader);
    // What the migration to schema version 3 costs: every category
    // cleared, then an open classifies them all again.
    clear("UPDATE torrents SET category = NULL");
    let t = Instant::now();
    Store::open(url).unwrap().close().unwrap();
    println!(
        "  classifying all {n} torrents on open (the version-3 migration): {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

fn main() {
    let n: u64 = std::env::var("SEARCH_BENCH_TORRENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let vocab = vocabulary();
    let z = Zipf::new(VOCABULARY);
    let dir = PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
        .join("bench-search");
    std::fs::create_dir_all(&dir).unwrap();
    // "kinds": the stores made since files carry extensions (categories).
    let path = dir.join(format!("search-{n}-kinds.sqlite"));
    println!("when: {:?}", SystemTime::now());
    let sqlite_path = path.clone();
    run(
        "sqlite",
        &format!("sqlite:{}", path.display()),
        n,
        &vocab,
        &z,
        &|sql| {
            rusqlite::Connection::open(&sqlite_path)
                .unwrap()
                .execute_batch(sql)
                .unwrap();
        },
    );
    if let Ok(base) = std::env::var("DHT_HUNTER_TEST_PG") {
        let schema = format!("bench_search_{n}_kinds");
        let mut admin = postgres::Client::connect(&base, postgres::NoTls).unwrap();
        admin
            .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-csearch_path%3D{schema}");
        run("postgres", &url, n, &vocab, &z, &|sql| {
            postgres::Client::connect(&url, postgres::NoTls)
                .unwrap()
                .batch_execute(sql)
                .unwrap();
        });
    } else {
        println!("postgres: skipped (DHT_HUNTER_TEST_PG unset)");
    }
}
