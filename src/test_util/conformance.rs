//! The store conformance suite: checks that a [`SessionStore`] gives every guarantee the
//! [`SessionManager`] relies on, by driving a manager over it on a [`ManualClock`].
//!
//! [`conformance_tests!`](crate::conformance_tests) expands to one `#[test]` per check, named
//! after it, so that `cargo test` reports each guarantee by name. Each test makes a fresh store
//! with the function it is given, then runs one check: a login, a validation, a revocation, the
//! clock moved past an expiry, and assertions on what the manager reports and the store lists.
//! The checks are the public functions of [`sessions`], [`remember`], [`characters`] and
//! [`admin`]; each one's documentation says what it asserts.
//!
//! # The fixture
//!
//! A check starts from a fresh store that holds no session and knows the suite's [`USERS`]
//! (with roles, one without a role, one with an empty role, one inactive) and [`CHARACTERS`]
//! (in worlds, one user with two). Some checks change them midway, as an application would:
//! a role change, a deactivation, a deleted user, a character moved to another world. The
//! [`Fixture`] trait is how the suite does that, and how it counts the sessions a store holds;
//! [`MemoryStore`] implements it.
//!
//! ```
//! use tower_session_auth::test_util::conformance::memory_fixture;
//!
//! // One `#[test]` per check, each on a fresh in-memory store.
//! tower_session_auth::conformance_tests!(memory_fixture);
//! ```
//!
//! # What a store may lack
//!
//! | module | guarantees of | runs when |
//! |---|---|---|
//! | [`sessions`] | [`SessionStore`] | always |
//! | [`remember`] | [`RememberStore`](crate::store::RememberStore) | [`SessionStore::remember`] is `Some` |
//! | [`characters`] | [`CharacterStore`](crate::store::CharacterStore) | [`SessionStore::characters`] is `Some` |
//! | [`admin`] | [`AdminStore`](crate::store::AdminStore) | [`SessionStore::admin`] is `Some` |
//!
//! A store without an extension says so: `conformance_tests!(fresh_store, without(remember,
//! admin))`. The checks of what it lacks are then `#[ignore]`d with the reason, so `cargo test`
//! lists them as ignored (never as passed), and one more test,
//! `store_lacks_what_conformance_tests_declares`, fails if the store's accessor is not `None`
//! after all. A check whose extension the store lacks without declaring it fails, naming the
//! accessor.
//!
//! # Runtime
//!
//! Each check runs on a current-thread Tokio runtime of its own, built with this crate's
//! `tokio` ([`run_check`]): the tests need no Tokio dev-dependency, and the fixture function
//! runs inside that runtime (it may spawn a connection's task). Concurrency checks spawn tasks
//! on it, so their store calls interleave at every `.await`, and a database sees them on
//! separate connections at once. (A store that needs a multi-thread runtime, for
//! `block_in_place`, cannot run the suite.)
//!
//! Checks that stay out of the suite because they are about one backend (the rows PostgreSQL
//! keeps, races against its locks, its failure modes) or about HTTP (status codes and texts,
//! cookies) live in this crate's own tests.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::ManualClock;
use crate::extract::AuthUser;
use crate::manager::{Login, LoginOptions, Refresh, SessionManager};
use crate::rejection::AuthRejection;
use crate::store::{
    ClientInfo, MemoryStore, PurgePosition, Purged, Scope, SessionRecord, SessionStore,
    SessionView, Validation,
};
use crate::token::{RefreshToken, SessionId, SessionToken};
use crate::user_id::UserId;
use crate::{RefreshConfig, SessionConfig};

pub mod admin;
pub mod characters;
pub mod remember;
pub mod sessions;

/// A user the suite expects in a fresh store ([`USERS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FixtureUser {
    /// The user's number: their id, or what the store's id for them is made from
    /// ([`Fixture::user_id`]). The [`Fixture`] methods name users by it.
    pub id: i64,
    /// The username.
    pub username: &'static str,
    /// The role (`None`: no role).
    pub role: Option<&'static str>,
    /// Whether the account is active.
    pub is_active: bool,
}

