//! The records a [`SessionStore`](super::SessionStore) exchanges with the
//! [`SessionManager`](crate::SessionManager).
//!
//! Records the manager builds (`NewSession`, `RefreshRequest`, `Touch`) are read by stores;
//! records stores return have constructors (`SessionRecord::new`, `UserRecord::new`, ...).
//! Every struct here is `#[non_exhaustive]`, so that fields can be added without breaking a
//! custom store. The outcome enums ([`Scope`], [`Validation`], [`CharacterSelection`],
//! [`RefreshOutcome`]) are complete by definition and stay exhaustive: stores and callers
//! match on every case, and a new case would need every store's support anyway.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::family::{expired, span};
use crate::token::{SessionId, TokenHash};
use crate::user_id::UserId;

/// What one batch of [`SessionStore::purge_expired`](super::SessionStore::purge_expired) deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Purged {
    /// Expired sessions deleted.
    pub sessions: u64,
    /// Expired remember-me series deleted.
    pub series: u64,
    /// Where the next batch of the same purge starts.
    pub next: PurgePosition,
}

impl Purged {
    /// A batch that deleted `sessions` sessions and `series` remember-me series, whose next
    /// batch starts at [`PurgePosition::START`] (see [`resume_at`](Self::resume_at)).
    pub fn new(sessions: u64, series: u64) -> Self {
        Self {
            sessions,
            series,
            next: PurgePosition::START,
        }
    }

    /// The same batch, with the next batch starting at `next`.
    pub fn resume_at(self, next: PurgePosition) -> Self {
        Self { next, ..self }
    }

    /// Whether a batch of size `limit` was full, so that more expired rows may remain.
    pub fn was_full(&self, limit: u32) -> bool {
        let limit = u64::from(limit);
        self.sessions >= limit || self.series >= limit
    }
}

/// Where a batch of [`SessionStore::purge_expired`](super::SessionStore::purge_expired) starts
/// reading each table: a position the store returned with the batch before
/// ([`Purged::next`]), so that a purge reads each expired row once instead of reading again,
/// batch after batch, what the earlier batches emptied.
///
/// The positions mean what the store says: [`PgStore`](crate::PgStore) and the sqlx store
/// use the heap page of the last row the batch deleted. A store without positions ignores
/// them and returns [`START`](Self::START), the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PurgePosition {
    /// Where the sessions are read from.
    pub sessions: u64,
    /// Where the remember-me series are read from.
    pub series: u64,
}

impl PurgePosition {
    /// The beginning of both tables: where a purge starts.
    pub const START: Self = Self {
        sessions: 0,
        series: 0,
    };

    /// The position `sessions` in the sessions and `series` in the remember-me series.
    pub fn new(sessions: u64, series: u64) -> Self {
        Self { sessions, series }
    }
}
/// Who is logging in from where: recorded with the session and shown in listings.
///
/// The default has no address, no User-Agent and the client type `unknown`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
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
        Self::from_parts(text("user-agent"), text("x-client-type"))
    }

    /// From a `User-Agent` (truncated to [`MAX_USER_AGENT`](Self::MAX_USER_AGENT) bytes) and a
    /// client type ([`normalize_client_type`](Self::normalize_client_type)).
    pub fn from_parts(user_agent: Option<&str>, client_type: Option<&str>) -> Self {
        Self {
            ip: None,
            user_agent: user_agent.map(|ua| truncate(ua, Self::MAX_USER_AGENT).to_owned()),
            client_type: Self::normalize_client_type(client_type.unwrap_or("")),
        }
    }

    /// Sets the client type ([`normalize_client_type`](Self::normalize_client_type)).
    pub fn with_client_type(mut self, client_type: &str) -> Self {
        self.client_type = Self::normalize_client_type(client_type);
        self
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
#[non_exhaustive]
pub struct NewSession {
    /// Public id.
    pub id: SessionId,
    /// Hash of the freshly drawn token.
    pub token_hash: TokenHash,
    /// The authenticated user.
    pub user_id: UserId,
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
#[non_exhaustive]
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
#[non_exhaustive]
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

/// Outcome of [`RememberStore::refresh`](super::RememberStore::refresh).
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
        user_id: UserId,
    },
    /// A secret the series issued and that was already used was presented after the grace
    /// window: the series and all its sessions were revoked.
    ReuseDetected {
        /// The series' user.
        user_id: UserId,
    },
}

