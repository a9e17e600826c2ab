//! Checks of [`RememberStore`](crate::store::RememberStore): remember-me series by the family
//! rules of [`RefreshConfig`]: rotation, reuse detection revoking the family, the grace
//! window, the series' own lifetimes, and every revocation ending the series. They run when
//! [`SessionStore::remember`](crate::store::SessionStore::remember) is `Some`.

use std::num::NonZeroU32;

use super::{Fixture, MINUTE, SECOND, harness, remember_harness};
use crate::manager::{LoginOptions, Refresh};
use crate::store::{Purged, Scope};
use crate::token::{RefreshToken, SessionToken};
use crate::{RefreshConfig, SessionConfig};

/// A refresh issues a new session and a new secret of the same series; the new session keeps
/// the login time as `authenticated_at` and is marked refreshed; the new secret works in turn,
/// after the grace window too.
pub async fn refresh_rotates_and_keeps_the_login_time<F: Fixture>(fixture: F) {
    let h = remember_harness(fixture, RefreshConfig::default());
    let first = h.remembered(1).await;
    let r0 = first.refresh.clone().unwrap();
    h.clock.advance(3600 * SECOND);
    let second = h.refreshed(&r0).await;
    let r1 = second.refresh.clone().unwrap();
    assert_ne!(r1, r0);
    assert_eq!(r1.series(), r0.series());
    assert_ne!(second.token, first.token);
    assert_eq!(second.session.user_id, h.id(1));
    assert!(second.session.refreshed);
    assert!(second.session.remembered);
    assert_eq!(second.session.authenticated_at, first.session.created_at);
    assert_eq!(second.session.created_at, h.manager.now());
    assert!(h.signed_in(&second.token).await);
    h.clock.advance(60 * SECOND);
    let third = h.refreshed(&r1).await;
    assert_eq!(third.session.authenticated_at, first.session.created_at);
}

/// A used secret presented after the grace window is reuse: the series and every session it
/// made end, and the series' latest secret no longer works; another series of the same user
/// is untouched.
pub async fn reuse_after_the_grace_window_revokes_the_family<F: Fixture>(fixture: F) {
    let h = remember_harness(fixture, RefreshConfig::default().grace(5 * SECOND));
    let first = h.remembered(1).await;
    let other_device = h.remembered(1).await;
    let r0 = first.refresh.clone().unwrap();
    let second = h.refreshed(&r0).await;
    let r1 = second.refresh.clone().unwrap();
    h.clock.advance(6 * SECOND);
    assert!(matches!(h.refresh(&r0).await, Refresh::ReuseDetected));
    assert!(!h.signed_in(&first.token).await);
    assert!(!h.signed_in(&second.token).await);
    assert!(matches!(h.refresh(&r1).await, Refresh::Invalid));
    assert!(h.signed_in(&other_device.token).await);
    let other = other_device.refresh.unwrap();
    assert!(matches!(h.refresh(&other).await, Refresh::Refreshed(_)));
}

/// The same secret presented twice inside the grace window (two tabs) makes two live
/// sessions, and the latest secret goes on working after the window.
pub async fn a_concurrent_duplicate_within_the_grace_window_is_accepted<F: Fixture>(fixture: F) {
    let h = remember_harness(fixture, RefreshConfig::default().grace(5 * SECOND));
    let r0 = h.remembered(1).await.refresh.unwrap();
    let tab_a = h.refreshed(&r0).await;
    h.clock.advance(2 * SECOND);
    let tab_b = h.refreshed(&r0).await;
    assert!(h.signed_in(&tab_a.token).await);
    assert!(h.signed_in(&tab_b.token).await);
    h.clock.advance(60 * SECOND);
    let latest = tab_b.refresh.as_ref().unwrap();
    assert!(matches!(h.refresh(latest).await, Refresh::Refreshed(_)));
}

/// A series ends after its own idle timeout, and at its absolute lifetime however often it
/// is used.
pub async fn the_series_has_its_own_lifetimes<F: Fixture>(fixture: F) {
    let config = RefreshConfig::default()
        .idle_timeout(Some(3600 * SECOND))
        .absolute_lifetime(Some(3 * 3600 * SECOND));
    let h = remember_harness(fixture, config);
    let idle = h.remembered(1).await.refresh.unwrap();
    h.clock.advance(3601 * SECOND);
    assert!(matches!(h.refresh(&idle).await, Refresh::Invalid));
    // Used every 50 minutes, it still ends 3 hours after the login.
    let mut token = h.remembered(2).await.refresh.unwrap();
    for _ in 0..3 {
        h.clock.advance(50 * MINUTE);
        token = h.refreshed(&token).await.refresh.unwrap();
    }
    h.clock.advance(31 * MINUTE);
    assert!(matches!(h.refresh(&token).await, Refresh::Invalid));
}

