//! Session tokens, their hashes, and session ids.
//!
//! A [`SessionToken`] is the bearer credential: 32 bytes from the operating system's CSPRNG,
//! encoded as base64url without padding (43 characters). It is opaque and never stored: the
//! store keeps only its [`TokenHash`] (SHA-256 of the token text). A [`SessionId`] is the public
//! handle of a session, safe to show in listings and to pass to "revoke this session".

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Length of an encoded token: 32 bytes in base64url without padding.
pub const TOKEN_LEN: usize = 43;

const TOKEN_BYTES: usize = 32;

/// The secret bearer credential of a session.
///
/// Its `Debug` output is redacted and it has no `Display`, so it cannot end up in a log line
/// or an error message by accident; call [`SessionToken::expose`] where the text is really
/// needed (the login response body, the `Set-Cookie` header).
///
/// ```
/// use tower_session_auth::token::SessionToken;
///
/// let token = SessionToken::generate();
/// assert_eq!(token.expose().len(), 43);
/// assert_eq!(format!("{token:?}"), "SessionToken(<redacted>)");
/// // Parsing is strict: exactly 43 base64url characters, canonical encoding.
/// assert!(SessionToken::parse(token.expose()).is_some());
/// assert!(SessionToken::parse("not-a-token").is_none());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken([u8; TOKEN_LEN]);

impl SessionToken {
    /// Draws a fresh token from the operating system's CSPRNG.
    ///
    /// # Panics
    /// Panics if the operating system cannot provide randomness, the one failure after which
    /// no safe token can be made.
    pub fn generate() -> Self {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).expect("the operating system's CSPRNG is unavailable");
        let mut text = [0u8; TOKEN_LEN];
        let written = URL_SAFE_NO_PAD
            .encode_slice(bytes, &mut text)
            .expect("32 bytes encode to 43 characters");
        debug_assert_eq!(written, TOKEN_LEN);
        Self(text)
    }

    /// Parses a presented token strictly: exactly 43 characters of the base64url alphabet that
    /// decode canonically to 32 bytes. Anything else is `None`, before any store is asked.
    pub fn parse(text: &str) -> Option<Self> {
        Self::parse_bytes(text.as_bytes())
    }

    /// Like [`SessionToken::parse`], for raw header bytes (which need not be UTF-8).
    pub fn parse_bytes(bytes: &[u8]) -> Option<Self> {
        let text: [u8; TOKEN_LEN] = bytes.try_into().ok()?;
        // The decoder accepts only the base64url alphabet, no padding, and the canonical
        // spelling (the last character's 2 unused bits must be zero), so each secret has
        // exactly one accepted form.
        let mut decoded = [0u8; TOKEN_BYTES + 1];
        match URL_SAFE_NO_PAD.decode_slice(text, &mut decoded) {
            Ok(TOKEN_BYTES) => Some(Self(text)),
            _ => None,
        }
    }

    /// The token text, for the login response body or the cookie value. Never log it.
    pub fn expose(&self) -> &str {
        std::str::from_utf8(&self.0).expect("a token is base64url text")
    }

    /// The SHA-256 hash under which the store keeps this session.
    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0).into())
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

/// SHA-256 of a token's text: the only form of the token a store keeps.
///
/// Its `Debug` shows only an 8-hex-digit prefix, enough to correlate audit lines without
/// giving an attacker anything to look up.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub(crate) [u8; 32]);

impl TokenHash {
    /// The 32 raw bytes (as stored in the `token_hash` column).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A short hex prefix for audit logs: identifies a token hash without revealing it.
    pub fn prefix(&self) -> String {
        self.0[..4].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}…)", self.prefix())
    }
}

/// The public identifier of a session (a random UUID). Not a credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(pub Uuid);

impl SessionId {
    /// A new random session id.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }
}

