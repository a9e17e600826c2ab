//! One conformance suite, run against `PgStore` (real PostgreSQL) and `MemoryStore`: every row
//! of SPEC §5 (validation results and errors) and §7 (lifecycle), including the original
//! module's own test cases.

mod common;

use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::StatusCode;
use common::app::{bearer, login, send};
use common::{Backend, Harness, harness};
use tower_session_auth::{
    ClientInfo, LoginOptions, RefreshConfig, SessionConfig, SessionId, clock::Clock,
    store::CharacterSelection, store::Purged, store::Scope, store::Validation, token::SessionToken,
};

const MINUTE: Duration = Duration::from_secs(60);

async fn login_token(h: &Harness, user_id: i64) -> (SessionToken, SessionId) {
    let login = h.manager.login(user_id, LoginOptions::new()).await.unwrap();
    (login.token, login.session.id)
}

async fn username_and_role_lookups(backend: Backend) {
    let h = harness(backend, SessionConfig::default());
    let (token, _) = login_token(&h, 3).await;
    assert_eq!(h.manager.username(&token).await.as_deref(), Some("admin"));
    assert_eq!(
        h.manager.username_and_role(&token).await,
        Some(("admin".to_owned(), "admin".to_owned()))
    );
    let missing = SessionToken::generate();
    assert_eq!(h.manager.username(&missing).await, None);
    assert_eq!(h.manager.username_and_role(&missing).await, None);
    // A lookup is read-only: it does not touch the session.
    let before = h.manager.list_for_user(3).await.unwrap()[0].last_activity;
    h.clock.advance(10 * MINUTE);
    h.manager.username(&token).await.unwrap();
    assert_eq!(
        h.manager.list_for_user(3).await.unwrap()[0].last_activity,
        before
    );
}

async fn valid_session_resolves_the_user(backend: Backend) {
    let h = harness(backend, SessionConfig::default());
    let (token, session_id) = login_token(&h, 1).await;
    let reply = send(&h.app, bearer("/me", token.expose())).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["username"], "player");
    assert_eq!(reply.body["role"], "player");
    assert_eq!(reply.body["session_id"], session_id.to_string());
}

async fn invalid_token_is_401(backend: Backend) {
    let h = harness(backend, SessionConfig::default());
    for token in [
        SessionToken::generate().expose().to_owned(),
        "garbage".to_owned(),
    ] {
        let reply = send(&h.app, bearer("/me", &token)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.detail(), "Invalid or expired session");
        assert_eq!(reply.headers["www-authenticate"], "Bearer");
        assert_eq!(reply.headers["content-type"], "application/json");
    }
    let reply = send(
        &h.app,
        axum::http::Request::get("/me")
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.detail(), "Invalid or expired session");
}

async fn missing_user_role_or_inactive_is_invalid_session_user(backend: Backend) {
    let h = harness(backend, SessionConfig::default());
    h.backend.add_user(7, "norole", None, true).await;
    h.backend.add_user(8, "emptyrole", Some(""), true).await;
    h.backend
        .add_user(9, "inactive", Some("admin"), false)
        .await;
    h.backend.add_user(6, "doomed", Some("player"), true).await;
    let (doomed, _) = login_token(&h, 6).await;
    h.backend.delete_user(6).await;
    let mut tokens = vec![doomed];
    for user in [7, 8, 9] {
        tokens.push(login_token(&h, user).await.0);
    }
    for token in tokens {
        let reply = send(&h.app, bearer("/me", token.expose())).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.detail(), "Invalid session user");
        assert_eq!(reply.headers["www-authenticate"], "Bearer");
        // Optional auth sees "nobody" rather than an error.
        let reply = send(&h.app, bearer("/optional", token.expose())).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.body["username"].is_null());
    }
}

async fn expired_session_is_rejected_and_deleted(backend: Backend) {
    let config = SessionConfig::default().idle_timeout(Some(30 * MINUTE));
    let h = harness(backend, config);
    let (token, _) = login_token(&h, 1).await;
    let (other, _) = login_token(&h, 2).await;
    h.clock.advance(31 * MINUTE);
    assert_eq!(
        h.manager.validate(&token, Scope::Game).await.unwrap(),
        Validation::Expired
    );
    assert_eq!(
        h.manager.validate(&token, Scope::Game).await.unwrap(),
        Validation::Unknown
    );
    let reply = send(&h.app, bearer("/me", other.expose())).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.detail(), "Invalid or expired session");
    assert!(h.manager.list_for_user(1).await.unwrap().is_empty());
    // Both rows are gone, not merely hidden.
    assert_eq!(h.manager.clear_all().await.unwrap(), 0);
}