/// Logout, revoking one session, revoking the others and revoking all end the series of the
/// sessions they remove (and those series' other sessions), and keep the current one's.
pub async fn logout_and_revocation_end_the_series<F: Fixture>(fixture: F) {
    let h = remember_harness(fixture, RefreshConfig::default());
    // Logout (removing the session by its token) ends the series.
    let login = h.remembered(1).await;
    assert!(h.manager.remove_by_token(&login.token).await.unwrap());
    let refresh = login.refresh.as_ref().unwrap();
    assert!(matches!(h.refresh(refresh).await, Refresh::Invalid));

    // Revoking one session ends its series and its siblings (here the session that a second
    // use of the secret inside the grace window made).
    let login = h.remembered(1).await;
    let r0 = login.refresh.as_ref().unwrap();
    let first = h.refreshed(r0).await;
    let sibling = h.refreshed(r0).await;
    assert!(h.signed_in(&sibling.token).await);
    assert!(h.manager.revoke(h.id(1), first.session.id).await.unwrap());
    assert!(!h.signed_in(&sibling.token).await);
    let refresh = sibling.refresh.as_ref().unwrap();
    assert!(matches!(h.refresh(refresh).await, Refresh::Invalid));

    // Sign out everywhere else keeps only the current session's series.
    let here = h.remembered(1).await;
    let elsewhere = h.remembered(1).await;
    assert_eq!(
        h.manager
            .revoke_others(h.id(1), here.session.id)
            .await
            .unwrap(),
        1
    );
    let refresh = elsewhere.refresh.as_ref().unwrap();
    assert!(matches!(h.refresh(refresh).await, Refresh::Invalid));
    let here_again = h.refreshed(here.refresh.as_ref().unwrap()).await;

    // Revoke all ends every series.
    h.manager.revoke_all(h.id(1)).await.unwrap();
    assert!(!h.signed_in(&here_again.token).await);
    let refresh = here_again.refresh.as_ref().unwrap();
    assert!(matches!(h.refresh(refresh).await, Refresh::Invalid));
}

/// An inactive user cannot refresh, and the failed refresh ends the series for good; an
/// unknown series is invalid; a plain login has no series.
pub async fn inactive_users_and_unknown_series_cannot_refresh<F: Fixture>(fixture: F) {
    let h = remember_harness(fixture, RefreshConfig::default());
    let login = h.remembered(1).await;
    let refresh = login.refresh.as_ref().unwrap();
    h.fixture.set_active(1, false).await;
    assert!(matches!(h.refresh(refresh).await, Refresh::Invalid));
    h.fixture.set_active(1, true).await;
    assert!(matches!(h.refresh(refresh).await, Refresh::Invalid));
    assert!(matches!(
        h.refresh(&RefreshToken::generate()).await,
        Refresh::Invalid
    ));
    let plain = h.manager.login(h.id(2), LoginOptions::new()).await.unwrap();
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
    RefreshToken::parse(&text).expect("a well-formed refresh token")
}

/// A secret the series never issued, presented with its (public) id, is invalid and changes
/// nothing the store shows: before any refresh, and once the series has used and superseded
/// secrets, after the grace window.
pub async fn a_wrong_secret_for_a_known_series_is_invalid_and_changes_nothing<F: Fixture>(
    fixture: F,
) {
    let h = remember_harness(fixture, RefreshConfig::default().grace(5 * SECOND));
    let login = h.remembered(1).await;
    let r0 = login.refresh.clone().unwrap();
    let before = h.observable_state().await;
    assert!(matches!(h.refresh(&forged(&r0)).await, Refresh::Invalid));
    assert_eq!(
        h.observable_state().await,
        before,
        "a forged secret changed something"
    );
    assert!(h.signed_in(&login.token).await);
    let next = h.refreshed(&r0).await;
    h.clock.advance(60 * SECOND);
    let before = h.observable_state().await;
    assert!(matches!(h.refresh(&forged(&r0)).await, Refresh::Invalid));
    assert_eq!(
        h.observable_state().await,
        before,
        "a forged secret changed something"
    );
    assert!(h.signed_in(&next.token).await);
    let latest = next.refresh.as_ref().unwrap();
    assert!(matches!(h.refresh(latest).await, Refresh::Refreshed(_)));
}

