//! [`SessionConfig`]: expiry, debounce, cookie and limits, with the original server's defaults.

use std::num::NonZeroU32;
use std::time::Duration;

use cookie::SameSite;
use http::HeaderName;

/// How sessions expire, how the token travels, and how many a user may hold.
///
/// Defaults follow the original server: an idle TTL of 480 minutes with sliding expiration,
/// plus an absolute lifetime of 7 days and a 60 s activity debounce.
///
/// ```
/// use std::time::Duration;
/// use tower_session_auth::SessionConfig;
///
/// let config = SessionConfig::default()
///     .idle_timeout(Some(Duration::from_secs(30 * 60)))
///     .touch_interval(Duration::from_secs(30))
///     .max_sessions_per_user(Some(1))
///     .token_header(Some(http::HeaderName::from_static("x-session-token")));
/// assert_eq!(config.cookie.name, "id");
/// ```
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Idle TTL. `None` disables idle expiry (a TTL of 0 in the original).
    pub idle_timeout: Option<Duration>,
    /// Sliding expiration: each validated request moves `expires_at` to now + idle TTL.
    pub sliding: bool,
    /// Absolute lifetime from `created_at` that activity never extends. `None` disables it.
    pub absolute_lifetime: Option<Duration>,
    /// Activity writes happen at most once per this interval per session (zero: every request).
    /// Idle expiry can therefore come early by at most this interval.
    pub touch_interval: Duration,
    /// With `Some(n)`, a login removes the user's oldest sessions beyond `n`.
    pub max_sessions_per_user: Option<u32>,
    /// An extra header checked after `Authorization: Bearer` and before the cookie.
    pub token_header: Option<HeaderName>,
    /// The session cookie.
    pub cookie: CookieConfig,
    /// Opt-in cross-site request check for cookie-authenticated unsafe requests.
    pub csrf: Option<CsrfConfig>,
    /// Remember-me refresh series (used only by logins that ask for it).
    pub refresh: RefreshConfig,
    /// Rows per statement of [`purge_expired`](crate::SessionManager::purge_expired) and the
    /// sweeper: each batch is a short statement of its own, so that a mass expiry never holds
    /// locks or a connection for long.
    pub purge_batch_size: NonZeroU32,
}

/// The default [`SessionConfig::purge_batch_size`].
const DEFAULT_PURGE_BATCH_SIZE: NonZeroU32 = NonZeroU32::new(10_000).unwrap();

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Some(Duration::from_secs(480 * 60)),
            sliding: true,
            absolute_lifetime: Some(Duration::from_secs(7 * 24 * 60 * 60)),
            touch_interval: Duration::from_secs(60),
            max_sessions_per_user: None,
            token_header: None,
            cookie: CookieConfig::default(),
            csrf: None,
            refresh: RefreshConfig::default(),
            purge_batch_size: DEFAULT_PURGE_BATCH_SIZE,
        }
    }
}

impl SessionConfig {
    /// Sets the idle TTL (`None`: sessions never idle out).
    pub fn idle_timeout(mut self, ttl: Option<Duration>) -> Self {
        self.idle_timeout = ttl;
        self
    }

    /// Turns sliding expiration on or off.
    pub fn sliding(mut self, sliding: bool) -> Self {
        self.sliding = sliding;
        self
    }

    /// Sets the absolute lifetime (`None`: no absolute limit).
    pub fn absolute_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.absolute_lifetime = lifetime;
        self
    }

    /// Sets the activity-write debounce interval.
    pub fn touch_interval(mut self, interval: Duration) -> Self {
        self.touch_interval = interval;
        self
    }

    /// Limits concurrent sessions per user (`Some(1)`: single-session mode).
    pub fn max_sessions_per_user(mut self, max: Option<u32>) -> Self {
        self.max_sessions_per_user = max;
        self
    }

    /// Sets an extra token header, e.g. `X-Session-Token`.
    pub fn token_header(mut self, header: Option<HeaderName>) -> Self {
        self.token_header = header;
        self
    }

    /// Replaces the cookie settings.
    pub fn cookie(mut self, cookie: CookieConfig) -> Self {
        self.cookie = cookie;
        self
    }

    /// Replaces the remember-me settings.
    pub fn refresh(mut self, refresh: RefreshConfig) -> Self {
        self.refresh = refresh;
        self
    }

    /// Sets how many expired sessions each statement of the purge deletes (10 000 by default).
    pub fn purge_batch_size(mut self, size: NonZeroU32) -> Self {
        self.purge_batch_size = size;
        self
    }

    /// Turns the cross-site request check on (`Some`) or off (`None`, the default).
    pub fn csrf(mut self, csrf: Option<CsrfConfig>) -> Self {
        self.csrf = csrf;
        self
    }
}

/// Remember-me: a long-lived refresh series that trades its rotating secret for new sessions.
///
/// A login with `remember = true` also returns a [`RefreshToken`](crate::RefreshToken) and
/// sets it in its own cookie (`HttpOnly`, `Secure` as the session cookie, `SameSite=Strict`,
/// `Path` limited to the refresh route, `Max-Age` the series' remaining lifetime). Each refresh
/// rotates the secret; presenting a superseded secret after [`grace`](Self::grace) revokes the
/// series and every session it created. Sessions made by a refresh keep the original login
/// time as `authenticated_at`, so handlers can ask for a fresh login before sensitive changes.
#[derive(Clone, Debug)]
pub struct RefreshConfig {
    /// The series ends when unused for this long (default 30 days); `None` disables it.
    pub idle_timeout: Option<Duration>,
    /// The series ends this long after the login (default 90 days); `None` disables it.
    pub absolute_lifetime: Option<Duration>,
    /// For this long after a rotation, the just-superseded secret is still accepted (once
    /// more per rotation), so two tabs or a retried request do not raise a false alarm
    /// (default 5 s).
    pub grace: Duration,
    /// Name of the refresh cookie (default `refresh`).
    pub cookie_name: String,
    /// Path of the refresh cookie: the refresh route (default `/refresh`).
    pub cookie_path: String,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Some(Duration::from_secs(30 * 24 * 60 * 60)),
            absolute_lifetime: Some(Duration::from_secs(90 * 24 * 60 * 60)),
            grace: Duration::from_secs(5),
            cookie_name: "refresh".to_owned(),
            cookie_path: "/refresh".to_owned(),
        }
    }
}

