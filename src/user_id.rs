//! User ids of any of the key types applications use: `bigint`, `integer`, `uuid` or `text`.
//!
//! Inside the crate a user id is a [`UserId`]; a handler reads it typed, as
//! [`AuthUser<Id>`](crate::AuthUser)'s `user_id` (`i64` unless the handler names another type),
//! through [`FromUserId`]. The store's tables take the type the application's users table has:
//! [`AppSchema::user_id_type`](crate::store::AppSchema::user_id_type).
//!
//! ```
//! use tower_session_auth::{AuthUser, UserId};
//! use uuid::Uuid;
//!
//! // An application whose users are keyed by `uuid`.
//! async fn whoami(user: AuthUser<Uuid>) -> String {
//!     format!("{} is {}", user.username, user.user_id)
//! }
//!
//! let id = Uuid::nil();
//! assert_eq!(UserId::from(id).to_string(), "00000000-0000-0000-0000-000000000000");
//! assert_eq!(UserId::from(42_i64), UserId::from(42_i32));
//! ```

use std::error::Error;
use std::fmt;

use bytes::BytesMut;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use uuid::Uuid;

/// A user's id as the crate carries it: an integer (`bigint` or `integer` columns), a `uuid`,
/// or a text.
///
/// Made from the application's own id with `From` (`i64`, `i32`, [`Uuid`], `String`, `&str`);
/// read back typed with [`FromUserId`]. Its `Display` is the id as PostgreSQL writes it as
/// text (the form the invalidation notices carry).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum UserId {
    /// An integer id: a `bigint` or `integer` column.
    Int(i64),
    /// A `uuid` id.
    Uuid(Uuid),
    /// A text id: a `text` or `varchar` column.
    Text(String),
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(id) => id.fmt(f),
            Self::Uuid(id) => id.fmt(f),
            Self::Text(id) => f.write_str(id),
        }
    }
}

/// An integer id is a JSON number, the others strings.
impl serde::Serialize for UserId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Int(id) => serializer.serialize_i64(*id),
            Self::Uuid(id) => serializer.collect_str(id),
            Self::Text(id) => serializer.serialize_str(id),
        }
    }
}

impl From<i64> for UserId {
    fn from(id: i64) -> Self {
        Self::Int(id)
    }
}

impl From<i32> for UserId {
    fn from(id: i32) -> Self {
        Self::Int(id.into())
    }
}

impl From<Uuid> for UserId {
    fn from(id: Uuid) -> Self {
        Self::Uuid(id)
    }
}

impl From<String> for UserId {
    fn from(id: String) -> Self {
        Self::Text(id)
    }
}

impl From<&str> for UserId {
    fn from(id: &str) -> Self {
        Self::Text(id.to_owned())
    }
}

impl From<&UserId> for UserId {
    fn from(id: &UserId) -> Self {
        id.clone()
    }
}

impl UserId {
    /// The ids whose text form is `text`: what an invalidation notice (which carries the id as
    /// text) may name. A store keeps one type, so matching each is exact for it.
    pub(crate) fn candidates(text: &str) -> Vec<Self> {
        let mut ids = Vec::with_capacity(2);
        if let Ok(id) = text.parse::<i64>() {
            if id.to_string() == text {
                ids.push(Self::Int(id));
            }
        } else if let Ok(id) = text.parse::<Uuid>() {
            if id.to_string() == text {
                ids.push(Self::Uuid(id));
            }
        }
        ids.push(Self::Text(text.to_owned()));
        ids
    }

    /// This id as the value of a log event's field: an integer as a number, a uuid as its
    /// text, and a text id as a string, which a log writes quoted and escaped like every
    /// other string (a text id may be a name its user chose: it must not add a field or a
    /// line to the audit log).
    pub(crate) fn as_field(&self) -> Box<dyn tracing::Value + '_> {
        match self {
            Self::Int(id) => Box::new(*id),
            Self::Uuid(id) => Box::new(tracing::field::display(*id)),
            Self::Text(id) => Box::new(id.as_str()),
        }
    }

    /// This id as a value of a column of type `ty`, or why it is not one.
    fn mismatch(&self, ty: &Type) -> Box<dyn Error + Sync + Send> {
        format!("user id {self} does not fit a column of type {ty}").into()
    }
}

/// Reads a typed id out of a [`UserId`]: what [`AuthUser<Id>`](crate::AuthUser) and the other
/// extractors need of their `Id`.
///
/// Implemented for `i64`, `i32`, [`Uuid`], `String` and [`UserId`] itself. An application's own
/// id type implements it to appear in handler signatures:
///
/// ```
/// use tower_session_auth::{FromUserId, UserId};
///
/// #[derive(Clone, Debug, PartialEq)]
/// struct AccountId(uuid::Uuid);
///
/// impl FromUserId for AccountId {
///     fn from_user_id(id: &UserId) -> Option<Self> {
///         uuid::Uuid::from_user_id(id).map(AccountId)
///     }
/// }
/// ```
pub trait FromUserId: Sized {
    /// The typed id, or `None` when `id` is of another kind (an `AuthUser<Uuid>` in front of a
    /// store of integer ids: a configuration error, answered with a 500).
    fn from_user_id(id: &UserId) -> Option<Self>;
}

