//! Shared test fixtures: a PostgreSQL schema per test, the demo users and characters, and one
//! `Backend` enum so that each conformance test runs unchanged on both stores.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tower_session_auth::{
    MemoryStore, PgStore, SessionConfig, SessionManager, UserId, store::AppSchema,
    store::UserIdType, test_util::ManualClock, test_util::conformance,
};

/// The database the tests use. Missing or unreachable is a loud failure, never a skip.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").expect(
        "DATABASE_URL is not set: run the tests with scripts/test, which brings up PostgreSQL",
    )
}

/// How long opening one connection may take: generous, since SCRAM authentication in an
/// unoptimised build on a loaded machine can take seconds when many connections open at once.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A pool on `url` whose connections use `schema` as their search_path.
pub fn pool_for_schema(url: &str, schema: &str, max_size: usize, wait: Duration) -> Pool {
    let config: tokio_postgres::Config = url.parse().expect("DATABASE_URL is not a valid URL");
    pool_on(config, schema, max_size, wait)
}

/// [`pool_for_schema`], and the schema is dropped when this pool (every clone of it) is gone.
fn owning_pool(url: &str, schema: &str, max_size: usize, wait: Duration) -> Pool {
    let guard = Arc::new(SchemaGuard {
        schema: schema.to_owned(),
    });
    let config: tokio_postgres::Config = url.parse().expect("DATABASE_URL is not a valid URL");
    pool_builder(config, schema, max_size, wait)
        .post_create(deadpool_postgres::Hook::sync_fn(move |_, _| {
            let _owned = &guard;
            Ok(())
        }))
        .build()
        .expect("pool")
}

/// A pool on `config` whose connections use `schema` as their search_path, recycled with
/// `RecyclingMethod::Fast` as `PgStore` documents, waiting at most `wait` for a connection.
pub fn pool_on(
    config: tokio_postgres::Config,
    schema: &str,
    max_size: usize,
    wait: Duration,
) -> Pool {
    pool_builder(config, schema, max_size, wait)
        .build()
        .expect("pool")
}

fn pool_builder(
    mut config: tokio_postgres::Config,
    schema: &str,
    max_size: usize,
    wait: Duration,
) -> deadpool_postgres::PoolBuilder {
    config.options(format!("-c search_path={schema}"));
    config.connect_timeout(CONNECT_TIMEOUT);
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(wait))
        .create_timeout(Some(CONNECT_TIMEOUT))
}

/// Opens every connection of `pool` one after the other, so that a test's load does not start
/// with a burst of connection set-ups.
pub async fn warm(pool: &Pool) {
    let mut held = Vec::new();
    for _ in 0..pool.status().max_size {
        held.push(pool.get().await.expect("opening a connection"));
    }
}

/// A schema of this test's own, with the crate's migrations and the demo tables. It is
/// dropped when the test is done with it: when its pool and every store on it are gone, with
/// every schema named `<schema>_<anything>` (where a test puts the crate's tables with
/// `PgStore::tables_schema`).
pub struct TestDb {
    /// The connections' search path: the application's tables, and by default the crate's.
    pub schema: String,
    pub pool: Pool,
    pub store: PgStore,
    /// The crate's `sessions` table as SQL names it: `sessions` in the search path, or
    /// `<tables_schema>.sessions`.
    pub sessions_table: String,
}

impl TestDb {
    pub async fn new() -> Self {
        Self::with_pool_size(8).await
    }

    pub async fn with_pool_size(max_size: usize) -> Self {
        Self::create(max_size, "", None).await
    }

    /// A test schema whose users are keyed by `user_ids` (the application's tables of
    /// [`APP_TABLES`] with that key type), and a store configured for it.
    pub async fn keyed(user_ids: UserIdType) -> Self {
        let mut app = AppSchema::default();
        app.user_id_type = user_ids;
        Self::create_with(8, &app_tables(user_ids), "", None, app).await
    }