/// A character the suite expects in a fresh store ([`CHARACTERS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FixtureCharacter {
    /// The character's id.
    pub id: i64,
    /// The owner's number ([`FixtureUser::id`]).
    pub user_id: i64,
    /// The character's name.
    pub name: &'static str,
    /// The character's world (`None`: none).
    pub world_id: Option<&'static str>,
}

const fn user(
    id: i64,
    username: &'static str,
    role: Option<&'static str>,
    is_active: bool,
) -> FixtureUser {
    FixtureUser {
        id,
        username,
        role,
        is_active,
    }
}

const fn character(
    id: i64,
    user_id: i64,
    name: &'static str,
    world_id: Option<&'static str>,
) -> FixtureCharacter {
    FixtureCharacter {
        id,
        user_id,
        name,
        world_id,
    }
}

/// The users a fresh store knows: one per role of the default policy
/// ([`MudPolicy`](crate::permission::MudPolicy)), a user the checks delete, and three users
/// that the extractors refuse (no role, an empty role, inactive).
pub const USERS: &[FixtureUser] = &[
    user(1, "player", Some("player"), true),
    user(2, "builder", Some("worldbuilder"), true),
    user(3, "admin", Some("admin"), true),
    user(4, "superuser", Some("superuser"), true),
    user(6, "doomed", Some("player"), true),
    user(7, "norole", None, true),
    user(8, "emptyrole", Some(""), true),
    user(9, "inactive", Some("admin"), false),
];

/// The characters a fresh store knows: each of users 1 to 4 has `<username>_char` (id
/// `<user id>0`) in `pipeworks_web`, and the player also has `player_alt` (id 11) in
/// `daily_undertaking`.
pub const CHARACTERS: &[FixtureCharacter] = &[
    character(10, 1, "player_char", Some("pipeworks_web")),
    character(11, 1, "player_alt", Some("daily_undertaking")),
    character(20, 2, "builder_char", Some("pipeworks_web")),
    character(30, 3, "admin_char", Some("pipeworks_web")),
    character(40, 4, "superuser_char", Some("pipeworks_web")),
];

