//! Races: many requests and lifecycle operations on the same sessions at once, through the
//! real axum router, each run against `PgStore` (real PostgreSQL) and `MemoryStore`.
//!
//! Proven here:
//!
//! - **Logout racing 50 requests** on the same session (with `touch_interval = 0`, so every
//!   request writes the row): requests in flight may end either way (200 as the right user, or
//!   401), but every request started after the logout completed is 401, and the row never comes
//!   back: not right after the logout, not once every in-flight request has finished.
//! - **200 users at once**: 1,000 concurrent requests (5 per user, 64 at a time, by Bearer and
//!   by cookie, on `/me` and `/optional`) each see exactly their own token's user and session,
//!   never another's.
//! - **Concurrent logins of one user** with `max_sessions_per_user = Some(1)`: 20 logins at once
//!   all succeed and exactly one session remains; its token is the only one of the 20 that
//!   still validates.
//! - **Character selection racing validation**: while tasks switch the session between the
//!   user's characters 10 and 11, others try to bind character 30 (user 3's) or claim the
//!   session for user 3, and others validate via `GET /game`: every selection of 10 or 11
//!   returns that character, every attempt on 30 is refused and changes nothing, every `/game`
//!   answer is one of the user's own (id, name, world) triples, and in the end the row still
//!   belongs to user 1 with character 10 or 11; the next validation answers that character
//!   and leaves the stored world in step with it.
//!
//! PostgreSQL only, made deterministic: a validation that waits on the row lock of a
//! concurrent character switch must not write the *old* character's world over the new
//! selection (a defect this test found and now guards against).
//! Likewise, a re-authentication that waits on a logout's row lock finds no session once the
//! logout commits, and revives nothing.

use crate::common;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::app::{bearer, get_with, router, send};
use common::{Backend, database_url, pool_for_schema, warm};
use tokio::sync::{Barrier, Semaphore};
use tower_session_auth::{
    ClientInfo, Login, LoginOptions, PgStore, Refresh, SessionConfig, SessionId, SessionManager,
    store::CharacterRecord, store::CharacterSelection, store::Scope, store::Validation,
    test_util::ManualClock, token::RefreshToken,
};

/// How long any single await may take before the test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(60);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {PATIENCE:?}"))
}

/// A manager on the backend's store with the system clock, so that every touch writes a new
/// `last_activity`.
///
/// On PostgreSQL it gets a pool of its own, already connected, with generous timeouts: these
/// tests are about races, not about pool waits or connection set-up (SCRAM authentication in an
/// unoptimised build is slow on a loaded machine), which must not fail them.
async fn racing_manager(backend: &Backend, config: SessionConfig) -> SessionManager {
    match backend {
        Backend::Pg(db) => {
            let pool = pool_for_schema(&database_url(), &db.schema, 8, PATIENCE / 2);
            within("opening the pool's connections", warm(&pool)).await;
            SessionManager::new(PgStore::new(pool), config)
        }
        Backend::Memory(store) => SessionManager::new(store.clone(), config),
    }
}

/// Stored rows with this session id, live or not on PostgreSQL (live ones in memory, where
/// nothing in these tests expires).
async fn rows_with_id(
    backend: &Backend,
    manager: &SessionManager,
    user_id: i64,
    id: SessionId,
) -> u64 {
    match backend {
        Backend::Pg(db) => {
            let count: i64 = db
                .client()
                .await
                .query_one("SELECT count(*) FROM sessions WHERE id = $1", &[&id.0])
                .await
                .unwrap()
                .get(0);
            count as u64
        }
        Backend::Memory(_) => manager
            .list_for_user(user_id)
            .await
            .unwrap()
            .iter()
            .filter(|record| record.id == id)
            .count() as u64,
    }
}

/// The outcome of one request of a racing task.
struct Outcome {
    after_logout: bool,
    status: StatusCode,
    detail: String,
    username: Option<String>,
}

