//! Session watches: the signal a live connection holds, on both stores (same instance), and
//! across instances on PostgreSQL through the one notification listener.

use crate::common;

use std::future::Future;
use std::time::Duration;

use common::store::InstrumentedStore;
use common::{Backend, TestDb, pool_for_schema};
use tower_session_auth::{
    ClientInfo, LoginOptions, PgStore, RefreshConfig, SessionConfig, SessionManager,
    watch::SessionEnd, watch::SessionWatch, watch::WatchEvent,
};

/// Upper bound for an event to arrive: a failing test ends instead of hanging.
const WITHIN: Duration = Duration::from_secs(10);

async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WITHIN, future)
        .await
        .expect("the watch did not report in time")
}

/// A manager on the system clock (the expiry timer sleeps in real time).
fn manager(backend: &Backend, config: SessionConfig) -> SessionManager {
    match backend {
        Backend::Pg(db) => SessionManager::new(db.store.clone(), config),
        Backend::Memory(store) => SessionManager::new(store.clone(), config),
    }
}

async fn watched(
    manager: &SessionManager,
    user_id: i64,
) -> (SessionWatch, tower_session_auth::Login) {
    let login = manager.login(user_id, LoginOptions::new()).await.unwrap();
    let watch = manager.watch(&login.token).await.unwrap().unwrap();
    (watch, login)
}

async fn every_revocation_path_ends_the_watch(backend: Backend) {
    let manager = manager(&backend, SessionConfig::default());
    let ended = |mut watch: SessionWatch| async move { within(watch.next()).await };
    let revoked = WatchEvent::Ended(SessionEnd::Revoked);

    let (watch, login) = watched(&manager, 1).await;
    assert!(manager.is_watched(login.session.id));
    assert!(manager.remove_by_token(&login.token).await.unwrap());
    assert_eq!(ended(watch).await, revoked, "logout");
    assert!(
        !manager.is_watched(login.session.id),
        "a dropped watch is forgotten"
    );

    let (watch, login) = watched(&manager, 1).await;
    assert!(manager.revoke(1, login.session.id).await.unwrap());
    assert_eq!(ended(watch).await, revoked, "revoke one");

    let (watch, login) = watched(&manager, 1).await;
    assert!(manager.remove(login.session.id).await.unwrap());
    assert_eq!(ended(watch).await, revoked, "kick");

    let (watch, _) = watched(&manager, 1).await;
    let (mut kept, keep) = watched(&manager, 1).await;
    manager.revoke_others(1, keep.session.id).await.unwrap();
    assert_eq!(ended(watch).await, revoked, "revoke others");
    manager.revoke_all(1).await.unwrap();
    assert_eq!(within(kept.next()).await, revoked, "revoke all");

    // Pruning at login.
    let pruning = self::manager(
        &backend,
        SessionConfig::default().max_sessions_per_user(Some(1)),
    );
    let (watch, _) = watched(&pruning, 2).await;
    pruning.login(2, LoginOptions::new()).await.unwrap();
    assert_eq!(ended(watch).await, revoked, "pruned at login");

    // Reuse of a rotated remember-me secret ends the series' sessions.
    let remember = self::manager(
        &backend,
        SessionConfig::default().refresh(RefreshConfig::default().grace(Duration::ZERO)),
    );
    let login = remember
        .login(3, LoginOptions::new().remember(true))
        .await
        .unwrap();
    let first = login.refresh.unwrap();
    let tower_session_auth::Refresh::Refreshed(refreshed) = remember
        .refresh(&first, ClientInfo::default())
        .await
        .unwrap()
    else {
        panic!("refresh failed")
    };
    let watch = remember.watch(&refreshed.token).await.unwrap().unwrap();
    assert!(matches!(
        remember
            .refresh(&first, ClientInfo::default())
            .await
            .unwrap(),
        tower_session_auth::Refresh::ReuseDetected
    ));
    assert_eq!(ended(watch).await, revoked, "series reuse");
    assert_eq!(remember.watch_count(), 0);
}

