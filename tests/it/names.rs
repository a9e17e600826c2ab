//! The crate's tables in a schema of the application's choosing (`PgStore::tables_schema`):
//! an application that already has a `sessions` table adopts the crate beside it; the crate's
//! functions find its tables whatever the caller's search path; `check_schema` names what is
//! missing; deployments in two schemas of one database keep their notifications apart; a
//! deployment migrated before the functions were pinned upgrades. The whole conformance suite
//! also runs in a chosen schema (tests/it/conformance.rs, `pg_tables_schema`), and so does the
//! example server (tests/it/mud_server.rs, `SESSION_SCHEMA`).

use crate::common;

use std::time::Duration;

use axum::http::StatusCode;
use common::app::{bearer, login, send};
use common::{APP_SESSIONS, Backend, TestDb, app_sessions, pool_for_schema};
use tokio::sync::mpsc;
use tower_session_auth::store::{Scope, Validation};
use tower_session_auth::watch::{SessionEnd, WatchEvent};
use tower_session_auth::{
    ClientInfo, LoginOptions, PgStore, Refresh, SessionConfig, SessionManager,
};

/// Upper bound for a notification to arrive: a failing test ends instead of hanging.
const WITHIN: Duration = Duration::from_secs(10);

fn pg(backend: &Backend) -> &TestDb {
    match backend {
        Backend::Pg(db) => db,
        Backend::Memory(_) => unreachable!(),
    }
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    db.client()
        .await
        .query_one(sql, &[])
        .await
        .expect(sql)
        .get(0)
}

/// Whether `name` (a table, possibly qualified) exists.
async fn exists(db: &TestDb, name: &str) -> bool {
    db.client()
        .await
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
        .await
        .unwrap()
        .get(0)
}

