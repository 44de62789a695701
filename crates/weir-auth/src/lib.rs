//! Who may call weir's API, and what each caller may do.
//!
//! An [`Authenticator`] is built from the manifest's `[auth]` ([`weir_manifest::AuthSpec`])
//! and the node's [`ApiKeyStore`]. [`Authenticator::authenticate`] turns an
//! `Authorization: Bearer <token>` header into a [`Principal`]: the token is an API key
//! (`weir_<id>_<secret>`, see `keys`) or a JWT (see `jwt`). A principal's roles are its
//! credential's (the key's, or the JWT's roles claim) plus those `[auth.principals]` gives
//! its name; [`Authenticator::authorize`] checks an [`Action`] against them, reading the
//! roles' rules from the spec (nothing is copied per request).
//!
//! **API Boundary:** nothing here knows HTTP routes; the gateway says which [`Action`] a
//! request is. The only IO is the key file and the JWT key sources.

mod acl;
mod error;
mod jwt;
mod keys;

use std::sync::Arc;

use weir_manifest::AuthSpec;

pub use acl::{Action, AdminOp};
pub use error::{AuthError, Denied, Error, Result};
pub use jwt::{Claims, JwtVerifier, MIN_SECRET_BYTES, read_secret};
pub use keys::{ApiKeyStore, KeyInfo, parse_duration};

/// How a principal proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    ApiKey { id: String },
    Jwt,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub credential: Credential,
    /// Its credential's roles, then those `[auth.principals]` gives it.
    pub roles: Vec<String>,
}

impl Principal {
    /// Whether it has the built-in `admin` role, which may do everything.
    pub fn is_admin(&self) -> bool {
        self.roles
            .iter()
            .any(|role| role == weir_manifest::ADMIN_ROLE)
    }
}

/// Checks credentials and permissions against one `[auth]`.
#[derive(Debug)]
pub struct Authenticator {
    spec: AuthSpec,
    keys: Arc<ApiKeyStore>,
    jwt: Option<Arc<JwtVerifier>>,
}

impl Authenticator {
    /// Loads what `spec` needs (a JWT secret, public key or JWKS); fails if any of it
    /// cannot be read, so a broken `[auth]` is refused before it is put in place.
    pub async fn new(spec: AuthSpec, keys: Arc<ApiKeyStore>) -> Result<Authenticator> {
        let jwt = match &spec.jwt {
            Some(jwt) => Some(JwtVerifier::new(jwt).await?),
            None => None,
        };
        Ok(Authenticator { spec, keys, jwt })
    }

    pub fn spec(&self) -> &AuthSpec {
        &self.spec
    }

    pub fn keys(&self) -> &Arc<ApiKeyStore> {
        &self.keys
    }

    /// The principal an `Authorization` header's value proves, if it does.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Principal, AuthError> {
        let header = authorization.ok_or(AuthError::Missing)?;
        let header = std::str::from_utf8(header)
            .map_err(|_| AuthError::Malformed("it is not UTF-8".to_owned()))?;
        let (scheme, token) = header
            .split_once(' ')
            .ok_or_else(|| AuthError::Malformed("no scheme and token".to_owned()))?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Malformed(format!(
                "the scheme is {scheme:?}, not Bearer"
            )));
        }
        let token = token.trim();
        if token.is_empty() || token.len() > 16 * 1024 {
            return Err(AuthError::Malformed(
                "the token is empty or longer than 16 KiB".to_owned(),
            ));
        }
        let (name, credential, roles) = if ApiKeyStore::is_key(token) {
            if !self.spec.api_keys {
                return Err(AuthError::KeysDisabled);
            }
            let key = self.keys.verify(token)?;
            (key.principal, Credential::ApiKey { id: key.id }, key.roles)
        } else {
            let jwt = self.jwt.as_ref().ok_or(AuthError::JwtDisabled)?;
            let claims = jwt.verify(token)?;
            (claims.principal, Credential::Jwt, claims.roles)
        };
        Ok(self.principal(name, credential, roles))
    }

    /// A principal named `name` with `roles` plus those `[auth.principals]` gives it.
    pub fn principal(
        &self,
        name: String,
        credential: Credential,
        mut roles: Vec<String>,
    ) -> Principal {
        if let Some(more) = self.spec.principals.get(&name) {
            for role in more {
                if !roles.contains(role) {
                    roles.push(role.clone());
                }
            }
        }
        Principal {
            name,
            credential,
            roles,
        }
    }

    /// Whether `principal` may do `action`.
    pub fn authorize(&self, principal: &Principal, action: Action<'_>) -> Result<(), Denied> {
        acl::check(&self.spec, &principal.name, &principal.roles, action)
    }
}

#[cfg(test)]
mod tests;
