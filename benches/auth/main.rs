//! End-to-end cost of authenticating a request: requests per second, latency, and the SQL
//! statements and rows written per request, over real HTTP.
//!
//! Every system under test is an `axum::serve` server on `127.0.0.1:0` inside this process.
//! Each client worker owns one HTTP/1.1 keep-alive connection (hyper's client connection API)
//! and sends its next request as soon as the previous answer is read; the workers run at
//! concurrency 1, 8 and 64. Each case has a warm-up, then a fixed measuring window; the rate
//! is the requests completed in the window divided by its length, and p50 / p99 are taken over
//! all of them. Every system uses one PostgreSQL database (a fresh schema per run) with the
//! same seeded users and characters, and pools of the same size.
//!
//! | case | `GET` handler |
//! |---|---|
//! | `ceiling` | the same route, no authentication |
//! | `floor` | one prepared primary-key `SELECT username FROM users WHERE id = $1` (`prepare_cached`) on the deadpool pool the store uses |
//! | `floor-session` | our session cookie's token hashed, then one prepared `SELECT` of the session by hash joined with its user on the same pool, expiry and user checked in the handler: the least any validation costs that reads the role on each request |
//! | `ours` | `AuthUser` behind `SessionLayer` + `PgStore` |
//! | `ours-unnamed` | `ours` with `PgStore::prepared_statements(false)`: the validating statement sent unnamed, parsed and planned on each request (what a transaction pooler such as PgBouncer needs), on the same direct pool |
//! | `ours-sqlx` | `ours` on `SqlxStore` (feature `sqlx`, on in `scripts/bench`): the same statements on a sqlx pool of the same size, with `test_before_acquire(false)` as the README advises; same sessions, same table |
//! | `ours-game` | `GameUser` + `RequirePermission<ViewLogs>`: an admin's session with a selected character |
//! | `peer` | axum-login over tower-sessions with `tower-sessions-sqlx-store`'s `PostgresStore`; its backend loads the user with sqlx |
//! | `ours-memory` | `AuthUser` behind `SessionLayer` + `MemoryStore` |
//! | `ours-cached` | `ours` with the opt-in validation cache (feature `cache`, on in `scripts/bench`) |
//! | `ours-no-debounce` | `ours` with `touch_interval` zero, at concurrency 8: what the debounce saves |
//!
//! Every request carries the cookie its system set at an HTTP login, one session per worker.
//! Then `POST /login/{id}` (look the user up, create a session) measures logins per second,
//! ours and the peer's, at concurrency 8; `POST /logout` ends each session those logins made,
//! once, and `ours-login-pruned` logs in on a server with `max_sessions_per_user` set, every
//! user already at the limit. The cache's invalidation triggers are installed for the
//! `ours-cached` case only. With `--scale`, the table-size, mass-expiry and long-run sections
//! follow (`auth/scale.rs`). Each run writes SVG charts next to the summary (`auth/charts.rs`).
//!
//! Statements per request: the change in `pg_stat_statements.calls` (top-level statements, so
//! round trips) for this role and database across the measured window. Rows written per
//! request: the change in `n_tup_ins + n_tup_upd + n_tup_del` of `pg_stat_user_tables` in the
//! run's schema. Backends publish table statistics at most once a second, so before each of
//! those readings the harness waits a second and runs a probe on every pooled connection,
//! which makes each backend publish what it has pending. Before each of our database cases the
//! sessions are aged so that their last activity is spread over the past `touch_interval` (60 s
//! by default): the activity writes counted are a steady state's.
//!
//! CPU time per request is split by thread name between the servers' runtime and the load
//! generator's, and the PostgreSQL backends of the pools (found by their application name, the
//! schema's) are read from `/proc`; what else kept the machine busy is shown as `other%`.
//! Runs take an advisory lock so that two never share a database, and a window during which
//! another program's connection was busy on it is flagged.
//!
//! After the HTTP cases, the parts of a request are measured apart (`auth/parts.rs`): the
//! routers called in-process, and the statements alone on the pool.
//!
//! Run it with `scripts/bench` (`--quick` for short windows; `--cases a,b` for some cases only,
//! `parts` naming the measurements without HTTP), which brings up PostgreSQL with
//! `pg_stat_statements` and exports `BENCH_DATABASE_URL`. The results are printed and written
//! to `target/bench-summary.json`. Numbers depend on the machine: nothing here asserts a speed.

mod charts;
mod parts;
mod scale;

use std::fmt::Display;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum_login::tower_sessions::SessionManagerLayer;
use axum_login::{AuthManagerLayerBuilder, AuthSession, AuthnBackend};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio_postgres::NoTls;
use tower_session_auth::permissions::ViewLogs;
use tower_session_auth::{
    AuthUser, ClientInfo, GameUser, LoginOptions, MemoryStore, PgStore, RequirePermission, Session,
    SessionConfig, SessionLayer, SessionManager, store::CharacterSelection, token::SessionToken,
};
#[cfg(feature = "cache")]
use tower_session_auth::{cache::CacheConfig, cache::SessionCache};
use tower_sessions_sqlx_store::PostgresStore;
use tower_sessions_sqlx_store::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tower_sessions_sqlx_store::sqlx::{self, PgPool};

#[global_allocator]
static ALLOCATOR: parts::CountingAllocator = parts::CountingAllocator;

/// Seeded users; user `i` has character `10 * i`.
const USERS: i64 = 1000;
/// Roles by `id % 4`; users with `id % 4 == 2` are admins, who hold `view_logs`.
const ROLES: [&str; 4] = ["player", "worldbuilder", "admin", "superuser"];
/// Client workers per case.
const CONCURRENCY: [usize; 3] = [1, 8, 64];
/// Sessions per system: one per worker at the highest concurrency.
const SESSIONS: usize = 64;
/// Connections per pool, ours (as `PgStore::connect` builds it) and the peer's alike.
const POOL_SIZE: usize = 16;
/// Workers of the login measurement.
const LOGIN_CONCURRENCY: usize = 8;
/// Sessions per user kept by the server that measures the pruning at login.
const PRUNED_MAX_SESSIONS: u32 = 4;
/// Workers of the measurement without activity debounce (`touch_interval` zero).
const UNDEBOUNCED_CONCURRENCY: usize = 8;
/// A backend publishes its table statistics when it goes idle, at most once per second.
const STATS_PUBLISH_INTERVAL: Duration = Duration::from_millis(1100);
/// Run on each pooled connection so that it publishes its statistics. The accounting queries
/// leave out statements whose text mentions `pg_stat`: every query that the harness runs while
/// counting reads a `pg_stat` view or calls a `pg_stat` function (a mere alias would not do, as
/// `pg_stat_statements` keeps the first text seen for a statement).
const FLUSH_PROBE: &str = "SELECT pg_stat_clear_snapshot()";
/// Thread names of the servers' and the load generator's runtimes.
const SERVER_THREADS: &str = "bench-server";
const CLIENT_THREADS: &str = "bench-client";
/// Linux reports CPU times in ticks of 1/100 s (`USER_HZ`).
const MICROS_PER_TICK: f64 = 10_000.0;

const APP_TABLES: &str = "
    CREATE TABLE users (id bigint PRIMARY KEY, username text NOT NULL UNIQUE, role text,
                        is_active boolean NOT NULL DEFAULT true);
    CREATE TABLE characters (id bigint PRIMARY KEY, user_id bigint NOT NULL REFERENCES users(id),
                             name text NOT NULL, world_id text);";

fn main() {
    let settings = Settings::from_args();
    let url = std::env::var("BENCH_DATABASE_URL").unwrap_or_else(|_| {
        panic!("BENCH_DATABASE_URL is not set: run the benchmark with scripts/bench")
    });
    // Servers and load generator run on runtimes of their own, so that their CPU time can be
    // told apart (by thread name); the operating system shares the cores between them.
    let runtime = |name: &str| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name(name)
            .build()
            .expect("tokio runtime")
    };
    let servers = runtime(SERVER_THREADS);
    let clients = runtime(CLIENT_THREADS);
    servers.block_on(async {
        let db = Db::setup(&url).await;
        let mut bench = Bench {
            settings,
            db,
            clients: clients.handle().clone(),
            results: Vec::new(),
        };
        bench.run().await;
    });
}

