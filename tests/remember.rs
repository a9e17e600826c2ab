//! Remember-me refresh series, on `PgStore` (real PostgreSQL) and `MemoryStore`: rotation,
//! reuse detection revoking the family, the grace window, the series' own expiry, and logout /
//! revocation ending the series.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::app::{bearer, send};
use common::{Backend, Harness};
use tower_session_auth::{
    ClientInfo, Login, LoginOptions, Refresh, RefreshConfig, SessionConfig, token::RefreshToken,
    token::SessionToken,
};

const SECOND: Duration = Duration::from_secs(1);

fn harness(backend: Backend, refresh: RefreshConfig) -> Harness {
    common::harness(backend, SessionConfig::default().refresh(refresh))
}

async fn remembered_login(h: &Harness, user_id: i64) -> Login {
    let login = h
        .manager
        .login(user_id, LoginOptions::new().remember(true))
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

    // Revoking one session (e.g. from the device list) ends its series and its siblings
    // (here the session a second use of the secret inside the grace window made).
    let login = remembered_login(&h, 1).await;
    let r0 = login.refresh.as_ref().unwrap();
    let first = refreshed(&h, r0).await;
    let sibling = refreshed(&h, r0).await;
    assert_eq!(status(&h, &sibling).await, StatusCode::OK);
    assert!(h.manager.revoke(1, first.session.id).await.unwrap());
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
    let plain = h.manager.login(2, LoginOptions::new()).await.unwrap();
    assert!(plain.refresh.is_none());
    assert!(!plain.session.remembered);
}

/// A made-up secret for a known (public) series id.
fn forged(token: &RefreshToken) -> RefreshToken {
    let text = format!(
        "{}.{}",
        token.series().simple(),
        SessionToken::generate().expose()
    );
    RefreshToken::parse(&text).unwrap()
}

/// Everything the store holds about sessions and series, to compare before and after.
async fn stored_state(h: &Harness) -> String {
    match &h.backend {
        Backend::Pg(db) => db
            .client()
            .await
            .query_one(
                "SELECT concat_ws(' | ', \
                    (SELECT string_agg(t::text, ';' ORDER BY t::text) FROM sessions t), \
                    (SELECT string_agg(t::text, ';' ORDER BY t::text) FROM refresh_series t), \
                    (SELECT string_agg(t::text, ';' ORDER BY t::text) FROM refresh_secrets t))",
                &[],
            )
            .await
            .unwrap()
            .get(0),
        Backend::Memory(_) => format!("{:?}", h.manager.list_for_user(1).await.unwrap()),
    }
}

async fn a_wrong_secret_for_a_known_series_is_invalid_and_changes_nothing(backend: Backend) {
    let h = harness(backend, RefreshConfig::default().grace(5 * SECOND));
    let login = remembered_login(&h, 1).await;
    let r0 = login.refresh.clone().unwrap();
    let before = stored_state(&h).await;
    assert!(matches!(refresh(&h, &forged(&r0)).await, Refresh::Invalid));
    assert_eq!(
        stored_state(&h).await,
        before,
        "a forged secret changed rows"
    );
    assert_eq!(status(&h, &login).await, StatusCode::OK);
    // Also once the series has used and superseded secrets, and after the grace window.
    let next = refreshed(&h, &r0).await;
    h.clock.advance(60 * SECOND);
    let before = stored_state(&h).await;
    assert!(matches!(refresh(&h, &forged(&r0)).await, Refresh::Invalid));
    assert_eq!(
        stored_state(&h).await,
        before,
        "a forged secret changed rows"
    );
    assert_eq!(status(&h, &next).await, StatusCode::OK);
    assert!(matches!(
        refresh(&h, next.refresh.as_ref().unwrap()).await,
        Refresh::Refreshed(_)
    ));
}

