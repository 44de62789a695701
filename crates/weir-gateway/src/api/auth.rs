//! API keys: `/v1/auth/keys` and `/v1/auth/keys/{id}`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/auth/keys`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Who the key speaks for; several keys may share a principal.
    #[schema(example = "billing-service")]
    pub principal: String,
    /// Roles declared under `[auth.roles]`, or `admin`.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Seconds until it expires; none never expires.
    pub expires_in_secs: Option<u64>,
}

/// An API key as listed: never its secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKey {
    /// 16 hex digits; `weir auth key revoke <id>` takes it.
    pub id: String,
    pub principal: String,
    pub roles: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; null never expires.
    pub expires_at: Option<String>,
    /// RFC 3339; null while it works.
    pub revoked_at: Option<String>,
}

impl From<weir_auth::KeyInfo> for ApiKey {
    fn from(k: weir_auth::KeyInfo) -> ApiKey {
        ApiKey {
            id: k.id,
            principal: k.principal,
            roles: k.roles,
            created_at: k.created_at,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// A new key, with the key itself: shown this once, stored only as a hash.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedKey {
    /// Send it as `Authorization: Bearer <key>` (`weir --token`, `WEIR_TOKEN`).
    #[schema(example = "weir_0123456789abcdef_…")]
    pub key: String,
    #[serde(flatten)]
    pub info: ApiKey,
}
