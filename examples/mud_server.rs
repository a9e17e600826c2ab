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
//! (false here, since the example serves plain HTTP), `MAX_SESSIONS_PER_USER` (unlimited).
//!
//! Demo users `player`, `builder`, `admin`, `superuser` (password `<name>-pass`), and the
//! deactivated `banned` (`banned-pass`). `REFRESH_GRACE_SECS` (default 5) sets the
//! remember-me reuse grace window. Open <http://127.0.0.1:3000/account/sessions> in a browser
//! for the session-management page.

#[path = "mud_server/account_page.rs"]
mod account_page;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use deadpool_postgres::Pool;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tower_session_auth::permissions::{ChangeRoles, KickUsers, ViewLogs};
use tower_session_auth::{
    AuthRejection, AuthUser, CharacterSelection, ClientInfo, CookieConfig, GameUser, MemoryStore,
    PgStore, Refresh, RefreshConfig, RequirePermission, Session, SessionConfig, SessionId,
    SessionLayer, SessionManager, StoreError,
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
    let (manager, directory) = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => {
            let store = PgStore::connect(&url)?;
            store.migrate().await?;
            let directory = Directory::Pg(store.pool().clone());
            directory.seed().await?;
            (SessionManager::new(store, config), directory)
        }
        _ => {
            let store = MemoryStore::new();
            let directory = Directory::memory(store.clone());
            (SessionManager::new(store, config), directory)
        }
    };
    let sweeper = manager.spawn_sweeper(Duration::from_secs(300));
    let app = app(manager, directory);

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
    Ok(())
}

fn session_config_from_env() -> Result<SessionConfig, Box<dyn std::error::Error>> {
    fn var<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
        match std::env::var(name) {
            Ok(value) => value
                .trim()
                .parse()
                .map_err(|_| format!("{name}: cannot parse {value:?}")),
            Err(_) => Ok(default),
        }
    }
    let ttl: u64 = var("SESSION_TTL_SECS", 28_800)?;
    let max: u32 = var("MAX_SESSIONS_PER_USER", 0)?;
    Ok(SessionConfig::default()
        .idle_timeout((ttl > 0).then(|| Duration::from_secs(ttl)))
        .sliding(var("SESSION_SLIDING", true)?)
        .touch_interval(Duration::from_secs(var("SESSION_TOUCH_INTERVAL_SECS", 60)?))
        .max_sessions_per_user((max > 0).then_some(max))
        .cookie(CookieConfig::default().secure(var("SESSION_COOKIE_SECURE", false)?))
        .refresh(
            RefreshConfig::default().grace(Duration::from_secs(var("REFRESH_GRACE_SECS", 5)?)),
        ))
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
}

fn app(manager: SessionManager, directory: Directory) -> Router {
    let state = AppState {
        manager: manager.clone(),
        directory,
    };
    Router::new()
        .route("/login", post(login))
        .route("/refresh", post(refresh))
        .route("/logout", post(logout))
        .route("/me", get(me))
        .route("/ping", post(ping))
        .route("/characters", get(characters))
        .route("/characters/select", post(select_character))
        .route("/game/whoami", get(whoami))
        .route("/admin/logs", get(admin_logs))
        .route("/admin/sessions/kick", post(kick))
        .route("/admin/users/{username}/role", post(change_role))
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
        .with_state(state)
        .layer(
            SessionLayer::new(manager).client_ip(|extensions, _headers| {
                extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|info| info.0.ip())
            }),
        )
}

// ---------------------------------------------------------------------------------------------
// Errors

