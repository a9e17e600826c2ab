//! Security properties on a real PostgreSQL store:
//! - no token ever appears in tracing output, `Debug` output or error messages, through login,
//!   validation, rotation (a new login replacing the cookie session), rejection and logout;
//! - audit events for login, logout, revoke, expiry and rejected tokens, with a per-address
//!   count of rejected tokens;
//! - login always issues a fresh token and never adopts a client-supplied one;
//! - revoke-all and deactivation end every session of the user at once;
//! - the opt-in CSRF check for cookie-authenticated unsafe requests.

use crate::common;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::Backend;
use common::app::{bearer, get_with, routes, send};
use tower_session_auth::{
    CsrfConfig, LoginOptions, SessionConfig, SessionLayer, SessionManager, store::StoreError,
    test_util::ManualClock, token::SessionToken,
};

/// Collects everything a tracing subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

/// The test client's address, as a server would put it into the request's extensions.
const CLIENT: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 9)), 5555);

fn app_for(manager: &SessionManager) -> axum::Router {
    routes().layer(
        SessionLayer::new(manager.clone())
            .client_ip(|extensions, _| extensions.get::<SocketAddr>().map(|addr| addr.ip())),
    )
}

fn from_client(mut request: Request<Body>) -> Request<Body> {
    request.extensions_mut().insert(CLIENT);
    request
}