/// Window lengths: `--quick` for a run under a minute, the default for steadier numbers.
struct Settings {
    quick: bool,
    /// `--scale`: after the other cases, the table-size, mass-expiry and long-run sections.
    scale: Option<scale::ScaleSettings>,
    /// `--cases a,b`: measure only these cases (for profiling one path); all by default.
    only: Option<Vec<String>>,
    warmup: Duration,
    window: Duration,
}

impl Settings {
    fn from_args() -> Self {
        let mut quick = false;
        let mut only = None;
        let mut scale: Option<scale::ScaleSettings> = None;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => quick = true,
                "--scale" => {
                    scale.get_or_insert_with(scale::ScaleSettings::default);
                }
                flag @ ("--scale-rows" | "--purge-rows" | "--soak-secs" | "--soak-sessions") => {
                    let value = args.next().unwrap_or_default();
                    let settings = scale.get_or_insert_with(scale::ScaleSettings::default);
                    if let Err(error) = settings.set(flag, &value) {
                        eprintln!("{flag} {value:?}: {error}");
                        std::process::exit(2);
                    }
                }
                "--cases" => {
                    let list = args.next().unwrap_or_default();
                    only = Some(list.split(',').map(str::to_owned).collect());
                }
                // `cargo bench` passes this to every bench binary.
                "--bench" => {}
                other => {
                    eprintln!(
                        "unknown argument {other:?}; usage: scripts/bench [--quick] [--cases a,b] \
                         [--scale [--scale-rows n,n,..] [--purge-rows n] [--soak-secs s] \
                         [--soak-sessions n]]"
                    );
                    std::process::exit(2);
                }
            }
        }
        let (warmup, window) = if quick {
            (Duration::from_millis(300), Duration::from_secs(1))
        } else {
            (Duration::from_secs(2), Duration::from_secs(5))
        };
        Self {
            quick,
            scale,
            only,
            warmup,
            window,
        }
    }

    /// Whether a case at this concurrency also counts rows written (each count costs two
    /// seconds of waiting for the statistics, so the quick mode counts at concurrency 8 only).
    fn counts_writes_at(&self, concurrency: usize) -> bool {
        !self.quick || concurrency == 8
    }

    fn mode(&self) -> &'static str {
        match (self.quick, self.scale.is_some()) {
            (true, true) => "quick+scale",
            (false, true) => "scale",
            (true, false) => "quick",
            (false, false) => "full",
        }
    }

    /// Whether the case `name` is measured in this run.
    fn includes(&self, name: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|case| case == name))
    }
}

/// The database: an unpooled connection for setup and accounting, and both systems' pools.
struct Db {
    admin: tokio_postgres::Client,
    schema: String,
    server_version: String,
    /// The deadpool pool of `PgStore` (and of the `floor` handler).
    pool: Pool,
    /// The peer's sqlx pool.
    sqlx: PgPool,
    /// The sqlx pool of `SqlxStore`: the peer's connection options, without the ping before
    /// each use.
    #[cfg(feature = "sqlx")]
    ours_sqlx: PgPool,
}

/// Cumulative counters at one instant.
#[derive(Clone, Copy)]
struct Counters {
    statements: i64,
    rows_written: Option<i64>,
}

impl Db {
    /// A steady state for our sessions: last activity spread evenly over the past touch
    /// interval, so that touches fall due during the measured windows as they would in a
    /// service that has been running for a while.
    async fn age_sessions(&self, touch_interval: Duration) {
        self.pool
            .get()
            .await
            .expect("pool connection")
            .execute(
                "UPDATE sessions SET created_at = created_at - $1 * interval '1 second', \
                     last_activity = now() - random() * $1 * interval '1 second'",
                &[&touch_interval.as_secs_f64()],
            )
            .await
            .expect("age the sessions");
    }

    async fn setup(url: &str) -> Self {
        let (admin, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at BENCH_DATABASE_URL is unreachable: {e}"));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                eprintln!("admin connection failed: {error}");
            }
        });
        // One run at a time per database: concurrent runs would share the CPU and each
        // other's statement counts. The lock is released when this process exits.
        let lock = "SELECT pg_try_advisory_lock(hashtextextended('tower_session_auth.bench', 0))";
        let locked: bool = admin.query_one(lock, &[]).await.expect("lock").get(0);
        if !locked {
            eprintln!("another benchmark run is using this database: waiting for it to finish");
            admin
                .execute(
                    &lock.replace("pg_try_advisory_lock", "pg_advisory_lock"),
                    &[],
                )
                .await
                .expect("lock");
        }
        if let Err(error) = admin
            .query_one("SELECT count(*) FROM pg_stat_statements", &[])
            .await
        {
            panic!(
                "pg_stat_statements is not usable in this database ({error}): it needs \
                 shared_preload_libraries = 'pg_stat_statements' and CREATE EXTENSION \
                 pg_stat_statements; scripts/bench sets up such a cluster"
            );
        }
        let server_version: String = admin
            .query_one("SHOW server_version", &[])
            .await
            .expect("server version")
            .get(0);
        let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
        admin
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .expect("create the run's schema");

        let pool = deadpool(url, &schema);
        let client = pool.get().await.expect("pool connection");
        client
            .batch_execute(&format!(
                "{APP_TABLES}
                 INSERT INTO users (id, username, role, is_active)
                     SELECT i, 'user' || i, (ARRAY['{}', '{}', '{}', '{}'])[1 + i % 4], true
                     FROM generate_series(1, {USERS}) i;
                 INSERT INTO characters (id, user_id, name, world_id)
                     SELECT 10 * i, i, 'char' || i, 'world' || i % 8
                     FROM generate_series(1, {USERS}) i;
                 ANALYZE users, characters;",
                ROLES[0], ROLES[1], ROLES[2], ROLES[3]
            ))
            .await
            .expect("seed users and characters");
        drop(client);

        let options: PgConnectOptions = url
            .parse::<PgConnectOptions>()
            .expect("BENCH_DATABASE_URL is not a valid PostgreSQL URL")
            .options([("search_path", schema.as_str())])
            .application_name(&schema);
        #[cfg(feature = "sqlx")]
        let ours_sqlx = PgPoolOptions::new()
            .max_connections(POOL_SIZE as u32)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await
            .unwrap_or_else(|e| panic!("the sqlx store's pool cannot connect: {e}"));
        let sqlx = PgPoolOptions::new()
            .max_connections(POOL_SIZE as u32)
            .connect_with(options)
            .await
            .unwrap_or_else(|e| panic!("the peer's pool cannot connect: {e}"));
        Self {
            admin,
            schema,
            server_version,
            pool,
            sqlx,
            #[cfg(feature = "sqlx")]
            ours_sqlx,
        }
    }

    async fn statements(&self) -> i64 {
        self.admin
            .query_one(
                "SELECT COALESCE(sum(calls), 0)::int8 FROM pg_stat_statements \
                 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                   AND userid = (SELECT oid FROM pg_roles WHERE rolname = current_user) \
                   AND query NOT LIKE '%pg_stat%'",
                &[],
            )
            .await
            .expect("read pg_stat_statements")
            .get(0)
    }

    async fn rows_written(&self) -> i64 {
        self.admin
            .query_one(
                "SELECT COALESCE(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::int8 \
                 FROM pg_stat_user_tables WHERE schemaname = $1",
                &[&self.schema],
            )
            .await
            .expect("read pg_stat_user_tables")
            .get(0)
    }

    /// Makes every pooled backend publish its pending table statistics. The clients are idle.
    async fn publish_table_stats(&self) {
        tokio::time::sleep(STATS_PUBLISH_INTERVAL).await;
        let size = self.pool.status().size;
        let mut held = Vec::with_capacity(size);
        for _ in 0..size {
            held.push(self.pool.get().await.expect("pool connection"));
        }
        // One at a time: concurrent publishers of one table may skip a contended entry.
        for client in &held {
            client.query_one(FLUSH_PROBE, &[]).await.expect("probe");
        }
        drop(held);
        #[cfg(feature = "sqlx")]
        let sqlx_pools = [&self.sqlx, &self.ours_sqlx];
        #[cfg(not(feature = "sqlx"))]
        let sqlx_pools = [&self.sqlx];
        for pool in sqlx_pools {
            let size = pool.size();
            let mut held = Vec::with_capacity(size as usize);
            for _ in 0..size {
                held.push(pool.acquire().await.expect("sqlx connection"));
            }
            for connection in &mut held {
                sqlx::query(FLUSH_PROBE)
                    .execute(&mut **connection)
                    .await
                    .expect("probe");
            }
        }
    }

    async fn counters(&self, with_writes: bool) -> Counters {
        let rows_written = if with_writes {
            self.publish_table_stats().await;
            Some(self.rows_written().await)
        } else {
            None
        };
        Counters {
            statements: self.statements().await,
            rows_written,
        }
    }

    /// Process ids of the pools' connections, which carry the schema's name as their
    /// application name.
    async fn backend_pids(&self) -> Vec<i32> {
        self.admin
            .query(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                &[&self.schema],
            )
            .await
            .expect("read pg_stat_activity")
            .iter()
            .map(|row| row.get(0))
            .collect()
    }

    /// Other programs' connections to this database that were busy since `since` (this
    /// machine's clock; the server's is taken to agree): their statements and CPU would blur
    /// this run's figures.
    async fn other_clients(&self, since: time::OffsetDateTime) -> i64 {
        self.admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND backend_type = 'client backend' AND pid <> pg_backend_pid() \
                 AND application_name <> $1 AND (state = 'active' OR state_change >= $2)",
                &[&self.schema, &since],
            )
            .await
            .expect("read pg_stat_activity")
            .get(0)
    }

    /// Removes what `PgStore::install_invalidation_triggers` installed.
    async fn drop_invalidation_triggers(&self) {
        self.pool
            .get()
            .await
            .expect("pool connection")
            .batch_execute(
                "DROP TRIGGER tower_session_auth_session_changed ON sessions;
                 DROP TRIGGER tower_session_auth_user_changed ON users;
                 DROP TRIGGER tower_session_auth_character_changed ON characters;",
            )
            .await
            .expect("drop the invalidation triggers");
    }

    async fn drop_schema(&self) {
        self.sqlx.close().await;
        #[cfg(feature = "sqlx")]
        self.ours_sqlx.close().await;
        self.admin
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .await
            .expect("drop the run's schema");
    }
}