    /// A test schema whose search path holds the application's tables and `app_sql`'s (run
    /// before the crate's migrations), and the crate's tables in the schema
    /// [`TestDb::tables_schema`] names.
    pub async fn in_tables_schema(app_sql: &str) -> Self {
        Self::create(8, app_sql, Some("auth")).await
    }

    /// The name of a schema of this test's own for the crate's tables: `<schema>_<suffix>`,
    /// dropped with the test's schema.
    pub fn tables_schema(&self, suffix: &str) -> String {
        format!("{}_{suffix}", self.schema)
    }

    async fn create(max_size: usize, app_sql: &str, tables_schema: Option<&str>) -> Self {
        Self::create_with(
            max_size,
            APP_TABLES,
            app_sql,
            tables_schema,
            AppSchema::default(),
        )
        .await
    }

    async fn create_with(
        max_size: usize,
        app_tables: &str,
        app_sql: &str,
        tables_schema: Option<&str>,
        app: AppSchema,
    ) -> Self {
        let url = database_url();
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at DATABASE_URL is unreachable: {e}"));
        tokio::spawn(connection);
        admin
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .expect("create schema");
        let pool = owning_pool(&url, &schema, max_size, Duration::from_secs(5));
        pool.get()
            .await
            .unwrap()
            .batch_execute(&format!("{app_tables} {app_sql}"))
            .await
            .expect("app tables");
        let store = PgStore::with_schema(pool.clone(), app).expect("a valid AppSchema");
        let (store, sessions_table) = match tables_schema {
            None => (store, "sessions".to_owned()),
            Some(suffix) => {
                let tables_schema = format!("{schema}_{suffix}");
                let store = store
                    .tables_schema(&tables_schema)
                    .expect("a plain schema name");
                (store, format!("{tables_schema}.sessions"))
            }
        };
        store.migrate().await.expect("migrate");
        Self {
            schema,
            pool,
            store,
            sessions_table,
        }
    }

    pub async fn client(&self) -> deadpool_postgres::Object {
        self.pool.get().await.expect("pool connection")
    }

    pub async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> u64 {
        self.client().await.execute(sql, params).await.expect(sql)
    }

    /// Counts rows of the sessions table.
    pub async fn session_rows(&self) -> i64 {
        self.client()
            .await
            .query_one(
                &format!("SELECT count(*) FROM {}", self.sessions_table),
                &[],
            )
            .await
            .unwrap()
            .get(0)
    }
}

/// Drops a test's schema, and the schemas `<schema>_<anything>` the test made for the crate's
/// tables, when the last pool on it is gone (the guard rides in the pool's hooks, so a test's
/// stores and managers keep the schema as long as they live).
struct SchemaGuard {
    schema: String,
}

impl Drop for SchemaGuard {
    /// A drop cannot await, and the test's runtime may be a current-thread one, so a thread
    /// of its own does the work. A lock still held (by a connection a failed test leaked)
    /// makes it give up after a few seconds and leave the schema behind, rather than hang.
    fn drop(&mut self) {
        let sql = format!(
            "SET lock_timeout = '5s'; DROP SCHEMA {} CASCADE",
            self.schema
        );
        if let Err(error) = execute_from_drop(sql) {
            eprintln!("test schema {} left behind: {error}", self.schema);
        }
    }
}

/// Runs `sql` on the test database from a `Drop`: a drop cannot await, and the test's runtime
/// may be a current-thread one, so a thread with a runtime of its own does the work.
pub fn execute_from_drop(sql: String) -> Result<(), tokio_postgres::Error> {
    let url = database_url();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            client.batch_execute(&sql).await
        })
    })
    .join()
    .expect("the drop thread")
}

/// The application's tables, as the original server's schema has them.
pub const APP_TABLES: &str = "
    CREATE TABLE users (id bigint PRIMARY KEY, username text NOT NULL UNIQUE, role text,
                        is_active boolean NOT NULL DEFAULT true);
    CREATE TABLE characters (id bigint PRIMARY KEY, user_id bigint NOT NULL REFERENCES users(id),
                             name text NOT NULL, world_id text);";

