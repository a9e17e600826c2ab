//! Sudo mode over the layer, on `PgStore` (real PostgreSQL) and `MemoryStore`: `RecentAuth`
//! admits a fresh login and refuses an old one or a remember-me refresh with the exact 403,
//! `Session::reauthenticate` lifts it on the same session, and the guard composes with
//! `RequirePermission` in one statement.

use crate::common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::app::{Reply, bearer, login, send};
use common::{Backend, Harness, harness};
use serde_json::json;
use tower_session_auth::permissions::ChangeRoles;
use tower_session_auth::{
    AuthRejection, AuthUser, ClientInfo, GameUser, LoginOptions, RecentAuth, Refresh,
    RequirePermission, Session, SessionConfig, SessionLayer, SessionManager,
};

const MINUTE: Duration = Duration::from_secs(60);

fn sudo_app(manager: SessionManager) -> Router {
    common::app::routes()
        .route(
            "/sudo",
            get(|RecentAuth(user): RecentAuth| async move { user.username }),
        )
        .route(
            "/sudo/roles",
            get(
                |RecentAuth(RequirePermission(user, ..)): RecentAuth<
                    RequirePermission<ChangeRoles>,
                >| async move { user.username },
            ),
        )
        .route(
            "/sudo/game",
            get(|RecentAuth(user): RecentAuth<GameUser>| async move { user.character_name }),
        )
        .route(
            "/reauthenticate",
            post(|_user: AuthUser, session: Session| async move {
                // (The application checks the password here.)
                Ok::<_, AuthRejection>(Json(json!({"live": session.reauthenticate().await?})))
            }),
        )
        .layer(SessionLayer::new(manager))
}

fn config() -> SessionConfig {
    SessionConfig::default()
        .recent_auth_max_age(10 * MINUTE)
        .reauthenticate_route("/reauthenticate")
}

fn setup(backend: Backend, config: SessionConfig) -> (Harness, Router) {
    let h = harness(backend, config);
    let app = sudo_app(h.manager.clone());
    (h, app)
}

