//! The registry of live session watches of one manager, and the parsed notifications of the
//! invalidation triggers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::token::SessionId;
use crate::user_id::UserId;

/// The registry of live watches of one manager: who to wake for which session and user.
///
/// One lock for all: it is taken when a watch starts or stops and when a session or user
/// event arrives, never while a connection is idle.
#[derive(Default)]
pub(crate) struct Watchers {
    registry: Mutex<Registry>,
    next_id: AtomicU64,
    /// Bumped by every event, so that a watch started from an earlier read knows whether
    /// it may have missed one.
    generation: AtomicU64,
    listening: AtomicBool,
}

#[derive(Default)]
struct Registry {
    watches: HashMap<u64, Arc<Notify>>,
    by_session: HashMap<SessionId, Vec<u64>>,
    by_user: HashMap<UserId, Vec<u64>>,
}

/// A parsed invalidation notification: `sessions:<uuid>,<uuid>,…`, `user:<id>`, or anything
/// else (a session id that does not parse included), which means everything.
pub(crate) enum Notice {
    Sessions(Vec<SessionId>),
    /// The ids the user's id as text may be (the notice does not say its type).
    User(Vec<UserId>),
    All,
}

impl Notice {
    pub(crate) fn parse(payload: &str) -> Self {
        if let Some(list) = payload.strip_prefix("sessions:") {
            match list.split(',').map(str::parse).collect() {
                Ok(ids) => Self::Sessions(ids),
                Err(_) => Self::All,
            }
        } else if let Some(user) = payload.strip_prefix("user:") {
            Self::User(UserId::candidates(user))
        } else {
            Self::All
        }
    }
}

impl Watchers {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Each change is a few map operations that cannot be left half done by a panic.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn register(&self, session_id: SessionId, user_id: UserId) -> (u64, Arc<Notify>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let notify = Arc::new(Notify::new());
        let mut registry = self.lock();
        registry.watches.insert(id, Arc::clone(&notify));
        registry.by_session.entry(session_id).or_default().push(id);
        registry.by_user.entry(user_id).or_default().push(id);
        (id, notify)
    }

    pub(crate) fn unregister(&self, id: u64, session_id: SessionId, user_id: &UserId) {
        let mut registry = self.lock();
        registry.watches.remove(&id);
        forget(&mut registry.by_session, &session_id, id);
        forget(&mut registry.by_user, user_id, id);
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::Release);
    }

    pub(crate) fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// How many watches are live.
    pub(crate) fn count(&self) -> usize {
        self.lock().watches.len()
    }

    /// Whether a session has a live watch.
    pub(crate) fn watches_session(&self, session_id: SessionId) -> bool {
        self.lock().by_session.contains_key(&session_id)
    }

    pub(crate) fn invalidate_sessions(&self, ids: &[SessionId]) {
        self.bump();
        let registry = self.lock();
        for id in ids {
            wake(&registry, registry.by_session.get(id));
        }
    }

    pub(crate) fn invalidate_session(&self, id: SessionId) {
        self.invalidate_sessions(&[id]);
    }

    pub(crate) fn invalidate_user(&self, user_id: &UserId) {
        self.invalidate_users(std::slice::from_ref(user_id));
    }

    fn invalidate_users(&self, user_ids: &[UserId]) {
        self.bump();
        let registry = self.lock();
        for user_id in user_ids {
            wake(&registry, registry.by_user.get(user_id));
        }
    }

    pub(crate) fn invalidate_all(&self) {
        self.bump();
        for notify in self.lock().watches.values() {
            notify.notify_one();
        }
    }

    pub(crate) fn apply(&self, notice: &Notice) {
        match notice {
            Notice::Sessions(ids) => self.invalidate_sessions(ids),
            Notice::User(user_ids) => self.invalidate_users(user_ids),
            Notice::All => self.invalidate_all(),
        }
    }
}

fn wake(registry: &Registry, ids: Option<&Vec<u64>>) {
    for id in ids.into_iter().flatten() {
        if let Some(notify) = registry.watches.get(id) {
            // Stores a permit when the watch is not waiting: events coalesce into one check.
            notify.notify_one();
        }
    }
}

fn forget<K: std::hash::Hash + Eq>(index: &mut HashMap<K, Vec<u64>>, key: &K, id: u64) {
    if let Some(ids) = index.get_mut(key) {
        ids.retain(|other| *other != id);
        if ids.is_empty() {
            index.remove(key);
        }
    }
}
