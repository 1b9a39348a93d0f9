//! `--identity spread` through the real binary, on loopback: one port and
//! one id per shard, each id inside its shard's slice, both ports answering
//! pings with their own id, ids kept across restarts, and a held port
//! refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use dht_hunter::id::Id;
use dht_hunter::keyspace::Slice;
use dht_hunter::krpc::message::{decode, Body};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dht-hunter"))
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dh-spread-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// A port `p` such that `p` and `p + 1` were both free a moment ago.
fn free_pair() -> u16 {
    for _ in 0..200 {
        let p = UdpSocket::bind(loopback(0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if p == u16::MAX {
            continue;
        }
        if let (Ok(_a), Ok(_b)) = (
            UdpSocket::bind(loopback(p)),
            UdpSocket::bind(loopback(p + 1)),
        ) {
            return p;
        }
    }
    panic!("no two adjacent free ports");
}

fn crawl(port: u16, state: &Path, duration: &str) -> Command {
    let mut c = Command::new(bin());
    c.args([
        "crawl",
        "--identity",
        "spread",
        "--bind",
        &loopback(port).to_string(),
        "--shards",
        "2",
        "--no-pin",
        "--allow-private",
        "--bootstrap",
        "127.0.0.1:9",
        "--state-dir",
        state.to_str().unwrap(),
        "--duration",
        duration,
        "--status",
        "never",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    c
}

fn ids(state: &Path) -> HashMap<SocketAddr, Id> {
    std::fs::read_to_string(state.join("identities"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (a, h) = l.split_once(' ').unwrap();
            (a.parse().unwrap(), h.trim().parse().unwrap())
        })
        .collect()
}

/// Sends a KRPC ping to `to` and returns the responder's id.
fn ping(to: SocketAddr) -> Id {
    let sock = UdpSocket::bind(loopback(0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut q = b"d1:ad2:id20:".to_vec();
    q.extend_from_slice(&[0x5a; 20]);
    q.extend_from_slice(b"e1:q4:ping1:t2:pp1:y1:qe");
    let mut buf = [0u8; 2048];
    // The crawler may still be starting, and a query can be rate limited:
    // try a few times.
    for _ in 0..20 {
        sock.send_to(&q, to).unwrap();
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            assert_eq!(from, to, "the reply comes from the port pinged");
            let m = decode(&buf[..n]).unwrap();
            assert_eq!(m.tid, b"pp");
            match m.body {
                Body::Response(r) => return r.id,
                other => panic!("not a response: {other:?}"),
            }
        }
    }
    panic!("{to} never answered a ping");
}

fn finish(child: std::process::Child) -> Output {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn spread_gives_each_shard_a_port_and_a_stable_id_in_its_slice() {
    let state = tmp("ids");
    let port = free_pair();
    let (a0, a1) = (loopback(port), loopback(port + 1));

    let child = crawl(port, &state, "4").spawn().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let pinged = [ping(a0), ping(a1)];
    finish(child);

    let first = ids(&state);
    assert_eq!(first.len(), 2, "{first:?}");
    for (shard, addr) in [a0, a1].into_iter().enumerate() {
        let id = first[&addr];
        assert!(
            Slice::full().part(shard, 2).contains(&id),
            "shard {shard}'s id {id} is outside slice {shard}/2"
        );
        assert_eq!(pinged[shard], id, "{addr} answers with its own id");
    }

    // A second run keeps them.
    finish(crawl(port, &state, "1").spawn().unwrap());
    assert_eq!(ids(&state), first);
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn spread_refuses_a_held_port() {
    let state = tmp("held");
    let port = free_pair();
    let holder = UdpSocket::bind(loopback(port + 1)).unwrap();
    let out = crawl(port, &state, "2").output().unwrap();
    drop(holder);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("{} is already in use", loopback(port + 1))),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&state);
}
