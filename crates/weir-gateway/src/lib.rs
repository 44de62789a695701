//! weir's HTTP API over a [`weir_engine::Node`]: topics, publishing CloudEvents
//! (structured, binary, batch), reading them back and following them over Server-Sent
//! Events (`topics.rs`), consumer groups (`groups.rs`), the key-value store (`kv.rs`),
//! function versions and deploys (`functions.rs`), pipelines and re-drives
//! (`pipelines.rs`), replays of a pipeline's recorded events through function versions
//! (`replay.rs`), status, health, and the OpenAPI document of it all
//! (`GET /v1/openapi.json`). Every error is RFC 9457 `application/problem+json`.
//!
//! The gateway talks only to `Node`. What it takes and answers are its own types
//! ([`api`]), so the engine and the storage below it evolve apart from the wire format.
//! Each handler carries its OpenAPI description (`#[utoipa::path]`), and the router and
//! the document are built from one list of routes (`routes`).
//!
//! **Architecture Invariant:** `POST /v1/topics/{topic}/events` answers `202` only after
//! the log has made every event of the request durable; a request that fails validation
//! writes nothing.
//!
//! The front door (`auth`, `limits`, `listener`): every route passes the `auth` route
//! layer, which names the caller, checks its credential and role against the route's
//! [`weir_auth::Action`], and counts its rate; live streams hold a subscription permit;
//! `serve` caps open connections and speaks TLS when given a certificate. Every response
//! carries an `x-request-id` (the client's, or a new UUID), which the request's log span
//! carries too.

pub mod api;
mod auth;
mod entities;
mod forward;
mod functions;
mod groups;
mod jobs;
mod keys;
mod kv;
mod limits;
mod linger;
mod listener;
pub mod metrics;
mod pipelines;
mod problem;
mod replay;
mod routes;
mod schemas;
mod topics;
mod views;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;
use weir_auth::ApiKeyStore;
use weir_engine::Node;

use crate::api::Health;
use crate::api::status::NodeStatus;
pub use auth::{AuthSlot, AuthSource, ClientAddr};
pub use listener::{FrontListener, TlsFiles, tls_config};
pub use problem::{PROBLEM_CONTENT_TYPE, Problem};
pub use replay::NDJSON_CONTENT_TYPE;

/// The header a request id travels in.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Limits of the API, who may call it, and how.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Largest request body accepted; larger ones get `413`.
    pub max_body_bytes: usize,
    /// Most events one `GET .../events` returns.
    pub max_read_limit: usize,
    /// Most bytes one `GET .../events` returns (and the most its `max_bytes` may ask for),
    /// unless its first event alone is larger.
    pub max_read_bytes: usize,
    /// Largest body of a deploy (`PUT /v1/functions/{name}`, `POST /v1/deploy`), a
    /// replay's candidate (`POST /v1/pipelines/{name}/replay`) or a key-value write (`PUT /v1/kv/...`, `POST /v1/kv/{ns}`); the store refuses values
    /// over 1 MiB itself.
    pub max_upload_bytes: usize,
    /// How long [`serve`] lets open connections finish once shutdown begins before it
    /// drops them.
    pub shutdown_grace: std::time::Duration,
    /// Subscriptions, timeouts, connections and rates: `[limits]`. Its `max_body_bytes`
    /// and `max_read_bytes` are the fields above, which [`GatewayOptions::with_limits`] sets.
    pub limits: weir_manifest::NodeLimits,
    /// Who may call: an open slot lets anyone.
    pub auth: AuthSlot,
    /// The node's API keys, for `/v1/auth/keys` and for checking keys.
    pub keys: Option<Arc<ApiKeyStore>>,
    /// `[http.cors]`.
    pub cors: Option<weir_manifest::CorsSpec>,
    /// `[http]` TLS: [`serve`] speaks HTTPS with it.
    pub tls: Option<TlsFiles>,
    /// What `GET /metrics` renders ([`metrics::install`]); none answers it with `404`.
    pub metrics: Option<metrics::MetricsHandle>,
}

impl GatewayOptions {
    /// The defaults with `[limits]` applied.
    pub fn with_limits(limits: weir_manifest::NodeLimits) -> GatewayOptions {
        GatewayOptions {
            max_body_bytes: usize::try_from(limits.max_body_bytes).unwrap_or(usize::MAX),
            max_read_bytes: usize::try_from(limits.max_read_bytes).unwrap_or(usize::MAX),
            limits,
            ..GatewayOptions::default()
        }
    }
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            max_body_bytes: 1 << 20,
            max_read_limit: 1000,
            max_read_bytes: 4 << 20,
            max_upload_bytes: 64 << 20,
            shutdown_grace: std::time::Duration::from_secs(5),
            limits: weir_manifest::NodeLimits::default(),
            auth: AuthSlot::open(),
            keys: None,
            cors: None,
            tls: None,
            metrics: None,
        }
    }
}