async fn sliding_expiry_moves_expires_at_forward(backend: Backend) {
    let config = SessionConfig::default()
        .idle_timeout(Some(30 * MINUTE))
        .touch_interval(MINUTE);
    let h = harness(backend, config);
    let (token, _) = login_token(&h, 1).await;
    let first = h.manager.list_for_user(1).await.unwrap()[0].clone();
    // 20 minutes in, a request slides the expiry to now + 30 min ...
    h.clock.advance(20 * MINUTE);
    assert_eq!(
        send(&h.app, bearer("/me", token.expose())).await.status,
        StatusCode::OK
    );
    let slid = h.manager.list_for_user(1).await.unwrap()[0].clone();
    assert_eq!(slid.last_activity, h.manager.now());
    assert_eq!(
        slid.expires_at,
        Some(h.manager.now() + time::Duration::minutes(30))
    );
    assert!(slid.expires_at > first.expires_at);
    // ... so 20 more minutes (40 after login) the session still lives.
    h.clock.advance(20 * MINUTE);
    assert_eq!(
        send(&h.app, bearer("/me", token.expose())).await.status,
        StatusCode::OK
    );
}

async fn touch_is_debounced(backend: Backend) {
    let config = SessionConfig::default().touch_interval(MINUTE);
    let h = harness(backend, config);
    let (token, _) = login_token(&h, 1).await;
    let created = h.manager.list_for_user(1).await.unwrap()[0].clone();
    h.clock.advance(Duration::from_secs(30));
    assert_eq!(
        send(&h.app, bearer("/me", token.expose())).await.status,
        StatusCode::OK
    );
    assert_eq!(h.manager.list_for_user(1).await.unwrap()[0], created);
    h.clock.advance(Duration::from_secs(31));
    assert_eq!(
        send(&h.app, bearer("/me", token.expose())).await.status,
        StatusCode::OK
    );
    let touched = h.manager.list_for_user(1).await.unwrap()[0].clone();
    assert_eq!(touched.last_activity, h.manager.now());
}

async fn non_sliding_expiry_stays_put(backend: Backend) {
    let config = SessionConfig::default()
        .idle_timeout(Some(30 * MINUTE))
        .sliding(false)
        .touch_interval(Duration::ZERO);
    let h = harness(backend, config);
    let (token, _) = login_token(&h, 1).await;
    h.clock.advance(20 * MINUTE);
    assert_eq!(
        send(&h.app, bearer("/me", token.expose())).await.status,
        StatusCode::OK
    );
    h.clock.advance(11 * MINUTE);
    assert_eq!(
        send(&h.app, bearer("/me", token.expose())).await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn ttl_disabled_never_expires(backend: Backend) {
    let config = SessionConfig::default()
        .idle_timeout(None)
        .absolute_lifetime(None);
    let h = harness(backend, config);
    let (token, _) = login_token(&h, 1).await;
    let record = h.manager.list_for_user(1).await.unwrap()[0].clone();
    assert_eq!(record.expires_at, None);
    assert_eq!(record.absolute_expires_at, None);
    h.clock.advance(Duration::from_secs(10 * 365 * 24 * 3600));
    assert_eq!(
        send(&h.app, bearer("/me", token.expose())).await.status,
        StatusCode::OK
    );
    assert_eq!(h.manager.purge_expired().await.unwrap(), 0);
}

async fn absolute_lifetime_is_never_extended(backend: Backend) {
    let config = SessionConfig::default()
        .idle_timeout(Some(60 * MINUTE))
        .absolute_lifetime(Some(120 * MINUTE))
        .touch_interval(Duration::ZERO);
    let h = harness(backend, config);
    let (token, _) = login_token(&h, 1).await;
    for _ in 0..3 {
        h.clock.advance(39 * MINUTE);
        assert_eq!(
            send(&h.app, bearer("/me", token.expose())).await.status,
            StatusCode::OK
        );
    }
    h.clock.advance(4 * MINUTE); // 121 minutes after login, active all along
    assert_eq!(
        send(&h.app, bearer("/me", token.expose())).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(h.manager.count_active(None).await.unwrap(), 0);
}

async fn permissions_follow_the_policy(backend: Backend) {
    let h = harness(backend, SessionConfig::default());
    let (player, _) = login_token(&h, 1).await;
    let (builder, _) = login_token(&h, 2).await;
    let (admin, _) = login_token(&h, 3).await;
    let (superuser, _) = login_token(&h, 4).await;

    let reply = send(&h.app, bearer("/logs", admin.expose())).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, Some("admin"))
    );
    let reply = send(&h.app, bearer("/manage", player.expose())).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.detail(),
        "Insufficient permissions. Required: manage_users"
    );
    let reply = send(&h.app, bearer("/logs", builder.expose())).await;
    assert_eq!(
        reply.detail(),
        "Insufficient permissions. Required: view_logs"
    );
    let reply = send(&h.app, bearer("/manage", admin.expose())).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    for path in ["/logs", "/manage", "/admin-area"] {
        assert_eq!(
            send(&h.app, bearer(path, superuser.expose())).await.status,
            StatusCode::OK
        );
    }
    let reply = send(&h.app, bearer("/admin-area", builder.expose())).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.detail(),
        "Insufficient privileges. Minimum role required: admin"
    );
    assert_eq!(
        send(&h.app, bearer("/admin-area", admin.expose()))
            .await
            .status,
        StatusCode::OK
    );
    // No session at all is 401 before any permission is considered.
    let reply = send(&h.app, bearer("/logs", SessionToken::generate().expose())).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

