//! [`SessionConfig`]: expiry, debounce, cookie and limits, and their defaults.

use std::num::NonZeroU32;
use std::time::Duration;

use cookie::SameSite;
use http::HeaderName;

/// How sessions expire, how the token travels, and how many a user may hold.
///
/// Defaults: an idle TTL of 480 minutes with sliding expiration,
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
#[non_exhaustive]
pub struct SessionConfig {
    /// Idle TTL. `None` disables idle expiry .
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
    /// How recent a password entry [`RecentAuth`](crate::RecentAuth) requires (default 10
    /// minutes): a session counts as recently authenticated when its `authenticated_at` is
    /// younger than this and it was not made by a remember-me refresh since.
    pub recent_auth_max_age: Duration,
    /// The route where a client re-authenticates, named in the `reauthenticate` field of the
    /// `403 Recent authentication required` body (default `None`: the field is left out).
    pub reauthenticate_route: Option<String>,
    /// Rows per statement of [`purge_expired`](crate::SessionManager::purge_expired) and the
    /// sweeper: each batch is a short statement of its own, so that a mass expiry never holds
    /// locks or a connection for long.
    pub purge_batch_size: NonZeroU32,
    /// The pause between two batches of a purge (default 2 ms): the purge leaves the
    /// database to the requests beside it for that long after each batch, so that a mass
    /// expiry costs their latency little, at the price of a longer purge. Zero purges
    /// without a pause.
    pub purge_pause: Duration,
}

/// The default [`SessionConfig::purge_batch_size`].
const DEFAULT_PURGE_BATCH_SIZE: NonZeroU32 = NonZeroU32::new(100).unwrap();
/// The default [`SessionConfig::purge_pause`].
const DEFAULT_PURGE_PAUSE: Duration = Duration::from_millis(2);

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
            recent_auth_max_age: Duration::from_secs(10 * 60),
            reauthenticate_route: None,
            purge_batch_size: DEFAULT_PURGE_BATCH_SIZE,
            purge_pause: DEFAULT_PURGE_PAUSE,
        }
    }
}

/// A configuration value the crate cannot work with, found when the
/// [`SessionManager`](crate::SessionManager) is built ([`SessionConfig::validate`]), or a
/// connection string [`PgStore::connect`](crate::PgStore::connect) cannot use (fields `url`,
/// `sslmode`, `sslrootcert`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid session configuration: {field}: {problem}")]
#[non_exhaustive]
pub struct ConfigError {
    /// The setting, e.g. `cookie.path` or `idle_timeout`.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, problem: impl Into<String>) -> Self {
        Self {
            field,
            problem: problem.into(),
        }
    }
}

/// Whether `name` is a cookie name browsers and servers agree on (an RFC 6265 token).
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// Whether `origin` is one a browser sends: `http` or `https`, a host, an optional port, and
/// nothing else, in lower case (browsers serialise origins that way).
fn check_origin(origin: &str) -> Result<(), ConfigError> {
    let well_formed = origin.split_once("://").is_some_and(|(scheme, authority)| {
        matches!(scheme, "http" | "https")
            && !authority.is_empty()
            && !authority.contains(['/', '?', '#', '@'])
            && authority.parse::<http::uri::Authority>().is_ok()
    });
    if well_formed && origin == origin.to_ascii_lowercase() {
        Ok(())
    } else {
        Err(ConfigError::new(
            "csrf.allowed_origins",
            format!("{origin:?} is not an origin (scheme://host[:port], lower case, no path)"),
        ))
    }
}

/// Whether `path` can be a cookie's `Path` attribute: starts with `/`, visible ASCII, no `;`.
fn is_cookie_path(path: &str) -> bool {
    path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic() && b != b';')
}

impl SessionConfig {
    /// The longest duration any setting accepts (100 years): longer ones would overflow the
    /// date arithmetic of expiry times.
    pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

