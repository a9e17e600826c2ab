//! The store conformance suite of the `test-util` feature
//! (`tower_session_auth::test_util::conformance`), run against `MemoryStore` and `PgStore`
//! (real PostgreSQL, a schema per test); and, on both stores, what the layer and the
//! extractors make of the stores' answers over HTTP: status codes, texts and headers.

use crate::common;

/// One test per conformance check and store, named after the check.
mod suite {
    mod memory {
        tower_session_auth::conformance_tests!(
            tower_session_auth::test_util::conformance::memory_fixture
        );
    }

    mod pg {
        tower_session_auth::conformance_tests!(crate::common::PgFixture::new);
    }

    /// `PgStore` with its tables in a schema of their own (`PgStore::tables_schema`), out of
    /// the connections' search path.
    mod pg_tables_schema {
        tower_session_auth::conformance_tests!(crate::common::PgFixture::in_tables_schema);
    }

    /// `SqlxStore` (feature `sqlx`) on the same schema as `pg`'s fixture, through a sqlx pool.
    #[cfg(feature = "sqlx")]
    mod sqlx {
        tower_session_auth::conformance_tests!(crate::sqlx_store::SqlxFixture::new);
    }

    /// `SqlxStore` with its tables in a schema of their own (`SqlxStore::tables_schema`).
    #[cfg(feature = "sqlx")]
    mod sqlx_tables_schema {
        tower_session_auth::conformance_tests!(crate::sqlx_store::SqlxFixture::in_tables_schema);
    }

    /// A store with the core alone: its extensions' checks are ignored, as declared.
    mod core_only {
        tower_session_auth::conformance_tests!(
            super::core_only_fixture,
            without(remember, characters, admin)
        );
    }

    use async_trait::async_trait;
    use time::OffsetDateTime;
    use tower_session_auth::test_util::conformance::{
        self, Capability, Fixture, memory_fixture, remember, sessions,
    };
    use tower_session_auth::{
        MemoryStore, SessionId, UserId,
        store::{
            NewSession, PurgePosition, Purged, Scope, SessionRecord, SessionStore, SessionView,
            StoreError, TokenHash, Touch, Validation,
        },
    };

    /// `MemoryStore`'s core, without remember-me, characters or administration: what a custom
    /// store that implements only `SessionStore` offers. With `loses_touches`, it also breaks
    /// a guarantee: it never records activity.
    struct CoreOnly {
        inner: MemoryStore,
        loses_touches: bool,
    }

    #[async_trait]
    impl SessionStore for CoreOnly {
        async fn create(
            &self,
            new: NewSession,
            max_per_user: Option<u32>,
        ) -> Result<SessionRecord, StoreError> {
            self.inner.create(new, max_per_user).await
        }

        async fn validate(
            &self,
            token_hash: &TokenHash,
            now: OffsetDateTime,
            mut touch: Touch,
            scope: Scope,
        ) -> Result<Validation, StoreError> {
            if self.loses_touches {
                touch.due_before = OffsetDateTime::UNIX_EPOCH; // never due
            }
            self.inner.validate(token_hash, now, touch, scope).await
        }

        async fn lookup(
            &self,
            token_hash: &TokenHash,
            now: OffsetDateTime,
        ) -> Result<Option<SessionView>, StoreError> {
            self.inner.lookup(token_hash, now).await
        }

        async fn remove(
            &self,
            id: SessionId,
            owner: Option<&UserId>,
        ) -> Result<Option<UserId>, StoreError> {
            self.inner.remove(id, owner).await
        }

        async fn remove_by_token(
            &self,
            token_hash: &TokenHash,
        ) -> Result<Option<UserId>, StoreError> {
            self.inner.remove_by_token(token_hash).await
        }

        async fn remove_for_user(
            &self,
            user_id: &UserId,
            keep: Option<SessionId>,
        ) -> Result<u64, StoreError> {
            self.inner.remove_for_user(user_id, keep).await
        }

        async fn list_for_user(
            &self,
            user_id: &UserId,
            now: OffsetDateTime,
        ) -> Result<Vec<SessionRecord>, StoreError> {
            self.inner.list_for_user(user_id, now).await
        }

        async fn purge_expired(
            &self,
            now: OffsetDateTime,
            limit: u32,
            from: PurgePosition,
        ) -> Result<Purged, StoreError> {
            self.inner.purge_expired(now, limit, from).await
        }

