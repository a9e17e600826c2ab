//! The [`SessionStore`] trait, the records it exchanges, and its two implementations:
//! [`PgStore`] (PostgreSQL, the product) and [`MemoryStore`] (same semantics, in process).
//!
//! Stores are clock-free: every call that depends on time receives `now` from the
//! [`SessionManager`](crate::SessionManager), whose clock can be replaced in tests.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use time::OffsetDateTime;

use uuid::Uuid;

use crate::token::{SessionId, TokenHash};

mod memory;
mod postgres;

pub use memory::MemoryStore;

/// What one batch of [`SessionStore::purge_expired`] deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    /// Expired sessions deleted.
    pub sessions: u64,
    /// Expired remember-me series deleted.
    pub series: u64,
}

impl Purged {
    /// Whether a batch of size `limit` was full, so that more expired rows may remain.
    pub fn was_full(&self, limit: u32) -> bool {
        let limit = u64::from(limit);
        self.sessions >= limit || self.series >= limit
    }
}
pub use postgres::{AppSchema, PgStore};

/// A store failure. It never contains a token: stores only ever see token hashes.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database answered with an error, or the connection broke.
    #[error("database error: {0}")]
    Database(#[from] tokio_postgres::Error),
    /// No connection could be had from the pool within its wait timeout.
    #[error("connection pool error: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A migration failed to apply.
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        /// Version number of the migration.
        version: i32,
        /// File name of the migration.
        name: &'static str,
        /// The database's error.
        source: tokio_postgres::Error,
    },
    /// A column of a row did not decode as the crate reads it: NULL where a value is required,
    /// or another SQL type (for example an application's `users.id integer` where `bigint` is
    /// expected). [`PgStore::check_schema`] reports such mismatches at start-up.
    #[error("column {column:?} does not decode as {expected}: {source}")]
    Decode {
        /// The column's name in the statement.
        column: String,
        /// The SQL type the crate reads there.
        expected: &'static str,
        /// The driver's error.
        source: tokio_postgres::Error,
    },
    /// The application's tables do not have the columns or types [`AppSchema`] names.
    #[error("application schema mismatch: {0}")]
    Schema(String),
    /// A statement did not finish within [`PgStore::statement_timeout`] (a lock held, a long
    /// `ALTER TABLE`, a network that stopped answering). The connection has been discarded.
    #[error("the database did not answer within {0:?}")]
    Timeout(Duration),
    /// A store-specific failure (used by custom stores and fault injection).
    #[error("session store error: {0}")]
    Other(String),
}

/// Who is logging in from where: recorded with the session and shown in listings.
///
/// The default has no address, no User-Agent and the client type `unknown`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client's IP address, when known.
    pub ip: Option<IpAddr>,
    /// The `User-Agent` header, when sent (truncated to 512 bytes).
    pub user_agent: Option<String>,
    /// A free-form client kind (`web`, `tui`, …), trimmed and lower-cased; blank is `unknown`.
    pub client_type: String,
}

impl Default for ClientInfo {
    fn default() -> Self {
        Self {
            ip: None,
            user_agent: None,
            client_type: "unknown".to_owned(),
        }
    }
}

impl ClientInfo {
    /// Longest `User-Agent` kept, in bytes.
    pub const MAX_USER_AGENT: usize = 512;
    /// Longest client type kept, in bytes.
    pub const MAX_CLIENT_TYPE: usize = 32;

    /// Reads `User-Agent` and `X-Client-Type` from request headers.
    ///
    /// ```
    /// use tower_session_auth::ClientInfo;
    ///
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert("x-client-type", "  WebSocket ".parse().unwrap());
    /// let info = ClientInfo::from_headers(&headers);
    /// assert_eq!(info.client_type, "websocket");
    /// assert_eq!(ClientInfo::from_headers(&http::HeaderMap::new()).client_type, "unknown");
    /// ```
    pub fn from_headers(headers: &http::HeaderMap) -> Self {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        Self {
            ip: None,
            user_agent: text("user-agent").map(|ua| truncate(ua, Self::MAX_USER_AGENT).to_owned()),
            client_type: Self::normalize_client_type(text("x-client-type").unwrap_or("")),
        }
    }

