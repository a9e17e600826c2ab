//! [`SqlxStore`]: the PostgreSQL store on an application's `sqlx::PgPool`.
//!
//! It runs the SQL of [`PgStore`]: the statements are built by the same code from the same
//! [`AppSchema`], the migrations and the invalidation triggers are the same texts, so a database
//! can be served by both stores at once (during a move from one to the other, or by two
//! services). What differs is the driver, and what follows from it; see [`SqlxStore`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{
    PgArgumentBuffer, PgArguments, PgConnection, PgPool, PgRow, PgTypeInfo, PgValueRef,
};
use sqlx::query::Query;
use sqlx::{Column, Connection, Postgres, Row, ValueRef};
use time::OffsetDateTime;
use uuid::Uuid;

use super::family::{MAX_SECRETS_PER_SERIES, SecretMatch, SecretState, earliest, match_secret};
use super::postgres::{
    COLUMN_TYPE, CRATE_TABLES, ExpectedColumn, MIGRATIONS, MigrationSql, Names, SCHEMA_EXISTS,
    SESSION_COLUMNS, Sql, Statements, TABLE_EXISTS, check_tables_schema, heap_pages,
    schema_verdict, session_column, validation,
};
use super::{
    AdminStore, AppSchema, CharacterRecord, CharacterSelection, CharacterStore, NewSession,
    PgStore, PgTls, PurgePosition, Purged, RefreshOutcome, RefreshRequest, RememberStore, Scope,
    SessionRecord, SessionStore, SessionView, StoreError, Touch, UserRecord, Validation,
};
use crate::config::ConfigError;
use crate::token::{SessionId, TokenHash};
use crate::user_id::{UserId, UserIdType};

/// A statement with its parameters bound, ready to run.
type Bound<'q> = Query<'q, Postgres, PgArguments>;

/// One of the shared statements, to bind its parameters to (sqlx declares their types from
/// the Rust values bound, the same types as the statement's). Prepared once per connection, in
/// sqlx's statement cache.
fn statement(sql: &Sql) -> Bound<'_> {
    sqlx::query(&sql.text)
}

#[cfg_attr(docsrs, doc(cfg(feature = "sqlx")))]
impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        Self::backend(error)
    }
}

/// Sessions in PostgreSQL, through an application's [`sqlx::PgPool`] (feature `sqlx`).
///
/// The same store as [`PgStore`] on another driver: the same tables, migrations, triggers and
/// statements (built once per store from the [`AppSchema`], as `PgStore` builds them), the same
/// transactions and lock order, so the two can serve one database side by side. Validation is
/// one statement, one round trip. Statements are prepared once per connection, in sqlx's
/// statement cache.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_session_auth::store::SqlxStore;
/// use tower_session_auth::{SessionConfig, SessionManager};
///
/// // The application's own pool, shared with its queries.
/// let pool = sqlx::PgPool::connect("postgres://app:secret@localhost/app").await?;
/// let store = SqlxStore::new(pool.clone());
/// store.migrate().await?;
/// store.check_schema().await?;
/// let manager = SessionManager::new(store, SessionConfig::default());
/// # Ok(()) }
/// ```
///
/// # Where it differs from `PgStore`
///
/// - **Pool.** The pool is the application's, configured by it. sqlx pings a connection before
///   handing it out (`PgPoolOptions::test_before_acquire`, on by default), one more round trip
///   per store operation: turn it off to keep validation at one round trip. sqlx also pings
///   each connection when it is returned, off the request's path. A request waits at most the
///   pool's `acquire_timeout` for a connection, then the
///   [`statement_timeout`](Self::statement_timeout).
/// - **Timeouts.** A store operation that exceeds the
///   [`statement_timeout`](Self::statement_timeout) fails with [`StoreError::Timeout`] and its
///   connection is closed, never handed out again, as with `PgStore`; but sqlx cannot send
///   PostgreSQL a cancel request, so the server finishes (or is stopped by its own
///   `statement_timeout` or `lock_timeout`) the statement it was running. Give the
///   application's role a `lock_timeout` if statements may wait on locks.
/// - **Not offered:** durable revocations ([`PgStore::durable_revocations`]), multi-host
///   failover URLs (sqlx connects to one host), and the mode without named prepared statements
///   ([`PgStore::prepared_statements`]): sqlx prepares named statements, so a transaction
///   pooler in front of the database must support them (PgBouncer 1.21 and later with
///   `max_prepared_statements`; untested). A connection on which a write fails because the
///   server is read-only (SQLSTATE 25006) is closed, so that the pool connects anew.
/// - **Cross-instance events.** The triggers are the same
///   ([`install_invalidation_triggers`](Self::install_invalidation_triggers)); the `LISTEN`
///   connection of [`spawn_session_listener`](Self::spawn_session_listener) is a dedicated
///   `tokio-postgres` connection, as `PgStore`'s, since a pooled connection cannot listen.
#[cfg_attr(docsrs, doc(cfg(feature = "sqlx")))]
#[derive(Clone)]
pub struct SqlxStore {
    pool: PgPool,
    sql: Arc<Statements>,
    app: Arc<AppSchema>,
    names: Arc<Names>,
    statement_timeout: Duration,
    tls: PgTls,
}

