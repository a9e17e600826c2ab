//! Checks of the core [`SessionStore`](crate::store::SessionStore): creation and the session
//! limit, validation (its user read fresh, expiry, the debounced touch and sliding expiry),
//! lookup, removal, listing, purging and re-authentication. They run on every store.

use std::num::NonZeroU32;
use std::time::Duration;

use super::{Fixture, MINUTE, SECOND, USERS, harness};
use crate::SessionConfig;
use crate::manager::LoginOptions;
use crate::rejection::AuthRejection;
use crate::store::{ClientInfo, Purged, Scope, UserRecord, Validation};
use crate::token::{SessionId, SessionToken};

/// A live session validates with its own id and user, and the user's name, role and active
/// flag as stored, for every user of the fixture that the extractors admit.
pub async fn validate_reads_the_session_and_its_user<F: Fixture>(fixture: F) {
    let h = harness(fixture, SessionConfig::default());
    let admitted = USERS
        .iter()
        .filter(|user| user.is_active && user.role.is_some_and(|role| !role.is_empty()));
    for user in admitted {
        let (token, session_id) = h.login(user.id).await;
        let admitted = h.auth_user(&token).await.expect("a live session");
        assert_eq!(admitted.user_id, h.id(user.id));
        assert_eq!(admitted.username, user.username);
        assert_eq!(Some(admitted.role.as_str()), user.role);
        assert_eq!(admitted.session_id, session_id);
        let view = h.live(&token, Scope::User).await;
        assert_eq!(view.session.id, session_id);
        assert_eq!(view.session.user_id, h.id(user.id));
    }
}

/// A token the store never issued is [`Validation::Unknown`] at both scopes, and a lookup
/// finds nothing.
pub async fn an_unknown_token_is_unknown<F: Fixture>(fixture: F) {
    let h = harness(fixture, SessionConfig::default());
    h.login(1).await;
    let unknown = SessionToken::generate();
    for scope in [Scope::User, Scope::Game] {
        assert_eq!(h.validate(&unknown, scope).await, Validation::Unknown);
    }
    assert_eq!(h.manager.lookup(&unknown).await, None);
    assert_eq!(
        h.auth_user(&unknown).await,
        Err(AuthRejection::InvalidSession)
    );
}

/// The session of a deleted user, of a user without a role or with an empty one, and of an
/// inactive user is live, and its view shows the user as stored (or none), so that the
/// extractors refuse it as "Invalid session user".
pub async fn missing_user_role_or_inactive_is_invalid_session_user<F: Fixture>(fixture: F) {
    let h = harness(fixture, SessionConfig::default());
    let (doomed, _) = h.login(6).await;
    h.fixture.delete_user(6).await;
    let expected = [
        (doomed, None),
        (
            h.login(7).await.0,
            Some(UserRecord::new("norole", None, true)),
        ),
        (
            h.login(8).await.0,
            Some(UserRecord::new("emptyrole", Some(String::new()), true)),
        ),
        (
            h.login(9).await.0,
            Some(UserRecord::new("inactive", Some("admin".to_owned()), false)),
        ),
    ];
    for (token, user) in expected {
        let view = h.live(&token, Scope::User).await;
        assert_eq!(view.user, user);
        assert_eq!(h.auth_user(&token).await, Err(AuthRejection::InvalidUser));
    }
}

/// The role and the active flag are read on every validation: a role change and a
/// deactivation apply on the session's next request.
pub async fn role_change_and_deactivation_apply_on_the_next_request<F: Fixture>(fixture: F) {
    let h = harness(fixture, SessionConfig::default());
    let (token, _) = h.login(1).await;
    assert_eq!(h.auth_user(&token).await.unwrap().role, "player");
    h.fixture.set_role(1, Some("ADMIN")).await;
    assert_eq!(h.auth_user(&token).await.unwrap().role, "ADMIN");
    h.fixture.set_active(1, false).await;
    let view = h.live(&token, Scope::User).await;
    assert_eq!(
        view.user,
        Some(UserRecord::new("player", Some("ADMIN".to_owned()), false))
    );
    assert_eq!(h.auth_user(&token).await, Err(AuthRejection::InvalidUser));
}

