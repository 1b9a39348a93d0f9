//! A raw `recvmmsg`/`sendmmsg` UDP echo: the ceiling any KRPC server on
//! one core is measured against. It answers each query with a KRPC-shaped
//! response of about the query's size carrying the query's tid, doing no
//! other work.

use std::mem::{size_of, zeroed};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::flood::thread_cpu_time;

/// Datagrams per recvmmsg/sendmmsg.
const BATCH: usize = 64;

/// Reusable buffers for batches of 64 datagrams.
struct EchoBufs {
    rx: Vec<[u8; 2048]>,
    tx: Vec<Vec<u8>>,
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl EchoBufs {
    fn new() -> Self {
        Self {
            rx: vec![[0u8; 2048]; BATCH],
            tx: (0..BATCH).map(|_| Vec::with_capacity(2048)).collect(),
            // SAFETY: sockaddr_storage and mmsghdr are plain C structs; zero is valid.
            names: vec![unsafe { zeroed() }; BATCH],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                BATCH
            ],
            // SAFETY: as above.
            hdrs: vec![unsafe { zeroed() }; BATCH],
        }
    }

    fn recv(&mut self, fd: i32) -> usize {
        for i in 0..BATCH {
            self.iovs[i].iov_base = self.rx[i].as_mut_ptr().cast();
            self.iovs[i].iov_len = 2048;
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
        }
        // SAFETY: every header points at live buffers of the stated sizes.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        r.max(0) as usize
    }

    /// Answers the first `n` datagrams: a response carrying the query's
    /// tid, padded to about the query's length. Datagrams without a tid
    /// are echoed as they are.
    fn reply(&mut self, fd: i32, n: usize) {
        for i in 0..n {
            let len = self.hdrs[i].msg_len as usize;
            let q = &self.rx[i][..len];
            let out = &mut self.tx[i];
            out.clear();
            match find_tid(q) {
                Some(tid) => krpc_reply(out, tid, len),
                None => out.extend_from_slice(q),
            }
            self.iovs[i].iov_base = out.as_mut_ptr().cast();
            self.iovs[i].iov_len = out.len();
        }
        let mut off = 0;
        while off < n {
            // SAFETY: headers point at live buffers of the stated sizes.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs[off..].as_mut_ptr(),
                    (n - off) as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if r <= 0 {
                break;
            }
            off += r as usize;
        }
    }
}

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
/// the CPU time the serving thread used.
pub fn serve(sock: &UdpSocket, stop: &AtomicBool) -> Duration {
    let fd = sock.as_raw_fd();
    let mut b = EchoBufs::new();
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
            let n = b.recv(fd);
            if n == 0 {
                break;
            }
            b.reply(fd, n);
            if n < BATCH {
                break;
            }
        }
    }
    thread_cpu_time().saturating_sub(cpu0)
}
