//! A real store, instrumented: [`InstrumentedStore`] delegates every [`SessionStore`] method to
//! a [`PgStore`], records the call's name, and can hold one validation after its statement ran,
//! so that a race is interleaved deterministically (the database does the real work).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tower_session_auth::{
    PgStore, SessionId, UserId, store::AdminStore, store::CharacterSelection,
    store::CharacterStore, store::NewSession, store::PurgePosition, store::Purged,
    store::RefreshOutcome, store::RefreshRequest, store::RememberStore, store::Scope,
    store::SessionRecord, store::SessionStore, store::SessionView, store::StoreError,
    store::TokenHash, store::Touch, store::Validation,
};

#[derive(Clone)]
pub struct InstrumentedStore {
    inner: PgStore,
    calls: Arc<Mutex<Vec<&'static str>>>,
    gate: Arc<Gate>,
}

#[derive(Default)]
struct Gate {
    armed: AtomicBool,
    read: Notify,
    release: Notify,
}

impl InstrumentedStore {
    pub fn new(inner: PgStore) -> Self {
        Self {
            inner,
            calls: Arc::default(),
            gate: Arc::default(),
        }
    }

    /// The methods called since the last call of this, in order. Each `PgStore` method is at
    /// least one SQL statement, so an empty list means no SQL was sent.
    pub fn take_calls(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    /// The next validation runs its statement, then waits for [`release`](Self::release)
    /// before it returns.
    pub fn hold_next_validation(&self) {
        self.gate.armed.store(true, Ordering::SeqCst);
    }

    /// Waits until the held validation's statement has run.
    pub async fn held_validation_has_read(&self) {
        self.gate.read.notified().await;
    }

    /// Lets the held validation return.
    pub fn release(&self) {
        self.gate.release.notify_one();
    }

    fn record(&self, method: &'static str) {
        self.calls.lock().unwrap().push(method);
    }
}

#[async_trait]
impl SessionStore for InstrumentedStore {
    async fn create(
        &self,
        new: NewSession,
        max_per_user: Option<u32>,
    ) -> Result<SessionRecord, StoreError> {
        self.record("create");
        self.inner.create(new, max_per_user).await
    }

    async fn validate(
        &self,
        token_hash: &TokenHash,
        now: OffsetDateTime,
        touch: Touch,
        scope: Scope,
    ) -> Result<Validation, StoreError> {
        self.record(match scope {
            Scope::User => "validate(user)",
            Scope::Game => "validate(game)",
        });
        let validation = self.inner.validate(token_hash, now, touch, scope).await;
        if self.gate.armed.swap(false, Ordering::SeqCst) {
            self.gate.read.notify_one();
            self.gate.release.notified().await;
        }
        validation
    }

    async fn lookup(
        &self,
        token_hash: &TokenHash,
        now: OffsetDateTime,
    ) -> Result<Option<SessionView>, StoreError> {
        self.record("lookup");
        self.inner.lookup(token_hash, now).await
    }

    async fn remove(
        &self,
        id: SessionId,
        owner: Option<&UserId>,
    ) -> Result<Option<UserId>, StoreError> {
        self.record("remove");
        self.inner.remove(id, owner).await
    }

    async fn remove_by_token(&self, token_hash: &TokenHash) -> Result<Option<UserId>, StoreError> {
        self.record("remove_by_token");
        self.inner.remove_by_token(token_hash).await
    }

    async fn remove_for_user(
        &self,
        user_id: &UserId,
        keep: Option<SessionId>,
    ) -> Result<u64, StoreError> {
        self.record("remove_for_user");
        self.inner.remove_for_user(user_id, keep).await
    }

    async fn list_for_user(
        &self,
        user_id: &UserId,
        now: OffsetDateTime,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.record("list_for_user");
        self.inner.list_for_user(user_id, now).await
    }

    async fn purge_expired(
        &self,
        now: OffsetDateTime,
        limit: u32,
        from: PurgePosition,
    ) -> Result<Purged, StoreError> {
        self.record("purge_expired");
        self.inner.purge_expired(now, limit, from).await
    }

    async fn reauthenticate(&self, id: SessionId, now: OffsetDateTime) -> Result<bool, StoreError> {
        self.record("reauthenticate");
        self.inner.reauthenticate(id, now).await
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
impl RememberStore for InstrumentedStore {
    async fn end_series(
        &self,
        series: uuid::Uuid,
        secret_hash: &TokenHash,
    ) -> Result<Option<UserId>, StoreError> {
        self.record("end_series");
        self.inner.end_series(series, secret_hash).await
    }

    async fn refresh(&self, request: RefreshRequest) -> Result<RefreshOutcome, StoreError> {
        self.record("refresh");
        self.inner.refresh(request).await
    }
}

#[async_trait]
impl CharacterStore for InstrumentedStore {
    async fn select_character(
        &self,
        session_id: SessionId,
        user_id: &UserId,
        character_id: i64,
    ) -> Result<CharacterSelection, StoreError> {
        self.record("select_character");
        self.inner
            .select_character(session_id, user_id, character_id)
            .await
    }
}

#[async_trait]
impl AdminStore for InstrumentedStore {
    async fn count_active(
        &self,
        now: OffsetDateTime,
        active_since: Option<OffsetDateTime>,
    ) -> Result<u64, StoreError> {
        self.record("count_active");
        self.inner.count_active(now, active_since).await
    }

    async fn clear_all(&self) -> Result<u64, StoreError> {
        self.record("clear_all");
        self.inner.clear_all().await
    }
}
