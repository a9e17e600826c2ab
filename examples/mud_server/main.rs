//! `mud_server`: a small MUD account API whose handlers' signatures are their access rules.
//!
//! ```text
//! cargo run --example mud_server                      # in-memory store, demo data
//! DATABASE_URL=postgres://… cargo run --example mud_server   # PostgreSQL
//! ```
//!
//! Environment: `BIND_ADDR` (default `127.0.0.1:3000`; port 0 picks a free port),
//! `DATABASE_URL` (unset: in-memory), `SESSION_TTL_SECS` (28800; 0 = never idle out),
//! `SESSION_SLIDING` (true), `SESSION_TOUCH_INTERVAL_SECS` (60), `SESSION_COOKIE_SECURE`
//! (false here, since the example serves plain HTTP; true makes the cookies `__Host-`
//! cookies), `MAX_SESSIONS_PER_USER` (unlimited),
//! `STATEMENT_TIMEOUT_MS` (5000: the bound on each query of the session store and of the
//! example's own tables; beyond it a request is `500 Session store unavailable`),
//! `SESSION_DURABLE_REVOCATIONS` (false; true makes logout and every revocation wait until
//! the synchronous standby has applied it, see `PgStore::durable_revocations`),
//! `SESSION_SCHEMA` (unset: the crate's tables live in the connection's search path; a name
//! puts them in that schema, created if missing, beside the application's own tables, see
//! `PgStore::tables_schema`),
//! `DATABASE_DRIVER` (`deadpool`, the default: `PgStore` on its own deadpool-postgres pool;
//! `sqlx`: `SqlxStore` on a `sqlx::PgPool` made from `DATABASE_URL`, which needs the example
//! built with `--features sqlx`, a single-host URL, and no `SESSION_DURABLE_REVOCATIONS`; the
//! example's own queries of users and characters then keep a small deadpool pool of their
//! own, since they are the example's, not the session store's, and TLS on the sqlx pool would
//! need one of sqlx's TLS features, which the example does not enable),
//! `DATABASE_PREPARED` (`true`, the default: the session store and the example's own queries
//! prepare each statement once per connection; `false`: both send every statement unnamed,
//! with its parameters' types, parsed, bound and run in one round trip, which PgBouncer in
//! transaction pooling mode passes through, see `PgStore::prepared_statements`; anything else
//! is refused at start-up, and so is `false` with `DATABASE_DRIVER=sqlx`: sqlx prepares every
//! statement in a round trip of its own before running it, even with its statement cache off
//! (`statement_cache_capacity(0)`), and a transaction pooler may run the two on different
//! server connections),
//! `DATABASE_LISTEN_URL` (unset: `DATABASE_URL`; the `LISTEN` connection, with its own
//! `sslmode`, on which the server hears other instances' session events for its live
//! connections; it needs a session of its own, so behind a transaction pooler give it a direct
//! URL to PostgreSQL: PgBouncer drops the notifications that arrive between transactions).
//!
//! Through PgBouncer in transaction pooling mode (before 1.21, which can track named prepared
//! statements itself):
//!
//! ```text
//! DATABASE_URL=postgres://app:secret@pgbouncer:6432/app DATABASE_PREPARED=false \
//!   DATABASE_LISTEN_URL=postgres://app:secret@db:5432/app cargo run --example mud_server
//! ```
//!
//! `DATABASE_URL` takes libpq's `sslmode` (`disable`, `prefer` by default, `require`,
//! `verify-ca`, `verify-full`) and `sslrootcert` (a PEM file, or `system`) for TLS, for the
//! store's connections and its `LISTEN` connection alike (unless `DATABASE_LISTEN_URL` names
//! another, with its own; see `PgStore::connect`):
//! `DATABASE_URL='postgres://app:secret@db.example.com/app?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem'`.
//!
//! `DATABASE_URL` may name several servers for failover, in either form:
//! `postgres://app:secret@db1:5432,db2:5432/app?target_session_attrs=read-write&connect_timeout=2`
//! or `host=db1,db2 port=5432,5432 … target_session_attrs=read-write`. After the primary
//! fails, requests in flight get `500 Session store unavailable` and the server finds the new
//! primary on its own.
//!
//! Demo users `player`, `builder`, `admin`, `superuser` (password `<name>-pass`), and the
//! deactivated `banned` (`banned-pass`). `REFRESH_GRACE_SECS` (default 5) sets the
//! remember-me reuse grace window. Open <http://127.0.0.1:3000/account/sessions> in a browser
//! for the session-management page.
//!
//! Sudo mode: signing out other devices (`DELETE /sessions`, `DELETE /sessions/{id}` of
//! another session, the admin kick of another session), changing a role
//! (`POST /admin/users/{username}/role`) and (de)activating an account
//! (`POST /admin/users/{username}/active`) need a password
//! entered within `SESSION_RECENT_AUTH_SECS` (default 600) on this session; a session made
//! by a remember-me refresh needs one first. Otherwise they answer
//! `403 {"detail": "Recent authentication required", "reauthenticate": "/reauthenticate"}`,
//! and `POST /reauthenticate {"password": ...}` (throttled like login) records a fresh one on
//! the same session.
//!
//! Abuse limits (see `mud_server/login_guard.rs`): `PASSWORD_WORKERS` (the number of cores)
//! argon2 checks run at once and `PASSWORD_QUEUE` (16) more may wait, beyond which a login is
//! `503` with `Retry-After`; `LOGIN_RATE_PER_ADDRESS` (30), `LOGIN_RATE_PER_USERNAME` (10, per
//! username from one address) and `LOGIN_RATE_PER_ACCOUNT` (100, per username from anywhere)
//! are the login attempts per minute (as a burst, then evenly) before `429` with
//! `Retry-After`; 0 turns one off.
//!
//! The game: `GET /game/ws` upgrades to a WebSocket for a player with a selected character
//! (`GameUser`) whose role may `play_game`, and puts them in their world's room. Text
//! commands: `say <text>` (one line: no line breaks or control characters), `look`, `who`; a
//! message over 1 KiB closes the socket (1009). A browser authenticates the upgrade with its
//! session cookie, which is accepted only with this server's `Origin` (403 otherwise); any
//! other client sends `Authorization: Bearer <token>`. Each message counts as activity (the
//! session's debounced touch). When the session ends the server closes the socket with a
//! code and reason, and logs the cause: `4001 session revoked` (logout, revocation, kick),
//! `4002 session expired`, `4003 user inactive` (deactivated or deleted),
//! `4003 permission removed` (a role change took `play_game` away), `1011 session store
//! unavailable`. On PostgreSQL this holds across instances: each listens for the others'
//! changes on one connection (`LISTEN`), so a socket closes within moments of a change made
//! through any of them; on the in-memory store there is one instance.
//!
//! What a client sends: a request authenticated by `Authorization: Bearer <token>` needs
//! nothing else. Anything that sets, uses or clears the session cookie (`POST /login` without
//! a Bearer token, cookie-authenticated `POST`, `PUT`, `PATCH` and `DELETE`, logout and refresh
//! by cookie) must send `X-Requested-With: <anything>` or this server's `Origin`, else
//! `403 Cross-site request rejected`: `curl -H 'x-requested-with: curl' …`. The HTML forms
//! carry a CSRF token and the browser's `Origin`.

