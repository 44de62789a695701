//! Bearer JWTs: HS256 with a shared secret, RS256 and ES256 with a PEM public key or a
//! JWKS (a file or an `http(s)://` URL, re-read every `jwks_refresh_secs` and early when a
//! token names a key id it does not have, at most once every ten seconds).
//!
//! Signature, `exp` (required), `nbf`, `iss` and `aud` are checked with `leeway_secs` of
//! clock skew; only the configured algorithms are accepted, so a token cannot choose
//! `none` or turn an RSA public key into an HMAC secret.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use weir_manifest::{JwtSpec, SecretSource};

use crate::error::{AuthError, Error, Result};

/// Shortest HS256 secret accepted (RFC 7518 §3.2: at least the hash's size).
pub const MIN_SECRET_BYTES: usize = 32;
/// Least time between two early JWKS refreshes caused by unknown key ids.
const EARLY_REFRESH_GAP: Duration = Duration::from_secs(10);

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub principal: String,
    pub roles: Vec<String>,
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, (DecodingKey, Algorithm)>,
    /// Keys without an id, tried for tokens without one.
    anonymous: Vec<(DecodingKey, Algorithm)>,
    /// Tokens these keys verified. It lives and dies with the keys: a refreshed JWKS
    /// comes with an empty one, so a token of a key taken out of the set is checked
    /// again (and refused) from the refresh on.
    verified: Mutex<VerifiedTokens>,
}

/// Tokens most clients send again with every request, verified once: each entry is the
/// token's exact text with its claims, kept until its `exp` (without the leeway, so past
/// `exp` a token goes through the full check again, leeway and all). Bounded: when
/// [`VerifiedTokens::MAX_ENTRIES`] are kept it starts again empty.
#[derive(Default)]
struct VerifiedTokens {
    entries: HashMap<Box<str>, (Claims, u64)>,
}

impl VerifiedTokens {
    const MAX_ENTRIES: usize = 4096;
    /// Longer tokens are verified every time rather than kept.
    const MAX_TOKEN_BYTES: usize = 4096;

    fn get(&self, token: &str, now_secs: u64) -> Option<Claims> {
        match self.entries.get(token) {
            Some((claims, exp)) if now_secs < *exp => Some(claims.clone()),
            _ => None,
        }
    }

    fn insert(&mut self, token: &str, claims: &Claims, exp: u64) {
        if token.len() > Self::MAX_TOKEN_BYTES {
            return;
        }
        if self.entries.len() >= Self::MAX_ENTRIES {
            self.entries.clear();
        }
        self.entries.insert(token.into(), (claims.clone(), exp));
    }
}

