//! End to end: the `mud_server` example binary over real HTTP, driven by a client with a
//! cookie jar, once on the in-memory store and once on PostgreSQL.
//!
//! `cargo test` builds the example before running this file (examples are built by default).

use crate::common;
/// The example's login defences, compiled here too so that a test can present client
/// addresses a loopback connection cannot have.
#[path = "../../examples/mud_server/login_guard.rs"]
#[allow(dead_code)]
mod login_guard;

use common::example::{Server, schema_url};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

/// A browser-like client: keeps cookies, like a user's browser would.
struct Browser {
    http: Client,
    base: String,
}

impl Browser {
    fn new(server: &Server) -> Self {
        Self {
            http: Client::builder().cookie_store(true).build().unwrap(),
            base: server.base.clone(),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_with(method, path, body, &[]).await
    }

    async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        // What a cookie client sends on unsafe requests (the example's CSRF check).
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("x-requested-with", "contract-test");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn login(&self, username: &str) -> Value {
        let (status, body) = self
            .call(
                Method::POST,
                "/login",
                Some(json!({"username": username, "password": format!("{username}-pass")})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

fn set_cookies(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn anonymous(server: &Server) -> Browser {
    Browser::new(server)
}

async fn get_bearer(server: &Server, path: &str, token: &str) -> (StatusCode, Value) {
    anonymous(server)
        .call_with(
            Method::GET,
            path,
            None,
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await
}

/// The example server's whole HTTP contract except persistence, on whichever store the server uses.
async fn http_contract(server: &Server) {
    // Login: body and hardened cookie.
    let raw = Client::new()
        .post(format!("{}/login", server.base))
        .header("x-requested-with", "contract-test")
        .header("x-client-type", "  Web ")
        .header("user-agent", "contract-test/1.0")
        .json(&json!({"username": "player", "password": "player-pass"}))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::OK);
    let cookies = set_cookies(&raw);
    assert_eq!(raw.headers()["cache-control"], "no-store");
    let body: Value = raw.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 43);
    // The session cookie, and (a login without remember-me) the removal of any refresh cookie
    // a previous user of this browser left.
    assert_eq!(
        cookies,
        [
            "refresh=; HttpOnly; SameSite=Strict; Path=/refresh; Max-Age=0".to_owned(),
            format!("id={token}; HttpOnly; SameSite=Lax; Path=/"),
        ]
    );
    assert_eq!(body["username"], "player");
    assert_eq!(body["role"], "player");
    let names: Vec<&str> = body["characters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["player_char", "player_alt"]);
    let alt = body["characters"][1].clone();
    let first_session = body["session_id"].clone();
    assert_eq!(alt["world_id"], "daily_undertaking");

    // Bad credentials and deactivated accounts.
    let browser = anonymous(server);
    for (username, password) in [("player", "wrong"), ("nobody", "nobody-pass")] {
        let (status, body) = browser
            .call(
                Method::POST,
                "/login",
                Some(json!({"username": username, "password": password})),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["detail"], "Invalid username or password");
    }
    let (status, body) = browser
        .call(
            Method::POST,
            "/login",
            Some(json!({"username": "banned", "password": "banned-pass"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["detail"], "Account is deactivated");

    // /me by Bearer, and 401 for garbage.
    let (status, me) = get_bearer(server, "/me", &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["username"], "player");
    assert_eq!(me["session_id"], first_session);
    for garbage in ["garbage", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        let (status, body) = get_bearer(server, "/me", garbage).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["detail"], "Invalid or expired session");
    }

    // A browser session: cookie jar only.
    let player = Browser::new(server);
    player.login("player").await;
    let (status, me) = player.call(Method::GET, "/me", None).await;
    assert_eq!(
        (status, me["username"].as_str()),
        (StatusCode::OK, Some("player"))
    );
    let (status, body) = player.call(Method::POST, "/ping", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"ok": true})));
    let (status, characters) = player.call(Method::GET, "/characters", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(characters.as_array().unwrap().len(), 2);

    // Game routes need an explicit selection; another user's character is 404.
    let (status, body) = player.call(Method::GET, "/game/whoami", None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body["detail"],
        "No character selected for session. Select a character first."
    );
    let admin = Browser::new(server);
    let admin_login = admin.login("admin").await;
    let admin_char = admin_login["characters"][0]["id"].clone();
    let (status, body) = player
        .call(
            Method::POST,
            "/characters/select",
            Some(json!({"character_id": admin_char})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["detail"], "Character not found for this user");
    let (status, body) = player
        .call(
            Method::POST,
            "/characters/select",
            Some(json!({"character_id": alt["id"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"character_name": "player_alt", "world_id": "daily_undertaking"})
    );
    let (status, whoami) = player.call(Method::GET, "/game/whoami", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(whoami["character_name"], "player_alt");
    assert_eq!(whoami["world_id"], "daily_undertaking");
    assert_eq!(whoami["character_id"], alt["id"]);

    // Permissions.
    let (status, body) = player.call(Method::GET, "/admin/logs", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["detail"],
        "Insufficient permissions. Required: view_logs"
    );
    assert_eq!(
        admin.call(Method::GET, "/admin/logs", None).await.0,
        StatusCode::OK
    );
    let superuser = Browser::new(server);
    superuser.login("superuser").await;
    assert_eq!(
        superuser.call(Method::GET, "/admin/logs", None).await.0,
        StatusCode::OK
    );

    // Role change takes effect on the target's very next request.
    let (status, body) = admin
        .call(
            Method::POST,
            "/admin/users/player/role",
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "admins lack change_roles: {body}"
    );
    let (status, _) = superuser
        .call(
            Method::POST,
            "/admin/users/player/role",
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        player.call(Method::GET, "/admin/logs", None).await.0,
        StatusCode::OK
    );
    let (status, body) = superuser
        .call(
            Method::POST,
            "/admin/users/ghost/role",
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (StatusCode::NOT_FOUND, Some("User not found"))
    );
    superuser
        .call(
            Method::POST,
            "/admin/users/player/role",
            Some(json!({"role": "player"})),
        )
        .await;
    assert_eq!(
        player.call(Method::GET, "/admin/logs", None).await.0,
        StatusCode::FORBIDDEN
    );

    // Session management: listing, own-only revocation, sign out everywhere else.
    let (status, sessions) = player.call(Method::GET, "/sessions", None).await;
    assert_eq!(status, StatusCode::OK);
    let sessions = sessions.as_array().unwrap().clone();
    assert_eq!(
        sessions.len(),
        2,
        "the first login and the browser's: {sessions:?}"
    );
    let current: Vec<&Value> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    let other = sessions.iter().find(|s| s["current"] == false).unwrap();
    assert_eq!(other["client_type"], "web");
    assert_eq!(other["user_agent"], "contract-test/1.0");
    assert_eq!(other["ip"], "127.0.0.1");
    for key in ["id", "created_at", "last_activity", "expires_at"] {
        assert!(other.get(key).is_some(), "listing lacks {key}");
    }
    let admin_session = admin.call(Method::GET, "/me", None).await.1["session_id"].clone();
    let path = format!("/sessions/{}", admin_session.as_str().unwrap());
    let (status, body) = player.call(Method::DELETE, &path, None).await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (StatusCode::NOT_FOUND, Some("Session not found"))
    );
    assert_eq!(admin.call(Method::GET, "/me", None).await.0, StatusCode::OK);
    let (status, _) = player
        .call(Method::DELETE, "/sessions/not-a-uuid", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let other_path = format!("/sessions/{}", other["id"].as_str().unwrap());
    assert_eq!(
        player.call(Method::DELETE, &other_path, None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        get_bearer(server, "/me", &token).await.0,
        StatusCode::UNAUTHORIZED
    );
    let second = Browser::new(server);
    second.login("player").await;
    let (status, body) = player.call(Method::DELETE, "/sessions", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"revoked": 1})));
    assert_eq!(
        second.call(Method::GET, "/me", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        player.call(Method::GET, "/me", None).await.0,
        StatusCode::OK
    );

    // Kick (kick_users): the kicked session is gone at once.
    let victim = Browser::new(server);
    let victim_login = victim.login("builder").await;
    let (status, body) = player
        .call(
            Method::POST,
            "/admin/sessions/kick",
            Some(json!({"session_id": victim_login["session_id"]})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["detail"],
        "Insufficient permissions. Required: kick_users"
    );
    let (status, body) = admin
        .call(
            Method::POST,
            "/admin/sessions/kick",
            Some(json!({"session_id": victim_login["session_id"]})),
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({"removed": true})));
    assert_eq!(
        victim.call(Method::GET, "/me", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (_, body) = admin
        .call(
            Method::POST,
            "/admin/sessions/kick",
            Some(json!({"session_id": victim_login["session_id"]})),
        )
        .await;
    assert_eq!(body, json!({"removed": false}));

    // Health counts active sessions: player, admin, superuser.
    let (status, health) = anonymous(server).call(Method::GET, "/health", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health, json!({"status": "ok", "active_players": 3}));

    // Logout clears the cookie; replaying the old token is 401.
    let stolen = admin_login["token"].as_str().unwrap().to_owned();
    let raw = admin
        .http
        .post(format!("{}/logout", server.base))
        .header("x-requested-with", "contract-test")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::OK);
    assert_eq!(
        set_cookies(&raw),
        [
            "id=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0",
            "refresh=; HttpOnly; SameSite=Strict; Path=/refresh; Max-Age=0"
        ]
    );
    let body: Value = raw.json().await.unwrap();
    assert_eq!(body, json!({"message": "Goodbye, admin!"}));
    assert_eq!(
        admin.call(Method::GET, "/me", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get_bearer(server, "/me", &stolen).await.0,
        StatusCode::UNAUTHORIZED
    );
}

/// Remember me: refresh by body and by cookie, rotation, reuse detection, logout.
async fn remember_me_contract(server: &Server) {
    // Login with remember: a refresh token in the body and in its own narrow cookie.
    let raw = Client::new()
        .post(format!("{}/login", server.base))
        .header("x-requested-with", "contract-test")
        .json(&json!({"username": "builder", "password": "builder-pass", "remember": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::OK);
    let cookies = set_cookies(&raw);
    let body: Value = raw.json().await.unwrap();
    let r0 = body["refresh_token"].as_str().unwrap().to_owned();
    let first_token = body["token"].as_str().unwrap().to_owned();
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    assert!(
        cookies[1].starts_with(&format!(
            "refresh={r0}; HttpOnly; SameSite=Strict; Path=/refresh; Max-Age="
        )),
        "{}",
        cookies[1]
    );

    // A plain login returns no refresh token.
    let plain = anonymous(server).login("builder").await;
    assert!(plain.get("refresh_token").is_none());

    // A made-up secret for the (public) series id is invalid and changes nothing: the
    // session and the real token keep working.
    let api = anonymous(server);
    let forged = format!(
        "{}{}",
        &r0[..33],
        tower_session_auth::token::SessionToken::generate().expose()
    );
    let (status, body) = api
        .call(
            Method::POST,
            "/refresh",
            Some(json!({"refresh_token": forged})),
        )
        .await;
    assert_refresh_refused(status, &body);
    assert_eq!(
        get_bearer(server, "/me", &first_token).await.0,
        StatusCode::OK
    );

    // Refresh by body: a new session and a rotated token.
    let (status, body) = api
        .call(Method::POST, "/refresh", Some(json!({"refresh_token": r0})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r1 = body["refresh_token"].as_str().unwrap().to_owned();
    let refreshed_token = body["token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r0);
    assert!(body["session_id"].is_string());
    let (status, me) = get_bearer(server, "/me", &refreshed_token).await;
    assert_eq!(
        (status, me["username"].as_str()),
        (StatusCode::OK, Some("builder"))
    );

    // The superseded token again (grace window 0 here): the family is revoked.
    let (status, body) = api
        .call(Method::POST, "/refresh", Some(json!({"refresh_token": r0})))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["detail"], "Refresh token reuse detected");
    assert_eq!(
        get_bearer(server, "/me", &refreshed_token).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get_bearer(server, "/me", &first_token).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = api
        .call(Method::POST, "/refresh", Some(json!({"refresh_token": r1})))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["detail"], "Invalid or expired refresh token");
    for garbage in [json!({"refresh_token": "garbage"}), json!({})] {
        let (status, body) = api.call(Method::POST, "/refresh", Some(garbage)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["detail"], "Invalid or expired refresh token");
    }

    // A browser refreshes with its cookie alone, and logout ends the series.
    let browser = Browser::new(server);
    let (status, _) = browser
        .call(
            Method::POST,
            "/login",
            Some(json!({"username": "player", "password": "player-pass", "remember": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = browser.call(Method::POST, "/refresh", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let cookie_refreshed = body["refresh_token"].as_str().unwrap().to_owned();
    let (status, me) = browser.call(Method::GET, "/me", None).await;
    assert_eq!(
        (status, me["session_id"].clone()),
        (StatusCode::OK, body["session_id"].clone())
    );
    assert_eq!(
        browser.call(Method::POST, "/logout", None).await.0,
        StatusCode::OK
    );
    let (status, body) = api
        .call(
            Method::POST,
            "/refresh",
            Some(json!({"refresh_token": cookie_refreshed})),
        )
        .await;
    assert_refresh_refused(status, &body);
}

/// A refresh answered `401 Invalid or expired refresh token`.
fn assert_refresh_refused(status: StatusCode, body: &Value) {
    assert_eq!(
        (status, body["detail"].as_str()),
        (
            StatusCode::UNAUTHORIZED,
            Some("Invalid or expired refresh token")
        ),
        "{body}"
    );
}

/// A memory-store and a PostgreSQL test of one contract, each against its own example server
/// started with `env`.
macro_rules! on_both_stores {
    ($memory:ident, $postgres:ident, $contract:ident, $env:expr) => {
        #[tokio::test]
        async fn $memory() {
            let server = Server::start_with(None, $env).await;
            $contract(&server).await;
            server.stop().await;
        }

        #[tokio::test]
        async fn $postgres() {
            let server = Server::start_with(Some(&schema_url().await), $env).await;
            $contract(&server).await;
            server.stop().await;
        }
    };
}

#[tokio::test]
async fn memory_store_serves_the_contract() {
    let server = Server::start(None).await;
    http_contract(&server).await;
    remember_me_contract(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn postgres_store_serves_the_contract_and_survives_restarts() {
    let url = schema_url().await;
    let server = Server::start(Some(&url)).await;
    http_contract(&server).await;
    remember_me_contract(&server).await;
    let browser = Browser::new(&server);
    let login = browser.login("builder").await;
    let token = login["token"].as_str().unwrap().to_owned();
    server.stop().await;

    // A restarted server (seeding again, idempotently) still honours the session.
    let server = Server::start(Some(&url)).await;
    let (status, me) = get_bearer(&server, "/me", &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["username"], "builder");
    let (status, characters) = get_bearer(&server, "/characters", &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        characters.as_array().unwrap().len(),
        1,
        "seeding twice duplicated data"
    );
    server.stop().await;
}

/// `SESSION_SCHEMA`: in a database whose search path already holds the application's own
/// `sessions` table, the server creates the crate's tables in the named schema and serves the
/// whole contract from them, leaving the application's table as it was.
#[tokio::test]
async fn session_schema_puts_the_crates_tables_beside_the_applications_sessions_table() {
    let url = common::example::app_schema_url(common::APP_SESSIONS).await;
    let db = url.db();
    let before = common::app_sessions(db).await;
    let auth = db.tables_schema("auth");
    let server = Server::start_with(Some(&url), &[("SESSION_SCHEMA", &auth)]).await;
    http_contract(&server).await;
    remember_me_contract(&server).await;
    let browser = Browser::new(&server);
    let login = browser.login("builder").await;
    let session_id: uuid::Uuid = login["session_id"].as_str().unwrap().parse().unwrap();
    let stored: i64 = db
        .client()
        .await
        .query_one(
            &format!("SELECT count(*) FROM {auth}.sessions WHERE id = $1"),
            &[&session_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 1, "the session is in {auth}.sessions");
    assert_eq!(common::app_sessions(db).await, before);
    server.stop().await;
}

/// `DATABASE_DRIVER=sqlx`: the server on `SqlxStore` serves the whole contract, its sessions
/// are read by the server on the default driver, and what the sqlx store does not offer is
/// refused at start-up.
#[cfg(feature = "sqlx")]
#[tokio::test]
async fn sqlx_driver_serves_the_contract() {
    let url = schema_url().await;
    // sqlx names its connections after PGAPPNAME (tokio-postgres ignores it): the sqlx pool's
    // connections are the ones that carry this name.
    let sqlx_name = format!("mud_server_sqlx_{}", uuid::Uuid::new_v4().simple());
    let sqlx_env = [
        ("DATABASE_DRIVER", "sqlx"),
        ("PGAPPNAME", sqlx_name.as_str()),
    ];
    let server = Server::start_with(Some(&url), &sqlx_env).await;
    http_contract(&server).await;
    remember_me_contract(&server).await;
    let login = Browser::new(&server).login("builder").await;
    let token = login["token"].as_str().unwrap().to_owned();
    let sqlx_connections: i64 = url
        .db()
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&sqlx_name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        sqlx_connections > 0,
        "the sessions went through the sqlx pool"
    );
    server.stop().await;

    // The same database on the default driver honours the session.
    let server = Server::start(Some(&url)).await;
    let (status, me) = get_bearer(&server, "/me", &token).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["username"], "builder");
    server.stop().await;

    let refused = common::example::refused_start(
        &url,
        &[
            ("DATABASE_DRIVER", "sqlx"),
            ("SESSION_DURABLE_REVOCATIONS", "true"),
        ],
    )
    .await;
    assert!(
        refused.contains("SESSION_DURABLE_REVOCATIONS needs DATABASE_DRIVER=deadpool"),
        "{refused}"
    );
    let refused = common::example::refused_start(
        &url,
        &[("DATABASE_DRIVER", "sqlx"), ("DATABASE_PREPARED", "false")],
    )
    .await;
    assert!(
        refused.contains(
            "DATABASE_PREPARED=false needs DATABASE_DRIVER=deadpool: sqlx prepares every \
             statement in a round trip of its own before running it"
        ),
        "{refused}"
    );
    let refused = common::example::refused_start(&url, &[("DATABASE_DRIVER", "diesel")]).await;
    assert!(
        refused.contains(r#"DATABASE_DRIVER: \"diesel\" is neither deadpool nor sqlx"#),
        "{refused}"
    );
}

/// `DATABASE_PREPARED=false`: the session store and the example's own queries (the user at
/// login, the characters, role and active changes) on unnamed statements serve the whole
/// contract (here on a direct connection; through PgBouncer in `pgbouncer.rs`). A value other
/// than true or false is refused at start-up.
#[tokio::test]
async fn database_prepared_false_serves_the_contract() {
    let url = schema_url().await;
    let server = Server::start_with(Some(&url), &[("DATABASE_PREPARED", "false")]).await;
    http_contract(&server).await;
    remember_me_contract(&server).await;
    server.stop().await;
    let server = Server::start_with(
        Some(&url),
        &[
            ("DATABASE_PREPARED", "false"),
            ("SESSION_RECENT_AUTH_SECS", "1"),
        ],
    )
    .await;
    stale_login_contract(&server).await;
    server.stop().await;

    let refused = common::example::refused_start(&url, &[("DATABASE_PREPARED", "no")]).await;
    assert!(
        refused.contains(r#"DATABASE_PREPARED: \"no\" is neither true nor false"#),
        "{refused}"
    );
}

// ---------------------------------------------------------------------------------------------
// Abuse resistance: login CSRF, headers, throttling, bounded password hashing, logout.

/// The `login_csrf` cookie value and the form's hidden field of a fresh login page.
async fn login_form(server: &Server) -> (String, String) {
    let page = Client::new()
        .get(format!("{}/account/login", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_page_headers(&page);
    let cookie = set_cookies(&page)
        .into_iter()
        .find(|c| c.starts_with("login_csrf="))
        .expect("the login page sets its double-submit cookie");
    assert!(
        cookie.ends_with("; HttpOnly; SameSite=Strict; Path=/account/login"),
        "{cookie}"
    );
    let value = cookie["login_csrf=".len()..cookie.find(';').unwrap()].to_owned();
    let html = page.text().await.unwrap();
    let field = format!("name=\"csrf\" value=\"{value}\"");
    assert!(html.contains(&field), "{html}");
    assert!(
        !html.contains("<script") && !html.contains("<style"),
        "{html}"
    );
    (format!("login_csrf={value}"), value)
}

/// The headers every HTML page carries.
fn assert_page_headers(response: &reqwest::Response) {
    let headers = response.headers();
    assert_eq!(headers["cache-control"], "no-store");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "same-origin");
    assert_eq!(headers["x-frame-options"], "DENY");
}

/// Posts the HTML login form as `player` with the given cookie, field and extra headers.
async fn post_login_form(
    server: &Server,
    cookie: Option<&str>,
    csrf: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let client = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut request = client
        .post(format!("{}/account/login", server.base))
        .form(&[
            ("username", "player"),
            ("password", "player-pass"),
            ("csrf", csrf),
        ]);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// Login CSRF: the HTML form needs this origin and its double-submit token; the JSON login
/// needs `X-Requested-With` or this origin. A refused login sets no cookie.
async fn login_csrf_contract(server: &Server) {
    let origin = server.base.clone();
    let (cookie, token) = login_form(server).await;
    let same_origin = [
        ("origin", origin.as_str()),
        ("sec-fetch-site", "same-origin"),
    ];
    // (case, double-submit cookie, form token, headers)
    type Case<'a> = (&'a str, Option<&'a str>, &'a str, Vec<(&'a str, &'a str)>);
    let refused: [Case; 6] = [
        (
            "another origin",
            Some(&cookie),
            &token,
            vec![("origin", "http://evil.example")],
        ),
        (
            "a sibling site",
            Some(&cookie),
            &token,
            vec![("origin", &origin), ("sec-fetch-site", "same-site")],
        ),
        (
            "an opaque origin",
            Some(&cookie),
            &token,
            vec![("origin", "null")],
        ),
        ("no token cookie", None, &token, same_origin.to_vec()),
        (
            "a wrong token",
            Some(&cookie),
            "forged",
            same_origin.to_vec(),
        ),
        ("no origin at all", Some(&cookie), &token, vec![]),
    ];
    for (case, cookie, csrf, headers) in refused {
        let response = post_login_form(server, cookie, csrf, &headers).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{case}");
        assert!(set_cookies(&response).is_empty(), "{case}");
        assert_page_headers(&response);
    }
    let response = post_login_form(server, Some(&cookie), &token, &same_origin).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], "/account/sessions");
    assert!(
        set_cookies(&response).iter().any(|c| c.starts_with("id=")),
        "{:?}",
        set_cookies(&response)
    );

    // The JSON login: a browser page elsewhere cannot send it.
    let login = json!({"username": "player", "password": "player-pass"});
    for headers in [vec![], vec![("origin", "http://evil.example")]] {
        let mut request = Client::new()
            .post(format!("{}/login", server.base))
            .json(&login);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(set_cookies(&response).is_empty());
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["detail"], "Cross-site request rejected");
    }
    let response = Client::new()
        .post(format!("{}/login", server.base))
        .header("origin", &origin)
        .json(&login)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// Headers, `{"detail"}` bodies and `WWW-Authenticate` on the example's own responses.
async fn response_headers_contract(server: &Server) {
    let api = anonymous(server);
    // A failed login is the example's own 401: it names the scheme.
    let response = api
        .http
        .post(format!("{}/login", server.base))
        .header("x-requested-with", "contract-test")
        .json(&json!({"username": "player", "password": "wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    // Bodies that are not the expected JSON are answered with a detail, like every error.
    for (content_type, body, status) in [
        ("application/json", "{\"username\": \"player\"}", 422),
        ("application/json", "not json", 400),
        ("text/plain", "{}", 415),
    ] {
        let response = api
            .http
            .post(format!("{}/login", server.base))
            .header("x-requested-with", "contract-test")
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{body}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{body}"
        );
    }
    // Unknown routes and methods too.
    for (method, path, status) in [
        (Method::GET, "/nowhere", StatusCode::NOT_FOUND),
        (Method::GET, "/login", StatusCode::METHOD_NOT_ALLOWED),
    ] {
        let (got, body) = api.call(method, path, None).await;
        assert_eq!(got, status, "{path}");
        assert!(body["detail"].is_string(), "{path}: {body}");
    }
    // A token body is never cached, whether or not a cookie came with it.
    let response = api
        .http
        .post(format!("{}/login", server.base))
        .header("x-requested-with", "contract-test")
        .bearer_auth("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .json(&json!({"username": "player", "password": "player-pass", "remember": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        set_cookies(&response).is_empty(),
        "a header client gets no cookie"
    );
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    let refreshed = api
        .http
        .post(format!("{}/refresh", server.base))
        .json(&json!({"refresh_token": body["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), StatusCode::OK);
    assert_eq!(refreshed.headers()["cache-control"], "no-store");
    // The session page and the redirect to the login form.
    let browser = Browser::new(server);
    browser.login("player").await;
    let page = browser
        .http
        .get(format!("{}/account/sessions", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_page_headers(&page);
    let css = api
        .http
        .get(format!("{}/account/style.css", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), StatusCode::OK);
    assert!(
        css.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
}

/// Logout always logs out; revoking the current session clears the cookies too.
async fn logout_contract(server: &Server) {
    const REMOVED: [&str; 2] = [
        "id=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0",
        "refresh=; HttpOnly; SameSite=Strict; Path=/refresh; Max-Age=0",
    ];
    // Revoking this session by id is a logout.
    let browser = Browser::new(server);
    let login = browser.login("builder").await;
    let path = format!("/sessions/{}", login["session_id"].as_str().unwrap());
    let response = browser
        .http
        .delete(format!("{}{path}", server.base))
        .header("x-requested-with", "contract-test")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(set_cookies(&response), REMOVED);
    assert_eq!(
        browser.call(Method::GET, "/me", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    // An administrator who kicks their own session is signed out the same way.
    let admin = Browser::new(server);
    let login_admin = admin.login("admin").await;
    let response = admin
        .http
        .post(format!("{}/admin/sessions/kick", server.base))
        .header("x-requested-with", "contract-test")
        .json(&json!({"session_id": login_admin["session_id"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        set_cookies(&response),
        REMOVED,
        "kicking the current session"
    );
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"removed": true})
    );
    assert_eq!(
        admin.call(Method::GET, "/me", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    // A cookie the server no longer knows: logout still clears it, with a 200.
    let response = Client::new()
        .post(format!("{}/logout", server.base))
        .header("x-requested-with", "contract-test")
        .header("cookie", format!("id={}", login["token"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(set_cookies(&response), REMOVED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"message": "Goodbye!"}));
    // A cross-site logout is refused and clears nothing.
    let response = Client::new()
        .post(format!("{}/logout", server.base))
        .header("origin", "http://evil.example")
        .header("cookie", "id=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(set_cookies(&response).is_empty());
}

/// The /health count is shared: a login in between does not show until the interval ends
/// (the server under test counts once an hour).
async fn health_count_is_shared(server: &Server) {
    let health = || async {
        let (status, body) = anonymous(server).call(Method::GET, "/health", None).await;
        assert_eq!(status, StatusCode::OK);
        body["active_players"].as_u64().unwrap()
    };
    let before = health().await;
    anonymous(server).login("admin").await;
    assert_eq!(health().await, before);
}

async fn abuse_contract(server: &Server) {
    login_csrf_contract(server).await;
    response_headers_contract(server).await;
    logout_contract(server).await;
    health_count_is_shared(server).await;
}

const ABUSE_ENV: &[(&str, &str)] = &[("HEALTH_COUNT_INTERVAL_SECS", "3600")];

#[tokio::test]
async fn memory_store_refuses_login_csrf_and_always_logs_out() {
    let server = Server::start_with(None, ABUSE_ENV).await;
    abuse_contract(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn postgres_store_refuses_login_csrf_and_always_logs_out() {
    let url = schema_url().await;
    let server = Server::start_with(Some(&url), ABUSE_ENV).await;
    abuse_contract(&server).await;

    // The directory failing at the HTML login is a 500 page, never a 401, and sets no cookie.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute("ALTER TABLE users RENAME TO users_away")
        .await
        .unwrap();
    let (cookie, token) = login_form(&server).await;
    let response = post_login_form(
        &server,
        Some(&cookie),
        &token,
        &[("origin", &server.base), ("sec-fetch-site", "same-origin")],
    )
    .await;
    client
        .batch_execute("ALTER TABLE users_away RENAME TO users")
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(set_cookies(&response).is_empty());
    assert_page_headers(&response);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("Something went wrong")
    );
    server.stop().await;
}

/// A client bound to another loopback address, so the per-address limit can be told apart.
fn client_from(address: &str) -> Client {
    Client::builder()
        .local_address(address.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn try_login(
    client: &Client,
    server: &Server,
    username: &str,
    password: &str,
) -> reqwest::Response {
    client
        .post(format!("{}/login", server.base))
        .header("x-requested-with", "contract-test")
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap()
}

/// `429` with `Retry-After` once an address or a username has spent its attempts; other
/// addresses and usernames are unaffected, and the wait is bounded by the refill period.
async fn throttling_contract(server: &Server) {
    let here = client_from("127.0.0.1");
    let elsewhere = client_from("127.0.0.2");
    let assert_throttled = |response: &reqwest::Response, max_wait: u64| {
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let wait: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=max_wait).contains(&wait), "Retry-After: {wait}");
    };
    // Per username from one address (3 a minute): the fourth attempt from here is throttled,
    // even with the right password; the owner, from another address, is not locked out.
    for _ in 0..3 {
        let response = try_login(&here, server, "builder", "wrong").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let response = try_login(&here, server, "builder", "builder-pass").await;
    assert_throttled(&response, 20);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["detail"], "Too many login attempts. Try again later.");
    assert_eq!(
        try_login(&elsewhere, server, "builder", "builder-pass")
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        try_login(&elsewhere, server, "admin", "admin-pass")
            .await
            .status(),
        StatusCode::OK
    );
    // Per address (5 a minute, 4 spent here: the throttled attempt took its address cell): one
    // more, then 429 whatever the username; another address still logs in.
    for username in ["nobody"] {
        assert_eq!(
            try_login(&here, server, username, "x").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_throttled(&try_login(&here, server, "player", "player-pass").await, 12);
    assert_eq!(
        try_login(&elsewhere, server, "player", "player-pass")
            .await
            .status(),
        StatusCode::OK
    );
    // Per account (6 a minute from anywhere; 4 spent on builder): a campaign spread over
    // fresh addresses gets two more, then waits too.
    for n in 3..=4 {
        let fresh = client_from(&format!("127.0.0.{n}"));
        let response = try_login(&fresh, server, "builder", "wrong").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "127.0.0.{n}");
    }
    let fresh = client_from("127.0.0.5");
    assert_throttled(&try_login(&fresh, server, "builder", "wrong").await, 10);
}

const THROTTLE_ENV: &[(&str, &str)] = &[
    ("LOGIN_RATE_PER_ADDRESS", "5"),
    ("LOGIN_RATE_PER_USERNAME", "3"),
    ("LOGIN_RATE_PER_ACCOUNT", "6"),
];

on_both_stores!(
    memory_store_throttles_logins_per_address_and_username,
    postgres_store_throttles_logins_per_address_and_username,
    throttling_contract,
    THROTTLE_ENV
);

/// A field of `/proc/<pid>/status`, in KiB.
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// 300 concurrent logins for unknown users: the password checks are bounded (some are told
/// `503` with `Retry-After` at once), the process grows by well under 256 MiB, and `/health`
/// keeps answering meanwhile. Over-long passwords are refused without hashing.
async fn flood_contract(server: &Server) {
    // One login first, so the worker threads and the allocator are set up before the baseline.
    anonymous(server).login("player").await;
    let baseline = proc_status_kib(server.pid(), "VmRSS");
    let client = Client::new();
    let floods = (0..300).map(|i| {
        let client = client.clone();
        let url = format!("{}/login", server.base);
        async move {
            let response = client
                .post(url)
                .header("x-requested-with", "flood")
                .json(&json!({"username": format!("nobody-{i}"), "password": "guess"}))
                .send()
                .await
                .unwrap();
            let retry_after = response.headers().get("retry-after").cloned();
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            (status, retry_after, body)
        }
    });
    let done = std::sync::atomic::AtomicBool::new(false);
    let health = async {
        let mut answered = 0;
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            let (status, body) = anonymous(server).call(Method::GET, "/health", None).await;
            assert_eq!(
                (status, body["status"].as_str()),
                (StatusCode::OK, Some("ok"))
            );
            answered += 1;
            tokio::task::yield_now().await;
        }
        answered
    };
    let flood = async {
        let replies = join_all(floods).await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        replies
    };
    let (replies, health_answers) = tokio::join!(flood, health);
    let peak = proc_status_kib(server.pid(), "VmHWM");
    let growth_mib = peak.saturating_sub(baseline) / 1024;
    eprintln!(
        "flood: baseline VmRSS {} MiB, VmHWM after {} MiB, growth {growth_mib} MiB; \
         /health answered {health_answers} times during the flood",
        baseline / 1024,
        peak / 1024
    );
    assert!(growth_mib < 128, "the process grew by {growth_mib} MiB");
    assert!(health_answers > 0);
    let mut busy = 0;
    for (status, retry_after, body) in &replies {
        match *status {
            StatusCode::UNAUTHORIZED => {
                assert_eq!(body["detail"], "Invalid username or password")
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                busy += 1;
                assert_eq!(retry_after.as_ref().unwrap(), "1");
                assert_eq!(body["detail"], "Server busy. Try again later.");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(busy > 0, "300 concurrent checks were all queued");
    assert!(busy < 300, "no check ran at all");

    // Over-long passwords never reach a worker: all 300 are 422, none is 503.
    let long = "x".repeat(1025);
    let replies = join_all((0..300).map(|i| {
        let client = client.clone();
        let url = format!("{}/login", server.base);
        let long = long.clone();
        async move {
            let response = client
                .post(url)
                .header("x-requested-with", "flood")
                .json(&json!({"username": format!("nobody-{i}"), "password": long}))
                .send()
                .await
                .unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    }))
    .await;
    for (status, body) in replies {
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["detail"], "Password too long");
    }
}

/// Runs each future as a task of its own, all at once, and collects their outputs in order.
async fn join_all<T: Send + 'static>(
    futures: impl Iterator<Item = impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let tasks: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(tasks.len());
    for task in tasks {
        outputs.push(task.await.unwrap());
    }
    outputs
}

const FLOOD_ENV: &[(&str, &str)] = &[
    ("LOGIN_RATE_PER_ADDRESS", "0"),
    ("LOGIN_RATE_PER_USERNAME", "0"),
];

on_both_stores!(
    memory_store_bounds_password_hashing_under_a_login_flood,
    postgres_store_bounds_password_hashing_under_a_login_flood,
    flood_contract,
    FLOOD_ENV
);

/// After the session expired, logout still clears both cookies, and the browser's next
/// `/refresh` fails; without the logout, that refresh would have signed it back in.
async fn logout_after_expiry_contract(server: &Server) {
    let remembered = || async {
        let browser = Browser::new(server);
        let (status, body) = browser
            .call(
                Method::POST,
                "/login",
                Some(json!({"username": "player", "password": "player-pass", "remember": true})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        browser
    };
    let logged_out = remembered().await;
    let kept = remembered().await;
    // A browser on the session page, whose form token was issued before the expiry.
    let on_page = remembered().await;
    let html = on_page
        .http
        .get(format!("{}/account/sessions", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("the page's form token") + marker.len();
    let form_token = html[start..start + html[start..].find('"').unwrap()].to_owned();
    // An API client that keeps its refresh token itself.
    let api = anonymous(server);
    let (status, login) = api
        .call_with(
            Method::POST,
            "/login",
            Some(json!({"username": "builder", "password": "builder-pass", "remember": true})),
            &[(
                "authorization",
                "Bearer AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            )],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{login}");
    let api_token = login["token"].as_str().unwrap().to_owned();
    let api_refresh = login["refresh_token"].clone();
    // The session idles out (TTL 1 s); the remember-me series lives on.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        logged_out.call(Method::GET, "/me", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let response = logged_out
        .http
        .post(format!("{}/logout", server.base))
        .header("x-requested-with", "contract-test")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        set_cookies(&response),
        [
            "id=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0",
            "refresh=; HttpOnly; SameSite=Strict; Path=/refresh; Max-Age=0"
        ]
    );
    let (status, body) = logged_out.call(Method::POST, "/refresh", None).await;
    assert_refresh_refused(status, &body);
    let (status, body) = kept.call(Method::POST, "/refresh", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The page's sign-out does the same.
    let response = on_page
        .http
        .post(format!("{}/account/logout", server.base))
        .header("origin", &server.base)
        .form(&[("csrf", form_token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.url().path(),
        "/account/login",
        "redirected to the form"
    );
    let (status, body) = on_page.call(Method::POST, "/refresh", None).await;
    assert_refresh_refused(status, &body);

    // The API client logs out with its expired token and its refresh token: the series ends.
    let (status, body) = api
        .call_with(
            Method::POST,
            "/logout",
            Some(json!({"refresh_token": api_refresh})),
            &[("authorization", &format!("Bearer {api_token}"))],
        )
        .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"message": "Goodbye!"}))
    );
    let (status, body) = api
        .call(
            Method::POST,
            "/refresh",
            Some(json!({"refresh_token": api_refresh})),
        )
        .await;
    assert_refresh_refused(status, &body);
}

on_both_stores!(
    memory_store_logs_out_after_expiry,
    postgres_store_logs_out_after_expiry,
    logout_after_expiry_contract,
    &[("SESSION_TTL_SECS", "1")]
);

/// `/health` asks the database at most once per interval, failures included: while the
/// sessions table is away it answers 500, and it does not ask again until the interval ends
/// (an hour here), so a flood of health checks cannot pile up on a failing database.
#[tokio::test]
async fn postgres_health_counts_once_per_interval_even_when_the_store_fails() {
    let url = schema_url().await;
    let server = Server::start_with(Some(&url), ABUSE_ENV).await;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute("ALTER TABLE sessions RENAME TO sessions_away")
        .await
        .unwrap();
    let health = || async { anonymous(&server).call(Method::GET, "/health", None).await };
    let (status, body) = health().await;
    client
        .batch_execute("ALTER TABLE sessions_away RENAME TO sessions")
        .await
        .unwrap();
    assert_eq!(
        (status, body["detail"].as_str()),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Some("Session store unavailable")
        )
    );
    // The table is back, but the remembered outcome is served without a query.
    assert_eq!(health().await.0, StatusCode::INTERNAL_SERVER_ERROR);
    server.stop().await;
}

const RECENT_AUTH_REQUIRED: &str = "Recent authentication required";

fn assert_recent_auth_required(status: StatusCode, body: &Value, label: &str) {
    assert_eq!(status, StatusCode::FORBIDDEN, "{label}: {body}");
    assert_eq!(
        body,
        &json!({"detail": RECENT_AUTH_REQUIRED, "reauthenticate": "/reauthenticate"}),
        "{label}"
    );
}

impl Browser {
    /// A remembered login, then a refresh by cookie: the session this browser now holds was
    /// made by the refresh token.
    async fn refreshed_login(&self, username: &str) -> Value {
        let (status, body) = self
            .call(
                Method::POST,
                "/login",
                Some(
                    json!({"username": username, "password": format!("{username}-pass"),
                            "remember": true}),
                ),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = self.call(Method::POST, "/refresh", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    async fn reauthenticate(&self, password: &str) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            "/reauthenticate",
            Some(json!({"password": password})),
        )
        .await
    }

    async fn session_ids(&self) -> Vec<String> {
        let (status, sessions) = self.call(Method::GET, "/sessions", None).await;
        assert_eq!(status, StatusCode::OK, "{sessions}");
        let mut ids: Vec<String> = sessions
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    }

    async fn page(&self) -> String {
        let response = self
            .http
            .get(format!("{}/account/sessions", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.unwrap()
    }

    /// Posts one of the sessions page's forms with its CSRF token.
    async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> StatusCode {
        self.http
            .post(format!("{}{path}", self.base))
            .header("origin", &self.base)
            .form(fields)
            .send()
            .await
            .unwrap()
            .status()
    }
}

fn csrf_of(page: &str) -> String {
    let start = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    page[start..start + page[start..].find('"').unwrap()].to_owned()
}

/// Sudo mode with the default window: a fresh login acts at once; a session made by a
/// remember-me refresh must re-authenticate first, on the same session; a wrong password
/// changes nothing.
async fn sudo_contract(server: &Server) {
    // A fresh login may sign out another device at once.
    let fresh = Browser::new(server);
    fresh.login("builder").await;
    let doomed = Browser::new(server);
    let doomed_id = doomed.login("builder").await["session_id"].clone();
    let path = format!("/sessions/{}", doomed_id.as_str().unwrap());
    assert_eq!(
        fresh.call(Method::DELETE, &path, None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        doomed.call(Method::GET, "/me", None).await.0,
        StatusCode::UNAUTHORIZED
    );

    // A device whose session came from its refresh token, seconds after the login.
    let device = Browser::new(server);
    let refreshed = device.refreshed_login("builder").await;
    let (status, me) = device.call(Method::GET, "/me", None).await;
    assert_eq!(
        (status, &me["session_id"]),
        (StatusCode::OK, &refreshed["session_id"])
    );
    let fresh_id = fresh.call(Method::GET, "/me", None).await.1["session_id"].clone();
    let other_path = format!("/sessions/{}", fresh_id.as_str().unwrap());
    let (status, body) = device.call(Method::DELETE, "/sessions", None).await;
    assert_recent_auth_required(status, &body, "DELETE /sessions");
    let (status, body) = device.call(Method::DELETE, &other_path, None).await;
    assert_recent_auth_required(status, &body, "DELETE /sessions/{other}");
    // Even an id that is no session of anyone's: a stale session learns nothing.
    let (status, body) = device
        .call(Method::DELETE, "/sessions/not-a-uuid", None)
        .await;
    assert_recent_auth_required(status, &body, "DELETE /sessions/not-a-uuid");

    // Wrong passwords (another user's, or nothing like one) change nothing.
    let before = device.session_ids().await;
    for wrong in ["player-pass", "wrong", ""] {
        let (status, body) = device.reauthenticate(wrong).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong:?}: {body}");
        assert_eq!(body["detail"], "Invalid username or password");
    }
    let (status, body) = device.call(Method::DELETE, "/sessions", None).await;
    assert_recent_auth_required(status, &body, "after wrong passwords");
    assert_eq!(device.session_ids().await, before);
    assert_eq!(fresh.call(Method::GET, "/me", None).await.0, StatusCode::OK);
    // Without a session there is nobody to re-authenticate.
    let (status, body) = anonymous(server).reauthenticate("builder-pass").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["detail"], "Invalid or expired session");

    // The right password: the same session (no new cookie, same id), now allowed to act.
    let raw = device
        .http
        .post(format!("{}/reauthenticate", server.base))
        .header("x-requested-with", "contract-test")
        .json(&json!({"password": "builder-pass"}))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::OK);
    assert!(set_cookies(&raw).is_empty());
    assert_eq!(
        raw.json::<Value>().await.unwrap(),
        json!({"reauthenticated": true})
    );
    let (status, me) = device.call(Method::GET, "/me", None).await;
    assert_eq!(
        (status, &me["session_id"]),
        (StatusCode::OK, &refreshed["session_id"])
    );
    assert_eq!(
        device.call(Method::DELETE, &other_path, None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        fresh.call(Method::GET, "/me", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Its remember-me series survived the re-authentication.
    let (status, body) = device.call(Method::POST, "/refresh", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Changing a role: a refreshed superuser must re-authenticate; a fresh one may at once.
    let root = Browser::new(server);
    root.refreshed_login("superuser").await;
    let (status, body) = root
        .call(
            Method::POST,
            "/admin/users/builder/role",
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_recent_auth_required(status, &body, "role change");
    // Without the permission the answer stays the permission's, recent or not.
    let (status, body) = device
        .call(
            Method::POST,
            "/admin/users/builder/role",
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["detail"],
        "Insufficient permissions. Required: change_roles"
    );
    assert_eq!(
        root.reauthenticate("superuser-pass").await.0,
        StatusCode::OK
    );
    let (status, body) = root
        .call(
            Method::POST,
            "/admin/users/builder/role",
            Some(json!({"role": "worldbuilder"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// The sessions page asks a session that is not recent for the password before it signs other
/// devices out, and a missing or wrong password changes nothing.
async fn sessions_page_sudo_contract(server: &Server) {
    let other = Browser::new(server);
    other.login("admin").await;
    let fresh = Browser::new(server);
    fresh.login("admin").await;
    let page = fresh.page().await;
    assert!(
        !page.contains("name=\"password\""),
        "a fresh session is not asked"
    );

    let device = Browser::new(server);
    device.refreshed_login("admin").await;
    let page = device.page().await;
    assert!(page.contains("id=\"confirm-note\""));
    assert!(page.contains("type=\"password\" name=\"password\""));
    let csrf = csrf_of(&page);
    let before = device.session_ids().await;
    assert!(before.len() >= 3, "{before:?}");
    let revoke_others = "/account/sessions/revoke-others";
    assert_eq!(
        device.post_form(revoke_others, &[("csrf", &csrf)]).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        device
            .post_form(revoke_others, &[("csrf", &csrf), ("password", "wrong")])
            .await,
        StatusCode::UNAUTHORIZED
    );
    // Revoking one other device asks the same.
    let fresh_id = fresh.call(Method::GET, "/me", None).await.1["session_id"].clone();
    let revoke_one = format!("/account/sessions/{}/revoke", fresh_id.as_str().unwrap());
    assert_eq!(
        device.post_form(&revoke_one, &[("csrf", &csrf)]).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        device
            .post_form(&revoke_one, &[("csrf", &csrf), ("password", "wrong")])
            .await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(device.session_ids().await, before);
    // The right password re-authenticates and acts in one post (then shows the page again).
    assert_eq!(
        device
            .post_form(
                revoke_others,
                &[("csrf", &csrf), ("password", "admin-pass")]
            )
            .await,
        StatusCode::OK
    );
    assert_eq!(device.session_ids().await.len(), 1);
    assert_eq!(
        other.call(Method::GET, "/me", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert!(!device.page().await.contains("name=\"password\""));
}

/// After the window (one second here), the sudo routes answer 403 until the password is
/// entered again; a wrong one changes nothing.
async fn stale_login_contract(server: &Server) {
    let player = Browser::new(server);
    player.login("player").await;
    let second = Browser::new(server);
    let second_id = second.login("player").await["session_id"].clone();
    let root = Browser::new(server);
    root.login("superuser").await;
    // Let the window pass.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    let (status, body) = player.call(Method::DELETE, "/sessions", None).await;
    assert_recent_auth_required(status, &body, "DELETE /sessions");
    let path = format!("/sessions/{}", second_id.as_str().unwrap());
    let (status, body) = player.call(Method::DELETE, &path, None).await;
    assert_recent_auth_required(status, &body, "DELETE /sessions/{other}");
    let (status, body) = root
        .call(
            Method::POST,
            "/admin/users/player/role",
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_recent_auth_required(status, &body, "role change");
    // The admin kick of another session is a revocation too.
    let (status, body) = root
        .call(
            Method::POST,
            "/admin/sessions/kick",
            Some(json!({"session_id": second_id})),
        )
        .await;
    assert_recent_auth_required(status, &body, "kick");
    let (status, body) = root
        .call(
            Method::POST,
            "/admin/users/player/active",
            Some(json!({"active": false})),
        )
        .await;
    assert_recent_auth_required(status, &body, "deactivation");
    // Everything else still works.
    assert_eq!(
        player.call(Method::GET, "/me", None).await.0,
        StatusCode::OK
    );

    let (status, body) = player.reauthenticate("wrong").await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (
            StatusCode::UNAUTHORIZED,
            Some("Invalid username or password")
        )
    );
    let (status, body) = player.call(Method::DELETE, "/sessions", None).await;
    assert_recent_auth_required(status, &body, "after a wrong password");
    assert_eq!(
        second.call(Method::GET, "/me", None).await.0,
        StatusCode::OK
    );
    let (status, body) = root.call(Method::GET, "/me", None).await;
    assert_eq!(
        (status, body["role"].as_str()),
        (StatusCode::OK, Some("superuser"))
    );
    // Re-authentication is throttled like login (10 attempts per username and minute by
    // default): guessing runs into 429, and then even the right password changes nothing.
    let mut throttled = None;
    for _ in 0..12 {
        let response = player
            .http
            .post(format!("{}/reauthenticate", server.base))
            .header("x-requested-with", "contract-test")
            .json(&json!({"password": "guess"}))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            throttled = Some(response);
            break;
        }
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let throttled = throttled.expect("re-authentication was never throttled");
    assert!(throttled.headers().contains_key("retry-after"));
    let body: Value = throttled.json().await.unwrap();
    assert_eq!(body["detail"], "Too many login attempts. Try again later.");
    let (status, _) = player.reauthenticate("player-pass").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let (status, body) = player.call(Method::DELETE, "/sessions", None).await;
    assert_recent_auth_required(status, &body, "while throttled");
    assert_eq!(
        second.call(Method::GET, "/me", None).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn memory_store_serves_sudo_mode() {
    let server = Server::start(None).await;
    sudo_contract(&server).await;
    sessions_page_sudo_contract(&server).await;
    server.stop().await;
    let server = Server::start_with(None, &[("SESSION_RECENT_AUTH_SECS", "1")]).await;
    stale_login_contract(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn postgres_store_serves_sudo_mode() {
    let url = schema_url().await;
    let server = Server::start(Some(&url)).await;
    sudo_contract(&server).await;
    sessions_page_sudo_contract(&server).await;
    server.stop().await;
    let server = Server::start_with(Some(&url), &[("SESSION_RECENT_AUTH_SECS", "1")]).await;
    stale_login_contract(&server).await;
    server.stop().await;
}

/// The example's own queries (the user at login, the characters) are bounded like the session
/// store's: with `users` or `characters` locked as an `ALTER TABLE` would hold them, a login
/// and `GET /characters` answer `500 Session store unavailable` instead of hanging (and holding
/// a pooled connection) until the lock goes; once it goes, the same requests succeed.
#[tokio::test]
async fn postgres_locked_application_tables_are_a_bounded_500() {
    let url = schema_url().await;
    let server = Server::start_with(Some(&url), &[("STATEMENT_TIMEOUT_MS", "300")]).await;
    let token = anonymous(&server).login("player").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (mut locker, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    // Far beyond the bound, so only a request that would otherwise hang runs into it.
    let patient = Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap();
    let login = || {
        patient
            .post(format!("{}/login", server.base))
            .header("x-requested-with", "test")
            .json(&json!({"username": "player", "password": "player-pass"}))
            .send()
    };
    let characters = || {
        patient
            .get(format!("{}/characters", server.base))
            .bearer_auth(&token)
            .send()
    };
    let unavailable = |response: reqwest::Response, label: &'static str| async move {
        assert_eq!(
            response.status(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "{label}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["detail"], "Session store unavailable", "{label}");
    };

    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    unavailable(login().await.expect("a bounded answer"), "login").await;
    lock.rollback().await.unwrap();
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE characters IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    unavailable(characters().await.expect("a bounded answer"), "characters").await;
    lock.rollback().await.unwrap();

    assert_eq!(login().await.unwrap().status(), StatusCode::OK);
    assert_eq!(characters().await.unwrap().status(), StatusCode::OK);
    server.stop().await;
}

/// One IPv6 host holds a whole /64 and can send each login from another address in it: the
/// address limit counts the /64, so rotating addresses does not reset it. An IPv4-mapped
/// address (a dual-stack listener) counts as its IPv4 address, so IPv4 clients do not share
/// one budget.
#[test]
fn the_login_throttle_counts_an_ipv6_host_per_64_and_a_mapped_ipv4_address_as_itself() {
    use std::net::IpAddr;
    let throttle = login_guard::LoginThrottle::new(2, 0, 0);
    let ip = |text: &str| Some(text.parse::<IpAddr>().unwrap());
    assert!(throttle.check(ip("2001:db8:1:2::1"), "a").is_ok());
    assert!(throttle.check(ip("2001:db8:1:2::2"), "b").is_ok());
    let refused = throttle.check(ip("2001:db8:1:2:ffff::3"), "c");
    assert!(
        refused.is_err(),
        "a third address of the same /64 is throttled"
    );
    assert!(
        throttle.check(ip("2001:db8:1:3::1"), "d").is_ok(),
        "another /64 has its own budget"
    );
    for n in 1..=2 {
        assert!(throttle.check(ip("::ffff:192.0.2.1"), "e").is_ok(), "{n}");
    }
    assert!(
        throttle.check(ip("192.0.2.1"), "f").is_err(),
        "mapped and plain are one client"
    );
    assert!(
        throttle.check(ip("::ffff:192.0.2.2"), "g").is_ok(),
        "another IPv4 client"
    );
}

/// A sibling subdomain can set cookies for the parent domain. Over HTTPS
/// (`SESSION_COOKIE_SECURE=true`) the login form's double-submit cookie and the session cookie
/// are `__Host-` cookies, which it cannot set: a `login_csrf` or `id` cookie it planted is
/// ignored, instead of making the form's cookie ambiguous (every post refused) or standing in
/// for the session.
#[tokio::test]
async fn over_https_the_cookies_are_host_only_so_a_sibling_cannot_plant_or_shadow_them() {
    let server = Server::start_with(None, &[("SESSION_COOKIE_SECURE", "true")]).await;
    let page = Client::new()
        .get(format!("{}/account/login", server.base))
        .send()
        .await
        .unwrap();
    let cookie = set_cookies(&page)
        .into_iter()
        .find(|c| c.starts_with("__Host-login_csrf="))
        .expect("a __Host- double-submit cookie");
    assert!(
        cookie.ends_with("; HttpOnly; SameSite=Strict; Path=/; Secure"),
        "{cookie}"
    );
    let token = &cookie["__Host-login_csrf=".len()..cookie.find(';').unwrap()];
    // What a sibling planted: its own double-submit value and a session of its own.
    let planted = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let cookies = format!("login_csrf={planted}; __Host-login_csrf={token}; id={planted}");
    let response = post_login_form(
        &server,
        Some(&cookies),
        token,
        &[
            ("origin", server.base.as_str()),
            ("sec-fetch-site", "same-origin"),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let session = set_cookies(&response)
        .into_iter()
        .find(|c| c.starts_with("__Host-id="))
        .expect("a __Host- session cookie");
    assert!(
        session.contains("; Secure") && session.contains("; Path=/"),
        "{session}"
    );
    server.stop().await;
}