mod account_page;
mod game;
mod login_guard;

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, SaltString};
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, Path, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, ORIGIN, REFERRER_POLICY, RETRY_AFTER, SET_COOKIE,
    WWW_AUTHENTICATE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use deadpool_postgres::Pool;
use login_guard::{LoginRefusal, LoginThrottle, PasswordChecker};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_postgres::types::{ToSql, Type};
use tower_session_auth::permissions::{BanUsers, ChangeRoles, KickUsers, ViewLogs};
use tower_session_auth::{
    AuthRejection, AuthUser, CookieConfig, CsrfConfig, FromUserId, GameUser, LoginOptions,
    MemoryStore, NoStore, PgStore, RecentAuth, Refresh, RefreshConfig, RequirePermission, Session,
    SessionConfig, SessionId, SessionLayer, SessionManager, credentials::TokenSource,
    store::CharacterSelection, store::StoreError, token::RefreshToken,
};

#[derive(Clone, Copy)]
struct DemoUser {
    username: &'static str,
    role: &'static str,
    active: bool,
    /// (name, world)
    characters: &'static [(&'static str, &'static str)],
}

const fn demo(
    username: &'static str,
    role: &'static str,
    active: bool,
    characters: &'static [(&'static str, &'static str)],
) -> DemoUser {
    DemoUser {
        username,
        role,
        active,
        characters,
    }
}

const DEMO_USERS: &[DemoUser] = &[
    demo(
        "player",
        "player",
        true,
        &[
            ("player_char", "pipeworks_web"),
            ("player_alt", "daily_undertaking"),
        ],
    ),
    demo(
        "builder",
        "worldbuilder",
        true,
        &[("builder_char", "pipeworks_web")],
    ),
    demo("admin", "admin", true, &[("admin_char", "pipeworks_web")]),
    demo(
        "superuser",
        "superuser",
        true,
        &[("superuser_char", "pipeworks_web")],
    ),
    demo("banned", "player", false, &[]),
];
const DEMO_WORLDS: &[(&str, &str)] = &[
    ("pipeworks_web", "Pipeworks"),
    ("daily_undertaking", "The Daily Undertaking"),
];

/// Window for `active_players` on `/health`, as the original server counted it.
const ACTIVE_WINDOW: Duration = Duration::from_secs(30 * 60);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let config = session_config_from_env()?;
    let guard = LoginGuard::from_env()?;
    let prepared = prepared_statements()?;
    let (manager, directory) = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() && sqlx_driver()? => on_sqlx(&url, config, prepared).await?,
        Ok(url) if !url.is_empty() => {
            let timeout = Duration::from_millis(env_var(
                "STATEMENT_TIMEOUT_MS",
                PgStore::DEFAULT_STATEMENT_TIMEOUT.as_millis() as u64,
            )?);
            let mut store = PgStore::connect(&url)?
                .statement_timeout(timeout)
                .durable_revocations(env_var("SESSION_DURABLE_REVOCATIONS", false)?)
                .prepared_statements(prepared);
            match std::env::var("SESSION_SCHEMA") {
                Ok(schema) if !schema.is_empty() => store = store.tables_schema(&schema)?,
                _ => {}
            }
            store.migrate().await?;
            let directory = Directory::Pg {
                pool: store.pool().clone(),
                timeout,
                prepared,
            };
            directory.seed().await?;
            store.check_schema().await?;
            // Live connections hear other instances' logouts, revocations, role changes and
            // deactivations through one LISTEN connection.
            store.install_invalidation_triggers().await?;
            let manager = SessionManager::try_new(store.clone(), config)?;
            // `DATABASE_LISTEN_URL`'s settings, or else the store's, TLS included (`sslmode`,
            // `sslrootcert`).
            let (mut listen, tls) =
                tower_session_auth::store::PgTls::from_url(&listen_url(&url, prepared))?;
            listen.keepalives_idle(Duration::from_secs(30));
            store
                .clone()
                .tls(tls)
                .spawn_session_listener(listen, manager.clone());
            (manager, directory)
        }
        _ => {
            let store = MemoryStore::new();
            let directory = Directory::memory(store.clone());
            (SessionManager::try_new(store, config)?, directory)
        }
    };
    let sweeper = manager.spawn_sweeper(Duration::from_secs(300))?;
    let pruner = {
        let throttle = Arc::clone(&guard.throttle);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(60));
            loop {
                ticks.tick().await;
                throttle.prune();
            }
        })
    };
    let health = HealthCount {
        interval: Duration::from_secs(env_var("HEALTH_COUNT_INTERVAL_SECS", 5)?),
        last: std::sync::Mutex::new(None),
        computing: tokio::sync::Mutex::new(()),
    };
    let app = app(manager, directory, guard, health);

    let addr = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    sweeper.abort();
    pruner.abort();
    Ok(())
}

