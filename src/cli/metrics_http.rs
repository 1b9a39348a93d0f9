//! `--metrics ADDR`: Prometheus text exposition over a minimal HTTP/1.0
//! responder on its own threads.
//!
//! metrics-exporter-prometheus renders the text; its bundled HTTP listener
//! pulls in an async runtime we do not otherwise need, so a small blocking
//! responder serves `GET /metrics` instead. It is built to run for weeks
//! facing whoever can reach the port:
//! - each connection gets its own thread and a total deadline
//!   ([`CONN_DEADLINE`]) for reading the request and writing the answer, so
//!   a slow or silent reader cannot hold the server; at most
//!   [`MAX_CONNS`] are served at once and the rest are closed at once;
//! - `accept` errors (out of file descriptors, say) back off up to a second
//!   instead of spinning;
//! - an upkeep thread drains the recorder's histogram samples every
//!   [`UPKEEP_EVERY`], so they stay bounded whether or not anyone scrapes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusBuilder;

/// Most connections served at once.
const MAX_CONNS: usize = 8;
/// Whole time one connection may take.
const CONN_DEADLINE: Duration = Duration::from_secs(5);
/// How often histogram samples are folded in.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// Longest pause after repeated accept errors.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Installs the recorder and serves it on `addr`.
pub fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let listener = TcpListener::bind(addr)?;
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            upkeep.run_upkeep();
        })?;
    serve_with(listener, Arc::new(move || handle.render()))
}

/// Serves `render`'s text on `listener` (see the module docs).
pub fn serve_with(
    listener: TcpListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
) -> std::io::Result<()> {
    let busy = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let mut backoff = Duration::from_millis(10);
            loop {
                let conn = match listener.accept() {
                    Ok((conn, _)) => {
                        backoff = Duration::from_millis(10);
                        conn
                    }
                    Err(e) => {
                        log::warn!("metrics: accept: {e}");
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                        continue;
                    }
                };
                if busy.fetch_add(1, Ordering::AcqRel) >= MAX_CONNS {
                    busy.fetch_sub(1, Ordering::AcqRel);
                    continue; // dropped: closed at once
                }
                let busy = busy.clone();
                let render = render.clone();
                let spawned = std::thread::Builder::new()
                    .name("metrics-conn".into())
                    .spawn(move || {
                        answer(conn, &*render);
                        busy.fetch_sub(1, Ordering::AcqRel);
                    });
                if let Err(e) = spawned {
                    log::warn!("metrics: no thread for a connection: {e}");
                    // The closure (and its decrement) never ran.
                }
            }
        })?;
    Ok(())
}

/// Reads one request and writes one answer within [`CONN_DEADLINE`].
fn answer(mut s: TcpStream, render: &dyn Fn() -> String) {
    let deadline = Instant::now() + CONN_DEADLINE;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    };
    let mut req = [0u8; 1024];
    let mut n = 0;
    // Up to the end of the request line (or a full buffer).
    while n < req.len() && !req[..n].contains(&b'\n') {
        let Some(t) = left() else { return };
        if s.set_read_timeout(Some(t)).is_err() {
            return;
        }
        match s.read(&mut req[n..]) {
            Ok(0) | Err(_) => return,
            Ok(k) => n += k,
        }
    }
    let head = &req[..n];
    let (status, body) = if head.starts_with(b"GET /metrics") || head.starts_with(b"GET / ") {
        ("200 OK", render())
    } else {
        ("404 Not Found", String::from("not found\n"))
    };
    let out = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut rest = out.as_bytes();
    while !rest.is_empty() {
        let Some(t) = left() else { return };
        if s.set_write_timeout(Some(t)).is_err() {
            return;
        }
        match s.write(rest) {
            Ok(0) | Err(_) => return,
            Ok(k) => rest = &rest[k..],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn slow_and_silent_clients_do_not_hold_the_server() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // A body far larger than socket buffers, so a reader that never
        // reads blocks its writer.
        let body = "x".repeat(16 << 20);
        serve_with(listener, Arc::new(move || body.clone())).unwrap();
        // Silent clients (connect, send nothing) and stalled readers (ask,
        // never read), more than the concurrent cap.
        let mut held = Vec::new();
        for i in 0..2 * MAX_CONNS {
            let mut s = TcpStream::connect(addr).unwrap();
            if i % 2 == 0 {
                s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
            }
            held.push(s);
        }
        // Past the deadline every held connection has been let go, and a
        // normal scrape is answered in full.
        std::thread::sleep(CONN_DEADLINE + Duration::from_millis(500));
        let t = Instant::now();
        let out = get(addr);
        assert!(
            out.starts_with("HTTP/1.0 200 OK"),
            "{}",
            &out[..out.len().min(80)]
        );
        assert!(out.ends_with(&"x".repeat(100)));
        assert!(out.len() > 16 << 20);
        assert!(t.elapsed() < CONN_DEADLINE, "took {:?}", t.elapsed());
        drop(held);
    }
}
