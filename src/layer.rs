//! [`SessionLayer`] and [`SessionService`]: find the token, hand a [`Session`] to the
//! extractors, and write the cookie that a login or logout asked for.
//!
//! The service parses the token strictly and inserts a [`Session`] handle into the request's
//! extensions; it does not touch the store. The first extractor that needs the user
//! ([`AuthUser`], [`GameUser`], …) resolves the session with
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
use std::task::{Context, Poll, ready};

use http::header::{CACHE_CONTROL, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri};
use tower_layer::Layer;
use tower_service::Service;

use crate::extract::{AuthUser, GameUser};
use crate::manager::SessionManager;
use crate::rejection::AuthRejection;
use crate::session::Session;
use crate::store::Scope;

/// How the layer learns a request's client address: from the request's extensions (where the
/// server put the peer address) or headers (behind a trusted proxy).
pub type ClientIpFn = fn(&http::Extensions, &HeaderMap) -> Option<IpAddr>;

/// Applies [`SessionService`] to a service. Holds a [`SessionManager`].
///
/// `R` renders the crate's rejections ([`RenderRejection`]); the default keeps the JSON
/// `{"detail": ...}` responses.
#[derive(Clone, Debug)]
pub struct SessionLayer<R = JsonRejection> {
    manager: SessionManager,
    client_ip: Option<ClientIpFn>,
    eager: Option<Scope>,
    render: R,
}

impl SessionLayer {
    /// A layer that resolves sessions through `manager`.
    pub fn new(manager: SessionManager) -> Self {
        Self {
            manager,
            client_ip: None,
            eager: None,
            render: JsonRejection,
        }
    }
}

impl<R> SessionLayer<R> {
    /// Tells the layer where the client address is, for the per-address count of rejected
    /// tokens in the audit log ([`SessionManager::rejected_tokens_by_ip`]), for
    /// [`Session::client_ip`] and for the address a login records. With axum:
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

    /// Eager mode: the layer resolves each request's session before the inner service runs
    /// (one round trip, at `scope`, only for requests that present a token) and inserts the
    /// outcome into the request's extensions, for services that are not axum handlers: a
    /// plain hyper service, or a tower middleware after the layer (a per-user rate limit, a
    /// request log with the user id).
    ///
    /// - A live session with an active user: [`AuthUser`], and at [`Scope::Game`] also
    ///   [`GameUser`] when a character is selected.
    /// - A request the crate refuses to serve as anyone (the store failed, a cross-site
    ///   request under the CSRF check, a user gone inactive, a character gone): the
    ///   [`AuthRejection`], so that a service can answer it (fail closed) rather than treat the
    ///   request as anonymous.
    /// - No token, or an unknown or expired one: nothing.
    ///
    /// The [`Session`] handle is inserted as in the default (lazy) mode and holds the same
    /// validation, so extractors after an eager layer read it without a query. Routes that
    /// need no user still cost a validation when a token is presented: eager mode is for
    /// services where most requests need the user.
    ///
    /// The inner service must be `Clone` (axum's `Router` and hyper-util's `service_fn` are):
    /// it is called after the validation, from the response future.
    ///
    /// ```
    /// use tower_session_auth::{MemoryStore, SessionConfig, SessionLayer, SessionManager};
    /// use tower_session_auth::store::Scope;
    ///
    /// let manager = SessionManager::new(MemoryStore::new(), SessionConfig::default());
    /// let layer = SessionLayer::new(manager).eager(Scope::User);
    /// ```
    pub fn eager(mut self, scope: Scope) -> Self {
        self.eager = Some(scope);
        self
    }

