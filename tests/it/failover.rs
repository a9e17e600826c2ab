//! A PostgreSQL failover, end to end: the `mud_server` example on a multi-host `DATABASE_URL`
//! (`target_session_attrs=read-write`) over a primary and its synchronous streaming standby,
//! which `scripts/replica-pair` creates from scratch on this machine (ports 5434 and 5435).
//!
//! What it proves: with `SESSION_DURABLE_REVOCATIONS=true` a revocation is acknowledged only
//! once the standby has applied it (and is a bounded `500` when the standby cannot), so it
//! survives the primary's crash; without the option a revocation the standby never received
//! is lost; and the server finds the promoted standby on its own, without a restart.

use crate::common;

use std::time::{Duration, Instant};

use common::example::Server;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tower_session_auth::{
    ClientInfo, LoginOptions, PgStore, Refresh, RefreshConfig, SessionConfig, SessionManager,
    store::Scope, store::StoreError, store::Validation,
};

/// Runs `scripts/replica-pair <command>` and returns what it printed.
async fn pair(command: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/replica-pair");
    let output = tokio::process::Command::new(script)
        .arg(command)
        .output()
        .await
        .expect("run scripts/replica-pair");
    assert!(
        output.status.success(),
        "scripts/replica-pair {command} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

async fn login(server: &Server, username: &str) -> String {
    let response = Client::new()
        .post(format!("{}/login", server.base))
        .header("x-requested-with", "failover-test")
        .json(&json!({"username": username, "password": format!("{username}-pass")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "login of {username}");
    let body: Value = response.json().await.unwrap();
    body["token"].as_str().unwrap().to_owned()
}

async fn bearer(server: &Server, post: bool, path: &str, token: &str) -> (StatusCode, Value) {
    let url = format!("{}{path}", server.base);
    let http = Client::new();
    let request = if post { http.post(url) } else { http.get(url) };
    let response = request
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn me(server: &Server, token: &str) -> StatusCode {
    bearer(server, false, "/me", token).await.0
}

async fn logout(server: &Server, token: &str) -> (StatusCode, Value) {
    bearer(server, true, "/logout", token).await
}

fn unavailable() -> Value {
    json!({"detail": "Session store unavailable"})
}

fn timed_out<T: std::fmt::Debug>(result: Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::Timeout(_)))
}

/// With durable revocations, every path that ends a session waits for the standby to apply
/// it, while validation (and its touch) and a login that prunes nothing do not. With the
/// standby's replay paused, each revocation fails at the statement timeout, and the same
/// revocation without the option is acknowledged at once.
async fn every_revocation_path_waits_for_the_standby(url: &str) {
    let store = PgStore::connect(url).unwrap();
    let user_id = user_id(url).await;
    let config = SessionConfig::default()
        .touch_interval(Duration::ZERO)
        .refresh(RefreshConfig::default().grace(Duration::ZERO));
    let durable_store = store
        .clone()
        .durable_revocations(true)
        .statement_timeout(Duration::from_millis(500));
    let durable = SessionManager::new(durable_store.clone(), config.clone());
    let pruning = SessionManager::new(durable_store, config.clone().max_sessions_per_user(Some(1)));
    let plain = SessionManager::new(store, config);
    let client = ClientInfo::default;

    let reused = durable
        .login(user_id, LoginOptions::new().client(client()).remember(true))
        .await
        .unwrap();
    let reused = reused.refresh.unwrap();
    assert!(matches!(
        durable.refresh(&reused, client()).await.unwrap(),
        Refresh::Refreshed(_)
    ));
    let series = durable
        .login(user_id, LoginOptions::new().client(client()).remember(true))
        .await
        .unwrap();
    let [by_token, by_id, asynchronous] = [
        durable
            .login(user_id, LoginOptions::new().client(client()))
            .await
            .unwrap(),
        durable
            .login(user_id, LoginOptions::new().client(client()))
            .await
            .unwrap(),
        plain
            .login(user_id, LoginOptions::new().client(client()))
            .await
            .unwrap(),
    ];

    pair("pause-replay").await;
    // The hot path does not wait: a validation that touches, a login that prunes nothing.
    assert!(matches!(
        durable
            .validate(&by_token.token, Scope::User)
            .await
            .unwrap(),
        Validation::Valid(_)
    ));
    durable
        .login(user_id, LoginOptions::new().client(client()))
        .await
        .unwrap();
    // Without the option, a revocation is acknowledged although the standby has not applied it.
    assert!(plain.remove_by_token(&asynchronous.token).await.unwrap());
    // With it, every revocation path waits, up to the bound.
    assert!(timed_out(durable.remove_by_token(&by_token.token).await));
    assert!(timed_out(durable.revoke(user_id, by_id.session.id).await));
    assert!(timed_out(
        durable.end_series(series.refresh.as_ref().unwrap()).await
    ));
    assert!(timed_out(durable.refresh(&reused, client()).await));
    assert!(timed_out(
        pruning
            .login(user_id, LoginOptions::new().client(client()))
            .await
    ));
    assert!(timed_out(durable.revoke_all(user_id).await));
    // (A transaction that deleted nothing wrote nothing, and has nothing to wait for.)
    plain
        .login(user_id, LoginOptions::new().client(client()))
        .await
        .unwrap();
    assert!(timed_out(durable.clear_all().await));
    pair("resume-replay").await;
}

/// A cache whose invalidation listener connects through the multi-host URL, with a TTL far
/// beyond the test, so that only a notification drops an entry.
#[cfg(feature = "cache")]
async fn cached_manager(url: &str) -> (SessionManager, tower_session_auth::cache::SessionCache) {
    use tower_session_auth::{cache::CacheConfig, cache::SessionCache};
    let store = PgStore::connect(url).unwrap();
    store.install_invalidation_triggers().await.unwrap();
    let cache = SessionCache::new(CacheConfig::default().ttl(Duration::from_secs(600)));
    store.spawn_invalidation_listener(url.parse().unwrap(), cache.clone());
    let manager = SessionManager::new(store, SessionConfig::default()).with_cache(cache.clone());
    (manager, cache)
}

/// The listener found the server that accepts writes: a revocation made there reaches the
/// cache, which otherwise would serve the revoked session for ten minutes.
#[cfg(feature = "cache")]
async fn the_cache_hears_revocations_on_the_primary(
    cached: &SessionManager,
    cache: &tower_session_auth::cache::SessionCache,
    url: &str,
) {
    let started = Instant::now();
    while !cache.is_serving() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the listener did not connect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let other = SessionManager::new(PgStore::connect(url).unwrap(), SessionConfig::default());
    let login = other
        .login(user_id(url).await, LoginOptions::new())
        .await
        .unwrap();
    let cached_before = cache.entry_count();
    assert!(matches!(
        cached.validate(&login.token, Scope::User).await.unwrap(),
        Validation::Valid(_)
    ));
    assert_eq!(
        cache.entry_count(),
        cached_before + 1,
        "the validation is cached"
    );
    assert!(other.remove_by_token(&login.token).await.unwrap());
    let started = Instant::now();
    while !matches!(
        cached.validate(&login.token, Scope::User).await.unwrap(),
        Validation::Unknown
    ) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the cache still serves a session revoked on the primary"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn user_id(url: &str) -> i64 {
    PgStore::connect(url)
        .unwrap()
        .pool()
        .get()
        .await
        .unwrap()
        .query_one("SELECT id FROM users WHERE username = 'player'", &[])
        .await
        .unwrap()
        .get(0)
}

/// A pool whose server stops accepting writes drops its connections to it on the first write
/// refused (SQLSTATE 25006), so it never keeps reading from a server that no longer takes
/// revocations; once a server accepts writes again, the store works without a restart.
async fn connections_to_a_read_only_server_are_not_reused(url: &str) {
    let store = PgStore::connect(url).unwrap();
    let pool = store.pool().clone();
    let manager = SessionManager::new(store, SessionConfig::default());
    let held = [pool.get().await.unwrap(), pool.get().await.unwrap()];
    drop(held);
    assert_eq!(pool.status().size, 2);
    let user_id = user_id(url).await;
    pair("read-only").await;
    let refused = manager
        .login(user_id, LoginOptions::new())
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, StoreError::Backend(source)
            if source.downcast_ref::<tokio_postgres::Error>().and_then(|error| error.code())
                == Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION)),
        "{refused}"
    );
    assert_eq!(
        pool.status().size,
        0,
        "connections to the read-only server were kept"
    );
    pair("read-write").await;
    manager.login(user_id, LoginOptions::new()).await.unwrap();
}