/// A deadpool pool whose connections use `schema` (also their application name), sized and
/// timed as `PgStore::connect`.
fn deadpool(url: &str, schema: &str) -> Pool {
    let mut config: tokio_postgres::Config = url
        .parse()
        .expect("BENCH_DATABASE_URL is not a valid PostgreSQL URL");
    config.options(format!("-c search_path={schema}"));
    config.application_name(schema);
    config.connect_timeout(Duration::from_secs(5));
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .expect("pool")
}

fn internal(error: impl Display) -> StatusCode {
    eprintln!("handler failed: {error}");
    StatusCode::INTERNAL_SERVER_ERROR
}

// --- The systems under test -------------------------------------------------------------

fn ceiling_router() -> Router {
    Router::new().route("/me", get(|| async { "user1" }))
}

/// The floor reads the user id from the cookie `id=<user id>` and loads the username.
fn floor_router(pool: Pool) -> Router {
    async fn me(State(pool): State<Pool>, headers: HeaderMap) -> Result<String, StatusCode> {
        let user_id: i64 = headers
            .get(header::COOKIE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("id="))
            .and_then(|id| id.parse().ok())
            .ok_or(StatusCode::UNAUTHORIZED)?;
        let client = pool.get().await.map_err(internal)?;
        let statement = client
            .prepare_cached("SELECT username FROM users WHERE id = $1")
            .await
            .map_err(internal)?;
        let row = client
            .query_opt(&statement, &[&user_id])
            .await
            .map_err(internal)?
            .ok_or(StatusCode::UNAUTHORIZED)?;
        Ok(row.get(0))
    }
    Router::new().route("/me", get(me)).with_state(pool)
}

/// The least a validation that reads the user in the session's statement can cost: the
/// session cookie's token hashed, the session found by its hash and joined with its user in
/// one prepared statement, expiry and the user's state checked. No layer, no extractor, no
/// touch, no full session record: what any design with hashed tokens and roles read fresh on
/// each request pays at least.
fn floor_session_router(pool: Pool) -> Router {
    async fn me(State(pool): State<Pool>, headers: HeaderMap) -> Result<String, StatusCode> {
        let token = headers
            .get(header::COOKIE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("id="))
            .and_then(SessionToken::parse)
            .ok_or(StatusCode::UNAUTHORIZED)?;
        let client = pool.get().await.map_err(internal)?;
        let statement = client
            .prepare_cached(parts::SESSION_AND_USER_SQL)
            .await
            .map_err(internal)?;
        let row = client
            .query_opt(&statement, &[&token.hash().as_bytes().as_slice()])
            .await
            .map_err(internal)?
            .ok_or(StatusCode::UNAUTHORIZED)?;
        let now = time::OffsetDateTime::now_utc();
        let live = [3, 4].into_iter().all(|column| {
            row.get::<_, Option<time::OffsetDateTime>>(column)
                .is_none_or(|expires| expires > now)
        });
        let role: Option<&str> = row.get(6);
        if !live || !row.get::<_, bool>(7) || role.is_none_or(str::is_empty) {
            return Err(StatusCode::UNAUTHORIZED);
        }
        Ok(row.get(5))
    }
    Router::new().route("/me", get(me)).with_state(pool)
}

/// Ours: `/me`, `/play`, and the login and character selection that set the sessions up.
/// With a pool, login first checks that the user exists and is active, as an application's
/// login does after verifying the credentials.
fn ours_router(manager: SessionManager, users: Option<Pool>) -> Router {
    async fn me(user: AuthUser) -> String {
        user.username
    }
    async fn play(user: GameUser, _: RequirePermission<ViewLogs>) -> String {
        user.character_name
    }
    async fn login(
        State(users): State<Option<Pool>>,
        session: Session,
        Path(user_id): Path<i64>,
        headers: HeaderMap,
    ) -> Result<String, StatusCode> {
        if let Some(pool) = &users {
            let client = pool.get().await.map_err(internal)?;
            let statement = client
                .prepare_cached("SELECT username FROM users WHERE id = $1 AND is_active")
                .await
                .map_err(internal)?;
            client
                .query_opt(&statement, &[&user_id])
                .await
                .map_err(internal)?
                .ok_or(StatusCode::UNAUTHORIZED)?;
        }
        let login = session
            .login(
                user_id,
                LoginOptions::new().client(ClientInfo::from_headers(&headers)),
            )
            .await
            .map_err(internal)?;
        Ok(login.session.id.to_string())
    }
    async fn select(
        user: AuthUser,
        session: Session,
        Path(character_id): Path<i64>,
    ) -> Result<String, StatusCode> {
        let selection = session
            .manager()
            .select_character(user.session_id, user.user_id, character_id)
            .await
            .map_err(internal)?;
        match selection {
            CharacterSelection::Selected(character) => Ok(character.name),
            _ => Err(StatusCode::CONFLICT),
        }
    }
    async fn logout(session: Session) -> Result<&'static str, StatusCode> {
        match session.logout().await.map_err(internal)? {
            true => Ok("logged out"),
            false => Err(StatusCode::UNAUTHORIZED),
        }
    }
    Router::new()
        .route("/me", get(me))
        .route("/play", get(play))
        .route("/login/{user_id}", post(login))
        .route("/logout", post(logout))
        .route("/select/{character_id}", post(select))
        .with_state(users)
        .layer(SessionLayer::new(manager))
}

/// The peer's authentication backend: users come from PostgreSQL through sqlx.
#[derive(Clone)]
struct PeerBackend {
    pool: PgPool,
}

#[derive(Clone, Debug)]
struct PeerUser {
    id: i64,
    username: String,
    /// What axum-login compares on every request to invalidate sessions; an application would
    /// use the password hash. The users table has none, so the username stands in.
    auth_hash: Vec<u8>,
}

impl axum_login::AuthUser for PeerUser {
    type Id = i64;

    fn id(&self) -> i64 {
        self.id
    }

    fn session_auth_hash(&self) -> &[u8] {
        &self.auth_hash
    }
}

