//! Checks of [`AdminStore`](crate::store::AdminStore): counting live sessions and clearing
//! them all. They run when [`SessionStore::admin`](crate::store::SessionStore::admin) is
//! `Some`.

use std::time::Duration;

use super::{Fixture, MINUTE, harness};
use crate::SessionConfig;
use crate::store::{Scope, Validation};

/// Clearing deletes every session, of every user, and returns how many.
pub async fn clear_all_returns_the_count_removed<F: Fixture>(fixture: F) {
    let h = harness(fixture, SessionConfig::default());
    let mut tokens = Vec::new();
    for user in [1, 1, 2, 3] {
        tokens.push(h.login(user).await.0);
    }
    assert_eq!(h.manager.clear_all().await.unwrap(), 4);
    assert_eq!(h.stored_sessions().await, 0);
    for token in &tokens {
        assert_eq!(h.validate(token, Scope::User).await, Validation::Unknown);
    }
    assert_eq!(h.manager.clear_all().await.unwrap(), 0);
}

/// The count of live sessions leaves out expired ones (before any purge), and with a window
/// only counts the sessions active within it.
pub async fn active_count_excludes_expired_and_respects_the_window<F: Fixture>(fixture: F) {
    let config = SessionConfig::default()
        .idle_timeout(Some(60 * MINUTE))
        .touch_interval(Duration::ZERO);
    let h = harness(fixture, config);
    let (old, _) = h.login(1).await;
    h.clock.advance(40 * MINUTE);
    let (recent, _) = h.login(2).await;
    assert_eq!(h.manager.count_active(None).await.unwrap(), 2);
    assert_eq!(h.manager.count_active(Some(30 * MINUTE)).await.unwrap(), 1);
    h.clock.advance(25 * MINUTE); // the first is now expired (65 min idle)
    assert_eq!(h.manager.count_active(None).await.unwrap(), 1);
    assert_eq!(h.manager.count_active(Some(30 * MINUTE)).await.unwrap(), 1);
    assert!(h.signed_in(&recent).await);
    assert_eq!(h.manager.count_active(Some(MINUTE)).await.unwrap(), 1);
    assert_eq!(h.manager.purge_expired().await.unwrap(), 1);
    assert_eq!(h.validate(&old, Scope::Game).await, Validation::Unknown);
}
