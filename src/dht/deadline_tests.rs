//! `Node::poll_timeout` gives the earliest real deadline: an idle node
//! sleeps, work wakes it within a tick.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;

const ME: Id = Id([0xaa; 20]);

fn cfg(crawl: bool) -> NodeConfig {
    let me = SocketAddr::from(([127, 0, 0, 1], 6881));
    let mut c = NodeConfig::new(0, 1, vec![Identity { addr: me, id: ME }], 1, [3; 32]);
    c.allow_private = true;
    c.crawl = crawl;
    c.limiter_slots = 1024;
    c
}

fn node_info(i: u16) -> NodeInfo {
    let mut id = [0u8; 20];
    id[..2].copy_from_slice(&i.to_be_bytes());
    id[19] = 1;
    NodeInfo {
        id: Id(id),
        addr: SocketAddr::from(([127, 1, (i >> 8) as u8, i as u8], 7000)),
    }
}

fn drain(n: &mut Node) -> usize {
    let sent = std::iter::from_fn(|| n.poll_transmit()).count();
    while n.poll_action().is_some() {}
    sent
}

#[test]
fn an_idle_node_sleeps_until_its_next_real_deadline() {
    let t0 = Instant::now();
    let c = cfg(false);
    let tick = c.tick;
    let mut n = Node::new(c, t0);
    n.handle_timeout(t0);
    assert_eq!(drain(&mut n), 0);
    let at = n.poll_timeout().expect("a node always has a deadline");
    // Nothing in flight, no table, no queue: the next deadline is the
    // stale-node refresh pass, not the next tick.
    assert!(
        at >= t0 + Duration::from_secs(5),
        "an idle node woke after {:?} (tick {tick:?})",
        at - t0
    );
}

#[test]
fn a_crawler_that_asked_every_node_waits_for_their_answers() {
    let t0 = Instant::now();
    let c = cfg(true);
    let (tick, timeout, walk) = (c.tick, c.query_timeout, c.walk_interval);
    let mut n = Node::new(c, t0);
    for i in 0..64 {
        assert!(n.add_known_node(node_info(i), t0));
    }
    n.handle_timeout(t0);
    let sent = drain(&mut n);
    assert!(sent >= 64, "the sweep asked {sent} of 64 nodes");
    let at = n.poll_timeout().expect("deadline");
    // Every node was asked: the sweep sleeps until one is due again, the
    // queries time out at t0 + timeout, the next walk starts at t0 + walk.
    let expect = t0 + timeout.min(walk);
    assert_eq!(at, expect.max(t0 + tick), "woke after {:?}", at - t0);
    // Called early, it does nothing and says the same.
    n.handle_timeout(t0 + tick);
    assert_eq!(drain(&mut n), 0);
    assert_eq!(n.poll_timeout(), Some(expect));
}

#[test]
fn a_new_node_wakes_an_asleep_sweep_within_a_tick() {
    let t0 = Instant::now();
    let mut c = cfg(true);
    c.walk_interval = Duration::from_secs(3600);
    c.query_timeout = Duration::from_secs(30);
    let tick = c.tick;
    let mut n = Node::new(c, t0);
    assert!(n.add_known_node(node_info(1), t0));
    n.handle_timeout(t0);
    assert_eq!(drain(&mut n), 1);
    let asleep = n.poll_timeout().expect("deadline");
    assert!(asleep >= t0 + Duration::from_secs(5), "{:?}", asleep - t0);
    // A node the sweep has not asked arrives: it is asked within a tick.
    let t1 = t0 + Duration::from_millis(30);
    assert!(n.add_known_node(node_info(2), t1));
    assert_eq!(n.poll_timeout(), Some(t0 + tick));
    n.handle_timeout(t0 + tick);
    assert_eq!(drain(&mut n), 1, "the new node is sampled");
}
