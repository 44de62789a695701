//! The node's front door as the manifest sets it: `[auth]` (who may call the API and what
//! each may do), `[http]` (TLS and CORS) and `[limits]` (how much of each resource the
//! node gives out). Their serde tables live here too: they are resolved field for field.
//!
//! ```toml
//! [auth]                      # present = every route but /healthz and /readyz needs a credential
//! api_keys = true             # accept keys made by `weir auth key create` (default true)
//! metrics_open = false        # GET /metrics without a credential, for scrapers (default false)
//!
//! [auth.jwt]                  # optional; bearer JWTs from an identity provider
//! algorithms = ["RS256"]      # of HS256, RS256, ES256; default: what the key allows
//! secret = { env = "WEIR_JWT_SECRET" }   # HS256: at least 32 bytes; or { file = "..." }
//! public_key = "keys/idp.pem" # RS256/ES256: a PEM public key
//! jwks = "https://idp.example.com/.well-known/jwks.json"  # or a file; refreshed
//! jwks_refresh_secs = 300     # default 300
//! issuer = "https://idp.example.com"     # optional; `iss` must equal it
//! audience = "weir"           # optional; `aud` must contain it
//! leeway_secs = 60            # clock skew allowed on exp/nbf (default 60)
//! principal_claim = "sub"     # default "sub"
//! roles_claim = "roles"       # default "roles": a list of role names
//!
//! [auth.roles.orders-writer]  # a role: topic patterns ('*' any run of characters) and admin operations
//! publish = ["orders.*"]
//! subscribe = ["orders.*", "crm.orders"]
//! admin = ["replay", "groups"]   # of deploy, functions, topics, groups, kv, replay, redrive, keys; "*" all
//!
//! [auth.principals]           # roles given to a principal by name, whatever its credential says
//! ci-bot = ["admin"]          # "admin" is built in: everything
//!
//! [http]
//! tls_cert = "tls/cert.pem"   # both or neither: serve HTTPS with rustls
//! tls_key = "tls/key.pem"
//! cors = { origins = ["https://app.example.com"], max_age_secs = 600 }
//!
//! [limits]                    # every one has a default; see NodeLimits
//! max_subscriptions = 1024
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::document::SecretTable;
use crate::validate::{check_range, key};
use crate::{Problem, SecretSource};

/// The admin operations a role may be granted, as written in `admin = [...]`.
pub const ADMIN_OPERATIONS: [&str; 10] = [
    "deploy",
    "functions",
    "topics",
    "groups",
    "kv",
    "replay",
    "redrive",
    "keys",
    "views",
    "schemas",
];

/// The built-in role that may do everything, including changing `[auth]` itself.
pub const ADMIN_ROLE: &str = "admin";

/// The JWT signature algorithms weir accepts.
pub const JWT_ALGORITHMS: [&str; 3] = ["HS256", "RS256", "ES256"];

/// `[auth]`: present means the API needs a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSpec {
    /// Accept API keys from the node's key store.
    pub api_keys: bool,
    /// `GET /metrics` without a credential.
    pub metrics_open: bool,
    pub jwt: Option<JwtSpec>,
    /// Roles by name; [`ADMIN_ROLE`] is built in and may not be redefined.
    pub roles: BTreeMap<String, RoleSpec>,
    /// Roles given to principals by name.
    pub principals: BTreeMap<String, Vec<String>>,
}

impl Default for AuthSpec {
    fn default() -> AuthSpec {
        AuthSpec {
            api_keys: true,
            metrics_open: false,
            jwt: None,
            roles: BTreeMap::new(),
            principals: BTreeMap::new(),
        }
    }
}

/// `[auth.jwt]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSpec {
    /// Empty: whatever the configured keys allow.
    pub algorithms: Vec<String>,
    /// The HS256 secret.
    pub secret: Option<SecretSource>,
    /// A PEM public key (RSA or EC P-256), resolved against the manifest's directory.
    pub public_key: Option<PathBuf>,
    /// A JWKS: an `http(s)://` URL, or a file resolved against the manifest's directory.
    pub jwks: Option<String>,
    pub jwks_refresh_secs: u64,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway_secs: u64,
    pub principal_claim: String,
    pub roles_claim: String,
}