/// A stored session, as listings show it. It holds no token and no token hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SessionRecord {
    /// Public id.
    pub id: SessionId,
    /// Owner.
    pub user_id: UserId,
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
    /// The record of `new` as inserted: no character, last activity and last authentication
    /// at its creation, not refreshed, remembered if it starts a series.
    pub fn new(new: &NewSession) -> Self {
        Self {
            id: new.id,
            user_id: new.user_id.clone(),
            character_id: None,
            world_id: None,
            client_type: new.client.client_type.clone(),
            ip: new.client.ip,
            user_agent: new.client.user_agent.clone(),
            created_at: new.created_at,
            last_activity: new.created_at,
            expires_at: new.expires_at,
            absolute_expires_at: new.absolute_expires_at,
            authenticated_at: new.created_at,
            refreshed: false,
            remembered: new.remember.is_some(),
        }
    }

    /// Whether the session has expired at `now` (idle or absolute expiry reached).
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        expired(now, self.expires_at, self.absolute_expires_at)
    }

    /// Whether the user proved their credentials on this session within `max_age` of `now`:
    /// its `authenticated_at` is younger than `max_age`, and, if a remember-me refresh made
    /// the session, it was re-authenticated since (a refresh keeps the login's
    /// `authenticated_at`, older than the session's `created_at`; a re-authentication moves it
    /// to or past `created_at`).
    ///
    /// ```
    /// # use tower_session_auth::store::SessionRecord;
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
#[non_exhaustive]
pub struct UserRecord {
    /// Login name.
    pub username: String,
    /// Role name; `None` or empty means "no role" and fails validation.
    pub role: Option<String>,
    /// Inactive users fail validation.
    pub is_active: bool,
}

impl UserRecord {
    /// A user as the validating statement reads it.
    pub fn new(username: impl Into<String>, role: Option<String>, is_active: bool) -> Self {
        Self {
            username: username.into(),
            role,
            is_active,
        }
    }
}

/// The selected character's columns read in the validating statement.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CharacterRecord {
    /// Character name.
    pub name: String,
    /// The character's world; `None` fails game validation.
    pub world_id: Option<String>,
}

impl CharacterRecord {
    /// A character as the validating statement reads it.
    pub fn new(name: impl Into<String>, world_id: Option<String>) -> Self {
        Self {
            name: name.into(),
            world_id,
        }
    }
}

/// Everything one validating statement returns about a live session.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionView {
    /// The session row after the touch.
    pub session: SessionRecord,
    /// The owner, or `None` when the user row is gone.
    pub user: Option<UserRecord>,
    /// The selected character when it still exists and still belongs to the user (`None`
    /// when a store validated at [`Scope::User`], which does not read it).
    pub character: Option<CharacterRecord>,
}

impl SessionView {
    /// A live session with its user (`None`: the user row is gone) and selected character.
    pub fn new(
        session: SessionRecord,
        user: Option<UserRecord>,
        character: Option<CharacterRecord>,
    ) -> Self {
        Self {
            session,
            user,
            character,
        }
    }
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

/// Outcome of [`SessionStore::validate`](super::SessionStore::validate).
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
#[non_exhaustive]
pub struct Touch {
    /// The session is touched only if its `last_activity` is at or before this instant.
    pub due_before: OffsetDateTime,
    /// When touched under sliding expiration, `expires_at` becomes this.
    pub slide_to: Option<OffsetDateTime>,
}

impl Touch {
    /// Touch rules: touch when `last_activity` is at or before `due_before`, and then slide
    /// `expires_at` to `slide_to` (if any).
    pub fn new(due_before: OffsetDateTime, slide_to: Option<OffsetDateTime>) -> Self {
        Self {
            due_before,
            slide_to,
        }
    }
}

/// Outcome of [`CharacterStore::select_character`](super::CharacterStore::select_character).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CharacterSelection {
    /// The character was bound; its name and world are returned.
    Selected(CharacterRecord),
    /// The character does not exist or belongs to another user; nothing changed.
    CharacterNotFound,
    /// The session is gone (logged out or expired concurrently); nothing changed.
    SessionNotFound,
}