/// A lookup by token returns the live session's username and role, nothing for an unknown
/// token, and is read-only: it does not touch the session.
pub async fn username_and_role_lookups<F: Fixture>(fixture: F) {
    let h = harness(fixture, SessionConfig::default());
    let (token, _) = h.login(3).await;
    assert_eq!(h.manager.username(&token).await.as_deref(), Some("admin"));
    assert_eq!(
        h.manager.username_and_role(&token).await,
        Some(("admin".to_owned(), "admin".to_owned()))
    );
    let missing = SessionToken::generate();
    assert_eq!(h.manager.username(&missing).await, None);
    assert_eq!(h.manager.username_and_role(&missing).await, None);
    let before = h.sessions(3).await[0].last_activity;
    h.clock.advance(10 * MINUTE);
    h.manager.username(&token).await.unwrap();
    assert_eq!(h.sessions(3).await[0].last_activity, before);
}

/// An expired session is [`Validation::Expired`] once, deleted (the store no longer holds
/// it), then [`Validation::Unknown`]; it is not listed.
pub async fn expired_session_is_rejected_and_deleted<F: Fixture>(fixture: F) {
    let h = harness(
        fixture,
        SessionConfig::default().idle_timeout(Some(30 * MINUTE)),
    );
    let (token, _) = h.login(1).await;
    let (other, _) = h.login(2).await;
    h.clock.advance(31 * MINUTE);
    assert_eq!(h.validate(&token, Scope::Game).await, Validation::Expired);
    assert_eq!(h.validate(&token, Scope::Game).await, Validation::Unknown);
    assert_eq!(h.validate(&other, Scope::User).await, Validation::Expired);
    assert!(h.sessions(1).await.is_empty());
    // Both are gone, not merely hidden.
    assert_eq!(h.stored_sessions().await, 0);
}

/// With sliding expiry, a validation moves `expires_at` to now plus the idle timeout, so an
/// active session outlives its first idle deadline.
pub async fn sliding_expiry_moves_expires_at_forward<F: Fixture>(fixture: F) {
    let config = SessionConfig::default()
        .idle_timeout(Some(30 * MINUTE))
        .touch_interval(MINUTE);
    let h = harness(fixture, config);
    let (token, _) = h.login(1).await;
    let first = h.sessions(1).await[0].clone();
    h.clock.advance(20 * MINUTE);
    assert!(h.signed_in(&token).await);
    let slid = h.sessions(1).await[0].clone();
    assert_eq!(slid.last_activity, h.manager.now());
    assert_eq!(
        slid.expires_at,
        Some(h.manager.now() + time::Duration::minutes(30))
    );
    assert!(slid.expires_at > first.expires_at);
    // 40 minutes after the login, the session still lives.
    h.clock.advance(20 * MINUTE);
    assert!(h.signed_in(&token).await);
}

/// A validation writes the activity only once `touch_interval` has passed since the last
/// write: before that, the stored session is unchanged.
pub async fn touch_is_debounced<F: Fixture>(fixture: F) {
    let h = harness(fixture, SessionConfig::default().touch_interval(MINUTE));
    let (token, _) = h.login(1).await;
    let created = h.sessions(1).await[0].clone();
    h.clock.advance(30 * SECOND);
    assert!(h.signed_in(&token).await);
    assert_eq!(h.sessions(1).await[0], created);
    h.clock.advance(31 * SECOND);
    assert!(h.signed_in(&token).await);
    assert_eq!(h.sessions(1).await[0].last_activity, h.manager.now());
}

