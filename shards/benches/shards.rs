//! Side-by-side benchmarks of the runtime against minimal raw baselines.
//!
//! Run: `CARGO_TARGET_DIR=/work/main/target-shards cargo bench -p shards --bench shards`
//! Optional: `SHARDS_BENCH_SECS=2` (measured seconds per case, default 2).
//!
//! 1. UDP echo, closed loop: a blaster thread on CPU 1 keeps a window of
//!    datagrams in flight to an echo server on CPU 0 and counts echoes.
//!    Server A: a plain std thread doing poll + recvmmsg/sendmmsg.
//!    Server B: one shard of this runtime (recv_batch + queue_send + flush).
//! 2. Mesh messages/s between two shards (CPU 0 -> CPU 1), 20-byte
//!    payloads, batched (`queue_to`, 64 per batch) and one by one.
//! 3. CPU per received datagram at a fixed moderate rate (paced blaster):
//!    thread CPU time (getrusage RUSAGE_THREAD) of the receiving thread,
//!    raw std thread vs shard.
//!
//! Everything stops by itself; each case is bounded by its duration.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic
)]

use std::{
    mem::zeroed,
    net::{Ipv4Addr, SocketAddr, UdpSocket as StdUdp},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use shards::{timers::sleep, RecvBatch, ShardContext, ShardsBuilder};

const PAYLOAD: usize = 64;
const WINDOW: usize = 256;
const BATCH: usize = 64;
const BUF_BYTES: usize = 4 << 20;

fn secs() -> Duration {
    let s: f64 = std::env::var("SHARDS_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2.0);
    Duration::from_secs_f64(s.clamp(0.2, 30.0))
}

fn pin(cpu: usize) {
    core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
}

fn thread_cpu() -> Duration {
    let mut ru: libc::rusage = unsafe { zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn big_buffers(s: &StdUdp) {
    let s = socket2::SockRef::from(s);
    s.set_recv_buffer_size(BUF_BYTES).unwrap();
    s.set_send_buffer_size(BUF_BYTES).unwrap();
}

/// Batch IO of the raw server and the blaster: the runtime's own
/// `recvmmsg`/`sendmmsg` layer on plain sockets.
struct RawBatch {
    io: shards::Mmsg,
    rx: shards::RecvBatch,
    tx: shards::SendBatch,
}

impl RawBatch {
    fn new(n: usize) -> Self {
        Self {
            io: shards::Mmsg::new(),
            rx: shards::RecvBatch::new(n),
            tx: shards::SendBatch::new(n),
        }
    }

    fn recv(&mut self, fd: i32, flags: i32) -> isize {
        match self.io.recv(fd, &mut self.rx, flags) {
            Ok(n) => n as isize,
            Err(_) => -1,
        }
    }

    /// Echo the first `n` received datagrams back to their sources.
    fn echo(&mut self, fd: i32, n: usize) {
        self.tx.clear();
        for d in self.rx.iter().take(n) {
            let _ = self.tx.push(d.from, d.data);
        }
        let _ = self.io.send_all(fd, &self.tx, libc::MSG_DONTWAIT);
    }

    /// Send `n` copies of the payload to `to` (blocking).
    fn send_to(&mut self, fd: i32, to: SocketAddr, n: usize) {
        self.tx.clear();
        for _ in 0..n {
            if self.tx.push(to, &[0u8; PAYLOAD]).is_err() {
                break;
            }
        }
        let _ = self.io.send_all(fd, &self.tx, 0);
    }
}

/// Closed-loop blaster on its own thread (CPU 1): returns echoes per
/// second over the measured part, and how often the window was refilled
/// after a loss.
fn blaster(server: SocketAddr, warmup: Duration, measure: Duration) -> (f64, u64) {
    thread::spawn(move || blaster_thread(server, warmup, measure))
        .join()
        .unwrap()
}

fn blaster_thread(server: SocketAddr, warmup: Duration, measure: Duration) -> (f64, u64) {
    pin(1);
    let s = StdUdp::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    big_buffers(&s);
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let fd = s.as_raw_fd();
    let mut tx = RawBatch::new(WINDOW);
    let mut rx = RawBatch::new(BATCH);
    tx.send_to(fd, server, WINDOW);
    let start = Instant::now();
    let mut echoes = 0u64;
    let mut refills = 0u64;
    let mut counting = false;
    let mut t_count = start;
    loop {
        let now = Instant::now();
        if !counting && now - start >= warmup {
            counting = true;
            echoes = 0;
            t_count = now;
        }
        if counting && now - t_count >= measure {
            break;
        }
        let n = rx.recv(fd, libc::MSG_WAITFORONE);
        if n <= 0 {
            // Timed out: some datagrams were lost; refill the window.
            refills += 1;
            tx.send_to(fd, server, WINDOW);
            continue;
        }
        echoes += n as u64;
        tx.send_to(fd, server, n as usize);
    }
    (echoes as f64 / t_count.elapsed().as_secs_f64(), refills)
}

/// Raw echo server on CPU 0: poll for readiness, then recvmmsg + sendmmsg.
fn raw_echo(warmup: Duration, measure: Duration) -> (f64, u64) {
    let sock = StdUdp::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    big_buffers(&sock);
    sock.set_nonblocking(true).unwrap();
    let addr = sock.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let stop = stop.clone();
        thread::spawn(move || {
            pin(0);
            let fd = sock.as_raw_fd();
            let mut b = RawBatch::new(BATCH);
            while !stop.load(Ordering::Relaxed) {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                unsafe { libc::poll(&mut p, 1, 50) };
                loop {
                    let n = b.recv(fd, libc::MSG_DONTWAIT);
                    if n <= 0 {
                        break;
                    }
                    b.echo(fd, n as usize);
                    if (n as usize) < BATCH {
                        break;
                    }
                }
            }
        })
    };
    let r = blaster(addr, warmup, measure);
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    r
}

/// The same echo through one shard pinned to CPU 0.
fn shard_echo(warmup: Duration, measure: Duration) -> (f64, u64) {
    let shards = ShardsBuilder::new()
        .shards(1)
        .cores("0".parse().unwrap())
        .udp_bind(vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))])
        .udp_buffers(Some(BUF_BYTES), Some(BUF_BYTES))
        .spawn(|ctx: ShardContext<()>| async move {
            let udp = ctx.udp(0).unwrap().clone();
            let mut batch = RecvBatch::new(BATCH);
            while let Some(r) = ctx.or_shutdown(udp.recv_batch(&mut batch)).await {
                r?;
                for d in batch.iter() {
                    udp.queue_send(d.from, d.data).unwrap();
                }
                udp.flush().await;
            }
            Ok::<_, std::io::Error>(udp.stats())
        })
        .unwrap();
    let addr = shards.udp_addrs()[0];
    let r = blaster(addr, warmup, measure);
    shards.shutdown_handle().trigger();
    shards.join().unwrap();
    r
}

