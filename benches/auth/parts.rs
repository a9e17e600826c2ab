//! The parts of an authenticated request, measured apart in the same run, to show where the
//! time of the HTTP cases goes:
//!
//! - **routers in-process**: each router is called directly (`tower::Service::call`, one
//!   request after the other on one task): no sockets, no HTTP parsing, no scheduling between
//!   client and server. Nanoseconds and heap allocations per request (a counting allocator
//!   wraps the system's), for the ceiling's route and ours served from memory.
//! - **the hit path's steps**: the public functions a cache hit goes through, each timed alone
//!   in a loop: finding and decoding the token, SHA-256, reading the clock, building the
//!   request's session handle, and the whole validation.
//! - **statements alone**: 8 tasks run one kind of statement on the shared pool as fast as
//!   they can, without HTTP or layer: the floor's primary-key lookup, a session found by its
//!   token hash alone, the same joined with its user, and `PgStore`'s validating statement
//!   (`SessionStore::validate`, which also joins the character and carries the touch).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method};
use axum::http::{HeaderValue, Request, header};
use deadpool_postgres::Pool;
use serde_json::{Value, json};
use tower::{Service, ServiceExt};
use tower_session_auth::{
    PgStore, Session, SessionManager, credentials::find_token, store::Scope, store::SessionStore,
    store::TokenHash, store::Touch, token::SessionToken,
};

/// Counts heap allocations (and reallocations) of the whole process.
pub struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// One router called in-process.
pub struct RouterCost {
    pub case: &'static str,
    pub nanos_per_request: f64,
    pub allocations_per_request: f64,
}

/// Calls `router` with `GET /me` and `cookie` for `window`, one request at a time, after a
/// warm-up of 10 000 requests (which also fills a validation cache).
pub async fn router_cost(
    case: &'static str,
    router: Router,
    cookie: &HeaderValue,
    window: Duration,
) -> RouterCost {
    let mut service = router.into_service::<Body>();
    let request = || {
        Request::get("/me")
            .header(header::COOKIE, cookie.clone())
            .body(Body::empty())
            .expect("request")
    };
    for _ in 0..10_000 {
        let response = service.ready().await.expect("ready").call(request()).await;
        assert!(
            response.expect("infallible").status().is_success(),
            "{case}"
        );
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut requests = 0u64;
    while started.elapsed() < window {
        for _ in 0..1000 {
            let response = service.ready().await.expect("ready").call(request()).await;
            std::hint::black_box(response.expect("infallible"));
        }
        requests += 1000;
    }
    let elapsed = started.elapsed();
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations;
    RouterCost {
        case,
        nanos_per_request: elapsed.as_nanos() as f64 / requests as f64,
        allocations_per_request: allocations as f64 / requests as f64,
    }
}

/// Nanoseconds per call of each step of a validation served from memory (the cache, or the
/// memory store), through `manager`, for the request headers `cookie` makes.
pub async fn hit_path_steps(
    manager: &SessionManager,
    cookie: &HeaderValue,
    window: Duration,
) -> Vec<(&'static str, f64)> {
    let uri = http::Uri::from_static("/me");
    let mut headers = HeaderMap::new();
    headers.insert(header::COOKIE, cookie.clone());
    let token = match find_token(manager, &headers) {
        Some((_, Some(token))) => token,
        _ => panic!("the cookie carries a token"),
    };
    let per_step = window / 5;
    let mut steps = vec![
        (
            "find and decode the token",
            nanos_per_call(per_step, || find_token(manager, &headers)),
        ),
        (
            "SHA-256 of the token",
            nanos_per_call(per_step, || token.hash()),
        ),
        ("read the clock", nanos_per_call(per_step, || manager.now())),
        (
            "build the session handle",
            nanos_per_call(per_step, || {
                Session::new(manager, &Method::GET, &uri, &headers, None)
            }),
        ),
    ];
    manager
        .validate(&token, Scope::Game)
        .await
        .expect("validate");
    let started = Instant::now();
    let mut calls = 0u64;
    while started.elapsed() < per_step {
        for _ in 0..1000 {
            std::hint::black_box(
                manager
                    .validate(&token, Scope::Game)
                    .await
                    .expect("validate"),
            );
        }
        calls += 1000;
    }
    steps.push((
        "validate, served from memory",
        started.elapsed().as_nanos() as f64 / calls as f64,
    ));
    steps
}

/// Calls `step` in batches of 1000 for `window`; nanoseconds per call.
fn nanos_per_call<R>(window: Duration, mut step: impl FnMut() -> R) -> f64 {
    let started = Instant::now();
    let mut calls = 0u64;
    while started.elapsed() < window {
        for _ in 0..1000 {
            std::hint::black_box(step());
        }
        calls += 1000;
    }
    started.elapsed().as_nanos() as f64 / calls as f64
}

/// The session by token hash joined with its user, as `Statement::SessionAndUser` runs it
/// alone and the `floor-session` handler over HTTP (columns: session id, user id, last
/// activity, the two expiries, username, role, active flag).
pub const SESSION_AND_USER_SQL: &str = "SELECT s.id, s.user_id, s.last_activity, s.expires_at, \
     s.absolute_expires_at, u.username, u.role, u.is_active \
     FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1";

/// A kind of statement measured alone.
#[derive(Clone, Copy)]
pub enum Statement {
    /// `SELECT username FROM users WHERE id = $1`, as the `floor` handler runs it.
    Floor,
    /// The session by token hash, no join: what any design that stores sessions does.
    SessionLookup,
    /// The session joined with its user: the least that reads the role on each request.
    SessionAndUser,
    /// `PgStore::validate` at `Scope::User`: session and user, the touch when due.
    ValidateUser,
    /// `PgStore::validate` at `Scope::Game`: session, user and character, the touch and the
    /// world resync when due.
    ValidateGame,
}

impl Statement {
    pub const ALL: [Statement; 5] = [
        Self::Floor,
        Self::SessionLookup,
        Self::SessionAndUser,
        Self::ValidateUser,
        Self::ValidateGame,
    ];

    /// Its key in the summary.
    fn key(self) -> &'static str {
        match self {
            Self::Floor => "floor",
            Self::SessionLookup => "session_lookup",
            Self::SessionAndUser => "session_and_user",
            Self::ValidateUser => "validate_user",
            Self::ValidateGame => "validate_game",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Floor => "floor",
            Self::SessionLookup => "session lookup",
            Self::SessionAndUser => "session + user",
            Self::ValidateUser => "validate, user",
            Self::ValidateGame => "validate, game",
        }
    }

    fn sql(self) -> &'static str {
        match self {
            Self::Floor => "SELECT username FROM users WHERE id = $1",
            Self::SessionLookup => {
                "SELECT id, user_id, last_activity, expires_at, absolute_expires_at \
                 FROM sessions WHERE token_hash = $1"
            }
            Self::SessionAndUser => SESSION_AND_USER_SQL,
            Self::ValidateUser | Self::ValidateGame => "",
        }
    }
}