/// An application whose search path already holds a `sessions` table of its own (other
/// columns, its own rows) puts the crate's tables in a schema: migrations, login, validation
/// with its touch, remember-me, revocation, expiry and purge all work on the crate's tables
/// there, and the application's table is left exactly as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_with_its_own_sessions_table_adopts_the_crate_in_a_schema() {
    let backend = Backend::pg_in_tables_schema(APP_SESSIONS).await;
    let db = pg(&backend);
    let (schema, auth) = (&db.schema, db.tables_schema("auth"));
    let before = app_sessions(db).await;
    assert_eq!(before.len(), 2);

    // The fixture migrated once; again is a no-op. Migrations are recorded in the chosen
    // schema, and nothing of the crate's is in the application's.
    assert_eq!(db.store.migrate().await.unwrap(), 0);
    let applied: Vec<(i32, String)> = db
        .client()
        .await
        .query(
            &format!("SELECT version, name FROM {auth}.tower_session_auth_migrations ORDER BY 1"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        applied,
        [
            (1, "0001_sessions.sql".to_owned()),
            (2, "0002_refresh_secrets.sql".to_owned()),
            (3, "0003_function_search_path.sql".to_owned()),
        ]
    );
    for table in [
        "tower_session_auth_migrations",
        "refresh_series",
        "refresh_secrets",
    ] {
        assert!(!exists(db, &format!("{schema}.{table}")).await, "{table}");
        assert!(exists(db, &format!("{auth}.{table}")).await, "{table}");
    }
    db.store.check_schema().await.unwrap();
    db.store.install_invalidation_triggers().await.unwrap();
    let functions = |namespace: &str| {
        format!("SELECT count(*) FROM pg_proc WHERE pronamespace = '{namespace}'::regnamespace")
    };
    // Touch, expire and the four trigger functions.
    assert_eq!(count(db, &functions(&auth)).await, 6);
    assert_eq!(count(db, &functions(schema)).await, 0);

    let config = SessionConfig::default().touch_interval(Duration::from_secs(60));
    let h = common::harness(backend.clone(), config);
    let (token, session_id, _) = login(&h.app, 1).await;
    let crate_rows = format!("SELECT count(*) FROM {auth}.sessions");
    assert_eq!(count(db, &crate_rows).await, 1);
    let reply = send(&h.app, bearer("/me", &token)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["username"], "player");
    // A validation with its touch due calls the crate's touch function.
    h.clock.advance(Duration::from_secs(120));
    assert_eq!(
        send(&h.app, bearer("/me", &token)).await.status,
        StatusCode::OK
    );
    let touched: bool = db
        .client()
        .await
        .query_one(
            &format!("SELECT last_activity > created_at FROM {auth}.sessions WHERE id = $1"),
            &[&session_id.parse::<uuid::Uuid>().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(touched, "the touch reached {auth}.sessions");

    // Remember-me: a refresh trades the series' secret for a new session.
    let remembered = h
        .manager
        .login(2, LoginOptions::new().remember(true))
        .await
        .unwrap();
    let Refresh::Refreshed(refreshed) = h
        .manager
        .refresh(&remembered.refresh.unwrap(), ClientInfo::default())
        .await
        .unwrap()
    else {
        panic!("the refresh was refused")
    };
    let series = format!("SELECT count(*) FROM {auth}.refresh_series");
    assert_eq!(count(db, &series).await, 1);
    let secrets = format!("SELECT count(*) FROM {auth}.refresh_secrets");
    assert_eq!(count(db, &secrets).await, 2);

    // Revocation: logout ends the session.
    let reply = send(
        &h.app,
        axum::http::Request::post("/logout")
            .header("authorization", format!("Bearer {token}"))
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.body["removed"], true, "{:?}", reply.body);
    send(&h.app, bearer("/me", &token))
        .await
        .assert_invalid_session("after logout");

    // Expiry: a validation of an expired session deletes it (the crate's expire function),
    // and the purge deletes the rest.
    let (expiring, _, _) = login(&h.app, 3).await;
    assert_eq!(count(db, &crate_rows).await, 2);
    h.clock.advance(Duration::from_secs(9 * 3600));
    send(&h.app, bearer("/me", &expiring))
        .await
        .assert_invalid_session("expired");
    assert_eq!(count(db, &crate_rows).await, 1);
    // The refreshed session is expired too; the purge deletes it (the series lives on).
    assert_eq!(h.manager.purge_expired().await.unwrap(), 1);
    assert_eq!(count(db, &crate_rows).await, 0);
    assert_eq!(count(db, &series).await, 1);
    assert_eq!(
        h.manager
            .validate(&refreshed.token, Scope::User)
            .await
            .unwrap(),
        Validation::Unknown
    );

    // The application's table: the same rows, the expired one included.
    assert_eq!(app_sessions(db).await, before);
}

/// The crate's functions run with their `search_path` fixed to the schema they live in: a
/// caller whose search path holds another `sessions` table of the very same shape, or no
/// schema at all, still touches and deletes the crate's row. With a chosen schema, and by
/// default (pinned to the schema the migrations ran in).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crates_functions_find_its_tables_whatever_the_callers_search_path() {
    // A chosen schema: the decoy is in the connections' search path.
    let backend = Backend::pg_in_tables_schema("").await;
    let db = pg(&backend);
    let auth = db.tables_schema("auth");
    let decoy = db.schema.clone();
    pinned_functions_ignore_the_decoy(db, &auth, &decoy, &[&decoy, "''"]).await;

    // No schema chosen: the crate's tables are in the search path, and the decoy in a schema
    // a caller may put first.
    let backend = Backend::pg().await;
    let db = pg(&backend);
    let decoy = db.tables_schema("decoy");
    db.execute(&format!("CREATE SCHEMA {decoy}"), &[]).await;
    pinned_functions_ignore_the_decoy(db, &db.schema, &decoy, &[&decoy, "''"]).await;
}

/// In `db`, whose crate tables are in `home`: a session copied into `decoy.sessions` (the
/// same columns), then the crate's functions, called from connections with each of
/// `search_paths`, write only the crate's row.
async fn pinned_functions_ignore_the_decoy(
    db: &TestDb,
    home: &str,
    decoy: &str,
    search_paths: &[&str],
) {
    let config: Vec<String> = db
        .client()
        .await
        .query_one(
            &format!(
                "SELECT proconfig FROM pg_proc WHERE oid = '{home}.tower_session_auth_touch(\
                 uuid, timestamptz, timestamptz, timestamptz, bigint, text)'::regprocedure"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(config, [format!("search_path={home}, pg_temp")]);
    db.execute(
        &format!("CREATE TABLE {decoy}.sessions (LIKE {home}.sessions INCLUDING ALL)"),
        &[],
    )
    .await;
    let manager = SessionManager::new(db.store.clone(), SessionConfig::default());
    for search_path in search_paths {
        let login = manager.login(1, LoginOptions::new()).await.unwrap();
        let id = login.session.id.0;
        db.execute(
            &format!("INSERT INTO {decoy}.sessions SELECT * FROM {home}.sessions WHERE id = $1"),
            &[&id],
        )
        .await;
        let client = db.client().await;
        client
            .batch_execute(&format!("SET search_path = {search_path}"))
            .await
            .unwrap();
        let touched: bool = client
            .query_one(
                &format!(
                    "SELECT {home}.tower_session_auth_touch($1, '2100-01-01', 'infinity', \
                     NULL, NULL, NULL)"
                ),
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        assert!(touched, "search_path {search_path}");
        let activity = |schema: &str| {
            format!("SELECT last_activity = '2100-01-01' FROM {schema}.sessions WHERE id = $1")
        };
        let home_touched: bool = client
            .query_one(&activity(home), &[&id])
            .await
            .unwrap()
            .get(0);
        let decoy_touched: bool = client
            .query_one(&activity(decoy), &[&id])
            .await
            .unwrap()
            .get(0);
        assert!(home_touched && !decoy_touched, "search_path {search_path}");
        let expired: bool = client
            .query_one(
                &format!("SELECT {home}.tower_session_auth_expire($1, 'infinity')"),
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        assert!(expired, "search_path {search_path}");
        client.batch_execute("RESET search_path").await.unwrap();
        drop(client);
        let left =
            |schema: &str| format!("SELECT count(*) FROM {schema}.sessions WHERE id = '{id}'");
        assert_eq!(count(db, &left(home)).await, 0, "search_path {search_path}");
        assert_eq!(
            count(db, &left(decoy)).await,
            1,
            "search_path {search_path}"
        );
    }
}

/// `check_schema` names a missing chosen schema, and each missing table of the crate's, with
/// what to do about it.
#[tokio::test]
async fn check_schema_names_a_missing_crate_schema_or_table() {
    let db = TestDb::new().await;
    let auth = db.tables_schema("auth");
    let store = PgStore::new(db.pool.clone()).tables_schema(&auth).unwrap();
    assert_eq!(
        store.check_schema().await.unwrap_err().to_string(),
        format!("application schema mismatch: schema {auth} not found (run PgStore::migrate)")
    );
    assert_eq!(store.migrate().await.unwrap(), 3);
    store.check_schema().await.unwrap();
    db.execute(&format!("DROP TABLE {auth}.refresh_secrets"), &[])
        .await;
    assert_eq!(
        store.check_schema().await.unwrap_err().to_string(),
        format!(
            "application schema mismatch: table {auth}.refresh_secrets not found \
             (run PgStore::migrate)"
        )
    );

    // No schema chosen, and a search path without the crate's tables (nor the
    // application's).
    let empty = db.tables_schema("empty");
    db.execute(&format!("CREATE SCHEMA {empty}"), &[]).await;
    let pool = pool_for_schema(&common::database_url(), &empty, 1, WITHIN);
    assert_eq!(
        PgStore::new(pool)
            .check_schema()
            .await
            .unwrap_err()
            .to_string(),
        "application schema mismatch: table sessions not found (run PgStore::migrate); \
         table refresh_series not found (run PgStore::migrate); \
         table refresh_secrets not found (run PgStore::migrate); \
         table users not found; table characters not found"
    );
}

/// The schema's name is inserted into SQL: only a plain lower-case identifier is accepted.
#[tokio::test]
async fn a_tables_schema_must_be_a_plain_lower_case_identifier() {
    let pool = pool_for_schema("postgres://nobody@127.0.0.1:1/none", "public", 1, WITHIN);
    let refused = |name: &str| {
        let error = PgStore::new(pool.clone())
            .tables_schema(name)
            .expect_err(name);
        assert_eq!(error.field, "PgStore::tables_schema", "{name}");
        error.problem
    };
    assert_eq!(refused(""), "the schema name is empty");
    for name in [
        "Auth",
        "auth.sessions",
        "auth; DROP TABLE users",
        "1auth",
        "au th",
        "é",
    ] {
        assert_eq!(
            refused(name),
            format!("{name:?} is not a plain lower-case SQL identifier (a-z, 0-9, _)")
        );
    }
    assert_eq!(
        refused("pg_auth"),
        "\"pg_auth\": names starting with pg_ are reserved"
    );
    let long = "a".repeat(64);
    assert_eq!(refused(&long), format!("{long:?} is longer than 63 bytes"));
    for name in ["auth", "_sessions2", "user", &"a".repeat(63)] {
        assert!(
            PgStore::new(pool.clone()).tables_schema(name).is_ok(),
            "{name}"
        );
    }
}

/// A connection that `LISTEN`s on `channels` and forwards each notification as
/// (channel, payload).
async fn listen(
    channels: &[&str],
) -> (
    tokio_postgres::Client,
    mpsc::UnboundedReceiver<(String, String)>,
) {
    let (client, mut connection) =
        tokio_postgres::connect(&common::database_url(), tokio_postgres::NoTls)
            .await
            .unwrap();
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(message)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            if let tokio_postgres::AsyncMessage::Notification(note) = message {
                let _ = sender.send((note.channel().to_owned(), note.payload().to_owned()));
            }
        }
    });
    for channel in channels {
        client
            .batch_execute(&format!("LISTEN \"{channel}\""))
            .await
            .unwrap();
    }
    (client, receiver)
}

/// Two deployments in two schemas of one database, sharing the application's users table:
/// each one's notifications go to its own channel, `tower_session_auth_<schema>`, both hear
/// a change of a user they share, and a listening instance of one hears that deployment's
/// revocations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_in_two_schemas_keep_their_notifications_apart() {
    let backend = Backend::pg().await;
    let db = pg(&backend);
    let (a, b) = (db.tables_schema("a"), db.tables_schema("b"));
    let store = |schema: &str| PgStore::new(db.pool.clone()).tables_schema(schema).unwrap();
    let (store_a, store_b) = (store(&a), store(&b));
    for store in [&store_a, &store_b] {
        store.migrate().await.unwrap();
        store.install_invalidation_triggers().await.unwrap();
    }
    let (channel_a, channel_b) = (
        format!("tower_session_auth_{a}"),
        format!("tower_session_auth_{b}"),
    );
    let done = format!("done_{}", db.schema);
    let (_listener, mut heard) = listen(&[&channel_a, &channel_b, &done]).await;

    let manager_a = SessionManager::new(store_a.clone(), SessionConfig::default());
    let manager_b = SessionManager::new(store_b.clone(), SessionConfig::default());
    let in_a = manager_a.login(1, LoginOptions::new()).await.unwrap();
    let in_b = manager_b.login(1, LoginOptions::new()).await.unwrap();
    assert_eq!(manager_b.revoke_all(1).await.unwrap(), 1);
    backend.set_role(1, Some("admin")).await;
    // Notifications arrive in commit order: once this one is here, so are the others.
    db.execute(&format!("SELECT pg_notify('{done}', '')"), &[])
        .await;
    let mut notes = Vec::new();
    loop {
        let note = tokio::time::timeout(WITHIN, heard.recv())
            .await
            .expect("the notifications did not arrive in time")
            .unwrap();
        if note.0 == done {
            break;
        }
        notes.push(note);
    }
    notes.sort();
    let mut expected = vec![
        (channel_a.clone(), "user:1".to_owned()),
        (channel_b.clone(), format!("sessions:{}", in_b.session.id)),
        (channel_b.clone(), "user:1".to_owned()),
    ];
    expected.sort();
    assert_eq!(notes, expected);

    // Another instance of deployment A hears A's revocation through its listener.
    let instance = SessionManager::new(store_a.clone(), SessionConfig::default());
    let listener =
        store_a.spawn_session_listener(common::database_url().parse().unwrap(), instance.clone());
    tokio::time::timeout(WITHIN, async {
        while !instance.is_listening() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the listener did not connect in time");
    let mut watch = instance.watch(&in_a.token).await.unwrap().unwrap();
    assert!(manager_a.remove_by_token(&in_a.token).await.unwrap());
    assert_eq!(
        tokio::time::timeout(WITHIN, watch.next())
            .await
            .expect("the watch did not report"),
        WatchEvent::Ended(SessionEnd::Revoked)
    );
    listener.abort();
}

/// A deployment migrated before migration 3 (the crate's tables in its search path) upgrades:
/// `migrate` applies migration 3 alone, which pins the functions migration 1 created to their
/// schema, and its sessions are still valid.
#[tokio::test]
async fn an_existing_deployment_upgrades_to_pinned_functions() {
    let db = TestDb::new().await;
    let old = db.tables_schema("old");
    db.client()
        .await
        .batch_execute(&format!(
            "CREATE SCHEMA {old}; SET search_path = {old}; {} {} \
             CREATE TABLE tower_session_auth_migrations (version int PRIMARY KEY, \
                 name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now()); \
             INSERT INTO tower_session_auth_migrations (version, name) \
                 VALUES (1, '0001_sessions.sql'), (2, '0002_refresh_secrets.sql'); \
             RESET search_path",
            include_str!("../../src/store/migrations/0001_sessions.sql"),
            include_str!("../../src/store/migrations/0002_refresh_secrets.sql"),
        ))
        .await
        .unwrap();
    let pool = pool_for_schema(
        &common::database_url(),
        &format!("{old},{}", db.schema),
        2,
        WITHIN,
    );
    let store = PgStore::new(pool);
    assert_eq!(store.migrate().await.unwrap(), 1);
    assert_eq!(store.migrate().await.unwrap(), 0);
    let config: Vec<String> = db
        .client()
        .await
        .query_one(
            &format!(
                "SELECT proconfig FROM pg_proc \
                 WHERE oid = '{old}.tower_session_auth_expire(uuid, timestamptz)'::regprocedure"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(config, [format!("search_path={old}, pg_temp")]);
    db.execute(
        "INSERT INTO users (id, username, role, is_active) VALUES (1, 'player', 'player', true)",
        &[],
    )
    .await;
    let manager = SessionManager::new(
        store,
        SessionConfig::default().touch_interval(Duration::ZERO),
    );
    let login = manager.login(1, LoginOptions::new()).await.unwrap();
    assert!(matches!(
        manager.validate(&login.token, Scope::User).await.unwrap(),
        Validation::Valid(_)
    ));
}
