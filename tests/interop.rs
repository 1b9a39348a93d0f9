//! Interop with libtorrent 2.0 (Debian's python3-libtorrent), on loopback,
//! inside a private network namespace so that nothing can leave the
//! machine: each test re-runs itself under `unshare -n` with only `lo` up.
//!
//! * libtorrent seeds real torrents (one-piece and multi-piece metadata,
//!   non-ASCII names) and our fetcher gets their metadata; what we parse
//!   equals what libtorrent holds.
//! * libtorrent DHT sessions bootstrap from our node: they get correct
//!   answers, their announces reach us, and our sample_infohashes queries to
//!   them are answered and parsed.
//!
//! Without root or python3-libtorrent the tests are skipped with a notice,
//! except under `CI`, where that is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dht_hunter::config::{CrawlConfig, FileConfig};
use dht_hunter::engine::{self, EngineParts, Telemetry};
use dht_hunter::id::Id;
use dht_hunter::store::Store;

const PY: &str = "/usr/bin/python3";
const INNER: &str = "DHT_HUNTER_IN_NETNS";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn skip_or_fail(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("interop test cannot run under CI: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

fn libtorrent_available() -> bool {
    Command::new(PY)
        .args(["-c", "import libtorrent"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `name` again inside a fresh network namespace; returns true when
/// the caller is already inside and should do the work.
fn in_netns(name: &str) -> bool {
    if std::env::var_os(INNER).is_some() {
        return true;
    }
    if !libtorrent_available() {
        skip_or_fail("python3-libtorrent is not installed");
        return false;
    }
    let exe = std::env::current_exe().unwrap();
    let status = Command::new("unshare")
        .args(["-n", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
        .arg(&exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(INNER, "1")
        .status();
    match status {
        Ok(s) if s.success() => false,
        Ok(s) if s.code() == Some(1) && !Path::new("/proc/self/ns/net").exists() => {
            skip_or_fail("no network namespaces");
            false
        }
        Ok(s) => panic!("{name} failed inside the namespace: {s}"),
        Err(e) => {
            skip_or_fail(&format!("unshare not available: {e}"));
            false
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[derive(Debug, serde::Deserialize)]
struct Seeded {
    infohash: String,
    name: String,
    total_size: u64,
    info_len: usize,
    files: Vec<SeededFile>,
}

#[derive(Debug, serde::Deserialize)]
struct SeededFile {
    path: String,
    size: u64,
}

#[test]
fn libtorrent_seeds_metadata_to_our_fetcher() {
    if !in_netns("libtorrent_seeds_metadata_to_our_fetcher") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("dh-interop-seed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let mut seeder = Command::new(PY)
        .arg(root().join("tests/interop/lt_seed.py"))
        .args(["--dir", dir.to_str().unwrap(), "--port", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut torrents = Vec::new();
    let mut lines = BufReader::new(seeder.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.trim() == "READY" {
            break;
        }
        torrents.push(serde_json::from_str::<Seeded>(&line).unwrap());
    }
    assert!(torrents.len() >= 3);
    assert!(
        torrents.iter().any(|t| t.info_len > 16 * 1024),
        "no multi-piece metadata"
    );
    assert!(
        torrents.iter().any(|t| !t.name.is_ascii()),
        "no non-ASCII name"
    );

    let peer: SocketAddr = ([127, 0, 0, 1], port).into();
    let wanted: Vec<(Id, usize)> = torrents
        .iter()
        .map(|t| (t.infohash.parse().unwrap(), t.info_len))
        .collect();
    let fetched = shards::glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let tcp = shards::TcpConnector::new(shards::TcpOptions::default(), 0);
            let mut out = Vec::new();
            for (ih, _) in wanted {
                let r = dht_hunter::fetch::attempt(
                    &tcp,
                    peer,
                    ih,
                    *b"-DH0100-interop00000",
                    dht_hunter::wire::FetchConfig::default(),
                )
                .await;
                out.push((ih, r.map(|v| v.info).map_err(|e| e.to_string())));
            }
            out
        })
        .unwrap()
        .join()
        .unwrap();
    for ((ih, result), t) in fetched.iter().zip(&torrents) {
        let info = result
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: {e}", t.name));
        assert_eq!(info.len(), t.info_len, "{}", t.name);
        assert_eq!(dht_hunter::wire::sha1_info_hash(info), *ih);
        let parsed = dht_hunter::metainfo::parse_info(info).unwrap();
        assert_eq!(parsed.name.display(), t.name);
        assert_eq!(parsed.total_size, t.total_size);
        let ours: Vec<(String, u64)> = parsed
            .files
            .iter()
            .filter(|f| f.size > 0 || t.files.iter().any(|x| x.size == 0))
            .map(|f| (f.display_path(), f.size))
            .collect();
        let theirs: Vec<(String, u64)> = t.files.iter().map(|f| (f.path.clone(), f.size)).collect();
        // libtorrent lists paths relative to the torrent's directory.
        let ours_rel: Vec<(String, u64)> = ours
            .iter()
            .map(|(p, s)| {
                let rel = p.strip_prefix(&format!("{}/", t.name)).unwrap_or(p);
                (rel.to_string(), *s)
            })
            .collect();
        assert!(
            ours == theirs || ours_rel == theirs,
            "{}: files differ\nours: {:?}\ntheirs: {:?}",
            t.name,
            &ours[..ours.len().min(3)],
            &theirs[..theirs.len().min(3)]
        );
    }
    // Through the store: what is stored (and exported) equals what
    // libtorrent holds.
    let db = format!("sqlite:{}", dir.join("db.sqlite").display());
    let store = Store::open(&db).unwrap();
    let w = store.writer();
    for ((ih, result), _) in fetched.iter().zip(&torrents) {
        let torrent = dht_hunter::metainfo::parse_info(result.as_ref().unwrap()).unwrap();
        w.fetched(dht_hunter::store::TorrentRecord {
            infohash: ih.0,
            torrent,
            source: dht_hunter::store::Source::Sample,
            discovered_at: std::time::SystemTime::now(),
            fetched_at: std::time::SystemTime::now(),
        })
        .unwrap();
    }
    store.flush().unwrap();
    let mut out = Vec::new();
    store.export_jsonl(&mut out).unwrap();
    store.close().unwrap();
    let rows: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), torrents.len());
    for t in &torrents {
        let row = rows
            .iter()
            .find(|r| r["infohash"] == t.infohash.as_str())
            .unwrap();
        assert_eq!(row["name"], t.name.as_str());
        assert_eq!(row["size"], t.total_size);
        let files = row["files"].as_array().unwrap();
        let sizes: u64 = files.iter().map(|f| f["size"].as_u64().unwrap()).sum();
        assert_eq!(sizes, t.total_size);
        assert!(files.len() >= t.files.len());
    }
    // Closing stdin stops the seeder.
    drop(seeder.stdin.take());
    let _ = seeder.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn libtorrent_dht_sessions_use_our_node() {
    if !in_netns("libtorrent_dht_sessions_use_our_node") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("dh-interop-dht-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite:{}", dir.join("db.sqlite").display());
    let cfg = CrawlConfig::resolve(FileConfig {
        bind: Some(vec![SocketAddr::from(([127, 0, 0, 1], 0))]),
        bootstrap: Some(vec!["127.0.0.1:9".into()]),
        shards: Some(2),
        no_pin: Some(true),
        oversubscribe: Some(true),
        state_dir: Some(dir.clone()),
        allow_private: Some(true),
        per_ip_pps: Some(200),
        db: Some(db.clone()),
        ..FileConfig::default()
    })
    .unwrap();
    let store = Store::open(&db).unwrap();
    let telemetry = Arc::new(Telemetry::default());
    let tweak: engine::NodeTweak = Arc::new(|nc: &mut dht_hunter::dht::NodeConfig| {
        // All libtorrent sessions share 127.0.0.1.
        nc.inbound_per_ip_pps = 10_000;
        nc.inbound_per_ip_burst = 10_000;
        nc.min_resample = Duration::from_secs(2);
        nc.walk_interval = Duration::from_millis(500);
    });
    let eng = engine::start(
        &cfg,
        EngineParts {
            store: store.writer(),
            telemetry: telemetry.clone(),
            tweak: Some(tweak),
            known_nodes: Arc::new(Vec::new()),
            pending: Arc::new(Vec::new()),
            stored: Arc::new(Vec::new()),
        },
    )
    .unwrap();
    let ours = eng.udp_addrs[0];
    let ih1 = "0123456789abcdef0123456789abcdef01234567";
    let ih2 = "fedcba9876543210fedcba9876543210fedcba98";
    let started = Instant::now();
    let out = Command::new(PY)
        .arg(root().join("tests/interop/lt_dht.py"))
        .args([
            "--bootstrap",
            &ours.to_string(),
            "--sessions",
            "3",
            "--base-port",
            &free_port().to_string(),
            // One loopback address per session: we keep one routing entry
            // per IP (as libtorrent does), so on one address we would see
            // (and sample) only one of them.
            "--distinct-ips",
            "--announce",
            &format!("{ih1},{ih2}"),
            "--interval",
            "1",
            "--announce-interval",
            "3",
            "--seconds",
            "14",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lt_dht.py failed: {}\nstderr: {}\nstdout: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let stop = eng.shutdown_handle();
    stop.trigger();
    eng.join().unwrap();
    store.flush().unwrap();
    let t = telemetry.totals();
    let ours_s = ours.to_string();

    // 1. libtorrent got correct answers from us: its own parser accepted
    //    our sample_infohashes replies (the alert only fires on a valid one).
    let from_us: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "dht_sample_infohashes" && e["endpoint"] == ours_s.as_str())
        .collect();
    assert!(
        !from_us.is_empty(),
        "no sample_infohashes reply from us reached libtorrent"
    );
    // Every reply of ours that libtorrent logged decoded with an id.
    let our_replies = events
        .iter()
        .filter(|e| {
            e["event"] == "dht_pkt"
                && e["dir"] == "in"
                && e["node"].as_str().is_some_and(|n| n.contains(&ours_s))
        })
        .count();
    let errors = events
        .iter()
        .filter(|e| e["event"] == "dht_pkt" && e["y"] == "e" && e["dir"] == "in")
        .count();
    assert!(our_replies > 0 || !from_us.is_empty());
    assert_eq!(errors, 0, "libtorrent received error replies");

    // 2. Their announces reached us, with a valid token.
    // (An infohash first seen in a get_peers counts under that source; the
    // announces themselves are counted as accepted queries.)
    assert!(
        t.announces_accepted >= 2,
        "announces accepted: {} (harvested as announce: {})",
        t.announces_accepted,
        t.announced
    );
    let pending = Store::open(&db).unwrap().pending(100).unwrap();
    for ih in [ih1, ih2] {
        let ih: Id = ih.parse().unwrap();
        assert!(
            pending.iter().any(|p| p.infohash == ih.0),
            "{ih} not recorded as discovered"
        );
    }

    // 3. Our sample_infohashes queries to them were answered and parsed
    //    (interval, num and samples all valid). Whether a libtorrent node
    //    holds any infohash yet depends on who it announced to, so the
    //    samples themselves are reported, not required.
    assert!(
        t.sample_replies > 0,
        "no valid sample_infohashes reply from libtorrent: {t:?}"
    );
    eprintln!(
        "libtorrent: {} valid sample replies, {} samples",
        t.sample_replies, t.samples_received
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::io::stdout().flush();
}
