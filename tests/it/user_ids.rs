//! Users keyed by `integer`, `uuid` and `text` (every other test keys them by the default
//! `bigint`): the conformance suite on each store for each type, the typed extractors over
//! HTTP, the migration and schema check of the user id columns, the statement mode without
//! prepared statements, and the invalidation notices that name a user.

use crate::common;

use std::time::Duration;

use async_trait::async_trait;
use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use common::app::{bearer, send};
use common::{PgFixture, TestDb, user_key};
use serde_json::json;
use tower_session_auth::store::{AppSchema, StoreError, UserIdType};
use tower_session_auth::test_util::conformance::{self, Fixture};
use tower_session_auth::watch::{SessionEnd, WatchEvent};
use tower_session_auth::{
    AuthUser, GameUser, LoginOptions, MemoryStore, PgStore, RecentAuth, RequirePermission,
    SessionConfig, SessionLayer, SessionManager, UserId, permissions::ViewLogs,
};
use uuid::Uuid;

mod suite {
    use tower_session_auth::store::UserIdType;

    mod pg_integer {
        tower_session_auth::conformance_tests!(|| crate::common::PgFixture::keyed(
            super::UserIdType::Integer
        ));
    }

    mod pg_uuid {
        tower_session_auth::conformance_tests!(|| crate::common::PgFixture::keyed(
            super::UserIdType::Uuid
        ));
    }

    mod pg_text {
        tower_session_auth::conformance_tests!(|| crate::common::PgFixture::keyed(
            super::UserIdType::Text
        ));
    }

    #[cfg(feature = "sqlx")]
    mod sqlx_integer {
        tower_session_auth::conformance_tests!(|| crate::sqlx_store::SqlxFixture::keyed(
            super::UserIdType::Integer
        ));
    }

    #[cfg(feature = "sqlx")]
    mod sqlx_uuid {
        tower_session_auth::conformance_tests!(|| crate::sqlx_store::SqlxFixture::keyed(
            super::UserIdType::Uuid
        ));
    }

    #[cfg(feature = "sqlx")]
    mod sqlx_text {
        tower_session_auth::conformance_tests!(|| crate::sqlx_store::SqlxFixture::keyed(
            super::UserIdType::Text
        ));
    }

    mod memory_uuid {
        tower_session_auth::conformance_tests!(|| super::super::KeyedMemory::new(
            super::UserIdType::Uuid
        ));
    }
}

/// The in-memory store with the suite's users keyed by `user_key(ty, n)`.
struct KeyedMemory {
    store: MemoryStore,
    ty: UserIdType,
}

impl KeyedMemory {
    async fn new(ty: UserIdType) -> Self {
        let store = MemoryStore::new();
        for user in conformance::USERS {
            store.upsert_user(
                user_key(ty, user.id),
                user.username,
                user.role,
                user.is_active,
            );
        }
        for character in conformance::CHARACTERS {
            store.upsert_character(
                character.id,
                user_key(ty, character.user_id),
                character.name,
                character.world_id,
            );
        }
        Self { store, ty }
    }
}

#[async_trait]
impl Fixture for KeyedMemory {
    type Store = MemoryStore;

    fn store(&self) -> MemoryStore {
        self.store.clone()
    }

    fn user_id(&self, user: i64) -> UserId {
        user_key(self.ty, user)
    }

    async fn set_role(&self, user: i64, role: Option<&str>) {
        assert!(self.store.set_role(self.user_id(user), role));
    }

    async fn set_active(&self, user: i64, active: bool) {
        assert!(self.store.set_active(self.user_id(user), active));
    }

    async fn delete_user(&self, user: i64) {
        for (character, _) in self.store.characters_of(self.user_id(user)) {
            self.store.remove_character(character);
        }
        assert!(self.store.remove_user(self.user_id(user)));
    }

    async fn set_character_world(&self, character_id: i64, world_id: Option<&str>) {
        let owner = conformance::CHARACTERS
            .iter()
            .find(|character| character.id == character_id)
            .expect("a fixture character");
        self.store.upsert_character(
            character_id,
            self.user_id(owner.user_id),
            owner.name,
            world_id,
        );
    }

    async fn delete_character(&self, character_id: i64) {
        assert!(self.store.remove_character(character_id));
    }

    async fn stored_sessions(&self) -> u64 {
        self.store.len() as u64
    }
}