async fn logout_racing_fifty_requests(backend: Backend) {
    const TASKS: usize = 50;
    let config = SessionConfig::default().touch_interval(Duration::ZERO);
    let manager = racing_manager(&backend, config).await;
    let app = router(manager.clone());
    let login = manager.login(1, LoginOptions::new()).await.unwrap();
    let (token, id) = (login.token.expose().to_owned(), login.session.id);

    let logged_out = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (app, token) = (app.clone(), token.clone());
        let (logged_out, answered, start) = (logged_out.clone(), answered.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let mut outcomes = Vec::new();
            // Keep requesting until three requests have started after the logout completed.
            while outcomes
                .iter()
                .filter(|o: &&Outcome| o.after_logout)
                .count()
                < 3
            {
                let after_logout = logged_out.load(Ordering::SeqCst);
                let request = if task % 2 == 0 {
                    bearer("/me", &token)
                } else {
                    get_with("/me", ("cookie", &format!("id={token}")))
                };
                let reply = send(&app, request).await;
                answered.fetch_add(1, Ordering::SeqCst);
                outcomes.push(Outcome {
                    after_logout,
                    status: reply.status,
                    detail: reply.detail().to_owned(),
                    username: reply.body["username"].as_str().map(str::to_owned),
                });
            }
            outcomes
        }));
    }

    // Log out while the 50 tasks are all busy on the session.
    within("the requests getting going", async {
        while answered.load(Ordering::SeqCst) < TASKS {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    let logout = Request::post("/logout")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let reply = within("the logout", send(&app, logout)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["removed"], true);
    logged_out.store(true, Ordering::SeqCst);

    assert_eq!(
        rows_with_id(&backend, &manager, 1, id).await,
        0,
        "the row right after the logout"
    );
    send(&app, bearer("/me", &token))
        .await
        .assert_invalid_session("right after the logout");

    let mut before = [0usize; 2];
    for (task, handle) in tasks.into_iter().enumerate() {
        let outcomes = within("a racing task", handle).await.expect("racing task");
        for (n, outcome) in outcomes.iter().enumerate() {
            let label = format!("task {task}, request {n}");
            match outcome.status {
                StatusCode::OK => {
                    assert!(
                        !outcome.after_logout,
                        "{label}: started after the logout completed, yet accepted"
                    );
                    assert_eq!(outcome.username.as_deref(), Some("player"), "{label}");
                    before[0] += 1;
                }
                StatusCode::UNAUTHORIZED => {
                    assert_eq!(outcome.detail, "Invalid or expired session", "{label}");
                    if !outcome.after_logout {
                        before[1] += 1;
                    }
                }
                other => panic!("{label}: {other} {:?}", outcome.detail),
            }
        }
    }
    assert!(
        before[0] >= TASKS,
        "the logout should have raced live requests: {before:?}"
    );

    // Every in-flight request has finished, and none brought the row back.
    assert_eq!(
        rows_with_id(&backend, &manager, 1, id).await,
        0,
        "the row after the in-flight requests finished"
    );
    assert_eq!(backend.stored_sessions().await, 0);
    send(&app, bearer("/me", &token))
        .await
        .assert_invalid_session("at the end");
    assert_eq!(manager.lookup(&login.token).await, None);
}

async fn two_hundred_users_never_see_each_other(backend: Backend) {
    const USERS: i64 = 200;
    const PER_USER: i64 = 5;
    let first = 1001;
    for id in first..first + USERS {
        backend
            .add_user(id, &format!("user_{id}"), Some("player"), true)
            .await;
    }
    let manager = racing_manager(&backend, SessionConfig::default()).await;
    let app = router(manager.clone());

    // Everyone logs in, concurrently.
    let mut logins = Vec::new();
    for id in first..first + USERS {
        let manager = manager.clone();
        logins.push(tokio::spawn(async move {
            let login = manager.login(id, LoginOptions::new()).await.unwrap();
            (id, login.token.expose().to_owned(), login.session.id)
        }));
    }
    let mut sessions = Vec::new();
    for login in logins {
        sessions.push(within("a login", login).await.expect("login task"));
    }
    assert_eq!(backend.stored_sessions().await, USERS as u64);
    let sessions = Arc::new(sessions);

    // 5 requests per user, interleaved across users, 64 at a time.
    let gate = Arc::new(Semaphore::new(64));
    let mut requests = Vec::new();
    for round in 0..PER_USER {
        for k in 0..USERS {
            let index = ((k * 37 + round * 11) % USERS) as usize; // 37 is prime to 200
            let (app, gate, sessions) = (app.clone(), gate.clone(), sessions.clone());
            requests.push(tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.unwrap();
                let (id, token, session_id) = &sessions[index];
                let (path, request) = match (index as i64 + round) % 3 {
                    0 => ("/me", bearer("/me", token)),
                    1 => ("/me", get_with("/me", ("cookie", &format!("id={token}")))),
                    _ => ("/optional", bearer("/optional", token)),
                };
                let reply = send(&app, request).await;
                (*id, *session_id, path, reply)
            }));
        }
    }
    let total = requests.len();
    for request in requests {
        let (id, session_id, path, reply) = within("a request", request).await.expect("request");
        let label = format!("user {id}, {path}");
        assert_eq!(reply.status, StatusCode::OK, "{label}: {:?}", reply.body);
        assert_eq!(
            reply.body["username"],
            format!("user_{id}"),
            "{label}: another user's identity"
        );
        if path == "/me" {
            assert_eq!(reply.body["session_id"], session_id.to_string(), "{label}");
        }
        assert!(reply.set_cookies().is_empty(), "{label}");
    }
    assert_eq!(total, (USERS * PER_USER) as usize);
    assert_eq!(backend.stored_sessions().await, USERS as u64);
}