    /// Checks the settings that could otherwise fail at request time: every duration at most
    /// [`MAX_DURATION`](Self::MAX_DURATION), cookie names that are RFC 6265 tokens, cookie
    /// paths that start with `/` and hold no `;` or control characters, and with
    /// [`CookieConfig::host_prefix`] a `Secure` cookie with `Path=/` (browsers drop a
    /// `__Host-` cookie otherwise). [`SessionManager::try_new`](crate::SessionManager::try_new)
    /// calls it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_session_auth::{CookieConfig, SessionConfig};
    ///
    /// assert!(SessionConfig::default().validate().is_ok());
    /// let forever = SessionConfig::default().idle_timeout(Some(Duration::MAX));
    /// assert_eq!(forever.validate().unwrap_err().field, "idle_timeout");
    /// let insecure = SessionConfig::default()
    ///     .cookie(CookieConfig::default().host_prefix(true).secure(false));
    /// assert_eq!(insecure.validate().unwrap_err().field, "cookie.secure");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        let durations = [
            ("idle_timeout", self.idle_timeout),
            ("absolute_lifetime", self.absolute_lifetime),
            ("touch_interval", Some(self.touch_interval)),
            ("refresh.idle_timeout", self.refresh.idle_timeout),
            ("refresh.absolute_lifetime", self.refresh.absolute_lifetime),
            ("refresh.grace", Some(self.refresh.grace)),
        ];
        for (field, duration) in durations {
            if duration.is_some_and(|duration| duration > Self::MAX_DURATION) {
                return Err(ConfigError::new(
                    field,
                    "longer than SessionConfig::MAX_DURATION (100 years); use None for no limit",
                ));
            }
        }
        let cookie = &self.cookie;
        let names = [
            ("cookie.name", &cookie.name),
            ("refresh.cookie_name", &self.refresh.cookie_name),
        ];
        for (field, name) in names {
            if !is_cookie_name(name) {
                return Err(ConfigError::new(
                    field,
                    format!("{name:?} is not a valid cookie name"),
                ));
            }
        }
        let paths = [
            ("cookie.path", &cookie.path),
            ("refresh.cookie_path", &self.refresh.cookie_path),
        ];
        for (field, path) in paths {
            if !is_cookie_path(path) {
                return Err(ConfigError::new(
                    field,
                    format!("{path:?} is not a valid cookie path"),
                ));
            }
        }
        if let Some(csrf) = &self.csrf {
            for origin in &csrf.allowed_origins {
                check_origin(origin)?;
            }
        }
        if cookie.host_prefix && !cookie.secure {
            return Err(ConfigError::new(
                "cookie.secure",
                "a __Host- cookie must be Secure",
            ));
        }
        if cookie.host_prefix && cookie.path != "/" {
            return Err(ConfigError::new(
                "cookie.path",
                "a __Host- cookie must have Path=/",
            ));
        }
        Ok(())
    }

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

    /// Sets how many expired sessions each statement of the purge deletes (100 by default).
    pub fn purge_batch_size(mut self, size: NonZeroU32) -> Self {
        self.purge_batch_size = size;
        self
    }

    /// Sets the pause between two batches of a purge (2 ms by default; zero for none).
    pub fn purge_pause(mut self, pause: Duration) -> Self {
        self.purge_pause = pause;
        self
    }

    /// Turns the cross-site request check on (`Some`) or off (`None`, the default).
    pub fn csrf(mut self, csrf: Option<CsrfConfig>) -> Self {
        self.csrf = csrf;
        self
    }

    /// Sets how recent a password entry [`RecentAuth`](crate::RecentAuth) requires.
    pub fn recent_auth_max_age(mut self, max_age: Duration) -> Self {
        self.recent_auth_max_age = max_age;
        self
    }

    /// Names the re-authentication route (e.g. `/reauthenticate`) in
    /// `403 Recent authentication required` bodies.
    pub fn reauthenticate_route(mut self, route: impl Into<String>) -> Self {
        self.reauthenticate_route = Some(route.into());
        self
    }
}