/// [`APP_TABLES`] with users keyed by `user_ids`.
pub fn app_tables(user_ids: UserIdType) -> String {
    APP_TABLES
        .replace(
            "id bigint PRIMARY KEY, username",
            &format!("id {} PRIMARY KEY, username", user_ids.sql()),
        )
        .replace(
            "user_id bigint NOT NULL",
            &format!("user_id {} NOT NULL", user_ids.sql()),
        )
}

/// An application's own `sessions` table (shaped like tower-sessions' PostgreSQL store's),
/// with a live and an expired row: what an application that adopts the crate may already have.
pub const APP_SESSIONS: &str = "
    CREATE TABLE sessions (id text PRIMARY KEY, data bytea NOT NULL,
                           expiry_date timestamptz NOT NULL);
    INSERT INTO sessions VALUES ('live', '\\x01', now() + interval '1 day'),
                                ('expired', '\\x02', now() - interval '1 day');";

/// Every row of the application's own `sessions` table ([`APP_SESSIONS`]), in the search
/// path of `db`'s connections, as text.
pub async fn app_sessions(db: &TestDb) -> Vec<String> {
    db.client()
        .await
        .query("SELECT s::text FROM sessions s ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// A store with the demo data, on PostgreSQL or in memory.
#[derive(Clone)]
pub enum Backend {
    Pg(Arc<TestDb>),
    Memory(MemoryStore),
}

impl Backend {
    pub async fn pg() -> Self {
        let backend = Self::Pg(Arc::new(TestDb::new().await));
        backend.seed().await;
        backend
    }

    /// [`Backend::pg`] with the crate's tables in a schema of their own
    /// ([`TestDb::in_tables_schema`]), out of the connections' search path.
    pub async fn pg_in_tables_schema(app_sql: &str) -> Self {
        let backend = Self::Pg(Arc::new(TestDb::in_tables_schema(app_sql).await));
        backend.seed().await;
        backend
    }

    pub async fn memory() -> Self {
        let backend = Self::Memory(MemoryStore::new());
        backend.seed().await;
        backend
    }

    /// The conformance suite's users and characters ([`conformance::USERS`],
    /// [`conformance::CHARACTERS`]): users 1..=4 with their roles, each with a character
    /// `<id>0` named `<name>_char` in `pipeworks_web`, the player's `player_alt` (11) in
    /// `daily_undertaking`, and users 6..=9 (one to delete, no role, an empty role, inactive).
    async fn seed(&self) {
        for user in conformance::USERS {
            self.add_user(user.id, user.username, user.role, user.is_active)
                .await;
        }
        for character in conformance::CHARACTERS {
            self.add_character(
                character.id,
                character.user_id,
                character.name,
                character.world_id,
            )
            .await;
        }
    }

    pub fn manager(&self, config: SessionConfig, clock: Arc<ManualClock>) -> SessionManager {
        match self {
            Self::Pg(db) => SessionManager::new(db.store.clone(), config),
            Self::Memory(store) => SessionManager::new(store.clone(), config),
        }
        .with_clock(clock)
    }

    pub async fn add_user(&self, id: i64, name: &str, role: Option<&str>, active: bool) {
        match self {
            Self::Pg(db) => {
                db.execute(
                    "INSERT INTO users (id, username, role, is_active) VALUES ($1, $2, $3, $4)",
                    &[&id, &name, &role, &active],
                )
                .await;
            }
            Self::Memory(store) => store.upsert_user(id, name, role, active),
        }
    }

    pub async fn add_character(&self, id: i64, user_id: i64, name: &str, world: Option<&str>) {
        match self {
            Self::Pg(db) => {
                db.execute(
                    "INSERT INTO characters (id, user_id, name, world_id) VALUES ($1, $2, $3, $4)",
                    &[&id, &user_id, &name, &world],
                )
                .await;
            }
            Self::Memory(store) => store.upsert_character(id, user_id, name, world),
        }
    }

    pub async fn set_role(&self, id: i64, role: Option<&str>) {
        match self {
            Self::Pg(db) => {
                db.execute("UPDATE users SET role = $2 WHERE id = $1", &[&id, &role])
                    .await;
            }
            Self::Memory(store) => assert!(store.set_role(id, role)),
        }
    }

    pub async fn set_active(&self, id: i64, active: bool) {
        match self {
            Self::Pg(db) => {
                db.execute(
                    "UPDATE users SET is_active = $2 WHERE id = $1",
                    &[&id, &active],
                )
                .await;
            }
            Self::Memory(store) => assert!(store.set_active(id, active)),
        }
    }

    pub async fn delete_user(&self, id: i64) {
        match self {
            Self::Pg(db) => {
                db.execute("DELETE FROM characters WHERE user_id = $1", &[&id])
                    .await;
                db.execute("DELETE FROM users WHERE id = $1", &[&id]).await;
            }
            Self::Memory(store) => {
                for (character, _) in store.characters_of(id) {
                    store.remove_character(character);
                }
                assert!(store.remove_user(id));
            }
        }
    }

    pub async fn delete_character(&self, id: i64) {
        match self {
            Self::Pg(db) => {
                db.execute("DELETE FROM characters WHERE id = $1", &[&id])
                    .await;
            }
            Self::Memory(store) => assert!(store.remove_character(id)),
        }
    }

    /// Rows in the store, expired or not.
    pub async fn stored_sessions(&self) -> u64 {
        match self {
            Self::Pg(db) => db.session_rows().await as u64,
            Self::Memory(store) => store.len() as u64,
        }
    }

    /// Moves a character to another world (as a game server would).
    pub async fn set_character_world(
        &self,
        id: i64,
        user_id: i64,
        name: &str,
        world: Option<&str>,
    ) {
        match self {
            Self::Pg(db) => {
                db.execute(
                    "UPDATE characters SET world_id = $2 WHERE id = $1",
                    &[&id, &world],
                )
                .await;
            }
            Self::Memory(store) => store.upsert_character(id, user_id, name, world),
        }
    }
}

/// The id the stores know fixture user `n` ([`conformance::FixtureUser::id`]) by, in a schema
/// whose users are keyed by `user_ids`: `n` itself for integer keys, a uuid made of `n`, or
/// the text `user-<n>`.
pub fn user_key(user_ids: UserIdType, n: i64) -> UserId {
    match user_ids {
        UserIdType::Uuid => UserId::from(uuid::Uuid::from_u128(n.unsigned_abs().into())),
        UserIdType::Text => UserId::from(format!("user-{n}")),
        _ => UserId::Int(n),
    }
}

/// The conformance suite's fixture on PostgreSQL: a schema of this test's own, with the
/// crate's migrations, the application's tables and the suite's users and characters, the
/// users keyed by the fixture's [`UserIdType`].
pub struct PgFixture(pub Arc<TestDb>, pub UserIdType);

impl PgFixture {
    pub async fn new() -> Self {
        Self::on(Backend::pg().await)
    }

    /// The fixture with the crate's tables in a schema of their own, out of the search path.
    pub async fn in_tables_schema() -> Self {
        Self::on(Backend::pg_in_tables_schema("").await)
    }

    /// The fixture with users keyed by `user_ids` ([`user_key`]), and a store configured so.
    pub async fn keyed(user_ids: UserIdType) -> Self {
        let fixture = Self(Arc::new(TestDb::keyed(user_ids).await), user_ids);
        for user in conformance::USERS {
            fixture
                .0
                .execute(
                    "INSERT INTO users (id, username, role, is_active) VALUES ($1, $2, $3, $4)",
                    &[
                        &user_key(user_ids, user.id),
                        &user.username,
                        &user.role,
                        &user.is_active,
                    ],
                )
                .await;
        }
        for character in conformance::CHARACTERS {
            fixture
                .0
                .execute(
                    "INSERT INTO characters (id, user_id, name, world_id) VALUES ($1, $2, $3, $4)",
                    &[
                        &character.id,
                        &user_key(user_ids, character.user_id),
                        &character.name,
                        &character.world_id,
                    ],
                )
                .await;
        }
        fixture
    }

    fn on(backend: Backend) -> Self {
        match backend {
            Backend::Pg(db) => Self(db, UserIdType::BigInt),
            Backend::Memory(_) => unreachable!("Backend::pg is on PostgreSQL"),
        }
    }
}

#[async_trait::async_trait]
impl conformance::Fixture for PgFixture {
    type Store = PgStore;

    fn store(&self) -> PgStore {
        self.0.store.clone()
    }

    fn user_id(&self, user: i64) -> UserId {
        user_key(self.1, user)
    }

    async fn set_role(&self, user: i64, role: Option<&str>) {
        let sql = "UPDATE users SET role = $2 WHERE id = $1";
        assert_eq!(self.0.execute(sql, &[&self.user_id(user), &role]).await, 1);
    }

    async fn set_active(&self, user: i64, active: bool) {
        let sql = "UPDATE users SET is_active = $2 WHERE id = $1";
        assert_eq!(
            self.0.execute(sql, &[&self.user_id(user), &active]).await,
            1
        );
    }

    async fn delete_user(&self, user: i64) {
        let id = self.user_id(user);
        self.0
            .execute("DELETE FROM characters WHERE user_id = $1", &[&id])
            .await;
        assert_eq!(
            self.0
                .execute("DELETE FROM users WHERE id = $1", &[&id])
                .await,
            1
        );
    }

    async fn set_character_world(&self, character_id: i64, world_id: Option<&str>) {
        let sql = "UPDATE characters SET world_id = $2 WHERE id = $1";
        assert_eq!(self.0.execute(sql, &[&character_id, &world_id]).await, 1);
    }

    async fn delete_character(&self, character_id: i64) {
        let sql = "DELETE FROM characters WHERE id = $1";
        assert_eq!(self.0.execute(sql, &[&character_id]).await, 1);
    }

    async fn stored_sessions(&self) -> u64 {
        self.0.session_rows().await as u64
    }
}

/// A store with the demo data, a manager on a hand-moved clock, and the test router.
pub struct Harness {
    pub backend: Backend,
    pub clock: Arc<ManualClock>,
    pub manager: SessionManager,
    pub app: axum::Router,
}

pub fn harness(backend: Backend, config: SessionConfig) -> Harness {
    let clock = Arc::new(ManualClock::default());
    let manager = backend.manager(config, clock.clone());
    let app = app::router(manager.clone());
    Harness {
        backend,
        clock,
        manager,
        app,
    }
}

/// Instantiates each listed `async fn(Backend)` test once per store.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod pg {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::pg().await).await
                }
            )*
        }
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::memory().await).await
                }
            )*
        }
    };
}