async fn a_superseded_secret_is_honoured_once_more_inside_the_window(backend: Backend) {
    let h = harness(backend, RefreshConfig::default().grace(5 * SECOND));
    let r0 = remembered_login(&h, 1).await.refresh.unwrap();
    let tab_a = refreshed(&h, &r0).await;
    h.clock.advance(SECOND);
    let tab_b = refreshed(&h, &r0).await;
    // A third use inside the window is refused and changes nothing.
    let before = stored_state(&h).await;
    h.clock.advance(SECOND);
    assert!(matches!(refresh(&h, &r0).await, Refresh::Invalid));
    assert_eq!(stored_state(&h).await, before);
    let live = h.manager.list_for_user(1).await.unwrap();
    assert_eq!(live.len(), 2, "{live:?}");
    assert_eq!(status(&h, &tab_a).await, StatusCode::OK);
    assert_eq!(status(&h, &tab_b).await, StatusCode::OK);
    // After the window, the used secret is reuse.
    h.clock.advance(5 * SECOND);
    assert!(matches!(refresh(&h, &r0).await, Refresh::ReuseDetected));
    assert!(h.manager.list_for_user(1).await.unwrap().is_empty());
}

async fn an_issued_secret_never_used_never_trips_reuse(backend: Backend) {
    let h = harness(backend, RefreshConfig::default().grace(5 * SECOND));
    // Two tabs refresh with the same secret at once; the browser keeps either response.
    for kept in [0, 1] {
        let r0 = remembered_login(&h, 1).await.refresh.unwrap();
        let (a, b) = tokio::join!(refresh(&h, &r0), refresh(&h, &r0));
        let tabs = [a, b].map(|outcome| match outcome {
            Refresh::Refreshed(login) => login.refresh.unwrap(),
            other => panic!("two tabs at once: {other:?}"),
        });
        h.clock.advance(60 * SECOND);
        let next = refreshed(&h, &tabs[kept]).await;
        assert_eq!(status(&h, &next).await, StatusCode::OK);
        // The response the browser dropped carried a secret nobody used: never reuse.
        assert!(matches!(
            refresh(&h, &tabs[1 - kept]).await,
            Refresh::Refreshed(_)
        ));
        // The same holds for a secret issued by a second use inside the grace window.
        let r = next.refresh.unwrap();
        let first = refreshed(&h, &r).await.refresh.unwrap();
        let grace = refreshed(&h, &r).await.refresh.unwrap();
        h.clock.advance(60 * SECOND);
        let (later, dropped) = if kept == 0 {
            (first, grace)
        } else {
            (grace, first)
        };
        assert!(matches!(refresh(&h, &later).await, Refresh::Refreshed(_)));
        assert!(matches!(refresh(&h, &dropped).await, Refresh::Refreshed(_)));
    }
}

async fn a_remembered_device_holds_one_session(backend: Backend) {
    let h = harness(backend, RefreshConfig::default().grace(5 * SECOND));
    let login = remembered_login(&h, 1).await;
    let mut last = login;
    for _ in 0..30 {
        h.clock.advance(60 * SECOND);
        last = refreshed(&h, last.refresh.as_ref().unwrap()).await;
    }
    let live = h.manager.list_for_user(1).await.unwrap();
    assert_eq!(
        live.iter().map(|s| s.id).collect::<Vec<_>>(),
        [last.session.id]
    );
    assert_eq!(h.backend.stored_sessions().await, 1);
    // Inside the grace window the two tabs' sessions overlap, and no more.
    let r = last.refresh.unwrap();
    let a = refreshed(&h, &r).await;
    let b = refreshed(&h, &r).await;
    let mut live: Vec<_> = h.manager.list_for_user(1).await.unwrap();
    live.sort_by_key(|s| s.id);
    let mut expected = vec![a.session.id, b.session.id];
    expected.sort();
    assert_eq!(live.iter().map(|s| s.id).collect::<Vec<_>>(), expected);
    // The next refresh leaves one again.
    h.clock.advance(60 * SECOND);
    let c = refreshed(&h, b.refresh.as_ref().unwrap()).await;
    let live = h.manager.list_for_user(1).await.unwrap();
    assert_eq!(
        live.iter().map(|s| s.id).collect::<Vec<_>>(),
        [c.session.id]
    );
}

