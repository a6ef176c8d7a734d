//! Every timestamp in sealstore comes from a `Clock`, so scheduled transitions
//! (version destruction, rotation, import-job expiry) can be tested by moving time.

use chrono::{DateTime, TimeDelta, Utc};
use std::sync::Mutex;

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
    /// Moves the clock forward; `None` for clocks that cannot be moved.
    fn advance(&self, _by: TimeDelta) -> Option<DateTime<Utc>> {
        None
    }
}

#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Real time plus the sum of all advances: time keeps flowing between advances,
/// so timestamps stay ordered, and tests can jump days ahead.
#[derive(Debug, Default)]
pub struct ManualClock {
    offset: Mutex<TimeDelta>,
}

impl ManualClock {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + *self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn advance(&self, by: TimeDelta) -> Option<DateTime<Utc>> {
        let mut offset = self.offset.lock().unwrap_or_else(|e| e.into_inner());
        *offset += by;
        Some(Utc::now() + *offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_advances_and_keeps_running() {
        let clock = ManualClock::new();
        let before = clock.now();
        let after = clock.advance(TimeDelta::days(3)).unwrap();
        assert!(after - before >= TimeDelta::days(3));
        assert!(clock.now() >= after);
        assert!(SystemClock.advance(TimeDelta::days(1)).is_none());
    }
}
