//! Shutdown: one flag for the process, one wake-up per shard.
//!
//! A glommio executor sleeps in `io_uring_enter` and only wakes for its own
//! IO or timers, so setting an `AtomicBool` from another thread is not
//! enough to stop a parked shard. Each shard therefore owns the read end of
//! a `socketpair`, watched by a small runtime task; [`ShutdownHandle::trigger`]
//! sets the flag and writes one byte to every write end.
//!
//! `trigger` performs only an atomic store and `write(2)` calls on file
//! descriptors opened at start-up: no allocation, no lock. That makes it
//! async-signal-safe, so it may be called from a signal handler (or, more
//! comfortably, from a `signal-hook` thread).

use std::{
    cell::{Cell, RefCell},
    future::Future,
    os::{fd::AsRawFd, unix::net::UnixStream},
    pin::Pin,
    rc::Rc,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll, Waker},
};

#[derive(Debug)]
struct Shared {
    flag: AtomicBool,
    /// Write ends, one per shard; kept open for the handle's lifetime.
    wakers: Vec<UnixStream>,
}

/// Cloneable, `Send + Sync` handle that stops every shard.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
}

impl ShutdownHandle {
    /// Creates the handle and one read end per shard.
    pub(crate) fn new(nr_shards: usize) -> std::io::Result<(Self, Vec<UnixStream>)> {
        let mut wakers = Vec::with_capacity(nr_shards);
        let mut readers = Vec::with_capacity(nr_shards);
        for _ in 0..nr_shards {
            let (w, r) = UnixStream::pair()?;
            w.set_nonblocking(true)?;
            r.set_nonblocking(true)?;
            wakers.push(w);
            readers.push(r);
        }
        let shared = Arc::new(Shared {
            flag: AtomicBool::new(false),
            wakers,
        });
        Ok((Self { shared }, readers))
    }

    /// Asks every shard to stop. Idempotent; async-signal-safe.
    pub fn trigger(&self) {
        if self.shared.flag.swap(true, Ordering::SeqCst) {
            return;
        }
        for w in &self.shared.wakers {
            let byte = 1u8;
            // SAFETY: `w` is an open socket owned by `self.shared` for as
            // long as this call runs; the buffer is one valid byte. A full
            // or closed socket only means the shard is already awake or
            // gone, so the result is deliberately ignored.
            unsafe {
                libc::write(w.as_raw_fd(), (&byte as *const u8).cast(), 1);
            }
        }
    }

    /// Whether `trigger` has been called.
    pub fn is_triggered(&self) -> bool {
        self.shared.flag.load(Ordering::SeqCst)
    }
}

/// Per-shard view of shutdown: a flag plus wakers for local tasks.
#[derive(Debug, Default)]
pub(crate) struct LocalShutdown {
    fired: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl LocalShutdown {
    pub(crate) fn fire(&self) {
        self.fired.set(true);
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    pub(crate) fn is_fired(&self) -> bool {
        self.fired.get()
    }
}

/// Future that resolves once shutdown has been triggered.
#[derive(Debug)]
pub struct ShutdownSignal {
    local: Rc<LocalShutdown>,
}

impl ShutdownSignal {
    pub(crate) fn new(local: Rc<LocalShutdown>) -> Self {
        Self { local }
    }
}

impl Future for ShutdownSignal {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.local.fired.get() {
            return Poll::Ready(());
        }
        let mut waiters = self.local.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Runtime task: waits on the shard's read end, then fires the local latch.
pub(crate) async fn watch(reader: UnixStream, handle: ShutdownHandle, local: Rc<LocalShutdown>) {
    use futures_lite::AsyncReadExt;
    use std::os::fd::{FromRawFd, IntoRawFd};
    if handle.is_triggered() {
        local.fire();
        return;
    }
    // SAFETY: the fd comes from `into_raw_fd`, so ownership moves to the
    // glommio stream, which closes it on drop.
    let mut stream = unsafe { glommio::net::UnixStream::from_raw_fd(reader.into_raw_fd()) };
    let mut buf = [0u8; 16];
    loop {
        match stream.read(&mut buf).await {
            // EOF: every handle is gone, no trigger can come any more.
            Ok(0) => return,
            Ok(_) if handle.is_triggered() => {
                local.fire();
                return;
            }
            Ok(_) => continue,
            Err(_) => {
                // Cannot watch the socket: fall back to the flag only.
                if handle.is_triggered() {
                    local.fire();
                }
                return;
            }
        }
    }
}
