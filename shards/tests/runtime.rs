//! Live tests of the runtime on loopback. Two shards, pinning off (tests
//! run in parallel on a 2-core machine).

use std::{
    collections::{HashMap, HashSet},
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket as StdUdp},
    time::{Duration, Instant},
};

use shards::{
    budget::{GlobalBudgetConfig, PerIpLimiter},
    timers::Ticker,
    FailureKind, MeshSendError, RecvBatch, ShardContext, ShardsBuilder, ShardsError, TcpError,
    TcpOptions,
};

fn two() -> ShardsBuilder {
    ShardsBuilder::new().shards(2).pin(false)
}

fn loopback0() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

type Res<T> = Result<T, io::Error>;

#[test]
fn datagrams_from_many_ports_spread_over_shards_and_are_echoed() {
    let shards = two()
        .udp_bind(vec![loopback0()])
        .spawn(|ctx: ShardContext<()>| async move {
            let udp = ctx.udp(0).unwrap().clone();
            let mut batch = RecvBatch::new(64);
            let mut seen = 0usize;
            while let Some(r) = ctx.or_shutdown(udp.recv_batch(&mut batch)).await {
                r?;
                for d in batch.iter() {
                    let mut reply = vec![ctx.shard_id() as u8];
                    reply.extend_from_slice(d.data);
                    udp.queue_send(d.from, &reply).unwrap();
                    seen += 1;
                }
                udp.flush().await;
            }
            Res::Ok(seen)
        })
        .unwrap();
    let server = shards.udp_addrs()[0];
    let clients: Vec<StdUdp> = (0..64)
        .map(|_| StdUdp::bind(loopback0()).unwrap())
        .collect();
    let mut by_shard: HashMap<u8, HashSet<u16>> = HashMap::new();
    let mut echoed = 0;
    for c in &clients {
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        for i in 0..5u8 {
            c.send_to(&[i; 20], server).unwrap();
        }
    }
    for c in &clients {
        let mut buf = [0u8; 64];
        for _ in 0..5 {
            let (n, _) = c.recv_from(&mut buf).unwrap();
            assert_eq!(n, 21);
            by_shard
                .entry(buf[0])
                .or_default()
                .insert(c.local_addr().unwrap().port());
            echoed += 1;
        }
    }
    shards.shutdown_handle().trigger();
    let seen = shards.join().unwrap();
    assert_eq!(echoed, 320);
    assert_eq!(seen.iter().sum::<usize>(), 320);
    // 64 source ports hashed over 2 shards: both get some (the chance that
    // all land on one is 2^-63), and a source always lands on one shard.
    assert_eq!(by_shard.len(), 2, "{by_shard:?}");
    let a = &by_shard[&0];
    let b = &by_shard[&1];
    assert!(a.is_disjoint(b), "one source port, one shard");
    assert_eq!(a.len() + b.len(), 64);
}

#[test]
fn binding_a_held_port_fails_before_any_shard_starts() {
    let holder = StdUdp::bind(loopback0()).unwrap();
    let err = two()
        .udp_bind(vec![holder.local_addr().unwrap()])
        .spawn(|_ctx: ShardContext<()>| async move { Res::Ok(()) })
        .unwrap_err();
    assert!(
        matches!(err, ShardsError::UdpBind(_)) && err.to_string().contains("already in use"),
        "{err}"
    );
}

/// Messages are `(sender, sequence)`.
const BURST: u64 = 50_000;

