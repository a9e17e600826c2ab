//! The remember-me family rules both stores apply (drawn in
//! [`RefreshConfig`](crate::RefreshConfig)), and small time helpers.

use std::time::Duration;

use time::OffsetDateTime;

/// How many secrets a series remembers (unused, used and spent together); the oldest issued
/// are forgotten first, and a forgotten secret is invalid (never reuse).
pub(crate) const MAX_SECRETS_PER_SERIES: i64 = 8;

/// What a series remembers of one secret it issued.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SecretState {
    /// When it was exchanged; `None` while unused.
    pub(crate) used_at: Option<OffsetDateTime>,
    /// Whether it was exchanged a second time, inside the grace window.
    pub(crate) spent: bool,
}

impl SecretState {
    /// A secret just issued.
    pub(crate) const UNUSED: Self = Self {
        used_at: None,
        spent: false,
    };
}

/// Decides a refresh from what the series remembers of the presented secret; shared by both
/// stores (the family rules are drawn in [`RefreshConfig`](crate::RefreshConfig)).
pub(crate) enum SecretMatch {
    /// Not a secret of this series (or forgotten): invalid, nothing changes.
    Unknown,
    /// An unused secret: exchange it.
    Rotate,
    /// A secret used once, inside the grace window: exchange it once more. Sessions created
    /// since `used_at` (by its first use) are kept.
    Grace {
        /// When the secret was first used.
        used_at: OffsetDateTime,
    },
    /// A secret already used twice, inside the grace window: invalid, nothing changes.
    Refused,
    /// A used secret after the grace window: reuse.
    Reuse,
}

pub(crate) fn match_secret(
    stored: Option<SecretState>,
    grace_since: OffsetDateTime,
) -> SecretMatch {
    match stored {
        None => SecretMatch::Unknown,
        Some(SecretState { used_at: None, .. }) => SecretMatch::Rotate,
        Some(SecretState {
            used_at: Some(used_at),
            spent,
        }) if used_at > grace_since => {
            if spent {
                SecretMatch::Refused
            } else {
                SecretMatch::Grace { used_at }
            }
        }
        Some(_) => SecretMatch::Reuse,
    }
}

/// The earlier of two optional instants (`None`: never).
pub(crate) fn earliest(
    a: Option<OffsetDateTime>,
    b: Option<OffsetDateTime>,
) -> Option<OffsetDateTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether a session or a remember-me series with these expiries (`None`: never) has expired at
/// `now`: its idle or its absolute expiry is reached. The one expiry rule in Rust (the
/// PostgreSQL store states it in SQL once, beside its statements).
pub(crate) fn expired(
    now: OffsetDateTime,
    expires_at: Option<OffsetDateTime>,
    absolute_expires_at: Option<OffsetDateTime>,
) -> bool {
    expires_at.is_some_and(|at| at <= now) || absolute_expires_at.is_some_and(|at| at <= now)
}

/// Converts a `Duration` to a `time::Duration`, saturating.
pub(crate) fn span(duration: Duration) -> time::Duration {
    time::Duration::try_from(duration).unwrap_or(time::Duration::MAX)
}