impl AuthnBackend for PeerBackend {
    type User = PeerUser;
    /// The user id: credentials are verified before login in both systems alike, so neither
    /// measurement includes it.
    type Credentials = i64;
    type Error = sqlx::Error;

    async fn authenticate(&self, user_id: i64) -> Result<Option<PeerUser>, sqlx::Error> {
        self.get_user(&user_id).await
    }

    async fn get_user(&self, user_id: &i64) -> Result<Option<PeerUser>, sqlx::Error> {
        let row: Option<(i64, String, Option<String>)> =
            sqlx::query_as("SELECT id, username, role FROM users WHERE id = $1 AND is_active")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(id, username, _role)| PeerUser {
            id,
            auth_hash: username.clone().into_bytes(),
            username,
        }))
    }
}

/// The peer with its defaults: sessions expire two weeks after they were last saved, and a
/// request that does not change the session does not save it.
fn peer_router(pool: PgPool, store: PostgresStore) -> Router {
    async fn me(auth: AuthSession<PeerBackend>) -> Result<String, StatusCode> {
        auth.user
            .map(|user| user.username)
            .ok_or(StatusCode::UNAUTHORIZED)
    }
    async fn login(
        mut auth: AuthSession<PeerBackend>,
        Path(user_id): Path<i64>,
    ) -> Result<String, StatusCode> {
        let user = auth
            .authenticate(user_id)
            .await
            .map_err(internal)?
            .ok_or(StatusCode::UNAUTHORIZED)?;
        auth.login(&user).await.map_err(internal)?;
        Ok(user.username)
    }
    async fn logout(mut auth: AuthSession<PeerBackend>) -> Result<&'static str, StatusCode> {
        match auth.logout().await.map_err(internal)? {
            Some(_) => Ok("logged out"),
            None => Err(StatusCode::UNAUTHORIZED),
        }
    }
    let sessions = SessionManagerLayer::new(store);
    let auth = AuthManagerLayerBuilder::new(PeerBackend { pool }, sessions).build();
    Router::new()
        .route("/me", get(me))
        .route("/login/{user_id}", post(login))
        .route("/logout", post(logout))
        .layer(auth)
}

async fn serve(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, router).await.expect("server") });
    addr
}

// --- The load generator -----------------------------------------------------------------

/// What a worker sends, again and again.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    method: Method,
    uri: Uri,
    cookie: Option<HeaderValue>,
}

impl Target {
    fn new(addr: SocketAddr, method: Method, path: &str, cookie: Option<HeaderValue>) -> Self {
        Self {
            addr,
            method,
            uri: path.parse().expect("path"),
            cookie,
        }
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// One keep-alive connection and the latencies (µs) it measured in the last phase.
struct Client {
    sender: SendRequest<Empty<Bytes>>,
    host: HeaderValue,
    target: Target,
    latencies: Vec<u32>,
    /// When not empty, each request carries the next of these cookies (cycled) instead of the
    /// target's.
    rotation: Vec<HeaderValue>,
    next: usize,
    /// Whether to keep the cookie each answer sets (in `collected`).
    collect: bool,
    collected: Vec<HeaderValue>,
}

impl Client {
    async fn connect(target: Target) -> Self {
        let stream = TcpStream::connect(target.addr)
            .await
            .expect("connect to the server");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                eprintln!("client connection failed: {error}");
            }
        });
        Self {
            sender,
            host: HeaderValue::from_str(&target.addr.to_string()).expect("host"),
            target,
            latencies: Vec::new(),
            rotation: Vec::new(),
            next: 0,
            collect: false,
            collected: Vec::new(),
        }
    }

    async fn send(&mut self) -> Reply {
        let mut request = Request::builder()
            .method(self.target.method.clone())
            .uri(self.target.uri.clone())
            .header(header::HOST, self.host.clone());
        let cookie = if self.rotation.is_empty() {
            self.target.cookie.clone()
        } else {
            self.next += 1;
            Some(self.rotation[(self.next - 1) % self.rotation.len()].clone())
        };
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        let request = request.body(Empty::new()).expect("request");
        self.sender.ready().await.expect("connection closed");
        let response = self
            .sender
            .send_request(request)
            .await
            .expect("request failed");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("response body").to_bytes();
        if self.collect && parts.status.is_success() {
            if let Some(cookie) = parts.headers.get(header::SET_COOKIE) {
                self.collected.push(cookie_pair(cookie));
            }
        }
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// Sends once and expects a success.
    async fn send_ok(&mut self) -> Reply {
        let reply = self.send().await;
        assert!(
            reply.status.is_success(),
            "{} {} answered {}: {}",
            self.target.method,
            self.target.uri,
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
        reply
    }
}

/// Connects one client per target, on the load generator's runtime.
async fn connect_all(runtime: &Handle, targets: Vec<Target>) -> Vec<Client> {
    let mut clients = Vec::with_capacity(targets.len());
    for target in targets {
        let client = runtime.spawn(Client::connect(target)).await;
        clients.push(client.expect("connect"));
    }
    clients
}

/// Runs every client until `length` has passed; returns them and the time until the last one
/// finished its last request.
async fn run_phase(
    runtime: &Handle,
    clients: Vec<Client>,
    length: Duration,
) -> (Vec<Client>, Duration) {
    let start = Instant::now();
    let deadline = start + length;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            runtime.spawn(async move {
                client.latencies.clear();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    client.send_ok().await;
                    let micros = sent.elapsed().as_micros();
                    client
                        .latencies
                        .push(u32::try_from(micros).unwrap_or(u32::MAX));
                }
                client
            })
        })
        .collect();
    let mut clients = Vec::with_capacity(tasks.len());
    for task in tasks {
        clients.push(task.await.expect("a client failed"));
    }
    (clients, start.elapsed())
}

/// Sends one request from the load generator's runtime and expects a success.
async fn send_once(runtime: &Handle, target: Target) -> Reply {
    runtime
        .spawn(async move { Client::connect(target).await.send_ok().await })
        .await
        .expect("request")
}

/// Logs in through HTTP; returns the `name=value` of the cookie the system set, ready to send.
async fn http_login(runtime: &Handle, addr: SocketAddr, user_id: i64) -> HeaderValue {
    let target = Target::new(addr, Method::POST, &format!("/login/{user_id}"), None);
    let reply = send_once(runtime, target).await;
    cookie_pair(
        reply
            .headers
            .get(header::SET_COOKIE)
            .expect("login set no cookie"),
    )
}

/// The `name=value` of a `Set-Cookie`, ready to send.
fn cookie_pair(set_cookie: &HeaderValue) -> HeaderValue {
    let text = set_cookie.to_str().expect("cookie text");
    let pair = text.split(';').next().unwrap_or_default().trim();
    HeaderValue::from_str(pair).expect("cookie")
}

/// Each client sends one request per cookie of its rotation (or `count` requests without
/// one), once; returns them and the time until the last one finished.
async fn run_drain(
    runtime: &Handle,
    clients: Vec<Client>,
    count: usize,
) -> (Vec<Client>, Duration) {
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            runtime.spawn(async move {
                client.latencies.clear();
                let requests = if client.rotation.is_empty() {
                    count
                } else {
                    client.rotation.len()
                };
                for _ in 0..requests {
                    let sent = Instant::now();
                    client.send_ok().await;
                    let micros = sent.elapsed().as_micros();
                    client
                        .latencies
                        .push(u32::try_from(micros).unwrap_or(u32::MAX));
                }
                client
            })
        })
        .collect();
    let mut clients = Vec::with_capacity(tasks.len());
    for task in tasks {
        clients.push(task.await.expect("a client failed"));
    }
    (clients, start.elapsed())
}

// --- Measuring and reporting ------------------------------------------------------------