    /// Sets the client's IP address.
    pub fn with_ip(mut self, ip: IpAddr) -> Self {
        self.ip = Some(ip);
        self
    }

    /// Trims and lower-cases a client type; blank becomes `unknown`.
    pub fn normalize_client_type(raw: &str) -> String {
        let trimmed = truncate(raw.trim(), Self::MAX_CLIENT_TYPE).trim();
        if trimmed.is_empty() {
            "unknown".to_owned()
        } else {
            trimmed.to_lowercase()
        }
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A session to insert at login.
#[derive(Clone, Debug)]
pub struct NewSession {
    /// Public id.
    pub id: SessionId,
    /// Hash of the freshly drawn token.
    pub token_hash: TokenHash,
    /// The authenticated user.
    pub user_id: i64,
    /// Client details.
    pub client: ClientInfo,
    /// Login time.
    pub created_at: OffsetDateTime,
    /// Idle expiry (`None`: never).
    pub expires_at: Option<OffsetDateTime>,
    /// Absolute expiry (`None`: never).
    pub absolute_expires_at: Option<OffsetDateTime>,
    /// A remember-me series to start with this session (login with "remember me").
    pub remember: Option<NewSeries>,
}

/// A remember-me series started at login. Its user and start time are the session's.
#[derive(Clone, Debug)]
pub struct NewSeries {
    /// Series id (the public half of the refresh token).
    pub id: Uuid,
    /// Hash of the first secret.
    pub secret_hash: TokenHash,
    /// Idle expiry of the series.
    pub expires_at: Option<OffsetDateTime>,
    /// Absolute expiry of the series.
    pub absolute_expires_at: Option<OffsetDateTime>,
}

/// A refresh: trade the presented secret of a series for a new session and a new secret.
#[derive(Clone, Debug)]
pub struct RefreshRequest {
    /// The series named by the refresh token.
    pub series: Uuid,
    /// Hash of the presented secret.
    pub secret_hash: TokenHash,
    /// Hash of the secret that replaces it.
    pub new_secret_hash: TokenHash,
    /// Now.
    pub now: OffsetDateTime,
    /// A secret first used after this instant may be used once more (the grace window).
    pub grace_since: OffsetDateTime,
    /// The series' new idle expiry.
    pub series_expires_at: Option<OffsetDateTime>,
    /// The session to create. Its `user_id` is ignored (the series' user is used) and its
    /// `remember` must be `None`.
    pub session: NewSession,
    /// The per-user session limit, as at login.
    pub max_per_user: Option<u32>,
}

/// Outcome of [`SessionStore::refresh`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// A new session was created and a new secret issued; the series' earlier sessions ended
    /// (but for the grace overlap, see [`RefreshConfig`](crate::RefreshConfig)).
    Refreshed(Box<SessionRecord>),
    /// No such series, a secret the series did not issue (or no longer remembers), or a
    /// superseded secret presented again inside the grace window after its one extra use.
    /// Nothing changed.
    Invalid,
    /// The series had expired or its user is gone or inactive: the series and its sessions
    /// ended.
    Ended {
        /// The series' user.
        user_id: i64,
    },
    /// A secret the series issued and that was already used was presented after the grace
    /// window: the series and all its sessions were revoked.
    ReuseDetected {
        /// The series' user.
        user_id: i64,
    },
}

/// A stored session, as listings show it. It holds no token and no token hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SessionRecord {
    /// Public id.
    pub id: SessionId,
    /// Owner.
    pub user_id: i64,
    /// Selected character, if any.
    pub character_id: Option<i64>,
    /// World of the selected character, as last synced.
    pub world_id: Option<String>,
    /// Client type recorded at login.
    pub client_type: String,
    /// IP address recorded at login.
    pub ip: Option<IpAddr>,
    /// User-Agent recorded at login.
    pub user_agent: Option<String>,
    /// Login time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last recorded activity (debounced by the touch interval).
    #[serde(with = "time::serde::rfc3339")]
    pub last_activity: OffsetDateTime,
    /// Idle expiry (`None`: never).
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Absolute expiry (`None`: never).
    #[serde(with = "time::serde::rfc3339::option")]
    pub absolute_expires_at: Option<OffsetDateTime>,
    /// When the user last proved their credentials: the login time, kept by refreshes.
    #[serde(with = "time::serde::rfc3339")]
    pub authenticated_at: OffsetDateTime,
    /// Whether a remember-me refresh created this session (rather than a login).
    pub refreshed: bool,
    /// Whether the session belongs to a remember-me series.
    pub remembered: bool,
}