    /// Renders the crate's rejections with `render` instead of the default JSON: every
    /// response that carries an [`AuthRejection`] (an extractor's, or one a handler returned)
    /// is passed to it with the request's method, URI and headers, in one place for the
    /// whole app. `None` keeps the default response. An HTML app can redirect to its login
    /// page:
    ///
    /// ```
    /// use axum::response::{IntoResponse, Redirect, Response};
    /// use tower_session_auth::{AuthRejection, MemoryStore, SessionConfig, SessionLayer, SessionManager};
    /// use tower_session_auth::layer::RejectedRequest;
    ///
    /// fn to_login(rejection: &AuthRejection, request: &RejectedRequest) -> Option<Response> {
    ///     let html = request
    ///         .headers
    ///         .get("accept")
    ///         .and_then(|accept| accept.to_str().ok())
    ///         .is_some_and(|accept| accept.contains("text/html"));
    ///     (html && rejection.status() == 401).then(|| {
    ///         let path = request.uri.path(); // a real app percent-encodes it
    ///         Redirect::to(&format!("/login?next={path}")).into_response()
    ///     })
    /// }
    ///
    /// let manager = SessionManager::new(MemoryStore::new(), SessionConfig::default());
    /// let layer = SessionLayer::new(manager).render_rejection(to_login);
    /// ```
    pub fn render_rejection<T>(self, render: T) -> SessionLayer<T> {
        SessionLayer {
            manager: self.manager,
            client_ip: self.client_ip,
            eager: self.eager,
            render,
        }
    }
}

impl<S, R: Clone> Layer<S> for SessionLayer<R> {
    type Service = SessionService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            manager: self.manager.clone(),
            client_ip: self.client_ip,
            eager: self.eager,
            render: self.render.clone(),
        }
    }
}

/// The request a rejection answered, as [`RenderRejection`] sees it.
///
/// Its headers may carry the session token (`Authorization`, `Cookie`): its `Debug` output
/// lists header names only.
#[derive(Clone)]
#[non_exhaustive]
pub struct RejectedRequest {
    /// The request's method.
    pub method: Method,
    /// The request's URI.
    pub uri: Uri,
    /// The request's headers.
    pub headers: HeaderMap,
}

impl std::fmt::Debug for RejectedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RejectedRequest")
            .field("method", &self.method)
            .field("uri", &self.uri)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Renders the crate's rejections for a whole app ([`SessionLayer::render_rejection`]).
///
/// Implemented by [`JsonRejection`] (the default: keep the JSON responses) and by any
/// `Fn(&AuthRejection, &RejectedRequest) -> Option<Response<B>> + Clone`.
pub trait RenderRejection<B>: Clone {
    /// The response to send instead of `rejection`'s default one, or `None` to keep it.
    fn render(&self, rejection: &AuthRejection, request: &RejectedRequest) -> Option<Response<B>>;

    /// Whether this renderer may replace responses. The default renderer says no, so the
    /// layer keeps no copy of the request for it.
    fn is_active(&self) -> bool {
        true
    }
}

/// The default [`RenderRejection`]: the JSON `{"detail": ...}` of [`AuthRejection`], as is.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonRejection;

impl<B> RenderRejection<B> for JsonRejection {
    fn render(&self, _: &AuthRejection, _: &RejectedRequest) -> Option<Response<B>> {
        None
    }

    fn is_active(&self) -> bool {
        false
    }
}

impl<B, F> RenderRejection<B> for F
where
    F: Fn(&AuthRejection, &RejectedRequest) -> Option<Response<B>> + Clone,
{
    fn render(&self, rejection: &AuthRejection, request: &RejectedRequest) -> Option<Response<B>> {
        self(rejection, request)
    }
}

/// The middleware: inserts a [`Session`] into each request (and in eager mode the user),
/// applies its cookie changes to the response, and renders rejections.
///
/// It adds no error of its own (`Error = S::Error`, so wrapping an axum `Router` stays
/// `Infallible`) and is generic over request and response bodies. In the default (lazy) mode
/// the inner service is called synchronously from `call`, so the service made ready by
/// `poll_ready` is the one that runs; in eager mode the ready service is taken for the
/// response future and a clone stays behind (the usual clone-and-swap).
#[derive(Clone, Debug)]
pub struct SessionService<S, R = JsonRejection> {
    inner: S,
    manager: SessionManager,
    client_ip: Option<ClientIpFn>,
    eager: Option<Scope>,
    render: R,
}