impl Default for SessionId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for SessionId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// A remember-me credential: the id of a refresh series and its current secret, sent as
/// `<series id as 32 hex digits>.<secret as 43 base64url characters>`.
///
/// Only the secret's SHA-256 is stored. Each use rotates the secret; presenting a superseded
/// one (outside a short grace window) revokes the whole series. `Debug` is redacted and there
/// is no `Display`.
///
/// ```
/// use tower_session_auth::token::RefreshToken;
///
/// let token = RefreshToken::generate();
/// assert_eq!(token.expose().len(), 76);
/// assert_eq!(RefreshToken::parse(&token.expose()).unwrap().series(), token.series());
/// assert!(RefreshToken::parse("nope").is_none());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken {
    series: Uuid,
    secret: SessionToken,
}

impl RefreshToken {
    /// Length of the encoded form.
    pub const LEN: usize = 32 + 1 + TOKEN_LEN;

    /// A new series with a fresh secret.
    pub fn generate() -> Self {
        Self::rotate(Uuid::new_v4())
    }

    /// A fresh secret for an existing series.
    pub(crate) fn rotate(series: Uuid) -> Self {
        Self {
            series,
            secret: SessionToken::generate(),
        }
    }

    /// Parses the encoded form strictly; anything else is `None`.
    pub fn parse(text: &str) -> Option<Self> {
        Self::parse_bytes(text.as_bytes())
    }

    /// Like [`RefreshToken::parse`], for raw bytes.
    pub fn parse_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::LEN || bytes[32] != b'.' {
            return None;
        }
        let series = &bytes[..32];
        if !series
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        {
            return None;
        }
        Some(Self {
            series: Uuid::try_parse_ascii(series).ok()?,
            secret: SessionToken::parse_bytes(&bytes[33..])?,
        })
    }

    /// The series id (not secret by itself).
    pub fn series(&self) -> Uuid {
        self.series
    }

    /// SHA-256 of the secret: what the store keeps.
    pub fn secret_hash(&self) -> TokenHash {
        self.secret.hash()
    }

    /// The encoded credential, for the response body or the refresh cookie. Never log it.
    pub fn expose(&self) -> String {
        format!("{}.{}", self.series.simple(), self.secret.expose())
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RefreshToken({}.<redacted>)", self.series.simple())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_and_differ() {
        let a = SessionToken::generate();
        let b = SessionToken::generate();
        assert_ne!(a, b);
        assert_eq!(SessionToken::parse(a.expose()), Some(a.clone()));
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        let good = SessionToken::generate();
        let text = good.expose();
        assert!(SessionToken::parse("").is_none());
        assert!(SessionToken::parse(&text[..42]).is_none());
        assert!(SessionToken::parse(&format!("{text}A")).is_none());
        assert!(SessionToken::parse(&format!("{}=", &text[..42])).is_none());
        assert!(SessionToken::parse(&format!("{}+", &text[..42])).is_none());
        assert!(SessionToken::parse(&format!("{}/", &text[..42])).is_none());
        assert!(SessionToken::parse(&format!("{}\0", &text[..42])).is_none());
        assert!(SessionToken::parse("' OR 1=1 --aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").is_none());
        // The last of 43 characters has 2 unused bits; setting them is non-canonical.
        assert!(SessionToken::parse(&format!("{}B", &text[..42])).is_none());
    }

    #[test]
    fn refresh_tokens_parse_strictly() {
        let token = RefreshToken::generate();
        let text = token.expose();
        assert_eq!(RefreshToken::parse(&text), Some(token.clone()));
        assert!(RefreshToken::parse(&text.to_uppercase()).is_none());
        assert!(RefreshToken::parse(&text.replace('.', "-")).is_none());
        assert!(RefreshToken::parse(&text[..75]).is_none());
        assert!(!format!("{token:?}").contains(&text[33..]));
    }

    #[test]
    fn hash_is_sha256_of_the_text() {
        let token = SessionToken::parse("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
        let expected: [u8; 32] =
            Sha256::digest(b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").into();
        assert_eq!(token.hash().as_bytes(), &expected);
        assert!(!format!("{:?}", token.hash()).contains(token.expose()));
    }
}
