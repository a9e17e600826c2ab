//! Many app instances on one PostgreSQL. Without a cache, every instance validates against the
//! database, so a change made through one is seen by the others on their next request. With
//! the opt-in cache (feature `cache`), other instances learn through `LISTEN/NOTIFY` within the
//! documented staleness bound, the cache is bypassed while its listener is down, and the
//! debounced touch still reaches the database.

use crate::common;

use std::time::Duration;

use axum::http::StatusCode;
use common::app::{bearer, router, send};
use common::{Backend, TestDb, pool_for_schema};
use tower_session_auth::{LoginOptions, PgStore, SessionConfig, SessionManager};

/// Another instance: its own pool and manager on the same schema.
fn instance(db: &TestDb, config: SessionConfig) -> (PgStore, SessionManager) {
    let pool = pool_for_schema(
        &common::database_url(),
        &db.schema,
        4,
        Duration::from_secs(5),
    );
    let store = PgStore::new(pool);
    (store.clone(), SessionManager::new(store, config))
}

fn pg(backend: &Backend) -> &TestDb {
    match backend {
        Backend::Pg(db) => db,
        Backend::Memory(_) => unreachable!(),
    }
}

async fn role_of(app: &axum::Router, token: &str) -> (StatusCode, String) {
    let reply = send(app, bearer("/me", token)).await;
    let role = reply.body["role"].as_str().unwrap_or_default().to_owned();
    (reply.status, role)
}

