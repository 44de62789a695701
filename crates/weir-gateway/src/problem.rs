//! RFC 9457 problem details: every error the API returns is one of these, rendered as
//! `application/problem+json` with the status that fits.

use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// A problem, with weir's extension members `attribute` (the offending CloudEvents
/// attribute) and `index` (the event's position in a batch) when they apply.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

impl Problem {
    /// `kind` names the problem type, e.g. `unknown-topic`; it becomes the `type` URI.
    pub fn new(
        status: StatusCode,
        kind: &str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            problem_type: format!("urn:weir:problem:{kind}"),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            attribute: None,
            index: None,
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub fn bad_request(kind: &str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, kind, "Bad request", detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        );
        response
    }
}

impl From<weir_cloudevents::Error> for Problem {
    fn from(e: weir_cloudevents::Error) -> Problem {
        let mut p = match e {
            weir_cloudevents::Error::UnsupportedFormat { .. }
            | weir_cloudevents::Error::NotACloudEvent => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                e.to_string(),
            ),
            _ => Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-cloudevent",
                "Invalid CloudEvent",
                e.to_string(),
            ),
        };
        p.attribute = e.attribute().map(str::to_owned);
        p.index = e.batch_index();
        p
    }
}

impl From<weir_engine::Error> for Problem {
    fn from(e: weir_engine::Error) -> Problem {
        use weir_engine::Error as E;
        use weir_kv::Error as K;
        use weir_log::ErrorKind as L;
        use weir_wasm::Error as W;
        let detail = e.to_string();
        match &e {
            E::Log(log) => {
                // The kind picks the status; the backend's code names the problem.
                let (status, title) = match log.kind() {
                    L::NotFound => match log.code() {
                        "unknown-topic" => (StatusCode::NOT_FOUND, "Unknown topic"),
                        "unknown-partition" => (StatusCode::NOT_FOUND, "Unknown partition"),
                        _ => (StatusCode::NOT_FOUND, "Not found"),
                    },
                    L::Invalid => (StatusCode::BAD_REQUEST, "Bad request"),
                    L::Exists => match log.code() {
                        "topic-exists" => (StatusCode::CONFLICT, "Topic exists"),
                        _ => (StatusCode::CONFLICT, "Exists"),
                    },
                    L::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "Payload too large"),
                    L::DiskFull => (StatusCode::INSUFFICIENT_STORAGE, "Insufficient storage"),
                    L::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "Log unavailable"),
                    L::Fenced => (StatusCode::CONFLICT, "Fenced"),
                    L::Conflict => (StatusCode::CONFLICT, "Conflict"),
                    // The storage refuses writes until an operator steps in.
                    _ => {
                        tracing::error!(error = %detail, "the log failed");
                        return Problem::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "unavailable",
                            "Service unavailable",
                            detail,
                        );
                    }
                };
                Problem::new(status, log.code(), title, detail)
            }
            E::KeyValue(K::InvalidKey { .. }) => Problem::bad_request("invalid-key", detail),
            E::KeyValue(K::InvalidNamespace { .. }) => {
                Problem::bad_request("invalid-namespace", detail)
            }
            E::KeyValue(K::InvalidJson { .. }) => Problem::bad_request("invalid-json", detail),
            E::KeyValue(K::ValueTooLarge { .. }) => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "Payload too large",
                detail,
            ),
            E::UnknownNamespace { .. } => Problem::new(
                StatusCode::NOT_FOUND,
                "unknown-namespace",
                "Unknown key-value namespace",
                detail,
            ),
            E::UnknownFunction { .. } => Problem::new(
                StatusCode::NOT_FOUND,
                "unknown-function",
                "Unknown function",
                detail,
            ),
            E::UnknownPipeline { .. } => Problem::new(
                StatusCode::NOT_FOUND,
                "unknown-pipeline",
                "Unknown pipeline",
                detail,
            ),
            E::UnknownVersion { .. } => Problem::new(
                StatusCode::NOT_FOUND,
                "unknown-version",
                "Unknown function version",
                detail,
            ),
            E::InvalidReplay { .. } => Problem::bad_request("invalid-replay", detail),
            E::ReplayCancelled => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cancelled",
                "Cancelled",
                detail,
            ),
            E::NoEarlierVersion { .. } => Problem::new(
                StatusCode::CONFLICT,
                "no-earlier-version",
                "No earlier version",
                detail,
            ),
            E::DeployRefused { .. } => Problem::new(
                StatusCode::CONFLICT,
                "restart-required",
                "Restart required",
                detail,
            ),
            E::InvalidDeploy { .. } => Problem::bad_request("invalid-deploy", detail),
            E::Manifest(_) => Problem::bad_request("invalid-manifest", detail),
            E::Function(
                W::InvalidComponent { .. } | W::WrongWorld { .. } | W::FuelDisabled { .. },
            )
            | E::Secret { .. } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-function",
                "Function cannot be loaded",
                detail,
            ),
            E::GroupBusy { .. } => Problem::new(
                StatusCode::CONFLICT,
                "group-busy",
                "Consumer group busy",
                detail,
            ),
            E::InvalidTopic { .. } => Problem::bad_request("invalid-topic", detail),
            E::DurabilityLowered { .. } => Problem::new(
                StatusCode::CONFLICT,
                "durability-lowered",
                "Durability would be lowered",
                detail,
            ),
            E::ShuttingDown => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
                detail,
            ),
            _ => {
                tracing::error!(error = %detail, "request failed");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                    detail,
                )
            }
        }
    }
}

impl From<BytesRejection> for Problem {
    fn from(rejection: BytesRejection) -> Problem {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                status,
                "too-large",
                "Payload too large",
                "the request body is over the size limit; send smaller events or split the batch",
            )
        } else {
            Problem::new(
                status,
                "bad-body",
                "Bad request body",
                rejection.body_text().to_lowercase(),
            )
        }
    }
}
