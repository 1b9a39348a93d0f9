//! Harvest benchmark: of the torrents a swarm makes reachable, how many end
//! up stored, DHT-Hunter side by side with magneticod 0.6 (PyPI, Python),
//! on the same swarm, under the same client traffic, one core each, for the
//! same time.
//!
//! What runs, all on loopback:
//!
//! 1. `dht-loadgen swarm` (this build's release binary): N DHT nodes, T
//!    torrents, 30 % misbehaving peers, clients at R/s that search and
//!    announce as real ones do (the swarm command's defaults: announce 20 s
//!    after the search with a fresh token, 30 % never announce, 20 % of
//!    peers churn). Both harvesters are its `--target`s, so both get the
//!    very same client queries; client traffic starts `CLIENTS_AFTER` s
//!    after the harvesters (time for them to bootstrap) and ends with them.
//!    Clients whose announce falls due after the end never announce, so in
//!    a short run the last ~20 s of clients only search.
//! 2. `dht-hunter crawl` with the crawl command's default flags except what
//!    loopback needs: `--bind 127.0.0.1:P --bootstrap <swarm nodes>
//!    --allow-private --shards 1 --cores C0 --state-dir <tmp> --duration D`.
//! 3. magneticod 0.6.0 through `../shared/peers/magneticod_run.py`, pinned
//!    with `taskset -c C1`, on `--node-addr 127.0.0.2:P2`, bootstrapped from
//!    the same swarm nodes; stopped with SIGINT after D (it commits then).
//!
//! Stored torrents are checked against the swarm's ground truth (infohash
//! and name); counts are sampled every 10 s from the databases (read-only;
//! magneticod commits every 10 torrents, so its curve lags by up to 9).
//!
//! Run: `cargo bench --bench harvest` (scenario a). Knobs, as environment
//! variables: `HARVEST_SCENARIO` = a (10,000 torrents, clients 20/s, 120 s),
//! b (50,000 torrents, 20/s, 120 s) or c (5,000 torrents, 500/s, 60 s), all
//! with 2,000 nodes and 30 % bad peers; then `HARVEST_NODES`,
//! `HARVEST_TORRENTS`, `HARVEST_BAD`, `HARVEST_RATE`, `HARVEST_DURATION`,
//! `HARVEST_SEED` override the preset; `HARVEST_HUNTER_ARGS` adds crawl
//! flags (for exploring a knob; the recorded figures use none); `HARVEST_CORES=0,1` (DHT-Hunter's
//! core, magneticod's core); `HARVEST_SWARM_ARGS` (extra `dht-loadgen
//! swarm` flags, space-separated, e.g. `--announce-delay 0`);
//! `HARVEST_RIVAL=0` runs DHT-Hunter alone; `HARVEST_VENV` (default
//! `$CARGO_TARGET_DIR/harvest-bench/venv-mgd`, created with `python3.11 -m
//! venv` and `pip install magneticod==0.6.0` when missing;
//! `HARVEST_PYTHON` picks the interpreter); `HARVEST_OUT` also writes the
//! JSON result to that file. See tuning/README.md.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Client traffic starts this long after the harvesters.
const CLIENTS_AFTER: u64 = 5;
/// Seconds between database samples.
const SAMPLE_EVERY: u64 = 10;
/// magneticod's pinned version.
const MAGNETICOD: &str = "magneticod==0.6.0";

#[derive(Debug, Clone, serde::Serialize)]
struct Params {
    scenario: String,
    nodes: usize,
    torrents: usize,
    bad_fraction: f64,
    client_rate: u32,
    duration_s: u64,
    seed: u64,
    hunter_core: String,
    rival_core: String,
    rival: bool,
    swarm_args: Vec<String>,
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(key) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{key}={v}: not a valid value")),
        Err(_) => Ok(default),
    }
}