/// One case at one concurrency.
struct Measured {
    case: &'static str,
    concurrency: usize,
    requests: usize,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    statements_per_request: f64,
    writes_per_request: Option<f64>,
    statements: i64,
    rows_written: Option<i64>,
    /// CPU time per request, µs: servers, load generator, PostgreSQL backends.
    cpu_micros: CpuPerRequest,
    /// The share of the machine's CPU capacity that others used during the window.
    other_cpu_percent: f64,
    /// Other programs' connections busy on the database during the window.
    other_clients: i64,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    fn json(&self) -> Value {
        json!({
            "case": self.case,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "requests_per_second": round(self.rate(), 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "statements": self.statements,
            "statements_per_request": round(self.statements_per_request, 4),
            "rows_written": self.rows_written,
            "writes_per_request": self.writes_per_request.map(|w| round(w, 5)),
            "cpu_us_per_request": {
                "servers": round(self.cpu_micros.server, 1),
                "load_generator": round(self.cpu_micros.client, 1),
                "postgres_backends": self.cpu_micros.postgres.map(|us| round(us, 1)),
            },
            "other_cpu_percent": round(self.other_cpu_percent, 1),
            "other_database_clients": self.other_clients,
        })
    }
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// The latency at quantile `q` of sorted microseconds, in milliseconds.
fn quantile_ms(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    f64::from(sorted[index]) / 1000.0
}

/// How a case loads its system.
enum Load {
    /// Warm-up, then the measured window.
    Window,
    /// As `Window`, keeping the cookies that the answers set.
    Collect,
    /// No warm-up: each of these cookies is sent once (shared out among the workers), and the
    /// window is the time until all are done.
    Drain(Vec<HeaderValue>),
}

/// A system's route and the cookies that its workers send, one per worker.
struct Case {
    name: &'static str,
    method: Method,
    addr: SocketAddr,
    /// One path per worker (cycled).
    paths: Vec<String>,
    /// One cookie per worker (cycled); empty for none.
    cookies: Vec<HeaderValue>,
    /// Whether the case touches PostgreSQL, so that rows written are worth counting.
    database: bool,
}

impl Case {
    fn targets(&self, concurrency: usize) -> Vec<Target> {
        (0..concurrency)
            .map(|worker| {
                let cookie = (!self.cookies.is_empty())
                    .then(|| self.cookies[worker % self.cookies.len()].clone());
                let path = &self.paths[worker % self.paths.len()];
                Target::new(self.addr, self.method.clone(), path, cookie)
            })
            .collect()
    }
}

struct Bench {
    settings: Settings,
    db: Db,
    /// The load generator's runtime.
    clients: Handle,
    results: Vec<Measured>,
}

impl Bench {
    async fn run(&mut self) {
        let started = time::OffsetDateTime::now_utc();
        let run_clock = Instant::now();
        let machine = machine();
        println!(
            "tower-session-auth benchmark ({} mode): {} CPUs ({}), {:.1} GiB, PostgreSQL {}",
            self.settings.mode(),
            machine["nproc"],
            machine["cpu"].as_str().unwrap_or("?"),
            machine["memory_gib"].as_f64().unwrap_or(0.0),
            self.db.server_version,
        );
        println!(
            "warm-up {:?}, window {:?} per case; pools of {POOL_SIZE}; {USERS} users; \
             load average at start {}",
            self.settings.warmup,
            self.settings.window,
            machine["load_average_at_start"].as_str().unwrap_or("?")
        );

        let config = SessionConfig::default();
        let touch_interval = config.touch_interval;
        let store = PgStore::new(self.db.pool.clone());
        store.migrate().await.expect("migrate the sessions table");
        let ours = serve(ours_router(
            SessionManager::new(store.clone(), config.clone()),
            Some(self.db.pool.clone()),
        ))
        .await;
        // The same store behind the opt-in validation cache (one instance: no listener).
        #[cfg(feature = "cache")]
        let ours_cached = {
            let cache = SessionCache::new(CacheConfig::default());
            serve(ours_router(
                SessionManager::new(store.clone(), config.clone()).with_cache(cache),
                Some(self.db.pool.clone()),
            ))
            .await
        };
        // The same store without named prepared statements, as behind PgBouncer in
        // transaction pooling mode (here on the same direct pool).
        let unnamed = serve(ours_router(
            SessionManager::new(store.clone().prepared_statements(false), config.clone()),
            Some(self.db.pool.clone()),
        ))
        .await;
        // The same statements on a sqlx pool (migrated above; same tables).
        #[cfg(feature = "sqlx")]
        let ours_sqlx = serve(ours_router(
            SessionManager::new(
                tower_session_auth::store::SqlxStore::new(self.db.ours_sqlx.clone()),
                config.clone(),
            ),
            None,
        ))
        .await;
        // The same store without the activity debounce: every validation writes.
        let undebounced = serve(ours_router(
            SessionManager::new(store.clone(), config.clone().touch_interval(Duration::ZERO)),
            Some(self.db.pool.clone()),
        ))
        .await;

        let memory = MemoryStore::new();
        let memory_manager = SessionManager::new(memory.clone(), config.clone());
        for id in 1..=USERS {
            let role = ROLES[(id % 4) as usize];
            memory.upsert_user(id, &format!("user{id}"), Some(role), true);
            let world = format!("world{}", id % 8);
            memory.upsert_character(10 * id, id, &format!("char{id}"), Some(&world));
        }
        let ours_memory = serve(ours_router(memory_manager.clone(), None)).await;

        let peer_store = PostgresStore::new(self.db.sqlx.clone())
            .with_schema_name(&self.db.schema)
            .expect("schema name");
        peer_store
            .migrate()
            .await
            .expect("migrate the peer's table");
        let peer = serve(peer_router(self.db.sqlx.clone(), peer_store)).await;
        let floor = serve(floor_router(self.db.pool.clone())).await;
        let floor_session = serve(floor_session_router(self.db.pool.clone())).await;
        let ceiling = serve(ceiling_router()).await;

        // Sessions: users 1..=64 for `/me`; admins (id % 4 == 2) with a character for `/play`.
        let auth_users: Vec<i64> = (1..=SESSIONS as i64).collect();
        let game_users: Vec<i64> = (0..SESSIONS as i64).map(|k| 4 * k + 2).collect();
        let mut ours_cookies = Vec::new();
        let mut memory_cookies = Vec::new();
        let mut peer_cookies = Vec::new();
        for &user in &auth_users {
            ours_cookies.push(http_login(&self.clients, ours, user).await);
            memory_cookies.push(http_login(&self.clients, ours_memory, user).await);
            peer_cookies.push(http_login(&self.clients, peer, user).await);
        }
        let mut game_cookies = Vec::new();
        for &user in &game_users {
            let cookie = http_login(&self.clients, ours, user).await;
            let select = Target::new(
                ours,
                Method::POST,
                &format!("/select/{}", 10 * user),
                Some(cookie.clone()),
            );
            send_once(&self.clients, select).await;
            game_cookies.push(cookie);
        }
        let mut undebounced_cookies = Vec::new();
        for &user in &auth_users[..UNDEBOUNCED_CONCURRENCY] {
            undebounced_cookies.push(http_login(&self.clients, undebounced, user).await);
        }
        let ours_sessions: Vec<(i64, tower_session_auth::store::TokenHash)> = auth_users
            .iter()
            .zip(&ours_cookies)
            .map(|(&user, cookie)| (user, parts::cookie_hash(cookie)))
            .collect();
        let (ours_cookie, memory_cookie) = (ours_cookies[0].clone(), memory_cookies[0].clone());
        let ours_scale_cookies = ours_cookies.clone();
        let floor_cookies = auth_users
            .iter()
            .map(|user| HeaderValue::from_str(&format!("id={user}")).expect("cookie"))
            .collect();

        let get_case = |name, addr, path: &str, cookies, database| Case {
            name,
            method: Method::GET,
            addr,
            paths: vec![path.to_owned()],
            cookies,
            database,
        };
        #[cfg(feature = "cache")]
        let cached_cookies = ours_cookies.clone();
        // Same sessions as `ours`, same table: only the statement mode differs.
        let unnamed_cookies = ours_cookies.clone();
        // Same sessions as `ours`, same table: only the driver differs.
        #[cfg(feature = "sqlx")]
        let sqlx_cookies = ours_cookies.clone();
        // Without the `cache` feature nothing is pushed.
        #[cfg_attr(not(feature = "cache"), allow(unused_mut, clippy::useless_vec))]
        let mut cases = vec![
            get_case("ceiling", ceiling, "/me", ours_cookies.clone(), false),
            get_case("floor", floor, "/me", floor_cookies, true),
            get_case(
                "floor-session",
                floor_session,
                "/me",
                ours_cookies.clone(),
                true,
            ),
            get_case("ours", ours, "/me", ours_cookies, true),
            get_case("ours-unnamed", unnamed, "/me", unnamed_cookies, true),
            #[cfg(feature = "sqlx")]
            get_case("ours-sqlx", ours_sqlx, "/me", sqlx_cookies, true),
            get_case("ours-game", ours, "/play", game_cookies, true),
            get_case("peer", peer, "/me", peer_cookies, true),
            get_case("ours-memory", ours_memory, "/me", memory_cookies, false),
        ];
        // Same sessions as `ours`, same table: only the cache differs.
        #[cfg(feature = "cache")]
        cases.push(get_case(
            "ours-cached",
            ours_cached,
            "/me",
            cached_cookies,
            true,
        ));
        print_header();
        for case in cases
            .iter()
            .filter(|case| self.settings.includes(case.name))
        {
            if case.database && case.name.starts_with("ours") {
                self.db.age_sessions(touch_interval).await;
            }
            // The cache's invalidation triggers are there for its case only: each deleted
            // session notifies, which the other cases (logouts, purges) would pay for too.
            let cached = case.name == "ours-cached";
            #[cfg(feature = "cache")]
            if cached {
                store
                    .install_invalidation_triggers()
                    .await
                    .expect("install the invalidation triggers");
            }
            for concurrency in CONCURRENCY {
                let writes = case.database && self.settings.counts_writes_at(concurrency);
                let measured = self.measure(case, concurrency, writes).await;
                print_row(&measured);
                self.results.push(measured);
            }
            if cached {
                self.db.drop_invalidation_triggers().await;
            }
        }
        let case = get_case(
            "ours-no-debounce",
            undebounced,
            "/me",
            undebounced_cookies,
            true,
        );
        if self.settings.includes(case.name) {
            let measured = self.measure(&case, UNDEBOUNCED_CONCURRENCY, true).await;
            print_row(&measured);
            self.results.push(measured);
        }
        // Logins, then logouts of the sessions those logins made; and logins that prune the
        // user's oldest session, each user being at the limit already.
        let pruned = serve(ours_router(
            SessionManager::new(
                store.clone(),
                config
                    .clone()
                    .max_sessions_per_user(Some(PRUNED_MAX_SESSIONS)),
            ),
            Some(self.db.pool.clone()),
        ))
        .await;
        let login_paths: Vec<String> = auth_users.iter().map(|u| format!("/login/{u}")).collect();
        // Other users than the measured sessions', which the pruning would end.
        let pruned_paths: Vec<String> = auth_users
            .iter()
            .map(|u| format!("/login/{}", u + 2 * SESSIONS as i64))
            .collect();
        for (name, addr, logout, paths) in [
            ("ours-login", ours, Some("ours-logout"), &login_paths),
            ("peer-login", peer, Some("peer-logout"), &login_paths),
            ("ours-login-pruned", pruned, None, &pruned_paths),
        ] {
            if !self.settings.includes(name) {
                continue;
            }
            let case = Case {
                name,
                method: Method::POST,
                addr,
                paths: paths.clone(),
                cookies: Vec::new(),
                database: true,
            };
            let (measured, sessions) = self
                .measure_with(&case, LOGIN_CONCURRENCY, true, Load::Collect)
                .await;
            print_row(&measured);
            self.results.push(measured);
            let Some(logout) = logout.filter(|logout| self.settings.includes(logout)) else {
                continue;
            };
            let case = Case {
                name: logout,
                method: Method::POST,
                addr,
                paths: vec!["/logout".to_owned()],
                cookies: Vec::new(),
                database: true,
            };
            let (measured, _) = self
                .measure_with(&case, LOGIN_CONCURRENCY, true, Load::Drain(sessions))
                .await;
            print_row(&measured);
            self.results.push(measured);
        }

        let mut parts_summary = Value::Null;
        if self.settings.includes("parts") {
            let window = self.settings.window;
            #[cfg_attr(not(feature = "cache"), allow(unused_mut))]
            let mut routers = vec![
                parts::router_cost("ceiling", ceiling_router(), &ours_cookie, window).await,
                parts::router_cost(
                    "ours-memory",
                    ours_router(memory_manager.clone(), None),
                    &memory_cookie,
                    window,
                )
                .await,
            ];
            // The steps of a hit: on the cache when built with it, else on the memory store.
            #[cfg(feature = "cache")]
            let (hit_manager, hit_cookie) = {
                let cached = SessionManager::new(store.clone(), config.clone())
                    .with_cache(SessionCache::new(CacheConfig::default()));
                routers.push(
                    parts::router_cost(
                        "ours-cached",
                        ours_router(cached.clone(), None),
                        &ours_cookie,
                        window,
                    )
                    .await,
                );
                (cached, &ours_cookie)
            };
            #[cfg(not(feature = "cache"))]
            let (hit_manager, hit_cookie) = (memory_manager, &memory_cookie);
            let steps = parts::hit_path_steps(&hit_manager, hit_cookie, window).await;
            let mut statements = Vec::new();
            for statement in parts::Statement::ALL {
                let rate =
                    parts::statement_rate(statement, &self.db.pool, &store, &ours_sessions, window)
                        .await;
                statements.push((statement, rate));
            }
            parts_summary = parts::report(&routers, &steps, &statements);
        }
        let scale = match &self.settings.scale {
            Some(settings) => {
                let ours = scale::Ours {
                    store: &store,
                    config: &config,
                    addr: ours,
                    cookies: &ours_scale_cookies,
                };
                Some(scale::run(self, settings, ours).await)
            }
            None => None,
        };
        let mut summary = self.summary(&machine, started, run_clock.elapsed());
        summary["without_http"] = parts_summary;
        for key in scale::KEYS {
            summary[key] = Value::Null;
        }
        if let Some(scale) = &scale {
            for (key, value) in &scale.keys {
                summary[*key] = value.clone();
            }
            summary["scale"] = scale.json.clone();
        }
        self.print_ratios();
        self.print_accounting();
        let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        std::fs::create_dir_all(&target).expect("create target/");
        let path = target.join("bench-summary.json");
        let text = serde_json::to_string_pretty(&summary).expect("summary JSON");
        std::fs::write(&path, text + "\n").expect("write the summary");
        println!("\nsummary written to {}", path.display());
        self.write_charts(&target, scale.as_ref());
        self.db.drop_schema().await;
    }

    async fn measure(&self, case: &Case, concurrency: usize, writes: bool) -> Measured {
        self.measure_with(case, concurrency, writes, Load::Window)
            .await
            .0
    }

    /// Measures `case` with the load given; returns the figures and the cookies that the
    /// answers set when the load collects them.
    async fn measure_with(
        &self,
        case: &Case,
        concurrency: usize,
        writes: bool,
        load: Load,
    ) -> (Measured, Vec<HeaderValue>) {
        let mut clients = connect_all(&self.clients, case.targets(concurrency)).await;
        let drain = match load {
            Load::Window => false,
            Load::Collect => {
                clients.iter_mut().for_each(|client| client.collect = true);
                false
            }
            Load::Drain(cookies) => {
                for (worker, client) in clients.iter_mut().enumerate() {
                    client.rotation = cookies
                        .iter()
                        .skip(worker)
                        .step_by(concurrency)
                        .cloned()
                        .collect();
                }
                true
            }
        };
        if !drain {
            (clients, _) = run_phase(&self.clients, clients, self.settings.warmup).await;
        }
        let before = self.db.counters(writes).await;
        let backends = self.db.backend_pids().await;
        let window_start = time::OffsetDateTime::now_utc();
        let cpu_before = CpuSample::take(&backends);
        let (clients, elapsed) = if drain {
            run_drain(&self.clients, clients, 0).await
        } else {
            run_phase(&self.clients, clients, self.settings.window).await
        };
        let cpu = CpuSample::take(&backends).since(&cpu_before);
        let other_clients = self.db.other_clients(window_start).await;
        let after = self.db.counters(writes).await;
        let mut latencies: Vec<u32> = clients
            .iter()
            .flat_map(|client| client.latencies.iter().copied())
            .collect();
        latencies.sort_unstable();
        let requests = latencies.len();
        let statements = after.statements - before.statements;
        let rows_written = after
            .rows_written
            .zip(before.rows_written)
            .map(|(after, before)| after - before);
        let collected = clients
            .into_iter()
            .flat_map(|client| client.collected)
            .collect();
        let measured = Measured {
            case: case.name,
            concurrency,
            requests,
            seconds: elapsed.as_secs_f64(),
            p50_ms: quantile_ms(&latencies, 0.50),
            p99_ms: quantile_ms(&latencies, 0.99),
            statements_per_request: statements as f64 / requests as f64,
            writes_per_request: rows_written.map(|rows| rows as f64 / requests as f64),
            statements,
            rows_written,
            cpu_micros: cpu.per_request(requests),
            other_cpu_percent: cpu.other_percent(),
            other_clients,
        };
        (measured, collected)
    }

    /// Writes the charts next to the summary: requests/s by concurrency for every system
    /// measured at each concurrency, and, with the scale sections, latency during the purge.
    fn write_charts(&self, target: &std::path::Path, scale: Option<&scale::ScaleReport>) {
        let mut series: Vec<charts::Series> = Vec::new();
        for measured in &self.results {
            let point = (measured.concurrency as f64, measured.rate());
            match series.iter_mut().find(|(name, _)| name == measured.case) {
                Some((_, points)) => points.push(point),
                None => series.push((measured.case.to_owned(), vec![point])),
            }
        }
        series.retain(|(_, points)| points.len() == CONCURRENCY.len());
        let mut written = Vec::new();
        let path = target.join("bench-requests-per-second.svg");
        match charts::requests_by_concurrency(&path, &CONCURRENCY, &series) {
            Ok(()) => written.push(path),
            Err(error) => eprintln!("chart {} not written: {error}", path.display()),
        }
        if let Some(scale) = scale {
            let path = target.join("bench-purge-latency.svg");
            let caption = format!(
                "validation p99 per 250 ms at c=8 while {} expired sessions are purged",
                scale.purge_rows
            );
            match charts::latency_over_time(&path, &caption, &scale.purge_latency) {
                Ok(()) => written.push(path),
                Err(error) => eprintln!("chart {} not written: {error}", path.display()),
            }
        }
        for path in written {
            println!("chart written to {}", path.display());
        }
    }

    fn find(&self, case: &str, concurrency: usize) -> Option<&Measured> {
        self.results
            .iter()
            .find(|m| m.case == case && m.concurrency == concurrency)
    }

    /// Requests per second of `ours` over `base` at `concurrency`.
    fn ratio(&self, ours: &str, base: &str, concurrency: usize) -> Option<f64> {
        Some(self.find(ours, concurrency)?.rate() / self.find(base, concurrency)?.rate())
    }

    /// Statements and rows written per request over all measured windows of `case`.
    fn per_request(&self, case: &str) -> (f64, Option<f64>) {
        let runs: Vec<&Measured> = self.results.iter().filter(|m| m.case == case).collect();
        let requests: usize = runs.iter().map(|m| m.requests).sum();
        let statements: i64 = runs.iter().map(|m| m.statements).sum();
        let counted: Vec<&&Measured> = runs.iter().filter(|m| m.rows_written.is_some()).collect();
        let writes = (!counted.is_empty()).then(|| {
            let rows: i64 = counted.iter().filter_map(|m| m.rows_written).sum();
            let requests: usize = counted.iter().map(|m| m.requests).sum();
            rows as f64 / requests as f64
        });
        (statements as f64 / requests as f64, writes)
    }

    fn summary(&self, machine: &Value, started: time::OffsetDateTime, took: Duration) -> Value {
        let ratio = |ours, base, c| self.ratio(ours, base, c).map(|r| round(r, 3));
        let (ours_statements, ours_writes) = self.per_request("ours");
        let (game_statements, game_writes) = self.per_request("ours-game");
        let (peer_statements, peer_writes) = self.per_request("peer");
        let (floor_statements, _) = self.per_request("floor");
        let (login_statements, login_writes) = self.per_request("ours-login");
        let (undebounced_statements, undebounced_writes) = self.per_request("ours-no-debounce");
        let (peer_login_statements, peer_login_writes) = self.per_request("peer-login");
        let rate = |case, c| self.find(case, c).map(|m| round(m.rate(), 1));
        let mut ratios = serde_json::Map::new();
        for (ours, base) in ratio_pairs() {
            for c in CONCURRENCY {
                let key = format!("{ours}_vs_{base}_c{c}").replace('-', "_");
                ratios.insert(key, json!(ratio(ours, base, c)));
            }
        }
        json!({
            "mode": self.settings.mode(),
            "date": format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                started.year(), u8::from(started.month()), started.day(),
                started.hour(), started.minute(), started.second()
            ),
            "seconds": round(took.as_secs_f64(), 1),
            "machine": machine,
            "postgresql": self.db.server_version,
            "warmup_seconds": self.settings.warmup.as_secs_f64(),
            "window_seconds": self.settings.window.as_secs_f64(),
            "pool_size": POOL_SIZE,
            "peer": "axum-login 0.18 + tower-sessions 0.14 + tower-sessions-sqlx-store 0.15 (PostgresStore, sqlx 0.8), default settings",
            "ours_vs_peer_c8": ratio("ours", "peer", 8),
            "ours_vs_floor_c8": ratio("ours", "floor", 8),
            "floor_session_vs_floor_c8": ratio("floor-session", "floor", 8),
            "ours_vs_floor_session_c8": ratio("ours", "floor-session", 8),
            "ours_vs_ceiling_c8": ratio("ours", "ceiling", 8),
            "ours_cached_vs_ceiling_c8": ratio("ours-cached", "ceiling", 8),
            "ours_cached_vs_peer_c8": ratio("ours-cached", "peer", 8),
            "statements_per_auth_request": round(ours_statements, 4),
            "writes_per_auth_request": ours_writes.map(|w| round(w, 5)),
            "peer_statements_per_auth_request": round(peer_statements, 4),
            "peer_writes_per_auth_request": peer_writes.map(|w| round(w, 5)),
            "statements_per_game_request": round(game_statements, 4),
            "writes_per_game_request": game_writes.map(|w| round(w, 5)),
            "floor_statements_per_request": round(floor_statements, 4),
            "without_debounce": {
                "concurrency": UNDEBOUNCED_CONCURRENCY,
                "requests_per_second": rate("ours-no-debounce", UNDEBOUNCED_CONCURRENCY),
                "statements_per_request": round(undebounced_statements, 4),
                "writes_per_request": undebounced_writes.map(|w| round(w, 4)),
            },
            "requests_per_second_c8": {
                "ceiling": rate("ceiling", 8),
                "floor": rate("floor", 8),
                "floor_session": rate("floor-session", 8),
                "ours": rate("ours", 8),
                "ours_unnamed": rate("ours-unnamed", 8),
                "ours_sqlx": rate("ours-sqlx", 8),
                "ours_game": rate("ours-game", 8),
                "peer": rate("peer", 8),
                "ours_memory": rate("ours-memory", 8),
                "ours_cached": rate("ours-cached", 8),
            },
            "logins_per_second": rate("ours-login", LOGIN_CONCURRENCY),
            "peer_logins_per_second": rate("peer-login", LOGIN_CONCURRENCY),
            "ours_login_vs_peer_c8": ratio("ours-login", "peer-login", LOGIN_CONCURRENCY),
            "logouts_per_second": rate("ours-logout", LOGIN_CONCURRENCY),
            "peer_logouts_per_second": rate("peer-logout", LOGIN_CONCURRENCY),
            "ours_logout_vs_peer_c8": ratio("ours-logout", "peer-logout", LOGIN_CONCURRENCY),
            "pruning_logins_per_second": rate("ours-login-pruned", LOGIN_CONCURRENCY),
            "max_sessions_per_user_of_pruning_logins": PRUNED_MAX_SESSIONS,
            "pruning_login_vs_login_c8": ratio("ours-login-pruned", "ours-login", LOGIN_CONCURRENCY),
            "login_concurrency": LOGIN_CONCURRENCY,
            "statements_per_login": round(login_statements, 3),
            "writes_per_login": login_writes.map(|w| round(w, 3)),
            "peer_statements_per_login": round(peer_login_statements, 3),
            "peer_writes_per_login": peer_login_writes.map(|w| round(w, 3)),
            "ratios": ratios,
            "cases": self.results.iter().map(Measured::json).collect::<Vec<_>>(),
        })
    }

    fn print_ratios(&self) {
        println!(
            "\n{:<28}{:>8} {:>8} {:>8}",
            "requests/s ratios", "c=1", "c=8", "c=64"
        );
        for (ours, base) in ratio_pairs() {
            let cells: Vec<String> = CONCURRENCY
                .iter()
                .map(|&c| match self.ratio(ours, base, c) {
                    Some(r) => format!("{r:>8.2}"),
                    None => format!("{:>8}", "-"),
                })
                .collect();
            println!("{:<28}{}", format!("{ours} / {base}"), cells.join(" "));
        }
    }

    fn print_accounting(&self) {
        println!(
            "\nover all measured windows             statements / request       rows written / request"
        );
        for (case, label) in [
            ("floor", "floor"),
            ("floor-session", "floor-session"),
            ("ours", "ours (AuthUser)"),
            ("ours-unnamed", "ours, unnamed statements"),
            ("ours-sqlx", "ours on SqlxStore"),
            ("ours-game", "ours-game (GameUser + permission)"),
            ("ours-no-debounce", "ours, touch_interval 0"),
            ("ours-cached", "ours with the cache"),
            ("peer", "peer"),
            ("ours-login", "ours login"),
            ("peer-login", "peer login"),
            ("ours-login-pruned", "ours login, pruning"),
            ("ours-logout", "ours logout"),
            ("peer-logout", "peer logout"),
        ] {
            let runs: Vec<&Measured> = self.results.iter().filter(|m| m.case == case).collect();
            let requests: usize = runs.iter().map(|m| m.requests).sum();
            let statements: i64 = runs.iter().map(|m| m.statements).sum();
            let counted = runs.iter().filter(|m| m.rows_written.is_some());
            let rows: i64 = counted.clone().filter_map(|m| m.rows_written).sum();
            let counted_requests: usize = counted.map(|m| m.requests).sum();
            let per = |n: i64, d: usize| n as f64 / d.max(1) as f64;
            println!(
                "{label:<36}{:>7.4} ({statements:>7}/{requests:>7}){:>9.5} ({rows:>6}/{counted_requests:>7})",
                per(statements, requests),
                per(rows, counted_requests),
            );
        }
    }
}

/// The ratios of requests per second printed and summarised: each of our cases over the
/// peer, the floors and the ceiling, the session floor over the floor (what reading the
/// session and its user costs any design), unnamed statements over prepared ones, and the
/// sqlx store over the deadpool one.
fn ratio_pairs() -> impl Iterator<Item = (&'static str, &'static str)> {
    let ours = ["ours", "ours-game", "ours-memory", "ours-cached"];
    let bases = ["peer", "floor", "floor-session", "ceiling"];
    [
        ("floor-session", "floor"),
        ("ours-unnamed", "ours"),
        ("ours-sqlx", "ours"),
        ("ours-sqlx", "peer"),
    ]
    .into_iter()
    .chain(
        ours.into_iter()
            .flat_map(move |o| bases.into_iter().map(move |b| (o, b))),
    )
}

fn print_header() {
    println!(
        "\n{:<17}{:>4}{:>9}{:>12}{:>8}{:>8}{:>10}{:>11}  {:>7}{:>7}{:>7}{:>7}",
        "case",
        "c",
        "requests",
        "requests/s",
        "p50 ms",
        "p99 ms",
        "stmts/req",
        "writes/req",
        "srv µs",
        "cli µs",
        "pg µs",
        "other%"
    );
}

fn print_row(m: &Measured) {
    let writes = m
        .writes_per_request
        .map_or_else(|| "-".to_owned(), |w| format!("{w:.4}"));
    let postgres = m
        .cpu_micros
        .postgres
        .map_or_else(|| "-".to_owned(), |us| format!("{us:.0}"));
    println!(
        "{:<17}{:>4}{:>9}{:>12.0}{:>8.3}{:>8.3}{:>10.3}{:>11}  {:>7.0}{:>7.0}{:>7}{:>7.1}",
        m.case,
        m.concurrency,
        m.requests,
        m.rate(),
        m.p50_ms,
        m.p99_ms,
        m.statements_per_request,
        writes,
        m.cpu_micros.server,
        m.cpu_micros.client,
        postgres,
        m.other_cpu_percent
    );
    if m.other_clients > 0 {
        println!(
            "  ! {} other connection(s) used the database during this window: its statement \
             counts and timings are not this run's alone",
            m.other_clients
        );
    }
}

/// CPU count and model, and memory, from the running system.
fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map_or("unknown", |(_, model)| model.trim())
        .to_owned();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib: f64 = meminfo
        .lines()
        .find(|line| line.starts_with("MemTotal:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0.0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    json!({
        "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": cpu,
        "memory_gib": round(memory_kib / 1024.0 / 1024.0, 1),
        "load_average_at_start": load.join(" "),
    })
}

