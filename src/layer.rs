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
use std::task::{Context, Poll, ready};

use http::header::{CACHE_CONTROL, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::manager::SessionManager;
use crate::session::Session;

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