/// A fresh store for one check, and the application's side of it: the users and characters
/// that the store reads when it validates a session.
///
/// The function given to [`conformance_tests!`](crate::conformance_tests) returns a new
/// fixture for each check: a store that holds no session and knows exactly [`USERS`] and
/// [`CHARACTERS`]. The methods change those users and characters as an application would
/// (each panics if it fails: the check then fails with its message).
///
/// A store over PostgreSQL typically gets a schema of its own per fixture:
///
/// ```no_run
/// use async_trait::async_trait;
/// use deadpool_postgres::Pool;
/// use tower_session_auth::PgStore;
/// use tower_session_auth::test_util::conformance::Fixture;
///
/// /// The store, and a pool on the same schema for the application's tables.
/// struct PgFixture {
///     store: PgStore,
///     pool: Pool,
/// }
///
/// impl PgFixture {
///     async fn run(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) {
///         let client = self.pool.get().await.expect("a connection");
///         client.execute(sql, params).await.expect(sql);
///     }
/// }
///
/// #[async_trait]
/// impl Fixture for PgFixture {
///     type Store = PgStore;
///
///     fn store(&self) -> PgStore {
///         self.store.clone()
///     }
///     async fn set_role(&self, user_id: i64, role: Option<&str>) {
///         self.run("UPDATE users SET role = $2 WHERE id = $1", &[&user_id, &role]).await
///     }
///     async fn set_active(&self, user_id: i64, active: bool) {
///         self.run("UPDATE users SET is_active = $2 WHERE id = $1", &[&user_id, &active]).await
///     }
///     async fn delete_user(&self, user_id: i64) {
///         self.run("DELETE FROM characters WHERE user_id = $1", &[&user_id]).await;
///         self.run("DELETE FROM users WHERE id = $1", &[&user_id]).await
///     }
///     async fn set_character_world(&self, character_id: i64, world_id: Option<&str>) {
///         let sql = "UPDATE characters SET world_id = $2 WHERE id = $1";
///         self.run(sql, &[&character_id, &world_id]).await
///     }
///     async fn delete_character(&self, character_id: i64) {
///         self.run("DELETE FROM characters WHERE id = $1", &[&character_id]).await
///     }
///     async fn stored_sessions(&self) -> u64 {
///         let client = self.pool.get().await.expect("a connection");
///         let row = client.query_one("SELECT count(*) FROM sessions", &[]).await.unwrap();
///         row.get::<_, i64>(0) as u64
///     }
/// }
/// ```
#[async_trait]
pub trait Fixture: Send + Sync + 'static {
    /// The store under test.
    type Store: SessionStore;

    /// A handle on the store (stores are cheap handles: a pool, an `Arc`). The check builds
    /// its [`SessionManager`] over it.
    fn store(&self) -> Self::Store;

    /// The id the store knows the fixture user numbered `user` ([`FixtureUser::id`]) by:
    /// `UserId::Int(user)`, unless the store keys users by another type (a store of `uuid`
    /// ids maps each number to a uuid of its own, and the suite then runs on those).
    fn user_id(&self, user: i64) -> UserId {
        UserId::Int(user)
    }

    /// Changes a user's role (`None`: no role).
    async fn set_role(&self, user_id: i64, role: Option<&str>);

    /// Activates or deactivates a user.
    async fn set_active(&self, user_id: i64, active: bool);

    /// Deletes a user and their characters; their sessions stay.
    async fn delete_user(&self, user_id: i64);

    /// Moves a character to another world (`None`: no world), as a game server does.
    async fn set_character_world(&self, character_id: i64, world_id: Option<&str>);

    /// Deletes a character.
    async fn delete_character(&self, character_id: i64);

    /// How many sessions the store holds, expired ones not yet deleted included.
    async fn stored_sessions(&self) -> u64;
}

/// The in-memory store as a fixture, over its own user and character directory.
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
#[async_trait]
impl Fixture for MemoryStore {
    type Store = MemoryStore;

    fn store(&self) -> MemoryStore {
        self.clone()
    }

    async fn set_role(&self, user_id: i64, role: Option<&str>) {
        assert!(MemoryStore::set_role(self, user_id, role), "user {user_id}");
    }

    async fn set_active(&self, user_id: i64, active: bool) {
        assert!(
            MemoryStore::set_active(self, user_id, active),
            "user {user_id}"
        );
    }

    async fn delete_user(&self, user_id: i64) {
        for (character_id, _) in self.characters_of(user_id) {
            self.remove_character(character_id);
        }
        assert!(self.remove_user(user_id), "user {user_id}");
    }

    async fn set_character_world(&self, character_id: i64, world_id: Option<&str>) {
        let (user_id, character) = USERS
            .iter()
            .find_map(|user| {
                self.characters_of(user.id)
                    .into_iter()
                    .find(|(id, _)| *id == character_id)
                    .map(|(_, character)| (user.id, character))
            })
            .unwrap_or_else(|| panic!("character {character_id} of a fixture user"));
        self.upsert_character(character_id, user_id, &character.name, world_id);
    }

    async fn delete_character(&self, character_id: i64) {
        assert!(
            self.remove_character(character_id),
            "character {character_id}"
        );
    }

    async fn stored_sessions(&self) -> u64 {
        self.len() as u64
    }
}

/// A fresh [`MemoryStore`] holding [`USERS`] and [`CHARACTERS`]: the fixture function for
/// running the suite against the in-memory store.
pub async fn memory_fixture() -> MemoryStore {
    let store = MemoryStore::new();
    for user in USERS {
        store.upsert_user(user.id, user.username, user.role, user.is_active);
    }
    for character in CHARACTERS {
        store.upsert_character(
            character.id,
            character.user_id,
            character.name,
            character.world_id,
        );
    }
    store
}

