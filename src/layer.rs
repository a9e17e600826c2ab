//! [`SessionLayer`] and [`SessionService`]: find the token, hand a [`Session`] to the
//! extractors, and write the cookie that a login or logout asked for.
//!
//! The service parses the token strictly and inserts a [`Session`] handle into the request's
//! extensions; it does not touch the store. The first extractor that needs the user
//! ([`AuthUser`](crate::AuthUser), [`GameUser`](crate::GameUser), …) resolves the session with
//! one store round trip and caches the outcome in the handle, so any further extractors of the
//! same request reuse it. Routes that extract nothing never reach the store, and keep working
//! while the database is down.
//!
//! ```
//! use axum::{Router, routing::get};
//! use tower_session_auth::{AuthUser, MemoryStore, SessionConfig, SessionLayer, SessionManager};
//!
//! async fn me(user: AuthUser) -> String {
//!     format!("hello, {}", user.username)
//! }
//!
//! let manager = SessionManager::new(MemoryStore::new(), SessionConfig::default());
//! let app: Router = Router::new()
//!     .route("/me", get(me))
//!     .layer(SessionLayer::new(manager));
//! ```

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{AUTHORIZATION, CACHE_CONTROL, COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use tower_layer::Layer;
use tower_service::Service;

use crate::config::CsrfConfig;
use crate::extract::AuthRejection;
use crate::lifecycle::{AUDIT_TARGET, Login, Refresh, SessionManager};
use crate::store::{ClientInfo, Scope, SessionView, Validation};
use crate::token::{RefreshToken, SessionId, SessionToken};
use crate::watch::SessionWatch;

/// Cookie header values longer than this (in total) are treated as carrying no token.
pub const MAX_COOKIE_HEADER: usize = 4096;

/// Where a request's token came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// The configured extra header ([`SessionConfig::token_header`](crate::SessionConfig)).
    Header,
    /// The session cookie.
    Cookie,
}

/// How the layer learns a request's client address: from the request's extensions (where the
/// server put the peer address) or headers (behind a trusted proxy).
pub type ClientIpFn = fn(&http::Extensions, &HeaderMap) -> Option<IpAddr>;

/// Applies [`SessionService`] to a service. Holds a [`SessionManager`].
#[derive(Clone, Debug)]
pub struct SessionLayer {
    manager: SessionManager,
    client_ip: Option<ClientIpFn>,
}

impl SessionLayer {
    /// A layer that resolves sessions through `manager`.
    pub fn new(manager: SessionManager) -> Self {
        Self {
            manager,
            client_ip: None,
        }
    }

    /// Tells the layer where the client address is, for the per-address count of rejected
    /// tokens in the audit log ([`SessionManager::rejected_tokens_by_ip`]) and for
    /// [`Session::client_ip`]. With axum:
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use axum::extract::ConnectInfo;
    /// use tower_session_auth::{MemoryStore, SessionConfig, SessionLayer, SessionManager};
    ///
    /// let manager = SessionManager::new(MemoryStore::new(), SessionConfig::default());
    /// let layer = SessionLayer::new(manager).client_ip(|extensions, _headers| {
    ///     extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip())
    /// });
    /// ```
    pub fn client_ip(mut self, client_ip: ClientIpFn) -> Self {
        self.client_ip = Some(client_ip);
        self
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            manager: self.manager.clone(),
            client_ip: self.client_ip,
        }
    }
}

/// The middleware: inserts a [`Session`] into each request and applies its cookie changes to
/// the response.
///
/// It adds no error of its own (`Error = S::Error`, so wrapping an axum `Router` stays
/// `Infallible`) and is generic over request and response bodies. The inner service is called
/// synchronously from `call`, so the service made ready by `poll_ready` is the one that runs:
/// no clone-and-swap is needed.
#[derive(Clone, Debug)]
pub struct SessionService<S> {
    inner: S,
    manager: SessionManager,
    client_ip: Option<ClientIpFn>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let client_ip = self
            .client_ip
            .and_then(|client_ip| client_ip(request.extensions(), request.headers()));
        let session = Session::new(
            &self.manager,
            request.method(),
            request.uri(),
            request.headers(),
            client_ip,
        );
        request.extensions_mut().insert(session.clone());
        ResponseFuture {
            inner: self.inner.call(request),
            session,
        }
    }
}

