//! An opt-in cache of validated sessions (cargo feature `cache`), for services that run many
//! instances on one PostgreSQL and want the database off the hot path.
//!
//! Entries are keyed by token hash, live for a short, bounded [`CacheConfig::ttl`], and include
//! negative entries for unknown tokens. A cached session is served only while no activity write
//! is due, so the debounced touch still reaches the database and idle expiry and
//! `count_active` stay right; an entry past its session's expiry is never served.
//!
//! Invalidation: the instance that logs out, revokes or selects a character drops the entry at
//! once; other instances learn through PostgreSQL `LISTEN/NOTIFY`
//! ([`PgStore::install_invalidation_triggers`](crate::PgStore::install_invalidation_triggers)
//! and [`PgStore::spawn_invalidation_listener`](crate::PgStore::spawn_invalidation_listener)):
//! triggers notify when a session is deleted or rebound and when a user's role, active flag or
//! a character changes. While the listener is not connected the cache serves nothing, and it is
//! flushed whenever the listener (re)connects, since missed notifications are not replayed.
//!
//! **Staleness bound.** On another instance, a revoked session, a role change or a
//! deactivation is seen after the notification arrives (milliseconds on a healthy link). If a
//! notification is lost without the listener noticing the broken link, the entry still expires
//! after `ttl`: that is the worst case.
//!
//! ```
//! use std::time::Duration;
//! use tower_session_auth::{CacheConfig, MemoryStore, SessionCache, SessionConfig, SessionManager};
//!
//! let cache = SessionCache::new(CacheConfig::default().ttl(Duration::from_secs(2)));
//! let manager = SessionManager::new(MemoryStore::new(), SessionConfig::default())
//!     .with_cache(cache);
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use moka::sync::Cache;
use time::OffsetDateTime;

use crate::store::{SessionView, is_expired};
use crate::token::{SessionId, TokenHash};

/// Size and lifetime of the [`SessionCache`].
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// How long an entry may be served (default 2 s): the worst-case staleness.
    pub ttl: Duration,
    /// At most this many entries (default 100 000).
    pub max_entries: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(2),
            max_entries: 100_000,
        }
    }
}

impl CacheConfig {
    /// Sets the entry lifetime.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the capacity.
    pub fn max_entries(mut self, max_entries: u64) -> Self {
        self.max_entries = max_entries;
        self
    }
}

#[derive(Clone)]
pub(crate) enum Cached {
    Unknown,
    Live(Arc<SessionView>),
}

/// The cache of validated sessions. Cheap to clone; clones share entries.
#[derive(Clone)]
pub struct SessionCache {
    entries: Cache<TokenHash, Cached>,
    serving: Arc<AtomicBool>,
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache")
            .field("entries", &self.entries.entry_count())
            .field("serving", &self.is_serving())
            .finish()
    }
}

impl SessionCache {
    /// An empty cache, serving at once (a listener, when spawned, pauses it until connected).
    pub fn new(config: CacheConfig) -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(config.max_entries)
                .time_to_live(config.ttl)
                .support_invalidation_closures()
                .build(),
            serving: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Whether the cache currently serves entries.
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    /// Starts or stops serving; stopping also drops every entry.
    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::Release);
        if !serving {
            self.invalidate_all();
        }
    }

    /// A cached outcome that may be served now: not past the session's expiry, and no touch
    /// due (`due_before`), so the activity write still happens.
    pub(crate) fn get(
        &self,
        hash: &TokenHash,
        now: OffsetDateTime,
        due_before: OffsetDateTime,
    ) -> Option<Cached> {
        if !self.is_serving() {
            return None;
        }
        match self.entries.get(hash)? {
            Cached::Live(view)
                if is_expired(&view.session, now) || view.session.last_activity <= due_before =>
            {
                None
            }
            cached => Some(cached),
        }
    }

    pub(crate) fn insert(&self, hash: TokenHash, cached: Cached) {
        if self.is_serving() {
            self.entries.insert(hash, cached);
        }
    }

    /// Drops a token's entry and, if it was a live session, the entries of its user (the
    /// session's remember-me series may have ended with it).
    pub(crate) fn invalidate_all_of_token(&self, hash: &TokenHash) {
        if let Some(Cached::Live(view)) = self.entries.get(hash) {
            self.invalidate_user(view.session.user_id);
        }
        self.entries.invalidate(hash);
    }

    /// Drops the entry of a session.
    pub fn invalidate_session(&self, id: SessionId) {
        self.invalidate_if(move |view| view.session.id == id);
    }

    /// Drops the entries of a user's sessions (after a role change or a deactivation made
    /// outside the notifying triggers).
    pub fn invalidate_user(&self, user_id: i64) {
        self.invalidate_if(move |view| view.session.user_id == user_id);
    }

    /// Drops every entry.
    pub fn invalidate_all(&self) {
        self.entries.invalidate_all();
    }

    fn invalidate_if(&self, matches: impl Fn(&SessionView) -> bool + Send + Sync + 'static) {
        let result = self
            .entries
            .invalidate_entries_if(move |_, cached| match cached {
                Cached::Live(view) => matches(view),
                Cached::Unknown => false,
            });
        if result.is_err() {
            // Only possible without invalidation closures, which `new` enables; stay safe.
            self.invalidate_all();
        }
    }

    /// Applies one notification payload (`session:<uuid>`, `user:<id>`, anything else: all).
    pub(crate) fn apply_notification(&self, payload: &str) {
        if let Some(id) = payload
            .strip_prefix("session:")
            .and_then(|id| id.parse::<SessionId>().ok())
        {
            self.invalidate_session(id);
        } else if let Some(user) = payload
            .strip_prefix("user:")
            .and_then(|id| id.parse::<i64>().ok())
        {
            self.invalidate_user(user);
        } else {
            self.invalidate_all();
        }
    }
}
