//! Live connections: a signal that fires when a session ends.
//!
//! A WebSocket (or any long-lived connection) is authenticated once, at its upgrade. A
//! [`SessionWatch`], taken from the request's [`Session`](crate::Session) with
//! [`Session::watch`](crate::Session::watch) (or from the manager with
//! [`SessionManager::watch`](crate::SessionManager::watch)), ties the connection to its session
//! afterwards: [`SessionWatch::next`] returns when the session ends ([`SessionEnd`]) or the
//! user's role changes ([`WatchEvent::RoleChanged`], so the handler can check its permission
//! again).
//!
//! **What it hears.** On the same instance, at once: every path of the
//! [`SessionManager`] that ends or changes sessions (logout, revoke one,
//! others or all, a kick, pruning at login, a refresh ending the series' earlier session,
//! series reuse, a series ended at logout, [`SessionManager::invalidate_user`] after a role
//! change or a deactivation). From other instances on PostgreSQL: the notifications of
//! [`PgStore::install_invalidation_triggers`](crate::PgStore::install_invalidation_triggers),
//! received by the one listener connection of
//! [`PgStore::spawn_session_listener`](crate::PgStore::spawn_session_listener), shared by
//! every watch (and the cache, when there is one). On the [`MemoryStore`](crate::MemoryStore)
//! there is only one instance, so the first kind is all there is. Idle and absolute expiry
//! fire from a timer set to the session's expiry, re-armed when it moves.
//!
//! **How.** An event marks the watches of the sessions or users it names; each marked watch
//! then reads its session once ([`SessionStore::lookup`](crate::store::SessionStore::lookup), read
//! only) to learn whether it still lives, whether its user is still active, and its role. So a
//! role change costs one query per watch of that user, a revocation one per watch of the
//! sessions named, and a listener reconnection (notifications may have been missed) one per
//! watch. An idle watch costs no query and no task: a registry entry, and the state inside
//! the [`SessionWatch`] that the connection's task polls.
//!
//! **Bound.** On another instance, the end is seen once the notification arrives (milliseconds
//! on a healthy link) plus one lookup. While the listener is disconnected nothing arrives; it
//! reconnects every second and then every watch checks once. A link that drops packets
//! without closing is noticed by TCP keepalive, which the listener's
//! `tokio_postgres::Config` sets (`keepalives_idle`). A store failure during a check ends the
//! watch with [`SessionEnd::StoreUnavailable`]: fail closed.
//!
//! **Idle expiry while connected.** A connection is activity: call [`SessionWatch::touch`] on
//! each message the client sends. It asks the store at most once per
//! [`touch_interval`](crate::SessionConfig::touch_interval), like requests do (the same
//! debounced touch slides the idle expiry), and costs nothing in between.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_session_auth::store::StoreError> {
//! use tower_session_auth::{LoginOptions, MemoryStore, SessionConfig, watch::SessionEnd, SessionManager, watch::WatchEvent};
//!
//! let store = MemoryStore::new();
//! store.upsert_user(1, "alice", Some("player"), true);
//! let manager = SessionManager::new(store, SessionConfig::default());
//! let login = manager.login(1, LoginOptions::new()).await?;
//! let mut watch = manager.watch(&login.token).await?.expect("a live session");
//! manager.revoke_all(1).await?;
//! assert_eq!(watch.next().await, WatchEvent::Ended(SessionEnd::Revoked));
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::manager::SessionManager;
use crate::store::{SessionView, StoreError, Validation};
use crate::token::{SessionId, SessionToken, TokenHash};
use crate::user_id::UserId;

/// Why a watched session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEnd {
    /// The session is gone: logout, a revocation, a kick, pruning, the end of its remember-me
    /// series.
    Revoked,
    /// The user was deactivated or deleted, or lost their role.
    UserInvalid,
    /// The idle or absolute expiry passed.
    Expired,
    /// The store failed while the session was checked: fail closed.
    StoreUnavailable,
}

impl SessionEnd {
    /// A WebSocket close code for it, in the private range: 4001 revoked, 4002 expired,
    /// 4003 user invalid, 1011 (internal error) for a store failure.
    pub fn close_code(self) -> u16 {
        match self {
            Self::Revoked => 4001,
            Self::Expired => 4002,
            Self::UserInvalid => 4003,
            Self::StoreUnavailable => 1011,
        }
    }