async fn concurrent_logins_keep_exactly_one_session(backend: Backend) {
    const LOGINS: usize = 20;
    let config = SessionConfig::default().max_sessions_per_user(Some(1));
    let manager = racing_manager(&backend, config).await;
    let start = Arc::new(Barrier::new(LOGINS));
    let mut logins = Vec::new();
    for _ in 0..LOGINS {
        let (manager, start) = (manager.clone(), start.clone());
        logins.push(tokio::spawn(async move {
            start.wait().await;
            manager.login(1, LoginOptions::new()).await
        }));
    }
    let mut tokens = Vec::new();
    for login in logins {
        let login = within("a login", login)
            .await
            .expect("login task")
            .expect("every concurrent login succeeds");
        tokens.push(login);
    }

    let remaining = manager.list_for_user(1).await.unwrap();
    assert_eq!(remaining.len(), 1, "sessions left: {remaining:?}");
    assert_eq!(backend.stored_sessions().await, 1);
    let mut valid = Vec::new();
    for login in &tokens {
        match manager.validate(&login.token, Scope::Game).await.unwrap() {
            Validation::Valid(view) => valid.push(view.session.id),
            Validation::Unknown => {}
            Validation::Expired => panic!("nothing here expires"),
        }
    }
    assert_eq!(
        valid,
        [remaining[0].id],
        "exactly the remaining session validates"
    );
}

/// The (name, world) of user 1's characters.
fn own_character(id: i64) -> Option<(&'static str, &'static str)> {
    match id {
        10 => Some(("player_char", "pipeworks_web")),
        11 => Some(("player_alt", "daily_undertaking")),
        _ => None,
    }
}

