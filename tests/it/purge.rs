//! The purge: each batch reads on from where the one before stopped, a position leaves what
//! lies before it to the next purge, and the batches pause between them.

use crate::common;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use common::{Backend, TestDb};
use tower_session_auth::store::{PurgePosition, SessionStore};
use tower_session_auth::test_util::ManualClock;
use tower_session_auth::{LoginOptions, SessionConfig, SessionManager};

fn pg(backend: &Backend) -> &TestDb {
    match backend {
        Backend::Pg(db) => db,
        Backend::Memory(_) => unreachable!(),
    }
}

/// Inserts `expired` sessions of user 1 that expired an hour ago, with a live one after every
/// `live_every` of them, in one statement (so in table order).
async fn bulk_sessions(db: &TestDb, expired: i64, live_every: i64) {
    db.execute(
        "INSERT INTO sessions (id, token_hash, user_id, client_type, created_at, last_activity, \
             expires_at, absolute_expires_at, authenticated_at) \
         SELECT gen_random_uuid(), sha256(int8send(i)), 1, 'bulk', now() - interval '1 day', \
             now() - interval '9 hours', \
             CASE WHEN i % $2::int8 = 0 THEN now() + interval '1 hour' ELSE now() - interval '1 hour' END, \
             now() + interval '6 days', now() - interval '1 day' \
         FROM generate_series(1, $1::int8 + $1::int8 / ($2::int8 - 1)) i",
        &[&expired, &live_every],
    )
    .await;
}

#[tokio::test]
async fn each_purge_batch_reads_on_from_where_the_one_before_stopped() {
    let backend = Backend::pg().await;
    let db = pg(&backend);
    // 3000 expired sessions over some 90 heap pages, a live one after every 500.
    bulk_sessions(db, 3000, 501).await;
    let live = db.session_rows().await - 3000;
    assert_eq!(live, 6);
    let now = time::OffsetDateTime::now_utc();

    let mut from = PurgePosition::START;
    let mut deleted = 0;
    let mut batches = 0;
    loop {
        let batch = db.store.purge_expired(now, 400, from).await.unwrap();
        deleted += batch.sessions;
        batches += 1;
        if !batch.was_full(400) {
            assert_eq!(batch.sessions, 200);
            break;
        }
        // Each batch ends further on in the table than the one before.
        assert!(
            batch.next.sessions > from.sessions,
            "{batch:?} after {from:?}"
        );
        from = batch.next;
    }
    assert_eq!((deleted, batches), (3000, 8));
    assert_eq!(db.session_rows().await, live, "every live session is kept");
}

#[tokio::test]
async fn a_purge_position_leaves_the_rows_before_it_to_the_next_purge() {
    let backend = Backend::pg().await;
    let db = pg(&backend);
    // 1000 expired sessions, then a live one.
    bulk_sessions(db, 1000, 1001).await;
    let now = time::OffsetDateTime::now_utc();
    let first = db
        .store
        .purge_expired(now, 100, PurgePosition::START)
        .await
        .unwrap();
    assert_eq!(first.sessions, 100);

    // From a page well inside the table, the rows before it are left alone ...
    let middle = PurgePosition::new(first.next.sessions + 5, 0);
    let rest = db.store.purge_expired(now, 5000, middle).await.unwrap();
    assert!(rest.sessions > 0 && rest.sessions < 900, "{rest:?}");
    assert!(rest.next.sessions >= middle.sessions);
    // ... past the last page a table can have (a forged position), nothing is read, and
    // nothing fails ...
    let past = PurgePosition::new(u64::MAX, u64::MAX);
    let none = db.store.purge_expired(now, 5000, past).await.unwrap();
    assert_eq!((none.sessions, none.series), (0, 0));
    assert_eq!(db.session_rows().await, 901 - rest.sessions as i64);
    // ... and a purge, which starts at the beginning, takes them.
    let manager = SessionManager::new(db.store.clone(), SessionConfig::default());
    assert_eq!(manager.purge_expired().await.unwrap(), 900 - rest.sessions);
    assert_eq!(db.session_rows().await, 1, "the live session is kept");
}

#[tokio::test(start_paused = true)]
async fn a_purge_pauses_between_its_batches() {
    let backend = Backend::memory().await;
    let clock = Arc::new(ManualClock::default());
    let config = SessionConfig::default()
        .purge_batch_size(NonZeroU32::new(2).unwrap())
        .purge_pause(Duration::from_secs(10));
    let manager = backend.manager(config, clock.clone());
    for _ in 1..=5 {
        manager.login(1, LoginOptions::new()).await.unwrap();
    }
    clock.advance(Duration::from_secs(9 * 60 * 60));
    let started = tokio::time::Instant::now();
    // Batches of 2, 2 and 1: a pause after each full batch.
    assert_eq!(manager.purge_expired().await.unwrap(), 5);
    assert_eq!(started.elapsed().as_secs(), 20);

    // Without a pause, no time passes.
    let manager = backend.manager(
        SessionConfig::default()
            .purge_batch_size(NonZeroU32::new(2).unwrap())
            .purge_pause(Duration::ZERO),
        clock.clone(),
    );
    for _ in 1..=5 {
        manager.login(1, LoginOptions::new()).await.unwrap();
    }
    clock.advance(Duration::from_secs(9 * 60 * 60));
    let started = tokio::time::Instant::now();
    assert_eq!(manager.purge_expired().await.unwrap(), 5);
    assert_eq!(started.elapsed(), Duration::ZERO);
}