/// Routes that read the user id typed as `Id`, behind the layer.
fn typed_routes<Id>(manager: SessionManager) -> Router
where
    Id: tower_session_auth::FromUserId + serde::Serialize + Send + Sync + 'static,
{
    Router::new()
        .route(
            "/me",
            get(|user: AuthUser<Id>| async move { Json(json!({"id": user.user_id})) }),
        )
        .route(
            "/game",
            get(|user: GameUser<Id>| async move {
                Json(json!({"id": user.user_id, "character": user.character_name}))
            }),
        )
        .route(
            "/logs",
            get(
                |RequirePermission(user, ..): RequirePermission<ViewLogs, Id>| async move {
                    Json(json!({"id": user.user_id}))
                },
            ),
        )
        .route(
            "/sudo",
            get(|RecentAuth(user): RecentAuth<AuthUser<Id>>| async move {
                Json(json!({"id": user.user_id}))
            }),
        )
        .layer(SessionLayer::new(manager))
}

/// A uuid-keyed application reads its users' ids as `Uuid` in every extractor; a handler
/// that asks for another type fails closed with a 500, never a 401 or an anonymous pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extractors_carry_the_typed_id() {
    let fixture = PgFixture::keyed(UserIdType::Uuid).await;
    let manager = SessionManager::new(fixture.store(), SessionConfig::default());
    let admin = Uuid::from_u128(3);
    let login = manager.login(admin, LoginOptions::new()).await.unwrap();
    manager
        .select_character(login.session.id, admin, 30)
        .await
        .unwrap();
    let token = login.token.expose();

    let app = typed_routes::<Uuid>(manager.clone());
    for (path, extra) in [
        ("/me", json!({})),
        ("/game", json!({"character": "admin_char"})),
        ("/logs", json!({})),
        ("/sudo", json!({})),
    ] {
        let reply = send(&app, bearer(path, token)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {:?}", reply.body);
        assert_eq!(reply.body["id"], json!(admin.to_string()), "{path}");
        for (key, value) in extra.as_object().unwrap() {
            assert_eq!(&reply.body[key], value, "{path}");
        }
    }

    // The same routes typed `i64` (the default) in front of uuid ids: a configuration error.
    let wrong = typed_routes::<i64>(manager.clone());
    for path in ["/me", "/game", "/logs", "/sudo"] {
        let reply = send(&wrong, bearer(path, token)).await;
        assert_eq!(
            reply.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{path}: {:?}",
            reply.body
        );
        assert_eq!(reply.detail(), "Session user id type mismatch", "{path}");
    }
    // An unauthenticated request is still a 401 there: the type is checked on a live session.
    let reply = send(&wrong, bearer("/me", "not-a-token")).await;
    reply.assert_invalid_session("no session");

    // `UserId` itself reads any type.
    let any = typed_routes::<UserId>(manager);
    let reply = send(&any, bearer("/me", token)).await;
    assert_eq!(reply.body["id"], json!(admin.to_string()));
}

/// `integer` keys read as `i64` (the default `AuthUser`) or `i32`; text keys as `String`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integer_and_text_ids_read_as_their_types() {
    let integer = PgFixture::keyed(UserIdType::Integer).await;
    let manager = SessionManager::new(integer.store(), SessionConfig::default());
    let token = manager.login(1, LoginOptions::new()).await.unwrap().token;
    for app in [
        typed_routes::<i64>(manager.clone()),
        typed_routes::<i32>(manager.clone()),
    ] {
        let reply = send(&app, bearer("/me", token.expose())).await;
        assert_eq!(reply.body, json!({"id": 1}));
    }

    let text = PgFixture::keyed(UserIdType::Text).await;
    let manager = SessionManager::new(text.store(), SessionConfig::default());
    let token = manager
        .login("user-2", LoginOptions::new())
        .await
        .unwrap()
        .token;
    let reply = send(
        &typed_routes::<String>(manager),
        bearer("/me", token.expose()),
    )
    .await;
    assert_eq!(reply.body, json!({"id": "user-2"}));
}

/// A login with an id the columns cannot hold (another kind, or an integer beyond `integer`)
/// fails with a store error naming the mismatch, and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_of_another_type_is_refused_and_writes_nothing() {
    let uuid_keys = PgFixture::keyed(UserIdType::Uuid).await;
    let integer_keys = PgFixture::keyed(UserIdType::Integer).await;
    for (fixture, id, expected) in [
        (
            &uuid_keys,
            UserId::Int(1),
            "user id 1 does not fit a column of type uuid",
        ),
        (
            &integer_keys,
            UserId::Int(i64::from(i32::MAX) + 1),
            "user id 2147483648 does not fit a column of type int4",
        ),
        (
            &integer_keys,
            UserId::from("1"),
            "user id 1 does not fit a column of type int4",
        ),
    ] {
        let manager = SessionManager::new(
            fixture.store(),
            SessionConfig::default().max_sessions_per_user(Some(3)),
        );
        let error = manager
            .login(id.clone(), LoginOptions::new())
            .await
            .unwrap_err();
        assert!(error.to_string().contains(expected), "{id:?}: {error}");
        assert_eq!(fixture.stored_sessions().await, 0);
        assert!(manager.list_for_user(id.clone()).await.is_err());
    }
}