/// Statements per second of one kind, `CONCURRENCY` tasks on `pool` for `window`.
pub async fn statement_rate(
    statement: Statement,
    pool: &Pool,
    store: &PgStore,
    sessions: &[(i64, TokenHash)],
    window: Duration,
) -> f64 {
    const CONCURRENCY: usize = 8;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for worker in 0..CONCURRENCY {
        let (pool, store, stop, done) = (pool.clone(), store.clone(), stop.clone(), done.clone());
        let (user_id, hash) = sessions[worker % sessions.len()];
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                run_once(statement, &pool, &store, user_id, &hash).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Warm-up: every connection prepares its statement.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = done.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let count = done.load(Ordering::Relaxed) - before;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("statement task");
    }
    count as f64 / elapsed.as_secs_f64()
}

async fn run_once(statement: Statement, pool: &Pool, store: &PgStore, user: i64, hash: &TokenHash) {
    let scope = match statement {
        Statement::ValidateUser => Some(Scope::User),
        Statement::ValidateGame => Some(Scope::Game),
        _ => None,
    };
    if let Some(scope) = scope {
        let now = time::OffsetDateTime::now_utc();
        let touch = Touch::new(
            now - Duration::from_secs(60),
            Some(now + Duration::from_secs(8 * 3600)),
        );
        let validation = store.validate(hash, now, touch, scope).await;
        std::hint::black_box(validation.expect("validate"));
        return;
    }
    let client = pool.get().await.expect("pool connection");
    let prepared = client
        .prepare_cached(statement.sql())
        .await
        .expect("prepare");
    let row = match statement {
        Statement::Floor => client.query_opt(&prepared, &[&user]).await,
        _ => {
            client
                .query_opt(&prepared, &[&hash.as_bytes().as_slice()])
                .await
        }
    };
    assert!(row.expect("statement").is_some(), "{}", statement.name());
}

/// The token hash behind a cookie `id=<token>`.
pub fn cookie_hash(cookie: &HeaderValue) -> TokenHash {
    let text = cookie.to_str().expect("cookie text");
    let token = text.strip_prefix("id=").expect("session cookie");
    SessionToken::parse(token).expect("token").hash()
}

/// Prints both tables and returns them for the summary.
pub fn report(
    routers: &[RouterCost],
    steps: &[(&'static str, f64)],
    statements: &[(Statement, f64)],
) -> Value {
    println!("\nrouters in-process        ns/request   allocations/request   / ceiling");
    let ceiling = routers
        .iter()
        .find(|r| r.case == "ceiling")
        .map(|r| r.nanos_per_request);
    let mut router_json = serde_json::Map::new();
    for r in routers {
        let ratio = ceiling.map(|c| c / r.nanos_per_request);
        println!(
            "{:<26}{:>10.0}{:>22.1}{:>12}",
            r.case,
            r.nanos_per_request,
            r.allocations_per_request,
            ratio.map_or("-".into(), |x| format!("{x:.2}")),
        );
        router_json.insert(
            r.case.to_owned(),
            json!({
                "nanos_per_request": (r.nanos_per_request * 10.0).round() / 10.0,
                "allocations_per_request": (r.allocations_per_request * 10.0).round() / 10.0,
            }),
        );
    }
    println!("\nhit path, step by step         ns/call");
    let mut step_json = serde_json::Map::new();
    for (step, nanos) in steps {
        println!("{step:<30}{nanos:>9.0}");
        step_json.insert((*step).to_owned(), json!((nanos * 10.0).round() / 10.0));
    }
    println!("\nstatements alone, c=8     statements/s   / floor");
    let floor = statements
        .iter()
        .find(|(s, _)| matches!(s, Statement::Floor))
        .map(|(_, rate)| *rate);
    let mut statement_json = serde_json::Map::new();
    for (statement, rate) in statements {
        let ratio = floor.map(|f| rate / f);
        println!(
            "{:<26}{:>12.0}{:>10}",
            statement.name(),
            rate,
            ratio.map_or("-".into(), |x| format!("{x:.2}")),
        );
        statement_json.insert(
            statement.key().to_owned(),
            json!({
                "per_second": rate.round(),
                "vs_floor": ratio.map(|x| (x * 1000.0).round() / 1000.0),
            }),
        );
    }
    json!({
        "routers_in_process": router_json,
        "hit_path_steps_ns": step_json,
        "statements_alone_c8": statement_json,
    })
}
