//! Extractors whose presence in a handler's signature is its access policy. They reject with
//! [`AuthRejection`](crate::AuthRejection).
//!
//! | extractor | passes when | otherwise |
//! |---|---|---|
//! | [`AuthUser<Id>`](AuthUser) | live session, user present, active, with a role | 401 |
//! | `Option<AuthUser>` | always, `None` when unauthenticated | 500 if the store failed |
//! | [`GameUser`] | as `AuthUser`, and a selected character with a world | 409 |
//! | [`RequirePermission<P>`] | as `AuthUser`, and the role grants `P` | 403 |
//! | [`RequireRole<R>`] | as `AuthUser`, and the role is at least `R` | 403 |
//! | [`RecentAuth<E>`] | as `E` (default `AuthUser`), and a recent password entry | 403 |
//!
//! A store failure is always `500 Session store unavailable`: never anonymous, never 403.
//!
//! Every extractor that carries the user takes the user id's type as a last parameter,
//! `i64` unless named: `AuthUser<Uuid>`, `GameUser<String>`, `RequirePermission<P, i32>`
//! (any [`FromUserId`] type; see [`UserIdType`](crate::store::UserIdType) for the store's
//! side). A type the store's ids are not is a configuration error:
//! `500 Session user id type mismatch`, logged.
//!
//! ```
//! use tower_session_auth::{GameUser, RequirePermission, permissions::ViewLogs};
//!
//! async fn whoami(user: GameUser) -> String {
//!     format!("{} plays {} in {}", user.username, user.character_name, user.world_id)
//! }
//!
//! async fn logs(RequirePermission(admin, ..): RequirePermission<ViewLogs>) -> String {
//!     format!("logs for {}", admin.username)
//! }
//! ```

use std::marker::PhantomData;
use std::ops::Deref;

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use http::request::Parts;
use time::OffsetDateTime;

use crate::permission::{Permission, Role};
use crate::rejection::AuthRejection;
use crate::session::Session;
use crate::store::{Scope, SessionView};
use crate::token::SessionId;
use crate::user_id::{FromUserId, UserId};

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Session>().cloned().ok_or_else(|| {
            tracing::error!("a session extractor ran without SessionLayer in front of it");
            AuthRejection::LayerMissing
        })
    }
}

/// An authenticated user: a live session whose user exists, is active and has a role.
///
/// Rejects with 401 (`Invalid or expired session` / `Invalid session user`) or 500
/// (`Session store unavailable`). As `Option<AuthUser>` it yields `None` instead of a 401, but
/// still fails closed with 500 when the store is down. It validates at [`Scope::User`]: the
/// session and its user, without the character (unless [`GameUser`] already validated the
/// request).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthUser<Id = i64> {
    /// The user's id, as type `Id` (`i64` unless the handler names another [`FromUserId`]
    /// type, e.g. `AuthUser<uuid::Uuid>`).
    pub user_id: Id,
    /// The user's name, read from the users table on this request.
    pub username: String,
    /// The user's role, read from the users table on this request.
    pub role: String,
    /// The session's public id.
    pub session_id: SessionId,
    /// The selected character, if any.
    pub character_id: Option<i64>,
    /// When the user last proved their credentials: the login time, kept across
    /// remember-me refreshes. Ask for a fresh login before sensitive changes when it is old.
    pub authenticated_at: OffsetDateTime,
    /// Whether a remember-me refresh (rather than a login) created this session.
    pub refreshed: bool,
    /// The client type recorded at login.
    pub client_type: String,
}

impl<Id: FromUserId> AuthUser<Id> {
    pub(crate) fn from_view(view: &SessionView) -> Result<Self, AuthRejection> {
        let user = view.user.as_ref().ok_or(AuthRejection::InvalidUser)?;
        let role = match &user.role {
            Some(role) if user.is_active && !role.is_empty() => role,
            _ => return Err(AuthRejection::InvalidUser),
        };
        let session = &view.session;
        Ok(Self {
            user_id: typed_user_id(&session.user_id)?,
            username: user.username.clone(),
            role: role.clone(),
            session_id: session.id,
            character_id: session.character_id,
            authenticated_at: session.authenticated_at,
            refreshed: session.refreshed,
            client_type: session.client_type.clone(),
        })
    }

    async fn resolve(parts: &Parts) -> Result<(Self, Session), AuthRejection> {
        let session = session_of(parts)?;
        let view = live_view(session, Scope::User).await?;
        Ok((Self::from_view(view)?, session.clone()))
    }
}

