//! Remember-me refresh series, on `PgStore` (real PostgreSQL) and `MemoryStore`: rotation,
//! reuse detection revoking the family, the grace window, the series' own expiry, and logout /
//! revocation ending the series.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::app::{bearer, send};
use common::{Backend, Harness};
use tower_session_auth::{ClientInfo, Login, Refresh, RefreshConfig, RefreshToken, SessionConfig};

const SECOND: Duration = Duration::from_secs(1);

fn harness(backend: Backend, refresh: RefreshConfig) -> Harness {
    common::harness(backend, SessionConfig::default().refresh(refresh))
}

async fn remembered_login(h: &Harness, user_id: i64) -> Login {
    let login = h
        .manager
        .login_with(user_id, ClientInfo::default(), true)
        .await
        .unwrap();
    assert!(login.session.remembered);
    assert!(!login.session.refreshed);
    login
}

async fn refresh(h: &Harness, token: &RefreshToken) -> Refresh {
    h.manager
        .refresh(token, ClientInfo::default())
        .await
        .unwrap()
}

async fn refreshed(h: &Harness, token: &RefreshToken) -> Login {
    match refresh(h, token).await {
        Refresh::Refreshed(login) => *login,
        other => panic!("expected a refresh, got {other:?}"),
    }
}

async fn status(h: &Harness, login: &Login) -> StatusCode {
    send(&h.app, bearer("/me", login.token.expose()))
        .await
        .status
}

async fn refresh_rotates_and_keeps_the_login_time(backend: Backend) {
    let h = harness(backend, RefreshConfig::default());
    let first = remembered_login(&h, 1).await;
    let r0 = first.refresh.clone().unwrap();
    h.clock.advance(3600 * SECOND);
    let second = refreshed(&h, &r0).await;
    let r1 = second.refresh.clone().unwrap();
    assert_ne!(r1, r0);
    assert_eq!(r1.series(), r0.series());
    assert_ne!(second.token, first.token);
    assert_eq!(second.session.user_id, 1);
    assert!(second.session.refreshed);
    assert!(second.session.remembered);
    assert_eq!(second.session.authenticated_at, first.session.created_at);
    assert_eq!(second.session.created_at, h.manager.now());
    assert_eq!(status(&h, &second).await, StatusCode::OK);
    // The rotated token works in turn, beyond the grace window too.
    h.clock.advance(60 * SECOND);
    let third = refreshed(&h, &r1).await;
    assert_eq!(third.session.authenticated_at, first.session.created_at);
}

async fn reuse_after_the_grace_window_revokes_the_family(backend: Backend) {
    let h = harness(backend, RefreshConfig::default().grace(5 * SECOND));
    let first = remembered_login(&h, 1).await;
    let other_device = remembered_login(&h, 1).await;
    let r0 = first.refresh.clone().unwrap();
    let second = refreshed(&h, &r0).await;
    let r1 = second.refresh.clone().unwrap();
    h.clock.advance(6 * SECOND);
    assert!(matches!(refresh(&h, &r0).await, Refresh::ReuseDetected));
    // Every session of the series is gone, and so is the series.
    assert_eq!(status(&h, &first).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(&h, &second).await, StatusCode::UNAUTHORIZED);
    assert!(matches!(refresh(&h, &r1).await, Refresh::Invalid));
    // Another series of the same user is untouched.
    assert_eq!(status(&h, &other_device).await, StatusCode::OK);
    let other = other_device.refresh.unwrap();
    assert!(matches!(refresh(&h, &other).await, Refresh::Refreshed(_)));
}

async fn a_concurrent_duplicate_within_the_grace_window_is_accepted(backend: Backend) {
    let h = harness(backend, RefreshConfig::default().grace(5 * SECOND));
    let first = remembered_login(&h, 1).await;
    let r0 = first.refresh.unwrap();
    let tab_a = refreshed(&h, &r0).await;
    h.clock.advance(2 * SECOND);
    let tab_b = refreshed(&h, &r0).await;
    assert_eq!(status(&h, &tab_a).await, StatusCode::OK);
    assert_eq!(status(&h, &tab_b).await, StatusCode::OK);
    // The latest secret goes on working after the window.
    h.clock.advance(60 * SECOND);
    assert!(matches!(
        refresh(&h, tab_b.refresh.as_ref().unwrap()).await,
        Refresh::Refreshed(_)
    ));
}