/// A handler error: an extractor-style rejection, or an `{"detail"}` with a status.
enum ApiError {
    Auth(AuthRejection),
    Detail(StatusCode, &'static str),
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Auth(rejection) => rejection.into_response(),
            Self::Detail(status, detail) => {
                (status, Json(json!({ "detail": detail }))).into_response()
            }
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

// ---------------------------------------------------------------------------------------------
// Handlers: each signature states its access rule.

#[derive(Deserialize)]
struct LoginRequest {
    username: String,
    password: String,
    #[serde(default)]
    remember: bool,
}

/// Checks a username and password; the error is the `detail` to answer with.
async fn check_credentials(
    state: &AppState,
    username: &str,
    password: &str,
) -> Result<UserRow, &'static str> {
    let user = state
        .directory
        .find_user(username)
        .await
        .map_err(|_| "Session store unavailable")?;
    // Verify against a dummy hash for unknown users, so timing does not reveal which exist.
    let hash = user
        .as_ref()
        .map_or(dummy_hash(), |user| user.password_hash.as_str());
    let password_ok = verify_password(password, hash).await;
    match user {
        Some(user) if password_ok && user.is_active => Ok(user),
        Some(_) if password_ok => Err("Account is deactivated"),
        _ => Err("Invalid username or password"),
    }
}

async fn login(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Json(body): Json<LoginRequest>,
) -> ApiResult<Json<Value>> {
    let user = check_credentials(&state, &body.username, &body.password)
        .await
        .map_err(|detail| match detail {
            "Session store unavailable" => ApiError::Auth(AuthRejection::StoreUnavailable),
            detail => ApiError::Detail(StatusCode::UNAUTHORIZED, detail),
        })?;
    let mut client = ClientInfo::from_headers(&headers);
    client.ip = session.client_ip();
    let login = session.login_with(user.id, client, body.remember).await?;
    let characters = state.directory.characters(user.id).await?;
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
    Ok(Json(reply))
}

#[derive(Deserialize)]
struct RefreshBody {
    refresh_token: Option<String>,
}

/// Trades a remember-me token (from the body, or else the refresh cookie) for a new session.
async fn refresh(session: Session, headers: HeaderMap, body: Bytes) -> ApiResult<Json<Value>> {
    let body_token = if body.is_empty() {
        None
    } else {
        serde_json::from_slice::<RefreshBody>(&body)
            .map_err(|_| ApiError::Detail(StatusCode::BAD_REQUEST, "Invalid JSON body"))?
            .refresh_token
    };
    let mut client = ClientInfo::from_headers(&headers);
    client.ip = session.client_ip();
    match session
        .refresh(body_token.as_deref(), &headers, client)
        .await?
    {
        Refresh::Refreshed(login) => Ok(Json(json!({
            "token": login.token.expose(),
            "session_id": login.session.id,
            "refresh_token": login.refresh.as_ref().map(|refresh| refresh.expose()),
        }))),
        Refresh::Invalid => Err(ApiError::Detail(
            StatusCode::UNAUTHORIZED,
            "Invalid or expired refresh token",
        )),
        Refresh::ReuseDetected => Err(ApiError::Detail(
            StatusCode::UNAUTHORIZED,
            "Refresh token reuse detected",
        )),
    }
}

async fn logout(user: AuthUser, session: Session) -> ApiResult<Json<Value>> {
    session.logout().await?;
    Ok(Json(
        json!({ "message": format!("Goodbye, {}!", user.username) }),
    ))
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
    Json(body): Json<SelectRequest>,
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
        CharacterSelection::CharacterNotFound => Err(ApiError::Detail(
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

async fn kick(
    State(state): State<AppState>,
    _admin: RequirePermission<KickUsers>,
    Json(body): Json<KickRequest>,
) -> ApiResult<Json<Value>> {
    let removed = match body.session_id.parse::<SessionId>() {
        Ok(id) => state.manager.remove(id).await?,
        Err(_) => false,
    };
    Ok(Json(json!({ "removed": removed })))
}

#[derive(Deserialize)]
struct RoleRequest {
    role: String,
}

async fn change_role(
    State(state): State<AppState>,
    admin: RequirePermission<ChangeRoles>,
    Path(username): Path<String>,
    Json(body): Json<RoleRequest>,
) -> ApiResult<Json<Value>> {
    let role = body.role.trim().to_ascii_lowercase();
    if state.manager.policy().role_level(&role).is_none() {
        return Err(ApiError::Detail(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Unknown role",
        ));
    }
    if !state.directory.set_role(&username, &role).await? {
        return Err(ApiError::Detail(StatusCode::NOT_FOUND, "User not found"));
    }
    tracing::info!(by = %admin.username, user = %username, %role, "role changed");
    Ok(Json(json!({ "username": username, "role": role })))
}

#[derive(Serialize)]
struct SessionListing {
    #[serde(flatten)]
    record: tower_session_auth::SessionRecord,
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

async fn revoke_session(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let not_found = ApiError::Detail(StatusCode::NOT_FOUND, "Session not found");
    let id: SessionId = id.parse().map_err(|_| not_found)?;
    if state.manager.revoke(user.user_id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::Detail(StatusCode::NOT_FOUND, "Session not found"))
    }
}

async fn revoke_other_sessions(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<Value>> {
    let revoked = state
        .manager
        .revoke_others(user.user_id, user.session_id)
        .await?;
    Ok(Json(json!({ "revoked": revoked })))
}

async fn health(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let active = state.manager.count_active(Some(ACTIVE_WINDOW)).await?;
    Ok(Json(json!({ "status": "ok", "active_players": active })))
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

fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not a password anyone has"))
}

/// Verifies off the async runtime: argon2 is deliberately slow.
async fn verify_password(password: &str, hash: &str) -> bool {
    let (password, hash) = (password.to_owned(), hash.to_owned());
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// The application's own users and characters

struct UserRow {
    id: i64,
    username: String,
    role: String,
    is_active: bool,
    password_hash: String,
}

#[derive(Serialize)]
struct Character {
    id: i64,
    name: String,
    world_id: Option<String>,
}

/// Where users, passwords and characters live: beside the in-memory session store, or in
/// PostgreSQL tables that the session store's validating statement joins.
#[derive(Clone)]
enum Directory {
    Memory {
        store: MemoryStore,
        passwords: std::sync::Arc<HashMap<String, String>>,
    },
    Pg(Pool),
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
                hash_password(&format!("{username}-pass")),
            );
            for &(name, world) in characters {
                character_id += 1;
                store.upsert_character(character_id, user_id, name, Some(world));
            }
        }
        Self::Memory {
            store,
            passwords: std::sync::Arc::new(passwords),
        }
    }

    /// Creates the demo tables if absent and adds the demo data that is missing. Safe to run
    /// from several processes at once.
    async fn seed(&self) -> Result<(), Box<dyn std::error::Error>> {
        let Self::Pg(pool) = self else { return Ok(()) };
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        tx.batch_execute("SELECT pg_advisory_xact_lock(hashtextextended('mud_server.seed', 0))")
            .await?;
        tx.batch_execute(PG_DEMO_TABLES).await?;
        for &(id, name) in DEMO_WORLDS {
            tx.execute(
                "INSERT INTO worlds (id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&id, &name],
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
            let exists = tx
                .query_opt("SELECT 1 FROM users WHERE username = $1", &[&username])
                .await?
                .is_some();
            if !exists {
                let hash = hash_password(&format!("{username}-pass"));
                tx.execute(
                    "INSERT INTO users (username, password_hash, role, is_active) \
                     VALUES ($1, $2, $3, $4)",
                    &[&username, &hash, &role, &active],
                )
                .await?;
            }
            for &(name, world) in characters {
                tx.execute(
                    "INSERT INTO characters (user_id, name, world_id) \
                     SELECT id, $2, $3 FROM users WHERE username = $1 \
                     ON CONFLICT (name) DO NOTHING",
                    &[&username, &name, &world],
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
            Self::Pg(pool) => {
                let client = pool.get().await?;
                let statement = client
                    .prepare_cached(
                        "SELECT id, username, role, is_active, password_hash \
                         FROM users WHERE username = $1",
                    )
                    .await?;
                Ok(client
                    .query_opt(&statement, &[&username])
                    .await?
                    .map(|row| UserRow {
                        id: row.get(0),
                        username: row.get(1),
                        role: row.get(2),
                        is_active: row.get(3),
                        password_hash: row.get(4),
                    }))
            }
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
            Self::Pg(pool) => {
                let client = pool.get().await?;
                let statement = client
                    .prepare_cached(
                        "SELECT id, name, world_id FROM characters WHERE user_id = $1 ORDER BY id",
                    )
                    .await?;
                Ok(client
                    .query(&statement, &[&user_id])
                    .await?
                    .iter()
                    .map(|row| Character {
                        id: row.get(0),
                        name: row.get(1),
                        world_id: row.get(2),
                    })
                    .collect())
            }
        }
    }

    /// Changes a role. The session layer reads roles on every request: no cache to flush.
    async fn set_role(&self, username: &str, role: &str) -> ApiResult<bool> {
        match self {
            Self::Memory { store, .. } => Ok(store
                .user_id_by_name(username)
                .is_some_and(|id| store.set_role(id, Some(role)))),
            Self::Pg(pool) => {
                let client = pool.get().await?;
                let updated = client
                    .execute(
                        "UPDATE users SET role = $2 WHERE username = $1",
                        &[&username, &role],
                    )
                    .await?;
                Ok(updated > 0)
            }
        }
    }
}