async fn character_selection_racing_validation(backend: Backend) {
    const SWITCHES: i64 = 60;
    let config = SessionConfig::default().touch_interval(Duration::ZERO);
    let manager = racing_manager(&backend, config).await;
    let app = router(manager.clone());
    let login = manager.login(1, LoginOptions::new()).await.unwrap();
    let (token, id) = (login.token.expose().to_owned(), login.session.id);
    let selected = manager.select_character(id, 1, 10).await.unwrap();
    assert!(matches!(selected, CharacterSelection::Selected(_)));

    let done = Arc::new(AtomicUsize::new(0));
    let mut switchers = Vec::new();
    for parity in 0..2 {
        let manager = manager.clone();
        switchers.push(tokio::spawn(async move {
            for n in 0..SWITCHES {
                let character = if (n + parity) % 2 == 0 { 10 } else { 11 };
                let (name, world) = own_character(character).unwrap();
                let selection = manager.select_character(id, 1, character).await.unwrap();
                assert_eq!(
                    selection,
                    CharacterSelection::Selected(CharacterRecord::new(
                        name,
                        Some(world.to_owned())
                    )),
                    "selecting {character}"
                );
            }
        }));
    }
    let thief = tokio::spawn({
        let manager = manager.clone();
        async move {
            for _ in 0..SWITCHES {
                // Another user's characters, for this session's user.
                for character in [30, 20] {
                    assert_eq!(
                        manager.select_character(id, 1, character).await.unwrap(),
                        CharacterSelection::CharacterNotFound,
                        "character {character} belongs to someone else"
                    );
                }
                // User 3 claiming user 1's session for their own character.
                assert_eq!(
                    manager.select_character(id, 3, 30).await.unwrap(),
                    CharacterSelection::SessionNotFound,
                    "user 3 cannot bind user 1's session"
                );
            }
        }
    });
    let mut validators = Vec::new();
    for validator in 0..2 {
        let (app, token, done) = (app.clone(), token.clone(), done.clone());
        validators.push(tokio::spawn(async move {
            let mut seen = 0;
            // Validate until every switching task has finished, and at least a few times.
            while done.load(Ordering::SeqCst) < 3 || seen < 10 {
                let request = if validator == 0 {
                    bearer("/game", &token)
                } else {
                    get_with("/game", ("cookie", &format!("id={token}")))
                };
                let reply = send(&app, request).await;
                assert_eq!(reply.status, StatusCode::OK, "/game: {:?}", reply.body);
                let character = reply.body["character_id"].as_i64().unwrap();
                let triple = (
                    reply.body["character_name"].as_str().unwrap(),
                    reply.body["world_id"].as_str().unwrap(),
                );
                assert_eq!(
                    own_character(character),
                    Some(triple),
                    "/game answered character {character} as {triple:?}"
                );
                seen += 1;
            }
            seen
        }));
    }
    for task in switchers.into_iter().chain([thief]) {
        within("a selecting task", task)
            .await
            .expect("selecting task");
        done.fetch_add(1, Ordering::SeqCst);
    }
    for validator in validators {
        let seen = within("a validating task", validator)
            .await
            .expect("validating task");
        assert!(seen >= 10);
    }

    // The session is still user 1's, with one of user 1's characters; nobody else got one.
    let sessions = manager.list_for_user(1).await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].id, id);
    let character = sessions[0].character_id.expect("a character is selected");
    assert!(own_character(character).is_some(), "character {character}");
    assert!(manager.list_for_user(3).await.unwrap().is_empty());
    if let Backend::Pg(db) = &backend {
        let row = db
            .client()
            .await
            .query_one(
                "SELECT user_id, character_id FROM sessions WHERE id = $1",
                &[&id.0],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), 1);
        assert_eq!(row.get::<_, Option<i64>>(1), Some(character));
    }
    // Once the dust settles, a validation answers with the selected character.
    let reply = send(&app, bearer("/game", &token)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["character_id"], character);
    let (name, world) = own_character(character).unwrap();
    assert_eq!(reply.body["character_name"], name);
    assert_eq!(reply.body["world_id"], world);
    // ... and that validation leaves the stored world in step with the character.
    let stored = manager.list_for_user(1).await.unwrap().remove(0);
    assert_eq!(stored.character_id, Some(character));
    assert_eq!(stored.world_id.as_deref(), Some(world));
}

/// Every way a session ends by revocation.
#[derive(Clone, Copy, Debug)]
enum Revocation {
    Logout,
    RevokeOne,
    RevokeOthers,
    RevokeAll,
    AdminKick,
    Deactivation,
}

const REVOCATIONS: [Revocation; 6] = [
    Revocation::Logout,
    Revocation::RevokeOne,
    Revocation::RevokeOthers,
    Revocation::RevokeAll,
    Revocation::AdminKick,
    Revocation::Deactivation,
];

impl Revocation {
    /// Revokes `target` (a session of the series) the way this path does; `keep` is the
    /// session "sign out everywhere else" keeps. Returns whether the target was found.
    async fn run(
        self,
        backend: &Backend,
        manager: &SessionManager,
        user_id: i64,
        target: &Login,
        keep: SessionId,
    ) -> bool {
        let id = target.session.id;
        match self {
            Self::Logout => manager.remove_by_token(&target.token).await.unwrap(),
            Self::RevokeOne => manager.revoke(user_id, id).await.unwrap(),
            Self::AdminKick => manager.remove(id).await.unwrap(),
            Self::RevokeOthers => manager.revoke_others(user_id, keep).await.unwrap() > 0,
            Self::RevokeAll => manager.revoke_all(user_id).await.unwrap() > 0,
            Self::Deactivation => {
                backend.set_active(user_id, false).await;
                manager.revoke_all(user_id).await.unwrap() > 0
            }
        }
    }

