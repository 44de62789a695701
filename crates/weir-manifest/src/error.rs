//! The crate's one error type, and [`Problem`], one broken rule of a manifest.

use std::fmt;
use std::path::PathBuf;

/// Why a manifest could not be read, parsed or accepted.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// [`crate::Manifest::load`] could not read the file; the IO error is the `source()`.
    #[error("cannot read the manifest {}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    /// The text is not TOML, or a key or value does not fit the format. toml's message,
    /// with its line, column and excerpt, is part of ours, so it is deliberately not also
    /// returned by `source()`: reporters that walk the chain would print it twice.
    #[error("weir.toml: {}", describe_parse_error(error))]
    Parse { error: toml::de::Error },

    /// The manifest parsed but breaks rules; every broken rule is listed, one per line.
    #[error("weir.toml is invalid:{}", list(.0))]
    Invalid(Vec<Problem>),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The broken rules, when the manifest parsed but is invalid (for problem+json
    /// responses and editors); empty for other errors.
    pub fn problems(&self) -> &[Problem] {
        match self {
            Error::Invalid(problems) => problems,
            Error::Read { .. } | Error::Parse { .. } => &[],
        }
    }
}

/// One broken rule: the dotted key it is about and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key as it would be written in TOML, names quoted where TOML needs it, e.g.
    /// `pipelines.erp-to-crm.function` or `topics."crm.orders".partitions`.
    pub key: String,
    /// Lower case, no trailing period, says what to do next.
    pub message: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|problem| format!("\n  {problem}"))
        .collect()
}

/// toml's message with its excerpt. For some syntax errors toml has no words of its own,
/// only the position, so ours are added.
fn describe_parse_error(error: &toml::de::Error) -> String {
    let text = error.to_string();
    let text = text.trim_end();
    if error.message().trim().is_empty() {
        format!("{text}\nfix the TOML syntax at the marked position")
    } else {
        text.to_owned()
    }
}