/// Whether `DATABASE_DRIVER` asks for the sqlx store (`sqlx`) rather than the default
/// (`deadpool`).
fn sqlx_driver() -> Result<bool, String> {
    match std::env::var("DATABASE_DRIVER").as_deref() {
        Err(_) | Ok("" | "deadpool") => Ok(false),
        Ok("sqlx") => Ok(true),
        Ok(other) => Err(format!(
            "DATABASE_DRIVER: {other:?} is neither deadpool nor sqlx"
        )),
    }
}

/// Whether the session store and the example's own queries use named prepared statements
/// (`DATABASE_PREPARED`, default `true`); `false` is for a transaction pooler.
fn prepared_statements() -> Result<bool, String> {
    match std::env::var("DATABASE_PREPARED").as_deref().map(str::trim) {
        Err(_) | Ok("" | "true") => Ok(true),
        Ok("false") => Ok(false),
        Ok(other) => Err(format!(
            "DATABASE_PREPARED: {other:?} is neither true nor false"
        )),
    }
}

/// Where the `LISTEN` connection goes: `DATABASE_LISTEN_URL`, or else `url` (the store's).
/// Without named prepared statements the store is likely behind a transaction pooler, where
/// `LISTEN` does not work: the server then says so once at start-up.
fn listen_url(url: &str, prepared: bool) -> String {
    match std::env::var("DATABASE_LISTEN_URL") {
        Ok(listen) if !listen.is_empty() => listen,
        _ => {
            if !prepared {
                tracing::warn!(
                    "DATABASE_PREPARED=false without DATABASE_LISTEN_URL: the LISTEN connection \
                     goes to DATABASE_URL; behind a transaction pooler it misses other \
                     instances' session events, so set DATABASE_LISTEN_URL to a direct URL"
                );
            }
            url.to_owned()
        }
    }
}

/// The session store on a `sqlx::PgPool` (`DATABASE_DRIVER=sqlx`): what an application that
/// already holds one does. The example's own tables keep their tokio-postgres queries, on a
/// small deadpool pool of their own.
#[cfg(feature = "sqlx")]
async fn on_sqlx(
    url: &str,
    config: SessionConfig,
    prepared: bool,
) -> Result<(SessionManager, Directory), Box<dyn std::error::Error>> {
    use tower_session_auth::store::{PgTls, SqlxStore};

    if env_var("SESSION_DURABLE_REVOCATIONS", false)? {
        let refusal = "SESSION_DURABLE_REVOCATIONS needs DATABASE_DRIVER=deadpool: \
                       SqlxStore does not offer durable revocations";
        return Err(refusal.into());
    }
    if !prepared {
        // sqlx parses and describes each statement (under a name, unless the query is not
        // persistent) in a round trip of its own before it binds and runs it, with its
        // statement cache off (`statement_cache_capacity(0)`) too: between the two, a
        // transaction pooler may hand the client another server connection.
        let refusal = "DATABASE_PREPARED=false needs DATABASE_DRIVER=deadpool: sqlx prepares \
                       every statement in a round trip of its own before running it, even \
                       with its statement cache off, and a transaction pooler may run the two \
                       on different server connections";
        return Err(refusal.into());
    }
    let timeout = Duration::from_millis(env_var(
        "STATEMENT_TIMEOUT_MS",
        SqlxStore::DEFAULT_STATEMENT_TIMEOUT.as_millis() as u64,
    )?);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(5))
        // No ping before each use: a validation stays one round trip.
        .test_before_acquire(false)
        .connect_lazy(url)?;
    // The settings of the example's own pool, and of the LISTEN connection, TLS included.
    let (own, tls) = PgTls::from_url(url)?;
    let (mut listen, listen_tls) = PgTls::from_url(&listen_url(url, prepared))?;
    let mut store = SqlxStore::new(pool)
        .statement_timeout(timeout)
        .tls(listen_tls);
    match std::env::var("SESSION_SCHEMA") {
        Ok(schema) if !schema.is_empty() => store = store.tables_schema(&schema)?,
        _ => {}
    }
    store.migrate().await?;
    let directory = Directory::Pg {
        pool: directory_pool(own, tls)?,
        timeout,
        prepared,
    };
    directory.seed().await?;
    store.check_schema().await?;
    store.install_invalidation_triggers().await?;
    let manager = SessionManager::try_new(store.clone(), config)?;
    listen.keepalives_idle(Duration::from_secs(30));
    store.spawn_session_listener(listen, manager.clone());
    Ok((manager, directory))
}

#[cfg(not(feature = "sqlx"))]
async fn on_sqlx(
    _url: &str,
    _config: SessionConfig,
    _prepared: bool,
) -> Result<(SessionManager, Directory), Box<dyn std::error::Error>> {
    Err("DATABASE_DRIVER=sqlx needs the sqlx feature: \
         cargo run --features sqlx --example mud_server"
        .into())
}

/// The pool of the example's own queries when the session store is on sqlx.
#[cfg(feature = "sqlx")]
fn directory_pool(
    config: tokio_postgres::Config,
    tls: tower_session_auth::store::PgTls,
) -> Result<Pool, Box<dyn std::error::Error>> {
    let manager = deadpool_postgres::Manager::new(config, tls);
    Ok(Pool::builder(manager)
        .max_size(4)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .build()?)
}

fn env_var<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .map_err(|_| format!("{name}: cannot parse {value:?}")),
        Err(_) => Ok(default),
    }
}