    /// A short reason for the close frame and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Revoked => "session revoked",
            Self::Expired => "session expired",
            Self::UserInvalid => "user inactive",
            Self::StoreUnavailable => "session store unavailable",
        }
    }
}

/// What [`SessionWatch::next`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchEvent {
    /// The user's role changed; the session lives on. Check the permission the connection
    /// needs against the new role.
    RoleChanged(String),
    /// The session ended. Every later call returns this again.
    Ended(SessionEnd),
}

/// A live session's end signal; see the [module docs](crate::watch) for what it hears, the
/// cross-instance bound and the cost.
///
/// Poll [`next`](Self::next) beside the connection's reads (it is cancel safe, so
/// `tokio::select!` may drop it), and call [`touch`](Self::touch) when the client shows
/// activity. Dropping the watch unregisters it.
pub struct SessionWatch {
    manager: SessionManager,
    id: u64,
    notify: Arc<Notify>,
    token_hash: TokenHash,
    session_id: SessionId,
    user_id: UserId,
    role: String,
    last_activity: OffsetDateTime,
    expires_at: Option<OffsetDateTime>,
    absolute_expires_at: Option<OffsetDateTime>,
    /// A check is owed: set when woken and cleared when the lookup has answered, so that a
    /// `next` cancelled mid-lookup checks again.
    check_due: bool,
    ended: Option<SessionEnd>,
}

impl std::fmt::Debug for SessionWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionWatch")
            .field("session_id", &self.session_id)
            .field("user_id", &self.user_id)
            .field("role", &self.role)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Drop for SessionWatch {
    fn drop(&mut self) {
        self.manager
            .watchers()
            .unregister(self.id, self.session_id, &self.user_id);
    }
}

impl SessionWatch {
    /// Starts watching the session of `view`, whose token hashes to `token_hash`.
    /// `read_at` is the registry's [`generation`](Watchers::generation) read before `view`
    /// was: if an event came since (or it is unknown), the first [`next`](Self::next) reads
    /// the session once, so that a change committed between that read and this registration
    /// is not missed.
    pub(crate) fn new(
        manager: &SessionManager,
        token_hash: TokenHash,
        view: &SessionView,
        read_at: Option<u64>,
    ) -> Self {
        let session = &view.session;
        let (id, notify) = manager
            .watchers()
            .register(session.id, session.user_id.clone());
        Self {
            manager: manager.clone(),
            id,
            notify,
            token_hash,
            session_id: session.id,
            user_id: session.user_id.clone(),
            role: view
                .user
                .as_ref()
                .and_then(|user| user.role.clone())
                .unwrap_or_default(),
            last_activity: session.last_activity,
            expires_at: session.expires_at,
            absolute_expires_at: session.absolute_expires_at,
            check_due: read_at != Some(manager.watchers().generation()),
            ended: None,
        }
    }

    /// The watched session's id.
    pub fn session_id(&self) -> SessionId {
        self.session_id
    }

    /// The user's role as last read.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// Why the session ended, once [`next`](Self::next) has reported it.
    pub fn ended(&self) -> Option<SessionEnd> {
        self.ended
    }

    /// Waits until the session ends or the user's role changes. Cancel safe.
    pub async fn next(&mut self) -> WatchEvent {
        loop {
            if let Some(end) = self.ended {
                return WatchEvent::Ended(end);
            }
            if !self.check_due {
                let wait = self.until_expiry();
                tokio::select! {
                    () = self.notify.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                }
                self.check_due = true;
            }
            let event = self.check().await;
            self.check_due = false;
            if let Some(event) = event {
                return event;
            }
        }
    }

