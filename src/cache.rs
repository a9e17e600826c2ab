//! An opt-in cache of validated sessions (cargo feature `cache`), for services that run many
//! instances on one PostgreSQL and want the database off the hot path.
//!
//! Entries are keyed by token hash, live for a short, bounded [`CacheConfig::ttl`], and include
//! negative entries for unknown tokens. A cached session is served only while no activity write
//! is due, so the debounced touch still reaches the database and idle expiry and
//! `count_active` stay right; an entry past its session's expiry is never served.
//!
//! Invalidation: the instance that logs out, revokes (one, others, all, a kick, pruning at
//! login, a refresh's earlier session, a series ended by reuse or a failed refresh) selects
//! a character or re-authenticates drops the entries concerned at once, and a validation that asked the store
//! before that and returns after it is not cached (every invalidation bumps a generation,
//! which an insertion checks under the shard's lock); other instances learn through
//! PostgreSQL `LISTEN/NOTIFY`
//! ([`PgStore::install_invalidation_triggers`](crate::PgStore::install_invalidation_triggers)
//! and [`PgStore::spawn_invalidation_listener`](crate::PgStore::spawn_invalidation_listener)):
//! triggers notify when sessions are deleted (once per statement, ids in batches), rebound or
//! re-authenticated,
//! and when a user's role, active flag or a character changes. Each shard indexes its live
//! entries by session id and by user, so dropping a session or a user is a lookup per shard,
//! not a scan of the entries. While the listener is not connected the cache serves nothing, and it is
//! flushed whenever the listener (re)connects, since missed notifications are not replayed.
//!
//! **Staleness bound.** On another instance, a revoked session, a role change or a
//! deactivation is seen after the notification arrives (milliseconds on a healthy link). If a
//! notification is lost without the listener noticing the broken link, the entry still expires
//! after `ttl`: that is the worst case.
//!
//! **Design.** Entries live for seconds, so age alone retires them: the cache is 16 shards of
//! a plain map under a read-write lock, and a hit is a shared lock, one lookup and an `Arc`
//! clone. A general-purpose cache that also tracks recency and frequency on every read added
//! about 0.35 µs to each hit, a fifth of all the crate added to a request on the machine it
//! was measured on (see `BENCHMARKS.md`). Capacity ([`CacheConfig::max_entries`]) is enforced
//! per shard; guessed tokens never push out live sessions ([`SessionCache`]).
//!
//! ```
//! use std::time::Duration;
//! use tower_session_auth::{cache::CacheConfig, MemoryStore, cache::SessionCache, SessionConfig, SessionManager};
//!
//! let cache = SessionCache::new(CacheConfig::default().ttl(Duration::from_secs(2)));
//! let manager = SessionManager::new(MemoryStore::new(), SessionConfig::default())
//!     .with_cache(cache);
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::invalidation::Notice;
use crate::store::SessionView;
use crate::token::{SessionId, TokenHash};
use crate::user_id::UserId;

/// Size and lifetime of the [`SessionCache`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CacheConfig {
    /// How long an entry may be served (default 2 s): the worst-case staleness.
    pub ttl: Duration,
    /// At most about this many entries (default 100 000).
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

struct Entry {
    cached: Cached,
    stored_at: Instant,
}

/// Shards of the map, chosen by the token hash's first byte (uniform: it is SHA-256 output),
/// so that concurrent requests rarely meet on a lock.
const SHARDS: usize = 16;

/// One shard: the entries by token hash, and its live entries indexed by session id and by
/// user, so that invalidating a session or a user is a lookup per shard, not a scan.
#[derive(Default)]
struct Shard {
    entries: HashMap<TokenHash, Entry>,
    by_session: HashMap<SessionId, TokenHash>,
    by_user: HashMap<UserId, HashSet<TokenHash>>,
}

impl Shard {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn insert(&mut self, hash: TokenHash, entry: Entry) {
        self.remove(&hash);
        if let Cached::Live(view) = &entry.cached {
            self.by_session.insert(view.session.id, hash);
            self.by_user
                .entry(view.session.user_id.clone())
                .or_default()
                .insert(hash);
        }
        self.entries.insert(hash, entry);
    }

