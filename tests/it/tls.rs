//! TLS to PostgreSQL (feature `tls`), against a cluster that accepts only TLS connections
//! (`hostssl` rules, `hostnossl … reject`), whose server certificate names `localhost` only and
//! is signed by a test CA: scripts/test brings it up and exports `TLS_DATABASE_URL` (host
//! `localhost`) and `TLS_ROOT_CERT` (the CA). `sslmode` and `sslrootcert` mean what they mean
//! to libpq, for the pool, the `LISTEN` connection and the cancel requests alike.
#![cfg(feature = "tls")]

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::example::Server;
use tower_session_auth::store::{PgTls, Scope, StoreError, Validation};
use tower_session_auth::watch::{SessionEnd, WatchEvent};
use tower_session_auth::{LoginOptions, PgStore, SessionConfig, SessionManager, UserId};

/// Upper bound for anything a test waits for: a failing test ends instead of hanging.
const PATIENCE: Duration = Duration::from_secs(15);

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {PATIENCE:?}"))
}

/// The TLS cluster's URL, host `localhost`. Missing is a loud failure, never a skip.
fn tls_url() -> String {
    let url = std::env::var("TLS_DATABASE_URL").expect(
        "TLS_DATABASE_URL is not set: run the tests with scripts/test, which brings up the \
         TLS-only PostgreSQL cluster",
    );
    assert!(
        url.starts_with("postgres://") && url.contains("@localhost:") && !url.contains('?'),
        "TLS_DATABASE_URL must be a postgres:// URL on host localhost without parameters: {url}"
    );
    url
}

/// The CA that signed the TLS cluster's certificate.
fn root_cert() -> String {
    let path = std::env::var("TLS_ROOT_CERT").expect(
        "TLS_ROOT_CERT is not set: run the tests with scripts/test, which writes the TLS \
         cluster's CA certificate",
    );
    assert!(
        Path::new(&path).is_file(),
        "TLS_ROOT_CERT {path} is missing"
    );
    path
}

/// `url` with `host` for `localhost` and the query `params`.
fn at(url: &str, host: &str, params: &str) -> String {
    format!(
        "{}?{params}",
        url.replace("@localhost:", &format!("@{host}:"))
    )
}

/// A schema of this test's own on the TLS cluster, with the crate's migrations, the
/// application's tables and the player (user 1); dropped when the value is.
struct TlsSchema {
    schema: String,
}

impl TlsSchema {
    async fn new() -> Self {
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        let admin = PgStore::connect(&at(&tls_url(), "localhost", "sslmode=require")).unwrap();
        admin
            .pool()
            .get()
            .await
            .unwrap_or_else(|e| panic!("the TLS cluster at TLS_DATABASE_URL is unreachable: {e}"))
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .expect("create schema");
        let this = Self { schema };
        let store = PgStore::connect(&this.url("localhost", "sslmode=require")).unwrap();
        store.migrate().await.expect("migrate");
        let client = store.pool().get().await.unwrap();
        client
            .batch_execute(common::APP_TABLES)
            .await
            .expect("app tables");
        client
            .batch_execute("INSERT INTO users VALUES (1, 'player', 'player', true)")
            .await
            .unwrap();
        this
    }

    /// The URL of this schema at `host`, with the query `params`.
    fn url(&self, host: &str, params: &str) -> String {
        at(
            &tls_url(),
            host,
            &format!("options=-c%20search_path%3D{}&{params}", self.schema),
        )
    }
}

impl Drop for TlsSchema {
    fn drop(&mut self) {
        let (url, schema) = (at(&tls_url(), "localhost", "sslmode=require"), &self.schema);
        let sql = format!("SET lock_timeout = '5s'; DROP SCHEMA {schema} CASCADE");
        let dropped = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    runtime.block_on(async {
                        let store = PgStore::connect(&url).map_err(StoreError::backend)?;
                        let client = store.pool().get().await?;
                        client.batch_execute(&sql).await?;
                        Ok::<_, StoreError>(())
                    })
                })
                .join()
        });
        if let Ok(Err(error)) = dropped {
            eprintln!("test schema {schema} left behind: {error}");
        }
    }
}

