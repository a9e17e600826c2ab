//! Checks of [`CharacterStore`](crate::store::CharacterStore): binding a character to a
//! session, and what a validation at [`Scope::Game`] reads of it. They run when
//! [`SessionStore::characters`](crate::store::SessionStore::characters) is `Some`.

use std::time::Duration;

use super::{Fixture, Harness, MINUTE, harness};
use crate::SessionConfig;
use crate::store::{CharacterRecord, CharacterSelection, Scope, Validation};
use crate::token::SessionToken;

/// A session has no character until one is selected explicitly, even for a user with a
/// single character; once selected, a validation at [`Scope::Game`] returns the character,
/// and the session records it with the character's world.
pub async fn a_character_is_bound_only_by_an_explicit_selection<F: Fixture>(fixture: F) {
    let h = harness(fixture, SessionConfig::default());
    let (token, session_id) = h.login(3).await;
    let view = h.live(&token, Scope::Game).await;
    assert_eq!(view.session.character_id, None);
    assert_eq!(view.character, None);
    let selected = h
        .manager
        .select_character(session_id, h.id(3), 30)
        .await
        .unwrap();
    let CharacterSelection::Selected(character) = selected else {
        panic!("selection failed: {selected:?}")
    };
    assert_eq!(character.name, "admin_char");
    assert_eq!(character.world_id.as_deref(), Some("pipeworks_web"));
    let view = h.live(&token, Scope::Game).await;
    assert_eq!(view.session.character_id, Some(30));
    assert_eq!(view.session.world_id.as_deref(), Some("pipeworks_web"));
    assert_eq!(
        view.character,
        Some(CharacterRecord::new(
            "admin_char",
            Some("pipeworks_web".to_owned())
        ))
    );
}

/// A user cannot select another user's character or one that does not exist, nor select
/// one on another user's session; nothing is bound.
pub async fn characters_of_other_users_cannot_be_selected<F: Fixture>(fixture: F) {
    let h = harness(fixture, SessionConfig::default());
    let (token, session_id) = h.login(1).await;
    let select = |user_id, character_id| {
        h.manager
            .select_character(session_id, h.id(user_id), character_id)
    };
    assert_eq!(
        select(1, 30).await.unwrap(),
        CharacterSelection::CharacterNotFound
    );
    assert_eq!(
        select(1, 999).await.unwrap(),
        CharacterSelection::CharacterNotFound
    );
    // Claiming another user's session does not work either.
    assert_eq!(
        select(3, 30).await.unwrap(),
        CharacterSelection::SessionNotFound
    );
    let view = h.live(&token, Scope::Game).await;
    assert_eq!(view.session.character_id, None);
    assert_eq!(view.character, None);
    assert_eq!(h.sessions(1).await[0].character_id, None);
}

/// When the selected character loses its world, the view shows the character without one;
/// when it is deleted, the session still names it and the view has no character. The
/// account itself stays signed in.
pub async fn a_missing_character_or_world_is_reported<F: Fixture>(fixture: F) {
    let h = harness(fixture, SessionConfig::default());
    let (token, session_id) = h.login(1).await;
    h.manager
        .select_character(session_id, h.id(1), 11)
        .await
        .unwrap();
    h.fixture.set_character_world(11, None).await;
    let view = h.live(&token, Scope::Game).await;
    assert_eq!(
        view.character,
        Some(CharacterRecord::new("player_alt", None))
    );
    h.fixture.delete_character(11).await;
    let view = h.live(&token, Scope::Game).await;
    assert_eq!(view.session.character_id, Some(11));
    assert_eq!(view.character, None);
    assert!(h.signed_in(&token).await);
}

/// A validation at [`Scope::Game`] resyncs the session's world to its character's, in the
/// view and in the stored session.
pub async fn session_world_is_resynced_to_the_characters<F: Fixture>(fixture: F) {
    let h = harness(fixture, SessionConfig::default());
    let (token, session_id) = h.login(1).await;
    h.manager
        .select_character(session_id, h.id(1), 11)
        .await
        .unwrap();
    assert_eq!(
        h.sessions(1).await[0].world_id.as_deref(),
        Some("daily_undertaking")
    );
    h.fixture
        .set_character_world(11, Some("pipeworks_web"))
        .await;
    let view = h.live(&token, Scope::Game).await;
    assert_eq!(view.session.world_id.as_deref(), Some("pipeworks_web"));
    assert_eq!(
        view.character.as_ref().and_then(|c| c.world_id.as_deref()),
        Some("pipeworks_web")
    );
    assert_eq!(
        h.sessions(1).await[0].world_id.as_deref(),
        Some("pipeworks_web")
    );
}

/// `player` logged in (30 min idle timeout, 1 min touch interval) with `player_alt` selected,
/// which has since moved from `daily_undertaking` to `pipeworks_web`: the stored world is
/// stale.
async fn player_whose_character_moved<F: Fixture>(fixture: F) -> (Harness<F>, SessionToken) {
    let config = SessionConfig::default()
        .idle_timeout(Some(30 * MINUTE))
        .touch_interval(MINUTE);
    let h = harness(fixture, config);
    let (token, session_id) = h.login(1).await;
    h.manager
        .select_character(session_id, h.id(1), 11)
        .await
        .unwrap();
    h.fixture
        .set_character_world(11, Some("pipeworks_web"))
        .await;
    (h, token)
}

/// What a validation returns is the session as stored after its own touch and world resync
/// (a validation cache keeps it, and decides from its `last_activity` when to touch next),
/// whether the touch was due or not.
pub async fn validation_returns_the_session_as_stored<F: Fixture>(fixture: F) {
    let (h, token) = player_whose_character_moved(fixture).await;
    let mut touched_at = None;
    for (step, touch_due) in [
        (Duration::from_secs(90), true),
        (Duration::from_secs(10), false),
    ] {
        h.clock.advance(step);
        if touch_due {
            touched_at = Some(h.manager.now());
        }
        let view = h.live(&token, Scope::Game).await;
        let stored = h.sessions(1).await.remove(0);
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

/// A validation at [`Scope::User`] touches the session (and deletes it once expired) like
/// one at [`Scope::Game`], but reads no character and leaves the stored world alone; the
/// next validation at [`Scope::Game`] resyncs it.
pub async fn a_user_scope_validation_touches_but_reads_no_character<F: Fixture>(fixture: F) {
    let (h, token) = player_whose_character_moved(fixture).await;
    h.clock.advance(Duration::from_secs(90));
    let view = h.live(&token, Scope::User).await;
    let stored = h.sessions(1).await.remove(0);
    assert_eq!(view.session, stored);
    assert_eq!(stored.last_activity, h.manager.now(), "touched");
    assert_eq!(stored.character_id, Some(11));
    assert_eq!(stored.world_id.as_deref(), Some("daily_undertaking"));
    assert_eq!(
        view.user.as_ref().map(|u| u.username.as_str()),
        Some("player")
    );
    assert_eq!(view.character, None);

    let view = h.live(&token, Scope::Game).await;
    assert_eq!(
        view.character.as_ref().map(|c| c.name.as_str()),
        Some("player_alt")
    );
    let stored = h.sessions(1).await.remove(0);
    assert_eq!(stored.world_id.as_deref(), Some("pipeworks_web"));

    h.clock.advance(31 * MINUTE);
    assert_eq!(h.validate(&token, Scope::User).await, Validation::Expired);
    assert_eq!(h.stored_sessions().await, 0, "the session was deleted");
}
