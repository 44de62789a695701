//! Forwarding to the fleet member that owns what a request is about (an entity's journal
//! partition): one hop over HTTP, the owner answering as if called directly.
//!
//! **Architecture Invariant:** forwarding is an optimisation, never needed for
//! correctness: a forwarded request carries [`FORWARDED_BY`], and a node that receives
//! one handles it itself (one hop, no loops, even while two nodes' views of the fleet
//! differ); a node that cannot reach the owner handles the request itself, which the
//! journal's conditional appends keep correct on any node. The client's credentials,
//! conditions and trace context go with the request, so the owner checks them as it
//! would its own.

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use weir_log::Member;

/// Set on a forwarded request to the forwarding member's id: its receiver does not
/// forward it again.
pub(crate) const FORWARDED_BY: HeaderName = HeaderName::from_static("weir-forwarded-by");
/// Set on a forwarded request's answer to the member that answered it.
pub(crate) const SERVED_BY: HeaderName = HeaderName::from_static("weir-served-by");

/// How long a forwarded request may take, connection included (a command's own limits
/// are far shorter).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Request headers that go with a forwarded request.
const REQUEST_HEADERS: [HeaderName; 7] = [
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    header::IF_MATCH,
    header::ACCEPT,
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("tracestate"),
    crate::REQUEST_ID,
];
/// Answer headers relayed to the client.
const ANSWER_HEADERS: [HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::ETAG,
    header::RETRY_AFTER,
    HeaderName::from_static("weir-next-version"),
];

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(FORWARD_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .expect("an HTTP client builds")
    })
}

/// Whether the request came from another member (and is to be handled here).
pub(crate) fn was_forwarded(headers: &HeaderMap) -> bool {
    headers.contains_key(FORWARDED_BY)
}

/// Sends the request to `owner` and relays its answer; none when the owner could not be
/// reached or gave no answer (the caller then handles the request itself). `me` is this
/// node's member id.
pub(crate) async fn to_owner(
    owner: &Member,
    me: &str,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Option<Response> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path}", owner.url.trim_end_matches('/'));
    let answer = match send(owner, me, method, path, headers, body).await {
        Ok(answer) => answer,
        Err(e) if e.is_connect() => {
            // It never reached the owner: doing it here does it once.
            tracing::warn!(owner = %owner.id, url, error = %e, "cannot reach the owner; handling the request here");
            return None;
        }
        Err(e) => return Some(lost_answer(owner, &url, &e)),
    };
    let status = answer.status();
    let mut relayed = Response::builder().status(status.as_u16());
    for name in &ANSWER_HEADERS {
        if let Some(value) = answer.headers().get(name) {
            relayed = relayed.header(name, value);
        }
    }
    let relayed = relayed.header(
        SERVED_BY,
        HeaderValue::from_str(&owner.id).unwrap_or(HeaderValue::from_static("")),
    );
    match answer.bytes().await {
        Ok(bytes) => relayed.body(Body::from(bytes)).ok(),
        Err(e) => Some(lost_answer(owner, &url, &e)),
    }
}

/// Sends a request for `path` to `member`, with the client's credentials, conditions and
/// trace context from `headers`, marked as forwarded by `me`.
pub(crate) async fn send(
    member: &Member,
    me: &str,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> reqwest::Result<reqwest::Response> {
    let url = format!("{}{path}", member.url.trim_end_matches('/'));
    let mut request = client().request(method, &url).body(body);
    for name in &REQUEST_HEADERS {
        for value in headers.get_all(name) {
            request = request.header(name, value);
        }
    }
    request.header(FORWARDED_BY, me).send().await
}

/// A request the owner may have acted on (a command's events may be stored) but whose
/// answer was lost: `503`, not done again here.
fn lost_answer(owner: &Member, url: &str, e: &reqwest::Error) -> Response {
    tracing::warn!(owner = %owner.id, url, error = %e, "the owner's answer was lost");
    crate::Problem::too_many(
        StatusCode::SERVICE_UNAVAILABLE,
        "forward-failed",
        "Service unavailable",
        format!(
            "the fleet member that owns this entity ({}) did not answer: {e}; a command may or may not have been applied: read the entity, or send the command again with If-Match",
            owner.id
        ),
        1,
    )
    .into_response()
}
