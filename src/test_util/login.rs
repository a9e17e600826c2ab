//! A logged-in request in one line, for an application's tests of its router.

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderValue, Request};

use crate::manager::{Login, LoginOptions, SessionManager};
use crate::store::{SessionRecord, StoreError};
use crate::token::{RefreshToken, SessionToken};
use crate::user_id::UserId;

/// Logs `user_id` in through `manager` (a plain login, [`LoginOptions::new`]) and returns the
/// session with the headers that present it: the shortest way to a logged-in request in an
/// application's tests.
///
/// The store must know the user (for [`MemoryStore`](crate::MemoryStore):
/// [`upsert_user`](crate::MemoryStore::upsert_user)); like [`SessionManager::login`], this does
/// not check a password or the account's state, which the extractors read on each request.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use axum::{Router, body::Body, http::Request, http::StatusCode, routing::get};
/// use tower::ServiceExt;
/// use tower_session_auth::permissions::ViewLogs;
/// use tower_session_auth::{AuthUser, RequirePermission, test_util};
/// use tower_session_auth::{MemoryStore, SessionConfig, SessionLayer, SessionManager};
///
/// let store = MemoryStore::new();
/// store.upsert_user(1, "alice", Some("player"), true);
/// let manager = SessionManager::new(store, SessionConfig::default());
/// let app = Router::new()
///     .route("/me", get(|user: AuthUser| async move { user.username }))
///     .route("/logs", get(|_: RequirePermission<ViewLogs>| async { "logs" }))
///     .layer(SessionLayer::new(manager.clone()));
///
/// let alice = test_util::login(&manager, 1).await?;
/// let me = alice.authorize(Request::get("/me").body(Body::empty())?);
/// assert_eq!(app.clone().oneshot(me).await?.status(), StatusCode::OK);
/// let logs = alice.authorize(Request::get("/logs").body(Body::empty())?);
/// assert_eq!(app.oneshot(logs).await?.status(), StatusCode::FORBIDDEN);
/// # Ok(()) }
/// ```
pub async fn login(
    manager: &SessionManager,
    user_id: impl Into<UserId>,
) -> Result<TestLogin, StoreError> {
    TestLogin::with_options(manager, user_id, LoginOptions::new()).await
}

/// A session made for a test ([`login`]), and the headers that present its token: by
/// `Authorization: Bearer` ([`bearer`](Self::bearer), [`authorize`](Self::authorize)) or by
/// the session cookie ([`cookie`](Self::cookie), [`authorize_cookie`](Self::authorize_cookie)).
///
/// Its `Debug` output shows no token, and the header values it makes are marked sensitive.
#[derive(Debug)]
pub struct TestLogin {
    login: Login,
    cookie_name: String,
}

impl TestLogin {
    /// Logs `user_id` in through `manager` as `options` asks (for example
    /// `LoginOptions::new().remember(true)` for a refresh token too).
    pub async fn with_options(
        manager: &SessionManager,
        user_id: impl Into<UserId>,
        options: LoginOptions,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            login: manager.login(user_id, options).await?,
            cookie_name: manager.cookie_name().to_owned(),
        })
    }

    /// The session token.
    pub fn token(&self) -> &SessionToken {
        &self.login.token
    }

    /// The stored session (its id is what revocation takes).
    pub fn session(&self) -> &SessionRecord {
        &self.login.session
    }

    /// The remember-me token, when the login asked for one.
    pub fn refresh_token(&self) -> Option<&RefreshToken> {
        self.login.refresh.as_ref()
    }

    /// The login as [`SessionManager::login`] returned it.
    pub fn into_login(self) -> Login {
        self.login
    }

    /// The `Authorization` header value: `Bearer <token>`.
    pub fn bearer(&self) -> HeaderValue {
        sensitive(format!("Bearer {}", self.login.token.expose()))
    }

    /// The `Cookie` header value that carries the token under the manager's cookie name
    /// (with the `__Host-` prefix when configured).
    pub fn cookie(&self) -> HeaderValue {
        sensitive(format!(
            "{}={}",
            self.cookie_name,
            self.login.token.expose()
        ))
    }

    /// `request` with `Authorization: Bearer <token>` (replacing any `Authorization` header).
    /// The layer never sets a cookie for a request authenticated by header, and the opt-in
    /// CSRF check ([`CsrfConfig`](crate::CsrfConfig)) does not apply to it.
    pub fn authorize<B>(&self, mut request: Request<B>) -> Request<B> {
        request.headers_mut().insert(AUTHORIZATION, self.bearer());
        request
    }

    /// `request` with the session cookie, added to the cookies it already carries, as a
    /// browser sends it. With [`CsrfConfig`](crate::CsrfConfig) on, an unsafe request (`POST`,
    /// …) by cookie also needs what the check asks for, such as an allowed `Origin`.
    pub fn authorize_cookie<B>(&self, mut request: Request<B>) -> Request<B> {
        let headers = request.headers_mut();
        let mut cookies = Vec::new();
        for value in headers.get_all(COOKIE) {
            cookies.extend_from_slice(value.as_bytes());
            cookies.extend_from_slice(b"; ");
        }
        cookies.extend_from_slice(self.cookie_name.as_bytes());
        cookies.push(b'=');
        cookies.extend_from_slice(self.login.token.expose().as_bytes());
        let mut value = HeaderValue::from_bytes(&cookies)
            .expect("valid header values joined by \"; \" make a valid header value");
        value.set_sensitive(true);
        headers.insert(COOKIE, value);
        request
    }
}

/// A header value with a token in it, kept out of HTTP/2 and HTTP/3 compression tables.
fn sensitive(text: String) -> HeaderValue {
    let mut value = HeaderValue::try_from(text)
        .expect("a base64url token and a validated cookie name make a valid header");
    value.set_sensitive(true);
    value
}
