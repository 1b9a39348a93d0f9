//! A raw `recvmmsg`/`sendmmsg` UDP echo: the ceiling any KRPC server on
//! one core is measured against. It answers each query with a KRPC-shaped
//! response of about the query's size carrying the query's tid, doing no
//! other work.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::flood::thread_cpu_time;

/// Datagrams per recvmmsg/sendmmsg.
const BATCH: usize = 64;

/// The 4-byte tid of a query encoded with sorted keys (`…1:t4:XXXX…`).
fn find_tid(q: &[u8]) -> Option<&[u8]> {
    let pat = b"1:t4:";
    let at = q.windows(pat.len()).rposition(|w| w == pat)?;
    q.get(at + pat.len()..at + pat.len() + 4)
}

/// `d1:rd2:id20:…3:pad<N>:…e1:t4:XXXX1:y1:re`, about `want` bytes long.
fn krpc_reply(out: &mut Vec<u8>, tid: &[u8], want: usize) {
    const FIXED: usize = 57; // the message above with a 2-digit pad length, no pad
    let pad = want.saturating_sub(FIXED).max(10);
    out.extend_from_slice(b"d1:rd2:id20:");
    out.extend_from_slice(&[0x42; 20]);
    out.extend_from_slice(format!("3:pad{pad}:").as_bytes());
    out.resize(out.len() + pad, b'x');
    out.extend_from_slice(b"e1:t4:");
    out.extend_from_slice(tid);
    out.extend_from_slice(b"1:y1:re");
}

/// Serves the echo on `sock` (its own thread) until `stop` is set; returns
/// the CPU time the serving thread used. Batched IO is the runtime's
/// ([`shards::Mmsg`]), the same calls the shards make.
pub fn serve(sock: &UdpSocket, stop: &AtomicBool) -> Duration {
    let fd = sock.as_raw_fd();
    let mut io = shards::Mmsg::new();
    let mut rx = shards::RecvBatch::new(BATCH);
    let mut tx = shards::SendBatch::new(BATCH);
    let mut out = Vec::with_capacity(2048);
    let cpu0 = thread_cpu_time();
    while !stop.load(Ordering::Relaxed) {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, 50) };
        loop {
            let n = io.recv(fd, &mut rx, libc::MSG_DONTWAIT).unwrap_or(0);
            if n == 0 {
                break;
            }
            // Each answer carries the query's tid, padded to about the
            // query's length; datagrams without a tid are echoed as they are.
            tx.clear();
            for d in rx.iter() {
                out.clear();
                match find_tid(d.data) {
                    Some(tid) => krpc_reply(&mut out, tid, d.data.len()),
                    None => out.extend_from_slice(d.data),
                }
                let _ = tx.push(d.from, &out);
            }
            let _ = io.send_all(fd, &tx, libc::MSG_DONTWAIT);
            if n < BATCH {
                break;
            }
        }
    }
    thread_cpu_time().saturating_sub(cpu0)
}

#[cfg(test)]
mod echo_tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn answers_with_the_query_tid() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let t = {
            let stop = stop.clone();
            std::thread::spawn(move || serve(&server, &stop))
        };
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let q = b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q4:ping1:t4:WXYZ1:y1:qe";
        let mut buf = [0u8; 2048];
        for _ in 0..3 {
            c.send_to(q, addr).unwrap();
            let (n, from) = c.recv_from(&mut buf).unwrap();
            assert_eq!(from, addr);
            let r = crate::krpc::decode(&buf[..n]).unwrap();
            assert_eq!(r.tid, b"WXYZ");
            assert!(n + 16 >= q.len(), "about the query's size: {n}");
        }
        // Without a tid the datagram comes back as it is.
        c.send_to(b"hello", addr).unwrap();
        let (n, _) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
    }
}