/// What every handler and layer gets, behind one `Arc`: axum clones the state for every
/// layer and extractor of a request, so a clone must be one reference count.
#[derive(Clone)]
struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

struct Shared {
    node: Arc<Node>,
    options: GatewayOptions,
    /// The OpenAPI document, rendered once.
    openapi: Bytes,
    /// Cancelled when the server starts shutting down: live streams end then.
    stopping: CancellationToken,
    auth: AuthSlot,
    keys: Option<Arc<ApiKeyStore>>,
    subscriptions: Arc<limits::Subscriptions>,
    rates: Option<Arc<limits::Rates>>,
    /// One deploy at a time, so the authenticator swapped in is the last deploy's.
    deploying: Arc<tokio::sync::Mutex<()>>,
}

impl Shared {
    /// `Some(429)` when `key` is over its rate.
    fn rate_limit(&self, key: &Arc<str>) -> Option<Problem> {
        self.rates.as_ref()?.check(key)
    }
}

/// The API's description: what the routes do not say themselves.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "weir",
        description = "weir's HTTP API: publish CloudEvents, read and follow topics, consumer groups, pipelines, functions and deploys, the key-value store, replays, event-sourced entities, views, status and health. Every error is an RFC 9457 problem document (`application/problem+json`).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "topics", description = "topics, publishing, reading and live subscriptions"),
        (name = "groups", description = "consumer groups"),
        (name = "pipelines", description = "pipelines, dead letters and replays"),
        (name = "functions", description = "function versions and deploys"),
        (name = "kv", description = "the key-value store functions read"),
        (name = "node", description = "status, health and this document"),
        (name = "auth", description = "API keys"),
        (name = "entities", description = "event-sourced entities: commands, state, journal"),
        (name = "jobs", description = "long-running jobs accepted by job routes"),
        (name = "views", description = "CQRS views: tables projected from events, queried with filters and pages"),
        (name = "schemas", description = "event contracts: a JSON Schema per CloudEvents type and version, checked at publish"),
    ),
    components(schemas(Problem)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

/// Declares the bearer scheme: an API key (`weir auth key create`) or a JWT.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "an API key (`weir auth key create`) or a JWT; needed when the node has [auth]",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every route with its description. The router and the OpenAPI document both come from
/// here, so they cannot disagree.
fn routes(options: &GatewayOptions) -> OpenApiRouter<AppState> {
    let upload_limit = DefaultBodyLimit::max(options.max_upload_bytes);
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(topics::list))
        .routes(routes!(topics::put))
        .routes(routes!(topics::read, topics::publish))
        .routes(routes!(topics::stream))
        .routes(routes!(groups::status))
        .routes(routes!(groups::reset))
        .routes(routes!(kv::list, kv::load).layer(upload_limit))
        .routes(routes!(kv::get, kv::put, kv::delete).layer(upload_limit))
        .routes(routes!(functions::list))
        .routes(routes!(functions::deploy).layer(upload_limit))
        .routes(routes!(functions::rollback))
        .routes(routes!(functions::deploy_app).layer(upload_limit))
        .routes(routes!(pipelines::list))
        .routes(routes!(pipelines::get))
        .routes(routes!(pipelines::redrive))
        .routes(routes!(pipelines::redrive_sink))
        .routes(routes!(jobs::get))
        .routes(routes!(replay::replay).layer(upload_limit))
        .routes(routes!(keys::create, keys::list))
        .routes(routes!(keys::revoke))
        .routes(routes!(entities::command))
        .routes(routes!(entities::get))
        .routes(routes!(entities::events))
        .routes(routes!(views::query))
        .routes(routes!(views::rebuild))
        .routes(routes!(views::stream))
        .routes(routes!(schemas::list))
        .routes(routes!(schemas::get_type))
        .routes(routes!(schemas::get, schemas::put))
        .routes(routes!(schemas::asyncapi))
        .routes(routes!(status))
        .routes(routes!(openapi_json))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics::scrape))
}

/// The OpenAPI 3.1 document of the API, as `GET /v1/openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes(&GatewayOptions::default()).into_openapi()
}

/// The API's routes.
pub fn router(node: Arc<Node>, options: GatewayOptions) -> Router {
    router_until(node, options, CancellationToken::new())
}