/// A store extension that some checks need ([`SessionStore::remember`],
/// [`SessionStore::characters`], [`SessionStore::admin`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Capability {
    /// Remember-me series: [`SessionStore::remember`].
    Remember,
    /// Character binding: [`SessionStore::characters`].
    Characters,
    /// Counting and clearing: [`SessionStore::admin`].
    Admin,
}

impl Capability {
    /// Whether `store` offers it (its accessor returns `Some`).
    pub fn is_offered_by(self, store: &dyn SessionStore) -> bool {
        match self {
            Self::Remember => store.remember().is_some(),
            Self::Characters => store.characters().is_some(),
            Self::Admin => store.admin().is_some(),
        }
    }

    /// The accessor that says whether a store offers it.
    pub fn accessor(self) -> &'static str {
        match self {
            Self::Remember => "SessionStore::remember",
            Self::Characters => "SessionStore::characters",
            Self::Admin => "SessionStore::admin",
        }
    }

    /// The name `conformance_tests!(.., without(..))` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Remember => "remember",
            Self::Characters => "characters",
            Self::Admin => "admin",
        }
    }
}

/// Runs one check on a current-thread Tokio runtime of its own: makes a fixture with
/// `make_fixture`, verifies that its store offers `needs`, and runs `check` on it. A failed
/// check panics (it is an `assert!`), which fails the test that called this.
/// [`conformance_tests!`](crate::conformance_tests) calls this for each check; call it
/// yourself to run a single check:
///
/// ```
/// use tower_session_auth::test_util::conformance::{self, memory_fixture, sessions};
///
/// // In a `#[test]` function:
/// conformance::run_check(
///     "touch_is_debounced",
///     None,
///     memory_fixture,
///     sessions::touch_is_debounced,
/// );
/// ```
///
/// # Panics
///
/// When the check fails, when the runtime cannot be built, or when the store lacks `needs`
/// (the message names the accessor and how to declare the store without it).
pub fn run_check<M, Fut, F, C, Checked>(
    name: &str,
    needs: Option<Capability>,
    make_fixture: M,
    check: C,
) where
    M: FnOnce() -> Fut,
    Fut: Future<Output = F>,
    F: Fixture,
    C: FnOnce(F) -> Checked,
    Checked: Future<Output = ()>,
{
    runtime().block_on(async move {
        let fixture = make_fixture().await;
        if let Some(capability) = needs {
            assert!(
                capability.is_offered_by(&fixture.store()),
                "conformance check `{name}` needs {capability:?}, but the store's `{}()` returns \
                 None. A store without it declares so, and its checks are then ignored: \
                 `conformance_tests!(fixture, without({}))`",
                capability.accessor(),
                capability.name(),
            );
        }
        check(fixture).await;
    });
}

/// Verifies that the store of a fixture lacks each of `absent`: what
/// `conformance_tests!(.., without(..))` declares, so that no check is ignored for a store that
/// could run it.
///
/// # Panics
///
/// When the store offers one of `absent`, or when the runtime cannot be built.
pub fn check_declared_absent<M, Fut, F>(make_fixture: M, absent: &[Capability])
where
    M: FnOnce() -> Fut,
    Fut: Future<Output = F>,
    F: Fixture,
{
    runtime().block_on(async move {
        let store = make_fixture().await.store();
        let offered: Vec<&str> = absent
            .iter()
            .filter(|capability| capability.is_offered_by(&store))
            .map(|capability| capability.name())
            .collect();
        assert!(
            offered.is_empty(),
            "conformance_tests! declares the store without {offered:?}, but it offers them: \
             remove them from `without(..)` so that their checks run"
        );
    });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime for the conformance check")
}