impl JwtSpec {
    pub const DEFAULT_JWKS_REFRESH_SECS: u64 = 300;
    pub const DEFAULT_LEEWAY_SECS: u64 = 60;
}

/// `[auth.roles.<name>]`: topic patterns and admin operations.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoleSpec {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    pub admin: Vec<String>,
    /// Views the role may query (names or `*` patterns).
    pub views: Vec<String>,
    /// `[routes]` the role may call (names or `*` patterns); public routes need none.
    pub routes: Vec<String>,
}

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpSpec {
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub cors: Option<CorsSpec>,
}

/// `[http.cors]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CorsSpec {
    /// Exact origins, or `["*"]` for any (then credentials are not allowed).
    pub origins: Vec<String>,
    pub max_age_secs: u64,
}

/// `[limits]`: what the node gives out, each with a default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeLimits {
    /// Open SSE subscriptions on the node.
    pub max_subscriptions: u32,
    /// Open SSE subscriptions per principal (per client address without auth).
    pub max_subscriptions_per_principal: u32,
    /// Bytes of events in one read response.
    pub max_read_bytes: u64,
    /// Bytes in one request body.
    pub max_body_bytes: u64,
    /// How long a request (not a stream) may take before 503.
    pub request_timeout_ms: u64,
    /// Open client connections.
    pub max_connections: u32,
    /// Consumer groups created by clients (reads with `group=`), not by pipelines.
    pub max_client_groups: u32,
    /// Requests per second per principal (per client address without auth); 0 = off.
    pub rate_limit_per_sec: u32,
    /// Requests allowed at once above the rate; 0 = the rate.
    pub rate_limit_burst: u32,
    /// Compiled functions kept in memory, active and replay candidates together.
    pub compiled_in_memory: u32,
    /// Bytes of compiled code kept in the on-disk cache; the least recently used go first.
    pub compiled_on_disk_bytes: u64,
}

impl Default for NodeLimits {
    fn default() -> NodeLimits {
        NodeLimits {
            max_subscriptions: 1024,
            max_subscriptions_per_principal: 64,
            max_read_bytes: 4 << 20,
            max_body_bytes: 1 << 20,
            request_timeout_ms: 30_000,
            max_connections: 4096,
            max_client_groups: 1000,
            rate_limit_per_sec: 0,
            rate_limit_burst: 0,
            compiled_in_memory: 64,
            compiled_on_disk_bytes: 1 << 30,
        }
    }
}