    fn remove(&mut self, hash: &TokenHash) {
        if let Some(entry) = self.entries.remove(hash) {
            unindex(&mut self.by_session, &mut self.by_user, hash, &entry);
        }
    }

    fn retain(&mut self, mut keep: impl FnMut(&Entry) -> bool) {
        let Self {
            entries,
            by_session,
            by_user,
        } = self;
        entries.retain(|hash, entry| {
            let kept = keep(entry);
            if !kept {
                unindex(by_session, by_user, hash, entry);
            }
            kept
        });
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.by_session.clear();
        self.by_user.clear();
    }
}

fn unindex(
    by_session: &mut HashMap<SessionId, TokenHash>,
    by_user: &mut HashMap<UserId, HashSet<TokenHash>>,
    hash: &TokenHash,
    entry: &Entry,
) {
    if let Cached::Live(view) = &entry.cached {
        by_session.remove(&view.session.id);
        let user_id = &view.session.user_id;
        if let Some(hashes) = by_user.get_mut(user_id) {
            hashes.remove(hash);
            if hashes.is_empty() {
                by_user.remove(user_id);
            }
        }
    }
}

/// The cache of validated sessions. Cheap to clone; clones share entries.
///
/// A sharded map of token hash to the last validation, read under a shared lock: a hit costs
/// a hash lookup and an `Arc` clone. Entries older than the [`CacheConfig::ttl`] are never
/// served. A full shard first drops its stale entries; an unknown token is then not cached if
/// that left no room, so a flood of guessed tokens cannot evict live sessions. A live session
/// makes room by dropping the negative entries, or, if the shard holds only fresh live ones,
/// all of them (they are validated against the store again).
#[derive(Clone)]
pub struct SessionCache {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[RwLock<Shard>]>,
    ttl: Duration,
    per_shard: usize,
    serving: AtomicBool,
    /// Bumped by every invalidation, before it drops anything; see [`SessionCache::insert`].
    generation: AtomicU64,
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache")
            .field("entries", &self.entry_count())
            .field("serving", &self.is_serving())
            .finish()
    }
}

impl SessionCache {
    /// An empty cache, serving at once (a listener, when spawned, pauses it until connected).
    pub fn new(config: CacheConfig) -> Self {
        let per_shard = usize::try_from(config.max_entries.div_ceil(SHARDS as u64))
            .unwrap_or(usize::MAX)
            .max(1);
        Self {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
                ttl: config.ttl,
                per_shard,
                serving: AtomicBool::new(true),
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// Whether the cache currently serves entries.
    pub fn is_serving(&self) -> bool {
        self.inner.serving.load(Ordering::Acquire)
    }

    /// The notification listener is connected (`true`) or lost its connection (`false`):
    /// notifications may have been missed meanwhile, so the cache is flushed on connection
    /// and serves only while connected.
    pub(crate) fn listener_connected(&self, connected: bool) {
        if connected {
            self.invalidate_all();
        }
        self.set_serving(connected);
    }

    /// Starts or stops serving; stopping also drops every entry.
    pub fn set_serving(&self, serving: bool) {
        self.inner.serving.store(serving, Ordering::Release);
        if !serving {
            self.invalidate_all();
        }
    }

    /// How many entries the cache holds (stale ones included until they are dropped).
    pub fn entry_count(&self) -> usize {
        (0..SHARDS).map(|i| self.read(i).len()).sum()
    }

    /// A cached outcome that may be served now: younger than the TTL, not past the session's
    /// expiry, and no touch due (`due_before`), so the activity write still happens.
    pub(crate) fn get(
        &self,
        hash: &TokenHash,
        now: OffsetDateTime,
        due_before: OffsetDateTime,
    ) -> Option<Cached> {
        if !self.is_serving() {
            return None;
        }
        let shard = self.read(shard_of(hash));
        let entry = shard.entries.get(hash)?;
        if entry.stored_at.elapsed() >= self.inner.ttl {
            return None;
        }
        match &entry.cached {
            Cached::Live(view)
                if view.session.is_expired(now) || view.session.last_activity <= due_before =>
            {
                None
            }
            cached => Some(cached.clone()),
        }
    }

    /// The invalidation count, read before a validation asks the store.
    pub(crate) fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::SeqCst)
    }

