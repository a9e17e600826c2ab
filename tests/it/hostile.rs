//! Hostile input: what the session layer does with tokens and headers crafted to confuse it.
//!
//! Every case runs through the real axum router (`tower::ServiceExt::oneshot`) in front of a
//! real PostgreSQL store. The store is wrapped in `common::store::InstrumentedStore`,
//! which delegates each `SessionStore` method to the real `PgStore` and records the call, so
//! "zero statements" is measured, not mocked. A snapshot of the `sessions`, `users` and
//! `characters` tables (row count, latest `last_activity`, digest of every row) is compared
//! before and after.
//!
//! Proven here, each for `Authorization: Bearer`, the `X-Session-Token` header and the `id`
//! cookie alike, and each answered `401 {"detail": "Invalid or expired session"}` with
//! `WWW-Authenticate: Bearer`, no store call and no change in the database:
//!
//! - an empty token, and `Authorization: Bearer` with no token at all;
//! - 42 and 44 characters (prefixes and extensions of a live session's token);
//! - characters outside base64url, and non-canonical spellings of a live token's bytes;
//! - control bytes: `http` refuses NUL, CR, LF, DEL and the rest in header values, and the one
//!   it lets through (TAB) is rejected;
//! - percent-encoded tokens, fully or in part;
//! - a Cookie header over `MAX_COOKIE_HEADER` (8 KB, and one byte over the limit) that carries
//!   a live session's token counts as no token, while one exactly at the limit still works;
//! - the session cookie sent more than once, even twice with the same live token;
//! - SQL metacharacters (`' OR '1'='1`, `;--`, …) padded to exactly 43 characters;
//! - bytes that are not UTF-8 (obs-text), and 43-byte values with non-ASCII characters;
//! - precedence: a malformed Bearer or `X-Session-Token` never falls back to a valid cookie
//!   (or a valid `X-Session-Token`).
//!
//! The one case that legitimately queries: a well-formed token of a deleted session (or one
//! never issued) is `401` after exactly one store call, and creates no row.
//!
//! Each test first shows its control: the live token, sent through the same source, is `200`
//! after one store call that visibly touches the session row, so neither the counter nor the
//! snapshot can pass vacuously.
//!
//! Property tests (proptest) over `find_token` and `SessionToken::parse`: arbitrary bytes in
//! `Authorization`, `X-Session-Token` and `Cookie` never panic; an accepted token is 43
//! base64url characters, re-parses to itself and was taken from the request; a Bearer scheme
//! never falls through; a valid token hidden in a random cookie list is always found (and a
//! duplicated one always refused); and `SessionToken::parse` accepts a string iff it is 43
//! characters of `[A-Za-z0-9_-]` that the base64 crate decodes canonically to 32 bytes.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Request, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::app::{Reply, login, router, send};
use common::store::InstrumentedStore;
use common::{Backend, TestDb};
use proptest::prelude::*;
use tower_session_auth::{
    MemoryStore, SessionConfig, SessionManager, credentials::MAX_COOKIE_HEADER,
    credentials::TokenSource, credentials::find_token, test_util::ManualClock, token::SessionToken,
    token::TOKEN_LEN,
};

const TOKEN_HEADER: &str = "x-session-token";
const SECOND: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// Requests and the fixture.
// ---------------------------------------------------------------------------------------------

type Headers = Vec<(HeaderName, HeaderValue)>;

/// A header value; panics if `http` refuses the bytes (hostile cases must reach the layer).
fn value(bytes: impl AsRef<[u8]>) -> HeaderValue {
    let bytes = bytes.as_ref();
    HeaderValue::from_bytes(bytes).unwrap_or_else(|_| {
        panic!(
            "http refuses this header value: {:?}",
            String::from_utf8_lossy(bytes)
        )
    })
}

fn header(name: &'static str, bytes: impl AsRef<[u8]>) -> (HeaderName, HeaderValue) {
    (HeaderName::from_static(name), value(bytes))
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// One header carrying `token` through each of the three sources.
fn via_every_source(token: &[u8]) -> Vec<(&'static str, Headers)> {
    vec![
        (
            "Authorization: Bearer",
            vec![header("authorization", concat(&[b"Bearer ", token]))],
        ),
        ("X-Session-Token", vec![header(TOKEN_HEADER, token)]),
        ("Cookie", vec![header("cookie", concat(&[b"id=", token]))]),
    ]
}

fn request(path: &str, headers: &[(HeaderName, HeaderValue)]) -> Request<Body> {
    let mut request = Request::get(path).body(Body::empty()).unwrap();
    for (name, value) in headers {
        request.headers_mut().append(name.clone(), value.clone());
    }
    request
}

/// What the database holds: compared before and after each hostile request.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    sessions: i64,
    latest_activity: String,
    sessions_digest: String,
    users_digest: String,
    characters_digest: String,
}

