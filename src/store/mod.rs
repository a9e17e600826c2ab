//! For store implementers: the [`SessionStore`] trait and its extension traits, the records
//! they exchange, and the two stores this crate ships: [`PgStore`] (PostgreSQL, the product)
//! and [`MemoryStore`] (the same semantics, in process). With the `sqlx` feature,
//! `SqlxStore` is the PostgreSQL store on an application's `sqlx::PgPool`.
//!
//! A store implements the small core, [`SessionStore`] (create, validate, look up, remove,
//! list, purge, re-authenticate), and the extension traits for what it offers beyond it:
//! [`RememberStore`] (remember-me series), [`CharacterStore`] (a character bound to the
//! session) and [`AdminStore`] (counting and clearing). The manager finds them through
//! [`SessionStore::remember`], [`SessionStore::characters`] and [`SessionStore::admin`], and
//! answers [`StoreError::Unsupported`] for what a store lacks.
//!
//! Stores are clock-free: every call that depends on time receives `now` from the
//! [`SessionManager`](crate::SessionManager), whose clock can be replaced in tests.
//!
//! # Implementing a store
//!
//! A store over another database fills in the core; [`MemoryStore`]'s source is a complete
//! reference, and the conformance suite of the `test-util` feature checks a store against
//! every guarantee the manager relies on, one `#[test]` per guarantee:
#![cfg_attr(
    feature = "test-util",
    doc = "[`conformance_tests!`](crate::conformance_tests) in [`test_util::conformance`](crate::test_util::conformance)."
)]
#![cfg_attr(
    not(feature = "test-util"),
    doc = "`tower_session_auth::conformance_tests!` in `tower_session_auth::test_util::conformance`."
)]
//!
//! ```
//! use async_trait::async_trait;
//! use time::OffsetDateTime;
//! use tower_session_auth::{SessionId, UserId};
//! use tower_session_auth::store::{
//!     NewSession, PurgePosition, Purged, Scope, SessionRecord, SessionStore, SessionView,
//!     StoreError, TokenHash, Touch, Validation,
//! };
//!
//! /// Sessions in a key-value service (the calls to it are elided).
//! struct KvStore;
//!
//! #[async_trait]
//! impl SessionStore for KvStore {
//!     async fn create(
//!         &self,
//!         new: NewSession,
//!         max_per_user: Option<u32>,
//!     ) -> Result<SessionRecord, StoreError> {
//!         // Insert `new` under `new.token_hash` (never the token itself), then drop the
//!         // user's oldest sessions beyond `max_per_user`, atomically.
//!         Ok(SessionRecord::new(&new))
//!     }
//!
//!     async fn validate(
//!         &self,
//!         token_hash: &TokenHash,
//!         now: OffsetDateTime,
//!         touch: Touch,
//!         scope: Scope,
//!     ) -> Result<Validation, StoreError> {
//!         // One atomic step: find by hash; delete and answer `Expired` if
//!         // `record.is_expired(now)`; touch if `last_activity <= touch.due_before`;
//!         // read the user (and at `Scope::Game` the character).
//!         Ok(Validation::Unknown)
//!     }
//!
//!     async fn lookup(
//!         &self,
//!         token_hash: &TokenHash,
//!         now: OffsetDateTime,
//!     ) -> Result<Option<SessionView>, StoreError> {
//!         Ok(None)
//!     }
//!
//!     async fn remove(
//!         &self,
//!         id: SessionId,
//!         owner: Option<&UserId>,
//!     ) -> Result<Option<UserId>, StoreError> {
//!         Ok(None)
//!     }
//!
//!     async fn remove_by_token(&self, token_hash: &TokenHash) -> Result<Option<UserId>, StoreError> {
//!         Ok(None)
//!     }
//!
//!     async fn remove_for_user(
//!         &self,
//!         user_id: &UserId,
//!         keep: Option<SessionId>,
//!     ) -> Result<u64, StoreError> {
//!         Ok(0)
//!     }
//!
//!     async fn list_for_user(
//!         &self,
//!         user_id: &UserId,
//!         now: OffsetDateTime,
//!     ) -> Result<Vec<SessionRecord>, StoreError> {
//!         Ok(Vec::new())
//!     }
//!
//!     async fn purge_expired(
//!         &self,
//!         now: OffsetDateTime,
//!         limit: u32,
//!         from: PurgePosition,
//!     ) -> Result<Purged, StoreError> {
//!         Ok(Purged::new(0, 0))
//!     }
//!
//!     async fn reauthenticate(&self, id: SessionId, now: OffsetDateTime) -> Result<bool, StoreError> {
//!         Ok(false)
//!     }
//! }
//! ```

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

