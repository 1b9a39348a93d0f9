//! Real clients against `crawl --web` after a short real harvest of a
//! simulated swarm on loopback:
//!
//! * a headless Chromium (Debian's `chromium`) loads the search page,
//!   follows the link to a harvested torrent, checks its file tree and
//!   magnet link, and loads the live status page; screenshots of the three
//!   pages are written to `$DHT_HUNTER_SCREENSHOTS` when set (the README's
//!   come from there: `tuning/screenshots/`);
//! * FlexGet's torznab plugin (`flexget` on PATH, or
//!   `$DHT_HUNTER_FLEXGET`) reads the caps and searches the Torznab
//!   endpoint with the API key, and must get the stored torrents back.
//!
//! Each client is skipped with a notice when it is not installed, and its
//! absence is a failure when `CI` is set (`.ci/run` installs both).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/http.rs"]
mod http;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dht_hunter::loadgen::swarm::{Swarm, SwarmConfig};

const API_KEY: &str = "test-key-0123456789";

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dh-webc-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

/// A program, or a skip notice (a failure under CI).
fn find_program(what: &str, env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    for n in names {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {n}")])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        if found.is_some() {
            return found;
        }
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but {what} is not installed (.ci/run installs it)"
    );
    eprintln!("notice: {what} is not installed; skipping its part of this test");
    None
}

/// Runs headless Chromium with a fresh profile.
fn chromium(bin: &Path, args: &[&str]) -> String {
    let profile = tmp("chromium-profile");
    let out = chromium_in(bin, &profile, args);
    let _ = std::fs::remove_dir_all(profile);
    out
}