const SNAPSHOT_SQL: &str = "SELECT \
    (SELECT count(*) FROM sessions), \
    (SELECT coalesce(max(last_activity)::text, '') FROM sessions), \
    (SELECT coalesce(md5(string_agg(s::text, '|' ORDER BY s.id)), '') FROM sessions s), \
    (SELECT coalesce(md5(string_agg(u::text, '|' ORDER BY u.id)), '') FROM users u), \
    (SELECT coalesce(md5(string_agg(c::text, '|' ORDER BY c.id)), '') FROM characters c)";

/// A PostgreSQL schema with the demo users, a counting store behind the test router, and one
/// live session of user 1 (`player`).
///
/// The touch interval is zero and the clock moves one second before each request, so any
/// validation of a live session writes `last_activity`: a query that found the session could
/// not hide from the snapshot.
struct Fixture {
    _backend: Backend,
    db: Arc<TestDb>,
    clock: Arc<ManualClock>,
    store: InstrumentedStore,
    app: Router,
    /// The token of user 1's live session.
    token: String,
}

impl Fixture {
    async fn new() -> Self {
        let backend = Backend::pg().await;
        let Backend::Pg(db) = &backend else {
            unreachable!("Backend::pg is on PostgreSQL")
        };
        let db = db.clone();
        let store = InstrumentedStore::new(db.store.clone());
        let store_handle = store.clone();
        let clock = Arc::new(ManualClock::default());
        let config = SessionConfig::default()
            .touch_interval(Duration::ZERO)
            .token_header(Some(HeaderName::from_static(TOKEN_HEADER)));
        let manager = SessionManager::new(store, config).with_clock(clock.clone());
        let app = router(manager);
        let fixture = Self {
            _backend: backend,
            db,
            clock,
            store: store_handle,
            app,
            token: String::new(),
        };
        let (token, _, _) = login(&fixture.app, 1).await;
        assert_eq!(fixture.take_calls(), ["create"]);
        Self { token, ..fixture }
    }

    fn take_calls(&self) -> Vec<&'static str> {
        self.store.take_calls()
    }

    async fn snapshot(&self) -> Snapshot {
        let row = self
            .db
            .client()
            .await
            .query_one(SNAPSHOT_SQL, &[])
            .await
            .expect("snapshot query (are the tables still there?)");
        Snapshot {
            sessions: row.get(0),
            latest_activity: row.get(1),
            sessions_digest: row.get(2),
            users_digest: row.get(3),
            characters_digest: row.get(4),
        }
    }

    async fn sessions_with_token(&self, token: &SessionToken) -> i64 {
        self.db
            .client()
            .await
            .query_one(
                "SELECT count(*) FROM sessions WHERE token_hash = $1",
                &[&token.hash().as_bytes().as_slice()],
            )
            .await
            .unwrap()
            .get(0)
    }

    /// Starts a measured step: the clock moves (so a touch would show), the record is cleared.
    async fn begin(&self) -> Snapshot {
        self.clock.advance(SECOND);
        self.take_calls();
        self.snapshot().await
    }

    /// The control: these headers authenticate as `player` with one store call, and that call
    /// visibly writes the session row.
    async fn assert_authenticates(&self, label: &str, headers: &[(HeaderName, HeaderValue)]) {
        let before = self.begin().await;
        let reply = send(&self.app, request("/me", headers)).await;
        assert_eq!(reply.status, StatusCode::OK, "{label}: {:?}", reply.body);
        assert_eq!(reply.body["username"], "player", "{label}");
        assert_eq!(self.take_calls(), ["validate(user)"], "{label}");
        let after = self.snapshot().await;
        assert_eq!(after.sessions, before.sessions, "{label}");
        assert_ne!(
            after.latest_activity, before.latest_activity,
            "{label}: a validation that finds the session must show in the snapshot"
        );
    }

    /// The hostile case: every guarded route answers 401 `Invalid or expired session`,
    /// `Option<AuthUser>` sees nobody, the store is never called and the database is unchanged.
    async fn assert_rejected_without_query(
        &self,
        label: &str,
        headers: &[(HeaderName, HeaderValue)],
    ) {
        let before = self.begin().await;
        for path in ["/me", "/logs", "/game", "/admin-area"] {
            let reply = send(&self.app, request(path, headers)).await;
            assert_invalid_session(&format!("{label} on {path}"), &reply);
        }
        let reply = send(&self.app, request("/optional", headers)).await;
        assert_eq!(reply.status, StatusCode::OK, "{label}: {:?}", reply.body);
        assert!(
            reply.body["username"].is_null(),
            "{label}: {:?}",
            reply.body
        );
        assert!(reply.headers.get("set-cookie").is_none(), "{label}");
        assert_eq!(
            self.take_calls(),
            Vec::<&str>::new(),
            "{label}: the store was called"
        );
        assert_eq!(
            self.snapshot().await,
            before,
            "{label}: the database changed"
        );
    }

    /// A well-formed token that matches no session: 401 after exactly one store call, and
    /// nothing changes.
    async fn assert_rejected_after_one_query(
        &self,
        label: &str,
        headers: &[(HeaderName, HeaderValue)],
    ) {
        let before = self.begin().await;
        let reply = send(&self.app, request("/me", headers)).await;
        assert_invalid_session(label, &reply);
        assert_eq!(self.take_calls(), ["validate(user)"], "{label}");
        assert_eq!(
            self.snapshot().await,
            before,
            "{label}: the database changed"
        );
    }

    /// The live token authenticates through each source: the control of most tests.
    async fn assert_live_token_works_everywhere(&self) {
        for (source, headers) in via_every_source(self.token.as_bytes()) {
            self.assert_authenticates(&format!("live token via {source}"), &headers)
                .await;
        }
    }

    /// `token` is rejected without a query through each of the three sources.
    async fn assert_token_rejected_everywhere(&self, label: &str, token: &[u8]) {
        for (source, headers) in via_every_source(token) {
            self.assert_rejected_without_query(&format!("{label} via {source}"), &headers)
                .await;
        }
    }
}

