//! End to end through the real binary, on loopback: a small swarm with
//! every kind of misbehaving peer, crawled by 2 shards into SQLite; then
//! search, export, import and stats on the result; a SIGTERM in the middle
//! of a crawl; a restart that keeps its ids.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/http.rs"]
mod http;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dht-hunter"))
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dh-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run dht-hunter")
}

/// A free loopback UDP address to bind a crawler to.
fn free_bind() -> String {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// `crawl` arguments for a two-shard loopback crawler bound to `bind`,
/// bootstrapping from `swarm`, with its state in `dir`, plus `extra`.
fn crawl_args(
    bind: &str,
    dir: &Path,
    swarm: &dht_hunter::loadgen::swarm::Swarm,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = [
        "crawl",
        "--bind",
        bind,
        "--allow-private",
        "--state-dir",
        dir.to_str().unwrap(),
        "--shards",
        "2",
        "--no-pin",
        "--oversubscribe",
        "--status",
        "never",
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect();
    for n in swarm.node_addrs.iter().take(8) {
        args.push("--bootstrap".into());
        args.push(n.to_string());
    }
    args
}

/// `crawl` arguments for a one-shard crawler that talks to nobody (its
/// bootstrap is loopback's discard port) and stops after a second, with
/// its state in `dir`.
fn idle_crawl_args(dir: &Path) -> Vec<String> {
    [
        "crawl",
        "--bind",
        "127.0.0.1:0",
        "--bootstrap",
        "127.0.0.1:9",
        "--allow-private",
        "--state-dir",
        dir.to_str().unwrap(),
        "--duration",
        "1",
        "--shards",
        "1",
        "--no-pin",
        "--status",
        "never",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn json(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn demo(dir: &Path) -> serde_json::Value {
    let out = run(&[
        "demo",
        "--json",
        "--status",
        "never",
        "--nodes",
        "400",
        "--torrents",
        "60",
        "--peers-per-torrent",
        "3",
        "--bad-fraction",
        "0.5",
        "--large-torrents",
        "1",
        "--shards",
        "2",
        "--timeout",
        "60",
        "--state-dir",
        dir.to_str().unwrap(),
    ]);
    let v = json(&out);
    assert!(
        out.status.success(),
        "demo failed: {v}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    v
}

#[test]
fn demo_swarm_search_export_import_stats() {
    let dir = tmp("demo");
    let v = demo(&dir);
    // What the demo asserts, checked again here from its summary.
    assert_eq!(v["torrents"], 60);
    let fetchable = v["fetchable"].as_u64().unwrap();
    assert!(fetchable > 0 && fetchable < 60, "{v}");
    assert_eq!(v["fetched"].as_u64().unwrap(), fetchable, "{v}");
    assert_eq!(v["invalid_accepted"], 0, "{v}");
    assert_eq!(v["missed"], 0, "{v}");
    assert!(v["discovered"].as_u64().unwrap() >= fetchable, "{v}");
    // Misbehaving peers were met and refused.
    let failures = &v["fetch_failures"];
    let refused: u64 = ["hash_mismatch", "oversize", "reject"]
        .iter()
        .map(|k| failures[k].as_u64().unwrap_or(0))
        .sum();
    assert!(refused > 0, "no misbehaving peer was refused: {v}");
    // The swarm's mix includes peers that require MSE/PE: torrents only
    // they serve were fetched with the crawl's default flags, over RC4.
    let enc_only = v["encrypted_only"].as_u64().unwrap();
    assert!(
        enc_only > 0,
        "no torrent served only by encrypted peers: {v}"
    );
    assert_eq!(
        v["encrypted_only_fetched"].as_u64().unwrap(),
        enc_only,
        "{v}"
    );
    assert!(
        v["fetch_handshakes"]["mse_rc4"].as_u64().unwrap() >= enc_only,
        "{v}"
    );
    // And peers that speak uTP only (the demo's default 10 %): torrents
    // only they serve were fetched with the crawl's default flags (TCP
    // first, reset, then uTP on the shard's UDP socket).
    let utp_only = v["utp_only"].as_u64().unwrap();
    assert!(utp_only > 0, "no torrent served only by uTP peers: {v}");
    assert_eq!(v["utp_only_fetched"].as_u64().unwrap(), utp_only, "{v}");
    assert!(
        v["fetch_transports"]["utp"].as_u64().unwrap() >= utp_only,
        "{v}"
    );

    let db = format!("sqlite:{}", dir.join("dht-hunter.sqlite").display());
    // stats
    let out = run(&["stats", "--json", "--db", &db]);
    assert!(out.status.success());
    let s = json(&out);
    assert_eq!(s["torrents"].as_u64().unwrap(), fetchable);
    // search: the synthetic names include Japanese ones.
    let out = run(&[
        "search",
        "トレント",
        "--json",
        "--limit",
        "100",
        "--db",
        &db,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hits: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!hits.is_empty());
    assert!(hits
        .iter()
        .all(|h| h["name"].as_str().unwrap().contains("トレント")));
    // export, then import into a fresh database, then export again: equal.
    let export1 = dir.join("export1.jsonl");
    let out = run(&["export", "--out", export1.to_str().unwrap(), "--db", &db]);
    assert!(out.status.success());
    let text1 = std::fs::read_to_string(&export1).unwrap();
    assert_eq!(text1.lines().count() as u64, fetchable);
    // The swarm's nodes answer BEP 33 scrapes (honest peers stored as
    // seeds, the others not): scraped rows carry estimates that match the
    // ground truth (a filter collision can only lower a count, by one at
    // these sizes; client announces add leechers, never seeds).
    let truth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("ground-truth.json")).unwrap()).unwrap();
    let seeds_of = |infohash: &str| -> (u64, u64) {
        let t = truth
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["infohash"] == infohash)
            .unwrap();
        let peers = t["peers"].as_array().unwrap();
        let seeds = peers.iter().filter(|p| p["seed"] == true).count() as u64;
        (seeds, peers.len() as u64 - seeds)
    };
    let mut scraped = 0;
    for line in text1.lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let keys: Vec<&str> = row
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut keys = keys;
        keys.sort();
        let plain = [
            "discovered_at",
            "fetched_at",
            "files",
            "infohash",
            "name",
            "size",
            "source",
        ];
        if row.get("seeders").is_some() {
            scraped += 1;
            let mut with: Vec<&str> = plain.to_vec();
            with.extend(["leechers", "scraped_at", "seeders"]);
            with.sort();
            assert_eq!(keys, with);
            let (seeds, others) = seeds_of(row["infohash"].as_str().unwrap());
            let s = row["seeders"].as_u64().unwrap();
            let l = row["leechers"].as_u64().unwrap();
            assert!(s + 1 >= seeds && s <= seeds, "{row}: truth {seeds} seeds");
            assert!(l + 1 >= others, "{row}: truth {others} others");
        } else {
            assert_eq!(keys, plain);
        }
        assert_eq!(row["infohash"].as_str().unwrap().len(), 40);
    }
    eprintln!("{scraped} of {fetchable} stored torrents scraped");
    assert!(scraped > 0, "no stored torrent was scraped");
    let db2 = format!("sqlite:{}", dir.join("copy.sqlite").display());
    let out = run(&["import", export1.to_str().unwrap(), "--db", &db2]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let export2 = dir.join("export2.jsonl");
    let out = run(&["export", "--out", export2.to_str().unwrap(), "--db", &db2]);
    assert!(out.status.success());
    let mut a: Vec<&str> = text1.lines().collect();
    let text2 = std::fs::read_to_string(&export2).unwrap();
    let mut b: Vec<&str> = text2.lines().collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    // Importing the same file again adds nothing.
    let out = run(&["import", export1.to_str().unwrap(), "--db", &db2]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("imported 0"));
    browse_the_demo(&dir, s["torrents"].as_u64().unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// What the demo says to do next, `serve --state-dir DIR`, serves its
/// harvest: every stored torrent, in the kinds the swarm's files make.
fn browse_the_demo(dir: &Path, stored: u64) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let web: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut child = Command::new(bin())
        .args(["serve", "--state-dir", dir.to_str().unwrap()])
        .args(["--web", &web.to_string()])
        .env_remove("DHT_HUNTER_WEB_API_KEY")
        .env_remove("DHT_HUNTER_WEB_AUTH")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let stats = loop {
        if let Ok(s) = std::net::TcpStream::connect(web) {
            drop(s);
            break http::get(web, "/api/stats", &[]).json();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "serve did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(stats["torrents"].as_u64(), Some(stored), "{stats}");
    // Each kind on its own adds up to everything; the swarm's torrents
    // (films, series, albums, books, opaque parts) show at least four.
    let mut total = 0;
    let mut kinds = 0;
    for cat in ["movies", "tv", "audio", "books", "software", "other"] {
        let v = http::get(web, &format!("/api/search?cat={cat}&limit=1"), &[]).json();
        let n = v["counted"].as_u64().unwrap();
        assert!(!v["counted_capped"].as_bool().unwrap(), "{v}");
        if n > 0 {
            kinds += 1;
            assert_eq!(v["hits"][0]["category"], cat, "{v}");
        }
        total += n;
    }
    assert_eq!(total, stored);
    assert!(kinds >= 4, "only {kinds} kinds among {stored} torrents");
    // SAFETY: a signal to our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert!(child.wait().unwrap().success());
}

#[test]
fn bad_flags_and_config_are_clear_errors() {
    let out = run(&["crawl", "--shards", "0", "--duration", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("shards"));
    let dir = tmp("cfg");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("bad.toml");
    std::fs::write(&cfg, "bind = [\"127.0.0.1:0\"]\nper-ip-ppz = 3\n").unwrap();
    let out = run(&["crawl", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("per-ip-ppz"));
    let out = run(&["crawl", "--bind", "nonsense"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["stats", "--db", "sqlite:/nonexistent/dir/x.sqlite"]);
    assert_eq!(out.status.code(), Some(1));
    // A crawl that would serve the store to the network without
    // credentials is refused before the store is created.
    let db = dir.join("never.sqlite");
    let out = Command::new(bin())
        .args([
            "crawl",
            "--bind",
            "127.0.0.1:0",
            "--web",
            "0.0.0.0:0",
            "--db",
        ])
        .arg(format!("sqlite:{}", db.display()))
        .env_remove("DHT_HUNTER_WEB_API_KEY")
        .env_remove("DHT_HUNTER_WEB_AUTH")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--web-insecure-public"));
    assert!(!db.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `crawl --help` states the default of every flag that has a value (the
/// config layer applies them, so clap alone would not show them).
#[test]
fn crawl_help_shows_every_default() {
    let out = run(&["crawl", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    // Switches (off unless given) and --config/--help have no value default.
    let switches = [
        "--config",
        "--no-pin",
        "--oversubscribe",
        "--allow-private",
        "--no-table-turnover",
        "--help",
    ];
    // One block per flag: its header line (indented at most 6 spaces),
    // then its indented help, blank lines included.
    let mut flags: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        if (1..=6).contains(&indent) && t.starts_with('-') {
            let name = t
                .split_whitespace()
                .find(|w| w.starts_with("--"))
                .unwrap_or(t)
                .trim_end_matches(',')
                .to_string();
            flags.push((name, String::new()));
        } else if let Some((_, body)) = flags.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    let mut blocks = 0;
    for (flag, body) in &flags {
        if switches.contains(&flag.as_str()) {
            continue;
        }
        blocks += 1;
        assert!(
            body.to_lowercase().contains("default"),
            "{flag} does not show its default:\n{body}"
        );
    }
    assert!(blocks >= 20, "only {blocks} flags found in:\n{help}");
    assert!(help.contains("[default: 20000]"), "{help}");
}

#[test]
fn restart_keeps_ids() {
    let dir = tmp("restart");
    let args = idle_crawl_args(&dir);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids1 = std::fs::read_to_string(dir.join("identities")).unwrap();
    let out = run(&args);
    assert!(out.status.success());
    let ids2 = std::fs::read_to_string(dir.join("identities")).unwrap();
    assert_eq!(ids1, ids2);
    assert!(ids1.lines().any(|l| l.starts_with("127.0.0.1:0 ")));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sigterm_stops_gracefully_and_metrics_are_served() {
    let dir = tmp("sigterm");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics = format!("127.0.0.1:{port}");
    let mut child = Command::new(bin())
        .args([
            "--log-level",
            "warn",
            "crawl",
            "--metrics",
            &metrics,
            "--bind",
            "127.0.0.1:0",
            "--bootstrap",
            "127.0.0.1:9",
            "--allow-private",
            "--state-dir",
            dir.to_str().unwrap(),
            "--shards",
            "2",
            "--no-pin",
            "--status",
            "never",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let body = http_get(&metrics);
    assert!(
        body.contains("dht_hunter_packets_out_total{shard=\"0\"}"),
        "{body}"
    );
    assert!(
        body.contains("dht_hunter_packets_out_total{shard=\"1\"}"),
        "{body}"
    );
    assert!(body.contains("dht_hunter_fetch_queue"), "{body}");
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(dir.join("nodes").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

fn http_get(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn sigterm_mid_crawl_keeps_every_completed_fetch() {
    use dht_hunter::loadgen::swarm::{Swarm, SwarmConfig};
    let dir = tmp("sigterm-fetch");
    let swarm = Swarm::start(&SwarmConfig::honest(300, 2000, 100, 7)).unwrap();
    let bind = free_bind();
    let args = crawl_args(
        &bind,
        &dir,
        &swarm,
        // Slow fetching down so the signal lands in the middle.
        &[
            "--fetch-timeout",
            "5",
            "--fetch-concurrency",
            "2",
            "--per-ip-pps",
            "50",
        ],
    );
    let child = Command::new(bin())
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    swarm.set_targets(&[bind.parse().unwrap()]);
    // Let it fetch for a while, but stop well before it is done.
    let db = format!("sqlite:{}", dir.join("dht-hunter.sqlite").display());
    let start = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let out = run(&["stats", "--json", "--db", &db]);
        if out.status.success() && json(&out)["torrents"].as_u64().unwrap_or(0) >= 10 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(40), "nothing fetched");
    }
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().unwrap();
    swarm.stop();
    assert!(out.status.success(), "{:?}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // "stopped: X infohashes, Y torrents fetched, Z queries answered"
    let line = stderr
        .lines()
        .find(|l| l.contains("stopped:"))
        .unwrap_or_else(|| panic!("{stderr}"));
    let fetched: u64 = line
        .split("infohashes, ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    let s = json(&run(&["stats", "--json", "--db", &db]));
    assert!(fetched >= 10, "{line}");
    assert_eq!(s["torrents"].as_u64().unwrap(), fetched, "{line}");
    assert!(
        fetched < 2000,
        "the crawl finished before the signal: {line}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn loadgen_swarm_writes_ground_truth_and_stays_on_loopback() {
    let dir = tmp("swarm");
    std::fs::create_dir_all(&dir).unwrap();
    let truth = dir.join("truth.json");
    let out = Command::new(env!("CARGO_BIN_EXE_dht-loadgen"))
        .args([
            "swarm",
            "--nodes",
            "50",
            "--torrents",
            "12",
            "--duration",
            "1",
            "--truth",
        ])
        .arg(&truth)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    assert_eq!(v["nodes"], 50);
    assert_eq!(v["torrents"], 12);
    assert!(v["bootstrap"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a.as_str().unwrap().starts_with("127.64.")));
    let t: serde_json::Value = serde_json::from_slice(&std::fs::read(&truth).unwrap()).unwrap();
    let t = t.as_array().unwrap();
    assert_eq!(t.len(), 12);
    for row in t {
        assert_eq!(row["infohash"].as_str().unwrap().len(), 40);
        let honest = row["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["honest"] == true);
        assert_eq!(row["fetchable"], honest);
    }
    // A target outside loopback is refused before anything is sent.
    let out = Command::new(env!("CARGO_BIN_EXE_dht-loadgen"))
        .args([
            "swarm",
            "--nodes",
            "5",
            "--torrents",
            "1",
            "--duration",
            "1",
            "--target",
            "192.0.2.1:6881",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn restart_resumes_unfetched_infohashes() {
    use dht_hunter::loadgen::swarm::{Swarm, SwarmConfig};
    use dht_hunter::store::Store;
    let dir = tmp("resume");
    let swarm = Swarm::start(&SwarmConfig::honest(300, 150, 0, 11)).unwrap();
    let db = format!("sqlite:{}", dir.join("dht-hunter.sqlite").display());
    let crawl = |duration: &str, max_metadata: &str| {
        let args = crawl_args(
            "127.0.0.1:0",
            &dir,
            &swarm,
            &[
                "--per-ip-pps",
                "50",
                "--max-metadata-size",
                max_metadata,
                "--fetch-timeout",
                "5",
                "--duration",
                duration,
            ],
        );
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&refs)
    };
    // First run: a metadata cap no torrent fits, so everything discovered
    // fails its fetch and stays pending.
    let out = crawl("4", "100");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pending: Vec<[u8; 20]> = {
        let s = Store::open(&db).unwrap();
        let p = s
            .pending(10_000)
            .unwrap()
            .into_iter()
            .map(|p| p.infohash)
            .collect();
        s.close().unwrap();
        p
    };
    assert!(
        pending.len() >= 10,
        "only {} pending after run 1",
        pending.len()
    );
    // Second run: it says it resumes exactly those, and fetches them.
    let out = crawl("12", "10485760");
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("resuming {} unfetched infohashes", pending.len())),
        "{stderr}"
    );
    let s = Store::open(&db).unwrap();
    let left = s.pending(10_000).unwrap();
    let mut jsonl = Vec::new();
    s.export_jsonl(&mut jsonl).unwrap();
    s.close().unwrap();
    let stored: std::collections::HashSet<String> = String::from_utf8(jsonl)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["infohash"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let missing: Vec<String> = pending
        .iter()
        .map(|infohash| dht_hunter::id::Id(*infohash).to_hex())
        .filter(|h| !stored.contains(h))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} not fetched after restart",
        missing.len(),
        pending.len()
    );
    assert!(left.is_empty(), "{} still pending", left.len());
    // Third run against the same swarm: everything it sees is already
    // stored, so it fetches nothing (the filter is rebuilt from the store).
    let out = crawl("10", "10485760");
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{} stored infohashes will not be fetched again",
            stored.len()
        )),
        "{stderr}"
    );
    let line = stderr
        .lines()
        .find(|l| l.contains("stopped:"))
        .expect("a closing line");
    assert!(line.contains(" 0 torrents fetched"), "{line}");
    let seen: u64 = line
        .split(", ")
        .find(|p| p.contains("sightings of stored torrents"))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("a sightings count");
    assert!(seen > 0, "run 3 saw none of the stored torrents: {line}");
    swarm.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Stop mid-harvest with SIGTERM, restart, kill with SIGKILL, restart: at
/// every point each infohash the crawler acknowledged an announce for is
/// stored or pending in the database (none is lost with the process).
#[test]
fn sigterm_and_sigkill_lose_no_seen_infohash() {
    use dht_hunter::loadgen::swarm::{Swarm, SwarmConfig};
    use dht_hunter::store::Store;
    use std::collections::HashSet;
    let dir = tmp("kill-keeps");
    let swarm = Swarm::start(&SwarmConfig::honest(200, 3000, 300, 21)).unwrap();
    let bind = free_bind();
    let target: std::net::SocketAddr = bind.parse().unwrap();
    let db = format!("sqlite:{}", dir.join("dht-hunter.sqlite").display());
    let spawn = || {
        // Fetch slowly, so most seen infohashes are still in progress.
        let args = crawl_args(
            &bind,
            &dir,
            &swarm,
            &["--fetch-timeout", "5", "--fetch-concurrency", "2"],
        );
        Command::new(bin())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let acked = || -> HashSet<String> {
        let stats = swarm.counters.per_target.lock().unwrap();
        stats
            .iter()
            .filter(|t| t.target == bind)
            .flat_map(|t| t.acked_torrents.iter())
            .map(|&i| swarm.truth[i as usize].infohash.clone())
            .collect()
    };
    // Waits until `more` new announces were acknowledged, then returns
    // what was acknowledged up to then.
    let seen_after = |more: usize| -> HashSet<String> {
        let base = acked().len();
        let start = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let now = acked();
            if now.len() >= base + more {
                return now;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "only {} announces acknowledged",
                now.len() - base
            );
        }
    };
    // Every seen infohash is stored or pending; returns (stored, pending).
    let check = |seen: &HashSet<String>, when: &str| -> (usize, usize) {
        let s = Store::open(&db).unwrap();
        let pending: HashSet<String> = s
            .pending(1_000_000)
            .unwrap()
            .into_iter()
            .map(|p| dht_hunter::id::Id(p.infohash).to_hex())
            .collect();
        let stored: HashSet<String> = s
            .stored_infohashes()
            .unwrap()
            .into_iter()
            .map(|infohash| dht_hunter::id::Id(infohash).to_hex())
            .collect();
        s.close().unwrap();
        let lost: Vec<&String> = seen
            .iter()
            .filter(|h| !pending.contains(*h) && !stored.contains(*h))
            .collect();
        assert!(
            lost.is_empty(),
            "{when}: {} of {} seen infohashes lost (stored {}, pending {})",
            lost.len(),
            seen.len(),
            stored.len(),
            pending.len()
        );
        let seen_stored = seen.iter().filter(|h| stored.contains(*h)).count();
        (seen_stored, seen.len() - seen_stored)
    };
    let signal = |child: &std::process::Child, sig: i32| {
        // SAFETY: sending a signal to our own child process.
        let rc = unsafe { libc::kill(child.id() as i32, sig) };
        assert_eq!(rc, 0);
    };

    // Run 1: SIGTERM mid-harvest.
    let child = spawn();
    swarm.set_targets(&[target]);
    let seen = seen_after(150);
    signal(&child, libc::SIGTERM);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let (stored, pending) = check(&seen, "after SIGTERM");
    assert!(
        pending > 0,
        "the harvest had finished ({stored} stored): not mid-harvest"
    );

    // Run 2: restart, then SIGKILL mid-harvest. What was acknowledged a
    // second before the kill has been committed (the writer commits as
    // items arrive).
    let mut child = spawn();
    let seen2: HashSet<String> = seen_after(150).union(&seen).cloned().collect();
    std::thread::sleep(Duration::from_secs(1));
    signal(&child, libc::SIGKILL);
    let _ = child.wait().unwrap();
    let (stored2, pending2) = check(&seen2, "after SIGKILL");
    assert!(pending2 > 0, "not mid-harvest ({stored2} stored)");

    // Run 3: a restart resumes from the killed run's database and still
    // holds every seen infohash when it stops.
    let child = spawn();
    std::thread::sleep(Duration::from_secs(8));
    signal(&child, libc::SIGTERM);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unfetched infohashes"), "{stderr}");
    let (stored3, _) = check(&seen2, "after the last restart");
    assert!(stored3 > stored2, "nothing fetched after the restart");
    swarm.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn completions_and_man_page_are_generated() {
    let out = run(&["completions", "bash"]);
    assert!(out.status.success());
    let bash = String::from_utf8_lossy(&out.stdout);
    assert!(bash.contains("complete") && bash.contains("crawl") && bash.contains("--max-pps"));
    let out = run(&["completions", "zsh"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("#compdef"));
    let out = run(&["man"]);
    assert!(out.status.success());
    let man = String::from_utf8_lossy(&out.stdout);
    assert!(
        man.contains(".TH dht-hunter 1"),
        "{}",
        &man[..man.len().min(200)]
    );
    assert!(man.contains("crawl"));
    let out = run(&["completions", "tcsh"]);
    assert!(!out.status.success(), "an unknown shell is refused");
}

/// Content filters at harvest time, `--max-db-size`, and `prune`, through
/// the binary against a swarm: what `--exclude` names is never stored
/// (and counted in the metrics), a database over its cap stores nothing
/// while discovery goes on (said in the log and the metrics), and `prune`
/// counts on a dry run and deletes for real.
#[test]
fn filters_size_cap_and_prune() {
    use dht_hunter::loadgen::swarm::{Swarm, SwarmConfig};
    let swarm = Swarm::start(&SwarmConfig::honest(300, 80, 100, 11)).unwrap();
    let excluded = swarm
        .truth
        .iter()
        .filter(|t| t.name.starts_with("Debian"))
        .count();
    assert!(excluded >= 5, "{excluded}");

    // 1. --exclude: a crawl until most of the swarm is stored.
    let dir = tmp("filters");
    let bind = free_bind();
    let metrics = free_bind().replace("127.0.0.1", "127.0.0.2");
    let args = crawl_args(
        &bind,
        &dir,
        &swarm,
        &["--exclude", "^Debian", "--metrics", &metrics],
    );
    let mut child = Command::new(bin())
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    swarm.set_targets(&[bind.parse().unwrap()]);
    let db = format!("sqlite:{}", dir.join("dht-hunter.sqlite").display());
    let want = (swarm.truth.len() - excluded) as u64;
    let start = Instant::now();
    let mut filtered = 0.0;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let out = run(&["stats", "--json", "--db", &db]);
        let stored = if out.status.success() {
            json(&out)["torrents"].as_u64().unwrap_or(0)
        } else {
            0
        };
        if let Ok(body) = std::panic::catch_unwind(|| http_get(&metrics)) {
            filtered = body
                .lines()
                .filter(|l| l.starts_with("dht_hunter_filtered_total{") && l.contains("excluded"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
        }
        if stored >= want * 9 / 10 && filtered >= 1.0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "stored {stored} of {want}, filtered {filtered}"
        );
    }
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert!(child.wait().unwrap().success());
    let out = run(&["export", "--db", &db]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let names: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["name"].to_string())
        .collect();
    assert!(!names.is_empty());
    assert!(
        names.iter().all(|n| !n.contains("Debian")),
        "an excluded torrent was stored"
    );
    eprintln!("stored {}, excluded and counted {filtered}", names.len());

    // 2. prune: a dry run counts, a real run deletes (by size: all of
    // them are above one byte).
    let out = run(&[
        "prune",
        "--max-size",
        "1",
        "--dry-run",
        "--json",
        "--db",
        &db,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    assert_eq!(v["matched"].as_u64().unwrap(), names.len() as u64, "{v}");
    assert_eq!(v["deleted"], 0, "{v}");
    let out = run(&["prune", "--exclude", "Café", "--json", "--db", &db]);
    assert!(out.status.success());
    let v = json(&out);
    let cafe = names.iter().filter(|n| n.contains("Café")).count() as u64;
    assert!(cafe > 0);
    assert_eq!(
        (v["matched"].as_u64(), v["deleted"].as_u64()),
        (Some(cafe), Some(cafe)),
        "{v}"
    );
    let out = run(&["stats", "--json", "--db", &db]);
    assert_eq!(
        json(&out)["torrents"].as_u64().unwrap(),
        names.len() as u64 - cafe
    );
    // Nothing to prune by, a bad pattern, a bad age: clear errors.
    for bad in [
        vec!["prune"],
        vec!["prune", "--exclude", "(oops"],
        vec!["prune", "--older-than", "3 fortnights"],
    ] {
        let mut a = bad.clone();
        a.extend(["--db", &db]);
        let out = run(&a);
        assert!(!out.status.success(), "{bad:?}");
        assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
    }
    std::fs::remove_dir_all(&dir).unwrap();

    // 3. --max-db-size below what an empty database takes: nothing is
    // stored, discovery goes on (pending grows), the log and the metrics
    // say why.
    let dir = tmp("dbcap");
    let bind = free_bind();
    let metrics = free_bind().replace("127.0.0.1", "127.0.0.3");
    let args = crawl_args(
        &bind,
        &dir,
        &swarm,
        &["--max-db-size", "16KiB", "--metrics", &metrics],
    );
    let child = Command::new(bin())
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    swarm.set_targets(&[bind.parse().unwrap()]);
    let db = format!("sqlite:{}", dir.join("dht-hunter.sqlite").display());
    let start = Instant::now();
    let mut full = String::new();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let out = run(&["stats", "--json", "--db", &db]);
        let pending = if out.status.success() {
            let s = json(&out);
            assert_eq!(s["torrents"], 0, "stored over the cap: {s}");
            s["pending"].as_u64().unwrap_or(0)
        } else {
            0
        };
        if let Ok(body) = std::panic::catch_unwind(|| http_get(&metrics)) {
            full = body
                .lines()
                .filter(|l| {
                    l.starts_with("dht_hunter_store_full")
                        || l.starts_with("dht_hunter_fetch_db_full_waits_total")
                })
                .collect::<Vec<_>>()
                .join("\n");
        }
        if pending >= 20 && full.contains("dht_hunter_store_full{backend=\"sqlite\"} 1") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "pending {pending}; metrics: {full}"
        );
    }
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().unwrap();
    swarm.stop();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--max-db-size"), "{stderr}");
    let out = run(&["stats", "--json", "--db", &db]);
    assert_eq!(json(&out)["torrents"], 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A host whose open-file hard limit cannot hold the default fetch pool:
/// the default shrinks to fit, with a warning naming the numbers, and the
/// crawl runs; the same size asked for explicitly is refused, naming the
/// limit and the flag.
#[test]
fn default_fetch_pool_fits_a_low_open_file_limit() {
    let hard = String::from_utf8(
        Command::new("bash")
            .args(["-c", "ulimit -H -n"])
            .output()
            .expect("bash")
            .stdout,
    )
    .unwrap();
    let limit: u64 = match hard.trim() {
        "unlimited" => 1500,
        n => n.parse::<u64>().unwrap().min(1500),
    };
    assert!(limit >= 400, "this host's hard open-file limit is {limit}");
    // One shard, one bind: (limit - 64 - 1 - 32) / 2 fetches fit.
    let fits = (limit - 64 - 33) / 2;
    let dir = tmp("lowfd");
    let crawl = |extra: &[&str]| {
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(format!(
                "ulimit -S -n {limit} && ulimit -H -n {limit} && exec \"$0\" \"$@\""
            ))
            .arg(bin())
            .args(idle_crawl_args(&dir))
            .args(extra)
            .stdin(Stdio::null());
        cmd.output().expect("run dht-hunter under bash")
    };
    let out = crawl(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "the open-file hard limit ({limit}) allows {fits} concurrent fetches per shard on 1 shards, below the default {}",
            dht_hunter::fetch::DEFAULT_CONCURRENCY
        )),
        "{err}"
    );
    let asked = dht_hunter::fetch::DEFAULT_CONCURRENCY.to_string();
    let out = crawl(&["--fetch-concurrency", &asked]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("the open-file limit is {limit}"))
            && err.contains("--fetch-concurrency"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
