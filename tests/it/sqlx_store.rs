//! `SqlxStore` (feature `sqlx`) on real PostgreSQL, beyond the conformance suite (which
//! tests/it/conformance.rs runs on it): both stores on one database, the migrations and the
//! schema check they share, decode errors, the statement timeout, and one HTTP round through
//! the layer.

use crate::common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::app::{bearer, login, router, send};
use common::{Backend, CONNECT_TIMEOUT, PgFixture, TestDb, database_url};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tower_session_auth::store::{
    AppSchema, CharacterSelection, Scope, SqlxStore, StoreError, UserIdType, Validation,
};
use tower_session_auth::test_util::conformance::Fixture;
use tower_session_auth::{
    ClientInfo, LoginOptions, PgStore, Refresh, RefreshConfig, SessionConfig, SessionManager,
    UserId,
};

/// A sqlx pool on the test schema `schema`: its connections' `search_path` is the schema, as
/// the deadpool pools of the other tests have it.
pub fn sqlx_pool(schema: &str, max_connections: u32) -> PgPool {
    let options: PgConnectOptions = database_url()
        .parse()
        .expect("DATABASE_URL is not a valid URL");
    PgPoolOptions::new()
        .max_connections(max_connections)
        // A bound on hanging (SCRAM in an unoptimised build can be slow), not on speed.
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_lazy_with(options.options([("search_path", schema)]))
}

/// The conformance suite's fixture on `SqlxStore`: [`PgFixture`]'s schema (the crate's
/// migrations, the application's tables, the suite's users and characters), read and written
/// through a sqlx pool.
pub struct SqlxFixture {
    store: SqlxStore,
    pg: PgFixture,
}

impl SqlxFixture {
    pub async fn new() -> Self {
        let pg = PgFixture::new().await;
        let store = SqlxStore::new(sqlx_pool(&pg.0.schema, 8));
        Self { store, pg }
    }

    /// The fixture with users keyed by `user_ids` ([`common::user_key`]), and a store
    /// configured so.
    pub async fn keyed(user_ids: UserIdType) -> Self {
        let pg = PgFixture::keyed(user_ids).await;
        let mut app = AppSchema::default();
        app.user_id_type = user_ids;
        let store =
            SqlxStore::with_schema(sqlx_pool(&pg.0.schema, 8), app).expect("a valid AppSchema");
        Self { store, pg }
    }

    /// The fixture with the crate's tables in a schema of their own, out of the search path
    /// (`SqlxStore::tables_schema`).
    pub async fn in_tables_schema() -> Self {
        let pg = PgFixture::in_tables_schema().await;
        let store = SqlxStore::new(sqlx_pool(&pg.0.schema, 8))
            .tables_schema(&pg.0.tables_schema("auth"))
            .expect("a plain schema name");
        Self { store, pg }
    }
}

#[async_trait::async_trait]
impl Fixture for SqlxFixture {
    type Store = SqlxStore;

    fn store(&self) -> SqlxStore {
        self.store.clone()
    }

    fn user_id(&self, user: i64) -> UserId {
        self.pg.user_id(user)
    }

    async fn set_role(&self, user_id: i64, role: Option<&str>) {
        self.pg.set_role(user_id, role).await
    }

    async fn set_active(&self, user_id: i64, active: bool) {
        self.pg.set_active(user_id, active).await
    }

    async fn delete_user(&self, user_id: i64) {
        self.pg.delete_user(user_id).await
    }

    async fn set_character_world(&self, character_id: i64, world_id: Option<&str>) {
        self.pg.set_character_world(character_id, world_id).await
    }

    async fn delete_character(&self, character_id: i64) {
        self.pg.delete_character(character_id).await
    }

    async fn stored_sessions(&self) -> u64 {
        self.pg.stored_sessions().await
    }
}

/// The seeded PostgreSQL backend of a test, its `PgStore`, and a `SqlxStore` on the same schema.
async fn both_stores() -> (Arc<TestDb>, SqlxStore) {
    let Backend::Pg(db) = Backend::pg().await else {
        unreachable!("Backend::pg is on PostgreSQL")
    };
    let sqlx = SqlxStore::new(sqlx_pool(&db.schema, 4));
    (db, sqlx)
}

/// A manager on each store, alike: without a grace window, so that a second use of a
/// remember-me secret is a reuse at once.
fn managers(db: &TestDb, sqlx: &SqlxStore) -> (SessionManager, SessionManager) {
    let config = SessionConfig::default().refresh(RefreshConfig::default().grace(Duration::ZERO));
    (
        SessionManager::new(db.store.clone(), config.clone()),
        SessionManager::new(sqlx.clone(), config),
    )
}

