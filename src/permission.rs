//! Permissions and roles as types, and the policy that maps roles to permissions.
//!
//! A permission is a zero-sized marker type implementing [`Permission`]; the extractor
//! [`RequirePermission<P>`](crate::RequirePermission) checks it against the [`AccessPolicy`]
//! configured on the [`SessionManager`](crate::SessionManager). The 13 permissions and 4 roles
//! of the MUD policy are predefined; [`permission!`](macro@crate::permission) and
//! [`role!`](macro@crate::role) define more.
//!
//! ```
//! use tower_session_auth::{permission::AccessPolicy, permission::MudPolicy, permission::Permission, permissions::ViewLogs};
//!
//! tower_session_auth::permission! {
//!     /// May post announcements.
//!     pub struct PostNews => "post_news";
//! }
//!
//! assert_eq!(ViewLogs::NAME, "view_logs");
//! assert!(MudPolicy.has_permission("Admin", ViewLogs::NAME));
//! assert!(!MudPolicy.has_permission("player", ViewLogs::NAME));
//! assert!(MudPolicy.has_permission("superuser", PostNews::NAME)); // full access
//! ```

/// A permission a route can require. Implemented by zero-sized marker types.
pub trait Permission: Send + Sync + 'static {
    /// The permission's name, as the policy knows it and as the 403 detail shows it.
    const NAME: &'static str;
}

/// A role a route can require at minimum ([`RequireRole<R>`](crate::RequireRole)).
pub trait Role: Send + Sync + 'static {
    /// The role's name, as the policy knows it and as the 403 detail shows it.
    const NAME: &'static str;
}

/// Maps roles to permissions and to hierarchy levels. Roles come from the users table and are
/// re-read on every validation, so a change applies on the user's next request.
pub trait AccessPolicy: Send + Sync + 'static {
    /// Whether `role` grants `permission`.
    fn has_permission(&self, role: &str, permission: &str) -> bool;

    /// The role's level in the hierarchy, or `None` for an unknown role.
    fn role_level(&self, role: &str) -> Option<u8>;

    /// Whether `role` is at least `minimum` in the hierarchy. Unknown roles are never enough.
    fn has_role_at_least(&self, role: &str, minimum: &str) -> bool {
        match (self.role_level(role), self.role_level(minimum)) {
            (Some(have), Some(need)) => have >= need,
            _ => false,
        }
    }
}