pub mod bouncer;
pub mod store;

pub mod app {
    //! A router with one route per extractor, for driving the layer with `oneshot`.
    use axum::body::Body;
    use axum::extract::Path;
    use axum::http::{Request, Response, StatusCode};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use http_body_util::BodyExt;
    use serde_json::{Value, json};
    use tower::ServiceExt;
    use tower_session_auth::permissions::{ManageUsers, ViewLogs};
    use tower_session_auth::roles::Admin;
    use tower_session_auth::{
        AuthUser, GameUser, LoginOptions, RequirePermission, RequireRole, Session, SessionLayer,
        SessionManager,
    };

    pub fn router(manager: SessionManager) -> Router {
        routes().layer(SessionLayer::new(manager))
    }

    /// The routes without the layer, to put a custom-configured layer in front.
    pub fn routes() -> Router {
        Router::new()
            .route("/plain", get(|| async { "ok" }))
            .route("/me", get(|user: AuthUser| async move { Json(json!({"username": user.username, "role": user.role, "session_id": user.session_id})) }))
            .route("/optional", get(|user: Option<AuthUser>| async move { Json(json!({"username": user.map(|u| u.username)})) }))
            .route("/game", get(|user: GameUser| async move { Json(json!({"character_name": user.character_name, "world_id": user.world_id, "character_id": user.character_id})) }))
            .route("/logs", get(|RequirePermission(user, ..): RequirePermission<ViewLogs>| async move { user.username }))
            .route("/manage", get(|RequirePermission(user, ..): RequirePermission<ManageUsers>| async move { user.username }))
            .route("/admin-area", get(|RequireRole(user, ..): RequireRole<Admin>| async move { user.username }))
            .route(
                "/login/{user_id}",
                post(|session: Session, Path(user_id): Path<i64>| async move {
                    let login = session.login(user_id, LoginOptions::new()).await.unwrap();
                    Json(json!({"token": login.token.expose(), "session_id": login.session.id}))
                }),
            )
            .route("/logout", post(|session: Session, _user: AuthUser| async move {
                Json(json!({"removed": session.logout().await.unwrap()}))
            }))
    }

