//! [`AuthRejection`]: why the crate refused a request, and how it answers.
//!
//! Every rejection renders as JSON `{"detail": "<text>"}` with its status
//! ([`AuthRejection::status`], [`AuthRejection::body_text`]); 401s carry
//! `WWW-Authenticate: Bearer`.

use axum_core::response::{IntoResponse, Response};
use http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};

use crate::store::StoreError;

/// Why an extractor refused a request. Renders as JSON `{"detail": "<text>"}` with the
/// statuses and texts below; 401s carry `WWW-Authenticate: Bearer`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthRejection {
    /// 401: no token, malformed, unknown or expired.
    #[error("Invalid or expired session")]
    InvalidSession,
    /// 401: the session's user is missing, inactive, or has no role.
    #[error("Invalid session user")]
    InvalidUser,
    /// 409: a game route, and no character is selected.
    #[error("No character selected for session. Select a character first.")]
    NoCharacterSelected,
    /// 409: the selected character no longer exists (or no longer belongs to the user).
    #[error("Selected character not found")]
    CharacterNotFound,
    /// 409: the selected character has no world.
    #[error("Character world not found")]
    CharacterWorldNotFound,
    /// 403: the role lacks the permission.
    #[error("Insufficient permissions. Required: {0}")]
    MissingPermission(&'static str),
    /// 403: the role is below the minimum.
    #[error("Insufficient privileges. Minimum role required: {0}")]
    MissingRole(&'static str),
    /// 403: a cookie-authenticated unsafe request failed the opt-in CSRF check
    /// ([`CsrfConfig`](crate::CsrfConfig)).
    #[error("Cross-site request rejected")]
    CrossSiteRequest,
    /// 403: a [`RecentAuth`](crate::RecentAuth) route, and the session's user has not proved their credentials
    /// within [`recent_auth_max_age`](crate::SessionConfig::recent_auth_max_age), or the
    /// session was made by a remember-me refresh and not re-authenticated since. The body
    /// names the re-authentication route in a `reauthenticate` field when one is configured
    /// ([`SessionConfig::reauthenticate_route`](crate::SessionConfig::reauthenticate_route)),
    /// and the response carries `WWW-Authenticate: Bearer
    /// error="insufficient_user_authentication", max_age=<seconds>` (the step-up challenge of
    /// RFC 9470).
    #[error("Recent authentication required")]
    RecentAuthRequired {
        /// The required recency, in seconds.
        max_age_secs: u64,
        /// Where the client re-authenticates, if configured.
        reauthenticate: Option<String>,
    },
    /// 500: the store failed (database down, pool timeout).
    #[error("Session store unavailable")]
    StoreUnavailable,
    /// 500: no [`SessionLayer`](crate::SessionLayer) runs in front of this route.
    #[error("Session layer not installed")]
    LayerMissing,
    /// 500: the handler asks for a user id type ([`AuthUser<Id>`](crate::AuthUser)) that the
    /// store's ids are not (an `AuthUser<Uuid>` in front of `bigint` ids): a configuration
    /// error, logged with both types.
    #[error("Session user id type mismatch")]
    UserIdMismatch,
}

impl AuthRejection {
    /// The text of the response's `detail` field, e.g. `Invalid or expired session`.
    pub fn body_text(&self) -> String {
        self.to_string()
    }

    /// The HTTP status of this rejection.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidSession | Self::InvalidUser => StatusCode::UNAUTHORIZED,
            Self::NoCharacterSelected | Self::CharacterNotFound | Self::CharacterWorldNotFound => {
                StatusCode::CONFLICT
            }
            Self::MissingPermission(_)
            | Self::MissingRole(_)
            | Self::CrossSiteRequest
            | Self::RecentAuthRequired { .. } => StatusCode::FORBIDDEN,
            Self::StoreUnavailable | Self::LayerMissing | Self::UserIdMismatch => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut body = serde_json::json!({ "detail": self.body_text() });
        let mut challenge = None;
        if let Self::RecentAuthRequired {
            max_age_secs,
            reauthenticate,
        } = &self
        {
            if let Some(route) = reauthenticate {
                body["reauthenticate"] = route.as_str().into();
            }
            challenge = HeaderValue::try_from(format!(
                "Bearer error=\"insufficient_user_authentication\", max_age={max_age_secs}"
            ))
            .ok();
        }
        let mut response = (status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(challenge) = challenge {
            headers.insert(WWW_AUTHENTICATE, challenge);
        }
        // For the layer's renderer (`SessionLayer::render_rejection`).
        response.extensions_mut().insert(self);
        response
    }
}

/// A store error seen by the [`Session`](crate::Session) handle: logged, and answered like the extractors'.
impl From<StoreError> for AuthRejection {
    fn from(error: StoreError) -> Self {
        tracing::error!(%error, "session store unavailable");
        Self::StoreUnavailable
    }
}

/// A store error returned from a handler fails closed, like the extractors: it is logged and
/// answered with `500 Session store unavailable`.
impl IntoResponse for StoreError {
    fn into_response(self) -> Response {
        tracing::error!(error = %self, "session store unavailable");
        AuthRejection::StoreUnavailable.into_response()
    }
}