/// Defines permission marker types: `permission! { pub struct Name => "name"; }`.
#[macro_export]
macro_rules! permission {
    ($($(#[$meta:meta])* $vis:vis struct $ty:ident => $name:literal;)+) => {$(
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        $vis struct $ty;
        impl $crate::permission::Permission for $ty {
            const NAME: &'static str = $name;
        }
    )+};
}

/// Defines role marker types: `role! { pub struct Name => "name"; }`.
#[macro_export]
macro_rules! role {
    ($($(#[$meta:meta])* $vis:vis struct $ty:ident => $name:literal;)+) => {$(
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        $vis struct $ty;
        impl $crate::permission::Role for $ty {
            const NAME: &'static str = $name;
        }
    )+};
}

/// The permissions of [`MudPolicy`].
pub mod permissions {
    crate::permission! {
        /// Enter the game.
        pub struct PlayGame => "play_game";
        /// Use chat.
        pub struct Chat => "chat";
        /// Edit the world.
        pub struct EditWorld => "edit_world";
        /// Create rooms.
        pub struct CreateRooms => "create_rooms";
        /// Create items.
        pub struct CreateItems => "create_items";
        /// Create user accounts.
        pub struct CreateUsers => "create_users";
        /// Disconnect users (end their sessions).
        pub struct KickUsers => "kick_users";
        /// Ban users.
        pub struct BanUsers => "ban_users";
        /// Read server logs.
        pub struct ViewLogs => "view_logs";
        /// Stop the server.
        pub struct StopServer => "stop_server";
        /// Manage user accounts.
        pub struct ManageUsers => "manage_users";
        /// Change users' roles.
        pub struct ChangeRoles => "change_roles";
        /// Everything.
        pub struct FullAccess => "full_access";
    }
}

/// The roles of [`MudPolicy`], lowest first.
pub mod roles {
    crate::role! {
        /// Level 0.
        pub struct Player => "player";
        /// Level 1.
        pub struct Worldbuilder => "worldbuilder";
        /// Level 2.
        pub struct Admin => "admin";
        /// Level 3: every permission.
        pub struct Superuser => "superuser";
    }
}

/// The default policy, for a multi-user game server: roles `player` < `worldbuilder` < `admin` <
/// `superuser` (matched case-insensitively; unknown roles have no permissions).
///
/// | role | permissions |
/// |---|---|
/// | player | play_game, chat |
/// | worldbuilder | player + edit_world, create_rooms, create_items |
/// | admin | play_game, chat, create_users, kick_users, ban_users, view_logs, edit_world, stop_server |
/// | superuser | all |
#[derive(Clone, Copy, Debug, Default)]
pub struct MudPolicy;

const PLAYER: &[&str] = &["play_game", "chat"];
const WORLDBUILDER: &[&str] = &[
    "play_game",
    "chat",
    "edit_world",
    "create_rooms",
    "create_items",
];
const ADMIN: &[&str] = &[
    "play_game",
    "chat",
    "create_users",
    "kick_users",
    "ban_users",
    "view_logs",
    "edit_world",
    "stop_server",
];
const ROLES: &[&str] = &["player", "worldbuilder", "admin", "superuser"];

impl AccessPolicy for MudPolicy {
    fn has_permission(&self, role: &str, permission: &str) -> bool {
        let granted = match self.role_level(role) {
            Some(0) => PLAYER,
            Some(1) => WORLDBUILDER,
            Some(2) => ADMIN,
            Some(3) => return true,
            _ => return false,
        };
        granted.contains(&permission)
    }

    fn role_level(&self, role: &str) -> Option<u8> {
        ROLES
            .iter()
            .position(|known| known.eq_ignore_ascii_case(role))
            .map(|level| level as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::permissions::*;
    use super::*;

    fn all() -> [&'static str; 13] {
        [
            PlayGame::NAME,
            Chat::NAME,
            EditWorld::NAME,
            CreateRooms::NAME,
            CreateItems::NAME,
            CreateUsers::NAME,
            KickUsers::NAME,
            BanUsers::NAME,
            ViewLogs::NAME,
            StopServer::NAME,
            ManageUsers::NAME,
            ChangeRoles::NAME,
            FullAccess::NAME,
        ]
    }

    fn granted(role: &str) -> Vec<&'static str> {
        all()
            .into_iter()
            .filter(|p| MudPolicy.has_permission(role, p))
            .collect()
    }

    #[test]
    fn role_mapping_is_the_originals() {
        assert_eq!(granted("player"), ["play_game", "chat"]);
        assert_eq!(
            granted("worldbuilder"),
            [
                "play_game",
                "chat",
                "edit_world",
                "create_rooms",
                "create_items"
            ]
        );
        assert_eq!(
            granted("admin"),
            [
                "play_game",
                "chat",
                "edit_world",
                "create_users",
                "kick_users",
                "ban_users",
                "view_logs",
                "stop_server"
            ]
        );
        assert_eq!(granted("superuser"), all());
        assert!(granted("ghost").is_empty());
        assert_eq!(granted("ADMIN"), granted("admin"));
    }

    #[test]
    fn hierarchy() {
        assert!(MudPolicy.has_role_at_least("superuser", "admin"));
        assert!(MudPolicy.has_role_at_least("Admin", "admin"));
        assert!(!MudPolicy.has_role_at_least("worldbuilder", "admin"));
        assert!(!MudPolicy.has_role_at_least("ghost", "player"));
        assert!(!MudPolicy.has_role_at_least("superuser", "ghost"));
    }
}
