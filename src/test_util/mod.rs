//! Helpers for testing applications and stores (feature `test-util`):
//!
//! - [`login`] and [`TestLogin`]: a logged-in request in one line, for an application's tests
//!   of its router;
//! - [`ManualClock`]: a clock that tests move by hand, for expiry edges without sleeping;
//! - [`conformance`]: the store conformance suite, which checks a custom
//!   [`SessionStore`](crate::store::SessionStore) against every guarantee the
//!   [`SessionManager`](crate::SessionManager) relies on.
//!
//! Enable the feature for tests only:
//!
//! ```toml
//! [dev-dependencies]
//! tower-session-auth = { version = "0.1", features = ["test-util"] }
//! ```
//!
//! # Running the conformance suite against a store
//!
//! Give [`conformance_tests!`](crate::conformance_tests) a function that makes a fresh store
//! holding the suite's [`USERS`](conformance::USERS) and
//! [`CHARACTERS`](conformance::CHARACTERS); it expands to one `#[test]` per check. Your store's
//! fixture implements [`Fixture`](conformance::Fixture) (as [`MemoryStore`](crate::MemoryStore)
//! does here):
//!
//! ```
//! // tests/conformance.rs
//! use tower_session_auth::MemoryStore;
//! use tower_session_auth::test_util::conformance::{CHARACTERS, USERS};
//!
//! async fn fresh_store() -> MemoryStore {
//!     let store = MemoryStore::new();
//!     for user in USERS {
//!         store.upsert_user(user.id, user.username, user.role, user.is_active);
//!     }
//!     for c in CHARACTERS {
//!         store.upsert_character(c.id, c.user_id, c.name, c.world_id);
//!     }
//!     store
//! }
//!
//! tower_session_auth::conformance_tests!(fresh_store);
//! ```

use std::sync::Mutex;
use std::time::Duration;

use time::OffsetDateTime;

use crate::clock::Clock;

pub mod conformance;
mod login;

pub use login::{TestLogin, login};

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