/// Runs headless Chromium with `profile`, which keeps its cookies from
/// one run to the next as a person's browser does.
fn chromium_in(bin: &Path, profile: &Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium {args:?}: {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The DOM Chromium renders for `url`, with a fresh profile (no cookies).
fn dump(bin: &Path, url: &str) -> String {
    chromium(bin, &["--dump-dom", url])
}

fn screenshot(bin: &Path, url: &str, file: &str) {
    let Some(dir) = std::env::var_os("DHT_HUNTER_SCREENSHOTS") else {
        return;
    };
    let path = PathBuf::from(dir).join(file);
    chromium(
        bin,
        &[
            &format!("--screenshot={}", path.display()),
            "--window-size=1280,900",
            url,
        ],
    );
    assert!(std::fs::metadata(&path).unwrap().len() > 1000);
}

#[test]
fn browser_and_torznab_client_against_a_short_harvest() {
    let chrome = find_program(
        "chromium",
        "DHT_HUNTER_CHROMIUM",
        &["chromium", "chromium-browser"],
    );
    let flexget = find_program("FlexGet", "DHT_HUNTER_FLEXGET", &["flexget"]);
    if chrome.is_none() && flexget.is_none() {
        return;
    }
    let dir = tmp("harvest");
    let swarm = Swarm::start(&SwarmConfig::honest(300, 40, 0, 5)).unwrap();
    let bind = format!("127.0.0.1:{}", free_port(true));
    let web: SocketAddr = format!("127.0.0.1:{}", free_port(false)).parse().unwrap();
    let mut args: Vec<String> = [
        "crawl",
        "--bind",
        &bind,
        "--allow-private",
        "--state-dir",
        dir.to_str().unwrap(),
        "--shards",
        "2",
        "--no-pin",
        "--oversubscribe",
        "--status",
        "never",
        "--duration",
        "120",
        "--web",
        &web.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for n in swarm.node_addrs.iter().take(8) {
        args.push("--bootstrap".into());
        args.push(n.to_string());
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_dht-hunter"))
        .args(&args)
        .env("DHT_HUNTER_WEB_API_KEY", API_KEY)
        .env_remove("DHT_HUNTER_WEB_AUTH")
        .env_remove("DHT_HUNTER_DB_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    swarm.set_targets(&[bind.parse().unwrap()]);
    // Harvest until a good part of the swarm is stored (read through the API).
    let start = Instant::now();
    let stored = loop {
        std::thread::sleep(Duration::from_millis(500));
        let n = std::net::TcpStream::connect(web)
            .ok()
            .map(|_| http::get(web, "/api/stats", &[("X-Api-Key", API_KEY)]))
            .filter(|r| r.status == 200)
            .and_then(|r| r.json()["torrents"].as_u64())
            .unwrap_or(0);
        if n >= 20 {
            break n;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "only {n} stored");
    };
    // A harvested torrent, from the ground truth.
    let list = http::get(web, "/api/search?limit=100", &[("X-Api-Key", API_KEY)]).json();
    let hits = list["hits"].as_array().unwrap();
    assert!(hits.len() as u64 >= stored);
    // One with several files, so there is a tree to check.
    let pick = hits
        .iter()
        .find(|h| h["files"].as_u64().unwrap() >= 3)
        .unwrap_or(&hits[0]);
    let infohash = pick["infohash"].as_str().unwrap().to_owned();
    let truth = swarm.truth.iter().find(|t| t.infohash == infohash).unwrap();
    let base = format!("http://127.0.0.1:{}", web.port());

    if let Some(chrome) = &chrome {
        // A person opens the UI once with the key; the browser keeps it
        // (a cookie), so the search form and the links, which do not
        // carry it, work from then on.
        let profile = tmp("chromium-person");
        let dom = chromium_in(
            chrome,
            &profile,
            &["--dump-dom", &format!("{base}/?apikey={API_KEY}")],
        );
        assert!(dom.contains("name=\"q\""), "{dom}");
        // The search form's GET, as submitting it sends it (no key).
        let q = http::enc(&truth.name);
        let dom = chromium_in(
            chrome,
            &profile,
            &["--dump-dom", &format!("{base}/?q={q}&cat=&sort=relevance")],
        );
        let link = format!("href=\"/t/{infohash}\"");
        assert!(dom.contains(&link), "search page lacks {link}:\n{dom}");
        // The page's link, followed as a click does (relative, no key).
        let dom = chromium_in(
            chrome,
            &profile,
            &["--dump-dom", &format!("{base}/t/{infohash}")],
        );
        for (path, _) in &truth.files {
            let file = path.rsplit('/').next().unwrap();
            let escaped = file
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;");
            assert!(
                dom.contains(&escaped),
                "file {file:?} missing from the tree:\n{dom}"
            );
        }
        let magnet = format!("magnet:?xt=urn:btih:{infohash}&amp;dn=");
        assert!(dom.contains(&magnet), "no magnet link:\n{dom}");
        // The sampler's second sample (10 s apart) brings the rates.
        std::thread::sleep(Duration::from_secs(11).saturating_sub(start.elapsed()));
        let dom = chromium_in(chrome, &profile, &["--dump-dom", &format!("{base}/status")]);
        let _ = std::fs::remove_dir_all(&profile);
        let status_url = format!("{base}/status?apikey={API_KEY}");
        let page_url = format!("{base}/t/{infohash}?apikey={API_KEY}");
        assert!(dom.contains("Shards") && dom.contains("<svg"), "{dom}");
        assert!(dom.contains("Crawler (this process)"), "{dom}");
        // Without the key (a fresh browser) it gets nothing.
        let dom = dump(chrome, &format!("{base}/t/{infohash}"));
        assert!(!dom.contains(&infohash), "{dom}");
        screenshot(
            chrome,
            &format!("{base}/?q=&apikey={API_KEY}"),
            "search.png",
        );
        screenshot(chrome, &page_url, "torrent.png");
        screenshot(chrome, &status_url, "status.png");
    }

    if let Some(flexget) = &flexget {
        let home = tmp("flexget");
        // The first word of the torrent's name, as a search string.
        let word = dht_hunter::store::search_tokens([truth.name.as_str()])
            .into_iter()
            .next()
            .unwrap();
        let config = format!(
            "tasks:\n  harvest:\n    discover:\n      release_estimations: ignore\n      what:\n        - mock:\n            - title: {word:?}\n      from:\n        - torznab:\n            url: {base}/torznab\n            apikey: {API_KEY}\n            searcher: search\n    accept_all: yes\n"
        );
        std::fs::write(home.join("config.yml"), config).unwrap();
        let out = Command::new(flexget)
            .current_dir(&home)
            .env("HOME", &home)
            // FlexGet's dump is a table cut to the terminal's width; the
            // checks below read only fields that fit, but a wide table
            // keeps the magnets whole for whoever reads a failure.
            .env("COLUMNS", "250")
            .args([
                "-c",
                "config.yml",
                "--logfile",
                "flexget.log",
                "execute",
                "--dump",
                "--discover-now",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "flexget: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Every stored torrent the word finds comes back, as a magnet
        // with its infohash (FlexGet's own field, upper-case hex).
        let want = http::get(
            web,
            &format!("/api/search?q={}&limit=100", http::enc(&word)),
            &[("X-Api-Key", API_KEY)],
        )
        .json();
        let want: Vec<&str> = want["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["infohash"].as_str().unwrap())
            .collect();
        assert!(want.contains(&infohash.as_str()));
        let field = |name: &str| -> Vec<String> {
            text.lines()
                .filter_map(|l| l.split_once(':').filter(|(k, _)| k.trim() == name))
                .map(|(_, v)| v.trim().to_string())
                .collect()
        };
        let hashes = field("torrent_info_hash");
        for h in &want {
            assert!(
                hashes.contains(&h.to_uppercase()),
                "{h} not in FlexGet's entries:\n{text}"
            );
        }
        assert_eq!(hashes.len(), want.len(), "{text}");
        let urls = field("url");
        assert_eq!(urls.len(), want.len(), "{text}");
        assert!(
            urls.iter().all(|u| u.starts_with("magnet:?xt=urn:btih:")),
            "{urls:?}"
        );
        // A wrong key is refused, as a Torznab client sees it.
        std::fs::write(
            home.join("bad.yml"),
            std::fs::read_to_string(home.join("config.yml"))
                .unwrap()
                .replace(API_KEY, "wrong"),
        )
        .unwrap();
        let out = Command::new(flexget)
            .current_dir(&home)
            .env("HOME", &home)
            .args([
                "-c",
                "bad.yml",
                "--logfile",
                "flexget.log",
                "execute",
                "--dump",
                "--discover-now",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("magnet:?"), "{text}");
        // FlexGet 3.22 reads the caps answer (our error 100 document) as
        // caps, fails on its missing <searching> and aborts the task: the
        // log shows that the task ran and got nothing, not that FlexGet
        // never started.
        let log = std::fs::read_to_string(home.join("flexget.log")).unwrap_or_default();
        assert!(
            log.contains("Aborting task") && log.contains("harvest"),
            "{log}"
        );
        let _ = std::fs::remove_dir_all(home);
    }

    // SAFETY: a signal to our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    swarm.stop();
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(dir);
}

/// `dht-hunter serve` over an existing store: answers, stops on SIGTERM
/// with exit 0, refuses a public bind without credentials (exit 2) and a
/// missing database.
#[test]
fn serve_command_serves_an_existing_store_and_refuses_unsafe_binds() {
    let dir = tmp("serve");
    let db = format!("sqlite:{}", dir.join("db.sqlite").display());
    let bin = env!("CARGO_BIN_EXE_dht-hunter");
    let out = Command::new(bin)
        .args(["serve", "--db", &db])
        .env_remove("DHT_HUNTER_WEB_API_KEY")
        .env_remove("DHT_HUNTER_WEB_AUTH")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no database at"));
    // A store with one torrent, written as the crawler would.
    let store = dht_hunter::store::Store::open(&db).unwrap();
    let mut rng = dht_hunter::rng::Rng::seed_from_u64(3);
    let mut infohash = [0u8; 20];
    rng.fill(&mut infohash);
    store
        .writer()
        .fetched(dht_hunter::store::TorrentRecord {
            infohash,
            torrent: dht_hunter::metainfo::Torrent {
                name: "served torrent".into(),
                total_size: 5,
                piece_length: 16384,
                private: false,
                files: vec![dht_hunter::metainfo::TorrentFile {
                    path: vec!["a.txt".into()],
                    size: 5,
                }],
            },
            source: dht_hunter::store::Source::Announce,
            discovered_at: std::time::SystemTime::now(),
            fetched_at: std::time::SystemTime::now(),
        })
        .unwrap();
    store.close().unwrap();

    let out = Command::new(bin)
        .args(["serve", "--db", &db, "--web", "0.0.0.0:0"])
        .env_remove("DHT_HUNTER_WEB_API_KEY")
        .env_remove("DHT_HUNTER_WEB_AUTH")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--web-insecure-public"));

    let port = free_port(false);
    let web: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let key = dir.join("key");
    std::fs::write(&key, "file-key\n").unwrap();
    let mut child = Command::new(bin)
        .args(["serve", "--db", &db, "--web", &web.to_string()])
        .arg("--web-api-key-file")
        .arg(&key)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(web).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "serve did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(http::get(web, "/api/stats", &[]).status, 401);
    let v = http::get(web, "/api/search?q=served", &[("X-Api-Key", "file-key")]).json();
    assert_eq!(v["hits"][0]["name"], "served torrent");
    // SAFETY: a signal to our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert!(child.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(dir);
}
