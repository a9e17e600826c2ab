//! Helpers for testing applications and stores (feature `test-util`): a clock that tests move
//! by hand.

use std::sync::Mutex;
use std::time::Duration;

use time::OffsetDateTime;

use crate::clock::Clock;

/// A clock that stands still until [`ManualClock::advance`] moves it: expiry edges in tests
/// without sleeping.
///
/// ```
/// use std::time::Duration;
/// use tower_session_auth::clock::Clock;
/// use tower_session_auth::test_util::ManualClock;
///
/// let clock = ManualClock::default();
/// let start = clock.now();
/// clock.advance(Duration::from_secs(90));
/// assert_eq!(clock.now() - start, time::Duration::seconds(90));
/// ```
#[derive(Debug)]
pub struct ManualClock(Mutex<OffsetDateTime>);

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: OffsetDateTime) -> Self {
        Self(Mutex::new(start))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }
}

impl Default for ManualClock {
    /// A clock showing the current system time.
    fn default() -> Self {
        Self::new(OffsetDateTime::now_utc())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