/// A store configured for uuid keys without prepared statements (the PgBouncer mode) declares
/// the user id parameters as `uuid`: every statement that takes one works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnamed_statements_declare_the_id_type() {
    let fixture = PgFixture::keyed(UserIdType::Uuid).await;
    let store = fixture.store().prepared_statements(false);
    let manager = SessionManager::new(
        store,
        SessionConfig::default().max_sessions_per_user(Some(2)),
    );
    let player = Uuid::from_u128(1);
    let first = manager
        .login(player, LoginOptions::new().remember(true))
        .await
        .unwrap();
    let second = manager.login(player, LoginOptions::new()).await.unwrap();
    let third = manager.login(player, LoginOptions::new()).await.unwrap();
    let listed: Vec<_> = manager
        .list_for_user(player)
        .await
        .unwrap()
        .iter()
        .map(|session| session.id)
        .collect();
    assert_eq!(listed, [third.session.id, second.session.id]);
    assert!(listed.iter().all(|id| *id != first.session.id));
    assert_eq!(
        manager
            .select_character(third.session.id, player, 10)
            .await
            .unwrap(),
        tower_session_auth::store::CharacterSelection::Selected(
            tower_session_auth::store::CharacterRecord::new(
                "player_char",
                Some("pipeworks_web".into())
            )
        )
    );
    assert!(
        !manager
            .revoke(Uuid::from_u128(2), second.session.id)
            .await
            .unwrap()
    );
    assert!(manager.revoke(player, second.session.id).await.unwrap());
    assert_eq!(
        manager
            .revoke_others(player, third.session.id)
            .await
            .unwrap(),
        0
    );
    assert_eq!(manager.revoke_all(player).await.unwrap(), 1);
    assert_eq!(fixture.stored_sessions().await, 0);
}

/// The invalidation triggers name a user by the id's text: a watch on a uuid or text user's
/// session ends when the application deactivates or deletes that user, and only theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_reach_the_watches_of_uuid_and_text_users() {
    for ty in [UserIdType::Uuid, UserIdType::Text] {
        let fixture = PgFixture::keyed(ty).await;
        let store = fixture.store();
        store.install_invalidation_triggers().await.unwrap();
        let manager = SessionManager::new(store.clone(), SessionConfig::default());
        let listener =
            store.spawn_session_listener(common::database_url().parse().unwrap(), manager.clone());
        tokio::time::timeout(Duration::from_secs(10), async {
            while !manager.is_listening() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the listener connects");
        let mut watches = Vec::new();
        for user in [1, 2] {
            let login = manager
                .login(user_key(ty, user), LoginOptions::new())
                .await
                .unwrap();
            watches.push(
                manager
                    .watch(&login.token)
                    .await
                    .unwrap()
                    .expect("a live session"),
            );
        }
        fixture.set_active(1, false).await;
        let ended = tokio::time::timeout(Duration::from_secs(10), watches[0].next())
            .await
            .expect("the deactivation ends the watch within the bound");
        assert_eq!(ended, WatchEvent::Ended(SessionEnd::UserInvalid), "{ty:?}");
        // The other user's watch hears nothing.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), watches[1].next())
                .await
                .is_err(),
            "{ty:?}"
        );
        listener.abort();
    }
}

