//! Faults of a real PostgreSQL, and how the session layer lives through them. Every failure is
//! real: a TCP proxy written here sits between the pool and PostgreSQL and can refuse new
//! connections and cut the open ones, backends are killed with `pg_terminate_backend`, and a
//! pool is drained by holding its connections. Nothing is mocked.
//!
//! Proven here:
//!
//! - **Database unreachable, then back**: with the link cut, every authenticated route answers
//!   `500 {"detail": "Session store unavailable"}` (never 401, never 403) within the pool's wait
//!   timeout plus a generous margin, sends no `Set-Cookie` when the token came by cookie (nor
//!   when a cookie-borne logout or re-login fails), and `/plain`, which extracts nothing, keeps
//!   answering 200. When the link is restored, the very next requests succeed through the same
//!   router, manager and pool, and the outage neither removed nor created a session.
//! - **Server-side connection loss**: while 8 tasks keep requests flowing, every backend of the
//!   pool is terminated. The layer recovers on its own (the pool uses
//!   `RecyclingMethod::Fast`, as `PgStore` documents, which discards the dead connections): each task gets 200s again, the pool runs on new backends, at most two
//!   requests failed per killed backend (so at most `2 × pool size`), every failure was exactly
//!   `500 Session store unavailable`, and no request was ever answered 200 for another user,
//!   401 or 403.
//! - **Pool exhaustion**: with both connections of a 2-connection pool held, a burst of 20
//!   authenticated requests all answer `500 Session store unavailable` within the wait timeout
//!   plus a margin (none hangs, none is granted), `/plain` still answers 200; once the
//!   connections are released, the same requests succeed.
//! - **A statement that never finishes**: with `LOCK TABLE sessions` held by another
//!   transaction, or a proxy that stops forwarding without closing, requests answer `500
//!   Session store unavailable` within `PgStore::statement_timeout` plus the pool's timeouts;
//!   the timed-out connection is never handed out again (the next request runs on another
//!   backend, or succeeds only because the silent connection was dropped), and the locked
//!   statement is cancelled on the server.
//! - **The sweeper survives database errors**: a sweeper started while the database is
//!   unreachable logs `session sweeper failed` (repeatedly) and keeps running; once the link is
//!   back it deletes the sessions that expired, and only those.

use crate::common;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use common::app::{Reply, bearer, get_with, router, send};
use common::{Backend, TestDb, database_url, pool_on, warm};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower_session_auth::{
    LoginOptions, PgStore, Session, SessionConfig, SessionLayer, SessionManager, store::StoreError,
    test_util::ManualClock,
};

/// The rejection text of every store failure.
const UNAVAILABLE: &str = "Session store unavailable";

/// A generous allowance on top of a pool's wait timeout: a bound on hanging, not on speed.
const MARGIN: Duration = Duration::from_secs(5);

/// How long any single await may take before the test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(30);

async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
}

fn pg(backend: &Backend) -> Arc<TestDb> {
    match backend {
        Backend::Pg(db) => db.clone(),
        Backend::Memory(_) => unreachable!("these tests run on PostgreSQL"),
    }
}

