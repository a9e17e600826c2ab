//! A plain hyper server, without axum: the layer in eager mode puts the user into the
//! request's extensions, so a `service_fn` (or any tower middleware after the layer) reads it
//! without extractors.
//!
//! ```text
//! cargo run --example hyper_server
//! curl -H "Authorization: Bearer <the token it prints>" http://127.0.0.1:3001/me
//! ```
//!
//! It keeps sessions in memory and logs the demo user in at start-up, printing the token; a
//! real server logs users in through its own login route (see the `mud_server` example).

use std::convert::Infallible;

use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tower::{ServiceBuilder, service_fn};
use tower_session_auth::store::Scope;
use tower_session_auth::{
    AuthRejection, AuthUser, LoginOptions, MemoryStore, SessionConfig, SessionLayer, SessionManager,
};

/// Answers `/me` with the user the layer found, `401` without one, and the crate's own
/// rejection (for example `500 Session store unavailable`) when the layer refused the request.
async fn me(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let extensions = request.extensions();
    let (status, text) = match (
        extensions.get::<AuthRejection>(),
        extensions.get::<AuthUser>(),
    ) {
        (Some(rejection), _) => (rejection.status(), rejection.body_text()),
        (None, Some(user)) => (
            StatusCode::OK,
            format!("hello, {} ({})", user.username, user.role),
        ),
        (None, None) => (
            StatusCode::UNAUTHORIZED,
            "Invalid or expired session".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    Ok(response)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = MemoryStore::new();
    store.upsert_user(1, "alice", Some("player"), true);
    // Plain HTTP on localhost: the cookie's `Secure` flag would keep browsers from sending it.
    let config = SessionConfig::default();
    let manager = SessionManager::new(store, config);
    let login = manager.login(1, LoginOptions::new()).await?;
    println!("token for alice: {}", login.token.expose());

    let service = ServiceBuilder::new()
        .layer(SessionLayer::new(manager).eager(Scope::User))
        .service(service_fn(me));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    println!("listening on http://127.0.0.1:3001");
    loop {
        let (stream, _) = listener.accept().await?;
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("connection error: {error}");
            }
        });
    }
}