/// The session's user id as the handler's type, or the logged configuration error.
fn typed_user_id<Id: FromUserId>(id: &UserId) -> Result<Id, AuthRejection> {
    Id::from_user_id(id).ok_or_else(|| {
        tracing::error!(
            user_id = id.as_field(),
            expected = std::any::type_name::<Id>(),
            "the handler's user id type does not match the store's user ids"
        );
        AuthRejection::UserIdMismatch
    })
}

fn session_of(parts: &Parts) -> Result<&Session, AuthRejection> {
    parts
        .extensions
        .get::<Session>()
        .ok_or(AuthRejection::LayerMissing)
}

async fn live_view(session: &Session, scope: Scope) -> Result<&SessionView, AuthRejection> {
    session
        .resolve(scope)
        .await?
        .ok_or(AuthRejection::InvalidSession)
}

impl<Id: FromUserId + Send, S: Send + Sync> FromRequestParts<S> for AuthUser<Id> {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::resolve(parts).await?.0)
    }
}

impl<Id: FromUserId + Send, S: Send + Sync> OptionalFromRequestParts<S> for AuthUser<Id> {
    type Rejection = AuthRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        match Self::resolve(parts).await {
            Ok((user, _)) => Ok(Some(user)),
            Err(AuthRejection::InvalidSession | AuthRejection::InvalidUser) => Ok(None),
            Err(rejection) => Err(rejection),
        }
    }
}

/// An authenticated user with a selected character in a world: for gameplay routes.
///
/// Rejects as [`AuthUser`], then with 409 when no character is selected, the character is gone
/// (or changed owner), or it has no world. The session's `world_id` is kept in sync with the
/// character's by the validating statement itself.
///
/// It validates at [`Scope::Game`], the one scope that reads the character. In a handler that
/// also takes [`AuthUser`] or a guard, list `GameUser` first: the others then reuse its
/// validation; listed after them, it validates a second time when a character is selected.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GameUser<Id = i64> {
    /// The authenticated user (its fields are reachable through `Deref`: `game.username`).
    pub user: AuthUser<Id>,
    /// The selected character.
    pub character_id: i64,
    /// The character's name.
    pub character_name: String,
    /// The character's world.
    pub world_id: String,
}

impl<Id> Deref for GameUser<Id> {
    type Target = AuthUser<Id>;

    fn deref(&self) -> &AuthUser<Id> {
        &self.user
    }
}

impl<Id: FromUserId> GameUser<Id> {
    /// The game user of a view validated at [`Scope::Game`], or the rejection.
    pub(crate) fn from_view(view: &SessionView) -> Result<Self, AuthRejection> {
        let user = AuthUser::from_view(view)?;
        let character_id = user
            .character_id
            .ok_or(AuthRejection::NoCharacterSelected)?;
        let character = view
            .character
            .as_ref()
            .ok_or(AuthRejection::CharacterNotFound)?;
        let world_id = character
            .world_id
            .clone()
            .filter(|world| !world.is_empty())
            .ok_or(AuthRejection::CharacterWorldNotFound)?;
        Ok(Self {
            user,
            character_id,
            character_name: character.name.clone(),
            world_id,
        })
    }
}

impl<Id: FromUserId + Send, S: Send + Sync> FromRequestParts<S> for GameUser<Id> {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Self::from_view(live_view(session_of(parts)?, Scope::Game).await?)
    }
}

/// An authenticated user whose role grants permission `P`; otherwise 403
/// `Insufficient permissions. Required: <P::NAME>`.
///
/// ```
/// use tower_session_auth::{RequirePermission, permissions::KickUsers};
///
/// async fn kick(RequirePermission(admin, ..): RequirePermission<KickUsers>) -> String {
///     format!("{} may kick", admin.username)
/// }
/// ```
pub struct RequirePermission<P: Permission, Id = i64>(pub AuthUser<Id>, pub PhantomData<P>);

/// An authenticated user whose role is at least `R` in the policy's hierarchy; otherwise 403
/// `Insufficient privileges. Minimum role required: <R::NAME>`.
pub struct RequireRole<R: Role, Id = i64>(pub AuthUser<Id>, pub PhantomData<R>);

macro_rules! guard_extractor {
    ($guard:ident, $bound:ident, |$policy:ident, $role:ident, $name:ident| $allowed:expr, $reject:expr) => {
        impl<T: $bound, Id> $guard<T, Id> {
            /// The authenticated user.
            pub fn into_inner(self) -> AuthUser<Id> {
                self.0
            }
        }

        impl<T: $bound, Id> Deref for $guard<T, Id> {
            type Target = AuthUser<Id>;

            fn deref(&self) -> &AuthUser<Id> {
                &self.0
            }
        }

        impl<T: $bound, Id: std::fmt::Debug> std::fmt::Debug for $guard<T, Id> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_tuple(stringify!($guard))
                    .field(&T::NAME)
                    .field(&self.0)
                    .finish()
            }
        }

        impl<T: $bound, Id: FromUserId + Send, S: Send + Sync> FromRequestParts<S>
            for $guard<T, Id>
        {
            type Rejection = AuthRejection;

            async fn from_request_parts(
                parts: &mut Parts,
                _state: &S,
            ) -> Result<Self, Self::Rejection> {
                let (user, session) = AuthUser::<Id>::resolve(parts).await?;
                let $policy = session.manager().policy();
                let $role = user.role.as_str();
                let $name = T::NAME;
                if $allowed {
                    Ok(Self(user, PhantomData))
                } else {
                    Err($reject($name))
                }
            }
        }
    };
}

