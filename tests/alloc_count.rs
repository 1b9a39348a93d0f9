//! Heap allocations per decoded datagram, counted with a counting global
//! allocator (this test binary only).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use dht_hunter::id::Id;
use dht_hunter::krpc::message::encode_query;
use dht_hunter::krpc::{decode, Body, Header, Method, Want};

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // try_with: the thread-local may be gone during thread teardown.
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: forwarding the caller's layout to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr was allocated by System with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> usize {
    ALLOCS.with(Cell::get)
}

#[test]
fn decoding_a_query_allocates_at_most_once() {
    let mut pkt = Vec::new();
    encode_query(
        &mut pkt,
        &Header {
            tid: b"ab",
            version: Some(b"LT\x02\x00"),
        },
        &Id([1; 20]),
        &Method::GetPeers {
            info_hash: Id([2; 20]),
            noseed: false,
            scrape: false,
        },
        Want {
            n4: true,
            n6: false,
        },
        false,
    );
    let before = allocs();
    let mut seen = 0;
    for _ in 0..1000 {
        if let Ok(m) = decode(std::hint::black_box(&pkt)) {
            if let Body::Query(q) = m.body {
                seen += usize::from(q.id.0[0]);
            }
        }
    }
    let per_decode = (allocs() - before) as f64 / 1000.0;
    assert_eq!(seen, 1000);
    assert!(per_decode <= 1.0, "{per_decode} allocations per decode");
    // In fact the decoder allocates nothing at all.
    assert_eq!(allocs() - before, 0);
}

#[test]
fn counter_sees_allocations() {
    // The check above cannot pass vacuously: the allocator does count.
    let before = allocs();
    let v: Vec<u8> = std::hint::black_box(Vec::with_capacity(64));
    drop(v);
    assert!(allocs() > before);
}
