//! KRPC queries answered per second by one server core under a flood of
//! valid mixed queries (ping, find_node, get_peers), measured side by side
//! in one run, on the same cores, with the same generator
//! (`dht_hunter::loadgen::flood`):
//!
//! 0. the generator alone against a socket that never reads (what one core
//!    of generator can send);
//! 1. a raw `recvmmsg`/`sendmmsg` echo on one thread: the ceiling. It
//!    answers each query with a KRPC response of about the query's size,
//!    doing no KRPC work beyond finding the tid;
//! 2. DHT-Hunter's engine, one shard (crawling on, as in production), in
//!    the bench's process with `engine::unthrottled()`; and the
//!    `dht-hunter crawl` command itself, one shard, in a process of its
//!    own under `taskset -c 0` (every thread of it on the server CPU),
//!    with its defaults except the rate limits, lifted by flags
//!    (`--max-pps`, `--per-ip-pps`, `--inbound-per-ip-pps`): the server as
//!    an operator runs it, CPU counted for the whole process;
//! 3. libtorrent 2.0.8 (Debian python3-libtorrent) as a DHT node
//!    (`benches/lt_dht_node.py`), per-IP and upload limits raised.
//!
//! The server under test runs on CPU 0 (the engine's shard is pinned there;
//! the store writer inherits CPU 0; libtorrent runs under `taskset -c 0`),
//! the generator on CPU 1, as the shipped `dht-loadgen flood` in a process
//! of its own (see `run_flood` for why that matters). Loopback only.
//!
//! Every figure that the goals name comes from an **open loop**: the
//! generator offers a fixed rate whatever comes back (no window), as the
//! real DHT does. Per server:
//! * CPU per answer at 20k/s and at 100k/s offered (ordinary loads: the
//!   server's CPU time over the answers it sent);
//! * the most answers per second over a sweep of offered rates up to what
//!   the generator can send (saturation: the kernel drops what the server
//!   cannot take).
//!
//! The closed loop (at most `WINDOW` queries in flight) is kept as a
//! latency figure only: it measures window ÷ latency as much as capacity.
//!
//! The engine runs with the crawl command's defaults (receive coalescing
//! included) and once more with coalescing off (`rx-coalesce-us = 0`), to
//! show what the knob does.
//!
//! Run: `cargo bench --bench krpc_answer`
//! Optional: `KRPC_BENCH_SECS=3` (seconds per case), `KRPC_BENCH_ROUNDS=1`,
//! `KRPC_BENCH_SKIP_LT=1`, `KRPC_BENCH_ONLY=gen|raw|dht|dht0|crawl|lt` (one
//! server, for profiling), `KRPC_BENCH_RATES=20000,100000` (the offered
//! rates; 0 = as fast as the generator can), `KRPC_BENCH_COALESCE_US` (the
//! default case's `rx-coalesce-us`, for exploring the knob). Everything
//! stops by itself.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic
)]

use std::io::{BufRead, BufReader, Write};
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use dht_hunter::config::{CrawlConfig, FileConfig};
use dht_hunter::engine::{self, EngineParts, Telemetry};
use dht_hunter::loadgen::flood::FloodReport;
use dht_hunter::store::Store;

const SERVER_CPU: usize = 0;
const GEN_CPU: usize = 1;
const WINDOW: usize = 512;
const SOURCES: usize = 64;
const MIX: &str = "ping=1,find_node=1,get_peers=1";
const INFOHASHES: u32 = 10_000;

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET stays in bounds for cpu
    // < CPU_SETSIZE; pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            println!("warning: could not pin to CPU {cpu}");
        }
    }
}