    /// A finished response: status, headers, and the body as JSON (or a JSON string).
    pub struct Reply {
        pub status: StatusCode,
        pub headers: axum::http::HeaderMap,
        pub body: Value,
    }

    impl Reply {
        pub fn detail(&self) -> &str {
            self.body["detail"].as_str().unwrap_or_default()
        }

        /// The 401 every missing, malformed, unknown or ended session gets.
        pub fn assert_invalid_session(&self, label: &str) {
            assert_eq!(
                self.status,
                StatusCode::UNAUTHORIZED,
                "{label}: {:?}",
                self.body
            );
            assert_eq!(self.detail(), "Invalid or expired session", "{label}");
        }

        pub fn set_cookies(&self) -> Vec<String> {
            self.headers
                .get_all("set-cookie")
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect()
        }
    }

    pub async fn send(router: &Router, request: Request<Body>) -> Reply {
        let response: Response<Body> = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Reply {
            status,
            headers,
            body,
        }
    }

    pub fn get_with(path: &str, header: (&str, &str)) -> Request<Body> {
        Request::get(path)
            .header(header.0, header.1)
            .body(Body::empty())
            .unwrap()
    }

    pub fn bearer(path: &str, token: &str) -> Request<Body> {
        get_with(path, ("authorization", &format!("Bearer {token}")))
    }

