//! One port per shard (`udp_bind_spread`), live on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    io,
    net::{Ipv4Addr, SocketAddr, UdpSocket as StdUdp},
    time::Duration,
};

use shards::{udp::UdpBindError, RecvBatch, ShardContext, ShardsBuilder, ShardsError};

type Res<T> = Result<T, io::Error>;

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// A port `p` such that `p..p+n` were all free a moment ago.
fn free_run(n: u16) -> u16 {
    for _ in 0..200 {
        let p = StdUdp::bind(loopback(0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if p.checked_add(n).is_none() {
            continue;
        }
        let held: Vec<_> = (0..n).map(|i| StdUdp::bind(loopback(p + i))).collect();
        if held.iter().all(Result::is_ok) {
            return p;
        }
    }
    panic!("no run of {n} free ports");
}

/// Every shard echoes what it receives, prefixed with its index, and
/// returns the addresses its context reports.
fn echo_shards(addr: SocketAddr) -> Result<shards::Shards<Vec<SocketAddr>>, ShardsError> {
    ShardsBuilder::new()
        .shards(2)
        .pin(false)
        .udp_bind_spread(vec![addr])
        .spawn(|ctx: ShardContext<()>| async move {
            let udp = ctx.udp(0).unwrap().clone();
            let mut batch = RecvBatch::new(16);
            while let Some(r) = ctx.or_shutdown(udp.recv_batch(&mut batch)).await {
                r?;
                for d in batch.iter() {
                    let mut reply = vec![ctx.shard_id() as u8];
                    reply.extend_from_slice(d.data);
                    udp.queue_send(d.from, &reply).unwrap();
                }
                udp.flush().await;
            }
            Res::Ok(ctx.udp_addrs())
        })
}

fn ask(client: &StdUdp, to: SocketAddr) -> (u8, SocketAddr) {
    client.send_to(b"hello", to).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[1..n], b"hello");
    (buf[0], from)
}

#[test]
fn each_shard_owns_its_port_and_only_its_traffic() {
    let port = free_run(2);
    let shards = echo_shards(loopback(port)).unwrap();
    let want = vec![vec![loopback(port)], vec![loopback(port + 1)]];
    assert_eq!(shards.udp_addrs_by_shard(), &want[..]);
    assert_eq!(shards.udp_addrs(), &[loopback(port), loopback(port + 1)]);
    let clients: Vec<StdUdp> = (0..16)
        .map(|_| StdUdp::bind(loopback(0)).unwrap())
        .collect();
    for c in &clients {
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        for shard in 0..2u8 {
            let to = loopback(port + u16::from(shard));
            // Whatever the source port, port + i reaches shard i, and the
            // reply comes back from that same port.
            assert_eq!(ask(c, to), (shard, to));
        }
    }
    shards.shutdown_handle().trigger();
    assert_eq!(shards.join().unwrap(), want);
}

#[test]
fn port_zero_gives_each_shard_its_own_port() {
    let shards = echo_shards(loopback(0)).unwrap();
    let by_shard = shards.udp_addrs_by_shard().to_vec();
    assert_eq!(by_shard.len(), 2);
    let (a, b) = (by_shard[0][0], by_shard[1][0]);
    assert!(a.port() != 0 && b.port() != 0 && a != b, "{a} {b}");
    let c = StdUdp::bind(loopback(0)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert_eq!(ask(&c, a), (0, a));
    assert_eq!(ask(&c, b), (1, b));
    shards.shutdown_handle().trigger();
    assert_eq!(shards.join().unwrap(), by_shard);
}

#[test]
fn a_held_port_of_any_shard_is_an_error() {
    let port = free_run(2);
    let holder = StdUdp::bind(loopback(port + 1)).unwrap();
    let err = echo_shards(loopback(port)).err().unwrap();
    assert!(
        matches!(&err, ShardsError::UdpBind(UdpBindError::InUse { addr }) if *addr == loopback(port + 1)),
        "{err}"
    );
    assert!(err.to_string().contains("already in use"), "{err}");
    drop(holder);
    // Shard 0's socket was released with the failure: the port binds again.
    StdUdp::bind(loopback(port)).unwrap();
}

#[test]
fn ports_past_65535_are_refused() {
    let err = echo_shards(loopback(u16::MAX)).err().unwrap();
    assert!(
        matches!(err, ShardsError::UdpBind(UdpBindError::PortRange { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("65535"), "{err}");
}