async fn role_change_and_deactivation_apply_on_the_next_request(backend: Backend) {
    let h = harness(backend, SessionConfig::default());
    let (token, _) = login_token(&h, 1).await;
    assert_eq!(
        send(&h.app, bearer("/logs", token.expose())).await.status,
        StatusCode::FORBIDDEN
    );
    h.backend.set_role(1, Some("ADMIN")).await;
    assert_eq!(
        send(&h.app, bearer("/logs", token.expose())).await.status,
        StatusCode::OK
    );
    h.backend.set_active(1, false).await;
    let reply = send(&h.app, bearer("/logs", token.expose())).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.detail(), "Invalid session user");
}

async fn game_route_needs_an_explicit_character_selection(backend: Backend) {
    let h = harness(backend, SessionConfig::default());
    // The admin has exactly one character, and still must select it.
    let (token, session_id) = login_token(&h, 3).await;
    let reply = send(&h.app, bearer("/game", token.expose())).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(
        reply.detail(),
        "No character selected for session. Select a character first."
    );
    let selected = h.manager.select_character(session_id, 3, 30).await.unwrap();
    let CharacterSelection::Selected(character) = selected else {
        panic!("selection failed: {selected:?}")
    };
    assert_eq!(character.name, "admin_char");
    assert_eq!(character.world_id.as_deref(), Some("pipeworks_web"));
    let reply = send(&h.app, bearer("/game", token.expose())).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["character_name"], "admin_char");
    assert_eq!(reply.body["world_id"], "pipeworks_web");
    assert_eq!(reply.body["character_id"], 30);
}

async fn characters_of_other_users_cannot_be_selected(backend: Backend) {
    let h = harness(backend, SessionConfig::default());
    let (token, session_id) = login_token(&h, 1).await;
    assert_eq!(
        h.manager.select_character(session_id, 1, 30).await.unwrap(),
        CharacterSelection::CharacterNotFound
    );
    assert_eq!(
        h.manager
            .select_character(session_id, 1, 999)
            .await
            .unwrap(),
        CharacterSelection::CharacterNotFound
    );
    // Claiming another user's session does not work either.
    assert_eq!(
        h.manager.select_character(session_id, 3, 30).await.unwrap(),
        CharacterSelection::SessionNotFound
    );
    let reply = send(&h.app, bearer("/game", token.expose())).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(
        h.manager.list_for_user(1).await.unwrap()[0].character_id,
        None
    );
}

async fn missing_character_or_world_is_409(backend: Backend) {
    let h = harness(backend, SessionConfig::default());
    let (token, session_id) = login_token(&h, 1).await;
    h.manager.select_character(session_id, 1, 11).await.unwrap();
    h.backend
        .set_character_world(11, 1, "player_alt", None)
        .await;
    let reply = send(&h.app, bearer("/game", token.expose())).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.detail(), "Character world not found");
    h.backend.delete_character(11).await;
    let reply = send(&h.app, bearer("/game", token.expose())).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.detail(), "Selected character not found");
    // Account routes keep working.
    assert_eq!(
        send(&h.app, bearer("/me", token.expose())).await.status,
        StatusCode::OK
    );
}