/// Expands to one `#[test]` per conformance check, named after it, each running the check
/// ([`run_check`]) on a fresh fixture from `$make_fixture` (an `async fn() -> impl Fixture`,
/// or a closure returning such a future). See
/// [`test_util::conformance`](crate::test_util::conformance).
///
/// ```
/// use tower_session_auth::test_util::conformance::memory_fixture;
///
/// tower_session_auth::conformance_tests!(memory_fixture);
/// ```
///
/// A store without some of the extensions names them in `without(..)` (any of `remember`,
/// `characters`, `admin`): their checks are generated `#[ignore]`d, with the reason, and one
/// more test, `store_lacks_what_conformance_tests_declares`, checks the declaration.
///
/// ```
/// # use tower_session_auth::test_util::conformance::memory_fixture as fresh_store;
/// tower_session_auth::conformance_tests!(fresh_store, without(remember, admin));
/// ```
///
/// The tests are generated in the module of the invocation; to run the suite on two stores in
/// one file, invoke it in two modules.
#[macro_export]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
macro_rules! conformance_tests {
    ($make_fixture:expr $(, without($($absent:ident),+ $(,)?))? $(,)?) => {
        $($($crate::__conformance_tests!(@declared $absent);)+)?
        $crate::__conformance_tests!(@checks $make_fixture, [$($($absent)+)?]);
        $(
            #[test]
            fn store_lacks_what_conformance_tests_declares() {
                $crate::test_util::conformance::check_declared_absent(
                    $make_fixture,
                    &[$($crate::__conformance_tests!(@capability $absent)),+],
                );
            }
        )?
    };
}