// ---- serde tables ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthTable {
    api_keys: Option<bool>,
    metrics_open: Option<bool>,
    jwt: Option<JwtTable>,
    #[serde(default)]
    roles: BTreeMap<String, RoleTable>,
    #[serde(default)]
    principals: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JwtTable {
    #[serde(default)]
    algorithms: Vec<String>,
    secret: Option<SecretTable>,
    public_key: Option<PathBuf>,
    jwks: Option<String>,
    jwks_refresh_secs: Option<u64>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: Option<u64>,
    principal_claim: Option<String>,
    roles_claim: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleTable {
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    admin: Vec<String>,
    #[serde(default)]
    views: Vec<String>,
    #[serde(default)]
    routes: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpTable {
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    cors: Option<CorsTable>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CorsTable {
    #[serde(default)]
    origins: Vec<String>,
    max_age_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsTable {
    max_subscriptions: Option<u32>,
    max_subscriptions_per_principal: Option<u32>,
    max_read_bytes: Option<u64>,
    max_body_bytes: Option<u64>,
    request_timeout_ms: Option<u64>,
    max_connections: Option<u32>,
    max_client_groups: Option<u32>,
    rate_limit_per_sec: Option<u32>,
    rate_limit_burst: Option<u32>,
    compiled_in_memory: Option<u32>,
    compiled_on_disk_bytes: Option<u64>,
}

impl AuthTable {
    pub(crate) fn resolve(self, base_dir: &Path) -> AuthSpec {
        let defaults = AuthSpec::default();
        AuthSpec {
            api_keys: self.api_keys.unwrap_or(defaults.api_keys),
            metrics_open: self.metrics_open.unwrap_or(defaults.metrics_open),
            jwt: self.jwt.map(|jwt| JwtSpec {
                algorithms: jwt.algorithms,
                secret: jwt.secret.map(|secret| secret.resolve(base_dir)),
                public_key: jwt.public_key.map(|path| base_dir.join(path)),
                jwks: jwt.jwks.map(|jwks| {
                    if jwks.starts_with("http://") || jwks.starts_with("https://") {
                        jwks
                    } else {
                        base_dir.join(jwks).to_string_lossy().into_owned()
                    }
                }),
                jwks_refresh_secs: jwt
                    .jwks_refresh_secs
                    .unwrap_or(JwtSpec::DEFAULT_JWKS_REFRESH_SECS),
                issuer: jwt.issuer,
                audience: jwt.audience,
                leeway_secs: jwt.leeway_secs.unwrap_or(JwtSpec::DEFAULT_LEEWAY_SECS),
                principal_claim: jwt.principal_claim.unwrap_or_else(|| "sub".to_owned()),
                roles_claim: jwt.roles_claim.unwrap_or_else(|| "roles".to_owned()),
            }),
            roles: self
                .roles
                .into_iter()
                .map(|(name, role)| {
                    let spec = RoleSpec {
                        publish: role.publish,
                        subscribe: role.subscribe,
                        admin: role.admin,
                        views: role.views,
                        routes: role.routes,
                    };
                    (name, spec)
                })
                .collect(),
            principals: self.principals,
        }
    }
}

impl HttpTable {
    pub(crate) fn resolve(self, base_dir: &Path) -> HttpSpec {
        HttpSpec {
            tls_cert: self.tls_cert.map(|path| base_dir.join(path)),
            tls_key: self.tls_key.map(|path| base_dir.join(path)),
            cors: self.cors.map(|cors| CorsSpec {
                origins: cors.origins,
                max_age_secs: cors.max_age_secs.unwrap_or(600),
            }),
        }
    }
}

impl LimitsTable {
    pub(crate) fn resolve(self) -> NodeLimits {
        let d = NodeLimits::default();
        NodeLimits {
            max_subscriptions: self.max_subscriptions.unwrap_or(d.max_subscriptions),
            max_subscriptions_per_principal: self
                .max_subscriptions_per_principal
                .unwrap_or(d.max_subscriptions_per_principal),
            max_read_bytes: self.max_read_bytes.unwrap_or(d.max_read_bytes),
            max_body_bytes: self.max_body_bytes.unwrap_or(d.max_body_bytes),
            request_timeout_ms: self.request_timeout_ms.unwrap_or(d.request_timeout_ms),
            max_connections: self.max_connections.unwrap_or(d.max_connections),
            max_client_groups: self.max_client_groups.unwrap_or(d.max_client_groups),
            rate_limit_per_sec: self.rate_limit_per_sec.unwrap_or(d.rate_limit_per_sec),
            rate_limit_burst: self.rate_limit_burst.unwrap_or(d.rate_limit_burst),
            compiled_in_memory: self.compiled_in_memory.unwrap_or(d.compiled_in_memory),
            compiled_on_disk_bytes: self
                .compiled_on_disk_bytes
                .unwrap_or(d.compiled_on_disk_bytes),
        }
    }
}

// ---- rules ----

pub(crate) fn check_auth(auth: &AuthSpec, problems: &mut Vec<Problem>) {
    if !auth.api_keys && auth.jwt.is_none() {
        problems.push(Problem::new(
            key(&["auth", "api_keys"]),
            "is false and there is no [auth.jwt]: nothing could ever authenticate; \
             enable one of them"
                .to_owned(),
        ));
    }
    if let Some(jwt) = &auth.jwt {
        check_jwt(jwt, problems);
    }
    for (name, role) in &auth.roles {
        if name == ADMIN_ROLE {
            problems.push(Problem::new(
                key(&["auth", "roles", name]),
                "\"admin\" is built in (it may do everything); name this role differently"
                    .to_owned(),
            ));
        }
        if let Some(fault) = crate::name_fault(name) {
            problems.push(Problem::new(
                key(&["auth", "roles", name]),
                fault.to_owned(),
            ));
        }
        for (field, patterns) in [
            ("publish", &role.publish),
            ("subscribe", &role.subscribe),
            ("views", &role.views),
            ("routes", &role.routes),
        ] {
            for pattern in patterns {
                if let Some(fault) = topic_pattern_fault(pattern) {
                    problems.push(Problem::new(
                        key(&["auth", "roles", name, field]),
                        format!("{pattern:?}: {fault}"),
                    ));
                }
            }
        }
        for operation in &role.admin {
            if operation != "*" && !ADMIN_OPERATIONS.contains(&operation.as_str()) {
                problems.push(Problem::new(
                    key(&["auth", "roles", name, "admin"]),
                    format!(
                        "{operation:?} is not an admin operation; use \"*\" or some of {}",
                        ADMIN_OPERATIONS.join(", ")
                    ),
                ));
            }
        }
    }
    for (principal, roles) in &auth.principals {
        for role in roles {
            if role != ADMIN_ROLE && !auth.roles.contains_key(role) {
                problems.push(Problem::new(
                    key(&["auth", "principals", principal]),
                    format!(
                        "role {role:?} is not declared; declare [auth.roles.{role}] or use \
                         \"admin\""
                    ),
                ));
            }
        }
    }
}

fn check_jwt(jwt: &JwtSpec, problems: &mut Vec<Problem>) {
    let keys = [
        jwt.secret.is_some(),
        jwt.public_key.is_some(),
        jwt.jwks.is_some(),
    ];
    if keys.iter().filter(|set| **set).count() != 1 {
        problems.push(Problem::new(
            key(&["auth", "jwt"]),
            "needs exactly one of secret (HS256), public_key (RS256/ES256) or jwks".to_owned(),
        ));
    }
    for algorithm in &jwt.algorithms {
        if !JWT_ALGORITHMS.contains(&algorithm.as_str()) {
            problems.push(Problem::new(
                key(&["auth", "jwt", "algorithms"]),
                format!(
                    "{algorithm:?} is not accepted; use some of {}",
                    JWT_ALGORITHMS.join(", ")
                ),
            ));
        }
    }
    let symmetric = jwt.algorithms.iter().any(|a| a == "HS256");
    let asymmetric = jwt.algorithms.iter().any(|a| a != "HS256");
    if jwt.secret.is_some() && asymmetric {
        problems.push(Problem::new(
            key(&["auth", "jwt", "algorithms"]),
            "a secret verifies HS256 only; RS256 and ES256 need public_key or jwks".to_owned(),
        ));
    }
    if jwt.secret.is_none() && symmetric {
        problems.push(Problem::new(
            key(&["auth", "jwt", "algorithms"]),
            "HS256 needs a secret; a public key or JWKS verifies RS256 and ES256".to_owned(),
        ));
    }
    check_range(
        key(&["auth", "jwt", "jwks_refresh_secs"]),
        jwt.jwks_refresh_secs,
        86_400,
        " s",
        problems,
    );
    if jwt.leeway_secs > 3_600 {
        problems.push(Problem::new(
            key(&["auth", "jwt", "leeway_secs"]),
            format!("is {} s; use 0 to 3600 s", jwt.leeway_secs),
        ));
    }
    for (field, value) in [
        ("principal_claim", &jwt.principal_claim),
        ("roles_claim", &jwt.roles_claim),
    ] {
        if value.is_empty() {
            problems.push(Problem::new(
                key(&["auth", "jwt", field]),
                "is empty; name a claim".to_owned(),
            ));
        }
    }
}

/// What is wrong with an ACL topic pattern: a topic name in which `*` stands for any run
/// of characters, as in pipelines' `from` (`"orders.*"`, `"*.dlq"`, `"*"`).
pub fn topic_pattern_fault(pattern: &str) -> Option<&'static str> {
    if pattern.is_empty() || pattern.len() > 249 {
        return Some("use 1 to 249 characters");
    }
    if !pattern
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*'))
    {
        return Some("use a-z, A-Z, 0-9, '.', '_', '-' and '*' for any run of characters");
    }
    None
}

pub(crate) fn check_http(http: &HttpSpec, problems: &mut Vec<Problem>) {
    if http.tls_cert.is_some() != http.tls_key.is_some() {
        problems.push(Problem::new(
            key(&["http"]),
            "tls_cert and tls_key go together; set both or neither".to_owned(),
        ));
    }
    if let Some(cors) = &http.cors {
        if cors.origins.is_empty() {
            problems.push(Problem::new(
                key(&["http", "cors", "origins"]),
                "is empty; name the origins allowed, or \"*\" for any".to_owned(),
            ));
        }
        for origin in &cors.origins {
            let valid = origin == "*"
                || ((origin.starts_with("http://") || origin.starts_with("https://"))
                    && !origin.ends_with('/')
                    && !origin.contains(' '));
            if !valid {
                problems.push(Problem::new(
                    key(&["http", "cors", "origins"]),
                    format!(
                        "{origin:?} is not an origin; write scheme://host[:port] with no path, \
                         or \"*\""
                    ),
                ));
            }
        }
        if cors.origins.len() > 1 && cors.origins.iter().any(|o| o == "*") {
            problems.push(Problem::new(
                key(&["http", "cors", "origins"]),
                "\"*\" allows any origin; list origins or \"*\" alone".to_owned(),
            ));
        }
        if cors.max_age_secs > 86_400 {
            problems.push(Problem::new(
                key(&["http", "cors", "max_age_secs"]),
                format!("is {} s; use 0 to 86400 s", cors.max_age_secs),
            ));
        }
    }
}

pub(crate) fn check_limits(limits: &NodeLimits, problems: &mut Vec<Problem>) {
    let field = |name: &str| key(&["limits", name]);
    let l = limits;
    check_range(
        field("max_subscriptions"),
        l.max_subscriptions.into(),
        1_000_000,
        "",
        problems,
    );
    check_range(
        field("max_subscriptions_per_principal"),
        l.max_subscriptions_per_principal.into(),
        1_000_000,
        "",
        problems,
    );
    check_range(
        field("max_read_bytes"),
        l.max_read_bytes,
        1 << 30,
        " bytes",
        problems,
    );
    check_range(
        field("max_body_bytes"),
        l.max_body_bytes,
        1 << 30,
        " bytes",
        problems,
    );
    check_range(
        field("request_timeout_ms"),
        l.request_timeout_ms,
        3_600_000,
        " ms",
        problems,
    );
    check_range(
        field("max_connections"),
        l.max_connections.into(),
        1_000_000,
        "",
        problems,
    );
    check_range(
        field("max_client_groups"),
        l.max_client_groups.into(),
        1_000_000,
        "",
        problems,
    );
    if l.rate_limit_burst > 0 && l.rate_limit_per_sec == 0 {
        problems.push(Problem::new(
            field("rate_limit_burst"),
            "applies only with rate_limit_per_sec; set that or remove it".to_owned(),
        ));
    }
    check_range(
        field("compiled_in_memory"),
        l.compiled_in_memory.into(),
        100_000,
        "",
        problems,
    );
    if l.compiled_on_disk_bytes < 1 << 20 {
        problems.push(Problem::new(
            field("compiled_on_disk_bytes"),
            format!(
                "is {} bytes; keep at least 1 MiB (1048576) of compiled code on disk",
                l.compiled_on_disk_bytes
            ),
        ));
    }
}