async fn a_session_never_outlives_its_series(backend: Backend) {
    let config = RefreshConfig::default().absolute_lifetime(Some(3 * 3600 * SECOND));
    let h = harness(backend, config);
    let login = remembered_login(&h, 1).await;
    let series_end = login.session.created_at + time::Duration::hours(3);
    assert_eq!(login.session.absolute_expires_at, Some(series_end));
    h.clock.advance(3600 * SECOND);
    let next = refreshed(&h, login.refresh.as_ref().unwrap()).await;
    assert_eq!(next.session.absolute_expires_at, Some(series_end));
    h.clock.advance(2 * 3600 * SECOND);
    assert_eq!(status(&h, &next).await, StatusCode::UNAUTHORIZED);
    // A plain login keeps its own lifetime.
    let plain = h.manager.login(1, LoginOptions::new()).await.unwrap();
    assert_eq!(
        plain.session.absolute_expires_at,
        Some(plain.session.created_at + time::Duration::days(7))
    );
}

async fn single_session_mode_ends_the_pruned_series(backend: Backend) {
    let config = SessionConfig::default().max_sessions_per_user(Some(1));
    let h = common::harness(backend, config);
    let device_a = remembered_login(&h, 1).await;
    let device_b = h.manager.login(1, LoginOptions::new()).await.unwrap();
    // Device A was evicted, and its series with it: it cannot refresh back in.
    assert_eq!(status(&h, &device_a).await, StatusCode::UNAUTHORIZED);
    assert!(matches!(
        refresh(&h, device_a.refresh.as_ref().unwrap()).await,
        Refresh::Invalid
    ));
    assert_eq!(status(&h, &device_b).await, StatusCode::OK);
    // A remembered device's refresh keeps its own series while it prunes.
    let device_c = remembered_login(&h, 1).await;
    let next = refreshed(&h, device_c.refresh.as_ref().unwrap()).await;
    assert_eq!(status(&h, &next).await, StatusCode::OK);
    assert_eq!(status(&h, &device_b).await, StatusCode::UNAUTHORIZED);
    assert!(matches!(
        refresh(&h, next.refresh.as_ref().unwrap()).await,
        Refresh::Refreshed(_)
    ));
}

async fn a_series_remembers_a_bounded_number_of_secrets(backend: Backend) {
    let h = harness(backend, RefreshConfig::default().grace(5 * SECOND));
    let login = remembered_login(&h, 1).await;
    let mut tokens = vec![login.refresh.unwrap()];
    for _ in 0..12 {
        h.clock.advance(60 * SECOND);
        let next = refreshed(&h, tokens.last().unwrap()).await;
        tokens.push(next.refresh.unwrap());
    }
    if let Backend::Pg(db) = &h.backend {
        let stored: i64 = db
            .client()
            .await
            .query_one("SELECT count(*) FROM refresh_secrets", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(stored, 8);
    }
    // A used secret the series still remembers is reuse; one it forgot is merely invalid.
    let before = stored_state(&h).await;
    assert!(matches!(refresh(&h, &tokens[0]).await, Refresh::Invalid));
    assert_eq!(stored_state(&h).await, before);
    assert!(matches!(
        refresh(&h, &tokens[10]).await,
        Refresh::ReuseDetected
    ));
}

both_stores!(
    a_series_remembers_a_bounded_number_of_secrets,
    a_wrong_secret_for_a_known_series_is_invalid_and_changes_nothing,
    a_superseded_secret_is_honoured_once_more_inside_the_window,
    an_issued_secret_never_used_never_trips_reuse,
    a_remembered_device_holds_one_session,
    a_session_never_outlives_its_series,
    single_session_mode_ends_the_pruned_series,
    refresh_rotates_and_keeps_the_login_time,
    reuse_after_the_grace_window_revokes_the_family,
    a_concurrent_duplicate_within_the_grace_window_is_accepted,
    the_series_has_its_own_lifetimes,
    logout_and_revocation_end_the_series,
    inactive_users_and_unknown_series_cannot_refresh,
);
