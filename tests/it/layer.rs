//! The layer through an axum `Router` and `oneshot`, on a real PostgreSQL store: token sources
//! and their precedence, `Set-Cookie` attributes, the removal cookie, `Cache-Control`.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::Backend;
use common::app::{Reply, bearer, get_with, login, router, send};
use tower_session_auth::{
    CookieConfig, LoginOptions, SessionConfig, SessionManager, test_util::ManualClock,
};

async fn app_with(config: SessionConfig) -> (axum::Router, SessionManager) {
    let backend = Backend::pg().await;
    let manager = backend.manager(config, Arc::new(ManualClock::default()));
    (router(manager.clone()), manager)
}

fn cookie_of(reply: &Reply) -> String {
    let cookies = reply.set_cookies();
    assert_eq!(cookies.len(), 1, "expected one Set-Cookie: {cookies:?}");
    cookies[0].clone()
}

fn post(path: &str, header: Option<(&str, &str)>) -> Request<Body> {
    let mut builder = Request::post(path);
    if let Some((name, value)) = header {
        builder = builder.header(name, value);
    }
    builder.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn login_sets_a_hardened_session_cookie() {
    let (app, _) = app_with(SessionConfig::default()).await;
    let (token, _, reply) = login(&app, 1).await;
    assert_eq!(
        cookie_of(&reply),
        format!("id={token}; HttpOnly; SameSite=Lax; Secure; Path=/")
    );
    assert_eq!(reply.headers["cache-control"], "no-store");
    // The cookie authenticates.
    let reply = send(
        &app,
        get_with("/me", ("cookie", &format!("theme=dark; id={token}"))),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["username"], "player");
    // Requests that change nothing set no cookie and keep caches alone.
    assert!(reply.set_cookies().is_empty());
    assert!(reply.headers.get("cache-control").is_none());
}

#[tokio::test]
async fn host_prefix_and_persistent_cookie() {
    let config = SessionConfig::default()
        .idle_timeout(Some(Duration::from_secs(1800)))
        .cookie(CookieConfig::default().host_prefix(true).persistent(true));
    let (app, _) = app_with(config).await;
    let (token, _, reply) = login(&app, 1).await;
    assert_eq!(
        cookie_of(&reply),
        format!("__Host-id={token}; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=1800")
    );
    let reply = send(
        &app,
        get_with("/me", ("cookie", &format!("__Host-id={token}"))),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    // The unprefixed name is another cookie.
    let reply = send(&app, get_with("/me", ("cookie", &format!("id={token}")))).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn persistent_cookie_never_outlives_the_absolute_lifetime() {
    let config = SessionConfig::default()
        .idle_timeout(Some(Duration::from_secs(3600)))
        .absolute_lifetime(Some(Duration::from_secs(600)))
        .cookie(CookieConfig::default().persistent(true).secure(false));
    let (app, _) = app_with(config).await;
    let (token, _, reply) = login(&app, 1).await;
    assert_eq!(
        cookie_of(&reply),
        format!("id={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age=600")
    );
}

#[tokio::test]
async fn logout_by_cookie_sends_a_removal_cookie() {
    let (app, _) = app_with(SessionConfig::default()).await;
    let (token, _, _) = login(&app, 1).await;
    let cookie = format!("id={token}");
    let reply = send(&app, post("/logout", Some(("cookie", &cookie)))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["removed"], true);
    assert_eq!(
        reply.set_cookies(),
        [
            "id=; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=0",
            "refresh=; HttpOnly; SameSite=Strict; Secure; Path=/refresh; Max-Age=0"
        ]
    );
    assert_eq!(reply.headers["cache-control"], "no-store");
    // Replaying the old token fails, by cookie and by header.
    let reply = send(&app, get_with("/me", ("cookie", &cookie))).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        send(&app, bearer("/me", &token)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn header_clients_never_get_cookies() {
    let (app, manager) = app_with(SessionConfig::default()).await;
    let (token, _, _) = login(&app, 1).await;
    // Logging in again while presenting a Bearer token: no cookie, and the old session stays.
    let reply = send(
        &app,
        post(
            "/login/2",
            Some(("authorization", &format!("Bearer {token}"))),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.set_cookies().is_empty());
    assert_eq!(manager.list_for_user(1).await.unwrap().len(), 1);
}

#[tokio::test]
async fn login_by_cookie_replaces_the_browsers_previous_session() {
    let (app, manager) = app_with(SessionConfig::default()).await;
    let (old, _, _) = login(&app, 1).await;
    let reply = send(
        &app,
        post("/login/1", Some(("cookie", &format!("id={old}")))),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let new = reply.body["token"].as_str().unwrap();
    assert_ne!(new, old);
    assert!(cookie_of(&reply).starts_with(&format!("id={new};")));
    let sessions = manager.list_for_user(1).await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(
        sessions[0].id.to_string(),
        reply.body["session_id"].as_str().unwrap()
    );
}

#[tokio::test]
async fn token_sources_and_precedence() {
    let config = SessionConfig::default()
        .token_header(Some(http::HeaderName::from_static("x-session-token")));
    let (app, _) = app_with(config).await;
    let (player, _, _) = login(&app, 1).await;
    let (admin, _, _) = login(&app, 3).await;
    let (builder, _, _) = login(&app, 2).await;

    let whoami = |request: Request<Body>| {
        let app = app.clone();
        async move {
            let reply = send(&app, request).await;
            assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
            reply.body["username"].as_str().unwrap().to_owned()
        }
    };
    let all = Request::get("/me")
        .header("authorization", format!("Bearer {player}"))
        .header("x-session-token", &admin)
        .header("cookie", format!("id={builder}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(whoami(all).await, "player");
    let header_and_cookie = Request::get("/me")
        .header("x-session-token", &admin)
        .header("cookie", format!("id={builder}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(whoami(header_and_cookie).await, "admin");
    // A non-Bearer Authorization header does not hide the cookie.
    let basic_and_cookie = Request::get("/me")
        .header("authorization", "Basic dXNlcjpwYXNz")
        .header("cookie", format!("id={builder}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(whoami(basic_and_cookie).await, "builder");
    // A malformed header token is a 401, not a fall-back to the cookie.
    let bad_header = Request::get("/me")
        .header("x-session-token", "nope")
        .header("cookie", format!("id={builder}"))
        .body(Body::empty())
        .unwrap();
    let reply = send(&app, bad_header).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.detail(), "Invalid or expired session");
}

#[tokio::test]
async fn routes_without_extractors_ignore_sessions() {
    let (app, _) = app_with(SessionConfig::default()).await;
    let reply = send(&app, bearer("/plain", "garbage")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "ok");
}

#[tokio::test]
async fn extractors_without_the_layer_fail_closed() {
    let app = axum::Router::new().route(
        "/me",
        axum::routing::get(|user: tower_session_auth::AuthUser| async move { user.username }),
    );
    let reply = send(&app, bearer("/me", "x")).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.detail(), "Session layer not installed");
}

#[tokio::test]
async fn a_server_error_after_login_sets_no_cookie() {
    let backend = Backend::pg().await;
    let manager = backend.manager(SessionConfig::default(), Arc::new(ManualClock::default()));
    // A handler that logs in (with remember-me, so two cookies are pending) and then fails.
    let app = axum::Router::new()
        .route(
            "/login-then-fail",
            axum::routing::post(|session: tower_session_auth::Session| async move {
                session
                    .login(1, LoginOptions::new().remember(true))
                    .await
                    .unwrap();
                (StatusCode::INTERNAL_SERVER_ERROR, "the handler failed")
            }),
        )
        .route(
            "/login-then-refuse",
            axum::routing::post(|session: tower_session_auth::Session| async move {
                session.login(1, LoginOptions::new()).await.unwrap();
                StatusCode::UNPROCESSABLE_ENTITY
            }),
        )
        .layer(tower_session_auth::SessionLayer::new(manager));
    let reply = send(&app, post("/login-then-fail", None)).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.set_cookies().is_empty(), "{:?}", reply.set_cookies());
    // Below 500 the handler answered on purpose: the login's cookie goes out as usual.
    let reply = send(&app, post("/login-then-refuse", None)).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(cookie_of(&reply).starts_with("id="));
    assert_eq!(reply.headers["cache-control"], "no-store");
}

/// Routes that drive the `Session` handle directly: a logout that needs no live session, and
/// self-service revocation and kick through the handle.
fn handle_routes(manager: &SessionManager) -> axum::Router {
    use axum::Json;
    use axum::extract::Path;
    use axum::routing::post;
    use tower_session_auth::{AuthUser, Session, SessionId, SessionLayer};

    axum::Router::new()
        .route(
            "/bye",
            post(|session: Session| async move { session.logout().await.map(Json) }),
        )
        .route(
            "/revoke/{id}",
            post(
                |session: Session, user: AuthUser, Path(id): Path<SessionId>| async move {
                    session.revoke(user.user_id, id).await.map(Json)
                },
            ),
        )
        .route(
            "/kick/{id}",
            post(
                |session: Session, _user: AuthUser, Path(id): Path<SessionId>| async move {
                    session.kick(id).await.map(Json)
                },
            ),
        )
        .layer(SessionLayer::new(manager.clone()))
}

const SESSION_REMOVAL: &str = "id=; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=0";
const REFRESH_REMOVAL: &str =
    "refresh=; HttpOnly; SameSite=Strict; Secure; Path=/refresh; Max-Age=0";

/// A refresh token of `real`'s series with a secret the server never issued.
fn forged(real: &tower_session_auth::token::RefreshToken) -> String {
    let text = real.expose();
    let other = tower_session_auth::token::RefreshToken::generate().expose();
    format!("{}{}", &text[..33], &other[33..])
}

#[tokio::test]
async fn logout_clears_the_cookies_whatever_the_session_state() {
    use tower_session_auth::{ClientInfo, Refresh, token::SessionToken};

    for backend in [Backend::pg().await, Backend::memory().await] {
        let clock = Arc::new(ManualClock::default());
        let config = SessionConfig::default().idle_timeout(Some(Duration::from_secs(60)));
        let manager = backend.manager(config, clock.clone());
        let app = handle_routes(&manager);
        let bye = |cookie: String| post("/bye", Some(("cookie", &cookie)));

        // Expired: nothing to remove, both cookies cleared all the same.
        let login = manager.login(1, LoginOptions::new()).await.unwrap();
        clock.advance(Duration::from_secs(120));
        let reply = send(&app, bye(format!("id={}", login.token.expose()))).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_eq!(reply.set_cookies(), [SESSION_REMOVAL, REFRESH_REMOVAL]);
        assert_eq!(reply.headers["cache-control"], "no-store");
        assert_eq!(backend.stored_sessions().await, 0);

        // Unknown, malformed (no store call), and a repeated cookie name.
        let unknown = SessionToken::generate().expose().to_owned();
        for cookie in [
            format!("id={unknown}"),
            "id=garbage".to_owned(),
            format!("id={unknown}; id={unknown}"),
        ] {
            let reply = send(&app, bye(cookie.clone())).await;
            assert_eq!(reply.status, StatusCode::OK, "{cookie}: {:?}", reply.body);
            assert_eq!(
                reply.set_cookies(),
                [SESSION_REMOVAL, REFRESH_REMOVAL],
                "{cookie}"
            );
        }

        // No cookie at all, or a Bearer token: no cookie to clear.
        let reply = send(&app, post("/bye", None)).await;
        assert!(reply.set_cookies().is_empty());
        let reply = send(
            &app,
            post(
                "/bye",
                Some(("authorization", &format!("Bearer {unknown}"))),
            ),
        )
        .await;
        assert!(reply.set_cookies().is_empty());

        // A refresh cookie with a forged secret for a real series (the id is public): the
        // cookie is cleared, the series lives on.
        let remembered = manager
            .login(1, LoginOptions::new().remember(true))
            .await
            .unwrap();
        let refresh = remembered.refresh.clone().unwrap();
        let reply = send(&app, bye(format!("refresh={}", forged(&refresh)))).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.set_cookies(), [REFRESH_REMOVAL]);
        assert!(manager.lookup(&remembered.token).await.is_some());

        // The right secret ends the series and its session, and clears both cookies.
        let cookie = format!(
            "id={}; refresh={}",
            remembered.token.expose(),
            refresh.expose()
        );
        let reply = send(&app, bye(cookie)).await;
        assert_eq!(reply.body, true);
        assert_eq!(reply.set_cookies(), [SESSION_REMOVAL, REFRESH_REMOVAL]);
        assert!(manager.lookup(&remembered.token).await.is_none());
        assert!(matches!(
            manager
                .refresh(&refresh, ClientInfo::default())
                .await
                .unwrap(),
            Refresh::Invalid
        ));
        assert_eq!(backend.stored_sessions().await, 0);

        // Only a refresh cookie (another series, current secret): the series ends.
        let other = manager
            .login(1, LoginOptions::new().remember(true))
            .await
            .unwrap();
        let reply = send(
            &app,
            bye(format!(
                "refresh={}",
                other.refresh.as_ref().unwrap().expose()
            )),
        )
        .await;
        assert_eq!(reply.body, false);
        assert_eq!(reply.set_cookies(), [REFRESH_REMOVAL]);
        assert!(manager.lookup(&other.token).await.is_none());

        // A secret the series issued and has since rotated away (a logout that raced a
        // refresh of its own series, say) still ends the series and the session the refresh
        // made: the caller held a real secret.
        let raced = manager
            .login(1, LoginOptions::new().remember(true))
            .await
            .unwrap();
        let first = raced.refresh.clone().unwrap();
        let Refresh::Refreshed(rotated) = manager
            .refresh(&first, ClientInfo::default())
            .await
            .unwrap()
        else {
            panic!("the first refresh of a fresh series succeeds");
        };
        let reply = send(&app, bye(format!("refresh={}", first.expose()))).await;
        assert_eq!(reply.set_cookies(), [REFRESH_REMOVAL]);
        assert!(manager.lookup(&rotated.token).await.is_none());
        assert!(matches!(
            manager
                .refresh(rotated.refresh.as_ref().unwrap(), ClientInfo::default())
                .await
                .unwrap(),
            Refresh::Invalid
        ));
        assert_eq!(backend.stored_sessions().await, 0);
    }
}

#[tokio::test]
async fn revoking_the_current_session_through_the_handle_clears_its_cookie() {
    for backend in [Backend::pg().await, Backend::memory().await] {
        let manager = backend.manager(SessionConfig::default(), Arc::new(ManualClock::default()));
        let app = handle_routes(&manager);
        for route in ["revoke", "kick"] {
            let current = manager.login(1, LoginOptions::new()).await.unwrap();
            let other = manager.login(1, LoginOptions::new()).await.unwrap();
            let cookie = format!("id={}", current.token.expose());
            // Another session: removed, the browser's cookie stays.
            let path = format!("/{route}/{}", other.session.id);
            let reply = send(&app, post(&path, Some(("cookie", &cookie)))).await;
            assert_eq!(reply.body, true, "{route}");
            assert!(reply.set_cookies().is_empty(), "{route}");
            // Its own session: removed, and the cookies cleared.
            let path = format!("/{route}/{}", current.session.id);
            let reply = send(&app, post(&path, Some(("cookie", &cookie)))).await;
            assert_eq!(reply.body, true, "{route}");
            assert_eq!(
                reply.set_cookies(),
                [SESSION_REMOVAL, REFRESH_REMOVAL],
                "{route}"
            );
            assert!(manager.lookup(&current.token).await.is_none());
        }
    }
}

#[tokio::test]
async fn set_cookie_values_are_sensitive_and_no_store_marks_a_token_in_the_body() {
    use axum::Json;
    use tower_session_auth::{NoStore, Session, SessionLayer};

    let backend = Backend::pg().await;
    let manager = backend.manager(SessionConfig::default(), Arc::new(ManualClock::default()));
    let app = axum::Router::new()
        .route(
            "/login",
            axum::routing::post(|session: Session| async move {
                let login = session.login(1, LoginOptions::new().remember(true)).await?;
                Ok::<_, tower_session_auth::AuthRejection>(NoStore(Json(
                    login.token.expose().to_owned(),
                )))
            }),
        )
        .layer(SessionLayer::new(manager.clone()));
    // A header client: no cookie, yet the token in the body is not to be stored.
    let unknown = tower_session_auth::token::SessionToken::generate();
    let reply = send(
        &app,
        post(
            "/login",
            Some(("authorization", &format!("Bearer {}", unknown.expose()))),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.set_cookies().is_empty());
    assert_eq!(reply.headers["cache-control"], "no-store");
    // A browser: the session and refresh cookies are sensitive header values, so HTTP/2 and
    // HTTP/3 never index them.
    let reply = send(&app, post("/login", None)).await;
    let cookies: Vec<_> = reply.headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies.len(), 2);
    assert!(cookies.iter().all(|value| value.is_sensitive()));
    assert_eq!(reply.headers["cache-control"], "no-store");
}
