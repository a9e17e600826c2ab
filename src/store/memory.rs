//! [`MemoryStore`]: the same semantics as [`PgStore`](super::PgStore), in process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use time::OffsetDateTime;

use uuid::Uuid;

use super::family::{
    MAX_SECRETS_PER_SERIES, SecretMatch, SecretState, earliest, expired, match_secret,
};
use super::{
    AdminStore, CharacterRecord, CharacterSelection, CharacterStore, NewSession, PurgePosition,
    Purged, RefreshOutcome, RefreshRequest, RememberStore, Scope, SessionRecord, SessionStore,
    SessionView, StoreError, Touch, UserRecord, Validation,
};
use crate::token::{SessionId, TokenHash};
use crate::user_id::UserId;

/// Sessions, users and characters in process memory, behind one mutex.
///
/// For the example server's no-database default, single-process tools, and fast tests. It
/// keeps its own user and character directory (filled with [`MemoryStore::upsert_user`] and
/// [`MemoryStore::upsert_character`]) so that validation resolves usernames, roles and
/// characters exactly as [`PgStore`](super::PgStore) does. Sessions are lost on restart.
///
/// ```
/// use tower_session_auth::MemoryStore;
///
/// let store = MemoryStore::new();
/// store.upsert_user(1, "alice", Some("admin"), true);
/// store.upsert_character(10, 1, "alice_char", Some("pipeworks_web"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    sessions: HashMap<SessionId, Entry>,
    by_token: HashMap<TokenHash, SessionId>,
    series: HashMap<Uuid, Series>,
    users: HashMap<UserId, UserRecord>,
    characters: HashMap<i64, (UserId, CharacterRecord)>,
}

#[derive(Debug)]
struct Entry {
    token_hash: TokenHash,
    series_id: Option<Uuid>,
    record: SessionRecord,
}

#[derive(Debug)]
struct Series {
    user_id: UserId,
    /// The secrets the series remembers, oldest issued first.
    secrets: Vec<(TokenHash, SecretState)>,
    created_at: OffsetDateTime,
    expires_at: Option<OffsetDateTime>,
    absolute_expires_at: Option<OffsetDateTime>,
}

impl Series {
    fn is_expired(&self, now: OffsetDateTime) -> bool {
        expired(now, self.expires_at, self.absolute_expires_at)
    }
}

impl State {
    /// Deletes one session, leaving its series alone.
    fn delete(&mut self, id: SessionId) -> Option<Entry> {
        let entry = self.sessions.remove(&id)?;
        self.by_token.remove(&entry.token_hash);
        Some(entry)
    }

    /// Deletes one session and, if it belongs to a series, the series and its sessions.
    /// Returns the session's user if it existed.
    fn revoke(&mut self, id: SessionId) -> Option<UserId> {
        let entry = self.delete(id)?;
        if let Some(series) = entry.series_id {
            self.end_series(series);
        }
        Some(entry.record.user_id)
    }

    fn end_series(&mut self, series: Uuid) {
        self.series.remove(&series);
        self.delete_where(|entry| entry.series_id == Some(series));
    }

    fn delete_where(&mut self, mut doomed: impl FnMut(&Entry) -> bool) -> u64 {
        let ids: Vec<SessionId> = self
            .sessions
            .values()
            .filter(|entry| doomed(entry))
            .map(|entry| entry.record.id)
            .collect();
        ids.iter().filter(|id| self.delete(**id).is_some()).count() as u64
    }

    /// Inserts a session; with `max_per_user` removes the user's oldest beyond the limit and
    /// ends their series (except `series_id`, the new session's own).
    fn insert(
        &mut self,
        new: NewSession,
        authenticated_at: OffsetDateTime,
        refreshed: bool,
        series_id: Option<Uuid>,
        max_per_user: Option<u32>,
    ) -> Result<SessionRecord, StoreError> {
        if self.by_token.contains_key(&new.token_hash) {
            return Err(StoreError::backend("duplicate token hash"));
        }
        if let Some(max) = max_per_user {
            let mut older: Vec<(OffsetDateTime, SessionId)> = self
                .sessions
                .values()
                .filter(|entry| entry.record.user_id == new.user_id)
                .map(|entry| (entry.record.created_at, entry.record.id))
                .collect();
            older.sort_by(|a, b| b.cmp(a));
            let keep_older = max.max(1) as usize - 1;
            for (_, id) in older.into_iter().skip(keep_older) {
                match self.delete(id).and_then(|entry| entry.series_id) {
                    Some(series) if Some(series) != series_id => self.end_series(series),
                    _ => {}
                }
            }
        }
        let record = SessionRecord {
            authenticated_at,
            refreshed,
            remembered: series_id.is_some(),
            ..SessionRecord::new(&new)
        };
        self.by_token.insert(new.token_hash, new.id);
        self.sessions.insert(
            new.id,
            Entry {
                token_hash: new.token_hash,
                series_id,
                record: record.clone(),
            },
        );
        Ok(record)
    }