fn process_cpu() -> Duration {
    let mut ru: libc::rusage = unsafe { zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// utime + stime of another process, from /proc (clock-tick resolution).
fn child_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the comm field: state is field 3, utime 14, stime 15.
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// At most `WINDOW` in flight: a latency figure.
    Closed,
    /// This many queries per second offered (0: as fast as the generator).
    Open(u64),
}

impl Shape {
    fn name(self) -> String {
        match self {
            Shape::Closed => format!("closed, window {WINDOW}"),
            Shape::Open(0) => "open, generator max".into(),
            Shape::Open(r) => format!("open, {}k/s", r / 1000),
        }
    }
}

/// Runs the shipped generator (`dht-loadgen flood`) in a process of its
/// own, pinned to the generator CPU, and reads its JSON report. Out of
/// process so that the server's process holds the server only: glommio
/// issues a `membarrier(PRIVATE_EXPEDITED)` each time an executor goes to
/// sleep, which interrupts every CPU running a thread of the same process;
/// a generator thread inside the bench made each of the engine's sleeps
/// interrupt the generator's CPU (16 % of the shard's CPU at 20k/s, in
/// `perf`), which a single-shard crawler does not pay.
fn run_flood(target: SocketAddr, shape: Shape, secs: f64) -> FloodReport {
    let (rate, window) = match shape {
        Shape::Closed => (0, WINDOW),
        Shape::Open(r) => (r, 0),
    };
    let out = Command::new("taskset")
        .args([
            "-c",
            &GEN_CPU.to_string(),
            env!("CARGO_BIN_EXE_dht-loadgen"),
        ])
        .args(["flood", "--json", "--target", &target.to_string()])
        .args(["--sources", &SOURCES.to_string(), "--mix", MIX])
        .args(["--rate", &rate.to_string(), "--window", &window.to_string()])
        .args(["--duration", &(secs.round().max(1.0) as u64).to_string()])
        .args([
            "--infohashes",
            &INFOHASHES.to_string(),
            "--timeout-ms",
            "500",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dht-loadgen flood: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: FloodReport = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r.undecodable, 0, "undecodable answers");
    assert_eq!(r.unmatched, 0, "unmatched tids");
    assert_eq!(r.answered + r.unanswered, r.sent);
    r
}

struct Case {
    server: &'static str,
    shape: Shape,
    report: FloodReport,
    /// Server-side CPU over the flood (None if not measured).
    server_cpu: Option<Duration>,
}

// ---------------------------------------------------------------------------
// 0. Generator alone.

fn generator_alone(secs: f64) -> Case {
    let sink = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let report = run_flood(sink.local_addr().unwrap(), Shape::Open(0), secs);
    Case {
        server: "none (sink never reads)",
        shape: Shape::Open(0),
        report,
        server_cpu: None,
    }
}

// ---------------------------------------------------------------------------
// 1. Raw echo.

fn raw_echo(shape: Shape, secs: f64) -> Case {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    sock.set_nonblocking(true).unwrap();
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        let v: libc::c_int = 8 << 20;
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as u32,
            )
        };
    }
    let addr = sock.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let stop = stop.clone();
        thread::spawn(move || {
            pin(SERVER_CPU);
            dht_hunter::loadgen::echo::serve(&sock, &stop)
        })
    };
    thread::sleep(Duration::from_millis(50));
    let report = run_flood(addr, shape, secs);
    stop.store(true, Ordering::Relaxed);
    let cpu = server.join().unwrap();
    Case {
        server: "raw recvmmsg/sendmmsg echo",
        shape,
        report,
        server_cpu: Some(cpu),
    }
}

// ---------------------------------------------------------------------------
// 2. DHT-Hunter, one shard.

