//! RFC 9457 problem details: every error the API returns is one of these, rendered as
//! `application/problem+json` with the status that fits.

use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// A problem (RFC 9457), with weir's extension members `attribute` (the offending
/// CloudEvents attribute) and `index` (the event's position in a batch) when they apply.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// `urn:weir:problem:<code>`, e.g. `urn:weir:problem:unknown-topic`: stable for scripts.
    #[serde(rename = "type")]
    #[schema(example = "urn:weir:problem:unknown-topic")]
    pub problem_type: String,
    /// A short summary of the problem type.
    #[schema(value_type = String, example = "Unknown topic")]
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong and what to do next.
    pub detail: String,
    /// The CloudEvents attribute that is wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub attribute: Option<Box<str>>,
    /// The position in a batch of the event that is wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// Each rule an event broke, or each change that breaks a schema's compatibility.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<ProblemError>>)]
    pub errors: Option<Box<Vec<ProblemError>>>,
    /// Response headers beside the body: `WWW-Authenticate`, `Retry-After`.
    #[serde(skip)]
    pub headers: Option<Box<Vec<(header::HeaderName, HeaderValue)>>>,
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
            errors: None,
            headers: None,
        }
    }

    /// This problem with `name: value` among its response headers.
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Problem {
        self.headers.get_or_insert_default().push((name, value));
        self
    }

    /// `429` or `503` with `Retry-After: retry_after_secs`.
    pub fn too_many(
        status: StatusCode,
        kind: &str,
        title: &'static str,
        detail: impl Into<String>,
        retry_after_secs: u64,
    ) -> Problem {
        Problem::new(status, kind, title, detail).with_header(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after_secs.max(1)),
        )
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
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        );
        for (name, value) in self.headers.map(|h| *h).unwrap_or_default() {
            headers.insert(name, value);
        }
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
        p.attribute = e.attribute().map(Into::into);
        p.index = e.batch_index();
        p
    }
}

/// One item of a problem's `errors`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProblemError {
    /// A JSON pointer: into the event's `data` for a broken rule, into the new schema for
    /// a breaking change.
    pub pointer: String,
    /// What is wrong (never the event's values).
    pub detail: String,
    /// The schema rule that failed, as a JSON pointer into the schema.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The JSON Schema keyword that failed (`required`, `minimum`, ...), or the kind of
    /// breaking change (`required-added`, `type-narrowed`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The earlier version a breaking change is against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// `backward` (the new version cannot read that version's events) or `forward`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
}

/// The `index` and `errors` of a schema problem.
fn schema_details(e: &weir_engine::Error) -> (Option<usize>, Option<Vec<ProblemError>>) {
    match e {
        weir_engine::Error::SchemaRejected { index, reason, .. } => {
            let errors = match reason {
                weir_engine::SchemaRejection::Violations { violations, .. } => Some(
                    violations
                        .iter()
                        .map(|v| ProblemError {
                            pointer: v.pointer.clone(),
                            detail: v.message.clone(),
                            rule: Some(v.rule.clone()),
                            code: Some(v.keyword.clone()),
                            version: None,
                            direction: None,
                        })
                        .collect(),
                ),
                _ => None,
            };
            (Some(*index), errors)
        }
        weir_engine::Error::Schema(weir_engine::SchemaError::Incompatible {
            incompatibilities,
            ..
        }) => {
            let errors = incompatibilities
                .iter()
                .flat_map(|i| {
                    i.changes.iter().map(move |c| ProblemError {
                        pointer: c.pointer.clone(),
                        detail: c.message.clone(),
                        rule: None,
                        code: Some(c.code.to_owned()),
                        version: Some(i.version),
                        direction: Some(
                            match i.direction {
                                weir_engine::SchemaDirection::Backward => "backward",
                                weir_engine::SchemaDirection::Forward => "forward",
                            }
                            .to_owned(),
                        ),
                    })
                })
                .collect();
            (None, Some(errors))
        }
        _ => (None, None),
    }
}

