//! One UDP socket that stands in for thousands of loopback addresses.
//!
//! Every address in 127.0.0.0/8 is local on Linux, so a socket bound to the
//! wildcard address on port P receives datagrams sent to any 127.x.y.z:P.
//! With `IP_PKTINFO` the kernel says which address each datagram was sent to
//! (so the swarm knows which simulated node it is for), and the same option
//! on `sendmsg` picks the source address of a reply (so it comes from that
//! node). Ten thousand simulated nodes then cost one socket, not ten
//! thousand.
//!
//! Loopback only: datagrams from anywhere else are dropped, and sending to
//! anything but 127.0.0.0/8 is refused.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// A wildcard-bound UDP socket with `IP_PKTINFO`.
#[derive(Debug)]
pub struct PktSocket {
    sock: UdpSocket,
}

/// A received datagram's addresses.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// Bytes in the buffer.
    pub len: usize,
    /// The sender.
    pub from: SocketAddrV4,
    /// The local address it was sent to.
    pub dst: Ipv4Addr,
}

impl PktSocket {
    /// Binds the wildcard address on `port` (0: any free port), with a
    /// receive timeout so loops can check for shutdown.
    pub fn bind(port: u16, timeout: Duration) -> io::Result<PktSocket> {
        let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))?;
        sock.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let on: libc::c_int = 1;
        // SAFETY: a valid fd and a c_int option value of the right size.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_PKTINFO,
                (&on as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let buf: libc::c_int = 8 << 20;
        for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
            // SAFETY: as above. Failure only means a smaller buffer.
            unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&buf as *const libc::c_int).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        Ok(PktSocket { sock })
    }

    /// The bound port.
    pub fn port(&self) -> io::Result<u16> {
        Ok(self.sock.local_addr()?.port())
    }

    /// Receives one datagram; `Ok(None)` on timeout or on a datagram from
    /// outside loopback (dropped).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        // SAFETY: zeroed plain-old-data structs for recvmsg to fill.
        let mut from: libc::sockaddr_in = unsafe { zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut cbuf = [0u64; 16];
        // SAFETY: as above.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_name = (&mut from as *mut libc::sockaddr_in).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = size_of::<[u64; 16]>();
        // SAFETY: msg points at live buffers of the stated sizes.
        let n = unsafe { libc::recvmsg(self.sock.as_raw_fd(), &mut msg, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            };
        }
        let from = SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(from.sin_addr.s_addr)),
            u16::from_be(from.sin_port),
        );
        let mut dst = None;
        // SAFETY: iterating the control messages recvmsg wrote into cbuf.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_PKTINFO {
                    let info = libc::CMSG_DATA(c)
                        .cast::<libc::in_pktinfo>()
                        .read_unaligned();
                    dst = Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)));
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        match dst {
            Some(dst) if from.ip().is_loopback() && dst.is_loopback() => Ok(Some(Received {
                len: (n as usize).min(buf.len()),
                from,
                dst,
            })),
            _ => Ok(None),
        }
    }

    /// Sends `data` to `to` from local address `src`. Refuses any
    /// destination outside 127.0.0.0/8.
    pub fn send_from(&self, src: Ipv4Addr, to: SocketAddr, data: &[u8]) -> io::Result<()> {
        let SocketAddr::V4(to) = to else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "IPv4 only"));
        };
        if !to.ip().is_loopback() || !src.is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the swarm only talks to loopback",
            ));
        }
        // SAFETY: zeroed plain-old-data structs, filled below.
        let mut dst: libc::sockaddr_in = unsafe { zeroed() };
        dst.sin_family = libc::AF_INET as libc::sa_family_t;
        dst.sin_port = to.port().to_be();
        dst.sin_addr.s_addr = u32::from(*to.ip()).to_be();
        let mut iov = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let mut cbuf = [0u64; 8];
        // SAFETY: as above.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_name = (&mut dst as *mut libc::sockaddr_in).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is a pure size computation.
        msg.msg_controllen =
            unsafe { libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) } as usize;
        // SAFETY: the control buffer is large enough for one in_pktinfo.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            if c.is_null() {
                return Err(io::Error::other("no room for IP_PKTINFO"));
            }
            (*c).cmsg_level = libc::IPPROTO_IP;
            (*c).cmsg_type = libc::IP_PKTINFO;
            (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as usize;
            let mut info: libc::in_pktinfo = zeroed();
            info.ipi_spec_dst.s_addr = u32::from(src).to_be();
            libc::CMSG_DATA(c)
                .cast::<libc::in_pktinfo>()
                .write_unaligned(info);
        }
        // SAFETY: msg points at live buffers of the stated sizes.
        let n = unsafe { libc::sendmsg(self.sock.as_raw_fd(), &msg, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_addresses_one_socket() {
        let s = PktSocket::bind(0, Duration::from_millis(500)).unwrap();
        let port = s.port().unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        for last in [1u8, 77, 200] {
            let dst = Ipv4Addr::new(127, 64, 3, last);
            client.send_to(b"hello", (dst, port)).unwrap();
            let mut buf = [0u8; 64];
            let r = s.recv(&mut buf).unwrap().unwrap();
            assert_eq!(r.dst, dst);
            assert_eq!(&buf[..r.len], b"hello");
            s.send_from(dst, SocketAddr::V4(r.from), b"back").unwrap();
            let (n, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"back");
            assert_eq!(from, SocketAddr::from((dst, port)));
        }
        let outside: SocketAddr = "192.0.2.1:9".parse().unwrap();
        assert!(s
            .send_from(Ipv4Addr::new(127, 64, 0, 1), outside, b"x")
            .is_err());
    }
}