/// Paced sender on its own thread (CPU 1): `rate` datagrams/s in bursts
/// every millisecond.
fn paced(server: SocketAddr, rate: u64, dur: Duration) -> u64 {
    thread::spawn(move || paced_thread(server, rate, dur))
        .join()
        .unwrap()
}

fn paced_thread(server: SocketAddr, rate: u64, dur: Duration) -> u64 {
    pin(1);
    let s = StdUdp::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    big_buffers(&s);
    let fd = s.as_raw_fd();
    let per_ms = (rate / 1000).max(1) as usize;
    let mut tx = RawBatch::new(per_ms.max(1));
    let start = Instant::now();
    let mut sent = 0u64;
    let mut tick = 0u64;
    while start.elapsed() < dur {
        tx.send_to(fd, server, per_ms);
        sent += per_ms as u64;
        tick += 1;
        let next = start + Duration::from_millis(tick);
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        }
    }
    sent
}

/// CPU per datagram for a receive-only raw thread: (ns/datagram, received).
fn raw_cpu(rate: u64, dur: Duration) -> (f64, u64) {
    let sock = StdUdp::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    big_buffers(&sock);
    sock.set_nonblocking(true).unwrap();
    let addr = sock.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let stop = stop.clone();
        thread::spawn(move || {
            pin(0);
            let fd = sock.as_raw_fd();
            let mut b = RawBatch::new(BATCH);
            let cpu0 = thread_cpu();
            let mut got = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                unsafe { libc::poll(&mut p, 1, 20) };
                loop {
                    let n = b.recv(fd, libc::MSG_DONTWAIT);
                    if n <= 0 {
                        break;
                    }
                    got += n as u64;
                    if (n as usize) < BATCH {
                        break;
                    }
                }
            }
            (thread_cpu() - cpu0, got)
        })
    };
    paced(addr, rate, dur);
    thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let (cpu, got) = server.join().unwrap();
    (cpu.as_nanos() as f64 / got.max(1) as f64, got)
}

fn shard_cpu(rate: u64, dur: Duration) -> (f64, u64) {
    let shards = ShardsBuilder::new()
        .shards(1)
        .cores("0".parse().unwrap())
        .udp_bind(vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))])
        .udp_buffers(Some(BUF_BYTES), Some(BUF_BYTES))
        .spawn(|ctx: ShardContext<()>| async move {
            let udp = ctx.udp(0).unwrap().clone();
            let mut batch = RecvBatch::new(BATCH);
            let cpu0 = thread_cpu();
            let mut got = 0u64;
            while let Some(r) = ctx.or_shutdown(udp.recv_batch(&mut batch)).await {
                got += r? as u64;
            }
            Ok::<_, std::io::Error>((thread_cpu() - cpu0, got))
        })
        .unwrap();
    let addr = shards.udp_addrs()[0];
    paced(addr, rate, dur);
    thread::sleep(Duration::from_millis(50));
    shards.shutdown_handle().trigger();
    let (cpu, got) = shards.join().unwrap().pop().unwrap();
    (cpu.as_nanos() as f64 / got.max(1) as f64, got)
}