impl std::fmt::Debug for SqlxStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlxStore")
            .field("pool_size", &self.pool.size())
            .field("idle", &self.pool.num_idle())
            .finish_non_exhaustive()
    }
}

/// Runs `$body` (an expression of type `Result<T, StoreError>` that uses `$connection`, a
/// `&mut PgConnection`) on a connection acquired from the store's pool, within the store's
/// statement timeout. On a timeout the connection is detached from the pool and closed (so it
/// is never reused: a silent network would hang every later statement on it, and a statement
/// cut off midway leaves the protocol in an unknown state), and the result is
/// [`StoreError::Timeout`].
macro_rules! bounded {
    ($store:expr, |$connection:ident| $body:expr) => {{
        let store: &SqlxStore = $store;
        let mut pooled = store.pool.acquire().await?;
        let outcome = tokio::time::timeout(store.statement_timeout, async {
            let $connection: &mut PgConnection = &mut pooled;
            $body
        })
        .await;
        match outcome {
            Ok(Err(error)) if is_read_only(&error) => {
                drop(pooled.detach());
                tracing::warn!(
                    %error,
                    "the session store's server is read-only; the connection is closed"
                );
                Err(error)
            }
            Ok(result) => result,
            Err(_) => Err(store.discard(pooled)),
        }
    }};
}

impl SqlxStore {
    /// A user id (or none) to bind as the store's user id type.
    fn user_id(&self, id: Option<&UserId>) -> BoundUserId {
        BoundUserId(id.cloned(), self.app.user_id_type)
    }

    /// The default [`statement_timeout`](Self::statement_timeout): 5 s, as
    /// [`PgStore::DEFAULT_STATEMENT_TIMEOUT`].
    pub const DEFAULT_STATEMENT_TIMEOUT: Duration = PgStore::DEFAULT_STATEMENT_TIMEOUT;

    /// A store on the application's pool, with the default [`AppSchema`].
    pub fn new(pool: PgPool) -> Self {
        Self::with_valid_schema(pool, AppSchema::default())
    }

    /// A store on the application's pool, reading users and characters from `app`, or the
    /// [`ConfigError`] of a name that is not a plain SQL identifier ([`AppSchema::validate`]).
    pub fn with_schema(pool: PgPool, app: AppSchema) -> Result<Self, ConfigError> {
        app.validate()?;
        Ok(Self::with_valid_schema(pool, app))
    }

    fn with_valid_schema(pool: PgPool, app: AppSchema) -> Self {
        let names = Names::default();
        Self {
            pool,
            sql: Arc::new(Statements::new(&app, &names)),
            app: Arc::new(app),
            names: Arc::new(names),
            statement_timeout: Self::DEFAULT_STATEMENT_TIMEOUT,
            tls: PgTls::default(),
        }
    }

    /// Puts the crate's own tables and functions in `schema`, as [`PgStore::tables_schema`]
    /// does (the same rules for the name, the same objects, channel and triggers, so that
    /// both stores configured with one schema share it), or the [`ConfigError`] of a name that
    /// is not a plain lower-case SQL identifier.
    pub fn tables_schema(mut self, schema: &str) -> Result<Self, ConfigError> {
        check_tables_schema(schema).map_err(|error| ConfigError {
            field: "SqlxStore::tables_schema",
            ..error
        })?;
        let names = Names {
            schema: Some(schema.to_owned()),
        };
        self.sql = Arc::new(Statements::new(&self.app, &names));
        self.names = Arc::new(names);
        Ok(self)
    }