    /// The sessions this path leaves to the user, who also has a plain session `keep`.
    fn survivors(self, keep: SessionId) -> Vec<SessionId> {
        match self {
            Self::RevokeAll | Self::Deactivation => Vec::new(),
            _ => vec![keep],
        }
    }
}

/// A refresh loop races each revocation path: once the revocation returns, the series is
/// over, and no session of it is left, whatever the refresh loop was doing (each path, four
/// trials).
async fn revocation_racing_a_refresh_loop(backend: Backend) {
    const TRIALS: i64 = 4;
    // With a session limit, refreshes prune too and take the user's lock: the revocations
    // must not deadlock with them.
    let config = SessionConfig::default().max_sessions_per_user(Some(10));
    let manager = racing_manager(&backend, config).await;
    for (n, path) in REVOCATIONS.into_iter().enumerate() {
        for trial in 0..TRIALS {
            let user_id = 500 + n as i64 * TRIALS + trial;
            backend
                .add_user(user_id, &format!("racer_{user_id}"), Some("player"), true)
                .await;
            let keep = manager.login(user_id, LoginOptions::new()).await.unwrap();
            let login = manager
                .login(user_id, LoginOptions::new().remember(true))
                .await
                .unwrap();
            let (latest, mut refreshes) = tokio::sync::watch::channel((0u32, Arc::new(login)));
            let refresher = tokio::spawn({
                let manager = manager.clone();
                let mut token: RefreshToken = latest.borrow().1.refresh.clone().unwrap();
                async move {
                    for count in 1.. {
                        match manager
                            .refresh(&token, ClientInfo::default())
                            .await
                            .unwrap()
                        {
                            Refresh::Refreshed(login) => {
                                token = login.refresh.clone().unwrap();
                                latest.send_replace((count, Arc::new(*login)));
                            }
                            Refresh::Invalid => return count,
                            Refresh::ReuseDetected => panic!("no secret was used twice"),
                        }
                        assert!(count < 100_000, "the series never ended");
                    }
                    unreachable!()
                }
            });
            // Revoke once the loop is going, aiming at its latest session (which the next
            // refresh ends; then aim again).
            within(
                "the refresh loop to start",
                refreshes.wait_for(|(n, _)| *n >= 2),
            )
            .await
            .unwrap();
            let mut attempts = 0;
            loop {
                let target = refreshes.borrow_and_update().1.clone();
                let found = within(
                    "the revocation",
                    path.run(&backend, &manager, user_id, &target, keep.session.id),
                )
                .await;
                if found {
                    break;
                }
                attempts += 1;
                assert!(attempts < 10_000, "{path:?}: never caught a live session");
            }
            within("the refresh loop to end", refresher)
                .await
                .expect("refresh loop");
            if let Revocation::Deactivation = path {
                backend.set_active(user_id, true).await;
            }
            let left: Vec<SessionId> = manager
                .list_for_user(user_id)
                .await
                .unwrap()
                .iter()
                .map(|s| s.id)
                .collect();
            assert_eq!(
                left,
                path.survivors(keep.session.id),
                "{path:?}, trial {trial}: a session of the ended series survived"
            );
        }
    }
}