/// A database served by both stores at once (a move from one to the other, two services):
/// what one writes, the other reads, revokes and refreshes, row for row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_stores_serve_one_database() {
    let (db, sqlx) = both_stores().await;
    let (on_pg, on_sqlx) = managers(&db, &sqlx);
    let (pg_app, sqlx_app) = (router(on_pg.clone()), router(on_sqlx.clone()));

    // A session created by each store validates through the other.
    let (pg_token, _, _) = login(&pg_app, 1).await;
    let (sqlx_token, _, _) = login(&sqlx_app, 2).await;
    for (app, token, username) in [
        (&sqlx_app, &pg_token, "player"),
        (&pg_app, &sqlx_token, "builder"),
    ] {
        let reply = send(app, bearer("/me", token)).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_eq!(reply.body["username"], username);
    }

    // A character bound by one is the other's game view; the records (address included)
    // read the same through both.
    let address = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
    let client = ClientInfo::default()
        .with_client_type("tui")
        .with_ip(address);
    let bound = on_sqlx
        .login(1, LoginOptions::new().client(client))
        .await
        .unwrap();
    assert!(matches!(
        on_sqlx
            .select_character(bound.session.id, 1, 11)
            .await
            .unwrap(),
        CharacterSelection::Selected(_)
    ));
    let reply = send(&pg_app, bearer("/game", bound.token.expose())).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["character_name"], "player_alt");
    assert_eq!(reply.body["world_id"], "daily_undertaking");
    let listed = on_sqlx.list_for_user(1).await.unwrap();
    assert_eq!(listed, on_pg.list_for_user(1).await.unwrap());
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].ip, Some(address));
    assert_eq!(listed[0].client_type, "tui");

    // A logout through one ends the session for the other.
    let reply = send(
        &sqlx_app,
        Request::post("/logout")
            .header("authorization", format!("Bearer {pg_token}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.body["removed"], true, "{:?}", reply.body);
    send(&pg_app, bearer("/me", &pg_token))
        .await
        .assert_invalid_session("logged out through the sqlx store");

    // A remember-me series started by one is refreshed by the other, which ends the series'
    // earlier session for both.
    let remembered = on_pg
        .login(3, LoginOptions::new().remember(true))
        .await
        .unwrap();
    let refresh = remembered.refresh.as_ref().expect("a refresh token");
    let Refresh::Refreshed(renewed) = on_sqlx
        .refresh(refresh, ClientInfo::default())
        .await
        .unwrap()
    else {
        panic!("the series started by PgStore refreshes through SqlxStore");
    };
    let reply = send(&pg_app, bearer("/me", renewed.token.expose())).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["username"], "admin");
    for app in [&pg_app, &sqlx_app] {
        send(app, bearer("/me", remembered.token.expose()))
            .await
            .assert_invalid_session("the series' earlier session");
    }
    // And the secret it used is spent for both: presenting it again (reuse) revokes the series.
    assert!(matches!(
        on_pg.refresh(refresh, ClientInfo::default()).await.unwrap(),
        Refresh::ReuseDetected
    ));
    send(&sqlx_app, bearer("/me", renewed.token.expose()))
        .await
        .assert_invalid_session("a session of a revoked series");
}

/// One migration protocol: a database migrated by either store is migrated for the other,
/// and both check the schema with the same words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_stores_share_the_migrations_and_the_schema_check() {
    let (db, sqlx) = both_stores().await;
    // The fixture's schema was migrated by PgStore: nothing left for SqlxStore.
    assert_eq!(sqlx.migrate().await.unwrap(), 0);
    sqlx.check_schema()
        .await
        .expect("the fixture's schema is right");

    // A schema of their own for the crate's tables: SqlxStore creates and migrates it, and
    // then PgStore has nothing to apply. Before, each store names what is missing.
    let tables = db.tables_schema("sqlx");
    let sqlx = sqlx.tables_schema(&tables).unwrap();
    let pg = PgStore::new(db.pool.clone())
        .tables_schema(&tables)
        .unwrap();
    let missing = |store: &str| {
        format!("application schema mismatch: schema {tables} not found (run {store}::migrate)")
    };
    assert_eq!(
        sqlx.check_schema().await.unwrap_err().to_string(),
        missing("SqlxStore")
    );
    assert_eq!(
        pg.check_schema().await.unwrap_err().to_string(),
        missing("PgStore")
    );
    let applied = sqlx.migrate().await.unwrap();
    assert!(applied > 0);
    assert_eq!(pg.migrate().await.unwrap(), 0);
    assert_eq!(sqlx.migrate().await.unwrap(), 0);
    let fresh = PgStore::new(db.pool.clone())
        .tables_schema(&db.tables_schema("pg"))
        .unwrap();
    assert_eq!(
        fresh.migrate().await.unwrap(),
        applied,
        "both stores apply every migration"
    );
    sqlx.check_schema().await.unwrap();
    pg.check_schema().await.unwrap();

    // The migrated schema serves both.
    let manager = SessionManager::new(sqlx.clone(), SessionConfig::default());
    let login = manager.login(1, LoginOptions::new()).await.unwrap();
    let on_pg = SessionManager::new(pg.clone(), SessionConfig::default());
    assert!(matches!(
        on_pg.validate(&login.token, Scope::User).await.unwrap(),
        Validation::Valid(_)
    ));

    // A mismatched application column: the same report from both.
    db.client()
        .await
        .batch_execute(
            "ALTER TABLE characters DROP CONSTRAINT characters_user_id_fkey; \
             ALTER TABLE users ALTER COLUMN id TYPE integer",
        )
        .await
        .unwrap();
    let problem = "application schema mismatch: users.id is integer, expected bigint";
    assert_eq!(sqlx.check_schema().await.unwrap_err().to_string(), problem);
    assert_eq!(pg.check_schema().await.unwrap_err().to_string(), problem);
}

