//! [`PgStore`]: sessions in PostgreSQL through a deadpool-postgres pool.

use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Pool};
use time::OffsetDateTime;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use uuid::Uuid;

use super::{
    CharacterRecord, CharacterSelection, NewSession, Purged, RefreshOutcome, RefreshRequest, Scope,
    SecretMatch, SessionRecord, SessionStore, SessionView, StoreError, Touch, UserRecord,
    Validation, is_expired, match_secret,
};
use crate::token::{SessionId, TokenHash};

/// The crate's migrations, applied in order by [`PgStore::migrate`].
const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "0001_sessions.sql",
    include_str!("migrations/0001_sessions.sql"),
)];

/// Where the application keeps its users and characters. The validating statement joins them.
///
/// The names are inserted into SQL as identifiers, so they must be plain (letters, digits,
/// `_`, optionally schema-qualified with `.`); [`PgStore::with_schema`] panics otherwise. The
/// defaults are the original server's tables:
/// `users(id, username, role, is_active)` and `characters(id, user_id, name, world_id)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppSchema {
    /// Users table.
    pub users_table: String,
    /// Its primary key (bigint).
    pub user_id: String,
    /// Login name (text).
    pub username: String,
    /// Role name (text, may be null).
    pub role: String,
    /// Active flag (boolean).
    pub is_active: String,
    /// Characters table.
    pub characters_table: String,
    /// Its primary key (bigint).
    pub character_id: String,
    /// Owner (bigint, references the users table).
    pub character_user_id: String,
    /// Character name (text).
    pub character_name: String,
    /// The character's world (text, may be null).
    pub character_world_id: String,
}

impl Default for AppSchema {
    fn default() -> Self {
        let s = |v: &str| v.to_owned();
        Self {
            users_table: s("users"),
            user_id: s("id"),
            username: s("username"),
            role: s("role"),
            is_active: s("is_active"),
            characters_table: s("characters"),
            character_id: s("id"),
            character_user_id: s("user_id"),
            character_name: s("name"),
            character_world_id: s("world_id"),
        }
    }
}

impl AppSchema {
    fn assert_plain_identifiers(&self) {
        for name in [
            &self.users_table,
            &self.user_id,
            &self.username,
            &self.role,
            &self.is_active,
            &self.characters_table,
            &self.character_id,
            &self.character_user_id,
            &self.character_name,
            &self.character_world_id,
        ] {
            let plain = !name.is_empty()
                && name.split('.').all(|part| {
                    !part.is_empty()
                        && !part.starts_with(|c: char| c.is_ascii_digit())
                        && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                });
            assert!(plain, "AppSchema: {name:?} is not a plain SQL identifier");
        }
    }
}

/// The session columns every statement returns, in the order [`record_from_row`] reads them.
const SESSION_COLUMNS: &str = "id, user_id, character_id, world_id, client_type, ip, user_agent, \
     created_at, last_activity, expires_at, absolute_expires_at, authenticated_at, refreshed, \
     series_id";

/// How many columns [`SESSION_COLUMNS`] has; user and character columns follow.
const SESSION_COLUMN_COUNT: usize = 14;

/// A condition true for sessions that are still live at `$N`.
fn live(alias: &str, now_param: &str) -> String {
    format!(
        "({alias}.expires_at IS NULL OR {alias}.expires_at > {now_param}) \
         AND ({alias}.absolute_expires_at IS NULL OR {alias}.absolute_expires_at > {now_param})"
    )
}

