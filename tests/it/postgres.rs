//! Properties only the PostgreSQL store can show: the database never holds a token, a store
//! failure is a fast 500, migrations are idempotent, sessions survive a restart, a touch never
//! resurrects a deleted session, the touched columns stay unindexed (HOT updates), and each
//! request sends one validating statement that reads only what its extractors need.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use common::app::{bearer, login, router, routes, send};
use common::store::InstrumentedStore;
use common::{Backend, TestDb, pool_for_schema};
use tower_session_auth::{
    AuthUser, GameUser, LoginOptions, PgStore, SessionConfig, SessionId, SessionLayer,
    SessionManager, store::Scope, store::Validation, test_util::ManualClock, token::SessionToken,
};

fn pg(backend: &Backend) -> &TestDb {
    match backend {
        Backend::Pg(db) => db,
        Backend::Memory(_) => unreachable!(),
    }
}

#[tokio::test]
async fn the_database_never_holds_a_token() {
    let backend = Backend::pg().await;
    let manager = backend.manager(SessionConfig::default(), Arc::new(ManualClock::default()));
    let app = router(manager);
    let (token, _, _) = login(&app, 1).await;
    let db = pg(&backend);
    let client = db.client().await;
    let rows = client
        .query("SELECT row_to_json(s)::text FROM sessions s", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let dump: String = rows[0].get(0);
    assert!(
        !dump.contains(&token),
        "a session row contains the token: {dump}"
    );
    // What is stored is SHA-256 of the token text.
    let matches: bool = client
        .query_one(
            "SELECT token_hash = sha256(convert_to($1, 'UTF8')) FROM sessions",
            &[&token],
        )
        .await
        .unwrap()
        .get(0);
    assert!(matches);
}

#[tokio::test]
async fn store_failure_is_a_fast_500_and_plain_routes_keep_working() {
    // A pool pointing at a port where nothing listens: a real connection failure.
    let pool = pool_for_schema(
        "postgres://nobody:nothing@127.0.0.1:1/none",
        "public",
        2,
        Duration::from_millis(500),
    );
    let manager = SessionManager::new(PgStore::new(pool), SessionConfig::default());
    let app = router(manager);
    let token = SessionToken::generate();
    for path in ["/me", "/optional", "/game", "/logs"] {
        let reply = send(&app, bearer(path, token.expose())).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        assert_eq!(reply.detail(), "Session store unavailable");
        assert!(reply.set_cookies().is_empty());
        assert!(reply.headers.get("www-authenticate").is_none());
    }
    let cookie = format!("id={}", token.expose());
    let reply = send(&app, common::app::get_with("/me", ("cookie", &cookie))).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.set_cookies().is_empty(), "the cookie is left alone");
    let reply = send(&app, bearer("/plain", token.expose())).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn migrations_are_idempotent_and_safe_to_race() {
    let db = TestDb::new().await;
    assert_eq!(db.store.migrate().await.unwrap(), 0);
    // A fresh schema migrated by two instances at once.
    let url = common::database_url();
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    db.execute(&format!("CREATE SCHEMA {schema}"), &[]).await;
    let a = PgStore::new(pool_for_schema(&url, &schema, 2, Duration::from_secs(5)));
    let b = PgStore::new(pool_for_schema(&url, &schema, 2, Duration::from_secs(5)));
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    // Every migration applied once, by one of them.
    let applied: i64 = db
        .client()
        .await
        .query_one(
            &format!("SELECT count(*) FROM {schema}.tower_session_auth_migrations"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(applied >= 2);
    assert_eq!((ra.unwrap() + rb.unwrap()) as i64, applied);
    drop((a, b));
    db.execute(&format!("DROP SCHEMA {schema} CASCADE"), &[])
        .await;
}

#[tokio::test]
async fn sessions_survive_a_restart() {
    let backend = Backend::pg().await;
    let db = pg(&backend);
    let token = {
        let manager = SessionManager::new(db.store.clone(), SessionConfig::default());
        manager.login(1, LoginOptions::new()).await.unwrap().token
    };
    // A new pool and manager, as after a process restart.
    let pool = pool_for_schema(
        &common::database_url(),
        &db.schema,
        2,
        Duration::from_secs(5),
    );
    let manager = SessionManager::new(PgStore::new(pool), SessionConfig::default());
    let reply = send(&router(manager), bearer("/me", token.expose())).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["username"], "player");
}

#[tokio::test]
async fn a_touch_never_resurrects_a_session_deleted_meanwhile() {
    let backend = Backend::pg().await;
    let db = pg(&backend);
    let config = SessionConfig::default().touch_interval(Duration::ZERO);
    let manager = backend.manager(config, Arc::new(ManualClock::default()));
    let login = manager.login(1, LoginOptions::new()).await.unwrap();

    // A logout holds the row lock while a validation that wants to touch the row arrives.
    let mut logout_conn = db.client().await;
    let logout = logout_conn.transaction().await.unwrap();
    logout
        .execute("DELETE FROM sessions WHERE id = $1", &[&login.session.id.0])
        .await
        .unwrap();
    let validation = tokio::spawn({
        let manager = manager.clone();
        let token = login.token.clone();
        async move { manager.validate(&token, Scope::Game).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !validation.is_finished(),
        "the touch should wait for the row lock"
    );
    logout.commit().await.unwrap();
    validation.await.unwrap().unwrap();

    assert_eq!(db.session_rows().await, 0, "the session came back");
    assert_eq!(
        manager.validate(&login.token, Scope::Game).await.unwrap(),
        Validation::Unknown
    );
}

#[tokio::test]
async fn touched_columns_are_unindexed() {
    let db = TestDb::new().await;
    let definitions: Vec<String> = db
        .client()
        .await
        .query(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'sessions' AND schemaname = $1",
            &[&db.schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(definitions.iter().any(|d| d.contains("(token_hash)")));
    assert!(
        definitions
            .iter()
            .any(|d| d.contains("(user_id, created_at)"))
    );
    for column in ["last_activity", "expires_at", "world_id"] {
        assert!(
            definitions.iter().all(|d| !d.contains(column)),
            "{column} is indexed: {definitions:?}"
        );
    }
}

/// A request validates once, reading what its extractors need: `AuthUser` and the guards
/// built on it skip the character (`Scope::User`), `GameUser` reads it (`Scope::Game`), and a
/// handler that takes `GameUser` first serves its later `AuthUser` from the same statement.
/// Taking `AuthUser` first costs a second statement, and only when a character is selected.
#[tokio::test]
async fn a_request_validates_once_at_the_scope_its_extractors_need() {
    let backend = Backend::pg().await;
    let store = InstrumentedStore::new(pg(&backend).store.clone());
    let manager = SessionManager::new(store.clone(), SessionConfig::default());
    let app = routes()
        .route(
            "/game-then-user",
            get(|game: GameUser, user: AuthUser| async move {
                format!("{} {}", user.username, game.world_id)
            }),
        )
        .route(
            "/user-then-game",
            get(|user: AuthUser, game: GameUser| async move {
                format!("{} {}", user.username, game.world_id)
            }),
        )
        .layer(SessionLayer::new(manager.clone()));
    let (token, session_id, _) = login(&app, 1).await;
    store.take_calls();

    let user = "validate(user)";
    let game = "validate(game)";
    let check = async |path: &str, status: StatusCode, calls: &[&str]| {
        let reply = send(&app, bearer(path, &token)).await;
        assert_eq!(reply.status, status, "{path}: {:?}", reply.body);
        assert_eq!(store.take_calls(), calls, "{path}");
    };
    // No character selected: a second statement could not tell GameUser more.
    check("/me", StatusCode::OK, &[user]).await;
    check("/logs", StatusCode::FORBIDDEN, &[user]).await;
    check("/game", StatusCode::CONFLICT, &[game]).await;
    check("/user-then-game", StatusCode::CONFLICT, &[user]).await;

    let session_id: SessionId = session_id.parse().unwrap();
    manager.select_character(session_id, 1, 11).await.unwrap();
    store.take_calls();
    check("/me", StatusCode::OK, &[user]).await;
    check("/game", StatusCode::OK, &[game]).await;
    check("/game-then-user", StatusCode::OK, &[game]).await;
    check("/user-then-game", StatusCode::OK, &[user, game]).await;
}

/// An application schema the store cannot read: `check_schema` names the mismatch, and a
/// request that meets it anyway answers `500 Session store unavailable` instead of panicking
/// (which would drop the client's connection).
#[tokio::test]
async fn application_columns_of_another_type_fail_closed_and_check_schema_names_them() {
    let cases: [(&str, Option<&str>); 3] = [
        (
            "ALTER TABLE characters DROP CONSTRAINT characters_user_id_fkey; \
             ALTER TABLE users ALTER COLUMN id TYPE text",
            Some("users.id is text, expected bigint"),
        ),
        (
            "ALTER TABLE users ALTER COLUMN is_active DROP DEFAULT; \
             ALTER TABLE users ALTER COLUMN is_active TYPE integer USING is_active::int",
            Some("users.is_active is integer, expected boolean"),
        ),
        // A NULL where the store needs a value: the schema is right, the row is not.
        (
            "ALTER TABLE users ALTER COLUMN username DROP NOT NULL; \
             UPDATE users SET username = NULL WHERE id = 1",
            None,
        ),
    ];
    for (change, problem) in cases {
        let backend = Backend::pg().await;
        let db = pg(&backend);
        db.store
            .check_schema()
            .await
            .expect("the demo schema is right");
        let manager = backend.manager(SessionConfig::default(), Arc::new(ManualClock::default()));
        let login = manager.login(1, LoginOptions::new()).await.unwrap();
        db.client().await.batch_execute(change).await.expect(change);
        match (db.store.check_schema().await, problem) {
            (Ok(()), None) => {}
            (Err(error), Some(problem)) => {
                assert_eq!(
                    error.to_string(),
                    format!("application schema mismatch: {problem}")
                );
            }
            (outcome, _) => panic!("{change}: check_schema gave {outcome:?}"),
        }
        let app = router(manager.clone());
        for path in ["/me", "/game", "/logs"] {
            let reply = send(&app, bearer(path, login.token.expose())).await;
            assert_eq!(
                reply.status,
                StatusCode::INTERNAL_SERVER_ERROR,
                "{change}, {path}: {:?}",
                reply.body
            );
            assert_eq!(reply.detail(), "Session store unavailable", "{change}");
        }
        // The error names the column and the type the store reads (or, for a key it cannot
        // join, the operator PostgreSQL lacks).
        let error = manager
            .validate(&login.token, Scope::User)
            .await
            .expect_err(change);
        let text = error.to_string();
        assert!(
            text.contains("operator does not exist: text = bigint")
                || text.starts_with("column \"is_active\" does not decode as boolean")
                || text.starts_with("column \"username\" does not decode as text"),
            "{change}: {text}"
        );
    }
    // A column that is not there, and a table that is not there.
    let backend = Backend::pg().await;
    let db = pg(&backend);
    db.client()
        .await
        .batch_execute("ALTER TABLE characters RENAME COLUMN world_id TO world")
        .await
        .unwrap();
    assert_eq!(
        db.store.check_schema().await.unwrap_err().to_string(),
        "application schema mismatch: column characters.world_id not found"
    );
    let store = PgStore::with_schema(db.pool.clone(), {
        let mut app = tower_session_auth::store::AppSchema::default();
        app.users_table = "accounts".to_owned();
        app
    })
    .unwrap();
    assert_eq!(
        store.check_schema().await.unwrap_err().to_string(),
        "application schema mismatch: table accounts not found; \
         column characters.world_id not found"
    );
}
