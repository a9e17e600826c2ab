//! The layer's eager mode (the user in the request's extensions, for services that are not
//! axum handlers) and its app-wide rejection rendering, on a real PostgreSQL store.

use crate::common;

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::response::{IntoResponse, Redirect};
use common::app::{Reply, bearer, get_with, login, routes, send};
use common::store::InstrumentedStore;
use common::{Backend, TestDb};
use tower::Layer;
use tower::{ServiceExt, service_fn};
use tower_session_auth::layer::RejectedRequest;
use tower_session_auth::store::Scope;
use tower_session_auth::test_util::ManualClock;
use tower_session_auth::{
    AuthRejection, AuthUser, GameUser, LoginOptions, PgStore, SessionConfig, SessionLayer,
    SessionManager,
};

/// A plain tower service (no axum extractors) that reports what the eager layer inserted.
async fn report(request: Request<Body>) -> Result<Response<Body>, Infallible> {
    let extensions = request.extensions();
    let text = match (
        extensions.get::<AuthUser>(),
        extensions.get::<GameUser>(),
        extensions.get::<AuthRejection>(),
    ) {
        (_, _, Some(rejection)) => format!("refused: {}", rejection.body_text()),
        (Some(user), Some(game), None) => {
            format!("{} plays {}", user.username, game.character_name)
        }
        (Some(user), None, None) => format!("user {}", user.username),
        (None, _, None) => "anonymous".to_owned(),
    };
    Ok(Response::new(Body::from(text)))
}

async fn call(scope: Scope, manager: &SessionManager, request: Request<Body>) -> String {
    let service = SessionLayer::new(manager.clone())
        .eager(scope)
        .layer(service_fn(report));
    let response = service.oneshot(request).await.unwrap();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn plain(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn eager_mode_inserts_the_user_for_a_plain_service() {
    let backend = Backend::pg().await;
    let manager = backend.manager(SessionConfig::default(), Arc::new(ManualClock::default()));
    let login = manager.login(1, LoginOptions::new()).await.unwrap();
    let token = login.token.expose();

    assert_eq!(
        call(Scope::User, &manager, bearer("/", token)).await,
        "user player"
    );
    assert_eq!(call(Scope::User, &manager, plain("/")).await, "anonymous");
    let unknown = tower_session_auth::token::SessionToken::generate();
    assert_eq!(
        call(Scope::User, &manager, bearer("/", unknown.expose())).await,
        "anonymous"
    );
    // A user gone inactive is refused, not anonymous.
    backend.set_active(1, false).await;
    assert_eq!(
        call(Scope::User, &manager, bearer("/", token)).await,
        "refused: Invalid session user"
    );
}

#[tokio::test]
async fn eager_mode_at_game_scope_inserts_the_game_user() {
    let backend = Backend::pg().await;
    let manager = backend.manager(SessionConfig::default(), Arc::new(ManualClock::default()));
    let login = manager.login(1, LoginOptions::new()).await.unwrap();
    let token = login.token.expose();
    // No character yet: the user alone.
    assert_eq!(
        call(Scope::Game, &manager, bearer("/", token)).await,
        "user player"
    );
    manager
        .select_character(login.session.id, 1, 10)
        .await
        .unwrap();
    assert_eq!(
        call(Scope::Game, &manager, bearer("/", token)).await,
        "player plays player_char"
    );
    backend.delete_character(10).await;
    assert_eq!(
        call(Scope::Game, &manager, bearer("/", token)).await,
        "refused: Selected character not found"
    );
}

#[tokio::test]
async fn a_store_failure_in_eager_mode_is_a_rejection_not_an_anonymous_request() {
    // Nothing listens on port 1: every connection attempt fails.
    let store = PgStore::connect("postgres://nobody:nothing@127.0.0.1:1/none").unwrap();
    let manager = SessionManager::new(store, SessionConfig::default());
    let token = tower_session_auth::token::SessionToken::generate();
    assert_eq!(
        call(Scope::User, &manager, bearer("/", token.expose())).await,
        "refused: Session store unavailable"
    );
    // Without a token nothing is asked of the store.
    assert_eq!(call(Scope::User, &manager, plain("/")).await, "anonymous");
}

#[tokio::test]
async fn extractors_after_an_eager_layer_reuse_its_validation() {
    let db = TestDb::new().await;
    let backend = Backend::Pg(Arc::new(db));
    backend.add_user(1, "player", Some("player"), true).await;
    let Backend::Pg(db) = &backend else {
        unreachable!()
    };
    let store = InstrumentedStore::new(db.store.clone());
    let manager = SessionManager::new(store.clone(), SessionConfig::default());
    let app = routes().layer(SessionLayer::new(manager.clone()).eager(Scope::User));
    let login = manager.login(1, LoginOptions::new()).await.unwrap();
    store.take_calls();
    let reply = send(&app, bearer("/me", login.token.expose())).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["username"], "player");
    assert_eq!(store.take_calls(), ["validate(user)"]);
    // A request without a token costs nothing, eager or not.
    let reply = send(&app, plain("/plain")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(store.take_calls().is_empty());
}

/// An HTML app's renderer: browsers that are not logged in go to the login page.
fn to_login(
    rejection: &AuthRejection,
    request: &RejectedRequest,
) -> Option<axum::response::Response> {
    let html = request
        .headers
        .get("accept")
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    (html && rejection.status() == StatusCode::UNAUTHORIZED)
        .then(|| Redirect::to(&format!("/login?next={}", request.uri.path())).into_response())
}

#[tokio::test]
async fn an_app_renders_rejections_in_one_place() {
    let backend = Backend::pg().await;
    let manager = backend.manager(SessionConfig::default(), Arc::new(ManualClock::default()));
    let app = routes().layer(SessionLayer::new(manager).render_rejection(to_login));

    // A browser without a session is redirected to the login page.
    let reply = send(&app, get_with("/me", ("accept", "text/html"))).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.headers["location"], "/login?next=/me");
    // An API client still gets the contract's JSON.
    let reply: Reply = send(&app, plain("/me")).await;
    reply.assert_invalid_session("api client");
    // What the renderer leaves alone keeps its default response (a 403 here).
    let (token, _, _) = login(&app, 1).await;
    let mut request = bearer("/logs", &token);
    request
        .headers_mut()
        .insert("accept", "text/html".parse().unwrap());
    let reply = send(&app, request).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.detail(),
        "Insufficient permissions. Required: view_logs"
    );
}