/// Mesh throughput shard 0 -> shard 1; returns messages/s at the receiver.
fn mesh(batched: bool, dur: Duration) -> f64 {
    let shards = ShardsBuilder::new()
        .shards(2)
        .cores("0-1".parse().unwrap())
        .spawn(move |ctx: ShardContext<[u8; 20]>| async move {
            let mesh = ctx.mesh().clone();
            if ctx.shard_id() == 0 {
                let start = Instant::now();
                let mut i = 0u64;
                'outer: loop {
                    for _ in 0..4096 {
                        let mut msg = [0u8; 20];
                        msg[..8].copy_from_slice(&i.to_le_bytes());
                        i += 1;
                        if batched {
                            if let Err(e) = mesh.queue_to(1, msg) {
                                mesh.flush().await.ok();
                                if let Some(m) = e.into_inner() {
                                    mesh.queue_to(1, m).ok();
                                }
                            }
                        } else if mesh.send_to(1, msg).await.is_err() {
                            break 'outer;
                        }
                    }
                    if start.elapsed() >= dur {
                        break;
                    }
                }
                mesh.flush().await.ok();
                mesh.close();
                Ok::<_, std::io::Error>(0.0)
            } else {
                let mut n = 0u64;
                let mut first = None;
                while let Some((_, v)) = mesh.recv_batch().await {
                    first.get_or_insert_with(Instant::now);
                    n += v.len() as u64;
                }
                let t = first.map(|f| f.elapsed()).unwrap_or(Duration::from_secs(1));
                sleep(Duration::from_millis(1)).await;
                Ok(n as f64 / t.as_secs_f64())
            }
        })
        .unwrap();
    shards.join().unwrap()[1]
}

fn sh(cmd: &str) -> String {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let d = secs();
    let warm = Duration::from_millis(300);
    println!("# shards bench");
    println!(
        "machine: nproc={} kernel={} cpu={}",
        sh("nproc"),
        sh("uname -r"),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2")
    );
    println!("measured seconds per case: {:.1}", d.as_secs_f64());
    println!("loadavg at start: {}", sh("cat /proc/loadavg"));
    println!();

    // Interleave raw and shard runs so drift on a shared machine hits both.
    let mut raw = Vec::new();
    let mut shard = Vec::new();
    for _ in 0..2 {
        raw.push(raw_echo(warm, d));
        shard.push(shard_echo(warm, d));
    }
    println!(
        "## 1. UDP echo, {PAYLOAD}-byte datagrams, window {WINDOW}, server CPU 0, blaster CPU 1"
    );
    println!(
        "| run | raw recvmmsg/sendmmsg echoes/s | shard echoes/s | ratio | refills raw/shard |"
    );
    println!("|---|---|---|---|---|");
    for (i, (r, s)) in raw.iter().zip(&shard).enumerate() {
        println!(
            "| {} | {:.0} | {:.0} | {:.3} | {}/{} |",
            i + 1,
            r.0,
            s.0,
            s.0 / r.0,
            r.1,
            s.1
        );
    }
    let best = |v: &Vec<(f64, u64)>| v.iter().map(|x| x.0).fold(0.0, f64::max);
    println!("best-of ratio: {:.3}", best(&shard) / best(&raw));
    println!();

    println!("## 2. Mesh, 20-byte messages, shard 0 (CPU 0) -> shard 1 (CPU 1)");
    println!("| mode | messages/s |");
    println!("|---|---|");
    for _ in 0..2 {
        println!("| batched (queue_to, 64/batch) | {:.0} |", mesh(true, d));
        println!("| one by one (send_to) | {:.0} |", mesh(false, d));
    }
    println!();

    let rate = 50_000;
    println!("## 3. CPU per datagram, receive only, paced {rate}/s, receiver CPU 0");
    println!("| receiver | ns CPU/datagram | received |");
    println!("|---|---|---|");
    let mut ratios = Vec::new();
    for _ in 0..2 {
        let r = raw_cpu(rate, d);
        let s = shard_cpu(rate, d);
        println!(
            "| raw std thread (poll + recvmmsg) | {:.0} | {} |",
            r.0, r.1
        );
        println!("| shard (recv_batch) | {:.0} | {} |", s.0, s.1);
        ratios.push(s.0 / r.0);
    }
    println!("shard/raw CPU ratios: {ratios:.3?}");
    println!("loadavg at end: {}", sh("cat /proc/loadavg"));
}
