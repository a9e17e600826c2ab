//! [`NoStore`]: a response that no cache may keep.

use axum_core::response::{IntoResponse, Response};
use http::HeaderValue;
use http::header::CACHE_CONTROL;

/// A response that must not be stored by any cache: wraps a handler's response and sets
/// `Cache-Control: no-store`. Use it for responses that carry a token in the body (login,
/// refresh); the layer already marks responses that set or clear a cookie.
///
/// ```
/// use axum::Json;
/// use tower_session_auth::NoStore;
///
/// async fn login() -> NoStore<Json<&'static str>> {
///     NoStore(Json("token in the body"))
/// }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct NoStore<T>(pub T);

impl<T: IntoResponse> IntoResponse for NoStore<T> {
    fn into_response(self) -> Response {
        let mut response = self.0.into_response();
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}