/// A superseded secret is honoured once more inside the grace window; a third use inside it
/// is invalid and changes nothing; after the window, the used secret is reuse.
pub async fn a_superseded_secret_is_honoured_once_more_inside_the_window<F: Fixture>(fixture: F) {
    let h = remember_harness(fixture, RefreshConfig::default().grace(5 * SECOND));
    let r0 = h.remembered(1).await.refresh.unwrap();
    let tab_a = h.refreshed(&r0).await;
    h.clock.advance(SECOND);
    let tab_b = h.refreshed(&r0).await;
    let before = h.observable_state().await;
    h.clock.advance(SECOND);
    assert!(matches!(h.refresh(&r0).await, Refresh::Invalid));
    assert_eq!(h.observable_state().await, before);
    let live = h.sessions(1).await;
    assert_eq!(live.len(), 2, "{live:?}");
    assert!(h.signed_in(&tab_a.token).await);
    assert!(h.signed_in(&tab_b.token).await);
    h.clock.advance(5 * SECOND);
    assert!(matches!(h.refresh(&r0).await, Refresh::ReuseDetected));
    assert!(h.sessions(1).await.is_empty());
}

/// Two refreshes with the same secret at once both succeed, and whichever new secret the
/// client keeps, the other one (issued, never used) never counts as reuse; the same holds for
/// a secret issued by a second use inside the grace window.
pub async fn an_issued_secret_never_used_never_trips_reuse<F: Fixture>(fixture: F) {
    let h = remember_harness(fixture, RefreshConfig::default().grace(5 * SECOND));
    for kept in [0, 1] {
        let r0 = h.remembered(1).await.refresh.unwrap();
        let (a, b) = tokio::join!(h.refresh(&r0), h.refresh(&r0));
        let tabs = [a, b].map(|outcome| match outcome {
            Refresh::Refreshed(login) => login.refresh.unwrap(),
            other => panic!("two tabs at once: {other:?}"),
        });
        h.clock.advance(60 * SECOND);
        let next = h.refreshed(&tabs[kept]).await;
        assert!(h.signed_in(&next.token).await);
        assert!(matches!(
            h.refresh(&tabs[1 - kept]).await,
            Refresh::Refreshed(_)
        ));
        let r = next.refresh.unwrap();
        let first = h.refreshed(&r).await.refresh.unwrap();
        let grace = h.refreshed(&r).await.refresh.unwrap();
        h.clock.advance(60 * SECOND);
        let (later, dropped) = if kept == 0 {
            (first, grace)
        } else {
            (grace, first)
        };
        assert!(matches!(h.refresh(&later).await, Refresh::Refreshed(_)));
        assert!(matches!(h.refresh(&dropped).await, Refresh::Refreshed(_)));
    }
}

/// One device, one session: each refresh ends the series' earlier session (the store holds
/// one), but inside the grace window the two tabs' sessions overlap, and no more.
pub async fn a_remembered_device_holds_one_session<F: Fixture>(fixture: F) {
    let h = remember_harness(fixture, RefreshConfig::default().grace(5 * SECOND));
    let mut last = h.remembered(1).await;
    for _ in 0..30 {
        h.clock.advance(60 * SECOND);
        last = h.refreshed(last.refresh.as_ref().unwrap()).await;
    }
    let live: Vec<_> = h.sessions(1).await.iter().map(|s| s.id).collect();
    assert_eq!(live, [last.session.id]);
    assert_eq!(h.stored_sessions().await, 1);
    let r = last.refresh.unwrap();
    let a = h.refreshed(&r).await;
    let b = h.refreshed(&r).await;
    let mut live: Vec<_> = h.sessions(1).await.iter().map(|s| s.id).collect();
    live.sort();
    let mut expected = vec![a.session.id, b.session.id];
    expected.sort();
    assert_eq!(live, expected);
    h.clock.advance(60 * SECOND);
    let c = h.refreshed(b.refresh.as_ref().unwrap()).await;
    let live: Vec<_> = h.sessions(1).await.iter().map(|s| s.id).collect();
    assert_eq!(live, [c.session.id]);
}

/// A remembered session's absolute expiry is capped by the series' absolute lifetime, after a
/// refresh too; a plain login keeps its own lifetime.
pub async fn a_session_never_outlives_its_series<F: Fixture>(fixture: F) {
    let config = RefreshConfig::default().absolute_lifetime(Some(3 * 3600 * SECOND));
    let h = remember_harness(fixture, config);
    let login = h.remembered(1).await;
    let series_end = login.session.created_at + time::Duration::hours(3);
    assert_eq!(login.session.absolute_expires_at, Some(series_end));
    h.clock.advance(3600 * SECOND);
    let next = h.refreshed(login.refresh.as_ref().unwrap()).await;
    assert_eq!(next.session.absolute_expires_at, Some(series_end));
    h.clock.advance(2 * 3600 * SECOND);
    assert!(!h.signed_in(&next.token).await);
    let plain = h.manager.login(h.id(1), LoginOptions::new()).await.unwrap();
    assert_eq!(
        plain.session.absolute_expires_at,
        Some(plain.session.created_at + time::Duration::days(7))
    );
}