/// The readers of a session row and of a validate / lookup row, for a driver whose row type
/// is `$row` and whose `column(row, index, expected)` is in scope: the PostgreSQL store and the
/// sqlx store read the same statements, so they share one text of the readers.
macro_rules! session_row_readers {
    ($row:ty) => {
        /// Reads the `SESSION_COLUMNS` of a row.
        fn record_from_row(row: &$row) -> Result<SessionRecord, StoreError> {
            // Each column at its place in the list; a name not there fails to compile.
            macro_rules! get {
                ($name:literal, $expected:literal) => {
                    column(row, const { session_column($name) }, $expected)?
                };
            }
            Ok(SessionRecord {
                id: SessionId(get!("id", "uuid")),
                user_id: get!("user_id", "user id"),
                character_id: get!("character_id", "bigint"),
                world_id: get!("world_id", "text"),
                client_type: get!("client_type", "text"),
                ip: get!("ip", "inet"),
                user_agent: get!("user_agent", "text"),
                created_at: get!("created_at", "timestamptz"),
                last_activity: get!("last_activity", "timestamptz"),
                expires_at: get!("expires_at", "timestamptz"),
                absolute_expires_at: get!("absolute_expires_at", "timestamptz"),
                authenticated_at: get!("authenticated_at", "timestamptz"),
                refreshed: get!("refreshed", "boolean"),
                remembered: {
                    let series_id: Option<Uuid> = get!("series_id", "uuid");
                    series_id.is_some()
                },
            })
        }

        /// Reads a row of the validate / lookup statements (see `view_select` in the PostgreSQL store).
        fn view_from_row(row: &$row, scope: Scope) -> Result<SessionView, StoreError> {
            let at = SESSION_COLUMNS.len();
            // The key columns tell a missing row of the left join from null columns of a present one.
            let user = match column::<Option<crate::UserId>>(row, at + 3, "user id")? {
                None => None,
                Some(_) => Some(UserRecord {
                    username: column(row, at, "text")?,
                    role: column(row, at + 1, "text")?,
                    is_active: column::<Option<bool>>(row, at + 2, "boolean")?.unwrap_or(false),
                }),
            };
            let character = match scope {
                Scope::User => None,
                Scope::Game => match column::<Option<i64>>(row, at + 6, "bigint")? {
                    None => None,
                    Some(_) => Some(CharacterRecord {
                        name: column(row, at + 4, "text")?,
                        world_id: column(row, at + 5, "text")?,
                    }),
                },
            };
            Ok(SessionView {
                session: record_from_row(row)?,
                user,
                character,
            })
        }
    };
}

mod error;
pub(crate) mod family;
mod memory;
pub(crate) mod postgres;
mod record;
#[cfg(feature = "sqlx")]
mod sqlx;
mod tls;

#[cfg(feature = "sqlx")]
pub use self::sqlx::SqlxStore;
pub use crate::token::TokenHash;
pub(crate) use error::Causes;
pub use error::{BoxError, StoreError};
pub use memory::MemoryStore;
pub use postgres::{AppSchema, PgStore};
pub use record::{
    CharacterRecord, CharacterSelection, ClientInfo, NewSeries, NewSession, PurgePosition, Purged,
    RefreshOutcome, RefreshRequest, Scope, SessionRecord, SessionView, Touch, UserRecord,
    Validation,
};
pub use tls::PgTls;

use crate::token::SessionId;
use crate::user_id::UserId;
pub use crate::user_id::UserIdType;