    /// Bounds each of the store's operations once it has a connection (default
    /// [`DEFAULT_STATEMENT_TIMEOUT`](Self::DEFAULT_STATEMENT_TIMEOUT), 5 s), as
    /// [`PgStore::statement_timeout`] does: beyond it the operation fails with
    /// [`StoreError::Timeout`] (`500 Session store unavailable`) and its connection is closed.
    /// The statement it was running is not cancelled on the server (see [`SqlxStore`]). A zero
    /// timeout is raised to 1 ms. [`migrate`](Self::migrate) is not bounded.
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The TLS connector of the `LISTEN` connection of
    /// [`spawn_session_listener`](Self::spawn_session_listener), which `tokio-postgres` makes
    /// (the pool's connections are sqlx's, with sqlx's TLS): [`PgTls::from_url`] gives it from
    /// the connection string. The default encrypts without checking the server's certificate
    /// when the listener's config asks for TLS, as [`PgStore::tls`]'s does.
    pub fn tls(mut self, tls: PgTls) -> Self {
        self.tls = tls;
        self
    }

    /// The TLS connector of the `LISTEN` connection (see [`tls`](Self::tls)).
    pub(crate) fn connector(&self) -> PgTls {
        self.tls.clone()
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The `LISTEN/NOTIFY` channel of this store's invalidation triggers.
    pub(crate) fn channel(&self) -> String {
        self.names.channel()
    }

    /// Applies the crate's migrations that this database (or, with a
    /// [`tables_schema`](Self::tables_schema), that schema, created if missing) has not seen
    /// yet, as [`PgStore::migrate`] does: the same migrations, lock and table of applied
    /// versions, so a database migrated by either store is migrated for both. Safe to call from
    /// several instances at once. Returns how many migrations were applied.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let statements = MigrationSql::new(&self.names, self.app.user_id_type);
        let mut tx = self.pool.begin().await?;
        sqlx::raw_sql(MigrationSql::LOCK).execute(&mut *tx).await?;
        if let Some(schema) = &statements.schema {
            // Created only when missing: `CREATE SCHEMA IF NOT EXISTS` needs the privilege to
            // create schemas even when the schema exists.
            let row = statement(&SCHEMA_EXISTS)
                .persistent(false)
                .bind(&schema.quoted)
                .fetch_one(&mut *tx)
                .await?;
            if !column::<bool>(&row, 0, "boolean")? {
                sqlx::raw_sql(&schema.create).execute(&mut *tx).await?;
            }
            // The migrations name their objects unqualified: they are created in the schema.
            sqlx::raw_sql(&schema.search_path).execute(&mut *tx).await?;
        }
        sqlx::raw_sql(&statements.create_table)
            .execute(&mut *tx)
            .await?;
        let applied: Vec<i32> = statement(&statements.applied)
            .persistent(false)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| column(row, 0, "integer"))
            .collect::<Result<_, _>>()?;
        let mut count = 0;
        for &(version, name, sql) in MIGRATIONS {
            if applied.contains(&version) {
                continue;
            }
            sqlx::raw_sql(sql)
                .execute(&mut *tx)
                .await
                .map_err(|source| StoreError::Migration {
                    version,
                    name,
                    source: source.into(),
                })?;
            statement(&statements.record)
                .persistent(false)
                .bind(version)
                .bind(name)
                .execute(&mut *tx)
                .await?;
            count += 1;
        }
        sqlx::raw_sql(&statements.user_id_columns)
            .execute(&mut *tx)
            .await
            .map_err(MigrationSql::user_id_columns_failed)?;
        tx.commit().await?;
        Ok(count)
    }

    /// Verifies once, at start-up, that the crate's tables are there and that the
    /// application's tables have the columns the [`AppSchema`] names, with types the store can
    /// read, as [`PgStore::check_schema`] does (the same checks and messages). Bounded by the
    /// [`statement_timeout`](Self::statement_timeout).
    pub async fn check_schema(&self) -> Result<(), StoreError> {
        let problems = bounded!(self, |connection| {
            let mut problems = self.missing_crate_tables(connection).await?;
            for expected in ExpectedColumn::of(&self.app, &self.names, problems.is_empty()) {
                let row = statement(&COLUMN_TYPE)
                    .persistent(false)
                    .bind(expected.table.as_ref())
                    .bind(expected.column)
                    .fetch_one(&mut *connection)
                    .await?;
                problems.extend(expected.problem(
                    column(&row, 0, "boolean")?,
                    column(&row, 1, "text")?,
                    column(&row, 2, "text")?,
                ));
            }
            Ok::<_, StoreError>(problems)
        })?;
        schema_verdict(problems)
    }

    /// What [`check_schema`](Self::check_schema) reports of the crate's own tables: the chosen
    /// schema, or tables of the crate's, that are missing (not migrated).
    async fn missing_crate_tables(
        &self,
        connection: &mut PgConnection,
    ) -> Result<Vec<String>, StoreError> {
        let names = &*self.names;
        let migrate = "SqlxStore::migrate";
        let exists = |row: PgRow| column::<bool>(&row, 0, "boolean");
        if let Some(quoted) = names.quoted_schema() {
            let row = statement(&SCHEMA_EXISTS)
                .persistent(false)
                .bind(quoted)
                .fetch_one(&mut *connection)
                .await?;
            if !exists(row)? {
                return Ok(vec![names.schema_not_found(migrate)]);
            }
        }
        let mut problems = Vec::new();
        for table in CRATE_TABLES {
            let row = statement(&TABLE_EXISTS)
                .persistent(false)
                .bind(names.object(table))
                .fetch_one(&mut *connection)
                .await?;
            if !exists(row)? {
                problems.push(names.table_not_found(table, migrate));
            }
        }
        Ok(problems)
    }

    /// Installs the triggers of [`PgStore::install_invalidation_triggers`] (the same SQL):
    /// they `NOTIFY tower_session_auth` (with a [`tables_schema`](Self::tables_schema),
    /// `tower_session_auth_<schema>`) of ended sessions and changed users and characters, for
    /// the session listener. Idempotent; run it at start-up.
    pub async fn install_invalidation_triggers(&self) -> Result<(), StoreError> {
        let sql = PgStore::invalidation_triggers_sql(&self.app, &self.names);
        sqlx::raw_sql(&sql).execute(&self.pool).await?;
        Ok(())
    }

    /// Detaches and closes a connection whose operation timed out.
    fn discard(&self, pooled: sqlx::pool::PoolConnection<Postgres>) -> StoreError {
        // Dropped, not closed gracefully: a graceful close would wait on the same connection.
        drop(pooled.detach());
        tracing::warn!(
            timeout = ?self.statement_timeout,
            "a session store statement timed out; its connection is closed"
        );
        StoreError::Timeout(self.statement_timeout)
    }

    async fn fetch_optional(&self, query: Bound<'_>) -> Result<Option<PgRow>, StoreError> {
        bounded!(self, |connection| Ok(query
            .fetch_optional(connection)
            .await?))
    }

    async fn fetch_all(&self, query: Bound<'_>) -> Result<Vec<PgRow>, StoreError> {
        bounded!(self, |connection| Ok(query.fetch_all(connection).await?))
    }

    async fn execute(&self, query: Bound<'_>) -> Result<u64, StoreError> {
        bounded!(self, |connection| Ok(query
            .execute(connection)
            .await?
            .rows_affected()))
    }

    /// Removes the session that `find` (one of the statements `end_by_id`, `end_by_token`)
    /// names and, if it belongs to a series, the series and all its sessions: the series row
    /// first, which waits for a refresh of the series in flight, then the sessions, in a later
    /// statement whose snapshot includes the session that refresh committed. Returns the user.
    async fn end_session(&self, find: Bound<'_>) -> Result<Option<UserId>, StoreError> {
        bounded!(self, |connection| {
            let mut tx = connection.begin().await?;
            let Some(target) = find.fetch_optional(&mut *tx).await? else {
                return Ok(None);
            };
            let (id, user_id, series): (Uuid, UserId, Option<Uuid>) = (
                column(&target, 0, "uuid")?,
                column(&target, 1, "user id")?,
                column(&target, 2, "uuid")?,
            );
            statement(&self.sql.delete_ended)
                .bind(id)
                .bind(series)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Some(user_id))
        })
    }

    /// Takes the per-user advisory lock for the rest of the transaction: first in the crate's
    /// lock order (user, then series rows in id order, then sessions).
    async fn lock_user(
        &self,
        connection: &mut PgConnection,
        user_id: &UserId,
    ) -> Result<(), StoreError> {
        statement(&self.sql.lock_user)
            .bind(self.user_id(Some(user_id)))
            .execute(connection)
            .await?;
        Ok(())
    }

    /// Deletes a series and all its sessions.
    async fn delete_series(
        &self,
        connection: &mut PgConnection,
        series: Uuid,
    ) -> Result<(), StoreError> {
        statement(&self.sql.delete_series)
            .bind(series)
            .execute(connection)
            .await?;
        Ok(())
    }

    /// Inserts a session; with `max_per_user` (inside a transaction) serialises on the user and
    /// removes the user's oldest sessions beyond the limit.
    async fn insert_session(
        &self,
        connection: &mut PgConnection,
        new: &NewSession,
        authenticated_at: OffsetDateTime,
        refreshed: bool,
        series_id: Option<Uuid>,
        max_per_user: Option<u32>,
    ) -> Result<SessionRecord, StoreError> {
        if max_per_user.is_some() {
            // Concurrent logins of one user serialise on a per-user advisory lock, so the limit
            // holds even when they race.
            self.lock_user(connection, &new.user_id).await?;
        }
        let row = statement(&self.sql.insert_session)
            .bind(new.id.0)
            .bind(new.token_hash.0.as_slice())
            .bind(self.user_id(Some(&new.user_id)))
            .bind(new.client.client_type.as_str())
            .bind(new.client.ip)
            .bind(new.client.user_agent.as_deref())
            .bind(new.created_at)
            .bind(new.expires_at)
            .bind(new.absolute_expires_at)
            .bind(authenticated_at)
            .bind(refreshed)
            .bind(series_id)
            .fetch_one(&mut *connection)
            .await?;
        if let Some(max) = max_per_user {
            // The user's oldest sessions beyond the limit, and their series (but the new
            // session's own), locked in id order before any session is deleted.
            let keep = i64::from(max.max(1));
            let doomed = statement(&self.sql.doomed_sessions)
                .bind(self.user_id(Some(&new.user_id)))
                .bind(new.id.0)
                .bind(keep)
                .bind(series_id)
                .fetch_one(&mut *connection)
                .await?;
            let sessions: Vec<Uuid> = column(&doomed, 0, "uuid[]")?;
            let series: Vec<Uuid> = column(&doomed, 1, "uuid[]")?;
            if !sessions.is_empty() {
                // A later statement, so that it sees what a refresh of those series committed.
                statement(&self.sql.prune_sessions)
                    .bind(&sessions)
                    .bind(&series)
                    .execute(&mut *connection)
                    .await?;
            }
        }
        record_from_row(&row)
    }
}