/// The select list and joins that read a [`SessionView`] at `scope`, in the order
/// [`view_from_row`] reads them: the session's columns, the user's, and with [`Scope::Game`]
/// the selected character's (only if it still belongs to the user). The columns are returned
/// as stored, so PostgreSQL builds no expression per column.
fn view_select(app: &AppSchema, scope: Scope) -> (String, String) {
    let AppSchema {
        users_table,
        user_id,
        username,
        role,
        is_active,
        characters_table,
        character_id,
        character_user_id,
        character_name,
        character_world_id,
    } = app;
    let session: Vec<String> = SESSION_COLUMNS
        .split(", ")
        .map(|column| format!("s.{column}"))
        .collect();
    let mut columns = format!(
        "{}, u.{username}, u.{role}, u.{is_active}, u.{user_id}",
        session.join(", ")
    );
    let mut joins = format!("LEFT JOIN {users_table} u ON u.{user_id} = s.user_id");
    if scope == Scope::Game {
        columns += &format!(", ch.{character_name}, ch.{character_world_id}, ch.{character_id}");
        joins += &format!(
            " LEFT JOIN {characters_table} ch ON ch.{character_id} = s.character_id \
               AND ch.{character_user_id} = s.user_id"
        );
    }
    (columns, joins)
}

/// The validating statement at `scope`. One round trip, and in the common case a plain read:
/// find the session by hash with its user (and character). The caller derives expiry, the
/// touched values and the synced world from the stored columns (see [`validation`]). The
/// writes ride in the same statement as calls of the crate's two functions, made only when
/// needed: deleting an expired session, and the debounced touch with sliding expiry (and, at
/// [`Scope::Game`], the world resync). They run their own UPDATE / DELETE on the current row
/// (not this statement's snapshot), so concurrent requests write once, a deleted row is never
/// re-created, and a concurrent character switch keeps its world.
fn validate_sql(app: &AppSchema, scope: Scope) -> String {
    let (columns, joins) = view_select(app, scope);
    let world = &app.character_world_id;
    let (world_due, new_world) = match scope {
        Scope::User => (String::new(), "NULL".to_owned()),
        Scope::Game => (
            format!(" OR ch.{world} IS DISTINCT FROM s.world_id AND ch.{world} IS NOT NULL"),
            format!("ch.{world}"),
        ),
    };
    format!(
        "SELECT {columns}, \
                CASE WHEN s.expires_at <= $2 OR s.absolute_expires_at <= $2 \
                     THEN tower_session_auth_expire(s.id, $2) \
                     WHEN s.last_activity <= $3{world_due} \
                     THEN tower_session_auth_touch(s.id, $2, $3, $4, s.character_id, {new_world}) \
                END \
         FROM sessions s {joins} WHERE s.token_hash = $1"
    )
}

/// SQL texts, built once per store from the [`AppSchema`].
struct Statements {
    /// The validating statements, at [`Scope::User`] and at [`Scope::Game`].
    validate_user: String,
    validate_game: String,
    lookup: String,
    select_character: String,
    list_for_user: String,
    count_active: String,
    refresh_lock: String,
}

impl Statements {
    fn new(app: &AppSchema) -> Self {
        let AppSchema {
            users_table,
            user_id,
            is_active,
            characters_table,
            character_id,
            character_user_id,
            character_name,
            character_world_id,
            ..
        } = app;
        let (columns, joins) = view_select(app, Scope::Game);
        let lookup = format!(
            "SELECT {columns} FROM sessions s {joins} WHERE s.token_hash = $1 AND {}",
            live("s", "$2")
        );
        let select_character = format!(
            "WITH c AS ( \
                SELECT {character_name} AS name, {character_world_id} AS world_id \
                FROM {characters_table} WHERE {character_id} = $3 AND {character_user_id} = $2 \
             ), bound AS ( \
                UPDATE sessions SET character_id = $3, world_id = c.world_id FROM c \
                WHERE sessions.id = $1 AND sessions.user_id = $2 RETURNING 1 \
             ) \
             SELECT c.name, c.world_id, EXISTS (SELECT 1 FROM bound) FROM c"
        );
        let list_for_user = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions s WHERE user_id = $1 AND {} \
             ORDER BY created_at DESC, id",
            live("s", "$2")
        );
        let count_active = format!(
            "SELECT count(*) FROM sessions s WHERE {} \
             AND ($2::timestamptz IS NULL OR last_activity >= $2)",
            live("s", "$1")
        );
        // The series row is locked for the rest of the refresh transaction, so concurrent
        // refreshes of one series are decided one after the other.
        let refresh_lock = format!(
            "SELECT r.user_id, r.secret_hash, r.previous_hash, r.rotated_at, r.created_at, \
                    (r.expires_at <= $2 OR r.absolute_expires_at <= $2) IS TRUE, \
                    u.{user_id} IS NOT NULL AND COALESCE(u.{is_active}, false) \
             FROM refresh_series r LEFT JOIN {users_table} u ON u.{user_id} = r.user_id \
             WHERE r.id = $1 FOR UPDATE OF r"
        );
        Self {
            validate_user: validate_sql(app, Scope::User),
            validate_game: validate_sql(app, Scope::Game),
            lookup,
            select_character,
            list_for_user,
            count_active,
            refresh_lock,
        }
    }
}

