//! Heap use of the decoders, measured with a counting global allocator
//! (this test binary only): allocations per decoded datagram, and the peak
//! bytes held while parsing hostile info dictionaries.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use dht_hunter::id::Id;
use dht_hunter::krpc::message::encode_query;
use dht_hunter::krpc::{decode, Body, Header, Method, Want};

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
    /// Bytes allocated and not yet freed by this thread (frees of memory
    /// another thread allocated can make it wrap; tests only look at
    /// differences over their own work).
    static LIVE: Cell<usize> = const { Cell::new(0) };
    /// Highest `LIVE` since the last [`reset_peak`].
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn grew(bytes: usize) {
    let _ = LIVE.try_with(|l| {
        let now = l.get().wrapping_add(bytes);
        l.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

fn shrank(bytes: usize) {
    let _ = LIVE.try_with(|l| l.set(l.get().wrapping_sub(bytes)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // try_with: the thread-local may be gone during thread teardown.
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        grew(layout.size());
        // SAFETY: forwarding the caller's layout to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrank(layout.size());
        // SAFETY: ptr was allocated by System with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // Counted as the worst case of a moving realloc: both blocks are
        // held for a moment.
        grew(new_size);
        shrank(layout.size());
        // SAFETY: forwarding the caller's pointer and layout to the system
        // allocator, which allocated it.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> usize {
    ALLOCS.with(Cell::get)
}

fn live() -> usize {
    LIVE.with(Cell::get)
}

/// Starts a new peak measurement; returns the bytes live now.
fn reset_peak() -> usize {
    let now = live();
    PEAK.with(|p| p.set(now));
    now
}

fn peak() -> usize {
    PEAK.with(Cell::get)
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
            infohash: Id([2; 20]),
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

#[path = "support/bombs.rs"]
mod bombs;

/// 10 MiB (the default `--max-metadata-size`) of hostile v2 file trees:
/// each parse ends quickly, with an error that names the bound or a file
/// list within it, and never holds more than `MEMORY_PER_INPUT_BYTE` bytes
/// per input byte. The dictionaries that are accepted for their worst ratio
/// (small files deep down, v1 paths) are 2 MiB, to keep the test short:
/// the ratio does not depend on the size.
#[test]
fn hostile_info_dictionaries_are_bounded() {
    use dht_hunter::metainfo::{parse_info, MetainfoError, MEMORY_PER_INPUT_BYTE};
    use std::time::{Duration, Instant};

    let target = 10 << 20;
    let small = 2 << 20;
    let (wide, wide_n) = bombs::wide_v2(target);
    let (deep8, deep8_n) = bombs::deep_v2(small, 8, 1);
    let (v1_flat, v1_flat_n) = bombs::v1(small, 1);
    let (v1_deep, v1_deep_n) = bombs::v1(small, 64);
    let too_large = |info: &[u8]| {
        Err::<usize, _>(MetainfoError::FileListTooLarge(
            info.len() * MEMORY_PER_INPUT_BYTE,
        ))
    };
    let deep60 = bombs::deep_v2(target, 60, 1).0;
    let long60 = bombs::deep_v2(target, 60, 4096).0;
    let empty = bombs::empty_dirs_v2(target);
    let cases: [(&str, &[u8], Result<usize, MetainfoError>); 7] = [
        ("one directory of small files", &wide, Ok(wide_n)),
        ("the same under 8 directories", &deep8, Ok(deep8_n)),
        ("the same under 60 directories", &deep60, too_large(&deep60)),
        (
            "under 60 directories of 4 KiB names",
            &long60,
            too_large(&long60),
        ),
        (
            "empty directories",
            &empty,
            Err(MetainfoError::EmptyFileList),
        ),
        ("v1, one component each", &v1_flat, Ok(v1_flat_n)),
        ("v1, 64 components each", &v1_deep, Ok(v1_deep_n)),
    ];
    for (what, info, want) in cases {
        assert!(info.len() >= small, "{what}");
        let before = reset_peak();
        let started = Instant::now();
        let got = parse_info(info);
        let took = started.elapsed();
        let held = peak() - before;
        eprintln!(
            "{what}: {} bytes in {took:?}, peak {} KiB ({:.2} per input byte)",
            info.len(),
            held >> 10,
            held as f64 / info.len() as f64
        );
        assert_eq!(got.map(|t| t.files.len()), want, "{what}");
        assert!(
            held <= info.len() * MEMORY_PER_INPUT_BYTE,
            "{what}: {held} bytes held"
        );
        // Debug build, shared machine: generous, but far below what a
        // tree decoder takes in a debug build.
        assert!(took < Duration::from_secs(20), "{what}: {took:?}");
    }
}
