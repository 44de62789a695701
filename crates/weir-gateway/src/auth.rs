//! The front door of every route: who is calling ([`Caller`]), whether they may, and how
//! often. Runs as a route layer, so it knows the matched route's template and parameters.
//!
//! **Architecture Invariant:** every route has a rule in [`action`]; a route without one
//! needs the built-in `admin` role (fail closed). With `[auth]` set, only `/healthz` and
//! `/readyz` (and `/metrics` with `metrics_open`) answer without a credential.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use weir_auth::{Action, AdminOp, AuthError, Authenticator, Denied, Principal};

use crate::{AppState, Problem};

/// The peer address of a connection, as [`crate::serve`] records it.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Who made a request: the principal if the node has `[auth]`, and the key limits are
/// counted by (the principal's name, else the client's address).
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) key: Arc<str>,
    pub(crate) principal: Option<Arc<Principal>>,
}

impl Caller {
    /// Whether this caller may change `[auth]`: anyone on an open node, else the
    /// built-in admin role.
    pub(crate) fn may_change_auth(&self) -> bool {
        self.principal.as_ref().is_none_or(|p| p.is_admin())
    }
}

/// Where `[auth]` came from; a deploy without `[auth]` leaves flag-given auth alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthSource {
    Manifest,
    Flags,
}

/// The authenticator in use; a deploy that changes `[auth]` swaps it.
#[derive(Debug, Clone)]
pub struct AuthSlot {
    current: Arc<RwLock<Option<Arc<Authenticator>>>>,
    source: AuthSource,
}

impl AuthSlot {
    pub fn new(authenticator: Option<Authenticator>, source: AuthSource) -> AuthSlot {
        AuthSlot {
            current: Arc::new(RwLock::new(authenticator.map(Arc::new))),
            source,
        }
    }

    /// An open node: no authentication.
    pub fn open() -> AuthSlot {
        AuthSlot::new(None, AuthSource::Manifest)
    }

    pub(crate) fn get(&self) -> Option<Arc<Authenticator>> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set(&self, authenticator: Authenticator) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(authenticator));
    }

    pub(crate) fn source(&self) -> AuthSource {
        self.source
    }
}

/// What a request to `template` with `method` asks to do; `None` for the routes open to
/// all. `param` gives a path parameter's decoded value.
pub(crate) fn action<'a>(
    method: &Method,
    template: &str,
    param: impl Fn(&str) -> Option<&'a str>,
    metrics_open: bool,
) -> Option<Action<'a>> {
    let topic = || param("topic").unwrap_or_default();
    Some(match (template, method.as_str()) {
        ("/healthz" | "/readyz", _) => return None,
        ("/metrics", _) if metrics_open => return None,
        ("/metrics", _) => Action::Observe,
        ("/v1/status" | "/v1/openapi.json" | "/v1/asyncapi", "GET") => Action::Observe,
        ("/v1/topics", "GET") => Action::Observe,
        ("/v1/topics/{topic}", "PUT") => Action::Admin(AdminOp::Topics),
        ("/v1/topics/{topic}/events", "POST") => Action::Publish(topic()),
        ("/v1/topics/{topic}/events", "GET") => Action::Subscribe(topic()),
        ("/v1/topics/{topic}/stream", "GET") => Action::Subscribe(topic()),
        ("/v1/groups/{group}", "GET") => Action::Observe,
        ("/v1/groups/{group}/reset", "POST") => Action::Admin(AdminOp::Groups),
        ("/v1/kv/{ns}" | "/v1/kv/{ns}/{key}", _) => Action::Admin(AdminOp::Kv),
        ("/v1/functions", "GET") => Action::Observe,
        ("/v1/functions/{name}", "PUT") => Action::Admin(AdminOp::Functions),
        ("/v1/functions/{name}/rollback", "POST") => Action::Admin(AdminOp::Functions),
        ("/v1/deploy", "POST") => Action::Admin(AdminOp::Deploy),
        ("/v1/pipelines" | "/v1/pipelines/{name}", "GET") => Action::Observe,
        ("/v1/pipelines/{name}/redrive" | "/v1/sinks/{name}/redrive", "POST") => {
            Action::Admin(AdminOp::Redrive)
        }
        ("/v1/pipelines/{name}/replay", "POST") => Action::Admin(AdminOp::Replay),
        ("/v1/auth/keys" | "/v1/auth/keys/{id}", _) => Action::Admin(AdminOp::Keys),
        ("/v1/entities/{type}/{id}/commands/{name}", "POST") => {
            Action::Command(param("type").unwrap_or_default())
        }
        ("/v1/entities/{type}/{id}" | "/v1/entities/{type}/{id}/events", "GET") => {
            Action::ReadEntity(param("type").unwrap_or_default())
        }
        ("/v1/views/{view}" | "/v1/views/{view}/stream", "GET") => {
            Action::ReadView(param("view").unwrap_or_default())
        }
        ("/v1/views/{view}/rebuild", "POST") => Action::Admin(AdminOp::Views),
        ("/v1/schemas" | "/v1/schemas/{type}" | "/v1/schemas/{type}/{version}", "GET") => {
            Action::Observe
        }
        ("/v1/schemas/{type}/{version}", "PUT") => Action::Admin(AdminOp::Schemas),
        // The handler decides: the callers of the job's route (see `jobs.rs`).
        ("/v1/jobs/{id}", "GET") => return None,
        // Fail closed: a route nobody gave a rule needs the admin role.
        _ => Action::FullAdmin,
    })
}