/// The lists of checks behind [`conformance_tests!`](crate::conformance_tests): one per module.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    (@checks $make_fixture:expr, $absent:tt) => {
        $crate::__conformance_tests!(@run sessions, ::core::option::Option::None, $make_fixture, [
            validate_reads_the_session_and_its_user,
            an_unknown_token_is_unknown,
            missing_user_role_or_inactive_is_invalid_session_user,
            role_change_and_deactivation_apply_on_the_next_request,
            username_and_role_lookups,
            expired_session_is_rejected_and_deleted,
            sliding_expiry_moves_expires_at_forward,
            touch_is_debounced,
            non_sliding_expiry_stays_put,
            ttl_disabled_never_expires,
            absolute_lifetime_is_never_extended,
            remove_returns_true_then_false,
            single_session_mode_leaves_one_session,
            max_sessions_keeps_the_newest_n,
            concurrent_logins_keep_at_most_the_limit,
            client_info_is_recorded_and_listed,
            default_client_info_records_an_unknown_client_type,
            session_management_revokes_only_what_it_should,
            sweeper_purges_expired_sessions,
            purge_works_in_batches_and_spares_live_sessions,
            reauthenticate_moves_authenticated_at_on_the_same_session,
            reauthenticate_changes_nothing_for_unknown_or_expired_sessions,
        ]);
        $crate::__conformance_tests!(@group remember, Remember, $absent, $make_fixture, [
            refresh_rotates_and_keeps_the_login_time,
            reuse_after_the_grace_window_revokes_the_family,
            a_concurrent_duplicate_within_the_grace_window_is_accepted,
            the_series_has_its_own_lifetimes,
            logout_and_revocation_end_the_series,
            inactive_users_and_unknown_series_cannot_refresh,
            a_wrong_secret_for_a_known_series_is_invalid_and_changes_nothing,
            a_superseded_secret_is_honoured_once_more_inside_the_window,
            an_issued_secret_never_used_never_trips_reuse,
            a_remembered_device_holds_one_session,
            a_session_never_outlives_its_series,
            single_session_mode_ends_the_pruned_series,
            a_series_remembers_a_bounded_number_of_secrets,
            reauthenticate_keeps_the_remember_me_series,
            a_refreshed_session_is_recent_only_after_reauthentication,
            purge_deletes_expired_series_in_batches,
        ]);
        $crate::__conformance_tests!(@group characters, Characters, $absent, $make_fixture, [
            a_character_is_bound_only_by_an_explicit_selection,
            characters_of_other_users_cannot_be_selected,
            a_missing_character_or_world_is_reported,
            session_world_is_resynced_to_the_characters,
            validation_returns_the_session_as_stored,
            a_user_scope_validation_touches_but_reads_no_character,
        ]);
        $crate::__conformance_tests!(@group admin, Admin, $absent, $make_fixture, [
            clear_all_returns_the_count_removed,
            active_count_excludes_expired_and_respects_the_window,
        ]);
    };

    // Whether a group's capability is declared absent: its checks are ignored.
    (@group remember, $capability:ident, [remember $($rest:ident)*], $make_fixture:expr, $checks:tt) => {
        $crate::__conformance_tests!(
            @ignored remember, "the store has no remember-me support, as conformance_tests! declares", $capability, $make_fixture, $checks
        );
    };
    (@group characters, $capability:ident, [characters $($rest:ident)*], $make_fixture:expr, $checks:tt) => {
        $crate::__conformance_tests!(
            @ignored characters, "the store has no character binding, as conformance_tests! declares", $capability, $make_fixture, $checks
        );
    };
    (@group admin, $capability:ident, [admin $($rest:ident)*], $make_fixture:expr, $checks:tt) => {
        $crate::__conformance_tests!(
            @ignored admin, "the store has no administration, as conformance_tests! declares", $capability, $make_fixture, $checks
        );
    };
    (@group $module:ident, $capability:ident, [$other:ident $($rest:ident)*], $make_fixture:expr, $checks:tt) => {
        $crate::__conformance_tests!(@group $module, $capability, [$($rest)*], $make_fixture, $checks);
    };
    (@group $module:ident, $capability:ident, [], $make_fixture:expr, $checks:tt) => {
        $crate::__conformance_tests!(
            @run $module,
            ::core::option::Option::Some($crate::test_util::conformance::Capability::$capability),
            $make_fixture,
            $checks
        );
    };

    (@run $module:ident, $needs:expr, $make_fixture:expr, [$($check:ident),* $(,)?]) => {
        $(
            #[test]
            fn $check() {
                $crate::test_util::conformance::run_check(
                    ::core::stringify!($check),
                    $needs,
                    $make_fixture,
                    $crate::test_util::conformance::$module::$check,
                );
            }
        )*
    };

    (@ignored $module:ident, $reason:literal, $capability:ident, $make_fixture:expr, [$($check:ident),* $(,)?]) => {
        $(
            #[test]
            #[ignore = $reason]
            fn $check() {
                $crate::test_util::conformance::run_check(
                    ::core::stringify!($check),
                    ::core::option::Option::Some(
                        $crate::test_util::conformance::Capability::$capability,
                    ),
                    $make_fixture,
                    $crate::test_util::conformance::$module::$check,
                );
            }
        )*
    };

    // The names `without(..)` takes; anything else is a compile error here.
    (@declared remember) => {};
    (@declared characters) => {};
    (@declared admin) => {};
    (@capability remember) => { $crate::test_util::conformance::Capability::Remember };
    (@capability characters) => { $crate::test_util::conformance::Capability::Characters };
    (@capability admin) => { $crate::test_util::conformance::Capability::Admin };
}

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);

/// A fixture, and a manager over its store on a hand-moved clock.
struct Harness<F> {
    fixture: F,
    clock: Arc<ManualClock>,
    manager: SessionManager,
}

fn harness<F: Fixture>(fixture: F, config: SessionConfig) -> Harness<F> {
    let clock = Arc::new(ManualClock::default());
    let manager = SessionManager::new(fixture.store(), config).with_clock(clock.clone());
    Harness {
        fixture,
        clock,
        manager,
    }
}

/// A harness with the default configuration but for the remember-me rules.
fn remember_harness<F: Fixture>(fixture: F, refresh: RefreshConfig) -> Harness<F> {
    harness(fixture, SessionConfig::default().refresh(refresh))
}