fn session_config_from_env() -> Result<SessionConfig, Box<dyn std::error::Error>> {
    let ttl: u64 = env_var("SESSION_TTL_SECS", 28_800)?;
    let max: u32 = env_var("MAX_SESSIONS_PER_USER", 0)?;
    let secure: bool = env_var("SESSION_COOKIE_SECURE", false)?;
    Ok(SessionConfig::default()
        .idle_timeout((ttl > 0).then(|| Duration::from_secs(ttl)))
        .sliding(env_var("SESSION_SLIDING", true)?)
        .touch_interval(Duration::from_secs(env_var(
            "SESSION_TOUCH_INTERVAL_SECS",
            60,
        )?))
        .max_sessions_per_user((max > 0).then_some(max))
        // Over HTTPS the session cookie is a `__Host-` cookie, which a sibling subdomain can
        // neither set nor shadow.
        .cookie(CookieConfig::default().secure(secure).host_prefix(secure))
        // Cookie-authenticated POST/PUT/PATCH/DELETE must carry `X-Requested-With` or this
        // server's `Origin`.
        .csrf(Some(CsrfConfig::default()))
        .refresh(
            RefreshConfig::default().grace(Duration::from_secs(env_var("REFRESH_GRACE_SECS", 5)?)),
        )
        .recent_auth_max_age(Duration::from_secs(env_var(
            "SESSION_RECENT_AUTH_SECS",
            600,
        )?))
        .reauthenticate_route("/reauthenticate"))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[derive(Clone)]
struct AppState {
    manager: SessionManager,
    directory: Directory,
    guard: LoginGuard,
    health: Arc<HealthCount>,
    rooms: Arc<game::Rooms>,
}

/// The login's defences: the bounded password workers, the dummy hash that unknown users are
/// checked against, and the brute-force throttle.
#[derive(Clone)]
struct LoginGuard {
    passwords: PasswordChecker,
    dummy_hash: Arc<str>,
    throttle: Arc<LoginThrottle>,
}

impl LoginGuard {
    fn from_env() -> Result<Self, Box<dyn std::error::Error>> {
        let workers = env_var("PASSWORD_WORKERS", login_guard::default_workers())?;
        Ok(Self {
            passwords: PasswordChecker::new(workers, env_var("PASSWORD_QUEUE", 16)?)?,
            dummy_hash: hash_password("not a password anyone has").into(),
            throttle: Arc::new(LoginThrottle::new(
                env_var("LOGIN_RATE_PER_ADDRESS", 30)?,
                env_var("LOGIN_RATE_PER_USERNAME", 10)?,
                env_var("LOGIN_RATE_PER_ACCOUNT", 100)?,
            )),
        })
    }
}

fn app(
    manager: SessionManager,
    directory: Directory,
    guard: LoginGuard,
    health_count: HealthCount,
) -> Router {
    let state = AppState {
        manager: manager.clone(),
        directory,
        guard,
        health: Arc::new(health_count),
        rooms: Arc::default(),
    };
    Router::new()
        .route("/login", post(login))
        .route("/refresh", post(refresh))
        .route("/logout", post(logout))
        .route("/reauthenticate", post(reauthenticate))
        .route("/me", get(me))
        .route("/ping", post(ping))
        .route("/characters", get(characters))
        .route("/characters/select", post(select_character))
        .route("/game/whoami", get(whoami))
        .route("/admin/logs", get(admin_logs))
        .route("/admin/sessions/kick", post(kick))
        .route("/admin/users/{username}/role", post(change_role))
        .route("/admin/users/{username}/active", post(set_active))
        .route("/game/ws", get(game::upgrade))
        .route(
            "/sessions",
            get(list_sessions).delete(revoke_other_sessions),
        )
        .route("/sessions/{id}", delete(revoke_session))
        .route("/health", get(health))
        .route(
            "/account/login",
            get(account_page::login_page).post(account_page::login),
        )
        .route("/account/logout", post(account_page::logout))
        .route("/account/sessions", get(account_page::page))
        .route(
            "/account/sessions/revoke-others",
            post(account_page::revoke_others),
        )
        .route("/account/sessions/{id}/revoke", post(account_page::revoke))
        .route("/account/style.css", get(account_page::stylesheet))
        .route("/account/game", get(account_page::game_page))
        .route("/account/game.js", get(account_page::game_script))
        .fallback(|| async { detail(StatusCode::NOT_FOUND, "Not Found") })
        .method_not_allowed_fallback(|| async {
            detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
        })
        .with_state(state)
        .layer(
            SessionLayer::new(manager).client_ip(|extensions, _headers| {
                extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|info| info.0.ip())
            }),
        )
        .layer(axum::middleware::map_response(security_headers))
}

