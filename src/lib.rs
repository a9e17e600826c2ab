//! Server-side session authentication for Tower and Axum, on PostgreSQL.
//!
//! [`SessionLayer`] finds the session token (`Authorization: Bearer`, an optional extra header,
//! or a cookie), and typed extractors resolve it against the store in **one round trip**:
//! [`AuthUser`], `Option<AuthUser>`, [`GameUser`], [`RequirePermission<P>`],
//! [`RequireRole<R>`] and [`RecentAuth<E>`]. A handler's signature is its access policy.
//!
//! ```no_run
//! use axum::{Json, Router, routing::{get, post}};
//! use tower_session_auth::{
//!     AuthRejection, AuthUser, LoginOptions, NoStore, PgStore, RequirePermission, Session,
//!     SessionConfig, SessionLayer, SessionManager, permissions::ViewLogs,
//! };
//!
//! async fn login(session: Session) -> Result<NoStore<Json<String>>, AuthRejection> {
//!     // ... verify the password, find the user id ...
//!     let login = session.login(42, LoginOptions::new()).await?; // sets the cookie too
//!     Ok(NoStore(Json(login.token.expose().to_owned())))
//! }
//! async fn me(user: AuthUser) -> String { user.username }
//! async fn logs(_: RequirePermission<ViewLogs>) -> &'static str { "…" }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PgStore::connect("postgres://app:secret@localhost/app")?;
//! store.migrate().await?;
//! store.check_schema().await?; // the application's users and characters tables
//! let manager = SessionManager::new(store, SessionConfig::default());
//! let app: Router = Router::new()
//!     .route("/login", post(login))
//!     .route("/me", get(me))
//!     .route("/admin/logs", get(logs))
//!     .layer(SessionLayer::new(manager));
//! # Ok(()) }
//! ```
//!
//! # What is where
//!
//! The root holds what a handler author uses: the [`SessionLayer`], the [`SessionManager`],
//! the request's [`Session`] handle, the extractors and their [`AuthRejection`], the
//! configuration types, the user id ([`UserId`], read typed through [`FromUserId`]:
//! `AuthUser<Uuid>` for users keyed by `uuid`, see
//! [`AppSchema::user_id_type`](store::AppSchema::user_id_type)), and the permission macros
//! ([`permission!`], [`role!`]). The modules hold the rest:
//!
//! - [`store`]: for store implementers and operators: the [`SessionStore`](store::SessionStore)
//!   trait and its extension traits, the records, [`StoreError`](store::StoreError), and the two
//!   stores ([`PgStore`], [`MemoryStore`]).
//! - [`layer`]: the service and response future behind [`SessionLayer`], eager mode and
//!   rejection rendering ([`RenderRejection`](layer::RenderRejection)).
//! - [`credentials`]: token discovery ([`find_token`](credentials::find_token)), for custom
//!   middleware and fuzzing. [`token`]: the token types.
//! - [`permission`](mod@permission): the access policy. [`watch`]: live connections. [`clock`]: time.
//! - `cache` (feature `cache`): a validation cache for many instances. `test_util` (feature
//!   `test-util`): a manual clock, the store conformance suite and logged-in test requests.
//!
//! # Security model
//!
//! - **Tokens** are 32 bytes from the OS CSPRNG, base64url (43 characters), opaque. The store
//!   keeps only `SHA-256(token)`; `Debug` output, errors and audit logs never show a token.
//! - **Strict mode**: a presented token that is not exactly 43 canonical base64url characters is
//!   rejected before any query. Unknown tokens never create a session; login always issues a
//!   fresh token.
//! - **Fail closed**: a store failure (database down, pool timeout, a statement beyond
//!   [`PgStore::statement_timeout`], a row that does not decode) is `500 Session store
//!   unavailable`: never anonymous, never 403, never a panic, and the cookie is left alone.
//!   [`PgStore::check_schema`] verifies the application's tables at start-up, and an invalid
//!   configuration is refused when the manager is built ([`SessionConfig::validate`]).
//! - **Fresh authorisation**: the role and active flag are read from the users table on every
//!   validation, so role changes and deactivation apply on the next request.
//! - **Expiry**: an idle TTL with sliding expiration, plus an absolute lifetime that activity
//!   never extends. Activity writes are debounced by `touch_interval`, so the idle expiry can
//!   come early by at most that interval. An expired session is deleted when presented, and
//!   [`SessionManager::purge_expired`] / [`SessionManager::spawn_sweeper`] delete the rest, in
//!   batches of [`SessionConfig::purge_batch_size`] rows, each a short statement of its own
//!   that reads on from where the one before stopped, with a [`SessionConfig::purge_pause`]
//!   between two batches.
//!   A touch never re-creates a session deleted concurrently.
//! - **Cookie**: `HttpOnly`, `Secure`, `SameSite=Lax`, `Path=/`, no `Domain`, optional
//!   `__Host-` prefix; responses that set or clear it carry `Cache-Control: no-store` (and
//!   [`NoStore`] marks a response with a token in its body). When the token came from a
//!   header, the layer never sets a cookie. [`Session::logout`] clears the cookies the request
//!   carried, whatever the state of its session.
//! - **CSRF**: beyond `SameSite=Lax`, an opt-in [`CsrfConfig`] check for unsafe requests that
//!   act on a cookie (`Origin`, `Sec-Fetch-Site`, a custom header), and per-session form tokens
//!   ([`Session::csrf_token`]).
//! - **Sudo mode**: [`RecentAuth`] in a handler's signature admits only a session whose user
//!   proved their credentials within [`SessionConfig::recent_auth_max_age`] (default 10
//!   minutes); a session made by a remember-me refresh never counts until
//!   [`Session::reauthenticate`] records a fresh password entry on it. Otherwise 403
//!   `Recent authentication required` ([`AuthRejection::RecentAuthRequired`]). It wraps the
//!   other guards (`RecentAuth<RequirePermission<P>>`) without a second query.
//!
//! # How a request flows
//!
//! The [`SessionService`](layer::SessionService) parses the token strictly and inserts a
//! [`Session`] handle; by default it does not query. The first extractor that needs the user
//! runs the single validating statement ([`SessionStore::validate`](store::SessionStore::validate))
//! and caches the outcome in the handle, so several extractors on one handler still cost one
//! round trip, and routes that extract nothing never reach the database. The statement reads
//! the selected character only for [`GameUser`] ([`Scope`](store::Scope)). A handler logs in
//! or out through the [`Session`] handle, and the response future writes the cookie.
//!
//! In eager mode ([`SessionLayer::eager`]) the layer validates before the inner service and
//! inserts [`AuthUser`] (and [`GameUser`]) into the request's extensions, for plain hyper
//! services and tower middleware after the layer. [`SessionLayer::render_rejection`] lets an
//! app answer every rejection its own way (an HTML app redirects to its login page) in one
//! place.
//!
//! # Beyond validation
//!
//! - Session management: [`SessionManager::list_for_user`], [`SessionManager::revoke`],
//!   [`SessionManager::revoke_others`], [`SessionManager::revoke_all`], with IP, User-Agent
//!   and client type recorded at login.
//! - Remember me: [`LoginOptions::remember`] starts a refresh series,
//!   [`SessionManager::refresh`] exchanges its secret for a new session (ending the series'
//!   earlier one), and reuse of a secret already used revokes the series and its sessions;
//!   the family rules are in [`RefreshConfig`].
//! - Live connections: [`Session::watch`] gives a WebSocket handler a
//!   [`SessionWatch`](watch::SessionWatch) that reports when its session ends or its user's role
//!   changes, on this instance at once and from other instances through one `LISTEN`
//!   connection ([`PgStore::spawn_session_listener`]); see [`watch`]. A cookie-authenticated
//!   WebSocket upgrade must come from an allowed `Origin` ([`CsrfConfig::allows`]), even when
//!   the CSRF check is off.
//! - Audit events through `tracing` (target [`AUDIT_TARGET`]), with a per-address count of
//!   rejected tokens ([`SessionManager::rejected_tokens_by_ip`]).
//!
//! # Cargo features
//!
//! - `tls` (on by default): TLS to PostgreSQL with rustls. [`PgStore::connect`] honours libpq's
//!   `sslmode` (`disable`, `prefer`, `require`, `verify-ca`, `verify-full`) and `sslrootcert`,
//!   for the pool, the `LISTEN` connection and cancel requests alike ([`store::PgTls`]).
//!   Without it, a connection string that asks for TLS is refused.
//! - `cache` (off by default): `cache::SessionCache`, an opt-in cache of validated sessions
//!   for services with many instances, invalidated across instances by PostgreSQL
//!   `LISTEN/NOTIFY`, with a documented staleness bound.
//! - `sqlx` (off by default): `store::SqlxStore`, the PostgreSQL store on an application's
//!   `sqlx::PgPool` (sqlx 0.8), for services that already hold one: the same tables,
//!   migrations and statements as [`PgStore`].
//! - `test-util` (off by default; for dev-dependencies): `test_util::login`, a logged-in
//!   request in one line for an application's tests; `test_util::ManualClock`; and the store
//!   conformance suite (`conformance_tests!`), which checks a custom store against every
//!   guarantee the manager relies on.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
pub mod cache;
pub mod clock;
mod config;
pub mod credentials;
mod extract;
mod invalidation;
pub mod layer;
mod listener;
mod manager;
pub mod permission;
mod rejection;
mod response;
mod session;
pub mod store;
#[cfg(any(test, feature = "test-util"))]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod test_util;
pub mod token;
mod user_id;
pub mod watch;

pub use config::{ConfigError, CookieConfig, CsrfConfig, RefreshConfig, SessionConfig};
pub use extract::{AuthUser, Authenticated, GameUser, RecentAuth, RequirePermission, RequireRole};
pub use layer::SessionLayer;
pub use manager::{AUDIT_TARGET, Login, LoginOptions, Refresh, SessionManager};
pub use permission::{permissions, roles};
pub use rejection::AuthRejection;
pub use response::NoStore;
pub use session::Session;
pub use store::{ClientInfo, MemoryStore, PgStore};
pub use token::SessionId;
pub use user_id::{FromUserId, UserId};

/// Re-exported for [`CookieConfig::same_site`].
pub use cookie::SameSite;