/// Logins that prune, refreshes that prune and revocations of one user, all at once, take
/// their locks in one order: none fails (PostgreSQL would abort one of a deadlock), and once
/// everything has settled a revoke-all leaves nothing.
async fn pruning_logins_refreshes_and_revocations_do_not_deadlock(backend: Backend) {
    const DEVICES: usize = 3;
    let config = SessionConfig::default().max_sessions_per_user(Some(2));
    let manager = racing_manager(&backend, config).await;
    let start = Arc::new(Barrier::new(DEVICES + 2));
    let mut tasks = Vec::new();
    for _ in 0..DEVICES {
        let (manager, start) = (manager.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            let login = manager.login(1, LoginOptions::new().remember(true)).await;
            let mut token = login.unwrap().refresh.unwrap();
            start.wait().await;
            // Refresh until a pruning login or a revocation ends the series.
            for _ in 0..200 {
                match manager
                    .refresh(&token, ClientInfo::default())
                    .await
                    .unwrap()
                {
                    Refresh::Refreshed(login) => token = login.refresh.unwrap(),
                    Refresh::Invalid => return,
                    Refresh::ReuseDetected => panic!("no secret was used twice"),
                }
            }
        }));
    }
    tasks.push(tokio::spawn({
        let (manager, start) = (manager.clone(), start.clone());
        async move {
            start.wait().await;
            for n in 0..20 {
                manager
                    .login(1, LoginOptions::new().remember(n % 2 == 0))
                    .await
                    .unwrap();
            }
        }
    }));
    tasks.push(tokio::spawn({
        let (manager, start) = (manager.clone(), start.clone());
        async move {
            start.wait().await;
            for n in 0..10 {
                let sessions = manager.list_for_user(1).await.unwrap();
                if let Some(session) = sessions.first() {
                    if n % 2 == 0 {
                        manager.revoke_others(1, session.id).await.unwrap();
                    } else {
                        manager.revoke(1, session.id).await.unwrap();
                    }
                }
            }
        }
    }));
    for task in tasks {
        within("a racing task", task).await.expect("no store error");
    }
    manager.revoke_all(1).await.unwrap();
    assert!(manager.list_for_user(1).await.unwrap().is_empty());
    assert_eq!(backend.stored_sessions().await, 0);
}

both_stores!(
    pruning_logins_refreshes_and_revocations_do_not_deadlock,
    logout_racing_fifty_requests,
    two_hundred_users_never_see_each_other,
    concurrent_logins_keep_exactly_one_session,
    character_selection_racing_validation,
    revocation_racing_a_refresh_loop,
);

/// A refresh in flight holds the series row lock (as `refresh` does) and has inserted its
/// new session when a revocation starts; the revocation waits for the lock, and once the
/// refresh commits, no session of the series is left, on every revocation path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_waits_for_a_refresh_in_flight_and_leaves_no_session_of_the_series() {
    let backend = Backend::pg().await;
    let Backend::Pg(db) = &backend else {
        unreachable!("Backend::pg is on PostgreSQL")
    };
    let manager = backend.manager(SessionConfig::default(), Arc::new(ManualClock::default()));
    for (n, path) in REVOCATIONS.into_iter().enumerate() {
        let user_id = 100 + n as i64;
        backend
            .add_user(user_id, &format!("device_{user_id}"), Some("player"), true)
            .await;
        let keep = manager.login(user_id, LoginOptions::new()).await.unwrap();
        let login = manager
            .login(user_id, LoginOptions::new().remember(true))
            .await
            .unwrap();
        let series = login.refresh.as_ref().unwrap().series();

        let mut refresh_conn = db.client().await;
        let refresh = refresh_conn.transaction().await.unwrap();
        refresh
            .execute(
                "SELECT 1 FROM refresh_series WHERE id = $1 FOR UPDATE",
                &[&series],
            )
            .await
            .unwrap();
        refresh
            .execute(
                "INSERT INTO sessions (id, token_hash, user_id, created_at, last_activity, \
                     authenticated_at, refreshed, series_id) \
                 VALUES (gen_random_uuid(), sha256(gen_random_uuid()::text::bytea), $1, \
                     now(), now(), now(), true, $2)",
                &[&user_id, &series],
            )
            .await
            .unwrap();
        let refresh_pid: i32 = refresh
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        let revocation = tokio::spawn({
            let (backend, manager, keep) = (backend.clone(), manager.clone(), keep.session.id);
            async move { path.run(&backend, &manager, user_id, &login, keep).await }
        });
        wait_until_blocked_by(db, refresh_pid).await;
        assert!(!revocation.is_finished(), "{path:?} did not wait");
        refresh.commit().await.unwrap();
        assert!(
            within("the revocation", revocation).await.unwrap(),
            "{path:?}"
        );

        let left: i64 = db
            .client()
            .await
            .query_one(
                "SELECT (SELECT count(*) FROM sessions WHERE series_id = $1) \
                      + (SELECT count(*) FROM refresh_series WHERE id = $1)",
                &[&series],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 0, "{path:?}: the series or a session of it survived");
        let others: Vec<SessionId> = manager
            .list_for_user(user_id)
            .await
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(others, path.survivors(keep.session.id), "{path:?}");
    }
}