    /// The selected character, if it exists and belongs to the session's user.
    fn character_of(&self, record: &SessionRecord) -> Option<&CharacterRecord> {
        let (owner, character) = self.characters.get(&record.character_id?)?;
        (*owner == record.user_id).then_some(character)
    }

    /// The session with its user and, at [`Scope::Game`], its character.
    fn view(&self, record: &SessionRecord, scope: Scope) -> SessionView {
        SessionView {
            session: record.clone(),
            user: self.users.get(&record.user_id).cloned(),
            character: match scope {
                Scope::User => None,
                Scope::Game => self.character_of(record).cloned(),
            },
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters (each operation is a few inserts/removes), so keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many sessions are stored, including expired ones not yet purged.
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Whether no session is stored.
    pub fn is_empty(&self) -> bool {
        self.lock().sessions.is_empty()
    }

    /// Adds or replaces a user.
    pub fn upsert_user(
        &self,
        user_id: impl Into<UserId>,
        username: &str,
        role: Option<&str>,
        is_active: bool,
    ) {
        self.lock().users.insert(
            user_id.into(),
            UserRecord {
                username: username.to_owned(),
                role: role.map(str::to_owned),
                is_active,
            },
        );
    }

    /// Removes a user (their sessions stay, and fail validation with "Invalid session user").
    pub fn remove_user(&self, user_id: impl Into<UserId>) -> bool {
        self.lock().users.remove(&user_id.into()).is_some()
    }

    /// Changes a user's role; effective on the user's next request. Returns false if unknown.
    pub fn set_role(&self, user_id: impl Into<UserId>, role: Option<&str>) -> bool {
        match self.lock().users.get_mut(&user_id.into()) {
            Some(user) => {
                user.role = role.map(str::to_owned);
                true
            }
            None => false,
        }
    }

    /// Activates or deactivates a user. Returns false if unknown.
    pub fn set_active(&self, user_id: impl Into<UserId>, is_active: bool) -> bool {
        match self.lock().users.get_mut(&user_id.into()) {
            Some(user) => {
                user.is_active = is_active;
                true
            }
            None => false,
        }
    }

    /// A user by id.
    pub fn user(&self, user_id: impl Into<UserId>) -> Option<UserRecord> {
        self.lock().users.get(&user_id.into()).cloned()
    }

    /// A user's id by username.
    pub fn user_id_by_name(&self, username: &str) -> Option<UserId> {
        self.lock()
            .users
            .iter()
            .find(|(_, user)| user.username == username)
            .map(|(id, _)| id.clone())
    }

    /// Adds or replaces a character owned by `user_id`.
    pub fn upsert_character(
        &self,
        character_id: i64,
        user_id: impl Into<UserId>,
        name: &str,
        world_id: Option<&str>,
    ) {
        self.lock().characters.insert(
            character_id,
            (
                user_id.into(),
                CharacterRecord {
                    name: name.to_owned(),
                    world_id: world_id.map(str::to_owned),
                },
            ),
        );
    }

    /// Removes a character.
    pub fn remove_character(&self, character_id: i64) -> bool {
        self.lock().characters.remove(&character_id).is_some()
    }

    /// The characters of a user, as `(id, record)` sorted by id.
    pub fn characters_of(&self, user_id: impl Into<UserId>) -> Vec<(i64, CharacterRecord)> {
        let user_id = user_id.into();
        let state = self.lock();
        let mut list: Vec<_> = state
            .characters
            .iter()
            .filter(|(_, (owner, _))| *owner == user_id)
            .map(|(id, (_, character))| (*id, character.clone()))
            .collect();
        list.sort_by_key(|(id, _)| *id);
        list
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create(
        &self,
        mut new: NewSession,
        max_per_user: Option<u32>,
    ) -> Result<SessionRecord, StoreError> {
        let mut state = self.lock();
        let remember = new.remember.take();
        let series_id = remember.as_ref().map(|series| series.id);
        let (user_id, created_at) = (new.user_id.clone(), new.created_at);
        let record = state.insert(new, created_at, false, series_id, max_per_user)?;
        if let Some(series) = remember {
            state.series.insert(
                series.id,
                Series {
                    user_id,
                    secrets: vec![(series.secret_hash, SecretState::UNUSED)],
                    created_at,
                    expires_at: series.expires_at,
                    absolute_expires_at: series.absolute_expires_at,
                },
            );
        }
        Ok(record)
    }

    async fn validate(
        &self,
        token_hash: &TokenHash,
        now: OffsetDateTime,
        touch: Touch,
        scope: Scope,
    ) -> Result<Validation, StoreError> {
        let mut state = self.lock();
        let Some(&id) = state.by_token.get(token_hash) else {
            return Ok(Validation::Unknown);
        };
        if state.sessions[&id].record.is_expired(now) {
            state.delete(id);
            return Ok(Validation::Expired);
        }
        let world = match scope {
            Scope::User => None,
            Scope::Game => state
                .character_of(&state.sessions[&id].record)
                .and_then(|character| character.world_id.clone()),
        };
        let entry = state.sessions.get_mut(&id).expect("looked up above");
        let record = &mut entry.record;
        if record.last_activity <= touch.due_before {
            record.last_activity = now;
            if let Some(slide_to) = touch.slide_to {
                record.expires_at = Some(slide_to);
            }
        }
        if world.is_some() {
            record.world_id = world;
        }
        let view = state.view(&state.sessions[&id].record, scope);
        Ok(Validation::Valid(Arc::new(view)))
    }

    async fn lookup(
        &self,
        token_hash: &TokenHash,
        now: OffsetDateTime,
    ) -> Result<Option<SessionView>, StoreError> {
        let state = self.lock();
        let Some(entry) = state.by_token.get(token_hash).map(|id| &state.sessions[id]) else {
            return Ok(None);
        };
        if entry.record.is_expired(now) {
            return Ok(None);
        }
        Ok(Some(state.view(&entry.record, Scope::Game)))
    }

    async fn remove(
        &self,
        id: SessionId,
        owner: Option<&UserId>,
    ) -> Result<Option<UserId>, StoreError> {
        let mut state = self.lock();
        let owned = state
            .sessions
            .get(&id)
            .is_some_and(|entry| owner.is_none_or(|user| entry.record.user_id == *user));
        Ok(if owned { state.revoke(id) } else { None })
    }

    async fn remove_by_token(&self, token_hash: &TokenHash) -> Result<Option<UserId>, StoreError> {
        let mut state = self.lock();
        match state.by_token.get(token_hash).copied() {
            Some(id) => Ok(state.revoke(id)),
            None => Ok(None),
        }
    }

    async fn remove_for_user(
        &self,
        user_id: &UserId,
        keep: Option<SessionId>,
    ) -> Result<u64, StoreError> {
        let mut state = self.lock();
        let kept_series = keep
            .and_then(|id| state.sessions.get(&id))
            .and_then(|entry| entry.series_id);
        state
            .series
            .retain(|id, series| series.user_id != *user_id || Some(*id) == kept_series);
        Ok(state.delete_where(|entry| {
            entry.record.user_id == *user_id
                && keep.is_none_or(|keep| {
                    entry.record.id != keep
                        && (kept_series.is_none() || entry.series_id != kept_series)
                })
        }))
    }

    async fn list_for_user(
        &self,
        user_id: &UserId,
        now: OffsetDateTime,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let state = self.lock();
        let mut list: Vec<SessionRecord> = state
            .sessions
            .values()
            .map(|entry| &entry.record)
            .filter(|record| record.user_id == *user_id && !record.is_expired(now))
            .cloned()
            .collect();
        list.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        Ok(list)
    }

    /// Reads the whole map on each batch: the position is not used.
    async fn purge_expired(
        &self,
        now: OffsetDateTime,
        limit: u32,
        _from: PurgePosition,
    ) -> Result<Purged, StoreError> {
        let limit = limit as usize;
        let mut state = self.lock();
        let series: Vec<Uuid> = state
            .series
            .iter()
            .filter(|(_, series)| series.is_expired(now))
            .map(|(id, _)| *id)
            .take(limit)
            .collect();
        for id in &series {
            state.series.remove(id);
        }
        let sessions: Vec<SessionId> = state
            .sessions
            .values()
            .filter(|entry| entry.record.is_expired(now))
            .map(|entry| entry.record.id)
            .take(limit)
            .collect();
        let sessions = sessions
            .iter()
            .filter(|id| state.delete(**id).is_some())
            .count();
        Ok(Purged::new(sessions as u64, series.len() as u64))
    }

    async fn reauthenticate(&self, id: SessionId, now: OffsetDateTime) -> Result<bool, StoreError> {
        let mut state = self.lock();
        match state.sessions.get_mut(&id) {
            Some(entry) if !entry.record.is_expired(now) => {
                let record = &mut entry.record;
                record.authenticated_at = record.authenticated_at.max(now);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn remember(&self) -> Option<&dyn RememberStore> {
        Some(self)
    }

    fn characters(&self) -> Option<&dyn CharacterStore> {
        Some(self)
    }

    fn admin(&self) -> Option<&dyn AdminStore> {
        Some(self)
    }
}

#[async_trait]
impl RememberStore for MemoryStore {
    async fn end_series(
        &self,
        series: Uuid,
        secret_hash: &TokenHash,
    ) -> Result<Option<UserId>, StoreError> {
        let mut state = self.lock();
        let holder = state
            .series
            .get(&series)
            .filter(|stored| stored.secrets.iter().any(|(hash, _)| hash == secret_hash))
            .map(|stored| stored.user_id.clone());
        if holder.is_some() {
            state.end_series(series);
        }
        Ok(holder)
    }

    async fn refresh(&self, request: RefreshRequest) -> Result<RefreshOutcome, StoreError> {
        let mut state = self.lock();
        let Some(series) = state.series.get(&request.series) else {
            return Ok(RefreshOutcome::Invalid);
        };
        let presented = series
            .secrets
            .iter()
            .position(|(hash, _)| *hash == request.secret_hash);
        let decision = match_secret(
            presented.map(|at| series.secrets[at].1),
            request.grace_since,
        );
        let user_id = series.user_id.clone();
        let presented = match (&decision, presented) {
            (SecretMatch::Unknown | SecretMatch::Refused, _) | (_, None) => {
                return Ok(RefreshOutcome::Invalid);
            }
            (_, Some(at)) => at,
        };
        let user_ok = state.users.get(&user_id).is_some_and(|user| user.is_active);
        if series.is_expired(request.now) || !user_ok {
            state.end_series(request.series);
            return Ok(RefreshOutcome::Ended { user_id });
        }
        let keep_since = match decision {
            SecretMatch::Reuse => {
                state.end_series(request.series);
                return Ok(RefreshOutcome::ReuseDetected { user_id });
            }
            SecretMatch::Grace { used_at } => Some(used_at),
            _ => None,
        };
        let series = state
            .series
            .get_mut(&request.series)
            .expect("looked up above");
        let secret = &mut series.secrets[presented].1;
        match keep_since {
            None => secret.used_at = Some(request.now),
            Some(_) => secret.spent = true,
        }
        // Forget the oldest beyond the bound (never the secret just presented), then issue.
        let keep_from = series
            .secrets
            .len()
            .saturating_sub(MAX_SECRETS_PER_SERIES as usize - 1);
        let mut index = 0;
        series.secrets.retain(|_| {
            let keep = index >= keep_from || index == presented;
            index += 1;
            keep
        });
        series
            .secrets
            .push((request.new_secret_hash, SecretState::UNUSED));
        series.expires_at = request.series_expires_at;
        let (authenticated_at, series_absolute) = (series.created_at, series.absolute_expires_at);
        // One device, one session: the series' earlier sessions end, but for those that the
        // first use of a secret exchanged again inside the grace window created.
        state.delete_where(|entry| {
            entry.series_id == Some(request.series)
                && keep_since.is_none_or(|since| entry.record.created_at < since)
        });
        let session = NewSession {
            user_id,
            absolute_expires_at: earliest(request.session.absolute_expires_at, series_absolute),
            ..request.session
        };
        let record = state.insert(
            session,
            authenticated_at,
            true,
            Some(request.series),
            request.max_per_user,
        )?;
        Ok(RefreshOutcome::Refreshed(Box::new(record)))
    }
}

#[async_trait]
impl CharacterStore for MemoryStore {
    async fn select_character(
        &self,
        session_id: SessionId,
        user_id: &UserId,
        character_id: i64,
    ) -> Result<CharacterSelection, StoreError> {
        let mut state = self.lock();
        let character = match state.characters.get(&character_id) {
            Some((owner, character)) if owner == user_id => character.clone(),
            _ => return Ok(CharacterSelection::CharacterNotFound),
        };
        match state.sessions.get_mut(&session_id) {
            Some(entry) if entry.record.user_id == *user_id => {
                entry.record.character_id = Some(character_id);
                entry.record.world_id = character.world_id.clone();
                Ok(CharacterSelection::Selected(character))
            }
            _ => Ok(CharacterSelection::SessionNotFound),
        }
    }
}

#[async_trait]
impl AdminStore for MemoryStore {
    async fn count_active(
        &self,
        now: OffsetDateTime,
        active_since: Option<OffsetDateTime>,
    ) -> Result<u64, StoreError> {
        let state = self.lock();
        Ok(state
            .sessions
            .values()
            .map(|entry| &entry.record)
            .filter(|record| {
                !record.is_expired(now) && active_since.is_none_or(|t| record.last_activity >= t)
            })
            .count() as u64)
    }

    async fn clear_all(&self) -> Result<u64, StoreError> {
        let mut state = self.lock();
        let count = state.sessions.len() as u64;
        state.sessions.clear();
        state.by_token.clear();
        state.series.clear();
        Ok(count)
    }
}
