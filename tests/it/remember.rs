//! Remember-me series on PostgreSQL, row by row: a refresh that is refused changes no row of
//! `sessions`, `refresh_series` or `refresh_secrets`, and a series keeps at most 8 secrets.
//! The family rules themselves (rotation, reuse detection, the grace window, the series'
//! lifetimes, revocation) are checks of the conformance suite, run on both stores by
//! tests/conformance.rs.

use crate::common;

use std::time::Duration;

use common::{Backend, Harness, TestDb};
use tower_session_auth::{
    ClientInfo, Login, LoginOptions, Refresh, RefreshConfig, SessionConfig, token::RefreshToken,
    token::SessionToken,
};

const SECOND: Duration = Duration::from_secs(1);

async fn harness() -> (Harness, std::sync::Arc<TestDb>) {
    let backend = Backend::pg().await;
    let Backend::Pg(db) = &backend else {
        unreachable!("Backend::pg is on PostgreSQL")
    };
    let db = db.clone();
    let config = SessionConfig::default().refresh(RefreshConfig::default().grace(5 * SECOND));
    (common::harness(backend, config), db)
}

async fn remembered_login(h: &Harness, user_id: i64) -> Login {
    h.manager
        .login(user_id, LoginOptions::new().remember(true))
        .await
        .unwrap()
}

async fn refresh(h: &Harness, token: &RefreshToken) -> Refresh {
    h.manager
        .refresh(token, ClientInfo::default())
        .await
        .unwrap()
}

async fn refreshed(h: &Harness, token: &RefreshToken) -> Login {
    match refresh(h, token).await {
        Refresh::Refreshed(login) => *login,
        other => panic!("expected a refresh, got {other:?}"),
    }
}

/// A made-up secret for a known (public) series id.
fn forged(token: &RefreshToken) -> RefreshToken {
    let text = format!(
        "{}.{}",
        token.series().simple(),
        SessionToken::generate().expose()
    );
    RefreshToken::parse(&text).unwrap()
}

/// Every row of the sessions and series tables, to compare before and after.
async fn stored_rows(db: &TestDb) -> String {
    db.client()
        .await
        .query_one(
            "SELECT concat_ws(' | ', \
                (SELECT string_agg(t::text, ';' ORDER BY t::text) FROM sessions t), \
                (SELECT string_agg(t::text, ';' ORDER BY t::text) FROM refresh_series t), \
                (SELECT string_agg(t::text, ';' ORDER BY t::text) FROM refresh_secrets t))",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_for_a_known_series_changes_no_row() {
    let (h, db) = harness().await;
    let login = remembered_login(&h, 1).await;
    let r0 = login.refresh.clone().unwrap();
    let before = stored_rows(&db).await;
    assert!(matches!(refresh(&h, &forged(&r0)).await, Refresh::Invalid));
    assert_eq!(
        stored_rows(&db).await,
        before,
        "a forged secret changed rows"
    );
    // Also once the series has used and superseded secrets, and after the grace window.
    refreshed(&h, &r0).await;
    h.clock.advance(60 * SECOND);
    let before = stored_rows(&db).await;
    assert!(matches!(refresh(&h, &forged(&r0)).await, Refresh::Invalid));
    assert_eq!(
        stored_rows(&db).await,
        before,
        "a forged secret changed rows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_use_inside_the_grace_window_changes_no_row() {
    let (h, db) = harness().await;
    let r0 = remembered_login(&h, 1).await.refresh.unwrap();
    refreshed(&h, &r0).await;
    h.clock.advance(SECOND);
    refreshed(&h, &r0).await;
    let before = stored_rows(&db).await;
    h.clock.advance(SECOND);
    assert!(matches!(refresh(&h, &r0).await, Refresh::Invalid));
    assert_eq!(stored_rows(&db).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_series_keeps_eight_secrets_and_a_forgotten_one_changes_no_row() {
    let (h, db) = harness().await;
    let mut tokens = vec![remembered_login(&h, 1).await.refresh.unwrap()];
    for _ in 0..12 {
        h.clock.advance(60 * SECOND);
        let next = refreshed(&h, tokens.last().unwrap()).await;
        tokens.push(next.refresh.unwrap());
    }
    let secrets: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM refresh_secrets", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(secrets, 8);
    let before = stored_rows(&db).await;
    assert!(matches!(refresh(&h, &tokens[0]).await, Refresh::Invalid));
    assert_eq!(stored_rows(&db).await, before);
    assert!(matches!(
        refresh(&h, &tokens[10]).await,
        Refresh::ReuseDetected
    ));
}
