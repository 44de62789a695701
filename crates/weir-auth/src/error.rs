//! What goes wrong: [`AuthError`] when a request's credential is not accepted (401),
//! [`Denied`] when its principal may not do what it asks (403), [`Error`] when the
//! configuration or the key store cannot be used.

use std::path::PathBuf;

/// A credential that is not accepted. Each has a stable [`AuthError::code`], which the
/// gateway sends as the problem's `type`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "this route needs a credential: send `Authorization: Bearer <API key or JWT>` (`weir auth key create` makes a key)"
    )]
    Missing,
    #[error("the Authorization header is not `Bearer <token>`: {0}")]
    Malformed(String),
    #[error("this node does not accept API keys; send a JWT")]
    KeysDisabled,
    #[error("this node does not accept JWTs; send an API key")]
    JwtDisabled,
    #[error("no API key has this id")]
    UnknownKey,
    #[error("the API key {id} was revoked")]
    RevokedKey { id: String },
    #[error("the API key {id} expired")]
    ExpiredKey { id: String },
    #[error("the API key's secret does not match")]
    WrongSecret,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token expired")]
    TokenExpired,
    #[error("the token is not valid yet (nbf)")]
    TokenNotYetValid,
    #[error("the token's audience is not {expected:?}")]
    WrongAudience { expected: String },
    #[error("the token's issuer is not {expected:?}")]
    WrongIssuer { expected: String },
    #[error("the token's algorithm {0} is not accepted here")]
    AlgorithmNotAccepted(String),
    #[error("no key with the token's key id {0:?}; the key set is refreshed, try again later")]
    UnknownKeyId(String),
    #[error("the token has no {0:?} claim naming its principal")]
    NoPrincipal(String),
    #[error("the token is not valid: {0}")]
    InvalidToken(String),
}

impl AuthError {
    /// A short stable name, used as the problem's type.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing-credentials",
            AuthError::Malformed(_) => "malformed-credentials",
            AuthError::KeysDisabled | AuthError::JwtDisabled => "credential-not-accepted",
            AuthError::UnknownKey | AuthError::WrongSecret => "unknown-key",
            AuthError::RevokedKey { .. } => "revoked-key",
            AuthError::ExpiredKey { .. } => "expired-key",
            AuthError::BadSignature => "bad-signature",
            AuthError::TokenExpired => "token-expired",
            AuthError::TokenNotYetValid => "token-not-yet-valid",
            AuthError::WrongAudience { .. } => "wrong-audience",
            AuthError::WrongIssuer { .. } => "wrong-issuer",
            AuthError::AlgorithmNotAccepted(_) => "algorithm-not-accepted",
            AuthError::UnknownKeyId(_) => "unknown-key-id",
            AuthError::NoPrincipal(_) | AuthError::InvalidToken(_) => "invalid-token",
        }
    }
}

/// A principal that may not do what it asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("principal {principal:?} may not {action}; it needs a role with {needs}")]
pub struct Denied {
    pub principal: String,
    /// What it asked, as words: "publish to topic \"orders\"".
    pub action: String,
    /// What would allow it: "publish = [\"orders\"]".
    pub needs: String,
}

/// The configuration or the key store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a weir API key file: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error("auth.jwt: {0}")]
    Jwt(String),
    #[error("{0}")]
    Invalid(String),
    #[error("no API key has the id {0:?}")]
    NoSuchKey(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
