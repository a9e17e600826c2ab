//! [`SessionManager`]: login, validation, character selection, revocation, listing, purging.
//!
//! The manager is what handlers and background tasks use. Inside a request, the
//! [`Session`](crate::Session) handle wraps the same operations and also sets or clears the
//! cookie on the response.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cookie::Cookie;
use http::HeaderValue;
use time::OffsetDateTime;
use tokio::task::JoinHandle;

use crate::clock::{Clock, SystemClock};
use crate::config::{ConfigError, SessionConfig};
use crate::invalidation::{Notice, Watchers};
use crate::permission::{AccessPolicy, MudPolicy};
use crate::store::family::{earliest, span};
use crate::store::{
    AdminStore, CharacterSelection, ClientInfo, NewSeries, NewSession, PurgePosition,
    RefreshOutcome, RefreshRequest, Scope, SessionRecord, SessionStore, SessionView, StoreError,
    Touch, Validation,
};
use crate::token::{RefreshToken, SessionId, SessionToken};
use crate::user_id::UserId;

/// Where an invalidation goes: the validation cache, when there is one, and the session
/// watches ([`SessionWatch`]), which hear every event the cache does.
struct Invalidations<'a> {
    #[cfg(feature = "cache")]
    cache: Option<&'a crate::cache::SessionCache>,
    watchers: &'a Watchers,
}

impl Invalidations<'_> {
    fn invalidate_session(&self, id: SessionId) {
        #[cfg(feature = "cache")]
        if let Some(cache) = self.cache {
            cache.invalidate_session(id);
        }
        self.watchers.invalidate_session(id);
    }

    fn invalidate_user(&self, user_id: &UserId) {
        #[cfg(feature = "cache")]
        if let Some(cache) = self.cache {
            cache.invalidate_user(user_id);
        }
        self.watchers.invalidate_user(user_id);
    }

    fn invalidate_all(&self) {
        #[cfg(feature = "cache")]
        if let Some(cache) = self.cache {
            cache.invalidate_all();
        }
        self.watchers.invalidate_all();
    }
}

/// tracing target of the audit events (login, logout, revoke, expiry, re-authentication,
/// rejected tokens).
pub const AUDIT_TARGET: &str = "tower_session_auth::audit";

/// What a login asks for beyond the user id: "remember me", and who logs in from where.
///
/// ```
/// use tower_session_auth::{ClientInfo, LoginOptions};
///
/// let options = LoginOptions::new()
///     .remember(true)
///     .client(ClientInfo::default().with_client_type("tui"));
/// assert!(options.remember);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoginOptions {
    /// Also start a remember-me series: the login returns a [`RefreshToken`] in
    /// [`Login::refresh`] (and [`Session::login`](crate::Session::login) sets the refresh
    /// cookie for cookie clients). The session's absolute lifetime never goes beyond the
    /// series'.
    pub remember: bool,
    /// Who is logging in from where, recorded with the session. `None`:
    /// [`Session::login`](crate::Session::login) reads it from the request (the address the
    /// layer found, `User-Agent`, `X-Client-Type`); [`SessionManager::login`] records
    /// [`ClientInfo::default`].
    pub client: Option<ClientInfo>,
}

impl LoginOptions {
    /// A plain login: no remember-me, the client read from the request.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether to start a remember-me series.
    pub fn remember(mut self, remember: bool) -> Self {
        self.remember = remember;
        self
    }

    /// Records `client` instead of what the request says.
    pub fn client(mut self, client: ClientInfo) -> Self {
        self.client = Some(client);
        self
    }
}

/// A successful login or refresh: the new token (hand it to the client once), the stored
/// session, and with "remember me" the refresh token.
#[derive(Debug)]
#[non_exhaustive]
pub struct Login {
    /// The fresh bearer token. Its `Debug` is redacted.
    pub token: SessionToken,
    /// The stored session.
    pub session: SessionRecord,
    /// The remember-me credential, when asked for at login, and rotated by each refresh.
    pub refresh: Option<RefreshToken>,
}

/// Outcome of [`SessionManager::refresh`].
#[derive(Debug)]
pub enum Refresh {
    /// A new session and a rotated refresh token.
    Refreshed(Box<Login>),
    /// Unknown, expired or revoked series, a secret the series did not issue, a superseded
    /// secret already used again inside the grace window, a malformed token, or an inactive
    /// user.
    Invalid,
    /// A secret the series issued and that was already used was presented after the grace
    /// window: the series and every session it created have been revoked.
    ReuseDetected,
}