impl<F: Fixture> Harness<F> {
    /// Seven stored sessions, five expired, purged in batches of two: the first batch deletes
    /// `first` (sessions, series), the manager deletes the rest, and `live` stay signed in.
    async fn purge_in_batches_of_two(&self, first: Purged, live: [&SessionToken; 2]) {
        assert_eq!(self.stored_sessions().await, 7);
        let store = self.manager.store();
        let now = self.manager.now();
        let batch = store.purge_expired(now, 2, PurgePosition::START).await;
        let batch = batch.unwrap();
        assert_eq!(
            (batch.sessions, batch.series),
            (first.sessions, first.series)
        );
        assert!(batch.was_full(2));
        assert_eq!(self.stored_sessions().await, 5);
        assert_eq!(self.manager.purge_expired().await.unwrap(), 3);
        assert_eq!(self.stored_sessions().await, 2);
        let last = store.purge_expired(now, 2, PurgePosition::START).await;
        let last = last.unwrap();
        assert_eq!((last.sessions, last.series), (0, 0));
        assert!(!last.was_full(2));
        for token in live {
            assert!(self.signed_in(token).await);
        }
    }

    /// The store's id of the fixture user numbered `user`.
    fn id(&self, user: i64) -> UserId {
        self.fixture.user_id(user)
    }

    /// A plain login: its token and session id.
    async fn login(&self, user: i64) -> (SessionToken, SessionId) {
        let login = self
            .manager
            .login(self.id(user), LoginOptions::new())
            .await
            .expect("a plain login");
        (login.token, login.session.id)
    }

    /// A login with "remember me".
    async fn remembered(&self, user: i64) -> Login {
        let login = self
            .manager
            .login(self.id(user), LoginOptions::new().remember(true))
            .await
            .expect("a remembered login");
        assert!(login.session.remembered, "a remembered login's session");
        assert!(!login.session.refreshed, "a login is not a refresh");
        login
    }

    async fn refresh(&self, token: &RefreshToken) -> Refresh {
        self.manager
            .refresh(token, ClientInfo::default())
            .await
            .expect("a refresh")
    }

    /// A refresh that must succeed.
    async fn refreshed(&self, token: &RefreshToken) -> Login {
        match self.refresh(token).await {
            Refresh::Refreshed(login) => *login,
            other => panic!("expected a refresh, got {other:?}"),
        }
    }

    async fn validate(&self, token: &SessionToken, scope: Scope) -> Validation {
        self.manager
            .validate(token, scope)
            .await
            .expect("a validation")
    }

    /// A validation that must find a live session.
    async fn live(&self, token: &SessionToken, scope: Scope) -> Arc<SessionView> {
        match self.validate(token, scope).await {
            Validation::Valid(view) => view,
            other => panic!("expected a live session, got {other:?}"),
        }
    }

    /// What [`AuthUser`] makes of a request with this token: the validation at
    /// [`Scope::User`] and the extractor's own decision on it.
    async fn auth_user(&self, token: &SessionToken) -> Result<AuthUser<UserId>, AuthRejection> {
        match self.validate(token, Scope::User).await {
            Validation::Valid(view) => AuthUser::from_view(&view),
            Validation::Unknown | Validation::Expired => Err(AuthRejection::InvalidSession),
        }
    }

    /// Whether a request with this token gets through [`AuthUser`].
    async fn signed_in(&self, token: &SessionToken) -> bool {
        self.auth_user(token).await.is_ok()
    }

    async fn sessions(&self, user: i64) -> Vec<SessionRecord> {
        self.manager
            .list_for_user(self.id(user))
            .await
            .expect("a listing")
    }

    /// A listed session, by id.
    async fn stored(&self, user: i64, id: SessionId) -> SessionRecord {
        self.sessions(user)
            .await
            .into_iter()
            .find(|session| session.id == id)
            .unwrap_or_else(|| panic!("session {id} of user {user} is listed"))
    }

    async fn stored_sessions(&self) -> u64 {
        self.fixture.stored_sessions().await
    }

    /// Everything the store shows of its sessions: how many it holds, and every user's
    /// listing. Compared before and after an operation that must change nothing.
    async fn observable_state(&self) -> String {
        let mut state = format!("{} stored", self.stored_sessions().await);
        for user in USERS {
            state.push_str(&format!(
                "\n{}: {:?}",
                user.id,
                self.sessions(user.id).await
            ));
        }
        state
    }
}