    fn bump_generation(&self) {
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Caches the outcome of a validation that read [`generation`](Self::generation) before
    /// asking the store. If anything was invalidated since, the outcome may predate that
    /// change (a logout that committed while the validation was in flight) and is not cached.
    /// The check is made under the shard's lock, and an invalidation bumps the generation
    /// before it takes any lock, so either the insertion sees the bump or the invalidation
    /// finds the entry and drops it.
    pub(crate) fn insert(&self, hash: TokenHash, cached: Cached, generation: u64) {
        if !self.is_serving() {
            return;
        }
        let mut shard = self.write(shard_of(&hash));
        if self.generation() != generation {
            return;
        }
        let (per_shard, ttl) = (self.inner.per_shard, self.inner.ttl);
        let no_room =
            |shard: &Shard| shard.len() >= per_shard && !shard.entries.contains_key(&hash);
        if no_room(&shard) {
            shard.retain(|entry| entry.stored_at.elapsed() < ttl);
        }
        if no_room(&shard) {
            if let Cached::Unknown = cached {
                return;
            }
            shard.retain(|entry| matches!(entry.cached, Cached::Live(_)));
            if shard.len() >= per_shard {
                // All live and fresh: start the shard over (its sessions are validated
                // against the store again), so that a full shard costs one scan per
                // `per_shard` insertions, not one per insertion.
                shard.clear();
            }
        }
        shard.insert(
            hash,
            Entry {
                cached,
                stored_at: Instant::now(),
            },
        );
    }

    /// Drops a token's entry.
    pub(crate) fn invalidate_token(&self, hash: &TokenHash) {
        self.bump_generation();
        self.write(shard_of(hash)).remove(hash);
    }

    /// Drops the entry of a session: one index lookup per shard.
    pub fn invalidate_session(&self, id: SessionId) {
        self.invalidate_sessions(&[id]);
    }

    /// Drops the entries of these sessions, taking each shard's lock once.
    pub(crate) fn invalidate_sessions(&self, ids: &[SessionId]) {
        self.bump_generation();
        for i in 0..SHARDS {
            let present = {
                let shard = self.read(i);
                ids.iter().any(|id| shard.by_session.contains_key(id))
            };
            if !present {
                continue;
            }
            let mut shard = self.write(i);
            for id in ids {
                if let Some(hash) = shard.by_session.get(id).copied() {
                    shard.remove(&hash);
                }
            }
        }
    }

    /// Drops the entries of a user's sessions (after a role change or a deactivation made
    /// outside the notifying triggers): one index lookup per shard.
    pub fn invalidate_user(&self, user_id: &UserId) {
        self.bump_generation();
        for i in 0..SHARDS {
            if !self.read(i).by_user.contains_key(user_id) {
                continue;
            }
            let mut shard = self.write(i);
            let hashes = shard.by_user.get(user_id).cloned().unwrap_or_default();
            for hash in &hashes {
                shard.remove(hash);
            }
        }
    }

    /// Drops every entry.
    pub fn invalidate_all(&self) {
        self.bump_generation();
        for i in 0..SHARDS {
            self.write(i).clear();
        }
    }

    // A panic while a shard was locked cannot leave it inconsistent (each change is one map
    // operation), so a poisoned lock is used as it is.
    fn read(&self, shard: usize) -> RwLockReadGuard<'_, Shard> {
        self.inner.shards[shard]
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self, shard: usize) -> RwLockWriteGuard<'_, Shard> {
        self.inner.shards[shard]
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies one notification of the invalidation triggers.
    pub(crate) fn apply(&self, notice: &Notice) {
        match notice {
            Notice::Sessions(ids) => self.invalidate_sessions(ids),
            Notice::User(user_ids) => user_ids.iter().for_each(|id| self.invalidate_user(id)),
            Notice::All => self.invalidate_all(),
        }
    }

    /// Applies one notification payload: `sessions:<uuid>,<uuid>,…` (the sessions a
    /// statement deleted or rebound, in batches), `user:<id>`; anything else (or an id that
    /// does not parse) drops everything.
    pub(crate) fn apply_notification(&self, payload: &str) {
        self.apply(&Notice::parse(payload));
    }
}