impl RefreshConfig {
    /// Sets the idle lifetime of a series.
    pub fn idle_timeout(mut self, ttl: Option<Duration>) -> Self {
        self.idle_timeout = ttl;
        self
    }

    /// Sets the absolute lifetime of a series.
    pub fn absolute_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.absolute_lifetime = lifetime;
        self
    }

    /// Sets the reuse grace window.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Sets the refresh cookie's name.
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = name.into();
        self
    }

    /// Sets the refresh cookie's path.
    pub fn cookie_path(mut self, path: impl Into<String>) -> Self {
        self.cookie_path = path.into();
        self
    }
}

/// An opt-in defence against cross-site request forgery for cookie sessions.
///
/// `SameSite=Lax` already keeps the cookie off cross-site `POST`s in current browsers; this
/// check adds a server-side rule that does not depend on the browser. When enabled, a request
/// with an unsafe method (anything but `GET`, `HEAD`, `OPTIONS`, `TRACE`) whose token came from
/// the **cookie** must either carry the custom header (a cross-site page cannot set one without
/// a CORS preflight) or an `Origin` header that is allowed. Otherwise the extractors reject it
/// with 403 `Cross-site request rejected`, without a query. Header-authenticated requests are
/// not subject to it: browsers never attach those tokens on their own.
///
/// An `Origin` is allowed when it is in [`allowed_origins`](Self::allowed_origins), or, when
/// that list is empty, when it names the request's own `Host` (`http://host` or `https://host`).
///
/// ```
/// use tower_session_auth::{CsrfConfig, SessionConfig};
///
/// let config = SessionConfig::default()
///     .csrf(Some(CsrfConfig::default().allowed_origin("https://app.example.com")));
/// ```
#[derive(Clone, Debug)]
pub struct CsrfConfig {
    /// Origins (`scheme://host[:port]`) allowed to send unsafe cookie-authenticated requests.
    /// Empty: only the request's own host.
    pub allowed_origins: Vec<String>,
    /// A header whose presence proves a same-origin script sent the request (default
    /// `X-Requested-With`); `None` accepts only a matching `Origin`.
    pub header: Option<HeaderName>,
}

impl Default for CsrfConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            header: Some(HeaderName::from_static("x-requested-with")),
        }
    }
}

impl CsrfConfig {
    /// Adds an allowed origin.
    pub fn allowed_origin(mut self, origin: impl Into<String>) -> Self {
        self.allowed_origins.push(origin.into());
        self
    }

    /// Sets the custom header (`None`: require a matching `Origin`).
    pub fn header(mut self, header: Option<HeaderName>) -> Self {
        self.header = header;
        self
    }

    /// Whether an unsafe request with these headers passes the check.
    pub fn allows(&self, headers: &http::HeaderMap) -> bool {
        if let Some(name) = &self.header {
            if headers.contains_key(name) {
                return true;
            }
        }
        let Some(origin) = headers
            .get(http::header::ORIGIN)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        if self.allowed_origins.is_empty() {
            let host = headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok());
            let origin_host = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            return host.is_some() && origin_host == host;
        }
        self.allowed_origins.iter().any(|allowed| allowed == origin)
    }
}

/// Attributes of the session cookie. `HttpOnly` is always set and `Domain` never is.
#[derive(Clone, Debug)]
pub struct CookieConfig {
    /// Cookie name (default `id`). With [`CookieConfig::host_prefix`] the sent name is
    /// `__Host-` + this.
    pub name: String,
    /// Prefix the name with `__Host-`, which browsers accept only with `Secure`, `Path=/` and
    /// no `Domain`: the cookie is then bound to this exact host.
    pub host_prefix: bool,
    /// The `Secure` attribute (default true). Turn off only for plain-HTTP development.
    pub secure: bool,
    /// The `SameSite` attribute (default `Lax`).
    pub same_site: SameSite,
    /// The `Path` attribute (default `/`).
    pub path: String,
    /// A persistent cookie carries `Max-Age` (never beyond the session's server-side remaining
    /// lifetime); the default is a browser-session cookie without `Max-Age`.
    pub persistent: bool,
}

impl Default for CookieConfig {
    fn default() -> Self {
        Self {
            name: "id".to_owned(),
            host_prefix: false,
            secure: true,
            same_site: SameSite::Lax,
            path: "/".to_owned(),
            persistent: false,
        }
    }
}

impl CookieConfig {
    /// Sets the cookie name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Turns the `__Host-` prefix on (forces `Secure` and `Path=/`).
    pub fn host_prefix(mut self, on: bool) -> Self {
        self.host_prefix = on;
        if on {
            self.secure = true;
            self.path = "/".to_owned();
        }
        self
    }

    /// Sets the `Secure` attribute.
    pub fn secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// Sets the `SameSite` attribute.
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.same_site = same_site;
        self
    }

    /// Sets the `Path` attribute.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Makes the cookie persistent (with `Max-Age`).
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }

    /// The name as sent, with the `__Host-` prefix when enabled.
    pub fn full_name(&self) -> String {
        if self.host_prefix {
            format!("__Host-{}", self.name)
        } else {
            self.name.clone()
        }
    }
}