/// Waits until some backend is blocked by `pid`.
async fn wait_until_blocked_by(db: &common::TestDb, pid: i32) {
    let watcher = db.client().await;
    within("a statement to wait on the lock", async {
        loop {
            let waiting: i64 = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                    &[&pid],
                )
                .await
                .unwrap()
                .get(0);
            if waiting > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// A character switch holds the row lock (as `select_character`'s UPDATE does) while a
/// validation that wants to touch the row waits for it. The validation read the session
/// (character 10) before the switch committed; when it gets the lock, its touch must leave
/// the new selection's world alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_waiting_on_a_character_switch_keeps_the_world_in_step() {
    let backend = Backend::pg().await;
    let Backend::Pg(db) = &backend else {
        unreachable!("Backend::pg is on PostgreSQL")
    };
    let config = SessionConfig::default().touch_interval(Duration::ZERO);
    let manager = backend.manager(config, Arc::new(ManualClock::default()));
    let login = manager.login(1, LoginOptions::new()).await.unwrap();
    let id = login.session.id;
    manager.select_character(id, 1, 10).await.unwrap();

    let mut switch_conn = db.client().await;
    let switch = switch_conn.transaction().await.unwrap();
    switch
        .execute(
            "UPDATE sessions SET character_id = 11, world_id = 'daily_undertaking' WHERE id = $1",
            &[&id.0],
        )
        .await
        .unwrap();
    let switch_pid: i32 = switch
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let validation = tokio::spawn({
        let (manager, token) = (manager.clone(), login.token.clone());
        async move { manager.validate(&token, Scope::Game).await }
    });
    // Wait until the validation is blocked by the switch: it has read the session by then.
    wait_until_blocked_by(db, switch_pid).await;
    assert!(!validation.is_finished());
    switch.commit().await.unwrap();
    let validation = within("the validation", validation).await.unwrap().unwrap();
    assert!(matches!(validation, Validation::Valid(_)));

    let record = manager.list_for_user(1).await.unwrap().remove(0);
    assert_eq!(
        (record.character_id, record.world_id.as_deref()),
        (Some(11), Some("daily_undertaking")),
        "the stored world no longer matches the selected character"
    );
}

/// A logout holds the row lock (its DELETE has run, not committed) while a re-authentication
/// of the same session waits for it: once the logout commits, the re-authentication finds no
/// session, says so, and brings nothing back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reauthentication_waiting_on_a_logout_revives_nothing() {
    let backend = Backend::pg().await;
    let Backend::Pg(db) = &backend else {
        unreachable!("Backend::pg is on PostgreSQL")
    };
    let manager = backend.manager(SessionConfig::default(), Arc::new(ManualClock::default()));
    let login = manager.login(1, LoginOptions::new()).await.unwrap();
    let id = login.session.id;

    let mut logout_conn = db.client().await;
    let logout = logout_conn.transaction().await.unwrap();
    logout
        .execute("DELETE FROM sessions WHERE id = $1", &[&id.0])
        .await
        .unwrap();
    let logout_pid: i32 = logout
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let reauthentication = tokio::spawn({
        let manager = manager.clone();
        async move { manager.reauthenticate(id).await }
    });
    wait_until_blocked_by(db, logout_pid).await;
    assert!(!reauthentication.is_finished());
    logout.commit().await.unwrap();
    let live = within("the re-authentication", reauthentication)
        .await
        .unwrap()
        .unwrap();
    assert!(
        !live,
        "a re-authentication reported a session that was logged out"
    );
    assert_eq!(db.session_rows().await, 0);
    assert_eq!(
        manager.validate(&login.token, Scope::User).await.unwrap(),
        Validation::Unknown
    );
}