#[test]
fn mesh_delivers_every_message_in_order_under_a_burst() {
    let shards = ShardsBuilder::new()
        .shards(3)
        .pin(false)
        .oversubscribe(true)
        .spawn(|ctx: ShardContext<(usize, u64)>| async move {
            let me = ctx.shard_id();
            let mesh = ctx.mesh().clone();
            // Receive in its own task so our blocking sends cannot deadlock
            // against a peer doing the same.
            let rx = shards::glommio::spawn_local({
                let mesh = mesh.clone();
                async move {
                    let mut next: HashMap<usize, u64> = HashMap::new();
                    let mut in_order = true;
                    while let Some((from, (sender, seq))) = mesh.recv().await {
                        in_order &= from == sender;
                        let want = next.entry(from).or_insert(0);
                        in_order &= seq == *want;
                        *want += 1;
                    }
                    (next, in_order)
                }
            });
            for seq in 0..BURST {
                for peer in (0..ctx.nr_shards()).filter(|p| *p != me) {
                    let mut msg = (me, seq);
                    loop {
                        match mesh.queue_to(peer, msg) {
                            Ok(()) => break,
                            Err(MeshSendError::Full(m)) => {
                                msg = m;
                                mesh.flush().await.unwrap();
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            }
            mesh.flush().await.unwrap();
            mesh.close();
            let (next, in_order) = rx.await;
            Res::Ok((next, in_order, mesh.stats()))
        })
        .unwrap();
    let out = shards.join().unwrap();
    for (me, (next, in_order, stats)) in out.iter().enumerate() {
        assert!(in_order, "shard {me}: out of order");
        assert_eq!(next.len(), 2, "shard {me} heard from both peers");
        assert!(next.values().all(|n| *n == BURST), "shard {me}: {next:?}");
        assert_eq!(stats.sent, 2 * BURST);
        assert_eq!(stats.received, 2 * BURST);
        assert_eq!(stats.dropped_closed, 0);
    }
}

#[test]
fn shutdown_drains_queued_messages_and_joins() {
    const N: u64 = 20_000;
    let shards = two()
        .spawn(|ctx: ShardContext<u64>| async move {
            let mesh = ctx.mesh().clone();
            if ctx.shard_id() == 0 {
                // Queue everything, then wait for shutdown before closing.
                let v: Vec<u64> = (0..N).collect();
                for chunk in v.chunks(100) {
                    mesh.send_batch_to(1, chunk.to_vec()).await.unwrap();
                }
                ctx.shutdown().await;
                mesh.flush().await.unwrap();
                mesh.close();
                Res::Ok(0)
            } else {
                // Do not read until shutdown: everything sits in the queue.
                ctx.shutdown().await;
                let depth = mesh.queue_depth();
                let mut got = 0u64;
                let mut sum = 0u64;
                while let Some((_, m)) = mesh.recv().await {
                    got += 1;
                    sum += m;
                }
                assert!(depth > 0, "messages were queued at shutdown");
                assert_eq!(sum, N * (N - 1) / 2);
                Res::Ok(got)
            }
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    shards.shutdown_handle().trigger();
    let got = shards.join().unwrap();
    assert_eq!(got, vec![0, N]);
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_failing_shard_is_reported_by_index_and_stops_the_others() {
    let err = two()
        .spawn(|ctx: ShardContext<()>| async move {
            if ctx.shard_id() == 1 {
                return Err(io::Error::other("boom"));
            }
            // Shard 0 would run forever; the failure of shard 1 stops it.
            ctx.shutdown().await;
            Ok(())
        })
        .unwrap()
        .join()
        .unwrap_err();
    let ShardsError::Failed(f) = &err else {
        panic!("{err}")
    };
    assert_eq!(f.shards(), vec![1]);
    assert!(matches!(f.0[0].kind, FailureKind::App(_)));
    assert!(err.to_string().contains("shard 1: boom"), "{err}");

    let err = two()
        .spawn(|ctx: ShardContext<()>| async move {
            if ctx.shard_id() == 0 {
                panic!("deliberate");
            }
            ctx.shutdown().await;
            Res::Ok(())
        })
        .unwrap()
        .join()
        .unwrap_err();
    assert!(
        err.to_string().contains("shard 0: panicked: deliberate"),
        "{err}"
    );
}

#[test]
fn per_ip_limiter_throttles_a_flooder_while_others_pass() {
    let shards = ShardsBuilder::new()
        .shards(1)
        .pin(false)
        .udp_bind(vec![loopback0()])
        // Room for the whole burst, so only the limiter drops.
        .udp_buffers(Some(8 << 20), None)
        .spawn(|ctx: ShardContext<()>| async move {
            let udp = ctx.udp(0).unwrap().clone();
            let mut limiter = PerIpLimiter::new(4096, 20, 10, Instant::now());
            let mut allowed: HashMap<SocketAddr, u32> = HashMap::new();
            let mut batch = RecvBatch::new(64);
            while let Some(r) = ctx.or_shutdown(udp.recv_batch(&mut batch)).await {
                r?;
                let now = Instant::now();
                for d in batch.iter() {
                    if limiter.check(now, d.from.ip()) {
                        *allowed.entry(d.from).or_default() += 1;
                    } else {
                        udp.record_budget_drops(1);
                    }
                }
            }
            Res::Ok((allowed, limiter.stats(), udp.stats()))
        })
        .unwrap();
    let server = shards.udp_addrs()[0];
    // The flooder is 127.0.0.2; well-behaved sources are 127.0.0.3..=22.
    let flooder = StdUdp::bind("127.0.0.2:0").unwrap();
    let others: Vec<StdUdp> = (3..23)
        .map(|i| StdUdp::bind((Ipv4Addr::new(127, 0, 0, i), 0)).unwrap())
        .collect();
    let t0 = Instant::now();
    for round in 0..5 {
        for _ in 0..400 {
            flooder.send_to(b"flood", server).unwrap();
        }
        for o in &others {
            o.send_to(b"hello", server).unwrap();
        }
        if round < 4 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let elapsed = t0.elapsed();
    std::thread::sleep(Duration::from_millis(100));
    shards.shutdown_handle().trigger();
    let (allowed, stats, udp) = shards.join().unwrap().pop().unwrap();
    let flood_ok = allowed[&flooder.local_addr().unwrap()];
    // burst 10 + 20/s over the sending time (~0.2 s, plus slack for a slow host).
    let bound = 10 + (20.0 * (elapsed.as_secs_f64() + 0.2)).ceil() as u32;
    assert!(
        flood_ok >= 10 && flood_ok <= bound,
        "flooder got {flood_ok}, bound {bound}"
    );
    for o in &others {
        assert_eq!(
            allowed[&o.local_addr().unwrap()],
            5,
            "every polite packet passes"
        );
    }
    assert_eq!(stats.denied, 2000 - u64::from(flood_ok));
    assert_eq!(udp.budget_drops, stats.denied, "drops are counted");
    assert_eq!(udp.rx_datagrams, 2100);
}

#[test]
fn live_global_budget_lends_the_idle_shards_share() {
    const RATE: u64 = 20_000;
    let cfg = GlobalBudgetConfig {
        epoch: Duration::from_millis(50),
        ..GlobalBudgetConfig::new(RATE)
    };
    let shards = two()
        .global_budget(cfg)
        .spawn(|ctx: ShardContext<()>| async move {
            let budget = ctx.global_budget().unwrap().clone();
            if ctx.shard_id() == 1 {
                ctx.shutdown().await; // idle
                return Res::Ok((0, Duration::ZERO));
            }
            // Be busy for 0.4 s so the lending settles, then measure 1 s.
            // Tokens are taken every 2 ms, far inside the 50 ms burst
            // window, so the count is the bucket's refill, i.e. the share.
            let mut tick = Ticker::new(Duration::from_millis(2));
            let warm = Instant::now();
            while warm.elapsed() < Duration::from_millis(400) {
                tick.tick().await;
                budget.take_up_to(10_000);
            }
            let start = Instant::now();
            let mut granted = 0;
            while start.elapsed() < Duration::from_secs(1) {
                tick.tick().await;
                granted += budget.take_up_to(10_000);
            }
            let took = start.elapsed();
            ctx.shutdown_handle().trigger();
            Res::Ok((granted, took))
        })
        .unwrap();
    let out = shards.join().unwrap();
    let (granted, took) = out[0];
    let expected = RATE as f64 * took.as_secs_f64();
    let ratio = granted as f64 / expected;
    eprintln!("live global budget: granted {granted} in {took:?} = {ratio:.4} of the budget");
    assert!(
        (0.95..=1.05).contains(&ratio),
        "granted {granted} in {took:?}: {ratio:.3} of the global budget"
    );
}

#[test]
fn tcp_connect_times_out_on_a_full_backlog_and_caps_hold() {
    // A loopback listener with backlog 1 that never accepts: once its
    // queue is full, SYNs are dropped and connects hang.
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener.bind(&loopback0().into()).unwrap();
    listener.listen(1).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    loop {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => fillers.push(s),
            Err(_) => break,
        }
        assert!(fillers.len() < 64, "backlog never filled");
    }
    let opts = TcpOptions {
        connect_timeout: Duration::from_millis(300),
        max_per_ip: 1,
        max_per_shard: 1,
        ..TcpOptions::default()
    };
    let shards = ShardsBuilder::new()
        .shards(1)
        .pin(false)
        .tcp(opts)
        .spawn(move |ctx: ShardContext<()>| async move {
            let tcp = ctx.tcp();
            let t = Instant::now();
            let r = tcp.connect(addr).await;
            let took = t.elapsed();
            let timed_out = matches!(r, Err(TcpError::Timeout { .. }));
            let released = tcp.active() == 0;
            // Caps: hold one permit, the next is refused without a socket.
            let ip: IpAddr = Ipv4Addr::LOCALHOST.into();
            let p = tcp.try_permit(ip).unwrap();
            let shard_cap = matches!(tcp.try_permit(ip), Err(TcpError::ShardCap { .. }));
            let refused_connect = matches!(tcp.connect(addr).await, Err(TcpError::ShardCap { .. }));
            drop(p);
            let after_drop = tcp.try_permit(ip).is_ok();
            Res::Ok((
                timed_out,
                took,
                released,
                shard_cap,
                refused_connect,
                after_drop,
            ))
        })
        .unwrap();
    let (timed_out, took, released, cap, refused, after_drop) =
        shards.join().unwrap().pop().unwrap();
    assert!(timed_out, "connect should time out");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert!(released && cap && refused && after_drop);
    drop(fillers);
}

#[test]
fn tcp_per_ip_cap_and_graceful_close() {
    let listener = std::net::TcpListener::bind(loopback0()).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        s.write_all(b"world").unwrap();
        // Read to EOF: the client's graceful close sends a FIN.
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        (buf, rest.len())
    });
    let opts = TcpOptions {
        max_per_ip: 1,
        ..TcpOptions::default()
    };
    let shards = ShardsBuilder::new()
        .shards(1)
        .pin(false)
        .tcp(opts)
        .spawn(move |ctx: ShardContext<()>| async move {
            use futures_lite::{AsyncReadExt, AsyncWriteExt};
            let mut c = ctx.tcp().connect(addr).await.map_err(io::Error::other)?;
            let second = matches!(ctx.tcp().connect(addr).await, Err(TcpError::IpCap { .. }));
            c.write_all(b"hello").await?;
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf).await?;
            c.close(Duration::from_secs(1)).await?;
            Res::Ok((second, buf, ctx.tcp().active()))
        })
        .unwrap();
    let (second, buf, active) = shards.join().unwrap().pop().unwrap();
    assert!(second, "second connection to the same IP refused");
    assert_eq!(&buf, b"world");
    assert_eq!(active, 0, "permit released on close");
    assert_eq!(server.join().unwrap(), (*b"hello", 0));
}

#[test]
fn single_message_sends_keep_order_and_bad_peers_hand_the_message_back() {
    let shards = two()
        .spawn(|ctx: ShardContext<u32>| async move {
            let mesh = ctx.mesh().clone();
            if ctx.shard_id() == 0 {
                let own = mesh.try_send_to(0, 7).unwrap_err();
                let far = mesh.send_to(9, 8).await.unwrap_err();
                assert!(matches!(own, MeshSendError::InvalidPeer(7)));
                assert!(matches!(far, MeshSendError::InvalidPeer(8)));
                for i in 0..5_000 {
                    mesh.send_to(1, i).await.unwrap();
                }
                mesh.close();
                Res::Ok(true)
            } else {
                let mut next = 0;
                while let Some((from, m)) = mesh.recv().await {
                    assert_eq!((from, m), (0, next));
                    next += 1;
                }
                Res::Ok(next == 5_000)
            }
        })
        .unwrap();
    assert_eq!(shards.join().unwrap(), vec![true, true]);
}

#[test]
fn timers_deadline_and_ticker() {
    use shards::timers::{sleep, with_deadline, DeadlinePassed};
    let shards = ShardsBuilder::new()
        .shards(1)
        .pin(false)
        .spawn(|_ctx: ShardContext<()>| async move {
            let t = Instant::now();
            let late =
                with_deadline(t + Duration::from_millis(30), sleep(Duration::from_secs(5))).await;
            let fast = with_deadline(t + Duration::from_secs(5), async { 7 }).await;
            let waited = t.elapsed();
            let mut tick = Ticker::new(Duration::from_millis(10));
            let t = Instant::now();
            for _ in 0..5 {
                tick.tick().await;
            }
            Res::Ok((late, fast, waited, t.elapsed()))
        })
        .unwrap();
    let (late, fast, waited, ticks) = shards.join().unwrap().pop().unwrap();
    assert_eq!(late, Err(DeadlinePassed));
    assert_eq!(fast, Ok(7));
    assert!(
        waited >= Duration::from_millis(30) && waited < Duration::from_secs(1),
        "{waited:?}"
    );
    assert!(
        ticks >= Duration::from_millis(50) && ticks < Duration::from_secs(1),
        "{ticks:?}"
    );
}

/// Regression: with three or more shards, one busy peer and one quiet one,
/// glommio 0.9's shared channel keeps a waker clone per pending poll of the
/// quiet peer's channel; polled from one task, 2^15 of them overflowed the
/// task's reference count ("Waker invariant broken", seen at 4 shards under
/// a flood). The mesh now polls each peer from its own task.
#[test]
fn a_quiet_peer_does_not_exhaust_the_receivers_wakers() {
    const N: u64 = 100_000;
    let shards = ShardsBuilder::new()
        .shards(3)
        .pin(false)
        .oversubscribe(true)
        .spawn(|ctx: ShardContext<u64>| async move {
            let me = ctx.shard_id();
            let mesh = ctx.mesh().clone();
            let mut got = 0u64;
            match me {
                0 => {
                    // One message at a time, each received before the next
                    // arrives: the worst case for the quiet channel.
                    while got < N {
                        if mesh.recv().await.is_none() {
                            break;
                        }
                        got += 1;
                    }
                }
                1 => {
                    for i in 0..N {
                        mesh.send_to(0, i).await.unwrap();
                    }
                }
                _ => {
                    // Quiet, but open until shard 0 is done.
                    shards::timers::sleep(Duration::from_millis(50)).await;
                }
            }
            mesh.close();
            Res::Ok(got)
        })
        .unwrap();
    let out = shards.join().unwrap();
    assert_eq!(out[0], N);
}
