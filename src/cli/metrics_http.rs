//! `--metrics ADDR`: Prometheus text exposition over a minimal HTTP/1.0
//! responder on its own thread.
//!
//! metrics-exporter-prometheus renders the text; its bundled HTTP listener
//! pulls in an async runtime we do not otherwise need, so a twenty-line
//! blocking responder serves `GET /metrics` instead.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;

/// Installs the recorder and serves it on `addr`.
pub fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let listener = TcpListener::bind(addr)?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
                let mut req = [0u8; 1024];
                let n = s.read(&mut req).unwrap_or(0);
                let head = &req[..n];
                let (status, body) = if head.starts_with(b"GET /metrics") || head.starts_with(b"GET / ") {
                    ("200 OK", handle.render())
                } else {
                    ("404 Not Found", String::from("not found\n"))
                };
                let _ = write!(
                    s,
                    "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        })?;
    Ok(())
}