#[tokio::test]
async fn without_a_cache_every_change_is_seen_on_the_next_request() {
    let backend = Backend::pg().await;
    let db = pg(&backend);
    let (_, a) = instance(db, SessionConfig::default());
    let (_, b) = instance(db, SessionConfig::default());
    let (app_a, app_b) = (router(a.clone()), router(b.clone()));

    // A login on A works on B.
    let login = a.login(1, LoginOptions::new()).await.unwrap();
    let token = login.token.expose();
    assert_eq!(
        role_of(&app_b, token).await,
        (StatusCode::OK, "player".into())
    );

    // Role change and deactivation (by the application, in the users table).
    backend.set_role(1, Some("admin")).await;
    assert_eq!(
        role_of(&app_a, token).await,
        (StatusCode::OK, "admin".into())
    );
    backend.set_active(1, false).await;
    assert_eq!(role_of(&app_a, token).await.0, StatusCode::UNAUTHORIZED);
    backend.set_active(1, true).await;

    // Logout and revocation on B.
    assert!(b.remove_by_token(&login.token).await.unwrap());
    assert_eq!(role_of(&app_a, token).await.0, StatusCode::UNAUTHORIZED);
    let other = a.login(1, LoginOptions::new()).await.unwrap();
    assert_eq!(
        role_of(&app_a, other.token.expose()).await.0,
        StatusCode::OK
    );
    b.revoke_all(1).await.unwrap();
    assert_eq!(
        role_of(&app_a, other.token.expose()).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[cfg(feature = "cache")]
mod cached {
    use std::sync::Arc;

    use super::*;
    use tower_session_auth::test_util::ManualClock;
    use tower_session_auth::{cache::CacheConfig, cache::SessionCache, store::Scope};

    /// How long another instance may take to see a notified change in these tests: far below
    /// the cache TTL they use, so passing proves the notification, not the TTL, did it.
    const NOTIFIED_WITHIN: Duration = Duration::from_secs(5);
    const LONG_TTL: Duration = Duration::from_secs(300);

    struct Cached {
        manager: SessionManager,
        app: axum::Router,
        cache: SessionCache,
        listener: tokio::task::JoinHandle<()>,
        application_name: String,
    }

    impl Drop for Cached {
        fn drop(&mut self) {
            self.listener.abort();
        }
    }

    async fn cached_instance(db: &TestDb, config: SessionConfig, ttl: Duration) -> Cached {
        let (store, manager) = instance(db, config);
        store.install_invalidation_triggers().await.unwrap();
        let cache = SessionCache::new(CacheConfig::default().ttl(ttl));
        let application_name = format!("listener_{}", db.schema);
        let mut listen: tokio_postgres::Config = common::database_url().parse().unwrap();
        listen.application_name(&application_name);
        let listener = store.spawn_invalidation_listener(listen, cache.clone());
        wait_until(|| cache.is_serving()).await;
        let manager = manager.with_cache(cache.clone());
        Cached {
            app: router(manager.clone()),
            manager,
            cache,
            listener,
            application_name,
        }
    }

    async fn wait_until(mut done: impl FnMut() -> bool) {
        let start = std::time::Instant::now();
        while !done() {
            assert!(
                start.elapsed() < NOTIFIED_WITHIN,
                "condition not met in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls A until `expected` comes back; fails after the bound.
    async fn seen_within_bound(app: &axum::Router, token: &str, expected: (StatusCode, &str)) {
        let start = std::time::Instant::now();
        loop {
            let (status, role) = role_of(app, token).await;
            if status == expected.0 && role == expected.1 {
                return;
            }
            assert!(
                start.elapsed() < NOTIFIED_WITHIN,
                "still {status} {role:?}, expected {expected:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A change the triggers do not report, to see what the cache serves.
    async fn silent_role_change(db: &TestDb, role: &str) {
        let client = db.client().await;
        client
            .batch_execute(&format!(
                "ALTER TABLE users DISABLE TRIGGER tower_session_auth_user_changed; \
                 UPDATE users SET role = '{role}' WHERE id = 1; \
                 ALTER TABLE users ENABLE TRIGGER tower_session_auth_user_changed;"
            ))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn the_cache_serves_reads_and_notifications_invalidate_it_across_instances() {
        let backend = Backend::pg().await;
        let db = pg(&backend);
        let a = cached_instance(db, SessionConfig::default(), LONG_TTL).await;
        let (_, b) = instance(db, SessionConfig::default());
        let app_b = router(b.clone());
        let login = b.login(1, LoginOptions::new()).await.unwrap();
        let token = login.token.expose();
        assert_eq!(
            role_of(&a.app, token).await,
            (StatusCode::OK, "player".into())
        );

        // A serves from its cache: a change no trigger reports stays invisible on A ...
        silent_role_change(db, "worldbuilder").await;
        assert_eq!(
            role_of(&a.app, token).await,
            (StatusCode::OK, "player".into())
        );
        assert_eq!(
            role_of(&app_b, token).await,
            (StatusCode::OK, "worldbuilder".into())
        );

        // ... while reported changes reach it: role change, deactivation, logout.
        backend.set_role(1, Some("admin")).await;
        seen_within_bound(&a.app, token, (StatusCode::OK, "admin")).await;
        backend.set_active(1, false).await;
        seen_within_bound(&a.app, token, (StatusCode::UNAUTHORIZED, "")).await;
        backend.set_active(1, true).await;
        seen_within_bound(&a.app, token, (StatusCode::OK, "admin")).await;
        assert!(b.remove_by_token(&login.token).await.unwrap());
        seen_within_bound(&a.app, token, (StatusCode::UNAUTHORIZED, "")).await;

        // Revoke-all on B, for a session A had cached.
        let other = b.login(1, LoginOptions::new()).await.unwrap();
        assert_eq!(
            role_of(&a.app, other.token.expose()).await.0,
            StatusCode::OK
        );
        b.revoke_all(1).await.unwrap();
        seen_within_bound(&a.app, other.token.expose(), (StatusCode::UNAUTHORIZED, "")).await;

        // Unknown tokens are cached too, and a logout on A itself is effective at once.
        let own = a.manager.login(1, LoginOptions::new()).await.unwrap();
        assert_eq!(role_of(&a.app, own.token.expose()).await.0, StatusCode::OK);
        a.manager.remove_by_token(&own.token).await.unwrap();
        assert_eq!(
            role_of(&a.app, own.token.expose()).await.0,
            StatusCode::UNAUTHORIZED
        );
    }

    #[tokio::test]
    async fn an_unreported_change_is_stale_for_at_most_the_ttl() {
        let backend = Backend::pg().await;
        let db = pg(&backend);
        let ttl = Duration::from_millis(500);
        let a = cached_instance(db, SessionConfig::default(), ttl).await;
        let login = a.manager.login(1, LoginOptions::new()).await.unwrap();
        let token = login.token.expose();
        assert_eq!(
            role_of(&a.app, token).await,
            (StatusCode::OK, "player".into())
        );
        silent_role_change(db, "admin").await;
        let changed = std::time::Instant::now();
        seen_within_bound(&a.app, token, (StatusCode::OK, "admin")).await;
        // The documented bound is the TTL; allow scheduling slack on a loaded machine.
        assert!(changed.elapsed() < ttl + Duration::from_secs(3));
    }

    #[tokio::test]
    async fn the_touch_still_reaches_the_database() {
        let backend = Backend::pg().await;
        let db = pg(&backend);
        let clock = Arc::new(ManualClock::default());
        let (store, manager) = instance(db, SessionConfig::default());
        store.install_invalidation_triggers().await.unwrap();
        let cache = SessionCache::new(CacheConfig::default().ttl(LONG_TTL));
        let manager = manager.with_clock(clock.clone()).with_cache(cache);
        let app = router(manager.clone());
        let login = manager.login(1, LoginOptions::new()).await.unwrap();
        let token = login.token.expose();
        assert_eq!(role_of(&app, token).await.0, StatusCode::OK);
        clock.advance(Duration::from_secs(61));
        assert_eq!(role_of(&app, token).await.0, StatusCode::OK);
        let stored = manager.list_for_user(1).await.unwrap()[0].last_activity;
        assert_eq!(stored, manager.now(), "the due touch was not written");
        // Past the session's expiry, the cached entry is never served.
        clock.advance(Duration::from_secs(9 * 3600));
        assert_eq!(role_of(&app, token).await.0, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn a_lost_listener_pauses_the_cache_and_reconnects() {
        let backend = Backend::pg().await;
        let db = pg(&backend);
        let a = cached_instance(db, SessionConfig::default(), LONG_TTL).await;
        let login = a.manager.login(1, LoginOptions::new()).await.unwrap();
        let token = login.token.expose();
        assert_eq!(
            role_of(&a.app, token).await,
            (StatusCode::OK, "player".into())
        );

        db.client()
            .await
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = $1",
                &[&a.application_name],
            )
            .await
            .unwrap();
        // Missed notifications are not replayed: the cache stops serving, then comes back
        // flushed, so a change made meanwhile is seen.
        silent_role_change(db, "admin").await;
        seen_within_bound(&a.app, token, (StatusCode::OK, "admin")).await;
        wait_until(|| a.cache.is_serving()).await;
        assert_eq!(
            role_of(&a.app, token).await,
            (StatusCode::OK, "admin".into())
        );
    }

    /// A re-authentication on A lifts sudo mode on A at once and, through the session
    /// trigger on `authenticated_at`, on B (which had cached the old session) on its next
    /// request once notified: well before B's cache entry would expire on its own.
    #[tokio::test]
    async fn a_reauthentication_is_seen_by_every_instance() {
        use axum::routing::get;
        use tower_session_auth::{RecentAuth, SessionLayer};

        let sudo = |manager: &SessionManager| {
            common::app::routes()
                .route(
                    "/sudo",
                    get(|RecentAuth(user): RecentAuth| async move { user.username }),
                )
                .layer(SessionLayer::new(manager.clone()))
        };
        let backend = Backend::pg().await;
        let db = pg(&backend);
        let a = cached_instance(db, SessionConfig::default(), LONG_TTL).await;
        let b = cached_instance(db, SessionConfig::default(), LONG_TTL).await;
        let (sudo_a, sudo_b) = (sudo(&a.manager), sudo(&b.manager));
        let login = b.manager.login(1, LoginOptions::new()).await.unwrap();
        let token = login.token.expose();
        // The password was entered an hour ago.
        db.execute(
            "UPDATE sessions SET authenticated_at = authenticated_at - interval '1 hour'",
            &[],
        )
        .await;
        for app in [&sudo_a, &sudo_b] {
            let reply = send(app, bearer("/sudo", token)).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN);
            assert_eq!(reply.detail(), "Recent authentication required");
        }
        assert!(a.manager.reauthenticate(login.session.id).await.unwrap());
        assert_eq!(
            send(&sudo_a, bearer("/sudo", token)).await.status,
            StatusCode::OK
        );
        let start = std::time::Instant::now();
        while send(&sudo_b, bearer("/sudo", token)).await.status != StatusCode::OK {
            assert!(
                start.elapsed() < NOTIFIED_WITHIN,
                "B still serves the session as it was before the re-authentication"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// With the cache the store is always asked at `Scope::Game`, whatever the extractor: the
    /// entry an `AuthUser` request fills serves a later `GameUser` request without a statement.
    #[tokio::test]
    async fn a_cached_validation_serves_every_extractor() {
        use common::store::InstrumentedStore;

        let backend = Backend::pg().await;
        let (pg_store, _) = instance(pg(&backend), SessionConfig::default());
        let store = InstrumentedStore::new(pg_store);
        let cache = SessionCache::new(CacheConfig::default().ttl(LONG_TTL));
        let manager =
            SessionManager::new(store.clone(), SessionConfig::default()).with_cache(cache);
        let app = router(manager.clone());
        let login = manager.login(1, LoginOptions::new()).await.unwrap();
        let session_id = login.session.id;
        manager.select_character(session_id, 1, 11).await.unwrap();
        store.take_calls();

        let reply = send(&app, bearer("/me", login.token.expose())).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_eq!(store.take_calls(), ["validate(game)"]);
        let reply = send(&app, bearer("/game", login.token.expose())).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_eq!(reply.body["character_id"], 11);
        assert_eq!(store.take_calls(), Vec::<&str>::new());
    }

    /// Every revocation path drops this instance's entries at once, without waiting for a
    /// notification (there is no listener here, and none with `MemoryStore`): the entries
    /// would otherwise be served for the whole (long) TTL.
    async fn every_revocation_path_drops_local_entries_at_once(backend: Backend) {
        use tower_session_auth::{Refresh, RefreshConfig, store::Validation};

        let clock = Arc::new(ManualClock::default());
        let cached = |config: SessionConfig| {
            backend
                .manager(config, clock.clone())
                .with_cache(SessionCache::new(CacheConfig::default().ttl(LONG_TTL)))
        };
        let config = SessionConfig::default().refresh(RefreshConfig::default());
        let manager = cached(config.clone());
        let live = |manager: &SessionManager, login: &tower_session_auth::Login| {
            let (manager, token) = (manager.clone(), login.token.clone());
            async move {
                match manager.validate(&token, Scope::User).await.unwrap() {
                    Validation::Valid(_) => true,
                    Validation::Unknown | Validation::Expired => false,
                }
            }
        };
        let login = |remember: bool| {
            let manager = manager.clone();
            async move {
                manager
                    .login(1, LoginOptions::new().remember(remember))
                    .await
                    .unwrap()
            }
        };
        let refreshed = |token: tower_session_auth::token::RefreshToken| {
            let manager = manager.clone();
            async move {
                match manager
                    .refresh(&token, tower_session_auth::ClientInfo::default())
                    .await
                    .unwrap()
                {
                    Refresh::Refreshed(login) => *login,
                    other => panic!("expected a refresh, got {other:?}"),
                }
            }
        };

        // Sign out everywhere else.
        let (other, here) = (login(false).await, login(false).await);
        assert!(live(&manager, &other).await);
        manager.revoke_others(1, here.session.id).await.unwrap();
        assert!(!live(&manager, &other).await, "revoke_others");
        manager.revoke_all(1).await.unwrap();

        // Pruning at login (single-session mode).
        let single = cached(config.clone().max_sessions_per_user(Some(1)));
        let first = single.login(1, LoginOptions::new()).await.unwrap();
        assert!(live(&single, &first).await);
        single.login(1, LoginOptions::new()).await.unwrap();
        assert!(!live(&single, &first).await, "pruning at login");
        single.revoke_all(1).await.unwrap();

        // A refresh ends the series' earlier session.
        let remembered = login(true).await;
        assert!(live(&manager, &remembered).await);
        let next = refreshed(remembered.refresh.clone().unwrap()).await;
        assert!(
            !live(&manager, &remembered).await,
            "the refreshed-away session"
        );

        // A refresh that finds the user inactive ends the series and its sessions.
        assert!(live(&manager, &next).await);
        backend.set_active(1, false).await;
        let outcome = manager
            .refresh(
                next.refresh.as_ref().unwrap(),
                tower_session_auth::ClientInfo::default(),
            )
            .await
            .unwrap();
        assert!(matches!(outcome, Refresh::Invalid));
        backend.set_active(1, true).await;
        assert!(
            !live(&manager, &next).await,
            "series ended by a failed refresh"
        );

        // Revoking one session of a series drops its siblings (the grace overlap).
        let remembered = login(true).await;
        let r0 = remembered.refresh.clone().unwrap();
        let (a, b) = (refreshed(r0.clone()).await, refreshed(r0.clone()).await);
        assert!(live(&manager, &a).await && live(&manager, &b).await);
        assert!(manager.revoke(1, a.session.id).await.unwrap());
        assert!(
            !live(&manager, &b).await,
            "a sibling of the revoked session"
        );

        // Reuse ends the family.
        let remembered = login(true).await;
        let r0 = remembered.refresh.clone().unwrap();
        let next = refreshed(r0.clone()).await;
        assert!(live(&manager, &next).await);
        clock.advance(Duration::from_secs(6));
        let outcome = manager
            .refresh(&r0, tower_session_auth::ClientInfo::default())
            .await
            .unwrap();
        assert!(matches!(outcome, Refresh::ReuseDetected));
        assert!(!live(&manager, &next).await, "reuse");
    }

    #[tokio::test]
    async fn every_revocation_path_drops_local_entries_at_once_on_postgres() {
        every_revocation_path_drops_local_entries_at_once(Backend::pg().await).await;
    }

    #[tokio::test]
    async fn every_revocation_path_drops_local_entries_at_once_in_memory() {
        every_revocation_path_drops_local_entries_at_once(Backend::memory().await).await;
    }

    /// A statement that deletes many sessions sends one notification per 200 ids, not one
    /// per row, and each listener drops exactly those sessions.
    #[tokio::test]
    async fn a_mass_revocation_is_notified_in_batches() {
        const SESSIONS: usize = 450;
        let backend = Backend::pg().await;
        let db = pg(&backend);
        let a = cached_instance(db, SessionConfig::default(), LONG_TTL).await;
        let (_, b) = instance(db, SessionConfig::default());
        let mut ids = std::collections::HashSet::new();
        let mut first = None;
        for _ in 0..SESSIONS {
            let login = b.login(1, LoginOptions::new()).await.unwrap();
            ids.insert(login.session.id.to_string());
            first.get_or_insert(login);
        }
        let first = first.unwrap();
        let bystander = b.login(2, LoginOptions::new()).await.unwrap();
        for login in [&first, &bystander] {
            assert_eq!(
                role_of(&a.app, login.token.expose()).await.0,
                StatusCode::OK
            );
        }
        assert_eq!(a.cache.entry_count(), 2);

        let (client, mut connection) =
            tokio_postgres::connect(&common::database_url(), tokio_postgres::NoTls)
                .await
                .unwrap();
        let (sender, mut notes) = tokio::sync::mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            while let Some(Ok(message)) =
                std::future::poll_fn(|cx| connection.poll_message(cx)).await
            {
                if let tokio_postgres::AsyncMessage::Notification(note) = message {
                    let _ = sender.send(note.payload().to_owned());
                }
            }
        });
        client
            .batch_execute("LISTEN tower_session_auth")
            .await
            .unwrap();

        assert_eq!(b.revoke_all(1).await.unwrap(), SESSIONS as u64);
        let mut notified = std::collections::HashSet::new();
        let mut notifications = 0;
        while notified.len() < SESSIONS {
            let payload = tokio::time::timeout(NOTIFIED_WITHIN, notes.recv())
                .await
                .expect("notifications of every revoked session")
                .unwrap();
            // The channel is shared by every schema of the database: skip other tests' news.
            let Some(list) = payload.strip_prefix("sessions:") else {
                continue;
            };
            let listed: Vec<String> = list.split(',').map(str::to_owned).collect();
            if !listed.iter().any(|id| ids.contains(id)) {
                continue;
            }
            assert!(listed.iter().all(|id| ids.contains(id)), "{payload}");
            notifications += 1;
            notified.extend(listed);
        }
        assert_eq!(notified, ids);
        assert_eq!(notifications, SESSIONS.div_ceil(200));
        driver.abort();

        // The listener dropped the revoked session's entry; the bystander's session lives on.
        seen_within_bound(&a.app, first.token.expose(), (StatusCode::UNAUTHORIZED, "")).await;
        assert_eq!(
            role_of(&a.app, bystander.token.expose()).await.0,
            StatusCode::OK
        );
    }

    /// A validation whose statement ran before a logout committed, but which returns after the
    /// logout invalidated the cache, must not put the ended session back into the cache.
    #[tokio::test]
    async fn a_validation_racing_a_logout_does_not_cache_the_ended_session() {
        use common::store::InstrumentedStore;
        use tower_session_auth::store::Validation;

        let backend = Backend::pg().await;
        let db = pg(&backend);
        let (pg_store, _) = instance(db, SessionConfig::default());
        let store = InstrumentedStore::new(pg_store);
        let cache = SessionCache::new(CacheConfig::default().ttl(LONG_TTL));
        let manager =
            SessionManager::new(store.clone(), SessionConfig::default()).with_cache(cache);
        let login = manager.login(1, LoginOptions::new()).await.unwrap();

        store.hold_next_validation();
        let racing = tokio::spawn({
            let (manager, token) = (manager.clone(), login.token.clone());
            async move { manager.validate(&token, Scope::Game).await }
        });
        store.held_validation_has_read().await;
        assert!(manager.remove_by_token(&login.token).await.unwrap());
        store.release();
        // The racing request read the session while it was live ...
        assert!(matches!(
            racing.await.unwrap().unwrap(),
            Validation::Valid(_)
        ));
        // ... and the next one is not served that outcome from the cache.
        store.take_calls();
        assert_eq!(
            manager.validate(&login.token, Scope::Game).await.unwrap(),
            Validation::Unknown
        );
        assert_eq!(store.take_calls(), ["validate(game)"]);
    }
}