/// Headers on every response: nothing is cached unless a handler says otherwise (token bodies
/// and pages about the user must not be), nothing may frame the pages, the pages run no
/// script and load only this origin's stylesheet (the game page's own policy adds this
/// origin's script and socket), no MIME sniffing, no cross-origin
/// `Referer`, and every 401 names its scheme.
async fn security_headers(mut response: Response) -> Response {
    let unauthorized = response.status() == StatusCode::UNAUTHORIZED;
    let headers = response.headers_mut();
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if !headers.contains_key(CONTENT_SECURITY_POLICY) {
        headers.insert(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'self'; form-action 'self'; \
                 frame-ancestors 'none'; base-uri 'none'",
            ),
        );
    }
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if unauthorized && !headers.contains_key(WWW_AUTHENTICATE) {
        headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

// ---------------------------------------------------------------------------------------------
// Errors

/// A handler error: an extractor-style rejection, a refused login, or an `{"detail"}` with a
/// status.
enum ApiError {
    Auth(AuthRejection),
    Login(LoginRefusal),
    Detail(StatusCode, Cow<'static, str>),
}

fn detail(status: StatusCode, text: &'static str) -> ApiError {
    ApiError::Detail(status, Cow::Borrowed(text))
}

impl From<AuthRejection> for ApiError {
    fn from(rejection: AuthRejection) -> Self {
        Self::Auth(rejection)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        tracing::error!(%error, "store error in handler");
        Self::Auth(AuthRejection::StoreUnavailable)
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(error: tokio_postgres::Error) -> Self {
        StoreError::from(error).into()
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        StoreError::from(error).into()
    }
}

/// A body that is not the expected JSON is answered `{"detail": ...}` like every other error.
impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::Detail(rejection.status(), Cow::Owned(rejection.body_text()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Auth(rejection) => rejection.into_response(),
            Self::Login(refusal) => {
                let mut response = (
                    refusal.status(),
                    Json(json!({ "detail": refusal.detail() })),
                )
                    .into_response();
                if let Some(secs) = refusal.retry_after() {
                    response.headers_mut().insert(RETRY_AFTER, secs.into());
                }
                response
            }
            Self::Detail(status, detail) => {
                (status, Json(json!({ "detail": detail }))).into_response()
            }
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// `Json<T>` whose rejection is `{"detail": ...}`.
#[derive(FromRequest)]
#[from_request(via(Json), rejection(ApiError))]
struct ApiJson<T>(T);

// ---------------------------------------------------------------------------------------------
// Handlers: each signature states its access rule.

#[derive(Deserialize)]
struct LoginRequest {
    username: String,
    password: String,
    #[serde(default)]
    remember: bool,
}

/// Checks a username and password behind the size limit, the throttle and the bounded
/// password workers. Unknown users are checked against a dummy hash, so that they cost (and
/// take as long as) a real check.
async fn check_credentials(
    state: &AppState,
    session: &Session,
    username: &str,
    password: &str,
) -> Result<UserRow, LoginRefusal> {
    if password.len() > login_guard::MAX_PASSWORD_BYTES {
        return Err(LoginRefusal::TooLong("Password too long"));
    }
    if username.len() > login_guard::MAX_USERNAME_BYTES {
        return Err(LoginRefusal::TooLong("Username too long"));
    }
    let guard = &state.guard;
    guard
        .throttle
        .check(session.client_ip(), username)
        .map_err(LoginRefusal::Throttled)?;
    // Admitted before the user lookup: a flood beyond the workers and their queue is refused
    // before it reaches the database.
    let admitted = guard
        .passwords
        .admit()
        .map_err(|login_guard::Busy| LoginRefusal::Busy)?;
    let user = state
        .directory
        .find_user(username)
        .await
        .map_err(|_| LoginRefusal::StoreUnavailable)?;
    let hash = user.as_ref().map_or_else(
        || Arc::clone(&guard.dummy_hash),
        |user| user.password_hash.clone(),
    );
    let password_ok = guard
        .passwords
        .verify(&admitted, password, hash)
        .await
        .map_err(|login_guard::Busy| LoginRefusal::Busy)?;
    match user {
        Some(user) if password_ok && user.is_active => Ok(user),
        Some(_) if password_ok => Err(LoginRefusal::Deactivated),
        _ => Err(LoginRefusal::InvalidCredentials),
    }
}

/// Whether a login that would set the cookie (no `Bearer` token) looks cross-site: it is not
/// from this origin by `Sec-Fetch-Site` / `Origin`, or carries neither `Origin` nor
/// `X-Requested-With`. This is the crate's [`CsrfConfig`] rule as the example configures it,
/// checked before the password so that a refused login costs no hash; the crate checks again
/// when it sets the cookie.
fn refuses_cross_site(session: &Session, headers: &HeaderMap) -> bool {
    let by_header = matches!(
        session.token_source(),
        Some(TokenSource::Bearer | TokenSource::Header)
    );
    let announced = headers.contains_key("x-requested-with") || headers.contains_key(ORIGIN);
    !by_header && (!login_guard::same_origin(headers) || !announced)
}

/// A cookie login without remember-me drops whatever refresh cookie the browser holds (the
/// previous user's, possibly): the refresh cookie is scoped to `/refresh`, so this request
/// cannot see it, and clears it blindly.
fn drops_refresh_cookie(session: &Session, remember: bool) -> bool {
    !remember
        && !matches!(
            session.token_source(),
            Some(TokenSource::Bearer | TokenSource::Header)
        )
}

async fn login(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginRequest>,
) -> ApiResult<Response> {
    // The crate checks this again when it sets the cookie; checking first spares the hash.
    if refuses_cross_site(&session, &headers) {
        return Err(ApiError::Auth(AuthRejection::CrossSiteRequest));
    }
    let user = check_credentials(&state, &session, &body.username, &body.password)
        .await
        .map_err(ApiError::Login)?;
    // Read before logging in: a failure here must not leave a session behind.
    let characters = state.directory.characters(user.id).await?;
    let login = session
        .login(user.id, LoginOptions::new().remember(body.remember))
        .await?;
    let mut reply = json!({
        "token": login.token.expose(),
        "session_id": login.session.id,
        "username": user.username,
        "role": user.role,
        "characters": characters,
    });
    if let Some(refresh) = &login.refresh {
        reply["refresh_token"] = json!(refresh.expose());
    }
    let mut response = Json(reply).into_response();
    if drops_refresh_cookie(&session, body.remember) {
        response
            .headers_mut()
            .append(SET_COOKIE, state.manager.refresh_removal_cookie());
    }
    Ok(response)
}

#[derive(Deserialize)]
struct RefreshBody {
    refresh_token: Option<String>,
}

/// Trades a remember-me token (from the body, or else the refresh cookie) for a new session.
async fn refresh(
    session: Session,
    _headers: HeaderMap,
    body: Bytes,
) -> ApiResult<NoStore<Json<Value>>> {
    let body_token = if body.is_empty() {
        None
    } else {
        serde_json::from_slice::<RefreshBody>(&body)
            .map_err(|_| detail(StatusCode::BAD_REQUEST, "Invalid JSON body"))?
            .refresh_token
    };
    match session.refresh(body_token.as_deref()).await? {
        Refresh::Refreshed(login) => Ok(NoStore(Json(json!({
            "token": login.token.expose(),
            "session_id": login.session.id,
            "refresh_token": login.refresh.as_ref().map(|refresh| refresh.expose()),
        })))),
        Refresh::Invalid => Err(detail(
            StatusCode::UNAUTHORIZED,
            "Invalid or expired refresh token",
        )),
        Refresh::ReuseDetected => Err(detail(
            StatusCode::UNAUTHORIZED,
            "Refresh token reuse detected",
        )),
    }
}

/// Always logs out: a live session is removed (with its remember-me series), and whatever
/// cookies the browser presented are cleared, even when its session has already expired. A
/// client that keeps its refresh token itself may send it as `{"refresh_token": ...}`: that
/// series ends too (if the series issued that secret), even when the session is long gone.
/// A cross-site cookie request is still refused (403), so another site cannot sign users out.
async fn logout(
    State(state): State<AppState>,
    user: Option<AuthUser>,
    session: Session,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let refresh_token = if body.is_empty() {
        None
    } else {
        serde_json::from_slice::<RefreshBody>(&body)
            .map_err(|_| detail(StatusCode::BAD_REQUEST, "Invalid JSON body"))?
            .refresh_token
    };
    session.logout().await?;
    if let Some(token) = refresh_token.as_deref().and_then(RefreshToken::parse) {
        state.manager.end_series(&token).await?;
    }
    let message = match user {
        Some(user) => format!("Goodbye, {}!", user.username),
        None => "Goodbye!".to_owned(),
    };
    Ok(Json(json!({ "message": message })))
}

#[derive(Deserialize)]
struct ReauthenticateRequest {
    password: String,
}

/// Sudo mode: the caller enters their own password again, and the same session (same token,
/// same remember-me series) counts as recently authenticated. Throttled, bounded and answered
/// like a login; a wrong password changes nothing.
async fn reauthenticate(
    State(state): State<AppState>,
    user: AuthUser,
    session: Session,
    ApiJson(body): ApiJson<ReauthenticateRequest>,
) -> ApiResult<Json<Value>> {
    check_credentials(&state, &session, &user.username, &body.password)
        .await
        .map_err(ApiError::Login)?;
    if !session.reauthenticate().await? {
        // Logged out or expired since the extractor ran.
        return Err(ApiError::Auth(AuthRejection::InvalidSession));
    }
    Ok(Json(json!({ "reauthenticated": true })))
}

async fn me(user: AuthUser) -> Json<Value> {
    Json(json!({
        "user_id": user.user_id,
        "username": user.username,
        "role": user.role,
        "session_id": user.session_id,
    }))
}

/// A heartbeat: validating the session records activity (debounced).
async fn ping(_user: AuthUser) -> Json<Value> {
    Json(json!({ "ok": true }))
}

async fn characters(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Value>> {
    Ok(Json(json!(state.directory.characters(user.user_id).await?)))
}

#[derive(Deserialize)]
struct SelectRequest {
    character_id: i64,
}

async fn select_character(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<SelectRequest>,
) -> ApiResult<Json<Value>> {
    match state
        .manager
        .select_character(user.session_id, user.user_id, body.character_id)
        .await?
    {
        CharacterSelection::Selected(character) => Ok(Json(json!({
            "character_name": character.name,
            "world_id": character.world_id,
        }))),
        CharacterSelection::CharacterNotFound => Err(detail(
            StatusCode::NOT_FOUND,
            "Character not found for this user",
        )),
        CharacterSelection::SessionNotFound => Err(ApiError::Auth(AuthRejection::InvalidSession)),
    }
}

async fn whoami(user: GameUser) -> Json<Value> {
    Json(json!({
        "user_id": user.user_id,
        "username": user.username,
        "role": user.role,
        "character_id": user.character_id,
        "character_name": user.character_name,
        "world_id": user.world_id,
    }))
}

async fn admin_logs(RequirePermission(admin, ..): RequirePermission<ViewLogs>) -> Json<Value> {
    Json(json!({
        "viewer": admin.username,
        "logs": ["server started", "demo data ready"],
    }))
}

#[derive(Deserialize)]
struct KickRequest {
    session_id: String,
}

/// Ends any session; kicking the caller's own is a logout (the response clears the cookies).
/// Kicking another session needs recent authentication, like revoking one: otherwise a
/// session minted from a stolen refresh token could sign its owner's other devices out.
async fn kick(
    RequirePermission(admin, ..): RequirePermission<KickUsers>,
    session: Session,
    ApiJson(body): ApiJson<KickRequest>,
) -> ApiResult<Json<Value>> {
    let id = body.session_id.parse::<SessionId>().ok();
    if id != Some(admin.session_id) {
        session.require_recent_auth().await?;
    }
    let removed = match id {
        Some(id) => session.kick(id).await?,
        None => false,
    };
    Ok(Json(json!({ "removed": removed })))
}

#[derive(Deserialize)]
struct RoleRequest {
    role: String,
}

async fn change_role(
    State(state): State<AppState>,
    RecentAuth(admin): RecentAuth<RequirePermission<ChangeRoles>>,
    Path(username): Path<String>,
    ApiJson(body): ApiJson<RoleRequest>,
) -> ApiResult<Json<Value>> {
    let role = body.role.trim().to_ascii_lowercase();
    if state.manager.policy().role_level(&role).is_none() {
        return Err(detail(StatusCode::UNPROCESSABLE_ENTITY, "Unknown role"));
    }
    let Some(user_id) = state.directory.set_role(&username, &role).await? else {
        return Err(detail(StatusCode::NOT_FOUND, "User not found"));
    };
    // The user's live connections check their permission again (on PostgreSQL the trigger
    // also tells the other instances).
    state.manager.invalidate_user(user_id);
    tracing::info!(by = %admin.username, user = %username, %role, "role changed");
    Ok(Json(json!({ "username": username, "role": role })))
}

#[derive(Deserialize)]
struct ActiveRequest {
    active: bool,
}

/// Activates or deactivates an account. A deactivated user's requests get 401 at once and
/// their live connections close (4003). Needs recent authentication, like a role change:
/// otherwise a session minted from a stolen refresh token could lock every other
/// administrator out.
async fn set_active(
    State(state): State<AppState>,
    RecentAuth(admin): RecentAuth<RequirePermission<BanUsers>>,
    Path(username): Path<String>,
    ApiJson(body): ApiJson<ActiveRequest>,
) -> ApiResult<Json<Value>> {
    let Some(user_id) = state.directory.set_active(&username, body.active).await? else {
        return Err(detail(StatusCode::NOT_FOUND, "User not found"));
    };
    state.manager.invalidate_user(user_id);
    tracing::info!(by = %admin.username, user = %username, active = body.active, "account (de)activated");
    Ok(Json(json!({ "username": username, "active": body.active })))
}

#[derive(Serialize)]
struct SessionListing {
    #[serde(flatten)]
    record: tower_session_auth::store::SessionRecord,
    current: bool,
}

async fn list_sessions(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<Vec<SessionListing>>> {
    let sessions = state.manager.list_for_user(user.user_id).await?;
    Ok(Json(
        sessions
            .into_iter()
            .map(|record| SessionListing {
                current: record.id == user.session_id,
                record,
            })
            .collect(),
    ))
}

/// Revokes one of the caller's sessions. Revoking the current one is a logout: the response
/// also clears the session and refresh cookies. Revoking another needs recent authentication
/// (asked before anything else, so a stale session learns nothing about other ids).
async fn revoke_session(
    user: AuthUser,
    session: Session,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let not_found = || detail(StatusCode::NOT_FOUND, "Session not found");
    let id = id.parse::<SessionId>().ok();
    if id != Some(user.session_id) {
        session.require_recent_auth().await?;
    }
    let id = id.ok_or_else(not_found)?;
    if session.revoke(user.user_id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found())
    }
}

async fn revoke_other_sessions(
    State(state): State<AppState>,
    RecentAuth(user): RecentAuth,
) -> ApiResult<Json<Value>> {
    let revoked = state
        .manager
        .revoke_others(user.user_id, user.session_id)
        .await?;
    Ok(Json(json!({ "revoked": revoked })))
}

async fn health(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let active = state.health.active_players(&state.manager).await?;
    Ok(Json(json!({ "status": "ok", "active_players": active })))
}

/// The `/health` count, computed at most once per `interval` (`HEALTH_COUNT_INTERVAL_SECS`,
/// default 5) with at most one computation in flight, so a flood of `/health` requests costs
/// the database one count every few seconds instead of one per request. A failed count is
/// remembered for the interval too: while the database is down, `/health` answers its 500 at
/// once instead of queueing each request behind a new attempt.
struct HealthCount {
    interval: Duration,
    /// When the last count finished, and its outcome (`None`: the store failed).
    last: std::sync::Mutex<Option<(Instant, Option<u64>)>>,
    computing: tokio::sync::Mutex<()>,
}

impl HealthCount {
    async fn active_players(&self, manager: &SessionManager) -> ApiResult<u64> {
        let fresh = || {
            self.last
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .filter(|(at, _)| at.elapsed() < self.interval)
                .map(|(_, outcome)| outcome.ok_or(ApiError::Auth(AuthRejection::StoreUnavailable)))
        };
        if let Some(outcome) = fresh() {
            return outcome;
        }
        let _computing = self.computing.lock().await;
        // Another request may have counted while this one waited.
        if let Some(outcome) = fresh() {
            return outcome;
        }
        let outcome = manager.count_active(Some(ACTIVE_WINDOW)).await;
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), outcome.as_ref().ok().copied()));
        Ok(outcome?)
    }
}

// ---------------------------------------------------------------------------------------------
// Passwords

fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the operating system's CSPRNG");
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashing with default parameters")
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// The application's own users and characters

struct UserRow {
    id: i64,
    username: String,
    role: String,
    is_active: bool,
    password_hash: Arc<str>,
}

#[derive(Serialize)]
struct Character {
    id: i64,
    name: String,
    world_id: Option<String>,
}

/// Runs `$body` (using `$client`, a connection of `$pool`) within `$timeout`, as the session
/// store bounds its own statements: a query that waits on a lock (an `ALTER TABLE users`) or on
/// a silent network answers `500 Session store unavailable` instead of hanging the request and
/// holding a pooled connection. A timed-out connection is never reused, and the server is asked
/// to cancel its statement.
macro_rules! bounded {
    ($pool:expr, $timeout:expr, |$client:ident| $body:expr) => {{
        let timeout: Duration = $timeout;
        let $client = $pool.get().await?;
        let outcome = tokio::time::timeout(timeout, async { $body }).await;
        match outcome {
            Ok(result) => result,
            Err(_) => {
                let cancel = $client.cancel_token();
                drop(deadpool_postgres::Object::take($client));
                tokio::spawn(async move {
                    let _ =
                        tokio::time::timeout(timeout, cancel.cancel_query(tokio_postgres::NoTls))
                            .await;
                });
                Err(StoreError::Timeout(timeout).into())
            }
        }
    }};
}

/// Where users, passwords and characters live: beside the in-memory session store, or in
/// PostgreSQL tables that the session store's validating statement joins.
#[derive(Clone)]
enum Directory {
    Memory {
        store: MemoryStore,
        passwords: Arc<HashMap<String, Arc<str>>>,
    },
    /// Every query is bounded by `timeout`, like the session store's statements, and is a
    /// named prepared statement or not as `prepared` says (`DATABASE_PREPARED`, see [`query`]).
    Pg {
        pool: Pool,
        timeout: Duration,
        prepared: bool,
    },
}

/// Runs one statement of the example's own tables, its parameters' types declared: prepared
/// once per connection (`prepare_typed_cached`) and from then on only bound and run, or, with
/// `prepared` off (`DATABASE_PREPARED=false`), sent unnamed and parsed, bound and run in one
/// round trip (`query_typed`), as the session store does with
/// `PgStore::prepared_statements(false)`: a transaction pooler may hand each statement to
/// another server connection, where a statement prepared on the last one does not exist.
async fn query(
    client: &deadpool_postgres::Client,
    prepared: bool,
    sql: &str,
    params: &[(&(dyn ToSql + Sync), Type)],
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    if !prepared {
        return client.query_typed(sql, params).await;
    }
    let types: Vec<Type> = params.iter().map(|(_, ty)| ty.clone()).collect();
    let statement = client.prepare_typed_cached(sql, &types).await?;
    let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|&(value, _)| value).collect();
    client.query(&statement, &values).await
}

const PG_DEMO_TABLES: &str = "
    CREATE TABLE IF NOT EXISTS worlds (
        id text PRIMARY KEY,
        name text NOT NULL);
    CREATE TABLE IF NOT EXISTS users (
        id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        username text NOT NULL UNIQUE,
        password_hash text NOT NULL,
        role text NOT NULL DEFAULT 'player',
        is_active boolean NOT NULL DEFAULT true,
        created_at timestamptz NOT NULL DEFAULT now());
    CREATE TABLE IF NOT EXISTS characters (
        id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        name text NOT NULL UNIQUE,
        world_id text REFERENCES worlds (id));
    CREATE INDEX IF NOT EXISTS characters_user_id_idx ON characters (user_id);";

impl Directory {
    fn memory(store: MemoryStore) -> Self {
        let mut passwords = HashMap::new();
        let mut character_id = 0;
        for (index, demo) in DEMO_USERS.iter().enumerate() {
            let DemoUser {
                username,
                role,
                active,
                characters,
            } = *demo;
            let user_id = index as i64 + 1;
            store.upsert_user(user_id, username, Some(role), active);
            passwords.insert(
                username.to_owned(),
                hash_password(&format!("{username}-pass")).into(),
            );
            for &(name, world) in characters {
                character_id += 1;
                store.upsert_character(character_id, user_id, name, Some(world));
            }
        }
        Self::Memory {
            store,
            passwords: Arc::new(passwords),
        }
    }

    /// Creates the demo tables if absent and adds the demo data that is missing. Safe to run
    /// from several processes at once. Its statements run once, so they are never prepared
    /// (`query_typed`), whatever `DATABASE_PREPARED` says.
    async fn seed(&self) -> Result<(), Box<dyn std::error::Error>> {
        let Self::Pg { pool, .. } = self else {
            return Ok(());
        };
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        tx.batch_execute("SELECT pg_advisory_xact_lock(hashtextextended('mud_server.seed', 0))")
            .await?;
        tx.batch_execute(PG_DEMO_TABLES).await?;
        for &(id, name) in DEMO_WORLDS {
            tx.query_typed(
                "INSERT INTO worlds (id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[(&id, Type::TEXT), (&name, Type::TEXT)],
            )
            .await?;
        }
        for demo in DEMO_USERS {
            let DemoUser {
                username,
                role,
                active,
                characters,
            } = *demo;
            let missing = tx
                .query_typed(
                    "SELECT 1 FROM users WHERE username = $1",
                    &[(&username, Type::TEXT)],
                )
                .await?
                .is_empty();
            if missing {
                let hash = hash_password(&format!("{username}-pass"));
                tx.query_typed(
                    "INSERT INTO users (username, password_hash, role, is_active) \
                     VALUES ($1, $2, $3, $4)",
                    &[
                        (&username, Type::TEXT),
                        (&hash, Type::TEXT),
                        (&role, Type::TEXT),
                        (&active, Type::BOOL),
                    ],
                )
                .await?;
            }
            for &(name, world) in characters {
                tx.query_typed(
                    "INSERT INTO characters (user_id, name, world_id) \
                     SELECT id, $2, $3 FROM users WHERE username = $1 \
                     ON CONFLICT (name) DO NOTHING",
                    &[
                        (&username, Type::TEXT),
                        (&name, Type::TEXT),
                        (&world, Type::TEXT),
                    ],
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn find_user(&self, username: &str) -> ApiResult<Option<UserRow>> {
        match self {
            Self::Memory { store, passwords } => {
                Ok(store.user_id_by_name(username).and_then(|id| {
                    let id = i64::from_user_id(&id)?;
                    let user = store.user(id)?;
                    Some(UserRow {
                        id,
                        role: user.role.unwrap_or_default(),
                        is_active: user.is_active,
                        password_hash: passwords.get(&user.username)?.clone(),
                        username: user.username,
                    })
                }))
            }
            Self::Pg {
                pool,
                timeout,
                prepared,
            } => bounded!(pool, *timeout, |client| {
                let rows = query(
                    &client,
                    *prepared,
                    "SELECT id, username, role, is_active, password_hash \
                     FROM users WHERE username = $1",
                    &[(&username, Type::TEXT)],
                )
                .await?;
                // At most one row: `username` is unique.
                Ok(rows.first().map(|row| UserRow {
                    id: row.get(0),
                    username: row.get(1),
                    role: row.get(2),
                    is_active: row.get(3),
                    password_hash: row.get::<_, String>(4).into(),
                }))
            }),
        }
    }

    async fn characters(&self, user_id: i64) -> ApiResult<Vec<Character>> {
        match self {
            Self::Memory { store, .. } => Ok(store
                .characters_of(user_id)
                .into_iter()
                .map(|(id, character)| Character {
                    id,
                    name: character.name,
                    world_id: character.world_id,
                })
                .collect()),
            Self::Pg {
                pool,
                timeout,
                prepared,
            } => bounded!(pool, *timeout, |client| {
                Ok(query(
                    &client,
                    *prepared,
                    "SELECT id, name, world_id FROM characters WHERE user_id = $1 ORDER BY id",
                    &[(&user_id, Type::INT8)],
                )
                .await?
                .iter()
                .map(|row| Character {
                    id: row.get(0),
                    name: row.get(1),
                    world_id: row.get(2),
                })
                .collect())
            }),
        }
    }

    /// Changes a role; returns the user's id, `None` when there is no such user. The session
    /// layer reads roles on every request; live connections are told by the caller.
    async fn set_role(&self, username: &str, role: &str) -> ApiResult<Option<i64>> {
        self.update_user(
            username,
            "role",
            |store, id| store.set_role(id, Some(role)),
            (&role, Type::TEXT),
        )
        .await
    }

    /// Activates or deactivates a user; returns the user's id, `None` when there is no such
    /// user.
    async fn set_active(&self, username: &str, active: bool) -> ApiResult<Option<i64>> {
        self.update_user(
            username,
            "is_active",
            |store, id| store.set_active(id, active),
            (&active, Type::BOOL),
        )
        .await
    }

    async fn update_user(
        &self,
        username: &str,
        column: &str,
        in_memory: impl FnOnce(&MemoryStore, i64) -> bool,
        value: (&(dyn ToSql + Sync), Type),
    ) -> ApiResult<Option<i64>> {
        match self {
            Self::Memory { store, .. } => Ok(store
                .user_id_by_name(username)
                .and_then(|id| i64::from_user_id(&id))
                .filter(|id| in_memory(store, *id))),
            Self::Pg {
                pool,
                timeout,
                prepared,
            } => bounded!(pool, *timeout, |client| {
                let rows = query(
                    &client,
                    *prepared,
                    &format!("UPDATE users SET {column} = $2 WHERE username = $1 RETURNING id"),
                    &[(&username, Type::TEXT), value],
                )
                .await?;
                Ok(rows.first().map(|row| row.try_get(0)).transpose()?)
            }),
        }
    }
}