/// The API's routes, whose live streams end when `stopping` is cancelled.
fn router_until(node: Arc<Node>, options: GatewayOptions, stopping: CancellationToken) -> Router {
    let body_limit = options.max_body_bytes;
    let (router, openapi) = routes(&options).split_for_parts();
    let openapi = Bytes::from(openapi.to_json().expect("the OpenAPI document serializes"));
    let limits = options.limits;
    let state = AppState(Arc::new(Shared {
        node,
        auth: options.auth.clone(),
        keys: options.keys.clone(),
        subscriptions: limits::Subscriptions::new(
            limits.max_subscriptions as usize,
            limits.max_subscriptions_per_principal as usize,
        ),
        rates: limits::Rates::new(limits.rate_limit_per_sec, limits.rate_limit_burst).map(Arc::new),
        deploying: Arc::default(),
        options,
        openapi,
        stopping: stopping.clone(),
    }));
    let cors = state.options.cors.clone();
    let router = router
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::front_door,
        ))
        .fallback(routes::serve)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::request_timeout,
        ))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
                let id = request
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(axum::middleware::from_fn_with_state(
            stopping,
            linger::read_what_is_left,
        ))
        .with_state(state);
    match cors {
        Some(cors) => router.layer(cors_layer(&cors)),
        None => router,
    }
}

/// `[http.cors]` as a layer: the listed origins (or any), weir's methods, any request
/// header (binary CloudEvents send `ce-*`), and the headers a client needs to read.
fn cors_layer(cors: &weir_manifest::CorsSpec) -> CorsLayer {
    let origins = if cors.origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            cors.origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers([
            REQUEST_ID,
            header::RETRY_AFTER,
            header::WWW_AUTHENTICATE,
            header::LOCATION,
        ])
        .max_age(std::time::Duration::from_secs(cors.max_age_secs))
}

/// Serve the API on `listener` (with TLS and a connection limit as `options` say) until
/// `shutdown` resolves, then stop within
/// [`GatewayOptions::shutdown_grace`]: new connections are refused and live streams
/// (`/v1/topics/{topic}/stream`) end at once; requests in flight may finish within the
/// grace period, and connections still open after it are given up on (a client that
/// stopped reading can hold a response forever otherwise): `serve` returns, and their
/// tasks end with the runtime (`weir serve` exits right after the node stops).
pub async fn serve(
    listener: tokio::net::TcpListener,
    node: Arc<Node>,
    options: GatewayOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = options.shutdown_grace;
    let tls = match &options.tls {
        Some(files) => Some(tls_config(files).map_err(std::io::Error::other)?),
        None => None,
    };
    let listener = FrontListener::new(listener, options.limits.max_connections as usize, tls);
    let stopping = CancellationToken::new();
    let app = router_until(node, options, stopping.clone())
        .into_make_service_with_connect_info::<ClientAddr>();
    let signal = {
        let stopping = stopping.clone();
        async move {
            shutdown.await;
            stopping.cancel();
        }
    };
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(signal)
        .into_future();
    tokio::select! {
        served = server => served,
        () = async {
            stopping.cancelled().await;
            tokio::time::sleep(grace).await;
        } => {
            // The connections' tasks end with the runtime; the node can stop meanwhile.
            tracing::warn!(grace = ?grace, "connections still open after the shutdown grace period; dropping them");
            Ok(())
        }
    }
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "this route does not take that method; see the README for weir's HTTP API",
    )
}

/// `GET /healthz`.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "node",
    summary = "Liveness",
    responses((status = 200, description = "the process serves", body = Health, example = json!({"status": "ok"})))
)]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// `GET /readyz`.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "node",
    summary = "Readiness",
    responses(
        (status = 200, description = "the node takes traffic", body = Health, example = json!({"status": "ready"})),
        (status = 503, description = "the node is shutting down", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
async fn readyz(State(state): State<AppState>) -> Response {
    if state.node.is_ready() {
        Json(Health { status: "ready" }).into_response()
    } else {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Not ready",
            "the node is shutting down",
        )
        .into_response()
    }
}

/// `GET /v1/status`.
#[utoipa::path(
    get,
    path = "/v1/status",
    operation_id = "get_status",
    tag = "node",
    summary = "The node's status",
    description = "What `weir status` shows: the app, the log backend, topics with what the backend guarantees for them, functions and pipelines.",
    responses(
        (status = 200, description = "the node's status", body = NodeStatus),
        (status = 503, description = "the log is unavailable", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
async fn status(State(state): State<AppState>) -> Result<Json<NodeStatus>, Problem> {
    Ok(Json(state.node.status().await?.into()))
}

/// `GET /v1/openapi.json`.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    operation_id = "get_openapi",
    tag = "node",
    summary = "This document",
    description = "The OpenAPI 3.1 document of this HTTP API.",
    responses((status = 200, description = "the OpenAPI document", body = Object, content_type = "application/json"))
)]
async fn openapi_json(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        state.openapi.clone(),
    )
        .into_response()
}

/// Whether a response is an RFC 9457 problem (`application/problem+json`).
pub fn is_problem(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_CONTENT_TYPE.as_bytes())
}

#[cfg(test)]
mod tests;