#[async_trait]
impl SessionStore for SqlxStore {
    async fn create(
        &self,
        new: NewSession,
        max_per_user: Option<u32>,
    ) -> Result<SessionRecord, StoreError> {
        let series_id = new.remember.as_ref().map(|series| series.id);
        bounded!(self, |connection| {
            if max_per_user.is_none() && series_id.is_none() {
                // The common case needs no transaction: one INSERT.
                return self
                    .insert_session(connection, &new, new.created_at, false, series_id, None)
                    .await;
            }
            let mut tx = connection.begin().await?;
            let record = self
                .insert_session(
                    &mut tx,
                    &new,
                    new.created_at,
                    false,
                    series_id,
                    max_per_user,
                )
                .await?;
            if let Some(series) = &new.remember {
                statement(&self.sql.insert_series)
                    .bind(series.id)
                    .bind(self.user_id(Some(&new.user_id)))
                    .bind(series.secret_hash.0.as_slice())
                    .bind(new.created_at)
                    .bind(series.expires_at)
                    .bind(series.absolute_expires_at)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(record)
        })
    }

    async fn validate(
        &self,
        token_hash: &TokenHash,
        now: OffsetDateTime,
        touch: Touch,
        scope: Scope,
    ) -> Result<Validation, StoreError> {
        let sql = match scope {
            Scope::User => &self.sql.validate_user,
            Scope::Game => &self.sql.validate_game,
        };
        let query = statement(sql)
            .bind(token_hash.0.as_slice())
            .bind(now)
            .bind(touch.due_before)
            .bind(touch.slide_to);
        Ok(match self.fetch_optional(query).await? {
            None => Validation::Unknown,
            Some(row) => validation(view_from_row(&row, scope)?, now, touch),
        })
    }

    async fn lookup(
        &self,
        token_hash: &TokenHash,
        now: OffsetDateTime,
    ) -> Result<Option<SessionView>, StoreError> {
        let query = statement(&self.sql.lookup)
            .bind(token_hash.0.as_slice())
            .bind(now);
        self.fetch_optional(query)
            .await?
            .map(|row| view_from_row(&row, Scope::Game))
            .transpose()
    }

    async fn remove(
        &self,
        id: SessionId,
        owner: Option<&UserId>,
    ) -> Result<Option<UserId>, StoreError> {
        self.end_session(
            statement(&self.sql.end_by_id)
                .bind(id.0)
                .bind(self.user_id(owner)),
        )
        .await
    }

    async fn remove_by_token(&self, token_hash: &TokenHash) -> Result<Option<UserId>, StoreError> {
        self.end_session(statement(&self.sql.end_by_token).bind(token_hash.0.as_slice()))
            .await
    }

    async fn remove_for_user(
        &self,
        user_id: &UserId,
        keep: Option<SessionId>,
    ) -> Result<u64, StoreError> {
        let keep = keep.map(|id| id.0);
        bounded!(self, |connection| {
            let mut tx = connection.begin().await?;
            self.lock_user(&mut tx, user_id).await?;
            // First end the series, in id order (each waits for a refresh in flight) ...
            let ended = statement(&self.sql.end_user_series)
                .bind(self.user_id(Some(user_id)))
                .bind(keep)
                .fetch_one(&mut *tx)
                .await?;
            let kept_series: Option<Uuid> = column(&ended, 0, "uuid")?;
            // ... then delete the sessions in a later statement, whose snapshot includes what
            // those refreshes committed.
            let count = statement(&self.sql.delete_user_sessions)
                .bind(self.user_id(Some(user_id)))
                .bind(keep)
                .bind(kept_series)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            Ok(count)
        })
    }

    async fn list_for_user(
        &self,
        user_id: &UserId,
        now: OffsetDateTime,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let query = statement(&self.sql.list_for_user)
            .bind(self.user_id(Some(user_id)))
            .bind(now);
        self.fetch_all(query)
            .await?
            .iter()
            .map(record_from_row)
            .collect()
    }

    async fn purge_expired(
        &self,
        now: OffsetDateTime,
        limit: u32,
        from: PurgePosition,
    ) -> Result<Purged, StoreError> {
        let (sessions_page, series_page) = heap_pages(from);
        let query = statement(&self.sql.purge_expired)
            .bind(now)
            .bind(i64::from(limit))
            .bind(sessions_page)
            .bind(series_page);
        let row = self.fetch_optional(query).await?;
        let row = row.as_ref();
        Ok(Purged::new(count(row, 0)?, count(row, 1)?)
            .resume_at(PurgePosition::new(count(row, 2)?, count(row, 3)?)))
    }

    async fn reauthenticate(&self, id: SessionId, now: OffsetDateTime) -> Result<bool, StoreError> {
        let query = statement(&self.sql.reauthenticate).bind(id.0).bind(now);
        Ok(self.execute(query).await? > 0)
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
impl RememberStore for SqlxStore {
    async fn end_series(
        &self,
        series: Uuid,
        secret_hash: &TokenHash,
    ) -> Result<Option<UserId>, StoreError> {
        bounded!(self, |connection| {
            let mut tx = connection.begin().await?;
            // The series row first: this waits for a refresh that holds it, so the sessions
            // statement after it (a new snapshot) also sees the session that refresh created.
            let Some(row) = statement(&self.sql.end_series)
                .bind(series)
                .bind(secret_hash.0.as_slice())
                .fetch_optional(&mut *tx)
                .await?
            else {
                return Ok(None);
            };
            let user_id: UserId = column(&row, 0, "user id")?;
            statement(&self.sql.delete_series_sessions)
                .bind(series)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Some(user_id))
        })
    }

    async fn refresh(&self, request: RefreshRequest) -> Result<RefreshOutcome, StoreError> {
        bounded!(self, |connection| {
            let mut tx = connection.begin().await?;
            if request.max_per_user.is_some() {
                // Locks are taken in one order everywhere: the user's (when pruning), the
                // series', then sessions.
                statement(&self.sql.refresh_lock_user)
                    .bind(request.series)
                    .bind(request.secret_hash.0.as_slice())
                    .execute(&mut *tx)
                    .await?;
            }
            let Some(series) = statement(&self.sql.refresh_lock)
                .bind(request.series)
                .bind(request.now)
                .bind(request.secret_hash.0.as_slice())
                .fetch_optional(&mut *tx)
                .await?
            else {
                return Ok(RefreshOutcome::Invalid);
            };
            // Read after the lock, in a statement of its own: its snapshot includes what the
            // refresh that held the lock before committed.
            let stored = statement(&self.sql.refresh_secret)
                .bind(request.series)
                .bind(request.secret_hash.0.as_slice())
                .fetch_optional(&mut *tx)
                .await?
                .map(|row| {
                    Ok::<_, StoreError>(SecretState {
                        used_at: column(&row, 0, "timestamptz")?,
                        spent: column(&row, 1, "boolean")?,
                    })
                })
                .transpose()?;
            let user_id: UserId = column(&series, 0, "user id")?;
            let decision = match_secret(stored, request.grace_since);
            if let SecretMatch::Unknown | SecretMatch::Refused = decision {
                return Ok(RefreshOutcome::Invalid);
            }
            let expired: bool = column(&series, 3, "boolean")?;
            let user_ok: bool = column(&series, 4, "boolean")?;
            if expired || !user_ok {
                self.delete_series(&mut tx, request.series).await?;
                tx.commit().await?;
                return Ok(RefreshOutcome::Ended { user_id });
            }
            let keep_since = match decision {
                SecretMatch::Reuse => {
                    self.delete_series(&mut tx, request.series).await?;
                    tx.commit().await?;
                    return Ok(RefreshOutcome::ReuseDetected { user_id });
                }
                SecretMatch::Grace { used_at } => Some(used_at),
                _ => None,
            };
            // Exchange the secret, and end the series' earlier sessions (one device, one
            // session) but for those the grace window keeps. The statement does not see the
            // secret it inserts: keep one fewer of the others (and the one presented, which it
            // updates).
            statement(&self.sql.refresh_exchange)
                .bind(request.series)
                .bind(request.secret_hash.0.as_slice())
                .bind(request.now)
                .bind(request.new_secret_hash.0.as_slice())
                .bind(request.series_expires_at)
                .bind(keep_since)
                .bind(MAX_SECRETS_PER_SERIES - 1)
                .execute(&mut *tx)
                .await?;
            let session = NewSession {
                user_id,
                absolute_expires_at: earliest(
                    request.session.absolute_expires_at,
                    column(&series, 2, "timestamptz")?,
                ),
                ..request.session
            };
            let authenticated_at: OffsetDateTime = column(&series, 1, "timestamptz")?;
            let record = self
                .insert_session(
                    &mut tx,
                    &session,
                    authenticated_at,
                    true,
                    Some(request.series),
                    request.max_per_user,
                )
                .await?;
            tx.commit().await?;
            Ok(RefreshOutcome::Refreshed(Box::new(record)))
        })
    }
}

#[async_trait]
impl CharacterStore for SqlxStore {
    async fn select_character(
        &self,
        session_id: SessionId,
        user_id: &UserId,
        character_id: i64,
    ) -> Result<CharacterSelection, StoreError> {
        let query = statement(&self.sql.select_character)
            .bind(session_id.0)
            .bind(self.user_id(Some(user_id)))
            .bind(character_id);
        let Some(row) = self.fetch_optional(query).await? else {
            return Ok(CharacterSelection::CharacterNotFound);
        };
        if !column::<bool>(&row, 2, "boolean")? {
            return Ok(CharacterSelection::SessionNotFound);
        }
        Ok(CharacterSelection::Selected(CharacterRecord {
            name: column(&row, 0, "text")?,
            world_id: column(&row, 1, "text")?,
        }))
    }
}

#[async_trait]
impl AdminStore for SqlxStore {
    async fn count_active(
        &self,
        now: OffsetDateTime,
        active_since: Option<OffsetDateTime>,
    ) -> Result<u64, StoreError> {
        let query = statement(&self.sql.count_active)
            .bind(now)
            .bind(active_since);
        count(self.fetch_optional(query).await?.as_ref(), 0)
    }

    async fn clear_all(&self) -> Result<u64, StoreError> {
        self.execute(statement(&self.sql.clear_all)).await
    }
}

/// Whether the server refused a write because it is read-only (SQLSTATE 25006).
fn is_read_only(error: &StoreError) -> bool {
    let StoreError::Backend(source) = error else {
        return false;
    };
    match source.downcast_ref::<sqlx::Error>() {
        Some(sqlx::Error::Database(error)) => error.code().as_deref() == Some("25006"),
        _ => false,
    }
}

/// The `count(*)` in column `index` of a statement's single row (no row: 0).
fn count(row: Option<&PgRow>, index: usize) -> Result<u64, StoreError> {
    let count: i64 = row.map_or(Ok(0), |row| column(row, index, "bigint"))?;
    Ok(count.try_into().unwrap_or(0))
}

/// Reads column `index` of `row` as `T`: a NULL in a non-`Option`, or a column of another type
/// than `expected` (the SQL type the crate reads), is a [`StoreError::Decode`] naming the
/// column, never a panic.
fn column<'r, T>(row: &'r PgRow, index: usize, expected: &'static str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(index).map_err(|source| StoreError::Decode {
        column: row
            .columns()
            .get(index)
            .map_or_else(|| format!("#{index}"), |column| column.name().to_owned()),
        expected,
        source: source.into(),
    })
}

