//! The PostgreSQL store behind PgBouncer in transaction pooling mode (`PGBOUNCER_URL`, which
//! scripts/test brings up): with `PgStore::prepared_statements(false)` it passes the whole
//! conformance suite and its other operations work; with named prepared statements it fails
//! as soon as a statement is bound on another server connection than the one it was prepared
//! on. So does the example server, with `DATABASE_PREPARED=false` and without. Each test has a
//! database of its own (see `common::bouncer`).

use std::collections::HashSet;
use std::sync::Arc;

use axum::http::StatusCode;
use common::app::{bearer, router, send};
use common::bouncer::{on_database, pgbouncer_url};
use common::example::Server;
use common::{Backend, TestDb};
use reqwest::Method;
use serde_json::json;
use tokio_postgres::error::SqlState;
use tower_session_auth::store::{Scope, StoreError, Validation};
use tower_session_auth::test_util::ManualClock;
use tower_session_auth::{LoginOptions, SessionConfig, SessionManager};

use crate::common;
use crate::live::{call, closed, connect, player};

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

/// The backend process ids of the server connections PgBouncer has open to the database
/// `name`, as its admin console lists them (`SHOW SERVERS`).
async fn servers_of(name: &str) -> HashSet<i32> {
    let (console, connection) = on_database(&pgbouncer_url(), "pgbouncer")
        .connect(tokio_postgres::NoTls)
        .await
        .expect("PgBouncer's admin console (the test role is in stats_users)");
    tokio::spawn(connection);
    console
        .simple_query("SHOW SERVERS")
        .await
        .unwrap()
        .iter()
        .filter_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) if row.get("database") == Some(name) => {
                Some(row.get("remote_pid").unwrap().parse().unwrap())
            }
            _ => None,
        })
        .collect()
}

/// Takes every server connection PgBouncer has open to the database `name`, each held by a
/// client of its own in an open transaction: the next statement of anyone else goes to a new
/// server connection, on which nothing has been prepared. PgBouncer hands out an idle server
/// connection before it opens another, so clients are opened until each one there was is
/// held (every one the test has opened is kept).
async fn hold_every_server(name: &str) -> Vec<tokio_postgres::Client> {
    let mut servers = servers_of(name).await;
    assert!(
        !servers.is_empty(),
        "PgBouncer has no server connection to {name}"
    );
    let mut held = Vec::new();
    while !servers.is_empty() {
        assert!(
            held.len() < 8,
            "PgBouncer did not hand out its server connections {servers:?} to {name}"
        );
        let (client, connection) = on_database(&pgbouncer_url(), name)
            .connect(tokio_postgres::NoTls)
            .await
            .expect("a connection through PgBouncer");
        tokio::spawn(connection);
        // The simple query protocol: no prepared statement of its own.
        let messages = client
            .simple_query("BEGIN; SELECT pg_backend_pid()")
            .await
            .unwrap();
        let pid = messages.iter().find_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        });
        servers.remove(&pid.unwrap().parse().unwrap());
        held.push(client);
    }
    held
}

