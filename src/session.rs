//! [`Session`]: the request's handle on its session, inserted by the
//! [`SessionLayer`](crate::SessionLayer). Extractors resolve the user through it; handlers log
//! in and out with it.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue, Method, Uri};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::config::CsrfConfig;
use crate::credentials::{TokenSource, cookie_value, find_token};
use crate::manager::{AUDIT_TARGET, Login, LoginOptions, Refresh, SessionManager};

/// The header a client names its kind in (`web`, `tui`, …), recorded at login.
const CLIENT_TYPE_HEADER: &str = "x-client-type";
use crate::rejection::AuthRejection;
use crate::store::{ClientInfo, Scope, SessionView, Validation};
use crate::token::{RefreshToken, SessionId, SessionToken};
use crate::user_id::UserId;
use crate::watch::SessionWatch;

/// The request's session handle, inserted by the [`SessionLayer`](crate::SessionLayer).
///
/// Extractors use it to resolve the user; handlers take it (it is an extractor too) to log in
/// or out, which also sets or clears the cookie on the response. It never reveals the token.
///
/// ```
/// use axum::{Json, http::StatusCode};
/// use tower_session_auth::{LoginOptions, Session};
///
/// async fn login(session: Session) -> Result<Json<String>, StatusCode> {
///     // ... check the user's password first ...
///     let login = session
///         .login(1, LoginOptions::new())
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
    /// `User-Agent` and `X-Client-Type`, kept (a reference count, no copy) for a login.
    user_agent: Option<HeaderValue>,
    client_type: Option<HeaderValue>,
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
                user_agent: headers.get(http::header::USER_AGENT).cloned(),
                client_type: headers.get(CLIENT_TYPE_HEADER).cloned(),
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

    /// The client address, if the layer was told how to find it ([`SessionLayer::client_ip`](crate::SessionLayer::client_ip)).
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

    /// Logs `user_id` in with a fresh token, as `options` asks ([`LoginOptions`]), and, unless
    /// the request authenticated by header, sets the session cookie (and with "remember me"
    /// the refresh cookie) on the response. A session that this request presented by cookie
    /// is removed first: the new cookie replaces it in the browser anyway.
    ///
    /// Unless `options` names the client, the session records this request's: the address
    /// the layer found ([`SessionLayer::client_ip`](crate::SessionLayer::client_ip)), the
    /// `User-Agent` and the `X-Client-Type` header ([`Session::client_info`]).
    ///
    /// With [`CsrfConfig`](crate::CsrfConfig) on, a login that would set a cookie is checked
    /// like the extractors: a cross-site request gets [`AuthRejection::CrossSiteRequest`] and
    /// nothing changes. A store failure is [`AuthRejection::StoreUnavailable`] (and logged).
    pub async fn login(
        &self,
        user_id: impl Into<UserId>,
        options: LoginOptions,
    ) -> Result<Login, AuthRejection> {
        self.check_cross_site(!self.by_header())?;
        let manager = &self.state.manager;
        if let (Some(TokenSource::Cookie), Some(old)) = (self.state.source, &self.state.token) {
            manager.remove_by_token(old).await?;
        }
        let options = match options.client {
            Some(_) => options,
            None => options.client(self.client_info()),
        };
        let login = manager.login(user_id, options).await?;
        if !self.by_header() {
            self.set_login_cookies(&login);
        }
        Ok(login)
    }

    /// Who this request comes from, as a login records it: the address the layer found, the
    /// `User-Agent` (truncated) and the `X-Client-Type` header (normalised, as
    /// [`ClientInfo::from_headers`] reads them).
    pub fn client_info(&self) -> ClientInfo {
        let text = |value: &Option<HeaderValue>| {
            value
                .as_ref()
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        let mut client = ClientInfo::from_parts(
            text(&self.state.user_agent).as_deref(),
            text(&self.state.client_type).as_deref(),
        );
        client.ip = self.state.client_ip;
        client
    }

    /// Trades a remember-me token for a new session: the token from the request body if the
    /// client sent one, else the request's refresh cookie. The new session records this
    /// request's client ([`Session::client_info`]). When it came by cookie, the
    /// response sets the new session and refresh cookies, or clears the refresh cookie if the
    /// refresh failed. A malformed token is [`Refresh::Invalid`] without a store call.
    ///
    /// With [`CsrfConfig`](crate::CsrfConfig) on, a refresh by cookie is checked like the
    /// extractors ([`AuthRejection::CrossSiteRequest`], nothing changes).
    pub async fn refresh(&self, body_token: Option<&str>) -> Result<Refresh, AuthRejection> {
        let manager = &self.state.manager;
        let (presented, by_cookie) = match (body_token, &self.state.refresh_cookie) {
            (Some(text), _) => (RefreshToken::parse(text), false),
            (None, Some(cookie)) => (cookie.clone(), true),
            (None, None) => (None, false),
        };
        let client = self.client_info();
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
    pub async fn revoke(
        &self,
        user_id: impl Into<UserId>,
        id: SessionId,
    ) -> Result<bool, AuthRejection> {
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

    pub(crate) fn take_cookies(&self) -> Vec<HeaderValue> {
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

impl Session {
    /// The check of [`RecentAuth`](crate::RecentAuth), for a handler that needs recent authentication only in
    /// some cases (say, revoking another device's session but not its own): the request's
    /// live session if its user proved their credentials recently, otherwise
    /// [`AuthRejection::RecentAuthRequired`] (or the rejection of the validation itself).
    /// It reuses the request's validation when an extractor already made one.
    ///
    /// ```
    /// use tower_session_auth::{AuthRejection, AuthUser, Session, SessionId};
    ///
    /// async fn revoke(
    ///     user: AuthUser,
    ///     session: Session,
    ///     other: SessionId,
    /// ) -> Result<(), AuthRejection> {
    ///     if other != user.session_id {
    ///         session.require_recent_auth().await?;
    ///     }
    ///     // ... revoke `other` ...
    ///     Ok(())
    /// }
    /// ```
    pub async fn require_recent_auth(&self) -> Result<&SessionView, AuthRejection> {
        let view = self
            .resolve(Scope::User)
            .await?
            .ok_or(AuthRejection::InvalidSession)?;
        if self.manager().is_recently_authenticated(&view.session) {
            Ok(view)
        } else {
            Err(self.recent_auth_rejection())
        }
    }

    pub(crate) fn recent_auth_rejection(&self) -> AuthRejection {
        let config = self.manager().config();
        AuthRejection::RecentAuthRequired {
            max_age_secs: config.recent_auth_max_age.as_secs(),
            reauthenticate: config.reauthenticate_route.clone(),
        }
    }
}
