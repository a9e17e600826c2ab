//! Where a request's credentials are: the token discovery the layer runs on each request
//! ([`find_token`]) and the cookie parsing behind it, exposed for custom middleware, tests
//! and fuzzing.

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE};

use crate::manager::{AUDIT_TARGET, SessionManager};
use crate::token::SessionToken;

/// Cookie header values longer than this (in total) are treated as carrying no token.
pub const MAX_COOKIE_HEADER: usize = 4096;

/// Where a request's token came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenSource {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// The configured extra header ([`SessionConfig::token_header`](crate::SessionConfig)).
    Header,
    /// The session cookie.
    Cookie,
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
/// use tower_session_auth::{MemoryStore, SessionConfig, SessionManager, credentials::TokenSource, credentials::find_token};
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
pub(crate) fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<Option<&'h [u8]>> {
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
    use http::HeaderValue;

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