        async fn reauthenticate(
            &self,
            id: SessionId,
            now: OffsetDateTime,
        ) -> Result<bool, StoreError> {
            self.inner.reauthenticate(id, now).await
        }
    }

    /// The fixture of [`CoreOnly`]: the users and characters are `MemoryStore`'s.
    struct CoreOnlyFixture {
        store: MemoryStore,
        loses_touches: bool,
    }

    #[async_trait]
    impl Fixture for CoreOnlyFixture {
        type Store = CoreOnly;

        fn store(&self) -> CoreOnly {
            CoreOnly {
                inner: self.store.clone(),
                loses_touches: self.loses_touches,
            }
        }

        async fn set_role(&self, user_id: i64, role: Option<&str>) {
            Fixture::set_role(&self.store, user_id, role).await
        }

        async fn set_active(&self, user_id: i64, active: bool) {
            Fixture::set_active(&self.store, user_id, active).await
        }

        async fn delete_user(&self, user_id: i64) {
            self.store.delete_user(user_id).await
        }

        async fn set_character_world(&self, character_id: i64, world_id: Option<&str>) {
            self.store.set_character_world(character_id, world_id).await
        }

        async fn delete_character(&self, character_id: i64) {
            self.store.delete_character(character_id).await
        }

        async fn stored_sessions(&self) -> u64 {
            self.store.stored_sessions().await
        }
    }

    async fn core_only_fixture() -> CoreOnlyFixture {
        CoreOnlyFixture {
            store: memory_fixture().await,
            loses_touches: false,
        }
    }

    /// A check of an extension the store lacks, undeclared, fails and says how to declare it.
    #[test]
    #[should_panic(
        expected = "conformance check `refresh_rotates_and_keeps_the_login_time` needs Remember, \
                    but the store's `SessionStore::remember()` returns None"
    )]
    fn an_undeclared_missing_extension_fails_by_name() {
        conformance::run_check(
            "refresh_rotates_and_keeps_the_login_time",
            Some(Capability::Remember),
            core_only_fixture,
            remember::refresh_rotates_and_keeps_the_login_time,
        );
    }

    /// Declaring an extension absent that the store offers fails, so that no check is
    /// skipped for a store that could run it.
    #[test]
    #[should_panic(expected = "declares the store without [\"remember\", \"admin\"]")]
    fn declaring_an_offered_extension_absent_fails() {
        conformance::check_declared_absent(
            memory_fixture,
            &[Capability::Remember, Capability::Admin],
        );
    }

    /// A store that breaks a guarantee fails the check of it.
    #[test]
    #[should_panic(expected = "assertion `left == right` failed")]
    fn a_store_that_never_records_activity_fails_touch_is_debounced() {
        let fixture = || async {
            CoreOnlyFixture {
                store: memory_fixture().await,
                loses_touches: true,
            }
        };
        conformance::run_check(
            "touch_is_debounced",
            None,
            fixture,
            sessions::touch_is_debounced,
        );
    }
}

use std::time::Duration;

use axum::http::StatusCode;
use common::app::{bearer, login, send};
use common::{Backend, Harness, harness};
use tower_session_auth::{
    LoginOptions, SessionConfig, SessionId, store::CharacterSelection, token::SessionToken,
};

const MINUTE: Duration = Duration::from_secs(60);

async fn login_token(h: &Harness, user_id: i64) -> (SessionToken, SessionId) {
    let login = h.manager.login(user_id, LoginOptions::new()).await.unwrap();
    (login.token, login.session.id)
}

async fn valid_session_resolves_the_user(backend: Backend) {
    let h = harness(backend, SessionConfig::default());
    let (token, session_id) = login_token(&h, 1).await;
    let reply = send(&h.app, bearer("/me", token.expose())).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["username"], "player");
    assert_eq!(reply.body["role"], "player");
    assert_eq!(reply.body["session_id"], session_id.to_string());
}