    /// Logs `user_id` in through the router; returns (token, session id, reply).
    pub async fn login(router: &Router, user_id: i64) -> (String, String, Reply) {
        let reply = send(
            router,
            Request::post(format!("/login/{user_id}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "login failed: {:?}",
            reply.body
        );
        let token = reply.body["token"].as_str().unwrap().to_owned();
        let id = reply.body["session_id"].as_str().unwrap().to_owned();
        (token, id, reply)
    }
}

pub mod example {
    //! The `mud_server` example as a child process on an ephemeral port.
    use std::path::PathBuf;
    use std::process::Stdio;
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::process::{Child, Command};

    fn example_binary() -> PathBuf {
        let exe = std::env::current_exe().expect("test binary path");
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("target dir");
        let binary = profile_dir
            .join("examples")
            .join(format!("mud_server{}", std::env::consts::EXE_SUFFIX));
        assert!(
            binary.exists(),
            "{} is missing: run the suite with scripts/test (or cargo build --example mud_server)",
            binary.display()
        );
        binary
    }

    /// A running example server, killed on drop.
    pub struct Server {
        child: Child,
        pub base: String,
        /// Keeps the server's schema until the server is gone.
        _schema: Option<SchemaUrl>,
    }

    impl Server {
        pub async fn start(database_url: Option<&dyn ServerDatabase>) -> Self {
            Self::start_with(database_url, &[]).await
        }

        /// Starts the server with extra environment variables.
        pub async fn start_with(
            database_url: Option<&dyn ServerDatabase>,
            env: &[(&str, &str)],
        ) -> Self {
            let mut command = Command::new(example_binary());
            command
                .env("BIND_ADDR", "127.0.0.1:0")
                .env("RUST_LOG", "warn")
                // Reuse is detected at once, so the tests need not wait out a grace window.
                .env("REFRESH_GRACE_SECS", "0")
                .env_remove("DATABASE_URL")
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true);
            if let Some(url) = database_url {
                command.env("DATABASE_URL", url.url());
            }
            command.envs(env.iter().copied());
            let mut child = command.spawn().expect("start mud_server");
            let stdout = child.stdout.take().unwrap();
            let mut lines = BufReader::new(stdout).lines();
            let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
                .await
                .expect("mud_server did not start within 60 s")
                .unwrap()
                .expect("mud_server exited before listening");
            let addr = line
                .strip_prefix("listening on http://")
                .unwrap_or_else(|| panic!("unexpected first line: {line}"));
            assert!(
                !addr.ends_with(":0"),
                "the printed address must show the real port"
            );
            Self {
                base: format!("http://{addr}"),
                child,
                _schema: database_url.and_then(|database| database.keep()),
            }
        }

        /// The server's process id.
        pub fn pid(&self) -> u32 {
            self.child.id().expect("the server is running")
        }

        pub async fn stop(mut self) {
            #[cfg(unix)]
            {
                // Graceful shutdown on SIGTERM.
                let pid = self.child.id().unwrap().to_string();
                std::process::Command::new("kill")
                    .args(["-TERM", &pid])
                    .status()
                    .unwrap();
                let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
                    .await
                    .expect("server did not stop on SIGTERM")
                    .unwrap();
                assert!(status.success(), "server exited with {status}");
            }
        }
    }

    /// Runs the server with `database_url` and `env`, which it must refuse: it exits before it
    /// listens. Returns what it wrote to stderr.
    pub async fn refused_start(database_url: &dyn ServerDatabase, env: &[(&str, &str)]) -> String {
        let output = Command::new(example_binary())
            .env("BIND_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .env("DATABASE_URL", database_url.url())
            .envs(env.iter().copied())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(60), output)
            .await
            .expect("mud_server neither started nor exited within 60 s")
            .unwrap();
        assert!(
            output.stdout.is_empty(),
            "mud_server started: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    /// A database URL whose connections use a fresh schema of this test's own.
    pub async fn schema_url() -> SchemaUrl {
        url_of(super::TestDb::new().await).await
    }

    /// [`schema_url`] whose schema holds `app_sql`'s tables, and not the crate's: the
    /// fixture's are in a schema of their own (`<schema>_fixture`), so a server started with
    /// `SESSION_SCHEMA` creates the crate's tables itself.
    pub async fn app_schema_url(app_sql: &str) -> SchemaUrl {
        url_of(super::TestDb::create(8, app_sql, Some("fixture")).await).await
    }

    async fn url_of(db: super::TestDb) -> SchemaUrl {
        // TestDb made the schema; the example creates its own tables in it, so drop the fixtures.
        db.execute("DROP TABLE characters, users", &[]).await;
        let url = super::database_url();
        let separator = if url.contains('?') { '&' } else { '?' };
        let url = format!("{url}{separator}options=-csearch_path%3D{}", db.schema);
        SchemaUrl {
            _db: std::sync::Arc::new(db),
            url,
        }
    }

    /// The URL of a fresh schema for example servers. The schema is dropped when the last
    /// clone of this value, and the last server started on it, is gone.
    #[derive(Clone)]
    pub struct SchemaUrl {
        _db: std::sync::Arc<super::TestDb>,
        url: String,
    }

    /// A database URL for an example server: a test schema (kept while the server runs) or
    /// any other URL.
    pub trait ServerDatabase {
        fn url(&self) -> &str;
        fn keep(&self) -> Option<SchemaUrl> {
            None
        }
    }

    impl SchemaUrl {
        /// The test's schema, and a pool on it.
        pub fn db(&self) -> &super::TestDb {
            &self._db
        }
    }

    impl ServerDatabase for SchemaUrl {
        fn url(&self) -> &str {
            &self.url
        }
        fn keep(&self) -> Option<SchemaUrl> {
            Some(self.clone())
        }
    }

    impl ServerDatabase for String {
        fn url(&self) -> &str {
            self
        }
    }

    impl std::ops::Deref for SchemaUrl {
        type Target = str;

        fn deref(&self) -> &str {
            &self.url
        }
    }
}