/// `POST /login` on `server` as `username`: the status and body.
async fn log_in(server: &Server, username: &str) -> (StatusCode, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/login", server.base))
        .header("x-requested-with", "test")
        .json(&json!({"username": username, "password": format!("{username}-pass")}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// Logs a player in on `server` (and selects a character), makes a few authenticated
/// requests, so that each of the server's pooled connections has run the validating statement
/// and the example's own query of characters (and prepared them, unless
/// `DATABASE_PREPARED=false`), then takes every server connection PgBouncer has to the
/// database `name`. Returns the token, its session's id and the clients that hold the server
/// connections.
async fn log_in_then_hold_every_server(
    server: &Server,
    name: &str,
) -> (String, String, Vec<tokio_postgres::Client>) {
    let (token, session_id) = player(server, "player").await;
    for _ in 0..4 {
        for path in ["/me", "/characters"] {
            let (status, body) = call(server, Method::GET, path, &token, None).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
        }
    }
    (token, session_id, hold_every_server(name).await)
}

/// The example server through PgBouncer in transaction pooling mode. By default it prepares
/// its statements on the server connections it happens to get: once other clients hold
/// those, its requests are `500 Session store unavailable`. With `DATABASE_PREPARED=false`
/// the same moment changes nothing: it serves authenticated requests (one of which reads its
/// own tables), the game socket, a login and a logout; and, with `DATABASE_LISTEN_URL`
/// direct, a revocation made elsewhere closes the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_serves_through_pgbouncer_with_database_prepared_false() {
    let db = common::bouncer::example_database().await;

    // The default: named prepared statements. A request fails whenever a statement is run
    // on another server connection than the one it was prepared on. That may happen already
    // while the server warms up (when two of its tasks overlapped, its pooled connections
    // prepared on different server connections); once other clients hold every server
    // connection it prepared on, it does.
    let server = Server::start_with(Some(&db.through), &[]).await;
    let unavailable = (
        StatusCode::INTERNAL_SERVER_ERROR,
        json!({"detail": "Session store unavailable"}),
    );
    let mut token = None;
    for _ in 0..3 {
        let (status, body) = log_in(&server, "player").await;
        if status == StatusCode::OK {
            token = Some(body["token"].as_str().unwrap().to_owned());
            break;
        }
        assert_eq!((status, body), unavailable);
    }
    let token = token.expect("three logins failed in a row");
    for _ in 0..4 {
        let reply = call(&server, Method::GET, "/me", &token, None).await;
        assert!(
            reply.0 == StatusCode::OK || reply == unavailable,
            "{reply:?}"
        );
    }
    let held = hold_every_server(&db.name).await;
    // Each pooled connection of the server's that validated the token above fails now; four
    // requests reach each of its (at most four) pooled connections.
    let mut failed = false;
    for _ in 0..4 {
        let reply = call(&server, Method::GET, "/me", &token, None).await;
        if reply == unavailable {
            failed = true;
            break;
        }
        assert_eq!(reply.0, StatusCode::OK, "{reply:?}");
    }
    assert!(
        failed,
        "with named prepared statements, the server answered while every server connection \
         it had prepared them on was taken"
    );
    drop(held);
    server.stop().await;

    let server = Server::start_with(
        Some(&db.through),
        &[
            ("DATABASE_PREPARED", "false"),
            ("DATABASE_LISTEN_URL", &db.direct),
        ],
    )
    .await;
    let (token, session_id, _held) = log_in_then_hold_every_server(&server, &db.name).await;
    let (status, me) = call(&server, Method::GET, "/me", &token, None).await;
    assert_eq!(
        (status, &me["username"]),
        (StatusCode::OK, &json!("player"))
    );
    let (status, characters) = call(&server, Method::GET, "/characters", &token, None).await;
    assert_eq!(status, StatusCode::OK, "{characters}");
    let names: Vec<&str> = characters
        .as_array()
        .unwrap()
        .iter()
        .map(|character| character["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["player_char", "player_alt"]);
    // The game socket, which a revocation made by another instance (here directly in the
    // database) closes through the LISTEN connection.
    let mut socket = connect(&server, &token).await;
    let (direct, connection) = tokio_postgres::connect(&db.direct, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let deleted = direct
        .execute(
            "DELETE FROM sessions WHERE id = $1",
            &[&session_id.parse::<uuid::Uuid>().unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    assert_eq!(closed(&mut socket).await, (4001, "session revoked".into()));
    // A login and a logout.
    let (token, _) = player(&server, "builder").await;
    let (status, body) = call(&server, Method::POST, "/logout", &token, None).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"message": "Goodbye, builder!"}))
    );
    let (status, _) = call(&server, Method::GET, "/me", &token, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    server.stop().await;
}