async fn invalid_token_is_401(backend: Backend) {
    let config = SessionConfig::default().idle_timeout(Some(30 * MINUTE));
    let h = harness(backend, config);
    let (expired, _) = login_token(&h, 1).await;
    h.clock.advance(31 * MINUTE);
    for token in [
        SessionToken::generate().expose().to_owned(),
        "garbage".to_owned(),
        expired.expose().to_owned(),
    ] {
        let reply = send(&h.app, bearer("/me", &token)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.detail(), "Invalid or expired session");
        assert_eq!(reply.headers["www-authenticate"], "Bearer");
        assert_eq!(reply.headers["content-type"], "application/json");
    }
    let reply = send(
        &h.app,
        axum::http::Request::get("/me")
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.detail(), "Invalid or expired session");
}

async fn missing_user_role_or_inactive_is_invalid_session_user(backend: Backend) {
    let h = harness(backend, SessionConfig::default());
    // Users 7 (no role), 8 (empty role) and 9 (inactive) are in the fixture; 6 is deleted.
    let (doomed, _) = login_token(&h, 6).await;
    h.backend.delete_user(6).await;
    let mut tokens = vec![doomed];
    for user in [7, 8, 9] {
        tokens.push(login_token(&h, user).await.0);
    }
    for token in tokens {
        let reply = send(&h.app, bearer("/me", token.expose())).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.detail(), "Invalid session user");
        assert_eq!(reply.headers["www-authenticate"], "Bearer");
        // Optional auth sees "nobody" rather than an error.
        let reply = send(&h.app, bearer("/optional", token.expose())).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.body["username"].is_null());
    }
}

async fn permissions_follow_the_policy(backend: Backend) {
    let h = harness(backend, SessionConfig::default());
    let (player, _) = login_token(&h, 1).await;
    let (builder, _) = login_token(&h, 2).await;
    let (admin, _) = login_token(&h, 3).await;
    let (superuser, _) = login_token(&h, 4).await;

    let reply = send(&h.app, bearer("/logs", admin.expose())).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, Some("admin"))
    );
    let reply = send(&h.app, bearer("/manage", player.expose())).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.detail(),
        "Insufficient permissions. Required: manage_users"
    );
    let reply = send(&h.app, bearer("/logs", builder.expose())).await;
    assert_eq!(
        reply.detail(),
        "Insufficient permissions. Required: view_logs"
    );
    let reply = send(&h.app, bearer("/manage", admin.expose())).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    for path in ["/logs", "/manage", "/admin-area"] {
        assert_eq!(
            send(&h.app, bearer(path, superuser.expose())).await.status,
            StatusCode::OK
        );
    }
    let reply = send(&h.app, bearer("/admin-area", builder.expose())).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.detail(),
        "Insufficient privileges. Minimum role required: admin"
    );
    assert_eq!(
        send(&h.app, bearer("/admin-area", admin.expose()))
            .await
            .status,
        StatusCode::OK
    );
    // No session at all is 401 before any permission is considered.
    let reply = send(&h.app, bearer("/logs", SessionToken::generate().expose())).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

async fn role_change_and_deactivation_apply_on_the_next_request(backend: Backend) {
    let h = harness(backend, SessionConfig::default());
    let (token, _) = login_token(&h, 1).await;
    assert_eq!(
        send(&h.app, bearer("/logs", token.expose())).await.status,
        StatusCode::FORBIDDEN
    );
    h.backend.set_role(1, Some("ADMIN")).await;
    assert_eq!(
        send(&h.app, bearer("/logs", token.expose())).await.status,
        StatusCode::OK
    );
    h.backend.set_active(1, false).await;
    let reply = send(&h.app, bearer("/logs", token.expose())).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.detail(), "Invalid session user");
}

async fn game_route_needs_an_explicit_character_selection(backend: Backend) {
    let h = harness(backend, SessionConfig::default());
    // The admin has exactly one character, and still must select it.
    let (token, session_id) = login_token(&h, 3).await;
    let reply = send(&h.app, bearer("/game", token.expose())).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(
        reply.detail(),
        "No character selected for session. Select a character first."
    );
    let selected = h.manager.select_character(session_id, 3, 30).await.unwrap();
    let CharacterSelection::Selected(character) = selected else {
        panic!("selection failed: {selected:?}")
    };
    assert_eq!(character.name, "admin_char");
    assert_eq!(character.world_id.as_deref(), Some("pipeworks_web"));
    let reply = send(&h.app, bearer("/game", token.expose())).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["character_name"], "admin_char");
    assert_eq!(reply.body["world_id"], "pipeworks_web");
    assert_eq!(reply.body["character_id"], 30);
}