/// PostgreSQL's host and port, as DATABASE_URL names them.
fn database_address() -> (String, u16) {
    let config = database_config();
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        other => panic!("the proxy needs a TCP host in DATABASE_URL, found {other:?}"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    (host, port)
}

/// `url` with its host and port replaced by `addr` (user, password, database and parameters
/// are kept).
fn url_via(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url
        .split_once("://")
        .expect("DATABASE_URL is a postgres:// URL");
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let userinfo = authority
        .rsplit_once('@')
        .map(|(userinfo, _)| format!("{userinfo}@"))
        .unwrap_or_default();
    format!("{scheme}://{userinfo}{addr}{tail}")
}

/// DATABASE_URL as a connection config.
fn database_config() -> tokio_postgres::Config {
    database_url()
        .parse()
        .expect("DATABASE_URL is not a valid URL")
}

/// A TCP proxy in front of PostgreSQL with two switches: when the link is down it closes every
/// connection it carries and closes new ones as soon as they are accepted; when it stalls, it
/// stops forwarding on every connection it carries or accepts, without closing any (a network
/// that drops packets), until the link goes down or the proxy is dropped.
struct Proxy {
    addr: SocketAddr,
    link: watch::Sender<bool>,
    stall: watch::Sender<bool>,
    accepted: Arc<AtomicUsize>,
    /// Connections being forwarded (or held silent) right now.
    open: Arc<AtomicUsize>,
    acceptor: JoinHandle<()>,
}

impl Proxy {
    async fn start() -> Self {
        let target = database_address();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (link, state) = watch::channel(true);
        let (stall, stalled) = watch::channel(false);
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let open = Arc::new(AtomicUsize::new(0));
        let carrying = open.clone();
        let acceptor = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let mut state = state.clone();
                if !*state.borrow_and_update() {
                    drop(inbound); // refused: the client reads EOF during its startup
                    continue;
                }
                let target = target.clone();
                let mut stalled = stalled.clone();
                carrying.fetch_add(1, Ordering::SeqCst);
                let carrying = carrying.clone();
                tokio::spawn(async move {
                    // Counted from acceptance to the moment both sockets are dropped.
                    struct Carried(Arc<AtomicUsize>);
                    impl Drop for Carried {
                        fn drop(&mut self) {
                            self.0.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                    let _carried = Carried(carrying);
                    let Ok(mut outbound) = TcpStream::connect((target.0.as_str(), target.1)).await
                    else {
                        return;
                    };
                    // Both sockets are dropped, so closed, when either side ends or the link
                    // goes down (or the proxy itself is dropped).
                    let silenced = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => false,
                        _ = async { state.wait_for(|up| !*up).await.is_ok() } => false,
                        _ = async { stalled.wait_for(|stalled| *stalled).await.is_ok() } => true,
                    };
                    if silenced {
                        // Nothing is forwarded any more, and nothing is closed.
                        let _ = state.wait_for(|up| !*up).await;
                    }
                });
            }
        });
        Self {
            addr,
            link,
            stall,
            accepted,
            open,
            acceptor,
        }
    }

    /// Refuses new connections and cuts the open ones; returns once every connection it
    /// carried is closed, so that the next request cannot slip through one still open.
    async fn cut(&self) {
        self.link.send_replace(false);
        while self.open.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    fn restore(&self) {
        self.link.send_replace(true);
    }

    /// Stops forwarding (or resumes it for new connections), closing nothing.
    fn set_stalled(&self, stalled: bool) {
        self.stall.send_replace(stalled);
    }

    /// Connections accepted so far (refused ones included).
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// DATABASE_URL's connection config, pointed at this proxy.
    fn config(&self) -> tokio_postgres::Config {
        url_via(&database_url(), self.addr)
            .parse()
            .expect("proxied URL")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

fn post_with(path: &str, header: (&str, &str)) -> Request<Body> {
    Request::post(path)
        .header(header.0, header.1)
        .body(Body::empty())
        .unwrap()
}

fn assert_unavailable(label: &str, reply: &Reply) {
    assert_eq!(
        reply.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{label}: {:?}",
        reply.body
    );
    assert_eq!(reply.detail(), UNAVAILABLE, "{label}");
    assert!(
        reply.headers.get("www-authenticate").is_none(),
        "{label}: a store failure is not a 401"
    );
    assert!(
        reply.set_cookies().is_empty(),
        "{label}: a store failure must leave the cookie alone: {:?}",
        reply.set_cookies()
    );
}

/// Sends a request, failing the test if it takes longer than `bound`.
async fn send_bounded(app: &Router, request: Request<Body>, bound: Duration) -> Reply {
    let started = Instant::now();
    let label = format!("{} {}", request.method(), request.uri());
    let reply = within(PATIENCE, &label, send(app, request)).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < bound,
        "{label} took {elapsed:?}, beyond the bound of {bound:?}"
    );
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_unreachable_then_back() {
    let backend = Backend::pg().await;
    let db = pg(&backend);
    let proxy = Proxy::start().await;
    let wait = Duration::from_secs(1);
    let bound = wait + MARGIN;
    let pool = pool_on(proxy.config(), &db.schema, 4, wait);
    let manager = SessionManager::new(PgStore::new(pool), SessionConfig::default());
    // The shared router, plus a login that reports a store error instead of unwrapping it.
    let relogin = Router::new()
        .route(
            "/relogin",
            post(|session: Session| async move {
                session
                    .login(3, LoginOptions::new())
                    .await
                    .map(|login| login.session.id.to_string())
            }),
        )
        .layer(SessionLayer::new(manager.clone()));
    let app = router(manager.clone()).merge(relogin);

    // Link up: the admin logs in (through the proxy) and picks a character.
    let login = manager.login(3, LoginOptions::new()).await.unwrap();
    let token = login.token.expose().to_owned();
    manager
        .select_character(login.session.id, 3, 30)
        .await
        .unwrap();
    let cookie = format!("id={token}");
    let ok_paths = ["/me", "/optional", "/game", "/logs", "/admin-area"];
    for path in ok_paths {
        let reply = send_bounded(&app, bearer(path, &token), bound).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {:?}", reply.body);
    }
    assert!(proxy.accepted() > 0, "the pool does go through the proxy");

    proxy.cut().await;
    for round in 0..3 {
        for path in ok_paths {
            let label = format!("round {round}, bearer {path}");
            assert_unavailable(
                &label,
                &send_bounded(&app, bearer(path, &token), bound).await,
            );
            let label = format!("round {round}, cookie {path}");
            let request = get_with(path, ("cookie", &cookie));
            assert_unavailable(&label, &send_bounded(&app, request, bound).await);
        }
        // A logout or a fresh login presented by cookie fails closed too, cookie untouched.
        let request = post_with("/logout", ("cookie", &cookie));
        assert_unavailable("cookie logout", &send_bounded(&app, request, bound).await);
        let request = post_with("/relogin", ("cookie", &cookie));
        assert_unavailable("cookie re-login", &send_bounded(&app, request, bound).await);
        // Routes that extract nothing never reach the store.
        for request in [
            bearer("/plain", &token),
            get_with("/plain", ("cookie", &cookie)),
        ] {
            let reply = send_bounded(&app, request, bound).await;
            assert_eq!(reply.status, StatusCode::OK, "/plain during the outage");
            assert_eq!(reply.body, "ok");
        }
    }
    assert_eq!(
        db.session_rows().await,
        1,
        "the outage neither removed nor created a session"
    );

    // Link back: the same router, manager and pool serve again, from the next request on.
    proxy.restore();
    let reply = send_bounded(&app, bearer("/me", &token), bound).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["username"], "admin");
    let reply = send_bounded(&app, get_with("/me", ("cookie", &cookie)), bound).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert!(reply.set_cookies().is_empty());
    let reply = send_bounded(&app, bearer("/game", &token), bound).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["character_id"], 30);
    assert_eq!(reply.body["world_id"], "pipeworks_web");
    for path in ok_paths {
        let reply = send_bounded(&app, bearer(path, &token), bound).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {:?}", reply.body);
    }
    // A second outage and recovery behave the same.
    proxy.cut().await;
    assert_unavailable(
        "second outage",
        &send_bounded(&app, bearer("/me", &token), bound).await,
    );
    proxy.restore();
    let reply = send_bounded(&app, bearer("/me", &token), bound).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(db.session_rows().await, 1);
}