async fn the_series_has_its_own_lifetimes(backend: Backend) {
    let config = RefreshConfig::default()
        .idle_timeout(Some(3600 * SECOND))
        .absolute_lifetime(Some(3 * 3600 * SECOND));
    let h = harness(backend, config);
    // Idle: unused for more than an hour.
    let idle = remembered_login(&h, 1).await.refresh.unwrap();
    h.clock.advance(3601 * SECOND);
    assert!(matches!(refresh(&h, &idle).await, Refresh::Invalid));
    // Absolute: used every 50 minutes, still ends 3 hours after the login.
    let mut token = remembered_login(&h, 2).await.refresh.unwrap();
    for _ in 0..3 {
        h.clock.advance(50 * 60 * SECOND);
        token = refreshed(&h, &token).await.refresh.unwrap();
    }
    h.clock.advance(31 * 60 * SECOND);
    assert!(matches!(refresh(&h, &token).await, Refresh::Invalid));
}

async fn logout_and_revocation_end_the_series(backend: Backend) {
    let h = harness(backend, RefreshConfig::default());
    // Logout (removing the session by its token) ends the series.
    let login = remembered_login(&h, 1).await;
    assert!(h.manager.remove_by_token(&login.token).await.unwrap());
    assert!(matches!(
        refresh(&h, login.refresh.as_ref().unwrap()).await,
        Refresh::Invalid
    ));

    // Revoking one session (e.g. from the device list) ends its series and its siblings.
    let login = remembered_login(&h, 1).await;
    let sibling = refreshed(&h, login.refresh.as_ref().unwrap()).await;
    assert!(h.manager.revoke(1, login.session.id).await.unwrap());
    assert_eq!(status(&h, &sibling).await, StatusCode::UNAUTHORIZED);
    assert!(matches!(
        refresh(&h, sibling.refresh.as_ref().unwrap()).await,
        Refresh::Invalid
    ));

    // Sign out everywhere else keeps only the current session's series.
    let here = remembered_login(&h, 1).await;
    let elsewhere = remembered_login(&h, 1).await;
    assert_eq!(
        h.manager.revoke_others(1, here.session.id).await.unwrap(),
        1
    );
    assert!(matches!(
        refresh(&h, elsewhere.refresh.as_ref().unwrap()).await,
        Refresh::Invalid
    ));
    let here_again = refreshed(&h, here.refresh.as_ref().unwrap()).await;

    // Revoke all ends every series.
    h.manager.revoke_all(1).await.unwrap();
    assert_eq!(status(&h, &here_again).await, StatusCode::UNAUTHORIZED);
    assert!(matches!(
        refresh(&h, here_again.refresh.as_ref().unwrap()).await,
        Refresh::Invalid
    ));
}

async fn inactive_users_and_unknown_series_cannot_refresh(backend: Backend) {
    let h = harness(backend, RefreshConfig::default());
    let login = remembered_login(&h, 1).await;
    h.backend.set_active(1, false).await;
    assert!(matches!(
        refresh(&h, login.refresh.as_ref().unwrap()).await,
        Refresh::Invalid
    ));
    h.backend.set_active(1, true).await;
    // The failed refresh ended the series for good.
    assert!(matches!(
        refresh(&h, login.refresh.as_ref().unwrap()).await,
        Refresh::Invalid
    ));
    assert!(matches!(
        refresh(&h, &RefreshToken::generate()).await,
        Refresh::Invalid
    ));
    // A plain login has no series.
    let plain = h.manager.login(2, ClientInfo::default()).await.unwrap();
    assert!(plain.refresh.is_none());
    assert!(!plain.session.remembered);
}

both_stores!(
    refresh_rotates_and_keeps_the_login_time,
    reuse_after_the_grace_window_revokes_the_family,
    a_concurrent_duplicate_within_the_grace_window_is_accepted,
    the_series_has_its_own_lifetimes,
    logout_and_revocation_end_the_series,
    inactive_users_and_unknown_series_cannot_refresh,
);