pin_project_lite::pin_project! {
    /// Response future of [`SessionService`]: adds `Set-Cookie` and `Cache-Control: no-store`
    /// when the handler logged in or out.
    ///
    /// A server error (5xx) gets none of the session's cookies: a handler that failed after
    /// [`Session::login`] must not hand the browser a session it did not finish setting up
    /// (the stored session then just expires unused), and one that failed after
    /// [`Session::logout`] leaves the browser's cookie to a retry.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        session: Session,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        let cookies = this.session.take_cookies();
        if !cookies.is_empty() && !response.status().is_server_error() {
            let headers = response.headers_mut();
            for cookie in cookies {
                headers.append(SET_COOKIE, cookie);
            }
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        Poll::Ready(Ok(response))
    }
}

/// The request's session handle, inserted by [`SessionService`].
///
/// Extractors use it to resolve the user; handlers take it (it is an extractor too) to log in
/// or out, which also sets or clears the cookie on the response. It never reveals the token.
///
/// ```
/// use axum::{Json, http::StatusCode};
/// use tower_session_auth::{ClientInfo, Session};
///
/// async fn login(session: Session) -> Result<Json<String>, StatusCode> {
///     // ... check the user's password first ...
///     let login = session
///         .login(1, ClientInfo::default())
///         .await
///         .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
///     Ok(Json(login.session.id.to_string()))
/// }
/// ```
#[derive(Clone)]
pub struct Session {
    state: Arc<State>,
}

struct State {
    manager: SessionManager,
    source: Option<TokenSource>,
    /// `None` when no token was presented or the presented one was malformed.
    token: Option<SessionToken>,
    client_ip: Option<IpAddr>,
    /// The refresh cookie as presented on an unsafe request: `None` when absent (or the
    /// method is safe), `Some(None)` when malformed or ambiguous.
    refresh_cookie: Option<Option<RefreshToken>>,
    /// An unsafe request that failed the opt-in CSRF check (whatever its credentials).
    cross_site: bool,
    /// The session resolved at [`Scope::User`] and at [`Scope::Game`].
    user: OnceCell<Resolved>,
    game: OnceCell<Resolved>,
    cookies: Mutex<Vec<HeaderValue>>,
}