impl From<weir_engine::Error> for Problem {
    fn from(e: weir_engine::Error) -> Problem {
        let (index, errors) = schema_details(&e);
        let mut problem = Problem::of_engine(e);
        problem.index = problem.index.or(index);
        problem.errors = errors.map(Box::new);
        problem
    }
}

impl Problem {
    fn of_engine(e: weir_engine::Error) -> Problem {
        use weir_engine::ErrorClass as C;
        let detail = e.to_string();
        let (class, code) = (e.class(), e.code());
        let (status, title) = match class {
            C::NotFound => (StatusCode::NOT_FOUND, "Not found"),
            C::Invalid => (StatusCode::BAD_REQUEST, "Bad request"),
            C::Exists => (StatusCode::CONFLICT, "Exists"),
            C::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "Payload too large"),
            C::Conflict => (StatusCode::CONFLICT, "Conflict"),
            C::Fenced => (StatusCode::CONFLICT, "Fenced"),
            C::Unloadable => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "Function cannot be loaded",
            ),
            C::Rejected => (StatusCode::UNPROCESSABLE_ENTITY, "Command rejected"),
            C::DiskFull => (StatusCode::INSUFFICIENT_STORAGE, "Insufficient storage"),
            C::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "Log unavailable"),
            C::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "Service unavailable"),
            C::TooMany => {
                return Problem::too_many(
                    StatusCode::TOO_MANY_REQUESTS,
                    code,
                    "Too many",
                    detail,
                    5,
                );
            }
            // The storage refuses writes until an operator steps in.
            C::Failed => {
                tracing::error!(error = %detail, "the log failed");
                return Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "Service unavailable",
                    detail,
                );
            }
            _ => {
                tracing::error!(error = %detail, "request failed");
                return Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                    detail,
                );
            }
        };
        Problem::new(status, code, title_of(class, code).unwrap_or(title), detail)
    }
}

/// The titles of the problems that have one of their own, beside their class's.
fn title_of(class: weir_engine::ErrorClass, code: &str) -> Option<&'static str> {
    use weir_engine::ErrorClass as C;
    Some(match (class, code) {
        (C::NotFound, "unknown-topic") => "Unknown topic",
        (C::NotFound, "unknown-partition") => "Unknown partition",
        (C::NotFound, "unknown-namespace") => "Unknown key-value namespace",
        (C::NotFound, "unknown-function") => "Unknown function",
        (C::NotFound, "unknown-pipeline") => "Unknown pipeline",
        (C::NotFound, "unknown-version") => "Unknown function version",
        (C::Exists, "topic-exists") => "Topic exists",
        (C::Conflict, "no-earlier-version") => "No earlier version",
        (C::Conflict, "restart-required") => "Restart required",
        (C::Conflict, "group-busy") => "Consumer group busy",
        (C::Conflict, "durability-lowered") => "Durability would be lowered",
        (C::ShuttingDown, "cancelled") => "Cancelled",
        (C::NotFound, "unknown-entity-type") => "Unknown entity type",
        (C::NotFound, "unknown-entity") => "Unknown entity",
        (C::Conflict, "version-mismatch") => "Version mismatch",
        (C::Conflict, "entity-topic") => "Topic belongs to an entity type",
        (C::Rejected, "command-failed") => "Command failed",
        (C::Rejected, "schema-violation") => "Event does not match its schema",
        (C::Rejected, "schema-required") => "Schema required",
        (C::Rejected, "unknown-schema") => "Unknown schema",
        (C::Rejected, "invalid-schema") => "Invalid schema",
        (C::Conflict, "incompatible-schema") => "Incompatible schema",
        (C::Conflict, "schema-version-taken") => "Schema version taken",
        (C::Conflict, "schema-version-gap") => "Schema version out of order",
        (C::Conflict, "schema-store-moved") => "Schema registry changed",
        _ => return None,
    })
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