/// Sessions in PostgreSQL, through a [deadpool-postgres](deadpool_postgres) pool.
///
/// Every statement is prepared once per connection (`prepare_cached`). Validation is a single
/// statement; see [`SessionStore::validate`]. The `sessions` table lives in the connection's
/// `search_path`, so a schema can be chosen with the connection option
/// `options=-csearch_path=myschema`.
///
/// A store error (database down, pool timeout) surfaces as [`StoreError`]; the extractors turn
/// it into `500 Session store unavailable`, bounded by the pool's wait timeout. Connections are
/// recycled with deadpool's default [`RecyclingMethod::Fast`](deadpool_postgres::RecyclingMethod):
/// a connection whose socket closed (for example after `pg_terminate_backend`) is discarded
/// when it returns to the pool, so the store recovers on its own.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_session_auth::PgStore;
///
/// let store = PgStore::connect("postgres://app:secret@localhost/app")?;
/// store.migrate().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    sql: Arc<Statements>,
    #[cfg(feature = "cache")]
    app: Arc<AppSchema>,
}

/// The `LISTEN/NOTIFY` channel of cache invalidations.
#[cfg(feature = "cache")]
const CHANNEL: &str = "tower_session_auth";

/// One listener connection's life: connect, `LISTEN`, flush and serve, apply notifications
/// until the connection ends.
#[cfg(feature = "cache")]
async fn listen(
    config: &tokio_postgres::Config,
    cache: &crate::cache::SessionCache,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tokio_postgres::NoTls).await?;
    let (sender, mut payloads) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(note))) => {
                    if sender.send(Ok(note.payload().to_owned())).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    let _ = sender.send(Err(error));
                    return;
                }
                None => return,
            }
        }
    });
    let listening = client.batch_execute(&format!("LISTEN {CHANNEL}")).await;
    if let Err(error) = listening {
        driver.abort();
        return Err(error);
    }
    cache.invalidate_all();
    cache.set_serving(true);
    tracing::info!("session cache listener connected");
    let outcome = loop {
        match payloads.recv().await {
            Some(Ok(payload)) => cache.apply_notification(&payload),
            Some(Err(error)) => break Err(error),
            None => break Ok(()),
        }
    };
    drop(client);
    driver.abort();
    outcome
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// A store on an existing pool, with the default [`AppSchema`].
    pub fn new(pool: Pool) -> Self {
        Self::with_schema(pool, AppSchema::default())
    }

    /// A store on an existing pool, reading users and characters from `app`.
    ///
    /// # Panics
    /// If a name in `app` is not a plain SQL identifier.
    pub fn with_schema(pool: Pool, app: AppSchema) -> Self {
        app.assert_plain_identifiers();
        Self {
            pool,
            sql: Arc::new(Statements::new(&app)),
            #[cfg(feature = "cache")]
            app: Arc::new(app),
        }
    }

    /// Builds a pool from a connection URL with the defaults this crate recommends: 16
    /// connections, a 5 s wait timeout (the bound on a `500 Session store unavailable`),
    /// 5 s to connect, and fast recycling.
    pub fn connect(url: &str) -> Result<Self, deadpool_postgres::CreatePoolError> {
        let mut config = deadpool_postgres::Config::new();
        config.url = Some(url.to_owned());
        config.pool = Some(deadpool_postgres::PoolConfig {
            max_size: 16,
            timeouts: deadpool_postgres::Timeouts {
                wait: Some(std::time::Duration::from_secs(5)),
                create: Some(std::time::Duration::from_secs(5)),
                recycle: Some(std::time::Duration::from_secs(5)),
            },
            ..Default::default()
        });
        let pool = config.create_pool(
            Some(deadpool_postgres::Runtime::Tokio1),
            tokio_postgres::NoTls,
        )?;
        Ok(Self::new(pool))
    }

    /// The underlying pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Applies the crate's migrations that this database has not seen yet.
    ///
    /// Safe to call from several instances at once: a transaction-scoped advisory lock
    /// serialises them, and applied versions are recorded in `tower_session_auth_migrations`.
    /// Returns how many migrations were applied.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('tower_session_auth.migrate', 0)); \
             CREATE TABLE IF NOT EXISTS tower_session_auth_migrations ( \
                 version int PRIMARY KEY, name text NOT NULL, \
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
        let applied: Vec<i32> = tx
            .query("SELECT version FROM tower_session_auth_migrations", &[])
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mut count = 0;
        for &(version, name, sql) in MIGRATIONS {
            if applied.contains(&version) {
                continue;
            }
            tx.batch_execute(sql)
                .await
                .map_err(|source| StoreError::Migration {
                    version,
                    name,
                    source,
                })?;
            tx.execute(
                "INSERT INTO tower_session_auth_migrations (version, name) VALUES ($1, $2)",
                &[&version, &name],
            )
            .await?;
            count += 1;
        }
        tx.commit().await?;
        Ok(count)
    }

    /// Installs the triggers that feed cross-instance cache invalidation (feature `cache`):
    /// they `NOTIFY tower_session_auth` when a session is deleted or rebound to another
    /// character, when a user's role, active flag or name changes or the user is deleted, and
    /// when a character changes world or owner or is deleted. Idempotent; run it at start-up.
    /// Touches and other hot-path writes fire nothing.
    #[cfg(feature = "cache")]
    pub async fn install_invalidation_triggers(&self) -> Result<(), StoreError> {
        let AppSchema {
            users_table,
            user_id,
            username,
            role,
            is_active,
            characters_table,
            character_user_id,
            character_name,
            character_world_id,
            ..
        } = &*self.app;
        let notify = |function: &str, payload: &str| {
            format!(
                "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN PERFORM pg_notify('{CHANNEL}', {payload}); RETURN NULL; END $$;"
            )
        };
        let sql = [
            notify("tower_session_auth_session_changed", "'session:' || OLD.id"),
            "CREATE OR REPLACE TRIGGER tower_session_auth_session_changed \
             AFTER DELETE OR UPDATE OF character_id, user_id ON sessions \
             FOR EACH ROW EXECUTE FUNCTION tower_session_auth_session_changed();"
                .to_owned(),
            notify(
                "tower_session_auth_user_changed",
                &format!("'user:' || OLD.{user_id}"),
            ),
            format!(
                "CREATE OR REPLACE TRIGGER tower_session_auth_user_changed \
                 AFTER DELETE OR UPDATE OF {role}, {is_active}, {username} ON {users_table} \
                 FOR EACH ROW EXECUTE FUNCTION tower_session_auth_user_changed();"
            ),
            notify(
                "tower_session_auth_character_changed",
                &format!("'user:' || OLD.{character_user_id}"),
            ),
            format!(
                "CREATE OR REPLACE TRIGGER tower_session_auth_character_changed \
                 AFTER DELETE OR UPDATE OF {character_world_id}, {character_user_id}, \
                 {character_name} ON {characters_table} \
                 FOR EACH ROW EXECUTE FUNCTION tower_session_auth_character_changed();"
            ),
        ]
        .concat();
        self.pool.get().await?.batch_execute(&sql).await?;
        Ok(())
    }

    /// Spawns the task that keeps `cache` in step with other instances (feature `cache`): on a
    /// dedicated connection made from `config` (not a pooled one) it `LISTEN`s for the
    /// triggers' notifications and drops the entries they name. The cache serves nothing
    /// until the listener is connected and is flushed on every (re)connection, since missed
    /// notifications are not replayed; after a failure the task reconnects every second.
    #[cfg(feature = "cache")]
    pub fn spawn_invalidation_listener(
        &self,
        config: tokio_postgres::Config,
        cache: crate::cache::SessionCache,
    ) -> tokio::task::JoinHandle<()> {
        cache.set_serving(false);
        tokio::spawn(async move {
            loop {
                if let Err(error) = listen(&config, &cache).await {
                    tracing::warn!(%error, "session cache listener disconnected; reconnecting");
                }
                cache.set_serving(false);
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        })
    }

    async fn query_one_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(sql).await?;
        Ok(client.query_opt(&statement, params).await?)
    }

    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(sql).await?;
        Ok(client.execute(&statement, params).await?)
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(sql).await?;
        Ok(client.query(&statement, params).await?)
    }
}

