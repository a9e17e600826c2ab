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
/// converts `tokio_postgres::Error` and the pool's errors with `From`). The text of a variant
/// that wraps a backend's error includes that error's causes, where drivers often keep what
/// failed (the server's message, the certificate check that failed).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed: the database answered with an error, the connection broke, or no
    /// connection could be had in time.
    #[error("session store backend error: {}", Causes(&**.0))]
    Backend(#[source] BoxError),
    /// The backend did not answer within the store's bound (a lock held, a long
    /// `ALTER TABLE`, a network that stopped answering).
    #[error("the session store did not answer within {0:?}")]
    Timeout(Duration),
    /// A stored value did not decode as the crate reads it: NULL where a value is required, or
    /// another type (for example an application's `users.id integer` where `bigint` is
    /// expected).
    #[error("column {column:?} does not decode as {expected}: {}", Causes(&**source))]
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
    #[error("migration {version} ({name}) failed: {}", Causes(&**source))]
    Migration {
        /// Version number of the migration; 0 for the step after them that gives the crate's
        /// user id columns the [`AppSchema::user_id_type`](super::AppSchema::user_id_type).
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

/// An error's text followed by its causes', each after `: ` unless the text so far already
/// ends with it: drivers often keep the telling part in a cause (tokio-postgres' "error
/// performing TLS handshake" has "invalid peer certificate: UnknownIssuer" as its source, its
/// "db error" the server's message), and a log line shows only the text.
pub(crate) struct Causes<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(error) = cause {
            let part = error.to_string();
            if !part.is_empty() && !text.ends_with(&part) {
                text.push_str(": ");
                text.push_str(&part);
            }
            cause = error.source();
        }
        f.write_str(&text)
    }
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

#[cfg(test)]
mod tests {
    use super::StoreError;

    /// An error whose text says little, and whose cause says what failed.
    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        #[source]
        cause: Option<Box<Layer>>,
    }

    fn layer(text: &'static str, cause: Option<Layer>) -> Layer {
        Layer {
            text,
            cause: cause.map(Box::new),
        }
    }

    #[test]
    fn the_text_carries_the_causes_once() {
        let tls = layer(
            "error performing TLS handshake",
            Some(layer("invalid peer certificate: UnknownIssuer", None)),
        );
        // The pool's error repeats its cause's text; it is not repeated again.
        let pool = layer(
            "Error occurred while creating a new object: error performing TLS handshake",
            Some(tls),
        );
        assert_eq!(
            StoreError::backend(pool).to_string(),
            "session store backend error: Error occurred while creating a new object: error \
             performing TLS handshake: invalid peer certificate: UnknownIssuer"
        );
        let migration = StoreError::Migration {
            version: 3,
            name: "0003.sql",
            source: Box::new(layer(
                "db error",
                Some(layer("ERROR: relation \"users\" does not exist", None)),
            )),
        };
        assert_eq!(
            migration.to_string(),
            "migration 3 (0003.sql) failed: db error: ERROR: relation \"users\" does not exist"
        );
    }
}