impl FromUserId for UserId {
    fn from_user_id(id: &UserId) -> Option<Self> {
        Some(id.clone())
    }
}

impl FromUserId for i64 {
    fn from_user_id(id: &UserId) -> Option<Self> {
        match id {
            UserId::Int(id) => Some(*id),
            _ => None,
        }
    }
}

impl FromUserId for i32 {
    fn from_user_id(id: &UserId) -> Option<Self> {
        match id {
            UserId::Int(id) => i32::try_from(*id).ok(),
            _ => None,
        }
    }
}

impl FromUserId for Uuid {
    fn from_user_id(id: &UserId) -> Option<Self> {
        match id {
            UserId::Uuid(id) => Some(*id),
            _ => None,
        }
    }
}

impl FromUserId for String {
    fn from_user_id(id: &UserId) -> Option<Self> {
        match id {
            UserId::Text(id) => Some(id.clone()),
            _ => None,
        }
    }
}

/// The SQL type of the user id columns: the application's users table's key, which the
/// crate's `sessions.user_id` and `refresh_series.user_id` follow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UserIdType {
    /// `bigint` (`int8`), the default.
    #[default]
    BigInt,
    /// `integer` (`int4`).
    Integer,
    /// `uuid`.
    Uuid,
    /// `text` (a `varchar` users table is read too).
    Text,
}

impl UserIdType {
    /// The type as SQL writes it.
    pub fn sql(self) -> &'static str {
        match self {
            Self::BigInt => "bigint",
            Self::Integer => "integer",
            Self::Uuid => "uuid",
            Self::Text => "text",
        }
    }

    /// The type of a statement's parameter.
    pub(crate) fn pg_type(self) -> Type {
        match self {
            Self::BigInt => Type::INT8,
            Self::Integer => Type::INT4,
            Self::Uuid => Type::UUID,
            Self::Text => Type::TEXT,
        }
    }

    /// The `pg_type.typname`s of a users table's key this type reads.
    pub(crate) fn type_names(self) -> &'static [&'static str] {
        match self {
            Self::BigInt => &["int8"],
            Self::Integer => &["int4"],
            Self::Uuid => &["uuid"],
            Self::Text => &["text", "varchar"],
        }
    }

    /// Whether `id` is a value of this type (an integer id of an `integer` column in range).
    pub fn fits(self, id: &UserId) -> bool {
        match (self, id) {
            (Self::BigInt, UserId::Int(_)) => true,
            (Self::Integer, UserId::Int(id)) => i32::try_from(*id).is_ok(),
            (Self::Uuid, UserId::Uuid(_)) | (Self::Text, UserId::Text(_)) => true,
            _ => false,
        }
    }
}

impl ToSql for UserId {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Self::Int(id) if *ty == Type::INT8 => id.to_sql(ty, out),
            Self::Int(id) if *ty == Type::INT4 => i32::try_from(*id)
                .map_err(|_| self.mismatch(ty))?
                .to_sql(ty, out),
            Self::Uuid(id) if *ty == Type::UUID => id.to_sql(ty, out),
            Self::Text(id) if *ty == Type::TEXT || *ty == Type::VARCHAR => id.to_sql(ty, out),
            _ => Err(self.mismatch(ty)),
        }
    }

    fn accepts(ty: &Type) -> bool {
        [
            Type::INT8,
            Type::INT4,
            Type::UUID,
            Type::TEXT,
            Type::VARCHAR,
        ]
        .contains(ty)
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for UserId {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(match *ty {
            Type::INT8 => Self::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Self::Int(i32::from_sql(ty, raw)?.into()),
            Type::UUID => Self::Uuid(Uuid::from_sql(ty, raw)?),
            _ => Self::Text(String::from_sql(ty, raw)?),
        })
    }

    fn accepts(ty: &Type) -> bool {
        <Self as ToSql>::accepts(ty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_name_every_id_of_their_text() {
        assert_eq!(
            UserId::candidates("42"),
            [UserId::Int(42), UserId::from("42")]
        );
        let uuid = Uuid::new_v4();
        assert_eq!(
            UserId::candidates(&uuid.to_string()),
            [UserId::Uuid(uuid), UserId::Text(uuid.to_string())]
        );
        // Not the text form PostgreSQL writes: only a text id can be spelled so.
        assert_eq!(UserId::candidates("042"), [UserId::from("042")]);
        assert_eq!(UserId::candidates("alice"), [UserId::from("alice")]);
    }

    #[test]
    fn ids_fit_their_column_types_only() {
        assert!(UserIdType::Integer.fits(&UserId::Int(i64::from(i32::MAX))));
        assert!(!UserIdType::Integer.fits(&UserId::Int(i64::from(i32::MAX) + 1)));
        assert!(!UserIdType::Uuid.fits(&UserId::Int(1)));
        assert!(!UserIdType::BigInt.fits(&UserId::from("1")));
        assert!(UserIdType::Text.fits(&UserId::from("1")));
    }
}