fn record_from_row(row: &Row) -> SessionRecord {
    SessionRecord {
        id: SessionId(row.get(0)),
        user_id: row.get(1),
        character_id: row.get(2),
        world_id: row.get(3),
        client_type: row.get(4),
        ip: row.get(5),
        user_agent: row.get(6),
        created_at: row.get(7),
        last_activity: row.get(8),
        expires_at: row.get(9),
        absolute_expires_at: row.get(10),
        authenticated_at: row.get(11),
        refreshed: row.get(12),
        remembered: row.get::<_, Option<Uuid>>(13).is_some(),
    }
}

/// Reads a row of the validate / lookup statements (see [`view_select`]).
fn view_from_row(row: &Row, scope: Scope) -> SessionView {
    let at = SESSION_COLUMN_COUNT;
    // The key columns tell a missing row of the left join from null columns of a present one.
    let user = row.get::<_, Option<i64>>(at + 3).map(|_| UserRecord {
        username: row.get(at),
        role: row.get(at + 1),
        is_active: row.get::<_, Option<bool>>(at + 2).unwrap_or(false),
    });
    let character = match scope {
        Scope::User => None,
        Scope::Game => row.get::<_, Option<i64>>(at + 6).map(|_| CharacterRecord {
            name: row.get(at + 4),
            world_id: row.get(at + 5),
        }),
    };
    SessionView {
        session: record_from_row(row),
        user,
        character,
    }
}