impl<S, R> SessionService<S, R> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    R: RenderRejection<ResBody>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, Request<ReqBody>, R>;

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
        let rejected = self.render.is_active().then(|| RejectedRequest {
            method: request.method().clone(),
            uri: request.uri().clone(),
            headers: request.headers().clone(),
        });
        let state = match self.eager {
            Some(scope) if session.token_source().is_some() => {
                let ready = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, ready);
                let resolving = session.clone();
                State::Resolving {
                    resolve: Box::pin(async move { eager_extensions(&resolving, scope).await }),
                    inner,
                    request: Some(request),
                }
            }
            _ => State::Calling {
                future: self.inner.call(request),
            },
        };
        ResponseFuture {
            state,
            session,
            render: self.render.clone(),
            rejected,
        }
    }
}

/// What eager mode inserts: the user, or the rejection that refuses the request.
type Eager = (Option<AuthUser>, Option<GameUser>, Option<AuthRejection>);

async fn eager_extensions(session: &Session, scope: Scope) -> Eager {
    let view = match session.resolve(scope).await {
        Ok(Some(view)) => view,
        Ok(None) => return (None, None, None),
        Err(rejection) => return (None, None, Some(rejection)),
    };
    let user = match AuthUser::from_view(view) {
        Ok(user) => user,
        Err(rejection) => return (None, None, Some(rejection)),
    };
    match scope {
        Scope::Game if user.character_id.is_some() => match GameUser::from_view(view) {
            Ok(game) => (Some(user), Some(game), None),
            Err(rejection) => (Some(user), None, Some(rejection)),
        },
        _ => (Some(user), None, None),
    }
}

pin_project_lite::pin_project! {
    /// Response future of [`SessionService`]: in eager mode first resolves the session, then
    /// runs the inner service; adds `Set-Cookie` and `Cache-Control: no-store` when the
    /// handler logged in or out, and renders rejections ([`RenderRejection`]).
    ///
    /// A server error (5xx) gets none of the session's cookies: a handler that failed after
    /// [`Session::login`] must not hand the browser a session it did not finish setting up
    /// (the stored session then just expires unused), and one that failed after
    /// [`Session::logout`] leaves the browser's cookie to a retry.
    pub struct ResponseFuture<S, Req, R>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req>,
        session: Session,
        render: R,
        rejected: Option<RejectedRequest>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: Service<Req>,
    {
        Resolving {
            resolve: Pin<Box<dyn Future<Output = Eager> + Send>>,
            inner: S,
            request: Option<Req>,
        },
        Calling {
            #[pin]
            future: S::Future,
        },
    }
}

impl<S, ReqBody, ResBody, R> Future for ResponseFuture<S, Request<ReqBody>, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: RenderRejection<ResBody>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut response = loop {
            match this.state.as_mut().project() {
                StateProj::Resolving {
                    resolve,
                    inner,
                    request,
                } => {
                    let (user, game, rejection) = ready!(resolve.as_mut().poll(cx));
                    let mut request = request.take().expect("polled after completion");
                    let extensions = request.extensions_mut();
                    if let Some(user) = user {
                        extensions.insert(user);
                    }
                    if let Some(game) = game {
                        extensions.insert(game);
                    }
                    if let Some(rejection) = rejection {
                        extensions.insert(rejection);
                    }
                    let future = inner.call(request);
                    this.state.set(State::Calling { future });
                }
                StateProj::Calling { future } => break ready!(future.poll(cx))?,
            }
        };
        if let Some(rejected) = this.rejected.as_ref() {
            let rendered = response
                .extensions()
                .get::<AuthRejection>()
                .and_then(|rejection| this.render.render(rejection, rejected));
            if let Some(rendered) = rendered {
                response = rendered;
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::SessionToken;

    #[test]
    fn a_rejected_requests_debug_output_shows_no_credentials() {
        let token = SessionToken::generate();
        let mut headers = HeaderMap::new();
        let bearer = format!("Bearer {}", token.expose());
        headers.insert(http::header::AUTHORIZATION, bearer.parse().unwrap());
        let cookie = format!("id={}", token.expose());
        headers.insert(http::header::COOKIE, cookie.parse().unwrap());
        let request = RejectedRequest {
            method: Method::GET,
            uri: Uri::from_static("/me"),
            headers,
        };
        let debug = format!("{request:?}");
        assert!(!debug.contains(token.expose()), "{debug}");
        assert!(
            debug.contains("authorization") && debug.contains("/me"),
            "{debug}"
        );
    }
}