fn shard_of(hash: &TokenHash) -> usize {
    usize::from(hash.0[0]) % SHARDS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FromUserId;
    use crate::store::{SessionRecord, UserRecord};

    fn live(user_id: i64, now: OffsetDateTime) -> Cached {
        Cached::Live(Arc::new(SessionView {
            session: SessionRecord {
                id: SessionId::new(),
                user_id: UserId::Int(user_id),
                character_id: None,
                world_id: None,
                client_type: "browser".into(),
                ip: None,
                user_agent: None,
                created_at: now,
                last_activity: now,
                expires_at: Some(now + time::Duration::hours(1)),
                absolute_expires_at: None,
                authenticated_at: now,
                refreshed: false,
                remembered: false,
            },
            user: Some(UserRecord {
                username: format!("user{user_id}"),
                role: Some("player".into()),
                is_active: true,
            }),
            character: None,
        }))
    }

    /// Hashes that all fall in shard 0.
    fn hash(n: u8) -> TokenHash {
        let mut bytes = [0u8; 32];
        bytes[1] = n;
        TokenHash(bytes)
    }

    fn put(cache: &SessionCache, hash: TokenHash, cached: Cached) {
        cache.insert(hash, cached, cache.generation());
    }

    fn served(cache: &SessionCache, hash: &TokenHash, now: OffsetDateTime) -> Option<i64> {
        match cache.get(hash, now, now - time::Duration::minutes(1))? {
            Cached::Live(view) => i64::from_user_id(&view.session.user_id),
            Cached::Unknown => Some(-1),
        }
    }

    #[test]
    fn guessed_tokens_do_not_evict_live_sessions() {
        let now = OffsetDateTime::now_utc();
        // 2 entries per shard.
        let cache = SessionCache::new(CacheConfig::default().max_entries(2 * SHARDS as u64));
        put(&cache, hash(1), live(1, now));
        put(&cache, hash(2), live(2, now));
        for n in 3..100 {
            put(&cache, hash(n), Cached::Unknown);
        }
        assert_eq!(served(&cache, &hash(1), now), Some(1));
        assert_eq!(served(&cache, &hash(2), now), Some(2));
        assert_eq!(served(&cache, &hash(3), now), None);
        // A live session makes room for itself: the full shard starts over.
        put(&cache, hash(3), live(3, now));
        assert_eq!(served(&cache, &hash(3), now), Some(3));
        assert_eq!(served(&cache, &hash(1), now), None);
        assert_eq!(cache.entry_count(), 1);
    }

    #[test]
    fn negative_entries_give_way_to_live_sessions() {
        let now = OffsetDateTime::now_utc();
        let cache = SessionCache::new(CacheConfig::default().max_entries(2 * SHARDS as u64));
        put(&cache, hash(1), Cached::Unknown);
        put(&cache, hash(2), Cached::Unknown);
        assert_eq!(served(&cache, &hash(1), now), Some(-1));
        put(&cache, hash(3), live(3, now));
        assert_eq!(served(&cache, &hash(3), now), Some(3));
        assert_eq!(served(&cache, &hash(1), now), None);
        assert_eq!(served(&cache, &hash(2), now), None);
    }

    #[test]
    fn entries_are_not_served_past_the_ttl_a_due_touch_or_the_session_expiry() {
        let now = OffsetDateTime::now_utc();
        let cache = SessionCache::new(CacheConfig::default().ttl(Duration::from_millis(50)));
        put(&cache, hash(1), live(1, now));
        assert_eq!(served(&cache, &hash(1), now), Some(1));
        // A touch is due once the last activity is at or before `due_before`.
        assert!(cache.get(&hash(1), now, now).is_none());
        // Past the session's own expiry.
        assert!(
            cache
                .get(
                    &hash(1),
                    now + time::Duration::hours(1),
                    now - time::Duration::days(1)
                )
                .is_none()
        );
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(served(&cache, &hash(1), now), None);
    }

    #[test]
    fn a_paused_cache_serves_and_keeps_nothing() {
        let now = OffsetDateTime::now_utc();
        let cache = SessionCache::new(CacheConfig::default());
        put(&cache, hash(1), live(1, now));
        cache.set_serving(false);
        assert_eq!(cache.entry_count(), 0);
        put(&cache, hash(2), live(2, now));
        assert_eq!(cache.entry_count(), 0);
        cache.set_serving(true);
        assert_eq!(served(&cache, &hash(2), now), None);
    }

    #[test]
    fn invalidation_by_session_user_and_token() {
        let now = OffsetDateTime::now_utc();
        let cache = SessionCache::new(CacheConfig::default());
        let first = live(1, now);
        let Cached::Live(view) = &first else {
            unreachable!()
        };
        let first_id = view.session.id;
        put(&cache, hash(1), first);
        put(&cache, hash(2), live(1, now));
        put(&cache, hash(3), live(2, now));
        put(&cache, hash(4), Cached::Unknown);
        cache.invalidate_session(first_id);
        assert_eq!(served(&cache, &hash(1), now), None);
        assert_eq!(served(&cache, &hash(2), now), Some(1));
        cache.apply_notification("user:1");
        assert_eq!(served(&cache, &hash(2), now), None);
        assert_eq!(served(&cache, &hash(3), now), Some(2));
        cache.invalidate_token(&hash(3));
        assert_eq!(served(&cache, &hash(3), now), None);
        assert_eq!(served(&cache, &hash(4), now), Some(-1));
        cache.apply_notification("anything else");
        assert_eq!(cache.entry_count(), 0);
    }

    #[test]
    fn batched_notifications_drop_exactly_the_listed_sessions() {
        let now = OffsetDateTime::now_utc();
        let cache = SessionCache::new(CacheConfig::default());
        let mut ids = Vec::new();
        for n in 1..=4 {
            let cached = live(i64::from(n), now);
            let Cached::Live(view) = &cached else {
                unreachable!()
            };
            ids.push(view.session.id);
            // Spread over shards.
            let mut bytes = [n; 32];
            bytes[0] = n;
            put(&cache, TokenHash(bytes), cached);
        }
        cache.apply_notification(&format!("sessions:{},{}", ids[0], ids[2]));
        let hash = |n: u8| TokenHash([n; 32]);
        assert_eq!(served(&cache, &hash(1), now), None);
        assert_eq!(served(&cache, &hash(2), now), Some(2));
        assert_eq!(served(&cache, &hash(3), now), None);
        assert_eq!(served(&cache, &hash(4), now), Some(4));
        // An id that does not parse drops everything, to be safe.
        cache.apply_notification("sessions:not-an-id");
        assert_eq!(cache.entry_count(), 0);
    }

    #[test]
    fn the_indexes_follow_evictions_and_replacements() {
        let now = OffsetDateTime::now_utc();
        let cache = SessionCache::new(CacheConfig::default().max_entries(2 * SHARDS as u64));
        put(&cache, hash(1), live(1, now));
        put(&cache, hash(2), live(1, now));
        // A full shard of live sessions starts over: the index must forget them too.
        put(&cache, hash(3), live(2, now));
        assert_eq!(cache.entry_count(), 1);
        let shard = cache.read(0);
        assert_eq!(shard.by_session.len(), 1);
        assert_eq!(
            shard.by_user.keys().cloned().collect::<Vec<_>>(),
            [UserId::Int(2)]
        );
        drop(shard);
        // Replacing a token's entry re-indexes it.
        put(&cache, hash(3), Cached::Unknown);
        let shard = cache.read(0);
        assert!(shard.by_session.is_empty() && shard.by_user.is_empty());
    }

    #[test]
    fn an_outcome_read_before_an_invalidation_is_not_cached() {
        let now = OffsetDateTime::now_utc();
        let cache = SessionCache::new(CacheConfig::default());
        // A validation reads the generation, then asks the store ...
        let generation = cache.generation();
        // ... while a logout elsewhere invalidates (here: another token's entry) ...
        cache.invalidate_token(&hash(9));
        // ... so what the store said may be stale, and is not kept.
        cache.insert(hash(1), live(1, now), generation);
        assert_eq!(served(&cache, &hash(1), now), None);
        cache.insert(hash(1), live(1, now), cache.generation());
        assert_eq!(served(&cache, &hash(1), now), Some(1));
    }
}