/// Sessions' lifecycle: the store, the configuration, the access policy and the clock.
///
/// Cheap to clone (one `Arc`). Build one at start-up and give it to the
/// [`SessionLayer`](crate::SessionLayer) and to background tasks.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_session_auth::store::StoreError> {
/// use tower_session_auth::{LoginOptions, MemoryStore, SessionConfig, SessionManager};
///
/// let store = MemoryStore::new();
/// store.upsert_user(1, "alice", Some("player"), true);
/// let manager = SessionManager::new(store, SessionConfig::default());
///
/// let login = manager.login(1, LoginOptions::new()).await?;
/// assert!(manager.lookup(&login.token).await.is_some());
/// assert!(manager.remove_by_token(&login.token).await?);
/// assert!(manager.lookup(&login.token).await.is_none());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SessionManager {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    store: Arc<dyn SessionStore>,
    config: SessionConfig,
    cookie_name: String,
    policy: Arc<dyn AccessPolicy>,
    clock: Arc<dyn Clock>,
    rejections: Arc<Mutex<HashMap<IpAddr, u64>>>,
    watchers: Arc<Watchers>,
    #[cfg(feature = "cache")]
    cache: Option<crate::cache::SessionCache>,
}

/// Distinct client addresses tracked by the rejected-token counter.
const MAX_TRACKED_IPS: usize = 10_000;

/// The key an address is counted under: IPv4 as is, IPv6 by its /64 network.
fn counted_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// Drops the `n` entries with the smallest counts, in one pass (amortised: it runs once per
/// `n` new addresses).
fn evict_smallest(counts: &mut HashMap<IpAddr, u64>, n: usize) {
    let mut entries: Vec<(u64, IpAddr)> = counts.iter().map(|(ip, n)| (*n, *ip)).collect();
    let n = n.clamp(1, entries.len());
    entries.select_nth_unstable(n - 1);
    for (_, ip) in &entries[..n] {
        counts.remove(ip);
    }
}

