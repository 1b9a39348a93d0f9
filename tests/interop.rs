//! Interop with libtorrent 2.0 (Debian's python3-libtorrent), on loopback,
//! inside a private network namespace so that nothing can leave the
//! machine: each test re-runs itself under `unshare -n` with only `lo` up.
//!
//! * libtorrent seeds real torrents (one-piece and multi-piece metadata,
//!   non-ASCII names) and our fetcher gets their metadata; what we parse
//!   equals what libtorrent holds.
//! * libtorrent seeds over uTP only, or over TCP and uTP: our fetcher gets
//!   the metadata over uTP (BEP 29) with each transport policy that allows
//!   it, and the counts say which transport carried each fetch.
//! * libtorrent DHT sessions bootstrap from our node: they get correct
//!   answers, their announces reach us, and our sample_infohashes queries to
//!   them are answered and parsed.
//! * libtorrent sessions that search for their torrent long before they
//!   announce it (as real clients do): every torrent must still be stored.
//!
//! Without root or python3-libtorrent the tests are skipped with a notice,
//! except under `CI`, where that is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
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
    // Can this user make a network namespace at all? (Not without root or
    // unprivileged user namespaces; a failure inside the namespace is then
    // told apart from not being allowed to make one.)
    let probe = Command::new("unshare")
        .args(["-n", "true"])
        .stderr(Stdio::piped())
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            skip_or_fail(&format!(
                "unshare -n is not permitted here ({}); run as root",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
            return false;
        }
        Err(e) => {
            skip_or_fail(&format!("unshare not available: {e}"));
            return false;
        }
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

/// libtorrent as a seeder that forces MSE/PE with RC4 (in/out_enc_policy
/// forced, allowed_enc_level rc4): our fetcher with the default policy
/// (plain first) is refused in plaintext, falls back to MSE on a second
/// connection, fetches and verifies every torrent; with encryption off it
/// gets nothing, which shows the seeder really refuses plaintext.
#[test]
fn libtorrent_forced_encryption_seeds_to_our_fetcher() {
    use dht_hunter::fetch::{attempt_peer, EncryptionPolicy, FetchStats, Handshake};
    if !in_netns("libtorrent_forced_encryption_seeds_to_our_fetcher") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("dh-interop-mse-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let mut seeder = Command::new(PY)
        .arg(root().join("tests/interop/lt_seed.py"))
        .args(["--dir", dir.to_str().unwrap(), "--port", &port.to_string()])
        .args(["--encryption", "forced"])
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
    let peer: SocketAddr = ([127, 0, 0, 1], port).into();
    let wanted: Vec<Id> = torrents
        .iter()
        .map(|t| t.infohash.parse().unwrap())
        .collect();
    let (fetched, off, counts) = shards::glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let tcp = shards::TcpConnector::new(shards::TcpOptions::default(), 0);
            let stats = FetchStats::default();
            let id = *b"-DH0100-interop00000";
            let cfg = dht_hunter::wire::FetchConfig::default();
            let mut out = Vec::new();
            for infohash in &wanted {
                let r = attempt_peer(
                    &tcp,
                    peer,
                    *infohash,
                    id,
                    cfg,
                    EncryptionPolicy::PlainFirst,
                    &stats,
                )
                .await;
                out.push(r.map(|v| v.info).map_err(|e| e.to_string()));
            }
            let off = attempt_peer(
                &tcp,
                peer,
                wanted[0],
                id,
                cfg,
                EncryptionPolicy::Off,
                &stats,
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
            let counts = (
                stats.handshakes(Handshake::Plain),
                stats.handshakes(Handshake::MseRc4),
                stats.handshakes(Handshake::MsePlaintext),
                stats.fallbacks.get(),
            );
            (out, off, counts)
        })
        .unwrap()
        .join()
        .unwrap();
    for (result, t) in fetched.iter().zip(&torrents) {
        let info = result
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: {e}", t.name));
        assert_eq!(info.len(), t.info_len, "{}", t.name);
        let infohash: Id = t.infohash.parse().unwrap();
        assert_eq!(dht_hunter::wire::sha1_infohash(info), infohash);
        let parsed = dht_hunter::metainfo::parse_info(info).unwrap();
        assert_eq!(parsed.name.display(), t.name);
        assert_eq!(parsed.total_size, t.total_size);
    }
    let n = torrents.len() as u64;
    // Each torrent: a plaintext connection refused, then MSE with RC4;
    // then the plaintext-only try, refused.
    assert_eq!(
        counts,
        (n + 1, n, 0, n),
        "plain, rc4, mse-plaintext, fallbacks"
    );
    assert!(off.is_err(), "a forced-encryption seeder served plaintext");
    let _ = seeder.kill();
    let _ = seeder.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts lt_seed.py with `args`; returns the child and the torrents it
/// seeds once it printed READY.
/// A libtorrent seeder started by `lt_seed.py` with `args` in a fresh
/// directory, with what it seeds; killed and cleaned up on drop.
struct SeederRun {
    dir: std::path::PathBuf,
    seeder: std::process::Child,
    torrents: Vec<Seeded>,
    peer: SocketAddr,
    wanted: Vec<Id>,
}

impl SeederRun {
    fn start(tag: &str, args: &[&str]) -> SeederRun {
        let dir = std::env::temp_dir().join(format!("dh-interop-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let (seeder, torrents) = start_seeder(&dir, port, args);
        let wanted = torrents
            .iter()
            .map(|t| t.infohash.parse().unwrap())
            .collect();
        SeederRun {
            dir,
            seeder,
            torrents,
            peer: ([127, 0, 0, 1], port).into(),
            wanted,
        }
    }
}

impl Drop for SeederRun {
    fn drop(&mut self) {
        let _ = self.seeder.kill();
        let _ = self.seeder.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_seeder(
    dir: &std::path::Path,
    port: u16,
    args: &[&str],
) -> (std::process::Child, Vec<Seeded>) {
    let mut seeder = Command::new(PY)
        .arg(root().join("tests/interop/lt_seed.py"))
        .args(["--dir", dir.to_str().unwrap(), "--port", &port.to_string()])
        .args(args)
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
    // Its later lines (peer events with --events) go to our stderr, which
    // shows libtorrent's side of a failure.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            eprintln!("lt_seed: {line}");
        }
    });
    (seeder, torrents)
}

/// Per-transport counts after a run: connections (tcp, utp), verified
/// fetches (tcp, utp), transport fallbacks, uTP transport failures.
type TransportCounts = ((u64, u64), (u64, u64), u64, u64);

/// Fetches every infohash from `peer` with `transport`, uTP on a loopback
/// UDP socket multiplexed as the shard's is (a receive task hands uTP
/// datagrams to the multiplexer).
fn fetch_via(
    peer: SocketAddr,
    wanted: Vec<Id>,
    transport: dht_hunter::fetch::TransportPolicy,
) -> (Vec<Result<Vec<u8>, String>>, TransportCounts) {
    use dht_hunter::fetch::{
        attempt_peer_via, EncryptionPolicy, FetchStats, Transport, UtpMux, UtpSocket,
    };
    shards::glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let sock =
                std::rc::Rc::new(shards::glommio::net::UdpSocket::bind("127.0.0.1:0").unwrap());
            let mux = UtpMux::new(UtpSocket::Plain(sock.clone()), 64);
            let rx = {
                let (sock, mux) = (sock.clone(), mux.clone());
                shards::glommio::spawn_local(async move {
                    let mut buf = vec![0u8; 65536];
                    while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                        let taken = mux.handle_datagram(from, &buf[..n], Instant::now());
                        assert!(taken, "a non-uTP datagram on the uTP socket");
                    }
                })
                .detach()
            };
            let tcp = shards::TcpConnector::new(shards::TcpOptions::default(), 0);
            let stats = FetchStats::default();
            let id = *b"-DH0100-interop00000";
            let cfg = dht_hunter::wire::FetchConfig::default();
            let mut out = Vec::new();
            for infohash in &wanted {
                let r = attempt_peer_via(
                    &tcp,
                    Some(&mux),
                    peer,
                    *infohash,
                    id,
                    cfg,
                    EncryptionPolicy::Off,
                    transport,
                    &stats,
                )
                .await;
                out.push(r.map(|v| v.info).map_err(|e| e.to_string()));
            }
            rx.cancel();
            let counts = (
                (
                    stats.transports(Transport::Tcp),
                    stats.transports(Transport::Utp),
                ),
                (
                    stats.transport_ok(Transport::Tcp),
                    stats.transport_ok(Transport::Utp),
                ),
                stats.transport_fallbacks.get(),
                stats.utp_failed.get(),
            );
            eprintln!("{transport:?}: mux {:?}", mux.stats());
            (out, counts)
        })
        .unwrap()
        .join()
        .unwrap()
}