fn post_bearer(path: &str, token: &str) -> Request<Body> {
    Request::post(path)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

fn assert_recent_auth_required(reply: &Reply, max_age: u64) {
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{:?}", reply.body);
    assert_eq!(
        reply.body,
        json!({"detail": "Recent authentication required", "reauthenticate": "/reauthenticate"})
    );
    assert_eq!(
        reply.headers["www-authenticate"],
        format!("Bearer error=\"insufficient_user_authentication\", max_age={max_age}")
    );
    assert_eq!(reply.headers["content-type"], "application/json");
}

async fn a_fresh_login_passes_and_an_old_one_must_reauthenticate(backend: Backend) {
    let (h, app) = setup(backend, config());
    let (token, session_id, _) = login(&app, 1).await;
    let reply = send(&app, bearer("/sudo", &token)).await;
    assert_eq!(
        (reply.status, reply.body),
        (StatusCode::OK, json!("player"))
    );

    // The window is exclusive: one second short of it passes, at it the guard refuses.
    h.clock.advance(10 * MINUTE - Duration::from_secs(1));
    assert_eq!(
        send(&app, bearer("/sudo", &token)).await.status,
        StatusCode::OK
    );
    h.clock.advance(Duration::from_secs(1));
    assert_recent_auth_required(&send(&app, bearer("/sudo", &token)).await, 600);
    // The session itself is fine for everything else.
    assert_eq!(
        send(&app, bearer("/me", &token)).await.status,
        StatusCode::OK
    );

    // Re-authentication: same session and token, no new cookie, and the guard admits it.
    let reply = send(&app, post_bearer("/reauthenticate", &token)).await;
    assert_eq!(
        (reply.status, &reply.body),
        (StatusCode::OK, &json!({"live": true}))
    );
    assert!(reply.set_cookies().is_empty());
    let me = send(&app, bearer("/me", &token)).await;
    assert_eq!(me.body["session_id"], session_id);
    assert_eq!(
        send(&app, bearer("/sudo", &token)).await.status,
        StatusCode::OK
    );
    h.clock.advance(10 * MINUTE);
    assert_recent_auth_required(&send(&app, bearer("/sudo", &token)).await, 600);
}

async fn a_refreshed_session_never_counts_until_it_reauthenticates(backend: Backend) {
    let (h, app) = setup(backend, config());
    let login = h
        .manager
        .login(1, LoginOptions::new().remember(true))
        .await
        .unwrap();
    let token = login.token.expose();
    assert_eq!(
        send(&app, bearer("/sudo", token)).await.status,
        StatusCode::OK
    );
    // A minute later, the refresh token (say, a thief's copy) buys a session: well inside the
    // window since the login, and still refused.
    h.clock.advance(MINUTE);
    let Refresh::Refreshed(refreshed) = h
        .manager
        .refresh(login.refresh.as_ref().unwrap(), ClientInfo::default())
        .await
        .unwrap()
    else {
        panic!("expected a refresh");
    };
    let token = refreshed.token.expose();
    assert_recent_auth_required(&send(&app, bearer("/sudo", token)).await, 600);
    h.clock.advance(MINUTE);
    assert_recent_auth_required(&send(&app, bearer("/sudo", token)).await, 600);
    let reply = send(&app, post_bearer("/reauthenticate", token)).await;
    assert_eq!(reply.body, json!({"live": true}));
    assert_eq!(
        send(&app, bearer("/sudo", token)).await.status,
        StatusCode::OK
    );
}

async fn recent_auth_composes_with_require_permission(backend: Backend) {
    let (h, app) = setup(backend, config());
    // Unauthenticated: the inner extractor's 401.
    send(
        &app,
        Request::get("/sudo/roles").body(Body::empty()).unwrap(),
    )
    .await
    .assert_invalid_session("no token");
    // A fresh login without the permission: the permission's 403, not a password prompt.
    let (player, _, _) = login(&app, 1).await;
    let reply = send(&app, bearer("/sudo/roles", &player)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.detail(),
        "Insufficient permissions. Required: change_roles"
    );
    // With the permission: fresh passes, old must re-authenticate.
    let (superuser, _, _) = login(&app, 4).await;
    let reply = send(&app, bearer("/sudo/roles", &superuser)).await;
    assert_eq!(
        (reply.status, reply.body),
        (StatusCode::OK, json!("superuser"))
    );
    h.clock.advance(11 * MINUTE);
    assert_recent_auth_required(&send(&app, bearer("/sudo/roles", &superuser)).await, 600);
    let reply = send(&app, bearer("/sudo/roles", &player)).await;
    assert_eq!(
        reply.detail(),
        "Insufficient permissions. Required: change_roles"
    );
}

async fn recent_auth_guards_game_routes_too(backend: Backend) {
    let (h, app) = setup(backend, config());
    let (token, session_id, _) = login(&app, 1).await;
    // GameUser's own 409 first.
    let reply = send(&app, bearer("/sudo/game", &token)).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    let id: tower_session_auth::SessionId = session_id.parse().unwrap();
    h.manager.select_character(id, 1, 11).await.unwrap();
    let reply = send(&app, bearer("/sudo/game", &token)).await;
    assert_eq!(
        (reply.status, reply.body),
        (StatusCode::OK, json!("player_alt"))
    );
    h.clock.advance(10 * MINUTE);
    assert_recent_auth_required(&send(&app, bearer("/sudo/game", &token)).await, 600);
}

async fn without_a_configured_route_the_body_has_only_the_detail(backend: Backend) {
    let config = SessionConfig::default().recent_auth_max_age(Duration::from_secs(30));
    let (h, app) = setup(backend, config);
    let (token, _, _) = login(&app, 1).await;
    h.clock.advance(Duration::from_secs(30));
    let reply = send(&app, bearer("/sudo", &token)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.body,
        json!({"detail": "Recent authentication required"})
    );
    assert_eq!(
        reply.headers["www-authenticate"],
        "Bearer error=\"insufficient_user_authentication\", max_age=30"
    );
}

async fn reauthenticate_needs_a_live_session(backend: Backend) {
    let (h, app) = setup(backend, config().idle_timeout(Some(MINUTE)));
    let (token, _, _) = login(&app, 1).await;
    h.clock.advance(2 * MINUTE);
    send(&app, post_bearer("/reauthenticate", &token))
        .await
        .assert_invalid_session("expired");
    send(&app, post_bearer("/reauthenticate", &"A".repeat(43)))
        .await
        .assert_invalid_session("unknown");
}

both_stores!(
    a_fresh_login_passes_and_an_old_one_must_reauthenticate,
    a_refreshed_session_never_counts_until_it_reauthenticates,
    recent_auth_composes_with_require_permission,
    recent_auth_guards_game_routes_too,
    without_a_configured_route_the_body_has_only_the_detail,
    reauthenticate_needs_a_live_session,
);

/// `RecentAuth<RequirePermission<P>>` costs the one validating statement, and re-authenticating
/// one more: counted on a real `PgStore` through the instrumented store.
#[tokio::test]
async fn the_guard_adds_no_statement() {
    use common::store::InstrumentedStore;
    let Backend::Pg(db) = Backend::pg().await else {
        unreachable!()
    };
    let store = InstrumentedStore::new(db.store.clone());
    let manager = SessionManager::new(store.clone(), config());
    let app = sudo_app(manager.clone());
    let login = manager.login(4, LoginOptions::new()).await.unwrap();
    let token = login.token.expose();
    store.take_calls();
    let reply = send(&app, bearer("/sudo/roles", token)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(store.take_calls(), ["validate(user)"]);
    let reply = send(&app, post_bearer("/reauthenticate", token)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(store.take_calls(), ["validate(user)", "reauthenticate"]);
    // A refused request costs the same one statement.
    let remembered = manager
        .login(4, LoginOptions::new().remember(true))
        .await
        .unwrap();
    let Refresh::Refreshed(refreshed) = manager
        .refresh(remembered.refresh.as_ref().unwrap(), ClientInfo::default())
        .await
        .unwrap()
    else {
        panic!("expected a refresh");
    };
    store.take_calls();
    let reply = send(&app, bearer("/sudo/roles", refreshed.token.expose())).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(store.take_calls(), ["validate(user)"]);
}