fn params() -> anyhow::Result<Params> {
    let scenario = std::env::var("HARVEST_SCENARIO").unwrap_or_else(|_| "a".into());
    let (torrents, rate, duration) = match scenario.as_str() {
        "a" => (10_000, 20, 120),
        "b" => (50_000, 20, 120),
        "c" => (5_000, 500, 60),
        other => bail!("HARVEST_SCENARIO={other}: use a, b or c"),
    };
    let cores = std::env::var("HARVEST_CORES").unwrap_or_else(|_| "0,1".into());
    let (c0, c1) = cores
        .split_once(',')
        .context("HARVEST_CORES must be two core numbers, e.g. 0,1")?;
    Ok(Params {
        scenario,
        nodes: env_or("HARVEST_NODES", 2000)?,
        torrents: env_or("HARVEST_TORRENTS", torrents)?,
        bad_fraction: env_or("HARVEST_BAD", 0.3)?,
        client_rate: env_or("HARVEST_RATE", rate)?,
        duration_s: env_or("HARVEST_DURATION", duration)?,
        seed: env_or("HARVEST_SEED", 1)?,
        hunter_core: c0.trim().to_string(),
        rival_core: c1.trim().to_string(),
        rival: std::env::var("HARVEST_RIVAL").map_or(true, |v| v != "0"),
        swarm_args: std::env::var("HARVEST_SWARM_ARGS")
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from)
            .collect(),
    })
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// The magneticod virtual environment's interpreter, created if missing.
fn magneticod_python() -> anyhow::Result<PathBuf> {
    let venv = std::env::var_os("HARVEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("harvest-bench").join("venv-mgd"));
    let py = venv.join("bin").join("python");
    let works = |py: &Path| {
        Command::new(py)
            .args(["-c", "import magneticod, better_bencode, uvloop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if works(&py) {
        return Ok(py);
    }
    let base = std::env::var("HARVEST_PYTHON").unwrap_or_else(|_| "python3.11".into());
    eprintln!("setting up {} ({MAGNETICOD}, {base})", venv.display());
    if let Some(parent) = venv.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let ok = Command::new(&base)
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .status()
        .with_context(|| format!("running {base} (set HARVEST_PYTHON to a Python 3.11)"))?;
    anyhow::ensure!(ok.success(), "{base} -m venv {} failed", venv.display());
    let ok = Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", MAGNETICOD])
        .status()
        .context("running pip")?;
    anyhow::ensure!(
        ok.success() && works(&py),
        "pip install {MAGNETICOD} into {} failed (needs PyPI; or set HARVEST_VENV \
         to a ready venv, or HARVEST_RIVAL=0)",
        venv.display()
    );
    Ok(py)
}

/// A free UDP port on `ip` (bound and released: racy, but only our own
/// processes run here).
fn free_udp(ip: &str) -> anyhow::Result<SocketAddr> {
    Ok(UdpSocket::bind((ip, 0))?.local_addr()?)
}

/// Counts rows in `torrents` of an SQLite file, read-only; None while the
/// file is missing or busy.
fn count_rows(db: &Path) -> Option<u64> {
    let c = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ok()?;
    c.busy_timeout(Duration::from_millis(500)).ok()?;
    c.query_row("SELECT count(*) FROM torrents", [], |r| r.get::<_, i64>(0))
        .ok()
        .map(|n| n as u64)
}

#[derive(Debug, serde::Deserialize)]
struct TruthRow {
    infohash: String,
    name: String,
    fetchable: bool,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
struct Verdict {
    /// Rows in its database.
    stored: u64,
    /// Rows whose infohash is a fetchable torrent of the swarm, with its name.
    verified: u64,
    /// Rows with an unknown infohash or a wrong name.
    wrong: u64,
    /// verified / fetchable.
    share_of_fetchable: f64,
}

fn verdict(
    rows: &[(String, String)],
    truth: &HashMap<String, (String, bool)>,
    fetchable: usize,
) -> Verdict {
    let mut v = Verdict {
        stored: rows.len() as u64,
        ..Verdict::default()
    };
    let mut seen = std::collections::HashSet::new();
    for (infohash, name) in rows {
        match truth.get(infohash) {
            Some((n, true)) if n == name && seen.insert(infohash.clone()) => v.verified += 1,
            _ => v.wrong += 1,
        }
    }
    v.share_of_fetchable = v.verified as f64 / fetchable.max(1) as f64;
    v
}

fn hunter_rows(bin: &Path, state: &Path, out: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let st = Command::new(bin)
        .arg("export")
        .arg("--out")
        .arg(out)
        .arg("--state-dir")
        .arg(state)
        .status()?;
    anyhow::ensure!(st.success(), "dht-hunter export failed: {st}");
    #[derive(serde::Deserialize)]
    struct Row {
        infohash: String,
        name: String,
    }
    let mut rows = Vec::new();
    for line in std::fs::read_to_string(out)?.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let r: Row = serde_json::from_str(line)?;
        rows.push((r.infohash, r.name));
    }
    Ok(rows)
}

fn magneticod_rows(db: &Path) -> anyhow::Result<Vec<(String, String)>> {
    if !db.exists() {
        return Ok(Vec::new());
    }
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut st = c.prepare("SELECT info_hash, name FROM torrents")?;
    let rows = st
        .query_map([], |r| {
            let infohash: Vec<u8> = r.get(0)?;
            let name: String = r.get(1)?;
            Ok((infohash.iter().map(|b| format!("{b:02x}")).collect(), name))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

fn wait_timeout(child: &mut Child, limit: Duration) -> anyhow::Result<Option<ExitStatus>> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Some(s) = child.try_wait()? {
            return Ok(Some(s));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(None)
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: signalling our own child process by its pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

/// Kills the children left running when the bench fails half-way.
struct Reaper(Vec<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for c in &mut self.0 {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --benches` runs this without --bench: not a 2-minute run.
        println!("harvest: run with `cargo bench --bench harvest`");
        return Ok(());
    }
    let p = params()?;
    let hunter_bin = PathBuf::from(env!("CARGO_BIN_EXE_dht-hunter"));
    let loadgen_bin = PathBuf::from(env!("CARGO_BIN_EXE_dht-loadgen"));
    let script = std::env::var_os("HARVEST_MGD_SCRIPT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/peers/magneticod_run.py")
        });
    let python = if p.rival {
        anyhow::ensure!(
            script.exists(),
            "{} not found (set HARVEST_MGD_SCRIPT, or HARVEST_RIVAL=0)",
            script.display()
        );
        Some(magneticod_python()?)
    } else {
        None
    };
    let dir = target_dir().join("harvest-bench").join(format!(
        "run-{}-{}",
        p.scenario,
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)?;
    let truth_path = dir.join("truth.json");
    let hunter_state = dir.join("hunter");
    let mgd_db = dir.join("magneticod.sqlite3");
    let hunter_addr = free_udp("127.0.0.1")?;
    let mgd_addr = free_udp("127.0.0.2")?;

    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("# harvest benchmark, scenario {}", p.scenario);
    println!(
        "machine: {cpus} cpus, {}",
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| s
                .lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|l| l.trim().to_string()))
            .unwrap_or_default()
    );
    println!("params: {}", serde_json::to_string(&p)?);
    println!("work dir: {}", dir.display());

    let mut reaper = Reaper(Vec::new());
    // 1. The swarm.
    // The swarm's duration counts from when it is up, just before the
    // harvesters start: it ends with them, so no client query goes out
    // after they stopped (it would be counted unanswered).
    anyhow::ensure!(
        p.duration_s > CLIENTS_AFTER,
        "HARVEST_DURATION must be over {CLIENTS_AFTER} s"
    );
    let swarm_secs = p.duration_s;
    let mut cmd = Command::new(&loadgen_bin);
    cmd.arg("swarm")
        .args(["--nodes", &p.nodes.to_string()])
        .args(["--torrents", &p.torrents.to_string()])
        .args(["--bad-fraction", &p.bad_fraction.to_string()])
        .args(["--client-rate", &p.client_rate.to_string()])
        .args(["--seed", &p.seed.to_string()])
        .args(["--duration", &swarm_secs.to_string()])
        .args(["--clients-after", &CLIENTS_AFTER.to_string()])
        .arg("--truth")
        .arg(&truth_path)
        .args(["--target", &hunter_addr.to_string()]);
    if p.rival {
        cmd.args(["--target", &mgd_addr.to_string()]);
    }
    cmd.args(&p.swarm_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(dir.join("swarm.log"))?));
    let t_swarm = Instant::now();
    let mut swarm = cmd.spawn().context("starting dht-loadgen swarm")?;
    let mut first = String::new();
    let stdout = swarm.stdout.take().context("swarm stdout")?;
    reaper.0.push(swarm);
    BufReader::new(stdout).read_line(&mut first)?;
    let info: serde_json::Value = serde_json::from_str(first.trim())
        .with_context(|| format!("swarm did not start (see {}/swarm.log)", dir.display()))?;
    let boot: Vec<String> = info["bootstrap"]
        .as_array()
        .context("no bootstrap in the swarm's line")?
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .take(8)
        .collect();
    let fetchable = info["fetchable"].as_u64().unwrap_or(0) as usize;
    println!(
        "swarm up in {:.1} s: {} nodes, {} torrents, {} fetchable, {} churning peers",
        t_swarm.elapsed().as_secs_f64(),
        info["nodes"],
        info["torrents"],
        fetchable,
        info["churning_peers"]
    );

    // 2. The harvesters, started together.
    let mut hunter = Command::new(&hunter_bin);
    hunter
        .arg("crawl")
        .args(["--bind", &hunter_addr.to_string()])
        .arg("--allow-private")
        .args(["--shards", "1", "--cores", &p.hunter_core])
        .arg("--state-dir")
        .arg(&hunter_state)
        .args(["--duration", &p.duration_s.to_string()])
        .args(["--status", "never"]);
    for b in &boot {
        hunter.args(["--bootstrap", b]);
    }
    // Extra crawl flags, for exploring a knob (the figures that count are
    // taken without any).
    if let Ok(extra) = std::env::var("HARVEST_HUNTER_ARGS") {
        hunter.args(extra.split_whitespace());
    }
    hunter
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(dir.join("hunter.log"))?));
    let t0 = Instant::now();
    let hunter = hunter.spawn().context("starting dht-hunter crawl")?;
    reaper.0.push(hunter);
    let hunter_i = reaper.0.len() - 1;
    let mut mgd_i = None;
    if let Some(py) = &python {
        let mgd = Command::new("taskset")
            .args(["-c", &p.rival_core])
            .arg(py)
            .arg(&script)
            .args(["--node-addr", &mgd_addr.to_string()])
            .arg("--database-file")
            .arg(&mgd_db)
            .env("MGD_BOOTSTRAP", boot.join(","))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(
                dir.join("magneticod.log"),
            )?))
            .spawn()
            .context("starting magneticod (taskset, python)")?;
        reaper.0.push(mgd);
        mgd_i = Some(reaper.0.len() - 1);
    }

    // 3. Sample while they run.
    let hunter_db = hunter_state.join("dht-hunter.sqlite");
    let mut samples = Vec::new();
    println!("{:>6} {:>12} {:>12}", "t (s)", "dht-hunter", "magneticod");
    let end = t0 + Duration::from_secs(p.duration_s);
    let mut next = t0 + Duration::from_secs(SAMPLE_EVERY);
    while next <= end {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let t = t0.elapsed().as_secs();
        let h = count_rows(&hunter_db);
        let m = mgd_i.and(count_rows(&mgd_db));
        let show = |x: Option<u64>| x.map_or("-".to_string(), |n| n.to_string());
        println!("{t:>6} {:>12} {:>12}", show(h), show(m));
        samples.push(serde_json::json!({"t_s": t, "dht_hunter": h, "magneticod": m}));
        if let Some(st) = reaper.0[hunter_i].try_wait()? {
            if next + Duration::from_secs(SAMPLE_EVERY) <= end {
                bail!(
                    "dht-hunter exited early ({st}); see {}/hunter.log",
                    dir.display()
                );
            }
        }
        next += Duration::from_secs(SAMPLE_EVERY);
    }
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    // 4. Stop: magneticod on SIGINT (it commits on the way out),
    // DHT-Hunter by its --duration.
    if let Some(i) = mgd_i {
        signal(&reaper.0[i], libc::SIGINT);
    }
    let hs = wait_timeout(&mut reaper.0[hunter_i], Duration::from_secs(60))?;
    let hunter_wall = t0.elapsed().as_secs_f64();
    anyhow::ensure!(
        hs.is_some_and(|s| s.success()),
        "dht-hunter did not stop cleanly ({hs:?}); see {}/hunter.log",
        dir.display()
    );
    if let Some(i) = mgd_i {
        // Under load its event loop has been seen to miss the first SIGINT.
        let mut stopped = wait_timeout(&mut reaper.0[i], Duration::from_secs(10))?.is_some();
        if !stopped {
            signal(&reaper.0[i], libc::SIGINT);
            stopped = wait_timeout(&mut reaper.0[i], Duration::from_secs(15))?.is_some();
        }
        if !stopped {
            eprintln!(
                "magneticod ignored SIGINT twice: killed (it commits every 10 torrents, \
                 so up to 9 fetched ones are not in its database)"
            );
            let _ = reaper.0[i].kill();
        }
    }
    let _ = wait_timeout(&mut reaper.0[0], Duration::from_secs(30))?;
    let wall = t0.elapsed().as_secs_f64();
    let swarm_log = std::fs::read_to_string(dir.join("swarm.log")).unwrap_or_default();
    let swarm_counters: serde_json::Value = swarm_log
        .lines()
        .find_map(|l| l.strip_prefix("swarm-counters "))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or(serde_json::Value::Null);

    // 5. Verify against the ground truth.
    let truth: Vec<TruthRow> = serde_json::from_slice(&std::fs::read(&truth_path)?)?;
    let truth: HashMap<String, (String, bool)> = truth
        .into_iter()
        .map(|t| (t.infohash, (t.name, t.fetchable)))
        .collect();
    let h = verdict(
        &hunter_rows(&hunter_bin, &hunter_state, &dir.join("hunter.jsonl"))?,
        &truth,
        fetchable,
    );
    let m = mgd_i
        .map(|_| magneticod_rows(&mgd_db).map(|r| verdict(&r, &truth, fetchable)))
        .transpose()?;

    println!();
    println!("| | dht-hunter | magneticod 0.6 |");
    println!("|---|---:|---:|");
    let mv = |f: &dyn Fn(&Verdict) -> String| m.as_ref().map_or("-".into(), f);
    println!("| fetchable (ground truth) | {fetchable} | {fetchable} |");
    println!(
        "| stored | {} | {} |",
        h.stored,
        mv(&|v| v.stored.to_string())
    );
    println!(
        "| verified (infohash + name) | {} | {} |",
        h.verified,
        mv(&|v| v.verified.to_string())
    );
    println!("| wrong | {} | {} |", h.wrong, mv(&|v| v.wrong.to_string()));
    println!(
        "| % of fetchable | {:.1} % | {} |",
        100.0 * h.share_of_fetchable,
        mv(&|v| format!("{:.1} %", 100.0 * v.share_of_fetchable))
    );
    if let Some(m) = &m {
        println!(
            "| ratio dht-hunter / magneticod | {} | |",
            if m.verified > 0 {
                format!("{:.2}", h.verified as f64 / m.verified as f64)
            } else {
                "∞ (rival stored none)".into()
            }
        );
    }
    println!("| wall time (s) | {hunter_wall:.1} | {wall:.1} |");
    let result = serde_json::json!({
        "params": p,
        "fetchable": fetchable,
        "dht_hunter": h,
        "magneticod": m,
        "samples": samples,
        "swarm": swarm_counters,
        "wall_s": wall,
        "work_dir": dir,
    });
    println!();
    println!("harvest-json {result}");
    if let Ok(out) = std::env::var("HARVEST_OUT") {
        std::fs::write(&out, serde_json::to_vec_pretty(&result)?)
            .with_context(|| format!("writing {out}"))?;
    }
    Ok(())
}