async fn a_role_change_is_reported_and_a_deactivation_ends_the_watch(backend: Backend) {
    let manager = manager(&backend, SessionConfig::default());
    let (mut watch, login) = watched(&manager, 1).await;
    let (other, _) = watched(&manager, 2).await;
    // The first call checks once (a change between validation and registration is not lost).
    backend.set_role(1, Some("admin")).await;
    manager.invalidate_user(1);
    assert_eq!(
        within(watch.next()).await,
        WatchEvent::RoleChanged("admin".into())
    );
    assert_eq!(watch.role(), "admin");
    backend.set_active(1, false).await;
    manager.invalidate_user(1);
    assert_eq!(
        within(watch.next()).await,
        WatchEvent::Ended(SessionEnd::UserInvalid)
    );
    // Again, and for good.
    assert_eq!(
        watch.next().await,
        WatchEvent::Ended(SessionEnd::UserInvalid)
    );
    assert_eq!(other.ended(), None);
    // An inactive user's session cannot be watched.
    assert!(manager.watch(&login.token).await.unwrap().is_none());
}

async fn idle_expiry_fires_from_the_timer_and_touches_keep_it_away(backend: Backend) {
    let config = SessionConfig::default()
        .idle_timeout(Some(Duration::from_millis(1500)))
        .touch_interval(Duration::from_millis(100));
    let manager = manager(&backend, config);
    let (mut watch, login) = watched(&manager, 1).await;
    // Traffic for twice the idle timeout: each touch past the debounce slides the expiry.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        watch.touch().await;
    }
    assert!(
        manager.lookup(&login.token).await.is_some(),
        "touched: still live"
    );
    assert_eq!(watch.ended(), None);
    // Silence: the timer ends it.
    assert_eq!(
        within(watch.next()).await,
        WatchEvent::Ended(SessionEnd::Expired)
    );
    assert!(manager.lookup(&login.token).await.is_none());
}

both_stores!(
    every_revocation_path_ends_the_watch,
    a_role_change_is_reported_and_a_deactivation_ends_the_watch,
    idle_expiry_fires_from_the_timer_and_touches_keep_it_away,
    cookie_upgrades_need_an_allowed_origin,
);

/// Another instance on the same schema, with its session listener running.
async fn listening_instance(db: &TestDb) -> (SessionManager, tokio::task::JoinHandle<()>) {
    let pool = pool_for_schema(
        &common::database_url(),
        &db.schema,
        4,
        Duration::from_secs(5),
    );
    let store = PgStore::new(pool);
    store.install_invalidation_triggers().await.unwrap();
    let manager = SessionManager::new(store.clone(), SessionConfig::default());
    let listen: tokio_postgres::Config = common::database_url().parse().unwrap();
    let listener = store.spawn_session_listener(listen, manager.clone());
    (manager, listener)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_hears_revocations_role_changes_and_deactivations() {
    let backend = Backend::pg().await;
    let Backend::Pg(db) = &backend else {
        unreachable!()
    };
    let a = SessionManager::new(db.store.clone(), SessionConfig::default());
    let (b, listener) = listening_instance(db).await;

    let login = a.login(1, LoginOptions::new()).await.unwrap();
    let mut watch = b.watch(&login.token).await.unwrap().unwrap();
    // The application changes the role in its own table: the trigger tells B.
    backend.set_role(1, Some("admin")).await;
    assert_eq!(
        within(watch.next()).await,
        WatchEvent::RoleChanged("admin".into())
    );
    a.revoke_all(1).await.unwrap();
    assert_eq!(
        within(watch.next()).await,
        WatchEvent::Ended(SessionEnd::Revoked)
    );

    let login = a.login(2, LoginOptions::new()).await.unwrap();
    let mut watch = b.watch(&login.token).await.unwrap().unwrap();
    backend.set_active(2, false).await;
    assert_eq!(
        within(watch.next()).await,
        WatchEvent::Ended(SessionEnd::UserInvalid)
    );
    listener.abort();
}

/// A thousand idle watches send no statement, and the registry holds one entry each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_watches_cost_no_queries() {
    let db = TestDb::new().await;
    // A user id of this test's own: notifications are database-wide.
    let user_id = 7_000_000 + i64::from(rand_suffix());
    db.execute(
        "INSERT INTO users (id, username, role, is_active) VALUES ($1, 'idle', 'player', true)",
        &[&user_id],
    )
    .await;
    let store = InstrumentedStore::new(db.store.clone());
    db.store.install_invalidation_triggers().await.unwrap();
    let manager = SessionManager::new(store.clone(), SessionConfig::default());
    let listener = db
        .store
        .spawn_session_listener(common::database_url().parse().unwrap(), manager.clone());
    within(async {
        while !manager.is_listening() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (mut watch, _) = watched(&manager, user_id).await;
        tasks.push(tokio::spawn(async move { watch.next().await }));
    }
    assert_eq!(manager.watch_count(), 1000);
    // A watch whose registration raced an event (any event: other databases' tests notify on
    // the same channel) reads its session once when it starts waiting; let those finish.
    tokio::time::sleep(Duration::from_millis(500)).await;
    store.take_calls();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        store.take_calls(),
        Vec::<&str>::new(),
        "idle watches queried"
    );
    // One revocation: each watch checks once, and all end.
    manager.revoke_all(user_id).await.unwrap();
    for task in tasks {
        assert_eq!(
            within(task).await.unwrap(),
            WatchEvent::Ended(SessionEnd::Revoked)
        );
    }
    let calls = store.take_calls();
    assert_eq!(calls.iter().filter(|call| **call == "lookup").count(), 1000);
    assert_eq!(manager.watch_count(), 0);
    listener.abort();
}