/// The route layer: authenticate, authorize, rate-limit; then the handler, with the
/// [`Caller`] in the request's extensions.
pub(crate) async fn front_door(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let auth = state.auth.get();
    let caller = match &auth {
        // An open node: nothing to check but the rate.
        None => admit(&state, &parts, None, None),
        Some(auth) => {
            let template = parts
                .extensions
                .get::<MatchedPath>()
                .map(|m| m.as_str().to_owned())
                .unwrap_or_default();
            let params = RawPathParams::from_request_parts(&mut parts, &state)
                .await
                .ok();
            let param = |name: &str| {
                params
                    .as_ref()
                    .and_then(|p| p.iter().find(|(k, _)| *k == name).map(|(_, v)| v))
            };
            let wanted = action(&parts.method, &template, param, auth.spec().metrics_open);
            admit(&state, &parts, Some(auth), wanted)
        }
    };
    match caller {
        Ok(caller) => {
            parts.extensions.insert(caller);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(refused) => refused,
    }
}

/// Who is calling and whether they may do `wanted` (`None`: open to all) under `auth`
/// (`None`: an open node), then whether they are over their rate; the answer to send
/// back if not. (The refusal is a whole response, built only on the refused path.)
#[allow(clippy::result_large_err)]
pub(crate) fn admit(
    state: &AppState,
    parts: &axum::http::request::Parts,
    auth: Option<&Authenticator>,
    wanted: Option<Action<'_>>,
) -> Result<Caller, Response> {
    let addr = parts
        .extensions
        .get::<axum::extract::ConnectInfo<ClientAddr>>()
        .map(|info| info.0.0.ip().to_string());
    let address_key: Arc<str> = Arc::from(addr.as_deref().unwrap_or("local"));
    let caller = match (auth, wanted) {
        (Some(auth), Some(wanted)) => {
            let header = parts
                .headers
                .get(header::AUTHORIZATION)
                .map(|v| v.as_bytes());
            let principal = match auth.authenticate(header) {
                Ok(principal) => principal,
                Err(error) => {
                    // Failed attempts count against the client's address.
                    if let Some(limited) = state.rate_limit(&address_key) {
                        return Err(limited.into_response());
                    }
                    tracing::debug!(code = error.code(), client = %address_key, "credential refused");
                    return Err(unauthorized(&error).into_response());
                }
            };
            if let Err(denied) = auth.authorize(&principal, wanted) {
                tracing::info!(principal = %principal.name, %wanted, "request denied");
                return Err(forbidden(&denied).into_response());
            }
            Caller {
                key: Arc::from(principal.name.as_str()),
                principal: Some(Arc::new(principal)),
            }
        }
        _ => Caller {
            key: address_key,
            principal: None,
        },
    };
    if let Some(limited) = state.rate_limit(&caller.key) {
        return Err(limited.into_response());
    }
    Ok(caller)
}

/// The request's principal (`401` without a valid credential), for a handler that
/// decides what a request asks only once it has looked (the front door counted the
/// request against the rate limits already).
pub(crate) fn principal(
    auth: &Authenticator,
    headers: &axum::http::HeaderMap,
) -> Result<Principal, Problem> {
    let header = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    auth.authenticate(header).map_err(|e| unauthorized(&e))
}

/// Whether `principal` may do `wanted` (`403` if not).
pub(crate) fn permit(
    auth: &Authenticator,
    principal: &Principal,
    wanted: Action<'_>,
) -> Result<(), Problem> {
    auth.authorize(principal, wanted).map_err(|denied| {
        tracing::info!(principal = %principal.name, %wanted, "request denied");
        forbidden(&denied)
    })
}

fn unauthorized(error: &AuthError) -> Problem {
    let challenge = match error {
        AuthError::Missing => "Bearer realm=\"weir\"".to_owned(),
        other => format!(
            "Bearer realm=\"weir\", error=\"invalid_token\", error_description=\"{}\"",
            other.code()
        ),
    };
    Problem::new(
        StatusCode::UNAUTHORIZED,
        error.code(),
        "Unauthorized",
        error.to_string(),
    )
    .with_header(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_str(&challenge).unwrap_or(HeaderValue::from_static("Bearer")),
    )
}

fn forbidden(denied: &Denied) -> Problem {
    Problem::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "Forbidden",
        denied.to_string(),
    )
}
