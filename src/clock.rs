//! The controller's one clock. The deadlines of the sans-IO machines (challenges, clone
//! window, hang times, queue timeouts, deliveries, radio command retries), the times of
//! events, audit entries and call records, and the expiry of stored short data all come
//! from the [`Clock`] its parts were given at start. (The link layer's keepalive timers
//! run on tokio's time directly, as does everything else that only sleeps.)
//!
//! The clock runs on tokio's time, so a test can pause it and move it on
//! (`tokio::time::pause`, `advance`) instead of sleeping. The wall clock is read once,
//! when the clock starts: Unix times are that reading plus the monotonic time elapsed
//! since, so a step of the system clock (NTP, an operator) can neither expire the VLR
//! nor make two records of one call run backwards. Linux slews the monotonic clock with
//! NTP's frequency corrections, so the two stay close on a controller that runs for
//! months; a step is picked up at the next start.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Monotonic and Unix milliseconds from one origin. Cheap to copy.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: Instant,
    /// The Unix time (ms) at `origin`.
    unix_at_origin: i64,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::start()
    }
}

impl Clock {
    /// A clock starting now, with the wall clock's reading as its Unix time.
    pub fn start() -> Clock {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Clock::starting_at(unix)
    }

    /// A clock starting now, whose Unix time now is `unix_ms`.
    pub fn starting_at(unix_ms: i64) -> Clock {
        Clock {
            origin: Instant::now(),
            unix_at_origin: unix_ms,
        }
    }

    /// Milliseconds since the clock started: what in-memory deadlines run on.
    pub fn mono_ms(&self) -> i64 {
        self.origin.elapsed().as_millis() as i64
    }

    /// The Unix time now, in milliseconds: what is stored and shown.
    pub fn unix_ms(&self) -> i64 {
        self.unix_of(self.mono_ms())
    }

    /// The Unix time (ms) of a time on this clock's monotonic scale.
    pub fn unix_of(&self, mono_ms: i64) -> i64 {
        self.unix_at_origin + mono_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn both_scales_move_with_tokio_time_and_only_with_it() {
        let c = Clock::starting_at(1_700_000_000_000);
        assert_eq!((c.mono_ms(), c.unix_ms()), (0, 1_700_000_000_000));
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(c.mono_ms(), 1500);
        assert_eq!(c.unix_ms(), 1_700_000_001_500);
        assert_eq!(c.unix_of(250), 1_700_000_000_250);
    }

    #[test]
    fn a_clock_started_now_reads_the_wall_clock_once() {
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
        let c = Clock::start();
        let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
        assert!((before..=after).contains(&c.unix_of(0)));
    }
}