fn dht_hunter(shape: Shape, secs: f64, coalesce_off: bool) -> Case {
    let dir = std::env::temp_dir().join(format!(
        "dh-krpc-bench-{}-{:x}",
        std::process::id(),
        rand_u64()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    // A bootstrap address that never answers.
    let silent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let db = format!("sqlite:{}", dir.join("db.sqlite").display());
    let cfg = CrawlConfig::resolve(FileConfig {
        bind: Some(vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))]),
        bootstrap: Some(vec![silent.local_addr().unwrap().to_string()]),
        shards: Some(1),
        cores: Some(SERVER_CPU.to_string()),
        allow_private: Some(true),
        state_dir: Some(dir.join("state")),
        db: Some(db.clone()),
        max_pps: Some(10_000_000),
        per_ip_pps: Some(10_000_000),
        // Off for the comparison case; else the crawl default, or
        // KRPC_BENCH_COALESCE_US when exploring the knob.
        rx_coalesce_us: if coalesce_off {
            Some(0)
        } else {
            std::env::var("KRPC_BENCH_COALESCE_US")
                .ok()
                .map(|v| v.parse().unwrap())
        },
        ..FileConfig::default()
    })
    .unwrap();
    // Threads started from here (the store writer) inherit CPU 0.
    pin(SERVER_CPU);
    let store = Store::open(&db).unwrap();
    let tweak = engine::unthrottled();
    let eng = engine::start(
        &cfg,
        EngineParts::new(store.writer(), Arc::new(Telemetry::default())).with_tweak(tweak),
    )
    .unwrap();
    let target = eng.udp_addrs[0];
    thread::sleep(Duration::from_millis(200));
    let cpu0 = process_cpu();
    let report = run_flood(target, shape, secs);
    // The generator runs in its own process: all of this process's CPU
    // time is the server's (the shard, the store writer, everything else
    // the engine runs).
    let cpu = process_cpu().saturating_sub(cpu0);
    eng.shutdown_handle().trigger();
    eng.join().unwrap();
    store.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    Case {
        server: if coalesce_off {
            "DHT-Hunter engine, 1 shard, coalescing off"
        } else {
            "DHT-Hunter engine, 1 shard"
        },
        shape,
        report,
        server_cpu: Some(cpu),
    }
}

// ---------------------------------------------------------------------------
// 2b. The crawl command.

