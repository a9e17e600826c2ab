//! [`PgStore`]: sessions in PostgreSQL through a deadpool-postgres pool.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Pool};
use futures_util::TryStreamExt;
use time::OffsetDateTime;
use tokio_postgres::types::{FromSql, ToSql, Type};
use tokio_postgres::{Row, RowStream};

use uuid::Uuid;

use super::BoxError;
use super::family::{MAX_SECRETS_PER_SERIES, SecretMatch, SecretState, earliest, match_secret};
use super::tls::PgTls;
use super::{
    AdminStore, CharacterRecord, CharacterSelection, CharacterStore, NewSession, PurgePosition,
    Purged, RefreshOutcome, RefreshRequest, RememberStore, Scope, SessionRecord, SessionStore,
    SessionView, StoreError, Touch, UserRecord, Validation,
};
use crate::config::ConfigError;
use crate::token::{SessionId, TokenHash};
use crate::user_id::{UserId, UserIdType};

/// The crate's migrations, applied in order by [`PgStore::migrate`].
pub(crate) const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "0001_sessions.sql",
        include_str!("migrations/0001_sessions.sql"),
    ),
    (
        2,
        "0002_refresh_secrets.sql",
        include_str!("migrations/0002_refresh_secrets.sql"),
    ),
    (
        3,
        "0003_function_search_path.sql",
        include_str!("migrations/0003_function_search_path.sql"),
    ),
];

/// Whether the schema `$1` (quoted as in SQL) exists.
pub(crate) const SCHEMA_EXISTS: Sql =
    Sql::fixed("SELECT to_regnamespace($1) IS NOT NULL", &[Type::TEXT]);

/// Whether the table `$1` (as SQL names it) exists.
pub(crate) const TABLE_EXISTS: Sql =
    Sql::fixed("SELECT to_regclass($1) IS NOT NULL", &[Type::TEXT]);

/// The statements of [`PgStore::migrate`] besides the [`MIGRATIONS`] themselves, for the crate's
/// objects as `names` names them: the same for both stores, so that a database migrated by
/// one is migrated for the other.
pub(crate) struct MigrationSql {
    /// With a chosen schema, what makes sure it exists and is where the migrations create
    /// their objects.
    pub(crate) schema: Option<MigrationSchemaSql>,
    /// Creates the table of applied versions if it is missing.
    pub(crate) create_table: String,
    /// The versions already applied.
    pub(crate) applied: Sql,
    /// Records that the migration of version `$1` and file name `$2` was applied.
    pub(crate) record: Sql,
    /// Gives the crate's user id columns the [`AppSchema::user_id_type`], run after the
    /// migrations: a change of an empty table (a new database), or a refusal naming the
    /// table that holds rows.
    pub(crate) user_id_columns: String,
}

/// The statements of [`PgStore::migrate`] for a chosen schema.
pub(crate) struct MigrationSchemaSql {
    /// The schema as the statements write it: the parameter of [`SCHEMA_EXISTS`].
    pub(crate) quoted: String,
    /// Creates the schema.
    pub(crate) create: String,
    /// Sets the transaction's `search_path` to the schema.
    pub(crate) search_path: String,
}

impl MigrationSql {
    /// Takes the migration lock for the rest of the transaction: the first statement.
    pub(crate) const LOCK: &str =
        "SELECT pg_advisory_xact_lock(hashtextextended('tower_session_auth.migrate', 0))";

    /// The error of the step [`user_id_columns`](Self::user_id_columns): a
    /// [`StoreError::Migration`] of version 0.
    pub(crate) fn user_id_columns_failed(source: impl Into<BoxError>) -> StoreError {
        StoreError::Migration {
            version: 0,
            name: "user id columns (AppSchema::user_id_type)",
            source: source.into(),
        }
    }

    pub(crate) fn new(names: &Names, user_id_type: UserIdType) -> Self {
        let migrations = names.object("tower_session_auth_migrations");
        Self {
            schema: names.quoted_schema().map(|quoted| MigrationSchemaSql {
                create: format!("CREATE SCHEMA IF NOT EXISTS {quoted}"),
                search_path: format!("SET LOCAL search_path = {quoted}, pg_temp"),
                quoted,
            }),
            create_table: format!(
                "CREATE TABLE IF NOT EXISTS {migrations} ( \
                     version int PRIMARY KEY, name text NOT NULL, \
                     applied_at timestamptz NOT NULL DEFAULT now())"
            ),
            applied: Sql::built(format!("SELECT version FROM {migrations}"), &[]),
            record: Sql::built(
                format!("INSERT INTO {migrations} (version, name) VALUES ($1, $2)"),
                &[Type::INT4, Type::TEXT],
            ),
            // The migrations create the columns `bigint`. A type is changed only while the
            // table is empty (a rewrite under an exclusive lock, and no cast from `bigint`
            // to `uuid`): a populated table is the operator's to convert. The table is locked
            // before it is found empty, so no row committed meanwhile is converted; the
            // triggers on the column (the invalidation trigger on `sessions`), which forbid
            // the change, are dropped and created again as they were.
            user_id_columns: format!(
                "DO $tsa$ DECLARE \
                    t regclass; found regtype; column_number int2; has_rows boolean; \
                    trigger_name name; definition text; triggers text[]; \
                    wanted regtype := '{wanted}'; \
                 BEGIN \
                    FOREACH t IN ARRAY ARRAY['{sessions}', '{series}']::regclass[] LOOP \
                        SELECT atttypid::regtype, attnum INTO found, column_number \
                        FROM pg_attribute \
                        WHERE attrelid = t AND attname = 'user_id' AND NOT attisdropped; \
                        CONTINUE WHEN found = wanted; \
                        EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', t); \
                        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', t) INTO has_rows; \
                        IF has_rows THEN \
                            RAISE EXCEPTION '%.user_id is %, not % as the store is configured, \
                                and the table holds rows: convert the column, or empty the \
                                table, before migrating', t, found, wanted; \
                        END IF; \
                        triggers := '{{}}'; \
                        FOR trigger_name, definition IN \
                            SELECT g.tgname, pg_get_triggerdef(g.oid) FROM pg_trigger g \
                            WHERE g.tgrelid = t AND NOT g.tgisinternal AND g.oid IN ( \
                                SELECT objid FROM pg_depend \
                                WHERE classid = 'pg_trigger'::regclass \
                                AND refclassid = 'pg_class'::regclass AND refobjid = t \
                                AND refobjsubid = column_number) \
                        LOOP \
                            triggers := triggers || definition; \
                            EXECUTE format('DROP TRIGGER %I ON %s', trigger_name, t); \
                        END LOOP; \
                        EXECUTE format('ALTER TABLE %s ALTER COLUMN user_id TYPE %s \
                            USING user_id::text::%s', t, wanted, wanted); \
                        FOREACH definition IN ARRAY triggers LOOP \
                            EXECUTE definition; \
                        END LOOP; \
                    END LOOP; \
                 END $tsa$",
                wanted = user_id_type.sql(),
                sessions = names.object("sessions"),
                series = names.object("refresh_series"),
            ),
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::backend(error)
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        Self::backend(error)
    }
}

/// Where the application keeps its users and characters. The validating statement joins them.
///
/// The names are inserted into SQL as identifiers, so they must be plain (letters, digits,
/// `_`, optionally schema-qualified with `.`); [`PgStore::with_schema`] refuses others
/// ([`AppSchema::validate`]). The defaults:
/// `users(id, username, role, is_active)` and `characters(id, user_id, name, world_id)`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AppSchema {
    /// Users table.
    pub users_table: String,
    /// Its primary key, of type [`user_id_type`](Self::user_id_type).
    pub user_id: String,
    /// The type of the users' key (default `bigint`), which the crate's own `user_id`
    /// columns take when [`PgStore::migrate`] creates them, and which
    /// [`PgStore::check_schema`] checks.
    pub user_id_type: UserIdType,
    /// Login name (text).
    pub username: String,
    /// Role name (text, may be null).
    pub role: String,
    /// Active flag (boolean).
    pub is_active: String,
    /// Characters table.
    pub characters_table: String,
    /// Its primary key (`bigint`).
    pub character_id: String,
    /// Owner (of type [`user_id_type`](Self::user_id_type), references the users table).
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
            user_id_type: UserIdType::default(),
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
    /// Checks that every name is a plain SQL identifier (letters, digits, `_`, not starting
    /// with a digit, optionally schema-qualified with `.`): the names are inserted into SQL.
    ///
    /// ```
    /// use tower_session_auth::store::AppSchema;
    ///
    /// let mut app = AppSchema::default();
    /// app.users_table = "auth.accounts".into();
    /// assert!(app.validate().is_ok());
    /// app.username = "name; DROP TABLE users".into();
    /// assert_eq!(app.validate().unwrap_err().field, "AppSchema.username");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        let names = [
            ("AppSchema.users_table", &self.users_table),
            ("AppSchema.user_id", &self.user_id),
            ("AppSchema.username", &self.username),
            ("AppSchema.role", &self.role),
            ("AppSchema.is_active", &self.is_active),
            ("AppSchema.characters_table", &self.characters_table),
            ("AppSchema.character_id", &self.character_id),
            ("AppSchema.character_user_id", &self.character_user_id),
            ("AppSchema.character_name", &self.character_name),
            ("AppSchema.character_world_id", &self.character_world_id),
        ];
        for (field, name) in names {
            let plain = !name.is_empty()
                && name.split('.').all(|part| {
                    !part.is_empty()
                        && !part.starts_with(|c: char| c.is_ascii_digit())
                        && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                });
            if !plain {
                return Err(ConfigError::new(
                    field,
                    format!("{name:?} is not a plain SQL identifier"),
                ));
            }
        }
        Ok(())
    }
}

/// Where the crate's own objects live (its tables `sessions`, `refresh_series`,
/// `refresh_secrets` and `tower_session_auth_migrations`, and its functions): in the schema
/// chosen with [`PgStore::tables_schema`], or, without one, wherever the connection's
/// `search_path` finds them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Names {
    /// The chosen schema: a lower-case identifier ([`check_tables_schema`]).
    pub(crate) schema: Option<String>,
}

impl Names {
    /// The chosen schema as the statements write it: quoted, so that a keyword such as `user`
    /// is a schema name too.
    pub(crate) fn quoted_schema(&self) -> Option<String> {
        self.schema.as_ref().map(|schema| format!("\"{schema}\""))
    }

    /// The crate's table or function `name` as the statements write it: qualified with the
    /// chosen schema.
    pub(crate) fn object(&self, name: &str) -> String {
        match self.quoted_schema() {
            Some(schema) => format!("{schema}.{name}"),
            None => name.to_owned(),
        }
    }

    /// The crate's table or function `name` as messages show it.
    pub(crate) fn shown(&self, name: &str) -> String {
        match &self.schema {
            Some(schema) => format!("{schema}.{name}"),
            None => name.to_owned(),
        }
    }

    /// What `check_schema` reports when the chosen schema does not exist; `migrate` names the
    /// store's migration method.
    pub(crate) fn schema_not_found(&self, migrate: &str) -> String {
        let schema = self.schema.as_deref().unwrap_or_default();
        format!("schema {schema} not found (run {migrate})")
    }