/// A column that does not decode as the crate reads it fails the request closed, and the
/// error names the column and the type the store reads, as with `PgStore`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_that_does_not_decode_is_an_error_naming_it() {
    let cases = [
        (
            "ALTER TABLE users ALTER COLUMN is_active DROP DEFAULT; \
             ALTER TABLE users ALTER COLUMN is_active TYPE integer USING is_active::int",
            "column \"is_active\" does not decode as boolean",
        ),
        (
            "ALTER TABLE users ALTER COLUMN username DROP NOT NULL; \
             UPDATE users SET username = NULL WHERE id = 1",
            "column \"username\" does not decode as text",
        ),
    ];
    for (change, expected) in cases {
        let (db, sqlx) = both_stores().await;
        let manager = SessionManager::new(sqlx, SessionConfig::default());
        let login = manager.login(1, LoginOptions::new()).await.unwrap();
        db.client().await.batch_execute(change).await.expect(change);
        let error = manager
            .validate(&login.token, Scope::User)
            .await
            .expect_err(change);
        assert!(matches!(error, StoreError::Decode { .. }), "{error:?}");
        assert!(error.to_string().starts_with(expected), "{change}: {error}");
        let reply = send(&router(manager), bearer("/me", login.token.expose())).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(reply.detail(), "Session store unavailable");
    }
}

/// With `LOCK TABLE sessions` held by another transaction (a migration's `ALTER TABLE`), a
/// validation fails with `StoreError::Timeout` after the statement timeout instead of
/// waiting; its connection is closed, never handed out again, and its server process ends
/// once the lock is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_sessions_table_is_a_timeout_and_the_connection_is_closed() {
    const PATIENCE: Duration = Duration::from_secs(30);
    let (db, _) = both_stores().await;
    let statement_timeout = Duration::from_millis(500);
    let pool = sqlx_pool(&db.schema, 1);
    let store = SqlxStore::new(pool.clone()).statement_timeout(statement_timeout);
    let manager = SessionManager::new(store, SessionConfig::default());
    let login = manager.login(1, LoginOptions::new()).await.unwrap();
    let backend_pid = || async {
        sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let before = backend_pid().await;

    let mut locker = db.client().await;
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    for scope in [Scope::User, Scope::Game] {
        let outcome = tokio::time::timeout(PATIENCE, manager.validate(&login.token, scope))
            .await
            .expect("the statement timeout bounds the wait");
        match outcome {
            Err(StoreError::Timeout(bound)) => assert_eq!(bound, statement_timeout),
            other => panic!("expected a timeout, got {other:?}"),
        }
    }
    lock.rollback().await.unwrap();

    // The next validation runs on a new connection, and succeeds.
    assert!(matches!(
        manager.validate(&login.token, Scope::User).await.unwrap(),
        Validation::Valid(_)
    ));
    assert_ne!(
        backend_pid().await,
        before,
        "a connection whose statement timed out is never reused"
    );
    // The closed connection's server process is gone once the lock no longer holds it.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let alive: i64 = db
            .client()
            .await
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                &[&before],
            )
            .await
            .unwrap()
            .get(0);
        if alive == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the timed-out connection's backend {before} is still there"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The layer on `SqlxStore`: a login, an authenticated request, a logout, and the 401 after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_serves_requests_on_the_sqlx_store() {
    let (_db, sqlx) = both_stores().await;
    let app = router(SessionManager::new(sqlx, SessionConfig::default()));
    let (token, session_id, _) = login(&app, 1).await;
    let reply = send(&app, bearer("/me", &token)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["username"], "player");
    assert_eq!(reply.body["role"], "player");
    assert_eq!(reply.body["session_id"], session_id.as_str());
    let reply = send(
        &app,
        Request::post("/logout")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["removed"], true);
    send(&app, bearer("/me", &token))
        .await
        .assert_invalid_session("after logout");
}
