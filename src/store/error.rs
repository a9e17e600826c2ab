//! [`StoreError`]: what a store reports when it cannot answer.

use std::time::Duration;

/// A boxed error from a store's backend (driver, pool, network), kept as the source of a
/// [`StoreError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A store failure, whatever the backend. It never contains a token: stores only ever see
/// token hashes.
///
/// The extractors and the [`Session`](crate::Session) handle answer every store failure with
/// `500 Session store unavailable` and log it; the variants tell an operator (or a retry
/// policy) what happened, and [`source`](std::error::Error::source) keeps the backend's own
/// error. A backend converts its errors with [`StoreError::backend`] (the PostgreSQL store
/// converts `tokio_postgres::Error` and the pool's errors with `From`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed: the database answered with an error, the connection broke, or no
    /// connection could be had in time.
    #[error("session store backend error: {0}")]
    Backend(#[source] BoxError),
    /// The backend did not answer within the store's bound (a lock held, a long
    /// `ALTER TABLE`, a network that stopped answering).
    #[error("the session store did not answer within {0:?}")]
    Timeout(Duration),
    /// A stored value did not decode as the crate reads it: NULL where a value is required, or
    /// another type (for example an application's `users.id integer` where `bigint` is
    /// expected).
    #[error("column {column:?} does not decode as {expected}: {source}")]
    Decode {
        /// The column's name.
        column: String,
        /// The type the crate reads there.
        expected: &'static str,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
    /// The database lacks what the store needs: the crate's own tables (not migrated), or
    /// the columns and types of the application's tables that the store was told of.
    #[error("application schema mismatch: {0}")]
    Schema(String),
    /// A migration failed to apply.
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        /// Version number of the migration.
        version: i32,
        /// File name of the migration.
        name: &'static str,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
    /// The store does not offer this capability (remember-me, character binding,
    /// administration: see the extension traits in [`store`](crate::store)).
    #[error("the session store does not support {0}")]
    Unsupported(&'static str),
}

impl StoreError {
    /// Wraps a backend's error as [`StoreError::Backend`].
    ///
    /// ```
    /// use tower_session_auth::store::StoreError;
    ///
    /// let error = StoreError::backend(std::io::Error::other("connection reset"));
    /// assert_eq!(error.to_string(), "session store backend error: connection reset");
    /// assert!(std::error::Error::source(&error).is_some());
    /// ```
    pub fn backend(error: impl Into<BoxError>) -> Self {
        Self::Backend(error.into())
    }
}