#[tokio::test]
async fn a_failover_loses_no_durable_revocation_and_needs_no_restart() {
    let url = pair("up").await.trim().to_owned();
    // Two instances of the application on the same database: one with durable revocations,
    // one without.
    let durable = Server::start_with(Some(&url), &[("SESSION_DURABLE_REVOCATIONS", "true")]).await;
    let plain = Server::start(Some(&url)).await;
    every_revocation_path_waits_for_the_standby(&url).await;
    connections_to_a_read_only_server_are_not_reused(&url).await;
    #[cfg(feature = "cache")]
    let (cached, cache) = cached_manager(&url).await;
    #[cfg(feature = "cache")]
    the_cache_hears_revocations_on_the_primary(&cached, &cache, &url).await;
    let [revoked, blocked, kept, lost] = [
        login(&durable, "player").await,
        login(&durable, "builder").await,
        login(&durable, "admin").await,
        login(&plain, "superuser").await,
    ];

    // The standby receives but does not apply: a durable revocation cannot be confirmed, so
    // it fails after the store's statement timeout (5 s) instead of being acknowledged.
    pair("pause-replay").await;
    assert_eq!(
        logout(&durable, &blocked).await,
        (StatusCode::INTERNAL_SERVER_ERROR, unavailable())
    );
    pair("resume-replay").await;

    // A durable revocation, acknowledged only once the standby has applied it.
    assert_eq!(logout(&durable, &revoked).await.0, StatusCode::OK);
    // The standby stops receiving WAL, as when the primary's last moments never reach it:
    // an asynchronous revocation is acknowledged all the same.
    pair("cut-replication").await;
    assert_eq!(logout(&plain, &lost).await.0, StatusCode::OK);
    assert_eq!(me(&plain, &lost).await, StatusCode::UNAUTHORIZED);

    // The primary crashes; the standby is promoted.
    pair("stop-primary").await;
    pair("promote").await;

    // The same server process finds the new primary on its own. Meanwhile a request gets a
    // 500 at worst: the revoked session is never granted, the kept one never refused.
    let started = Instant::now();
    loop {
        let (kept_status, revoked_status) =
            (me(&durable, &kept).await, me(&durable, &revoked).await);
        assert!(
            matches!(
                kept_status,
                StatusCode::OK | StatusCode::INTERNAL_SERVER_ERROR
            ),
            "kept session during the failover: {kept_status}"
        );
        assert!(
            matches!(
                revoked_status,
                StatusCode::UNAUTHORIZED | StatusCode::INTERNAL_SERVER_ERROR
            ),
            "revoked session during the failover: {revoked_status}"
        );
        if kept_status == StatusCode::OK && revoked_status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the server did not recover from the failover"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // On the promoted server: the durable revocation held, the other sessions are valid, and
    // writes work again (a new login, a durable logout: the promoted server has no
    // synchronous standby, so remote_apply waits for nothing).
    assert_eq!(me(&durable, &revoked).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&plain, &revoked).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&plain, &kept).await, StatusCode::OK);
    // The asynchronous revocation was lost: the session it ended is valid again.
    assert_eq!(me(&durable, &lost).await, StatusCode::OK);
    let fresh = login(&durable, "player").await;
    assert_eq!(me(&durable, &fresh).await, StatusCode::OK);
    assert_eq!(logout(&durable, &fresh).await.0, StatusCode::OK);
    assert_eq!(me(&durable, &fresh).await, StatusCode::UNAUTHORIZED);

    // The cache's LISTEN connection moved to the promoted server too.
    #[cfg(feature = "cache")]
    the_cache_hears_revocations_on_the_primary(&cached, &cache, &url).await;

    durable.stop().await;
    plain.stop().await;
    pair("down").await;
}