/// Without sliding expiry, activity does not move the idle deadline.
pub async fn non_sliding_expiry_stays_put<F: Fixture>(fixture: F) {
    let config = SessionConfig::default()
        .idle_timeout(Some(30 * MINUTE))
        .sliding(false)
        .touch_interval(Duration::ZERO);
    let h = harness(fixture, config);
    let (token, _) = h.login(1).await;
    h.clock.advance(20 * MINUTE);
    assert!(h.signed_in(&token).await);
    h.clock.advance(11 * MINUTE);
    assert_eq!(
        h.auth_user(&token).await,
        Err(AuthRejection::InvalidSession)
    );
}

/// With no idle timeout and no absolute lifetime, a session has no expiry, lives ten years
/// on, and no purge removes it.
pub async fn ttl_disabled_never_expires<F: Fixture>(fixture: F) {
    let config = SessionConfig::default()
        .idle_timeout(None)
        .absolute_lifetime(None);
    let h = harness(fixture, config);
    let (token, _) = h.login(1).await;
    let record = h.sessions(1).await[0].clone();
    assert_eq!(record.expires_at, None);
    assert_eq!(record.absolute_expires_at, None);
    h.clock.advance(Duration::from_secs(10 * 365 * 24 * 3600));
    assert!(h.signed_in(&token).await);
    assert_eq!(h.manager.purge_expired().await.unwrap(), 0);
}

/// Activity never extends the absolute lifetime: a session active all along ends at it, and
/// is deleted when presented.
pub async fn absolute_lifetime_is_never_extended<F: Fixture>(fixture: F) {
    let config = SessionConfig::default()
        .idle_timeout(Some(60 * MINUTE))
        .absolute_lifetime(Some(120 * MINUTE))
        .touch_interval(Duration::ZERO);
    let h = harness(fixture, config);
    let (token, _) = h.login(1).await;
    for _ in 0..3 {
        h.clock.advance(39 * MINUTE);
        assert!(h.signed_in(&token).await);
    }
    h.clock.advance(4 * MINUTE); // 121 minutes after login, active all along
    assert_eq!(h.validate(&token, Scope::User).await, Validation::Expired);
    assert_eq!(h.stored_sessions().await, 0);
}

/// Removal by id and by token reports whether the session existed, and a removed session no
/// longer validates.
pub async fn remove_returns_true_then_false<F: Fixture>(fixture: F) {
    let h = harness(fixture, SessionConfig::default());
    let (token, id) = h.login(1).await;
    assert!(h.manager.remove(id).await.unwrap());
    assert!(!h.manager.remove(id).await.unwrap());
    assert_eq!(h.validate(&token, Scope::User).await, Validation::Unknown);
    let (token, _) = h.login(1).await;
    assert!(h.manager.remove_by_token(&token).await.unwrap());
    assert!(!h.manager.remove_by_token(&token).await.unwrap());
    assert_eq!(h.validate(&token, Scope::User).await, Validation::Unknown);
}

/// With a limit of one session per user, a login removes the user's earlier session, and no
/// other user's.
pub async fn single_session_mode_leaves_one_session<F: Fixture>(fixture: F) {
    let config = SessionConfig::default().max_sessions_per_user(Some(1));
    let h = harness(fixture, config);
    let (first, _) = h.login(1).await;
    h.login(2).await;
    h.clock.advance(SECOND);
    let (second, second_id) = h.login(1).await;
    let sessions = h.sessions(1).await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].id, second_id);
    assert_eq!(h.validate(&first, Scope::User).await, Validation::Unknown);
    assert!(h.signed_in(&second).await);
    assert_eq!(h.sessions(2).await.len(), 1);
}

