//! The app's HTTP routes (`[routes.NAME]`): what no route of weir's API matches is looked
//! up in the node's route table and served by the route's function, behind the same front
//! door (`auth::admit`: credentials, the role's `routes`, rate limits) unless the route is
//! `public`. The body is read whole first, under the node's body limit. A route with a
//! `topic` is an inbound webhook: `202` once its event is durable, `401` when its
//! signature does not verify.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use weir_auth::Action;
use weir_engine::{RouteFailure, WebhookAccepted, WebhookError};

use crate::{AppState, Problem, auth};

/// The fallback of the router: a route of the app, or 404.
pub(crate) async fn serve(State(state): State<AppState>, request: Request) -> Response {
    let Some(route) = state.node.route(request.uri().path()) else {
        return Problem::not_found(
            "no such route; see the README for weir's HTTP API, and [routes] in weir.toml for the app's",
        )
        .into_response();
    };
    let (mut parts, body) = request.into_parts();
    let authenticator = state.auth.get();
    let wanted = (!route.spec.public).then_some(Action::Invoke(&route.name));
    if let Err(refused) = auth::admit(&state, &parts, authenticator.as_deref(), wanted) {
        return refused;
    }
    if !route.allows(parts.method.as_str()) {
        let allow = route.methods().join(", ");
        return Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            format!("route {:?} takes {allow}", route.name),
        )
        .with_header(
            header::ALLOW,
            HeaderValue::from_str(&allow).unwrap_or(HeaderValue::from_static("")),
        )
        .into_response();
    }
    let limit = state.options.max_body_bytes;
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(body) => body,
        Err(e) => {
            return Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Body too large",
                format!("the request body could not be read within the node's limit of {limit} bytes ([limits] max_body_bytes): {e}"),
            )
            .into_response();
        }
    };
    if route.is_webhook() {
        return match state
            .node
            .accept_webhook(&route, &parts.headers, body)
            .await
        {
            Ok(WebhookAccepted {
                job: Some(job),
                id,
                topic,
                partition,
                offset,
            }) => {
                let url = format!("/v1/jobs/{}", path_segment(&job));
                let location =
                    HeaderValue::from_str(&url).unwrap_or(HeaderValue::from_static("/v1/jobs"));
                (
                    StatusCode::ACCEPTED,
                    [(header::LOCATION, location)],
                    axum::Json(serde_json::json!({
                        "id": job,
                        "status": "accepted",
                        "job": url,
                        "event": id,
                        "topic": topic,
                        "partition": partition,
                        "offset": offset,
                    })),
                )
                    .into_response()
            }
            Ok(accepted) => (
                StatusCode::ACCEPTED,
                axum::Json(serde_json::json!({
                    "id": accepted.id,
                    "topic": accepted.topic,
                    "partition": accepted.partition,
                    "offset": accepted.offset,
                })),
            )
                .into_response(),
            Err(WebhookError::Signature(reason)) => {
                tracing::info!(route = %route.name, %reason, "webhook refused");
                Problem::new(
                    StatusCode::UNAUTHORIZED,
                    "signature-invalid",
                    "Signature invalid",
                    format!("route {:?}: {reason}; nothing was stored", route.name),
                )
                .into_response()
            }
            Err(WebhookError::Body(reason)) => Problem::bad_request(
                "invalid-body",
                format!("route {:?}: {reason}; nothing was stored", route.name),
            )
            .into_response(),
            Err(WebhookError::Log(e)) => Problem::from(e).into_response(),
        };
    }
    // wasi:http needs an authority; an HTTP/1.0 request may come without a Host.
    if !parts.headers.contains_key(header::HOST) {
        parts
            .headers
            .insert(header::HOST, HeaderValue::from_static("localhost"));
    }
    let https = state.options.tls.is_some();
    let request = axum::http::Request::from_parts(parts, body);
    match state.node.serve_route(&route, request, https).await {
        Ok(response) => response.map(Body::from),
        Err(e) => failed(&route.name, e).into_response(),
    }
}

/// `text` as one path segment: RFC 3986's unreserved characters kept, the rest
/// percent-encoded (a sender's delivery id may hold anything).
fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The answer when the route's function failed: 504 past its deadline, 503 when it
/// could not run (retry), 500 otherwise; the detail names function, version and cause.
fn failed(route: &str, error: RouteFailure) -> Problem {
    tracing::warn!(route, %error, "route's function failed");
    let detail = format!("route {route:?}: {error}");
    match error {
        RouteFailure::Deadline(_) => Problem::new(
            StatusCode::GATEWAY_TIMEOUT,
            "function-deadline",
            "The function ran past its deadline",
            detail,
        ),
        RouteFailure::Unavailable(_) => Problem::too_many(
            StatusCode::SERVICE_UNAVAILABLE,
            "function-unavailable",
            "The function could not run",
            detail,
            1,
        ),
        RouteFailure::Failed(_) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "function-failed",
            "The function failed",
            detail,
        ),
    }
}