/// CPU ticks used so far: by this process's server and load-generator threads, by the run's
/// PostgreSQL backends (when they run on this machine), and by the whole machine.
#[derive(Clone, Copy, Default)]
struct CpuSample {
    server: u64,
    client: u64,
    postgres: Option<u64>,
    machine_busy: u64,
    machine_total: u64,
}

/// CPU time per request, in µs.
#[derive(Clone, Copy)]
struct CpuPerRequest {
    server: f64,
    client: f64,
    postgres: Option<f64>,
}

impl CpuSample {
    fn take(backends: &[i32]) -> Self {
        let mut sample = Self::default();
        for task in std::fs::read_dir("/proc/self/task").into_iter().flatten() {
            let Ok(task) = task else { continue };
            match thread_ticks(&task.path().join("stat")) {
                Some((name, ticks)) if name.starts_with(SERVER_THREADS) => sample.server += ticks,
                Some((name, ticks)) if name.starts_with(CLIENT_THREADS) => sample.client += ticks,
                _ => {}
            }
        }
        // A backend of a database on another machine has no entry here (or another program's).
        let backend_ticks: Vec<u64> = backends
            .iter()
            .filter_map(|pid| thread_ticks(std::path::Path::new(&format!("/proc/{pid}/stat"))))
            .filter(|(name, _)| name == "postgres")
            .map(|(_, ticks)| ticks)
            .collect();
        sample.postgres = (!backend_ticks.is_empty()).then(|| backend_ticks.iter().sum());
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        if let Some(line) = stat.lines().find(|line| line.starts_with("cpu ")) {
            // user nice system idle iowait irq softirq steal
            let fields: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .take(8)
                .filter_map(|field| field.parse().ok())
                .collect();
            if fields.len() == 8 {
                sample.machine_total = fields.iter().sum();
                sample.machine_busy = sample.machine_total - fields[3] - fields[4];
            }
        }
        sample
    }