impl SessionRecord {
    /// Whether the user proved their credentials on this session within `max_age` of `now`:
    /// its `authenticated_at` is younger than `max_age`, and, if a remember-me refresh made
    /// the session, it was re-authenticated since (a refresh keeps the login's
    /// `authenticated_at`, older than the session's `created_at`; a re-authentication moves it
    /// to or past `created_at`).
    ///
    /// ```
    /// # use tower_session_auth::SessionRecord;
    /// # fn check(session: &SessionRecord) -> bool {
    /// let now = time::OffsetDateTime::now_utc();
    /// session.recently_authenticated(now, std::time::Duration::from_secs(600))
    /// # }
    /// ```
    pub fn recently_authenticated(&self, now: OffsetDateTime, max_age: Duration) -> bool {
        // A window beyond the calendar's start admits every time.
        let fresh = now
            .checked_sub(span(max_age))
            .is_none_or(|since| self.authenticated_at > since);
        fresh && (!self.refreshed || self.authenticated_at >= self.created_at)
    }
}

/// The user columns read in the validating statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    /// Login name.
    pub username: String,
    /// Role name; `None` or empty means "no role" and fails validation.
    pub role: Option<String>,
    /// Inactive users fail validation.
    pub is_active: bool,
}

/// The selected character's columns read in the validating statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CharacterRecord {
    /// Character name.
    pub name: String,
    /// The character's world; `None` fails game validation.
    pub world_id: Option<String>,
}

/// Everything one validating statement returns about a live session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionView {
    /// The session row after the touch.
    pub session: SessionRecord,
    /// The owner, or `None` when the user row is gone.
    pub user: Option<UserRecord>,
    /// The selected character when it still exists and still belongs to the user (`None`
    /// when a store validated at [`Scope::User`], which does not read it).
    pub character: Option<CharacterRecord>,
}

/// What a validation reads besides the session and its user.
///
/// The extractors ask for what they need: [`AuthUser`](crate::AuthUser),
/// [`RequirePermission`](crate::RequirePermission) and [`RequireRole`](crate::RequireRole) for
/// [`Scope::User`], [`GameUser`](crate::GameUser) for [`Scope::Game`]. Reading the character
/// costs PostgreSQL a third table in the statement, so routes that do not need it skip it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The session and its user. The store reads no character (the view's `character` is
    /// `None`, unless the view comes from the validation cache, which holds [`Scope::Game`]
    /// views) and leaves the stored `world_id` alone.
    User,
    /// The session, its user and its selected character; the session's `world_id` is
    /// resynced to the character's.
    Game,
}

/// Outcome of [`SessionStore::validate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Validation {
    /// No session has this token hash.
    Unknown,
    /// The session had expired; it has been deleted.
    Expired,
    /// The session is live (and was touched if the debounce allowed). Shared, so that a
    /// cached validation is handed out without copying.
    Valid(Arc<SessionView>),
}

/// Expiry rules a validation applies, derived from the [`SessionConfig`](crate::SessionConfig).
#[derive(Clone, Copy, Debug)]
pub struct Touch {
    /// The session is touched only if its `last_activity` is at or before this instant.
    pub due_before: OffsetDateTime,
    /// When touched under sliding expiration, `expires_at` becomes this.
    pub slide_to: Option<OffsetDateTime>,
}