/// `migrate` gives the crate's user id columns the configured type while their tables are
/// empty; with rows in them it refuses, naming the table, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_sets_the_id_columns_only_while_empty() {
    let db = TestDb::keyed(UserIdType::Uuid).await;
    let column_types = || async {
        let rows = db
            .client()
            .await
            .query(
                "SELECT format_type(atttypid, NULL) FROM pg_attribute \
                 WHERE attname = 'user_id' AND attrelid IN ('sessions'::regclass, \
                 'refresh_series'::regclass) ORDER BY attrelid::regclass::text",
                &[],
            )
            .await
            .unwrap();
        rows.iter().map(|row| row.get(0)).collect::<Vec<String>>()
    };
    assert_eq!(column_types().await, ["uuid", "uuid"]);
    db.store.check_schema().await.unwrap();
    assert_eq!(db.store.migrate().await.unwrap(), 0, "idempotent");

    // The same database, now with a session, and a store configured for `text` ids.
    let manager = SessionManager::new(db.store.clone(), SessionConfig::default());
    manager
        .login(Uuid::from_u128(1), LoginOptions::new())
        .await
        .unwrap();
    let mut app = AppSchema::default();
    app.user_id_type = UserIdType::Text;
    let text_store = PgStore::with_schema(db.pool.clone(), app).unwrap();
    let error = text_store.migrate().await.unwrap_err();
    assert!(
        matches!(error, StoreError::Migration { version: 0, .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(
            "sessions.user_id is uuid, not text as the store is configured, and the table holds rows"
        ),
        "{error}"
    );
    assert_eq!(column_types().await, ["uuid", "uuid"]);
    // The schema check names every column that disagrees with the configuration.
    let error = text_store.check_schema().await.unwrap_err().to_string();
    for mismatch in [
        "users.id is uuid, expected text",
        "characters.user_id is uuid, expected text",
        "sessions.user_id is uuid, expected text",
        "refresh_series.user_id is uuid, expected text",
    ] {
        assert!(error.contains(mismatch), "{mismatch}: {error}");
    }
    // A store left at the default `bigint` on a uuid-keyed application is told so too.
    let default_store = PgStore::new(db.pool.clone());
    let error = default_store.check_schema().await.unwrap_err().to_string();
    assert!(
        error.contains("users.id is uuid, expected bigint"),
        "{error}"
    );
}

/// A notice is shorter than 8000 bytes, and text ids are not: the application's write that
/// fires the trigger (deactivating or deleting the user, moving their character) must not fail
/// for it, or that user could not be deactivated. Such a notice means every session: the
/// user's watch still ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_id_too_long_for_a_notice_does_not_block_the_applications_writes() {
    let fixture = PgFixture::keyed(UserIdType::Text).await;
    let store = fixture.store();
    store.install_invalidation_triggers().await.unwrap();
    // Compressible, so the users key's index takes it; 8000 bytes with `user:` in front.
    let long = "x".repeat(7995);
    fixture
        .0
        .execute(
            "INSERT INTO users (id, username, role) VALUES ($1, 'long', 'player')",
            &[&long],
        )
        .await;
    fixture
        .0
        .execute(
            "INSERT INTO characters (id, user_id, name, world_id) VALUES (99, $1, 'c', 'w')",
            &[&long],
        )
        .await;
    let manager = SessionManager::new(store.clone(), SessionConfig::default());
    let listener =
        store.spawn_session_listener(common::database_url().parse().unwrap(), manager.clone());
    tokio::time::timeout(Duration::from_secs(10), async {
        while !manager.is_listening() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the listener connects");
    let login = manager
        .login(long.as_str(), LoginOptions::new())
        .await
        .unwrap();
    let mut watch = manager
        .watch(&login.token)
        .await
        .unwrap()
        .expect("a live session");

    let client = fixture.0.client().await;
    for sql in [
        "UPDATE characters SET world_id = NULL WHERE id = 99",
        "UPDATE users SET is_active = false WHERE id = $1",
    ] {
        let params: &[&(dyn tokio_postgres::types::ToSql + Sync)] =
            if sql.contains("$1") { &[&long] } else { &[] };
        let updated = client.execute(sql, params).await.map_err(db_error);
        assert_eq!(updated, Ok(1), "{sql}");
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("the deactivation ends the watch within the bound");
    assert_eq!(ended, WatchEvent::Ended(SessionEnd::UserInvalid));
    for sql in [
        "DELETE FROM characters WHERE user_id = $1",
        "DELETE FROM users WHERE id = $1",
    ] {
        let deleted = client.execute(sql, &[&long]).await.map_err(db_error);
        assert_eq!(deleted, Ok(1), "{sql}");
    }
    listener.abort();
}

/// The server's message of a failed statement.
fn db_error(error: tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => error.to_string(),
    }
}

/// `migrate` decides that a table is empty under the lock of its type change: a session that a
/// running instance commits meanwhile makes it refuse, rather than convert the row (here the
/// text id ` 42`, which would become the integer 42: another user's session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_decides_emptiness_under_the_lock_of_the_change() {
    let db = TestDb::keyed(UserIdType::Text).await;
    // A running instance's login, not committed yet.
    let mut client = db.client().await;
    let login = client.transaction().await.unwrap();
    login
        .execute(
            "INSERT INTO sessions (id, token_hash, user_id, created_at, last_activity, \
             authenticated_at) VALUES (gen_random_uuid(), sha256('t'), ' 42', now(), now(), now())",
            &[],
        )
        .await
        .unwrap();
    let mut app = AppSchema::default();
    app.user_id_type = UserIdType::Integer;
    let integer_store = PgStore::with_schema(db.pool.clone(), app).unwrap();
    let migrate = tokio::spawn(async move { integer_store.migrate().await });
    let observer = db.client().await;
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let waiting: bool = observer
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks \
                     WHERE relation = 'sessions'::regclass AND NOT granted)",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if waiting {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the migration waits for the login's transaction");
    login.commit().await.unwrap();

    let outcome = migrate.await.unwrap();
    let error = outcome.expect_err("a table that holds a row is not converted");
    assert!(
        error.to_string().contains(
            "sessions.user_id is text, not integer as the store is configured, and the table \
             holds rows"
        ),
        "{error}"
    );
    let stored: String = observer
        .query_one("SELECT user_id FROM sessions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, " 42");
}