/// The 401 with its headers, and no cookie set.
fn assert_invalid_session(label: &str, reply: &Reply) {
    reply.assert_invalid_session(label);
    assert_eq!(reply.headers["www-authenticate"], "Bearer", "{label}");
    assert_eq!(reply.headers["content-type"], "application/json", "{label}");
    assert!(reply.headers.get("set-cookie").is_none(), "{label}");
}

/// `text` with its byte at `at` replaced by `with`.
fn replace_byte(text: &str, at: usize, with: &[u8]) -> Vec<u8> {
    concat(&[&text.as_bytes()[..at], with, &text.as_bytes()[at + 1..]])
}

fn is_base64url(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The other three spellings of `token`: the last character with its two unused bits set.
/// They decode, leniently, to the very same 32 bytes.
fn non_canonical_spellings(token: &str) -> Vec<String> {
    let last = token.as_bytes()[TOKEN_LEN - 1];
    let index = ALPHABET.iter().position(|c| *c == last).unwrap();
    assert_eq!(
        index & 0b11,
        0,
        "a canonical token leaves the low bits clear"
    );
    (1..4)
        .map(|bits| {
            let mut text = token[..TOKEN_LEN - 1].to_owned();
            text.push(ALPHABET[index | bits] as char);
            text
        })
        .collect()
}

fn percent_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Hostile requests, through the router, against PostgreSQL.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_token_is_401_without_a_query() {
    let fx = Fixture::new().await;
    fx.assert_live_token_works_everywhere().await;
    fx.assert_token_rejected_everywhere("empty token", b"")
        .await;
    fx.assert_token_rejected_everywhere("blank token", b"   ")
        .await;
    fx.assert_rejected_without_query("empty Cookie header", &[header("cookie", "")])
        .await;
    fx.assert_rejected_without_query("no headers at all", &[])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_without_a_token_is_401_without_a_query() {
    let fx = Fixture::new().await;
    fx.assert_authenticates(
        "control",
        &[header("authorization", format!("Bearer {}", fx.token))],
    )
    .await;
    for bearer in [
        "Bearer",
        "Bearer ",
        "Bearer      ",
        "bearer",
        "BEARER ",
        "bEaReR",
    ] {
        fx.assert_rejected_without_query(
            &format!("Authorization: {bearer:?}"),
            &[header("authorization", bearer)],
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_42_and_44_characters_are_401_without_a_query() {
    let fx = Fixture::new().await;
    fx.assert_live_token_works_everywhere().await;
    let live = fx.token.as_str();
    let cases = [
        ("42: the live token's prefix", live[..42].to_owned()),
        ("42: the live token's suffix", live[1..].to_owned()),
        ("44: the live token + 'A'", format!("{live}A")),
        ("44: 'A' + the live token", format!("A{live}")),
        ("44: the live token + '='", format!("{live}=")),
        ("45: the live token + '=='", format!("{live}==")),
        ("86: the live token twice", format!("{live}{live}")),
    ];
    for (label, token) in cases {
        assert_ne!(token.len(), TOKEN_LEN, "{label}");
        fx.assert_token_rejected_everywhere(label, token.as_bytes())
            .await;
    }
    // 43 bytes, the last one padding: the right length alone does not get a token in.
    let padded = format!("{}=", &live[..42]);
    assert_eq!(padded.len(), TOKEN_LEN);
    fx.assert_token_rejected_everywhere("42 + '='", padded.as_bytes())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn characters_outside_base64url_are_401_without_a_query() {
    let fx = Fixture::new().await;
    fx.assert_live_token_works_everywhere().await;
    // Standard base64's '+' and '/', padding, and other printable ASCII, each in place of one
    // character of the live token, so that the length is right and only the alphabet is wrong.
    for byte in b"+/=.~!*$:,@()[]{}<>?\"\\' `^|#&" {
        for at in [0, 21, TOKEN_LEN - 1] {
            let token = replace_byte(&fx.token, at, &[*byte]);
            assert_eq!(token.len(), TOKEN_LEN);
            fx.assert_token_rejected_everywhere(&format!("{:?} at {at}", *byte as char), &token)
                .await;
        }
    }
    // The live token's bytes in standard base64 (with padding, and without).
    let bytes = URL_SAFE_NO_PAD.decode(&fx.token).unwrap();
    let standard = base64::engine::general_purpose::STANDARD.encode(&bytes);
    fx.assert_token_rejected_everywhere("standard base64, padded", standard.as_bytes())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_canonical_spellings_of_a_live_token_are_401_without_a_query() {
    let fx = Fixture::new().await;
    fx.assert_live_token_works_everywhere().await;
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_encode_padding(false)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );
    let bytes = URL_SAFE_NO_PAD.decode(&fx.token).unwrap();
    for spelling in non_canonical_spellings(&fx.token) {
        assert_eq!(lenient.decode(&spelling).unwrap(), bytes, "same secret");
        fx.assert_token_rejected_everywhere(
            &format!("non-canonical {spelling}"),
            spelling.as_bytes(),
        )
        .await;
    }
}

#[test]
fn http_refuses_nul_and_control_bytes_in_header_values() {
    let token = SessionToken::generate();
    let token = token.expose();
    // Control: the unaltered token makes a valid value for each header.
    for (name, bytes) in [
        ("authorization", format!("Bearer {token}")),
        (TOKEN_HEADER, token.to_owned()),
        ("cookie", format!("id={token}")),
    ] {
        assert!(HeaderValue::from_bytes(bytes.as_bytes()).is_ok(), "{name}");
    }
    for byte in (0u8..0x20).filter(|b| *b != b'\t').chain([0x7f]) {
        for at in [0, 21, TOKEN_LEN - 1] {
            let hostile = replace_byte(token, at, &[byte]);
            for (name, bytes) in [
                ("authorization", concat(&[b"Bearer ", &hostile])),
                (TOKEN_HEADER, hostile.clone()),
                ("cookie", concat(&[b"id=", &hostile])),
            ] {
                assert!(
                    HeaderValue::from_bytes(&bytes).is_err(),
                    "byte {byte:#04x} at {at} in {name}"
                );
                assert!(
                    Request::get("/me")
                        .header(name, bytes)
                        .body(Body::empty())
                        .is_err(),
                    "a request with byte {byte:#04x} in {name} cannot be built"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tab_the_control_byte_http_allows_is_401_without_a_query() {
    let fx = Fixture::new().await;
    fx.assert_live_token_works_everywhere().await;
    let live = fx.token.as_str();
    for (label, token) in [
        ("tab in the middle", replace_byte(live, 21, b"\t")),
        (
            "tab in place of the last",
            replace_byte(live, TOKEN_LEN - 1, b"\t"),
        ),
        (
            "tab inserted",
            concat(&[&live.as_bytes()[..21], b"\t", &live.as_bytes()[21..]]),
        ),
        (
            "42 characters and a tab",
            concat(&[&live.as_bytes()[..42], b"\t"]),
        ),
    ] {
        fx.assert_token_rejected_everywhere(label, &token).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percent_encoded_tokens_are_401_without_a_query() {
    let fx = Fixture::new().await;
    fx.assert_live_token_works_everywhere().await;
    let live = fx.token.as_str();
    let cases = [
        ("fully percent-encoded", percent_encode(live.as_bytes())),
        (
            "first character percent-encoded",
            format!("{}{}", percent_encode(&live.as_bytes()[..1]), &live[1..]),
        ),
        (
            "43 characters ending in an escape",
            format!(
                "{}{}",
                &live[..40],
                percent_encode(&live.as_bytes()[40..41])
            ),
        ),
        ("43 characters ending in %00", format!("{}%00", &live[..40])),
        ("43 characters ending in %3B", format!("{}%3B", &live[..40])),
        ("encoded '+' and '/'", format!("{}%2B%2F", &live[..37])),
    ];
    for (label, token) in cases {
        fx.assert_token_rejected_everywhere(label, token.as_bytes())
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_cookie_header_counts_as_no_token() {
    let fx = Fixture::new().await;
    let live = fx.token.as_str();
    // A Cookie header of exactly the limit, carrying the live token, still authenticates ...
    let sized = |len: usize| {
        let tail = format!("; id={live}");
        let pad = "x".repeat(len - "pad=".len() - tail.len());
        let cookie = format!("pad={pad}{tail}");
        assert_eq!(cookie.len(), len);
        cookie
    };
    fx.assert_authenticates(
        "cookie header at the limit",
        &[header("cookie", sized(MAX_COOKIE_HEADER))],
    )
    .await;
    // ... one byte more, or 8 KB, and it carries no token at all.
    let eight_kb = "x".repeat(8 * 1024);
    let cases: Vec<(&str, Headers)> = vec![
        (
            "one byte over the limit",
            vec![header("cookie", sized(MAX_COOKIE_HEADER + 1))],
        ),
        ("8 KB", vec![header("cookie", sized(8 * 1024))]),
        (
            "8 KB of padding after the token",
            vec![header("cookie", format!("id={live}; pad={eight_kb}"))],
        ),
        (
            "8 KB around the token",
            vec![header(
                "cookie",
                format!("a={eight_kb}; id={live}; b={eight_kb}"),
            )],
        ),
        (
            "the token in one Cookie header, 8 KB in another",
            vec![
                header("cookie", format!("id={live}")),
                header("cookie", format!("pad={eight_kb}")),
            ],
        ),
        (
            "many small Cookie headers, over the limit in total",
            std::iter::once(header("cookie", format!("id={live}")))
                .chain((0..200).map(|i| header("cookie", format!("c{i}=xxxxxxxxxxxxxxxxxx"))))
                .collect(),
        ),
    ];
    for (label, headers) in cases {
        fx.assert_rejected_without_query(label, &headers).await;
    }
    // The session itself is untouched and still works.
    fx.assert_live_token_works_everywhere().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cookie_sent_more_than_once_is_401_without_a_query() {
    let fx = Fixture::new().await;
    let live = fx.token.as_str();
    let other_live = login(&fx.app, 2).await.0;
    fx.take_calls();
    // Control: similar names are other cookies, not duplicates.
    fx.assert_authenticates(
        "similar cookie names",
        &[header(
            "cookie",
            format!("ID=junk; Id=junk; xid=junk; idx=junk; id_=junk; id={live}; i=d"),
        )],
    )
    .await;
    let cases: Vec<(&str, Headers)> = vec![
        (
            "the same live token twice",
            vec![header("cookie", format!("id={live}; id={live}"))],
        ),
        (
            "the same live token twice, without spaces",
            vec![header("cookie", format!("id={live};id={live}"))],
        ),
        (
            "the same live token in two Cookie headers",
            vec![
                header("cookie", format!("id={live}")),
                header("cookie", format!("id={live}")),
            ],
        ),
        (
            "two live tokens",
            vec![header("cookie", format!("id={live}; id={other_live}"))],
        ),
        (
            "live token, then garbage",
            vec![header("cookie", format!("id={live}; id=garbage"))],
        ),
        (
            "garbage, then live token",
            vec![header("cookie", format!("id=garbage; id={live}"))],
        ),
        (
            "live token, then an empty value",
            vec![header("cookie", format!("id={live}; id="))],
        ),
        (
            "padded name",
            vec![header("cookie", format!("id={live}; id ={live}"))],
        ),
    ];
    for (label, headers) in cases {
        fx.assert_rejected_without_query(label, &headers).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_metacharacters_are_401_without_a_query() {
    let fx = Fixture::new().await;
    fx.assert_live_token_works_everywhere().await;
    let payloads = [
        "' OR '1'='1",
        "' OR 1=1 --",
        "';--",
        ";--",
        "'; DROP TABLE sessions;--",
        "'; DELETE FROM users;--",
        "\" OR \"\"=\"",
        "1; SELECT pg_sleep(5)",
        "' UNION SELECT token_hash FROM sessions--",
        "%' OR token_hash LIKE '%",
        "\\x00' OR TRUE--",
        "$1",
        "/*",
    ];
    for payload in payloads {
        // Padded with '*' to exactly 43 bytes: the length is right, the alphabet is not.
        let token = format!("{payload:*<43}");
        assert_eq!(token.len(), TOKEN_LEN, "{payload}");
        assert!(!token.bytes().all(is_base64url), "{payload}");
        fx.assert_token_rejected_everywhere(payload, token.as_bytes())
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_and_non_ascii_bytes_are_401_without_a_query() {
    let fx = Fixture::new().await;
    fx.assert_live_token_works_everywhere().await;
    let live = fx.token.as_str();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("0xff in the middle", replace_byte(live, 21, b"\xff")),
        ("0x80 first", replace_byte(live, 0, b"\x80")),
        (
            "Latin-1 e-acute last",
            replace_byte(live, TOKEN_LEN - 1, b"\xe9"),
        ),
        ("43 bytes of 0xff", vec![0xff; TOKEN_LEN]),
        (
            "overlong '/'",
            concat(&[&live.as_bytes()[..41], b"\xc0\xaf"]),
        ),
        (
            "UTF-8 e-acute: 43 bytes, 42 characters",
            concat(&[&live.as_bytes()[..41], "é".as_bytes()]),
        ),
        (
            "fullwidth 'A' (UTF-8): 43 bytes",
            concat(&[&live.as_bytes()[..40], "Ａ".as_bytes()]),
        ),
        (
            "live token's bytes with the high bit set",
            live.bytes().map(|b| b | 0x80).collect(),
        ),
    ];
    for (label, token) in cases {
        assert!(!token.iter().all(|b| is_base64url(*b)), "{label}");
        fx.assert_token_rejected_everywhere(label, &token).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bearer_or_header_never_falls_back_to_a_valid_cookie() {
    let fx = Fixture::new().await;
    let live = fx.token.as_str();
    let cookie = || header("cookie", format!("id={live}"));
    // Controls: the cookie alone works, and another Authorization scheme leaves it in charge.
    fx.assert_authenticates("cookie alone", &[cookie()]).await;
    fx.assert_authenticates(
        "Basic credentials and the cookie",
        &[header("authorization", "Basic dXNlcjpwYXNz"), cookie()],
    )
    .await;
    // A valid Bearer wins over a malformed cookie (precedence, not luck).
    fx.assert_authenticates(
        "valid Bearer, malformed cookie",
        &[
            header("authorization", format!("Bearer {live}")),
            header("cookie", "id=garbage"),
        ],
    )
    .await;
    let malformed_bearers = [
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        "Bearer garbage".to_owned(),
        format!("Bearer {}", &live[..42]),
        format!("Bearer {live}x"),
        format!("bearer {}", percent_encode(live.as_bytes())),
        format!("BEARER {live} {live}"),
        format!("Bearer {:*<43}", "' OR '1'='1"),
    ];
    for bearer in &malformed_bearers {
        fx.assert_rejected_without_query(
            &format!("{bearer:?} and a valid cookie"),
            &[header("authorization", bearer), cookie()],
        )
        .await;
        fx.assert_rejected_without_query(
            &format!("{bearer:?} and a valid X-Session-Token"),
            &[header("authorization", bearer), header(TOKEN_HEADER, live)],
        )
        .await;
    }
    for token in ["", "garbage", &live[..42], &format!("{live}=")] {
        fx.assert_rejected_without_query(
            &format!("X-Session-Token {token:?} and a valid cookie"),
            &[header(TOKEN_HEADER, token), cookie()],
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_of_a_deleted_session_is_401_after_one_query_and_creates_nothing() {
    let fx = Fixture::new().await;
    let (doomed, _, _) = login(&fx.app, 2).await;
    let doomed_token = SessionToken::parse(&doomed).unwrap();
    fx.take_calls();
    // Control: the session works before it is deleted.
    for (source, headers) in via_every_source(doomed.as_bytes()) {
        fx.begin().await;
        let reply = send(&fx.app, request("/me", &headers)).await;
        assert_eq!(reply.status, StatusCode::OK, "{source}: {:?}", reply.body);
        assert_eq!(reply.body["username"], "builder", "{source}");
        assert_eq!(fx.take_calls(), ["validate(user)"], "{source}");
    }
    fx.db
        .execute(
            "DELETE FROM sessions WHERE token_hash = $1",
            &[&doomed_token.hash().as_bytes().as_slice()],
        )
        .await;
    assert_eq!(fx.sessions_with_token(&doomed_token).await, 0);
    let never_issued = SessionToken::generate();
    for (label, token) in [
        ("deleted session", doomed.as_str()),
        ("never issued", never_issued.expose()),
    ] {
        for (source, headers) in via_every_source(token.as_bytes()) {
            fx.assert_rejected_after_one_query(&format!("{label} via {source}"), &headers)
                .await;
        }
        // Presented by Bearer, it does not fall back to the live cookie either.
        fx.assert_rejected_after_one_query(
            &format!("{label} by Bearer, live cookie"),
            &[
                header("authorization", format!("Bearer {token}")),
                header("cookie", format!("id={}", fx.token)),
            ],
        )
        .await;
    }
    assert_eq!(fx.sessions_with_token(&doomed_token).await, 0);
    assert_eq!(fx.sessions_with_token(&never_issued).await, 0);
    // The other session is untouched.
    fx.assert_live_token_works_everywhere().await;
}

// ---------------------------------------------------------------------------------------------
// Properties of find_token and SessionToken::parse.
// ---------------------------------------------------------------------------------------------

fn manager() -> SessionManager {
    let config = SessionConfig::default().token_header(Some(HeaderName::from_static(TOKEN_HEADER)));
    SessionManager::new(MemoryStore::new(), config)
}

/// A valid token's text, from 32 arbitrary bytes.
fn valid_token() -> impl Strategy<Value = String> {
    any::<[u8; 32]>().prop_map(|bytes| URL_SAFE_NO_PAD.encode(bytes))
}

/// Text that often looks like a token: valid, nearly valid, or the right length by chance.
fn token_like() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        valid_token().prop_map(String::into_bytes),
        (valid_token(), 0..TOKEN_LEN, any::<u8>()).prop_map(|(token, at, byte)| {
            let mut bytes = token.into_bytes();
            bytes[at] = byte;
            bytes
        }),
        "[A-Za-z0-9_-]{43}".prop_map(String::into_bytes),
        "[A-Za-z0-9_+/=%.-]{40,46}".prop_map(String::into_bytes),
    ]
}

/// Bytes for a header value: anything at all, or shaped like the headers `find_token` reads.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    let prefix = prop_oneof![
        Just(b"".to_vec()),
        Just(b"Bearer ".to_vec()),
        Just(b"bearer".to_vec()),
        Just(b"BEARER   ".to_vec()),
        Just(b"Bearer\t".to_vec()),
        Just(b"Basic ".to_vec()),
        Just(b"id=".to_vec()),
        Just(b"theme=dark; id=".to_vec()),
        Just(b"id=; id=".to_vec()),
        Just(b" id = ".to_vec()),
    ];
    let suffix = prop_oneof![
        Just(b"".to_vec()),
        Just(b"; lang=en".to_vec()),
        Just(b";".to_vec()),
        Just(b" ".to_vec()),
        prop::collection::vec(any::<u8>(), 0..8),
    ];
    // Long values of bytes that http accepts (visible ASCII, obs-text, TAB): around the
    // Cookie size limit.
    let long = prop::collection::vec(any::<u8>(), 0..6000).prop_map(|mut bytes| {
        for byte in &mut bytes {
            if (*byte < 0x20 && *byte != b'\t') || *byte == 0x7f {
                *byte ^= 0x40;
            }
        }
        bytes
    });
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..80),
        1 => long,
        6 => (prefix, token_like(), suffix).prop_map(|(p, t, s)| concat(&[&p, &t, &s])),
    ]
}

fn scheme_is_bearer(value: &[u8]) -> bool {
    // The scheme ends at a space or a tab.
    let end = value
        .iter()
        .position(|b| *b == b' ' || *b == b'\t')
        .unwrap_or(value.len());
    value[..end].eq_ignore_ascii_case(b"bearer")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// A cookie name other than the session's (`id`), possibly close to it.
fn other_cookie_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,10}",
        Just("ID".to_owned()),
        Just("xid".to_owned()),
        Just("idx".to_owned()),
        Just("i".to_owned()),
        Just("__Host-id".to_owned()),
    ]
    .prop_filter("not the session cookie", |name| name != "id")
}

/// A cookie value: cookie-octets, which may well contain `=` or look like `id=…`.
fn other_cookie_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[!#-+\\--:<-\\[\\]-~]{0,30}",
        valid_token(),
        valid_token().prop_map(|token| format!("id={token}")),
    ]
}

/// A cookie list around one session cookie: the other pairs, where the session cookie goes,
/// the separator, and how many Cookie headers the pairs are spread over.
fn cookie_list() -> impl Strategy<Value = (Vec<(String, String)>, usize, &'static str, usize)> {
    prop::collection::vec((other_cookie_name(), other_cookie_value()), 0..20).prop_flat_map(
        |others| {
            let len = others.len();
            (
                Just(others),
                0..=len,
                prop::sample::select(vec!["; ", ";", " ; ", ";  "]),
                1..4usize,
            )
        },
    )
}

/// Spreads `pairs` over `headers` Cookie headers, in order.
fn cookie_headers(pairs: &[String], separator: &str, headers: usize) -> Vec<HeaderValue> {
    let per_header = pairs.len().div_ceil(headers).max(1);
    pairs
        .chunks(per_header)
        .map(|chunk| value(chunk.join(separator)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Arbitrary bytes in the three headers: no panic, and whatever is accepted is a canonical
    /// 43-character token that re-parses to itself and was taken from the request's headers.
    #[test]
    fn find_token_never_panics_and_accepts_only_canonical_tokens(
        authorization in prop::option::of(header_bytes()),
        token_header in prop::option::of(header_bytes()),
        cookies in prop::collection::vec(header_bytes(), 0..3),
    ) {
        let manager = manager();
        let mut headers = http::HeaderMap::new();
        let authorization = authorization.and_then(|b| HeaderValue::from_bytes(&b).ok());
        let token_header = token_header.and_then(|b| HeaderValue::from_bytes(&b).ok());
        if let Some(v) = &authorization {
            headers.insert("authorization", v.clone());
        }
        if let Some(v) = &token_header {
            headers.insert(TOKEN_HEADER, v.clone());
        }
        let cookies: Vec<HeaderValue> =
            cookies.iter().filter_map(|b| HeaderValue::from_bytes(b).ok()).collect();
        for v in &cookies {
            headers.append("cookie", v.clone());
        }

        let found = find_token(&manager, &headers);
        // Deterministic: the same headers give the same answer.
        let again = find_token(&manager, &headers);
        prop_assert_eq!(&found, &again);

        let bearer = authorization.as_ref().is_some_and(|v| scheme_is_bearer(v.as_bytes()));
        let expected_source = if bearer {
            Some(TokenSource::Bearer)
        } else if token_header.is_some() {
            Some(TokenSource::Header)
        } else {
            None // the cookie, or nothing
        };
        if let Some(expected) = expected_source {
            // A Bearer scheme, or the token header, never falls through to a later source.
            prop_assert_eq!(found.as_ref().map(|(source, _)| *source), Some(expected));
        }
        if found.is_none() {
            prop_assert!(!bearer && token_header.is_none());
        }
        if let Some((source, Some(token))) = &found {
            let text = token.expose();
            prop_assert_eq!(text.len(), TOKEN_LEN);
            prop_assert!(text.bytes().all(is_base64url));
            let reparsed = SessionToken::parse(text);
            prop_assert_eq!(reparsed.as_ref(), Some(token));
            let taken_from: Vec<&HeaderValue> = match source {
                TokenSource::Bearer => authorization.iter().collect(),
                TokenSource::Header => token_header.iter().collect(),
                TokenSource::Cookie => cookies.iter().collect(),
                other => unreachable!("no such token source in this test: {other:?}"),
            };
            prop_assert!(taken_from.iter().any(|v| contains(v.as_bytes(), text.as_bytes())));
            if *source == TokenSource::Cookie {
                let total: usize = cookies.iter().map(|v| v.len() + 2).sum();
                prop_assert!(total <= MAX_COOKIE_HEADER + 2);
            }
        }
    }

    /// A valid session cookie hidden among other cookies (none named `id`), spread over one
    /// or more Cookie headers, is always found; sent twice, it is always refused.
    #[test]
    fn session_cookie_in_a_random_cookie_list_is_found(
        token in valid_token(),
        (others, at, separator, header_count) in cookie_list(),
        other_scheme in prop::option::of(prop::sample::select(vec![
            "Basic dXNlcjpwYXNz", "Digest username=\"id\"", "Bearerx abc", "Token abc",
        ])),
        second_at in any::<prop::sample::Index>(),
    ) {
        let manager = manager();
        let mut pairs: Vec<String> = others.iter().map(|(n, v)| format!("{n}={v}")).collect();
        pairs.insert(at, format!("id={token}"));

        let mut headers = http::HeaderMap::new();
        if let Some(scheme) = other_scheme {
            headers.insert("authorization", value(scheme));
        }
        for v in cookie_headers(&pairs, separator, header_count) {
            headers.append("cookie", v);
        }
        let found = find_token(&manager, &headers)
            .map(|(source, token)| (source, token.map(|t| t.expose().to_owned())));
        prop_assert_eq!(found, Some((TokenSource::Cookie, Some(token.clone()))));

        // The same list with the session cookie a second time: ambiguous, so refused.
        pairs.insert(second_at.index(pairs.len() + 1), format!("id={token}"));
        let mut headers = http::HeaderMap::new();
        for v in cookie_headers(&pairs, separator, header_count) {
            headers.append("cookie", v);
        }
        let found = find_token(&manager, &headers).map(|(source, token)| (source, token.is_some()));
        prop_assert_eq!(found, Some((TokenSource::Cookie, false)));
    }

    /// `SessionToken::parse` accepts exactly the strings that are 43 base64url characters which
    /// the base64 crate decodes to 32 bytes and re-encodes to the same text.
    #[test]
    fn parse_accepts_exactly_canonical_43_character_base64url(
        text in prop_oneof![
            any::<String>(),
            "[A-Za-z0-9_-]{43}",
            "[A-Za-z0-9_+/=%. -]{41,45}",
            token_like().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ],
    ) {
        let expected = text.len() == TOKEN_LEN
            && text.bytes().all(is_base64url)
            && URL_SAFE_NO_PAD
                .decode(&text)
                .is_ok_and(|bytes| bytes.len() == 32 && URL_SAFE_NO_PAD.encode(&bytes) == text);
        let parsed = SessionToken::parse(&text);
        prop_assert_eq!(parsed.is_some(), expected, "{:?}", text);
        if let Some(token) = parsed {
            prop_assert_eq!(token.expose(), text.as_str());
        }
        prop_assert_eq!(SessionToken::parse_bytes(text.as_bytes()), SessionToken::parse(&text));
    }

    /// Raw bytes: `parse_bytes` accepts exactly what `parse` accepts of their UTF-8 reading.
    #[test]
    fn parse_bytes_agrees_with_parse(bytes in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        token_like(),
    ]) {
        let expected = std::str::from_utf8(&bytes).ok().and_then(SessionToken::parse);
        prop_assert_eq!(SessionToken::parse_bytes(&bytes), expected);
    }

    /// Every 32-byte secret has one spelling: its encoding parses, and the three variants with
    /// the last character's unused bits set do not.
    #[test]
    fn each_secret_has_exactly_one_accepted_spelling(token in valid_token()) {
        prop_assert!(SessionToken::parse(&token).is_some());
        for spelling in non_canonical_spellings(&token) {
            prop_assert!(SessionToken::parse(&spelling).is_none(), "{}", spelling);
        }
    }
}