fn post(path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::post(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    from_client(builder.body(Body::empty()).unwrap())
}

// The tracing subscriber is per thread here, so everything runs on the test's one thread.
#[tokio::test(flavor = "current_thread")]
async fn tokens_never_reach_logs_debug_output_or_errors() {
    let backend = Backend::pg().await;
    let config = SessionConfig::default().idle_timeout(Some(Duration::from_secs(600)));
    let clock = Arc::new(ManualClock::default());
    let manager = backend.manager(config, clock.clone());
    let app = app_for(&manager);
    let (captured, _guard) = capture();
    let mut tokens = Vec::new();

    // Login, validation by cookie and header, rotation by a second login, logout.
    let reply = send(&app, post("/login/1", &[("user-agent", "test")])).await;
    let first = reply.body["token"].as_str().unwrap().to_owned();
    let cookie = format!("id={first}");
    assert_eq!(
        send(&app, from_client(get_with("/me", ("cookie", &cookie))))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, from_client(bearer("/game", &first)))
            .await
            .status,
        StatusCode::CONFLICT
    );
    let reply = send(&app, post("/login/1", &[("cookie", &cookie)])).await;
    let second = reply.body["token"].as_str().unwrap().to_owned();
    assert_eq!(
        send(&app, from_client(bearer("/me", &first))).await.status,
        StatusCode::UNAUTHORIZED
    );
    let reply = send(
        &app,
        post("/logout", &[("cookie", &format!("id={second}"))]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    tokens.extend([first, second]);

    // Rejections: unknown, malformed, expired.
    let unknown = SessionToken::generate();
    send(&app, from_client(bearer("/me", unknown.expose()))).await;
    let malformed = format!("{}!", &unknown.expose()[..42]);
    send(&app, from_client(bearer("/me", &malformed))).await;
    let login = manager.login(2, LoginOptions::new()).await.unwrap();
    clock.advance(Duration::from_secs(601));
    let reply = send(&app, from_client(bearer("/me", login.token.expose()))).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    // Debug output of everything that holds or held a token.
    let debug = format!(
        "{login:?} {:?} {:?} {:?}",
        login.token,
        login.token.hash(),
        tower_session_auth::Session::new(
            &manager,
            &http::Method::GET,
            &http::Uri::from_static("/"),
            &{
                let mut headers = http::HeaderMap::new();
                headers.insert(
                    "authorization",
                    format!("Bearer {}", unknown.expose()).parse().unwrap(),
                );
                headers
            },
            None,
        ),
    );
    let error = StoreError::backend("boom").to_string();
    tokens.extend([
        unknown.expose().to_owned(),
        malformed,
        login.token.expose().to_owned(),
    ]);

    let logs = captured.text();
    for event in [
        "\"login\"",
        "\"logout\"",
        "\"session_expired\"",
        "\"token_rejected\"",
    ] {
        assert!(logs.contains(event), "no {event} audit event in:\n{logs}");
    }
    for token in &tokens {
        assert!(
            !logs.contains(token.as_str()),
            "a token leaked into the logs:\n{logs}"
        );
        assert!(
            !debug.contains(token.as_str()),
            "a token leaked into Debug: {debug}"
        );
        assert!(!error.contains(token.as_str()));
    }
    assert!(debug.contains("<redacted>"));
}

#[tokio::test(flavor = "current_thread")]
async fn rejected_tokens_are_counted_per_client_address() {
    let backend = Backend::pg().await;
    let manager = backend.manager(SessionConfig::default(), Arc::new(ManualClock::default()));
    let app = app_for(&manager);
    let (captured, _guard) = capture();
    for token in ["short", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA!"] {
        let reply = send(&app, from_client(bearer("/me", token))).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let unknown = SessionToken::generate();
    send(&app, from_client(bearer("/me", unknown.expose()))).await;
    // A request without a token is not a rejected token.
    send(
        &app,
        from_client(Request::get("/me").body(Body::empty()).unwrap()),
    )
    .await;
    assert_eq!(manager.rejected_tokens_by_ip(), vec![(CLIENT.ip(), 3)]);
    let logs = captured.text();
    assert!(logs.contains("ip=198.51.100.9"), "{logs}");
    assert!(logs.contains("rejected_from_ip=3"), "{logs}");
    assert!(logs.contains("reason=\"unknown\""), "{logs}");
    assert!(logs.contains("reason=\"malformed\""), "{logs}");
}

#[tokio::test(flavor = "current_thread")]
async fn revocations_are_audited() {
    let backend = Backend::pg().await;
    let manager = backend.manager(SessionConfig::default(), Arc::new(ManualClock::default()));
    let (captured, _guard) = capture();
    let login = manager.login(1, LoginOptions::new()).await.unwrap();
    let other = manager.login(1, LoginOptions::new()).await.unwrap();
    assert!(manager.reauthenticate(other.session.id).await.unwrap());
    assert!(manager.remove(login.session.id).await.unwrap());
    assert_eq!(manager.revoke_all(1).await.unwrap(), 1);
    let logs = captured.text();
    assert!(
        logs.contains(&format!(
            "event=\"reauthenticate\" session_id={}",
            other.session.id
        )),
        "{logs}"
    );
    assert!(!logs.contains(other.token.expose()), "{logs}");
    assert!(
        logs.contains(&format!("event=\"revoke\" session_id={}", login.session.id)),
        "{logs}"
    );
    assert!(
        logs.contains("event=\"revoke_all\" user_id=1 count=1"),
        "{logs}"
    );
}

#[tokio::test]
async fn login_never_adopts_a_client_supplied_token() {
    let backend = Backend::pg().await;
    let manager = backend.manager(SessionConfig::default(), Arc::new(ManualClock::default()));
    let app = app_for(&manager);
    let planted = SessionToken::generate();
    let reply = send(
        &app,
        post(
            "/login/1",
            &[("cookie", &format!("id={}", planted.expose()))],
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let issued = reply.body["token"].as_str().unwrap();
    assert_ne!(issued, planted.expose());
    assert!(reply.set_cookies()[0].starts_with(&format!("id={issued};")));
    assert_eq!(
        send(&app, bearer("/me", planted.expose())).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&app, bearer("/me", issued)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn revoke_all_and_deactivation_end_every_session_at_once() {
    let backend = Backend::pg().await;
    let manager = backend.manager(SessionConfig::default(), Arc::new(ManualClock::default()));
    let app = app_for(&manager);
    let mut tokens = Vec::new();
    for _ in 0..3 {
        tokens.push(manager.login(1, LoginOptions::new()).await.unwrap().token);
    }
    for token in &tokens {
        assert_eq!(
            send(&app, bearer("/me", token.expose())).await.status,
            StatusCode::OK
        );
    }
    backend.set_active(1, false).await;
    for token in &tokens {
        let reply = send(&app, bearer("/me", token.expose())).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.detail(), "Invalid session user");
    }
    backend.set_active(1, true).await;
    assert_eq!(manager.revoke_all(1).await.unwrap(), 3);
    for token in &tokens {
        let reply = send(&app, bearer("/me", token.expose())).await;
        assert_eq!(reply.detail(), "Invalid or expired session");
    }
}

#[tokio::test]
async fn opt_in_csrf_check_guards_cookie_authenticated_unsafe_requests() {
    let backend = Backend::pg().await;
    let config = SessionConfig::default().csrf(Some(CsrfConfig::default()));
    let manager = backend.manager(config, Arc::new(ManualClock::default()));
    let app = app_for(&manager);
    let token = manager.login(1, LoginOptions::new()).await.unwrap().token;
    let cookie = format!("id={}", token.expose());
    let host = ("host", "game.example");

    for headers in [
        vec![("cookie", cookie.as_str()), host],
        vec![
            ("cookie", cookie.as_str()),
            host,
            ("origin", "https://evil.example"),
        ],
        vec![("cookie", cookie.as_str()), host, ("origin", "null")],
    ] {
        let reply = send(&app, post("/logout", &headers)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{headers:?}");
        assert_eq!(reply.detail(), "Cross-site request rejected");
        assert!(reply.set_cookies().is_empty());
    }
    // Safe methods by cookie, and header-authenticated requests, are not subject to it.
    let reply = send(&app, from_client(get_with("/me", ("cookie", &cookie)))).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the rejected requests changed nothing"
    );
    // Same-origin Origin, or the custom header, pass.
    let same_origin = [
        ("cookie", cookie.as_str()),
        host,
        ("origin", "https://game.example"),
    ];
    let reply = send(&app, post("/logout", &same_origin)).await;
    assert_eq!(reply.status, StatusCode::OK);

    let token = manager.login(1, LoginOptions::new()).await.unwrap().token;
    let cookie = format!("id={}", token.expose());
    let scripted = [("cookie", cookie.as_str()), ("x-requested-with", "fetch")];
    assert_eq!(
        send(&app, post("/logout", &scripted)).await.status,
        StatusCode::OK
    );

    let token = manager.login(1, LoginOptions::new()).await.unwrap().token;
    let by_header = [("authorization", format!("Bearer {}", token.expose()))];
    let by_header: Vec<(&str, &str)> = by_header.iter().map(|(n, v)| (*n, v.as_str())).collect();
    assert_eq!(
        send(&app, post("/logout", &by_header)).await.status,
        StatusCode::OK
    );

    // An explicit allow-list replaces the same-host rule.
    let config = SessionConfig::default().csrf(Some(
        CsrfConfig::default()
            .header(None)
            .allowed_origin("https://app.example")
            .unwrap(),
    ));
    let manager = backend.manager(config, Arc::new(ManualClock::default()));
    let strict = app_for(&manager);
    let token = manager.login(1, LoginOptions::new()).await.unwrap().token;
    let cookie = format!("id={}", token.expose());
    let scripted = [("cookie", cookie.as_str()), ("x-requested-with", "fetch")];
    assert_eq!(
        send(&strict, post("/logout", &scripted)).await.status,
        StatusCode::FORBIDDEN
    );
    let allowed = [
        ("cookie", cookie.as_str()),
        ("origin", "https://app.example"),
    ];
    assert_eq!(
        send(&strict, post("/logout", &allowed)).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "current_thread")]
async fn audit_events_quote_client_supplied_text() {
    let backend = Backend::pg().await;
    let manager = backend.manager(SessionConfig::default(), Arc::new(ManualClock::default()));
    let app = app_for(&manager);
    let (captured, _guard) = capture();
    let forged = "x event=\"logout\" session_id=f";
    let reply = send(
        &app,
        post(
            "/login/1",
            &[
                ("x-client-type", forged),
                ("user-agent", "ua\" event=\"revoke_all"),
            ],
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let logs = captured.text();
    let line = logs
        .lines()
        .find(|line| line.contains("event=\"login\""))
        .unwrap_or_else(|| panic!("no login event: {logs}"));
    // The client type is one quoted, escaped value: it cannot add or replace a field.
    let quoted = r#" client_type="x event=\"logout\" session_id=f""#;
    assert!(line.contains(quoted), "{line}");
    let others = line.replace(quoted, "");
    assert_eq!(others.matches(" event=").count(), 1, "{line}");
    assert_eq!(others.matches(" session_id=").count(), 1, "{line}");
}

#[test]
fn the_rejected_token_counter_keeps_the_largest_counts() {
    use std::net::{Ipv4Addr, Ipv6Addr};

    let manager = SessionManager::new(
        tower_session_auth::MemoryStore::new(),
        SessionConfig::default(),
    );
    let guesser = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
    for _ in 0..5 {
        manager.record_rejected_token(Some(guesser), "unknown");
    }
    // One IPv6 host rotating through its /64 is one address.
    let network: u128 = 0x2001_0db8_0000_0001 << 64;
    for host in 1..=3u128 {
        let ip = IpAddr::V6(Ipv6Addr::from(network | host));
        manager.record_rejected_token(Some(ip), "malformed");
    }
    let v6 = IpAddr::V6(Ipv6Addr::from(network));
    assert_eq!(manager.rejected_tokens_by_ip(), vec![(guesser, 5), (v6, 3)]);
    // A flood of new addresses, one rejection each, does not push the guessers out.
    for n in 0..20_000u32 {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n));
        manager.record_rejected_token(Some(ip), "unknown");
    }
    let counts = manager.rejected_tokens_by_ip();
    assert!(counts.len() <= 10_000, "{}", counts.len());
    assert_eq!(counts[..2], [(guesser, 5), (v6, 3)]);
}

/// Routes that drive the `Session` handle, answering its rejections as they are.
fn handle_app(manager: &SessionManager) -> axum::Router {
    use axum::Json;
    use axum::routing::post;
    use tower_session_auth::{AuthUser, Refresh, Session, SessionId};

    axum::Router::new()
        .route(
            "/login",
            post(|session: Session| async move {
                let login = session.login(1, LoginOptions::new().remember(true)).await?;
                Ok::<_, tower_session_auth::AuthRejection>(Json(login.session.id.to_string()))
            }),
        )
        .route(
            "/logout",
            post(|session: Session| async move { session.logout().await.map(Json) }),
        )
        .route(
            "/refresh",
            post(|session: Session| async move {
                let outcome = session.refresh(None).await?;
                Ok::<_, tower_session_auth::AuthRejection>(Json(matches!(
                    outcome,
                    Refresh::Refreshed(_)
                )))
            }),
        )
        .route("/me", post(|user: AuthUser| async move { user.username }))
        .route(
            "/kick/{id}",
            post(
                |session: Session, axum::extract::Path(id): axum::extract::Path<SessionId>| async move {
                    session.kick(id).await.map(Json)
                },
            ),
        )
        .layer(SessionLayer::new(manager.clone()))
}

fn request(uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::post(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn csrf_origin_wins_fetch_metadata_counts_http2_uses_the_authority_and_the_handle_is_checked()
{
    let backend = Backend::pg().await;
    let config = SessionConfig::default().csrf(Some(CsrfConfig::default()));
    let manager = backend.manager(config, Arc::new(ManualClock::default()));
    let app = handle_app(&manager);
    let login = manager
        .login(1, LoginOptions::new().remember(true))
        .await
        .unwrap();
    let cookie = format!("id={}", login.token.expose());
    let cookie = cookie.as_str();
    let host = ("host", "game.example");
    let rejected = |reply: &common::app::Reply, label: &str| {
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{label}: {:?}",
            reply.body
        );
        assert_eq!(reply.detail(), "Cross-site request rejected", "{label}");
        assert!(reply.set_cookies().is_empty(), "{label}");
    };

    // An explicit cross-site Origin wins over the custom header.
    let reply = send(
        &app,
        request(
            "/me",
            &[
                ("cookie", cookie),
                host,
                ("origin", "https://evil.example"),
                ("x-requested-with", "x"),
            ],
        ),
    )
    .await;
    rejected(&reply, "cross-site origin with the custom header");
    // Fetch metadata: cross-site and same-site are rejected (even with the custom header),
    // same-origin and none pass.
    for site in ["cross-site", "same-site"] {
        let headers = [
            ("cookie", cookie),
            ("sec-fetch-site", site),
            ("x-requested-with", "x"),
        ];
        rejected(&send(&app, request("/me", &headers)).await, site);
    }
    for site in ["same-origin", "none"] {
        let reply = send(
            &app,
            request("/me", &[("cookie", cookie), ("sec-fetch-site", site)]),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{site}: {:?}", reply.body);
    }
    // HTTP/2: no Host, the authority is in the URI.
    let reply = send(
        &app,
        request(
            "https://game.example/me",
            &[("cookie", cookie), ("origin", "https://game.example")],
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    for origin in ["https://evil.example", "http://game.example"] {
        let reply = send(
            &app,
            request(
                "https://game.example/me",
                &[("cookie", cookie), ("origin", origin)],
            ),
        )
        .await;
        rejected(&reply, origin);
    }

    // The handle: a cross-site login, logout or refresh changes nothing.
    let evil = ("origin", "https://evil.example");
    let refresh = format!("refresh={}", login.refresh.as_ref().unwrap().expose());
    rejected(&send(&app, request("/login", &[host, evil])).await, "login");
    rejected(
        &send(&app, request("/logout", &[("cookie", cookie), host, evil])).await,
        "logout",
    );
    rejected(
        &send(
            &app,
            request("/logout", &[("cookie", &refresh), host, evil]),
        )
        .await,
        "logout by refresh cookie",
    );
    rejected(
        &send(
            &app,
            request("/refresh", &[("cookie", &refresh), host, evil]),
        )
        .await,
        "refresh",
    );
    let kick = format!("/kick/{}", login.session.id);
    rejected(
        &send(&app, request(&kick, &[("cookie", cookie), host, evil])).await,
        "kick",
    );
    assert_eq!(manager.list_for_user(1).await.unwrap().len(), 1);
    assert!(manager.lookup(&login.token).await.is_some());
    // The same requests from the site itself go through.
    let same = ("origin", "https://game.example");
    let reply = send(
        &app,
        request("/refresh", &[("cookie", &refresh), host, same]),
    )
    .await;
    assert_eq!(
        reply.body, true,
        "the rejected refresh left the series alone"
    );
    let reply = send(&app, request("/login", &[host, same])).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.set_cookies().len(), 2);
    let reply = send(&app, request("/logout", &[("cookie", cookie), host, same])).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert!(manager.lookup(&login.token).await.is_none());
}

/// Behind a TLS-terminating proxy the request's scheme is unknown, so `Origin:
/// http://game.example` names the host of `https://game.example`: a page on the plain-HTTP
/// origin (a network attacker's) passed. The browser's `Sec-Fetch-Site` says it is not the
/// same origin, and that now counts; an explicitly allowed origin still passes as `same-site`.
#[tokio::test]
async fn csrf_an_origin_of_another_scheme_is_refused_when_fetch_metadata_says_so() {
    let backend = Backend::pg().await;
    let config = SessionConfig::default().csrf(Some(CsrfConfig::default()));
    let manager = backend.manager(config, Arc::new(ManualClock::default()));
    let app = handle_app(&manager);
    let login = manager
        .login(1, LoginOptions::new().remember(true))
        .await
        .unwrap();
    let cookie = format!("id={}", login.token.expose());
    let refresh = format!("refresh={}", login.refresh.as_ref().unwrap().expose());
    let host = ("host", "game.example");
    let http_origin = ("origin", "http://game.example");
    for site in ["same-site", "cross-site"] {
        let fetch = ("sec-fetch-site", site);
        for (uri, cookie) in [
            ("/me", cookie.as_str()),
            ("/logout", cookie.as_str()),
            ("/refresh", refresh.as_str()),
        ] {
            let reply = send(
                &app,
                request(uri, &[("cookie", cookie), host, http_origin, fetch]),
            )
            .await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{uri} {site}");
            assert_eq!(
                reply.detail(),
                "Cross-site request rejected",
                "{uri} {site}"
            );
            assert!(reply.set_cookies().is_empty(), "{uri} {site}");
        }
        let reply = send(&app, request("/login", &[host, http_origin, fetch])).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "login {site}");
    }
    assert_eq!(manager.list_for_user(1).await.unwrap().len(), 1);
    assert!(manager.lookup(&login.token).await.is_some());

    // The site itself, with or without fetch metadata, still passes.
    for headers in [
        vec![("cookie", cookie.as_str()), host, http_origin],
        vec![
            ("cookie", cookie.as_str()),
            host,
            ("origin", "https://game.example"),
            ("sec-fetch-site", "same-origin"),
        ],
    ] {
        let reply = send(&app, request("/me", &headers)).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{headers:?}: {:?}",
            reply.body
        );
    }
    // An origin the application lists is allowed although the browser calls it same-site.
    let listed = backend.manager(
        SessionConfig::default().csrf(Some(
            CsrfConfig::default()
                .allowed_origin("https://app.game.example")
                .unwrap(),
        )),
        Arc::new(ManualClock::default()),
    );
    let reply = send(
        &handle_app(&listed),
        request(
            "/me",
            &[
                ("cookie", cookie.as_str()),
                host,
                ("origin", "https://app.game.example"),
                ("sec-fetch-site", "same-site"),
            ],
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
}

/// A text user id (an application may key users by a name they chose) reaches the audit
/// events as one quoted, escaped value: it cannot add a field or a line.
#[tokio::test(flavor = "current_thread")]
async fn audit_events_quote_text_user_ids() {
    use tower_session_auth::store::UserIdType;
    use tower_session_auth::test_util::conformance::Fixture;

    let fixture = common::PgFixture::keyed(UserIdType::Text).await;
    let forged = "x\" event=\"logout\"\n2099-01-01T00:00:00Z  INFO audit: event=\"revoke_all\"";
    fixture
        .0
        .execute(
            "INSERT INTO users (id, username, role) VALUES ($1, 'forger', 'player')",
            &[&forged],
        )
        .await;
    let manager = SessionManager::new(fixture.store(), SessionConfig::default());
    let (captured, _guard) = capture();
    manager.login(forged, LoginOptions::new()).await.unwrap();
    manager.revoke_all(forged).await.unwrap();
    let logs = captured.text();
    let quoted =
        r#"user_id="x\" event=\"logout\"\n2099-01-01T00:00:00Z  INFO audit: event=\"revoke_all\"""#;
    for event in ["login", "revoke_all"] {
        let line = logs
            .lines()
            .find(|line| line.contains(&format!(" event=\"{event}\"")))
            .unwrap_or_else(|| panic!("no {event} event: {logs}"));
        assert!(line.contains(quoted), "{line}");
        assert_eq!(
            line.replace(quoted, "").matches(" event=").count(),
            1,
            "{line}"
        );
    }
    assert_eq!(logs.lines().count(), 2, "{logs}");
    // An integer id is still a plain number.
    let (captured, _guard) = capture();
    let integers = SessionManager::new(
        common::PgFixture::keyed(UserIdType::Integer).await.store(),
        SessionConfig::default(),
    );
    integers.revoke_all(1).await.unwrap();
    assert!(
        captured.text().contains(" user_id=1 count=0"),
        "{}",
        captured.text()
    );
}