fn check_fetched(fetched: &[Result<Vec<u8>, String>], torrents: &[Seeded]) {
    assert_eq!(fetched.len(), torrents.len());
    for (result, t) in fetched.iter().zip(torrents) {
        let info = result
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: {e}", t.name));
        assert_eq!(info.len(), t.info_len, "{}", t.name);
        let infohash: Id = t.infohash.parse().unwrap();
        assert_eq!(dht_hunter::wire::sha1_infohash(info), infohash);
        let parsed = dht_hunter::metainfo::parse_info(info).unwrap();
        assert_eq!(parsed.name.display(), t.name);
        assert_eq!(parsed.total_size, t.total_size);
    }
}

/// libtorrent seeding over uTP only (incoming TCP off): our fetcher gets
/// every torrent's metadata (one-piece and multi-piece) over uTP, with uTP
/// only and with the default TCP-first policy (TCP is closed on us, then
/// uTP); with TCP only it gets nothing, which shows TCP really is off.
#[test]
fn libtorrent_utp_only_seeds_to_our_fetcher() {
    use dht_hunter::fetch::TransportPolicy;
    if !in_netns("libtorrent_utp_only_seeds_to_our_fetcher") {
        return;
    }
    let run = SeederRun::start("utp", &["--transport", "utp", "--events"]);
    let (peer, wanted, torrents) = (run.peer, &run.wanted, &run.torrents);
    assert!(
        torrents.iter().any(|t| t.info_len > 16 * 1024),
        "no multi-piece metadata"
    );
    let n = wanted.len() as u64;

    let (fetched, counts) = fetch_via(peer, wanted.clone(), TransportPolicy::TcpFirst);
    eprintln!("tcp-first: {counts:?}");
    check_fetched(&fetched, torrents);
    assert_eq!(counts.1, (0, n), "verified over (tcp, utp)");
    assert_eq!(counts.2, n, "one fallback to uTP per torrent");

    let (fetched, counts) = fetch_via(peer, wanted.clone(), TransportPolicy::UtpOnly);
    eprintln!("utp-only: {counts:?}");
    check_fetched(&fetched, torrents);
    assert_eq!(counts.0 .1, n, "uTP connections");
    assert_eq!(counts.1, (0, n), "verified over (tcp, utp)");

    let (fetched, counts) = fetch_via(peer, wanted[..1].to_vec(), TransportPolicy::TcpOnly);
    eprintln!("tcp-only: {counts:?} {fetched:?}");
    assert!(fetched[0].is_err(), "a uTP-only seeder served TCP");
    assert_eq!(counts.1, (0, 0));
}