async fn session_world_is_resynced_to_the_characters(backend: Backend) {
    let h = harness(backend, SessionConfig::default());
    let (token, session_id) = login_token(&h, 1).await;
    h.manager.select_character(session_id, 1, 11).await.unwrap();
    assert_eq!(
        h.manager.list_for_user(1).await.unwrap()[0]
            .world_id
            .as_deref(),
        Some("daily_undertaking")
    );
    h.backend
        .set_character_world(11, 1, "player_alt", Some("pipeworks_web"))
        .await;
    let reply = send(&h.app, bearer("/game", token.expose())).await;
    assert_eq!(reply.body["world_id"], "pipeworks_web");
    assert_eq!(
        h.manager.list_for_user(1).await.unwrap()[0]
            .world_id
            .as_deref(),
        Some("pipeworks_web")
    );
}

/// `player` logged in (30 min idle timeout, 1 min touch interval) with `player_alt` selected,
/// which has since moved from `daily_undertaking` to `pipeworks_web`: the stored world is stale.
async fn player_whose_character_moved(backend: Backend) -> (Harness, SessionToken) {
    let config = SessionConfig::default()
        .idle_timeout(Some(30 * MINUTE))
        .touch_interval(MINUTE);
    let h = harness(backend, config);
    let (token, session_id) = login_token(&h, 1).await;
    h.manager.select_character(session_id, 1, 11).await.unwrap();
    h.backend
        .set_character_world(11, 1, "player_alt", Some("pipeworks_web"))
        .await;
    (h, token)
}

/// What `validate` returns is the session as stored after its own touch and world resync
/// (the validation cache keeps it, and decides from its `last_activity` when to touch next).
async fn validation_returns_the_session_as_stored(backend: Backend) {
    let (h, token) = player_whose_character_moved(backend).await;
    let mut touched_at = None;
    for (step, touch_due) in [
        (Duration::from_secs(90), true),
        (Duration::from_secs(10), false),
    ] {
        h.clock.advance(step);
        if touch_due {
            touched_at = Some(h.manager.now());
        }
        let Validation::Valid(view) = h.manager.validate(&token, Scope::Game).await.unwrap() else {
            panic!("the session is live")
        };
        let stored = h.manager.list_for_user(1).await.unwrap().remove(0);
        assert_eq!(view.session, stored);
        assert_eq!(stored.world_id.as_deref(), Some("pipeworks_web"));
        assert_eq!(Some(stored.last_activity), touched_at);
        assert_eq!(
            stored.expires_at,
            Some(stored.last_activity + time::Duration::minutes(30))
        );
        let user = view.user.as_ref().expect("the user row");
        assert_eq!((user.username.as_str(), user.is_active), ("player", true));
        let character = view.character.as_ref().expect("the character row");
        assert_eq!(character.name, "player_alt");
    }
}

/// A validation at `Scope::User` (what `AuthUser` asks for) touches the session and deletes
/// it once expired like one at `Scope::Game`, but reads no character and leaves the stored
/// world alone; the next `GameUser` request resyncs it.
async fn a_user_scope_validation_touches_but_reads_no_character(backend: Backend) {
    let (h, token) = player_whose_character_moved(backend).await;
    h.clock.advance(Duration::from_secs(90));
    let Validation::Valid(view) = h.manager.validate(&token, Scope::User).await.unwrap() else {
        panic!("the session is live")
    };
    let stored = h.manager.list_for_user(1).await.unwrap().remove(0);
    assert_eq!(view.session, stored);
    assert_eq!(stored.last_activity, h.manager.now(), "touched");
    assert_eq!(stored.character_id, Some(11));
    assert_eq!(stored.world_id.as_deref(), Some("daily_undertaking"));
    assert_eq!(
        view.user.as_ref().map(|u| u.username.as_str()),
        Some("player")
    );
    assert_eq!(view.character, None);

    let Validation::Valid(view) = h.manager.validate(&token, Scope::Game).await.unwrap() else {
        panic!("the session is live")
    };
    assert_eq!(
        view.character.as_ref().map(|c| c.name.as_str()),
        Some("player_alt")
    );
    let stored = h.manager.list_for_user(1).await.unwrap().remove(0);
    assert_eq!(stored.world_id.as_deref(), Some("pipeworks_web"));

    h.clock.advance(31 * MINUTE);
    assert_eq!(
        h.manager.validate(&token, Scope::User).await.unwrap(),
        Validation::Expired
    );
    assert_eq!(
        h.manager.clear_all().await.unwrap(),
        0,
        "the row was deleted"
    );
}