/// Outcome of [`SessionStore::select_character`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CharacterSelection {
    /// The character was bound; its name and world are returned.
    Selected(CharacterRecord),
    /// The character does not exist or belongs to another user; nothing changed.
    CharacterNotFound,
    /// The session is gone (logged out or expired concurrently); nothing changed.
    SessionNotFound,
}

/// Storage of sessions. Implemented by [`PgStore`] and [`MemoryStore`]; a custom store must
/// give the same guarantees, which the crate's conformance tests spell out:
///
/// - [`validate`](Self::validate) is atomic: an expired session is deleted and reported as
///   [`Validation::Expired`]; a live one is touched only when due, never re-created if it was
///   deleted concurrently.
/// - [`create`](Self::create) with `max_per_user = Some(n)` leaves at most `n` sessions of that
///   user even under concurrent logins.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Inserts a session; with `max_per_user = Some(n)` removes the user's oldest beyond `n`.
    async fn create(
        &self,
        new: NewSession,
        max_per_user: Option<u32>,
    ) -> Result<SessionRecord, StoreError>;

    /// Finds a session by token hash, deletes it if expired, applies the debounced touch, and
    /// returns it with its user, all in one step. With [`Scope::Game`] it also returns the
    /// selected character and resyncs the session's world to the character's; with
    /// [`Scope::User`] the view has no character and the stored world is left alone.
    async fn validate(
        &self,
        token_hash: &TokenHash,
        now: OffsetDateTime,
        touch: Touch,
        scope: Scope,
    ) -> Result<Validation, StoreError>;

    /// Reads a live session without touching or deleting anything.
    async fn lookup(
        &self,
        token_hash: &TokenHash,
        now: OffsetDateTime,
    ) -> Result<Option<SessionView>, StoreError>;

    /// Binds a character of `user_id` to the session (ownership checked, world derived).
    async fn select_character(
        &self,
        session_id: SessionId,
        user_id: i64,
        character_id: i64,
    ) -> Result<CharacterSelection, StoreError>;

    /// Removes a session by id; with `owner = Some(u)` only if it belongs to user `u`. If the
    /// session belongs to a remember-me series, the series and its other sessions end too,
    /// including a session that a refresh of the series commits meanwhile. Returns the
    /// session's user if it existed (so that a cache can drop that user's entries).
    async fn remove(&self, id: SessionId, owner: Option<i64>) -> Result<Option<i64>, StoreError>;

    /// Removes the session with this token hash, and its remember-me series as `remove` does.
    async fn remove_by_token(&self, token_hash: &TokenHash) -> Result<Option<i64>, StoreError>;

    /// Removes all sessions of a user except `keep` and the other sessions of `keep`'s
    /// remember-me series, and ends all the user's series except `keep`'s; returns how many
    /// sessions were removed. No session of an ended series survives, even one that a
    /// concurrent refresh commits.
    async fn remove_for_user(
        &self,
        user_id: i64,
        keep: Option<SessionId>,
    ) -> Result<u64, StoreError>;

    /// Lists a user's live sessions, newest first.
    async fn list_for_user(
        &self,
        user_id: i64,
        now: OffsetDateTime,
    ) -> Result<Vec<SessionRecord>, StoreError>;

    /// Counts live sessions, and of those only the ones active since `active_since` if given.
    async fn count_active(
        &self,
        now: OffsetDateTime,
        active_since: Option<OffsetDateTime>,
    ) -> Result<u64, StoreError>;

    /// Deletes every session and remember-me series; returns how many sessions.
    async fn clear_all(&self) -> Result<u64, StoreError>;

    /// One batch of the purge: deletes at most `limit` expired sessions and at most `limit`
    /// expired remember-me series, each batch a short statement of its own, and returns how
    /// many of each. [`SessionManager::purge_expired`](crate::SessionManager::purge_expired)
    /// calls it until a batch comes back short of `limit` on both counts. Rows that another
    /// transaction holds locked may be skipped (the next purge takes them).
    async fn purge_expired(&self, now: OffsetDateTime, limit: u32) -> Result<Purged, StoreError>;

    /// Ends the remember-me series `series` and its sessions if `secret_hash` is a secret the
    /// series issued and still remembers; returns the series' user if it did. A forged secret
    /// changes nothing (the series id is public). Stores without remember-me support keep this
    /// default, which has no series to end.
    async fn end_series(
        &self,
        series: Uuid,
        secret_hash: &TokenHash,
    ) -> Result<Option<i64>, StoreError> {
        let _ = (series, secret_hash);
        Ok(None)
    }

    /// Exchanges a remember-me secret for a new session, atomically, by the family rules of
    /// [`RefreshConfig`](crate::RefreshConfig): issues a new secret, ends the series' earlier
    /// sessions (but for the grace overlap), caps the new session's absolute expiry by the
    /// series', honours one more use inside the grace window, revokes the series on reuse of
    /// a used secret, and changes nothing for a secret the series does not hold. Stores
    /// without remember-me support keep this default, which fails.
    async fn refresh(&self, request: RefreshRequest) -> Result<RefreshOutcome, StoreError> {
        let _ = request;
        Err(StoreError::Other(
            "remember-me is not supported by this store".to_owned(),
        ))
    }

    /// Records a fresh proof of credentials on a live session: moves its `authenticated_at`
    /// to `now` (never backwards), and nothing else: same token, same series, same expiry.
    /// Returns whether a live session with this id exists. Stores without re-authentication
    /// support keep this default, which fails.
    async fn reauthenticate(&self, id: SessionId, now: OffsetDateTime) -> Result<bool, StoreError> {
        let _ = (id, now);
        Err(StoreError::Other(
            "re-authentication is not supported by this store".to_owned(),
        ))
    }
}