/// libtorrent with its default transports (incoming TCP and uTP): the
/// fetch works with each policy, and the counts say which transport
/// carried it (TCP first: TCP; uTP first or only: uTP).
#[test]
fn libtorrent_tcp_and_utp_seeds_either_way() {
    use dht_hunter::fetch::TransportPolicy;
    if !in_netns("libtorrent_tcp_and_utp_seeds_either_way") {
        return;
    }
    let run = SeederRun::start("both", &[]);
    let (peer, wanted, torrents) = (run.peer, &run.wanted, &run.torrents);
    let n = wanted.len() as u64;
    for (policy, want) in [
        (TransportPolicy::TcpFirst, (n, 0)),
        (TransportPolicy::UtpFirst, (0, n)),
        (TransportPolicy::UtpOnly, (0, n)),
        (TransportPolicy::TcpOnly, (n, 0)),
    ] {
        let (fetched, counts) = fetch_via(peer, wanted.clone(), policy);
        eprintln!(
            "{}: verified over (tcp, utp) {:?}, all counts {counts:?}",
            policy.as_str(),
            counts.1
        );
        check_fetched(&fetched, torrents);
        assert_eq!(counts.1, want, "{policy:?}: verified over (tcp, utp)");
        assert_eq!(counts.2, 0, "{policy:?}: no fallback needed");
    }
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
            for (infohash, _) in wanted {
                let r = dht_hunter::fetch::attempt(
                    &tcp,
                    peer,
                    infohash,
                    *b"-DH0100-interop00000",
                    dht_hunter::wire::FetchConfig::default(),
                    dht_hunter::fetch::Wire::Plain,
                    std::time::Instant::now(),
                    &dht_hunter::fetch::FetchStats::default(),
                )
                .await;
                out.push((infohash, r.map(|v| v.info).map_err(|e| e.to_string())));
            }
            out
        })
        .unwrap()
        .join()
        .unwrap();
    for ((infohash, result), t) in fetched.iter().zip(&torrents) {
        let info = result
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: {e}", t.name));
        assert_eq!(info.len(), t.info_len, "{}", t.name);
        assert_eq!(dht_hunter::wire::sha1_infohash(info), *infohash);
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
    for ((infohash, result), _) in fetched.iter().zip(&torrents) {
        let torrent = dht_hunter::metainfo::parse_info(result.as_ref().unwrap()).unwrap();
        w.fetched(dht_hunter::store::TorrentRecord {
            infohash: infohash.0,
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
        per_ip_pps: Some(200),
        ..FileConfig::loopback(2, vec!["127.0.0.1:9".into()], dir.clone(), db.clone())
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
        EngineParts::new(store.writer(), telemetry.clone()).with_tweak(tweak),
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
    for infohash in [ih1, ih2] {
        let infohash: Id = infohash.parse().unwrap();
        assert!(
            pending.iter().any(|p| p.infohash == infohash.0),
            "{infohash} not recorded as discovered"
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

/// `DHT_HUNTER_INTEROP_RUNS=N` runs
/// [`libtorrent_searches_long_before_announcing_all_stored`] N times in a
/// row (each with a fresh engine, store and libtorrent sessions) and fails
/// if any run fails, after reporting every run.
const RUNS_ENV: &str = "DHT_HUNTER_INTEROP_RUNS";
/// libtorrent sessions, one torrent each.
const SEARCH_SESSIONS: usize = 8;
/// How long the sessions only search (get_peers) before they announce.
const SEARCH_SECONDS: u64 = 15;
/// Overrides SEARCH_SECONDS (for experiments). With `0` the announce
/// follows the first search within milliseconds, as when libtorrent adds a
/// torrent normally; the ordering check is then void.
const SEARCH_SECONDS_ENV: &str = "DHT_HUNTER_INTEROP_SEARCH_SECONDS";
/// How long after the announces every torrent must be stored.
const STORE_DEADLINE: Duration = Duration::from_secs(120);

/// One run of the search-then-announce scenario.
#[derive(Debug)]
struct SearchRun {
    stored: usize,
    total: usize,
    /// Stored torrents whose metadata differs from what libtorrent seeds.
    mismatches: Vec<String>,
    /// Infohash, name, and what happened, for every torrent not stored.
    missing: Vec<String>,
    /// Seconds from the announce phase until the last torrent was stored.
    all_stored_after: Option<f64>,
    telemetry: String,
}

impl SearchRun {
    fn ok(&self) -> bool {
        self.stored == self.total && self.mismatches.is_empty()
    }
}

/// Real clients search for a torrent (get_peers) long before they announce
/// it: the crawler first learns each infohash from a get_peers, when no peer
/// is known, and the peer only arrives later in an announce_peer. Eight
/// libtorrent sessions, each on its own loopback address and seeding one
/// torrent of its own, join the DHT through a 2-shard engine with the crawl
/// defaults (given to them as an ordinary node, not as a bootstrap router),
/// search for SEARCH_SECONDS, then announce (see
/// tests/interop/lt_search_announce.py for how the order is made and
/// observed). Every torrent must be stored within STORE_DEADLINE of the
/// announces, with libtorrent's name, size and files.
///
/// The harness checks itself before blaming the crawler: libtorrent's own
/// packet alerts must show, per torrent, a get_peers to the crawler that it
/// answered, then (SEARCH_SECONDS later, and none to anyone before) an
/// announce_peer to the crawler, answered without error where the torrent
/// was not stored, and afterwards every session must serve its metadata
/// over ut_metadata to a plain BEP 9 client.
#[test]
fn libtorrent_searches_long_before_announcing_all_stored() {
    if !in_netns("libtorrent_searches_long_before_announcing_all_stored") {
        return;
    }
    let runs: usize = match std::env::var(RUNS_ENV) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{RUNS_ENV}={v:?} is not a count")),
        Err(_) => 1,
    };
    let search_seconds: u64 = match std::env::var(SEARCH_SECONDS_ENV) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{SEARCH_SECONDS_ENV}={v:?} is not a number of seconds")),
        Err(_) => SEARCH_SECONDS,
    };
    let mut results = Vec::new();
    for run in 1..=runs.max(1) {
        let r = search_then_announce_run(run, search_seconds);
        eprintln!(
            "search-then-announce run {run}/{runs}: {}/{} stored{}{}",
            r.stored,
            r.total,
            r.all_stored_after
                .map(|s| format!(" ({s:.1} s after the announces)"))
                .unwrap_or_default(),
            if r.mismatches.is_empty() {
                String::new()
            } else {
                format!(", {} with wrong metadata", r.mismatches.len())
            }
        );
        results.push(r);
    }
    let failed: Vec<(usize, &SearchRun)> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.ok())
        .map(|(i, r)| (i + 1, r))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} runs did not store every torrent (stored per run: {:?}):\n{}",
        failed.len(),
        results.len(),
        results.iter().map(|r| r.stored).collect::<Vec<_>>(),
        failed
            .iter()
            .map(|(i, r)| format!(
                "run {i}: {}/{} stored\n  missing: {}\n  wrong metadata: {:?}\n  crawler: {}",
                r.stored,
                r.total,
                r.missing.join("\n           "),
                r.mismatches,
                r.telemetry
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn search_then_announce_run(run: usize, search_seconds: u64) -> SearchRun {
    let dir = std::env::temp_dir().join(format!("dh-interop-search-{}-{run}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite:{}", dir.join("db.sqlite").display());
    // The crawl defaults, except what loopback and this machine need: a
    // loopback bind, private addresses allowed, no real bootstrap routers
    // (port 9 on loopback answers nothing), no core pinning.
    let cfg = CrawlConfig::resolve(FileConfig {
        ..FileConfig::loopback(2, vec!["127.0.0.1:9".into()], dir.clone(), db.clone())
    })
    .unwrap();
    let store = Store::open(&db).unwrap();
    let telemetry = Arc::new(Telemetry::default());
    let eng = engine::start(&cfg, EngineParts::new(store.writer(), telemetry.clone())).unwrap();
    let ours = eng.udp_addrs[0];
    // bep42 mode: one id for the bind address, in STATE_DIR/identities.
    let ids = std::fs::read_to_string(dir.join("identities")).unwrap();
    let crawler_id = ids
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.split_whitespace().nth(1))
        .expect("no id in the identities file")
        .to_string();
    assert_eq!(crawler_id.len(), 40, "identities: {ids}");

    let mut script = Command::new(PY)
        .arg(root().join("tests/interop/lt_search_announce.py"))
        .args([
            "--crawler",
            &ours.to_string(),
            "--crawler-id",
            &crawler_id,
            "--dir",
            dir.join("lt").to_str().unwrap(),
            "--sessions",
            &SEARCH_SESSIONS.to_string(),
            "--port",
            &free_port().to_string(),
            "--search-seconds",
            &search_seconds.to_string(),
            "--max-seconds",
            &(search_seconds + STORE_DEADLINE.as_secs() + 40).to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = script.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str(&line) {
                Ok(v) => {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
                Err(_) => eprintln!("lt_search_announce.py: {line}"),
            }
        }
    });

    let mut torrents: Vec<Seeded> = Vec::new();
    let mut events: Vec<serde_json::Value> = Vec::new();
    let mut announce_phase: Option<Instant> = None;
    let mut stored: std::collections::HashMap<String, serde_json::Value> = Default::default();
    let mut all_stored_after = None;
    let exported = |store: &Store| -> std::collections::HashMap<String, serde_json::Value> {
        store.flush().unwrap();
        let mut out = Vec::new();
        store.export_jsonl(&mut out).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| (v["infohash"].as_str().unwrap().to_string(), v))
            .collect()
    };
    let started = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(ev) => {
                if ev["event"] == "torrent" {
                    torrents.push(serde_json::from_value(ev.clone()).unwrap());
                }
                if ev["event"] == "announce_phase" {
                    announce_phase = Some(Instant::now());
                }
                events.push(ev);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if let Some(at) = announce_phase {
            if torrents.len() == SEARCH_SESSIONS {
                stored = exported(&store);
                if torrents.iter().all(|t| stored.contains_key(&t.infohash)) {
                    all_stored_after = Some(at.elapsed().as_secs_f64());
                    break;
                }
            }
            if at.elapsed() > STORE_DEADLINE {
                break;
            }
        } else if started.elapsed() > Duration::from_secs(search_seconds + 60) {
            panic!("harness: lt_search_announce.py never reached its announce phase: {events:?}");
        }
    }
    // Closing stdin makes the script check ut_metadata and summarise.
    drop(script.stdin.take());
    events.extend(rx.iter());
    reader.join().unwrap();
    let status = script.wait().unwrap();
    let stop = eng.shutdown_handle();
    stop.trigger();
    eng.join().unwrap();
    let t = telemetry.totals();

    // The harness itself: a failure here is not the crawler's.
    assert!(status.success(), "harness: lt_search_announce.py: {status}");
    assert_eq!(
        torrents.len(),
        SEARCH_SESSIONS,
        "harness: torrents seeded: {events:?}"
    );
    let summary = events
        .iter()
        .rfind(|e| e["event"] == "summary")
        .unwrap_or_else(|| panic!("harness: no summary from lt_search_announce.py: {events:?}"));
    let rows = summary["torrents"].as_array().unwrap();
    assert_eq!(rows.len(), SEARCH_SESSIONS);
    let mut harness = Vec::new();
    for r in rows {
        let what = format!("session {} {} ({})", r["session"], r["infohash"], r["name"]);
        let search = r["search_to_crawler_at"].as_f64();
        let announce = r["announce_to_crawler_at"].as_f64();
        // The first announce_peer for it to any node, not only to us: had
        // one gone out during the search phase, our own lookup could have
        // found the peer at another node.
        let announce_any = r["first_announce_to_anyone_at"].as_f64();
        match (search, announce, announce_any) {
            (None, _, _) => harness.push(format!("{what}: no get_peers to the crawler")),
            (_, None, _) | (_, _, None) => {
                harness.push(format!("{what}: no announce_peer to the crawler"))
            }
            (Some(s), Some(a), Some(any)) if a.min(any) - s < search_seconds as f64 - 2.0 => {
                harness.push(format!(
                    "{what}: announce_peer at {a:.1} s (to anyone: {any:.1} s) \
                     is not long after get_peers at {s:.1} s"
                ))
            }
            _ => {}
        }
        if r["search_answered"].is_null() {
            harness.push(format!("{what}: the crawler did not answer its get_peers"));
        }
        // Proof that the announce reached the crawler, needed only where
        // the torrent was not stored: the test stops waiting as soon as
        // all are stored, sometimes before the last reply is seen, and the
        // crawler's per-IP send budget may drop a reply.
        let is_stored = r["infohash"]
            .as_str()
            .is_some_and(|h| stored.contains_key(h));
        if !is_stored && (r["announce_answered"].is_null() || !r["announce_error"].is_null()) {
            harness.push(format!(
                "{what}: announce_peer not accepted: answered {} error {}",
                r["announce_answered"], r["announce_error"]
            ));
        }
        if r["ut_metadata_ok"] != true {
            harness.push(format!("{what}: does not serve its metadata (ut_metadata)"));
        }
    }
    assert!(
        harness.is_empty(),
        "harness (not the crawler) failed in run {run}:\n{}\nsummary: {summary}",
        harness.join("\n")
    );
    // Announces libtorrent saw answered without an error must each have
    // been counted by the crawler. (libtorrent may announce again after a
    // lost reply, so the crawler may count more.)
    let answered_ok = rows
        .iter()
        .filter(|r| !r["announce_answered"].is_null() && r["announce_error"].is_null())
        .count() as u64;
    for r in rows.iter().filter(|r| !r["announce_error"].is_null()) {
        eprintln!("note: announce answered with an error: {r}");
    }
    assert!(
        t.announces_accepted >= answered_ok,
        "harness: the crawler counted {} accepted announces, libtorrent saw {answered_ok} answered without error",
        t.announces_accepted
    );

    // The crawler.
    let mut mismatches = Vec::new();
    let mut missing = Vec::new();
    // What the store says about the ones not stored (and how it first saw
    // them).
    let pending = store.pending(10_000).unwrap();
    for tor in &torrents {
        let Some(row) = stored.get(&tor.infohash) else {
            let r = rows
                .iter()
                .find(|r| r["infohash"] == tor.infohash.as_str())
                .unwrap();
            let infohash: Id = tor.infohash.parse().unwrap();
            let in_store = pending
                .iter()
                .find(|p| p.infohash == infohash.0)
                .map_or("not even pending".to_string(), |p| {
                    format!("pending, first seen via {}", p.source)
                });
            missing.push(format!(
                "{} {}: get_peers to us at {} s, announce_peer at {} s, incoming BitTorrent \
                 connections {}; store: {in_store}",
                tor.infohash,
                tor.name,
                r["search_to_crawler_at"],
                r["announce_to_crawler_at"],
                r["incoming"]
            ));
            continue;
        };
        let files: Vec<(String, u64)> = row["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                let p = f["path"].as_str().unwrap();
                let p = p.strip_prefix(&format!("{}/", tor.name)).unwrap_or(p);
                (p.to_string(), f["size"].as_u64().unwrap())
            })
            .collect();
        let theirs: Vec<(String, u64)> =
            tor.files.iter().map(|f| (f.path.clone(), f.size)).collect();
        if row["name"] != tor.name.as_str() || row["size"] != tor.total_size || files != theirs {
            mismatches.push(format!(
                "{}: stored name {} size {} files {:?}; libtorrent seeds {} {} {:?}",
                tor.infohash, row["name"], row["size"], files, tor.name, tor.total_size, theirs
            ));
        }
    }
    store.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    SearchRun {
        stored: torrents.len() - missing.len(),
        total: torrents.len(),
        mismatches,
        missing,
        all_stored_after,
        telemetry: format!(
            "infohashes {}, announces accepted {}, fetched {}, fetch jobs failed {}, failures {:?}",
            t.infohashes,
            t.announces_accepted,
            t.fetched,
            t.fetch_failed,
            t.failures
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| format!("{}={n}", k.as_str()))
                .collect::<Vec<_>>()
        ),
    }
}

/// BEP 33 against libtorrent's own implementation: a libtorrent 2.0 DHT
/// node stores announces from 40 seeds and 25 leechers (each its own
/// loopback address, `seed = 1` or `0` in announce_peer), then answers
/// our `get_peers` with `scrape = 1`. Its `BFsd` and `BFpe`, computed by
/// libtorrent's `bloom_filter<256>`, must equal the filters our code
/// builds from the same addresses bit for bit, and our estimator must
/// read the counts from them within the filter's error.
#[test]
fn libtorrent_scrape_filters_match_ours() {
    use dht_hunter::krpc::message::{encode_query, Header, Method};
    use dht_hunter::krpc::scrape::ScrapeBloom;
    use dht_hunter::krpc::{decode, Body, Want};
    use std::net::{IpAddr, Ipv4Addr, UdpSocket};

    if !in_netns("libtorrent_scrape_filters_match_ours") {
        return;
    }
    let port = free_port();
    let mut lt = Command::new(PY)
        .arg(root().join("tests/interop/lt_dht.py"))
        .args(["--bootstrap", "127.0.0.1:9", "--sessions", "1", "--no-pkt"])
        .args(["--base-port", &port.to_string(), "--seconds", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(lt.stdout.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("lt_dht.py ended").unwrap();
        if line.contains("\"event\": \"session\"") {
            break;
        }
    }
    let node: SocketAddr = ([127, 0, 0, 1], port).into();
    let infohash = Id([0x5c; 20]);
    let query = |sock: &UdpSocket, tid: &[u8], m: &Method<'_>| -> Vec<u8> {
        let mut out = Vec::new();
        encode_query(
            &mut out,
            &Header { tid, version: None },
            &Id([tid[0]; 20]),
            m,
            Want::default(),
            false,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = vec![0u8; 2048];
        loop {
            sock.send_to(&out, node).unwrap();
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                let reply = buf[..n].to_vec();
                if decode(&reply).is_ok_and(|m| m.tid == tid) {
                    return reply;
                }
            }
            assert!(Instant::now() < deadline, "libtorrent did not answer");
        }
    };
    let (seeds, leeches) = (40u8, 25u8);
    let (mut want_seeds, mut want_peers) = (ScrapeBloom::default(), ScrapeBloom::default());
    for i in 0..seeds + leeches {
        let ip = Ipv4Addr::new(127, 0, 7, 10 + i);
        let sock = UdpSocket::bind((ip, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let gp = Method::GetPeers {
            infohash,
            noseed: false,
            scrape: false,
        };
        let reply = query(&sock, &[i, b'g'], &gp);
        let m = decode(&reply).unwrap();
        let Body::Response(r) = m.body else {
            panic!("get_peers: {m:?}")
        };
        let token = r.token.expect("a token").to_vec();
        let seed = i < seeds;
        let an = Method::AnnouncePeer {
            infohash,
            port: 20_000 + u16::from(i),
            implied_port: false,
            token: &token,
            seed: Some(seed),
        };
        let reply = query(&sock, &[i, b'a'], &an);
        let m = decode(&reply).unwrap();
        assert!(matches!(m.body, Body::Response(_)), "announce: {m:?}");
        if seed {
            want_seeds.insert_ip(IpAddr::V4(ip));
        } else {
            want_peers.insert_ip(IpAddr::V4(ip));
        }
    }
    let sock = UdpSocket::bind("127.0.0.2:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let scrape = Method::GetPeers {
        infohash,
        noseed: false,
        scrape: true,
    };
    let reply = query(&sock, b"sc", &scrape);
    let m = decode(&reply).unwrap();
    let Body::Response(r) = m.body else {
        panic!("scrape: {m:?}")
    };
    let (bf_seeds, bf_peers) = (
        r.bf_seeds.expect("BFsd of 256 bytes"),
        r.bf_peers.expect("BFpe of 256 bytes"),
    );
    assert_eq!(bf_seeds, &want_seeds.0, "BFsd differs from ours");
    assert_eq!(bf_peers, &want_peers.0, "BFpe differs from ours");
    let est = |b: &[u8; 256]| ScrapeBloom(*b).estimate();
    let (s, l) = (est(bf_seeds), est(bf_peers));
    eprintln!(
        "libtorrent scrape: seeds {:.2} (truth {seeds}), leechers {:.2} (truth {leeches})",
        s.value, l.value
    );
    // 40 and 25 addresses in 2048 bits: a collision or two at most.
    assert!((f64::from(seeds) - s.value).abs() <= 2.0, "{s:?}");
    assert!((f64::from(leeches) - l.value).abs() <= 2.0, "{l:?}");
    let _ = lt.kill();
    let _ = lt.wait();
}
