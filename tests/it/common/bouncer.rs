//! Fixtures for the tests through PgBouncer in transaction pooling mode (`PGBOUNCER_URL`).
//!
//! A test's schema cannot be chosen by `search_path` in the connection's startup options
//! there (PgBouncer refuses the `options` parameter, and a `SET` would not stay with the
//! client), so each test gets a database of its own instead: PgBouncer passes any database
//! name through to the server of `DATABASE_URL`. The database is dropped when the test is
//! done with it, as a schema is.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tower_session_auth::PgStore;

use super::{APP_TABLES, Backend, CONNECT_TIMEOUT, PgFixture, TestDb, database_url};

/// The PgBouncer the tests go through. Missing is a loud failure, never a skip.
pub fn pgbouncer_url() -> String {
    std::env::var("PGBOUNCER_URL").expect(
        "PGBOUNCER_URL is not set: run the tests with scripts/test, which brings up PgBouncer",
    )
}

/// `url`'s server and credentials, on the database `name`.
pub fn on_database(url: &str, name: &str) -> tokio_postgres::Config {
    let mut config: tokio_postgres::Config = url.parse().expect("not a valid connection URL");
    config.dbname(name);
    config.connect_timeout(CONNECT_TIMEOUT);
    config
}

/// A database of this test's own, with the crate's migrations and the application's tables:
/// `TestDb::store` reaches it through PgBouncer (with named prepared statements or not, as
/// `prepared` says, and `max_size` connections), `TestDb::pool` directly, for what the
/// application does around the store. The database is dropped when both pools (and every
/// store on them) are gone.
pub async fn test_db(prepared: bool, max_size: usize) -> TestDb {
    let (name, guard) = create_database().await;
    let direct = pool(on_database(&database_url(), &name), 4, guard.clone());
    let through = pool(on_database(&pgbouncer_url(), &name), max_size, guard);
    let store = PgStore::new(through).prepared_statements(prepared);
    store.migrate().await.expect("migrate through PgBouncer");
    direct
        .get()
        .await
        .expect("a direct connection to the test's database")
        .batch_execute(APP_TABLES)
        .await
        .expect("app tables");
    TestDb {
        schema: "public".to_owned(),
        pool: direct,
        store,
        sessions_table: "sessions".to_owned(),
    }
}

/// A new, empty database of the test's own, dropped when the guard is gone.
async fn create_database() -> (String, Arc<DatabaseGuard>) {
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    admin()
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create the test's database (the test role needs CREATEDB)");
    let guard = Arc::new(DatabaseGuard { name: name.clone() });
    (name, guard)
}

/// A direct connection to `DATABASE_URL`'s database.
pub async fn admin() -> tokio_postgres::Client {
    let (admin, connection) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at DATABASE_URL is unreachable: {e}"));
    tokio::spawn(connection);
    admin
}

/// An empty database of the test's own for an example server, which makes its tables itself:
/// its URL through PgBouncer and its direct URL. It is dropped when this value is gone.
pub struct ExampleDatabase {
    pub name: String,
    pub through: String,
    pub direct: String,
    _guard: Arc<DatabaseGuard>,
}

pub async fn example_database() -> ExampleDatabase {
    let (name, guard) = create_database().await;
    ExampleDatabase {
        through: url_on_database(&pgbouncer_url(), &name),
        direct: url_on_database(&database_url(), &name),
        name,
        _guard: guard,
    }
}

/// `url`, a `postgres://` URL, with the database `name` in its path.
fn url_on_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let (scheme, rest) = base
        .split_once("://")
        .expect("a postgres:// URL is needed here, not the key-value form");
    let authority = rest
        .split_once('/')
        .map_or(rest, |(authority, _)| authority);
    format!("{scheme}://{authority}/{name}{query}")
}

/// A pool on `config`, recycled as `PgStore` documents, that keeps the database of `guard`.
fn pool(config: tokio_postgres::Config, max_size: usize, guard: Arc<DatabaseGuard>) -> Pool {
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .post_create(deadpool_postgres::Hook::sync_fn(move |_, _| {
            let _owned = &guard;
            Ok(())
        }))
        .build()
        .expect("pool")
}

/// [`test_db`] with the demo users and characters.
pub async fn backend(prepared: bool, max_size: usize) -> Backend {
    let backend = Backend::Pg(Arc::new(test_db(prepared, max_size).await));
    backend.seed().await;
    backend
}

impl PgFixture {
    /// The conformance suite's fixture with the store behind PgBouncer in transaction pooling
    /// mode, without named prepared statements.
    pub async fn through_pgbouncer() -> Self {
        match backend(false, 8).await {
            Backend::Pg(db) => Self(db, tower_session_auth::store::UserIdType::BigInt),
            Backend::Memory(_) => unreachable!("the backend is on PostgreSQL"),
        }
    }
}

/// Drops a test's database when the last pool on it is gone. `WITH (FORCE)` ends the server
/// connections PgBouncer still keeps open to it.
struct DatabaseGuard {
    name: String,
}

impl Drop for DatabaseGuard {
    /// As the schema guard: a thread of its own, since a drop cannot await.
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE {} WITH (FORCE)", self.name);
        if let Err(error) = super::execute_from_drop(sql) {
            eprintln!("test database {} left behind: {error}", self.name);
        }
    }
}
