//! Every timestamp in sealstore comes from a `Clock`, so scheduled transitions
//! (version destruction, rotation, import-job expiry) can be tested by moving time.

use chrono::{DateTime, TimeDelta, Utc};
use std::sync::Mutex;

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
    /// Moves the clock forward, returning the new time, or why it cannot move.
    fn advance(&self, _by: TimeDelta) -> Result<DateTime<Utc>, String> {
        Err("the clock can only be advanced with --fake-clock".into())
    }
    /// How far the clock is ahead of real time (zero for the system clock).
    fn offset(&self) -> TimeDelta {
        TimeDelta::zero()
    }
}

/// The fake clock never runs more than this far ahead, so time arithmetic cannot overflow.
const MAX_OFFSET: TimeDelta = TimeDelta::days(1000 * 366);

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

    /// Resumes a clock that was already advanced (the offset persists across restarts).
    pub fn with_offset(offset: TimeDelta) -> Self {
        Self {
            offset: Mutex::new(offset.clamp(TimeDelta::zero(), MAX_OFFSET)),
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + *self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn advance(&self, by: TimeDelta) -> Result<DateTime<Utc>, String> {
        let mut offset = self.offset.lock().unwrap_or_else(|e| e.into_inner());
        match offset.checked_add(&by) {
            Some(next) if next >= TimeDelta::zero() && next <= MAX_OFFSET => {
                *offset = next;
                Ok(Utc::now() + next)
            }
            _ => Err("the fake clock cannot move backwards or more than 1000 years ahead".into()),
        }
    }

    fn offset(&self) -> TimeDelta {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Settings key of the fake clock's offset, in milliseconds.
pub const FAKE_CLOCK_OFFSET: &str = "fake_clock_offset_ms";

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
        assert_eq!(clock.offset(), TimeDelta::days(3));
        assert!(SystemClock.advance(TimeDelta::days(1)).is_err());
        assert!(clock.advance(TimeDelta::days(400_000)).is_err());
        assert_eq!(
            ManualClock::with_offset(TimeDelta::days(2)).offset(),
            TimeDelta::days(2)
        );
    }
}