    fn since(&self, before: &Self) -> Self {
        Self {
            server: self.server.saturating_sub(before.server),
            client: self.client.saturating_sub(before.client),
            postgres: self
                .postgres
                .zip(before.postgres)
                .map(|(after, before)| after.saturating_sub(before)),
            machine_busy: self.machine_busy.saturating_sub(before.machine_busy),
            machine_total: self.machine_total.saturating_sub(before.machine_total),
        }
    }

    fn per_request(&self, requests: usize) -> CpuPerRequest {
        let micros = |ticks: u64| ticks as f64 * MICROS_PER_TICK / requests.max(1) as f64;
        CpuPerRequest {
            server: micros(self.server),
            client: micros(self.client),
            postgres: self.postgres.map(micros),
        }
    }

    /// Busy CPU not spent by the servers, the load generator or the run's backends, as a
    /// percentage of the machine's capacity: other programs, PostgreSQL's background
    /// processes, interrupts.
    fn other_percent(&self) -> f64 {
        let ours = self.server + self.client + self.postgres.unwrap_or(0);
        let other = self.machine_busy.saturating_sub(ours);
        100.0 * other as f64 / self.machine_total.max(1) as f64
    }
}

/// The name and user + system CPU ticks of a thread or process, from its `stat` file.
fn thread_ticks(path: &std::path::Path) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let (head, tail) = text.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_owned();
    let fields: Vec<&str> = tail.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15.
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some((name, user + system))
}