/// How many secrets a series remembers (unused, used and spent together); the oldest issued
/// are forgotten first, and a forgotten secret is invalid (never reuse).
pub(crate) const MAX_SECRETS_PER_SERIES: i64 = 8;

/// What a series remembers of one secret it issued.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SecretState {
    /// When it was exchanged; `None` while unused.
    pub(crate) used_at: Option<OffsetDateTime>,
    /// Whether it was exchanged a second time, inside the grace window.
    pub(crate) spent: bool,
}

/// Decides a refresh from what the series remembers of the presented secret; shared by both
/// stores (the family rules are drawn in [`RefreshConfig`](crate::RefreshConfig)).
pub(crate) enum SecretMatch {
    /// Not a secret of this series (or forgotten): invalid, nothing changes.
    Unknown,
    /// An unused secret: exchange it.
    Rotate,
    /// A secret used once, inside the grace window: exchange it once more. Sessions created
    /// since `used_at` (by its first use) are kept.
    Grace {
        /// When the secret was first used.
        used_at: OffsetDateTime,
    },
    /// A secret already used twice, inside the grace window: invalid, nothing changes.
    Refused,
    /// A used secret after the grace window: reuse.
    Reuse,
}

pub(crate) fn match_secret(
    stored: Option<SecretState>,
    grace_since: OffsetDateTime,
) -> SecretMatch {
    match stored {
        None => SecretMatch::Unknown,
        Some(SecretState { used_at: None, .. }) => SecretMatch::Rotate,
        Some(SecretState {
            used_at: Some(used_at),
            spent,
        }) if used_at > grace_since => {
            if spent {
                SecretMatch::Refused
            } else {
                SecretMatch::Grace { used_at }
            }
        }
        Some(_) => SecretMatch::Reuse,
    }
}

/// The earlier of two optional instants (`None`: never).
pub(crate) fn earliest(
    a: Option<OffsetDateTime>,
    b: Option<OffsetDateTime>,
) -> Option<OffsetDateTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

pub(crate) fn is_expired(record: &SessionRecord, now: OffsetDateTime) -> bool {
    record.expires_at.is_some_and(|at| at <= now)
        || record.absolute_expires_at.is_some_and(|at| at <= now)
}

/// Converts a `Duration` to a `time::Duration`, saturating.
pub(crate) fn span(duration: Duration) -> time::Duration {
    time::Duration::try_from(duration).unwrap_or(time::Duration::MAX)
}