/// Logs the player in through a manager on `store` and validates the token: what every
/// request does.
async fn login_and_validate(store: &PgStore) {
    let manager = SessionManager::new(store.clone(), SessionConfig::default());
    let login = manager.login(1, LoginOptions::new()).await.unwrap();
    match manager.validate(&login.token, Scope::User).await.unwrap() {
        Validation::Valid(view) => {
            assert_eq!(view.session.user_id, UserId::Int(1));
            assert_eq!(view.user.as_ref().unwrap().username, "player");
        }
        other => panic!("the fresh session did not validate: {other:?}"),
    }
}

/// Whether the store's connections are encrypted, as the server sees them.
async fn encrypted(store: &PgStore) -> bool {
    store
        .pool()
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// The text of the error the first statement on `url` fails with.
async fn refusal(url: &str) -> String {
    let store = PgStore::connect(url).expect("the URL itself is accepted");
    let error = within("a refused connection", store.migrate())
        .await
        .expect_err("the connection must be refused");
    assert!(
        matches!(error, StoreError::Backend(_)),
        "a refused connection is a backend error: {error:?}"
    );
    error.to_string()
}

const HANDSHAKE: &str = "session store backend error: Error occurred while creating a new \
                         object: error performing TLS handshake: invalid peer certificate: ";

#[tokio::test]
async fn require_and_verify_full_serve_a_login_and_its_validation() {
    let db = TlsSchema::new().await;
    let root = root_cert();
    for params in [
        "sslmode=require".to_owned(),
        format!("sslmode=verify-full&sslrootcert={root}"),
        format!("sslmode=verify-ca&sslrootcert={root}"),
    ] {
        let store = PgStore::connect(&db.url("localhost", &params)).unwrap();
        login_and_validate(&store).await;
        assert!(encrypted(&store).await, "{params}");
    }
    // The key-value form reads the same parameters.
    let pairs = format!(
        "host=localhost port={port} user=tsa_tls password=tsa_tls dbname=tsa_tls \
         options='-c search_path={schema}' sslmode=verify-full sslrootcert='{root}'",
        port = tls_url()
            .rsplit_once(':')
            .unwrap()
            .1
            .split('/')
            .next()
            .unwrap(),
        schema = db.schema,
    );
    let store = PgStore::connect(&pairs).unwrap();
    login_and_validate(&store).await;
    assert!(encrypted(&store).await);
}

#[tokio::test]
async fn sslmode_disable_is_refused_by_the_server() {
    let db = TlsSchema::new().await;
    let error = refusal(&db.url("localhost", "sslmode=disable")).await;
    assert!(
        error.starts_with("session store backend error: Error occurred while creating a new object: db error: FATAL: pg_hba.conf rejects connection for host \"127.0.0.1\", user \"tsa_tls\", database \"tsa_tls\", no encryption")
            || error.contains("pg_hba.conf rejects connection for host \"::1\""),
        "{error}"
    );
}

/// A CA of its own, unrelated to the server's: its certificate, in a directory removed on drop.
struct OtherCa(PathBuf);

impl OtherCa {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("tsa-other-ca-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).unwrap();
        let status = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args([
                "-subj",
                "/CN=another CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .current_dir(&dir)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl is needed to make a CA (scripts/test installs it)");
        assert!(status.success(), "openssl failed: {status}");
        Self(dir)
    }

    fn cert(&self) -> String {
        self.0.join("ca.crt").display().to_string()
    }
}

impl Drop for OtherCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn a_wrong_root_certificate_is_refused() {
    let db = TlsSchema::new().await;
    let other = OtherCa::new();
    // `require` with a root certificate checks the chain, as libpq does.
    for mode in ["verify-full", "verify-ca", "require"] {
        let url = db.url(
            "localhost",
            &format!("sslmode={mode}&sslrootcert={}", other.cert()),
        );
        assert_eq!(
            refusal(&url).await,
            format!("{HANDSHAKE}UnknownIssuer"),
            "{mode}"
        );
    }
    // Without a root certificate, verify-full checks against the system's roots, which do not
    // hold the test CA.
    assert_eq!(
        refusal(&db.url("localhost", "sslmode=verify-full")).await,
        format!("{HANDSHAKE}UnknownIssuer")
    );
}

#[tokio::test]
async fn a_wrong_host_name_fails_verify_full_but_not_verify_ca() {
    let db = TlsSchema::new().await;
    let root = root_cert();
    // The certificate names `localhost`, not 127.0.0.1.
    let error = refusal(&db.url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={root}"),
    ))
    .await;
    assert!(
        error.starts_with(&format!(
            "{HANDSHAKE}certificate not valid for name \"127.0.0.1\""
        )),
        "{error}"
    );
    for params in [
        format!("sslmode=verify-ca&sslrootcert={root}"),
        format!("sslmode=require&sslrootcert={root}"),
        "sslmode=require".to_owned(),
    ] {
        let store = PgStore::connect(&db.url("127.0.0.1", &params)).unwrap();
        login_and_validate(&store).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listen_connection_uses_the_stores_tls() {
    let db = TlsSchema::new().await;
    let url = db.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", root_cert()),
    );
    let a = PgStore::connect(&url).unwrap();
    let b = PgStore::connect(&url).unwrap();
    b.install_invalidation_triggers().await.unwrap();
    let manager_a = SessionManager::new(a, SessionConfig::default());
    let manager_b = SessionManager::new(b.clone(), SessionConfig::default());
    let (listen, _) = PgTls::from_url(&url).unwrap();
    let listener = b.spawn_session_listener(listen, manager_b.clone());
    within("the listener's connection", async {
        while !manager_b.is_listening() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    // A session ended by another store is seen by this one's watch.
    let login = manager_a.login(1, LoginOptions::new()).await.unwrap();
    let mut watch = manager_b.watch(&login.token).await.unwrap().unwrap();
    manager_a.revoke_all(1).await.unwrap();
    assert_eq!(
        within("the watch", watch.next()).await,
        WatchEvent::Ended(SessionEnd::Revoked)
    );
    listener.abort();

    // The listener checks the certificate as the store does: at 127.0.0.1, whose name the
    // certificate does not carry, verify-full never lets it connect.
    let (wrong_host, _) = PgTls::from_url(&db.url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={}", root_cert()),
    ))
    .unwrap();
    let manager_c = SessionManager::new(b.clone(), SessionConfig::default());
    let listener = b.spawn_session_listener(wrong_host, manager_c.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!manager_c.is_listening());
    listener.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_statement_is_cancelled_over_tls() {
    let db = TlsSchema::new().await;
    let url = db.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", root_cert()),
    );
    let store = PgStore::connect(&url)
        .unwrap()
        .statement_timeout(Duration::from_millis(300));
    store.pool().resize(1);
    let manager = SessionManager::new(store.clone(), SessionConfig::default());
    let token = manager.login(1, LoginOptions::new()).await.unwrap().token;
    let pid: i32 = store
        .pool()
        .get()
        .await
        .unwrap()
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);

    // Another transaction holds the table; the store's statement waits on it and times out.
    let locker = PgStore::connect(&url).unwrap();
    let mut client = locker.pool().get().await.unwrap();
    let lock = client.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let error = manager.validate(&token, Scope::User).await.unwrap_err();
    assert!(matches!(error, StoreError::Timeout(_)), "{error:?}");
    // The cancel request (a connection of its own, encrypted and checked like the store's)
    // ends the wait while the lock is still held. (Asked outside the lock's transaction,
    // which would keep seeing its first snapshot of the statistics.)
    let observer = locker.pool().get().await.unwrap();
    within("the cancel request", async {
        loop {
            let waiting: i64 = observer
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'",
                    &[&pid],
                )
                .await
                .unwrap()
                .get(0);
            if waiting == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    lock.rollback().await.unwrap();
}

#[tokio::test]
async fn the_example_server_honours_sslmode() {
    let db = TlsSchema::new().await;
    // The example creates its own tables.
    PgStore::connect(&db.url("localhost", "sslmode=require"))
        .unwrap()
        .pool()
        .get()
        .await
        .unwrap()
        .batch_execute("DROP TABLE characters, users")
        .await
        .unwrap();
    let url = db.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", root_cert()),
    );
    let server = Server::start(Some(&url)).await;
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let response = http
        .post(format!("{}/login", server.base))
        .header("x-requested-with", "tls-test")
        .json(&serde_json::json!({"username": "player", "password": "player-pass"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let me: serde_json::Value = http
        .get(format!("{}/me", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["username"], "player");
    server.stop().await;
}