    /// Records activity on the connection: when the debounced touch is due (the last recorded
    /// activity is [`touch_interval`](crate::SessionConfig::touch_interval) old), validates
    /// the session through the manager, which writes the touch and slides the idle expiry;
    /// otherwise does nothing. What the validation learns (the session gone, a new role) is
    /// reported by the next [`next`](Self::next).
    pub async fn touch(&mut self) {
        let manager = self.manager.clone();
        let now = manager.now();
        let interval = crate::store::family::span(manager.config().touch_interval);
        if self.ended.is_some() || self.last_activity > now - interval {
            return;
        }
        match manager
            .validate_hash(&self.token_hash, crate::store::Scope::User)
            .await
        {
            Ok(Validation::Valid(view)) => {
                self.absorb_expiry(&view);
                if user_role(&view).as_deref() != Some(self.role.as_str()) {
                    self.check_due = true;
                    self.notify.notify_one();
                }
            }
            // Gone, expired, another role or a store failure: `next` finds out which.
            _ => {
                self.check_due = true;
                self.notify.notify_one();
            }
        }
    }

    /// Time until the earlier expiry (none: a long sleep that an event cuts short).
    fn until_expiry(&self) -> Duration {
        let deadline = [self.expires_at, self.absolute_expires_at]
            .into_iter()
            .flatten()
            .min();
        match deadline {
            // At least a millisecond, so that a clock that disagrees cannot spin the loop.
            Some(deadline) => Duration::try_from(deadline - self.manager.now())
                .unwrap_or_default()
                .max(Duration::from_millis(1)),
            None => Duration::from_secs(86_400 * 365),
        }
    }

    /// Reads the session once and reports what changed.
    async fn check(&mut self) -> Option<WatchEvent> {
        let now = self.manager.now();
        let end = match self.manager.store().lookup(&self.token_hash, now).await {
            Ok(Some(view)) => return self.absorb(&view),
            Ok(None) => {
                let expired = [self.expires_at, self.absolute_expires_at]
                    .into_iter()
                    .flatten()
                    .any(|at| at <= now);
                if expired {
                    SessionEnd::Expired
                } else {
                    SessionEnd::Revoked
                }
            }
            Err(error) => {
                tracing::error!(%error, session_id = %self.session_id, "session watch check failed");
                SessionEnd::StoreUnavailable
            }
        };
        Some(self.end(end))
    }

    fn absorb_expiry(&mut self, view: &SessionView) {
        let session = &view.session;
        self.last_activity = session.last_activity;
        self.expires_at = session.expires_at;
        self.absolute_expires_at = session.absolute_expires_at;
    }

    /// Takes in a fresh view of the session: its expiry, and its user's state.
    fn absorb(&mut self, view: &SessionView) -> Option<WatchEvent> {
        self.absorb_expiry(view);
        match user_role(view) {
            None => Some(self.end(SessionEnd::UserInvalid)),
            Some(role) if role != self.role => {
                self.role.clone_from(&role);
                Some(WatchEvent::RoleChanged(role))
            }
            Some(_) => None,
        }
    }

    fn end(&mut self, end: SessionEnd) -> WatchEvent {
        self.ended = Some(end);
        WatchEvent::Ended(end)
    }
}

/// The role of an active user, as [`AuthUser`](crate::AuthUser) requires it; `None` for an
/// inactive or deleted user or one without a role.
pub(crate) fn user_role(view: &SessionView) -> Option<String> {
    match &view.user {
        Some(user) if user.is_active => user.role.clone().filter(|role| !role.is_empty()),
        _ => None,
    }
}

impl SessionManager {
    /// Watches the session of `token` until it ends ([`SessionWatch`]): `None` when there is no
    /// live session with an active user for it. Inside a request,
    /// [`Session::watch`](crate::Session::watch) reuses the request's validation instead.
    pub async fn watch(&self, token: &SessionToken) -> Result<Option<SessionWatch>, StoreError> {
        let hash = token.hash();
        let read_at = self.watchers().generation();
        let view = self.store().lookup(&hash, self.now()).await?;
        Ok(view
            .filter(|view| user_role(view).is_some())
            .map(|view| SessionWatch::new(self, hash, &view, Some(read_at))))
    }

    /// How many [`SessionWatch`]es of this manager are live.
    pub fn watch_count(&self) -> usize {
        self.watchers().count()
    }

    /// Whether a session has a live [`SessionWatch`] on this instance (a session page can show
    /// which sessions hold a live connection).
    pub fn is_watched(&self, id: SessionId) -> bool {
        self.watchers().watches_session(id)
    }
}