    /// What `check_schema` reports when the crate's table `table` does not exist; `migrate`
    /// names the store's migration method.
    pub(crate) fn table_not_found(&self, table: &str, migrate: &str) -> String {
        format!("table {} not found (run {migrate})", self.shown(table))
    }

    /// The `LISTEN/NOTIFY` channel of the store's invalidations: [`CHANNEL`], and with a
    /// chosen schema `tower_session_auth_<schema>`, so that deployments in other schemas of the
    /// database do not hear each other.
    pub(crate) fn channel(&self) -> String {
        match &self.schema {
            Some(schema) => identifier(format!("{CHANNEL}_{schema}")),
            None => CHANNEL.to_owned(),
        }
    }

    /// The name of the crate's trigger `name` on an application's table: with a chosen
    /// schema it ends with the schema, so that deployments in other schemas that share the
    /// application's tables each keep their own trigger.
    fn app_trigger(&self, name: &str) -> String {
        match &self.schema {
            Some(schema) => identifier(format!("{name}_{schema}")),
            None => name.to_owned(),
        }
    }

    /// The text of the crate's advisory lock `what` (hashed into the lock's key): with a chosen
    /// schema it names the schema, so that deployments in other schemas do not wait on each
    /// other.
    fn lock(&self, what: &str) -> String {
        match &self.schema {
            Some(schema) => format!("tower_session_auth.{schema}.{what}"),
            None => format!("tower_session_auth.{what}"),
        }
    }
}

/// PostgreSQL's longest identifier, in bytes; a longer one is truncated.
const MAX_IDENTIFIER: usize = 63;

/// `name` (ASCII) as an identifier of at most [`MAX_IDENTIFIER`] bytes: as it is if it fits,
/// else cut, with a hash of the whole name at the end, so that two long names that share
/// their start stay apart (PostgreSQL would cut both to the same name, and `pg_notify`
/// refuses a longer channel name outright). The hash is FNV-1a, computed here, so the name
/// is the same for every build.
fn identifier(name: String) -> String {
    if name.len() <= MAX_IDENTIFIER {
        return name;
    }
    let hash = name.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    format!("{}_{hash:08x}", &name[..MAX_IDENTIFIER - 9])
}

/// Checks the schema of [`PgStore::tables_schema`]: lower-case letters, digits and `_`, not
/// starting with a digit, at most 63 bytes, not `pg_`-prefixed (PostgreSQL reserves those).
/// Lower case only, because PostgreSQL folds unquoted names: `Auth` would be a schema that
/// `Auth.sessions` in hand-written SQL does not find.
pub(crate) fn check_tables_schema(schema: &str) -> Result<(), ConfigError> {
    let problem = if schema.is_empty() {
        Some("the schema name is empty".to_owned())
    } else if schema.len() > MAX_IDENTIFIER {
        Some(format!("{schema:?} is longer than {MAX_IDENTIFIER} bytes"))
    } else if schema.starts_with(|c: char| c.is_ascii_digit())
        || !schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        Some(format!(
            "{schema:?} is not a plain lower-case SQL identifier (a-z, 0-9, _)"
        ))
    } else if schema.starts_with("pg_") {
        Some(format!("{schema:?}: names starting with pg_ are reserved"))
    } else {
        None
    };
    match problem {
        Some(problem) => Err(ConfigError::new("PgStore::tables_schema", problem)),
        None => Ok(()),
    }
}

/// The session columns every statement returns, in this order: [`record_from_row`] finds
/// each at its place here, and [`view_from_row`] reads the user's and character's after them.
pub(crate) const SESSION_COLUMNS: &[&str] = &[
    "id",
    "user_id",
    "character_id",
    "world_id",
    "client_type",
    "ip",
    "user_agent",
    "created_at",
    "last_activity",
    "expires_at",
    "absolute_expires_at",
    "authenticated_at",
    "refreshed",
    "series_id",
];

