//! Sustained store throughput, per back end.
//!
//! `cargo bench --bench store`. Writes synthetic torrents (1–20 files each)
//! through the non-blocking writer exactly as the crawler would, then
//! flushes; reports torrents/s and file rows/s from first submit to durable
//! flush, plus how long the submitting thread itself was busy. A second
//! phase submits bare discoveries (pending rows). PostgreSQL runs only when
//! `DHT_HUNTER_TEST_PG` is set (see `.ci/postgres.sh`); it uses a throwaway
//! schema. Sizes can be overridden with `STORE_BENCH_TORRENTS` /
//! `STORE_BENCH_DISCOVERED`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dht_hunter::metainfo::{Torrent, TorrentFile, TorrentName};
use dht_hunter::store::{Source, Store, StoreError, TorrentRecord};

const WORDS: &[&str] = &[
    "ubuntu",
    "debian",
    "season",
    "episode",
    "1080p",
    "x264",
    "flac",
    "album",
    "live",
    "remaster",
    "collection",
    "linux",
    "iso",
    "documentary",
    "война",
    "日本語",
    "extended",
    "cut",
    "web",
    "hdr",
];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: deterministic, dependency-free.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn infohash(i: u64, salt: u8) -> [u8; 20] {
    let mut r = Rng(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(salt) ^ 1);
    let mut h = [0u8; 20];
    for chunk in h.chunks_mut(8) {
        let v = r.next().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    h
}

fn make_records(n: u64) -> (Vec<TorrentRecord>, u64) {
    let mut rng = Rng(0x5EED);
    let now = SystemTime::now();
    let mut files_total = 0;
    let recs = (0..n)
        .map(|i| {
            let words: Vec<&str> = (0..4)
                .map(|_| WORDS[rng.below(WORDS.len() as u64) as usize])
                .collect();
            let name = format!("{} {i}", words.join(" "));
            let nfiles = 1 + rng.below(20);
            files_total += nfiles;
            let files: Vec<TorrentFile> = (0..nfiles)
                .map(|f| TorrentFile {
                    path: vec![
                        TorrentName::from(format!("{} {}", words[0], f / 5)),
                        TorrentName::from(format!("{} {f:02}.{}", words[1], words[2])),
                    ],
                    size: 1 + rng.below(1 << 30),
                })
                .collect();
            TorrentRecord {
                infohash: infohash(i, 0),
                torrent: Torrent {
                    name: TorrentName::from(name),
                    total_size: files.iter().map(|f| f.size).sum(),
                    piece_length: 1 << 18,
                    private: false,
                    files,
                },
                source: Source::ALL[(i % 3) as usize],
                discovered_at: now,
                fetched_at: now,
            }
        })
        .collect();
    (recs, files_total)
}

fn machine_info() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_default();
    println!("machine: {cpu}");
    println!(
        "cpus: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("kernel: {}", kernel.trim());
    println!("{}", mem.split_whitespace().collect::<Vec<_>>().join(" "));
    println!("temp dir: {}", std::env::temp_dir().display());
}

fn run(label: &str, url: &str, torrents: u64, discovered: u64) {
    let (records, files) = make_records(torrents);
    let store = Store::open(url).unwrap();
    let w = store.writer();

    let start = Instant::now();
    for r in records {
        w.fetched(r).unwrap();
    }
    let submit = start.elapsed();
    store.flush().unwrap();
    let total = start.elapsed();
    report(
        label,
        "fetched torrents",
        torrents,
        Some(files),
        submit,
        total,
    );

    let start = Instant::now();
    for i in 0..discovered {
        // Hints are refused past half the bounded queue (the crawler sheds
        // them); the bench waits instead, to measure the writer.
        while let Err(e) = w.discovered(infohash(i, 1), Source::GetPeers, SystemTime::now()) {
            assert!(matches!(e, StoreError::QueueFull { .. }), "{e}");
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    let submit = start.elapsed();
    store.flush().unwrap();
    let total = start.elapsed();
    report(
        label,
        "discovered (pending)",
        discovered,
        None,
        submit,
        total,
    );

    let start = Instant::now();
    let hits = store.search("ubuntu season", 50).unwrap().len();
    println!(
        "{label}: search 'ubuntu season' limit 50 -> {hits} hits in {:.2} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    let s = store.stats().unwrap();
    println!(
        "{label}: stored {} torrents, {} files, {} pending, {:.1} MiB on disk",
        s.torrents,
        s.files,
        s.pending,
        s.db_bytes as f64 / (1 << 20) as f64
    );
    store.close().unwrap();
}

fn report(label: &str, what: &str, n: u64, files: Option<u64>, submit: Duration, total: Duration) {
    let secs = total.as_secs_f64();
    let files = files.map_or(String::new(), |f| {
        format!(", {f} file rows = {:.0} files/s", f as f64 / secs)
    });
    println!(
        "{label}: {n} {what} in {secs:.2} s = {:.0}/s{files} (submitting thread busy {:.3} s)",
        n as f64 / secs,
        submit.as_secs_f64()
    );
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let torrents = env_u64("STORE_BENCH_TORRENTS", 30_000);
    let discovered = env_u64("STORE_BENCH_DISCOVERED", 100_000);
    machine_info();
    println!(
        "workload: {torrents} torrents with 1-20 files (uniform), then {discovered} discoveries"
    );
    println!();

    let dir = std::env::temp_dir().join(format!("dht-hunter-store-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite:{}", dir.join("bench.sqlite").display());
    run("sqlite", &url, torrents, discovered);
    let _ = std::fs::remove_dir_all(&dir);

    match std::env::var("DHT_HUNTER_TEST_PG") {
        Ok(base) if !base.is_empty() => {
            let schema = format!(
                "bench_{}",
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            );
            let mut admin = postgres::Client::connect(&base, postgres::NoTls).unwrap();
            admin
                .batch_execute(&format!("CREATE SCHEMA {schema}"))
                .unwrap();
            let version: String = admin.query_one("SHOW server_version", &[]).unwrap().get(0);
            println!();
            println!("postgres server {version}");
            let sep = if base.contains('?') { '&' } else { '?' };
            let url = format!("{base}{sep}options=-csearch_path%3D{schema}");
            run("postgres", &url, torrents, discovered);
            admin
                .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
                .unwrap();
        }
        _ => println!("\npostgres: skipped (DHT_HUNTER_TEST_PG is not set)"),
    }
}
