//! The PostgreSQL store behind PgBouncer in transaction pooling mode (`PGBOUNCER_URL`, which
//! scripts/test brings up): with `PgStore::prepared_statements(false)` it passes the whole
//! conformance suite and its other operations work; with named prepared statements it fails
//! as soon as a statement is bound on another server connection than the one it was prepared
//! on. Each test has a database of its own (see `common::bouncer`).

use std::sync::Arc;

use axum::http::StatusCode;
use common::app::{bearer, router, send};
use common::bouncer::{on_database, pgbouncer_url};
use common::{Backend, TestDb};
use tokio_postgres::error::SqlState;
use tower_session_auth::store::{Scope, StoreError, Validation};
use tower_session_auth::test_util::ManualClock;
use tower_session_auth::{LoginOptions, SessionConfig, SessionManager};

use crate::common;

/// One test per conformance check, on a store that reaches PostgreSQL through PgBouncer.
mod suite {
    tower_session_auth::conformance_tests!(crate::common::PgFixture::through_pgbouncer);
}

fn pg(backend: &Backend) -> &TestDb {
    match backend {
        Backend::Pg(db) => db,
        Backend::Memory(_) => unreachable!(),
    }
}

/// Holds, in an open transaction, the server connection of PgBouncer's pool for the test's
/// database on which the store's statements were prepared: the store's next statement then
/// goes to another server connection. Clients are opened until one lands on it (PgBouncer
/// hands out the server connection used last, so the first one does), and all are kept.
async fn hold_the_prepared_server(db: &TestDb) -> Vec<tokio_postgres::Client> {
    let name: String = db
        .client()
        .await
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    let mut held = Vec::new();
    for _ in 0..5 {
        let (client, connection) = on_database(&pgbouncer_url(), &name)
            .connect(tokio_postgres::NoTls)
            .await
            .expect("a connection through PgBouncer");
        tokio::spawn(connection);
        // The simple query protocol: no prepared statement of its own.
        client.batch_execute("BEGIN").await.unwrap();
        let prepared = client
            .simple_query("SELECT count(*) FROM pg_prepared_statements")
            .await
            .unwrap();
        let count = prepared.iter().find_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        });
        held.push(client);
        if count.as_deref() != Some("0") {
            return held;
        }
    }
    panic!("no server connection of PgBouncer's pool holds the store's prepared statements");
}

/// Why `prepared_statements(false)` exists. A named prepared statement lives on one server
/// connection, and PgBouncer in transaction pooling mode gives each statement outside a
/// transaction whichever server connection is free: once another client holds the one the
/// store prepared its statements on, validation fails with `prepared statement "s…" does not
/// exist`, and a request gets 500. Without named prepared statements, the same store answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_prepared_statements_break_behind_a_transaction_pooler() {
    // One connection to PgBouncer, and so far one server connection behind it (the
    // migrations'): the login's and the validation's statements are prepared and run on it.
    let backend = common::bouncer::backend(true, 1).await;
    let db = pg(&backend);
    let clock = Arc::new(ManualClock::default());
    let prepared =
        SessionManager::new(db.store.clone(), SessionConfig::default()).with_clock(clock.clone());
    let unnamed = SessionManager::new(
        db.store.clone().prepared_statements(false),
        SessionConfig::default(),
    )
    .with_clock(clock);
    let login = prepared.login(1, LoginOptions::new()).await.unwrap();
    let token = login.token.expose().to_owned();
    assert!(matches!(
        prepared.validate(&login.token, Scope::User).await,
        Ok(Validation::Valid(_))
    ));
    assert_eq!(
        send(&router(prepared.clone()), bearer("/me", &token))
            .await
            .status,
        StatusCode::OK
    );

    let _held = hold_the_prepared_server(db).await;

    let error = match prepared.validate(&login.token, Scope::User).await {
        Err(StoreError::Backend(error)) => error,
        other => panic!("expected a backend error, got {other:?}"),
    };
    let error = error
        .downcast_ref::<tokio_postgres::Error>()
        .expect("a tokio-postgres error");
    assert_eq!(error.code(), Some(&SqlState::INVALID_SQL_STATEMENT_NAME));
    let message = error.as_db_error().unwrap().message();
    assert!(
        message.starts_with("prepared statement \"s") && message.ends_with("\" does not exist"),
        "{message}"
    );
    let reply = send(&router(prepared), bearer("/me", &token)).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.detail(), "Session store unavailable");

    // The same pool, the same moment: unnamed statements go through.
    let Ok(Validation::Valid(view)) = unnamed.validate(&login.token, Scope::User).await else {
        panic!("validation without named prepared statements failed");
    };
    assert_eq!(view.session.id, login.session.id);
    let reply = send(&router(unnamed), bearer("/me", &token)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["username"], "player");
}

/// What the store does besides sessions works through PgBouncer too: migrations (again: none
/// left; and into a schema of their own, whose `SET LOCAL search_path` stays in their
/// transaction), the schema check, installing the invalidation triggers, and durable
/// revocations (a `SET LOCAL` in the revocation's transaction).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_administration_works_through_pgbouncer() {
    let backend = common::bouncer::backend(false, 2).await;
    let db = pg(&backend);
    let store = db.store.clone();
    assert_eq!(store.migrate().await.unwrap(), 0);
    store.check_schema().await.unwrap();
    store.install_invalidation_triggers().await.unwrap();
    let manager = SessionManager::new(store.durable_revocations(true), SessionConfig::default());
    for _ in 0..2 {
        manager.login(1, LoginOptions::new()).await.unwrap();
    }
    assert_eq!(manager.revoke_all(1).await.unwrap(), 2);
    assert_eq!(db.session_rows().await, 0);

    let auth = db.store.clone().tables_schema("auth").unwrap();
    assert!(auth.migrate().await.unwrap() > 0);
    auth.check_schema().await.unwrap();
    let manager = SessionManager::new(auth, SessionConfig::default());
    let login = manager.login(1, LoginOptions::new()).await.unwrap();
    assert!(matches!(
        manager.validate(&login.token, Scope::User).await,
        Ok(Validation::Valid(_))
    ));
    let in_auth: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM auth.sessions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!((in_auth, db.session_rows().await), (1, 0));
}
