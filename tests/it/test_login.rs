//! `test_util::login`: a logged-in request in one line, sent with `oneshot` to a router with
//! the `SessionLayer`, on `PgStore` (real PostgreSQL) and `MemoryStore`.

use crate::common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::app::{router, send};
use common::{Backend, harness};
use tower_session_auth::test_util::{self, TestLogin};
use tower_session_auth::{CookieConfig, LoginOptions, SessionConfig, SessionManager};

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

async fn bearer_and_cookie_logins_pass_the_extractors(backend: Backend) {
    let h = harness(backend, SessionConfig::default());
    let admin = test_util::login(&h.manager, 3).await.unwrap();
    let reply = send(&h.app, admin.authorize(get("/me"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["username"], "admin");
    assert_eq!(reply.body["session_id"], admin.session().id.to_string());
    // Authenticated by header: the layer sets no cookie.
    assert!(reply.set_cookies().is_empty());

    // A permission the role grants, and one it does not.
    let reply = send(&h.app, admin.authorize(get("/logs"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "admin");
    let reply = send(&h.app, admin.authorize(get("/manage"))).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.detail(),
        "Insufficient permissions. Required: manage_users"
    );

    // By cookie, beside the cookies the request already carries.
    let player = test_util::login(&h.manager, 1).await.unwrap();
    let with_theme = Request::get("/me")
        .header("cookie", "theme=dark")
        .body(Body::empty())
        .unwrap();
    let reply = send(&h.app, player.authorize_cookie(with_theme)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["username"], "player");
    let reply = send(&h.app, player.authorize_cookie(get("/logs"))).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.detail(),
        "Insufficient permissions. Required: view_logs"
    );

    // The login is a real session: once revoked, its headers no longer pass.
    assert!(h.manager.remove(admin.session().id).await.unwrap());
    send(&h.app, admin.authorize(get("/me")))
        .await
        .assert_invalid_session("revoked, by header");
    assert_eq!(
        send(&h.app, player.authorize(get("/me"))).await.status,
        StatusCode::OK
    );
}

async fn header_values_name_the_token_and_the_configured_cookie(backend: Backend) {
    let config = SessionConfig::default().cookie(CookieConfig::default().host_prefix(true));
    let manager: SessionManager = harness(backend, config).manager;
    let login = TestLogin::with_options(&manager, 2, LoginOptions::new().remember(true))
        .await
        .unwrap();
    let token = login.token().expose().to_owned();
    assert_eq!(login.bearer(), format!("Bearer {token}").as_str());
    assert_eq!(login.cookie(), format!("__Host-id={token}").as_str());
    assert!(login.bearer().is_sensitive() && login.cookie().is_sensitive());
    assert!(login.refresh_token().is_some());
    assert!(!format!("{login:?}").contains(&token));

    let app = router(manager.clone());
    let request = Request::get("/me")
        .header("authorization", "Basic Zm9vOmJhcg==")
        .body(Body::empty())
        .unwrap();
    let request = login.authorize(request);
    assert_eq!(request.headers().get_all("authorization").iter().count(), 1);
    let reply = send(&app, request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["username"], "builder");
    let reply = send(&app, login.authorize_cookie(get("/me"))).await;
    assert_eq!(reply.status, StatusCode::OK);
}

both_stores!(
    bearer_and_cookie_logins_pass_the_extractors,
    header_values_name_the_token_and_the_configured_cookie,
);