fn rand_suffix() -> u16 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    u16::from_be_bytes([bytes[0], bytes[1]])
}

/// A cookie-authenticated WebSocket upgrade needs the server's own origin even with the CSRF
/// check off (the default); a header token or a plain GET is not affected.
async fn cookie_upgrades_need_an_allowed_origin(backend: Backend) {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use common::app::{router, send};

    let manager = manager(&backend, SessionConfig::default());
    assert!(manager.config().csrf.is_none());
    let app = router(manager.clone());
    let login = manager.login(1, LoginOptions::new()).await.unwrap();
    let token = login.token.expose();
    let request = |upgrade: bool, cookie: bool, origin: Option<&str>| {
        let mut request = Request::get("/me").header("host", "game.example");
        if upgrade {
            request = request
                .header("connection", "Upgrade")
                .header("upgrade", "WebSocket")
                .header("sec-websocket-version", "13")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        }
        request = if cookie {
            request.header("cookie", format!("id={token}"))
        } else {
            request.header("authorization", format!("Bearer {token}"))
        };
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.body(Body::empty()).unwrap()
    };
    for origin in [
        Some("https://evil.example"),
        Some("null"),
        Some("http://game.example.evil"),
        None,
    ] {
        let reply = send(&app, request(true, true, origin)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{origin:?}");
        assert_eq!(reply.detail(), "Cross-site request rejected");
    }
    let allowed = [
        (true, true, Some("http://game.example")),
        (true, false, Some("https://evil.example")),
        (false, true, Some("https://evil.example")),
    ];
    for (upgrade, cookie, origin) in allowed {
        let reply = send(&app, request(upgrade, cookie, origin)).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{upgrade} {cookie} {origin:?}"
        );
    }
    // An HTTP/2 WebSocket is an extended CONNECT, authority in the URI.
    let connect = |origin: &str| {
        Request::connect("https://game.example/me")
            .header("cookie", format!("id={token}"))
            .header("origin", origin)
            .body(Body::empty())
            .unwrap()
    };
    let any_method = axum::Router::new()
        .route(
            "/me",
            axum::routing::any(|_: tower_session_auth::AuthUser| async { "ok" }),
        )
        .layer(tower_session_auth::SessionLayer::new(manager.clone()));
    let reply = send(&any_method, connect("https://evil.example")).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.detail(), "Cross-site request rejected");
    let reply = send(&any_method, connect("https://game.example")).await;
    assert_eq!(reply.status, StatusCode::OK);
    // A configured allow-list applies to upgrades as well.
    let listed = self::manager(
        &backend,
        SessionConfig::default().csrf(Some(
            tower_session_auth::CsrfConfig::default()
                .allowed_origin("https://play.example")
                .unwrap(),
        )),
    );
    let app = router(listed);
    let reply = send(&app, request(true, true, Some("https://play.example"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = send(&app, request(true, true, Some("http://game.example"))).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
}
