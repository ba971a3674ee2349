//! The timer task of a shell around a sans-IO state machine (`crate::shell::calls` around the
//! trunking core, `crate::shell::messaging` around the messaging core): it sleeps until the
//! machine's next deadline and ticks it, and an input that sets an earlier deadline
//! wakes it at once.

use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{watch, Notify};

/// How long the timer task sleeps when the machine has no deadline at all.
const IDLE: Duration = Duration::from_secs(3600);

/// The deadline a timer task sleeps until, and the way to wake it early.
pub struct Alarm {
    wake: Notify,
    /// The deadline the task sleeps until (`i64::MAX`: none), on the machine's clock.
    armed: AtomicI64,
}

impl Default for Alarm {
    fn default() -> Self {
        Alarm {
            wake: Notify::new(),
            armed: AtomicI64::new(i64::MAX),
        }
    }
}

impl Alarm {
    /// After an input, with the machine still locked: wakes the timer task if the
    /// machine's `next` deadline is earlier than the one it sleeps until.
    pub fn rearm(&self, next: Option<i64>) {
        if next.is_some_and(|n| n < self.armed.load(Ordering::SeqCst)) {
            self.wake.notify_one();
        }
    }

    /// Runs the timers of `machine` until `stop` turns true: sleeps until `next` says
    /// the machine is due (on the clock `now` reads, ms), then calls `tick` with the
    /// time; woken early by [`Alarm::rearm`].
    pub async fn run<M, F: Future<Output = ()>>(
        &self,
        machine: &Mutex<M>,
        next: impl Fn(&M) -> Option<i64>,
        now: impl Fn() -> i64,
        mut tick: impl FnMut(i64) -> F,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let next = {
                // Stored under the lock, so that rearm() cannot miss an earlier deadline.
                let m = machine.lock().unwrap_or_else(|e| e.into_inner());
                let next = next(&m);
                self.armed.store(next.unwrap_or(i64::MAX), Ordering::SeqCst);
                next
            };
            let sleep = match next {
                Some(t) => Duration::from_millis((t - now()).max(0) as u64),
                None => IDLE,
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.wake.notified() => continue,
                _ = stop.wait_for(|s| *s) => return,
            }
            tick(now()).await;
        }
    }
}