/// With one session per user, a login that prunes a remembered session ends its series (it
/// cannot refresh back in); a refresh that prunes keeps its own series.
pub async fn single_session_mode_ends_the_pruned_series<F: Fixture>(fixture: F) {
    let h = harness(
        fixture,
        SessionConfig::default().max_sessions_per_user(Some(1)),
    );
    let device_a = h.remembered(1).await;
    let device_b = h.manager.login(h.id(1), LoginOptions::new()).await.unwrap();
    assert!(!h.signed_in(&device_a.token).await);
    let refresh = device_a.refresh.as_ref().unwrap();
    assert!(matches!(h.refresh(refresh).await, Refresh::Invalid));
    assert!(h.signed_in(&device_b.token).await);
    let device_c = h.remembered(1).await;
    let next = h.refreshed(device_c.refresh.as_ref().unwrap()).await;
    assert!(h.signed_in(&next.token).await);
    assert!(!h.signed_in(&device_b.token).await);
    let refresh = next.refresh.as_ref().unwrap();
    assert!(matches!(h.refresh(refresh).await, Refresh::Refreshed(_)));
}

/// A series remembers its 8 most recently issued secrets: a used secret it still remembers is
/// reuse, one it forgot is merely invalid and changes nothing.
pub async fn a_series_remembers_a_bounded_number_of_secrets<F: Fixture>(fixture: F) {
    let h = remember_harness(fixture, RefreshConfig::default().grace(5 * SECOND));
    let mut tokens = vec![h.remembered(1).await.refresh.unwrap()];
    for _ in 0..12 {
        h.clock.advance(60 * SECOND);
        let next = h.refreshed(tokens.last().unwrap()).await;
        tokens.push(next.refresh.unwrap());
    }
    let before = h.observable_state().await;
    assert!(matches!(h.refresh(&tokens[0]).await, Refresh::Invalid));
    assert_eq!(h.observable_state().await, before);
    assert!(matches!(
        h.refresh(&tokens[10]).await,
        Refresh::ReuseDetected
    ));
}

/// Re-authenticating a remembered session changes only its `authenticated_at`: it stays in
/// its series, which still refreshes.
pub async fn reauthenticate_keeps_the_remember_me_series<F: Fixture>(fixture: F) {
    let h = harness(fixture, SessionConfig::default());
    let login = h.remembered(1).await;
    let (id, t0) = (login.session.id, login.session.created_at);
    h.clock.advance(10 * MINUTE);
    let before = h.stored(1, id).await;
    assert!(h.manager.reauthenticate(id).await.unwrap());
    let after = h.stored(1, id).await;
    assert_eq!(after.authenticated_at, h.manager.now());
    assert!(h.manager.is_recently_authenticated(&after));
    let mut unchanged = after.clone();
    unchanged.authenticated_at = t0;
    assert_eq!(unchanged, before);
    let view = h.live(&login.token, Scope::User).await;
    assert_eq!(view.session.id, id);
    assert_eq!(view.session.authenticated_at, after.authenticated_at);
    let refresh = login.refresh.as_ref().unwrap();
    assert!(matches!(h.refresh(refresh).await, Refresh::Refreshed(_)));
}

/// A session made by a refresh keeps the login time, so it is not recently authenticated,
/// until it re-authenticates; then it is, for the configured age only.
pub async fn a_refreshed_session_is_recent_only_after_reauthentication<F: Fixture>(fixture: F) {
    let h = harness(fixture, SessionConfig::default());
    let login = h.remembered(1).await;
    h.clock.advance(SECOND);
    let refreshed = h.refreshed(login.refresh.as_ref().unwrap()).await.session;
    assert_eq!(refreshed.authenticated_at, login.session.created_at);
    assert!(!h.manager.is_recently_authenticated(&refreshed));
    assert!(h.manager.reauthenticate(refreshed.id).await.unwrap());
    let after = h.stored(1, refreshed.id).await;
    assert!(after.refreshed);
    assert!(h.manager.is_recently_authenticated(&after));
    h.clock.advance(10 * MINUTE);
    assert!(!h.manager.is_recently_authenticated(&after));
}

/// One batch of the purge deletes at most its size of expired sessions and of expired series
/// alike; the manager goes on until every expired row is gone, and spares live sessions.
pub async fn purge_deletes_expired_series_in_batches<F: Fixture>(fixture: F) {
    let config = SessionConfig::default()
        .idle_timeout(Some(MINUTE))
        .refresh(RefreshConfig::default().idle_timeout(Some(MINUTE)))
        .purge_batch_size(NonZeroU32::new(2).unwrap());
    let h = harness(fixture, config);
    for user in 1..=3 {
        h.remembered(user).await;
    }
    h.login(4).await;
    h.login(4).await;
    h.clock.advance(2 * MINUTE);
    let (live, _) = h.login(1).await;
    let (other_live, _) = h.login(2).await;
    h.purge_in_batches_of_two(Purged::new(2, 2), [&live, &other_live])
        .await;
}