/// Remember-me: a long-lived refresh series that trades its rotating secret for new sessions.
///
/// A login with `remember = true` also returns a [`RefreshToken`](crate::token::RefreshToken) and
/// sets it in its own cookie (`HttpOnly`, `Secure` as the session cookie, `SameSite=Strict`,
/// `Path` limited to the refresh route, `Max-Age` the series' remaining lifetime). A refresh
/// token is `<series id>.<secret>`; the series id is public (it appears in logs and `Debug`),
/// only the secret proves anything, and the store keeps only its SHA-256.
///
/// # The family rules
///
/// Each secret a series issues goes through these states (a refresh presents one):
///
/// ```text
///                 present                present again, within `grace`
///   ┌────────┐    (exchange)   ┌──────┐  of the first use (grace use)   ┌───────┐
///   │ issued │ ──────────────▶ │ used │ ──────────────────────────────▶ │ spent │
///   └────────┘                 └──────┘                                 └───────┘
///       │                          │ present after `grace`               │     │ present within
///       │ never presented:         ▼                                     │     │ `grace`: Invalid,
///       │ valid, never reuse     REUSE: the series and all ◀─────────────┘     │ nothing changes
///       ▼                        its sessions end     present after `grace`    ▼
///   forgotten once 8 newer secrets of the series exist: Invalid
///
///   Every exchange and grace use creates a session and issues a new secret (`issued`).
///   A secret the series never issued, an unknown series: Invalid, nothing changes.
///   An expired series, or one whose user is gone or inactive: Invalid; when a secret it
///   issued is presented, the series and its sessions are deleted.
/// ```
///
/// So a superseded secret is honoured at most once more, inside [`grace`](Self::grace) of its
/// first use; a secret the server issued (including by that second use) and nobody used never
/// counts as reuse; and two tabs refreshing at once never revoke the family, whichever
/// response the browser keeps (both new secrets are unused). Only a secret that was already
/// exchanged, presented after the window, proves that two parties hold it. A series remembers
/// its 8 most recently issued secrets; an older one is invalid, not reuse.
///
/// **One device, one session.** A refresh ends the sessions the series created before, except
/// that a second use inside the grace window keeps the session of the first use (two tabs:
/// at most two sessions, until the next refresh). A session made by a refresh keeps the
/// original login time as `authenticated_at`, so handlers can ask for a fresh login before
/// sensitive changes, and never outlives the series: its absolute expiry is capped by the
/// series' [`absolute_lifetime`](Self::absolute_lifetime), and every revocation of a session
/// of the series (logout, revoke one / others / all, an administrator's kick, pruning by
/// `max_sessions_per_user`) ends the series and all its sessions, including one that a
/// refresh racing the revocation creates.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RefreshConfig {
    /// The series ends when unused for this long (default 30 days); `None` disables it.
    pub idle_timeout: Option<Duration>,
    /// The series ends this long after the login (default 90 days); `None` disables it.
    pub absolute_lifetime: Option<Duration>,
    /// For this long after a secret's first use, it is accepted once more, so two tabs or a
    /// retried request do not raise a false alarm (default 5 s).
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
/// with an unsafe method (anything but `GET`, `HEAD`, `OPTIONS`, `TRACE`) that acts on a cookie
/// must pass [`allows`](Self::allows), or it is rejected with 403 `Cross-site request
/// rejected` before anything changes: the extractors check requests whose token came from the
/// **cookie**, and the [`Session`](crate::Session) handle checks a login that would set a
/// cookie, a logout that would clear one, and a refresh by the refresh cookie.
/// Header-authenticated requests are not subject to it: browsers never attach those tokens on
/// their own.
///
/// A WebSocket upgrade (`GET` with `Upgrade: websocket`) that authenticates by cookie is
/// always checked by this rule, with `CsrfConfig::default()` when
/// [`SessionConfig::csrf`] is `None`: browsers send cookies with cross-site handshakes.
///
/// The rule, first match wins:
/// 1. An `Origin` header decides on its own: allowed when it is in
///    [`allowed_origins`](Self::allowed_origins), or, when that list is empty, when it names
///    the request's own host (the URI's authority, as HTTP/2 sends it, else the `Host`
///    header; with the scheme of the URI when it has one) and `Sec-Fetch-Site`, when sent,
///    does not say otherwise (the request's scheme is unknown behind a TLS-terminating proxy,
///    so `http://host` matches the host; the browser then sends `same-site` or `cross-site`).
///    Any other origin, `null` included, is rejected even if the custom header is present.
/// 2. Else `Sec-Fetch-Site` decides: `same-origin` and `none` (a navigation the user started)
///    pass, `same-site` and `cross-site` are rejected.
/// 3. Else the custom [`header`](Self::header) passes (a cross-site page cannot set one
///    without a CORS preflight); without it the request is rejected.
///
/// ```
/// use tower_session_auth::{CsrfConfig, SessionConfig};
///
/// let config = SessionConfig::default()
///     .csrf(Some(CsrfConfig::default().allowed_origin("https://app.example.com")?));
/// # Ok::<(), tower_session_auth::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CsrfConfig {
    /// Origins (`scheme://host[:port]`) allowed to send unsafe cookie-authenticated requests.
    /// Empty: only the request's own host.
    pub allowed_origins: Vec<String>,
    /// A header whose presence proves a same-origin script sent the request (default
    /// `X-Requested-With`), when neither `Origin` nor `Sec-Fetch-Site` is sent; `None` accepts
    /// only those two.
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
    /// Adds an allowed origin, `scheme://host[:port]` as browsers send it in `Origin` (no
    /// path, no trailing `/`, lower case), or the [`ConfigError`] of one that no browser would
    /// ever send, which would silently allow nothing.
    ///
    /// ```
    /// use tower_session_auth::CsrfConfig;
    ///
    /// assert!(CsrfConfig::default().allowed_origin("https://app.example:8443").is_ok());
    /// assert!(CsrfConfig::default().allowed_origin("https://app.example/").is_err());
    /// ```
    pub fn allowed_origin(mut self, origin: impl Into<String>) -> Result<Self, ConfigError> {
        let origin = origin.into();
        check_origin(&origin)?;
        self.allowed_origins.push(origin);
        Ok(self)
    }

    /// Sets the custom header (`None`: require `Origin` or `Sec-Fetch-Site`).
    pub fn header(mut self, header: Option<HeaderName>) -> Self {
        self.header = header;
        self
    }

    /// Whether an unsafe request to `uri` with these headers passes the check (the rule is in
    /// the type's docs).
    ///
    /// ```
    /// use tower_session_auth::CsrfConfig;
    ///
    /// let csrf = CsrfConfig::default();
    /// let uri: http::Uri = "https://game.example/logout".parse().unwrap(); // HTTP/2
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert("origin", "https://game.example".parse().unwrap());
    /// assert!(csrf.allows(&uri, &headers));
    /// headers.insert("origin", "https://evil.example".parse().unwrap());
    /// headers.insert("x-requested-with", "fetch".parse().unwrap());
    /// assert!(!csrf.allows(&uri, &headers));
    /// ```
    pub fn allows(&self, uri: &http::Uri, headers: &http::HeaderMap) -> bool {
        let same_origin_by_fetch = headers
            .get("sec-fetch-site")
            .map(|site| matches!(site.as_bytes(), b"same-origin" | b"none"));
        if let Some(origin) = headers.get(http::header::ORIGIN) {
            return origin
                .to_str()
                .is_ok_and(|origin| self.origin_allowed(origin, uri, headers))
                // The own-host comparison cannot see the scheme behind a TLS-terminating
                // proxy (`http://host` to `https://host`): the browser's own verdict counts.
                && (!self.allowed_origins.is_empty() || same_origin_by_fetch != Some(false));
        }
        if let Some(same_origin) = same_origin_by_fetch {
            return same_origin;
        }
        self.header
            .as_ref()
            .is_some_and(|name| headers.contains_key(name))
    }

    fn origin_allowed(&self, origin: &str, uri: &http::Uri, headers: &http::HeaderMap) -> bool {
        if !self.allowed_origins.is_empty() {
            return self.allowed_origins.iter().any(|allowed| allowed == origin);
        }
        let Some((scheme, origin_host)) = origin.split_once("://") else {
            return false;
        };
        let scheme_ok = match uri.scheme_str() {
            Some(own) => own.eq_ignore_ascii_case(scheme),
            None => scheme == "http" || scheme == "https",
        };
        let own_host = match uri.authority() {
            // HTTP/2 and absolute-form requests carry the authority in the URI.
            Some(authority) => authority.as_str().rsplit('@').next(),
            None => headers
                .get(http::header::HOST)
                .and_then(|host| host.to_str().ok()),
        };
        scheme_ok && own_host.is_some_and(|own| own.eq_ignore_ascii_case(origin_host))
    }
}

/// Attributes of the session cookie. `HttpOnly` is always set and `Domain` never is.
#[derive(Clone, Debug)]
#[non_exhaustive]
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

    /// Turns the `__Host-` prefix on (sets `Secure` and `Path=/`). Changing either afterwards
    /// makes the configuration invalid ([`SessionConfig::validate`]): browsers drop such a
    /// cookie.
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
