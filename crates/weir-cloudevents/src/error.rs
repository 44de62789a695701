//! The crate's one error type. Every failure that concerns an attribute names it, so HTTP
//! front ends can point at it in a problem+json response.

/// Why bytes, headers or an event are not a valid CloudEvents 1.0 event.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The body is not JSON at all. serde's message (with line and column) is part of
    /// ours, so it is deliberately not also returned by `source()`: reporters that walk
    /// the chain would print it twice.
    #[error("malformed JSON: {0}; send a valid JSON document")]
    MalformedJson(serde_json::Error),

    /// A structured event is JSON but not an object.
    #[error("an event must be a JSON object, found {found}")]
    NotAnObject { found: &'static str },

    /// A batch is JSON but not an array.
    #[error("a batch must be a JSON array of events, found {found}")]
    NotAnArray { found: &'static str },

    #[error("missing required attribute \"{0}\"")]
    MissingAttribute(&'static str),

    #[error("attribute \"specversion\" is \"{0}\"; weir accepts CloudEvents 1.0 only")]
    UnsupportedSpecVersion(String),

    /// An attribute is present but breaks a rule; `problem` completes the sentence
    /// `attribute "<name>" …`.
    #[error("attribute \"{name}\" {problem}")]
    InvalidAttribute { name: String, problem: String },

    #[error(
        "both \"data\" and \"data_base64\" are present; send binary data in \"data_base64\" \
         or other data in \"data\", not both"
    )]
    ConflictingData,

    /// A CloudEvents content type naming an event format other than JSON.
    #[error(
        "event format {content_type:?} is not supported; send {} or {}",
        crate::http::STRUCTURED_CONTENT_TYPE,
        crate::http::BATCH_CONTENT_TYPE
    )]
    UnsupportedFormat { content_type: String },

    /// An HTTP message with neither a CloudEvents content type nor any `ce-` header.
    #[error(
        "the message carries no CloudEvent; send Content-Type {} or {}, or the headers \
         ce-specversion, ce-id, ce-source and ce-type",
        crate::http::STRUCTURED_CONTENT_TYPE,
        crate::http::BATCH_CONTENT_TYPE
    )]
    NotACloudEvent,

    /// An object repeats a key, which I-JSON (RFC 7493) forbids: a member of the event
    /// (`pointer` is `None`), or a key inside its data (`pointer` is the JSON Pointer of
    /// the object that repeats it, empty for the data itself). Keys are compared after
    /// unescaping: `"\u0061"` repeats `"a"`.
    #[error("{}", duplicate_key(.key, .pointer.as_deref()))]
    DuplicateKey {
        key: String,
        pointer: Option<String>,
    },

    /// The event at `index` of a batch is invalid. Like `MalformedJson`, the inner error
    /// is part of the message rather than a `source()`.
    #[error("event [{index}] in batch: {error}")]
    InBatch { index: usize, error: Box<Error> },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The offending attribute, when there is one (for problem+json responses), e.g.
    /// `Some("source")`. `data` and `data_base64` count as attributes here.
    pub fn attribute(&self) -> Option<&str> {
        match self {
            Error::MissingAttribute(name) => Some(name),
            Error::UnsupportedSpecVersion(_) => Some("specversion"),
            Error::InvalidAttribute { name, .. } => Some(name),
            Error::ConflictingData => Some("data"),
            Error::DuplicateKey { key, pointer: None } => Some(key),
            Error::DuplicateKey {
                pointer: Some(_), ..
            } => Some("data"),
            Error::InBatch { error, .. } => error.attribute(),
            Error::MalformedJson(_)
            | Error::NotAnObject { .. }
            | Error::NotAnArray { .. }
            | Error::UnsupportedFormat { .. }
            | Error::NotACloudEvent => None,
        }
    }

    /// Index within a batch, when the error came from a batch.
    pub fn batch_index(&self) -> Option<usize> {
        match self {
            Error::InBatch { index, .. } => Some(*index),
            _ => None,
        }
    }

    pub(crate) fn invalid(name: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::InvalidAttribute {
            name: name.into(),
            problem: problem.into(),
        }
    }
}

fn duplicate_key(key: &str, pointer: Option<&str>) -> String {
    const RULE: &str = "send each key once (I-JSON, RFC 7493, forbids duplicate keys)";
    let key = crate::validate::shown(key);
    match pointer {
        None => format!("attribute {key} appears more than once in the event; {RULE}"),
        Some("") => {
            format!("attribute \"data\" repeats the key {key} in its top-level object; {RULE}")
        }
        Some(pointer) => format!(
            "attribute \"data\" repeats the key {key} in the object at {}; {RULE}",
            crate::validate::shown(pointer)
        ),
    }
}
