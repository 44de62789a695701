//! The one error type of the log interface: a kind a caller can act on, the backend's own
//! message, and its error as the source.

use std::{error::Error as StdError, fmt};

/// What a caller can do about a failure, whatever the backend.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The topic or partition does not exist.
    NotFound,
    /// The request is wrong (a name, a setting, an offset past the end, a record without
    /// the key a compacted topic needs): sending it again fails again.
    Invalid,
    /// The topic exists with settings that cannot change (its partition count).
    Exists,
    /// A record, batch or transaction is over a limit: make it smaller.
    TooLarge,
    /// The backend cannot take the call now (a network backend is unreachable, a
    /// transaction is still being completed, the log is closing): the same call may
    /// succeed later. Nothing acknowledged was lost.
    Unavailable,
    /// Out of disk space: nothing of the call was written.
    DiskFull,
    /// A newer owner of the group's partition exists (see
    /// [`crate::EventLog::claim`]): this owner must stop and must not commit.
    Fenced,
    /// An append's [`crate::Expect`] did not hold: nothing was written.
    Conflict,
    /// The storage failed (a disk error, corruption): an operator has to look.
    Failed,
}

impl ErrorKind {
    /// The kind's name in problem documents and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not-found",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Exists => "exists",
            ErrorKind::TooLarge => "too-large",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::DiskFull => "disk-full",
            ErrorKind::Fenced => "fenced",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Failed => "failed",
        }
    }
}

/// A failure of a log backend. Its message is the backend's, lower case, saying what to
/// do next; its source, when there is one, is the backend's own error.
pub struct Error {
    kind: ErrorKind,
    /// The specific problem, stable for scripts and problem documents (`unknown-topic`);
    /// the kind's name when the backend gives none.
    code: &'static str,
    message: String,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            code: kind.as_str(),
            message: message.into(),
            source: None,
        }
    }

    /// An error of `kind` whose message is `source`'s and which keeps `source`, so a
    /// caller that knows the backend can downcast to it.
    pub fn from_backend(kind: ErrorKind, source: impl StdError + Send + Sync + 'static) -> Error {
        Error {
            kind,
            code: kind.as_str(),
            message: source.to_string(),
            source: Some(Box::new(source)),
        }
    }

    /// Names the specific problem (lower case, words joined by `-`).
    pub fn with_code(mut self, code: &'static str) -> Error {
        self.code = code;
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The specific problem, e.g. `unknown-topic`; see [`Error::with_code`].
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The backend's own error, if it is an `E`.
    pub fn downcast_ref<E: StdError + 'static>(&self) -> Option<&E> {
        self.source.as_deref().and_then(|s| s.downcast_ref::<E>())
    }

    pub fn not_found(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::NotFound, message)
    }

    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Invalid, message)
    }

    pub fn unknown_topic(topic: &str) -> Error {
        Error::not_found(format!(
            "topic \"{topic}\" does not exist; create it with PUT /v1/topics/{topic} or declare it in weir.toml"
        ))
        .with_code("unknown-topic")
    }

    pub fn unknown_partition(topic: &str, partition: u32, partitions: u32) -> Error {
        Error::not_found(format!(
            "topic \"{topic}\" has {partitions} partition(s), so partition {partition} does not exist; use a partition below {partitions}"
        ))
        .with_code("unknown-partition")
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("code", &self.code)
            .field("message", &self.message)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        // The message is the source's already; its own source is the next link.
        self.source.as_deref().and_then(|s| s.source())
    }
}

/// Result of the log interface's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