session_row_readers!(PgRow);

/// A user id (or NULL) bound as a value of the user id columns' type, declared as that type
/// whatever the value, so that a statement is prepared once with the same parameter types.
struct BoundUserId(Option<UserId>, UserIdType);

impl sqlx::Type<Postgres> for BoundUserId {
    fn type_info() -> PgTypeInfo {
        <i64 as sqlx::Type<Postgres>>::type_info()
    }
}

impl sqlx::Encode<'_, Postgres> for BoundUserId {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        fn encode<T: for<'q> sqlx::Encode<'q, Postgres>>(
            value: T,
            buf: &mut PgArgumentBuffer,
        ) -> Result<IsNull, BoxDynError> {
            value.encode_by_ref(buf)
        }
        match (&self.0, self.1) {
            (None, _) => Ok(IsNull::Yes),
            (Some(UserId::Int(id)), UserIdType::BigInt) => encode(*id, buf),
            (Some(UserId::Int(id)), UserIdType::Integer) => encode(
                i32::try_from(*id)
                    .map_err(|_| format!("user id {id} does not fit a column of type integer"))?,
                buf,
            ),
            (Some(UserId::Uuid(id)), UserIdType::Uuid) => encode(*id, buf),
            (Some(UserId::Text(id)), UserIdType::Text) => encode(id.as_str(), buf),
            (Some(id), ty) => {
                Err(format!("user id {id} does not fit a column of type {}", ty.sql()).into())
            }
        }
    }

    fn produces(&self) -> Option<PgTypeInfo> {
        Some(match self.1 {
            UserIdType::BigInt => <i64 as sqlx::Type<Postgres>>::type_info(),
            UserIdType::Integer => <i32 as sqlx::Type<Postgres>>::type_info(),
            UserIdType::Uuid => <Uuid as sqlx::Type<Postgres>>::type_info(),
            UserIdType::Text => <String as sqlx::Type<Postgres>>::type_info(),
        })
    }
}

/// Read from any of the user id columns' types.
impl sqlx::Type<Postgres> for UserId {
    fn type_info() -> PgTypeInfo {
        <i64 as sqlx::Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <i64 as sqlx::Type<Postgres>>::compatible(ty)
            || <i32 as sqlx::Type<Postgres>>::compatible(ty)
            || <Uuid as sqlx::Type<Postgres>>::compatible(ty)
            || <String as sqlx::Type<Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, Postgres> for UserId {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        let ty = value.type_info().into_owned();
        Ok(if ty == <i64 as sqlx::Type<Postgres>>::type_info() {
            Self::Int(<i64 as sqlx::Decode<Postgres>>::decode(value)?)
        } else if ty == <i32 as sqlx::Type<Postgres>>::type_info() {
            Self::Int(<i32 as sqlx::Decode<Postgres>>::decode(value)?.into())
        } else if ty == <Uuid as sqlx::Type<Postgres>>::type_info() {
            Self::Uuid(<Uuid as sqlx::Decode<Postgres>>::decode(value)?)
        } else {
            Self::Text(<String as sqlx::Decode<Postgres>>::decode(value)?)
        })
    }
}