fn crawl_command(shape: Shape, secs: f64) -> Case {
    let dir = std::env::temp_dir().join(format!(
        "dh-krpc-bench-crawl-{}-{:x}",
        std::process::id(),
        rand_u64()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let silent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let lifted = "10000000";
    let mut child = Command::new("taskset")
        .args([
            "-c",
            &SERVER_CPU.to_string(),
            env!("CARGO_BIN_EXE_dht-hunter"),
        ])
        .args(["crawl", "--shards", "1", "--cores", &SERVER_CPU.to_string()])
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .args(["--bootstrap", &silent.local_addr().unwrap().to_string()])
        .args(["--allow-private", "--log-level", "warn"])
        .args(["--max-pps", lifted, "--per-ip-pps", lifted])
        .args(["--inbound-per-ip-pps", lifted])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args([
            "--db",
            &format!("sqlite:{}", dir.join("db.sqlite").display()),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    // Up when it answers a ping.
    let probe = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let ping = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
    let started = Instant::now();
    let mut buf = [0u8; 1500];
    loop {
        let _ = probe.send_to(ping, target);
        if probe.recv_from(&mut buf).is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the crawl command did not answer"
        );
    }
    thread::sleep(Duration::from_millis(200));
    let pid = child.id();
    let cpu0 = child_cpu(pid);
    let report = run_flood(target, shape, secs);
    let cpu = child_cpu(pid).saturating_sub(cpu0);
    // SAFETY: a signal to our own child.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    Case {
        server: "dht-hunter crawl command, 1 shard",
        shape,
        report,
        server_cpu: Some(cpu),
    }
}

fn rand_u64() -> u64 {
    dht_hunter::rng::Rng::from_entropy().next_u64()
}

// ---------------------------------------------------------------------------
// 3. libtorrent.

struct Lt {
    child: Child,
    port: u16,
}

fn start_lt() -> Option<Lt> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/lt_dht_node.py");
    let mut child = Command::new("taskset")
        .args(["-c", &SERVER_CPU.to_string(), "/usr/bin/python3", script])
        .args(["--port", "0", "--seconds", "120"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    let out = child.stdout.take()?;
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).ok()?;
    let port = line.trim().strip_prefix("READY ")?.parse().ok()?;
    Some(Lt { child, port })
}

fn stop_lt(mut lt: Lt) {
    if let Some(mut stdin) = lt.child.stdin.take() {
        let _ = stdin.flush();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = lt.child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = lt.child.kill();
    let _ = lt.child.wait();
}

fn libtorrent(shape: Shape, secs: f64) -> Option<Case> {
    let lt = start_lt()?;
    let pid = lt.child.id();
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, lt.port));
    thread::sleep(Duration::from_millis(200));
    let cpu0 = child_cpu(pid);
    let report = run_flood(target, shape, secs);
    let cpu = child_cpu(pid).saturating_sub(cpu0);
    stop_lt(lt);
    Some(Case {
        server: "libtorrent 2.0.8 DHT node (python3-libtorrent)",
        shape,
        report,
        server_cpu: Some(cpu),
    })
}

// ---------------------------------------------------------------------------

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn row(c: &Case) {
    let r = &c.report;
    let cpu = c
        .server_cpu
        .map(|d| {
            format!(
                "{:.2} s ({:.0} ns/answer)",
                d.as_secs_f64(),
                d.as_nanos() as f64 / r.answered.max(1) as f64
            )
        })
        .unwrap_or_else(|| "-".into());
    println!(
        "| {} | {} | {} | {:.0} | {:.0} | {:.2}% | {:.0} / {:.0} / {:.0} | {} | {:.0} | {} |",
        c.server,
        c.shape.name(),
        r.sent,
        r.sent_per_sec,
        r.answers_per_sec,
        100.0 * r.answered as f64 / r.sent.max(1) as f64,
        r.latency.p50_us,
        r.latency.p99_us,
        r.latency.max_us,
        cpu,
        r.generator_ns_per_datagram,
        r.queries_received,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let secs = env_f64("KRPC_BENCH_SECS", 3.0).clamp(0.5, 30.0);
    let rounds = env_f64("KRPC_BENCH_ROUNDS", 1.0).clamp(1.0, 10.0) as usize;
    let skip_lt = std::env::var_os("KRPC_BENCH_SKIP_LT").is_some();
    let rates: Vec<u64> = std::env::var("KRPC_BENCH_RATES")
        .ok()
        .map(|v| v.split(',').filter_map(|r| r.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![20_000, 100_000, 150_000, 200_000, 250_000, 300_000, 0]);
    println!("# krpc_answer bench");
    println!(
        "machine: nproc={} kernel={} cpu={}",
        sh("nproc"),
        sh("uname -r"),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2")
    );
    println!(
        "server CPU {SERVER_CPU}, generator CPU {GEN_CPU}; {SOURCES} sources on 127.1.0.x; \
         mix {MIX}; {INFOHASHES} distinct info_hashes; offered rates {rates:?} (0 = generator \
         max); closed loop window {WINDOW}; {secs:.1} s per case, {rounds} rounds"
    );
    println!("loadavg at start: {}", sh("cat /proc/loadavg"));
    println!();

    // KRPC_BENCH_ONLY=gen|raw|dht|dht0|lt runs one server (for profiling).
    let only = std::env::var("KRPC_BENCH_ONLY").unwrap_or_default();
    let want = |name: &str| only.is_empty() || only == name;
    let mut cases = Vec::new();
    if want("gen") {
        cases.push(generator_alone(secs));
    }
    let mut shapes: Vec<Shape> = rates.iter().map(|&r| Shape::Open(r)).collect();
    shapes.push(Shape::Closed);
    // Interleave servers so drift on a shared machine hits all of them.
    for _ in 0..rounds {
        for &shape in &shapes {
            if want("raw") {
                cases.push(raw_echo(shape, secs));
            }
            if want("dht") {
                cases.push(dht_hunter(shape, secs, false));
            }
            if want("dht0") {
                cases.push(dht_hunter(shape, secs, true));
            }
            if want("crawl") {
                cases.push(crawl_command(shape, secs));
            }
            if want("lt") && !skip_lt {
                match libtorrent(shape, secs) {
                    Some(c) => cases.push(c),
                    None => println!("libtorrent case skipped: could not start the node"),
                }
            }
        }
    }
    println!(
        "| server | load | sent | sent/s | answers/s | answered | latency p50 / p99 / max us | server CPU | gen ns/dgram | queries from server |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for c in &cases {
        row(c);
    }
    println!();
    let servers = [
        ("raw", "raw echo"),
        ("DHT-Hunter engine, 1 shard", "DHT-Hunter"),
        (
            "DHT-Hunter engine, 1 shard, coalescing off",
            "DHT-Hunter, coalescing off",
        ),
        ("dht-hunter crawl command", "dht-hunter crawl (the command)"),
        ("libtorrent", "libtorrent"),
    ];
    let is = |c: &Case, name: &str| {
        if name == "DHT-Hunter engine, 1 shard" {
            c.server == name
        } else {
            c.server.starts_with(name)
        }
    };
    // Saturation: the most answers/s over every open-loop offered rate.
    let max_open = |name: &str| {
        cases
            .iter()
            .filter(|c| is(c, name) && matches!(c.shape, Shape::Open(_)))
            .map(|c| c.report.answers_per_sec)
            .fold(0.0, f64::max)
    };
    // CPU per answer at one offered rate (mean over rounds), microseconds.
    let cpu_at = |name: &str, rate: u64| {
        let v: Vec<f64> = cases
            .iter()
            .filter(|c| is(c, name) && c.shape == Shape::Open(rate))
            .filter_map(|c| {
                c.server_cpu
                    .map(|d| d.as_secs_f64() * 1e6 / c.report.answered.max(1) as f64)
            })
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    println!("## Open loop summary (per shard / server on one core)");
    println!();
    println!("| server | max answered/s | CPU us/answer at 20k/s | CPU us/answer at 100k/s |");
    println!("|---|---|---|---|");
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    for (name, label) in servers {
        println!(
            "| {label} | {:.0} | {} | {} |",
            max_open(name),
            fmt(cpu_at(name, 20_000)),
            fmt(cpu_at(name, 100_000))
        );
    }
    println!();
    let (raw, dh, lt) = (
        max_open("raw"),
        max_open("DHT-Hunter engine, 1 shard"),
        max_open("libtorrent"),
    );
    println!(
        "saturation: DHT-Hunter/raw = {:.2}x (goal >= 0.9), DHT-Hunter/libtorrent = {:.2}x (goal >= 2)",
        dh / raw.max(1.0),
        if lt > 0.0 { dh / lt } else { f64::NAN }
    );
    let cmd = max_open("dht-hunter crawl command");
    if cmd > 0.0 {
        println!(
            "saturation, the crawl command: /raw = {:.2}x, /libtorrent = {:.2}x",
            cmd / raw.max(1.0),
            if lt > 0.0 { cmd / lt } else { f64::NAN }
        );
    }
    for rate in [20_000, 100_000] {
        let r = cpu_at("raw", rate);
        let d = cpu_at("DHT-Hunter engine, 1 shard", rate);
        let c = cpu_at("dht-hunter crawl command", rate);
        let l = cpu_at("libtorrent", rate);
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
            _ => "-".into(),
        };
        println!(
            "CPU per answer at {}k/s: DHT-Hunter/raw = {} (goal <= 1.2), DHT-Hunter/libtorrent = {} (goal < 1); the crawl command: /raw = {}, /libtorrent = {}",
            rate / 1000,
            ratio(d, r),
            ratio(d, l),
            ratio(c, r),
            ratio(c, l)
        );
    }
    println!("loadavg at end: {}", sh("cat /proc/loadavg"));
}