#[derive(Clone)]
enum Resolved {
    Anonymous,
    Live(Arc<SessionView>),
    StoreFailed,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("source", &self.state.source)
            .field("token", &self.state.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A handle for a request: finds and strictly parses the token ([`find_token`]) and
    /// applies the opt-in CSRF check ([`CsrfConfig`](crate::CsrfConfig)). No store access.
    pub fn new(
        manager: &SessionManager,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        client_ip: Option<IpAddr>,
    ) -> Self {
        let (source, token) = match find_token(manager, headers) {
            Some((source, token)) => (Some(source), token),
            None => (None, None),
        };
        if source.is_some() && token.is_none() {
            manager.record_rejected_token(client_ip, "malformed");
        }
        // Only a logout reads it, and a logout is never a safe method: the hot path (GET)
        // skips the scan.
        let refresh_cookie = (!is_safe(method))
            .then(|| cookie_value(headers, &manager.config().refresh.cookie_name))
            .flatten()
            .map(|value| value.and_then(RefreshToken::parse_bytes));
        let csrf = manager.config().csrf.as_ref();
        let cross_site = if is_websocket_upgrade(method, headers) {
            // A WebSocket handshake is a GET that browsers send cross-site with the cookie
            // attached (no CORS), so it is always checked, with the default rule when
            // none is configured.
            !csrf.map_or_else(
                || CsrfConfig::default().allows(uri, headers),
                |csrf| csrf.allows(uri, headers),
            )
        } else {
            !is_safe(method) && csrf.is_some_and(|csrf| !csrf.allows(uri, headers))
        };
        Self {
            state: Arc::new(State {
                manager: manager.clone(),
                source,
                token,
                client_ip,
                refresh_cookie,
                cross_site,
                user: OnceCell::new(),
                game: OnceCell::new(),
                cookies: Mutex::new(Vec::new()),
            }),
        }
    }

    /// A CSRF token for this session's HTML forms (the synchronizer-token pattern, without
    /// server-side state): base64url of SHA-256 over a fixed label and the session token.
    /// It reveals nothing about the token, and a cross-site page cannot compute it. `None`
    /// when the request carried no well-formed token.
    pub fn csrf_token(&self) -> Option<String> {
        let token = self.state.token.as_ref()?;
        let digest = Sha256::new()
            .chain_update(b"tower-session-auth csrf v1\0")
            .chain_update(token.expose().as_bytes())
            .finalize();
        Some(URL_SAFE_NO_PAD.encode(digest))
    }

    /// Whether `presented` is this session's [`csrf_token`](Self::csrf_token), compared in
    /// constant time.
    pub fn verify_csrf_token(&self, presented: &str) -> bool {
        let Some(expected) = self.csrf_token() else {
            return false;
        };
        let (a, b) = (expected.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
    }

    /// The client address, if the layer was told how to find it ([`SessionLayer::client_ip`]).
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.state.client_ip
    }

    /// The manager behind this session.
    pub fn manager(&self) -> &SessionManager {
        &self.state.manager
    }

    /// Where the presented token came from (`None`: no token was presented).
    pub fn token_source(&self) -> Option<TokenSource> {
        self.state.source
    }

    /// Resolves the session once per request (later calls reuse the outcome): `Ok(None)` when
    /// there is no live session for the token, `Err` when the store failed.
    ///
    /// `scope` says whether the character is needed ([`Scope`]). A request resolved at
    /// [`Scope::Game`] serves [`Scope::User`] too; the other way round, a session with a
    /// character selected is validated a second time to read it. So a handler that takes both
    /// [`GameUser`](crate::GameUser) and an [`AuthUser`](crate::AuthUser)-based extractor
    /// should list `GameUser` first: its request then costs one round trip.
    pub async fn resolve(&self, scope: Scope) -> Result<Option<&SessionView>, AuthRejection> {
        self.check_cross_site(self.by_cookie())?;
        let (user, game) = (&self.state.user, &self.state.game);
        let resolved = match (scope, game.get()) {
            (Scope::User, Some(resolved)) => resolved,
            (Scope::User, None) => user.get_or_init(|| self.validate(Scope::User)).await,
            (Scope::Game, _) => {
                game.get_or_init(|| async {
                    match user.get() {
                        Some(Resolved::Live(view)) if view.session.character_id.is_some() => {
                            tracing::debug!(
                                "the session is validated again to read its character: \
                                 extract GameUser before AuthUser-based extractors to save \
                                 the round trip"
                            );
                            self.validate(Scope::Game).await
                        }
                        // No character to read: the outcome is the same at either scope.
                        Some(resolved) => resolved.clone(),
                        None => self.validate(Scope::Game).await,
                    }
                })
                .await
            }
        };
        match resolved {
            Resolved::Anonymous => Ok(None),
            Resolved::Live(view) => Ok(Some(view)),
            Resolved::StoreFailed => Err(AuthRejection::StoreUnavailable),
        }
    }

    async fn validate(&self, scope: Scope) -> Resolved {
        let Some(token) = &self.state.token else {
            return Resolved::Anonymous;
        };
        let manager = &self.state.manager;
        match manager.validate(token, scope).await {
            Ok(Validation::Valid(view)) => Resolved::Live(view),
            Ok(Validation::Unknown) => {
                manager.record_rejected_token(self.state.client_ip, "unknown");
                Resolved::Anonymous
            }
            Ok(Validation::Expired) => Resolved::Anonymous,
            Err(error) => {
                tracing::error!(%error, "session store unavailable");
                Resolved::StoreFailed
            }
        }
    }

    /// Logs `user_id` in with a fresh token and, unless the request authenticated by header,
    /// sets the session cookie on the response. A session that this request presented by
    /// cookie is removed first: the new cookie replaces it in the browser anyway.
    ///
    /// With [`CsrfConfig`](crate::CsrfConfig) on, a login that would set a cookie is checked
    /// like the extractors: a cross-site request gets [`AuthRejection::CrossSiteRequest`] and
    /// nothing changes. A store failure is [`AuthRejection::StoreUnavailable`] (and logged).
    pub async fn login(&self, user_id: i64, client: ClientInfo) -> Result<Login, AuthRejection> {
        self.login_with(user_id, client, false).await
    }

    /// Like [`login`](Self::login); with `remember` also starts a remember-me series and,
    /// for cookie clients, sets the refresh cookie.
    pub async fn login_with(
        &self,
        user_id: i64,
        client: ClientInfo,
        remember: bool,
    ) -> Result<Login, AuthRejection> {
        self.check_cross_site(!self.by_header())?;
        let manager = &self.state.manager;
        if let (Some(TokenSource::Cookie), Some(old)) = (self.state.source, &self.state.token) {
            manager.remove_by_token(old).await?;
        }
        let login = manager.login_with(user_id, client, remember).await?;
        if !self.by_header() {
            self.set_login_cookies(&login);
        }
        Ok(login)
    }

    /// Trades a remember-me token for a new session: the token from the request body if the
    /// client sent one, else the refresh cookie in `headers`. When it came by cookie, the
    /// response sets the new session and refresh cookies, or clears the refresh cookie if the
    /// refresh failed. A malformed token is [`Refresh::Invalid`] without a store call.
    ///
    /// With [`CsrfConfig`](crate::CsrfConfig) on, a refresh by cookie is checked like the
    /// extractors ([`AuthRejection::CrossSiteRequest`], nothing changes).
    pub async fn refresh(
        &self,
        body_token: Option<&str>,
        headers: &HeaderMap,
        client: ClientInfo,
    ) -> Result<Refresh, AuthRejection> {
        let manager = &self.state.manager;
        let (presented, by_cookie) = match body_token {
            Some(text) => (RefreshToken::parse(text), false),
            None => {
                let name = &manager.config().refresh.cookie_name;
                match cookie_value(headers, name) {
                    Some(value) => (value.and_then(RefreshToken::parse_bytes), true),
                    None => (None, false),
                }
            }
        };
        self.check_cross_site(by_cookie)?;
        let outcome = match presented {
            Some(presented) => manager.refresh(&presented, client).await?,
            None => {
                manager.record_rejected_token(self.state.client_ip, "malformed_refresh");
                Refresh::Invalid
            }
        };
        if by_cookie {
            match &outcome {
                Refresh::Refreshed(login) => self.set_login_cookies(login),
                Refresh::Invalid | Refresh::ReuseDetected => {
                    self.push_cookie(manager.refresh_removal_cookie())
                }
            }
        }
        Ok(outcome)
    }

    /// Ends this request's session and its remember-me series, and clears the cookies the
    /// request presented. Returns whether a session was removed.
    ///
    /// - The session cookie, if the request carried one, is cleared even when the session had
    ///   already expired, was unknown or the cookie was malformed; the refresh cookie is
    ///   cleared with it. A token that came by header clears nothing (header clients keep no
    ///   cookie).
    /// - A refresh cookie the request carried (to a `POST` or other unsafe method, as a logout
    ///   should be) is cleared too, and if its secret is one its series issued, that
    ///   series and its sessions end. A forged secret ends nothing: the series id is
    ///   not a secret.
    /// - The refresh cookie has `Path=/refresh` by default, so browsers do not send it to a
    ///   logout route; the removal cookie still reaches them (it names that path), and the
    ///   series of the session being logged out ends with it anyway.
    ///
    /// On a store failure nothing is cleared ([`AuthRejection::StoreUnavailable`]), so the
    /// browser keeps a cookie that may still be live. With [`CsrfConfig`](crate::CsrfConfig)
    /// on, a cross-site logout that would act on cookies is rejected and changes nothing.
    pub async fn logout(&self) -> Result<bool, AuthRejection> {
        let session_cookie = self.by_cookie();
        let refresh_cookie = self.state.refresh_cookie.as_ref();
        self.check_cross_site(session_cookie || refresh_cookie.is_some())?;
        let manager = &self.state.manager;
        let removed = match &self.state.token {
            Some(token) => manager.remove_by_token(token).await?,
            None => false,
        };
        if let Some(Some(refresh)) = refresh_cookie {
            manager.end_series(refresh).await?;
        }
        if session_cookie {
            self.push_cookie(manager.removal_cookie());
        }
        if session_cookie || refresh_cookie.is_some() {
            self.push_cookie(manager.refresh_removal_cookie());
        }
        Ok(removed)
    }

    /// Records that this request's user just proved their credentials again (see
    /// [`SessionManager::reauthenticate`]): the same session, token and remember-me series,
    /// with `authenticated_at` moved to now. Check the password first. Returns `Ok(false)`
    /// when the request has no live session; fails as the extractors do (a cross-site request
    /// under the CSRF check, a store failure).
    ///
    /// ```
    /// use axum::Json;
    /// use tower_session_auth::{AuthRejection, AuthUser, Session};
    ///
    /// async fn reauthenticate(
    ///     user: AuthUser,
    ///     session: Session,
    /// ) -> Result<Json<bool>, AuthRejection> {
    ///     // ... check the password of `user.user_id` first ...
    ///     Ok(Json(session.reauthenticate().await?))
    /// }
    /// ```
    pub async fn reauthenticate(&self) -> Result<bool, AuthRejection> {
        let Some(view) = self.resolve(Scope::User).await? else {
            return Ok(false);
        };
        Ok(self.state.manager.reauthenticate(view.session.id).await?)
    }

    /// Self-service revocation of one of `user_id`'s sessions, as
    /// [`SessionManager::revoke`]; when `id` is this request's own session and it came by
    /// cookie, the response clears the session and refresh cookies. A cookie-authenticated
    /// request is subject to the [`CsrfConfig`](crate::CsrfConfig) check, like the extractors.
    pub async fn revoke(&self, user_id: i64, id: SessionId) -> Result<bool, AuthRejection> {
        self.check_cross_site(self.by_cookie())?;
        let current = self.is_current(id).await;
        let removed = self.state.manager.revoke(user_id, id).await?;
        self.clear_if_current(removed && current);
        Ok(removed)
    }

    /// An administrator's kick of any session, as [`SessionManager::remove`]; when `id` is
    /// this request's own session and it came by cookie, the response clears the session and
    /// refresh cookies. A cookie-authenticated request is subject to the
    /// [`CsrfConfig`](crate::CsrfConfig) check, like the extractors.
    pub async fn kick(&self, id: SessionId) -> Result<bool, AuthRejection> {
        self.check_cross_site(self.by_cookie())?;
        let current = self.is_current(id).await;
        let removed = self.state.manager.remove(id).await?;
        self.clear_if_current(removed && current);
        Ok(removed)
    }

    /// Watches this request's session until it ends ([`SessionWatch`]): for a WebSocket or
    /// another long-lived connection opened by this request. Uses the request's validation
    /// (an extractor's, or one made now); rejects as [`AuthUser`](crate::AuthUser) does when
    /// there is no live session with an active user.
    pub async fn watch(&self) -> Result<SessionWatch, AuthRejection> {
        let view = self
            .resolve(Scope::User)
            .await?
            .ok_or(AuthRejection::InvalidSession)?;
        if crate::watch::user_role(view).is_none() {
            return Err(AuthRejection::InvalidUser);
        }
        let token = self
            .state
            .token
            .as_ref()
            .ok_or(AuthRejection::InvalidSession)?;
        Ok(SessionWatch::new(
            &self.state.manager,
            token.hash(),
            view,
            None,
        ))
    }

    /// Whether `id` is the session this request presented (resolving it if no extractor has).
    async fn is_current(&self, id: SessionId) -> bool {
        matches!(self.resolve(Scope::User).await, Ok(Some(view)) if view.session.id == id)
    }

    fn clear_if_current(&self, current: bool) {
        if current && self.by_cookie() {
            let manager = &self.state.manager;
            self.push_cookie(manager.removal_cookie());
            self.push_cookie(manager.refresh_removal_cookie());
        }
    }

    /// Rejects a request that failed the CSRF check when `applies` (the operation acts on a
    /// cookie), and logs it.
    fn check_cross_site(&self, applies: bool) -> Result<(), AuthRejection> {
        if applies && self.state.cross_site {
            tracing::warn!(
                target: AUDIT_TARGET,
                event = "cross_site_request_rejected",
                ip = self.state.client_ip.map(tracing::field::display),
            );
            return Err(AuthRejection::CrossSiteRequest);
        }
        Ok(())
    }

    fn by_cookie(&self) -> bool {
        self.state.source == Some(TokenSource::Cookie)
    }

    fn by_header(&self) -> bool {
        matches!(
            self.state.source,
            Some(TokenSource::Bearer | TokenSource::Header)
        )
    }

    fn set_login_cookies(&self, login: &Login) {
        let manager = &self.state.manager;
        self.push_cookie(manager.session_cookie(&login.token, &login.session));
        if let Some(refresh) = &login.refresh {
            self.push_cookie(manager.refresh_cookie(refresh, login.session.authenticated_at));
        }
    }

    fn push_cookie(&self, value: HeaderValue) {
        self.state
            .cookies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(value);
    }

    fn take_cookies(&self) -> Vec<HeaderValue> {
        std::mem::take(&mut *self.state.cookies.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A WebSocket opening handshake: a GET with `Upgrade: websocket` (RFC 6455), or any
/// CONNECT (HTTP/2 and HTTP/3 open WebSockets with an extended CONNECT, RFC 8441).
fn is_websocket_upgrade(method: &Method, headers: &HeaderMap) -> bool {
    *method == Method::CONNECT
        || *method == Method::GET
            && headers.get_all(http::header::UPGRADE).iter().any(|value| {
                value
                    .as_bytes()
                    .split(|byte| *byte == b',')
                    .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"websocket"))
            })
}

fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The token discovery the layer runs on each request, exposed for custom middleware, tests
/// and fuzzing.
///
/// Looks at `Authorization: Bearer`, then the configured extra header, then the cookie, and
/// stops at the first that is present. Returns its source and the strictly parsed token
/// (`None` when malformed, or ambiguous: a second `Authorization` header beside a Bearer one,
/// a repeated token header, or a cookie name that appears twice), or `None` when no source is
/// present. Cookie headers over [`MAX_COOKIE_HEADER`] bytes count as absent (and are logged).
/// `Authorization` headers with another scheme only (e.g. `Basic`) are ignored.
///
/// ```
/// use tower_session_auth::{MemoryStore, SessionConfig, SessionManager, TokenSource, find_token};
///
/// let manager = SessionManager::new(MemoryStore::new(), SessionConfig::default());
/// let mut headers = http::HeaderMap::new();
/// headers.insert("cookie", "id=too-short".parse().unwrap());
/// let (source, token) = find_token(&manager, &headers).unwrap();
/// assert_eq!(source, TokenSource::Cookie);
/// assert!(token.is_none()); // presented, malformed: 401 without a query
/// ```
pub fn find_token(
    manager: &SessionManager,
    headers: &HeaderMap,
) -> Option<(TokenSource, Option<SessionToken>)> {
    let mut bearer = None;
    let mut count = 0;
    for value in headers.get_all(AUTHORIZATION) {
        count += 1;
        let bytes = value.as_bytes();
        let scheme_end = bytes
            .iter()
            .position(|b| *b == b' ' || *b == b'\t')
            .unwrap_or(bytes.len());
        if bytes[..scheme_end].eq_ignore_ascii_case(b"bearer") {
            let rest = &bytes[scheme_end..];
            let credentials = rest.trim_ascii_start();
            bearer = Some(
                (rest.len() > credentials.len())
                    .then(|| SessionToken::parse_bytes(credentials))
                    .flatten(),
            );
        }
    }
    if let Some(token) = bearer {
        // Several Authorization headers next to a Bearer one are ambiguous: reject.
        return Some((TokenSource::Bearer, token.filter(|_| count == 1)));
    }
    if let Some(name) = &manager.config().token_header {
        let mut values = headers.get_all(name).iter();
        if let Some(value) = values.next() {
            let token = SessionToken::parse_bytes(value.as_bytes());
            return Some((
                TokenSource::Header,
                token.filter(|_| values.next().is_none()),
            ));
        }
    }
    cookie_token(headers, manager.cookie_name()).map(|token| (TokenSource::Cookie, token))
}

/// The session cookie's token: `None` if there is no such cookie (or the header is oversized),
/// `Some(None)` if it is malformed or the name appears more than once.
fn cookie_token(headers: &HeaderMap, name: &str) -> Option<Option<SessionToken>> {
    cookie_value(headers, name).map(|value| value.and_then(SessionToken::parse_bytes))
}

/// A cookie's raw value: `None` if there is no such cookie (or the headers are oversized),
/// `Some(None)` if the name appears more than once (ambiguous, so rejected).
fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<Option<&'h [u8]>> {
    let values = headers.get_all(COOKIE);
    let total: usize = values.iter().map(|value| value.len() + 2).sum();
    if total > MAX_COOKIE_HEADER + 2 {
        tracing::info!(
            target: AUDIT_TARGET,
            event = "cookie_header_ignored",
            reason = "oversized",
            bytes = total - 2,
        );
        return None;
    }
    let mut found: Option<&[u8]> = None;
    let mut duplicate = false;
    for pair in values
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b';'))
    {
        let pair = pair.trim_ascii();
        let Some(eq) = pair.iter().position(|b| *b == b'=') else {
            continue;
        };
        if pair[..eq].trim_ascii() == name.as_bytes() {
            duplicate |= found.is_some();
            found = Some(pair[eq + 1..].trim_ascii());
        }
    }
    let value = found?;
    Some((!duplicate).then_some(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemoryStore, SessionConfig};

    fn manager() -> SessionManager {
        let config = SessionConfig::default()
            .token_header(Some(http::HeaderName::from_static("x-session-token")));
        SessionManager::new(MemoryStore::new(), config)
    }

    fn find(pairs: &[(&str, &[u8])]) -> Option<(TokenSource, Option<String>)> {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        find_token(&manager(), &headers)
            .map(|(source, token)| (source, token.map(|t| t.expose().to_owned())))
    }

    #[test]
    fn precedence_is_bearer_then_header_then_cookie() {
        let [a, b, c] = [(); 3].map(|_| SessionToken::generate().expose().to_owned());
        let bearer = format!("Bearer {a}");
        let cookie = format!("id={c}");
        let all: [(&str, &[u8]); 3] = [
            ("authorization", bearer.as_bytes()),
            ("x-session-token", b.as_bytes()),
            ("cookie", cookie.as_bytes()),
        ];
        assert_eq!(find(&all), Some((TokenSource::Bearer, Some(a.clone()))));
        assert_eq!(
            find(&all[1..]),
            Some((TokenSource::Header, Some(b.clone())))
        );
        assert_eq!(
            find(&all[2..]),
            Some((TokenSource::Cookie, Some(c.clone())))
        );
        assert_eq!(find(&[]), None);
    }

    #[test]
    fn other_authorization_schemes_fall_through_to_the_cookie() {
        let c = SessionToken::generate().expose().to_owned();
        let cookie = format!("theme=dark; id={c}; lang=en");
        assert_eq!(
            find(&[
                ("authorization", b"Basic dXNlcjpwYXNz"),
                ("cookie", cookie.as_bytes())
            ]),
            Some((TokenSource::Cookie, Some(c.clone())))
        );
    }

    #[test]
    fn malformed_or_ambiguous_tokens_are_presented_but_rejected() {
        let t = SessionToken::generate().expose().to_owned();
        for bearer in [
            "Bearer",
            "Bearer ",
            "bearer x",
            &format!("Bearer {t}x"),
            "Bearer\tgarbage",
        ] {
            assert_eq!(
                find(&[("authorization", bearer.as_bytes())]),
                Some((TokenSource::Bearer, None)),
                "{bearer}"
            );
        }
        let twice = format!("id={t}; id={t}");
        assert_eq!(
            find(&[("cookie", twice.as_bytes())]),
            Some((TokenSource::Cookie, None))
        );
        let encoded = format!("id={}%2D", &t[..40]);
        assert_eq!(
            find(&[("cookie", encoded.as_bytes())]),
            Some((TokenSource::Cookie, None))
        );
        assert_eq!(
            find(&[("cookie", b"id=\xff\xfe")]),
            Some((TokenSource::Cookie, None))
        );
    }

    #[test]
    fn repeated_token_headers_are_ambiguous() {
        let [a, b] = [(); 2].map(|_| SessionToken::generate().expose().to_owned());
        let (bearer_a, bearer_b) = (format!("Bearer {a}"), format!("Bearer {b}"));
        let cookie = format!("id={b}");
        assert_eq!(
            find(&[
                ("authorization", bearer_a.as_bytes()),
                ("authorization", bearer_b.as_bytes())
            ]),
            Some((TokenSource::Bearer, None))
        );
        assert_eq!(
            find(&[
                ("authorization", b"Basic dXNlcjpwYXNz"),
                ("authorization", bearer_a.as_bytes()),
                ("cookie", cookie.as_bytes())
            ]),
            Some((TokenSource::Bearer, None))
        );
        assert_eq!(
            find(&[
                ("x-session-token", a.as_bytes()),
                ("x-session-token", b.as_bytes())
            ]),
            Some((TokenSource::Header, None))
        );
        let tabbed = format!("Bearer\t{a}");
        assert_eq!(
            find(&[("authorization", tabbed.as_bytes())]),
            Some((TokenSource::Bearer, Some(a.clone())))
        );
    }

    #[test]
    fn oversized_cookie_header_carries_no_token() {
        let t = SessionToken::generate().expose().to_owned();
        let big = format!("pad={}; id={t}", "x".repeat(MAX_COOKIE_HEADER));
        assert_eq!(find(&[("cookie", big.as_bytes())]), None);
    }
}
