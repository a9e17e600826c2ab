//! Fuzzes token discovery (`find_token`) and strict parsing (`SessionToken::parse_bytes`).
//!
//! Input layout: the first byte holds flags, the rest is split on NUL (which no header value
//! can contain) into the `Authorization` value, the `X-Session-Token` value, and up to eight
//! `Cookie` values. Values that `http` refuses are skipped, as a server would never see them.
//!
//! | flag bit | meaning |
//! |---|---|
//! | 0 | send `Authorization` |
//! | 1 | send `X-Session-Token` |
//! | 2 | prefix `Authorization` with `Bearer ` |
//! | 3 | prefix each `Cookie` value with `id=` (the session cookie's name) |
//!
//! Invariants checked on every input:
//! - no panic, and the same headers always give the same answer;
//! - an accepted token is exactly 43 base64url characters, re-parses to itself, and occurs in
//!   a header of the source it is reported from;
//! - a Bearer-scheme `Authorization`, or else a present `X-Session-Token`, is the source
//!   (a malformed one never falls through to a later source);
//! - a token from the cookie is only accepted when the Cookie headers fit the size limit;
//! - `parse_bytes` on each raw value accepts exactly the canonical 43-character base64url
//!   spellings of 32 bytes, as the base64 crate decodes and re-encodes them.
#![no_main]

use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tower_session_auth::{
    credentials::MAX_COOKIE_HEADER, MemoryStore, SessionConfig, SessionManager, token::SessionToken, token::TOKEN_LEN,
    credentials::TokenSource, credentials::find_token,
};

const TOKEN_HEADER: &str = "x-session-token";
const MAX_COOKIE_HEADERS: usize = 8;

static MANAGER: LazyLock<SessionManager> = LazyLock::new(|| {
    let config = SessionConfig::default().token_header(Some(HeaderName::from_static(TOKEN_HEADER)));
    SessionManager::new(MemoryStore::new(), config)
});

fn is_base64url(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'
}

/// The reference for strict parsing: 43 base64url bytes that decode to 32 bytes and re-encode
/// to the same text.
fn canonical(bytes: &[u8]) -> bool {
    bytes.len() == TOKEN_LEN
        && bytes.iter().all(|b| is_base64url(*b))
        && URL_SAFE_NO_PAD.decode(bytes).is_ok_and(|decoded| {
            decoded.len() == 32 && URL_SAFE_NO_PAD.encode(&decoded).as_bytes() == bytes
        })
}

fn scheme_is_bearer(value: &[u8]) -> bool {
    let end = value.iter().position(|b| *b == b' ').unwrap_or(value.len());
    value[..end].eq_ignore_ascii_case(b"bearer")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn with_prefix(prefix: &[u8], on: bool, value: &[u8]) -> Vec<u8> {
    if on {
        [prefix, value].concat()
    } else {
        value.to_vec()
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.split(|b| *b == 0);
    let raw_authorization = parts.next().unwrap_or_default();
    let raw_token_header = parts.next().unwrap_or_default();
    let raw_cookies: Vec<&[u8]> = parts.take(MAX_COOKIE_HEADERS).collect();

    for raw in [raw_authorization, raw_token_header]
        .into_iter()
        .chain(raw_cookies.iter().copied())
    {
        let parsed = SessionToken::parse_bytes(raw);
        assert_eq!(parsed.is_some(), canonical(raw), "parse_bytes({raw:?})");
        if let Some(token) = parsed {
            assert_eq!(token.expose().as_bytes(), raw);
        }
    }

    let authorization = (flags & 1 != 0)
        .then(|| with_prefix(b"Bearer ", flags & 4 != 0, raw_authorization))
        .and_then(|bytes| HeaderValue::from_bytes(&bytes).ok());
    let token_header = (flags & 2 != 0)
        .then(|| HeaderValue::from_bytes(raw_token_header).ok())
        .flatten();
    let cookies: Vec<HeaderValue> = raw_cookies
        .iter()
        .filter_map(|raw| HeaderValue::from_bytes(&with_prefix(b"id=", flags & 8 != 0, raw)).ok())
        .collect();

    let mut headers = HeaderMap::new();
    if let Some(value) = &authorization {
        headers.insert(http::header::AUTHORIZATION, value.clone());
    }
    if let Some(value) = &token_header {
        headers.insert(TOKEN_HEADER, value.clone());
    }
    for value in &cookies {
        headers.append(http::header::COOKIE, value.clone());
    }

    let found = find_token(&MANAGER, &headers);
    assert_eq!(found, find_token(&MANAGER, &headers), "not deterministic");

    let bearer = authorization
        .as_ref()
        .is_some_and(|value| scheme_is_bearer(value.as_bytes()));
    let source = found.as_ref().map(|(source, _)| *source);
    if bearer {
        assert_eq!(source, Some(TokenSource::Bearer));
    } else if token_header.is_some() {
        assert_eq!(source, Some(TokenSource::Header));
    } else if cookies.is_empty() {
        assert_eq!(source, None);
    }

    if let Some((source, Some(token))) = &found {
        let text = token.expose().as_bytes();
        assert_eq!(text.len(), TOKEN_LEN);
        assert!(text.iter().all(|b| is_base64url(*b)));
        assert_eq!(SessionToken::parse(token.expose()).as_ref(), Some(token));
        let taken_from: Vec<&HeaderValue> = match source {
            TokenSource::Bearer => authorization.iter().collect(),
            TokenSource::Header => token_header.iter().collect(),
            TokenSource::Cookie => cookies.iter().collect(),
        };
        assert!(
            taken_from
                .iter()
                .any(|value| contains(value.as_bytes(), text))
        );
        if *source == TokenSource::Cookie {
            let total: usize = cookies.iter().map(|value| value.len() + 2).sum();
            assert!(
                total <= MAX_COOKIE_HEADER + 2,
                "oversized Cookie headers yielded a token"
            );
        }
    }
});