async fn clear_all_returns_the_count_removed(backend: Backend) {
    let h = harness(backend, SessionConfig::default());
    for user in [1, 1, 2, 3] {
        login_token(&h, user).await;
    }
    assert_eq!(h.manager.clear_all().await.unwrap(), 4);
    assert_eq!(h.manager.clear_all().await.unwrap(), 0);
}

async fn remove_returns_true_then_false(backend: Backend) {
    let h = harness(backend, SessionConfig::default());
    let (token, id) = login_token(&h, 1).await;
    assert!(h.manager.remove(id).await.unwrap());
    assert!(!h.manager.remove(id).await.unwrap());
    assert_eq!(
        send(&h.app, bearer("/me", token.expose())).await.status,
        StatusCode::UNAUTHORIZED
    );
    let (token, _) = login_token(&h, 1).await;
    assert!(h.manager.remove_by_token(&token).await.unwrap());
    assert!(!h.manager.remove_by_token(&token).await.unwrap());
}

async fn active_count_excludes_expired_and_respects_the_window(backend: Backend) {
    let config = SessionConfig::default()
        .idle_timeout(Some(60 * MINUTE))
        .touch_interval(Duration::ZERO);
    let h = harness(backend, config);
    let (old, _) = login_token(&h, 1).await;
    h.clock.advance(40 * MINUTE);
    let (recent, _) = login_token(&h, 2).await;
    assert_eq!(h.manager.count_active(None).await.unwrap(), 2);
    assert_eq!(h.manager.count_active(Some(30 * MINUTE)).await.unwrap(), 1);
    h.clock.advance(25 * MINUTE); // the first is now expired (65 min idle)
    assert_eq!(h.manager.count_active(None).await.unwrap(), 1);
    assert_eq!(h.manager.count_active(Some(30 * MINUTE)).await.unwrap(), 1);
    send(&h.app, bearer("/me", recent.expose())).await;
    assert_eq!(h.manager.count_active(Some(MINUTE)).await.unwrap(), 1);
    assert_eq!(h.manager.purge_expired().await.unwrap(), 1);
    assert_eq!(
        h.manager.validate(&old, Scope::Game).await.unwrap(),
        Validation::Unknown
    );
}

async fn single_session_mode_leaves_one_session(backend: Backend) {
    let config = SessionConfig::default().max_sessions_per_user(Some(1));
    let h = harness(backend, config);
    let (first, _) = login_token(&h, 1).await;
    login_token(&h, 2).await;
    h.clock.advance(Duration::from_secs(1));
    let (second, second_id) = login_token(&h, 1).await;
    let sessions = h.manager.list_for_user(1).await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].id, second_id);
    assert_eq!(
        send(&h.app, bearer("/me", first.expose())).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&h.app, bearer("/me", second.expose())).await.status,
        StatusCode::OK
    );
    // Other users are unaffected.
    assert_eq!(h.manager.list_for_user(2).await.unwrap().len(), 1);
}

async fn max_sessions_keeps_the_newest_n(backend: Backend) {
    let config = SessionConfig::default().max_sessions_per_user(Some(2));
    let h = harness(backend, config);
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(login_token(&h, 1).await.1);
        h.clock.advance(Duration::from_secs(1));
    }
    let left: Vec<SessionId> = h
        .manager
        .list_for_user(1)
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(left, vec![ids[3], ids[2]]);
}

async fn client_info_is_recorded_and_listed(backend: Backend) {
    let h = harness(backend, SessionConfig::default());
    let mut headers = http::HeaderMap::new();
    headers.insert("x-client-type", "  Web-Browser \t".parse().unwrap());
    headers.insert(
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"
            .parse()
            .unwrap(),
    );
    let ip = "203.0.113.7".parse().unwrap();
    let login = h
        .manager
        .login(
            1,
            LoginOptions::new().client(ClientInfo::from_headers(&headers).with_ip(ip)),
        )
        .await
        .unwrap();
    let blank = h
        .manager
        .login(
            1,
            LoginOptions::new().client(ClientInfo::default().with_client_type("   ")),
        )
        .await
        .unwrap();
    let listed = h.manager.list_for_user(1).await.unwrap();
    let first = listed.iter().find(|s| s.id == login.session.id).unwrap();
    assert_eq!(first.client_type, "web-browser");
    assert_eq!(first.ip, Some(ip));
    assert_eq!(
        first.user_agent.as_deref(),
        Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0")
    );
    let second = listed.iter().find(|s| s.id == blank.session.id).unwrap();
    assert_eq!(second.client_type, "unknown");
    assert_eq!(second.ip, None);
}