impl std::fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionManager")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl SessionManager {
    /// A manager over `store` with the [`MudPolicy`] and the system clock.
    ///
    /// # Panics
    /// At start-up, if `config` is invalid ([`SessionConfig::validate`]): an overflowing
    /// duration, a cookie name or path that cannot be sent, a `__Host-` cookie without
    /// `Secure` or `Path=/`. [`try_new`](Self::try_new) returns the error instead.
    pub fn new(store: impl SessionStore, config: SessionConfig) -> Self {
        Self::try_new(store, config).unwrap_or_else(|error| panic!("{error}"))
    }

    /// A manager over `store` with the [`MudPolicy`] and the system clock, or the reason
    /// `config` is invalid ([`SessionConfig::validate`]).
    pub fn try_new(store: impl SessionStore, config: SessionConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let cookie_name = config.cookie.full_name();
        Ok(Self {
            inner: Arc::new(Inner {
                store: Arc::new(store),
                config,
                cookie_name,
                policy: Arc::new(MudPolicy),
                clock: Arc::new(SystemClock),
                rejections: Arc::default(),
                watchers: Arc::default(),
                #[cfg(feature = "cache")]
                cache: None,
            }),
        })
    }

    /// Replaces the role → permission policy.
    pub fn with_policy(mut self, policy: impl AccessPolicy) -> Self {
        Arc::make_mut(&mut self.inner).policy = Arc::new(policy);
        self
    }

    /// Replaces the clock (tests use `test_util::ManualClock`, feature `test-util`).
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        Arc::make_mut(&mut self.inner).clock = Arc::new(clock);
        self
    }

    /// Serves validations from `cache` when it can (feature `cache`; see
    /// [`SessionCache`](crate::cache::SessionCache) for the staleness bound).
    #[cfg(feature = "cache")]
    pub fn with_cache(mut self, cache: crate::cache::SessionCache) -> Self {
        Arc::make_mut(&mut self.inner).cache = Some(cache);
        self
    }

    /// The validation cache, if one is set.
    #[cfg(feature = "cache")]
    pub fn cache(&self) -> Option<&crate::cache::SessionCache> {
        self.inner.cache.as_ref()
    }

    /// Reports a change to a user that no trigger reports (a role change or a deactivation
    /// made on another database, or without the triggers): drops the user's cached
    /// validations (feature `cache`) and wakes the watches of their sessions, which check
    /// once ([`SessionWatch`](crate::watch::SessionWatch)). The user is named by the id's
    /// text, as a notice names them: a uuid or an integer held as a string (`"42"`) reaches
    /// the sessions of the uuid or integer id too.
    pub fn invalidate_user(&self, user_id: impl Into<UserId>) {
        let user_ids = UserId::candidates(&user_id.into().to_string());
        self.with_cached(|targets| {
            for user_id in &user_ids {
                targets.invalidate_user(user_id);
            }
        });
    }

    /// Runs `invalidate` on the cache, if there is one, and the session watches.
    fn with_cached(&self, invalidate: impl FnOnce(&Invalidations<'_>)) {
        invalidate(&Invalidations {
            #[cfg(feature = "cache")]
            cache: self.inner.cache.as_ref(),
            watchers: &self.inner.watchers,
        });
    }

    /// Applies a notification of the invalidation triggers (from
    /// [`PgStore::spawn_session_listener`](crate::PgStore::spawn_session_listener)).
    pub(crate) fn apply_notification(&self, payload: &str) {
        let notice = Notice::parse(payload);
        #[cfg(feature = "cache")]
        if let Some(cache) = &self.inner.cache {
            cache.apply(&notice);
        }
        self.inner.watchers.apply(&notice);
    }

    /// The notification listener is connected (`true`) or lost its connection (`false`).
    /// Notifications may have been missed meanwhile: on connection the cache is flushed and
    /// starts serving, and every watch checks its session once.
    pub(crate) fn listener_connected(&self, connected: bool) {
        #[cfg(feature = "cache")]
        if let Some(cache) = &self.inner.cache {
            cache.listener_connected(connected);
        }
        self.inner.watchers.set_listening(connected);
        if connected {
            self.inner.watchers.invalidate_all();
        }
    }

    /// Whether [`PgStore::spawn_session_listener`](crate::PgStore::spawn_session_listener)'s
    /// connection is up (always `false` without a listener): while it is down, other
    /// instances' events do not reach this one's watches (a health check can report it).
    pub fn is_listening(&self) -> bool {
        self.inner.watchers.is_listening()
    }

    pub(crate) fn watchers(&self) -> &Watchers {
        &self.inner.watchers
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.inner.config
    }

    /// The access policy.
    pub fn policy(&self) -> &dyn AccessPolicy {
        &*self.inner.policy
    }

    /// The store.
    pub fn store(&self) -> &dyn SessionStore {
        &*self.inner.store
    }

    fn admin(&self) -> Result<&dyn AdminStore, StoreError> {
        self.inner
            .store
            .admin()
            .ok_or(StoreError::Unsupported("administration"))
    }

    /// The cookie name as sent (with the `__Host-` prefix when enabled).
    pub fn cookie_name(&self) -> &str {
        &self.inner.cookie_name
    }

    /// The current time, truncated to microseconds (PostgreSQL's precision), so that both
    /// stores see the same instants.
    pub fn now(&self) -> OffsetDateTime {
        let now = self.inner.clock.now();
        now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000)
            .unwrap_or(now)
    }

    /// Creates a session for `user_id` with a fresh token, as `options` asks (remember-me, the
    /// client recorded). With `max_sessions_per_user = Some(n)`, the user's oldest sessions
    /// beyond `n` are removed in the same step, and their remember-me series end.
    ///
    /// The caller has authenticated the user (password, SSO, …) and checked that the account
    /// is active. "Remember me" on a store without remember-me support
    /// ([`RememberStore`](crate::store::RememberStore)) fails with
    /// [`StoreError::Unsupported`] and creates nothing.
    pub async fn login(
        &self,
        user_id: impl Into<UserId>,
        options: LoginOptions,
    ) -> Result<Login, StoreError> {
        let user_id = user_id.into();
        let LoginOptions { remember, client } = options;
        if remember && self.inner.store.remember().is_none() {
            return Err(StoreError::Unsupported("remember-me"));
        }
        let client = client.unwrap_or_default();
        let now = self.now();
        let (token, mut new) = self.new_session(user_id.clone(), client, now);
        let refresh = remember.then(RefreshToken::generate);
        let refresh_config = &self.inner.config.refresh;
        new.remember = refresh.as_ref().map(|refresh| NewSeries {
            id: refresh.series(),
            secret_hash: refresh.secret_hash(),
            expires_at: refresh_config.idle_timeout.map(|ttl| now + span(ttl)),
            absolute_expires_at: refresh_config
                .absolute_lifetime
                .map(|life| now + span(life)),
        });
        if let Some(series) = &new.remember {
            new.absolute_expires_at = earliest(new.absolute_expires_at, series.absolute_expires_at);
        }
        let max_per_user = self.inner.config.max_sessions_per_user;
        let session = self.inner.store.create(new, max_per_user).await?;
        if max_per_user.is_some() {
            // Pruned sessions (and their series' sessions) may be cached.
            self.with_cached(|cache| cache.invalidate_user(&user_id));
        }
        tracing::info!(
            target: AUDIT_TARGET,
            event = "login",
            session_id = %session.id,
            user_id = user_id.as_field(),
            ip = session.ip.map(tracing::field::display),
            client_type = session.client_type.as_str(),
            remember,
        );
        Ok(Login {
            token,
            session,
            refresh,
        })
    }

    /// Trades a remember-me token for a new session and a rotated refresh token.
    ///
    /// The series' earlier session ends (one device, one session; see
    /// [`RefreshConfig`](crate::RefreshConfig) for the grace overlap and the family rules).
    /// Presenting a used secret after the grace window revokes the whole series and every
    /// session it created ([`Refresh::ReuseDetected`]); a secret the series never issued
    /// changes nothing ([`Refresh::Invalid`]). The new session keeps the series' login time
    /// as `authenticated_at`, is marked `refreshed`, and ends no later than the series.
    pub async fn refresh(
        &self,
        presented: &RefreshToken,
        client: ClientInfo,
    ) -> Result<Refresh, StoreError> {
        let config = &self.inner.config.refresh;
        let now = self.now();
        // The series' user is filled in by the store.
        let (token, session) = self.new_session(UserId::Int(0), client, now);
        let rotated = RefreshToken::rotate(presented.series());
        let request = RefreshRequest {
            series: presented.series(),
            secret_hash: presented.secret_hash(),
            new_secret_hash: rotated.secret_hash(),
            now,
            grace_since: now - span(config.grace),
            series_expires_at: config.idle_timeout.map(|ttl| now + span(ttl)),
            session,
            max_per_user: self.inner.config.max_sessions_per_user,
        };
        let series = presented.series().simple();
        let store = self
            .inner
            .store
            .remember()
            .ok_or(StoreError::Unsupported("remember-me"))?;
        Ok(match store.refresh(request).await? {
            RefreshOutcome::Refreshed(session) => {
                // The series' earlier session, and sessions pruned by the limit, ended.
                self.with_cached(|cache| cache.invalidate_user(&session.user_id));
                tracing::info!(
                    target: AUDIT_TARGET,
                    event = "refresh",
                    session_id = %session.id,
                    user_id = session.user_id.as_field(),
                    %series,
                );
                Refresh::Refreshed(Box::new(Login {
                    token,
                    session: *session,
                    refresh: Some(rotated),
                }))
            }
            RefreshOutcome::Invalid => {
                tracing::info!(target: AUDIT_TARGET, event = "refresh_rejected", %series);
                Refresh::Invalid
            }
            RefreshOutcome::Ended { user_id } => {
                self.with_cached(|cache| cache.invalidate_user(&user_id));
                tracing::info!(
                    target: AUDIT_TARGET,
                    event = "refresh_series_ended",
                    user_id = user_id.as_field(),
                    %series,
                );
                Refresh::Invalid
            }
            RefreshOutcome::ReuseDetected { user_id } => {
                self.with_cached(|cache| cache.invalidate_user(&user_id));
                tracing::warn!(
                    target: AUDIT_TARGET,
                    event = "refresh_reuse_detected",
                    user_id = user_id.as_field(),
                    %series,
                );
                Refresh::ReuseDetected
            }
        })
    }

    fn new_session(
        &self,
        user_id: UserId,
        client: ClientInfo,
        now: OffsetDateTime,
    ) -> (SessionToken, NewSession) {
        let config = &self.inner.config;
        let token = SessionToken::generate();
        let new = NewSession {
            id: SessionId::new(),
            token_hash: token.hash(),
            user_id,
            client,
            created_at: now,
            expires_at: config.idle_timeout.map(|ttl| now + span(ttl)),
            absolute_expires_at: config.absolute_lifetime.map(|life| now + span(life)),
            remember: None,
        };
        (token, new)
    }

    /// Validates a token: one store round trip that deletes an expired session, applies the
    /// debounced touch and sliding expiry, and returns the session with its user and, at
    /// [`Scope::Game`], its character. This is what the extractors use.
    ///
    /// With a validation cache (feature `cache`), the store is always asked at
    /// [`Scope::Game`], so that the cached view serves every extractor.
    pub async fn validate(
        &self,
        token: &SessionToken,
        scope: Scope,
    ) -> Result<Validation, StoreError> {
        self.validate_hash(&token.hash(), scope).await
    }

    /// [`validate`](Self::validate) by the token's hash.
    pub(crate) async fn validate_hash(
        &self,
        hash: &crate::store::TokenHash,
        scope: Scope,
    ) -> Result<Validation, StoreError> {
        let hash = *hash;
        let config = &self.inner.config;
        let now = self.now();
        let touch = Touch {
            due_before: now - span(config.touch_interval),
            slide_to: config
                .idle_timeout
                .filter(|_| config.sliding)
                .map(|ttl| now + span(ttl)),
        };
        #[cfg(feature = "cache")]
        if let Some(cache) = &self.inner.cache {
            use crate::cache::Cached;
            match cache.get(&hash, now, touch.due_before) {
                Some(Cached::Unknown) => return Ok(Validation::Unknown),
                Some(Cached::Live(view)) => return Ok(Validation::Valid(view)),
                None => {}
            }
            let generation = cache.generation();
            let store = &self.inner.store;
            let validation = store.validate(&hash, now, touch, Scope::Game).await?;
            cache.insert(
                hash,
                match &validation {
                    Validation::Valid(view) => Cached::Live(Arc::clone(view)),
                    Validation::Unknown | Validation::Expired => Cached::Unknown,
                },
                generation,
            );
            return Ok(self.audit_expiry(validation, &hash));
        }
        let validation = self.inner.store.validate(&hash, now, touch, scope).await?;
        Ok(self.audit_expiry(validation, &hash))
    }

    fn audit_expiry(&self, validation: Validation, hash: &crate::store::TokenHash) -> Validation {
        if validation == Validation::Expired {
            tracing::info!(
                target: AUDIT_TARGET,
                event = "session_expired",
                token_hash = %hash.prefix(),
            );
        }
        validation
    }

    /// Records a rejected token (malformed, or unknown to the store) from `ip`, and emits the
    /// audit event `token_rejected` with the running count for that address, so that an
    /// operator can alert on addresses that guess tokens. The layer calls this; so can custom
    /// middleware.
    ///
    /// IPv6 addresses are counted per /64 (one host usually holds a whole /64). The counter
    /// keeps at most 10 000 addresses: when it is full, the tenth with the smallest counts is
    /// dropped, so a flood of new addresses cannot push out the ones that guess most.
    pub fn record_rejected_token(&self, ip: Option<IpAddr>, reason: &'static str) {
        let ip = ip.map(counted_address);
        let count = ip.map(|ip| {
            let mut counts = self
                .inner
                .rejections
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if counts.len() >= MAX_TRACKED_IPS && !counts.contains_key(&ip) {
                evict_smallest(&mut counts, MAX_TRACKED_IPS / 10);
            }
            let count = counts.entry(ip).or_default();
            *count += 1;
            *count
        });
        tracing::warn!(
            target: AUDIT_TARGET,
            event = "token_rejected",
            reason,
            ip = ip.map(tracing::field::display),
            rejected_from_ip = count,
        );
    }

    /// Rejected-token counts per client address (IPv6: per /64, shown as the network
    /// address), highest first (see [`record_rejected_token`](Self::record_rejected_token)).
    /// At most 10 000 addresses are kept; the smallest counts make room for new ones.
    pub fn rejected_tokens_by_ip(&self) -> Vec<(IpAddr, u64)> {
        let counts = self
            .inner
            .rejections
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<(IpAddr, u64)> = counts.iter().map(|(ip, n)| (*ip, *n)).collect();
        list.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        list
    }

    /// Read-only lookup by token: no activity update, nothing deleted, `None` on any failure
    /// (unknown, expired, or a store error).
    pub async fn lookup(&self, token: &SessionToken) -> Option<SessionView> {
        match self.inner.store.lookup(&token.hash(), self.now()).await {
            Ok(view) => view,
            Err(error) => {
                tracing::warn!(%error, "session lookup failed");
                None
            }
        }
    }

    /// The username of a token's live session and user, or `None`.
    pub async fn username(&self, token: &SessionToken) -> Option<String> {
        self.lookup(token).await?.user.map(|user| user.username)
    }

    /// The username and role of a token's live session and user, or `None` (also when the
    /// user has no role).
    pub async fn username_and_role(&self, token: &SessionToken) -> Option<(String, String)> {
        let user = self.lookup(token).await?.user?;
        let role = user.role.filter(|role| !role.is_empty())?;
        Some((user.username, role))
    }

    /// Binds one of the user's characters to the session; the world comes from the character.
    pub async fn select_character(
        &self,
        session_id: SessionId,
        user_id: impl Into<UserId>,
        character_id: i64,
    ) -> Result<CharacterSelection, StoreError> {
        let user_id = user_id.into();
        let selection = self
            .inner
            .store
            .characters()
            .ok_or(StoreError::Unsupported("character binding"))?
            .select_character(session_id, &user_id, character_id)
            .await?;
        self.with_cached(|cache| cache.invalidate_session(session_id));
        Ok(selection)
    }

    /// Records that the user of a live session just proved their credentials again (the
    /// application checked the password): moves the session's `authenticated_at` to now, so
    /// that [`RecentAuth`](crate::RecentAuth) admits it for
    /// [`recent_auth_max_age`](SessionConfig::recent_auth_max_age). The session keeps its
    /// token, its remember-me series and its expiry. Returns whether the session is live.
    ///
    /// With a validation cache (feature `cache`), this instance drops the session's entry at
    /// once and the invalidation triggers tell the others.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_session_auth::store::StoreError> {
    /// use tower_session_auth::{LoginOptions, MemoryStore, SessionConfig, SessionManager};
    ///
    /// let store = MemoryStore::new();
    /// store.upsert_user(1, "alice", Some("player"), true);
    /// let manager = SessionManager::new(store, SessionConfig::default());
    /// let login = manager.login(1, LoginOptions::new()).await?;
    /// // ... the user typed their password again, and it matched ...
    /// assert!(manager.reauthenticate(login.session.id).await?);
    /// # Ok(()) }
    /// ```
    pub async fn reauthenticate(&self, session_id: SessionId) -> Result<bool, StoreError> {
        let live = self
            .inner
            .store
            .reauthenticate(session_id, self.now())
            .await?;
        self.with_cached(|cache| cache.invalidate_session(session_id));
        if live {
            tracing::info!(
                target: AUDIT_TARGET,
                event = "reauthenticate",
                session_id = %session_id,
            );
        }
        Ok(live)
    }

    /// Whether `session` counts as recently authenticated now, by the configured
    /// [`recent_auth_max_age`](SessionConfig::recent_auth_max_age)
    /// ([`SessionRecord::recently_authenticated`]). This is the check of
    /// [`RecentAuth`](crate::RecentAuth).
    pub fn is_recently_authenticated(&self, session: &SessionRecord) -> bool {
        session.recently_authenticated(self.now(), self.inner.config.recent_auth_max_age)
    }

    /// Removes a session by id (an administrator's kick), with its remember-me series and
    /// that series' other sessions. Returns whether it existed.
    pub async fn remove(&self, id: SessionId) -> Result<bool, StoreError> {
        let removed = self.inner.store.remove(id, None).await?;
        self.invalidate_removed(id, removed.as_ref());
        if removed.is_some() {
            tracing::info!(target: AUDIT_TARGET, event = "revoke", session_id = %id);
        }
        Ok(removed.is_some())
    }

    /// Removes a session by id only if it belongs to `user_id` (self-service revocation),
    /// with its remember-me series as [`remove`](Self::remove) does.
    pub async fn revoke(
        &self,
        user_id: impl Into<UserId>,
        id: SessionId,
    ) -> Result<bool, StoreError> {
        let user_id = user_id.into();
        let removed = self.inner.store.remove(id, Some(&user_id)).await?;
        self.invalidate_removed(id, removed.as_ref());
        if removed.is_some() {
            tracing::info!(
                target: AUDIT_TARGET,
                event = "revoke",
                session_id = %id,
                user_id = user_id.as_field(),
            );
        }
        Ok(removed.is_some())
    }

    /// Drops the cached entries of a removed session and, since its series' other sessions
    /// ended with it, of its user.
    fn invalidate_removed(&self, id: SessionId, user_id: Option<&UserId>) {
        self.with_cached(|cache| match user_id {
            Some(user_id) => cache.invalidate_user(user_id),
            None => cache.invalidate_session(id),
        });
    }

    /// Removes the session of a token (logout), with its remember-me series as
    /// [`remove`](Self::remove) does. Returns whether it existed.
    pub async fn remove_by_token(&self, token: &SessionToken) -> Result<bool, StoreError> {
        let hash = token.hash();
        let removed = self.inner.store.remove_by_token(&hash).await?;
        #[cfg(feature = "cache")]
        if let Some(cache) = &self.inner.cache {
            cache.invalidate_token(&hash);
        }
        if let Some(user_id) = &removed {
            self.with_cached(|cache| cache.invalidate_user(user_id));
            tracing::info!(
                target: AUDIT_TARGET,
                event = "logout",
                token_hash = %hash.prefix(),
            );
        }
        Ok(removed.is_some())
    }

    /// Ends the remember-me series of `presented` and its sessions, but only if the presented
    /// secret is one the series issued: the series id is public, so a forged secret ends
    /// nothing. A secret the series already rotated away still counts (the caller held it,
    /// and a logout racing a refresh must not leave the series alive). Returns whether a
    /// series ended. Logout calls this with the refresh cookie.
    pub async fn end_series(&self, presented: &RefreshToken) -> Result<bool, StoreError> {
        let series = presented.series();
        let Some(store) = self.inner.store.remember() else {
            return Ok(false); // no series to end
        };
        let ended = store.end_series(series, &presented.secret_hash()).await?;
        if let Some(user_id) = &ended {
            self.invalidate_user(user_id);
            let series = series.simple();
            tracing::info!(
                target: AUDIT_TARGET,
                event = "series_ended",
                %series,
                user_id = user_id.as_field(),
            );
        }
        Ok(ended.is_some())
    }

    /// Removes all of a user's sessions but `keep` ("sign out everywhere else"), and ends all
    /// the user's remember-me series but `keep`'s (whose other session, if a refresh inside
    /// the grace window left one, is kept too).
    pub async fn revoke_others(
        &self,
        user_id: impl Into<UserId>,
        keep: SessionId,
    ) -> Result<u64, StoreError> {
        let user_id = user_id.into();
        let count = self
            .inner
            .store
            .remove_for_user(&user_id, Some(keep))
            .await?;
        self.invalidate_user(&user_id);
        tracing::info!(
            target: AUDIT_TARGET,
            event = "revoke_others",
            user_id = user_id.as_field(),
            count,
        );
        Ok(count)
    }

    /// Removes all of a user's sessions and remember-me series (password change,
    /// deactivation, compromise).
    pub async fn revoke_all(&self, user_id: impl Into<UserId>) -> Result<u64, StoreError> {
        let user_id = user_id.into();
        let count = self.inner.store.remove_for_user(&user_id, None).await?;
        self.invalidate_user(&user_id);
        tracing::info!(
            target: AUDIT_TARGET,
            event = "revoke_all",
            user_id = user_id.as_field(),
            count,
        );
        Ok(count)
    }

    /// A user's live sessions, newest first, with IP, User-Agent and client type.
    pub async fn list_for_user(
        &self,
        user_id: impl Into<UserId>,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.inner
            .store
            .list_for_user(&user_id.into(), self.now())
            .await
    }

    /// Live sessions, counting only those active within `window` when one is given (a health page
    /// might count activity within the last 30 minutes).
    pub async fn count_active(&self, window: Option<Duration>) -> Result<u64, StoreError> {
        let now = self.now();
        // A window reaching before the calendar's start counts every live session.
        let since = window.and_then(|window| now.checked_sub(span(window)));
        self.admin()?.count_active(now, since).await
    }

    /// Deletes every session. Returns how many were removed.
    pub async fn clear_all(&self) -> Result<u64, StoreError> {
        let count = self.admin()?.clear_all().await?;
        self.with_cached(|cache| cache.invalidate_all());
        tracing::warn!(target: AUDIT_TARGET, event = "clear_all", count);
        Ok(count)
    }

    /// Deletes expired sessions and remember-me series, in batches of
    /// [`purge_batch_size`](crate::SessionConfig::purge_batch_size) rows, each batch a short
    /// statement of its own that starts where the one before stopped, with a
    /// [`purge_pause`](crate::SessionConfig::purge_pause) between two batches, until a batch
    /// comes back short. Returns how many sessions were removed. On an error the batches
    /// already done stay done.
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        let config = &self.inner.config;
        let limit = config.purge_batch_size.get();
        let now = self.now();
        let mut from = PurgePosition::START;
        let mut sessions = 0;
        loop {
            let batch = self.inner.store.purge_expired(now, limit, from).await?;
            sessions += batch.sessions;
            if !batch.was_full(limit) {
                return Ok(sessions);
            }
            from = batch.next;
            if !config.purge_pause.is_zero() {
                tokio::time::sleep(config.purge_pause).await;
            }
        }
    }

    /// Spawns a task that calls [`purge_expired`](Self::purge_expired) every `every`, starting
    /// now. A failure is logged and the task keeps going; abort the handle to stop it.
    ///
    /// A zero interval (which would sweep in a busy loop) is refused with a [`ConfigError`].
    pub fn spawn_sweeper(&self, every: Duration) -> Result<JoinHandle<()>, ConfigError> {
        if every.is_zero() {
            return Err(ConfigError {
                field: "spawn_sweeper(every)",
                problem: "the sweep interval must be longer than zero".to_owned(),
            });
        }
        let manager = self.clone();
        Ok(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match manager.purge_expired().await {
                    Ok(0) => {}
                    Ok(count) => {
                        tracing::info!(target: AUDIT_TARGET, event = "purge_expired", count)
                    }
                    Err(error) => tracing::error!(%error, "session sweeper failed; will retry"),
                }
            }
        }))
    }

    /// The `Set-Cookie` value that carries a new session's token.
    ///
    /// `HttpOnly`, `Secure` and `SameSite` as configured, `Path` as configured, no `Domain`.
    /// A persistent cookie's `Max-Age` never exceeds the session's remaining lifetime.
    pub fn session_cookie(&self, token: &SessionToken, session: &SessionRecord) -> HeaderValue {
        let cookie_config = &self.inner.config.cookie;
        let mut cookie = self.cookie_base(token.expose());
        if cookie_config.persistent {
            cookie.set_max_age(max_age(
                self.now(),
                [session.expires_at, session.absolute_expires_at],
            ));
        }
        cookie_header(&cookie)
    }

    /// The `Set-Cookie` value that removes the session cookie (`Max-Age=0`, same name, path).
    pub fn removal_cookie(&self) -> HeaderValue {
        let mut cookie = self.cookie_base("");
        cookie.set_max_age(time::Duration::ZERO);
        cookie_header(&cookie)
    }

    /// The `Set-Cookie` value of a refresh token: `HttpOnly`, `Secure` as the session cookie,
    /// `SameSite=Strict`, `Path` the refresh route, `Max-Age` the series' remaining lifetime
    /// (counted from `authenticated_at`, the series' start).
    pub fn refresh_cookie(
        &self,
        token: &RefreshToken,
        authenticated_at: OffsetDateTime,
    ) -> HeaderValue {
        let config = &self.inner.config.refresh;
        let now = self.now();
        let idle = config.idle_timeout.map(|ttl| now + span(ttl));
        let absolute = config
            .absolute_lifetime
            .map(|life| authenticated_at + span(life));
        let value = token.expose();
        let mut cookie = self.refresh_cookie_base(&value);
        cookie.set_max_age(max_age(now, [idle, absolute]));
        cookie_header(&cookie)
    }

    /// The `Set-Cookie` value that removes the refresh cookie.
    pub fn refresh_removal_cookie(&self) -> HeaderValue {
        let mut cookie = self.refresh_cookie_base("");
        cookie.set_max_age(time::Duration::ZERO);
        cookie_header(&cookie)
    }

    fn refresh_cookie_base<'c>(&'c self, value: &'c str) -> Cookie<'c> {
        let config = &self.inner.config;
        Cookie::build((config.refresh.cookie_name.as_str(), value))
            .http_only(true)
            .secure(config.cookie.secure)
            .same_site(cookie::SameSite::Strict)
            .path(config.refresh.cookie_path.as_str())
            .build()
    }

    fn cookie_base<'c>(&'c self, value: &'c str) -> Cookie<'c> {
        let config = &self.inner.config.cookie;
        Cookie::build((self.inner.cookie_name.as_str(), value))
            .http_only(true)
            .secure(config.secure)
            .same_site(config.same_site)
            .path(config.path.as_str())
            .build()
    }
}

/// A cookie's `Max-Age`: until the earliest of `ends` (never negative), or, when none is set,
/// the longest lifetime browsers honour (400 days).
fn max_age(now: OffsetDateTime, ends: [Option<OffsetDateTime>; 2]) -> time::Duration {
    let until = ends
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now + time::Duration::days(400));
    (until - now).max(time::Duration::ZERO)
}

/// A `Set-Cookie` value, marked sensitive so that HTTP/2 and HTTP/3 encoders never put it in
/// their compression tables.
fn cookie_header(cookie: &Cookie<'_>) -> HeaderValue {
    let mut value = HeaderValue::try_from(cookie.to_string())
        .expect("a base64url token with validated names and paths is a valid header");
    value.set_sensitive(true);
    value
}