/// Verifies bearer JWTs against `[auth.jwt]`.
pub struct JwtVerifier {
    spec: JwtSpec,
    /// The checks of each accepted algorithm, made once.
    validations: Vec<(Algorithm, Validation)>,
    keys: Arc<RwLock<KeySet>>,
    /// Wakes the JWKS refresher early; `None` without a JWKS.
    refresh: Option<Arc<tokio::sync::Notify>>,
    last_early: Mutex<Option<Instant>>,
    refresher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field(
                "algorithms",
                &self.validations.iter().map(|(a, _)| a).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Drop for JwtVerifier {
    fn drop(&mut self) {
        if let Some(task) = self.refresher.lock().expect("not poisoned").take() {
            task.abort();
        }
    }
}

impl JwtVerifier {
    /// Loads the keys `spec` names (fetching a JWKS URL once) and, for a JWKS, starts
    /// refreshing it on the current Tokio runtime.
    pub async fn new(spec: &JwtSpec) -> Result<Arc<JwtVerifier>> {
        let keys = load_keys(spec).await?;
        let mut algorithms: Vec<Algorithm> = spec
            .algorithms
            .iter()
            .map(|a| match a.as_str() {
                "HS256" => Ok(Algorithm::HS256),
                "RS256" => Ok(Algorithm::RS256),
                "ES256" => Ok(Algorithm::ES256),
                other => Err(Error::Jwt(format!("algorithm {other:?} is not accepted"))),
            })
            .collect::<Result<_>>()?;
        if algorithms.is_empty() {
            algorithms = if spec.secret.is_some() {
                vec![Algorithm::HS256]
            } else {
                vec![Algorithm::RS256, Algorithm::ES256]
            };
        }
        let verifier = Arc::new(JwtVerifier {
            spec: spec.clone(),
            validations: algorithms
                .into_iter()
                .map(|alg| (alg, validation(spec, alg)))
                .collect(),
            keys: Arc::new(RwLock::new(keys)),
            refresh: spec
                .jwks
                .as_ref()
                .map(|_| Arc::new(tokio::sync::Notify::new())),
            last_early: Mutex::new(None),
            refresher: Mutex::new(None),
        });
        if let Some(notify) = &verifier.refresh {
            let task = tokio::spawn(refresh_loop(
                Arc::downgrade(&verifier.keys),
                notify.clone(),
                spec.clone(),
            ));
            *verifier.refresher.lock().expect("not poisoned") = Some(task);
        }
        Ok(verifier)
    }

    /// The principal and roles of `token`, if it verifies. A token verified before
    /// with the current keys and not past its `exp` is answered from memory.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let now = jsonwebtoken::get_current_timestamp();
        {
            let keys = self.keys.read().expect("not poisoned");
            let verified = keys.verified.lock().expect("not poisoned");
            if let Some(claims) = verified.get(token, now) {
                return Ok(claims);
            }
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::InvalidToken(format!("its header does not decode: {e}")))?;
        let Some((_, validation)) = self.validations.iter().find(|(a, _)| *a == header.alg) else {
            return Err(AuthError::AlgorithmNotAccepted(format!("{:?}", header.alg)));
        };
        let keys = self.keys.read().expect("not poisoned");
        let candidates: Vec<&DecodingKey> = match &header.kid {
            Some(kid) if !keys.by_kid.is_empty() => match keys.by_kid.get(kid) {
                Some((key, alg)) if *alg == header.alg => vec![key],
                Some(_) => {
                    return Err(AuthError::AlgorithmNotAccepted(format!(
                        "{:?} for key {kid:?}",
                        header.alg
                    )));
                }
                None => {
                    drop(keys);
                    self.refresh_early();
                    return Err(AuthError::UnknownKeyId(kid.clone()));
                }
            },
            _ => keys
                .anonymous
                .iter()
                .chain(keys.by_kid.values())
                .filter(|(_, alg)| *alg == header.alg)
                .map(|(key, _)| key)
                .collect(),
        };
        if candidates.is_empty() {
            return Err(AuthError::AlgorithmNotAccepted(format!(
                "{:?} (no configured key uses it)",
                header.alg
            )));
        }
        let mut last = AuthError::BadSignature;
        for key in candidates {
            match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                token, key, validation,
            ) {
                Ok(data) => {
                    let claims = self.claims(&data.claims)?;
                    // `exp` is a required claim: the validation refused tokens without it.
                    if let Some(exp) = data.claims.get("exp").and_then(numeric_date) {
                        keys.verified
                            .lock()
                            .expect("not poisoned")
                            .insert(token, &claims, exp);
                    }
                    return Ok(claims);
                }
                Err(e) => {
                    last = self.map_error(e);
                    if !matches!(last, AuthError::BadSignature) {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    fn claims(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Claims, AuthError> {
        let principal = claims
            .get(&self.spec.principal_claim)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| AuthError::NoPrincipal(self.spec.principal_claim.clone()))?;
        let roles = match claims.get(&self.spec.roles_claim) {
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            // OAuth2 scopes are one space-separated string.
            Some(serde_json::Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        Ok(Claims {
            principal: principal.to_owned(),
            roles,
        })
    }

    fn map_error(&self, error: jsonwebtoken::errors::Error) -> AuthError {
        use jsonwebtoken::errors::ErrorKind;
        match error.kind() {
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::ExpiredSignature => AuthError::TokenExpired,
            ErrorKind::ImmatureSignature => AuthError::TokenNotYetValid,
            ErrorKind::InvalidAudience => AuthError::WrongAudience {
                expected: self.spec.audience.clone().unwrap_or_default(),
            },
            ErrorKind::InvalidIssuer => AuthError::WrongIssuer {
                expected: self.spec.issuer.clone().unwrap_or_default(),
            },
            ErrorKind::InvalidAlgorithm => AuthError::AlgorithmNotAccepted("mismatch".into()),
            ErrorKind::MissingRequiredClaim(claim) => {
                AuthError::InvalidToken(format!("it has no {claim:?} claim"))
            }
            _ => AuthError::InvalidToken(error.to_string()),
        }
    }

    fn refresh_early(&self) {
        let Some(notify) = &self.refresh else {
            return;
        };
        let mut last = self.last_early.lock().expect("not poisoned");
        if last.is_none_or(|at| at.elapsed() >= EARLY_REFRESH_GAP) {
            *last = Some(Instant::now());
            notify.notify_one();
        }
    }
}

/// A JWT NumericDate (seconds, possibly with a fraction) as whole seconds, rounded down.
fn numeric_date(value: &serde_json::Value) -> Option<u64> {
    value
        .as_u64()
        .or_else(|| value.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

/// What a token signed with `alg` must satisfy: `exp` (required), `nbf`, and the issuer and
/// audience when `spec` names them, with `leeway_secs` of skew.
fn validation(spec: &JwtSpec, alg: Algorithm) -> Validation {
    let mut validation = Validation::new(alg);
    validation.leeway = spec.leeway_secs;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp"]);
    match &spec.audience {
        Some(audience) => validation.set_audience(&[audience]),
        None => validation.validate_aud = false,
    }
    if let Some(issuer) = &spec.issuer {
        validation.set_issuer(&[issuer]);
    }
    validation
}

/// Re-reads the JWKS every `jwks_refresh_secs`, or when woken; ends when the verifier
/// (the only strong owner of `keys`) is gone.
async fn refresh_loop(keys: Weak<RwLock<KeySet>>, notify: Arc<tokio::sync::Notify>, spec: JwtSpec) {
    let period = Duration::from_secs(spec.jwks_refresh_secs);
    loop {
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = notify.notified() => {}
        }
        let loaded = load_keys(&spec).await;
        let Some(keys) = keys.upgrade() else { return };
        match loaded {
            Ok(fresh) => {
                *keys.write().expect("not poisoned") = fresh;
                tracing::debug!("refreshed the JWKS");
            }
            Err(error) => {
                tracing::warn!(%error, "could not refresh the JWKS; keeping the keys read before");
            }
        }
    }
}

async fn load_keys(spec: &JwtSpec) -> Result<KeySet> {
    let mut keys = KeySet::default();
    if let Some(source) = &spec.secret {
        let secret = read_secret(source)?;
        if secret.len() < MIN_SECRET_BYTES {
            return Err(Error::Jwt(format!(
                "the HS256 secret is {} bytes; use at least {MIN_SECRET_BYTES}",
                secret.len()
            )));
        }
        let key = DecodingKey::from_secret(&secret).map_err(|e| Error::Jwt(e.to_string()))?;
        keys.anonymous.push((key, Algorithm::HS256));
    }
    if let Some(path) = &spec.public_key {
        let pem = std::fs::read(path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let key = if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
            (key, Algorithm::RS256)
        } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
            (key, Algorithm::ES256)
        } else {
            return Err(Error::Jwt(format!(
                "{} is not a PEM RSA or EC P-256 public key",
                path.display()
            )));
        };
        keys.anonymous.push(key);
    }
    if let Some(location) = &spec.jwks {
        let text = if location.starts_with("http://") || location.starts_with("https://") {
            fetch(location).await?
        } else {
            std::fs::read(location).map_err(|source| Error::Io {
                path: location.into(),
                source,
            })?
        };
        let set: JwkSet = serde_json::from_slice(&text)
            .map_err(|e| Error::Jwt(format!("{location} is not a JWKS: {e}")))?;
        for jwk in &set.keys {
            let Some(algorithm) = algorithm_of(jwk) else {
                tracing::debug!(kid = ?jwk.common.key_id, "skipping a JWKS key weir does not use");
                continue;
            };
            let key = DecodingKey::from_jwk(jwk)
                .map_err(|e| Error::Jwt(format!("{location}: a key does not load: {e}")))?;
            match &jwk.common.key_id {
                Some(kid) => {
                    keys.by_kid.insert(kid.clone(), (key, algorithm));
                }
                None => keys.anonymous.push((key, algorithm)),
            }
        }
        if keys.by_kid.is_empty() && keys.anonymous.is_empty() {
            return Err(Error::Jwt(format!(
                "{location} has no RS256 or ES256 (P-256) key"
            )));
        }
    }
    Ok(keys)
}

fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(by_type),
        Some(KeyAlgorithm::RS256) if by_type == Algorithm::RS256 => Some(by_type),
        Some(KeyAlgorithm::ES256) if by_type == Algorithm::ES256 => Some(by_type),
        Some(_) => None,
    }
}

async fn fetch(url: &str) -> Result<Vec<u8>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| Error::Jwt(e.to_string()))?;
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| Error::Jwt(format!("fetching {url}: {e}")))?;
    if !response.status().is_success() {
        return Err(Error::Jwt(format!(
            "fetching {url}: HTTP {}",
            response.status()
        )));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| Error::Jwt(format!("fetching {url}: {e}")))?;
    if body.len() > 1 << 20 {
        return Err(Error::Jwt(format!("{url} answered more than 1 MiB")));
    }
    Ok(body.to_vec())
}

/// A secret's bytes: an environment variable, or a file with one trailing newline removed.
pub fn read_secret(source: &SecretSource) -> Result<Vec<u8>> {
    match source {
        SecretSource::Env(var) => std::env::var(var)
            .map(String::into_bytes)
            .map_err(|_| Error::Jwt(format!("the environment variable {var} is not set"))),
        SecretSource::File(path) => {
            let mut bytes = std::fs::read(path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
                if bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
            }
            Ok(bytes)
        }
    }
}
