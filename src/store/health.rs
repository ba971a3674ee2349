//! Whether the HLR database is answering, as the controller's background work finds it.
//!
//! While the database is down or restarting, every periodic task (following HLR
//! changes, writing last locations, expiring short data, writing audit entries) fails on
//! each tick. Each of them reports here instead of logging on its own, so the log says
//! once that the database is unavailable (with the first error) and once that it is back
//! (with how long it was out and how many operations failed meanwhile); the failures in
//! between are logged at debug level only.

use std::fmt::Display;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use tracing::{debug, info, warn};

/// What a report changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing: the database was already known to be in that state.
    None,
    /// The first failure after a success (or since start): logged as unavailable.
    Down,
    /// The first success after failures: logged as available again.
    Up,
}

/// The shared tracker; cheap to report to from any task.
#[derive(Debug, Default)]
pub struct DbHealth {
    outage: Mutex<Option<Outage>>,
}

#[derive(Debug)]
struct Outage {
    since: Instant,
    failures: u64,
}

impl DbHealth {
    /// A database operation of `task` failed with `error`.
    pub fn failed(&self, task: &str, error: &dyn Display) -> Change {
        let mut outage = self.outage.lock().unwrap_or_else(PoisonError::into_inner);
        match outage.as_mut() {
            Some(o) => {
                o.failures += 1;
                debug!(task, %error, failures = o.failures, "database still unavailable");
                Change::None
            }
            None => {
                *outage = Some(Outage {
                    since: Instant::now(),
                    failures: 1,
                });
                warn!(task, %error, "database unavailable; retrying until it is back");
                Change::Down
            }
        }
    }

    /// A database operation succeeded.
    pub fn succeeded(&self) -> Change {
        let mut outage = self.outage.lock().unwrap_or_else(PoisonError::into_inner);
        match outage.take() {
            Some(o) => {
                info!(
                    down_ms = o.since.elapsed().as_millis() as u64,
                    failed_operations = o.failures,
                    "database available again"
                );
                Change::Up
            }
            None => Change::None,
        }
    }

    /// Whether the database is unavailable now, and for how many failed operations.
    pub fn outage(&self) -> Option<u64> {
        let outage = self.outage.lock().unwrap_or_else(PoisonError::into_inner);
        outage.as_ref().map(|o| o.failures)
    }

    /// Reports `result` for `task` and passes its value on.
    pub fn report<T, E: Display>(&self, task: &str, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(v) => {
                self.succeeded();
                Some(v)
            }
            Err(e) => {
                self.failed(task, &e);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_reported_once_down_and_once_up() {
        let h = DbHealth::default();
        assert_eq!(h.succeeded(), Change::None);
        assert_eq!(h.failed("location flush", &"refused"), Change::Down);
        for task in ["call records", "hlr follow", "short data expiry", "audit"] {
            assert_eq!(h.failed(task, &"refused"), Change::None);
        }
        assert_eq!(h.succeeded(), Change::Up);
        assert_eq!(h.succeeded(), Change::None);
        assert_eq!(h.report("audit", Err::<(), _>("again")), None);
        assert_eq!(h.report("audit", Ok::<_, &str>(7)), Some(7));
    }
}