/// With a limit of `n` sessions per user, the newest `n` are kept, listed newest first.
pub async fn max_sessions_keeps_the_newest_n<F: Fixture>(fixture: F) {
    let h = harness(
        fixture,
        SessionConfig::default().max_sessions_per_user(Some(2)),
    );
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(h.login(1).await.1);
        h.clock.advance(SECOND);
    }
    let left: Vec<SessionId> = h.sessions(1).await.iter().map(|s| s.id).collect();
    assert_eq!(left, vec![ids[3], ids[2]]);
}

/// Twenty logins of one user at once, with a limit of one session per user, all succeed and
/// leave exactly one session, the one that validates.
pub async fn concurrent_logins_keep_at_most_the_limit<F: Fixture>(fixture: F) {
    const LOGINS: usize = 20;
    let config = SessionConfig::default().max_sessions_per_user(Some(1));
    let h = harness(fixture, config);
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(LOGINS));
    let logins: Vec<_> = (0..LOGINS)
        .map(|_| {
            let (manager, start, user) = (h.manager.clone(), start.clone(), h.id(1));
            tokio::spawn(async move {
                start.wait().await;
                manager.login(user, LoginOptions::new()).await
            })
        })
        .collect();
    let mut tokens = Vec::new();
    for login in logins {
        let login = login.await.expect("the login task");
        tokens.push(login.expect("every concurrent login succeeds").token);
    }
    let remaining = h.sessions(1).await;
    assert_eq!(remaining.len(), 1, "sessions left: {remaining:?}");
    assert_eq!(h.stored_sessions().await, 1);
    let mut valid = Vec::new();
    for token in &tokens {
        match h.validate(token, Scope::User).await {
            Validation::Valid(view) => valid.push(view.session.id),
            Validation::Unknown => {}
            Validation::Expired => panic!("nothing here expires"),
        }
    }
    assert_eq!(valid, [remaining[0].id], "the remaining session validates");
}

/// The client type (normalised), address and User-Agent given at login are stored and
/// listed; a blank client type is recorded as `unknown`.
pub async fn client_info_is_recorded_and_listed<F: Fixture>(fixture: F) {
    let h = harness(fixture, SessionConfig::default());
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "x-client-type",
        http::HeaderValue::from_static("  Web-Browser \t"),
    );
    headers.insert(
        "user-agent",
        http::HeaderValue::from_static("Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"),
    );
    let ip = "203.0.113.7".parse().unwrap();
    let client = ClientInfo::from_headers(&headers).with_ip(ip);
    let login = h
        .manager
        .login(h.id(1), LoginOptions::new().client(client))
        .await
        .unwrap();
    let blank = h
        .manager
        .login(
            h.id(1),
            LoginOptions::new().client(ClientInfo::default().with_client_type("   ")),
        )
        .await
        .unwrap();
    let first = h.stored(1, login.session.id).await;
    assert_eq!(first.client_type, "web-browser");
    assert_eq!(first.ip, Some(ip));
    assert_eq!(
        first.user_agent.as_deref(),
        Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0")
    );
    let second = h.stored(1, blank.session.id).await;
    assert_eq!(second.client_type, "unknown");
    assert_eq!(second.ip, None);
    assert_eq!(second.user_agent, None);
}

/// A login without client details records the client type `unknown`.
pub async fn default_client_info_records_an_unknown_client_type<F: Fixture>(fixture: F) {
    let h = harness(fixture, SessionConfig::default());
    h.login(1).await;
    assert_eq!(h.sessions(1).await[0].client_type, "unknown");
    assert_eq!(ClientInfo::default().client_type, "unknown");
}