async fn session_management_revokes_only_what_it_should(backend: Backend) {
    let h = harness(backend, SessionConfig::default());
    let (a, a_id) = login_token(&h, 1).await;
    let (b, b_id) = login_token(&h, 1).await;
    let (c, _) = login_token(&h, 1).await;
    let (other, other_id) = login_token(&h, 2).await;
    // A user cannot revoke someone else's session.
    assert!(!h.manager.revoke(1, other_id).await.unwrap());
    assert!(h.manager.revoke(1, b_id).await.unwrap());
    assert_eq!(
        send(&h.app, bearer("/me", b.expose())).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(h.manager.revoke_others(1, a_id).await.unwrap(), 1);
    assert_eq!(
        send(&h.app, bearer("/me", c.expose())).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&h.app, bearer("/me", a.expose())).await.status,
        StatusCode::OK
    );
    assert_eq!(h.manager.revoke_all(1).await.unwrap(), 1);
    assert_eq!(
        send(&h.app, bearer("/me", a.expose())).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&h.app, bearer("/me", other.expose())).await.status,
        StatusCode::OK
    );
}

async fn sweeper_purges_expired_sessions(backend: Backend) {
    let config = SessionConfig::default().idle_timeout(Some(MINUTE));
    let h = harness(backend, config);
    login_token(&h, 1).await;
    login_token(&h, 2).await;
    h.clock.advance(2 * MINUTE);
    let (live, _) = login_token(&h, 3).await;
    assert_eq!(h.backend.stored_sessions().await, 3);
    let sweeper = h.manager.spawn_sweeper(Duration::from_millis(20)).unwrap();
    let mut stored = 3;
    for _ in 0..250 {
        stored = h.backend.stored_sessions().await;
        if stored == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sweeper.abort();
    assert_eq!(stored, 1);
    assert!(matches!(
        h.manager.validate(&live, Scope::Game).await.unwrap(),
        Validation::Valid(_)
    ));
}

async fn purge_works_in_batches_and_spares_live_sessions(backend: Backend) {
    let config = SessionConfig::default()
        .idle_timeout(Some(MINUTE))
        .refresh(RefreshConfig::default().idle_timeout(Some(MINUTE)))
        .purge_batch_size(NonZeroU32::new(2).unwrap());
    let h = harness(backend, config);
    for user in 1..=3 {
        h.manager
            .login(user, LoginOptions::new().remember(true))
            .await
            .unwrap();
    }
    login_token(&h, 4).await;
    login_token(&h, 4).await;
    h.clock.advance(2 * MINUTE);
    let (live, _) = login_token(&h, 1).await;
    let (other_live, _) = login_token(&h, 2).await;
    assert_eq!(h.backend.stored_sessions().await, 7);
    // One batch deletes at most its size, of sessions and of series alike.
    let first = h.backend.purge_batch(h.clock.now(), 2).await;
    assert_eq!(first, Purged::new(2, 2));
    assert!(first.was_full(2));
    assert_eq!(h.backend.stored_sessions().await, 5);
    // The manager goes on batch after batch until every expired row is gone.
    assert_eq!(h.manager.purge_expired().await.unwrap(), 3);
    assert_eq!(h.backend.stored_sessions().await, 2);
    let last = h.backend.purge_batch(h.clock.now(), 2).await;
    assert_eq!(last, Purged::default());
    assert!(!last.was_full(2));
    for token in [&live, &other_live] {
        assert!(matches!(
            h.manager.validate(token, Scope::Game).await.unwrap(),
            Validation::Valid(_)
        ));
    }
}

async fn logout_removes_the_session(backend: Backend) {
    let h = harness(backend, SessionConfig::default());
    let (token, _, _) = login(&h.app, 1).await;
    let reply = send(&h.app, {
        let mut r = bearer("/logout", &token);
        *r.method_mut() = http::Method::POST;
        r
    })
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["removed"], true);
    // Authenticated by header: no cookie is set or cleared.
    assert!(reply.set_cookies().is_empty());
    assert_eq!(
        send(&h.app, bearer("/me", &token)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// Settings that used to panic at request time (an overflowing expiry, a cookie that is not a
/// valid header, a `__Host-` cookie without `Secure`) are refused when the manager is built;
/// a zero sweep interval is refused; an enormous activity window counts every live session.
async fn configuration_that_could_panic_is_refused_when_built(backend: Backend) {
    use tower_session_auth::{CookieConfig, RefreshConfig, SessionManager};

    let store = match &backend {
        Backend::Pg(db) => SessionManager::try_new(db.store.clone(), SessionConfig::default()),
        Backend::Memory(store) => SessionManager::try_new(store.clone(), SessionConfig::default()),
    };
    assert!(store.is_ok());
    let refused: [(SessionConfig, &str); 9] = [
        (
            SessionConfig::default().idle_timeout(Some(Duration::MAX)),
            "idle_timeout",
        ),
        (
            SessionConfig::default().absolute_lifetime(Some(Duration::from_secs(u64::MAX / 2))),
            "absolute_lifetime",
        ),
        (
            SessionConfig::default().touch_interval(Duration::MAX),
            "touch_interval",
        ),
        (
            SessionConfig::default().refresh(RefreshConfig::default().grace(Duration::MAX)),
            "refresh.grace",
        ),
        (
            SessionConfig::default()
                .refresh(RefreshConfig::default().idle_timeout(Some(Duration::MAX))),
            "refresh.idle_timeout",
        ),
        (
            SessionConfig::default().cookie(CookieConfig::default().name("id; Domain=evil")),
            "cookie.name",
        ),
        (
            SessionConfig::default().cookie(CookieConfig::default().path("/\n")),
            "cookie.path",
        ),
        (
            SessionConfig::default()
                .cookie(CookieConfig::default().host_prefix(true).secure(false)),
            "cookie.secure",
        ),
        (
            SessionConfig::default().cookie(CookieConfig::default().host_prefix(true).path("/app")),
            "cookie.path",
        ),
    ];
    for (config, field) in refused {
        let built = match &backend {
            Backend::Pg(db) => SessionManager::try_new(db.store.clone(), config),
            Backend::Memory(store) => SessionManager::try_new(store.clone(), config),
        };
        assert_eq!(built.map(|_| ()).unwrap_err().field, field);
    }

    let h = harness(backend, SessionConfig::default());
    assert!(h.manager.spawn_sweeper(Duration::ZERO).is_err());
    login_token(&h, 1).await;
    assert_eq!(
        h.manager.count_active(Some(Duration::MAX)).await.unwrap(),
        1
    );
}

/// A login without client details records the client type `unknown`, as the column default.
async fn default_client_info_records_an_unknown_client_type(backend: Backend) {
    let h = harness(backend, SessionConfig::default());
    login_token(&h, 1).await;
    let sessions = h.manager.list_for_user(1).await.unwrap();
    assert_eq!(sessions[0].client_type, "unknown");
    assert_eq!(ClientInfo::default().client_type, "unknown");
}

/// The stored row of a session, by id.
async fn stored(
    h: &Harness,
    user_id: i64,
    id: SessionId,
) -> tower_session_auth::store::SessionRecord {
    h.manager
        .list_for_user(user_id)
        .await
        .unwrap()
        .into_iter()
        .find(|session| session.id == id)
        .expect("the session is listed")
}

async fn reauthenticate_moves_authenticated_at_on_the_same_session(backend: Backend) {
    let h = harness(backend, SessionConfig::default());
    let login = h
        .manager
        .login(1, LoginOptions::new().remember(true))
        .await
        .unwrap();
    let (id, t0) = (login.session.id, login.session.created_at);
    assert!(h.manager.is_recently_authenticated(&login.session));
    h.clock.advance(10 * MINUTE);
    let before = stored(&h, 1, id).await;
    assert!(!h.manager.is_recently_authenticated(&before));

    assert!(h.manager.reauthenticate(id).await.unwrap());
    let after = stored(&h, 1, id).await;
    assert_eq!(after.authenticated_at, h.manager.now());
    assert!(h.manager.is_recently_authenticated(&after));
    // Nothing else moved: same session, login time, activity, expiry, series.
    assert_eq!(
        {
            let mut expected = after.clone();
            expected.authenticated_at = t0;
            expected
        },
        before
    );
    // The same token still validates to the same session, and the series still refreshes.
    match h.manager.validate(&login.token, Scope::User).await.unwrap() {
        Validation::Valid(view) => {
            assert_eq!(view.session.id, id);
            assert_eq!(view.session.authenticated_at, after.authenticated_at);
        }
        other => panic!("expected a live session, got {other:?}"),
    }
    assert!(matches!(
        h.manager
            .refresh(login.refresh.as_ref().unwrap(), ClientInfo::default())
            .await
            .unwrap(),
        tower_session_auth::Refresh::Refreshed(_)
    ));
}

async fn reauthenticate_changes_nothing_for_unknown_or_expired_sessions(backend: Backend) {
    let h = harness(backend, SessionConfig::default().idle_timeout(Some(MINUTE)));
    let (_, other_id) = login_token(&h, 2).await;
    let (token, id) = login_token(&h, 1).await;
    h.clock.advance(Duration::from_secs(30));
    let before = [stored(&h, 1, id).await, stored(&h, 2, other_id).await];
    assert!(!h.manager.reauthenticate(SessionId::new()).await.unwrap());
    assert_eq!(
        [stored(&h, 1, id).await, stored(&h, 2, other_id).await],
        before
    );
    h.clock.advance(2 * MINUTE);
    assert!(!h.manager.reauthenticate(id).await.unwrap());
    // Still expired: deleted when presented.
    assert_eq!(
        h.manager.validate(&token, Scope::User).await.unwrap(),
        Validation::Expired
    );
}

async fn a_refreshed_session_is_recent_only_after_reauthentication(backend: Backend) {
    let h = harness(backend, SessionConfig::default());
    let login = h
        .manager
        .login(1, LoginOptions::new().remember(true))
        .await
        .unwrap();
    h.clock.advance(Duration::from_secs(1));
    let refreshed = match h
        .manager
        .refresh(login.refresh.as_ref().unwrap(), ClientInfo::default())
        .await
        .unwrap()
    {
        tower_session_auth::Refresh::Refreshed(refreshed) => refreshed.session,
        other => panic!("expected a refresh, got {other:?}"),
    };
    // The login is one second old, but this session came from the refresh token.
    assert_eq!(refreshed.authenticated_at, login.session.created_at);
    assert!(!h.manager.is_recently_authenticated(&refreshed));
    assert!(h.manager.reauthenticate(refreshed.id).await.unwrap());
    let after = stored(&h, 1, refreshed.id).await;
    assert!(after.refreshed);
    assert!(h.manager.is_recently_authenticated(&after));
    h.clock.advance(10 * MINUTE);
    assert!(!h.manager.is_recently_authenticated(&after));
}

both_stores!(
    default_client_info_records_an_unknown_client_type,
    configuration_that_could_panic_is_refused_when_built,
    reauthenticate_moves_authenticated_at_on_the_same_session,
    reauthenticate_changes_nothing_for_unknown_or_expired_sessions,
    a_refreshed_session_is_recent_only_after_reauthentication,
    validation_returns_the_session_as_stored,
    a_user_scope_validation_touches_but_reads_no_character,
    username_and_role_lookups,
    valid_session_resolves_the_user,
    invalid_token_is_401,
    missing_user_role_or_inactive_is_invalid_session_user,
    expired_session_is_rejected_and_deleted,
    sliding_expiry_moves_expires_at_forward,
    touch_is_debounced,
    non_sliding_expiry_stays_put,
    ttl_disabled_never_expires,
    absolute_lifetime_is_never_extended,
    permissions_follow_the_policy,
    role_change_and_deactivation_apply_on_the_next_request,
    game_route_needs_an_explicit_character_selection,
    characters_of_other_users_cannot_be_selected,
    missing_character_or_world_is_409,
    session_world_is_resynced_to_the_characters,
    clear_all_returns_the_count_removed,
    remove_returns_true_then_false,
    active_count_excludes_expired_and_respects_the_window,
    single_session_mode_leaves_one_session,
    max_sessions_keeps_the_newest_n,
    client_info_is_recorded_and_listed,
    session_management_revokes_only_what_it_should,
    sweeper_purges_expired_sessions,
    purge_works_in_batches_and_spares_live_sessions,
    logout_removes_the_session,
);