/// The invalidation triggers are installed at every start, and one of them names
/// `sessions.user_id`: a deployment that configures another id type while its tables are
/// still empty gets the change, with the trigger kept as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_changes_the_id_type_under_the_installed_triggers() {
    let db = TestDb::keyed(UserIdType::Text).await;
    // The first start forgot the configuration: `bigint` columns, and the triggers.
    let unconfigured = PgStore::new(db.pool.clone());
    unconfigured.migrate().await.unwrap();
    unconfigured.install_invalidation_triggers().await.unwrap();
    let client = db.client().await;
    let state = || async {
        let row = client
            .query_one(
                "SELECT format_type(atttypid, NULL), \
                 (SELECT array_agg(pg_get_triggerdef(oid) ORDER BY tgname) FROM pg_trigger \
                  WHERE tgrelid = 'sessions'::regclass AND NOT tgisinternal) \
                 FROM pg_attribute WHERE attrelid = 'sessions'::regclass AND attname = 'user_id'",
                &[],
            )
            .await
            .unwrap();
        (row.get::<_, String>(0), row.get::<_, Vec<String>>(1))
    };
    let (column, triggers) = state().await;
    assert_eq!(column, "bigint");
    assert_eq!(triggers.len(), 2, "{triggers:?}");

    // The next start, configured.
    assert_eq!(db.store.migrate().await.map_err(|e| e.to_string()), Ok(0));
    assert_eq!(state().await, ("text".to_owned(), triggers));
    db.store.check_schema().await.unwrap();
}

/// `SessionManager::invalidate_user` takes any id kind, and an application may hold its ids
/// as text (a uuid or a number from a path or a token): the cached validations of the user
/// the text names are dropped all the same, as a notice naming them would, and not those of
/// other users.
#[cfg(feature = "cache")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_user_reaches_the_cache_by_the_ids_text() {
    use tower_session_auth::cache::{CacheConfig, SessionCache};
    use tower_session_auth::store::{Scope, Validation};

    for (ty, as_text) in [
        (UserIdType::Uuid, Uuid::from_u128(3).to_string()),
        (UserIdType::BigInt, "3".to_owned()),
    ] {
        // No triggers: the role change is one that only `invalidate_user` reports.
        let fixture = PgFixture::keyed(ty).await;
        let cache = SessionCache::new(CacheConfig::default().ttl(Duration::from_secs(300)));
        let manager =
            SessionManager::new(fixture.store(), SessionConfig::default()).with_cache(cache);
        let role = |token: tower_session_auth::token::SessionToken| {
            let manager = manager.clone();
            async move {
                match manager.validate(&token, Scope::User).await.unwrap() {
                    Validation::Valid(view) => {
                        view.user.as_ref().and_then(|user| user.role.clone())
                    }
                    other => panic!("{other:?}"),
                }
            }
        };
        let admin = manager
            .login(user_key(ty, 3), LoginOptions::new())
            .await
            .unwrap()
            .token;
        let other = manager
            .login(user_key(ty, 4), LoginOptions::new())
            .await
            .unwrap()
            .token;
        assert_eq!(role(admin.clone()).await.as_deref(), Some("admin"));
        assert_eq!(role(other.clone()).await.as_deref(), Some("superuser"));
        fixture.set_role(3, Some("player")).await;
        fixture.set_role(4, Some("player")).await;
        assert_eq!(
            role(admin.clone()).await.as_deref(),
            Some("admin"),
            "cached"
        );

        manager.invalidate_user(as_text.as_str());
        assert_eq!(role(admin).await.as_deref(), Some("player"), "{ty:?}");
        assert_eq!(role(other).await.as_deref(), Some("superuser"), "{ty:?}");
    }
}