async fn missing_character_or_world_is_409(backend: Backend) {
    let h = harness(backend, SessionConfig::default());
    let (token, session_id) = login_token(&h, 1).await;
    h.manager.select_character(session_id, 1, 11).await.unwrap();
    h.backend
        .set_character_world(11, 1, "player_alt", None)
        .await;
    let reply = send(&h.app, bearer("/game", token.expose())).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.detail(), "Character world not found");
    h.backend.delete_character(11).await;
    let reply = send(&h.app, bearer("/game", token.expose())).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.detail(), "Selected character not found");
    // Account routes keep working.
    assert_eq!(
        send(&h.app, bearer("/me", token.expose())).await.status,
        StatusCode::OK
    );
}

async fn logout_removes_the_session(backend: Backend) {
    let h = harness(backend, SessionConfig::default());
    let (token, _, _) = login(&h.app, 1).await;
    let reply = send(&h.app, {
        let mut r = bearer("/logout", &token);
        *r.method_mut() = http::Method::POST;
        r
    })
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["removed"], true);
    // Authenticated by header: no cookie is set or cleared.
    assert!(reply.set_cookies().is_empty());
    assert_eq!(
        send(&h.app, bearer("/me", &token)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// Settings that used to panic at request time (an overflowing expiry, a cookie that is not a
/// valid header, a `__Host-` cookie without `Secure`) are refused when the manager is built;
/// a zero sweep interval is refused; an enormous activity window counts every live session.
async fn configuration_that_could_panic_is_refused_when_built(backend: Backend) {
    use tower_session_auth::{CookieConfig, RefreshConfig, SessionManager};

    let store = match &backend {
        Backend::Pg(db) => SessionManager::try_new(db.store.clone(), SessionConfig::default()),
        Backend::Memory(store) => SessionManager::try_new(store.clone(), SessionConfig::default()),
    };
    assert!(store.is_ok());
    let refused: [(SessionConfig, &str); 9] = [
        (
            SessionConfig::default().idle_timeout(Some(Duration::MAX)),
            "idle_timeout",
        ),
        (
            SessionConfig::default().absolute_lifetime(Some(Duration::from_secs(u64::MAX / 2))),
            "absolute_lifetime",
        ),
        (
            SessionConfig::default().touch_interval(Duration::MAX),
            "touch_interval",
        ),
        (
            SessionConfig::default().refresh(RefreshConfig::default().grace(Duration::MAX)),
            "refresh.grace",
        ),
        (
            SessionConfig::default()
                .refresh(RefreshConfig::default().idle_timeout(Some(Duration::MAX))),
            "refresh.idle_timeout",
        ),
        (
            SessionConfig::default().cookie(CookieConfig::default().name("id; Domain=evil")),
            "cookie.name",
        ),
        (
            SessionConfig::default().cookie(CookieConfig::default().path("/\n")),
            "cookie.path",
        ),
        (
            SessionConfig::default()
                .cookie(CookieConfig::default().host_prefix(true).secure(false)),
            "cookie.secure",
        ),
        (
            SessionConfig::default().cookie(CookieConfig::default().host_prefix(true).path("/app")),
            "cookie.path",
        ),
    ];
    for (config, field) in refused {
        let built = match &backend {
            Backend::Pg(db) => SessionManager::try_new(db.store.clone(), config),
            Backend::Memory(store) => SessionManager::try_new(store.clone(), config),
        };
        assert_eq!(built.map(|_| ()).unwrap_err().field, field);
    }

    let h = harness(backend, SessionConfig::default());
    assert!(h.manager.spawn_sweeper(Duration::ZERO).is_err());
    login_token(&h, 1).await;
    assert_eq!(
        h.manager.count_active(Some(Duration::MAX)).await.unwrap(),
        1
    );
}

both_stores!(
    valid_session_resolves_the_user,
    invalid_token_is_401,
    missing_user_role_or_inactive_is_invalid_session_user,
    permissions_follow_the_policy,
    role_change_and_deactivation_apply_on_the_next_request,
    game_route_needs_an_explicit_character_selection,
    missing_character_or_world_is_409,
    logout_removes_the_session,
    configuration_that_could_panic_is_refused_when_built,
);