/// [`SESSION_COLUMNS`] of the table aliased `alias`, as a select list.
fn session_columns(alias: &str) -> String {
    SESSION_COLUMNS
        .iter()
        .map(|column| format!("{alias}.{column}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where `name` is in [`SESSION_COLUMNS`]. Evaluated in a `const` block, so a name that is not
/// there fails to compile.
pub(crate) const fn session_column(name: &str) -> usize {
    let mut index = 0;
    while index < SESSION_COLUMNS.len() {
        if same(SESSION_COLUMNS[index], name) {
            return index;
        }
        index += 1;
    }
    panic!("not a session column")
}

/// `a == b`, in a `const fn`.
const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut at = 0;
    while at < a.len() {
        if a[at] != b[at] {
            return false;
        }
        at += 1;
    }
    true
}

/// A condition true for the rows of `alias` (sessions or remember-me series, whose
/// `expires_at` and `absolute_expires_at` are `NULL` for never) that have expired at `now`:
/// their idle or absolute expiry is reached. Otherwise it is false, or NULL when an expiry is
/// NULL, hence [`live`]. The expiry rule in SQL, as [`SessionRecord::is_expired`] is in Rust.
fn expired(alias: &str, now: &str) -> String {
    format!("({alias}.expires_at <= {now} OR {alias}.absolute_expires_at <= {now})")
}

/// A condition true for the rows of `alias` that are still live at `now`: not [`expired`].
fn live(alias: &str, now: &str) -> String {
    format!("{} IS NOT TRUE", expired(alias, now))
}

/// The call that takes the advisory lock of the user `user_id` (an SQL expression) for the rest
/// of the transaction. One key for every path that takes it; see [`PgStore::lock_user`].
fn user_lock(names: &Names, user_id: &str) -> String {
    format!(
        "pg_advisory_xact_lock(hashtextextended('{}:' || {user_id}::text, 0))",
        names.lock("user")
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
        user_id_type: _,
    } = app;
    let mut columns = format!(
        "{}, u.{username}, u.{role}, u.{is_active}, u.{user_id}",
        session_columns("s")
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
fn validate_sql(app: &AppSchema, names: &Names, scope: Scope) -> String {
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
                CASE WHEN {expired} \
                     THEN {expire}(s.id, $2) \
                     WHEN s.last_activity <= $3{world_due} \
                     THEN {touch}(s.id, $2, $3, $4, s.character_id, {new_world}) \
                END \
         FROM {sessions} s {joins} WHERE s.token_hash = $1",
        expired = expired("s", "$2"),
        expire = names.object("tower_session_auth_expire"),
        touch = names.object("tower_session_auth_touch"),
        sessions = names.object("sessions"),
    )
}

/// The statement that ends the session `condition` (on `sessions`) names: it deletes the
/// session's series, if any, and returns the session's id, user and series (see
/// [`PgStore::end_session`]).
fn end_session_sql(names: &Names, condition: &str) -> String {
    format!(
        "WITH target AS (SELECT id, user_id, series_id FROM {sessions} WHERE {condition}), \
         ended AS (DELETE FROM {series} WHERE id IN (SELECT series_id FROM target)) \
         SELECT id, user_id, series_id FROM target",
        sessions = names.object("sessions"),
        series = names.object("refresh_series"),
    )
}

/// One statement of the store: its SQL and the types of its parameters, `$1` first.
///
/// The types are declared rather than inferred by the server, so that a statement can be sent
/// as an unnamed statement in the round trip that runs it (see
/// [`PgStore::prepared_statements`]); they are the SQL types of the Rust values the store
/// binds, and the named prepared statements declare the same ones, so that both modes run the
/// same statement.
pub(crate) struct Sql {
    pub(crate) text: Cow<'static, str>,
    params: Cow<'static, [Type]>,
}

impl Sql {
    const fn fixed(text: &'static str, params: &'static [Type]) -> Self {
        Self {
            text: Cow::Borrowed(text),
            params: Cow::Borrowed(params),
        }
    }

    fn built(text: String, params: &[Type]) -> Self {
        Self {
            text: Cow::Owned(text),
            params: Cow::Owned(params.to_vec()),
        }
    }
}

/// The SQL of every statement the store's operations run, with the types of its parameters,
/// built once per store from the [`AppSchema`] and the [`Names`] of the crate's objects and,
/// unless [`prepared_statements`](PgStore::prepared_statements) is off, prepared once per
/// connection.
pub(crate) struct Statements {
    /// Inserts a session, returning [`SESSION_COLUMNS`]: `$1` id, `$2` token hash, `$3` user,
    /// `$4`–`$6` client type, address and User-Agent, `$7` creation (and last activity), `$8`
    /// idle and `$9` absolute expiry, `$10` authentication, `$11` refreshed, `$12` series.
    pub(crate) insert_session: Sql,
    /// The ids of the user `$1`'s oldest sessions beyond the `$3` most recent (the new
    /// session `$2` counting as the most recent), and of their series but `$4`, which it
    /// locks in id order.
    pub(crate) doomed_sessions: Sql,
    /// Deletes the sessions `$1` and the series `$2` with their sessions.
    pub(crate) prune_sessions: Sql,
    /// Starts the series `$1` of the user `$2` at `$4` with the secret `$3`, idle expiry `$5`
    /// and absolute expiry `$6`.
    pub(crate) insert_series: Sql,
    /// The validating statements (see [`validate_sql`]), at [`Scope::User`] and at
    /// [`Scope::Game`].
    pub(crate) validate_user: Sql,
    pub(crate) validate_game: Sql,
    /// The live session of token hash `$1` at `$2`, as a [`Scope::Game`] view.
    pub(crate) lookup: Sql,
    /// The user `$1`'s sessions live at `$2`, newest first.
    pub(crate) list_for_user: Sql,
    /// Moves the session `$1`'s `authenticated_at` to `$2` if it is live at `$2`.
    pub(crate) reauthenticate: Sql,
    /// Deletes up to `$2` expired series and up to `$2` expired sessions at `$1`, reading the
    /// sessions from heap page `$3` and the series from page `$4` on, returning how many of
    /// each and the pages where the next batch starts.
    pub(crate) purge_expired: Sql,
    /// Takes the user `$1`'s advisory lock.
    pub(crate) lock_user: Sql,
    /// [`end_session_sql`] of the session `$1`, if the user `$2` (or anyone, when NULL) owns it.
    pub(crate) end_by_id: Sql,
    /// [`end_session_sql`] of the session of token hash `$1`.
    pub(crate) end_by_token: Sql,
    /// Deletes the session `$1` and the sessions of its series `$2`.
    pub(crate) delete_ended: Sql,
    /// Ends the user `$1`'s series but the one of the session `$2`, in id order, returning
    /// that series.
    pub(crate) end_user_series: Sql,
    /// Deletes the user `$1`'s sessions, but, with a kept session `$2`, that one and the
    /// sessions of its series `$3`.
    pub(crate) delete_user_sessions: Sql,
    /// Deletes the series `$1` and its sessions.
    pub(crate) delete_series: Sql,
    /// Deletes the series `$1` if it issued the secret `$2`, returning its user.
    pub(crate) end_series: Sql,
    /// Deletes the sessions of the series `$1`.
    pub(crate) delete_series_sessions: Sql,
    /// Takes the advisory lock of the user of the series `$1`, if it issued the secret `$2`.
    pub(crate) refresh_lock_user: Sql,
    /// Locks the series `$1` if it issued the secret `$3`, returning its user, creation and
    /// absolute expiry, whether it has expired at `$2`, and whether its user is active.
    pub(crate) refresh_lock: Sql,
    /// What the series `$1` remembers of the secret `$2`: when it was used, whether spent.
    pub(crate) refresh_secret: Sql,
    /// Exchanges the secret `$2` of the series `$1` at `$3` for the secret `$4`.
    pub(crate) refresh_exchange: Sql,
    /// Binds the session `$1` of the user `$2` to the user's character `$3`.
    pub(crate) select_character: Sql,
    /// Counts the sessions live at `$1` and active since `$2` (or any, when NULL).
    pub(crate) count_active: Sql,
    /// Deletes every session and series.
    pub(crate) clear_all: Sql,
}

impl Statements {
    pub(crate) fn new(app: &AppSchema, names: &Names) -> Self {
        let AppSchema {
            users_table,
            user_id,
            user_id_type,
            is_active,
            characters_table,
            character_id,
            character_user_id,
            character_name,
            character_world_id,
            ..
        } = app;
        // The type of the user id parameters, as declared and as cast to.
        let (id_type, id_sql) = (user_id_type.pg_type(), user_id_type.sql());
        let sessions = names.object("sessions");
        let refresh_series = names.object("refresh_series");
        let refresh_secrets = names.object("refresh_secrets");
        let insert_session = format!(
            "INSERT INTO {sessions} AS s (id, token_hash, user_id, client_type, ip, user_agent, \
                 created_at, last_activity, expires_at, absolute_expires_at, authenticated_at, \
                 refreshed, series_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10, $11, $12) \
             RETURNING {}",
            session_columns("s")
        );
        let (columns, joins) = view_select(app, Scope::Game);
        let lookup = format!(
            "SELECT {columns} FROM {sessions} s {joins} WHERE s.token_hash = $1 AND {}",
            live("s", "$2")
        );
        let list_for_user = format!(
            "SELECT {} FROM {sessions} s WHERE s.user_id = $1 AND {} \
             ORDER BY s.created_at DESC, s.id",
            session_columns("s"),
            live("s", "$2")
        );
        // Only `authenticated_at` changes, so the row keeps its token, series and expiry; the
        // column is unindexed, so this is a HOT update like a touch.
        let reauthenticate = format!(
            "UPDATE {sessions} s SET authenticated_at = GREATEST(s.authenticated_at, $2) \
             WHERE s.id = $1 AND {}",
            live("s", "$2")
        );
        // Each batch reads each table from the heap page where the batch before stopped (a TID
        // range scan, so the pages earlier batches emptied are not read again), locks only the
        // rows it deletes, skipping those that a concurrent statement (a touch, another
        // instance's sweeper) holds, deletes them where the scan found them (by `ctid`, no
        // index lookup per row), and returns the page of the last one.
        let purge_table = |table: &str, alias: &str, from: &str| {
            let condition = expired(alias, "$1");
            format!(
                "DELETE FROM {table} {alias} WHERE {alias}.ctid = ANY (ARRAY( \
                    SELECT ctid FROM {table} {alias} \
                    WHERE ctid >= format('(%s,0)', {from}::int8)::tid AND {condition} \
                    LIMIT $2 FOR UPDATE SKIP LOCKED)) \
                 AND {condition} RETURNING {alias}.ctid"
            )
        };
        let last_page = |cte: &str, from: &str| {
            format!("COALESCE((SELECT max((ctid::text::point)[0]) FROM {cte})::int8, {from})")
        };
        let purge_expired = format!(
            "WITH series AS ({}), doomed AS ({}) \
             SELECT (SELECT count(*) FROM doomed), (SELECT count(*) FROM series), {}, {}",
            purge_table(&refresh_series, "r", "$4"),
            purge_table(&sessions, "s", "$3"),
            last_page("doomed", "$3"),
            last_page("series", "$4"),
        );
        let refresh_lock_user = format!(
            "SELECT {} FROM {refresh_series} WHERE id = $1 AND EXISTS (SELECT 1 FROM {refresh_secrets} \
                WHERE series_id = $1 AND secret_hash = $2)",
            user_lock(names, "user_id")
        );
        // The series row is locked for the rest of the refresh transaction, so concurrent
        // refreshes of one series are decided one after the other, and a revocation that
        // ends the series waits for a refresh in flight (and sees its session). A secret the
        // series does not hold (a guess for a public series id) takes no lock at all.
        let refresh_lock = format!(
            "SELECT r.user_id, r.created_at, r.absolute_expires_at, {} IS TRUE, \
                    u.{user_id} IS NOT NULL AND COALESCE(u.{is_active}, false) \
             FROM {refresh_series} r LEFT JOIN {users_table} u ON u.{user_id} = r.user_id \
             WHERE r.id = $1 AND EXISTS (SELECT 1 FROM {refresh_secrets} k \
                WHERE k.series_id = $1 AND k.secret_hash = $3) \
             FOR UPDATE OF r",
            expired("r", "$2")
        );
        let select_character = format!(
            "WITH c AS ( \
                SELECT {character_name} AS name, {character_world_id} AS world_id \
                FROM {characters_table} WHERE {character_id} = $3 AND {character_user_id} = $2 \
             ), bound AS ( \
                UPDATE {sessions} s SET character_id = $3, world_id = c.world_id FROM c \
                WHERE s.id = $1 AND s.user_id = $2 RETURNING 1 \
             ) \
             SELECT c.name, c.world_id, EXISTS (SELECT 1 FROM bound) FROM c"
        );
        let count_active = format!(
            "SELECT count(*) FROM {sessions} s WHERE {} \
             AND ($2::timestamptz IS NULL OR s.last_activity >= $2)",
            live("s", "$1")
        );
        Self {
            insert_session: Sql::built(
                insert_session,
                &[
                    Type::UUID,
                    Type::BYTEA,
                    id_type.clone(),
                    Type::TEXT,
                    Type::INET,
                    Type::TEXT,
                    Type::TIMESTAMPTZ,
                    Type::TIMESTAMPTZ,
                    Type::TIMESTAMPTZ,
                    Type::TIMESTAMPTZ,
                    Type::BOOL,
                    Type::UUID,
                ],
            ),
            doomed_sessions: Sql::built(
                format!(
                    "WITH doomed AS ( \
                    SELECT id, series_id FROM {sessions} WHERE user_id = $1 \
                    ORDER BY id = $2 DESC, created_at DESC, id DESC OFFSET $3), \
                 series AS ( \
                    SELECT id FROM {refresh_series} \
                    WHERE id IN (SELECT series_id FROM doomed) AND id IS DISTINCT FROM $4 \
                    ORDER BY id FOR UPDATE) \
                 SELECT ARRAY(SELECT id FROM doomed), ARRAY(SELECT id FROM series)"
                ),
                &[id_type.clone(), Type::UUID, Type::INT8, Type::UUID],
            ),
            prune_sessions: Sql::built(
                format!(
                    "WITH ended AS (DELETE FROM {refresh_series} WHERE id = ANY($2)) \
                 DELETE FROM {sessions} WHERE id = ANY($1) OR series_id = ANY($2)"
                ),
                &[Type::UUID_ARRAY, Type::UUID_ARRAY],
            ),
            insert_series: Sql::built(
                format!(
                    "WITH series AS ( \
                    INSERT INTO {refresh_series} (id, user_id, created_at, last_used_at, \
                        expires_at, absolute_expires_at) \
                    VALUES ($1, $2, $4, $4, $5, $6)) \
                 INSERT INTO {refresh_secrets} (series_id, secret_hash) VALUES ($1, $3)"
                ),
                &[
                    Type::UUID,
                    id_type.clone(),
                    Type::BYTEA,
                    Type::TIMESTAMPTZ,
                    Type::TIMESTAMPTZ,
                    Type::TIMESTAMPTZ,
                ],
            ),
            validate_user: Sql::built(
                validate_sql(app, names, Scope::User),
                &[
                    Type::BYTEA,
                    Type::TIMESTAMPTZ,
                    Type::TIMESTAMPTZ,
                    Type::TIMESTAMPTZ,
                ],
            ),
            validate_game: Sql::built(
                validate_sql(app, names, Scope::Game),
                &[
                    Type::BYTEA,
                    Type::TIMESTAMPTZ,
                    Type::TIMESTAMPTZ,
                    Type::TIMESTAMPTZ,
                ],
            ),
            lookup: Sql::built(lookup, &[Type::BYTEA, Type::TIMESTAMPTZ]),
            list_for_user: Sql::built(list_for_user, &[id_type.clone(), Type::TIMESTAMPTZ]),
            reauthenticate: Sql::built(reauthenticate, &[Type::UUID, Type::TIMESTAMPTZ]),
            purge_expired: Sql::built(
                purge_expired,
                &[Type::TIMESTAMPTZ, Type::INT8, Type::INT8, Type::INT8],
            ),
            lock_user: Sql::built(
                format!("SELECT {}", user_lock(names, &format!("$1::{id_sql}"))),
                std::slice::from_ref(&id_type),
            ),
            end_by_id: Sql::built(
                end_session_sql(
                    names,
                    &format!("id = $1 AND ($2::{id_sql} IS NULL OR user_id = $2)"),
                ),
                &[Type::UUID, id_type.clone()],
            ),
            end_by_token: Sql::built(end_session_sql(names, "token_hash = $1"), &[Type::BYTEA]),
            delete_ended: Sql::built(
                format!("DELETE FROM {sessions} WHERE id = $1 OR series_id = $2"),
                &[Type::UUID, Type::UUID],
            ),
            end_user_series: Sql::built(
                format!(
                    "WITH kept AS (SELECT series_id FROM {sessions} WHERE id = $2), \
                 doomed AS ( \
                    SELECT id FROM {refresh_series} WHERE user_id = $1 \
                    AND id IS DISTINCT FROM (SELECT series_id FROM kept) ORDER BY id FOR UPDATE), \
                 ended AS (DELETE FROM {refresh_series} WHERE id IN (SELECT id FROM doomed)) \
                 SELECT (SELECT series_id FROM kept)"
                ),
                &[id_type.clone(), Type::UUID],
            ),
            delete_user_sessions: Sql::built(
                format!(
                    "DELETE FROM {sessions} WHERE user_id = $1 \
                 AND ($2::uuid IS NULL OR (id <> $2 \
                      AND ($3::uuid IS NULL OR series_id IS DISTINCT FROM $3)))"
                ),
                &[id_type.clone(), Type::UUID, Type::UUID],
            ),
            delete_series: Sql::built(
                format!(
                    "WITH sessions_of AS (DELETE FROM {sessions} WHERE series_id = $1) \
                 DELETE FROM {refresh_series} WHERE id = $1"
                ),
                &[Type::UUID],
            ),
            // Any secret the series issued proves the caller held it; a forged one ends
            // nothing.
            end_series: Sql::built(
                format!(
                    "DELETE FROM {refresh_series} WHERE id = $1 AND EXISTS ( \
                    SELECT 1 FROM {refresh_secrets} WHERE series_id = $1 AND secret_hash = $2) \
                 RETURNING user_id"
                ),
                &[Type::UUID, Type::BYTEA],
            ),
            delete_series_sessions: Sql::built(
                format!("DELETE FROM {sessions} WHERE series_id = $1"),
                &[Type::UUID],
            ),
            refresh_lock_user: Sql::built(refresh_lock_user, &[Type::UUID, Type::BYTEA]),
            refresh_lock: Sql::built(refresh_lock, &[Type::UUID, Type::TIMESTAMPTZ, Type::BYTEA]),
            refresh_secret: Sql::built(
                format!(
                    "SELECT used_at, spent FROM {refresh_secrets} \
                 WHERE series_id = $1 AND secret_hash = $2"
                ),
                &[Type::UUID, Type::BYTEA],
            ),
            // Marks the presented secret used (or spent), issues the new one, forgets the
            // oldest beyond the bound (keeping `$7` others), and ends the series' earlier
            // sessions (one device, one session), but for those created since `$6` (by the
            // first use of a secret exchanged again in the grace window); `$5` is the
            // series' new idle expiry.
            refresh_exchange: Sql::built(
                format!(
                    "WITH used AS ( \
                    UPDATE {refresh_secrets} SET used_at = COALESCE(used_at, $3), \
                        spent = used_at IS NOT NULL \
                    WHERE series_id = $1 AND secret_hash = $2), \
                 issued AS (INSERT INTO {refresh_secrets} (series_id, secret_hash) VALUES ($1, $4)), \
                 series AS (UPDATE {refresh_series} SET last_used_at = $3, expires_at = $5 \
                    WHERE id = $1), \
                 earlier AS (DELETE FROM {sessions} WHERE series_id = $1 \
                    AND ($6::timestamptz IS NULL OR created_at < $6)) \
                 DELETE FROM {refresh_secrets} WHERE series_id = $1 AND secret_hash <> $2 \
                 AND issued <= (SELECT issued FROM {refresh_secrets} WHERE series_id = $1 \
                    ORDER BY issued DESC OFFSET $7 LIMIT 1)"
                ),
                &[
                    Type::UUID,
                    Type::BYTEA,
                    Type::TIMESTAMPTZ,
                    Type::BYTEA,
                    Type::TIMESTAMPTZ,
                    Type::TIMESTAMPTZ,
                    Type::INT8,
                ],
            ),
            select_character: Sql::built(select_character, &[Type::UUID, id_type, Type::INT8]),
            count_active: Sql::built(count_active, &[Type::TIMESTAMPTZ, Type::TIMESTAMPTZ]),
            clear_all: Sql::built(
                format!("WITH series AS (DELETE FROM {refresh_series}) DELETE FROM {sessions}"),
                &[],
            ),
        }
    }
}

/// Sessions in PostgreSQL, through a [deadpool-postgres](deadpool_postgres) pool.
///
/// Every statement is prepared once per connection (`prepare_cached`), or, behind a
/// transaction pooler such as PgBouncer, sent unnamed in the round trip that runs it (see
/// [`prepared_statements`](Self::prepared_statements)). Validation is a single
/// statement; see [`SessionStore::validate`].
///
/// # Where the crate's tables live
///
/// The crate owns the tables `sessions`, `refresh_series`, `refresh_secrets` and
/// `tower_session_auth_migrations`, the functions `tower_session_auth_touch` and
/// `tower_session_auth_expire`, and the trigger functions of
/// [`install_invalidation_triggers`](Self::install_invalidation_triggers). By default they live
/// wherever the connection's `search_path` puts them (usually `public`).
/// [`tables_schema`](Self::tables_schema) puts them in a schema of the application's choosing
/// instead, so an application that already has a `sessions` table of its own can adopt the
/// crate: every statement names the crate's objects with that schema, whatever the
/// connection's `search_path`, while the application's tables are still found as the
/// [`AppSchema`] names them. A schema rather than a name prefix, because it is PostgreSQL's
/// own namespace: the crate's objects stay together under their documented names, can be
/// granted, dumped (`pg_dump -n auth`) and dropped as one, and no name of the application's
/// can collide with them.
///
/// A store error (database down, pool timeout, a statement beyond
/// [`statement_timeout`](PgStore::statement_timeout), a column it cannot decode) surfaces as
/// [`StoreError`]; the extractors turn it into `500 Session store unavailable`, bounded by the
/// pool's wait and create timeouts plus the statement timeout. Call
/// [`check_schema`](PgStore::check_schema) at start-up to catch a mismatched application
/// schema before any request does. Connections are
/// recycled with deadpool's default [`RecyclingMethod::Fast`](deadpool_postgres::RecyclingMethod)
/// (no statement of its own): a connection whose socket closed (for example after
/// `pg_terminate_backend`, or a primary's crash) is discarded when it returns to the pool, as is
/// one whose statement timed out and one on which a write failed because the server is
/// read-only (SQLSTATE 25006), so the store recovers on its own.
///
/// # Failover
///
/// With a multi-host connection string and `target_session_attrs=read-write` (see
/// [`connect`](Self::connect)), new connections skip servers that are down or read-only, so
/// after a standby is promoted the store finds it without a restart; requests in flight get
/// `500 Session store unavailable`. With asynchronous replication a failover can lose what the
/// old primary committed last: logins, refreshes and touches (harmless: a new login, an idle
/// expiry slightly earlier) but also revocations, which would make revoked sessions valid
/// again. [`durable_revocations`](Self::durable_revocations) makes revocations wait for the
/// synchronous standby, so a failover cannot lose one that was acknowledged.
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
    app: Arc<AppSchema>,
    names: Arc<Names>,
    statement_timeout: Duration,
    durable_revocations: bool,
    tls: PgTls,
    prepared_statements: bool,
}

/// Runs `$body` (an expression of type `Result<T, StoreError>` that uses `$client`) on a
/// connection checked out of the store's pool, within the store's statement timeout. On a
/// timeout the connection is detached from the pool (so it is never reused: a silent network
/// would hang every later statement on it), the server is asked to cancel the statement, and
/// the result is [`StoreError::Timeout`].
macro_rules! bounded {
    ($store:expr, |$client:ident| $body:expr) => {{
        let store: &PgStore = $store;
        #[allow(unused_mut)]
        let mut $client = store.pool.get().await?;
        let outcome = tokio::time::timeout(store.statement_timeout, async { $body }).await;
        match outcome {
            Ok(Err(error)) if is_read_only(&error) => Err(store.discard_read_only($client, error)),
            Ok(result) => result,
            Err(_) => Err(store.discard($client)),
        }
    }};
}

/// The `LISTEN/NOTIFY` channel of session invalidations (without a
/// [`tables_schema`](PgStore::tables_schema); see [`Names::channel`]).
const CHANNEL: &str = "tower_session_auth";

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// The default [`statement_timeout`](Self::statement_timeout).
    pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

    /// A store on an existing pool, with the default [`AppSchema`].
    pub fn new(pool: Pool) -> Self {
        Self::with_valid_schema(pool, AppSchema::default())
    }

    /// A store on an existing pool, reading users and characters from `app`, or the
    /// [`ConfigError`] of a name that is not a plain SQL identifier ([`AppSchema::validate`]).
    pub fn with_schema(pool: Pool, app: AppSchema) -> Result<Self, ConfigError> {
        app.validate()?;
        Ok(Self::with_valid_schema(pool, app))
    }

    /// A store on `pool`, reading users and characters from `app`, whose names are valid.
    fn with_valid_schema(pool: Pool, app: AppSchema) -> Self {
        let names = Names::default();
        Self {
            pool,
            sql: Arc::new(Statements::new(&app, &names)),
            app: Arc::new(app),
            names: Arc::new(names),
            statement_timeout: Self::DEFAULT_STATEMENT_TIMEOUT,
            durable_revocations: false,
            tls: PgTls::default(),
            prepared_statements: true,
        }
    }

    /// Puts the crate's own tables and functions in `schema` (default: none, the connection's
    /// `search_path`), or the [`ConfigError`] of a name that is not a plain lower-case SQL
    /// identifier (letters `a`–`z`, digits and `_`, not starting with a digit, at most 63
    /// bytes, not starting with `pg_`).
    ///
    /// Every statement of the store then names `sessions`, `refresh_series`,
    /// `refresh_secrets` and the crate's functions with `schema`, so the connection's
    /// `search_path` need not include it, and a table of the same name elsewhere (the
    /// application's own `sessions`) is never touched; the [`AppSchema`]'s tables are still
    /// found as it names them (schema-qualified or through the `search_path`).
    /// [`migrate`](Self::migrate) creates the schema if it is missing and applies the
    /// migrations in it; [`install_invalidation_triggers`](Self::install_invalidation_triggers)
    /// creates its functions there, and its notifications use the channel
    /// `tower_session_auth_<schema>`, so deployments in other schemas of the same database do
    /// not hear each other (the listeners of [`spawn_session_listener`](Self::spawn_session_listener)
    /// follow). Choosing a schema for a deployment that already has sessions in the
    /// `search_path` starts with empty tables: users sign in again.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_session_auth::PgStore;
    ///
    /// // The application keeps its own `sessions` table; the crate's are `auth.sessions`, ...
    /// let store = PgStore::connect("postgres://app:secret@localhost/app")?.tables_schema("auth")?;
    /// store.migrate().await?;
    /// store.check_schema().await?;
    /// # Ok(()) }
    /// ```
    pub fn tables_schema(mut self, schema: &str) -> Result<Self, ConfigError> {
        check_tables_schema(schema)?;
        let names = Names {
            schema: Some(schema.to_owned()),
        };
        self.sql = Arc::new(Statements::new(&self.app, &names));
        self.names = Arc::new(names);
        Ok(self)
    }

    /// The TLS connector of the store's `LISTEN` connection
    /// ([`spawn_session_listener`](Self::spawn_session_listener)) and of the cancel requests
    /// of its timed-out statements, for a store made with [`new`](Self::new) on a pool built
    /// with `tls` ([`PgTls::from_url`]); [`connect`](Self::connect) sets it. The default
    /// encrypts without checking the server's certificate when the connection's config asks
    /// for TLS (`sslmode=prefer` or `require`), as libpq does without a root certificate.
    pub fn tls(mut self, tls: PgTls) -> Self {
        self.tls = tls;
        self
    }

    /// The store's TLS connector (see [`tls`](Self::tls)).
    pub(crate) fn connector(&self) -> PgTls {
        self.tls.clone()
    }

    /// Bounds each of the store's operations once it has a connection (default
    /// [`DEFAULT_STATEMENT_TIMEOUT`](Self::DEFAULT_STATEMENT_TIMEOUT), 5 s): a statement that waits on a lock (`LOCK TABLE`, a
    /// long `ALTER TABLE`) or on a network that stopped answering without closing fails with
    /// [`StoreError::Timeout`], which the extractors answer with `500 Session store
    /// unavailable`. So a request's wait on the store is bounded by the pool's wait and
    /// create timeouts plus this. The timed-out connection is discarded, never handed out again, and the
    /// server is asked to cancel the statement. A zero timeout is raised to 1 ms.
    ///
    /// Migrations ([`migrate`](Self::migrate)) are not bounded: they may legitimately take
    /// long. The bound is enforced by the client; a server-side `statement_timeout` or
    /// `lock_timeout` on the database role is a useful addition but does not cover a silent
    /// network (a durable revocation's commit lifts the server-side `statement_timeout`; see
    /// [`durable_revocations`](Self::durable_revocations)).
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Makes every revocation durable on the synchronous standby before it is acknowledged
    /// (default off). Logout and every other path that ends a session or a remember-me series
    /// (revoking one session, by token, all of a user's or all but one, ending a series, the
    /// revocation of a series whose secret was reused or whose user was deactivated, the
    /// pruning of a user's oldest sessions beyond the limit, [`clear_all`](AdminStore::clear_all))
    /// then commit with `SET LOCAL synchronous_commit = remote_apply`, one more statement in
    /// their transaction. Validation, touches, logins and refreshes that revoke nothing keep the
    /// role's setting and are not slowed down (a refresh's replacement of the series' earlier
    /// session is a rotation on the same device, not a revocation). A revocation that finds
    /// nothing to delete writes nothing and waits for nothing.
    ///
    /// Why it matters: with asynchronous replication, a revocation committed on the primary in
    /// the last moments before it fails may never reach the standby, and after a failover the
    /// revoked session is valid again. A lost login only costs a new login; a lost revocation
    /// hands a session back to whoever it was taken from.
    ///
    /// Why `remote_apply` rather than `remote_write` or `on` (`remote_flush`): `remote_write`
    /// only waits until the standby's operating system has the WAL, so a crash of the standby's
    /// machine together with the primary can still lose it; `remote_apply` waits until the
    /// standby has flushed *and replayed* it, so the revocation is visible to every query on the
    /// standby, whether it is promoted or serves reads as a hot standby, and the moment a
    /// revocation is acknowledged no server a client could reach still accepts the session.
    ///
    /// What the database must have: a standby named in the primary's
    /// `synchronous_standby_names` (without one, `remote_apply` waits for nothing). To keep
    /// the rest of the traffic asynchronous, give the application's role
    /// `synchronous_commit = local` (`ALTER ROLE app SET synchronous_commit = local`): the
    /// server's default (`on`) would make every commit, logins and touches included, wait for
    /// the standby. When the standby does not confirm (down, or its replay paused), the
    /// revocation waits until the [`statement_timeout`](Self::statement_timeout) and fails
    /// with [`StoreError::Timeout`] (`500 Session store unavailable`); it has then committed
    /// on the primary, but is not acknowledged and may not survive a failover, so the client
    /// must retry it. A server-side `statement_timeout` (of the role or the database) does not
    /// cut that wait short: PostgreSQL would answer the cancelled wait with a successful
    /// commit, so the revocation's transaction sets it to 0 for its commit.
    pub fn durable_revocations(mut self, durable: bool) -> Self {
        self.durable_revocations = durable;
        self
    }

    /// Whether the store sends its statements as named prepared statements (default `true`);
    /// turn it off behind a connection pooler in transaction pooling mode, such as PgBouncer
    /// with `pool_mode = transaction`.
    ///
    /// By default each statement is prepared once per connection and from then on only bound
    /// and executed. A transaction pooler hands each transaction, and each statement outside
    /// one, to whichever server connection is free, so a statement prepared on one server
    /// connection is missing from the next, and requests fail with `prepared statement "s3"
    /// does not exist` (`500 Session store unavailable`). PgBouncer keeps track of prepared
    /// statements itself only from version 1.21 on (with `max_prepared_statements`); Debian 12
    /// ships 1.18. With `false`, every statement is sent as an unnamed statement, with the
    /// types of its parameters, and parsed, bound and executed in the same round trip
    /// (tokio-postgres' `query_typed`), which any pooling mode passes through. The number of
    /// round trips stays the same, but the server parses and plans each statement each time,
    /// which for the validating statement costs PostgreSQL several times the CPU of running
    /// it (the crate's benchmark measures it): keep the default wherever named prepared
    /// statements work (a direct connection, session pooling, PgBouncer 1.21 or later with
    /// `max_prepared_statements`).
    ///
    /// The rest of the store works through a transaction pooler: its transactions (`BEGIN` …
    /// `COMMIT`), the `SET LOCAL` of [`durable_revocations`](Self::durable_revocations), and
    /// its advisory locks (held to the end of a transaction) are transaction-scoped, and
    /// [`migrate`](Self::migrate) runs in one transaction. It sets nothing for the session
    /// and keeps no temporary tables (its migrations' `SET LOCAL search_path` ends with their
    /// transaction). A schema chosen in the connection string (`options=-csearch_path=...`)
    /// is session state that PgBouncer refuses to pass on: use
    /// [`tables_schema`](Self::tables_schema) instead, or the role's `search_path`
    /// (`ALTER ROLE app SET search_path = ...`). What needs a
    /// session of its own is the `LISTEN` connection of
    /// [`spawn_session_listener`](Self::spawn_session_listener) (and of the cache's
    /// invalidation listener): give it a direct connection to PostgreSQL, not the pooler's.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_session_auth::{PgStore, SessionConfig, SessionManager};
    ///
    /// // Statements through PgBouncer in transaction pooling mode ...
    /// let store = PgStore::connect("postgres://app:secret@pgbouncer:6432/app")?
    ///     .prepared_statements(false);
    /// store.migrate().await?;
    /// let manager = SessionManager::new(store.clone(), SessionConfig::default());
    /// // ... and session events on a direct connection to PostgreSQL.
    /// let direct: tokio_postgres::Config = "postgres://app:secret@db:5432/app".parse()?;
    /// store.spawn_session_listener(direct, manager.clone());
    /// # Ok(()) }
    /// ```
    pub fn prepared_statements(mut self, prepared: bool) -> Self {
        self.prepared_statements = prepared;
        self
    }

    /// Detaches a connection on which a write failed because the server is read-only
    /// (SQLSTATE 25006: a standby, or a primary set read-only for a switchover), and closes the
    /// pool's idle connections, most likely to the same server, so that the pool connects
    /// anew and, with `target_session_attrs=read-write`, finds the primary. A connection in
    /// use at that moment is discarded in turn when one of its writes fails.
    fn discard_read_only(
        &self,
        client: deadpool_postgres::Object,
        error: StoreError,
    ) -> StoreError {
        drop(deadpool_postgres::Object::take(client));
        self.pool.retain(|_, _| false);
        tracing::warn!(
            %error,
            "the session store's server is read-only; its connections are discarded"
        );
        error
    }

    /// Detaches a connection whose statement timed out, and asks the server to cancel the
    /// statement (in the background, bounded, best effort).
    fn discard(&self, client: deadpool_postgres::Object) -> StoreError {
        let cancel = client.cancel_token();
        drop(deadpool_postgres::Object::take(client));
        let bound = self.statement_timeout;
        let tls = self.connector();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(bound, cancel.cancel_query(tls)).await;
        });
        tracing::warn!(
            timeout = ?self.statement_timeout,
            "a session store statement timed out; its connection is discarded"
        );
        StoreError::Timeout(self.statement_timeout)
    }

    /// Builds a pool from a connection URL with the defaults this crate recommends: 16
    /// connections, a 5 s wait timeout, 5 s to connect, and fast recycling; with the default
    /// [`statement_timeout`](Self::statement_timeout) of 5 s, a request waits at most about
    /// 15 s for a `500 Session store unavailable`.
    ///
    /// `url` may name several servers, as a URL
    /// (`postgres://app:secret@db1:5432,db2:5432/app?target_session_attrs=read-write&connect_timeout=2`)
    /// or as key-value pairs (`host=db1,db2 port=5432,5432 … target_session_attrs=read-write`):
    /// each new connection tries them in order and, with `target_session_attrs=read-write`,
    /// takes the first that accepts writes, which after a failover is the promoted standby.
    /// `connect_timeout` bounds each attempt, so a server that does not answer is skipped
    /// within the pool's create timeout.
    ///
    /// # TLS
    ///
    /// `sslmode` and `sslrootcert` mean what they mean to libpq (feature `tls`, on by
    /// default; rustls):
    ///
    /// | `sslmode` | encrypted | the server's certificate |
    /// |---|---|---|
    /// | `disable` | never | — |
    /// | `prefer` (the default) | if the server offers TLS | not checked |
    /// | `require` | always | not checked; with an `sslrootcert` file, as `verify-ca` |
    /// | `verify-ca` | always | signed by a trusted root |
    /// | `verify-full` | always | signed by a trusted root, and names the host connected to |
    ///
    /// The trusted roots are those of the PEM file `sslrootcert` names, or else the operating
    /// system's (`sslrootcert=system` asks for them explicitly, and needs `verify-full`; libpq
    /// without `sslrootcert` reads `~/.postgresql/root.crt` instead). `allow` is not supported.
    /// `prefer` falls back to plain text only when the server does not offer TLS, not when a
    /// handshake fails. Each new connection of the pool and of the `LISTEN` connection
    /// ([`spawn_session_listener`](Self::spawn_session_listener)), and each cancel request,
    /// uses the same connector ([`PgTls`]). The root file is read here, once.
    ///
    /// ```text
    /// postgres://app:secret@db.example.com/app?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem
    /// host=db.example.com user=app dbname=app sslmode=verify-full sslrootcert=system
    /// ```
    ///
    /// A certificate that fails its checks (an unknown issuer, another host's name) fails the
    /// connection: the first query (or [`migrate`](Self::migrate)) returns a
    /// [`StoreError::Backend`] whose text says what failed (`… error performing TLS handshake:
    /// invalid peer certificate: UnknownIssuer`, `… certificate not valid for name …`).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] (field `url`, `sslmode` or `sslrootcert`) for a connection string it
    /// cannot use: see [`PgTls::from_url`]. Without the `tls` feature, a connection string that
    /// asks for TLS is refused here, never connected to without it.
    pub fn connect(url: &str) -> Result<Self, ConfigError> {
        let (url, tls) = PgTls::split(url)?;
        let mut config = deadpool_postgres::Config::new();
        config.url = Some(url);
        config.pool = Some(deadpool_postgres::PoolConfig {
            max_size: 16,
            timeouts: deadpool_postgres::Timeouts {
                wait: Some(std::time::Duration::from_secs(5)),
                create: Some(std::time::Duration::from_secs(5)),
                recycle: Some(std::time::Duration::from_secs(5)),
            },
            ..Default::default()
        });
        let pool = config
            .create_pool(Some(deadpool_postgres::Runtime::Tokio1), tls.clone())
            .map_err(|error| ConfigError::new("url", error.to_string()))?;
        Ok(Self::new(pool).tls(tls))
    }

    /// The underlying pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The `LISTEN/NOTIFY` channel of this store's invalidation triggers.
    pub(crate) fn channel(&self) -> String {
        self.names.channel()
    }

    /// Applies the crate's migrations that this database (or, with a
    /// [`tables_schema`](Self::tables_schema), that schema) has not seen yet.
    ///
    /// Safe to call from several instances at once: a transaction-scoped advisory lock
    /// serialises them, and applied versions are recorded in `tower_session_auth_migrations`.
    /// Returns how many migrations were applied.
    ///
    /// The migrations create the crate's `user_id` columns as `bigint`; in the same
    /// transaction, a column of another type than the [`AppSchema::user_id_type`] is given
    /// that type while its table is empty (found so under the exclusive lock of the change,
    /// and with the table's triggers on the column, such as the invalidation trigger, kept as
    /// they were). With rows in it, `migrate` fails with
    /// [`StoreError::Migration`] (version 0) naming the table, and changes nothing: converting
    /// stored sessions is the operator's decision.
    ///
    /// With a [`tables_schema`](Self::tables_schema), the schema is created if it is missing
    /// (which needs the `CREATE` privilege on the database; a schema created beforehand needs
    /// only `CREATE` and `USAGE` on it), and the migrations run with the transaction's
    /// `search_path` set to it, so their objects are created there and
    /// `tower_session_auth_migrations` records them there. The crate's functions run with
    /// their `search_path` fixed to the schema they live in, so they find the crate's tables
    /// whoever calls them.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let statements = MigrationSql::new(&self.names, self.app.user_id_type);
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(MigrationSql::LOCK).await?;
        if let Some(schema) = &statements.schema {
            // Created only when missing: `CREATE SCHEMA IF NOT EXISTS` needs the privilege to
            // create schemas even when the schema exists, which a role given a schema of its
            // own may lack.
            let exists: bool = column(
                &self
                    .run_on(&tx, &SCHEMA_EXISTS, &[&schema.quoted])
                    .await?
                    .one()?,
                0,
                "boolean",
            )?;
            if !exists {
                tx.batch_execute(&schema.create).await?;
            }
            // The migrations name their objects unqualified: they are created in the schema,
            // and resolve there, for the rest of this transaction.
            tx.batch_execute(&schema.search_path).await?;
        }
        tx.batch_execute(&statements.create_table).await?;
        let applied: Vec<i32> = self
            .run_on(&tx, &statements.applied, &[])
            .await?
            .rows
            .iter()
            .map(|row| column(row, 0, "integer"))
            .collect::<Result<_, _>>()?;
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
                    source: source.into(),
                })?;
            self.run_on(&tx, &statements.record, &[&version, &name])
                .await?;
            count += 1;
        }
        tx.batch_execute(&statements.user_id_columns)
            .await
            .map_err(MigrationSql::user_id_columns_failed)?;
        tx.commit().await?;
        Ok(count)
    }

    /// Verifies once, at start-up, that the crate's tables are there (in the
    /// [`tables_schema`](Self::tables_schema), if one is chosen: `schema auth not found (run
    /// PgStore::migrate)`, `table auth.sessions not found (…)`), and that the application's
    /// tables have the columns the [`AppSchema`] names, with types the store can read: user
    /// ids (the users key, `characters.user_id`, and the crate's own `user_id` columns) of the
    /// [`AppSchema::user_id_type`], character ids `bigint`, names, roles and worlds text
    /// (`text`, `varchar`, `char`, `citext`), the active flag `boolean`. Fails with
    /// [`StoreError::Schema`] naming every mismatch (for example `users.id is uuid, expected
    /// bigint`), so a wrong schema stops the server at
    /// start-up instead of failing requests. Call it after [`migrate`](Self::migrate) and
    /// after the application's own migrations. Should the schema change later anyway,
    /// requests fail closed with `500 Session store unavailable` and a logged
    /// [`StoreError::Decode`], never a panic. Bounded by the
    /// [`statement_timeout`](Self::statement_timeout) like every request's statements.
    pub async fn check_schema(&self) -> Result<(), StoreError> {
        let problems = bounded!(self, |client| {
            let mut problems = self.missing_crate_tables(&client).await?;
            for expected in ExpectedColumn::of(&self.app, &self.names, problems.is_empty()) {
                let table = expected.table.as_ref();
                let row = self
                    .run_on(&client, &COLUMN_TYPE, &[&table, &expected.column])
                    .await?
                    .one()?;
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
        client: &impl Connection,
    ) -> Result<Vec<String>, StoreError> {
        let names = &*self.names;
        let migrate = "PgStore::migrate";
        if let Some(quoted) = names.quoted_schema() {
            let row = self
                .run_on(client, &SCHEMA_EXISTS, &[&quoted])
                .await?
                .one()?;
            if !column::<bool>(&row, 0, "boolean")? {
                return Ok(vec![names.schema_not_found(migrate)]);
            }
        }
        let mut problems = Vec::new();
        for table in CRATE_TABLES {
            let row = self
                .run_on(client, &TABLE_EXISTS, &[&names.object(table)])
                .await?
                .one()?;
            if !column::<bool>(&row, 0, "boolean")? {
                problems.push(names.table_not_found(table, migrate));
            }
        }
        Ok(problems)
    }

    /// Installs the triggers that feed cross-instance cache invalidation and session watches:
    /// they `NOTIFY tower_session_auth` (with a [`tables_schema`](Self::tables_schema),
    /// `tower_session_auth_<schema>`) when sessions are deleted (once per statement, ids in
    /// batches of 200) or a session is rebound to another character or re-authenticated, when a
    /// user's role, active flag or name changes or the user is deleted, and when a character
    /// changes world or owner or is deleted. Idempotent; run it at start-up. Touches and other
    /// hot-path writes fire nothing. A user named by a text id too long for a notification's
    /// payload (7995 bytes or more) is announced as a change of every session, so that the
    /// application's write still goes through.
    ///
    /// The trigger functions live with the crate's tables (in the chosen schema, if any) and
    /// run with a fixed `search_path`. With a chosen schema, the triggers on the application's
    /// users and characters tables carry the schema in their names
    /// (`tower_session_auth_user_changed_<schema>`), so deployments in other schemas that
    /// share those tables each keep their own.
    pub async fn install_invalidation_triggers(&self) -> Result<(), StoreError> {
        let sql = Self::invalidation_triggers_sql(&self.app, &self.names);
        self.pool.get().await?.batch_execute(&sql).await?;
        Ok(())
    }

    /// The SQL of [`install_invalidation_triggers`](Self::install_invalidation_triggers), for
    /// the application's tables `app` and the crate's objects as `names` names them (the sqlx
    /// store installs the same).
    pub(crate) fn invalidation_triggers_sql(app: &AppSchema, names: &Names) -> String {
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
        } = app;
        let channel = names.channel();
        let sessions = names.object("sessions");
        // They call only built-in functions: nothing of any schema's can stand in for them.
        let function = |name: &str, body: &str| {
            format!(
                "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql \
                 SET search_path = pg_catalog, pg_temp AS $$ BEGIN {body} RETURN NULL; END $$;",
                names.object(name)
            )
        };
        let notify = |name: &str, payload: &str| {
            function(name, &format!("PERFORM pg_notify('{channel}', {payload});"))
        };
        // A notification's payload is shorter than 8000 bytes, and a text id need not be: the
        // notice for a user whose id does not fit names everyone (any other payload does), so
        // that the application's write that fired it still goes through.
        let notify_user = |name: &str, id: &str| {
            notify(
                name,
                &format!(
                    "CASE WHEN octet_length({id}::text) < 7995 THEN 'user:' || {id} \
                     ELSE 'all' END"
                ),
            )
        };
        let trigger = |name: &str, function: &str, when: &str, table: &str, each: &str| {
            format!(
                "CREATE OR REPLACE TRIGGER {name} {when} ON {table} {each} \
                 EXECUTE FUNCTION {}();",
                names.object(function)
            )
        };
        let user_changed = "tower_session_auth_user_changed";
        let character_changed = "tower_session_auth_character_changed";
        [
            notify(
                "tower_session_auth_session_changed",
                "'sessions:' || OLD.id",
            ),
            trigger(
                "tower_session_auth_session_changed",
                "tower_session_auth_session_changed",
                "AFTER UPDATE OF character_id, user_id, authenticated_at",
                &sessions,
                "FOR EACH ROW",
            ),
            // Deletions are reported once per statement, with the ids in batches that fit a
            // notification's payload (under 8000 bytes), so that a purge or a mass revocation
            // costs each listener one lookup per id rather than a notification per row.
            function(
                "tower_session_auth_sessions_deleted",
                &format!(
                    "PERFORM pg_notify('{channel}', 'sessions:' || string_agg(id::text, ',')) \
                     FROM (SELECT id, (row_number() OVER () - 1) / 200 AS batch FROM gone) ids \
                     GROUP BY batch;"
                ),
            ),
            trigger(
                "tower_session_auth_sessions_deleted",
                "tower_session_auth_sessions_deleted",
                "AFTER DELETE",
                &format!("{sessions} REFERENCING OLD TABLE AS gone"),
                "FOR EACH STATEMENT",
            ),
            notify_user(user_changed, &format!("OLD.{user_id}")),
            trigger(
                &names.app_trigger(user_changed),
                user_changed,
                &format!("AFTER DELETE OR UPDATE OF {role}, {is_active}, {username}"),
                users_table,
                "FOR EACH ROW",
            ),
            notify_user(character_changed, &format!("OLD.{character_user_id}")),
            trigger(
                &names.app_trigger(character_changed),
                character_changed,
                &format!(
                    "AFTER DELETE OR UPDATE OF {character_world_id}, {character_user_id}, \
                     {character_name}"
                ),
                characters_table,
                "FOR EACH ROW",
            ),
        ]
        .concat()
    }

    /// Removes the session that `find` (an [`end_session_sql`]) names and, if it belongs to a
    /// series, the series and all its sessions. The series row is deleted first, which waits
    /// for a refresh of the series in flight; the sessions are deleted by a later statement,
    /// whose snapshot includes the session that refresh committed. Returns the user.
    async fn end_session(
        &self,
        find: &Sql,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<UserId>, StoreError> {
        bounded!(self, |client| {
            let tx = client.transaction().await?;
            let Some(target) = self.run_on(&tx, find, params).await?.opt()? else {
                return Ok(None);
            };
            let (id, user_id, series): (Uuid, UserId, Option<Uuid>) = (
                column(&target, 0, "uuid")?,
                column(&target, 1, "user id")?,
                column(&target, 2, "uuid")?,
            );
            self.run_on(&tx, &self.sql.delete_ended, &[&id, &series])
                .await?;
            commit(tx, self.durable_revocations).await?;
            Ok(Some(user_id))
        })
    }

    /// Takes the per-user advisory lock for the rest of the transaction. It comes first in the
    /// crate's lock order (user, then series rows in id order, then sessions), which login
    /// pruning, refreshes that prune, and user-wide revocations all follow, so they cannot
    /// deadlock.
    async fn lock_user(
        &self,
        client: &impl Connection,
        user_id: &UserId,
    ) -> Result<(), StoreError> {
        self.run_on(client, &self.sql.lock_user, &[user_id]).await?;
        Ok(())
    }

    /// Deletes a series and all its sessions.
    async fn delete_series(
        &self,
        client: &impl Connection,
        series: Uuid,
    ) -> Result<(), StoreError> {
        self.run_on(client, &self.sql.delete_series, &[&series])
            .await?;
        Ok(())
    }

    /// Inserts a session; with `max_per_user` (inside a transaction) serialises on the user and
    /// removes the user's oldest sessions beyond the limit, durably (with
    /// [`durable_revocations`](Self::durable_revocations)) when some were.
    async fn insert_session(
        &self,
        client: &impl Connection,
        new: &NewSession,
        authenticated_at: OffsetDateTime,
        refreshed: bool,
        series_id: Option<Uuid>,
        max_per_user: Option<u32>,
    ) -> Result<SessionRecord, StoreError> {
        if max_per_user.is_some() {
            // Concurrent logins of one user serialise on a per-user advisory lock, so the limit
            // holds even when they race.
            self.lock_user(client, &new.user_id).await?;
        }
        let row = self
            .run_on(
                client,
                &self.sql.insert_session,
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
            .await?
            .one()?;
        if let Some(max) = max_per_user {
            // The user's oldest sessions beyond the limit, and their series (but the new
            // session's own), locked in id order before any session is deleted.
            let keep = i64::from(max.max(1));
            let row = self
                .run_on(
                    client,
                    &self.sql.doomed_sessions,
                    &[&new.user_id, &new.id.0, &keep, &series_id],
                )
                .await?
                .one()?;
            let sessions: Vec<Uuid> = column(&row, 0, "uuid[]")?;
            let series: Vec<Uuid> = column(&row, 1, "uuid[]")?;
            if !sessions.is_empty() {
                // A later statement, so that it sees what a refresh of those series committed.
                self.run_on(client, &self.sql.prune_sessions, &[&sessions, &series])
                    .await?;
                commit_durably(client, self.durable_revocations).await?;
            }
        }
        record_from_row(&row)
    }

    /// Runs `sql` with `params` on `client` (a pooled connection, or a transaction on one).
    /// Every statement of the store goes through here: as a named prepared statement,
    /// prepared once per connection, or, without
    /// [`prepared_statements`](Self::prepared_statements), as an unnamed statement that is
    /// parsed, bound and executed in one round trip.
    async fn run_on(
        &self,
        client: &impl Connection,
        sql: &Sql,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Answer, StoreError> {
        debug_assert_eq!(params.len(), sql.params.len(), "parameters of {}", sql.text);
        let rows = if self.prepared_statements {
            let statement = client.prepare_typed_cached(&sql.text, &sql.params).await?;
            client.query_raw(&statement, params.iter().copied()).await?
        } else {
            client.query_unnamed(sql, params).await?
        };
        Answer::collect(rows).await
    }

    /// [`run_on`](Self::run_on) a connection of its own, outside a transaction, within the
    /// [`statement_timeout`](Self::statement_timeout).
    async fn run(&self, sql: &Sql, params: &[&(dyn ToSql + Sync)]) -> Result<Answer, StoreError> {
        bounded!(self, |client| self.run_on(&client, sql, params).await)
    }
}

/// A connection of the store's pool, or a transaction on one: where [`PgStore::run_on`] sends
/// a statement.
trait Connection: GenericClient {
    /// Sends `sql` as an unnamed statement, with the declared types of its parameters: parsed,
    /// bound and executed in one round trip (tokio-postgres' `query_typed_raw`).
    fn query_unnamed<'a>(
        &'a self,
        sql: &'a Sql,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<RowStream, tokio_postgres::Error>> + Send + 'a;
}

impl Connection for deadpool_postgres::Client {
    fn query_unnamed<'a>(
        &'a self,
        sql: &'a Sql,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<RowStream, tokio_postgres::Error>> + Send + 'a {
        tokio_postgres::Client::query_typed_raw(self, &sql.text, typed(sql, params))
    }
}

impl Connection for deadpool_postgres::Transaction<'_> {
    fn query_unnamed<'a>(
        &'a self,
        sql: &'a Sql,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<RowStream, tokio_postgres::Error>> + Send + 'a {
        tokio_postgres::Transaction::query_typed_raw(self, &sql.text, typed(sql, params))
    }
}

/// Each of `params` with its declared type.
fn typed<'a>(
    sql: &'a Sql,
    params: &'a [&'a (dyn ToSql + Sync)],
) -> impl Iterator<Item = (&'a (dyn ToSql + Sync), Type)> + Send + 'a {
    params.iter().copied().zip(sql.params.iter().cloned())
}

/// What a statement returned: its rows, and how many rows it inserted, updated or deleted.
struct Answer {
    rows: Vec<Row>,
    affected: u64,
}

impl Answer {
    async fn collect(rows: RowStream) -> Result<Self, StoreError> {
        let mut rows = std::pin::pin!(rows);
        let mut collected = Vec::new();
        while let Some(row) = rows.try_next().await? {
            collected.push(row);
        }
        Ok(Self {
            affected: rows.rows_affected().unwrap_or(0),
            rows: collected,
        })
    }

    /// The row of a statement that returns at most one.
    fn opt(self) -> Result<Option<Row>, StoreError> {
        let mut rows = self.rows.into_iter();
        match (rows.next(), rows.next()) {
            (row, None) => Ok(row),
            _ => Err(StoreError::backend(
                "a statement of the store returned more than one row",
            )),
        }
    }

    /// The row of a statement that returns exactly one.
    fn one(self) -> Result<Row, StoreError> {
        self.opt()?
            .ok_or_else(|| StoreError::backend("a statement of the store returned no row"))
    }
}

/// The `count(*)` in column `index` of a statement's single row (no row: 0).
fn count(row: Option<&Row>, index: usize) -> Result<u64, StoreError> {
    let count: i64 = row.map_or(Ok(0), |row| column(row, index, "bigint"))?;
    Ok(count.try_into().unwrap_or(0))
}

/// The heap pages where a purge batch starts reading the sessions and the series: a position
/// past the last page a table can have (2^32 - 1) reads nothing.
pub(crate) fn heap_pages(from: PurgePosition) -> (i64, i64) {
    let page = |position: u64| i64::from(u32::try_from(position).unwrap_or(u32::MAX));
    (page(from.sessions), page(from.series))
}

/// What a batch of the purge statement returned: the sessions and series it deleted, then the
/// pages where the next batch starts.
fn purged(row: Option<&Row>) -> Result<Purged, StoreError> {
    Ok(Purged::new(count(row, 0)?, count(row, 1)?)
        .resume_at(PurgePosition::new(count(row, 2)?, count(row, 3)?)))
}

/// Reads column `index` of `row` as `T`: a NULL in a non-`Option`, or a column of another type
/// than `expected` (the SQL type the crate reads), is a [`StoreError::Decode`] naming the
/// column, never a panic.
fn column<'r, T: FromSql<'r>>(
    row: &'r Row,
    index: usize,
    expected: &'static str,
) -> Result<T, StoreError> {
    row.try_get(index).map_err(|source| StoreError::Decode {
        column: row
            .columns()
            .get(index)
            .map_or_else(|| format!("#{index}"), |column| column.name().to_owned()),
        expected,
        source: source.into(),
    })
}

session_row_readers!(Row);

/// The outcome of the validating statement, from the row as it was before the statement's own
/// writes: expired (the statement deleted it), or live with the touch and the world resync
/// applied as the statement applied them.
pub(crate) fn validation(mut view: SessionView, now: OffsetDateTime, touch: Touch) -> Validation {
    let session = &mut view.session;
    if session.is_expired(now) {
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
        bounded!(self, |client| {
            if max_per_user.is_none() && series_id.is_none() {
                // The common case needs no transaction: one INSERT.
                return self
                    .insert_session(&client, &new, new.created_at, false, series_id, None)
                    .await;
            }
            let tx = client.transaction().await?;
            let record = self
                .insert_session(&tx, &new, new.created_at, false, series_id, max_per_user)
                .await?;
            if let Some(series) = &new.remember {
                self.run_on(
                    &tx,
                    &self.sql.insert_series,
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
        let row = self
            .run(
                sql,
                &[
                    &token_hash.0.as_slice(),
                    &now,
                    &touch.due_before,
                    &touch.slide_to,
                ],
            )
            .await?
            .opt()?;
        Ok(match row {
            None => Validation::Unknown,
            Some(row) => validation(view_from_row(&row, scope)?, now, touch),
        })
    }

    async fn lookup(
        &self,
        token_hash: &TokenHash,
        now: OffsetDateTime,
    ) -> Result<Option<SessionView>, StoreError> {
        let row = self
            .run(&self.sql.lookup, &[&token_hash.0.as_slice(), &now])
            .await?
            .opt()?;
        row.as_ref()
            .map(|row| view_from_row(row, Scope::Game))
            .transpose()
    }

    async fn remove(
        &self,
        id: SessionId,
        owner: Option<&UserId>,
    ) -> Result<Option<UserId>, StoreError> {
        self.end_session(&self.sql.end_by_id, &[&id.0, &owner])
            .await
    }

    async fn remove_by_token(&self, token_hash: &TokenHash) -> Result<Option<UserId>, StoreError> {
        self.end_session(&self.sql.end_by_token, &[&token_hash.0.as_slice()])
            .await
    }

    async fn remove_for_user(
        &self,
        user_id: &UserId,
        keep: Option<SessionId>,
    ) -> Result<u64, StoreError> {
        let keep = keep.map(|id| id.0);
        bounded!(self, |client| {
            let tx = client.transaction().await?;
            self.lock_user(&tx, user_id).await?;
            // First end the series, in id order (each waits for a refresh in flight) ...
            let kept = self
                .run_on(&tx, &self.sql.end_user_series, &[user_id, &keep])
                .await?
                .one()?;
            let kept_series: Option<Uuid> = column(&kept, 0, "uuid")?;
            // ... then delete the sessions in a later statement, whose snapshot includes what
            // those refreshes committed.
            let count = self
                .run_on(
                    &tx,
                    &self.sql.delete_user_sessions,
                    &[user_id, &keep, &kept_series],
                )
                .await?
                .affected;
            commit(tx, self.durable_revocations).await?;
            Ok(count)
        })
    }

    async fn list_for_user(
        &self,
        user_id: &UserId,
        now: OffsetDateTime,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let answer = self.run(&self.sql.list_for_user, &[user_id, &now]).await?;
        answer.rows.iter().map(record_from_row).collect()
    }

    async fn purge_expired(
        &self,
        now: OffsetDateTime,
        limit: u32,
        from: PurgePosition,
    ) -> Result<Purged, StoreError> {
        let (sessions_page, series_page) = heap_pages(from);
        let row = self
            .run(
                &self.sql.purge_expired,
                &[&now, &i64::from(limit), &sessions_page, &series_page],
            )
            .await?
            .opt()?;
        purged(row.as_ref())
    }

    async fn reauthenticate(&self, id: SessionId, now: OffsetDateTime) -> Result<bool, StoreError> {
        Ok(self
            .run(&self.sql.reauthenticate, &[&id.0, &now])
            .await?
            .affected
            > 0)
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
impl RememberStore for PgStore {
    async fn end_series(
        &self,
        series: Uuid,
        secret_hash: &TokenHash,
    ) -> Result<Option<UserId>, StoreError> {
        bounded!(self, |client| {
            let tx = client.transaction().await?;
            // The series row first: this waits for a refresh that holds it, so the sessions
            // statement after it (a new snapshot) also sees the session that refresh created.
            let Some(row) = self
                .run_on(
                    &tx,
                    &self.sql.end_series,
                    &[&series, &secret_hash.0.as_slice()],
                )
                .await?
                .opt()?
            else {
                return Ok(None);
            };
            let user_id: UserId = column(&row, 0, "user id")?;
            self.run_on(&tx, &self.sql.delete_series_sessions, &[&series])
                .await?;
            commit(tx, self.durable_revocations).await?;
            Ok(Some(user_id))
        })
    }

    async fn refresh(&self, request: RefreshRequest) -> Result<RefreshOutcome, StoreError> {
        bounded!(self, |client| {
            let tx = client.transaction().await?;
            if request.max_per_user.is_some() {
                // Locks are taken in one order everywhere: the user's (when pruning), the
                // series', then sessions.
                self.run_on(
                    &tx,
                    &self.sql.refresh_lock_user,
                    &[&request.series, &request.secret_hash.0.as_slice()],
                )
                .await?;
            }
            let Some(series) = self
                .run_on(
                    &tx,
                    &self.sql.refresh_lock,
                    &[
                        &request.series,
                        &request.now,
                        &request.secret_hash.0.as_slice(),
                    ],
                )
                .await?
                .opt()?
            else {
                return Ok(RefreshOutcome::Invalid);
            };
            // Read after the lock, in a statement of its own: its snapshot includes what the
            // refresh that held the lock before committed.
            let stored = self
                .run_on(
                    &tx,
                    &self.sql.refresh_secret,
                    &[&request.series, &request.secret_hash.0.as_slice()],
                )
                .await?
                .opt()?
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
                self.delete_series(&tx, request.series).await?;
                commit(tx, self.durable_revocations && !expired).await?;
                return Ok(RefreshOutcome::Ended { user_id });
            }
            let keep_since = match decision {
                SecretMatch::Reuse => {
                    self.delete_series(&tx, request.series).await?;
                    commit(tx, self.durable_revocations).await?;
                    return Ok(RefreshOutcome::ReuseDetected { user_id });
                }
                SecretMatch::Grace { used_at } => Some(used_at),
                _ => None,
            };
            // Exchange the secret, and end the series' earlier sessions (one device, one
            // session) but for those the grace window keeps.
            // The statement does not see the secret it inserts: keep one fewer of the others (and
            // the one presented, which it updates).
            let keep_others = MAX_SECRETS_PER_SERIES - 1;
            self.run_on(
                &tx,
                &self.sql.refresh_exchange,
                &[
                    &request.series,
                    &request.secret_hash.0.as_slice(),
                    &request.now,
                    &request.new_secret_hash.0.as_slice(),
                    &request.series_expires_at,
                    &keep_since,
                    &keep_others,
                ],
            )
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
        })
    }
}

#[async_trait]
impl CharacterStore for PgStore {
    async fn select_character(
        &self,
        session_id: SessionId,
        user_id: &UserId,
        character_id: i64,
    ) -> Result<CharacterSelection, StoreError> {
        let row = self
            .run(
                &self.sql.select_character,
                &[&session_id.0, user_id, &character_id],
            )
            .await?
            .opt()?;
        let Some(row) = row else {
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
impl AdminStore for PgStore {
    async fn count_active(
        &self,
        now: OffsetDateTime,
        active_since: Option<OffsetDateTime>,
    ) -> Result<u64, StoreError> {
        let row = self
            .run(&self.sql.count_active, &[&now, &active_since])
            .await?
            .opt()?;
        count(row.as_ref(), 0)
    }

    async fn clear_all(&self) -> Result<u64, StoreError> {
        if !self.durable_revocations {
            return Ok(self.run(&self.sql.clear_all, &[]).await?.affected);
        }
        bounded!(self, |client| {
            let tx = client.transaction().await?;
            let count = self.run_on(&tx, &self.sql.clear_all, &[]).await?.affected;
            commit(tx, true).await?;
            Ok(count)
        })
    }
}

/// Whether the server refused a write because it is read-only (SQLSTATE 25006).
fn is_read_only(error: &StoreError) -> bool {
    let StoreError::Backend(source) = error else {
        return false;
    };
    let database =
        source
            .downcast_ref::<tokio_postgres::Error>()
            .or_else(
                || match source.downcast_ref::<deadpool_postgres::PoolError>() {
                    Some(deadpool_postgres::PoolError::Backend(error)) => Some(error),
                    _ => None,
                },
            );
    database.and_then(tokio_postgres::Error::code)
        == Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION)
}

/// With `durable` (see [`PgStore::durable_revocations`]), makes the current transaction's
/// commit wait until the synchronous standby has replayed it. Read at commit time, so it may
/// come anywhere before the commit.
///
/// The server-side `statement_timeout` is lifted for the rest of the transaction: PostgreSQL
/// answers a COMMIT whose wait for the standby is cancelled (which is what that timeout does)
/// with success and a warning, so a role's timeout shorter than the store's would acknowledge
/// a revocation the standby never received. The store's own bound still applies: it fails
/// the request and does not acknowledge it.
async fn commit_durably(client: &impl GenericClient, durable: bool) -> Result<(), StoreError> {
    if durable {
        client
            .batch_execute(
                "SET LOCAL synchronous_commit = remote_apply; SET LOCAL statement_timeout = 0",
            )
            .await?;
    }
    Ok(())
}

/// Commits `tx`, with `durable` after [`commit_durably`].
async fn commit(tx: deadpool_postgres::Transaction<'_>, durable: bool) -> Result<(), StoreError> {
    commit_durably(&tx, durable).await?;
    tx.commit().await?;
    Ok(())
}

/// The crate's own tables, whose presence `check_schema` verifies.
pub(crate) const CRATE_TABLES: [&str; 3] = ["sessions", "refresh_series", "refresh_secrets"];

/// What [`PgStore::check_schema`] asks of one column of the application's tables: `$1` the
/// table, `$2` the column; answers whether the table exists, the column's type name
/// (`pg_type.typname`, NULL without such a column) and the type as SQL writes it. Unquoted
/// identifiers fold to lower case, in `to_regclass` as in the statements.
pub(crate) const COLUMN_TYPE: Sql = Sql::fixed(
    "SELECT to_regclass($1) IS NOT NULL, t.typname::text, format_type(t.oid, NULL) \
     FROM (SELECT 1) one \
     LEFT JOIN pg_attribute a ON a.attrelid = to_regclass($1) \
          AND a.attname = lower($2) AND a.attnum > 0 AND NOT a.attisdropped \
     LEFT JOIN pg_type t ON t.oid = a.atttypid",
    &[Type::TEXT, Type::TEXT],
);

/// A column that [`PgStore::check_schema`] checks, and the types the store can read there.
pub(crate) struct ExpectedColumn<'a> {
    /// The table, as the [`AppSchema`] (or, for the crate's own, the [`Names`]) names it.
    pub(crate) table: Cow<'a, str>,
    /// The column, as the [`AppSchema`] names it.
    pub(crate) column: &'a str,
    /// The type names (`pg_type.typname`) the store reads.
    accepted: &'static [&'static str],
    /// The type a mismatch names.
    wanted: &'static str,
}

impl<'a> ExpectedColumn<'a> {
    /// The columns of `app` the store reads: user ids of the [`AppSchema::user_id_type`],
    /// character ids `bigint`, names, roles and worlds text, the active flag `boolean`; and,
    /// when the crate's tables are there (`crate_tables`), their user id columns, which
    /// [`PgStore::migrate`] gives the same type.
    pub(crate) fn of(app: &'a AppSchema, names: &Names, crate_tables: bool) -> Vec<Self> {
        const BIGINT: &[&str] = &["int8"];
        const TEXT: &[&str] = &["text", "varchar", "bpchar", "name", "citext"];
        const BOOLEAN: &[&str] = &["bool"];
        let user_ids = app.user_id_type.type_names();
        let user_id_sql = app.user_id_type.sql();
        let expect = |table: &'a str, column: &'a str, accepted, wanted| Self {
            table: Cow::Borrowed(table),
            column,
            accepted,
            wanted,
        };
        let mut expected = vec![
            expect(&app.users_table, &app.user_id, user_ids, user_id_sql),
            expect(&app.users_table, &app.username, TEXT, "text"),
            expect(&app.users_table, &app.role, TEXT, "text"),
            expect(&app.users_table, &app.is_active, BOOLEAN, "boolean"),
            expect(&app.characters_table, &app.character_id, BIGINT, "bigint"),
            expect(
                &app.characters_table,
                &app.character_user_id,
                user_ids,
                user_id_sql,
            ),
            expect(&app.characters_table, &app.character_name, TEXT, "text"),
            expect(&app.characters_table, &app.character_world_id, TEXT, "text"),
        ];
        if crate_tables {
            for table in ["sessions", "refresh_series"] {
                expected.push(Self {
                    table: Cow::Owned(names.object(table)),
                    column: "user_id",
                    accepted: &user_ids[..1],
                    wanted: user_id_sql,
                });
            }
        }
        expected
    }

    /// The mismatch to report from [`COLUMN_TYPE`]'s answer for this column, if any.
    pub(crate) fn problem(
        &self,
        table_exists: bool,
        found: Option<String>,
        shown: Option<String>,
    ) -> Option<String> {
        let Self {
            table,
            column,
            accepted,
            wanted,
        } = self;
        match found {
            _ if !table_exists => Some(format!("table {table} not found")),
            None => Some(format!("column {table}.{column} not found")),
            Some(found) if !accepted.contains(&found.as_str()) => Some(format!(
                "{table}.{column} is {}, expected {wanted}",
                shown.unwrap_or(found)
            )),
            Some(_) => None,
        }
    }
}

/// `check_schema`'s answer from the problems it found: each named once.
pub(crate) fn schema_verdict(mut problems: Vec<String>) -> Result<(), StoreError> {
    problems.dedup();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Schema(problems.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names derived from a chosen schema fit PostgreSQL's identifiers, stay apart for
    /// long schema names that share their start, and never change between releases: a
    /// trigger renamed by an upgrade would be installed twice.
    #[test]
    fn names_derived_from_the_schema_fit_and_stay_stable() {
        let auth = Names {
            schema: Some("auth".to_owned()),
        };
        assert_eq!(auth.object("sessions"), "\"auth\".sessions");
        assert_eq!(auth.channel(), "tower_session_auth_auth");
        assert_eq!(
            auth.app_trigger("tower_session_auth_user_changed"),
            "tower_session_auth_user_changed_auth"
        );
        assert_eq!(auth.lock("user"), "tower_session_auth.auth.user");
        let default = Names::default();
        assert_eq!(default.object("sessions"), "sessions");
        assert_eq!(default.channel(), CHANNEL);
        assert_eq!(default.lock("user"), "tower_session_auth.user");

        let long = |last: char| Names {
            schema: Some(format!("{}{last}", "a".repeat(62))),
        };
        let (a, b) = (long('a'), long('b'));
        let trigger = "tower_session_auth_character_changed";
        for names in [&a, &b] {
            assert_eq!(names.channel().len(), MAX_IDENTIFIER);
            assert_eq!(names.app_trigger(trigger).len(), MAX_IDENTIFIER);
        }
        assert_ne!(a.channel(), b.channel());
        assert_ne!(a.app_trigger(trigger), b.app_trigger(trigger));
        // FNV-1a of the whole name, after its first 54 bytes.
        assert_eq!(
            a.app_trigger(trigger),
            "tower_session_auth_character_changed_aaaaaaaaaaaaaaaaa_1f7a7c85"
        );
        assert_eq!(
            a.channel(),
            "tower_session_auth_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa_300f553e"
        );
    }
}