/// The outcome of one request of the load.
struct Outcome {
    status: StatusCode,
    detail: String,
    username: Option<String>,
    after_kill: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_recovers_from_terminated_backends() {
    const POOL_SIZE: usize = 4;
    const TASKS: usize = 8;
    let backend = Backend::pg().await;
    let db = pg(&backend);
    // The pool's backends are told apart from every other by their application_name.
    let application = format!("tsa_kill_{}", &db.schema[2..14]);
    let mut config = database_config();
    config.application_name(&application);
    // A long wait timeout: a pool wait on a loaded machine must not count as a failure here.
    let pool = pool_on(config, &db.schema, POOL_SIZE, Duration::from_secs(20));
    warm(&pool).await;
    let manager = SessionManager::new(PgStore::new(pool), SessionConfig::default());
    let app = router(manager.clone());
    let users = [
        (1, "player"),
        (2, "builder"),
        (3, "admin"),
        (4, "superuser"),
    ];
    let mut tokens = Vec::new();
    for (user_id, _) in users {
        let login = manager.login(user_id, LoginOptions::new()).await.unwrap();
        tokens.push(login.token.expose().to_owned());
    }

    let killed_flag = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let successes = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (app, token) = (app.clone(), tokens[task % users.len()].clone());
        let (killed_flag, stop, successes) = (killed_flag.clone(), stop.clone(), successes.clone());
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let after_kill = killed_flag.load(Ordering::SeqCst);
                let reply = within(PATIENCE, "a request of the load", async {
                    send(&app, bearer("/me", &token)).await
                })
                .await;
                if reply.status == StatusCode::OK {
                    successes.fetch_add(1, Ordering::SeqCst);
                }
                outcomes.push(Outcome {
                    status: reply.status,
                    detail: reply.detail().to_owned(),
                    username: reply.body["username"].as_str().map(str::to_owned),
                    after_kill,
                });
            }
            outcomes
        }));
    }

    // Let the load fill the pool, then kill every backend of the pool.
    within(PATIENCE, "the load warming up", async {
        while successes.load(Ordering::SeqCst) < 200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let (killer, connection) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let started = Instant::now();
    // pg_terminate_backend is in the select list, so it only runs on the rows the filter keeps.
    let killed: Vec<i32> = killer
        .query(
            "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE usename = current_user AND pid <> pg_backend_pid() \
               AND query NOT ILIKE '%pg_stat_activity%' AND application_name = $1",
            &[&application],
        )
        .await
        .unwrap()
        .iter()
        .filter(|row| row.get::<_, bool>(1))
        .map(|row| row.get(0))
        .collect();
    killed_flag.store(true, Ordering::SeqCst);
    assert!(
        !killed.is_empty() && killed.len() <= POOL_SIZE,
        "expected to kill the pool's backends, killed {killed:?}"
    );

    // Keep the load going until the kill is well behind it: ~2 s in all, and every task has
    // had successes since.
    let outcomes = within(PATIENCE, "the load after the kill", async {
        tokio::time::sleep(Duration::from_millis(1500).saturating_sub(started.elapsed())).await;
        let after = successes.load(Ordering::SeqCst);
        while successes.load(Ordering::SeqCst) < after + 20 * TASKS {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.store(true, Ordering::SeqCst);
        let mut all = Vec::new();
        for task in tasks {
            all.push(task.await.expect("load task"));
        }
        all
    })
    .await;

    let mut failures = 0;
    for (task, outcomes) in outcomes.iter().enumerate() {
        let owner = users[task % users.len()].1;
        for (n, outcome) in outcomes.iter().enumerate() {
            match outcome.status {
                StatusCode::OK => assert_eq!(
                    outcome.username.as_deref(),
                    Some(owner),
                    "task {task}, request {n}: 200 for another identity"
                ),
                StatusCode::INTERNAL_SERVER_ERROR => {
                    assert_eq!(outcome.detail, UNAVAILABLE, "task {task}, request {n}");
                    failures += 1;
                }
                other => panic!(
                    "task {task}, request {n}: {other} {:?} (a store failure must be a 500)",
                    outcome.detail
                ),
            }
        }
        let recovered = outcomes
            .iter()
            .filter(|outcome| outcome.after_kill && outcome.status == StatusCode::OK)
            .count();
        assert!(
            recovered > 0,
            "task {task} had no success after the kill: the layer did not recover"
        );
        assert_eq!(
            outcomes.last().map(|outcome| outcome.status),
            Some(StatusCode::OK),
            "task {task} still failing at the end of the load"
        );
    }
    // A killed backend fails at most two requests: the one in flight on it, and one that fast
    // recycling hands its connection to before the client has noticed the closed socket.
    assert!(
        failures <= 2 * killed.len(),
        "{failures} requests failed, more than two for each of the {} killed backends",
        killed.len()
    );

    // The pool now runs on new backends, and every user is served.
    for (token, (_, name)) in tokens.iter().zip(users) {
        let reply = send(&app, bearer("/me", token)).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_eq!(reply.body["username"], name);
    }
    // The killed backends go away (termination is asynchronous), and new ones serve the pool.
    let backends = || async {
        killer
            .query(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                &[&application],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect::<Vec<i32>>()
    };
    wait_until("the killed backends to exit", || async {
        backends().await.iter().all(|pid| !killed.contains(pid))
    })
    .await;
    let live = backends().await;
    assert!(
        !live.is_empty() && live.iter().all(|pid| !killed.contains(pid)),
        "the pool runs on new backends: killed {killed:?}, live {live:?}"
    );
    assert_eq!(db.session_rows().await, users.len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_exhaustion_is_a_bounded_500_then_recovers() {
    const BURST: usize = 20;
    let backend = Backend::pg().await;
    let db = pg(&backend);
    let wait = Duration::from_millis(300);
    let bound = wait + MARGIN;
    let store = PgStore::new(pool_on(database_config(), &db.schema, 2, wait));
    warm(store.pool()).await;
    let manager = SessionManager::new(store.clone(), SessionConfig::default());
    let app = router(manager.clone());
    let token = manager
        .login(1, LoginOptions::new())
        .await
        .unwrap()
        .token
        .expose()
        .to_owned();
    let cookie = format!("id={token}");
    let request = |n: usize| {
        if n % 2 == 0 {
            bearer("/me", &token)
        } else {
            get_with("/me", ("cookie", &cookie))
        }
    };

    // Hold both connections of the pool.
    let held = within(PATIENCE, "taking the pool's connections", async {
        (
            store.pool().get().await.unwrap(),
            store.pool().get().await.unwrap(),
        )
    })
    .await;
    assert_eq!(store.pool().status().available, 0);

    let started = Instant::now();
    let mut burst = Vec::new();
    for n in 0..BURST {
        let (app, request) = (app.clone(), request(n));
        burst.push(tokio::spawn(async move {
            send_bounded(&app, request, bound).await
        }));
    }
    for (n, reply) in burst.into_iter().enumerate() {
        let reply = reply.await.expect("burst request");
        assert_unavailable(&format!("burst request {n}"), &reply);
    }
    assert!(
        started.elapsed() < bound,
        "the burst took {:?}, beyond {bound:?}",
        started.elapsed()
    );
    let reply = send_bounded(&app, bearer("/plain", &token), bound).await;
    assert_eq!(reply.status, StatusCode::OK);

    // Released, the same requests succeed (at most as many at once as the pool has
    // connections, so that none has to wait).
    drop(held);
    let gate = Arc::new(tokio::sync::Semaphore::new(2));
    let mut again = Vec::new();
    for n in 0..BURST {
        let (app, request, gate) = (app.clone(), request(n), gate.clone());
        again.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            send_bounded(&app, request, bound).await
        }));
    }
    for (n, reply) in again.into_iter().enumerate() {
        let reply = reply.await.expect("request after release");
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "request {n}: {:?}",
            reply.body
        );
        assert_eq!(reply.body["username"], "player");
        assert!(reply.set_cookies().is_empty());
    }
}

/// The backend process id behind a pool's (single) connection.
async fn backend_pid(store: &PgStore) -> i32 {
    let client = within(PATIENCE, "a pooled connection", store.pool().get())
        .await
        .unwrap();
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_sessions_table_is_a_bounded_500_and_the_connection_is_discarded() {
    let backend = Backend::pg().await;
    let db = pg(&backend);
    let statement_timeout = Duration::from_millis(500);
    let bound = statement_timeout + MARGIN;
    let store = PgStore::new(pool_on(database_config(), &db.schema, 1, PATIENCE))
        .statement_timeout(statement_timeout);
    let manager = SessionManager::new(store.clone(), SessionConfig::default());
    let app = router(manager.clone());
    let token = manager.login(1, LoginOptions::new()).await.unwrap().token;
    let token = token.expose();
    let before = backend_pid(&store).await;

    // Another transaction holds the table as a migration's ALTER TABLE would.
    let mut locker = db.client().await;
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    for path in ["/me", "/game"] {
        assert_unavailable(path, &send_bounded(&app, bearer(path, token), bound).await);
    }
    lock.rollback().await.unwrap();

    // The next request runs on a new connection, and succeeds.
    let reply = send_bounded(&app, bearer("/me", token), bound).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_ne!(
        backend_pid(&store).await,
        before,
        "a connection whose statement timed out is never reused"
    );
    // The timed-out statements were cancelled on the server, not left waiting.
    let waiting: i64 = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'",
            &[&before],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(waiting, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_that_stops_answering_is_a_bounded_500_and_the_connection_is_discarded() {
    let backend = Backend::pg().await;
    let db = pg(&backend);
    let proxy = Proxy::start().await;
    let statement_timeout = Duration::from_millis(500);
    let wait = Duration::from_secs(1);
    // Opening a connection through the stalled link hangs too: the pool bounds it.
    let pool = {
        let mut config = proxy.config();
        config.options(format!("-c search_path={}", db.schema));
        let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
        deadpool_postgres::Pool::builder(manager)
            .max_size(1)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(wait))
            .create_timeout(Some(wait))
            .build()
            .unwrap()
    };
    let bound = wait * 2 + statement_timeout + MARGIN;
    let store = PgStore::new(pool).statement_timeout(statement_timeout);
    let manager = SessionManager::new(store.clone(), SessionConfig::default());
    let app = router(manager.clone());
    let token = manager.login(1, LoginOptions::new()).await.unwrap().token;
    let token = token.expose();
    let reply = send_bounded(&app, bearer("/me", token), bound).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);

    // Packets stop: the open connection hangs, new ones cannot finish their start-up.
    proxy.set_stalled(true);
    for round in 0..3 {
        let label = format!("stalled, round {round}");
        assert_unavailable(
            &label,
            &send_bounded(&app, bearer("/me", token), bound).await,
        );
    }
    // Packets flow again for new connections; the stalled one stays silent, so a request
    // succeeds only if the pool dropped it.
    proxy.set_stalled(false);
    let reply = send_bounded(&app, bearer("/me", token), bound).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["username"], "player");
}

/// A `MakeWriter` for the fmt subscriber: every line lands in one shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    fn count(&self, needle: &str) -> usize {
        self.text().matches(needle).count()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn wait_until<F: Future<Output = bool>>(what: &str, mut condition: impl FnMut() -> F) {
    within(PATIENCE, what, async {
        while !condition().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

// `set_default` is per thread: on a current-thread runtime, the sweeper task runs on this
// thread and its events reach the captured subscriber.
#[tokio::test(flavor = "current_thread")]
async fn sweeper_logs_database_errors_and_keeps_sweeping() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let backend = Backend::pg().await;
    let db = pg(&backend);
    let clock = Arc::new(ManualClock::default());
    let config = SessionConfig::default().idle_timeout(Some(Duration::from_secs(10 * 60)));
    let proxy = Proxy::start().await;
    let pool = pool_on(proxy.config(), &db.schema, 2, Duration::from_secs(1));
    let swept = SessionManager::new(PgStore::new(pool), config.clone()).with_clock(clock.clone());
    // Sessions are created directly, not through the proxy.
    let direct = backend.manager(config.clone(), clock.clone());

    proxy.cut().await;
    let sweeper = swept.spawn_sweeper(Duration::from_millis(50)).unwrap();
    wait_until("the sweeper's failures to be logged", || async {
        logs.count("session sweeper failed") >= 3
    })
    .await;
    assert!(!sweeper.is_finished(), "the sweeper stopped on an error");
    let text = logs.text();
    let line = text
        .lines()
        .find(|line| line.contains("session sweeper failed"))
        .unwrap();
    assert!(line.contains("ERROR"), "logged as an error: {line}");
    assert!(line.contains("error="), "with the cause: {line}");

    proxy.restore();
    // Three sessions that idle out after 10 minutes, one after an hour; then 11 minutes pass.
    for user_id in [1, 2, 3] {
        direct.login(user_id, LoginOptions::new()).await.unwrap();
    }
    let longer = config.idle_timeout(Some(Duration::from_secs(60 * 60)));
    let fresh = backend
        .manager(longer, clock.clone())
        .login(4, LoginOptions::new())
        .await
        .unwrap();
    assert_eq!(db.session_rows().await, 4);
    clock.advance(Duration::from_secs(11 * 60));

    wait_until("the sweeper to delete the expired sessions", || async {
        db.session_rows().await == 1
    })
    .await;
    assert!(!sweeper.is_finished(), "the sweeper is still running");
    wait_until("the purge to be logged", || async {
        logs.count("purge_expired") >= 1
    })
    .await;
    let purge = logs.text();
    let purge = purge
        .lines()
        .find(|line| line.contains("purge_expired"))
        .unwrap()
        .to_owned();
    assert!(purge.contains("count=3"), "{purge}");
    // The live session was left alone, and stays so while the sweeper goes on.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(db.session_rows().await, 1);
    let remaining = direct.list_for_user(4).await.unwrap();
    assert_eq!(remaining.len(), 1);
    assert_eq!(remaining[0].id, fresh.session.id);
    assert!(!sweeper.is_finished());
    sweeper.abort();
}

#[test]
fn proxied_urls_keep_credentials_database_and_parameters() {
    let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    assert_eq!(
        url_via("postgres://u:p@db.example:5432/name?sslmode=disable", addr),
        "postgres://u:p@127.0.0.1:4000/name?sslmode=disable"
    );
    assert_eq!(
        url_via("postgresql://host/name", addr),
        "postgresql://127.0.0.1:4000/name"
    );
}

/// `check_schema` runs at start-up on a connection the pool already holds (the one
/// `migrate` used): when the network stops answering it fails with `StoreError::Timeout`
/// within the statement timeout, instead of hanging the start-up forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_schema_on_a_network_that_stops_answering_is_a_bounded_error() {
    let backend = Backend::pg().await;
    let db = pg(&backend);
    let proxy = Proxy::start().await;
    let statement_timeout = Duration::from_millis(500);
    let pool = {
        let mut config = proxy.config();
        config.options(format!("-c search_path={}", db.schema));
        let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
        deadpool_postgres::Pool::builder(manager)
            .max_size(1)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(PATIENCE))
            .create_timeout(Some(PATIENCE))
            .build()
            .unwrap()
    };
    let store = PgStore::new(pool).statement_timeout(statement_timeout);
    within(PATIENCE, "a healthy check", store.check_schema())
        .await
        .unwrap();
    proxy.set_stalled(true);
    let outcome = within(
        statement_timeout + MARGIN,
        "check_schema on a silent network",
        store.check_schema(),
    )
    .await;
    assert!(
        matches!(outcome, Err(StoreError::Timeout(_))),
        "{outcome:?}"
    );
}
