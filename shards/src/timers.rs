//! Per-shard timers: thin wrappers over glommio's timer wheel, which lives
//! in the shard's own reactor (no cross-thread timer service, no locks).

use std::{
    future::Future,
    time::{Duration, Instant},
};

use futures_lite::future;

/// Sleeps for `d` on the current shard.
pub async fn sleep(d: Duration) {
    glommio::timer::sleep(d).await;
}

/// Lets the shard's reactor run (poll its sockets, fire its timers, and so
/// wake the tasks waiting on them) before the calling task goes on. For
/// long computations on a shard: glommio's `yield_if_needed` yields only
/// when its preempt timer fires (100 ms by default; a 10 MiB metadata parse
/// that called it still stalled a 1 ms timer by 200 ms), and `yield_now`
/// requeues the task without polling IO. A 1 µs timer is the cheapest wait
/// that goes through the reactor.
pub async fn reactor_turn() {
    glommio::timer::sleep(Duration::from_micros(1)).await;
}

/// Sleeps until `at` (returns at once if `at` has passed).
pub async fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        glommio::timer::sleep(at - now).await;
    }
}

/// A future did not finish before its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline passed")]
pub struct DeadlinePassed;

/// Runs `fut` until it finishes or `deadline` passes, whichever comes
/// first; on expiry `fut` is dropped (cancelling its IO).
pub async fn with_deadline<F: Future>(
    deadline: Instant,
    fut: F,
) -> Result<F::Output, DeadlinePassed> {
    future::or(async { Ok(fut.await) }, async {
        sleep_until(deadline).await;
        Err(DeadlinePassed)
    })
    .await
}

/// What a [`Ticker`] does when ticks were missed (the shard was busy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissedTicks {
    /// Skip them: the next tick is the next multiple of the period after
    /// now. Right for periodic maintenance (metrics, budget epochs).
    #[default]
    Skip,
    /// Fire them back to back until caught up. Right when every tick
    /// carries a quantum of work that must not be lost.
    Burst,
}

/// Fires every `period`, aligned to its start instant.
#[derive(Debug, Clone)]
pub struct Ticker {
    period: Duration,
    next: Instant,
    missed: MissedTicks,
}

impl Ticker {
    /// First tick one `period` from now. A zero period is raised to 1 ms
    /// so a ticker can never spin.
    pub fn new(period: Duration) -> Self {
        let period = period.max(Duration::from_millis(1));
        Self {
            period,
            next: Instant::now() + period,
            missed: MissedTicks::Skip,
        }
    }

    /// Sets the policy for missed ticks.
    pub fn missed_ticks(mut self, policy: MissedTicks) -> Self {
        self.missed = policy;
        self
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Waits for the next tick; returns its scheduled instant.
    pub async fn tick(&mut self) -> Instant {
        sleep_until(self.next).await;
        let fired = self.next;
        self.next = fired + self.period;
        if self.missed == MissedTicks::Skip {
            let now = Instant::now();
            if self.next <= now {
                let behind = now.duration_since(self.next).as_nanos();
                let periods = behind / self.period.as_nanos() + 1;
                let skip = u32::try_from(periods).unwrap_or(u32::MAX);
                self.next += self.period.saturating_mul(skip);
            }
        }
        fired
    }
}