guard_extractor!(
    RequirePermission,
    Permission,
    |policy, role, name| policy.has_permission(role, name),
    AuthRejection::MissingPermission
);
guard_extractor!(
    RequireRole,
    Role,
    |policy, role, name| policy.has_role_at_least(role, name),
    AuthRejection::MissingRole
);

/// An extractor that proves an authenticated session: the ones this crate defines
/// ([`AuthUser`], [`GameUser`], [`RequirePermission`], [`RequireRole`], and [`RecentAuth`]
/// itself), or an application's own, so that [`RecentAuth`] can guard it.
pub trait Authenticated {
    /// The session the extractor validated.
    fn session_id(&self) -> SessionId;
}

impl<Id> Authenticated for AuthUser<Id> {
    fn session_id(&self) -> SessionId {
        self.session_id
    }
}

impl<Id> Authenticated for GameUser<Id> {
    fn session_id(&self) -> SessionId {
        self.user.session_id
    }
}

impl<P: Permission, Id> Authenticated for RequirePermission<P, Id> {
    fn session_id(&self) -> SessionId {
        self.0.session_id
    }
}

impl<R: Role, Id> Authenticated for RequireRole<R, Id> {
    fn session_id(&self) -> SessionId {
        self.0.session_id
    }
}

impl<E: Authenticated> Authenticated for RecentAuth<E> {
    fn session_id(&self) -> SessionId {
        self.0.session_id()
    }
}

/// Sudo mode: extractor `E` (by default [`AuthUser`]; any [`Authenticated`] extractor), and
/// the session's user proved their credentials recently; otherwise 403
/// `Recent authentication required` ([`AuthRejection::RecentAuthRequired`]).
///
/// "Recently" means within [`SessionConfig::recent_auth_max_age`](crate::SessionConfig)
/// (default 10 minutes) of a login or of a re-authentication
/// ([`Session::reauthenticate`](crate::Session::reauthenticate),
/// [`SessionManager::reauthenticate`](crate::SessionManager::reauthenticate)). A session
/// made by a remember-me refresh never counts until it re-authenticates, however recent the
/// login that started its series: a stolen refresh token does not unlock these routes.
///
/// It composes with the other guards at no cost: `E` runs first (its own 401 or 403 wins,
/// so nobody is asked for a password only to be refused), and the recency check reads the
/// session that `E` already validated: one statement per request in all.
///
/// ```
/// use tower_session_auth::{AuthUser, RecentAuth, RequirePermission, permissions::ChangeRoles};
///
/// // A user's own sensitive change: any authenticated user, recently authenticated.
/// async fn sign_out_elsewhere(RecentAuth(user): RecentAuth) -> String {
///     format!("{} signs out everywhere else", user.username)
/// }
///
/// // An administrator's: permission first, then recency.
/// async fn change_role(RecentAuth(admin): RecentAuth<RequirePermission<ChangeRoles>>) -> String {
///     format!("{} changes a role", admin.username)
/// }
/// ```
pub struct RecentAuth<E = AuthUser>(pub E);

impl<E> RecentAuth<E> {
    /// The wrapped extractor.
    pub fn into_inner(self) -> E {
        self.0
    }
}

impl<E> Deref for RecentAuth<E> {
    type Target = E;

    fn deref(&self) -> &E {
        &self.0
    }
}

impl<E: std::fmt::Debug> std::fmt::Debug for RecentAuth<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RecentAuth").field(&self.0).finish()
    }
}

impl<E, S> FromRequestParts<S> for RecentAuth<E>
where
    E: Authenticated + FromRequestParts<S, Rejection = AuthRejection> + Send,
    S: Send + Sync,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let inner = E::from_request_parts(parts, state).await?;
        let session = session_of(parts)?;
        // The validation `E` made, reused: no second statement.
        let view = session.require_recent_auth().await?;
        if view.session.id != inner.session_id() {
            // An application's extractor that names another session: not this one's proof.
            return Err(session.recent_auth_rejection());
        }
        Ok(Self(inner))
    }
}