/// The outcome of the validating statement, from the row as it was before the statement's own
/// writes: expired (the statement deleted it), or live with the touch and the world resync
/// applied as the statement applied them.
fn validation(mut view: SessionView, now: OffsetDateTime, touch: Touch) -> Validation {
    let session = &mut view.session;
    if is_expired(session, now) {
        return Validation::Expired;
    }
    if session.last_activity <= touch.due_before {
        session.last_activity = now;
        session.expires_at = touch.slide_to.or(session.expires_at);
    }
    if let Some(world) = view.character.as_ref().and_then(|c| c.world_id.as_ref()) {
        session.world_id = Some(world.clone());
    }
    Validation::Valid(Arc::new(view))
}

#[async_trait]
impl SessionStore for PgStore {
    async fn create(
        &self,
        new: NewSession,
        max_per_user: Option<u32>,
    ) -> Result<SessionRecord, StoreError> {
        let series_id = new.remember.as_ref().map(|series| series.id);
        let mut client = self.pool.get().await?;
        if max_per_user.is_none() && series_id.is_none() {
            // The common case needs no transaction: one INSERT.
            return insert_session(&client, &new, new.created_at, false, series_id, None).await;
        }
        let tx = client.transaction().await?;
        let record =
            insert_session(&tx, &new, new.created_at, false, series_id, max_per_user).await?;
        if let Some(series) = &new.remember {
            let insert = tx
                .prepare_cached(
                    "INSERT INTO refresh_series (id, user_id, secret_hash, created_at, \
                         last_used_at, expires_at, absolute_expires_at) \
                     VALUES ($1, $2, $3, $4, $4, $5, $6)",
                )
                .await?;
            tx.execute(
                &insert,
                &[
                    &series.id,
                    &new.user_id,
                    &series.secret_hash.0.as_slice(),
                    &new.created_at,
                    &series.expires_at,
                    &series.absolute_expires_at,
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(record)
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
        let row = self
            .query_one_opt(
                sql,
                &[
                    &token_hash.0.as_slice(),
                    &now,
                    &touch.due_before,
                    &touch.slide_to,
                ],
            )
            .await?;
        Ok(match row {
            None => Validation::Unknown,
            Some(row) => validation(view_from_row(&row, scope), now, touch),
        })
    }

    async fn lookup(
        &self,
        token_hash: &TokenHash,
        now: OffsetDateTime,
    ) -> Result<Option<SessionView>, StoreError> {
        let row = self
            .query_one_opt(&self.sql.lookup, &[&token_hash.0.as_slice(), &now])
            .await?;
        Ok(row.as_ref().map(|row| view_from_row(row, Scope::Game)))
    }

    async fn select_character(
        &self,
        session_id: SessionId,
        user_id: i64,
        character_id: i64,
    ) -> Result<CharacterSelection, StoreError> {
        let row = self
            .query_one_opt(
                &self.sql.select_character,
                &[&session_id.0, &user_id, &character_id],
            )
            .await?;
        Ok(match row {
            None => CharacterSelection::CharacterNotFound,
            Some(row) if !row.get::<_, bool>(2) => CharacterSelection::SessionNotFound,
            Some(row) => CharacterSelection::Selected(CharacterRecord {
                name: row.get(0),
                world_id: row.get(1),
            }),
        })
    }

    async fn remove(&self, id: SessionId, owner: Option<i64>) -> Result<bool, StoreError> {
        let sql = format!(
            "WITH gone AS ( \
                DELETE FROM sessions WHERE id = $1 AND ($2::int8 IS NULL OR user_id = $2) \
                RETURNING id, series_id) {END_SERIES_OF_GONE}"
        );
        let row = self.query_one_opt(&sql, &[&id.0, &owner]).await?;
        Ok(row.is_some_and(|row| row.get::<_, i64>(0) > 0))
    }

    async fn remove_by_token(&self, token_hash: &TokenHash) -> Result<bool, StoreError> {
        let sql = format!(
            "WITH gone AS ( \
                DELETE FROM sessions WHERE token_hash = $1 RETURNING id, series_id) \
             {END_SERIES_OF_GONE}"
        );
        let row = self
            .query_one_opt(&sql, &[&token_hash.0.as_slice()])
            .await?;
        Ok(row.is_some_and(|row| row.get::<_, i64>(0) > 0))
    }

    async fn remove_for_user(
        &self,
        user_id: i64,
        keep: Option<SessionId>,
    ) -> Result<u64, StoreError> {
        let row = self
            .query_one_opt(
                "WITH kept AS (SELECT series_id FROM sessions WHERE id = $2), \
                 gone AS ( \
                    DELETE FROM sessions WHERE user_id = $1 AND ($2::uuid IS NULL OR id <> $2) \
                    RETURNING 1), \
                 series AS ( \
                    DELETE FROM refresh_series WHERE user_id = $1 \
                    AND id IS DISTINCT FROM (SELECT series_id FROM kept)) \
                 SELECT count(*) FROM gone",
                &[&user_id, &keep.map(|id| id.0)],
            )
            .await?;
        Ok(row.map_or(0, |row| row.get::<_, i64>(0).try_into().unwrap_or(0)))
    }

    async fn list_for_user(
        &self,
        user_id: i64,
        now: OffsetDateTime,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let rows = self
            .query(&self.sql.list_for_user, &[&user_id, &now])
            .await?;
        Ok(rows.iter().map(record_from_row).collect())
    }

    async fn count_active(
        &self,
        now: OffsetDateTime,
        active_since: Option<OffsetDateTime>,
    ) -> Result<u64, StoreError> {
        let row = self
            .query_one_opt(&self.sql.count_active, &[&now, &active_since])
            .await?;
        let count: i64 = row.map_or(0, |row| row.get(0));
        Ok(count.try_into().unwrap_or(0))
    }

    async fn clear_all(&self) -> Result<u64, StoreError> {
        self.execute(
            "WITH series AS (DELETE FROM refresh_series) DELETE FROM sessions",
            &[],
        )
        .await
    }

    async fn purge_expired(&self, now: OffsetDateTime, limit: u32) -> Result<Purged, StoreError> {
        // Each batch locks only the rows it deletes, skipping those that a concurrent
        // statement (a touch, another instance's sweeper) holds, and deletes them where the
        // scan found them (by `ctid`, no index lookup per row).
        let row = self
            .query_one_opt(
                "WITH series AS ( \
                    DELETE FROM refresh_series WHERE ctid = ANY (ARRAY( \
                        SELECT ctid FROM refresh_series \
                        WHERE expires_at <= $1 OR absolute_expires_at <= $1 \
                        LIMIT $2 FOR UPDATE SKIP LOCKED)) \
                    AND (expires_at <= $1 OR absolute_expires_at <= $1) \
                    RETURNING 1), \
                 doomed AS ( \
                    DELETE FROM sessions WHERE ctid = ANY (ARRAY( \
                        SELECT ctid FROM sessions \
                        WHERE expires_at <= $1 OR absolute_expires_at <= $1 \
                        LIMIT $2 FOR UPDATE SKIP LOCKED)) \
                    AND (expires_at <= $1 OR absolute_expires_at <= $1) \
                    RETURNING 1) \
                 SELECT (SELECT count(*) FROM doomed), (SELECT count(*) FROM series)",
                &[&now, &i64::from(limit)],
            )
            .await?;
        let count = |column: usize| -> u64 {
            let count: i64 = row.as_ref().map_or(0, |row| row.get(column));
            count.try_into().unwrap_or(0)
        };
        Ok(Purged {
            sessions: count(0),
            series: count(1),
        })
    }

    async fn refresh(&self, request: RefreshRequest) -> Result<RefreshOutcome, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let lock = tx.prepare_cached(&self.sql.refresh_lock).await?;
        let Some(series) = tx
            .query_opt(&lock, &[&request.series, &request.now])
            .await?
        else {
            return Ok(RefreshOutcome::Invalid);
        };
        let user_id: i64 = series.get(0);
        let (expired, user_ok): (bool, bool) = (series.get(5), series.get(6));
        if expired || !user_ok {
            end_series(&tx, request.series).await?;
            tx.commit().await?;
            return Ok(RefreshOutcome::Invalid);
        }
        let current: &[u8] = series.get(1);
        let previous: Option<&[u8]> = series.get(2);
        let rotation = match match_secret(
            &request.secret_hash,
            current,
            previous,
            series.get(3),
            request.grace_since,
        ) {
            SecretMatch::Reuse => {
                end_series(&tx, request.series).await?;
                tx.commit().await?;
                return Ok(RefreshOutcome::ReuseDetected);
            }
            // The current secret becomes the previous one; within the grace window the
            // previous one stays, so the rotation that superseded it remains the reference.
            SecretMatch::Current => {
                "UPDATE refresh_series SET previous_hash = secret_hash, secret_hash = $2, \
                     rotated_at = $3, last_used_at = $3, expires_at = $4 WHERE id = $1"
            }
            SecretMatch::Grace => {
                "UPDATE refresh_series SET secret_hash = $2, last_used_at = $3, expires_at = $4 \
                 WHERE id = $1"
            }
        };
        let rotate = tx.prepare_cached(rotation).await?;
        tx.execute(
            &rotate,
            &[
                &request.series,
                &request.new_secret_hash.0.as_slice(),
                &request.now,
                &request.series_expires_at,
            ],
        )
        .await?;
        let session = NewSession {
            user_id,
            ..request.session
        };
        let authenticated_at: OffsetDateTime = series.get(4);
        let record = insert_session(
            &tx,
            &session,
            authenticated_at,
            true,
            Some(request.series),
            request.max_per_user,
        )
        .await?;
        tx.commit().await?;
        Ok(RefreshOutcome::Refreshed(Box::new(record)))
    }
}

/// Ends the remember-me series of the sessions a `gone` CTE deleted, with the series' other
/// sessions, and counts what `gone` deleted.
const END_SERIES_OF_GONE: &str = ", series AS ( \
        DELETE FROM refresh_series WHERE id IN (SELECT series_id FROM gone)), \
     siblings AS ( \
        DELETE FROM sessions WHERE series_id IN (SELECT series_id FROM gone) \
        AND id NOT IN (SELECT id FROM gone)) \
     SELECT count(*) FROM gone";

async fn end_series(client: &impl GenericClient, series: Uuid) -> Result<(), StoreError> {
    let statement = client
        .prepare_cached(
            "WITH sessions_of AS (DELETE FROM sessions WHERE series_id = $1) \
             DELETE FROM refresh_series WHERE id = $1",
        )
        .await?;
    client.execute(&statement, &[&series]).await?;
    Ok(())
}

/// Inserts a session; with `max_per_user` (inside a transaction) serialises on the user and
/// removes the user's oldest sessions beyond the limit.
async fn insert_session(
    client: &impl GenericClient,
    new: &NewSession,
    authenticated_at: OffsetDateTime,
    refreshed: bool,
    series_id: Option<Uuid>,
    max_per_user: Option<u32>,
) -> Result<SessionRecord, StoreError> {
    if max_per_user.is_some() {
        // Concurrent logins of one user serialise on a per-user advisory lock, so the limit
        // holds even when they race.
        let lock = client
            .prepare_cached(
                "SELECT pg_advisory_xact_lock( \
                     hashtextextended('tower_session_auth.user:' || $1::int8::text, 0))",
            )
            .await?;
        client.execute(&lock, &[&new.user_id]).await?;
    }
    let insert = client.prepare_cached(INSERT).await?;
    let row = client
        .query_one(
            &insert,
            &[
                &new.id.0,
                &new.token_hash.0.as_slice(),
                &new.user_id,
                &new.client.client_type,
                &new.client.ip,
                &new.client.user_agent,
                &new.created_at,
                &new.expires_at,
                &new.absolute_expires_at,
                &authenticated_at,
                &refreshed,
                &series_id,
            ],
        )
        .await?;
    if let Some(max) = max_per_user {
        let prune = client
            .prepare_cached(
                "DELETE FROM sessions WHERE id IN ( \
                    SELECT id FROM sessions WHERE user_id = $1 \
                    ORDER BY id = $2 DESC, created_at DESC, id DESC OFFSET $3)",
            )
            .await?;
        let keep = i64::from(max.max(1));
        client
            .execute(&prune, &[&new.user_id, &new.id.0, &keep])
            .await?;
    }
    Ok(record_from_row(&row))
}

const INSERT: &str = "INSERT INTO sessions (id, token_hash, user_id, client_type, ip, user_agent, \
         created_at, last_activity, expires_at, absolute_expires_at, authenticated_at, \
         refreshed, series_id) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10, $11, $12) \
     RETURNING id, user_id, character_id, world_id, client_type, ip, user_agent, \
         created_at, last_activity, expires_at, absolute_expires_at, authenticated_at, \
         refreshed, series_id";