/// Storage of sessions: the core every store implements. Implemented by [`PgStore`] and
/// [`MemoryStore`]; a custom store must give the same guarantees, which the conformance suite
/// of the `test-util` feature checks:
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

    /// Removes a session by id; with `owner = Some(u)` only if it belongs to user `u`. If the
    /// session belongs to a remember-me series, the series and its other sessions end too,
    /// including a session that a refresh of the series commits meanwhile. Returns the
    /// session's user if it existed (so that a cache can drop that user's entries).
    async fn remove(
        &self,
        id: SessionId,
        owner: Option<&UserId>,
    ) -> Result<Option<UserId>, StoreError>;

    /// Removes the session with this token hash, and its remember-me series as `remove` does.
    async fn remove_by_token(&self, token_hash: &TokenHash) -> Result<Option<UserId>, StoreError>;

    /// Removes all sessions of a user except `keep` and the other sessions of `keep`'s
    /// remember-me series, and ends all the user's series except `keep`'s; returns how many
    /// sessions were removed. No session of an ended series survives, even one that a
    /// concurrent refresh commits.
    async fn remove_for_user(
        &self,
        user_id: &UserId,
        keep: Option<SessionId>,
    ) -> Result<u64, StoreError>;

    /// Lists a user's live sessions, newest first.
    async fn list_for_user(
        &self,
        user_id: &UserId,
        now: OffsetDateTime,
    ) -> Result<Vec<SessionRecord>, StoreError>;

    /// One batch of the purge: deletes at most `limit` expired sessions and at most `limit`
    /// expired remember-me series, each batch a short statement of its own, reading each table
    /// from the position `from`, and returns how many of each it deleted and where the next
    /// batch starts ([`Purged::next`]).
    /// [`SessionManager::purge_expired`](crate::SessionManager::purge_expired) starts at
    /// [`PurgePosition::START`] and calls it until a batch comes back short of `limit` on both
    /// counts. Rows that another transaction holds locked, and rows that a batch passed
    /// before they expired or moved behind its position, may be left: the next purge, which
    /// starts again at the beginning, takes them.
    async fn purge_expired(
        &self,
        now: OffsetDateTime,
        limit: u32,
        from: PurgePosition,
    ) -> Result<Purged, StoreError>;

    /// Records a fresh proof of credentials on a live session: moves its `authenticated_at`
    /// to `now` (never backwards), and nothing else: same token, same series, same expiry.
    /// Returns whether a live session with this id exists.
    async fn reauthenticate(&self, id: SessionId, now: OffsetDateTime) -> Result<bool, StoreError>;

    /// The store's remember-me support, if it has any: `Some(self)` in a store that implements
    /// [`RememberStore`]. Without it, a login asking for "remember me" and every refresh fail
    /// with [`StoreError::Unsupported`], and a logout has no series to end.
    fn remember(&self) -> Option<&dyn RememberStore> {
        None
    }

    /// The store's character binding, if it has any: `Some(self)` in a store that implements
    /// [`CharacterStore`]. Without it, selecting a character fails with
    /// [`StoreError::Unsupported`] (and [`GameUser`](crate::GameUser) routes answer 409).
    fn characters(&self) -> Option<&dyn CharacterStore> {
        None
    }

    /// The store's administration, if it has any: `Some(self)` in a store that implements
    /// [`AdminStore`]. Without it, counting and clearing fail with [`StoreError::Unsupported`].
    fn admin(&self) -> Option<&dyn AdminStore> {
        None
    }
}

/// Remember-me series ([`RefreshConfig`](crate::RefreshConfig)): a store that keeps them
/// implements this and returns `Some(self)` from [`SessionStore::remember`].
#[async_trait]
pub trait RememberStore: SessionStore {
    /// Ends the remember-me series `series` and its sessions if `secret_hash` is a secret the
    /// series issued and still remembers; returns the series' user if it did. A forged secret
    /// changes nothing (the series id is public).
    async fn end_series(
        &self,
        series: Uuid,
        secret_hash: &TokenHash,
    ) -> Result<Option<UserId>, StoreError>;

    /// Exchanges a remember-me secret for a new session, atomically, by the family rules of
    /// [`RefreshConfig`](crate::RefreshConfig): issues a new secret, ends the series' earlier
    /// sessions (but for the grace overlap), caps the new session's absolute expiry by the
    /// series', honours one more use inside the grace window, revokes the series on reuse of
    /// a used secret, and changes nothing for a secret the series does not hold.
    async fn refresh(&self, request: RefreshRequest) -> Result<RefreshOutcome, StoreError>;
}

/// Character binding for [`GameUser`](crate::GameUser) routes: a store that can bind one of
/// the user's characters to a session implements this and returns `Some(self)` from
/// [`SessionStore::characters`].
#[async_trait]
pub trait CharacterStore: SessionStore {
    /// Binds a character of `user_id` to the session (ownership checked, world derived).
    async fn select_character(
        &self,
        session_id: SessionId,
        user_id: &UserId,
        character_id: i64,
    ) -> Result<CharacterSelection, StoreError>;
}

/// Administration: counts and mass removal, for health pages and operators. A store that
/// offers them implements this and returns `Some(self)` from [`SessionStore::admin`].
#[async_trait]
pub trait AdminStore: SessionStore {
    /// Counts live sessions, and of those only the ones active since `active_since` if given.
    async fn count_active(
        &self,
        now: OffsetDateTime,
        active_since: Option<OffsetDateTime>,
    ) -> Result<u64, StoreError>;

    /// Deletes every session and remember-me series; returns how many sessions.
    async fn clear_all(&self) -> Result<u64, StoreError>;
}