/// Self-service revocation: a user cannot revoke another user's session; revoking one,
/// all others, and all removes exactly those, and leaves other users alone.
pub async fn session_management_revokes_only_what_it_should<F: Fixture>(fixture: F) {
    let h = harness(fixture, SessionConfig::default());
    let (a, a_id) = h.login(1).await;
    let (b, b_id) = h.login(1).await;
    let (c, _) = h.login(1).await;
    let (other, other_id) = h.login(2).await;
    assert!(!h.manager.revoke(h.id(1), other_id).await.unwrap());
    assert!(h.manager.revoke(h.id(1), b_id).await.unwrap());
    assert!(!h.signed_in(&b).await);
    assert_eq!(h.manager.revoke_others(h.id(1), a_id).await.unwrap(), 1);
    assert!(!h.signed_in(&c).await);
    assert!(h.signed_in(&a).await);
    assert_eq!(h.manager.revoke_all(h.id(1)).await.unwrap(), 1);
    assert!(!h.signed_in(&a).await);
    assert!(h.signed_in(&other).await);
}

/// The sweeper ([`SessionManager::spawn_sweeper`](crate::SessionManager::spawn_sweeper)) deletes expired sessions and spares live
/// ones. It runs on a real interval: the check waits up to five seconds.
pub async fn sweeper_purges_expired_sessions<F: Fixture>(fixture: F) {
    let h = harness(fixture, SessionConfig::default().idle_timeout(Some(MINUTE)));
    h.login(1).await;
    h.login(2).await;
    h.clock.advance(2 * MINUTE);
    let (live, _) = h.login(3).await;
    assert_eq!(h.stored_sessions().await, 3);
    let sweeper = h.manager.spawn_sweeper(Duration::from_millis(20)).unwrap();
    let mut stored = 3;
    for _ in 0..250 {
        stored = h.stored_sessions().await;
        if stored == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sweeper.abort();
    assert_eq!(stored, 1);
    assert!(h.signed_in(&live).await);
}

/// One batch of the purge deletes at most its size; the manager goes on batch after batch
/// until every expired session is gone, and spares the live ones.
pub async fn purge_works_in_batches_and_spares_live_sessions<F: Fixture>(fixture: F) {
    let config = SessionConfig::default()
        .idle_timeout(Some(MINUTE))
        .purge_batch_size(NonZeroU32::new(2).unwrap());
    let h = harness(fixture, config);
    for user in [1, 2, 3, 4, 4] {
        h.login(user).await;
    }
    h.clock.advance(2 * MINUTE);
    let (live, _) = h.login(1).await;
    let (other_live, _) = h.login(2).await;
    h.purge_in_batches_of_two(Purged::new(2, 0), [&live, &other_live])
        .await;
}

/// Re-authentication moves `authenticated_at` to now on the same session, and nothing else:
/// the same token validates to the same session, with the same login time, activity and
/// expiry.
pub async fn reauthenticate_moves_authenticated_at_on_the_same_session<F: Fixture>(fixture: F) {
    let h = harness(fixture, SessionConfig::default());
    let login = h.manager.login(h.id(1), LoginOptions::new()).await.unwrap();
    let (id, t0) = (login.session.id, login.session.created_at);
    assert!(h.manager.is_recently_authenticated(&login.session));
    h.clock.advance(10 * MINUTE);
    let before = h.stored(1, id).await;
    assert!(!h.manager.is_recently_authenticated(&before));

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
}

/// Re-authenticating an unknown session changes nothing and reports `false`; an expired one
/// is not revived (it is still expired when presented).
pub async fn reauthenticate_changes_nothing_for_unknown_or_expired_sessions<F: Fixture>(
    fixture: F,
) {
    let h = harness(fixture, SessionConfig::default().idle_timeout(Some(MINUTE)));
    let (_, other_id) = h.login(2).await;
    let (token, id) = h.login(1).await;
    h.clock.advance(30 * SECOND);
    let before = [h.stored(1, id).await, h.stored(2, other_id).await];
    assert!(!h.manager.reauthenticate(SessionId::new()).await.unwrap());
    assert_eq!([h.stored(1, id).await, h.stored(2, other_id).await], before);
    h.clock.advance(2 * MINUTE);
    assert!(!h.manager.reauthenticate(id).await.unwrap());
    assert_eq!(h.validate(&token, Scope::User).await, Validation::Expired);
}
